//! The engine core: `schedule → execute → update`, one step at a time, on the caller's thread.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sconce_modeling::LoadedModel;
use sconce_text::Tokenizer;

use crate::api::{Delta, EngineError, EngineStats, FinishReason, GenerateRequest, ModelInfo, TokenLogprob, Usage};
use crate::config::{EngineConfig, OnPanic};
use crate::constrain::{compute_masks, Advance, Constraint, Grammars, SequenceConstraint};
use crate::fault::FaultPlan;
use crate::kv::KvCacheManager;
use crate::output::{Choice, ChoiceInit, DeltaSink, TokenContext};
use crate::runner::{BatchPlan, ChunkRows, ModelRunner};
use crate::sample::logprobs_of;
use crate::sched::{ScheduledChunk, Scheduler, SchedulerConfig, SeqKey, Sequence};
use crate::validate::validate_request;

/// A token sampled in a step, with its logits when `EngineConfig::capture_logits` is set.
#[derive(Debug, Clone)]
pub struct SampledToken {
    pub request_id: String,
    pub index: usize,
    pub token: u32,
    pub logits: Option<Vec<f32>>,
}

#[derive(Debug, Default)]
pub struct StepOutcome {
    pub sampled: Vec<SampledToken>,
    pub num_tokens: usize,
    pub preempted: usize,
}

pub struct Engine {
    scheduler: Scheduler,
    runner: ModelRunner,
    choices: HashMap<SeqKey, Choice>,
    requests: HashMap<String, Vec<SeqKey>>,
    /// For detokenizing and stop strings; the text side proper is the caller's `ModelFrontend`.
    tokenizer: Arc<Tokenizer>,
    eos_ids: Vec<u32>,
    info: ModelInfo,
    capture_logits: bool,
    next_key: SeqKey,
    prompt_tokens_total: u64,
    generation_tokens_total: u64,
    steps: u64,
    on_panic: OnPanic,
    /// Test-only faults (`SCONCE_FAULT_INJECT`); none in normal runs.
    fault: FaultPlan,
    /// Compiles constraints for this model's tokenizer (shared with the handle).
    grammars: Arc<Grammars>,
}

impl Engine {
    /// Sizes the KV cache, allocates it and readies the scheduler.
    pub fn new(model: LoadedModel, config: &EngineConfig) -> Result<Self, EngineError> {
        let model_config = model.decoder.config().clone();
        let dtype_size = model.decoder.dtype().size_in_bytes();
        let gpu_free = crate::launch::gpu_free_memory(model.decoder.device());
        let num_blocks = config.num_kv_blocks_with(&model_config, dtype_size, gpu_free);
        if num_blocks == 0 {
            return Err(EngineError::Load("the KV cache budget is smaller than one block".into()));
        }
        let max_model_len = config.max_model_len(&model_config, num_blocks);
        let kv_gib =
            (num_blocks * config.block_size * model_config.kv_bytes_per_token(dtype_size)) as f64 / (1u64 << 30) as f64;
        tracing::info!(
            num_blocks,
            tokens = num_blocks * config.block_size,
            max_model_len,
            kv_gib,
            gpu_free,
            "KV cache sized"
        );
        let runner = ModelRunner::new(model.decoder, num_blocks, config.block_size)
            .map_err(|e| EngineError::Load(e.to_string()))?;
        let kv = KvCacheManager::new(num_blocks, config.block_size, config.enable_prefix_caching);
        let grammars = Arc::new(Grammars::new(
            &model.tokenizer,
            &model.eos_token_ids,
            model_config.vocab_size,
            config.max_grammar_bytes,
        ));
        let sched_config = SchedulerConfig {
            max_num_seqs: config.max_num_seqs,
            max_num_batched_tokens: config.max_num_batched_tokens,
        };
        Ok(Self {
            scheduler: Scheduler::new(sched_config, kv),
            runner,
            choices: HashMap::new(),
            requests: HashMap::new(),
            info: ModelInfo {
                name: model.name,
                max_model_len,
                vocab_size: model_config.vocab_size,
                block_size: config.block_size,
            },
            tokenizer: model.tokenizer,
            eos_ids: model.eos_token_ids,
            capture_logits: config.capture_logits,
            next_key: 0,
            prompt_tokens_total: 0,
            generation_tokens_total: 0,
            steps: 0,
            on_panic: config.on_panic,
            fault: FaultPlan::from_config_or_env(config.fault_inject.as_deref()),
            grammars,
        })
    }

