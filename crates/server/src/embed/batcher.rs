//! One embedding model's batcher: a thread of its own (never the chat engine's) that packs
//! queued inputs into padded batches within a token budget, as TEI does, and answers each
//! request once all its inputs ran. The queue is bounded in inputs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use sconce_modeling::Encoder;
use sconce_protocol::ApiError;
use tokio::sync::oneshot;

use super::metrics::EmbeddingMetrics;

/// How batches are formed and how much may wait.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most padded tokens (inputs × longest) per forward pass; one input always fits.
    pub max_batch_tokens: usize,
    pub max_batch_inputs: usize,
    pub max_queued_inputs: usize,
}

type Vectors = Result<Vec<Vec<f32>>, String>;

/// One request's inputs, shortest first (less padding), with where each came from.
struct Job {
    units: Vec<(usize, Vec<u32>)>,
    results: Vec<Vec<f32>>,
    /// Units handed to batches so far.
    next: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Vectors>,
}

impl Job {
    fn taken(&self) -> bool {
        self.next == self.units.len()
    }
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    tx: Sender<Job>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

/// Starts the batcher thread for `encoder`.
pub fn start(encoder: Encoder, limits: BatchLimits, metrics: Arc<EmbeddingMetrics>, model: String) -> Queue {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let worker = Worker { encoder, limits, metrics, model: model.clone(), queued: queued.clone() };
    let spawned = std::thread::Builder::new().name(format!("sconce-embed-{model}")).spawn(move || worker.run(rx));
    if let Err(err) = spawned {
        tracing::error!(%model, "cannot start the embedding batcher: {err}");
    }
    Queue { tx, queued, max_queued: limits.max_queued_inputs }
}

impl Queue {
    /// Embeds `inputs` (token ids), in order; 429 when the queue is full.
    pub async fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, ApiError> {
        let count = inputs.len();
        let before = self.queued.fetch_add(count, Ordering::AcqRel);
        if before + count > self.max_queued {
            self.queued.fetch_sub(count, Ordering::AcqRel);
            let message = format!("the embedding queue is full ({before} inputs waiting); retry later");
            return Err(ApiError::overloaded(message));
        }
        let mut units: Vec<(usize, Vec<u32>)> = inputs.into_iter().enumerate().collect();
        units.sort_by_key(|(_, tokens)| tokens.len());
        let (reply, answer) = oneshot::channel();
        let job = Job { units, results: vec![Vec::new(); count], next: 0, enqueued: Instant::now(), reply };
        if self.tx.send(job).is_err() {
            self.queued.fetch_sub(count, Ordering::AcqRel);
            return Err(ApiError::unavailable("the embedding batcher has stopped"));
        }
        let vectors = answer.await.map_err(|_| ApiError::internal("the embedding batcher dropped the request"))?;
        vectors.map_err(|reason| ApiError::internal(format!("embedding failed: {reason}")))
    }

    /// Inputs waiting or running now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

struct Worker {
    encoder: Encoder,
    limits: BatchLimits,
    metrics: Arc<EmbeddingMetrics>,
    model: String,
    queued: Arc<AtomicUsize>,
}

impl Worker {
    fn run(self, rx: Receiver<Job>) {
        let mut jobs = VecDeque::new();
        loop {
            if jobs.is_empty() {
                match rx.recv() {
                    Ok(job) => jobs.push_back(job),
                    Err(_) => return,
                }
            }
            jobs.extend(rx.try_iter());
            self.drop_abandoned(&mut jobs);
            if !jobs.is_empty() {
                self.run_batch(&mut jobs);
            }
        }
    }

    /// Forgets requests whose caller went away, with their waiting inputs.
    fn drop_abandoned(&self, jobs: &mut VecDeque<Job>) {
        jobs.retain(|job| {
            let keep = !job.reply.is_closed();
            if !keep {
                self.queued.fetch_sub(job.units.len() - job.next, Ordering::AcqRel);
            }
            keep
        });
    }

    /// Takes the next batch (front requests first), runs it and answers the finished ones.
    fn run_batch(&self, jobs: &mut VecDeque<Job>) {
        let (places, inputs) = self.take_batch(jobs);
        self.metrics.observe_batch(&self.model, inputs.len());
        match self.encoder.embed(&inputs) {
            Ok(vectors) => {
                for ((job, index), vector) in places.into_iter().zip(vectors) {
                    jobs[job].results[index] = vector;
                }
                while jobs.front().is_some_and(Job::taken) {
                    if let Some(job) = jobs.pop_front() {
                        let _ = job.reply.send(Ok(job.results));
                    }
                }
            }
            Err(err) => {
                let touched = places.last().map_or(0, |(job, _)| job + 1);
                for job in jobs.drain(..touched) {
                    self.queued.fetch_sub(job.units.len() - job.next, Ordering::AcqRel);
                    let _ = job.reply.send(Err(err.to_string()));
                }
            }
        }
    }

    /// Inputs from the front requests while `count × longest` stays within the budget.
    fn take_batch(&self, jobs: &mut VecDeque<Job>) -> (Vec<(usize, usize)>, Vec<Vec<u32>>) {
        let (mut places, mut inputs, mut longest) = (Vec::new(), Vec::new(), 0);
        'jobs: for (position, job) in jobs.iter_mut().enumerate() {
            while !job.taken() {
                let len = job.units[job.next].1.len();
                let cost = longest.max(len) * (inputs.len() + 1);
                let full = inputs.len() >= self.limits.max_batch_inputs || cost > self.limits.max_batch_tokens;
                if !inputs.is_empty() && full {
                    break 'jobs;
                }
                if job.next == 0 {
                    self.metrics.observe_queue_time(&self.model, job.enqueued.elapsed().as_secs_f64());
                }
                let (index, tokens) = &mut job.units[job.next];
                places.push((position, *index));
                inputs.push(std::mem::take(tokens));
                longest = longest.max(len);
                job.next += 1;
            }
        }
        self.queued.fetch_sub(inputs.len(), Ordering::AcqRel);
        (places, inputs)
    }
}
