//! Timer runs and queue trigger states: the rows behind "fire once per scheduled time
//! across the cluster" and behind `fnctl triggers` / `fnctl runs`.
//!
//! A scheduled time is claimed by inserting its row (unique per app, trigger and time:
//! whichever replica inserts it owns nothing more than the row), and a run is started by
//! the conditional update that moves it from `pending` to `running` on one worker, so two
//! replicas never start the same attempt.

use std::collections::HashMap;

use stratus_proto::pb;

use super::sql::{int, now, text};
use super::{Metadata, MetadataError, Value};

/// A live app's timer trigger, as the timer loop needs it.
#[derive(Debug, Clone)]
pub struct TimerRow {
    pub app_id: String,
    pub tenant: String,
    pub app: String,
    pub spec: String,
}

/// A run due to start.
#[derive(Debug, Clone)]
pub struct PendingRun {
    pub id: String,
    pub app_id: String,
    pub trigger: String,
    pub scheduled_ms: i64,
    pub attempt: i64,
}

/// One run of a trigger's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub trigger: String,
    pub scheduled_ms: i64,
    pub attempt: i64,
    pub state: String,
    pub worker: Option<String>,
    pub started_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub message: String,
}

/// What the workers last reported of one queue trigger, summed over them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueState {
    pub trigger: String,
    pub workers: u32,
    /// Each worker's reason, while it cannot read the source.
    pub failing: Vec<String>,
    pub in_flight: i64,
    pub handled: i64,
    pub failed: i64,
    pub dead_lettered: i64,
    pub backlog: i64,
    pub updated_ms: i64,
}

fn opt_int(row: &super::Row, i: usize) -> Result<Option<i64>, MetadataError> {
    match row.get(i) {
        Some(Value::Null) | None => Ok(None),
        Some(_) => int(row, i).map(Some),
    }
}

fn opt_text(row: &super::Row, i: usize) -> Result<Option<String>, MetadataError> {
    match row.get(i) {
        Some(Value::Null) | None => Ok(None),
        Some(_) => text(row, i).map(Some),
    }
}

