//! The key-value conformance suite: written once, run against every provider on real
//! servers (Redis at `STRATUS_TEST_REDIS_URL`, DynamoDB at `AWS_ENDPOINT_URL`, e.g. the
//! local AWS emulator started by `.ci/test`).

// Test code: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use stratus_worker::binding::ProviderSpec;
use stratus_worker::capabilities::keyvalue::{self, KeyValue, KvError, LIST_PAGE_SIZE, limits};

fn unique_ns(case: &str) -> String {
    format!("conformance-{}/{case}", uuid::Uuid::new_v4())
}

async fn open(spec: &str) -> Arc<dyn KeyValue> {
    let spec: ProviderSpec = spec.parse().unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    keyvalue::open_provider(&spec, &dir)
        .await
        .unwrap_or_else(|e| panic!("opening `{spec}`: {e}"))
}

fn redis_url() -> String {
    std::env::var("STRATUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The AWS emulator (or DynamoDB) the tests talk to.
fn aws_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

fn dynamo_spec() -> String {
    let endpoint = aws_endpoint();
    format!("dynamo:table=stratus-conformance,region=us-east-1,endpoint={endpoint}")
}

pub async fn crud(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("crud");
    assert_eq!(kv.get(&ns, "missing").await.unwrap(), None);
    assert!(!kv.exists(&ns, "missing").await.unwrap());
    kv.delete(&ns, "missing").await.unwrap();

    kv.set(&ns, "k", b"v1").await.unwrap();
    assert_eq!(kv.get(&ns, "k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert!(kv.exists(&ns, "k").await.unwrap());
    kv.set(&ns, "k", b"v2").await.unwrap();
    assert_eq!(kv.get(&ns, "k").await.unwrap().as_deref(), Some(&b"v2"[..]));

    kv.set(&ns, "empty", b"").await.unwrap();
    assert_eq!(
        kv.get(&ns, "empty").await.unwrap().as_deref(),
        Some(&b""[..])
    );

    kv.delete(&ns, "k").await.unwrap();
    assert_eq!(kv.get(&ns, "k").await.unwrap(), None);
    assert!(!kv.exists(&ns, "k").await.unwrap());
}

pub async fn namespaces_are_isolated(kv: Arc<dyn KeyValue>) {
    let a = unique_ns("iso");
    let ab = format!("{a}b");
    kv.set(&a, "k", b"a").await.unwrap();
    kv.set(&ab, "k", b"ab").await.unwrap();
    kv.set(&ab, "only-ab", b"x").await.unwrap();
    assert_eq!(kv.get(&a, "k").await.unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(kv.get(&ab, "k").await.unwrap().as_deref(), Some(&b"ab"[..]));
    assert_eq!(
        kv.list_keys(&a, None).await.unwrap().keys,
        vec!["k".to_string()]
    );
    kv.delete(&a, "k").await.unwrap();
    assert_eq!(kv.get(&ab, "k").await.unwrap().as_deref(), Some(&b"ab"[..]));
}

/// Every key in a namespace, over all pages.
async fn all_keys(kv: &Arc<dyn KeyValue>, ns: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = kv.list_keys(ns, cursor.as_deref()).await.unwrap();
        keys.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return keys,
        }
    }
}

pub async fn list_keys_pages_with_cursors(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("list");
    assert_eq!(
        kv.list_keys(&ns, None).await.unwrap().keys,
        Vec::<String>::new()
    );
    let total = LIST_PAGE_SIZE * 2 + 500;
    let entries: Vec<(String, Vec<u8>)> = (0..total)
        .map(|i| (format!("key-{i:05}"), i.to_string().into_bytes()))
        .collect();
    kv.set_many(&ns, &entries).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = kv.list_keys(&ns, cursor.as_deref()).await.unwrap();
        seen.extend(page.keys);
        pages += 1;
        assert!(pages < 100, "cursor never ended");
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // The page size is a provider hint (Redis HSCAN's COUNT), but 2.5 pages' worth of
    // keys must take more than one page.
    assert!(pages >= 2, "{total} keys came back in one page");
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "duplicate keys across pages");
    let expected: BTreeSet<_> = entries.into_iter().map(|(k, _)| k).collect();
    assert_eq!(unique, expected);
}

pub async fn batch_ops(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("batch");
    let entries: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("b{i}"), format!("v{i}").into_bytes()))
        .collect();
    kv.set_many(&ns, &entries).await.unwrap();
    let keys = vec![
        "b1".to_string(),
        "nope".to_string(),
        "b59".to_string(),
        "b1".to_string(),
    ];
    let got = kv.get_many(&ns, &keys).await.unwrap();
    assert_eq!(
        got,
        vec![
            Some(b"v1".to_vec()),
            None,
            Some(b"v59".to_vec()),
            Some(b"v1".to_vec())
        ]
    );
    let doomed: Vec<String> = (0..50)
        .map(|i| format!("b{i}"))
        .chain(["nope".into()])
        .collect();
    kv.delete_many(&ns, &doomed).await.unwrap();
    assert_eq!(kv.get(&ns, "b0").await.unwrap(), None);
    assert_eq!(
        kv.get(&ns, "b55").await.unwrap().as_deref(),
        Some(&b"v55"[..])
    );
    assert_eq!(
        kv.get_many(&ns, &[]).await.unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    kv.set_many(&ns, &[]).await.unwrap();
    kv.delete_many(&ns, &[]).await.unwrap();
}

pub async fn increment(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("incr");
    assert_eq!(kv.increment(&ns, "n", 5).await.unwrap(), 5);
    assert_eq!(kv.increment(&ns, "n", -7).await.unwrap(), -2);
    assert_eq!(kv.get(&ns, "n").await.unwrap().as_deref(), Some(&b"-2"[..]));
    kv.set(&ns, "text", b"forty").await.unwrap();
    assert!(matches!(
        kv.increment(&ns, "text", 1).await,
        Err(KvError::NotAnInteger(_))
    ));
    kv.set(&ns, "ten", b"10").await.unwrap();
    assert_eq!(kv.increment(&ns, "ten", 1).await.unwrap(), 11);
    kv.set(&ns, "big", i64::MAX.to_string().as_bytes())
        .await
        .unwrap();
    assert!(matches!(
        kv.increment(&ns, "big", 1).await,
        Err(KvError::Overflow(_))
    ));
    assert_eq!(
        kv.get(&ns, "big").await.unwrap(),
        Some(i64::MAX.to_string().into_bytes())
    );
}

pub async fn compare_and_swap(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("cas");
    assert!(kv.compare_and_swap(&ns, "c", None, b"1").await.unwrap());
    assert!(!kv.compare_and_swap(&ns, "c", None, b"x").await.unwrap());
    assert!(
        !kv.compare_and_swap(&ns, "c", Some(b"0"), b"x")
            .await
            .unwrap()
    );
    assert!(
        kv.compare_and_swap(&ns, "c", Some(b"1"), b"2")
            .await
            .unwrap()
    );
    assert_eq!(kv.get(&ns, "c").await.unwrap().as_deref(), Some(&b"2"[..]));
}

const WRITERS: usize = 8;
const ROUNDS: usize = 20;

pub async fn concurrent_writers(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("concurrent");
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (kv, ns) = (kv.clone(), ns.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                kv.increment(&ns, "incr", 1).await.unwrap();
                loop {
                    let seen = kv.get(&ns, "cas").await.unwrap();
                    let n: u64 = seen
                        .as_deref()
                        .map(|v| std::str::from_utf8(v).unwrap().parse().unwrap())
                        .unwrap_or(0);
                    let next = (n + 1).to_string();
                    if kv
                        .compare_and_swap(&ns, "cas", seen.as_deref(), next.as_bytes())
                        .await
                        .unwrap()
                    {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let want = (WRITERS * ROUNDS).to_string().into_bytes();
    assert_eq!(kv.get(&ns, "incr").await.unwrap(), Some(want.clone()));
    assert_eq!(
        kv.get(&ns, "cas").await.unwrap(),
        Some(want),
        "a CAS update was lost"
    );
}

/// Bytes that differ with `seed`, so a value of the same length is not the same value.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

pub async fn large_values(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("large");
    let big = pattern(1 << 20, 0);
    let same_size = pattern(1 << 20, 1);
    let largest = pattern(limits::MAX_VALUE_BYTES, 2);
    kv.set(&ns, "big", &big).await.unwrap();
    assert_eq!(kv.get(&ns, "big").await.unwrap().as_ref(), Some(&big));
    assert!(kv.exists(&ns, "big").await.unwrap());
    assert_eq!(
        all_keys(&kv, &ns).await,
        BTreeSet::from(["big".to_string()])
    );

    // Large over large, small over large, large over small.
    kv.set(&ns, "big", &largest).await.unwrap();
    assert_eq!(kv.get(&ns, "big").await.unwrap().as_ref(), Some(&largest));
    kv.set(&ns, "big", b"small").await.unwrap();
    assert_eq!(
        kv.get(&ns, "big").await.unwrap().as_deref(),
        Some(&b"small"[..])
    );
    kv.set(&ns, "big", &big).await.unwrap();
    assert_eq!(kv.get(&ns, "big").await.unwrap().as_ref(), Some(&big));

    // Compare-and-swap compares every byte of a large value.
    assert!(
        !kv.compare_and_swap(&ns, "big", Some(&same_size), b"x")
            .await
            .unwrap()
    );
    assert!(!kv.compare_and_swap(&ns, "big", None, b"x").await.unwrap());
    assert_eq!(kv.get(&ns, "big").await.unwrap().as_ref(), Some(&big));
    assert!(
        kv.compare_and_swap(&ns, "big", Some(&big), &largest)
            .await
            .unwrap()
    );
    assert_eq!(kv.get(&ns, "big").await.unwrap().as_ref(), Some(&largest));
    assert!(
        !kv.compare_and_swap(&ns, "new", Some(&big), &big)
            .await
            .unwrap()
    );
    assert!(kv.compare_and_swap(&ns, "new", None, &big).await.unwrap());
    assert!(
        !kv.compare_and_swap(&ns, "new", None, &same_size)
            .await
            .unwrap()
    );
    assert!(
        kv.compare_and_swap(&ns, "new", Some(&big), b"small")
            .await
            .unwrap()
    );
    assert!(
        kv.compare_and_swap(&ns, "new", Some(b"small"), &same_size)
            .await
            .unwrap()
    );
    assert_eq!(kv.get(&ns, "new").await.unwrap().as_ref(), Some(&same_size));

    // Batches mix large and small values.
    kv.set_many(
        &ns,
        &[
            ("m1".to_string(), big.clone()),
            ("m2".to_string(), b"x".to_vec()),
            ("new".to_string(), b"y".to_vec()),
        ],
    )
    .await
    .unwrap();
    let keys = ["m1", "m2", "big", "new", "missing"].map(String::from);
    assert_eq!(
        kv.get_many(&ns, &keys).await.unwrap(),
        vec![
            Some(big.clone()),
            Some(b"x".to_vec()),
            Some(largest.clone()),
            Some(b"y".to_vec()),
            None
        ]
    );
    kv.delete_many(&ns, &["m1".to_string(), "big".to_string()])
        .await
        .unwrap();
    assert_eq!(kv.get(&ns, "m1").await.unwrap(), None);
    assert!(!kv.exists(&ns, "big").await.unwrap());
    kv.set(&ns, "m2", &big).await.unwrap();
    kv.delete(&ns, "m2").await.unwrap();
    assert_eq!(kv.get(&ns, "m2").await.unwrap(), None);
    assert_eq!(
        all_keys(&kv, &ns).await,
        BTreeSet::from(["new".to_string()])
    );
}

/// A reader sees one whole large value or another while writers replace it, never a mix
/// or an error.
pub async fn large_values_under_concurrent_writers(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("large-race");
    let values = [pattern(600 << 10, 3), pattern(900 << 10, 4)];
    kv.set(&ns, "k", &values[0]).await.unwrap();
    let writer = {
        let (kv, ns, values) = (kv.clone(), ns.clone(), values.clone());
        tokio::spawn(async move {
            for round in 0..20 {
                kv.set(&ns, "k", &values[round % 2]).await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads < 20 {
        let got = kv.get(&ns, "k").await.unwrap().unwrap();
        assert!(values.contains(&got), "a torn read of {} bytes", got.len());
        reads += 1;
    }
    writer.await.unwrap();
}

pub async fn unusual_keys_and_binary_values(kv: Arc<dyn KeyValue>) {
    let ns = unique_ns("keys");
    let keys = [
        "ключ",
        "🔑/😀",
        "a\0b",
        "line\nbreak",
        " spaced ",
        "glob*?[]\\",
        "stratus:kv:other",
        "%2F..%00",
    ];
    let binary: Vec<u8> = (0..=255u8).collect();
    for key in keys {
        kv.set(&ns, key, &binary).await.unwrap();
    }
    for key in keys {
        assert_eq!(
            kv.get(&ns, key).await.unwrap().as_deref(),
            Some(binary.as_slice()),
            "key {key:?}"
        );
    }
    let listed: BTreeSet<String> = kv
        .list_keys(&ns, None)
        .await
        .unwrap()
        .keys
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(listed, expected);
}

macro_rules! conformance {
    ($provider:ident, $open:expr) => {
        mod $provider {
            use super::*;
            conformance!(@case $open; crud, namespaces_are_isolated, list_keys_pages_with_cursors,
                batch_ops, increment, compare_and_swap, concurrent_writers, large_values,
                large_values_under_concurrent_writers, unusual_keys_and_binary_values);
        }
    };
    (@case $open:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let kv = $open;
                tokio::time::timeout(Duration::from_secs(120), super::$case(kv))
                    .await
                    .expect("conformance case hung");
            }
        )*
    };
}

conformance!(memory, open("memory").await);
conformance!(embedded, open("embedded").await);
conformance!(redis, open(&format!("redis:url={}", redis_url())).await);
conformance!(dynamo, open(&dynamo_spec()).await);

/// DynamoDB keeps a large value's chunks beside the keys, in `#chunks:NS`: every way of
/// replacing or removing a large value, and a compare-and-swap that loses, removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_large_values_leave_no_chunks_behind() {
    let kv = open(&dynamo_spec()).await;
    let ns = unique_ns("chunks");
    let chunks = format!("#chunks:{ns}");
    let (a, b) = (pattern(1 << 20, 5), pattern(1 << 20, 6));

    kv.set(&ns, "k", &a).await.unwrap();
    assert!(
        !all_keys(&kv, &chunks).await.is_empty(),
        "a 1 MiB value was not chunked where this test looks"
    );
    kv.set(&ns, "k", &b).await.unwrap();
    kv.set(&ns, "k", b"small").await.unwrap();
    assert_eq!(all_keys(&kv, &chunks).await, BTreeSet::new());

    kv.set(&ns, "k", &a).await.unwrap();
    assert!(!kv.compare_and_swap(&ns, "k", Some(&b), &b).await.unwrap());
    assert!(!kv.compare_and_swap(&ns, "k", Some(b"x"), &b).await.unwrap());
    assert!(kv.compare_and_swap(&ns, "k", Some(&a), &b).await.unwrap());
    kv.delete(&ns, "k").await.unwrap();
    assert_eq!(all_keys(&kv, &chunks).await, BTreeSet::new());

    kv.set_many(
        &ns,
        &[("x".to_string(), a.clone()), ("y".to_string(), b.clone())],
    )
    .await
    .unwrap();
    kv.set_many(&ns, &[("x".to_string(), b"small".to_vec())])
        .await
        .unwrap();
    kv.delete_many(&ns, &["y".to_string()]).await.unwrap();
    assert_eq!(all_keys(&kv, &chunks).await, BTreeSet::new());
    assert_eq!(
        kv.get(&ns, "x").await.unwrap().as_deref(),
        Some(&b"small"[..])
    );
}

#[tokio::test]
async fn a_redis_that_is_down_is_an_error_not_a_hang() {
    let spec: ProviderSpec = "redis:url=redis://127.0.0.1:1".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        keyvalue::open_provider(&spec, dir.path()),
    )
    .await
    .expect("connecting to a dead Redis hung");
    let err = result.err().expect("connected to nothing").to_string();
    assert!(
        err.contains("127.0.0.1:1"),
        "error does not say where: {err}"
    );
}

/// A Redis user the server refuses the namespace's hash: the guest gets `access-denied`.
#[tokio::test]
async fn a_redis_user_without_permission_gets_access_denied() {
    let admin = ::redis::Client::open(redis_url()).unwrap();
    let mut conn = admin.get_multiplexed_async_connection().await.unwrap();
    let user = format!("stratus-test-{}", uuid::Uuid::new_v4().simple());
    ::redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            &user,
            "on",
            ">not-a-secret",
            "~elsewhere:*",
            "+@all",
        ])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let url = redis_url().replacen("redis://", &format!("redis://{user}:not-a-secret@"), 1);
    let kv = open(&format!("redis:url={url}")).await;
    let result = kv.get(&unique_ns("acl"), "k").await;
    ::redis::cmd("ACL")
        .arg(&["DELUSER", &user])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, KvError::AccessDenied(_)), "{err}");
}

