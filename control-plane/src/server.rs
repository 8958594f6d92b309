//! Assembling a control plane from its config: backends, auth, the API router, and the
//! first rollout of everything already live.

use std::sync::Arc;

use anyhow::Context;

use crate::api::{self, ApiState};
use crate::artifacts::{ArtifactStore, FsArtifacts, S3Artifacts};
use crate::auth::Auth;
use crate::config::{ArtifactsConfig, Config, MetadataConfig};
use crate::rollout::Rollout;
use crate::store::{Database, EmbeddedDb, PostgresDb, Store};

pub struct ControlPlane {
    pub state: Arc<ApiState>,
}

impl ControlPlane {
    /// Opens the backends (running migrations) and checks the auth keys.
    pub async fn open(config: &Config, rollout: Arc<dyn Rollout>) -> anyhow::Result<Self> {
        let db: Arc<dyn Database> = match &config.metadata {
            MetadataConfig::Embedded => {
                Arc::new(EmbeddedDb::open(&config.data_dir.join("metadata.db"))?)
            }
            MetadataConfig::Postgres { url, schema } => {
                Arc::new(PostgresDb::connect(url, schema.as_deref())?)
            }
        };
        let store = Store::new(db).await.context("opening the metadata store")?;
        let artifacts: Arc<dyn ArtifactStore> = match &config.artifacts {
            ArtifactsConfig::Fs => Arc::new(FsArtifacts::new(&config.data_dir.join("components"))?),
            ArtifactsConfig::S3(s3) => Arc::new(
                S3Artifacts::connect(s3.clone())
                    .await
                    .context("opening the S3 component registry")?,
            ),
        };
        let auth = Auth::new(&config.auth).context("loading auth keys")?;
        // Uploads staged by a process that died mid-request are never resumed.
        let staging_dir = config.data_dir.join("staging");
        if let Err(e) = std::fs::remove_dir_all(&staging_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %staging_dir.display(), error = %e, "clearing the staging directory");
        }
        Ok(Self {
            state: Arc::new(ApiState {
                store,
                artifacts,
                auth,
                rollout,
                max_upload_bytes: config.max_upload_bytes,
                staging_dir,
                rollouts: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Rolls out every live deployment, e.g. to an in-process worker after a restart.
    /// Failures are logged per app; the rest still roll out.
    pub async fn roll_out_all(&self) -> anyhow::Result<()> {
        for d in self.state.store.deployments().await? {
            if let Err(e) = self.state.rollout.apply(&d).await {
                tracing::warn!(app = %d.key(), error = %e, "rollout failed");
            }
        }
        Ok(())
    }

    /// Serves the API until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving the API")
    }
}
