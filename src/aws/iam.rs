//! IAM: the shared instance role and profile every labship instance uses, created when
//! missing (tagged, under the `/labship/` path) and removed by `down --all` when no
//! deployment uses them. Creating and removing them is an administrator's act: the operator
//! policy grants no IAM write at all (`infra/README.md`), so an operator meets
//! [`Error::InstanceRoleMissing`] instead of a role it could re-trust or widen.

use super::Cloud;
use crate::error::{Error, Result};
use crate::tags;

/// The instance role and profile every labship instance uses (shared by all deployments).
pub const INSTANCE_ROLE: &str = "labship-instance";
pub const INSTANCE_PROFILE: &str = "labship-instance";
const IAM_PATH: &str = "/labship/";
/// The role's one (inline) policy, by name.
pub const INSTANCE_POLICY_NAME: &str = "labship-instance";
/// What the instance may do: read `/labship/*` parameters (its sealed token), pull labship's
/// images from ECR, and run the SSM agent (Run Command, port forwarding). Nothing else.
pub const INSTANCE_POLICY: &str = include_str!("../../infra/instance-policy.json");
pub const TRUST_POLICY: &str = include_str!("../../infra/instance-trust-policy.json");
/// The AWS managed policies a labship from before the inline policy attached to the role
/// (`AmazonSSMManagedInstanceCore` can read every parameter of the account). Only detached,
/// when the role is removed.
const LEGACY_MANAGED_POLICIES: [&str; 2] = [
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
];

impl Cloud {
    // ---- IAM -----------------------------------------------------------------------------

    /// The shared instance role and profile, created when missing (which takes an identity
    /// allowed to write IAM). Returns true when anything was created (a new profile needs a
    /// few seconds before EC2 accepts it).
    pub async fn ensure_instance_profile(&self) -> Result<bool> {
        self.create_instance_profile().await.map_err(|e| match e {
            Error::AccessDenied {
                action, message, ..
            } if action.starts_with("iam:") && action != "iam:GetInstanceProfile" => {
                Error::InstanceRoleMissing {
                    role: format!("{IAM_PATH}{INSTANCE_ROLE}"),
                    action,
                    message,
                }
            }
            e => e,
        })
    }

