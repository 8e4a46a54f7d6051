//! Step 3 of the pipeline: where Jupyter runs.
//!
//! Every target is a [`Host`] — the local Docker engine ([`local::LocalHost`], the default
//! that needs no AWS account) and EC2 ([`ec2::Ec2Host`]) — with the same verbs in the
//! domain's words: plan, up, status, token, logs, attach, down. Each verb returns ONE report
//! type whatever the target ([`UpReport`], [`Plan`], [`StatusReport`], [`TokenReport`],
//! [`LogsReport`], [`DownReport`]); a `target` field says where. A feature is written once,
//! against this trait; the command handlers pick the host and print the report.
//!
//! `up` is plan-then-apply on every host: [`Host::plan`] observes the world and decides
//! everything in a pure function (the value `--dry-run` prints), and `up` applies exactly
//! that value. Options a target cannot honour are refused by [`UpOptions::refuse`] before
//! anything is observed or created, never silently ignored.
//!
//! The two targets never import each other: what they share lives here or in the pipeline
//! modules before them (token, push, build).

pub mod backup;
pub mod ec2;
pub mod local;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Target};
use crate::error::{Error, Result};
use crate::output::Printer;

/// What the user asked of `up`, target-neutral. Each host applies its own defaults to what
/// is `None` and refuses what it cannot do.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// The port users reach Jupyter on (local: on this machine; EC2: on the instance).
    pub port: Option<u16>,
    /// The address the port is published on.
    pub bind: Option<IpAddr>,
    /// How long to wait for Jupyter to answer.
    pub wait: Option<Duration>,
    /// EC2: the CIDRs the port opens to.
    pub allow_cidr: Vec<String>,
    /// EC2: open the port to everyone.
    pub public: bool,
    /// EC2: how Jupyter is reached (`None`: `ec2.access`, else HTTPS).
    pub access: Option<crate::config::Access>,
    /// Stay attached to the log afterwards (local only).
    pub attach: bool,
    /// Serve it on 127.0.0.1 through the TLS forwarder afterwards (EC2 only).
    pub connect: bool,
    /// EC2: act on a deployment another identity owns (`labship:owner`).
    pub force: bool,
    /// This deployment is a seat of a class (`up --seats`, `--roster`): its labels or tags say
    /// which class and which seat.
    pub seat: Option<SeatOf>,
    /// Local: a class's seat's port, consecutive ones from the first, taken when free by a new
    /// container (an existing one keeps its own). EC2 has none: every seat takes the one port
    /// (an existing seat keeps its own unless `--port` is given).
    pub preferred_port: Option<u16>,
    /// Local: the container's memory and CPU limits (a class's seats share one machine).
    pub limits: Limits,
    /// Local: the `[data] inputs`, copied, mounted read-only at `inputs/<name>`, and what
    /// they are (`data::label`: a dry run has the label, not the copy).
    pub inputs: Vec<crate::data::Copied>,
    pub inputs_label: Option<String>,
    /// EC2: the `[data] inputs` as the host copies them itself (`inputs.tsv` lines, see
    /// `data::Checked::on_host`; empty: none).
    pub host_inputs: String,
    /// EC2: the same inputs as the deployment's own role reads them (each address, and
    /// whether it is one object rather than a folder).
    pub host_reach: Vec<(crate::aws::s3::S3Uri, bool)>,
}

/// A seat of a class: the deployment `<class>-<seat>`, with the student's name and email
/// when the roster gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeatOf {
    pub class: String,
    pub seat: String,
    pub student: Option<String>,
    pub email: Option<String>,
    /// The host it shares with other seats of its class (`--seats-per-instance`); none when
    /// it has an instance of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<SharedHost>,
}

/// A host several seats of a class share: one instance, one Docker, one certificate; each
/// seat its own container, token, data volume and port (the host's first port plus its
/// slot). Its instance is tagged with the seats in slot order (`labship:host-seats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedHost {
    /// The seats' ids in slot order; the first is the host's (its `DEPLOYMENT` on the host).
    pub seats: Vec<String>,
    /// This seat's place among them.
    pub slot: usize,
    /// Seats taken off the host alone (`down --seat`) while the others stay
    /// (`labship:host-gone`): their slots stay empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
}

impl SharedHost {
    /// The seats the host serves beside `seat`, in slot order.
    #[must_use]
    pub fn beside(&self, seat: &str) -> Vec<&str> {
        self.seats
            .iter()
            .filter(|s| *s != seat && !self.gone.contains(s))
            .map(String::as_str)
            .collect()
    }
}

