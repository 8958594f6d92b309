//! The `/v1` API over HTTP, in process, on both backend pairs: embedded SQLite with the
//! filesystem registry, and PostgreSQL with S3 on the local AWS emulator. Covers deploy,
//! dedupe, refusals that store nothing, rollback, re-binding, delete, pagination,
//! restarts, and the auth attack matrix with tenant isolation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stratus_control_plane::artifacts::S3Config;
use stratus_control_plane::auth::{AuthConfig, KeyConfig, Role};
use stratus_control_plane::config::{ArtifactsConfig, Config, MetadataConfig};
use stratus_control_plane::server::ControlPlane;

const ISSUER: &str = "stratus-test";
const AUDIENCE: &str = "stratus-api";
const HMAC_SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

fn wasm(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("STRATUS_WASM_DIR")
        .map(PathBuf::from)
        .expect(
            "STRATUS_WASM_DIR is not set: run the suite through .ci/test, which builds the guests",
        );
    std::fs::read(dir.join(format!("{name}.wasm"))).expect("guest built by .ci/build-guests")
}

/// RSA key files for the second (rotated-in) key, made once per test process.
fn rsa_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let private = dir.join("rsa.pem");
    let public = dir.join("rsa.pub.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl failed to make an RSA key");
    (private, public)
}

struct Env {
    backend: &'static str,
    dir: tempfile::TempDir,
    schema: String,
    bucket: String,
    rsa: (PathBuf, PathBuf),
}

impl Env {
    fn new(backend: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rsa = rsa_keys(dir.path());
        Self {
            backend,
            schema: format!("t_{}", uuid::Uuid::new_v4().simple()),
            bucket: format!("stratus-api-{}", uuid::Uuid::new_v4().simple()),
            dir,
            rsa,
        }
    }

