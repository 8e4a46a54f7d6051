//! `labship run NOTEBOOK`: a notebook as a job.

use labship::aws::s3::{S3Uri, S3};
use labship::config::{Config, Target};
use labship::data;
use labship::error::{Error, Result};
use labship::hosts::local::LocalHost;
use labship::interrupt;
use labship::job::{self, JobSpec};
use labship::output::Printer;

use crate::cli::{FetchArgs, RunArgs, RunsArgs};

pub async fn run(config: Config, args: &RunArgs, printer: &Printer) -> Result<()> {
    // Everything the user gave is checked before anything is built or started (`-o csv`
    // already, by `commands::run`).
    let parameters = args
        .parameters
        .iter()
        .map(|p| job::parse_parameter(p))
        .collect::<Result<Vec<_>>>()?;
    let grid = if args.matrix.is_empty() {
        None
    } else {
        let grid = job::parse_matrix(&args.matrix)?;
        if let Some((name, _)) = grid[0]
            .iter()
            .find(|(name, _)| parameters.iter().any(|(p, _)| p == name))
        {
            return Err(Error::InvalidSetting {
                what: "--matrix",
                value: name.clone(),
                reason: "it is also given with -p".into(),
                hint: "give each parameter once: with -p for every run, or in --matrix".into(),
            });
        }
        Some(grid)
    };
    if args.parallel.is_some() && grid.is_none() {
        return Err(Error::InvalidSetting {
            what: "option",
            value: "--parallel".into(),
            reason: "it says how many runs of a --matrix run at once".into(),
            hint: "add --matrix NAME=V1,V2,..., or drop it".into(),
        });
    }
    let timeout = match &args.timeout {
        None => job::DEFAULT_TIMEOUT,
        Some(t) => labship::config::parse_lifetime("--timeout", t)?.ok_or_else(|| {
            Error::InvalidSetting {
                what: "--timeout",
                value: t.clone(),
                reason: "a job always has a deadline".into(),
                hint: "give one, e.g. --timeout 12h (at most 30d)".into(),
            }
        })?,
    };
    if let Some(cpus) = args.cpus {
        labship::hosts::Limits::check_cpus("--cpus", cpus)?;
    }
    if config.target == Target::Ec2 {
        ec2_refusals(args)?;
    }
    let source = job::read_source(&args.notebook)?;
    // The data in and the place for the results out are checked before the build.
    let output_uri = args.output_uri.as_deref().map(S3Uri::parse).transpose()?;
    let (checked, output) = if config.data.inputs.is_empty() && output_uri.is_none() {
        (Vec::new(), None)
    } else {
        let s3 = S3::new(&labship::aws::load(&config).await?);
        let output = match output_uri {
            Some(uri) => {
                // Its bucket exists and may be listed (deliver finds it again at the end).
                s3.locate(&uri).await?;
                Some(job::Output {
                    uri,
                    s3: s3.clone(),
                })
            }
            None => None,
        };
        (data::check(&s3, &config.data.inputs).await?, output)
    };
    let mut spec = JobSpec {
        source,
        parameters,
        timeout,
        runs_dir: runs_dir(&config, &args.runs_dir),
        limits: labship::hosts::Limits {
            memory_mib: args.memory,
            cpus: args.cpus,
        },
        label: None,
        batch: job::new_run_id(),
        inputs: Vec::new(),
        output,
    };
    // Interrupted: the run removes its containers itself; should that fail, this removes
    // this invocation's (and no detached run's).
    if config.target == Target::Ec2 {
        return on_ec2(&config, spec, &checked, grid, args, printer).await;
    }
    interrupt::install(interrupt::Then::Remove(format!(
        "docker rm -f $(docker ps -aq --filter label={}={})",
        labship::tags::labels::JOB_BATCH,
        spec.batch
    )))?;
    let host = LocalHost::connect().await?;
    if !checked.is_empty() {
        // Snapshots that no job container uses any more (a killed labship's).
        let live = host
            .engine()
            .containers_labelled(labship::tags::labels::JOB_BATCH, None)
            .await?
            .into_iter()
            .filter_map(|c| c.labels.get(labship::tags::labels::JOB_BATCH).cloned())
            .collect();
        data::prune(&live);
        data::prune_unused_copies(host.engine(), printer).await;
    }
    // The inputs are copied (and their snapshot for this invocation taken) while the image
    // builds.
    let prepared = tokio::try_join!(
        host.image_for_job(&config, printer),
        data::sync(&checked, Some(&spec.batch), printer)
    );
    let (image, inputs) = match prepared {
        Ok(p) => p,
        Err(e) => {
            data::release(&spec.batch);
            return Err(e);
        }
    };
    spec.inputs = inputs;
    if args.detach {
        // The snapshot stays with the running job; `fetch` removes it with the container.
        let started = job::start_detached(host.engine(), &config, &image, &spec, printer).await;
        if started.is_err() {
            data::release(&spec.batch);
        }
        return super::emit(printer, &started?);
    }
    let ran = attached(&host, &config, &image, &spec, grid, args, printer).await;
    // The jobs' containers are gone: so goes the snapshot of their inputs.
    data::release(&spec.batch);
    ran
}

