//! The key-value capability: one trait, one file per provider, chosen by a type tag.
//!
//! A bucket opened by a guest maps to a provider *namespace* (`APP/BUCKET`), so two apps
//! bound to the same Redis or DynamoDB table never see each other's keys.

mod dynamo;
mod embedded;
pub mod host;
mod memory;
mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use crate::binding::{BindingError, ProviderSpec};

pub use self::dynamo::DynamoStore;
pub use self::embedded::EmbeddedStore;
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

pub use stratus_proto::interfaces::KvRevision;
pub use stratus_proto::providers::{DynamoConfig, KvProvider};

/// How many keys one `list-keys` page returns at most (a hint for Redis, whose `HSCAN`
/// may return a few more).
pub const LIST_PAGE_SIZE: usize = 1000;

/// Limits on what a guest may send or hold, the same on every provider so a component
/// that works on one works on all (DynamoDB's sort key caps keys at 1024 bytes).
pub mod limits {
    pub const MAX_KEY_BYTES: usize = 1024;
    pub const MAX_BUCKET_NAME_BYTES: usize = 256;
    pub const MAX_VALUE_BYTES: usize = 4 << 20;
    pub const MAX_BATCH_KEYS: usize = 1000;
    /// Bytes one `get-many` may return; bounds host memory whatever the guest asks.
    pub const MAX_BATCH_READ_BYTES: usize = 64 << 20;
    /// Bytes of values held by a guest's open compare-and-swap handles.
    pub const MAX_CAS_BYTES: usize = 64 << 20;
}

/// Errors a provider reports; they reach the guest as the WIT `error` variant.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("no such store: {0}")]
    NoSuchStore(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("value of key `{0}` is not a 64-bit integer")]
    NotAnInteger(String),
    #[error("increment of key `{0}` overflows a 64-bit integer")]
    Overflow(String),
    #[error("invalid list cursor")]
    InvalidCursor,
    #[error("{0}")]
    Limit(String),
    #[error("provider `{provider}` failed: {message}")]
    Provider {
        provider: &'static str,
        message: String,
    },
}

impl KvError {
    pub(crate) fn provider(provider: &'static str, err: impl std::fmt::Display) -> Self {
        KvError::Provider {
            provider,
            message: err.to_string(),
        }
    }
}

/// One page of keys and the cursor for the next page (`None` at the end).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

/// A key-value provider. Every method is scoped to a namespace.
///
/// Values written by `increment` are stored as decimal ASCII, so `get` after `increment`
/// returns e.g. `b"42"` and `increment` accepts a value previously `set` to decimal text.
#[async_trait::async_trait]
pub trait KeyValue: Send + Sync + 'static {
    /// The provider's type tag, for errors and logs.
    fn name(&self) -> &'static str;

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError>;
    async fn exists(&self, ns: &str, key: &str) -> Result<bool, KvError>;
    /// Lists keys after `cursor` (an opaque token from a previous page). Keys present for
    /// the whole listing are returned; on Redis a key may appear twice if the bucket is
    /// resized while it is being listed.
    async fn list_keys(&self, ns: &str, cursor: Option<&str>) -> Result<KeyPage, KvError>;
    /// Atomically adds `delta`, treating a missing key as 0; returns the new value.
    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Atomically sets `key` to `value` if its current value is still `expected`
    /// (`None` = absent). Returns whether the swap happened.
    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError>;

    async fn get_many(&self, ns: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(ns, key).await?);
        }
        Ok(out)
    }

    async fn set_many(&self, ns: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        for (key, value) in entries {
            self.set(ns, key, value).await?;
        }
        Ok(())
    }

    async fn delete_many(&self, ns: &str, keys: &[String]) -> Result<(), KvError> {
        for key in keys {
            self.delete(ns, key).await?;
        }
        Ok(())
    }
}

/// Parses a stored value as the integer `increment` works on.
pub(crate) fn parse_counter(key: &str, value: Option<&[u8]>) -> Result<i64, KvError> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| KvError::NotAnInteger(key.to_string())),
    }
}

pub(crate) fn add_counter(key: &str, current: i64, delta: i64) -> Result<i64, KvError> {
    current
        .checked_add(delta)
        .ok_or_else(|| KvError::Overflow(key.to_string()))
}

/// Increment as a compare-and-swap loop, for providers without a native counter.
pub(crate) async fn increment_by_cas<S: KeyValue + ?Sized>(
    store: &S,
    ns: &str,
    key: &str,
    delta: i64,
) -> Result<i64, KvError> {
    const ATTEMPTS: u32 = 64;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            // Contended: back off a little so writers do not burn the provider.
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt.min(10)))).await;
        }
        let current = store.get(ns, key).await?;
        let next = add_counter(key, parse_counter(key, current.as_deref())?, delta)?;
        if store
            .compare_and_swap(ns, key, current.as_deref(), next.to_string().as_bytes())
            .await?
        {
            return Ok(next);
        }
    }
    Err(KvError::provider(
        store.name(),
        format!("increment of `{key}` lost {ATTEMPTS} compare-and-swap races in a row"),
    ))
}

/// Connects (or opens) a checked provider.
pub async fn open(
    provider: KvProvider,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn KeyValue>, KvError> {
    Ok(match provider {
        KvProvider::Memory { capacity } => Arc::new(MemoryStore::with_capacity(capacity)),
        KvProvider::Embedded { path } => Arc::new(EmbeddedStore::open(
            &path.unwrap_or_else(|| data_dir.join("kv.redb")),
        )?),
        KvProvider::Redis { url, password } => {
            Arc::new(RedisStore::connect(&url, password.as_ref().map(|p| p.expose())).await?)
        }
        KvProvider::Dynamo(config) => Arc::new(DynamoStore::connect(config).await?),
    })
}

/// Opens the provider a binding names, failing on unknown providers or options.
pub async fn open_provider(
    spec: &ProviderSpec,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn KeyValue>, OpenError> {
    Ok(open(KvProvider::parse(spec)?, data_dir).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Binding(#[from] BindingError),
    #[error(transparent)]
    Provider(#[from] KvError),
    /// The same failure, for every app that waited on one attempt to open a provider.
    #[error(transparent)]
    Shared(Arc<OpenError>),
    #[error("binding `{0}`: {1}")]
    Messaging(String, String),
}

/// The key-value providers bound for one app: a default and per-bucket overrides.
#[derive(Clone, Default)]
pub struct KvBindings {
    pub default: Option<Arc<dyn KeyValue>>,
    pub buckets: HashMap<String, Arc<dyn KeyValue>>,
}

impl KvBindings {
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.buckets.is_empty()
    }

    pub fn resolve(&self, bucket: &str) -> Option<Arc<dyn KeyValue>> {
        self.buckets.get(bucket).or(self.default.as_ref()).cloned()
    }
}
