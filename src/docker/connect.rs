//! Finding the engine the way the docker CLI does: `DOCKER_HOST` when set; otherwise the
//! current docker context (`DOCKER_CONTEXT`, or `currentContext` in the docker config) when it
//! is not `default`; otherwise the usual sockets (system, rootless, Docker Desktop).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::{Docker, API_DEFAULT_VERSION};
use sha2::{Digest, Sha256};

use crate::error::{engine_message, Error, Result};

/// How long a silent engine gets before we try the next place or give up.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// bollard's per-request timeout; builds and pushes of big images run long.
const REQUEST_TIMEOUT_SECS: u64 = 3600;

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port` of a plain-HTTP engine.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(h) => write!(f, "tcp://{h}"),
        }
    }
}

/// The endpoint in use and where it came from ("DOCKER_HOST", "context colima", ...).
#[derive(Debug, Clone)]
pub struct EngineSource {
    pub endpoint: Endpoint,
    pub origin: String,
}

impl Endpoint {
    /// Sends one request to the engine on a fresh connection (the calls labship makes by
    /// hand: push, BuildKit builds).
    pub(super) async fn send<B>(
        &self,
        request: hyper::Request<B>,
    ) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use hyper_util::rt::TokioIo;
        let sent = match self {
            Endpoint::Unix(path) => {
                let io = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| e.to_string())?;
                crate::http::send(TokioIo::new(io), request).await
            }
            Endpoint::Tcp(hostport) => {
                let io = tokio::net::TcpStream::connect(hostport)
                    .await
                    .map_err(|e| e.to_string())?;
                crate::http::send(TokioIo::new(io), request).await
            }
        };
        sent.map_err(|e| e.to_string())
    }

    pub fn parse(host: &str) -> Result<Endpoint> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            if std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty()) {
                return Err(Error::EngineEndpoint {
                    host: host.to_string(),
                    reason: "TLS-protected engines (DOCKER_TLS_VERIFY) are not supported".into(),
                });
            }
            let hostport = rest.trim_end_matches('/');
            let hostport = if hostport.contains(':') {
                hostport.to_string()
            } else {
                format!("{hostport}:2375")
            };
            return Ok(Endpoint::Tcp(hostport));
        }
        Err(Error::EngineEndpoint {
            host: host.to_string(),
            reason: "only unix:// and tcp:// endpoints are supported".into(),
        })
    }
}

fn docker_config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

/// The endpoint of a named docker context, read from its metadata like the CLI does
/// (`contexts/meta/<sha256 of the name>/meta.json`).
fn context_host(config_dir: &Path, name: &str) -> Option<String> {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    let meta = config_dir
        .join("contexts/meta")
        .join(digest)
        .join("meta.json");
    let text = std::fs::read_to_string(meta).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .pointer("/Endpoints/docker/Host")
        .and_then(|h| h.as_str())
        .map(str::to_string)
}

fn current_context(config_dir: Option<&Path>) -> Option<String> {
    if let Ok(name) = std::env::var("DOCKER_CONTEXT") {
        if !name.is_empty() {
            return Some(name);
        }
    }
    let text = std::fs::read_to_string(config_dir?.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .get("currentContext")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// The places to try, in order, each with where it came from.
fn candidates() -> Result<Vec<(String, Endpoint)>> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if !host.is_empty() {
            return Ok(vec![(
                format!("DOCKER_HOST={host}"),
                Endpoint::parse(&host)?,
            )]);
        }
    }
    let config_dir = docker_config_dir();
    if let Some(name) = current_context(config_dir.as_deref()).filter(|n| n != "default") {
        let host = config_dir
            .as_deref()
            .and_then(|d| context_host(d, &name))
            .ok_or_else(|| Error::EngineEndpoint {
                host: format!("context {name}"),
                reason: "the docker context has no readable endpoint".into(),
            })?;
        return Ok(vec![(
            format!("docker context `{name}` ({host})"),
            Endpoint::parse(&host)?,
        )]);
    }
    let mut sockets = vec![PathBuf::from("/var/run/docker.sock")];
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        sockets.push(PathBuf::from(run).join("docker.sock"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        sockets.push(PathBuf::from(home).join(".docker/run/docker.sock"));
    }
    Ok(sockets
        .into_iter()
        .map(|p| (format!("unix://{}", p.display()), Endpoint::Unix(p)))
        .collect())
}

fn client(endpoint: &Endpoint) -> std::result::Result<Docker, bollard::errors::Error> {
    match endpoint {
        Endpoint::Unix(path) => Docker::connect_with_unix(
            &path.to_string_lossy(),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
        Endpoint::Tcp(hostport) => Docker::connect_with_http(
            &format!("http://{hostport}"),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
    }
}

/// A `tcp://` engine is spoken to in plain HTTP (TLS engines are refused above): fine on this
/// machine, but across a network anyone on the path sees build contexts and the registry
/// password labship hands the engine for a push.
fn warn_if_plain_tcp(origin: &str, endpoint: &Endpoint) {
    let Endpoint::Tcp(hostport) = endpoint else {
        return;
    };
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport.as_str(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        tracing::warn!(
            "{origin}: the Docker engine is reached over plain TCP without TLS; build contexts and registry credentials cross the network unencrypted (use an SSH tunnel or a unix socket)"
        );
    }
}

