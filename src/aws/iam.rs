//! IAM: the shared instance role and profile every deployment's instance uses, created when
//! missing (tagged, under the `/labship/` path) and removed by `down --all` when no
//! deployment uses them. Creating and removing them is an administrator's act: the operator
//! policy grants no IAM write on them (`infra/README.md`), so an operator meets
//! [`Error::InstanceRoleMissing`] instead of a role it could re-trust or widen.
//!
//! A job host (`run --ec2`) has a role of its own instead: `labship-job-<run id>` under
//! `/labship/jobs/<region>/`, with one inline policy naming exactly its job, its inputs and its
//! results, and the permissions boundary `labship-job-boundary` (an administrator's managed
//! policy, `infra/job-boundary-policy.json`), which caps whatever such a role is given. The
//! operator may create these roles only with that boundary, and labship removes each when
//! its host is gone.

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

/// The shared profile holds `role`, which is not labship's.
fn foreign_role(role: &str) -> Error {
    Error::InstanceProfileForeignRole {
        profile: INSTANCE_PROFILE.to_string(),
        role: role.to_string(),
        expected: INSTANCE_ROLE.to_string(),
    }
}

impl Cloud {
    // ---- IAM -----------------------------------------------------------------------------

    /// The shared instance role and profile, created when missing (which takes an identity
    /// allowed to write IAM), once per command. Returns (whether this command created
    /// anything: a new profile needs a few seconds before EC2 accepts it; whether this call
    /// did, which reports it).
    pub async fn ensure_instance_profile(&self) -> Result<(bool, bool)> {
        let (created, first) = self
            .lookups
            .shared_profile
            .get_or_try_first((), || self.ask_instance_profile())
            .await?;
        Ok((created, created && first))
    }

