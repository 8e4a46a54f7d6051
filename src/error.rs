//! Every failure a user can meet, each with the resource it concerns, the cause, and the fix.
//!
//! Handlers return [`Error`]; `main` renders it with miette so the hint stands apart from the
//! message. Variants name the thing that failed in the user's words; raw SDK and engine errors
//! are rendered through [`aws_error`] and [`engine_error`] so their code and message survive.

use std::path::PathBuf;

use miette::Diagnostic;
use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error, Diagnostic)]
pub enum Error {
    // ---- configuration -------------------------------------------------------------------
    #[error("cannot read config file {}: {source}", path.display())]
    #[diagnostic(
        code(labship::config::read),
        help("check the path given with --config or LABSHIP_CONFIG")
    )]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("invalid config file {}: {message}", path.display())]
    #[diagnostic(
        code(labship::config::parse),
        help("fix the line shown; `labship init` writes a commented example of every key")
    )]
    ConfigParse {
        path: PathBuf,
        message: String,
        #[source_code]
        src: miette::NamedSource<String>,
        #[label("here")]
        span: Option<miette::SourceSpan>,
    },

    #[error("invalid {what} `{value}`: {reason}")]
    #[diagnostic(code(labship::config::invalid), help("{hint}"))]
    InvalidSetting {
        what: &'static str,
        value: String,
        reason: String,
        hint: String,
    },

    // ---- the build context ---------------------------------------------------------------
    #[error("no build context: {} does not exist", path.display())]
    #[diagnostic(
        code(labship::build::no_context),
        help("run `labship init` to create the default docker/ folder, or point `build.context` in labship.toml (or --context) at your folder")
    )]
    NoContext { path: PathBuf },

    #[error("no Dockerfile: {} does not exist", path.display())]
    #[diagnostic(
        code(labship::build::no_dockerfile),
        help("add a Dockerfile to the build context (`labship init` writes the default one), or set `build.dockerfile` in labship.toml")
    )]
    NoDockerfile { path: PathBuf },

    #[error("cannot read the build context at {}: {source}", path.display())]
    #[diagnostic(
        code(labship::build::context_io),
        help("check the file's permissions, or list it in .dockerignore")
    )]
    ContextIo {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{message}")]
    #[diagnostic(code(labship::build::dockerignore), help("fix the pattern; the syntax is Docker's: https://docs.docker.com/build/concepts/context/#dockerignore-files"))]
    DockerIgnore { message: String },

    // ---- the Docker engine ---------------------------------------------------------------
    #[error("cannot reach the Docker engine (tried {tried})")]
    #[diagnostic(
        code(labship::engine::unreachable),
        help("start Docker (e.g. `sudo systemctl start docker` or Docker Desktop), or point DOCKER_HOST at a running engine")
    )]
    EngineUnreachable { tried: String, detail: String },

    #[error("unsupported Docker endpoint `{host}`: {reason}")]
    #[diagnostic(code(labship::engine::endpoint), help("use a unix:// socket or a plain tcp:// endpoint (for a remote engine, forward its socket over SSH: `ssh -L /tmp/docker.sock:/var/run/docker.sock host`)"))]
    EngineEndpoint { host: String, reason: String },

    #[error("Docker engine error while {action}: {message}")]
    #[diagnostic(code(labship::engine::api))]
    Engine { action: String, message: String },

    #[error("build failed at {step}: {message}")]
    #[diagnostic(
        code(labship::build::step_failed),
        help("{tail}\nfix that step in the Dockerfile and run `labship build` again")
    )]
    BuildStepFailed {
        step: String,
        message: String,
        tail: String,
    },

    #[error("the engine refused a BuildKit build: {message}")]
    #[diagnostic(
        code(labship::build::buildkit_refused),
        help("this engine has no BuildKit (or it is turned off): build with --builder classic (Dockerfiles with RUN --mount need BuildKit), or use a Docker Engine 18.09 or newer on Linux")
    )]
    BuildKitRefused { message: String },

    #[error("files in the build context {} changed while the engine read them", path.display())]
    #[diagnostic(
        code(labship::build::context_changed),
        help("the image might not match its content tag, so it was not tagged; run the build again once the files are saved (a notebook's autosave, a download still being written)")
    )]
    ContextChanged { path: std::path::PathBuf },

    #[error("the engine cannot build for platform {platform}: {message}")]
    #[diagnostic(
        code(labship::build::platform),
        help("the image must match the EC2 instance's architecture ({platform}); build on a machine of that architecture, enable emulation (binfmt/qemu) in the engine, or choose an instance type of the engine's architecture (`ec2.instance_type`)")
    )]
    PlatformMismatch { platform: String, message: String },

    #[error("base image `{image}` cannot be pulled: {message}")]
    #[diagnostic(
        code(labship::build::base_image),
        help("check the name and your network; without registry access, `labship base` makes a Jupyter base from Debian packages and PyPI (`labship up --local` does it by itself), then pass it with `--build-arg BASE_IMAGE=<image>`")
    )]
    BaseImage { image: String, message: String },

    // ---- AWS -----------------------------------------------------------------------------
    #[error("no AWS region configured")]
    #[diagnostic(
        code(labship::aws::no_region),
        help("pass --region, set `region` in labship.toml or AWS_REGION, or run `aws configure`")
    )]
    NoRegion,

    #[error("no AWS credentials found{profile}: {detail}")]
    #[diagnostic(
        code(labship::aws::no_credentials),
        help("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, run `aws configure` or `aws sso login`, or pass --profile")
    )]
    NoCredentials { profile: String, detail: String },

    #[error("AWS rejected the credentials in {region}: {message}")]
    #[diagnostic(
        code(labship::aws::credentials_rejected),
        help("the credentials are expired or wrong: refresh them (`aws sso login`, new session keys) or pick another --profile")
    )]
    CredentialsRejected { region: String, message: String },

    #[error("access denied: {action} on {resource} in {region}: {message}")]
    #[diagnostic(
        code(labship::aws::access_denied),
        help("your identity lacks `{action}`; ask your AWS administrator to grant it ({policy})")
    )]
    AccessDenied {
        action: String,
        resource: String,
        region: String,
        policy: &'static str,
        message: String,
    },

    #[error("AWS quota reached: {action} for {resource} in {region}: {message}")]
    #[diagnostic(code(labship::aws::quota), help("{hint}"))]
    QuotaExceeded {
        action: String,
        resource: String,
        region: String,
        message: String,
        hint: String,
    },

    // ---- EC2 deployments -----------------------------------------------------------------
    #[error("unknown EC2 instance type `{instance_type}` in {region}")]
    #[diagnostic(
        code(labship::ec2::instance_type),
        help("check the spelling (e.g. t3.medium, m7g.large) and that the type is offered in {region}: `aws ec2 describe-instance-type-offerings --region {region}`")
    )]
    UnknownInstanceType {
        instance_type: String,
        region: String,
    },

    #[error("the image is built for {platform}, but {instance_type} runs {architectures}")]
    #[diagnostic(
        code(labship::ec2::architecture),
        help("build for the instance's architecture (drop --platform / build.platform so it follows the instance type), or choose an instance type of the image's architecture (x86_64: t3, m7i, c7i; arm64: t4g, m7g, c7g)")
    )]
    ArchitectureMismatch {
        platform: String,
        instance_type: String,
        architectures: String,
    },

    #[error("{what} in {region}: {message}")]
    #[diagnostic(code(labship::ec2::network), help("{hint}"))]
    Network {
        what: String,
        region: String,
        message: String,
        hint: String,
    },

    #[error("cannot use AMI {ami} in {region}: {message}")]
    #[diagnostic(code(labship::ec2::ami), help("{hint}"))]
    Ami {
        ami: String,
        region: String,
        message: String,
        hint: String,
    },

    #[error("cannot find your public IP address to open the Jupyter port to it: {message}")]
    #[diagnostic(
        code(labship::ec2::caller_ip),
        help("pass --allow-cidr A.B.C.D/32 with the address you browse from (or --public to open the port to everyone, with only the token protecting Jupyter)")
    )]
    CallerIp { message: String },

    #[error("the instance role {role} does not exist, and your identity may not create it ({action}: {message})")]
    #[diagnostic(
        code(labship::ec2::instance_role_missing),
        help("labship's operator policy grants no IAM write on the shared role, so that no operator can re-trust or widen the role instances run with. An administrator creates it once: `labship up --ec2` run with administrator credentials, or the commands under \"The instance role\" in infra/README.md; then run this again")
    )]
    InstanceRoleMissing {
        role: String,
        action: String,
        message: String,
    },

    #[error("the instance profile {profile} holds the role {role}, not labship's {expected}: instances launched with it would run with that role's permissions")]
    #[diagnostic(
        code(labship::ec2::instance_profile_foreign_role),
        help("an administrator checks why, then takes that role out of the profile: `aws iam remove-role-from-instance-profile --instance-profile-name {profile} --role-name {role}`; the next `labship up --ec2` run by an administrator puts labship's role in. Nothing was launched")
    )]
    InstanceProfileForeignRole {
        profile: String,
        role: String,
        expected: String,
    },

    #[error("{of} /labship/{name} does not exist, and your identity may not create it ({action}: {message})")]
    #[diagnostic(
        code(labship::ec2::boundary_missing),
        help("an administrator creates it once: `aws iam create-policy --policy-name {name} --path /labship/ --policy-document file://infra/{document} --tags Key=labship:managed-by,Value=labship` (infra/README.md says why); then run this again. Nothing was created")
    )]
    BoundaryMissing {
        of: &'static str,
        name: &'static str,
        document: &'static str,
        action: String,
        message: String,
    },

    #[error("--access ssm needs the AWS {plugin}, which is not on PATH")]
    #[diagnostic(
        code(labship::ec2::ssm_plugin_missing),
        help("install it ({install}) and check it with `{plugin} --version` (`up --access ssm` creates nothing without it); or use --access https, which needs no plugin")
    )]
    SsmPluginMissing {
        plugin: &'static str,
        install: &'static str,
    },

    #[error("no Systems Manager session to {instance}: {message}")]
    #[diagnostic(code(labship::ec2::ssm_session), help("{hint}"))]
    SsmSession {
        instance: String,
        message: String,
        hint: String,
    },

    #[error("refusing the server on {address} for `{deployment}`: {cause}")]
    #[diagnostic(
        code(labship::ec2::tls_mismatch),
        help("the instance published the certificate its Jupyter serves; another one answered, so labship sent no token. Something between you and the instance (a proxy, a hijacked address) may be reading your traffic: check the network, and `labship logs {deployment} --ec2` for the instance's own fingerprint")
    )]
    TlsMismatch {
        deployment: String,
        address: String,
        cause: String,
    },

    #[error("`{deployment}` belongs to {owner}, not to you ({caller}): refusing to {action} it")]
    #[diagnostic(
        code(labship::ec2::not_owner),
        help("its resources carry labship:owner={owner}. If you mean to act on it anyway (its owner left, it is your class's), pass --force")
    )]
    NotOwner {
        deployment: String,
        owner: String,
        caller: String,
        action: &'static str,
    },

    #[error("instance {instance} of `{deployment}` failed while {phase}: {cause}")]
    #[diagnostic(code(labship::ec2::boot), help("{hint}"))]
    BootFailed {
        deployment: String,
        instance: String,
        phase: String,
        cause: String,
        hint: String,
    },

    #[error("instance {instance} of `{deployment}` showed no Jupyter token within {seconds}s (last phase: {phase})")]
    #[diagnostic(code(labship::ec2::token_timeout), help("{hint}"))]
    InstanceTimeout {
        deployment: String,
        instance: String,
        seconds: u64,
        phase: String,
        hint: String,
    },

    #[error("cannot replace the container of `{deployment}` on {instance}: {message}")]
    #[diagnostic(code(labship::ec2::replace), help("{hint}"))]
    Replace {
        deployment: String,
        instance: String,
        message: String,
        hint: String,
    },

    #[error("EC2 has no capacity to start {instance} in {region} now: {message}")]
    #[diagnostic(
        code(labship::ec2::no_capacity),
        help("EC2 lacks capacity for this instance type in its zone now. A spot instance stopped by an interruption is started again by EC2 itself when capacity returns (its persistent request stays open), with its disk, data volume and token: run `labship up` again later (or with a longer --wait); or `labship down`, then `labship up --on-demand` (or another --instance-type) launches a new instance, and the data volume keeps the workspace")
    )]
    NoCapacity {
        instance: String,
        region: String,
        message: String,
    },

    #[error("the data volume {volume} of `{deployment}`: {message}")]
    #[diagnostic(code(labship::ec2::data_volume), help("{hint}"))]
    DataVolume {
        deployment: String,
        volume: String,
        message: String,
        hint: String,
    },

    #[error("could not save the workspace of `{deployment}` from {instance}: {message}")]
    #[diagnostic(
        code(labship::ec2::backup),
        help("labship reads the notebooks through the deployment's Jupyter (`labship backup`; and `down` of an EC2 instance without a data volume first, as its disk goes with it, removing nothing until they are saved). Start it if it is stopped (`labship up {deployment}`); on EC2 from another network, `labship up {deployment} --ec2` again updates the security group to your address; `labship down {deployment} --ec2 --delete-data` terminates without saving")
    )]
    BackupFailed {
        deployment: String,
        instance: String,
        message: String,
    },

    #[error("{count} of the resources of `{deployment}` could not be removed")]
    #[diagnostic(
        code(labship::ec2::down),
        help("{details}\nrun `labship down {deployment}` again; it removes what is left")
    )]
    TeardownIncomplete {
        deployment: String,
        count: usize,
        details: String,
    },

    #[error("AWS {action} failed for {resource} in {region}: {message}")]
    #[diagnostic(code(labship::aws::api), help("{hint}"))]
    Aws {
        action: String,
        resource: String,
        region: String,
        message: String,
        hint: String,
    },

    #[error("AWS {action} for {resource} in {region} did not get through: {message}")]
    #[diagnostic(
        code(labship::aws::unavailable),
        help("AWS throttled the call, failed on its side or did not answer, after the SDK's retries (and labship's, in waits): try again in a minute; if it persists, check your network and the AWS Health Dashboard")
    )]
    AwsUnavailable {
        action: String,
        resource: String,
        region: String,
        message: String,
    },

    // ---- the registry --------------------------------------------------------------------
    #[error("registry {registry} refused the login: {message}")]
    #[diagnostic(
        code(labship::push::login),
        help("the ECR password comes from GetAuthorizationToken and lasts 12 hours; check that `push.registry_endpoint` (if set) is the registry for this account and region, and that your identity may call ecr:GetAuthorizationToken")
    )]
    LoginRefused { registry: String, message: String },

    #[error("push of {image} failed: {message}")]
    #[diagnostic(code(labship::push::failed), help("{hint}"))]
    PushFailed {
        image: String,
        message: String,
        hint: String,
    },

    // ---- local deployments ---------------------------------------------------------------
    #[error("container {container} from {image} did not start: {message}")]
    #[diagnostic(
        code(labship::local::start),
        help("the engine refused to start the container (it was removed again); the message above says why")
    )]
    ContainerStart {
        container: String,
        image: String,
        message: String,
    },

    #[error("port {port} on {bind} is taken{holder}")]
    #[diagnostic(
        code(labship::local::port_busy),
        help("choose another port with --port, or stop what holds it")
    )]
    PortBusy {
        port: u16,
        bind: String,
        holder: String,
    },

    #[error("container {container} exited (code {code}) before Jupyter was ready")]
    #[diagnostic(code(labship::local::exited), help("{tail}"))]
    ContainerExited {
        container: String,
        code: i64,
        tail: String,
    },

    #[error("image {image} has no Jupyter: {message}")]
    #[diagnostic(
        code(labship::local::no_jupyter),
        help("the image's command must start a Jupyter server (jupyter lab, jupyter server or start-notebook.py); install jupyterlab in the Dockerfile, or start from the default workload (`labship init`)")
    )]
    NoJupyter { image: String, message: String },

    #[error("Jupyter in {container} printed no login token within {seconds}s")]
    #[diagnostic(code(labship::local::token_timeout), help("{tail}"))]
    TokenTimeout {
        container: String,
        seconds: u64,
        tail: String,
    },

    #[error("Jupyter at {url} does not answer: {message}")]
    #[diagnostic(
        code(labship::local::not_answering),
        help(
            "the server printed its token but its URL did not answer; check that nothing else (a proxy, a firewall) intercepts the port, and try again"
        )
    )]
    NotAnswering { url: String, message: String },

    #[error("no deployment named `{name}` {place}")]
    #[diagnostic(
        code(labship::deployment::not_found),
        help(
            "`labship status` (add --ec2 for AWS) lists the deployments; `labship up` starts one"
        )
    )]
    DeploymentNotFound { name: String, place: String },

    #[error("{uri}: {reason}")]
    #[diagnostic(code(labship::data::s3), help("{hint}"))]
    S3Data {
        uri: String,
        reason: String,
        hint: String,
    },

    #[error("the notebooks' repository {repository}: {reason}")]
    #[diagnostic(code(labship::workspace::git), help("{hint}"))]
    GitWorkspace {
        repository: String,
        reason: String,
        hint: String,
    },

    #[error("the Jupyter of `{deployment}` ({server}, {state}) cannot be reached")]
    #[diagnostic(code(labship::not_running), help("{hint}"))]
    NotRunning {
        deployment: String,
        server: String,
        state: String,
        hint: String,
    },

    #[error("roster {}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    #[diagnostic(code(labship::class::roster), help("{hint}"))]
    Roster {
        path: PathBuf,
        line: Option<u64>,
        message: String,
        hint: String,
    },

    #[error("class `{class}` has no seat `{seat}` on {target}")]
    #[diagnostic(
        code(labship::class::no_seat),
        help("`labship status` lists the seats (the class's deployments are `{class}-SEAT`)")
    )]
    SeatNotFound {
        class: String,
        seat: String,
        target: String,
    },

    #[error("`{class}` is not a class on {target}: no deployment is a seat of it")]
    #[diagnostic(
        code(labship::class::none),
        help("start one with `labship up {class} --seats N` (or --roster FILE); `labship status` lists what runs")
    )]
    NotAClass { class: String, target: String },

    #[error("{failed} of the {total} seats of `{class}` are not all removed: {seats}")]
    #[diagnostic(
        code(labship::class::seats_left),
        help("the report above says what is left of each and why; the other seats are gone. `{again}` removes what is left")
    )]
    SeatsLeft {
        class: String,
        failed: usize,
        total: usize,
        seats: String,
        again: String,
    },

    #[error("the security group the seats of `{class}` share is not removed: {cause}")]
    #[diagnostic(
        code(labship::class::group_left),
        help("`{again}` tries it again (with --force when another identity made the group); `labship status` lists it while it is there")
    )]
    ClassGroupLeft {
        class: String,
        cause: String,
        again: String,
    },

    #[error("{failed} of the {total} seats of `{class}` failed: {seats}")]
    #[diagnostic(
        code(labship::class::seats_failed),
        help("the report above says why for each; the other seats are ready. `{again}` tries the failed seats again and leaves the others as they are")
    )]
    SeatsFailed {
        class: String,
        failed: usize,
        total: usize,
        seats: String,
        again: String,
    },

    /// Ctrl-C during a class's `up`: each seat stopped at its own safe point, and its row in
    /// the roster (printed before this) says where.
    #[error("interrupted: the seats of `{class}` stopped before every seat was ready")]
    #[diagnostic(code(labship::class::interrupted), help("{summary}"))]
    SeatsInterrupted { class: String, summary: String },

    #[error("run {run_id}: cell {cell} of {of} failed: {ename}: {evalue}")]
    #[diagnostic(
        code(labship::job::failed),
        help("the executed notebook in {results} shows the cell, its output and the traceback; fix it and `labship run` again")
    )]
    JobFailed {
        run_id: String,
        cell: usize,
        of: usize,
        ename: String,
        evalue: String,
        results: String,
    },

    #[error("{failed} of {total} runs did not succeed")]
    #[diagnostic(
        code(labship::job::runs_failed),
        help("the table above says why for each, and where each run's executed notebook is")
    )]
    RunsFailed { failed: usize, total: usize },

    #[error("run {run_id}: stopped after {seconds}s (--timeout), in cell {cell} of {of}")]
    #[diagnostic(
        code(labship::job::timeout),
        help("what ran is in {results}; give the job more time with --timeout (e.g. --timeout 2h), or make it faster")
    )]
    JobTimedOut {
        run_id: String,
        seconds: u64,
        cell: usize,
        of: usize,
        results: String,
    },

    #[error("run {run_id}: interrupted (Ctrl-C) in cell {cell} of {of}")]
    #[diagnostic(
        code(labship::job::interrupted),
        help("what it left is in {results}; `labship run` runs it again")
    )]
    JobInterrupted {
        run_id: String,
        cell: usize,
        of: usize,
        results: String,
    },

    #[error("no Jupyter token in {origin}: {reason}")]
    #[diagnostic(code(labship::token::not_found), help("{hint}"))]
    TokenNotFound {
        origin: String,
        reason: String,
        hint: String,
    },

    #[error("seat `{seat}` of class `{class}` shares {instance} with {others}: {action} alone would change the seats beside it, so labship does not do it for one seat of a shared host")]
    #[diagnostic(code(labship::class::shared_host), help("{hint}"))]
    SharedHost {
        class: String,
        seat: String,
        instance: String,
        others: String,
        action: String,
        hint: String,
    },

    #[error("{option} does not apply to a deployment on {target}")]
    #[diagnostic(code(labship::unsupported), help("{hint}"))]
    Unsupported {
        option: String,
        target: String,
        hint: String,
    },

    #[error("refusing to {action} without confirmation")]
    #[diagnostic(
        code(labship::confirm),
        help("pass --yes to confirm (standard input is not a terminal, so labship cannot ask)")
    )]
    NeedsConfirmation { action: String },

    #[error("cannot make the offline Jupyter base image: {message}")]
    #[diagnostic(code(labship::base::offline), help("{hint}"))]
    OfflineBase { message: String, hint: String },

    #[error("interrupted: stopped before {step}")]
    #[diagnostic(code(labship::interrupted), help("{summary}"))]
    Interrupted { step: String, summary: String },

    // ---- init ----------------------------------------------------------------------------
    #[error("cannot write {}: {source}", path.display())]
    #[diagnostic(code(labship::init::write), help("check that the folder is writable"))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(code(labship::read), help("check the path and its permissions"))]
    ReadInput {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// This error again, for another of the requests one call made together (the seats one
    /// RunInstances launched): the AWS errors as they are, any other as an AWS error saying
    /// it.
    #[must_use]
    pub fn again(&self) -> Error {
        match self {
            Error::QuotaExceeded {
                action,
                resource,
                region,
                message,
                hint,
            } => Error::QuotaExceeded {
                action: action.clone(),
                resource: resource.clone(),
                region: region.clone(),
                message: message.clone(),
                hint: hint.clone(),
            },
            Error::AccessDenied {
                action,
                resource,
                region,
                policy,
                message,
            } => Error::AccessDenied {
                action: action.clone(),
                resource: resource.clone(),
                region: region.clone(),
                policy,
                message: message.clone(),
            },
            Error::AwsUnavailable {
                action,
                resource,
                region,
                message,
            } => Error::AwsUnavailable {
                action: action.clone(),
                resource: resource.clone(),
                region: region.clone(),
                message: message.clone(),
            },
            Error::CredentialsRejected { region, message } => Error::CredentialsRejected {
                region: region.clone(),
                message: message.clone(),
            },
            Error::Aws {
                action,
                resource,
                region,
                message,
                hint,
            } => Error::Aws {
                action: action.clone(),
                resource: resource.clone(),
                region: region.clone(),
                message: message.clone(),
                hint: hint.clone(),
            },
            Error::Interrupted { step, summary } => Error::Interrupted {
                step: step.clone(),
                summary: summary.clone(),
            },
            other => Error::Aws {
                action: "ec2:RunInstances".into(),
                resource: String::new(),
                region: String::new(),
                message: other.to_string(),
                hint: "see the error of the first seat launched with this one".into(),
            },
        }
    }

    /// EC2 had no capacity for the instance type (in the zone, now): another type, or the
    /// same one a little later, may start.
    /// (A launch's answer: starting a stopped instance without capacity is `NoCapacity`,
    /// which another type cannot help.)
    pub fn is_no_capacity(&self) -> bool {
        matches!(self, Error::QuotaExceeded { message, .. }
            if message.starts_with("InsufficientInstanceCapacity"))
    }

    /// The command already printed its report, which says what failed (`SeatsFailed`,
    /// `SeatsLeft`, a job's): with
    /// `-o json` no error document follows it on stdout.
    pub fn reported(&self) -> bool {
        matches!(
            self,
            Error::SeatsFailed { .. }
                | Error::SeatsInterrupted { .. }
                | Error::SeatsLeft { .. }
                | Error::ClassGroupLeft { .. }
                | Error::JobFailed { .. }
                | Error::JobTimedOut { .. }
                | Error::JobInterrupted { .. }
                | Error::RunsFailed { .. }
        )
    }

    /// The process exit code for this error: 130 (the shell's "ended by SIGINT") for an
    /// interruption, 1 for every other failure (clap exits 2 on usage errors by itself).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted { .. } | Error::SeatsInterrupted { .. } => 130,
            _ => 1,
        }
    }

    /// True for an AWS answer that may well be different a moment later (throttling, a
    /// server-side error, a timeout, a lost connection): waits keep trying until their own
    /// deadline instead of failing.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::AwsUnavailable { .. })
    }

    pub fn engine(action: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Engine {
            action: action.into(),
            message: err.to_string(),
        }
    }
}

/// Renders an SDK error with its code and message (never a bare "service error").
pub fn aws_message<E>(err: &E) -> String
where
    E: std::error::Error + 'static,
{
    aws_smithy_types::error::display::DisplayErrorContext(err).to_string()
}

/// Renders a bollard error; the engine's own message is the useful part.
pub fn engine_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}
