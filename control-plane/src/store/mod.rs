//! App metadata: tenants, apps, immutable versions, bindings, triggers and which version
//! is live, written once over a minimal SQL driver trait that Postgres and the embedded
//! SQLite file both implement, so both backends run the same queries and rules.

mod embedded;
mod migrations;
mod postgres;

use std::sync::Arc;

use stratus_worker::binding::Binding;

pub use self::embedded::EmbeddedDb;
pub use self::postgres::PostgresDb;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// A SQL backend. Statements use `$1, $2, …` in order of first use, which both
/// PostgreSQL and SQLite accept.
#[async_trait::async_trait]
pub trait Database: Send + Sync {
    /// A transaction (read committed is enough: writers to one app serialize on its row
    /// lock, taken first by every change).
    async fn begin(&self) -> Result<Box<dyn Tx + '_>, StoreError>;
    /// Applies [`migrations::MIGRATIONS`] not yet applied, safe against other replicas
    /// migrating at the same moment.
    async fn migrate(&self) -> Result<(), StoreError>;
}

/// An app as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct App {
    pub name: String,
    pub live_version: Option<i64>,
    pub bindings: Vec<String>,
    pub routes: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An immutable uploaded version of an app.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Version {
    pub version: i64,
    pub digest: String,
    pub size_bytes: i64,
    pub imports: Vec<String>,
    pub created_at: i64,
}

/// A version being added by a deploy.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub digest: String,
    pub size_bytes: i64,
    pub imports: Vec<String>,
}

/// Changes to an app's mutable state, applied together or not at all.
#[derive(Debug, Clone, Default)]
pub struct AppChange {
    pub live_version: Option<i64>,
    /// Replace all bindings.
    pub bindings: Option<Vec<Binding>>,
    /// Set or replace single bindings by name, after `bindings`.
    pub set_bindings: Vec<Binding>,
    /// Remove bindings by name (`kv`, `kv.cache`, `config.KEY`).
    pub remove_bindings: Vec<String>,
    /// Replace all HTTP routes.
    pub routes: Option<Vec<String>>,
}

/// What a worker must run for one live app.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub tenant: String,
    pub app: App,
    pub version: Version,
}

impl Deployment {
    /// Identifies the app across tenants, e.g. for a worker's route table.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.app.name)
    }
}

/// A page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The metadata store: every query is scoped by tenant, so ids from another tenant
/// simply do not exist.
#[derive(Clone)]
pub struct Store {
    db: Arc<dyn Database>,
}

const APP_COLUMNS: &str = "id, name, live_version, created_at, updated_at";

impl Store {
    pub async fn new(db: Arc<dyn Database>) -> Result<Self, StoreError> {
        db.migrate().await?;
        Ok(Self { db })
    }

    pub async fn create_app(&self, tenant: &str, name: &str) -> Result<App, StoreError> {
        let mut tx = self.db.begin().await?;
        ensure_tenant(tx.as_mut(), tenant).await?;
        let Some(id) = insert_app(tx.as_mut(), tenant, name).await? else {
            return Err(StoreError::Conflict(format!("app `{name}` already exists")));
        };
        let app = load_app(tx.as_mut(), &id).await?;
        tx.commit().await?;
        Ok(app)
    }

