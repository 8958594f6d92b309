//! Response framing: a guest that finished before its response went out has its whole
//! body buffered, so hyper sends it with `Content-Length` in one write; a guest still
//! writing streams its body; a guest that traps mid-body never gets a length it could
//! appear to have met.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};

mod support;

fn load(runtime: &Runtime, guest: &str) -> Arc<App> {
    support::load(runtime, guest, guest)
}

fn get(path: &str) -> hyper::Request<Empty<Bytes>> {
    support::get("framing", path)
}

#[tokio::test]
async fn a_finished_guest_body_has_an_exact_length() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let app = load(&runtime, "hello");
    // An epoch tick inside the call makes the guest yield, so its head goes out while it
    // still runs and the body streams: rare, but one attempt could meet it.
    let mut lengths = Vec::new();
    for _ in 0..3 {
        let resp = app.handle(get("/")).await;
        assert_eq!(resp.status(), 200);
        let exact = resp.body().size_hint().exact();
        assert!(!resp.body().is_end_stream());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"Hello from Stratus!\n");
        if exact == Some(20) {
            return;
        }
        lengths.push(exact);
    }
    panic!("no response had an exact length: {lengths:?}");
}

#[tokio::test]
async fn a_running_guest_body_streams_without_a_length() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let app = load(&runtime, "hostile");
    let resp = app.handle(get("/big")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().size_hint().exact(), None);
    let mut body = resp.into_body();
    let mut read = 0usize;
    while read < 1 << 20 {
        let frame = body.frame().await.unwrap().unwrap();
        read += frame.data_ref().map_or(0, Bytes::len);
    }
}

#[tokio::test]
async fn a_guest_trapping_mid_body_gets_no_length_and_an_error() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let app = load(&runtime, "hostile");
    let resp = app.handle(get("/trap-mid-body")).await;
    // The guest sets its head before it writes and traps.
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().size_hint().exact(), None);
    assert!(resp.into_body().collect().await.is_err());
}
