//! Sconce's LLMOps layer.
//!
//! Every endpoint's request travels one path: the route hands a [`Call`] to the
//! [`Pipeline`], whose [`Stage`]s (metering, the prompt registry, policy, guardrails,
//! the response cache, the semantic cache) wrap an [`Upstream`]: the local engine (in
//! `sconce-server`), a remote OpenAI-compatible deployment, or the router over both.
//! Stages are generic over the endpoint ([`Api`]), so each is written once. This crate
//! never depends on the engine or candle.

pub mod cache;
pub mod guard;
pub mod prompts;
pub mod route;
pub mod semantic;

pub mod api;
pub mod auth;
pub mod budget;
pub mod config;
pub mod context;
pub mod endpoint;
pub mod error;
pub mod key_limits;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod meter;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod policy;
pub mod redis_store;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod usage;

pub use api::{
    reply_id, with_headers, Api, Backend, Call, CallResult, Chat, Completions, Embeddings, Endpoint, ExtraHeaders,
    Failure, Outcome, Reply, ReplyStream, Service, Upstream,
};
pub use context::{BackendTimings, CallContext, Journal, LiveUsage, Principal};
pub use endpoint::{ApiReply, ApiRequest};
pub use error::GatewayError;
pub use ops::Gateway;
pub use stack::{Pipeline, Stage, StageName};
