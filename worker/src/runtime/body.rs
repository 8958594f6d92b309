//! The response body handed to hyper. It also drives the rest of the guest's execution,
//! so an invocation runs in the connection's own task (no spawn, no cross-thread
//! wake-ups), and it ends with an error instead of a clean EOF when the invocation failed
//! after sending the head, so a client never takes a truncated body for a whole one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::app::InvocationError;

/// The rest of a running invocation.
pub type GuestRun = Pin<Box<dyn Future<Output = Result<(), InvocationError>> + Send>>;

pub struct GuardedBody {
    inner: HyperOutgoingBody,
    inner_done: bool,
    /// The invocation, until it finishes.
    guest: Option<GuestRun>,
    /// Whether the invocation finished without trap or timeout, once it has.
    succeeded: Option<bool>,
}

impl GuardedBody {
    pub fn running(inner: HyperOutgoingBody, guest: GuestRun) -> Self {
        Self {
            inner,
            inner_done: false,
            guest: Some(guest),
            succeeded: None,
        }
    }

    pub fn finished(inner: HyperOutgoingBody, succeeded: bool) -> Self {
        Self {
            inner,
            inner_done: false,
            guest: None,
            succeeded: Some(succeeded),
        }
    }
}

impl Drop for GuardedBody {
    /// hyper drops the body early for HEAD, 204 and 304, once `Content-Length` bytes are
    /// out, or when the client goes away: the guest still runs to the end (its permit,
    /// deadline and log shipping travel with it), just not on the client's time.
    fn drop(&mut self) {
        if let Some(guest) = self.guest.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(guest);
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(guest) = this.guest.as_mut()
            && let Poll::Ready(outcome) = guest.as_mut().poll(cx)
        {
            this.succeeded = Some(outcome.is_ok());
            this.guest = None;
        }
        if !this.inner_done {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(frame)) => return Poll::Ready(Some(frame)),
                Poll::Ready(None) => this.inner_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.succeeded {
            Some(true) => Poll::Ready(None),
            Some(false) => {
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
            }
            // The body is complete but the guest is still running (it was polled above,
            // so its waker is registered): the response ends when the invocation does.
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
