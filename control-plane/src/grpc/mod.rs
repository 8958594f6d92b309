//! The worker API (`stratus.worker.v1.WorkerControl`): what workers dial to register,
//! heartbeat, watch their assignments, report progress, drain and fetch components.
//! Every call carries a worker token for one pool; a worker only ever sees and changes
//! itself, and only within that pool.

mod feed;
mod runs;
mod status;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use stratus_proto::pb;
use stratus_proto::pb::worker_control_server::{WorkerControl, WorkerControlServer};
use tonic::{Request, Response, Status};

pub use self::feed::FeedHub;
pub use self::runs::RunHub;
use crate::artifacts::ArtifactStore;
use crate::auth::{Auth, AuthError, WorkerClaims};
use crate::config::SchedulerConfig;
use crate::metadata::{Metadata, WorkerInfo};
use crate::nudge::Nudge;

/// Bytes per `ComponentChunk`, well under gRPC's default 4 MiB message limit.
const CHUNK: usize = 1 << 20;

pub struct WorkerApi {
    pub metadata: Metadata,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub auth: Arc<Auth>,
    /// Resolves stored bindings into what workers open (backends, sealed secrets).
    pub policy: Arc<crate::tenancy::Policy>,
    pub hub: FeedHub,
    /// Streams of timer runs to the workers following this replica.
    pub runs: RunHub,
    pub nudge: Nudge,
    pub scheduler: SchedulerConfig,
    /// Turns true when the replica shuts down: streams end so the server can stop.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl WorkerApi {
    pub fn into_service(self) -> WorkerControlServer<Self> {
        WorkerControlServer::new(self)
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<WorkerClaims, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer_token)
            .ok_or(AuthError::Missing)?;
        Ok(self.auth.verify_worker(token)?)
    }

    /// Checks that `worker` is registered in the token's pool.
    async fn own_worker(&self, claims: &WorkerClaims, worker: &str) -> Result<(), Status> {
        match self.metadata.worker_pool(worker).await? {
            Some((pool, _)) if pool == claims.pool => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "this token is for pool `{}`, and worker `{worker}` is not in it",
                claims.pool
            ))),
            None => Err(Status::not_found(format!(
                "worker `{worker}` is not registered; register first"
            ))),
        }
    }
}

fn check_worker_id(id: &str) -> Result<(), Status> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid worker id `{id}`: use 1-128 characters from A-Z a-z 0-9 - _ ."
        )))
    }
}

