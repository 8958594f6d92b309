//! The instance pool under invocations queueing for a small concurrency limit: each
//! invocation returns its pool slots before the next one may take them, so none fails
//! for want of a slot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use stratus_worker::capabilities::Capabilities;
use stratus_worker::runtime::{Runtime, RuntimeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_invocations_never_find_the_pool_full() {
    let dir = std::env::var_os("STRATUS_WASM_DIR").expect("STRATUS_WASM_DIR (set by .ci/test)");
    let bytes = std::fs::read(std::path::Path::new(&dir).join("hello.wasm")).unwrap();
    for limit in [1, 2] {
        let runtime = Runtime::new(RuntimeConfig {
            max_concurrency: limit,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let app = Arc::new(
            runtime
                .load("hello", &bytes, Capabilities::default())
                .unwrap(),
        );
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    let req = hyper::Request::get("http://pool-test/")
                        .header("host", "pool-test")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let resp = app.handle(req).await;
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    assert_eq!(status, 200, "limit {limit}: {body:?}");
                    assert!(body.is_ok(), "limit {limit}: {body:?}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}
