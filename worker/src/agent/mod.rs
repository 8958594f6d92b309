//! The worker's side of the worker API: register with the control plane, heartbeat,
//! follow the assignment feed and report progress, and keep serving the last
//! assignments whenever the control plane is away.

pub mod assignments;
pub mod fetch;
mod runs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use stratus_proto::pb;
use stratus_proto::pb::worker_control_client::WorkerControlClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use self::assignments::{Assignments, Reporter, Setup};
use self::fetch::{Components, Source};
use crate::capabilities::Providers;
use crate::queues::EmbeddedQueues;
use crate::runtime::Runtime;
use crate::trigger::routes::Routes;

/// How a worker reaches the control plane and presents itself.
#[derive(Clone)]
pub struct AgentConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub control_plane: String,
    /// A worker token minted for `pool`.
    pub token: String,
    /// PEM CA certificate that signs the control plane's (for `https://`).
    pub ca_cert: Option<Vec<u8>>,
    pub worker_id: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    /// Apps it will hold at most.
    pub capacity: u32,
    /// Where the pool's other workers reach this one's HTTP listener.
    pub http_address: String,
    /// Holds the last assignments and the components they need.
    pub state_dir: PathBuf,
    /// Where embedded providers keep their files.
    pub providers_dir: PathBuf,
    /// How long SIGTERM waits for this worker's apps to move elsewhere.
    pub drain_timeout: Duration,
}

type Client = WorkerControlClient<InterceptedService<Channel, Bearer>>;

/// The largest message the worker accepts from the control plane.
const MAX_FEED_BYTES: usize = 64 << 20;

/// Adds the worker token to every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub struct Agent {
    config: AgentConfig,
    client: Client,
    assignments: Arc<Assignments>,
    /// The heartbeat interval the control plane asked for, in milliseconds.
    interval: Arc<AtomicU64>,
}

/// Fetches components over the worker API.
struct ControlPlaneSource(Client);

#[async_trait::async_trait]
impl Source for ControlPlaneSource {
    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let mut stream = self
            .0
            .clone()
            .fetch_component(pb::FetchRequest {
                digest: digest.to_string(),
            })
            .await?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }
}

impl Agent {
    /// Prepares the agent; nothing is dialled until [`Agent::run`]. The runtime and
    /// route table are the worker's; `providers` may be shared with other agents of the
    /// same process (an embedded store can be opened once per process).
    pub fn new(
        config: AgentConfig,
        runtime: Runtime,
        routes: Arc<Routes>,
        providers: Arc<Providers>,
        queues: EmbeddedQueues,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating {}", config.state_dir.display()))?;
        let mut endpoint = Endpoint::from_shared(config.control_plane.clone())
            .context("the control plane address is not a URL")?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if config.control_plane.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &config.ca_cert {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
            }
            endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
        }
        let bearer = Bearer(
            format!("Bearer {}", config.token)
                .parse()
                .context("the worker token is not a valid header value")?,
        );
        // A pool's whole routing table travels in one feed message.
        let client = WorkerControlClient::with_interceptor(endpoint.connect_lazy(), bearer)
            .max_decoding_message_size(MAX_FEED_BYTES);
        let components = Components::new(
            config.state_dir.join("components"),
            Arc::new(ControlPlaneSource(client.clone())),
        )
        .context("creating the component directory")?;
        let reporter_client = client.clone();
        let reporter: Reporter = Arc::new(move |report: pb::StatusReport| {
            let mut client = reporter_client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.report_status(report).await {
                    tracing::debug!(error = %e, "status report not delivered");
                }
            });
        });
        let assignments = Assignments::new(
            Setup {
                runtime,
                routes,
                providers,
                components,
                reporter,
                queues,
            },
            &config,
        );
        Ok(Self {
            config,
            client,
            assignments,
            interval: Arc::new(AtomicU64::new(1000)),
        })
    }

    /// Installs the assignments kept by the previous run, so the worker serves them
    /// without reaching the control plane; the future finishes once their apps have
    /// loaded (or failed to). Call it before [`Agent::run`]; serve HTTP meanwhile.
    pub fn restore(&self) -> impl Future<Output = ()> + Send + 'static {
        let restored = self.assignments.restore();
        async move {
            match restored {
                Ok(loads) => loads.await,
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "the kept assignments could not be restored"
                ),
            }
        }
    }

    /// Follows the control plane until `shutdown` resolves; then drains (its apps move
    /// elsewhere first) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let heartbeat = tokio::spawn(heartbeat(
            self.client.clone(),
            self.config.clone(),
            self.assignments.clone(),
            self.interval.clone(),
        ));
        let runs = {
            let (client, worker_id, assignments) = (
                self.client.clone(),
                self.config.worker_id.clone(),
                self.assignments.clone(),
            );
            tokio::spawn(async move {
                let mut backoff = Backoff::default();
                loop {
                    let started = tokio::time::Instant::now();
                    if let Err(e) = runs::follow(&client, &worker_id, &assignments).await {
                        tracing::debug!(error = %format!("{e:#}"), "timer run stream");
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Backoff::default();
                    }
                    tokio::time::sleep(backoff.next()).await;
                }
            })
        };
        let retries = {
            let assignments = self.assignments.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    assignments.retry_failed();
                }
            })
        };
        tokio::select! {
            () = self.follow(true) => {}
            () = &mut shutdown => {}
        }
        retries.abort();
        runs.abort();
        self.drain().await;
        heartbeat.abort();
        Ok(())
    }

    /// Registers and follows the feed, reconnecting with backoff whenever the control
    /// plane goes away (registering again each time, in case it was marked lost). While
    /// draining it only follows: registering would make it `up` again. Never returns.
    async fn follow(&self, register_first: bool) {
        let mut backoff = Backoff::default();
        loop {
            let started = tokio::time::Instant::now();
            match self.follow_once(register_first).await {
                Ok(()) => tracing::warn!("the control plane ended the assignment stream"),
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "control plane unreachable; serving the last assignments"
                ),
            }
            // A connection that held for a while starts the backoff over.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Backoff::default();
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    async fn follow_once(&self, register_first: bool) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        if register_first {
            register(&mut client, &self.config, &self.interval).await?;
        }
        let mut stream = client
            .watch_assignments(pb::WatchRequest {
                worker_id: self.config.worker_id.clone(),
                known_generation: self.assignments.generation(),
            })
            .await
            .context("watching assignments")?
            .into_inner();
        tracing::info!(control_plane = %self.config.control_plane, "following the control plane");
        self.assignments.report_all();
        while let Some(feed) = stream.message().await.context("reading assignments")? {
            tracing::debug!(
                generation = feed.generation,
                assignments = feed.assignments.len(),
                "assignments"
            );
            self.assignments.apply_in_background(feed);
        }
        Ok(())
    }

    /// Asks the control plane to move this worker's apps elsewhere and waits (up to the
    /// drain timeout) until it has; without a control plane it returns at once.
    async fn drain(&self) {
        let mut client = self.client.clone();
        let asked = tokio::time::timeout(
            Duration::from_secs(3),
            client.drain(pb::DrainRequest {
                worker_id: self.config.worker_id.clone(),
            }),
        )
        .await;
        if !matches!(asked, Ok(Ok(_))) {
            tracing::warn!("could not drain through the control plane; stopping now");
            return;
        }
        tracing::info!("draining: waiting for this worker's apps to move");
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        let watch = async {
            loop {
                if self.assignments.assigned_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            () = self.follow(false) => {}
            () = watch => tracing::info!("drained"),
            () = tokio::time::sleep_until(deadline) => tracing::warn!("drain timed out"),
        }
    }
}

