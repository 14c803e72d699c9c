//! Prometheus series for routing: deployment state, requests, retries and fallbacks.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct RouteMetrics {
    state: IntGaugeVec,
    requests: IntCounterVec,
    retries: IntCounterVec,
    fallbacks: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl RouteMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(format!("sconce:{name}"), help);
        Ok(Self {
            state: register(
                registry,
                IntGaugeVec::new(
                    opts("deployment_state", "Circuit breaker: 0 closed, 1 open, 2 half-open."),
                    &["deployment"],
                )?,
            )?,
            requests: register(
                registry,
                IntCounterVec::new(
                    opts("deployment_requests_total", "Attempts per deployment by outcome."),
                    &["deployment", "outcome"],
                )?,
            )?,
            retries: register(
                registry,
                IntCounterVec::new(opts("deployment_retries_total", "Retries per deployment."), &["deployment"])?,
            )?,
            fallbacks: register(
                registry,
                IntCounterVec::new(opts("fallbacks_total", "Fallbacks between groups."), &["from", "to", "cause"])?,
            )?,
        })
    }

    pub fn state(&self, deployment: &str, code: i64) {
        self.state.with_label_values(&[deployment]).set(code);
    }

    pub fn attempt(&self, deployment: &str, outcome: &str) {
        self.requests.with_label_values(&[deployment, outcome]).inc();
    }

    pub fn retry(&self, deployment: &str) {
        self.retries.with_label_values(&[deployment]).inc();
    }

    pub fn fallback(&self, from: &str, to: &str, cause: &str) {
        self.fallbacks.with_label_values(&[from, to, cause]).inc();
    }
}
