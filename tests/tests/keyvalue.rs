//! Key-value and config through real guests: both `wasi:keyvalue` revisions on every
//! provider, per-bucket bindings, app isolation, persistence across restarts and provider
//! outages.

// Test code: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use stratus_tests::{Dev, Http, Relay, aws_endpoint, dynamo_binding, redis_url, wasm};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Drives the route table of a kv guest and checks each answer.
async fn exercise(dev: &Dev, cas: bool) {
    let http = Http::default();
    let u = |path: &str| format!("{}{path}", dev.url);
    assert_eq!(http.get(&u("/get?key=missing")).await.status, 404);
    assert_eq!(http.get(&u("/exists?key=greeting")).await.text(), "false");
    assert_eq!(
        http.put(&u("/set?key=greeting"), "héllo wörld")
            .await
            .status,
        200
    );
    assert_eq!(
        http.get(&u("/get?key=greeting")).await.text(),
        "héllo wörld"
    );
    assert_eq!(http.get(&u("/exists?key=greeting")).await.text(), "true");
    assert_eq!(
        http.put(&u("/set?key=%F0%9F%94%91"), "unicode key")
            .await
            .status,
        200
    );
    assert_eq!(
        http.get(&u("/get?key=%F0%9F%94%91")).await.text(),
        "unicode key"
    );

    assert_eq!(
        http.send("POST", &u("/incr?key=n&delta=5"), vec![])
            .await
            .unwrap()
            .text(),
        "5"
    );
    assert_eq!(
        http.send("POST", &u("/incr?key=n&delta=2"), vec![])
            .await
            .unwrap()
            .text(),
        "7"
    );
    let not_int = http
        .send("POST", &u("/incr?key=greeting"), vec![])
        .await
        .unwrap();
    assert_eq!(not_int.status, 500);
    assert!(
        not_int.text().contains("not a 64-bit integer"),
        "{}",
        not_int.text()
    );

    assert_eq!(
        http.put(&u("/set-many?keys=a,b,c"), "same").await.status,
        200
    );
    assert_eq!(
        http.get(&u("/get-many?keys=a,zz,c")).await.text(),
        "a=same\nzz=<none>\nc=same"
    );
    assert_eq!(
        http.send("POST", &u("/delete-many?keys=a,b"), vec![])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(http.get(&u("/keys")).await.text(), "c\ngreeting\nn\n🔑");

    // Listing pages through cursors (1000 keys a page) in both revisions' host code.
    let many: Vec<String> = (0..2500).map(|i| format!("k{i:04}")).collect();
    for batch in many.chunks(1000) {
        let url = u(&format!("/set-many?bucket=many&keys={}", batch.join(",")));
        assert_eq!(
            http.send("POST", &url, b"v".to_vec()).await.unwrap().status,
            200
        );
    }
    let listed = http.get(&u("/keys?bucket=many")).await.text();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        many,
        "keys listed over pages"
    );

    assert_eq!(
        http.send("DELETE", &u("/delete?key=c"), vec![])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(http.get(&u("/get?key=c")).await.status, 404);

    // Buckets are separate namespaces.
    assert_eq!(
        http.get(&u("/get?key=greeting&bucket=other")).await.status,
        404
    );

    if cas {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = u("/cas-incr?key=casn");
            tasks.push(tokio::spawn(async move {
                let mut written = Vec::new();
                for _ in 0..5 {
                    let r = Http::default().send("POST", &url, vec![]).await.unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                    written.push(r.text().parse::<u64>().unwrap());
                }
                written
            }));
        }
        // Each swap reports the value it wrote: every value from 1 to 20 exactly once,
        // or the listing shows which update was lost.
        let mut written = Vec::new();
        for t in tasks {
            written.extend(t.await.unwrap());
        }
        written.sort_unstable();
        assert_eq!(
            written,
            (1..=20).collect::<Vec<u64>>(),
            "values the swaps wrote"
        );
        assert_eq!(http.get(&u("/get?key=casn")).await.text(), "20");
    }
    assert_eq!(http.get(&u("/config?key=mode")).await.text(), "e2e");
    assert_eq!(http.get(&u("/config?key=missing")).await.status, 404);
    assert_eq!(
        http.get(&u("/config-all")).await.text(),
        "mode=e2e\nregion=eu-west-1\n"
    );
}

