//! A BuildKit session with the engine: where BuildKit fetches the build context (file sync,
//! see [`super::filesync`]) and `RUN --mount=type=secret` reads its secrets from.
//!
//! `POST /session` upgrades the connection (`Upgrade: h2c`); from then on the engine is a gRPC
//! client on it and labship the server, answering the methods it announced in the upgrade's
//! headers: `moby.filesync.v1.FileSync/DiffCopy`, `moby.buildkit.secrets.v1.Secrets/GetSecret`
//! and the gRPC health check BuildKit uses to see that the session is alive. A build names the
//! session (`/build?session=ID`).
//!
//! The gRPC framing is written here over the `h2` crate (already in the tree through hyper)
//! instead of taking tonic and tower: two unary methods are a few dozen lines, and the release
//! binary stays within its size budget.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::Empty;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;

use super::connect::Endpoint;
use super::filesync::{self, frame, next_message, Sent, Served, SyncedDir, DIFF_COPY};
use super::sshforward::{self, CHECK_AGENT, FORWARD_AGENT};
use crate::error::{Error, Result};

const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

#[derive(Clone, PartialEq, Message)]
struct GetSecretRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, Message)]
struct GetSecretResponse {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    /// 1 = SERVING.
    #[prost(int32, tag = "1")]
    status: i32,
}

/// A build secret: its id (`RUN --mount=type=secret,id=ID`) and value. The value is hidden
/// from diagnostics when it is made and has no `Debug`.
#[derive(Clone)]
pub struct BuildSecret {
    pub id: String,
    value: Arc<Vec<u8>>,
}

impl BuildSecret {
    pub fn new(id: &str, value: Vec<u8>) -> BuildSecret {
        if let Ok(text) = std::str::from_utf8(&value) {
            crate::secrets::hide(text.trim());
        }
        BuildSecret {
            id: id.to_string(),
            value: Arc::new(value),
        }
    }
}

impl std::fmt::Debug for BuildSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BuildSecret({}, ****)", self.id)
    }
}

/// What a session serves.
#[derive(Default)]
pub struct Services {
    pub secrets: Vec<BuildSecret>,
    /// Folders for file sync, by the name BuildKit asks for (`context`, `dockerfile`).
    pub dirs: HashMap<String, Arc<dyn SyncedDir>>,
    /// SSH agents by id, for `RUN --mount=type=ssh` (their sockets).
    pub ssh: HashMap<String, PathBuf>,
    /// Names the engine's copies of the folders from one build to the next: the same key
    /// lets BuildKit ask only for what changed.
    pub shared_key: Option<String>,
}

/// A running session: its id for `/build?session=`, and the task serving it (ended on drop).
pub struct Session {
    pub id: String,
    task: tokio::task::JoinHandle<()>,
    sent: HashMap<String, Arc<Sent>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Files and bytes of the folder `name` sent so far.
    pub fn sent(&self, name: &str) -> (u64, u64) {
        self.sent.get(name).map_or((0, 0), |s| s.get())
    }

