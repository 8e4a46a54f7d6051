//! The build context: walked once, in a fixed order, honouring `.dockerignore`, and either
//! streamed to the engine as a tar (never held whole in memory) or only hashed. Both paths
//! feed the same hasher, so the content tag of a build equals the one `push` and `up` compute
//! beforehand to decide whether anything needs building or uploading.

use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::dockerignore::DockerIgnore;
use super::hashes::HashCache;
use crate::error::{Error, Result};

/// The name a Dockerfile from outside the context is sent under (as the docker CLI does).
const OUTSIDE_DOCKERFILE: &str = ".labship.Dockerfile";

/// What will be sent: the folder, its ignore rules, and where the Dockerfile is.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    ignore: DockerIgnore,
    /// The Dockerfile's path inside the tar.
    dockerfile_name: String,
    /// Set when the Dockerfile lives outside the context and is added under [`OUTSIDE_DOCKERFILE`].
    outside_dockerfile: Option<PathBuf>,
    /// The Dockerfile's path on disk.
    dockerfile_path: PathBuf,
    /// What to send instead of the Dockerfile's own text (labship's labels added); the
    /// digest still covers the file as the user wrote it.
    dockerfile_override: Option<Vec<u8>>,
}

/// What a walk saw.
#[derive(Debug, Clone, Default)]
pub struct ContextSummary {
    /// sha256 over every sent entry's path, kind, mode, size and (for files) the SHA-256 of its
    /// content.
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
}

impl Context {
    pub fn open(root: &Path, dockerfile: &Path) -> Result<Context> {
        if !root.is_dir() {
            return Err(Error::NoContext {
                path: root.to_path_buf(),
            });
        }
        if !dockerfile.is_file() {
            return Err(Error::NoDockerfile {
                path: dockerfile.to_path_buf(),
            });
        }
        let ignore_path = root.join(".dockerignore");
        let ignore = match std::fs::read_to_string(&ignore_path) {
            Ok(text) => DockerIgnore::parse(&text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => DockerIgnore::default(),
            Err(source) => {
                return Err(Error::ContextIo {
                    path: ignore_path,
                    source,
                })
            }
        };
        let canon = |p: &Path| {
            p.canonicalize().map_err(|source| Error::ContextIo {
                path: p.to_path_buf(),
                source,
            })
        };
        let root_c = canon(root)?;
        let df_c = canon(dockerfile)?;
        let (dockerfile_name, outside_dockerfile) = match df_c.strip_prefix(&root_c) {
            Ok(rel) => (slash_path(rel), None),
            Err(_) => (OUTSIDE_DOCKERFILE.to_string(), Some(df_c)),
        };
        Ok(Context {
            root: root_c,
            ignore,
            dockerfile_name,
            outside_dockerfile,
            dockerfile_path: dockerfile.to_path_buf(),
            dockerfile_override: None,
        })
    }

    /// The context folder (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dockerfile_name(&self) -> &str {
        &self.dockerfile_name
    }

    pub fn dockerfile_path(&self) -> &Path {
        &self.dockerfile_path
    }

    /// Whether the file at `path` would be sent with this context (it lies under the root and
    /// neither it nor a folder above it is ignored), as the walk decides.
    pub fn sends(&self, path: &Path) -> bool {
        let (Ok(root), Ok(path)) = (self.root.canonicalize(), path.canonicalize()) else {
            return false;
        };
        let Ok(rel) = path.strip_prefix(&root) else {
            return false;
        };
        let rel = slash_path(rel);
        if rel == self.dockerfile_name || rel == ".dockerignore" {
            return true;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            let holds_dockerfile = self.dockerfile_name.starts_with(&format!("{dir}/"));
            if self.ignore.is_excluded(&dir)
                && !holds_dockerfile
                && !self.ignore.may_reinclude_under(&dir)
            {
                return false;
            }
        }
        !self.ignore.is_excluded(&rel)
    }

    /// The context as BuildKit's file sync serves it.
    pub fn synced(&self) -> super::sync::SyncedContext {
        super::sync::SyncedContext {
            root: self.root.clone(),
            ignore: self.ignore.clone(),
        }
    }

    /// The Dockerfile as sent (labels added), alone in a folder for BuildKit's file sync.
    pub fn synced_dockerfile(&self) -> Result<super::sync::SyncedDockerfile> {
        let io_err = |source| Error::ContextIo {
            path: self.dockerfile_path.clone(),
            source,
        };
        let text = match &self.dockerfile_override {
            Some(text) => text.clone(),
            None => std::fs::read(&self.dockerfile_path).map_err(io_err)?,
        };
        super::sync::SyncedDockerfile::new(&self.dockerfile_path, text).map_err(io_err)
    }