    fn config(&self) -> Config {
        let (metadata, artifacts) = match self.backend {
            "embedded" => (MetadataConfig::Embedded, ArtifactsConfig::Fs),
            "postgres" => (
                MetadataConfig::Postgres {
                    url: std::env::var("STRATUS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
                        "postgres://postgres:postgres@127.0.0.1:5432/test".into()
                    }),
                    schema: Some(self.schema.clone()),
                },
                ArtifactsConfig::S3(S3Config {
                    bucket: self.bucket.clone(),
                    prefix: String::new(),
                    region: Some("us-east-1".into()),
                    endpoint: None,
                    force_path_style: true,
                    part_size: 5 << 20,
                    create_bucket: true,
                }),
            ),
            other => panic!("unknown backend {other}"),
        };
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_upload_bytes: 4 << 20,
            data_dir: self.dir.path().join("cp"),
            metadata,
            artifacts,
            auth: AuthConfig {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                worker_audience: None,
                keys: vec![
                    KeyConfig {
                        kid: "hs".into(),
                        algorithm: jsonwebtoken::Algorithm::HS256,
                        secret: Some(HMAC_SECRET.into()),
                        secret_file: None,
                        public_key_file: None,
                        private_key_file: None,
                    },
                    KeyConfig {
                        kid: "rs".into(),
                        algorithm: jsonwebtoken::Algorithm::RS256,
                        secret: None,
                        secret_file: None,
                        public_key_file: Some(self.rsa.1.clone()),
                        private_key_file: Some(self.rsa.0.clone()),
                    },
                ],
                signing_kid: Some("hs".into()),
            },
            grpc: Default::default(),
            scheduler: Default::default(),
            tenancy: Default::default(),
            collector: Default::default(),
            timers: Default::default(),
        }
    }

    async fn start(&self) -> Server {
        let cp = ControlPlane::open(&self.config()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = cp.state.clone();
        let task = tokio::spawn(async move {
            cp.serve(listener, grpc, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Server {
            base,
            // A refused upload is answered before its body is read, and the server then
            // closes the connection; pooling it would fail the next request.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

struct Server {
    base: String,
    http: reqwest::Client,
    state: Arc<stratus_control_plane::api::ApiState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    fn token(&self, tenant: &str, role: Role) -> String {
        self.state
            .auth
            .mint("test", tenant, role, Duration::from_secs(600))
            .unwrap()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(
            resp.headers().contains_key("x-request-id"),
            "every response has a request id"
        );
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn deploy(
        &self,
        token: &str,
        app: &str,
        component: Vec<u8>,
        manifest: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new();
        if let Some(m) = manifest {
            form = form.text("manifest", m.to_string());
        }
        form = form.part(
            "component",
            reqwest::multipart::Part::bytes(component).file_name("app.wasm"),
        );
        let resp = self
            .http
            .post(format!("{}/v1/apps/{app}/versions", self.base))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

async fn deploy_dedupe_rollback_rebind_delete(backend: &'static str) {
    let env = Env::new(backend);
    let s = env.start().await;
    let t = s.token("acme", Role::Admin);
    let hello = wasm("hello");
    let counter = wasm("counter");

    let (st, body) = s
        .deploy(
            &t,
            "hello",
            hello.clone(),
            Some(json!({"routes": ["/hello/"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"]["version"], 1);
    assert_eq!(body["stored"], true);
    assert_eq!(body["app"]["live_version"], 1);
    assert_eq!(
        body["app"]["triggers"],
        json!([{"type": "http", "route": "/hello"}])
    );
    let digest = body["version"]["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"));

    // The same bytes under another app are stored once.
    let (st, body) = s.deploy(&t, "hello2", hello.clone(), None).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["stored"], false);
    assert_eq!(body["version"]["digest"], digest.as_str());

    // Counter imports kv and config: refused without bindings, accepted with them.
    let (st, body) = s.deploy(&t, "counter", counter.clone(), None).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "missing_binding");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--bind"),
        "{body}"
    );
    let (st, _) = s.call("GET", "/v1/apps/counter", Some(&t), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "a refused deploy creates no app");
    let counter_digest = stratus_control_plane::artifacts::digest_of(&counter);
    assert!(
        !s.state.artifacts.exists(&counter_digest).await.unwrap(),
        "nor stores bytes"
    );

    let manifest = json!({"bindings": ["kv=memory", "config.greeting=hi"]});
    let (st, body) = s
        .deploy(&t, "counter", counter.clone(), Some(manifest))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, body) = s.deploy(&t, "counter", counter.clone(), None).await;
    assert_eq!(
        st,
        StatusCode::CREATED,
        "keeps the current bindings: {body}"
    );
    assert_eq!(body["version"]["version"], 2);

    // Rollback.
    let (st, body) = s
        .call(
            "PUT",
            "/v1/apps/counter/live",
            Some(&t),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["live_version"], 1);
    let (st, body) = s
        .call(
            "PUT",
            "/v1/apps/counter/live",
            Some(&t),
            Some(json!({"version": 7})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(code(&body), "not_found");

    // Re-bind without redeploying.
    let (st, body) = s
        .call(
            "PATCH",
            "/v1/apps/counter/bindings",
            Some(&t),
            Some(json!({"set": ["kv=embedded"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["bindings"],
        json!(["config.greeting=hi", "kv=embedded"])
    );
    assert_eq!(body["live_version"], 1);
    let (st, body) = s
        .call(
            "PATCH",
            "/v1/apps/counter/bindings",
            Some(&t),
            Some(json!({"remove": ["kv"]})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "missing_binding");
    for bad in ["kv=postgres", "kv=redis:port=1", "blob=s3", "kv"] {
        let (st, body) = s
            .call(
                "PUT",
                "/v1/apps/counter/bindings",
                Some(&t),
                Some(json!({"bindings": [bad, "config.a=b"]})),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_binding", "{bad}");
    }
    let (_, body) = s
        .call("GET", "/v1/apps/counter/bindings", Some(&t), None)
        .await;
    assert_eq!(
        body["bindings"],
        json!(["config.greeting=hi", "kv=embedded"])
    );

    // Triggers.
    let (st, body) = s
        .call(
            "PUT",
            "/v1/apps/counter/triggers",
            Some(&t),
            Some(json!({"triggers": [{"type": "http", "route": "/hello"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, body) = s
        .call(
            "PUT",
            "/v1/apps/counter/triggers",
            Some(&t),
            Some(json!({"triggers": [{"type": "queue", "queue": "q"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (st, body) = s
        .call(
            "PUT",
            "/v1/apps/counter/triggers",
            Some(&t),
            Some(json!({"triggers": [{"type": "http", "route": "/count"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = s
        .call("GET", "/v1/apps/counter/triggers", Some(&t), None)
        .await;
    assert_eq!(
        body["triggers"],
        json!([{"type": "http", "route": "/count", "state": "active"}])
    );

    // Versions list and get.
    let (_, body) = s
        .call("GET", "/v1/apps/counter/versions?limit=1", Some(&t), None)
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let cursor = body["next_cursor"].as_str().unwrap().to_string();
    let (_, body) = s
        .call(
            "GET",
            &format!("/v1/apps/counter/versions?limit=1&cursor={cursor}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(body["items"][0]["version"], 2);
    let (st, body) = s
        .call("GET", "/v1/apps/counter/versions/2", Some(&t), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        body["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasi:keyvalue/"))
    );

    // Delete.
    let (st, _) = s.call("DELETE", "/v1/apps/hello2", Some(&t), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = s.call("GET", "/v1/apps/hello2", Some(&t), None).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    // The shared bytes stay for the app still using them.
    assert!(
        s.state
            .artifacts
            .exists(digest.trim_start_matches("sha256:"))
            .await
            .unwrap()
    );

    // A restart loses nothing.
    s.shut_down().await;
    let s = env.start().await;
    let t = s.token("acme", Role::Viewer);
    let (_, body) = s.call("GET", "/v1/apps", Some(&t), None).await;
    let names: Vec<_> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["counter", "hello"]);
    let (_, body) = s.call("GET", "/v1/apps/counter", Some(&t), None).await;
    assert_eq!(body["live_version"], 1);
    assert_eq!(
        body["bindings"],
        json!(["config.greeting=hi", "kv=embedded"])
    );
    s.shut_down().await;
}

async fn bad_uploads_are_refused_and_store_nothing(backend: &'static str) {
    let env = Env::new(backend);
    let s = env.start().await;
    let t = s.token("acme", Role::Deployer);
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    type Case = (
        &'static str,
        Vec<u8>,
        Option<Value>,
        StatusCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_component",
        ),
        (
            "core",
            core_module,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "core_module",
        ),
        (
            "truncated",
            wasm("hello")[..1000].to_vec(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_component",
        ),
        (
            "bad-provider",
            wasm("counter"),
            Some(json!({"bindings": ["kv=mongo", "config.a=b"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_binding",
        ),
        (
            "bad-option",
            wasm("counter"),
            Some(json!({"bindings": ["kv=redis:host=x", "config.a=b"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_binding",
        ),
        (
            "bad-route",
            wasm("hello"),
            Some(json!({"routes": ["no-slash"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            "host-path",
            wasm("counter"),
            Some(json!({"bindings": ["kv=embedded:path=/etc/x", "config.a=b"]})),
            StatusCode::FORBIDDEN,
            "binding_not_allowed",
        ),
        (
            ".hidden",
            wasm("hello"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            "-dash",
            wasm("hello"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            "bad-manifest",
            wasm("hello"),
            Some(json!({"bindngs": []})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // Within the announced-length slack, so the streamed count is what refuses it.
        (
            "too-big",
            vec![0u8; (4 << 20) + (64 << 10)],
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "bad/name",
            wasm("hello"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "bad:name",
            wasm("hello"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
    ];
    for (app, bytes, manifest, status, want) in cases {
        let digest = stratus_control_plane::artifacts::digest_of(&bytes);
        let (st, body) = s.deploy(&t, app, bytes, manifest).await;
        assert_eq!(st, status, "{app}: {body}");
        if status != StatusCode::NOT_FOUND || app != "bad/name" {
            assert_eq!(code(&body), want, "{app}: {body}");
        }
        assert!(
            !s.state.artifacts.exists(&digest).await.unwrap(),
            "{app}: bytes stored"
        );
    }
    let (_, body) = s.call("GET", "/v1/apps", Some(&t), None).await;
    assert_eq!(body["items"], json!([]), "no app was created");
    // Nothing left behind in staging.
    let staging = env.dir.path().join("cp/staging");
    let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "staged uploads are removed");
    // Not multipart at all.
    let resp = s
        .http
        .post(format!("{}/v1/apps/x/versions", s.base))
        .bearer_auth(&t)
        .body(wasm("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An announced oversize body is refused before a byte of it is read.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(
        format!(
            "POST /v1/apps/big/versions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: {}\r\n\r\n",
            100u64 << 20
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    s.shut_down().await;
}

async fn pagination_and_app_crud(backend: &'static str) {
    let env = Env::new(backend);
    let s = env.start().await;
    let t = s.token("acme", Role::Deployer);
    for name in ["b", "a", "c", "d", "e"] {
        let (st, body) = s
            .call("POST", "/v1/apps", Some(&t), Some(json!({"name": name})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{body}");
        assert_eq!(body["live_version"], Value::Null);
    }
    let (st, body) = s
        .call("POST", "/v1/apps", Some(&t), Some(json!({"name": "a"})))
        .await;
    assert_eq!((st, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (st, body) = s
        .call("POST", "/v1/apps", Some(&t), Some(json!({"name": "x/y"})))
        .await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name")
    );
    let (st, body) = s
        .call("POST", "/v1/apps", Some(&t), Some(json!({"nom": "a"})))
        .await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_request")
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/apps?limit=2&cursor={c}"),
            None => "/v1/apps?limit=2".into(),
        };
        let (st, body) = s.call("GET", &path, Some(&t), None).await;
        assert_eq!(st, StatusCode::OK);
        seen.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    let (st, body) = s.call("GET", "/v1/apps?limit=0", Some(&t), None).await;
    assert_eq!((st, code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (st, body) = s.call("GET", "/v1/nothing", Some(&t), None).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    s.shut_down().await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(tenant: &str, role: &str) -> Value {
    json!({
        "sub": "attacker", "tenant": tenant, "role": role,
        "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600,
    })
}

fn hs_token(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

async fn auth_attacks_and_tenant_isolation(backend: &'static str) {
    let env = Env::new(backend);
    let s = env.start().await;
    let admin_a = s.token("tenant-a", Role::Admin);
    let (st, _) = s
        .deploy(
            &admin_a,
            "secret-app",
            wasm("hello"),
            Some(json!({"routes": ["/a"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    let with = |mut c: Value, key: &str, v: Value| {
        c[key] = v;
        c
    };
    let without = |mut c: Value, key: &str| {
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let good = claims("tenant-a", "admin");
    let valid_hs = hs_token("hs", &good, HMAC_SECRET.as_bytes());
    let tampered = {
        let mut parts: Vec<String> = valid_hs.split('.').map(str::to_string).collect();
        parts[1] = b64(with(good.clone(), "tenant", json!("tenant-b"))
            .to_string()
            .as_bytes());
        parts.join(".")
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"hs"}"#),
        b64(good.to_string().as_bytes())
    );
    // HS/RS confusion: HMAC-signed with the RSA public key as the secret, naming the RSA kid.
    let rsa_public = std::fs::read(&env.rsa.1).unwrap();
    let confused = hs_token("rs", &good, &rsa_public);
    let attacks: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("garbage", "not.a.jwt".into()),
        ("alg none", alg_none),
        ("HS/RS confusion", confused),
        (
            "expired",
            hs_token(
                "hs",
                &with(
                    with(good.clone(), "exp", json!(now() - 3600)),
                    "iat",
                    json!(now() - 7200),
                ),
                HMAC_SECRET.as_bytes(),
            ),
        ),
        (
            "not yet valid",
            hs_token(
                "hs",
                &with(good.clone(), "nbf", json!(now() + 3600)),
                HMAC_SECRET.as_bytes(),
            ),
        ),
        (
            "wrong audience",
            hs_token(
                "hs",
                &with(good.clone(), "aud", json!("other-api")),
                HMAC_SECRET.as_bytes(),
            ),
        ),
        (
            "wrong issuer",
            hs_token(
                "hs",
                &with(good.clone(), "iss", json!("evil")),
                HMAC_SECRET.as_bytes(),
            ),
        ),
        ("tampered", tampered),
        (
            "wrong secret",
            hs_token("hs", &good, b"another-secret-that-is-32-bytes-long!!"),
        ),
        (
            "unknown kid",
            hs_token("nope", &good, HMAC_SECRET.as_bytes()),
        ),
        (
            "no tenant",
            hs_token(
                "hs",
                &without(good.clone(), "tenant"),
                HMAC_SECRET.as_bytes(),
            ),
        ),
        (
            "no role",
            hs_token("hs", &without(good.clone(), "role"), HMAC_SECRET.as_bytes()),
        ),
        (
            "bad role",
            hs_token(
                "hs",
                &with(good.clone(), "role", json!("root")),
                HMAC_SECRET.as_bytes(),
            ),
        ),
        (
            "no exp",
            hs_token("hs", &without(good.clone(), "exp"), HMAC_SECRET.as_bytes()),
        ),
        (
            "no aud",
            hs_token("hs", &without(good.clone(), "aud"), HMAC_SECRET.as_bytes()),
        ),
        (
            "bad tenant id",
            hs_token(
                "hs",
                &with(good.clone(), "tenant", json!("../a")),
                HMAC_SECRET.as_bytes(),
            ),
        ),
    ];
    for (what, token) in &attacks {
        for (method, path) in [("GET", "/v1/apps"), ("DELETE", "/v1/apps/secret-app")] {
            let (st, body) = s.call(method, path, Some(token), None).await;
            assert_eq!(
                st,
                StatusCode::UNAUTHORIZED,
                "{what} {method} {path}: {body}"
            );
            assert_eq!(code(&body), "unauthorized", "{what}");
        }
        let (st, _) = s.deploy(token, "secret-app", wasm("hello"), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what} deploy");
    }
    let (st, _) = s.call("GET", "/v1/apps", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // The valid HS token and a token from the rotated-in RSA key both work.
    let (st, _) = s.call("GET", "/v1/apps", Some(&valid_hs), None).await;
    assert_eq!(st, StatusCode::OK);
    let mut rs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    rs_header.kid = Some("rs".into());
    let rs_key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&env.rsa.0).unwrap()).unwrap();
    let valid_rs =
        jsonwebtoken::encode(&rs_header, &claims("tenant-a", "viewer"), &rs_key).unwrap();
    let (st, _) = s
        .call("GET", "/v1/apps/secret-app", Some(&valid_rs), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // `aud` as an array holding ours is accepted too (identity providers send either).
    let multi_aud = hs_token(
        "hs",
        &with(good.clone(), "aud", json!(["other-api", AUDIENCE])),
        HMAC_SECRET.as_bytes(),
    );
    let (st, _) = s.call("GET", "/v1/apps", Some(&multi_aud), None).await;
    assert_eq!(st, StatusCode::OK);

    // Roles.
    let viewer = s.token("tenant-a", Role::Viewer);
    let deployer = s.token("tenant-a", Role::Deployer);
    let (st, body) = s.deploy(&viewer, "secret-app", wasm("hello"), None).await;
    assert_eq!((st, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, _) = s
        .call(
            "PUT",
            "/v1/apps/secret-app/live",
            Some(&viewer),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call("DELETE", "/v1/apps/secret-app", Some(&deployer), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Another tenant, even an admin guessing names, sees and changes nothing.
    let admin_b = s.token("tenant-b", Role::Admin);
    let (_, body) = s.call("GET", "/v1/apps", Some(&admin_b), None).await;
    assert_eq!(body["items"], json!([]));
    for (method, path, body) in [
        ("GET", "/v1/apps/secret-app", None),
        ("GET", "/v1/apps/secret-app/versions", None),
        ("GET", "/v1/apps/secret-app/versions/1", None),
        ("GET", "/v1/apps/secret-app/bindings", None),
        (
            "PUT",
            "/v1/apps/secret-app/live",
            Some(json!({"version": 1})),
        ),
        (
            "PATCH",
            "/v1/apps/secret-app/bindings",
            Some(json!({"set": ["kv=memory"]})),
        ),
        (
            "PUT",
            "/v1/apps/secret-app/triggers",
            Some(json!({"triggers": []})),
        ),
        ("DELETE", "/v1/apps/secret-app", None),
    ] {
        let (st, resp) = s.call(method, path, Some(&admin_b), body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {resp}");
    }
    // Deploying under the same name in tenant B makes B's own app, not a version of A's,
    // and B cannot take A's route.
    let (st, body) = s
        .deploy(
            &admin_b,
            "secret-app",
            wasm("hello"),
            Some(json!({"routes": ["/a"]})),
        )
        .await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );
    let (st, body) = s.deploy(&admin_b, "secret-app", wasm("hello"), None).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"]["version"], 1);
    assert_eq!(
        body["stored"], true,
        "dedupe across tenants is not disclosed"
    );

    // After all that, tenant A's app is as it was.
    let (_, body) = s
        .call("GET", "/v1/apps/secret-app", Some(&admin_a), None)
        .await;
    assert_eq!(body["live_version"], 1);
    assert_eq!(body["triggers"], json!([{"type": "http", "route": "/a"}]));
    let (_, body) = s
        .call("GET", "/v1/apps/secret-app/versions", Some(&admin_a), None)
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    s.shut_down().await;
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case("embedded").await }
            )*
        }
        mod postgres_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case("postgres").await }
            )*
        }
    };
}

suite!(
    deploy_dedupe_rollback_rebind_delete,
    bad_uploads_are_refused_and_store_nothing,
    pagination_and_app_crud,
    auth_attacks_and_tenant_isolation,
);

/// Every operation the checked-in OpenAPI document lists is routed (no 404/405 from the
/// router), and the server serves that same document.
#[tokio::test]
async fn openapi_document_matches_the_router() {
    let env = Env::new("embedded");
    let s = env.start().await;
    let (st, served) = s.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let doc: Value = serde_json::from_str(stratus_control_plane::api::OPENAPI).unwrap();
    assert_eq!(served, doc);
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{app}", "some-app").replace("{version}", "1");
        for method in item.as_object().unwrap().keys() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let (st, body) = s.call(&method.to_uppercase(), &concrete, None, None).await;
            assert!(
                st != StatusCode::METHOD_NOT_ALLOWED && code(&body) != "not_found"
                    || path == "/healthz",
                "{method} {path} is documented but not routed: {st} {body}"
            );
        }
    }
    assert!(operations >= 14, "only {operations} operations documented");
    s.shut_down().await;
}
