//! `labship run`: a notebook (or a Python script) as a job. The image is made as `up` makes
//! it; the job's container executes the notebook top to bottom with nbclient (the runner,
//! `runner.py`, put into the container with the notebook), parameters injected the papermill
//! way; progress (cell K of N) goes to stderr as it runs; at the end the executed notebook
//! and the job's `outputs/` folder land in `runs/<run-id>/`, and the container is removed.
//! The run ends at its deadline whatever happens: the runner stops itself, and labship kills
//! the container shortly after, should the runner not.
//!
//! A run can be detached (`fetch` follows it later), listed (`runs`), and run once per value
//! of a `--matrix`. Inputs from S3 ([`crate::data`]) are mounted read-only at `inputs/<name>`;
//! with `--output-uri`, each run's folder is put in S3 when it ends ([`deliver`]). This is the
//! local engine's job host; [`ec2`] is EC2's (an instance of its own that ends itself).

pub mod ec2;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::aws::s3::{S3Uri, S3};
use crate::config::{Config, Target};
use crate::data::Copied;
use crate::docker::jobs::JobContainer;
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::interrupt;
use crate::output::Printer;
use crate::tags::labels;

/// The runner, run by the image's Python inside the job's container.
const RUNNER: &str = include_str!("runner.py");
/// Where the job's files go in its container, and where the executed notebook is written.
const JOB_DIR: &str = "/tmp/labship-job";
const EXECUTED_DIR: &str = "/tmp/labship-job-out";
/// The runner's progress lines start with this.
const TAG: &str = "LABSHIP-JOB ";
/// How long after the deadline labship kills a container whose runner did not stop itself.
const GRACE: Duration = Duration::from_secs(30);
/// The default deadline of a job.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The notebook or script to run, read (and checked) before anything is built.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its file name: `analysis.ipynb`, `train.py`.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What to run, and how.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub source: Source,
    /// `-p NAME=VALUE`, in order, typed as papermill types them.
    pub parameters: Vec<(String, Value)>,
    pub timeout: Duration,
    /// Where `runs/<run-id>/` goes.
    pub runs_dir: PathBuf,
    /// CPU and memory limits of the job's container (`None`: the machine's).
    pub limits: crate::hosts::Limits,
    /// Said before its progress lines (one run of a matrix: `n=3`).
    pub label: Option<String>,
    /// The invocation's mark on its containers (`labship run` once, however many runs):
    /// what an interrupted run tells the user to remove.
    pub batch: String,
    /// The inputs, copied, given to the container read-only at `inputs/<name>`.
    pub inputs: Vec<Copied>,
    /// `--output-uri`: each run's folder is put at `<uri>/<run-id>/` when it ends.
    pub output: Option<Output>,
}

/// Where the results go in S3: the address given (its bucket checked before the run), and
/// the account's S3.
#[derive(Debug, Clone)]
pub struct Output {
    pub uri: S3Uri,
    pub s3: S3,
}

/// The failing cell of a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FailedCell {
    pub cell: usize,
    pub ename: String,
    pub evalue: String,
}

/// `labship run`: what ran, how it ended, where its results are.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub target: Target,
    pub deployment: String,
    pub notebook: String,
    /// `succeeded`, `failed` (a cell raised) or `timed_out`.
    pub state: String,
    pub parameters: BTreeMap<String, Value>,
    /// Code cells in the notebook (the injected parameters included), and how many started.
    pub cells: usize,
    pub cells_run: usize,
    pub failed_cell: Option<FailedCell>,
    pub duration_secs: f64,
    /// Its deadline.
    pub timeout_secs: u64,
    /// `run --ec2`: the seconds the job was given when fewer than its deadline, as its host's
    /// pull and inputs took so long that the whole deadline would not have left time for the
    /// upload of its results before the host's own.
    #[serde(default)]
    pub time_given_secs: Option<u64>,
    /// `runs/<run-id>/`: the executed notebook and `outputs/`.
    pub results: PathBuf,
    /// The files there, relative to it.
    pub files: Vec<String>,
    /// The inputs the job was given (`inputs/<name>` in its working folder).
    #[serde(default)]
    pub inputs: Vec<Copied>,
    /// `--output-uri`: where the run's folder goes in S3 (`<uri>/<run-id>/`), and whether it
    /// is there.
    #[serde(default)]
    pub output_uri: Option<String>,
    #[serde(default)]
    pub uploaded: bool,
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match (&self.state[..], &self.failed_cell) {
            ("succeeded", _) => format!("all {} cells ran", self.cells),
            (_, Some(c)) => format!(
                "cell {} of {} failed: {}: {}",
                c.cell, self.cells, c.ename, c.evalue
            ),
            ("timed_out", None) => format!(
                "stopped at its deadline in cell {} of {}",
                self.cells_run, self.cells
            ),
            (state, None) => state.to_string(),
        };
        writeln!(
            f,
            "run {} of {} on {}: {} ({}) in {:.1}s",
            self.run_id, self.notebook, self.target, self.state, how, self.duration_secs
        )?;
        if let Some(given) = self.time_given_secs {
            writeln!(
                f,
                "the job had {given}s of its {}s: its host's pull and inputs took so long that the rest was kept for the upload of its results (copy large inputs once into a bucket of the run's region, or give a longer --timeout)",
                self.timeout_secs
            )?;
        }
        for input in &self.inputs {
            writeln!(
                f,
                "input {} -> {} ({} objects, {})",
                input.uri,
                input.path,
                input.objects,
                indicatif::HumanBytes(input.bytes)
            )?;
        }
        write!(f, "results: {}", self.results.display())?;
        for file in &self.files {
            write!(f, "\n  {file}")?;
        }
        if let Some(uri) = &self.output_uri {
            let how = if self.uploaded { "" } else { " (not uploaded)" };
            write!(f, "\nin S3: {uri}{how}")?;
        }
        Ok(())
    }
}

