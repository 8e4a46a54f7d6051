//! `labship.toml`, found by walking up from the current directory like `Cargo.toml`, and
//! layered: command-line flags over `LABSHIP_*` environment variables over the file over
//! defaults. Unknown keys are errors (`deny_unknown_fields`), so a typo never silently falls
//! back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const FILE_NAME: &str = "labship.toml";
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.medium";
/// The port Jupyter is published on, on the instance and in the URL.
pub const DEFAULT_EC2_PORT: u16 = 8888;

/// The file as written by the user. Every field is optional; defaults are applied in [`Config::resolve`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: Option<String>,
    /// Where `up`, `status`, `token`, `logs` and `down` act: "local" or "ec2".
    pub target: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    #[serde(default)]
    pub build: BuildSection,
    #[serde(default)]
    pub push: PushSection,
    #[serde(default)]
    pub ec2: Ec2Section,
    #[serde(default)]
    pub workspace: WorkspaceSection,
    #[serde(default)]
    pub data: DataSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// S3 folders or objects (`s3://bucket/prefix/`) a job gets in `inputs/<name>/` of its
    /// workspace.
    pub inputs: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSection {
    /// A git repository (`URL` or `URL#REF`) whose files every deployment and seat gets in
    /// its workspace when it starts (a student's changed file is kept).
    pub git: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    pub context: Option<PathBuf>,
    pub dockerfile: Option<PathBuf>,
    pub target: Option<String>,
    pub platform: Option<String>,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// "auto" (BuildKit when the engine has it), "buildkit" or "classic".
    pub builder: Option<String>,
    /// Build secrets, as `--secret` takes them: `id=NAME,src=FILE` or `id=NAME,env=VAR`.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The network RUN steps use: "default", "host" or "none".
    pub network: Option<String>,
    /// SSH agents for `RUN --mount=type=ssh`, as `--ssh` takes them: `default` or `ID=SOCKET`.
    #[serde(default)]
    pub ssh: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSection {
    pub repository: Option<String>,
    pub registry_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Section {
    pub instance_type: Option<String>,
    /// "ecs" (ECS-optimized Amazon Linux 2023, Docker preinstalled), "al2023", or an AMI id.
    pub ami: Option<String>,
    /// A subnet to launch in (default: the default VPC's default subnets).
    pub subnet: Option<String>,
    /// The port Jupyter is published on.
    pub port: Option<u16>,
    /// CIDRs that may reach the Jupyter port (default: your public IP as /32).
    pub allow_cidr: Option<Vec<String>>,
    /// An EC2 key pair: opens SSH (port 22) to the same CIDRs and installs the key.
    pub ssh_key: Option<String>,
    /// "https" (the default) or "ssm" (no open port; SSM port forwarding).
    pub access: Option<String>,
    /// Stop the instance after this long without activity in Jupyter ("60m", "off").
    pub idle_stop: Option<String>,
    /// Stop the instance this long after it started, busy or not ("24h", "off").
    pub ttl: Option<String>,
    /// Size of a new data volume (the workspace), in GiB.
    pub volume_size: Option<u32>,
    /// Launch spot instances (persistent request, stopped on interruption).
    pub spot: Option<bool>,
}

/// Settings that can come from flags or the environment (one struct for both layers).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub name: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub context: Option<PathBuf>,
    pub dockerfile: Option<PathBuf>,
    pub target: Option<String>,
    pub platform: Option<String>,
    pub builder: Option<String>,
    /// `--secret` (added to those of labship.toml).
    pub secrets: Vec<String>,
    pub network: Option<String>,
    /// `--ssh` (added to those of labship.toml).
    pub ssh: Vec<String>,
    pub build_args: Vec<(String, String)>,
    pub repository: Option<String>,
    pub registry_endpoint: Option<String>,
    /// `--insecure-registry-endpoint`: the user accepts a registry endpoint that is neither
    /// on this machine nor ECR (never from labship.toml: see [`check_registry_endpoint`]).
    pub insecure_registry_endpoint: bool,
    pub instance_type: Option<String>,
    pub deploy_target: Option<Target>,
    pub ami: Option<String>,
    pub subnet: Option<String>,
    pub idle_stop: Option<String>,
    pub ttl: Option<String>,
    pub volume_size: Option<String>,
    pub spot: Option<bool>,
    /// `--git URL[#REF]`.
    pub git: Option<String>,
    /// `--input s3://...` (repeatable), added to `[data] inputs`.
    pub inputs: Vec<String>,
}

impl Overrides {
    /// The `LABSHIP_*` layer. `get` is the environment (a parameter so tests need not mutate it).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let build_args = match var("LABSHIP_BUILD_ARGS") {
            Some(list) => list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(parse_build_arg)
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Overrides {
            config: var("LABSHIP_CONFIG").map(PathBuf::from),
            name: var("LABSHIP_NAME"),
            region: var("LABSHIP_REGION"),
            profile: var("LABSHIP_PROFILE"),
            context: var("LABSHIP_CONTEXT").map(PathBuf::from),
            dockerfile: var("LABSHIP_DOCKERFILE").map(PathBuf::from),
            target: var("LABSHIP_TARGET"),
            platform: var("LABSHIP_PLATFORM"),
            builder: var("LABSHIP_BUILDER"),
            secrets: Vec::new(),
            network: var("LABSHIP_BUILD_NETWORK"),
            ssh: Vec::new(),
            build_args,
            repository: var("LABSHIP_REPOSITORY"),
            registry_endpoint: var("LABSHIP_REGISTRY_ENDPOINT"),
            insecure_registry_endpoint: var("LABSHIP_INSECURE_REGISTRY_ENDPOINT")
                .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes")),
            instance_type: var("LABSHIP_INSTANCE_TYPE"),
            deploy_target: var("LABSHIP_DEPLOY_TARGET")
                .map(|t| Target::parse(&t))
                .transpose()?,
            ami: var("LABSHIP_AMI"),
            subnet: var("LABSHIP_SUBNET"),
            idle_stop: var("LABSHIP_IDLE_STOP"),
            ttl: var("LABSHIP_TTL"),
            volume_size: var("LABSHIP_VOLUME_SIZE"),
            spot: var("LABSHIP_SPOT")
                .map(|v| parse_switch("LABSHIP_SPOT", &v))
                .transpose()?,
            git: var("LABSHIP_GIT"),
            inputs: Vec::new(),
        })
    }

    /// `self` over `lower`, field by field; build args merge key by key.
    pub fn over(self, lower: Overrides) -> Overrides {
        let mut build_args = lower.build_args;
        build_args.extend(self.build_args);
        Overrides {
            config: self.config.or(lower.config),
            name: self.name.or(lower.name),
            region: self.region.or(lower.region),
            profile: self.profile.or(lower.profile),
            context: self.context.or(lower.context),
            dockerfile: self.dockerfile.or(lower.dockerfile),
            target: self.target.or(lower.target),
            platform: self.platform.or(lower.platform),
            builder: self.builder.or(lower.builder),
            secrets: [lower.secrets, self.secrets].concat(),
            network: self.network.or(lower.network),
            ssh: [lower.ssh, self.ssh].concat(),
            build_args,
            repository: self.repository.or(lower.repository),
            registry_endpoint: self.registry_endpoint.or(lower.registry_endpoint),
            insecure_registry_endpoint: self.insecure_registry_endpoint
                || lower.insecure_registry_endpoint,
            instance_type: self.instance_type.or(lower.instance_type),
            deploy_target: self.deploy_target.or(lower.deploy_target),
            ami: self.ami.or(lower.ami),
            subnet: self.subnet.or(lower.subnet),
            idle_stop: self.idle_stop.or(lower.idle_stop),
            ttl: self.ttl.or(lower.ttl),
            volume_size: self.volume_size.or(lower.volume_size),
            spot: self.spot.or(lower.spot),
            git: self.git.or(lower.git),
            inputs: [lower.inputs, self.inputs].concat(),
        }
    }
}

