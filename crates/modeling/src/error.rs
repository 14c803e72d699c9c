//! Typed model-loading errors.

use crate::fetch::FetchError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("cannot read weights from {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
