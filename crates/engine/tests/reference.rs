//! The paged, batched, chunked, preempting engine against a plain full-recompute reference.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use sconce_engine::{Engine, EngineError, FinishReason, GenerateRequest, SamplingParams};

#[test]
fn batched_engine_matches_the_reference_forward_pass() {
    check_against_reference(tiny_model());
}

#[test]
fn batched_engine_matches_the_reference_with_q8_weights() {
    let mut model = tiny_model();
    model.decoder.quantize(sconce_modeling::Quantization::Q8_0).unwrap();
    check_against_reference(model);
}

fn check_against_reference(model: sconce_modeling::LoadedModel) {
    let reference = model.decoder.clone();
    let vocab = model.decoder.config().vocab_size as u32;
    // 24 blocks of 4 tokens and a 16-token budget: long prompts are chunked and sequences collide.
    let cfg = config(kv_bytes(&model, 24, 4), 4, 16);
    let mut engine = Engine::new(model, &cfg).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let shared: Vec<u32> = (0..12).map(|_| rng.random_range(3..vocab)).collect();
    let mut requests = Vec::new();
    for i in 0..10usize {
        let len = [3, 40, 9, 17, 30, 5, 23, 50, 12, 8][i];
        let mut prompt: Vec<u32> = (0..len).map(|_| rng.random_range(3..vocab)).collect();
        if i % 3 == 0 && len > 12 {
            prompt[..12].copy_from_slice(&shared);
        }
        requests.push(greedy(&format!("r{i}"), prompt, 6 + i % 5));
    }
    // Arrivals at different steps.
    let arrival_step = [0, 0, 0, 1, 2, 2, 4, 5, 7, 9];
    let mut receivers = HashMap::new();
    let mut sampled: HashMap<String, Vec<(u32, Vec<f32>)>> = HashMap::new();
    let (mut step, mut preempted, mut max_tokens_in_step) = (0, 0, 0);
    while step < 10 || engine.has_work() {
        for (i, req) in requests.iter().enumerate() {
            if arrival_step[i] == step {
                receivers.insert(req.id.clone(), add(&mut engine, req.clone()));
            }
        }
        let outcome = engine.step().unwrap();
        preempted += outcome.preempted;
        max_tokens_in_step = max_tokens_in_step.max(outcome.num_tokens);
        for s in outcome.sampled {
            sampled.entry(s.request_id).or_default().push((s.token, s.logits.unwrap()));
        }
        step += 1;
        assert!(step < 5000);
    }
    assert!(preempted > 0, "the workload must preempt");
    assert!(max_tokens_in_step <= 16);
    let stats = engine.stats();
    assert_eq!(stats.kv_blocks_free, stats.kv_blocks_total, "every block returns");
    for req in &requests {
        let got = &sampled[&req.id];
        assert_eq!(got.len(), req.params.max_tokens, "{}", req.id);
        let mut tokens = req.prompt.clone();
        for (i, (token, logits)) in got.iter().enumerate() {
            let expected = reference_logits(&reference, &tokens);
            let diff = expected.iter().zip(logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "{} token {i}: logits differ by {diff}", req.id);
            assert_eq!(*token, argmax(&expected), "{} token {i}", req.id);
            tokens.push(*token);
        }
        let deltas = drain(receivers.get_mut(&req.id).unwrap());
        let last = deltas.last().unwrap();
        assert_eq!(last.finish_reason, Some(FinishReason::Length));
        assert_eq!(last.usage.unwrap().completion_tokens, req.params.max_tokens);
    }
}

#[test]
fn shared_64_token_prefix_hits_the_cache_without_changing_output() {
    let model = tiny_model();
    let vocab = model.decoder.config().vocab_size as u32;
    let cfg = config(kv_bytes(&model, 64, 16), 16, 256);
    let mut engine = Engine::new(model, &cfg).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let prefix: Vec<u32> = (0..64).map(|_| rng.random_range(3..vocab)).collect();
    let first = [prefix.clone(), vec![10, 11, 12]].concat();
    let second = [prefix, vec![20, 21]].concat();
    // The second prompt alone, with a cold cache, is the expected output.
    let mut cold = Engine::new(tiny_model(), &cfg).unwrap();
    let mut rx = add(&mut cold, greedy("cold", second.clone(), 8));
    run_to_completion(&mut cold);
    let cold_tokens: Vec<u32> = drain(&mut rx).iter().flat_map(|d| d.token_ids.clone()).collect();

    let mut rx1 = add(&mut engine, greedy("a", first, 8));
    run_to_completion(&mut engine);
    drain(&mut rx1);
    let before = engine.stats();
    let mut rx2 = add(&mut engine, greedy("b", second, 8));
    run_to_completion(&mut engine);
    let deltas = drain(&mut rx2);
    let warm_tokens: Vec<u32> = deltas.iter().flat_map(|d| d.token_ids.clone()).collect();
    let after = engine.stats();
    assert_eq!(warm_tokens, cold_tokens);
    assert_eq!(after.prefix_cache_hits - before.prefix_cache_hits, 64);
    assert_eq!(deltas.last().unwrap().usage.unwrap().cached_tokens, 64);
}

