//! `labship down --ec2`: removes a deployment's resources in reverse order of creation
//! (instances, then its data volume when asked, its security group and sealed token, then,
//! when asked, its images), found by their tags and names; the group a class's seats share
//! goes with the last of them ([`release_class`]). `--all` does that for every deployment
//! (and class) in every region, then removes the shared IAM role. One failure does not stop
//! the others; each is reported.
//! Running it again finds nothing and says so.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{stream, StreamExt};

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
/// How many data volumes or security groups of a class are deleted at once.
const AT_ONCE: usize = 8;

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
    let (shared, instances): (Vec<Instance>, Vec<Instance>) = instances
        .into_iter()
        .partition(|i| i.shared_host().is_some_and(|h| h.seats.len() > 1));
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
    if shared.is_empty()
        && on_volume.is_empty()
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
    // A seat of a shared host: it leaves the host, which ends with the last of its seats.
    for inst in &shared {
        let beside = inst
            .seat
            .as_ref()
            .and_then(|s| s.host.as_ref().map(|h| h.beside(&s.seat).join(", ")))
            .unwrap_or_default();
        what.push(if beside.is_empty() {
            format!("terminate {}", inst.id)
        } else {
            format!(
                "take it off {} (terminated once seat(s) {beside} go too)",
                inst.id
            )
        });
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

/// What [`release_class`] would delete once `removing` (seat deployments, or the class's own
/// name) are down: the groups of the class's seats that no other seat's instance is in.
pub async fn release_preview(aws: &Aws, class: &str, removing: &[&str]) -> Result<Option<String>> {
    let cloud = Cloud::new(aws);
    let one = [class];
    let (groups, seats) = tokio::try_join!(cloud.class_groups(&one), cloud.class_seats(class))?;
    let free: Vec<&str> = groups
        .iter()
        .filter(|g| {
            !seats.iter().any(|s| {
                s.security_groups.contains(&g.id) && !removing.contains(&s.deployment.as_str())
            })
        })
        .map(|g| g.id.as_str())
        .collect();
    if free.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "delete security group {} of class `{class}` in {}",
        free.join(", "),
        cloud.region
    )))
}

/// The security group a class's seats share (one in each VPC the class was started in),
/// deleted once no instance is in it (after a class's `down`, a plain `down` of the class's
/// name when the group is all that is left, or a class's `up` in which no seat started);
/// while one is, kept, and the report says which instances are. A failure is in the
/// report's `failures`; Err: Ctrl-C, or a listing (the groups, the seats, the caller).
pub async fn release_class(aws: &Aws, class: &str, force: bool) -> Result<DownReport> {
    let cloud = Cloud::new(aws);
    let mut report = DownReport::new(Target::Ec2, class, Some(cloud.region.clone()));
    let groups = cloud.class_groups(&[class]).await?;
    if groups.is_empty() {
        return Ok(report);
    }
    let seats = cloud.class_seats(class).await?;
    let mut free = Vec::new();
    for g in &groups {
        let used: Vec<&str> = seats
            .iter()
            .filter(|s| s.security_groups.contains(&g.id))
            .map(|s| s.id.as_str())
            .collect();
        if used.is_empty() {
            free.push(g);
        } else {
            report.kept.push(format!(
                "security group {} of class `{class}`: the seats' instances {} are in it",
                g.id,
                used.join(", ")
            ));
        }
    }
    if free.is_empty() {
        return Ok(report);
    }
    let caller = cloud.caller_arn().await?;
    if let Err(e) = super::require_owner(
        class,
        &caller,
        free.iter().map(|g| &g.owner),
        force,
        "remove",
    ) {
        report.failures.push(e.to_string());
        return Ok(report);
    }
    for g in free {
        let id = g.id.as_str();
        let deleted = interrupt::cancellable(
            "deleting the class's security group",
            cloud.delete_security_group(id, GROUP_WAIT),
        )
        .await;
        match deleted {
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Ok(true) => {
                report.security_groups_deleted.push(id.to_string());
                report.removed.push(format!("security group {id}"));
            }
            Ok(false) => {}
            Err(e) => report.failures.push(e.to_string()),
        }
    }
    Ok(report)
}