/// `KEY=VALUE` as given to `--build-arg` or in `LABSHIP_BUILD_ARGS`.
pub fn parse_build_arg(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::InvalidSetting {
            what: "build argument",
            value: s.to_string(),
            reason: "expected KEY=VALUE".into(),
            hint:
                "write build arguments as KEY=VALUE, e.g. --build-arg BASE_IMAGE=python:3.12-slim"
                    .into(),
        }),
    }
}

/// A CPU architecture of images and instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn platform(self) -> &'static str {
        match self {
            Arch::Amd64 => "linux/amd64",
            Arch::Arm64 => "linux/arm64",
        }
    }

    pub fn parse_platform(s: &str) -> Option<Arch> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linux/amd64" | "amd64" | "linux/x86_64" | "x86_64" => Some(Arch::Amd64),
            "linux/arm64" | "arm64" | "linux/arm64/v8" | "linux/aarch64" | "aarch64" => {
                Some(Arch::Arm64)
            }
            _ => None,
        }
    }

    /// The architecture of an EC2 instance type, from its name: Graviton families carry a `g`
    /// in the attribute letters after the generation digit (t4g, m7gd, c6gn, im4gn, hpc7g) and
    /// `a1` is the first Graviton. This lets `build` pick the platform without an AWS call;
    /// `up` confirms it with DescribeInstanceTypes before creating anything.
    pub fn of_instance_type(instance_type: &str) -> Arch {
        let family = instance_type.split('.').next().unwrap_or_default();
        if family == "a1" {
            return Arch::Arm64;
        }
        let after_digits = family
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim_start_matches(|c: char| c.is_ascii_digit());
        let attributes = after_digits.split('-').next().unwrap_or_default();
        if attributes.contains('g') {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }
}

/// Where a deployment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The local Docker engine (the default: needs no AWS account).
    Local,
    /// An EC2 instance in the user's AWS account.
    Ec2,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Target::Local),
            "ec2" | "aws" => Ok(Target::Ec2),
            _ => Err(Error::InvalidSetting {
                what: "target",
                value: s.to_string(),
                reason: "labship runs deployments locally or on EC2".into(),
                hint: "use target = \"local\" or target = \"ec2\" (flags: --local, --ec2)".into(),
            }),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Local => "local",
            Target::Ec2 => "ec2",
        })
    }
}

/// A build secret and where its value comes from (never the value itself: it is read when
/// the build starts, and never reaches labship.toml, argv or the content tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSpec {
    /// `id=NAME,src=FILE` (also `source=`), or `id=NAME,env=VAR`, as `docker build --secret`
    /// takes them (`type=` is accepted and checked). A relative FILE is relative to `base`.
    pub fn parse(spec: &str, base: &Path) -> Result<SecretSpec> {
        let bad = |reason: &str| {
            Error::InvalidSetting {
            what: "secret",
            value: spec.to_string(),
            reason: reason.to_string(),
            hint: "write it as id=NAME,src=FILE or id=NAME,env=VAR (the value itself never goes on the command line)".into(),
        }
        };
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(&format!("`{part}` is not KEY=VALUE")))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.trim().to_string()),
                "src" | "source" => src = Some(v.trim().to_string()),
                "env" => env = Some(v.trim().to_string()),
                "type" => kind = Some(v.trim().to_ascii_lowercase()),
                other => return Err(bad(&format!("unknown key `{other}`"))),
            }
        }
        let id = id.filter(|i| !i.is_empty()).ok_or_else(|| bad("no id"))?;
        let source = match (src, env, kind.as_deref()) {
            (Some(_), Some(_), _) => return Err(bad("both src and env")),
            (Some(f), None, None | Some("file")) => {
                SecretSource::File(absolute(base, Path::new(&f)))
            }
            (None, Some(v), None | Some("env")) => SecretSource::Env(v),
            (None, None, _) => return Err(bad("no src=FILE or env=VAR")),
            _ => return Err(bad("type= does not match src/env")),
        };
        Ok(SecretSpec { id, source })
    }
}

/// Which of the engine's builders runs the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// BuildKit when the engine has it (Linux engines since API 1.39), else classic.
    #[default]
    Auto,
    /// BuildKit (`RUN --mount`, parallel stages, its cache); an engine without it is an error.
    Buildkit,
    /// The classic builder (a layer per instruction; no `RUN --mount`).
    Classic,
}

impl Builder {
    pub fn parse(s: &str) -> Result<Builder> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Builder::Auto),
            "buildkit" => Ok(Builder::Buildkit),
            "classic" | "legacy" => Ok(Builder::Classic),
            _ => Err(Error::InvalidSetting {
                what: "builder",
                value: s.to_string(),
                reason: "the engine builds with BuildKit or with its classic builder".into(),
                hint: "use --builder auto (the default), buildkit or classic (build.builder in labship.toml, LABSHIP_BUILDER)".into(),
            }),
        }
    }
}

/// How users reach Jupyter on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// HTTPS on the instance's public address, its port open only to the allowed CIDRs (the
    /// default).
    #[default]
    Https,
    /// No inbound rule at all: an SSM port-forwarding session (the AWS session-manager-plugin)
    /// carries the TLS connection.
    Ssm,
}

