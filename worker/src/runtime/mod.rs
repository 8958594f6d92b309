//! The wasmtime runtime: one engine per worker, components loaded once into an
//! `InstancePre`, a fresh instance per invocation.
//!
//! This module knows capabilities only through their traits and WIT hosts; it never
//! names a concrete provider.

mod app;
mod body;
pub mod budget;
mod cache;
mod cpu_time;
mod engine;
mod event;
mod fair_share;
mod host_memory;
mod imports;
mod request_body;
mod spare;
mod state;
mod stdio;
mod teardown;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use self::app::{App, InvocationError, Response};
pub use self::cpu_time::{CpuLimitExceeded, guests_spinning};
pub use self::event::{Event, EventError, TimerEvent};
pub use self::imports::LoadError;
pub use self::teardown::poll_deferring_teardown;
pub use stratus_proto::interfaces::check_imports;

/// Limits and knobs for one worker's runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Linear memory one instance may grow to.
    pub max_memory_bytes: usize,
    /// Wall-clock deadline of one invocation (also how long a request may wait for a
    /// concurrency slot before it is refused with 503).
    pub timeout: Duration,
    /// Invocations running at once on this worker; more wait for a slot.
    pub max_concurrency: u32,
    /// Invocations of one app running at once on this worker (its fair share).
    pub app_concurrency: u32,
    /// Invocations of one app waiting for its share; more get 429 at once.
    pub app_queue: u32,
    /// What all invocations' linear memories and host resources may hold together.
    pub memory_budget_bytes: usize,
    /// Where compiled components are cached, keyed by content digest (`None` = no cache).
    pub cache_dir: Option<PathBuf>,
    /// Bytes of stdout/stderr kept per invocation; the rest is counted and dropped.
    pub max_log_bytes: usize,
    /// Instances made ahead of requests, at most one per app, while the worker is idle
    /// (`0` = none). They have pool slots of their own, outside `max_concurrency`.
    pub spare_instances: u32,
    /// Largest HTTP request body a function is given. A larger declared length is
    /// refused with 413 before any instance is made; a larger streamed body is cut off
    /// with wasi-http's `HTTP-request-body-size` error.
    pub max_request_bytes: u64,
    /// CPU time one invocation may use, counted in epoch ticks that find the guest
    /// running (`None`: only the wall-clock deadline applies).
    pub max_cpu: Option<Duration>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            max_concurrency: 64,
            app_concurrency: 16,
            app_queue: 64,
            memory_budget_bytes: 2 << 30,
            cache_dir: None,
            max_log_bytes: 64 << 10,
            spare_instances: 16,
            max_request_bytes: 16 << 20,
            max_cpu: None,
        }
    }
}

/// One per worker: the engine, its epoch ticker and the runtime limits.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: wasmtime::Engine,
    config: RuntimeConfig,
    concurrency: Arc<tokio::sync::Semaphore>,
    spares: Arc<tokio::sync::Semaphore>,
    memory: Arc<budget::MemoryBudget>,
    /// Apps holding a spare, the one made longest ago first.
    spare_order: std::sync::Mutex<std::collections::VecDeque<std::sync::Weak<spare::SpareSlot>>>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = engine::build(&config)?;
        engine::start_epoch_ticker(&engine);
        let concurrency = Arc::new(tokio::sync::Semaphore::new(config.max_concurrency as usize));
        let spares = Arc::new(tokio::sync::Semaphore::new(config.spare_instances as usize));
        let memory = Arc::new(budget::MemoryBudget::new(config.memory_budget_bytes));
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                concurrency,
                spares,
                memory,

                spare_order: Default::default(),
            }),
        })
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The worker's memory budget, shared by every invocation.
    pub fn memory_budget(&self) -> Arc<budget::MemoryBudget> {
        self.inner.memory.clone()
    }

    /// Whether invocations other than the caller's hold concurrency slots.
    fn others_running(&self) -> bool {
        self.inner.concurrency.available_permits() + 1 < self.inner.config.max_concurrency as usize
    }

    /// Whether no invocation holds a concurrency slot.
    fn idle(&self) -> bool {
        self.inner.concurrency.available_permits() >= self.inner.config.max_concurrency as usize
    }

    /// Room for one more spare instance. When the budget is spent, the spare made
    /// longest ago gives its share up: the app asking has just served a request, that
    /// one has not since.
    fn spare_budget(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.inner.spares.clone().try_acquire_owned() {
            return Some(permit);
        }
        let evicted = {
            let mut order = self.spare_order();
            std::iter::from_fn(|| order.pop_front())
                .find_map(|slot| slot.upgrade().and_then(|slot| slot.evict()))
        };
        drop(evicted);
        self.inner.spares.clone().try_acquire_owned().ok()
    }

    /// Records that `slot` now holds a spare, as the one made last.
    fn spare_made(&self, slot: &Arc<spare::SpareSlot>) {
        let mut order = self.spare_order();
        // Only apps that still hold a spare stay listed, so the list never outgrows the
        // budget.
        order.retain(|listed| {
            listed
                .upgrade()
                .is_some_and(|listed| !Arc::ptr_eq(&listed, slot) && listed.ready())
        });
        order.push_back(Arc::downgrade(slot));
    }

    /// A panic while the lock was held left at worst a stale entry, which is skipped.
    fn spare_order(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<std::sync::Weak<spare::SpareSlot>>>
    {
        self.inner
            .spare_order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A free concurrency slot, without waiting.
    fn try_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.concurrency.clone().try_acquire_owned().ok()
    }

    /// A concurrency slot for one invocation, waiting at most `timeout` for one to free
    /// up. A free slot is taken without arming a timer.
    async fn acquire_slot(
        &self,
        timeout: Duration,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, InvocationError> {
        if let Some(permit) = self.try_slot() {
            return Ok(permit);
        }
        tokio::time::timeout(timeout, self.inner.concurrency.clone().acquire_owned())
            .await
            .map_err(|_| InvocationError::Overloaded)?
            .map_err(|e| InvocationError::Host(e.to_string()))
    }

    /// Validates, compiles (or loads from cache), checks imports against the bindings and
    /// pre-instantiates a component.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        capabilities: crate::capabilities::Capabilities,
    ) -> Result<App, LoadError> {
        stratus_proto::names::check_namespace(name)?;
        let component = cache::compile(
            &self.inner.engine,
            bytes,
            self.inner.config.cache_dir.as_deref(),
        )?;
        let linker = imports::link(&self.inner.engine, &component, &capabilities)?;
        App::new(self.clone(), name, &linker, &component, capabilities)
    }
}
