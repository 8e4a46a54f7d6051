//! `labship run --ec2`: a job on an instance of its own, which ends itself.
//!
//! The image is built and pushed as `up --ec2` does. The job (runner, `job.json`, the
//! notebook, the list of inputs) is put in S3 beside where its results go
//! (`<--output-uri>/<run-id>/.labship-job/`), and an instance is launched with
//! `InstanceInitiatedShutdownBehavior=terminate` and `userdata/job.sh` as its user-data: the
//! host schedules its own power-off at its deadline first, pulls the image, copies the job
//! and the inputs from S3 with its role, runs the job's container to its end, puts the
//! executed notebook, `outputs/`, the runner's progress log and, last, `.labship-host.json`
//! (how it ended) in the run's folder, and powers off, which terminates it. Nothing of it
//! depends on this machine: a laptop closed or asleep changes nothing.
//!
//! labship follows the run (progress from the console, the end from S3), brings the run's
//! folder into `runs/<run-id>/`, puts `run.json` in S3 (last), and ends the host (which has
//! nothing left to do once its end is in S3) with its role. The hosts
//! share a security group per VPC with no inbound rule. A detached run is followed the same way
//! by `fetch`, from this machine's record (`runs/<run-id>/ec2.json`) or, on any machine, from
//! the host's tags.
//! Results travel through S3: an EC2 run needs `--output-uri`.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    claim_run_folder, list as list_files, read_report, write_report, DetachedReport, FailedCell,
    JobFile, JobSpec, Output, Progress, RunReport, RUNNER, RUN_FILE, TAG,
};
use crate::aws::ec2::{HostImage, InstanceTypeInfo, LaunchSpec};
use crate::aws::iam::{job_role_name, JobRoleSpec};
use crate::aws::s3::{Bucket, S3Uri, S3};
use crate::aws::{Aws, Cloud};
use crate::config::{Config, Target};
use crate::data::{Checked, Copied};
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::hosts::ec2::{plan, userdata};
use crate::interrupt;
use crate::output::Printer;
use crate::push::{self, Ecr};
use crate::tags;

/// Beside the results in the run's folder in S3, and not results: the job as staged, how
/// the host ended, the runner's progress log and the host's own log.
const STAGED: &str = ".labship-job";
const HOST_END: &str = ".labship-host.json";
const HOST_LOG: &str = ".labship-host.log";
const JOB_LOG: &str = ".labship-job.log";
/// This machine's record of a run it launched on EC2 (in its run folder).
const RECORD: &str = "ec2.json";
/// How often a run's end is looked for: every half second at first (a short job's end is
/// seen at once; a GET of S3), every 5 s after a minute. The console and the host's state
/// (two EC2 calls, whose rates are lower) are looked at every other time.
const POLL_FIRST: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_secs(5);
const POLL_FIRST_FOR: Duration = Duration::from_secs(60);
/// How long after its host is gone a run's end may still appear in S3.
const GONE_GRACE: Duration = Duration::from_secs(60);
/// How old a job role with no host must be before another run removes it (younger, its run
/// may be between creating it and launching).
const ORPHAN_AGE_SECS: i64 = 15 * 60;
/// How long a host that was told to end (Ctrl-C, gone) is waited for before its role is
/// removed; past that, the role is left to the next run's sweep.
const ROLE_AFTER_END: Duration = Duration::from_secs(20);

/// What `fetch` needs to follow a run on EC2.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    run_id: String,
    deployment: String,
    instance: String,
    /// The registry's (and the instance's) region.
    region: String,
    /// The run's folder in S3 (`<--output-uri>/<run-id>/`).
    job_uri: String,
    /// The host's deadline (Unix seconds): it is gone by then whatever happened.
    host_deadline: i64,
}

/// How the host ended (`.labship-host.json`, written by `userdata/job.sh`).
#[derive(Debug, Clone, Deserialize)]
struct HostEnd {
    host_exit: i64,
    /// The job's container's exit code; `None`: the job never ran.
    exit_code: Option<i64>,
    oom_killed: bool,
    /// The host killed the container past its deadline (its runner did not stop itself).
    #[serde(default)]
    killed: bool,
    /// The results are in S3.
    uploaded: bool,
    /// The seconds the job was given (its timeout, or fewer: see `userdata/job.sh`'s
    /// `job_time`); `None`: it never started.
    #[serde(default)]
    job_timeout: Option<u64>,
    phase: String,
    error: String,
}

impl HostEnd {
    /// The end of a host whose `.labship-host.json` cannot be read.
    fn unreadable(why: &str) -> HostEnd {
        HostEnd {
            host_exit: -1,
            exit_code: None,
            oom_killed: false,
            killed: false,
            uploaded: false,
            job_timeout: None,
            phase: "unknown".into(),
            error: format!("its {HOST_END} is unreadable: {why}"),
        }
    }
}

/// A run on EC2: its report when followed to its end, or what was started (`--detach`).
pub enum Outcome {
    Ended(RunReport),
    Detached(DetachedReport),
}

/// Where a run on EC2 happens: the account, the bucket of its folder, and how to say things.
struct Place<'a> {
    cloud: &'a Cloud,
    bucket: &'a Bucket,
    printer: &'a Printer,
}

/// What the job host is: the image it runs, on what, and what its role may reach.
struct HostSpec<'a> {
    image: &'a str,
    itype: &'a InstanceTypeInfo,
    ami: &'a HostImage,
    vpc: &'a str,
    root_gib: i32,
    account: &'a str,
    repository_arn: &'a str,
    reach: &'a [(S3Uri, bool)],
    /// The region of the bucket of the run's folder.
    job_region: &'a str,
}

/// What every run of an invocation shares, checked and made once: the account, the bucket
/// of the results, the image (built; its upload prepared) and what the hosts are.
struct Ready {
    cloud: Cloud,
    bucket: Bucket,
    ecr: Ecr,
    itype: InstanceTypeInfo,
    ami: HostImage,
    vpc: String,
    image: String,
    /// The image's working folder (the job's, where its inputs and outputs are).
    cwd: String,
    root_gib: i32,
    /// Each input's line of `inputs.tsv`, and what the report says of it.
    host_inputs: Vec<(String, Copied)>,
    /// Each input's address, and whether it is one object (what a run's role may read).
    reach: Vec<(S3Uri, bool)>,
    region: String,
    account: String,
    /// The image's repository, as IAM names it (what a run's role may pull).
    repository_arn: String,
}

