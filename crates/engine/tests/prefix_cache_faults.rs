//! Prefix-cache correctness under preemption and failed steps, on token ids and a fake KV store:
//! no chunk may attend a cached slot whose KV was not written by a completed step.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sconce_engine::kv::KvCacheManager;
use sconce_engine::sched::{Scheduler, SchedulerConfig, SchedulerOutput, Sequence};

const BLOCKS: usize = 12;
const BLOCK_SIZE: usize = 4;

/// One value per KV slot: the token whose KV it holds, NaN where nothing valid was written.
struct FakeKv(Vec<f32>);

impl FakeKv {
    fn new() -> Self {
        Self(vec![f32::NAN; BLOCKS * BLOCK_SIZE])
    }

    fn slot(seq: &Sequence, pos: usize) -> usize {
        seq.blocks.blocks[pos / BLOCK_SIZE] as usize * BLOCK_SIZE + pos % BLOCK_SIZE
    }

    /// What attention reads before the chunk's own tokens, after the step's writes: every
    /// earlier position must hold that position's token.
    fn check_reads(&self, s: &Scheduler, out: &SchedulerOutput) -> Result<(), TestCaseError> {
        for chunk in &out.chunks {
            let seq = s.get(chunk.key).unwrap();
            for pos in 0..chunk.start {
                let value = self.0[Self::slot(seq, pos)];
                prop_assert!(value.is_finite(), "sequence {} reads unwritten KV at position {pos}", chunk.key);
                prop_assert_eq!(value, seq.tokens[pos] as f32, "sequence {} reads stale KV at {}", chunk.key, pos);
            }
        }
        Ok(())
    }

    /// The step's writes: the chunk's tokens, or NaN garbage when the step fails midway.
    fn write(&mut self, s: &Scheduler, out: &SchedulerOutput, failed: bool) {
        for chunk in &out.chunks {
            let seq = s.get(chunk.key).unwrap();
            for pos in chunk.start..chunk.start + chunk.len {
                self.0[Self::slot(seq, pos)] = if failed { f32::NAN } else { seq.tokens[pos] as f32 };
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add { len: usize, prefix: u32, priority: i32 },
    Step,
    FailStep,
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..30, 0u32..3, 0i32..3).prop_map(|(len, prefix, priority)| Op::Add { len, prefix, priority }),
        6 => Just(Op::Step),
        1 => Just(Op::FailStep),
        1 => (0usize..16).prop_map(Op::Remove),
    ]
}

struct World {
    s: Scheduler,
    kv: FakeKv,
    keys: Vec<u64>,
}

impl World {
    fn new() -> Self {
        let config = SchedulerConfig { max_num_seqs: 6, max_num_batched_tokens: 24 };
        Self {
            s: Scheduler::new(config, KvCacheManager::new(BLOCKS, BLOCK_SIZE, true)),
            kv: FakeKv::new(),
            keys: Vec::new(),
        }
    }

    /// Prompts of the same `prefix` class share tokens, so prefix-cache hits are frequent.
    fn add(&mut self, len: usize, prefix: u32, priority: i32) {
        let key = self.keys.len() as u64;
        let tail = 500 + key as u32;
        let mut prompt: Vec<u32> = (0..len as u32).map(|i| prefix * 100 + i).collect();
        prompt.push(tail);
        self.s.add(Sequence::new(key, prompt, priority));
        self.keys.push(key);
    }

    fn step(&mut self, failed: bool, token: u32) -> Result<(), TestCaseError> {
        let out = self.s.schedule();
        // Every layer writes the whole batch's KV before attention reads it.
        self.kv.write(&self.s, &out, failed);
        if !failed {
            self.kv.check_reads(&self.s, &out)?;
        }
        if failed {
            // A failed step ends every request, as the engine does.
            for &k in &self.keys {
                self.s.remove(k);
            }
            return Ok(());
        }
        self.s.complete(&out);
        for c in &out.chunks {
            let seq = self.s.get(c.key).unwrap();
            if seq.num_computed == seq.tokens.len() {
                self.s.append_token(c.key, token);
            }
        }
        // Keep sequences within the pool, as the engine's length check does.
        let full: Vec<u64> =
            self.keys.iter().copied().filter(|&k| self.s.get(k).is_some_and(|q| q.tokens.len() >= 40)).collect();
        for k in full {
            self.s.remove(k);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn no_chunk_reads_kv_that_was_never_written(ops in prop::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Add { len, prefix, priority } => world.add(len, prefix, priority),
                Op::Step => world.step(false, i as u32 % 7)?,
                Op::FailStep => world.step(true, 0)?,
                Op::Remove(i) => {
                    if let Some(&k) = world.keys.get(i) {
                        world.s.remove(k);
                    }
                }
            }
        }
    }
}
