//! `labship down --ec2`: removes a deployment's resources in reverse order of creation
//! (instances, then its data volume when asked, its security group and sealed token, then,
//! when asked, its images), found by their tags and names; `--all` does that for every
//! deployment in every region, then removes the shared IAM role. One failure does not stop the others; each is reported.
//! Running it again finds nothing and says so.

use std::collections::BTreeMap;
use std::time::Duration;

use super::backup::save;
use super::sealed;
use crate::aws::ebs::DataVolume;
use crate::aws::ec2::Instance;
use crate::aws::iam::{Boundary, Removal, INSTANCE_PROFILE};
use crate::aws::Aws;
use crate::aws::Cloud;
use crate::config::{Config, Target};
use crate::error::{Error, Result};
use crate::hosts::{DownOptions, DownReport};
use crate::interrupt;
use crate::output::Printer;
use crate::push::Ecr;

/// How long termination may take before `down` gives up waiting (it is usually < 1 min).
const TERMINATE_WAIT: Duration = Duration::from_secs(600);
/// How long a terminated instance's data volume may take to become available.
const VOLUME_WAIT: Duration = Duration::from_secs(300);
/// How long a security group may stay in use by a terminated instance's interface.
const GROUP_WAIT: Duration = Duration::from_secs(180);

/// What `down` is about to remove, in words, for the confirmation question (None: nothing).
pub async fn preview(aws: &Aws, config: &Config, opts: &DownOptions) -> Result<Option<String>> {
    let cloud = Cloud::new(aws);
    let deployment = &config.name;
    let parameter = sealed::parameter(deployment);
    let (instances, groups, token, volumes, own_role) = tokio::try_join!(
        cloud.instances(Some(deployment)),
        cloud.security_groups(Some(deployment)),
        cloud.secure_parameter_exists(&parameter),
        cloud.data_volumes(Some(deployment)),
        cloud.deployment_role_exists(&cloud.region, deployment),
    )?;
    let (on_volume, on_disk): (Vec<Instance>, Vec<Instance>) =
        instances.into_iter().partition(|i| i.data_volume);
    let ids = |list: &[Instance]| {
        list.iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let volume_ids: Vec<String> = volumes.iter().map(DataVolume::describe).collect();
    let groups: Vec<String> = groups.into_iter().map(|g| g.id).collect();
    let deletes_volumes = opts.delete_data && !volumes.is_empty();
    if on_volume.is_empty()
        && on_disk.is_empty()
        && groups.is_empty()
        && !token
        && !own_role
        && !deletes_volumes
        && !opts.purge_images
    {
        return Ok(None);
    }
    let mut what = Vec::new();
    if !on_disk.is_empty() {
        what.push(if opts.delete_data {
            format!(
                "terminate {} WITHOUT saving its workspace (its notebooks are deleted with the instance's disk)",
                ids(&on_disk)
            )
        } else {
            format!(
                "save the workspace of {} to {} and terminate it",
                ids(&on_disk),
                opts.backup_root.display()
            )
        });
    }
    if !on_volume.is_empty() {
        what.push(format!("terminate {}", ids(&on_volume)));
    }
    if deletes_volumes {
        what.push(format!(
            "DELETE data volume {} with the workspace and every notebook in it",
            volume_ids.join(", ")
        ));
    } else if !volumes.is_empty() {
        what.push(format!(
            "keep data volume {} with the workspace (`--delete-data` deletes it)",
            volume_ids.join(", ")
        ));
    }
    if !groups.is_empty() {
        what.push(format!("delete security group {}", groups.join(", ")));
    }
    if token {
        what.push(format!("delete its token parameter {parameter}"));
    }
    if own_role {
        what.push(format!(
            "delete its IAM role and instance profile {}",
            crate::aws::iam::deployment_role_name(&cloud.region, deployment)
        ));
    }
    if opts.purge_images {
        what.push(format!(
            "delete every image in ECR repository {}",
            config.push.repository
        ));
    }
    Ok(Some(format!(
        "{} of `{deployment}` in {}",
        what.join(", "),
        cloud.region
    )))
}

pub async fn down(
    aws: &Aws,
    config: &Config,
    opts: &DownOptions,
    printer: &Printer,
) -> Result<DownReport> {
    let cloud = Cloud::new(aws);
    let deployment = config.name.as_str();
    let repository = config.push.repository.as_str();
    let mut report = DownReport::new(Target::Ec2, deployment, Some(cloud.region.clone()));

    // 0. Whose it is: another identity's deployment needs --force.
    let (instances, groups, volumes, caller) = tokio::try_join!(
        cloud.instances(Some(deployment)),
        cloud.security_groups(Some(deployment)),
        cloud.data_volumes(Some(deployment)),
        cloud.caller_arn(),
    )?;
    super::require_owner(
        deployment,
        &caller,
        instances
            .iter()
            .map(|i| &i.owner)
            .chain(groups.iter().map(|g| &g.owner))
            .chain(volumes.iter().map(|v| &v.owner)),
        opts.force,
        "remove",
    )?;

    // 1. Instances (they hold the security group). The workspace of one on the data volume
    //    stays there; one of an older labship has it on its own disk, which goes with it:
    //    that is saved first through Jupyter.
    let on_disk: Vec<&Instance> = instances.iter().filter(|i| !i.data_volume).collect();
    if !opts.delete_data {
        let stamped = crate::hosts::backup::stamped_dir(&opts.backup_root, deployment);
        for inst in on_disk.iter().copied() {
            let mut dest = stamped.clone();
            if on_disk.len() > 1 {
                dest = dest.join(&inst.id);
            }
            printer.note(format!(
                "Saving the workspace of {} to {}",
                inst.id,
                dest.display()
            ));
            let saved = interrupt::cancellable("saving the workspace", async {
                save(&cloud, inst, &dest)
                    .await
                    .map_err(|message| Error::BackupFailed {
                        deployment: deployment.to_string(),
                        instance: inst.id.clone(),
                        message,
                    })
            })
            .await?;
            match saved {
                Some(saved) => report.saved.push(saved),
                None => printer.note(format!(
                    "{}: its Jupyter never started, so there is no workspace to save",
                    inst.id
                )),
            }
        }
    }
    let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    if !ids.is_empty() {
        interrupt::checkpoint("terminating the instances")?;
        // A spot instance's persistent request first: left open, it would launch another.
        let requests: Vec<String> = instances
            .iter()
            .filter_map(|i| i.spot_request.clone())
            .collect();
        if let Err(e) = cloud.cancel_spot_requests(&requests).await {
            report.failures.push(e.to_string());
        }
        printer.note(format!("Terminating {}", ids.join(", ")));
        match cloud.terminate(&ids).await {
            Ok(()) => match interrupt::cancellable(
                "the instances' termination",
                cloud.wait_terminated(&ids, TERMINATE_WAIT),
            )
            .await
            {
                Err(e @ Error::Interrupted { .. }) => return Err(e),
                Ok(left) if left.is_empty() => report.terminated = ids.clone(),
                Ok(left) => {
                    report.terminated = ids.iter().filter(|i| !left.contains(i)).cloned().collect();
                    report.failures.push(format!(
                        "{} still not terminated after {}s",
                        left.join(", "),
                        TERMINATE_WAIT.as_secs()
                    ));
                }
                Err(e) => report.failures.push(e.to_string()),
            },
            Err(e) => report.failures.push(e.to_string()),
        }
    }

    // 1b. Its data volumes: kept, unless --delete-data (once no instance holds them).
    if report.failures.is_empty() {
        for v in cloud.data_volumes(Some(deployment)).await? {
            if !opts.delete_data {
                report.kept.push(format!(
                    "data volume {} with the workspace: the next `labship up {deployment} --ec2` attaches it; `labship down {deployment} --ec2 --delete-data` deletes it",
                    v.describe()
                ));
                report.data_volumes_kept.push(v);
                continue;
            }
            interrupt::checkpoint("deleting the data volume")?;
            // Detached by the termination: available within seconds.
            // (A failed volume never becomes available: it is deleted as it is.)
            let detached = async {
                if v.state == "error" {
                    Ok(())
                } else {
                    cloud.wait_volume_available(&v.id, VOLUME_WAIT).await
                }
            };
            let deleted =
                match interrupt::cancellable("the data volume's detachment", detached).await {
                    Err(e @ Error::Interrupted { .. }) => return Err(e),
                    Ok(()) => cloud.delete_data_volume(&v.id).await,
                    Err(e) => Err(e),
                };
            match deleted {
                Ok(_) => report.data_volumes_deleted.push(v.id),
                Err(e) => report.failures.push(e.to_string()),
            }
        }
    } else if !volumes.is_empty() {
        report
            .failures
            .push("data volume kept: an instance of the deployment may still use it".into());
    }

    // 2. Its security group(s), once no instance holds them.
    if report.failures.is_empty() {
        for g in cloud.security_groups(Some(deployment)).await? {
            match interrupt::cancellable(
                "deleting the security group",
                cloud.delete_security_group(&g.id, GROUP_WAIT),
            )
            .await
            {
                Err(e @ Error::Interrupted { .. }) => return Err(e),
                Ok(true) => report.security_groups_deleted.push(g.id),
                Ok(false) => {}
                Err(e) => report.failures.push(e.to_string()),
            }
        }
    } else {
        report
            .failures
            .push("security group kept: an instance of the deployment may still use it".into());
    }

    // 2b. Its sealed token, once no instance needs it.
    let parameter = sealed::parameter(deployment);
    let mut token_deleted = false;
    if report.failures.is_empty() {
        match sealed::remove(&cloud, deployment).await {
            Ok(deleted) => token_deleted = deleted,
            Err(e) => report.failures.push(e.to_string()),
        }
    } else {
        report.failures.push(format!(
            "token parameter {parameter} kept: an instance of the deployment may still use it"
        ));
    }

    // 2c. Its own role (a deployment with inputs), once no instance runs with it.
    let role = crate::aws::iam::deployment_role_name(&cloud.region, deployment);
    let mut role_deleted = false;
    if report.failures.is_empty() {
        match cloud
            .deployment_role_exists(&cloud.region, deployment)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                let (removed, failures) = cloud
                    .remove_deployment_role(&cloud.region, deployment)
                    .await;
                role_deleted = removed && failures.is_empty();
                report
                    .failures
                    .extend(failures.into_iter().map(|e| e.to_string()));
            }
            Err(e) => report.failures.push(e.to_string()),
        }
    } else {
        report.failures.push(format!(
            "IAM role {role} kept, if there is one: an instance of the deployment may still use it"
        ));
    }

    // 3. Images, only when asked.
    if opts.purge_images {
        let ecr = Ecr::new(aws, config.push.registry_endpoint.clone());
        match ecr.purge(repository).await {
            Ok((count, deleted_repo)) => {
                report.images_deleted = count;
                if deleted_repo {
                    report.repository_deleted = Some(repository.to_string());
                }
            }
            Err(e) => report.failures.push(e.to_string()),
        }
    }

    report.removed = report
        .terminated
        .iter()
        .map(|i| format!("instance {i}"))
        .chain(
            report
                .security_groups_deleted
                .iter()
                .map(|g| format!("security group {g}")),
        )
        .chain(
            report
                .data_volumes_deleted
                .iter()
                .map(|v| format!("data volume {v}")),
        )
        .chain(token_deleted.then(|| format!("SSM parameter {parameter}")))
        .chain(role_deleted.then(|| format!("IAM role and instance profile {role}")))
        .chain((report.images_deleted > 0).then(|| format!("{} ECR images", report.images_deleted)))
        .chain(
            report
                .repository_deleted
                .iter()
                .map(|r| format!("ECR repository {r}")),
        )
        .collect();
    if !report.failures.is_empty() {
        for f in &report.failures {
            printer.note(format!("failed: {f}"));
        }
        return Err(Error::TeardownIncomplete {
            deployment: deployment.to_string(),
            count: report.failures.len(),
            details: report.failures.join("\n"),
        });
    }
    Ok(report)
}

