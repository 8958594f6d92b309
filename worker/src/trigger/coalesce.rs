//! Response-write coalescing: while other requests are being handled, a connection's
//! response waits until its worker thread has run everything else it has ready, so the
//! thread's responses go out together.
//!
//! A client that shares the machine (a proxy or sidecar in front of the worker, a load
//! generator) sleeps while it waits for responses. Every response that finds it asleep
//! costs the worker the wake-up, a cross-CPU interrupt (on a VM an exit as well), and
//! usually a preemption by the client. Sent in a burst, the responses after the first
//! find the client awake.
//!
//! The wait is tokio's `yield_now`, which the scheduler resumes once the thread's local
//! queue is empty (on the same thread, after polling for I/O) or at its next maintenance
//! pass (every 61 task polls), whichever comes first. Only the first write of a response
//! waits, and only when another request is being handled on the same listener: a lone
//! request has nothing to share a burst with, and goes out at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Responses held so far, over all listeners (for tests and status).
static HELD_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Responses held since the process started.
pub fn held_total() -> u64 {
    HELD_TOTAL.load(Ordering::Relaxed)
}

/// Requests being handled on one listener: from dispatch until the response is ready.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts a request as being handled until the returned guard is dropped.
    pub fn start(&self) -> Handling {
        self.0.fetch_add(1, Ordering::Relaxed);
        Handling(self.0.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One request being handled; see [`InFlight::start`].
pub struct Handling(Arc<AtomicUsize>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a connection whose response is ready: its next write is the response's first.
#[derive(Clone, Default)]
pub struct ResponseReady(Arc<AtomicBool>);

impl ResponseReady {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Acquire)
    }
}

type Hold = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection whose responses may wait for the rest of their thread's burst.
pub struct Coalesced<T> {
    inner: T,
    in_flight: InFlight,
    ready: ResponseReady,
    held: Option<Hold>,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T, in_flight: InFlight, ready: ResponseReady) -> Self {
        Self {
            inner,
            in_flight,
            ready,
            held: None,
        }
    }

    /// Ready when this write may go to the socket.
    fn may_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(held) = self.held.as_mut() {
            std::task::ready!(held.as_mut().poll(cx));
            self.held = None;
            return Poll::Ready(());
        }
        // The connection's own request no longer counts once its response is ready.
        if self.ready.take() && self.in_flight.any() {
            let mut held: Hold = Box::pin(tokio::task::yield_now());
            if held.as_mut().poll(cx).is_pending() {
                HELD_TOTAL.fetch_add(1, Ordering::Relaxed);
                self.held = Some(held);
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.may_write(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.may_write(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