impl Access {
    pub fn parse(s: &str) -> Result<Access> {
        match s.trim().to_ascii_lowercase().as_str() {
            "https" => Ok(Access::Https),
            "ssm" => Ok(Access::Ssm),
            _ => Err(Error::InvalidSetting {
                what: "access",
                value: s.to_string(),
                reason: "Jupyter on an instance is reached over HTTPS or through Systems Manager".into(),
                hint: "use --access https (the port open to your address) or --access ssm (no open port; needs the AWS session-manager-plugin)".into(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Https => "https",
            Access::Ssm => "ssm",
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host image an instance boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostAmi {
    /// ECS-optimized Amazon Linux 2023: Docker preinstalled (the default; see README).
    Ecs,
    /// Standard Amazon Linux 2023: Docker is installed at boot.
    Al2023,
    /// Any AMI by id; Docker is installed at boot when missing.
    Id(String),
}

impl HostAmi {
    pub fn parse(s: &str) -> Result<HostAmi> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "ecs" | "ecs-al2023" => Ok(HostAmi::Ecs),
            "al2023" | "amazon-linux-2023" => Ok(HostAmi::Al2023),
            _ if t.starts_with("ami-")
                && t.len() > 4
                && t[4..].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(HostAmi::Id(t.to_string()))
            }
            _ => Err(Error::InvalidSetting {
                what: "AMI",
                value: s.to_string(),
                reason: "expected ecs, al2023 or an AMI id (ami-...)".into(),
                hint: "use --ami ecs (ECS-optimized Amazon Linux 2023, the default), --ami al2023, or --ami ami-0123456789abcdef0".into(),
            }),
        }
    }
}

/// The resolved settings a command runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The project folder: where labship.toml lives, or the current directory.
    pub root: PathBuf,
    pub file: Option<PathBuf>,
    pub name: String,
    pub target: Target,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub build: BuildSettings,
    pub push: PushSettings,
    pub ec2: Ec2Settings,
    /// What goes into every workspace when a deployment starts.
    pub workspace: WorkspaceSettings,
    /// A job's data from S3.
    pub data: DataSettings,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DataSettings {
    /// `[data] inputs` and then `--input`, each once, in that order.
    pub inputs: Vec<crate::aws::s3::S3Uri>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkspaceSettings {
    /// The notebooks' git repository (`[workspace] git`, `--git`, `LABSHIP_GIT`).
    pub git: Option<GitSource>,
}

/// `scheme://user:secret@host/...` with the user and secret replaced by `***` (for messages).
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// A git repository and the branch, tag or commit to take (`URL#REF`; default its HEAD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitSource {
    pub url: String,
    pub reference: Option<String>,
}

impl GitSource {
    /// `URL` or `URL#REF`. A URL with a password or token in it is refused: it would reach
    /// git's command line and its logs; git's credential helpers and ssh-agent keep those.
    pub fn parse(spec: &str) -> Result<GitSource> {
        let bad = |reason: &str, hint: &str| Error::InvalidSetting {
            what: "git repository",
            value: without_credentials(spec),
            reason: reason.to_string(),
            hint: hint.to_string(),
        };
        let spec = spec.trim();
        let (url, reference) = match spec.rsplit_once('#') {
            Some((url, r)) => (url, Some(r)),
            None => (spec, None),
        };
        if url.is_empty() {
            return Err(bad(
                "it names no repository",
                "write it as URL or URL#BRANCH (a tag or a commit also works)",
            ));
        }
        if let Some(r) = reference {
            if r.is_empty()
                || r.starts_with('-')
                || r.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(bad(
                    "the part after # is not a branch, tag or commit",
                    "write it as URL#main, URL#v2 or URL#<commit>",
                ));
            }
        }
        if url.starts_with('-') || url.chars().any(char::is_control) {
            return Err(bad(
                "it is not a repository URL",
                "use https://host/owner/repo.git, git@host:owner/repo.git or a local path",
            ));
        }
        // https://user:secret@host/...: the secret would be on git's command line.
        if let Some((scheme, rest)) = url.split_once("://") {
            let authority = rest.split('/').next().unwrap_or_default();
            if scheme.starts_with("http") && authority.contains('@') {
                return Err(bad(
                    "it holds credentials, which would reach git's command line and its messages",
                    "drop them from the URL: git asks its credential helper (`git config --global credential.helper store`, or your platform's), and an ssh URL uses your ssh-agent",
                ));
            }
        }
        Ok(GitSource {
            url: url.to_string(),
            reference: reference.map(str::to_string),
        })
    }

    /// `URL#REF` as given (a URL with credentials never gets this far).
    pub fn spec(&self) -> String {
        match &self.reference {
            Some(r) => format!("{}#{r}", self.url),
            None => self.url.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildSettings {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub target: Option<String>,
    pub platform: Arch,
    pub args: BTreeMap<String, String>,
    pub builder: Builder,
    /// Secrets for `RUN --mount=type=secret` (BuildKit), read when the build starts.
    pub secrets: Vec<SecretSpec>,
    /// The network RUN steps use (`docker build --network`).
    pub network: BuildNetwork,
    /// SSH agents forwarded to `RUN --mount=type=ssh` (BuildKit).
    pub ssh: Vec<SshSpec>,
}

/// An SSH agent a build may use: `RUN --mount=type=ssh[,id=ID]` talks to the agent listening
/// on `socket` (keys never leave it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshSpec {
    pub id: String,
    pub socket: PathBuf,
}

impl SshSpec {
    /// `default` (or `ID`): the agent of `$SSH_AUTH_SOCK`; `ID=SOCKET`: that socket, relative
    /// to `base` when relative. As `docker build --ssh` takes them, but agent sockets only.
    pub fn parse(spec: &str, base: &Path, auth_sock: Option<&str>) -> Result<SshSpec> {
        let bad = |reason: String| {
            Error::InvalidSetting {
            what: "ssh",
            value: spec.to_string(),
            reason,
            hint: "write it as default (the agent of $SSH_AUTH_SOCK) or ID=/path/to/agent.sock; start an agent with `eval $(ssh-agent)` and add keys with `ssh-add`".into(),
        }
        };
        let (id, socket) = match spec.trim().split_once('=') {
            Some((id, path)) => (id.trim(), Some(path.trim())),
            None => (spec.trim(), None),
        };
        if id.is_empty() || id.contains(',') {
            return Err(bad("no id".into()));
        }
        let socket = match socket {
            Some("") => return Err(bad("no socket after `=`".into())),
            Some(path) if path.contains(',') => {
                return Err(bad(
                    "one agent socket per id (key files are not read: add them to an agent)".into(),
                ))
            }
            Some(path) => absolute(base, Path::new(path)),
            None => PathBuf::from(auth_sock.filter(|s| !s.is_empty()).ok_or_else(|| {
                bad("SSH_AUTH_SOCK is not set, so there is no agent to forward".into())
            })?),
        };
        Ok(SshSpec {
            id: id.to_string(),
            socket,
        })
    }
}

/// The network a build's RUN steps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildNetwork {
    /// The engine's default (a bridge network with outside access).
    #[default]
    Default,
    /// The machine's own network: a package index or proxy on this machine's loopback.
    Host,
    /// No network at all.
    None,
}

impl BuildNetwork {
    pub fn parse(value: &str) -> Result<BuildNetwork> {
        match value {
            "default" => Ok(BuildNetwork::Default),
            "host" => Ok(BuildNetwork::Host),
            "none" => Ok(BuildNetwork::None),
            other => Err(Error::InvalidSetting {
                what: "build network",
                value: other.to_string(),
                reason: "RUN steps use the engine's default network, the host's, or none".into(),
                hint: "use --network default, host or none (build.network in labship.toml, LABSHIP_BUILD_NETWORK)".into(),
            }),
        }
    }

    /// The value of the engine API's `networkmode`.
    pub fn api_value(self) -> &'static str {
        match self {
            BuildNetwork::Default => "default",
            BuildNetwork::Host => "host",
            BuildNetwork::None => "none",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PushSettings {
    pub repository: String,
    /// Replaces the host of the registry GetAuthorizationToken reports (private mirrors, tests).
    pub registry_endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ec2Settings {
    pub instance_type: String,
    /// `instance_type` was given (`--instance-type`, `ec2.instance_type`), not the default.
    #[serde(skip)]
    pub instance_type_asked: bool,
    pub ami: HostAmi,
    pub subnet: Option<String>,
    pub port: u16,
    pub allow_cidr: Vec<String>,
    pub ssh_key: Option<String>,
    /// `None`: not set (an existing instance keeps how it is reached; a new one is HTTPS).
    pub access: Option<Access>,
    /// How long the instance may be idle before it stops itself (`Some(None)`: never;
    /// `None`: not set, so a running deployment keeps its own and a new one gets
    /// [`DEFAULT_IDLE_STOP`]).
    pub idle_stop: Option<Option<std::time::Duration>>,
    /// How long the instance may run after it started before it stops itself (`Some(None)`:
    /// no limit; `None`: not set, as for `idle_stop`, with [`DEFAULT_TTL`]).
    pub ttl: Option<Option<std::time::Duration>>,
    /// Size in GiB of a new data volume (`None`: not set; a new one gets
    /// [`DEFAULT_VOLUME_GIB`], a kept one keeps its size).
    pub volume_size: Option<i32>,
    /// Launch spot instances (`None`: not set; a new one is on-demand).
    pub spot: Option<bool>,
}

/// `1`/`true`/`yes` or `0`/`false`/`no` (any case), for a `LABSHIP_*` switch.
pub fn parse_switch(what: &'static str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(Error::InvalidSetting {
            what,
            value: value.to_string(),
            reason: "a switch is on or off".into(),
            hint: format!("set {what} to 1, true or yes (on), or 0, false or no (off)"),
        }),
    }
}

/// The default size of a data volume: room for a course's notebooks and data sets at a
/// small monthly cost (gp3 is billed per GiB-month).
pub const DEFAULT_VOLUME_GIB: i32 = 20;
/// gp3's limits.
const VOLUME_GIB: std::ops::RangeInclusive<i32> = 1..=16384;

/// `20`, `20G`, `20GiB` or `1T`/`1TiB` (a whole number of GiB or TiB), for `--volume-size`.
pub fn parse_volume_size(value: &str) -> Result<i32> {
    let v = value.trim();
    let bad = |reason: &str| {
        Error::InvalidSetting {
        what: "volume size",
        value: value.to_string(),
        reason: reason.to_string(),
        hint: "give the data volume's size in GiB, e.g. --volume-size 20 (or 20GiB, 1TiB; ec2.volume_size = 20 in labship.toml)".into(),
    }
    };
    let digits = v.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = v.split_at(digits);
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gb" | "gib" => 1,
        "t" | "tb" | "tib" => 1024,
        _ => return Err(bad("the unit must be GiB or TiB")),
    };
    let gib = number
        .parse::<i64>()
        .map_err(|_| bad("it is not a whole number"))?
        .saturating_mul(factor);
    i32::try_from(gib)
        .ok()
        .filter(|g| VOLUME_GIB.contains(g))
        .ok_or_else(|| bad("a gp3 volume is 1 GiB to 16 TiB"))
}

/// The default idle stop: an hour without a kernel or terminal doing anything.
pub const DEFAULT_IDLE_STOP: std::time::Duration = std::time::Duration::from_secs(60 * 60);
/// The default TTL: a day after each start, whatever it does.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// `30s`, `45m`, `8h`, `2d` or `off` (`None`), for `--idle-stop` and `--ttl`: at least 30
/// seconds, at most 30 days.
///
/// Hand-written rather than a duration crate's parser: those accept months, years and sums
/// (`1h 30m`), which read ambiguously for a limit; here a value is one number and one unit.
pub fn parse_lifetime(what: &'static str, value: &str) -> Result<Option<std::time::Duration>> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = |reason: &str| Error::InvalidSetting {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
        hint: "give a number and a unit, s, m, h or d (e.g. 45m, 8h), from 30s to 30d; or `off`"
            .to_string(),
    };
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("it does not start with a number"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        "" => return Err(bad("it has no unit")),
        _ => return Err(bad("the unit is not s, m, h or d")),
    };
    if !(30..=30 * 86_400).contains(&secs) {
        return Err(bad("it is outside 30s to 30d"));
    }
    Ok(Some(std::time::Duration::from_secs(secs)))
}

/// A lifetime the way it is written (`90s`, `45m`, `8h`, `2d`, `off`): tags, plans, status.
pub fn lifetime_text(d: Option<std::time::Duration>) -> String {
    match d.map(|d| d.as_secs()) {
        None => "off".into(),
        Some(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        Some(s) if s % 3600 == 0 => format!("{}h", s / 3600),
        Some(s) if s % 60 == 0 => format!("{}m", s / 60),
        Some(s) => format!("{s}s"),
    }
}

impl Config {
    /// Loads the file (given, or found upwards from `cwd`) and applies the layers.
    /// `flags` are the command line, `env` the `LABSHIP_*` variables.
    pub fn load(cwd: &Path, flags: Overrides, env: Overrides) -> Result<Config> {
        let layered = flags.over(env);
        let file_path = match &layered.config {
            Some(p) => Some(absolute(cwd, p)),
            None => find_upwards(cwd),
        };
        let file = match &file_path {
            Some(p) => parse_file(p)?,
            None => FileConfig::default(),
        };
        let root = file_path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| cwd.to_path_buf());
        Self::resolve(cwd, root, file_path, file, layered)
    }

    fn resolve(
        cwd: &Path,
        root: PathBuf,
        file_path: Option<PathBuf>,
        file: FileConfig,
        over: Overrides,
    ) -> Result<Config> {
        let name = match over.name.or(file.name) {
            Some(n) => validate_name(&n)?,
            None => name_of_folder(root.file_name().and_then(|s| s.to_str()).unwrap_or("lab")),
        };

        // Relative paths from flags/env are relative to the current directory, from the file
        // to the file's folder.
        let context = match (over.context, file.build.context) {
            (Some(p), _) => absolute(cwd, &p),
            (None, Some(p)) => absolute(&root, &p),
            (None, None) => root.join("docker"),
        };
        let dockerfile = match (over.dockerfile, file.build.dockerfile) {
            (Some(p), _) => absolute(cwd, &p),
            (None, Some(p)) => absolute(&root, &p),
            (None, None) => context.join("Dockerfile"),
        };

        let asked_type = over.instance_type.or(file.ec2.instance_type);
        let instance_type_asked = asked_type.is_some();
        let instance_type = asked_type.unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_string());
        if !valid_instance_type(&instance_type) {
            return Err(Error::InvalidSetting {
                what: "instance type",
                value: instance_type,
                reason: "expected FAMILY.SIZE".into(),
                hint: "use an EC2 instance type name such as t3.medium or m7g.large".into(),
            });
        }
        let platform = match over.platform.or(file.build.platform) {
            Some(p) => Arch::parse_platform(&p).ok_or_else(|| Error::InvalidSetting {
                what: "platform",
                value: p.clone(),
                reason: "EC2 runs linux/amd64 or linux/arm64 images".into(),
                hint:
                    "use linux/amd64 or linux/arm64, or leave it unset to follow the instance type"
                        .into(),
            })?,
            None => Arch::of_instance_type(&instance_type),
        };

        let mut args = file.build.args;
        args.extend(over.build_args);

        let repository = over
            .repository
            .or(file.push.repository)
            .unwrap_or_else(|| format!("labship/{name}"));
        validate_repository(&repository)?;

        let deploy_target = match (over.deploy_target, file.target) {
            (Some(t), _) => t,
            (None, Some(t)) => Target::parse(&t)?,
            (None, None) => Target::Local,
        };
        let ami = match over.ami.or(file.ec2.ami) {
            Some(a) => HostAmi::parse(&a)?,
            None => HostAmi::Ecs,
        };
        let port = file.ec2.port.unwrap_or(DEFAULT_EC2_PORT);
        if port == 0 {
            return Err(Error::InvalidSetting {
                what: "ec2.port",
                value: "0".into(),
                reason: "a port is 1-65535".into(),
                hint: "use e.g. port = 8888".into(),
            });
        }

        let subnet = over.subnet.or(file.ec2.subnet).filter(|s| !s.is_empty());
        if let Some(subnet) = &subnet {
            validate_subnet(subnet)?;
        }

        let region = over.region.or(file.region).filter(|r| !r.is_empty());
        if let Some(r) = &region {
            validate_region(r)?;
        }

        let registry_endpoint = match (over.registry_endpoint, file.push.registry_endpoint) {
            (Some(e), _) if !e.is_empty() => {
                Some((e, "--registry-endpoint / LABSHIP_REGISTRY_ENDPOINT"))
            }
            (_, Some(e)) if !e.is_empty() => Some((e, "push.registry_endpoint in labship.toml")),
            _ => None,
        };
        if let Some((endpoint, from)) = &registry_endpoint {
            check_registry_endpoint(endpoint, from, over.insecure_registry_endpoint)?;
        }

        let secrets = {
            let from_file = file
                .build
                .secrets
                .iter()
                .map(|spec| SecretSpec::parse(spec, &root));
            let from_flags = over.secrets.iter().map(|spec| SecretSpec::parse(spec, cwd));
            from_file.chain(from_flags).collect::<Result<Vec<_>>>()?
        };
        let ssh = {
            let auth_sock = std::env::var("SSH_AUTH_SOCK").ok();
            let from_file = file
                .build
                .ssh
                .iter()
                .map(|spec| SshSpec::parse(spec, &root, auth_sock.as_deref()));
            let from_flags = over
                .ssh
                .iter()
                .map(|spec| SshSpec::parse(spec, cwd, auth_sock.as_deref()));
            let all = from_file.chain(from_flags).collect::<Result<Vec<_>>>()?;
            let mut ids = std::collections::BTreeSet::new();
            if let Some(twice) = all.iter().find(|a| !ids.insert(a.id.as_str())) {
                return Err(Error::InvalidSetting {
                    what: "ssh",
                    value: twice.id.clone(),
                    reason: "the same id is given twice (labship.toml and --ssh add up)".into(),
                    hint:
                        "give each agent its own id: --ssh default, --ssh work=/path/to/agent.sock"
                            .into(),
                });
            }
            all
        };
        Ok(Config {
            root,
            file: file_path,
            name,
            target: deploy_target,
            region,
            profile: over.profile.or(file.profile),
            build: BuildSettings {
                context,
                dockerfile,
                target: over.target.or(file.build.target).filter(|t| !t.is_empty()),
                platform,
                args,
                secrets,
                builder: over
                    .builder
                    .or(file.build.builder)
                    .as_deref()
                    .map(Builder::parse)
                    .transpose()?
                    .unwrap_or_default(),
                ssh,
                network: over
                    .network
                    .or(file.build.network)
                    .as_deref()
                    .map(BuildNetwork::parse)
                    .transpose()?
                    .unwrap_or_default(),
            },
            push: PushSettings {
                repository,
                registry_endpoint: registry_endpoint.map(|(e, _)| e),
            },
            ec2: Ec2Settings {
                instance_type,
                instance_type_asked,
                ami,
                subnet,
                port,
                allow_cidr: file.ec2.allow_cidr.unwrap_or_default(),
                ssh_key: file.ec2.ssh_key.filter(|s| !s.is_empty()),
                access: file.ec2.access.as_deref().map(Access::parse).transpose()?,
                idle_stop: over
                    .idle_stop
                    .or(file.ec2.idle_stop)
                    .map(|v| parse_lifetime("idle stop", &v))
                    .transpose()?,
                ttl: over
                    .ttl
                    .or(file.ec2.ttl)
                    .map(|v| parse_lifetime("ttl", &v))
                    .transpose()?,
                volume_size: over
                    .volume_size
                    .or(file.ec2.volume_size.map(|g| g.to_string()))
                    .map(|v| parse_volume_size(&v))
                    .transpose()?,
                spot: over.spot.or(file.ec2.spot),
            },
            workspace: WorkspaceSettings {
                git: over
                    .git
                    .or(file.workspace.git)
                    .filter(|g| !g.trim().is_empty())
                    .map(|g| GitSource::parse(&g))
                    .transpose()?,
            },
            data: DataSettings {
                inputs: data_inputs(file.data.inputs.unwrap_or_default(), over.inputs)?,
            },
        })
    }

