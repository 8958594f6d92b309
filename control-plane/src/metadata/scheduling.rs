//! What the scheduler reads and writes: the leader lease, and one scheduling pass (mark
//! lost workers, read the cluster, write the placement changes) in one transaction that
//! holds the lease row, so a replica that lost the lease can never write placements.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::records::Replicas;
use super::sql::{Tx, Value, int, now, text};
use super::workers::{WorkerState, bump_pool};
use super::{Metadata, MetadataError};

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSlot {
    pub id: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    pub state: WorkerState,
}

/// A live app as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSlot {
    pub id: String,
    pub pool: String,
    pub replicas: Replicas,
}

/// One app on one worker; `ready` when the worker serves some revision of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub app: String,
    pub worker: String,
    pub ready: bool,
}

/// Everything a placement decision needs.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub workers: Vec<WorkerSlot>,
    pub apps: Vec<AppSlot>,
    pub placements: Vec<Placement>,
}

/// Placements to add and remove, as `(app id, worker id)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementChanges {
    pub add: Vec<(String, String)>,
    pub remove: Vec<(String, String)>,
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub lost: Vec<String>,
    pub added: usize,
    pub removed: usize,
}

/// Rows per multi-row statement; well under both databases' parameter limits.
const BATCH: usize = 200;

impl Metadata {
    /// Takes or renews the lease `name` for `holder` until `ttl` from now. `false`:
    /// another holder's lease has not lapsed.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, MetadataError> {
        let now = now();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < $4
                 RETURNING holder",
                &[name.into(), holder.into(), until.into(), now.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(!rows.is_empty())
    }

    /// Gives the lease up (a replica shutting down), so a standby need not wait it out.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[name.into(), holder.into()],
        )
        .await?;
        tx.commit().await
    }

    /// One scheduling pass under the lease: marks workers silent for `lost_after` lost
    /// (dropping their placements; `None`: mark none), reads the cluster, and writes
    /// what `plan` decides. `None` when `holder` no longer holds a live lease: nothing
    /// was written.
    pub async fn schedule_pass(
        &self,
        lease: &str,
        holder: &str,
        lost_after: Option<Duration>,
        plan: impl FnOnce(&Cluster) -> PlacementChanges + Send,
    ) -> Result<Option<PassReport>, MetadataError> {
        let now = now();
        let mut tx = self.db.begin().await?;
        // Fencing: the lease row stays locked until commit, so a standby's takeover
        // waits for this pass and then sees the lease still held.
        let held = tx
            .query(
                "UPDATE leases SET expires_at = expires_at WHERE name = $1 AND holder = $2 AND expires_at >= $3 RETURNING holder",
                &[lease.into(), holder.into(), now.into()],
            )
            .await?;
        if held.is_empty() {
            return Ok(None);
        }
        let mut report = PassReport::default();
        let lost = match lost_after {
            Some(after) => {
                let silent_since =
                    now.saturating_sub(i64::try_from(after.as_millis()).unwrap_or(0));
                tx.query(
                    "UPDATE workers SET state = 'lost' WHERE state <> 'lost' AND last_seen < $1 RETURNING id, pool",
                    &[silent_since.into()],
                )
                .await?
            }
            None => Vec::new(),
        };
        let mut pools = BTreeSet::new();
        for row in &lost {
            let id = text(row, 0)?;
            tx.execute(
                "DELETE FROM placements WHERE worker_id = $1",
                &[id.as_str().into()],
            )
            .await?;
            tracing::warn!(worker = %id, "worker missed its heartbeats; marked lost");
            pools.insert(text(row, 1)?);
            report.lost.push(id);
        }
        let cluster = read_cluster(tx.as_mut()).await?;
        let changes = plan(&cluster);
        let pool_of_app: std::collections::HashMap<&str, &str> = cluster
            .apps
            .iter()
            .map(|a| (a.id.as_str(), a.pool.as_str()))
            .collect();
        let pool_of_worker: std::collections::HashMap<&str, &str> = cluster
            .workers
            .iter()
            .map(|w| (w.id.as_str(), w.pool.as_str()))
            .collect();
        for chunk in changes.add.chunks(BATCH) {
            let mut sql = String::from(
                "INSERT INTO placements (app_id, worker_id, created_at, state, state_revision, ready_revision, message) VALUES ",
            );
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 2 + 1);
            params.push(now.into());
            for (i, (app, worker)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${}, ${}, $1, 'pending', 0, NULL, '')",
                    i * 2 + 2,
                    i * 2 + 3
                ));
                params.push(app.as_str().into());
                params.push(worker.as_str().into());
                if let Some(pool) = pool_of_app.get(app.as_str()) {
                    pools.insert((*pool).to_string());
                }
            }
            sql.push_str(" ON CONFLICT (app_id, worker_id) DO NOTHING");
            tx.execute(&sql, &params).await?;
        }
        for (app, worker) in &changes.remove {
            tx.execute(
                "DELETE FROM placements WHERE app_id = $1 AND worker_id = $2",
                &[app.as_str().into(), worker.as_str().into()],
            )
            .await?;
            if let Some(pool) = pool_of_worker.get(worker.as_str()) {
                pools.insert((*pool).to_string());
            }
        }
        for pool in &pools {
            bump_pool(tx.as_mut(), pool).await?;
        }
        tx.commit().await?;
        report.added = changes.add.len();
        report.removed = changes.remove.len();
        Ok(Some(report))
    }
}

async fn read_cluster(tx: &mut dyn Tx) -> Result<Cluster, MetadataError> {
    let workers = tx
        .query(
            "SELECT id, pool, labels, capacity, state FROM workers WHERE state <> 'lost' ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(WorkerSlot {
                id: text(r, 0)?,
                pool: text(r, 1)?,
                labels: serde_json::from_str(&text(r, 2)?)
                    .map_err(|e| MetadataError::Backend(format!("stored labels unreadable: {e}")))?,
                capacity: u32::try_from(int(r, 3)?).unwrap_or(u32::MAX),
                state: WorkerState::parse(&text(r, 4)?)?,
            })
        })
        .collect::<Result<Vec<_>, MetadataError>>()?;
    let apps = tx
        .query(
            "SELECT id, pool, replicas FROM apps WHERE live_version IS NOT NULL ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(AppSlot {
                id: text(r, 0)?,
                pool: text(r, 1)?,
                replicas: Replicas::from_db(int(r, 2)?),
            })
        })
        .collect::<Result<Vec<_>, MetadataError>>()?;
    let placements = tx
        .query(
            "SELECT app_id, worker_id, ready_revision FROM placements ORDER BY app_id, worker_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Placement {
                app: text(r, 0)?,
                worker: text(r, 1)?,
                ready: !matches!(r.get(2), Some(Value::Null) | None),
            })
        })
        .collect::<Result<Vec<_>, MetadataError>>()?;
    Ok(Cluster {
        workers,
        apps,
        placements,
    })
}
