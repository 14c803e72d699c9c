//! Sconce's OpenAI-compatible HTTP server and the `sconce` command line.
//!
//! [`app::build_app`] builds the axum router over an [`state::AppState`]; [`server::run`]
//! owns the process life (load, serve, drain). A route hands each request to the
//! pipeline (`sconce-gateway`), whose innermost backend is [`local::LocalEngine`]; only
//! [`backend`] touches the engine.

pub mod app;
pub mod backend;
pub mod cli;
pub mod config;
pub mod conn;
pub mod embed;
pub mod gateway;
pub mod http;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod metrics_constraints;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod sse;
pub mod state;
pub mod telemetry;

pub use app::build_app;
pub use state::AppState;
