//! One sequence (one choice of a request) as the scheduler tracks it.

use crate::kv::BlockTable;

/// Engine-internal sequence id.
pub type SeqKey = u64;

#[derive(Debug)]
pub struct Sequence {
    pub key: SeqKey,
    /// Lower is more important.
    pub priority: i32,
    /// Admission order; kept across preemption so a preempted sequence keeps its place.
    pub arrival: u64,
    /// Prompt followed by generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Tokens whose KV is in the cache.
    pub num_computed: usize,
    /// Prompt tokens served by the prefix cache at first admission.
    pub num_cached_prompt: usize,
    /// Set when prompt logprobs are wanted: every prompt token must be computed.
    pub skip_prefix_cache: bool,
    pub blocks: BlockTable,
    pub was_admitted: bool,
    pub num_preemptions: u32,
}

impl Sequence {
    pub fn new(key: SeqKey, prompt: Vec<u32>, priority: i32) -> Self {
        Self {
            key,
            priority,
            arrival: 0,
            prompt_len: prompt.len(),
            tokens: prompt,
            num_computed: 0,
            num_cached_prompt: 0,
            skip_prefix_cache: false,
            blocks: BlockTable::default(),
            was_admitted: false,
            num_preemptions: 0,
        }
    }

    pub fn num_generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens still to compute before the next token can be sampled.
    pub fn num_uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Preemption order: the least important, then the newest, goes first.
    pub fn eviction_rank(&self) -> (i32, u64) {
        (self.priority, self.arrival)
    }
}