async fn run(guest: &str, binding: &str) {
    let app = unique(guest);
    let data = tempfile_dir(&app);
    let dev = Dev::start(
        &wasm(guest),
        &[
            "--app",
            &app,
            "--bind",
            binding,
            "--bind",
            "config.mode=e2e",
            "--bind",
            "config.region=eu-west-1",
            "--data-dir",
            &data,
        ],
    );
    exercise(&dev, guest == "kv-draft2").await;
}

fn tempfile_dir(name: &str) -> String {
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

macro_rules! matrix {
    ($($name:ident: $guest:literal, $binding:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let binding: String = $binding.into();
            run($guest, &binding).await;
        }
    )*};
}

matrix! {
    draft_on_memory: "kv-draft", "kv=memory";
    draft_on_embedded: "kv-draft", "kv=embedded";
    draft_on_redis: "kv-draft", format!("kv=redis:url={}", redis_url());
    draft_on_dynamo: "kv-draft", dynamo_binding();
    draft2_on_memory: "kv-draft2", "kv=memory";
    draft2_on_embedded: "kv-draft2", "kv=embedded";
    draft2_on_redis: "kv-draft2", format!("kv=redis:url={}", redis_url());
    draft2_on_dynamo: "kv-draft2", dynamo_binding();
}

#[tokio::test]
async fn counter_keeps_state_in_embedded_store_across_restarts() {
    let app = unique("counter");
    let data = tempfile_dir(&app);
    let args = [
        "--app",
        app.as_str(),
        "--bind",
        "kv=embedded",
        "--bind",
        "config.greeting=Howdy",
        "--data-dir",
        data.as_str(),
    ];
    let http = Http::default();
    {
        let dev = Dev::start(&wasm("counter"), &args);
        assert_eq!(
            http.get(&format!("{}/x", dev.url)).await.text(),
            "Howdy! /x has been visited 1 times.\n"
        );
        assert_eq!(
            http.get(&format!("{}/x", dev.url)).await.text(),
            "Howdy! /x has been visited 2 times.\n"
        );
        assert!(
            dev.wait_for_log("visit 2 to /x"),
            "guest stdout not in worker log:\n{}",
            dev.stderr()
        );
    }
    let dev = Dev::start(&wasm("counter"), &args);
    assert_eq!(
        http.get(&format!("{}/x", dev.url)).await.text(),
        "Howdy! /x has been visited 3 times.\n"
    );
}

#[tokio::test]
async fn one_app_can_keep_two_buckets_on_two_providers() {
    let app = unique("split");
    let data = tempfile_dir(&app);
    let redis = format!("kv.cache=redis:url={}", redis_url());
    let args = [
        "--app",
        app.as_str(),
        "--bind",
        "kv=memory",
        "--bind",
        redis.as_str(),
        "--bind",
        "config.mode=e2e",
        "--data-dir",
        data.as_str(),
    ];
    let http = Http::default();
    {
        let dev = Dev::start(&wasm("kv-draft2"), &args);
        http.put(&format!("{}/set?key=k&bucket=cache", dev.url), "in redis")
            .await;
        http.put(&format!("{}/set?key=k", dev.url), "in memory")
            .await;
    }
    // A restart loses the memory bucket but not the Redis one.
    let dev = Dev::start(&wasm("kv-draft2"), &args);
    assert_eq!(
        http.get(&format!("{}/get?key=k&bucket=cache", dev.url))
            .await
            .text(),
        "in redis"
    );
    assert_eq!(
        http.get(&format!("{}/get?key=k", dev.url)).await.status,
        404
    );
}

