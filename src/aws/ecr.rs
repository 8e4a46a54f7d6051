//! ECR in the pipeline's words: make sure the repository exists (created once, scanned on
//! push, encrypted, untagged images expired, tagged as labship's) and log in.

use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::delete_repository::DeleteRepositoryError;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability, Tag,
};
use aws_sdk_ecr::Client;
use base64::Engine as _;

use crate::aws::Aws;
use crate::docker::RegistryAuth;
use crate::error::{aws_message, Error, Result};
use crate::tags;

/// Untagged images (left behind when `latest` moves) are expired after this many days.
const UNTAGGED_EXPIRY_DAYS: u32 = 7;

/// A repository ready to receive pushes.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME` as ECR reports it.
    pub uri: String,
    pub created: bool,
}

/// The container registry side of a push.
#[allow(async_fn_in_trait)] // used only inside labship, with concrete types
pub trait ImageRegistry {
    /// The repository `name`, created for `deployment` when missing, reused when present.
    async fn ensure_repository(&self, name: &str, deployment: &str) -> Result<Repository>;
    /// Credentials for the registry, from the registry's own token service.
    async fn login(&self) -> Result<RegistryAuth>;
    /// The AWS region the registry belongs to.
    fn region(&self) -> &str;
    /// Best effort removal of a repository this run created and could not fill.
    async fn remove_repository(&self, name: &str);
}

pub struct Ecr {
    client: Client,
    region: String,
    /// Replaces the registry host GetAuthorizationToken reports (tests, private endpoints).
    endpoint_override: Option<String>,
    lookups: std::sync::Arc<crate::aws::lookups::Lookups>,
}

impl Ecr {
    pub fn new(aws: &Aws, endpoint_override: Option<String>) -> Self {
        Ecr {
            client: Client::new(&aws.sdk),
            region: aws.region.clone(),
            endpoint_override,
            lookups: aws.lookups.clone(),
        }
    }

