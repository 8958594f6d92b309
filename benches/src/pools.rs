//! `pool-bench`: the worker-pool benchmarks, printed as a table (a benchmark, not a
//! test: it asserts nothing).
//!
//! - `scheduler`: 10,000 live app versions, then 50 simulated workers (gRPC clients in
//!   this process) register at once; placements per second until all are placed, and
//!   until every worker's assignment stream has delivered them.
//! - `deploy`: upload → first 200 through a worker, for `hello` on a warm worker
//!   (`stratus-control-plane` and `stratus-worker` processes).
//! - `recovery`: SIGKILL of the only replica's worker with default liveness settings,
//!   until requests succeed again through another worker; and with 2 replicas, failed
//!   idempotent requests while one replica's worker is killed.
//!
//! `pool-bench [scheduler|deploy|recovery]...` (default: all). The scheduler runs on
//! PostgreSQL when `STRATUS_TEST_POSTGRES_URL` is set, else on the embedded database;
//! `deploy` and `recovery` need `STRATUS_WASM_DIR` (built guests).

// Reading a `serde_json::Value` by key yields `Null` when the key is missing; it never
// panics, which is what clippy's indexing lint guards against.
#![allow(clippy::indexing_slicing)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stratus_control_plane::auth::{Algorithm, AuthConfig, KeyConfig};
use stratus_control_plane::config::{ArtifactsConfig, Config, MetadataConfig};
use stratus_control_plane::metadata::{AppChange, NewVersion};
use stratus_control_plane::server::ControlPlane;
use stratus_proto::pb;
use stratus_proto::pb::worker_control_client::WorkerControlClient;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
/// `BENCH_APPS`, `BENCH_WORKERS` override the sizes (e.g. for a quick look).
fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.is_empty();
    let wants = |name: &str| all || args.iter().any(|a| a == name);
    let mut rows: Vec<(String, String, String)> = Vec::new();
    if wants("scheduler") {
        rows.extend(scheduler().await?);
    }
    if wants("deploy") {
        rows.extend(deploy().await?);
    }
    if wants("recovery") {
        rows.extend(recovery().await?);
    }
    println!();
    println!("{:<58} {:>16}  target", "benchmark", "result");
    for (name, value, target) in rows {
        println!("{name:<58} {value:>16}  {target}");
    }
    Ok(())
}

fn auth() -> AuthConfig {
    AuthConfig {
        issuer: "bench".into(),
        audience: "stratus".into(),
        worker_audience: None,
        keys: vec![KeyConfig {
            kid: "k".into(),
            algorithm: Algorithm::HS256,
            secret: Some(SECRET.into()),
            secret_file: None,
            public_key_file: None,
            private_key_file: None,
        }],
        signing_kid: None,
    }
}

