//! Flags for loading synthetic weights, shared by `generate` and `bench`.

use clap::Args;
use sconce_engine::LoadOptions;

#[derive(Debug, Clone, Default, Args)]
pub struct LoadFormatArgs {
    /// `auto` (model files) or `dummy` (random weights of --model-config's shape, no files).
    #[arg(long, default_value = "auto")]
    pub load_format: String,
    /// For `--load-format dummy`: catalog name or config.json path (defaults to --model).
    #[arg(long)]
    pub model_config: Option<String>,
    /// `q8_0`: int8 linear weights with per-32 scales, about half the bytes of f16 (CPU only).
    #[arg(long)]
    pub quantization: Option<String>,
}

impl LoadFormatArgs {
    /// Load options for `device` and `dtype` with these flags.
    pub fn options(&self, device: &str, dtype: Option<String>) -> LoadOptions {
        LoadOptions {
            device: device.to_string(),
            dtype,
            load_format: self.load_format.clone(),
            model_config: self.model_config.clone(),
            quantization: self.quantization.clone(),
            ..LoadOptions::default()
        }
    }
}
