//! The queue consumer against the embedded queue and the `events` guest: every good
//! message handled exactly once, poison dead-lettered after its receives, the
//! concurrency cap kept, a slow handler never delivered twice, FIFO order kept through
//! failures, and a source that disappears reported and recovered from (SQS on the AWS
//! emulator).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use stratus_proto::triggers::QueueTrigger;
use stratus_worker::binding::Binding;
use stratus_worker::capabilities::Capabilities;
use stratus_worker::queues::{self, EmbeddedQueues, Outgoing};
use stratus_worker::runtime::{App, Runtime, RuntimeConfig};
use stratus_worker::trigger::queue::QueueConsumer;

fn runtime(timeout: Duration) -> Runtime {
    Runtime::new(RuntimeConfig {
        timeout,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// The `events` guest with its bucket in memory.
async fn events(runtime: &Runtime, dir: &std::path::Path) -> Arc<App> {
    let wasm_dir =
        std::env::var_os("STRATUS_WASM_DIR").expect("STRATUS_WASM_DIR (set by .ci/test)");
    let bytes = std::fs::read(std::path::Path::new(&wasm_dir).join("events.wasm")).unwrap();
    let bindings: Vec<Binding> = vec!["kv=memory".parse().unwrap()];
    let caps = Capabilities::open(&bindings, dir).await.unwrap();
    Arc::new(runtime.load("events", &bytes, caps).unwrap())
}

/// A key of the guest's bucket, read through its HTTP handler.
async fn kv(app: &Arc<App>, key: &str) -> Option<String> {
    let resp = app
        .handle(support::get("events", &format!("/kv/{key}")))
        .await;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    match status.as_u16() {
        200 => Some(String::from_utf8(body.to_vec()).unwrap()),
        404 => None,
        other => panic!("reading {key}: {other} {body:?}"),
    }
}

async fn count(app: &Arc<App>, key: &str) -> i64 {
    kv(app, key).await.map_or(0, |v| v.parse().unwrap())
}

async fn send(queues: &EmbeddedQueues, queue: &str, body: &str, group: Option<&str>) {
    queues
        .send(
            queue,
            Outgoing {
                body: body.as_bytes().to_vec(),
                group: group.map(str::to_string),
                ..Outgoing::default()
            },
        )
        .await
        .unwrap();
}

/// Polls `check` until it holds or `within` passes.
async fn eventually<F: Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

fn start(app: &Arc<App>, spec: &str, queues: &EmbeddedQueues) -> QueueConsumer {
    let trigger: QueueTrigger = spec.parse().unwrap();
    let concurrency = trigger.max_concurrency;
    QueueConsumer::start(
        app.clone(),
        trigger,
        concurrency,
        "test.events.t".into(),
        queues.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_good_message_once_and_poison_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(Duration::from_secs(10));
    let app = events(&runtime, dir.path()).await;
    let queues = queues::open_embedded(dir.path()).unwrap();
    for i in 0..200 {
        let body = if i % 10 == 7 {
            format!("m{i} poison")
        } else {
            format!("m{i}")
        };
        send(&queues, "jobs", &body, None).await;
    }
    let consumer = start(
        &app,
        "t=embedded:queue=jobs,batch_size=8,concurrency=4,max_receives=3,backoff=fixed,backoff_ms=50,dead_letter=jobs-dlq",
        &queues,
    );
    let done = eventually(Duration::from_secs(90), || {
        let queues = queues.clone();
        async move { queues.len("jobs-dlq").unwrap() == 20 && queues.len("jobs").unwrap() == 0 }
    })
    .await;
    assert!(
        done,
        "jobs left {}, dead {}",
        queues.len("jobs").unwrap(),
        queues.len("jobs-dlq").unwrap()
    );
    for i in 0..200 {
        let want = i64::from(i % 10 != 7);
        assert_eq!(count(&app, &format!("seen:m{i}")).await, want, "m{i}");
    }
    let max = count(&app, "max-running").await;
    assert!((1..=4).contains(&max), "concurrency cap 4 exceeded: {max}");
    assert_eq!(
        consumer
            .status
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        20
    );
    assert!(consumer.status.failing().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_is_not_delivered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(Duration::from_secs(10));
    let app = events(&runtime, dir.path()).await;
    let queues = queues::open_embedded(dir.path()).unwrap();
    send(&queues, "slow", "s1 slow=3500", None).await;
    let _consumer = start(
        &app,
        "t=embedded:queue=slow,visibility_ms=1000,concurrency=4",
        &queues,
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let app = app.clone();
            async move { count(&app, "seen:s1").await >= 1 }
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&app, "seen:s1").await, 1);
    assert_eq!(count(&app, "max-running").await, 1, "handled twice at once");
    assert_eq!(queues.len("slow").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_keep_their_order_through_failures() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(Duration::from_secs(10));
    let app = events(&runtime, dir.path()).await;
    let queues = queues::open_embedded(dir.path()).unwrap();
    for i in 1..=8 {
        for g in ["a", "b"] {
            // Each group's third message fails its first receive.
            let body = if i == 3 {
                format!("{g}{i} fail=1")
            } else {
                format!("{g}{i}")
            };
            send(&queues, "fifo", &body, Some(g)).await;
        }
    }
    let _consumer = start(
        &app,
        "t=embedded:queue=fifo,fifo=true,concurrency=4,backoff=fixed,backoff_ms=200",
        &queues,
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let queues = queues.clone();
            async move { queues.len("fifo").unwrap() == 0 }
        })
        .await
    );
    for g in ["a", "b"] {
        let order = kv(&app, &format!("order:{g}")).await.unwrap();
        let want: Vec<String> = (1..=8).map(|i| format!("{g}{i}")).collect();
        assert_eq!(order, want.join(","), "group {g}");
    }
}

/// A deleted SQS queue puts the trigger in a failing state with the reason; once the
/// queue is back the trigger recovers on its own and handles what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queue_fails_visibly_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(Duration::from_secs(10));
    let app = events(&runtime, dir.path()).await;
    let embedded = queues::open_embedded(dir.path()).unwrap();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let name = format!("gone-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let url = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let consumer = start(
        &app,
        &format!("t=sqs:queue_url={url},concurrency=2,visibility_ms=2000"),
        &embedded,
    );
    let trigger: QueueTrigger = format!("t=sqs:queue_url={url}").parse().unwrap();
    let options = queues::OpenOptions {
        consumer: "producer".into(),
        visibility: Duration::from_secs(2),
        fifo: false,
        max_in_flight: 1,
        pool_in_flight: 1,
    };
    let producer = queues::open(&trigger, options.clone(), &embedded)
        .await
        .unwrap();
    producer
        .send(
            None,
            Outgoing {
                body: b"before".to_vec(),
                ..Outgoing::default()
            },
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let app = app.clone();
            async move { count(&app, "seen:before").await == 1 }
        })
        .await
    );
    client.delete_queue().queue_url(&url).send().await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let failing = consumer.status.failing();
            async move { failing.is_some() }
        })
        .await,
        "a deleted queue was not reported"
    );
    let reason = consumer.status.failing().unwrap();
    assert!(reason.contains("sqs"), "{reason}");
    client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap();
    producer
        .send(
            None,
            Outgoing {
                body: b"after".to_vec(),
                ..Outgoing::default()
            },
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || {
            let app = app.clone();
            async move { count(&app, "seen:after").await == 1 }
        })
        .await,
        "the trigger did not recover: {:?}",
        consumer.status.failing()
    );
    assert!(consumer.status.failing().is_none());
}

