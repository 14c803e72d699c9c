//! From a model name to a running engine.

use candle_core::{DType, Device};
use sconce_modeling::{load_model, parse_dtype, FetchOptions};

use crate::api::EngineError;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::handle::EngineHandle;

/// How to load the model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Weight dtype: `f32`, `f16` or `bf16`; defaults to f16 on CPU (activations stay f32 there)
    /// and bf16 on CUDA.
    pub dtype: Option<String>,
    /// The name clients use; defaults to the model spec.
    pub served_model_name: Option<String>,
    pub allow_hub: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: "cpu".into(), dtype: None, served_model_name: None, allow_hub: true }
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device, EngineError> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return Err(EngineError::Load(format!("unknown device `{spec}` (use cpu, cuda or cuda:N)"))),
        },
    };
    Device::new_cuda(ordinal).map_err(|e| EngineError::Load(format!("cannot open {spec}: {e}")))
}

/// Resolves (catalog name, Hub id or path), loads and starts the engine loop thread. Blocking.
pub fn launch(model: &str, load: &LoadOptions, config: EngineConfig) -> Result<EngineHandle, EngineError> {
    let device = parse_device(&load.device)?;
    let dtype = match &load.dtype {
        Some(name) => parse_dtype(name).map_err(|e| EngineError::Load(e.to_string()))?,
        // Decode is memory-bound: half-precision weights halve the bytes read per token.
        None if device.is_cpu() => DType::F16,
        None => DType::BF16,
    };
    let fetch = FetchOptions { allow_hub: load.allow_hub, ..FetchOptions::default() };
    let mut loaded = load_model(model, dtype, &device, &fetch).map_err(|e| EngineError::Load(e.to_string()))?;
    if let Some(name) = &load.served_model_name {
        loaded.name = name.clone();
    }
    let max_waiting = config.max_waiting_requests;
    let engine = Engine::new(loaded, &config)?;
    EngineHandle::spawn(engine, max_waiting)
}