pub(super) async fn connect() -> Result<(Docker, EngineSource)> {
    let mut tried = Vec::new();
    let mut last_error = String::new();
    for (origin, endpoint) in candidates()? {
        warn_if_plain_tcp(&origin, &endpoint);
        if let Endpoint::Unix(path) = &endpoint {
            if !path.exists() {
                tried.push(format!("{origin} (no such socket)"));
                continue;
            }
        }
        let docker = match client(&endpoint) {
            Ok(d) => d,
            Err(e) => {
                last_error = engine_message(&e);
                tried.push(origin);
                continue;
            }
        };
        match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => {
                // Speak the engine's version: a 20.10 engine refuses the newest API version.
                let docker =
                    match tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version()).await {
                        Ok(Ok(d)) => d,
                        Ok(Err(e)) => {
                            return Err(Error::engine(
                                "agreeing on an API version",
                                engine_message(&e),
                            ))
                        }
                        Err(_) => {
                            return Err(Error::engine(
                                "agreeing on an API version",
                                "the engine did not answer in time",
                            ))
                        }
                    };
                tracing::debug!(%endpoint, %origin, version = %docker.client_version(), "engine found");
                return Ok((docker, EngineSource { endpoint, origin }));
            }
            Ok(Err(e)) => last_error = engine_message(&e),
            Err(_) => last_error = format!("no answer within {}s", PING_TIMEOUT.as_secs()),
        }
        tried.push(origin);
    }
    Err(Error::EngineUnreachable {
        tried: tried.join(", "),
        detail: last_error,
    })
}

/// The engine's own words in an error answer: its JSON `message`, else the body as text.
pub(super) async fn error_message(
    body: hyper::body::Incoming,
) -> std::result::Result<String, String> {
    use http_body_util::BodyExt;
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()))
}

/// Reads the engine's JSON-lines answer, handing each line (without its newline) to `each`;
/// a silence longer than `idle` is an error.
pub(super) async fn each_line(
    mut body: hyper::body::Incoming,
    idle: Duration,
    fail: impl Fn(&dyn std::fmt::Display) -> Error,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    use http_body_util::BodyExt;
    let mut pending = Vec::new();
    while let Some(frame) = tokio::time::timeout(idle, body.frame())
        .await
        .map_err(|_| {
            fail(&format!(
                "no progress from the engine for {}s",
                idle.as_secs()
            ))
        })?
    {
        let Ok(data) = frame.map_err(|e| fail(&e))?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            each(line.trim_ascii())?;
        }
    }
    each(pending.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_docker_host() {
        assert_eq!(
            Endpoint::parse("unix:///run/user/1000/docker.sock").unwrap(),
            Endpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375").unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://docker.local").unwrap(),
            Endpoint::Tcp("docker.local:2375".into())
        );
        assert!(Endpoint::parse("ssh://me@host").is_err());
        assert!(Endpoint::parse("/var/run/docker.sock").is_err());
    }

    #[test]
    fn context_metadata_is_found_by_name_digest() {
        let dir = tempfile::tempdir().unwrap();
        let digest = hex::encode(Sha256::digest(b"colima"));
        let meta = dir.path().join("contexts/meta").join(digest);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"colima","Endpoints":{"docker":{"Host":"unix:///home/u/.colima/docker.sock"}}}"#,
        )
        .unwrap();
        assert_eq!(
            context_host(dir.path(), "colima").as_deref(),
            Some("unix:///home/u/.colima/docker.sock")
        );
        assert_eq!(context_host(dir.path(), "other"), None);
    }
}
