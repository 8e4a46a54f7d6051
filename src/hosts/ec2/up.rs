//! `labship up --ec2`: observe, plan (see [`super::plan`]), then apply that plan.
//!
//! The named steps, each only when the one before succeeded:
//! 1. **checks** that change nothing: the instance type and the deployment's instances; a
//!    live instance that already serves this image needs only its console read;
//! 2. **observe** the rest: host image, VPC, the caller's address;
//! 3. **prepare** the push: build when needed, log in, make sure the repository exists (a
//!    failed build leaves nothing in AWS);
//! 4. **plan** from all of that (the same function `--dry-run` prints);
//! 5. **apply**: instance role, security group and the sealed token (an SSM SecureString,
//!    see [`super::sealed`]), then upload and RunInstances at the same time (the host boots
//!    while layers upload; its user-data retries the pull), or the container replaced in
//!    place through Systems Manager;
//! 6. **wait** for the console's markers until Jupyter accepts the token.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::console::{self, MarkerKind, Phase, Served, TokenFrom};
use super::plan::{self, Observed, Options, DATA_DEADLINE, JUPYTER_DEADLINE, PULL_DEADLINE};
use super::userdata;
use super::{ingress_cidrs, launch, resolve_ami, role, sealed, watch};
use crate::aws::ebs::{self, DataVolume, VolumeSpec};
use crate::aws::ec2::{Ingress, Instance, LaunchSpec};
use crate::aws::iam::{Boundary, DeploymentRoleSpec, INSTANCE_PROFILE};
use crate::aws::retry::{self, Step};
use crate::aws::Aws;
use crate::aws::Cloud;
use crate::build;
use crate::config::{Access, Config, Target};
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::hosts::{Plan, PlanDetail, PlannedAction, Timings, TokenReport, UpReport};
use crate::interrupt;
use crate::output::Printer;
use crate::push::{self, Ecr, ImageRegistry};
use crate::token::JupyterToken;

/// Steps 1 and 2 for `--dry-run`: everything a plan can show, with nothing created or built
/// (the registry is asked for its address only, which is a read).
pub async fn dry_run(engine: &Engine, aws: &Aws, config: &Config, opts: &Options) -> Result<Plan> {
    let cloud = Cloud::new(aws);
    let mut observed = check(&cloud, engine, config, opts.force).await?;
    plan::refusals(config, &observed)?;
    let opts = &settled(&cloud, opts, &observed).await?;
    let ecr = Ecr::new(aws, config.push.registry_endpoint.clone());
    let (ami, vpc, ingress, profile, auth, ()) = tokio::try_join!(
        resolve_ami(&cloud, &config.ec2.ami, config.build.platform),
        cloud.vpc(config.ec2.subnet.as_deref()),
        ingress_for(config, opts),
        cloud.instance_profile_exists(),
        ecr.login(),
        cloud.require_key_pair(config.ec2.ssh_key.as_deref()),
    )?;
    if let Some(live) = observed.live().filter(|_| observed.serves(config, opts)) {
        observed.console = Some(console::seen_by(
            cloud
                .console(&live.id, observed.instance_type.nitro)
                .await?
                .unwrap_or_default(),
            live,
        ));
    }
    observed.ami = Some(ami);
    observed.vpc = Some(vpc.vpc);
    observed.subnet_zone = vpc.subnet_zone;
    observed.ingress = Ok(ingress);
    observed.profile_exists = Some(profile);
    observed.registry = Some(auth.server);
    plan::plan(config, opts, &observed)
}

/// Step 1: the reads every `up` makes (at once: they are the no-op's latency), and the
/// owner check: another identity's deployment is refused unless `force`.
async fn check(cloud: &Cloud, engine: &Engine, config: &Config, force: bool) -> Result<Observed> {
    let (instance_type, instances, data_volumes, caller) = tokio::try_join!(
        cloud.instance_type(&config.ec2.instance_type),
        cloud.instances(Some(&config.name)),
        cloud.data_volumes(Some(&config.name)),
        cloud.caller_arn(),
    )?;
    super::require_owner(
        &config.name,
        &caller,
        instances
            .iter()
            .map(|i| &i.owner)
            .chain(data_volumes.iter().map(|v| &v.owner)),
        force,
        "update",
    )?;
    let account = crate::aws::account_of(&caller).to_string();
    let (content_tag, _) = build::planned_tag(config)?;
    let local = format!("{}:{content_tag}", config.local_image());
    let image_size = engine.image_size(&local).await.ok().flatten();
    Ok(Observed {
        region: cloud.region.clone(),
        instance_type,
        instances,
        needs_build: image_size.is_none(),
        content_tag,
        console: None,
        ingress: Err("not read".into()),
        ami: None,
        vpc: None,
        registry: None,
        image_size,
        profile_exists: None,
        account,
        data_volumes,
        subnet_zone: None,
    })
}

/// These options for the deployment as observed: its existing instance's settings
/// ([`Options::following`]), then, for a seat in its class's group or a new seat, the port
/// and access of the seats in that group unless others are asked for
/// ([`Options::joining`]): the group's rules are for one port and one way in.
async fn settled(cloud: &Cloud, opts: &Options, observed: &Observed) -> Result<Options> {
    let existing = observed.live().or(observed.stopped());
    let opts = opts.following(existing);
    let Some(seat) = &opts.seat else {
        return Ok(opts);
    };
    let in_group = existing.is_none_or(|i| i.in_class_group(&seat.class));
    if !in_group || (opts.port_asked && opts.way_in_asked()) {
        return Ok(opts);
    }
    let class = cloud.class_settings(&seat.class).await?;
    Ok(opts.joining(class))
}

