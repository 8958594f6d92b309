//! The CPU time limit of one invocation, as opposed to its wall-clock deadline: time a
//! guest spends waiting (on a key-value store, a timer, its client) does not count.
//!
//! It is counted with the epoch the engine already advances every [`EPOCH_TICK`]: a tick
//! that finds the guest running reaches its epoch deadline, which calls [`on_tick`]. So
//! it is a sample, exact to about one tick, and costs nothing while the guest does not
//! run through a tick. At each tick the guest also yields to the scheduler, after the
//! thread has polled for I/O, so a busy loop shares its thread with new requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::{StoreContextMut, UpdateDeadline};

use super::engine::EPOCH_TICK;
use super::state::InvocationState;

/// Ticks a guest must be seen running through before it counts as spinning.
const SPINNING_AFTER_TICKS: u64 = 2;

/// Invocations on this worker seen running through [`SPINNING_AFTER_TICKS`] ticks.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// Whether a guest is running long on this worker right now. Its thread then polls it
/// a tick at a time, so holding a response until that thread's queue drains (response
/// coalescing) would hold it for many ticks: other apps' responses go out at once.
pub fn guests_spinning() -> bool {
    SPINNING.load(Ordering::Relaxed) > 0
}

/// The ticks an invocation has been seen running, and how many it may be.
#[derive(Debug)]
pub(super) struct CpuBudget {
    ticks: u64,
    limit_ticks: u64,
    /// For the error message; `Duration::MAX` without a limit, which is never reached.
    limit: Duration,
    /// Counted in [`SPINNING`] until dropped.
    spinning: bool,
}

impl Drop for CpuBudget {
    fn drop(&mut self) {
        self.stop_spinning();
    }
}

impl CpuBudget {
    /// A budget of `limit` of CPU time (`None`: only the wall-clock deadline applies).
    pub fn new(limit: Option<Duration>) -> Self {
        let limit_ticks = limit.map_or(u64::MAX, |limit| {
            let ticks = limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos().max(1));
            u64::try_from(ticks).unwrap_or(u64::MAX)
        });
        Self {
            ticks: 0,
            limit_ticks,
            limit: limit.unwrap_or(Duration::MAX),
            spinning: false,
        }
    }

    /// Counts one tick the guest was running; `false` once that is over the budget.
    fn spend_tick(&mut self) -> bool {
        self.ticks = self.ticks.saturating_add(1);
        if self.ticks >= SPINNING_AFTER_TICKS && !self.spinning {
            self.spinning = true;
            SPINNING.fetch_add(1, Ordering::Relaxed);
        }
        self.ticks <= self.limit_ticks
    }

    fn stop_spinning(&mut self) {
        if std::mem::take(&mut self.spinning) {
            SPINNING.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Starts counting again: an instance made ahead of its request has run its start-up,
    /// which is not the request's.
    pub fn restart(&mut self) {
        self.ticks = 0;
        self.stop_spinning();
    }
}

/// The trap of an invocation over its CPU time limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the function used more than its {0:?} of CPU time")]
pub struct CpuLimitExceeded(pub Duration);

/// The store's epoch deadline callback: counts the tick, then yields and waits for the
/// next one, or traps once the budget is spent.
pub(super) fn on_tick(
    mut store: StoreContextMut<'_, InvocationState>,
) -> wasmtime::Result<UpdateDeadline> {
    let budget = &mut store.data_mut().cpu;
    if budget.spend_tick() {
        // tokio's yield defers the task until its worker thread has polled for I/O, so
        // requests that arrived meanwhile are seen after one round of the spinning
        // guests' slices, not after 61 of them (a plain self-wake, wasmtime's `Yield`,
        // put the guest straight back in the run queue: 300 ms of slices passed before
        // a new request was noticed).
        return Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ));
    }
    Err(CpuLimitExceeded(budget.limit).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_lasts_the_ticks_its_limit_covers() {
        // 12 ms at 5 ms a tick: the third tick still fits, the fourth does not.
        let mut budget = CpuBudget::new(Some(Duration::from_millis(12)));
        assert!((0..3).all(|_| budget.spend_tick()));
        assert!(!budget.spend_tick());
        budget.restart();
        assert!(budget.spend_tick());
    }

    #[test]
    fn no_limit_never_runs_out() {
        let mut budget = CpuBudget::new(None);
        assert!((0..10_000).all(|_| budget.spend_tick()));
    }
}
