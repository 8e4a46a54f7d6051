//! The command line: global options, one subcommand per pipeline step. Parsing only; the
//! handlers in `commands/` turn these into calls to the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use labship::config::{parse_build_arg, Overrides, Target};
use labship::output::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "labship",
    version,
    about = "Ship JupyterLab to the cloud in one command",
    long_about = "Ship JupyterLab to the cloud in one command.\n\nBuilds your docker/ folder into a Jupyter image with the Docker engine and pushes it to Amazon ECR. Settings come from flags, then LABSHIP_* environment variables, then labship.toml (found upwards from the current folder), then defaults."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Path of labship.toml (default: found upwards from the current folder)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// AWS profile to use (default: the standard AWS chain)
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// AWS region (default: labship.toml, then AWS_REGION / the profile's region)
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Result format on stdout
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// More diagnostics on stderr (-v, -vv, -vvv)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only the result: no progress, no build output
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Accept a registry endpoint that is neither ECR nor on this machine (labship sends it
    /// the ECR password); labship.toml cannot accept one for you
    #[arg(long, global = true)]
    pub insecure_registry_endpoint: bool,
}

/// `--output`: the library's [`OutputFormat`], as clap parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// The class roster as CSV (`up --seats`/`--roster`, `token` of a class)
    Csv,
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Text => OutputFormat::Text,
            Format::Json => OutputFormat::Json,
            Format::Csv => OutputFormat::Csv,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented labship.toml and the default docker/ workload (never overwrites)
    Init(InitArgs),
    /// Build the image from the build context (docker/) on the Docker engine
    Build(BuildArgs),
    /// Build if needed and push the image to ECR (creating the repository on first use)
    Push(PushArgs),
    /// Run the image (locally, or on EC2 with --ec2) and print its Jupyter URL
    Up(Box<UpArgs>),
    /// Print the Jupyter login token of a deployment, or find it in a log (--from-log)
    Token(TokenArgs),
    /// Open an EC2 deployment on http://127.0.0.1 through a local forwarder that speaks TLS to
    /// the instance, checking its pinned certificate (runs until Ctrl-C)
    Connect(ConnectArgs),
    /// List deployments (found by their labels or AWS tags; no local state)
    Status(StatusArgs),
    /// Print a deployment's Jupyter log
    Logs(LogsArgs),
    /// Stop a deployment and keep it: its workspace (and on EC2 its token) stays, and `up`
    /// starts it again; an EC2 instance no longer bills compute, only its disk
    Stop(StopArgs),
    /// Save a running deployment's workspace to a local folder, through its Jupyter
    Backup(BackupArgs),
    /// Copy each seat's notebooks (or the given paths) of a class into collected/<seat>/
    Collect(CollectArgs),
    /// Add files to every seat's workspace of a class, keeping a student's own file of the
    /// same name
    Distribute(DistributeArgs),
    /// Run a notebook (or a .py script) top to bottom as a job, parameters injected the
    /// papermill way; the executed notebook and its outputs/ land in runs/<run-id>/
    Run(Box<RunArgs>),
    /// List the runs of `labship run`: still going, ended, fetched
    Runs(RunsArgs),
    /// Bring a run's executed notebook and outputs/ into runs/<run-id>/ (following it to its
    /// end if it still runs)
    Fetch(FetchArgs),
    /// Remove a deployment (its workspace is kept unless --delete-data: locally its volume,
    /// on EC2 its data volume)
    Down(DownArgs),
    /// Make the offline Jupyter base image from Debian packages and PyPI (no registry needed)
    Base,
}

/// Where a command acts (default: `target` in labship.toml, else local).
#[derive(Debug, Args, Default, Clone, Copy)]
pub struct TargetArgs {
    /// The local Docker engine (needs no AWS account)
    #[arg(long, conflicts_with = "ec2")]
    pub local: bool,
    /// EC2 in your AWS account
    #[arg(long)]
    pub ec2: bool,
}

