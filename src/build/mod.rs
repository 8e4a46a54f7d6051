//! Step 1 of the pipeline: the user's `docker/` folder becomes an image on the Docker engine.
//!
//! With BuildKit (the default on an engine that has it) the engine fetches the context file by
//! file through a session and asks only for what changed since its last build of the folder
//! (`sync.rs`); with the classic builder the context is streamed as a tar from a blocking
//! thread through a small bounded channel. Either way memory stays flat whatever the context's
//! size, and the image is tagged with a content tag derived from the context's hash and the
//! build inputs, plus `latest`.

pub mod base;
pub mod context;
pub mod dockerignore;
mod hashes;
mod labels;
mod sync;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Builder;
use crate::config::Config;
use crate::docker::{BuildRequest, Engine};
use crate::error::{Error, Result};
use crate::output::Printer;

pub use context::{Context, ContextSummary};

/// Chunks handed to the engine connection; a few of them in flight bound the memory used.
const CHUNK: usize = 512 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// The inputs besides the files that decide what an image is.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInputs {
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: String,
}

impl BuildInputs {
    pub fn from_config(config: &Config, context: &Context) -> Self {
        BuildInputs {
            dockerfile: context.dockerfile_name().to_string(),
            args: config.build.args.clone(),
            target: config.build.target.clone(),
            platform: config.build.platform.platform().to_string(),
        }
    }
}

/// The content tag: same files, Dockerfile, arguments, target and platform give the same tag.
pub fn content_tag(context_digest: &str, inputs: &BuildInputs) -> String {
    let mut sha = Sha256::new();
    sha.update(b"labship-content-tag-v1\n");
    sha.update(context_digest.as_bytes());
    sha.update(format!("\ndockerfile\0{}\n", inputs.dockerfile));
    for (k, v) in &inputs.args {
        sha.update(format!("arg\0{k}\0{v}\n"));
    }
    sha.update(format!(
        "target\0{}\n",
        inputs.target.as_deref().unwrap_or("")
    ));
    sha.update(format!("platform\0{}\n", inputs.platform));
    format!("ctx-{}", &hex::encode(sha.finalize())[..16])
}

/// The result of `labship build`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// The local image reference with its content tag.
    pub image: String,
    pub image_id: String,
    pub tags: Vec<String>,
    pub content_tag: String,
    pub platform: String,
    pub context_files: u64,
    pub context_bytes: u64,
    /// What of the context reached the engine: all of it with the classic builder, only
    /// what changed since the last build with BuildKit.
    pub sent_files: u64,
    pub sent_bytes: u64,
    /// `buildkit` or `classic`.
    pub builder: &'static str,
    pub seconds: f64,
}

impl std::fmt::Display for BuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.image)?;
        writeln!(f, "  id        {}", self.image_id)?;
        writeln!(f, "  tags      {}", self.tags.join(", "))?;
        writeln!(f, "  platform  {}", self.platform)?;
        writeln!(f, "  builder   {}", self.builder)?;
        write!(
            f,
            "  context   {} files, {}, sent {} files, {} ({:.1}s)",
            self.context_files,
            indicatif::HumanBytes(self.context_bytes),
            self.sent_files,
            indicatif::HumanBytes(self.sent_bytes),
            self.seconds
        )
    }
}

/// The OCI and labship labels every image carries. They hold no time stamp, so an unchanged
/// build gives the same image ID.
fn labels(config: &Config) -> HashMap<String, String> {
    HashMap::from([
        ("org.opencontainers.image.title".into(), config.name.clone()),
        (
            "org.opencontainers.image.description".into(),
            format!("JupyterLab workload `{}` built by labship", config.name),
        ),
        ("org.opencontainers.image.vendor".into(), "labship".into()),
        ("dev.labship.deployment".into(), config.name.clone()),
        (
            "dev.labship.tool".into(),
            format!("labship/{}", env!("CARGO_PKG_VERSION")),
        ),
    ])
}

