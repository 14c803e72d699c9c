//! One schedule per step under a token budget: running sequences first (decodes and continuing
//! prefills), then waiting ones in priority/FCFS order, each chunked to what the budget allows.

use std::collections::HashMap;

use super::sequence::{SeqKey, Sequence};
use crate::kv::KvCacheManager;

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
}

/// `len` tokens of sequence `key`, starting at position `start`, are computed this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub key: SeqKey,
    pub start: usize,
    pub len: usize,
}

#[derive(Debug, Default, Clone)]
pub struct SchedulerOutput {
    pub chunks: Vec<ScheduledChunk>,
    pub preempted: Vec<SeqKey>,
}

impl SchedulerOutput {
    pub fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    seqs: HashMap<SeqKey, Sequence>,
    /// Sorted by (priority, arrival).
    waiting: Vec<SeqKey>,
    running: Vec<SeqKey>,
    next_arrival: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, kv: KvCacheManager) -> Self {
        Self {
            config,
            kv,
            seqs: HashMap::new(),
            waiting: Vec::new(),
            running: Vec::new(),
            next_arrival: 0,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            preemptions: 0,
        }
    }

    /// A scheduler with the same settings and counters and nothing in it: every block free, no
    /// cached prefix.
    pub fn emptied(&self) -> Self {
        let kv = &self.kv;
        let kv = KvCacheManager::new(kv.pool().num_blocks(), kv.block_size(), kv.prefix_caching());
        Self {
            prefix_cache_queries: self.prefix_cache_queries,
            prefix_cache_hits: self.prefix_cache_hits,
            preemptions: self.preemptions,
            ..Self::new(self.config, kv)
        }
    }

    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Tokens with KV in the cache across running sequences.
    pub fn tokens_held(&self) -> usize {
        self.running.iter().filter_map(|k| self.seqs.get(k)).map(|s| s.num_computed).sum()
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn get(&self, key: SeqKey) -> Option<&Sequence> {
        self.seqs.get(&key)
    }

    pub fn add(&mut self, mut seq: Sequence) {
        seq.arrival = self.next_arrival;
        self.next_arrival += 1;
        let key = seq.key;
        self.seqs.insert(key, seq);
        self.enqueue_waiting(key);
    }

    fn enqueue_waiting(&mut self, key: SeqKey) {
        let Some(rank) = self.seqs.get(&key).map(Sequence::eviction_rank) else { return };
        let seqs = &self.seqs;
        let at = self.waiting.partition_point(|k| seqs.get(k).is_some_and(|s| s.eviction_rank() < rank));
        self.waiting.insert(at, key);
    }

    /// Plans one step. Allocates the KV blocks the chunks need.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_num_batched_tokens;
        self.kv.begin_pass();
        self.schedule_running(&mut out, &mut budget);
        if out.preempted.is_empty() {
            self.schedule_waiting(&mut out, &mut budget);
        }
        out
    }

    fn schedule_running(&mut self, out: &mut SchedulerOutput, budget: &mut usize) {
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let key = self.running[i];
            let Some(seq) = self.seqs.get(&key) else { break };
            let (start, len) = (seq.num_computed, seq.num_uncomputed().min(*budget));
            if len == 0 {
                i += 1;
                continue;
            }
            if self.allocate_or_preempt(key, start + len, out, budget) {
                out.chunks.push(ScheduledChunk { key, start, len });
                *budget -= len;
                i += 1;
            }
            // Otherwise `key` itself was preempted and removed from `running`: same index again.
        }
    }

    /// Allocates blocks for `key` up to `end`, preempting others (least important, newest first)
    /// until it fits. Returns false if `key` itself had to be preempted.
    fn allocate_or_preempt(&mut self, key: SeqKey, end: usize, out: &mut SchedulerOutput, budget: &mut usize) -> bool {
        loop {
            let Some(seq) = self.seqs.get_mut(&key) else { return false };
            if self.kv.allocate(&mut seq.blocks, end) {
                return true;
            }
            let Some(victim) = self.pick_victim() else { return false };
            if let Some(pos) = out.chunks.iter().position(|c| c.key == victim) {
                *budget += out.chunks.remove(pos).len;
            }
            self.preempt(victim);
            out.preempted.push(victim);
            if victim == key {
                return false;
            }
        }
    }

    fn pick_victim(&self) -> Option<SeqKey> {
        self.running.iter().copied().max_by_key(|k| self.seqs.get(k).map(Sequence::eviction_rank))
    }

    /// Frees a running sequence's blocks and sends it back to waiting to be recomputed.
    fn preempt(&mut self, key: SeqKey) {
        self.running.retain(|&k| k != key);
        if let Some(seq) = self.seqs.get_mut(&key) {
            self.kv.release(&mut seq.blocks);
            seq.num_computed = 0;
            seq.num_preemptions += 1;
            self.preemptions += 1;
        }
        self.enqueue_waiting(key);
    }

    fn schedule_waiting(&mut self, out: &mut SchedulerOutput, budget: &mut usize) {
        while *budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&key) = self.waiting.first() else { break };
            let Some(chunk) = self.admit(key, *budget) else { break };
            self.waiting.remove(0);
            self.running.push(key);
            *budget -= chunk.len;
            out.chunks.push(chunk);
        }
    }

    /// Reuses the cached prefix and allocates the first chunk; None (and nothing held) if it does not fit.
    fn admit(&mut self, key: SeqKey, budget: usize) -> Option<ScheduledChunk> {
        let seq = self.seqs.get_mut(&key)?;
        let cached =
            if seq.skip_prefix_cache { 0 } else { self.kv.acquire_cached_prefix(&seq.tokens, &mut seq.blocks) };
        let len = (seq.tokens.len() - cached).min(budget);
        if !self.kv.allocate(&mut seq.blocks, cached + len) {
            self.kv.release(&mut seq.blocks);
            return None;
        }
        self.kv.publish_for_this_pass(&seq.blocks, &seq.tokens, cached + len);
        seq.num_computed = cached;
        if !seq.was_admitted {
            seq.was_admitted = true;
            seq.num_cached_prompt = cached;
            if !seq.skip_prefix_cache {
                self.prefix_cache_queries += seq.prompt_len as u64;
                self.prefix_cache_hits += cached as u64;
            }
        }
        Some(ScheduledChunk { key, start: cached, len })
    }

    /// Marks the step's chunks as computed: their KV is written, so their full blocks become
    /// findable by hash. A step that failed is never completed.
    pub fn complete(&mut self, out: &SchedulerOutput) {
        for chunk in &out.chunks {
            if let Some(seq) = self.seqs.get_mut(&chunk.key) {
                seq.num_computed = chunk.start + chunk.len;
                self.kv.commit(&mut seq.blocks, &seq.tokens, seq.num_computed);
            }
        }
    }

    /// Appends a sampled token to a sequence.
    pub fn append_token(&mut self, key: SeqKey, token: u32) {
        if let Some(seq) = self.seqs.get_mut(&key) {
            seq.tokens.push(token);
        }
    }

    /// Removes a finished or aborted sequence and frees its blocks at once.
    pub fn remove(&mut self, key: SeqKey) -> Option<Sequence> {
        self.running.retain(|&k| k != key);
        self.waiting.retain(|&k| k != key);
        let mut seq = self.seqs.remove(&key)?;
        self.kv.release(&mut seq.blocks);
        Some(seq)
    }
}
