//! Garbage collection of the component registry: components no version references (a
//! refused deploy's, a deleted app's) are deleted once they are older than a grace
//! period.
//!
//! An in-flight deploy is never collected: it stores (or, for bytes already stored,
//! touches) its component before it adds the version referencing it, and a pass reads
//! the references *before* it lists the registry. So a component a deploy is about to
//! reference was either referenced when the pass looked, or stored or touched less
//! than a grace period before the pass listed it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::artifacts::ArtifactStore;
use crate::metadata::Metadata;

/// `[collector]` in the control plane's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// How often a pass runs (0: never).
    pub interval_ms: u64,
    /// How long an unreferenced component is kept after it was last stored.
    pub grace_ms: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10 * 60 * 1000,
            grace_ms: 60 * 60 * 1000,
        }
    }
}

/// One pass; returns the digests deleted.
pub async fn collect_once(
    metadata: &Metadata,
    artifacts: &dyn ArtifactStore,
    grace: Duration,
) -> anyhow::Result<Vec<String>> {
    // References first, then the listing: see the module docs.
    let referenced = metadata.referenced_digests().await?;
    let stored = artifacts.list().await?;
    let now = SystemTime::now();
    let mut deleted = Vec::new();
    for (digest, modified) in stored {
        let age = now.duration_since(modified).unwrap_or_default();
        if referenced.contains(&digest) || age < grace {
            continue;
        }
        artifacts.delete(&digest).await?;
        tracing::info!(%digest, age_s = age.as_secs(), "collected an unreferenced component");
        deleted.push(digest);
    }
    Ok(deleted)
}

/// Runs a pass every `interval_ms` until `shutdown` resolves.
pub async fn run(
    metadata: Metadata,
    artifacts: Arc<dyn ArtifactStore>,
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) {
    if config.interval_ms == 0 {
        return shutdown.await;
    }
    let passes = async {
        let mut every = tokio::time::interval(Duration::from_millis(config.interval_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let grace = Duration::from_millis(config.grace_ms);
            if let Err(e) = collect_once(&metadata, artifacts.as_ref(), grace).await {
                tracing::warn!(error = %format!("{e:#}"), "collecting unreferenced components");
            }
        }
    };
    tokio::select! {
        () = passes => {}
        () = shutdown => {}
    }
}
