//! Worker pools end to end: `stratus-control-plane` on PostgreSQL + S3 and
//! `stratus-worker` processes that dial it over gRPC. Deploys land on workers of the
//! pool, every worker answers for every app, and losing a worker or the control plane
//! does not stop traffic; two control planes on one database never place an app twice
//! and fail over; workers without a valid worker token are refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_tests::platform::{Platform, SECRET, until_ok};
use stratus_tests::{Dev, Http, fnctl_env, free_port, output_of, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_serves_through_every_worker_and_survives_losing_workers_and_the_control_plane() {
    let p = Platform::new();
    let (api, grpc) = (free_port(), free_port());
    let mut cp = Some(p.control_plane(api, grpc));
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let zones = ["a", "b", "a"];
    let mut workers: Vec<Option<Dev>> = (0..3)
        .map(|i| Some(p.worker(grpc, &format!("w{i}"), ports[i], zones[i])))
        .collect();
    p.wait_workers_up(api, 3);
    let url = |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", ports[i]);
    let http = Http::default();

    // Two replicas, in different zones; every worker answers (two locally, one by
    // forwarding).
    p.deploy(
        api,
        &wasm("hello"),
        "hello",
        &["--route", "/hello", "--replicas", "2"],
    );
    let holders = p.holders(api, "hello");
    assert_eq!(holders.len(), 2, "{holders:?}");
    assert!(
        holders.contains(&"w1".to_string()),
        "zone b is used: {holders:?}"
    );
    for i in 0..3 {
        let (body, _) = until_ok(&http, &url(i, "/hello"), Duration::from_secs(5)).await;
        assert_eq!(body, "Hello from Stratus!\n");
    }
    assert_eq!(http.get(&url(2, "/nothing")).await.status, 404);

    // SIGKILL one replica's worker: idempotent requests through the survivors never fail.
    let victim: usize = holders[0].trim_start_matches('w').parse().unwrap();
    workers[victim] = None;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let mut failures = 0;
    for n in 0..120 {
        let i = survivors[n % survivors.len()];
        match http.send("GET", &url(i, "/hello"), Vec::new()).await {
            Ok(r) if r.status == 200 => {}
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        failures, 0,
        "requests failed after a replica's worker was killed"
    );
    // The lost worker's replica moves to the third worker.
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.holders(api, "hello").len() < 2 || p.holders(api, "hello").contains(&holders[0]) {
        assert!(
            Instant::now() < deadline,
            "the lost replica was not replaced"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // One replica: killing its worker stops the app only until it is placed again.
    p.deploy(
        api,
        &wasm("hello"),
        "solo",
        &["--route", "/solo", "--replicas", "1"],
    );
    let solo = p.holders(api, "solo");
    assert_eq!(solo.len(), 1);
    let victim: usize = solo[0].trim_start_matches('w').parse().unwrap();
    workers[victim] = None;
    let survivor = (0..3).find(|i| workers[*i].is_some()).unwrap();
    let (_, recovered) = until_ok(&http, &url(survivor, "/solo"), Duration::from_secs(30)).await;
    eprintln!("solo recovered after its worker was killed in {recovered:?}");
    // Bring the killed workers back for the rest.
    for i in 0..3 {
        if workers[i].is_none() {
            workers[i] = Some(p.worker(grpc, &format!("w{i}"), ports[i], zones[i]));
        }
    }
    p.wait_workers_up(api, 3);
    for i in 0..3 {
        until_ok(&http, &url(i, "/solo"), Duration::from_secs(10)).await;
    }
    // The returning workers are reconciled: each runs exactly what is placed on it (what
    // moved away while it was gone is dropped), as its heartbeats report.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let workers = p.workers(api);
        if workers.iter().all(|w| w["apps_ready"] == w["placements"]) {
            break;
        }
        assert!(Instant::now() < deadline, "not reconciled: {workers:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(p.holders(api, "hello").len(), 2);

    // The control plane goes away: every worker keeps serving.
    drop(cp.take());
    for i in 0..3 {
        for _ in 0..5 {
            let r = http.get(&url(i, "/hello")).await;
            assert_eq!(
                r.status,
                200,
                "worker {i} without a control plane: {}",
                r.text()
            );
        }
    }
    // A worker restarted meanwhile comes back with its last assignments from disk.
    workers[0] = None;
    workers[0] = Some(p.worker(grpc, "w0", ports[0], zones[0]));
    for path in ["/hello", "/solo"] {
        let (body, _) = until_ok(&http, &url(0, path), Duration::from_secs(10)).await;
        assert_eq!(body, "Hello from Stratus!\n");
    }

    // The control plane returns: workers resync and a new deploy rolls out.
    let _cp = p.control_plane(api, grpc);
    p.wait_workers_up(api, 3);
    p.deploy(
        api,
        &wasm("counter"),
        "hello",
        &["--bind", "kv=memory", "--bind", "config.greeting=Back"],
    );
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = http.get(&url(i, "/hello")).await;
            if r.status == 200 && r.text().starts_with("Back!") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "worker {i} still serves: {}",
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // SIGTERM drains a worker: its apps move before it exits.
    let draining = p.holders(api, "hello")[0].clone();
    let d: usize = draining.trim_start_matches('w').parse().unwrap();
    let mut dev = workers[d].take().unwrap();
    dev.terminate();
    assert!(
        dev.wait_exit(Duration::from_secs(30)),
        "the worker did not drain and exit"
    );
    let holders = p.holders(api, "hello");
    assert!(!holders.contains(&draining), "{holders:?}");
    assert_eq!(holders.len(), 2, "{holders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_never_place_an_app_twice_and_fail_over() {
    let p = Platform::new();
    let (api_a, grpc_a, api_b, grpc_b) = (free_port(), free_port(), free_port(), free_port());
    let cp_a = p.control_plane(api_a, grpc_a);
    let cp_b = p.control_plane(api_b, grpc_b);
    let (port_1, port_2) = (free_port(), free_port());
    let _w1 = p.worker(grpc_a, "w1", port_1, "a");
    let _w2 = p.worker(grpc_b, "w2", port_2, "b");
    p.wait_workers_up(api_a, 2);

    // Deploys through both replicas at once.
    let hello = wasm("hello");
    std::thread::scope(|s| {
        for i in 0..6 {
            let api = if i % 2 == 0 { api_a } else { api_b };
            let p = &p;
            let hello = &hello;
            s.spawn(move || {
                let app = format!("app{i}");
                let route = format!("/app{i}");
                p.deploy(api, hello, &app, &["--route", &route]);
            });
        }
    });
    for i in 0..6 {
        assert_eq!(p.holders(api_b, &format!("app{i}")).len(), 1, "app{i}");
    }
    // A deploy returns once its replica is ready; the other worker hears of it through
    // its own replica's stream a moment later.
    let http = Http::default();
    for port in [port_1, port_2] {
        for i in 0..6 {
            let url = format!("http://127.0.0.1:{port}/app{i}");
            until_ok(&http, &url, Duration::from_secs(5)).await;
        }
    }

    // Kill whichever replica schedules; the other takes over.
    let leader_is_a = cp_a.stderr().contains("this replica now schedules");
    assert_ne!(
        leader_is_a,
        cp_b.stderr().contains("this replica now schedules"),
        "exactly one replica schedules"
    );
    let (survivor_api, orphaned_port, kept_port) = if leader_is_a {
        drop(cp_a);
        (api_b, port_1, port_2)
    } else {
        drop(cp_b);
        (api_a, port_2, port_1)
    };
    // The worker of the dead replica keeps serving meanwhile.
    assert_eq!(
        http.get(&format!("http://127.0.0.1:{orphaned_port}/app0"))
            .await
            .status,
        200
    );
    p.deploy(survivor_api, &hello, "after", &["--route", "/after"]);
    until_ok(
        &http,
        &format!("http://127.0.0.1:{kept_port}/after"),
        Duration::from_secs(10),
    )
    .await;
    // The orphaned worker is lost to the survivor; its apps move to the kept worker.
    for i in 0..6 {
        until_ok(
            &http,
            &format!("http://127.0.0.1:{kept_port}/app{i}"),
            Duration::from_secs(30),
        )
        .await;
    }
}

/// Calls the worker API directly, as a worker would.
mod worker_api {
    use stratus_proto::pb;
    use stratus_proto::pb::worker_control_client::WorkerControlClient;
    use tonic::transport::Channel;

    pub async fn client(grpc: u16) -> WorkerControlClient<Channel> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
                    .unwrap();
            match endpoint.connect().await {
                Ok(channel) => return WorkerControlClient::new(channel),
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub fn register(token: Option<&str>, pool: &str) -> tonic::Request<pb::RegisterRequest> {
        let mut req = tonic::Request::new(pb::RegisterRequest {
            worker_id: "intruder".into(),
            pool: pool.into(),
            labels: Default::default(),
            capacity: 10,
            version: "0".into(),
            http_address: "127.0.0.1:1".into(),
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_need_a_worker_token_for_their_pool() {
    let p = Platform::new();
    let (api, grpc) = (free_port(), free_port());
    let _cp = p.control_plane(api, grpc);
    let mut client = worker_api::client(grpc).await;
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &serde_json::json!({
            "sub": "w", "pool": "default", "iss": "stratus-pools", "aud": "stratus-workers",
            "exp": 1_000_000_000u64,
        }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for (token, what) in [
        (None, "no token"),
        (Some(expired.as_str()), "an expired token"),
        (Some(p.user_token.as_str()), "a user token"),
        (Some("garbage"), "garbage"),
    ] {
        let refused = client
            .register(worker_api::register(token, "default"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::Unauthenticated,
            "{what}: {refused}"
        );
    }
    // A worker token is for its own pool only.
    let refused = client
        .register(worker_api::register(Some(&p.worker_token), "gpu"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    // Without a token nothing is readable either: no feed, no bindings.
    let refused = client
        .watch_assignments(tonic::Request::new(stratus_proto::pb::WatchRequest {
            worker_id: "w".into(),
            known_generation: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // A worker token cannot call the public API.
    let (ok, _, err) = fnctl_env(
        &["apps"],
        &[
            ("STRATUS_ENDPOINT", &format!("http://127.0.0.1:{api}")),
            ("STRATUS_TOKEN", &p.worker_token),
            ("STRATUS_CONFIG_DIR", p.dir.path().to_str().unwrap()),
        ],
    );
    assert!(!ok);
    assert!(err.contains("unauthorized"), "{err}");
    // The right token registers.
    client
        .register(worker_api::register(Some(&p.worker_token), "default"))
        .await
        .unwrap();
    assert!(p.workers(api).iter().any(|w| w["id"] == "intruder"));
    // A token for another pool cannot take that worker id over.
    let gpu = p.mint(&["--worker", "--pool", "gpu"]);
    let refused = client
        .register(worker_api::register(Some(&gpu), "gpu"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused}");
    assert!(
        p.workers(api)
            .iter()
            .any(|w| w["id"] == "intruder" && w["pool"] == "default")
    );
    // Workers are shared: a tenant's admin may list them (without their addresses) but
    // only an operator drains one.
    let admin = p.mint(&["--tenant", "acme", "--role", "admin"]);
    let as_admin = |args: &[&str]| {
        fnctl_env(
            args,
            &[
                ("STRATUS_ENDPOINT", &format!("http://127.0.0.1:{api}")),
                ("STRATUS_TOKEN", &admin),
                ("STRATUS_CONFIG_DIR", p.dir.path().to_str().unwrap()),
            ],
        )
    };
    let (ok, out, err) = as_admin(&["workers", "-o", "json"]);
    assert!(ok, "{err}");
    assert!(!out.contains("127.0.0.1:1"), "{out}");
    let (ok, _, err) = as_admin(&["workers", "drain", "intruder"]);
    assert!(!ok);
    assert!(err.contains("forbidden"), "{err}");
    let (ok, out, err) = p.fnctl(api, &["workers", "drain", "intruder"]);
    assert!(ok, "{out}{err}");
    assert!(p.workers(api).iter().any(|w| w["state"] == "draining"));
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    output_of(
        std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_api_speaks_tls_when_a_certificate_is_configured() {
    let p = Platform::new();
    let dir = p.dir.path();
    // A CA, and a certificate for 127.0.0.1 signed by it.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=stratus-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "grpc.key",
            "-out",
            "grpc.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "grpc.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "grpc.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
    let (api, grpc) = (free_port(), free_port());
    let _cp = p.control_plane_with(
        api,
        grpc,
        &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            dir.join("grpc.pem").display(),
            dir.join("grpc.key").display()
        ),
    );
    let port = free_port();
    let ca = dir.join("ca.pem");
    let _w = p.worker_with(
        &format!("https://127.0.0.1:{grpc}"),
        "tls",
        port,
        "a",
        &["--ca-file", ca.to_str().unwrap()],
    );
    // A worker speaking plaintext to the TLS listener never registers.
    let plain = p.worker(grpc, "plain", free_port(), "a");
    p.wait_workers_up(api, 1);
    p.deploy(api, &wasm("hello"), "hello", &["--route", "/hello"]);
    let (body, _) = until_ok(
        &Http::default(),
        &format!("http://127.0.0.1:{port}/hello"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(body, "Hello from Stratus!\n");
    let ids: Vec<Value> = p.workers(api).iter().map(|w| w["id"].clone()).collect();
    assert_eq!(ids, [Value::from("tls")], "{}", plain.stderr());
}
