//! The Docker engine, found the way the docker CLI finds it, and spoken to in the pipeline's
//! words: build an image from a streamed context, tag it, ask a registry whether a tag is
//! there, push it.
//!
//! Most calls go through bollard. Push is sent as a raw engine API call ([`push`]) because
//! bollard's `PushImageInfo` drops the per-layer `id` and the final `aux` record that carries
//! the pushed digest, both of which labship reports.

mod buildkit;
pub use buildkit::StepEvent;
mod connect;
pub mod containers;
pub mod filesync;
pub mod jobs;
pub mod push;
pub mod session;
mod sshforward;

use std::collections::HashMap;
use std::sync::Arc;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::StreamExt;

pub use connect::{Endpoint, EngineSource};
pub use containers::{ContainerInfo, ContainerSpec};
pub use push::{PushEvent, PushOutcome};

use crate::error::{engine_message, Error, Result};

/// Credentials for one registry, as `docker login` would hold them. The password is a secret:
/// its Debug output is redacted.
#[derive(Clone)]
pub struct RegistryAuth {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"****")
            .finish()
    }
}

impl RegistryAuth {
    fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.server.clone()),
            ..Default::default()
        }
    }
}

/// What the engine said at the end of a successful build.
#[derive(Debug, Clone)]
pub struct Built {
    pub image_id: String,
}

/// A running engine.
pub struct Engine {
    docker: Docker,
    source: EngineSource,
}

impl Engine {
    /// Finds and pings the engine (bounded), and agrees on an API version with it.
    pub async fn connect() -> Result<Engine> {
        let (docker, source) = connect::connect().await?;
        Ok(Engine { docker, source })
    }

    pub fn source(&self) -> &EngineSource {
        &self.source
    }

    /// Whether this engine builds with BuildKit: a Linux engine whose API is at least 1.39
    /// (Docker 18.09).
    pub async fn has_buildkit(&self) -> Result<bool> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| Error::engine("reading the engine's version", engine_message(&e)))?;
        let linux = version.os.as_deref().is_none_or(|os| os == "linux");
        Ok(linux && api_at_least(&self.docker.client_version().to_string(), (1, 39)))
    }

    /// The engine's own architecture (`amd64`, `arm64`).
    pub async fn native_arch(&self) -> Result<String> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| Error::engine("reading the engine's version", engine_message(&e)))?;
        Ok(version.arch.unwrap_or_default())
    }

    /// Builds with BuildKit, which fetches the context and the Dockerfile from the folders
    /// given, through the session's file sync: only the files its copy from the last build
    /// with the same `shared_key` lacks. `request.dockerfile` is the Dockerfile's name in
    /// `dockerfile`. Returns the build and what was sent of `context` (files, bytes). The
    /// engine's refusal of BuildKit itself is [`Error::BuildKitRefused`].
    pub async fn build_synced(
        &self,
        request: &BuildRequest,
        context: Arc<dyn filesync::SyncedDir>,
        dockerfile: Arc<dyn filesync::SyncedDir>,
        shared_key: String,
        on_output: impl FnMut(StepEvent<'_>),
    ) -> Result<(Built, (u64, u64))> {
        let version = self.docker.client_version().to_string();
        let services = session::Services {
            secrets: request.secrets.clone(),
            ssh: request.ssh.clone(),
            dirs: HashMap::from([
                ("context".to_string(), context),
                ("dockerfile".to_string(), dockerfile),
            ]),
            shared_key: Some(shared_key),
        };
        let session = session::Session::start(&self.source.endpoint, &version, services).await?;
        let built = buildkit::build(
            &self.source.endpoint,
            &version,
            request,
            &session.id,
            on_output,
        )
        .await?;
        Ok((built, session.sent("context")))
    }

    /// Builds from a tar stream with the classic builder. `on_output` sees each line the
    /// engine prints; a failing step becomes [`Error::BuildStepFailed`] naming the step and
    /// its last lines.
    pub async fn build(
        &self,
        request: &BuildRequest,
        context: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
        mut on_output: impl FnMut(&str),
    ) -> Result<Built> {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile.clone(),
            rm: true,
            forcerm: true,
            buildargs: Some(request.args.clone()),
            labels: Some(request.labels.clone()),
            platform: request.platform.clone(),
            target: request.target.clone().unwrap_or_default(),
            networkmode: Some(request.network.to_string()),
            ..Default::default()
        };
        let platform = options.platform.clone();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_try_stream(context)));
        let mut log = BuildLog::default();
        let mut image_id = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref() {
                        for line in text.lines() {
                            log.push(line);
                            on_output(line);
                        }
                    }
                    if let Some(id) = info.aux.and_then(|a| a.id) {
                        image_id = Some(id);
                    }
                    if let Some(detail) = info.error_detail {
                        let message = detail.message.unwrap_or_default();
                        return Err(log.failure(&message, &platform));
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(log.failure(&error, &platform));
                }
                Err(e) => return Err(log.failure(&engine_message(&e), &platform)),
            }
        }
        match image_id {
            Some(image_id) => Ok(Built { image_id }),
            None => Err(Error::engine(
                "building the image",
                "the engine finished without reporting an image ID",
            )),
        }
    }

    /// The ID of a local image, or None when the engine has no such image.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(img.id),
            Err(e) if containers::not_found(&e) => Ok(None),
            Err(e) => Err(Error::engine(
                format!("inspecting image {reference}"),
                engine_message(&e),
            )),
        }
    }

    /// The size of an image on this engine, in bytes (None when it is not here).
    pub async fn image_size(&self, reference: &str) -> Result<Option<u64>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(img.size.and_then(|s| u64::try_from(s).ok())),
            Err(e) if containers::not_found(&e) => Ok(None),
            Err(e) => Err(Error::engine(
                format!("inspecting image {reference}"),
                engine_message(&e),
            )),
        }
    }

    /// The architecture an image is for (`amd64`, `arm64`), as its config says.
    pub async fn image_arch(&self, reference: &str) -> Result<String> {
        let image = self.docker.inspect_image(reference).await.map_err(|e| {
            Error::engine(format!("inspecting image {reference}"), engine_message(&e))
        })?;
        Ok(image.architecture.unwrap_or_default())
    }

    pub async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<()> {
        let options = TagImageOptions {
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
        };
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| {
                Error::engine(
                    format!("tagging {source} as {repo}:{tag}"),
                    engine_message(&e),
                )
            })
    }

    /// Asks the registry (through the engine) for the digest of `reference`; None when the
    /// registry has no such tag. A refused login is [`Error::LoginRefused`].
    pub async fn remote_digest(
        &self,
        reference: &str,
        auth: &RegistryAuth,
    ) -> Result<Option<String>> {
        match self
            .docker
            .inspect_registry_image(reference, Some(auth.credentials()))
            .await
        {
            Ok(found) => Ok(found.descriptor.digest),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) => {
                let lower = message.to_ascii_lowercase();
                let refused = [
                    "unauthorized",
                    "authentication required",
                    "denied",
                    "no basic auth credentials",
                ];
                let missing = [
                    "manifest unknown",
                    "name unknown",
                    "not found",
                    "does not exist",
                ];
                if refused.iter().any(|p| lower.contains(p)) {
                    Err(Error::LoginRefused {
                        registry: auth.server.clone(),
                        message,
                    })
                } else if status_code == 404 || missing.iter().any(|p| lower.contains(p)) {
                    Ok(None)
                } else {
                    Err(Error::engine(
                        format!("asking the registry for {reference}"),
                        message,
                    ))
                }
            }
            Err(e) => Err(Error::engine(
                format!("asking the registry for {reference}"),
                engine_message(&e),
            )),
        }
    }

    /// Pushes `repo:tag` (a reference that names the registry) with `auth`.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        auth: &RegistryAuth,
        on_event: impl FnMut(&PushEvent),
    ) -> Result<PushOutcome> {
        let version = self.docker.client_version().to_string();
        push::push(&self.source.endpoint, &version, repo, tag, auth, on_event).await
    }
}

