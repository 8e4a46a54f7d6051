//! The notebooks' git repository, fetched on this machine with the user's own `git` (and so
//! their credential helper or ssh-agent: no secret goes to a host) into a bare cache under
//! `~/.cache/labship/git/`, and read from there: the files of the chosen commit, and every
//! version a path ever had (so a workspace file that is one of them is known to be the
//! repository's, not a student's work).
//!
//! The git command line rather than a git library: the user's git already knows their
//! credentials, proxies and ssh setup, which a library would have to be taught; and gitoxide
//! or libgit2 would add a large dependency for a clone, a fetch and three plumbing commands.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use crate::config::GitSource;
use crate::error::{Error, Result};

/// A fetch may take this long (a large repository over a slow link).
const FETCH: Duration = Duration::from_secs(600);
/// The largest file taken from the repository (it goes through Jupyter's API, in memory).
const MAX_FILE: u64 = 256 << 20;

/// One file of the commit.
#[derive(Debug, Clone)]
pub struct RepoFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The commit's files, and every version each path had before.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub source: GitSource,
    pub commit: String,
    pub files: Vec<RepoFile>,
    /// Paths not taken (symbolic links, submodules, files over 256 MiB), with the reason.
    pub skipped: Vec<String>,
    /// Per path, the contents it had in earlier commits (by their SHA-256).
    earlier: HashMap<String, HashSet<[u8; 32]>>,
}

impl Snapshot {
    /// Whether `bytes` is what `path` held in this commit or an earlier one: the
    /// repository's own text, which a newer version may replace.
    pub fn is_repository_version(&self, path: &str, bytes: &[u8]) -> bool {
        let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
        self.earlier
            .get(path)
            .is_some_and(|all| all.contains(&digest))
    }
}

/// The cache folder of a repository URL.
fn cache_dir(url: &str) -> PathBuf {
    let base = crate::config::cache_dir().unwrap_or_else(|| std::env::temp_dir().join("labship"));
    let digest = sha2::Sha256::digest(url.as_bytes());
    base.join("git").join(hex::encode(&digest[..8]))
}

fn failed(source: &GitSource, reason: String, hint: &str) -> Error {
    Error::GitWorkspace {
        repository: crate::token::redact(&source.spec()),
        reason,
        hint: hint.to_string(),
    }
}

/// Runs `git ARGS` (in `dir` when given), bounded; its stdout.
async fn git(
    source: &GitSource,
    dir: Option<&Path>,
    args: &[&str],
    within: Duration,
) -> Result<Vec<u8>> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Never a prompt on a terminal labship holds (a missing credential is an error).
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        failed(
            source,
            format!("cannot run git: {e}"),
            "install git (labship fetches the repository with your own git, its credentials and ssh setup)",
        )
    })?;
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .map_err(|_| {
            failed(
                source,
                format!("git {} took longer than {}s", args[0], within.as_secs()),
                "check the URL and your network; a large repository may need a closer mirror",
            )
        })?
        .map_err(|e| failed(source, format!("git {}: {e}", args[0]), "run it again"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        return Err(failed(
            source,
            format!(
                "git {} failed: {}",
                args[0],
                crate::token::redact(last.last().copied().unwrap_or("(no message)"))
            ),
            "check the URL and that `git ls-remote URL` works in your shell (a private repository needs your credential helper or ssh-agent)",
        ));
    }
    Ok(out.stdout)
}