    fn fail<E>(&self, op: &'static str, resource: &str, err: &SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match crate::aws::api_error(&self.region, "ecr", op, resource, err) {
            // Name the managed policy that fits, next to labship's own.
            Error::AccessDenied {
                action,
                resource,
                region,
                message,
                ..
            } => Error::AccessDenied {
                action,
                resource,
                region,
                policy: policy_for(op),
                message,
            },
            Error::Aws {
                action,
                resource,
                region,
                message,
                hint,
            } => Error::Aws {
                hint: if message.starts_with("InvalidParameterException") {
                    "check the repository name and region in labship.toml".to_string()
                } else {
                    hint
                },
                action,
                resource,
                region,
                message,
            },
            other => other,
        }
    }

    fn labship_tags(deployment: &str) -> Result<Vec<Tag>> {
        tags::for_deployment(deployment)
            .into_iter()
            .map(|(k, v)| {
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| Error::engine("preparing ECR tags", e))
            })
            .collect()
    }

    async fn describe(&self, name: &str) -> Result<Option<Repository>> {
        match self
            .client
            .describe_repositories()
            .repository_names(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.repositories().first().map(|r| Repository {
                name: name.to_string(),
                uri: r.repository_uri().unwrap_or_default().to_string(),
                created: false,
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("DescribeRepositories", name, &e)),
        }
    }

    async fn create(&self, name: &str, deployment: &str) -> Result<Option<Repository>> {
        let encryption = EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::Aes256)
            .build()
            .map_err(|e| Error::engine("preparing ECR encryption settings", e))?;
        let created = self
            .client
            .create_repository()
            .repository_name(name)
            .image_tag_mutability(ImageTagMutability::Mutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .encryption_configuration(encryption)
            .set_tags(Some(Self::labship_tags(deployment)?))
            .send()
            .await;
        let repo = match created {
            Ok(out) => out.repository().map(|r| Repository {
                name: name.to_string(),
                uri: r.repository_uri().unwrap_or_default().to_string(),
                created: true,
            }),
            // Created by a concurrent run between our describe and create: reuse it.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_already_exists_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(self.fail("CreateRepository", name, &e)),
        };
        if let Err(err) = self.put_lifecycle_policy(name).await {
            // Nothing half-made: remove the empty repository we just created.
            if let Err(cleanup) = self
                .client
                .delete_repository()
                .repository_name(name)
                .send()
                .await
            {
                tracing::warn!(
                    "could not remove repository {name} after a failed setup: {}",
                    aws_message(&cleanup)
                );
            }
            return Err(err);
        }
        Ok(repo)
    }

    /// labship's lifecycle policy: untagged images expire after [`UNTAGGED_EXPIRY_DAYS`].
    /// Putting it again is harmless (it replaces itself).
    async fn put_lifecycle_policy(&self, name: &str) -> Result<()> {
        let policy = serde_json::json!({
            "rules": [{
                "rulePriority": 1,
                "description": "labship: expire untagged images",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": UNTAGGED_EXPIRY_DAYS
                },
                "action": { "type": "expire" }
            }]
        });
        self.client
            .put_lifecycle_policy()
            .repository_name(name)
            .lifecycle_policy_text(policy.to_string())
            .send()
            .await
            .map_err(|e| self.fail("PutLifecyclePolicy", name, &e))?;
        Ok(())
    }

    /// Completes a repository labship created whose lifecycle policy never came (a run
    /// killed between CreateRepository and PutLifecyclePolicy, or whose CreateRepository
    /// answer was lost): only labship's own repositories (tag `labship:managed-by`), and
    /// only when it has no policy at all.
    async fn complete(&self, name: &str, arn: &str) -> Result<()> {
        match self
            .client
            .get_lifecycle_policy()
            .repository_name(name)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_lifecycle_policy_not_found_exception()) => {}
            Err(e) => return Err(self.fail("GetLifecyclePolicy", name, &e)),
        }
        if self.made_by_labship(name, arn).await? {
            tracing::info!("repository {name} has no lifecycle policy yet: adding labship's");
            self.put_lifecycle_policy(name).await?;
        }
        Ok(())
    }

    /// Whether labship created repository `name` (its `labship:managed-by` tag).
    async fn made_by_labship(&self, name: &str, arn: &str) -> Result<bool> {
        let tags = self
            .client
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| self.fail("ListTagsForResource", name, &e))?;
        Ok(tags
            .tags()
            .iter()
            .any(|t| t.key() == tags::MANAGED_BY && t.value() == tags::MANAGED_BY_VALUE))
    }

    /// Records which deployment uses an existing repository (and completes it, see
    /// [`Self::complete`]). The managed-by tag is kept for repositories labship created:
    /// teardown must never take it for one of its own.
    async fn mark_as_used(&self, repo: &Repository, deployment: &str) -> Result<()> {
        let arn = self
            .client
            .describe_repositories()
            .repository_names(&repo.name)
            .send()
            .await
            .map_err(|e| self.fail("DescribeRepositories", &repo.name, &e))?
            .repositories()
            .first()
            .and_then(|r| r.repository_arn().map(str::to_string));
        let Some(arn) = arn else { return Ok(()) };
        self.complete(&repo.name, &arn).await?;
        let tag = Tag::builder()
            .key(tags::DEPLOYMENT)
            .value(deployment)
            .build()
            .map_err(|e| Error::engine("preparing ECR tags", e))?;
        self.client
            .tag_resource()
            .resource_arn(&arn)
            .tags(tag)
            .send()
            .await
            .map_err(|e| self.fail("TagResource", &repo.name, &e))?;
        Ok(())
    }

    /// When labship created `repository` (tag `labship:managed-by`): deletes every image and
    /// the repository. Otherwise only the content tags labship pushed (`ctx-...`). Returns
    /// (image ids deleted, repository deleted); a missing repository is (0, false).
    pub async fn purge(&self, repository: &str) -> Result<(usize, bool)> {
        let described = match self
            .client
            .describe_repositories()
            .repository_names(repository)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_not_found_exception()) =>
            {
                return Ok((0, false))
            }
            Err(e) => return Err(self.fail("DescribeRepositories", repository, &e)),
        };
        let arn = described
            .repositories()
            .first()
            .and_then(|r| r.repository_arn())
            .unwrap_or_default()
            .to_string();
        let mut ids = Vec::new();
        let mut pages = self
            .client
            .list_images()
            .repository_name(repository)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("ListImages", repository, &e))?;
            ids.extend(page.image_ids().iter().cloned());
        }
        // In a repository labship did not create, only what labship pushed goes: its content
        // tags (`ctx-<16 hex>`), tag by tag; `latest` and everything else stay.
        let ours = self.made_by_labship(repository, &arn).await?;
        if !ours {
            ids.retain(|id| id.image_tag().is_some_and(is_content_tag));
            for id in &mut ids {
                id.image_digest = None;
            }
        }
        let mut deleted = 0;
        // BatchDeleteImage takes at most 100 ids per call.
        for chunk in ids.chunks(100) {
            let out = self
                .client
                .batch_delete_image()
                .repository_name(repository)
                .set_image_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.fail("BatchDeleteImage", repository, &e))?;
            deleted += out.image_ids().len();
        }
        if !ours {
            return Ok((deleted, false));
        }
        match self.delete_repository(repository).await {
            Ok(_) => Ok((deleted, true)),
            // Gone already: a retry whose first answer was lost, or another `down`.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_not_found_exception()) =>
            {
                Ok((deleted, true))
            }
            Err(e) => Err(self.fail("DeleteRepository", repository, &e)),
        }
    }
}

impl ImageRegistry for Ecr {
    async fn ensure_repository(&self, name: &str, deployment: &str) -> Result<Repository> {
        // Made sure of once per command: a class's seats share the class's repository, which
        // keeps the tag of the first deployment (the class) that used it. Only the caller
        // that made it sees it as created (and would remove it after a failed push).
        let (mut repo, first) = self
            .lookups
            .repositories
            .get_or_try_first(name.to_string(), || self.ask_repository(name, deployment))
            .await?;
        repo.created &= first;
        Ok(repo)
    }

