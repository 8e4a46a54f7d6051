//! An offline Jupyter base image, for machines that can reach no image registry (air-gapped
//! networks, rate-limited or blocked registries) but can reach Debian's packages and PyPI:
//! a Debian rootfs made with debootstrap, a venv with the JupyterLab the default Dockerfile
//! pins, imported into the engine as `labship/jupyter-base:offline-<recipe hash>`.
//!
//! `labship base` makes it; `up --local` uses it by itself when the Dockerfile's default base
//! cannot be pulled. The recipe is `offline-base.sh`, embedded in the binary; the test rig
//! runs the same file, so tests and users get the same image.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::config::Config;
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::output::Printer;

const RECIPE: &str = include_str!("offline-base.sh");
/// debootstrap plus a pip install: about two minutes here; a slow mirror gets more.
const RECIPE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The tag the recipe produces: its content hash, so a changed recipe makes a new image.
pub fn offline_tag() -> String {
    let digest = hex::encode(Sha256::digest(RECIPE.as_bytes()));
    format!("labship/jupyter-base:offline-{}", &digest[..12])
}

/// Makes the offline base unless the engine has it; returns its tag.
pub async fn ensure_offline_base(engine: &Engine, printer: &Printer) -> Result<String> {
    let tag = offline_tag();
    if engine.image_id(&tag).await?.is_some() {
        return Ok(tag);
    }
    let fail = |message: String, hint: &str| Error::OfflineBase {
        message,
        hint: hint.to_string(),
    };
    if !cfg!(target_os = "linux") {
        return Err(fail(
            "it is made with debootstrap, which needs Linux".into(),
            "pull a base image instead, or pass one you have with --build-arg BASE_IMAGE=<image>",
        ));
    }
    let dir = tempfile::tempdir()
        .map_err(|e| fail(e.to_string(), "check that the temp folder is writable"))?;
    let script = dir.path().join("offline-base.sh");
    std::fs::write(&script, RECIPE)
        .map_err(|e| fail(e.to_string(), "check that the temp folder is writable"))?;
    printer.note(format!(
        "Making {tag} from Debian packages and PyPI (a few minutes, once)"
    ));
    let output = run_recipe(&script, printer).await?;
    let printed = output.trim();
    if printed != tag {
        return Err(fail(
            format!("the recipe printed `{printed}`, expected `{tag}`"),
            "run `labship base -v` to see the recipe's output",
        ));
    }
    Ok(tag)
}

async fn run_recipe(script: &Path, printer: &Printer) -> Result<String> {
    let fail = |message: String| {
        Error::OfflineBase {
        message,
        hint: "the recipe needs root (for debootstrap and chroot), Debian's package mirror and PyPI; run it as root, or pass a base image you have with --build-arg BASE_IMAGE=<image>".into(),
    }
    };
    let mut child = tokio::process::Command::new("bash")
        .arg(script)
        // The tag is the recipe's hash; a version override would change what it builds.
        .env_remove("JUPYTERLAB_VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if printer.is_quiet() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        // Its own process group: on a timeout the whole recipe (debootstrap, pip, docker
        // import) gets SIGTERM, so its EXIT trap unmounts /proc and removes the rootfs.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot run bash: {e}")))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout from the recipe".into()))?;
    let mut stderr = child.stderr.take();
    let pid = child.id();
    let run = async {
        let mut out = String::new();
        let mut err = String::new();
        let (read_out, read_err, status) = tokio::join!(
            stdout.read_to_string(&mut out),
            async {
                match stderr.as_mut() {
                    Some(s) => s.read_to_string(&mut err).await.map(|_| ()),
                    None => Ok(()),
                }
            },
            child.wait()
        );
        read_out.map_err(|e| fail(e.to_string()))?;
        read_err.map_err(|e| fail(e.to_string()))?;
        let status = status.map_err(|e| fail(e.to_string()))?;
        if status.success() {
            Ok(out)
        } else {
            let tail: Vec<&str> = err.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(fail(format!(
                "the recipe exited with {status}{}{}",
                if tail.is_empty() { "" } else { ":\n" },
                tail.join("\n")
            )))
        }
    };
    match tokio::time::timeout(RECIPE_TIMEOUT, run).await {
        Ok(result) => result,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", "--", &format!("-{pid}")])
                    .status();
            }
            Err(fail(format!(
                "the recipe did not finish within {} minutes (stopped)",
                RECIPE_TIMEOUT.as_secs() / 60
            )))
        }
    }
}

/// The default of `ARG BASE_IMAGE=...` in a Dockerfile, when it has one before its first FROM.
pub fn default_base_image(dockerfile: &str) -> Option<String> {
    for line in dockerfile.lines() {
        let line = line.trim();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("FROM ") {
            return None;
        }
        if let Some(rest) = upper.strip_prefix("ARG ") {
            if rest.trim_start().starts_with("BASE_IMAGE=") {
                let value = line[4..].trim_start()["BASE_IMAGE=".len()..].trim();
                let value = value.trim_matches('"').trim_matches('\'');
                return (!value.is_empty()).then(|| value.to_string());
            }
        }
    }
    None
}

/// The settings to build with on this engine: when the user chose no base image, the
/// Dockerfile's default base is not on the engine, and the offline base is, use the offline
/// base (so a machine that cannot pull keeps its tag stable from run to run).
pub async fn prefer_offline(engine: &Engine, config: &Config) -> Result<Config> {
    let mut config = config.clone();
    if config.build.args.contains_key("BASE_IMAGE") {
        return Ok(config);
    }
    let Some(default) = std::fs::read_to_string(&config.build.dockerfile)
        .ok()
        .and_then(|text| default_base_image(&text))
    else {
        return Ok(config);
    };
    if engine.image_id(&default).await?.is_some() {
        return Ok(config);
    }
    let offline = offline_tag();
    if engine.image_id(&offline).await?.is_some() {
        config.build.args.insert("BASE_IMAGE".into(), offline);
    }
    Ok(config)
}

/// Whether a failed pull of the base may be answered with the offline base.
pub fn may_fall_back(config: &Config) -> bool {
    !config.build.args.contains_key("BASE_IMAGE")
        && std::fs::read_to_string(&config.build.dockerfile)
            .ok()
            .and_then(|text| default_base_image(&text))
            .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_base_image_argument() {
        let df = "# comment\nARG BASE_IMAGE=public.ecr.aws/docker/library/python:3.12-slim-bookworm\nFROM ${BASE_IMAGE}\n";
        assert_eq!(
            default_base_image(df).as_deref(),
            Some("public.ecr.aws/docker/library/python:3.12-slim-bookworm")
        );
        assert_eq!(
            default_base_image("FROM python:3.12\nARG BASE_IMAGE=x\n"),
            None
        );
        assert_eq!(
            default_base_image("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
            None
        );
        assert_eq!(
            default_base_image("arg BASE_IMAGE=\"a/b:c\"\nFROM x"),
            Some("a/b:c".into())
        );
    }

    #[test]
    fn the_tag_follows_the_recipe() {
        let tag = offline_tag();
        assert!(tag.starts_with("labship/jupyter-base:offline-"));
        assert_eq!(tag.len(), "labship/jupyter-base:offline-".len() + 12);
    }
}
