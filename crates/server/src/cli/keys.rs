//! `sconce keys create|list|revoke`: manage API keys in the gateway's database.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sconce_gateway::config::BudgetPeriod;
use sconce_gateway::keys::NewKey;
use sconce_gateway::store::Store;
use sconce_gateway::usage::unix_now;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// TOML config file whose `[gateway]` section names the database.
    #[arg(long, env = "SCONCE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once.
    Create(CreateArgs),
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id or alias.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub alias: String,
    #[arg(long)]
    pub team: String,
    #[arg(long)]
    pub rpm_limit: Option<u64>,
    #[arg(long)]
    pub tpm_limit: Option<u64>,
    #[arg(long)]
    pub max_budget: Option<f64>,
    /// "day" or "month".
    #[arg(long)]
    pub budget_period: Option<String>,
    /// Comma-separated models the key may use.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Most choices (`n`, `best_of`) per request.
    #[arg(long)]
    pub max_n: Option<u64>,
    /// The most urgent `priority` the key may send (lower runs first; default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub max_priority: Option<i32>,
    /// Seconds until the key expires.
    #[arg(long)]
    pub expires_in: Option<i64>,
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let url = config.gateway.resolved_database_url();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let store = Store::open(&url).await?;
        let outcome = execute(&store, args.command).await;
        store.close().await;
        outcome
    })
}

async fn execute(store: &Store, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(create) => {
            let (secret, key) = new_key(create)?.issue(unix_now());
            store.insert_key(&key).await?;
            let mut body = serde_json::to_value(&key)?;
            body["key"] = serde_json::json!(secret);
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        KeysCommand::List => {
            for key in store.keys().await? {
                let state = if key.is_active(unix_now()) { "active" } else { "revoked/expired" };
                println!("{}\t{}\t{}\t{state}", key.id, key.alias, key.team);
            }
        }
        KeysCommand::Revoke { id } => match store.revoke_key(&id, unix_now()).await? {
            0 => anyhow::bail!("no active key `{id}`"),
            n => println!("revoked {n} key(s)"),
        },
    }
    Ok(())
}

fn new_key(args: CreateArgs) -> anyhow::Result<NewKey> {
    let budget_period = match args.budget_period.as_deref() {
        Some(text) => Some(BudgetPeriod::parse(text).ok_or_else(|| anyhow::anyhow!("budget period: day or month"))?),
        None => None,
    };
    Ok(NewKey {
        alias: args.alias,
        team: args.team,
        rpm_limit: args.rpm_limit,
        tpm_limit: args.tpm_limit,
        max_budget: args.max_budget,
        budget_period,
        models: args.models,
        max_tokens: args.max_tokens,
        max_n: args.max_n,
        max_priority: args.max_priority,
        expires_at: args.expires_in.map(|secs| unix_now() + secs),
    })
}
