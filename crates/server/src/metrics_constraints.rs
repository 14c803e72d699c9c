//! Constrained decoding's timings in the Prometheus text format: mask time per sequence and
//! per step, grammar compiles, cache hits, and steps where the masks outlasted the forward pass.

use std::fmt::Write;

use sconce_engine::constrain::{HistogramSnapshot, BUCKETS_US};
use sconce_engine::MaskStatsSnapshot;

/// The series, appended after the registry's (`sconce:` names, with `model_name`).
pub fn render(stats: &MaskStatsSnapshot, model: &str) -> String {
    let mut out = String::new();
    let label = format!("model_name=\"{}\"", model.replace('\\', "\\\\").replace('"', "\\\""));
    histogram(
        &mut out,
        &label,
        "constraint_mask_seconds",
        "Time to compute one constrained sequence's token mask.",
        &stats.per_token,
    );
    histogram(
        &mut out,
        &label,
        "constraint_step_mask_seconds",
        "Wall time of one step's masks (computed beside the forward pass).",
        &stats.per_step,
    );
    histogram(
        &mut out,
        &label,
        "constraint_compile_seconds",
        "Time to compile a new constraint (cache misses).",
        &stats.compile,
    );
    counter(
        &mut out,
        &label,
        "constraint_cache_hits_total",
        "Constraints served from the grammar cache.",
        stats.cache_hits,
    );
    counter(
        &mut out,
        &label,
        "constraint_exposed_steps_total",
        "Steps whose masks took longer than the forward pass.",
        stats.exposed_steps,
    );
    out
}

fn histogram(out: &mut String, label: &str, name: &str, help: &str, snapshot: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP sconce:{name} {help}\n# TYPE sconce:{name} histogram");
    let mut cumulative = 0;
    for (bound, count) in BUCKETS_US.iter().zip(&snapshot.counts) {
        cumulative += count;
        let _ = writeln!(out, "sconce:{name}_bucket{{{label},le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
    }
    let total = snapshot.total();
    let _ = writeln!(out, "sconce:{name}_bucket{{{label},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "sconce:{name}_sum{{{label}}} {}", snapshot.sum_us as f64 / 1e6);
    let _ = writeln!(out, "sconce:{name}_count{{{label}}} {total}");
}

fn counter(out: &mut String, label: &str, name: &str, help: &str, value: u64) {
    let _ =
        writeln!(out, "# HELP sconce:{name} {help}\n# TYPE sconce:{name} counter\nsconce:{name}{{{label}}} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let mut stats = MaskStatsSnapshot::default();
        stats.per_token.counts = vec![0; BUCKETS_US.len() + 1];
        stats.per_token.counts[0] = 2;
        stats.per_token.counts[3] = 1;
        stats.per_token.counts[BUCKETS_US.len()] = 1;
        stats.per_token.sum_us = 300_000;
        let text = render(&stats, "m");
        assert!(text.contains("sconce:constraint_mask_seconds_bucket{model_name=\"m\",le=\"0.00001\"} 2"), "{text}");
        assert!(text.contains("sconce:constraint_mask_seconds_bucket{model_name=\"m\",le=\"0.0001\"} 3"), "{text}");
        assert!(text.contains("sconce:constraint_mask_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 4"));
        assert!(text.contains("sconce:constraint_mask_seconds_count{model_name=\"m\"} 4"));
    }
}
