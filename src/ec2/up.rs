//! `labship up --ec2`: from the project folder to a Jupyter URL on an EC2 instance.
//!
//! Order (each step only when the one before succeeded):
//! 1. read-only checks: instance type exists and runs the image's architecture; an existing
//!    deployment with the same image answers at once (no build, no upload);
//! 2. host image, VPC, the caller's address (still nothing created; `--dry-run` stops here);
//! 3. build and prepare the push (a failed build leaves nothing in AWS);
//! 4. instance role and security group (create or reuse, tagged);
//! 5. upload and RunInstances at the same time: the host boots while layers upload;
//! 6. the console's markers until the token.
//!
//! A changed image on a running deployment replaces the container on the same instance
//! through Systems Manager, so the workspace volume (the notebooks) stays.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::cloud::{self, Cloud, HostImage, Ingress, Instance, LaunchSpec};
use super::userdata::{self, HostKind, MarkerKind, Phase, UserDataInputs};
use super::{ec2_arch, ingress_cidrs, resolve_ami, root_volume_gib, watch, Timings};
use crate::aws::Aws;
use crate::build;
use crate::config::{Config, HostAmi};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::Printer;
use crate::push::{self, Ecr, ImageRegistry};
use crate::tags;

/// The port Jupyter listens on inside the container.
const CONTAINER_PORT: u16 = 8888;
/// How long the user-data retries the pull (the push may still be running).
const PULL_DEADLINE: u64 = 900;
/// How long the user-data waits for Jupyter after starting the container.
const JUPYTER_DEADLINE: u64 = 300;

pub struct UpOptions {
    pub port: u16,
    pub bind: IpAddr,
    pub wait: Duration,
    pub allow_cidr: Vec<String>,
    pub public: bool,
    pub dry_run: bool,
}

/// What `up` did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpAction {
    /// A new instance.
    Launched,
    /// The deployment already ran this image: nothing changed.
    Unchanged,
    /// The instance with this image was still starting (an interrupted `up`): its push was
    /// completed when needed and the wait resumed.
    Resumed,
    /// The last start on the instance had failed: the container was started again on it.
    Restarted,
    /// The image changed: the container was replaced on the same instance.
    ReplacedContainer,
}

#[derive(Debug, Serialize)]
pub struct UpReport {
    pub deployment: String,
    pub url: String,
    pub action: UpAction,
    /// Why, in words.
    pub reason: String,
    pub instance_id: String,
    pub instance_type: String,
    pub public_ip: String,
    pub region: String,
    pub image: String,
    pub built: bool,
    pub bytes_uploaded: u64,
    pub timings: Timings,
}

impl std::fmt::Display for UpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// `up --dry-run`: everything `up` would do, and the user-data it would send.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub deployment: String,
    pub region: String,
    /// "launch", "nothing" or "replace-container".
    pub action: String,
    pub reason: String,
    pub instance_type: String,
    pub architecture: String,
    pub ami: HostImage,
    pub root_volume: RootVolume,
    pub metadata_options: MetadataPlan,
    pub vpc: String,
    pub subnet: Option<String>,
    pub security_group: SecurityGroupPlan,
    pub iam: IamPlan,
    pub image: String,
    pub tags: BTreeMap<String, String>,
    pub user_data: String,
}

#[derive(Debug, Serialize)]
pub struct RootVolume {
    pub device: String,
    pub size_gib: i32,
    pub volume_type: &'static str,
    pub encrypted: bool,
}

#[derive(Debug, Serialize)]
pub struct MetadataPlan {
    pub http_tokens: &'static str,
    pub hop_limit: u8,
}

