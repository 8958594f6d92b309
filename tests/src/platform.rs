//! A Stratus platform of real processes for the end-to-end tests: control planes on
//! their own PostgreSQL schema and S3 bucket, `stratus-worker` processes dialling them,
//! and `fnctl` logged in to them.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Dev, Http, binary, fnctl_env, mint_token};

/// A platform's shared setup: a config on its own Postgres schema and S3 bucket, tokens,
/// and an `fnctl` login directory.
pub struct Platform {
    pub dir: tempfile::TempDir,
    /// Everything but the listeners, which each replica sets.
    pub template: String,
    pub user_token: String,
    pub worker_token: String,
}

pub const SECRET: &str = "pools-secret-pools-secret-pools-secret";

impl Default for Platform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform {
    pub fn new() -> Platform {
        Self::with_config("")
    }

    /// A platform whose control planes also get the TOML in `extra` (more tables).
    pub fn with_config(extra: &str) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let run = uuid::Uuid::new_v4().simple().to_string();
        let pg = std::env::var("STRATUS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
        let config = dir.path().join("control-plane.toml");
        // Short liveness settings keep the test quick; the defaults are benchmarked.
        let template = format!(
            r#"
data_dir = "{data}"

[metadata]
type = "postgres"
url = "{pg}"
schema = "pools_{run}"

[artifacts]
type = "s3"
bucket = "stratus-pools-{run}"
force_path_style = true
create_bucket = true

[auth]
issuer = "stratus-pools"
audience = "stratus"
keys = [{{ kid = "k1", algorithm = "HS256", secret = "{SECRET}" }}]

[scheduler]
heartbeat_interval_ms = 300
lost_after_ms = 2000
lease_ttl_ms = 2000
interval_ms = 200
{extra}
"#,
            data = dir.path().join("cp").display(),
        );
        std::fs::write(&config, &template).unwrap();
        let mut platform = Platform {
            dir,
            template,
            user_token: String::new(),
            worker_token: String::new(),
        };
        platform.user_token = platform.mint(&["--tenant", "acme", "--role", "operator"]);
        platform.worker_token = platform.mint(&["--worker", "--pool", "default"]);
        platform
    }

    /// `stratus-control-plane mint-token ARGS`.
    pub fn mint(&self, args: &[&str]) -> String {
        mint_token(&self.dir.path().join("control-plane.toml"), args)
    }

    pub fn control_plane(&self, api: u16, grpc: u16) -> Dev {
        self.control_plane_with(api, grpc, "")
    }

    /// A control plane with more settings in its `[grpc]` table.
    pub fn control_plane_with(&self, api: u16, grpc: u16, grpc_extra: &str) -> Dev {
        let config = format!(
            "listen = \"127.0.0.1:{api}\"\n{}\n[grpc]\nlisten = \"127.0.0.1:{grpc}\"\n{grpc_extra}\n",
            self.template
        );
        let path = self.dir.path().join(format!("cp-{api}.toml"));
        std::fs::write(&path, config).unwrap();
        Dev::spawn(
            &binary("stratus-control-plane"),
            &["--config", path.to_str().unwrap(), "serve"],
            &[],
        )
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"))
    }

    /// A worker of pool `default` dialling the control plane's worker API on `grpc`.
    pub fn worker(&self, grpc: u16, id: &str, port: u16, zone: &str) -> Dev {
        self.worker_with(&format!("http://127.0.0.1:{grpc}"), id, port, zone, &[])
    }

    pub fn worker_with(&self, cp: &str, id: &str, port: u16, zone: &str, extra: &[&str]) -> Dev {
        let data = self.dir.path().join(format!("worker-{id}"));
        let mut args = vec![
            "--control-plane".to_string(),
            cp.to_string(),
            "--id".into(),
            id.into(),
            "--label".into(),
            format!("zone={zone}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Dev::spawn(
            &binary("stratus-worker"),
            &args,
            &[("STRATUS_WORKER_TOKEN", self.worker_token.as_str())],
        )
        .unwrap_or_else(|e| panic!("worker {id} did not start: {e}"))
    }

    pub fn fnctl(&self, api: u16, args: &[&str]) -> (bool, String, String) {
        fnctl_env(
            args,
            &[
                ("STRATUS_ENDPOINT", &format!("http://127.0.0.1:{api}")),
                ("STRATUS_TOKEN", &self.user_token),
                ("STRATUS_CONFIG_DIR", self.dir.path().to_str().unwrap()),
            ],
        )
    }

    pub fn workers(&self, api: u16) -> Vec<Value> {
        let (ok, out, err) = self.fnctl(api, &["workers", "-o", "json"]);
        assert!(ok, "{out}{err}");
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Waits (bounded) until `n` workers are up.
    pub fn wait_workers_up(&self, api: u16, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = self
                .workers(api)
                .iter()
                .filter(|w| w["state"] == "up")
                .count();
            if up >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {up} of {n} workers came up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ids of the workers holding `app`.
    pub fn holders(&self, api: u16, app: &str) -> Vec<String> {
        self.workers(api)
            .iter()
            .filter(|w| {
                w["apps"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == app))
            })
            .map(|w| w["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn deploy(&self, api: u16, component: &Path, app: &str, extra: &[&str]) {
        let mut args = vec!["deploy", component.to_str().unwrap(), "--app", app];
        args.extend(extra);
        let (ok, out, err) = self.fnctl(api, &args);
        assert!(ok, "deploy {app}: {out}{err}");
    }
}

/// GETs `url` until it answers 200 (bounded by `within`); the body, and how long it took.
pub async fn until_ok(http: &Http, url: &str, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    loop {
        if let Ok(reply) = http.send("GET", url, Vec::new()).await
            && reply.status == 200
        {
            return (reply.text(), started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "{url} did not answer 200 within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
