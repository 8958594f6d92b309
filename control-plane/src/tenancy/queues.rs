//! What a tenant's queue triggers and `messaging` bindings may reach. A queue source is the operator's network
//! acting for the tenant, like a binding: a NATS server must be on
//! `[tenancy.endpoints.nats]` (never a link-local or metadata address) unless the
//! platform runs `direct_bindings` for one trusted user. SQS is read with the worker's
//! own AWS credentials, which reach every queue the worker's role can, so SQS triggers
//! are for `direct_bindings` platforms until tenants can bring credentials of their own.
//! Embedded queues are the worker's own and namespaced by tenant there.

use stratus_proto::binding::ProviderSpec;
use stratus_proto::providers::MessagingProvider;
use stratus_proto::triggers::{QueueSource, QueueTrigger};

use super::{Policy, PolicyError, refused};

impl Policy {
    /// Checks where a `messaging` binding sends, by the rules queue sources follow.
    pub fn admit_messaging(&self, name: &str, spec: &ProviderSpec) -> Result<(), PolicyError> {
        let provider = MessagingProvider::parse(spec)?;
        if self.config.direct_bindings {
            return Ok(());
        }
        match provider {
            MessagingProvider::Embedded { .. } => Ok(()),
            MessagingProvider::Sqs { .. } => Err(refused(
                name,
                "SQS queues are written with the worker's own AWS credentials, so this platform offers them only with `direct_bindings`",
            )),
            MessagingProvider::Nats { url } => self.check_nats(name, &url),
        }
    }

    fn check_nats(&self, name: &str, url: &str) -> Result<(), PolicyError> {
        let rule = self.config.endpoints.get("nats").ok_or_else(|| {
            refused(
                name,
                "this platform does not allow tenants' NATS servers; the operator lists the ones it allows in [tenancy.endpoints.nats]",
            )
        })?;
        rule.check("nats", url, &["nats", "tls"], 4222)
            .map_err(|source| PolicyError::Endpoint {
                binding: name.to_string(),
                source,
            })
    }

    /// Checks a queue trigger against the allow-lists.
    pub fn admit_queue(&self, trigger: &QueueTrigger) -> Result<(), PolicyError> {
        if self.config.direct_bindings {
            return Ok(());
        }
        let name = format!("queue trigger {}", trigger.name);
        let url = match &trigger.source {
            QueueSource::Embedded { .. } => return Ok(()),
            QueueSource::Sqs { .. } => {
                return Err(refused(
                    &name,
                    "SQS queues are read with the worker's own AWS credentials, so this platform offers them only with `direct_bindings`",
                ));
            }
            QueueSource::Nats { url, .. } => url,
        };
        self.check_nats(&name, url)
    }
}
