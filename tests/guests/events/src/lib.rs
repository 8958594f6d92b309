//! A guest for every trigger kind, recording what it handled in the key-value bucket
//! `events` so a test can count duplicates and gaps.
//!
//! A message body is space-separated words: an id first, then any of `poison` (fail
//! every time), `slow=MS` (take that long), `fail=N` (fail the first N receives, read
//! from the `receive-count` metadata). A handled message increments `seen:ID`; one in
//! a FIFO group also appends its id to `order:GROUP`. `running` counts handlers in
//! progress and `max-running` the most seen at once. A timer run increments
//! `timer:TRIGGER` and appends its scheduled time to `timer-log:TRIGGER`; a timer whose
//! trigger name starts with `fail` fails its first attempt. A body starting `noop`
//! returns at once, recording nothing (the benchmark's no-op function). Over HTTP, `GET /kv/KEY`
//! answers a key's value, so tests read the bucket through the app.

wit_bindgen::generate!({
    inline: r#"
        package stratus-tests:events;
        world events {
            include stratus:platform/capabilities@0.1.0;
            export wasi:messaging/incoming-handler@0.2.0-draft;
            export stratus:platform/timer-handler@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::stratus::platform::timer_handler::{Guest as TimerGuest, TimerEvent};
use exports::wasi::messaging::incoming_handler::Guest as MessageGuest;
use wasi::keyvalue0_2_0_draft2::store;
use wasi::keyvalue0_2_0_draft2::{atomics, store::Bucket};
use wasi::messaging::types::{Error, Message};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Events;

export!(Events);
wasip2::http::proxy::export!(Events);

fn bucket() -> Result<Bucket, String> {
    store::open("events").map_err(|e| format!("{e:?}"))
}

fn add(bucket: &Bucket, key: &str, delta: i64) -> Result<i64, String> {
    atomics::increment(bucket, key, delta).map_err(|e| format!("{e:?}"))
}

fn append(bucket: &Bucket, key: &str, item: &str) -> Result<(), String> {
    let mut value = bucket
        .get(key)
        .map_err(|e| format!("{e:?}"))?
        .unwrap_or_default();
    if !value.is_empty() {
        value.push(b',');
    }
    value.extend_from_slice(item.as_bytes());
    bucket.set(key, &value).map_err(|e| format!("{e:?}"))
}

/// Raises `max-running` to at least `now` (compare-and-swap, so concurrent handlers
/// never lower it).
fn raise_max(bucket: &Bucket, now: i64) -> Result<(), String> {
    loop {
        let cas = atomics::Cas::new(bucket, "max-running").map_err(|e| format!("{e:?}"))?;
        let current = cas
            .current()
            .map_err(|e| format!("{e:?}"))?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if current >= now {
            return Ok(());
        }
        match atomics::swap(cas, now.to_string().as_bytes()) {
            Ok(()) => return Ok(()),
            Err(atomics::CasError::CasFailed(_)) => continue,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

fn sleep_ms(ms: u64) {
    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

fn handle(message: &Message) -> Result<(), String> {
    let data = String::from_utf8(message.data()).map_err(|_| "body is not UTF-8".to_string())?;
    // The benchmark's no-op function.
    if data.starts_with("noop") {
        return Ok(());
    }
    let mut words = data.split_whitespace();
    let id = words.next().ok_or("empty body")?.to_string();
    let meta = message.metadata().unwrap_or_default();
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let receives: u32 = get("receive-count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let bucket = bucket()?;
    let running = add(&bucket, "running", 1)?;
    let outcome = (|| {
        raise_max(&bucket, running)?;
        for word in words {
            if word == "poison" {
                return Err(format!("{id} is poison"));
            }
            if let Some(ms) = word.strip_prefix("slow=") {
                sleep_ms(ms.parse().map_err(|_| "bad slow=")?);
            }
            if let Some(n) = word.strip_prefix("fail=")
                && receives <= n.parse::<u32>().map_err(|_| "bad fail=")?
            {
                return Err(format!("{id} fails receive {receives}"));
            }
        }
        add(&bucket, &format!("seen:{id}"), 1)?;
        if let Some(group) = get("group") {
            append(&bucket, &format!("order:{group}"), &id)?;
        }
        Ok(())
    })();
    add(&bucket, "running", -1)?;
    outcome
}

impl MessageGuest for Events {
    fn handle(message: Message) -> Result<(), Error> {
        handle(&message).map_err(Error::Other)
    }
}

impl TimerGuest for Events {
    fn handle_timer(event: TimerEvent) -> Result<(), String> {
        if event.trigger.starts_with("fail") && event.attempt == 1 {
            return Err("the first attempt fails".into());
        }
        let bucket = bucket()?;
        add(&bucket, &format!("timer:{}", event.trigger), 1)?;
        append(
            &bucket,
            &format!("timer-log:{}", event.trigger),
            &format!("{}/{}", event.scheduled_ms, event.attempt),
        )
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Events {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        // Under whatever route the app is served at.
        let Some((_, key)) = path.split_once("/kv/") else {
            return guest_http::respond(out, 404, b"try /kv/KEY\n");
        };
        match bucket().and_then(|b| b.get(key).map_err(|e| format!("{e:?}"))) {
            Ok(Some(value)) => guest_http::respond(out, 200, &value),
            Ok(None) => guest_http::respond(out, 404, b""),
            Err(e) => guest_http::respond(out, 500, e.as_bytes()),
        }
    }
}