#[tokio::test]
async fn two_apps_on_one_redis_never_see_each_others_keys() {
    let redis = format!("kv=redis:url={}", redis_url());
    let (a, b) = (unique("app-a"), unique("app-b"));
    let start = |app: &str| {
        Dev::start(
            &wasm("kv-draft2"),
            &["--app", app, "--bind", &redis, "--bind", "config.mode=e2e"],
        )
    };
    let (dev_a, dev_b) = (start(&a), start(&b));
    let http = Http::default();
    http.put(&format!("{}/set?key=secret", dev_a.url), "a's")
        .await;
    assert_eq!(
        http.get(&format!("{}/get?key=secret", dev_b.url))
            .await
            .status,
        404
    );
    assert_eq!(http.get(&format!("{}/keys", dev_b.url)).await.text(), "");
    assert_eq!(
        http.get(&format!("{}/get?key=secret", dev_a.url))
            .await
            .text(),
        "a's"
    );
}

#[tokio::test]
async fn unbound_bucket_is_a_guest_error_not_a_crash() {
    let dev = Dev::start(
        &wasm("kv-draft2"),
        &["--bind", "kv.only=memory", "--bind", "config.mode=e2e"],
    );
    let http = Http::default();
    let r = http
        .get(&format!("{}/get?key=k&bucket=elsewhere", dev.url))
        .await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("NoSuchStore"), "{}", r.text());
    assert_eq!(
        http.put(&format!("{}/set?key=k&bucket=only", dev.url), "v")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn guest_limits_are_errors_the_guest_can_read() {
    let dev = Dev::start(
        &wasm("kv-draft2"),
        &["--bind", "kv=memory", "--bind", "config.mode=e2e"],
    );
    let http = Http::default();
    let long_key = "k".repeat(1025);
    let r = http
        .put(&format!("{}/set?key={long_key}", dev.url), "v")
        .await;
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("exceeds the 1024-byte limit"),
        "{}",
        r.text()
    );

    let keys = vec!["k"; 1001].join(",");
    let r = http.get(&format!("{}/get-many?keys={keys}", dev.url)).await;
    assert_eq!(r.status, 500);
    assert!(
        r.text()
            .contains("batch of 1001 keys exceeds the limit of 1000"),
        "{}",
        r.text()
    );

    // Within the limits, duplicates come back once per request.
    http.put(&format!("{}/set?key=k", dev.url), "v").await;
    let keys = ["k"; 3].join(",");
    assert_eq!(
        http.get(&format!("{}/get-many?keys={keys}", dev.url))
            .await
            .text(),
        "k=v\nk=v\nk=v"
    );
}

/// A provider that goes away mid-session: the guest gets the WIT error with the provider's
/// message (a 500 from this guest), the worker keeps serving what does not need it, and
/// the guest reads its data again once the provider is back.
async fn outage(provider: &str, target: &str, binding: impl Fn(&str) -> String) {
    let relay = Relay::start(target).await;
    let app = unique(&format!("outage-{provider}"));
    let binding = binding(&relay.addr.to_string());
    let dev = Dev::start(
        &wasm("kv-draft2"),
        &[
            "--app",
            &app,
            "--bind",
            &binding,
            "--bind",
            "config.mode=e2e",
        ],
    );
    let http = Http::default();
    let u = |path: &str| format!("{}{path}", dev.url);
    assert_eq!(http.put(&u("/set?key=k"), "v").await.status, 200);

    relay.cut(true);
    let during = tokio::time::timeout(Duration::from_secs(60), http.get(&u("/get?key=k")))
        .await
        .expect("a read against a provider that is down hung");
    assert_eq!(during.status, 500, "{}", during.text());
    assert!(
        during.text().contains(provider),
        "the guest's error does not name the provider: {}",
        during.text()
    );
    assert_eq!(http.get(&u("/config?key=mode")).await.text(), "e2e");

    relay.cut(false);
    let mut last = String::new();
    for _ in 0..50 {
        let reply = http.get(&u("/get?key=k")).await;
        if reply.status == 200 {
            assert_eq!(reply.text(), "v");
            return;
        }
        last = reply.text();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the provider never came back for the guest: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_a_guest_error_then_recovers() {
    let target = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    outage("redis", &target, |addr| {
        format!("kv=redis:url=redis://{addr}")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamo_outage_is_a_guest_error_then_recovers() {
    let endpoint = aws_endpoint();
    let target = endpoint.trim_start_matches("http://").trim_end_matches('/');
    outage("dynamo", target, |addr| {
        format!("kv=dynamo:table=stratus-e2e,region=us-east-1,endpoint=http://{addr}")
    })
    .await;
}
