//! Saving a deployment's workspace to a local folder (`labship backup`, `labship collect`,
//! and `down` of an EC2 instance without a data volume, whose disk goes with it), and adding
//! files to it without overwriting (`labship distribute`). The files go through
//! Jupyter's own contents API, over the URL
//! the deployment already serves to this machine, with the token in a header: no SSH, no
//! extra AWS permission, and exactly what the user sees in JupyterLab (hidden files and
//! checkpoints excluded, as Jupyter lists them).

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::hosts::{JupyterAccess, SavedWorkspace as Saved};
use crate::http::Endpoint;

/// One request may take this long (a large data file over a slow link).
const PER_REQUEST: Duration = Duration::from_secs(300);
/// Files larger than this are not downloaded (they are listed as skipped).
const MAX_FILE: u64 = 1 << 30;
/// Directory listings larger than this are refused.
const MAX_LISTING: usize = 32 << 20;

/// `ROOT/DEPLOYMENT-<UTC time>` (`labship-backups/lab-2026-12-01T031500Z`): a new folder per
/// save, in the order they were made.
pub fn stamped_dir(root: &Path, deployment: &str) -> PathBuf {
    let stamp = crate::hosts::rfc3339(crate::hosts::now_secs())
        .unwrap_or_default()
        .replace(':', "");
    root.join(format!("{deployment}-{stamp}"))
}

/// Where Jupyter serves the API, from the path of its login URL (`/lab`, `/tree`, `/` or a
/// base URL such as `/user/x/lab`).
pub fn api_base(url_path: &str) -> String {
    let p = url_path.trim_end_matches('/');
    let base = p
        .strip_suffix("/lab")
        .or_else(|| p.strip_suffix("/tree"))
        .unwrap_or(p);
    base.to_string()
}

/// Downloads every file Jupyter lists under its root into `dest`; with `only`, the files and
/// folders at those workspace paths alone.
pub async fn save_workspace(
    jupyter: &JupyterAccess,
    only: &[String],
    dest: &Path,
) -> Result<Saved, String> {
    let (endpoint, base, token) = (&jupyter.endpoint, jupyter.base.as_str(), &jupyter.token);
    let only: Vec<&str> = only.iter().map(|p| p.trim_matches('/')).collect();
    // A path is wanted when it is one of `only` or inside one; a folder is also visited when
    // one of `only` is inside it.
    let wanted = |path: &str| {
        only.is_empty()
            || only
                .iter()
                .any(|o| path == *o || path.starts_with(&format!("{o}/")))
    };
    let leads_to = |dir: &str| only.iter().any(|o| o.starts_with(&format!("{dir}/")));
    let mut saved = Saved {
        instance: jupyter.server.clone(),
        dir: dest.to_path_buf(),
        files: 0,
        bytes: 0,
        skipped: Vec::new(),
    };
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut queue = VecDeque::from([String::new()]);
    while let Some(dir) = queue.pop_front() {
        let listing = get_json(
            endpoint,
            &format!(
                "{base}/api/contents/{}?content=1&type=directory",
                encode_path(&dir)
            ),
            token,
            MAX_LISTING,
        )
        .await?;
        let entries = listing["content"].as_array().cloned().unwrap_or_default();
        for entry in entries {
            let Some(path) = entry["path"].as_str() else {
                continue;
            };
            let Some(rel) = safe_relative(path) else {
                saved
                    .skipped
                    .push(format!("{path}: not a plain relative path"));
                continue;
            };
            let is_dir = entry["type"].as_str() == Some("directory");
            if !(wanted(path) || is_dir && leads_to(path)) {
                continue;
            }
            match entry["type"].as_str() {
                Some("directory") => {
                    if wanted(path) {
                        std::fs::create_dir_all(dest.join(&rel)).map_err(|e| {
                            format!("cannot create {}: {e}", dest.join(&rel).display())
                        })?;
                    }
                    queue.push_back(path.to_string());
                }
                Some("file") | Some("notebook") => {
                    if entry["size"].as_u64().is_some_and(|s| s > MAX_FILE) {
                        saved.skipped.push(format!("{path}: larger than 1 GiB"));
                        continue;
                    }
                    let bytes = download(jupyter, path)
                        .await?
                        .ok_or_else(|| format!("{path}: gone while it was being saved"))?;
                    let target = dest.join(&rel);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                    }
                    std::fs::write(&target, &bytes)
                        .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
                    saved.files += 1;
                    saved.bytes += bytes.len() as u64;
                }
                other => saved.skipped.push(format!(
                    "{path}: unknown entry type {}",
                    other.unwrap_or("?")
                )),
            }
        }
    }
    let missing: Vec<&&str> = only.iter().filter(|o| !dest.join(o).exists()).collect();
    for o in missing {
        saved.skipped.push(format!("{o}: not in the workspace"));
    }
    Ok(saved)
}

