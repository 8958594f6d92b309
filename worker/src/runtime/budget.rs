//! One worker's memory budget, shared by every invocation: what guests' linear memories
//! grow to and what host resources they may hold, so the per-invocation bounds cannot
//! multiply into gigabytes when many invocations hoard at once.
//!
//! - Linear memory is charged as it grows, from three quarters of the budget; a growth
//!   past it fails (the guest sees `memory.grow` return -1, and typically traps).
//! - Host resources (header maps, buffered body writes, …) are granted per
//!   invocation from the other quarter: each may hold [`FLOOR_RESOURCES`] uncharged,
//!   and up to [`MAX_RESOURCES`](super::host_memory::MAX_RESOURCES) while that quarter
//!   has room for their worst case of [`RESOURCE_BYTES`] each. Grants reserve the worst
//!   case up front, so they get a share of their own: busy invocations holding grants
//!   never leave a new one without memory to start in.
//!
//! Everything charged returns to the budget when the invocation's store is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits};

/// Resources an invocation always may hold: a plain HTTP handler needs a few dozen.
pub(super) const FLOOR_RESOURCES: usize = 64;

/// The most host memory one resource can stand for (a full header map or body write).
pub const RESOURCE_BYTES: usize = super::host_memory::MAX_FIELDS_BYTES;

/// The worker's budget: linear memory and host-resource grants, each from its share.
#[derive(Debug)]
pub struct MemoryBudget {
    linear: Pool,
    host: Pool,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        let host = limit / 4;
        Self {
            linear: Pool::new(limit - host),
            host: Pool::new(host),
        }
    }

    /// Bytes charged now (for tests and metrics).
    pub fn used(&self) -> usize {
        self.linear.used() + self.host.used()
    }

    /// The most linear memory ever charged at once (for tests and metrics).
    pub fn linear_peak(&self) -> usize {
        self.linear.peak.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct Pool {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl Pool {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` if they fit.
    fn try_take(&self, bytes: usize) -> bool {
        match self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.limit)
            }) {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::AcqRel);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes as many `unit`-sized pieces as fit, up to `most`; returns how many.
    fn take_up_to(&self, unit: usize, most: usize) -> usize {
        let mut taken = 0;
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let room = self.limit.saturating_sub(used) / unit.max(1);
                taken = room.min(most);
                Some(used + taken * unit)
            });
        taken
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What one invocation holds of the budget; returned when dropped.
#[derive(Debug)]
pub(super) struct Charge {
    budget: Arc<MemoryBudget>,
    linear: usize,
    host: usize,
    /// The last growth charged, returned if the growth then fails.
    last_growth: usize,
    /// Whether the budget refused a growth.
    refused: bool,
}

impl Charge {
    pub(super) fn new(budget: Arc<MemoryBudget>) -> Self {
        Self {
            budget,
            linear: 0,
            host: 0,
            last_growth: 0,
            refused: false,
        }
    }

    /// Linear memory growth.
    fn take(&mut self, bytes: usize) -> bool {
        let ok = self.budget.linear.try_take(bytes);
        if ok {
            self.linear += bytes;
            self.last_growth = bytes;
        } else {
            self.refused = true;
        }
        ok
    }

    /// A growth charged but not made (the allocator failed): its bytes go back.
    fn growth_failed(&mut self) {
        let bytes = std::mem::take(&mut self.last_growth);
        self.linear -= bytes;
        self.budget.linear.give(bytes);
    }

    /// Whether the budget refused this invocation memory.
    pub(super) fn refused(&self) -> bool {
        self.refused
    }

    /// Grants resources beyond the floor, up to `most` in all; returns the capacity the
    /// invocation's resource table may have.
    pub(super) fn grant_resources(&mut self, most: usize) -> usize {
        let extra = self
            .budget
            .host
            .take_up_to(RESOURCE_BYTES, most.saturating_sub(FLOOR_RESOURCES));
        self.host += extra * RESOURCE_BYTES;
        FLOOR_RESOURCES + extra
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.linear.give(self.linear);
        self.budget.host.give(self.host);
    }
}

/// The store's limiter: the per-instance limits, then the worker's budget.
pub(super) struct Limiter {
    pub(super) limits: StoreLimits,
    pub(super) charge: Charge,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if !self.limits.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        Ok(self.charge.take(desired.saturating_sub(current)))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.charge.growth_failed();
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_return_when_dropped_and_never_exceed_the_limit() {
        // A quarter, 10 resources' worth, for grants; the rest for linear memory.
        let budget = Arc::new(MemoryBudget::new(40 * RESOURCE_BYTES));
        let mut a = Charge::new(budget.clone());
        assert_eq!(a.grant_resources(FLOOR_RESOURCES + 8), FLOOR_RESOURCES + 8);
        let mut b = Charge::new(budget.clone());
        // Only two more fit: b gets the floor and those.
        assert_eq!(b.grant_resources(1000), FLOOR_RESOURCES + 2);
        // Grants never take linear memory's share.
        assert!(b.take(30 * RESOURCE_BYTES));
        assert!(!b.take(1));
        drop(a);
        assert!(!b.take(1), "a's grant returns to the grants' share");
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
