//! Event triggers end to end, on real processes: a control plane on PostgreSQL + S3,
//! `stratus-worker` processes, NATS JetStream and Redis (the app's bucket, so every
//! worker counts into one place).
//!
//! - A queue trigger handles every message of a stream, dead-letters the poison ones
//!   after their receives, keeps its pool-wide concurrency cap, and loses nothing when
//!   a worker holding messages is SIGKILLed.
//! - A per-second timer fires once per second with two control planes, and after both
//!   were down, `catch_up = all` fires every missed time while `skip` fires none.
//! - Deploys are refused when the component lacks the handler a trigger calls.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_tests::platform::Platform;
use stratus_tests::{Http, Relay, free_port, redis_url, wasm};

fn nats_url() -> String {
    std::env::var("STRATUS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The app's bucket lives in the operator's Redis backend; tenants may read the NATS
/// server on this machine.
fn platform() -> Platform {
    let nats = nats_url();
    let port = nats.rsplit(':').next().unwrap_or("4222").to_string();
    platform_with_nats_ports(&port)
}

/// [`platform`], with NATS allowed on `ports` (a comma-separated list).
fn platform_with_nats_ports(ports: &str) -> Platform {
    Platform::with_config(&format!(
        r#"
[tenancy.backends.shared]
provider = "redis"
options = {{ url = "{}" }}
default = true

[tenancy.endpoints.nats]
hosts = ["127.0.0.1"]
ports = [{ports}]
"#,
        redis_url()
    ))
}

/// A key of the `events` app's bucket, through a worker's HTTP listener.
async fn kv(http: &Http, port: u16, key: &str) -> Option<String> {
    let reply = http
        .get(&format!("http://127.0.0.1:{port}/events/kv/{key}"))
        .await;
    match reply.status {
        200 => Some(reply.text()),
        404 => None,
        other => panic!("reading {key}: {other} {}", reply.text()),
    }
}

async fn stream_messages(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.unwrap();
    s.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_trigger_handles_every_message_and_survives_a_killed_worker() {
    let p = platform();
    let (api, grpc) = (free_port(), free_port());
    let _cp = p.control_plane(api, grpc);
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let mut workers: Vec<Option<stratus_tests::Dev>> = (0..2)
        .map(|i| Some(p.worker(grpc, &format!("w{i}"), ports[i], "a")))
        .collect();
    p.wait_workers_up(api, 2);

    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let (stream, dead) = (format!("JOBS{id}"), format!("DEAD{id}"));
    for (name, subject) in [
        (&stream, format!("jobs.{id}")),
        (&dead, format!("dead.{id}")),
    ] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let trigger = format!(
        "jobs=nats:url={},stream={stream},batch_size=10,concurrency=8,max_receives=3,backoff=fixed,backoff_ms=100,dead_letter=dead.{id},visibility_ms=3000",
        nats_url()
    );
    // Its bucket lives in a Redis that outlives the test: a fresh app, a fresh namespace.
    let app = format!("events-{id}");
    p.deploy(
        api,
        &wasm("events"),
        &app,
        &[
            "--bind",
            "kv=redis",
            "--route",
            "/events",
            "--queue",
            &trigger,
            "--replicas",
            "2",
        ],
    );
    let http = Http::default();

    // 1,000 messages, one in fifty poison; some take a while so a kill finds them held.
    let total = 1000;
    for i in 0..total {
        let body = match i {
            i if i % 50 == 13 => format!("m{i} poison"),
            i if i % 100 == 7 => format!("m{i} slow=400"),
            _ => format!("m{i}"),
        };
        js.publish(format!("jobs.{id}"), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // Once a few hundred are handled, SIGKILL a worker mid-stream.
    let started = Instant::now();
    loop {
        let (ok, out, _) = p.fnctl(api, &["triggers", &app, "-o", "json"]);
        assert!(ok);
        let triggers: Value = serde_json::from_str(&out).unwrap();
        let handled = triggers
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "queue")
            .map_or(0, |t| t["handled"].as_i64().unwrap_or(0));
        if handled >= 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {handled} handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The guest's gauge of handlers running is honest only while every handler ends:
    // the killed worker's never decrement it. So the cap is read before the kill.
    let max: i64 = kv(&http, ports[1], "max-running")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        max <= 8,
        "the pool-wide concurrency cap of 8 was exceeded: {max}"
    );
    workers[0] = None;

    // Every good message is handled; every poison one is dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut missing;
    loop {
        missing = Vec::new();
        for i in 0..total {
            if i % 50 != 13 && kv(&http, ports[1], &format!("seen:m{i}")).await.is_none() {
                missing.push(i);
            }
        }
        if missing.is_empty() && stream_messages(&js, &dead).await >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never handled: {missing:?}; dead-lettered {}",
            stream_messages(&js, &dead).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut duplicates = BTreeMap::new();
    for i in 0..total {
        let seen: i64 = kv(&http, ports[1], &format!("seen:m{i}"))
            .await
            .map_or(0, |v| v.parse().unwrap());
        if i % 50 == 13 {
            assert_eq!(seen, 0, "poison m{i} was handled");
        } else if seen > 1 {
            duplicates.insert(i, seen);
        }
    }
    // At least once: only what the killed worker was running when it died may have run
    // again (its handler may have finished without its acknowledgement going out).
    assert!(
        duplicates.len() <= 8,
        "duplicates beyond the killed worker's in-flight share: {duplicates:?}"
    );
    assert_eq!(stream_messages(&js, &dead).await, 20);

    let (ok, out, _) = p.fnctl(api, &["triggers", &app]);
    assert!(
        ok && out.contains("jobs") && out.contains("active"),
        "{out}"
    );
}

/// Runs of `trigger` as `fnctl runs` lists them: scheduled time → (state, attempt).
fn runs(p: &Platform, api: u16, app: &str, trigger: &str) -> BTreeMap<i64, (String, i64)> {
    let (ok, out, err) = p.fnctl(api, &["runs", app, "--limit", "500", "-o", "json"]);
    assert!(ok, "{out}{err}");
    let runs: Value = serde_json::from_str(&out).unwrap();
    let mut by_time = BTreeMap::new();
    for r in runs.as_array().unwrap() {
        if r["trigger"] == trigger {
            let at = r["scheduled_ms"].as_i64().unwrap();
            let previous = by_time.insert(
                at,
                (
                    r["state"].as_str().unwrap().to_string(),
                    r["attempt"].as_i64().unwrap(),
                ),
            );
            assert!(previous.is_none(), "{trigger} ran twice for {at}");
        }
    }
    by_time
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_across_two_control_planes_and_catch_up_by_policy() {
    let p = platform();
    let (api_a, grpc_a, api_b, grpc_b) = (free_port(), free_port(), free_port(), free_port());
    let mut cp_a = Some(p.control_plane(api_a, grpc_a));
    let mut cp_b = Some(p.control_plane(api_b, grpc_b));
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    // One worker follows each control plane.
    let _w0 = p.worker(grpc_a, "t0", ports[0], "a");
    let _w1 = p.worker(grpc_b, "t1", ports[1], "b");
    p.wait_workers_up(api_a, 2);
    let app = format!(
        "timers-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    p.deploy(
        api_a,
        &wasm("events"),
        &app,
        &[
            "--bind",
            "kv=redis",
            "--route",
            "/events",
            "--replicas",
            "all",
            "--timer",
            "tick=cron(* * * * * *):catch_up=skip",
            "--timer",
            "every2=rate(2 seconds):catch_up=all",
            "--timer",
            "failing=rate(3 seconds):retries=2,backoff_ms=200",
            // A timer may GET a route of the app instead (this key exists once `tick`
            // ran, so the GET answers 200).
            "--timer",
            "web=rate(2 seconds):route=/events/kv/timer-log:tick",
        ],
    );
    let http = Http::default();
    tokio::time::sleep(Duration::from_secs(12)).await;

    // Once per second, no gaps, no duplicates, every run succeeded.
    let ticks = runs(&p, api_a, &app, "tick");
    let times: Vec<i64> = ticks.keys().copied().collect();
    assert!(times.len() >= 8, "{ticks:?}");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a gap or an extra fire: {times:?}");
    }
    let settled: Vec<&(String, i64)> = ticks
        .values()
        .filter(|(s, _)| s != "running" && s != "pending")
        .collect();
    assert!(settled.iter().all(|(s, _)| s == "succeeded"), "{ticks:?}");
    // The guest saw each scheduled time once.
    let log = kv(&http, ports[0], "timer-log:tick").await.unwrap();
    let mut seen: Vec<&str> = log.split(',').collect();
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "a scheduled time ran twice: {log}");
    // A failing first attempt is retried and then succeeds.
    let failing = runs(&p, api_a, &app, "failing");
    assert!(
        failing.values().any(|(s, a)| s == "succeeded" && *a == 2),
        "no retried run succeeded: {failing:?}"
    );
    let web = runs(&p, api_a, &app, "web");
    assert!(
        web.values().any(|(s, _)| s == "succeeded"),
        "no route-targeting run succeeded: {web:?}"
    );

    // Both control planes down for 9 s, then back.
    let outage_start = chrono_ms();
    drop(cp_a.take());
    drop(cp_b.take());
    tokio::time::sleep(Duration::from_secs(9)).await;
    let outage_end = chrono_ms();
    let _cp_a = p.control_plane(api_a, grpc_a);
    let _cp_b = p.control_plane(api_b, grpc_b);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // `all`: every 2 s slot through the outage fired; `skip`: the seconds missed by more
    // than the lateness allowance did not.
    let every2: Vec<i64> = runs(&p, api_a, &app, "every2").keys().copied().collect();
    for pair in every2.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            2000,
            "catch_up=all left a gap: {every2:?}"
        );
    }
    assert!(
        every2
            .iter()
            .any(|t| *t > outage_start + 2000 && *t < outage_end - 5000),
        "{every2:?}"
    );
    let ticks: Vec<i64> = runs(&p, api_a, &app, "tick").keys().copied().collect();
    let missed_window = ticks
        .iter()
        .filter(|t| **t > outage_start + 1000 && **t < outage_end - 6000)
        .count();
    assert_eq!(
        missed_window, 0,
        "catch_up=skip fired missed times: {ticks:?}"
    );
    assert!(
        ticks.iter().any(|t| *t > outage_end),
        "ticks did not resume: {ticks:?}"
    );
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `fnctl deploy GUEST --app APP ARGS…`: whether it succeeded, and what it said.
fn deploy(p: &Platform, api: u16, guest: &str, app: &str, args: &[&str]) -> (bool, String) {
    let wasm = wasm(guest);
    let mut all = vec!["deploy", wasm.to_str().unwrap(), "--app", app];
    all.extend(args);
    let (ok, out, err) = p.fnctl(api, &all);
    (ok, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_are_refused_without_the_handler_a_trigger_calls() {
    let p = platform();
    let (api, grpc) = (free_port(), free_port());
    let _cp = p.control_plane(api, grpc);
    let refused = |guest: &str, app: &str, args: &[&str], says: &str| {
        let (ok, said) = deploy(&p, api, guest, app, args);
        assert!(!ok, "{args:?} was accepted");
        assert!(said.contains(says), "{args:?}: {said}");
    };
    // An HTTP-only component cannot take a queue trigger.
    refused(
        "hello",
        "hello",
        &["--queue", "jobs=embedded"],
        "wasi:messaging/incoming-handler",
    );
    // A queue-only component needs no HTTP export, but cannot take a route.
    let (ok, said) = deploy(
        &p,
        api,
        "wasmcloud_events",
        "wc",
        &[
            "--bind",
            "kv=redis",
            "--queue",
            "jobs=embedded",
            "--no-wait",
        ],
    );
    assert!(ok, "{said}");
    refused(
        "wasmcloud_events",
        "wc",
        &["--route", "/wc"],
        "wasi:http/incoming-handler",
    );
    fn with_queue(spec: &str) -> [&str; 4] {
        ["--bind", "kv=redis", "--queue", spec]
    }
    // An unknown trigger option names itself.
    refused(
        "events",
        "events",
        &with_queue("jobs=nats:stream=S,colour=blue"),
        "colour",
    );
    // A queue source is the operator's network: SQS (read with the worker's own AWS
    // credentials), a NATS server off the allow-list, or a metadata address, is refused.
    refused(
        "events",
        "events",
        &with_queue("jobs=sqs:queue_url=https://sqs.us-east-1.amazonaws.com/1/jobs"),
        "worker's own AWS credentials",
    );
    for url in ["nats://127.0.0.1:4999", "nats://169.254.169.254:4222"] {
        let spec = format!("jobs=nats:url={url},stream=S");
        let (ok, said) = deploy(&p, api, "events", "events", &with_queue(&spec));
        assert!(!ok, "{url} was accepted");
        assert!(
            said.contains("allow-list") || said.contains("never reachable"),
            "{url}: {said}"
        );
    }
}

/// The queue trigger's state as `fnctl triggers -o json` shows it.
fn queue_state(p: &Platform, api: u16, app: &str) -> Value {
    let (ok, out, err) = p.fnctl(api, &["triggers", app, "-o", "json"]);
    assert!(ok, "{out}{err}");
    let triggers: Value = serde_json::from_str(&out).unwrap();
    triggers
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "queue")
        .cloned()
        .unwrap_or(Value::Null)
}

/// NATS goes away (a relay in front of it is cut): the trigger reports the failure, the
/// worker keeps serving, and once NATS is back it handles what was sent meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_is_reported_and_recovered_from() {
    let target = nats_url().trim_start_matches("nats://").to_string();
    let relay = Relay::start(&target).await;
    let p = platform_with_nats_ports(&relay.addr.port().to_string());
    let (api, grpc) = (free_port(), free_port());
    let _cp = p.control_plane(api, grpc);
    let port = free_port();
    let _worker = p.worker(grpc, "n0", port, "a");
    p.wait_workers_up(api, 1);
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("OUT{id}"),
        subjects: vec![format!("out.{id}")],
        ..Default::default()
    })
    .await
    .unwrap();
    let app = format!("outage-{id}");
    let trigger = format!(
        "jobs=nats:url=nats://{},stream=OUT{id},visibility_ms=3000",
        relay.addr
    );
    p.deploy(
        api,
        &wasm("events"),
        &app,
        &[
            "--bind", "kv=redis", "--route", "/events", "--queue", &trigger,
        ],
    );
    let http = Http::default();
    let publish = |range: std::ops::Range<u32>| {
        let js = js.clone();
        let id = id.clone();
        async move {
            for i in range {
                js.publish(format!("out.{id}"), format!("o{i}").into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    };
    let all_seen = |upto: u32| {
        let http = &http;
        async move {
            for i in 0..upto {
                if kv(http, port, &format!("seen:o{i}")).await.is_none() {
                    return false;
                }
            }
            true
        }
    };
    publish(0..10).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_seen(10).await {
        assert!(
            Instant::now() < deadline,
            "the first messages were never handled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    relay.cut(true);
    publish(10..20).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = queue_state(&p, api, &app);
        if state["state"] == "failing" {
            assert!(
                !state["reasons"][0].as_str().unwrap_or("").is_empty(),
                "{state}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outage was never reported: {state}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The worker still serves HTTP meanwhile.
    assert_eq!(
        http.get(&format!("http://127.0.0.1:{port}/events/kv/seen:o0"))
            .await
            .status,
        200
    );

    relay.cut(false);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !all_seen(20).await {
        assert!(
            Instant::now() < deadline,
            "the trigger did not recover: {}",
            queue_state(&p, api, &app)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_state(&p, api, &app)["state"] != "active" {
        assert!(
            Instant::now() < deadline,
            "still failing: {}",
            queue_state(&p, api, &app)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