pub async fn up<'a>(
    engine: &Engine,
    aws: &'a Aws,
    config: &Config,
    opts: &Options,
    ticket: Option<launch::SeatTicket<'a>>,
    printer: &Printer,
) -> Result<UpReport> {
    let started = Instant::now();
    let cloud = Cloud::new(aws);
    let ecr = Ecr::new(aws, config.push.registry_endpoint.clone());

    // 1. Checks that change nothing; what makes any `up` impossible is refused here, before
    //    a build or anything in AWS.
    let mut observed = interrupt::cancellable(
        "checking the deployment",
        check(&cloud, engine, config, opts.force),
    )
    .await?;
    plan::refusals(config, &observed)?;
    let opts = &settled(&cloud, opts, &observed).await?;
    if observed.live().is_none() && observed.stopped().is_none() {
        plan::check_room(opts, &observed.instance_type)?;
    }
    mend_seat_tags(&cloud, config, &observed, printer).await;
    if opts.access == Access::Ssm {
        // Without the plugin no one could reach what this would create.
        crate::tunnel::find_plugin()?;
    }
    if !config.push.repository.starts_with("labship/") {
        printer.note(format!(
            "The repository {} is outside labship/: the instance role labship created, and the deployments' permissions boundary, pull only from labship/* (widen them as infra/README.md says, or the host cannot pull)",
            config.push.repository
        ));
    }
    if let Some(live) = observed
        .live()
        .filter(|_| observed.serves(config, opts))
        .cloned()
    {
        // The no-op path: the console decides; the address service being down must not
        // stop it (the security group is then left as it is).
        interrupt::made(instance_made(&live.id, &config.name));
        let (console, ingress) = interrupt::cancellable("reading the console", async {
            Ok(tokio::join!(
                cloud.console(&live.id, observed.instance_type.nitro),
                ingress_for(config, opts)
            ))
        })
        .await?;
        let console = console::seen_by(console?.unwrap_or_default(), &live);
        observed.ingress = ingress.map_err(|e| e.to_string());
        if plan::newest_error(&console).is_some() {
            observed.registry = Some(ecr.login().await?.server);
        }
        observed.console = Some(console);
        let plan = plan::plan(config, opts, &observed)?;
        drop(ticket);
        return in_place(
            &cloud, engine, &ecr, config, opts, &observed, plan, started, printer,
        )
        .await;
    }

    if let Some(stopped) = observed.stopped().cloned() {
        drop(ticket);
        return start(
            &cloud, engine, &ecr, config, opts, observed, &stopped, started, printer,
        )
        .await;
    }

    // 2. Everything else that must hold before anything is created. The shared instance role
    //    is made here when missing (by an identity allowed to), so that an operator, who may
    //    not, is told before a build and before anything of the deployment exists.
    let (ami, vpc, ingress, ()) =
        interrupt::cancellable("looking up the AMI and the network", async {
            tokio::try_join!(
                resolve_ami(&cloud, &config.ec2.ami, config.build.platform),
                cloud.vpc(config.ec2.subnet.as_deref()),
                ingress_for(config, opts),
                cloud.require_key_pair(config.ec2.ssh_key.as_deref()),
            )
        })
        .await?;
    observed.subnet_zone = vpc.subnet_zone.clone();
    // For a launch: a kept data volume that cannot be attached is refused before anything is
    // made.
    if observed.live().is_none() {
        plan::check_data_volume(config, opts, &observed)?;
    }
    // Not cancellable: a role is made with its profile, or not at all. A deployment with
    // inputs gets a role of its own (made with the launch); its boundary is made here.
    interrupt::checkpoint("creating the instance role")?;
    let own_role = role::wanted(&cloud.region, &config.name, &opts.reach, observed.live());
    let mut profile_created = false;
    if own_role {
        ensure_own_boundary(&cloud, config, opts, &observed, observed.live(), printer).await?;
    } else {
        let reported;
        (profile_created, reported) = cloud.ensure_instance_profile().await?;
        if reported {
            printer.note(format!(
                "Created IAM role and instance profile {}",
                INSTANCE_PROFILE
            ));
        }
    }
    observed.ami = Some(ami);
    observed.vpc = Some(vpc.vpc);
    observed.ingress = Ok(ingress);

    // 3. Build (when needed), log in, the repository: everything before the upload.
    let t_build = Instant::now();
    let prepared = push::prepare(engine, &ecr, config, printer).await?;
    let build_secs = prepared.built().then(|| t_build.elapsed().as_secs_f64());
    observed.registry = Some(prepared.registry_host().to_string());
    observed.content_tag = prepared.tag().to_string();
    observed.needs_build = false;
    observed.image_size = engine.image_size(&prepared.local_image()).await?;

    // 4. The plan.
    let plan = plan::plan(config, opts, &observed)?;
    let PlanDetail::Ec2(detail) = &plan.detail else {
        return Err(not_ec2());
    };
    let image = plan.image.clone();
    let name = &config.name;

    // 5. Apply.
    if plan.action == PlannedAction::Replace {
        drop(ticket);
        let (Some(inst), Some(script)) = (observed.live(), &detail.user_data) else {
            return Err(not_ec2());
        };
        let t_push = Instant::now();
        let pushed = push::finish(engine, &ecr, prepared, printer).await?;
        let push_secs = (!pushed.skipped).then(|| t_push.elapsed().as_secs_f64());
        printer.note(format!("`{name}`: {}", plan.reason));
        // An `up` interrupted before it attached the data volume: the replace script would
        // wait for it in vain.
        if inst.data_volume {
            ensure_data_volume(&cloud, config, opts, inst, printer).await?;
        }
        let token = seal(&cloud, name, opts).await?;
        apply_own_role(&cloud, name, &observed.account, detail, Some(inst), printer).await?;
        let (now, secs, served) = replace_container(
            &cloud,
            inst,
            script,
            (&image, opts.port, &userdata::inputs_id(&opts.inputs)),
            (opts.idle_stop, opts.ttl),
            printer,
        )
        .await?;
        // Only now: had the new container failed, the old one (and its port) would still run.
        if let Some(group) = inst.security_groups.first() {
            cloud
                .allow_ingress(group, inst, &detail.security_group.ingress)
                .await?;
        }
        retag_access(&cloud, inst, opts.access, printer).await?;
        let timings = Timings {
            build: build_secs,
            push: push_secs,
            jupyter: Some(secs),
            total: started.elapsed().as_secs_f64(),
            ..Timings::default()
        };
        return report(
            &cloud,
            &plan,
            &now,
            (&served, Some(&token)),
            (build_secs.is_some(), pushed.bytes_uploaded),
            timings,
            printer,
        )
        .await;
    }
    let Some(spec) = &detail.launch else {
        return Err(not_ec2());
    };

    // Security group and token: not cancellable (a group is made with its rules, or not at
    // all).
    interrupt::checkpoint("creating the security group")?;
    let vpc = detail.vpc.clone().unwrap_or_default();
    // The role first, on its own: a group is made with its rules, or not at all, and a
    // failure beside it would drop it half-way.
    let own_created =
        apply_own_role(&cloud, name, &observed.account, detail, None, printer).await?;
    // A seat goes into the group its class's seats share (made by the first seat, with the
    // class's one port), a deployment into its own.
    let ingress = &detail.security_group.ingress;
    let ensure_group = async {
        match &opts.seat {
            Some(seat) => {
                // Another identity's class is not joined without --force: its rules would
                // open to this caller's addresses.
                let caller = cloud.caller_arn().await?;
                let allow = |owner: &Option<String>| {
                    super::require_owner(&seat.class, &caller, [owner], opts.force, "join")
                };
                let (group, created) = cloud
                    .ensure_class_group(&seat.class, &vpc, ingress, allow)
                    .await?;
                // The group is made (or found) once for the class, with the first seat's
                // rules; a seat of a shared host has a port of its own to add.
                if seat.host.is_some() {
                    cloud.share_ingress(&group, ingress).await?;
                }
                Ok((group, created))
            }
            None => cloud.ensure_security_group(name, &vpc, ingress).await,
        }
    };
    let ((group, group_created), token) = if opts.seat.is_some() {
        // The class's group first: another identity's class is refused before this seat's
        // token is made.
        let group = ensure_group.await?;
        (group, seal(&cloud, name, opts).await?)
    } else {
        tokio::try_join!(ensure_group, seal(&cloud, name, opts))?
    };
    if !own_role {
        interrupt::made(format!(
            "IAM role and instance profile {INSTANCE_PROFILE} (shared; `down --all` removes it)"
        ));
    }
    interrupt::made(match &opts.seat {
        Some(seat) => format!("security group {group} of class `{}`", seat.class),
        None => format!("security group {group} of `{name}`"),
    });
    if group_created {
        printer.note(format!(
            "Created security group {group} ({})",
            detail.security_group.name
        ));
    }

    // Upload and launch together.
    let t_push = Instant::now();
    let upload = async {
        let r = push::finish(engine, &ecr, prepared, printer).await;
        (r, t_push.elapsed().as_secs_f64())
    };
    // A new profile propagates in seconds; one that exists needs no retry budget at all.
    let profile_wait = Duration::from_secs(if profile_created || own_created {
        120
    } else {
        20
    });
    // The data volume is attached as soon as the instance runs (its host waits for it after
    // the pull), while the upload goes on.
    let launch = async {
        let launched =
            launch_and_wait_running(&cloud, spec, &group, (profile_wait, ticket), printer).await?;
        ensure_data_volume(&cloud, config, opts, &launched.0, printer).await?;
        Ok::<_, Error>(launched)
    };
    let ((pushed, push_secs), launched) = tokio::join!(upload, launch);
    let (instance, launched_at, launch_secs) = match (pushed.as_ref(), launched) {
        // Interrupted during the upload: the instance stays (its user-data keeps retrying the
        // pull) and the next `up` finishes the push and resumes the wait.
        (Err(Error::Interrupted { .. }), Ok(_)) => {
            return Err(pushed.err().unwrap_or_else(not_ec2));
        }
        (Err(_), Ok((inst, _, _))) if inst.shared_host().is_none() => {
            // Nothing half-made: the instance would wait for an image that never comes.
            printer.note(format!(
                "The push did not finish: terminating {} again",
                inst.id
            ));
            match cloud.terminate(std::slice::from_ref(&inst.id)).await {
                Ok(()) => interrupt::gone(&instance_made(&inst.id, name)),
                Err(e) => printer.note(format!(
                    "could not terminate {}: {e}; `labship down {name} --ec2` removes it",
                    inst.id
                )),
            }
            return Err(pushed.err().unwrap_or_else(|| Error::PushFailed {
                image,
                message: "the push failed".into(),
                hint: "run `labship push` to see why".into(),
            }));
        }
        // A host its class's seats share: the others' `up`s wait on it; the class's `down`
        // removes it with them.
        (Err(_), Ok(_)) => {
            return Err(pushed.err().unwrap_or_else(|| Error::PushFailed {
                image,
                message: "the push failed".into(),
                hint: "run `labship push` to see why".into(),
            }));
        }
        // AWS said no (capacity, a quota, a permission): nothing was launched.
        (_, Err(e @ (Error::QuotaExceeded { .. } | Error::AccessDenied { .. }))) => {
            // A class's group stays for its other seats (the class's `up` removes it when no
            // seat started).
            let own_group = opts.seat.is_none().then_some(group.as_str());
            undo_refused_launch(&cloud, name, own_group, own_role, printer).await;
            return Err(e);
        }
        // Ctrl-C (its report lists what was made), or an answer that may have been lost
        // after the launch: `down` removes what there is.
        (_, Err(e)) => return Err(e),
        (Ok(_), Ok(l)) => l,
    };
    let pushed = pushed?;

    // 6. The console, until the token.
    printer.note(format!(
        "Waiting for {} to boot and start Jupyter (up to {}s)",
        instance.id,
        opts.wait.as_secs()
    ));
    // The wait is for the instance: build and push had their own bounds.
    let wait = watch::Wait {
        deadline: Instant::now() + opts.wait,
        wait_secs: opts.wait.as_secs(),
        replay: true,
        first_read: None,
        nitro: observed.instance_type.nitro,
        boot_after: None,
    };
    let ready = interrupt::cancellable(
        "Jupyter's token",
        watch::until_token(&cloud, &instance, wait, printer),
    )
    .await?;
    let timings = phase_timings(
        &ready.markers,
        launched_at,
        build_secs,
        (!pushed.skipped).then_some(push_secs),
        launch_secs,
        started.elapsed().as_secs_f64(),
    );
    report(
        &cloud,
        &plan,
        &ready.instance,
        (&ready.served, Some(&token)),
        (build_secs.is_some(), pushed.bytes_uploaded),
        timings,
        printer,
    )
    .await
}