/// `labship down NAME --ec2`: [`down_many`] of one deployment.
pub async fn down(
    aws: &Aws,
    config: &Config,
    opts: &DownOptions,
    printer: &Printer,
) -> Result<DownReport> {
    let mut each = down_many(aws, std::slice::from_ref(config), opts, printer).await?;
    match each.pop() {
        Some((_, Ok(report))) if !report.failures.is_empty() => Err(Error::TeardownIncomplete {
            deployment: config.name.clone(),
            count: report.failures.len(),
            details: report.failures.join("\n"),
        }),
        Some((_, done)) => done,
        None => Err(crate::hosts::plan_bug(
            "the down of one deployment reported none",
        )),
    }
}

/// Of a deployment's instances, the shared host it is a seat of whose other seats stay (not
/// among `names`, the deployments taken down): the seat leaves it ([`vacate`]) rather than
/// ending it.
fn staying_host<'i>(instances: &'i [Instance], names: &[&str]) -> Option<&'i Instance> {
    instances.iter().find(|inst| {
        inst.seat.as_ref().is_some_and(|seat| {
            seat.host.as_ref().is_some_and(|host| {
                host.beside(&seat.seat).iter().any(|s| {
                    !names.contains(&crate::class::seat_deployment(&seat.class, s).as_str())
                })
            })
        })
    })
}

/// How long a seat's leaving script may run on its host: the host's lock (another script of
/// the host, at most a whole boot), then a few Docker calls and an unmount.
const LEAVE_WAIT: Duration = Duration::from_secs(
    180 + 120
        + super::plan::DATA_DEADLINE
        + super::plan::PULL_DEADLINE
        + super::plan::JUPYTER_DEADLINE
        + 180,
);

