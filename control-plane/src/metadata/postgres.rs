//! The PostgreSQL metadata backend (tokio-postgres with a deadpool connection pool).

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, error::SqlState};

use super::{Database, MetadataError, Row, Tx, Value};

/// Serializes schema migrations across control-plane replicas sharing a database.
const MIGRATION_LOCK: i64 = 0x0053_5452_4154_5553; // "STRATUS"

pub struct PostgresDb {
    pool: Pool,
    schema: Option<String>,
}

impl PostgresDb {
    /// `url` is a libpq-style URL or key=value string; `schema`, if set, is created on
    /// migration and used as the search path, so several stacks can share one database.
    pub fn connect(url: &str, schema: Option<&str>) -> Result<Self, MetadataError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| MetadataError::Backend(format!("invalid Postgres URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(5));
        if let Some(schema) = schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(MetadataError::Backend(format!(
                    "invalid schema name `{schema}`: use letters, digits and `_`"
                )));
            }
            config.options(format!("-c search_path={schema}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| MetadataError::Backend(format!("building the Postgres pool: {e}")))?;
        Ok(Self {
            pool,
            schema: schema.map(str::to_string),
        })
    }
}

#[async_trait::async_trait]
impl Database for PostgresDb {
    async fn begin(&self) -> Result<Box<dyn Tx + '_>, MetadataError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| MetadataError::Backend(format!("Postgres unavailable: {e}")))?;
        client.batch_execute("BEGIN").await.map_err(map_err)?;
        Ok(Box::new(PgTx {
            client: Some(client),
        }))
    }

    async fn migrate(&self) -> Result<(), MetadataError> {
        let mut tx = self.begin().await?;
        tx.query(
            "SELECT pg_advisory_xact_lock($1)",
            &[Value::Int(MIGRATION_LOCK)],
        )
        .await?;
        if let Some(schema) = &self.schema {
            tx.execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"), &[])
                .await?;
        }
        super::migrations::apply(tx.as_mut()).await?;
        tx.commit().await
    }
}

struct PgTx {
    /// `None` once committed.
    client: Option<Object>,
}

impl PgTx {
    fn client(&self) -> Result<&Object, MetadataError> {
        self.client
            .as_ref()
            .ok_or_else(|| MetadataError::Backend("transaction already finished".into()))
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        // Not committed (an error or a NotFound path): roll back before the connection
        // goes back to the pool; without a runtime, close it and let the server roll back.
        if let Some(client) = self.client.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        if client.batch_execute("ROLLBACK").await.is_err() {
                            drop(Object::take(client));
                        }
                    });
                }
                Err(_) => drop(Object::take(client)),
            }
        }
    }
}

#[async_trait::async_trait]
impl Tx for PgTx {
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, MetadataError> {
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await.map_err(map_err)?;
        let owned = to_sql(params);
        let rows = client.query(&stmt, &refs(&owned)).await.map_err(map_err)?;
        rows.iter().map(from_row).collect()
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, MetadataError> {
        let client = self.client()?;
        if params.is_empty() {
            // DDL and the like: no statement to cache.
            client.batch_execute(sql).await.map_err(map_err)?;
            return Ok(0);
        }
        let stmt = client.prepare_cached(sql).await.map_err(map_err)?;
        let owned = to_sql(params);
        client.execute(&stmt, &refs(&owned)).await.map_err(map_err)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), MetadataError> {
        let client = self
            .client
            .take()
            .ok_or_else(|| MetadataError::Backend("transaction already finished".into()))?;
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => {
                drop(Object::take(client));
                Err(map_err(e))
            }
        }
    }
}

fn to_sql(params: &[Value]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Value::Int(n) => Box::new(*n),
                Value::Text(s) => Box::new(s.clone()),
                Value::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

fn refs(owned: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    owned
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn from_row(row: &tokio_postgres::Row) -> Result<Row, MetadataError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|n| Value::Int(n.into()))),
            Type::TEXT | Type::VARCHAR => row
                .try_get::<_, Option<String>>(i)
                .map(|v| v.map(Value::Text)),
            Type::VOID => Ok(None),
            ref other => {
                return Err(MetadataError::Backend(format!(
                    "unexpected column type {other} in result"
                )));
            }
        }
        .map_err(map_err)?;
        out.push(value.unwrap_or(Value::Null));
    }
    Ok(out)
}

fn map_err(e: tokio_postgres::Error) -> MetadataError {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::UNIQUE_VIOLATION => MetadataError::Conflict(format!(
            "already exists ({})",
            db.constraint().unwrap_or("unique key")
        )),
        Some(db) => MetadataError::Backend(format!("Postgres: {}", db.message())),
        None => MetadataError::Backend(format!("Postgres: {e}")),
    }
}
