//! Scheduler and block-pool behaviour on token ids alone (no model).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use proptest::prelude::*;
use sconce_engine::kv::KvCacheManager;
use sconce_engine::sched::{Scheduler, SchedulerConfig, SchedulerOutput, Sequence};

fn scheduler(blocks: usize, block_size: usize, budget: usize, max_seqs: usize) -> Scheduler {
    let config = SchedulerConfig { max_num_seqs: max_seqs, max_num_batched_tokens: budget };
    Scheduler::new(config, KvCacheManager::new(blocks, block_size, true))
}

/// Completes a step the way the engine does: chunks computed, then one token per finished prefill.
fn run_step(s: &mut Scheduler, next_token: u32) -> SchedulerOutput {
    let out = s.schedule();
    s.complete(&out);
    for c in &out.chunks {
        let seq = s.get(c.key).unwrap();
        if seq.num_computed == seq.tokens.len() {
            s.append_token(c.key, next_token);
        }
    }
    out
}

/// Every block's ref count equals the number of tables holding it; free blocks have none.
fn check_ownership(s: &Scheduler, keys: &[u64]) {
    let mut holders: HashMap<u32, u32> = HashMap::new();
    for &k in keys {
        if let Some(seq) = s.get(k) {
            let mut seen = std::collections::HashSet::new();
            for &b in &seq.blocks.blocks {
                assert!(seen.insert(b), "sequence {k} holds block {b} twice");
                *holders.entry(b).or_default() += 1;
            }
        }
    }
    let pool = s.kv().pool();
    let mut held = 0;
    for b in 0..pool.num_blocks() as u32 {
        let count = holders.get(&b).copied().unwrap_or(0);
        assert_eq!(pool.ref_count(b), count, "block {b} ref count");
        held += (count > 0) as usize;
    }
    assert_eq!(pool.num_free(), pool.num_blocks() - held);
}

#[test]
fn long_prompt_is_chunked_to_the_budget_and_decodes_go_first() {
    let mut s = scheduler(64, 4, 10, 8);
    s.add(Sequence::new(1, (0..25).collect(), 0));
    let lens: Vec<usize> = (0..3).map(|_| run_step(&mut s, 7).chunks[0].len).collect();
    assert_eq!(lens, vec![10, 10, 5]);
    s.add(Sequence::new(2, (100..130).collect(), 0));
    let out = run_step(&mut s, 7);
    // The decode of 1 is scheduled first; 2 gets the rest of the budget.
    assert_eq!(out.chunks[0].key, 1);
    assert_eq!(out.chunks[0].len, 1);
    assert_eq!((out.chunks[1].key, out.chunks[1].len), (2, 9));
}

#[test]
fn the_newest_lowest_priority_sequence_is_preempted_and_recomputed() {
    // 4 blocks of 4 tokens; two sequences of 6 prompt tokens grow until they collide.
    let mut s = scheduler(4, 4, 64, 8);
    s.add(Sequence::new(1, (0..6).collect(), 0));
    s.add(Sequence::new(2, (10..16).collect(), 0));
    let mut preempted = Vec::new();
    for _ in 0..6 {
        preempted.extend(run_step(&mut s, 3).preempted);
        check_ownership(&s, &[1, 2]);
    }
    assert_eq!(preempted.first(), Some(&2), "the newer sequence goes first");
    assert!(s.preemptions > 0);
    assert_eq!(s.get(1).unwrap().num_preemptions, 0);
}

#[test]
fn priority_beats_arrival_for_preemption() {
    let mut s = scheduler(4, 4, 64, 8);
    s.add(Sequence::new(1, (0..6).collect(), 5));
    s.add(Sequence::new(2, (10..16).collect(), 0));
    let mut first = None;
    for _ in 0..6 {
        let out = run_step(&mut s, 3);
        first = first.or(out.preempted.first().copied());
    }
    assert_eq!(first, Some(1), "the older but less important sequence is preempted");
}

#[test]
fn shared_prefix_hits_the_cache_and_abort_frees_at_once() {
    let mut s = scheduler(32, 16, 512, 8);
    let prefix: Vec<u32> = (0..64).collect();
    s.add(Sequence::new(1, [prefix.clone(), vec![900, 901]].concat(), 0));
    run_step(&mut s, 5);
    s.add(Sequence::new(2, [prefix, vec![700, 701, 702]].concat(), 0));
    let out = run_step(&mut s, 5);
    let chunk2 = out.chunks.iter().find(|c| c.key == 2).unwrap();
    assert_eq!((chunk2.start, chunk2.len), (64, 3));
    assert_eq!(s.get(2).unwrap().num_cached_prompt, 64);
    assert_eq!(s.prefix_cache_hits, 64);
    check_ownership(&s, &[1, 2]);
    s.remove(1);
    s.remove(2);
    assert_eq!(s.kv().pool().num_free(), 32);
}

#[test]
fn a_full_cache_hit_still_computes_the_last_token() {
    let mut s = scheduler(16, 4, 64, 8);
    s.add(Sequence::new(1, (0..8).collect(), 0));
    run_step(&mut s, 5);
    s.remove(1);
    s.add(Sequence::new(2, (0..8).collect(), 0));
    let out = run_step(&mut s, 5);
    assert_eq!((out.chunks[0].start, out.chunks[0].len), (4, 4));
}

#[derive(Debug, Clone)]
enum Op {
    Add { len: usize, shared: bool, priority: i32 },
    Step,
    Finish(usize),
    Abort(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..40, any::<bool>(), 0i32..3).prop_map(|(len, shared, priority)| Op::Add { len, shared, priority }),
        Just(Op::Step),
        Just(Op::Step),
        Just(Op::Step),
        (0usize..16).prop_map(Op::Finish),
        (0usize..16).prop_map(Op::Abort),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn blocks_are_never_double_owned_and_always_return(ops in prop::collection::vec(op(), 1..80)) {
        // 12 blocks of 4: small enough that preemption happens often.
        let mut s = scheduler(12, 4, 24, 6);
        let mut keys: Vec<u64> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Add { len, shared, priority } => {
                    let key = keys.len() as u64;
                    let base = if shared { 0 } else { 1000 * (key as u32 + 1) };
                    // Total length stays within the pool so a lone sequence always fits.
                    s.add(Sequence::new(key, (base..base + len as u32).collect(), priority));
                    keys.push(key);
                }
                Op::Step => {
                    run_step(&mut s, step as u32);
                    // Keep sequences within the pool capacity, as the engine's length check does.
                    let full: Vec<u64> = keys.iter().copied()
                        .filter(|&k| s.get(k).is_some_and(|q| q.tokens.len() >= 44)).collect();
                    for k in full { s.remove(k); }
                }
                Op::Finish(i) | Op::Abort(i) => {
                    if let Some(&k) = keys.get(i) { s.remove(k); }
                }
            }
            check_ownership(&s, &keys);
        }
        for &k in &keys { s.remove(k); }
        let pool = s.kv().pool();
        prop_assert_eq!(pool.num_free(), pool.num_blocks());
        for b in 0..pool.num_blocks() as u32 { prop_assert_eq!(pool.ref_count(b), 0); }
    }
}
