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
}

impl LoadFormatArgs {
    /// Load options for `device` and `dtype` with these flags.
    pub fn options(&self, device: &str, dtype: Option<String>) -> LoadOptions {
        LoadOptions {
            device: device.to_string(),
            dtype,
            load_format: self.load_format.clone(),
            model_config: self.model_config.clone(),
            ..LoadOptions::default()
        }
    }
}
