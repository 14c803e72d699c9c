//! Prometheus series for guardrail triggers.

use prometheus::{IntCounterVec, Opts, Registry};

use super::Action;

/// `sconce:guardrail_triggers_total{check, action, stage}`.
#[derive(Clone)]
pub struct GuardMetrics {
    triggers: IntCounterVec,
}

impl GuardMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let opts = Opts::new("sconce:guardrail_triggers_total", "Guardrail checks that fired, by check and action.");
        let triggers = IntCounterVec::new(opts, &["check", "action", "stage"])?;
        registry.register(Box::new(triggers.clone()))?;
        Ok(Self { triggers })
    }

    pub fn record(&self, stage: &str, triggered: &[(&'static str, Action)]) {
        for (check, action) in triggered {
            self.triggers.with_label_values(&[check, action.as_str(), stage]).inc();
        }
    }
}
