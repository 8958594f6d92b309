//! Deferred teardown: an invocation that finished inside a connection's poll keeps its
//! slot until that poll ends, then gives it back, also when the poll panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http_body_util::Empty;
use stratus_worker::runtime::{App, Runtime, RuntimeConfig, poll_deferring_teardown};

mod support;

fn hello(runtime: &Runtime) -> Arc<App> {
    support::load(runtime, "hello", "hello")
}

fn get() -> hyper::Request<Empty<Bytes>> {
    support::get("teardown", "/")
}

/// One slot and no spares: making a spare would take the slot a test waits for.
fn one_slot() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_concurrency: 1,
        spare_instances: 0,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Counts wakes. An invocation that yields at an epoch tick wakes its task before it
/// returns `Pending`; one that waits for a slot does not.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_slot_is_released_when_the_poll_that_finished_it_ends() {
    let runtime = one_slot();
    let app = hello(&runtime);
    let wakes = Arc::new(WakeCount::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    // An epoch tick (every 5 ms) inside a call makes it yield, which a loaded machine
    // sees now and then; a few attempts rule it out. A guest that yields after setting
    // its response head finishes later, in the body, so its slot outlives the poll.
    for _ in 0..5 {
        let mut first = pin!(app.handle(get()));
        let mut second = pin!(app.handle(get()));
        let Poll::Ready((first_done, first_yielded, second_done)) = poll_deferring_teardown(|| {
            let woken_before = wakes.0.load(Ordering::SeqCst);
            let first_done = first.as_mut().poll(&mut cx).is_ready();
            let first_yielded = wakes.0.load(Ordering::SeqCst) > woken_before;
            let second_done = first_done && second.as_mut().poll(&mut cx).is_ready();
            Poll::Ready((first_done, first_yielded, second_done))
        }) else {
            unreachable!()
        };
        if !first_done {
            first.await;
            second.await;
            continue;
        }
        if first_yielded {
            second.await;
            continue;
        }
        assert!(
            !second_done,
            "the finished invocation gave its slot back inside the poll"
        );
        let woken_before = wakes.0.load(Ordering::SeqCst);
        match poll_deferring_teardown(|| second.as_mut().poll(&mut cx)) {
            Poll::Ready(resp) => {
                assert_eq!(resp.status(), 200);
                return;
            }
            // It got the slot, then yielded at a tick.
            Poll::Pending if wakes.0.load(Ordering::SeqCst) > woken_before => {
                second.await;
            }
            Poll::Pending => panic!("the slot was not given back after the poll"),
        }
    }
    panic!("the invocations never finished in one poll each");
}

#[tokio::test]
async fn a_panicking_poll_still_releases_what_finished_in_it() {
    let runtime = one_slot();
    let app = hello(&runtime);
    let mut cx = Context::from_waker(Waker::noop());
    let mut first = pin!(app.handle(get()));
    let mut first_done = false;
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        poll_deferring_teardown::<()>(|| {
            first_done = first.as_mut().poll(&mut cx).is_ready();
            panic!("a connection poll panicked");
        })
    }));
    assert!(caught.is_err());
    if !first_done {
        first.await;
    }
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), app.handle(get()))
        .await
        .expect("the slot of the invocation finished in the panicking poll was never released");
    assert_eq!(next.status(), 200);
}
