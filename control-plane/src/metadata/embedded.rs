//! The embedded metadata backend: one SQLite file (rusqlite, bundled), for a control
//! plane with no servers to talk to.

use std::path::Path;
use std::sync::Arc;

use rusqlite::types::{Value as SqlValue, ValueRef};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Database, MetadataError, Row, Tx, Value};

/// One connection behind a lock: SQLite has a single writer anyway, and the statements
/// are small, so running them inline costs less than hopping to a blocking thread.
pub struct EmbeddedDb {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl EmbeddedDb {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| MetadataError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(path).map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .map_err(map_err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

#[async_trait::async_trait]
impl Database for EmbeddedDb {
    async fn begin(&self) -> Result<Box<dyn Tx + '_>, MetadataError> {
        let conn = self.conn.clone().lock_owned().await;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
        Ok(Box::new(SqliteTx {
            conn,
            finished: false,
        }))
    }

    async fn migrate(&self) -> Result<(), MetadataError> {
        // BEGIN IMMEDIATE takes SQLite's write lock: other processes wait.
        let mut tx = self.begin().await?;
        super::migrations::apply(tx.as_mut()).await?;
        tx.commit().await
    }
}

struct SqliteTx {
    conn: OwnedMutexGuard<rusqlite::Connection>,
    finished: bool,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if !self.finished
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %e, "rolling back an embedded transaction failed");
        }
    }
}

/// SQLite reads `$1` as a *named* parameter; `?1` is positional, as intended.
fn positional(sql: &str) -> String {
    sql.replace('$', "?")
}

fn params(values: &[Value]) -> Vec<SqlValue> {
    values
        .iter()
        .map(|v| match v {
            Value::Int(n) => SqlValue::Integer(*n),
            Value::Text(s) => SqlValue::Text(s.clone()),
            Value::Null => SqlValue::Null,
        })
        .collect()
}

#[async_trait::async_trait]
impl Tx for SqliteTx {
    async fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, MetadataError> {
        let mut stmt = self
            .conn
            .prepare_cached(&positional(sql))
            .map_err(map_err)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params(values)))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_err)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i).map_err(map_err)? {
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Null => Value::Null,
                    other => {
                        return Err(MetadataError::Backend(format!(
                            "unexpected column type {:?}",
                            other.data_type()
                        )));
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    async fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, MetadataError> {
        let mut stmt = self
            .conn
            .prepare_cached(&positional(sql))
            .map_err(map_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params(values)))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), MetadataError> {
        self.finished = true;
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(map_err(e));
        }
        Ok(())
    }
}

fn map_err(e: rusqlite::Error) -> MetadataError {
    match &e {
        rusqlite::Error::SqliteFailure(code, _)
            if code.code == rusqlite::ErrorCode::ConstraintViolation
                && matches!(
                    code.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
        {
            MetadataError::Conflict("already exists".into())
        }
        _ => MetadataError::Backend(format!("SQLite: {e}")),
    }
}
