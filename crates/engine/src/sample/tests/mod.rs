use std::time::Instant;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dist::draw;
use super::kernels::{exp_in_place, exp_neg};
use super::nucleus::{draw_in_place, top_p_candidates};
use super::topk::rank_cmp;
use super::*;

fn params(edit: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams::default();
    edit(&mut p);
    p
}

/// Roughly normal logits (sum of uniforms) with standard deviation `std`.
fn random_logits(vocab: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..vocab).map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * std * 1.732).collect()
}

fn naive_argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for i in 1..x.len() {
        if x[i] > x[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(x: &[f32], temperature: f32) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = x.iter().map(|&v| ((v as f64 - m) / temperature as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Draws `n` tokens (no `record`, so the distribution is stationary) and returns counts.
fn histogram(p: &SamplingParams, logits: &[f32], n: usize, seed: u64) -> Vec<usize> {
    let mut s = SequenceSampler::new(p, Some(seed), &[]);
    let mut counts = vec![0; logits.len()];
    let mut buf = logits.to_vec();
    for _ in 0..n {
        buf.copy_from_slice(logits);
        counts[s.sample(&mut buf, 0, &[]).token as usize] += 1;
    }
    counts
}

fn draw_seq(p: &SamplingParams, logits: &[f32], n: usize, seed: u64) -> Vec<u32> {
    let mut s = SequenceSampler::new(p, Some(seed), &[]);
    (0..n).map(|_| s.sample(&mut logits.to_vec(), 0, &[]).token).collect()
}

fn ln_probs(p: &[f32]) -> Vec<f32> {
    p.iter().map(|v| v.ln()).collect()
}

fn processed(s: &SequenceSampler, logits: &[f32], num_generated: usize, eos: &[u32]) -> Vec<f32> {
    let mut x = logits.to_vec();
    s.process(&mut x, num_generated, eos);
    x
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let p = SamplingParams::greedy(16);
    for seed in 0..20 {
        let logits = random_logits(1000, 3.0, seed);
        let mut s = SequenceSampler::new(&p, Some(seed), &[]);
        assert_eq!(s.sample(&mut logits.clone(), 0, &[]).token, naive_argmax(&logits));
    }
    let mut s = SequenceSampler::new(&p, None, &[]);
    assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, 2.0], 0, &[]).token, 1);
}

#[test]
fn top_k_one_is_greedy_at_any_temperature() {
    let logits = random_logits(5000, 2.0, 11);
    let want = naive_argmax(&logits);
    for temperature in [0.3, 1.0, 2.0, 50.0] {
        let p = params(|p| {
            p.top_k = 1;
            p.temperature = temperature;
        });
        assert!(draw_seq(&p, &logits, 200, 5).iter().all(|&t| t == want));
    }
}

#[test]
fn seeded_runs_repeat_and_seeds_differ() {
    let logits = random_logits(1000, 1.0, 3);
    for p in [params(|_| {}), params(|p| p.top_p = 0.9), params(|p| p.top_k = 50)] {
        let a = draw_seq(&p, &logits, 300, 42);
        assert_eq!(a, draw_seq(&p, &logits, 300, 42));
        assert_ne!(a, draw_seq(&p, &logits, 300, 43));
    }
}

#[test]
fn sequences_are_independent_of_each_other() {
    let logits = random_logits(1000, 1.0, 4);
    let p = params(|p| p.temperature = 0.8);
    let alone = draw_seq(&p, &logits, 100, 1);
    let mut a = SequenceSampler::new(&p, Some(1), &[]);
    let mut b = SequenceSampler::new(&p, Some(2), &[]);
    let mut interleaved = Vec::new();
    for _ in 0..100 {
        b.sample(&mut logits.clone(), 0, &[]);
        interleaved.push(a.sample(&mut logits.clone(), 0, &[]).token);
        b.sample(&mut logits.clone(), 0, &[]);
    }
    assert_eq!(alone, interleaved);
}

fn assert_frequencies(counts: &[usize], want: &[f64], tol: f64) {
    let n: usize = counts.iter().sum();
    for (i, (&c, &w)) in counts.iter().zip(want).enumerate() {
        let got = c as f64 / n as f64;
        assert!((got - w).abs() < tol, "token {i}: {got} vs {w}");
    }
}

#[test]
fn frequencies_match_softmax() {
    let logits = [1.0, 2.0, 0.5, -1.0, 0.0];
    let p = params(|p| p.temperature = 0.8);
    let counts = histogram(&p, &logits, 200_000, 9);
    assert_frequencies(&counts, &softmax(&logits, 0.8), 0.005);
}

#[test]
fn top_k_frequencies_match_renormalized_softmax() {
    let logits = [1.0, 2.0, 0.5, -1.0, 0.0];
    let p = params(|p| {
        p.temperature = 1.3;
        p.top_k = 3;
    });
    let counts = histogram(&p, &logits, 200_000, 10);
    let mut want = softmax(&[1.0, 2.0, 0.5], 1.3);
    want.extend([0.0, 0.0]);
    assert_frequencies(&counts, &want, 0.005);
}

#[test]
fn top_p_excludes_the_tail() {
    let logits = ln_probs(&[0.5, 0.3, 0.15, 0.05]);
    for top_k in [0, 3] {
        let p = params(|p| {
            p.top_p = 0.75;
            p.top_k = top_k;
        });
        let counts = histogram(&p, &logits, 40_000, 12);
        assert_eq!((counts[2], counts[3]), (0, 0), "top_k {top_k}: {counts:?}");
        assert_frequencies(&counts, &[0.625, 0.375, 0.0, 0.0], 0.01);
    }
}

#[test]
fn top_p_keeps_at_least_one_token() {
    let logits = ln_probs(&[0.2, 0.5, 0.3]);
    let p = params(|p| p.top_p = 0.0);
    assert_eq!(histogram(&p, &logits, 1000, 1), vec![0, 1000, 0]);
}

#[test]
fn top_p_on_large_vocab_stays_in_naive_nucleus() {
    let logits = random_logits(20_000, 3.0, 13);
    let p = params(|p| {
        p.top_p = 0.3;
        p.temperature = 0.7;
    });
    let nucleus = naive_nucleus(&logits, 1.0 / 0.7, 0.3);
    assert!(nucleus.len() > 10 && nucleus.len() < 2000, "{}", nucleus.len());
    let counts = histogram(&p, &logits, 20_000, 14);
    for (id, &c) in counts.iter().enumerate() {
        assert!(c == 0 || nucleus.contains(&(id as u32)), "token {id} sampled");
    }
}

#[test]
fn min_p_excludes_the_tail() {
    let logits = ln_probs(&[0.5, 0.3, 0.15, 0.05]);
    for top_k in [0, 3] {
        let p = params(|p| {
            p.min_p = 0.2;
            p.top_k = top_k;
        });
        let counts = histogram(&p, &logits, 40_000, 15);
        assert_eq!(counts[3], 0, "top_k {top_k}: {counts:?}");
        assert_frequencies(&counts, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], 0.01);
    }
}

