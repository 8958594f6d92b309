//! A loaded app: its pre-instantiated component and bound capabilities, and the
//! invocation path that runs one HTTP request in a fresh instance.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::state::{InvocationState, OutboundHttp, shared_config};
use super::stdio::CapturedOutput;
use super::{LoadError, Runtime};
use crate::capabilities::Capabilities;
use crate::capabilities::keyvalue::host::KvCtx;

pub type Response = hyper::Response<HyperOutgoingBody>;

use super::body::GuardedBody;

/// Why an invocation produced no guest response.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("the function exceeded its {0:?} deadline")]
    Timeout(std::time::Duration),
    #[error("the function trapped: {0}")]
    Trap(String),
    #[error("the function returned without sending a response")]
    NoResponse,
    #[error("the function sent an error response: {0:?}")]
    Guest(ErrorCode),
    #[error("the worker failed to run the function: {0}")]
    Host(String),
}

impl InvocationError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            InvocationError::Timeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self, invocation: &str) -> Response {
        let body = format!("{self}\ninvocation: {invocation}\n");
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
        resp
    }
}

pub struct App {
    runtime: Runtime,
    name: Arc<str>,
    pre: ProxyPre<InvocationState>,
    capabilities: Capabilities,
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
        let pre =
            ProxyPre::new(instance_pre).map_err(|e| LoadError::NoHttpHandler(format!("{e:#}")))?;
        Ok(Self {
            runtime,
            name: name.into(),
            pre,
            capabilities,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn new_store(&self) -> Store<InvocationState> {
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
        let state = InvocationState {
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHttp,
            table: Default::default(),
            kv: KvCtx::new(self.capabilities.kv.clone(), self.name.clone()),
            config: shared_config(&self.capabilities.config),
            limits,
            stdout,
            stderr,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        // Yield to the scheduler at every epoch tick: a spinning guest shares its thread;
        // the deadline itself is enforced by the timeout around the call.
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// Runs one HTTP request in a fresh instance. Never fails: guest faults become 5xx.
    pub async fn handle(self: &Arc<Self>, req: hyper::Request<Incoming>) -> Response {
        let invocation = uuid::Uuid::new_v4().to_string();
        match self.invoke(req, &invocation).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(app = %self.name, %invocation, error = %e, "invocation failed");
                e.into_response(&invocation)
            }
        }
    }

    async fn invoke(
        self: &Arc<Self>,
        req: hyper::Request<Incoming>,
        invocation: &str,
    ) -> Result<Response, InvocationError> {
        let permit = self
            .runtime
            .inner
            .concurrency
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| InvocationError::Host(e.to_string()))?;
        let mut store = self.new_store();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
        let host = |e: wasmtime::Error| InvocationError::Host(format!("{e:#}"));
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(host)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(host)?;

        let app = self.clone();
        let id = invocation.to_string();
        let timeout = self.runtime.config().timeout;
        // The guest runs in its own task so it can keep streaming the body after the
        // response head has been handed to hyper.
        let task = tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let outcome = tokio::time::timeout(timeout, async {
                let proxy = app.pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            app.ship_logs(&store, &id);
            let outcome = match outcome {
                Err(_) => Err(InvocationError::Timeout(timeout)),
                Ok(Err(trap)) => Err(InvocationError::Trap(format!("{trap:#}"))),
                Ok(Ok(())) => Ok(()),
            };
            let _ = outcome_tx.send(outcome.is_ok());
            tracing::debug!(app = %app.name, invocation = %id, elapsed_us = started.elapsed().as_micros() as u64, ok = outcome.is_ok(), "invocation finished");
            outcome
        });

        match receiver.await {
            Ok(Ok(resp)) => Ok(resp.map(|body| GuardedBody::new(body, outcome_rx).boxed_unsync())),
            Ok(Err(code)) => Err(InvocationError::Guest(code)),
            // The sender was dropped with the store: the guest never set a response.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(InvocationError::NoResponse),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(InvocationError::Host(e.to_string())),
            },
        }
    }

    fn ship_logs(&self, store: &Store<InvocationState>, invocation: &str) {
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
