//! Step 3, locally: the image runs on this machine's Docker engine, the default that needs no
//! AWS account. A deployment is one container named `labship-<name>` and one volume
//! `labship-<name>-work` holding the workspace, both labelled, so `status`, `token`, `logs`
//! and `down` find them from the engine alone, with no state file.

mod ports;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use serde::Serialize;

use crate::build;
use crate::config::{Config, Target};
use crate::docker::{ContainerInfo, ContainerSpec, Engine};
use crate::error::{Error, Result};
use crate::hosts::{
    DeploymentStatus, DownOptions, DownReport, Host, LogsReport, Plan, PlanDetail, PlannedAction,
    StopReport, Timings, TokenReport, UpOptions as HostOptions, UpReport,
};
use crate::interrupt;
use crate::output::Printer;
use crate::tags::labels;
use crate::token::{self, TokenError};

/// The port Jupyter listens on inside the container.
pub const JUPYTER_PORT: u16 = 8888;
/// Where the workspace lives when the image names no WORKDIR (the Jupyter images' convention).
const DEFAULT_WORKSPACE: &str = "/home/jovyan/work";
/// How often the logs are read while waiting for the token.
const POLL: Duration = Duration::from_millis(200);

pub fn container_name(deployment: &str) -> String {
    format!("labship-{deployment}")
}

pub fn volume_name(deployment: &str) -> String {
    format!("labship-{deployment}-work")
}

/// The settings `up` resolves for this target (defaults applied).
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub port: Option<u16>,
    pub bind: String,
    pub wait: Duration,
    /// A class's seat: its labels say so.
    pub seat: Option<crate::hosts::SeatOf>,
    /// The port a new container takes when it is free.
    pub preferred_port: Option<u16>,
    pub limits: crate::hosts::Limits,
    pub inputs: Vec<crate::data::Copied>,
    /// What the container's `dev.labship.inputs` label says (`None`: no inputs).
    pub inputs_label: Option<String>,
}

impl UpOptions {
    fn resolve(options: &crate::hosts::UpOptions) -> UpOptions {
        UpOptions {
            port: options.port,
            bind: options
                .bind
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .to_string(),
            wait: options.wait.unwrap_or(DEFAULT_WAIT),
            seat: options.seat.clone(),
            preferred_port: options.preferred_port,
            limits: options.limits,
            inputs: options.inputs.clone(),
            inputs_label: options.inputs_label.clone(),
        }
    }
}

/// Default wait for Jupyter to print its token and answer.
const DEFAULT_WAIT: Duration = Duration::from_secs(180);

/// What `up` found on the engine: the input of [`plan`].
#[derive(Debug, Clone)]
pub struct Observed {
    /// The image's content tag for the configured context.
    pub tag: String,
    /// Whether the engine already has that image.
    pub image_present: bool,
    /// The deployment's container, if any.
    pub existing: Option<ContainerInfo>,
    /// Its published address and port, if it has one.
    pub binding: Option<(String, u16)>,
    /// Its restart count (a no-op checks that it did not restart meanwhile).
    pub restarts: i64,
}

/// The local decisions of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct LocalPlan {
    pub container: String,
    pub volume: String,
    /// The address the port is published on.
    pub bind: String,
    /// The port asked for or kept; None: the first free one from 8888.
    pub port: Option<u16>,
    /// The workspace volume gets the new image's files (without overwriting) first.
    pub sync_workspace: bool,
    pub labels: BTreeMap<String, String>,
    pub wait_seconds: u64,
}

impl std::fmt::Display for LocalPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  container       {}", self.container)?;
        writeln!(
            f,
            "  volume          {} (the workspace; kept by `down`){}",
            self.volume,
            if self.sync_workspace {
                ", the new image's files added without overwriting"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  published on    {}:{}",
            self.bind,
            self.port
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("first free port from {JUPYTER_PORT}"))
        )?;
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(f, "  labels          {}", labels.join(" "))?;
        write!(
            f,
            "  wait            up to {}s for Jupyter",
            self.wait_seconds
        )
    }
}

/// Decides what `up` does, from the configuration and what the engine holds. Pure.
pub fn plan(config: &Config, options: &UpOptions, observed: &Observed) -> Plan {
    let tag = &observed.tag;
    let image = format!("{}:{tag}", config.local_image());
    let container = container_name(&config.name);
    let volume = volume_name(&config.name);
    let mut labels: BTreeMap<String, String> =
        deployment_labels(&config.name, options.seat.as_ref())
            .into_iter()
            .collect();
    labels.insert(labels::CONTENT_TAG.to_string(), tag.clone());
    let inputs = options.inputs_label.clone();
    if let Some(inputs) = &inputs {
        labels.insert(labels::INPUTS.to_string(), inputs.clone());
    }
    let (action, reason, port, sync_workspace) = match (&observed.existing, &observed.binding) {
        (Some(c), Some((bound_ip, bound_port)))
            if c.labels.get(labels::CONTENT_TAG) == Some(tag)
                && c.labels.get(labels::INPUTS) == inputs.as_ref()
                && options.port.is_none_or(|p| p == *bound_port)
                && options.bind == *bound_ip =>
        {
            if c.running() {
                (
                    PlannedAction::Nothing,
                    format!("{container} already runs this image on {bound_ip}:{bound_port}"),
                    Some(*bound_port),
                    false,
                )
            } else {
                (
                    PlannedAction::Start,
                    format!(
                        "{container} has this image but is {}: it is started again",
                        c.state
                    ),
                    Some(*bound_port),
                    false,
                )
            }
        }
        (Some(c), binding) => {
            let old_tag = c
                .labels
                .get(labels::CONTENT_TAG)
                .cloned()
                .unwrap_or_default();
            let image_changed = old_tag != *tag;
            let reason = if image_changed {
                format!("The image changed ({old_tag} -> {tag}): replacing container {container}; the workspace volume {volume} is kept")
            } else if c.labels.get(labels::INPUTS) != inputs.as_ref() {
                format!("The inputs changed: replacing container {container}; the workspace volume {volume} is kept")
            } else {
                format!("The port or address changed: replacing container {container}; the workspace volume {volume} is kept")
            };
            // The old port, when it is the same address and the user named none.
            let port = options.port.or(binding
                .as_ref()
                .filter(|(ip, _)| *ip == options.bind)
                .map(|(_, p)| *p));
            (PlannedAction::Replace, reason, port, image_changed)
        }
        (None, _) => (
            PlannedAction::Create,
            format!("no container of `{}` exists", config.name),
            options.port.or(options.preferred_port),
            false,
        ),
    };
    Plan {
        target: Target::Local,
        deployment: config.name.clone(),
        action,
        reason,
        image,
        build: !observed.image_present,
        detail: PlanDetail::Local(LocalPlan {
            container,
            volume,
            bind: options.bind.clone(),
            port,
            sync_workspace,
            labels,
            wait_seconds: options.wait.as_secs(),
        }),
    }
}

