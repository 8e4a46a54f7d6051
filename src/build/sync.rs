//! The build context as BuildKit's file sync sees it: two folders served through the session
//! (`docker::filesync` speaks the protocol; this module decides which files).
//!
//! - `context`: the context folder minus `.dockerignore`, as the docker CLI serves it: an
//!   ignored Dockerfile or `.dockerignore` is not part of it (BuildKit gets the Dockerfile from
//!   the other folder), so `COPY . /x` copies exactly what `docker build` copies.
//! - `dockerfile`: one file, the Dockerfile as sent (labship's labels added), under its own
//!   name. Its time stamp is derived from its text, so BuildKit never keeps a stale copy when
//!   only the added labels changed.
//!
//! The engine narrows each request with include and exclude patterns (the Dockerfile frontend
//! first fetches only `.dockerignore`, then the context without what it ignores); they are
//! applied with fsutil's rules: a folder left out is still walked when a pattern may match
//! below it, and is sent, before the first entry under it that is.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::dockerignore::DockerIgnore;
use crate::docker::filesync::{EntryKind, Source, SyncEntry, SyncedDir, Wanted};

/// The context folder, filtered by its `.dockerignore`.
pub struct SyncedContext {
    pub(super) root: PathBuf,
    pub(super) ignore: DockerIgnore,
}

/// The Dockerfile, alone in a folder.
pub struct SyncedDockerfile {
    pub(super) name: String,
    pub(super) text: Bytes,
    pub(super) mode: u32,
    pub(super) mtime_ns: i64,
}

impl SyncedDir for SyncedDockerfile {
    fn list(&self, _wanted: &Wanted) -> Result<Vec<SyncEntry>, String> {
        Ok(vec![SyncEntry {
            path: self.name.clone(),
            kind: EntryKind::File(Source::Memory(self.text.clone())),
            mode: self.mode,
            size: self.text.len() as u64,
            mtime_ns: self.mtime_ns,
        }])
    }
}

impl SyncedDockerfile {
    pub(super) fn new(path: &Path, text: Vec<u8>) -> std::io::Result<SyncedDockerfile> {
        let meta = std::fs::metadata(path)?;
        let name = path
            .file_name()
            .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned());
        // The file's second, plus nanoseconds from the text: a label change alone changes it.
        let sha = Sha256::digest(&text);
        let nanos = u32::from_be_bytes([sha[0], sha[1], sha[2], sha[3]]) % 1_000_000_000;
        Ok(SyncedDockerfile {
            name,
            text: Bytes::from(text),
            mode: meta.permissions().mode() & 0o7777,
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(nanos)),
        })
    }
}

