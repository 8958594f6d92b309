//! App metadata: tenants, apps, immutable versions, bindings, triggers and which version
//! is live, written once over a minimal SQL driver trait that Postgres and the embedded
//! SQLite file both implement, so both backends run the same queries and rules.

mod embedded;
mod migrations;
mod postgres;
mod records;
mod rules;
mod scheduling;
mod sql;
mod timers;
mod workers;

use std::sync::Arc;

use stratus_proto::binding::Binding;
use stratus_proto::interfaces::Handler;

pub use self::embedded::EmbeddedDb;
pub use self::postgres::PostgresDb;
pub use self::records::{App, AppChange, Deployment, NewVersion, Page, Replicas, Version};
use self::rules::{apply_change, check_routes};
pub use self::scheduling::{AppSlot, Cluster, PassReport, Placement, PlacementChanges, WorkerSlot};
pub use self::sql::{Database, Row, Tx, Value};
use self::sql::{first, int, now, text};
pub use self::timers::{PendingRun, QueueState, RunRecord, TimerRow};
pub use self::workers::{AppStatus, PlacementStatus, WorkerInfo, WorkerRecord, WorkerState};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The change would leave the app unable to run; `code` is the API error code.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("metadata store: {0}")]
    Backend(String),
}

/// The metadata store: every query is scoped by tenant, so ids from another tenant
/// simply do not exist.
#[derive(Clone)]
pub struct Metadata {
    db: Arc<dyn Database>,
}

const APP_COLUMNS: &str =
    "id, name, live_version, created_at, updated_at, pool, replicas, revision";

impl Metadata {
    pub async fn new(db: Arc<dyn Database>) -> Result<Self, MetadataError> {
        db.migrate().await?;
        Ok(Self { db })
    }

    pub async fn create_app(&self, tenant: &str, name: &str) -> Result<App, MetadataError> {
        let mut tx = self.db.begin().await?;
        ensure_tenant(tx.as_mut(), tenant).await?;
        let Some(id) = insert_app(tx.as_mut(), tenant, name).await? else {
            return Err(MetadataError::Conflict(format!(
                "app `{name}` already exists"
            )));
        };
        let app = load_app(tx.as_mut(), &id).await?;
        tx.commit().await?;
        Ok(app)
    }