#[derive(Debug, Serialize)]
pub struct SecurityGroupPlan {
    pub name: String,
    pub ingress: Vec<Ingress>,
    /// Where the CIDRs came from.
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct IamPlan {
    pub role: &'static str,
    pub instance_profile: &'static str,
    pub policies: Vec<&'static str>,
    pub exists: bool,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Plan for `{}` in {} (nothing was changed)",
            self.deployment, self.region
        )?;
        writeln!(f, "  action          {}: {}", self.action, self.reason)?;
        writeln!(
            f,
            "  instance type   {} ({})",
            self.instance_type, self.architecture
        )?;
        writeln!(
            f,
            "  AMI             {} (from {})",
            self.ami.id, self.ami.source
        )?;
        writeln!(
            f,
            "  root volume     {} {} GiB {}, encrypted",
            self.root_volume.device, self.root_volume.size_gib, self.root_volume.volume_type
        )?;
        writeln!(
            f,
            "  metadata        IMDSv2 only (tokens {}), hop limit {}",
            self.metadata_options.http_tokens, self.metadata_options.hop_limit
        )?;
        writeln!(
            f,
            "  network         {}{}",
            self.vpc,
            self.subnet
                .as_deref()
                .map(|s| format!(", subnet {s}"))
                .unwrap_or_else(|| ", default subnets".into())
        )?;
        writeln!(
            f,
            "  security group  {} ({})",
            self.security_group.name, self.security_group.source
        )?;
        for rule in &self.security_group.ingress {
            writeln!(
                f,
                "    allow tcp/{} from {}",
                rule.port,
                rule.cidrs.join(", ")
            )?;
        }
        writeln!(
            f,
            "  IAM             role {} / instance profile {} ({}): {}",
            self.iam.role,
            self.iam.instance_profile,
            if self.iam.exists {
                "exists"
            } else {
                "would be created"
            },
            self.iam.policies.join(", ")
        )?;
        writeln!(f, "  image           {}", self.image)?;
        let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(f, "  tags            {}", tags.join(" "))?;
        writeln!(f, "  user-data ({} bytes):", self.user_data.len())?;
        write!(f, "{}", self.user_data.trim_end())
    }
}

pub enum UpOutcome {
    Plan(Box<Plan>),
    Up(Box<UpReport>),
}

