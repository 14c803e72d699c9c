//! `sconce prompts create|list|show|label`: manage the prompt registry in the gateway's
//! database. Running servers pick changes up within two seconds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use sconce_gateway::prompts::{LabelSpec, NewPrompt, PromptRegistry, TemplateMessage};
use sconce_gateway::store::Store;
use sconce_protocol::chat::Role;
use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct PromptsArgs {
    /// TOML config file whose `[gateway]` section names the database.
    #[arg(long, env = "SCONCE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: PromptsCommand,
}

#[derive(Debug, Subcommand)]
pub enum PromptsCommand {
    /// Store a new version of a prompt (versions count up per name); prints it.
    Create(CreateArgs),
    /// List prompts with their latest version and labels.
    List,
    /// Print every version and label of a prompt as JSON.
    Show { name: String },
    /// Point a label at a version, split it across versions, or delete it.
    Label(LabelArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    /// A system message template, with `{{ variable }}` placeholders.
    #[arg(long)]
    pub system: Option<String>,
    /// A user message template (after the system one).
    #[arg(long)]
    pub user: Option<String>,
    /// Every message as a JSON array, or `@file.json`; instead of --system and --user.
    #[arg(long, conflicts_with_all = ["system", "user"])]
    pub messages: Option<String>,
    /// The model a request gets when it names none.
    #[arg(long)]
    pub model: Option<String>,
    /// Default sampling fields as a JSON object, e.g. '{"temperature": 0.2}'.
    #[arg(long)]
    pub params: Option<String>,
    /// The commit message.
    #[arg(long, short)]
    pub message: Option<String>,
    /// Labels to point at the new version (repeat it or separate with commas).
    #[arg(long = "label", value_delimiter = ',')]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    pub name: String,
    pub label: String,
    /// Point the label at this version.
    #[arg(long, conflicts_with_all = ["split", "delete"], required_unless_present_any = ["split", "delete"])]
    pub version: Option<u32>,
    /// An A/B split: weights per version, e.g. 3=90,4=10.
    #[arg(long, conflicts_with = "delete")]
    pub split: Option<String>,
    /// Delete the label.
    #[arg(long)]
    pub delete: bool,
}

pub fn run(args: PromptsArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let url = config.gateway.resolved_database_url();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let store = Store::open(&url).await?;
        let outcome = match PromptRegistry::open(store.clone()).await {
            Ok(registry) => execute(&registry, args.command).await,
            Err(error) => Err(error),
        };
        store.close().await;
        outcome
    })
}

async fn execute(registry: &PromptRegistry, command: PromptsCommand) -> anyhow::Result<()> {
    match command {
        PromptsCommand::Create(create) => print_json(&registry.create(new_prompt(create)?).await?),
        PromptsCommand::List => {
            for prompt in registry.list().await? {
                let labels = label_list(&prompt.labels);
                println!("{}\tv{}\t{} versions\t{labels}", prompt.name, prompt.latest_version, prompt.versions);
            }
            Ok(())
        }
        PromptsCommand::Show { name } => print_json(&registry.show(&name).await?),
        PromptsCommand::Label(args) if args.delete => {
            registry.delete_label(&args.name, &args.label).await?;
            println!("deleted label `{}` of `{}`", args.label, args.name);
            Ok(())
        }
        PromptsCommand::Label(args) => {
            let split = args.split.as_deref().map(parse_split).transpose()?;
            let target = LabelSpec { version: args.version, split };
            print_json(&registry.set_label(&args.name, &args.label, target).await?)
        }
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn new_prompt(args: CreateArgs) -> anyhow::Result<NewPrompt> {
    let messages = match args.messages.as_deref() {
        Some(json) => serde_json::from_str(&read_arg(json)?).context("--messages: a JSON array of messages")?,
        None => {
            let system = args.system.map(|content| TemplateMessage { role: Role::System, content });
            let user = args.user.map(|content| TemplateMessage { role: Role::User, content });
            system.into_iter().chain(user).collect()
        }
    };
    let params = match args.params.as_deref() {
        Some(json) => serde_json::from_str(&read_arg(json)?).context("--params: a JSON object")?,
        None => Default::default(),
    };
    Ok(NewPrompt { name: args.name, messages, model: args.model, params, message: args.message, labels: args.labels })
}

/// The argument itself, or the file it names as `@path`.
fn read_arg(value: &str) -> anyhow::Result<String> {
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
        None => Ok(value.to_string()),
    }
}

/// `3=90,4=10` as weights per version.
fn parse_split(text: &str) -> anyhow::Result<BTreeMap<u32, u32>> {
    text.split(',')
        .map(|arm| {
            let (version, weight) = arm.split_once('=').context("--split: VERSION=WEIGHT,…")?;
            Ok((version.trim().parse()?, weight.trim().parse()?))
        })
        .collect()
}

/// `production=v3:90/v4:10 latest=v4`.
fn label_list(labels: &BTreeMap<String, LabelSpec>) -> String {
    let target = |spec: &LabelSpec| match (&spec.version, &spec.split) {
        (Some(version), _) => format!("v{version}"),
        (None, Some(weights)) => weights.iter().map(|(v, w)| format!("v{v}:{w}")).collect::<Vec<_>>().join("/"),
        (None, None) => String::new(),
    };
    labels.iter().map(|(label, spec)| format!("{label}={}", target(spec))).collect::<Vec<_>>().join(" ")
}
