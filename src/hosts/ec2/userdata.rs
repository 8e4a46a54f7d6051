//! The scripts a labship EC2 host runs: the user-data of its first boot and the replace
//! script sent later through SSM RunCommand, rendered from the templates in `userdata/`
//! (embedded in the binary), and the parser for the progress markers they print.
//!
//! In the pipeline: `push` has put (or is still putting) the image in ECR; `up` launches an
//! instance with [`render_boot`] as its user-data. The script sets Docker up (a fragment per
//! [`HostKind`]), logs in to ECR with the instance profile, pulls the image (retrying while
//! the push finishes), runs Jupyter on the workspace volume and relays the login URL. Each
//! step ends with a short marker line that cloud-init copies to the serial console, where
//! `up` follows it with GetConsoleOutput and [`markers`]:
//!
//! ```text
//! labship: begin t=1732200000.123
//! labship: docker-ready t=...      labship: logged-in t=...     labship: pulled t=...
//! labship: started t=...
//! labship: tls sha256=AB:CD:...      (the certificate Jupyter serves, pinned by labship)
//! labship: token path=/lab source=labship
//! labship: ready t=...
//! labship: error phase=pull docker pull: ... manifest unknown (gave up after 900s)
//! ```
//!
//! A later `up` with a new image sends [`render_replace`] through SSM: same markers (except
//! `begin` and `docker-ready`), written to the command's output and to `/dev/console`, and
//! the old container is put back if the new one does not become ready.
//!
//! # Templates
//!
//! `{{NAME}}` (`NAME` = `[A-Z][A-Z0-9_]*`) is a placeholder. `{{COMMON}}` and
//! `{{HOST_SETUP}}` splice in `userdata/common.sh` and the host kind's Docker fragment; every
//! other placeholder becomes one shell word, single-quoted, from a value validated first.
//! Any other `{{` is an error, so a Go template for `docker --format` is written with
//! adjacent quoted strings, `'{''{.Config.WorkingDir}}'`, which the shell joins into
//! `{{.Config.WorkingDir}}`; no `{{` ever appears in a template's text or in the output.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// EC2's limit on user-data, in bytes before base64. The boot script goes gzipped
/// ([`gzip`]; cloud-init unpacks it), and that is what is held to this.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// labship's own bound on a rendered script as text (the replace script goes through SSM
/// RunCommand as text).
pub const MAX_SCRIPT_BYTES: usize = 48 * 1024;

/// The label on the container and the workspace volume; its value is the deployment.
pub const DEPLOYMENT_LABEL: &str = "dev.labship.ec2.deployment";

const BOOT: &str = include_str!("../../../userdata/boot.sh");
const REPLACE: &str = include_str!("../../../userdata/replace.sh");
const COMMON: &str = include_str!("../../../userdata/common.sh");
const JOB: &str = include_str!("../../../userdata/job.sh");
const DOCKER_AL2023: &str = include_str!("../../../userdata/docker-al2023.sh");
const DOCKER_ECS: &str = include_str!("../../../userdata/docker-ecs.sh");
const DOCKER_ANY: &str = include_str!("../../../userdata/docker-any.sh");

/// Longest deadline a script accepts (a day): every wait on the host stays bounded.
const MAX_DEADLINE_SECS: u64 = 24 * 60 * 60;

/// What the host's AMI is, which decides how the boot script gets Docker running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    /// The standard Amazon Linux 2023 AMI: `dnf install docker`, then start it.
    Al2023,
    /// The ECS-optimized Amazon Linux 2023 AMI: Docker is preinstalled; the ECS agent is
    /// stopped so that the host does not try to join a cluster.
    EcsAl2023,
    /// A custom AMI: Docker is installed with dnf, yum or apt-get when missing; the AMI
    /// must bring the AWS CLI.
    Custom,
}

impl HostKind {
    /// The name used in JSON and logs: `al2023`, `ecsal2023`, `custom`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Al2023 => "al2023",
            HostKind::EcsAl2023 => "ecsal2023",
            HostKind::Custom => "custom",
        }
    }

    fn docker_fragment(self) -> &'static str {
        match self {
            HostKind::Al2023 => DOCKER_AL2023,
            HostKind::EcsAl2023 => DOCKER_ECS,
            HostKind::Custom => DOCKER_ANY,
        }
    }
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the scripts need to know about one deployment.
///
/// Jupyter listens on `container_port` inside the container; Docker publishes it on
/// `bind:port` of the host. The script checks Jupyter through the host port (on 127.0.0.1
/// when `bind` is `0.0.0.0`, `[::1]` when it is `::`), while the token URL it relays is
/// the one Jupyter logged, with the container's port.
#[derive(Debug, Clone, Copy)]
pub struct UserDataInputs<'a> {
    /// The deployment's name: `[a-z0-9-]{1,32}`. The container is `labship-ec2-NAME`, the
    /// workspace volume `labship-ec2-NAME-work`. On a host of several seats: the first seat,
    /// whose name the host's own files (lock, watchdog, certificate) take.
    pub deployment: &'a str,
    /// The seats of a class this host serves, in slot order (boot script only; empty: the
    /// one deployment). The seat of slot N has its own container, volume, sealed token and
    /// markers (`labship: seat=NAME ...`), port `port + N` and data volume device
    /// `/dev/sd` + the Nth letter from `f`; the first is `deployment`. At most
    /// [`MAX_SEATS_PER_HOST`].
    pub seats: &'a [&'a str],
    /// The AWS region of the registry, passed to `aws ecr get-login-password --region`.
    pub region: &'a str,
    /// The registry to log in to: `host[:port]`, e.g. `123456789012.dkr.ecr.eu-west-1.amazonaws.com`.
    pub registry: &'a str,
    /// The full image reference, `REGISTRY/repository:tag` (or `@sha256:...`).
    pub image: &'a str,
    /// How the host gets Docker (boot script only).
    pub host_kind: HostKind,
    /// The host address Jupyter's port is published on (`127.0.0.1`, `0.0.0.0`, ...).
    pub bind: IpAddr,
    /// The host port.
    pub port: u16,
    /// The port Jupyter listens on inside the container (8888 for Jupyter's images).
    pub container_port: u16,
    /// How long the host keeps retrying `docker pull` (the push may still be running).
    pub pull_deadline_secs: u64,
    /// How long the host waits for Jupyter's token URL and for Jupyter to answer.
    pub jupyter_deadline_secs: u64,
    /// Stop the host after this long without activity in Jupyter (0: never).
    pub idle_stop_secs: u64,
    /// Stop the host this long after its boot (0: never).
    pub ttl_secs: u64,
    /// The workspace lives on the deployment's data volume, which labship attaches (the
    /// host waits for it, formats it the first time and mounts it).
    pub data_volume: bool,
    /// The `[data] inputs` the host copies with its role and mounts read-only at
    /// `<workdir>/inputs` (`inputs.tsv` lines: kind, name, bucket region, address); empty:
    /// none; [`KEEP_INPUTS`]: those the host has (a token rotation).
    pub inputs: &'a str,
    /// Each seat's container's memory and CPU limits (a host several seats share; none: the
    /// engine's default, no limit).
    pub limits: crate::hosts::Limits,
}

/// The most seats one host serves (their data volumes are `/dev/sdf` to `/dev/sdm`).
pub const MAX_SEATS_PER_HOST: usize = 8;

/// The inputs of a script that keeps those the host has.
pub const KEEP_INPUTS: &str = "-";
/// The inputs id of no inputs.
pub const NO_INPUTS: &str = "none";

/// What identifies a list of inputs on an instance's tag and its container's label: the
/// first 16 hex digits of its SHA-256, or [`NO_INPUTS`].
#[must_use]
pub fn inputs_id(inputs: &str) -> String {
    use sha2::Digest as _;
    if inputs.is_empty() {
        return NO_INPUTS.into();
    }
    hex::encode(sha2::Sha256::digest(inputs.as_bytes()))[..16].to_string()
}

/// Why a script could not be rendered.
#[derive(Debug, Error, Diagnostic)]
pub enum UserDataError {
    /// A value is outside what may be put in a script.
    #[error("invalid {field} `{value}` for the EC2 host script: {reason}")]
    #[diagnostic(code(labship::ec2::userdata::invalid), help("{hint}"))]
    Invalid {
        /// Which input.
        field: &'static str,
        /// The value, escaped and shortened for display.
        value: String,
        /// What is wrong with it.
        reason: String,
        /// What a valid value looks like.
        hint: &'static str,
    },
    /// A template holds a placeholder the renderer does not know (a bug in labship).
    #[error("the EC2 host script template {template} has an unknown placeholder `{{{{{name}}}}}`")]
    #[diagnostic(
        code(labship::ec2::userdata::placeholder),
        help("placeholders are {{{{NAME}}}} with a known NAME; write a literal double brace as '{{''{{'")
    )]
    UnknownPlaceholder {
        /// The template's file name.
        template: &'static str,
        /// The text between the braces.
        name: String,
    },
    /// The rendered script is larger than EC2 (or labship) accepts.
    #[error("the rendered {template} is {size} bytes {form}; it may be at most {limit} bytes")]
    #[diagnostic(
        code(labship::ec2::userdata::too_large),
        help("shorten the image reference or the registry name")
    )]
    TooLarge {
        /// The template's file name.
        template: &'static str,
        /// The rendered size in bytes.
        size: usize,
        /// `gzipped` (EC2 user-data) or `as text`.
        form: &'static str,
        /// [`MAX_USER_DATA_BYTES`] or [`MAX_SCRIPT_BYTES`].
        limit: usize,
    },
}

/// The container a deployment's Jupyter runs in on its host.
#[must_use]
pub fn container_name(deployment: &str) -> String {
    format!("labship-ec2-{deployment}")
}

/// The Docker volume that holds a deployment's workspace on its host.
#[must_use]
pub fn volume_name(deployment: &str) -> String {
    format!("labship-ec2-{deployment}-work")
}