/// Everything that must hold before anything is created, then the image built (when
/// needed) and its upload prepared.
async fn ready(
    engine: &Engine,
    aws: &Aws,
    config: &Config,
    output: &Output,
    checked: &[Checked],
    printer: &Printer,
) -> Result<(Ready, push::Prepared)> {
    let cloud = Cloud::new(aws);
    let ecr = Ecr::new(aws, config.push.registry_endpoint.clone());
    let host_inputs = checked
        .iter()
        .map(Checked::on_host)
        .collect::<Result<Vec<_>>>()?;
    let (itype, ami, vpc, caller, bucket) = interrupt::cancellable(
        "looking up the instance type, the AMI and the network",
        async {
            tokio::try_join!(
                cloud.instance_type(&config.ec2.instance_type),
                crate::hosts::ec2::resolve_ami(&cloud, &config.ec2.ami, config.build.platform),
                cloud.vpc(config.ec2.subnet.as_deref()),
                cloud.caller_arn(),
                output.s3.locate(&output.uri),
            )
        },
    )
    .await?;
    let account = crate::aws::account_of(&caller).to_string();
    let reach: Vec<(S3Uri, bool)> = checked
        .iter()
        .map(|c| (c.uri.clone(), c.single()))
        .collect();
    let repository_arn = format!(
        "arn:aws:ecr:{}:{account}:repository/{}",
        aws.region, config.push.repository
    );
    // The policy is checked before anything is made (too many inputs for IAM), with a run
    // id as long as the run's.
    let sample = output.uri.join(&super::new_run_id());
    job_policy(&account, &repository_arn, &sample, &reach)?;
    interrupt::checkpoint("the job hosts' permissions boundary")?;
    if cloud
        .ensure_boundary(&account, crate::aws::iam::Boundary::Job)
        .await?
    {
        printer.note(format!(
            "Created the job hosts' permissions boundary {} (IAM policy)",
            crate::aws::iam::JOB_BOUNDARY
        ));
    }
    let outside: Vec<&str> = std::iter::once(&output.uri.bucket)
        .chain(checked.iter().map(|c| &c.uri.bucket))
        .filter(|b| !b.starts_with("labship-"))
        .map(String::as_str)
        .collect();
    if !outside.is_empty() {
        printer.note(format!(
            "The job hosts' permissions boundary ({}) allows buckets named labship-* only: unless an administrator added {} to it by name (infra/README.md), the job host will be refused there",
            crate::aws::iam::JOB_BOUNDARY,
            outside.join(", ")
        ));
    }

    // Roles of runs whose host is gone are removed while the image is readied.
    let (prepared, ()) = tokio::join!(
        push::prepare(engine, &ecr, config, printer),
        sweep_job_roles(&cloud, &aws.region, printer)
    );
    let prepared = prepared?;
    let image = format!(
        "{}/{}:{}",
        prepared.registry_host(),
        config.push.repository,
        prepared.tag()
    );
    let local_image = prepared.local_image();
    let cwd = engine
        .image_workdir(&local_image)
        .await?
        .unwrap_or_else(|| "/tmp".into());
    let image_size = engine.image_size(&local_image).await?;
    // The inputs are on the host's disk twice (copied, then in the container), beside the
    // image.
    let inputs_bytes: u64 = checked.iter().map(Checked::bytes).sum();
    let root_gib = crate::hosts::ec2::root_volume_gib(ami.min_root_gib, image_size)
        + i32::try_from((2 * inputs_bytes).div_ceil(1 << 30)).unwrap_or(i32::MAX / 2);
    Ok((
        Ready {
            cloud,
            bucket,
            ecr,
            itype,
            ami,
            vpc: vpc.vpc,
            image,
            cwd,
            root_gib,
            host_inputs,
            reach,
            region: aws.region.clone(),
            account,
            repository_arn,
        },
        prepared,
    ))
}

/// A run started on a host of its own: its record, folder and job.
struct Started {
    record: Record,
    results: std::path::PathBuf,
    job: JobFile,
}

/// Claims the run's folder and launches its host (`upload`: the image's upload, done
/// meanwhile; none when it is there already). Nothing is left of a run that did not start.
async fn start(
    engine: &Engine,
    ready: &Ready,
    config: &Config,
    spec: &JobSpec,
    output: &Output,
    upload: Option<push::Prepared>,
    printer: &Printer,
) -> Result<Started> {
    interrupt::checkpoint("starting the job")?;
    let (run_id, results) = claim_run_folder(&spec.runs_dir)?;
    let job_uri = format!("{}/", output.uri.join(&run_id));
    let job = JobFile::new(
        spec,
        &ready.cwd,
        ready.host_inputs.iter().map(|(_, c)| c.clone()).collect(),
        Some(job_uri.clone()),
    );
    let record = Record {
        run_id: run_id.clone(),
        deployment: config.name.clone(),
        instance: String::new(),
        region: ready.region.clone(),
        job_uri,
        host_deadline: crate::hosts::now_secs()
            + 60 * userdata::job_host_deadline_min(plan::PULL_DEADLINE, job.timeout) as i64,
    };
    let place = Place {
        cloud: &ready.cloud,
        bucket: &ready.bucket,
        printer,
    };
    let host = HostSpec {
        image: &ready.image,
        itype: &ready.itype,
        ami: &ready.ami,
        vpc: &ready.vpc,
        root_gib: ready.root_gib,
        account: &ready.account,
        repository_arn: &ready.repository_arn,
        reach: &ready.reach,
        job_region: &ready.bucket.region,
    };
    let inputs_tsv: String = ready
        .host_inputs
        .iter()
        .map(|(line, _)| line.as_str())
        .collect();
    match launch(
        &place,
        config,
        spec,
        (&job, inputs_tsv),
        &host,
        record,
        upload.map(|p| (engine, &ready.ecr, p)),
    )
    .await
    {
        Ok(record) => Ok(Started {
            record,
            results,
            job,
        }),
        Err(e) => {
            // Nothing runs: no folder for it.
            let _ = std::fs::remove_dir_all(&results);
            Err(e)
        }
    }
}

/// `labship run --ec2`: launches the job host (while the image uploads) and, unless
/// `detach`, follows it to its end. `checked`: the inputs, checked (the host copies them
/// itself); `output`: where the run's folder goes (an EC2 run's results travel through S3).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: &Engine,
    aws: &Aws,
    config: &Config,
    spec: &JobSpec,
    output: &Output,
    checked: &[Checked],
    detach: bool,
    printer: &Printer,
) -> Result<Outcome> {
    let (ready, prepared) = ready(engine, aws, config, output, checked, printer).await?;
    let started = start(
        engine,
        &ready,
        config,
        spec,
        output,
        Some(prepared),
        printer,
    )
    .await?;
    let Started {
        record,
        results,
        job,
    } = started;
    if detach {
        let_go(&record);
        return Ok(Outcome::Detached(DetachedReport {
            run_id: record.run_id.clone(),
            target: Target::Ec2,
            deployment: config.name.clone(),
            notebook: job.notebook(),
            state: "running".into(),
            container: record.instance.clone(),
            results,
            timeout_secs: job.timeout,
        }));
    }
    let place = Place {
        cloud: &ready.cloud,
        bucket: &ready.bucket,
        printer,
    };
    follow(&place, &record, Some(job), &results, true)
        .await
        .map(Outcome::Ended)
}

