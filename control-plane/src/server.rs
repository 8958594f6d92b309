//! Assembling a control plane from its config: backends, auth, the public API, the
//! worker API (gRPC), the assignment-feed hub and the scheduler.

use std::sync::Arc;

use anyhow::Context;

use crate::api::{self, ApiState};
use crate::artifacts::{ArtifactStore, FsArtifacts, S3Artifacts};
use crate::auth::Auth;
use crate::config::{ArtifactsConfig, Config, GrpcConfig, MetadataConfig, SchedulerConfig};
use crate::grpc::{FeedHub, RunHub, WorkerApi};
use crate::metadata::{Database, EmbeddedDb, Metadata, PostgresDb};
use crate::nudge::Nudge;
use crate::scheduler::Scheduler;
use crate::tenancy::Policy;

pub struct ControlPlane {
    pub state: Arc<ApiState>,
    grpc: GrpcConfig,
    scheduler: SchedulerConfig,
    collector: crate::collector::CollectorConfig,
    timers: crate::timers::TimersConfig,
}

impl ControlPlane {
    /// Opens the backends (running migrations) and checks the auth keys.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let db: Arc<dyn Database> = match &config.metadata {
            MetadataConfig::Embedded => {
                Arc::new(EmbeddedDb::open(&config.data_dir.join("metadata.db"))?)
            }
            MetadataConfig::Postgres { url, schema } => {
                Arc::new(PostgresDb::connect(url, schema.as_deref())?)
            }
        };
        let metadata = Metadata::new(db)
            .await
            .context("opening the metadata database")?;
        let artifacts: Arc<dyn ArtifactStore> = match &config.artifacts {
            ArtifactsConfig::Fs => Arc::new(FsArtifacts::new(&config.data_dir.join("components"))?),
            ArtifactsConfig::S3(s3) => Arc::new(
                S3Artifacts::connect(s3.clone())
                    .await
                    .context("opening the S3 component registry")?,
            ),
        };
        let auth = Arc::new(Auth::new(&config.auth).context("loading auth keys")?);
        let policy = Arc::new(
            Policy::new(config.tenancy.clone(), &config.data_dir)
                .context("loading the tenancy policy")?,
        );
        let check = metadata
            .setting_or_insert("secrets_key_check", &policy.key_check()?)
            .await
            .context("reading the secrets key check")?;
        policy.verify_key_check(&check)?;
        // Uploads staged by a process that died mid-request are never resumed.
        let staging_dir = config.data_dir.join("staging");
        if let Err(e) = std::fs::remove_dir_all(&staging_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %staging_dir.display(), error = %e, "clearing the staging directory");
        }
        Ok(Self {
            state: Arc::new(ApiState {
                metadata,
                artifacts,
                auth,
                policy,
                max_upload_bytes: config.max_upload_bytes,
                staging_dir,
                nudge: Nudge::default(),
            }),
            grpc: config.grpc.clone(),
            scheduler: config.scheduler.clone(),
            collector: config.collector.clone(),
            timers: config.timers.clone(),
        })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves the public API on `api` and the worker API on `grpc`, and runs the feed hub
    /// and the scheduler (which schedules only while this replica holds the lease), until
    /// `shutdown` resolves.
    pub async fn serve(
        &self,
        api: tokio::net::TcpListener,
        grpc: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopping = stopped.clone();
        let until = move || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let state = &self.state;
        let hub = FeedHub::default();
        let runs = RunHub::default();
        let workers = WorkerApi {
            metadata: state.metadata.clone(),
            artifacts: state.artifacts.clone(),
            auth: state.auth.clone(),
            policy: state.policy.clone(),
            hub: hub.clone(),
            runs: runs.clone(),
            nudge: state.nudge.clone(),
            scheduler: self.scheduler.clone(),
            stopping,
        };
        let mut server = tonic::transport::Server::builder();
        if let (Some(cert), Some(key)) = (&self.grpc.tls_cert_file, &self.grpc.tls_key_file) {
            let cert =
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            server = server
                .tls_config(
                    tonic::transport::ServerTlsConfig::new()
                        .identity(tonic::transport::Identity::from_pem(cert, key)),
                )
                .context("configuring TLS for the worker API")?;
        } else if self.grpc.tls_cert_file.is_some() || self.grpc.tls_key_file.is_some() {
            anyhow::bail!("[grpc] needs both tls_cert_file and tls_key_file, or neither");
        }
        let grpc_server = server
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .add_service(workers.into_service())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                until(),
            );
        let api_server = axum::serve(api, self.router()).with_graceful_shutdown(until());
        let scheduler = Scheduler::new(
            state.metadata.clone(),
            self.scheduler.clone(),
            state.nudge.clone(),
        );
        let timers = crate::timers::Timers::new(state.metadata.clone(), runs, self.timers.clone());
        let (api_result, grpc_result, (), (), (), ()) = tokio::join!(
            api_server,
            grpc_server,
            hub.run(state.metadata.clone(), state.nudge.clone(), until()),
            scheduler.run(until()),
            crate::collector::run(
                state.metadata.clone(),
                state.artifacts.clone(),
                self.collector.clone(),
                until(),
            ),
            timers.run(until()),
        );
        api_result.context("serving the API")?;
        grpc_result.context("serving the worker API")?;
        Ok(())
    }
}