/// The shared role, when no deployment in any region uses it any more (`down --all`, last).
/// The job hosts' security groups (`run --ec2`, one per VPC), in every region where no job
/// host is left.
/// Returns the (region, run id) of every job host still there, or None when a region could
/// not be looked at.
async fn remove_job_groups(
    aws: &Aws,
    report: &mut DownReport,
) -> Option<std::collections::HashSet<(String, String)>> {
    let regions = match Cloud::new(aws).regions().await {
        Ok(r) => r,
        Err(e) => {
            report.failures.push(e.to_string());
            return None;
        }
    };
    let mut live = Some(std::collections::HashSet::new());
    for region in regions {
        let cloud = Cloud::new(&aws.in_region(&region));
        let (hosts, groups) =
            match tokio::try_join!(cloud.job_hosts(None), cloud.job_security_groups()) {
                Ok(found) => found,
                Err(e) => {
                    report.failures.push(e.to_string());
                    live = None;
                    continue;
                }
            };
        if !hosts.is_empty() {
            if let Some(live) = live.as_mut() {
                live.extend(hosts.into_iter().map(|h| (region.clone(), h.run_id)));
            }
            continue;
        }
        for g in groups {
            match cloud
                .delete_security_group(&g, Duration::from_secs(60))
                .await
            {
                Ok(_) => report
                    .removed
                    .push(format!("security group {g} of the job hosts ({region})")),
                Err(e) => report.failures.push(e.to_string()),
            }
        }
    }
    live
}

