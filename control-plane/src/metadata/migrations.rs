//! The schema, as numbered migrations shared by PostgreSQL and SQLite. Applied ones are
//! recorded in `schema_migrations`; a migration is never edited once released, only
//! followed by a new one.

/// `(version, statements)`, in order. Plain SQL that both backends accept: text ids,
/// 64-bit integers, millisecond timestamps.
pub const MIGRATIONS: &[(i64, &[&str])] = &[
    (
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
    ),
    (
        2,
        &[
            // Where an app runs and how many copies; `revision` grows with every change to
            // what serves it, so workers report readiness per revision.
            "ALTER TABLE apps ADD COLUMN pool TEXT NOT NULL DEFAULT 'default'",
            "ALTER TABLE apps ADD COLUMN replicas BIGINT NOT NULL DEFAULT 1",
            "ALTER TABLE apps ADD COLUMN revision BIGINT NOT NULL DEFAULT 1",
            "CREATE TABLE workers (
            id TEXT PRIMARY KEY,
            pool TEXT NOT NULL,
            labels TEXT NOT NULL,
            capacity BIGINT NOT NULL,
            version TEXT NOT NULL,
            http_address TEXT NOT NULL,
            state TEXT NOT NULL,
            registered_at BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            apps_ready BIGINT NOT NULL
        )",
            // One row per app per worker that should run it; `ready_revision` is the last
            // revision the worker reported ready (it keeps serving that one while a newer
            // one loads).
            "CREATE TABLE placements (
            app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
            worker_id TEXT NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
            created_at BIGINT NOT NULL,
            state TEXT NOT NULL,
            state_revision BIGINT NOT NULL,
            ready_revision BIGINT,
            message TEXT NOT NULL,
            PRIMARY KEY (app_id, worker_id)
        )",
            "CREATE INDEX placements_by_worker ON placements (worker_id)",
            // Grows with every change to what a pool's workers must hear.
            "CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            generation BIGINT NOT NULL
        )",
            // Leader leases (the scheduler's): a holder and when its claim lapses.
            "CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
        ],
    ),
    (
        3,
        &[
            // One row every route change updates first: it serializes route changes
            // across replicas (a row lock on PostgreSQL; SQLite has one writer), so
            // two apps can never both claim overlapping routes.
            "CREATE TABLE route_space (
            id BIGINT PRIMARY KEY,
            changes BIGINT NOT NULL
        )",
            "INSERT INTO route_space (id, changes) VALUES (1, 0)",
        ],
    ),
    (
        4,
        &[
            // Values every replica must agree on (the secrets key's check value).
            "CREATE TABLE settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )",
        ],
    ),
    (
        5,
        &[
            // The handlers a version exports (`http,message,timer`), checked against
            // the app's triggers by every change.
            "ALTER TABLE versions ADD COLUMN handlers TEXT NOT NULL DEFAULT 'http'",
            // One row per timer trigger and scheduled time: the unique key is what makes
            // a time fire once across every replica. `state` is `pending` (due at
            // `not_before_ms`), `running` (on `worker_id` until `deadline_ms`),
            // `succeeded` or `failed`.
            "CREATE TABLE timer_runs (
            id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL,
            trigger_name TEXT NOT NULL,
            scheduled_ms BIGINT NOT NULL,
            attempt BIGINT NOT NULL,
            state TEXT NOT NULL,
            not_before_ms BIGINT NOT NULL,
            worker_id TEXT,
            started_ms BIGINT,
            deadline_ms BIGINT,
            duration_ms BIGINT,
            message TEXT NOT NULL,
            max_attempts BIGINT NOT NULL,
            backoff_ms BIGINT NOT NULL,
            UNIQUE (app_id, trigger_name, scheduled_ms)
        )",
            "CREATE INDEX timer_runs_by_state ON timer_runs (state, not_before_ms)",
            // What each worker last reported of each queue trigger it consumes.
            "CREATE TABLE trigger_states (
            app_id TEXT NOT NULL,
            trigger_name TEXT NOT NULL,
            worker_id TEXT NOT NULL,
            failing TEXT NOT NULL,
            in_flight BIGINT NOT NULL,
            handled BIGINT NOT NULL,
            failed BIGINT NOT NULL,
            dead_lettered BIGINT NOT NULL,
            backlog BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (app_id, trigger_name, worker_id)
        )",
        ],
    ),
];

/// Creates the bookkeeping table; run under the backend's migration lock.
pub const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at BIGINT NOT NULL
)";

use super::{MetadataError, Tx, Value};

/// Applies what `schema_migrations` lacks, inside `tx`, which must already hold the
/// backend's migration lock.
pub async fn apply(tx: &mut dyn Tx) -> Result<(), MetadataError> {
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