    pub fn on_panic(&self) -> OnPanic {
        self.on_panic
    }

    /// Replaces the injected faults (tests).
    pub fn set_fault_plan(&mut self, plan: FaultPlan) {
        self.fault = plan;
    }

    /// The constraint compiler (compile off the engine thread, then submit).
    pub fn grammars(&self) -> Arc<Grammars> {
        self.grammars.clone()
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn has_work(&self) -> bool {
        self.scheduler.has_work()
    }

    pub fn stats(&self) -> EngineStats {
        let pool = self.scheduler.kv().pool();
        EngineStats {
            num_running: self.scheduler.num_running(),
            num_waiting: self.scheduler.num_waiting(),
            kv_blocks_total: pool.num_blocks(),
            kv_blocks_free: pool.num_free(),
            kv_usage: pool.usage(),
            kv_tokens_held: self.scheduler.tokens_held(),
            prefix_cache_queries: self.scheduler.prefix_cache_queries,
            prefix_cache_hits: self.scheduler.prefix_cache_hits,
            preemptions: self.scheduler.preemptions,
            prompt_tokens_total: self.prompt_tokens_total,
            generation_tokens_total: self.generation_tokens_total,
            steps: self.steps,
        }
    }

    /// Validates and enqueues a request; its deltas go to `sink`.
    pub fn add_request(&mut self, req: GenerateRequest, sink: DeltaSink, arrival: Instant) -> Result<(), EngineError> {
        validate_request(&req, &self.info)?;
        if self.requests.contains_key(&req.id) {
            return Err(EngineError::DuplicateId(req.id));
        }
        let mut req = req;
        // Taken out of the shared params: the last choice gets this matcher, the others copies.
        let mut constraint = req.params.constraint.take();
        let params = Arc::new(req.params);
        let init = ChoiceInit {
            request_id: &req.id,
            params: params.clone(),
            prompt: &req.prompt,
            tokenizer: &self.tokenizer,
            sink: &sink,
            arrival,
        };
        let mut keys = Vec::with_capacity(params.n);
        for index in 0..params.n {
            let key = self.next_key;
            self.next_key += 1;
            let matcher = match index + 1 == params.n {
                true => constraint.take().map(Constraint::into_matcher),
                false => constraint.as_ref().map(Constraint::matcher),
            };
            self.choices.insert(key, Choice::new(&init, index, choice_seed(params.seed, index), matcher));
            let mut seq = Sequence::new(key, req.prompt.clone(), req.priority);
            seq.skip_prefix_cache = params.prompt_logprobs.is_some();
            self.scheduler.add(seq);
            keys.push(key);
        }
        self.requests.insert(req.id, keys);
        Ok(())
    }

    /// Aborts every choice of a request at once, freeing its KV blocks.
    pub fn abort(&mut self, request_id: &str) {
        self.end_request(request_id, FinishReason::Abort);
    }

    fn end_request(&mut self, request_id: &str, reason: FinishReason) {
        let Some(keys) = self.requests.remove(request_id) else { return };
        for key in keys {
            let usage = self.usage_of(key);
            self.scheduler.remove(key);
            if let Some(choice) = self.choices.remove(&key) {
                let _ = choice.sink.send(choice.end_delta(reason, usage));
            }
        }
    }

    /// Aborts every request (shutdown).
    pub fn abort_all(&mut self) {
        self.end_all(FinishReason::Abort);
    }

    /// Ends every request with [`FinishReason::Error`] and the usage of what ran (a failed step).
    pub fn fail_all(&mut self) {
        self.end_all(FinishReason::Error);
    }

    fn end_all(&mut self, reason: FinishReason) {
        let ids: Vec<String> = self.requests.keys().cloned().collect();
        for id in ids {
            self.end_request(&id, reason);
        }
    }

    /// After a panic: fails every request and starts over with an empty KV cache and prefix
    /// index (nothing written before the panic is trusted), keeping the loaded weights.
    pub fn restart(&mut self) {
        self.fail_all();
        self.choices.clear();
        self.requests.clear();
        self.scheduler = self.scheduler.emptied();
    }

    /// Runs one `schedule → execute → update` step.
    pub fn step(&mut self) -> Result<StepOutcome, EngineError> {
        let plan = self.scheduler.schedule();
        let mut outcome =
            StepOutcome { num_tokens: plan.num_tokens(), preempted: plan.preempted.len(), ..Default::default() };
        if plan.is_empty() {
            return Ok(outcome);
        }
        self.steps += 1;
        self.fault.before_step(self.steps)?;
        let now = Instant::now();
        for chunk in &plan.chunks {
            if let Some(choice) = self.choices.get_mut(&chunk.key) {
                choice.timeline.first_scheduled.get_or_insert(now);
            }
        }
        let wants_prompt_logprobs = |key: SeqKey| self.choices.get(&key).is_some_and(|c| c.prompt_logprobs.is_some());
        let batch = BatchPlan::build(
            &plan.chunks,
            |k| self.scheduler.get(k),
            self.info.block_size,
            |seq, chunk| wants_prompt_logprobs(seq.key) && chunk.start < seq.prompt_len,
        );
        let rows = batch.chunk_rows.clone();
        let sampling = plan.chunks.iter().zip(&rows).filter(|(_, rows)| rows.samples).map(|(chunk, _)| chunk.key);
        let logits = self.execute_with_masks(batch, sampling).map_err(|e| EngineError::Internal(e.to_string()))?;
        let vocab = logits.dim(1).map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut logits: Vec<f32> =
            logits.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.scheduler.complete(&plan);
        for (chunk, rows) in plan.chunks.iter().zip(rows) {
            if rows.all_tokens {
                self.collect_prompt_logprobs(chunk, &rows, &logits, vocab);
            }
            if rows.samples {
                let last = if rows.all_tokens { rows.first_row + chunk.len - 1 } else { rows.first_row };
                // Each row is sampled once, so the sampler may use it as scratch in place.
                let row_logits = &mut logits[last * vocab..(last + 1) * vocab];
                if let Some(sampled) = self.sample_and_emit(chunk.key, row_logits) {
                    outcome.sampled.push(sampled);
                }
            }
        }
        self.prompt_tokens_total += plan.chunks.iter().map(|c| self.prompt_part(c)).sum::<usize>() as u64;
        Ok(outcome)
    }

    /// Runs the forward pass while the constrained sequences that sample this step compute
    /// their masks on the pool's other threads.
    fn execute_with_masks(
        &mut self,
        batch: BatchPlan,
        sampling: impl Iterator<Item = SeqKey>,
    ) -> candle_core::Result<candle_core::Tensor> {
        // No constrained choice (the common case): no set, no scan of the choices per step.
        if !self.choices.values().any(|choice| choice.constraint.is_some()) {
            return self.runner.execute(batch);
        }
        let sampling: HashSet<SeqKey> = sampling.collect();
        let jobs: Vec<&mut SequenceConstraint> = self
            .choices
            .iter_mut()
            .filter(|(key, _)| sampling.contains(key))
            .filter_map(|(_, choice)| choice.constraint.as_mut())
            .collect();
        if jobs.is_empty() {
            return self.runner.execute(batch);
        }
        let stats = self.grammars.stats();
        let runner = &self.runner;
        let mut logits = None;
        let (mut forward, mut masks) = (Duration::ZERO, Duration::ZERO);
        rayon::in_place_scope(|scope| {
            scope.spawn(|_| masks = compute_masks(jobs, &stats));
            let started = Instant::now();
            logits = Some(runner.execute(batch));
            forward = started.elapsed();
        });
        stats.note_step(forward, masks);
        logits.unwrap_or_else(|| Err(candle_core::Error::Msg("the forward pass did not run".into())))
    }

    fn prompt_part(&self, chunk: &ScheduledChunk) -> usize {
        self.scheduler.get(chunk.key).map_or(0, |s| s.prompt_len.saturating_sub(chunk.start).min(chunk.len))
    }

    fn collect_prompt_logprobs(&mut self, chunk: &ScheduledChunk, rows: &ChunkRows, logits: &[f32], vocab: usize) {
        let (Some(seq), Some(choice)) = (self.scheduler.get(chunk.key), self.choices.get_mut(&chunk.key)) else {
            return;
        };
        let Some(collected) = choice.prompt_logprobs.as_mut() else { return };
        let top = choice.params.prompt_logprobs.unwrap_or(0);
        for offset in 0..chunk.len {
            let next = chunk.start + offset + 1;
            // A prefill restarted after preemption recomputes positions already collected.
            if next < seq.prompt_len && next == collected.len() {
                let row = rows.first_row + offset;
                let lp: TokenLogprob = logprobs_of(&logits[row * vocab..(row + 1) * vocab], seq.tokens[next], top);
                collected.push(Some(lp));
            }
        }
    }

    /// Samples the next token of a sequence, emits its delta, and finishes it when done.
    fn sample_and_emit(&mut self, key: SeqKey, logits: &mut [f32]) -> Option<SampledToken> {
        let captured = self.capture_logits.then(|| logits.to_vec());
        let num_generated = self.scheduler.get(key)?.num_generated();
        let choice = self.choices.get_mut(&key)?;
        let sampled =
            choice.sampler.sample_constrained(logits, num_generated, &self.eos_ids, choice.constraint.as_mut());
        let grammar = choice.constraint.as_mut().map(|constraint| constraint.advance(sampled.token));
        if grammar == Some(Advance::Failed) {
            tracing::warn!(request = %choice.request_id, token = sampled.token, "the constraint refused a sampled token");
        }
        self.scheduler.append_token(key, sampled.token);
        self.generation_tokens_total += 1;
        let seq = self.scheduler.get(key)?;
        let ctx = TokenContext {
            token: sampled.token,
            logprob: sampled.logprob,
            num_generated: seq.num_generated(),
            total_len: seq.tokens.len(),
            max_model_len: self.info.max_model_len,
            eos_ids: &self.eos_ids,
            grammar_complete: matches!(grammar, Some(Advance::Complete | Advance::Failed)),
        };
        let delta = choice.on_token(ctx);
        let record = SampledToken {
            request_id: choice.request_id.clone(),
            index: choice.index,
            token: sampled.token,
            logits: captured,
        };
        if delta.finish_reason.is_some() {
            self.finish(key, delta);
        } else if choice.sink.send(delta).is_err() {
            // The receiver is gone (client disconnected): stop at once.
            let id = choice.request_id.clone();
            self.abort(&id);
        }
        Some(record)
    }

    fn usage_of(&self, key: SeqKey) -> Usage {
        self.scheduler.get(key).map_or(Usage::default(), |s| Usage {
            prompt_tokens: s.prompt_len,
            completion_tokens: s.num_generated(),
            cached_tokens: s.num_cached_prompt,
        })
    }

    fn finish(&mut self, key: SeqKey, mut delta: Delta) {
        let usage = self.usage_of(key);
        self.scheduler.remove(key);
        let Some(choice) = self.choices.remove(&key) else { return };
        choice.finalize(&mut delta, usage);
        let _ = choice.sink.send(delta);
        if let Some(keys) = self.requests.get_mut(&choice.request_id) {
            keys.retain(|&k| k != key);
            if keys.is_empty() {
                self.requests.remove(&choice.request_id);
            }
        }
    }
}

/// Choice 0 uses the request's seed as is; the others derive distinct seeds from it.
fn choice_seed(seed: Option<u64>, index: usize) -> Option<u64> {
    seed.map(|s| if index == 0 { s } else { s ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) })
}
