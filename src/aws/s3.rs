//! S3 in the words of a job's data: an `s3://` address, the objects under it, a folder of
//! them fetched in parallel ranges, and a folder of results put back.
//!
//! A bucket is reached in its own region: [`S3::locate`] asks HeadBucket (whose answer, or
//! redirect, names the region), and every later call on that bucket goes to a client of that
//! region. With a custom endpoint (`AWS_ENDPOINT_URL`, e.g. moto) addresses are path-style:
//! a bucket name as a host name does not resolve on a loopback endpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::primitives::ByteStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{api_error, Aws};
use crate::error::{Error, Result};

/// Ranged GETs of this size for a large object (the AWS CLI's default chunk size).
pub const PART: u64 = 8 * 1024 * 1024;
/// Requests in flight at once (the AWS CLI's default `max_concurrent_requests`).
pub const CONCURRENCY: usize = 10;
/// Files above this go up in parts (multipart upload), several at once.
pub const MULTIPART_FROM: u64 = 64 * 1024 * 1024;
/// The smallest part; a file of more than 10,000 of them gets larger ones (S3's limit).
const UPLOAD_PART: u64 = 16 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// Parts of one file in flight.
const PARTS_AT_ONCE: usize = 4;
/// S3's largest object.
const MAX_OBJECT: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// `s3://bucket/key-or-prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(into = "String")]
pub struct S3Uri {
    pub bucket: String,
    /// The key or prefix, without a leading `/` ("" for the whole bucket).
    pub key: String,
}

impl From<S3Uri> for String {
    fn from(uri: S3Uri) -> String {
        uri.to_string()
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl S3Uri {
    /// `s3://bucket`, `s3://bucket/prefix/` or `s3://bucket/key`; the bucket name as S3 names
    /// buckets (3-63 lowercase letters, digits, dots and hyphens).
    pub fn parse(raw: &str) -> Result<S3Uri> {
        let bad = |reason: &str| Error::InvalidSetting {
            what: "S3 address",
            value: raw.to_string(),
            reason: reason.to_string(),
            hint: "write it as s3://BUCKET/PREFIX, e.g. s3://my-class-data/week1/".into(),
        };
        let rest = raw
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket.chars().all(valid_char)
            || !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(bad(
                "the bucket name is not one S3 allows (3-63 lowercase letters, digits, dots and hyphens)",
            ));
        }
        let key = key.trim_start_matches('/');
        if key.split('/').any(|part| part == ".." || part == ".") {
            return Err(bad("`.` and `..` are not folders in S3"));
        }
        Ok(S3Uri {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The last folder or file name of the address (the bucket's name for a whole bucket):
    /// where an input lands in the workspace.
    pub fn name(&self) -> &str {
        self.key
            .split('/')
            .rfind(|part| !part.is_empty())
            .unwrap_or(&self.bucket)
    }

    /// The address of `rel` under this one as a folder.
    pub fn join(&self, rel: &str) -> S3Uri {
        let base = self.key.trim_end_matches('/');
        let key = if base.is_empty() {
            rel.to_string()
        } else {
            format!("{base}/{rel}")
        };
        S3Uri {
            bucket: self.bucket.clone(),
            key,
        }
    }
}

/// An object under an address: its path relative to the address (its file name for a
/// single object), size and ETag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Object {
    pub rel: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// S3 of one account, a client per region a bucket lives in.
#[derive(Clone)]
pub struct S3 {
    aws: Aws,
    clients: Arc<Mutex<HashMap<String, aws_sdk_s3::Client>>>,
}

/// A bucket and the client of its region.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub name: String,
    pub region: String,
    client: aws_sdk_s3::Client,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3 ({})", self.aws.region)
    }
}

impl S3 {
    pub fn new(aws: &Aws) -> S3 {
        S3 {
            aws: aws.clone(),
            clients: Arc::default(),
        }
    }

    fn client(&self, region: &str) -> aws_sdk_s3::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let sdk = self.aws.in_region(region).sdk;
                let custom_endpoint = sdk.endpoint_url().is_some();
                let config = aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(custom_endpoint)
                    .build();
                aws_sdk_s3::Client::from_conf(config)
            })
            .clone()
    }