#[test]
fn same_seed_same_tokens_alone_and_in_a_batch_of_8() {
    let cfg = config(kv_bytes(&tiny_model(), 128, 16), 16, 512);
    let sampled = |id: &str| GenerateRequest {
        id: id.into(),
        prompt: vec![5, 6, 7, 8, 9],
        params: SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            seed: Some(1234),
            max_tokens: 24,
            ignore_eos: true,
            ..SamplingParams::default()
        },
        priority: 0,
    };
    let mut alone = Engine::new(tiny_model(), &cfg).unwrap();
    let mut rx = add(&mut alone, sampled("alone"));
    run_to_completion(&mut alone);
    let alone_tokens: Vec<u32> = drain(&mut rx).iter().flat_map(|d| d.token_ids.clone()).collect();

    let mut batch = Engine::new(tiny_model(), &cfg).unwrap();
    let mut rxs = Vec::new();
    for i in 0..8 {
        let mut req = sampled(&format!("b{i}"));
        if i != 3 {
            req.params.seed = Some(i);
            req.prompt = vec![9, 8, 7, i as u32 + 3];
        }
        rxs.push(add(&mut batch, req));
    }
    run_to_completion(&mut batch);
    let batched: Vec<u32> = drain(&mut rxs[3]).iter().flat_map(|d| d.token_ids.clone()).collect();
    assert_eq!(batched, alone_tokens);
    let other: Vec<u32> = drain(&mut rxs[0]).iter().flat_map(|d| d.token_ids.clone()).collect();
    assert_ne!(other, alone_tokens, "a different seed and prompt should differ");
}

#[test]
fn n_choices_share_the_prompt_blocks() {
    let cfg = config(kv_bytes(&tiny_model(), 64, 4), 4, 256);
    let mut engine = Engine::new(tiny_model(), &cfg).unwrap();
    let params = SamplingParams {
        n: 3,
        temperature: 1.0,
        seed: Some(7),
        max_tokens: 5,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let prompt: Vec<u32> = (3..40).collect();
    let mut rx = add(&mut engine, GenerateRequest { id: "n".into(), prompt, params, priority: 0 });
    run_to_completion(&mut engine);
    let deltas = drain(&mut rx);
    let finished: Vec<_> = deltas.iter().filter(|d| d.finish_reason.is_some()).collect();
    assert_eq!(finished.len(), 3);
    // Choices 1 and 2 reuse the 9 full prompt blocks of choice 0 (36 tokens).
    let stats = engine.stats();
    assert_eq!(stats.prefix_cache_hits, 72);
    assert_eq!(stats.kv_blocks_free, stats.kv_blocks_total);
}

#[test]
fn bad_input_gets_typed_errors() {
    let model = tiny_model();
    let vocab = model.decoder.config().vocab_size as u32;
    let cfg = config(kv_bytes(&model, 64, 16), 16, 256);
    let mut engine = Engine::new(model, &cfg).unwrap();
    let max_len = engine.model_info().max_model_len;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut try_add = |req: GenerateRequest| engine.add_request(req, tx.clone(), std::time::Instant::now());
    assert_eq!(try_add(greedy("e", vec![], 4)), Err(EngineError::EmptyPrompt));
    assert!(matches!(try_add(greedy("z", vec![1], 0)), Err(EngineError::InvalidParam { param: "max_tokens", .. })));
    let mut n0 = greedy("n0", vec![1], 4);
    n0.params.n = 0;
    assert!(matches!(try_add(n0), Err(EngineError::InvalidParam { param: "n", .. })));
    assert_eq!(try_add(greedy("v", vec![vocab], 4)), Err(EngineError::InvalidToken(vocab)));
    let long = greedy("l", vec![1; max_len], 4);
    assert!(
        matches!(try_add(long), Err(EngineError::ContextLengthExceeded { requested, .. }) if requested == max_len + 4)
    );
    assert!(!engine.has_work());
}

#[test]
fn an_unknown_model_is_a_load_error_that_says_what_to_do() {
    let load = sconce_engine::LoadOptions {
        name: "no-such-model-anywhere".into(),
        allow_hub: false,
        ..sconce_engine::LoadOptions::default()
    };
    let err =
        sconce_engine::launch(&load, sconce_engine::EngineConfig::default()).err().expect("unknown model must fail");
    let EngineError::Load(message) = err else { panic!("expected a load error, got {err:?}") };
    assert!(message.contains("no-such-model-anywhere"), "{message}");
}