impl TargetArgs {
    pub fn target(&self) -> Option<Target> {
        if self.ec2 {
            Some(Target::Ec2)
        } else if self.local {
            Some(Target::Local)
        } else {
            None
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Port for Jupyter (local default: the first free port from 8888; EC2: ec2.port, 8888)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Host address to publish on (local default 127.0.0.1; on EC2 0.0.0.0, guarded by the security group)
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
    /// Seconds to wait for Jupyter to print its token and answer, 1 to 86400 (default: 180
    /// local, 900 on EC2)
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wait: Option<u64>,
    /// EC2: only the CIDR(s) that may reach Jupyter (repeatable; default: your public IP as /32)
    #[arg(long, value_name = "CIDR")]
    pub allow_cidr: Vec<String>,
    /// EC2: open the Jupyter port to the whole internet (0.0.0.0/0, ::/0); only the token protects it
    #[arg(long, conflicts_with = "allow_cidr")]
    pub public: bool,
    /// EC2: how Jupyter is reached: https (its port open to --allow-cidr or your IP; the
    /// default, or ec2.access) or ssm (no inbound rule at all; `labship connect` goes through a
    /// Systems Manager port-forwarding session and needs the AWS session-manager-plugin)
    #[arg(long, value_name = "https|ssm", value_parser = parse_access, conflicts_with_all = ["allow_cidr", "public"])]
    pub access: Option<labship::config::Access>,
    /// EC2 host image: ecs (ECS-optimized Amazon Linux 2023, the default), al2023, or an AMI id
    #[arg(long, value_name = "ecs|al2023|AMI-ID")]
    pub ami: Option<String>,
    /// EC2: launch in this subnet (default: the default VPC)
    #[arg(long, value_name = "SUBNET-ID")]
    pub subnet: Option<String>,
    /// EC2: stop the instance after this long without activity in Jupyter: no kernel busy or
    /// active, no terminal in use (30s to 30d, or off; default ec2.idle_stop, 60m)
    #[arg(long, value_name = "DURATION|off")]
    pub idle_stop: Option<String>,
    /// EC2: stop the instance this long after each start, busy or not (30s to 30d, or off;
    /// default ec2.ttl, 24h)
    #[arg(long, value_name = "DURATION|off")]
    pub ttl: Option<String>,
    /// EC2: size of a new data volume, the encrypted gp3 volume that holds the workspace and
    /// outlives the instance (1 GiB to 16 TiB; default ec2.volume_size, 20GiB; a kept volume
    /// keeps its size)
    #[arg(long, value_name = "GiB")]
    pub volume_size: Option<String>,
    /// EC2: launch a spot instance (persistent request: an interruption stops it, keeping its
    /// disk, data volume and token, and `up` starts it again); default ec2.spot, off
    #[arg(long)]
    pub spot: bool,
    /// EC2: launch an on-demand instance even when ec2.spot is set
    #[arg(long, conflicts_with = "spot")]
    pub on_demand: bool,
    /// EC2: show the plan (AMI, instance type, security group, IAM, tags, user-data) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// EC2: print where the time went (build, push, launch, boot, pull, Jupyter start)
    #[arg(long)]
    pub timings: bool,
    /// Open the URL in a browser
    #[arg(long)]
    pub open: bool,
    /// Stay attached: stream Jupyter's log, and stop the container on Ctrl-C
    #[arg(long)]
    pub attach: bool,
    /// EC2: then serve it on http://127.0.0.1 through a forwarder that checks the instance's
    /// certificate, as `labship connect` does (until Ctrl-C)
    #[arg(long, conflicts_with = "attach")]
    pub connect: bool,
    /// EC2: act on the deployment even if another identity created it (its labship:owner tag)
    #[arg(long)]
    pub force: bool,
    /// A class: N seats (1 to 500), each its own Jupyter, token, workspace and URL, named
    /// NAME-1 .. NAME-N; prints the roster (seat, URL)
    #[arg(long, value_name = "N", conflicts_with_all = ["roster", "attach", "connect", "dry_run"])]
    pub seats: Option<usize>,
    /// A class from a roster CSV: a header row with an `id` column (and optionally `name`,
    /// `email`), one row per student
    #[arg(long, value_name = "FILE", conflicts_with_all = ["attach", "connect", "dry_run"])]
    pub roster: Option<PathBuf>,
    /// A class: each seat's memory limit in MiB (default 2048)
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u64).range(64..))]
    pub seat_memory: Option<u64>,
    /// A class: each seat's CPU limit (default 1.0)
    #[arg(long, value_name = "CPUS")]
    pub seat_cpus: Option<f64>,
    /// An EC2 class: the instance type for the seats EC2 has no capacity for (tried in a
    /// second batch; without it, they are tried again on --instance-type)
    #[arg(long, value_name = "TYPE")]
    pub fallback_type: Option<String>,
    /// An EC2 class: how many new seats share an instance (1 to 8; default 1, each its own):
    /// one Docker, certificate and image pull per host, each seat its own container, token,
    /// data volume and port (the class's port plus its place on the host)
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub seats_per_instance: Option<u8>,
    /// Put this git repository's files into the workspace (`URL` or `URL#BRANCH|TAG|COMMIT`;
    /// `[workspace] git`): fetched here with your git, so its credentials stay on this machine;
    /// a file someone changed in the workspace is kept
    #[arg(long, value_name = "URL[#REF]")]
    pub git: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Local port to listen on (default: the first free port from 8888)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Open the URL in a browser
    #[arg(long)]
    pub open: bool,
    /// One seat of the class NAME
    #[arg(long, value_name = "ID")]
    pub seat: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Find the token in this Jupyter log instead (docker logs, cloud-init-output.log, EC2 console output; - for stdin)
    #[arg(long, value_name = "FILE", conflicts_with = "rotate")]
    pub from_log: Option<PathBuf>,
    /// Seal a new token and restart Jupyter with it, keeping the workspace (EC2)
    #[arg(long)]
    pub rotate: bool,
    /// One seat of the class NAME (without it, a class prints its whole roster)
    #[arg(long, value_name = "ID", conflicts_with = "from_log")]
    pub seat: Option<String>,
    /// The class's roster file: its students' names and emails fill the roster's columns
    /// where the host does not keep them (EC2 puts no names or emails in tags)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from_log", "rotate", "seat"])]
    pub roster: Option<PathBuf>,
}

