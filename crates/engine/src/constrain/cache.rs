//! A bounded map of compiled grammars, by constraint hash; the least recently used goes first.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use llguidance::Matcher;

pub struct GrammarCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<u64, (Matcher, u64)>,
    clock: u64,
}

impl GrammarCache {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::default() }
    }

    /// A fresh copy of the cached matcher.
    pub fn get(&self, key: u64) -> Option<Matcher> {
        let mut entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        entries.clock += 1;
        let now = entries.clock;
        let (matcher, used) = entries.map.get_mut(&key)?;
        *used = now;
        Some(matcher.deep_clone())
    }

    pub fn insert(&self, key: u64, matcher: Matcher) {
        let mut entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        entries.clock += 1;
        let now = entries.clock;
        if entries.map.len() >= self.capacity && !entries.map.contains_key(&key) {
            let oldest = entries.map.iter().min_by_key(|(_, (_, used))| *used).map(|(&key, _)| key);
            if let Some(oldest) = oldest {
                entries.map.remove(&oldest);
            }
        }
        entries.map.insert(key, (matcher, now));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).map.len()
    }
}
