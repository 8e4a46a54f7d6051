//! `labship down --ec2`: removes a deployment's resources in reverse order of creation
//! (instances, then their security group and sealed token, then, when asked, its images and
//! the shared IAM role), found by their tags and names. One failure does not stop the others; each is reported.
//! Running it again finds nothing and says so.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::console::{self, TokenFrom};
use super::{backup, sealed};
use crate::aws::ec2::Instance;
use crate::aws::iam::INSTANCE_PROFILE;
use crate::aws::Aws;
use crate::aws::Cloud;
use crate::config::{Config, Target};
use crate::error::{Error, Result};
use crate::hosts::{DownOptions, DownReport, SavedWorkspace};
use crate::interrupt;
use crate::output::Printer;
use crate::push::Ecr;

/// How long termination may take before `down` gives up waiting (it is usually < 1 min).
const TERMINATE_WAIT: Duration = Duration::from_secs(600);
/// How long a security group may stay in use by a terminated instance's interface.
const GROUP_WAIT: Duration = Duration::from_secs(180);

/// Saves one instance's workspace through its Jupyter (with the sealed token). None: its
/// Jupyter never started (the console never said it served), so there is nothing to save.
async fn save(
    cloud: &Cloud,
    inst: &Instance,
    dest: &std::path::Path,
) -> Result<Option<SavedWorkspace>, String> {
    // A pending instance has never run anything: nothing to save.
    if inst.state == "pending" {
        return Ok(None);
    }
    if inst.state == "stopped" {
        return Err(format!(
            "the instance is stopped, so its Jupyter cannot be reached; `labship up {} --ec2` starts it with its notebooks, and `down` then saves them",
            inst.deployment
        ));
    }
    if inst.state != "running" {
        return Err(format!(
            "the instance is {}, so its Jupyter cannot be reached",
            inst.state
        ));
    }
    let console = cloud
        .console(&inst.id, true)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    if !console::ever_served(&console) {
        return Ok(None);
    }
    let Some(port) = inst.port else {
        return Err("the instance has no labship:port tag to reach Jupyter on".into());
    };
    let served = console::served(&console);
    let (path, pin) = served
        .as_ref()
        .map_or(("/lab".to_string(), None), |s| (s.path.clone(), s.tls));
    let token = match served.map(|s| s.token) {
        Some(TokenFrom::Image) => {
            return Err("its image sets its own Jupyter token, which labship does not hold, so it cannot read the workspace".into())
        }
        Some(TokenFrom::Logged(finding)) => finding.token,
        _ => sealed::read(cloud, &inst.deployment)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "its token parameter {} is gone",
                    sealed::parameter(&inst.deployment)
                )
            })?,
    };
    // Through a Systems Manager session when no port is open (--access ssm).
    let (addr, tunnel) = super::jupyter_address(cloud, inst, port)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the instance has no public IP address to reach Jupyter on")?;
    // Over TLS to the certificate the host published; plain HTTP only for a host of a
    // labship from before TLS, whose console has no fingerprint.
    let endpoint = match pin {
        Some(pin) => crate::http::Endpoint::Pinned(addr, pin),
        None => crate::http::Endpoint::Plain(addr),
    };
    let saved = backup::save_workspace(
        &endpoint,
        &backup::api_base(&path),
        token.expose(),
        &inst.id,
        dest,
    )
    .await
    .map(Some);
    if let Some(tunnel) = tunnel {
        tunnel.close().await;
    }
    saved
}

/// What `down` is about to remove, in words, for the confirmation question (None: nothing).
pub async fn preview(aws: &Aws, config: &Config, opts: &DownOptions) -> Result<Option<String>> {
    let cloud = Cloud::new(aws);
    let deployment = &config.name;
    let parameter = sealed::parameter(deployment);
    let (instances, groups, token) = tokio::try_join!(
        cloud.instances(Some(deployment)),
        cloud.security_groups(Some(deployment)),
        cloud.secure_parameter_exists(&parameter),
    )?;
    let instances: Vec<String> = instances.into_iter().map(|i| i.id).collect();
    let groups: Vec<String> = groups.into_iter().map(|g| g.id).collect();
    if instances.is_empty() && groups.is_empty() && !token && !opts.purge_images && !opts.all {
        return Ok(None);
    }
    let mut what = Vec::new();
    if !instances.is_empty() {
        what.push(if opts.delete_data {
            format!(
                "terminate {} WITHOUT saving its workspace (its notebooks are deleted with the instance's disk)",
                instances.join(", ")
            )
        } else {
            format!(
                "save the workspace of {} to {} and terminate it",
                instances.join(", "),
                opts.backup_root.display()
            )
        });
    }
    if !groups.is_empty() {
        what.push(format!("delete security group {}", groups.join(", ")));
    }
    if token {
        what.push(format!("delete its token parameter {parameter}"));
    }
    if opts.purge_images {
        what.push(format!(
            "delete every image in ECR repository {}",
            config.push.repository
        ));
    }
    if opts.all {
        what.push("remove the shared IAM role labship-instance if no deployment uses it".into());
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
    let (instances, groups, caller) = tokio::try_join!(
        cloud.instances(Some(deployment)),
        cloud.security_groups(Some(deployment)),
        cloud.caller_arn(),
    )?;
    super::require_owner(
        deployment,
        &caller,
        instances
            .iter()
            .map(|i| &i.owner)
            .chain(groups.iter().map(|g| &g.owner)),
        opts.force,
        "remove",
    )?;

    // 1. Instances (they hold the security group), after saving their workspaces: the
    //    instance's disk is deleted with it.
    if !opts.delete_data {
        let stamp = aws_smithy_types::DateTime::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
        )
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
        .replace(':', "");
        for inst in &instances {
            let mut dest = opts.backup_root.join(format!("{deployment}-{stamp}"));
            if instances.len() > 1 {
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

    // 4. The shared role, only with --all and when no deployment uses it any more.
    if opts.all {
        match cloud.instances_everywhere().await {
            Ok(left) if left.is_empty() => {
                let (removed, failures) = cloud.remove_instance_profile().await;
                report.iam_removed = removed && failures.is_empty();
                if !failures.is_empty()
                    && failures
                        .iter()
                        .all(|e| matches!(e, Error::AccessDenied { .. }))
                {
                    // An operator: the role is an administrator's to remove.
                    report.iam_kept = Some(format!(
                        "{INSTANCE_PROFILE} is kept: your identity may not remove it (operators hold no IAM write); an administrator removes it with the commands in infra/README.md"
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
        .chain(token_deleted.then(|| format!("SSM parameter {parameter}")))
        .chain((report.images_deleted > 0).then(|| format!("{} ECR images", report.images_deleted)))
        .chain(
            report
                .repository_deleted
                .iter()
                .map(|r| format!("ECR repository {r}")),
        )
        .chain(
            report
                .iam_removed
                .then(|| format!("IAM role and instance profile {}", INSTANCE_PROFILE)),
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