/// CPUs as `docker run --cpus` takes them: at most 9 decimals (its precision), no trailing
/// zeros (`1`, `0.5`).
fn cpus_text(cpus: f64) -> String {
    let text = format!("{cpus:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The user-data for a new instance: `userdata/boot.sh` with the Docker fragment of
/// `inputs.host_kind`, as text; RunInstances gets it [`gzip`]ped, at most
/// [`MAX_USER_DATA_BYTES`].
///
/// # Errors
///
/// [`UserDataError::Invalid`] for a value outside its charset or range (nothing is ever
/// put in the script unchecked), [`UserDataError::TooLarge`] above the size limit.
pub fn render_boot(inputs: &UserDataInputs) -> Result<String, UserDataError> {
    if inputs.data_volume && inputs.seats.len() > 1 && inputs.host_kind == HostKind::Custom {
        return Err(invalid(
            "seats",
            &inputs.seats.join(" "),
            "on a custom AMI the host cannot tell its seats' data volumes apart (it finds an \
             EBS disk by its /dev/sdX name, which only Amazon Linux's udev rules give NVMe disks)"
                .into(),
            "use the al2023 or ecs host AMI for several seats per instance, or one seat per instance",
        ));
    }
    user_data(
        "userdata/boot.sh",
        render("userdata/boot.sh", BOOT, inputs, Script::Boot)?,
    )
}

/// `text`, when it fits EC2's user-data limit once gzipped.
fn user_data(template: &'static str, text: String) -> Result<String, UserDataError> {
    let size = gzip(&text).len();
    if size > MAX_USER_DATA_BYTES {
        return Err(UserDataError::TooLarge {
            template,
            size,
            form: "gzipped",
            limit: MAX_USER_DATA_BYTES,
        });
    }
    Ok(text)
}

/// The user-data of one RunInstances that launches several seats of a class at once: their
/// boot scripts ([`render_boot`], in launch-index order), which may differ only in
/// `NAME=...` or `readonly NAME=...` lines (the deployment's name, its seats, container and
/// volume), become one script in which each instance takes the lines of its launch index,
/// read from the instance metadata service (IMDSv2, the only one labship's instances answer)
/// before anything else.
///
/// None when there are fewer than two scripts, when they differ in any other line (nothing
/// is guessed: those seats launch on their own), or when the result does not fit EC2's
/// user-data limit once gzipped.
#[must_use]
pub fn batch(scripts: &[String]) -> Option<String> {
    let [first, rest @ ..] = scripts else {
        return None;
    };
    if rest.is_empty() {
        return None;
    }
    let lines: Vec<Vec<&str>> = scripts.iter().map(|s| s.lines().collect()).collect();
    let base = &lines[0];
    if lines.iter().any(|l| l.len() != base.len()) {
        return None;
    }
    let differing: Vec<usize> = (0..base.len())
        .filter(|&n| lines.iter().any(|l| l[n] != base[n]))
        .collect();
    let first_differing = *differing.first()?;
    // Each differing line assigns the same name in every script.
    for &n in &differing {
        let name = assigned_name(base[n])?;
        if lines.iter().any(|l| assigned_name(l[n]) != Some(name)) {
            return None;
        }
    }
    let mut out = String::with_capacity(first.len() + 64 * scripts.len());
    for (n, line) in base.iter().enumerate() {
        if n == first_differing {
            out.push_str(BATCH_PRELUDE);
            out.push_str("case \"$LAUNCH_INDEX\" in\n");
            for (index, seat) in lines.iter().enumerate() {
                let assignments: Vec<&str> = differing.iter().map(|&d| seat[d]).collect();
                out.push_str(&format!("{index}) {} ;;\n", assignments.join("; ")));
            }
            out.push_str(
                "*) echo \"labship: error phase=boot no seat of this launch has index $LAUNCH_INDEX\"; exit 1 ;;\nesac\n",
            );
        }
        if !differing.contains(&n) {
            out.push_str(line);
            out.push('\n');
        }
    }
    (gzip(&out).len() <= MAX_USER_DATA_BYTES).then_some(out)
}

/// `NAME` of a line `NAME=...` or `readonly NAME=...`.
fn assigned_name(line: &str) -> Option<&str> {
    let (name, _) = line
        .strip_prefix("readonly ")
        .unwrap_or(line)
        .split_once('=')?;
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
    .then_some(name)
}

/// What a batch's script runs first: the instance's launch index, from IMDSv2 (a session
/// token, then the metadata), tried for up to about two minutes while the service starts.
const BATCH_PRELUDE: &str = r#"# One user-data for several seats: this instance's launch index picks its seat.
launch_index() {
    local token tries
    for ((tries = 0; tries < 60; tries++)); do
        if token=$(curl -fsS -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
            http://169.254.169.254/latest/api/token) &&
            curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" \
                http://169.254.169.254/latest/meta-data/ami-launch-index; then
            return 0
        fi
        sleep 2
    done
    return 1
}
if ! LAUNCH_INDEX=$(launch_index); then
    echo "labship: error phase=boot the instance metadata service gave no launch index"
    exit 1
fi
readonly LAUNCH_INDEX
"#;

/// The user-data as RunInstances gets it: gzip, which cloud-init recognises and unpacks
/// (EC2's 16 KiB limit applies to these bytes).
#[must_use]
pub fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(text.as_bytes());
    encoder.finish().unwrap_or_default()
}

/// The script that replaces the Jupyter container of a running host with `inputs.image`
/// (send it as the `commands` of AWS-RunShellScript; its first line is `#!/bin/bash`).
/// `inputs.host_kind` is not used. Held to [`MAX_SCRIPT_BYTES`].
///
/// It can run for up to about 3 minutes (login) + `pull_deadline_secs` +
/// `jupyter_deadline_secs` + 1 minute: give the command an execution timeout above that.
///
/// # Errors
///
/// As [`render_boot`].
pub fn render_replace(inputs: &UserDataInputs) -> Result<String, UserDataError> {
    render("userdata/replace.sh", REPLACE, inputs, Script::Replace)
}

/// The replace script of one seat of a host several seats share: `inputs` describe the host
/// as its boot script does (`deployment` its first seat, whose name the host's lock,
/// watchdog and certificate take; `seats` all of them; `port` the first seat's), and `seat`
/// (one of `inputs.seats`) is the seat whose container is put in place, on the port and
/// data volume the host gave its slot. The other seats' containers are not touched; the
/// watchdog, which watches every seat, is installed with `inputs`' idle stop and TTL.
/// `recreate`: a new container even when the running one has the image (a rotated token),
/// with the memory and CPU limits the running one has when `inputs.limits` gives none.
///
/// # Errors
///
/// As [`render_boot`], and [`UserDataError::Invalid`] when `seat` is not one of the seats.
pub fn render_seat_replace(
    inputs: &UserDataInputs,
    seat: &str,
    recreate: bool,
) -> Result<String, UserDataError> {
    check_seat_of(inputs, seat)?;
    let script = if recreate {
        Script::RecreateSeat(seat)
    } else {
        Script::ReplaceSeat(seat)
    };
    render("userdata/replace.sh", REPLACE, inputs, script)
}

/// The script that takes `seat` off a host several seats share while the others stay
/// (`down --seat`; `inputs` describe the host as in [`render_seat_replace`]): its
/// containers and Docker volume removed, its data volume unmounted and out of fstab (for
/// labship to detach), its token file and state removed, and the watchdog no longer
/// watching it. Sent again, it finds nothing left to do.
///
/// # Errors
///
/// As [`render_seat_replace`].
pub fn render_seat_leave(inputs: &UserDataInputs, seat: &str) -> Result<String, UserDataError> {
    check_seat_of(inputs, seat)?;
    render("userdata/replace.sh", REPLACE, inputs, Script::Leave(seat))
}

fn check_seat_of(inputs: &UserDataInputs, seat: &str) -> Result<(), UserDataError> {
    if inputs.seats.contains(&seat) {
        return Ok(());
    }
    Err(invalid(
        "seat",
        seat,
        format!(
            "it is not one of the host's seats `{}`",
            inputs.seats.join(" ")
        ),
        "name a seat of the host",
    ))
}

/// The replace script that starts a new container even when the running one already has
/// `inputs.image` (`token --rotate`: the new container reads the new sealed token; the
/// workspace volume is kept, and the old container is put back if the new one fails).
///
/// # Errors
///
/// As [`render_boot`].
pub fn render_recreate(inputs: &UserDataInputs) -> Result<String, UserDataError> {
    render("userdata/replace.sh", REPLACE, inputs, Script::Recreate)
}

/// Everything a job host's script (`userdata/job.sh`) needs: the image, and where the job
/// is and its results go.
#[derive(Debug, Clone, Copy)]
pub struct JobHostInputs<'a> {
    /// `run-<run id>`: names the host's lock and log, as a deployment's name does.
    pub name: &'a str,
    /// The registry's region, and the registry and image as [`UserDataInputs`] has them.
    pub region: &'a str,
    pub registry: &'a str,
    pub image: &'a str,
    pub host_kind: HostKind,
    pub pull_deadline_secs: u64,
    /// The run's folder in S3, `s3://bucket/prefix/<run id>/`, and its bucket's region.
    pub job_uri: &'a str,
    pub job_region: &'a str,
    /// The job's deadline.
    pub timeout_secs: u64,
}

/// How long a job host may live from its boot, in minutes: the pull, the inputs, the job
/// with its grace, and the upload of the results (at most 30 minutes each besides the job).
#[must_use]
pub fn job_host_deadline_min(pull_deadline_secs: u64, timeout_secs: u64) -> u64 {
    (pull_deadline_secs + timeout_secs + 60 + 2 * 30 * 60).div_ceil(60)
}

/// The user-data of a job host, as text (RunInstances gets it [`gzip`]ped, at most
/// [`MAX_USER_DATA_BYTES`]).
///
/// # Errors
///
/// As [`render_boot`].
pub fn render_job(inputs: &JobHostInputs) -> Result<String, UserDataError> {
    // The values a deployment's script would have, checked the same way.
    let deployment_like = UserDataInputs {
        deployment: inputs.name,
        seats: &[],
        region: inputs.region,
        registry: inputs.registry,
        image: inputs.image,
        host_kind: inputs.host_kind,
        bind: IpAddr::from([127, 0, 0, 1]),
        port: 1,
        container_port: 1,
        pull_deadline_secs: inputs.pull_deadline_secs,
        jupyter_deadline_secs: 1,
        idle_stop_secs: 0,
        ttl_secs: 0,
        data_volume: false,
        inputs: "",
        limits: crate::hosts::Limits::default(),
    };
    let mut values: Vec<(&'static str, String)> = values(&deployment_like)?
        .into_iter()
        .filter(|(n, _)| {
            matches!(
                *n,
                "HOST_KIND" | "DEPLOYMENT" | "REGISTRY" | "IMAGE" | "PULL_DEADLINE"
            )
        })
        .collect();
    check_region(inputs.job_region)?;
    if !inputs.job_uri.starts_with("s3://")
        || !inputs.job_uri.ends_with('/')
        || inputs.job_uri.bytes().any(|b| b.is_ascii_control())
    {
        return Err(invalid(
            "job address",
            inputs.job_uri,
            "it is not an S3 folder address without control characters".into(),
            "s3://bucket/prefix/<run id>/",
        ));
    }
    if inputs.timeout_secs == 0 || inputs.timeout_secs > 30 * MAX_DEADLINE_SECS {
        return Err(invalid(
            "job deadline",
            &inputs.timeout_secs.to_string(),
            "a job's deadline must be 1 second to 30 days".into(),
            "give --timeout a duration from 1s to 30d",
        ));
    }
    values.extend([
        ("REGISTRY_REGION", inputs.region.to_string()),
        ("JOB_URI", inputs.job_uri.to_string()),
        ("JOB_REGION", inputs.job_region.to_string()),
        ("TIMEOUT", inputs.timeout_secs.to_string()),
        (
            "HOST_DEADLINE_MIN",
            job_host_deadline_min(inputs.pull_deadline_secs, inputs.timeout_secs).to_string(),
        ),
    ]);
    user_data(
        "userdata/job.sh",
        render_values("userdata/job.sh", JOB, inputs.host_kind, &values)?,
    )
}

/// Which script [`render`] makes of its template, and for which seat of a shared host.
#[derive(Clone, Copy)]
enum Script<'a> {
    Boot,
    Replace,
    Recreate,
    ReplaceSeat(&'a str),
    RecreateSeat(&'a str),
    Leave(&'a str),
}

fn render(
    template_name: &'static str,
    template: &str,
    inputs: &UserDataInputs,
    script: Script,
) -> Result<String, UserDataError> {
    let mut values = values(inputs)?;
    let (recreate, seat, leave) = match script {
        Script::Boot | Script::Replace => (false, "", false),
        Script::Recreate => (true, "", false),
        Script::ReplaceSeat(seat) => (false, seat, false),
        Script::RecreateSeat(seat) => (true, seat, false),
        Script::Leave(seat) => (false, seat, true),
    };
    values.push(("RECREATE", u8::from(recreate).to_string()));
    values.push(("SEAT", seat.to_string()));
    values.push(("LEAVE", u8::from(leave).to_string()));
    // A replace travels as text through SSM: past its first two lines (`#!/bin/bash` and
    // what it is), its comments stay in userdata/replace.sh (the boot script goes gzipped,
    // and keeps them).
    let lean;
    let template = if template_name == "userdata/replace.sh" {
        let header = template
            .lines()
            .take(2)
            .map(|l| l.len() + 1)
            .sum::<usize>()
            .min(template.len());
        let (head, body) = template.split_at(header);
        lean = format!("{head}{}", without_comment_lines(body));
        lean.as_str()
    } else {
        template
    };
    render_values(template_name, template, inputs.host_kind, &values)
}

/// `template` with COMMON and the host kind's fragment spliced in and every other
/// placeholder replaced by its value in `values`, quoted.
fn render_values(
    template_name: &'static str,
    template: &str,
    host_kind: HostKind,
    values: &[(&'static str, String)],
) -> Result<String, UserDataError> {
    let fragment = host_kind.docker_fragment();
    let spliced = expand(
        template_name,
        template,
        |name| match name {
            "COMMON" => Some(Cow::Owned(without_comment_lines(COMMON))),
            "HOST_SETUP" => Some(Cow::Owned(without_comment_lines(fragment))),
            _ => None,
        },
        Unknown::Keep,
    )?;
    let rendered = expand(
        template_name,
        &spliced,
        |name| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| Cow::Owned(sh_quote(v)))
        },
        Unknown::Reject,
    )?;
    if let Some(at) = rendered.find("{{") {
        return Err(UserDataError::UnknownPlaceholder {
            template: template_name,
            name: rendered[at..].chars().take(40).collect(),
        });
    }
    if rendered.len() > MAX_SCRIPT_BYTES {
        return Err(UserDataError::TooLarge {
            template: template_name,
            size: rendered.len(),
            form: "as text",
            limit: MAX_SCRIPT_BYTES,
        });
    }
    Ok(rendered)
}

/// A fragment without its whole-line comments and its indentation: the helpers are
/// documented in `userdata/`, and EC2's 16 KiB limit is better spent on code. (The fragments
/// hold no heredoc or multi-line string, where a line starting with `#` or its leading
/// blanks would be data.)
fn without_comment_lines(fragment: &str) -> String {
    fragment
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The placeholder values, validated, unquoted.
fn values(inputs: &UserDataInputs) -> Result<Vec<(&'static str, String)>, UserDataError> {
    check_deployment(inputs.deployment)?;
    check_region(inputs.region)?;
    let reference_hint = "a registry host[:port] and an image reference REGISTRY/repository:tag, \
                          made of A-Z a-z 0-9 . _ : / @ -";
    check_word(
        "registry",
        inputs.registry,
        255,
        is_reference_byte,
        reference_hint,
    )?;
    check_word(
        "image",
        inputs.image,
        usize::MAX,
        is_reference_byte,
        reference_hint,
    )?;
    let in_registry = inputs
        .image
        .strip_prefix(inputs.registry)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty());
    if !in_registry {
        return Err(invalid(
            "image",
            inputs.image,
            format!(
                "it is not in the registry `{}` the host logs in to",
                inputs.registry
            ),
            "the image reference must start with REGISTRY/",
        ));
    }
    for (field, port) in [
        ("port", inputs.port),
        ("container port", inputs.container_port),
    ] {
        if port == 0 {
            return Err(invalid(
                field,
                "0",
                "a port must be 1-65535".into(),
                "pick a port from 1 to 65535",
            ));
        }
    }
    for (field, secs) in [
        ("pull deadline", inputs.pull_deadline_secs),
        ("Jupyter deadline", inputs.jupyter_deadline_secs),
    ] {
        if secs == 0 || secs > MAX_DEADLINE_SECS {
            return Err(invalid(
                field,
                &secs.to_string(),
                format!("a deadline must be 1 to {MAX_DEADLINE_SECS} seconds"),
                "give the host a deadline of at least a second and at most a day",
            ));
        }
    }

    if inputs
        .inputs
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n')
    {
        return Err(invalid(
            "inputs",
            inputs.inputs,
            "an input's line holds a control character".into(),
            "give inputs whose addresses hold no control characters",
        ));
    }
    check_seats(inputs)?;
    let (bind, host_addr) = match inputs.bind {
        IpAddr::V4(v4) if v4.is_unspecified() => (v4.to_string(), "127.0.0.1".to_string()),
        IpAddr::V4(v4) => (v4.to_string(), v4.to_string()),
        IpAddr::V6(v6) if v6.is_unspecified() => (format!("[{v6}]"), "[::1]".to_string()),
        IpAddr::V6(v6) => (format!("[{v6}]"), format!("[{v6}]")),
    };
    Ok(vec![
        ("HOST_KIND", inputs.host_kind.as_str().to_string()),
        ("DEPLOYMENT", inputs.deployment.to_string()),
        ("SEATS", inputs.seats.join(" ")),
        ("REGION", inputs.region.to_string()),
        ("REGISTRY", inputs.registry.to_string()),
        ("IMAGE", inputs.image.to_string()),
        ("CONTAINER", container_name(inputs.deployment)),
        ("VOLUME", volume_name(inputs.deployment)),
        ("LABEL", DEPLOYMENT_LABEL.to_string()),
        ("BIND", bind),
        ("HOST_ADDR", host_addr),
        ("PORT", inputs.port.to_string()),
        ("CONTAINER_PORT", inputs.container_port.to_string()),
        (
            "SEAT_MEMORY",
            inputs
                .limits
                .memory_mib
                .map_or_else(String::new, |m| m.to_string()),
        ),
        (
            "SEAT_CPUS",
            inputs.limits.cpus.map_or_else(String::new, cpus_text),
        ),
        ("PULL_DEADLINE", inputs.pull_deadline_secs.to_string()),
        ("JUPYTER_DEADLINE", inputs.jupyter_deadline_secs.to_string()),
        ("IDLE_STOP", inputs.idle_stop_secs.to_string()),
        ("TTL", inputs.ttl_secs.to_string()),
        ("DATA_VOLUME", u8::from(inputs.data_volume).to_string()),
        ("INPUTS", inputs.inputs.to_string()),
        (
            "INPUTS_ID",
            match inputs.inputs {
                KEEP_INPUTS => KEEP_INPUTS.to_string(),
                list => inputs_id(list),
            },
        ),
    ])
}

/// The seats of a host of several: valid names, the first the host's deployment, no name
/// twice, at most [`MAX_SEATS_PER_HOST`], and a port for each.
fn check_seats(inputs: &UserDataInputs) -> Result<(), UserDataError> {
    let seats = inputs.seats;
    if seats.is_empty() {
        return Ok(());
    }
    for seat in seats {
        check_deployment(seat)?;
    }
    let list = seats.join(" ");
    if seats.len() > MAX_SEATS_PER_HOST {
        return Err(invalid(
            "seats",
            &list,
            format!(
                "{} seats on one host; a host serves at most {MAX_SEATS_PER_HOST}",
                seats.len()
            ),
            "give each host at most 8 seats",
        ));
    }
    if seats[0] != inputs.deployment {
        return Err(invalid(
            "seats",
            &list,
            format!(
                "the first seat is not the host's deployment `{}`",
                inputs.deployment
            ),
            "list the host's seats starting with its deployment",
        ));
    }
    if let Some(twice) = seats
        .iter()
        .enumerate()
        .find_map(|(n, s)| seats[..n].contains(s).then_some(*s))
    {
        return Err(invalid(
            "seats",
            &list,
            format!("the seat `{twice}` is listed twice"),
            "list each seat once",
        ));
    }
    if usize::from(inputs.port) + seats.len() - 1 > usize::from(u16::MAX) {
        return Err(invalid(
            "port",
            &inputs.port.to_string(),
            format!(
                "{} seats take the ports from {} on, past 65535",
                seats.len(),
                inputs.port
            ),
            "pick a lower port",
        ));
    }
    Ok(())
}

fn is_reference_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'@' | b'-')
}

fn check_region(value: &str) -> Result<(), UserDataError> {
    check_word(
        "region",
        value,
        32,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
        "an AWS region such as eu-west-1 (a-z, 0-9 and -)",
    )
}

fn check_deployment(value: &str) -> Result<(), UserDataError> {
    check_word(
        "deployment name",
        value,
        32,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
        "a deployment name is 1-32 characters of a-z, 0-9 and -",
    )
}

/// A non-empty value of at most `max_len` allowed bytes that does not start with `-`
/// (it would read as an option to docker or aws).
fn check_word(
    field: &'static str,
    value: &str,
    max_len: usize,
    allowed: fn(u8) -> bool,
    hint: &'static str,
) -> Result<(), UserDataError> {
    if value.is_empty() {
        return Err(invalid(field, value, "it is empty".into(), hint));
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii() || !allowed(*c as u8)) {
        return Err(invalid(
            field,
            value,
            format!("the character {bad:?} is not allowed"),
            hint,
        ));
    }
    if value.starts_with('-') {
        return Err(invalid(field, value, "it starts with `-`".into(), hint));
    }
    if value.len() > max_len {
        return Err(invalid(
            field,
            value,
            format!("it is longer than {max_len} characters"),
            hint,
        ));
    }
    Ok(())
}

fn invalid(field: &'static str, value: &str, reason: String, hint: &'static str) -> UserDataError {
    let mut shown: String = value.escape_debug().take(80).collect();
    if value.escape_debug().nth(80).is_some() {
        shown.push_str("...");
    }
    UserDataError::Invalid {
        field,
        value: shown,
        reason,
        hint,
    }
}

/// One shell word: `'...'`, with any `'` written as `'\''`.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unknown {
    /// Leave an unknown `{{NAME}}` for a later pass.
    Keep,
    /// An unknown `{{NAME}}` is an error.
    Reject,
}

/// Replaces each `{{NAME}}` by `lookup(NAME)`, in one pass (substituted text is not scanned
/// again). A `{{` that does not open a well-formed placeholder is always an error.
fn expand<'t>(
    template_name: &'static str,
    text: &str,
    lookup: impl Fn(&str) -> Option<Cow<'t, str>>,
    unknown: Unknown,
) -> Result<String, UserDataError> {
    let mut out = String::with_capacity(text.len() + 4096);
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}");
        let name = close.map_or(after, |c| &after[..c]);
        let well_formed = close.is_some()
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let (Some(close), true) = (close, well_formed) else {
            return Err(UserDataError::UnknownPlaceholder {
                template: template_name,
                name: name.chars().take(40).collect(),
            });
        };
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None if unknown == Unknown::Keep => out.push_str(&rest[open..open + 2 + close + 2]),
            None => {
                return Err(UserDataError::UnknownPlaceholder {
                    template: template_name,
                    name: name.to_string(),
                })
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};

    use super::super::console::{markers, Marker, MarkerKind, Phase};
    use super::*;

    const REGISTRY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    const IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/labship/demo:ctx-0123abcd";
    const PASSWORD: &str = "stub-ecr-password-4b1d";
    const OLD_TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";
    const NEW_TOKEN: &str = "8a6cbd3f0e4f4b2a9c1d7e5f3a2b1c0d9e8f7a6b5c4d3e2f";
    /// The token labship sealed in SSM, as the stub `aws ssm get-parameter` gives it.
    const SEALED_TOKEN: &str = "5eb1ed0c4a2b9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e";

    fn inputs(host_kind: HostKind, bind: &str) -> UserDataInputs<'static> {
        UserDataInputs {
            deployment: "demo",
            seats: &[],
            region: "eu-west-1",
            registry: REGISTRY,
            image: IMAGE,
            host_kind,
            bind: bind.parse().expect("test address"),
            port: 8888,
            container_port: 8888,
            pull_deadline_secs: 900,
            jupyter_deadline_secs: 300,
            idle_stop_secs: 3600,
            ttl_secs: 86_400,
            data_volume: false,
            inputs: "",
            limits: crate::hosts::Limits::default(),
        }
    }

    /// Two inputs as `data::Checked::on_host` writes them (a quote in an address).
    const INPUTS: &str = "file\tnotes.txt\teu-west-1\ts3://labship-data/it's/notes.txt\nfolder\tcsv\tus-east-1\ts3://labship-data/csv/\n";

    /// Every script labship can render: 3 host kinds x boot/replace x 2 binds, with and
    /// without inputs.
    fn all_variants() -> Vec<(String, String)> {
        let mut all = Vec::new();
        for kind in [HostKind::Al2023, HostKind::EcsAl2023, HostKind::Custom] {
            for bind in ["0.0.0.0", "127.0.0.1"] {
                let i = inputs(kind, bind);
                let boot = render_boot(&i).expect("boot renders");
                let replace = render_replace(&i).expect("replace renders");
                all.push((format!("boot {kind} {bind}"), boot));
                all.push((format!("replace {kind} {bind}"), replace));
            }
            let with_inputs = UserDataInputs {
                inputs: INPUTS,
                ..inputs(kind, "0.0.0.0")
            };
            let boot = render_boot(&with_inputs).expect("boot renders");
            let replace = render_replace(&with_inputs).expect("replace renders");
            all.push((format!("boot {kind} with inputs"), boot));
            all.push((format!("replace {kind} with inputs"), replace));
            let job = render_job(&job_inputs(kind)).expect("job renders");
            all.push((format!("boot (job host) {kind}"), job));
            all.push((
                format!("boot of a batch of seats {kind}"),
                seats_batch(kind),
            ));
            let packed = render_boot(&UserDataInputs {
                deployment: "lab-1",
                seats: &["lab-1", "lab-2"],
                ..inputs(kind, "0.0.0.0")
            })
            .expect("boot renders");
            all.push((format!("boot of a host of two seats {kind}"), packed));
        }
        all
    }

    /// The user-data of three seats `lab-1`..`lab-3` launched together.
    fn seats_batch(kind: HostKind) -> String {
        let scripts: Vec<String> = ["lab-1", "lab-2", "lab-3"]
            .iter()
            .map(|d| {
                render_boot(&UserDataInputs {
                    deployment: d,
                    ..seat_inputs(kind)
                })
                .expect("boot renders")
            })
            .collect();
        batch(&scripts).expect("seats that differ in their names batch")
    }

    fn job_inputs(host_kind: HostKind) -> JobHostInputs<'static> {
        JobHostInputs {
            name: "run-20261201-161500-ab12",
            region: "us-east-1",
            registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/labship/lab:ctx-1",
            host_kind,
            pull_deadline_secs: 900,
            job_uri: "s3://labship-results/it's here/20261201-161500-ab12/",
            job_region: "eu-west-1",
            timeout_secs: 3600,
        }
    }

    #[test]
    fn inputs_go_into_the_scripts_quoted_with_their_id_and_a_rotation_keeps_the_hosts() {
        let with = UserDataInputs {
            inputs: INPUTS,
            ..inputs(HostKind::Al2023, "0.0.0.0")
        };
        let boot = render_boot(&with).expect("renders");
        assert!(
            boot.contains("s3://labship-data/it'\\''s/notes.txt"),
            "{boot}"
        );
        let id = inputs_id(INPUTS);
        assert_eq!(id.len(), 16);
        assert!(boot.contains(&format!("readonly INPUTS_ID='{id}'")));
        let none = render_boot(&inputs(HostKind::Al2023, "0.0.0.0")).expect("renders");
        assert!(none.contains("readonly INPUTS_ID='none'"));
        let keep = UserDataInputs {
            inputs: KEEP_INPUTS,
            ..inputs(HostKind::Al2023, "0.0.0.0")
        };
        assert!(render_recreate(&keep)
            .expect("renders")
            .contains("readonly INPUTS_ID='-'"));
        let bad = UserDataInputs {
            inputs: "file\tx\tus-east-1\ts3://b/\u{7}\n",
            ..inputs(HostKind::Al2023, "0.0.0.0")
        };
        assert!(render_boot(&bad).is_err(), "a control character is refused");
    }

    #[test]
    fn a_job_hosts_script_ends_the_host_at_its_deadline_and_takes_only_s3_folders() {
        let script = render_job(&job_inputs(HostKind::Al2023)).expect("renders");
        // Pull (15 min), the job (60 min) and a minute's grace, and 30 min each for the
        // inputs and the upload: 136 minutes, scheduled before anything else runs.
        assert!(
            script.contains("readonly HOST_DEADLINE_MIN='136'"),
            "{script}"
        );
        let schedule = script
            .find("shutdown -h \"+$HOST_DEADLINE_MIN\"")
            .expect("schedules its power-off");
        assert!(schedule < script.find("\nnow() {").expect("the helpers"));
        assert!(script.contains(r"readonly JOB_URI='s3://labship-results/it'\''s here/"));
        for bad in [
            "s3://b/run",       // not a folder
            "https://b/run/",   // not S3
            "s3://b/a\nb/run/", // a new line
        ] {
            let inputs = JobHostInputs {
                job_uri: bad,
                ..job_inputs(HostKind::Al2023)
            };
            assert!(render_job(&inputs).is_err(), "{bad:?} is refused");
        }
        let forever = JobHostInputs {
            timeout_secs: 31 * 24 * 3600,
            ..job_inputs(HostKind::Al2023)
        };
        assert!(render_job(&forever).is_err(), "at most 30 days");
    }

    /// `job_time N` of the rendered job script, in bash: the seconds its job gets when it
    /// starts N seconds after the host's deadline was set.
    fn job_time(script: &str, started_after: u64) -> u64 {
        let values: String = script
            .lines()
            .filter(|l| {
                [
                    "readonly TIMEOUT=",
                    "readonly HOST_DEADLINE_MIN=",
                    "readonly UPLOAD_ALLOWANCE=",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let start = script.find("\njob_time() {").expect("job_time");
        let end = start + script[start..].find("\n}\n").expect("its end") + 3;
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -eu\n{values}{}\njob_time {started_after}",
                &script[start..end]
            ))
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a number of seconds")
    }

    #[test]
    fn a_job_whose_pull_and_inputs_ate_into_the_hosts_deadline_gets_what_is_left() {
        let inputs = job_inputs(HostKind::Al2023);
        let script = render_job(&inputs).expect("renders");
        let (pull, timeout) = (inputs.pull_deadline_secs, inputs.timeout_secs);
        // Within the pull's deadline and 30 minutes of inputs: the whole timeout.
        assert_eq!(job_time(&script, 0), timeout);
        assert_eq!(job_time(&script, pull + 1800), timeout);
        // Inputs that took longer: what is left, so that the upload keeps its 30 minutes
        // before the host's power-off (the deadline is whole minutes: up to 59 s more).
        let given = job_time(&script, pull + 1800 + 600);
        assert!(
            (timeout - 600..timeout - 600 + 60).contains(&given),
            "{given} of {timeout}"
        );
        // Past the point where the upload's allowance begins: nothing.
        assert_eq!(job_time(&script, pull + timeout + 2 * 3600), 0);
        // The runner is told the same end as a time; the host bounds the container by what
        // is left once the job is in it, and fails when nothing is.
        assert!(script.contains(
            r#"-e "LABSHIP_JOB_END_BY=$((STARTED_AT + HOST_DEADLINE_MIN * 60 - UPLOAD_ALLOWANCE - JOB_GRACE))""#
        ));
        let copied = script
            .find(r#"quiet docker cp "$SPEC_DIR/.""#)
            .expect("the job's copy");
        let timed = script
            .find(r#"JOB_TIMEOUT=$(job_time "$SECONDS")"#)
            .expect("the job's time");
        let started = script
            .find(r#"timeout --kill-after=10 "$((JOB_TIMEOUT + 30))" docker start"#)
            .expect("the job's start");
        assert!(copied < timed && timed < started);
        assert!(script[copied..timed].contains("no_time_left"));
    }

    // ---- rendering ------------------------------------------------------------------

    #[test]
    fn every_variant_is_shellcheck_clean() {
        for (name, script) in all_variants() {
            let mut child = match Command::new("shellcheck")
                .args(["-s", "bash", "-S", "style", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "shellcheck is not installed; run tests/rig/setup.sh (it installs the \
                     Debian package shellcheck) and test again"
                ),
                Err(e) => panic!("cannot run shellcheck: {e}"),
            };
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())
                .expect("write to shellcheck");
            let out = child.wait_with_output().expect("shellcheck runs");
            assert!(
                out.status.success() && out.stdout.is_empty(),
                "shellcheck findings in the rendered {name}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn has_access_key_id(s: &str) -> bool {
        s.as_bytes().windows(20).any(|w| {
            w.starts_with(b"AKIA")
                && w[4..]
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
    }

    #[test]
    fn rendered_scripts_hold_no_secrets_and_no_braces() {
        for (name, script) in all_variants() {
            let lower = script.to_ascii_lowercase();
            assert!(!has_access_key_id(&script), "{name}: access key id");
            for needle in [
                "aws_secret_access_key",
                "aws_access_key_id",
                "aws_session_token",
                "password=",
                "password:",
                "set -x",
                "xtrace",
            ] {
                assert!(!lower.contains(needle), "{name} contains {needle:?}");
            }
            assert!(!script.contains("{{"), "{name} contains a double brace");
            assert!(script.starts_with("#!/bin/bash\n"), "{name}");
            assert!(script.contains("\nset -euo pipefail\n"), "{name}");
            // The boot script goes to EC2 gzipped (16 KiB); a replace goes through SSM as
            // text (MAX_SCRIPT_BYTES). A quarter of the first and three fifths of the second
            // leave room for long image names (a few hundred bytes each), a deployment's
            // inputs (a line each) and what comes next.
            if name.starts_with("boot") {
                assert!(
                    gzip(&script).len() <= MAX_USER_DATA_BYTES * 3 / 4,
                    "{name}: {} bytes gzipped: keep room for long image names",
                    gzip(&script).len()
                );
            } else {
                assert!(
                    script.len() <= MAX_SCRIPT_BYTES * 3 / 5,
                    "{name}: {} bytes: keep room for long image names",
                    script.len()
                );
            }
        }
        assert!(has_access_key_id("x AKIAIOSFODNN7EXAMPLE x"));
    }

    #[test]
    fn cpus_are_written_as_docker_takes_them() {
        assert_eq!(cpus_text(1.0), "1");
        assert_eq!(cpus_text(0.5), "0.5");
        assert_eq!(cpus_text(0.333_333_333_333), "0.333333333");
        assert_eq!(cpus_text(2.25), "2.25");
    }

    #[test]
    fn values_are_single_quoted_and_fragments_follow_the_host_kind() {
        let boot = render_boot(&inputs(HostKind::Al2023, "0.0.0.0")).expect("renders");
        for line in [
            // What a host of several seats sets for each seat in turn is no read-only value.
            "DEPLOYMENT='demo'",
            "SEATS=''",
            "readonly REGION='eu-west-1'",
            "CONTAINER='labship-ec2-demo'",
            "VOLUME='labship-ec2-demo-work'",
            "readonly LABEL='dev.labship.ec2.deployment'",
            "readonly BIND='0.0.0.0'",
            "readonly HOST_ADDR='127.0.0.1'",
            "PORT='8888'",
            "readonly PULL_DEADLINE='900'",
        ] {
            assert!(boot.contains(&format!("\n{line}\n")), "missing {line}");
        }
        assert!(boot.contains(&format!("\nreadonly IMAGE='{IMAGE}'\n")));
        assert!(boot.contains("'{''{.Config.WorkingDir}}'"));
        assert!(boot.contains("quiet dnf install -y docker"));
        let ecs = render_boot(&inputs(HostKind::EcsAl2023, "127.0.0.1")).expect("renders");
        assert!(ecs.contains("ecs.service") && !ecs.contains("dnf install -y docker"));
        let any = render_boot(&inputs(HostKind::Custom, "127.0.0.1")).expect("renders");
        assert!(
            any.contains("apt-get install -y docker.io") && any.contains("yum install -y docker")
        );

        let v6 = render_replace(&inputs(HostKind::Custom, "::")).expect("renders");
        assert!(
            v6.contains("\nreadonly BIND='[::]'\n")
                && v6.contains("\nreadonly HOST_ADDR='[::1]'\n")
        );
        let v6 = render_boot(&inputs(HostKind::Custom, "fd00::5")).expect("renders");
        assert!(
            v6.contains("\nreadonly BIND='[fd00::5]'\n")
                && v6.contains("\nreadonly HOST_ADDR='[fd00::5]'\n")
        );

        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(container_name("demo"), "labship-ec2-demo");
        assert_eq!(volume_name("demo"), "labship-ec2-demo-work");
        assert_eq!(
            serde_json::to_string(&HostKind::EcsAl2023).expect("json"),
            "\"ecsal2023\""
        );
    }

    #[test]
    fn injection_attempts_are_rejected() {
        let image_with = |suffix: &str| format!("{REGISTRY}/labship/demo:{suffix}");
        type Mutation = Box<dyn Fn(&mut UserDataInputs<'static>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "deployment name",
                Box::new(|i| i.deployment = "demo;reboot"),
            ),
            ("deployment name", Box::new(|i| i.deployment = "demo lab")),
            (
                "deployment name",
                Box::new(|i| i.deployment = "demo\nreboot"),
            ),
            ("deployment name", Box::new(|i| i.deployment = "Demo")),
            ("deployment name", Box::new(|i| i.deployment = "")),
            (
                "deployment name",
                Box::new(|i| i.deployment = "a23456789012345678901234567890123"),
            ),
            ("deployment name", Box::new(|i| i.deployment = "d'emo")),
            ("region", Box::new(|i| i.region = "eu-west-1 --debug")),
            ("region", Box::new(|i| i.region = "-eu")),
            ("registry", Box::new(|i| i.registry = "reg`id`.example")),
            ("registry", Box::new(|i| i.registry = "")),
            (
                "image",
                Box::new(move |i| i.image = image_with("$(reboot)").leak()),
            ),
            (
                "image",
                Box::new(move |i| i.image = image_with("a b").leak()),
            ),
            (
                "image",
                Box::new(move |i| i.image = image_with("tag\nreboot").leak()),
            ),
            (
                "image",
                Box::new(move |i| i.image = image_with("x';reboot;'").leak()),
            ),
            (
                "image",
                Box::new(move |i| i.image = image_with("x${IFS}").leak()),
            ),
            (
                "image",
                Box::new(|i| i.image = "docker.io/library/python:3.12"),
            ),
            ("image", Box::new(|i| i.image = "-v")),
            ("port", Box::new(|i| i.port = 0)),
            ("container port", Box::new(|i| i.container_port = 0)),
            ("pull deadline", Box::new(|i| i.pull_deadline_secs = 0)),
            (
                "Jupyter deadline",
                Box::new(|i| i.jupyter_deadline_secs = 1_000_000),
            ),
        ];
        for (want_field, mutate) in cases {
            let mut i = inputs(HostKind::Al2023, "127.0.0.1");
            mutate(&mut i);
            for result in [render_boot(&i), render_replace(&i)] {
                match result {
                    Err(UserDataError::Invalid { field, value, .. }) => {
                        assert_eq!(field, want_field, "value {value}");
                        assert!(!value.contains('\n'), "the value is shown escaped: {value}");
                    }
                    other => panic!("{want_field}: expected Invalid, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn oversize_scripts_are_refused() {
        // A name that gzip cannot shrink: within the text bound, beyond EC2's once gzipped.
        let mut x: u32 = 7;
        let noise: String = (0..16 * 1024)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(x >> 16) as usize % 36])
            })
            .collect();
        let image = format!("{REGISTRY}/labship/{noise}:tag");
        let mut i = inputs(HostKind::Custom, "127.0.0.1");
        i.image = &image;
        match render_boot(&i) {
            Err(UserDataError::TooLarge {
                size, limit, form, ..
            }) => {
                assert!(size > limit);
                assert_eq!((limit, form), (MAX_USER_DATA_BYTES, "gzipped"));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(render_replace(&i).is_ok(), "text within its bound");
        // Beyond the text bound: refused before anything is sent.
        let image = format!("{REGISTRY}/labship/{}:tag", "a".repeat(MAX_SCRIPT_BYTES));
        i.image = &image;
        for r in [render_boot(&i), render_replace(&i)] {
            assert!(
                matches!(
                    r,
                    Err(UserDataError::TooLarge {
                        form: "as text",
                        ..
                    })
                ),
                "{r:?}"
            );
        }
    }

    #[test]
    fn placeholders_unknown_or_malformed_are_errors() {
        let none = |_: &str| -> Option<Cow<'static, str>> { None };
        for (text, name) in [
            ("a {{NOPE}} b", "NOPE"),
            (
                "docker inspect --format '{{.Config.WorkingDir}}'",
                ".Config.WorkingDir",
            ),
            ("{{lower}}", "lower"),
            ("tail {{UNCLOSED", "UNCLOSED"),
        ] {
            match expand("t", text, none, Unknown::Reject) {
                Err(UserDataError::UnknownPlaceholder { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{text}: {other:?}"),
            }
        }
        // A first pass keeps names it does not know; values are not scanned again.
        let kept = expand(
            "t",
            "{{A}} {{B}}",
            |n| (n == "A").then_some(Cow::Borrowed("{{B}}")),
            Unknown::Keep,
        )
        .expect("expands");
        assert_eq!(kept, "{{B}} {{B}}");
        assert!(expand("t", "{{.Id}}", none, Unknown::Keep).is_err());
    }

    // ---- running the scripts against fake docker, aws, curl, dnf and systemctl -------

    const STUB_DOCKER: &str = r#"#!/bin/bash
# Fake docker CLI: state under $STUB, one line per call in $STUB/calls.
set -u
# one write, so that the two ends of a pipe do not interleave their lines
printf '%s\n' "docker$(printf ' %s' "$@")" >>"$STUB/calls"
fmt=
args=()
while [ $# -gt 0 ]; do
    if [ "$1" = --format ]; then fmt=$2; shift 2; else args+=("$1"); shift; fi
done
set -- "${args[@]}"
if [ ! -e "$STUB/daemon" ]; then
    echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
    exit 1
fi
image_id=${STUB_IMAGE_ID:-sha256:1111}
c="$STUB/containers"
last=${*: -1}
case "$1" in
info) echo "Server Version: 0.0-stub" ;;
login)
    [ "$2 $3 $4" = "--username AWS --password-stdin" ] || { echo "stub: login args" >&2; exit 1; }
    cat >"$STUB/login-stdin"
    echo "Login Succeeded" ;;
pull)
    n=$(( $(cat "$STUB/pulls" 2>/dev/null || echo 0) + 1 ))
    echo "$n" >"$STUB/pulls"
    if [ "$n" -le "${STUB_PULL_FAILS:-2}" ]; then
        echo "Error response from daemon: manifest for $2 not found: manifest unknown: manifest unknown" >&2
        exit 1
    fi
    touch "$STUB/pulled"
    echo "Status: Downloaded newer image for $2" ;;
image)
    [ -e "$STUB/pulled" ] || { echo "Error: No such image: $last" >&2; exit 1; }
    case "$fmt" in
    '{{.Config.WorkingDir}}') echo /home/jovyan ;;
    '{{.Id}}') echo "$image_id" ;;
    *) echo "stub: unexpected format $fmt" >&2; exit 2 ;;
    esac ;;
volume)
    case "$2" in
    inspect)
        [ -e "$STUB/volumes/$last" ] || { echo "Error: no such volume: $last" >&2; exit 1; }
        case "$fmt" in
        '') ;;
        '{{index .Options "device"}}') cat "$STUB/volumes/$last" ;;
        *) echo "stub: unexpected format $fmt" >&2; exit 2 ;;
        esac ;;
    create)
        # the file holds the bound folder (--opt device=...), if any
        device=
        for a in "$@"; do case "$a" in device=*) device=${a#device=} ;; esac; done
        printf '%s' "$device" >"$STUB/volumes/$last"; echo "$last" ;;
    rm) rm -f "$STUB/volumes/$last"; echo "$last" ;;
    *) exit 2 ;;
    esac ;;
