//! A loaded app: its pre-instantiated component and bound capabilities, and the
//! invocation path that runs one HTTP request in a fresh instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use stratus_proto::interfaces::Handler;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::body::{GuardedBody, GuestRun};
use super::cpu_time::{CpuBudget, CpuLimitExceeded};
use super::event::EventHandlers;
use super::host_memory::{MAX_FIELDS_BYTES, MAX_RESOURCES};
use super::request_body::LimitedBody;
use super::spare::{Spare, SpareSlot};
use super::state::{HttpHooks, InvocationState, shared_config};
use super::stdio::CapturedOutput;
use super::{LoadError, Runtime};
use crate::capabilities::Capabilities;
use crate::capabilities::keyvalue::host::KvCtx;

pub type Response = hyper::Response<HyperOutgoingBody>;

/// Where an invocation stands when the trigger can answer: the head is set, or the
/// guest finished (with or without setting one).
enum Step {
    Head(Result<hyper::Response<HyperOutgoingBody>, ErrorCode>),
    Finished(Result<(), InvocationError>),
}

/// Why an invocation produced no guest response.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("the function exceeded its {0:?} deadline")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    CpuLimit(CpuLimitExceeded),
    #[error("the function trapped: {0}")]
    Trap(String),
    #[error("the function returned without sending a response")]
    NoResponse,
    #[error("the function sent an error response: {0:?}")]
    Guest(ErrorCode),
    #[error("the worker failed to run the function: {0}")]
    Host(String),
    #[error("the worker is at its concurrency limit; retry later")]
    Overloaded,
    #[error("this function is at its concurrency limit on this worker; retry later")]
    Throttled,
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("the request body is larger than the {0}-byte limit")]
    RequestTooLarge(u64),
    #[error("no function is deployed at this path")]
    NoRoute,
    #[error("this function serves no HTTP (it exports no `wasi:http/incoming-handler`)")]
    NotHttp,
    #[error("no worker of this pool is ready to serve this function yet; retry shortly")]
    NoReplica,
    #[error("the worker holding this function did not answer")]
    PeerFailed(String),
}

