//! A job's data from S3 (`[data] inputs`, `--input`): each input is checked before anything
//! is built or started (the bucket exists, in whichever region, the caller may list it, and
//! there is something under the address), mirrored into labship's cache (only what changed
//! since the last copy is fetched: a file whose size and ETag are those listed is kept; a
//! file gone from S3 goes from the copy too), and given to the job's container read-only
//! at `inputs/<name>` in its working folder.
//!
//! The copy is made with the caller's credentials on this machine: no credential enters
//! the container. The results go the other way with [`crate::job::deliver`] (`--output-uri`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::aws::s3::{Bucket, Object, S3Uri, S3};
use crate::error::{Error, Result};
use crate::output::Printer;

/// Where the inputs appear in the job's working folder.
pub const INPUTS_DIR: &str = "inputs";

/// An input as checked: its bucket (in its region) and what is under it.
pub struct Checked {
    pub uri: S3Uri,
    bucket: Bucket,
    objects: Vec<Object>,
}

impl Checked {
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// The input as a job host copies it itself (`run --ec2`): its line of the host's
    /// `inputs.tsv` (`file` or `folder`, the name under `inputs/`, the bucket's region, the
    /// address, a folder's ending in `/`), and what the run's report says of it (nothing is
    /// copied on this machine).
    pub fn on_host(&self) -> Result<(String, Copied)> {
        let name = self.uri.name().to_string();
        if self.uri.key.chars().any(char::is_control) {
            return Err(Error::S3Data {
                uri: self.uri.to_string(),
                reason: "its address holds a control character (a tab, a new line)".into(),
                hint: "give the input an address without one (rename or copy the objects)".into(),
            });
        }
        let (kind, address) = if self.single() {
            ("file", self.uri.to_string())
        } else {
            match self.uri.key.trim_end_matches('/') {
                "" => ("folder", format!("s3://{}/", self.uri.bucket)),
                key => ("folder", format!("s3://{}/{key}/", self.uri.bucket)),
            }
        };
        let line = format!("{kind}\t{name}\t{}\t{address}\n", self.bucket.region);
        Ok((
            line,
            Copied {
                uri: self.uri.to_string(),
                region: self.bucket.region.clone(),
                path: format!("{INPUTS_DIR}/{name}"),
                local: PathBuf::new(),
                objects: self.objects.len(),
                bytes: self.bytes(),
                fetched_bytes: 0,
                seconds: 0.0,
            },
        ))
    }

    /// A single object (`s3://b/data/iris.csv`), not a folder.
    pub fn single(&self) -> bool {
        self.objects.len() == 1 && self.objects[0].key == self.uri.key
    }
}

/// What a container's inputs are, for its label: each address, a single object's with its
/// ETag (a file mounted alone is not replaced under a running container, as the files of a
/// mounted folder are: a new version of it means a new container). `None`: no inputs.
pub fn label(checked: &[Checked]) -> Option<String> {
    let each: Vec<String> = checked
        .iter()
        .map(|c| match c.single() {
            true => format!("{}@{}", c.uri, c.objects[0].etag.trim_matches('"')),
            false => c.uri.to_string(),
        })
        .collect();
    (!each.is_empty()).then(|| each.join(" "))
}

/// An input copied: where it is on this machine, where the job sees it, and what the copy
/// took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Copied {
    pub uri: String,
    /// Its bucket's region.
    pub region: String,
    /// In the job's working folder: `inputs/<name>`.
    pub path: String,
    /// The copy on this machine (a folder, or the file of a single object).
    #[serde(skip)]
    pub local: PathBuf,
    pub objects: usize,
    pub bytes: u64,
    /// Bytes fetched this time (the rest was in the copy already).
    pub fetched_bytes: u64,
    pub seconds: f64,
}

impl Copied {
    /// The read-only bind mount that gives it to a container whose working folder is `cwd`:
    /// (this machine's path, the container's).
    pub fn mount(&self, cwd: &str) -> (String, String) {
        (
            self.local.display().to_string(),
            format!("{}/{}", cwd.trim_end_matches('/'), self.path),
        )
    }
}

