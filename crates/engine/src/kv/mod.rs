//! The paged KV cache's bookkeeping: a block pool with prefix caching, and per-request block tables.

mod block_pool;
mod hash;
mod manager;

pub use block_pool::{BlockId, BlockPool};
pub use hash::{hash_block, BlockHash};
pub use manager::{BlockTable, KvCacheManager};
