//! Amazon SQS source (standard and FIFO queues), with the queue's own redrive policy
//! where it has one.
//!
//! SQS counts receives itself (`ApproximateReceiveCount`) and, with a redrive policy,
//! moves a message past `maxReceiveCount` to its dead-letter queue on its own; the
//! consumer then never moves one itself. Bodies are text: one that is not UTF-8 is sent
//! base64-encoded with the attribute `stratus-encoding=base64` and decoded on receipt.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use base64::Engine as _;

use super::{Delivery, OpenOptions, Outgoing, QueueError, QueueSource, Receipt};

const ENCODING: &str = "stratus-encoding";
const CONTENT_TYPE: &str = "content-type";

pub struct SqsSource {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    visibility: Duration,
    native_redrive: bool,
}

fn error<E, R>(e: aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = crate::capabilities::aws::error_message(&e);
    let missing = e
        .as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|code| {
            code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist")
        });
    if missing {
        QueueError::NotFound(format!("sqs: {message}"))
    } else {
        QueueError::Unavailable(format!("sqs: {message}"))
    }
}

/// Seconds SQS accepts for a visibility timeout or delay (0 to 12 hours), rounded up.
fn seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.min(43_200)).unwrap_or(43_200)
}

/// Sends one message to the queue at `url`.
async fn send_message(
    client: &aws_sdk_sqs::Client,
    url: &str,
    message: Outgoing,
) -> Result<(), QueueError> {
    let (body, encoded) = match String::from_utf8(message.body) {
        Ok(text) => (text, false),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            true,
        ),
    };
    let mut request = client.send_message().queue_url(url).message_body(body);
    if encoded {
        request = request.message_attributes(
            ENCODING,
            string_attribute("base64").ok_or_else(|| QueueError::Config("attribute".into()))?,
        );
    }
    if let Some(ct) = &message.content_type
        && let Some(v) = string_attribute(ct)
    {
        request = request.message_attributes(CONTENT_TYPE, v);
    }
    for (k, v) in &message.attributes {
        if let Some(v) = string_attribute(v) {
            request = request.message_attributes(k, v);
        }
    }
    if url.ends_with(".fifo") {
        let group = message
            .group
            .clone()
            .ok_or_else(|| QueueError::Config("a FIFO queue needs a message group".into()))?;
        request = request
            .message_group_id(group)
            .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string());
    }
    request.send().await.map(|_| ()).map_err(error)
}

async fn client() -> aws_sdk_sqs::Client {
    let sdk = crate::capabilities::aws::sdk_config(
        None,
        None,
        None,
        Duration::from_secs(3),
        // A receive long-polls up to 20 s.
        Duration::from_secs(25),
    )
    .await;
    aws_sdk_sqs::Client::new(&sdk)
}

/// A `messaging=sqs:queue_url=…` binding: every topic to that queue.
pub struct SqsProducer {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsProducer {
    pub async fn connect(queue_url: &str) -> Self {
        Self {
            client: client().await,
            queue_url: queue_url.to_string(),
        }
    }
}

#[async_trait]
impl crate::capabilities::messaging::producer::Producer for SqsProducer {
    async fn send(&self, _topic: &str, message: Outgoing) -> Result<(), QueueError> {
        send_message(&self.client, &self.queue_url, message).await
    }
}

impl SqsSource {
    pub async fn open(queue_url: &str, options: OpenOptions) -> Result<Self, QueueError> {
        let client = client().await;
        let attributes = client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(error)?;
        let native_redrive = attributes
            .attributes()
            .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy));
        Ok(Self {
            client,
            queue_url: queue_url.to_string(),
            visibility: options.visibility,
            native_redrive,
        })
    }

    fn delivery(&self, m: aws_sdk_sqs::types::Message) -> Option<Delivery> {
        let receipt = m.receipt_handle?;
        let system = m.attributes.unwrap_or_default();
        let receive_count = system
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let group = system
            .get(&MessageSystemAttributeName::MessageGroupId)
            .cloned();
        let mut attributes = Vec::new();
        let mut content_type = None;
        let mut base64 = false;
        for (name, value) in m.message_attributes.unwrap_or_default() {
            let Some(value) = value.string_value else {
                continue;
            };
            match name.as_str() {
                CONTENT_TYPE => content_type = Some(value),
                ENCODING => base64 = value == "base64",
                _ => attributes.push((name, value)),
            }
        }
        let text = m.body.unwrap_or_default();
        let body = if base64 {
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .unwrap_or_else(|_| text.into_bytes())
        } else {
            text.into_bytes()
        };
        Some(Delivery {
            id: m.message_id.unwrap_or_default(),
            body,
            content_type,
            attributes,
            receive_count,
            group,
            receipt: Receipt(receipt),
        })
    }

    async fn change_visibility(&self, receipt: &Receipt, d: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(seconds(d))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| match error(e) {
                // A receipt whose visibility already lapsed is no longer valid.
                QueueError::Unavailable(m) if m.contains("ReceiptHandle") => QueueError::Lost(m),
                other => other,
            })
    }
}

fn string_attribute(value: &str) -> Option<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .ok()
}

#[async_trait]
impl QueueSource for SqsSource {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(seconds(wait).min(20))
            .visibility_timeout(seconds(self.visibility))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(error)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| self.delivery(m))
            .collect())
    }

    async fn ack(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(&receipt.0)
            .send()
            .await
            .map(|_| ())
            .map_err(error)
    }

    async fn retry(&self, receipt: &Receipt, delay: Duration) -> Result<(), QueueError> {
        self.change_visibility(receipt, delay).await
    }

    async fn extend(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.change_visibility(receipt, self.visibility).await
    }

    async fn send(&self, to: Option<&str>, message: Outgoing) -> Result<(), QueueError> {
        send_message(&self.client, to.unwrap_or(&self.queue_url), message).await
    }

    fn native_redrive(&self) -> bool {
        self.native_redrive
    }

    async fn backlog(&self) -> Option<u64> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()?;
        out.attributes()?
            .get(&QueueAttributeName::ApproximateNumberOfMessages)?
            .parse()
            .ok()
    }
}

impl std::fmt::Debug for SqsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSource")
            .field("queue_url", &self.queue_url)
            .finish()
    }
}