    async fn ask_instance_profile(&self) -> Result<bool> {
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

        let existing = self.profile_roles().await?;
        match existing.as_deref() {
            Some(roles) if roles.iter().any(|r| r == INSTANCE_ROLE) => return Ok(false),
            Some([other, ..]) => return Err(foreign_role(other)),
            _ => {}
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
            // A profile holds one role: another `up` put one in meanwhile. Labship's, or
            // someone else's, which instances must not get.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_limit_exceeded_exception() || s.is_entity_already_exists_exception()
                }) =>
            {
                let roles = self.profile_roles().await?.unwrap_or_default();
                if let Some(other) = roles.iter().find(|r| *r != INSTANCE_ROLE) {
                    return Err(foreign_role(other));
                }
            }
            Err(e) => {
                return Err(self.fail("iam", "AddRoleToInstanceProfile", INSTANCE_PROFILE, &e))
            }
        }
        Ok(created)
    }

    /// The roles the shared profile holds (None: there is no such profile).
    async fn profile_roles(&self) -> Result<Option<Vec<String>>> {
        self.roles_in_profile(INSTANCE_PROFILE).await
    }

    /// The roles an instance profile holds (None: there is no such profile).
    async fn roles_in_profile(&self, profile: &str) -> Result<Option<Vec<String>>> {
        match self
            .iam
            .get_instance_profile()
            .instance_profile_name(profile)
            .send()
            .await
        {
            Ok(out) => Ok(out.instance_profile().map(|p| {
                p.roles()
                    .iter()
                    .map(|r| r.role_name().to_string())
                    .collect()
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("iam", "GetInstanceProfile", profile, &e)),
        }
    }

    /// Removes the shared role and profile (only labship's own, by name), whichever parts
    /// exist: a `up` killed between CreateRole and CreateInstanceProfile leaves a role alone,
    /// and that goes too. Returns whether anything was removed, and each failure (the other
    /// steps are still attempted).
    pub async fn remove_instance_profile(&self) -> (bool, Vec<Error>) {
        let removed = self
            .remove_role(
                INSTANCE_ROLE,
                Some(INSTANCE_PROFILE),
                INSTANCE_POLICY_NAME,
                &LEGACY_MANAGED_POLICIES,
            )
            .await;
        self.lookups.shared_profile.forget(&());
        removed
    }

    /// A role and its profile of the same name, whichever parts exist: out of the profile,
    /// the profile, the inline policy, the managed ones (`detach`), the role.
    async fn remove_role(
        &self,
        role: &str,
        profile: Option<&str>,
        policy: &str,
        detach: &[&str],
    ) -> (bool, Vec<Error>) {
        use aws_sdk_iam::operation::{
            delete_instance_profile::DeleteInstanceProfileError, delete_role::DeleteRoleError,
            delete_role_policy::DeleteRolePolicyError, detach_role_policy::DetachRolePolicyError,
            remove_role_from_instance_profile::RemoveRoleFromInstanceProfileError,
        };
        let mut steps = Vec::new();
        if let Some(profile) = profile {
            steps.push(deleted(
                self,
                "RemoveRoleFromInstanceProfile",
                profile,
                self.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(profile)
                    .role_name(role)
                    .send()
                    .await,
                RemoveRoleFromInstanceProfileError::is_no_such_entity_exception,
            ));
            steps.push(deleted(
                self,
                "DeleteInstanceProfile",
                profile,
                self.iam
                    .delete_instance_profile()
                    .instance_profile_name(profile)
                    .send()
                    .await,
                DeleteInstanceProfileError::is_no_such_entity_exception,
            ));
        }
        steps.push(deleted(
            self,
            "DeleteRolePolicy",
            role,
            self.iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(policy)
                .send()
                .await,
            DeleteRolePolicyError::is_no_such_entity_exception,
        ));
        for arn in detach {
            steps.push(deleted(
                self,
                "DetachRolePolicy",
                role,
                self.iam
                    .detach_role_policy()
                    .role_name(role)
                    .policy_arn(*arn)
                    .send()
                    .await,
                DetachRolePolicyError::is_no_such_entity_exception,
            ));
        }
        steps.push(deleted(
            self,
            "DeleteRole",
            role,
            self.iam.delete_role().role_name(role).send().await,
            DeleteRoleError::is_no_such_entity_exception,
        ));
        let removed = steps.iter().any(|s| matches!(s, Ok(true)));
        let failures = steps.into_iter().filter_map(|s| s.err()).collect();
        (removed, failures)
    }

    /// Whether the shared profile exists.
    pub async fn instance_profile_exists(&self) -> Result<bool> {
        Ok(self.profile_roles().await?.is_some())
    }
}

// ---- job roles ---------------------------------------------------------------------------

/// The job hosts' permissions boundary, a managed policy under `/labship/`: the most any job
/// role may do, whatever its inline policy says.
pub const JOB_BOUNDARY: &str = "labship-job-boundary";
pub const JOB_BOUNDARY_POLICY: &str = include_str!("../../infra/job-boundary-policy.json");
/// Where job roles and their profiles are: `/labship/jobs/<region>/` (IAM is global, a job
/// host regional: the path says where to look for the host).
const JOB_PATH: &str = "/labship/jobs/";
/// A job role's one inline policy, by name.
pub const JOB_POLICY_NAME: &str = "labship-job";
const JOB_ROLE_PREFIX: &str = "labship-job-";

/// The role and instance profile of a run's host (the same name).
pub fn job_role_name(run_id: &str) -> String {
    format!("{JOB_ROLE_PREFIX}{run_id}")
}

/// The job boundary's ARN in `account`.
pub fn job_boundary_arn(account: &str) -> String {
    Boundary::Job.arn(account)
}

/// What became of something labship removes when unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// It was not there.
    Gone,
    /// It is someone's as well (changed by an administrator): left as it is.
    Kept,
}

/// A job role as IAM lists it.
#[derive(Debug, Clone)]
pub struct JobRole {
    pub name: String,
    pub run_id: String,
    /// Where its host is (from the role's path).
    pub region: String,
    pub created_secs: i64,
    /// Its trust is labship's (EC2 may assume it, nothing else may): a job role trusted by
    /// anyone else was not made by labship as it is, and is removed on sight.
    pub trusted_by_ec2_only: bool,
}

/// What a run's role is made of: its run, where its host runs, its tags and its policy.
pub struct JobRoleSpec<'a> {
    pub run_id: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub tags: &'a [(&'static str, String)],
    /// The inline policy (JSON).
    pub policy: &'a str,
}

/// IAM takes tag values of letters, digits, spaces and `_.:/=+-@` only (EC2 takes anything):
/// a value it would refuse is left out.
fn iam_tags(pairs: &[(&str, String)]) -> Vec<aws_sdk_iam::types::Tag> {
    pairs
        .iter()
        .filter(|(_, v)| {
            v.chars().count() <= 256
                && v.chars()
                    .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c))
        })
        .filter_map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(*k)
                .value(v)
                .build()
                .ok()
        })
        .collect()
}