pub async fn up(
    engine: &Engine,
    aws: &Aws,
    config: &Config,
    opts: &UpOptions,
    printer: &Printer,
) -> Result<UpOutcome> {
    let started = Instant::now();
    let cloud = Cloud::new(aws);
    let name = &config.name;

    // 1. Checks that change nothing (the two reads at once: they are the no-op's latency).
    let (itype, existing) = tokio::try_join!(
        cloud.instance_type(&config.ec2.instance_type),
        cloud.instances(Some(name))
    )?;
    let arch = config.build.platform;
    if !itype.architectures.iter().any(|a| a == ec2_arch(arch)) {
        return Err(Error::ArchitectureMismatch {
            platform: arch.platform().to_string(),
            instance_type: itype.name.clone(),
            architectures: itype.architectures.join(", "),
        });
    }
    let (tag, _) = build::planned_tag(config)?;
    let wanted = format!("/{}:{}", config.push.repository, tag);
    let live = existing.iter().rfind(|i| i.is_live()).cloned();
    if live.is_none() {
        // An instance on its way out (shutting-down) is no obstacle to a new one.
        if let Some(other) = existing.iter().find(|i| i.state != "shutting-down") {
            return Err(Error::Replace {
                deployment: name.clone(),
                instance: other.id.clone(),
                message: format!("the instance is {}", other.state),
                hint: format!("start it again in the EC2 console, or remove it with `labship down {name} --ec2` (its notebooks go with it) and run `labship up --ec2`"),
            });
        }
    }
    let same_image = live
        .as_ref()
        .is_some_and(|i| i.image.as_deref().is_some_and(|img| img.ends_with(&wanted)));
    let same_port = live.as_ref().is_some_and(|i| i.port == Some(opts.port));

    if let (Some(inst), true, true, false) = (&live, same_image, same_port, opts.dry_run) {
        let ctx = Resume {
            engine,
            aws,
            nitro: itype.nitro,
            started,
        };
        return unchanged(&cloud, config, opts, inst, &ctx, printer).await;
    }

    // 2. Everything else that must hold before anything is created.
    let (ami, vpc, ingress) = tokio::try_join!(
        resolve_ami(&cloud, &config.ec2.ami, arch),
        cloud.vpc(config.ec2.subnet.as_deref()),
        ingress_for(config, opts)
    )?;
    let ecr = Ecr::new(aws, config.push.registry_endpoint.clone());

    if opts.dry_run {
        let auth = ecr.login().await?;
        let image = format!("{}/{}:{}", auth.server, config.push.repository, tag);
        let image_size = engine
            .image_size(&format!("{}:{}", config.local_image(), tag))
            .await
            .ok()
            .flatten();
        let user_data = userdata::render_boot(&inputs(
            config,
            &cloud.region,
            &auth.server,
            &image,
            &ami_kind(&config.ec2.ami),
            opts,
        ))
        .map_err(user_data_error)?;
        let (action, reason) = match &live {
            Some(i) if same_image && same_port => ("nothing".to_string(), format!("{} already runs this image", i.id)),
            Some(i) => ("replace-container".to_string(), format!("{} runs {}; the container would be replaced on it (the workspace volume stays)", i.id, i.image.as_deref().unwrap_or("an unknown image"))),
            None => ("launch".to_string(), format!("no instance of `{name}` exists")),
        };
        let mut tags: BTreeMap<String, String> = tags::for_deployment(name)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        tags.insert("Name".into(), format!("labship-{name}"));
        tags.insert(tags::IMAGE.into(), image.clone());
        tags.insert(tags::PORT.into(), opts.port.to_string());
        return Ok(UpOutcome::Plan(Box::new(Plan {
            deployment: name.clone(),
            region: cloud.region.clone(),
            action,
            reason,
            instance_type: itype.name.clone(),
            architecture: ec2_arch(arch).to_string(),
            root_volume: RootVolume {
                device: ami.root_device.clone(),
                size_gib: root_volume_gib(ami.min_root_gib, image_size),
                volume_type: "gp3",
                encrypted: true,
            },
            ami,
            metadata_options: MetadataPlan {
                http_tokens: "required",
                hop_limit: 1,
            },
            vpc,
            subnet: config.ec2.subnet.clone(),
            security_group: SecurityGroupPlan {
                name: cloud::security_group_name(name),
                source: ingress.1.clone(),
                ingress: ingress.0,
            },
            iam: IamPlan {
                role: cloud::INSTANCE_ROLE,
                instance_profile: cloud::INSTANCE_PROFILE,
                policies: cloud::INSTANCE_POLICIES.to_vec(),
                exists: cloud.instance_profile_exists().await?,
            },
            image,
            tags,
            user_data,
        })));
    }

    // 3. Build (when needed) and everything before the upload.
    let t_build = Instant::now();
    let prepared = push::prepare(engine, &ecr, config, printer).await?;
    let build_secs = prepared.built().then(|| t_build.elapsed().as_secs_f64());
    let image = prepared.image_uri();
    let registry = prepared.registry_host().to_string();
    let kind = ami_kind(&config.ec2.ami);
    let user_inputs = inputs(config, &cloud.region, &registry, &image, &kind, opts);

    if let Some(inst) = live {
        let t_push = Instant::now();
        let pushed = push::finish(engine, &ecr, prepared, printer).await?;
        let push_secs = (!pushed.skipped).then(|| t_push.elapsed().as_secs_f64());
        let reason = if same_image {
            format!("the port changed to {}", opts.port)
        } else {
            format!(
                "the image changed ({} -> {image}); replacing the container on {} keeps the workspace volume and its notebooks",
                inst.image.as_deref().unwrap_or("unknown"),
                inst.id
            )
        };
        printer.note(format!("`{name}`: {reason}"));
        let script = userdata::render_replace(&user_inputs).map_err(user_data_error)?;
        let report = replace_container(&cloud, &inst, &script, &image, opts, printer).await?;
        // Only now: had the new container failed, the old one (and its port) would still run.
        if let Some(group) = inst.security_groups.first() {
            cloud.reconcile_ingress(group, &ingress.0).await?;
        }
        let timings = Timings {
            build: build_secs,
            push: push_secs,
            jupyter: Some(report.1),
            total: started.elapsed().as_secs_f64(),
            ..Timings::default()
        };
        let ip = require_ip(&report.0, name)?;
        return Ok(UpOutcome::Up(Box::new(UpReport {
            deployment: name.clone(),
            url: url(&ip, opts.port, &report.2),
            action: UpAction::ReplacedContainer,
            reason,
            instance_id: inst.id.clone(),
            instance_type: inst.instance_type.clone(),
            public_ip: ip,
            region: cloud.region.clone(),
            image,
            built: build_secs.is_some(),
            bytes_uploaded: pushed.bytes_uploaded,
            timings,
        })));
    }

    // 4. Role and security group.
    let (profile_created, (group, group_created)) = tokio::try_join!(
        cloud.ensure_instance_profile(),
        cloud.ensure_security_group(name, &vpc, &ingress.0)
    )?;
    if profile_created {
        printer.note(format!(
            "Created IAM role and instance profile {}",
            cloud::INSTANCE_PROFILE
        ));
    }
    if group_created {
        printer.note(format!(
            "Created security group {group} ({})",
            cloud::security_group_name(name)
        ));
    }

    // 5. Upload and launch together.
    let image_size = engine.image_size(&prepared.local_image()).await?;
    let user_data = userdata::render_boot(&user_inputs).map_err(user_data_error)?;
    let spec = LaunchSpec {
        deployment: name.clone(),
        image: image.clone(),
        port: opts.port,
        ami: ami.id.clone(),
        instance_type: itype.name.clone(),
        root_device: ami.root_device.clone(),
        root_gib: root_volume_gib(ami.min_root_gib, image_size),
        security_group: group,
        subnet: config.ec2.subnet.clone(),
        ssh_key: config.ec2.ssh_key.clone(),
        user_data,
    };
    let t_push = Instant::now();
    let upload = async {
        let r = push::finish(engine, &ecr, prepared, printer).await;
        (r, t_push.elapsed().as_secs_f64())
    };
    // A new profile propagates in seconds; one that exists needs no retry budget at all.
    let profile_wait = Duration::from_secs(if profile_created { 120 } else { 20 });
    let launch = launch_and_wait_running(&cloud, &spec, profile_wait, printer);
    let ((pushed, push_secs), launched) = tokio::join!(upload, launch);
    let (instance, launched_at, launch_secs) = match (pushed.as_ref(), launched) {
        (Err(_), Ok((inst, _, _))) => {
            // Nothing half-made: the instance would wait for an image that never comes.
            printer.note(format!("The push failed: terminating {} again", inst.id));
            if let Err(e) = cloud.terminate(std::slice::from_ref(&inst.id)).await {
                printer.note(format!(
                    "could not terminate {}: {e}; `labship down {name} --ec2` removes it",
                    inst.id
                ));
            }
            return Err(pushed.err().unwrap_or_else(|| Error::PushFailed {
                image,
                message: "the push failed".into(),
                hint: "run `labship push` to see why".into(),
            }));
        }
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
    let deadline = Instant::now() + opts.wait;
    let wait = watch::Wait {
        deadline,
        wait_secs: opts.wait.as_secs(),
        replay: true,
        first_read: None,
        nitro: itype.nitro,
    };
    let ready = watch::until_token(&cloud, &instance, wait, printer).await?;
    let ip = require_ip(&ready.instance, name)?;
    let timings = phase_timings(
        &ready.markers,
        launched_at,
        build_secs,
        (!pushed.skipped).then_some(push_secs),
        launch_secs,
        started.elapsed().as_secs_f64(),
    );
    Ok(UpOutcome::Up(Box::new(UpReport {
        deployment: name.clone(),
        url: url(&ip, opts.port, &ready.finding),
        action: UpAction::Launched,
        reason: format!("no instance of `{name}` was running"),
        instance_id: instance.id.clone(),
        instance_type: itype.name.clone(),
        public_ip: ip,
        region: cloud.region.clone(),
        image,
        built: build_secs.is_some(),
        bytes_uploaded: pushed.bytes_uploaded,
        timings,
    })))
}

/// The running deployment already has this image and port: only the token is read (and the
/// security group follows the caller's address when it changed).
struct Resume<'a> {
    engine: &'a Engine,
    aws: &'a Aws,
    nitro: bool,
    started: Instant,
}

