//! How to load the model: the `[model]` section of the server config and its flags.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;
use clap::{ArgAction, Args, ValueEnum};
use sconce_modeling::Quantization;
use sconce_text::tool_calls::ToolCallParser;
use serde::{Deserialize, Serialize};

/// Which model and how to load it. Each flag also reads its `SCONCE_*` variable; fields without
/// a flag are set in the TOML file only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    /// Catalog name, Hugging Face id, or local path of the model.
    #[arg(long = "model", env = "SCONCE_MODEL", value_name = "MODEL")]
    pub name: String,
    /// The model name clients send and see; defaults to the model's name.
    #[arg(long, env = "SCONCE_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "SCONCE_DEVICE")]
    pub device: DeviceSpec,
    /// Weight dtype; defaults to f16 on CPU (activations stay f32 there) and bf16 on CUDA.
    #[arg(long, env = "SCONCE_DTYPE")]
    pub dtype: Option<WeightDtype>,
    /// `q8_0`: int8 linear weights with per-32 scales, about half the bytes of f16 (CPU only);
    /// `none` keeps `dtype`.
    #[arg(long, env = "SCONCE_QUANTIZATION")]
    pub quantization: QuantizationMode,
    /// Whether a model missing from the local cache may be downloaded from the Hugging Face Hub.
    #[arg(skip)]
    pub allow_hub: bool,
    /// `auto` (model files) or `dummy` (random weights of --model-config's shape, no files).
    #[arg(long, env = "SCONCE_LOAD_FORMAT")]
    pub load_format: LoadFormat,
    /// For `--load-format dummy`: catalog name or config.json path (defaults to --model).
    #[arg(long, env = "SCONCE_MODEL_CONFIG")]
    pub model_config: Option<String>,
    /// Runs candle's separate ops instead of the fused kernels (add+RMSNorm, RoPE, SiLU-and-mul).
    #[arg(long, env = "SCONCE_UNFUSED", action = ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub unfused: bool,
    /// Reads special-token strings in chat message contents as control tokens (the old
    /// behaviour); by default they are plain text and only the template's markers are special.
    #[arg(long, env = "SCONCE_PARSE_SPECIAL_IN_CONTENT", action = ArgAction::Set, value_name = "BOOL")]
    pub parse_special_in_content: bool,
    /// How tool calls are written and read: `auto` (from the chat template; Sconce's Hermes
    /// tool prompt when the template has none), `hermes`, `llama3_json`, `mistral`, or `none`
    /// (refuse `tools`).
    #[arg(long, env = "SCONCE_TOOL_CALL_PARSER", value_parser = clap::value_parser!(ToolCallParser))]
    pub tool_call_parser: ToolCallParser,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            name: "smollm2-135m-instruct".into(),
            served_model_name: None,
            device: DeviceSpec::Cpu,
            dtype: None,
            quantization: QuantizationMode::None,
            allow_hub: true,
            load_format: LoadFormat::Auto,
            model_config: None,
            unfused: false,
            parse_special_in_content: false,
            tool_call_parser: ToolCallParser::Auto,
        }
    }
}

impl LoadOptions {
    /// The weight dtype: the configured one, else f16 on the CPU and bf16 on a GPU.
    pub fn weight_dtype(&self) -> DType {
        match (self.dtype, self.device) {
            (Some(dtype), _) => dtype.dtype(),
            // Decode is memory-bound: half-precision weights halve the bytes read per token.
            (None, DeviceSpec::Cpu) => DType::F16,
            (None, DeviceSpec::Cuda(_)) => DType::BF16,
        }
    }
}

/// The device to run on: `cpu`, `cuda` (the first GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(spec: &str) -> Result<Self, String> {
        match spec {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(ordinal) => Ok(Self::Cuda(ordinal)),
                None => Err(format!("unknown device `{spec}` (use cpu, cuda or cuda:N)")),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(spec: String) -> Result<Self, String> {
        spec.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(device: DeviceSpec) -> String {
        device.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(0) => f.write_str("cuda"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// The dtype weights are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
pub enum WeightDtype {
    #[value(name = "f32", alias = "float32")]
    #[serde(rename = "f32", alias = "float32")]
    F32,
    #[value(name = "f16", alias = "float16")]
    #[serde(rename = "f16", alias = "float16")]
    F16,
    #[value(name = "bf16", alias = "bfloat16")]
    #[serde(rename = "bf16", alias = "bfloat16")]
    Bf16,
}

impl WeightDtype {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// How linear weights are stored after loading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
pub enum QuantizationMode {
    /// Keep `dtype`.
    #[default]
    #[value(name = "none")]
    #[serde(rename = "none")]
    None,
    /// Int8 with one f32 scale per 32 values (GGML's Q8_0 layout); CPU only.
    #[value(name = "q8_0", alias = "q8")]
    #[serde(rename = "q8_0", alias = "q8")]
    Q8_0,
}

impl QuantizationMode {
    /// The decoder's quantization, if any.
    pub fn quantization(self) -> Option<Quantization> {
        match self {
            Self::None => None,
            Self::Q8_0 => Some(Quantization::Q8_0),
        }
    }
}

/// Where the weights come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoadFormat {
    /// The model files.
    #[default]
    Auto,
    /// Random weights of `model_config`'s shape, no files (for benchmarks).
    Dummy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_in_the_same_spellings() {
        for spec in ["cpu", "cuda", "cuda:1"] {
            assert_eq!(spec.parse::<DeviceSpec>().unwrap().to_string(), spec);
        }
        assert_eq!("cuda:0".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        let error = "tpu".parse::<DeviceSpec>().unwrap_err();
        assert!(error.contains("cpu, cuda or cuda:N"), "{error}");
    }

    #[test]
    fn the_dtype_defaults_by_device() {
        let cpu = LoadOptions::default();
        assert_eq!(cpu.weight_dtype(), DType::F16);
        let gpu = LoadOptions { device: DeviceSpec::Cuda(0), ..LoadOptions::default() };
        assert_eq!(gpu.weight_dtype(), DType::BF16);
        let f32 = LoadOptions { dtype: Some(WeightDtype::F32), ..gpu };
        assert_eq!(f32.weight_dtype(), DType::F32);
    }
}