    pub async fn get_app(&self, tenant: &str, name: &str) -> Result<App, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = app_id(tx.as_mut(), tenant, name).await?;
        let app = load_app(tx.as_mut(), &id).await?;
        tx.commit().await?;
        Ok(app)
    }

    pub async fn list_apps(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<App>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT id, name FROM apps WHERE tenant = $1 AND name > $2 ORDER BY name LIMIT $3",
                &[
                    tenant.into(),
                    after.unwrap_or("").into(),
                    i64::from(limit).into(),
                ],
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(load_app(tx.as_mut(), &text(row, 0)?).await?);
        }
        tx.commit().await?;
        let next_cursor = next_cursor(&items, limit, |a| a.name.clone());
        Ok(Page { items, next_cursor })
    }

    /// Deletes the app with its versions, bindings and triggers. Component bytes stay
    /// in the registry: they are content-addressed and may be shared.
    pub async fn delete_app(&self, tenant: &str, name: &str) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = lock_app(tx.as_mut(), tenant, name).await?;
        workers::bump_app_pool(tx.as_mut(), &id).await?;
        for table in [
            "placements",
            "triggers",
            "bindings",
            "versions",
            "timer_runs",
            "trigger_states",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE app_id = $1"),
                &[id.as_str().into()],
            )
            .await?;
        }
        tx.execute("DELETE FROM apps WHERE id = $1", &[id.as_str().into()])
            .await?;
        tx.commit().await
    }

    /// Adds a version (creating the app if needed), applies `change` and, if `activate`,
    /// makes the new version live, all in one transaction: a refused deploy stores nothing.
    pub async fn add_version(
        &self,
        tenant: &str,
        name: &str,
        new: NewVersion,
        mut change: AppChange,
        activate: bool,
    ) -> Result<(App, Version), MetadataError> {
        let mut tx = self.db.begin().await?;
        ensure_tenant(tx.as_mut(), tenant).await?;
        // Two first deploys of one app race here: one inserts, both then lock the row.
        insert_app(tx.as_mut(), tenant, name).await?;
        let id = lock_app(tx.as_mut(), tenant, name).await?;
        let rows = tx
            .query(
                "UPDATE apps SET next_version = next_version + 1 WHERE id = $1 RETURNING next_version - 1",
                &[id.as_str().into()],
            )
            .await?;
        let number = int(first(&rows)?, 0)?;
        let imports = serde_json::to_string(&new.imports)
            .map_err(|e| MetadataError::Backend(format!("encoding imports: {e}")))?;
        tx.execute(
            "INSERT INTO versions (app_id, number, digest, size_bytes, imports, created_at, handlers) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                id.as_str().into(),
                number.into(),
                new.digest.as_str().into(),
                new.size_bytes.into(),
                imports.into(),
                now().into(),
                encode_handlers(&new.handlers).into(),
            ],
        )
        .await?;
        if activate {
            change.live_version = Some(number);
        }
        apply_change(tx.as_mut(), &id, change).await?;
        let app = load_app(tx.as_mut(), &id).await?;
        let version = load_version(tx.as_mut(), &id, number).await?;
        tx.commit().await?;
        Ok((app, version))
    }

    /// Read-only: whether `routes` would conflict, so a deploy can be refused before its
    /// bytes are stored. The transaction of the change checks again.
    pub async fn check_routes(
        &self,
        tenant: &str,
        name: &str,
        routes: &[String],
    ) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = find_app(tx.as_mut(), tenant, name)
            .await?
            .unwrap_or_default();
        check_routes(tx.as_mut(), &id, routes).await?;
        tx.commit().await
    }

    /// The setting `name`: the one stored, or `value` when none was (the first replica
    /// to start sets it).
    pub async fn setting_or_insert(
        &self,
        name: &str,
        value: &str,
    ) -> Result<String, MetadataError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[name.into(), value.into()],
        )
        .await?;
        let rows = tx
            .query("SELECT value FROM settings WHERE name = $1", &[name.into()])
            .await?;
        tx.commit().await?;
        text(first(&rows)?, 0)
    }

    /// Every digest some version references.
    pub async fn referenced_digests(
        &self,
    ) -> Result<std::collections::HashSet<String>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query("SELECT DISTINCT digest FROM versions", &[])
            .await?;
        tx.commit().await?;
        rows.iter().map(|r| text(r, 0)).collect()
    }

    /// Whether any app of `tenant` has a version with these bytes. Deploy reports
    /// deduplication per tenant, so it never reveals what other tenants uploaded.
    pub async fn tenant_has_digest(
        &self,
        tenant: &str,
        digest: &str,
    ) -> Result<bool, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT 1 FROM versions v JOIN apps a ON a.id = v.app_id WHERE a.tenant = $1 AND v.digest = $2 LIMIT 1",
                &[tenant.into(), digest.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(!rows.is_empty())
    }

    pub async fn list_versions(
        &self,
        tenant: &str,
        name: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<Version>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = app_id(tx.as_mut(), tenant, name).await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE app_id = $1 AND number > $2 ORDER BY number LIMIT $3"
                ),
                &[
                    id.as_str().into(),
                    after.unwrap_or(0).into(),
                    i64::from(limit).into(),
                ],
            )
            .await?;
        tx.commit().await?;
        let items = rows
            .iter()
            .map(version_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = next_cursor(&items, limit, |v| v.version.to_string());
        Ok(Page { items, next_cursor })
    }

    pub async fn get_version(
        &self,
        tenant: &str,
        name: &str,
        number: i64,
    ) -> Result<Version, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = app_id(tx.as_mut(), tenant, name).await?;
        let version = load_version(tx.as_mut(), &id, number).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Applies `change` if the result still runs: every import of the live version bound.
    pub async fn update_app(
        &self,
        tenant: &str,
        name: &str,
        change: AppChange,
    ) -> Result<App, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = lock_app(tx.as_mut(), tenant, name).await?;
        apply_change(tx.as_mut(), &id, change).await?;
        let app = load_app(tx.as_mut(), &id).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// The live deployment of one app, if it has a live version.
    pub async fn deployment(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Deployment>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = app_id(tx.as_mut(), tenant, name).await?;
        let deployment = deployment_of(tx.as_mut(), tenant, &id).await?;
        tx.commit().await?;
        Ok(deployment)
    }

    /// Every live deployment of every tenant: what workers must run.
    pub async fn deployments(&self) -> Result<Vec<Deployment>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT tenant, id FROM apps WHERE live_version IS NOT NULL ORDER BY tenant, name",
                &[],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(d) = deployment_of(tx.as_mut(), &text(row, 0)?, &text(row, 1)?).await? {
                out.push(d);
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

const VERSION_COLUMNS: &str = "number, digest, size_bytes, imports, created_at, handlers";

fn encode_handlers(handlers: &[Handler]) -> String {
    handlers
        .iter()
        .map(|h| h.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_handlers(stored: &str) -> Vec<Handler> {
    stored.split(',').filter_map(Handler::parse).collect()
}

async fn deployment_of(
    tx: &mut dyn Tx,
    tenant: &str,
    id: &str,
) -> Result<Option<Deployment>, MetadataError> {
    let app = load_app(tx, id).await?;
    let Some(live) = app.live_version else {
        return Ok(None);
    };
    let version = load_version(tx, id, live).await?;
    Ok(Some(Deployment {
        tenant: tenant.to_string(),
        app,
        version,
    }))
}

async fn ensure_tenant(tx: &mut dyn Tx, tenant: &str) -> Result<(), MetadataError> {
    tx.execute(
        "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        &[tenant.into(), now().into()],
    )
    .await?;
    Ok(())
}

/// Inserts the app unless it exists; `None` if it did.
async fn insert_app(
    tx: &mut dyn Tx,
    tenant: &str,
    name: &str,
) -> Result<Option<String>, MetadataError> {
    let id = uuid::Uuid::new_v4().to_string();
    let inserted = tx
        .query(
            "INSERT INTO apps (id, tenant, name, next_version, created_at, updated_at, revision) VALUES ($1, $2, $3, 1, $4, $4, $4) ON CONFLICT (tenant, name) DO NOTHING RETURNING id",
            &[id.as_str().into(), tenant.into(), name.into(), now().into()],
        )
        .await?;
    Ok(inserted.first().map(|_| id))
}

/// Finds the app and takes its row lock for the rest of the transaction, so changes
/// to one app (bindings read-modify-write, version numbers) never interleave.
async fn lock_app(tx: &mut dyn Tx, tenant: &str, name: &str) -> Result<String, MetadataError> {
    let rows = tx
        .query(
            "UPDATE apps SET updated_at = updated_at WHERE tenant = $1 AND name = $2 RETURNING id",
            &[tenant.into(), name.into()],
        )
        .await?;
    match rows.first() {
        Some(row) => text(row, 0),
        None => Err(MetadataError::NotFound(format!("app `{name}`"))),
    }
}

async fn find_app(
    tx: &mut dyn Tx,
    tenant: &str,
    name: &str,
) -> Result<Option<String>, MetadataError> {
    let rows = tx
        .query(
            "SELECT id FROM apps WHERE tenant = $1 AND name = $2",
            &[tenant.into(), name.into()],
        )
        .await?;
    rows.first().map(|r| text(r, 0)).transpose()
}

async fn app_id(tx: &mut dyn Tx, tenant: &str, name: &str) -> Result<String, MetadataError> {
    find_app(tx, tenant, name)
        .await?
        .ok_or_else(|| MetadataError::NotFound(format!("app `{name}`")))
}

async fn load_app(tx: &mut dyn Tx, id: &str) -> Result<App, MetadataError> {
    let rows = tx
        .query(
            &format!("SELECT {APP_COLUMNS} FROM apps WHERE id = $1"),
            &[id.into()],
        )
        .await?;
    let row = first(&rows)?;
    let bindings = load_bindings(tx, id).await?;
    let routes = tx
        .query(
            "SELECT key FROM triggers WHERE app_id = $1 AND kind = 'http' ORDER BY key",
            &[id.into()],
        )
        .await?
        .iter()
        .map(|r| text(r, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let queues = load_triggers(tx, id, "queue").await?;
    let timers = load_triggers(tx, id, "timer").await?;
    Ok(App {
        name: text(row, 1)?,
        live_version: match row.get(2) {
            Some(Value::Null) | None => None,
            Some(_) => Some(int(row, 2)?),
        },
        bindings: bindings.iter().map(ToString::to_string).collect(),
        routes,
        queues,
        timers,
        pool: text(row, 5)?,
        replicas: Replicas::from_db(int(row, 6)?),
        revision: int(row, 7)?,
        created_at: int(row, 3)?,
        updated_at: int(row, 4)?,
    })
}

/// An app's triggers of one kind other than HTTP, as their canonical specs.
async fn load_triggers(
    tx: &mut dyn Tx,
    id: &str,
    kind: &str,
) -> Result<Vec<String>, MetadataError> {
    tx.query(
        "SELECT spec FROM triggers WHERE app_id = $1 AND kind = $2 ORDER BY key",
        &[id.into(), kind.into()],
    )
    .await?
    .iter()
    .map(|r| text(r, 0))
    .collect()
}

async fn load_bindings(tx: &mut dyn Tx, id: &str) -> Result<Vec<Binding>, MetadataError> {
    tx.query(
        "SELECT spec FROM bindings WHERE app_id = $1 ORDER BY name",
        &[id.into()],
    )
    .await?
    .iter()
    .map(|r| {
        text(r, 0)?
            .parse()
            .map_err(|e| MetadataError::Backend(format!("stored binding unreadable: {e}")))
    })
    .collect()
}

async fn load_version(tx: &mut dyn Tx, id: &str, number: i64) -> Result<Version, MetadataError> {
    let rows = tx
        .query(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE app_id = $1 AND number = $2"),
            &[id.into(), number.into()],
        )
        .await?;
    match rows.first() {
        Some(row) => version_from_row(row),
        None => Err(MetadataError::NotFound(format!("version {number}"))),
    }
}

fn version_from_row(row: &Row) -> Result<Version, MetadataError> {
    Ok(Version {
        version: int(row, 0)?,
        digest: text(row, 1)?,
        size_bytes: int(row, 2)?,
        imports: serde_json::from_str(&text(row, 3)?)
            .map_err(|e| MetadataError::Backend(format!("stored imports unreadable: {e}")))?,
        created_at: int(row, 4)?,
        handlers: decode_handlers(&text(row, 5)?),
    })
}

/// The clock the metadata stamps rows with, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    now()
}

fn next_cursor<T>(items: &[T], limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    if items.len() == limit as usize {
        items.last().map(key)
    } else {
        None
    }
}
