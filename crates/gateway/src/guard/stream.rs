//! Output checks on a stream: text is held back a little, checked with its right-hand
//! context, masked, and only then released, so a split entity never leaves unmasked.

use std::sync::Arc;

use super::config::Action;
use super::policy::Policy;
use super::{mask, Finding, LOW_CONFIDENCE, TOXICITY};

/// Longest run without whitespace held back whole before it is checked and released anyway.
const MAX_WORD_HOLD: usize = 1024;

/// What to send after a delta.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamStep {
    /// Text that is safe to send now (may be empty).
    Emit(String),
    /// A `block` check fired: end the stream with `content_filter`.
    Blocked(Vec<&'static str>),
}

/// The output side of a policy, for one stream.
pub struct OutputGuard {
    policy: Arc<Policy>,
    pending: String,
    tox_keep: f32,
    logprob_sum: f64,
    logprob_count: usize,
    blocked: bool,
    triggered: Vec<(&'static str, Action)>,
}

impl OutputGuard {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            pending: String::new(),
            tox_keep: 1.0,
            logprob_sum: 0.0,
            logprob_count: 0,
            blocked: false,
            triggered: Vec::new(),
        }
    }

    /// Every check that fired so far, with its action.
    pub fn triggered(&self) -> &[(&'static str, Action)] {
        &self.triggered
    }

    /// Adds generated text; returns what may be sent.
    pub fn push(&mut self, delta: &str) -> StreamStep {
        if self.blocked {
            return StreamStep::Blocked(Vec::new());
        }
        self.pending.push_str(delta);
        self.evaluate(false)
    }

    /// The stream ended: checks and releases everything held.
    pub fn finish(&mut self) -> StreamStep {
        if self.blocked {
            return StreamStep::Blocked(Vec::new());
        }
        if let Some(step) = self.check_mean_logprob() {
            return step;
        }
        self.evaluate(true)
    }

    /// Feeds one sampled token's logprob to `LOW_CONFIDENCE`.
    pub fn push_logprob(&mut self, logprob: f32) -> Option<StreamStep> {
        self.logprob_sum += f64::from(logprob);
        self.logprob_count += 1;
        let floor = self.policy.config().min_token_logprob?;
        (logprob < floor).then(|| self.low_confidence()).flatten()
    }

    fn check_mean_logprob(&mut self) -> Option<StreamStep> {
        let floor = self.policy.config().min_mean_logprob?;
        if self.logprob_count == 0 {
            return None;
        }
        let mean = self.logprob_sum / self.logprob_count as f64;
        (mean < f64::from(floor)).then(|| self.low_confidence()).flatten()
    }

    fn low_confidence(&mut self) -> Option<StreamStep> {
        let action = self.policy.output_checks().iter().find(|(c, _)| *c == LOW_CONFIDENCE)?.1;
        self.record(LOW_CONFIDENCE, action);
        (action == Action::Block).then(|| self.block(vec![LOW_CONFIDENCE]))
    }

    fn record(&mut self, check: &'static str, action: Action) {
        if !self.triggered.contains(&(check, action)) {
            self.triggered.push((check, action));
        }
    }

    fn block(&mut self, checks: Vec<&'static str>) -> StreamStep {
        self.blocked = true;
        self.pending.clear();
        StreamStep::Blocked(checks)
    }

    fn evaluate(&mut self, last: bool) -> StreamStep {
        let mut masks = Vec::new();
        let mut blocks = Vec::new();
        let policy = self.policy.clone();
        for &(check, action) in policy.output_checks() {
            if self.fires(check, &mut masks, action) {
                self.record(check, action);
                if action == Action::Block {
                    blocks.push(check);
                }
            }
        }
        if !blocks.is_empty() {
            return self.block(blocks);
        }
        let cut = if last { self.pending.len() } else { self.safe_cut(&masks) };
        self.release(cut, masks)
    }

    fn fires(&self, check: &'static str, masks: &mut Vec<Finding>, action: Action) -> bool {
        match check {
            LOW_CONFIDENCE => false,
            TOXICITY => {
                let score = 1.0 - self.tox_keep * self.policy.toxicity_keep(&self.pending);
                let fired = score >= self.policy.config().toxicity_threshold;
                if fired && action == Action::Mask {
                    self.policy.toxic_terms(&self.pending, masks);
                }
                fired
            }
            _ => {
                let before = masks.len();
                let fired = self.policy.find(check, &self.pending, masks);
                if action != Action::Mask {
                    masks.truncate(before);
                }
                fired
            }
        }
    }

    /// Where held text may be released: the holdback window, back to a word start, and
    /// never inside a finding or a toxicity term (a phrase must be scored whole).
    fn safe_cut(&self, findings: &[Finding]) -> usize {
        let text = &self.pending;
        let mut holds = findings.to_vec();
        if self.policy.output_checks().iter().any(|(check, _)| *check == TOXICITY) {
            self.policy.toxic_terms(text, &mut holds);
        }
        let mut cut = text.len().saturating_sub(self.policy.config().holdback_bytes);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if text.len() - cut < MAX_WORD_HOLD {
            cut = text[..cut].rfind(char::is_whitespace).unwrap_or(0);
        }
        loop {
            let inside = holds.iter().filter(|f| f.start < cut && f.end > cut).map(|f| f.start).min();
            match inside {
                Some(start) => cut = start,
                None => return cut,
            }
        }
    }

    fn release(&mut self, cut: usize, masks: Vec<Finding>) -> StreamStep {
        if cut == 0 {
            return StreamStep::Emit(String::new());
        }
        let mut inside: Vec<Finding> = masks.into_iter().filter(|f| f.end <= cut).collect();
        let out = mask(&self.pending[..cut], &mut inside);
        self.tox_keep *= self.policy.toxicity_keep(&self.pending[..cut]);
        self.pending.drain(..cut);
        StreamStep::Emit(out)
    }
}