/// Fetches the repository into the cache (a bare clone, then fetches) and reads the commit
/// `source.reference` (default: the repository's HEAD) names.
pub async fn snapshot(source: &GitSource) -> Result<Snapshot> {
    let dir = cache_dir(&source.url);
    let url = if Path::new(&source.url).is_dir() {
        // A local path: absolute, so the cache finds it from anywhere.
        std::fs::canonicalize(&source.url)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| source.url.clone())
    } else {
        source.url.clone()
    };
    if dir.join("HEAD").exists() {
        git(
            source,
            Some(&dir),
            &[
                "fetch",
                "--prune",
                "--force",
                "--tags",
                &url,
                "+refs/heads/*:refs/heads/*",
                "+HEAD:refs/labship/head",
            ],
            FETCH,
        )
        .await?;
    } else {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                failed(
                    source,
                    format!("cannot create {}: {e}", parent.display()),
                    "check that the cache folder is writable (LABSHIP_CACHE_DIR)",
                )
            })?;
        }
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let partial_s = partial.display().to_string();
        git(
            source,
            None,
            &["clone", "--bare", "--quiet", "--", &url, &partial_s],
            FETCH,
        )
        .await?;
        git(
            source,
            Some(&partial),
            &["fetch", "--quiet", &url, "+HEAD:refs/labship/head"],
            FETCH,
        )
        .await?;
        std::fs::rename(&partial, &dir).map_err(|e| {
            failed(
                source,
                format!("cannot move the clone into {}: {e}", dir.display()),
                "run it again",
            )
        })?;
    }
    let wanted = match &source.reference {
        Some(r) => format!("{r}^{{commit}}"),
        None => "refs/labship/head^{commit}".to_string(),
    };
    let commit = git(
        source,
        Some(&dir),
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &wanted,
        ],
        Duration::from_secs(60),
    )
    .await
    .map_err(|_| {
        failed(
            source,
            format!(
                "it has no branch, tag or commit `{}`",
                source.reference.as_deref().unwrap_or("HEAD")
            ),
            "check the part after # (git ls-remote URL lists branches and tags)",
        )
    })?;
    let commit = String::from_utf8_lossy(&commit).trim().to_string();
    // The commit's tree: "MODE TYPE OID\tPATH\0" per entry.
    let tree = git(
        source,
        Some(&dir),
        &["ls-tree", "-r", "-z", "--full-tree", "-l", &commit],
        Duration::from_secs(60),
    )
    .await?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for entry in tree.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((meta, path)) = entry.split_once('\t') else {
            continue;
        };
        let parts: Vec<&str> = meta.split_whitespace().collect();
        let (mode, kind, oid, size) = match parts.as_slice() {
            [m, k, o, s] => (*m, *k, *o, *s),
            _ => continue,
        };
        if kind != "blob" {
            skipped.push(format!("{path}: a submodule"));
            continue;
        }
        if mode == "120000" {
            skipped.push(format!("{path}: a symbolic link"));
            continue;
        }
        if size.parse::<u64>().is_ok_and(|s| s > MAX_FILE) {
            skipped.push(format!("{path}: larger than 256 MiB"));
            continue;
        }
        let bytes = git(
            source,
            Some(&dir),
            &["cat-file", "blob", oid],
            Duration::from_secs(120),
        )
        .await?;
        files.push(RepoFile {
            path: path.to_string(),
            bytes,
        });
    }
    // Every version of every path in the commit's history: "... OLD NEW STATUS\tPATH".
    let log = git(
        source,
        Some(&dir),
        &[
            "log",
            "--format=",
            "--raw",
            "--no-abbrev",
            "--no-renames",
            "-z",
            &commit,
        ],
        Duration::from_secs(120),
    )
    .await?;
    let mut oids: HashMap<String, HashSet<String>> = HashMap::new();
    let fields: Vec<String> = log
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).to_string())
        .collect();
    let mut i = 0;
    while i + 1 < fields.len() {
        let meta = fields[i].trim_start_matches('\n');
        if let Some(meta) = meta.strip_prefix(':') {
            let parts: Vec<&str> = meta.split_whitespace().collect();
            let path = fields[i + 1].clone();
            if let [_, _, old, new, ..] = parts.as_slice() {
                let set = oids.entry(path).or_default();
                for o in [old, new] {
                    if o.chars().any(|c| c != '0') {
                        set.insert((*o).to_string());
                    }
                }
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    let mut earlier: HashMap<String, HashSet<[u8; 32]>> = HashMap::new();
    for file in &files {
        let set = earlier.entry(file.path.clone()).or_default();
        set.insert(sha2::Sha256::digest(&file.bytes).into());
        for oid in oids.get(&file.path).into_iter().flatten() {
            let old = git(
                source,
                Some(&dir),
                &["cat-file", "blob", oid],
                Duration::from_secs(120),
            )
            .await?;
            set.insert(sha2::Sha256::digest(&old).into());
        }
    }
    Ok(Snapshot {
        source: source.clone(),
        commit,
        files,
        skipped,
        earlier,
    })
}
