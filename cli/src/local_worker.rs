//! The worker inside `fnctl up`: applies the control plane's rollouts directly to a route
//! table on this process's runtime, until workers register over gRPC.

use std::path::PathBuf;
use std::sync::Arc;

use stratus_control_plane::artifacts::ArtifactStore;
use stratus_control_plane::rollout::Rollout;
use stratus_control_plane::store::Deployment;
use stratus_worker::binding::Binding;
use stratus_worker::capabilities::{Capabilities, Providers};
use stratus_worker::runtime::Runtime;
use stratus_worker::trigger::routes::Routes;

pub struct LocalWorker {
    pub runtime: Runtime,
    pub routes: Arc<Routes>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub providers: Providers,
    pub data_dir: PathBuf,
}

impl LocalWorker {
    /// Tenants cannot contain `.`, so `TENANT.APP` never aliases another tenant's app in
    /// provider namespaces.
    fn namespace(d: &Deployment) -> String {
        format!("{}.{}", d.tenant, d.app.name)
    }
}

#[async_trait::async_trait]
impl Rollout for LocalWorker {
    async fn apply(&self, d: &Deployment) -> Result<(), String> {
        let bytes = self
            .artifacts
            .get(&d.version.digest)
            .await
            .map_err(|e| e.to_string())?;
        let bindings = d
            .app
            .bindings
            .iter()
            .map(|b| b.parse::<Binding>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let caps = Capabilities::open_shared(&bindings, &self.data_dir, &self.providers)
            .await
            .map_err(|e| e.to_string())?;
        let runtime = self.runtime.clone();
        let name = Self::namespace(d);
        // Compiling is CPU work; keep it off the async threads serving requests.
        let app = tokio::task::spawn_blocking(move || runtime.load(&name, &bytes, caps))
            .await
            .map_err(|e| format!("loading the component: {e}"))?
            .map_err(|e| e.to_string())?;
        self.routes.set(&d.key(), &d.app.routes, Arc::new(app));
        tracing::info!(
            app = %d.key(),
            version = d.version.version,
            routes = ?d.app.routes,
            "serving"
        );
        Ok(())
    }

    async fn remove(&self, tenant: &str, app: &str) {
        self.routes.remove(&format!("{tenant}/{app}"));
        tracing::info!(app = %format!("{tenant}/{app}"), "stopped serving");
    }
}