    /// Whether the instance role's policy has every statement named in `sids` (the role's
    /// policy as an administrator put it; a role made by an older labship lacks newer ones).
    pub async fn instance_policy_has(&self, sids: &[&str]) -> Result<bool> {
        let out = match self
            .iam
            .get_role_policy()
            .role_name(INSTANCE_ROLE)
            .policy_name(INSTANCE_POLICY_NAME)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(self.fail("iam", "GetRolePolicy", INSTANCE_ROLE, &e)),
        };
        // IAM returns the document URL-encoded.
        let raw = out.policy_document();
        let text = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        let document: serde_json::Value = serde_json::from_str(&text)
            .or_else(|_| serde_json::from_str(raw))
            .unwrap_or_default();
        let statements = match &document["Statement"] {
            serde_json::Value::Array(all) => all.clone(),
            one => vec![one.clone()],
        };
        Ok(sids
            .iter()
            .all(|sid| statements.iter().any(|s| s["Sid"].as_str() == Some(*sid))))
    }

    async fn create_instance_profile(&self) -> Result<bool> {
        let mut created = false;
        let tags: Vec<aws_sdk_iam::types::Tag> = [(tags::MANAGED_BY, tags::MANAGED_BY_VALUE)]
            .iter()
            .filter_map(|(k, v)| {
                aws_sdk_iam::types::Tag::builder()
                    .key(*k)
                    .value(*v)
                    .build()
                    .ok()
            })
            .collect();

        let existing = match self
            .iam
            .get_instance_profile()
            .instance_profile_name(INSTANCE_PROFILE)
            .send()
            .await
        {
            Ok(out) => out.instance_profile().map(|p| {
                p.roles()
                    .iter()
                    .map(|r| r.role_name().to_string())
                    .collect::<Vec<_>>()
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                None
            }
            Err(e) => return Err(self.fail("iam", "GetInstanceProfile", INSTANCE_PROFILE, &e)),
        };
        if existing
            .as_ref()
            .is_some_and(|roles| roles.iter().any(|r| r == INSTANCE_ROLE))
        {
            return Ok(false);
        }

        match self
            .iam
            .create_role()
            .role_name(INSTANCE_ROLE)
            .path(IAM_PATH)
            .description(
                "labship instances: read /labship/* parameters, pull labship images, SSM agent",
            )
            .assume_role_policy_document(TRUST_POLICY)
            .set_tags(Some(tags.clone()))
            .send()
            .await
        {
            Ok(_) => created = true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_already_exists_exception()) => {}
            Err(e) => return Err(self.fail("iam", "CreateRole", INSTANCE_ROLE, &e)),
        }
        // Inline, so the role carries exactly this and nothing an AWS managed policy grows.
        self.iam
            .put_role_policy()
            .role_name(INSTANCE_ROLE)
            .policy_name(INSTANCE_POLICY_NAME)
            .policy_document(INSTANCE_POLICY)
            .send()
            .await
            .map_err(|e| self.fail("iam", "PutRolePolicy", INSTANCE_ROLE, &e))?;
        if existing.is_none() {
            match self
                .iam
                .create_instance_profile()
                .instance_profile_name(INSTANCE_PROFILE)
                .path(IAM_PATH)
                .set_tags(Some(tags))
                .send()
                .await
            {
                Ok(_) => created = true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_entity_already_exists_exception()) => {}
                Err(e) => {
                    return Err(self.fail("iam", "CreateInstanceProfile", INSTANCE_PROFILE, &e))
                }
            }
        }
        match self
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(INSTANCE_PROFILE)
            .role_name(INSTANCE_ROLE)
            .send()
            .await
        {
            Ok(_) => created = true,
            // A profile holds one role: LimitExceeded means it already has it.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_limit_exceeded_exception() || s.is_entity_already_exists_exception()
                }) => {}
            Err(e) => {
                return Err(self.fail("iam", "AddRoleToInstanceProfile", INSTANCE_PROFILE, &e))
            }
        }
        Ok(created)
    }

    /// Removes the shared role and profile (only labship's own, by name), whichever parts
    /// exist: a `up` killed between CreateRole and CreateInstanceProfile leaves a role alone,
    /// and that goes too. Returns whether anything was removed, and each failure (the other
    /// steps are still attempted).
    pub async fn remove_instance_profile(&self) -> (bool, Vec<Error>) {
        use aws_sdk_iam::operation::{
            delete_instance_profile::DeleteInstanceProfileError, delete_role::DeleteRoleError,
            delete_role_policy::DeleteRolePolicyError, detach_role_policy::DetachRolePolicyError,
            remove_role_from_instance_profile::RemoveRoleFromInstanceProfileError,
        };
        let mut steps = vec![
            deleted(
                self,
                "RemoveRoleFromInstanceProfile",
                INSTANCE_PROFILE,
                self.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(INSTANCE_PROFILE)
                    .role_name(INSTANCE_ROLE)
                    .send()
                    .await,
                RemoveRoleFromInstanceProfileError::is_no_such_entity_exception,
            ),
            deleted(
                self,
                "DeleteInstanceProfile",
                INSTANCE_PROFILE,
                self.iam
                    .delete_instance_profile()
                    .instance_profile_name(INSTANCE_PROFILE)
                    .send()
                    .await,
                DeleteInstanceProfileError::is_no_such_entity_exception,
            ),
        ];
        steps.push(deleted(
            self,
            "DeleteRolePolicy",
            INSTANCE_ROLE,
            self.iam
                .delete_role_policy()
                .role_name(INSTANCE_ROLE)
                .policy_name(INSTANCE_POLICY_NAME)
                .send()
                .await,
            DeleteRolePolicyError::is_no_such_entity_exception,
        ));
        for arn in LEGACY_MANAGED_POLICIES {
            steps.push(deleted(
                self,
                "DetachRolePolicy",
                INSTANCE_ROLE,
                self.iam
                    .detach_role_policy()
                    .role_name(INSTANCE_ROLE)
                    .policy_arn(arn)
                    .send()
                    .await,
                DetachRolePolicyError::is_no_such_entity_exception,
            ));
        }
        steps.push(deleted(
            self,
            "DeleteRole",
            INSTANCE_ROLE,
            self.iam.delete_role().role_name(INSTANCE_ROLE).send().await,
            DeleteRoleError::is_no_such_entity_exception,
        ));
        let removed = steps.iter().any(|s| matches!(s, Ok(true)));
        let failures = steps.into_iter().filter_map(|s| s.err()).collect();
        (removed, failures)
    }

    /// Whether the shared profile exists.
    pub async fn instance_profile_exists(&self) -> Result<bool> {
        match self
            .iam
            .get_instance_profile()
            .instance_profile_name(INSTANCE_PROFILE)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail("iam", "GetInstanceProfile", INSTANCE_PROFILE, &e)),
        }
    }
}

/// A delete's outcome: done (true), already gone (false: IAM's typed `NoSuchEntity`, so a
/// retry after a lost answer is no error), or the error in words.
fn deleted<O, E>(
    cloud: &Cloud,
    op: &str,
    resource: &str,
    sent: std::result::Result<O, aws_sdk_iam::error::SdkError<E>>,
    gone: fn(&E) -> bool,
) -> Result<bool>
where
    E: aws_sdk_iam::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match sent {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(gone) => Ok(false),
        Err(e) => Err(cloud.fail("iam", op, resource, &e)),
    }
}
