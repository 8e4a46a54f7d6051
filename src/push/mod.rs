//! Step 2 of the pipeline: the image reaches ECR.
//!
//! The content tag is computed first (one read of the context, no engine work); when the
//! registry already has it, nothing is built or uploaded. Otherwise the local image with that
//! tag is used (or built), tagged with the registry's name, and pushed by the engine with
//! per-layer progress on stderr.

use std::collections::HashMap;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::build;
use crate::config::Config;
use crate::docker::{Engine, PushEvent};
use crate::error::Result;
use crate::interrupt;
use crate::output::Printer;

pub use crate::aws::ecr::{Ecr, ImageRegistry, Repository};

/// The result of `labship push`.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// `REGISTRY/REPOSITORY:CONTENT_TAG`, what an instance pulls.
    pub image_uri: String,
    pub digest: Option<String>,
    pub tags: Vec<String>,
    pub bytes_uploaded: u64,
    /// True when the registry already had the content tag and nothing was uploaded.
    pub skipped: bool,
    pub repository_created: bool,
    /// True when the image had to be built first.
    pub built: bool,
}

impl std::fmt::Display for PushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.image_uri)?;
        writeln!(
            f,
            "  digest    {}",
            self.digest.as_deref().unwrap_or("(not reported)")
        )?;
        writeln!(f, "  tags      {}", self.tags.join(", "))?;
        if self.skipped {
            write!(
                f,
                "  uploaded  nothing: the registry already has this image"
            )
        } else {
            write!(
                f,
                "  uploaded  {}",
                indicatif::HumanBytes(self.bytes_uploaded)
            )
        }
    }
}

pub async fn push(
    engine: &Engine,
    registry: &impl ImageRegistry,
    config: &Config,
    printer: &Printer,
) -> Result<PushReport> {
    let prepared = prepare(engine, registry, config, printer).await?;
    finish(engine, registry, prepared, printer).await
}

/// A push whose image is known (built when needed) and whose repository exists: what is left
/// is the upload. `up` launches the instance at this point, so that it boots while the
/// layers are still uploading (its user-data retries the pull until the tag exists).
pub struct Prepared {
    auth: crate::docker::RegistryAuth,
    local: String,
    remote: String,
    tag: String,
    /// The registry's digest when it already has the content tag (nothing to upload).
    existing: Option<String>,
    built: bool,
    repo: Repository,
}

impl Prepared {
    /// `REGISTRY/REPOSITORY:CONTENT_TAG`, what an instance pulls.
    pub fn image_uri(&self) -> String {
        format!("{}:{}", self.remote, self.tag)
    }

    /// The image's content tag (the build's, when this run built it).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The registry host (`host[:port]`) instances log in to.
    pub fn registry_host(&self) -> &str {
        &self.auth.server
    }

    /// True when the registry already has the image: `finish` uploads nothing.
    pub fn already_pushed(&self) -> bool {
        self.existing.is_some()
    }

    /// True when the image was built by this run.
    pub fn built(&self) -> bool {
        self.built
    }

    /// The local image the upload sends (`REPOSITORY:CONTENT_TAG` on this engine).
    pub fn local_image(&self) -> String {
        format!("{}:{}", self.local, self.tag)
    }
}

/// Login, registry check, build if needed, repository: everything before the upload.
pub async fn prepare(
    engine: &Engine,
    registry: &impl ImageRegistry,
    config: &Config,
    printer: &Printer,
) -> Result<Prepared> {
    let local = config.local_image().to_string();
    let (tag, _) = build::planned_tag(config)?;
    // Log in and ask the registry first: a refused login or an unchanged image stops here,
    // before anything is created or built.
    let auth = interrupt::cancellable("logging in to the registry", registry.login()).await?;
    let remote = format!("{}/{}", auth.server, config.push.repository);
    let existing = interrupt::cancellable(
        "asking the registry for the image",
        engine.remote_digest(&format!("{remote}:{tag}"), &auth),
    )
    .await?;

    let mut built = false;
    let mut tag = tag;
    if existing.is_some() {
        printer.note(format!(
            "{remote}:{tag} is already in the registry; nothing to upload"
        ));
    } else if engine.image_id(&format!("{local}:{tag}")).await?.is_none() {
        // Build before creating anything in AWS: a failed build leaves no empty repository.
        let report = interrupt::cancellable(
            "building the image",
            build::build_with_offline_fallback(engine, config, printer),
        )
        .await?;
        // The files may have changed since they were hashed; the build's tag is the truth.
        tag = report.content_tag;
        built = true;
    }
    // Not cancellable: a repository is made with its lifecycle policy, or not at all.
    interrupt::checkpoint("creating the ECR repository")?;
    let repo = registry
        .ensure_repository(&config.push.repository, &config.name)
        .await?;
    interrupt::made(repository_made(&repo.name, registry.region()));
    if repo.created {
        printer.note(format!(
            "Created ECR repository {} in {}",
            repo.name,
            registry.region()
        ));
    }
    Ok(Prepared {
        auth,
        local,
        remote,
        tag,
        existing,
        built,
        repo,
    })
}