/// Builds the image from the configured context and tags it `<content tag>` and `latest`.
pub async fn build(engine: &Engine, config: &Config, printer: &Printer) -> Result<BuildReport> {
    refuse_secrets_in_context(config)?;
    let secrets = read_secrets(&config.build.secrets)?;
    check_ssh_agents(&config.build.ssh)?;
    let session_only = if !secrets.is_empty() {
        Some((
            "Build secrets are given",
            "build secrets reach RUN --mount=type=secret",
        ))
    } else if !config.build.ssh.is_empty() {
        Some((
            "An SSH agent is given",
            "SSH agents reach RUN --mount=type=ssh",
        ))
    } else {
        None
    };
    let builder = match (config.build.builder, session_only) {
        (Builder::Classic, Some((_, reach))) => {
            return Err(Error::InvalidSetting {
                what: "builder",
                value: "classic".into(),
                reason: format!("{reach}, which only BuildKit has"),
                hint: "build with --builder buildkit (or auto, the default)".into(),
            })
        }
        (Builder::Auto, Some((given, _))) => {
            printer.note(format!("{given}: building with BuildKit"));
            Builder::Buildkit
        }
        (builder, None) => builder,
        (Builder::Buildkit, Some(_)) => Builder::Buildkit,
    };
    let builder = match builder {
        Builder::Auto if engine.has_buildkit().await? => Builder::Buildkit,
        Builder::Auto => {
            let dockerfile = std::fs::read_to_string(&config.build.dockerfile).unwrap_or_default();
            if let Some(why) = buildkit_syntax(&dockerfile) {
                printer.note(format!(
                    "The Dockerfile uses {why}, which needs BuildKit, and this engine has none: trying the classic builder"
                ));
            }
            Builder::Classic
        }
        chosen => chosen,
    };
    match build_with(engine, config, builder, &secrets, printer).await {
        // An engine that says it has BuildKit but turns it away: once more, classic (unless
        // secrets need BuildKit).
        Err(Error::BuildKitRefused { message })
            if config.build.builder == Builder::Auto && session_only.is_none() =>
        {
            printer.note(format!(
                "The engine refused BuildKit ({message}): building with the classic builder"
            ));
            build_with(engine, config, Builder::Classic, &[], printer).await
        }
        other => other,
    }
}

/// Each `--ssh` agent must be a socket that is there now: a key file is refused with the way
/// to use it (an agent holds it), before anything is built.
fn check_ssh_agents(agents: &[crate::config::SshSpec]) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    for agent in agents {
        let value = format!("{}={}", agent.id, agent.socket.display());
        match std::fs::metadata(&agent.socket) {
            Ok(meta) if meta.file_type().is_socket() => {}
            Ok(_) => {
                return Err(Error::InvalidSetting {
                    what: "ssh",
                    value,
                    reason: "it is not an agent socket (labship forwards an ssh-agent; it does not read key files)".into(),
                    hint: format!(
                        "add the key to an agent (`eval $(ssh-agent)`, `ssh-add {}`) and pass --ssh {}",
                        agent.socket.display(),
                        agent.id
                    ),
                })
            }
            Err(e) => {
                return Err(Error::InvalidSetting {
                    what: "ssh",
                    value,
                    reason: format!("the agent socket cannot be reached: {e}"),
                    hint: "start an agent (`eval $(ssh-agent)`, then `ssh-add`) or give the socket's path".into(),
                })
            }
        }
    }
    Ok(())
}