/// Which seats of which class an instructor's verb acts on.
#[derive(Debug, Args)]
pub struct SeatsArgs {
    /// The class (or a single deployment; default: labship.toml, then the project folder's name)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Only this seat
    #[arg(long, value_name = "ID")]
    pub seat: Option<String>,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    #[command(flatten)]
    pub seats: SeatsArgs,
    /// Where to put them: DIR/<seat>/ (default: ./collected)
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Only these files or folders of each workspace (default: all of it)
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DistributeArgs {
    #[command(flatten)]
    pub seats: SeatsArgs,
    /// Files (or folders) to add to each workspace's top folder; a file a student already
    /// has of the same name is kept
    #[arg(
        value_name = "FILE",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub files: Vec<PathBuf>,
    /// The notebooks' repository at its newest commit instead: this `URL` (or `URL#REF`), else
    /// `[workspace] git` or LABSHIP_GIT; new files added, files no one changed updated,
    /// changed ones kept
    #[arg(long, value_name = "URL[#REF]", num_args = 0..=1, default_missing_value = "")]
    pub git: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// One seat of the class NAME
    #[arg(long, value_name = "ID")]
    pub seat: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Also delete the workspace and every notebook in it (local: the volume; EC2: the data
    /// volume, and an instance without one is terminated without first saving its workspace
    /// to ./labship-backups/)
    #[arg(long)]
    pub delete_data: bool,
    /// EC2: also delete the deployment's images from ECR (and its repository, if labship made it)
    #[arg(long)]
    pub purge_images: bool,
    /// EC2: every labship deployment in every region you can see (after one confirmation
    /// listing them), then labship's shared IAM role and instance profile when none is left
    #[arg(long, conflicts_with = "deployment")]
    pub all: bool,
    /// EC2: remove it even if another identity created it (its labship:owner tag)
    #[arg(long)]
    pub force: bool,
    /// Only this seat of the class NAME (without it, `down` of a class ends every seat)
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub seat: Option<String>,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// EC2: stop it even if another identity created it (its labship:owner tag)
    #[arg(long)]
    pub force: bool,
    /// One seat of the class NAME
    #[arg(long, value_name = "ID")]
    pub seat: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// The folder to save into (default: ./labship-backups/NAME-TIME)
    #[arg(long, value_name = "DIR")]
    pub to: Option<std::path::PathBuf>,
    /// One seat of the class NAME
    #[arg(long, value_name = "ID")]
    pub seat: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Deployment name to write into labship.toml (default: the folder's name)
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The notebook (.ipynb) or Python script (.py) to run
    #[arg(value_name = "NOTEBOOK")]
    pub notebook: PathBuf,
    #[command(flatten)]
    pub on: TargetArgs,
    /// A parameter (repeatable), injected after the notebook's cell tagged `parameters`:
    /// NAME=VALUE, VALUE an int, a float, True/False, None or else a string
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Start the job and return: it runs on, and stops by itself at its deadline;
    /// `labship fetch RUN` brings its results
    #[arg(long, conflicts_with_all = ["matrix", "parallel"])]
    pub detach: bool,
    /// One run per value, side by side (repeatable: every combination): NAME=V1,V2,...
    #[arg(long, value_name = "NAME=V1,V2,...")]
    pub matrix: Vec<String>,
    /// How many runs of a --matrix run at once (default 2)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=32))]
    pub parallel: Option<u16>,
    /// The job's deadline, 30s to 30d (e.g. 45m, 2h; default 6h): then it is stopped, and what
    /// ran is saved
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Where each run's folder goes (default: runs/ beside labship.toml)
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
    /// The job's CPU limit (default: every CPU of the machine)
    #[arg(long, value_name = "CPUS")]
    pub cpus: Option<f64>,
    /// The job's memory limit in MiB (default: none)
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u64).range(64..))]
    pub memory: Option<u64>,
    /// An S3 folder or object the job reads (repeatable; added to `[data] inputs`): copied
    /// here first, then given to the job read-only at inputs/<its name>
    #[arg(long = "input", value_name = "s3://BUCKET/PREFIX")]
    pub inputs: Vec<String>,
    /// Where each run's folder goes in S3 as well: s3://BUCKET/PREFIX/<run-id>/
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub output_uri: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(value_name = "NAME")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Where the runs' folders are (default: runs/ beside labship.toml)
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The run's id (the RUN column of `labship runs`)
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub on: TargetArgs,
    /// Where the run's folder goes (default: runs/ beside labship.toml)
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
}