/// The `labship up` (quoted) that starts a deployment again or brings it back: a class's
/// seat by its class's `up`, which keeps it a seat (by its own name, a seat whose instance
/// is gone would come back without its class's tags and port). `flag`: `--ec2`/`--local`.
pub fn up_again(deployment: &str, seat: Option<&SeatOf>, flag: &str) -> String {
    match seat {
        Some(s) => format!(
            "the class's `labship up {} {flag}` run again as it was made (`--seats N` or `--roster FILE`, and its `--allow-cidr`)",
            s.class
        ),
        None => format!("`labship up {deployment} {flag}`"),
    }
}

/// How a command names a deployment: a class's seat as `CLASS --seat ID` (a seat's own name
/// can be longer than a name given on the command line may be).
pub fn named(deployment: &str, seat: Option<&SeatOf>) -> String {
    match seat {
        Some(s) => format!("{} --seat {}", s.class, s.seat),
        None => deployment.to_string(),
    }
}

/// A container's limits (`None`: the engine's default, no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory_mib: Option<u64>,
    pub cpus: Option<f64>,
}

impl Limits {
    /// A CPU limit given with `flag` (`--cpus`, `--seat-cpus`), checked: 0.01 to 1024.
    pub fn check_cpus(flag: &'static str, cpus: f64) -> crate::error::Result<()> {
        if (0.01..=1024.0).contains(&cpus) {
            return Ok(());
        }
        Err(crate::error::Error::InvalidSetting {
            what: flag,
            value: cpus.to_string(),
            reason: "a container has between 0.01 and 1024 CPUs".into(),
            hint: format!("e.g. {flag} 0.5"),
        })
    }

    /// The memory limit as the engine takes it (bytes).
    pub fn memory_bytes(&self) -> Option<i64> {
        self.memory_mib
            .and_then(|m| i64::try_from(m.saturating_mul(1 << 20)).ok())
    }

    /// The CPU limit as the engine takes it (billionths of a CPU).
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpus.map(|c| (c * 1e9).round() as i64)
    }
}

/// How to reach one deployment's Jupyter from this machine: the address (over the pinned
/// TLS on EC2), the path its API is served under, and its token. A Systems Manager session
/// opened for it is closed by [`JupyterAccess::close`].
pub struct JupyterAccess {
    pub endpoint: crate::http::Endpoint,
    /// The API's base path (`""`, or a base URL such as `/user/ann`).
    pub base: String,
    pub token: String,
    /// The container or instance that serves it (for messages).
    pub server: String,
    pub tunnel: Option<crate::tunnel::Tunnel>,
}

impl JupyterAccess {
    pub async fn close(self) {
        if let Some(tunnel) = self.tunnel {
            tunnel.close().await;
        }
    }
}

