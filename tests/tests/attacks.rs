//! The platform's security promises to its tenants, as attacks that must fail. One
//! control plane (multi-tenant: operator backends, an endpoint allow-list, capped
//! memory stores) and one worker, as real processes; tenants `acme` and `globex`.
//!
//! A tenant cannot:
//! - point a binding at the operator's network, a metadata address, a socket or a
//!   foreign endpoint signed with the worker's credentials, or name the operator's
//!   tables (nothing even connects);
//! - read another binding's secrets, not even its own: they are write-only;
//! - use a backend not offered to it;
//! - sneak ambiguous input past the API (repeated parts or options, empty names,
//!   routes a proxy would resolve differently);
//! - starve another tenant's app of a worker;
//! - have its refusals arrive as connection resets;
//! - keep components in the registry that nothing references.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stratus_tests::{Dev, Http, binary, free_port, mint_token, redis_url, wasm};

const SECRET: &str = "attacks-secret-attacks-secret-attacks";

struct Platform {
    dir: tempfile::TempDir,
    api: String,
    apps: String,
    /// Kept running for the test's length.
    _cp: Dev,
    worker: Option<Dev>,
    /// How the worker was started, to start it again.
    worker_args: Vec<String>,
    worker_token: String,
    http: reqwest::Client,
    /// A port the allow-list admits for tenants' own Redis: a black hole.
    allowed_port: u16,
}