/// A seat launched with others whose own tags could not be set after its launch (it is its
/// seat by its launch index meanwhile) gets them now; failing again is a note.
async fn mend_seat_tags(cloud: &Cloud, config: &Config, observed: &Observed, printer: &Printer) {
    let Some(inst) = observed
        .live()
        .or(observed.stopped())
        .filter(|i| i.untagged_seat)
    else {
        return;
    };
    let name = &config.name;
    let pairs = match inst.shared_host() {
        Some(host) => vec![(crate::tags::HOST_SEATS.to_string(), host.seats.join(" "))],
        None => {
            let mut pairs = vec![
                (crate::tags::DEPLOYMENT.to_string(), name.clone()),
                ("Name".to_string(), format!("labship-{name}")),
            ];
            pairs.extend(plan::seat_tags(inst.seat.as_ref()));
            pairs
        }
    };
    match cloud.tag_launched(&inst.id, &pairs).await {
        Ok(()) => printer.note(format!(
            "Tagged {} as `{name}`'s instance (its tags were not set at its launch)",
            inst.id
        )),
        Err(e) => printer.note(format!(
            "{} is `{name}`'s instance by its launch index; its own tags still cannot be set: {e}",
            inst.id
        )),
    }
}

/// The plans that act on the live instance that already has this image and port: nothing,
/// resume (finish the push, wait again) or restart (the last start failed).
#[allow(clippy::too_many_arguments)]
async fn in_place(
    cloud: &Cloud,
    engine: &Engine,
    ecr: &Ecr,
    config: &Config,
    opts: &Options,
    observed: &Observed,
    plan: Plan,
    started: Instant,
    printer: &Printer,
) -> Result<UpReport> {
    let PlanDetail::Ec2(detail) = &plan.detail else {
        return Err(not_ec2());
    };
    let Some(inst) = observed.live() else {
        return Err(not_ec2());
    };
    let name = &config.name;
    if let (Some(group), Ok(_)) = (inst.security_groups.first(), &observed.ingress) {
        if cloud
            .allow_ingress(group, inst, &detail.security_group.ingress)
            .await?
        {
            printer.note(match detail.security_group.ingress.first() {
                Some(rule) => format!(
                    "Updated {group}: Jupyter is now open to {} ({})",
                    rule.cidrs.join(", "),
                    detail.security_group.source
                ),
                None => format!(
                    "Updated {group}: no inbound rule any more ({})",
                    detail.security_group.source
                ),
            });
        }
    }
    retag_access(cloud, inst, opts.access, printer).await?;
    if let Err(e) = &observed.ingress {
        printer.note(format!("Security group left as it is: {e}"));
    }
    let (mut built, mut bytes) = (false, 0);
    match plan.action {
        PlannedAction::Restart => {
            printer.note(format!(
                "{}; starting it again through Systems Manager",
                plan.reason
            ));
            ensure_own_boundary(cloud, config, opts, observed, Some(inst), printer).await?;
            let pushed = push::push(engine, ecr, config, printer).await?;
            let Some(script) = &detail.user_data else {
                return Err(not_ec2());
            };
            if inst.data_volume {
                ensure_data_volume(cloud, config, opts, inst, printer).await?;
            }
            let token = seal(cloud, name, opts).await?;
            apply_own_role(cloud, name, &observed.account, detail, Some(inst), printer).await?;
            let (now, secs, served) = replace_container(
                cloud,
                inst,
                script,
                (&plan.image, opts.port, &userdata::inputs_id(&opts.inputs)),
                (opts.idle_stop, opts.ttl),
                printer,
            )
            .await?;
            let timings = Timings {
                jupyter: Some(secs),
                total: started.elapsed().as_secs_f64(),
                ..Timings::default()
            };
            return report(
                cloud,
                &plan,
                &now,
                (&served, Some(&token)),
                (pushed.built, pushed.bytes_uploaded),
                timings,
                printer,
            )
            .await;
        }
        PlannedAction::Resume => {
            printer.note(format!(
                "{} of `{name}` is still starting; making sure its image is in the registry",
                inst.id
            ));
            let pushed = push::push(engine, ecr, config, printer).await?;
            built = pushed.built;
            bytes = pushed.bytes_uploaded;
            // An `up` interrupted before the data volume was attached: its host still waits.
            if inst.data_volume {
                ensure_data_volume(cloud, config, opts, inst, printer).await?;
            }
        }
        _ => printer.note(format!("`{name}` already runs this image on {}", inst.id)),
    }
    let console = observed.console.clone().unwrap_or_default();
    let wait = watch::Wait {
        deadline: Instant::now() + opts.wait,
        wait_secs: opts.wait.as_secs(),
        replay: false,
        first_read: (!console.is_empty()).then_some(console),
        nitro: observed.instance_type.nitro,
        boot_after: None,
    };
    let ready = interrupt::cancellable(
        "Jupyter's token",
        watch::until_token(cloud, inst, wait, printer),
    )
    .await?;
    let token = sealed::read(cloud, name).await?;
    let timings = Timings {
        total: started.elapsed().as_secs_f64(),
        ..Timings::default()
    };
    report(
        cloud,
        &plan,
        &ready.instance,
        (&ready.served, token.as_ref()),
        (built, bytes),
        timings,
        printer,
    )
    .await
}

