//! From a model name to a running engine.

use candle_core::{DType, Device};
use sconce_modeling::{dummy_config, load_dummy, load_model, parse_dtype, FetchOptions, LoadedModel, Quantization};

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
    /// `q8_0` stores linear weights as int8 with per-32 scales (CPU only); `none` or unset keeps `dtype`.
    pub quantization: Option<String>,
    /// The name clients use; defaults to the model spec.
    pub served_model_name: Option<String>,
    pub allow_hub: bool,
    /// `auto` (files) or `dummy` (random weights of `model_config`'s shape, no files).
    pub load_format: String,
    /// For `dummy`: a catalog name with a `[config]` table or a config.json path; defaults to the model spec.
    pub model_config: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: "cpu".into(),
            dtype: None,
            quantization: None,
            served_model_name: None,
            allow_hub: true,
            load_format: "auto".into(),
            model_config: None,
        }
    }
}

/// Free memory of a CUDA device in bytes; `None` on the CPU (or when it cannot be read).
pub fn gpu_free_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        return dev.cuda_stream().context().mem_get_info().ok().map(|(free, _)| free as u64);
    }
    let _ = device;
    None
}

/// Loads `model` per `load.load_format` on `device`.
pub fn load_for(model: &str, load: &LoadOptions, dtype: DType, device: &Device) -> Result<LoadedModel, EngineError> {
    let err = |e: sconce_modeling::ModelError| EngineError::Load(e.to_string());
    match load.load_format.as_str() {
        "auto" | "" => {
            let fetch = FetchOptions { allow_hub: load.allow_hub, ..FetchOptions::default() };
            load_model(model, dtype, device, &fetch).map_err(err)
        }
        "dummy" => {
            let config = dummy_config(load.model_config.as_deref().unwrap_or(model)).map_err(err)?;
            load_dummy(model, &config, dtype, device).map_err(err)
        }
        other => Err(EngineError::Load(format!("unknown load format `{other}` (use auto or dummy)"))),
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
    let quantization =
        Quantization::parse(load.quantization.as_deref().unwrap_or("none")).map_err(EngineError::Load)?;
    let mut loaded = load_for(model, load, dtype, &device)?;
    if let Some(quantization) = quantization {
        loaded.decoder.quantize(quantization).map_err(|e| EngineError::Load(e.to_string()))?;
    }
    if let Some(name) = &load.served_model_name {
        loaded.name = name.clone();
    }
    let max_waiting = config.max_waiting_requests;
    let engine = Engine::new(loaded, &config)?;
    EngineHandle::spawn(engine, max_waiting)
}
