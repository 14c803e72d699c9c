//! A compiled policy: which checks run on input and output, and their detectors.

use regex::Regex;

use super::config::{Action, PolicyConfig};
use super::lexicon::{self, Lexicon};
use super::{check_names, mask, shared_injection, shared_pii, Finding};
use super::{BLOCKED_KEYWORD, BLOCKED_PATTERN, LENGTH, LOW_CONFIDENCE, PROMPT_INJECTION, TOXICITY};

/// What the checks on one text decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Checks with action `block` that fired.
    pub blocked: Vec<&'static str>,
    /// Every check that fired, with its action.
    pub triggered: Vec<(&'static str, Action)>,
    /// The text with masked findings replaced, when any `mask` check fired.
    pub masked: Option<String>,
}

impl Verdict {
    pub fn is_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    fn fire(&mut self, check: &'static str, action: Action) {
        if !self.triggered.contains(&(check, action)) {
            self.triggered.push((check, action));
            if action == Action::Block {
                self.blocked.push(check);
            }
        }
    }
}

pub struct Policy {
    config: PolicyConfig,
    input: Vec<(&'static str, Action)>,
    output: Vec<(&'static str, Action)>,
    patterns: Vec<Regex>,
    keywords: Lexicon,
    toxicity: Lexicon,
}

fn compile_checks(
    map: &std::collections::BTreeMap<String, Action>,
) -> Result<Vec<(&'static str, Action)>, crate::GatewayError> {
    let mut checks = Vec::new();
    for (name, action) in map {
        for check in check_names(name)? {
            checks.retain(|(c, _)| *c != check);
            checks.push((check, *action));
        }
    }
    Ok(checks)
}

fn toxicity_lexicon(config: &PolicyConfig) -> Lexicon {
    let mut terms: std::collections::BTreeMap<String, f32> =
        lexicon::TOXICITY.iter().map(|(t, w)| ((*t).to_string(), *w)).collect();
    terms.extend(config.toxicity_lexicon.iter().map(|(t, w)| (t.to_ascii_lowercase(), *w)));
    Lexicon::new(terms)
}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Result<Self, crate::GatewayError> {
        let patterns = config
            .blocked_patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| crate::GatewayError::config(format!("blocked pattern `{p}`: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            input: compile_checks(&config.input)?,
            output: compile_checks(&config.output)?,
            patterns,
            keywords: Lexicon::keywords(&config.blocked_keywords),
            toxicity: toxicity_lexicon(config),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn is_default(&self) -> bool {
        self.config.name == "default" || (self.config.keys.is_empty() && self.config.teams.is_empty())
    }

    pub fn input_checks(&self) -> &[(&'static str, Action)] {
        &self.input
    }

    pub fn output_checks(&self) -> &[(&'static str, Action)] {
        &self.output
    }

    /// Runs every input check on a prompt text.
    pub fn check_input(&self, text: &str) -> Verdict {
        self.run(&self.input, text)
    }

    /// Runs every output check on a whole generated text (non-streamed responses).
    pub fn check_output(&self, text: &str) -> Verdict {
        self.run(&self.output, text)
    }

    fn run(&self, checks: &[(&'static str, Action)], text: &str) -> Verdict {
        let mut verdict = Verdict::default();
        let mut to_mask = Vec::new();
        let mut found = Vec::new();
        for &(check, action) in checks {
            found.clear();
            if !self.find(check, text, &mut found) {
                continue;
            }
            verdict.fire(check, action);
            if action == Action::Mask {
                to_mask.extend_from_slice(&found);
            }
        }
        if !to_mask.is_empty() {
            verdict.masked = Some(mask(text, &mut to_mask));
        }
        verdict
    }

    /// Appends `check`'s findings in `text`; true when it fired.
    pub(crate) fn find(&self, check: &'static str, text: &str, out: &mut Vec<Finding>) -> bool {
        let before = out.len();
        match check {
            BLOCKED_PATTERN => self.find_patterns(text, out),
            BLOCKED_KEYWORD => self.keywords.find(check, text, out),
            TOXICITY => return self.find_scored(&self.toxicity, self.config.toxicity_threshold, check, text, out),
            PROMPT_INJECTION => {
                return self.find_scored(shared_injection(), self.config.injection_threshold, check, text, out)
            }
            LENGTH => return self.find_length(text, out),
            LOW_CONFIDENCE => return false,
            entity => shared_pii().detect(entity, text, out),
        }
        out.len() > before
    }

    fn find_patterns(&self, text: &str, out: &mut Vec<Finding>) {
        for re in &self.patterns {
            out.extend(re.find_iter(text).map(|m| Finding { check: BLOCKED_PATTERN, start: m.start(), end: m.end() }));
        }
    }

    fn find_scored(
        &self,
        lex: &Lexicon,
        threshold: f32,
        check: &'static str,
        text: &str,
        out: &mut Vec<Finding>,
    ) -> bool {
        if lex.score(text) < threshold {
            return false;
        }
        lex.find(check, text, out);
        true
    }

    fn find_length(&self, text: &str, out: &mut Vec<Finding>) -> bool {
        let limit = self.config.max_input_chars;
        if limit == 0 {
            return false;
        }
        match text.char_indices().nth(limit) {
            Some((cut, _)) => {
                out.push(Finding { check: LENGTH, start: cut, end: text.len() });
                true
            }
            None => false,
        }
    }

    /// The toxicity lexicon's keep-probability for `text` (for streams).
    pub(crate) fn toxicity_keep(&self, text: &str) -> f32 {
        1.0 - self.toxicity.score(text)
    }

    /// Every toxicity lexicon term in `text`, whatever the score (for streams).
    pub(crate) fn toxic_terms(&self, text: &str, out: &mut Vec<Finding>) {
        self.toxicity.find(TOXICITY, text, out);
    }
}
