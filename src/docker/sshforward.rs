//! SSH agent forwarding for `RUN --mount=type=ssh`: BuildKit's `moby.sshforward.v1.SSH`.
//!
//! BuildKit first asks `CheckAgent` whether the session has the agent the mount names (`id`,
//! `default` by default), then opens one `ForwardAgent` stream per connection the step makes
//! to the socket it mounts; the stream's metadata `buildkit.ssh.id` names the agent. Each
//! stream carries `BytesMessage`s both ways, which labship copies to and from a connection to
//! the agent's socket. The agent signs; private keys never leave it, and nothing of the
//! conversation is logged.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::filesync::{frame, next_message, send_within_window};

pub const CHECK_AGENT: &str = "/moby.sshforward.v1.SSH/CheckAgent";
pub const FORWARD_AGENT: &str = "/moby.sshforward.v1.SSH/ForwardAgent";

#[derive(Clone, PartialEq, Message)]
pub(super) struct CheckAgentRequest {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct CheckAgentResponse {}

#[derive(Clone, PartialEq, Message)]
struct BytesMessage {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

/// The answer to `CheckAgent`: an empty message, or NOT_FOUND naming the missing agent.
pub(super) fn check(
    message: Bytes,
    agents: &HashMap<String, PathBuf>,
) -> std::result::Result<Vec<u8>, (u32, String)> {
    let request =
        CheckAgentRequest::decode(message).map_err(|e| (3, format!("bad request: {e}")))?;
    let id = if request.id.is_empty() {
        "default"
    } else {
        request.id.as_str()
    };
    if agents.contains_key(id) {
        Ok(CheckAgentResponse {}.encode_to_vec())
    } else {
        Err((
            5,
            format!("no SSH agent was given for id {id} (labship build --ssh {id}=SOCKET)"),
        ))
    }
}

/// Serves one `ForwardAgent` stream: bytes both ways between BuildKit and the agent's socket,
/// until either side closes.
pub async fn serve(
    request: hyper::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    agents: &HashMap<String, PathBuf>,
) -> std::result::Result<(), h2::Error> {
    let id = request
        .headers()
        .get("buildkit.ssh.id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("default")
        .to_string();
    let mut stream = super::filesync::open_call(respond)?;
    let agent = match agents.get(&id) {
        Some(path) => tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| format!("cannot reach the SSH agent {id} at {}: {e}", path.display())),
        None => Err(format!("no SSH agent was given for id {id}")),
    };
    let agent = match agent {
        Ok(agent) => agent,
        Err(message) => return super::filesync::end_call(&mut stream, 5, &message),
    };
    let (mut from_agent, mut to_agent) = agent.into_split();
    let mut body = request.into_body();

    // BuildKit -> agent.
    let upstream = tokio::spawn(async move {
        let mut pending = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else { break };
            let _ = body.flow_control().release_capacity(chunk.len());
            pending.extend_from_slice(&chunk);
            while let Some(message) = next_message(&mut pending) {
                let Ok(m) = BytesMessage::decode(message) else {
                    return;
                };
                if to_agent.write_all(&m.data).await.is_err() {
                    return;
                }
            }
        }
        let _ = to_agent.shutdown().await;
    });

    // Agent -> BuildKit.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from_agent.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let out = frame(
            &BytesMessage {
                data: Bytes::copy_from_slice(&buf[..n]),
            }
            .encode_to_vec(),
        );
        if !send_within_window(&mut stream, out).await {
            upstream.abort();
            return Ok(());
        }
    }
    upstream.abort();
    super::filesync::end_call(&mut stream, 0, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_agent_knows_the_given_ids_and_default() {
        let agents = HashMap::from([("default".to_string(), PathBuf::from("/a.sock"))]);
        let ask = |id: &str| {
            check(
                Bytes::from(CheckAgentRequest { id: id.into() }.encode_to_vec()),
                &agents,
            )
        };
        assert!(ask("default").is_ok());
        assert!(ask("").is_ok(), "an empty id is the default agent");
        let (code, message) = ask("gitlab").expect_err("unknown id");
        assert_eq!(code, 5);
        assert!(message.contains("--ssh gitlab=SOCKET"), "{message}");
    }
}