/// `labship run --ec2 --matrix`: one host per combination, `at_once` at a time, each run
/// followed to its end; the image is built and uploaded once, before the first launch.
#[allow(clippy::too_many_arguments)]
pub async fn run_matrix(
    engine: &Engine,
    aws: &Aws,
    config: &Config,
    spec: &JobSpec,
    output: &Output,
    checked: &[Checked],
    combos: Vec<Vec<(String, serde_json::Value)>>,
    at_once: usize,
    printer: &Printer,
) -> Result<super::MatrixReport> {
    use futures_util::StreamExt as _;
    let began = Instant::now();
    let (ready, prepared) = ready(engine, aws, config, output, checked, printer).await?;
    push::finish(engine, &ready.ecr, prepared, printer).await?;
    printer.note(format!(
        "Running {} {} times, a host each ({} at a time)",
        spec.source.name,
        combos.len(),
        at_once.max(1)
    ));
    let ready = &ready;
    let outcomes: Vec<_> = futures_util::stream::iter(combos)
        .map(|combo| async move {
            let matrix: std::collections::BTreeMap<String, serde_json::Value> =
                combo.iter().cloned().collect();
            let mut one = spec.clone();
            one.parameters.extend(combo);
            one.label = Some(super::values_label(&matrix));
            let ran = async {
                let started = start(engine, ready, config, &one, output, None, printer).await?;
                let place = Place {
                    cloud: &ready.cloud,
                    bucket: &ready.bucket,
                    printer,
                };
                follow(
                    &place,
                    &started.record,
                    Some(started.job),
                    &started.results,
                    true,
                )
                .await
            }
            .await;
            (matrix, ran)
        })
        .buffered(at_once.max(1))
        .collect()
        .await;
    super::matrix_report(Target::Ec2, &spec.source.name, outcomes, began)
}

/// The job hosts this labship launched and still answers for, in launch order (a matrix has
/// several at once): the interruption's hint terminates every one of them.
#[derive(Debug, Default)]
struct Running(Vec<String>);

impl Running {
    /// Records `instance` as running (`up`) or no longer this labship's to end; the hint for
    /// the hosts left, if any.
    fn set(&mut self, instance: &str, up: bool) -> Option<String> {
        self.0.retain(|i| i != instance);
        if up {
            self.0.push(instance.to_string());
        }
        (!self.0.is_empty()).then(|| {
            format!(
                "aws ec2 terminate-instances --instance-ids {}",
                self.0.join(" ")
            )
        })
    }
}

static RUNNING: std::sync::Mutex<Running> = std::sync::Mutex::new(Running(Vec::new()));

/// [`Running::set`] for this process, and the interruption's hint pointed at what is left
/// (none once no host is).
fn running(instance: &str, up: bool) -> Result<()> {
    let hint = match RUNNING.lock() {
        Ok(mut running) => running.set(instance, up),
        Err(_) => return Ok(()),
    };
    interrupt::install(interrupt::Then::Remove(hint.unwrap_or_default()))
}

/// The run's host is no longer this labship's to end (it ended, or goes on without it): the
/// interruption neither reports it nor offers to terminate it.
fn let_go(record: &Record) {
    interrupt::gone(&made(record));
    let _ = running(&record.instance, false);
}

/// The job host as the interruption report names it.
fn made(record: &Record) -> String {
    format!(
        "job host {} of run {} (it ends itself by its deadline)",
        record.instance, record.run_id
    )
}