/// `down` of a seat of a shared host whose other seats stay: the host's script takes the
/// seat off it (its containers and Docker volume; its data volume unmounted, the watchdog no
/// longer watching it), its data volume is detached, and the instance tagged with it in
/// `labship:host-gone` (`gone`: the instance's list, kept across the seats of one `down`).
/// The rest (the volume kept or deleted, the token) follows as for a seat whose instance
/// ended. A host that is not running, a script that fails: the seat stays, said in its
/// report; sent again, each step finds its work done.
async fn vacate(
    cloud: &Cloud,
    t: &mut Teardown<'_>,
    inst: &Instance,
    gone: &mut Vec<String>,
    printer: &Printer,
) -> Result<()> {
    let name = t.config.name.clone();
    let (Some(seat), Some(host)) = (inst.seat.as_ref(), super::plan::ExistingHost::of(inst)) else {
        return Ok(());
    };
    let beside = seat
        .host
        .as_ref()
        .map(|h| h.beside(&seat.seat).join(", "))
        .unwrap_or_default();
    if inst.state != "running" {
        t.stopped = Some(Error::SharedHost {
            class: seat.class.clone(),
            seat: seat.seat.clone(),
            instance: inst.id.clone(),
            others: format!("seat(s) {beside}"),
            action: format!("taking it off its host while the host is {}", inst.state),
            hint: format!(
                "the class's `labship up {} --ec2` starts the host; then `labship down {} --ec2 --seat {}` takes the seat off it",
                seat.class, seat.class, seat.seat
            ),
        });
        return Ok(());
    }
    let Some(image) = inst.image.as_deref() else {
        t.report.failures.push(format!(
            "{} has no labship:image tag: the seat stays on it",
            inst.id
        ));
        return Ok(());
    };
    let script = match host.script(
        super::plan::kept_inputs(inst, &cloud.region, image, host.first_port),
        &name,
        super::plan::SeatScript::Leave,
    ) {
        Ok(script) => script,
        Err(e) => {
            t.report.failures.push(e.to_string());
            return Ok(());
        }
    };
    printer.note(format!(
        "Taking seat {} off {} (it keeps serving seat(s) {beside})",
        seat.seat, inst.id
    ));
    if !cloud.ssm_online(&inst.id).await? {
        t.report.failures.push(format!(
            "{}'s Systems Manager agent is not online, so the seat could not be taken off it; `labship down {} --ec2 --seat {}` again tries once more",
            inst.id, seat.class, seat.seat
        ));
        return Ok(());
    }
    let result = unless_interrupted(
        interrupt::cancellable(
            "the seat leaving its host",
            cloud.run_script(
                &inst.id,
                &script,
                "labship: take a seat off its host",
                LEAVE_WAIT,
            ),
        )
        .await,
    )?;
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            t.report.failures.push(e);
            return Ok(());
        }
    };
    let view = super::console::seen_by(result.stdout.clone(), inst);
    let failed = match super::console::markers(&view).last().map(|m| &m.phase) {
        Some(super::console::MarkerKind::Error { phase, cause }) => {
            Some(format!("while {phase}: {}", crate::token::redact(cause)))
        }
        _ if !result.success => Some(format!("its script ended with status {}", result.status)),
        _ => None,
    };
    if let Some(why) = failed {
        t.report.failures.push(format!(
            "seat {} could not be taken off {} ({why}); it stays there, and `labship down {} --ec2 --seat {}` again tries once more",
            seat.seat, inst.id, seat.class, seat.seat
        ));
        return Ok(());
    }
    t.report
        .removed
        .push(format!("seat {}'s container on {}", seat.seat, inst.id));
    // Its data volume, unmounted by the host: detached, then kept or deleted as any seat's.
    let volumes = cloud.data_volumes_of(&[name.as_str()]).await?;
    let mine: Vec<&DataVolume> = volumes
        .iter()
        .filter(|v| v.attached_to.as_deref() == Some(inst.id.as_str()))
        .collect();
    for v in &mine {
        if let Err(e) = cloud.detach_data_volume(&v.id, &inst.id).await {
            t.report.failures.push(e.to_string());
            return Ok(());
        }
    }
    let ids: Vec<String> = mine.iter().map(|v| v.id.clone()).collect();
    match unless_interrupted(
        interrupt::cancellable(
            "the data volume's detachment",
            cloud.wait_volumes_available(&ids, VOLUME_WAIT),
        )
        .await,
    )? {
        Ok(stuck) if stuck.is_empty() => {}
        Ok(stuck) => {
            t.report.failures.push(format!(
                "data volume {} was still attached to {} {}s after it was detached: see it in the EC2 console",
                stuck.join(", "),
                inst.id,
                VOLUME_WAIT.as_secs()
            ));
            return Ok(());
        }
        Err(e) => {
            t.report.failures.push(e);
            return Ok(());
        }
    }
    // The host lists it no more: its other seats' verbs leave it out, and a later `up` of
    // the class places it anew. (The tag as it is now: a `down --seat` of another of its
    // seats may have run meanwhile.)
    match cloud.instance(&inst.id).await {
        Ok(now) => {
            for s in now
                .iter()
                .filter_map(|i| i.shared_host())
                .flat_map(|h| &h.gone)
            {
                if !gone.contains(s) {
                    gone.push(s.clone());
                }
            }
        }
        Err(e) => {
            t.report.failures.push(e.to_string());
            return Ok(());
        }
    }
    if !gone.contains(&seat.seat) {
        gone.push(seat.seat.clone());
    }
    if let Err(e) = cloud.set_host_gone(&inst.id, gone).await {
        t.report.failures.push(e.to_string());
        return Ok(());
    }
    let all = seat
        .host
        .as_ref()
        .is_some_and(|h| h.seats.iter().all(|s| gone.contains(s)));
    if all {
        // The others left too, by other commands: the host serves no one; it ends here.
        t.instances.push(inst.clone());
        return Ok(());
    }
    t.report
        .kept
        .push(format!("instance {}: it serves seat(s) {beside}", inst.id));
    // Its port, when no seat of the class is on it any more (DescribeInstances may lag the
    // tag: then the class's next `up` closes it).
    if let Some(port) = inst.port {
        match cloud.close_unseated_port(&seat.class, port).await {
            Ok(true) => t.report.removed.push(format!("the class's rule for port {port}")),
            Ok(false) => {}
            // Not a failure of the seat's `down`: nothing listens there any more.
            Err(e) => printer.note(format!(
                "The class's rule for port {port} stays: {e}; the class's next `labship up` closes it"
            )),
        }
    }
    Ok(())
}

/// One deployment's part of [`down_many`].
struct Teardown<'c> {
    config: &'c Config,
    report: DownReport,
    /// Its instances, as step 0 found them.
    instances: Vec<Instance>,
    /// It had data volumes at step 0.
    had_volumes: bool,
    /// Why nothing (more) of it is removed: another identity's, or its workspace could not be
    /// saved.
    stopped: Option<Error>,
    token_deleted: bool,
    role_deleted: bool,
}

impl Teardown<'_> {
    /// Its next step may run: nothing stopped it and nothing failed (what follows a failure
    /// could be in use by an instance that is still there).
    fn clear(&self) -> bool {
        self.stopped.is_none() && self.report.failures.is_empty()
    }
}