/// Python's keywords: not a parameter's name (the injected cell would not parse).
const PYTHON_KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// `-p NAME=VALUE` as papermill reads it: NAME a Python identifier; VALUE `True`/`False`,
/// `None`, an integer, a float, else the text as a string.
pub fn parse_parameter(raw: &str) -> Result<(String, Value)> {
    let bad = |reason: &str| {
        Error::InvalidSetting {
        what: "parameter",
        value: raw.to_string(),
        reason: reason.to_string(),
        hint: "give -p NAME=VALUE, NAME a Python name (letters, digits, _; not first a digit), e.g. -p alpha=0.5 -p region=eu".into(),
    }
    };
    let (name, value) = raw.split_once('=').ok_or_else(|| bad("it has no `=`"))?;
    let name = name.trim();
    let identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        return Err(bad("its name is not a Python name"));
    }
    if PYTHON_KEYWORDS.contains(&name) {
        return Err(bad("its name is a Python keyword"));
    }
    let typed = match value {
        "True" | "true" => Value::Bool(true),
        "False" | "false" => Value::Bool(false),
        "None" => Value::Null,
        v => {
            if let Ok(i) = v.parse::<i64>() {
                Value::from(i)
            } else if let Some(x) = v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .and_then(serde_json::Number::from_f64)
            {
                Value::Number(x)
            } else {
                Value::String(v.to_string())
            }
        }
    };
    Ok((name.to_string(), typed))
}

/// The most runs one `--matrix` may make.
pub const MATRIX_LIMIT: usize = 64;

/// `--matrix NAME=V1,V2,...` (repeatable): every combination of the values, each a list of
/// parameters (typed as `-p` types them), in the order given.
pub fn parse_matrix(raw: &[String]) -> Result<Vec<Vec<(String, Value)>>> {
    let bad = |value: &str, reason: String| Error::InvalidSetting {
        what: "--matrix",
        value: value.to_string(),
        reason,
        hint: "give --matrix NAME=V1,V2,... (repeatable for a grid), e.g. --matrix alpha=0.1,0.5,1"
            .into(),
    };
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for axis in raw {
        let (name, values) = axis
            .split_once('=')
            .ok_or_else(|| bad(axis, "it has no `=`".into()))?;
        if combos[0].iter().any(|(k, _)| k == name.trim()) {
            return Err(bad(axis, format!("`{}` is given twice", name.trim())));
        }
        let values = values
            .split(',')
            .map(|v| parse_parameter(&format!("{name}={v}")))
            .collect::<Result<Vec<_>>>()?;
        if values.len() < 2 {
            return Err(bad(
                axis,
                "it has one value (for one, use -p NAME=VALUE)".into(),
            ));
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect();
        if combos.len() > MATRIX_LIMIT {
            return Err(bad(
                axis,
                format!("the grid has more than {MATRIX_LIMIT} runs"),
            ));
        }
    }
    Ok(combos)
}

/// A new run id: the UTC time and 8 random hex digits (`20261201-112233-3fa9c2e1`): sorts by time,
/// unique across machines.
pub fn new_run_id() -> String {
    let stamp = crate::hosts::rfc3339(crate::hosts::now_secs()).unwrap_or_default();
    // 2026-12-01T11:22:33Z -> 20261201-112233
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let (day, time) = digits.split_at(digits.len().min(8));
    // 32 random bits: run ids name account-wide things (a job host's IAM role), so two
    // machines starting runs in the same second must not meet.
    let mut random = [0u8; 4];
    if getrandom::getrandom(&mut random).is_err() {
        random = std::process::id().to_le_bytes();
    }
    format!(
        "{day}-{}-{}",
        &time[..time.len().min(6)],
        hex::encode(random)
    )
}

/// The notebook (`.ipynb`) or script (`.py`) at `path`, checked: a notebook must be one.
pub fn read_source(path: &Path) -> Result<Source> {
    let bad = |reason: String, hint: &str| Error::InvalidSetting {
        what: "notebook",
        value: path.display().to_string(),
        reason,
        hint: hint.to_string(),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".ipynb") || n.ends_with(".py"))
        .ok_or_else(|| {
            bad(
                "it is neither a notebook (.ipynb) nor a Python script (.py)".into(),
                "give the path of a .ipynb or .py file",
            )
        })?
        .to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        bad(
            format!("it cannot be read: {e}"),
            "check the path (relative to where you run labship)",
        )
    })?;
    if name.ends_with(".ipynb") {
        let nb: Value = serde_json::from_slice(&bytes).map_err(|e| {
            bad(
                format!("it is not a notebook (not JSON: {e})"),
                "open and save it in JupyterLab, or check that it is the file you meant",
            )
        })?;
        if !nb.get("cells").is_some_and(Value::is_array) {
            return Err(bad(
                "it is not a notebook (no list of cells)".into(),
                "open and save it in JupyterLab, or check that it is the file you meant",
            ));
        }
    }
    Ok(Source { name, bytes })
}

/// A tar archive of `(path, bytes)` files, readable by any user of the container.
fn tar_of(files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(crate::hosts::now_secs().max(0) as u64);
        tar.append_data(&mut header, path, *bytes)
            .map_err(|e| Error::engine("packing the job's files", e))?;
    }
    tar.into_inner()
        .map_err(|e| Error::engine("packing the job's files", e))
}

/// The last event the runner printed, and the cells it reached.
#[derive(Debug, Default)]
struct Progress {
    prefix: String,
    cells: usize,
    cell: usize,
    failed: Option<FailedCell>,
    timed_out: bool,
    done: bool,
    /// The runner's own clock at its last event (seconds since it started).
    seconds: f64,
}

