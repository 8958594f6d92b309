//! In-memory key-value provider: process-local, for unit tests and throwaway dev runs.
//!
//! It lives in the worker's own memory, so it holds at most a set number of bytes (keys,
//! namespaces and values): a guest filling it gets a `limit` error, not a worker that
//! runs out of memory.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::{KeyPage, KeyValue, KvError, LIST_PAGE_SIZE, add_counter, parse_counter};

/// What a store holds unless its binding says otherwise (`max_mb`).
pub use stratus_proto::providers::MEMORY_DEFAULT_CAPACITY as DEFAULT_CAPACITY;

#[derive(Default)]
struct Map {
    entries: BTreeMap<(String, String), Vec<u8>>,
    /// Bytes of all namespaces, keys and values held.
    bytes: usize,
}

fn size(ns: &str, key: &str, value: &[u8]) -> usize {
    ns.len() + key.len() + value.len()
}

impl Map {
    fn get(&self, ns: &str, key: &str) -> Option<&Vec<u8>> {
        self.entries.get(&k(ns, key))
    }

    /// Stores `value` under the key if the store has room for it.
    fn insert(
        &mut self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        capacity: usize,
    ) -> Result<(), KvError> {
        let old = self.get(ns, key).map_or(0, |v| size(ns, key, v));
        let bytes = self.bytes - old + size(ns, key, &value);
        if bytes > capacity {
            return Err(KvError::Limit(format!(
                "the memory store is full ({} MiB); bind it with a larger max_mb or use another provider",
                capacity >> 20
            )));
        }
        self.entries.insert(k(ns, key), value);
        self.bytes = bytes;
        Ok(())
    }

    fn remove(&mut self, ns: &str, key: &str) {
        if let Some(value) = self.entries.remove(&k(ns, key)) {
            self.bytes -= size(ns, key, &value);
        }
    }
}

pub struct MemoryStore {
    map: Mutex<Map>,
    capacity: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// A store that holds at most `capacity` bytes of namespaces, keys and values.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            map: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map half-written (every
        // critical section is a single insert/remove), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn k(ns: &str, key: &str) -> (String, String) {
    (ns.to_string(), key.to_string())
}

#[async_trait::async_trait]
impl KeyValue for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.lock().get(ns, key).cloned())
    }

    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.lock().insert(ns, key, value.to_vec(), self.capacity)
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        self.lock().remove(ns, key);
        Ok(())
    }

    async fn exists(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.lock().get(ns, key).is_some())
    }

    async fn list_keys(&self, ns: &str, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let map = self.lock();
        let start = match cursor {
            Some(c) => Bound::Excluded(k(ns, c)),
            None => Bound::Included(k(ns, "")),
        };
        let mut keys: Vec<String> = map
            .entries
            .range((start, Bound::Unbounded))
            .take_while(|((n, _), _)| n == ns)
            .take(LIST_PAGE_SIZE + 1)
            .map(|((_, key), _)| key.clone())
            .collect();
        let cursor = if keys.len() > LIST_PAGE_SIZE {
            keys.truncate(LIST_PAGE_SIZE);
            keys.last().cloned()
        } else {
            None
        };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut map = self.lock();
        let next = add_counter(
            key,
            parse_counter(key, map.get(ns, key).map(Vec::as_slice))?,
            delta,
        )?;
        map.insert(ns, key, next.to_string().into_bytes(), self.capacity)?;
        Ok(next)
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        let mut map = self.lock();
        if map.get(ns, key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(ns, key, value.to_vec(), self.capacity)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn holds_up_to_its_capacity_and_frees_what_is_overwritten_or_deleted() {
        // Namespace "ns" and key "a": 3 bytes of every entry are its name.
        let store = MemoryStore::with_capacity(100);
        store.set("ns", "a", &[0; 60]).await.unwrap();
        let full = store.set("ns", "b", &[0; 35]).await.unwrap_err();
        assert!(
            matches!(full, KvError::Limit(ref m) if m.contains("full")),
            "{full}"
        );
        assert_eq!(
            store.get("ns", "b").await.unwrap(),
            None,
            "a refused set stored nothing"
        );
        assert!(
            store
                .compare_and_swap("ns", "b", None, &[0; 35])
                .await
                .is_err()
        );

        // Overwriting counts the new value instead of the old one.
        store.set("ns", "a", &[0; 97]).await.unwrap();
        assert!(store.set("ns", "a", &[0; 98]).await.is_err());
        assert_eq!(store.get("ns", "a").await.unwrap().unwrap().len(), 97);

        // Deleting gives the room back, exactly.
        store.delete("ns", "a").await.unwrap();
        store.set("ns", "b", &[0; 97]).await.unwrap();
        store.delete("ns", "b").await.unwrap();
        assert_eq!(store.lock().bytes, 0);
        store.increment("ns", "n", 5).await.unwrap();
        assert_eq!(store.lock().bytes, "ns".len() + "n".len() + "5".len());
    }
}