impl UpOptions {
    /// The first option that `target` cannot honour, as an error naming it and the fix.
    /// `ec2_flags` are the EC2-only settings given on the command line (`--ami`, `--ttl`, ...).
    pub fn refuse(&self, target: Target, ec2_flags: &[&'static str]) -> Result<()> {
        let unsupported: Option<(&'static str, &'static str)> = match target {
            Target::Local if !self.allow_cidr.is_empty() => Some((
                "--allow-cidr",
                "a local deployment listens on --bind (127.0.0.1 by default); there is no security group to open",
            )),
            Target::Local if self.public => Some((
                "--public",
                "publish on every interface with --bind 0.0.0.0 instead",
            )),
            Target::Local if self.access.is_some() => Some((
                "--access",
                "a local deployment is reached on this machine; --access chooses how an EC2 instance is reached",
            )),
            Target::Local if !ec2_flags.is_empty() => Some((
                ec2_flags[0],
                "it is a setting of an EC2 host; add --ec2, or drop it",
            )),
            Target::Local if self.connect => Some((
                "--connect",
                "a local deployment is already on this machine; its URL is what `up` prints",
            )),
            Target::Ec2 if self.attach => Some((
                "--attach",
                "an instance keeps running without labship; follow it with `labship logs --ec2` and remove it with `labship down --ec2`",
            )),
            _ => None,
        };
        match unsupported {
            Some((option, hint)) => Err(Error::Unsupported {
                option: option.to_string(),
                target: target.to_string(),
                hint: hint.to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// What `down` is asked to do.
#[derive(Debug, Clone)]
pub struct DownOptions {
    /// Also delete the workspace (local: the volume; EC2: terminate without saving it).
    pub delete_data: bool,
    /// EC2: also delete the deployment's images from ECR.
    pub purge_images: bool,
    /// EC2: every deployment in every region, then the shared IAM role when none is left.
    pub all: bool,
    /// EC2: remove a deployment another identity owns (`labship:owner`).
    pub force: bool,
    /// Where saved workspaces go (`<folder>/<deployment>-<UTC time>/`).
    pub backup_root: PathBuf,
}

/// A place Jupyter runs. Implemented by [`local::LocalHost`] and [`ec2::Ec2Host`].
#[allow(async_fn_in_trait)] // used with concrete types only, inside labship
pub trait Host {
    fn target(&self) -> Target;

    /// Makes what every seat of a class shares before their `up`s run side by side (the
    /// image), so it is made once.
    async fn prepare(&self, config: &Config, printer: &Printer) -> Result<()>;

    /// How to reach the deployment's running Jupyter (`collect`, `distribute`, `backup`).
    async fn jupyter(&self, deployment: &str) -> Result<JupyterAccess>;

    /// Observes the world and decides what `up` would do; changes nothing.
    async fn plan(&self, config: &Config, options: &UpOptions, printer: &Printer) -> Result<Plan>;

    /// Plans, then applies exactly that plan; returns the URL that answers.
    async fn up(&self, config: &Config, options: &UpOptions, printer: &Printer)
        -> Result<UpReport>;

    /// Every deployment on this host.
    async fn status(&self) -> Result<Vec<DeploymentStatus>>;

    /// Every deployment on this host, as [`Host::status`] lists them, less what costs a call
    /// per running deployment and only `status` shows (EC2: why and when each host's watchdog
    /// stops it, from its console). What verbs use to find deployments (a class's seats, whether a
    /// name is a class).
    async fn listing(&self) -> Result<Vec<DeploymentStatus>> {
        self.status().await
    }

    /// The deployment's current token and login URL.
    async fn token(&self, deployment: &str) -> Result<TokenReport>;

    /// Where `labship connect` forwards to.
    async fn connect_target(&self, deployment: &str) -> Result<ConnectTarget>;

    /// A new token for the deployment's Jupyter (`token --rotate`), the workspace kept.
    async fn rotate_token(&self, config: &Config, printer: &Printer) -> Result<TokenReport>;

    /// The deployment's Jupyter log (optionally its last `tail` lines).
    async fn logs(&self, deployment: &str, tail: Option<usize>) -> Result<LogsReport>;

    /// Streams the log until Ctrl-C ([`crate::interrupt`], installed by the caller before
    /// the URL is printed), then stops the deployment's server.
    async fn attach(&self, deployment: &str, printer: &Printer) -> Result<()>;

    /// Stops the deployment's server and keeps everything else (`labship stop`): the next
    /// `up` starts it again with the same workspace (on EC2 also the same token).
    async fn stop(&self, deployment: &str, force: bool, printer: &Printer) -> Result<StopReport>;

    /// Downloads the running deployment's workspace into `dest` through its Jupyter
    /// (`labship backup`): every file Jupyter lists, byte for byte.
    async fn backup(
        &self,
        deployment: &str,
        dest: &std::path::Path,
        printer: &Printer,
    ) -> Result<BackupReport>;

    /// What `down` would remove that deserves a confirmation (None: nothing to ask about).
    async fn down_preview(&self, config: &Config, options: &DownOptions) -> Result<Option<String>>;

    /// Removes the deployment (what `options` says of its data and images).
    async fn down(
        &self,
        config: &Config,
        options: &DownOptions,
        printer: &Printer,
    ) -> Result<DownReport>;

    /// After a class's `up`: what its seats share keeps only what they need now (EC2: the
    /// rules of the class's group that no seat asked for in this command, or that are for
    /// a port no seat is on any more, go). Nothing where seats share nothing (local).
    async fn settle_class(&self, class: &str) -> Result<()> {
        let _ = class;
        Ok(())
    }

    /// Removes what the seats of `class` share once no seat uses it (EC2: the class's security
    /// group); while one does, it is kept and the report says so. Nothing where seats share
    /// nothing (local).
    /// `force`: also when another identity made it.
    async fn release_class(&self, class: &str, force: bool) -> Result<DownReport> {
        let _ = force;
        Ok(DownReport::new(self.target(), class, None))
    }

    /// What [`Host::release_class`] would remove once the deployments `removing` are down,
    /// for the confirmation question (None: nothing).
    async fn release_preview(&self, class: &str, removing: &[&str]) -> Result<Option<String>> {
        let _ = (class, removing);
        Ok(None)
    }

    /// Removes several deployments (a class's seats), each as [`Host::down`] would; one
    /// result per deployment, in their order: a report (whose `failures`, when there are any,
    /// say what is left of it), or the error that left it. One's failure does not stop the
    /// others. Err: what stops them all (Ctrl-C; on EC2 also the first listing, before
    /// anything is removed). By default side by side, a few at a time; a host whose API takes
    /// many resources in one call (EC2) does each step for all at once.
    async fn down_each(
        &self,
        configs: &[Config],
        options: &DownOptions,
        printer: &Printer,
    ) -> Result<Vec<(String, Result<DownReport>)>> {
        use futures_util::StreamExt;
        let mut done: Vec<(String, Result<DownReport>)> = futures_util::stream::iter(configs)
            .map(|c| async move { (c.name.clone(), self.down(c, options, printer).await) })
            .buffered(crate::class::CONCURRENCY)
            .collect()
            .await;
        let interrupted = done
            .iter()
            .position(|(_, r)| matches!(r, Err(Error::Interrupted { .. })));
        if let Some((_, Err(e))) = interrupted.map(|n| done.swap_remove(n)) {
            return Err(e);
        }
        Ok(done)
    }
}

// ---- reports: one per command, the same shape on every target ------------------------------

/// What `up` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpAction {
    /// A new container (local) or instance (EC2).
    Created,
    /// The deployment already ran this image: nothing changed.
    Unchanged,
    /// A stopped deployment with this image was started again.
    Started,
    /// An interrupted `up` was completed (EC2: the push finished, the wait resumed).
    Resumed,
    /// The last start had failed: the server was started again in place.
    Restarted,
    /// The image, port or address changed: the server was replaced, the workspace kept.
    Replaced,
}

/// What `up` will do: the plan's verb (the same set as [`UpAction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlannedAction {
    Create,
    Nothing,
    Start,
    Resume,
    Restart,
    Replace,
}

impl PlannedAction {
    /// The report's word for this plan once applied.
    pub fn done(self) -> UpAction {
        match self {
            PlannedAction::Create => UpAction::Created,
            PlannedAction::Nothing => UpAction::Unchanged,
            PlannedAction::Start => UpAction::Started,
            PlannedAction::Resume => UpAction::Resumed,
            PlannedAction::Restart => UpAction::Restarted,
            PlannedAction::Replace => UpAction::Replaced,
        }
    }
}

/// `up`'s result. Fields that do not apply to a target are `null` in JSON.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub target: Target,
    pub deployment: String,
    /// The login URL (it holds the token); `null` with `--access ssm`, where no port is open
    /// and `labship connect` gives the URL.
    pub url: Option<String>,
    pub action: UpAction,
    /// Why, in words.
    pub reason: String,
    /// The image the server runs (local: `labship/NAME:ctx-...`; EC2: the registry URI).
    pub image: String,
    /// Whether the image had to be built in this run.
    pub built: bool,
    /// Bytes sent to the registry in this run (0 locally).
    pub bytes_uploaded: u64,
    /// The port Jupyter is reached on.
    pub port: u16,
    /// Local: the container and the workspace volume.
    pub container: Option<String>,
    pub volume: Option<String>,
    /// EC2: where the instance runs.
    pub region: Option<String>,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub public_ip: Option<String>,
    /// EC2: the SHA-256 fingerprint of the certificate Jupyter serves (HTTPS), as the
    /// instance published it; labship pins it on every connection.
    pub tls_fingerprint: Option<crate::tls::Fingerprint>,
    /// EC2: how Jupyter is reached, `https` or `ssm`.
    pub access: Option<crate::config::Access>,
    pub timings: Timings,
    /// The notebooks' git repository put into the workspace (`[workspace] git`, `--git`).
    pub git: Option<crate::workspace::GitSynced>,
}

impl std::fmt::Display for UpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.url {
            Some(url) => write!(f, "{url}"),
            None => write!(
                f,
                "labship connect {} --ec2   (no port is open: it goes through Systems Manager)",
                self.deployment
            ),
        }
    }
}

/// `up --dry-run`: everything `up` would do. The common part is the same on every target;
/// `detail` holds the target's own decisions (flattened into the same JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub target: Target,
    pub deployment: String,
    pub action: PlannedAction,
    pub reason: String,
    /// The image the server will run.
    pub image: String,
    /// Whether the image must be built first (it is not on this engine yet; on EC2 the build
    /// is skipped after all when the registry already has the content tag).
    pub build: bool,
    #[serde(flatten)]
    pub detail: PlanDetail,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PlanDetail {
    Local(local::LocalPlan),
    Ec2(Box<ec2::plan::Ec2Plan>),
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Plan for `{}` ({}): {} — {}",
            self.deployment,
            self.target,
            serde_plain(&self.action),
            self.reason
        )?;
        writeln!(
            f,
            "  image           {}{}",
            self.image,
            if self.build { " (to be built)" } else { "" }
        )?;
        match &self.detail {
            PlanDetail::Local(p) => write!(f, "{p}"),
            PlanDetail::Ec2(p) => write!(f, "{p}"),
        }
    }
}

