//! A fixed pool of KV blocks with reference counts, an LRU free list and a prefix-cache index.
//!
//! A free block may still hold a cached prefix: it stays findable by hash until the LRU order
//! hands it out again, which evicts its hash.

use std::collections::{BTreeMap, HashMap};

use super::hash::BlockHash;

pub type BlockId = u32;

#[derive(Debug)]
pub struct BlockPool {
    ref_counts: Vec<u32>,
    hashes: Vec<Option<BlockHash>>,
    /// Free blocks by the time they were freed (oldest first = next to be reused).
    free_order: BTreeMap<u64, BlockId>,
    free_stamp: Vec<Option<u64>>,
    clock: u64,
    cached: HashMap<BlockHash, BlockId>,
    /// Blocks that the step being planned writes: findable only by sequences admitted later in
    /// the same plan (they read them after this step's writes, layer by layer).
    pending: HashMap<BlockHash, BlockId>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        let mut pool = Self {
            ref_counts: vec![0; num_blocks],
            hashes: vec![None; num_blocks],
            free_order: BTreeMap::new(),
            free_stamp: vec![None; num_blocks],
            clock: 0,
            cached: HashMap::new(),
            pending: HashMap::new(),
        };
        for id in 0..num_blocks as BlockId {
            pool.push_free(id);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn num_free(&self) -> usize {
        self.free_order.len()
    }

    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.ref_counts[id as usize]
    }

    /// Fraction of blocks held by requests.
    pub fn usage(&self) -> f64 {
        if self.num_blocks() == 0 {
            return 0.0;
        }
        1.0 - self.num_free() as f64 / self.num_blocks() as f64
    }

    fn push_free(&mut self, id: BlockId) {
        self.clock += 1;
        self.free_order.insert(self.clock, id);
        self.free_stamp[id as usize] = Some(self.clock);
    }

    fn remove_free(&mut self, id: BlockId) {
        if let Some(stamp) = self.free_stamp[id as usize].take() {
            self.free_order.remove(&stamp);
        }
    }

    /// Takes the least recently freed block (evicting any cached prefix it held), with ref count 1.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let (_, id) = self.free_order.pop_first()?;
        self.free_stamp[id as usize] = None;
        if let Some(hash) = self.hashes[id as usize].take() {
            if self.cached.get(&hash) == Some(&id) {
                self.cached.remove(&hash);
            }
        }
        self.ref_counts[id as usize] = 1;
        Some(id)
    }

    /// The block holding the prefix with this hash, if still cached.
    pub fn lookup(&self, hash: &BlockHash) -> Option<BlockId> {
        self.cached.get(hash).or_else(|| self.pending.get(hash)).copied()
    }

    /// Makes a block findable for the rest of the plan being built (see `pending`).
    pub fn publish_pending(&mut self, id: BlockId, hash: BlockHash) {
        self.pending.entry(hash).or_insert(id);
    }

    /// Forgets the previous plan's pending blocks: those of a completed step are registered,
    /// those of a failed one must never be found.
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Adds a reference to a block (found by `lookup`), taking it off the free list if needed.
    pub fn acquire(&mut self, id: BlockId) {
        if self.ref_counts[id as usize] == 0 {
            self.remove_free(id);
        }
        self.ref_counts[id as usize] += 1;
    }

    /// Drops a reference; at zero the block becomes free but keeps its cached prefix.
    pub fn release(&mut self, id: BlockId) {
        let count = &mut self.ref_counts[id as usize];
        debug_assert!(*count > 0, "double release of block {id}");
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.push_free(id);
        }
    }

    /// Registers a full block's content hash so later requests can reuse it.
    pub fn register(&mut self, id: BlockId, hash: BlockHash) {
        if self.hashes[id as usize].is_some() || self.cached.contains_key(&hash) {
            return;
        }
        self.hashes[id as usize] = Some(hash);
        self.cached.insert(hash, id);
    }
}
