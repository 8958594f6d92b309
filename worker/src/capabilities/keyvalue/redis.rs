//! Redis key-value provider: each namespace is one Redis hash, so `increment` is a native
//! `HINCRBY` and listing a namespace never scans other apps' keys.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{KeyPage, KeyValue, KvError, LIST_PAGE_SIZE};

const NAME: &str = "redis";
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// Swaps a hash field only if it still holds the expected value (or is absent).
const CAS_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur ~= false then return 0 end
elseif cur ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
"#;

pub struct RedisStore {
    conn: ConnectionManager,
    cas: redis::Script,
}

/// Refusals the guest can act on get their own WIT variant; the rest are `other`.
fn err(e: redis::RedisError) -> KvError {
    let denied = e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOPERM" | "NOAUTH" | "WRONGPASS"));
    if denied {
        KvError::AccessDenied(format!("{NAME}: {e}"))
    } else {
        KvError::provider(NAME, e)
    }
}

fn hash_key(ns: &str) -> String {
    format!("stratus:kv:{ns}")
}

impl RedisStore {
    /// Connects to `url`, with `password` (if given) instead of any in the URL.
    pub async fn connect(url: &str, password: Option<&str>) -> Result<Self, KvError> {
        // Errors and logs show the URL without its password.
        let shown = stratus_proto::providers::redacted_url(url);
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| KvError::provider(NAME, format!("invalid url `{shown}`: {e}")))?;
        if let Some(password) = password {
            info.redis.password = Some(password.to_string());
        }
        let client = redis::Client::open(info)
            .map_err(|e| KvError::provider(NAME, format!("invalid url `{shown}`: {e}")))?;
        // Bounded timeouts: a Redis that is down must give the guest an error, not a hang.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_number_of_retries(2);
        // The manager's own retries can outlast its timeouts; bound the first connect so a
        // dead server fails the binding promptly.
        let conn = tokio::time::timeout(
            CONNECT_DEADLINE,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            KvError::provider(
                NAME,
                format!("connecting to {shown}: no answer within {CONNECT_DEADLINE:?}"),
            )
        })?
        .map_err(|e| KvError::provider(NAME, format!("connecting to {shown}: {e}")))?;
        Ok(Self {
            conn,
            cas: redis::Script::new(CAS_SCRIPT),
        })
    }
}

#[async_trait::async_trait]
impl KeyValue for RedisStore {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.conn.clone().hget(hash_key(ns), key).await.map_err(err)
    }

    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.conn
            .clone()
            .hset::<_, _, _, ()>(hash_key(ns), key, value)
            .await
            .map_err(err)
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        self.conn
            .clone()
            .hdel::<_, _, ()>(hash_key(ns), key)
            .await
            .map_err(err)
    }

    async fn exists(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        self.conn
            .clone()
            .hexists(hash_key(ns), key)
            .await
            .map_err(err)
    }

    async fn list_keys(&self, ns: &str, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let cursor: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| KvError::InvalidCursor)?,
        };
        let (next, pairs): (u64, Vec<(String, redis::Value)>) = redis::cmd("HSCAN")
            .arg(hash_key(ns))
            .arg(cursor)
            .arg("COUNT")
            .arg(LIST_PAGE_SIZE)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        Ok(KeyPage {
            keys: pairs.into_iter().map(|(k, _)| k).collect(),
            cursor: (next != 0).then(|| next.to_string()),
        })
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        self.conn
            .clone()
            .hincr(hash_key(ns), key, delta)
            .await
            .map_err(|e| {
                let msg = e.to_string();
                if msg.contains("not an integer") {
                    KvError::NotAnInteger(key.to_string())
                } else if msg.contains("overflow") {
                    KvError::Overflow(key.to_string())
                } else {
                    err(e)
                }
            })
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        let swapped: i64 = self
            .cas
            .key(hash_key(ns))
            .arg(key)
            .arg(if expected.is_none() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        Ok(swapped == 1)
    }

    async fn get_many(&self, ns: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // HMGET always answers with an array, even for a single field.
        redis::cmd("HMGET")
            .arg(hash_key(ns))
            .arg(keys)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(err)
    }

    async fn set_many(&self, ns: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.conn
            .clone()
            .hset_multiple::<_, _, _, ()>(hash_key(ns), entries)
            .await
            .map_err(err)
    }

    async fn delete_many(&self, ns: &str, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.conn
            .clone()
            .hdel::<_, _, ()>(hash_key(ns), keys)
            .await
            .map_err(err)
    }
}
