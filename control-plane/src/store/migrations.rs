//! The schema, as numbered migrations shared by PostgreSQL and SQLite. Applied ones are
//! recorded in `schema_migrations`; a migration is never edited once released, only
//! followed by a new one.

/// `(version, statements)`, in order. Plain SQL that both backends accept: text ids,
/// 64-bit integers, millisecond timestamps.
pub const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE apps (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants (id),
            name TEXT NOT NULL,
            live_version BIGINT,
            next_version BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE (tenant, name)
        )",
        "CREATE TABLE versions (
            app_id TEXT NOT NULL REFERENCES apps (id),
            number BIGINT NOT NULL,
            digest TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            imports TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (app_id, number)
        )",
        "CREATE TABLE bindings (
            app_id TEXT NOT NULL REFERENCES apps (id),
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            PRIMARY KEY (app_id, name)
        )",
        // One table for every trigger kind; `key` is what must be unique per kind (an
        // HTTP route now, a queue or schedule name later), `spec` the kind's settings.
        "CREATE TABLE triggers (
            app_id TEXT NOT NULL REFERENCES apps (id),
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            spec TEXT NOT NULL,
            PRIMARY KEY (kind, key)
        )",
        "CREATE INDEX triggers_by_app ON triggers (app_id)",
    ],
)];

/// Creates the bookkeeping table; run under the backend's migration lock.
pub const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at BIGINT NOT NULL
)";

use super::{StoreError, Tx, Value};

/// Applies what `schema_migrations` lacks, inside `tx`, which must already hold the
/// backend's migration lock.
pub async fn apply(tx: &mut dyn Tx) -> Result<(), StoreError> {
    tx.execute(CREATE_LEDGER, &[]).await?;
    let applied: Vec<i64> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .filter_map(|row| match row.first() {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        })
        .collect();
    for (version, statements) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for sql in *statements {
            tx.execute(sql, &[]).await?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[(*version).into(), super::now().into()],
        )
        .await?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}
