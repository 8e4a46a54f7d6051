//! The SHA-256 of each context file, remembered between runs by path and what `stat` says
//! (size, modification and change times, inode), so that the content tag of an unchanged
//! context costs a walk and not a read of every byte: `up` and `push` compute it before they
//! decide anything, and a 1 GiB data folder would otherwise be read on every run.
//!
//! An entry is trusted only when the file's times are older than the moment the entry was
//! recorded, by a margin: a file written within the same clock tick as its hashing (git's
//! "racy" case) is read again. Any doubt (no cache, an unreadable or foreign one, another
//! size, time or inode) means the file is read and hashed, so a stale cache can cost time but
//! never a wrong tag. A cache folder or file that others could write is not read. Not covered:
//! a file system whose clock runs more than the margin behind this machine's (a remote mount),
//! or one whose ctime is not a change time (FAT, exFAT): there an edit that keeps a file's size
//! and times within the margin's tick could be missed.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when the meaning of an entry changes; another version is an empty cache.
const VERSION: u32 = 2;
/// Times this close to (or after) the recording are not trusted.
const RACY_MARGIN_NS: i128 = 2_000_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    dev: u64,
    ino: u64,
    sha256: String,
}

impl Entry {
    fn of(meta: &Metadata, sha256: String) -> Entry {
        Entry {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            dev: meta.dev(),
            ino: meta.ino(),
            sha256,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// When the run that wrote these entries began hashing (ns since the epoch).
    recorded_at_ns: i128,
    entries: HashMap<String, Entry>,
}

/// The cache of one context folder for one run: what the last run recorded, and what this one
/// saw (only that is saved, so deleted files leave it).
pub struct HashCache {
    file: Option<PathBuf>,
    previous: Stored,
    started_ns: i128,
    seen: HashMap<String, Entry>,
    /// How many files were read (not taken from the cache) in this run.
    pub read: u64,
}

impl HashCache {
    /// The cache of `context` (under `$LABSHIP_CACHE_DIR`, else `$XDG_CACHE_HOME/labship`, else
    /// `~/.cache/labship`); empty when there is none or it cannot be read.
    pub fn open(context: &Path) -> HashCache {
        let file = crate::config::cache_dir().map(|dir| {
            let canonical = context
                .canonicalize()
                .unwrap_or_else(|_| context.to_path_buf());
            let key = hex::encode(Sha256::digest(canonical.to_string_lossy().as_bytes()));
            dir.join("hashes").join(format!("{}.json", &key[..24]))
        });
        let previous = file
            .as_ref()
            .filter(|f| private(f))
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
            .filter(|s| s.version == VERSION)
            .unwrap_or_default();
        HashCache {
            file,
            previous,
            started_ns: now_ns(),
            seen: HashMap::new(),
            read: 0,
        }
    }

    /// The remembered SHA-256 of `rel`, when `meta` shows the same file, written well before
    /// it was hashed.
    pub fn lookup(&mut self, rel: &str, meta: &Metadata) -> Option<String> {
        let old = self.previous.entries.get(rel)?;
        let now = Entry::of(meta, String::new());
        let settled = self.previous.recorded_at_ns - RACY_MARGIN_NS;
        let same = old.size == now.size
            && old.mtime_ns == now.mtime_ns
            && old.ctime_ns == now.ctime_ns
            && old.dev == now.dev
            && old.ino == now.ino;
        if same && now.mtime_ns < settled && now.ctime_ns < settled {
            self.seen.insert(rel.to_string(), old.clone());
            Some(old.sha256.clone())
        } else {
            None
        }
    }

    /// Records the SHA-256 of a file just read.
    pub fn record(&mut self, rel: &str, meta: &Metadata, sha256: &str) {
        self.read += 1;
        self.seen
            .insert(rel.to_string(), Entry::of(meta, sha256.to_string()));
    }

    /// Writes what this run saw (atomically; a failure only costs the next run a read).
    pub fn save(self) {
        let Some(file) = self.file else { return };
        // An entry taken from the cache still matched its file's stat in this run, and that
        // file's times are older than the earlier recording, so this run's start covers it.
        let stored = Stored {
            version: VERSION,
            recorded_at_ns: self.started_ns,
            entries: self.seen,
        };
        let write = || -> std::io::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer(std::io::BufWriter::new(tmp.as_file()), &stored)
                .map_err(std::io::Error::other)?;
            tmp.persist(&file).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!("could not save the hash cache {}: {e}", file.display());
        }
    }
}

/// Whether a cache file can only have been written by whoever may read it here: its folder
/// open to no one else, the file writable by no one else. Another user's entries could name
/// an old file's hash and so an old image; such a cache is not read.
fn private(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let (Some(dir), Ok(meta)) = (file.parent(), std::fs::metadata(file)) else {
        return false;
    };
    let Ok(dir_meta) = std::fs::metadata(dir) else {
        return false;
    };
    dir_meta.permissions().mode() & 0o077 == 0
        && meta.permissions().mode() & 0o022 == 0
        && dir_meta.uid() == meta.uid()
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_in(dir: &Path, context: &Path) -> HashCache {
        let mut c = HashCache::open(context);
        c.file = Some(dir.join("cache.json"));
        c.previous = std::fs::read(dir.join("cache.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        c
    }

    #[test]
    fn a_settled_unchanged_file_is_not_read_again_and_a_changed_one_is() {
        let store = tempfile::tempdir().expect("dir");
        let ctx = tempfile::tempdir().expect("dir");
        let f = ctx.path().join("data.csv");
        std::fs::write(&f, "1,2,3").expect("write");
        let meta = std::fs::metadata(&f).expect("meta");
        let mut first = cache_in(store.path(), ctx.path());
        assert_eq!(first.lookup("data.csv", &meta), None);
        first.record("data.csv", &meta, "abc");
        // Recorded well after the file was written.
        first.started_ns += 10 * RACY_MARGIN_NS;
        first.save();

        let mut second = cache_in(store.path(), ctx.path());
        assert_eq!(second.lookup("data.csv", &meta).as_deref(), Some("abc"));

        std::fs::write(&f, "1,2,3,4").expect("write");
        let changed = std::fs::metadata(&f).expect("meta");
        assert_eq!(second.lookup("data.csv", &changed), None);
    }

    #[test]
    fn a_file_written_as_it_was_hashed_is_read_again() {
        let store = tempfile::tempdir().expect("dir");
        let ctx = tempfile::tempdir().expect("dir");
        let f = ctx.path().join("nb.ipynb");
        std::fs::write(&f, "{}").expect("write");
        let meta = std::fs::metadata(&f).expect("meta");
        let mut first = cache_in(store.path(), ctx.path());
        first.record("nb.ipynb", &meta, "abc");
        first.save(); // recorded "now": the file's time is within the margin
        let mut second = cache_in(store.path(), ctx.path());
        assert_eq!(second.lookup("nb.ipynb", &meta), None);
    }
}