/// `up` of a stopped deployment: the image is pushed when needed, the instance started
/// (StartInstances), its security group follows the caller's address, and once Systems
/// Manager reaches the host the replace script makes sure its container serves this image on
/// this port with the sealed token (the container its restart policy brought back, unless
/// the image or port changed), then says when Jupyter answers. The workspace volume, the TLS
/// certificate and the token are the ones from before the stop.
#[allow(clippy::too_many_arguments)]
async fn start(
    cloud: &Cloud,
    engine: &Engine,
    ecr: &Ecr,
    config: &Config,
    opts: &Options,
    mut observed: Observed,
    stopped: &Instance,
    started: Instant,
    printer: &Printer,
) -> Result<UpReport> {
    let name = &config.name;
    interrupt::made(instance_made(&stopped.id, name));
    ensure_own_boundary(cloud, config, opts, &observed, Some(stopped), printer).await?;
    let t_push = Instant::now();
    let (pushed, ingress) = interrupt::cancellable("pushing the image", async {
        Ok(tokio::join!(
            push::push(engine, ecr, config, printer),
            ingress_for(config, opts)
        ))
    })
    .await?;
    let pushed = pushed?;
    let push_secs = (!pushed.skipped).then(|| t_push.elapsed().as_secs_f64());
    observed.ingress = ingress.map_err(|e| e.to_string());
    // REGISTRY/REPOSITORY:CONTENT_TAG
    let (Some((registry, _)), Some((_, tag))) = (
        pushed.image_uri.split_once('/'),
        pushed.image_uri.rsplit_once(':'),
    ) else {
        return Err(crate::hosts::plan_bug(&format!(
            "the pushed image `{}` is not REGISTRY/REPOSITORY:TAG",
            pushed.image_uri
        )));
    };
    observed.registry = Some(registry.to_string());
    observed.content_tag = tag.to_string();
    observed.needs_build = false;
    let plan = plan::plan(config, opts, &observed)?;
    let PlanDetail::Ec2(detail) = &plan.detail else {
        return Err(not_ec2());
    };
    printer.note(format!("`{name}`: {}", plan.reason));
    let token = seal(cloud, name, opts).await?;
    interrupt::checkpoint("starting the instance")?;
    let t_start = Instant::now();
    // The host's clock says when its boot began (the watchdog's `boot=`): a boot from before
    // this start is not this one (a minute's leeway for the two clocks).
    let boot_after = crate::hosts::now_secs() - 60;
    if stopped.data_volume {
        ensure_data_volume(cloud, config, opts, stopped, printer).await?;
    }
    apply_own_role(
        cloud,
        name,
        &observed.account,
        detail,
        Some(stopped),
        printer,
    )
    .await?;
    // Only EC2 restarts a spot instance it interrupted (its persistent request stays open),
    // when capacity returns: `up` waits for that, within --wait.
    let (within, pause) = if stopped.interrupted() {
        printer.note(format!(
            "{} was interrupted (no spot capacity); EC2 starts it again by itself when capacity returns: waiting up to {}s",
            stopped.id,
            opts.wait.as_secs()
        ));
        (opts.wait, Duration::from_secs(5))
    } else {
        cloud.start(&stopped.id).await?;
        (Duration::from_secs(300), Duration::from_secs(1))
    };
    let running = retry::until(within, pause, || async {
        interrupt::checkpoint("the instance running")?;
        let failed = |cause: String| Error::BootFailed {
            deployment: name.clone(),
            instance: stopped.id.clone(),
            phase: "start".into(),
            cause,
            hint: "see the instance's state reason in the EC2 console (capacity for this type in its zone); `labship up --ec2` again tries once more".into(),
        };
        match cloud.instance(&stopped.id).await? {
            Some(i) if i.state == "running" => Ok(Step::Done(i.seated_as(stopped))),
            Some(i) if i.interrupted() => Ok(Step::Again(Error::NoCapacity {
                instance: i.id.clone(),
                region: cloud.region.clone(),
                message: format!(
                    "it is still stopped by its spot interruption after {}s",
                    within.as_secs()
                ),
            })),
            Some(i) if matches!(i.state.as_str(), "pending" | "stopped" | "stopping") => Ok(
                Step::Again(failed(format!("still {} after {}s", i.state, within.as_secs()))),
            ),
            Some(i) => Err(failed(format!("the instance went to {}", i.state))),
            None => Err(failed("the instance no longer exists".into())),
        }
    })
    .await?;
    let launch_secs = t_start.elapsed().as_secs_f64();
    printer.note(format!(
        "Started {} again{}",
        running.id,
        running
            .public_ip
            .as_deref()
            .map(|ip| format!(" (address {ip})"))
            .unwrap_or_default()
    ));
    if let (Some(group), Ok(_)) = (running.security_groups.first(), &observed.ingress) {
        cloud
            .allow_ingress(group, &running, &detail.security_group.ingress)
            .await?;
    }
    retag_access(cloud, &running, opts.access, printer).await?;
    let Some(script) = &detail.user_data else {
        // The same image, port and watchdog: the container comes back by its restart policy
        // and the watchdog says on the console when Jupyter answers.
        let wait = watch::Wait {
            deadline: Instant::now() + opts.wait,
            wait_secs: opts.wait.as_secs(),
            replay: true,
            first_read: None,
            nitro: observed.instance_type.nitro,
            boot_after: Some(boot_after),
        };
        let ready = interrupt::cancellable(
            "Jupyter's token",
            watch::until_token(cloud, &running, wait, printer),
        )
        .await?;
        let timings = Timings {
            push: push_secs,
            launch: Some(launch_secs),
            jupyter: Some(t_start.elapsed().as_secs_f64() - launch_secs),
            total: started.elapsed().as_secs_f64(),
            ..Timings::default()
        };
        return report(
            cloud,
            &plan,
            &ready.instance,
            (&ready.served, Some(&token)),
            (pushed.built, pushed.bytes_uploaded),
            timings,
            printer,
        )
        .await;
    };
    // The agent registers again a few seconds after boot.
    let t_boot = Instant::now();
    retry::until(AGENT_PATIENCE, Duration::from_secs(1), || async {
        interrupt::checkpoint("Systems Manager reaching the host")?;
        if cloud.ssm_online(&running.id).await? {
            Ok(Step::Done(()))
        } else {
            Ok(Step::Again(Error::Replace {
                deployment: name.clone(),
                instance: running.id.clone(),
                message: "its Systems Manager agent was not online 300s after the start".into(),
                hint: format!("the host may not have booted (see `labship logs {name} --ec2`); `labship up {name} --ec2` again waits once more"),
            }))
        }
    })
    .await?;
    let boot_secs = t_boot.elapsed().as_secs_f64();
    let (now, secs, served) = replace_container(
        cloud,
        &running,
        script,
        (&plan.image, opts.port, &userdata::inputs_id(&opts.inputs)),
        (opts.idle_stop, opts.ttl),
        printer,
    )
    .await?;
    let timings = Timings {
        push: push_secs,
        launch: Some(launch_secs),
        boot: Some(boot_secs),
        jupyter: Some(secs),
        total: started.elapsed().as_secs_f64(),
        ..Timings::default()
    };
    report(
        cloud,
        &plan,
        &now,
        (&served, Some(&token)),
        (pushed.built, pushed.bytes_uploaded),
        timings,
        printer,
    )
    .await
}