/// The Docker engine on this machine as a [`Host`].
pub struct LocalHost {
    engine: Engine,
}

impl LocalHost {
    pub async fn connect() -> Result<LocalHost> {
        Ok(LocalHost {
            engine: Engine::connect().await?,
        })
    }

    /// The engine the deployments run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The image of `config` on this engine, built when missing (as `up` builds it): for a
    /// job, which runs it in a container of its own.
    pub async fn image_for_job(&self, config: &Config, printer: &Printer) -> Result<String> {
        let config = crate::build::base::prefer_offline(&self.engine, config).await?;
        let (observed, _) = self.observe_built(&config, printer).await?;
        Ok(format!("{}:{}", config.local_image(), observed.tag))
    }

    /// Reads what [`plan`] needs from the engine (nothing is changed).
    pub async fn observe(&self, config: &Config) -> Result<Observed> {
        let engine = &self.engine;
        let (tag, _) = build::planned_tag(config)?;
        let image_present = engine
            .image_id(&format!("{}:{tag}", config.local_image()))
            .await?
            .is_some();
        let existing = find(engine, &config.name).await?;
        let (binding, restarts) = match &existing {
            Some(c) => (
                engine.container_binding(&c.name, JUPYTER_PORT).await?,
                engine
                    .container_status(&c.name)
                    .await?
                    .map_or(0, |s| s.restarts),
            ),
            None => (None, 0),
        };
        Ok(Observed {
            tag,
            image_present,
            existing,
            binding,
            restarts,
        })
    }

    /// [`observe`](Self::observe), with the image built first when the engine lacks it (and
    /// the seconds that took). A build changes no deployment: it comes before the plan, which
    /// then sees the image (whose tag an offline-base fallback may have changed).
    async fn observe_built(
        &self,
        config: &Config,
        printer: &Printer,
    ) -> Result<(Observed, Option<f64>)> {
        let mut observed = self.observe(config).await?;
        if observed.image_present {
            return Ok((observed, None));
        }
        let t = Instant::now();
        observed.tag = interrupt::cancellable(
            "building the image",
            build::build_with_offline_fallback(&self.engine, config, printer),
        )
        .await?
        .content_tag;
        observed.image_present = true;
        Ok((observed, Some(t.elapsed().as_secs_f64())))
    }

    /// Applies `plan` (made from `observed`) and returns the URL once it answers.
    async fn apply(
        &self,
        config: &Config,
        plan: &Plan,
        observed: &Observed,
        options: &UpOptions,
        printer: &Printer,
    ) -> Result<(String, u16)> {
        let engine = &self.engine;
        let PlanDetail::Local(local) = &plan.detail else {
            return Err(crate::hosts::plan_bug(
                "the plan is not for the local engine",
            ));
        };
        let image = &plan.image;
        let name = &local.container;
        let tag = &observed.tag;
        match plan.action {
            PlannedAction::Nothing | PlannedAction::Start => {
                let port = local.port.unwrap_or(JUPYTER_PORT);
                let bind = (local.bind.as_str(), port);
                interrupt::made(format!("container {name}"));
                let ready_from = |offset| {
                    interrupt::cancellable(
                        "Jupyter's token",
                        wait_ready(
                            engine,
                            name,
                            image,
                            bind,
                            offset,
                            observed.restarts,
                            options.wait,
                        ),
                    )
                };
                if plan.action == PlannedAction::Nothing {
                    return Ok((ready_from(0).await?, port));
                }
                // Earlier runs' tokens are in the log too: read only what this start prints.
                let offset = engine.container_logs(name, None).await?.len();
                printer.note(format!("Starting the stopped container {name}"));
                engine.start_container(name).await?;
                let ready = ready_from(offset).await;
                if ready.is_ok() {
                    engine.keep_running(name).await?;
                }
                Ok((ready?, port))
            }
            PlannedAction::Replace => {
                let Some(old) = &observed.existing else {
                    return Err(Error::engine(
                        "replacing the container",
                        "it disappeared meanwhile",
                    ));
                };
                printer.note(&plan.reason);
                let (port, url) =
                    replace(engine, config, printer, old, local, image, tag, options).await?;
                Ok((url, port))
            }
            PlannedAction::Create | PlannedAction::Resume | PlannedAction::Restart => {
                interrupt::checkpoint("creating the workspace volume")?;
                let volume_created = engine
                    .ensure_volume(
                        &local.volume,
                        deployment_labels(&config.name, options.seat.as_ref()),
                    )
                    .await?;
                match launch(engine, config, image, tag, options, local.port).await {
                    Ok((port, url)) => Ok((url, port)),
                    Err(e) => {
                        // Nothing half-made: only a volume this run created goes again.
                        if volume_created {
                            let _ = engine.remove_volume(&local.volume).await;
                        }
                        Err(e)
                    }
                }
            }
        }
    }
}