/// Removes these deployments' resources in one region, each as `down NAME` would, step by step
/// together: each step asks AWS once for all of them (a describe, TerminateInstances and its
/// wait, DeleteParameters by ten), and the deletes that take one resource each (volumes,
/// groups) run side by side. A class of N seats costs a few calls per seat, not fifteen, and
/// one termination wait rather than N. One deployment's failure stops only its own later
/// steps; a call for all that AWS refuses is made again for each alone, so that one
/// deployment's refusal stays its own. Err: what stops every one of them (Ctrl-C, or the first
/// listing, before anything is removed); else one result per deployment, in the order given:
/// its report, whose `failures` say what is left of it and why, or what stopped it before
/// anything of it was removed (another identity's, a workspace not saved).
pub async fn down_many(
    aws: &Aws,
    configs: &[Config],
    opts: &DownOptions,
    printer: &Printer,
) -> Result<Vec<(String, Result<DownReport>)>> {
    let cloud = Cloud::new(aws);
    let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();

    // 0. Whose each is: another identity's deployment needs --force.
    let (instances, groups, volumes, caller) = tokio::try_join!(
        cloud.instances_of(&names),
        cloud.security_groups_of(&names),
        cloud.data_volumes_of(&names),
        cloud.caller_arn(),
    )?;
    let mut each: Vec<Teardown> = configs
        .iter()
        .map(|config| {
            let name = config.name.as_str();
            let instances: Vec<Instance> = instances
                .iter()
                .filter(|i| i.deployment == name)
                .cloned()
                .collect();
            let volumes: Vec<&DataVolume> =
                volumes.iter().filter(|v| v.deployment == name).collect();
            let owned = super::require_owner(
                name,
                &caller,
                instances
                    .iter()
                    .map(|i| &i.owner)
                    .chain(
                        groups
                            .iter()
                            .filter(|g| g.deployment.as_deref() == Some(name))
                            .map(|g| &g.owner),
                    )
                    .chain(volumes.iter().map(|v| &v.owner)),
                opts.force,
                "remove",
            );
            Teardown {
                config,
                report: DownReport::new(Target::Ec2, name, Some(cloud.region.clone())),
                instances,
                had_volumes: !volumes.is_empty(),
                stopped: owned.err(),
                token_deleted: false,
                role_deleted: false,
            }
        })
        .collect();

    // 0b. A seat of a shared host whose other seats stay leaves it; the instance stays.
    let mut gone: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in each.iter_mut().filter(|t| t.stopped.is_none()) {
        let Some(inst) = staying_host(&t.instances, &names).cloned() else {
            continue;
        };
        let listed = inst
            .shared_host()
            .map(|h| h.gone.clone())
            .unwrap_or_default();
        let gone = gone.entry(inst.id.clone()).or_insert(listed);
        // Its host is not its to end, whatever happens next: a seat that could not leave it
        // stays on it, with its volume and token (the failure says so).
        t.instances.retain(|i| i.id != inst.id);
        vacate(&cloud, t, &inst, gone, printer).await?;
    }

    // 1. Instances (they hold the security groups). The workspace of one on the data volume
    //    stays there; one of an older labship has it on its own disk, which goes with it:
    //    that is saved first through Jupyter.
    if !opts.delete_data {
        for t in each.iter_mut().filter(|t| t.stopped.is_none()) {
            save_on_disk(&cloud, t, opts, printer).await?;
        }
    }
    terminate(&cloud, &mut each, printer).await?;

    // 1b. Their data volumes: kept, unless --delete-data (once no instance holds them).
    let volumes = match clear_names(&each) {
        clear if clear.is_empty() => Vec::new(),
        clear => match cloud.data_volumes_of(&clear).await {
            Ok(found) => found,
            Err(e) => failed_all(&mut each, &e),
        },
    };
    let mut doomed = Vec::new();
    for (n, t) in each.iter_mut().enumerate() {
        if !t.clear() {
            if t.stopped.is_none() && t.had_volumes {
                t.report.failures.push(
                    "data volume kept: an instance of the deployment may still use it".into(),
                );
            }
            continue;
        }
        for v in volumes.iter().filter(|v| v.deployment == t.config.name) {
            if opts.delete_data {
                doomed.push((n, v));
                continue;
            }
            let name = &t.config.name;
            t.report.kept.push(format!(
                "data volume {} with the workspace: the next `labship up {name} --ec2` attaches it; `labship down {name} --ec2 --delete-data` deletes it",
                v.describe()
            ));
            t.report.data_volumes_kept.push(v.clone());
        }
    }
    // Detached by the termination: available within seconds; one wait for all of them. (A
    // failed volume never becomes available: it is deleted as it is.)
    let detaching: Vec<String> = doomed
        .iter()
        .filter(|(_, v)| v.state != "error")
        .map(|(_, v)| v.id.clone())
        .collect();
    let stuck = unless_interrupted(
        interrupt::cancellable(
            "the data volumes' detachment",
            cloud.wait_volumes_available(&detaching, VOLUME_WAIT),
        )
        .await,
    )?;
    let mut detached = Vec::new();
    for (n, v) in doomed {
        match &stuck {
            Err(e) => each[n].report.failures.push(e.clone()),
            Ok(stuck) if stuck.contains(&v.id) => each[n].report.failures.push(format!(
                "data volume {} was still attached {}s after its instance ended: see it in the EC2 console",
                v.id,
                VOLUME_WAIT.as_secs()
            )),
            Ok(_) => detached.push((n, v)),
        }
    }
    let deleted: Vec<(usize, &DataVolume, Result<bool>)> = stream::iter(detached)
        .map(|(n, v)| {
            let cloud = &cloud;
            async move {
                let deleted = match interrupt::checkpoint("deleting the data volume") {
                    Ok(()) => cloud.delete_data_volume(&v.id).await,
                    Err(e) => Err(e),
                };
                (n, v, deleted)
            }
        })
        .buffered(AT_ONCE)
        .collect()
        .await;
    for (n, v, deleted) in deleted {
        match deleted {
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Ok(_) => each[n].report.data_volumes_deleted.push(v.id.clone()),
            Err(e) => each[n].report.failures.push(e.to_string()),
        }
    }

    // 2. Their security groups, once no instance holds them.
    let groups = match clear_names(&each) {
        clear if clear.is_empty() => Vec::new(),
        clear => match cloud.security_groups_of(&clear).await {
            Ok(found) => found,
            Err(e) => failed_all(&mut each, &e),
        },
    };
    let mut doomed = Vec::new();
    for (n, t) in each.iter_mut().enumerate() {
        if t.clear() {
            let mine = groups
                .iter()
                .filter(|g| g.deployment.as_deref() == Some(t.config.name.as_str()));
            doomed.extend(mine.map(|g| (n, g.id.clone())));
        } else if t.stopped.is_none() {
            t.report
                .failures
                .push("security group kept: an instance of the deployment may still use it".into());
        }
    }
    let deleted: Vec<(usize, String, Result<bool>)> = stream::iter(doomed)
        .map(|(n, id)| {
            let cloud = &cloud;
            async move {
                let deleted = interrupt::cancellable(
                    "deleting the security group",
                    cloud.delete_security_group(&id, GROUP_WAIT),
                )
                .await;
                (n, id, deleted)
            }
        })
        .buffered(AT_ONCE)
        .collect()
        .await;
    for (n, id, deleted) in deleted {
        match deleted {
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Ok(true) => each[n].report.security_groups_deleted.push(id),
            Ok(false) => {}
            Err(e) => each[n].report.failures.push(e.to_string()),
        }
    }

    // 2b. Their sealed tokens, once no instance needs them: ten to a DeleteParameters (a single
    //     deployment's with DeleteParameter, as before that call was used).
    interrupt::checkpoint("deleting the token parameters")?;
    let clear: Vec<usize> = (0..each.len()).filter(|n| each[*n].clear()).collect();
    for t in each
        .iter_mut()
        .filter(|t| t.stopped.is_none() && !t.clear())
    {
        t.report.failures.push(format!(
            "token parameter {} kept: an instance of the deployment may still use it",
            sealed::parameter(&t.config.name)
        ));
    }
    for some in clear.chunks(sealed::REMOVED_AT_ONCE) {
        let deployments: Vec<&str> = some.iter().map(|n| each[*n].config.name.as_str()).collect();
        let removed = remove_tokens(&cloud, &deployments, configs.len() > 1).await;
        for (n, removed) in some.iter().zip(removed) {
            match removed {
                Ok(deleted) => each[*n].token_deleted = deleted,
                Err(e) => each[*n].report.failures.push(e.to_string()),
            }
        }
    }

    // 2c. Their own roles (deployments with inputs), once no instance runs with them: one
    //     listing for all.
    for t in each
        .iter_mut()
        .filter(|t| t.stopped.is_none() && !t.clear())
    {
        t.report.failures.push(format!(
            "IAM role {} kept, if there is one: an instance of the deployment may still use it",
            crate::aws::iam::deployment_role_name(&cloud.region, &t.config.name)
        ));
    }
    interrupt::checkpoint("deleting the deployments' roles")?;
    if each.iter().any(Teardown::clear) {
        // One deployment's own path, or every deployment's of the region.
        let roles = match configs {
            [one] => cloud
                .deployment_role(&cloud.region, &one.name)
                .await
                .map(|r| r.into_iter().collect()),
            _ => cloud.deployment_roles_in(&cloud.region).await,
        };
        match roles {
            Ok(roles) => {
                // Side by side, in order (a class with inputs has a role per seat).
                let doomed: Vec<usize> = (0..each.len())
                    .filter(|n| {
                        each[*n].clear()
                            && roles.iter().any(|r| r.deployment == each[*n].config.name)
                    })
                    .collect();
                let removed: Vec<(usize, (bool, Vec<Error>))> = stream::iter(doomed)
                    .map(|n| {
                        let (cloud, name) = (&cloud, each[n].config.name.as_str());
                        async move { (n, cloud.remove_deployment_role(&cloud.region, name).await) }
                    })
                    .buffered(AT_ONCE)
                    .collect()
                    .await;
                for (n, (removed, failures)) in removed {
                    let t = &mut each[n];
                    t.role_deleted = removed && failures.is_empty();
                    t.report
                        .failures
                        .extend(failures.into_iter().map(|e| e.to_string()));
                }
            }
            Err(e) => {
                for t in each.iter_mut().filter(|t| t.clear()) {
                    t.report.failures.push(e.to_string());
                }
            }
        }
    }

    // 3. Images, only when asked: each repository once (a class's seats share one), told in
    //    the report of the first deployment that uses it.
    if opts.purge_images {
        let ecr = Ecr::new(
            aws,
            configs
                .first()
                .and_then(|c| c.push.registry_endpoint.clone()),
        );
        let mut repositories: Vec<String> = Vec::new();
        for t in each.iter().filter(|t| t.stopped.is_none()) {
            if !repositories.contains(&t.config.push.repository) {
                repositories.push(t.config.push.repository.clone());
            }
        }
        for repository in &repositories {
            interrupt::checkpoint("deleting the images")?;
            let Some(t) = each
                .iter_mut()
                .find(|t| t.stopped.is_none() && &t.config.push.repository == repository)
            else {
                continue;
            };
            match ecr.purge(repository).await {
                Ok((count, deleted_repo)) => {
                    t.report.images_deleted = count;
                    if deleted_repo {
                        t.report.repository_deleted = Some(repository.to_string());
                    }
                }
                Err(e) => t.report.failures.push(e.to_string()),
            }
        }
    }

    Ok(each
        .into_iter()
        .map(|t| finish(t, &cloud, printer))
        .collect())
}

