//! Sconce's inference engine: a paged KV cache with prefix caching, a token-budget scheduler that
//! mixes decodes and chunked prefills, a model runner over one flattened batch per step, and a
//! sampler. [`launch`] runs it on its own thread behind an [`EngineHandle`] and hands back the model's
//! text side as a [`ModelFrontend`].

mod api;
mod config;
pub mod constrain;
mod engine;
mod fault;
mod frontend;
mod handle;
pub mod kv;
mod launch;
mod load;
mod output;
pub mod runner;
pub mod sample;
pub mod sched;
mod size;
mod validate;

pub use api::*;
pub use config::{available_memory, EngineConfig, OnPanic};
pub use constrain::{Constraint, GrammarSpec, Grammars, MaskStatsSnapshot};
pub use engine::{Engine, SampledToken, StepOutcome};
pub use fault::{FaultPlan, FAULT_INJECT_VAR};
pub use frontend::ModelFrontend;
pub use handle::{EngineHandle, EngineState, RequestStream};
pub use launch::{gpu_free_memory, launch, load_for, open_device};
pub use load::{DeviceSpec, LoadFormat, LoadOptions, QuantizationMode, WeightDtype};
pub use output::DeltaSink;
pub use size::ByteSize;
pub use validate::validate_request;