/// The job roles whose host is gone (`live`: the job hosts still there, by region and run),
/// then the job hosts' permissions boundary when no job role is left. An operator may remove
/// job roles, not the boundary (an administrator's): it is kept, and said.
async fn remove_job_roles(
    cloud: &Cloud,
    live: &std::collections::HashSet<(String, String)>,
    report: &mut DownReport,
) {
    let roles = match cloud.job_roles().await {
        Ok(roles) => roles,
        Err(e) => return report.failures.push(e.to_string()),
    };
    let mut left = 0;
    for role in roles {
        if live.contains(&(role.region.clone(), role.run_id.clone())) {
            left += 1;
            continue;
        }
        let (removed, failures) = cloud.remove_job_role(&role.run_id).await;
        if failures.is_empty() {
            if removed {
                report.removed.push(format!(
                    "IAM role and instance profile {} (a run's)",
                    role.name
                ));
            }
        } else {
            left += 1;
            report
                .failures
                .extend(failures.into_iter().map(|e| e.to_string()));
        }
    }
    if left > 0 || !live.is_empty() {
        return;
    }
    remove_boundary(cloud, Boundary::Job, report).await;
}

/// How old a deployment's role with no instance must be before `down --all` takes it for a
/// leftover rather than an `up` between its role and its launch.
const NEW_ROLE_SECS: i64 = 15 * 60;

