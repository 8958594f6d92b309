//! Instantiate + call of a trivial HTTP handler (`examples/hello`) on the pooling
//! allocator: the per-invocation cost of the worker runtime without sockets.
//!
//! Needs the guests built first: `.ci/build-guests` (or `.ci/test`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use stratus_worker::capabilities::Capabilities;
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};

// As in fnctl.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn hello_wasm() -> Vec<u8> {
    let dir = std::env::var_os("STRATUS_WASM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("stratus-wasm"))
        })
        .unwrap_or_else(|| PathBuf::from("target/stratus-wasm"));
    let path = dir.join("hello.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!(
            "{}: {e}; build the guests with .ci/build-guests",
            path.display()
        );
        std::process::exit(2)
    })
}

async fn call(app: &Arc<App>) -> usize {
    let req = hyper::Request::get("http://bench/")
        .body(Empty::<Bytes>::new())
        .unwrap_or_default();
    let resp = app.handle(req).await;
    assert_eq!(resp.status(), 200);
    // Outside an HTTP connection the instance is torn down before `handle` returns, so
    // its cost is measured too.
    match resp.into_body().collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(_) => 0,
    }
}

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return;
        }
    };
    // No spares: every call instantiates, which is what this measures.
    let runtime = match Runtime::new(RuntimeConfig {
        spare_instances: 0,
        ..RuntimeConfig::default()
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e:#}");
            return;
        }
    };
    let app = match runtime.load("hello", &hello_wasm(), Capabilities::default()) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("loading hello: {e}");
            return;
        }
    };
    c.bench_function("instantiate+call hello (pooling)", |b| {
        b.to_async(&rt).iter(|| call(&app));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
