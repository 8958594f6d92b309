//! The runtime limits as command-line flags, shared by `stratus-worker`, `fnctl dev`
//! and `fnctl up`.

use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::RuntimeConfig;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Wall-clock deadline per invocation, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Linear memory limit per instance, in MiB.
    #[arg(long, default_value_t = 128)]
    pub max_memory_mb: usize,
    /// Invocations running at once; more wait for a slot.
    #[arg(long, default_value_t = 64)]
    pub max_concurrency: u32,
    /// Invocations of one app running at once (its fair share of the worker); up to
    /// four times as many wait, more get 429 with `Retry-After`.
    #[arg(long, default_value_t = 16)]
    pub app_concurrency: u32,
    /// What all invocations' linear memories and host resources may hold together, in
    /// MiB: past it a guest's memory growth fails.
    #[arg(long, default_value_t = 2048)]
    pub memory_budget_mb: usize,
    /// Largest request body a function accepts, in MiB; a larger one gets 413.
    #[arg(long, default_value_t = 16)]
    pub max_request_mb: u64,
    /// CPU time one invocation may use, in milliseconds, measured in 5 ms ticks
    /// (default: only the wall-clock deadline applies).
    #[arg(long)]
    pub max_cpu_ms: Option<u64>,
}

impl LimitArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// A runtime configuration with these limits, caching compiled code in `cache_dir`.
    pub fn runtime_config(&self, cache_dir: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            max_memory_bytes: self.max_memory_mb << 20,
            timeout: self.timeout(),
            max_concurrency: self.max_concurrency,
            app_concurrency: self.app_concurrency,
            app_queue: self.app_concurrency.saturating_mul(4),
            memory_budget_bytes: self.memory_budget_mb.saturating_mul(1 << 20),
            max_request_bytes: self.max_request_mb.saturating_mul(1 << 20),
            max_cpu: self.max_cpu_ms.map(Duration::from_millis),
            cache_dir: Some(cache_dir),
            ..RuntimeConfig::default()
        }
    }
}