/// What [`add_files`] (or a git sync) did in one workspace.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Added {
    /// Files written (they were not there).
    pub added: Vec<String>,
    /// Files replaced by a newer version (git: the workspace held an earlier version of the
    /// repository's, which no one had changed).
    pub updated: Vec<String>,
    /// Files already there, left as they were (a student's own work wins).
    pub kept: Vec<String>,
}

/// Adds each `(workspace path, bytes)` that the workspace does not have yet; a file of the
/// same name stays as it is. Folders on the way are made.
pub async fn add_files(
    jupyter: &JupyterAccess,
    files: &[(String, Vec<u8>)],
) -> Result<Added, String> {
    let mut done = Added::default();
    for (path, bytes) in files {
        let path = path.trim_matches('/');
        if exists(jupyter, path).await? {
            done.kept.push(path.to_string());
        } else {
            write_file(jupyter, path, bytes).await?;
            done.added.push(path.to_string());
        }
    }
    Ok(done)
}

/// What a Jupyter server did last, as the EC2 host's watchdog judges it: a kernel busy or
/// starting is activity now; else the newest `last_activity` of its kernels and terminals and
/// `last_modified` of the workspace's top-level entries (a saved notebook). Reading its API
/// (an open tab polling it) is not activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub busy: bool,
    /// Unix seconds of the newest activity (None: none seen).
    pub last: Option<i64>,
}

