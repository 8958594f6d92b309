//! Hostile guests cannot hurt the worker: after each misbehaviour the same worker process
//! still answers a normal request.

// Test code: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use stratus_tests::{Dev, Http, wasm};

fn hostile() -> Dev {
    Dev::start(
        &wasm("hostile"),
        &[
            "--timeout-ms",
            "1500",
            "--max-memory-mb",
            "64",
            "--max-concurrency",
            "8",
        ],
    )
}

async fn still_serves(dev: &mut Dev, http: &Http) {
    let ok = http.get(&format!("{}/ok", dev.url)).await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok\n"));
    assert!(dev.still_running(), "worker exited:\n{}", dev.stderr());
}

#[tokio::test]
async fn infinite_loop_times_out_with_504_and_others_are_served_meanwhile() {
    let mut dev = hostile();
    let http = Http::default();
    let url = dev.url.clone();
    let looping = tokio::spawn(async move { Http::default().get(&format!("{url}/loop")).await });
    // While the loop spins, other requests are answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serves(&mut dev, &http).await;
    assert!(
        !looping.is_finished(),
        "the loop ended before the others were served"
    );
    let looped = looping.await.unwrap();
    assert_eq!(looped.status, 504, "{}", looped.text());
    assert!(looped.text().contains("deadline"));
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_limit_and_gets_500() {
    let mut dev = hostile();
    let http = Http::default();
    let r = http.get(&format!("{}/oom", dev.url)).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("trapped"), "{}", r.text());
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn stack_overflow_traps_with_500() {
    let mut dev = hostile();
    let http = Http::default();
    let r = http.get(&format!("{}/recurse", dev.url)).await;
    assert_eq!(r.status, 500, "{}", r.text());
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn trap_mid_response_breaks_the_body_not_the_worker() {
    let mut dev = hostile();
    let http = Http::default();
    let r = http
        .send("GET", &format!("{}/trap-mid-body", dev.url), Vec::new())
        .await;
    match r {
        // Either the head never made it out or the body broke off: both tell the client
        // the response is incomplete. A clean end would not.
        Err(_) => {}
        Ok(reply) => panic!(
            "a trapped body arrived whole: {} {:?}",
            reply.status,
            reply.text()
        ),
    }
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn stdout_flood_is_truncated_not_fatal() {
    let mut dev = hostile();
    let http = Http::default();
    let r = http.get(&format!("{}/flood", dev.url)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "flooded\n"));
    still_serves(&mut dev, &http).await;
    assert!(
        dev.wait_for_log("dropped"),
        "no note of dropped output in logs"
    );
    let log = dev.stderr();
    let line = log
        .lines()
        .find(|l| l.contains(&"x".repeat(64)))
        .expect("the guest's output is not in the worker's log");
    assert!(
        line.contains("app=") && line.contains("invocation=") && line.contains("stdout"),
        "guest output not tagged with app, invocation and stream: {line:.200}"
    );
}

#[tokio::test]
async fn request_and_response_bodies_stream() {
    let dev = hostile();
    let http = Http::default();
    let body: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let r = http
        .send("POST", &format!("{}/echo", dev.url), body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "echoed body differs");
}

#[tokio::test]
async fn many_concurrent_requests_all_succeed() {
    let dev = hostile();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let url = format!("{}/ok", dev.url);
        tasks.push(tokio::spawn(async move {
            Http::default().get(&url).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_saturated_worker_answers_503_then_recovers() {
    let mut dev = Dev::start(
        &wasm("hostile"),
        &["--timeout-ms", "1500", "--max-concurrency", "1"],
    );
    let spin = |url: String| {
        tokio::spawn(async move { Http::default().get(&format!("{url}/loop")).await })
    };
    // The first loop holds the only slot; the second queues behind it (fairly, in order).
    let first = spin(dev.url.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = spin(dev.url.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = Http::default();
    let refused = http.get(&format!("{}/ok", dev.url)).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("concurrency limit"));
    assert_eq!(first.await.unwrap().status, 504);
    assert_eq!(second.await.unwrap().status, 504);
    still_serves(&mut dev, &http).await;
}

async fn raw_request(url: &str, request: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    s
}

#[tokio::test]
async fn a_client_that_stops_reading_cannot_hold_a_slot() {
    let mut dev = Dev::start(
        &wasm("hostile"),
        &["--timeout-ms", "1500", "--max-concurrency", "1"],
    );
    // Ask for 64 MiB and never read it: the guest blocks on a full socket.
    let stuck = raw_request(&dev.url, b"GET /big HTTP/1.1\r\nHost: stratus\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The stalled write hit its deadline and released the only slot.
    still_serves(&mut dev, &Http::default()).await;
    drop(stuck);
}

#[tokio::test]
async fn a_request_without_a_host_is_a_400() {
    use tokio::io::AsyncReadExt;
    let mut dev = hostile();
    let mut s = raw_request(&dev.url, b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    still_serves(&mut dev, &Http::default()).await;
}

#[tokio::test]
async fn head_requests_are_answered_and_the_worker_keeps_serving() {
    let mut dev = hostile();
    let http = Http::default();
    let r = http
        .send("HEAD", &format!("{}/ok", dev.url), Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn a_request_body_over_the_limit_gets_413_and_the_worker_keeps_serving() {
    let mut dev = Dev::start(&wasm("hostile"), &["--max-request-mb", "1"]);
    let http = Http::default();
    let url = format!("{}/length", dev.url);
    let r = http.send("POST", &url, vec![b'x'; 1 << 20]).await.unwrap();
    assert_eq!((r.status, r.text()), (200, format!("{}\n", 1 << 20)));
    // Refused before the body is read: the worker reads and drops what the client still
    // sends rather than resetting the connection, which could lose the 413 on its way.
    for size in [(1 << 20) + 1, 8 << 20, 8 << 20, 32 << 20] {
        let r = http.send("POST", &url, vec![b'x'; size]).await.unwrap();
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.text().contains("1048576-byte limit"), "{}", r.text());
        still_serves(&mut dev, &http).await;
    }
}

#[tokio::test]
async fn a_guest_cannot_open_sockets_around_its_bindings() {
    let mut dev = hostile();
    let http = Http::default();
    // Redis listens on 127.0.0.1:6379 here: only a binding may reach it.
    for path in ["/connect", "/listen"] {
        let r = http.get(&format!("{}{path}", dev.url)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().contains("PermissionDenied"),
            "{path} was not denied: {}",
            r.text()
        );
    }
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn a_guest_sees_no_host_files_and_no_host_environment() {
    let mut dev = hostile();
    let http = Http::default();
    let file = http.get(&format!("{}/file", dev.url)).await;
    assert!(
        file.text().starts_with("Err("),
        "read a host file: {}",
        file.text()
    );
    // The worker's environment holds credentials (AWS_*, database URLs).
    let env = http.get(&format!("{}/env", dev.url)).await;
    assert_eq!(env.text(), "[]", "the guest sees host variables");
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn what_a_guest_makes_the_host_hold_is_bounded() {
    // A deadline long enough for the hoarding to meet the host's limits.
    let mut dev = Dev::start(&wasm("hostile"), &["--timeout-ms", "20000"]);
    let http = Http::default();
    still_serves(&mut dev, &http).await;
    let before = dev.peak_rss();
    // All at once: the worker's peak grows by their sum.
    let mut hoards = Vec::new();
    // Header maps that fit the host's per-map limit, maps over it, and bodies.
    for path in ["/fields?60", "/fields?120", "/bodies"] {
        let url = format!("{}{path}", dev.url);
        hoards.push(tokio::spawn(async move { Http::default().get(&url).await }));
    }
    for hoard in hoards {
        let r = hoard.await.unwrap();
        // Refused at the limit, the guest traps (500) or sees the error and answers.
        assert!([200, 500].contains(&r.status), "{}: {}", r.status, r.text());
    }
    let grown = dev.peak_rss().saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "three hoarding invocations grew the worker by {} MiB",
        grown >> 20
    );
    still_serves(&mut dev, &http).await;
}

#[tokio::test]
async fn a_cpu_time_limit_stops_a_spinning_guest_but_not_a_waiting_one() {
    let mut dev = Dev::start(
        &wasm("hostile"),
        &["--max-cpu-ms", "200", "--timeout-ms", "20000"],
    );
    let http = Http::default();
    let r = http.get(&format!("{}/loop", dev.url)).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("200ms of CPU time"), "{}", r.text());
    // Three times the CPU limit in wall-clock time, spent waiting on a timer.
    let r = http.get(&format!("{}/sleep", dev.url)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "slept\n"));
    still_serves(&mut dev, &http).await;
}