/// The names of the deployments whose next step may run ([`Teardown::clear`]).
fn clear_names<'a>(each: &[Teardown<'a>]) -> Vec<&'a str> {
    each.iter()
        .filter(|t| t.clear())
        .map(|t| t.config.name.as_str())
        .collect()
}

/// Step 1's backups: the workspace of each instance that has it on its own disk (an older
/// labship's), saved through its Jupyter. One that cannot be saved stops its deployment.
async fn save_on_disk(
    cloud: &Cloud,
    t: &mut Teardown<'_>,
    opts: &DownOptions,
    printer: &Printer,
) -> Result<()> {
    let deployment = t.config.name.as_str();
    let on_disk: Vec<&Instance> = t.instances.iter().filter(|i| !i.data_volume).collect();
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
            save(cloud, inst, &dest)
                .await
                .map_err(|message| Error::BackupFailed {
                    deployment: deployment.to_string(),
                    instance: inst.id.clone(),
                    message,
                })
        })
        .await;
        match saved {
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => {
                t.stopped = Some(e);
                return Ok(());
            }
            Ok(Some(saved)) => t.report.saved.push(saved),
            Ok(None) => printer.note(format!(
                "{}: its Jupyter never started, so there is no workspace to save",
                inst.id
            )),
        }
    }
    Ok(())
}