/// A permissions boundary labship makes when missing (an administrator's act): the most
/// the roles of one kind may do, whatever their inline policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// Job hosts' roles (`run --ec2`).
    Job,
    /// Deployments' own roles (`up --ec2` with `[data] inputs`).
    Deployment,
}

impl Boundary {
    pub fn name(self) -> &'static str {
        match self {
            Boundary::Job => JOB_BOUNDARY,
            Boundary::Deployment => DEPLOYMENT_BOUNDARY,
        }
    }

    /// Its ARN in `account`.
    pub fn arn(self, account: &str) -> String {
        format!("arn:aws:iam::{account}:policy/labship/{}", self.name())
    }

    /// Whose boundary it is, in words.
    pub fn of(self) -> &'static str {
        match self {
            Boundary::Job => "the job hosts' permissions boundary",
            Boundary::Deployment => "the deployments' permissions boundary",
        }
    }

    /// Its document's file under `infra/`.
    fn file(self) -> &'static str {
        match self {
            Boundary::Job => "job-boundary-policy.json",
            Boundary::Deployment => "deployment-boundary-policy.json",
        }
    }

    fn document(self) -> &'static str {
        match self {
            Boundary::Job => JOB_BOUNDARY_POLICY,
            Boundary::Deployment => DEPLOYMENT_BOUNDARY_POLICY,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Boundary::Job => "labship job hosts: the most a job role may do (ECR pull, S3 of labship-* buckets, from EC2 only)",
            Boundary::Deployment => "labship deployments with inputs: the most a deployment's role may do (its token, ECR pull, SSM agent, reading S3 of labship-* buckets, from EC2 only)",
        }
    }
}

impl Cloud {
    /// A boundary, created when missing (which takes an identity allowed to create policies;
    /// an operator gets [`Error::BoundaryMissing`]). Returns true when created.
    pub async fn ensure_boundary(&self, account: &str, boundary: Boundary) -> Result<bool> {
        let arn = boundary.arn(account);
        match self.iam.get_policy().policy_arn(&arn).send().await {
            Ok(_) => return Ok(false),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) => {}
            Err(e) => return Err(self.fail("iam", "GetPolicy", &arn, &e)),
        }
        match self
            .iam
            .create_policy()
            .policy_name(boundary.name())
            .path(IAM_PATH)
            .description(boundary.description())
            .policy_document(boundary.document())
            .set_tags(Some(iam_tags(&[(
                tags::MANAGED_BY,
                tags::MANAGED_BY_VALUE.to_string(),
            )])))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_already_exists_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(match self.fail("iam", "CreatePolicy", &arn, &e) {
                Error::AccessDenied {
                    action, message, ..
                } => Error::BoundaryMissing {
                    of: boundary.of(),
                    name: boundary.name(),
                    document: boundary.file(),
                    action,
                    message,
                },
                other => other,
            }),
        }
    }

    /// Removes a boundary (when no role of its kind is left: `down --all`). One an
    /// administrator changed (it has versions of theirs: IAM's DeleteConflict) is kept, with
    /// their changes.
    pub async fn remove_boundary(&self, account: &str, boundary: Boundary) -> Result<Removal> {
        let arn = boundary.arn(account);
        match self.iam.delete_policy().policy_arn(&arn).send().await {
            Ok(_) => Ok(Removal::Removed),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(Removal::Gone)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_delete_conflict_exception()) =>
            {
                Ok(Removal::Kept)
            }
            Err(e) => Err(self.fail("iam", "DeletePolicy", &arn, &e)),
        }
    }

    /// A run's role (trusted by EC2, under the job boundary, with its one inline policy) in
    /// an instance profile of the same name, which is returned. What a failure after the role
    /// was made leaves is removed again; a role of that name that existed before (another
    /// run's) is never touched.
    pub async fn create_job_role(&self, spec: &JobRoleSpec<'_>) -> Result<String> {
        let name = job_role_name(spec.run_id);
        let path = format!("{JOB_PATH}{}/", spec.region);
        let tags = iam_tags(spec.tags);
        self.iam
            .create_role()
            .role_name(&name)
            .path(&path)
            .description(format!(
                "labship run {}: its job, inputs and results only",
                spec.run_id
            ))
            .assume_role_policy_document(TRUST_POLICY)
            .permissions_boundary(job_boundary_arn(spec.account))
            .set_tags(Some(tags.clone()))
            .send()
            .await
            .map_err(|e| self.fail("iam", "CreateRole", &name, &e))?;
        let made = self.fill_job_role(&name, &path, tags, spec.policy).await;
        if made.is_err() {
            let (_, failures) = self.remove_job_role(spec.run_id).await;
            for f in failures {
                tracing::warn!("removing the job role {name} again: {f}");
            }
        }
        made.map(|()| name)
    }

    /// A new job role's policy, and its profile.
    async fn fill_job_role(
        &self,
        name: &str,
        path: &str,
        tags: Vec<aws_sdk_iam::types::Tag>,
        policy: &str,
    ) -> Result<()> {
        self.iam
            .put_role_policy()
            .role_name(name)
            .policy_name(JOB_POLICY_NAME)
            .policy_document(policy)
            .send()
            .await
            .map_err(|e| self.fail("iam", "PutRolePolicy", name, &e))?;
        self.iam
            .create_instance_profile()
            .instance_profile_name(name)
            .path(path)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| self.fail("iam", "CreateInstanceProfile", name, &e))?;
        self.iam
            .add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(name)
            .send()
            .await
            .map_err(|e| self.fail("iam", "AddRoleToInstanceProfile", name, &e))?;
        Ok(())
    }

    /// Removes a run's role and profile, whichever parts exist (as
    /// [`Cloud::remove_instance_profile`]).
    pub async fn remove_job_role(&self, run_id: &str) -> (bool, Vec<Error>) {
        let name = job_role_name(run_id);
        self.remove_role(&name, Some(&name), JOB_POLICY_NAME, &[])
            .await
    }

    /// Every job role of the account (ListRoles under `/labship/jobs/`, all pages).
    pub async fn job_roles(&self) -> Result<Vec<JobRole>> {
        let mut pages = self
            .iam
            .list_roles()
            .path_prefix(JOB_PATH)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("iam", "ListRoles", JOB_PATH, &e))?;
            for role in page.roles() {
                let Some(run_id) = role.role_name().strip_prefix(JOB_ROLE_PREFIX) else {
                    continue;
                };
                let region = role
                    .path()
                    .strip_prefix(JOB_PATH)
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string();
                found.push(JobRole {
                    name: role.role_name().to_string(),
                    run_id: run_id.to_string(),
                    region,
                    created_secs: role.create_date().secs(),
                    trusted_by_ec2_only: role
                        .assume_role_policy_document()
                        .is_some_and(is_labships_trust),
                });
            }
        }
        Ok(found)
    }
}