/// Deployments' own roles whose deployment has no instance left (one `down` could not
/// remove, or an `up` killed before its launch) and that are older than [`NEW_ROLE_SECS`],
/// then the deployments' permissions boundary when no such role is left (as
/// [`remove_job_roles`] for runs).
async fn remove_deployment_roles(aws: &Aws, cloud: &Cloud, report: &mut DownReport) {
    let roles = match cloud.deployment_roles().await {
        Ok(roles) => roles,
        Err(e) => return report.failures.push(e.to_string()),
    };
    let mut left = 0;
    for role in roles {
        // A role this young may be an `up` that has not launched yet.
        if crate::hosts::now_secs() - role.created_secs < NEW_ROLE_SECS {
            left += 1;
            report.kept.push(format!(
                "IAM role {} (`{}` in {}) is kept: made less than 15 minutes ago with no instance yet, it may be an `up` about to launch; `labship down {} --ec2` removes it now, a later `down --all` once it is older",
                role.name, role.deployment, role.region, role.deployment
            ));
            continue;
        }
        let there = Cloud::new(&aws.in_region(&role.region));
        match there.instances(Some(&role.deployment)).await {
            Ok(instances) if instances.is_empty() => {}
            Ok(_) => {
                left += 1;
                continue;
            }
            Err(e) => {
                left += 1;
                report.failures.push(e.to_string());
                continue;
            }
        }
        let (removed, failures) = cloud
            .remove_deployment_role(&role.region, &role.deployment)
            .await;
        if failures.is_empty() {
            if removed {
                report.removed.push(format!(
                    "IAM role and instance profile {} (`{}` in {})",
                    role.name, role.deployment, role.region
                ));
            }
        } else {
            left += 1;
            report
                .failures
                .extend(failures.into_iter().map(|e| e.to_string()));
        }
    }
    if left > 0 {
        return;
    }
    remove_boundary(cloud, Boundary::Deployment, report).await;
}