    /// The bucket of `uri`, in its region: HeadBucket answers with the region, and a bucket
    /// of another region answers a 301 that names it. A bucket that does not exist, or that
    /// the caller may not read, is said so with the fix.
    pub async fn locate(&self, uri: &S3Uri) -> Result<Bucket> {
        let here = Bucket {
            name: uri.bucket.clone(),
            region: self.aws.region.clone(),
            client: self.client(&self.aws.region),
        };
        let answer = super::retry::read(std::time::Duration::from_secs(60), || async {
            match here.client.head_bucket().bucket(&here.name).send().await {
                Ok(out) => Ok(out.bucket_region().map(str::to_string)),
                Err(e) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    let region = e
                        .raw_response()
                        .and_then(|r| r.headers().get("x-amz-bucket-region"))
                        .map(str::to_string);
                    match (status, region) {
                        (Some(301 | 400), Some(region)) => Ok(Some(region)),
                        (Some(404), _) => Err(Error::S3Data {
                            uri: uri.to_string(),
                            reason: format!("bucket {} does not exist", uri.bucket),
                            hint: "check the bucket's name (`aws s3 ls` lists yours)".into(),
                        }),
                        // A HEAD's 403 has no body: rejected credentials look the same.
                        (Some(403), _) => Err(self.rejected_credentials().await.unwrap_or(Error::S3Data {
                            uri: uri.to_string(),
                            reason: format!(
                                "access to bucket {} is denied (s3:ListBucket)",
                                uri.bucket
                            ),
                            hint: "ask the bucket's owner for s3:ListBucket and s3:GetObject (inputs) or s3:PutObject (results) on it, or use another profile (--profile)".into(),
                        })),
                        _ => Err(api_error(&here.region, "s3", "HeadBucket", &uri.bucket, &e)),
                    }
                }
            }
        })
        .await?;
        let region = answer.unwrap_or(here.region);
        Ok(Bucket {
            name: uri.bucket.clone(),
            client: self.client(&region),
            region,
        })
    }
}

impl S3 {
    /// The error of credentials AWS does not accept (STS GetCallerIdentity, which any valid
    /// credentials may call), if that is what they are.
    async fn rejected_credentials(&self) -> Option<Error> {
        let sts = aws_sdk_sts::Client::new(&self.aws.sdk);
        match sts.get_caller_identity().send().await {
            Ok(_) => None,
            Err(e) => match api_error(
                &self.aws.region,
                "sts",
                "GetCallerIdentity",
                "the caller",
                &e,
            ) {
                rejected @ Error::CredentialsRejected { .. } => Some(rejected),
                _ => None,
            },
        }
    }
}