/// A DynamoDB table deleted under an open provider: the guest gets `no-such-store`.
#[tokio::test]
async fn a_dynamo_table_that_is_gone_is_no_such_store() {
    let endpoint = aws_endpoint();
    let table = format!("stratus-gone-{}", uuid::Uuid::new_v4().simple());
    let kv = open(&format!(
        "dynamo:table={table},region=us-east-1,endpoint={endpoint}"
    ))
    .await;
    let ns = unique_ns("gone");
    kv.set(&ns, "k", b"v").await.unwrap();
    let sdk = stratus_worker::capabilities::aws::sdk_config(
        Some("us-east-1"),
        Some(&endpoint),
        None,
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let err = kv.get(&ns, "k").await.unwrap_err();
    assert!(matches!(err, KvError::NoSuchStore(_)), "{err}");
}

/// An HTTP relay to the AWS emulator that loses the answer to the first conditional put:
/// the put lands, and the client sees its connection close before any answer. The flag
/// says whether it has lost one yet.
async fn relay_losing_first_conditional_answer(
    target: String,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lost = Arc::new(AtomicBool::new(false));
    let lost_any = lost.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (target, lost) = (target.clone(), lost.clone());
            tokio::spawn(async move {
                let mut inbound = BufReader::new(inbound);
                let mut outbound = BufReader::new(TcpStream::connect(&target).await.unwrap());
                while let Some(request) = read_http_message(&mut inbound).await {
                    outbound.get_mut().write_all(&request).await.unwrap();
                    let Some(response) = read_http_message(&mut outbound).await else {
                        return;
                    };
                    let conditional = request
                        .windows(b"ConditionExpression".len())
                        .any(|w| w == b"ConditionExpression");
                    if conditional && !lost.swap(true, Ordering::SeqCst) {
                        return;
                    }
                    inbound.get_mut().write_all(&response).await.unwrap();
                }
            });
        }
    });
    (addr, lost_any)
}

