//! The AWS adapter. This file is the one place that builds the SDK configuration (the
//! standard credential and region chains, `--profile`/`--region` on top, `AWS_ENDPOINT_URL`
//! honoured by the SDK itself, the retry mode and timeouts) and classifies AWS errors for the
//! user ([`api_error`]). [`Cloud`] is the account as labship sees it, with one module per
//! service in the pipeline's words: [`ecr`], [`ec2`] (and [`ebs`], its volumes), [`iam`], [`ssm`],
//! [`s3`] (a job's data in and results out), [`grants`] (what a host's own role reads there);
//! [`retry`] is the one bounded wait-and-retry helper they share.

pub mod ebs;
pub mod ec2;
pub mod ecr;
pub mod grants;
pub mod iam;
pub mod lookups;
pub mod retry;
pub mod rounds;
pub mod s3;
pub mod ssm;
pub mod together;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};

use crate::config::Config;
use crate::error::{Error, Result};

/// A loaded configuration whose region and credentials are known to exist.
#[derive(Clone)]
pub struct Aws {
    pub sdk: SdkConfig,
    pub region: String,
    /// What this command has already asked of AWS in this region, and will not ask again.
    pub lookups: std::sync::Arc<lookups::Lookups>,
}

impl Aws {
    /// The same account and settings in another region.
    pub fn in_region(&self, region: &str) -> Aws {
        Aws {
            sdk: self
                .sdk
                .to_builder()
                .region(Region::new(region.to_string()))
                .build(),
            region: region.to_string(),
            lookups: Default::default(),
        }
    }
}

/// EC2, IAM and SSM of one account and region (ECR has its own [`ecr::Ecr`], which the push
/// stage uses without the rest). The methods live with their service: [`ec2`], [`iam`],
/// [`ssm`].
#[derive(Clone)]
pub struct Cloud {
    sdk: SdkConfig,
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    ssm: aws_sdk_ssm::Client,
    sts: aws_sdk_sts::Client,
    pub region: String,
    lookups: std::sync::Arc<lookups::Lookups>,
}

/// The account of an ARN (`arn:aws:sts::ACCOUNT:assumed-role/...`); empty when it has none.
pub fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or_default()
}

impl Cloud {
    pub fn new(aws: &Aws) -> Self {
        Cloud {
            sdk: aws.sdk.clone(),
            ec2: aws_sdk_ec2::Client::new(&aws.sdk),
            iam: aws_sdk_iam::Client::new(&aws.sdk),
            ssm: aws_sdk_ssm::Client::new(&aws.sdk),
            sts: aws_sdk_sts::Client::new(&aws.sdk),
            region: aws.region.clone(),
            lookups: aws.lookups.clone(),
        }
    }

    /// The account and settings this was made from.
    fn aws(&self) -> Aws {
        Aws {
            sdk: self.sdk.clone(),
            region: self.region.clone(),
            lookups: self.lookups.clone(),
        }
    }

    /// An SDK error as the user should read it, with this region.
    fn fail<E>(&self, service: &str, op: &str, resource: &str, err: &SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        api_error(&self.region, service, op, resource, err)
    }

    /// The ARN of the identity labship acts as (STS GetCallerIdentity, which every identity
    /// may call), recorded as the owner of what this command creates.
    pub async fn caller_arn(&self) -> Result<String> {
        self.lookups
            .caller
            .get_or_try((), || self.ask_caller_arn())
            .await
    }

    /// The lookups this command keeps (see [`lookups`]).
    pub fn lookups(&self) -> &lookups::Lookups {
        &self.lookups
    }

    async fn ask_caller_arn(&self) -> Result<String> {
        let out = retry::read(std::time::Duration::from_secs(60), || async {
            self.sts
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| self.fail("sts", "GetCallerIdentity", "the caller", &e))
        })
        .await?;
        let arn = out.arn().unwrap_or_default().to_string();
        if arn.is_empty() {
            return Err(Error::Aws {
                action: "sts:GetCallerIdentity".into(),
                resource: "the caller".into(),
                region: self.region.clone(),
                message: "STS answered without an ARN".into(),
                hint: "check AWS_ENDPOINT_URL / the profile: this is not how AWS answers".into(),
            });
        }
        crate::tags::set_caller(&arn);
        Ok(arn)
    }

    /// A request the SDK's builder refused before sending it (a field labship forgot).
    fn unbuildable(&self, action: &str, resource: &str, err: impl std::fmt::Display) -> Error {
        Error::Aws {
            action: action.into(),
            resource: resource.into(),
            region: self.region.clone(),
            message: err.to_string(),
            hint: "this is a bug in labship; please report it".into(),
        }
    }
}

/// Attempts per AWS call (the first one included); see [`load`].
pub const SDK_ATTEMPTS: u32 = 5;

/// How long the credential chain may take (SSO and instance metadata can hang).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn load(config: &Config) -> Result<Aws> {
    load_with(config, RetryMode::Standard).await
}

