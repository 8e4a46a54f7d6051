//! What `up --ec2` will do, decided in one pure function from the configuration and what
//! was observed in AWS and on the engine. `--dry-run` prints the [`Plan`] this returns and
//! `up` applies exactly the same value (the [`LaunchSpec`] RunInstances receives is built
//! here, tags, metadata options and volume included), so the preview and the launch cannot
//! drift apart.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::console::{self, MarkerKind};
use super::userdata::{self, HostKind, UserDataInputs};
use super::{ec2_arch, root_volume_gib};
use crate::aws::ebs::{self, DataVolume};
use crate::aws::ec2::{
    class_group_name, security_group_name, HostImage, Ingress, Instance, InstanceTypeInfo,
    LaunchSpec,
};
use crate::aws::iam;
use crate::config::{Access, Config, HostAmi, Target};
use crate::error::{Error, Result};
use crate::hosts::{Plan, PlanDetail, PlannedAction};
use crate::tags;

/// The port Jupyter listens on inside the container.
pub const CONTAINER_PORT: u16 = 8888;
/// How long the user-data retries the pull (the push may still be running).
pub const PULL_DEADLINE: u64 = 900;
/// How long the user-data waits for Jupyter after starting the container.
pub const JUPYTER_DEADLINE: u64 = 300;
/// How long the host scripts wait for the data volume to be attached (`DATA_DEADLINE` in
/// userdata/common.sh).
pub const DATA_DEADLINE: u64 = 600;
/// Default wait for a new instance: boot, Docker, pull of a multi-GB image, Jupyter.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(900);

/// `up`'s options with EC2's defaults applied.
#[derive(Debug, Clone)]
pub struct Options {
    pub port: u16,
    /// Whether `--port` was given (a class's seats are given none: each is placed on one).
    pub port_asked: bool,
    pub bind: IpAddr,
    pub wait: Duration,
    pub allow_cidr: Vec<String>,
    pub public: bool,
    /// How Jupyter is reached: through its open port, or an SSM session (no inbound rule).
    pub access: Access,
    /// Whether `access` was asked for (`--access`, `ec2.access`), rather than defaulted.
    pub access_asked: bool,
    /// Act on a deployment another identity owns.
    pub force: bool,
    /// The host's watchdog: stop after this long idle / this long after each start.
    pub idle_stop: Option<Duration>,
    pub ttl: Option<Duration>,
    /// Whether they were asked for (flag, `LABSHIP_*`, labship.toml) rather than defaulted.
    pub idle_stop_asked: bool,
    pub ttl_asked: bool,
    /// Size of a new data volume (GiB), and whether it was asked for.
    pub volume_gib: i32,
    pub volume_gib_asked: bool,
    /// Launch a spot instance (`--spot`, `ec2.spot`); `None`: not asked (on-demand for a new
    /// one; an existing one stays what it is).
    pub spot: Option<bool>,
    /// A class's seat: its instance and data volume carry the class and seat tags.
    pub seat: Option<crate::hosts::SeatOf>,
    /// The limits of each seat's container on a host several seats share.
    pub limits: crate::hosts::Limits,
    /// The `[data] inputs` the host copies and mounts read-only at `inputs/` (`inputs.tsv`
    /// lines; empty: none).
    pub inputs: String,
    /// The same inputs as the deployment's own role reads them: each address, and whether
    /// it is one object (see [`super::role`]).
    pub reach: Vec<(crate::aws::s3::S3Uri, bool)>,
}

impl Options {
    pub fn resolve(config: &Config, options: &crate::hosts::UpOptions) -> Result<Options> {
        // A class's seat too: the one port, unless it is running on another (see `following`);
        // a seat of a shared host, the host's first port plus its slot.
        let first = options.port.unwrap_or(config.ec2.port);
        let port = seat_port(first, options.seat.as_ref())?;
        if first == 0 {
            return Err(Error::InvalidSetting {
                what: "port",
                value: "0".into(),
                reason: "a port is 1-65535".into(),
                hint: "use e.g. --port 8888".into(),
            });
        }
        // The host's sshd listens on 22: the container could not publish it, and with
        // ec2.ssh_key the two rules would be one.
        if port == 22 {
            return Err(Error::InvalidSetting {
                what: "port",
                value: "22".into(),
                reason: "port 22 is the instance's SSH port (its sshd listens there), so Jupyter cannot be published on it".into(),
                hint: "use another port, e.g. --port 8888 (the default)".into(),
            });
        }
        let asked = options.access.or(config.ec2.access);
        let access = asked.unwrap_or_default();
        if access == Access::Ssm {
            let opener = if options.public {
                Some("--public")
            } else if !options.allow_cidr.is_empty() {
                Some("--allow-cidr")
            } else if !config.ec2.allow_cidr.is_empty() {
                Some("ec2.allow_cidr")
            } else if config.ec2.ssh_key.is_some() {
                Some("ec2.ssh_key (it opens port 22)")
            } else {
                None
            };
            if let Some(opener) = opener {
                return Err(Error::InvalidSetting {
                    what: "access",
                    value: "ssm".into(),
                    reason: format!("--access ssm opens no inbound port, and {opener} asks for one"),
                    hint: format!("drop {opener} (in labship.toml or on the command line), or use --access https"),
                });
            }
        }
        Ok(Options {
            port,
            port_asked: options.port.is_some(),
            access,
            access_asked: asked.is_some(),
            bind: options
                .bind
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            wait: options.wait.unwrap_or(DEFAULT_WAIT),
            // Checked here, before any call: a bad range is refused even on a no-op `up`.
            allow_cidr: super::allowed_cidrs(if options.allow_cidr.is_empty() {
                &config.ec2.allow_cidr
            } else {
                &options.allow_cidr
            })?,
            public: options.public,
            force: options.force,
            idle_stop: config
                .ec2
                .idle_stop
                .unwrap_or(Some(crate::config::DEFAULT_IDLE_STOP)),
            ttl: config.ec2.ttl.unwrap_or(Some(crate::config::DEFAULT_TTL)),
            idle_stop_asked: config.ec2.idle_stop.is_some(),
            ttl_asked: config.ec2.ttl.is_some(),
            volume_gib: config
                .ec2
                .volume_size
                .unwrap_or(crate::config::DEFAULT_VOLUME_GIB),
            volume_gib_asked: config.ec2.volume_size.is_some(),
            spot: config.ec2.spot,
            seat: options.seat.clone(),
            limits: options.limits,
            inputs: options.host_inputs.clone(),
            reach: options.host_reach.clone(),
        })
    }
}

impl Options {
    /// These options for the deployment's existing instance (live or stopped): a deployment
    /// reached through SSM stays so unless a way in was asked for (`--access`, `ec2.access`,
    /// `--allow-cidr`, `--public`), so that a plain `up` never opens a port it had closed;
    /// its idle stop and TTL stay unless others were asked for. A class's seat keeps its
    /// port unless `--port` is given: a seat's place in the roster (or a `up` of the seat's
    /// deployment by its name) moves no URL a student was given, nor restarts its Jupyter.
    /// (A seat in its class's group then takes the port and access most seats in the group
    /// have, [`Options::joining`]: they are the same unless a move failed.)
    pub fn following(&self, existing: Option<&crate::aws::ec2::Instance>) -> Options {
        let mut opts = self.clone();
        let asked = self.way_in_asked();
        let Some(inst) = existing else {
            return opts;
        };
        if !asked {
            opts.access = inst.access;
        }
        if let (false, true, Some(kept)) = (
            self.port_asked,
            self.seat.is_some() || inst.seat.is_some(),
            inst.port,
        ) {
            opts.port = kept;
        }
        // A seat of a shared host is on its host's slot: its port is the host's first (the
        // one asked for, or the one it has) plus that slot.
        if let Some(host) = inst.shared_host() {
            if self.port_asked {
                let asked_slot = self.seat.as_ref().and_then(|s| s.host.as_ref());
                let first = u16::try_from(asked_slot.map_or(0, |h| h.slot))
                    .ok()
                    .and_then(|s| self.port.checked_sub(s));
                if let Some(port) = first.and_then(|f| seat_port(f, inst.seat.as_ref()).ok()) {
                    opts.port = port;
                }
            }
            opts.seat = match &self.seat {
                Some(asked) => Some(crate::hosts::SeatOf {
                    host: Some(host.clone()),
                    ..asked.clone()
                }),
                None => inst.seat.clone(),
            };
        }
        if let (false, Some(kept)) = (self.idle_stop_asked, inst.idle_stop) {
            opts.idle_stop = kept;
        }
        if let (false, Some(kept)) = (self.ttl_asked, inst.ttl) {
            opts.ttl = kept;
        }
        opts
    }

    /// A class's seat in its class's group (or a new one): the port and access of the seats
    /// in that group (`class`: [`crate::aws::Cloud::class_settings`]) unless others are
    /// asked for (`--port`; `--access`, `--allow-cidr`, `--public`), as the group's rules are
    /// for one port and one way in.
    pub fn joining(&self, class: Option<(u16, Access)>) -> Options {
        let mut opts = self.clone();
        let Some((port, access)) = class.filter(|_| self.seat.is_some()) else {
            return opts;
        };
        if !self.port_asked {
            if let Ok(own) = seat_port(port, self.seat.as_ref()) {
                opts.port = own;
            }
        }
        if !self.way_in_asked() {
            opts.access = access;
        }
        opts
    }

    /// A way in was asked for: `--access` (or `ec2.access`), `--allow-cidr` or `--public`.
    pub fn way_in_asked(&self) -> bool {
        self.access_asked || self.public || !self.allow_cidr.is_empty()
    }
}

/// A seat's port: `first`, plus its slot on a shared host (refused past 65535).
pub fn seat_port(first: u16, seat: Option<&crate::hosts::SeatOf>) -> Result<u16> {
    let slot = seat.and_then(|s| s.host.as_ref()).map_or(0, |h| h.slot);
    u16::try_from(slot)
        .ok()
        .and_then(|s| first.checked_add(s))
        .ok_or_else(|| Error::InvalidSetting {
            what: "port",
            value: first.to_string(),
            reason: format!("the seat of slot {slot} on its host would have a port past 65535"),
            hint: "use a lower --port (each seat of a host takes the next port)".into(),
        })
}

type Tags = Vec<(String, String)>;

/// What a seat of a host its class's seats share launches: the host's seats (as
/// deployments, in slot order), its first port, and this seat's data volume device.
struct SharedLaunch {
    class: String,
    seats: Vec<String>,
    deployments: Vec<String>,
    first_port: u16,
    device: String,
}