/// A permissions boundary once no role of its kind is left. An operator may not remove it
/// (an administrator's): it is kept, and said.
async fn remove_boundary(cloud: &Cloud, boundary: Boundary, report: &mut DownReport) {
    let account = match cloud.caller_arn().await {
        Ok(arn) => crate::aws::account_of(&arn).to_string(),
        Err(e) => return report.failures.push(e.to_string()),
    };
    let (name, of) = (boundary.name(), boundary.of());
    match cloud.remove_boundary(&account, boundary).await {
        Ok(Removal::Removed) => report.removed.push(format!("IAM policy {name} ({of})")),
        Ok(Removal::Gone) => {}
        Ok(Removal::Kept) => report.kept.push(format!(
            "{of} {name} is kept: an administrator changed it (it has versions of theirs); `aws iam delete-policy-version` of those, then `down --all`, removes it"
        )),
        Err(Error::AccessDenied { .. }) => report.kept.push(format!(
            "{of} {name} is kept: your identity may not remove it (an administrator's, infra/README.md)"
        )),
        Err(e) => report.failures.push(e.to_string()),
    }
}

async fn remove_shared_role(cloud: &Cloud, report: &mut DownReport) {
    match cloud.instances_everywhere().await {
        Ok(left) if left.is_empty() => {
            let (removed, failures) = cloud.remove_instance_profile().await;
            report.iam_removed = removed && failures.is_empty();
            if report.iam_removed {
                report
                    .removed
                    .push(format!("IAM role and instance profile {INSTANCE_PROFILE}"));
            }
            if !failures.is_empty()
                && failures
                    .iter()
                    .all(|e| matches!(e, Error::AccessDenied { .. }))
            {
                // An operator: the role is an administrator's to remove.
                report.iam_kept = Some(format!(
                    "{INSTANCE_PROFILE} is kept: your identity may not remove it (operators hold no IAM write on it); an administrator removes it with the commands in infra/README.md"
                ));
            } else {
                report
                    .failures
                    .extend(failures.into_iter().map(|e| e.to_string()));
            }
        }
        Ok(left) => {
            let mut users: Vec<String> = left
                .into_iter()
                .map(|(region, i)| format!("{} ({region})", i.deployment))
                .collect();
            users.sort();
            users.dedup();
            report.iam_kept = Some(format!(
                "{} is still used by {}",
                INSTANCE_PROFILE,
                users.join(", ")
            ));
        }
        Err(e) => report.failures.push(e.to_string()),
    }
}

/// One deployment `down --all` found: what it has in one region.
#[derive(Debug, Default)]
struct Found {
    instances: Vec<Instance>,
    volumes: Vec<DataVolume>,
    groups: Vec<String>,
}