/// After a launch that failed: when no instance of the deployment exists (AWS refused the
/// launch: capacity, a quota, a parameter), its own security group (`group`; a seat's is its
/// class's, which stays for the other seats) and sealed token serve nothing and are removed,
/// so that nothing is left half-made. What cannot be checked or removed now is left as it
/// is (said on stderr): `down` of the deployment removes it.
async fn undo_refused_launch(
    cloud: &Cloud,
    name: &str,
    group: Option<&str>,
    own_role: bool,
    printer: &Printer,
) {
    match cloud.instances(Some(name)).await {
        Ok(instances) if instances.is_empty() => {}
        _ => return,
    }
    if own_role {
        let (_, failures) = cloud.remove_deployment_role(&cloud.region, name).await;
        match failures.first() {
            None => interrupt::gone(&own_role_made(&cloud.region, name)),
            Some(e) => printer.note(format!(
                "could not remove the IAM role of `{name}` after the failed launch: {e}; `labship down {name} --ec2` removes it"
            )),
        }
    }
    if let Some(group) = group {
        match cloud
            .delete_security_group(group, Duration::from_secs(30))
            .await
        {
            Ok(_) => interrupt::gone(&format!("security group {group} of `{name}`")),
            Err(e) => printer.note(format!(
                "could not delete the security group {group} of `{name}` after the failed launch: {e}; `labship down {name} --ec2` removes it"
            )),
        }
    }
    match sealed::remove(cloud, name).await {
        Ok(_) => interrupt::gone(&format!(
            "SSM parameter {} (the token of `{name}`)",
            sealed::parameter(name)
        )),
        Err(e) => printer.note(format!(
            "could not delete the token parameter of `{name}` after the failed launch: {e}; `labship down {name} --ec2` removes it"
        )),
    }
}

/// The deployments' permissions boundary, made when missing, when the deployment runs (or
/// will run) with a role of its own: before a build or a push, so that an operator who may
/// not make it is told before anything is (`inst`: the instance a replace, restart or start
/// acts on).
async fn ensure_own_boundary(
    cloud: &Cloud,
    config: &Config,
    opts: &Options,
    observed: &Observed,
    inst: Option<&Instance>,
    printer: &Printer,
) -> Result<()> {
    if !role::wanted(&cloud.region, &config.name, &opts.reach, inst) {
        return Ok(());
    }
    if cloud
        .ensure_boundary(&observed.account, Boundary::Deployment)
        .await?
    {
        printer.note(format!(
            "Created {} {} (IAM policy)",
            Boundary::Deployment.of(),
            Boundary::Deployment.name()
        ));
    }
    Ok(())
}

/// The deployment's own role, when the plan gives it one (see [`role`]): made when missing
/// with its policy put again, and `inst` (a replace's, restart's or start's instance) moved
/// to it from the shared role. Its boundary was made sure of before ([`ensure_own_boundary`]).
/// Returns whether the role's profile was made now (EC2 takes seconds to accept a new one).
async fn apply_own_role(
    cloud: &Cloud,
    name: &str,
    account: &str,
    detail: &plan::Ec2Plan,
    inst: Option<&Instance>,
    printer: &Printer,
) -> Result<bool> {
    let Some(own) = detail.iam.as_ref().and_then(|iam| iam.own.as_ref()) else {
        return Ok(false);
    };
    interrupt::checkpoint("the deployment's role")?;
    let tags = crate::tags::for_deployment(name);
    let policy = own.policy.to_string();
    let ensured = cloud
        .ensure_deployment_role(&DeploymentRoleSpec {
            deployment: name,
            region: &cloud.region,
            account,
            tags: &tags,
            policy: &policy,
        })
        .await?;
    let profile = &ensured.profile;
    interrupt::made(own_role_made(&cloud.region, name));
    if ensured.made {
        printer.note(format!(
            "Created IAM role and instance profile {profile} for `{name}`: it reads exactly its [data] inputs"
        ));
    }
    // Moved from the shared role, or given the role made again in place of one trusted by
    // more than EC2 (its association names the old profile's id, which the name no longer
    // reaches).
    if let Some(inst) = inst.filter(|_| own.moves_instance || ensured.remade) {
        // A profile made now takes EC2 seconds to accept.
        let wait = Duration::from_secs(if ensured.made { 120 } else { 30 });
        cloud
            .set_instance_profile(&inst.id, profile, wait, ensured.remade)
            .await?;
        printer.note(if own.moves_instance {
            format!(
                "Moved {} from the shared role to {profile}, which reads exactly its [data] inputs",
                inst.id
            )
        } else {
            format!(
                "{profile} was trusted by more than EC2: made again, and {} given the new one",
                inst.id
            )
        });
    }
    Ok(ensured.made)
}

fn own_role_made(region: &str, name: &str) -> String {
    format!(
        "IAM role and instance profile {} (`{name}`'s own; `labship down {name} --ec2` removes it)",
        crate::aws::iam::deployment_role_name(region, name)
    )
}

/// The deployment's sealed token (made and stored now if it has none), recorded for the
/// interruption report.
/// The deployment's token, sealed now unless it is; a seat's is tagged with its class and
/// seat, as its instance is, so that `down` of the class finds a token left alone.
async fn seal(cloud: &Cloud, deployment: &str, opts: &Options) -> Result<JupyterToken> {
    let seat_tags = plan::seat_tags(opts.seat.as_ref());
    let token = sealed::ensure(cloud, deployment, &seat_tags).await?;
    interrupt::made(format!(
        "SSM parameter {} (the token of `{deployment}`)",
        sealed::parameter(deployment)
    ));
    Ok(token)
}

/// The report of an applied plan, from the instance as it now is, what its host says Jupyter
/// serves and the sealed token; `pushed` is (built in this run, bytes uploaded).
async fn report(
    cloud: &Cloud,
    plan: &Plan,
    instance: &Instance,
    (served, sealed): (&Served, Option<&JupyterToken>),
    (built, bytes_uploaded): (bool, u64),
    timings: Timings,
    printer: &Printer,
) -> Result<UpReport> {
    let PlanDetail::Ec2(detail) = &plan.detail else {
        return Err(not_ec2());
    };
    // A plan that left the container alone reports what the instance says it serves.
    let in_place = matches!(plan.action, PlannedAction::Nothing | PlannedAction::Resume);
    let token = served.login_token(sealed);
    let access = detail.security_group.access;
    let ip = match access {
        Access::Https => {
            let ip = require_ip(instance, &plan.deployment)?;
            check_from_here(
                &plan.deployment,
                &host_port(&ip, detail.port),
                served,
                token.as_ref(),
                "the port is open to the addresses of the security group only",
                printer,
            )
            .await?;
            Some(ip)
        }
        Access::Ssm => {
            check_through_ssm(
                cloud,
                instance,
                detail.port,
                served,
                token.as_ref(),
                printer,
            )
            .await?;
            instance.public_ip.clone()
        }
    };
    match (access, served.tls) {
        (Access::Https, Some(pin)) => printer.note(format!(
            "Jupyter serves HTTPS with a certificate made on the instance (SHA-256 {pin}); a browser warns about it. `labship connect {}` opens it on http://127.0.0.1 through a forwarder that checks exactly this certificate",
            plan.deployment
        )),
        (Access::Ssm, _) => printer.note(format!(
            "No port of {} is open (--access ssm): `labship connect {} --ec2` opens Jupyter on http://127.0.0.1 through a Systems Manager session",
            instance.id, plan.deployment
        )),
        _ => {}
    }
    if served.token == TokenFrom::Image {
        printer.note(format!(
            "The image of `{}` sets its own Jupyter token, so the URL has none: use the image's token",
            plan.deployment
        ));
    }
    Ok(UpReport {
        target: Target::Ec2,
        deployment: plan.deployment.clone(),
        url: match (access, &ip) {
            (Access::Https, Some(ip)) => Some(url(
                ip,
                detail.port,
                &served.path,
                served.tls.is_some(),
                token.as_ref(),
            )),
            _ => None,
        },
        access: Some(access),
        action: plan.action.done(),
        reason: plan.reason.clone(),
        image: instance
            .image
            .clone()
            .filter(|_| in_place)
            .unwrap_or_else(|| plan.image.clone()),
        built,
        bytes_uploaded,
        port: detail.port,
        container: None,
        volume: None,
        region: Some(detail.region.clone()),
        instance_id: Some(instance.id.clone()),
        instance_type: Some(instance.instance_type.clone()),
        public_ip: ip,
        tls_fingerprint: served.tls,
        timings,
        git: None,
    })
}

