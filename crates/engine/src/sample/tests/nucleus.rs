//! The nucleus (top-p) and the inverse-CDF draw against naive references, property tests,
//! and a timing print.

use super::*;

fn weights(logits: &[f32], inv_temp: f32) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut w = logits.to_vec();
    exp_in_place(&mut w, m, inv_temp);
    w
}

/// Reference nucleus: full sort in rank order of the same weights.
pub(super) fn naive_nucleus(logits: &[f32], inv_temp: f32, top_p: f32) -> Vec<u32> {
    let w = weights(logits, inv_temp);
    let mut w: Vec<(f32, u32)> = w.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
    w.sort_by(rank_cmp);
    let total: f64 = w.iter().map(|c| c.0 as f64).sum();
    let mut cum = 0.0;
    let mut out = Vec::new();
    for &(wi, id) in &w {
        out.push(id);
        cum += wi as f64;
        if cum >= top_p as f64 * total {
            break;
        }
    }
    out.sort_unstable();
    out
}

fn binned_nucleus(logits: &[f32], inv_temp: f32, top_p: f32) -> Vec<u32> {
    let w = weights(logits, inv_temp);
    let total: f64 = w.iter().map(|&x| x as f64).sum();
    let mut list = Vec::new();
    top_p_candidates(&w, total, top_p, &mut list);
    let mut ids: Vec<u32> = list.iter().map(|c| c.1).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn exp_neg_matches_std_exp() {
    let mut x = 0.0f32;
    while x > -87.0 {
        let (got, want) = (exp_neg(x), (x as f64).exp());
        assert!(((got as f64 - want) / want).abs() < 3e-7, "{x}: {got} vs {want}");
        x -= 0.001_37;
    }
    assert_eq!(exp_neg(0.0), 1.0);
    for x in [-87.5, -1e9, f32::NEG_INFINITY, f32::NAN] {
        assert_eq!(exp_neg(x), 0.0);
    }
}

#[test]
fn in_place_draw_spans_chunks() {
    let mut logits = vec![f32::NEG_INFINITY; 300];
    let live = [(3, 0.0), (70, 1.0), (150, 2.0), (299, -0.5)];
    for &(i, l) in &live {
        logits[i] = l;
    }
    let counts = histogram(&params(|_| {}), &logits, 100_000, 20);
    let want = softmax(&live.map(|(_, l)| l), 1.0);
    let got: Vec<usize> = live.iter().map(|&(i, _)| counts[i]).collect();
    assert_eq!(got.iter().sum::<usize>(), 100_000);
    assert_frequencies(&got, &want, 0.006);
}

/// Inverse CDF by a sequential scan: the first index whose running sum exceeds `u * total`.
fn naive_inverse_cdf(w: &[f32], u: f64) -> u32 {
    let total: f64 = w.iter().map(|&x| x as f64).sum();
    let mut cum = 0.0;
    for (i, &x) in w.iter().enumerate() {
        cum += x as f64;
        if cum > u * total {
            return i as u32;
        }
    }
    unreachable!()
}

#[test]
fn draws_invert_the_cdf_exactly() {
    let mut w = weights(&random_logits(1000, 2.0, 22), 1.0);
    for x in w.iter_mut().skip(5).step_by(7) {
        *x = 0.0;
    }
    let total: f64 = w.iter().map(|&x| x as f64).sum();
    let pairs: Vec<(f32, u32)> = w.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
    let grid = (0..2000).map(|i| (i as f64 + 0.5) / 2000.0);
    // Just below and above each 64-token chunk boundary of the in-place draw.
    let boundaries = (64..1000).step_by(64).flat_map(|end| {
        let cum: f64 = w[..end].iter().map(|&x| x as f64).sum();
        [cum / total - 1e-9, cum / total + 1e-9]
    });
    for u in grid.chain(boundaries) {
        let want = naive_inverse_cdf(&w, u);
        assert_eq!(draw_in_place(&w, total, u), want, "u = {u}");
        assert_eq!(draw(&pairs, u), want, "u = {u}");
    }
}

#[test]
fn one_uniform_per_sample_in_every_mode() {
    let logits = random_logits(3000, 2.0, 23);
    for p in [
        params(|p| p.temperature = 0.0),
        params(|_| {}),
        params(|p| p.top_p = 0.5),
        params(|p| p.min_p = 0.1),
        params(|p| p.top_k = 10),
    ] {
        let mut s = SequenceSampler::new(&p, Some(99), &[]);
        let mut reference = ChaCha8Rng::seed_from_u64(99);
        for _ in 0..7 {
            s.sample(&mut logits.clone(), 0, &[]);
            reference.random::<f64>();
        }
        assert_eq!(s.rng.random::<u64>(), reference.random::<u64>(), "{p:?}");
    }
}

#[test]
fn top_p_then_min_p() {
    let logits = ln_probs(&[0.4, 0.3, 0.2, 0.1]);
    for top_k in [0, 4, 3] {
        let p = params(|p| {
            p.top_p = 0.85;
            p.min_p = 0.6;
            p.top_k = top_k;
        });
        let counts = histogram(&p, &logits, 40_000, 21);
        assert_frequencies(&counts, &[4.0 / 7.0, 3.0 / 7.0, 0.0, 0.0], 0.01);
    }
}

proptest! {
    #[test]
    fn binned_nucleus_equals_sorted_nucleus(
        logits in prop_oneof![
            prop::collection::vec(-30f32..30.0, 1..3000),
            // Few distinct values: many exact ties and large equal-weight buckets.
            prop::collection::vec((0u8..4).prop_map(f32::from), 1..3000),
        ],
        top_p in 0.0f32..1.0,
        inv_temp in 0.3f32..3.0,
    ) {
        prop_assert_eq!(binned_nucleus(&logits, inv_temp, top_p), naive_nucleus(&logits, inv_temp, top_p));
    }

    #[test]
    fn sampling_is_robust_and_respects_bans(
        logits in prop::collection::vec(
            prop_oneof![8 => -40f32..40.0, 1 => Just(f32::NEG_INFINITY), 1 => Just(f32::NAN)],
            1..200,
        ),
        temperature in prop_oneof![Just(0.0f32), 0.05f32..3.0],
        top_k in 0usize..80,
        top_p in 0.0f32..1.0,
        min_p in 0.0f32..1.0,
        banned in 0u32..200,
        seed in any::<u64>(),
    ) {
        let p = params(|p| {
            p.temperature = temperature;
            p.top_k = top_k;
            p.top_p = top_p;
            p.min_p = min_p;
            p.logit_bias = vec![(banned, -100.0)];
            p.repetition_penalty = 1.3;
            p.presence_penalty = 0.2;
            p.logprobs = Some(2);
        });
        let mut s = SequenceSampler::new(&p, Some(seed), &[0, 1]);
        let out = s.sample(&mut logits.clone(), 0, &[]);
        prop_assert!((out.token as usize) < logits.len());
        let alive = |i: usize| logits[i].is_finite() && i != banned as usize;
        if (0..logits.len()).any(alive) {
            prop_assert!(alive(out.token as usize), "picked {}", out.token);
        }
    }
}

/// Not an assertion: prints the per-call cost (run with `--release -- --nocapture`). The time
/// excludes refilling the logits.
#[test]
fn timing_vocab_49152() {
    let vocab = 49_152;
    let mut logits = random_logits(vocab, 2.5, 19);
    for (i, x) in logits.iter_mut().enumerate().take(400) {
        *x += 12.0 - i as f32 * 0.03;
    }
    let iters = if cfg!(debug_assertions) { 20 } else { 1000 };
    for (name, p) in [
        ("top_p 0.9 temp 0.7", params(|p| (p.top_p, p.temperature) = (0.9, 0.7))),
        ("temp 1.0 (full)", params(|_| {})),
        ("min_p 0.05", params(|p| p.min_p = 0.05)),
        ("top_k 50 top_p 0.9", params(|p| (p.top_k, p.top_p) = (50, 0.9))),
        ("greedy", params(|p| p.temperature = 0.0)),
        ("top_p 0.9 + logprobs 5", params(|p| (p.top_p, p.logprobs) = (0.9, Some(5)))),
        ("top_p 0.9 temp 1.5 (flat)", params(|p| (p.top_p, p.temperature) = (0.9, 1.5))),
    ] {
        let mut s = SequenceSampler::new(&p, Some(0), &[1, 2, 3]);
        let mut buf = logits.clone();
        let mut times: Vec<_> = (0..iters)
            .map(|_| {
                buf.copy_from_slice(&logits);
                let start = Instant::now();
                std::hint::black_box(s.sample(&mut buf, 0, &[]));
                start.elapsed()
            })
            .collect();
        times.sort_unstable();
        let (min, median) = (times[0], times[times.len() / 2]);
        println!("sample() vocab {vocab}, {name}: median {median:?}, min {min:?}");
    }
}