/// An enum's serde name (`replace`), for text reports.
fn serde_plain<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One deployment in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub target: Target,
    pub name: String,
    /// `running`, `exited`, `stopped`, `pending`, ... as the host says.
    pub state: String,
    pub image: Option<String>,
    /// The server's address without the token (`labship token` prints that).
    pub url: Option<String>,
    pub age_seconds: Option<i64>,
    /// Local: the container.
    pub container: Option<String>,
    /// EC2: where the instance runs.
    pub region: Option<String>,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub public_ip: Option<String>,
    /// Something the user should know (a resource left behind, and what removes it).
    pub note: Option<String>,
    /// EC2: the data volume that holds the workspace (also listed, with state `down`, when
    /// it is all that is left of a deployment).
    pub data_volume: Option<crate::aws::ebs::DataVolume>,
    /// EC2: a spot instance, and whether EC2 stopped it for want of capacity.
    pub spot: Option<bool>,
    pub interrupted: Option<bool>,
    /// EC2: the host's life (its watchdog); every field `null` elsewhere.
    #[serde(flatten)]
    pub life: HostLife,
    /// The class and seat when it is a seat of a class (`null` otherwise).
    pub seat: Option<SeatOf>,
}

/// What `status` knows of a host's life from its watchdog (flattened into each row).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostLife {
    /// Seconds since the host booted (running only).
    pub uptime_seconds: Option<i64>,
    /// Seconds since anything happened in Jupyter, as the host's watchdog judges it
    /// (`null` while active or unknown).
    pub idle_seconds: Option<i64>,
    /// When something last happened in Jupyter (RFC 3339; `null`: unknown, or active now).
    pub last_activity: Option<String>,
    /// The host's idle stop and TTL in seconds (`null`: off, or a host without them).
    pub idle_stop_seconds: Option<u64>,
    pub ttl_seconds: Option<u64>,
    /// When it will stop itself, in seconds from now, and why (`idle` or `ttl`).
    pub stops_in_seconds: Option<i64>,
    pub stops_because: Option<String>,
}

