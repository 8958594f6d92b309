//! The request body a guest reads: the client's body, cut off with wasi-http's
//! `HTTP-request-body-size` error once it passes the worker's request size limit.
//!
//! A body that declares its length is checked before any instance is made (see
//! `App::invoke`); this catches the ones that do not (chunked uploads), and those that
//! send more than they declared, without buffering anything.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::Error;

pin_project_lite::pin_project! {
    pub(super) struct LimitedBody<B> {
        #[pin]
        inner: B,
        limit: u64,
        received: u64,
        // Set when the body was cut off, for the invocation to answer 413.
        cut: Arc<AtomicBool>,
    }
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64, cut: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            limit,
            received: 0,
            cut,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.project();
        if this.cut.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            *this.received = this.received.saturating_add(data.len() as u64);
            if *this.received > *this.limit {
                this.cut.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(*this.received)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.cut.load(Ordering::Relaxed) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use futures::stream;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn chunks(sizes: &[usize]) -> impl Body<Data = Bytes, Error = hyper::Error> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = sizes
            .iter()
            .map(|&n| Ok(Frame::data(Bytes::from(vec![7u8; n]))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_up_to_the_limit_passes_whole() {
        let cut = Arc::new(AtomicBool::new(false));
        let body = LimitedBody::new(chunks(&[4, 3, 3]), 10, cut.clone());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 10);
        assert!(!cut.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_ends_with_the_size_error() {
        let cut = Arc::new(AtomicBool::new(false));
        let mut body = LimitedBody::new(chunks(&[4, 3, 4, 5]), 10, cut.clone());
        let mut read = 0;
        let error = loop {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("the body ended without an error"),
            }
        };
        assert_eq!(read, 7, "frames within the limit are passed on");
        assert!(
            matches!(error, Error::HttpRequestBodySize(Some(11))),
            "{error:?}"
        );
        assert!(cut.load(Ordering::Relaxed));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none(), "nothing is read past the cut");
    }
}
