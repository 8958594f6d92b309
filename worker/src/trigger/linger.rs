//! Lingering close: a connection the server ends while its client may still be sending
//! (a request body refused with 413) is half-closed, and what the client still sends is
//! read and discarded for a while before the socket is closed.
//!
//! Closing a socket with unread data makes the kernel answer with a reset, and a reset
//! that reaches the client before it has read the response makes it lose the response:
//! the client sees "connection reset" instead of the 413 that says why. A client that
//! closed first (the usual end of a keep-alive connection) costs one read of its EOF.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a client may go on sending after the response.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much of it is read at most.
const LINGER_BYTES: usize = 64 << 20;
const READ_CHUNK: usize = 16 << 10;

/// Half-closes `io`, then discards what the client still sends until it closes its side,
/// [`LINGER_TIME`] passes or [`LINGER_BYTES`] have arrived.
pub async fn close<T: AsyncRead + AsyncWrite + Unpin>(io: T) {
    close_within(io, LINGER_TIME).await;
}

async fn close_within<T: AsyncRead + AsyncWrite + Unpin>(mut io: T, linger: Duration) {
    // The FIN tells the client the response is complete.
    if io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained = drained.saturating_add(n),
            }
        }
    };
    let _ = tokio::time::timeout(linger, drain).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::duplex;

    use super::*;

    #[tokio::test]
    async fn reads_until_the_client_closes() {
        let (server, mut client) = duplex(1024);
        let closing = tokio::spawn(close(server));
        // The server's side is shut: the client reads EOF, yet can still send.
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        // More than the pipe holds: only a server that reads lets this write finish.
        let written = tokio::time::timeout(Duration::from_secs(2), client.write_all(&[1u8; 4096]));
        written.await.expect("the server stopped reading").unwrap();
        drop(client);
        // Well before the linger time: the client's EOF ends it.
        let closed = tokio::time::timeout(LINGER_TIME / 2, closing);
        closed
            .await
            .expect("the server waited out the linger time")
            .unwrap();
    }

    #[tokio::test]
    async fn gives_up_after_the_linger_time() {
        let (server, _client) = duplex(1024);
        let linger = Duration::from_millis(50);
        let started = std::time::Instant::now();
        close_within(server, linger).await;
        assert!(started.elapsed() >= linger);
    }
}
