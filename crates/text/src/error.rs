//! Error type shared by every part of the crate.

/// Errors from tokenizing, detokenizing and chat template rendering.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The underlying tokenizer failed to load, encode or decode.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A chat template failed to compile or render, or called `raise_exception`
    /// (then the payload is exactly the template's message).
    #[error("chat template error: {0}")]
    Template(String),
    /// A file could not be read.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A GGUF vocabulary is malformed or of an unsupported kind.
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
}

impl TextError {
    pub(crate) fn tokenizer(err: impl std::fmt::Display) -> Self {
        Self::Tokenizer(err.to_string())
    }
}
