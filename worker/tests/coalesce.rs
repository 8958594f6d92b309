//! Response-write coalescing over real connections: under concurrency responses are
//! held and all of them arrive; a lone request is never held, whatever its body; a held
//! response goes out even while its worker thread never runs out of work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stratus_worker::runtime::{Runtime, RuntimeConfig};
use stratus_worker::trigger::coalesce;
use stratus_worker::trigger::http::{Target, serve};

mod support;

/// The hold counter is process-wide: one test at a time reads it.
static SERIAL: Mutex<()> = Mutex::new(());

/// A multi-threaded runtime, as the binaries run.
fn tokio_runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves the `hostile` guest on a free port of `rt`.
fn start(rt: &tokio::runtime::Runtime, config: RuntimeConfig) -> SocketAddr {
    rt.block_on(async {
        let runtime = Runtime::new(config).unwrap();
        let app = support::load(&runtime, "hostile", "coalesce");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            Target::App(app),
            Duration::from_secs(10),
            std::future::pending(),
        ));
        addr
    })
}

/// A blocking GET on its own connection, from outside the server's runtime.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: coalesce\r\nconnection: close\r\n\r\n"),
    )
}

/// Sends `head_and_body` on a new connection; the status and body of the response.
fn request(addr: SocketAddr, head_and_body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head_and_body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn concurrent_responses_are_held_and_all_arrive() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio_runtime(2);
    let addr = start(&rt, RuntimeConfig::default());
    let held_before = coalesce::held_total();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let (status, body) = get(addr, "/ok");
                    assert_eq!(status, 200);
                    assert!(body.contains("ok"), "body: {body:?}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert!(
        coalesce::held_total() > held_before,
        "320 requests from 32 clients at once and not one response was held"
    );
}

#[test]
fn a_lone_request_is_never_held() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio_runtime(2);
    let addr = start(&rt, RuntimeConfig::default());
    let held_before = coalesce::held_total();
    for _ in 0..20 {
        assert_eq!(get(addr, "/ok").0, 200);
        // A body streamed back while it is read, and one sent after `100 Continue`.
        let body = "x".repeat(64 << 10);
        let (status, echoed) = request(
            addr,
            &format!(
                "POST /echo HTTP/1.1\r\nhost: coalesce\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(status, 200);
        assert!(echoed.contains(&body[..1024]));
        let (status, rest) = request(
            addr,
            "POST /echo HTTP/1.1\r\nhost: coalesce\r\nconnection: close\r\n\
             expect: 100-continue\r\ncontent-length: 2\r\n\r\nhi",
        );
        assert!(
            status == 200 || (status == 100 && rest.contains("HTTP/1.1 200")),
            "{status} {rest:?}"
        );
    }
    assert_eq!(coalesce::held_total(), held_before);
}

#[test]
fn a_response_is_not_held_while_a_guest_spins() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // One worker thread, kept busy by a spinning guest (it yields at every epoch tick
    // and is runnable again at once), so the thread never runs out of work: holding a
    // response until it did would hold it for 61 ticks of the spinner. It goes out at
    // once instead.
    let rt = tokio_runtime(1);
    let deadline = Duration::from_secs(8);
    let addr = start(
        &rt,
        RuntimeConfig {
            timeout: deadline,
            ..RuntimeConfig::default()
        },
    );
    let spinner = std::thread::spawn(move || get(addr, "/loop"));
    // Let the spinner's request arrive and spin, so the next one has company in flight.
    std::thread::sleep(Duration::from_millis(300));
    let held_before = coalesce::held_total();
    let started = Instant::now();
    assert_eq!(get(addr, "/ok").0, 200);
    let took = started.elapsed();
    assert_eq!(
        coalesce::held_total(),
        held_before,
        "a response was held behind a spinning guest"
    );
    assert!(
        took < deadline / 4,
        "the response waited {took:?}, as long as the spinning guest ran"
    );
    assert_eq!(spinner.join().unwrap().0, 504);
}