/// What a run on EC2 does not do, refused before anything is built.
fn ec2_refusals(args: &RunArgs) -> Result<()> {
    let refuse = |option: &str, reason: &str, hint: &str| {
        Err(Error::InvalidSetting {
            what: "option",
            value: option.into(),
            reason: reason.into(),
            hint: hint.into(),
        })
    };
    if args.cpus.is_some() || args.memory.is_some() {
        return refuse(
            if args.cpus.is_some() {
                "--cpus"
            } else {
                "--memory"
            },
            "a job on EC2 has its instance to itself",
            "choose the machine with --instance-type (e.g. c7i.4xlarge), and drop --cpus/--memory",
        );
    }
    if args.output_uri.is_none() {
        return refuse(
            "--ec2",
            "a job on EC2 sends its results through S3 (the host ends itself, whether this machine is awake or not)",
            "add --output-uri s3://BUCKET/PREFIX: a bucket the instance role may write (labship-* by default, infra/README.md)",
        );
    }
    Ok(())
}

/// `run --ec2`: a host of its own that ends itself (one per value of a `--matrix`); followed
/// to its end unless `--detach`.
async fn on_ec2(
    config: &Config,
    spec: JobSpec,
    checked: &[data::Checked],
    grid: Option<Vec<Vec<(String, serde_json::Value)>>>,
    args: &RunArgs,
    printer: &Printer,
) -> Result<()> {
    // Interrupted: what was made is listed, with the command that removes it (the job's
    // launch names it once there is something; an attached run ends its host itself).
    interrupt::install(interrupt::Then::Remove(String::new()))?;
    let Some(output) = spec.output.clone() else {
        // Refused before anything was built.
        return ec2_refusals(args);
    };
    let aws = labship::aws::load(config).await?;
    let host = LocalHost::connect().await?;
    let engine = host.engine();
    if let Some(grid) = grid {
        let at_once = usize::from(args.parallel.unwrap_or(2));
        let report = job::ec2::run_matrix(
            engine, &aws, config, &spec, &output, checked, grid, at_once, printer,
        )
        .await?;
        return matrix_ended(printer, &report);
    }
    match job::ec2::run(
        engine,
        &aws,
        config,
        &spec,
        &output,
        checked,
        args.detach,
        printer,
    )
    .await?
    {
        job::ec2::Outcome::Detached(started) => super::emit(printer, &started),
        job::ec2::Outcome::Ended(report) => finished(printer, &report),
    }
}

/// The report of a matrix that ended, and its outcome as the exit status.
fn matrix_ended(printer: &Printer, report: &job::MatrixReport) -> Result<()> {
    super::emit(printer, report)?;
    if report.failed > 0 {
        return Err(Error::RunsFailed {
            failed: report.failed,
            total: report.runs.len(),
        });
    }
    Ok(())
}