async fn scheduler() -> anyhow::Result<Vec<(String, String, String)>> {
    let apps = size("BENCH_APPS", 10_000);
    let workers = size("BENCH_WORKERS", 50);
    let dir = tempfile::tempdir()?;
    let (metadata, backend) = match std::env::var("STRATUS_TEST_POSTGRES_URL") {
        Ok(url) => (
            MetadataConfig::Postgres {
                url,
                schema: Some(format!("bench_{}", uuid::Uuid::new_v4().simple())),
            },
            "postgres",
        ),
        Err(_) => (MetadataConfig::Embedded, "embedded"),
    };
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        max_upload_bytes: 1 << 20,
        data_dir: dir.path().to_path_buf(),
        metadata,
        artifacts: ArtifactsConfig::Fs,
        auth: auth(),
        grpc: Default::default(),
        scheduler: Default::default(),
        tenancy: Default::default(),
        collector: Default::default(),
        timers: Default::default(),
    };
    let cp = ControlPlane::open(&config).await?;
    let state = cp.state.clone();
    eprintln!("scheduler: creating {apps} live apps ({backend})");
    let created = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let state = state.clone();
        let next = next.clone();
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= apps {
                    return Ok::<_, anyhow::Error>(());
                }
                let version = NewVersion {
                    digest: format!("{i:064x}"),
                    size_bytes: 1,
                    imports: Vec::new(),
                    handlers: vec![stratus_proto::interfaces::Handler::Http],
                };
                state
                    .metadata
                    .add_version(
                        "bench",
                        &format!("app{i}"),
                        version,
                        AppChange::default(),
                        true,
                    )
                    .await?;
            }
        }));
    }
    for w in writers {
        w.await??;
    }
    eprintln!("scheduler: created in {:?}", created.elapsed());
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        cp.serve(api, grpc, async {
            let _ = stopped.await;
        })
        .await
    });
    let token: tonic::metadata::MetadataValue<_> = format!(
        "Bearer {}",
        state
            .auth
            .mint_worker("bench", "default", Duration::from_secs(3600))?
    )
    .parse()?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))?.connect_lazy();
    let delivered: Arc<Vec<AtomicUsize>> =
        Arc::new((0..workers).map(|_| AtomicUsize::new(0)).collect());
    let started = Instant::now();
    for w in 0..workers {
        let token = token.clone();
        let mut client = WorkerControlClient::with_interceptor(
            channel.clone(),
            move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", token.clone());
                Ok(req)
            },
        );
        let delivered = delivered.clone();
        tokio::spawn(async move {
            let result = async {
                let id = format!("sim-{w}");
                client
                    .register(pb::RegisterRequest {
                        worker_id: id.clone(),
                        pool: "default".into(),
                        labels: [("zone".to_string(), format!("z{}", w % 3))].into(),
                        capacity: 1000,
                        version: "bench".into(),
                        http_address: format!("127.0.0.1:{}", 20000 + w),
                    })
                    .await?;
                let mut beat = client.clone();
                let beat_id = id.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(1000)).await;
                        let _ = beat
                            .heartbeat(pb::HeartbeatRequest {
                                worker_id: beat_id.clone(),
                                apps_ready: 0,
                                triggers: Vec::new(),
                            })
                            .await;
                    }
                });
                let mut stream = client
                    .watch_assignments(pb::WatchRequest {
                        worker_id: id,
                        known_generation: 0,
                    })
                    .await?
                    .into_inner();
                while let Some(feed) = stream.message().await? {
                    if let Some(slot) = delivered.get(w) {
                        slot.store(feed.assignments.len(), Ordering::Relaxed);
                        if std::env::var_os("BENCH_DEBUG").is_some() {
                            eprintln!(
                                "sim {w}: gen {} with {}",
                                feed.generation,
                                feed.assignments.len()
                            );
                        }
                    }
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            if let Err(e) = result {
                eprintln!("simulated worker {w}: {e:#}");
            }
        });
    }
    let mut placed_at = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if placed_at.is_none() {
            let placed: i64 = state
                .metadata
                .workers("bench")
                .await?
                .iter()
                .map(|w| w.placements)
                .sum();
            if placed as usize >= apps {
                placed_at = Some(started.elapsed());
            }
        }
        let seen: usize = delivered.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        if let Some(placed) = placed_at
            && seen >= apps
        {
            let fed = started.elapsed();
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
            let per_s = |d: Duration| format!("{:.0}/s", apps as f64 / d.as_secs_f64());
            return Ok(vec![
                (
                    format!("scheduler: {apps} apps on {workers} workers placed ({backend})"),
                    format!("{placed:.2?} {}", per_s(placed)),
                    "≥ 1,000/s".into(),
                ),
                (
                    "scheduler: ... and delivered by every assignment stream".into(),
                    format!("{fed:.2?} {}", per_s(fed)),
                    String::new(),
                ),
            ]);
        }
        if Instant::now() > deadline {
            bail!("not placed within 300 s ({seen} delivered)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A process started for a benchmark; killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no directory")?.join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build the workspace",
        bin.display()
    );
    Ok(bin)
}

