//! Test-only fault injection, from `EngineConfig::fault_inject` (tests in process) or the
//! `SCONCE_FAULT_INJECT` variable, which only debug builds read (release builds ignore it).
//! A comma-separated list of `panic_at_step:N` (the engine thread panics in step N),
//! `fail_at_step:N` (step N fails as a runner error would; may repeat) and `step_delay_ms:N`
//! (every step sleeps first, to simulate a slow model).

use std::time::Duration;

use crate::api::EngineError;

/// The variable the faults are read from.
pub const FAULT_INJECT_VAR: &str = "SCONCE_FAULT_INJECT";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub panic_at_step: Option<u64>,
    pub fail_at_steps: Vec<u64>,
    pub step_delay: Duration,
}

impl FaultPlan {
    /// The plan `spec` gives, else the one in `SCONCE_FAULT_INJECT` (debug builds), else none.
    pub fn from_config_or_env(spec: Option<&str>) -> Self {
        #[cfg(debug_assertions)]
        let from_env = std::env::var(FAULT_INJECT_VAR).ok();
        #[cfg(not(debug_assertions))]
        let from_env: Option<String> = None;
        match spec.map(str::to_string).or(from_env) {
            Some(spec) => {
                tracing::warn!(%spec, "test-only fault injection is on");
                Self::parse(&spec)
            }
            None => Self::default(),
        }
    }

    /// Parses `key:value` pairs; unknown or malformed ones are ignored.
    pub fn parse(spec: &str) -> Self {
        let mut plan = Self::default();
        for (key, value) in spec.split(',').filter_map(|pair| pair.trim().split_once(':')) {
            let Ok(value) = value.trim().parse::<u64>() else { continue };
            match key.trim() {
                "panic_at_step" => plan.panic_at_step = Some(value),
                "fail_at_step" => plan.fail_at_steps.push(value),
                "step_delay_ms" => plan.step_delay = Duration::from_millis(value),
                _ => {}
            }
        }
        plan
    }

    /// Runs at the start of step `step` (1-based).
    pub fn before_step(&self, step: u64) -> Result<(), EngineError> {
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        if self.panic_at_step == Some(step) {
            panic!("injected engine panic at step {step}");
        }
        if self.fail_at_steps.contains(&step) {
            return Err(EngineError::Internal(format!("injected step failure at step {step}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_fire_once() {
        let plan = FaultPlan::parse("fail_at_step:3, step_delay_ms:1,bogus:x,panic_at_step:9,fail_at_step:5");
        assert_eq!(plan.fail_at_steps, vec![3, 5]);
        assert_eq!(plan.panic_at_step, Some(9));
        assert_eq!(plan.step_delay, Duration::from_millis(1));
        assert!(plan.before_step(2).is_ok());
        assert!(matches!(plan.before_step(3), Err(EngineError::Internal(_))));
        assert!(std::panic::catch_unwind(|| plan.before_step(9)).is_err());
        assert_eq!(FaultPlan::parse(""), FaultPlan::default());
    }
}