// ---- deployments' own roles --------------------------------------------------------------

/// The permissions boundary of every deployment's own role (a managed policy under
/// `/labship/`, `infra/deployment-boundary-policy.json`).
pub const DEPLOYMENT_BOUNDARY: &str = "labship-deployment-boundary";
pub const DEPLOYMENT_BOUNDARY_POLICY: &str =
    include_str!("../../infra/deployment-boundary-policy.json");
/// Where deployments' roles and profiles are: `/labship/deployments/<region>/<deployment>/`
/// (the path says whose role it is; IAM's ListRoles does not return tags).
const DEPLOYMENT_PATH: &str = "/labship/deployments/";
/// A deployment role's one inline policy, by name.
pub const DEPLOYMENT_POLICY_NAME: &str = "labship-deployment";
const DEPLOYMENT_ROLE_PREFIX: &str = "labship-dep-";

/// The role and instance profile (the same name) of `deployment` in `region`: a hash of
/// both, since IAM's names are global, at most 64 characters, and a deployment's name may
/// take most of that.
pub fn deployment_role_name(region: &str, deployment: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{region}/{deployment}").as_bytes());
    format!("{DEPLOYMENT_ROLE_PREFIX}{}", &hex::encode(digest)[..16])
}

fn deployment_path(region: &str, deployment: &str) -> String {
    format!("{DEPLOYMENT_PATH}{region}/{deployment}/")
}

/// A deployment's role as IAM lists it.
#[derive(Debug, Clone)]
pub struct DeploymentRole {
    pub name: String,
    pub region: String,
    pub deployment: String,
    pub created_secs: i64,
    /// Its trust is labship's (EC2 may assume it, nothing else may). One trusted by anyone
    /// else was not made by labship as it is: `up` replaces it.
    pub trusted_by_ec2_only: bool,
}

