//! Wake-ups inside one control-plane replica: a change the API or a worker made wakes
//! the scheduler and the assignment streams at once instead of at their next poll. Other
//! replicas notice the same change at their next poll of the database.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Nudge {
    scheduler: watch::Sender<u64>,
    feeds: watch::Sender<u64>,
}

impl Default for Nudge {
    fn default() -> Self {
        Self {
            scheduler: watch::channel(0).0,
            feeds: watch::channel(0).0,
        }
    }
}

impl Nudge {
    /// Desired state changed: the scheduler should run, then the streams resend.
    pub fn changed(&self) {
        self.scheduler.send_modify(|n| *n = n.wrapping_add(1));
        self.feeds();
    }

    /// Placements or readiness changed: the streams should resend.
    pub fn feeds(&self) {
        self.feeds.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.scheduler.subscribe()
    }

    pub fn subscribe_feeds(&self) -> watch::Receiver<u64> {
        self.feeds.subscribe()
    }
}