/// Creates the container, waits until Jupyter answers, and sets the restart policy; a
/// container that never gets there is removed again. Returns the host port and the URL.
async fn launch(
    engine: &Engine,
    config: &Config,
    image: &str,
    tag: &str,
    options: &UpOptions,
    preferred_port: Option<u16>,
) -> Result<(u16, String)> {
    let name = container_name(&config.name);
    interrupt::checkpoint("creating the container")?;
    let port = create(engine, config, image, tag, options, preferred_port).await?;
    // Interrupted while Jupyter starts, the new container goes again (and a replace puts
    // the previous one back), like any other failure to start.
    match interrupt::cancellable(
        "Jupyter's token",
        wait_ready(
            engine,
            &name,
            image,
            (&options.bind, port),
            0,
            0,
            options.wait,
        ),
    )
    .await
    {
        Ok(url) => {
            engine.keep_running(&name).await?;
            Ok((port, url))
        }
        Err(e) => {
            let _ = engine.remove_container(&name).await;
            Err(e)
        }
    }
}

/// Replaces the running container and keeps the old one, stopped and renamed, until the new
/// one answers; on failure the old one is put back as it was.
#[allow(clippy::too_many_arguments)]
async fn replace(
    engine: &Engine,
    config: &Config,
    printer: &Printer,
    old: &ContainerInfo,
    local: &LocalPlan,
    image: &str,
    tag: &str,
    options: &UpOptions,
) -> Result<(u16, String)> {
    let name = container_name(&config.name);
    let previous = format!("{name}-previous");
    let _ = engine.remove_container(&previous).await;
    engine.stop_container(&name).await?;
    engine.rename_container(&name, &previous).await?;
    if local.sync_workspace {
        sync_workspace(engine, config, printer, image).await;
    }
    match launch(engine, config, image, tag, options, local.port).await {
        Ok(launched) => {
            engine.remove_container(&previous).await?;
            Ok(launched)
        }
        Err(e) => {
            printer.note(format!(
                "The new container did not come up; putting {name} back as it was"
            ));
            let restored = engine.rename_container(&previous, &name).await;
            if restored.is_ok() && old.running() {
                if let Err(start) = engine.start_container(&name).await {
                    printer.note(format!(
                        "Could not restart the previous container {name}: {start}"
                    ));
                }
            }
            Err(e)
        }
    }
}

/// Adds the files a changed image brings to the workspace volume, without touching files
/// that are already there (the user's edits win). Docker fills a volume from the image only
/// while it is empty, so without this a new notebook in the image would never appear.
async fn sync_workspace(engine: &Engine, config: &Config, printer: &Printer, image: &str) {
    let workspace = match engine.image_workdir(image).await {
        Ok(w) => w.unwrap_or_else(|| DEFAULT_WORKSPACE.to_string()),
        Err(_) => DEFAULT_WORKSPACE.to_string(),
    };
    // The path goes in as an argument, never into the script: an image's WORKDIR is the
    // image author's text and may hold quotes or `$(...)`.
    let script = r#"cp -Rnp "$1/." /labship-workspace/"#;
    let volume = volume_name(&config.name);
    match engine
        .run_once(
            image,
            vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                workspace.clone(),
            ],
            (&volume, "/labship-workspace"),
            HashMap::from([(labels::HELPER_OF.to_string(), config.name.clone())]),
            Duration::from_secs(120),
        )
        .await
    {
        Ok((0, _)) => printer.note(format!(
            "Added the image's new files in {workspace} to the workspace (existing files kept)"
        )),
        Ok((code, log)) => printer.note(format!(
            "Could not add the image's new files to the workspace (exit {code}): {}",
            token::redact(log.trim())
        )),
        Err(e) => printer.note(format!(
            "Could not add the image's new files to the workspace: {e}"
        )),
    }
}

fn deployment_labels(
    deployment: &str,
    seat: Option<&crate::hosts::SeatOf>,
) -> HashMap<String, String> {
    let mut all = HashMap::from([
        (
            labels::MANAGED_BY.to_string(),
            crate::tags::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::DEPLOYMENT.to_string(), deployment.to_string()),
    ]);
    if let Some(seat) = seat {
        all.insert(labels::CLASS.to_string(), seat.class.clone());
        all.insert(labels::SEAT.to_string(), seat.seat.clone());
        if let Some(student) = &seat.student {
            all.insert(labels::STUDENT.to_string(), student.clone());
        }
        if let Some(email) = &seat.email {
            all.insert(labels::EMAIL.to_string(), email.clone());
        }
    }
    all
}

/// The seat a container or volume belongs to, from its labels.
fn seat_of(labels: &HashMap<String, String>) -> Option<crate::hosts::SeatOf> {
    Some(crate::hosts::SeatOf {
        class: labels.get(labels::CLASS)?.clone(),
        seat: labels.get(labels::SEAT)?.clone(),
        student: labels.get(labels::STUDENT).cloned(),
        email: labels.get(labels::EMAIL).cloned(),
        host: None,
    })
}