impl SyncedDir for SyncedContext {
    fn list(&self, wanted: &Wanted) -> Result<Vec<SyncEntry>, String> {
        let includes = Includes::new(&self.root, wanted)?;
        let asked = if wanted.exclude.is_empty() {
            None
        } else {
            Some(
                DockerIgnore::parse(&as_lines(&wanted.exclude))
                    .map_err(|e| format!("the engine's exclude patterns: {e}"))?,
            )
        };
        let excluded = |rel: &str| {
            self.ignore.is_excluded(rel) || asked.as_ref().is_some_and(|a| a.is_excluded(rel))
        };
        // A folder all of whose contents stay excluded whatever comes below.
        let prune = |rel: &str| {
            !self.ignore.may_reinclude_under(rel)
                || asked.as_ref().is_some_and(|a| !a.may_reinclude_under(rel))
        };

        let mut out = Vec::new();
        // Folders walked but not sent (yet): sent before the first entry below them that is.
        let mut held: Vec<(usize, SyncEntry)> = Vec::new();
        let mut walker = super::context::sorted_walk(&self.root);
        while let Some(item) = walker.next() {
            let item = match item {
                Ok(item) => item,
                // Removed while the walk went on: as fsutil does, it is simply not there.
                Err(e)
                    if e.io_error().map(std::io::Error::kind)
                        == Some(std::io::ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => return Err(e.to_string()),
            };
            let depth = item.depth();
            while held.last().is_some_and(|(d, _)| *d >= depth) {
                held.pop();
            }
            let rel_path = item.path().strip_prefix(&self.root).unwrap_or(item.path());
            let Some(rel) = rel_path.to_str().map(str::to_string) else {
                return Err(format!(
                    "{} has a name that is not UTF-8, which BuildKit's file sync cannot carry; rename it or list it in .dockerignore",
                    item.path().display()
                ));
            };
            let is_dir = item.file_type().is_dir();
            let included = includes.as_ref().is_none_or(|i| i.matches(&rel));
            let left_out = excluded(&rel);
            if is_dir {
                let no_include_below = includes
                    .as_ref()
                    .is_some_and(|i| !included && !i.may_match_under(&rel));
                if no_include_below || (left_out && prune(&rel)) {
                    walker.skip_current_dir();
                    continue;
                }
            }
            if (!included || left_out) && !is_dir {
                continue;
            }
            let Some(entry) = entry(item.path(), rel, &item)? else {
                continue;
            };
            if !included || left_out {
                held.push((depth, entry));
                continue;
            }
            out.extend(held.drain(..).map(|(_, e)| e));
            out.push(entry);
        }
        Ok(out)
    }
}

/// One walked entry as a [`SyncEntry`]; None for what cannot be sent (sockets, FIFOs,
/// devices; the docker CLI skips them too).
fn entry(path: &Path, rel: String, item: &walkdir::DirEntry) -> Result<Option<SyncEntry>, String> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let meta = match item.metadata() {
        Ok(meta) => meta,
        Err(e) if e.io_error().is_some_and(gone) => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let file_type = item.file_type();
    let kind = if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_file() {
        EntryKind::File(Source::Disk(path.to_path_buf()))
    } else if file_type.is_symlink() {
        let target = match std::fs::read_link(path) {
            Ok(target) => target,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        EntryKind::Symlink(target.to_string_lossy().into_owned())
    } else {
        return Ok(None);
    };
    Ok(Some(SyncEntry {
        path: rel,
        kind,
        mode: meta.mode() & 0o7777,
        size: meta.len(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
    }))
}

/// The engine's include patterns (and the paths it follows, with their symlinks' targets).
struct Includes {
    matcher: DockerIgnore,
    /// Each pattern's literal part (without a trailing `/*` or `/**`), when no pattern has a
    /// wildcard in it; then a folder none of them lies under can be skipped.
    prefixes: Option<Vec<String>>,
}

impl Includes {
    fn new(root: &Path, wanted: &Wanted) -> Result<Option<Includes>, String> {
        if wanted.include.is_empty() && wanted.follow.is_empty() {
            return Ok(None);
        }
        let mut patterns: Vec<String> = wanted.include.iter().map(|p| clean(p)).collect();
        for path in &wanted.follow {
            patterns.extend(follow(root, &clean(path)));
        }
        // The root itself (`.` or `/`) asks for everything, as fsutil's dedupePaths reads it.
        if patterns.iter().any(String::is_empty) {
            return Ok(None);
        }
        patterns.sort();
        patterns.dedup();
        let matcher = DockerIgnore::parse(&as_lines(&patterns))
            .map_err(|e| format!("the engine's include patterns: {e}"))?;
        let literal: Option<Vec<String>> = patterns
            .iter()
            .map(|p| {
                let p = p
                    .strip_suffix("/**")
                    .or_else(|| p.strip_suffix("/*"))
                    .unwrap_or(p);
                (!p.contains(['*', '[', ']', '?', '^', '\\'])).then(|| p.to_string())
            })
            .collect();
        Ok(Some(Includes {
            matcher,
            prefixes: literal,
        }))
    }

    /// The path or a folder above it matches.
    fn matches(&self, rel: &str) -> bool {
        self.matcher.is_excluded(rel)
    }

    /// Something below the folder may match.
    fn may_match_under(&self, dir: &str) -> bool {
        let below = format!("{dir}/");
        self.prefixes
            .as_ref()
            .is_none_or(|prefixes| prefixes.iter().any(|p| format!("{p}/").starts_with(&below)))
    }
}

/// A pattern as fsutil cleans it: no leading `/` or `./`, no trailing `/`.
fn clean(pattern: &str) -> String {
    let mut p = pattern.trim();
    while let Some(rest) = p.strip_prefix("./").or_else(|| p.strip_prefix('/')) {
        p = rest;
    }
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Patterns given as a list, as `.dockerignore` lines: a leading `#` would make a comment of
/// one, so it is written `./#...` (which the parser cleans back to the same pattern).
fn as_lines(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| {
            if p.trim_start().starts_with('#') {
                format!("./{}", p.trim_start())
            } else {
                p.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A followed path and every symlink met on the way, resolved as fsutil's `FollowLinks`
/// does: each component is checked, a symlink's target (inside the root) replaces the part
/// read so far and is resolved again, so `configs -> shared/configs` followed by
/// `configs/app.yaml` brings `configs`, `shared/configs/app.yaml` and the folders to it.
fn follow(root: &Path, path: &str) -> Vec<String> {
    let mut out = vec![path.to_string()];
    let mut pending = vec![path.to_string()];
    let mut hops = 0;
    while let Some(current) = pending.pop() {
        let parts: Vec<&str> = current.split('/').filter(|p| !p.is_empty()).collect();
        for i in 0..parts.len() {
            let prefix = parts[..=i].join("/");
            let Ok(target) = std::fs::read_link(root.join(&prefix)) else {
                continue;
            };
            hops += 1;
            if hops > 40 {
                return out; // a loop of links: what was found so far
            }
            out.push(prefix.clone());
            let base = if target.is_absolute() {
                Some(root.to_path_buf())
            } else {
                root.join(&prefix).parent().map(Path::to_path_buf)
            };
            let Some(resolved) = base
                .and_then(|b| inside(root, &b.join(target.strip_prefix("/").unwrap_or(&target))))
            else {
                break;
            };
            let rest = parts[i + 1..].join("/");
            let next = if rest.is_empty() {
                resolved
            } else {
                format!("{resolved}/{rest}")
            };
            out.push(next.clone());
            pending.push(next);
            break;
        }
    }
    out
}

/// `path` relative to the root, `..` resolved, when it stays inside it.
fn inside(root: &Path, path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.strip_prefix(root).ok()?.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_str()?.to_string()),
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for path in files {
            let p = dir.path().join(path);
            if let Some(folder) = path.strip_suffix('/') {
                std::fs::create_dir_all(dir.path().join(folder)).expect("mkdir");
                continue;
            }
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, path.as_bytes()).expect("write");
        }
        dir
    }

    fn listed(dir: &Path, ignore: &str, wanted: &Wanted) -> Vec<String> {
        SyncedContext {
            root: dir.to_path_buf(),
            ignore: DockerIgnore::parse(ignore).expect("ignore"),
        }
        .list(wanted)
        .expect("list")
        .into_iter()
        .map(|e| e.path)
        .collect()
    }

    #[test]
    fn the_whole_context_in_fsutils_order_minus_dockerignore() {
        let dir = tree(&[
            "Dockerfile",
            ".dockerignore",
            "a-b",
            "a/b",
            "a/c/d",
            "logs/x.log",
            "data/big.bin",
            "data/keep.txt",
            "empty/",
        ]);
        let ignore = "logs\ndata\n!data/keep.txt\nDockerfile\n.dockerignore\n";
        assert_eq!(
            listed(dir.path(), ignore, &Wanted::default()),
            // An ignored Dockerfile is not in the context (the docker CLI's BuildKit path);
            // `data` is walked for its exception and sent before it.
            [
                "a",
                "a/b",
                "a/c",
                "a/c/d",
                "a-b",
                "data",
                "data/keep.txt",
                "empty"
            ]
        );
    }

    #[test]
    fn include_patterns_send_only_the_asked_files_and_the_folders_to_them() {
        let dir = tree(&[
            ".dockerignore",
            "Dockerfile",
            "nb/x.ipynb",
            "nb/y.ipynb",
            "z",
        ]);
        let only = |p: &[&str]| Wanted {
            include: p.iter().map(|s| s.to_string()).collect(),
            ..Wanted::default()
        };
        assert_eq!(
            listed(dir.path(), "", &only(&[".dockerignore"])),
            [".dockerignore"]
        );
        assert_eq!(
            listed(dir.path(), "", &only(&["nb/y.ipynb"])),
            ["nb", "nb/y.ipynb"]
        );
        assert_eq!(
            listed(dir.path(), "", &only(&["**/x.ipynb"])),
            ["nb", "nb/x.ipynb"]
        );
        // A missing file gives an empty folder, not an error (the frontend then knows).
        assert!(listed(dir.path(), "", &only(&["nope"])).is_empty());
    }

    #[test]
    fn the_engines_excludes_apply_on_top_of_dockerignore() {
        let dir = tree(&["a.txt", "b.tmp", "c/d.tmp", "c/e"]);
        let wanted = Wanted {
            exclude: vec!["*.tmp".into(), "c/*.tmp".into()],
            ..Wanted::default()
        };
        assert_eq!(listed(dir.path(), "a.txt", &wanted), ["c", "c/e"]);
    }

    #[test]
    fn followed_symlinks_bring_their_targets() {
        let dir = tree(&["real/Dockerfile", "other"]);
        std::os::unix::fs::symlink("real/Dockerfile", dir.path().join("Dockerfile"))
            .expect("symlink");
        let wanted = Wanted {
            follow: vec!["Dockerfile".into()],
            ..Wanted::default()
        };
        assert_eq!(
            listed(dir.path(), "", &wanted),
            ["Dockerfile", "real", "real/Dockerfile"]
        );
    }

    #[test]
    fn links_inside_a_followed_path_are_resolved_like_fsutil() {
        let dir = tree(&["shared/configs/app.yaml", "shared/configs/other.yaml", "z"]);
        std::os::unix::fs::symlink("shared/configs", dir.path().join("configs")).expect("link");
        std::os::unix::fs::symlink("configs", dir.path().join("cfg")).expect("chain");
        let follow = |p: &str| Wanted {
            follow: vec![p.into()],
            ..Wanted::default()
        };
        let expected = [
            "configs",
            "shared",
            "shared/configs",
            "shared/configs/app.yaml",
        ];
        assert_eq!(
            listed(dir.path(), "", &follow("configs/app.yaml")),
            expected
        );
        // A chain of links: cfg -> configs -> shared/configs.
        assert_eq!(
            listed(dir.path(), "", &follow("cfg/app.yaml")),
            [
                "cfg",
                "configs",
                "shared",
                "shared/configs",
                "shared/configs/app.yaml"
            ]
        );
        // The root asks for everything.
        assert_eq!(listed(dir.path(), "", &follow(".")).len(), 7);
    }

    #[test]
    fn patterns_that_look_like_comments_stay_patterns() {
        let dir = tree(&["#notes", "a"]);
        let wanted = Wanted {
            include: vec!["#notes".into()],
            ..Wanted::default()
        };
        assert_eq!(listed(dir.path(), "", &wanted), ["#notes"]);
    }

    #[test]
    fn the_dockerfiles_time_stamp_follows_its_text() {
        let dir = tree(&["Dockerfile"]);
        let path = dir.path().join("Dockerfile");
        let a = SyncedDockerfile::new(&path, b"FROM x\nLABEL a=1\n".to_vec()).expect("a");
        let b = SyncedDockerfile::new(&path, b"FROM x\nLABEL a=2\n".to_vec()).expect("b");
        assert_eq!(a.name, "Dockerfile");
        assert_eq!(a.text.len(), b.text.len());
        assert_ne!(a.mtime_ns, b.mtime_ns);
        assert_eq!(a.mtime_ns / 1_000_000_000, b.mtime_ns / 1_000_000_000);
    }
}
