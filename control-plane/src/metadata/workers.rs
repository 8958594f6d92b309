//! Workers and what each must run: registration, heartbeats, drains, per-assignment
//! status reports, the assignment feed, and the pool generations that tell a worker's
//! stream when to send it again.

use std::collections::{BTreeMap, HashMap};

use stratus_proto::pb;

use super::records::Replicas;
use super::sql::{Tx, Value, int, now, text};
use super::{Metadata, MetadataError, app_id};

/// A worker's lifecycle as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Heartbeating; takes new placements.
    Up,
    /// Heartbeating; its apps are moving elsewhere before it stops.
    Draining,
    /// Missed heartbeats past the timeout; holds no placements.
    Lost,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Up => "up",
            WorkerState::Draining => "draining",
            WorkerState::Lost => "lost",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, MetadataError> {
        match s {
            "up" => Ok(WorkerState::Up),
            "draining" => Ok(WorkerState::Draining),
            "lost" => Ok(WorkerState::Lost),
            other => Err(MetadataError::Backend(format!(
                "unknown worker state `{other}`"
            ))),
        }
    }
}

/// What a worker says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    pub version: String,
    pub http_address: String,
}

/// A worker as `fnctl workers` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerRecord {
    pub id: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    pub state: WorkerState,
    pub capacity: i64,
    pub version: String,
    pub http_address: String,
    /// Milliseconds since the epoch of the last heartbeat.
    pub last_seen: i64,
    /// Apps placed on it (of every tenant): its load.
    pub placements: i64,
    /// Apps it reported loaded and ready.
    pub apps_ready: i64,
    /// The caller's apps placed on it (other tenants' are only counted).
    pub apps: Vec<String>,
}

/// One placement of an app, with what its worker last reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlacementStatus {
    pub worker: String,
    pub worker_state: WorkerState,
    /// `pending` (not reported yet), `fetching`, `compiling`, `ready` or `failed`.
    pub state: String,
    /// The revision the state is about.
    pub state_revision: i64,
    /// The newest revision it has ready (and serves), if any.
    pub ready_revision: Option<i64>,
    pub message: String,
}

/// Where an app's rollout stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AppStatus {
    pub revision: i64,
    pub live_version: Option<i64>,
    pub pool: String,
    pub replicas: Replicas,
    /// Workers of the pool that take placements.
    pub workers_up: i64,
    /// Replicas the app gets with those workers: serving when this many are ready.
    pub wanted: i64,
    pub placements: Vec<PlacementStatus>,
}

fn assignment_state(state: pb::AssignmentState) -> Option<&'static str> {
    match state {
        pb::AssignmentState::Fetching => Some("fetching"),
        pb::AssignmentState::Compiling => Some("compiling"),
        pb::AssignmentState::Ready => Some("ready"),
        pb::AssignmentState::Failed => Some("failed"),
        pb::AssignmentState::Unspecified => None,
    }
}