impl Progress {
    /// One line of the container's output: a runner event is noted (and shown), anything
    /// else ignored (the kernel's own warnings).
    fn line(&mut self, line: &str, printer: &Printer) {
        let Some(event) = line
            .trim()
            .strip_prefix(TAG)
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
        else {
            return;
        };
        let n = |k: &str| event[k].as_u64().unwrap_or_default() as usize;
        self.seconds = event["t"].as_f64().unwrap_or(self.seconds);
        let text = |k: &str| event[k].as_str().unwrap_or_default().to_string();
        match event["event"].as_str().unwrap_or_default() {
            "start" => self.cells = n("cells"),
            "cell" => {
                self.cell = n("cell");
                printer.note(format!(
                    "  {}cell {} of {} ({:.1}s)",
                    self.prefix,
                    self.cell,
                    n("of"),
                    self.seconds
                ));
            }
            "failed" => {
                self.failed = Some(FailedCell {
                    cell: n("cell"),
                    ename: text("ename"),
                    evalue: text("evalue"),
                });
            }
            "timeout" => self.timed_out = true,
            "done" => self.done = true,
            _ => {}
        }
    }
}

impl Progress {
    /// How a run ended, from the runner's events, the container's exit code and whether it
    /// ran out of memory (`memory`: what limited it, and the fix) or was killed at its
    /// deadline: its state and, unless it succeeded, the failing cell.
    fn outcome(
        &self,
        exit: i64,
        oom_killed: bool,
        killed: bool,
        memory: &str,
    ) -> (&'static str, Option<FailedCell>) {
        let state = if self.done && exit == 0 {
            "succeeded"
        } else if self.timed_out || killed {
            "timed_out"
        } else {
            "failed"
        };
        let failed_cell = match (&self.failed, state) {
            // A kernel the memory limit ended dies without saying why.
            (Some(f), _) if oom_killed => Some(FailedCell {
                evalue: format!("{} (it ran out of memory, {memory})", f.evalue),
                ..f.clone()
            }),
            (Some(f), _) => Some(f.clone()),
            (None, "failed") => Some(FailedCell {
                cell: self.cell,
                ename: "JobEnded".into(),
                evalue: if oom_killed {
                    format!("the job ran out of memory ({memory}) and was ended")
                } else {
                    format!("the job's container ended with exit code {exit} before every cell ran")
                },
            }),
            _ => None,
        };
        (state, failed_cell)
    }
}

/// The job as its container holds it (`job.json`, read by the runner; `fetch` reads it back).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct JobFile {
    /// The notebook or script in the container, and where the executed notebook goes.
    source: String,
    executed: String,
    /// The job's working folder (the image's WORKDIR): its `outputs/` is the results.
    cwd: String,
    /// `[name, value]` pairs, in the order given (papermill's).
    parameters: Vec<(String, Value)>,
    /// Seconds for the whole run.
    timeout: u64,
    /// The inputs it was given, and where its results go in S3 (`<--output-uri>/<run-id>/`).
    #[serde(default)]
    inputs: Vec<Copied>,
    #[serde(default)]
    output_uri: Option<String>,
}

impl JobFile {
    /// The job of `spec` in a container whose working folder is `cwd`, given `inputs`, its
    /// run's folder in S3 being `output_uri`.
    fn new(spec: &JobSpec, cwd: &str, inputs: Vec<Copied>, output_uri: Option<String>) -> JobFile {
        let name = &spec.source.name;
        let executed_name = match name.strip_suffix(".py") {
            Some(stem) => format!("{stem}.ipynb"),
            None => name.clone(),
        };
        JobFile {
            // In a folder of its own: a script named runner.py stays the user's.
            source: format!("{JOB_DIR}/src/{name}"),
            executed: format!("{EXECUTED_DIR}/{executed_name}"),
            cwd: cwd.to_string(),
            parameters: spec.parameters.clone(),
            timeout: spec.timeout.as_secs(),
            inputs,
            output_uri,
        }
    }