    /// The local image name (repository without registry) the build tags.
    pub fn local_image(&self) -> &str {
        &self.push.repository
    }
}

/// The file's inputs, then the command line's (added, not instead: the data a project
/// declares stays, and a run can bring more), each once; two that would land in the same
/// `inputs/<name>` are refused.
fn data_inputs(file: Vec<String>, given: Vec<String>) -> Result<Vec<crate::aws::s3::S3Uri>> {
    let mut inputs: Vec<crate::aws::s3::S3Uri> = Vec::new();
    for raw in file.iter().chain(&given) {
        let uri = crate::aws::s3::S3Uri::parse(raw.trim())?;
        // `s3://b/week1` and `s3://b/week1/` are one input.
        let folder =
            |u: &crate::aws::s3::S3Uri| (u.bucket.clone(), u.key.trim_end_matches('/').to_string());
        if inputs.iter().any(|i| folder(i) == folder(&uri)) {
            continue;
        }
        if let Some(other) = inputs.iter().find(|i| i.name() == uri.name()) {
            return Err(Error::InvalidSetting {
                what: "input",
                value: uri.to_string(),
                reason: format!(
                    "{other} lands in inputs/{} as well",
                    uri.name()
                ),
                hint: "give one of them a narrower or differently named prefix (each input lands in inputs/<its last folder name>)".into(),
            });
        }
        inputs.push(uri);
    }
    Ok(inputs)
}