impl RunArgs {
    pub fn overrides(&self, global: &GlobalArgs) -> Overrides {
        let mut o = self.build.overrides(global);
        o.deploy_target = self.on.target();
        o.inputs = self.inputs.clone();
        o
    }
}

#[derive(Debug, Args, Default)]
pub struct BuildArgs {
    /// Deployment name (default: labship.toml, then the project folder's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Build context folder (default: docker/)
    #[arg(long, value_name = "DIR")]
    pub context: Option<PathBuf>,
    /// Dockerfile (default: Dockerfile in the context)
    #[arg(long, short = 'f', value_name = "FILE")]
    pub dockerfile: Option<PathBuf>,
    /// Build argument KEY=VALUE (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = parse_build_arg_flag)]
    pub build_args: Vec<(String, String)>,
    /// Multi-stage target
    #[arg(long)]
    pub target: Option<String>,
    /// linux/amd64 or linux/arm64 (default: the EC2 instance type's architecture)
    #[arg(long)]
    pub platform: Option<String>,
    /// EC2 instance type the image is for (decides the default platform)
    #[arg(long)]
    pub instance_type: Option<String>,
    /// The engine's builder: auto (BuildKit when the engine has it; the default), buildkit or classic
    #[arg(long, value_name = "auto|buildkit|classic")]
    pub builder: Option<String>,
    /// A secret for RUN --mount=type=secret,id=NAME (BuildKit; repeatable): id=NAME,src=FILE or
    /// id=NAME,env=VAR. It reaches neither the image, its history, the output nor the tag
    #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// The network RUN steps use: default, host (reaches this machine's loopback: a local
    /// package index or proxy) or none
    #[arg(long, value_name = "default|host|none")]
    pub network: Option<String>,
    /// An SSH agent for RUN --mount=type=ssh (BuildKit; repeatable): default (the agent of
    /// $SSH_AUTH_SOCK) or ID=SOCKET. Keys stay in the agent
    #[arg(long = "ssh", value_name = "default|ID=SOCKET")]
    pub ssh: Vec<String>,
}