/// How the SDK retries (see [`load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    /// One command's few calls: `standard`.
    Standard,
    /// Many deployments at once (a class's seats side by side): `adaptive`, whose client-side
    /// rate limiter slows every call down together once AWS throttles one, instead of each
    /// seat retrying on its own into the same limit.
    Bulk,
}

/// [`load`] with the retry mode for the work at hand.
pub async fn load_with(config: &Config, mode: RetryMode) -> Result<Aws> {
    let retry = match mode {
        RetryMode::Standard => RetryConfig::standard(),
        RetryMode::Bulk => RetryConfig::adaptive(),
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Throttling, 5xx, timeouts and lost connections are retried by the SDK's `standard`
        // mode: exponential backoff with full jitter (base 1 s, at most 20 s), within its
        // retry quota. Five attempts instead of its default three: with AWS throttling one
        // call in five, a call then fails one time in 3,000 instead of one in 125, which is
        // what a 50-call `up` needs; a refused connection still fails within ~10 s. Not
        // `adaptive`: it rate-limits the client, which suits bulk jobs, not a CLI making a
        // call every few seconds ([`RetryMode::Bulk`] is for a class's seats). Waits add their
        // own retries on top (see `retry`).
        .retry_config(retry.with_max_attempts(SDK_ATTEMPTS))
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
    Ok(Aws {
        sdk,
        region,
        lookups: Default::default(),
    })
}

/// Where an administrator finds every permission labship needs.
pub const OPERATOR_POLICY: &str = "labship's least-privilege policy: infra/operator-policy.json";

/// An SDK error of `service:op` on `resource`, classified: rejected credentials, access
/// denied (naming the action), quotas, and the rest with the AWS code and message.
pub fn api_error<E>(
    region: &str,
    service: &str,
    op: &str,
    resource: &str,
    err: &SdkError<E>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = err.code().unwrap_or_default().to_string();
    let raw = match err {
        SdkError::ServiceError(e) => Some(e.raw()),
        _ => None,
    };
    let status = raw.map(|r| r.status().as_u16());
    let message = err
        .message()
        .map(str::to_string)
        .or_else(|| raw.and_then(|r| r.body().bytes()).and_then(xml_message))
        .unwrap_or_else(|| crate::error::aws_message(err));
    let action = format!("{service}:{op}");
    let region = region.to_string();
    let resource = resource.to_string();
    if matches!(
        code.as_str(),
        "ExpiredToken"
            | "ExpiredTokenException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "InvalidClientTokenId"
            | "AuthFailure"
            | "SignatureDoesNotMatch"
    ) {
        return Error::CredentialsRejected {
            region,
            message: format!("{code}: {message}"),
        };
    }
    // A 403 is an authorization failure whatever the body says (moto answers JSON-protocol
    // calls with an XML error document).
    if matches!(
        code.as_str(),
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation"
    ) || status == Some(403)
    {
        return Error::AccessDenied {
            action,
            resource,
            region,
            policy: OPERATOR_POLICY,
            message,
        };
    }
    let quota_hint = match code.as_str() {
        "InstanceLimitExceeded" | "VcpuLimitExceeded" => Some(
            "your account's vCPU quota for this instance family is used up: terminate unused instances (`labship status --ec2`), choose a smaller --instance-type, or ask for more in Service Quotas (EC2, \"Running On-Demand ... instances\")",
        ),
        "SecurityGroupLimitExceeded" | "RulesPerSecurityGroupLimitExceeded" => Some(
            "the VPC's security-group quota is used up: delete unused groups or ask for more in Service Quotas (VPC)",
        ),
        "LimitExceeded" | "LimitExceededException" | "ServiceQuotaExceededException" => {
            Some("an AWS quota is reached: remove unused resources or ask for a higher limit in Service Quotas")
        }
        "InsufficientInstanceCapacity" => Some(
            "AWS has no capacity for this instance type in this zone right now: try again in a few minutes, or choose another --instance-type or subnet",
        ),
        _ => None,
    };
    if let Some(hint) = quota_hint {
        return Error::QuotaExceeded {
            action,
            resource,
            region,
            message: format!("{code}: {message}"),
            hint: hint.to_string(),
        };
    }
    if matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    ) {
        // The chain of causes ends in the useful part ("Connection refused", "dns error").
        let mut root: &dyn std::error::Error = err;
        while let Some(next) = root.source() {
            root = next;
        }
        return Error::AwsUnavailable {
            action,
            resource,
            region,
            message: format!("could not reach AWS ({root}); check your network, proxy and AWS_ENDPOINT_URL (if set)"),
        };
    }
    let hint = if code.is_empty() {
        "check your network and AWS_ENDPOINT_URL (if set), then try again".to_string()
    } else {
        "see the AWS message above; run again with -v for details".to_string()
    };
    let transient = is_transient_code(&code) || status.is_some_and(|s| s >= 500);
    let message = if code.is_empty() {
        message
    } else {
        format!("{code}: {message}")
    };
    if transient {
        return Error::AwsUnavailable {
            action,
            resource,
            region,
            message,
        };
    }
    Error::Aws {
        action,
        resource,
        region,
        message,
        hint,
    }
}