fn hello() -> anyhow::Result<Vec<u8>> {
    let dir = std::env::var_os("STRATUS_WASM_DIR")
        .map(PathBuf::from)
        .context("set STRATUS_WASM_DIR (built guests)")?;
    Ok(std::fs::read(dir.join("hello.wasm"))?)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A control plane (embedded backends, default liveness settings) and `workers`
/// workers, as processes.
struct Cluster {
    _dir: tempfile::TempDir,
    api: String,
    user_token: String,
    worker_ports: Vec<u16>,
    workers: Vec<Option<Proc>>,
    _cp: Proc,
    grpc: u16,
    worker_token: String,
    root: PathBuf,
}

impl Cluster {
    fn start(workers: usize) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        let (api, grpc) = (free_port()?, free_port()?);
        let config = root.join("cp.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{api}\"\ndata_dir = \"{}\"\n[auth]\nissuer = \"bench\"\naudience = \"stratus\"\nkeys = [{{ kid = \"k\", algorithm = \"HS256\", secret = \"{SECRET}\" }}]\n[grpc]\nlisten = \"127.0.0.1:{grpc}\"\n",
                root.join("cp").display()
            ),
        )?;
        let mint = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new(binary("stratus-control-plane")?)
                .arg("--config")
                .arg(&config)
                .arg("mint-token")
                .args(args)
                .output()?;
            anyhow::ensure!(out.status.success(), "mint-token failed");
            Ok(String::from_utf8(out.stdout)?.trim().to_string())
        };
        let user_token = mint(&["--tenant", "bench", "--role", "operator"])?;
        let worker_token = mint(&["--worker", "--pool", "default"])?;
        let cp = Proc(
            Command::new(binary("stratus-control-plane")?)
                .arg("--config")
                .arg(&config)
                .arg("serve")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()?,
        );
        let mut cluster = Cluster {
            _dir: dir,
            api: format!("http://127.0.0.1:{api}"),
            user_token,
            worker_ports: Vec::new(),
            workers: Vec::new(),
            _cp: cp,
            grpc,
            worker_token,
            root,
        };
        for i in 0..workers {
            let port = free_port()?;
            cluster.worker_ports.push(port);
            let proc = cluster.worker(i)?;
            cluster.workers.push(Some(proc));
        }
        Ok(cluster)
    }

    fn worker(&self, i: usize) -> anyhow::Result<Proc> {
        let port = self.worker_ports.get(i).context("no such worker")?;
        Ok(Proc(
            Command::new(binary("stratus-worker")?)
                .args([
                    "--control-plane",
                    &format!("http://127.0.0.1:{}", self.grpc),
                    "--id",
                    &format!("w{i}"),
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--data-dir",
                ])
                .arg(self.root.join(format!("w{i}")))
                .env("STRATUS_WORKER_TOKEN", &self.worker_token)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()?,
        ))
    }

    async fn wait_workers(&self, http: &reqwest::Client, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(resp) = http
                .get(format!("{}/v1/workers", self.api))
                .bearer_auth(&self.user_token)
                .send()
                .await
                && let Ok(v) = resp.json::<serde_json::Value>().await
                && v["workers"]
                    .as_array()
                    .is_some_and(|w| w.iter().filter(|w| w["state"] == "up").count() >= n)
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "workers did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn deploy(
        &self,
        http: &reqwest::Client,
        bytes: &[u8],
        app: &str,
        replicas: &str,
    ) -> anyhow::Result<()> {
        let manifest = serde_json::json!({ "routes": [format!("/{app}")], "replicas": replicas });
        let form = reqwest::multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part(
                "component",
                reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("hello.wasm"),
            );
        let resp = http
            .post(format!("{}/v1/apps/{app}/versions", self.api))
            .bearer_auth(&self.user_token)
            .multipart(form)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "deploy: {}", resp.text().await?);
        Ok(())
    }

    async fn holders(&self, http: &reqwest::Client, app: &str) -> anyhow::Result<Vec<usize>> {
        let v: serde_json::Value = http
            .get(format!("{}/v1/workers", self.api))
            .bearer_auth(&self.user_token)
            .send()
            .await?
            .json()
            .await?;
        Ok(v["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| {
                w["apps"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == app))
            })
            .filter_map(|w| w["id"].as_str()?.trim_start_matches('w').parse().ok())
            .collect())
    }

    fn url(&self, worker: usize, path: &str) -> String {
        let port = self.worker_ports.get(worker).copied().unwrap_or(0);
        format!("http://127.0.0.1:{port}{path}")
    }
}

