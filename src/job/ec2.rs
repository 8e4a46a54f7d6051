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
//! folder into `runs/<run-id>/`, puts `run.json` in S3 (last), and removes the run's security
//! group once the host is gone. A detached run is followed the same way by `fetch`, from
//! this machine's record (`runs/<run-id>/ec2.json`) or, on any machine, from the host's tags.
//! Results travel through S3: an EC2 run needs `--output-uri`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    claim_run_folder, list as list_files, read_report, write_report, DetachedReport, FailedCell,
    JobFile, JobSpec, Progress, RunReport, Source, EXECUTED_DIR, JOB_DIR, RUNNER, RUN_FILE, TAG,
};
use crate::aws::ec2::LaunchSpec;
use crate::aws::s3::{Bucket, S3Uri, S3};
use crate::aws::{Aws, Cloud};
use crate::config::{Config, Target};
use crate::data::Checked;
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::hosts::ec2::{plan, userdata};
use crate::interrupt;
use crate::output::Printer;
use crate::push::Ecr;
use crate::tags;

/// Beside the results in the run's folder in S3, and not results: the job as staged, how
/// the host ended, and the runner's progress log.
const STAGED: &str = ".labship-job";
const HOST_END: &str = ".labship-host.json";
const JOB_LOG: &str = ".labship-job.log";
/// This machine's record of a run it launched on EC2 (in its run folder).
const RECORD: &str = "ec2.json";
/// How often a run's end is looked for.
const POLL: Duration = Duration::from_secs(5);

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
    exit_code: Option<i64>,
    oom_killed: bool,
    phase: String,
    error: String,
}

/// A run on EC2: its report when followed to its end, or what was started (`--detach`).
pub enum Outcome {
    Ended(RunReport),
    Detached(DetachedReport),
}

