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
            mtime_ns: meta.mtime() * 1_000_000_000 + i64::from(nanos),
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
                DockerIgnore::parse(&wanted.exclude.join("\n"))
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
        let mut walker = walkdir::WalkDir::new(&self.root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(item) = walker.next() {
            let item = item.map_err(|e| e.to_string())?;
            let depth = item.depth();
            while held.last().is_some_and(|(d, _)| *d >= depth) {
                held.pop();
            }
            let rel_path = item.path().strip_prefix(&self.root).unwrap_or(item.path());
            let rel = rel_path
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
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
            let Some(entry) = entry(item.path(), rel, &item)? else {
                continue;
            };
            if !included || left_out {
                if is_dir {
                    held.push((depth, entry));
                }
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
    let meta = item
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let file_type = item.file_type();
    let kind = if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_file() {
        EntryKind::File(Source::Disk(path.to_path_buf()))
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| format!("{}: {e}", path.display()))?;
        EntryKind::Symlink(target.to_string_lossy().into_owned())
    } else {
        return Ok(None);
    };
    Ok(Some(SyncEntry {
        path: rel,
        kind,
        mode: meta.mode() & 0o7777,
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
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
            let path = clean(path);
            patterns.push(path.clone());
            if let Some(target) = link_target(root, &path) {
                patterns.push(target);
            }
        }
        patterns.sort();
        patterns.dedup();
        let matcher = DockerIgnore::parse(&patterns.join("\n"))
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
    p.trim_end_matches('/').to_string()
}

/// Where a symlink inside the root points, relative to the root, when it stays inside it.
fn link_target(root: &Path, rel: &str) -> Option<String> {
    let link = root.join(rel);
    let target = std::fs::read_link(&link).ok()?;
    let joined = if target.is_absolute() {
        root.join(target.strip_prefix("/").ok()?)
    } else {
        link.parent()?.join(target)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.strip_prefix(root).ok()?.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
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