    /// Names the engine's copy of this context from one build to the next (the docker CLI
    /// keys it by the folder too), so BuildKit asks only for files that changed.
    pub fn shared_key(&self) -> String {
        hex::encode(Sha256::digest(format!("labship:{}", self.root.display())))
    }

    /// Sends `text` in place of the Dockerfile (see `build::labels`).
    pub fn override_dockerfile(&mut self, text: Vec<u8>) {
        self.dockerfile_override = Some(text);
    }

    /// Writes the context as a tar to `out` and returns what was sent.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<ContextSummary> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        let mut hasher = ContextHasher::default();
        let mut cache = HashCache::open(&self.root);
        self.walk(|entry| {
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&entry.meta, tar::HeaderMode::Complete);
            // Like the docker CLI: files arrive owned by root; names stay unset.
            header.set_uid(0);
            header.set_gid(0);
            let io_err = |source| Error::ContextIo {
                path: entry.path.clone(),
                source,
            };
            match &entry.kind {
                Kind::Dir => {
                    hasher.dir(&entry.rel, &entry.meta);
                    header.set_size(0);
                    tar.append_data(&mut header, &entry.rel, io::empty())
                        .map_err(io_err)?;
                }
                Kind::Symlink(target) => {
                    hasher.symlink(&entry.rel, target);
                    header.set_size(0);
                    tar.append_link(&mut header, &entry.rel, target)
                        .map_err(io_err)?;
                }
                Kind::File
                    if entry.rel == self.dockerfile_name && self.dockerfile_override.is_some() =>
                {
                    let original = std::fs::read(&entry.path).map_err(io_err)?;
                    hasher.file(
                        &entry.rel,
                        &entry.meta,
                        &hex::encode(Sha256::digest(&original)),
                    );
                    let sent = self.dockerfile_override.as_deref().unwrap_or_default();
                    header.set_size(sent.len() as u64);
                    tar.append_data(&mut header, &entry.rel, sent)
                        .map_err(io_err)?;
                }
                Kind::File => {
                    let size = entry.meta.len();
                    let file = File::open(&entry.path).map_err(io_err)?;
                    let mut sha = Sha256::new();
                    let reader = Exact::new(file, size, &mut sha);
                    header.set_size(size);
                    tar.append_data(&mut header, &entry.rel, reader)
                        .map_err(io_err)?;
                    let sha = hex::encode(sha.finalize());
                    hasher.file(&entry.rel, &entry.meta, &sha);
                    cache.record(&entry.rel, &entry.meta, &sha);
                }
            }
            Ok(())
        })?;
        let out = tar.into_inner().map_err(|source| Error::ContextIo {
            path: self.root.clone(),
            source,
        })?;
        drop(out);
        cache.save();
        Ok(hasher.finish())
    }

    /// Hashes the context without building a tar (same digest as [`Context::write_tar`]),
    /// reading only the files the hash cache cannot vouch for.
    pub fn summarise(&self) -> Result<ContextSummary> {
        self.summarise_with(HashCache::open(&self.root))
    }

    fn summarise_with(&self, mut cache: HashCache) -> Result<ContextSummary> {
        let mut hasher = ContextHasher::default();
        self.walk(|entry| {
            match &entry.kind {
                Kind::Dir => hasher.dir(&entry.rel, &entry.meta),
                Kind::Symlink(target) => hasher.symlink(&entry.rel, target),
                Kind::File => {
                    let sha = match cache.lookup(&entry.rel, &entry.meta) {
                        Some(sha) => sha,
                        None => {
                            let io_err = |source| Error::ContextIo {
                                path: entry.path.clone(),
                                source,
                            };
                            let file = File::open(&entry.path).map_err(io_err)?;
                            let mut sha = Sha256::new();
                            let mut reader = Exact::new(file, entry.meta.len(), &mut sha);
                            io::copy(&mut reader, &mut io::sink()).map_err(io_err)?;
                            let sha = hex::encode(sha.finalize());
                            cache.record(&entry.rel, &entry.meta, &sha);
                            sha
                        }
                    };
                    hasher.file(&entry.rel, &entry.meta, &sha);
                }
            }
            Ok(())
        })?;
        cache.save();
        Ok(hasher.finish())
    }

    /// Visits every entry that is sent, in a fixed order (sorted by name, parents first).
    fn walk(&self, mut visit: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        let always = |rel: &str| rel == self.dockerfile_name || rel == ".dockerignore";
        let mut walker = sorted_walk(&self.root);
        while let Some(item) = walker.next() {
            let item = item.map_err(|e| {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.root.clone());
                Error::ContextIo {
                    path,
                    source: e.into(),
                }
            })?;
            let rel_path = item.path().strip_prefix(&self.root).unwrap_or(item.path());
            let rel = slash_path(rel_path);
            let file_type = item.file_type();
            if self.ignore.is_excluded(&rel) && !always(&rel) {
                // A folder holding the Dockerfile is walked anyway: the Dockerfile is always sent.
                let holds_dockerfile = self.dockerfile_name.starts_with(&format!("{rel}/"));
                if file_type.is_dir() && !holds_dockerfile && !self.ignore.may_reinclude_under(&rel)
                {
                    walker.skip_current_dir();
                }
                continue;
            }
            let meta = item.metadata().map_err(|e| Error::ContextIo {
                path: item.path().to_path_buf(),
                source: e.into(),
            })?;
            let kind = if file_type.is_dir() {
                Kind::Dir
            } else if file_type.is_file() {
                Kind::File
            } else if file_type.is_symlink() {
                let target =
                    std::fs::read_link(item.path()).map_err(|source| Error::ContextIo {
                        path: item.path().to_path_buf(),
                        source,
                    })?;
                Kind::Symlink(target)
            } else {
                // Sockets, FIFOs and devices cannot be sent; the docker CLI skips them too.
                tracing::debug!(path = %item.path().display(), "skipping special file");
                continue;
            };
            visit(Entry {
                rel,
                path: item.path().to_path_buf(),
                meta,
                kind,
            })?;
        }
        if let Some(outside) = &self.outside_dockerfile {
            let meta = std::fs::metadata(outside).map_err(|source| Error::ContextIo {
                path: outside.clone(),
                source,
            })?;
            visit(Entry {
                rel: OUTSIDE_DOCKERFILE.to_string(),
                path: outside.clone(),
                meta,
                kind: Kind::File,
            })?;
        }
        Ok(())
    }
}