/// A target `status` could not look at, and why (it still lists the others).
#[derive(Debug, Clone, Serialize)]
pub struct NotChecked {
    pub target: Target,
    pub reason: String,
}

/// `labship status`: every deployment of every target asked, in one table / one array.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub deployments: Vec<DeploymentStatus>,
    pub not_checked: Vec<NotChecked>,
}

/// A span of seconds in words: `45s`, `12m`, `6h`, `3d`.
pub(crate) fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines: Vec<String> = Vec::new();
        if self.deployments.is_empty() {
            lines.push("no deployments (start one with `labship up`)".into());
        } else {
            let rows: Vec<[String; 8]> = self
                .deployments
                .iter()
                .map(|d| {
                    let place = match (&d.instance_id, &d.container) {
                        (Some(id), _) => format!(
                            "{id} {} {}",
                            d.instance_type.as_deref().unwrap_or("-"),
                            d.region.as_deref().unwrap_or("")
                        )
                        .trim_end()
                        .to_string(),
                        (None, Some(c)) => c.clone(),
                        (None, None) => d
                            .data_volume
                            .as_ref()
                            .map_or_else(|| "-".into(), |v| v.id.clone()),
                    };
                    [
                        d.name.clone(),
                        d.target.to_string(),
                        d.state.clone(),
                        place,
                        d.url
                            .clone()
                            .or_else(|| d.note.clone())
                            .unwrap_or_else(|| "-".into()),
                        d.age_seconds.map(age).unwrap_or_else(|| "-".into()),
                        d.life.idle_seconds.map(age).unwrap_or_else(|| "-".into()),
                        match (d.life.stops_in_seconds, &d.life.stops_because) {
                            (Some(s), Some(why)) => format!("in {} ({why})", age(s.max(0))),
                            _ => "-".into(),
                        },
                    ]
                })
                .collect();
            let header = [
                "NAME", "TARGET", "STATE", "WHERE", "URL", "AGE", "IDLE", "STOPS",
            ]
            .map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(rows.iter()) {
                let cells: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                lines.push(cells.join("  ").trim_end().to_string());
            }
        }
        // A class's totals: its seats by state.
        let mut classes: std::collections::BTreeMap<(String, String), Vec<&str>> =
            std::collections::BTreeMap::new();
        for d in &self.deployments {
            if let Some(seat) = &d.seat {
                classes
                    .entry((seat.class.clone(), d.target.to_string()))
                    .or_default()
                    .push(d.state.as_str());
            }
        }
        for ((class, target), states) in classes {
            let mut counts: std::collections::BTreeMap<&str, usize> =
                std::collections::BTreeMap::new();
            for s in &states {
                *counts.entry(s).or_default() += 1;
            }
            let by_state: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            lines.push(format!(
                "class `{class}` on {target}: {} seats ({})",
                states.len(),
                by_state.join(", ")
            ));
        }
        for n in &self.not_checked {
            lines.push(format!("({} not checked: {})", n.target, n.reason));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

/// `labship token`: the token on its own line in text mode (for `$(labship token)`), an
/// object in JSON. `target` and `deployment` are `null` for `--from-log`.
#[derive(Debug, Clone, Serialize)]
pub struct TokenReport {
    pub target: Option<Target>,
    pub deployment: Option<String>,
    pub token: String,
    pub url: String,
    /// EC2: the SHA-256 fingerprint of the certificate its Jupyter serves (`null` locally).
    pub tls_fingerprint: Option<crate::tls::Fingerprint>,
}

impl std::fmt::Display for TokenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.token)
    }
}

