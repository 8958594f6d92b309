//! Instance teardown deferred until the connection that ran the invocation has written
//! its response: resetting an instance's memory is the largest part of tearing it down,
//! and the client need not wait for it.

use std::cell::RefCell;
use std::task::Poll;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;

use super::state::InvocationState;

/// A finished invocation's store and the concurrency permit it held.
type Finished = (Store<InvocationState>, OwnedSemaphorePermit);

thread_local! {
    /// While a connection is polled through [`poll_deferring_teardown`] on this thread:
    /// the invocations that finished during that poll.
    static DEFERRED: RefCell<Option<Vec<Finished>>> = const { RefCell::new(None) };
}

/// Releases a finished invocation: right away, or, when it finished inside
/// [`poll_deferring_teardown`], right after that poll, on the same thread and without a
/// task of its own.
pub(super) fn release(store: Store<InvocationState>, permit: OwnedSemaphorePermit) {
    let not_deferred = DEFERRED
        .try_with(|deferred| match deferred.borrow_mut().as_mut() {
            Some(list) => {
                list.push((store, permit));
                None
            }
            None => Some((store, permit)),
        })
        .ok()
        .flatten();
    if let Some(finished) = not_deferred {
        tear_down(finished);
    }
}

/// Polls a connection (hyper writes a response within the poll that produced it), then
/// tears down the invocations that finished during the poll.
pub fn poll_deferring_teardown<T>(poll: impl FnOnce() -> Poll<T>) -> Poll<T> {
    let outer = DEFERRED
        .try_with(|deferred| deferred.borrow_mut().replace(Vec::new()))
        .ok()
        .flatten();
    let result = poll();
    let finished = DEFERRED
        .try_with(|deferred| std::mem::replace(&mut *deferred.borrow_mut(), outer))
        .ok()
        .flatten();
    for finished in finished.into_iter().flatten() {
        tear_down(finished);
    }
    result
}

/// The store gives its pool slots back before the permit lets the next invocation
/// allocate: the other way round, a waiting request on another thread could find the
/// pool still full and fail.
fn tear_down((store, permit): Finished) {
    drop(store);
    drop(permit);
}