/// An attached run, or a matrix of them, to the end, and its outcome as the exit status.
async fn attached(
    host: &LocalHost,
    config: &Config,
    image: &str,
    spec: &JobSpec,
    grid: Option<Vec<Vec<(String, serde_json::Value)>>>,
    args: &RunArgs,
    printer: &Printer,
) -> Result<()> {
    if let Some(grid) = grid {
        let at_once = usize::from(args.parallel.unwrap_or(2));
        let report =
            job::run_matrix_local(host.engine(), config, image, spec, grid, at_once, printer)
                .await?;
        return matrix_ended(printer, &report);
    }
    let report = job::run_local(host.engine(), config, image, spec, printer).await?;
    finished(printer, &report)
}

/// The report of a run that ended, and its outcome as the exit status.
fn finished(printer: &Printer, report: &job::RunReport) -> Result<()> {
    super::emit(printer, report)?;
    let results = report.results.display().to_string();
    match (&report.state[..], &report.failed_cell) {
        ("succeeded", _) => Ok(()),
        ("timed_out", _) => Err(Error::JobTimedOut {
            run_id: report.run_id.clone(),
            seconds: report.timeout_secs,
            cell: report.cells_run,
            of: report.cells,
            results,
        }),
        // A run ended by Ctrl-C before (`fetch` of it).
        ("interrupted", _) => Err(Error::JobInterrupted {
            run_id: report.run_id.clone(),
            cell: report.cells_run,
            of: report.cells,
            results,
        }),
        (_, failed) => Err(Error::JobFailed {
            run_id: report.run_id.clone(),
            cell: failed.as_ref().map_or(report.cells_run, |f| f.cell),
            of: report.cells,
            ename: failed
                .as_ref()
                .map_or_else(String::new, |f| f.ename.clone()),
            evalue: failed
                .as_ref()
                .map_or_else(String::new, |f| f.evalue.clone()),
            results,
        }),
    }
}

/// `labship runs`.
pub async fn runs(config: Config, args: &RunsArgs, printer: &Printer) -> Result<()> {
    let runs_dir = runs_dir(&config, &args.runs_dir);
    if config.target == Target::Ec2 {
        let aws = labship::aws::load(&config).await?;
        return super::emit(printer, &job::ec2::list(&aws, &config, &runs_dir).await?);
    }
    let host = LocalHost::connect().await?;
    let report = job::list_local(host.engine(), &config, &runs_dir).await?;
    super::emit(printer, &report)
}

/// `labship fetch RUN`.
pub async fn fetch(config: Config, args: &FetchArgs, printer: &Printer) -> Result<()> {
    let runs_dir = runs_dir(&config, &args.runs_dir);
    interrupt::install(interrupt::Then::Retry(format!(
        "labship fetch {}",
        args.run
    )))?;
    if config.target == Target::Ec2 {
        let aws = labship::aws::load(&config).await?;
        return match job::ec2::fetch(&aws, &runs_dir, &args.run, printer).await? {
            Some(report) => finished(printer, &report),
            None => Err(Error::InvalidSetting {
                what: "run",
                value: args.run.clone(),
                reason: format!(
                    "no job host of that run in {}, and no record of it in {}",
                    aws.region,
                    runs_dir.join(&args.run).display()
                ),
                hint: "check the run id and the region (`labship runs --ec2` lists runs)".into(),
            }),
        };
    }
    let host = LocalHost::connect().await?;
    let mut report =
        job::fetch_local(host.engine(), &config, &runs_dir, &args.run, printer).await?;
    // A run with --output-uri goes to S3 once saved (again, if its upload failed before).
    if report.output_uri.is_some() && !report.uploaded {
        let s3 = S3::new(&labship::aws::load(&config).await?);
        job::deliver(&s3, &mut report, printer).await?;
    }
    finished(printer, &report)
}

/// `--runs-dir`, else `runs/` beside labship.toml.
fn runs_dir(config: &Config, given: &Option<std::path::PathBuf>) -> std::path::PathBuf {
    given.clone().unwrap_or_else(|| config.root.join("runs"))
}
