//! `--access ssm`: Jupyter's port reached through a Systems Manager port-forwarding session,
//! with no inbound rule on the instance. AWS's session-manager-plugin carries the session (its
//! websocket protocol to `ssmmessages` is not reimplemented here): labship starts the session
//! with the SDK and hands it to the plugin as the AWS CLI does, the StartSession answer (with
//! the session's token) in the environment, never in argv. The plugin runs in its own process
//! group, so a Ctrl-C reaches labship, which then ends the session and the plugin.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::aws::Cloud;
use crate::error::{Error, Result};

/// The plugin's executable name, looked up on `PATH` like the AWS CLI does.
pub const PLUGIN: &str = "session-manager-plugin";
/// The variable the plugin reads the StartSession answer from (its first argument names it).
const RESPONSE_ENV: &str = "AWS_SSM_START_SESSION_RESPONSE";
/// What the plugin prints once its local port listens.
const LISTENING: &str = "Waiting for connections";
/// How long the plugin may take to open its local port.
const OPEN_WITHIN: Duration = Duration::from_secs(30);
/// How long the plugin may take to exit once its session is over.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// How many of the plugin's last stderr lines an error quotes.
const STDERR_LINES: usize = 12;
const INSTALL: &str = "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html";

/// The plugin on `PATH`, or an error that names it and where to get it.
pub fn find_plugin() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(PLUGIN))
        .find(|p| is_executable(p))
        .ok_or(Error::SsmPluginMissing {
            plugin: PLUGIN,
            install: INSTALL,
        })
}

#[cfg(unix)]
fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &std::path::Path) -> bool {
    p.is_file()
}

/// An open port-forwarding session: `127.0.0.1:port` here reaches the instance's port.
pub struct Tunnel {
    cloud: Cloud,
    session: String,
    child: Child,
    port: u16,
    /// Set by [`Tunnel::close`]; a tunnel dropped without it still ends its session.
    closed: bool,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // The plugin dies with the handle (kill_on_drop); the session is ended best-effort.
        if !self.closed {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (cloud, session) = (self.cloud.clone(), self.session.clone());
                runtime.spawn(async move {
                    let _ = cloud.terminate_session(&session).await;
                });
            }
        }
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("session", &self.session)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// Starts a session to `port` on `instance` and the plugin that serves it on a free local
    /// port; returns once that port listens. Nothing is left running on failure.
    pub async fn open(cloud: &Cloud, instance: &str, port: u16) -> Result<Tunnel> {
        let plugin = find_plugin()?;
        let local = free_port()?;
        let session = cloud.start_port_forwarding(instance, port, local).await?;
        let response = serde_json::json!({
            "SessionId": session.id,
            "StreamUrl": session.stream_url,
            "TokenValue": session.token,
        })
        .to_string();
        let spawned = Command::new(&plugin)
            .arg(RESPONSE_ENV)
            .arg(&cloud.region)
            .arg("StartSession")
            .arg("")
            .arg(session.request.to_string())
            .arg(&session.endpoint)
            .env(RESPONSE_ENV, response)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = cloud.terminate_session(&session.id).await;
                return Err(Error::SsmSession {
                    instance: instance.to_string(),
                    message: format!("cannot run {}: {e}", plugin.display()),
                    hint: format!("reinstall the plugin ({INSTALL})"),
                });
            }
        };
        let mut tunnel = Tunnel {
            cloud: cloud.clone(),
            session: session.id,
            child,
            port: local,
            closed: false,
        };
        match tunnel.until_listening(instance).await {
            Ok(()) => Ok(tunnel),
            Err(e) => {
                tunnel.close().await;
                Err(e)
            }
        }
    }

    /// `127.0.0.1:PORT`, where the instance's port is reached.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn session_id(&self) -> &str {
        &self.session
    }

    /// Waits for the plugin's "Waiting for connections" (bounded), draining its output; its
    /// exit before that is an error quoting its last stderr lines.
    async fn until_listening(&mut self, instance: &str) -> Result<()> {
        let (Some(stdout), Some(stderr)) = (self.child.stdout.take(), self.child.stderr.take())
        else {
            return Err(Error::SsmSession {
                instance: instance.to_string(),
                message: "the plugin's output is not connected".into(),
                hint: "try again".into(),
            });
        };
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let tail_w = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "labship::tunnel", "plugin stderr: {line}");
                if let Ok(mut t) = tail_w.lock() {
                    if t.len() >= STDERR_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "labship::tunnel", "plugin: {line}");
                if line.contains(LISTENING) {
                    let _ = ready_tx.try_send(());
                }
            }
        });
        // `None`: listening; `Some`: the plugin's exit (a closed stdout disables the first
        // branch, so an exit is then waited for).
        let waited = tokio::time::timeout(OPEN_WITHIN, async {
            tokio::select! {
                Some(()) = ready_rx.recv() => None,
                status = self.child.wait() => Some(status),
            }
        })
        .await;
        let stderr_tail = || {
            let lines: Vec<String> = tail
                .lock()
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default();
            crate::secrets::scrub(&lines.join(" | "))
        };
        match waited {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                // Let the reader take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(Error::SsmSession {
                    instance: instance.to_string(),
                    message: format!(
                        "{PLUGIN} ended ({}) before it listened: {}",
                        status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                        stderr_tail()
                    ),
                    hint: "the instance's SSM agent must be online (`labship status --ec2`); check the plugin with `session-manager-plugin --version`".into(),
                })
            }
            Err(_) => Err(Error::SsmSession {
                instance: instance.to_string(),
                message: format!(
                    "{PLUGIN} did not open its local port within {}s: {}",
                    OPEN_WITHIN.as_secs(),
                    stderr_tail()
                ),
                hint: "check the network to Systems Manager and try again".into(),
            }),
        }
    }

    /// Ends the session, after which the plugin exits by itself; one that has not within
    /// [`EXIT_WITHIN`] is killed. A failure to end the session is only logged (AWS ends idle
    /// sessions by itself).
    pub async fn close(mut self) {
        self.closed = true;
        if let Err(e) = self.cloud.terminate_session(&self.session).await {
            tracing::warn!(
                "could not end the Systems Manager session {}: {e}",
                self.session
            );
        }
        if tokio::time::timeout(EXIT_WITHIN, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
    }
}

/// A free port on 127.0.0.1 for the plugin to listen on.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Write {
            path: "(a local port for the SSM session)".into(),
            source,
        })
}