fn not_ec2() -> Error {
    crate::hosts::plan_bug("the plan does not fit the EC2 step applying it")
}

/// The security group's rules: the Jupyter port (and SSH with `ec2.ssh_key`) from the CIDRs
/// asked for, or the caller's address.
async fn ingress_for(config: &Config, opts: &Options) -> Result<(Vec<Ingress>, String)> {
    if opts.access == Access::Ssm {
        // Nothing to open, and so no address to look up.
        return Ok((
            Vec::new(),
            "no inbound rule: --access ssm, reached through Systems Manager port forwarding".into(),
        ));
    }
    let (cidrs, source) = ingress_cidrs(&opts.allow_cidr, opts.public).await?;
    let mut rules = vec![Ingress {
        port: opts.port,
        cidrs: cidrs.clone(),
        description: "Jupyter (labship)".into(),
    }];
    if config.ec2.ssh_key.is_some() {
        rules.push(Ingress {
            port: 22,
            cidrs,
            description: "SSH (labship, ec2.ssh_key)".into(),
        });
    }
    Ok((rules, source))
}

/// Launches the instance (a seat's with the other seats of this command: `ticket`) and waits
/// for it to run.
async fn launch_and_wait_running(
    cloud: &Cloud,
    spec: &LaunchSpec,
    security_group: &str,
    (profile_wait, ticket): (Duration, Option<launch::SeatTicket<'_>>),
    printer: &Printer,
) -> Result<(Instance, f64, f64)> {
    let t = Instant::now();
    let launched_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    interrupt::checkpoint("launching the instance")?;
    let inst = match ticket {
        Some(ticket) => {
            launch::launch_seat(cloud, ticket, spec, security_group, profile_wait).await?
        }
        None => cloud.launch(spec, security_group, profile_wait).await?,
    };
    interrupt::made(instance_made(&inst.id, &spec.deployment));
    printer.note(format!(
        "Launched {} ({}, {}, {} GiB encrypted gp3)",
        inst.id, spec.instance_type, spec.ami, spec.root_gib
    ));
    // RunInstances answers with a pending instance; running takes seconds to a minute. Not
    // the SDK's `instance_running` waiter: its first retry comes after 15 s, which would add
    // up to 15 s to every launch's time to a URL; a 2 s poll costs a few cheap describes.
    let running = retry::until(Duration::from_secs(300), Duration::from_secs(2), || async {
        interrupt::checkpoint("the instance running")?;
        let launch_failed = |cause: String, hint: &str| Error::BootFailed {
            deployment: spec.deployment.clone(),
            instance: inst.id.clone(),
            phase: "launch".into(),
            cause,
            hint: hint.into(),
        };
        match cloud.instance(&inst.id).await? {
            Some(i) if i.state == "running" => Ok(Step::Done(i.seated_as(&inst))),
            Some(i) if i.state != "pending" => Err(launch_failed(
                format!("the instance went to {} before running", i.state),
                "see the instance's state reason in the EC2 console (capacity, EBS limits); `labship down --ec2` cleans up",
            )),
            _ => Ok(Step::Again(launch_failed(
                "still pending after 300s".into(),
                "try again later or another instance type; `labship down --ec2` cleans up",
            ))),
        }
    })
    .await?;
    Ok((running, launched_at, t.elapsed().as_secs_f64()))
}

/// Makes sure the instance has the deployment's data volume attached: the one attached to it
/// already, else the kept one in its zone, else a new one there (tagged, encrypted gp3 of
/// `opts.volume_gib`). Its host waits for the device, so nothing else waits here.
async fn ensure_data_volume(
    cloud: &Cloud,
    config: &Config,
    opts: &Options,
    inst: &Instance,
    printer: &Printer,
) -> Result<DataVolume> {
    let name = &config.name;
    let volumes = cloud.data_volumes(Some(name)).await?;
    if let Some(v) = volumes
        .iter()
        .find(|v| v.attached_to.as_deref() == Some(inst.id.as_str()))
    {
        return Ok(v.clone());
    }
    let zone = match &inst.availability_zone {
        Some(z) => z.clone(),
        None => cloud
            .instance(&inst.id)
            .await?
            .and_then(|i| i.availability_zone)
            .ok_or_else(|| Error::Aws {
                action: "ec2:DescribeInstances".into(),
                resource: inst.id.clone(),
                region: cloud.region.clone(),
                message: "the instance has no Availability Zone".into(),
                hint: "run `labship up` again".into(),
            })?,
    };
    // Only the deployment's one kept volume is attached (or moved); a new one is made only
    // when there is none at all.
    let usable = |v: &DataVolume| v.attached_to.is_none() && v.state != "error";
    // A kept volume moved to this zone leaves its original and a snapshot, deleted once the
    // copy is attached.
    let mut moved: Option<(String, String)> = None;
    let volume = match volumes.as_slice() {
        [one] if usable(one) && one.availability_zone == zone => {
            printer.note(format!(
                "Attaching the kept data volume {} to {}: the workspace comes back",
                one.describe(),
                inst.id
            ));
            // Still being created, or detaching from a terminated instance: wait.
            if one.state != "available" {
                cloud
                    .wait_volume_available(&one.id, Duration::from_secs(300))
                    .await?;
            }
            one.clone()
        }
        [one] if usable(one) => {
            interrupt::checkpoint("copying the data volume")?;
            printer.note(format!(
                "Copying the kept data volume {} to {zone}, the instance's zone, through a snapshot (minutes for a large volume)",
                one.describe()
            ));
            let spec = VolumeSpec {
                deployment: name.clone(),
                availability_zone: zone,
                size_gib: one.size_gib,
                tags: plan::data_volume_tags(name, opts.seat.as_ref()),
                snapshot: None,
            };
            let token = volume_token(inst);
            let (copy, snapshot) = cloud
                .copy_data_volume(one, &spec, &token, Duration::from_secs(3600))
                .await?;
            interrupt::made(format!(
                "data volume {} of `{name}`, a copy of {} through snapshot {snapshot} (delete those two once it is attached)",
                copy.id, one.id
            ));
            moved = Some((one.id.clone(), snapshot));
            copy
        }
        [] => {
            interrupt::checkpoint("creating the data volume")?;
            let spec = VolumeSpec {
                deployment: name.clone(),
                availability_zone: zone,
                size_gib: opts.volume_gib,
                tags: plan::data_volume_tags(name, opts.seat.as_ref()),
                snapshot: None,
            };
            // One volume per instance (per seat on a shared host), however often this is sent
            // (a lost answer, an `up` interrupted and run again).
            let token = volume_token(inst);
            let made = cloud
                .create_data_volume(&spec, &token, Duration::from_secs(300))
                .await?;
            interrupt::made(format!(
                "data volume {} of `{name}` (`labship down {name} --ec2 --delete-data` deletes it)",
                made.id
            ));
            printer.note(format!(
                "Created data volume {} for the workspace; it outlives the instance",
                made.describe()
            ));
            made
        }
        others => {
            let found: Vec<String> = others
                .iter()
                .map(|v| match &v.attached_to {
                    Some(other) => format!("{} ({}, attached to {other})", v.id, v.state),
                    None => format!("{} ({})", v.id, v.state),
                })
                .collect();
            return Err(Error::DataVolume {
                deployment: name.clone(),
                volume: found.join(", "),
                message: format!(
                    "{} has no data volume attached, and `{name}`'s cannot be: labship attaches the one kept volume that is not in use or failed",
                    inst.id
                ),
                hint: "keep the volume with the notebooks (detached from any other instance) and delete the others (`aws ec2 delete-volume --volume-id ...`), then run `labship up` again".into(),
            });
        }
    };
    interrupt::checkpoint("attaching the data volume")?;
    let device = match inst.shared_host() {
        Some(host) => ebs::device(host.slot).ok_or_else(|| Error::DataVolume {
            deployment: name.clone(),
            volume: volume.id.clone(),
            message: format!("slot {} of {} has no device name", host.slot, inst.id),
            hint: format!(
                "a host serves at most {} seats",
                userdata::MAX_SEATS_PER_HOST
            ),
        })?,
        None => ebs::DEVICE.to_string(),
    };
    cloud
        .attach_data_volume(&volume.id, &inst.id, &device)
        .await?;
    if let Some((original, snapshot)) = moved {
        let cleaned = async {
            cloud.delete_data_volume(&original).await?;
            cloud.delete_snapshot(&snapshot).await
        };
        match cleaned.await {
            Ok(_) => printer.note(format!(
                "Moved the data volume to {}: {} attached; {original} and snapshot {snapshot} deleted",
                volume.availability_zone, volume.id
            )),
            Err(e) => printer.note(format!(
                "Moved the data volume ({} attached), but could not delete the original {original} or snapshot {snapshot}: {e}; delete them with `aws ec2 delete-volume --volume-id {original}` and `aws ec2 delete-snapshot --snapshot-id {snapshot}`",
                volume.id
            )),
        }
    }
    Ok(volume)
}

/// How long a host that was just started may take until its Systems Manager agent is online.
const AGENT_PATIENCE: Duration = Duration::from_secs(300);

/// Replaces the container through SSM RunCommand; returns (instance, seconds, what it serves).
async fn replace_container(
    cloud: &Cloud,
    inst: &Instance,
    script: &str,
    (image, port, inputs): (&str, u16, &str),
    life: (Option<Duration>, Option<Duration>),
    printer: &Printer,
) -> Result<(Instance, f64, Served)> {
    let t = Instant::now();
    // A host that is starting (a shared host another of its seats just started) gets the
    // time its agent needs to register again; one that runs is asked once.
    let starting = inst.state == "pending"
        || inst
            .launched_secs
            .is_some_and(|at| crate::hosts::now_secs() - at < AGENT_PATIENCE.as_secs() as i64);
    let patience = if starting {
        AGENT_PATIENCE
    } else {
        Duration::ZERO
    };
    retry::until(patience, Duration::from_secs(1), || async {
        interrupt::checkpoint("Systems Manager reaching the host")?;
        if cloud.ssm_online(&inst.id).await? {
            return Ok(Step::Done(()));
        }
        Ok(Step::Again(Error::Replace {
            deployment: inst.deployment.clone(),
            instance: inst.id.clone(),
            message: "its Systems Manager agent is not online, so labship cannot reach the host".into(),
            hint: format!("the agent needs a minute after boot and the labship-instance role (its inline policy lets the agent register); try again shortly, or remove the instance with `labship down {} --ec2` (its notebooks go with it) and run `labship up --ec2`", inst.deployment),
        }))
    })
    .await?;
    printer.note(format!(
        "Replacing the container on {} through Systems Manager",
        inst.id
    ));
    // The script bounds itself (its wait for the host's lock, then login, pull and Jupyter
    // deadlines): SSM's execution timeout follows those, not --wait, so SSM never cuts it
    // off half-way. The lock waits at most a whole boot (login 180 + docker 120 + data volume
    // + pull + Jupyter; see userdata/common.sh).
    let lock = 180 + 120 + DATA_DEADLINE + PULL_DEADLINE + JUPYTER_DEADLINE;
    let budget =
        Duration::from_secs(lock + 180 + DATA_DEADLINE + PULL_DEADLINE + JUPYTER_DEADLINE + 120);
    // Abandoning this wait is safe: the script runs to its end on the host on its own (and
    // puts the previous container back if the new one fails); `up` again sees the result.
    let result = interrupt::cancellable(
        "the end of the container replacement",
        cloud.run_script(
            &inst.id,
            script,
            "labship: replace the Jupyter container",
            budget,
        ),
    )
    .await?;
    // A seat of a shared host: its own markers (`seat=NAME`) as a deployment's.
    let output = console::seen_by(result.stdout.clone(), inst);
    let markers = console::markers(&output);
    if let Some(MarkerKind::Error { phase, cause }) = markers.last().map(|m| &m.phase) {
        return Err(Error::BootFailed {
            deployment: inst.deployment.clone(),
            instance: inst.id.clone(),
            phase: phase.clone(),
            cause: crate::token::redact(cause),
            hint: "the previous container, if there was one, was put back and still runs; fix the image and run `labship up --ec2` again".into(),
        });
    }
    if !result.success {
        let tail: Vec<&str> = result.stderr.lines().rev().take(10).collect();
        return Err(Error::Replace {
            deployment: inst.deployment.clone(),
            instance: inst.id.clone(),
            message: format!("the command ended with status {}", result.status),
            hint: format!(
                "its last error lines:\n{}",
                crate::token::redact(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            ),
        });
    }
    let served = console::served(&output).ok_or_else(|| Error::Replace {
        deployment: inst.deployment.clone(),
        instance: inst.id.clone(),
        message: "the replace command succeeded but did not say that Jupyter answers".into(),
        hint: format!(
            "`labship logs {} --ec2` shows the host's console; `labship up --ec2` again checks it",
            inst.deployment
        ),
    })?;
    match inst.seat.as_ref().filter(|s| s.host.is_some()) {
        Some(seat) => {
            cloud
                .set_seat_serving_tags(&inst.id, &seat.seat, image, life)
                .await?;
        }
        None => {
            cloud
                .set_serving_tags(&inst.id, image, port, life, inputs)
                .await?;
        }
    }
    let now = cloud
        .instance(&inst.id)
        .await?
        .map_or_else(|| inst.clone(), |now| now.seated_as(inst));
    let now = Instance {
        image: Some(image.to_string()),
        ..now
    };
    Ok((now, t.elapsed().as_secs_f64(), served))
}

/// The idempotency token of the data volume made for `inst`: one per instance, and on a
/// shared host one per seat (its slot).
fn volume_token(inst: &Instance) -> String {
    match inst.shared_host() {
        Some(host) => format!("labship-{}-data-{}", inst.id, host.slot),
        None => format!("labship-{}-data", inst.id),
    }
}

/// `token --rotate`: a new sealed token, then the deployment's container started again with
/// it (same image, same workspace volume, same address) through Systems Manager. If the new
/// container does not come up, the host puts the old one back and labship puts the old token
/// back with it, so the old URL keeps working.
pub async fn rotate_token(aws: &Aws, config: &Config, printer: &Printer) -> Result<TokenReport> {
    let cloud = Cloud::new(aws);
    let name = &config.name;
    let inst = super::info::running(&cloud, name).await?;
    let refuse = |message: String| Error::Replace {
        deployment: name.clone(),
        instance: inst.id.clone(),
        message,
        hint: format!("`labship up {name} --ec2` starts it; then rotate the token"),
    };
    if inst.state != "running" {
        return Err(refuse(format!("the instance is {}", inst.state)));
    }
    let (Some(image), Some(port)) = (inst.image.clone(), inst.port) else {
        return Err(refuse(
            "the instance has no labship:image and labship:port tags".into(),
        ));
    };
    // The same image, port, watchdog and inputs; a new container with the running one's
    // limits (a seat's on a shared host).
    let recreate = plan::kept_inputs(&inst, &cloud.region, &image, port);
    // A seat of a shared host: the host's script, for this seat's container alone.
    let script = match plan::ExistingHost::of(&inst) {
        None => userdata::render_recreate(&recreate),
        Some(host) => host.script(recreate, name, plan::SeatScript::Recreate),
    }
    .map_err(|e| refuse(e.to_string()))?;
    let old = sealed::read(&cloud, name).await?;
    interrupt::checkpoint("sealing a new token")?;
    let new = sealed::rotate(&cloud, name).await?;
    printer.note(format!(
        "Sealed a new token in {}; restarting Jupyter on {} with it (the workspace stays)",
        sealed::parameter(name),
        inst.id
    ));
    let (now, _, served) = match replace_container(
        &cloud,
        &inst,
        &script,
        (
            &image,
            port,
            inst.inputs.as_deref().unwrap_or(userdata::NO_INPUTS),
        ),
        (inst.idle_stop.flatten(), inst.ttl.flatten()),
        printer,
    )
    .await
    {
        Ok(done) => done,
        Err(e @ Error::Interrupted { .. }) => return Err(e),
        Err(e) => {
            if let Some(old) = old {
                sealed::restore(&cloud, name, &old).await?;
                printer.note("The old container and its token are back");
            }
            return Err(e);
        }
    };
    let token = served
        .login_token(Some(&new))
        .ok_or_else(|| Error::TokenNotFound {
            origin: format!("the deployment `{name}` ({})", inst.id),
            reason: "its image sets its own Jupyter token, so a sealed one does not apply".into(),
            hint: "change the token in the image's configuration instead".into(),
        })?;
    let url = match &now.public_ip {
        Some(ip) => url(ip, port, &served.path, served.tls.is_some(), Some(&token)),
        None => format!("{}?token={}", served.path, token.expose()),
    };
    Ok(TokenReport {
        target: Some(Target::Ec2),
        deployment: Some(name.clone()),
        token: token.expose().to_string(),
        url,
        tls_fingerprint: served.tls,
    })
}

/// Records a changed `--access` on the instance, so that `connect` from any machine knows.
async fn retag_access(
    cloud: &Cloud,
    inst: &Instance,
    access: Access,
    printer: &Printer,
) -> Result<()> {
    if inst.access != access {
        cloud.set_access_tag(&inst.id, access).await?;
        printer.note(format!(
            "{} of `{}` is now reached with --access {access}",
            inst.id, inst.deployment
        ));
    }
    Ok(())
}

/// The instance as [`interrupt::made`] lists it.
pub(super) fn instance_made(id: &str, deployment: &str) -> String {
    format!("instance {id} of `{deployment}`")
}

fn require_ip(inst: &Instance, name: &str) -> Result<String> {
    inst.public_ip.clone().ok_or_else(|| Error::Network {
        what: format!("instance {} of `{name}` has no public IP address", inst.id),
        region: "its region".into(),
        message: "Jupyter runs, but it cannot be reached from outside the VPC".into(),
        hint: "launch in a subnet that assigns public IPs (the default VPC's do), or reach it through SSM port forwarding".into(),
    })
}

/// The login URL: `https://IP:PORT/PATH?token=TOKEN` (`http` for a host of a labship from
/// before TLS), without the query when the token is the image's own.
pub fn url(ip: &str, port: u16, path: &str, tls: bool, token: Option<&JupyterToken>) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = host_port(ip, port);
    match token {
        Some(t) => format!("{scheme}://{host}{path}?token={}", t.expose()),
        None => format!("{scheme}://{host}{path}"),
    }
}

/// `IP:PORT`, with an IPv6 address in brackets.
pub fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Checks from this machine that Jupyter answers with the token, over TLS to exactly the
/// certificate the host published. Another certificate is a hard error (nothing is sent);
/// no answer at all is only a note (this machine may not be the one the port is open to).
async fn check_from_here(
    deployment: &str,
    addr: &str,
    served: &Served,
    token: Option<&JupyterToken>,
    why_unreachable: &str,
    printer: &Printer,
) -> Result<()> {
    let Some(pin) = served.tls else {
        return Ok(());
    };
    let endpoint = crate::http::Endpoint::Pinned(addr.to_string(), pin);
    let api = crate::hosts::backup::api_base(&served.path);
    let result = crate::http::get_bytes_at(
        &endpoint,
        &format!("{api}/api/status"),
        token.map(JupyterToken::expose),
        64 * 1024,
        Duration::from_secs(10),
    )
    .await;
    match result {
        Ok((200, _)) => Ok(()),
        Ok((403, _)) if token.is_none() => Ok(()),
        Ok((status, _)) => {
            printer.note(format!(
                "Jupyter on {addr} answered HTTP {status} to labship's check with the token"
            ));
            Ok(())
        }
        Err(crate::http::FetchError::Tls(e @ crate::tls::TlsError::Mismatch { .. })) => {
            Err(Error::TlsMismatch {
                deployment: deployment.to_string(),
                address: addr.to_string(),
                cause: e.to_string(),
            })
        }
        Err(e) => {
            printer.note(format!(
                "Could not reach Jupyter on {addr} from this machine ({e}); {why_unreachable}"
            ));
            Ok(())
        }
    }
}

/// `check_from_here` through a Systems Manager session (`--access ssm`): the same pinned
/// check, on the session's local port. The session ends afterwards.
async fn check_through_ssm(
    cloud: &Cloud,
    instance: &Instance,
    port: u16,
    served: &Served,
    token: Option<&JupyterToken>,
    printer: &Printer,
) -> Result<()> {
    if served.tls.is_none() {
        return Ok(());
    }
    // As over HTTPS, not reaching Jupyter from here is a note: it runs, and `connect` retries.
    let tunnel = match crate::tunnel::Tunnel::open(cloud, &instance.id, port).await {
        Ok(t) => t,
        Err(e @ Error::SsmPluginMissing { .. }) => return Err(e),
        Err(e) => {
            printer.note(format!(
                "Could not check Jupyter through Systems Manager from here ({e}); `labship connect {} --ec2` tries again",
                instance.deployment
            ));
            return Ok(());
        }
    };
    let checked = check_from_here(
        &instance.deployment,
        &tunnel.addr(),
        served,
        token,
        "the Systems Manager session opened, but Jupyter did not answer through it",
        printer,
    )
    .await;
    tunnel.close().await;
    checked
}

/// Phase durations from the markers' own clock (the instance's), anchored at the launch.
fn phase_timings(
    markers: &[console::Marker],
    launched_at: f64,
    build: Option<f64>,
    push: Option<f64>,
    launch: f64,
    total: f64,
) -> Timings {
    let at = |p: Phase| {
        markers.iter().find_map(|m| match (&m.phase, m.at) {
            (MarkerKind::Phase(q), Some(t)) if *q == p => Some(t),
            _ => None,
        })
    };
    let span = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => None,
    };
    let begin = at(Phase::Begin);
    let end = at(Phase::Ready).or(at(Phase::Token));
    Timings {
        build,
        push,
        launch: Some(launch),
        boot: span(Some(launched_at + launch), begin).or(span(Some(launched_at), begin)),
        docker: span(begin, at(Phase::LoggedIn)),
        pull: span(at(Phase::LoggedIn), at(Phase::Pulled)),
        jupyter: span(at(Phase::Pulled), end),
        total,
    }
}
