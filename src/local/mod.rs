//! Step 3, locally: the image runs on this machine's Docker engine, the default that needs no
//! AWS account. A deployment is one container named `labship-<name>` and one volume
//! `labship-<name>-work` holding the workspace, both labelled, so `status`, `token`, `logs`
//! and `down` find them from the engine alone, with no state file.

mod ports;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use crate::build;
use crate::config::Config;
use crate::engine::{ContainerInfo, ContainerSpec, Engine};
use crate::error::{Error, Result};
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

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub port: Option<u16>,
    pub bind: String,
    pub wait: Duration,
}

/// What `up --local` did to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A new container.
    Created,
    /// The running container already had this image: nothing changed.
    Unchanged,
    /// A stopped container with this image was started again.
    Started,
    /// The image changed: the container was replaced, the workspace volume kept.
    Replaced,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub name: String,
    pub url: String,
    pub container: String,
    pub image: String,
    pub port: u16,
    pub volume: String,
    pub action: Action,
    /// Whether the image had to be built in this run.
    pub built: bool,
    /// Seconds from the container's (re)start to a URL that answers.
    pub ready_seconds: f64,
}

impl std::fmt::Display for UpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// Runs the deployment's image locally and returns its login URL once it answers.
pub async fn up(
    engine: &Engine,
    config: &Config,
    printer: &Printer,
    options: &UpOptions,
) -> Result<UpReport> {
    let config = &crate::base::prefer_offline(engine, config).await?;
    let (mut tag, _) = build::planned_tag(config)?;
    let local = config.local_image();
    let mut built = false;
    if engine.image_id(&format!("{local}:{tag}")).await?.is_none() {
        tag = build::build_with_offline_fallback(engine, config, printer)
            .await?
            .content_tag;
        built = true;
    }
    let image = format!("{local}:{tag}");
    let name = container_name(&config.name);
    let volume = volume_name(&config.name);
    let existing = find(engine, &config.name).await?;

    let (action, port, log_offset) = match existing {
        Some(c) if c.labels.get(labels::CONTENT_TAG) == Some(&tag) && c.running() => {
            (Action::Unchanged, c.host_port.unwrap_or(JUPYTER_PORT), 0)
        }
        Some(c) if c.labels.get(labels::CONTENT_TAG) == Some(&tag) => {
            // Earlier runs' tokens are in the log too: read only what this start prints.
            let offset = engine.container_logs(&name, None).await?.len();
            printer.note(format!("Starting the stopped container {name}"));
            engine.start_container(&name).await?;
            (Action::Started, c.host_port.unwrap_or(JUPYTER_PORT), offset)
        }
        Some(c) => {
            let old = c
                .labels
                .get(labels::CONTENT_TAG)
                .cloned()
                .unwrap_or_default();
            printer.note(format!(
                "The image changed ({old} -> {tag}): replacing container {name}; the workspace volume {volume} is kept"
            ));
            engine.remove_container(&name).await?;
            let port = match options.port {
                Some(p) => p,
                None => c
                    .host_port
                    .filter(|p| ports::is_free(&options.bind, *p))
                    .map_or_else(|| ports::first_free(&options.bind, JUPYTER_PORT), Ok)?,
            };
            let port = create(engine, config, &image, &tag, port, options).await?;
            (Action::Replaced, port, 0)
        }
        None => {
            let port = match options.port {
                Some(p) => p,
                None => ports::first_free(&options.bind, JUPYTER_PORT)?,
            };
            let volume_created = engine
                .ensure_volume(&volume, deployment_labels(&config.name))
                .await?;
            let created = create(engine, config, &image, &tag, port, options).await;
            let port = match created {
                Ok(port) => port,
                Err(e) => {
                    if volume_created {
                        let _ = engine.remove_volume(&volume).await;
                    }
                    return Err(e);
                }
            };
            (Action::Created, port, 0)
        }
    };

    let started = Instant::now();
    let host = url_host(&options.bind);
    let waited = wait_ready(engine, &name, &image, &host, port, log_offset, options.wait).await;
    let url = match waited {
        Ok(url) => {
            engine.keep_running(&name).await?;
            url
        }
        Err(e) => {
            // Nothing half-made: a container this run created goes again (the volume of a
            // new deployment too); an existing deployment is left for the user to inspect.
            if action == Action::Created {
                let _ = engine.remove_container(&name).await;
                let _ = engine.remove_volume(&volume).await;
            } else if action == Action::Replaced {
                let _ = engine.remove_container(&name).await;
            }
            return Err(e);
        }
    };
    Ok(UpReport {
        name: config.name.clone(),
        url,
        container: name,
        image,
        port,
        volume,
        action,
        built,
        ready_seconds: started.elapsed().as_secs_f64(),
    })
}

fn deployment_labels(deployment: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            labels::MANAGED_BY.to_string(),
            crate::tags::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::DEPLOYMENT.to_string(), deployment.to_string()),
    ])
}

/// Creates and starts the container; returns the host port it publishes.
async fn create(
    engine: &Engine,
    config: &Config,
    image: &str,
    tag: &str,
    port: u16,
    options: &UpOptions,
) -> Result<u16> {
    if !ports::is_free(&options.bind, port) {
        return Err(ports::busy(engine, &options.bind, port).await);
    }
    let workspace = engine
        .image_workdir(image)
        .await?
        .unwrap_or_else(|| DEFAULT_WORKSPACE.to_string());
    let mut container_labels = deployment_labels(&config.name);
    container_labels.insert(labels::CONTENT_TAG.to_string(), tag.to_string());
    let spec = ContainerSpec {
        name: container_name(&config.name),
        image: image.to_string(),
        labels: container_labels,
        container_port: JUPYTER_PORT,
        host_ip: options.bind.clone(),
        host_port: port,
        volume: Some((volume_name(&config.name), workspace)),
    };
    match engine.run_container(&spec).await {
        Ok(_) => Ok(port),
        Err(Error::ContainerStart { message, .. })
            if message.contains("port is already allocated")
                || message.contains("address already in use") =>
        {
            Err(ports::busy(engine, &options.bind, port).await)
        }
        Err(Error::ContainerStart { message, image, .. })
            if message.contains("executable file not found")
                || message.contains("no such file or directory") =>
        {
            Err(Error::NoJupyter { image, message })
        }
        Err(e) => Err(e),
    }
}

