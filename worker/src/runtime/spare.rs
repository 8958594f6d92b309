//! Spare instances: an app's next instance, made while the worker is idle, so that the
//! request that takes it skips instantiation. A spare has run nothing but its own
//! start-up, serves exactly one request and is then torn down like any other instance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use super::state::InvocationState;

/// An instantiated component waiting for its request.
pub(super) struct Spare {
    pub store: Store<InvocationState>,
    pub proxy: Proxy,
    /// Its share of the runtime's spare budget, given back when a request takes it.
    pub _budget: OwnedSemaphorePermit,
}

/// One app's room for a spare.
#[derive(Default)]
pub(super) struct SpareSlot {
    spare: Mutex<Option<Spare>>,
    /// A spare is being made; a second one would only waste the budget.
    making: AtomicBool,
    /// Making one failed (its start-up trapped or overran the deadline); the app's
    /// requests instantiate for themselves, where such a failure reaches the client.
    disabled: AtomicBool,
    taken: AtomicU64,
}

impl SpareSlot {
    /// The spare, ready to run now: its epoch deadline counts from now, not from when it
    /// was made (an expired one would make the guest yield at its first check).
    pub fn take(&self) -> Option<(Store<InvocationState>, Proxy)> {
        let Spare {
            mut store, proxy, ..
        } = self.evict()?;
        store.set_epoch_deadline(1);
        store.data_mut().cpu.restart();
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some((store, proxy))
    }

    /// The spare, for dropping: its app has not been asked for since it was made.
    pub fn evict(&self) -> Option<Spare> {
        self.lock().take()
    }

    pub fn ready(&self) -> bool {
        self.lock().is_some()
    }

    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// A panic while the lock was held left at worst a spare in or out of the slot;
    /// either is a valid state.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Spare>> {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims the right to make the next spare: none is waiting, none is being made and
    /// making them has not failed before. The claim is taken before the slot is looked
    /// at, so two callers can never both pass.
    pub fn claim(self: &Arc<Self>) -> Option<Claim> {
        if self.disabled.load(Ordering::Relaxed)
            || self
                .making
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        let claim = Claim(self.clone());
        let empty = self.lock().is_none();
        empty.then_some(claim)
    }
}

/// The right to make an app's next spare. Dropped without [`Claim::finish`] (the task
/// making it was cancelled or panicked), it only gives the right back.
pub(super) struct Claim(Arc<SpareSlot>);

impl Claim {
    /// The spare made, or `None` when making it failed, which stops further attempts.
    pub fn finish(self, spare: Option<Spare>) {
        match spare {
            Some(spare) => *self.0.lock() = Some(spare),
            None => self.0.disabled.store(true, Ordering::Relaxed),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.making.store(false, Ordering::Release);
    }
}