#[test]
fn repetition_penalty_formula() {
    let p = params(|p| p.repetition_penalty = 2.0);
    let mut s = SequenceSampler::new(&p, Some(0), &[1, 2, 2]);
    let logits = [1.0, 2.0, -2.0, 3.0, 0.5, 0.0];
    assert_eq!(processed(&s, &logits, 0, &[]), [1.0, 1.0, -4.0, 3.0, 0.5, 0.0]);
    s.record(4);
    s.record(4);
    s.record(5);
    assert_eq!(processed(&s, &logits, 3, &[]), [1.0, 1.0, -4.0, 3.0, 0.25, 0.0]);
}

#[test]
fn presence_and_frequency_penalty_formula() {
    let p = params(|p| {
        p.presence_penalty = 0.5;
        p.frequency_penalty = 0.25;
    });
    let mut s = SequenceSampler::new(&p, Some(0), &[0, 2]);
    for t in [3, 3, 3, 1] {
        s.record(t);
    }
    let logits = [1.0, 2.0, -2.0, 3.0];
    let want = [1.0, 2.0 - 0.5 - 0.25, -2.0, 3.0 - 0.5 - 0.75];
    assert_eq!(processed(&s, &logits, 4, &[]), want);
}

#[test]
fn repetition_applies_before_presence_and_frequency() {
    let p = params(|p| {
        p.repetition_penalty = 2.0;
        p.presence_penalty = 0.5;
        p.frequency_penalty = 0.25;
    });
    let mut s = SequenceSampler::new(&p, Some(0), &[0]);
    s.record(1);
    s.record(1);
    let x = processed(&s, &[4.0, 2.0, 1.0], 2, &[]);
    assert_eq!(x, [2.0, 2.0 / 2.0 - 0.5 - 0.5, 1.0]);
}

