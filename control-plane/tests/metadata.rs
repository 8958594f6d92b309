//! The metadata store suite, run against the embedded SQLite backend and a real
//! PostgreSQL (a fresh schema per test, `STRATUS_TEST_POSTGRES_URL`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use stratus_control_plane::metadata::{
    AppChange, Database, EmbeddedDb, Metadata, MetadataError, NewVersion, PostgresDb,
};
use stratus_proto::binding::Binding;

fn postgres_url() -> String {
    std::env::var("STRATUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into())
}

/// A fresh, empty backend; the guard keeps its directory alive.
async fn open(backend: &str) -> (Metadata, Option<tempfile::TempDir>) {
    match backend {
        "embedded" => {
            let dir = tempfile::tempdir().unwrap();
            let db = EmbeddedDb::open(&dir.path().join("meta.db")).unwrap();
            (Metadata::new(Arc::new(db)).await.unwrap(), Some(dir))
        }
        "postgres" => {
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            let db = PostgresDb::connect(&postgres_url(), Some(&schema)).unwrap();
            (Metadata::new(Arc::new(db)).await.unwrap(), None)
        }
        other => panic!("unknown backend {other}"),
    }
}

fn bind(specs: &[&str]) -> Vec<Binding> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

fn version(digest_byte: char, imports: &[&str]) -> NewVersion {
    NewVersion {
        digest: digest_byte.to_string().repeat(64),
        size_bytes: 1234,
        imports: imports.iter().map(|s| s.to_string()).collect(),
        handlers: vec![stratus_proto::interfaces::Handler::Http],
    }
}

const KV_IMPORT: &str = "wasi:keyvalue/store@0.2.0-draft2";

async fn apps_are_per_tenant_and_paginated(backend: &str) {
    let (store, _g) = open(backend).await;
    for name in ["c", "a", "b"] {
        store.create_app("t1", name).await.unwrap();
    }
    assert!(matches!(
        store.create_app("t1", "a").await,
        Err(MetadataError::Conflict(_))
    ));
    store.create_app("t2", "a").await.unwrap();

    let page = store.list_apps("t1", None, 2).await.unwrap();
    let names: Vec<_> = page.items.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let cursor = page.next_cursor.unwrap();
    let page = store.list_apps("t1", Some(&cursor), 2).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name, "c");
    assert_eq!(page.next_cursor, None);

    assert_eq!(
        store.list_apps("t2", None, 10).await.unwrap().items.len(),
        1
    );
    assert!(matches!(
        store.get_app("t3", "a").await,
        Err(MetadataError::NotFound(_))
    ));
}

async fn versions_number_up_and_go_live(backend: &str) {
    let (store, _g) = open(backend).await;
    // Deploying creates the app.
    let (app, v1) = store
        .add_version(
            "t",
            "shop",
            version('a', &[KV_IMPORT]),
            AppChange {
                bindings: Some(bind(&["kv=memory"])),
                routes: Some(vec!["/shop".into()]),
                ..AppChange::default()
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(app.live_version, Some(1));
    assert_eq!(app.bindings, ["kv=memory"]);
    assert_eq!(app.routes, ["/shop"]);
    let (app, v2) = store
        .add_version("t", "shop", version('b', &[]), AppChange::default(), false)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        app.live_version,
        Some(1),
        "activate=false keeps the live version"
    );
    let versions = store.list_versions("t", "shop", None, 10).await.unwrap();
    assert_eq!(
        versions.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        store.get_version("t", "shop", 1).await.unwrap().imports,
        [KV_IMPORT]
    );
    let deployments = store.deployments().await.unwrap();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].version.digest, "a".repeat(64));
    assert_eq!(deployments[0].key(), "t/shop");
}