/// The repository as [`interrupt::made`] lists it.
fn repository_made(name: &str, region: &str) -> String {
    format!("ECR repository {name} in {region} (`down --purge-images` removes it)")
}

/// The upload (or, when the registry has the image, moving `latest`).
pub async fn finish(
    engine: &Engine,
    registry: &impl ImageRegistry,
    prepared: Prepared,
    printer: &Printer,
) -> Result<PushReport> {
    let Prepared {
        auth,
        local,
        remote,
        tag,
        existing,
        built,
        repo,
    } = prepared;
    if let Some(digest) = existing {
        let tags = move_latest(engine, &auth, &local, &remote, &tag, &digest, printer).await?;
        return Ok(PushReport {
            image_uri: format!("{remote}:{tag}"),
            digest: Some(digest),
            tags,
            bytes_uploaded: 0,
            skipped: true,
            repository_created: repo.created,
            built: false,
        });
    }
    let pushed = interrupt::cancellable(
        "uploading the image",
        upload(engine, &auth, &local, &remote, &tag, printer),
    )
    .await;
    let outcome = match pushed {
        Ok(outcome) => outcome,
        Err(e) => {
            // Nothing half-made: a repository this run created and could not fill goes again
            // (not when interrupted: the next run fills it, and an instance may be waiting
            // for its image).
            if repo.created && !matches!(e, crate::error::Error::Interrupted { .. }) {
                registry.remove_repository(&repo.name).await;
                interrupt::gone(&repository_made(&repo.name, registry.region()));
            }
            return Err(e);
        }
    };
    Ok(PushReport {
        image_uri: format!("{remote}:{tag}"),
        digest: outcome.digest,
        tags: vec![tag, "latest".into()],
        bytes_uploaded: outcome.bytes_uploaded,
        skipped: false,
        repository_created: repo.created,
        built,
    })
}

/// Points `latest` at the content tag when the registry already has the image (a revert to
/// an earlier image moves `latest` back). Without the image on this engine `latest` cannot
/// be pushed; the report then lists only the content tag.
async fn move_latest(
    engine: &Engine,
    auth: &crate::docker::RegistryAuth,
    local: &str,
    remote: &str,
    tag: &str,
    digest: &str,
    printer: &Printer,
) -> Result<Vec<String>> {
    let latest = engine
        .remote_digest(&format!("{remote}:latest"), auth)
        .await?;
    if latest.as_deref() == Some(digest) {
        return Ok(vec![tag.to_string(), "latest".into()]);
    }
    let source = format!("{local}:{tag}");
    if engine.image_id(&source).await?.is_none() {
        printer.note(format!(
            "{remote}:latest points at another image, and {source} is not on this engine to move it"
        ));
        return Ok(vec![tag.to_string()]);
    }
    engine.tag(&source, remote, "latest").await?;
    engine.push(remote, "latest", auth, |_| {}).await?;
    Ok(vec![tag.to_string(), "latest".into()])
}

/// Tags the local image with the registry's name and pushes the content tag (with per-layer
/// bars) and `latest` (layers already there by then).
async fn upload(
    engine: &Engine,
    auth: &crate::docker::RegistryAuth,
    local: &str,
    remote: &str,
    tag: &str,
    printer: &Printer,
) -> Result<crate::docker::PushOutcome> {
    let source = format!("{local}:{tag}");
    engine.tag(&source, remote, tag).await?;
    engine.tag(&source, remote, "latest").await?;

    printer.note(format!("Pushing {remote}:{tag}"));
    let bars = printer.bars();
    let mut layer_bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut on_event = |event: &PushEvent| {
        let (Some(id), Some(status)) = (&event.id, &event.status) else {
            return;
        };
        let bar = layer_bars
            .entry(id.clone())
            .or_insert_with(|| printer.byte_bar(&bars, id, 0));
        match status.as_str() {
            "Pushing" => {
                if let Some(p) = &event.progress {
                    if let Some(total) = p.total {
                        bar.set_length(total);
                    }
                    if let Some(current) = p.current {
                        bar.set_position(current);
                    }
                }
                bar.set_message("pushing");
            }
            "Pushed" => bar.finish_with_message("pushed"),
            "Layer already exists" => bar.finish_with_message("exists"),
            other => bar.set_message(other.to_string()),
        }
    };
    let outcome = engine.push(remote, tag, auth, &mut on_event).await?;
    // `latest` points at the same manifest: the registry has every layer by now.
    engine.push(remote, "latest", auth, |_| {}).await?;
    let _ = bars.clear();
    Ok(outcome)
}
