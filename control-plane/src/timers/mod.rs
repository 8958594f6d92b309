//! Timer triggers: every replica runs this loop; the database makes each scheduled time
//! fire once across all of them.
//!
//! - **Claim.** When a trigger's next time comes, every replica inserts its run row; the
//!   unique key `(app, trigger, scheduled time)` lets exactly one insert land.
//! - **Start.** Each replica starts due runs on workers it holds a run stream for and
//!   that have the app ready, through a conditional update from `pending` to `running`,
//!   so no two replicas start the same attempt.
//! - **Retry.** A failed attempt is due again after the trigger's backoff (doubling), up
//!   to `retries` attempts; an attempt whose worker never reports back is retried once
//!   `[timers] run_deadline_ms` passes.
//! - **Catch-up.** When a replica first sees a trigger (at start, or when it is made),
//!   times more than [`LATE_MS`] in the past since the last claimed one follow the
//!   trigger's `catch_up`: `skip` none, `one` the latest, `all` each (the latest
//!   [`schedule::MAX_CATCH_UP`], looking back at most a day). So do times a replica
//!   could not claim in time because the database was away.
//! - **History.** Finished runs are kept a week; runs of a removed trigger or app are
//!   skipped, never left to block others.

pub mod schedule;

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use stratus_proto::pb;

pub use self::schedule::{CatchUp, TimerError, TimerTrigger, canonical_timers};
use crate::grpc::RunHub;
use crate::metadata::{Metadata, TimerRow};

/// A scheduled time this far in the past is missed (caught up by policy), not late.
pub const LATE_MS: i64 = 5_000;
/// How often the loop looks for new or changed triggers and for due retries.
const REFRESH: Duration = Duration::from_millis(500);
/// How far back catch-up looks for missed times.
pub const CATCH_UP_WINDOW_MS: i64 = 24 * 3_600_000;
/// How long finished runs stay in the history.
const KEEP_RUNS_MS: i64 = 7 * 24 * 3_600_000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// `[timers]` in the control plane's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    /// How long a worker has to report a run's outcome before it is retried.
    pub run_deadline_ms: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        Self {
            run_deadline_ms: 60_000,
        }
    }
}

/// A trigger as this replica tracks it.
struct Tracked {
    row: TimerRow,
    trigger: TimerTrigger,
    /// Its next scheduled time this replica has not claimed yet.
    next_ms: Option<i64>,
}

fn now_ms() -> i64 {
    crate::metadata::now_ms()
}

pub struct Timers {
    metadata: Metadata,
    hub: RunHub,
    config: TimersConfig,
    tracked: HashMap<(String, String), Tracked>,
    /// Rotates runs over an app's ready workers.
    turn: usize,
}