/// The error codes AWS answers when it is busy or failed on its side (the SDK's standard
/// retry mode treats the same codes as retryable).
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "InternalError"
            | "InternalFailure"
            | "InternalServerError"
            | "InternalServerException"
            | "ServiceFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "Unavailable"
    )
}

/// The AWS error code of an SDK error ("" when there is none). For EC2 only: its API models
/// no error shapes (the SDK has no typed `is_*()` checks for it), so its documented codes
/// (`InvalidGroup.NotFound`, `DependencyViolation`, ...) are compared as strings. IAM, SSM and
/// ECR errors are checked with the SDK's typed `is_*()` methods.
pub fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> &str {
    err.code().unwrap_or_default()
}

/// The `<Message>` of an XML error document.
fn xml_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Message>")? + "<Message>".len();
    let end = text[start..].find("</Message>")? + start;
    Some(text[start..end].to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn xml_error_messages() {
        let body = b"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: s is not authorized to perform: ecr:CreateRepository</Message></Error></Errors></ErrorResponse>";
        assert_eq!(
            super::xml_message(body).as_deref(),
            Some("User: s is not authorized to perform: ecr:CreateRepository")
        );
        assert_eq!(super::xml_message(b"{}"), None);
    }
}

#[cfg(test)]
mod classify_tests {
    use std::io::{Read, Write};

    use super::*;

    /// An endpoint that answers every request with an EC2 error document.
    fn ec2_error_server(status: u16, code: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf);
                let body = format!("<?xml version=\"1.0\"?><Response><Errors><Error><Code>{code}</Code><Message>said {code}</Message></Error></Errors><RequestID>r</RequestID></Response>");
                let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        format!("http://{addr}")
    }

    /// An EC2 client for `endpoint` with test credentials and no retries.
    fn client_at(endpoint: &str) -> aws_sdk_ec2::Client {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::disabled())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("a", "b", None, None, "test"),
                ),
            )
            .build();
        aws_sdk_ec2::Client::new(&sdk)
    }

    async fn run_instances_error(status: u16, code: &'static str) -> Error {
        let endpoint = ec2_error_server(status, code);
        let ec2 = client_at(&endpoint);
        let err = ec2
            .run_instances()
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect_err("the server only answers errors");
        api_error("eu-west-1", "ec2", "RunInstances", "demo", &err)
    }

    #[tokio::test]
    async fn quotas_access_and_credentials_are_told_apart() {
        match run_instances_error(400, "VcpuLimitExceeded").await {
            Error::QuotaExceeded {
                action,
                hint,
                message,
                ..
            } => {
                assert_eq!(action, "ec2:RunInstances");
                assert!(message.contains("said VcpuLimitExceeded"), "{message}");
                assert!(hint.contains("Service Quotas"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        match run_instances_error(403, "UnauthorizedOperation").await {
            Error::AccessDenied { action, policy, .. } => {
                assert_eq!(action, "ec2:RunInstances");
                assert!(policy.contains("infra/operator-policy.json"));
            }
            other => panic!("{other:?}"),
        }
        match run_instances_error(401, "AuthFailure").await {
            Error::CredentialsRejected { region, .. } => assert_eq!(region, "eu-west-1"),
            other => panic!("{other:?}"),
        }
        match run_instances_error(400, "InsufficientInstanceCapacity").await {
            Error::QuotaExceeded { hint, .. } => assert!(hint.contains("capacity"), "{hint}"),
            other => panic!("{other:?}"),
        }
        match run_instances_error(400, "InvalidAMIID.Malformed").await {
            Error::Aws { message, .. } => {
                assert!(message.starts_with("InvalidAMIID.Malformed"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_transient() {
        for (status, code) in [
            (503, "RequestLimitExceeded"),
            (400, "Throttling"),
            (500, "InternalError"),
            (503, "Unavailable"),
            (502, "SomethingNew"),
        ] {
            let err = run_instances_error(status, code).await;
            assert!(err.is_transient(), "{status} {code}: {err:?}");
            assert!(err.to_string().contains("ec2:RunInstances"), "{err}");
        }
        for (status, code) in [(400, "InvalidAMIID.Malformed"), (400, "VcpuLimitExceeded")] {
            let err = run_instances_error(status, code).await;
            assert!(!err.is_transient(), "{status} {code}: {err:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_says_so_briefly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let ec2 = client_at(&format!("http://127.0.0.1:{port}"));
        let err = ec2
            .describe_vpcs()
            .send()
            .await
            .expect_err("nothing listens");
        match api_error("eu-west-1", "ec2", "DescribeVpcs", "default VPC", &err) {
            // Transient: a wait keeps trying through it, a single call reports it.
            Error::AwsUnavailable { message, .. } => {
                assert!(message.starts_with("could not reach AWS"), "{message}");
                assert!(!message.contains("DispatchFailure"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
