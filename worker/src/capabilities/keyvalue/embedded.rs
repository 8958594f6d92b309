//! Embedded on-disk key-value provider (redb): the default for local use, no server needed.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{KeyPage, KeyValue, KvError, LIST_PAGE_SIZE, add_counter, parse_counter};

/// One table keyed by `(namespace, key)`, so a namespace is a contiguous key range.
const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");

pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn err(e: impl Into<redb::Error>) -> KvError {
    KvError::provider("embedded", e.into())
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, KvError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                KvError::provider("embedded", format!("creating {}: {e}", dir.display()))
            })?;
        }
        let db = Database::create(path).map_err(|e| {
            KvError::provider("embedded", format!("opening {}: {e}", path.display()))
        })?;
        // Create the table up front so read transactions never see it missing.
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(TABLE).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// redb is synchronous (and fsyncs on commit): run it off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| KvError::provider("embedded", e))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, (&str, &str), &[u8]>) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let out = {
                let mut table = txn.open_table(TABLE).map_err(err)?;
                f(&mut table)?
            };
            txn.commit().map_err(err)?;
            Ok(out)
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<(&str, &str), &[u8]>) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TABLE).map_err(err)?;
            f(&table)
        })
        .await
    }
}

fn current(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, KvError> {
    Ok(table
        .get((ns, key))
        .map_err(err)?
        .map(|v| v.value().to_vec()))
}

#[async_trait::async_trait]
impl KeyValue for EmbeddedStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.read(move |t| current(t, &ns, &key)).await
    }

    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let (ns, key, value) = (ns.to_string(), key.to_string(), value.to_vec());
        self.write(move |t| {
            t.insert((ns.as_str(), key.as_str()), value.as_slice())
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.write(move |t| {
            t.remove((ns.as_str(), key.as_str())).map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn exists(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.get(ns, key).await?.is_some())
    }

    async fn list_keys(&self, ns: &str, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let (ns, cursor) = (ns.to_string(), cursor.map(str::to_string));
        self.read(move |t| {
            let start = match &cursor {
                Some(c) => Bound::Excluded((ns.as_str(), c.as_str())),
                None => Bound::Included((ns.as_str(), "")),
            };
            let mut keys = Vec::new();
            for entry in t
                .range::<(&str, &str)>((start, Bound::Unbounded))
                .map_err(err)?
            {
                let (k, _) = entry.map_err(err)?;
                let (entry_ns, key) = k.value();
                if entry_ns != ns {
                    break;
                }
                if keys.len() == LIST_PAGE_SIZE {
                    let cursor = keys.last().cloned();
                    return Ok(KeyPage { keys, cursor });
                }
                keys.push(key.to_string());
            }
            Ok(KeyPage { keys, cursor: None })
        })
        .await
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.write(move |t| {
            let now = parse_counter(&key, current(t, &ns, &key)?.as_deref())?;
            let next = add_counter(&key, now, delta)?;
            t.insert((ns.as_str(), key.as_str()), next.to_string().as_bytes())
                .map_err(err)?;
            Ok(next)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        let (ns, key, value) = (ns.to_string(), key.to_string(), value.to_vec());
        let expected = expected.map(<[u8]>::to_vec);
        self.write(move |t| {
            if current(t, &ns, &key)? != expected {
                return Ok(false);
            }
            t.insert((ns.as_str(), key.as_str()), value.as_slice())
                .map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn set_many(&self, ns: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let (ns, entries) = (ns.to_string(), entries.to_vec());
        self.write(move |t| {
            for (key, value) in &entries {
                t.insert((ns.as_str(), key.as_str()), value.as_slice())
                    .map_err(err)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_many(&self, ns: &str, keys: &[String]) -> Result<(), KvError> {
        let (ns, keys) = (ns.to_string(), keys.to_vec());
        self.write(move |t| {
            for key in &keys {
                t.remove((ns.as_str(), key.as_str())).map_err(err)?;
            }
            Ok(())
        })
        .await
    }
}
