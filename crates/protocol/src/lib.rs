//! OpenAI wire protocol for Sconce: request and response types for chat and text
//! completions, models and tokenization, their validation, and the error envelope.
//! Serde only (clap for `RequestLimits` with the `clap` feature); nothing here knows about
//! the engine or HTTP.

pub mod chat;
pub mod common;
pub mod completion;
pub mod embeddings;
pub mod error;
pub mod limits;
mod logit_bias;
pub mod logprobs;
pub mod models;
pub mod structured;
pub mod tokenize;
pub mod tools;

pub use common::{SamplingOptions, StopSpec, StreamOptions, Usage};
pub use error::{ApiError, ErrorBody, ErrorEnvelope};
pub use limits::{LogprobShape, RequestLimits};
pub use logit_bias::parse_logit_bias;

/// The SSE data line that ends every stream.
pub const STREAM_DONE: &str = "[DONE]";
