//! Queue consumers: one per queue trigger an app has on this worker, handing each
//! message to the app and acknowledging it only once its handler succeeded.
//!
//! - Messages are received only for free slots of the trigger's concurrency, so a
//!   message never waits in the worker for a slot (burning its visibility and its
//!   receives); a batch is as many as are free, up to `batch_size`, filled for up to
//!   `window_ms` once its first message is in.
//! - Each message runs in its own invocation; its result is its acknowledgement, so a
//!   batch's failures return alone. While a handler runs its message's visibility is
//!   extended every third of the period: a slow message is never delivered twice.
//! - A failure makes the message visible again after the trigger's backoff; past
//!   `max_receives` it goes to the dead-letter queue (or the source's own redrive).
//! - FIFO: a group's messages run one at a time in order; when one fails, the rest of
//!   its group in the batch go back with it.
//! - A source that cannot be opened or read puts the trigger in a failing state with
//!   the reason, and is tried again with backoff; nothing crashes and nothing spins.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratus_proto::triggers::QueueTrigger;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::capabilities::messaging::{MAX_MESSAGE_BYTES, Message};
use crate::queues::{self, Delivery, EmbeddedQueues, OpenOptions, Outgoing, QueueSource, Receipt};
use crate::runtime::{App, Event};

/// How long one receive waits for a first message before asking again.
const RECEIVE_WAIT: Duration = Duration::from_secs(5);
/// How long a message waits in the worker for a slot while the app or worker is full.
const OVERLOAD_PATIENCE: Duration = Duration::from_secs(30);
/// How often the backlog is asked for (it is a call to the source).
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// Backoff between attempts at a source that is down.
const SOURCE_BACKOFF_MIN: Duration = Duration::from_millis(200);
const SOURCE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a trigger reports: whether it reads its source, and what it has done.
#[derive(Debug, Default)]
pub struct TriggerStatus {
    failing: Mutex<Option<String>>,
    pub in_flight: AtomicU32,
    pub handled: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub backlog: AtomicU64,
    /// Woken each time a message is handled (benchmarks wait on it).
    pub handled_signal: tokio::sync::Notify,
}

impl TriggerStatus {
    /// `None` while the trigger reads its source; the reason while it cannot.
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_failing(&self, reason: Option<String>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }
}

/// A running consumer; stops when dropped.
pub struct QueueConsumer {
    pub trigger: QueueTrigger,
    pub concurrency: u32,
    pub status: Arc<TriggerStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for QueueConsumer {
    fn drop(&mut self) {
        // Messages in flight stay unacknowledged and reappear after their visibility.
        self.task.abort();
    }
}

impl QueueConsumer {
    /// Starts consuming for `app`, with `concurrency` of the trigger's handlers on this
    /// worker. `consumer` names the durable consumer (`TENANT.APP.TRIGGER`).
    pub fn start(
        app: Arc<App>,
        trigger: QueueTrigger,
        concurrency: u32,
        consumer: String,
        embedded: EmbeddedQueues,
    ) -> Self {
        let status = Arc::new(TriggerStatus::default());
        let run = Run {
            visibility: trigger.visibility_for(app.timeout()),
            app,
            trigger: trigger.clone(),
            concurrency: concurrency.max(1),
            consumer,
            status: status.clone(),
            held: Mutex::default(),
        };
        let task = tokio::spawn(run.run(embedded));
        Self {
            trigger,
            concurrency,
            status,
            task,
        }
    }
}

struct Run {
    app: Arc<App>,
    trigger: QueueTrigger,
    concurrency: u32,
    consumer: String,
    visibility: Duration,
    status: Arc<TriggerStatus>,
    /// Deliveries received and not yet settled: their visibility is extended every
    /// third of the period, whether they run, wait for the batch window or wait behind
    /// an earlier message of their FIFO group.
    held: Mutex<HashSet<Receipt>>,
}

/// Doubling delays between attempts at a failing source.
struct Retry(Duration);

impl Retry {
    fn new() -> Self {
        Self(SOURCE_BACKOFF_MIN)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(SOURCE_BACKOFF_MAX);
    }
}

impl Run {
    async fn run(self, embedded: EmbeddedQueues) {
        let name = self.consumer.clone();
        let options = OpenOptions {
            consumer: self.consumer.clone(),
            visibility: self.visibility,
            fifo: self.trigger.fifo,
            max_in_flight: self.concurrency,
            pool_in_flight: self.trigger.max_concurrency,
        };
        let mut retry = Retry::new();
        let source = loop {
            match queues::open(&self.trigger, options.clone(), &embedded).await {
                Ok(source) => break source,
                Err(e) => {
                    tracing::warn!(trigger = %name, error = %e, "cannot open the queue; retrying");
                    self.status.set_failing(Some(e.to_string()));
                    retry.wait().await;
                }
            }
        };
        self.status.set_failing(None);
        tracing::info!(trigger = %name, concurrency = self.concurrency, "queue consumer started");
        let this = Arc::new(self);
        // Both end with this task (the consumer dropped).
        tokio::select! {
            () = this.clone().consume(source.clone()) => {}
            () = this.extend_held(source) => {}
        }
    }

