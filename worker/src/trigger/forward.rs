//! Forwarding a request to another worker of the pool that holds the app, so that every
//! worker is an entry point for every app of its pool.
//!
//! Peers are tried in turn from a rotating start (balancing), over pooled HTTP/1.1
//! connections. A request moves on to the next peer when its connection failed before
//! the request was sent (the request is handed back untouched), and, when it has no body
//! and an idempotent method, after any failure before a response head. A forwarded
//! request carries [`FORWARDED_HEADER`] and is never forwarded again, so a stale table
//! cannot bounce a request between workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::runtime::InvocationError;

/// Marks a request one worker forwarded to another.
pub const FORWARDED_HEADER: &str = "x-stratus-forwarded";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Headers that belong to one connection (RFC 9110 §7.6.1); `transfer-encoding` is left
/// to hyper, which frames the forwarded body itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];
/// Idle connections kept per peer.
const MAX_IDLE: usize = 32;

type OutBody = UnsyncBoxBody<Bytes, hyper::Error>;
type Response = crate::runtime::Response;

/// A pool of connections to peer workers. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<HashMap<String, Vec<SendRequest<OutBody>>>>,
    next: AtomicUsize,
    /// How long a peer may take to send a response head (a frozen peer must not hold
    /// the request for as long as the client waits).
    head_timeout: Duration,
}

impl Forwarder {
    /// `head_timeout` should exceed the invocation deadline, which the peer enforces.
    pub fn new(head_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::default(),
                next: AtomicUsize::new(0),
                head_timeout,
            }),
        }
    }
}

enum Failure {
    /// Nothing reached the peer: the request comes back to try elsewhere.
    NotSent(Box<hyper::Request<OutBody>>),
    /// The request may have reached the peer.
    Sent(String),
}

impl Forwarder {
    /// Whether `req` was already forwarded by another worker.
    pub fn was_forwarded<B>(req: &hyper::Request<B>) -> bool {
        req.headers().contains_key(FORWARDED_HEADER)
    }

    /// Sends `req` to one of `peers` and returns its response.
    pub async fn forward(&self, req: hyper::Request<Incoming>, peers: &[String]) -> Response {
        let (mut parts, body) = req.into_parts();
        // Hop-by-hop headers describe the client's connection, not this one.
        for name in HOP_BY_HOP {
            parts.headers.remove(*name);
        }
        parts
            .headers
            .insert(FORWARDED_HEADER, http::HeaderValue::from_static("1"));
        // A bodiless idempotent request can be sent again after any failure: keep its
        // head for that (the common GET pays one header-map copy, nothing else does).
        let replay = (http_body::Body::is_end_stream(&body) && is_idempotent(&parts.method))
            .then(|| parts.clone());
        let mut pending = Some(hyper::Request::from_parts(parts, body.boxed_unsync()));
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = String::from("no peer");
        for i in 0..peers.len() {
            let Some(peer) = peers.get((start + i) % peers.len()) else {
                break;
            };
            let req = match (pending.take(), &replay) {
                (Some(req), _) => req,
                (None, Some(head)) => hyper::Request::from_parts(
                    head.clone(),
                    Empty::<Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                ),
                (None, None) => break,
            };
            match self.send(peer, req).await {
                Ok(resp) => {
                    return resp.map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
                }
                Err(Failure::NotSent(req)) => {
                    tracing::debug!(%peer, "peer unreachable; trying another");
                    pending = Some(*req);
                }
                Err(Failure::Sent(e)) => {
                    tracing::debug!(%peer, error = %e, "forwarded request failed");
                    last_error = e;
                }
            }
        }
        if pending.is_some() {
            // No peer could be reached at all: as if none were ready.
            return InvocationError::NoReplica.into_response("forward");
        }
        InvocationError::PeerFailed(last_error).into_response("forward")
    }

    async fn send(
        &self,
        peer: &str,
        mut req: hyper::Request<OutBody>,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        // A pooled connection the peer closed hands the request back; then dial anew once.
        while let Some(sender) = self.take_idle(peer) {
            match self.try_send(peer, sender, req).await {
                Err(Failure::NotSent(back)) => req = *back,
                other => return other,
            }
        }
        let sender = match connect(peer).await {
            Ok(s) => s,
            Err(_) => return Err(Failure::NotSent(Box::new(req))),
        };
        self.try_send(peer, sender, req).await
    }

    async fn try_send(
        &self,
        peer: &str,
        mut sender: SendRequest<OutBody>,
        req: hyper::Request<OutBody>,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let sent = match tokio::time::timeout(self.inner.head_timeout, sender.try_send_request(req))
            .await
        {
            Ok(sent) => sent,
            Err(_) => {
                return Err(Failure::Sent(format!(
                    "{peer} sent no response head within {:?}",
                    self.inner.head_timeout
                )));
            }
        };
        match sent {
            Ok(resp) => {
                // The connection is reusable once this response's body has been read.
                let this = self.clone();
                let peer = peer.to_string();
                tokio::spawn(async move {
                    if sender.ready().await.is_ok() {
                        this.put_idle(peer, sender);
                    }
                });
                Ok(resp)
            }
            Err(mut e) => match e.take_message() {
                Some(req) => Err(Failure::NotSent(Box::new(req))),
                None => Err(Failure::Sent(e.into_error().to_string())),
            },
        }
    }

    fn take_idle(&self, peer: &str) -> Option<SendRequest<OutBody>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.get_mut(peer)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, peer: String, sender: SendRequest<OutBody>) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.entry(peer).or_default();
        if senders.len() < MAX_IDLE {
            senders.push(sender);
        }
    }
}

async fn connect(peer: &str) -> Result<SendRequest<OutBody>, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(peer))
        .await
        .map_err(|_| format!("connecting to {peer} timed out"))?
        .map_err(|e| format!("connecting to {peer}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {peer}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "peer connection ended");
        }
    });
    Ok(sender)
}

fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_are_replayed() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn no_ready_replica_is_503_with_retry_after() {
        let resp = InvocationError::NoReplica.into_response("forward");
        assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        let resp = InvocationError::PeerFailed("reset by 10.0.0.7".into()).into_response("x");
        assert_eq!(resp.status(), http::StatusCode::BAD_GATEWAY);
    }
}
