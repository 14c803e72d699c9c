//! Chained content hashes of full blocks: a block's hash covers its tokens and every block before it.

use std::hash::{DefaultHasher, Hash, Hasher};

/// 128 bits, so accidental collisions between different prefixes are not a practical concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u128);

/// Hash of a full block given its parent's hash (`None` for the first block).
pub fn hash_block(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        parent.hash(&mut h);
        tokens.hash(&mut h);
        h.finish()
    };
    BlockHash(((half(1) as u128) << 64) | half(2) as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_parent_and_tokens() {
        let a = hash_block(None, &[1, 2, 3]);
        assert_eq!(a, hash_block(None, &[1, 2, 3]));
        assert_ne!(a, hash_block(None, &[1, 2, 4]));
        assert_ne!(hash_block(Some(a), &[5]), hash_block(None, &[5]));
    }
}