container)
    [ -e "$c/$last" ] || { echo "Error: No such container: $last" >&2; exit 1; }
    read -r img status restarts code pub inp <"$c/$last"
    case "$fmt" in
    '') echo '[{}]' ;;
    '{{.Image}} {{.State.Running}} {{with index .Config.Labels "dev.labship.ec2.inputs"}}{{.}}{{else}}none{{end}} {{index .Config.Labels "dev.labship.ec2.publish"}}')
        if [ "$status" = running ]; then echo "$img true ${inp:-none} $pub"; else echo "$img false ${inp:-none} $pub"; fi ;;
    '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}') echo "$status $restarts $code" ;;
    '{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}') cat "$c/$last.limits" 2>/dev/null || echo "0 0" ;;
    *) echo "stub: unexpected format $fmt" >&2; exit 2 ;;
    esac ;;
run)
    name=; prev=; pub=; inp=; memory=0; nano=0
    for a in "$@"; do
        if [ "$prev" = --name ]; then name=$a; fi
        if [ "$prev" = --memory ]; then memory=$(( ${a%m} * 1048576 )); fi
        if [ "$prev" = --cpus ]; then nano=$(awk -v c="$a" 'BEGIN { printf "%d", c * 1e9 }'); fi
        if [ "$prev" = --label ] && [ "${a%%=*}" = dev.labship.ec2.publish ]; then pub=${a#*=}; fi
        if [ "$prev" = --label ] && [ "${a%%=*}" = dev.labship.ec2.inputs ]; then inp=${a#*=}; fi
        if [ "$prev" = --env-file ]; then grep -q '^JUPYTER_TOKEN=[0-9a-f]\{48\}$' "$a" || { echo "stub: bad env file" >&2; exit 125; }; fi
        prev=$a
    done
    if [ -e "$c/$name" ]; then echo "Conflict: the name $name is in use" >&2; exit 125; fi
    if [ -n "${STUB_RUN_PORT_TAKEN:-}" ]; then
        # as the real CLI says it: the daemon's reason, then its own hint
        printf '%s\n' "docker: Error response from daemon: driver failed programming external connectivity on endpoint $name: Bind for 0.0.0.0:8888 failed: port is already allocated." "" "Run 'docker run --help' for more information" >&2
        exit 125
    fi
    if [ "$image_id" = "${STUB_CRASH_IMAGE:-none}" ]; then
        echo "$image_id exited 0 1 $pub $inp" >"$c/$name"
    else
        echo "$image_id running 0 0 $pub $inp" >"$c/$name"
    fi
    echo "$memory $nano" >"$c/$name.limits"
    echo 4f0c6d5e1a2b ;;
start) read -r img _ _ _ pub inp <"$c/$last"; echo "$img running 0 0 $pub $inp" >"$c/$last"; echo "$last" ;;
stop) read -r img _ _ _ pub inp <"$c/$last"; echo "$img exited 0 0 $pub $inp" >"$c/$last"; echo "$last" ;;
rename) mv "$c/$2" "$c/$3"; if [ -e "$c/$2.limits" ]; then mv "$c/$2.limits" "$c/$3.limits"; fi ;;
rm) rm -f "$c/$last" "$c/$last.limits"; echo "$last" ;;
logs)
    read -r img _ <"$c/$last"
    if [ "$img" = "${STUB_CRASH_IMAGE:-none}" ]; then
        printf '%s\n' "Traceback (most recent call last):" "ModuleNotFoundError: No module named 'jupyterlab'" >&2
    elif [ "$img" = "${STUB_SILENT_IMAGE:-none}" ]; then
        echo "[I 2026-11-21 10:00:00.100 ServerApp] still starting" >&2
    else
        cat "$STUB_LIB/${STUB_LOG:-explicit.log}" >&2
    fi ;;
