//! The response body handed to hyper. It also drives the rest of the guest's execution,
//! so an invocation runs in the connection's own task (no spawn, no cross-thread
//! wake-ups), and it ends with an error instead of a clean EOF when the invocation failed
//! after sending the head, so a client never takes a truncated body for a whole one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::app::InvocationError;

/// The rest of a running invocation.
pub type GuestRun = Pin<Box<dyn Future<Output = Result<(), InvocationError>> + Send>>;

type BodyFrame = Result<Frame<Bytes>, wasmtime_wasi_http::Error>;

pub struct GuardedBody {
    inner: HyperOutgoingBody,
    inner_done: bool,
    /// Frames taken from `inner` ahead of hyper asking for them.
    taken: VecDeque<BodyFrame>,
    /// The exact length of what is left, when all of it is in `taken`.
    exact_len: Option<u64>,
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
            taken: VecDeque::new(),
            exact_len: None,
            guest: Some(guest),
            succeeded: None,
        }
    }

    /// The body of an invocation that already ended. What the guest wrote is already
    /// buffered in the body's channel, so it is taken now: when that is the whole body,
    /// hyper learns its exact length and sends it with `Content-Length` in one write,
    /// instead of chunked encoding and a separate terminating chunk.
    pub fn finished(mut inner: HyperOutgoingBody, succeeded: bool) -> Self {
        let mut taken = VecDeque::new();
        let mut inner_done = false;
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match Pin::new(&mut inner).poll_frame(&mut cx) {
                Poll::Ready(Some(frame)) => taken.push_back(frame),
                Poll::Ready(None) => {
                    inner_done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        let exact_len = if succeeded && inner_done {
            taken.iter().try_fold(0u64, |len, frame| match frame {
                Ok(frame) => frame.data_ref().map(|data| len + data.len() as u64),
                Err(_) => None,
            })
        } else {
            None
        };
        Self {
            inner,
            inner_done,
            taken,
            exact_len,
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
        if let Some(frame) = this.taken.pop_front() {
            if let (Some(len), Ok(frame)) = (this.exact_len.as_mut(), &frame) {
                *len = len.saturating_sub(frame.data_ref().map_or(0, |data| data.len() as u64));
            }
            return Poll::Ready(Some(frame));
        }
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
        self.exact_len.is_some() && self.taken.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) => SizeHint::with_exact(len),
            None => self.inner.size_hint(),
        }
    }
}