async fn rollback_points_live_at_an_earlier_version(backend: &str) {
    let (store, _g) = open(backend).await;
    for d in ['a', 'b', 'c'] {
        store
            .add_version("t", "app", version(d, &[]), AppChange::default(), true)
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_app("t", "app").await.unwrap().live_version,
        Some(3)
    );
    let app = store
        .update_app(
            "t",
            "app",
            AppChange {
                live_version: Some(1),
                ..AppChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(app.live_version, Some(1));
    let err = store
        .update_app(
            "t",
            "app",
            AppChange {
                live_version: Some(9),
                ..AppChange::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MetadataError::NotFound(_)), "{err:?}");
    assert_eq!(
        store.get_app("t", "app").await.unwrap().live_version,
        Some(1)
    );
    let d = store.deployment("t", "app").await.unwrap().unwrap();
    assert_eq!(d.version.digest, "a".repeat(64));
}

async fn bindings_change_only_while_the_live_version_still_runs(backend: &str) {
    let (store, _g) = open(backend).await;
    store
        .add_version(
            "t",
            "app",
            version('a', &[KV_IMPORT]),
            AppChange {
                bindings: Some(bind(&["kv=memory", "config.greeting=hi"])),
                ..AppChange::default()
            },
            true,
        )
        .await
        .unwrap();
    let app = store
        .update_app(
            "t",
            "app",
            AppChange {
                set_bindings: bind(&["kv=redis:url=redis://127.0.0.1:6379", "kv.cache=memory"]),
                remove_bindings: vec!["config.greeting".into()],
                ..AppChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        app.bindings,
        ["kv=redis:url=redis://127.0.0.1:6379", "kv.cache=memory"]
    );
    // Leaving the kv import unbound is refused, and nothing changes.
    let err = store
        .update_app(
            "t",
            "app",
            AppChange {
                bindings: Some(bind(&["config.x=y"])),
                ..AppChange::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::Refused {
                code: "missing_binding",
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .update_app(
            "t",
            "app",
            AppChange {
                set_bindings: bind(&["kv=postgres"]),
                ..AppChange::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::Refused {
                code: "invalid_binding",
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .update_app(
            "t",
            "app",
            AppChange {
                remove_bindings: vec!["kv.nope".into()],
                ..AppChange::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MetadataError::NotFound(_)), "{err:?}");
    assert_eq!(
        store.get_app("t", "app").await.unwrap().bindings,
        ["kv=redis:url=redis://127.0.0.1:6379", "kv.cache=memory"]
    );
}

async fn routes_are_unique_across_apps_and_tenants(backend: &str) {
    let (store, _g) = open(backend).await;
    let routes = |r: &[&str]| AppChange {
        routes: Some(r.iter().map(|s| s.to_string()).collect()),
        ..AppChange::default()
    };
    store.create_app("t1", "a").await.unwrap();
    store.create_app("t2", "b").await.unwrap();
    store
        .update_app("t1", "a", routes(&["/a", "/shared"]))
        .await
        .unwrap();
    let err = store
        .update_app("t2", "b", routes(&["/shared"]))
        .await
        .unwrap_err();
    match err {
        MetadataError::Conflict(m) => assert!(!m.contains("t1") && !m.contains("`a`"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(store.get_app("t2", "b").await.unwrap().routes.is_empty());
    // Nor a route under it, above it, or the root that would cover everything.
    for overlapping in ["/shared/checkout", "/", "/a/b/c"] {
        let err = store
            .update_app("t2", "b", routes(&[overlapping]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, MetadataError::Conflict(_)),
            "{overlapping}: {err:?}"
        );
    }
    store
        .update_app("t2", "b", routes(&["/sharedx"]))
        .await
        .unwrap();
    // Re-setting one's own routes is fine.
    let app = store
        .update_app("t1", "a", routes(&["/shared"]))
        .await
        .unwrap();
    assert_eq!(app.routes, ["/shared"]);
    store.update_app("t2", "b", routes(&["/a"])).await.unwrap();
}

/// Two tenants claiming overlapping routes at the same moment: at most one wins, every
/// round (before the route space was locked, both often won).
async fn concurrent_route_claims_never_overlap(backend: &str) {
    let (store, _g) = open(backend).await;
    let store = Arc::new(store);
    for round in 0..50 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        // In different pools: changes within one pool are serialized by its
        // generation row anyway; routes are one space across pools.
        for (tenant, app, pool) in [("t1", &a, "p1"), ("t2", &b, "p2")] {
            store.create_app(tenant, app).await.unwrap();
            let change = AppChange {
                pool: Some(pool.into()),
                ..AppChange::default()
            };
            store.update_app(tenant, app, change).await.unwrap();
        }
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let claim = |tenant: &'static str, app: String, route: String| {
            let store = store.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let change = AppChange {
                    routes: Some(vec![route]),
                    ..AppChange::default()
                };
                start.wait().await;
                store.update_app(tenant, &app, change).await
            })
        };
        let first = claim("t1", a, format!("/store{round}"));
        let second = claim("t2", b, format!("/store{round}/checkout"));
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert!(
            first.is_err() || second.is_err(),
            "round {round}: both overlapping routes were accepted"
        );
        for outcome in [first, second] {
            if let Err(e) = outcome {
                assert!(matches!(e, MetadataError::Conflict(_)), "{e:?}");
            }
        }
    }
}

async fn first_deploys_of_one_app_race_safely(backend: &str) {
    let (store, _g) = open(backend).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let d = char::from(b'a' + i);
            store
                .add_version(
                    "t",
                    "new-app",
                    version(d, &[]),
                    AppChange {
                        set_bindings: bind(&[&format!("config.k{i}=v")]),
                        ..AppChange::default()
                    },
                    true,
                )
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let app = store.get_app("t", "new-app").await.unwrap();
    assert_eq!(app.bindings.len(), 6, "no lost update: {:?}", app.bindings);
    assert_eq!(
        store
            .list_versions("t", "new-app", None, 10)
            .await
            .unwrap()
            .items
            .len(),
        6
    );
}

async fn delete_removes_everything_of_the_app(backend: &str) {
    let (store, _g) = open(backend).await;
    store
        .add_version(
            "t",
            "app",
            version('a', &[]),
            AppChange {
                bindings: Some(bind(&["kv=memory"])),
                routes: Some(vec!["/x".into()]),
                ..AppChange::default()
            },
            true,
        )
        .await
        .unwrap();
    store.create_app("other", "app").await.unwrap();
    store.delete_app("t", "app").await.unwrap();
    assert!(matches!(
        store.get_app("t", "app").await,
        Err(MetadataError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_app("t", "app").await,
        Err(MetadataError::NotFound(_))
    ));
    assert!(store.deployments().await.unwrap().is_empty());
    store.get_app("other", "app").await.unwrap();
    // The name, its numbering and its route are free again.
    let (app, v) = store
        .add_version(
            "t",
            "app",
            version('b', &[]),
            AppChange {
                routes: Some(vec!["/x".into()]),
                ..AppChange::default()
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(v.version, 1);
    assert!(app.bindings.is_empty());
}

async fn concurrent_deploys_get_distinct_versions(backend: &str) {
    let (store, _g) = open(backend).await;
    store.create_app("t", "app").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let d = char::from(b'a' + i);
            store
                .add_version("t", "app", version(d, &[]), AppChange::default(), true)
                .await
                .unwrap()
                .1
                .version
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case("embedded").await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case("postgres").await }
            )*
        }
    };
}

suite!(
    apps_are_per_tenant_and_paginated,
    versions_number_up_and_go_live,
    rollback_points_live_at_an_earlier_version,
    bindings_change_only_while_the_live_version_still_runs,
    routes_are_unique_across_apps_and_tenants,
    delete_removes_everything_of_the_app,
    concurrent_deploys_get_distinct_versions,
    first_deploys_of_one_app_race_safely,
    concurrent_route_claims_never_overlap,
);

/// Replicas starting together on an empty schema all succeed and migrate it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_migrate_concurrently() {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let schema = schema.clone();
        tasks.push(tokio::spawn(async move {
            let db = PostgresDb::connect(&postgres_url(), Some(&schema)).unwrap();
            db.migrate().await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let db = PostgresDb::connect(&postgres_url(), Some(&schema)).unwrap();
    let store = Metadata::new(Arc::new(db)).await.unwrap();
    store.create_app("t", "a").await.unwrap();
}

/// The embedded file keeps everything across a reopen (a control-plane restart).
#[tokio::test]
async fn embedded_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let store = Metadata::new(Arc::new(EmbeddedDb::open(&path).unwrap()))
            .await
            .unwrap();
        store
            .add_version("t", "app", version('a', &[]), AppChange::default(), true)
            .await
            .unwrap();
    }
    let store = Metadata::new(Arc::new(EmbeddedDb::open(&path).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        store.get_app("t", "app").await.unwrap().live_version,
        Some(1)
    );
}

/// A database that is down is an error (→ 503 in the API), never a hang.
#[tokio::test]
async fn postgres_that_is_down_is_an_error_not_a_hang() {
    let db = PostgresDb::connect("postgres://postgres@127.0.0.1:1/test", None).unwrap();
    let started = std::time::Instant::now();
    let result = Metadata::new(Arc::new(db)).await;
    assert!(
        matches!(result, Err(MetadataError::Backend(_))),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}