*) echo "stub docker: unexpected $*" >&2; exit 2 ;;
esac
"#;

    const STUB_AWS: &str = r#"#!/bin/bash
# one write, so that the two ends of a pipe do not interleave their lines
printf '%s\n' "aws$(printf ' %s' "$@")" >>"$STUB/calls"
if [ "$*" = "ecr get-login-password --region eu-west-1" ]; then
    printf '%s\n' "$STUB_PASSWORD"
    exit 0
fi
# The tokens of STUB_DEPLOYMENT (demo) and of the seats STUB_SEATS; no other is sealed.
all="$*"
name=${all#ssm get-parameter --region eu-west-1 --name /labship/}
name=${name%/token --with-decryption --query Parameter.Value --output text}
if [ "$*" = "ssm get-parameter --region eu-west-1 --name /labship/$name/token --with-decryption --query Parameter.Value --output text" ]; then
    if [ -n "${STUB_NO_TOKEN:-}" ] || [[ " ${STUB_DEPLOYMENT:-demo} ${STUB_SEATS:-} " != *" $name "* ]]; then
        echo "An error occurred (ParameterNotFound) when calling the GetParameter operation: " >&2
        exit 254
    fi
    printf '%s\n' "$STUB_TOKEN"
    exit 0
fi
if [ "$1 $2" = "s3 cp" ]; then
    if [ -n "${STUB_S3_FAILS:-}" ]; then
        echo "fatal error: An error occurred (AccessDenied) when calling the GetObject operation: Access Denied" >&2
        exit 1
    fi
    dest=${*: -1}
    case $dest in
    */) mkdir -p "$dest" && printf 'stub\n' >"${dest}object" ;;
    *) mkdir -p "${dest%/*}" && printf 'stub\n' >"$dest" ;;
    esac
    exit 0
