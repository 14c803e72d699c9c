//! The in-process index: exact cosine search within one partition (partitions keep each
//! search small), entries that expire, and a bound on their number (least recently used
//! first out).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// One cached answer and the vector of the question it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Unique across replicas (the shared backend's row id).
    pub id: String,
    pub partition: String,
    /// Unit length.
    pub vector: Vec<f32>,
    /// The endpoint's full response, as JSON.
    pub response: Arc<Vec<u8>>,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
}

/// The nearest entry of a partition.
#[derive(Debug, Clone)]
pub struct Neighbour {
    pub id: String,
    pub similarity: f32,
    pub response: Arc<Vec<u8>>,
}

pub struct Index {
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The entries of each partition, searched in place.
    partitions: HashMap<String, Vec<Slot>>,
    /// Each entry's partition, by id.
    partition_of: HashMap<String, String>,
    /// Entry ids by last use, oldest first.
    by_use: BTreeMap<u64, String>,
    clock: u64,
}

struct Slot {
    entry: Entry,
    used: u64,
}

impl Index {
    pub fn new(max_entries: usize) -> Self {
        Self { max_entries: max_entries.max(1), inner: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().partition_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().partition_of.contains_key(id)
    }

    /// Adds an entry (one already there or already expired is ignored), evicting the least
    /// recently used beyond the bound.
    pub fn insert(&self, entry: Entry, now_ms: i64) {
        if entry.expires_at_ms <= now_ms {
            return;
        }
        let mut inner = self.lock();
        if inner.partition_of.contains_key(&entry.id) {
            return;
        }
        while inner.partition_of.len() >= self.max_entries {
            let Some((_, oldest)) = inner.by_use.pop_first() else { break };
            inner.remove(&oldest);
        }
        let used = inner.tick();
        inner.by_use.insert(used, entry.id.clone());
        inner.partition_of.insert(entry.id.clone(), entry.partition.clone());
        inner.partitions.entry(entry.partition.clone()).or_default().push(Slot { entry, used });
    }

    /// The most similar live entry of `partition` (expired ones are dropped on the way).
    pub fn nearest(&self, partition: &str, vector: &[f32], now_ms: i64) -> Option<Neighbour> {
        let mut inner = self.lock();
        let slots = inner.partitions.get(partition)?;
        let mut best: Option<(f32, &Entry)> = None;
        let mut expired = Vec::new();
        for slot in slots {
            if slot.entry.expires_at_ms <= now_ms {
                expired.push(slot.entry.id.clone());
                continue;
            }
            let similarity = dot(&slot.entry.vector, vector);
            if best.is_none_or(|(top, _)| similarity > top) {
                best = Some((similarity, &slot.entry));
            }
        }
        let found = best.map(|(similarity, entry)| Neighbour {
            id: entry.id.clone(),
            similarity,
            response: entry.response.clone(),
        });
        for id in expired {
            inner.remove(&id);
        }
        found
    }

    /// Marks an entry as just used (a hit), so it is evicted last.
    pub fn touch(&self, id: &str) {
        let mut inner = self.lock();
        let used = inner.tick();
        let Some(slot) = inner.slot_mut(id) else { return };
        let before = std::mem::replace(&mut slot.used, used);
        inner.by_use.remove(&before);
        inner.by_use.insert(used, id.to_string());
    }

    /// Drops every expired entry.
    pub fn purge(&self, now_ms: i64) {
        let mut inner = self.lock();
        let all = inner.partitions.values().flatten();
        let expired: Vec<String> =
            all.filter(|slot| slot.entry.expires_at_ms <= now_ms).map(|slot| slot.entry.id.clone()).collect();
        for id in expired {
            inner.remove(&id);
        }
    }
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn slot_mut(&mut self, id: &str) -> Option<&mut Slot> {
        let partition = self.partition_of.get(id)?;
        self.partitions.get_mut(partition)?.iter_mut().find(|slot| slot.entry.id == id)
    }

    fn remove(&mut self, id: &str) {
        let Some(partition) = self.partition_of.remove(id) else { return };
        let Some(slots) = self.partitions.get_mut(&partition) else { return };
        if let Some(at) = slots.iter().position(|slot| slot.entry.id == id) {
            let slot = slots.swap_remove(at);
            self.by_use.remove(&slot.used);
        }
        if slots.is_empty() {
            self.partitions.remove(&partition);
        }
    }
}

/// Cosine similarity of two unit vectors (0 when their lengths differ). Eight running sums,
/// so the compiler can use vector lanes (one sum is a chain of dependent adds).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum();
    let mut lanes = [0.0f32; 8];
    for (x, y) in chunks_a.zip(chunks_b) {
        for (lane, (x, y)) in lanes.iter_mut().zip(x.iter().zip(y)) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `vector` scaled to unit length (unchanged when it is all zeros); what tests' embedders return.
#[cfg(test)]
pub(crate) fn normalized(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(id: &str, partition: &str, vector: Vec<f32>, expires_at_ms: i64) -> Entry {
        let response = Arc::new(id.as_bytes().to_vec());
        Entry { id: id.into(), partition: partition.into(), vector: normalized(vector), response, expires_at_ms }
    }

    #[test]
    fn the_nearest_entry_of_the_partition_is_found_and_others_never() {
        let index = Index::new(10);
        index.insert(entry("a", "p", vec![1.0, 0.0], 100), 0);
        index.insert(entry("b", "p", vec![0.6, 0.8], 100), 0);
        index.insert(entry("c", "q", vec![0.0, 1.0], 100), 0);
        let best = index.nearest("p", &[0.0, 1.0], 0).unwrap();
        assert_eq!(best.id, "b");
        assert!((best.similarity - 0.8).abs() < 1e-6);
        assert!(index.nearest("r", &[0.0, 1.0], 0).is_none());
    }

    #[test]
    fn dot_adds_every_dimension_including_the_tail() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| (i % 3) as f32).collect();
        let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), expected);
        assert_eq!(dot(&a, &b[..18]), 0.0);
    }

    #[test]
    fn expired_entries_are_never_found_and_are_dropped() {
        let index = Index::new(10);
        index.insert(entry("a", "p", vec![1.0], 50), 0);
        index.insert(entry("late", "p", vec![1.0], 50), 60);
        assert_eq!(index.len(), 1);
        assert!(index.nearest("p", &[1.0], 49).is_some());
        assert!(index.nearest("p", &[1.0], 50).is_none());
        assert!(index.is_empty());
    }

    #[test]
    fn beyond_the_bound_the_least_recently_used_goes_first() {
        let index = Index::new(2);
        index.insert(entry("a", "p", vec![1.0, 0.0], 100), 0);
        index.insert(entry("b", "p", vec![0.0, 1.0], 100), 0);
        index.touch("a");
        index.insert(entry("c", "q", vec![1.0, 0.0], 100), 0);
        assert_eq!(index.len(), 2);
        assert!(index.contains("a") && index.contains("c") && !index.contains("b"));
        index.insert(entry("a", "p", vec![0.0, 1.0], 100), 0);
        assert_eq!(index.nearest("p", &[1.0, 0.0], 0).unwrap().similarity, 1.0, "a known id is kept as it was");
    }
}
