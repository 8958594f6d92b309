//! One app's share of a worker: at most `app_concurrency` of its invocations run at
//! once and at most `app_queue` wait; past that the request is refused at once with
//! 429 and `Retry-After`. An app waits for its own slots before it competes for the
//! worker's, so however many requests one app gets, it never holds more than its share
//! of the worker's slots and other apps keep being served.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::InvocationError;

pub(super) struct FairShare {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl FairShare {
    pub(super) fn new(concurrency: u32, queue: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            waiting: AtomicUsize::new(0),
            max_waiting: queue as usize,
        }
    }

    /// One of the app's slots, waiting at most `timeout` in a bounded queue.
    pub(super) async fn enter(
        &self,
        timeout: Duration,
    ) -> Result<OwnedSemaphorePermit, InvocationError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(InvocationError::Throttled);
        }
        let _waiting = Waiting(&self.waiting);
        tokio::time::timeout(timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| InvocationError::Throttled)?
            .map_err(|e| InvocationError::Host(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_its_slots_and_queue_an_app_is_refused_at_once() {
        let share = Arc::new(FairShare::new(2, 1));
        let a = share.enter(Duration::from_secs(1)).await.unwrap();
        let _b = share.enter(Duration::from_secs(1)).await.unwrap();
        let queued = {
            let share = share.clone();
            tokio::spawn(async move { share.enter(Duration::from_secs(5)).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = share.enter(Duration::from_secs(5)).await;
        assert!(matches!(refused, Err(InvocationError::Throttled)));
        drop(a);
        assert!(queued.await.unwrap().is_ok());
    }
}