    pub async fn get_app(&self, tenant: &str, name: &str) -> Result<App, StoreError> {
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
    ) -> Result<Page<App>, StoreError> {
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
    pub async fn delete_app(&self, tenant: &str, name: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let id = lock_app(tx.as_mut(), tenant, name).await?;
        for table in ["triggers", "bindings", "versions"] {
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
    ) -> Result<(App, Version), StoreError> {
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
            .map_err(|e| StoreError::Backend(format!("encoding imports: {e}")))?;
        tx.execute(
            "INSERT INTO versions (app_id, number, digest, size_bytes, imports, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                id.as_str().into(),
                number.into(),
                new.digest.as_str().into(),
                new.size_bytes.into(),
                imports.into(),
                now().into(),
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
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let id = find_app(tx.as_mut(), tenant, name)
            .await?
            .unwrap_or_default();
        check_routes(tx.as_mut(), &id, routes).await?;
        tx.commit().await
    }

    /// Whether any app of `tenant` has a version with these bytes. Deploy reports
    /// deduplication per tenant, so it never reveals what other tenants uploaded.
    pub async fn tenant_has_digest(&self, tenant: &str, digest: &str) -> Result<bool, StoreError> {
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
    ) -> Result<Page<Version>, StoreError> {
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
    ) -> Result<Version, StoreError> {
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
    ) -> Result<App, StoreError> {
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
    ) -> Result<Option<Deployment>, StoreError> {
        let mut tx = self.db.begin().await?;
        let id = app_id(tx.as_mut(), tenant, name).await?;
        let deployment = deployment_of(tx.as_mut(), tenant, &id).await?;
        tx.commit().await?;
        Ok(deployment)
    }

    /// Every live deployment of every tenant: what workers must run.
    pub async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
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

const VERSION_COLUMNS: &str = "number, digest, size_bytes, imports, created_at";

async fn deployment_of(
    tx: &mut dyn Tx,
    tenant: &str,
    id: &str,
) -> Result<Option<Deployment>, StoreError> {
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

async fn apply_change(tx: &mut dyn Tx, id: &str, change: AppChange) -> Result<(), StoreError> {
    if let Some(live) = change.live_version {
        // Fails with NotFound for a version this app does not have.
        load_version(tx, id, live).await?;
        tx.execute(
            "UPDATE apps SET live_version = $1 WHERE id = $2",
            &[live.into(), id.into()],
        )
        .await?;
    }
    let rebinding = change.bindings.is_some()
        || !change.set_bindings.is_empty()
        || !change.remove_bindings.is_empty();
    let mut bindings: Vec<Binding> = match change.bindings {
        Some(b) => b,
        None => load_bindings(tx, id).await?,
    };
    for name in &change.remove_bindings {
        let before = bindings.len();
        bindings.retain(|b| &b.name() != name);
        if bindings.len() == before {
            return Err(StoreError::NotFound(format!("binding `{name}`")));
        }
    }
    for b in change.set_bindings {
        bindings.retain(|old| old.name() != b.name());
        bindings.push(b);
    }
    if rebinding {
        stratus_worker::capabilities::Capabilities::check(&bindings).map_err(|e| {
            StoreError::Refused {
                code: "invalid_binding",
                message: e.to_string(),
            }
        })?;
        tx.execute("DELETE FROM bindings WHERE app_id = $1", &[id.into()])
            .await?;
        for b in &bindings {
            tx.execute(
                "INSERT INTO bindings (app_id, name, spec) VALUES ($1, $2, $3)",
                &[id.into(), b.name().into(), b.to_string().into()],
            )
            .await?;
        }
    }
    if let Some(routes) = change.routes {
        tx.execute(
            "DELETE FROM triggers WHERE app_id = $1 AND kind = 'http'",
            &[id.into()],
        )
        .await?;
        check_routes(tx, id, &routes).await?;
        for route in routes {
            tx.execute(
                "INSERT INTO triggers (app_id, kind, key, spec) VALUES ($1, 'http', $2, '{}')",
                &[id.into(), route.into()],
            )
            .await?;
        }
    }
    tx.execute(
        "UPDATE apps SET updated_at = $1 WHERE id = $2",
        &[now().into(), id.into()],
    )
    .await?;
    // The rule every change must keep: the live version's imports are all bound.
    let rows = tx
        .query("SELECT live_version FROM apps WHERE id = $1", &[id.into()])
        .await?;
    let live = match first(&rows)?.first() {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    if let Some(live) = live {
        let version = load_version(tx, id, live).await?;
        stratus_worker::runtime::check_imports(
            version.imports.iter().map(String::as_str),
            &bindings,
        )
        .map_err(|e| StoreError::Refused {
            code: "missing_binding",
            message: format!("version {live}: {e}"),
        })?;
    }
    Ok(())
}

/// Refuses routes that overlap another app's: equal, or one a prefix of the other at a
/// segment boundary (else `/shop/checkout` could take part of another tenant's `/shop`).
async fn check_routes(tx: &mut dyn Tx, id: &str, routes: &[String]) -> Result<(), StoreError> {
    if routes.is_empty() {
        return Ok(());
    }
    let taken = tx
        .query(
            "SELECT key FROM triggers WHERE kind = 'http' AND app_id <> $1",
            &[id.into()],
        )
        .await?;
    for row in &taken {
        let other = text(row, 0)?;
        if let Some(route) = routes
            .iter()
            .find(|r| stratus_worker::trigger::routes::routes_overlap(r, &other))
        {
            // Never say which app holds it: it may belong to another tenant.
            return Err(StoreError::Conflict(format!(
                "route `{route}` overlaps a route another app serves"
            )));
        }
    }
    Ok(())
}

async fn ensure_tenant(tx: &mut dyn Tx, tenant: &str) -> Result<(), StoreError> {
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
) -> Result<Option<String>, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    let inserted = tx
        .query(
            "INSERT INTO apps (id, tenant, name, next_version, created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (tenant, name) DO NOTHING RETURNING id",
            &[id.as_str().into(), tenant.into(), name.into(), now().into()],
        )
        .await?;
    Ok(inserted.first().map(|_| id))
}

/// Finds the app and takes its row lock for the rest of the transaction, so changes
/// to one app (bindings read-modify-write, version numbers) never interleave.
async fn lock_app(tx: &mut dyn Tx, tenant: &str, name: &str) -> Result<String, StoreError> {
    let rows = tx
        .query(
            "UPDATE apps SET updated_at = updated_at WHERE tenant = $1 AND name = $2 RETURNING id",
            &[tenant.into(), name.into()],
        )
        .await?;
    match rows.first() {
        Some(row) => text(row, 0),
        None => Err(StoreError::NotFound(format!("app `{name}`"))),
    }
}

async fn find_app(tx: &mut dyn Tx, tenant: &str, name: &str) -> Result<Option<String>, StoreError> {
    let rows = tx
        .query(
            "SELECT id FROM apps WHERE tenant = $1 AND name = $2",
            &[tenant.into(), name.into()],
        )
        .await?;
    rows.first().map(|r| text(r, 0)).transpose()
}

async fn app_id(tx: &mut dyn Tx, tenant: &str, name: &str) -> Result<String, StoreError> {
    find_app(tx, tenant, name)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("app `{name}`")))
}

async fn load_app(tx: &mut dyn Tx, id: &str) -> Result<App, StoreError> {
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
    Ok(App {
        name: text(row, 1)?,
        live_version: match row.get(2) {
            Some(Value::Null) | None => None,
            Some(_) => Some(int(row, 2)?),
        },
        bindings: bindings.iter().map(ToString::to_string).collect(),
        routes,
        created_at: int(row, 3)?,
        updated_at: int(row, 4)?,
    })
}

async fn load_bindings(tx: &mut dyn Tx, id: &str) -> Result<Vec<Binding>, StoreError> {
    tx.query(
        "SELECT spec FROM bindings WHERE app_id = $1 ORDER BY name",
        &[id.into()],
    )
    .await?
    .iter()
    .map(|r| {
        text(r, 0)?
            .parse()
            .map_err(|e| StoreError::Backend(format!("stored binding unreadable: {e}")))
    })
    .collect()
}

async fn load_version(tx: &mut dyn Tx, id: &str, number: i64) -> Result<Version, StoreError> {
    let rows = tx
        .query(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE app_id = $1 AND number = $2"),
            &[id.into(), number.into()],
        )
        .await?;
    match rows.first() {
        Some(row) => version_from_row(row),
        None => Err(StoreError::NotFound(format!("version {number}"))),
    }
}

fn version_from_row(row: &Row) -> Result<Version, StoreError> {
    Ok(Version {
        version: int(row, 0)?,
        digest: text(row, 1)?,
        size_bytes: int(row, 2)?,
        imports: serde_json::from_str(&text(row, 3)?)
            .map_err(|e| StoreError::Backend(format!("stored imports unreadable: {e}")))?,
        created_at: int(row, 4)?,
    })
}

fn next_cursor<T>(items: &[T], limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    if items.len() == limit as usize {
        items.last().map(key)
    } else {
        None
    }
}

fn first(rows: &[Row]) -> Result<&Row, StoreError> {
    rows.first()
        .ok_or_else(|| StoreError::Backend("expected a row, got none".into()))
}

fn text(row: &Row, i: usize) -> Result<String, StoreError> {
    match row.get(i) {
        Some(Value::Text(s)) => Ok(s.clone()),
        other => Err(StoreError::Backend(format!(
            "column {i}: expected text, got {other:?}"
        ))),
    }
}

fn int(row: &Row, i: usize) -> Result<i64, StoreError> {
    match row.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        other => Err(StoreError::Backend(format!(
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
