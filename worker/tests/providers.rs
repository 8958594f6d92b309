//! Providers shared by a worker's apps: memory stores are each app's own, a provider
//! closes once no app uses it, and a provider that is slow to fail holds up only the
//! apps bound to it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use stratus_worker::binding::Binding;
use stratus_worker::capabilities::{Capabilities, Providers};

fn redis_url() -> String {
    std::env::var("STRATUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn open(providers: &Providers, app: &str, binding: &str) -> Capabilities {
    let bindings: Vec<Binding> = vec![binding.parse().unwrap()];
    let dir = tempfile::tempdir().unwrap();
    Capabilities::open_shared(&bindings, app, dir.path(), providers)
        .await
        .unwrap_or_else(|e| panic!("opening `{binding}` for {app}: {e}"))
}

#[tokio::test]
async fn memory_stores_are_each_apps_own() {
    let providers = Providers::default();
    let a = open(&providers, "acme.shop", "kv=memory:max_mb=1").await;
    let b = open(&providers, "globex.shop", "kv=memory:max_mb=1").await;
    let store_a = a.kv.resolve("default").unwrap();
    let store_b = b.kv.resolve("default").unwrap();
    // App A fills its store...
    let value = vec![7u8; 64 << 10];
    let mut full = false;
    for i in 0..64 {
        if store_a
            .set("acme.shop/default", &format!("k{i}"), &value)
            .await
            .is_err()
        {
            full = true;
            break;
        }
    }
    assert!(full, "a 1 MiB store refuses 4 MiB");
    // ...and B's small write still succeeds.
    store_b
        .set("globex.shop/default", "k", b"100 bytes at most")
        .await
        .expect("another app's memory store is not full");

    // Binding more buckets to memory does not multiply an app's quota: one store.
    let bindings: Vec<Binding> = ["kv.a=memory:max_mb=1", "kv.b=memory:max_mb=01"]
        .iter()
        .map(|b| b.parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let c = Capabilities::open_shared(&bindings, "acme.two", dir.path(), &providers)
        .await
        .unwrap();
    let (a, b) = (c.kv.resolve("a").unwrap(), c.kv.resolve("b").unwrap());
    assert!(std::sync::Arc::ptr_eq(&a, &b), "one memory store per app");
}

/// Clients connected to the test Redis.
async fn redis_clients() -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Not counting the connection asking.
    list.lines().count() - 1
}

async fn wait_for_clients(want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = redis_clients().await;
        if now <= want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn providers_close_once_no_app_uses_them() {
    let base = redis_clients().await;
    let providers = Providers::default();
    let shared = format!("kv=redis:url={}", redis_url());
    let mut apps = Vec::new();
    for i in 0..5 {
        apps.push(open(&providers, &format!("t.app{i}"), &shared).await);
    }
    for db in 1..=5 {
        let spec = format!("kv=redis:url={}/{db}", redis_url());
        apps.push(open(&providers, "t.other", &spec).await);
    }
    assert_eq!(providers.open_count(), 6, "one provider per spec");
    assert!(redis_clients().await >= base + 6);
    // Re-binding: the old apps go, a new one binds the shared spec again.
    drop(apps);
    let after = wait_for_clients(base).await;
    assert!(after <= base, "{after} clients remain of {base} before");
    assert_eq!(providers.open_count(), 0);
    let again = open(&providers, "t.app0", &shared).await;
    again
        .kv
        .resolve("default")
        .unwrap()
        .set("t.app0/default", "k", b"v")
        .await
        .expect("a provider opens again after it was closed");
}

#[tokio::test]
async fn a_provider_slow_to_fail_holds_up_only_its_own_apps() {
    // A "server" that accepts connections and never answers: the connect hangs until
    // its deadline.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = black_hole.accept().await {
            conns.push(c);
        }
    });
    let providers = std::sync::Arc::new(Providers::default());
    let stuck = {
        let providers = providers.clone();
        tokio::spawn(async move {
            let bindings: Vec<Binding> = vec![
                format!("kv=redis:url=redis://127.0.0.1:{port}")
                    .parse()
                    .unwrap(),
            ];
            let dir = tempfile::tempdir().unwrap();
            Capabilities::open_shared(&bindings, "a.stuck", dir.path(), &providers)
                .await
                .map(drop)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other apps' providers open meanwhile, the same spec type included.
    let shared = format!("kv=redis:url={}", redis_url());
    open(&providers, "b.fine", &shared).await;
    open(&providers, "c.fine", "kv=memory").await;
    assert!(!stuck.is_finished(), "the black hole is still connecting");
    let failed = stuck.await.unwrap();
    assert!(
        failed.is_err(),
        "a server that never answers fails the binding"
    );
    held.abort();
}

/// A binding may name its secret by the worker's environment variable or a file, read
/// when the binding is opened (and never stored).
#[test]
fn secret_references_are_read_on_the_worker() {
    use stratus_worker::binding::ProviderSpec;
    use stratus_worker::capabilities::resolve_secret_refs;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let env: std::collections::BTreeMap<String, String> =
        [("REDIS_PW".to_string(), "from-env".to_string())].into();
    let spec: ProviderSpec = "redis:password_env=REDIS_PW".parse().unwrap();
    let resolved = resolve_secret_refs(&spec, &env).unwrap();
    assert_eq!(
        resolved.options.get("password").map(String::as_str),
        Some("from-env")
    );
    assert!(!resolved.options.contains_key("password_env"));
    let spec: ProviderSpec = format!(
        "dynamo:access_key_id=A,secret_access_key_file={}",
        file.display()
    )
    .parse()
    .unwrap();
    let resolved = resolve_secret_refs(&spec, &env).unwrap();
    assert_eq!(
        resolved
            .options
            .get("secret_access_key")
            .map(String::as_str),
        Some("from-file")
    );
    let missing: ProviderSpec = "redis:password_env=NOPE".parse().unwrap();
    let err = resolve_secret_refs(&missing, &env).unwrap_err().to_string();
    assert!(err.contains("no environment variable `NOPE`"), "{err}");
}
