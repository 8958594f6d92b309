//! The timer runs this replica hands to the workers whose run streams it holds.
//!
//! Each worker keeps one `WatchRuns` stream open to the replica it follows; the timer
//! loop of that replica starts runs only on workers it holds a stream for (the
//! database's conditional update decides which replica starts a run), so a dispatched
//! run never waits on another replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stratus_proto::pb;
use tokio::sync::mpsc;

/// A worker's current stream: its number (a newer stream replaces an older one) and
/// where its runs go.
type Streams = HashMap<String, (u64, mpsc::Sender<pb::Run>)>;

/// Open run streams by worker id.
#[derive(Clone, Default)]
pub struct RunHub {
    streams: Arc<Mutex<Streams>>,
}

impl RunHub {
    fn streams(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a worker's new stream, replacing an older one of the same worker.
    pub fn attach(&self, worker: &str) -> (u64, mpsc::Receiver<pb::Run>) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(256);
        self.streams().insert(worker.to_string(), (id, tx));
        (id, rx)
    }

    /// Forgets a stream once it ends (unless a newer one replaced it).
    pub fn detach(&self, worker: &str, id: u64) {
        let mut streams = self.streams();
        if streams
            .get(worker)
            .is_some_and(|(current, _)| *current == id)
        {
            streams.remove(worker);
        }
    }

    /// Whether this replica can hand `worker` a run now.
    pub fn holds(&self, worker: &str) -> bool {
        self.streams()
            .get(worker)
            .is_some_and(|(_, tx)| !tx.is_closed())
    }

    /// Hands a run to a worker; false if its stream is gone or full.
    pub fn send(&self, worker: &str, run: pb::Run) -> bool {
        let tx = self.streams().get(worker).map(|(_, tx)| tx.clone());
        tx.is_some_and(|tx| tx.try_send(run).is_ok())
    }
}