    /// Extends every held delivery every third of the visibility period.
    async fn extend_held(&self, source: Arc<dyn QueueSource>) {
        loop {
            tokio::time::sleep(self.visibility / 3).await;
            let held: Vec<Receipt> = self.held().iter().cloned().collect();
            let extended = held.iter().map(|r| source.extend(r));
            for (receipt, outcome) in held.iter().zip(futures::future::join_all(extended).await) {
                match outcome {
                    // Settled meanwhile.
                    Ok(()) | Err(queues::QueueError::Lost(_)) => {}
                    Err(e) if self.held().contains(receipt) => {
                        tracing::warn!(trigger = %self.consumer, error = %e, "extending visibility failed");
                    }
                    Err(_) => {}
                }
            }
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<Receipt>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settle(&self, receipt: &Receipt) {
        self.held().remove(receipt);
    }

    async fn consume(self: Arc<Self>, source: Arc<dyn QueueSource>) {
        let this = self;
        let name = this.consumer.clone();
        let slots = Arc::new(Semaphore::new(this.concurrency as usize));
        let mut retry = Retry::new();
        let mut backlog_at = tokio::time::Instant::now() - BACKLOG_EVERY;
        loop {
            // Slots first: what is received is handled at once.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut held = vec![first];
            while held.len() < this.trigger.batch_size as usize {
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => held.push(slot),
                    Err(_) => break,
                }
            }
            let batch = match this.receive_batch(&*source, held.len()).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(trigger = %name, error = %e, "receiving failed; retrying");
                    this.status.set_failing(Some(e.to_string()));
                    drop(held);
                    retry.wait().await;
                    continue;
                }
            };
            if this.status.failing().is_some() {
                tracing::info!(trigger = %name, "queue source reachable again");
                this.status.set_failing(None);
            }
            retry = Retry::new();
            this.dispatch(source.clone(), batch, held);
            if backlog_at.elapsed() >= BACKLOG_EVERY {
                backlog_at = tokio::time::Instant::now();
                if let Some(backlog) = source.backlog().await {
                    this.status.backlog.store(backlog, Ordering::Relaxed);
                }
            }
        }
    }