/// Where `labship connect` forwards to: Jupyter on the instance, the certificate it must
/// present, and what the login URL needs.
#[derive(Debug)]
pub struct ConnectTarget {
    pub remote: crate::forward::Remote,
    /// With `--access ssm`: the Systems Manager session `remote` goes through (close it when
    /// done).
    pub tunnel: Option<crate::tunnel::Tunnel>,
    /// The URL path Jupyter logged (`/lab`).
    pub path: String,
    /// The sealed token (`None` when the image sets its own).
    pub token: Option<crate::token::JupyterToken>,
}

/// `labship connect`: the local URL (printed as soon as the forwarder listens; the command
/// then serves until Ctrl-C).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    pub target: Target,
    pub deployment: String,
    /// `http://127.0.0.1:PORT/lab?token=...`: plain HTTP on this machine only.
    pub url: String,
    pub port: u16,
    /// Where it forwards: Jupyter's HTTPS address on the instance, or (`--access ssm`) the
    /// local end of the Systems Manager session.
    pub remote: String,
    /// `https` (straight to the instance's open port) or `ssm` (a port-forwarding session).
    pub access: crate::config::Access,
    /// The Systems Manager session, with `--access ssm`.
    pub ssm_session: Option<String>,
    pub tls_fingerprint: crate::tls::Fingerprint,
}

impl std::fmt::Display for ConnectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// `labship logs`: the container's log (local) or the instance's cleaned console (EC2).
#[derive(Debug, Clone, Serialize)]
pub struct LogsReport {
    pub target: Target,
    pub deployment: String,
    pub log: String,
}

impl std::fmt::Display for LogsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.log.trim_end_matches('\n'))
    }
}

/// `labship stop`: what was stopped, and what goes on costing while it is.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    pub target: Target,
    pub deployment: String,
    pub region: Option<String>,
    /// Stopped by this command, in words (`instance i-...`, `container labship-x`).
    pub stopped: Vec<String>,
    /// Already stopped before it.
    pub already_stopped: Vec<String>,
    /// What stays and how to have it back.
    pub kept: Vec<String>,
}

impl std::fmt::Display for StopReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines = Vec::new();
        if self.stopped.is_empty() && self.already_stopped.is_empty() {
            lines.push(format!("`{}` has nothing to stop", self.deployment));
        }
        for s in &self.stopped {
            lines.push(format!("stopped  {s}"));
        }
        for s in &self.already_stopped {
            lines.push(format!("stopped  {s} (already)"));
        }
        for k in &self.kept {
            lines.push(format!("kept     {k}"));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

/// `labship backup`: where the workspace went.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub target: Target,
    pub deployment: String,
    pub region: Option<String>,
    pub saved: SavedWorkspace,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.saved;
        write!(
            f,
            "saved    {} files ({}) of `{}` ({}) to {}",
            s.files,
            indicatif::HumanBytes(s.bytes),
            self.deployment,
            s.instance,
            s.dir.display()
        )?;
        for skipped in &s.skipped {
            write!(f, "\n  not saved: {skipped}")?;
        }
        Ok(())
    }
}

/// A workspace saved (by `backup`, or by `down` before a host without a data volume went).
#[derive(Debug, Clone, Serialize)]
pub struct SavedWorkspace {
    /// The server it came from (EC2: the instance id).
    pub instance: String,
    pub dir: PathBuf,
    pub files: usize,
    pub bytes: u64,
    /// Paths not saved, with the reason.
    pub skipped: Vec<String>,
}

/// `labship down`. `removed` and `kept` list everything in words on every target; the other
/// fields say the same by kind, for scripts.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub target: Target,
    pub deployment: String,
    pub region: Option<String>,
    /// Everything removed, in words (`container labship-x`, `instance i-...`).
    pub removed: Vec<String>,
    /// What stays on purpose (the workspace volume without --delete-data).
    pub kept: Vec<String>,
    /// Workspaces saved before termination.
    pub saved: Vec<SavedWorkspace>,
    pub terminated: Vec<String>,
    pub security_groups_deleted: Vec<String>,
    /// EC2: the data volumes that stay (without --delete-data), with their workspace.
    pub data_volumes_kept: Vec<crate::aws::ebs::DataVolume>,
    /// EC2: the data volumes deleted (--delete-data).
    pub data_volumes_deleted: Vec<String>,
    pub images_deleted: usize,
    pub repository_deleted: Option<String>,
    pub iam_removed: bool,
    /// Why the shared IAM role stays (with --all).
    pub iam_kept: Option<String>,
    pub failures: Vec<String>,
}