/// The tail of a build's output, kept to explain a failure.
#[derive(Default)]
struct BuildLog {
    step: Option<String>,
    tail: std::collections::VecDeque<String>,
}

impl BuildLog {
    const TAIL: usize = 12;

    fn push(&mut self, line: &str) {
        // The engine colours a step's stderr (ESC[91m); the hint shows plain text.
        let clean = strip_ansi_escapes::strip_str(line);
        let line = clean.trim_end();
        if line.is_empty() {
            return;
        }
        if line.starts_with("Step ") && line.contains(" : ") {
            self.step = Some(line.to_string());
            self.tail.clear();
        }
        if self.tail.len() == Self::TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    fn failure(&self, message: &str, platform: &str) -> Error {
        let message = message.trim().to_string();
        let lower = message.to_ascii_lowercase();
        if lower.contains("does not match the specified platform")
            || lower.contains("exec format error")
            || lower.contains("no matching manifest for")
        {
            return Error::PlatformMismatch {
                platform: platform.to_string(),
                message,
            };
        }
        if let Some(step) = &self.step {
            if step.contains(" : FROM ")
                && (lower.contains("pull access denied")
                    || lower.contains("manifest unknown")
                    || lower.contains("dial tcp")
                    || lower.contains("no such host")
                    || lower.contains("not found"))
            {
                let image = step
                    .split(" : FROM ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default()
                    .to_string();
                return Error::BaseImage { image, message };
            }
        }
        let tail: Vec<&str> = self.tail.iter().map(String::as_str).collect();
        let mut tail = if tail.is_empty() {
            String::from("(the step printed nothing)")
        } else {
            format!("last lines of the step:\n  {}", tail.join("\n  "))
        };
        if lower.contains("requires buildkit") {
            tail.push_str("\nthis step needs BuildKit: build with --builder buildkit");
        }
        Error::BuildStepFailed {
            step: self
                .step
                .clone()
                .unwrap_or_else(|| "the start of the build".to_string()),
            message,
            tail,
        }
    }
}

/// What a build is asked to do, whichever builder runs it.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub dockerfile: String,
    pub platform: String,
    pub target: Option<String>,
    pub args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    /// For `RUN --mount=type=secret` (BuildKit only), served through a session.
    pub secrets: Vec<session::BuildSecret>,
    /// The engine API's `networkmode` for RUN steps (`default`, `host`, `none`).
    pub network: &'static str,
    /// SSH agents for `RUN --mount=type=ssh` (BuildKit only): id and socket.
    pub ssh: HashMap<String, std::path::PathBuf>,
}

/// Whether an API version `1.NN` is at least `min`.
fn api_at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}
