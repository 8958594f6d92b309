//! The producer capability: an HTTP function (`sender`) enqueues work for a queue
//! function (`events`) through a `messaging` binding, on the embedded queue and on NATS
//! JetStream, over `wasi:messaging/producer` and wasmCloud's `consumer.publish`; an
//! unbound topic is the guest's error, not a crash.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use stratus_proto::triggers::QueueTrigger;
use stratus_worker::binding::Binding;
use stratus_worker::capabilities::Capabilities;
use stratus_worker::queues;
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};
use stratus_worker::trigger::queue::QueueConsumer;

fn nats_url() -> String {
    std::env::var("STRATUS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

async fn load(
    runtime: &Runtime,
    guest: &str,
    bindings: &[&str],
    dir: &std::path::Path,
) -> Arc<App> {
    let wasm_dir =
        std::env::var_os("STRATUS_WASM_DIR").expect("STRATUS_WASM_DIR (set by .ci/test)");
    let bytes =
        std::fs::read(std::path::Path::new(&wasm_dir).join(format!("{guest}.wasm"))).unwrap();
    let bindings: Vec<Binding> = bindings.iter().map(|b| b.parse().unwrap()).collect();
    let caps = Capabilities::open(&bindings, dir).await.unwrap();
    Arc::new(runtime.load(guest, &bytes, caps).unwrap())
}

async fn post(app: &Arc<App>, path: &str, body: &str) -> (u16, String) {
    let req = hyper::Request::post(format!("http://sender{path}"))
        .header("host", "sender")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = app.handle(req).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn seen(events: &Arc<App>, id: &str) -> bool {
    let resp = events
        .handle(support::get("events", &format!("/kv/seen:{id}")))
        .await;
    resp.status() == 200
}

async fn eventually(events: &Arc<App>, id: &str) -> bool {
    for _ in 0..100 {
        if seen(events, id).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_function_enqueues_work_for_a_queue_function() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    // The embedded queues of this process, fed through the spool the producer writes.
    let queues = queues::serve_embedded(dir.path()).unwrap();
    let events = load(&runtime, "events", &["kv=memory"], dir.path()).await;
    let trigger: QueueTrigger = "jobs=embedded".parse().unwrap();
    let _consumer =
        QueueConsumer::start(events.clone(), trigger, 4, "t.jobs".into(), queues.clone());

    let sender = load(&runtime, "sender", &["messaging=embedded"], dir.path()).await;
    assert_eq!(post(&sender, "/send/jobs", "p1").await.0, 202);
    assert!(
        eventually(&events, "p1").await,
        "the queue function never got p1"
    );
    // wasmCloud's consumer.publish takes the same path.
    assert_eq!(post(&sender, "/publish/jobs", "p2").await.0, 202);
    assert!(
        eventually(&events, "p2").await,
        "the queue function never got p2"
    );

    // A topic with no binding is the guest's error.
    let only_jobs = load(&runtime, "sender", &["messaging.jobs=embedded"], dir.path()).await;
    let (status, body) = post(&only_jobs, "/send/other", "x").await;
    assert_eq!(status, 502);
    assert!(
        body.contains("no messaging binding for topic `other`"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_reach_a_jetstream_stream() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let stream = format!("OUT{id}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("out.{id}")],
        ..Default::default()
    })
    .await
    .unwrap();
    let sender = load(
        &runtime,
        "sender",
        &[&format!("messaging=nats:url={}", nats_url())],
        dir.path(),
    )
    .await;
    assert_eq!(post(&sender, &format!("/send/out.{id}"), "n1").await.0, 202);
    let mut s = js.get_stream(&stream).await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 1);
    // A subject no stream captures is refused, not dropped.
    let (status, body) = post(&sender, &format!("/send/nowhere.{id}"), "n2").await;
    assert_eq!(status, 502, "{body}");
}