    /// Up to `want` messages: the first within [`RECEIVE_WAIT`], then more for up to
    /// the batch window.
    async fn receive_batch(
        &self,
        source: &dyn QueueSource,
        want: usize,
    ) -> Result<Vec<Delivery>, queues::QueueError> {
        let mut batch = source.receive(want, RECEIVE_WAIT).await?;
        self.held().extend(batch.iter().map(|d| d.receipt.clone()));
        if batch.is_empty() || self.trigger.batch_window.is_zero() {
            return Ok(batch);
        }
        let until = tokio::time::Instant::now() + self.trigger.batch_window;
        while batch.len() < want {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match source.receive(want - batch.len(), left).await {
                Ok(more) => {
                    self.held().extend(more.iter().map(|d| d.receipt.clone()));
                    batch.extend(more);
                }
                // What is in hand is handled; the next receive reports the failure.
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Starts the batch's handlers, one slot each; FIFO groups run in order on one.
    fn dispatch(
        self: &Arc<Self>,
        source: Arc<dyn QueueSource>,
        batch: Vec<Delivery>,
        mut slots: Vec<OwnedSemaphorePermit>,
    ) {
        if !self.trigger.fifo {
            for delivery in batch {
                let slot = slots.pop();
                let (this, source) = (self.clone(), source.clone());
                tokio::spawn(async move {
                    this.handle(&*source, delivery).await;
                    drop(slot);
                });
            }
            return;
        }
        let mut groups: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for delivery in batch {
            groups
                .entry(delivery.group.clone().unwrap_or_default())
                .or_default()
                .push(delivery);
        }
        for (_, group) in groups {
            let slot = slots.pop();
            let (this, source) = (self.clone(), source.clone());
            tokio::spawn(async move {
                let mut rest = group.into_iter();
                while let Some(delivery) = rest.next() {
                    if let Some(delay) = this.handle(&*source, delivery).await {
                        // Keep the group's order: what follows goes back behind it.
                        for later in rest.by_ref() {
                            this.settle(&later.receipt);
                            let _ = source.retry(&later.receipt, delay).await;
                        }
                    }
                }
                drop(slot);
            });
        }
    }

    /// Handles one delivery and settles it; returns the delay it was sent back with, if
    /// it failed.
    async fn handle(&self, source: &dyn QueueSource, delivery: Delivery) -> Option<Duration> {
        let outcome = self.try_handle(source, &delivery).await;
        self.settle(&delivery.receipt);
        outcome
    }

    async fn try_handle(&self, source: &dyn QueueSource, delivery: &Delivery) -> Option<Duration> {
        let native = source.native_redrive();
        if delivery.receive_count > self.trigger.max_receives && !native {
            // Received too often without an outcome (a worker died holding it).
            self.dead_letter(source, delivery, "received more than max_receives times")
                .await;
            return None;
        }
        if delivery.body.len() > MAX_MESSAGE_BYTES {
            self.dead_letter(
                source,
                delivery,
                &format!("the body is over the {MAX_MESSAGE_BYTES}-byte message limit"),
            )
            .await;
            return None;
        }
        self.status.in_flight.fetch_add(1, Ordering::Relaxed);
        // The worker being full is not the message's fault: it waits here (its
        // visibility extended) rather than going back and spending a receive.
        let patience = tokio::time::Instant::now() + OVERLOAD_PATIENCE;
        let outcome = loop {
            // Built per attempt from the delivery: one copy of the body on the usual path.
            match self
                .app
                .handle_event(Event::Message(self.message(delivery)))
                .await
            {
                Err(e) if e.is_overload() && tokio::time::Instant::now() < patience => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        };
        self.status.in_flight.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                self.status.handled.fetch_add(1, Ordering::Relaxed);
                self.status.handled_signal.notify_waiters();
                if let Err(e) = source.ack(&delivery.receipt).await {
                    // It will be delivered again: at least once.
                    tracing::warn!(trigger = %self.consumer, message = %delivery.id, error = %e, "acknowledging failed");
                }
                None
            }
            Err(e) => {
                self.status.failed.fetch_add(1, Ordering::Relaxed);
                if !native
                    && !e.is_overload()
                    && delivery.receive_count >= self.trigger.max_receives
                {
                    self.dead_letter(source, delivery, &e.to_string()).await;
                    return None;
                }
                let delay = if e.is_overload() {
                    Duration::from_secs(1)
                } else {
                    self.trigger.backoff.delay(delivery.receive_count)
                };
                if let Err(e) = source.retry(&delivery.receipt, delay).await {
                    tracing::warn!(trigger = %self.consumer, message = %delivery.id, error = %e, "returning a failed message failed; it reappears after its visibility");
                }
                Some(delay)
            }
        }
    }

    /// Moves a message to the dead-letter queue (or drops it, logged, without one) and
    /// acknowledges it.
    async fn dead_letter(&self, source: &dyn QueueSource, delivery: &Delivery, reason: &str) {
        if let Some(to) = &self.trigger.dead_letter {
            let mut attributes = delivery.attributes.clone();
            attributes.push((
                "stratus-dead-letter-reason".into(),
                reason.chars().take(256).collect(),
            ));
            attributes.push((
                "stratus-receive-count".into(),
                delivery.receive_count.to_string(),
            ));
            attributes.push(("stratus-original-id".into(), delivery.id.clone()));
            let message = Outgoing {
                body: delivery.body.clone(),
                content_type: delivery.content_type.clone(),
                attributes,
                group: delivery.group.clone(),
            };
            if let Err(e) = source.send(Some(to), message).await {
                // Not acknowledged: it stays in the queue and is moved next time.
                tracing::warn!(trigger = %self.consumer, message = %delivery.id, error = %e, "moving to the dead-letter queue failed");
                let _ = source
                    .retry(&delivery.receipt, Duration::from_secs(5))
                    .await;
                return;
            }
            tracing::info!(trigger = %self.consumer, message = %delivery.id, dead_letter = %to, reason, "message dead-lettered");
        } else {
            tracing::warn!(trigger = %self.consumer, message = %delivery.id, reason, "message dropped after max_receives (the trigger has no dead_letter)");
        }
        self.status.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = source.ack(&delivery.receipt).await {
            tracing::warn!(trigger = %self.consumer, message = %delivery.id, error = %e, "acknowledging a dead-lettered message failed");
        }
    }

    /// The message as the guest sees it: body, content type, the producer's attributes
    /// and what the platform knows of the delivery.
    fn message(&self, delivery: &Delivery) -> Message {
        let mut metadata = delivery.attributes.clone();
        metadata.push(("message-id".into(), delivery.id.clone()));
        metadata.push(("receive-count".into(), delivery.receive_count.to_string()));
        metadata.push(("source".into(), self.trigger.source.tag().into()));
        metadata.push(("trigger".into(), self.trigger.name.clone()));
        if let Some(group) = &delivery.group {
            metadata.push(("group".into(), group.clone()));
        }
        Message {
            topic: Some(self.trigger.name.clone()),
            content_type: delivery.content_type.clone(),
            data: delivery.body.clone(),
            metadata,
        }
    }
}
