//! From a model name to a running engine.

use candle_core::{DType, Device};
use sconce_modeling::{dummy_config, load_dummy, load_model, FetchOptions, LoadedModel};

use crate::api::EngineError;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::frontend::ModelFrontend;
use crate::handle::EngineHandle;
use crate::load::{DeviceSpec, LoadFormat, LoadOptions};

/// Free memory of a CUDA device in bytes; `None` on the CPU (or when it cannot be read).
pub fn gpu_free_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        return dev.cuda_stream().context().mem_get_info().ok().map(|(free, _)| free as u64);
    }
    let _ = device;
    None
}

/// Loads `load.name` per `load.load_format` on `device`.
pub fn load_for(load: &LoadOptions, dtype: DType, device: &Device) -> Result<LoadedModel, EngineError> {
    let err = |e: sconce_modeling::ModelError| EngineError::Load(e.to_string());
    let model = load.name.as_str();
    match load.load_format {
        LoadFormat::Auto => {
            let fetch = FetchOptions { allow_hub: load.allow_hub, ..FetchOptions::default() };
            load_model(model, dtype, device, &fetch).map_err(err)
        }
        LoadFormat::Dummy => {
            let config = dummy_config(load.model_config.as_deref().unwrap_or(model)).map_err(err)?;
            load_dummy(model, &config, dtype, device).map_err(err)
        }
    }
}

/// Opens the device `spec` names.
pub fn open_device(spec: DeviceSpec) -> Result<Device, EngineError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => {
            Device::new_cuda(ordinal).map_err(|e| EngineError::Load(format!("cannot open {spec}: {e}")))
        }
    }
}

/// Resolves `load.name` (catalog name, Hub id or path), loads it and starts the engine loop
/// thread. Returns the engine next to the model's text side. Blocking.
pub fn launch(load: &LoadOptions, config: EngineConfig) -> Result<(EngineHandle, ModelFrontend), EngineError> {
    let device = open_device(load.device)?;
    let mut loaded = load_for(load, load.weight_dtype(), &device)?;
    if let Some(quantization) = load.quantization.quantization() {
        loaded.decoder.quantize(quantization).map_err(|e| EngineError::Load(e.to_string()))?;
    }
    loaded.decoder.set_fused(!load.unfused);
    if let Some(name) = &load.served_model_name {
        loaded.name = name.clone();
    }
    let mut frontend = ModelFrontend::of(&loaded);
    if load.parse_special_in_content {
        frontend.content_specials = sconce_text::ContentSpecials::Parse;
    }
    frontend.tool_call_parser = load.tool_call_parser;
    let max_waiting = config.max_waiting_requests;
    let engine = Engine::new(loaded, &config)?;
    Ok((EngineHandle::spawn(engine, max_waiting)?, frontend))
}
