//! What the runtime's integration tests share: loading a guest built by
//! `.ci/build-guests`, and a bodiless GET for it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use stratus_worker::capabilities::Capabilities;
use stratus_worker::runtime::{App, Runtime};

/// Loads `$STRATUS_WASM_DIR/{guest}.wasm` as app `name`, with no bindings.
pub fn load(runtime: &Runtime, guest: &str, name: &str) -> Arc<App> {
    let dir = std::env::var_os("STRATUS_WASM_DIR").expect("STRATUS_WASM_DIR (set by .ci/test)");
    let bytes = std::fs::read(std::path::Path::new(&dir).join(format!("{guest}.wasm"))).unwrap();
    Arc::new(runtime.load(name, &bytes, Capabilities::default()).unwrap())
}

/// A GET of `path` on host `host`.
pub fn get(host: &str, path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(format!("http://{host}{path}"))
        .header("host", host)
        .body(Empty::new())
        .unwrap()
}