    fn notebook(&self) -> String {
        self.source
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// A job whose container was started.
struct Launched {
    run_id: String,
    container: String,
    results: PathBuf,
    job: JobFile,
}

impl Launched {
    /// The job's container as the interruption report names it.
    fn made(&self) -> String {
        format!("container {} (the job {})", self.container, self.run_id)
    }

    /// Saves what ran into the run folder, then removes the container (said when it cannot
    /// be); the files saved.
    async fn save_and_remove(&self, engine: &Engine, printer: &Printer) -> Result<Vec<String>> {
        let saved = save_results(engine, &self.container, &self.job.cwd, &self.results).await;
        match engine.remove_container(&self.container).await {
            Ok(_) => interrupt::gone(&self.made()),
            Err(e) => printer.note(format!(
                "could not remove the job's container {}: {e}; `docker rm -f {}` does",
                self.container, self.container
            )),
        }
        saved
    }

    /// The report of the run, ended in `state`, with the `files` saved (and `run.json`).
    fn report(
        &self,
        deployment: &str,
        progress: &Progress,
        state: &str,
        failed_cell: Option<FailedCell>,
        mut files: Vec<String>,
    ) -> RunReport {
        files.push(RUN_FILE.into());
        files.sort();
        files.dedup();
        RunReport {
            run_id: self.run_id.clone(),
            target: Target::Local,
            deployment: deployment.to_string(),
            notebook: self.job.notebook(),
            state: state.into(),
            parameters: self.job.parameters.iter().cloned().collect(),
            cells: progress.cells,
            cells_run: progress.cell,
            failed_cell,
            duration_secs: progress.seconds,
            timeout_secs: self.job.timeout,
            time_given_secs: None,
            results: self.results.clone(),
            files,
            inputs: self.job.inputs.clone(),
            output_uri: self.job.output_uri.clone(),
            uploaded: false,
        }
    }
}

/// The container's name for a run.
fn container_of(config: &Config, run_id: &str) -> String {
    format!("labship-run-{}-{run_id}", config.name)
}

/// Claims the run's folder, then creates the job's container, puts the runner, the job and
/// the notebook into it and starts it. A container that cannot be started is removed again.
async fn launch(
    engine: &Engine,
    config: &Config,
    image: &str,
    spec: &JobSpec,
    printer: &Printer,
) -> Result<Launched> {
    interrupt::checkpoint("starting the job")?;
    let (run_id, results) = claim_run_folder(&spec.runs_dir)?;
    let launched = launch_in(
        engine,
        config,
        image,
        spec,
        run_id,
        results.clone(),
        printer,
    )
    .await;
    if launched.is_err() {
        // Nothing ran: no folder for it (it is empty).
        let _ = std::fs::remove_dir(&results);
    }
    launched
}

async fn launch_in(
    engine: &Engine,
    config: &Config,
    image: &str,
    spec: &JobSpec,
    run_id: String,
    results: PathBuf,
    printer: &Printer,
) -> Result<Launched> {
    let Source { name, bytes } = &spec.source;
    let container = container_of(config, &run_id);
    let cwd = engine
        .image_workdir(image)
        .await?
        .unwrap_or_else(|| "/tmp".into());
    let job = JobFile::new(
        spec,
        &cwd,
        spec.inputs.clone(),
        spec.output
            .as_ref()
            .map(|o| format!("{}/", o.uri.join(&run_id))),
    );
    let job_json = serde_json::to_vec(&job).map_err(|e| Error::engine("writing the job", e))?;
    let tar = tar_of(&[
        ("labship-job/runner.py", RUNNER.as_bytes()),
        ("labship-job/job.json", &job_json),
        (&format!("labship-job/src/{name}"), bytes),
    ])?;
    let spec_container = JobContainer {
        name: container.clone(),
        image: image.to_string(),
        labels: HashMap::from_iter(
            [
                (labels::MANAGED_BY.to_string(), "labship".to_string()),
                (labels::JOB.to_string(), run_id.clone()),
                (labels::JOB_OF.to_string(), config.name.clone()),
                (labels::JOB_NOTEBOOK.to_string(), name.clone()),
                (labels::JOB_BATCH.to_string(), spec.batch.clone()),
            ]
            .into_iter()
            .chain(
                job.output_uri
                    .clone()
                    .map(|at| (labels::JOB_OUTPUT.to_string(), at)),
            ),
        ),
        cmd: vec![
            "python".into(),
            format!("{JOB_DIR}/runner.py"),
            format!("{JOB_DIR}/job.json"),
        ],
        memory_bytes: spec.limits.memory_bytes(),
        nano_cpus: spec.limits.nano_cpus(),
        inputs: spec.inputs.iter().map(|i| i.mount(&job.cwd)).collect(),
    };
    engine.create_job(&spec_container).await?;
    let launched = Launched {
        run_id,
        container,
        results,
        job,
    };
    interrupt::made(launched.made());
    let started = async {
        engine.put_files(&launched.container, "/tmp", tar).await?;
        engine.start_container(&launched.container).await
    }
    .await;
    if let Err(e) = started {
        if engine.remove_container(&launched.container).await.is_ok() {
            interrupt::gone(&launched.made());
        }
        return Err(e);
    }
    printer.note(format!(
        "Running {name} as job {} in {} (deadline {})",
        launched.run_id,
        launched.container,
        crate::hosts::age(spec.timeout.as_secs() as i64)
    ));
    Ok(launched)
}

/// Follows a started job to its end (its progress on stderr), kills it should it outlive
/// `kill_after`, saves the executed notebook and `outputs/` into its run folder (with the
/// report as `run.json`), and removes the container.
async fn follow(
    engine: &Engine,
    deployment: &str,
    launched: Launched,
    label: Option<&str>,
    kill_after: Duration,
    leave_running: bool,
    printer: &Printer,
) -> Result<RunReport> {
    let (run_id, container) = (&launched.run_id, &launched.container);
    let mut progress = Progress {
        prefix: label.map(|l| format!("[{l}] ")).unwrap_or_default(),
        ..Progress::default()
    };
    let outcome = async {
        let logs = async {
            let mut logs = Box::pin(engine.follow_logs(container));
            let mut pending = String::new();
            while let Some(chunk) = logs.next().await {
                pending.push_str(&chunk?);
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    progress.line(&line, printer);
                }
            }
            progress.line(&pending, printer);
            Ok::<_, Error>(())
        };
        let killed = match interrupt::cancellable("the job", async {
            Ok(tokio::time::timeout(kill_after, logs).await)
        })
        .await?
        {
            Ok(followed) => {
                followed?;
                false
            }
            Err(_) => {
                engine.kill_container(container).await?;
                true
            }
        };
        Ok::<_, Error>((killed, engine.container_status(container).await?))
    }
    .await;
    let (killed, status) = match outcome {
        Ok(o) => o,
        // Ctrl-C, or the engine's log stream broke.
        Err(cause) => {
            let running = matches!(
                engine.container_status(container).await,
                Ok(Some(s)) if s.state == "running"
            );
            if leave_running && running {
                // `fetch` of a run that goes on: it stays as it was.
                interrupt::gone(&launched.made());
                printer.note(format!(
                    "Run {run_id} goes on in {container}; `labship fetch {run_id}` follows it again"
                ));
                return Err(cause);
            }
            // An attached run ends with its labship: what ran is saved, the container goes.
            let _ = engine.kill_container(container).await;
            if let Ok(files) = launched.save_and_remove(engine, printer).await {
                let _ = write_report(&launched.report(
                    deployment,
                    &progress,
                    "interrupted",
                    None,
                    files,
                ));
            }
            // The interruption's words as things are now (the container gone).
            return Err(match cause {
                Error::Interrupted { .. } => interrupt::checkpoint(&format!(
                    "the end of the job (what ran is saved in {})",
                    launched.results.display()
                ))
                .err()
                .unwrap_or(cause),
                other => other,
            });
        }
    };
    // Another labship followed this run to its end and removed it meanwhile: its report
    // stands.
    let Some(status) = status else {
        return read_report(&launched.results).ok_or_else(|| {
            Error::engine(
                format!("following the job {run_id}"),
                format!(
                    "its container {container} is gone, and left no {RUN_FILE} in {}",
                    launched.results.display()
                ),
            )
        });
    };
    // What ran is saved whatever the outcome, then the container goes.
    let files = launched.save_and_remove(engine, printer).await?;
    let (state, failed_cell) = progress.outcome(
        status.exit_code,
        status.oom_killed,
        killed,
        "its --memory limit: raise --memory",
    );
    let report = launched.report(deployment, &progress, state, failed_cell, files);
    write_report(&report)?;
    Ok(report)
}

/// The report of a run in its folder: what `runs` lists once the container is gone.
const RUN_FILE: &str = "run.json";

fn write_report(report: &RunReport) -> Result<()> {
    let path = report.results.join(RUN_FILE);
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| Error::engine("writing run.json", e))?;
    std::fs::write(&path, json).map_err(|e| Error::Write { path, source: e })
}

