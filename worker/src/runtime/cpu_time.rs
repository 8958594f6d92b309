//! The CPU time limit of one invocation, as opposed to its wall-clock deadline: time a
//! guest spends waiting (on a key-value store, a timer, its client) does not count.
//!
//! It is counted with the epoch the engine already advances every [`EPOCH_TICK`]: a tick
//! that finds the guest running reaches its epoch deadline, which calls [`on_tick`]. So
//! it is a sample, exact to about one tick, and costs nothing while the guest does not
//! run through a tick. At each tick the guest also yields to the scheduler, so a busy
//! loop shares its thread.

use std::time::Duration;

use wasmtime::{StoreContextMut, UpdateDeadline};

use super::engine::EPOCH_TICK;
use super::state::InvocationState;

/// The ticks an invocation has been seen running, and how many it may be.
#[derive(Debug, Clone)]
pub(super) struct CpuBudget {
    ticks: u64,
    limit_ticks: u64,
    /// For the error message; `Duration::MAX` without a limit, which is never reached.
    limit: Duration,
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
        }
    }

    /// Counts one tick the guest was running; `false` once that is over the budget.
    fn spend_tick(&mut self) -> bool {
        self.ticks = self.ticks.saturating_add(1);
        self.ticks <= self.limit_ticks
    }

    /// Starts counting again: an instance made ahead of its request has run its start-up,
    /// which is not the request's.
    pub fn restart(&mut self) {
        self.ticks = 0;
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
        return Ok(UpdateDeadline::Yield(1));
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
