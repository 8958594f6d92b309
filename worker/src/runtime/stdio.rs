//! Captured guest stdout/stderr: kept up to a limit per invocation, the rest counted and
//! dropped, so a guest flooding its output neither fails nor exhausts host memory.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

#[derive(Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: usize,
}

/// One captured stream; clones share the buffer.
#[derive(Clone)]
pub struct CapturedOutput {
    buffer: Arc<Mutex<Buffer>>,
    limit: usize,
}

impl CapturedOutput {
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: Arc::default(),
            limit,
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut b = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.limit.saturating_sub(b.kept.len());
        let (keep, drop) = bytes.split_at(room.min(bytes.len()));
        b.kept.extend_from_slice(keep);
        b.dropped += drop.len();
    }

    /// Takes what was captured so far: the kept bytes and how many were dropped.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut b = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut b.kept), std::mem::take(&mut b.dropped))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_limit_and_counts_the_rest() {
        let out = CapturedOutput::new(4);
        out.append(b"abc");
        out.append(b"defg");
        assert_eq!(out.take(), (b"abcd".to_vec(), 3));
        assert_eq!(out.take(), (Vec::new(), 0));
    }
}
