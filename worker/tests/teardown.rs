//! Deferred teardown: an invocation that finished inside a connection's poll keeps its
//! slot until that poll ends, then gives it back, also when the poll panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

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

#[tokio::test]
async fn a_slot_is_released_when_the_poll_that_finished_it_ends() {
    let runtime = one_slot();
    let app = hello(&runtime);
    let mut cx = Context::from_waker(Waker::noop());
    // An epoch tick inside the first call can make it yield; a few attempts rule that out.
    for _ in 0..3 {
        let mut first = pin!(app.handle(get()));
        let mut second = pin!(app.handle(get()));
        let Poll::Ready((first_done, second_done)) = poll_deferring_teardown(|| {
            let first_done = first.as_mut().poll(&mut cx).is_ready();
            let second_done = first_done && second.as_mut().poll(&mut cx).is_ready();
            Poll::Ready((first_done, second_done))
        }) else {
            unreachable!()
        };
        if !first_done {
            first.await;
            second.await;
            continue;
        }
        assert!(
            !second_done,
            "the finished invocation gave its slot back inside the poll"
        );
        let second = poll_deferring_teardown(|| second.as_mut().poll(&mut cx));
        match second {
            Poll::Ready(resp) => assert_eq!(resp.status(), 200),
            Poll::Pending => panic!("the slot was not given back after the poll"),
        }
        return;
    }
    panic!("the first invocation never finished in one poll");
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