fi
echo "stub aws: unexpected $*" >&2
exit 2
"#;

    const STUB_CURL: &str = r#"#!/bin/bash
# one write, so that the two ends of a pipe do not interleave their lines
printf '%s\n' "curl$(printf ' %s' "$@")" >>"$STUB/calls"
# The instance metadata service (IMDSv2): a session token, then the launch index.
case "$*" in
*" -X PUT "*"X-aws-ec2-metadata-token-ttl-seconds: "*http://169.254.169.254/latest/api/token)
    printf 'imds-session'; exit 0 ;;
*"X-aws-ec2-metadata-token: imds-session "*http://169.254.169.254/latest/meta-data/ami-launch-index)
    if [ -n "${STUB_LAUNCH_INDEX:-}" ]; then printf '%s' "$STUB_LAUNCH_INDEX"; exit 0; fi
    echo "curl: (22) The requested URL returned error: 404" >&2; exit 22 ;;
*169.254.169.254*) echo "curl: (22) The requested URL returned error: 401" >&2; exit 22 ;;
esac
hdr=
for a in "$@"; do
    if [ "$a" = -K ]; then hdr=$(cat); printf '%s\n' "$hdr" >>"$STUB/curl-stdin"; fi
done
# A server with a token of its own refuses any other (curl -f: exit 22).
if [ -n "${STUB_ACCEPTED_TOKEN:-}" ] && [ -n "$hdr" ] && [[ "$hdr" != *"token $STUB_ACCEPTED_TOKEN"* ]]; then
    echo "curl: (22) The requested URL returned error: 403" >&2
    exit 22