/// labship's cache (`$LABSHIP_CACHE_DIR`, else `$XDG_CACHE_HOME/labship`, else
/// `~/.cache/labship`): the build's file hashes, the notebooks' repositories, the inputs.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("LABSHIP_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("labship")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("labship")))
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn find_upwards(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| candidate.is_file())
}

fn parse_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| Error::ConfigParse {
        path: path.to_path_buf(),
        message: e.message().trim().to_string(),
        span: e
            .span()
            .map(|r| (r.start, r.end.saturating_sub(r.start)).into()),
        src: miette::NamedSource::new(path.display().to_string(), text.clone()),
    })
}

/// A folder name made into a deployment name: lowercase letters, digits and single dashes,
/// at most 32 characters (names go into AWS tags, security-group names and ECR repositories).
pub fn sanitise_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut name: String = out.trim_matches('-').chars().take(32).collect();
    while name.ends_with('-') {
        name.pop();
    }
    if name.is_empty() {
        "lab".to_string()
    } else {
        name
    }
}

/// The default deployment name of a project folder. A folder name with characters that do not
/// survive sanitising (`données`, `数据`) gets a short hash of the original, so two such
/// folders do not become the same deployment (`lab`).
pub fn name_of_folder(folder: &str) -> String {
    if folder.is_ascii() {
        return sanitise_name(folder);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(folder.as_bytes());
    let base: String = sanitise_name(folder).chars().take(23).collect();
    format!(
        "{}-{}",
        base.trim_end_matches('-'),
        hex::encode(&digest[..4])
    )
}

/// A subnet id as EC2 writes it: `subnet-` and 8 or 17 lower-case hex digits (whether it
/// exists is asked of EC2 before anything is made).
fn validate_subnet(subnet: &str) -> Result<()> {
    let hex = subnet.strip_prefix("subnet-").unwrap_or_default();
    if matches!(hex.len(), 8 | 17)
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Ok(());
    }
    Err(Error::InvalidSetting {
        what: "subnet",
        value: subnet.to_string(),
        reason: "expected a subnet id: subnet- and 8 or 17 lower-case hex digits".into(),
        hint: "list yours with `aws ec2 describe-subnets --query 'Subnets[].SubnetId'`, or leave --subnet out for the default VPC".into(),
    })
}