type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::AssignmentFeed, Status>> + Send>>;
type RunStream = Pin<Box<dyn Stream<Item = Result<pb::Run, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ComponentChunk, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerControl for WorkerApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let claims = self.authorize(&req)?;
        let r = req.into_inner();
        check_worker_id(&r.worker_id)?;
        if r.pool != claims.pool {
            return Err(Status::permission_denied(format!(
                "this token may join pool `{}`, not `{}`",
                claims.pool, r.pool
            )));
        }
        if r.http_address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "http_address `{}` is not IP:PORT",
                r.http_address
            )));
        }
        if r.version.len() > 64 {
            return Err(Status::invalid_argument("version: at most 64 bytes"));
        }
        if r.labels.len() > 32
            || r.labels
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
        {
            return Err(Status::invalid_argument(
                "at most 32 labels, keys of 1-64 and values of up to 256 bytes",
            ));
        }
        let info = WorkerInfo {
            id: r.worker_id,
            pool: r.pool,
            labels: r.labels.into_iter().collect::<BTreeMap<_, _>>(),
            capacity: r.capacity.max(1),
            version: r.version,
            http_address: r.http_address,
        };
        self.metadata.register_worker(&info).await?;
        tracing::info!(worker = %info.id, pool = %info.pool, address = %info.http_address, "worker registered");
        self.nudge.changed();
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.scheduler.heartbeat_interval_ms,
            lost_after_ms: self.scheduler.lost_after_ms,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let claims = self.authorize(&req)?;
        let r = req.into_inner();
        self.own_worker(&claims, &r.worker_id).await?;
        let known = self.metadata.heartbeat(&r.worker_id, r.apps_ready).await?;
        if r.triggers.len() > 10_000 {
            return Err(Status::invalid_argument("at most 10000 trigger states"));
        }
        if known {
            self.metadata
                .record_trigger_states(&r.worker_id, &r.triggers)
                .await?;
        }
        Ok(Response::new(pb::HeartbeatResponse { reregister: !known }))
    }

    type WatchAssignmentsStream = FeedStream;

    async fn watch_assignments(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<FeedStream>, Status> {
        let claims = self.authorize(&req)?;
        let r = req.into_inner();
        self.own_worker(&claims, &r.worker_id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let metadata = self.metadata.clone();
        let policy = self.policy.clone();
        let mut generations = self.hub.subscribe();
        let pool = claims.pool;
        let worker = r.worker_id;
        let mut sent = (r.known_generation > 0).then_some(r.known_generation);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let current = generations.borrow_and_update().get(&pool).copied();
                // Before the hub's first poll nothing is known: build the feed anyway.
                if current.is_none() || current != sent {
                    match metadata.feed(&worker, &pool).await {
                        Ok(Some(mut feed)) => {
                            resolve_bindings(&policy, &mut feed);
                            let generation = feed.generation;
                            if sent != Some(generation) {
                                if tx.send(Ok(feed)).await.is_err() {
                                    return;
                                }
                                sent = Some(generation);
                            }
                        }
                        // The worker moved to another pool (it was lost, and registered
                        // there with another token): nothing more on this stream.
                        Ok(None) => {
                            let _ = tx
                                .send(Err(Status::permission_denied(
                                    "the worker is no longer in this token's pool",
                                )))
                                .await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                }
                tokio::select! {
                    changed = generations.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                    // A stream outlives a missed wake-up at most this long.
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn report_status(
        &self,
        req: Request<pb::StatusReport>,
    ) -> Result<Response<pb::StatusAck>, Status> {
        let claims = self.authorize(&req)?;
        let r = req.into_inner();
        self.own_worker(&claims, &r.worker_id).await?;
        let state = pb::AssignmentState::try_from(r.state)
            .map_err(|_| Status::invalid_argument("unknown assignment state"))?;
        let message: String = r.message.chars().take(2048).collect();
        self.metadata
            .report_status(&r.worker_id, &r.tenant, &r.app, r.revision, state, &message)
            .await?;
        // Only readiness matters to the scheduler (a drain waits for replacements); other
        // progress is read from the database by whoever asks.
        if state == pb::AssignmentState::Ready {
            self.nudge.changed();
        }
        Ok(Response::new(pb::StatusAck {}))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let claims = self.authorize(&req)?;
        let r = req.into_inner();
        self.own_worker(&claims, &r.worker_id).await?;
        self.metadata.drain_worker(&r.worker_id).await?;
        tracing::info!(worker = %r.worker_id, "worker draining");
        self.nudge.changed();
        Ok(Response::new(pb::DrainResponse {}))
    }

    type WatchRunsStream = RunStream;

    async fn watch_runs(
        &self,
        req: Request<pb::WatchRunsRequest>,
    ) -> Result<Response<RunStream>, Status> {
        let claims = self.authorize(&req)?;
        let worker = req.into_inner().worker_id;
        self.own_worker(&claims, &worker).await?;
        let (id, rx) = self.runs.attach(&worker);
        let hub = self.runs.clone();
        let mut stopping = self.stopping.clone();
        let stream = async_stream_of(rx, async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        // Detached when the stream is dropped (worker gone, replica stopping).
        let guard = DetachOnDrop { hub, worker, id };
        Ok(Response::new(Box::pin(futures::StreamExt::map(
            stream,
            move |run| {
                let _ = &guard;
                Ok(run)
            },
        ))))
    }

    async fn report_run(
        &self,
        req: Request<pb::RunReport>,
    ) -> Result<Response<pb::RunAck>, Status> {
        let claims = self.authorize(&req)?;
        let r = req.into_inner();
        self.own_worker(&claims, &r.worker_id).await?;
        self.metadata.finish_run(&r).await?;
        if !r.ok {
            tracing::info!(worker = %r.worker_id, run = %r.run_id, attempt = r.attempt, error = %r.message, "timer run failed");
        }
        Ok(Response::new(pb::RunAck {}))
    }

    type FetchComponentStream = ChunkStream;

    async fn fetch_component(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let claims = self.authorize(&req)?;
        let digest = req.into_inner().digest;
        // A worker may fetch only what its pool runs.
        if !self.metadata.digest_in_pool(&digest, &claims.pool).await? {
            return Err(Status::not_found(format!(
                "no app of pool `{}` runs component {digest}",
                claims.pool
            )));
        }
        // `data` is `Bytes`: the chunks are slices of one buffer, not copies.
        let bytes = bytes::Bytes::from(self.artifacts.get(&digest).await?);
        let chunks: Vec<Result<pb::ComponentChunk, Status>> = (0..bytes.len())
            .step_by(CHUNK)
            .map(|start| {
                Ok(pb::ComponentChunk {
                    data: bytes.slice(start..(start + CHUNK).min(bytes.len())),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

/// Turns the stored bindings of a worker's assignments into what it opens: the only
/// place secrets are opened, for the workers that run the app.
fn resolve_bindings(policy: &crate::tenancy::Policy, feed: &mut pb::AssignmentFeed) {
    for a in &mut feed.assignments {
        for b in &mut a.bindings {
            *b = policy.resolve_for_worker(&a.tenant, &a.app, b);
        }
        // A queue the policy now refuses (an allow-list narrowed) is not consumed.
        for q in &mut a.queues {
            let admitted = q
                .spec
                .parse::<stratus_proto::triggers::QueueTrigger>()
                .map_err(|e| e.to_string())
                .and_then(|t| policy.admit_queue(&t).map_err(|e| e.to_string()));
            if let Err(why) = admitted {
                tracing::warn!(tenant = %a.tenant, app = %a.app, error = %why, "not sending a refused queue trigger");
                q.concurrency = 0;
            }
        }
    }
}

/// Removes a worker's run stream from the hub when the stream is dropped.
struct DetachOnDrop {
    hub: RunHub,
    worker: String,
    id: u64,
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        self.hub.detach(&self.worker, self.id);
    }
}

/// The runs from `rx` until `stop` resolves.
fn async_stream_of(
    rx: tokio::sync::mpsc::Receiver<pb::Run>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = pb::Run> + Send {
    futures::StreamExt::take_until(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Box::pin(stop),
    )
}