    /// Opens a session on the engine that serves `services`.
    pub async fn start(
        endpoint: &Endpoint,
        api_version: &str,
        services: Services,
    ) -> Result<Session> {
        let fail =
            |e: &dyn std::fmt::Display| Error::engine("opening a BuildKit session", e.to_string());
        let id = new_id();
        let mut request = Request::post(format!("/v{api_version}/session"))
            .header("Host", "docker")
            .header("Connection", "Upgrade")
            .header("Upgrade", "h2c")
            .header("X-Docker-Expose-Session-Uuid", &id)
            .header("X-Docker-Expose-Session-Name", "labship")
            .header(
                "X-Docker-Expose-Session-Sharedkey",
                services.shared_key.as_deref().unwrap_or(&id),
            )
            .header("X-Docker-Expose-Session-Grpc-Method", GET_SECRET)
            .header("X-Docker-Expose-Session-Grpc-Method", HEALTH_CHECK)
            .header("X-Docker-Expose-Session-Grpc-Method", DIFF_COPY);
        if !services.ssh.is_empty() {
            request = request
                .header("X-Docker-Expose-Session-Grpc-Method", CHECK_AGENT)
                .header("X-Docker-Expose-Session-Grpc-Method", FORWARD_AGENT);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| fail(&e))?;
        let upgraded = match endpoint {
            Endpoint::Unix(path) => {
                let io = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| fail(&e))?;
                upgrade(TokioIo::new(io), request).await
            }
            Endpoint::Tcp(hostport) => {
                let io = tokio::net::TcpStream::connect(hostport)
                    .await
                    .map_err(|e| fail(&e))?;
                upgrade(TokioIo::new(io), request).await
            }
        }
        .map_err(|e| fail(&e))?;
        let mut h2 = h2::server::handshake(TokioIo::new(upgraded))
            .await
            .map_err(|e| fail(&e))?;
        let secrets: Arc<HashMap<String, BuildSecret>> = Arc::new(
            services
                .secrets
                .iter()
                .map(|s| (s.id.clone(), s.clone()))
                .collect(),
        );
        let dirs: Arc<HashMap<String, Served>> = Arc::new(
            services
                .dirs
                .into_iter()
                .map(|(name, dir)| {
                    let sent = Arc::new(Sent::default());
                    (name, Served { dir, sent })
                })
                .collect(),
        );
        let agents = Arc::new(services.ssh);
        let sent = dirs
            .iter()
            .map(|(name, served)| (name.clone(), Arc::clone(&served.sent)))
            .collect();
        let task = tokio::spawn(async move {
            while let Some(accepted) = h2.accept().await {
                let Ok((request, respond)) = accepted else {
                    break;
                };
                let secrets = Arc::clone(&secrets);
                let dirs = Arc::clone(&dirs);
                let agents = Arc::clone(&agents);
                tokio::spawn(async move {
                    let result = match request.uri().path() {
                        DIFF_COPY => filesync::serve(request, respond, &dirs).await,
                        FORWARD_AGENT => sshforward::serve(request, respond, &agents).await,
                        _ => answer(request, respond, &secrets, &agents).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!("BuildKit session call failed: {e}");
                    }
                });
            }
        });
        Ok(Session { id, task, sent })
    }
}

/// Sends the upgrade request and returns the upgraded connection.
async fn upgrade<I>(
    io: I,
    request: Request<Empty<Bytes>>,
) -> std::result::Result<hyper::upgrade::Upgraded, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("session connection closed: {e}");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!(
            "the engine answered HTTP {} instead of switching protocols",
            response.status()
        ));
    }
    hyper::upgrade::on(response)
        .await
        .map_err(|e| e.to_string())
}

/// Answers one unary gRPC call.
async fn answer(
    request: hyper::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    secrets: &HashMap<String, BuildSecret>,
    agents: &HashMap<String, PathBuf>,
) -> std::result::Result<(), h2::Error> {
    let path = request.uri().path().to_string();
    let mut body = request.into_body();
    let mut raw = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        raw.extend_from_slice(&chunk);
    }
    // A unary call's one message (empty when the body is short).
    let message = next_message(&mut raw).unwrap_or_default();
    let reply: std::result::Result<Vec<u8>, (u32, String)> = match path.as_str() {
        HEALTH_CHECK => Ok(HealthCheckResponse { status: 1 }.encode_to_vec()),
        GET_SECRET => match GetSecretRequest::decode(message) {
            Ok(req) => match secrets.get(&req.id) {
                Some(secret) => Ok(GetSecretResponse {
                    data: secret.value.as_ref().clone(),
                }
                .encode_to_vec()),
                // NOT_FOUND: BuildKit then fails the mount, or skips it with required=false.
                None => Err((5, format!("secret {} not provided", req.id))),
            },
            Err(e) => Err((3, format!("bad request: {e}"))),
        },
        CHECK_AGENT => sshforward::check(message, agents),
        other => Err((12, format!("{other} is not served by labship"))),
    };
    let mut stream = filesync::open_call(respond)?;
    match reply {
        Ok(bytes) => {
            stream.send_data(frame(&bytes), false)?;
            filesync::end_call(&mut stream, 0, "")
        }
        Err((code, text)) => filesync::end_call(&mut stream, code, &text),
    }
}

/// A session id: 25 random lowercase alphanumerics, as the docker CLI makes them.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 25];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Unique enough for a session name on one engine when the OS gives no randomness.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        return format!("labship{nanos}");
    }
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let message = GetSecretRequest { id: "pypi".into() }.encode_to_vec();
        let framed = frame(&message);
        assert_eq!(framed[0], 0);
        let back = GetSecretRequest::decode(
            next_message(&mut BytesMut::from(&framed[..])).expect("a whole frame"),
        )
        .expect("decode");
        assert_eq!(back.id, "pypi");
        assert!(next_message(&mut BytesMut::from(&b"\0\0"[..])).is_none());
    }

    #[test]
    fn ids_look_like_the_clis() {
        let id = new_id();
        assert_eq!(id.len(), 25);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(id, new_id());
    }
}