async fn unchanged(
    cloud: &Cloud,
    config: &Config,
    opts: &UpOptions,
    inst: &Instance,
    ctx: &Resume<'_>,
    printer: &Printer,
) -> Result<UpOutcome> {
    let (nitro, started) = (ctx.nitro, ctx.started);
    let name = &config.name;
    match ingress_for(config, opts).await {
        Ok((ingress, source)) => {
            if let Some(group) = inst.security_groups.first() {
                if cloud.reconcile_ingress(group, &ingress).await? {
                    printer.note(format!(
                        "Updated {group}: Jupyter is now open to {} ({source})",
                        ingress[0].cidrs.join(", ")
                    ));
                }
            }
        }
        // The address service being down must not stop a no-op.
        Err(e) => printer.note(format!("Security group left as it is: {e}")),
    }
    let console = cloud.console(&inst.id, nitro).await?.unwrap_or_default();
    // The last start on this instance failed (a pull that gave up, a crashed container, a
    // failed replace): start it again on the same instance, keeping its workspace.
    if let Some((phase, cause)) = newest_error(&console) {
        printer.note(format!(
            "The last start on {} failed while {phase}: {}; starting it again through Systems Manager",
            inst.id,
            crate::local::redact(&cause)
        ));
        let ecr = Ecr::new(ctx.aws, config.push.registry_endpoint.clone());
        let pushed = push::push(ctx.engine, &ecr, config, printer).await?;
        let image = pushed.image_uri.clone();
        let registry = image.split('/').next().unwrap_or_default().to_string();
        let kind = ami_kind(&config.ec2.ami);
        let script = userdata::render_replace(&inputs(
            config,
            &cloud.region,
            &registry,
            &image,
            &kind,
            opts,
        ))
        .map_err(user_data_error)?;
        let (now, secs, finding) =
            replace_container(cloud, inst, &script, &image, opts, printer).await?;
        let ip = require_ip(&now, name)?;
        return Ok(UpOutcome::Up(Box::new(UpReport {
            deployment: name.clone(),
            url: url(&ip, opts.port, &finding),
            action: UpAction::Restarted,
            reason: format!("the last start on {} had failed while {phase}", inst.id),
            instance_id: inst.id.clone(),
            instance_type: inst.instance_type.clone(),
            public_ip: ip,
            region: cloud.region.clone(),
            image,
            built: pushed.built,
            bytes_uploaded: pushed.bytes_uploaded,
            timings: Timings {
                jupyter: Some(secs),
                total: started.elapsed().as_secs_f64(),
                ..Timings::default()
            },
        })));
    }
    // Jupyter already printed its token: the no-op path (no build, no registry call).
    let (mut action, mut built, mut bytes) = (UpAction::Unchanged, false, 0);
    if crate::token::find_token(&console).is_ok() {
        printer.note(format!("`{name}` already runs this image on {}", inst.id));
    } else {
        // Still starting: an `up` interrupted during its upload leaves an instance waiting
        // for an image that may never come. Finish the push (nothing to do when it is there).
        printer.note(format!(
            "{} of `{name}` is still starting; making sure its image is in the registry",
            inst.id
        ));
        let ecr = Ecr::new(ctx.aws, config.push.registry_endpoint.clone());
        let pushed = push::push(ctx.engine, &ecr, config, printer).await?;
        action = UpAction::Resumed;
        built = pushed.built;
        bytes = pushed.bytes_uploaded;
    }
    let deadline = Instant::now() + opts.wait;
    let wait = watch::Wait {
        deadline,
        wait_secs: opts.wait.as_secs(),
        replay: false,
        first_read: (!console.is_empty()).then(|| console.clone()),
        nitro,
    };
    let ready = watch::until_token(cloud, inst, wait, printer).await?;
    let ip = require_ip(&ready.instance, name)?;
    Ok(UpOutcome::Up(Box::new(UpReport {
        deployment: name.clone(),
        url: url(&ip, opts.port, &ready.finding),
        action,
        reason: if action == UpAction::Resumed {
            format!(
                "{} was still starting (an earlier `up` was interrupted)",
                inst.id
            )
        } else {
            format!("{} already runs this image", inst.id)
        },
        instance_id: inst.id.clone(),
        instance_type: inst.instance_type.clone(),
        public_ip: ip,
        region: cloud.region.clone(),
        image: inst.image.clone().unwrap_or_default(),
        built,
        bytes_uploaded: bytes,
        timings: Timings {
            total: started.elapsed().as_secs_f64(),
            ..Timings::default()
        },
    })))
}