/// A deployment's role once made sure of.
#[derive(Debug, Clone)]
pub struct EnsuredRole {
    /// Its instance profile (the role's name).
    pub profile: String,
    /// Made now: EC2 takes seconds to accept a new profile.
    pub made: bool,
    /// A role of that name trusted by more than EC2 was removed and made again: an instance
    /// associated with the old profile (by its id) must be given the new one.
    pub remade: bool,
}

/// What a deployment's role is made of.
pub struct DeploymentRoleSpec<'a> {
    pub deployment: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub tags: &'a [(&'static str, String)],
    /// The inline policy (JSON).
    pub policy: &'a str,
}

impl Cloud {
    /// A deployment's own role (trusted by EC2, under the deployments' boundary) and its
    /// profile of the same name, made when missing; its inline policy is put every time (so a
    /// replace with other inputs changes what it reads).
    pub async fn ensure_deployment_role(
        &self,
        spec: &DeploymentRoleSpec<'_>,
    ) -> Result<EnsuredRole> {
        let name = deployment_role_name(spec.region, spec.deployment);
        // Found by listing its path (a name-only read of a profile that does not exist may
        // be judged against another ARN than the path's).
        let mut listed = self.deployment_role(spec.region, spec.deployment).await?;
        let remade = listed.as_ref().is_some_and(|r| !r.trusted_by_ec2_only);
        if remade {
            // Trusted by someone besides EC2: not labship's as it is. Made again.
            tracing::warn!("the role {name} is trusted by more than EC2: removing it");
            let (_, failures) = self
                .remove_deployment_role(spec.region, spec.deployment)
                .await;
            if let Some(e) = failures.into_iter().next() {
                return Err(e);
            }
            listed = None;
        }
        let existing = match listed {
            Some(_) => self.roles_in_profile(&name).await?,
            None => None,
        };
        let holds_it = |roles: &[String]| roles.contains(&name);
        if existing.as_deref().is_some_and(holds_it) {
            self.put_deployment_policy(&name, spec.policy).await?;
            return Ok(EnsuredRole {
                profile: name,
                made: false,
                remade: false,
            });
        }
        let path = deployment_path(spec.region, spec.deployment);
        let tags = iam_tags(spec.tags);
        match self
            .iam
            .create_role()
            .role_name(&name)
            .path(&path)
            .description(format!(
                "labship deployment {} in {}: its token, its image and its inputs only",
                spec.deployment, spec.region
            ))
            .assume_role_policy_document(TRUST_POLICY)
            .permissions_boundary(Boundary::Deployment.arn(spec.account))
            .set_tags(Some(tags.clone()))
            .send()
            .await
        {
            Ok(_) => {}
            // A role an `up` killed before its profile was made.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_already_exists_exception()) => {}
            Err(e) => return Err(self.fail("iam", "CreateRole", &name, &e)),
        }
        self.put_deployment_policy(&name, spec.policy).await?;
        if existing.is_none() {
            match self
                .iam
                .create_instance_profile()
                .instance_profile_name(&name)
                .path(&path)
                .set_tags(Some(tags))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_entity_already_exists_exception()) => {}
                Err(e) => return Err(self.fail("iam", "CreateInstanceProfile", &name, &e)),
            }
        }
        match self
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(&name)
            .role_name(&name)
            .send()
            .await
        {
            Ok(_) => {}
            // Another `up` of the same deployment put it in meanwhile.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_limit_exceeded_exception() || s.is_entity_already_exists_exception()
                }) && self
                    .roles_in_profile(&name)
                    .await?
                    .is_some_and(|r| holds_it(&r)) => {}
            Err(e) => return Err(self.fail("iam", "AddRoleToInstanceProfile", &name, &e)),
        }
        Ok(EnsuredRole {
            profile: name,
            made: true,
            remade,
        })
    }

    async fn put_deployment_policy(&self, role: &str, policy: &str) -> Result<()> {
        self.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(DEPLOYMENT_POLICY_NAME)
            .policy_document(policy)
            .send()
            .await
            .map_err(|e| self.fail("iam", "PutRolePolicy", role, &e))?;
        Ok(())
    }

    /// Whether `deployment` in `region` has a role of its own (with or without its profile:
    /// an `up` killed between the two leaves the role alone).
    pub async fn deployment_role_exists(&self, region: &str, deployment: &str) -> Result<bool> {
        Ok(self.deployment_role(region, deployment).await?.is_some())
    }

    /// `deployment`'s own role in `region`, as IAM lists it under its path.
    pub async fn deployment_role(
        &self,
        region: &str,
        deployment: &str,
    ) -> Result<Option<DeploymentRole>> {
        let path = deployment_path(region, deployment);
        Ok(self
            .deployment_roles_under(&path)
            .await?
            .into_iter()
            .find(|r| r.region == region && r.deployment == deployment))
    }

    /// Removes a deployment's role and profile, whichever parts exist (as
    /// [`Cloud::remove_instance_profile`]).
    pub async fn remove_deployment_role(
        &self,
        region: &str,
        deployment: &str,
    ) -> (bool, Vec<Error>) {
        let name = deployment_role_name(region, deployment);
        // Its profile's steps only when it has one: a change to a profile that does not
        // exist may be judged against another ARN than the path's, and refused.
        let profile = match self.roles_in_profile(&name).await {
            Ok(None) => None,
            Ok(Some(_)) | Err(_) => Some(name.as_str()),
        };
        self.remove_role(&name, profile, DEPLOYMENT_POLICY_NAME, &[])
            .await
    }

    /// Every deployment's role of the account (ListRoles under `/labship/deployments/`, all
    /// pages).
    pub async fn deployment_roles(&self) -> Result<Vec<DeploymentRole>> {
        self.deployment_roles_under(DEPLOYMENT_PATH).await
    }

    /// The deployments' roles of `region` (one listing for a whole class).
    pub async fn deployment_roles_in(&self, region: &str) -> Result<Vec<DeploymentRole>> {
        self.deployment_roles_under(&format!("{DEPLOYMENT_PATH}{region}/"))
            .await
    }

    async fn deployment_roles_under(&self, prefix: &str) -> Result<Vec<DeploymentRole>> {
        let mut pages = self
            .iam
            .list_roles()
            .path_prefix(prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("iam", "ListRoles", prefix, &e))?;
            for role in page.roles() {
                let Some((region, deployment)) = role
                    .path()
                    .strip_prefix(DEPLOYMENT_PATH)
                    .map(|rest| rest.trim_end_matches('/'))
                    .and_then(|rest| rest.split_once('/'))
                else {
                    continue;
                };
                if role.role_name() != deployment_role_name(region, deployment) {
                    continue;
                }
                found.push(DeploymentRole {
                    name: role.role_name().to_string(),
                    region: region.to_string(),
                    deployment: deployment.to_string(),
                    created_secs: role.create_date().secs(),
                    trusted_by_ec2_only: role
                        .assume_role_policy_document()
                        .is_some_and(is_labships_trust),
                });
            }
        }
        Ok(found)
    }
}