/// A registry endpoint labship may send the ECR password to: one on this machine
/// (`localhost`, a loopback address: tests, a local mirror), or ECR itself
/// (`<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`). Anything else needs the user's
/// explicit `--insecure-registry-endpoint`, which no labship.toml can give: a checked-in file
/// must not be able to send the password elsewhere.
pub fn check_registry_endpoint(endpoint: &str, from: &str, acknowledged: bool) -> Result<()> {
    let host = registry_endpoint_host(endpoint);
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let labels: Vec<&str> = host.split('.').collect();
    let ecr = matches!(
        labels.as_slice(),
        [account, "dkr", "ecr" | "ecr-fips", region, "amazonaws", "com"]
        | [account, "dkr", "ecr" | "ecr-fips", region, "amazonaws", "com", "cn"]
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && validate_region(region).is_ok()
    );
    if loopback || ecr || acknowledged {
        return Ok(());
    }
    Err(Error::InvalidSetting {
        what: "registry endpoint",
        value: endpoint.to_string(),
        reason: format!(
            "it is neither ECR nor on this machine, and labship would send it your ECR password (from {from})"
        ),
        hint: "remove it to push to ECR; if you trust this registry (a private mirror), pass --insecure-registry-endpoint (or LABSHIP_INSECURE_REGISTRY_ENDPOINT=1): labship.toml cannot accept it for you".into(),
    })
}

/// The host of `[scheme://]host[:port][/path]`, lowercased.
fn registry_endpoint_host(endpoint: &str) -> String {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = if rest.starts_with('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h).to_string() + "]"
    } else {
        rest.rsplit_once(':').map_or(rest, |(h, _)| h).to_string()
    };
    host.to_ascii_lowercase()
}

/// An AWS region name as AWS spells them (`eu-west-1`, `us-gov-west-1`, `ap-southeast-5`).
pub fn validate_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSetting {
            what: "region",
            value: region.to_string(),
            reason: "not an AWS region name".into(),
            hint: "use a region such as eu-west-1 or us-east-1 (`aws ec2 describe-regions` lists yours)".into(),
        })
    }
}

/// A deployment name as given, if it is already a clean one; else an error suggesting one.
pub fn validate_name(name: &str) -> Result<String> {
    let clean = sanitise_name(name);
    if clean == name {
        Ok(clean)
    } else {
        Err(Error::InvalidSetting {
            what: "deployment name",
            value: name.to_string(),
            reason: "use 1-32 lowercase letters, digits and dashes".into(),
            hint: format!("try `{clean}`"),
        })
    }
}

/// A class's `--fallback-type`: an instance type name of the image's architecture (a seat
/// started on it runs the same pushed image).
pub fn check_fallback_type(config: &Config, fallback: &str) -> Result<()> {
    if !valid_instance_type(fallback) {
        return Err(Error::InvalidSetting {
            what: "--fallback-type",
            value: fallback.to_string(),
            reason: "expected FAMILY.SIZE".into(),
            hint: "use an EC2 instance type name such as t3a.medium or m5.large".into(),
        });
    }
    let arch = Arch::of_instance_type(fallback);
    if arch != config.build.platform {
        return Err(Error::InvalidSetting {
            what: "--fallback-type",
            value: fallback.to_string(),
            reason: format!(
                "it runs {} images, and the class's image is {}",
                arch.platform(),
                config.build.platform.platform()
            ),
            hint: format!(
                "choose a fallback of the same architecture as {} (e.g. t3a.medium for t3.medium, t4g.large for m7g.large)",
                config.ec2.instance_type
            ),
        });
    }
    if fallback == config.ec2.instance_type {
        return Err(Error::InvalidSetting {
            what: "--fallback-type",
            value: fallback.to_string(),
            reason: "it is the class's own instance type".into(),
            hint: "seats EC2 has no capacity for are tried again on the same type anyway; name another type, or drop it".into(),
        });
    }
    Ok(())
}

fn valid_instance_type(t: &str) -> bool {
    match t.split_once('.') {
        Some((family, size)) => {
            !family.is_empty()
                && !size.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        }
        None => false,
    }
}

/// ECR's rule: `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`, 2-256 chars.
pub fn validate_repository(repo: &str) -> Result<()> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.split(['.', '_', '-']).all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            })
    };
    let ok = (2..=256).contains(&repo.len()) && repo.split('/').all(component_ok);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSetting {
            what: "ECR repository name",
            value: repo.to_string(),
            reason: "ECR names are 2-256 characters of lowercase letters and digits, separated by single `.`, `_`, `-` or `/`".into(),
            hint: format!("set `push.repository` (or --repository) to something like `labship/{}`", sanitise_name(repo)),
        })
    }
}

/// A project with a trivial Dockerfile and the deployment name `name`, for the unit tests of
/// the stages that plan from a `Config` (the folder lives as long as the returned guard).
#[cfg(test)]
pub fn test_project(name: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("docker")).expect("docker/");
    std::fs::write(dir.path().join("docker/Dockerfile"), "FROM scratch\n").expect("Dockerfile");
    let flags = Overrides {
        name: Some(name.into()),
        ..Default::default()
    };
    let config = Config::load(dir.path(), flags, Overrides::default()).expect("config");
    (dir, config)
}

#[cfg(test)]
mod tests {

