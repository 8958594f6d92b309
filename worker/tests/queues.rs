//! The queue source conformance suite, run against every source: the embedded queue,
//! NATS JetStream (at `STRATUS_TEST_NATS_URL`) and SQS (on the AWS emulator at
//! `AWS_ENDPOINT_URL`). Each case states one promise the consumer builds on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use stratus_proto::triggers::QueueTrigger;
use stratus_worker::queues::{self, Delivery, OpenOptions, Outgoing, QueueSource};

const VISIBILITY: Duration = Duration::from_secs(2);

fn nats_url() -> String {
    std::env::var("STRATUS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// One source under test and how to make another queue of it (for dead letters).
struct Under {
    source: Arc<dyn QueueSource>,
    /// A second queue of the same source: its name for `send`, and a source reading it.
    other_name: String,
    other: Arc<dyn QueueSource>,
    _dir: Option<tempfile::TempDir>,
}

fn options(consumer: &str, fifo: bool) -> OpenOptions {
    OpenOptions {
        consumer: consumer.to_string(),
        visibility: VISIBILITY,
        fifo,
        max_in_flight: 16,
        pool_in_flight: 16,
    }
}

async fn embedded(fifo: bool) -> Under {
    let dir = tempfile::tempdir().unwrap();
    let queues = queues::open_embedded(dir.path()).unwrap();
    let open = |name: &str| {
        let trigger: QueueTrigger = format!("t=embedded:queue={name}").parse().unwrap();
        let queues = queues.clone();
        async move {
            queues::open(&trigger, options("c", fifo), &queues)
                .await
                .unwrap()
        }
    };
    Under {
        source: open("main").await,
        other_name: "dead".into(),
        other: open("dead").await,
        _dir: Some(dir),
    }
}

async fn nats(fifo: bool) -> Under {
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let id = unique();
    for (stream, subject) in [
        (format!("T{id}"), format!("t.{id}")),
        (format!("D{id}"), format!("d.{id}")),
    ] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream,
            subjects: vec![subject],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Not read by these sources; `open` takes it for the embedded one.
    let dir = tempfile::tempdir().unwrap();
    let embedded = queues::open_embedded(dir.path()).unwrap();
    let open = |stream: String| {
        let embedded = embedded.clone();
        async move {
            let trigger: QueueTrigger = format!("t=nats:url={},stream={stream}", nats_url())
                .parse()
                .unwrap();
            queues::open(&trigger, options(&format!("c{stream}"), fifo), &embedded)
                .await
                .unwrap()
        }
    };
    Under {
        source: open(format!("T{id}")).await,
        other_name: format!("d.{id}"),
        other: open(format!("D{id}")).await,
        _dir: Some(dir),
    }
}

async fn sqs(fifo: bool) -> Under {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let suffix = if fifo { ".fifo" } else { "" };
    let mut urls = Vec::new();
    for name in ["main", "dead"] {
        let mut req = client
            .create_queue()
            .queue_name(format!("{name}-{}{suffix}", unique()));
        if fifo {
            req = req.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        urls.push(req.send().await.unwrap().queue_url.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let embedded = queues::open_embedded(dir.path()).unwrap();
    let open = |url: String| {
        let embedded = embedded.clone();
        async move {
            let fifo_opt = if fifo { ",fifo=true" } else { "" };
            let trigger: QueueTrigger = format!("t=sqs:queue_url={url}{fifo_opt}").parse().unwrap();
            queues::open(&trigger, options("c", fifo), &embedded)
                .await
                .unwrap()
        }
    };
    Under {
        source: open(urls[0].clone()).await,
        other_name: urls[1].clone(),
        other: open(urls[1].clone()).await,
        _dir: Some(dir),
    }
}

fn message(body: &str, group: Option<&str>) -> Outgoing {
    Outgoing {
        body: body.as_bytes().to_vec(),
        content_type: Some("text/plain".into()),
        attributes: vec![("origin".into(), "suite".into())],
        group: group.map(str::to_string),
    }
}

/// Receives until `n` messages are in hand or `within` passes.
async fn receive_n(source: &dyn QueueSource, n: usize, within: Duration) -> Vec<Delivery> {
    let until = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        out.extend(
            source
                .receive(n - out.len(), left.min(Duration::from_secs(1)))
                .await
                .unwrap(),
        );
    }
    out
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.body.clone()).unwrap()
}

/// What is sent is received once, with its content type and attributes, and an
/// acknowledged message never comes back.
async fn round_trip(u: Under) {
    for i in 0..3 {
        u.source
            .send(None, message(&format!("m{i}"), None))
            .await
            .unwrap();
    }
    let got = receive_n(&*u.source, 3, Duration::from_secs(10)).await;
    let mut bodies: Vec<String> = got.iter().map(body).collect();
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    for d in &got {
        assert_eq!(d.receive_count, 1);
        assert_eq!(d.content_type.as_deref(), Some("text/plain"));
        assert!(
            d.attributes.contains(&("origin".into(), "suite".into())),
            "{:?}",
            d.attributes
        );
        u.source.ack(&d.receipt).await.unwrap();
    }
    tokio::time::sleep(VISIBILITY + Duration::from_millis(500)).await;
    let again = u
        .source
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "acknowledged messages came back: {again:?}"
    );
}

/// A retried message stays hidden for its delay, then returns with its receive count
/// grown; one never acknowledged returns once its visibility lapses.
async fn retry_and_lapse(u: Under) {
    u.source.send(None, message("r", None)).await.unwrap();
    let first = receive_n(&*u.source, 1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    u.source
        .retry(&first[0].receipt, Duration::from_secs(2))
        .await
        .unwrap();
    let early = u
        .source
        .receive(1, Duration::from_millis(800))
        .await
        .unwrap();
    assert!(early.is_empty(), "returned before its delay: {early:?}");
    let second = receive_n(&*u.source, 1, Duration::from_secs(10)).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].receive_count, 2);
    // Not acknowledged: back after the visibility period.
    let third = receive_n(&*u.source, 1, Duration::from_secs(10)).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].receive_count, 3);
    u.source.ack(&third[0].receipt).await.unwrap();
}