impl DownReport {
    pub fn new(target: Target, deployment: &str, region: Option<String>) -> DownReport {
        DownReport {
            target,
            deployment: deployment.to_string(),
            region,
            removed: Vec::new(),
            kept: Vec::new(),
            saved: Vec::new(),
            terminated: Vec::new(),
            security_groups_deleted: Vec::new(),
            data_volumes_kept: Vec::new(),
            data_volumes_deleted: Vec::new(),
            images_deleted: 0,
            repository_deleted: None,
            iam_removed: false,
            iam_kept: None,
            failures: Vec::new(),
        }
    }
}

impl DownReport {
    /// Adds one deployment's teardown to this one (`down --all`): its words prefixed with the
    /// deployment and region, its lists appended.
    pub fn absorb(&mut self, other: DownReport) {
        let tag = match &other.region {
            Some(r) => format!("`{}` in {r}: ", other.deployment),
            None => format!("`{}`: ", other.deployment),
        };
        let tagged = |list: Vec<String>| list.into_iter().map(|w| format!("{tag}{w}"));
        self.removed.extend(tagged(other.removed));
        self.kept.extend(tagged(other.kept));
        self.failures.extend(tagged(other.failures));
        self.saved.extend(other.saved);
        self.terminated.extend(other.terminated);
        self.security_groups_deleted
            .extend(other.security_groups_deleted);
        self.data_volumes_kept.extend(other.data_volumes_kept);
        self.data_volumes_deleted.extend(other.data_volumes_deleted);
        self.images_deleted += other.images_deleted;
        if other.repository_deleted.is_some() {
            self.repository_deleted = other.repository_deleted;
        }
    }
}

impl std::fmt::Display for DownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match &self.region {
            Some(r) => format!("{} in {r}", self.target),
            None => self.target.to_string(),
        };
        let mut lines = Vec::new();
        if self.removed.is_empty() && self.failures.is_empty() {
            lines.push(format!(
                "Nothing left of `{}` ({place}): nothing to remove",
                self.deployment
            ));
        }
        for s in &self.saved {
            lines.push(format!(
                "saved    {} files ({}) of {} to {}",
                s.files,
                indicatif::HumanBytes(s.bytes),
                s.instance,
                s.dir.display()
            ));
            for skipped in &s.skipped {
                lines.push(format!("  not saved: {skipped}"));
            }
        }
        for r in &self.removed {
            lines.push(format!("removed  {r}"));
        }
        for k in &self.kept {
            lines.push(format!("kept     {k}"));
        }
        if let Some(why) = &self.iam_kept {
            lines.push(format!("kept     IAM role: {why}"));
        }
        for why in &self.failures {
            lines.push(format!("failed   {why}"));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

/// Where the time of an `up` went, in seconds (phases that did not run are absent).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub build: Option<f64>,
    pub push: Option<f64>,
    /// EC2: RunInstances until the instance reported running.
    pub launch: Option<f64>,
    /// EC2: launch until the user-data began (firmware, kernel, cloud-init).
    pub boot: Option<f64>,
    /// EC2: installing/starting Docker and logging in to ECR.
    pub docker: Option<f64>,
    pub pull: Option<f64>,
    /// Container start until Jupyter answered with its token.
    pub jupyter: Option<f64>,
    pub total: f64,
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = [
            ("build", self.build),
            ("push", self.push),
            ("launch", self.launch),
            ("boot", self.boot),
            ("docker+login", self.docker),
            ("pull", self.pull),
            ("jupyter start", self.jupyter),
        ];
        writeln!(f, "Timings (s; on EC2 the push overlaps launch and boot):")?;
        for (name, v) in rows {
            match v {
                Some(v) => writeln!(f, "  {name:<14} {v:>7.1}")?,
                None => writeln!(f, "  {name:<14} {:>7}", "-")?,
            }
        }
        write!(f, "  {:<14} {:>7.1}", "total", self.total)
    }
}