impl Bucket {
    fn fail<E>(&self, op: &str, uri: &S3Uri, err: &aws_sdk_s3::error::SdkError<E>) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        api_error(&self.region, "s3", op, &uri.to_string(), err)
    }

    /// The objects of `uri`: the object itself when its key names one, else every object
    /// under it as a folder (`prefix/`), folder markers left out. Keys that would not make a
    /// plain relative path (`a//b`, `../x`) are refused.
    pub async fn list(&self, uri: &S3Uri) -> Result<Vec<Object>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(&uri.key)
            .into_paginator()
            .send();
        let folder = match uri.key.trim_end_matches('/') {
            "" => String::new(),
            k => format!("{k}/"),
        };
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("ListObjectsV2", uri, &e))?;
            for o in page.contents() {
                let key = o.key().unwrap_or_default();
                let rel = if key == uri.key && !key.ends_with('/') {
                    uri.name().to_string()
                } else if let Some(rel) = key.strip_prefix(&folder) {
                    rel.to_string()
                } else {
                    // `data2/x` under `s3://b/data`: not in the folder `data/`.
                    continue;
                };
                if rel.is_empty() || rel.ends_with('/') {
                    continue;
                }
                if rel
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
                {
                    return Err(Error::S3Data {
                        uri: uri.to_string(),
                        reason: format!("the key {key} is not a plain file path"),
                        hint: "rename the object (no empty, `.` or `..` path parts), or give a narrower prefix".into(),
                    });
                }
                objects.push(Object {
                    rel,
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                });
            }
        }
        // A key that is itself an object wins over a folder of the same name.
        if objects.iter().any(|o| o.key == uri.key) {
            objects.retain(|o| o.key == uri.key);
        }
        objects.sort_by(|a, b| a.rel.cmp(&b.rel));
        if let Some((parent, rel)) = file_and_folder(&objects) {
            return Err(Error::S3Data {
                uri: uri.to_string(),
                reason: format!(
                    "{} is an object and a folder (of {rel}) at once",
                    uri.join(&parent)
                ),
                hint: "rename one of them, or give a narrower prefix".into(),
            });
        }
        Ok(objects)
    }

    /// Fetches `objects` of `uri` into `dest` (their `rel` paths), CONCURRENCY requests at
    /// once, a large object in PART-sized ranges, each range of the version listed (If-Match
    /// its ETag: an object replaced meanwhile fails instead of mixing two versions). Each file
    /// is written beside its name and renamed when whole; on failure, the partial files
    /// are removed. `progress` is called with the bytes of each range as it lands.
    pub async fn download(
        &self,
        uri: &S3Uri,
        objects: &[Object],
        dest: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let write_err = |path: &Path, e: std::io::Error| Error::Write {
            path: path.to_path_buf(),
            source: e,
        };
        let mut parts = Vec::new();
        let mut partials = Vec::new();
        for (index, o) in objects.iter().enumerate() {
            let path = dest.join(&o.rel);
            let partial = part_path(&path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
            }
            let file = std::fs::File::create(&partial).map_err(|e| write_err(&partial, e))?;
            file.set_len(o.size).map_err(|e| write_err(&partial, e))?;
            partials.push((partial, path));
            let mut start = 0;
            while start < o.size {
                let len = PART.min(o.size - start);
                parts.push((index, start, len));
                start += len;
            }
        }
        let fetched = futures_util::stream::iter(parts)
            .map(|(index, start, len)| {
                let o = &objects[index];
                let partial = &partials[index].0;
                async move {
                    self.fetch_range(uri, o, start, len, partial, progress)
                        .await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await;
        if let Err(e) = fetched {
            for (partial, _) in &partials {
                let _ = std::fs::remove_file(partial);
            }
            return Err(e);
        }
        for (partial, path) in &partials {
            std::fs::rename(partial, path).map_err(|e| write_err(path, e))?;
        }
        Ok(())
    }

    /// One range of an object into its place in `partial`; a range whose answer failed or
    /// broke off on the way (AWS busy, a lost connection) is asked for again, from its start,
    /// for up to two minutes (the SDK's own retries do not cover a body cut short).
    /// `progress` hears of the range once it is written.
    async fn fetch_range(
        &self,
        uri: &S3Uri,
        o: &Object,
        start: u64,
        len: u64,
        partial: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        super::retry::read(std::time::Duration::from_secs(120), || {
            self.fetch_range_once(uri, o, start, len, partial)
        })
        .await?;
        progress(len);
        Ok(())
    }

    async fn fetch_range_once(
        &self,
        uri: &S3Uri,
        o: &Object,
        start: u64,
        len: u64,
        partial: &Path,
    ) -> Result<()> {
        let at = uri.join(&o.rel);
        let mut request = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(&o.key)
            .range(format!("bytes={}-{}", start, start + len - 1));
        if !o.etag.is_empty() {
            request = request.if_match(&o.etag);
        }
        let answer = request.send().await.map_err(|e| {
            if e.raw_response().map(|r| r.status().as_u16()) == Some(412) {
                Error::S3Data {
                    uri: at.to_string(),
                    reason: "the object changed while it was being copied".into(),
                    hint: "run again once the bucket's writer is done".into(),
                }
            } else {
                self.fail("GetObject", &at, &e)
            }
        })?;
        let write_err = |e: std::io::Error| Error::Write {
            path: partial.to_path_buf(),
            source: e,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(partial)
            .await
            .map_err(write_err)?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(write_err)?;
        let mut body = answer.body;
        let mut got = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::AwsUnavailable {
                action: "s3:GetObject".into(),
                resource: at.to_string(),
                region: self.region.clone(),
                message: format!("the download broke off: {e}"),
            })?;
            file.write_all(&chunk).await.map_err(write_err)?;
            got += chunk.len() as u64;
        }
        file.flush().await.map_err(write_err)?;
        if got != len {
            return Err(Error::AwsUnavailable {
                action: "s3:GetObject".into(),
                resource: at.to_string(),
                region: self.region.clone(),
                message: format!("{got} bytes came of the {len} asked for"),
            });
        }
        Ok(())
    }

    /// The object at `uri`, whole (a small one: a run's report), or `None` when there is none.
    pub async fn get_bytes(&self, uri: &S3Uri) -> Result<Option<Vec<u8>>> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.name)
            .key(&uri.key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.fail("GetObject", uri, &e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::AwsUnavailable {
                action: "s3:GetObject".into(),
                resource: uri.to_string(),
                region: self.region.clone(),
                message: format!("the download broke off: {e}"),
            })?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    /// Puts `bytes` at `uri`.
    pub async fn put_bytes(&self, uri: &S3Uri, bytes: Vec<u8>) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(&uri.key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.fail("PutObject", uri, &e))?;
        Ok(())
    }

    /// Deletes the object at `uri` (S3 answers the same whether or not it was there).
    pub async fn delete(&self, uri: &S3Uri) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| self.fail("DeleteObject", uri, &e))?;
        Ok(())
    }

    /// Puts every file under `dir` (but `except`, a path relative to it) at `uri`/its path,
    /// CONCURRENCY at once; the keys put.
    pub async fn upload_dir(&self, dir: &Path, uri: &S3Uri, except: &str) -> Result<Vec<String>> {
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
            let entry = entry.map_err(|e| Error::ReadInput {
                path: dir.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(dir)
                .unwrap_or(entry.path())
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if rel == except {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if size > MAX_OBJECT {
                return Err(Error::S3Data {
                    uri: uri.join(&rel).to_string(),
                    reason: format!("{rel} is {size} bytes, above S3's 5 TiB for one object"),
                    hint: "write the result as several files".into(),
                });
            }
            files.push((entry.path().to_path_buf(), rel, size));
        }
        futures_util::stream::iter(files)
            .map(|(path, rel, size)| async move {
                let at = uri.join(&rel);
                if size > MULTIPART_FROM {
                    self.put_in_parts(&path, &at, size).await?;
                    return Ok(at.key);
                }
                let body = ByteStream::from_path(&path)
                    .await
                    .map_err(|e| Error::ReadInput {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                self.client
                    .put_object()
                    .bucket(&self.name)
                    .key(&at.key)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.fail("PutObject", &at, &e))?;
                Ok::<_, Error>(at.key)
            })
            .buffer_unordered(CONCURRENCY)
            // Every file to its end (a multipart upload that fails aborts itself; dropped
            // half-way, it could not), then the first failure.
            .collect::<Vec<Result<String>>>()
            .await
            .into_iter()
            .collect()
    }

    /// A large file as a multipart upload: its parts PARTS_AT_ONCE at a time, then the
    /// whole; an upload that fails is aborted (S3 would otherwise keep, and bill, its parts).
    async fn put_in_parts(&self, path: &Path, at: &S3Uri, size: u64) -> Result<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(&at.key)
            .send()
            .await
            .map_err(|e| self.fail("CreateMultipartUpload", at, &e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(Error::Aws {
                action: "s3:CreateMultipartUpload".into(),
                resource: at.to_string(),
                region: self.region.clone(),
                message: "S3 answered without an upload id".into(),
                hint: "check AWS_ENDPOINT_URL: this is not how S3 answers".into(),
            });
        };
        // Dropped before the end (Ctrl-C, or another file's upload failed): aborted all the
        // same, in the background.
        let mut guard = AbortOnDrop {
            bucket: Some(self.clone()),
            at: at.clone(),
            upload_id: upload_id.clone(),
        };
        let parts = async {
            let mut parts: Vec<aws_sdk_s3::types::CompletedPart> =
                futures_util::stream::iter(part_ranges(size))
                    .map(|(number, start, len)| {
                        let upload_id = &upload_id;
                        async move {
                            // Streamed from the file, not read into memory first.
                            let body = ByteStream::read_from()
                                .path(path)
                                .offset(start)
                                .length(aws_sdk_s3::primitives::Length::Exact(len))
                                .build()
                                .await
                                .map_err(|e| Error::ReadInput {
                                    path: path.to_path_buf(),
                                    source: std::io::Error::other(e.to_string()),
                                })?;
                            let part = self
                                .client
                                .upload_part()
                                .bucket(&self.name)
                                .key(&at.key)
                                .upload_id(upload_id)
                                .part_number(number)
                                .body(body)
                                .send()
                                .await
                                .map_err(|e| self.fail("UploadPart", at, &e))?;
                            Ok::<_, Error>(
                                aws_sdk_s3::types::CompletedPart::builder()
                                    .part_number(number)
                                    .set_e_tag(part.e_tag().map(str::to_string))
                                    .build(),
                            )
                        }
                    })
                    .buffer_unordered(PARTS_AT_ONCE)
                    .try_collect()
                    .await?;
            parts.sort_by_key(|p| p.part_number());
            self.client
                .complete_multipart_upload()
                .bucket(&self.name)
                .key(&at.key)
                .upload_id(&upload_id)
                .multipart_upload(
                    aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.fail("CompleteMultipartUpload", at, &e))?;
            Ok::<_, Error>(())
        };
        // A Ctrl-C ends the upload here, so that it is aborted before labship exits.
        let parts = tokio::select! {
            done = parts => done,
            () = crate::interrupt::stopped() => {
                crate::interrupt::checkpoint(&format!("the upload of {at}"))
            }
        };
        if parts.is_err() {
            self.abort(at, &upload_id).await;
        }
        guard.disarm();
        parts
    }

    /// Aborts a multipart upload (its parts are deleted); says how to do it by hand when S3
    /// refuses.
    async fn abort(&self, at: &S3Uri, upload_id: &str) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(&at.key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = aborted {
            tracing::warn!(
                "could not abort the upload of {at} ({}): `aws s3api abort-multipart-upload --bucket {} --key {} --upload-id {upload_id}` does; S3 keeps its parts until then",
                crate::error::aws_message(&e),
                self.name,
                at.key
            );
        }
    }
}

/// Aborts a multipart upload that is dropped before its end (see [`Bucket::put_in_parts`]).
struct AbortOnDrop {
    bucket: Option<Bucket>,
    at: S3Uri,
    upload_id: String,
}

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.bucket = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(bucket) = self.bucket.take() else {
            return;
        };
        let (at, upload_id) = (self.at.clone(), self.upload_id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { bucket.abort(&at, &upload_id).await });
        }
    }
}

