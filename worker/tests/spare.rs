//! Spare instances: made ahead of a request while the worker is idle, taken by the next
//! request, never shared between two requests, and limited by the runtime's budget, which
//! keeps the spares made last.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};

mod support;

/// The `hostile` guest as app `name`.
fn load(runtime: &Runtime, name: &str) -> Arc<App> {
    support::load(runtime, "hostile", name)
}

async fn get(app: &Arc<App>, path: &str) -> (u16, String) {
    let resp = app.handle(support::get("spare", path)).await;
    let status = resp.status().as_u16();
    // A guest that traps mid-body leaves its body ending in an error.
    let body = match resp.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(e) => format!("body error: {e}"),
    };
    (status, body)
}

async fn wait_for_spare(app: &App) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if app.spare_ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_takes_a_fresh_spare() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let app = load(&runtime, "spare");
    assert!(!app.spare_ready(), "no spare before the first request");
    for round in 1..=5u64 {
        assert_eq!(get(&app, "/count").await, (200, "1\n".into()));
        assert!(wait_for_spare(&app).await, "round {round}: no spare made");
        assert_eq!(app.spares_taken(), round - 1);
    }
    // Requests that take a spare see a fresh instance all the same, including those
    // that trap and the ones after them.
    assert_eq!(get(&app, "/trap-mid-body").await.0, 200);
    assert!(wait_for_spare(&app).await);
    assert_eq!(get(&app, "/count").await, (200, "1\n".into()));
    assert_eq!(app.spares_taken(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_keeps_the_spares_made_last() {
    let runtime = Runtime::new(RuntimeConfig {
        spare_instances: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let first = load(&runtime, "first");
    let second = load(&runtime, "second");
    assert_eq!(get(&first, "/ok").await.0, 200);
    assert!(wait_for_spare(&first).await);

    // The one spare moves to the app served last, and back.
    assert_eq!(get(&second, "/ok").await.0, 200);
    assert!(wait_for_spare(&second).await);
    assert!(!first.spare_ready(), "two spares on a budget of one");
    assert_eq!(get(&first, "/count").await, (200, "1\n".into()));
    assert!(wait_for_spare(&first).await);
    assert!(!second.spare_ready(), "two spares on a budget of one");
    assert_eq!(
        first.spares_taken(),
        0,
        "the first app's spare was dropped, not taken"
    );

    // Dropping an app gives its spare's share of the budget back (once the task that
    // made the spare has let go of the app too).
    while Arc::strong_count(&first) > 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(first);
    assert_eq!(get(&second, "/count").await, (200, "1\n".into()));
    assert!(wait_for_spare(&second).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spares_when_the_budget_is_zero() {
    let runtime = Runtime::new(RuntimeConfig {
        spare_instances: 0,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let app = load(&runtime, "none");
    for _ in 0..3 {
        assert_eq!(get(&app, "/count").await, (200, "1\n".into()));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!app.spare_ready());
    assert_eq!(app.spares_taken(), 0);
}