#[derive(Debug, Args, Default)]
pub struct PushArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// ECR repository name (default: labship/<name>)
    #[arg(long)]
    pub repository: Option<String>,
    /// Registry host[:port] to push to instead of the one ECR reports (mirrors, tests)
    #[arg(long, value_name = "HOST[:PORT]")]
    pub registry_endpoint: Option<String>,
}

fn parse_build_arg_flag(s: &str) -> Result<(String, String), String> {
    parse_build_arg(s).map_err(|e| e.to_string())
}

/// The settings of commands that only name a deployment (and where it runs).
pub fn named(global: &GlobalArgs, deployment: &Option<String>, on: TargetArgs) -> Overrides {
    Overrides {
        name: deployment.clone(),
        deploy_target: on.target(),
        ..global.overrides()
    }
}

impl UpArgs {
    pub fn overrides(&self, global: &GlobalArgs) -> Overrides {
        let mut o = self.build.overrides(global);
        if self.deployment.is_some() {
            o.name = self.deployment.clone();
        }
        o.deploy_target = self.on.target();
        o.ami = self.ami.clone();
        o.subnet = self.subnet.clone();
        o.idle_stop = self.idle_stop.clone();
        o.ttl = self.ttl.clone();
        o.volume_size = self.volume_size.clone();
        o.git = self.git.clone();
        o.spot = if self.spot {
            Some(true)
        } else if self.on_demand {
            Some(false)
        } else {
            None
        };
        o
    }
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            profile: self.profile.clone(),
            region: self.region.clone(),
            insecure_registry_endpoint: self.insecure_registry_endpoint,
            ..Default::default()
        }
    }
}

impl BuildArgs {
    pub fn overrides(&self, global: &GlobalArgs) -> Overrides {
        Overrides {
            name: self.name.clone(),
            context: self.context.clone(),
            dockerfile: self.dockerfile.clone(),
            target: self.target.clone(),
            platform: self.platform.clone(),
            builder: self.builder.clone(),
            secrets: self.secrets.clone(),
            network: self.network.clone(),
            ssh: self.ssh.clone(),
            build_args: self.build_args.clone(),
            instance_type: self.instance_type.clone(),
            ..global.overrides()
        }
    }
}

impl PushArgs {
    pub fn overrides(&self, global: &GlobalArgs) -> Overrides {
        Overrides {
            repository: self.repository.clone(),
            registry_endpoint: self.registry_endpoint.clone(),
            ..self.build.overrides(global)
        }
    }
}

fn parse_access(s: &str) -> Result<labship::config::Access, String> {
    labship::config::Access::parse(s).map_err(|e| e.to_string())
}
