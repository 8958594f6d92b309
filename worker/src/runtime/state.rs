//! Per-invocation store state: WASI contexts, the resource table, capability contexts
//! and resource limits. A fresh one is built for every invocation.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::cpu_time::CpuBudget;
use super::host_memory::BODY_CHUNK_BYTES;
use super::stdio::CapturedOutput;
use crate::capabilities::config::{ConfigValues, ConfigView};
use crate::capabilities::keyvalue::host::{KvCtx, KvView};
use crate::capabilities::messaging::host::MessagingView;
use crate::capabilities::messaging::producer::Producers;

pub struct InvocationState {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) hooks: HttpHooks,
    pub(super) table: ResourceTable,
    pub(super) kv: KvCtx,
    pub(super) config: ConfigValues,
    pub(super) producers: Arc<Producers>,
    pub(super) limiter: super::budget::Limiter,
    /// The app's fair-share slot, held until the store is torn down.
    pub(super) app_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(super) stdout: CapturedOutput,
    pub(super) stderr: CapturedOutput,
    pub(super) cpu: CpuBudget,
}

impl InvocationState {
    pub fn kv(&mut self) -> KvView<'_> {
        KvView {
            ctx: &mut self.kv,
            table: &mut self.table,
        }
    }

    pub fn messaging(&mut self) -> MessagingView<'_> {
        MessagingView {
            table: &mut self.table,
            producers: &self.producers,
        }
    }

    pub fn config(&mut self) -> ConfigView<'_> {
        ConfigView {
            values: &self.config,
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// How wasi-http behaves for a guest. Outbound HTTP is its own capability with an
/// allow-list (a later issue); until then every outgoing request is refused with
/// `HTTP-request-denied`. Body writes are bounded (see `host_memory`).
pub struct HttpHooks;

impl WasiHttpHooks for HttpHooks {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

pub(super) fn shared_config(config: &Option<ConfigValues>) -> ConfigValues {
    config
        .clone()
        .unwrap_or_else(|| Arc::new(Default::default()))
}