/// Checks every input, four at a time: each bucket is located and each address listed; an
/// address with nothing under it is an error (a typo would otherwise run the job on no data).
pub async fn check(s3: &S3, inputs: &[S3Uri]) -> Result<Vec<Checked>> {
    use futures_util::{StreamExt, TryStreamExt};
    futures_util::stream::iter(inputs.iter().cloned())
        .map(|uri| async move {
            let bucket = s3.locate(&uri).await?;
            let objects = bucket.list(&uri).await?;
            if objects.is_empty() {
                return Err(Error::S3Data {
                    uri: uri.to_string(),
                    reason: "there is no object under this address".into(),
                    hint: format!(
                        "check the prefix (`aws s3 ls s3://{}/` lists the bucket's folders)",
                        uri.bucket
                    ),
                });
            }
            Ok(Checked {
                uri,
                bucket,
                objects,
            })
        })
        .buffered(4)
        .try_collect()
        .await
}

/// What the copy of an input held after its last sync: each file's size and ETag.
#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, (u64, String)>,
}

/// The copies' folder, made private to this user (`inputs/` 0700; the copies below it are
/// readable, for the containers they are mounted into). No folder in /tmp: another user
/// could put files there first.
fn inputs_root() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = crate::config::cache_dir().ok_or_else(|| Error::InvalidSetting {
        what: "cache folder",
        value: "(none)".into(),
        reason: "neither LABSHIP_CACHE_DIR, XDG_CACHE_HOME nor HOME is set, so there is no place for the copy of the inputs".into(),
        hint: "set LABSHIP_CACHE_DIR to a folder of yours".into(),
    })?;
    let root = base.join("inputs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .map_err(|e| Error::Write {
            path: root.clone(),
            source: e,
        })?;
    Ok(root)
}

/// The cache folder of an input address (`s3://b/week1` and `s3://b/week1/` share one).
fn cache_of(root: &Path, uri: &S3Uri) -> PathBuf {
    let key = format!("s3://{}/{}", uri.bucket, uri.key.trim_end_matches('/'));
    let digest = sha2::Sha256::digest(key.as_bytes());
    root.join(hex::encode(&digest[..8]))
}

/// Brings the copy of every checked input up to date, one after the other, each with its
/// objects fetched in parallel; a byte bar (on a terminal) and one line per input say how
/// it went.
///
/// With `snapshot` (a `labship run`'s mark on its containers), what is given to the
/// containers is a snapshot of each copy, taken under the copy's lock: hard links of its
/// files, which a later sync never changes (it renames new files into the copy and removes
/// old ones), so a job reads the same data from its first cell to its last whatever another
/// labship copies meanwhile. [`release`] removes it once the job's container is gone.
pub async fn sync(
    checked: &[Checked],
    snapshot: Option<&str>,
    printer: &Printer,
) -> Result<Vec<Copied>> {
    if checked.is_empty() {
        return Ok(Vec::new());
    }
    let root = inputs_root()?;
    if let Some(mark) = snapshot {
        let at = snapshot_of(&root, mark)?;
        std::fs::create_dir_all(&at).map_err(|e| Error::Write {
            path: at.clone(),
            source: e,
        })?;
        hold(&at, mark)?;
    }
    let mut copied = Vec::new();
    for input in checked {
        let cache = cache_of(&root, &input.uri);
        let snapshot = match snapshot {
            Some(mark) => {
                Some(snapshot_of(&root, mark)?.join(cache.file_name().unwrap_or_default()))
            }
            None => None,
        };
        copied.push(sync_one(input, &cache, snapshot.as_deref(), printer).await?);
    }
    Ok(copied)
}

/// Where the snapshot of an invocation's inputs is (`mark`: its containers' batch label).
fn snapshot_of(root: &Path, mark: &str) -> Result<PathBuf> {
    if mark.is_empty() || !mark.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(Error::InvalidSetting {
            what: "run mark",
            value: mark.to_string(),
            reason: "it is not one labship makes (letters, digits and -)".into(),
            hint: "this is a bug in labship, or a container labelled by hand; please report it"
                .into(),
        });
    }
    Ok(root.join("snapshots").join(mark))
}

/// The snapshots this process uses, each with its lock held (so that another labship's
/// [`prune`] leaves them alone, whatever their age and whether a container uses them now).
static HELD: std::sync::Mutex<Vec<(String, std::fs::File)>> = std::sync::Mutex::new(Vec::new());

/// `<snapshot>.lock`, locked and kept until [`release`] (or the end of this process).
fn hold(snapshot: &Path, mark: &str) -> Result<()> {
    let path = snapshot.with_extension("lock");
    let file = lock_file(&path)?;
    file.lock().map_err(|e| Error::Write { path, source: e })?;
    HELD.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((mark.to_string(), file));
    Ok(())
}