impl Metadata {
    /// Adds or re-announces a worker, which is up from now on. An id registered in
    /// another pool is refused (`Conflict`) unless that worker was lost: a token for one
    /// pool cannot take over another pool's worker. A lost worker that comes back in
    /// another pool drops the placements of its old one.
    pub async fn register_worker(&self, w: &WorkerInfo) -> Result<(), MetadataError> {
        let labels = serde_json::to_string(&w.labels)
            .map_err(|e| MetadataError::Backend(format!("encoding labels: {e}")))?;
        let now = now();
        let mut tx = self.db.begin().await?;
        let old_pool = tx
            .query(
                "SELECT pool FROM workers WHERE id = $1",
                &[w.id.as_str().into()],
            )
            .await?;
        let registered = tx.query(
            "INSERT INTO workers (id, pool, labels, capacity, version, http_address, state, registered_at, last_seen, apps_ready)
             VALUES ($1, $2, $3, $4, $5, $6, 'up', $7, $7, 0)
             ON CONFLICT (id) DO UPDATE SET pool = excluded.pool, labels = excluded.labels,
               capacity = excluded.capacity, version = excluded.version,
               http_address = excluded.http_address, state = 'up', last_seen = excluded.last_seen
             WHERE workers.pool = excluded.pool OR workers.state = 'lost'
             RETURNING id",
            &[
                w.id.as_str().into(),
                w.pool.as_str().into(),
                labels.into(),
                i64::from(w.capacity).into(),
                w.version.as_str().into(),
                w.http_address.as_str().into(),
                now.into(),
            ],
        )
        .await?;
        if registered.is_empty() {
            return Err(MetadataError::Conflict(format!(
                "worker `{}` is registered in another pool",
                w.id
            )));
        }
        if let Some(row) = old_pool.first() {
            let old = text(row, 0)?;
            if old != w.pool {
                bump_pool(tx.as_mut(), &old).await?;
            }
        }
        tx.execute(
            "DELETE FROM placements WHERE worker_id = $1 AND app_id IN (SELECT id FROM apps WHERE pool <> $2)",
            &[w.id.as_str().into(), w.pool.as_str().into()],
        )
        .await?;
        bump_pool(tx.as_mut(), &w.pool).await?;
        tx.commit().await
    }

    /// Records a heartbeat. `false` when the worker is unknown or was marked lost: it
    /// must register again.
    pub async fn heartbeat(&self, id: &str, apps_ready: u32) -> Result<bool, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "UPDATE workers SET last_seen = $1, apps_ready = $2 WHERE id = $3 AND state <> 'lost' RETURNING id",
                &[now().into(), i64::from(apps_ready).into(), id.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(!rows.is_empty())
    }

