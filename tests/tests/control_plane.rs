//! End to end through `fnctl`: `fnctl up` (control plane + workers in one process over
//! loopback gRPC, embedded defaults), and `stratus-control-plane serve` as its own
//! process on PostgreSQL and S3, with deploys, refusals, re-binding, rollback, delete
//! and restarts. Worker pools of separate processes are in `worker_pools.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use stratus_tests::{Dev, Http, binary, fnctl_env, http_urls, wasm};

/// `fnctl` with its login kept in `config_dir`.
fn fnctl_in(config_dir: &Path, args: &[&str]) -> (bool, String, String) {
    fnctl_env(
        args,
        &[("STRATUS_CONFIG_DIR", config_dir.to_str().unwrap())],
    )
}

fn up(data: &Path, config_dir: &Path) -> (Dev, String, String) {
    let dev = Dev::spawn(
        &binary("fnctl"),
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("STRATUS_CONFIG_DIR", config_dir.to_str().unwrap())],
    )
    .unwrap_or_else(|e| panic!("fnctl up did not start: {e}"));
    let urls = http_urls(&dev.first_line);
    let (api, apps) = (urls[0].clone(), urls[1].clone());
    (dev, api, apps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fnctl_up_deploy_bind_rollback_delete_restart() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (dev, _api, apps) = up(data.path(), home.path());
    let http = Http::default();
    let fnctl = |args: &[&str]| fnctl_in(home.path(), args);
    let hello = wasm("hello");
    let counter = wasm("counter");

    let (ok, out, err) = fnctl(&[
        "deploy",
        hello.to_str().unwrap(),
        "--app",
        "hello",
        "--route",
        "/hello",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("Deployed hello version 1"), "{out}");
    let reply = http.get(&format!("{apps}/hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = http.get(&format!("{apps}/nothing-here")).await;
    assert_eq!(reply.status, 404);
    // `--workers 2`: the second worker answers for the app too (one replica: it holds it
    // or forwards to the one that does).
    let second = http_urls(&dev.first_line)[2].clone();
    let reply = http.get(&format!("{second}/hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Refused with a message that says how to fix it; nothing is created.
    let (ok, out, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "counter",
        "--route",
        "/count",
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("missing_binding") && err.contains("--bind"),
        "{err}"
    );
    let (ok, out, _) = fnctl(&["apps", "-o", "json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{out}");

    let (ok, out, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "counter",
        "--route",
        "/count",
        "--bind",
        "kv=embedded",
        "--bind",
        "config.greeting=Hi",
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        http.get(&format!("{apps}/count")).await.text(),
        "Hi! /count has been visited 1 times.\n"
    );
    assert_eq!(
        http.get(&format!("{apps}/count")).await.text(),
        "Hi! /count has been visited 2 times.\n"
    );

    // Version 2 with another greeting; then roll back to 1.
    let (ok, out, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "counter",
        "--bind",
        "kv=embedded",
        "--bind",
        "config.greeting=Ahoy",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("already in the registry"),
        "same bytes are not uploaded twice: {out}"
    );
    assert!(
        http.get(&format!("{apps}/count"))
            .await
            .text()
            .starts_with("Ahoy! /count has been visited 3")
    );
    // Version 3 is another component (hello); rolling back must bring version 2's
    // code back, not just move a pointer over identical bytes.
    let (ok, out, err) = fnctl(&["deploy", hello.to_str().unwrap(), "--app", "counter"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("Deployed counter version 3"), "{out}");
    assert_eq!(
        http.get(&format!("{apps}/count")).await.text(),
        "Hello from Stratus!\n"
    );
    let (ok, out, _) = fnctl(&["versions", "counter", "-o", "json"]);
    assert!(ok);
    let versions: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 3);
    let (ok, out, err) = fnctl(&["rollback", "counter"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("version 2"), "{out}");
    // Bindings belong to the app, not the version: the rollback keeps the current ones.
    assert!(
        http.get(&format!("{apps}/count"))
            .await
            .text()
            .starts_with("Ahoy! /count has been visited 4")
    );

    // Re-bind without redeploying: a fresh in-memory store starts counting again.
    let (ok, out, err) = fnctl(&["bind", "counter", "kv=memory", "config.greeting=Hey"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        http.get(&format!("{apps}/count")).await.text(),
        "Hey! /count has been visited 1 times.\n"
    );
    let (ok, _, err) = fnctl(&["bind", "counter", "--remove", "kv"]);
    assert!(!ok);
    assert!(err.contains("missing_binding"), "{err}");
    let (ok, _, _) = fnctl(&["bind", "counter", "kv=embedded"]);
    assert!(ok);
    assert!(
        http.get(&format!("{apps}/count"))
            .await
            .text()
            .contains("visited 5 times")
    );

    // A version no worker can load (its Redis does not answer) is refused by the workers:
    // the deploy says why, and the previous version and bindings stay live.
    let (ok, out, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "counter",
        "--bind",
        "kv=redis:url=redis://127.0.0.1:1",
        "--bind",
        "config.greeting=Oops",
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("no worker could load") && err.contains("version 2 stays live"),
        "{err}"
    );
    assert!(
        err.contains("127.0.0.1:1"),
        "the reason names the provider: {err}"
    );
    assert!(
        http.get(&format!("{apps}/count"))
            .await
            .text()
            .starts_with("Hey! /count has been visited 6 times")
    );
    let (ok, out, _) = fnctl(&["apps", "-o", "json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counter_app = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "counter")
        .unwrap();
    assert_eq!(counter_app["live_version"], 2);
    assert_eq!(
        counter_app["bindings"],
        serde_json::json!(["config.greeting=Hey", "kv=embedded"])
    );
    // A new app that no worker can load has no replica to answer: 503, retry later.
    let (ok, _, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "broken",
        "--route",
        "/broken",
        "--bind",
        "kv=redis:url=redis://127.0.0.1:1",
        "--bind",
        "config.greeting=x",
    ]);
    assert!(!ok);
    assert!(err.contains("nothing was serving before"), "{err}");
    let reply = http.get(&format!("{apps}/broken")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());

    // Delete.
    let (ok, out, err) = fnctl(&["delete", "hello"]);
    assert!(ok, "{out}{err}");
    // Workers hear of it through their assignment streams, within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while http.get(&format!("{apps}/hello")).await.status != 404 {
        assert!(std::time::Instant::now() < deadline, "hello still served");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (ok, _, err) = fnctl(&["versions", "hello"]);
    assert!(!ok);
    assert!(err.contains("not_found"), "{err}");

    // A restart serves what was live, with its data.
    drop(dev);
    // (Restarted on new ports, the workers learn each other's addresses from the control
    // plane within moments; with fixed ports they would forward at once.)
    let (_dev, _api, apps) = up(data.path(), home.path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let reply = loop {
        let reply = http.get(&format!("{apps}/count")).await;
        if reply.status != 503 || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        reply.text().contains("visited 7 times"),
        "{}: {}",
        reply.status,
        reply.text()
    );
    let (ok, out, _) = fnctl(&["apps"]);
    assert!(ok);
    assert!(out.contains("counter") && !out.contains("hello"), "{out}");
}

#[test]
fn fnctl_without_login_or_with_a_bad_token_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let (ok, _, err) = fnctl_in(home.path(), &["apps"]);
    assert!(!ok);
    assert!(err.contains("fnctl login"), "{err}");
    let data = tempfile::tempdir().unwrap();
    let (_dev, api, _) = up(data.path(), home.path());
    let (ok, _, err) = fnctl_env(
        &["apps"],
        &[
            ("STRATUS_CONFIG_DIR", home.path().to_str().unwrap()),
            ("STRATUS_TOKEN", "not-a-token"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("unauthorized") && err.contains("fnctl login"),
        "{err}"
    );
    // A login with a bad token is checked and not saved.
    let other = tempfile::tempdir().unwrap();
    let (ok, _, err) = fnctl_in(
        other.path(),
        &["login", "--endpoint", &api, "--token", "nope"],
    );
    assert!(!ok, "{err}");
    assert!(!other.path().join("credentials.toml").exists());
}

/// `fnctl up` keeps a saved login to a remote control plane, and always leaves its own
/// login in its data directory, which scripts use as `STRATUS_CONFIG_DIR`.
#[test]
fn fnctl_up_keeps_a_remote_login_and_leaves_its_own_in_the_data_dir() {
    let home = tempfile::tempdir().unwrap();
    let remote = "endpoint = \"https://stratus.example.com\"\ntoken = \"remote-token\"\n";
    std::fs::write(home.path().join("credentials.toml"), remote).unwrap();
    let data = tempfile::tempdir().unwrap();
    let (dev, api, _) = up(data.path(), home.path());
    let own = data.path().join("login");
    assert!(
        dev.first_line.contains("Stratus is up"),
        "{}",
        dev.first_line
    );
    assert_eq!(
        std::fs::read_to_string(home.path().join("credentials.toml")).unwrap(),
        remote,
        "the remote login was replaced"
    );
    let saved = std::fs::read_to_string(own.join("credentials.toml")).unwrap();
    assert!(saved.contains(&api), "{saved}");
    let (ok, out, err) = fnctl_in(&own, &["apps"]);
    assert!(ok, "{out}{err}");
}

/// The control plane as its own process on PostgreSQL + S3 (the local AWS emulator), an
/// admin-minted token, `fnctl login`, `deploy --bind kv=dynamo`, and a restart.
#[test]
fn standalone_control_plane_on_postgres_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let schema = format!("e2e_{run}");
    let pg = std::env::var("STRATUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
    let config = dir.path().join("control-plane.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{data}"

[metadata]
type = "postgres"
url = "{pg}"
schema = "{schema}"

[artifacts]
type = "s3"
bucket = "stratus-e2e-{run}"
force_path_style = true
create_bucket = true

[auth]
issuer = "stratus-e2e"
audience = "stratus"
keys = [{{ kid = "k1", algorithm = "HS256", secret = "e2e-secret-e2e-secret-e2e-secret-42" }}]

# Tenants bind the operator's table by name; the worker signs with its own keys.
[tenancy.backends.shop]
provider = "dynamo"
options = {{ table = "stratus-e2e-cp", region = "us-east-1", endpoint = "{aws}" }}
default = true
"#,
            data = dir.path().join("cp").display(),
            aws = stratus_tests::aws_endpoint(),
        ),
    )
    .unwrap();
    let cp_bin = binary("stratus-control-plane");
    let config_arg = config.to_str().unwrap();
    let token = stratus_tests::mint_token(&config, &["--tenant", "acme", "--role", "deployer"]);

    let cp = Dev::spawn(&cp_bin, &["--config", config_arg, "serve"], &[]).unwrap();
    let home = tempfile::tempdir().unwrap();
    let fnctl = |args: &[&str]| fnctl_in(home.path(), args);
    let (ok, out, err) = fnctl(&["login", "--endpoint", &cp.url, "--token", &token]);
    assert!(ok, "{out}{err}");
    let counter = wasm("counter");
    let (ok, out, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "shop",
        "--route",
        "/shop",
        "--bind",
        "kv=dynamo",
        "--bind",
        "config.greeting=Hi",
        "--no-wait",
        "-o",
        "json",
    ]);
    assert!(ok, "{out}{err}");
    let deployed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        deployed["app"]["bindings"],
        serde_json::json!(["config.greeting=Hi", "kv=dynamo"])
    );
    assert_eq!(deployed["stored"], true);
    // The operator's table is not the tenant's to name.
    let (ok, _, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "shop",
        "--bind",
        "kv=dynamo:table=someone-elses",
        "--bind",
        "config.greeting=Hi",
    ]);
    assert!(!ok);
    assert!(
        err.contains("binding_not_allowed") && err.contains("backend"),
        "{err}"
    );
    // Unknown provider options are refused before anything is stored.
    let (ok, _, err) = fnctl(&[
        "deploy",
        counter.to_str().unwrap(),
        "--app",
        "shop",
        "--bind",
        "kv=dynamo:tabel=x",
        "--bind",
        "config.greeting=Hi",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown option `tabel`"), "{err}");
    // A deployer may not delete.
    let (ok, _, err) = fnctl(&["delete", "shop"]);
    assert!(!ok);
    assert!(err.contains("forbidden"), "{err}");

    // Restart: everything is still there.
    drop(cp);
    let cp = Dev::spawn(&cp_bin, &["--config", config_arg, "serve"], &[]).unwrap();
    let (ok, out, err) = fnctl_env(
        &["versions", "shop", "-o", "json"],
        &[
            ("STRATUS_ENDPOINT", cp.url.as_str()),
            ("STRATUS_TOKEN", token.as_str()),
        ],
    );
    assert!(ok, "{out}{err}");
    let versions: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    assert_eq!(versions[0]["digest"], deployed["version"]["digest"]);
}
