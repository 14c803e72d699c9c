//! API keys: generated once, stored as SHA-256 hashes, looked up in memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::BudgetPeriod;

/// One key's record (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    #[serde(skip_serializing)]
    pub hash: String,
    pub alias: String,
    pub team: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub models: Option<Vec<String>>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_budget: Option<f64>,
    pub budget_period: Option<BudgetPeriod>,
    pub max_tokens: Option<u64>,
    /// Most choices (`n`, `best_of`) a request may ask for.
    #[serde(default)]
    pub max_n: Option<u64>,
    /// The most urgent `priority` the key may send (lower runs first); none: 0.
    #[serde(default)]
    pub max_priority: Option<i32>,
    pub revoked_at: Option<i64>,
}

/// What `POST /admin/keys` and `sconce keys create` accept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub alias: String,
    pub team: String,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_budget: Option<f64>,
    pub budget_period: Option<BudgetPeriod>,
    pub models: Option<Vec<String>>,
    pub max_tokens: Option<u64>,
    pub max_n: Option<u64>,
    /// The most urgent `priority` the key may send (lower runs first); default 0.
    pub max_priority: Option<i32>,
    /// Unix seconds after which the key stops working.
    pub expires_at: Option<i64>,
}

impl NewKey {
    /// A fresh secret and the record to store for it.
    pub fn issue(self, now: i64) -> (String, ApiKey) {
        let secret = format!("sk-{}", random_hex(24));
        let key = ApiKey {
            id: format!("key_{}", random_hex(8)),
            hash: hash_key(&secret),
            alias: self.alias,
            team: self.team,
            created_at: now,
            expires_at: self.expires_at,
            models: self.models,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_budget: self.max_budget,
            budget_period: self.budget_period,
            max_tokens: self.max_tokens,
            max_n: self.max_n,
            max_priority: self.max_priority,
            revoked_at: None,
        };
        (secret, key)
    }
}

impl ApiKey {
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|models| models.iter().any(|allowed| allowed == model || allowed == "*"))
    }
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Active and revoked keys by hash, shared by every request.
#[derive(Default)]
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, Arc<ApiKey>>>,
}

impl KeyCache {
    pub fn replace_all(&self, keys: Vec<ApiKey>) {
        let map = keys.into_iter().map(|key| (key.hash.clone(), Arc::new(key))).collect();
        if let Ok(mut guard) = self.by_hash.write() {
            *guard = map;
        }
    }

    pub fn insert(&self, key: ApiKey) {
        if let Ok(mut guard) = self.by_hash.write() {
            guard.insert(key.hash.clone(), Arc::new(key));
        }
    }

    pub fn revoke(&self, id_or_alias: &str, now: i64) {
        if let Ok(mut guard) = self.by_hash.write() {
            for key in guard.values_mut().filter(|key| key.id == id_or_alias || key.alias == id_or_alias) {
                Arc::make_mut(key).revoked_at.get_or_insert(now);
            }
        }
    }

    pub fn find(&self, secret: &str) -> Option<Arc<ApiKey>> {
        self.find_hash(&hash_key(secret))
    }

    /// The key whose secret hashes to `hash`.
    pub fn find_hash(&self, hash: &str) -> Option<Arc<ApiKey>> {
        self.by_hash.read().ok()?.get(hash).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_hash.read().map_or(0, |guard| guard.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_hashed_and_found_by_secret() {
        let (secret, key) = NewKey { alias: "a".into(), team: "t".into(), ..NewKey::default() }.issue(0);
        assert!(secret.starts_with("sk-") && key.hash != secret && key.hash.len() == 64);
        let cache = KeyCache::default();
        cache.insert(key);
        assert_eq!(cache.find(&secret).map(|key| key.alias.clone()), Some("a".into()));
        assert!(cache.find("sk-wrong").is_none());
        cache.revoke("a", 5);
        assert!(!cache.find(&secret).is_some_and(|key| key.is_active(6)));
    }
}
