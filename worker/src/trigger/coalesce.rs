//! Response coalescing: while other requests are being handled, a finished response
//! waits until its worker thread has run everything else it has ready, so the thread's
//! responses go out together.
//!
//! A client that shares the machine (a proxy or sidecar in front of the worker, a load
//! generator) sleeps while it waits for responses. Every response that finds it asleep
//! costs the worker the wake-up, a cross-CPU interrupt (on a VM an exit as well), and
//! usually a preemption by the client. Sent in a burst, the responses after the first
//! find the client awake.
//!
//! The wait is tokio's `yield_now` in the request's service future, just before the
//! response goes to hyper (which writes it in the same poll). The scheduler resumes it
//! once the thread's local queue is empty (on the same thread, after polling for I/O)
//! or at its next maintenance pass (every 61 task polls), whichever comes first. Only
//! a response whose request had company waits: a lone request has nothing to share a
//! burst with, and goes out at once. Nor does one wait while a guest spins on the
//! worker: its thread then polls it a tick (5 ms) at a time, and 61 polls of that would
//! hold every other app's response for a third of a second. Writes before the response (`100 Continue`) and
//! the rest of a streamed body never wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Responses held so far, over all listeners (for tests).
static HELD_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Responses held since the process started.
pub fn held_total() -> u64 {
    HELD_TOTAL.load(Ordering::Relaxed)
}

/// Requests being handled on one listener: from dispatch until the response is ready.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts a request as being handled until [`Handling::respond`] or a drop.
    pub fn start(&self) -> Handling {
        self.0.fetch_add(1, Ordering::Relaxed);
        Handling(self.0.clone())
    }
}

/// One request being handled; see [`InFlight::start`].
pub struct Handling(Arc<AtomicUsize>);

impl Handling {
    /// The request's response is ready: it stops counting, and waits for the rest of
    /// its thread's burst if other requests are still being handled.
    pub async fn respond<R>(self, response: R) -> R {
        let in_flight = self.0.clone();
        drop(self);
        if in_flight.load(Ordering::Relaxed) > 0 && !crate::runtime::guests_spinning() {
            HELD_TOTAL.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
        response
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