/// Every labship deployment in every region this account has enabled, by (region, name):
/// its instances, data volumes and security groups (a few regions at a time).
async fn everywhere(aws: &Aws) -> Result<BTreeMap<(String, String), Found>> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let regions = Cloud::new(aws).regions().await?;
    let per_region: Vec<_> = futures_util::stream::iter(regions)
        .map(|region| async move {
            let cloud = Cloud::new(&aws.in_region(&region));
            let (instances, groups, volumes) = tokio::try_join!(
                cloud.instances(None),
                cloud.security_groups(None),
                cloud.data_volumes(None),
            )?;
            Ok::<_, Error>((region, instances, groups, volumes))
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    for (region, instances, groups, volumes) in per_region {
        for i in instances.into_iter().filter(|i| !i.deployment.is_empty()) {
            let key = (region.clone(), i.deployment.clone());
            found.entry(key).or_default().instances.push(i);
        }
        for g in groups {
            if let Some(dep) = g.deployment {
                found
                    .entry((region.clone(), dep))
                    .or_default()
                    .groups
                    .push(g.id);
            }
        }
        for v in volumes.into_iter().filter(|v| !v.deployment.is_empty()) {
            let key = (region.clone(), v.deployment.clone());
            found.entry(key).or_default().volumes.push(v);
        }
    }
    Ok(found)
}

/// `down --all`'s confirmation: every deployment it will take down, where, and what it has.
pub async fn preview_all(aws: &Aws, opts: &DownOptions) -> Result<Option<String>> {
    let found = everywhere(aws).await?;
    let mut what: Vec<String> = found
        .iter()
        .map(|((region, name), f)| {
            let mut parts: Vec<String> = f
                .instances
                .iter()
                .map(|i| format!("instance {} ({}, {})", i.id, i.instance_type, i.state))
                .collect();
            parts.extend(f.volumes.iter().map(|v| {
                format!(
                    "data volume {} {}",
                    v.describe(),
                    if opts.delete_data {
                        "DELETED with its notebooks"
                    } else {
                        "kept"
                    }
                )
            }));
            parts.extend(f.groups.iter().map(|g| format!("security group {g}")));
            format!("`{name}` in {region}: {}", parts.join(", "))
        })
        .collect();
    if what.is_empty() && !opts.all {
        return Ok(None);
    }
    what.push(format!(
        "then the job hosts' security groups where no job runs, the IAM roles of runs whose host is gone (and the job hosts' permissions boundary when none is left), the IAM roles of deployments with no instance left (and the deployments' permissions boundary when none is left), and the shared IAM role {INSTANCE_PROFILE} if no deployment or job uses it"
    ));
    Ok(Some(format!(
        "take down every labship deployment in every region: {}",
        what.join("; ")
    )))
}

/// `down --all`: every deployment `everywhere` finds, each as `down NAME` in its region would
/// (its sealed token, and with --purge-images its `labship/NAME` images, go too), then the
/// shared role when none is left. One deployment's failure does not stop the others.
pub async fn down_all(
    aws: &Aws,
    config: &Config,
    opts: &DownOptions,
    printer: &Printer,
) -> Result<DownReport> {
    let found = everywhere(aws).await?;
    let mut report = DownReport::new(Target::Ec2, "all", None);
    let each = DownOptions {
        all: false,
        ..opts.clone()
    };
    for (region, name) in found.keys() {
        interrupt::checkpoint("the next deployment")?;
        printer.note(format!("Taking down `{name}` in {region}"));
        let mut one = config.clone();
        one.name = name.clone();
        one.push.repository = format!("labship/{name}");
        match down(&aws.in_region(region), &one, &each, printer).await {
            Ok(done) => report.absorb(done),
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => report.failures.push(format!("`{name}` in {region}: {e}")),
        }
    }
    let cloud = Cloud::new(aws);
    if let Some(live) = remove_job_groups(aws, &mut report).await {
        remove_job_roles(&cloud, &live, &mut report).await;
    }
    remove_deployment_roles(aws, &cloud, &mut report).await;
    remove_shared_role(&cloud, &mut report).await;
    if !report.failures.is_empty() {
        for f in &report.failures {
            printer.note(format!("failed: {f}"));
        }
        return Err(Error::TeardownIncomplete {
            deployment: "all".into(),
            count: report.failures.len(),
            details: report.failures.join("\n"),
        });
    }
    Ok(report)
}