async fn ingress_for(config: &Config, opts: &UpOptions) -> Result<(Vec<Ingress>, String)> {
    let allow = if opts.allow_cidr.is_empty() {
        config.ec2.allow_cidr.clone()
    } else {
        opts.allow_cidr.clone()
    };
    let (cidrs, source) = ingress_cidrs(&allow, opts.public).await?;
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

async fn launch_and_wait_running(
    cloud: &Cloud,
    spec: &LaunchSpec,
    profile_wait: Duration,
    printer: &Printer,
) -> Result<(Instance, f64, f64)> {
    let t = Instant::now();
    let launched_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let inst = cloud.launch(spec, profile_wait).await?;
    printer.note(format!(
        "Launched {} ({}, {}, {} GiB encrypted gp3)",
        inst.id, spec.instance_type, spec.ami, spec.root_gib
    ));
    // RunInstances answers with a pending instance; running takes seconds to a minute.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match cloud.instance(&inst.id).await? {
            Some(i) if i.state == "running" => return Ok((i, launched_at, t.elapsed().as_secs_f64())),
            Some(i) if i.state != "pending" => {
                return Err(Error::BootFailed {
                    deployment: spec.deployment.clone(),
                    instance: inst.id.clone(),
                    phase: "launch".into(),
                    cause: format!("the instance went to {} before running", i.state),
                    hint: "see the instance's state reason in the EC2 console (capacity, EBS limits); `labship down --ec2` cleans up".into(),
                })
            }
            _ if Instant::now() >= deadline => {
                return Err(Error::BootFailed {
                    deployment: spec.deployment.clone(),
                    instance: inst.id.clone(),
                    phase: "launch".into(),
                    cause: "still pending after 300s".into(),
                    hint: "try again later or another instance type; `labship down --ec2` cleans up".into(),
                })
            }
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Replaces the container through SSM RunCommand; returns (instance, seconds, token).
async fn replace_container(
    cloud: &Cloud,
    inst: &Instance,
    script: &str,
    image: &str,
    opts: &UpOptions,
    printer: &Printer,
) -> Result<(Instance, f64, crate::token::TokenFinding)> {
    let t = Instant::now();
    if !cloud.ssm_online(&inst.id).await? {
        return Err(Error::Replace {
            deployment: inst.deployment.clone(),
            instance: inst.id.clone(),
            message: "its Systems Manager agent is not online, so labship cannot reach the host".into(),
            hint: format!("the agent needs a minute after boot and the labship-instance role (AmazonSSMManagedInstanceCore); try again shortly, or remove the instance with `labship down {} --ec2` (its notebooks go with it) and run `labship up --ec2`", inst.deployment),
        });
    }
    printer.note(format!(
        "Replacing the container on {} through Systems Manager",
        inst.id
    ));
    // The script bounds itself (login, pull and Jupyter deadlines): SSM's execution timeout
    // follows those, not --wait, so SSM never cuts it off half-way.
    let budget = Duration::from_secs(180 + PULL_DEADLINE + JUPYTER_DEADLINE + 120);
    let result = cloud
        .run_script(
            &inst.id,
            script,
            "labship: replace the Jupyter container",
            budget,
        )
        .await?;
    let markers = userdata::markers(&result.stdout);
    if let Some(MarkerKind::Error { phase, cause }) = markers.last().map(|m| &m.phase) {
        return Err(Error::BootFailed {
            deployment: inst.deployment.clone(),
            instance: inst.id.clone(),
            phase: phase.clone(),
            cause: crate::local::redact(cause),
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
                crate::local::redact(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            ),
        });
    }
    let finding = crate::token::find_token(&result.stdout).map_err(|e| {
        crate::local::token_error(e, &format!("the replace command's output on {}", inst.id))
    })?;
    cloud.set_serving_tags(&inst.id, image, opts.port).await?;
    let now = cloud
        .instance(&inst.id)
        .await?
        .unwrap_or_else(|| inst.clone());
    Ok((now, t.elapsed().as_secs_f64(), finding))
}

/// The phase and cause of the newest marker on a console, when it is an error.
fn newest_error(console: &str) -> Option<(String, String)> {
    match userdata::markers(console).pop()?.phase {
        MarkerKind::Error { phase, cause } => Some((phase, cause)),
        MarkerKind::Phase(_) => None,
    }
}

fn inputs<'a>(
    config: &'a Config,
    region: &'a str,
    registry: &'a str,
    image: &'a str,
    kind: &HostKind,
    opts: &UpOptions,
) -> UserDataInputs<'a> {
    UserDataInputs {
        deployment: &config.name,
        region,
        registry,
        image,
        host_kind: *kind,
        bind: opts.bind,
        port: opts.port,
        container_port: CONTAINER_PORT,
        pull_deadline_secs: PULL_DEADLINE,
        jupyter_deadline_secs: JUPYTER_DEADLINE,
    }
}

