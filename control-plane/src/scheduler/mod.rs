//! The scheduler: on exactly one control-plane replica at a time (the holder of a lease
//! row in the metadata database), it marks silent workers lost and places every live app
//! on workers of its pool, level-triggered: each pass reads the whole desired state, so
//! a missed change is caught by the next one.

pub mod plan;

use std::time::Duration;

use crate::config::SchedulerConfig;
use crate::metadata::Metadata;
use crate::nudge::Nudge;

/// The lease row the scheduling replica holds.
const LEASE: &str = "scheduler";

pub struct Scheduler {
    metadata: Metadata,
    /// Who this replica is in the lease row.
    holder: String,
    config: SchedulerConfig,
    nudge: Nudge,
}

impl Scheduler {
    pub fn new(metadata: Metadata, config: SchedulerConfig, nudge: Nudge) -> Self {
        Self {
            metadata,
            holder: format!("cp-{}", uuid::Uuid::new_v4().simple()),
            config,
            nudge,
        }
    }

    /// Schedules while this replica holds the lease, and keeps trying to take it while
    /// another does, until `shutdown` resolves; then gives the lease up.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let ttl = Duration::from_millis(self.config.lease_ttl_ms);
        let lost_after = Duration::from_millis(self.config.lost_after_ms);
        let interval = Duration::from_millis(self.config.interval_ms.max(10));
        let mut changes = self.nudge.subscribe();
        let mut leader = false;
        // Heartbeats sent while no replica scheduled (or to a replica that died) were not
        // seen: a new leader waits one timeout before it calls anyone lost.
        let mut leading_since = tokio::time::Instant::now();
        loop {
            match self.metadata.try_lease(LEASE, &self.holder, ttl).await {
                Ok(true) => {
                    if !leader {
                        tracing::info!(holder = %self.holder, "this replica now schedules");
                        leading_since = tokio::time::Instant::now();
                    }
                    leader = true;
                }
                Ok(false) => {
                    if leader {
                        tracing::warn!(holder = %self.holder, "lost the scheduler lease");
                    }
                    leader = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the scheduler lease");
                    leader = false;
                }
            }
            if leader {
                let judge_liveness = (leading_since.elapsed() >= lost_after).then_some(lost_after);
                match self
                    .metadata
                    .schedule_pass(LEASE, &self.holder, judge_liveness, plan::plan)
                    .await
                {
                    Ok(Some(report)) => {
                        if report.added + report.removed + report.lost.len() > 0 {
                            tracing::info!(
                                added = report.added,
                                removed = report.removed,
                                lost = report.lost.len(),
                                "placements changed"
                            );
                            self.nudge.feeds();
                        }
                    }
                    Ok(None) => leader = false,
                    Err(e) => tracing::warn!(error = %e, "scheduling pass failed"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = changes.changed() => {}
                () = &mut shutdown => break,
            }
        }
        if leader && let Err(e) = self.metadata.release_lease(LEASE, &self.holder).await {
            tracing::warn!(error = %e, "releasing the scheduler lease");
        }
    }
}
