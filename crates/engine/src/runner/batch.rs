//! The flattened varlen batch for one step.

use sconce_kernels::AttentionMetadata;

use crate::sched::{ScheduledChunk, Sequence};

/// Which logits rows belong to one scheduled chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRows {
    /// First logits row of this chunk.
    pub first_row: usize,
    /// Rows for every token of the chunk (prompt logprobs), or only the last token.
    pub all_tokens: bool,
    /// The chunk ends at the sequence's last known token, so the next token is sampled.
    pub samples: bool,
}

/// Host-side arrays for one step, ready to become tensors.
#[derive(Debug, Default, Clone)]
pub struct BatchPlan {
    pub input_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub slot_mapping: Vec<u32>,
    pub metadata: AttentionMetadata,
    pub logits_rows: Vec<u32>,
    pub chunk_rows: Vec<ChunkRows>,
}

impl BatchPlan {
    /// Lays out the chunks in order. `wants_all_rows(seq)` asks for per-token logits (prompt logprobs).
    pub fn build<'a>(
        chunks: &[ScheduledChunk],
        seq_of: impl Fn(u64) -> Option<&'a Sequence>,
        block_size: usize,
        wants_all_rows: impl Fn(&Sequence, &ScheduledChunk) -> bool,
    ) -> Self {
        let mut plan = BatchPlan::default();
        let seqs: Vec<&Sequence> = chunks.iter().filter_map(|c| seq_of(c.key)).collect();
        let max_blocks = seqs.iter().map(|s| s.blocks.len()).max().unwrap_or(0);
        plan.metadata = AttentionMetadata { block_size, max_blocks_per_seq: max_blocks, ..Default::default() };
        plan.metadata.query_start_loc.push(0);
        for (chunk, seq) in chunks.iter().zip(seqs) {
            plan.push_chunk(chunk, seq, block_size, wants_all_rows(seq, chunk));
        }
        plan
    }

    fn push_chunk(&mut self, chunk: &ScheduledChunk, seq: &Sequence, block_size: usize, all_rows: bool) {
        let end = chunk.start + chunk.len;
        for pos in chunk.start..end {
            self.input_ids.push(seq.tokens[pos]);
            self.positions.push(pos as u32);
            let block = seq.blocks.blocks[pos / block_size];
            self.slot_mapping.push(block * block_size as u32 + (pos % block_size) as u32);
        }
        let first_token_row = self.input_ids.len() - chunk.len;
        let samples = end == seq.tokens.len();
        let first_row = self.logits_rows.len();
        if all_rows {
            self.logits_rows.extend((first_token_row..self.input_ids.len()).map(|r| r as u32));
        } else if samples {
            self.logits_rows.push((self.input_ids.len() - 1) as u32);
        }
        self.chunk_rows.push(ChunkRows { first_row, all_tokens: all_rows, samples });
        let meta = &mut self.metadata;
        let row_start = meta.block_tables.len();
        meta.block_tables.extend(&seq.blocks.blocks);
        meta.block_tables.resize(row_start + meta.max_blocks_per_seq, 0);
        meta.context_lens.push(end as u32);
        meta.query_start_loc.push(self.input_ids.len() as u32);
    }
}