/// Creates and starts the container; returns the host port it publishes. Without `--port`
/// the port is the preferred one when free, else the first free one from 8888, and a port
/// taken between the check and the start (another `up` racing us) moves on to the next.
async fn create(
    engine: &Engine,
    config: &Config,
    image: &str,
    tag: &str,
    options: &UpOptions,
    preferred: Option<u16>,
) -> Result<u16> {
    let workspace = engine
        .image_workdir(image)
        .await?
        .unwrap_or_else(|| DEFAULT_WORKSPACE.to_string());
    let mut container_labels = deployment_labels(&config.name, options.seat.as_ref());
    container_labels.insert(labels::CONTENT_TAG.to_string(), tag.to_string());
    if let Some(inputs) = &options.inputs_label {
        container_labels.insert(labels::INPUTS.to_string(), inputs.clone());
    }
    let mut next = match (options.port, preferred) {
        (Some(p), _) => p,
        (None, Some(p)) if ports::is_free(&options.bind, p) => p,
        (None, _) => ports::first_free(&options.bind, JUPYTER_PORT)?,
    };
    for _ in 0..5 {
        let port = next;
        if !ports::is_free(&options.bind, port) {
            return Err(ports::busy(engine, &options.bind, port).await);
        }
        let spec = ContainerSpec {
            name: container_name(&config.name),
            image: image.to_string(),
            labels: container_labels.clone(),
            container_port: JUPYTER_PORT,
            host_ip: options.bind.clone(),
            host_port: port,
            volume: Some((volume_name(&config.name), workspace.clone())),
            inputs: options.inputs.iter().map(|i| i.mount(&workspace)).collect(),
            memory_bytes: options.limits.memory_bytes(),
            nano_cpus: options.limits.nano_cpus(),
        };
        match engine.run_container(&spec).await {
            Ok(_) => return Ok(port),
            Err(Error::ContainerStart { message, .. })
                if message.contains("port is already allocated")
                    || message.contains("address already in use") =>
            {
                if options.port.is_some() {
                    return Err(ports::busy(engine, &options.bind, port).await);
                }
                next = ports::first_free(&options.bind, port.saturating_add(1))?;
            }
            Err(Error::ContainerStart { message, image, .. })
                if message.contains("executable file not found") =>
            {
                return Err(Error::NoJupyter { image, message });
            }
            Err(e) => return Err(e),
        }
    }
    Err(ports::busy(engine, &options.bind, next).await)
}

/// How long after a start Jupyter has printed its token (well past `up`'s wait): the part
/// of the log `status` and `token` read, instead of a log that may hold weeks of requests.
const STARTUP_WINDOW_SECS: i64 = 900;

/// The log of the container's current start, its first [`STARTUP_WINDOW_SECS`] (where
/// Jupyter prints its token). The whole log only when the engine does not say when it
/// started, or when that window is over and held no token: a server still starting has not
/// printed this start's token yet, and an earlier start's would be the wrong one.
async fn startup_log(engine: &Engine, name: &str) -> Result<String> {
    if let Some(started) = engine
        .container_status(name)
        .await?
        .and_then(|s| s.started_at)
    {
        let log = engine
            .container_logs_between(name, started, started + STARTUP_WINDOW_SECS)
            .await?;
        let window_over = crate::hosts::now_secs() > started + STARTUP_WINDOW_SECS;
        if token::find_token(&log).is_ok() || !window_over {
            return Ok(log);
        }
    }
    engine.container_logs(name, None).await
}

