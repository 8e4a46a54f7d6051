//! `POST /images/{name}/push` sent by hand, so that each progress record keeps its layer `id`
//! and the final `aux` record (tag, digest, size) reaches us. The engine does the upload; we
//! only read its JSON-lines answer.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use serde::Deserialize;

use super::connect::Endpoint;
use super::RegistryAuth;
use crate::error::{Error, Result};

/// The longest silence accepted from the engine during a push.
const IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// One record of the engine's push stream.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PushEvent {
    /// The layer (short digest) the record is about, when it is about one.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, rename = "progressDetail")]
    pub progress: Option<Progress>,
    #[serde(default, rename = "errorDetail")]
    pub error: Option<ErrorDetail>,
    #[serde(default)]
    pub aux: Option<PushAux>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Progress {
    pub current: Option<u64>,
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorDetail {
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PushAux {
    #[serde(rename = "Tag")]
    pub tag: Option<String>,
    #[serde(rename = "Digest")]
    pub digest: Option<String>,
    #[serde(rename = "Size")]
    pub size: Option<u64>,
}

/// What one push did.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    pub digest: Option<String>,
    /// Bytes sent for layers the registry did not have.
    pub bytes_uploaded: u64,
    pub layers_pushed: usize,
    pub layers_existing: usize,
}

/// Tallies what the records say, layer by layer.
#[derive(Default)]
struct Tally {
    sent: BTreeMap<String, u64>,
    pushed: Vec<String>,
    existing: usize,
    digest: Option<String>,
}

impl Tally {
    fn record(&mut self, event: &PushEvent) {
        let status = event.status.as_deref().unwrap_or_default();
        if let Some(id) = &event.id {
            match status {
                "Pushing" => {
                    if let Some(current) = event.progress.as_ref().and_then(|p| p.current) {
                        let entry = self.sent.entry(id.clone()).or_default();
                        *entry = (*entry).max(current);
                    }
                }
                "Pushed" => self.pushed.push(id.clone()),
                "Layer already exists" | "Mounted from" => self.existing += 1,
                s if s.starts_with("Mounted from") => self.existing += 1,
                _ => {}
            }
        }
        if let Some(digest) = event.aux.as_ref().and_then(|a| a.digest.clone()) {
            self.digest = Some(digest);
        }
    }

    fn outcome(self) -> PushOutcome {
        let bytes_uploaded = self.pushed.iter().filter_map(|id| self.sent.get(id)).sum();
        PushOutcome {
            digest: self.digest,
            bytes_uploaded,
            layers_pushed: self.pushed.len(),
            layers_existing: self.existing,
        }
    }
}

/// The `X-Registry-Auth` header: URL-safe base64 of the credentials as JSON.
fn auth_header(auth: &RegistryAuth) -> Result<String> {
    let json = serde_json::json!({
        "username": auth.username,
        "password": auth.password,
        "serveraddress": auth.server,
    });
    let bytes = serde_json::to_vec(&json).map_err(|e| Error::engine("encoding credentials", e))?;
    Ok(base64::engine::general_purpose::URL_SAFE.encode(bytes))
}

fn classify(image: &str, registry: &str, message: String) -> Error {
    let lower = message.to_ascii_lowercase();
    if lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("no basic auth credentials")
    {
        Error::LoginRefused {
            registry: registry.to_string(),
            message,
        }
    } else if lower.contains("denied") {
        Error::PushFailed {
            image: image.to_string(),
            message,
            hint: "the registry refused the upload: your identity needs ecr:InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload and PutImage on the repository (managed policy AmazonEC2ContainerRegistryPowerUser)".into(),
        }
    } else {
        Error::PushFailed {
            image: image.to_string(),
            message,
            hint: "check that the registry is reachable from the Docker engine and run the push again; layers already uploaded are kept".into(),
        }
    }
}

pub(super) async fn push(
    endpoint: &Endpoint,
    api_version: &str,
    repo: &str,
    tag: &str,
    auth: &RegistryAuth,
    mut on_event: impl FnMut(&PushEvent),
) -> Result<PushOutcome> {
    let image = format!("{repo}:{tag}");
    let request = Request::post(format!("/v{api_version}/images/{repo}/push?tag={tag}"))
        .header("Host", "docker")
        .header("Content-Type", "application/json")
        .header("X-Registry-Auth", auth_header(auth)?)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::engine(format!("pushing {image}"), e))?;

    let fail = |e: &dyn std::fmt::Display| Error::engine(format!("pushing {image}"), e.to_string());
    // The engine answers (headers) at once and then sends progress at least every few
    // seconds while it uploads; silence for IDLE means the engine or registry hung.
    let connect = async { endpoint.send(request).await.map_err(|e| fail(&e)) };
    let response = tokio::time::timeout(IDLE, connect).await.map_err(|_| {
        fail(&format!(
            "the engine did not answer within {}s",
            IDLE.as_secs()
        ))
    })??;

    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let message = super::connect::error_message(body)
            .await
            .map_err(|e| fail(&e))?;
        return Err(classify(&image, &auth.server, message));
    }

    let mut tally = Tally::default();
    super::connect::each_line(body, IDLE, fail, |line| {
        handle_line(line, &image, &auth.server, &mut tally, &mut on_event)
    })
    .await?;
    Ok(tally.outcome())
}

fn handle_line(
    line: &[u8],
    image: &str,
    registry: &str,
    tally: &mut Tally,
    on_event: &mut impl FnMut(&PushEvent),
) -> Result<()> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(());
    }
    let event: PushEvent = serde_json::from_slice(line)
        .map_err(|e| Error::engine(format!("reading the push stream of {image}"), e))?;
    if let Some(err) = &event.error {
        return Err(classify(
            image,
            registry,
            err.message.clone().unwrap_or_default(),
        ));
    }
    tally.record(&event);
    on_event(&event);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> PushEvent {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tally_counts_only_pushed_layers() {
        // Records as a 20.10 engine prints them.
        let mut t = Tally::default();
        for line in [
            r#"{"status":"The push refers to repository [127.0.0.1:5000/labship/lab]"}"#,
            r#"{"status":"Preparing","progressDetail":{},"id":"aaa"}"#,
            r#"{"status":"Preparing","progressDetail":{},"id":"bbb"}"#,
            r#"{"status":"Layer already exists","progressDetail":{},"id":"bbb"}"#,
            r#"{"status":"Pushing","progressDetail":{"current":512,"total":2048},"progress":"[==> ]","id":"aaa"}"#,
            r#"{"status":"Pushing","progressDetail":{"current":2100,"total":2048},"progress":"[===>]","id":"aaa"}"#,
            r#"{"status":"Pushed","progressDetail":{},"id":"aaa"}"#,
            r#"{"status":"latest: digest: sha256:abc size: 739"}"#,
            r#"{"progressDetail":{},"aux":{"Tag":"latest","Digest":"sha256:abc","Size":739}}"#,
        ] {
            t.record(&ev(line));
        }
        let out = t.outcome();
        assert_eq!(out.bytes_uploaded, 2100);
        assert_eq!(out.layers_pushed, 1);
        assert_eq!(out.layers_existing, 1);
        assert_eq!(out.digest.as_deref(), Some("sha256:abc"));
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            classify("i", "r", "unauthorized: authentication required".into()),
            Error::LoginRefused { .. }
        ));
        assert!(matches!(
            classify("i", "r", "denied: not allowed".into()),
            Error::PushFailed { .. }
        ));
    }
}
