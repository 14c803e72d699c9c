//! Model loading (safetensors, GGUF, the Hub, the catalog) and the one Llama-family decoder.

mod attention;
pub mod catalog;
mod config;
mod decoder;
mod dummy;
pub mod encoder;
mod error;
pub mod fetch;
mod gguf;
mod loader;
mod rope;

pub use attention::{causal_attention, Attention, ReferenceAttention};
pub use candle_core::Device;
pub use catalog::ModelKind;
pub use config::{Llama3RopeScaling, ModelConfig};
pub use decoder::{Decoder, Quantization};
pub use dummy::{byte_tokenizer, dummy_config, load_dummy, BYTE_EOS};
pub use encoder::{load_embedding_folder, load_embedding_model, EmbeddingModel, Encoder};
pub use error::ModelError;
pub use fetch::{FetchOptions, ModelSource};
pub use loader::{load_gguf, load_hf_folder, load_model, load_source, LoadedModel};

/// Parses a dtype name (`f32`, `f16`, `bf16`).
pub fn parse_dtype(name: &str) -> Result<candle_core::DType, ModelError> {
    match name {
        "f32" | "float32" => Ok(candle_core::DType::F32),
        "f16" | "float16" => Ok(candle_core::DType::F16),
        "bf16" | "bfloat16" => Ok(candle_core::DType::BF16),
        other => Err(ModelError::Config(format!("unknown dtype `{other}` (use f32, f16 or bf16)"))),
    }
}