struct Entry {
    rel: String,
    path: PathBuf,
    meta: Metadata,
    kind: Kind,
}

enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

/// The walk every listing of the context makes: below the root, symlinks not followed, names
/// sorted byte-wise in each folder (the order the tar, the digest and BuildKit's file sync
/// rely on).
pub(super) fn sorted_walk(root: &Path) -> walkdir::IntoIter {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
}

fn slash_path(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The context digest: path, kind, permission bits and size of every entry, and the content
/// of every file. Modification times are left out so that a fresh clone gets the same tag.
#[derive(Default)]
struct ContextHasher {
    sha: Sha256,
    files: u64,
    bytes: u64,
}

impl ContextHasher {
    fn dir(&mut self, rel: &str, meta: &Metadata) {
        self.sha.update(format!(
            "D\0{rel}\0{:o}\n",
            meta.permissions().mode() & 0o7777
        ));
    }

    fn symlink(&mut self, rel: &str, target: &Path) {
        self.sha.update(format!("L\0{rel}\0{}\n", target.display()));
    }

    /// A file by its path, permission bits, size and the SHA-256 of its content.
    fn file(&mut self, rel: &str, meta: &Metadata, sha256: &str) {
        self.files += 1;
        self.bytes += meta.len();
        self.sha.update(format!(
            "F\0{rel}\0{:o}\0{}\0{sha256}\n",
            meta.mode() & 0o7777,
            meta.len()
        ));
    }

    fn finish(self) -> ContextSummary {
        ContextSummary {
            digest: hex::encode(self.sha.finalize()),
            files: self.files,
            bytes: self.bytes,
        }
    }
}

/// Reads exactly `size` bytes of a file, hashing them on the way: a file that grows or
/// shrinks while it is being sent is an error, not a corrupt tar.
struct Exact<'h> {
    inner: io::Take<File>,
    remaining: u64,
    hasher: &'h mut Sha256,
}