impl SharedLaunch {
    /// The host's tags (of its root volume and interface; of the instance): its class and,
    /// on the instance, its seats in slot order, but no deployment or seat of its own.
    fn tags(&self) -> (Tags, Tags) {
        let mut tags = vec![(
            tags::MANAGED_BY.to_string(),
            tags::MANAGED_BY_VALUE.to_string(),
        )];
        tags.extend(tags::owner().map(|arn| (tags::OWNER.to_string(), arn)));
        tags.push((
            "Name".into(),
            format!("labship-{}-host-{}", self.class, self.seats.join("+")),
        ));
        tags.push((tags::CLASS.into(), self.class.clone()));
        let mut instance = tags.clone();
        instance.push((tags::HOST_SEATS.into(), self.seats.join(" ")));
        (tags, instance)
    }
}

/// The shared host of the seat `opts` is for, if it is on one.
fn shared_of(opts: &Options) -> Result<Option<SharedLaunch>> {
    let Some((seat, host)) = opts
        .seat
        .as_ref()
        .and_then(|s| s.host.as_ref().map(|h| (s, h)))
    else {
        return Ok(None);
    };
    let refuse = |reason: String| Error::InvalidSetting {
        what: "seats per instance",
        value: host.seats.len().to_string(),
        reason,
        hint: format!(
            "give --seats-per-instance 1 to {}",
            userdata::MAX_SEATS_PER_HOST
        ),
    };
    let device = ebs::device(host.slot)
        .ok_or_else(|| refuse(format!("slot {} has no data volume device", host.slot)))?;
    let first_port = u16::try_from(host.slot)
        .ok()
        .and_then(|s| opts.port.checked_sub(s))
        .ok_or_else(|| refuse(format!("slot {} is past port {}", host.slot, opts.port)))?;
    Ok(Some(SharedLaunch {
        class: seat.class.clone(),
        seats: host.seats.clone(),
        deployments: host
            .seats
            .iter()
            .map(|s| crate::class::seat_deployment(&seat.class, s))
            .collect(),
        first_port,
        device,
    }))
}

/// The shared host an existing seat is on, as its replace script names it: the host's
/// seats as deployments, in slot order, and the first seat's port.
pub struct ExistingHost {
    pub deployments: Vec<String>,
    pub first_port: u16,
}

/// What a script sent to one seat of a shared host does for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatScript {
    /// Its container put in place (a new image, a restart).
    Replace,
    /// A new container even with the same image (a rotated token).
    Recreate,
    /// The seat taken off the host (`down --seat`).
    Leave,
}

impl ExistingHost {
    /// The host's script for `seat` alone: `base` (the seat's settings) with the host's
    /// seats and first port, as its boot script named them.
    pub fn script(
        &self,
        base: UserDataInputs,
        seat: &str,
        what: SeatScript,
    ) -> std::result::Result<String, userdata::UserDataError> {
        let seats: Vec<&str> = self.deployments.iter().map(String::as_str).collect();
        let inputs = UserDataInputs {
            deployment: seats.first().copied().unwrap_or(seat),
            seats: &seats,
            port: self.first_port,
            ..base
        };
        match what {
            SeatScript::Replace => userdata::render_seat_replace(&inputs, seat, false),
            SeatScript::Recreate => userdata::render_seat_replace(&inputs, seat, true),
            SeatScript::Leave => userdata::render_seat_leave(&inputs, seat),
        }
    }

    pub fn of(inst: &Instance) -> Option<Self> {
        let seat = inst.seat.as_ref()?;
        let host = seat.host.as_ref()?;
        let slot = u16::try_from(host.slot).ok()?;
        Some(Self {
            deployments: host
                .seats
                .iter()
                .map(|s| crate::class::seat_deployment(&seat.class, s))
                .collect(),
            first_port: inst.port?.checked_sub(slot)?,
        })
    }
}

/// What a script sent to an existing instance needs when it changes neither its image, nor
/// its watchdog, nor its inputs (a token rotation, a seat leaving its host): from its tags,
/// `image` (its `labship:image`) on `port`. No limits: a new container keeps the running
/// one's.
#[must_use]
pub fn kept_inputs<'a>(
    inst: &'a Instance,
    region: &'a str,
    image: &'a str,
    port: u16,
) -> UserDataInputs<'a> {
    UserDataInputs {
        deployment: &inst.deployment,
        seats: &[],
        region,
        registry: image.split('/').next().unwrap_or_default(),
        image,
        // Not used by a script sent to a running host.
        host_kind: HostKind::Custom,
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        port,
        container_port: CONTAINER_PORT,
        pull_deadline_secs: PULL_DEADLINE,
        jupyter_deadline_secs: JUPYTER_DEADLINE,
        idle_stop_secs: inst.idle_stop.flatten().map_or(0, |d| d.as_secs()),
        ttl_secs: inst.ttl.flatten().map_or(0, |d| d.as_secs()),
        data_volume: inst.data_volume,
        inputs: userdata::KEEP_INPUTS,
        limits: crate::hosts::Limits::default(),
    }
}

/// The refusal of `action` on one seat of a shared host (None: `inst` is no such seat).
pub fn shared_refusal(inst: &Instance, action: &str) -> Option<Error> {
    let seat = inst.seat.as_ref()?;
    let host = seat.host.as_ref()?;
    let others = host.beside(&seat.seat);
    Some(Error::SharedHost {
        class: seat.class.clone(),
        seat: seat.seat.clone(),
        instance: inst.id.clone(),
        others: if others.is_empty() {
            "no other seat".into()
        } else {
            format!("seat(s) {}", others.join(", "))
        },
        action: action.to_string(),
        hint: format!(
            "act on the whole class: `labship down {} --ec2` then the class's `up` again puts every seat anew, each with the notebooks its data volume keeps (a host stops by itself once all its seats are idle)",
            seat.class
        ),
    })
}

/// Everything [`plan`] decides from. Reading it changes nothing.
#[derive(Debug, Clone)]
pub struct Observed {
    pub region: String,
    pub instance_type: InstanceTypeInfo,
    /// The deployment's instances that still exist, oldest first.
    pub instances: Vec<Instance>,
    /// The image's content tag.
    pub content_tag: String,
    /// Whether the image must still be built.
    pub needs_build: bool,
    /// The console of the live instance when it already serves this image and port.
    pub console: Option<String>,
    /// The ingress rules and where their CIDRs came from; `Err` when the caller's address
    /// could not be found (fatal for a launch, harmless for a no-op).
    pub ingress: std::result::Result<(Vec<Ingress>, String), String>,
    /// Read only when a launch is possible.
    pub ami: Option<HostImage>,
    pub vpc: Option<String>,
    /// The registry host instances pull from (known once logged in).
    pub registry: Option<String>,
    /// Size of the local image (sizes the root volume); None when not built yet.
    pub image_size: Option<u64>,
    /// Whether the shared instance profile exists (None: not asked; `up` makes sure).
    pub profile_exists: Option<bool>,
    /// The caller's account (a deployment's own role names its resources).
    pub account: String,
    /// The deployment's data volumes (normally none or one).
    pub data_volumes: Vec<DataVolume>,
    /// The configured subnet's Availability Zone (read with the VPC, for a launch).
    pub subnet_zone: Option<String>,
}

impl Observed {
    /// The instance `up` would act on: the newest pending or running one.
    pub fn live(&self) -> Option<&Instance> {
        self.instances.iter().rfind(|i| i.is_live())
    }

    /// The stopped instance `up` would start again, when none is live.
    pub fn stopped(&self) -> Option<&Instance> {
        if self.live().is_some() {
            return None;
        }
        self.instances.iter().rfind(|i| i.state == "stopped")
    }

    /// Whether the live instance already serves this image on this port with this idle stop
    /// and TTL (then only its console decides what happens, and nothing else needs to be
    /// read).
    pub fn serves(&self, config: &Config, opts: &Options) -> bool {
        let wanted = format!("/{}:{}", config.push.repository, self.content_tag);
        self.live().is_some_and(|i| {
            i.image.as_deref().is_some_and(|img| img.ends_with(&wanted))
                && i.port == Some(opts.port)
                && i.inputs.as_deref().unwrap_or(userdata::NO_INPUTS)
                    == userdata::inputs_id(&opts.inputs)
                && same_life(i, opts)
        })
    }
}

/// EC2's part of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Ec2Plan {
    pub region: String,
    pub instance_type: String,
    pub architecture: String,
    /// `spot` or `on-demand`: what is launched, or what the existing instance is.
    pub market: &'static str,
    pub port: u16,
    /// The existing instance acted on (not for a launch).
    pub instance_id: Option<String>,
    pub security_group: SecurityGroupPlan,
    /// A launch: everything RunInstances receives.
    pub ami: Option<HostImage>,
    pub root_volume: Option<RootVolume>,
    /// A launch: the data volume that holds the workspace (made or kept, then attached).
    pub data_volume: Option<DataVolumePlan>,
    pub metadata_options: Option<MetadataPlan>,
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub iam: Option<IamPlan>,
    /// The instance's tags (volume and network interface get the same without image/port).
    pub tags: BTreeMap<String, String>,
    /// A launch: the boot script; a replace or restart: the script Systems Manager runs.
    pub user_data: Option<String>,
    /// Whether the image is pushed (and built when needed) first.
    pub push: bool,
    /// What RunInstances gets, exactly (not printed: the fields above show it).
    #[serde(skip)]
    pub launch: Option<LaunchSpec>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootVolume {
    pub device: String,
    pub size_gib: i32,
    pub volume_type: &'static str,
    pub encrypted: bool,
}

/// The deployment's data volume for a launch: a new one in the instance's zone, or the one
/// an earlier instance left (the instance then launches in its zone).
#[derive(Debug, Clone, Serialize)]
pub struct DataVolumePlan {
    /// `create`, `attach` (the kept one) or `move` (the kept one, copied through a snapshot
    /// into the subnet's zone; the original and the snapshot are deleted once the copy is
    /// attached).
    pub action: &'static str,
    /// The kept volume (None for a new one).
    pub id: Option<String>,
    pub size_gib: i32,
    /// Where it will be (None for a new one: the instance's zone, known once it launched).
    pub availability_zone: Option<String>,
    /// `move`: the zone it is in now.
    pub from_zone: Option<String>,
    pub device: String,
    pub volume_type: &'static str,
    pub encrypted: bool,
    /// What a new one is tagged with.
    pub tags: BTreeMap<String, String>,
}