#[test]
fn logit_bias_adds_and_minus_100_bans() {
    let p = params(|p| p.logit_bias = vec![(1, 2.5), (3, -100.0), (99, 1.0)]);
    let s = SequenceSampler::new(&p, Some(0), &[]);
    let x = processed(&s, &[0.0; 4], 0, &[]);
    assert_eq!(x, [0.0, 2.5, 0.0, f32::NEG_INFINITY]);
    let p = params(|p| p.logit_bias = vec![(3, -100.0)]);
    let counts = histogram(&p, &[0.0; 8], 20_000, 16);
    assert_eq!(counts[3], 0);
    assert!(counts.iter().enumerate().all(|(i, &c)| i == 3 || c > 0));
    let p = params(|p| {
        p.logit_bias = vec![(3, -100.0)];
        p.temperature = 0.0;
    });
    let mut s = SequenceSampler::new(&p, Some(0), &[]);
    assert_eq!(s.sample(&mut [0.0, 1.0, 0.5, 500.0], 0, &[]).token, 1);
}

#[test]
fn min_tokens_bans_eos_and_stop_ids_until_reached() {
    let p = params(|p| {
        p.temperature = 0.0;
        p.min_tokens = 3;
        p.stop_token_ids = vec![6];
    });
    let mut s = SequenceSampler::new(&p, Some(0), &[]);
    let mut eos_top = vec![0.0; 8];
    eos_top[5] = 50.0;
    eos_top[6] = 40.0;
    eos_top[2] = 1.0;
    for n in 0..3 {
        assert_eq!(s.sample(&mut eos_top.clone(), n, &[5, 7]).token, 2);
    }
    assert_eq!(s.sample(&mut eos_top.clone(), 3, &[5, 7]).token, 5);
    eos_top[5] = 0.0;
    assert_eq!(s.sample(&mut eos_top.clone(), 2, &[5, 7]).token, 2);
    assert_eq!(s.sample(&mut eos_top.clone(), 3, &[5, 7]).token, 6);
}

fn naive_log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
    x.iter().map(|&v| v as f64 - m - s.ln()).collect()
}

fn check_logprobs(logits: &[f32], token: u32, k: usize) {
    let want = naive_log_softmax(logits);
    let got = logprobs_of(logits, token, k);
    assert_eq!(got.token_id, token);
    assert!((got.logprob as f64 - want[token as usize]).abs() < 1e-4);
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| want[b as usize].total_cmp(&want[a as usize]).then(a.cmp(&b)));
    assert_eq!(got.top.len(), k.min(logits.len()));
    for (&(id, lp), &want_id) in got.top.iter().zip(&order) {
        assert_eq!(id, want_id);
        assert!((lp as f64 - want[id as usize]).abs() < 1e-4);
    }
}

#[test]
fn logprobs_of_matches_naive_log_softmax() {
    let logits = random_logits(3000, 5.0, 17);
    for k in [0, 1, 5, 20, 64, 65, 200] {
        check_logprobs(&logits, 123, k);
    }
    let ties = [1.0, 3.0, 2.0, 3.0, 2.0, -1.0];
    for k in [0, 3, 6, 10] {
        check_logprobs(&ties, 5, k);
    }
    let big = [1000.0, 999.0, -1000.0];
    check_logprobs(&big, 1, 3);
    assert_eq!(logprobs_of(&big, 3, 0).logprob, f32::NEG_INFINITY);
}

#[test]
fn sampled_logprob_comes_from_raw_logits() {
    let logits = random_logits(2000, 3.0, 18);
    let p = params(|p| {
        p.temperature = 0.5;
        p.top_p = 0.8;
        p.repetition_penalty = 1.5;
        p.logit_bias = vec![(7, 5.0)];
        p.logprobs = Some(3);
    });
    let mut s = SequenceSampler::new(&p, Some(1), &[7, 8, 9]);
    for _ in 0..20 {
        let out = s.sample(&mut logits.clone(), 0, &[]);
        assert_eq!(out.logprob, Some(logprobs_of(&logits, out.token, 3)));
        s.record(out.token);
    }
    let mut s = SequenceSampler::new(&params(|_| {}), Some(1), &[]);
    assert_eq!(s.sample(&mut logits.clone(), 0, &[]).logprob, None);
}

mod nucleus;

use nucleus::naive_nucleus;
