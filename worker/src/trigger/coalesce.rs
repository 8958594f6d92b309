//! Response-write coalescing: while other requests are in flight, a worker thread holds
//! its connections' responses back briefly and sends them together.
//!
//! A client that shares the machine (a proxy or sidecar in front of the worker, a load
//! generator) sleeps while it waits for responses. Every response that finds it asleep
//! costs the worker the wake-up, a cross-CPU interrupt (on a VM an exit as well), and
//! usually a preemption by the client. Sent in a burst, the responses after the first
//! find the client awake. A response is held only while another request is in flight
//! on the same listener (with nothing to batch with, latency wins), and only until the
//! thread runs out of other work, [`BATCH`] responses wait, or [`MAX_HOLD`] passes.
//!
//! Holding needs the runtime's idle hook ([`install`]); on threads without it (tests'
//! runtimes, blocking threads) writes are never held.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Responses held on one thread at most; the one that fills the batch sends them all.
pub const BATCH: usize = 16;
/// The longest a response is held when its thread never runs out of work (e.g. a
/// spinning guest keeps it busy). Tokio's timers tick in milliseconds.
pub const MAX_HOLD: Duration = Duration::from_millis(1);

/// Responses held so far, over all threads (for tests and status).
static HELD_TOTAL: AtomicU64 = AtomicU64::new(0);

/// The responses one thread holds.
#[derive(Default)]
struct Batch {
    /// Bumped on every release: a ticket from an earlier generation may write.
    generation: u64,
    waiting: Vec<Waker>,
}

thread_local! {
    /// Whether this thread runs the idle hook that releases held responses.
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static BATCH_HERE: RefCell<Batch> = RefCell::default();
    static THREAD: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// Sets up coalescing on a multi-threaded runtime's worker threads: they release what
/// they hold whenever they are about to go idle. Replaces the builder's thread-start
/// and thread-park callbacks.
pub fn install(builder: &mut tokio::runtime::Builder) {
    builder
        .on_thread_start(|| {
            let _ = ENABLED.try_with(|enabled| enabled.set(true));
        })
        .on_thread_park(release);
}

/// Responses held since the process started.
pub fn held_total() -> u64 {
    HELD_TOTAL.load(Ordering::Relaxed)
}

/// Lets every response held on this thread go.
fn release() {
    let waiting = BATCH_HERE
        .try_with(|batch| {
            let mut batch = batch.borrow_mut();
            if batch.waiting.is_empty() {
                return Vec::new();
            }
            batch.generation += 1;
            std::mem::take(&mut batch.waiting)
        })
        .unwrap_or_default();
    for waker in waiting {
        waker.wake();
    }
}

/// Where a held response waits: its thread and that thread's generation.
#[derive(Clone, Copy)]
struct Ticket {
    thread: u64,
    generation: u64,
}

impl Ticket {
    /// Queues `waker` on this thread's batch. `None` when the batch is full: then
    /// everything in it is released and the caller writes at once.
    fn take(waker: &Waker) -> Option<Self> {
        if !ENABLED.try_with(Cell::get).unwrap_or(false) {
            return None;
        }
        let thread = THREAD.try_with(|t| *t).ok()?;
        let queued = BATCH_HERE
            .try_with(|batch| {
                let mut batch = batch.borrow_mut();
                if batch.waiting.len() + 1 >= BATCH {
                    return None;
                }
                batch.waiting.push(waker.clone());
                Some(batch.generation)
            })
            .ok()?;
        match queued {
            Some(generation) => Some(Self { thread, generation }),
            None => {
                release();
                None
            }
        }
    }

    /// Whether the batch this ticket waits in has been released. A task polled on
    /// another thread than the one holding it is not held up further.
    fn released(self) -> bool {
        let here = THREAD.try_with(|t| *t).unwrap_or(0);
        here != self.thread
            || BATCH_HERE
                .try_with(|batch| batch.borrow().generation != self.generation)
                .unwrap_or(true)
    }

    /// Waits on in the same batch after a poll that was not a release.
    fn wait_again(self, waker: &Waker) {
        let _ = BATCH_HERE.try_with(|batch| batch.borrow_mut().waiting.push(waker.clone()));
    }
}

/// Requests read but not yet answered, on one listener.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// A connection whose first response write after each request may be held.
pub struct Coalesced<T> {
    inner: T,
    in_flight: InFlight,
    /// A request was read and its response has not started: counted in `in_flight`.
    awaiting_response: bool,
    held: Option<Ticket>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight,
            awaiting_response: false,
            held: None,
            deadline: None,
        }
    }

    fn request_read(&mut self) {
        if !self.awaiting_response {
            self.awaiting_response = true;
            self.in_flight.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn response_started(&mut self) {
        if self.awaiting_response {
            self.awaiting_response = false;
            self.in_flight.0.fetch_sub(1, Ordering::Relaxed);
        }
        self.held = None;
        self.deadline = None;
    }

    /// Ready when this write may go to the socket.
    fn may_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.awaiting_response {
            return Poll::Ready(());
        }
        match self.held {
            Some(ticket) if ticket.released() => {}
            Some(ticket) => {
                if !self.hold_expired(cx) {
                    // Woken by something else (e.g. the client sent more): wait on.
                    ticket.wait_again(cx.waker());
                    return Poll::Pending;
                }
            }
            None => {
                let others = self.in_flight.0.load(Ordering::Relaxed) > 1;
                if let Some(ticket) = others.then(|| Ticket::take(cx.waker())).flatten() {
                    HELD_TOTAL.fetch_add(1, Ordering::Relaxed);
                    self.held = Some(ticket);
                    if !self.hold_expired(cx) {
                        return Poll::Pending;
                    }
                }
            }
        }
        self.response_started();
        Poll::Ready(())
    }

    /// Whether [`MAX_HOLD`] has passed since the response was first held; if not, the
    /// task is woken when it has.
    fn hold_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(MAX_HOLD)))
            .as_mut()
            .poll(cx)
            .is_ready()
    }
}

impl<T> Drop for Coalesced<T> {
    fn drop(&mut self) {
        self.response_started();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.request_read();
        }
        poll
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