/// Extending a delivery keeps it hidden past its first visibility period.
async fn extend_keeps_hidden(u: Under) {
    u.source.send(None, message("slow", None)).await.unwrap();
    let got = receive_n(&*u.source, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let until = tokio::time::Instant::now() + VISIBILITY * 2;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(VISIBILITY / 3).await;
        u.source.extend(&got[0].receipt).await.unwrap();
        let seen = u
            .source
            .receive(1, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(seen.is_empty(), "delivered again while extended: {seen:?}");
    }
    u.source.ack(&got[0].receipt).await.unwrap();
}

/// A message sent to another queue of the source (a dead-letter queue) arrives there.
async fn send_elsewhere(u: Under) {
    u.source
        .send(Some(&u.other_name), message("dead", Some("g")))
        .await
        .unwrap();
    let got = receive_n(&*u.other, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), "dead");
    u.other.ack(&got[0].receipt).await.unwrap();
}

/// FIFO: a group's messages arrive in order (several may come in one receive, in
/// order), and none of a group is delivered while an earlier one is held.
async fn fifo_order(u: Under) {
    for (g, i) in [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)] {
        u.source
            .send(None, message(&format!("{g}{i}"), Some(g)))
            .await
            .unwrap();
    }
    let mut order: Vec<String> = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while order.len() < 5 && tokio::time::Instant::now() < until {
        let held = u.source.receive(10, Duration::from_secs(1)).await.unwrap();
        let held_groups: std::collections::HashSet<String> =
            held.iter().map(|d| body(d)[..1].to_string()).collect();
        // While those are held, nothing more of their groups comes.
        let more = u
            .source
            .receive(10, Duration::from_millis(300))
            .await
            .unwrap();
        for d in &more {
            let b = body(d);
            assert!(
                !held_groups.contains(&b[..1]),
                "{b} delivered while its group is held: {held:?}"
            );
        }
        for d in held.iter().chain(&more) {
            order.push(body(d));
            u.source.ack(&d.receipt).await.unwrap();
        }
    }
    for g in ["a", "b"] {
        let mine: Vec<&String> = order.iter().filter(|b| b.starts_with(g)).collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "group {g} out of order: {order:?}");
    }
    assert_eq!(order.len(), 5, "{order:?}");
}

macro_rules! suite {
    ($source:ident) => {
        mod $source {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip() {
                super::round_trip(super::$source(false).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retry_and_lapse() {
                super::retry_and_lapse(super::$source(false).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn extend_keeps_hidden() {
                super::extend_keeps_hidden(super::$source(false).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn send_elsewhere() {
                super::send_elsewhere(super::$source(false).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fifo_order() {
                super::fifo_order(super::$source(true).await).await;
            }
        }
    };
}

suite!(embedded);
suite!(nats);
suite!(sqs);

/// The embedded queue keeps messages and receive counts across a restart.
#[tokio::test]
async fn embedded_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let trigger: QueueTrigger = "t=embedded:queue=keep".parse().unwrap();
    {
        let queues = queues::open_embedded(dir.path()).unwrap();
        let source = queues::open(&trigger, options("c", false), &queues)
            .await
            .unwrap();
        source.send(None, message("kept", None)).await.unwrap();
        source.send(None, message("held", None)).await.unwrap();
        let got = source.receive(1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.len(), 1);
        // Dropped without an acknowledgement, like a killed worker.
    }
    let queues = queues::open_embedded(dir.path()).unwrap();
    let source = queues::open(&trigger, options("c", false), &queues)
        .await
        .unwrap();
    let got = receive_n(&*source, 2, Duration::from_secs(10)).await;
    let mut seen: Vec<(String, u32)> = got.iter().map(|d| (body(d), d.receive_count)).collect();
    seen.sort();
    assert_eq!(seen, [("held".to_string(), 1), ("kept".to_string(), 2)]);
    // Once everything is acknowledged and the queue is opened again, a new message gets
    // a new id: a guest that de-duplicates on ids never drops it.
    let mut ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
    for d in &got {
        source.ack(&d.receipt).await.unwrap();
    }
    drop(source);
    drop(queues);
    let queues = queues::open_embedded(dir.path()).unwrap();
    let source = queues::open(&trigger, options("c", false), &queues)
        .await
        .unwrap();
    source.send(None, message("new", None)).await.unwrap();
    let got = receive_n(&*source, 1, Duration::from_secs(5)).await;
    ids.push(got[0].id.clone());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "an id was reused: {ids:?}");
}