/// One HTTP/1.1 message with a `Content-Length` body, as the SDK and moto send them.
async fn read_http_message(
    from: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> Option<Vec<u8>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut message = Vec::new();
    let mut length = 0;
    loop {
        let mut line = Vec::new();
        if from.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(value) = text.strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        message.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let head = message.len();
    message.resize(head + length, 0);
    from.read_exact(&mut message[head..]).await.ok()?;
    Some(message)
}

/// The SDK retries a put whose answer was lost; the retry then fails its condition
/// against the put's own first attempt. That is a swap that happened, not a lost race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamo_swap_whose_answer_was_lost_still_reports_the_swap() {
    let endpoint = aws_endpoint();
    let target = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let (relay, lost) = relay_losing_first_conditional_answer(target.to_string()).await;
    let kv = open(&format!(
        "dynamo:table=stratus-conformance,region=us-east-1,endpoint=http://{relay}"
    ))
    .await;
    let ns = unique_ns("lost-answer");
    let swapped = tokio::time::timeout(
        Duration::from_secs(60),
        kv.compare_and_swap(&ns, "k", None, b"v1"),
    )
    .await
    .expect("the swap hung");
    assert!(
        lost.load(std::sync::atomic::Ordering::SeqCst),
        "the relay never lost an answer, so nothing was retried"
    );
    assert_eq!(kv.get(&ns, "k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert!(swapped.unwrap(), "a swap that landed was reported as lost");
}