/// Runs `spec` as a job on the local engine with the image `image` (built by the caller),
/// to its end.
pub async fn run_local(
    engine: &Engine,
    config: &Config,
    image: &str,
    spec: &JobSpec,
    printer: &Printer,
) -> Result<RunReport> {
    let launched = launch(engine, config, image, spec, printer).await?;
    let mut report = follow(
        engine,
        &config.name,
        launched,
        spec.label.as_deref(),
        spec.timeout + GRACE,
        false,
        printer,
    )
    .await?;
    if let Some(output) = &spec.output {
        deliver(&output.s3, &mut report, printer).await?;
    }
    Ok(report)
}

/// Puts a run's folder at its `output_uri`: every file, then `run.json` saying so, which
/// is written here only once it is there (so a run cut off on the way, by a failure or a
/// kill, is tried again by `fetch`). A run already there is left as it is.
pub async fn deliver(s3: &S3, report: &mut RunReport, printer: &Printer) -> Result<()> {
    let Some(at) = report.output_uri.clone() else {
        return Ok(());
    };
    if report.uploaded {
        return Ok(());
    }
    let uri = S3Uri::parse(&at)?;
    printer.note(format!("Uploading run {} to {at}", report.run_id));
    let delivered = RunReport {
        uploaded: true,
        ..report.clone()
    };
    let run_json =
        serde_json::to_vec_pretty(&delivered).map_err(|e| Error::engine("writing run.json", e))?;
    // Not abandoned at a Ctrl-C: the upload stops by itself (a large file's upload is aborted
    // first, so S3 keeps no parts), then run.json is not put.
    let put = async {
        // Located again: the bucket checked before the run may have gone since.
        let bucket = s3.locate(&uri).await?;
        bucket.upload_dir(&report.results, &uri, RUN_FILE).await?;
        interrupt::checkpoint("putting run.json")?;
        bucket.put_bytes(&uri.join(RUN_FILE), run_json).await
    }
    .await;
    match put {
        Ok(()) => {
            *report = delivered;
            write_report(report)
        }
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => Err(Error::S3Data {
            uri: at.clone(),
            reason: format!("the results were not uploaded: {e}"),
            hint: format!(
                "they are in {}; `labship fetch {}` tries again, `aws s3 cp --recursive {} {at}` puts them by hand",
                report.results.display(),
                report.run_id,
                report.results.display()
            ),
        }),
    }
}

/// `labship run --detach`: the job started, and where its results will be.
#[derive(Debug, Clone, Serialize)]
pub struct DetachedReport {
    pub run_id: String,
    pub target: Target,
    pub deployment: String,
    pub notebook: String,
    pub state: String,
    pub container: String,
    pub results: PathBuf,
    pub timeout_secs: u64,
}

impl std::fmt::Display for DetachedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} of {} started on {} in {}; it stops by itself within {}.\n`labship fetch {}` follows it and brings its results to {}",
            self.run_id,
            self.notebook,
            self.target,
            self.container,
            crate::hosts::age(self.timeout_secs as i64),
            self.run_id,
            self.results.display()
        )
    }
}

/// `labship run --detach`: starts the job and leaves it running (its runner keeps the
/// deadline); `fetch` follows it later and brings its results.
pub async fn start_detached(
    engine: &Engine,
    config: &Config,
    image: &str,
    spec: &JobSpec,
    printer: &Printer,
) -> Result<DetachedReport> {
    let launched = launch(engine, config, image, spec, printer).await?;
    // It is meant to outlive this process.
    interrupt::gone(&launched.made());
    Ok(DetachedReport {
        notebook: launched.job.notebook(),
        run_id: launched.run_id,
        target: Target::Local,
        deployment: config.name.clone(),
        state: "running".into(),
        container: launched.container,
        results: launched.results,
        timeout_secs: spec.timeout.as_secs(),
    })
}