impl Platform {
    fn start() -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let (api, grpc, apps, allowed_port) = (free_port(), free_port(), free_port(), free_port());
        let cp_data = dir.path().join("cp");
        // A partial copy left by a control plane killed mid-upload.
        let registry = cp_data.join("components").join("sha256");
        std::fs::create_dir_all(&registry).unwrap();
        std::fs::write(registry.join(".deadbeef.partial"), b"torn").unwrap();
        let config = dir.path().join("cp.toml");
        std::fs::write(
            &config,
            format!(
                r#"
listen = "127.0.0.1:{api}"
data_dir = "{data}"
max_upload_bytes = 4194304

[auth]
issuer = "stratus-attacks"
audience = "stratus"
keys = [{{ kid = "k1", algorithm = "HS256", secret = "{SECRET}" }}]

[grpc]
listen = "127.0.0.1:{grpc}"

[scheduler]
heartbeat_interval_ms = 300
lost_after_ms = 2000
interval_ms = 200

[collector]
interval_ms = 300
grace_ms = 1000

[tenancy]
memory_max_mb = 4

[tenancy.backends.cache]
provider = "redis"
options = {{ url = "{redis}" }}
default = true

[tenancy.backends.globex-only]
provider = "redis"
options = {{ url = "{redis}/2" }}
tenants = ["globex"]

[tenancy.endpoints.redis]
hosts = ["127.0.0.1"]
ports = [{allowed_port}]
"#,
                data = cp_data.display(),
                redis = redis_url(),
            ),
        )
        .unwrap();
        let mint = |args: &[&str]| mint_token(&config, args);
        let worker_token = mint(&["--worker", "--pool", "default"]);
        for (tenant, role) in [("acme", "admin"), ("globex", "admin"), ("acme", "viewer")] {
            let token = mint(&["--tenant", tenant, "--role", role]);
            std::fs::write(dir.path().join(format!("{tenant}-{role}.jwt")), token).unwrap();
        }
        let cp = Dev::spawn(
            &binary("stratus-control-plane"),
            &["--config", config.to_str().unwrap(), "serve"],
            &[],
        )
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"));
        let worker_args: Vec<String> = [
            "--control-plane",
            &format!("http://127.0.0.1:{grpc}"),
            "--id",
            "w1",
            "--listen",
            &format!("127.0.0.1:{apps}"),
            "--data-dir",
            dir.path().join("worker").to_str().unwrap(),
            "--app-concurrency",
            "2",
            "--timeout-ms",
            "4000",
        ]
        .map(String::from)
        .to_vec();
        let worker = spawn_worker(&worker_args, &worker_token)
            .unwrap_or_else(|e| panic!("the worker did not start: {e}"));
        Platform {
            dir,
            api: format!("http://127.0.0.1:{api}"),
            apps: format!("http://127.0.0.1:{apps}"),
            _cp: cp,
            worker: Some(worker),
            worker_args,
            worker_token,
            http: reqwest::Client::new(),
            allowed_port,
        }
    }

    /// Kills the worker and starts it again; the thread returns it once it has printed
    /// its banner.
    fn restart_worker(&mut self) -> std::thread::JoinHandle<Result<Dev, String>> {
        drop(self.worker.take());
        let (args, token) = (self.worker_args.clone(), self.worker_token.clone());
        std::thread::spawn(move || spawn_worker(&args, &token))
    }

    fn worker_log(&self) -> String {
        self.worker.as_ref().map(Dev::stderr).unwrap_or_default()
    }

    fn token(&self, tenant: &str, role: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{tenant}-{role}.jwt"))).unwrap()
    }

    /// Deploys `guest` as `app` with a manifest; the status and JSON body.
    async fn deploy(&self, who: &str, app: &str, guest: &str, manifest: Value) -> (u16, Value) {
        let form = reqwest::multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part(
                "component",
                reqwest::multipart::Part::bytes(std::fs::read(wasm(guest)).unwrap()),
            );
        self.send(
            self.http
                .post(format!("{}/v1/apps/{app}/versions", self.api))
                .bearer_auth(self.token(who, "admin"))
                .multipart(form),
        )
        .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Waits (bounded) until `path` on the worker answers 200.
    async fn served(&self, path: &str) -> String {
        let http = Http::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = http.get(&format!("{}{path}", self.apps)).await;
            if reply.status == 200 {
                return reply.text();
            }
            assert!(
                Instant::now() < deadline,
                "{path} never served: {}",
                reply.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spawn_worker(args: &[String], token: &str) -> Result<Dev, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Dev::spawn(
        &binary("stratus-worker"),
        &args,
        &[("STRATUS_WORKER_TOKEN", token)],
    )
}

fn refused(status: u16, body: &Value, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: the refusal says why: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_cannot_reach_the_operators_network_or_credentials() {
    let p = Platform::start();
    // A stand-in for everything a tenant must not reach: it records any connection.
    let decoy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    decoy.set_nonblocking(true).unwrap();
    let decoy_port = decoy.local_addr().unwrap().port();
    for binding in [
        format!("kv=redis:url=redis://127.0.0.1:{decoy_port}"),
        "kv=redis:url=redis://10.0.0.5:6379".into(),
        "kv=redis:url=redis://169.254.169.254:80".into(),
        "kv=redis:url=unix:///var/run/docker.sock".into(),
        format!("kv=dynamo:endpoint=http://127.0.0.1:{decoy_port}"),
        format!(
            "kv=dynamo:endpoint=http://127.0.0.1:{decoy_port},access_key_id=a,secret_access_key=b"
        ),
        "kv=dynamo:table=the-operators-table".into(),
        "kv=redis:backend=globex-only".into(),
        "kv=embedded:path=/etc".into(),
        "kv=memory:max_mb=1048576".into(),
    ] {
        let (status, body) = p
            .deploy(
                "acme",
                "probe",
                "kv-draft",
                json!({"routes": ["/probe"], "bindings": [binding]}),
            )
            .await;
        refused(status, &body, 403, &binding);
        assert_eq!(body["error"]["code"], "binding_not_allowed", "{binding}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        decoy.accept().is_err(),
        "nothing connected to the decoy endpoint"
    );
    // What is offered works: the default backend, and a backend offered to globex.
    let (status, body) = p
        .deploy(
            "globex",
            "own",
            "kv-draft",
            json!({"routes": ["/set", "/get"], "bindings": ["kv=redis:backend=globex-only", "config.greeting=hi"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let http = Http::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = http.put(&format!("{}/set?key=k", p.apps), "v").await;
        if reply.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", reply.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(p.served("/get?key=k").await, "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_write_only_and_sealed_at_rest() {
    let p = Platform::start();
    let port = p.allowed_port;
    let binding = format!("kv=redis:url=redis://user:hunter2@127.0.0.1:{port}");
    let (status, body) = p
        .deploy(
            "acme",
            "vault",
            "kv-draft",
            json!({"routes": ["/vault"], "bindings": [binding, "config.greeting=hi"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let (status, body) = p
        .send(
            p.http
                .get(format!("{}/v1/apps/vault/bindings", p.api))
                .bearer_auth(p.token("acme", "viewer")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["bindings"],
        json!([
            "config.greeting=hi",
            format!("kv=redis:password=***,url=redis://user@127.0.0.1:{port}")
        ])
    );
    // Not in the metadata database in the clear either.
    let db = std::fs::read(p.dir.path().join("cp").join("metadata.db")).unwrap();
    assert!(
        !db.windows(7).any(|w| w == b"hunter2"),
        "the secret is sealed at rest"
    );
    // Sent back as read, the binding keeps its secret.
    let (status, body) = p
        .send(
            p.http
                .put(format!("{}/v1/apps/vault/bindings", p.api))
                .bearer_auth(p.token("acme", "admin"))
                .json(&json!({"bindings": ["config.greeting=hi", format!("kv=redis:password=***,url=redis://user@127.0.0.1:{port}")]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_input_is_refused_and_long_names_are_served() {
    let p = Platform::start();
    for (binding, why) in [
        ("kv=memory:max_mb=1,max_mb=2", "a repeated option"),
        ("kv.=memory", "an empty bucket name"),
    ] {
        let (status, body) = p
            .deploy("acme", "amb", "kv-draft", json!({"bindings": [binding]}))
            .await;
        refused(status, &body, 422, why);
    }
    for route in [
        "/a/../admin",
        "/%2e%2e/x",
        "/a//b",
        "/a\\b",
        "/shop\u{202e}",
    ] {
        let (status, body) = p
            .deploy("acme", "amb", "hello", json!({"routes": [route]}))
            .await;
        refused(status, &body, 422, route);
    }
    // Two `component` parts: refused, not "the last one wins".
    let part = || reqwest::multipart::Part::bytes(std::fs::read(wasm("hello")).unwrap());
    let form = reqwest::multipart::Form::new()
        .part("component", part())
        .part("component", part());
    let (status, body) = p
        .send(
            p.http
                .post(format!("{}/v1/apps/twice/versions", p.api))
                .bearer_auth(p.token("acme", "admin"))
                .multipart(form),
        )
        .await;
    refused(status, &body, 400, "two component parts");
    // The auth scheme is case-insensitive.
    let (status, _) = p
        .send(p.http.get(format!("{}/v1/apps", p.api)).header(
            "authorization",
            format!("BEARER {}", p.token("acme", "viewer")),
        ))
        .await;
    assert_eq!(status, 200);
    // The longest app name the API takes is served.
    let long = "a".repeat(128);
    let (status, body) = p
        .deploy("acme", &long, "hello", json!({"routes": ["/long"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    p.served("/long").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_client_and_nothing_unreferenced_is_kept() {
    let p = Platform::start();
    let registry = p.dir.path().join("cp").join("components").join("sha256");
    assert!(
        !registry.join(".deadbeef.partial").exists(),
        "start-up clears partial copies"
    );
    // A viewer uploading more than the limit gets 403, not a reset, every time.
    let big = vec![0u8; 6 << 20];
    for _ in 0..5 {
        let resp = p
            .http
            .post(format!("{}/v1/apps/big/versions", p.api))
            .bearer_auth(p.token("acme", "viewer"))
            .header("content-type", "multipart/form-data; boundary=x")
            .body(big.clone())
            .send()
            .await
            .expect("the refusal arrives instead of a reset");
        assert_eq!(resp.status(), 403);
        let resp = p
            .http
            .post(format!("{}/v1/apps/big/versions", p.api))
            .body(big.clone())
            .send()
            .await
            .expect("the refusal arrives instead of a reset");
        assert_eq!(resp.status(), 401);
    }
    // A deploy refused because its route is taken stores nothing; a deleted app's
    // component is collected.
    let (status, body) = p
        .deploy("acme", "first", "hello", json!({"routes": ["/taken"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = p
        .deploy(
            "globex",
            "second",
            "kv-draft",
            json!({"routes": ["/taken/x"], "bindings": ["kv=memory", "config.greeting=hi"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(std::fs::read_dir(&registry).unwrap().count(), 1);
    let (status, _) = p
        .send(
            p.http
                .delete(format!("{}/v1/apps/first", p.api))
                .bearer_auth(p.token("acme", "admin")),
        )
        .await;
    assert_eq!(status, 204);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = std::fs::read_dir(&registry).unwrap().count();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} components were kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_starve_or_stall_another() {
    let mut p = Platform::start();
    // acme: a looping function, and an app whose provider never answers.
    let (status, body) = p
        .deploy("acme", "spin", "hostile", json!({"routes": ["/loop"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let hole = tokio::net::TcpListener::bind(("127.0.0.1", p.allowed_port))
        .await
        .unwrap();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            held.push(c);
        }
    });
    let (status, body) = p
        .deploy(
            "acme",
            "stuck",
            "kv-draft",
            json!({"routes": ["/stuck"], "bindings": [format!("kv=redis:url=redis://127.0.0.1:{}", p.allowed_port), "config.greeting=hi"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // globex's deploy is served while acme's provider is still connecting.
    let (status, body) = p
        .deploy("globex", "hello", "hello", json!({"routes": ["/hello"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    p.served("/hello").await;
    let (_, stuck) = p
        .send(
            p.http
                .get(format!("{}/v1/apps/stuck/status", p.api))
                .bearer_auth(p.token("acme", "viewer")),
        )
        .await;
    let state = stuck["placements"][0]["state"]
        .as_str()
        .unwrap_or("pending");
    assert!(
        !matches!(state, "ready" | "failed"),
        "the black hole is still connecting when globex is served: {stuck}"
    );

    // Three times as many connections as the worker has slots keep the loop busy:
    // without a per-app share they hold every slot and queue ahead of hello, which
    // then waits past its deadline for a slot (503). Hello keeps being answered.
    let flood: Vec<_> = (0..192)
        .map(|_| {
            let url = format!("{}/loop", p.apps);
            tokio::spawn(async move {
                let http = Http::default();
                let deadline = Instant::now() + Duration::from_secs(8);
                let mut throttled = 0;
                while Instant::now() < deadline {
                    if let Ok(r) = http.send("GET", &url, Vec::new()).await
                        && r.status == 429
                    {
                        throttled += 1;
                        // Not quite honouring `Retry-After: 1`, to keep the pressure on.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                throttled
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http = Http::default();
    for _ in 0..20 {
        let reply = tokio::time::timeout(
            Duration::from_secs(8),
            http.get(&format!("{}/hello", p.apps)),
        )
        .await
        .expect("hello is answered under the flood");
        let log = p.worker_log();
        let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        assert_eq!(reply.status, 200, "{}\n{tail}", reply.text());
    }
    let mut throttled = 0;
    for f in flood {
        throttled += f.await.unwrap();
    }
    assert!(throttled > 0, "past its share the looping app gets 429");

    // A restarted worker listens at once: hello answers before the worker's banner,
    // which waits until the black-hole app it restores has failed to connect.
    let restarted = p.restart_worker();
    let http = Http::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(reply) = http
            .send("GET", &format!("{}/hello", p.apps), Vec::new())
            .await
            && reply.status == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hello never served after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !restarted.is_finished(),
        "hello was served before the restored black-hole app had failed"
    );
    p.worker = Some(restarted.join().unwrap().expect("the worker starts"));
    holding.abort();
}
