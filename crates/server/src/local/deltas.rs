//! All deltas of one API request: one engine request per prompt, merged, with metrics
//! and usage tallied on the way.

use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use sconce_gateway::Journal;
use sconce_protocol::{ApiError, Usage};

use super::serving::{InFlightGuard, Serving};
use super::spec::engine_error;
use crate::backend::{Backend, Delta, GenerateRequest, RequestStream};

/// Submits the engine requests of one API request (tracked under `id`); choice `c` of
/// prompt `p` becomes index `p * choices_per_prompt + c`. Tokens are counted into
/// `journal.live` as they arrive.
pub fn start(
    serving: &Arc<Serving>,
    backend: &Backend,
    id: &str,
    requests: Vec<GenerateRequest>,
    prompt_param: &str,
    journal: Arc<Journal>,
) -> Result<DeltaStream, ApiError> {
    let guard = serving.track(id)?;
    let choices_per_prompt = requests.first().map_or(1, |request| request.params.n);
    let prompt_lens = requests.iter().map(|request| request.prompt.len()).collect();
    let mut merged = SelectAll::new();
    for (prompt_index, request) in requests.into_iter().enumerate() {
        let stream = backend.submit(request).map_err(|e| engine_error(e, prompt_param))?;
        merged.push(renumbered(stream, prompt_index * choices_per_prompt));
    }
    let mut deltas = DeltaStream::new(serving.clone(), id.to_string(), merged, prompt_lens, choices_per_prompt, guard);
    deltas.journal = Some(journal);
    deltas.count_prompt();
    Ok(deltas)
}

fn renumbered(stream: RequestStream, offset: usize) -> BoxStream<'static, Delta> {
    futures_util::stream::unfold(stream, move |mut stream| async move {
        let mut delta = stream.next().await?;
        delta.index += offset;
        Some((delta, stream))
    })
    .boxed()
}

/// All deltas of one API request, merged across prompts, with metrics and usage
/// tallied on the way. Dropping it aborts whatever is still generating.
pub struct DeltaStream {
    serving: Arc<Serving>,
    id: String,
    merged: SelectAll<BoxStream<'static, Delta>>,
    choices_per_prompt: usize,
    unfinished: usize,
    prompt_usage: Vec<Option<(usize, usize)>>,
    prompt_lens: Vec<usize>,
    completion_tokens: usize,
    /// Tokens of each choice not yet counted in `completion_tokens` (it is still running).
    open_tokens: Vec<usize>,
    last_token_at: Vec<Option<Instant>>,
    /// Where the running token counts go (what an early end is billed for).
    journal: Option<Arc<Journal>>,
    _in_flight: InFlightGuard,
}

impl DeltaStream {
    fn new(
        serving: Arc<Serving>,
        id: String,
        merged: SelectAll<BoxStream<'static, Delta>>,
        prompt_lens: Vec<usize>,
        choices_per_prompt: usize,
        guard: InFlightGuard,
    ) -> Self {
        let prompts = prompt_lens.len();
        let choices = prompts * choices_per_prompt;
        Self {
            serving,
            id,
            merged,
            choices_per_prompt,
            unfinished: choices,
            prompt_usage: vec![None; prompts],
            prompt_lens,
            completion_tokens: 0,
            open_tokens: vec![0; choices],
            last_token_at: vec![None; choices],
            journal: None,
            _in_flight: guard,
        }
    }

    pub fn choices(&self) -> usize {
        self.last_token_at.len()
    }

    pub fn choices_per_prompt(&self) -> usize {
        self.choices_per_prompt
    }

    pub async fn next(&mut self) -> Option<Delta> {
        if self.unfinished == 0 {
            return None;
        }
        let delta = self.merged.next().await?;
        self.observe(&delta);
        Some(delta)
    }

    /// True once every choice has finished (false if the engine stopped early).
    pub fn is_complete(&self) -> bool {
        self.unfinished == 0
    }

    /// Prompt tokens are counted once per prompt, completion tokens per choice.
    pub fn usage(&self) -> Usage {
        let (prompt, cached) =
            self.prompt_usage.iter().flatten().fold((0, 0), |(prompt, cached), (p, c)| (prompt + p, cached + c));
        Usage::new(prompt, self.completion_tokens, cached)
    }

    /// Usage of what was generated so far, running choices included (for an early stop).
    pub fn usage_so_far(&self) -> Usage {
        let reported = self.prompt_usage.iter().zip(&self.prompt_lens);
        let (prompt, cached) = reported
            .map(|(usage, &len)| usage.unwrap_or((len, 0)))
            .fold((0, 0), |(prompt, cached), (p, c)| (prompt + p, cached + c));
        Usage::new(prompt, self.completion_tokens + self.open_tokens.iter().sum::<usize>(), cached)
    }

    /// The prompt tokens submitted (and, once reported, how many hit the prefix cache).
    fn count_prompt(&self) {
        if let Some(journal) = &self.journal {
            let usage = self.usage_so_far();
            journal.live.set_prompt(usage.prompt_tokens as u64, usage.prompt_tokens_details.cached_tokens as u64);
        }
    }

    fn observe(&mut self, delta: &Delta) {
        if let Some(journal) = &self.journal {
            journal.live.add_completion(delta.token_ids.len() as u64);
        }
        let now = Instant::now();
        let metrics = self.serving.metrics();
        if let Some(slot) = self.last_token_at.get_mut(delta.index) {
            if let (Some(previous), Some(metrics)) = (slot.replace(now), metrics) {
                metrics.observe_token_gap(now.duration_since(previous).as_secs_f64());
            }
        }
        let open = self.open_tokens.get_mut(delta.index);
        let Some(reason) = delta.finish_reason else {
            if let Some(open) = open {
                *open += delta.token_ids.len();
            }
            return;
        };
        if let Some(open) = open {
            *open = 0;
        }
        self.unfinished = self.unfinished.saturating_sub(1);
        if let Some(usage) = delta.usage {
            self.completion_tokens += usage.completion_tokens;
            let prompt = delta.index / self.choices_per_prompt.max(1);
            if let Some(slot) = self.prompt_usage.get_mut(prompt) {
                slot.get_or_insert((usage.prompt_tokens, usage.cached_tokens));
            }
            self.count_prompt();
        }
        if let Some(metrics) = metrics {
            metrics.observe_finish(reason.as_str(), delta.timings.as_ref());
        }
        if self.unfinished == 0 {
            let usage = self.usage();
            tracing::info!(
                id = %self.id,
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                cached_tokens = usage.prompt_tokens_details.cached_tokens,
                "generation finished"
            );
        }
    }
}

/// Tokens the engine already sent but nobody read (the client hung up) were generated
/// too: they are counted before the stream goes.
impl Drop for DeltaStream {
    fn drop(&mut self) {
        if self.journal.is_none() {
            return;
        }
        while self.unfinished > 0 {
            match self.merged.next().now_or_never() {
                Some(Some(delta)) => self.observe(&delta),
                _ => break,
            }
        }
    }
}