/// A plan that does not fit the step applying it (something a step needs was not observed,
/// or a plan of the other target): a bug in labship, said plainly instead of a panic.
pub(crate) fn plan_bug(what: &str) -> Error {
    Error::InvalidSetting {
        what: "plan",
        value: String::new(),
        reason: what.to_string(),
        hint: "this is a bug in labship; please report it".into(),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// RFC 3339 of Unix seconds (`2026-12-01T11:22:33Z`).
pub fn rfc3339(secs: i64) -> Option<String> {
    aws_smithy_types::DateTime::from_secs(secs)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .ok()
}

/// Unix seconds of an RFC 3339 time (`2026-12-01T11:22:33.123456Z`, as Jupyter writes it).
pub fn unix_of(text: &str) -> Option<i64> {
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
        .ok()
        .map(|t| t.secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_down_report_says_what_failed_of_which_seat() {
        let mut seat = DownReport::new(Target::Ec2, "c-3", Some("us-east-1".into()));
        seat.removed.push("instance i-3".into());
        seat.failures
            .push("AWS ec2:DeleteVolume failed for vol-3".into());
        let mut class = DownReport::new(Target::Ec2, "c", None);
        class.absorb(seat);
        let text = class.to_string();
        assert!(
            text.contains("removed  `c-3` in us-east-1: instance i-3"),
            "{text}"
        );
        assert!(
            text.contains("failed   `c-3` in us-east-1: AWS ec2:DeleteVolume failed for vol-3"),
            "{text}"
        );
    }

    #[test]
    fn times_as_docker_and_jupyter_write_them() {
        assert_eq!(
            unix_of("2026-12-01T13:15:06.123456789Z"),
            Some(1_796_130_906)
        );
        assert_eq!(unix_of("2026-12-01T13:15:06.123456Z"), Some(1_796_130_906));
        assert_eq!(unix_of("0001-01-01T00:00:00Z").filter(|t| *t > 0), None);
        assert_eq!(
            rfc3339(1_796_130_906).as_deref(),
            Some("2026-12-01T13:15:06Z")
        );
    }

    fn row(target: Target, name: &str) -> DeploymentStatus {
        DeploymentStatus {
            target,
            name: name.into(),
            state: "running".into(),
            image: Some("ctx-0123".into()),
            url: Some("http://127.0.0.1:8888/lab".into()),
            age_seconds: Some(30),
            container: Some(format!("labship-{name}")),
            region: None,
            instance_id: None,
            instance_type: None,
            public_ip: None,
            note: None,
            data_volume: None,
            spot: None,
            interrupted: None,
            life: HostLife::default(),
            seat: None,
        }
    }

    #[test]
    fn status_totals_a_class_by_state() {
        let seat = |name: &str, seat: &str, state: &str| {
            let mut d = row(Target::Local, name);
            d.state = state.into();
            d.seat = Some(SeatOf {
                class: "ds".into(),
                seat: seat.into(),
                student: None,
                email: None,
                host: None,
            });
            d
        };
        let report = StatusReport {
            deployments: vec![
                seat("ds-1", "1", "running"),
                seat("ds-2", "2", "running"),
                seat("ds-3", "3", "down"),
                row(Target::Local, "solo"),
            ],
            not_checked: vec![],
        };
        let text = report.to_string();
        assert!(
            text.contains("class `ds` on local: 3 seats (1 down, 2 running)"),
            "{text}"
        );
    }

    #[test]
    fn status_is_one_table_for_every_target() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 86_400), "3d");
        let mut ec2 = row(Target::Ec2, "big");
        ec2.container = None;
        ec2.instance_id = Some("i-0abc".into());
        ec2.instance_type = Some("t3.medium".into());
        ec2.region = Some("eu-west-1".into());
        ec2.life.stops_in_seconds = Some(23 * 60);
        ec2.life.stops_because = Some("idle".into());
        ec2.life.idle_seconds = Some(7 * 60);
        ec2.url = Some("http://203.0.113.7:8888/lab".into());
        let report = StatusReport {
            deployments: vec![row(Target::Local, "lab"), ec2],
            not_checked: vec![],
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME  TARGET  STATE"), "{text}");
        assert!(
            lines[1].contains("lab   local   running  labship-lab")
                && lines[1].contains("http://127.0.0.1:8888/lab")
                && lines[1].ends_with("30s  -     -"),
            "{text}"
        );
        assert!(lines[2].contains("i-0abc t3.medium eu-west-1"), "{text}");
        assert!(lines[2].ends_with("30s  7m    in 23m (idle)"), "{text}");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["deployments"][0]["target"], "local");
        assert_eq!(json["deployments"][1]["target"], "ec2");
        // One shape: every row has every key.
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        assert_eq!(keys(&json["deployments"][0]), keys(&json["deployments"][1]));
    }

    #[test]
    fn options_a_target_cannot_honour_are_refused() {
        let attach = UpOptions {
            attach: true,
            ..UpOptions::default()
        };
        assert!(attach.refuse(Target::Local, &[]).is_ok());
        let err = attach.refuse(Target::Ec2, &[]).unwrap_err().to_string();
        assert!(err.contains("--attach"), "{err}");
        let public = UpOptions {
            public: true,
            ..UpOptions::default()
        };
        assert!(public.refuse(Target::Ec2, &[]).is_ok());
        assert!(public.refuse(Target::Local, &[]).is_err());
        assert!(UpOptions::default()
            .refuse(Target::Local, &["--ttl"])
            .is_err());
    }

    #[test]
    fn planned_actions_name_what_up_reports() {
        assert_eq!(PlannedAction::Create.done(), UpAction::Created);
        assert_eq!(PlannedAction::Nothing.done(), UpAction::Unchanged);
        assert_eq!(serde_plain(&PlannedAction::Replace), "replace");
        assert_eq!(serde_plain(&UpAction::Replaced), "replaced");
    }
}