/// Removes the snapshot of the inputs of the invocation marked `mark` (nothing when there is
/// none): its containers are gone.
pub fn release(mark: &str) {
    let Some(base) = crate::config::cache_dir() else {
        return;
    };
    if let Ok(dir) = snapshot_of(&base.join("inputs"), mark) {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(dir.with_extension("lock"));
    }
    HELD.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(held, _)| held != mark);
}

/// How old a snapshot with no container may get before [`prune`] removes it: longer than
/// any copy and build between a snapshot and its job's container.
const ORPHAN_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Removes the snapshots no container uses any more (`live`: the marks of the job
/// containers on the engine) that are older than [`ORPHAN_AFTER`]: those of a labship that
/// was killed, or of a detached run removed without `fetch`. A younger one may belong to a
/// labship between its copy and its container. The marks removed.
pub fn prune(live: &std::collections::HashSet<String>) -> Vec<String> {
    match crate::config::cache_dir() {
        Some(base) => prune_in(&base.join("inputs").join("snapshots"), live, ORPHAN_AFTER),
        None => Vec::new(),
    }
}

fn prune_in(
    snapshots: &Path,
    live: &std::collections::HashSet<String>,
    orphan_after: std::time::Duration,
) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(snapshots) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let mark = entry.file_name().to_string_lossy().to_string();
        // A labship still running holds its snapshot's lock.
        let lock_path = entry.path().with_extension("lock");
        let in_use = std::fs::File::open(&lock_path)
            .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > orphan_after);
        if old && !in_use && !live.contains(&mark) && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            let _ = std::fs::remove_file(&lock_path);
            removed.push(mark);
        }
    }
    removed
}

/// How long a copy of an input stays in the cache once no `up` or `run` has brought it up to
/// date: one used again within it is fetched only where S3 changed; one left longer goes
/// (a later use fetches it whole).
pub const COPY_UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Removes the copies of inputs that no `up` or `run` has brought up to date for
/// [`COPY_UNUSED_FOR`], unless a container mounts them (`mounted`: every mount source on the
/// engine, of running containers and stopped ones, which would start with them again) or
/// another labship holds their lock. What they took (folders and bytes).
pub fn prune_copies(mounted: &std::collections::HashSet<PathBuf>) -> Pruned {
    match crate::config::cache_dir() {
        Some(base) => prune_copies_in(&base.join("inputs"), mounted, COPY_UNUSED_FOR),
        None => Pruned::default(),
    }
}

/// Before a copy: the copies of inputs no one used for [`COPY_UNUSED_FOR`] go
/// ([`prune_copies`], with what the engine's containers mount), said when any did; when the
/// engine cannot list its containers, none goes.
pub async fn prune_unused_copies(engine: &crate::docker::Engine, printer: &Printer) {
    // A cache that cannot be tidied this time is no reason to stop: it is the next time.
    let mounted = match engine.mount_sources().await {
        Ok(m) => m,
        Err(e) => {
            printer.note(format!("Unused copies of inputs left as they are: {e}"));
            return;
        }
    };
    let Ok(pruned) = tokio::task::spawn_blocking(move || prune_copies(&mounted)).await else {
        return;
    };
    if pruned.copies > 0 {
        printer.note(format!(
            "Removed {} cached cop{} of inputs unused for {} days ({})",
            pruned.copies,
            if pruned.copies == 1 { "y" } else { "ies" },
            COPY_UNUSED_FOR.as_secs() / 86_400,
            indicatif::HumanBytes(pruned.bytes)
        ));
    }
}

/// What [`prune_copies`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub copies: usize,
    pub bytes: u64,
}

