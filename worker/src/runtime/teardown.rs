//! Instance teardown deferred until the connection that ran the invocation has written
//! its response: resetting an instance's memory is the largest part of tearing it down,
//! and the client need not wait for it. So is making the app's spare instance.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;

use super::app::App;
use super::state::InvocationState;

/// A finished invocation's store, the concurrency permit it held and its app.
type Finished = (Store<InvocationState>, OwnedSemaphorePermit, Arc<App>);

thread_local! {
    /// While a connection is polled through [`poll_deferring_teardown`] on this thread:
    /// the invocations that finished during that poll.
    static DEFERRED: RefCell<Option<Vec<Finished>>> = const { RefCell::new(None) };
}

/// Releases a finished invocation: right away, or, when it finished inside
/// [`poll_deferring_teardown`], right after that poll, on the same thread and without a
/// task of its own.
pub(super) fn release(store: Store<InvocationState>, permit: OwnedSemaphorePermit, app: Arc<App>) {
    let mut finished = Some((store, permit, app));
    let _ = DEFERRED.try_with(|deferred| {
        if let Some(list) = deferred.borrow_mut().as_mut() {
            list.extend(finished.take());
        }
    });
    if let Some(finished) = finished {
        tear_down(finished);
    }
}

/// Polls a connection (hyper writes a response within the poll that produced it), then
/// tears down the invocations that finished during the poll, also when the poll panics.
pub fn poll_deferring_teardown<T>(poll: impl FnOnce() -> Poll<T>) -> Poll<T> {
    let _ = DEFERRED.try_with(|deferred| {
        deferred.borrow_mut().get_or_insert_with(Vec::new);
    });
    let _scope = Scope;
    poll()
}

/// Ends a deferring poll: takes what finished and tears it down.
struct Scope;

impl Drop for Scope {
    fn drop(&mut self) {
        let finished = DEFERRED
            .try_with(|deferred| deferred.borrow_mut().take())
            .ok()
            .flatten();
        for finished in finished.into_iter().flatten() {
            tear_down(finished);
        }
    }
}

/// The store gives its pool slots back before the permit lets the next invocation
/// allocate: the other way round, a waiting request on another thread could find the
/// pool still full and fail. Then the app may make its next instance.
fn tear_down((store, permit, app): Finished) {
    drop(store);
    drop(permit);
    app.replenish();
}