impl InvocationError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            InvocationError::Timeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            InvocationError::Overloaded => http::StatusCode::SERVICE_UNAVAILABLE,
            InvocationError::Throttled => http::StatusCode::TOO_MANY_REQUESTS,
            InvocationError::BadRequest(_) => http::StatusCode::BAD_REQUEST,
            InvocationError::RequestTooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
            InvocationError::NoRoute | InvocationError::NotHttp => http::StatusCode::NOT_FOUND,
            InvocationError::NoReplica => http::StatusCode::SERVICE_UNAVAILABLE,
            InvocationError::PeerFailed(_) => http::StatusCode::BAD_GATEWAY,
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the HTTP client sees: the category and the invocation id to find the details
    /// (trap backtraces, host errors) in the worker's log, never the details themselves.
    fn public_message(&self) -> String {
        match self {
            InvocationError::Timeout(d) => format!("the function exceeded its {d:?} deadline"),
            InvocationError::Trap(_) => "the function trapped".into(),
            InvocationError::NoResponse => {
                "the function returned without sending a response".into()
            }
            InvocationError::Guest(_) => "the function failed".into(),
            InvocationError::Host(_) => "the worker failed to run the function".into(),
            InvocationError::Overloaded
            | InvocationError::Throttled
            | InvocationError::CpuLimit(_)
            | InvocationError::NoRoute
            | InvocationError::NotHttp
            | InvocationError::NoReplica
            | InvocationError::PeerFailed(_)
            | InvocationError::RequestTooLarge(_) => self.to_string(),
            InvocationError::BadRequest(_) => "malformed request".into(),
        }
    }

    pub fn into_response(self, invocation: impl std::fmt::Display) -> Response {
        let body = format!("{}\ninvocation: {invocation}\n", self.public_message());
        let mut resp = hyper::Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let InvocationError::NoReplica
        | InvocationError::Overloaded
        | InvocationError::Throttled = self
        {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        if let InvocationError::RequestTooLarge(_) = self {
            // The client may still be sending the rest of the body; this connection
            // cannot carry another request.
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

/// Yields once by waking the task during its own poll, which tokio answers by queueing
/// the task at the back and waking an idle worker thread. `tokio::task::yield_now` defers
/// the wake to the thread's next driver poll instead, where no other thread is woken for
/// it, so it would not spread the load.
async fn yield_waking() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// A unique id per invocation: a random per-process prefix and a counter, formatted only
/// when printed, so minting one costs neither a system call nor an allocation.
#[derive(Clone, Copy)]
pub(super) struct InvocationId(u64);

impl InvocationId {
    pub(super) fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl std::fmt::Display for InvocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        static PREFIX: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());
        let prefix = PREFIX.get(..12).unwrap_or(PREFIX.as_str());
        write!(f, "{prefix}-{:x}", self.0)
    }
}

pub struct App {
    pub(super) runtime: Runtime,
    pub(super) name: Arc<str>,
    pub(super) pre: InstancePre<InvocationState>,
    /// The HTTP handler, when the component exports one.
    http: Option<ProxyPre<InvocationState>>,
    pub(super) events: EventHandlers,
    capabilities: Capabilities,
    spare: Arc<SpareSlot>,
    pub(super) share: super::fair_share::FairShare,
}

impl App {
    pub(super) fn new(
        runtime: Runtime,
        name: &str,
        linker: &Linker<InvocationState>,
        component: &Component,
        capabilities: Capabilities,
    ) -> Result<Self, LoadError> {
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let http = ProxyPre::new(instance_pre.clone()).ok();
        let events = EventHandlers::new(&instance_pre);
        if http.is_none() && !events.handles_messages() && !events.handles_timers() {
            return Err(stratus_proto::interfaces::ComponentError::NoHandler(
                "it exports none of them".into(),
            )
            .into());
        }
        let share = super::fair_share::FairShare::new(
            runtime.config().app_concurrency,
            runtime.config().app_queue,
        );
        Ok(Self {
            runtime,
            name: name.into(),
            pre: instance_pre,
            http,
            events,
            capabilities,
            spare: Arc::default(),
            share,
        })
    }

    /// Whether an instance made ahead of time waits for this app's next request.
    pub fn spare_ready(&self) -> bool {
        self.spare.ready()
    }

    /// Requests of this app that ran in an instance made ahead of time.
    pub fn spares_taken(&self) -> u64 {
        self.spare.taken()
    }

    /// The invocation deadline; also how long the trigger lets a response write stall.
    pub fn timeout(&self) -> std::time::Duration {
        self.runtime.config().timeout
    }

    /// The handlers this app's component exports.
    pub fn handlers(&self) -> Vec<Handler> {
        let mut out = Vec::new();
        if self.http.is_some() {
            out.push(Handler::Http);
        }
        if self.events.handles_messages() {
            out.push(Handler::Message);
        }
        if self.events.handles_timers() {
            out.push(Handler::Timer);
        }
        out
    }

    pub(super) fn new_store(&self) -> Store<InvocationState> {
        let config = self.runtime.config();
        let stdout = CapturedOutput::new(config.max_log_bytes);
        let stderr = CapturedOutput::new(config.max_log_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(config.max_memory_bytes)
            .instances(64)
            .tables(64)
            .memories(8)
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let mut state = InvocationState {
            wasi,
            http,
            hooks: HttpHooks,
            table: Default::default(),
            kv: KvCtx::new(self.capabilities.kv.clone(), self.name.clone()),
            config: shared_config(&self.capabilities.config),
            producers: self.capabilities.messaging.clone(),
            limiter: super::budget::Limiter {
                limits,
                charge: super::budget::Charge::new(self.runtime.memory_budget()),
            },
            app_slot: None,
            stdout,
            stderr,
            cpu: CpuBudget::new(config.max_cpu),
        };
        // The floor until an invocation takes the store and is granted more.
        state.table.set_max_capacity(super::budget::FLOOR_RESOURCES);
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // At every epoch tick that finds the guest running, count it against the CPU
        // budget and yield to the scheduler: a spinning guest shares its thread; the
        // wall-clock deadline is enforced by the timeout around the call. A new store's
        // deadline is epoch 0, already passed, so without setting it every guest would
        // yield on its first check: a self-wake that has tokio reschedule the task and
        // wake another worker thread, on every invocation.
        store.epoch_deadline_callback(super::cpu_time::on_tick);
        store.set_epoch_deadline(1);
        store
    }

    /// Runs one HTTP request in a fresh instance. Never fails: guest faults become 5xx.
    pub async fn handle<B>(self: &Arc<Self>, req: hyper::Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let invocation = InvocationId::next();
        match self.invoke(req, invocation).await {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    InvocationError::BadRequest(_) | InvocationError::RequestTooLarge(_) => {
                        tracing::debug!(app = %self.name, %invocation, error = %e, "bad request")
                    }
                    _ => {
                        tracing::warn!(app = %self.name, %invocation, error = %e, "invocation failed")
                    }
                }
                e.into_response(invocation)
            }
        }
    }

    async fn invoke<B>(
        self: &Arc<Self>,
        req: hyper::Request<B>,
        invocation: InvocationId,
    ) -> Result<Response, InvocationError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        if self.http.is_none() {
            return Err(InvocationError::NotHttp);
        }
        let timeout = self.runtime.config().timeout;
        let max_request_bytes = self.runtime.config().max_request_bytes;
        if req.body().size_hint().lower() > max_request_bytes {
            return Err(InvocationError::RequestTooLarge(max_request_bytes));
        }
        // The app's own share first: one app's crowd never queues for the worker's
        // slots ahead of other apps.
        let app_slot = self.share.enter(timeout).await?;
        let permit = self.runtime.acquire_slot(timeout).await?;
        // Under load, yield once before instantiating: tokio puts the task at the back
        // of its queue and wakes an idle worker thread, which spreads the connections
        // over the threads (about 12% more requests per second at 64 connections). With
        // nothing else running that wake-up would only bounce this task between threads.
        if self.runtime.others_running() {
            yield_waking().await;
        }
        let (mut store, proxy) = match self.spare.take() {
            Some((store, proxy)) => (store, Some(proxy)),
            None => (self.new_store(), None),
        };
        {
            let state = store.data_mut();
            state.app_slot = Some(app_slot);
            let capacity = state.limiter.charge.grant_resources(MAX_RESOURCES);
            state.table.set_max_capacity(capacity);
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let host = |e: wasmtime::Error| InvocationError::Host(format!("{e:#}"));
        // A bodiless request (most GETs) needs no limit, and costs no flag.
        let mut cut = None;
        let mut http = store.data_mut().http();
        let req = if req.body().is_end_stream() {
            http.new_incoming_request(Scheme::Http, req)
        } else {
            let flag = cut.insert(Arc::new(AtomicBool::new(false))).clone();
            let req = req.map(|body| LimitedBody::new(body, max_request_bytes, flag));
            http.new_incoming_request(Scheme::Http, req)
        };
        // Fails only on what the client sent (e.g. no usable Host header).
        let req = req.map_err(|e| InvocationError::BadRequest(format!("{e:#}")))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(host)?;

        let app = self.clone();
        let id = invocation;
        let mut run: GuestRun = Box::pin(async move {
            let permit = permit;
            let mut store = store;
            let started = Instant::now();
            let mut instantiated = proxy.is_some();
            let outcome = tokio::time::timeout(timeout, async {
                let proxy = match proxy {
                    Some(proxy) => proxy,
                    None => {
                        // Checked above; the run owns `app`, so nothing is cloned per
                        // request.
                        let handler = app.http.as_ref().ok_or_else(|| {
                            wasmtime::Error::msg("the component exports no HTTP handler")
                        })?;
                        handler.instantiate_async(&mut store).await?
                    }
                };
                instantiated = true;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            app.ship_logs(&store, id);
            // An instance the worker's memory budget had no room to start is the
            // worker's overload, not the guest's fault.
            let starved = !instantiated && store.data().limiter.charge.refused();
            super::teardown::release(store, permit, app.clone());
            let outcome = match outcome {
                Err(_) => Err(InvocationError::Timeout(timeout)),
                Ok(Err(_)) if starved => Err(InvocationError::Overloaded),
                Ok(Err(trap)) => Err(match trap.downcast_ref::<CpuLimitExceeded>() {
                    Some(&exceeded) => InvocationError::CpuLimit(exceeded),
                    None => InvocationError::Trap(format!("{trap:#}")),
                }),
                Ok(Ok(())) => Ok(()),
            };
            tracing::debug!(
                app = %app.name,
                invocation = %id,
                elapsed_us = started.elapsed().as_micros() as u64,
                ok = outcome.is_ok(),
                "invocation finished"
            );
            outcome
        });

        // Run the guest until it sets the response head (or finishes without one); the
        // response body then drives the rest of the run. The head can only be set while
        // the guest runs, so it is checked after each poll of the run instead of being
        // awaited: a waker on the head channel would make the guest's own `set` wake
        // this task mid-poll, and tokio answers such a self-wake by rescheduling the task
        // and waking an idle worker thread to steal it, on every request.
        let mut receiver = receiver;
        let step = std::future::poll_fn(|cx| match run.as_mut().poll(cx) {
            Poll::Ready(outcome) => Poll::Ready(Step::Finished(outcome)),
            Poll::Pending => match receiver.try_recv() {
                Ok(head) => Poll::Ready(Step::Head(head)),
                // Closed: the guest dropped the outparam unset; it runs on regardless.
                Err(_) => Poll::Pending,
            },
        })
        .await;
        // A guest that failed after its request body was cut off failed because of it
        // (typically unwrapping the read): the client learns why.
        let cut_off = cut.is_some_and(|cut| cut.load(Ordering::Relaxed));
        let too_large = |e: InvocationError| match e {
            InvocationError::Trap(_) | InvocationError::NoResponse | InvocationError::Guest(_)
                if cut_off =>
            {
                tracing::debug!(app = %self.name, %invocation, error = %e, "the function failed on a request body over the limit");
                InvocationError::RequestTooLarge(max_request_bytes)
            }
            _ => e,
        };
        match step {
            Step::Head(Ok(resp)) => {
                Ok(resp.map(|body| GuardedBody::running(body, run).boxed_unsync()))
            }
            Step::Head(Err(code)) => {
                // Let the guest finish (and its logs ship) without holding the client.
                tokio::spawn(run);
                Err(too_large(InvocationError::Guest(code)))
            }
            Step::Finished(outcome) => match receiver.try_recv() {
                Ok(Ok(resp)) => Ok(
                    resp.map(|body| GuardedBody::finished(body, outcome.is_ok()).boxed_unsync())
                ),
                Ok(Err(code)) => Err(too_large(InvocationError::Guest(code))),
                Err(_) => Err(too_large(
                    outcome.err().unwrap_or(InvocationError::NoResponse),
                )),
            },
        }
    }

    /// Makes this app's next instance in the background, if the worker is idle (under
    /// load it would only take CPU from requests), the spare budget has room and the
    /// app has no spare yet. Making it holds a concurrency slot, so it counts against
    /// the limit like an invocation (and the worker is not idle while it runs), and its
    /// start-up runs under the invocation deadline.
    pub(super) fn replenish(self: &Arc<Self>) {
        if !self.runtime.idle() {
            return;
        }
        // Outside a runtime (an invocation finished while its runtime shut down) there
        // is nothing to make a spare for.
        let Ok(tokio_runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(http) = self.http.clone() else {
            return;
        };
        let Some(claim) = self.spare.claim() else {
            return;
        };
        // The slot first: the budget may drop another app's spare to make room, which
        // would be wasted if no slot were free.
        let Some(slot) = self.runtime.try_slot() else {
            return;
        };
        let Some(budget) = self.runtime.spare_budget() else {
            return;
        };
        let app = self.clone();
        tokio_runtime.spawn(async move {
            let mut store = app.new_store();
            let timeout = app.runtime.config().timeout;
            let made = tokio::time::timeout(timeout, http.instantiate_async(&mut store)).await;
            let failure = match made {
                Ok(Ok(proxy)) => {
                    claim.finish(Some(Spare {
                        store,
                        proxy,
                        _budget: budget,
                    }));
                    app.runtime.spare_made(&app.spare);
                    drop(slot);
                    return;
                }
                Ok(Err(trap)) => InvocationError::Trap(format!("{trap:#}")),
                Err(_) => InvocationError::Timeout(timeout),
            };
            let id = InvocationId::next();
            app.ship_logs(&store, id);
            tracing::warn!(app = %app.name, invocation = %id, error = %failure, "instantiating ahead of a request failed; this app's requests instantiate for themselves from now on");
            claim.finish(None);
            drop(store);
            drop(slot);
        });
    }

    pub(super) fn ship_logs(&self, store: &Store<InvocationState>, invocation: InvocationId) {
        for (stream, out) in [
            ("stdout", &store.data().stdout),
            ("stderr", &store.data().stderr),
        ] {
            let (bytes, dropped) = out.take();
            for line in String::from_utf8_lossy(&bytes).lines() {
                tracing::info!(target: "guest", app = %self.name, %invocation, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(target: "guest", app = %self.name, %invocation, stream, dropped, "guest output over the per-invocation limit was dropped");
            }
        }
    }
}