/// `labship run --ec2`: launches the job host and, unless `detach`, follows it to its end.
/// `checked`: the inputs, checked (the host copies them itself).
pub async fn run(
    engine: &Engine,
    aws: &Aws,
    config: &Config,
    spec: &JobSpec,
    checked: &[Checked],
    detach: bool,
    printer: &Printer,
) -> Result<Outcome> {
    let output = spec.output.as_ref().ok_or_else(|| Error::InvalidSetting {
        what: "--output-uri",
        value: "(none)".into(),
        reason: "a job on EC2 sends its results through S3".into(),
        hint: "add --output-uri s3://BUCKET/PREFIX (a bucket the instance role may write)".into(),
    })?;
    let cloud = Cloud::new(aws);
    let ecr = Ecr::new(aws, config.push.registry_endpoint.clone());
    let host_inputs = checked
        .iter()
        .map(Checked::on_host)
        .collect::<Result<Vec<_>>>()?;

    // Everything that must hold before anything is created.
    let (itype, ami, vpc, _, bucket) = interrupt::cancellable(
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
    interrupt::checkpoint("creating the instance role")?;
    if cloud.ensure_instance_profile().await? {
        printer.note(format!(
            "Created IAM role and instance profile {}",
            crate::aws::iam::INSTANCE_PROFILE
        ));
    }

    // The image: built when needed, then (below) uploaded while the host boots.
    let prepared = crate::push::prepare(engine, &ecr, config, printer).await?;
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

    interrupt::checkpoint("starting the job")?;
    let (run_id, results) = claim_run_folder(&spec.runs_dir)?;
    let job_uri = format!("{}/", output.uri.join(&run_id));
    let job = job_file(spec, &cwd, &host_inputs, &job_uri);
    let record = Record {
        run_id: run_id.clone(),
        deployment: config.name.clone(),
        instance: String::new(),
        region: aws.region.clone(),
        job_uri: job_uri.clone(),
        host_deadline: crate::hosts::now_secs()
            + 60 * userdata::job_host_deadline_min(plan::PULL_DEADLINE, job.timeout) as i64,
    };
    let launched = launch(
        &cloud,
        &bucket,
        config,
        spec,
        (&job, &host_inputs),
        (&image, &itype, &ami, &vpc.vpc, image_size),
        record,
        (engine, &ecr, prepared),
        printer,
    )
    .await;
    let record = match launched {
        Ok(r) => r,
        Err(e) => {
            // Nothing runs: no folder for it (it is empty).
            let _ = std::fs::remove_dir_all(&results);
            return Err(e);
        }
    };
    if detach {
        interrupt::gone(&made(&record));
        return Ok(Outcome::Detached(DetachedReport {
            run_id,
            target: Target::Ec2,
            deployment: config.name.clone(),
            notebook: job.notebook(),
            state: "running".into(),
            container: record.instance.clone(),
            results,
            timeout_secs: job.timeout,
        }));
    }
    follow(&cloud, &bucket, &record, &results, true, printer)
        .await
        .map(Outcome::Ended)
}

/// The job as its host's runner reads it: the same `job.json` a local run has, its inputs
/// at `inputs/<name>` of the image's working folder.
fn job_file(
    spec: &JobSpec,
    cwd: &str,
    host_inputs: &[(String, crate::data::Copied)],
    job_uri: &str,
) -> JobFile {
    let Source { name, .. } = &spec.source;
    let executed_name = match name.strip_suffix(".py") {
        Some(stem) => format!("{stem}.ipynb"),
        None => name.clone(),
    };
    JobFile {
        source: format!("{JOB_DIR}/src/{name}"),
        executed: format!("{EXECUTED_DIR}/{executed_name}"),
        cwd: cwd.to_string(),
        parameters: spec.parameters.clone(),
        timeout: spec.timeout.as_secs(),
        inputs: host_inputs.iter().map(|(_, c)| c.clone()).collect(),
        output_uri: Some(job_uri.to_string()),
    }
}

fn made(record: &Record) -> String {
    format!(
        "job host {} (run {}; it ends itself; `aws ec2 terminate-instances --instance-ids {}` ends it now)",
        record.instance, record.run_id, record.instance
    )
}

/// Stages the job in S3, makes the run's security group, launches the host (while the
/// image uploads) and records the run in its folder. Whatever fails undoes what was made.
#[allow(clippy::too_many_arguments)]
async fn launch(
    cloud: &Cloud,
    bucket: &Bucket,
    config: &Config,
    spec: &JobSpec,
    (job, host_inputs): (&JobFile, &[(String, crate::data::Copied)]),
    (image, itype, ami, vpc, image_size): (
        &str,
        &crate::aws::ec2::InstanceTypeInfo,
        &crate::aws::ec2::HostImage,
        &str,
        Option<u64>,
    ),
    mut record: Record,
    (engine, ecr, prepared): (&Engine, &Ecr, crate::push::Prepared),
    printer: &Printer,
) -> Result<Record> {
    let run_id = record.run_id.clone();
    let job_uri = S3Uri::parse(&record.job_uri)?;
    let staged = job_uri.join(STAGED);
    let job_json = serde_json::to_vec(job).map_err(|e| Error::engine("writing the job", e))?;
    let inputs_tsv: String = host_inputs.iter().map(|(line, _)| line.as_str()).collect();
    for (rel, bytes) in [
        ("runner.py", RUNNER.as_bytes().to_vec()),
        ("job.json", job_json),
        (
            &format!("src/{}", spec.source.name)[..],
            spec.source.bytes.clone(),
        ),
        ("inputs.tsv", inputs_tsv.into_bytes()),
    ] {
        bucket.put_bytes(&staged.join(rel), bytes).await?;
    }

    let job_tags = tags::for_job(&run_id, &config.name, &record.job_uri);
    let host_name = format!("labship-run-{}-{run_id}", config.name);
    interrupt::checkpoint("creating the job's security group")?;
    let group = cloud
        .ensure_job_security_group(&host_name, vpc, &job_tags)
        .await?;
    let group_made = format!("security group {group} of run {run_id}");
    interrupt::made(group_made.clone());

    let user_data = userdata::render_job(&userdata::JobHostInputs {
        name: &format!("run-{run_id}"),
        region: &record.region,
        registry: image.split('/').next().unwrap_or_default(),
        image,
        host_kind: plan::ami_kind(&config.ec2.ami),
        pull_deadline_secs: plan::PULL_DEADLINE,
        job_uri: &record.job_uri,
        job_region: &bucket.region,
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
    let mut instance_tags = owned(&job_tags);
    instance_tags.push(("Name".into(), host_name.clone()));
    let launch_spec = LaunchSpec {
        deployment: format!("{}-{run_id}", config.name),
        ami: ami.id.clone(),
        instance_type: itype.name.clone(),
        root_device: ami.root_device.clone(),
        root_gib: crate::hosts::ec2::root_volume_gib(ami.min_root_gib, image_size),
        metadata_hop_limit: plan::METADATA.hop_limit,
        subnet: config.ec2.subnet.clone(),
        availability_zone: None,
        spot: false,
        ssh_key: None,
        user_data: userdata::gzip(&user_data),
        instance_tags,
        volume_tags: owned(&job_tags),
        terminate_on_shutdown: true,
    };

    // The upload and the launch together: the host retries its pull until the image is
    // there.
    let upload = crate::push::finish(engine, ecr, prepared, printer);
    let start = async {
        interrupt::checkpoint("launching the job host")?;
        cloud
            .launch(&launch_spec, &group, Duration::from_secs(120))
            .await
    };
    let (pushed, started) = tokio::join!(upload, start);
    let undo = |instance: Option<String>| async move {
        if let Some(id) = &instance {
            if cloud.terminate(std::slice::from_ref(id)).await.is_err() {
                printer.note(format!(
                    "could not terminate the job host {id}: `aws ec2 terminate-instances --instance-ids {id}` does"
                ));
                return;
            }
            let _ = cloud
                .wait_terminated(std::slice::from_ref(id), Duration::from_secs(300))
                .await;
        }
        if cloud
            .delete_security_group(&group, Duration::from_secs(180))
            .await
            .is_ok()
        {
            interrupt::gone(&group_made);
        }
    };
    let instance = match (pushed, started) {
        (Ok(_), Ok(instance)) => instance,
        (Err(e), Ok(instance)) => {
            printer.note(format!(
                "The push did not finish: terminating the job host {} again",
                instance.id
            ));
            undo(Some(instance.id)).await;
            return Err(e);
        }
        (_, Err(e)) => {
            undo(None).await;
            return Err(e);
        }
    };
    record.instance = instance.id.clone();
    interrupt::made(made(&record));
    let results = spec.runs_dir.join(&run_id);
    let body =
        serde_json::to_vec_pretty(&record).map_err(|e| Error::engine("writing ec2.json", e))?;
    let path = results.join(RECORD);
    std::fs::write(&path, body).map_err(|e| Error::Write { path, source: e })?;
    printer.note(format!(
        "Running {} as job {run_id} on {} ({}); it ends itself within {}",
        spec.source.name,
        instance.id,
        itype.name,
        crate::hosts::age(record.host_deadline - crate::hosts::now_secs())
    ));
    Ok(record)
}

/// The runner's events in `text` newer than the last one `progress` saw (the console is a
/// moving window, and the log repeats what the console showed).
fn take_events(progress: &mut Progress, text: &str, printer: &Printer) {
    for line in text.lines() {
        let Some(at) = line.find(TAG) else { continue };
        let event = &line[at..];
        let t = event[TAG.len()..]
            .trim()
            .parse::<serde_json::Value>()
            .ok()
            .and_then(|v| v["t"].as_f64());
        if t.is_some_and(|t| t <= progress.seconds) && progress.cells > 0 {
            continue;
        }
        progress.line(event, printer);
    }
}

/// Follows a run on EC2 to its end: progress from the host's console, the end from S3;
/// then its folder into `results`, `run.json` in S3 (last), and the host's security group
/// removed once the host is gone. Ctrl-C ends the host when `end_on_interrupt` (an attached
/// run ends with its labship, as a local one does); a `fetch` leaves it going.
async fn follow(
    cloud: &Cloud,
    bucket: &Bucket,
    record: &Record,
    results: &Path,
    end_on_interrupt: bool,
    printer: &Printer,
) -> Result<RunReport> {
    let job_uri = S3Uri::parse(&record.job_uri)?;
    let mut progress = Progress::default();
    let started = Instant::now();
    let waited = interrupt::cancellable("the job", async {
        let mut host_gone_at: Option<Instant> = None;
        loop {
            if let Some(bytes) = bucket.get_bytes(&job_uri.join(HOST_END)).await? {
                return serde_json::from_slice::<HostEnd>(&bytes).map_err(|e| {
                    Error::engine(format!("reading {}{HOST_END}", record.job_uri), e)
                });
            }
            if let Ok(Some(console)) = cloud.console(&record.instance, true).await {
                take_events(&mut progress, &console, printer);
            }
            let live = cloud
                .instance(&record.instance)
                .await?
                .is_some_and(|i| i.is_live() && i.state != "shutting-down");
            // The host puts its end before it powers off: gone without it (capacity, a
            // hand's termination, a host that broke), give S3 a little while, then say so.
            if !live {
                let since = *host_gone_at.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(Error::BootFailed {
                        deployment: record.deployment.clone(),
                        instance: record.instance.clone(),
                        phase: "job".into(),
                        cause: format!(
                            "the job host ended without putting its results at {}",
                            record.job_uri
                        ),
                        hint: format!(
                            "its console (`aws ec2 get-console-output --instance-id {}`) shows the last step; run the job again",
                            record.instance
                        ),
                    });
                }
            }
            if crate::hosts::now_secs() > record.host_deadline + 600 {
                let _ = cloud.terminate(std::slice::from_ref(&record.instance)).await;
                return Err(Error::BootFailed {
                    deployment: record.deployment.clone(),
                    instance: record.instance.clone(),
                    phase: "job".into(),
                    cause: "the job host outlived its deadline; labship terminated it".into(),
                    hint: "see its console in the EC2 console; run the job again".into(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    let end = match waited {
        Ok(end) => end,
        Err(e) => {
            if matches!(e, Error::Interrupted { .. }) {
                if !end_on_interrupt {
                    interrupt::gone(&made(record));
                    printer.note(format!(
                        "Run {} goes on on {}; `labship fetch {} --ec2` follows it again",
                        record.run_id, record.instance, record.run_id
                    ));
                    return Err(e);
                }
                printer.note(format!(
                    "Interrupted: terminating the job host {}",
                    record.instance
                ));
            }
            // Ended with its labship, or ended by itself: either way nothing stays.
            clean_up(cloud, record, printer).await;
            return Err(e);
        }
    };
    // The rest of the progress, and the folder.
    if let Some(log) = bucket.get_bytes(&job_uri.join(JOB_LOG)).await? {
        take_events(&mut progress, &String::from_utf8_lossy(&log), printer);
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
    let job: JobFile = match bucket
        .get_bytes(&job_uri.join(STAGED).join("job.json"))
        .await?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::engine(format!("reading the job of {}", record.run_id), e))?,
        None => {
            return Err(Error::engine(
                format!("reading the job of {}", record.run_id),
                format!("{}{STAGED}/job.json is gone", record.job_uri),
            ))
        }
    };
    let report = report(record, &job, &progress, &end, results, started);
    // run.json last: in S3, its presence says the run is whole there.
    let body =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::engine("writing run.json", e))?;
    bucket.put_bytes(&job_uri.join(RUN_FILE), body).await?;
    write_report(&report)?;
    clean_up(cloud, record, printer).await;
    Ok(report)
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
    let exit = end.exit_code;
    let state = if progress.done && exit == Some(0) {
        "succeeded"
    } else if progress.timed_out || exit == Some(124) {
        "timed_out"
    } else {
        "failed"
    };
    let failed_cell = match (&progress.failed, state) {
        (Some(f), _) if end.oom_killed => Some(FailedCell {
            evalue: format!(
                "{} (it ran out of memory: choose a larger --instance-type)",
                f.evalue
            ),
            ..f.clone()
        }),
        (Some(f), _) => Some(f.clone()),
        (None, "failed") => Some(FailedCell {
            cell: progress.cell,
            ename: if exit.is_none() {
                "JobHostFailed"
            } else {
                "JobEnded"
            }
            .into(),
            evalue: match exit {
                None => format!(
                    "the job host failed before the job ran ({}; host exit {})",
                    if end.error.is_empty() {
                        &end.phase
                    } else {
                        &end.error
                    },
                    end.host_exit
                ),
                Some(_) if end.oom_killed => {
                    "the job ran out of memory and was ended: choose a larger --instance-type"
                        .into()
                }
                Some(code) => {
                    format!("the job's container ended with exit code {code} before every cell ran")
                }
            },
        }),
        _ => None,
    };
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
        results: results.to_path_buf(),
        files,
        inputs: job.inputs.clone(),
        output_uri: job.output_uri.clone(),
        uploaded: true,
    }
}

/// The host terminated (it normally is by now) and the run's security group removed; what
/// cannot be is said with the command that does it.
async fn clean_up(cloud: &Cloud, record: &Record, printer: &Printer) {
    let id = std::slice::from_ref(&record.instance);
    let gone = match cloud.wait_terminated(id, Duration::from_secs(30)).await {
        Ok(left) if left.is_empty() => true,
        _ => {
            let _ = cloud.terminate(id).await;
            matches!(cloud.wait_terminated(id, Duration::from_secs(300)).await, Ok(left) if left.is_empty())
        }
    };
    if gone {
        interrupt::gone(&made(record));
    } else {
        printer.note(format!(
            "the job host {} is not terminated yet: `aws ec2 terminate-instances --instance-ids {}` ends it",
            record.instance, record.instance
        ));
    }
    match cloud.job_security_groups(&record.run_id).await {
        Ok(groups) => {
            for g in groups {
                match cloud
                    .delete_security_group(&g, Duration::from_secs(180))
                    .await
                {
                    Ok(_) => interrupt::gone(&format!(
                        "security group {g} of run {}",
                        record.run_id
                    )),
                    Err(e) => printer.note(format!(
                        "could not delete the run's security group {g}: {e}; `aws ec2 delete-security-group --group-id {g}` does"
                    )),
                }
            }
        }
        Err(e) => printer.note(format!("could not list the run's security groups: {e}")),
    }
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
    let record: Option<Record> = std::fs::read(results.join(RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let record = match record {
        Some(r) => r,
        None => {
            let Some(host) = cloud.job_hosts(Some(run_id)).await?.into_iter().next() else {
                return Ok(None);
            };
            let Some(job_uri) = host.output.clone() else {
                return Ok(None);
            };
            // Its deadline from its launch and the job's own (staged beside its results).
            let bucket = S3::new(aws).locate(&S3Uri::parse(&job_uri)?).await?;
            let timeout = bucket
                .get_bytes(&S3Uri::parse(&job_uri)?.join(STAGED).join("job.json"))
                .await?
                .and_then(|b| serde_json::from_slice::<JobFile>(&b).ok())
                .map_or(super::DEFAULT_TIMEOUT.as_secs(), |j| j.timeout);
            std::fs::create_dir_all(&results).map_err(|e| Error::Write {
                path: results.clone(),
                source: e,
            })?;
            Record {
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
            }
        }
    };
    let bucket = S3::new(aws).locate(&S3Uri::parse(&record.job_uri)?).await?;
    printer.note(format!(
        "Following run {run_id} on {} to its end",
        record.instance
    ));
    follow(&cloud, &bucket, &record, &results, false, printer)
        .await
        .map(Some)
}

/// `labship runs --ec2`: the runs fetched into `runs_dir`, and the job hosts of this project
/// that still exist in the region (from their tags: any machine sees them).
pub async fn list(aws: &Aws, config: &Config, runs_dir: &Path) -> Result<super::RunsReport> {
    let mut report = super::list_folders(config, runs_dir, Target::Ec2);
    for host in Cloud::new(aws).job_hosts(None).await? {
        if host.instance.deployment != config.name
            || report.runs.iter().any(|r| r.run_id == host.run_id)
        {
            continue;
        }
        report.runs.push(super::RunRow {
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
    report.runs.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    Ok(report)
}
