//! The generation of every pool, polled from the metadata database by one task per
//! replica and handed to every assignment stream of the replica: a stream rebuilds its
//! worker's feed only when its pool's generation moved.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metadata::Metadata;
use crate::nudge::Nudge;

/// How often other replicas' changes are looked for.
const POLL: Duration = Duration::from_millis(100);

pub type Generations = Arc<HashMap<String, u64>>;

#[derive(Clone)]
pub struct FeedHub {
    generations: watch::Sender<Generations>,
}

impl Default for FeedHub {
    fn default() -> Self {
        Self {
            generations: watch::channel(Generations::default()).0,
        }
    }
}

impl FeedHub {
    pub fn subscribe(&self) -> watch::Receiver<Generations> {
        self.generations.subscribe()
    }

    /// Polls pool generations until `shutdown` resolves, at once when `nudge` says a
    /// change was made here.
    pub async fn run(self, metadata: Metadata, nudge: Nudge, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut changes = nudge.subscribe_feeds();
        loop {
            match metadata.pool_generations().await {
                Ok(now) => {
                    self.generations.send_if_modified(|current| {
                        if **current == now {
                            false
                        } else {
                            *current = Arc::new(now);
                            true
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "reading pool generations"),
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = changes.changed() => {}
                () = &mut shutdown => return,
            }
        }
    }
}