    /// Marks a worker draining: the scheduler places its apps elsewhere and removes them
    /// from it once their replacements are ready.
    pub async fn drain_worker(&self, id: &str) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "UPDATE workers SET state = 'draining' WHERE id = $1 AND state <> 'lost' RETURNING pool",
                &[id.into()],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(MetadataError::NotFound(format!("worker `{id}`")));
        };
        bump_pool(tx.as_mut(), &text(row, 0)?).await?;
        tx.commit().await
    }

    /// The pool and state of a worker, if known.
    pub async fn worker_pool(
        &self,
        id: &str,
    ) -> Result<Option<(String, WorkerState)>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT pool, state FROM workers WHERE id = $1",
                &[id.into()],
            )
            .await?;
        tx.commit().await?;
        rows.first()
            .map(|r| Ok((text(r, 0)?, WorkerState::parse(&text(r, 1)?)?)))
            .transpose()
    }

    /// Records what a worker reports about one of its assignments. Reports about an
    /// older revision than one already reported are stale and ignored.
    pub async fn report_status(
        &self,
        worker: &str,
        tenant: &str,
        app: &str,
        revision: i64,
        state: pb::AssignmentState,
        message: &str,
    ) -> Result<(), MetadataError> {
        let Some(state) = assignment_state(state) else {
            return Err(MetadataError::Refused {
                code: "bad_request",
                message: "the report names no state".into(),
            });
        };
        let mut tx = self.db.begin().await?;
        let id = app_id(tx.as_mut(), tenant, app).await?;
        let before = tx
            .query(
                "SELECT ready_revision FROM placements WHERE app_id = $1 AND worker_id = $2",
                &[id.as_str().into(), worker.into()],
            )
            .await?;
        let was_ready = before
            .first()
            .and_then(|r| optional_int(r, 0).ok().flatten());
        // Reports travel separately and may arrive out of order: an older revision never
        // replaces a newer one, and a progress state never replaces the outcome (ready or
        // failed) of the same revision.
        let rows = tx
            .query(
                "UPDATE placements SET state = $1, state_revision = $2, message = $3,
                   ready_revision = CASE WHEN $1 = 'ready' THEN $2 ELSE ready_revision END
                 WHERE app_id = $4 AND worker_id = $5 AND (state_revision < $2
                   OR (state_revision = $2 AND ($1 IN ('ready', 'failed') OR state NOT IN ('ready', 'failed'))))
                 RETURNING (SELECT pool FROM workers WHERE id = $5)",
                &[
                    state.into(),
                    revision.into(),
                    message.into(),
                    id.as_str().into(),
                    worker.into(),
                ],
            )
            .await?;
        // Readiness changes where the pool forwards requests.
        if state == "ready"
            && was_ready != Some(revision)
            && let Some(row) = rows.first()
        {
            bump_pool(tx.as_mut(), &text(row, 0)?).await?;
        }
        tx.commit().await
    }

    /// Every worker, with the caller's apps on each.
    pub async fn workers(&self, tenant: &str) -> Result<Vec<WorkerRecord>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT w.id, w.pool, w.labels, w.state, w.capacity, w.version, w.http_address, w.last_seen, w.apps_ready,
                   (SELECT COUNT(*) FROM placements p WHERE p.worker_id = w.id)
                 FROM workers w ORDER BY w.pool, w.id",
                &[],
            )
            .await?;
        let mine = tx
            .query(
                "SELECT p.worker_id, a.name FROM placements p JOIN apps a ON a.id = p.app_id WHERE a.tenant = $1 ORDER BY a.name",
                &[tenant.into()],
            )
            .await?;
        tx.commit().await?;
        let mut apps: HashMap<String, Vec<String>> = HashMap::new();
        for row in &mine {
            apps.entry(text(row, 0)?).or_default().push(text(row, 1)?);
        }
        rows.iter()
            .map(|row| {
                let id = text(row, 0)?;
                Ok(WorkerRecord {
                    apps: apps.remove(&id).unwrap_or_default(),
                    pool: text(row, 1)?,
                    labels: serde_json::from_str(&text(row, 2)?).map_err(|e| {
                        MetadataError::Backend(format!("stored labels unreadable: {e}"))
                    })?,
                    state: WorkerState::parse(&text(row, 3)?)?,
                    capacity: int(row, 4)?,
                    version: text(row, 5)?,
                    http_address: text(row, 6)?,
                    last_seen: int(row, 7)?,
                    apps_ready: int(row, 8)?,
                    placements: int(row, 9)?,
                    id,
                })
            })
            .collect()
    }

    /// Where the rollout of one app stands.
    pub async fn app_status(&self, tenant: &str, name: &str) -> Result<AppStatus, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = app_id(tx.as_mut(), tenant, name).await?;
        let app = tx
            .query(
                "SELECT revision, live_version, pool, replicas,
                   (SELECT COUNT(*) FROM workers w WHERE w.pool = apps.pool AND w.state = 'up')
                 FROM apps WHERE id = $1",
                &[id.as_str().into()],
            )
            .await?;
        let rows = tx
            .query(
                "SELECT p.worker_id, w.state, p.state, p.state_revision, p.ready_revision, p.message
                 FROM placements p JOIN workers w ON w.id = p.worker_id WHERE p.app_id = $1 ORDER BY p.worker_id",
                &[id.as_str().into()],
            )
            .await?;
        tx.commit().await?;
        let app = super::sql::first(&app)?;
        let replicas = Replicas::from_db(int(app, 3)?);
        let workers_up = int(app, 4)?;
        let placements = rows
            .iter()
            .map(|r| {
                Ok(PlacementStatus {
                    worker: text(r, 0)?,
                    worker_state: WorkerState::parse(&text(r, 1)?)?,
                    state: text(r, 2)?,
                    state_revision: int(r, 3)?,
                    ready_revision: optional_int(r, 4)?,
                    message: text(r, 5)?,
                })
            })
            .collect::<Result<Vec<_>, MetadataError>>()?;
        Ok(AppStatus {
            revision: int(app, 0)?,
            live_version: optional_int(app, 1)?,
            pool: text(app, 2)?,
            replicas,
            workers_up,
            wanted: i64::try_from(replicas.wanted(usize::try_from(workers_up).unwrap_or(0)))
                .unwrap_or(i64::MAX),
            placements,
        })
    }

    /// Whether a live app of `pool` runs the component `digest`: what a worker of that
    /// pool may fetch.
    pub async fn digest_in_pool(&self, digest: &str, pool: &str) -> Result<bool, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT 1 FROM versions v JOIN apps a ON a.id = v.app_id WHERE a.pool = $1 AND v.digest = $2 LIMIT 1",
                &[pool.into(), digest.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(!rows.is_empty())
    }

    /// The generation of every pool, for the streams that watch them.
    pub async fn pool_generations(&self) -> Result<HashMap<String, u64>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx.query("SELECT name, generation FROM pools", &[]).await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| Ok((text(r, 0)?, u64::try_from(int(r, 1)?).unwrap_or(0))))
            .collect()
    }

    /// What one worker of `pool` must run, and every live app of the pool with the
    /// workers ready to serve it; `None` if the worker is not (or no longer) in `pool`.
    /// The generation is read first, so a change racing this read is sent again under
    /// its newer generation.
    pub async fn feed(
        &self,
        worker: &str,
        pool: &str,
    ) -> Result<Option<pb::AssignmentFeed>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT COALESCE((SELECT generation FROM pools WHERE name = w.pool), 0) FROM workers w WHERE w.id = $1 AND w.pool = $2",
                &[worker.into(), pool.into()],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let generation = u64::try_from(int(row, 0)?).unwrap_or(0);
        let routes = tx
            .query(
                "SELECT a.id, a.tenant, a.name, t.key FROM apps a JOIN triggers t ON t.app_id = a.id
                 WHERE a.pool = $1 AND a.live_version IS NOT NULL AND t.kind = 'http' ORDER BY a.id, t.key",
                &[pool.into()],
            )
            .await?;
        let ready = tx
            .query(
                "SELECT p.app_id, w.http_address FROM placements p JOIN workers w ON w.id = p.worker_id
                 WHERE w.pool = $1 AND w.state <> 'lost' AND p.ready_revision IS NOT NULL ORDER BY w.id",
                &[pool.into()],
            )
            .await?;
        let assigned = tx
            .query(
                "SELECT a.id, a.tenant, a.name, a.revision, v.number, v.digest, v.size_bytes
                 FROM placements p JOIN apps a ON a.id = p.app_id
                 JOIN versions v ON v.app_id = a.id AND v.number = a.live_version
                 WHERE p.worker_id = $1 ORDER BY a.tenant, a.name",
                &[worker.into()],
            )
            .await?;
        let bindings = tx
            .query(
                "SELECT b.app_id, b.spec FROM bindings b JOIN placements p ON p.app_id = b.app_id
                 WHERE p.worker_id = $1 ORDER BY b.app_id, b.name",
                &[worker.into()],
            )
            .await?;
        let queues = tx
            .query(
                "SELECT t.app_id, t.spec FROM triggers t JOIN placements p ON p.app_id = t.app_id
                 WHERE p.worker_id = $1 AND t.kind = 'queue' ORDER BY t.app_id, t.key",
                &[worker.into()],
            )
            .await?;
        // Every placement of the apps placed here: a queue trigger's concurrency is split
        // over them, so the pool as a whole never runs more than it allows.
        let holders = tx
            .query(
                "SELECT p2.app_id, p2.worker_id FROM placements p JOIN placements p2 ON p2.app_id = p.app_id
                 WHERE p.worker_id = $1 ORDER BY p2.app_id, p2.worker_id",
                &[worker.into()],
            )
            .await?;
        tx.commit().await?;

        let mut positions: HashMap<String, (usize, usize)> = HashMap::new();
        for row in &holders {
            let entry = positions.entry(text(row, 0)?).or_insert((0, 0));
            if text(row, 1)? == worker {
                entry.0 = entry.1;
            }
            entry.1 += 1;
        }
        let mut app_queues: HashMap<String, Vec<pb::QueueAssignment>> = HashMap::new();
        for row in &queues {
            let app_id = text(row, 0)?;
            let spec = text(row, 1)?;
            let Ok(trigger) = spec.parse::<stratus_proto::triggers::QueueTrigger>() else {
                continue;
            };
            let (index, holders) = positions.get(&app_id).copied().unwrap_or((0, 1));
            let concurrency = if trigger.fifo {
                // One consumer per FIFO trigger: the first holder runs every group.
                if index == 0 {
                    trigger.max_concurrency
                } else {
                    0
                }
            } else {
                stratus_proto::triggers::concurrency_share(trigger.max_concurrency, index, holders)
            };
            app_queues
                .entry(app_id)
                .or_default()
                .push(pb::QueueAssignment { spec, concurrency });
        }

        let mut pool_routes: Vec<(String, pb::PoolRoute)> = Vec::new();
        for row in &routes {
            let id = text(row, 0)?;
            if pool_routes.last().is_none_or(|(last, _)| *last != id) {
                pool_routes.push((
                    id.clone(),
                    pb::PoolRoute {
                        tenant: text(row, 1)?,
                        app: text(row, 2)?,
                        ..Default::default()
                    },
                ));
            }
            if let Some((_, route)) = pool_routes.last_mut() {
                route.routes.push(text(row, 3)?);
            }
        }
        let mut peers: HashMap<String, Vec<String>> = HashMap::new();
        for row in &ready {
            peers.entry(text(row, 0)?).or_default().push(text(row, 1)?);
        }
        let mut app_bindings: HashMap<String, Vec<String>> = HashMap::new();
        for row in &bindings {
            app_bindings
                .entry(text(row, 0)?)
                .or_default()
                .push(text(row, 1)?);
        }
        let app_routes: HashMap<&str, &[String]> = pool_routes
            .iter()
            .map(|(id, r)| (id.as_str(), r.routes.as_slice()))
            .collect();
        let mut assignments = Vec::with_capacity(assigned.len());
        for row in &assigned {
            let id = text(row, 0)?;
            assignments.push(pb::Assignment {
                tenant: text(row, 1)?,
                app: text(row, 2)?,
                revision: int(row, 3)?,
                version: int(row, 4)?,
                digest: text(row, 5)?,
                size_bytes: u64::try_from(int(row, 6)?).unwrap_or(0),
                routes: app_routes
                    .get(id.as_str())
                    .map(|r| r.to_vec())
                    .unwrap_or_default(),
                bindings: app_bindings.remove(&id).unwrap_or_default(),
                queues: app_queues.remove(&id).unwrap_or_default(),
            });
        }
        let routes = pool_routes
            .into_iter()
            .map(|(id, mut route)| {
                route.ready_peers = peers.remove(&id).unwrap_or_default();
                route
            })
            .collect();
        Ok(Some(pb::AssignmentFeed {
            generation,
            assignments,
            routes,
        }))
    }
}

fn optional_int(row: &super::Row, i: usize) -> Result<Option<i64>, MetadataError> {
    match row.get(i) {
        Some(Value::Null) | None => Ok(None),
        Some(_) => int(row, i).map(Some),
    }
}

/// Tells the streams of `pool`'s workers that their feed changed.
pub(super) async fn bump_pool(tx: &mut dyn Tx, pool: &str) -> Result<(), MetadataError> {
    tx.execute(
        "INSERT INTO pools (name, generation) VALUES ($1, 1)
         ON CONFLICT (name) DO UPDATE SET generation = pools.generation + 1",
        &[pool.into()],
    )
    .await?;
    Ok(())
}

/// [`bump_pool`] for the pool an app runs in.
pub(super) async fn bump_app_pool(tx: &mut dyn Tx, app_id: &str) -> Result<(), MetadataError> {
    let rows = tx
        .query("SELECT pool FROM apps WHERE id = $1", &[app_id.into()])
        .await?;
    if let Some(row) = rows.first() {
        bump_pool(tx, &text(row, 0)?).await?;
    }
    Ok(())
}
