//! The token-budget scheduler: decodes first, then chunked prefills; preemption by recompute.
//! It sees token ids and block tables only, never the model.

mod scheduler;
mod sequence;

pub use scheduler::{ScheduledChunk, Scheduler, SchedulerConfig, SchedulerOutput};
pub use sequence::{SeqKey, Sequence};