    async fn login(&self) -> Result<RegistryAuth> {
        self.lookups
            .registry_logins
            .get_or_try(self.endpoint_override.clone(), || self.ask_login())
            .await
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn remove_repository(&self, name: &str) {
        if let Err(e) = self.delete_repository(name).await {
            tracing::warn!(
                "could not remove repository {name} after a failed push: {}",
                aws_message(&e)
            );
        }
    }
}

/// The calls behind [`Lookups`](crate::aws::lookups::Lookups)' answers, and the delete that
/// forgets one.
impl Ecr {
    /// Deletes repository `name` with its images, and forgets it as made sure of (after the
    /// delete: an `ensure_repository` before it would keep a repository about to go).
    async fn delete_repository(
        &self,
        name: &str,
    ) -> std::result::Result<(), SdkError<DeleteRepositoryError>> {
        let removed = self
            .client
            .delete_repository()
            .repository_name(name)
            .force(true)
            .send()
            .await;
        self.lookups.repositories.forget(&name.to_string());
        removed.map(|_| ())
    }

    async fn ask_repository(&self, name: &str, deployment: &str) -> Result<Repository> {
        if let Some(existing) = self.describe(name).await? {
            self.mark_as_used(&existing, deployment).await?;
            return Ok(existing);
        }
        match self.create(name, deployment).await? {
            Some(created) => Ok(created),
            // It exists after all (a concurrent run, or our own call whose answer was lost
            // and that the SDK sent again): the path of an existing repository.
            None => {
                let existing = self.describe(name).await?.ok_or_else(|| Error::Aws {
                    action: "ecr:DescribeRepositories".into(),
                    resource: name.to_string(),
                    region: self.region.clone(),
                    message: "the repository was reported as existing, then not found".into(),
                    hint: "run the command again".into(),
                })?;
                self.mark_as_used(&existing, deployment).await?;
                Ok(existing)
            }
        }
    }

    async fn ask_login(&self) -> Result<RegistryAuth> {
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| self.fail("GetAuthorizationToken", "*", &e))?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| Error::LoginRefused {
                registry: format!("ECR in {}", self.region),
                message: "GetAuthorizationToken returned no authorization data".into(),
            })?;
        let (username, password) = decode_token(data.authorization_token().unwrap_or_default())
            .ok_or_else(|| Error::LoginRefused {
                registry: format!("ECR in {}", self.region),
                message: "the authorization token is not base64 of USER:PASSWORD".into(),
            })?;
        crate::secrets::hide(data.authorization_token().unwrap_or_default());
        crate::secrets::hide_credentials(&username, &password);
        let server = match (&self.endpoint_override, data.proxy_endpoint()) {
            (Some(o), _) => registry_host(o),
            (None, Some(reported)) if !registry_host(reported).is_empty() => {
                registry_host(reported)
            }
            (None, _) => {
                return Err(Error::LoginRefused {
                    registry: format!("ECR in {}", self.region),
                    message: "GetAuthorizationToken reported no registry endpoint".into(),
                })
            }
        };
        Ok(RegistryAuth {
            server,
            username,
            password,
        })
    }
}

/// A content tag labship gives the images it builds: `ctx-` and 16 lowercase hex digits.
fn is_content_tag(tag: &str) -> bool {
    tag.strip_prefix("ctx-").is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `base64("AWS:<password>")` split at the first colon.
pub fn decode_token(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty() && !password.is_empty()).then(|| (user.to_string(), password.to_string()))
}

/// `https://host[:port]/` -> `host[:port]`.
pub fn registry_host(endpoint: &str) -> String {
    let rest = endpoint
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// The managed policy that grants an ECR action labship calls.
fn policy_for(op: &str) -> &'static str {
    match op {
        "CreateRepository" | "PutLifecyclePolicy" | "TagResource" | "DeleteRepository" => {
            "labship's policy infra/operator-policy.json, or the managed policy AmazonEC2ContainerRegistryFullAccess"
        }
        _ => "labship's policy infra/operator-policy.json, or the managed policy AmazonEC2ContainerRegistryPowerUser",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labships_content_tags_are_labships() {
        assert!(is_content_tag("ctx-0123456789abcdef"));
        for not in [
            "latest",
            "ctx-0123",
            "ctx-0123456789ABCDEF",
            "v1",
            "ctx-0123456789abcdefg",
        ] {
            assert!(!is_content_tag(not), "{not}");
        }
    }

    #[test]
    fn tokens_split_at_the_first_colon() {
        let t = base64::engine::general_purpose::STANDARD.encode("AWS:pa:ss");
        assert_eq!(decode_token(&t), Some(("AWS".into(), "pa:ss".into())));
        assert_eq!(decode_token("not base64!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("AWS");
        assert_eq!(decode_token(&no_colon), None);
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(
            registry_host("https://123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_host("http://127.0.0.1:5000/"), "127.0.0.1:5000");
    }

    #[test]
    fn access_denied_names_the_policy() {
        assert!(policy_for("CreateRepository").contains("AmazonEC2ContainerRegistryFullAccess"));
        assert!(policy_for("GetAuthorizationToken").contains("AmazonEC2ContainerRegistryPowerUser"));
        assert!(policy_for("PutLifecyclePolicy").contains("infra/operator-policy.json"));
    }
}
