//! The SQL driver boundary: a transaction that runs `$n`-placeholder statements, which
//! PostgreSQL and SQLite both accept, and the typed reads of its rows.

use super::MetadataError;

/// A value crossing the driver boundary; every integer column is 64-bit.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
    Null,
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

pub type Row = Vec<Value>;

/// One open transaction. Dropping it without [`Tx::commit`] rolls it back.
#[async_trait::async_trait]
pub trait Tx: Send {
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, MetadataError>;
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, MetadataError>;
    async fn commit(self: Box<Self>) -> Result<(), MetadataError>;
}

/// A SQL backend. Statements use `$1, $2, …` in order of first use, which both
/// PostgreSQL and SQLite accept.
#[async_trait::async_trait]
pub trait Database: Send + Sync {
    /// A transaction (read committed is enough: writers to one app serialize on its row
    /// lock, taken first by every change).
    async fn begin(&self) -> Result<Box<dyn Tx + '_>, MetadataError>;
    /// Applies [`migrations::MIGRATIONS`] not yet applied, safe against other replicas
    /// migrating at the same moment.
    async fn migrate(&self) -> Result<(), MetadataError>;
}

pub(crate) fn first(rows: &[Row]) -> Result<&Row, MetadataError> {
    rows.first()
        .ok_or_else(|| MetadataError::Backend("expected a row, got none".into()))
}

pub(crate) fn text(row: &Row, i: usize) -> Result<String, MetadataError> {
    match row.get(i) {
        Some(Value::Text(s)) => Ok(s.clone()),
        other => Err(MetadataError::Backend(format!(
            "column {i}: expected text, got {other:?}"
        ))),
    }
}

pub(crate) fn int(row: &Row, i: usize) -> Result<i64, MetadataError> {
    match row.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        other => Err(MetadataError::Backend(format!(
            "column {i}: expected an integer, got {other:?}"
        ))),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