impl<'h> Exact<'h> {
    fn new(file: File, size: u64, hasher: &'h mut Sha256) -> Self {
        Exact {
            inner: file.take(size),
            remaining: size,
            hasher,
        }
    }
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent; run the build again",
            ));
        }
        self.remaining -= n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, body) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        dir
    }

    fn tar_names(ctx: &Context) -> (Vec<String>, ContextSummary) {
        let mut buf = Vec::new();
        let summary = ctx.write_tar(&mut buf).unwrap();
        let mut archive = tar::Archive::new(&buf[..]);
        let names = archive
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        (names, summary)
    }

    #[test]
    fn tar_and_summary_agree_and_honour_dockerignore() {
        let dir = tree(&[
            ("Dockerfile", "FROM scratch\n"),
            (
                ".dockerignore",
                "*.log\nsecret/\n.dockerignore\nDockerfile\n",
            ),
            ("a.txt", "a"),
            ("b.log", "b"),
            ("secret/key", "k"),
            ("sub/c.txt", "c"),
        ]);
        let ctx = Context::open(dir.path(), &dir.path().join("Dockerfile")).unwrap();
        let (names, summary) = tar_names(&ctx);
        assert_eq!(
            names,
            [".dockerignore", "Dockerfile", "a.txt", "sub", "sub/c.txt"]
        );
        assert_eq!(summary.files, 4);
        let again = ctx.summarise().unwrap();
        assert_eq!(again.digest, summary.digest);
        assert_eq!(again.bytes, summary.bytes);
    }

    #[test]
    fn digest_changes_with_content_not_with_ignored_files() {
        let dir = tree(&[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "*.tmp\n"),
            ("x", "1"),
        ]);
        let df = dir.path().join("Dockerfile");
        let d1 = Context::open(dir.path(), &df)
            .unwrap()
            .summarise()
            .unwrap()
            .digest;
        std::fs::write(dir.path().join("junk.tmp"), "ignored").unwrap();
        let d2 = Context::open(dir.path(), &df)
            .unwrap()
            .summarise()
            .unwrap()
            .digest;
        assert_eq!(d1, d2);
        std::fs::write(dir.path().join("x"), "2").unwrap();
        let d3 = Context::open(dir.path(), &df)
            .unwrap()
            .summarise()
            .unwrap()
            .digest;
        assert_ne!(d1, d3);
    }

    #[test]
    fn a_dockerfile_in_an_ignored_folder_is_still_sent() {
        let dir = tree(&[
            ("build/Dockerfile", "FROM scratch\n"),
            ("build/junk", "x"),
            (".dockerignore", "build\n"),
            ("a", "a"),
        ]);
        let ctx = Context::open(dir.path(), &dir.path().join("build/Dockerfile")).unwrap();
        let (names, _) = tar_names(&ctx);
        assert_eq!(names, [".dockerignore", "a", "build/Dockerfile"]);
    }

    #[test]
    fn an_overridden_dockerfile_is_sent_but_the_digest_stays_the_users() {
        let dir = tree(&[("Dockerfile", "FROM scratch\n"), ("a", "a")]);
        let plain = Context::open(dir.path(), &dir.path().join("Dockerfile")).unwrap();
        let mut labelled = Context::open(dir.path(), &dir.path().join("Dockerfile")).unwrap();
        labelled.override_dockerfile(b"FROM scratch\nLABEL x=1\n".to_vec());
        let mut buf = Vec::new();
        let summary = labelled.write_tar(&mut buf).unwrap();
        assert_eq!(summary.digest, plain.summarise().unwrap().digest);
        let mut archive = tar::Archive::new(&buf[..]);
        let mut sent = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some("Dockerfile") {
                std::io::Read::read_to_string(&mut entry, &mut sent).unwrap();
            }
        }
        assert_eq!(sent, "FROM scratch\nLABEL x=1\n");
    }

    #[test]
    fn dockerfile_outside_the_context_is_sent_under_a_fixed_name() {
        let dir = tree(&[("ctx/a", "a"), ("Dockerfile.dev", "FROM scratch\n")]);
        let ctx =
            Context::open(&dir.path().join("ctx"), &dir.path().join("Dockerfile.dev")).unwrap();
        assert_eq!(ctx.dockerfile_name(), OUTSIDE_DOCKERFILE);
        let (names, _) = tar_names(&ctx);
        assert_eq!(names, ["a", OUTSIDE_DOCKERFILE]);
    }

    #[test]
    fn missing_context_and_dockerfile_are_named() {
        let dir = tree(&[("a", "a")]);
        assert!(matches!(
            Context::open(&dir.path().join("nope"), &dir.path().join("Dockerfile")),
            Err(Error::NoContext { .. })
        ));
        assert!(matches!(
            Context::open(dir.path(), &dir.path().join("Dockerfile")),
            Err(Error::NoDockerfile { .. })
        ));
    }
}
