//! A label's target: one version, or an A/B split with sticky assignment.
//!
//! A caller's id hashes to a point in [0, 1) that never changes; the arms cover [0, 1) in
//! version order, each as wide as its share of the weights. So the same caller always gets
//! the same version, and ramping the newer arm up (90/10, then 80/20) only moves callers
//! onto it, never off it.

use std::collections::BTreeMap;

use sconce_protocol::ApiError;

use sha2::{Digest, Sha256};

/// Most total weight a split may have.
const MAX_TOTAL_WEIGHT: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm {
    pub version: u32,
    pub weight: u32,
}

/// Arms in version order, each with a positive weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    arms: Vec<Arm>,
}

impl Split {
    /// All traffic to one version.
    pub fn single(version: u32) -> Self {
        Self { arms: vec![Arm { version, weight: 100 }] }
    }

    /// Weights per version; refuses an empty split, a zero weight or a huge total.
    pub fn new(weights: &BTreeMap<u32, u32>) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::invalid_param("split", message);
        if weights.is_empty() {
            return Err(invalid("a split needs at least one version".into()));
        }
        if let Some(version) = weights.iter().find(|(_, &weight)| weight == 0).map(|(version, _)| version) {
            return Err(invalid(format!("version {version} has weight 0: leave it out instead")));
        }
        if weights.values().map(|&weight| u64::from(weight)).sum::<u64>() > MAX_TOTAL_WEIGHT {
            return Err(invalid(format!("the weights add up to more than {MAX_TOTAL_WEIGHT}")));
        }
        Ok(Self { arms: weights.iter().map(|(&version, &weight)| Arm { version, weight }).collect() })
    }

    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    pub fn is_experiment(&self) -> bool {
        self.arms.len() > 1
    }

    /// The version the caller `sticky` gets from label `label` of prompt `name`.
    pub fn choose(&self, name: &str, label: &str, sticky: &str) -> u32 {
        let total: u64 = self.arms.iter().map(|arm| u64::from(arm.weight)).sum();
        if !self.is_experiment() || total == 0 {
            return self.arms.first().map_or(0, |arm| arm.version);
        }
        let point = ((u128::from(sticky_hash(&[name, label, sticky])) * u128::from(total)) >> 64) as u64;
        let mut end = 0;
        for arm in &self.arms {
            end += u64::from(arm.weight);
            if point < end {
                return arm.version;
            }
        }
        self.arms.last().map_or(0, |arm| arm.version)
    }

    /// Weights per version, as the admin API shows them.
    pub fn weights(&self) -> BTreeMap<u32, u32> {
        self.arms.iter().map(|arm| (arm.version, arm.weight)).collect()
    }
}

/// A stable 64-bit hash: the same on every replica and every build.
fn sticky_hash(parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}