    #[test]
    fn inputs_are_the_files_then_the_flags_each_once_each_in_its_own_folder() {
        let got = data_inputs(
            vec![
                "s3://class-data/week1/".into(),
                "s3://class-data/week1/".into(),
            ],
            vec![" s3://other-data/iris.csv".into()],
        )
        .unwrap();
        let names: Vec<String> = got.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            names,
            ["s3://class-data/week1/", "s3://other-data/iris.csv"]
        );
        let clash = data_inputs(
            vec!["s3://a-data/x/week1".into()],
            vec!["s3://b-data/week1/".into()],
        );
        assert!(
            matches!(&clash, Err(Error::InvalidSetting { reason, .. }) if reason.contains("inputs/week1")),
            "{clash:?}"
        );
        assert!(data_inputs(vec!["class-data/week1".into()], vec![]).is_err());
    }

    #[test]
    fn git_sources_take_a_ref_and_refuse_credentials() {
        let s = GitSource::parse("https://github.com/me/course.git#week-2").expect("url#ref");
        assert_eq!(s.url, "https://github.com/me/course.git");
        assert_eq!(s.reference.as_deref(), Some("week-2"));
        assert_eq!(s.spec(), "https://github.com/me/course.git#week-2");
        let plain = GitSource::parse("git@github.com:me/course.git").expect("scp-like");
        assert_eq!(plain.reference, None);
        let e = GitSource::parse("https://me:ghp_secret123@github.com/me/c.git").unwrap_err();
        let text = format!(
            "{e} {}",
            miette::Diagnostic::help(&e)
                .map(|h| h.to_string())
                .unwrap_or_default()
        );
        assert!(
            text.contains("credentials") && text.contains("credential helper"),
            "{text}"
        );
        assert!(
            !text.contains("ghp_secret123") && text.contains("https://***@github.com/me/c.git"),
            "{text}"
        );
        assert!(GitSource::parse("https://github.com/me/c.git#").is_err());
        assert!(GitSource::parse("--upload-pack=evil").is_err());
        assert!(GitSource::parse("#main").is_err());
    }

    #[test]
    fn ssh_specs_name_an_agent_socket() {
        let base = Path::new("/project");
        let spec = SshSpec::parse("default", base, Some("/tmp/agent.sock")).expect("default");
        assert_eq!(spec.id, "default");
        assert_eq!(spec.socket, PathBuf::from("/tmp/agent.sock"));
        let spec = SshSpec::parse("gitlab=run/agent.sock", base, None).expect("id=socket");
        assert_eq!(spec.id, "gitlab");
        assert_eq!(spec.socket, PathBuf::from("/project/run/agent.sock"));
        for bad in ["", "default=", "=x", "a=b,c"] {
            assert!(SshSpec::parse(bad, base, Some("/s")).is_err(), "{bad}");
        }
        let err = SshSpec::parse("default", base, None).expect_err("no agent");
        assert!(err.to_string().contains("ssh") || format!("{err:?}").contains("SSH_AUTH_SOCK"));
    }

    #[test]
    fn secrets_parse_like_docker_build_and_name_what_is_wrong() {
        let base = Path::new("/proj");
        assert_eq!(
            SecretSpec::parse("id=pypi,src=conf/pypirc", base).expect("file"),
            SecretSpec {
                id: "pypi".into(),
                source: SecretSource::File(PathBuf::from("/proj/conf/pypirc")),
            }
        );
        assert_eq!(
            SecretSpec::parse("type=env,id=gh,env=GH_TOKEN", base)
                .expect("env")
                .source,
            SecretSource::Env("GH_TOKEN".into())
        );
        for bad in [
            "src=x",
            "id=a",
            "id=a,src=x,env=Y",
            "id=a,value=hunter2",
            "id=a,type=env,src=x",
        ] {
            assert!(SecretSpec::parse(bad, base).is_err(), "{bad}");
        }
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Overrides {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Overrides::from_env(|k| map.get(k).cloned()).unwrap()
    }

    fn project(toml: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("My Project_")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join(FILE_NAME), toml).unwrap();
        dir
    }

    #[test]
    fn a_registry_endpoint_must_be_ecr_or_on_this_machine_unless_the_user_accepts_it() {
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "http://127.0.0.2:5000",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
            "https://123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
        ] {
            check_registry_endpoint(ok, "test", false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "evil.example.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
            "12345.dkr.ecr.eu-west-1.amazonaws.com",
            "10.0.0.5:5000",
            "localhost.evil.example",
        ] {
            assert!(
                check_registry_endpoint(bad, "test", false).is_err(),
                "{bad} accepted"
            );
            check_registry_endpoint(bad, "test", true).expect("accepted when acknowledged");
        }
        // A checked-in labship.toml cannot accept it; the user's flag or variable can.
        let dir = project("[push]\nregistry_endpoint = \"evil.example.com\"\n");
        let err = Config::load(dir.path(), Overrides::default(), Overrides::default())
            .expect_err("refused");
        assert!(err.to_string().contains("evil.example.com"), "{err}");
        let acknowledged = env(&[("LABSHIP_INSECURE_REGISTRY_ENDPOINT", "1")]);
        let c = Config::load(dir.path(), Overrides::default(), acknowledged).expect("accepted");
        assert_eq!(
            c.push.registry_endpoint.as_deref(),
            Some("evil.example.com")
        );
    }

    #[test]
    fn defaults_follow_the_folder() {
        let dir = tempfile::Builder::new()
            .prefix("Data Lab!")
            .tempdir()
            .unwrap();
        let c = Config::load(dir.path(), Overrides::default(), Overrides::default()).unwrap();
        assert!(c.name.starts_with("data-lab-"), "{}", c.name);
        assert_eq!(c.build.context, dir.path().join("docker"));
        assert_eq!(c.build.dockerfile, dir.path().join("docker/Dockerfile"));
        assert_eq!(c.push.repository, format!("labship/{}", c.name));
        assert_eq!(c.build.platform, Arch::Amd64);
        assert!(c.file.is_none());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let dir = project(
            "name = \"from-file\"\nregion = \"eu-west-1\"\n[build]\nargs = { A = \"file\", B = \"file\" }\ntarget = \"file-stage\"\n[ec2]\ninstance_type = \"m7g.large\"\n",
        );
        let e = env(&[
            ("LABSHIP_NAME", "from-env"),
            ("LABSHIP_REGION", "us-west-2"),
            ("LABSHIP_BUILD_ARGS", "B=env,C=env"),
        ]);
        let flags = Overrides {
            name: Some("from-flag".into()),
            build_args: vec![("C".into(), "flag".into())],
            ..Default::default()
        };
        let c = Config::load(dir.path(), flags, e).unwrap();
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.region.as_deref(), Some("us-west-2"));
        assert_eq!(c.build.target.as_deref(), Some("file-stage"));
        assert_eq!(c.build.args["A"], "file");
        assert_eq!(c.build.args["B"], "env");
        assert_eq!(c.build.args["C"], "flag");
        // the platform follows the (Graviton) instance type from the file
        assert_eq!(c.build.platform, Arch::Arm64);
    }

    #[test]
    fn file_is_found_upwards_and_paths_are_relative_to_it() {
        let dir = project("[build]\ncontext = \"image\"\n");
        let sub = dir.path().join("notebooks/deep");
        std::fs::create_dir_all(&sub).unwrap();
        let c = Config::load(&sub, Overrides::default(), Overrides::default()).unwrap();
        assert_eq!(c.root, dir.path());
        assert_eq!(c.build.context, dir.path().join("image"));
        assert_eq!(c.build.dockerfile, dir.path().join("image/Dockerfile"));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let dir = project("[build]\ncontxt = \"docker\"\n");
        let err = Config::load(dir.path(), Overrides::default(), Overrides::default()).unwrap_err();
        match err {
            Error::ConfigParse { message, span, .. } => {
                assert!(message.contains("contxt"), "{message}");
                assert!(span.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unparsable_file_is_an_error() {
        let dir = project("name = \n");
        assert!(matches!(
            Config::load(dir.path(), Overrides::default(), Overrides::default()),
            Err(Error::ConfigParse { .. })
        ));
    }

    #[test]
    fn bad_values_are_refused() {
        let dir = project("");
        let load = |o: Overrides| Config::load(dir.path(), o, Overrides::default());
        for o in [
            Overrides {
                name: Some("Bad Name".into()),
                ..Default::default()
            },
            Overrides {
                repository: Some("UPPER/case".into()),
                ..Default::default()
            },
            Overrides {
                repository: Some("a//b".into()),
                ..Default::default()
            },
            Overrides {
                platform: Some("windows/amd64".into()),
                ..Default::default()
            },
            Overrides {
                instance_type: Some("large".into()),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(load(o.clone()), Err(Error::InvalidSetting { .. })),
                "{o:?}"
            );
        }
        assert!(parse_build_arg("NOEQUALS").is_err());
        assert!(parse_build_arg("=v").is_err());
        assert_eq!(
            parse_build_arg("K=a=b").unwrap(),
            ("K".into(), "a=b".into())
        );
    }

    #[test]
    fn folder_names_that_do_not_survive_sanitising_stay_apart() {
        assert_eq!(name_of_folder("My Project"), "my-project");
        let a = name_of_folder("données");
        let b = name_of_folder("数据");
        let c = name_of_folder("ÄÖÜ");
        assert!(a.starts_with("donn-es-"), "{a}");
        assert!(b.starts_with("lab-") && c.starts_with("lab-"), "{b} {c}");
        assert_ne!(b, c);
        for n in [&a, &b, &c] {
            assert!(validate_name(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn region_names() {
        for ok in ["eu-west-1", "us-east-1", "us-gov-west-1", "ap-southeast-5"] {
            assert!(validate_region(ok).is_ok(), "{ok}");
        }
        for bad in [
            "eu west 1",
            "EU-WEST-1",
            "euwest1",
            "eu-west-",
            "-west-1",
            "eu-west-x",
        ] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_sizes_are_whole_gib_or_tib_within_gp3_limits() {
        for (v, gib) in [
            ("20", 20),
            (" 20GiB ", 20),
            ("20g", 20),
            ("1T", 1024),
            ("1tib", 1024),
            ("16384", 16384),
        ] {
            assert_eq!(parse_volume_size(v).ok(), Some(gib), "{v}");
        }
        for bad in [
            "0",
            "16385",
            "17T",
            "",
            "GiB",
            "1.5",
            "-3",
            "20 MB",
            "9999999999999999999",
        ] {
            let e = parse_volume_size(bad).expect_err(bad);
            let help = miette::Diagnostic::help(&e)
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(help.contains("--volume-size"), "{bad}: {e}: {help}");
        }
    }

    #[test]
    fn lifetimes_are_one_number_and_one_unit() {
        let secs = |v: &str| parse_lifetime("ttl", v).map(|d| d.map(|d| d.as_secs()));
        assert_eq!(secs("45m").ok(), Some(Some(2700)));
        assert_eq!(secs("8h").ok(), Some(Some(28_800)));
        assert_eq!(secs("2d").ok(), Some(Some(172_800)));
        assert_eq!(secs("90s").ok(), Some(Some(90)));
        assert_eq!(secs("off").ok(), Some(None));
        assert_eq!(secs("OFF").ok(), Some(None));
        for bad in [
            "", "60", "m", "1h30m", "10s", "31d", "-5m", "5 m", "1w", "5M",
        ] {
            let err = secs(bad).expect_err(bad).to_string();
            assert!(err.contains("ttl"), "{bad}: {err}");
        }
        for d in [
            Some(90),
            Some(2700),
            Some(28_800),
            Some(172_800),
            Some(3601),
            None,
        ] {
            let d = d.map(std::time::Duration::from_secs);
            assert_eq!(parse_lifetime("x", &lifetime_text(d)).ok(), Some(d));
        }
    }

    #[test]
    fn subnet_ids() {
        for ok in ["subnet-0123abcd", "subnet-0123456789abcdef0"] {
            assert!(validate_subnet(ok).is_ok(), "{ok}");
        }
        for bad in [
            "vpc-123",
            "subnet-",
            "subnet-0123ABCD",
            "subnet-0123abc",
            "subnet-0123456789abcdef",
            "subnet-0123abcd; rm -rf /",
        ] {
            assert!(validate_subnet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_sanitised() {
        for (raw, want) in [
            ("My Project", "my-project"),
            ("--x__y--", "x-y"),
            ("ÄÖÜ", "lab"),
            ("a".repeat(40).as_str(), &"a".repeat(32)),
            ("data.science 101", "data-science-101"),
        ] {
            assert_eq!(sanitise_name(raw), want, "{raw}");
        }
    }

    #[test]
    fn a_fallback_type_runs_the_classs_image() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(dir.path(), Overrides::default(), Overrides::default()).unwrap();
        assert_eq!(c.ec2.instance_type, "t3.medium");
        assert!(check_fallback_type(&c, "t3a.medium").is_ok());
        assert!(check_fallback_type(&c, "m5.large").is_ok());
        for (bad, why) in [
            ("t4g.medium", "linux/arm64"),
            ("t3.medium", "own instance type"),
            ("medium", "FAMILY.SIZE"),
            ("T3.Large", "FAMILY.SIZE"),
        ] {
            let err = check_fallback_type(&c, bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn instance_type_architecture() {
        for (t, arch) in [
            ("t3.medium", Arch::Amd64),
            ("t4g.large", Arch::Arm64),
            ("m7gd.xlarge", Arch::Arm64),
            ("c6gn.large", Arch::Arm64),
            ("im4gn.large", Arch::Arm64),
            ("hpc7g.4xlarge", Arch::Arm64),
            ("a1.large", Arch::Arm64),
            ("g4dn.xlarge", Arch::Amd64),
            ("g5g.xlarge", Arch::Arm64),
            ("g4ad.xlarge", Arch::Amd64),
            ("m7i-flex.large", Arch::Amd64),
            ("c7a.large", Arch::Amd64),
        ] {
            assert_eq!(Arch::of_instance_type(t), arch, "{t}");
        }
    }

    #[test]
    fn repository_names() {
        for ok in ["labship/lab", "a1", "my.repo/x_y-z", "ab"] {
            assert!(validate_repository(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "A/b", "/x", "x/", "x..y", "-x", "x y"] {
            assert!(validate_repository(bad).is_err(), "{bad}");
        }
    }
}
