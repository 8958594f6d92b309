//! What a tenant's queue triggers may reach. A queue source is the operator's network
//! (and, for SQS, the worker's AWS credentials) acting for the tenant, like a binding:
//! a NATS server or an SQS endpoint must be on `[tenancy.endpoints.nats]` /
//! `[tenancy.endpoints.sqs]` (never link-local or metadata addresses), unless the
//! platform runs `direct_bindings` for one trusted user. Embedded queues are the
//! worker's own and namespaced by tenant there, so any name is fine.

use stratus_proto::triggers::{QueueSource, QueueTrigger};

use super::{Policy, PolicyError, refused};

impl Policy {
    /// Checks a queue trigger against the allow-lists.
    pub fn admit_queue(&self, trigger: &QueueTrigger) -> Result<(), PolicyError> {
        if self.config.direct_bindings {
            return Ok(());
        }
        let name = format!("queue trigger {}", trigger.name);
        let (provider, urls, schemes, port): (
            &'static str,
            Vec<&str>,
            &'static [&'static str],
            u16,
        ) = match &trigger.source {
            QueueSource::Embedded { .. } => return Ok(()),
            QueueSource::Nats { url, .. } => ("nats", vec![url.as_str()], &["nats", "tls"], 4222),
            QueueSource::Sqs { queue_url } => {
                let mut urls = vec![queue_url.as_str()];
                // An SQS dead-letter queue is a URL too.
                urls.extend(trigger.dead_letter.as_deref());
                ("sqs", urls, &["https", "http"], 443)
            }
        };
        let rule = self.config.endpoints.get(provider).ok_or_else(|| {
            refused(
                &name,
                format!(
                    "this platform does not allow tenants' {provider} queues; the operator lists the endpoints it allows in [tenancy.endpoints.{provider}]"
                ),
            )
        })?;
        for url in urls {
            rule.check(provider, url, schemes, port)
                .map_err(|source| PolicyError::Endpoint {
                    binding: name.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}
