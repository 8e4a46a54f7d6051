//! The one place that builds the AWS SDK configuration: the standard credential and region
//! chains (environment, profiles, SSO, instance roles), `--profile`/`--region` on top,
//! `AWS_ENDPOINT_URL` honoured by the SDK itself, bounded retries and timeouts.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;

use crate::config::Config;
use crate::error::{Error, Result};

/// A loaded configuration whose region and credentials are known to exist.
#[derive(Clone)]
pub struct Aws {
    pub sdk: SdkConfig,
    pub region: String,
}

/// How long the credential chain may take (SSO and instance metadata can hang).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn load(config: &Config) -> Result<Aws> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Throttling and 5xx are retried by the SDK's standard mode; three attempts is its default.
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(|r| r.to_string()).ok_or(Error::NoRegion)?;

    let profile = config
        .profile
        .as_ref()
        .map(|p| format!(" for profile `{p}`"))
        .unwrap_or_default();
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| Error::NoCredentials {
            profile: profile.clone(),
            detail: "no credential provider is configured".into(),
        })?;
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            // The whole chain (every source and why it gave nothing) is long: -v shows it.
            tracing::info!("credential chain: {}", crate::error::aws_message(&e));
            return Err(Error::NoCredentials {
                profile,
                detail: "no source of the standard chain (environment, profile, SSO, web identity, container, instance metadata) provided any".into(),
            });
        }
        Err(_) => {
            return Err(Error::NoCredentials {
                profile,
                detail: format!(
                    "the credential chain gave no answer within {}s",
                    CREDENTIALS_TIMEOUT.as_secs()
                ),
            })
        }
    }
    Ok(Aws { sdk, region })
}
