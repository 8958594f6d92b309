//! What the control plane tells workers when an app's live deployment changes.
//!
//! Until scheduling onto worker pools lands, a control plane either only records
//! deployments ([`RecordOnly`]) or drives a worker in the same process (`fnctl up`).

use crate::store::Deployment;

#[async_trait::async_trait]
pub trait Rollout: Send + Sync {
    /// Makes `deployment` (version and current bindings) what serves the app. The
    /// returned error is reported to the caller as a warning: the change is recorded.
    async fn apply(&self, deployment: &Deployment) -> Result<(), String>;
    /// Stops serving an app (deleted, or no live version).
    async fn remove(&self, tenant: &str, app: &str);
}

/// A control plane with no workers attached: the store is the whole truth.
pub struct RecordOnly;

#[async_trait::async_trait]
impl Rollout for RecordOnly {
    async fn apply(&self, _deployment: &Deployment) -> Result<(), String> {
        Ok(())
    }
    async fn remove(&self, _tenant: &str, _app: &str) {}
}
