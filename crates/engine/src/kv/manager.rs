//! Per-request block tables on top of the block pool: prefix lookup, slot allocation, release.

use super::block_pool::{BlockId, BlockPool};
use super::hash::{hash_block, BlockHash};

/// The blocks one sequence holds, in order, and the hashes of its full blocks.
#[derive(Debug, Default, Clone)]
pub struct BlockTable {
    pub blocks: Vec<BlockId>,
    hashes: Vec<BlockHash>,
}

impl BlockTable {
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self { pool: BlockPool::new(num_blocks), block_size, prefix_caching }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Finds the longest cached prefix of `tokens`, in whole blocks, leaving at least one token to
    /// compute (its logits are needed). Acquires the hit blocks into `table`; returns the number of
    /// tokens they cover.
    pub fn acquire_cached_prefix(&mut self, tokens: &[u32], table: &mut BlockTable) -> usize {
        debug_assert!(table.is_empty());
        if !self.prefix_caching || tokens.is_empty() {
            return 0;
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut parent = None;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let hash = hash_block(parent, chunk);
            let Some(id) = self.pool.lookup(&hash) else { break };
            self.pool.acquire(id);
            table.blocks.push(id);
            table.hashes.push(hash);
            parent = Some(hash);
        }
        table.blocks.len() * self.block_size
    }

    /// Blocks needed to hold `num_tokens` tokens in `table` beyond what it already has.
    pub fn blocks_needed(&self, table: &BlockTable, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size).saturating_sub(table.len())
    }

    /// Grows `table` to hold `tokens[..end]`. False if the pool is too small. The new blocks are
    /// not findable by hash until [`Self::commit`] says their KV was written.
    pub fn allocate(&mut self, table: &mut BlockTable, end: usize) -> bool {
        let needed = self.blocks_needed(table, end);
        if needed > self.pool.num_free() {
            return false;
        }
        for _ in 0..needed {
            match self.pool.allocate() {
                Some(id) => table.blocks.push(id),
                None => return false,
            }
        }
        true
    }

    /// Starts planning a step: blocks published for the previous plan are no longer findable
    /// unless that step completed (and registered them).
    pub fn begin_pass(&mut self) {
        self.pool.clear_pending();
    }

    /// Lets sequences admitted later in this plan share the full blocks of `tokens[..end]`,
    /// which this step writes (n choices of one prompt). Only for admissions: nothing admitted
    /// is preempted in the same plan.
    pub fn publish_for_this_pass(&mut self, table: &BlockTable, tokens: &[u32], end: usize) {
        if !self.prefix_caching {
            return;
        }
        let mut parent = table.hashes.last().copied();
        for i in table.hashes.len()..end.min(tokens.len()) / self.block_size {
            let hash = hash_block(parent, &tokens[i * self.block_size..(i + 1) * self.block_size]);
            self.pool.publish_pending(table.blocks[i], hash);
            parent = Some(hash);
        }
    }

    /// Makes the full blocks of `tokens[..computed]` findable by hash: call it once the step that
    /// wrote their KV has completed.
    pub fn commit(&mut self, table: &mut BlockTable, tokens: &[u32], computed: usize) {
        if self.prefix_caching {
            self.register_full_blocks(table, &tokens[..computed.min(tokens.len())]);
        }
    }

    fn register_full_blocks(&mut self, table: &mut BlockTable, tokens: &[u32]) {
        let full = tokens.len() / self.block_size;
        while table.hashes.len() < full {
            let i = table.hashes.len();
            let hash =
                hash_block(table.hashes.last().copied(), &tokens[i * self.block_size..(i + 1) * self.block_size]);
            self.pool.register(table.blocks[i], hash);
            table.hashes.push(hash);
        }
    }

    /// Releases every block of `table`, last block first so that a prefix's tail is evicted first.
    pub fn release(&mut self, table: &mut BlockTable) {
        for &id in table.blocks.iter().rev() {
            self.pool.release(id);
        }
        table.blocks.clear();
        table.hashes.clear();
    }
}
