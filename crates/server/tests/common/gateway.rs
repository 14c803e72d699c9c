//! A server with the gateway on, in process over the tiny model, and the database its gateway
//! uses: a new SQLite file, or a new Postgres database where `SCONCE_TEST_POSTGRES_URL` is set.

use std::time::Duration;

use sconce_gateway::config::GatewayConfig;
use sconce_gateway::ledger::UsageRecord;
use sconce_server::backend::Backend;
use sconce_server::config::Config;
use sconce_server::{gateway, server, AppState};
use tokio::net::TcpListener;

use super::services::{drop_postgres_database, fresh_postgres_database};
use super::tiny_config;

pub const ADMIN: &str = "sk-admin-test";

pub struct GatewayServer {
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
}

impl GatewayServer {
    pub async fn start(gateway_config: GatewayConfig) -> Self {
        Self::start_with(gateway_config, |_| {}).await
    }

    /// As [`GatewayServer::start`], with the server config adjusted first.
    pub async fn start_with(gateway_config: GatewayConfig, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = tiny_config();
        configure(&mut config);
        let state = AppState::new(server::settings(&config));
        gateway::install_with_admin(&state, &gateway_config, Some(ADMIN.into())).await.unwrap();
        server::load_embeddings(&config, &state).await.unwrap();
        state.set_backend(Backend::launch(&config).await.unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, state.clone(), std::future::pending()));
        Self { base, state, client: reqwest::Client::new() }
    }

    pub fn request(&self, method: reqwest::Method, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Every ledger row once `count` are committed (cancelled streams land a little later).
    pub async fn rows(&self, count: usize) -> Vec<UsageRecord> {
        let gateway = self.state.gateway().unwrap();
        for _ in 0..100 {
            let rows = gateway.ledger_rows().await.unwrap();
            if rows.len() >= count {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {count} ledger rows after 5 s");
    }

    pub async fn close(&self) {
        self.state.gateway().unwrap().close().await;
    }
}

/// Where a test's gateway keeps keys, prompts and the ledger.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    postgres: Option<String>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), postgres: None }
    }

    /// None (a skip) where `SCONCE_TEST_POSTGRES_URL` is unset, outside CI.
    pub async fn postgres() -> Option<Self> {
        let url = fresh_postgres_database().await?;
        Some(Self { dir: tempfile::tempdir().unwrap(), postgres: Some(url) })
    }

    /// The gateway on, over this database.
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig {
            enabled: true,
            data_dir: Some(self.dir.path().to_path_buf()),
            database_url: self.postgres.clone(),
            ..GatewayConfig::default()
        }
    }

    pub async fn remove(self) {
        if let Some(url) = &self.postgres {
            drop_postgres_database(url).await;
        }
    }
}

/// Runs each test body on SQLite and on Postgres: `name::sqlite`, `name::postgres`.
#[allow(unused_macros)]
macro_rules! on_sqlite_and_postgres {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn sqlite() {
                super::$body(super::TestDb::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::TestDb::postgres().await {
                    super::$body(db).await;
                }
            }
        }
    )*};
}

#[allow(unused_imports)]
pub(crate) use on_sqlite_and_postgres;