fi
if ! grep -qs ' running ' "$STUB"/containers/*; then
    echo "curl: (7) Failed to connect" >&2
    exit 7
fi
for a in "$@"; do
    if [ "$a" = -w ]; then printf '403'; exit 0; fi
done
echo '{"started": "2026-11-21T10:00:00Z"}'
"#;

    const STUB_DNF: &str = r#"#!/bin/bash
# one write, so that the two ends of a pipe do not interleave their lines
printf '%s\n' "dnf$(printf ' %s' "$@")" >>"$STUB/calls"
if [ "$*" = "install -y docker" ]; then
    cp "$STUB_LIB/docker" "$STUB_BIN/docker"
    echo "Complete!"
    exit 0
fi
echo "stub dnf: unexpected $*" >&2
exit 1
"#;

    const STUB_SYSTEMCTL: &str = r#"#!/bin/bash
# one write, so that the two ends of a pipe do not interleave their lines
printf '%s\n' "systemctl$(printf ' %s' "$@")" >>"$STUB/calls"
case "$*" in
"enable --now docker") touch "$STUB/daemon" ;;
"cat ecs.service") echo "No files found for ecs.service." >&2; exit 1 ;;
*) echo "stub systemctl: unexpected $*" >&2; exit 1 ;;
esac
"#;

    /// A jupyter_server 2.x log of a server that started twice: the newest token wins.
    fn jupyter_log() -> String {
        let mut log = String::new();
        for token in [OLD_TOKEN, NEW_TOKEN] {
            log.push_str(&format!(
                "[I 2026-11-21 10:00:00.100 ServerApp] jupyterlab | extension was successfully loaded.\n\
                 [I 2026-11-21 10:00:00.500 ServerApp] Serving notebooks from local directory: /home/jovyan\n\
                 [I 2026-11-21 10:00:00.500 ServerApp] Jupyter Server 2.14.2 is running at:\n\
                 [I 2026-11-21 10:00:00.500 ServerApp] https://4f0c6d5e1a2b:8888/lab?token={token}\n\
                 [I 2026-11-21 10:00:00.500 ServerApp]     https://127.0.0.1:8888/lab?token={token}\n\
                 [I 2026-11-21 10:00:00.500 ServerApp] Use Control-C to stop this server and shut down all kernels (twice to skip confirmation).\n\
                 [C 2026-11-21 10:00:00.510 ServerApp] \n\
                 \x20   \n\
                 \x20   To access the server, open this file in a browser:\n\
                 \x20       file:///home/jovyan/.local/share/jupyter/runtime/jpserver-7-open.html\n\
                 \x20   Or copy and paste one of these URLs:\n\
                 \x20       https://4f0c6d5e1a2b:8888/lab?token={token}\n\
                 \x20       https://127.0.0.1:8888/lab?token={token}\n\
                 [I 2026-11-21 10:00:01.000 ServerApp] Skipped non-installed server(s): bash-language-server\n"
            ));
        }
        log
    }

    /// The log of a server whose token was set explicitly (JUPYTER_TOKEN): no CRITICAL
    /// block, and the URLs carry the literal `...`.
    const EXPLICIT_TOKEN_LOG: &str = "\
[I 2026-11-21 10:00:00.500 ServerApp] Serving notebooks from local directory: /home/jovyan
[I 2026-11-21 10:00:00.500 ServerApp] Jupyter Server 2.14.2 is running at:
[I 2026-11-21 10:00:00.500 ServerApp] https://4f0c6d5e1a2b:8888/lab?token=...
[I 2026-11-21 10:00:00.500 ServerApp]     https://127.0.0.1:8888/lab?token=...
[I 2026-11-21 10:00:00.500 ServerApp] Use Control-C to stop this server and shut down all kernels (twice to skip confirmation).
";

    /// A directory that plays an EC2 host: stub commands first on PATH, then only the
    /// coreutils the scripts need (never the real docker, aws or curl).
    struct FakeHost {
        dir: tempfile::TempDir,
    }

    struct Run {
        ok: bool,
        stdout: String,
        stderr: String,
    }

    impl FakeHost {
        fn new(docker_installed: bool, daemon_running: bool) -> FakeHost {
            let dir = tempfile::tempdir().expect("tempdir");
            for sub in [
                "bin",
                "sys",
                "lib",
                "tmp",
                "home",
                "state/containers",
                "state/volumes",
            ] {
                fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
            }
            let host = FakeHost { dir };
            for (name, text) in [
                ("docker", STUB_DOCKER),
                ("aws", STUB_AWS),
                ("curl", STUB_CURL),
                ("dnf", STUB_DNF),
                ("systemctl", STUB_SYSTEMCTL),
            ] {
                let lib = host.path("lib").join(name);
                fs::write(&lib, text).expect("write stub");
                fs::set_permissions(&lib, fs::Permissions::from_mode(0o755)).expect("chmod");
                if name != "docker" || docker_installed {
                    fs::copy(&lib, host.path("bin").join(name)).expect("install stub");
                }
            }
            fs::write(host.path("lib/jupyter.log"), jupyter_log()).expect("write log");
            fs::write(host.path("lib/explicit.log"), EXPLICIT_TOKEN_LOG).expect("write log");
            fs::write(
                host.path("lib/plain.log"),
                EXPLICIT_TOKEN_LOG.replace("https://", "http://"),
            )
            .expect("write log");
            for tool in [
                "base64", "bash", "cat", "chmod", "chown", "cp", "cut", "date", "flock", "grep",
                "head", "ls", "awk", "mkdir", "mktemp", "mv", "od", "openssl", "readlink", "sed",
                "rm", "sleep", "tail", "touch", "tr", "wc",
            ] {
                let real = ["/usr/bin", "/bin"]
                    .iter()
                    .map(|d| Path::new(d).join(tool))
                    .find(|p| p.exists())
                    .unwrap_or_else(|| panic!("{tool} not found in /usr/bin or /bin"));
                std::os::unix::fs::symlink(real, host.path("sys").join(tool)).expect("symlink");
            }
            if daemon_running {
                host.touch("state/daemon");
            }
            host.touch("console");
            host
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn touch(&self, rel: &str) {
            fs::write(self.path(rel), "").expect("touch");
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.path(rel)).unwrap_or_default()
        }

        fn calls(&self) -> String {
            self.read("state/calls")
        }

        fn container(&self, name: &str) -> Option<String> {
            fs::read_to_string(self.path("state/containers").join(name))
                .ok()
                .map(|s| s.trim().to_string())
        }

        fn run(&self, script: &str, env: &[(&str, &str)]) -> Run {
            let file = self.path("script.sh");
            fs::write(&file, script).expect("write script");
            let out: Output = Command::new(self.path("sys/bash"))
                .arg(&file)
                .env_clear()
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        self.path("bin").display(),
                        self.path("sys").display()
                    ),
                )
                .env("HOME", self.path("home"))
                .env("TMPDIR", self.path("tmp"))
                .env("LABSHIP_LOG_FILE", self.path("labship.log"))
                .env("LABSHIP_LOCK_FILE", self.path("labship.lock"))
                .env("LABSHIP_STATE_DIR", self.path("state"))
                .env("LABSHIP_PER_BOOT_DIR", self.path("per-boot"))
                .env("LABSHIP_WATCH_CONSOLE", self.path("watch-console"))
                .env("LABSHIP_CONSOLE", self.path("console"))
                .env("LABSHIP_TLS_GID", gid())
                .env("STUB", self.path("state"))
                .env("STUB_BIN", self.path("bin"))
                .env("STUB_LIB", self.path("lib"))
                .env("STUB_PASSWORD", PASSWORD)
                .env("STUB_TOKEN", SEALED_TOKEN)
                .env("STUB_ACCEPTED_TOKEN", SEALED_TOKEN)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .output()
                .expect("bash runs");
            Run {
                ok: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    }

    /// A run's output and the fake host's calls, for an assertion's message.
    fn context(run: &Run, host: &FakeHost) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}\ncalls:\n{}",
            run.stdout,
            run.stderr,
            host.calls()
        )
    }

    /// The group of files this process makes (the key's group on the fake host: a chown to
    /// it works for any user running the tests).
    fn gid() -> String {
        use std::os::unix::fs::MetadataExt as _;
        tempfile::tempfile()
            .and_then(|f| f.metadata())
            .map_or_else(|_| "0".to_string(), |m| m.gid().to_string())
    }

    fn kinds(ms: &[Marker]) -> Vec<MarkerKind> {
        ms.iter().map(|m| m.phase.clone()).collect()
    }

    fn phases(ps: &[Phase]) -> Vec<MarkerKind> {
        ps.iter().copied().map(MarkerKind::Phase).collect()
    }

    fn count_lines(text: &str, line: &str) -> usize {
        text.lines().filter(|l| *l == line).count()
    }

    #[test]
    fn boot_script_runs_end_to_end_on_a_fake_al2023_host() {
        let host = FakeHost::new(false, false);
        let mut i = inputs(HostKind::Al2023, "127.0.0.1");
        i.port = 8890;
        i.pull_deadline_secs = 60;
        i.jupyter_deadline_secs = 30;
        let script = render_boot(&i).expect("renders");
        let run = host.run(&script, &[]);
        let context = context(&run, &host);
        assert!(run.ok, "{context}");
        assert!(run.stderr.is_empty(), "{context}");

        let found = markers(&run.stdout);
        assert_eq!(kinds(&found), phases(&Phase::ALL), "{context}");
        assert!(found
            .iter()
            .all(|m| (m.phase == MarkerKind::Phase(Phase::Token)) != m.at.is_some()));
        let token_line = "labship: token path=/lab source=labship";
        assert_eq!(count_lines(&run.stdout, token_line), 1, "{context}");
        for line in run
            .stdout
            .lines()
            .filter(|l| !l.starts_with("labship: tls "))
        {
            assert!(line.len() < 70, "long marker line {line:?}");
        }
        // The certificate Jupyter serves: made on the host, its fingerprint on the console, the
        // key readable by root and the container's group only.
        let tls = host.path("state/tls/demo");
        let cert = fs::read_to_string(tls.join("cert.pem")).expect("cert.pem");
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            cert.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("PEM");
        assert_eq!(
            super::super::console::tls_fingerprint(&run.stdout),
            Some(crate::tls::Fingerprint::of(&der)),
            "{context}"
        );
        let key_mode = fs::metadata(tls.join("key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o440);
        assert_eq!(
            fs::metadata(&tls).expect("dir").permissions().mode() & 0o777,
            0o750
        );
        let served = super::super::console::served(&run.stdout).expect("the token line");
        assert_eq!(served.path, "/lab");
        assert_eq!(served.token, super::super::console::TokenFrom::Labship);
        // The sealed token reached the container through a root-only env file, and nothing
        // else: not the console, the log, any command line.
        let env_file = host.path("state/demo.env");
        assert_eq!(
            fs::read_to_string(&env_file).expect("env file"),
            format!("JUPYTER_TOKEN={SEALED_TOKEN}\n")
        );
        assert_eq!(
            fs::metadata(&env_file)
                .expect("env file")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );

        let calls = host.calls();
        let position = |line: &str| {
            calls
                .lines()
                .position(|l| l == line)
                .unwrap_or_else(|| panic!("no call {line:?}\n{context}"))
        };
        let run_line = format!(
            "docker run -d --name labship-ec2-demo --label dev.labship.ec2.deployment=demo \
             --label dev.labship.ec2.publish=127.0.0.1:8890 --label dev.labship.ec2.inputs=none --env-file {} \
             --group-add {} -v {}:/etc/labship-tls:ro -e JUPYTER_CONFIG_PATH=/etc/labship-tls \
             --restart unless-stopped --init -p 127.0.0.1:8890:8888 \
             -v labship-ec2-demo-work:/home/jovyan {IMAGE}",
            host.path("state/demo.env").display(),
            gid(),
            host.path("state/tls/demo").display()
        );
        let order = [
            position("dnf install -y docker"),
            position("systemctl enable --now docker"),
            // aws and docker login run side by side in a pipe: either may log first
            position("aws ecr get-login-password --region eu-west-1")
                .max(position(&format!("docker login --username AWS --password-stdin {REGISTRY}"))),
            position("aws ssm get-parameter --region eu-west-1 --name /labship/demo/token --with-decryption --query Parameter.Value --output text"),
            position(&format!("docker pull {IMAGE}")),
            position("docker volume create --label dev.labship.ec2.deployment=demo labship-ec2-demo-work"),
            position(&run_line),
            calls
                .lines()
                .position(|l| {
                    l.starts_with("curl -k --pinnedpubkey sha256//")
                        && l.ends_with(" -fsS -o /dev/null --max-time 5 -K - https://127.0.0.1:8890/api/status")
                })
                .unwrap_or_else(|| panic!("no pinned curl\n{context}")),
        ];
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{order:?}\n{context}"
        );
        assert_eq!(
            count_lines(&calls, &format!("docker pull {IMAGE}")),
            3,
            "{context}"
        );

        // The ECR password went through the pipe, nowhere else; the token went to curl
        // on stdin, not in argv.
        assert_eq!(host.read("state/login-stdin"), format!("{PASSWORD}\n"));
        for (what, text) in [
            ("stdout", &run.stdout),
            ("calls", &calls),
            ("log", &host.read("labship.log")),
        ] {
            assert!(!text.contains(PASSWORD), "password in {what}");
        }
        assert!(host
            .read("state/curl-stdin")
            .contains(&format!("Authorization: token {SEALED_TOKEN}")));
        for (what, text) in [
            ("stdout", &run.stdout),
            ("calls (argv)", &calls),
            ("log", &host.read("labship.log")),
            ("console", &host.read("console")),
        ] {
            assert!(!text.contains(SEALED_TOKEN), "token in {what}\n{context}");
        }

        // The watchdog's pieces: this script as the host script, the per-boot hook that
        // starts it at every later boot with the boot time, and that time.
        assert_eq!(host.read("state/demo.host.sh"), script);
        let hook = host.read("per-boot/labship-demo.sh");
        assert!(hook.starts_with("#!/bin/bash\n"), "{hook}");
        assert!(
            hook.contains("LABSHIP_MODE=watch LABSHIP_WATCH_ANNOUNCE=1 setsid bash")
                && hook.contains(&host.path("state/demo.host.sh").display().to_string()),
            "{hook}"
        );
        assert!(host.read("state/demo.boot").trim().parse::<i64>().is_ok());

        // Again: the running container of the same image is kept.
        let again = host.run(&script, &[]);
        assert!(again.ok, "{}", again.stdout);
        assert_eq!(kinds(&markers(&again.stdout)), phases(&Phase::ALL));
        assert_eq!(
            host.calls()
                .lines()
                .filter(|l| l.starts_with("docker run "))
                .count(),
            1
        );
    }

    #[test]
    fn boot_script_gives_up_on_a_pull_that_never_succeeds() {
        // Docker answers already: the ECS fragment must do nothing (no systemctl).
        let host = FakeHost::new(true, true);
        let mut i = inputs(HostKind::EcsAl2023, "0.0.0.0");
        i.pull_deadline_secs = 3;
        let script = render_boot(&i).expect("renders");
        let run = host.run(&script, &[("STUB_PULL_FAILS", "1000")]);
        let context = context(&run, &host);
        assert!(!run.ok, "{context}");
        let found = markers(&run.stdout);
        let want = phases(&[Phase::Begin, Phase::DockerReady, Phase::LoggedIn]);
        assert_eq!(kinds(&found)[..3], want[..], "{context}");
        match &found[3..] {
            [Marker {
                phase: MarkerKind::Error { phase, cause },
                ..
            }] => {
                assert_eq!(phase, "pull");
                assert!(cause.contains("manifest unknown"), "{cause}");
                assert!(cause.contains("gave up after 3s"), "{cause}");
            }
            other => panic!("expected one error marker, got {other:?}\n{context}"),
        }
        assert!(run
            .stdout
            .trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("labship: error phase=pull ")));
        let calls = host.calls();
        assert!(
            calls
                .lines()
                .filter(|l| l.starts_with("docker pull "))
                .count()
                >= 2,
            "{context}"
        );
        // (reading whether an ECS agent unit exists is all, and only under systemd)
        let changes_host =
            |l: &&str| l.starts_with("systemctl") && *l != "systemctl cat ecs.service";
        assert!(!calls.lines().any(|l| changes_host(&l)), "{context}");
        assert!(!calls.contains("docker run"), "{context}");
        assert!(
            !run.stdout.contains("..."),
            "a short cause is not cut: {}",
            run.stdout
        );
    }

    #[test]
    fn boot_script_says_when_the_image_sets_its_own_token_and_never_prints_it() {
        let host = FakeHost::new(true, true);
        let script = render_boot(&inputs(HostKind::Custom, "0.0.0.0")).expect("renders");
        let run = host.run(
            &script,
            &[
                ("STUB_PULL_FAILS", "0"),
                // The image sets its own token (logged in full): the host's is refused.
                ("STUB_LOG", "jupyter.log"),
                ("STUB_ACCEPTED_TOKEN", NEW_TOKEN),
            ],
        );
        let context = context(&run, &host);
        assert!(run.ok && run.stderr.is_empty(), "{context}");
        assert_eq!(
            kinds(&markers(&run.stdout)),
            phases(&Phase::ALL),
            "{context}"
        );
        assert_eq!(
            count_lines(&run.stdout, "labship: token path=/lab source=image"),
            1,
            "{context}"
        );
        // The image's token answered (curl got it on stdin). Neither token is printed.
        assert!(host.read("state/curl-stdin").contains(NEW_TOKEN));
        for text in [&run.stdout, &host.read("console"), &host.calls()] {
            assert!(
                !text.contains(NEW_TOKEN) && !text.contains(SEALED_TOKEN),
                "{context}"
            );
        }
    }

    #[test]
    fn boot_script_refuses_a_jupyter_that_ignores_the_tls_settings() {
        let host = FakeHost::new(true, true);
        let script = render_boot(&inputs(HostKind::Custom, "127.0.0.1")).expect("renders");
        let run = host.run(
            &script,
            &[("STUB_PULL_FAILS", "0"), ("STUB_LOG", "plain.log")],
        );
        assert!(!run.ok, "{}", run.stdout);
        match markers(&run.stdout).last().map(|m| &m.phase) {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "jupyter");
                assert!(cause.contains("serves plain HTTP"), "{cause}");
            }
            other => panic!("expected an error marker, got {other:?}\n{}", run.stdout),
        }
    }

    #[test]
    fn boot_script_stops_at_once_when_the_token_parameter_is_gone() {
        let host = FakeHost::new(true, true);
        let script = render_boot(&inputs(HostKind::Custom, "127.0.0.1")).expect("renders");
        let started = std::time::Instant::now();
        let run = host.run(&script, &[("STUB_NO_TOKEN", "1")]);
        assert!(!run.ok, "{}", run.stdout);
        assert!(
            started.elapsed().as_secs() < 60,
            "no retries on a missing parameter"
        );
        match markers(&run.stdout).last().map(|m| &m.phase) {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "token");
                assert!(
                    cause.contains("/labship/demo/token does not exist"),
                    "{cause}"
                );
            }
            other => panic!("expected an error marker, got {other:?}\n{}", run.stdout),
        }
        assert!(!host.calls().contains("docker run"));
    }

    /// A host whose first two seats' data volumes are attached as the simulator attaches
    /// them: a link named after each device (lab-a /dev/sdf, lab-b /dev/sdg).
    fn host_with_two_seat_disks() -> FakeHost {
        let host = FakeHost::new(false, false);
        for (dev, disk) in [("sdf", "a"), ("sdg", "b")] {
            fs::create_dir_all(host.path(&format!("ebs/disk-{disk}"))).expect("disk");
            std::os::unix::fs::symlink(
                host.path(&format!("ebs/disk-{disk}")),
                host.path(&format!("ebs/dev-{dev}")),
            )
            .expect("link");
        }
        host
    }

    #[test]
    fn a_host_of_several_seats_starts_each_on_its_own_port_token_and_disk() {
        use super::super::console::of_seat;
        // lab-c stops before it needs a data volume.
        let host = host_with_two_seat_disks();
        let seats = ["lab-a", "lab-b", "lab-c"];
        let script = render_boot(&UserDataInputs {
            deployment: "lab-a",
            seats: &seats,
            port: 8890,
            data_volume: true,
            ..inputs(HostKind::Al2023, "127.0.0.1")
        })
        .expect("renders");
        let ebs = host.path("ebs");
        // lab-c's token was never sealed.
        let run = host.run(
            &script,
            &[
                ("STUB_SEATS", "lab-a lab-b"),
                ("LABSHIP_SIM_EBS_DIR", ebs.to_str().expect("utf-8 path")),
            ],
        );
        let context = context(&run, &host);
        assert!(!run.ok, "a seat failed: so does the script\n{context}");

        // The host's steps once, without a seat; each seat's own after them.
        assert_eq!(
            kinds(&markers(&run.stdout)),
            phases(&[
                Phase::Begin,
                Phase::DockerReady,
                Phase::LoggedIn,
                Phase::Pulled
            ]),
            "{context}"
        );
        for seat in ["lab-a", "lab-b"] {
            let console = of_seat(&run.stdout, seat);
            assert_eq!(
                kinds(&markers(&console)),
                phases(&Phase::ALL),
                "{seat}\n{context}"
            );
            let served = super::super::console::served(&console).expect("the token line");
            assert_eq!(served.path, "/lab");
        }
        match markers(&of_seat(&run.stdout, "lab-c"))
            .last()
            .map(|m| &m.phase)
        {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "token");
                assert!(
                    cause.contains("/labship/lab-c/token does not exist"),
                    "{cause}"
                );
            }
            other => panic!("expected lab-c's error, got {other:?}\n{context}"),
        }

        // Slot N: the first port plus N, its own token file, its own disk.
        for (seat, port, disk) in [("lab-a", 8890, "a"), ("lab-b", 8891, "b")] {
            let container = host
                .container(&format!("labship-ec2-{seat}"))
                .unwrap_or_else(|| panic!("no container of {seat}\n{context}"));
            assert!(
                container.contains(&format!(" 127.0.0.1:{port} ")),
                "{container}"
            );
            assert_eq!(
                host.read(&format!("state/{seat}.env")),
                format!("JUPYTER_TOKEN={SEALED_TOKEN}\n")
            );
            assert_eq!(
                host.read(&format!("state/volumes/labship-ec2-{seat}-work")),
                host.path(&format!("ebs/disk-{disk}/workspace"))
                    .display()
                    .to_string()
            );
            let run_line = format!("--restart unless-stopped --init -p 127.0.0.1:{port}:8888");
            assert_eq!(
                host.calls()
                    .lines()
                    .filter(
                        |l| l.starts_with(&format!("docker run -d --name labship-ec2-{seat} "))
                            && l.contains(&run_line)
                    )
                    .count(),
                1,
                "{context}"
            );
        }
        assert!(host.container("labship-ec2-lab-c").is_none());
        assert!(!host.path("state/lab-c.env").exists());

        // What is the host's: one login, one pull, one certificate, one watchdog that knows
        // every seat.
        let calls = host.calls();
        assert_eq!(
            count_lines(&calls, "aws ecr get-login-password --region eu-west-1"),
            1
        );
        assert_eq!(count_lines(&calls, &format!("docker pull {IMAGE}")), 3);
        assert!(host.path("state/tls/lab-a/cert.pem").exists());
        assert!(!host.path("state/tls/lab-b").exists());
        assert_eq!(
            host.read("state/lab-a.seats"),
            "lab-a 0 8890\nlab-b 1 8891\nlab-c 2 8892\n"
        );
        assert_eq!(host.read("state/lab-a.host.sh"), script);
        assert!(host.path("per-boot/labship-lab-a.sh").exists());
        for (what, text) in [
            ("stdout", &run.stdout),
            ("calls (argv)", &calls),
            ("log", &host.read("labship.log")),
        ] {
            assert!(!text.contains(SEALED_TOKEN), "token in {what}\n{context}");
        }
    }

    #[test]
    fn one_seat_of_a_shared_host_is_replaced_alone_keeping_its_slot_and_limits() {
        use super::super::console::of_seat;
        let host = host_with_two_seat_disks();
        let ebs = host.path("ebs");
        let ebs = ebs.to_str().expect("utf-8 path");
        let seats = ["lab-a", "lab-b"];
        let boot = UserDataInputs {
            deployment: "lab-a",
            seats: &seats,
            data_volume: true,
            limits: crate::hosts::Limits {
                memory_mib: Some(1024),
                cpus: Some(0.5),
            },
            ..seat_inputs(HostKind::Al2023)
        };
        let env = |image: &'static str| {
            vec![
                ("STUB_SEATS", "lab-a lab-b"),
                ("LABSHIP_SIM_EBS_DIR", ebs),
                ("STUB_PULL_FAILS", "0"),
                ("STUB_IMAGE_ID", image),
            ]
        };
        let booted = host.run(&render_boot(&boot).expect("renders"), &env("sha256:old"));
        assert!(booted.ok, "{}", context(&booted, &host));
        let first_a = host.container("labship-ec2-lab-a").expect("lab-a");

        // lab-b's new image (no limits given: the running container's are kept).
        let replace = UserDataInputs {
            limits: crate::hosts::Limits::default(),
            ..boot
        };
        let script = render_seat_replace(&replace, "lab-b", false).expect("renders");
        let run = host.run(&script, &env("sha256:new"));
        let ctx = context(&run, &host);
        assert!(run.ok, "{ctx}");
        // Its markers are the seat's: what labship reads as the seat's view.
        let view = of_seat(&run.stdout, "lab-b");
        assert_eq!(
            markers(&view).last().map(|m| &m.phase),
            Some(&MarkerKind::Phase(Phase::Ready)),
            "{ctx}"
        );
        assert!(super::super::console::served(&view).is_some(), "{ctx}");
        // On its slot's port and disk, with its limits; the seat beside it untouched.
        let b = host.container("labship-ec2-lab-b").expect("lab-b");
        assert!(
            b.starts_with("sha256:new running 0 0 127.0.0.1:8891"),
            "{b}"
        );
        assert_eq!(
            host.read("state/containers/labship-ec2-lab-b.limits")
                .trim(),
            format!("{} 500000000", 1024u64 << 20)
        );
        assert_eq!(host.container("labship-ec2-lab-a"), Some(first_a));
        assert_eq!(
            host.read("state/volumes/labship-ec2-lab-b-work"),
            host.path("ebs/disk-b/workspace").display().to_string()
        );
        // The host's own files stay the host's (named after its first seat): its seats, its
        // one certificate; the watchdog now runs this script.
        assert_eq!(
            host.read("state/lab-a.seats"),
            "lab-a 0 8890\nlab-b 1 8891\n"
        );
        assert!(!host.path("state/tls/lab-b").exists());
        assert_eq!(host.read("state/lab-a.host.sh"), script);
        assert!(!run.stdout.contains(SEALED_TOKEN), "{ctx}");

        // A rotation (a recreate) of lab-a keeps its limits too.
        let rotated = render_seat_replace(&replace, "lab-a", true).expect("renders");
        let run = host.run(&rotated, &env("sha256:old"));
        assert!(run.ok, "{}", context(&run, &host));
        assert_eq!(
            host.read("state/containers/labship-ec2-lab-a.limits")
                .trim(),
            format!("{} 500000000", 1024u64 << 20)
        );

        // A seat the host does not serve: refused on the host, nothing touched.
        let other = ["lab-a", "lab-b", "lab-c"];
        let stray = render_seat_replace(
            &UserDataInputs {
                seats: &other,
                ..replace
            },
            "lab-c",
            false,
        )
        .expect("renders");
        let run = host.run(&stray, &env("sha256:new"));
        assert!(!run.ok);
        assert!(
            run.stdout
                .contains("the seat lab-c is not on this host (it serves lab-a lab-b"),
            "{}",
            run.stdout
        );
        assert!(host.container("labship-ec2-lab-c").is_none());
        // And labship does not render one for a seat it does not name.
        assert!(render_seat_replace(&replace, "lab-z", false).is_err());

        // lab-b taken off the host (`down --seat`): its container, Docker volume and token
        // file go, the watchdog watches lab-a alone, and lab-a is not touched.
        let a = host.container("labship-ec2-lab-a").expect("lab-a");
        let leave = render_seat_leave(&replace, "lab-b").expect("renders");
        let run = host.run(&leave, &env("sha256:new"));
        let ctx = context(&run, &host);
        assert!(run.ok, "{ctx}");
        assert!(run.stdout.contains("labship: seat=lab-b left t="), "{ctx}");
        assert!(host.container("labship-ec2-lab-b").is_none(), "{ctx}");
        assert!(!host.path("state/volumes/labship-ec2-lab-b-work").exists());
        assert!(!host.path("state/lab-b.env").exists());
        assert_eq!(host.read("state/lab-a.seats"), "lab-a 0 8890\n");
        assert_eq!(host.container("labship-ec2-lab-a"), Some(a));
        // Its workspace stays on its data volume, for labship to detach and keep.
        assert!(host.path("ebs/disk-b/workspace").is_dir());
        // Sent again (its answer lost): nothing left to do.
        let again = host.run(&leave, &env("sha256:new"));
        assert!(again.ok, "{}", context(&again, &host));
        assert!(again.stdout.contains("labship: seat=lab-b left t="));
    }

    #[test]
    fn hosts_of_several_seats_launched_together_each_take_the_seats_of_their_index() {
        use super::super::console::of_seat;
        // The last host of a class of five packed two to a host serves one seat, as a seat.
        let hosts: [&[&str]; 3] = [&["lab-1", "lab-2"], &["lab-3", "lab-4"], &["lab-5"]];
        let scripts: Vec<String> = hosts
            .iter()
            .map(|seats| {
                render_boot(&UserDataInputs {
                    deployment: seats[0],
                    seats,
                    ..seat_inputs(HostKind::Al2023)
                })
                .expect("renders")
            })
            .collect();
        let script = batch(&scripts).expect("batched");
        assert!(
            script.contains("\n1) DEPLOYMENT='lab-3'; SEATS='lab-3 lab-4'; "),
            "{script}"
        );
        assert!(
            script.contains("\n2) DEPLOYMENT='lab-5'; SEATS='lab-5'; "),
            "{script}"
        );
        for (index, seats) in [("1", &["lab-3", "lab-4"][..]), ("2", &["lab-5"][..])] {
            let host = FakeHost::new(false, false);
            let run = host.run(
                &script,
                &[
                    ("STUB_LAUNCH_INDEX", index),
                    ("STUB_SEATS", &seats.join(" ")),
                ],
            );
            let context = context(&run, &host);
            assert!(run.ok, "{context}");
            for (slot, seat) in seats.iter().enumerate() {
                // Its markers are the seat's, not a deployment's, even alone on its host.
                assert!(
                    run.stdout
                        .contains(&format!("labship: seat={seat} ready t=")),
                    "{context}"
                );
                assert_eq!(
                    kinds(&markers(&of_seat(&run.stdout, seat))),
                    phases(&Phase::ALL),
                    "{seat}\n{context}"
                );
                let container = host
                    .container(&format!("labship-ec2-{seat}"))
                    .unwrap_or_else(|| panic!("no container of {seat}\n{context}"));
                assert!(
                    container.contains(&format!(":{} ", 8890 + slot)),
                    "{container}"
                );
            }
            assert!(host.container("labship-ec2-lab-1").is_none());
        }
    }

    #[test]
    fn a_hosts_seats_are_checked() {
        let base = inputs(HostKind::Al2023, "127.0.0.1");
        let nine: Vec<String> = (1..=9).map(|n| format!("s{n}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        for (deployment, seats, port, wanted) in [
            ("s1", &nine[..], 8888, "at most 8"),
            ("lab-a", &["lab-b", "lab-a"][..], 8888, "first seat is not"),
            ("lab-a", &["lab-a", "lab-a"][..], 8888, "listed twice"),
            ("lab-a", &["lab-a", "Lab B"][..], 8888, "invalid deployment"),
            ("lab-a", &["lab-a", "lab-b"][..], 65535, "past 65535"),
        ] {
            let err = render_boot(&UserDataInputs {
                deployment,
                seats,
                port,
                ..base
            })
            .expect_err("refused");
            assert!(err.to_string().contains(wanted), "{err}");
        }
        // A custom AMI has no device names for its data volumes.
        let custom = UserDataInputs {
            deployment: "lab-a",
            seats: &["lab-a", "lab-b"],
            data_volume: true,
            ..inputs(HostKind::Custom, "127.0.0.1")
        };
        let err = render_boot(&custom).expect_err("refused");
        assert!(err.to_string().contains("custom AMI"), "{err}");
        assert!(render_boot(&UserDataInputs {
            data_volume: false,
            ..custom
        })
        .is_ok());
        let eight = render_boot(&UserDataInputs {
            deployment: "s1",
            seats: &nine[..8],
            ..base
        })
        .expect("eight seats");
        assert!(eight.contains("\nSEATS='s1 s2 s3 s4 s5 s6 s7 s8'\n"));
        let one = render_boot(&base).expect("one deployment");
        assert!(one.contains("\nSEATS=''\n"));
    }

    #[test]
    fn a_refused_docker_run_is_said_with_the_daemons_reason() {
        let host = FakeHost::new(true, true);
        let script = render_boot(&inputs(HostKind::Al2023, "127.0.0.1")).expect("renders");
        let run = host.run(
            &script,
            &[("STUB_PULL_FAILS", "0"), ("STUB_RUN_PORT_TAKEN", "1")],
        );
        assert!(!run.ok, "{}", run.stdout);
        match markers(&run.stdout).last().map(|m| &m.phase) {
            Some(MarkerKind::Error { cause, .. }) => {
                assert!(cause.contains("port is already allocated"), "{cause}");
                assert!(!cause.contains("--help"), "{cause}");
            }
            other => panic!("expected an error marker, got {other:?}\n{}", run.stdout),
        }
    }

    #[test]
    fn boot_script_fails_fast_when_the_container_exits() {
        let host = FakeHost::new(true, true);
        let mut i = inputs(HostKind::Al2023, "127.0.0.1");
        i.jupyter_deadline_secs = 120;
        let script = render_boot(&i).expect("renders");
        let started = std::time::Instant::now();
        let run = host.run(
            &script,
            &[
                ("STUB_PULL_FAILS", "0"),
                ("STUB_CRASH_IMAGE", "sha256:1111"),
            ],
        );
        let context = context(&run, &host);
        assert!(!run.ok, "{context}");
        assert!(
            started.elapsed().as_secs() < 60,
            "did not wait for the deadline\n{context}"
        );
        match markers(&run.stdout).last().map(|m| &m.phase) {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "jupyter");
                assert!(
                    cause.starts_with("container stopped (exited, exit code 1): "),
                    "{cause}"
                );
                assert!(cause.ends_with("No module named 'jupyterlab'"), "{cause}");
            }
            other => panic!("expected an error marker, got {other:?}\n{context}"),
        }
        assert!(
            run.stdout.contains("Traceback (most recent call last):"),
            "the log's last lines are shown"
        );
    }

    #[test]
    fn boot_script_on_a_custom_ami_without_aws_cli_says_so() {
        let host = FakeHost::new(true, true);
        fs::remove_file(host.path("bin/aws")).expect("rm aws");
        let script = render_boot(&inputs(HostKind::Custom, "127.0.0.1")).expect("renders");
        let run = host.run(&script, &[]);
        assert!(!run.ok);
        let found = markers(&run.stdout);
        assert_eq!(found.len(), 2, "{}", run.stdout);
        match &found[1].phase {
            MarkerKind::Error { phase, cause } => {
                assert_eq!(phase, "host");
                assert!(cause.contains("needs the AWS CLI"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A host where labship's container runs an older image.
    fn host_with_old_container() -> FakeHost {
        let host = FakeHost::new(true, true);
        fs::write(
            host.path("state/containers/labship-ec2-demo"),
            "sha256:old running 0 0\n",
        )
        .expect("container");
        host.touch("state/volumes/labship-ec2-demo-work");
        host
    }

    #[test]
    fn replace_script_swaps_the_container_and_keeps_the_volume() {
        let host = host_with_old_container();
        let mut i = inputs(HostKind::Al2023, "127.0.0.1");
        i.jupyter_deadline_secs = 20;
        let script = render_replace(&i).expect("renders");
        let run = host.run(
            &script,
            &[("STUB_PULL_FAILS", "0"), ("STUB_IMAGE_ID", "sha256:new")],
        );
        let context = context(&run, &host);
        assert!(run.ok, "{context}");
        let want = phases(&[
            Phase::LoggedIn,
            Phase::Pulled,
            Phase::Started,
            Phase::Token,
            Phase::Ready,
        ]);
        assert_eq!(kinds(&markers(&run.stdout)), want, "{context}");
        assert_eq!(
            kinds(&markers(&host.read("console"))),
            want,
            "the console gets the markers too"
        );
        let calls = host.calls();
        for line in [
            "docker stop labship-ec2-demo",
            "docker rename labship-ec2-demo labship-ec2-demo-previous",
            "docker rm labship-ec2-demo-previous",
        ] {
            assert_eq!(count_lines(&calls, line), 1, "{line}\n{context}");
        }
        assert!(!calls.contains("docker volume create"), "{context}");
        assert_eq!(
            host.container("labship-ec2-demo").as_deref(),
            Some("sha256:new running 0 0 127.0.0.1:8888 none")
        );
        assert_eq!(host.container("labship-ec2-demo-previous"), None);
    }

    /// Writes an executable stub into the fake host's PATH; it logs its call like the others.
    fn stub(host: &FakeHost, name: &str, body: &str) {
        let file = host.path("bin").join(name);
        let text = format!(
            "#!/bin/bash\nprintf '%s\\n' \"{name}$(printf ' %s' \"$@\")\" >>\"$STUB/calls\"\n{body}\n"
        );
        fs::write(&file, text).expect("write stub");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// A seat's inputs, as the end-to-end boot test has them.
    fn seat_inputs(kind: HostKind) -> UserDataInputs<'static> {
        let mut i = inputs(kind, "127.0.0.1");
        i.port = 8890;
        i.pull_deadline_secs = 60;
        i.jupyter_deadline_secs = 30;
        i
    }

    #[test]
    fn seats_launched_together_share_one_user_data_that_picks_each_ones_name() {
        let script = seats_batch(HostKind::Al2023);
        let one = render_boot(&UserDataInputs {
            deployment: "lab-1",
            ..seat_inputs(HostKind::Al2023)
        })
        .expect("boot renders");
        // Three seats cost little more than one (the common part is there once).
        assert!(gzip(&script).len() < gzip(&one).len() + 600);
        assert_eq!(script.matches("readonly IMAGE=").count(), 1);
        assert!(script.contains("\n2) DEPLOYMENT='lab-3'; CONTAINER='labship-ec2-lab-3'; VOLUME='labship-ec2-lab-3-work' ;;\n"), "{script}");

        // Each instance runs as the seat of its launch index.
        for (index, seat) in [("0", "lab-1"), ("2", "lab-3")] {
            let host = FakeHost::new(false, false);
            let run = host.run(
                &script,
                &[("STUB_LAUNCH_INDEX", index), ("STUB_DEPLOYMENT", seat)],
            );
            let context = context(&run, &host);
            assert!(run.ok, "{context}");
            assert!(
                host.container(&format!("labship-ec2-{seat}")).is_some(),
                "{context}"
            );
            assert!(run.stdout.contains("labship: ready"), "{context}");
            assert!(host.calls().contains("ami-launch-index"), "{context}");
        }
        // An index with no seat, and no metadata service: the boot stops, saying why.
        let host = FakeHost::new(false, false);
        let run = host.run(&script, &[("STUB_LAUNCH_INDEX", "3")]);
        assert!(!run.ok);
        assert!(run
            .stdout
            .contains("labship: error phase=boot no seat of this launch has index 3"));
        assert!(host.calls().lines().all(|l| !l.starts_with("docker run")));
    }

    #[test]
    fn seats_that_differ_in_more_than_their_names_are_not_batched() {
        let scripts = |ports: [u16; 2]| -> Vec<String> {
            ["lab-1", "lab-2"]
                .iter()
                .zip(ports)
                .map(|(d, port)| {
                    render_boot(&UserDataInputs {
                        deployment: d,
                        port,
                        ..seat_inputs(HostKind::Al2023)
                    })
                    .expect("boot renders")
                })
                .collect()
        };
        assert!(batch(&scripts([8888, 8888])).is_some());
        // The port is an assignment too, and may differ: each instance takes its own.
        let ports = batch(&scripts([8888, 9999])).expect("batched");
        assert!(ports.contains("1) DEPLOYMENT='lab-2'; CONTAINER='labship-ec2-lab-2'; VOLUME='labship-ec2-lab-2-work'; PORT='9999' ;;"), "{ports}");
        // One script: nothing to share; a line that is no assignment: not batched.
        assert!(batch(&scripts([8888, 8888])[..1]).is_none());
        let mut other = scripts([8888, 8888]);
        other[1] = other[1].replacen("set -o errtrace", "set -o errtrace # lab-2", 1);
        assert!(batch(&other).is_none());
        other[1] = other[1].replacen("set -o errtrace # lab-2\n", "", 1);
        assert!(batch(&other).is_none());
    }

    fn data_inputs() -> UserDataInputs<'static> {
        let mut i = inputs(HostKind::Al2023, "127.0.0.1");
        i.data_volume = true;
        i.pull_deadline_secs = 60;
        i.jupyter_deadline_secs = 30;
        i
    }

    #[test]
    fn boot_script_puts_the_workspace_on_the_data_volume() {
        for reused in [false, true] {
            let host = FakeHost::new(false, false);
            // The simulator's attachment: a link to the volume's folder.
            let vol = host.path("ebs/vol-0abc");
            fs::create_dir_all(&vol).expect("volume folder");
            if reused {
                fs::create_dir_all(vol.join("workspace")).expect("workspace");
                fs::write(vol.join("workspace/mine.ipynb"), "{}").expect("notebook");
            }
            fs::create_dir_all(host.path("attached")).expect("attached");
            std::os::unix::fs::symlink(&vol, host.path("attached/vol-0abc")).expect("link");
            let attached = host.path("attached");
            let script = render_boot(&data_inputs()).expect("renders");
            let run = host.run(
                &script,
                &[(
                    "LABSHIP_SIM_EBS_DIR",
                    attached.to_str().expect("utf-8 path"),
                )],
            );
            let calls = host.calls();
            let context = format!(
                "reused: {reused}\nstdout:\n{}\nstderr:\n{}\ncalls:\n{calls}",
                run.stdout, run.stderr
            );
            assert!(run.ok, "{context}");
            assert_eq!(
                kinds(&markers(&run.stdout)),
                phases(&Phase::ALL),
                "{context}"
            );
            let real = fs::canonicalize(&vol).expect("canonical");
            let create = format!(
                "docker volume create --label dev.labship.ec2.deployment=demo --opt type=none --opt o=bind --opt device={}/workspace labship-ec2-demo-work",
                real.display()
            );
            assert_eq!(count_lines(&calls, &create), 1, "{context}");
            assert!(real.join("workspace").is_dir(), "{context}");
            assert!(
                calls
                    .lines()
                    .any(|l| l.starts_with("docker run -d --name labship-ec2-demo ")
                        && l.contains(" -v labship-ec2-demo-work:/home/jovyan ")),
                "{context}"
            );
            // A kept workspace gets the image's new files (cp -n); a new one is Docker's to fill.
            let synced = calls.lines().any(|l| {
                l.starts_with("docker run --rm --user 0 --entrypoint cp -v labship-ec2-demo-work:")
            });
            assert_eq!(synced, reused, "{context}");
        }
    }

    #[test]
    fn boot_script_without_its_data_volume_stops_at_the_deadline() {
        let host = FakeHost::new(true, true);
        fs::create_dir_all(host.path("attached")).expect("attached");
        let attached = host.path("attached");
        let script = render_boot(&data_inputs()).expect("renders");
        let run = host.run(
            &script,
            &[
                (
                    "LABSHIP_SIM_EBS_DIR",
                    attached.to_str().expect("utf-8 path"),
                ),
                ("LABSHIP_DATA_DEADLINE", "2"),
                ("STUB_PULL_FAILS", "0"),
            ],
        );
        assert!(!run.ok, "{}", run.stdout);
        match markers(&run.stdout).last().map(|m| &m.phase) {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "data");
                assert!(
                    cause.contains(
                        "no data volume was attached within 2s; `labship up` again attaches it"
                    ),
                    "{cause}"
                );
            }
            other => panic!("expected an error marker, got {other:?}\n{}", run.stdout),
        }
        let calls = host.calls();
        assert!(!calls.contains("docker run"), "{calls}");
        assert!(!calls.contains("docker volume create"), "{calls}");
    }

    /// blkid finding nothing is not enough to format: a disk that is not all zeros in its
    /// first MiB (or cannot be read) is left as it is, and the boot stops there.
    #[test]
    fn boot_script_never_formats_a_disk_that_is_not_blank() {
        let host = FakeHost::new(true, true);
        stub(&host, "findmnt", r#"echo /dev/nvme0n1p1"#);
        stub(
            &host,
            "lsblk",
            r#"case "$*" in
"-no PKNAME /dev/nvme0n1p1") echo nvme0n1 ;;
"-dno NAME,SERIAL") printf 'nvme0n1 vol0aaaaroot\nnvme1n1 vol0bbbbdata\n' ;;
esac"#,
        );
        stub(&host, "blkid", "exit 2");
        stub(&host, "mkfs.ext4", r#"touch "$STUB/formatted""#);
        stub(&host, "mkfs.xfs", r#"touch "$STUB/formatted""#);
        let dev = host.path("dev");
        fs::create_dir_all(&dev).expect("dev");
        let mut disk = vec![0u8; 2 << 20];
        disk[4096..4105].copy_from_slice(b"notebooks");
        fs::write(dev.join("nvme1n1"), disk).expect("disk");
        let mnt = host.path("mnt");
        let fstab = host.path("fstab");
        let none = host.path("no-such-device");
        let run = host.run(
            &render_boot(&data_inputs()).expect("renders"),
            &[
                ("LABSHIP_DATA_MOUNT", mnt.to_str().expect("utf-8 path")),
                ("LABSHIP_FSTAB", fstab.to_str().expect("utf-8 path")),
                ("LABSHIP_DATA_DEVICES", none.to_str().expect("utf-8 path")),
                ("LABSHIP_DEV_DIR", dev.to_str().expect("utf-8 path")),
                ("STUB_PULL_FAILS", "0"),
            ],
        );
        assert!(!run.ok, "{}", run.stdout);
        match markers(&run.stdout).last().map(|m| &m.phase) {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "data");
                assert!(cause.contains("not blank"), "{cause}");
            }
            other => panic!("expected an error marker, got {other:?}\n{}", run.stdout),
        }
        assert!(
            !host.path("state/formatted").exists(),
            "it formatted the disk"
        );
        assert!(!host.calls().contains("docker run"), "{}", host.calls());
    }

    /// The real host's way, with util-linux and mkfs stubbed: the EBS NVMe disk that is not
    /// the root's is formatted once, put in fstab once, mounted, and bound.
    #[test]
    fn boot_script_formats_mounts_and_binds_an_ebs_disk_once() {
        let host = FakeHost::new(true, true);
        stub(
            &host,
            "findmnt",
            r#"[ "$*" = "-no SOURCE /" ] && echo /dev/nvme0n1p1"#,
        );
        stub(
            &host,
            "lsblk",
            r#"case "$*" in
"-no PKNAME /dev/nvme0n1p1") echo nvme0n1 ;;
"-dno NAME,SERIAL") printf 'nvme0n1 vol0aaaaroot\nnvme1n1 vol0bbbbdata\nnvme2n1 AWS1234instancestore\n' ;;
*) exit 2 ;;
esac"#,
        );
        stub(
            &host,
            "blkid",
            r#"case "$*" in
"-p $DEV/nvme1n1") [ -e "$STUB/formatted" ] || exit 2 ;;
"-o value -s TYPE $DEV/nvme1n1") [ -e "$STUB/formatted" ] && echo ext4 ;;
"-o value -s UUID $DEV/nvme1n1") [ -e "$STUB/formatted" ] && echo 0b5e7a11-uuid ;;
*) exit 4 ;;
esac"#,
        );
        stub(
            &host,
            "mkfs.ext4",
            r#"[ "$*" = "-q -L labship-data $DEV/nvme1n1" ] && touch "$STUB/formatted""#,
        );
        stub(&host, "mountpoint", r#"[ -e "$STUB/mounted" ]"#);
        stub(
            &host,
            "mount",
            r#"grep -qx "UUID=0b5e7a11-uuid $1 ext4 defaults,nofail,x-systemd.before=docker.service 0 2" "$LABSHIP_FSTAB" && touch "$STUB/mounted""#,
        );
        let mnt = host.path("mnt");
        let fstab = host.path("fstab");
        let none = host.path("no-such-device");
        // The new EBS disk reads as zeros.
        let dev = host.path("dev");
        fs::create_dir_all(&dev).expect("dev");
        fs::write(dev.join("nvme1n1"), vec![0u8; 2 << 20]).expect("disk");
        // An earlier volume's line for the same mount point, and the root's.
        fs::write(
            &fstab,
            format!(
                "UUID=older-volume {} ext4 defaults,nofail 0 2\n/dev/root / xfs defaults 0 0\n",
                mnt.display()
            ),
        )
        .expect("fstab");
        let env = [
            ("LABSHIP_DATA_MOUNT", mnt.to_str().expect("utf-8 path")),
            ("LABSHIP_FSTAB", fstab.to_str().expect("utf-8 path")),
            ("LABSHIP_DATA_DEVICES", none.to_str().expect("utf-8 path")),
            ("LABSHIP_DEV_DIR", dev.to_str().expect("utf-8 path")),
            ("DEV", dev.to_str().expect("utf-8 path")),
            ("STUB_PULL_FAILS", "0"),
        ];
        let script = render_boot(&data_inputs()).expect("renders");
        // First boot, then a boot where the disk (already formatted) is not mounted yet.
        for boot in 1..=2 {
            let _ = fs::remove_file(host.path("state/mounted"));
            let _ = fs::remove_dir_all(host.path("state/containers/labship-ec2-demo"));
            let run = host.run(&script, &env);
            let calls = host.calls();
            let context = format!("boot {boot}\nstdout:\n{}\ncalls:\n{calls}", run.stdout);
            assert!(run.ok, "{context}");
            assert_eq!(
                count_lines(
                    &calls,
                    &format!("mkfs.ext4 -q -L labship-data {}/nvme1n1", dev.display())
                ),
                1,
                "{context}"
            );
            assert_eq!(
                count_lines(&calls, &format!("mount {}", mnt.display())),
                boot,
                "{context}"
            );
            assert_eq!(
                host.read("fstab"),
                format!(
                    "/dev/root / xfs defaults 0 0\nUUID=0b5e7a11-uuid {} ext4 defaults,nofail,x-systemd.before=docker.service 0 2\n",
                    mnt.display()
                ),
                "{context}"
            );
            assert!(mnt.join("workspace").is_dir(), "{context}");
            assert_eq!(
                count_lines(
                    &calls,
                    &format!(
                        "docker volume create --label dev.labship.ec2.deployment=demo --opt type=none --opt o=bind --opt device={}/workspace labship-ec2-demo-work",
                        mnt.display()
                    )
                ),
                1,
                "{context}"
            );
        }
    }

    #[test]
    fn new_inputs_leave_the_running_container_and_its_inputs_alone_until_the_new_one_is_ready() {
        let host = FakeHost::new(true, true);
        fs::write(
            host.path("state/containers/labship-ec2-demo"),
            "sha256:old running 0 0 127.0.0.1:8888 0123456789abcdef\n",
        )
        .expect("container");
        host.touch("state/volumes/labship-ec2-demo-work");
        let old_copy = host.path("state/inputs/demo/0123456789abcdef");
        fs::create_dir_all(&old_copy).expect("mkdir");
        fs::write(old_copy.join("points.csv"), "v\n1\n").expect("input");
        fs::write(host.path("state/inputs/demo.id"), "0123456789abcdef\n").expect("id");
        let mut i = inputs(HostKind::Al2023, "127.0.0.1");
        i.inputs = INPUTS;
        i.jupyter_deadline_secs = 2;
        // S3's refusal is retried until LOGIN_DEADLINE (3 minutes on a host): 3 s here.
        let rendered = render_replace(&i).expect("renders");
        let script = rendered.replace("readonly LOGIN_DEADLINE=180 ", "readonly LOGIN_DEADLINE=3 ");
        assert_ne!(script, rendered, "the script sets LOGIN_DEADLINE");
        let new_id = inputs_id(INPUTS);
        let replace = |extra: &[(&str, &str)]| {
            let mut env = vec![("STUB_PULL_FAILS", "0"), ("STUB_IMAGE_ID", "sha256:old")];
            env.extend_from_slice(extra);
            let run = host.run(&script, &env);
            let context = context(&run, &host);
            (run, context)
        };
        let untouched = |context: &str| {
            assert_eq!(
                host.container("labship-ec2-demo").as_deref(),
                Some("sha256:old running 0 0 127.0.0.1:8888 0123456789abcdef"),
                "{context}"
            );
            assert_eq!(host.container("labship-ec2-demo-previous"), None);
            assert_eq!(
                host.read("state/inputs/demo/0123456789abcdef/points.csv"),
                "v\n1\n",
                "the running container's inputs are kept\n{context}"
            );
            assert_eq!(host.read("state/inputs/demo.id"), "0123456789abcdef\n");
        };

        // The copy fails: the running container was never stopped.
        let (run, context) = replace(&[("STUB_S3_FAILS", "1")]);
        assert!(!run.ok, "{context}");
        match markers(&run.stdout).last().map(|m| &m.phase) {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "data", "{context}");
                assert!(cause.contains("AccessDenied"), "{cause}");
                assert!(!cause.contains("restored"), "{cause}");
            }
            other => panic!("expected an error marker, got {other:?}\n{context}"),
        }
        assert!(!host.calls().contains("docker stop"), "{context}");
        assert!(
            host.read("labship.log")
                .contains("input copy attempt 1 refused"),
            "a refusal is tried again until the deadline\n{context}"
        );
        let copies = host
            .calls()
            .lines()
            .filter(|l| l.starts_with("aws s3 cp"))
            .count();
        assert!(copies >= 2, "the copy was tried {copies} times\n{context}");
        untouched(&context);

        // The copy works but the new container never serves: the old one is put back with
        // the inputs it had.
        let (run, context) = replace(&[("STUB_SILENT_IMAGE", "sha256:old")]);
        assert!(!run.ok, "{context}");
        assert!(
            run.stdout.contains("restored the previous container"),
            "{context}"
        );
        untouched(&context);

        // It serves: the host keeps the new inputs only.
        let (run, context) = replace(&[]);
        assert!(run.ok, "{context}");
        assert_eq!(
            host.container("labship-ec2-demo").as_deref(),
            Some(format!("sha256:old running 0 0 127.0.0.1:8888 {new_id}").as_str())
        );
        assert_eq!(host.read("state/inputs/demo.id"), format!("{new_id}\n"));
        let copies: Vec<String> = fs::read_dir(host.path("state/inputs/demo"))
            .expect("inputs")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(copies, std::slice::from_ref(&new_id), "{context}");
        assert_eq!(
            host.read(&format!("state/inputs/demo/{new_id}/notes.txt")),
            "stub\n"
        );
        assert_eq!(
            host.read(&format!("state/inputs/demo/{new_id}/csv/object")),
            "stub\n"
        );
    }

    #[test]
    fn a_rotation_after_a_first_start_that_was_not_ready_in_time_keeps_the_inputs() {
        let host = FakeHost::new(true, true);
        let mut i = inputs(HostKind::Al2023, "127.0.0.1");
        i.inputs = INPUTS;
        i.jupyter_deadline_secs = 2;
        let id = inputs_id(INPUTS);
        let boot = host.run(
            &render_boot(&i).expect("renders"),
            &[
                ("STUB_PULL_FAILS", "0"),
                ("STUB_SILENT_IMAGE", "sha256:1111"),
            ],
        );
        assert!(!boot.ok, "{}\n{}", boot.stdout, host.calls());
        // The container runs on (its restart policy) with the inputs, and the host says so.
        assert_eq!(host.read("state/inputs/demo.id"), format!("{id}\n"));
        i.inputs = KEEP_INPUTS;
        let rotated = host.run(
            &render_recreate(&i).expect("renders"),
            &[("STUB_PULL_FAILS", "0")],
        );
        let context = context(&rotated, &host);
        assert!(rotated.ok, "{context}");
        assert_eq!(
            host.container("labship-ec2-demo").as_deref(),
            Some(format!("sha256:1111 running 0 0 127.0.0.1:8888 {id}").as_str()),
            "{context}"
        );
        assert_eq!(
            host.read(&format!("state/inputs/demo/{id}/notes.txt")),
            "stub\n",
            "{context}"
        );
    }

    #[test]
    fn replace_script_restores_the_old_container_when_the_new_one_fails() {
        let host = host_with_old_container();
        let mut i = inputs(HostKind::Al2023, "127.0.0.1");
        i.jupyter_deadline_secs = 2;
        let script = render_replace(&i).expect("renders");
        let run = host.run(
            &script,
            &[
                ("STUB_PULL_FAILS", "0"),
                ("STUB_IMAGE_ID", "sha256:new"),
                ("STUB_SILENT_IMAGE", "sha256:new"),
            ],
        );
        let context = context(&run, &host);
        assert!(!run.ok, "{context}");
        let found = markers(&run.stdout);
        match found.last().map(|m| &m.phase) {
            Some(MarkerKind::Error { phase, cause }) => {
                assert_eq!(phase, "jupyter");
                assert!(cause.contains("no Jupyter token URL"), "{cause}");
                assert!(cause.contains("restored the previous container"), "{cause}");
            }
            other => panic!("expected an error marker, got {other:?}\n{context}"),
        }
        assert!(!found
            .iter()
            .any(|m| m.phase == MarkerKind::Phase(Phase::Ready)));
        assert!(host
            .read("console")
            .contains("labship: error phase=jupyter "));
        assert_eq!(
            host.container("labship-ec2-demo").as_deref(),
            Some("sha256:old running 0 0")
        );
        assert_eq!(host.container("labship-ec2-demo-previous"), None);
    }
}