/// `labship fetch RUN`: a run's results in its folder. A run still going is followed to its
/// end (within its deadline); a finished one is saved at once; one fetched before is
/// reported from its folder.
pub async fn fetch_local(
    engine: &Engine,
    config: &Config,
    runs_dir: &Path,
    run_id: &str,
    printer: &Printer,
) -> Result<RunReport> {
    let results = runs_dir.join(run_id);
    let containers = engine
        .containers_labelled(labels::JOB, Some(run_id))
        .await?;
    let Some(c) = containers.into_iter().next() else {
        return read_report(&results).ok_or_else(|| Error::InvalidSetting {
            what: "run",
            value: run_id.to_string(),
            reason: format!(
                "no job container of that run on this engine, and no {} in {}",
                RUN_FILE,
                results.display()
            ),
            hint: "`labship runs` lists the runs (give the RUN column's id)".into(),
        });
    };
    let job: JobFile = match engine
        .get_files(&c.name, &format!("{JOB_DIR}/job.json"))
        .await?
        .and_then(first_file)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    {
        Some(job) => job,
        None => {
            return Err(Error::engine(
                format!("reading the job of {}", c.name),
                "its job.json is missing or unreadable; `docker logs` shows what it did",
            ))
        }
    };
    std::fs::create_dir_all(&results).map_err(|e| Error::Write {
        path: results.clone(),
        source: e,
    })?;
    if c.running() {
        printer.note(format!(
            "Run {run_id} is still going: following it to its end"
        ));
    }
    let deployment = c
        .labels
        .get(labels::JOB_OF)
        .cloned()
        .unwrap_or_else(|| config.name.clone());
    let batch = c.labels.get(labels::JOB_BATCH).cloned();
    // The deadline counts from the job's start, not from this fetch.
    let ran_for = engine
        .container_status(&c.name)
        .await?
        .and_then(|s| s.started_at)
        .map_or(0, |t| (crate::hosts::now_secs() - t).max(0) as u64);
    let kill_after = (Duration::from_secs(job.timeout) + GRACE)
        .saturating_sub(Duration::from_secs(ran_for))
        .max(Duration::from_secs(1));
    let name = c.name.clone();
    let followed = follow(
        engine,
        &deployment,
        Launched {
            run_id: run_id.to_string(),
            container: c.name,
            results,
            job,
        },
        None,
        kill_after,
        true,
        printer,
    )
    .await;
    // Its container gone (followed to its end, or ended and saved whatever failed after):
    // so goes the snapshot of its inputs. A run left running keeps it.
    if let Some(batch) = batch {
        if matches!(engine.container_status(&name).await, Ok(None)) {
            crate::data::release(&batch);
        }
    }
    followed
}

/// The report a run left in its folder, if any.
fn read_report(results: &Path) -> Option<RunReport> {
    let bytes = std::fs::read(results.join(RUN_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The first file of a tar archive.
fn first_file(tar: impl std::io::Read) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut entry = archive
        .entries()
        .ok()?
        .flatten()
        .find(|e| e.header().entry_type().is_file())?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).ok()?;
    Some(bytes)
}

/// One run as `labship runs` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub notebook: String,
    /// `running`, `ended` (not fetched yet), or the fetched run's `succeeded`, `failed`,
    /// `timed_out` or `interrupted`.
    pub state: String,
    pub duration_secs: Option<f64>,
    pub results: Option<PathBuf>,
    /// `--output-uri`: where the run goes in S3, and whether it is there.
    pub output_uri: Option<String>,
    pub uploaded: bool,
    /// What to do next (`labship fetch RUN`), for a run not fetched (or not uploaded) yet.
    pub note: Option<String>,
}

/// `labship runs`: the deployment's runs, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct RunsReport {
    pub target: Target,
    pub deployment: String,
    pub runs: Vec<RunRow>,
}

impl std::fmt::Display for RunsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.runs.is_empty() {
            return write!(
                f,
                "no runs of `{}` on {} (`labship run NOTEBOOK` starts one)",
                self.deployment, self.target
            );
        }
        let rows: Vec<[String; 5]> = self
            .runs
            .iter()
            .map(|r| {
                [
                    r.run_id.clone(),
                    r.notebook.clone(),
                    r.state.clone(),
                    r.duration_secs.map_or("-".into(), |d| format!("{d:.1}")),
                    match (&r.output_uri, r.uploaded) {
                        (None, _) => "-".into(),
                        (Some(uri), true) => uri.clone(),
                        (Some(_), false) => "not yet".into(),
                    },
                ]
            })
            .collect();
        write!(
            f,
            "{}",
            crate::output::table(
                ["RUN", "NOTEBOOK", "STATE", "SECONDS", "IN S3"],
                &rows,
                &[3]
            )
        )
    }
}

/// `labship runs`: the runs of `config`'s deployment on this engine (their containers: still
/// running, or ended and not fetched) and in `runs_dir` (their `run.json`), newest first.
pub async fn list_local(engine: &Engine, config: &Config, runs_dir: &Path) -> Result<RunsReport> {
    let mut runs: BTreeMap<String, RunRow> = folders(config, runs_dir, Target::Local);
    for c in engine
        .containers_labelled(labels::JOB_OF, Some(&config.name))
        .await?
    {
        let Some(run_id) = c.labels.get(labels::JOB).cloned() else {
            continue;
        };
        let (state, note) = if c.running() {
            (
                "running",
                format!("`labship fetch {run_id}` follows it to its end"),
            )
        } else {
            (
                "ended",
                format!("not fetched yet: `labship fetch {run_id}`"),
            )
        };
        runs.insert(
            run_id.clone(),
            RunRow {
                run_id,
                notebook: c
                    .labels
                    .get(labels::JOB_NOTEBOOK)
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
                state: state.into(),
                duration_secs: None,
                results: None,
                output_uri: c.labels.get(labels::JOB_OUTPUT).cloned(),
                uploaded: false,
                note: Some(note),
            },
        );
    }
    let mut runs: Vec<RunRow> = runs.into_values().collect();
    runs.reverse();
    Ok(RunsReport {
        target: Target::Local,
        deployment: config.name.clone(),
        runs,
    })
}