/// Components built for other hosts take events unchanged: Spin's cron handler gets
/// the scheduled time in seconds, and a wasmCloud 1.x message handler (no HTTP export at
/// all) takes queue messages, its error a failure like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_cron_and_wasmcloud_handlers_take_events() {
    use stratus_worker::runtime::{Event, EventError, TimerEvent};
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(Duration::from_secs(10));
    let wasm_dir = std::env::var_os("STRATUS_WASM_DIR").unwrap();
    let read = |name: &str| std::fs::read(std::path::Path::new(&wasm_dir).join(name)).unwrap();

    let cron = Arc::new(
        runtime
            .load("cron", &read("spin_cron.wasm"), Capabilities::default())
            .unwrap(),
    );
    let at = |ms: u64| {
        Event::Timer(TimerEvent {
            trigger: "tick".into(),
            scheduled_ms: ms,
            attempt: 1,
        })
    };
    cron.handle_event(at(4_000)).await.unwrap();
    match cron.handle_event(at(7_000)).await {
        Err(EventError::Rejected(why)) => assert!(why.contains("odd timestamp 7"), "{why}"),
        other => panic!("{other:?}"),
    }

    let bindings: Vec<Binding> = vec!["kv=memory".parse().unwrap()];
    let caps = Capabilities::open(&bindings, dir.path()).await.unwrap();
    let wc = Arc::new(
        runtime
            .load("wc", &read("wasmcloud_events.wasm"), caps)
            .unwrap(),
    );
    let message = |body: &str| {
        Event::Message(stratus_worker::capabilities::messaging::Message {
            topic: Some("jobs".into()),
            data: body.as_bytes().to_vec(),
            ..Default::default()
        })
    };
    wc.handle_event(message("w1")).await.unwrap();
    assert!(matches!(
        wc.handle_event(message("poison-1")).await,
        Err(EventError::Rejected(_))
    ));
    // It serves no HTTP.
    let resp = wc.handle(support::get("wc", "/")).await;
    assert_eq!(resp.status(), 404);
}