impl DataVolumePlan {
    /// An encrypted gp3 volume at [`ebs::DEVICE`]: the kept `volume` (or a new one), in
    /// `zones` = (where it will be, where it is now when it moves).
    fn new(
        action: &'static str,
        volume: Option<&DataVolume>,
        size_gib: i32,
        (availability_zone, from_zone): (Option<String>, Option<String>),
        tags: BTreeMap<String, String>,
    ) -> DataVolumePlan {
        DataVolumePlan {
            action,
            id: volume.map(|v| v.id.clone()),
            size_gib,
            availability_zone,
            from_zone,
            device: ebs::DEVICE.to_string(),
            volume_type: "gp3",
            encrypted: true,
            tags,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MetadataPlan {
    pub http_tokens: &'static str,
    pub hop_limit: i32,
}

/// IMDSv2 only, hop limit 1: containers on the host cannot reach the role's credentials.
pub const METADATA: MetadataPlan = MetadataPlan {
    http_tokens: "required",
    hop_limit: 1,
};

#[derive(Debug, Clone, Serialize)]
pub struct SecurityGroupPlan {
    pub name: String,
    /// How Jupyter is reached: `https` (the rules below) or `ssm` (no rule at all).
    pub access: Access,
    pub ingress: Vec<Ingress>,
    /// Where the CIDRs came from.
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IamPlan {
    pub role: String,
    pub instance_profile: String,
    /// The role's inline policy (`infra/instance-policy.json` for the shared role), by name.
    pub policy: &'static str,
    /// None: not checked (`up` creates it when missing).
    pub exists: Option<bool>,
    /// The deployment's own role (it has `[data] inputs`): its boundary, the policy put on
    /// it, and whether the instance moves to it. None: the shared role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own: Option<super::role::OwnRole>,
}

impl IamPlan {
    fn shared(exists: Option<bool>) -> IamPlan {
        IamPlan {
            role: iam::INSTANCE_ROLE.into(),
            instance_profile: iam::INSTANCE_PROFILE.into(),
            policy: iam::INSTANCE_POLICY_NAME,
            exists,
            own: None,
        }
    }

    fn own(own: super::role::OwnRole) -> IamPlan {
        IamPlan {
            role: own.role.clone(),
            instance_profile: own.role.clone(),
            policy: own.policy_name,
            exists: None,
            own: Some(own),
        }
    }
}

/// Decides what `up --ec2` does. Pure: everything it needs is in `observed`.
pub fn plan(config: &Config, opts: &Options, observed: &Observed) -> Result<Plan> {
    refusals(config, observed)?;
    let name = &config.name;
    let arch = config.build.platform;
    let itype = &observed.instance_type;
    let live = observed.live();
    let image = match &observed.registry {
        Some(r) => format!("{r}/{}:{}", config.push.repository, observed.content_tag),
        None => live
            .and_then(|i| i.image.clone())
            .unwrap_or_else(|| format!("{}:{}", config.push.repository, observed.content_tag)),
    };
    let (ingress, source) = match &observed.ingress {
        Ok((rules, source)) => (rules.clone(), source.clone()),
        Err(e) => (Vec::new(), format!("left as it is: {e}")),
    };
    let security_group = SecurityGroupPlan {
        name: group_name(name, opts.seat.as_ref(), live.or(observed.stopped())),
        access: opts.access,
        ingress,
        source,
    };
    let mut detail = Ec2Plan {
        region: observed.region.clone(),
        instance_type: itype.name.clone(),
        architecture: ec2_arch(arch).to_string(),
        market: market(
            live.or(observed.stopped())
                .map_or(opts.spot == Some(true), |i| i.spot),
        ),
        port: opts.port,
        instance_id: live.map(|i| i.id.clone()),
        security_group,
        ami: None,
        root_volume: None,
        data_volume: None,
        metadata_options: None,
        vpc: None,
        subnet: None,
        iam: None,
        tags: BTreeMap::new(),
        user_data: None,
        push: true,
        launch: None,
    };
    let kind = ami_kind(&config.ec2.ami);
    // A replace keeps where the instance has its workspace (instances launched before data
    // volumes have it on their own disk).
    let on_data_volume = live.or(observed.stopped()).is_some_and(|i| i.data_volume);
    // A seat of a shared host gets the host's script for its seat alone.
    let host_of = live.or(observed.stopped()).and_then(ExistingHost::of);
    let script = |registry: &str| {
        let replace = inputs(
            config,
            &observed.region,
            registry,
            &image,
            &kind,
            opts,
            on_data_volume,
        );
        match &host_of {
            None => userdata::render_replace(&replace),
            Some(host) => host.script(
                UserDataInputs {
                    limits: opts.limits,
                    ..replace
                },
                name,
                SeatScript::Replace,
            ),
        }
        .map_err(user_data_error)
    };

    let (action, reason) = match live {
        Some(inst) if observed.serves(config, opts) => {
            let console = observed.console.as_deref().unwrap_or_default();
            if let Some((phase, cause)) = newest_error(console) {
                // The last start on this instance failed (a pull that gave up, a crashed
                // container, a failed replace): start it again there, keeping its workspace.
                let registry = observed
                    .registry
                    .as_deref()
                    .ok_or_else(|| missing("registry"))?;
                detail.user_data = Some(script(registry)?);
                (
                    PlannedAction::Restart,
                    format!(
                        "the last start on {} had failed while {phase}: {}",
                        inst.id,
                        crate::token::redact(&cause)
                    ),
                )
            } else if super::console::served(console).is_some() {
                detail.push = false;
                (
                    PlannedAction::Nothing,
                    format!("{} already runs this image", inst.id),
                )
            } else {
                // Still starting: an `up` interrupted during its upload leaves an instance
                // waiting for an image that may never come. Finish the push, wait again.
                (
                    PlannedAction::Resume,
                    format!(
                        "{} was still starting (an earlier `up` was interrupted)",
                        inst.id
                    ),
                )
            }
        }
        Some(inst) => {
            let registry = observed
                .registry
                .as_deref()
                .ok_or_else(|| missing("registry"))?;
            detail.user_data = Some(script(registry)?);
            let wanted = format!("/{}:{}", config.push.repository, observed.content_tag);
            let same_image = inst.image.as_deref().is_some_and(|i| i.ends_with(&wanted));
            let reason = if same_image && inst.port == Some(opts.port) && !same_inputs(inst, opts) {
                format!(
                    "the [data] inputs changed; the host copies them and replaces the container on {}, which keeps the workspace volume and its notebooks",
                    inst.id
                )
            } else if same_image && inst.port == Some(opts.port) {
                format!(
                    "the host's watchdog changes ({}); the container and its workspace stay",
                    life_change(inst, opts)
                )
            } else if same_image {
                format!("the port changed to {}", opts.port)
            } else {
                format!(
                    "the image changed ({} -> {image}); replacing the container on {} keeps the workspace volume and its notebooks",
                    inst.image.as_deref().unwrap_or("unknown"),
                    inst.id
                )
            };
            (PlannedAction::Replace, reason)
        }
        None if observed.stopped().is_some() => {
            let inst = observed
                .stopped()
                .ok_or_else(|| missing("stopped instance"))?;
            let registry = observed
                .registry
                .as_deref()
                .ok_or_else(|| missing("registry"))?;
            // Started again, the host's containers come back by their restart policy and
            // its watchdog says on the console when Jupyter answers. Another image, port,
            // idle stop or TTL: the replace script (sent through Systems Manager once the
            // instance runs) puts them in place, reading the token again.
            detail.instance_id = Some(inst.id.clone());
            let wanted = format!("/{}:{}", config.push.repository, observed.content_tag);
            let same = inst.image.as_deref().is_some_and(|i| i.ends_with(&wanted))
                && inst.port == Some(opts.port)
                && same_life(inst, opts)
                && same_inputs(inst, opts);
            let then = if same {
                "the same image, token and notebooks".to_string()
            } else {
                detail.user_data = Some(script(registry)?);
                format!(
                    "its token and notebooks, and then {image} on port {} (idle stop {}, ttl {}) put in place",
                    opts.port,
                    crate::config::lifetime_text(opts.idle_stop),
                    crate::config::lifetime_text(opts.ttl)
                )
            };
            let how = if inst.interrupted() {
                " by EC2 (a spot interruption): EC2 starts it again when capacity returns, and `up` waits for that"
            } else {
                ": it is started again"
            };
            (
                PlannedAction::Start,
                format!("{} is stopped{how}, with {then}", inst.id),
            )
        }
        None => {
            let registry = observed
                .registry
                .as_deref()
                .ok_or_else(|| missing("registry"))?;
            let ami = observed.ami.clone().ok_or_else(|| missing("host image"))?;
            let vpc = observed.vpc.clone().ok_or_else(|| missing("VPC"))?;
            if let Err(e) = &observed.ingress {
                return Err(Error::CallerIp { message: e.clone() });
            }
            let boot = inputs(
                config,
                &observed.region,
                registry,
                &image,
                &kind,
                opts,
                true,
            );
            // A seat of a shared host renders the host's script: each of its seats the same.
            let shared = shared_of(opts)?;
            let user_data = match &shared {
                None => userdata::render_boot(&boot),
                Some(host) => {
                    let seats: Vec<&str> = host.deployments.iter().map(String::as_str).collect();
                    userdata::render_boot(&UserDataInputs {
                        deployment: seats[0],
                        seats: &seats,
                        port: host.first_port,
                        limits: opts.limits,
                        ..boot
                    })
                }
            }
            .map_err(user_data_error)?;
            let (volume_tags, mut instance_tags) = match &shared {
                None => {
                    let mut tags: Vec<(String, String)> = tags::for_deployment(name)
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect();
                    tags.push(("Name".into(), format!("labship-{name}")));
                    tags.extend(seat_tags(opts.seat.as_ref()));
                    (tags.clone(), tags)
                }
                Some(host) => host.tags(),
            };
            instance_tags.push((tags::IMAGE.into(), image.clone()));
            instance_tags.push((
                tags::PORT.into(),
                shared
                    .as_ref()
                    .map_or(opts.port, |h| h.first_port)
                    .to_string(),
            ));
            instance_tags.push((tags::INPUTS.into(), userdata::inputs_id(&opts.inputs)));
            instance_tags.push((tags::SCHEME.into(), "https".into()));
            instance_tags.push((tags::ACCESS.into(), opts.access.as_str().into()));
            instance_tags.push((
                tags::IDLE_STOP.into(),
                crate::config::lifetime_text(opts.idle_stop),
            ));
            instance_tags.push((tags::TTL.into(), crate::config::lifetime_text(opts.ttl)));
            instance_tags.push((tags::DATA_VOLUME.into(), "yes".into()));
            let iam = iam_plan(config, opts, observed, None)?;
            let data_tags = data_volume_tags(name, opts.seat.as_ref())
                .into_iter()
                .collect();
            let (mut data, data_reason) = data_volume_plan(config, opts, observed, data_tags)?;
            if let Some(host) = &shared {
                data.device.clone_from(&host.device);
            }
            let root = RootVolume {
                device: ami.root_device.clone(),
                size_gib: root_volume_gib(ami.min_root_gib, observed.image_size),
                volume_type: "gp3",
                encrypted: true,
            };
            detail.launch = Some(LaunchSpec {
                deployment: name.clone(),
                ami: ami.id.clone(),
                instance_type: itype.name.clone(),
                root_device: root.device.clone(),
                root_gib: root.size_gib,
                metadata_hop_limit: METADATA.hop_limit,
                subnet: config.ec2.subnet.clone(),
                // In the kept volume's zone (with a subnet, the subnet's: the same one).
                availability_zone: data
                    .availability_zone
                    .clone()
                    .filter(|_| config.ec2.subnet.is_none()),
                spot: opts.spot == Some(true),
                ssh_key: config.ec2.ssh_key.clone(),
                user_data: userdata::gzip(&user_data),
                instance_tags: instance_tags.clone(),
                volume_tags,
                terminate_on_shutdown: false,
                instance_profile: iam.instance_profile.clone(),
            });
            detail.tags = instance_tags.into_iter().collect();
            detail.root_volume = Some(root);
            detail.data_volume = Some(data);
            detail.metadata_options = Some(METADATA);
            detail.ami = Some(ami);
            detail.vpc = Some(vpc);
            detail.subnet = config.ec2.subnet.clone();
            detail.iam = Some(iam);
            detail.user_data = Some(user_data);
            (
                PlannedAction::Create,
                format!("no instance of `{name}` exists; {data_reason}"),
            )
        }
    };
    // A seat of a shared host is on the port its slot gives it, beside the other seats, and
    // the host has one role: its port does not move alone, and it takes no [data] inputs
    // (which the host copies with a role of the seat's own).
    if let (None, Some(_), Some(inst)) = (
        &detail.launch,
        &detail.user_data,
        live.or(observed.stopped()),
    ) {
        let alone = if inst.port != Some(opts.port) {
            Some(format!("moving it to port {}", opts.port))
        } else if !same_inputs(inst, opts) {
            Some("copying [data] inputs to it".to_string())
        } else {
            None
        };
        if let Some(refused) = alone.and_then(|action| shared_refusal(inst, &action)) {
            return Err(refused);
        }
    }
    // A replace, restart or start that sends the host its script (which copies the inputs):
    // a deployment with its own role has its policy put again first, and its instance moved
    // to it from the shared role.
    if detail.launch.is_none() && detail.user_data.is_some() {
        let iam = iam_plan(config, opts, observed, live.or(observed.stopped()))?;
        if iam.own.is_some() {
            detail.iam = Some(iam);
        }
    }
    // An existing instance stays on its market: say so when another was asked for.
    let reason = match (live.or(observed.stopped()), opts.spot) {
        (Some(inst), Some(asked)) if asked != inst.spot => format!(
            "{reason}; it stays {} (`labship down` then `labship up {}` launches a new instance, and the data volume keeps the workspace)",
            market(inst.spot),
            if asked { "--spot" } else { "--on-demand" }
        ),
        _ => reason,
    };
    Ok(Plan {
        target: Target::Ec2,
        deployment: name.clone(),
        action,
        reason,
        image,
        build: observed.needs_build && detail.push,
        detail: PlanDetail::Ec2(Box::new(detail)),
    })
}

/// A policy's string or list of strings, on one line.
fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(all) => all
            .iter()
            .map(|x| x.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", "),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

/// Whether `inst`'s host copied the inputs `opts` names.
fn same_inputs(inst: &Instance, opts: &Options) -> bool {
    inst.inputs.as_deref().unwrap_or(userdata::NO_INPUTS) == userdata::inputs_id(&opts.inputs)
}

/// The role the deployment's instance runs with: its own when it has inputs (or has it
/// already), else the shared one. `live`: the instance a replace, restart or start acts on.
fn iam_plan(
    config: &Config,
    opts: &Options,
    observed: &Observed,
    live: Option<&Instance>,
) -> Result<IamPlan> {
    let (region, name) = (&observed.region, &config.name);
    if !super::role::wanted(region, name, &opts.reach, live) {
        return Ok(IamPlan::shared(observed.profile_exists));
    }
    Ok(IamPlan::own(super::role::own_role(
        &observed.account,
        region,
        name,
        &config.push.repository,
        &opts.reach,
        live,
    )?))
}

/// A class's seat's tags (none for a deployment of its own).
pub fn seat_tags(seat: Option<&crate::hosts::SeatOf>) -> Vec<(String, String)> {
    seat.map(|s| {
        vec![
            (tags::CLASS.to_string(), s.class.clone()),
            (tags::SEAT.to_string(), s.seat.clone()),
        ]
    })
    .unwrap_or_default()
}

/// The security group a deployment's instance is in: the one it has, or for a new one its
/// own ([`security_group_name`]), or, a seat's, the one its class's seats share
/// ([`class_group_name`]).
pub fn group_name(
    deployment: &str,
    seat: Option<&crate::hosts::SeatOf>,
    instance: Option<&Instance>,
) -> String {
    match (instance.and_then(|i| i.security_group_names.first()), seat) {
        (Some(has), _) => has.clone(),
        (None, Some(seat)) => class_group_name(&seat.class),
        (None, None) => security_group_name(deployment),
    }
}

/// The tags of a new data volume: the deployment's, its name, `labship:volume=workspace`,
/// and a seat's class and seat.
pub fn data_volume_tags(name: &str, seat: Option<&crate::hosts::SeatOf>) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = tags::for_deployment(name)
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tags.push(("Name".into(), format!("labship-{name}-workspace")));
    tags.push((tags::VOLUME.into(), tags::VOLUME_WORKSPACE.into()));
    tags.extend(seat_tags(seat));
    tags
}

/// Refuses a launch whose kept data volume cannot be attached (see [`data_volume_plan`]),
/// before anything is built or made.
pub fn check_data_volume(config: &Config, opts: &Options, observed: &Observed) -> Result<()> {
    data_volume_plan(config, opts, observed, BTreeMap::new()).map(drop)
}

/// The data volume of a launch, and why, in words: the one an earlier instance left (the
/// instance goes to its zone, or with a subnet in another zone it is copied there), or a new
/// one. Refused: several kept volumes, or one still attached elsewhere or failed.
fn data_volume_plan(
    config: &Config,
    opts: &Options,
    observed: &Observed,
    tags: BTreeMap<String, String>,
) -> Result<(DataVolumePlan, String)> {
    let name = &config.name;
    let refuse = |volume: &str, message: String, hint: String| Error::DataVolume {
        deployment: name.clone(),
        volume: volume.to_string(),
        message,
        hint,
    };
    let kept = match observed.data_volumes.as_slice() {
        [] => None,
        [one] => Some(one),
        several => {
            let ids: Vec<&str> = several.iter().map(|v| v.id.as_str()).collect();
            return Err(refuse(
                &ids.join(", "),
                format!("`{name}` has {} data volumes, and labship attaches one", ids.len()),
                "keep the one with the notebooks and delete the others (`aws ec2 delete-volume --volume-id ...`), then run `labship up` again".into(),
            ));
        }
    };
    let Some(vol) = kept else {
        let zone = observed.subnet_zone.clone();
        return Ok((
            DataVolumePlan::new("create", None, opts.volume_gib, (zone, None), tags),
            format!(
                "a new {} GiB data volume holds the workspace (it outlives the instance)",
                opts.volume_gib
            ),
        ));
    };
    // Attached: only to an instance on its way out (the others would be live or stopped,
    // and then this is no launch).
    if let Some(other) = &vol.attached_to {
        return Err(refuse(
            &vol.id,
            format!("the data volume is still attached to {other}"),
            "wait until that instance is terminated (a minute), then run `labship up` again".into(),
        ));
    }
    if vol.state == "error" {
        return Err(refuse(
            &vol.id,
            "the data volume is in the error state".into(),
            format!("see it in the EC2 console; restore it from a snapshot, or delete it (`labship down {name} --delete-data`) to start with a new one"),
        ));
    }
    // The subnet is in another zone: an EBS volume attaches only in its own, so it is copied
    // there through a snapshot.
    if let (Some(subnet), Some(zone)) = (&config.ec2.subnet, &observed.subnet_zone) {
        if zone != &vol.availability_zone {
            return Ok((
                DataVolumePlan::new(
                    "move",
                    Some(vol),
                    vol.size_gib,
                    (Some(zone.clone()), Some(vol.availability_zone.clone())),
                    tags,
                ),
                format!(
                    "the kept data volume {} is copied to {zone}, the zone of the subnet {subnet}, through a snapshot, and brings the workspace back there (the original and the snapshot are deleted once the copy is attached)",
                    vol.describe()
                ),
            ));
        }
    }
    let size_note = if opts.volume_gib_asked && opts.volume_gib != vol.size_gib {
        format!(
            " (it keeps its {} GiB: --volume-size sizes a new volume)",
            vol.size_gib
        )
    } else {
        String::new()
    };
    Ok((
        DataVolumePlan::new(
            "attach",
            Some(vol),
            vol.size_gib,
            (Some(vol.availability_zone.clone()), None),
            tags,
        ),
        format!(
            "the kept data volume {} brings the workspace back{size_note}",
            vol.describe()
        ),
    ))
}

fn market(spot: bool) -> &'static str {
    if spot {
        "spot"
    } else {
        "on-demand"
    }
}

/// Whether the instance's watchdog has these settings (an instance of an older labship has
/// none: it gets one with the next replace).
fn same_life(inst: &Instance, opts: &Options) -> bool {
    inst.idle_stop == Some(opts.idle_stop) && inst.ttl == Some(opts.ttl)
}

/// "idle stop 60m -> 30m, ttl 24h -> off": what changes of the instance's watchdog.
fn life_change(inst: &Instance, opts: &Options) -> String {
    let text = |v: Option<Option<Duration>>| match v {
        Some(d) => crate::config::lifetime_text(d),
        None => "none".into(),
    };
    let mut parts = Vec::new();
    if inst.idle_stop != Some(opts.idle_stop) {
        parts.push(format!(
            "idle stop {} -> {}",
            text(inst.idle_stop),
            crate::config::lifetime_text(opts.idle_stop)
        ));
    }
    if inst.ttl != Some(opts.ttl) {
        parts.push(format!(
            "ttl {} -> {}",
            text(inst.ttl),
            crate::config::lifetime_text(opts.ttl)
        ));
    }
    parts.join(", ")
}

/// What makes any `up` impossible, decided from the first reads alone, so that `up` can
/// refuse before it builds or creates anything: an instance type of the other architecture,
/// or a deployment whose instance is neither live, stopped nor on its way out (stopping).
pub fn refusals(config: &Config, observed: &Observed) -> Result<()> {
    let name = &config.name;
    let arch = config.build.platform;
    let itype = &observed.instance_type;
    if !itype.architectures.iter().any(|a| a == ec2_arch(arch)) {
        return Err(Error::ArchitectureMismatch {
            platform: arch.platform().to_string(),
            instance_type: itype.name.clone(),
            architectures: itype.architectures.join(", "),
        });
    }
    let live = observed.live();
    if live.is_none() && observed.stopped().is_none() {
        // An instance on its way out (shutting-down) is no obstacle to a new one; a stopped
        // one is started again. What is left is an instance still stopping.
        if let Some(other) = observed
            .instances
            .iter()
            .find(|i| i.state != "shutting-down")
        {
            return Err(Error::Replace {
                deployment: name.clone(),
                instance: other.id.clone(),
                message: format!("the instance is {}", other.state),
                hint: format!("wait until it has stopped and run `labship up {name} --ec2` again (it starts it with its notebooks), or remove it with `labship down {name} --ec2`"),
            });
        }
    }
    Ok(())
}

/// What a host keeps for itself beside its seats' memory limits (Docker, the agent, the
/// watchdog, the page cache a pull needs).
pub const HOST_RESERVE_MIB: u64 = 512;

/// Refuses a new shared host whose instance type cannot hold its seats' limits: their
/// memory and [`HOST_RESERVE_MIB`] past the type's memory (the kernel would kill Jupyters),
/// or a seat's CPUs past its vCPUs (Docker refuses the container). Before anything is made.
pub fn check_room(opts: &Options, itype: &InstanceTypeInfo) -> Result<()> {
    let Some(host) = opts.seat.as_ref().and_then(|s| s.host.as_ref()) else {
        return Ok(());
    };
    let seats = host.seats.len() as u64;
    let refuse = |reason: String, hint: String| Error::InvalidSetting {
        what: "instance type",
        value: itype.name.clone(),
        reason,
        hint,
    };
    if let (Some(mib), Some(have)) = (opts.limits.memory_mib, itype.memory_mib) {
        let need = seats.saturating_mul(mib).saturating_add(HOST_RESERVE_MIB);
        if need > have {
            return Err(refuse(
                format!(
                    "its {have} MiB cannot hold {seats} seats of {mib} MiB and the host's {HOST_RESERVE_MIB} MiB"
                ),
                format!(
                    "give --instance-type a type with at least {need} MiB, or fewer --seats-per-instance, or a smaller --seat-memory"
                ),
            ));
        }
    }
    if let (Some(cpus), Some(have)) = (opts.limits.cpus, itype.vcpus) {
        if cpus > f64::from(have) {
            return Err(refuse(
                format!("a seat's {cpus} CPUs are more than its {have} vCPUs"),
                "give a smaller --seat-cpus or a larger --instance-type".into(),
            ));
        }
    }
    Ok(())
}

/// A plan asked to launch without what a launch needs: a bug in the caller.
fn missing(what: &str) -> Error {
    crate::hosts::plan_bug(&format!("the {what} was not observed before planning"))
}

/// The phase and cause of the newest marker on a console, when it is an error.
pub fn newest_error(console: &str) -> Option<(String, String)> {
    match console::markers(console).pop()?.phase {
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
    opts: &'a Options,
    data_volume: bool,
) -> UserDataInputs<'a> {
    UserDataInputs {
        deployment: &config.name,
        seats: &[],
        region,
        registry,
        image,
        host_kind: *kind,
        bind: opts.bind,
        port: opts.port,
        container_port: CONTAINER_PORT,
        pull_deadline_secs: PULL_DEADLINE,
        jupyter_deadline_secs: JUPYTER_DEADLINE,
        idle_stop_secs: opts.idle_stop.map_or(0, |d| d.as_secs()),
        ttl_secs: opts.ttl.map_or(0, |d| d.as_secs()),
        data_volume,
        inputs: &opts.inputs,
        limits: crate::hosts::Limits::default(),
    }
}

pub fn ami_kind(ami: &HostAmi) -> HostKind {
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

impl std::fmt::Display for Ec2Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines = vec![
            format!("  region          {} (nothing was changed)", self.region),
            format!(
                "  instance type   {} ({})",
                self.instance_type, self.architecture
            ),
        ];
        if let Some(id) = &self.instance_id {
            lines.push(format!("  instance        {id}"));
        }
        lines.push(format!(
            "  market          {}{}",
            self.market,
            if self.market == "spot" {
                " (persistent request; an interruption stops it, and it starts again)"
            } else {
                ""
            }
        ));
        if let Some(ami) = &self.ami {
            lines.push(format!(
                "  AMI             {} (from {})",
                ami.id, ami.source
            ));
        }
        if let Some(r) = &self.root_volume {
            lines.push(format!(
                "  root volume     {} {} GiB {}, encrypted",
                r.device, r.size_gib, r.volume_type
            ));
        }
        if let Some(d) = &self.data_volume {
            lines.push(match &d.id {
                Some(id) if d.action == "move" => format!(
                    "  data volume     {} {id} ({} GiB {}), copied from {} to {} through a snapshot",
                    d.device,
                    d.size_gib,
                    d.volume_type,
                    d.from_zone.as_deref().unwrap_or("its zone"),
                    d.availability_zone.as_deref().unwrap_or("the subnet's zone")
                ),
                Some(id) => format!(
                    "  data volume     {} {id} ({} GiB {}, {}), kept on termination",
                    d.device,
                    d.size_gib,
                    d.volume_type,
                    d.availability_zone.as_deref().unwrap_or("its zone")
                ),
                None => format!(
                    "  data volume     {} new {} GiB {}, encrypted, in the instance's zone, kept on termination",
                    d.device, d.size_gib, d.volume_type
                ),
            });
        }
        if let Some(m) = &self.metadata_options {
            lines.push(format!(
                "  metadata        IMDSv2 only (tokens {}), hop limit {}",
                m.http_tokens, m.hop_limit
            ));
        }
        if let Some(vpc) = &self.vpc {
            lines.push(format!(
                "  network         {vpc}{}",
                self.subnet
                    .as_deref()
                    .map(|s| format!(", subnet {s}"))
                    .unwrap_or_else(|| ", default subnets".into())
            ));
        }
        lines.push(format!(
            "  security group  {} ({})",
            self.security_group.name, self.security_group.source
        ));
        for rule in &self.security_group.ingress {
            lines.push(format!(
                "    allow tcp/{} from {}",
                rule.port,
                rule.cidrs.join(", ")
            ));
        }
        match self.iam.as_ref().map(|iam| (iam, iam.own.as_ref())) {
            Some((iam, None)) => lines.push(format!(
                "  IAM             role {} / instance profile {} ({}): inline policy {} (read /labship/* parameters, pull labship images, SSM agent)",
                iam.role,
                iam.instance_profile,
                match iam.exists {
                    Some(true) => "exists",
                    Some(false) => "would be created",
                    None => "created when missing",
                },
                iam.policy
            )),
            Some((iam, Some(own))) => {
                lines.push(format!(
                    "  IAM             the deployment's own role {} / instance profile {} (created when missing, within the permissions boundary {}): inline policy {} put as below{}",
                    iam.role,
                    iam.instance_profile,
                    own.boundary,
                    iam.policy,
                    if own.moves_instance {
                        "; the instance moves to it from the shared role before its container is replaced"
                    } else {
                        ""
                    }
                ));
                for statement in own.policy["Statement"].as_array().into_iter().flatten() {
                    lines.push(format!(
                        "    allow {} on {}",
                        compact(&statement["Action"]),
                        compact(&statement["Resource"])
                    ));
                }
            }
            None => {}
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(format!("  tags            {}", tags.join(" ")));
        }
        lines.push(format!(
            "  push            {}",
            if self.push {
                "yes (nothing is uploaded when the registry has the image)"
            } else {
                "no"
            }
        ));
        if let Some(script) = &self.user_data {
            let what = if self.launch.is_some() || self.ami.is_some() {
                "user-data"
            } else {
                "script run through Systems Manager"
            };
            lines.push(format!("  {what} ({} bytes):", script.len()));
            lines.push(script.trim_end().to_string());
        }
        write!(f, "{}", lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> (tempfile::TempDir, Config) {
        crate::config::test_project("lab")
    }

    fn observed(instances: Vec<Instance>) -> Observed {
        Observed {
            region: "eu-west-1".into(),
            instance_type: InstanceTypeInfo {
                name: "t3.medium".into(),
                architectures: vec!["x86_64".into()],
                nitro: true,
                memory_mib: Some(4096),
                vcpus: Some(2),
            },
            instances,
            content_tag: "ctx-1".into(),
            needs_build: true,
            console: None,
            ingress: Ok((
                vec![Ingress {
                    port: 8888,
                    cidrs: vec!["203.0.113.9/32".into()],
                    description: "Jupyter (labship)".into(),
                }],
                "your public IP (detected)".into(),
            )),
            ami: Some(HostImage {
                id: "ami-1".into(),
                source: "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
                    .into(),
                root_device: "/dev/xvda".into(),
                min_root_gib: 30,
                architecture: Some("x86_64".into()),
            }),
            vpc: Some("vpc-1".into()),
            registry: Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com".into()),
            image_size: Some(3 << 30),
            profile_exists: Some(false),
            account: "123456789012".into(),
            data_volumes: Vec::new(),
            subnet_zone: None,
        }
    }

    fn kept_volume(zone: &str, attached_to: Option<&str>) -> DataVolume {
        DataVolume {
            id: "vol-1".into(),
            deployment: "lab".into(),
            size_gib: 50,
            availability_zone: zone.into(),
            state: if attached_to.is_some() {
                "in-use"
            } else {
                "available"
            }
            .into(),
            attached_to: attached_to.map(str::to_string),
            owner: None,
            created: None,
            seat: None,
        }
    }

    fn instance(state: &str, image: &str, port: u16) -> Instance {
        Instance {
            id: "i-1".into(),
            deployment: "lab".into(),
            untagged_seat: false,
            state: state.into(),
            instance_type: "t3.medium".into(),
            public_ip: Some("203.0.113.7".into()),
            launched: None,
            launched_secs: None,
            image: Some(image.into()),
            port: Some(port),
            https: true,
            access: Access::Https,
            owner: None,
            security_groups: vec!["sg-1".into()],
            security_group_names: vec![security_group_name("lab")],
            idle_stop: Some(Some(crate::config::DEFAULT_IDLE_STOP)),
            ttl: Some(Some(crate::config::DEFAULT_TTL)),
            availability_zone: Some("eu-west-1a".into()),
            data_volume: true,
            spot: false,
            spot_request: None,
            seat: None,
            state_reason: None,
            inputs: None,
            profile: Some(crate::aws::iam::INSTANCE_PROFILE.into()),
        }
    }

    fn opts(config: &Config) -> Options {
        Options::resolve(config, &crate::hosts::UpOptions::default()).expect("options")
    }

    fn ec2(plan: &Plan) -> &Ec2Plan {
        match &plan.detail {
            PlanDetail::Ec2(p) => p,
            PlanDetail::Local(_) => panic!("not an EC2 plan"),
        }
    }

    /// Seat `seat` (slot `slot`) of class `ds`'s host of seats `seats`.
    fn shared(seat: &str, seats: &[&str], slot: usize) -> crate::hosts::SeatOf {
        crate::hosts::SeatOf {
            class: "ds".into(),
            seat: seat.into(),
            student: None,
            email: None,
            host: Some(crate::hosts::SharedHost {
                seats: seats.iter().map(|s| s.to_string()).collect(),
                slot,
                gone: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_seat_of_a_shared_host_launches_the_hosts_script_on_its_own_port_and_device() {
        let (_dir, mut config) = config();
        config.name = "ds-b".into();
        let asked = crate::hosts::UpOptions {
            port: Some(9000),
            seat: Some(shared("b", &["a", "b"], 1)),
            ..Default::default()
        };
        let o = Options::resolve(&config, &asked).expect("options");
        assert_eq!(o.port, 9001, "the host's first port plus its slot");
        let planned = plan(&config, &o, &observed(vec![])).expect("plan");
        let p = ec2(&planned);
        let script = p.user_data.clone().unwrap_or_default();
        // The host's script: its first seat is its deployment, on the first port.
        for line in ["DEPLOYMENT='ds-a'", "SEATS='ds-a ds-b'", "PORT='9000'"] {
            assert!(script.lines().any(|l| l == line), "{line}: {script}");
        }
        // Rendered alike by each seat of the host (the launch merges them).
        config.name = "ds-a".into();
        let first = Options::resolve(
            &config,
            &crate::hosts::UpOptions {
                port: Some(9000),
                seat: Some(shared("a", &["a", "b"], 0)),
                ..Default::default()
            },
        )
        .expect("options");
        let planned_a = plan(&config, &first, &observed(vec![])).expect("plan");
        assert_eq!(ec2(&planned_a).user_data.as_deref(), Some(script.as_str()));
        // Tagged as the host (its class and seats), not as a deployment or seat.
        let launch = p.launch.as_ref().expect("launch");
        let tag = |k: &str| {
            launch
                .instance_tags
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(tag(tags::HOST_SEATS), Some("a b"));
        assert_eq!(tag(tags::CLASS), Some("ds"));
        assert_eq!(tag(tags::PORT), Some("9000"));
        assert_eq!(tag(tags::DEPLOYMENT), None);
        assert_eq!(tag(tags::SEAT), None);
        assert_eq!(launch.deployment, "ds-b");
        // Its data volume is its own (tagged with its seat) at its slot's device.
        let data = p.data_volume.as_ref().expect("data volume");
        assert_eq!(data.device, "/dev/sdg");
        assert_eq!(
            data.tags.get(tags::DEPLOYMENT).map(String::as_str),
            Some("ds-b")
        );
        assert_eq!(data.tags.get(tags::SEAT).map(String::as_str), Some("b"));
        // The class's port near the end: a slot past 65535 is refused.
        let too_far = crate::hosts::UpOptions {
            port: Some(65535),
            seat: Some(shared("b", &["a", "b"], 1)),
            ..Default::default()
        };
        assert!(Options::resolve(&config, &too_far).is_err());
    }

    #[test]
    fn a_shared_host_too_small_for_its_seats_limits_is_refused() {
        let (_dir, config) = config();
        let itype = |mib, vcpus| InstanceTypeInfo {
            name: "t3.medium".into(),
            architectures: vec!["x86_64".into()],
            nitro: true,
            memory_mib: Some(mib),
            vcpus: Some(vcpus),
        };
        let seat = |cpus| {
            Options::resolve(
                &config,
                &crate::hosts::UpOptions {
                    seat: Some(shared("a", &["a", "b"], 0)),
                    limits: crate::hosts::Limits {
                        memory_mib: Some(2048),
                        cpus: Some(cpus),
                    },
                    ..Default::default()
                },
            )
            .expect("options")
        };
        // Two seats of 2 GiB and the host's share: not in 4 GiB, in 8.
        let err = check_room(&seat(1.0), &itype(4096, 2)).expect_err("too small");
        assert!(err.to_string().contains("cannot hold 2 seats"), "{err}");
        assert!(check_room(&seat(1.0), &itype(8192, 2)).is_ok());
        // A seat's CPUs past the type's vCPUs: Docker would refuse its container.
        assert!(check_room(&seat(3.0), &itype(8192, 2)).is_err());
        // A seat of its own is not limited here.
        assert!(check_room(&opts(&config), &itype(1024, 1)).is_ok());
    }

    #[test]
    fn a_seat_of_a_shared_host_keeps_its_slot_and_is_replaced_alone_on_it() {
        let (_dir, mut config) = config();
        config.name = "ds-b".into();
        let mut inst = instance("running", "img", 9001);
        inst.deployment = "ds-b".into();
        inst.seat = Some(shared("b", &["a", "b"], 1));
        // Its class's `up` again names it without a host (it has one): it keeps its slot and
        // port, and with `--port` moves to the new first port plus its slot.
        let plain = crate::hosts::UpOptions {
            seat: Some(crate::hosts::SeatOf {
                host: None,
                ..shared("b", &[], 0)
            }),
            ..Default::default()
        };
        let o = Options::resolve(&config, &plain).expect("options");
        let followed = o.following(Some(&inst));
        assert_eq!(followed.port, 9001);
        assert_eq!(followed.seat, inst.seat);
        let moved = Options::resolve(
            &config,
            &crate::hosts::UpOptions {
                port: Some(7000),
                ..plain.clone()
            },
        )
        .expect("options")
        .following(Some(&inst));
        assert_eq!(moved.port, 7001);
        // Another image: the host's replace script for this seat alone (the host named by
        // its first seat and port, as its boot script names it).
        let planned = plan(&config, &followed, &observed(vec![inst.clone()])).expect("plan");
        assert_eq!(planned.action, PlannedAction::Replace);
        let script = ec2(&planned).user_data.clone().unwrap_or_default();
        for line in [
            "DEPLOYMENT='ds-a'",
            "SEATS='ds-a ds-b'",
            "readonly SEAT='ds-b'",
            "PORT='9000'",
        ] {
            assert!(script.lines().any(|l| l == line), "{line}: {script}");
        }
        // Stopped, it is started and then replaced the same way.
        let mut stopped = inst.clone();
        stopped.state = "stopped".into();
        let planned = plan(&config, &followed, &observed(vec![stopped])).expect("plan");
        assert_eq!(planned.action, PlannedAction::Start);
        let script = ec2(&planned).user_data.clone().unwrap_or_default();
        assert!(
            script.lines().any(|l| l == "readonly SEAT='ds-b'"),
            "{script}"
        );
        // Its port does not move alone: refused, naming the seat beside it.
        let err = plan(&config, &moved, &observed(vec![inst])).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("shares i-1 with seat(s) a")
                && text.contains("port 7001")
                && text.contains("ds"),
            "{text}"
        );
    }

    #[test]
    fn a_deployment_reached_through_ssm_stays_so_unless_asked() {
        let (_dir, config) = config();
        let mut ssm = instance("running", "img", 8888);
        ssm.access = Access::Ssm;
        // Nothing asked: the instance's way in is kept (no port opened behind its back).
        assert_eq!(opts(&config).following(Some(&ssm)).access, Access::Ssm);
        assert_eq!(opts(&config).following(None).access, Access::Https);
        // Asked for: --access, or an address to open the port to.
        let asked = |o: crate::hosts::UpOptions| {
            Options::resolve(&config, &o)
                .expect("options")
                .following(Some(&ssm))
                .access
        };
        assert_eq!(
            asked(crate::hosts::UpOptions {
                access: Some(Access::Https),
                ..Default::default()
            }),
            Access::Https
        );
        assert_eq!(
            asked(crate::hosts::UpOptions {
                allow_cidr: vec!["203.0.113.0/24".into()],
                ..Default::default()
            }),
            Access::Https
        );
        // A stopped instance is followed the same way (its start opens no port either).
        ssm.state = "stopped".into();
        assert_eq!(opts(&config).following(Some(&ssm)).access, Access::Ssm);
    }

    #[test]
    fn a_new_seat_goes_into_its_class_group_and_an_instance_keeps_the_group_it_has() {
        let seat = crate::hosts::SeatOf {
            class: "ds".into(),
            seat: "3".into(),
            student: None,
            email: None,
            host: None,
        };
        assert_eq!(group_name("ds-3", Some(&seat), None), "labship-class.ds");
        assert_eq!(group_name("lab", None, None), "labship-lab");
        // A seat an earlier labship made with a group of its own keeps it.
        let older = instance("running", "img", 8888);
        assert_eq!(group_name("ds-3", Some(&seat), Some(&older)), "labship-lab");
        // No deployment's group can be a class's: a deployment's name has no dot.
        assert!(crate::config::validate_name("class.ds").is_err());
    }

    #[test]
    fn a_seat_keeps_its_port_unless_one_is_asked_for() {
        let (_dir, config) = config();
        let seat = crate::hosts::SeatOf {
            class: "ds".into(),
            seat: "3".into(),
            student: None,
            email: None,
            host: None,
        };
        let mut inst = instance("running", "img", 8890);
        inst.seat = Some(seat.clone());
        // Its class's port is another (ec2.port, 8888; an earlier labship gave each seat a
        // port of its own): it keeps 8890.
        let class_up = crate::hosts::UpOptions {
            seat: Some(seat.clone()),
            ..Default::default()
        };
        let o = Options::resolve(&config, &class_up).expect("options");
        assert_eq!(o.port, 8888);
        assert_eq!(o.following(Some(&inst)).port, 8890);
        // `up ds-3 --ec2`, the seat by its deployment's name (no seat options): kept too.
        assert_eq!(opts(&config).following(Some(&inst)).port, 8890);
        // `--port`: that.
        let asked = crate::hosts::UpOptions {
            port: Some(9000),
            ..Default::default()
        };
        let o = Options::resolve(&config, &asked).expect("options");
        assert_eq!(o.following(Some(&inst)).port, 9000);
        // A deployment that is no seat takes the port of its settings.
        inst.seat = None;
        assert_eq!(opts(&config).following(Some(&inst)).port, 8888);
    }

    #[test]
    fn a_new_seat_joins_its_class_on_the_port_of_the_seats_in_its_group() {
        let (_dir, config) = config();
        let seat = crate::hosts::SeatOf {
            class: "ds".into(),
            seat: "4".into(),
            student: None,
            email: None,
            host: None,
        };
        let class_up = crate::hosts::UpOptions {
            seat: Some(seat.clone()),
            ..Default::default()
        };
        let o = Options::resolve(&config, &class_up).expect("options");
        assert_eq!(o.joining(Some((9000, Access::Https))).port, 9000);
        // Its way in too: a class reached through SSM stays so for a seat added later.
        assert_eq!(o.joining(Some((9000, Access::Ssm))).access, Access::Ssm);
        // No seat in the group yet: the deployment's port.
        assert_eq!(o.joining(None).port, 8888);
        // `--port`: that (the others move there too).
        let asked = crate::hosts::UpOptions {
            port: Some(9100),
            seat: Some(seat),
            ..Default::default()
        };
        let o = Options::resolve(&config, &asked).expect("options");
        assert_eq!(o.joining(Some((9000, Access::Ssm))).port, 9100);
        assert_eq!(o.joining(Some((9000, Access::Ssm))).access, Access::Ssm);
        // `--allow-cidr`: reached over HTTPS, as asked.
        let wider = crate::hosts::UpOptions {
            allow_cidr: vec!["10.0.0.0/8".into()],
            seat: asked.seat.clone(),
            ..Default::default()
        };
        let o = Options::resolve(&config, &wider).expect("options");
        assert_eq!(o.joining(Some((9000, Access::Ssm))).access, Access::Https);
        // A deployment that is no seat joins nothing.
        assert_eq!(opts(&config).joining(Some((9000, Access::Ssm))).port, 8888);
    }

    #[test]
    fn idle_stop_and_ttl_stay_as_the_instance_has_them_unless_asked() {
        let (_dir, mut config) = config();
        let mut inst = instance("stopped", "img", 8888);
        inst.idle_stop = Some(None);
        inst.ttl = Some(Some(Duration::from_secs(90)));
        let kept = opts(&config).following(Some(&inst));
        assert_eq!(
            (kept.idle_stop, kept.ttl),
            (None, Some(Duration::from_secs(90)))
        );
        // A new deployment gets the defaults.
        let fresh = opts(&config).following(None);
        assert_eq!(fresh.idle_stop, Some(crate::config::DEFAULT_IDLE_STOP));
        assert_eq!(fresh.ttl, Some(crate::config::DEFAULT_TTL));
        // An instance of an older labship (no tags) gets the defaults too.
        inst.idle_stop = None;
        inst.ttl = None;
        let old = opts(&config).following(Some(&inst));
        assert_eq!(old.ttl, Some(crate::config::DEFAULT_TTL));
        // Asked for: that wins.
        config.ec2.ttl = Some(None);
        inst.ttl = Some(Some(Duration::from_secs(90)));
        assert_eq!(opts(&config).following(Some(&inst)).ttl, None);
    }

    #[test]
    fn a_launch_is_decided_down_to_what_run_instances_gets() {
        let (_dir, config) = config();
        let plan = plan(&config, &opts(&config), &observed(vec![])).expect("plan");
        assert_eq!(plan.action, PlannedAction::Create);
        assert!(plan.build);
        let p = ec2(&plan);
        let launch = p.launch.as_ref().expect("launch spec");
        // What is printed is what is sent.
        assert_eq!(p.tags, launch.instance_tags.iter().cloned().collect());
        assert_eq!(p.tags["labship:deployment"], "lab");
        assert_eq!(p.tags["labship:port"], "8888");
        assert_eq!(p.tags["labship:image"], plan.image);
        assert!(!launch.volume_tags.iter().any(|(k, _)| k == "labship:image"));
        let mut sent = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(launch.user_data.as_slice()),
            &mut sent,
        )
        .expect("gzip");
        assert_eq!(p.user_data.as_deref(), Some(sent.as_str()));
        assert!(sent.starts_with("#!/bin/bash"));
        assert_eq!(p.root_volume.as_ref().map(|r| r.size_gib), Some(30));
        assert_eq!(launch.root_gib, 30);
        assert_eq!(launch.metadata_hop_limit, 1);
        assert_eq!(
            plan.image,
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/labship/lab:ctx-1"
        );
    }

    #[test]
    fn a_launch_makes_a_data_volume_or_attaches_the_kept_one_in_its_zone() {
        let (_dir, config) = config();
        let user_data = |p: &Ec2Plan| p.user_data.clone().unwrap_or_default();

        // None kept: a new one of the default size, zone left to the launch.
        let plan_new = plan(&config, &opts(&config), &observed(vec![])).expect("plan");
        let p = ec2(&plan_new);
        let data = p.data_volume.as_ref().expect("data volume");
        assert_eq!((data.action, data.id.as_deref()), ("create", None));
        assert_eq!(data.size_gib, crate::config::DEFAULT_VOLUME_GIB);
        assert_eq!(
            (data.volume_type, data.encrypted, data.device.as_str()),
            ("gp3", true, "/dev/sdf")
        );
        assert_eq!(data.tags["labship:volume"], "workspace");
        assert_eq!(data.tags["labship:deployment"], "lab");
        assert_eq!(p.tags["labship:data-volume"], "yes");
        assert_eq!(
            p.launch.as_ref().and_then(|l| l.availability_zone.clone()),
            None
        );
        assert!(
            user_data(p).contains("readonly DATA_VOLUME='1'"),
            "{}",
            user_data(p)
        );
        assert!(
            plan_new.reason.contains("a new 20 GiB data volume"),
            "{}",
            plan_new.reason
        );

        // --volume-size sizes a new one.
        let mut sized = opts(&config);
        sized.volume_gib = 100;
        sized.volume_gib_asked = true;
        let plan_sized = plan(&config, &sized, &observed(vec![])).expect("plan");
        assert_eq!(
            ec2(&plan_sized).data_volume.as_ref().map(|d| d.size_gib),
            Some(100)
        );

        // One kept: attached, and the instance launches in its zone; its size stays.
        let mut seen = observed(vec![]);
        seen.data_volumes = vec![kept_volume("eu-west-1b", None)];
        let plan_kept = plan(&config, &sized, &seen).expect("plan");
        let p = ec2(&plan_kept);
        let data = p.data_volume.as_ref().expect("data volume");
        assert_eq!((data.action, data.id.as_deref()), ("attach", Some("vol-1")));
        assert_eq!(data.size_gib, 50);
        assert_eq!(
            p.launch
                .as_ref()
                .and_then(|l| l.availability_zone.as_deref()),
            Some("eu-west-1b")
        );
        assert!(plan_kept.reason.contains("the kept data volume vol-1 (50 GiB gp3, eu-west-1b) brings the workspace back (it keeps its 50 GiB"), "{}", plan_kept.reason);

        // A replace keeps where the instance has its workspace.
        let mut older = instance("running", "labship/lab:ctx-0", 8888);
        older.data_volume = false;
        let replace = plan(&config, &opts(&config), &observed(vec![older])).expect("plan");
        assert_eq!(replace.action, PlannedAction::Replace);
        assert!(user_data(ec2(&replace)).contains("readonly DATA_VOLUME='0'"));
        let newer = instance("running", "labship/lab:ctx-0", 8888);
        let replace = plan(&config, &opts(&config), &observed(vec![newer])).expect("plan");
        assert!(user_data(ec2(&replace)).contains("readonly DATA_VOLUME='1'"));
    }

    #[test]
    fn spot_is_asked_for_a_launch_and_an_existing_instance_stays_what_it_is() {
        let (_dir, config) = config();
        let mut spot = opts(&config);
        spot.spot = Some(true);
        let launch = plan(&config, &spot, &observed(vec![])).expect("plan");
        let p = ec2(&launch);
        assert_eq!(p.market, "spot");
        assert!(p.launch.as_ref().is_some_and(|l| l.spot));
        assert!(format!("{launch}").contains("market          spot (persistent request"));
        let on_demand = plan(&config, &opts(&config), &observed(vec![])).expect("plan");
        assert_eq!(ec2(&on_demand).market, "on-demand");
        assert!(ec2(&on_demand).launch.as_ref().is_some_and(|l| !l.spot));

        // A running on-demand instance with --spot: it stays on-demand, and the plan says how
        // to change that.
        let replace = plan(
            &config,
            &spot,
            &observed(vec![instance("running", "labship/lab:ctx-0", 8888)]),
        )
        .expect("plan");
        assert_eq!(ec2(&replace).market, "on-demand");
        assert!(
            replace
                .reason
                .contains("it stays on-demand (`labship down` then `labship up --spot`"),
            "{}",
            replace.reason
        );
        // An interrupted spot instance is started again, and the reason says why it stopped.
        let mut interrupted = instance("stopped", "labship/lab:ctx-1", 8888);
        interrupted.spot = true;
        interrupted.state_reason = Some("Server.SpotInstanceShutdown".into());
        assert!(interrupted.interrupted());
        let start = plan(&config, &opts(&config), &observed(vec![interrupted])).expect("plan");
        assert_eq!(start.action, PlannedAction::Start);
        assert_eq!(ec2(&start).market, "spot");
        assert!(
            start.reason.contains("a spot interruption"),
            "{}",
            start.reason
        );
    }

    #[test]
    fn a_kept_data_volume_is_moved_to_the_subnets_zone_or_refused_when_it_cannot_be_attached() {
        let (_dir, mut config) = config();
        let refused = |config: &Config, seen: &Observed| {
            let err = check_data_volume(config, &opts(config), seen).expect_err("refused");
            assert!(matches!(err, Error::DataVolume { .. }), "{err:?}");
            let text = format!(
                "{err} {}",
                miette::Diagnostic::help(&err)
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            );
            assert!(plan(config, &opts(config), seen).is_err());
            text
        };
        let mut seen = observed(vec![]);
        seen.data_volumes = vec![kept_volume("eu-west-1a", Some("i-old"))];
        assert!(refused(&config, &seen).contains("still attached to i-old"));
        let mut failed = kept_volume("eu-west-1a", None);
        failed.state = "error".into();
        seen.data_volumes = vec![failed];
        assert!(refused(&config, &seen).contains("error state"));
        let mut second = kept_volume("eu-west-1a", None);
        second.id = "vol-2".into();
        seen.data_volumes = vec![kept_volume("eu-west-1a", None), second];
        assert!(refused(&config, &seen).contains("has 2 data volumes"));
        // A subnet in another zone than the volume's: it is copied there.
        config.ec2.subnet = Some("subnet-1".into());
        seen.data_volumes = vec![kept_volume("eu-west-1a", None)];
        seen.subnet_zone = Some("eu-west-1c".into());
        check_data_volume(&config, &opts(&config), &seen).expect("a move");
        let moved = plan(&config, &opts(&config), &seen).expect("plan");
        let data = ec2(&moved).data_volume.clone().expect("data volume");
        assert_eq!((data.action, data.id.as_deref()), ("move", Some("vol-1")));
        assert_eq!(data.from_zone.as_deref(), Some("eu-west-1a"));
        assert_eq!(data.availability_zone.as_deref(), Some("eu-west-1c"));
        assert!(
            moved.reason.contains(
                "copied to eu-west-1c, the zone of the subnet subnet-1, through a snapshot"
            ),
            "{}",
            moved.reason
        );
        assert_eq!(
            ec2(&moved)
                .launch
                .as_ref()
                .and_then(|l| l.availability_zone.clone()),
            None
        );
        // The same zone is fine, and the subnet decides the placement.
        seen.subnet_zone = Some("eu-west-1a".into());
        check_data_volume(&config, &opts(&config), &seen).expect("same zone");
        let p = plan(&config, &opts(&config), &seen).expect("plan");
        assert_eq!(
            ec2(&p)
                .launch
                .as_ref()
                .and_then(|l| l.availability_zone.clone()),
            None
        );
        assert_eq!(
            ec2(&p)
                .launch
                .as_ref()
                .and_then(|l| l.subnet.clone())
                .as_deref(),
            Some("subnet-1")
        );
    }

    #[test]
    fn a_running_instance_with_this_image_is_left_alone_once_it_printed_its_token() {
        let (_dir, config) = config();
        let image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/labship/lab:ctx-1";
        let mut seen = observed(vec![instance("running", image, 8888)]);
        seen.console = Some("labship: token path=/lab source=labship\n".into());
        let plan = plan(&config, &opts(&config), &seen).expect("plan");
        assert_eq!(plan.action, PlannedAction::Nothing);
        // A host of an older labship relayed the URL itself: served too.
        seen.console = Some(format!(
            "labship: token\nhttp://127.0.0.1:8888/lab?token={}\n",
            "a".repeat(48)
        ));
        assert_eq!(
            super::plan(&config, &opts(&config), &seen)
                .expect("plan")
                .action,
            PlannedAction::Nothing
        );
        assert!(!plan.build, "a no-op builds nothing");
        assert!(!ec2(&plan).push);
        assert!(ec2(&plan).launch.is_none());

        // Still no token: the push is finished and the wait resumed.
        seen.console = Some("labship: begin t=1\n".into());
        assert_eq!(
            super::plan(&config, &opts(&config), &seen)
                .expect("plan")
                .action,
            PlannedAction::Resume
        );
        // An error marker last: started again in place, with the replace script.
        seen.console = Some("labship: error phase=pull cause=denied\n".into());
        let restart = super::plan(&config, &opts(&config), &seen).expect("plan");
        assert_eq!(restart.action, PlannedAction::Restart);
        assert!(ec2(&restart).user_data.is_some());
    }

    #[test]
    fn other_inputs_replace_the_container_and_the_same_ones_leave_it() {
        let (_dir, config) = config();
        let image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/labship/lab:ctx-1";
        let mut seen = observed(vec![instance("running", image, 8888)]);
        seen.console = Some("labship: token path=/lab source=labship\n".into());
        seen.registry = Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com".into());
        let mut with = opts(&config);
        with.inputs = "file\tnotes.txt\teu-west-1\ts3://labship-data/notes.txt\n".into();
        with.reach = vec![(
            crate::aws::s3::S3Uri::parse("s3://labship-data/notes.txt").expect("address"),
            true,
        )];
        let replace = plan(&config, &with, &seen).expect("plan");
        assert_eq!(replace.action, PlannedAction::Replace, "{}", replace.reason);
        assert!(
            replace.reason.contains("inputs changed"),
            "{}",
            replace.reason
        );
        let script = ec2(&replace).user_data.clone().expect("the replace script");
        assert!(
            script.contains("s3://labship-data/notes.txt"),
            "plan = apply"
        );
        // Its instance, on the shared role, moves to the deployment's own, which reads exactly
        // those inputs.
        let iam = ec2(&replace).iam.clone().expect("the deployment's role");
        let own = iam.own.expect("its own role");
        assert!(own.moves_instance);
        assert_eq!(
            iam.role,
            iam::deployment_role_name("eu-west-1", &config.name)
        );
        assert!(
            own.policy
                .to_string()
                .contains("arn:aws:s3:::labship-data/notes.txt"),
            "{}",
            own.policy
        );
        // The instance says it has them: nothing to do.
        seen.instances[0].inputs = Some(userdata::inputs_id(&with.inputs));
        let same = plan(&config, &with, &seen).expect("plan");
        assert_ne!(same.action, PlannedAction::Replace, "{}", same.reason);
        // Without inputs, an instance on the shared role stays there, one on its own stays
        // on its own (with no S3 read).
        let shared = plan(&config, &opts(&config), &seen).expect("plan");
        assert!(ec2(&shared)
            .iam
            .as_ref()
            .and_then(|i| i.own.as_ref())
            .is_none());
        seen.instances[0].image = Some("r/labship/lab:ctx-0".into());
        seen.instances[0].profile = Some(iam::deployment_role_name("eu-west-1", &config.name));
        let kept = plan(&config, &opts(&config), &seen).expect("plan");
        let own = ec2(&kept)
            .iam
            .clone()
            .and_then(|i| i.own)
            .expect("its own role");
        assert!(!own.moves_instance);
        assert!(!own.policy.to_string().contains("s3:"), "{}", own.policy);
    }

    #[test]
    fn a_launch_with_inputs_gets_the_deployments_own_role_and_one_without_the_shared_one() {
        let (_dir, config) = config();
        let seen = observed(vec![]);
        let mut with = opts(&config);
        with.inputs = "file\tnotes.txt\teu-west-1\ts3://labship-data/notes.txt\n".into();
        with.reach = vec![(
            crate::aws::s3::S3Uri::parse("s3://labship-data/notes.txt").expect("address"),
            true,
        )];
        let launch = plan(&config, &with, &seen).expect("plan");
        let own_name = iam::deployment_role_name("eu-west-1", &config.name);
        let detail = ec2(&launch);
        assert_eq!(
            detail.launch.as_ref().map(|l| l.instance_profile.as_str()),
            Some(own_name.as_str())
        );
        let own = detail
            .iam
            .clone()
            .and_then(|i| i.own)
            .expect("its own role");
        assert!(!own.moves_instance);
        assert!(detail.to_string().contains("labship-deployment-boundary"));
        let shared = plan(&config, &opts(&config), &seen).expect("plan");
        assert_eq!(
            ec2(&shared)
                .launch
                .as_ref()
                .map(|l| l.instance_profile.as_str()),
            Some(iam::INSTANCE_PROFILE)
        );
    }

    #[test]
    fn a_changed_image_or_port_replaces_the_container_on_the_same_instance() {
        let (_dir, config) = config();
        let seen = observed(vec![instance("running", "r/labship/lab:ctx-0", 8888)]);
        let plan = plan(&config, &opts(&config), &seen).expect("plan");
        assert_eq!(plan.action, PlannedAction::Replace);
        assert_eq!(ec2(&plan).instance_id.as_deref(), Some("i-1"));
        assert!(plan.reason.contains("image changed"), "{}", plan.reason);
        assert!(ec2(&plan).launch.is_none());
    }

    #[test]
    fn a_stopped_instance_is_started_again_not_launched_anew() {
        let (_dir, config) = config();
        let image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/labship/lab:ctx-1";
        let seen = observed(vec![instance("stopped", image, 8888)]);
        let plan = plan(&config, &opts(&config), &seen).expect("plan");
        assert_eq!(plan.action, PlannedAction::Start);
        assert_eq!(plan.action.done(), crate::hosts::UpAction::Started);
        let p = ec2(&plan);
        assert_eq!(p.instance_id.as_deref(), Some("i-1"));
        assert!(p.launch.is_none(), "nothing is launched");
        // Nothing to change on the host: no script, the console says when Jupyter answers.
        assert!(p.user_data.is_none());
        assert!(plan.reason.contains("same image"), "{}", plan.reason);
        // Another image: started, then its container replaced in place by the script.
        let older = observed(vec![instance("stopped", "r/labship/lab:ctx-0", 8888)]);
        let plan = super::plan(&config, &opts(&config), &older).expect("plan");
        assert_eq!(plan.action, PlannedAction::Start);
        assert!(plan.reason.contains("put in place"), "{}", plan.reason);
        let script = ec2(&plan).user_data.as_deref().expect("script");
        assert!(script.contains("labship replace"), "{script}");
        // A terminated-and-gone older instance does not matter; the newest stopped one does.
        let two = observed(vec![
            instance("shutting-down", image, 8888),
            instance("stopped", image, 8888),
        ]);
        assert_eq!(
            super::plan(&config, &opts(&config), &two)
                .expect("plan")
                .action,
            PlannedAction::Start
        );
    }

    #[test]
    fn refusals_are_decided_before_anything_is_made() {
        let (_dir, config) = config();
        // An instance still stopping is not silently replaced by a second one.
        let stopping = observed(vec![instance("stopping", "x", 8888)]);
        let err = plan(&config, &opts(&config), &stopping).expect_err("stopping");
        assert!(err.to_string().contains("stopping") || format!("{err:?}").contains("stopping"));
        // An instance type of the other architecture.
        let mut arm = observed(vec![]);
        arm.instance_type.architectures = vec!["arm64".into()];
        assert!(matches!(
            plan(&config, &opts(&config), &arm),
            Err(Error::ArchitectureMismatch { .. })
        ));
        // No caller address: a launch cannot open the port to anyone.
        let mut no_ip = observed(vec![]);
        no_ip.ingress = Err("checkip did not answer".into());
        assert!(matches!(
            plan(&config, &opts(&config), &no_ip),
            Err(Error::CallerIp { .. })
        ));
    }
}