/// The host to put in the URL: the bound address, or loopback for "all interfaces".
fn url_host(bind: &str) -> String {
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
        format!("last lines of its log:\n  {}", all[start..].join("\n  "))
    }
}

/// Waits (bounded) until the log shows a token and the URL answers with it.
async fn wait_ready(
    engine: &Engine,
    name: &str,
    image: &str,
    host: &str,
    port: u16,
    log_offset: usize,
    within: Duration,
) -> Result<String> {
    let deadline = Instant::now() + within;
    let mut last_http_error = String::new();
    loop {
        let full = engine.container_logs(name, None).await?;
        let log = full.get(log_offset..).unwrap_or(&full);
        match token::find_token(log) {
            Ok(found) => {
                let path = if found.path.is_empty() { "/lab".to_string() } else { found.path.clone() };
                let token = found.token.expose();
                let url = format!("http://{host}:{port}{path}?token={token}");
                // The URL must answer, not just exist in the log.
                let addr = format!("{host}:{port}");
                match crate::http::get_status(&addr, &format!("/api/status?token={token}"), Duration::from_secs(5)).await {
                    Ok(200) => return Ok(url),
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
        match engine.container_status(name).await? {
            Some(s) if matches!(s.state.as_str(), "exited" | "dead") || s.restarts > 0 => {
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

/// The local deployment `name`, if its container exists.
pub async fn find(engine: &Engine, name: &str) -> Result<Option<ContainerInfo>> {
    let found = engine
        .containers_labelled(labels::DEPLOYMENT, Some(name))
        .await?;
    Ok(found.into_iter().find(|c| {
        c.labels.get(labels::MANAGED_BY).map(String::as_str) == Some(crate::tags::MANAGED_BY_VALUE)
    }))
}

/// Every local deployment.
pub async fn list(engine: &Engine) -> Result<Vec<ContainerInfo>> {
    let mut all = engine
        .containers_labelled(labels::MANAGED_BY, Some(crate::tags::MANAGED_BY_VALUE))
        .await?;
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

/// The current token and URL of a local deployment, from its container's log.
pub async fn token(engine: &Engine, name: &str) -> Result<token::TokenFinding> {
    let c = require(engine, name).await?;
    let log = engine.container_logs(&c.name, None).await?;
    token::find_token(&log).map_err(|e| token_error(e, &format!("the log of {}", c.name)))
}

/// A parser error as the user should read it.
pub fn token_error(e: TokenError, origin: &str) -> Error {
    match e {
        TokenError::TokenNotLogged => Error::TokenNotFound {
            origin: origin.to_string(),
            reason: "the server's token was set explicitly, so Jupyter logged `token=...` instead of it".into(),
            hint: "use the token that was configured (JUPYTER_TOKEN or --IdentityProvider.token)".into(),
        },
        TokenError::NoToken => Error::TokenNotFound {
            origin: origin.to_string(),
            reason: "no Jupyter server URL with a token was found".into(),
            hint: "give the log of a Jupyter server start (docker logs, cloud-init-output.log or the EC2 console output); a server that is still starting has not printed it yet".into(),
        },
    }
}

pub async fn logs(engine: &Engine, name: &str, tail: Option<usize>) -> Result<String> {
    let c = require(engine, name).await?;
    engine.container_logs(&c.name, tail).await
}

/// Streams the container's log to stderr until Ctrl-C, then stops the container (the
/// `docker run` without `-d` experience).
pub async fn attach(engine: &Engine, name: &str, printer: &Printer) -> Result<()> {
    let container = container_name(name);
    let mut stream = Box::pin(engine.follow_logs(&container));
    printer.note("Attached: Ctrl-C stops the container (the workspace volume is kept)");
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(text)) => eprint!("{text}"),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => {
                printer.note(format!("Stopping {container}"));
                return engine.stop_container(&container).await;
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub name: String,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

impl std::fmt::Display for DownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.removed.is_empty() {
            write!(f, "nothing to remove for `{}`", self.name)?;
        }
        for (i, r) in self.removed.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "removed  {r}")?;
        }
        for k in &self.kept {
            write!(f, "\nkept     {k} (delete it with --delete-data)")?;
        }
        Ok(())
    }
}

/// Removes the container; the workspace volume only when `delete_data`.
pub async fn down(engine: &Engine, name: &str, delete_data: bool) -> Result<DownReport> {
    let container = container_name(name);
    let volume = volume_name(name);
    let mut report = DownReport {
        name: name.to_string(),
        removed: Vec::new(),
        kept: Vec::new(),
    };
    if find(engine, name).await?.is_some() && engine.remove_container(&container).await? {
        report.removed.push(format!("container {container}"));
    }
    if delete_data {
        if engine.remove_volume(&volume).await? {
            report.removed.push(format!(
                "volume {volume} (the workspace and every notebook in it)"
            ));
        }
    } else if engine.volume_exists(&volume).await? {
        report.kept.push(format!("volume {volume}"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_use_a_reachable_host() {
        assert_eq!(url_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(url_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(url_host("::1"), "[::1]");
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
