//! sconce-text: tokenizers, incremental detokenization, stop strings and
//! chat templates. Has no tensor dependency.

mod chat_prompt;
mod chat_template;
mod detokenizer;
mod error;
mod gguf_vocab;
mod pieces;
mod stop;
mod template_json;
mod tokenizer;
pub mod tool_calls;

pub use chat_prompt::{encode_chat, ContentSpecials};
pub use chat_template::{ChatMessage, ChatTemplate};
pub use detokenizer::IncrementalDetokenizer;
pub use error::TextError;
pub use gguf_vocab::{GgufTokenType, GgufVocab};
pub use pieces::Piece;
pub use stop::{StopMatcher, StopOutput};
pub use tokenizer::Tokenizer;
pub use tool_calls::grammar_json_layout as json_layout;
