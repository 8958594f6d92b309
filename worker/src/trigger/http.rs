//! The HTTP trigger: serves HTTP/1.1 and hands each request to an app's
//! `wasi:http/incoming-handler`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::coalesce::InFlight;
use super::forward::Forwarder;
use super::routes::{Backend, Routes};
use super::stall::WriteDeadline;
use crate::runtime::{App, InvocationError, poll_deferring_teardown};

/// What a listener serves: one app on every path, or a route table of apps (loaded
/// here or forwarded to the pool's other workers).
#[derive(Clone)]
pub enum Target {
    App(Arc<App>),
    Routes(Arc<Routes>, Forwarder),
}

/// Open connections at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 8192;
/// How long a client may take to send a request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `target` on `listener` until `shutdown` resolves. Each connection runs in its
/// own task; a failing connection or guest never stops the accept loop. A response write
/// may stall for at most `write_timeout`.
pub async fn serve(
    listener: TcpListener,
    target: Target,
    write_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let in_flight = InFlight::default();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            () = &mut shutdown => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let target = target.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, target, write_timeout, in_flight).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    target: Target,
    write_timeout: Duration,
    in_flight: InFlight,
) {
    let io = TokioIo::new(WriteDeadline::new(stream, write_timeout));
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (backend, forwarder) = match &target {
            Target::App(app) => (Some(Backend::Local(app.clone())), None),
            Target::Routes(routes, forwarder) => {
                (routes.resolve(req.uri().path()), Some(forwarder.clone()))
            }
        };
        let handling = in_flight.start();
        async move {
            let response = match (backend, forwarder) {
                (Some(Backend::Local(app)), _) => app.handle(req).await,
                (Some(Backend::Peers(peers)), Some(forwarder))
                    if !Forwarder::was_forwarded(&req) =>
                {
                    forwarder.forward(req, &peers).await
                }
                (Some(_), _) => InvocationError::NoReplica.into_response("none"),
                (None, _) => InvocationError::NoRoute.into_response("none"),
            };
            Ok::<_, std::convert::Infallible>(handling.respond(response).await)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(io, service)
        .without_shutdown();
    let mut connection = std::pin::pin!(connection);
    // Instances finished during a poll are torn down after it, once hyper has written
    // their responses.
    let served =
        std::future::poll_fn(|cx| poll_deferring_teardown(|| connection.as_mut().poll(cx))).await;
    match served {
        Ok(parts) => super::linger::close(parts.io.into_inner()).await,
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}
