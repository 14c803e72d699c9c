//! Constrained decoding with llguidance: a grammar (JSON schema, regex, choice or Lark) is
//! compiled once per distinct constraint and cached; each constrained sequence gets its own
//! matcher, whose token mask is applied to the logits before sampling and which advances on
//! the sampled token. Masks for a step are computed in parallel, while the forward pass runs.

mod cache;
mod masks;
mod spec;
pub mod stats;
mod tok_env;

use std::sync::Arc;

use llguidance::{api::TopLevelGrammar, Matcher, ParserFactory};
use sconce_text::Tokenizer;

pub use masks::{apply_mask, compute_masks, Advance, MaskJob, SequenceConstraint};
pub use spec::GrammarSpec;
pub use stats::{HistogramSnapshot, MaskStats, MaskStatsSnapshot, BUCKETS_US};

use crate::api::EngineError;
use cache::GrammarCache;

/// Compiled grammars kept for reuse.
const CACHED_GRAMMARS: usize = 512;

/// One request's compiled constraint: a matcher at the start of the grammar. Each choice
/// takes its own copy of it.
pub struct Constraint {
    /// Hash of the constraint (what the grammar cache is keyed by).
    pub key: u64,
    matcher: Matcher,
}

impl Constraint {
    /// A fresh, independent matcher for one sequence.
    pub fn matcher(&self) -> Matcher {
        self.matcher.deep_clone()
    }

    /// The matcher itself (for the last sequence that needs one).
    pub fn into_matcher(self) -> Matcher {
        self.matcher
    }
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Self { key: self.key, matcher: self.matcher.deep_clone() }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Constraint({:016x})", self.key)
    }
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

/// Compiles constraints for one model's tokenizer, with a cache of compiled grammars.
pub struct Grammars {
    factory: Result<ParserFactory, String>,
    cache: GrammarCache,
    stats: Arc<MaskStats>,
    max_grammar_bytes: usize,
}

impl Grammars {
    /// `vocab_size` is the model's logits width (it may exceed the tokenizer's vocabulary).
    pub fn new(tokenizer: &Tokenizer, eos_ids: &[u32], vocab_size: usize, max_grammar_bytes: usize) -> Self {
        let factory = tok_env::tok_env(tokenizer, eos_ids, vocab_size).and_then(|env| {
            let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
            factory.quiet();
            Ok(factory)
        });
        if let Err(reason) = &factory {
            tracing::warn!(%reason, "constrained decoding is unavailable for this tokenizer");
        }
        Self { factory, cache: GrammarCache::new(CACHED_GRAMMARS), stats: Arc::default(), max_grammar_bytes }
    }

    pub fn stats(&self) -> Arc<MaskStats> {
        self.stats.clone()
    }

    /// Compiles `spec` (or takes it from the cache). Errors name the problem and are the
    /// caller's fault (400), except an unusable tokenizer.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, EngineError> {
        let factory = self.factory.as_ref().map_err(|reason| EngineError::InvalidParam {
            param: spec.param(),
            message: format!("constrained decoding is unavailable for this model's tokenizer: {reason}"),
        })?;
        let source_bytes = spec.source_bytes();
        if source_bytes > self.max_grammar_bytes {
            let message = format!(
                "the constraint is {source_bytes} bytes; this server accepts at most {}",
                self.max_grammar_bytes
            );
            return Err(EngineError::InvalidParam { param: spec.param(), message });
        }
        let key = spec.cache_key();
        if let Some(matcher) = self.cache.get(key) {
            self.stats.note_compile(None);
            return Ok(Constraint { key, matcher });
        }
        let started = std::time::Instant::now();
        let matcher = compile_fresh(factory, spec.to_grammar()?, spec.param())?;
        self.stats.note_compile(Some(started.elapsed()));
        let copy = matcher.deep_clone();
        self.cache.insert(key, matcher);
        Ok(Constraint { key, matcher: copy })
    }
}

/// Builds the parser and computes its first mask, so compile errors (and lexer blow-ups)
/// surface now, and the cached copy starts warm.
fn compile_fresh(
    factory: &ParserFactory,
    grammar: TopLevelGrammar,
    param: &'static str,
) -> Result<Matcher, EngineError> {
    let invalid = |message: String| EngineError::InvalidParam { param, message };
    let parser = factory.create_parser(grammar).map_err(|e| invalid(clean_error(&e.to_string())))?;
    let mut matcher = Matcher::new(Ok(parser));
    matcher.compute_mask().map_err(|e| invalid(clean_error(&e.to_string())))?;
    if let Some(error) = matcher.get_error() {
        return Err(invalid(clean_error(&error)));
    }
    Ok(matcher)
}

/// llguidance's messages, on one line.
fn clean_error(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
