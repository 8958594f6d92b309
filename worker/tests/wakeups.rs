//! A short invocation runs from start to response in the poll that starts it, without
//! yielding or waking its own task: tokio answers each such self-wake by rescheduling the
//! connection's task and waking another worker thread to steal it, which once cost more
//! CPU per request than the guest itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use http_body_util::BodyExt;
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};

mod support;

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_invocation_finishes_in_one_poll_without_waking_itself() {
    let runtime = Runtime::new(RuntimeConfig {
        spare_instances: 0,
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert_one_clean_poll(&support::load(&runtime, "hello", "hello"), || async {}).await;
}

/// A spare made long before its request (many epoch ticks ago) must not start the
/// request with an expired deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_made_long_ago_runs_without_waking_itself() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let app = support::load(&runtime, "hello", "hello");
    // The first request leaves a spare behind.
    assert_eq!(app.handle(support::get("wakeups", "/")).await.status(), 200);
    let spares_taken = app.spares_taken();
    let ready = app.clone();
    assert_one_clean_poll(&app, move || {
        let app = ready.clone();
        async move {
            for _ in 0..1000 {
                if app.spare_ready() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(app.spares_taken() > spares_taken, "no request took a spare");
}

/// Runs requests until one finishes in its first poll without waking its own task,
/// calling `before` ahead of each.
async fn assert_one_clean_poll<F: Future<Output = ()>>(app: &Arc<App>, before: impl Fn() -> F) {
    // An epoch tick landing inside a call rightly makes the guest yield once; three
    // attempts in a row hitting one (ticks are 5 ms apart) would be a broken runtime.
    let mut seen = Vec::new();
    for _ in 0..3 {
        before().await;
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut call = std::pin::pin!(app.handle(support::get("wakeups", "/")));
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
