//! The flattened varlen batch description shared by the attention ops.

/// Describes one step's flattened batch of sequences for paged attention.
///
/// Sequence `s` owns query tokens `query_start_loc[s]..query_start_loc[s + 1]`; after this step's
/// cache write it has `context_lens[s]` tokens of KV, stored in the blocks listed in row `s` of
/// `block_tables` (row stride `max_blocks_per_seq`). The query tokens are the last ones of the
/// context, so query token `i` of a sequence sits at position `context_len - query_len + i` and
/// attends causally to positions `0..=that`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttentionMetadata {
    pub query_start_loc: Vec<u32>,
    pub context_lens: Vec<u32>,
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
    pub block_size: usize,
    /// A device copy made by the first GPU op that reads this metadata and reused by the rest of
    /// the step's layers. Opaque here; cloning the metadata starts a fresh, empty cache.
    pub device_copy: DeviceCopy,
}

/// A lazily filled, type-erased cache slot (see [`AttentionMetadata::device_copy`]).
#[derive(Default)]
pub struct DeviceCopy(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl DeviceCopy {
    /// The cached value, if one of type `T` was stored.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.get().and_then(|b| b.downcast_ref::<T>())
    }

    /// Stores `value` unless a value is already cached; returns the cached one if it is a `T`.
    pub fn get_or_init<T: Send + Sync + 'static>(&self, value: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(value())).downcast_ref::<T>()
    }
}

impl Clone for DeviceCopy {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for DeviceCopy {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for DeviceCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "DeviceCopy(filled)" } else { "DeviceCopy(empty)" })
    }
}

impl AttentionMetadata {
    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    pub fn num_tokens(&self) -> usize {
        self.query_start_loc.last().map_or(0, |&n| n as usize)
    }

    /// Block ids of sequence `seq` (the full row, including unused trailing entries).
    pub fn block_row(&self, seq: usize) -> &[u32] {
        let start = seq * self.max_blocks_per_seq;
        &self.block_tables[start..start + self.max_blocks_per_seq]
    }

    /// Checks the internal consistency of the arrays; returns a description of the first problem.
    pub fn validate(&self, num_blocks: usize) -> Result<(), String> {
        let seqs = self.num_seqs();
        if self.query_start_loc.len() != seqs + 1 {
            return Err(format!("query_start_loc has {} entries for {seqs} sequences", self.query_start_loc.len()));
        }
        if self.block_tables.len() != seqs * self.max_blocks_per_seq {
            return Err("block_tables length does not match max_blocks_per_seq".into());
        }
        if self.block_size == 0 {
            return Err("block_size is zero".into());
        }
        for s in 0..seqs {
            let q_len = self.query_start_loc[s + 1].checked_sub(self.query_start_loc[s]);
            let ctx = self.context_lens[s] as usize;
            match q_len {
                Some(q) if (q as usize) <= ctx => {}
                _ => return Err(format!("sequence {s}: query length exceeds its context")),
            }
            let blocks_needed = ctx.div_ceil(self.block_size);
            if blocks_needed > self.max_blocks_per_seq {
                return Err(format!("sequence {s}: context {ctx} needs {blocks_needed} blocks"));
            }
            if self.block_row(s)[..blocks_needed].iter().any(|&b| b as usize >= num_blocks) {
                return Err(format!("sequence {s}: block id out of range"));
            }
        }
        Ok(())
    }
}