/// The runs of `target` whose folders in `runs_dir` hold a report, by id.
fn folders(config: &Config, runs_dir: &Path, target: Target) -> BTreeMap<String, RunRow> {
    let mut runs = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return runs;
    };
    for entry in entries.flatten() {
        let Some(r) = read_report(&entry.path())
            .filter(|r| r.deployment == config.name && r.target == target)
        else {
            continue;
        };
        runs.insert(
            r.run_id.clone(),
            RunRow {
                run_id: r.run_id.clone(),
                notebook: r.notebook.clone(),
                state: r.state.clone(),
                duration_secs: Some(r.duration_secs),
                results: Some(r.results.clone()),
                note: (r.output_uri.is_some() && !r.uploaded)
                    .then(|| format!("not in S3 yet: `labship fetch {}` uploads it", r.run_id)),
                output_uri: r.output_uri.clone(),
                uploaded: r.uploaded,
            },
        );
    }
    runs
}

/// The runs of `target` fetched into `runs_dir`, newest first.
fn list_folders(config: &Config, runs_dir: &Path, target: Target) -> RunsReport {
    let mut runs: Vec<RunRow> = folders(config, runs_dir, target).into_values().collect();
    runs.reverse();
    RunsReport {
        target,
        deployment: config.name.clone(),
        runs,
    }
}

/// One run of a matrix: its values, and its report or why it could not run at all.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRun {
    pub matrix: BTreeMap<String, Value>,
    pub run: Option<RunReport>,
    pub error: Option<String>,
}

impl MatrixRun {
    pub fn succeeded(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.state == "succeeded")
    }
}

/// `labship run --matrix`: every run in the grid's order, and the count of each outcome.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixReport {
    pub target: Target,
    pub notebook: String,
    pub runs: Vec<MatrixRun>,
    pub succeeded: usize,
    pub failed: usize,
    pub duration_secs: f64,
}

impl std::fmt::Display for MatrixReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<[String; 5]> = self
            .runs
            .iter()
            .map(|m| {
                let values = values_label(&m.matrix);
                match &m.run {
                    Some(r) => [
                        r.run_id.clone(),
                        values,
                        match &r.failed_cell {
                            Some(c) => format!("{} (cell {}: {})", r.state, c.cell, c.ename),
                            None => r.state.clone(),
                        },
                        format!("{:.1}", r.duration_secs),
                        r.results.display().to_string(),
                    ],
                    None => [
                        "-".into(),
                        values,
                        format!("error: {}", m.error.as_deref().unwrap_or("it did not run")),
                        "-".into(),
                        "-".into(),
                    ],
                }
            })
            .collect();
        writeln!(
            f,
            "{}",
            crate::output::table(
                ["RUN", "VALUES", "STATE", "SECONDS", "RESULTS"],
                &rows,
                &[3]
            )
        )?;
        write!(
            f,
            "{} runs of {} on {}: {} succeeded, {} not, in {:.1}s",
            self.runs.len(),
            self.notebook,
            self.target,
            self.succeeded,
            self.failed,
            self.duration_secs
        )
    }
}