fn prune_copies_in(
    root: &Path,
    mounted: &std::collections::HashSet<PathBuf>,
    unused_for: std::time::Duration,
) -> Pruned {
    let mut pruned = Pruned::default();
    let Ok(entries) = std::fs::read_dir(root) else {
        return pruned;
    };
    // Its last sync wrote its manifest; a copy that never finished one, its folder.
    let unused = |dir: &Path| {
        std::fs::metadata(dir.join("manifest.json"))
            .or_else(|_| std::fs::metadata(dir))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > unused_for)
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "snapshots" || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // What a pruning labship had set aside and did not finish removing.
        if name.starts_with(REMOVING) {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        if !unused(&dir) {
            continue;
        }
        let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if mounted
            .iter()
            .any(|m| m.starts_with(&dir) || m.starts_with(&real))
        {
            continue;
        }
        // Under its lock (made if an old copy has none): unused still (a sync may have ended
        // meanwhile), it is set aside at once by a rename, so that a labship about to copy it
        // makes a new one rather than fill one being removed, and one waiting for the lock
        // finds it gone ([`same_file`]); then removed.
        let Ok(lock) = lock_file(&dir.join("lock")) else {
            continue;
        };
        if lock.try_lock().is_err() || !unused(&dir) {
            continue;
        }
        let aside = root.join(format!("{REMOVING}{name}-{}", std::process::id()));
        if std::fs::rename(&dir, &aside).is_err() {
            continue;
        }
        drop(lock);
        // What removing it frees: files a snapshot also links stay.
        let bytes = walkdir::WalkDir::new(&aside)
            .into_iter()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file() && std::os::unix::fs::MetadataExt::nlink(m) == 1)
            .map(|m| m.len())
            .sum::<u64>();
        // Should it not all go, the rest goes at the next prune (a `.removing-` leftover).
        if std::fs::remove_dir_all(&aside).is_ok() {
            pruned.copies += 1;
            pruned.bytes += bytes;
        }
    }
    pruned
}

/// The name a copy being removed takes first ([`prune_copies_in`]).
const REMOVING: &str = ".removing-";

/// `file` (open) is the file at `path` now: not removed, nor replaced by another.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Hard links of every file under `from` at the same place under `to` (made).
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if entry.file_type().is_file() {
            // A file system without hard links (exFAT, some network shares): a copy.
            if std::fs::hard_link(entry.path(), &target).is_err() {
                std::fs::copy(entry.path(), &target)?;
            }
        }
    }
    Ok(())
}

/// A lock file, opened (made when missing), not locked yet.
fn lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::Write {
            path: path.to_path_buf(),
            source: e,
        })
}

/// The copy's lock, held while it is brought up to date: two labships copying the same
/// input take turns (the second finds the files there). Released when dropped.
async fn lock_copy(cache: &Path, uri: &S3Uri, printer: &Printer) -> Result<std::fs::File> {
    let path = cache.join("lock");
    let file = lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::Write { path, source: e }),
    }
    printer.note(format!(
        "Waiting for another labship that copies {uri} to finish"
    ));
    let waited = tokio::task::spawn_blocking(move || file.lock().map(|()| file));
    crate::interrupt::cancellable("waiting for the copy of the inputs", async {
        waited
            .await
            .map_err(|e| Error::engine("waiting for the inputs' lock", e))?
            .map_err(|e| Error::Write { path, source: e })
    })
    .await
}