/// The parts of a file of `size` bytes: (part number from 1, start, length), UPLOAD_PART
/// each, larger when it would take more than MAX_PARTS.
fn part_ranges(size: u64) -> Vec<(i32, u64, u64)> {
    let part = UPLOAD_PART.max(size.div_ceil(MAX_PARTS));
    (0..size.div_ceil(part))
        .map(|i| {
            let start = i * part;
            (i as i32 + 1, start, part.min(size - start))
        })
        .collect()
}

/// `a` and `a/b` among `objects`: a file and a folder of one name, which no disk can hold.
/// The first such (folder, object in it).
fn file_and_folder(objects: &[Object]) -> Option<(String, String)> {
    let files: std::collections::HashSet<&str> = objects.iter().map(|o| o.rel.as_str()).collect();
    objects.iter().find_map(|o| {
        let mut folder = o.rel.as_str();
        while let Some((parent, _)) = folder.rsplit_once('/') {
            if files.contains(parent) {
                return Some((parent.to_string(), o.rel.clone()));
            }
            folder = parent;
        }
        None
    })
}

/// Where a file is written until it is whole.
fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".labship-part");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_go_up_in_parts_of_at_least_16_mib_and_at_most_10000() {
        const MIB: u64 = 1024 * 1024;
        let parts = part_ranges(70 * MIB);
        assert_eq!(
            parts,
            [
                (1, 0, 16 * MIB),
                (2, 16 * MIB, 16 * MIB),
                (3, 32 * MIB, 16 * MIB),
                (4, 48 * MIB, 16 * MIB),
                (5, 64 * MIB, 6 * MIB)
            ]
        );
        let huge = 400 * 1024 * MIB;
        let parts = part_ranges(huge);
        assert!(parts.len() <= 10_000, "{}", parts.len());
        assert_eq!(parts.iter().map(|p| p.2).sum::<u64>(), huge);
        assert_eq!(parts.last().map(|p| p.0), Some(parts.len() as i32));
    }

    #[test]
    fn a_file_and_a_folder_of_one_name_are_found() {
        let objects = |rels: &[&str]| -> Vec<Object> {
            rels.iter()
                .map(|r| Object {
                    rel: r.to_string(),
                    key: format!("p/{r}"),
                    size: 1,
                    etag: String::new(),
                })
                .collect()
        };
        assert_eq!(file_and_folder(&objects(&["a", "a-b", "b/c"])), None);
        assert_eq!(
            file_and_folder(&objects(&["a", "a-x", "a/b/c.csv"])),
            Some(("a".into(), "a/b/c.csv".into()))
        );
        assert_eq!(
            file_and_folder(&objects(&["d/e", "d/e/f"])),
            Some(("d/e".into(), "d/e/f".into()))
        );
    }

    #[test]
    fn addresses() {
        let u = S3Uri::parse("s3://my-data/week1/").unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("my-data", "week1/"));
        assert_eq!(u.name(), "week1");
        assert_eq!(u.join("a/b.csv").key, "week1/a/b.csv");
        assert_eq!(u.to_string(), "s3://my-data/week1/");
        let whole = S3Uri::parse("s3://my-data").unwrap();
        assert_eq!((whole.key.as_str(), whole.name()), ("", "my-data"));
        assert_eq!(whole.join("x").key, "x");
        assert_eq!(
            S3Uri::parse("s3://b12/data/iris.csv").unwrap().name(),
            "iris.csv"
        );
        for bad in [
            "my-data/x",
            "https://my-data/x",
            "s3://",
            "s3://ab",
            "s3://My-Data/x",
            "s3://-data/x",
            "s3://data_/x",
            "s3://data/../x",
        ] {
            assert!(S3Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