/// `n=3 label=a`: a run's matrix values in words.
fn values_label(values: &BTreeMap<String, Value>) -> String {
    values
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `labship run --matrix`: one run of `spec` per combination of values (added to its
/// parameters), at most `at_once` at a time; a run that fails does not stop the others.
pub async fn run_matrix_local(
    engine: &Engine,
    config: &Config,
    image: &str,
    spec: &JobSpec,
    combos: Vec<Vec<(String, Value)>>,
    at_once: usize,
    printer: &Printer,
) -> Result<MatrixReport> {
    use futures_util::stream;
    let started = Instant::now();
    printer.note(format!(
        "Running {} {} times ({} at a time)",
        spec.source.name,
        combos.len(),
        at_once.max(1)
    ));
    let outcomes: Vec<(BTreeMap<String, Value>, Result<RunReport>)> = stream::iter(combos)
        .map(|combo| async move {
            let matrix: BTreeMap<String, Value> = combo.iter().cloned().collect();
            let mut one = spec.clone();
            one.parameters.extend(combo);
            one.label = Some(values_label(&matrix));
            let run = run_local(engine, config, image, &one, printer).await;
            (matrix, run)
        })
        .buffered(at_once.max(1))
        .collect()
        .await;
    matrix_report(Target::Local, &spec.source.name, outcomes, started)
}

/// The report of a matrix from each combination's outcome; an interruption is the
/// matrix's.
fn matrix_report(
    target: Target,
    notebook: &str,
    outcomes: Vec<(BTreeMap<String, Value>, Result<RunReport>)>,
    started: Instant,
) -> Result<MatrixReport> {
    let mut runs = Vec::new();
    for (matrix, run) in outcomes {
        match run {
            Ok(r) => runs.push(MatrixRun {
                matrix,
                run: Some(r),
                error: None,
            }),
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => runs.push(MatrixRun {
                matrix,
                run: None,
                error: Some(e.to_string()),
            }),
        }
    }
    let succeeded = runs.iter().filter(|r| r.succeeded()).count();
    Ok(MatrixReport {
        target,
        notebook: notebook.to_string(),
        failed: runs.len() - succeeded,
        runs,
        succeeded,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// A new run id and its folder in `runs_dir`, made now (so that two runs started in the same
/// second never share one).
fn claim_run_folder(runs_dir: &Path) -> Result<(String, PathBuf)> {
    let failed = |e: std::io::Error| Error::Write {
        path: runs_dir.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(runs_dir).map_err(failed)?;
    loop {
        let id = new_run_id();
        let dir = runs_dir.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed(e)),
        }
    }
}

/// The executed notebook and `outputs/` of the job's container into `dest` (made), and the
/// files there, relative to it.
async fn save_results(
    engine: &Engine,
    container: &str,
    cwd: &str,
    dest: &Path,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dest).map_err(|e| Error::Write {
        path: dest.to_path_buf(),
        source: e,
    })?;
    let outputs = format!("{}/outputs", cwd.trim_end_matches('/'));
    for (path, strip) in [(EXECUTED_DIR, true), (outputs.as_str(), false)] {
        let Some(tar) = engine.get_files(container, path).await? else {
            continue;
        };
        unpack(tar, dest, strip).map_err(|e| Error::Write {
            path: dest.to_path_buf(),
            source: e,
        })?;
    }
    let mut files = Vec::new();
    list(dest, dest, &mut files);
    files.sort();
    Ok(files)
}

/// Unpacks `tar` into `dest`; `strip`: without its top folder. Entries that would land
/// outside `dest` (`..`, absolute paths, links) are skipped.
fn unpack(tar: impl std::io::Read, dest: &Path, strip: bool) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let path = entry.path()?.into_owned();
        let rel: PathBuf = if strip {
            path.components().skip(1).collect()
        } else {
            path
        };
        // Only plain names: nothing lands outside `dest`; a save the runner was cut off in
        // (`X.ipynb.part`) is not a result.
        if rel.as_os_str().is_empty()
            || rel.extension().is_some_and(|e| e == "part")
            || !rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let target = dest.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry.unpack(&target)?;
    }
    Ok(())
}

fn list(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list(root, &path, files);
        } else if let Ok(rel) = path.strip_prefix(root) {
            files.push(rel.to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_typed_as_papermill_types_them() {
        for (raw, name, value) in [
            ("n=5", "n", Value::from(5)),
            ("alpha=0.5", "alpha", serde_json::json!(0.5)),
            ("on=True", "on", Value::Bool(true)),
            ("off=false", "off", Value::Bool(false)),
            ("x=None", "x", Value::Null),
            ("region=eu-west-1", "region", Value::from("eu-west-1")),
            ("empty=", "empty", Value::from("")),
            ("eq=a=b", "eq", Value::from("a=b")),
            ("_private=nan", "_private", Value::from("nan")),
        ] {
            assert_eq!(parse_parameter(raw).unwrap(), (name.into(), value), "{raw}");
        }
        for bad in [
            "novalue", "1x=2", "a-b=1", "=3", "a b=1", "class=1", "None=2",
        ] {
            assert!(parse_parameter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_matrix_is_every_combination_in_order() {
        let grid = parse_matrix(&["n=1,2".into(), "mode=a,b,c".into()]).unwrap();
        assert_eq!(grid.len(), 6);
        assert_eq!(
            grid[1],
            [
                ("n".to_string(), Value::from(1)),
                ("mode".into(), Value::from("b"))
            ]
        );
        assert_eq!(grid[5][0], ("n".to_string(), Value::from(2)));
        for bad in ["n", "n=1", "1n=1,2", "n=1,2 n=3,4"] {
            let axes: Vec<String> = bad.split(' ').map(String::from).collect();
            assert!(parse_matrix(&axes).is_err(), "{bad}");
        }
        let values: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        assert!(parse_matrix(&[format!("i={}", values.join(","))]).is_err());
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = new_run_id();
        let b = new_run_id();
        for id in [&a, &b] {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 6, 8],
                "{id}"
            );
            assert!(
                parts[..2]
                    .iter()
                    .all(|p| p.chars().all(|c| c.is_ascii_digit())),
                "{id}"
            );
            assert!(parts[2].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        assert!(a.starts_with("20"), "{a}");
        assert!(a[..15] <= b[..15], "{a} then {b}");
    }

    #[test]
    fn the_runners_events_make_the_progress() {
        let printer = Printer::new(crate::output::OutputFormat::Text, true);
        let mut p = Progress::default();
        for line in [
            "[IPKernelApp] WARNING | not an event",
            "LABSHIP-JOB {\"event\": \"start\", \"cells\": 3, \"t\": 0.1}",
            "LABSHIP-JOB {\"event\": \"cell\", \"cell\": 1, \"of\": 3, \"t\": 0.5}",
            "LABSHIP-JOB {\"event\": \"cell\", \"cell\": 2, \"of\": 3, \"t\": 1.5}",
            "LABSHIP-JOB {not json",
            "LABSHIP-JOB {\"event\": \"failed\", \"cell\": 2, \"of\": 3, \"ename\": \"KeyError\", \"evalue\": \"'x'\", \"t\": 2.25}",
        ] {
            p.line(line, &printer);
        }
        assert_eq!((p.cells, p.cell, p.seconds), (3, 2, 2.25));
        let failed = p.failed.clone().expect("failed");
        assert_eq!(
            (failed.cell, &failed.ename[..], &failed.evalue[..]),
            (2, "KeyError", "'x'")
        );
        assert!(!p.done && !p.timed_out);
        p.line(
            "LABSHIP-JOB {\"event\": \"timeout\", \"cell\": 2, \"of\": 3, \"t\": 9}",
            &printer,
        );
        assert!(p.timed_out);
    }

    #[test]
    fn results_never_leave_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        for (path, body) in [("out/ok.ipynb", "{}"), ("out/sub/b.csv", "1")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, body.as_bytes()).unwrap();
        }
        // A hand-made entry climbing out (tar::Builder refuses to write one).
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"out/../escape");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &b"x"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        unpack(&bytes[..], dir.path(), true).unwrap();
        let mut files = Vec::new();
        list(dir.path(), dir.path(), &mut files);
        files.sort();
        assert_eq!(files, ["ok.ipynb", "sub/b.csv"]);
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }
}