/// Registers (or re-registers) and adopts the heartbeat interval the answer asks for.
async fn register(
    client: &mut Client,
    config: &AgentConfig,
    interval: &AtomicU64,
) -> anyhow::Result<()> {
    let response = client
        .register(pb::RegisterRequest {
            worker_id: config.worker_id.clone(),
            pool: config.pool.clone(),
            labels: config.labels.clone().into_iter().collect(),
            capacity: config.capacity,
            version: env!("CARGO_PKG_VERSION").to_string(),
            http_address: config.http_address.clone(),
        })
        .await
        .context("registering")?;
    interval.store(
        response
            .into_inner()
            .heartbeat_interval_ms
            .clamp(100, 60_000),
        Ordering::Relaxed,
    );
    Ok(())
}

/// Heartbeats at the interval the control plane asks for, re-registering when it no
/// longer knows this worker as up (it was marked lost while unreachable).
async fn heartbeat(
    client: Client,
    config: AgentConfig,
    assignments: Arc<Assignments>,
    interval: Arc<AtomicU64>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(interval.load(Ordering::Relaxed))).await;
        let mut c = client.clone();
        let beat = c
            .heartbeat(pb::HeartbeatRequest {
                worker_id: config.worker_id.clone(),
                apps_ready: u32::try_from(assignments.ready_count()).unwrap_or(u32::MAX),
                triggers: assignments.trigger_states(),
            })
            .await;
        match beat {
            Ok(r) if r.get_ref().reregister => match register(&mut c, &config, &interval).await {
                Ok(()) => tracing::info!("registered again after being marked lost"),
                Err(e) => tracing::debug!(error = %format!("{e:#}"), "re-registering"),
            },
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
        }
    }
}

/// Exponential backoff: about 100 ms at first, doubling to 1 s, each with up to 100 ms
/// of jitter so a pool's workers do not reconnect in step.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let base = 100u64.saturating_mul(1 << self.attempt.min(5)).min(2000);
        let jitter = u64::from(
            uuid::Uuid::new_v4()
                .as_bytes()
                .first()
                .copied()
                .unwrap_or(0),
        ) % 100;
        Duration::from_millis(base / 2 + jitter)
    }
}
