//! The worker's memory budget: what an invocation charges comes back when it ends, and
//! a guest that grows past the budget fails while others still start.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use stratus_worker::runtime::{Runtime, RuntimeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_come_back_and_a_hoarder_cannot_take_the_rest() {
    let runtime = Runtime::new(RuntimeConfig {
        memory_budget_bytes: 256 << 20,
        spare_instances: 0,
        timeout: Duration::from_secs(5),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let app = support::load(&runtime, "hostile", "hostile");
    let budget = runtime.memory_budget();
    let resp = app.handle(support::get("x", "/ok")).await;
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(budget.used(), 0, "an ended invocation holds nothing");

    // Four hoarders at once would hold 4 × 128 MiB without the budget; with it their
    // linear memory together stays within its share (three quarters of 256 MiB).
    let hoarders: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let resp = app.handle(support::get("x", "/oom")).await;
                resp.status().as_u16()
            })
        })
        .collect();
    for h in hoarders {
        assert_eq!(h.await.unwrap(), 500, "a hoarder traps");
    }
    let peak = budget.linear_peak();
    assert!(
        peak > 128 << 20,
        "they did hoard, more than one could: {peak}"
    );
    assert!(peak <= 192 << 20, "and stayed within the budget: {peak}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(budget.used(), 0, "the hoarders' memory came back");
    // ...and the next invocation starts.
    let resp = app.handle(support::get("x", "/ok")).await;
    assert_eq!(resp.status(), 200);
}
