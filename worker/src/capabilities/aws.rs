//! What every AWS-backed provider does the same way: loading SDK configuration and
//! turning SDK errors into one line.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// SDK configuration from the standard AWS environment (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, credentials chain), with explicit overrides and timeouts so a
/// provider that is down fails instead of hanging.
pub async fn sdk_config(
    region: Option<&str>,
    endpoint: Option<&str>,
    credentials: Option<&stratus_proto::providers::StaticCredentials>,
    connect_timeout: Duration,
    attempt_timeout: Duration,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(connect_timeout)
            .operation_attempt_timeout(attempt_timeout)
            .build(),
    );
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint.to_string());
    }
    // A binding's own credentials replace the chain entirely, so nothing of the
    // worker's (environment, profile, instance role) can sign its requests.
    if let Some(c) = credentials {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose().to_string(),
            None,
            None,
            "stratus-binding",
        ));
    }
    loader.load().await
}

/// The service's error code and text, or the transport failure with its causes.
pub fn error_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("ServiceError"),
            s.err().message().unwrap_or("no message")
        ),
        other => DisplayErrorContext(other).to_string(),
    }
}