/// Step 1's termination: every instance of the deployments still going, in one
/// TerminateInstances (their persistent spot requests cancelled first, in one call), then one
/// wait for all of them.
async fn terminate(cloud: &Cloud, each: &mut [Teardown<'_>], printer: &Printer) -> Result<()> {
    let instances = per_deployment(each, |i| Some(i.id.clone()));
    if instances.is_empty() {
        return Ok(());
    }
    interrupt::checkpoint("terminating the instances")?;
    // A spot instance's persistent request first: left open, it would launch another.
    let requests = per_deployment(each, |i| i.spot_request.clone());
    let cancel = |ids: Vec<String>| async move { cloud.cancel_spot_requests(&ids).await };
    for (n, e) in at_once_else_alone(&requests, cancel).await {
        each[n].report.failures.push(e);
    }
    let ids: Vec<&str> = instances
        .iter()
        .flat_map(|(_, ids)| ids.iter().map(String::as_str))
        .collect();
    printer.note(format!("Terminating {}", ids.join(", ")));
    let end = |ids: Vec<String>| async move { cloud.terminate(&ids).await };
    let refused = at_once_else_alone(&instances, end).await;
    let accepted: Vec<&(usize, Vec<String>)> = instances
        .iter()
        .filter(|(n, _)| !refused.iter().any(|(r, _)| r == n))
        .collect();
    for (n, e) in refused {
        each[n].report.failures.push(e);
    }
    let waited: Vec<String> = accepted
        .iter()
        .flat_map(|(_, ids)| ids.iter().cloned())
        .collect();
    let left = unless_interrupted(
        interrupt::cancellable(
            "the instances' termination",
            cloud.wait_terminated(&waited, TERMINATE_WAIT),
        )
        .await,
    )?;
    for (n, mine) in accepted {
        let t = &mut each[*n];
        match &left {
            Ok(left) => {
                let (still, gone): (Vec<&String>, Vec<&String>) =
                    mine.iter().partition(|id| left.contains(id));
                t.report.terminated = gone.into_iter().cloned().collect();
                if !still.is_empty() {
                    let still: Vec<&str> = still.into_iter().map(String::as_str).collect();
                    t.report.failures.push(format!(
                        "{} still not terminated after {}s",
                        still.join(", "),
                        TERMINATE_WAIT.as_secs()
                    ));
                }
            }
            Err(e) => t.report.failures.push(e.clone()),
        }
    }
    Ok(())
}

/// The deployments still going ([`Teardown::stopped`] not set) with what `pick` takes of
/// their instances (ids), those that have any: by their place in `each`.
fn per_deployment(
    each: &[Teardown<'_>],
    pick: impl Fn(&Instance) -> Option<String>,
) -> Vec<(usize, Vec<String>)> {
    each.iter()
        .enumerate()
        .filter(|(_, t)| t.stopped.is_none())
        .map(|(n, t)| (n, t.instances.iter().filter_map(&pick).collect::<Vec<_>>()))
        .filter(|(_, ids)| !ids.is_empty())
        .collect()
}

/// `call` once with the ids of every deployment in `ids`; when AWS refuses that (one refused id
/// fails a whole TerminateInstances, and one instance with termination protection fails it
/// while others are terminated), `call` again for each deployment's ids alone, so that one
/// deployment's refusal is its own. Returns the deployments that failed, with why.
async fn at_once_else_alone<F, Fut>(ids: &[(usize, Vec<String>)], call: F) -> Vec<(usize, String)>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    if ids.len() > 1 {
        let all: Vec<String> = ids
            .iter()
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect();
        if call(all).await.is_ok() {
            return Vec::new();
        }
    }
    let mut failed = Vec::new();
    for (n, one) in ids {
        if let Err(e) = call(one.clone()).await {
            failed.push((*n, e.to_string()));
        }
    }
    failed
}

/// These deployments' sealed tokens removed: in one DeleteParameters (`batch`), or when that is
/// refused (an operator policy from before labship used it), one by one. Per deployment, in
/// order: whether it had one.
async fn remove_tokens(cloud: &Cloud, deployments: &[&str], batch: bool) -> Vec<Result<bool>> {
    if batch {
        if let Ok(deleted) = sealed::remove_all(cloud, deployments).await {
            return deleted.into_iter().map(Ok).collect();
        }
    }
    let mut removed = Vec::new();
    for d in deployments {
        removed.push(sealed::remove(cloud, d).await);
    }
    removed
}

/// A wait's outcome for the reports: Ctrl-C stops every deployment (Err); any other failure
/// becomes a failure, in words, of each deployment waited for.
fn unless_interrupted<T>(waited: Result<T>) -> Result<std::result::Result<T, String>> {
    match waited {
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => Ok(Err(e.to_string())),
        Ok(done) => Ok(Ok(done)),
    }
}

/// A listing after the termination failed: every deployment still clear fails with it (none of
/// its later steps runs); nothing was found.
fn failed_all<T>(each: &mut [Teardown<'_>], e: &Error) -> Vec<T> {
    for t in each.iter_mut().filter(|t| t.clear()) {
        t.report.failures.push(e.to_string());
    }
    Vec::new()
}

/// One deployment's result: its report (with what failed, each also said on stderr), or what
/// stopped it.
fn finish(t: Teardown<'_>, cloud: &Cloud, printer: &Printer) -> (String, Result<DownReport>) {
    let deployment = t.config.name.clone();
    if let Some(e) = t.stopped {
        return (deployment, Err(e));
    }
    let mut report = t.report;
    let parameter = sealed::parameter(&deployment);
    let role = crate::aws::iam::deployment_role_name(&cloud.region, &deployment);
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
        .chain(
            t.token_deleted
                .then(|| format!("SSM parameter {parameter}")),
        )
        .chain(
            t.role_deleted
                .then(|| format!("IAM role and instance profile {role}")),
        )
        .chain((report.images_deleted > 0).then(|| format!("{} ECR images", report.images_deleted)))
        .chain(
            report
                .repository_deleted
                .iter()
                .map(|r| format!("ECR repository {r}")),
        )
        .collect();
    for f in &report.failures {
        printer.note(format!("failed: {f}"));
    }
    (deployment, Ok(report))
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

/// One deployment (or class) `down --all` found: what it has in one region.
#[derive(Debug, Default)]
struct Found {
    instances: Vec<Instance>,
    volumes: Vec<DataVolume>,
    groups: Vec<String>,
    /// A class's: the group its seats share.
    class_groups: Vec<String>,
}

impl Found {
    /// A deployment's own resources (not only a class's group).
    fn deployment(&self) -> bool {
        !(self.instances.is_empty() && self.volumes.is_empty() && self.groups.is_empty())
    }
}

/// Every labship deployment in every region this account has enabled, by (region, name):
/// its instances, data volumes and security groups, and the groups of classes' seats by
/// (region, class) (a few regions at a time).
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
            match (g.deployment, g.class) {
                (Some(dep), _) => found
                    .entry((region.clone(), dep))
                    .or_default()
                    .groups
                    .push(g.id),
                (None, Some(class)) => found
                    .entry((region.clone(), class))
                    .or_default()
                    .class_groups
                    .push(g.id),
                (None, None) => {}
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
            parts.extend(
                f.class_groups
                    .iter()
                    .map(|g| format!("security group {g} of the class's seats")),
            );
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
    // Region by region, each region's deployments together (a class's seats in one
    // termination).
    let mut by_region: BTreeMap<&str, Vec<Config>> = BTreeMap::new();
    let mut classes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for ((region, name), f) in &found {
        if !f.class_groups.is_empty() {
            classes
                .entry(region.as_str())
                .or_default()
                .push(name.as_str());
            by_region.entry(region.as_str()).or_default();
        }
        if !f.deployment() {
            continue;
        }
        let mut one = config.clone();
        one.name = name.clone();
        one.push.repository = format!("labship/{name}");
        by_region.entry(region.as_str()).or_default().push(one);
    }
    for (region, configs) in by_region {
        interrupt::checkpoint("the next region")?;
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        if !names.is_empty() {
            printer.note(format!("Taking down `{}` in {region}", names.join("`, `")));
        }
        let done = if names.is_empty() {
            Ok(Vec::new())
        } else {
            down_many(&aws.in_region(region), &configs, &each, printer).await
        };
        match done {
            Ok(results) => {
                for (name, done) in results {
                    match done {
                        // Its failures, if any, are absorbed with its name.
                        Ok(done) => report.absorb(done),
                        Err(e) => report.failures.push(format!("`{name}` in {region}: {e}")),
                    }
                }
            }
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => report
                .failures
                .push(format!("`{}` in {region}: {e}", names.join("`, `"))),
        }
        // Then the groups classes' seats shared, once none of them is left.
        for class in classes.get(region).into_iter().flatten() {
            match release_class(&aws.in_region(region), class, each.force).await {
                Ok(done) => report.absorb(done),
                Err(e @ Error::Interrupted { .. }) => return Err(e),
                Err(e) => report.failures.push(format!("`{class}` in {region}: {e}")),
            }
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