impl Timers {
    pub fn new(metadata: Metadata, hub: RunHub, config: TimersConfig) -> Self {
        Self {
            metadata,
            hub,
            config,
            tracked: HashMap::new(),
            turn: 0,
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut refreshed = tokio::time::Instant::now() - REFRESH;
        let mut pruned = tokio::time::Instant::now() - PRUNE_EVERY;
        loop {
            let mut look = false;
            let mut failed = false;
            if refreshed.elapsed() >= REFRESH {
                refreshed = tokio::time::Instant::now();
                look = true;
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "reading timer triggers");
                    failed = true;
                }
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = tokio::time::Instant::now();
                if let Err(e) = self.metadata.prune_runs(now_ms() - KEEP_RUNS_MS).await {
                    tracing::warn!(error = %e, "pruning the timer run history");
                }
            }
            // Runs due now, and retries whose backoff ended since the last look.
            let claimed = match self.claim_due().await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming timer runs; trying again");
                    failed = true;
                    false
                }
            };
            if (claimed || look)
                && let Err(e) = self.start_due().await
            {
                tracing::warn!(error = %e, "starting timer runs");
                failed = true;
            }
            let now = now_ms();
            let next = self
                .tracked
                .values()
                .filter_map(|t| t.next_ms)
                .min()
                .map(|at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)));
            let mut wait = next
                .unwrap_or(REFRESH)
                .min(REFRESH.saturating_sub(refreshed.elapsed()));
            if failed {
                // The database is away: never spin on it.
                wait = wait.max(REFRESH);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// Picks up new, changed and removed triggers. A trigger new to this replica
    /// resumes after its last claimed time by its catch-up policy; a changed one fires
    /// from now on.
    async fn refresh(&mut self) -> Result<(), crate::metadata::MetadataError> {
        let rows = self.metadata.timer_triggers().await?;
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            let trigger: TimerTrigger = match row.spec.parse() {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(app = %row.app, spec = %row.spec, error = %e, "skipping an unreadable timer");
                    continue;
                }
            };
            let key = (row.app_id.clone(), trigger.name.clone());
            seen.insert(key.clone());
            let known = self.tracked.get(&key);
            if known.is_some_and(|t| t.row.spec == row.spec) {
                continue;
            }
            let now = now_ms();
            let next_ms = if known.is_some() {
                trigger.next_after(now)
            } else {
                let last = self
                    .metadata
                    .last_scheduled(&row.app_id, &trigger.name)
                    .await?;
                match last {
                    // Never fired: it starts now.
                    None => trigger.next_after(now),
                    Some(last) => self.catch_up(&row, &trigger, last, now).await?,
                }
            };
            self.tracked.insert(
                key,
                Tracked {
                    row,
                    trigger,
                    next_ms,
                },
            );
        }
        self.tracked.retain(|key, _| seen.contains(key));
        self.metadata.skip_orphan_runs().await?;
        Ok(())
    }

    /// Fires, by the trigger's policy, the times after `last` that are more than
    /// [`LATE_MS`] old (looking back at most [`CATCH_UP_WINDOW_MS`]); returns the next
    /// time to claim as usual.
    async fn catch_up(
        &self,
        row: &TimerRow,
        trigger: &TimerTrigger,
        last: i64,
        now: i64,
    ) -> Result<Option<i64>, crate::metadata::MetadataError> {
        let late = now - LATE_MS;
        if trigger.catch_up != CatchUp::Skip && last < late {
            let from = last.max(now - CATCH_UP_WINDOW_MS);
            let keep = match trigger.catch_up {
                CatchUp::One => 1,
                _ => schedule::MAX_CATCH_UP,
            };
            let missed = trigger.latest_due(from, late, keep);
            for at in missed {
                self.claim(row, trigger, at).await?;
            }
        }
        Ok(trigger.next_after(last.max(late)))
    }

    async fn claim(
        &self,
        row: &TimerRow,
        trigger: &TimerTrigger,
        at: i64,
    ) -> Result<bool, crate::metadata::MetadataError> {
        let claimed = self
            .metadata
            .claim_run(
                &row.app_id,
                &trigger.name,
                at,
                trigger.retries,
                trigger.backoff_ms,
            )
            .await?;
        if claimed {
            tracing::debug!(app = %row.app, trigger = %trigger.name, scheduled_ms = at, "timer fired");
        }
        Ok(claimed)
    }

    /// Claims every time that has come; true if any did (on any replica). A time more
    /// than [`LATE_MS`] old (the database was away) goes through the catch-up policy.
    async fn claim_due(&mut self) -> Result<bool, crate::metadata::MetadataError> {
        let now = now_ms();
        let mut any = false;
        let keys: Vec<(String, String)> = self.tracked.keys().cloned().collect();
        for key in keys {
            let Some(t) = self.tracked.get(&key) else {
                continue;
            };
            let Some(at) = t.next_ms.filter(|at| *at <= now) else {
                continue;
            };
            let next = if at < now - LATE_MS {
                let (row, trigger) = (t.row.clone(), t.trigger.clone());
                self.catch_up(&row, &trigger, at - 1, now).await?
            } else {
                let mut at = at;
                loop {
                    self.claim(&t.row, &t.trigger, at).await?;
                    match t.trigger.next_after(at) {
                        Some(next) if next <= now => at = next,
                        other => break other,
                    }
                }
            };
            any = true;
            if let Some(t) = self.tracked.get_mut(&key) {
                t.next_ms = next;
            }
        }
        Ok(any)
    }

    /// Starts due runs on workers this replica holds a stream for.
    async fn start_due(&mut self) -> Result<(), crate::metadata::MetadataError> {
        let due = self.metadata.due_runs(256).await?;
        if due.is_empty() {
            return Ok(());
        }
        let ready = self.metadata.ready_workers().await?;
        let deadline = now_ms() + i64::try_from(self.config.run_deadline_ms).unwrap_or(60_000);
        for run in due {
            let Some(t) = self.tracked.get(&(run.app_id.clone(), run.trigger.clone())) else {
                continue;
            };
            let held: Vec<&String> = ready
                .get(&run.app_id)
                .into_iter()
                .flatten()
                .filter(|w| self.hub.holds(w))
                .collect();
            if held.is_empty() {
                // Another replica may hold one of its workers; it stays due meanwhile.
                continue;
            }
            self.turn = self.turn.wrapping_add(1);
            let Some(worker) = held.get(self.turn % held.len()).map(|w| (*w).clone()) else {
                continue;
            };
            if !self.metadata.start_run(&run.id, &worker, deadline).await? {
                continue;
            }
            let sent = self.hub.send(
                &worker,
                pb::Run {
                    run_id: run.id.clone(),
                    tenant: t.row.tenant.clone(),
                    app: t.row.app.clone(),
                    trigger: run.trigger.clone(),
                    scheduled_ms: u64::try_from(run.scheduled_ms).unwrap_or(0),
                    attempt: u32::try_from(run.attempt).unwrap_or(u32::MAX),
                    route: t.trigger.route.clone().unwrap_or_default(),
                },
            );
            if !sent {
                tracing::warn!(worker = %worker, run = %run.id, "the worker's run stream went away; the run is retried after its deadline");
            }
        }
        Ok(())
    }
}
