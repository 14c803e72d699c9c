//! `model: "auto"`: pick a tier (fast, balanced, quality) from the prompt's size, the
//! requested `max_tokens`, reasoning markers and `x-sconce-tier`, then the tier's model.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::guard::Lexicon;

/// One rule; the first that matches names the tier. Unset bounds match anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierRule {
    pub tier: String,
    pub min_prompt_tokens: Option<usize>,
    pub max_prompt_tokens: Option<usize>,
    pub min_max_tokens: Option<usize>,
    pub max_max_tokens: Option<usize>,
    /// Matches only requests that do (true) or do not (false) look like they need reasoning.
    pub reasoning: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoConfig {
    /// Tier name to model (or alias or group).
    pub tiers: BTreeMap<String, String>,
    pub rules: Vec<TierRule>,
    /// The tier when no rule matches.
    pub default_tier: String,
}

impl Default for AutoConfig {
    fn default() -> Self {
        let rule = |tier: &str| TierRule { tier: tier.into(), ..TierRule::default() };
        Self {
            tiers: BTreeMap::new(),
            rules: vec![
                TierRule { reasoning: Some(true), ..rule("quality") },
                TierRule { min_prompt_tokens: Some(2000), ..rule("quality") },
                TierRule { max_prompt_tokens: Some(300), max_max_tokens: Some(256), ..rule("fast") },
            ],
            default_tier: "balanced".into(),
        }
    }
}

/// The request facts the rules look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoFacts {
    pub prompt_tokens: usize,
    pub max_tokens: Option<usize>,
    pub reasoning: bool,
}

impl AutoFacts {
    /// Estimates tokens as bytes / 4 and looks for reasoning markers.
    pub fn from_text(prompt: &str, max_tokens: Option<usize>) -> Self {
        Self { prompt_tokens: prompt.len().div_ceil(4), max_tokens, reasoning: needs_reasoning(prompt) }
    }
}

const REASONING_MARKERS: &[&str] = &[
    "step by step",
    "think carefully",
    "reason about",
    "explain why",
    "prove that",
    "derive",
    "analyze",
    "analyse",
    "chain of thought",
    "trade-offs",
    "compare and contrast",
];

/// Whether the prompt asks for reasoning.
pub fn needs_reasoning(prompt: &str) -> bool {
    static MARKERS: OnceLock<Lexicon> = OnceLock::new();
    let lexicon = MARKERS.get_or_init(|| Lexicon::keywords(REASONING_MARKERS));
    lexicon.score(prompt) > 0.0
}

impl TierRule {
    fn matches(&self, facts: &AutoFacts) -> bool {
        let max_tokens = facts.max_tokens.unwrap_or(0);
        self.min_prompt_tokens.is_none_or(|min| facts.prompt_tokens >= min)
            && self.max_prompt_tokens.is_none_or(|max| facts.prompt_tokens <= max)
            && self.min_max_tokens.is_none_or(|min| max_tokens >= min)
            && self.max_max_tokens.is_none_or(|max| max_tokens <= max)
            && self.reasoning.is_none_or(|want| facts.reasoning == want)
    }
}

impl AutoConfig {
    /// The tier for a request: a known `x-sconce-tier` wins, then the first matching rule.
    pub fn tier<'a>(&'a self, facts: &AutoFacts, header: Option<&'a str>) -> &'a str {
        if let Some(tier) = header.filter(|t| self.tiers.contains_key(*t)) {
            return tier;
        }
        self.rules.iter().find(|r| r.matches(facts)).map_or(self.default_tier.as_str(), |r| r.tier.as_str())
    }

    /// The model the tier maps to; falls back to the default tier's, then any.
    pub fn model(&self, facts: &AutoFacts, header: Option<&str>) -> Option<&str> {
        let tier = self.tier(facts, header);
        self.tiers
            .get(tier)
            .or_else(|| self.tiers.get(&self.default_tier))
            .or_else(|| self.tiers.values().next())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AutoConfig {
        let mut config = AutoConfig::default();
        for (tier, model) in [("fast", "tiny"), ("balanced", "mid"), ("quality", "big")] {
            config.tiers.insert(tier.into(), model.into());
        }
        config
    }

    #[test]
    fn short_long_and_reasoning_prompts_get_different_tiers() {
        let config = config();
        let short = AutoFacts::from_text("What is 2+2?", Some(16));
        assert_eq!(config.model(&short, None), Some("tiny"));
        let long = AutoFacts::from_text(&"lorem ipsum ".repeat(1000), None);
        assert_eq!(config.model(&long, None), Some("big"));
        let reasoning = AutoFacts::from_text("Explain why the sky is blue, step by step.", Some(16));
        assert_eq!(config.model(&reasoning, None), Some("big"));
        let medium = AutoFacts::from_text("Write a poem", Some(1000));
        assert_eq!(config.model(&medium, None), Some("mid"));
    }

    #[test]
    fn the_tier_header_wins_when_known() {
        let config = config();
        let short = AutoFacts::from_text("hi", Some(8));
        assert_eq!(config.model(&short, Some("quality")), Some("big"));
        assert_eq!(config.model(&short, Some("nope")), Some("tiny"));
    }
}