/// GETs until 200; how long it took.
async fn until_ok(http: &reqwest::Client, url: &str, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "{url}: no 200 within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn deploy() -> anyhow::Result<Vec<(String, String, String)>> {
    let bytes = hello()?;
    let cluster = Cluster::start(1)?;
    let http = reqwest::Client::new();
    cluster.wait_workers(&http, 1).await?;
    // Warm: the worker has compiled `hello` once.
    cluster.deploy(&http, &bytes, "warm", "1").await?;
    until_ok(&http, &cluster.url(0, "/warm"), Duration::from_secs(60)).await?;
    let mut times = Vec::new();
    for i in 0..20 {
        let app = format!("d{i}");
        let started = Instant::now();
        cluster.deploy(&http, &bytes, &app, "1").await?;
        until_ok(
            &http,
            &cluster.url(0, &format!("/{app}")),
            Duration::from_secs(30),
        )
        .await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(vec![(
        "deploy-to-ready: upload → first 200, hello, warm worker (p50)".into(),
        format!(
            "{:.0?} (p90 {:.0?})",
            percentile(&times, 0.5),
            percentile(&times, 0.9)
        ),
        "< 300 ms".into(),
    )])
}

async fn recovery() -> anyhow::Result<Vec<(String, String, String)>> {
    let bytes = hello()?;
    let mut cluster = Cluster::start(3)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    cluster.wait_workers(&http, 3).await?;

    // One replica: kill its worker, time until another answers.
    cluster.deploy(&http, &bytes, "solo", "1").await?;
    until_ok(&http, &cluster.url(0, "/solo"), Duration::from_secs(60)).await?;
    let holder = *cluster
        .holders(&http, "solo")
        .await?
        .first()
        .context("no holder")?;
    let other = (holder + 1) % 3;
    if let Some(slot) = cluster.workers.get_mut(holder) {
        *slot = None;
    }
    let solo = until_ok(
        &http,
        &cluster.url(other, "/solo"),
        Duration::from_secs(120),
    )
    .await?;
    let restarted = cluster.worker(holder)?;
    if let Some(slot) = cluster.workers.get_mut(holder) {
        *slot = Some(restarted);
    }
    cluster.wait_workers(&http, 3).await?;

    // Two replicas of three workers: idempotent requests through every worker (the third
    // forwards) while one replica's worker is killed.
    cluster.deploy(&http, &bytes, "pair", "2").await?;
    for w in 0..3 {
        until_ok(&http, &cluster.url(w, "/pair"), Duration::from_secs(60)).await?;
    }
    let victim = loop {
        let holders = cluster.holders(&http, "pair").await?;
        if holders.len() == 2 {
            break *holders.first().context("no holder")?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (mut sent, mut failed) = (0u32, 0u32);
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(12) {
        if !killed && started.elapsed() > Duration::from_secs(2) {
            if let Some(slot) = cluster.workers.get_mut(victim) {
                *slot = None;
            }
            killed = true;
        }
        // Round robin over the workers still running.
        let alive: Vec<usize> = (0..3).filter(|w| !killed || *w != victim).collect();
        let target = alive.get(sent as usize % alive.len()).copied().unwrap_or(0);
        sent += 1;
        match http.get(cluster.url(target, "/pair")).send().await {
            Ok(r) if r.status() == 200 => {}
            _ => failed += 1,
        }
    }
    Ok(vec![
        (
            "recovery: SIGKILL of the only replica's worker → 200".into(),
            format!("{solo:.2?}"),
            "< 10 s".into(),
        ),
        (
            "recovery: 2 replicas of 3 workers, one SIGKILLed: failed GETs".into(),
            format!("{failed} of {sent}"),
            "0".into(),
        ),
    ])
}
