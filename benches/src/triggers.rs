//! `trigger-bench`: event-trigger latency and throughput, printed as a table (a
//! benchmark, not a test: it asserts nothing).
//!
//! - **Enqueue → handled**, one message at a time, on the embedded queue and on NATS
//!   JetStream: from just before the send to the moment the `events` guest's handler
//!   returned (an upper bound of enqueue → handler start: it includes the handler's four
//!   in-memory key-value calls).
//! - **Throughput** on one JetStream stream in the same run: a raw async-nats pull
//!   consumer acknowledging each message, against the queue trigger running a no-op
//!   function (the `events` guest's `noop` path; concurrency 16, batches of 10).
//! - **Timer firing delay**: `fnctl up` with a per-second cron; from each scheduled time
//!   to the run's start on a worker, read from `fnctl runs`.
//!
//! Needs `STRATUS_WASM_DIR` and NATS at `STRATUS_TEST_NATS_URL`; `BENCH_MESSAGES`
//! (latency, default 500), `BENCH_THROUGHPUT` (default 20000) and `BENCH_SECONDS` (timer
//! phase, default 30) size it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use stratus_proto::triggers::QueueTrigger;
use stratus_worker::binding::Binding;
use stratus_worker::capabilities::Capabilities;
use stratus_worker::queues::{self, EmbeddedQueues, Outgoing};
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};
use stratus_worker::trigger::queue::QueueConsumer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nats_url() -> String {
    std::env::var("STRATUS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn wasm(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("STRATUS_WASM_DIR")
        .map(PathBuf::from)
        .context("set STRATUS_WASM_DIR (built guests)")?;
    Ok(dir.join(format!("{name}.wasm")))
}

async fn events_app(runtime: &Runtime, dir: &std::path::Path) -> anyhow::Result<Arc<App>> {
    let bytes = std::fs::read(wasm("events")?)?;
    let bindings: Vec<Binding> = vec!["kv=memory".parse()?];
    let caps = Capabilities::open(&bindings, dir).await?;
    Ok(Arc::new(runtime.load("events", &bytes, caps)?))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Sends one message at a time through `send` and waits for the consumer to handle it.
async fn latency<F, Fut>(consumer: &QueueConsumer, n: usize, mut send: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let before = consumer.status.handled.load(Ordering::Relaxed);
        let handled = consumer.status.handled_signal.notified();
        tokio::pin!(handled);
        handled.as_mut().enable();
        let t = Instant::now();
        if let Err(e) = send(i).await {
            eprintln!("send failed: {e:#}");
            continue;
        }
        loop {
            if consumer.status.handled.load(Ordering::Relaxed) > before {
                break;
            }
            if tokio::time::timeout(Duration::from_secs(5), handled.as_mut())
                .await
                .is_err()
            {
                eprintln!("message {i} not handled within 5 s");
                break;
            }
            handled.set(consumer.status.handled_signal.notified());
            handled.as_mut().enable();
        }
        took.push(t.elapsed());
    }
    took.sort();
    took
}

fn start(
    app: &Arc<App>,
    spec: &str,
    queues: &EmbeddedQueues,
    name: &str,
) -> anyhow::Result<QueueConsumer> {
    let trigger: QueueTrigger = spec.parse()?;
    let concurrency = trigger.max_concurrency;
    Ok(QueueConsumer::start(
        app.clone(),
        trigger,
        concurrency,
        name.into(),
        queues.clone(),
    ))
}

async fn create_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
    subject: &str,
) -> anyhow::Result<()> {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        ..Default::default()
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let app = events_app(&runtime, dir.path()).await?;
    let queues = queues::open_embedded(dir.path())?;
    let n = size("BENCH_MESSAGES", 500);

    // Enqueue → handled on the embedded queue.
    {
        let consumer = start(
            &app,
            "lat=embedded:queue=lat,concurrency=16",
            &queues,
            "bench.lat",
        )?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let q = queues.clone();
        let took = latency(&consumer, n, |i| {
            let q = q.clone();
            async move {
                q.send(
                    "lat",
                    Outgoing {
                        body: format!("e{i}").into_bytes(),
                        ..Outgoing::default()
                    },
                )
                .await?;
                Ok(())
            }
        })
        .await;
        rows.push((
            "embedded: enqueue → handled, p50".into(),
            ms(percentile(&took, 0.5)),
            "< 5 ms".into(),
        ));
        rows.push((
            "embedded: enqueue → handled, p99".into(),
            ms(percentile(&took, 0.99)),
            "< 25 ms".into(),
        ));
    }

    // Enqueue → handled on JetStream.
    let client = async_nats::connect(nats_url())
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client.clone());
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    {
        let (stream, subject) = (format!("LAT{run}"), format!("lat.{run}"));
        create_stream(&js, &stream, &subject).await?;
        let spec = format!("lat=nats:url={},stream={stream},concurrency=16", nats_url());
        let consumer = start(&app, &spec, &queues, &format!("bench.lat.{run}"))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let took = latency(&consumer, n, |i| {
            let js = js.clone();
            let subject = subject.clone();
            async move {
                js.publish(subject, format!("j{i}").into()).await?.await?;
                Ok(())
            }
        })
        .await;
        rows.push((
            "jetstream: enqueue → handled, p50".into(),
            ms(percentile(&took, 0.5)),
            "< 5 ms".into(),
        ));
        rows.push((
            "jetstream: enqueue → handled, p99".into(),
            ms(percentile(&took, 0.99)),
            "< 25 ms".into(),
        ));
    }

    // Throughput: raw consumer loop vs the queue trigger, same stream, same run.
    {
        let total = size("BENCH_THROUGHPUT", 20_000);
        let (stream, subject) = (format!("TP{run}"), format!("tp.{run}"));
        create_stream(&js, &stream, &subject).await?;
        let publish = |tag: &'static str| {
            let js = js.clone();
            let subject = subject.clone();
            async move {
                let mut acks = Vec::with_capacity(total);
                for i in 0..total {
                    acks.push(
                        js.publish(subject.clone(), format!("noop-{tag}{i}").into())
                            .await?,
                    );
                }
                for ack in acks {
                    ack.await?;
                }
                anyhow::Ok(())
            }
        };
        publish("r").await?;
        let s = js.get_stream(&stream).await?;
        let raw = s
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 1024,
                ..Default::default()
            })
            .await?;
        let t = Instant::now();
        let mut messages = raw.messages().await?;
        let mut got = 0;
        while got < total {
            let Some(message) = messages.next().await else {
                break;
            };
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            got += 1;
        }
        let raw_rate = got as f64 / t.elapsed().as_secs_f64();
        drop(messages);
        // The trigger reads the same stream from the start with its own consumer.
        let spec = format!(
            "tp=nats:url={},stream={stream},concurrency=16,batch_size=10",
            nats_url()
        );
        let t = Instant::now();
        let consumer = start(&app, &spec, &queues, &format!("bench.tp.{run}"))?;
        while consumer.status.handled.load(Ordering::Relaxed) < total as u64 {
            if t.elapsed() > Duration::from_secs(300) {
                eprintln!(
                    "the trigger handled only {} in 300 s",
                    consumer.status.handled.load(Ordering::Relaxed)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let trigger_rate =
            consumer.status.handled.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        rows.push((
            "jetstream: raw pull consumer (ack each)".into(),
            format!("{raw_rate:.0} msg/s"),
            String::new(),
        ));
        rows.push((
            "jetstream: queue trigger, no-op function".into(),
            format!("{trigger_rate:.0} msg/s"),
            String::new(),
        ));
        rows.push((
            "jetstream: trigger / raw".into(),
            format!("{:.2}", trigger_rate / raw_rate),
            "≥ 0.80".into(),
        ));
    }

    // Timer firing delay through `fnctl up`.
    match timer_delays().await {
        Ok(mut delays) if !delays.is_empty() => {
            delays.sort();
            rows.push((
                format!("timer: scheduled → started ({} runs), p50", delays.len()),
                ms(percentile(&delays, 0.5)),
                String::new(),
            ));
            rows.push((
                "timer: scheduled → started, p99".into(),
                ms(percentile(&delays, 0.99)),
                "< 50 ms".into(),
            ));
        }
        Ok(_) => eprintln!("no timer runs recorded"),
        Err(e) => eprintln!("timer phase failed: {e:#}"),
    }

    println!("{:<52} {:>14}  target", "benchmark", "result");
    for (name, value, target) in rows {
        println!("{name:<52} {value:>14}  {target}");
    }
    Ok(())
}

/// Runs `fnctl up` with a per-second cron for `BENCH_SECONDS` and reads each run's delay.
async fn timer_delays() -> anyhow::Result<Vec<Duration>> {
    let exe = std::env::current_exe()?;
    let fnctl = exe.with_file_name("fnctl");
    let dir = tempfile::tempdir()?;
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (apps, api) = (free()?, free()?);
    let mut up = std::process::Command::new(&fnctl)
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{apps}"),
            "--api",
            &format!("127.0.0.1:{api}"),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let login = dir.path().join("login");
    let ready = Instant::now();
    while !login.exists() && ready.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fnctl_cmd = |args: &[&str]| {
        std::process::Command::new(&fnctl)
            .args(args)
            .env("STRATUS_CONFIG_DIR", &login)
            .output()
    };
    let events = wasm("events")?;
    let out = fnctl_cmd(&[
        "deploy",
        events.to_str().unwrap_or_default(),
        "--app",
        "tick",
        "--bind",
        "kv=memory",
        "--route",
        "/tick",
        "--timer",
        "tick=cron(* * * * * *)",
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "deploy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(size("BENCH_SECONDS", 30) as u64)).await;
    let out = fnctl_cmd(&["runs", "tick", "--limit", "500", "-o", "json"])?;
    let _ = up.kill();
    let _ = up.wait();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut delays = Vec::new();
    for r in runs.as_array().into_iter().flatten() {
        if let (Some(s), Some(t)) = (
            r.get("scheduled_ms").and_then(|v| v.as_i64()),
            r.get("started_ms").and_then(|v| v.as_i64()),
        ) {
            // The first runs wait for the app to load; the steady state is what counts.
            delays.push(Duration::from_millis(u64::try_from(t - s).unwrap_or(0)));
        }
    }
    // Newest first: drop the oldest five, which waited for the app to load.
    Ok(delays.into_iter().rev().skip(5).collect())
}