/// How long `status` waits for one answer of a server's API.
const ACTIVITY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// [`Activity`] of the server behind `jupyter`.
pub async fn activity(jupyter: &JupyterAccess) -> Result<Activity, String> {
    let mut newest: Option<i64> = None;
    let mut busy = false;
    for page in ["api/kernels", "api/terminals", "api/contents?content=1"] {
        let url = format!("{}/{page}", jupyter.base);
        // Terminals may be turned off (404): none, then. A server slow to answer is not
        // waited for long: `status` lists many.
        let Some(answer) = tokio::time::timeout(
            ACTIVITY_WAIT,
            get_json_if_any(&jupyter.endpoint, &url, &jupyter.token, MAX_LISTING),
        )
        .await
        .map_err(|_| format!("{url}: no answer within {}s", ACTIVITY_WAIT.as_secs()))??
        else {
            continue;
        };
        let entries = match &answer {
            serde_json::Value::Array(list) => list.clone(),
            other => other["content"].as_array().cloned().unwrap_or_default(),
        };
        for e in entries {
            busy |= matches!(e["execution_state"].as_str(), Some("busy" | "starting"));
            for key in ["last_activity", "last_modified"] {
                if let Some(t) = e[key].as_str().and_then(crate::hosts::unix_of) {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
        }
    }
    Ok(Activity { busy, last: newest })
}

/// Whether the workspace has something at `path`.
pub async fn exists(jupyter: &JupyterAccess, path: &str) -> Result<bool, String> {
    let (endpoint, base) = (&jupyter.endpoint, jupyter.base.as_str());
    if safe_relative(path).is_none() {
        return Err(format!("{path}: not a plain relative path"));
    }
    let url = format!("{base}/api/contents/{}?content=0", encode_path(path));
    let (status, _) = crate::http::get_bytes_at(
        endpoint,
        &url,
        Some(&jupyter.token),
        MAX_LISTING,
        PER_REQUEST,
    )
    .await
    .map_err(|e| format!("{}{}: {e}", endpoint.base_url(), strip_query(&url)))?;
    match status {
        200 => Ok(true),
        404 => Ok(false),
        other => Err(format!(
            "{}{} answered HTTP {other}",
            endpoint.base_url(),
            strip_query(&url)
        )),
    }
}

/// The bytes of the workspace file at `path` (None: there is none).
pub async fn read_file(jupyter: &JupyterAccess, path: &str) -> Result<Option<Vec<u8>>, String> {
    if safe_relative(path).is_none() {
        return Err(format!("{path}: not a plain relative path"));
    }
    download(jupyter, path).await
}

/// The bytes of one workspace file, through the contents API (base64), in one request
/// (None: there is none).
async fn download(jupyter: &JupyterAccess, path: &str) -> Result<Option<Vec<u8>>, String> {
    let url = format!(
        "{}/api/contents/{}?content=1&type=file&format=base64",
        jupyter.base,
        encode_path(path)
    );
    let Some(file) = get_json_if_any(
        &jupyter.endpoint,
        &url,
        &jupyter.token,
        usize::try_from(MAX_FILE * 4 / 3 + 4096).unwrap_or(usize::MAX),
    )
    .await?
    else {
        return Ok(None);
    };
    let raw = file["content"]
        .as_str()
        .unwrap_or_default()
        .replace('\n', "");
    base64::engine::general_purpose::STANDARD
        .decode(raw.as_bytes())
        .map(Some)
        .map_err(|e| format!("{path}: Jupyter sent undecodable content ({e})"))
}

/// Writes `bytes` at `path` (replacing a file there), making the folders on the way.
pub async fn write_file(jupyter: &JupyterAccess, path: &str, bytes: &[u8]) -> Result<(), String> {
    let (endpoint, base, token) = (&jupyter.endpoint, jupyter.base.as_str(), &jupyter.token);
    let path = path.trim_matches('/');
    if safe_relative(path).is_none() {
        return Err(format!("{path}: not a plain relative path"));
    }
    // Its folders first (Jupyter does not make them for a file).
    let parts: Vec<&str> = path.split('/').collect();
    for depth in 1..parts.len() {
        let folder = parts[..depth].join("/");
        put(
            endpoint,
            base,
            token,
            &folder,
            serde_json::json!({"type": "directory"}),
        )
        .await?;
    }
    let model = serde_json::json!({
        "type": "file",
        "format": "base64",
        "content": base64::engine::general_purpose::STANDARD.encode(bytes),
    });
    put(endpoint, base, token, path, model).await
}

/// Saves one contents model (a folder that exists already is left as it is).
async fn put(
    endpoint: &Endpoint,
    base: &str,
    token: &str,
    path: &str,
    model: serde_json::Value,
) -> Result<(), String> {
    let url = format!("{base}/api/contents/{}", encode_path(path));
    let (status, body) = crate::http::put_json_at(
        endpoint,
        &url,
        token,
        model.to_string().into_bytes(),
        64 * 1024,
        PER_REQUEST,
    )
    .await
    .map_err(|e| format!("{}{url}: {e}", endpoint.base_url()))?;
    if matches!(status, 200 | 201) {
        Ok(())
    } else {
        Err(format!(
            "{}{url} answered HTTP {status}: {}",
            endpoint.base_url(),
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        ))
    }
}

async fn get_json(
    endpoint: &Endpoint,
    path: &str,
    token: &str,
    limit: usize,
) -> Result<serde_json::Value, String> {
    get_json_if_any(endpoint, path, token, limit)
        .await?
        .ok_or_else(|| {
            format!(
                "{}{} answered HTTP 404",
                endpoint.base_url(),
                strip_query(path)
            )
        })
}

/// [`get_json`], with None for a 404 (nothing at that path).
async fn get_json_if_any(
    endpoint: &Endpoint,
    path: &str,
    token: &str,
    limit: usize,
) -> Result<Option<serde_json::Value>, String> {
    let base = endpoint.base_url();
    let (status, body) = crate::http::get_bytes_at(endpoint, path, Some(token), limit, PER_REQUEST)
        .await
        .map_err(|e| format!("{base}{}: {e}", strip_query(path)))?;
    match status {
        200 => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| format!("{base}{}: not JSON ({e})", strip_query(path))),
        404 => Ok(None),
        other => Err(format!("{base}{} answered HTTP {other}", strip_query(path))),
    }
}

fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// A Jupyter path as a relative path with no `..`, root or prefix components.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(p.to_path_buf())
}

/// What stays unescaped in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes each segment of a contents path (names may hold spaces, `#`, `?`, ...).
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_follows_the_login_path() {
        assert_eq!(api_base("/lab"), "");
        assert_eq!(api_base("/tree"), "");
        assert_eq!(api_base("/"), "");
        assert_eq!(api_base("/user/ann/lab"), "/user/ann");
    }

    #[test]
    fn paths_are_encoded_per_segment_and_checked() {
        assert_eq!(encode_path("my data/a b#1.csv"), "my%20data/a%20b%231.csv");
        assert_eq!(encode_path(""), "");
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("").is_none());
        assert_eq!(safe_relative("a/b.ipynb"), Some(PathBuf::from("a/b.ipynb")));
    }
}
