//! The response body handed to hyper: the guest's body, ended with an error instead of a
//! clean EOF when the invocation failed after sending the head, so a client never takes a
//! truncated body for a whole one.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub struct GuardedBody {
    inner: HyperOutgoingBody,
    /// Resolves to whether the invocation completed without trap or timeout.
    outcome: oneshot::Receiver<bool>,
}

impl GuardedBody {
    pub fn new(inner: HyperOutgoingBody, outcome: oneshot::Receiver<bool>) -> Self {
        Self { inner, outcome }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(frame) => Poll::Ready(Some(frame)),
            None => match ready!(Pin::new(&mut self.outcome).poll(cx)) {
                Ok(true) => Poll::Ready(None),
                Ok(false) | Err(_) => {
                    Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        // The end is only known once the outcome is.
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