/// Stages the job in S3 while the host's own role is made, launches the host in the job
/// hosts' security group (while the image uploads) and records the run in its folder. An
/// error means no host runs, and no role is left of it.
async fn launch(
    place: &Place<'_>,
    config: &Config,
    spec: &JobSpec,
    (job, inputs_tsv): (&JobFile, String),
    host: &HostSpec<'_>,
    mut record: Record,
    upload: Option<(&Engine, &Ecr, push::Prepared)>,
) -> Result<Record> {
    let Place {
        cloud,
        bucket,
        printer,
    } = *place;
    let run_id = record.run_id.clone();
    let job_uri = S3Uri::parse(&record.job_uri)?;
    let staged = job_uri.join(STAGED);
    let job_json = serde_json::to_vec(job).map_err(|e| Error::engine("writing the job", e))?;
    let source = format!("src/{}", spec.source.name);
    let files = [
        ("runner.py", RUNNER.as_bytes().to_vec()),
        ("job.json", job_json),
        (source.as_str(), spec.source.bytes.clone()),
        ("inputs.tsv", inputs_tsv.into_bytes()),
        ("workdir", job.cwd.clone().into_bytes()),
    ];
    let staged_files: Vec<S3Uri> = files.iter().map(|(rel, _)| staged.join(rel)).collect();
    // Every put to its end (none dropped in flight), so that what a failure leaves is
    // known and removed.
    let stage = async {
        futures_util::future::join_all(files.into_iter().map(|(rel, bytes)| {
            let at = staged.join(rel);
            async move { bucket.put_bytes(&at, bytes).await }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
    };
    // The host's own role, meanwhile: exactly this run's job, inputs and folder.
    let job_tags = tags::for_job(&run_id, &config.name, &record.job_uri);
    let policy = job_policy(host.account, host.repository_arn, &job_uri, host.reach)?;
    let role = JobRoleSpec {
        run_id: &run_id,
        region: &record.region,
        account: host.account,
        tags: &job_tags,
        policy: &policy,
    };
    interrupt::checkpoint("the job host's role")?;
    // Both to their end: a role made while the staging failed is removed again.
    let (staged, profile) = tokio::join!(stage, cloud.create_job_role(&role));
    let profile = match profile {
        Ok(profile) => profile,
        Err(e) => {
            unstage(bucket, &staged_files, printer).await;
            return Err(e);
        }
    };
    let started = async {
        staged?;
        let launch_spec = host_launch(config, job, host, &record, &job_tags, profile)?;
        start_host(place, &launch_spec, host.vpc, upload).await
    }
    .await;
    let instance = match started {
        Ok(instance) => instance,
        Err(e) => {
            // No host runs: its role goes. A launch whose every answer was lost made its
            // host all the same (its client token made the SDK's retries one instance):
            // that one is ended now rather than at its registry login's deadline.
            end_lost_hosts(cloud, &run_id, printer).await;
            remove_role(cloud, &run_id, printer).await;
            unstage(bucket, &staged_files, printer).await;
            return Err(e);
        }
    };
    record.instance = instance.id.clone();
    interrupt::made(made(&record));
    running(&instance.id, true)?;
    // The record is what `fetch` on this machine starts from; without it, the host's tags.
    let path = spec.runs_dir.join(&run_id).join(RECORD);
    let written = serde_json::to_vec_pretty(&record)
        .map_err(std::io::Error::other)
        .and_then(|body| std::fs::write(&path, body));
    if let Err(e) = written {
        printer.note(format!(
            "could not write {}: {e}; `labship fetch {run_id} --ec2` finds the run by its host's tags",
            path.display()
        ));
    }
    printer.note(format!(
        "Running {} as job {run_id} on {} ({}); it ends itself within {}",
        spec.source.name,
        instance.id,
        host.itype.name,
        crate::hosts::age(record.host_deadline - crate::hosts::now_secs())
    ));
    Ok(record)
}

/// What RunInstances gets for a run's host: its script, its tags, its own profile.
fn host_launch(
    config: &Config,
    job: &JobFile,
    host: &HostSpec<'_>,
    record: &Record,
    job_tags: &[(&str, String)],
    profile: String,
) -> Result<LaunchSpec> {
    let run_id = &record.run_id;
    let user_data = userdata::render_job(&userdata::JobHostInputs {
        name: &format!("run-{run_id}"),
        region: &record.region,
        registry: host.image.split('/').next().unwrap_or_default(),
        image: host.image,
        host_kind: plan::ami_kind(&config.ec2.ami),
        pull_deadline_secs: plan::PULL_DEADLINE,
        job_uri: &record.job_uri,
        job_region: host.job_region,
        timeout_secs: job.timeout,
    })
    .map_err(|e| Error::InvalidSetting {
        what: "job host script",
        value: run_id.clone(),
        reason: e.to_string(),
        hint: "this is a bug in labship, or a setting outside what a host script may hold".into(),
    })?;
    let owned = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let mut instance_tags = owned(job_tags);
    instance_tags.push((
        "Name".into(),
        format!("labship-run-{}-{run_id}", config.name),
    ));
    Ok(LaunchSpec {
        deployment: format!("{}-{run_id}", config.name),
        ami: host.ami.id.clone(),
        instance_type: host.itype.name.clone(),
        root_device: host.ami.root_device.clone(),
        root_gib: host.root_gib,
        metadata_hop_limit: plan::METADATA.hop_limit,
        subnet: config.ec2.subnet.clone(),
        availability_zone: None,
        spot: false,
        ssh_key: None,
        user_data: userdata::gzip(&user_data),
        instance_tags,
        volume_tags: owned(job_tags),
        terminate_on_shutdown: true,
        instance_profile: profile,
    })
}

/// Launches a run's host in the job hosts' security group of `vpc` while the image uploads
/// (`upload`; the host retries its pull until the image is there). A host whose image did
/// not arrive is terminated again.
async fn start_host(
    place: &Place<'_>,
    launch_spec: &LaunchSpec,
    vpc: &str,
    upload: Option<(&Engine, &Ecr, push::Prepared)>,
) -> Result<crate::aws::ec2::Instance> {
    let Place { cloud, printer, .. } = *place;
    interrupt::checkpoint("the job hosts' security group")?;
    let group = cloud.ensure_job_security_group(vpc).await?;
    let upload = async {
        match upload {
            Some((engine, ecr, prepared)) => push::finish(engine, ecr, prepared, printer)
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    };
    let start = async {
        interrupt::checkpoint("launching the job host")?;
        cloud
            .launch(launch_spec, &group, Duration::from_secs(120))
            .await
    };
    match tokio::join!(upload, start) {
        (Ok(()), Ok(instance)) => Ok(instance),
        (Err(e), Ok(instance)) => {
            printer.note(format!(
                "The push did not finish: terminating the job host {} again",
                instance.id
            ));
            let ids = [instance.id.clone()];
            if let Err(t) = cloud.terminate(&ids).await {
                printer.note(format!(
                    "could not terminate the job host {}: {t}; `aws ec2 terminate-instances --instance-ids {}` does (it ends itself by its deadline anyway)",
                    instance.id, instance.id
                ));
            }
            Err(e)
        }
        (_, Err(e)) => Err(e),
    }
}

/// A run's progress from the runner's events, each taken once.
#[derive(Default)]
struct Events {
    progress: Progress,
    seen: HashSet<String>,
}

impl Events {
    /// The runner's events in `text` not seen before (the console is a moving window, and
    /// the log repeats what the console showed), in order.
    fn take(&mut self, text: &str, printer: &Printer) {
        for line in text.lines() {
            let Some(at) = line.find(TAG) else { continue };
            let event = line[at..].trim_end();
            if self.seen.insert(event.to_string()) {
                self.progress.line(event, printer);
            }
        }
    }
}

/// An answer that could not be had this time (throttling, a 5xx, a timeout) is "not known
/// yet": the wait goes on.
fn for_now<T>(answer: Result<Option<T>>) -> Result<Option<T>> {
    match answer {
        Err(Error::AwsUnavailable { message, .. }) => {
            tracing::info!("not known yet: {message}");
            Ok(None)
        }
        other => other,
    }
}

/// Waits for the run's end: `.labship-host.json` in S3. Progress from the console on the
/// way. A host gone without putting it, or one past its deadline, is an error.
async fn wait_for_end(place: &Place<'_>, record: &Record, events: &mut Events) -> Result<HostEnd> {
    let job_uri = S3Uri::parse(&record.job_uri)?;
    let end_at = job_uri.join(HOST_END);
    let mut gone_since: Option<Instant> = None;
    let began = Instant::now();
    let mut round = 0u64;
    loop {
        round += 1;
        let early = began.elapsed() < POLL_FIRST_FOR;
        // The end, and (every other time early on) the console and the host, together.
        let look = !early || round % 2 == 1;
        let (end, console, instance) = tokio::join!(
            place.bucket.get_bytes(&end_at),
            async {
                match look {
                    true => Some(place.cloud.console(&record.instance, true).await),
                    false => None,
                }
            },
            async {
                match look {
                    true => Some(place.cloud.instance(&record.instance).await),
                    false => None,
                }
            },
        );
        if let Some(bytes) = for_now(end)? {
            return Ok(serde_json::from_slice::<HostEnd>(&bytes)
                .unwrap_or_else(|e| HostEnd::unreadable(&e.to_string())));
        }
        if let Some(Ok(Some(console))) = console {
            events.take(&console, place.printer);
        }
        let Some(instance) = instance else {
            tokio::time::sleep(POLL_FIRST).await;
            continue;
        };
        let instance = match instance {
            Ok(instance) => Some(instance),
            Err(Error::AwsUnavailable { .. }) => None,
            Err(e) => return Err(e),
        };
        let gone =
            instance.is_some_and(|i| !i.is_some_and(|i| i.is_live() && i.state != "shutting-down"));
        // The host puts its end before it powers off: gone without it (no capacity, a
        // hand's termination, a host that broke), S3 gets a little while, then it is said.
        if !gone {
            gone_since = None;
        } else if gone_since.get_or_insert_with(Instant::now).elapsed() > GONE_GRACE {
            return Err(host_failed(
                record,
                format!(
                    "the job host ended without putting its results at {}",
                    record.job_uri
                ),
            ));
        }
        if crate::hosts::now_secs() > record.host_deadline + 600 {
            let _ = place
                .cloud
                .terminate(std::slice::from_ref(&record.instance))
                .await;
            return Err(host_failed(
                record,
                "the job host outlived its deadline; labship terminated it".into(),
            ));
        }
        let every = if began.elapsed() < POLL_FIRST_FOR {
            POLL_FIRST
        } else {
            POLL
        };
        tokio::time::sleep(every).await;
    }
}

fn host_failed(record: &Record, cause: String) -> Error {
    Error::BootFailed {
        deployment: record.deployment.clone(),
        instance: record.instance.clone(),
        phase: "job".into(),
        cause,
        hint: format!(
            "the host's console (`aws ec2 get-console-output --instance-id {}`) and its log ({}{HOST_LOG}, when it could put it) show the last step; run the job again",
            record.instance, record.job_uri
        ),
    }
}

/// Follows a run on EC2 to its end: progress from the host's console, the end from S3;
/// then its folder into `results`, `run.json` in S3 (last), and the host ended. `job`:
/// the job, when known here (else read back from where it was staged). Ctrl-C ends the host
/// when `end_on_interrupt` (an attached run ends with its labship, as a local one does); a
/// `fetch` leaves it going, as does an error reading AWS while the host lives.
async fn follow(
    place: &Place<'_>,
    record: &Record,
    job: Option<JobFile>,
    results: &Path,
    end_on_interrupt: bool,
) -> Result<RunReport> {
    let printer = place.printer;
    let mut events = Events::default();
    let started = Instant::now();
    let waited = interrupt::cancellable("the job", wait_for_end(place, record, &mut events)).await;
    let end = match waited {
        Ok(end) => end,
        Err(e @ Error::Interrupted { .. }) if end_on_interrupt => {
            printer.note(format!(
                "Interrupted: terminating the job host {}",
                record.instance
            ));
            end_host(place.cloud, record, false, printer).await;
            // The run's folder says so (`runs`, `fetch`), rather than "not fetched yet".
            if let Some(job) = &job {
                let _ = write_report(&interrupted(
                    record,
                    job,
                    &events.progress,
                    results,
                    started,
                ));
            }
            // The interruption's words as things are now (the host gone).
            return Err(
                interrupt::checkpoint(&format!("the end of run {}", record.run_id))
                    .err()
                    .unwrap_or(e),
            );
        }
        // The host is gone (or was ended at its deadline): what it left is removed.
        Err(e @ Error::BootFailed { .. }) => {
            end_host(place.cloud, record, false, printer).await;
            return Err(e);
        }
        Err(e) => {
            let_go(record);
            printer.note(format!(
                "Run {} goes on on {}; `labship fetch {} --ec2` follows it again",
                record.run_id, record.instance, record.run_id
            ));
            return Err(e);
        }
    };
    // The host has put its end: it is ended while its folder comes.
    let (fetched, ()) = tokio::join!(
        fetch_results(place, job, record, results, &mut events, &end, started),
        end_host(place.cloud, record, true, printer)
    );
    fetched.map_err(|e| Error::S3Data {
        uri: record.job_uri.clone(),
        reason: format!("the run ended, but its results could not be brought here: {e}"),
        hint: format!(
            "`labship fetch {} --ec2` tries again; `aws s3 cp --recursive {} {}` by hand",
            record.run_id,
            record.job_uri,
            results.display()
        ),
    })
}

/// The run's folder from S3 into `results`, its report (`run.json` here, and in S3 last).
async fn fetch_results(
    place: &Place<'_>,
    job: Option<JobFile>,
    record: &Record,
    results: &Path,
    events: &mut Events,
    end: &HostEnd,
    started: Instant,
) -> Result<RunReport> {
    let bucket = place.bucket;
    let job_uri = S3Uri::parse(&record.job_uri)?;
    // The rest of the progress.
    if let Some(log) = bucket.get_bytes(&job_uri.join(JOB_LOG)).await? {
        events.take(&String::from_utf8_lossy(&log), place.printer);
    }
    std::fs::create_dir_all(results).map_err(|e| Error::Write {
        path: results.to_path_buf(),
        source: e,
    })?;
    let objects: Vec<_> = bucket
        .list(&job_uri)
        .await?
        .into_iter()
        .filter(|o| !o.rel.starts_with(".labship") && o.rel != RUN_FILE)
        .collect();
    bucket
        .download(&job_uri, &objects, results, &|_| {})
        .await?;
    let job = match job {
        Some(job) => Some(job),
        None => staged_job(bucket, &job_uri).await?,
    };
    let job = job.ok_or_else(|| Error::S3Data {
        uri: format!("{}{STAGED}/job.json", record.job_uri),
        reason: "the job as staged is gone or unreadable".into(),
        hint: "the results are in the run's folder in S3 all the same".into(),
    })?;
    let report = report(record, &job, &events.progress, end, results, started);
    // run.json last: in S3, its presence says the run is whole there.
    let body =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::engine("writing run.json", e))?;
    bucket.put_bytes(&job_uri.join(RUN_FILE), body).await?;
    write_report(&report)?;
    Ok(report)
}

/// The job as it was staged beside the run's results, if it is still there.
async fn staged_job(bucket: &Bucket, job_uri: &S3Uri) -> Result<Option<JobFile>> {
    Ok(bucket
        .get_bytes(&job_uri.join(STAGED).join("job.json"))
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// The run's report from what its host left.
fn report(
    record: &Record,
    job: &JobFile,
    progress: &Progress,
    end: &HostEnd,
    results: &Path,
    started: Instant,
) -> RunReport {
    let host_log = format!("{}{HOST_LOG}", record.job_uri);
    let (mut state, mut failed_cell) = match end.exit_code {
        Some(exit) => progress.outcome(
            exit,
            end.oom_killed,
            end.killed,
            "the instance's memory: choose a larger --instance-type",
        ),
        None => (
            "failed",
            Some(FailedCell {
                cell: progress.cell,
                ename: "JobHostFailed".into(),
                evalue: format!(
                    "the job host failed before the job ran ({}; host exit {}); its log: {host_log}",
                    if end.error.is_empty() {
                        &end.phase
                    } else {
                        &end.error
                    },
                    end.host_exit
                ),
            }),
        ),
    };
    if !end.uploaded {
        state = "failed";
        failed_cell = failed_cell.or_else(|| {
            Some(FailedCell {
                cell: progress.cell,
                ename: "ResultsNotUploaded".into(),
                evalue: format!(
                    "the job host could not put all its results in S3 (what is there was brought here); its log: {host_log}"
                ),
            })
        });
    }
    let mut files = Vec::new();
    list_files(results, results, &mut files);
    files.retain(|f| f != RECORD);
    files.push(RUN_FILE.into());
    files.sort();
    files.dedup();
    RunReport {
        run_id: record.run_id.clone(),
        target: Target::Ec2,
        deployment: record.deployment.clone(),
        notebook: job.notebook(),
        state: state.into(),
        parameters: job.parameters.iter().cloned().collect(),
        cells: progress.cells,
        cells_run: progress.cell,
        failed_cell,
        duration_secs: if progress.seconds > 0.0 {
            progress.seconds
        } else {
            started.elapsed().as_secs_f64()
        },
        timeout_secs: job.timeout,
        time_given_secs: end.job_timeout.filter(|given| *given < job.timeout),
        results: results.to_path_buf(),
        files,
        inputs: job.inputs.clone(),
        output_uri: job.output_uri.clone(),
        uploaded: end.uploaded,
    }
}

/// The report of a run ended by Ctrl-C: how far it got. What its host could still put is in
/// its folder in S3 (`output_uri`); nothing of it is here.
fn interrupted(
    record: &Record,
    job: &JobFile,
    progress: &Progress,
    results: &Path,
    started: Instant,
) -> RunReport {
    RunReport {
        run_id: record.run_id.clone(),
        target: Target::Ec2,
        deployment: record.deployment.clone(),
        notebook: job.notebook(),
        state: "interrupted".into(),
        parameters: job.parameters.iter().cloned().collect(),
        cells: progress.cells,
        cells_run: progress.cell,
        failed_cell: None,
        duration_secs: started.elapsed().as_secs_f64(),
        timeout_secs: job.timeout,
        time_given_secs: None,
        results: results.to_path_buf(),
        files: vec![RUN_FILE.into()],
        inputs: job.inputs.clone(),
        output_uri: job.output_uri.clone(),
        uploaded: false,
    }
}

/// The host ends: terminated at once unless it is going already. It has nothing left to do
/// (its end is in S3, or it is gone, or Ctrl-C), and waiting for its own power-off would only
/// keep it billing while EC2 notices (seconds, on EC2). Its role goes with it: meanwhile when
/// `put_end` (its end is in S3: it needs the role no more), else once it is terminated (a
/// host told to end may still put what it has), or, past [`ROLE_AFTER_END`], by the next
/// run's sweep. What cannot be done is said with the command that does it.
async fn end_host(cloud: &Cloud, record: &Record, put_end: bool, printer: &Printer) {
    let ids = std::slice::from_ref(&record.instance);
    let end = async {
        let going = matches!(
            cloud.instance(&record.instance).await,
            Ok(i) if i.as_ref().is_none_or(|i| matches!(i.state.as_str(), "shutting-down" | "terminated"))
        );
        going || cloud.terminate(ids).await.is_ok()
    };
    let ended = if put_end {
        tokio::join!(end, remove_role(cloud, &record.run_id, printer)).0
    } else {
        let ended = end.await;
        // A host told to end may still put what it has (its exit trap) until it is gone.
        if ended && terminated_within(cloud, &record.instance, ROLE_AFTER_END).await {
            remove_role(cloud, &record.run_id, printer).await;
        } else if ended {
            printer.note(format!(
                "the job role {} stays until its host is gone: the next `labship run --ec2` here or `labship down --ec2 --all` removes it",
                job_role_name(&record.run_id)
            ));
        }
        ended
    };
    if ended {
        let_go(record);
    } else {
        printer.note(format!(
            "the job host {} may still run: `aws ec2 terminate-instances --instance-ids {}` ends it",
            record.instance, record.instance
        ));
    }
}

/// After a failed launch: the run's hosts EC2 has all the same (found by the run's tag),
/// terminated. What cannot be looked up or ended is said: such a host ends itself when its
/// registry login fails without the role, or at its deadline.
async fn end_lost_hosts(cloud: &Cloud, run_id: &str, printer: &Printer) {
    let hosts = match cloud.job_hosts(Some(run_id)).await {
        Ok(hosts) => hosts,
        Err(e) => {
            return printer.note(format!(
                "could not look for a job host of run {run_id} that the failed launch may have made ({e}); such a host ends itself"
            ))
        }
    };
    let ids: Vec<String> = hosts
        .into_iter()
        .filter(|h| h.instance.is_live())
        .map(|h| h.instance.id)
        .collect();
    if ids.is_empty() {
        return;
    }
    printer.note(format!(
        "The launch failed, but the job host {} is there all the same: terminating it",
        ids.join(", ")
    ));
    if let Err(e) = cloud.terminate(&ids).await {
        printer.note(format!(
            "could not terminate {}: {e}; `aws ec2 terminate-instances --instance-ids {}` does (it ends itself anyway)",
            ids.join(", "),
            ids.join(" ")
        ));
    }
}

/// A run that never started: its staged job (the runner, the job, its source, its inputs'
/// list) goes from the results folder, which holds nothing else of it yet.
async fn unstage(bucket: &Bucket, staged: &[S3Uri], printer: &Printer) {
    let removed = futures_util::future::join_all(staged.iter().map(|uri| bucket.delete(uri))).await;
    if let Some(Err(e)) = removed.into_iter().find(Result::is_err) {
        printer.note(format!(
            "could not remove the staged job of the run that did not start: {e}; it is under {}",
            staged.first().map(|u| u.to_string()).unwrap_or_default()
        ));
    }
}

/// Whether `instance` is terminated (or gone) within `wait`.
async fn terminated_within(cloud: &Cloud, instance: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(found) = cloud.instance(instance).await {
            if found.is_none_or(|i| i.state == "terminated") {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_FIRST).await;
    }
}

/// A run's role and profile, once its host is gone or never ran. What cannot be removed is
/// said; the next run in the region, or `down --all`, removes it.
async fn remove_role(cloud: &Cloud, run_id: &str, printer: &Printer) {
    let (_, failures) = cloud.remove_job_role(run_id).await;
    if let Some(failure) = failures.first() {
        printer.note(format!(
            "could not remove the job role {}: {failure}; the next `labship run --ec2` here or `labship down --ec2 --all` removes it",
            job_role_name(run_id)
        ));
    }
}

/// The job roles of `region` whose host is gone (a detached run never fetched, a labship
/// killed at the wrong moment) and that are old enough not to belong to a run being started
/// elsewhere: removed. Best effort: what fails is logged, and tried again next time.
async fn sweep_job_roles(cloud: &Cloud, region: &str, printer: &Printer) {
    let (roles, hosts) = match tokio::try_join!(cloud.job_roles(), cloud.job_hosts(None)) {
        Ok(found) => found,
        Err(e) => {
            tracing::info!("job roles not swept: {e}");
            return;
        }
    };
    let live: Vec<&str> = hosts.iter().map(|h| h.run_id.as_str()).collect();
    let mut removed = Vec::new();
    for role in orphaned(&roles, &live, region, crate::hosts::now_secs()) {
        match cloud.remove_job_role(&role.run_id).await {
            (true, failures) if failures.is_empty() => removed.push(role.name.clone()),
            (_, failures) => {
                for f in failures {
                    tracing::info!("job role {} not removed: {f}", role.name);
                }
            }
        }
    }
    if !removed.is_empty() {
        printer.note(format!(
            "Removed {} job role(s) whose hosts are gone: {}",
            removed.len(),
            removed.join(", ")
        ));
    }
}

/// The job roles of `region` that no live job host (`live`: their run ids) uses and that are
/// old enough (at `now`) not to be a run's between its role and its launch; and, at any age,
/// one without a live host whose trust is not labship's (not made by labship as it is: an
/// identity that can make job roles could have made it for someone else).
fn orphaned<'a>(
    roles: &'a [crate::aws::iam::JobRole],
    live: &[&str],
    region: &str,
    now: i64,
) -> Vec<&'a crate::aws::iam::JobRole> {
    roles
        .iter()
        .filter(|r| {
            r.region == region
                && (now - r.created_secs > ORPHAN_AGE_SECS || !r.trusted_by_ec2_only)
                && !live.contains(&r.run_id.as_str())
        })
        .collect()
}

/// This machine's record of a run, if any.
fn read_record(results: &Path) -> Option<Record> {
    std::fs::read(results.join(RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// `labship fetch RUN` of a run on EC2: its report when fetched before; else its record
/// here, or its host's tags (any machine), and the run followed to its end. `None`: no
/// run on EC2 of that id is known.
pub async fn fetch(
    aws: &Aws,
    runs_dir: &Path,
    run_id: &str,
    printer: &Printer,
) -> Result<Option<RunReport>> {
    let results = runs_dir.join(run_id);
    if let Some(report) = read_report(&results).filter(|r| r.target == Target::Ec2) {
        return Ok(Some(report));
    }
    let cloud = Cloud::new(aws);
    let s3 = S3::new(aws);
    let (record, bucket, job) = match read_record(&results) {
        Some(record) => {
            let bucket = s3.locate(&S3Uri::parse(&record.job_uri)?).await?;
            (record, bucket, None)
        }
        None => {
            let Some(host) = cloud.job_hosts(Some(run_id)).await?.into_iter().next() else {
                return Ok(None);
            };
            let Some(job_uri) = host.output.clone() else {
                return Ok(None);
            };
            // Its deadline from its launch and the job's own (staged beside its results).
            let uri = S3Uri::parse(&job_uri)?;
            let bucket = s3.locate(&uri).await?;
            let job = staged_job(&bucket, &uri).await?;
            let timeout = job
                .as_ref()
                .map_or(super::DEFAULT_TIMEOUT.as_secs(), |j| j.timeout);
            let record = Record {
                run_id: run_id.to_string(),
                deployment: host.instance.deployment.clone(),
                instance: host.instance.id.clone(),
                region: aws.region.clone(),
                job_uri,
                host_deadline: host
                    .instance
                    .launched_secs
                    .unwrap_or_else(crate::hosts::now_secs)
                    + 60 * userdata::job_host_deadline_min(plan::PULL_DEADLINE, timeout) as i64,
            };
            (record, bucket, job)
        }
    };
    printer.note(format!(
        "Following run {run_id} on {} to its end",
        record.instance
    ));
    let place = Place {
        cloud: &cloud,
        bucket: &bucket,
        printer,
    };
    follow(&place, &record, job, &results, false)
        .await
        .map(Some)
}

/// `labship runs --ec2`: the runs fetched into `runs_dir`, those launched from here and not
/// fetched yet, and the job hosts of this project that still exist in the region (from
/// their tags: any machine sees them).
pub async fn list(aws: &Aws, config: &Config, runs_dir: &Path) -> Result<super::RunsReport> {
    let mut report = super::list_folders(config, runs_dir, Target::Ec2);
    let hosts = Cloud::new(aws).job_hosts(None).await?;
    let mut extra = Vec::new();
    for host in hosts
        .into_iter()
        .filter(|h| h.instance.deployment == config.name)
    {
        extra.push(super::RunRow {
            note: Some(format!(
                "on {} ({}): `labship fetch {} --ec2` follows it to its end",
                host.instance.id, host.instance.state, host.run_id
            )),
            run_id: host.run_id,
            notebook: "-".into(),
            state: "running".into(),
            duration_secs: None,
            results: None,
            output_uri: host.output,
            uploaded: false,
        });
    }
    if let Ok(entries) = std::fs::read_dir(runs_dir) {
        for entry in entries.flatten() {
            let Some(record) = read_record(&entry.path()).filter(|r| r.deployment == config.name)
            else {
                continue;
            };
            extra.push(super::RunRow {
                note: Some(format!(
                    "not fetched yet: `labship fetch {} --ec2`",
                    record.run_id
                )),
                run_id: record.run_id,
                notebook: "-".into(),
                state: "ended".into(),
                duration_secs: None,
                results: None,
                output_uri: Some(record.job_uri),
                uploaded: false,
            });
        }
    }
    // A fetched run's report wins, then a live host, then a record.
    for row in extra {
        if !report.runs.iter().any(|r| r.run_id == row.run_id) {
            report.runs.push(row);
        }
    }
    report.runs.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    Ok(report)
}

/// A run's role policy: pull its image (`repository`: the repository's ARN), read its staged
/// job and exactly its inputs (`inputs`: each address, and whether it is one object rather
/// than a folder), list only those folders, and put objects only in its own folder
/// (`job_uri`). Nothing else, and only in `account`'s buckets.
fn job_policy(
    account: &str,
    repository: &str,
    job_uri: &S3Uri,
    inputs: &[(S3Uri, bool)],
) -> Result<String> {
    use crate::aws::grants::{arn_key, folder, policy_document, pull, Reads};
    use serde_json::json;
    let run = folder(job_uri);
    let staged = format!("{run}{STAGED}/");
    let reads = Reads {
        account,
        inputs,
        folders: &[(job_uri.bucket.as_str(), staged)],
        what: "TheJobAndItsInputs",
        list: "TheJobAndItsInputFolders",
    };
    let mut statements = pull(repository, "PullTheJobsImage").to_vec();
    statements.extend([json!({
        "Sid": "PutTheResultsInTheRunsFolder",
        "Effect": "Allow",
        "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
        "Resource": format!("arn:aws:s3:::{}/{}*", job_uri.bucket, arn_key(&run)),
        "Condition": reads.account_only()
    })]);
    statements.extend(reads.statements());
    policy_document(statements, "the job host's", inputs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> S3Uri {
        S3Uri::parse(s).expect("address")
    }

    #[test]
    fn the_interruptions_hint_ends_every_host_of_a_matrix_still_running() {
        let mut running = Running::default();
        let hint = |ids: &str| Some(format!("aws ec2 terminate-instances --instance-ids {ids}"));
        assert_eq!(running.set("i-1", true), hint("i-1"));
        assert_eq!(running.set("i-2", true), hint("i-1 i-2"));
        assert_eq!(running.set("i-3", true), hint("i-1 i-2 i-3"));
        assert_eq!(running.set("i-2", false), hint("i-1 i-3"));
        assert_eq!(running.set("i-1", true), hint("i-3 i-1"), "once each");
        assert_eq!(running.set("i-3", false), hint("i-1"));
        assert_eq!(running.set("i-1", false), None);
        assert_eq!(running.set("i-9", false), None);
    }

    #[test]
    fn a_runs_policy_names_exactly_its_job_inputs_and_folder() {
        let policy = job_policy(
            "123456789012",
            "arn:aws:ecr:eu-west-1:123456789012:repository/labship/demo",
            &uri("s3://labship-out/runs/20261201-101010-abcd/"),
            &[
                (uri("s3://labship-data/week1/iris.csv"), true),
                (uri("s3://labship-data/week1/images/"), false),
                (uri("s3://labship-other/odd*key?$"), true),
            ],
        )
        .expect("policy");
        let doc: serde_json::Value = serde_json::from_str(&policy).expect("JSON");
        let statement = |sid: &str| -> serde_json::Value {
            doc["Statement"]
                .as_array()
                .expect("statements")
                .iter()
                .find(|s| s["Sid"] == sid)
                .cloned()
                .unwrap_or_else(|| panic!("{sid} in {doc}"))
        };
        assert_eq!(
            statement("ReadTheJobAndItsInputs")["Resource"],
            serde_json::json!([
                "arn:aws:s3:::labship-data/week1/images/*",
                "arn:aws:s3:::labship-data/week1/iris.csv",
                "arn:aws:s3:::labship-other/odd${*}key${?}${$}",
                "arn:aws:s3:::labship-out/runs/20261201-101010-abcd/.labship-job/*",
            ])
        );
        let put = statement("PutTheResultsInTheRunsFolder");
        assert_eq!(
            put["Resource"],
            "arn:aws:s3:::labship-out/runs/20261201-101010-abcd/*"
        );
        assert_eq!(
            put["Condition"]["StringEquals"]["s3:ResourceAccount"],
            "123456789012"
        );
        // One list statement per bucket, held to the folders (a file needs no listing).
        let list = statement("ListTheJobAndItsInputFolders1");
        assert_eq!(list["Resource"], "arn:aws:s3:::labship-data");
        assert_eq!(
            list["Condition"]["StringLike"]["s3:prefix"],
            serde_json::json!(["week1/images/", "week1/images/*"])
        );
        let list = statement("ListTheJobAndItsInputFolders2");
        assert_eq!(list["Resource"], "arn:aws:s3:::labship-out");
        assert_eq!(
            list["Condition"]["StringLike"]["s3:prefix"],
            serde_json::json!([
                "runs/20261201-101010-abcd/.labship-job/",
                "runs/20261201-101010-abcd/.labship-job/*"
            ])
        );
        assert_eq!(doc["Statement"].as_array().map(Vec::len), Some(6), "{doc}");
        assert_eq!(
            statement("PullTheJobsImage")["Resource"],
            "arn:aws:ecr:eu-west-1:123456789012:repository/labship/demo"
        );
        // Nothing of IAM, SSM, EC2, and no deletion.
        for service in ["iam:", "ssm:", "ec2:", "sts:", "s3:Delete", "s3:PutBucket"] {
            assert!(!policy.contains(service), "{service} in {policy}");
        }
        // Within the boundary: every action of the run's policy is one the boundary allows
        // (else the host would be refused it whatever the policy says).
        let boundary: serde_json::Value =
            serde_json::from_str(crate::aws::iam::JOB_BOUNDARY_POLICY).expect("boundary JSON");
        let actions = |doc: &serde_json::Value| -> Vec<String> {
            let mut all = Vec::new();
            for s in doc["Statement"].as_array().expect("statements") {
                match &s["Action"] {
                    serde_json::Value::String(a) => all.push(a.clone()),
                    list => all.extend(
                        list.as_array()
                            .expect("actions")
                            .iter()
                            .filter_map(|a| a.as_str().map(String::from)),
                    ),
                }
            }
            all
        };
        let allowed = actions(&boundary);
        for action in actions(&doc) {
            assert!(
                allowed.contains(&action),
                "{action} is outside the boundary"
            );
        }
    }

    #[test]
    fn only_old_roles_of_this_region_without_a_live_host_are_swept() {
        let role = |run: &str, region: &str, created: i64| crate::aws::iam::JobRole {
            name: job_role_name(run),
            run_id: run.into(),
            region: region.into(),
            created_secs: created,
            trusted_by_ec2_only: !run.starts_with("trusting"),
        };
        let now = 1_000_000;
        let old = now - ORPHAN_AGE_SECS - 1;
        let roles = [
            role("gone", "eu-west-1", old),
            role("running", "eu-west-1", old),
            role("starting", "eu-west-1", now - 60),
            role("elsewhere", "us-east-1", old),
            role("trusting-another", "eu-west-1", now - 60),
            role("trusting-another-running", "eu-west-1", now - 60),
        ];
        let live = ["running", "trusting-another-running"];
        let swept: Vec<&str> = orphaned(&roles, &live, "eu-west-1", now)
            .into_iter()
            .map(|r| r.run_id.as_str())
            .collect();
        assert_eq!(swept, ["gone", "trusting-another"]);
    }

    #[test]
    fn a_whole_bucket_input_is_listed_whole_and_too_many_inputs_are_refused() {
        let policy = job_policy(
            "123456789012",
            "arn:aws:ecr:eu-west-1:123456789012:repository/labship/demo",
            &uri("s3://labship-out/r1/"),
            &[(uri("s3://labship-out"), false)],
        )
        .expect("policy");
        let doc: serde_json::Value = serde_json::from_str(&policy).expect("JSON");
        let list = &doc["Statement"][4];
        assert_eq!(list["Resource"], "arn:aws:s3:::labship-out");
        assert!(list["Condition"].get("StringLike").is_none(), "{list}");
        assert!(
            policy.contains("\"arn:aws:s3:::labship-out/*\""),
            "{policy}"
        );

        let many: Vec<(S3Uri, bool)> = (0..400)
            .map(|i| {
                (
                    uri(&format!("s3://labship-data/files/part-{i:05}.csv")),
                    true,
                )
            })
            .collect();
        let err = job_policy("123456789012", "arn", &uri("s3://labship-out/r1/"), &many)
            .expect_err("over IAM's bound");
        assert!(err.to_string().contains("10240"), "{err}");
    }

    #[test]
    fn events_seen_once_are_not_taken_again_whatever_the_window() {
        let printer = Printer::new(crate::output::OutputFormat::Json, true);
        let mut events = Events::default();
        let start = r#"LABSHIP-JOB {"event": "start", "cells": 2, "t": 0.1}"#;
        let cell = r#"LABSHIP-JOB {"event": "cell", "cell": 1, "of": 2, "t": 0.2}"#;
        let two = r#"LABSHIP-JOB {"event": "cell", "cell": 2, "of": 2, "t": 0.2}"#;
        // The console's lines have a prefix; the window moves on and repeats.
        let window = format!("[ 1.0] cloud-init[1]: {start}\n[ 1.1] cloud-init[1]: {cell}\n");
        events.take(&window, &printer);
        events.take(&window, &printer);
        assert_eq!((events.progress.cells, events.progress.cell), (2, 1));
        // An event of the same time as the last is still new.
        events.take(&format!("{cell}\n{two}\n"), &printer);
        assert_eq!(events.progress.cell, 2);
        assert_eq!(events.seen.len(), 3);
    }
}
