//! Engine configuration for a serverless host: pooling allocator, copy-on-write memory
//! images, epoch interruption.

use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeConfig;

/// How often the epoch advances. Guests yield to the scheduler at each tick, so a busy
/// loop cannot hold a tokio worker thread for longer than this.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Core instances, memories and tables a typical component needs; Rust `wasm32-wasip2`
/// components use a handful of core instances (main module plus shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;
const KEEP_RESIDENT_STACK: usize = 256 << 10;
const DECOMMIT_BATCH: usize = 32;
const SLOT_HEADROOM: u32 = 8;

pub fn build(config: &RuntimeConfig) -> anyhow::Result<Engine> {
    // Headroom over the concurrency limit, for instances whose slots are still being
    // reset (or wait in a decommit batch) while the next ones start, and the spares.
    let slots = config
        .max_concurrency
        .saturating_mul(2)
        .saturating_add(SLOT_HEADROOM)
        .saturating_add(config.spare_instances);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(config.max_memory_bytes)
        // Reset slots by memset rather than madvise: returning pages to the kernel on
        // every teardown costs a TLB-shootdown IPI per instance and page faults on the
        // next use, which dominated invocation time.
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .async_stack_keep_resident(KEEP_RESIDENT_STACK)
        // What must still be decommitted is done in batches.
        .decommit_batch_size(DECOMMIT_BATCH)
        // With PAGEMAP_SCAN (Linux 6.7+) only the pages a guest dirtied are reset.
        .pagemap_scan(Enabled::Auto);

    let mut cfg = Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg).map_err(|e| anyhow::anyhow!("configuring the wasmtime engine: {e:#}"))
}

/// Advances the engine's epoch from a plain thread until the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("stratus-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                let Some(engine) = weak.upgrade() else { break };
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the epoch thread; guests cannot be preempted");
    }
}
