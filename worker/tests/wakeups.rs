//! A short invocation runs from start to response in the poll that starts it, without
//! yielding or waking its own task: tokio answers each such self-wake by rescheduling the
//! connection's task and waking another worker thread to steal it, which once cost more
//! CPU per request than the guest itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use stratus_worker::capabilities::Capabilities;
use stratus_worker::runtime::{Runtime, RuntimeConfig};

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_invocation_finishes_in_one_poll_without_waking_itself() {
    let dir = std::env::var_os("STRATUS_WASM_DIR").expect("STRATUS_WASM_DIR (set by .ci/test)");
    let bytes = std::fs::read(std::path::Path::new(&dir).join("hello.wasm")).unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let app = Arc::new(
        runtime
            .load("hello", &bytes, Capabilities::default())
            .unwrap(),
    );

    // An epoch tick landing inside a call rightly makes the guest yield once; three
    // attempts in a row hitting one (ticks are 5 ms apart) would be a broken runtime.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let req = hyper::Request::get("http://wakeups/")
            .header("host", "wakeups")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut call = std::pin::pin!(app.handle(req));
        let first = call.as_mut().poll(&mut cx);
        let wakes = counter.0.load(Ordering::SeqCst);
        let ready = first.is_ready();
        let resp = match first {
            Poll::Ready(resp) => resp,
            Poll::Pending => call.await,
        };
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"Hello from Stratus!\n");
        if ready && wakes == 0 {
            return;
        }
        seen.push(format!(
            "ready after one poll: {ready}, self-wakes: {wakes}"
        ));
    }
    panic!("every attempt yielded or woke itself: {seen:?}");
}