fn ami_kind(ami: &HostAmi) -> HostKind {
    match ami {
        HostAmi::Ecs => HostKind::EcsAl2023,
        HostAmi::Al2023 => HostKind::Al2023,
        HostAmi::Id(_) => HostKind::Custom,
    }
}

fn user_data_error(e: userdata::UserDataError) -> Error {
    Error::InvalidSetting {
        what: "user-data",
        value: String::new(),
        reason: e.to_string(),
        hint: "check the deployment name, registry endpoint and image name".into(),
    }
}

fn require_ip(inst: &Instance, name: &str) -> Result<String> {
    inst.public_ip.clone().ok_or_else(|| Error::Network {
        what: format!("instance {} of `{name}` has no public IP address", inst.id),
        region: "its region".into(),
        message: "Jupyter runs, but it cannot be reached from outside the VPC".into(),
        hint: "launch in a subnet that assigns public IPs (the default VPC's do), or reach it through SSM port forwarding".into(),
    })
}

fn url(ip: &str, port: u16, finding: &crate::token::TokenFinding) -> String {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!(
        "http://{host}:{port}{}?token={}",
        finding.path,
        finding.token.expose()
    )
}

/// Phase durations from the markers' own clock (the instance's), anchored at the launch.
fn phase_timings(
    markers: &[userdata::Marker],
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
