//! `fairness-bench`: what a hostile app costs another app on the same worker, printed
//! as a table (a benchmark, not a test: it asserts nothing).
//!
//! One worker runtime in this process serves `hello` at `/hello` and the `hostile`
//! guest's `/loop` (spins until its deadline). A client sends `hello` requests one at a
//! time, alone and then while 32 connections keep `/loop` busy; the table gives hello's
//! latency and rate, and what the loop's clients got. It is run with the per-app share
//! (`--app-concurrency` 16 and 4) and without one (the share = the worker's 64 slots,
//! how workers ran before).
//!
//! `fairness-bench` needs `STRATUS_WASM_DIR` (built guests); `BENCH_SECONDS` sets each
//! phase's length (default 5).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stratus_worker::capabilities::Capabilities;
use stratus_worker::runtime::{Runtime, RuntimeConfig};
use stratus_worker::trigger::forward::Forwarder;
use stratus_worker::trigger::http::Target;
use stratus_worker::trigger::routes::{Backend, Entry, Routes};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FLOOD: usize = 32;
const LOOP_DEADLINE: Duration = Duration::from_secs(1);

fn guest(name: &str) -> anyhow::Result<Vec<u8>> {
    let dir = std::env::var_os("STRATUS_WASM_DIR")
        .map(PathBuf::from)
        .context("set STRATUS_WASM_DIR (built guests)")?;
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

struct Hello {
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_second: f64,
    failed: usize,
}

/// Sends hello requests one at a time for `length`.
async fn hello(base: &str, length: Duration) -> Hello {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url: hyper::Uri = format!("{base}/hello").parse().unwrap_or_default();
    let started = Instant::now();
    let mut took = Vec::new();
    let mut failed = 0;
    while started.elapsed() < length {
        let t = Instant::now();
        let ok = match tokio::time::timeout(Duration::from_secs(10), client.get(url.clone())).await
        {
            Ok(Ok(resp)) => {
                let ok = resp.status() == 200;
                ok && resp.into_body().collect().await.is_ok()
            }
            _ => false,
        };
        if ok {
            took.push(t.elapsed());
        } else {
            failed += 1;
        }
    }
    took.sort();
    let at = |q: f64| {
        took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Hello {
        p50: at(0.5),
        p99: at(0.99),
        max: took.last().copied().unwrap_or_default(),
        per_second: took.len() as f64 / started.elapsed().as_secs_f64(),
        failed,
    }
}

/// `FLOOD` connections requesting `/loop` back to back until `stop`; statuses counted.
fn flood(
    base: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<BTreeMap<u16, usize>>> {
    (0..FLOOD)
        .map(|_| {
            let url: hyper::Uri = format!("{base}/loop").parse().unwrap_or_default();
            let stop = stop.clone();
            tokio::spawn(async move {
                let client: Client<_, Empty<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                let mut seen = BTreeMap::new();
                while !*stop.borrow() {
                    let status = match client.get(url.clone()).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.into_body().collect().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    *seen.entry(status).or_insert(0) += 1;
                }
                seen
            })
        })
        .collect()
}

async fn run(app_concurrency: u32, length: Duration) -> anyhow::Result<Vec<String>> {
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::new(RuntimeConfig {
        timeout: LOOP_DEADLINE,
        app_concurrency,
        app_queue: app_concurrency.saturating_mul(4),
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })?;
    let hello_app = runtime.load("hello", &guest("hello")?, Capabilities::default())?;
    let hostile = runtime.load("hostile", &guest("hostile")?, Capabilities::default())?;
    let routes = Arc::new(Routes::default());
    routes.replace(vec![
        Entry {
            prefixes: vec!["/hello".into()],
            backend: Backend::Local(Arc::new(hello_app)),
        },
        Entry {
            prefixes: vec!["/loop".into()],
            backend: Backend::Local(Arc::new(hostile)),
        },
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_serving, serving) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(stratus_worker::trigger::http::serve(
        listener,
        Target::Routes(routes, Forwarder::new(Duration::from_secs(5))),
        LOOP_DEADLINE,
        async {
            let _ = serving.await;
        },
    ));
    let share = if app_concurrency >= RuntimeConfig::default().max_concurrency {
        "no share (64 of 64 slots)".to_string()
    } else {
        format!("app share {app_concurrency} of 64 slots")
    };
    let alone = hello(&base, length).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops = flood(&base, stopped);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let crowded = hello(&base, length).await;
    let _ = stop.send(true);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for l in loops {
        for (status, n) in l.await? {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let _ = stop_serving.send(());
    let _ = server.await;
    let row = |what: &str, h: &Hello| {
        format!(
            "{share:<28} {what:<22} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>6}",
            h.p50.as_secs_f64() * 1e3,
            h.p99.as_secs_f64() * 1e3,
            h.max.as_secs_f64() * 1e3,
            h.per_second,
            h.failed
        )
    };
    let loop_statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    Ok(vec![
        row("hello alone", &alone),
        row(&format!("hello + {FLOOD} /loop conns"), &crowded),
        format!("{share:<28} /loop answers: {}", loop_statuses.join(", ")),
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let length = Duration::from_secs(seconds);
    let mut lines = Vec::new();
    for share in [64, 16, 4] {
        lines.extend(run(share, length).await?);
    }
    println!();
    println!(
        "{:<28} {:<22} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "worker", "phase", "p50 ms", "p99 ms", "max ms", "req/s", "failed"
    );
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