async fn sync_one(
    input: &Checked,
    cache: &Path,
    snapshot: Option<&Path>,
    printer: &Printer,
) -> Result<Copied> {
    let write_err = |path: &Path, e: std::io::Error| Error::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let started = Instant::now();
    let files = cache.join("files");
    // Another labship's [`prune_copies`] may remove the copy between the folder and the lock,
    // or while this one waits for the lock: then again, on a new one (a few times: a copy is
    // removed once, and one just made is not old enough to be).
    let mut attempts = 0;
    let _lock = loop {
        attempts += 1;
        std::fs::create_dir_all(&files).map_err(|e| write_err(&files, e))?;
        match lock_copy(cache, &input.uri, printer).await {
            Ok(lock) if same_file(&lock, &cache.join("lock")) => break lock,
            Err(Error::Write { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempts < 5 => {}
            Ok(_) if attempts < 5 => {}
            Ok(_) => {
                return Err(Error::Write {
                    path: cache.join("lock"),
                    source: std::io::Error::other("the copy was removed while labship took it"),
                })
            }
            Err(e) => return Err(e),
        }
    };
    let manifest_path = cache.join("manifest.json");
    let old: Manifest = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // Kept: listed with the same size and ETag as copied, and still that size on disk.
    let fetch: Vec<Object> = input
        .objects
        .iter()
        .filter(|o| {
            !(old.files.get(&o.rel) == Some(&(o.size, o.etag.clone()))
                && std::fs::metadata(files.join(&o.rel)).is_ok_and(|m| m.len() == o.size))
        })
        .cloned()
        .collect();
    // Gone from S3: gone from the copy (and any file a broken copy left).
    let listed: std::collections::HashSet<&str> =
        input.objects.iter().map(|o| o.rel.as_str()).collect();
    remove_unlisted(&files, &files, &listed);
    let bytes = input.bytes();
    let fetch_bytes: u64 = fetch.iter().map(|o| o.size).sum();
    printer.note(format!(
        "Copying {} ({} objects, {}; {} to fetch)",
        input.uri,
        input.objects.len(),
        indicatif::HumanBytes(bytes),
        indicatif::HumanBytes(fetch_bytes)
    ));
    let bars = printer.bars();
    let bar = printer.byte_bar(&bars, "inputs", fetch_bytes);
    let landed = AtomicU64::new(0);
    let progress = |n: u64| {
        landed.fetch_add(n, Ordering::Relaxed);
        bar.inc(n);
    };
    let fetched = crate::interrupt::cancellable(
        "copying the inputs",
        input.bucket.download(&input.uri, &fetch, &files, &progress),
    )
    .await;
    bar.finish_and_clear();
    fetched?;
    let manifest = Manifest {
        files: input
            .objects
            .iter()
            .map(|o| (o.rel.clone(), (o.size, o.etag.clone())))
            .collect(),
    };
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| Error::engine("writing the inputs' manifest", e))?;
    let partial = cache.join("manifest.json.part");
    std::fs::write(&partial, body).map_err(|e| write_err(&partial, e))?;
    std::fs::rename(&partial, &manifest_path).map_err(|e| write_err(&manifest_path, e))?;
    // Still under the lock: the snapshot is of a whole copy.
    let files = match snapshot {
        Some(at) => {
            let _ = std::fs::remove_dir_all(at);
            link_tree(&files, at).map_err(|e| write_err(at, e))?;
            at.to_path_buf()
        }
        None => files,
    };
    let seconds = started.elapsed().as_secs_f64();
    let name = input.uri.name();
    Ok(Copied {
        uri: input.uri.to_string(),
        region: input.bucket.region.clone(),
        path: format!("{INPUTS_DIR}/{name}"),
        local: if input.single() {
            files.join(name)
        } else {
            files
        },
        objects: input.objects.len(),
        bytes,
        fetched_bytes: landed.load(Ordering::Relaxed),
        seconds,
    })
}

/// Removes the files under `dir` that are not `listed` (relative to `root`), and folders
/// left empty.
fn remove_unlisted(root: &Path, dir: &Path, listed: &std::collections::HashSet<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            remove_unlisted(root, &path, listed);
            let _ = std::fs::remove_dir(&path); // only when empty
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        if !listed.contains(rel.as_str()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_its_files_when_the_copy_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let (copy, snap) = (dir.path().join("files"), dir.path().join("snap"));
        std::fs::create_dir_all(copy.join("a")).unwrap();
        std::fs::write(copy.join("a/x.csv"), "v1").unwrap();
        std::fs::write(copy.join("gone.txt"), "old").unwrap();
        link_tree(&copy, &snap).unwrap();
        // What a sync does: a new file renamed into place, an old one removed.
        std::fs::write(copy.join("a/x.csv.labship-part"), "v2").unwrap();
        std::fs::rename(copy.join("a/x.csv.labship-part"), copy.join("a/x.csv")).unwrap();
        std::fs::remove_file(copy.join("gone.txt")).unwrap();
        assert_eq!(std::fs::read_to_string(snap.join("a/x.csv")).unwrap(), "v1");
        assert_eq!(
            std::fs::read_to_string(snap.join("gone.txt")).unwrap(),
            "old"
        );
        assert_eq!(std::fs::read_to_string(copy.join("a/x.csv")).unwrap(), "v2");
        assert!(snapshot_of(dir.path(), "20261201-141742-7f50").is_ok());
        for bad in ["", "../x", "a/b", "."] {
            assert!(snapshot_of(dir.path(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_old_snapshots_of_no_container_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        for (mark, old) in [("orphan", true), ("running", true), ("young", false)] {
            let at = dir.path().join(mark);
            std::fs::create_dir_all(at.join("h")).unwrap();
            std::fs::write(at.join("h/x.csv"), "x").unwrap();
            if old {
                std::fs::File::open(&at)
                    .unwrap()
                    .set_modified(day_ago)
                    .unwrap();
            }
        }
        // An old one whose labship still holds its lock (a matrix between two runs).
        let held = dir.path().join("held");
        std::fs::create_dir_all(&held).unwrap();
        std::fs::File::open(&held)
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        let lock = std::fs::File::create(dir.path().join("held.lock")).unwrap();
        lock.lock().unwrap();
        let live = ["running".to_string()].into_iter().collect();
        let removed = prune_in(dir.path(), &live, ORPHAN_AFTER);
        assert_eq!(removed, ["orphan"]);
        assert!(held.exists(), "a held snapshot stays");
        assert!(dir.path().join("running/h/x.csv").exists());
        assert!(dir.path().join("young/h/x.csv").exists());
    }

    #[test]
    fn copies_unused_for_a_month_go_unless_mounted_or_locked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let long_ago =
            std::time::SystemTime::now() - COPY_UNUSED_FOR - std::time::Duration::from_secs(60);
        let copy = |name: &str, old: bool| {
            let at = root.join(name);
            std::fs::create_dir_all(at.join("files/week1")).unwrap();
            std::fs::write(at.join("files/week1/points.csv"), "x,y\n1,2\n").unwrap();
            std::fs::write(at.join("lock"), "").unwrap();
            let manifest = at.join("manifest.json");
            std::fs::write(&manifest, "{}").unwrap();
            if old {
                std::fs::File::options()
                    .write(true)
                    .open(&manifest)
                    .unwrap()
                    .set_modified(long_ago)
                    .unwrap();
            }
            at
        };
        let unused = copy("aaaa", true);
        let recent = copy("bbbb", false);
        let mounted = copy("cccc", true);
        let locked = copy("dddd", true);
        // A copy that never finished a sync: its folder's age.
        let broken = root.join("eeee");
        std::fs::create_dir_all(broken.join("files")).unwrap();
        std::fs::write(broken.join("lock"), "").unwrap();
        std::fs::File::open(&broken)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        // A copy from before copies had a lock; what an interrupted prune set aside.
        let lockless = copy("ffff", true);
        std::fs::remove_file(lockless.join("lock")).unwrap();
        let aside = root.join(".removing-gggg-1");
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::write(aside.join("x"), "x").unwrap();
        // Snapshots are [`prune`]'s.
        std::fs::create_dir_all(root.join("snapshots/run-1")).unwrap();
        std::fs::File::open(root.join("snapshots"))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let holder = std::fs::File::open(locked.join("lock")).unwrap();
        holder.lock().unwrap();
        // A single-file input is mounted by its file.
        let in_use = [mounted.join("files/week1/points.csv")]
            .into_iter()
            .collect();
        // A file the copy shares with a snapshot frees nothing.
        std::fs::hard_link(
            unused.join("manifest.json"),
            root.join("snapshots/run-1/manifest.json"),
        )
        .unwrap();
        let pruned = prune_copies_in(root, &in_use, COPY_UNUSED_FOR);
        assert_eq!(
            pruned,
            Pruned {
                copies: 3,
                // Two copies' files (one's manifest is linked); the broken one held nothing.
                bytes: 8 + 8 + 2
            }
        );
        assert!(!unused.exists() && !broken.exists() && !lockless.exists());
        assert!(!aside.exists(), "a copy set aside is removed");
        let left: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(REMOVING))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        for kept in [&recent, &mounted, &locked] {
            assert!(kept.join("files/week1/points.csv").exists(), "{kept:?}");
        }
        assert!(root.join("snapshots/run-1").exists());
        // Released, the lock no longer keeps it.
        drop(holder);
        assert_eq!(prune_copies_in(root, &in_use, COPY_UNUSED_FOR).copies, 1);
        assert!(!locked.exists());
    }

    #[test]
    fn a_lock_on_a_copy_removed_meanwhile_is_not_the_copys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = lock_file(&path).unwrap();
        assert!(same_file(&held, &path));
        std::fs::remove_file(&path).unwrap();
        assert!(!same_file(&held, &path), "removed");
        let _new = lock_file(&path).unwrap();
        assert!(!same_file(&held, &path), "another file under the name");
    }

    #[test]
    fn a_copy_keeps_only_what_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("old")).unwrap();
        for f in ["a/b/keep.csv", "a/drop.csv", "old/x", "top.txt"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let listed = ["a/b/keep.csv", "top.txt"].into_iter().collect();
        remove_unlisted(root, root, &listed);
        assert!(root.join("a/b/keep.csv").exists());
        assert!(root.join("top.txt").exists());
        assert!(!root.join("a/drop.csv").exists());
        assert!(!root.join("old").exists(), "an emptied folder goes too");
    }
}
