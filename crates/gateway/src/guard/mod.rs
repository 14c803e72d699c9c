//! Guardrails: PII and secret detectors, blocked patterns and keywords, toxicity,
//! prompt-injection heuristics, a length limit and low-confidence signals, applied to
//! prompts and (as they stream) to generated text.

mod config;
mod layer;
mod lexicon;
pub mod metrics;
pub mod pii;
mod policy;
mod stream;

use std::sync::{Arc, OnceLock};

pub use config::{Action, GuardrailsConfig, PolicyConfig};
pub use layer::{policy_violation, GuardStage, Guarded, GUARDRAILS_HEADER};
pub use lexicon::Lexicon;
pub use policy::{Policy, Verdict};
pub use stream::{OutputGuard, StreamStep};

pub const BLOCKED_PATTERN: &str = "BLOCKED_PATTERN";
pub const BLOCKED_KEYWORD: &str = "BLOCKED_KEYWORD";
pub const TOXICITY: &str = "TOXICITY";
pub const PROMPT_INJECTION: &str = "PROMPT_INJECTION";
pub const LENGTH: &str = "LENGTH";
pub const LOW_CONFIDENCE: &str = "LOW_CONFIDENCE";

/// A check's match in a text, as a byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub start: usize,
    pub end: usize,
}

/// Maps a configured name to its static check name; `PII` expands to every entity.
pub fn check_names(name: &str) -> Result<Vec<&'static str>, crate::GatewayError> {
    let upper = name.to_ascii_uppercase();
    if upper == "PII" {
        return Ok(pii::ALL.to_vec());
    }
    let known = [BLOCKED_PATTERN, BLOCKED_KEYWORD, TOXICITY, PROMPT_INJECTION, LENGTH, LOW_CONFIDENCE];
    pii::ALL
        .iter()
        .chain(known.iter())
        .find(|check| **check == upper)
        .map(|check| vec![*check])
        .ok_or_else(|| crate::GatewayError::config(format!("unknown guardrail check `{name}`")))
}

pub(crate) fn shared_pii() -> &'static pii::PiiDetectors {
    static PII: OnceLock<pii::PiiDetectors> = OnceLock::new();
    PII.get_or_init(pii::PiiDetectors::default)
}

pub(crate) fn shared_injection() -> &'static Lexicon {
    static INJECTION: OnceLock<Lexicon> = OnceLock::new();
    INJECTION.get_or_init(|| Lexicon::new(lexicon::INJECTION.iter().copied()))
}

/// Every configured policy, compiled; picks the one for a key or team.
#[derive(Default)]
pub struct Guardrails {
    policies: Vec<Arc<Policy>>,
}

impl Guardrails {
    pub fn new(config: &GuardrailsConfig) -> Result<Self, crate::GatewayError> {
        let policies = config.policies.iter().map(|p| Policy::new(p).map(Arc::new)).collect::<Result<_, _>>()?;
        Ok(Self { policies })
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policy listing `key`, else one listing `team`, else the default one.
    pub fn policy_for(&self, key: Option<&str>, team: Option<&str>) -> Option<Arc<Policy>> {
        let listed = |list: &[String], wanted: Option<&str>| wanted.is_some_and(|w| list.iter().any(|x| x == w));
        let by_key = self.policies.iter().find(|p| listed(&p.config().keys, key));
        let by_team = || self.policies.iter().find(|p| listed(&p.config().teams, team));
        let default = || self.policies.iter().find(|p| p.is_default());
        by_key.or_else(by_team).or_else(default).cloned()
    }
}

/// Replaces each finding's range with `<CHECK>`; overlapping findings keep the first.
pub fn mask(text: &str, findings: &mut [Finding]) -> String {
    findings.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings.iter() {
        if f.start < at {
            at = at.max(f.end);
            continue;
        }
        out.push_str(&text[at..f.start]);
        out.push('<');
        out.push_str(f.check);
        out.push('>');
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests;
