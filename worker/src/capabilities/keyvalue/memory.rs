//! In-memory key-value provider: process-local, for unit tests and throwaway dev runs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::{KeyPage, KeyValue, KvError, LIST_PAGE_SIZE, add_counter, parse_counter};

type Map = BTreeMap<(String, String), Vec<u8>>;

#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<Map>,
}

impl MemoryStore {
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
        Ok(self.lock().get(&k(ns, key)).cloned())
    }

    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.lock().insert(k(ns, key), value.to_vec());
        Ok(())
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        self.lock().remove(&k(ns, key));
        Ok(())
    }

    async fn exists(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.lock().contains_key(&k(ns, key)))
    }

    async fn list_keys(&self, ns: &str, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let map = self.lock();
        let start = match cursor {
            Some(c) => Bound::Excluded(k(ns, c)),
            None => Bound::Included(k(ns, "")),
        };
        let mut keys: Vec<String> = map
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
        let key_ = k(ns, key);
        let next = add_counter(
            key,
            parse_counter(key, map.get(&key_).map(Vec::as_slice))?,
            delta,
        )?;
        map.insert(key_, next.to_string().into_bytes());
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
        let key = k(ns, key);
        if map.get(&key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(key, value.to_vec());
        Ok(true)
    }
}