/// Whether a trust policy as IAM returns it (URL-encoded JSON) is labship's: every statement
/// lets the EC2 service, and no one else, assume the role (IAM may give a string as a list).
fn is_labships_trust(document: &str) -> bool {
    use serde_json::Value;
    let text = percent_encoding::percent_decode_str(document).decode_utf8_lossy();
    let Some(doc) = serde_json::from_str::<Value>(&text)
        .ok()
        .or_else(|| serde_json::from_str::<Value>(document).ok())
    else {
        return false;
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        match v {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(all) => all.iter().map(|x| x.as_str().map(String::from)).collect(),
            _ => None,
        }
    };
    let statements = match &doc["Statement"] {
        Value::Array(all) => all.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        _ => return false,
    };
    !statements.is_empty()
        && statements.iter().all(|s| {
            let principal_ok = s["Principal"].as_object().is_some_and(|p| {
                p.len() == 1
                    && p.get("Service").and_then(strings) == Some(vec!["ec2.amazonaws.com".into()])
            });
            s["Effect"] == "Allow"
                && s.get("NotPrincipal").is_none()
                && principal_ok
                && strings(&s["Action"]) == Some(vec!["sts:AssumeRole".into()])
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ec2_only_trust_is_labships() {
        assert!(is_labships_trust(TRUST_POLICY));
        // As IAM returns it: URL-encoded, a list for a string.
        let encoded = percent_encoding::utf8_percent_encode(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com"]},"Action":["sts:AssumeRole"]}]}"#,
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert!(is_labships_trust(&encoded));
        for other in [
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"sts:AssumeRole"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com","AWS":"*"},"Action":"sts:AssumeRole"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com","lambda.amazonaws.com"]},"Action":"sts:AssumeRole"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"},{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#,
            r#"{"Statement":[]}"#,
            "not json",
        ] {
            assert!(!is_labships_trust(other), "{other}");
        }
    }
}