/// A secret file the context would send reaches the engine (and `COPY .` puts it in the
/// image) whatever `--secret` does: refused, naming the way out.
fn refuse_secrets_in_context(config: &Config) -> Result<()> {
    use crate::config::SecretSource;
    let files: Vec<&crate::config::SecretSpec> = config
        .build
        .secrets
        .iter()
        .filter(|s| matches!(s.source, SecretSource::File(_)))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    let context = Context::open(&config.build.context, &config.build.dockerfile)?;
    for spec in files {
        if let SecretSource::File(path) = &spec.source {
            if context.sends(path) {
                return Err(Error::InvalidSetting {
                    what: "secret",
                    value: format!("id={},src={}", spec.id, path.display()),
                    reason: "the file is inside the build context, so it would be sent with it (and `COPY .` would put it in the image)".into(),
                    hint: format!(
                        "move it out of {}, or list it in its .dockerignore",
                        config.build.context.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The secrets' values, read now (a missing file or variable is an error naming it).
fn read_secrets(
    specs: &[crate::config::SecretSpec],
) -> Result<Vec<crate::docker::session::BuildSecret>> {
    use crate::config::SecretSource;
    specs
        .iter()
        .map(|spec| {
            let value = match &spec.source {
                SecretSource::File(path) => std::fs::read(path).map_err(|e| Error::InvalidSetting {
                    what: "secret",
                    value: format!("id={},src={}", spec.id, path.display()),
                    reason: format!("cannot read the file: {e}"),
                    hint: "check the path (relative paths are from labship.toml's folder, or the current one on the command line)".into(),
                })?,
                SecretSource::Env(var) => std::env::var(var)
                    .map_err(|_| Error::InvalidSetting {
                        what: "secret",
                        value: format!("id={},env={var}", spec.id),
                        reason: format!("the environment variable {var} is not set (or not UTF-8)"),
                        hint: format!(
                            "export {var} before the build, or give the secret as src=FILE"
                        ),
                    })?
                    .into_bytes(),
            };
            Ok(crate::docker::session::BuildSecret::new(&spec.id, value))
        })
        .collect()
}

async fn build_with(
    engine: &Engine,
    config: &Config,
    builder: Builder,
    secrets: &[crate::docker::session::BuildSecret],
    printer: &Printer,
) -> Result<BuildReport> {
    let started = Instant::now();
    let mut context = Context::open(&config.build.context, &config.build.dockerfile)?;
    let inputs = BuildInputs::from_config(config, &context);
    let repo = config.local_image();
    // Labels ride in the Dockerfile when it can be rewritten safely (see `labels`).
    let mut image_labels: Vec<(String, String)> = labels(config).into_iter().collect();
    image_labels.sort();
    let dockerfile_text =
        std::fs::read_to_string(context.dockerfile_path()).map_err(|source| Error::ContextIo {
            path: context.dockerfile_path().to_path_buf(),
            source,
        })?;
    let api_labels =
        match labels::with_labels(&dockerfile_text, &image_labels, inputs.target.as_deref()) {
            Some(text) => {
                context.override_dockerfile(text.into_bytes());
                HashMap::new()
            }
            None => image_labels.into_iter().collect(),
        };
    printer.note(format!(
        "Building {repo} for {} from {} (engine: {}, builder: {})",
        inputs.platform,
        config.build.context.display(),
        engine.source().origin,
        builder_name(builder)
    ));

    let request = BuildRequest {
        dockerfile: inputs.dockerfile.clone(),
        platform: inputs.platform.clone(),
        target: inputs.target.clone(),
        args: inputs.args.clone().into_iter().collect(),
        labels: api_labels,
        secrets: secrets.to_vec(),
        network: config.build.network.api_value(),
        ssh: config
            .build
            .ssh
            .iter()
            .map(|a| (a.id.clone(), a.socket.clone()))
            .collect(),
    };
    // Untagged until it passes the checks below; then tagged with its content tag and latest.
    let (built, summary, sent) = if builder == Builder::Buildkit {
        build_synced(engine, context, request, printer).await?
    } else {
        build_tar(engine, context, request, printer).await?
    };
    // BuildKit looks a base image up for the platform asked for; one the engine has only for
    // its own platform is then "not found", which is the platform's fault, not the name's.
    let built = match built {
        Err(Error::BaseImage { image, message }) if builder == Builder::Buildkit => {
            let native = engine.native_arch().await.unwrap_or_default();
            if !native.is_empty() && !inputs.platform.ends_with(&format!("/{native}")) {
                Err(Error::PlatformMismatch {
                    platform: inputs.platform.clone(),
                    message: format!(
                        "this linux/{native} engine has no {image} for {} and could not fetch one ({message})",
                        inputs.platform
                    ),
                })
            } else {
                Err(Error::BaseImage { image, message })
            }
        }
        other => other,
    };
    let built = built.map_err(|e| match e {
        // The step line shows `FROM ${BASE_IMAGE}`; name the image that was really asked for.
        Error::BaseImage { image, message } if image.contains('$') => Error::BaseImage {
            image: resolve_base(config).unwrap_or(image),
            message,
        },
        other => other,
    })?;

    // The classic builder takes a local base image of another architecture without a word
    // and labels the result with the base's architecture: check, so a laptop never ships an
    // image the instance cannot run ("exec format error").
    let arch = engine.image_arch(&built.image_id).await?;
    if crate::config::Arch::parse_platform(&arch) != Some(config.build.platform) {
        return Err(Error::PlatformMismatch {
            platform: inputs.platform.clone(),
            message: format!(
                "the engine produced a linux/{arch} image (its base image is {arch}, and the engine has no emulation to build for another platform)"
            ),
        });
    }

    let tag = content_tag(&summary.digest, &inputs);
    engine.tag(&built.image_id, repo, &tag).await?;
    engine.tag(&built.image_id, repo, "latest").await?;
    Ok(BuildReport {
        image: format!("{repo}:{tag}"),
        image_id: built.image_id,
        tags: vec![tag.clone(), "latest".into()],
        content_tag: tag,
        platform: inputs.platform,
        context_files: summary.files,
        context_bytes: summary.bytes,
        sent_files: sent.0,
        sent_bytes: sent.1,
        builder: builder_name(builder),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A build's outcome, the context it hashed, and what of it was sent (files, bytes).
type Outcome = (Result<crate::docker::Built>, ContextSummary, (u64, u64));

/// BuildKit fetches the context through the session, only what its copy from the last build
/// lacks; the content tag is hashed meanwhile on another thread (from the hash cache).
async fn build_synced(
    engine: &Engine,
    context: Context,
    mut request: BuildRequest,
    printer: &Printer,
) -> Result<Outcome> {
    let dockerfile = context.synced_dockerfile()?;
    request.dockerfile = dockerfile.name.clone();
    let shared_key = context.shared_key();
    let synced = std::sync::Arc::new(context.synced());
    let context = std::sync::Arc::new(context);
    let hashing = {
        let context = std::sync::Arc::clone(&context);
        tokio::task::spawn_blocking(move || context.summarise())
    };
    let mut view = view::BuildView::new(printer);
    let built = engine
        .build_synced(
            &request,
            synced,
            std::sync::Arc::new(dockerfile),
            shared_key,
            |event| view.event(event),
        )
        .await;
    view.close();
    let summary = hashing
        .await
        .map_err(|e| Error::engine("hashing the build context", e))??;
    let (built, sent) = match built {
        Ok((built, sent)) => (Ok(built), sent),
        Err(e) => (Err(e), (0, 0)),
    };
    // BuildKit read the files while they were hashed: a file saved meanwhile (an autosave)
    // could give the image a tag that describes other bytes. Hashed again (from the hash
    // cache, so cheap); a change means the build is not trusted.
    if built.is_ok() {
        let again = {
            let context = std::sync::Arc::clone(&context);
            tokio::task::spawn_blocking(move || context.summarise())
                .await
                .map_err(|e| Error::engine("hashing the build context", e))??
        };
        if again.digest != summary.digest {
            return Err(Error::ContextChanged {
                path: context.root().to_path_buf(),
            });
        }
    }
    if built.is_ok() {
        printer.note(if sent.1 < summary.bytes {
            format!(
                "Sent {} of the context's {} files ({} of {}); the engine already had the rest or did not ask for it",
                sent.0,
                summary.files,
                indicatif::HumanBytes(sent.1),
                indicatif::HumanBytes(summary.bytes)
            )
        } else {
            format!(
                "Sent the whole context: {} files, {}",
                sent.0,
                indicatif::HumanBytes(sent.1)
            )
        });
    }
    Ok((built, summary, sent))
}

/// The context as a tar in the request body for the classic builder, streamed from a blocking
/// thread and hashed on the way.
async fn build_tar(
    engine: &Engine,
    context: Context,
    request: BuildRequest,
    printer: &Printer,
) -> Result<Outcome> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter::new(tx.clone());
        let result = context.write_tar(&mut out).and_then(|summary| {
            out.flush().map_err(|source| Error::ContextIo {
                path: std::path::PathBuf::from("(engine connection)"),
                source,
            })?;
            Ok(summary)
        });
        if let Err(e) = &result {
            // Make the upload fail too, so the engine does not build a truncated context.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let built = engine
        .build(&request, body, |line| printer.relay(line))
        .await;
    let written = writer
        .await
        .map_err(|e| Error::engine("streaming the build context", e))?;
    match written {
        Ok(summary) => {
            let sent = (summary.files, summary.bytes);
            Ok((built, summary, sent))
        }
        // The engine hung up mid-upload: its own error (a failed FROM, say) says why.
        Err(e) if is_disconnect(&e) => Err(built.err().unwrap_or(e)),
        // A context that could not be read explains the failed upload better than the engine.
        Err(e) => Err(e),
    }
}

/// What in a Dockerfile only BuildKit builds: `RUN --mount`, a `# syntax=` frontend,
/// here-documents (`RUN <<EOF`), `COPY --link`/`--chmod`/`--parents`; named when an engine
/// without BuildKit is asked to build it.
pub fn buildkit_syntax(dockerfile: &str) -> Option<&'static str> {
    if dockerfile.lines().any(|l| {
        let l = l.trim().to_ascii_lowercase();
        l.starts_with("# syntax=") || l.starts_with("#syntax=")
    }) {
        return Some("a `# syntax=` frontend");
    }
    // Instructions with their continuation lines joined, comments dropped.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for raw in dockerfile.lines() {
        let line = raw.trim();
        if line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions.push(current);
    for instruction in instructions {
        let lower = instruction.to_ascii_lowercase();
        let mut words = lower.split_whitespace();
        let name = words.next().unwrap_or_default();
        let flags: Vec<&str> = words
            .take_while(|w| w.starts_with("--") || w.starts_with("<<"))
            .collect();
        let has = |prefixes: &[&str]| {
            flags
                .iter()
                .any(|f| prefixes.iter().any(|p| f.starts_with(p)))
        };
        match name {
            "run" if has(&["--mount"]) => return Some("`RUN --mount`"),
            "run" if has(&["--network", "--security"]) => {
                return Some("`RUN --network`/`--security`")
            }
            "run" | "copy" if has(&["<<"]) => return Some("a here-document"),
            "copy" | "add" if has(&["--link", "--parents", "--exclude", "--chmod"]) => {
                return Some("`COPY --link`/`--chmod`/`--parents`/`--exclude`")
            }
            _ => {}
        }
    }
    None
}

/// The builder as reports name it.
fn builder_name(builder: Builder) -> &'static str {
    match builder {
        Builder::Classic => "classic",
        Builder::Buildkit | Builder::Auto => "buildkit",
    }
}

/// Builds; when the base image cannot be pulled and the user chose none, makes the offline
/// Jupyter base (Debian packages and PyPI) and builds on it instead, saying so.
pub async fn build_with_offline_fallback(
    engine: &Engine,
    config: &Config,
    printer: &Printer,
) -> Result<BuildReport> {
    match build(engine, config, printer).await {
        Err(Error::BaseImage { image, message }) if crate::build::base::may_fall_back(config) => {
            printer.note(format!(
                "Cannot pull the base image {image} ({message}).\nUsing an offline Jupyter base made from Debian packages and PyPI instead (`labship base` makes it on its own)."
            ));
            let base = crate::build::base::ensure_offline_base(engine, printer).await?;
            let mut config = config.clone();
            config.build.args.insert("BASE_IMAGE".into(), base);
            build(engine, &config, printer).await
        }
        other => other,
    }
}

/// The content tag of the configured context without building (one read of the files).
pub fn planned_tag(config: &Config) -> Result<(String, ContextSummary)> {
    let context = Context::open(&config.build.context, &config.build.dockerfile)?;
    let summary = context.summarise()?;
    let inputs = BuildInputs::from_config(config, &context);
    Ok((content_tag(&summary.digest, &inputs), summary))
}

/// The base image a `FROM ${BASE_IMAGE}` resolves to: the build argument, or the Dockerfile's default.
fn resolve_base(config: &Config) -> Option<String> {
    config.build.args.get("BASE_IMAGE").cloned().or_else(|| {
        std::fs::read_to_string(&config.build.dockerfile)
            .ok()
            .and_then(|text| crate::build::base::default_base_image(&text))
    })
}

fn is_disconnect(e: &Error) -> bool {
    matches!(e, Error::ContextIo { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

/// A `Write` that hands fixed-size chunks to the async side; blocks when the engine is slower
/// than the disk, which is the back-pressure that keeps memory flat.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the Docker engine stopped reading the build context",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl From<dockerignore::IgnoreError> for Error {
    fn from(e: dockerignore::IgnoreError) -> Self {
        Error::DockerIgnore {
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn buildkit_syntax_is_recognised_and_nothing_else() {
        use super::buildkit_syntax;
        assert!(buildkit_syntax(
            "FROM x\nRUN --mount=type=cache,target=/root/.cache/pip pip install -r r.txt\n"
        )
        .is_some());
        assert!(buildkit_syntax("# syntax=docker/dockerfile:1\nFROM x\n").is_some());
        assert!(buildkit_syntax("FROM x\nRUN <<EOF\necho hi\nEOF\n").is_some());
        assert!(buildkit_syntax("FROM x\nCOPY --link a /a\n").is_some());
        assert!(
            buildkit_syntax("FROM x\nRUN \\\n  --mount=type=cache,target=/c \\\n  true\n")
                .is_some()
        );
        assert!(buildkit_syntax("FROM x\nCOPY --chmod=755 a /a\n").is_some());
        assert!(buildkit_syntax("FROM x\n# RUN --mount=type=cache in a comment\nRUN echo --mount\nCOPY --chown=1000 a /a\n").is_none());
    }

    use super::*;

    fn inputs() -> BuildInputs {
        BuildInputs {
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::from([("BASE_IMAGE".into(), "python:3.12-slim".into())]),
            target: None,
            platform: "linux/amd64".into(),
        }
    }

    #[test]
    fn content_tag_is_stable_and_sensitive_to_every_input() {
        let base = content_tag("abc", &inputs());
        assert_eq!(base, content_tag("abc", &inputs()));
        assert!(base.starts_with("ctx-") && base.len() == 20, "{base}");
        let mut changed = vec![content_tag("abd", &inputs())];
        let mut i = inputs();
        i.dockerfile = "other/Dockerfile".into();
        changed.push(content_tag("abc", &i));
        let mut i = inputs();
        i.args.insert("X".into(), "1".into());
        changed.push(content_tag("abc", &i));
        let mut i = inputs();
        i.target = Some("dev".into());
        changed.push(content_tag("abc", &i));
        let mut i = inputs();
        i.platform = "linux/arm64".into();
        changed.push(content_tag("abc", &i));
        for c in &changed {
            assert_ne!(c, &base);
        }
        let unique: std::collections::BTreeSet<_> = changed.iter().collect();
        assert_eq!(unique.len(), changed.len());
    }

    #[test]
    fn channel_writer_chunks_and_flushes() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut w = ChannelWriter::new(tx);
        let data = vec![7u8; CHUNK * 2 + 10];
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        drop(w);
        let mut sizes = Vec::new();
        while let Ok(Ok(chunk)) = rx.try_recv() {
            sizes.push(chunk.len());
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
    }
}
