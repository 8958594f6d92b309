//! Queue sources: where a queue trigger's messages come from. One trait, one file per
//! source (`embedded.rs`, `nats.rs`, `sqs.rs`), chosen by the trigger's type tag.
//!
//! Every source gives the same guarantees the consumer (`trigger/queue.rs`) builds on:
//! a received message is hidden from other consumers for the visibility period it was
//! opened with, and delivered again after it unless acknowledged; `extend` restarts that
//! period; `retry` makes it visible again after a delay; `ack` removes it for good. So a
//! worker killed mid-batch loses nothing: its messages reappear elsewhere.

pub mod embedded;
pub mod nats;
pub mod sqs;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stratus_proto::triggers::{QueueSource as SourceSpec, QueueTrigger};

/// One received message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The source's id for the message, stable across its deliveries.
    pub id: String,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// Headers or attributes the producer set.
    pub attributes: Vec<(String, String)>,
    /// 1 on the first delivery.
    pub receive_count: u32,
    /// The FIFO message group, where the source has one.
    pub group: Option<String>,
    /// What acknowledges this delivery (not the message: a later delivery of the same
    /// message has another).
    pub receipt: Receipt,
}

/// A source's handle on one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// A message to enqueue.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub attributes: Vec<(String, String)>,
    /// The FIFO group (required by FIFO queues).
    pub group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The source cannot be reached or refused the call; the trigger backs off and
    /// tries again.
    #[error("queue source unavailable: {0}")]
    Unavailable(String),
    /// The queue, stream or subject does not exist.
    #[error("queue not found: {0}")]
    NotFound(String),
    /// The delivery is no longer this consumer's (its visibility lapsed and another
    /// consumer may hold it); nothing to do but let the other finish.
    #[error("the delivery is no longer held: {0}")]
    Lost(String),
    #[error("invalid queue configuration: {0}")]
    Config(String),
}

/// What a consumer opens a source with.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// A durable consumer's name, unique per app and trigger (`TENANT.APP.TRIGGER`).
    pub consumer: String,
    /// How long a delivery stays hidden before it is delivered again.
    pub visibility: Duration,
    /// In-order delivery per message group.
    pub fifo: bool,
    /// Deliveries this consumer may hold at once (its share of the trigger's
    /// concurrency): what a source may fetch ahead.
    pub max_in_flight: u32,
    /// Deliveries the whole pool may hold at once (the trigger's concurrency): a source
    /// that can cap outstanding messages server-side does.
    pub pool_in_flight: u32,
}

#[async_trait]
pub trait QueueSource: Send + Sync + 'static {
    /// Up to `max` messages, waiting up to `wait` for the first.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Removes the message: its handler succeeded (or it went to the dead-letter queue).
    async fn ack(&self, receipt: &Receipt) -> Result<(), QueueError>;

    /// Makes the message visible again after `delay`.
    async fn retry(&self, receipt: &Receipt, delay: Duration) -> Result<(), QueueError>;

    /// Restarts the delivery's visibility period: its handler still runs.
    async fn extend(&self, receipt: &Receipt) -> Result<(), QueueError>;

    /// Sends a message to queue `to` of this source (a dead-letter queue, or the
    /// producer's destination); `None` sends to the source's own queue.
    async fn send(&self, to: Option<&str>, message: Outgoing) -> Result<(), QueueError>;

    /// Whether the source moves messages past their receives to a dead-letter queue
    /// itself (an SQS queue with a redrive policy), so the consumer must not.
    fn native_redrive(&self) -> bool {
        false
    }

    /// Messages waiting (not in flight), where the source can tell.
    async fn backlog(&self) -> Option<u64> {
        None
    }
}

/// Where a worker's embedded queues live; shared by the consumers and by `fnctl queue`.
pub type EmbeddedQueues = Arc<embedded::EmbeddedQueues>;

/// Opens a trigger's source.
pub async fn open(
    trigger: &QueueTrigger,
    options: OpenOptions,
    embedded: &EmbeddedQueues,
) -> Result<Arc<dyn QueueSource>, QueueError> {
    Ok(match &trigger.source {
        SourceSpec::Embedded { queue } => Arc::new(embedded.queue(queue, options)?),
        SourceSpec::Nats {
            url,
            stream,
            subject,
        } => Arc::new(nats::NatsSource::open(url, stream, subject.as_deref(), options).await?),
        SourceSpec::Sqs { queue_url } => Arc::new(sqs::SqsSource::open(queue_url, options).await?),
    })
}

/// Opens the embedded queues kept under `data_dir`.
pub fn open_embedded(data_dir: &Path) -> Result<EmbeddedQueues, QueueError> {
    Ok(Arc::new(embedded::EmbeddedQueues::open(
        &data_dir.join("queues.redb"),
    )?))
}

/// Opens the embedded queues kept under `data_dir` and starts taking what `fnctl queue
/// send` spools there (for the process that serves them).
pub fn serve_embedded(data_dir: &Path) -> Result<EmbeddedQueues, QueueError> {
    let queues = open_embedded(data_dir)?;
    // Runs as long as the process: the queues are the process's.
    drop(queues.take_spool(data_dir));
    Ok(queues)
}