/// The path of the login URL Jupyter printed (a base URL, /lab or /tree), without its query.
fn login_path(url: &str) -> &str {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/lab");
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The host to put in the URL: the bound address, or loopback for "all interfaces".
pub fn url_host(bind: &str) -> String {
    match bind {
        "0.0.0.0" | "" => "127.0.0.1".to_string(),
        "::" => "[::1]".to_string(),
        b if b.contains(':') => format!("[{b}]"),
        b => b.to_string(),
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    if all.is_empty() {
        "the container printed nothing".to_string()
    } else {
        token::redact(&format!(
            "last lines of its log:\n  {}",
            all[start..].join("\n  ")
        ))
    }
}

/// Waits (bounded) until the log shows a token and the URL answers with it; returns that URL.
async fn wait_ready(
    engine: &Engine,
    name: &str,
    image: &str,
    (bind, port): (&str, u16),
    log_offset: usize,
    restarts_before: i64,
    within: Duration,
) -> Result<String> {
    let deadline = Instant::now() + within;
    let host = url_host(bind);
    let mut last_http_error = String::new();
    loop {
        let full = bounded(
            deadline,
            "reading the container's log",
            engine.container_logs(name, None),
        )
        .await?;
        let log = full.get(log_offset..).unwrap_or(&full);
        match token::find_token(log) {
            Ok(found) => {
                // The URL must answer, not just exist in the log.
                let token = found.token.expose();
                let addr = format!("{host}:{port}");
                match crate::http::get_status(&addr, &format!("/api/status?token={token}"), Duration::from_secs(5)).await {
                    Ok(200) => {
                        let path = if found.path.is_empty() { "/lab" } else { found.path.as_str() };
                        return Ok(format!("http://{host}:{port}{path}?token={token}"));
                    }
                    Ok(code) => last_http_error = format!("HTTP {code}"),
                    Err(e) => last_http_error = e,
                }
            }
            Err(TokenError::TokenNotLogged) => {
                return Err(Error::TokenNotFound {
                    origin: format!("the log of {name}"),
                    reason: "the server's token was set explicitly (JUPYTER_TOKEN or a --token option), so Jupyter never prints it".into(),
                    hint: "remove the explicit token from the image so Jupyter generates one, or open the server with the token you set".into(),
                })
            }
            Err(TokenError::NoToken) => {}
        }
        let status = bounded(
            deadline,
            "inspecting the container",
            engine.container_status(name),
        )
        .await?;
        match status {
            Some(s)
                if matches!(s.state.as_str(), "exited" | "dead")
                    || s.restarts > restarts_before =>
            {
                // The log read above came before this status: read it again now that the
                // container has stopped, or its last lines may be missing.
                let log = &engine
                    .container_logs(name, None)
                    .await
                    .map(|full| full.get(log_offset..).unwrap_or(&full).to_string())
                    .unwrap_or_else(|_| log.to_string());
                // 127: the start command was not found (tini: "exec jupyter failed").
                if s.exit_code == 127 || log.contains("No module named jupyter") {
                    return Err(Error::NoJupyter {
                        image: image.to_string(),
                        message: tail(log, 3),
                    });
                }
                return Err(Error::ContainerExited {
                    container: name.to_string(),
                    code: s.exit_code,
                    tail: tail(log, 15),
                });
            }
            Some(_) => {}
            None => {
                return Err(Error::ContainerExited {
                    container: name.to_string(),
                    code: -1,
                    tail: "the container was removed while labship waited for it".into(),
                })
            }
        }
        if Instant::now() >= deadline {
            if !last_http_error.is_empty() {
                return Err(Error::NotAnswering {
                    url: format!("http://{host}:{port}/"),
                    message: last_http_error,
                });
            }
            return Err(Error::TokenTimeout {
                container: name.to_string(),
                seconds: within.as_secs(),
                tail: format!(
                    "{}\nwait longer with --wait, or check that the image starts Jupyter without a fixed token",
                    tail(log, 15)
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An engine call given the time left until `deadline` (at least a few seconds), so a hung
/// engine cannot stretch a bounded wait.
async fn bounded<T>(
    deadline: Instant,
    what: &str,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(5));
    tokio::time::timeout(left, call).await.unwrap_or_else(|_| {
        Err(Error::engine(
            what,
            format!("no answer within {}s", left.as_secs()),
        ))
    })
}

/// The local deployment `name`, if its container exists.
pub async fn find(engine: &Engine, name: &str) -> Result<Option<ContainerInfo>> {
    let container = container_name(name);
    Ok(labelled(engine, name)
        .await?
        .into_iter()
        .find(|c| c.name == container))
}

/// Every container labship made for deployment `name`: its server, and what an interrupted
/// replace may have left (`labship-NAME-previous`). Found by label, then the exact name
/// decides which is which, never a prefix.
async fn labelled(engine: &Engine, name: &str) -> Result<Vec<ContainerInfo>> {
    let found = engine
        .containers_labelled(labels::DEPLOYMENT, Some(name))
        .await?;
    Ok(found
        .into_iter()
        .filter(|c| {
            c.labels.get(labels::MANAGED_BY).map(String::as_str)
                == Some(crate::tags::MANAGED_BY_VALUE)
        })
        .collect())
}

/// Every local deployment (a job's container is not one: `labship runs` lists those).
pub async fn list(engine: &Engine) -> Result<Vec<ContainerInfo>> {
    let mut all: Vec<ContainerInfo> = engine
        .containers_labelled(labels::MANAGED_BY, Some(crate::tags::MANAGED_BY_VALUE))
        .await?
        .into_iter()
        .filter(|c| !c.labels.contains_key(labels::JOB))
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

async fn require(engine: &Engine, name: &str) -> Result<ContainerInfo> {
    find(engine, name)
        .await?
        .ok_or_else(|| Error::DeploymentNotFound {
            name: name.to_string(),
            place: "on the local Docker engine".into(),
        })
}

/// How to reach the Jupyter of `c`, the container of `deployment`: its published port and
/// the token of its log.
async fn jupyter_of(
    engine: &Engine,
    deployment: &str,
    c: ContainerInfo,
) -> Result<crate::hosts::JupyterAccess> {
    let port = c
        .host_port
        .filter(|_| c.running())
        .ok_or_else(|| Error::NotRunning {
            deployment: deployment.to_string(),
            server: c.name.clone(),
            state: c.state.clone(),
            hint: format!("`labship up {deployment} --local` starts it"),
        })?;
    let log = startup_log(engine, &c.name).await?;
    let found =
        token::find_token(&log).map_err(|e| e.into_error(&format!("the log of {}", c.name)))?;
    let path = login_path(&found.url);
    Ok(crate::hosts::JupyterAccess {
        endpoint: crate::http::Endpoint::Plain(format!(
            "{}:{port}",
            url_host(c.host_ip.as_deref().unwrap_or(""))
        )),
        base: crate::hosts::backup::api_base(path),
        token: found.token.expose().to_string(),
        server: c.name,
        tunnel: None,
    })
}

impl Host for LocalHost {
    fn target(&self) -> Target {
        Target::Local
    }

    async fn plan(
        &self,
        config: &Config,
        options: &HostOptions,
        _printer: &Printer,
    ) -> Result<Plan> {
        let config = &crate::build::base::prefer_offline(&self.engine, config).await?;
        let observed = self.observe(config).await?;
        Ok(plan(config, &UpOptions::resolve(options), &observed))
    }

    async fn up(
        &self,
        config: &Config,
        options: &HostOptions,
        printer: &Printer,
    ) -> Result<UpReport> {
        let engine = &self.engine;
        let started = Instant::now();
        let config = &crate::build::base::prefer_offline(engine, config).await?;
        let options = UpOptions::resolve(options);
        let (observed, build_secs) = self.observe_built(config, printer).await?;
        let plan = plan(config, &options, &observed);
        let t_ready = Instant::now();
        let (url, port) = self
            .apply(config, &plan, &observed, &options, printer)
            .await?;
        let PlanDetail::Local(local) = plan.detail else {
            return Err(crate::hosts::plan_bug(
                "the plan is not for the local engine",
            ));
        };
        Ok(UpReport {
            target: Target::Local,
            deployment: config.name.clone(),
            url: Some(url),
            action: plan.action.done(),
            reason: plan.reason,
            image: plan.image,
            built: build_secs.is_some(),
            bytes_uploaded: 0,
            port,
            container: Some(local.container),
            volume: Some(local.volume),
            region: None,
            instance_id: None,
            instance_type: None,
            public_ip: None,
            tls_fingerprint: None,
            access: None,
            git: None,
            timings: Timings {
                build: build_secs,
                jupyter: Some(t_ready.elapsed().as_secs_f64()),
                total: started.elapsed().as_secs_f64(),
                ..Timings::default()
            },
        })
    }

    async fn prepare(&self, config: &Config, printer: &Printer) -> Result<()> {
        let config = &crate::build::base::prefer_offline(&self.engine, config).await?;
        self.observe_built(config, printer).await.map(|_| ())
    }

    /// Through the container's published port, with the token of its log.
    async fn jupyter(&self, deployment: &str) -> Result<crate::hosts::JupyterAccess> {
        jupyter_of(
            &self.engine,
            deployment,
            require(&self.engine, deployment).await?,
        )
        .await
    }

    async fn status(&self) -> Result<Vec<DeploymentStatus>> {
        let now = crate::hosts::now_secs();
        let containers = list(&self.engine).await?;
        // How long each running server has been idle, from its own API (a few at a time; one
        // that does not answer is simply not known).
        let activities: Vec<Option<crate::hosts::backup::Activity>> = stream::iter(&containers)
            .map(|c| async move {
                let deployment = c.labels.get(labels::DEPLOYMENT)?;
                let jupyter = jupyter_of(&self.engine, deployment, c.clone()).await.ok()?;
                crate::hosts::backup::activity(&jupyter).await.ok()
            })
            .buffered(8)
            .collect()
            .await;
        // A workspace volume whose container is gone (`down` keeps it): listed as `down`.
        let kept: Vec<DeploymentStatus> = self
            .engine
            .volumes_labelled(labels::DEPLOYMENT)
            .await?
            .into_iter()
            .filter(|v| {
                v.labels.get(labels::MANAGED_BY).map(String::as_str)
                    == Some(crate::tags::MANAGED_BY_VALUE)
            })
            .filter_map(|v| {
                let name = v.labels.get(labels::DEPLOYMENT)?.clone();
                let has_container = containers
                    .iter()
                    .any(|c| c.labels.get(labels::DEPLOYMENT) == Some(&name));
                let seat = seat_of(&v.labels);
                (!has_container && v.name == volume_name(&name)).then(|| DeploymentStatus {
                    target: Target::Local,
                    state: "down".into(),
                    image: None,
                    url: None,
                    age_seconds: None,
                    container: None,
                    region: None,
                    instance_id: None,
                    instance_type: None,
                    public_ip: None,
                    note: Some(format!(
                        "volume {} kept with the workspace: {} brings it back, `labship down {} --local --delete-data` deletes it",
                        v.name,
                        crate::hosts::up_again(&name, seat.as_ref(), "--local"),
                        crate::hosts::named(&name, seat.as_ref())
                    )),
                    data_volume: None,
                    spot: None,
                    interrupted: None,
                    life: crate::hosts::HostLife::default(),
                    seat,
                    name,
                })
            })
            .collect();
        let mut rows: Vec<DeploymentStatus> = containers
            .into_iter()
            .zip(activities)
            .map(|(c, activity)| {
                let host = url_host(c.host_ip.as_deref().unwrap_or(""));
                let life = match activity.filter(|a| !a.busy) {
                    Some(a) => {
                        // The server's start is activity too (as for the watchdog): files
                        // older than the container do not make a new seat look idle for days.
                        let last = a.last.map_or(c.created, |l| l.max(c.created));
                        crate::hosts::HostLife {
                            idle_seconds: Some((now - last).max(0)),
                            last_activity: crate::hosts::rfc3339(last),
                            ..crate::hosts::HostLife::default()
                        }
                    }
                    None => crate::hosts::HostLife::default(),
                };
                DeploymentStatus {
                    target: Target::Local,
                    name: c
                        .labels
                        .get(labels::DEPLOYMENT)
                        .cloned()
                        .unwrap_or_else(|| c.name.clone()),
                    url: c
                        .host_port
                        .filter(|_| c.running())
                        .map(|p| format!("http://{host}:{p}/lab")),
                    state: c.state.clone(),
                    image: c.labels.get(labels::CONTENT_TAG).cloned(),
                    age_seconds: Some((now - c.created).max(0)),
                    container: Some(c.name.clone()),
                    region: None,
                    instance_id: None,
                    instance_type: None,
                    public_ip: None,
                    note: None,
                    data_volume: None,
                    spot: None,
                    interrupted: None,
                    life,
                    seat: seat_of(&c.labels),
                }
            })
            .collect();
        rows.extend(kept);
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    async fn connect_target(&self, _deployment: &str) -> Result<crate::hosts::ConnectTarget> {
        Err(Error::Unsupported {
            option: "connect".into(),
            target: Target::Local.to_string(),
            hint: "a local deployment is already on this machine: `labship token --local` prints its http://127.0.0.1 URL".into(),
        })
    }

    async fn rotate_token(&self, _config: &Config, _printer: &Printer) -> Result<TokenReport> {
        Err(Error::Unsupported {
            option: "--rotate".into(),
            target: Target::Local.to_string(),
            hint: "a local Jupyter generates its token when its container starts: `labship down` then `labship up` gives it a new one (the workspace volume is kept)".into(),
        })
    }

    async fn token(&self, deployment: &str) -> Result<TokenReport> {
        let c = require(&self.engine, deployment).await?;
        let log = startup_log(&self.engine, &c.name).await?;
        let found =
            token::find_token(&log).map_err(|e| e.into_error(&format!("the log of {}", c.name)))?;
        // Jupyter prints its own port inside the container; the user reaches the published one.
        let url = match c.host_port.filter(|_| c.running()) {
            Some(port) => format!(
                "http://{}:{port}{}?token={}",
                url_host(c.host_ip.as_deref().unwrap_or("")),
                login_path(&found.url),
                found.token.expose()
            ),
            None => found.url,
        };
        Ok(TokenReport {
            target: Some(Target::Local),
            deployment: Some(deployment.to_string()),
            token: found.token.expose().to_string(),
            url,
            tls_fingerprint: None,
        })
    }

    async fn logs(&self, deployment: &str, tail: Option<usize>) -> Result<LogsReport> {
        let c = require(&self.engine, deployment).await?;
        Ok(LogsReport {
            target: Target::Local,
            deployment: deployment.to_string(),
            log: self.engine.container_logs(&c.name, tail).await?,
        })
    }

    /// Streams the container's log to stderr until Ctrl-C, then stops the container (the
    /// `docker run` without `-d` experience).
    async fn attach(&self, deployment: &str, printer: &Printer) -> Result<()> {
        let container = container_name(deployment);
        let mut stream = Box::pin(self.engine.follow_logs(&container));
        printer.note("Attached: Ctrl-C stops the container (the workspace volume is kept)");
        loop {
            tokio::select! {
                chunk = stream.next() => match chunk {
                    Some(Ok(text)) => eprint!("{text}"),
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                _ = crate::interrupt::stopped() => {
                    printer.note(format!("Stopping {container}"));
                    return self.engine.stop_container(&container).await;
                }
            }
        }
    }

    /// Stops the container (`docker stop`): its restart policy does not bring it back
    /// until `up` starts it; the workspace volume stays. Jupyter makes a new token when it
    /// starts again (an image that sets its own keeps that).
    async fn stop(&self, deployment: &str, _force: bool, printer: &Printer) -> Result<StopReport> {
        let c = require(&self.engine, deployment).await?;
        let mut report = StopReport {
            target: Target::Local,
            deployment: deployment.to_string(),
            region: None,
            stopped: Vec::new(),
            already_stopped: Vec::new(),
            kept: vec![format!(
                "volume {} (the workspace); `labship up` starts the container again",
                volume_name(deployment)
            )],
        };
        if c.running() {
            printer.note(format!("Stopping {}", c.name));
            self.engine.stop_container(&c.name).await?;
            report.stopped.push(format!("container {}", c.name));
        } else {
            report
                .already_stopped
                .push(format!("container {} ({})", c.name, c.state));
        }
        Ok(report)
    }

    /// Through the container's Jupyter on its published port, with the token of its log.
    async fn backup(
        &self,
        deployment: &str,
        dest: &std::path::Path,
        printer: &Printer,
    ) -> Result<crate::hosts::BackupReport> {
        let jupyter = self.jupyter(deployment).await?;
        printer.note(format!(
            "Saving the workspace of {} to {}",
            jupyter.server,
            dest.display()
        ));
        let saved = crate::interrupt::cancellable("saving the workspace", async {
            crate::hosts::backup::save_workspace(&jupyter, &[], dest)
                .await
                .map_err(|message| Error::BackupFailed {
                    deployment: deployment.to_string(),
                    instance: jupyter.server.clone(),
                    message,
                })
        })
        .await?;
        Ok(crate::hosts::BackupReport {
            target: Target::Local,
            deployment: deployment.to_string(),
            region: None,
            saved,
        })
    }

    async fn down_preview(&self, config: &Config, options: &DownOptions) -> Result<Option<String>> {
        Ok(options.delete_data.then(|| {
            format!(
                "delete the workspace volume {} with every notebook in it",
                volume_name(&config.name)
            )
        }))
    }

    /// Removes the container; the workspace volume only with `delete_data`.
    async fn down(
        &self,
        config: &Config,
        options: &DownOptions,
        _printer: &Printer,
    ) -> Result<DownReport> {
        let engine = &self.engine;
        let name = &config.name;
        let container = container_name(name);
        let volume = volume_name(name);
        let mut report = DownReport::new(Target::Local, name, None);
        // The server first, then anything else of the deployment's (a container an
        // interrupted replace left behind would otherwise keep the volume in use).
        let mut containers = labelled(engine, name).await?;
        containers.sort_by_key(|c| c.name != container);
        // And a helper a killed `up` left (it holds the volume too).
        containers.extend(
            engine
                .containers_labelled(labels::HELPER_OF, Some(name))
                .await?,
        );
        for c in containers {
            if engine.remove_container(&c.name).await? {
                report.removed.push(format!("container {}", c.name));
            }
        }
        if options.delete_data {
            if engine.remove_volume(&volume).await? {
                report.removed.push(format!(
                    "volume {volume} (the workspace and every notebook in it)"
                ));
            }
        } else if engine.volume_exists(&volume).await? {
            report
                .kept
                .push(format!("volume {volume} (delete it with --delete-data)"));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> (tempfile::TempDir, Config) {
        crate::config::test_project("lab")
    }

    fn options(port: Option<u16>) -> UpOptions {
        UpOptions {
            port,
            bind: "127.0.0.1".into(),
            wait: DEFAULT_WAIT,
            seat: None,
            preferred_port: None,
            limits: crate::hosts::Limits::default(),
            inputs: Vec::new(),
            inputs_label: None,
        }
    }

    fn container(state: &str, tag: &str) -> ContainerInfo {
        ContainerInfo {
            id: "c1".into(),
            name: "labship-lab".into(),
            image: format!("labship/lab:{tag}"),
            labels: HashMap::from([
                (labels::DEPLOYMENT.to_string(), "lab".to_string()),
                (labels::CONTENT_TAG.to_string(), tag.to_string()),
            ]),
            state: state.into(),
            created: 0,
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(8890),
        }
    }

    fn observed(existing: Option<ContainerInfo>) -> Observed {
        Observed {
            tag: "ctx-new".into(),
            image_present: false,
            binding: existing.as_ref().map(|_| ("127.0.0.1".to_string(), 8890)),
            existing,
            restarts: 0,
        }
    }

    fn local(plan: &Plan) -> &LocalPlan {
        match &plan.detail {
            PlanDetail::Local(p) => p,
            PlanDetail::Ec2(_) => panic!("not a local plan"),
        }
    }

    #[test]
    fn a_new_deployment_is_created_with_its_labels() {
        let (_dir, config) = config();
        let plan = plan(&config, &options(None), &observed(None));
        assert_eq!(plan.action, PlannedAction::Create);
        assert!(plan.build);
        assert_eq!(plan.image, "labship/lab:ctx-new");
        let p = local(&plan);
        assert_eq!(p.container, "labship-lab");
        assert_eq!(p.volume, "labship-lab-work");
        assert_eq!(p.port, None, "the first free port from 8888");
        assert_eq!(p.labels[labels::CONTENT_TAG], "ctx-new");
        assert_eq!(p.labels[labels::DEPLOYMENT], "lab");
    }

    #[test]
    fn other_inputs_replace_the_container_and_the_same_ones_do_not() {
        let (_dir, config) = config();
        let mut seen = observed(Some(container("running", "ctx-new")));
        seen.image_present = true;
        let mut opts = options(None);
        opts.inputs_label = Some("s3://class-data/week1/".into());
        let plan = plan(&config, &opts, &seen);
        assert_eq!(
            plan.action,
            PlannedAction::Replace,
            "inputs where none were"
        );
        assert!(
            plan.reason.contains("The inputs changed"),
            "{}",
            plan.reason
        );
        assert_eq!(
            local(&plan).labels[labels::INPUTS],
            "s3://class-data/week1/"
        );
        assert!(!local(&plan).sync_workspace, "the image is the same");
        if let Some(c) = seen.existing.as_mut() {
            c.labels
                .insert(labels::INPUTS.into(), "s3://class-data/week1/".into());
        }
        assert_eq!(
            super::plan(&config, &opts, &seen).action,
            PlannedAction::Nothing
        );
        opts.inputs_label = None;
        assert_eq!(
            super::plan(&config, &opts, &seen).action,
            PlannedAction::Replace,
            "inputs removed"
        );
    }

    #[test]
    fn the_same_image_is_left_alone_or_started_again() {
        let (_dir, config) = config();
        let mut seen = observed(Some(container("running", "ctx-new")));
        seen.image_present = true;
        let plan = plan(&config, &options(None), &seen);
        assert_eq!(plan.action, PlannedAction::Nothing);
        assert!(!plan.build);
        assert_eq!(local(&plan).port, Some(8890));
        // The same port asked for explicitly is no change either.
        assert_eq!(
            super::plan(&config, &options(Some(8890)), &seen).action,
            PlannedAction::Nothing
        );
        let stopped = observed(Some(container("exited", "ctx-new")));
        assert_eq!(
            super::plan(&config, &options(None), &stopped).action,
            PlannedAction::Start
        );
    }

    #[test]
    fn a_changed_image_or_port_replaces_and_keeps_the_port_it_can() {
        let (_dir, config) = config();
        let seen = observed(Some(container("running", "ctx-old")));
        let plan = plan(&config, &options(None), &seen);
        assert_eq!(plan.action, PlannedAction::Replace);
        assert!(
            plan.reason
                .starts_with("The image changed (ctx-old -> ctx-new)"),
            "{}",
            plan.reason
        );
        assert!(
            local(&plan).sync_workspace,
            "the new image's files are added"
        );
        assert_eq!(local(&plan).port, Some(8890), "the old port is kept");

        let same = observed(Some(container("running", "ctx-new")));
        let moved = super::plan(&config, &options(Some(9999)), &same);
        assert_eq!(moved.action, PlannedAction::Replace);
        assert!(!local(&moved).sync_workspace, "same image: nothing to add");
        assert_eq!(local(&moved).port, Some(9999));
    }

    #[test]
    fn the_login_path_is_what_jupyter_printed() {
        assert_eq!(login_path("http://127.0.0.1:8888/lab?token=abc"), "/lab");
        assert_eq!(
            login_path("http://host:8888/user/ann/tree?token=abc"),
            "/user/ann/tree"
        );
        assert_eq!(login_path("garbage"), "/lab");
    }

    #[test]
    fn urls_use_a_reachable_host() {
        assert_eq!(url_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(url_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(url_host("::1"), "[::1]");
    }

    #[test]
    fn tails_are_redacted() {
        assert!(tail("http://h:8888/lab?token=deadbeef", 3).contains("token=****"));
    }

    #[test]
    fn tails_keep_the_last_lines() {
        assert_eq!(tail("", 3), "the container printed nothing");
        assert_eq!(
            tail("a\nb\n\nc\nd\n", 2),
            "last lines of its log:\n  c\n  d"
        );
    }
}
