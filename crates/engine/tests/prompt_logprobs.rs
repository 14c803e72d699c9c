//! Prompt logprobs survive a preemption that restarts the prefill.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sconce_engine::{Engine, GenerateRequest, SamplingParams, TokenLogprob};

fn with_prompt_logprobs(id: &str, prompt: Vec<u32>, priority: i32) -> GenerateRequest {
    let params = SamplingParams { prompt_logprobs: Some(1), ignore_eos: true, ..SamplingParams::greedy(2) };
    GenerateRequest { id: id.into(), prompt, params, priority }
}

/// Runs the engine until idle; returns the prompt logprobs delivered and the preemptions seen.
fn prompt_logprobs_of(
    engine: &mut Engine,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<sconce_engine::Delta>,
) -> Vec<Option<TokenLogprob>> {
    run_to_completion(engine);
    let deltas = drain(rx);
    let mut found: Vec<_> = deltas.into_iter().filter_map(|d| d.prompt_logprobs).collect();
    assert_eq!(found.len(), 1, "prompt logprobs come once");
    found.remove(0)
}

#[test]
fn a_restarted_prefill_does_not_append_prompt_logprobs_again() {
    let prompt: Vec<u32> = (3..27).collect();
    // Alone, with room to spare: the reference.
    let mut roomy = Engine::new(tiny_model(), &config(kv_bytes(&tiny_model(), 64, 4), 4, 8)).unwrap();
    let mut rx = add(&mut roomy, with_prompt_logprobs("alone", prompt.clone(), 0));
    let expected = prompt_logprobs_of(&mut roomy, &mut rx);
    assert_eq!(expected.len(), prompt.len());
    // 8 blocks of 4 and an 8-token budget: the long-running, more important request grows
    // while the other is still in chunked prefill, which is preempted and starts over.
    let mut tight = Engine::new(tiny_model(), &config(kv_bytes(&tiny_model(), 8, 4), 4, 8)).unwrap();
    let mut first = add(&mut tight, greedy("first", (100..108).collect(), 20));
    let mut rx = add(&mut tight, with_prompt_logprobs("second", prompt.clone(), 1));
    let got = prompt_logprobs_of(&mut tight, &mut rx);
    assert!(tight.stats().preemptions > 0, "the workload must preempt");
    assert!(drain(&mut first).iter().any(|d| d.finish_reason.is_some()));
    assert_eq!(got.len(), prompt.len(), "one entry per prompt token");
    for (pos, (a, b)) in got.iter().zip(&expected).enumerate().skip(1) {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(a.token_id, b.token_id, "position {pos}");
        assert!((a.logprob - b.logprob).abs() < 1e-4, "position {pos}: {} vs {}", a.logprob, b.logprob);
    }
}
