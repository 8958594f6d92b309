//! The request size limit: a declared length over it gets 413 without running the guest;
//! a streamed body over it is cut off with `HTTP-request-body-size`, and a guest that
//! fails on that gets 413 too; a body up to the limit reaches the guest whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use futures::stream;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};

mod support;

const LIMIT: u64 = 64 * 1024;

fn app() -> (Runtime, Arc<App>) {
    let runtime = Runtime::new(RuntimeConfig {
        max_request_bytes: LIMIT,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let app = support::load(&runtime, "hostile", "limits");
    (runtime, app)
}

fn post<B>(path: &str, body: B) -> hyper::Request<B> {
    hyper::Request::post(format!("http://limits{path}"))
        .header("host", "limits")
        .body(body)
        .unwrap()
}

/// A body sent in `chunk`-byte frames with no declared length, as a chunked upload is.
fn streamed(total: usize, chunk: usize) -> StreamBody<impl futures::Stream<Item = FrameResult>> {
    let frames: Vec<FrameResult> = (0..total)
        .step_by(chunk)
        .map(|start| {
            Ok(Frame::data(Bytes::from(vec![
                b'x';
                chunk.min(total - start)
            ])))
        })
        .collect();
    StreamBody::new(stream::iter(frames))
}

type FrameResult = Result<Frame<Bytes>, hyper::Error>;

async fn text(resp: hyper::Response<impl http_body::Body<Error = impl std::fmt::Debug>>) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_declared_length_over_the_limit_gets_413_before_the_guest_runs() {
    let (_runtime, app) = app();
    // `/ok` never reads its body: only a check made before the guest runs can refuse it.
    let body = Full::new(Bytes::from(vec![b'x'; LIMIT as usize + 1]));
    let resp = app.handle(post("/ok", body)).await;
    assert_eq!(resp.status(), 413);
    let text = text(resp).await;
    assert!(text.contains("65536-byte limit"), "{text}");
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_reaches_the_guest_whole() {
    let (_runtime, app) = app();
    let declared = Full::new(Bytes::from(vec![b'x'; LIMIT as usize]));
    let resp = app.handle(post("/length", declared)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, format!("{LIMIT}\n"));

    let resp = app
        .handle(post("/length", streamed(LIMIT as usize, 4096)))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, format!("{LIMIT}\n"));
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_cut_off_and_gets_413() {
    let (_runtime, app) = app();
    let resp = app
        .handle(post("/length", streamed(4 * LIMIT as usize, 4096)))
        .await;
    assert_eq!(resp.status(), 413);
    assert!(text(resp).await.contains("limit"));
    // The same app still serves a normal request.
    let resp = app.handle(support::get("limits", "/ok")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_guest_that_already_answered_keeps_its_status_and_its_body_ends_in_an_error() {
    let (_runtime, app) = app();
    let resp = app
        .handle(post("/echo", streamed(4 * LIMIT as usize, 4096)))
        .await;
    // `/echo` sets its head before reading, so the cut shows as a body that fails
    // instead of ending cleanly, never as a complete echo.
    assert_eq!(resp.status(), 200);
    let echoed = resp.into_body().collect().await;
    assert!(echoed.is_err(), "a cut-off echo ended like a whole one");
}
