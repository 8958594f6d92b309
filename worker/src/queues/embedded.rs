//! The embedded durable queue (redb): for `fnctl up` and `fnctl dev`, no server needed.
//!
//! Messages live in one table keyed by `(queue, sequence)`, each with its receive count
//! and the time it is next visible, so both survive a restart (a message received and
//! not acknowledged by a killed process is delivered again once its visibility lapses).
//! Each queue also keeps an index in memory (which messages are visible when, and who
//! holds them) so a receive is a scan of that index and one write transaction.
//!
//! The file is held by one process (`fnctl up`, `fnctl dev` or a worker); `fnctl queue
//! send` leaves messages in the data directory's spool (`queues-inbox/QUEUE/`, each
//! written whole and synced before it is renamed into place), which the holding process
//! moves into the queue every 100 ms, deleting each file only once it is stored.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

use super::{Delivery, OpenOptions, Outgoing, QueueError, QueueSource, Receipt};
use crate::capabilities::messaging::MAX_MESSAGE_BYTES;

const TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// Each queue's next sequence number, so message ids are never reused, even once every
/// message of a queue has been acknowledged and the process restarted.
const NEXT_SEQ: TableDefinition<&str, u64> = TableDefinition::new("queue_next_seq");

/// Longest queue name held here: a tenant's prefix and the trigger's name.
const MAX_NAME: usize = 255;

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_size(message: &Outgoing) -> Result<(), QueueError> {
    if message.body.len() > MAX_MESSAGE_BYTES {
        return Err(QueueError::Config(format!(
            "a message body is at most {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn err(e: impl Into<redb::Error>) -> QueueError {
    QueueError::Unavailable(format!("embedded queue: {}", e.into()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A stored message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    receive_count: u32,
    visible_at: u64,
    content_type: Option<String>,
    group: Option<String>,
    attributes: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        fn put_str(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut out = Vec::with_capacity(32 + self.body.len());
        out.extend_from_slice(&self.receive_count.to_le_bytes());
        out.extend_from_slice(&self.visible_at.to_le_bytes());
        for opt in [&self.content_type, &self.group] {
            out.push(u8::from(opt.is_some()));
            put_str(&mut out, opt.as_deref().unwrap_or(""));
        }
        out.extend_from_slice(&(self.attributes.len() as u32).to_le_bytes());
        for (k, v) in &self.attributes {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(head)
        }
        fn u32_of(bytes: &mut &[u8]) -> Option<u32> {
            Some(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?))
        }
        fn str_of(bytes: &mut &[u8]) -> Option<String> {
            let n = u32_of(bytes)? as usize;
            String::from_utf8(take(bytes, n)?.to_vec()).ok()
        }
        let receive_count = u32_of(&mut bytes)?;
        let visible_at = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let mut opts = [None, None];
        for slot in &mut opts {
            let present = take(&mut bytes, 1)?.first().copied()? == 1;
            let s = str_of(&mut bytes)?;
            *slot = present.then_some(s);
        }
        let [content_type, group] = opts;
        let n = u32_of(&mut bytes)?;
        let mut attributes = Vec::new();
        for _ in 0..n {
            attributes.push((str_of(&mut bytes)?, str_of(&mut bytes)?));
        }
        Some(Record {
            receive_count,
            visible_at,
            content_type,
            group,
            attributes,
            body: bytes.to_vec(),
        })
    }
}

/// What the index keeps of a message.
#[derive(Debug, Clone)]
struct Entry {
    visible_at: u64,
    group: Option<String>,
    /// The current delivery's token; 0 when nobody holds the message.
    lease: u64,
}

/// One queue's index and the receivers waiting on it.
struct QueueState {
    entries: Mutex<BTreeMap<u64, Entry>>,
    next_seq: Mutex<u64>,
    arrived: Notify,
}

/// The embedded queues of one data directory.
pub struct EmbeddedQueues {
    db: Arc<Database>,
    queues: Mutex<HashMap<String, Arc<QueueState>>>,
}

/// The spool directory of a data directory.
fn spool_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("queues-inbox")
}

/// Leaves `message` for queue `queue` in `data_dir`'s spool, for the process holding the
/// queues to take (what `fnctl queue send` does).
pub fn spool(data_dir: &Path, queue: &str, message: &Outgoing) -> Result<(), QueueError> {
    use std::io::Write;
    if !valid_name(queue) {
        return Err(QueueError::Config(format!("invalid queue name `{queue}`")));
    }
    check_size(message)?;
    let io = |e: std::io::Error| QueueError::Unavailable(format!("spooling: {e}"));
    let dir = spool_dir(data_dir).join(queue);
    std::fs::create_dir_all(&dir).map_err(io)?;
    let record = Record {
        content_type: message.content_type.clone(),
        group: message.group.clone(),
        attributes: message.attributes.clone(),
        body: message.body.clone(),
        ..Record::default()
    };
    // Named by time first, so the spool is taken in the order it was written.
    let name = format!("{:020}-{}", now_ms(), uuid::Uuid::new_v4().simple());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&record.encode()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.msg"))).map_err(io)
}

/// A `messaging=embedded` binding: sends through the spool, so a function reaches the
/// queues of the process that holds them (itself, or `fnctl up` for `fnctl dev`), and
/// what it sent is on disk before `send` returns.
pub struct SpoolProducer {
    pub data_dir: std::path::PathBuf,
    /// Deployed apps' queue names are their tenant's own.
    pub tenant: Option<String>,
    /// Every topic to this queue, or each topic to the queue of its name.
    pub queue: Option<String>,
}

#[async_trait]
impl crate::capabilities::messaging::producer::Producer for SpoolProducer {
    async fn send(&self, topic: &str, message: Outgoing) -> Result<(), QueueError> {
        let queue = self.queue.as_deref().unwrap_or(topic);
        let name = match &self.tenant {
            Some(t) => format!("{t}.{queue}"),
            None => queue.to_string(),
        };
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || spool(&dir, &name, &message))
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?
    }
}

impl EmbeddedQueues {
    /// Moves what `fnctl queue send` spooled under `data_dir` into the queues, every
    /// 100 ms while the returned task runs.
    pub fn take_spool(self: &Arc<Self>, data_dir: &Path) -> tokio::task::JoinHandle<()> {
        let queues = self.clone();
        let dir = spool_dir(data_dir);
        tokio::spawn(async move {
            loop {
                if let Err(e) = queues.ingest(&dir).await {
                    tracing::warn!(dir = %dir.display(), error = %e, "taking spooled messages");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    async fn ingest(self: &Arc<Self>, dir: &Path) -> Result<(), QueueError> {
        let io = |e: std::io::Error| QueueError::Unavailable(format!("reading the spool: {e}"));
        let Ok(queues) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for queue in queues {
            let queue = queue.map_err(io)?;
            let name = queue.file_name().to_string_lossy().into_owned();
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(queue.path())
                .map_err(io)?
                .filter_map(|f| f.ok().map(|f| f.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "msg"))
                .collect();
            files.sort();
            for file in files {
                let bytes = std::fs::read(&file).map_err(io)?;
                match Record::decode(&bytes) {
                    Some(record) => {
                        let message = Outgoing {
                            body: record.body,
                            content_type: record.content_type,
                            attributes: record.attributes,
                            group: record.group,
                        };
                        self.send(&name, message).await?;
                    }
                    None => {
                        tracing::warn!(file = %file.display(), "dropping an unreadable spooled message")
                    }
                }
                std::fs::remove_file(&file).map_err(io)?;
            }
        }
        Ok(())
    }

    pub fn open(path: &Path) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| QueueError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| QueueError::Unavailable(format!("opening {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(TABLE).map_err(err)?;
        txn.open_table(NEXT_SEQ).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self {
            db: Arc::new(db),
            queues: Mutex::default(),
        })
    }

    fn state(&self, queue: &str) -> Result<Arc<QueueState>, QueueError> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = queues.get(queue) {
            return Ok(state.clone());
        }
        // Load the index once per process: every later change goes through it.
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TABLE).map_err(err)?;
        let mut entries = BTreeMap::new();
        let mut next_seq = txn
            .open_table(NEXT_SEQ)
            .map_err(err)?
            .get(queue)
            .map_err(err)?
            .map_or(1, |v| v.value());
        for item in table.range((queue, 0)..=(queue, u64::MAX)).map_err(err)? {
            let (key, value) = item.map_err(err)?;
            let (_, seq) = key.value();
            let Some(record) = Record::decode(value.value()) else {
                tracing::warn!(queue, seq, "skipping an unreadable embedded queue record");
                continue;
            };
            next_seq = next_seq.max(seq + 1);
            entries.insert(
                seq,
                Entry {
                    visible_at: record.visible_at,
                    group: record.group,
                    lease: 0,
                },
            );
        }
        let state = Arc::new(QueueState {
            entries: Mutex::new(entries),
            next_seq: Mutex::new(next_seq),
            arrived: Notify::new(),
        });
        queues.insert(queue.to_string(), state.clone());
        Ok(state)
    }

    /// A consumer's (or producer's) handle on queue `name`.
    pub fn queue(
        self: &Arc<Self>,
        name: &str,
        options: OpenOptions,
    ) -> Result<EmbeddedQueue, QueueError> {
        if !valid_name(name) {
            return Err(QueueError::Config(format!("invalid queue name `{name}`")));
        }
        Ok(EmbeddedQueue {
            queues: self.clone(),
            name: name.to_string(),
            state: self.state(name)?,
            options,
        })
    }

    /// Enqueues a message on queue `name` (what `fnctl queue send` does).
    pub async fn send(self: &Arc<Self>, name: &str, message: Outgoing) -> Result<(), QueueError> {
        let queue = self.queue(
            name,
            OpenOptions {
                consumer: String::new(),
                visibility: Duration::ZERO,
                fifo: false,
                max_in_flight: 1,
                pool_in_flight: 1,
            },
        )?;
        queue.send(None, message).await
    }

    /// Messages in queue `name`, visible or not.
    pub fn len(&self, name: &str) -> Result<usize, QueueError> {
        Ok(self
            .state(name)?
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len())
    }

    /// Runs `f` in a write transaction off the async threads (redb is synchronous and
    /// fsyncs on commit).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, (&str, u64), &[u8]>) -> Result<T, QueueError>
        + Send
        + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(err)?;
            let out = {
                let mut table = txn.open_table(TABLE).map_err(err)?;
                f(&mut table)?
            };
            txn.commit().map_err(err)?;
            Ok(out)
        })
        .await
        .map_err(|e| QueueError::Unavailable(e.to_string()))?
    }
}

/// One queue of [`EmbeddedQueues`], as a consumer opened it.
pub struct EmbeddedQueue {
    queues: Arc<EmbeddedQueues>,
    name: String,
    state: Arc<QueueState>,
    options: OpenOptions,
}

fn parse_receipt(receipt: &Receipt) -> Option<(u64, u64)> {
    let (seq, lease) = receipt.0.split_once(':')?;
    Some((seq.parse().ok()?, lease.parse().ok()?))
}

impl EmbeddedQueue {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.state.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims up to `max` visible messages in the index; returns their sequence numbers
    /// and leases, or when the next hidden one becomes visible.
    fn claim(&self, max: usize, now: u64) -> (Vec<(u64, u64)>, Option<u64>) {
        let mut entries = self.entries();
        let visibility = self.options.visibility.as_millis() as u64;
        let mut claimed = Vec::new();
        let mut next_visible: Option<u64> = None;
        // FIFO: only a group's oldest message may go, and only when nobody holds it.
        let mut groups_seen = std::collections::HashSet::new();
        for (&seq, entry) in entries.iter_mut() {
            if claimed.len() >= max {
                break;
            }
            if self.options.fifo
                && let Some(group) = &entry.group
                && !groups_seen.insert(group.clone())
            {
                continue;
            }
            if entry.visible_at > now {
                next_visible =
                    Some(next_visible.map_or(entry.visible_at, |n| n.min(entry.visible_at)));
                continue;
            }
            let lease = rand_lease();
            entry.lease = lease;
            entry.visible_at = now + visibility;
            claimed.push((seq, lease));
        }
        (claimed, next_visible)
    }

    /// Applies `change` to the entry held under `receipt`, in the index and on disk.
    async fn with_held(&self, receipt: &Receipt, change: Held) -> Result<(), QueueError> {
        let (seq, lease) = parse_receipt(receipt)
            .ok_or_else(|| QueueError::Lost(format!("malformed receipt `{}`", receipt.0)))?;
        let now = now_ms();
        {
            let mut entries = self.entries();
            let held = entries
                .get(&seq)
                .is_some_and(|e| e.lease == lease && lease != 0);
            if !held {
                return Err(QueueError::Lost(format!(
                    "message {seq} of `{}`",
                    self.name
                )));
            }
            match change {
                Held::Ack => {
                    entries.remove(&seq);
                }
                Held::Extend(delay) | Held::Release(delay) => {
                    if let Some(entry) = entries.get_mut(&seq) {
                        entry.visible_at = now + delay;
                        if let Held::Release(_) = change {
                            entry.lease = 0;
                        }
                    }
                }
            }
        }
        let name = self.name.clone();
        self.queues
            .write(move |table| {
                match change {
                    Held::Ack => {
                        table.remove((name.as_str(), seq)).map_err(err)?;
                    }
                    Held::Extend(delay) | Held::Release(delay) => {
                        let record = table
                            .get((name.as_str(), seq))
                            .map_err(err)?
                            .and_then(|v| Record::decode(v.value()));
                        if let Some(mut record) = record {
                            record.visible_at = now + delay;
                            table
                                .insert((name.as_str(), seq), record.encode().as_slice())
                                .map_err(err)?;
                        }
                    }
                }
                Ok(())
            })
            .await?;
        if let Held::Release(_) = change {
            self.state.arrived.notify_waiters();
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Held {
    Ack,
    /// Still held, hidden for this many milliseconds more.
    Extend(u64),
    /// Let go, visible again after this many milliseconds.
    Release(u64),
}

fn rand_lease() -> u64 {
    // Never 0, which means "not held".
    (uuid::Uuid::new_v4().as_u128() as u64) | 1
}

#[async_trait]
impl QueueSource for EmbeddedQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let claimed = loop {
            let arrived = self.state.arrived.notified();
            let (claimed, next_visible) = self.claim(max.max(1), now_ms());
            if !claimed.is_empty() {
                break claimed;
            }
            let mut until = deadline;
            if let Some(at) = next_visible {
                let in_ms = at.saturating_sub(now_ms());
                until = until.min(tokio::time::Instant::now() + Duration::from_millis(in_ms));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout_at(until, arrived).await;
        };
        let name = self.name.clone();
        let visibility = self.options.visibility.as_millis() as u64;
        let now = now_ms();
        let records = self
            .queues
            .write(move |table| {
                let mut out = Vec::with_capacity(claimed.len());
                for (seq, lease) in claimed {
                    let record = table
                        .get((name.as_str(), seq))
                        .map_err(err)?
                        .and_then(|v| Record::decode(v.value()));
                    let Some(mut record) = record else { continue };
                    record.receive_count += 1;
                    record.visible_at = now + visibility;
                    table
                        .insert((name.as_str(), seq), record.encode().as_slice())
                        .map_err(err)?;
                    out.push((seq, lease, record));
                }
                Ok(out)
            })
            .await?;
        Ok(records
            .into_iter()
            .map(|(seq, lease, record)| Delivery {
                id: format!("{}-{seq}", self.name),
                body: record.body,
                content_type: record.content_type,
                attributes: record.attributes,
                receive_count: record.receive_count,
                group: record.group,
                receipt: Receipt(format!("{seq}:{lease}")),
            })
            .collect())
    }

    async fn ack(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.with_held(receipt, Held::Ack).await
    }

    async fn retry(&self, receipt: &Receipt, delay: Duration) -> Result<(), QueueError> {
        self.with_held(receipt, Held::Release(delay.as_millis() as u64))
            .await
    }

    async fn extend(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.with_held(
            receipt,
            Held::Extend(self.options.visibility.as_millis() as u64),
        )
        .await
    }

    async fn send(&self, to: Option<&str>, message: Outgoing) -> Result<(), QueueError> {
        if let Some(other) = to.filter(|t| *t != self.name) {
            return self.queues.send(other, message).await;
        }
        check_size(&message)?;
        if self.options.fifo && message.group.is_none() {
            return Err(QueueError::Config(
                "a FIFO queue needs a message group".into(),
            ));
        }
        let seq = {
            let mut next = self
                .state
                .next_seq
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let seq = *next;
            *next += 1;
            seq
        };
        let record = Record {
            receive_count: 0,
            visible_at: 0,
            content_type: message.content_type,
            group: message.group.clone(),
            attributes: message.attributes,
            body: message.body,
        };
        let name = self.name.clone();
        let db = self.queues.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(TABLE).map_err(err)?;
                table
                    .insert((name.as_str(), seq), record.encode().as_slice())
                    .map_err(err)?;
                let mut next = txn.open_table(NEXT_SEQ).map_err(err)?;
                let stored = next
                    .get(name.as_str())
                    .map_err(err)?
                    .map_or(0, |v| v.value());
                next.insert(name.as_str(), stored.max(seq + 1))
                    .map_err(err)?;
            }
            txn.commit().map_err(err)
        })
        .await
        .map_err(|e| QueueError::Unavailable(e.to_string()))??;
        // Indexed only once stored: a receiver never sees a message a crash could lose.
        self.entries().insert(
            seq,
            Entry {
                visible_at: 0,
                group: message.group,
                lease: 0,
            },
        );
        self.state.arrived.notify_waiters();
        Ok(())
    }

    async fn backlog(&self) -> Option<u64> {
        let now = now_ms();
        Some(
            self.entries()
                .values()
                .filter(|e| e.visible_at <= now)
                .count() as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncation_is_refused() {
        let record = Record {
            receive_count: 3,
            visible_at: 12345,
            content_type: Some("text/plain".into()),
            group: None,
            attributes: vec![("a".into(), "b".into())],
            body: b"hello".to_vec(),
        };
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record));
        for cut in 0..20 {
            assert!(
                Record::decode(bytes.get(..cut).unwrap_or_default()).is_none(),
                "{cut}"
            );
        }
    }
}