impl Metadata {
    /// Every timer trigger of every live app.
    pub async fn timer_triggers(&self) -> Result<Vec<TimerRow>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT a.id, a.tenant, a.name, t.spec FROM triggers t JOIN apps a ON a.id = t.app_id
                 WHERE t.kind = 'timer' AND a.live_version IS NOT NULL ORDER BY a.id, t.key",
                &[],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(TimerRow {
                    app_id: text(r, 0)?,
                    tenant: text(r, 1)?,
                    app: text(r, 2)?,
                    spec: text(r, 3)?,
                })
            })
            .collect()
    }

    /// The latest scheduled time claimed for a trigger, if any.
    pub async fn last_scheduled(
        &self,
        app_id: &str,
        trigger: &str,
    ) -> Result<Option<i64>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT MAX(scheduled_ms) FROM timer_runs WHERE app_id = $1 AND trigger_name = $2",
                &[app_id.into(), trigger.into()],
            )
            .await?;
        tx.commit().await?;
        match rows.first() {
            Some(row) => opt_int(row, 0),
            None => Ok(None),
        }
    }

    /// Claims a scheduled time: true if this call created its run (no replica did
    /// before).
    pub async fn claim_run(
        &self,
        app_id: &str,
        trigger: &str,
        scheduled_ms: i64,
        max_attempts: u32,
        backoff_ms: u64,
    ) -> Result<bool, MetadataError> {
        let mut tx = self.db.begin().await?;
        let inserted = tx
            .execute(
                "INSERT INTO timer_runs (id, app_id, trigger_name, scheduled_ms, attempt, state, not_before_ms, message, max_attempts, backoff_ms)
                 VALUES ($1, $2, $3, $4, 1, 'pending', $5, '', $6, $7)
                 ON CONFLICT (app_id, trigger_name, scheduled_ms) DO NOTHING",
                &[
                    uuid::Uuid::new_v4().to_string().into(),
                    app_id.into(),
                    trigger.into(),
                    scheduled_ms.into(),
                    now().into(),
                    i64::from(max_attempts).into(),
                    i64::try_from(backoff_ms).unwrap_or(0).into(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Runs due to start (oldest first), after moving runs whose worker never reported
    /// back by their deadline to their next attempt (or to `failed`).
    pub async fn due_runs(&self, limit: i64) -> Result<Vec<PendingRun>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let at = now();
        // One statement each, so a replica never resets an attempt another has just
        // started (PostgreSQL re-checks the condition on the newest row).
        tx.execute(
            "UPDATE timer_runs SET state = 'pending', attempt = attempt + 1, not_before_ms = $1,
             message = 'the worker did not report back by the deadline'
             WHERE state = 'running' AND deadline_ms < $1 AND attempt < max_attempts",
            &[at.into()],
        )
        .await?;
        tx.execute(
            "UPDATE timer_runs SET state = 'failed', message = 'the worker did not report back by the deadline'
             WHERE state = 'running' AND deadline_ms < $1 AND attempt >= max_attempts",
            &[at.into()],
        )
        .await?;
        // Only runs some worker can start: a run of an app with no ready worker waits
        // without keeping others from their turn.
        let rows = tx
            .query(
                "SELECT r.id, r.app_id, r.trigger_name, r.scheduled_ms, r.attempt FROM timer_runs r
                 WHERE r.state = 'pending' AND r.not_before_ms <= $1
                 AND EXISTS (SELECT 1 FROM placements p JOIN workers w ON w.id = p.worker_id
                             WHERE p.app_id = r.app_id AND w.state = 'up' AND p.ready_revision IS NOT NULL)
                 ORDER BY r.not_before_ms LIMIT $2",
                &[at.into(), limit.into()],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(PendingRun {
                    id: text(r, 0)?,
                    app_id: text(r, 1)?,
                    trigger: text(r, 2)?,
                    scheduled_ms: int(r, 3)?,
                    attempt: int(r, 4)?,
                })
            })
            .collect()
    }

    /// Marks `skipped` the pending runs of triggers that no longer exist (removed, or
    /// their app deleted or made not live).
    pub async fn skip_orphan_runs(&self) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "UPDATE timer_runs SET state = 'skipped', message = 'the trigger was removed'
             WHERE state IN ('pending', 'running') AND NOT EXISTS (
                 SELECT 1 FROM triggers t JOIN apps a ON a.id = t.app_id
                 WHERE t.kind = 'timer' AND t.app_id = timer_runs.app_id
                 AND t.key = timer_runs.app_id || '/' || timer_runs.trigger_name
                 AND a.live_version IS NOT NULL)",
            &[],
        )
        .await?;
        tx.commit().await
    }

    /// Deletes finished runs scheduled before `before`.
    pub async fn prune_runs(&self, before: i64) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "DELETE FROM timer_runs WHERE scheduled_ms < $1 AND state IN ('succeeded', 'failed', 'skipped')",
            &[before.into()],
        )
        .await?;
        tx.commit().await
    }

    /// Starts a pending run on `worker`: true if this call did (no replica did before).
    pub async fn start_run(
        &self,
        id: &str,
        worker: &str,
        deadline_ms: i64,
    ) -> Result<bool, MetadataError> {
        let mut tx = self.db.begin().await?;
        let started = tx
            .execute(
                "UPDATE timer_runs SET state = 'running', worker_id = $1, started_ms = $2, deadline_ms = $3
                 WHERE id = $4 AND state = 'pending'",
                &[worker.into(), now().into(), deadline_ms.into(), id.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(started == 1)
    }

    /// Records a worker's report of an attempt: done, due again after the run's
    /// backoff, or failed for good once its attempts are spent. A report for an attempt
    /// the run has moved past (its deadline lapsed) is ignored.
    pub async fn finish_run(&self, report: &pb::RunReport) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT attempt, max_attempts, backoff_ms FROM timer_runs
                 WHERE id = $1 AND worker_id = $2 AND attempt = $3 AND state = 'running'",
                &[
                    report.run_id.as_str().into(),
                    report.worker_id.as_str().into(),
                    i64::from(report.attempt).into(),
                ],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let (attempt, max, backoff) = (int(row, 0)?, int(row, 1)?, int(row, 2)?);
        let duration = i64::try_from(report.duration_ms).unwrap_or(i64::MAX);
        let message: String = report.message.chars().take(2000).collect();
        let (state, next_attempt, not_before) = if report.ok {
            ("succeeded", attempt, now())
        } else if attempt < max {
            let delay = backoff
                .saturating_mul(1i64 << (attempt - 1).clamp(0, 20))
                .min(600_000);
            ("pending", attempt + 1, now() + delay)
        } else {
            ("failed", attempt, now())
        };
        tx.execute(
            "UPDATE timer_runs SET state = $1, attempt = $2, not_before_ms = $3, duration_ms = $4, message = $5
             WHERE id = $6 AND attempt = $7 AND state = 'running'",
            &[
                state.into(),
                next_attempt.into(),
                not_before.into(),
                duration.into(),
                message.into(),
                report.run_id.as_str().into(),
                attempt.into(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The workers ready to run each app (up, with a ready instance set).
    pub async fn ready_workers(&self) -> Result<HashMap<String, Vec<String>>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT p.app_id, p.worker_id FROM placements p JOIN workers w ON w.id = p.worker_id
                 WHERE w.state = 'up' AND p.ready_revision IS NOT NULL ORDER BY p.worker_id",
                &[],
            )
            .await?;
        tx.commit().await?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for row in &rows {
            out.entry(text(row, 0)?).or_default().push(text(row, 1)?);
        }
        Ok(out)
    }

    /// An app's most recent runs, newest first.
    pub async fn runs(
        &self,
        tenant: &str,
        app: &str,
        limit: i64,
    ) -> Result<Vec<RunRecord>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = super::app_id(tx.as_mut(), tenant, app).await?;
        let rows = tx
            .query(
                "SELECT trigger_name, scheduled_ms, attempt, state, worker_id, started_ms, duration_ms, message
                 FROM timer_runs WHERE app_id = $1 ORDER BY scheduled_ms DESC, trigger_name LIMIT $2",
                &[id.into(), limit.into()],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(RunRecord {
                    trigger: text(r, 0)?,
                    scheduled_ms: int(r, 1)?,
                    attempt: int(r, 2)?,
                    state: text(r, 3)?,
                    worker: opt_text(r, 4)?,
                    started_ms: opt_int(r, 5)?,
                    duration_ms: opt_int(r, 6)?,
                    message: text(r, 7)?,
                })
            })
            .collect()
    }

    /// Stores what a worker's heartbeat says of the queue triggers it consumes.
    pub async fn record_trigger_states(
        &self,
        worker: &str,
        states: &[pb::TriggerState],
    ) -> Result<(), MetadataError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "DELETE FROM trigger_states WHERE worker_id = $1",
            &[worker.into()],
        )
        .await?;
        let at = now();
        for s in states {
            let Some(id) = super::find_app(tx.as_mut(), &s.tenant, &s.app).await? else {
                continue;
            };
            tx.execute(
                "INSERT INTO trigger_states (app_id, trigger_name, worker_id, failing, in_flight, handled, failed, dead_lettered, backlog, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (app_id, trigger_name, worker_id) DO NOTHING",
                &[
                    id.into(),
                    s.trigger.as_str().into(),
                    worker.into(),
                    s.failing.as_str().into(),
                    i64::from(s.in_flight).into(),
                    i64::try_from(s.handled).unwrap_or(i64::MAX).into(),
                    i64::try_from(s.failed).unwrap_or(i64::MAX).into(),
                    i64::try_from(s.dead_lettered).unwrap_or(i64::MAX).into(),
                    i64::try_from(s.backlog).unwrap_or(i64::MAX).into(),
                    at.into(),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An app's queue triggers as its up workers last reported them.
    pub async fn queue_states(
        &self,
        tenant: &str,
        app: &str,
    ) -> Result<Vec<QueueState>, MetadataError> {
        let mut tx = self.db.begin().await?;
        let id = super::app_id(tx.as_mut(), tenant, app).await?;
        let rows = tx
            .query(
                "SELECT s.trigger_name, s.failing, s.in_flight, s.handled, s.failed, s.dead_lettered, s.backlog, s.updated_ms
                 FROM trigger_states s JOIN workers w ON w.id = s.worker_id
                 WHERE s.app_id = $1 AND w.state <> 'lost' ORDER BY s.trigger_name, s.worker_id",
                &[id.into()],
            )
            .await?;
        tx.commit().await?;
        let mut out: Vec<QueueState> = Vec::new();
        for r in &rows {
            let name = text(r, 0)?;
            if out.last().is_none_or(|s| s.trigger != name) {
                out.push(QueueState {
                    trigger: name,
                    ..QueueState::default()
                });
            }
            if let Some(s) = out.last_mut() {
                s.workers += 1;
                let failing = text(r, 1)?;
                if !failing.is_empty() {
                    s.failing.push(failing);
                }
                s.in_flight += int(r, 2)?;
                s.handled += int(r, 3)?;
                s.failed += int(r, 4)?;
                s.dead_lettered += int(r, 5)?;
                s.backlog = s.backlog.max(int(r, 6)?);
                s.updated_ms = s.updated_ms.max(int(r, 7)?);
            }
        }
        Ok(out)
    }
}
