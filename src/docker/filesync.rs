//! BuildKit's file sync: the build context served to the engine file by file, on request.
//!
//! With `/build?remote=client-session`, BuildKit asks the session for the folders it needs
//! (`context`, `dockerfile`) through `moby.filesync.v1.FileSync/DiffCopy`, a bidirectional
//! gRPC stream of `fsutil.types.Packet`s (tonistiigi/fsutil's `send.go` is the reference):
//!
//! 1. labship sends one STAT per entry, parents before children, names sorted byte-wise in
//!    each folder, then an empty STAT;
//! 2. the engine compares them with its copy from the last build (same session shared key)
//!    and sends a REQ with the entry's index for each file it does not have;
//! 3. labship answers each REQ with DATA packets and an empty DATA;
//! 4. the engine sends FIN, labship answers FIN and ends the call.
//!
//! So an unchanged 1 GiB data folder costs 10,000 STATs, not 1 GiB. The call's metadata says
//! which folder (`dir-name`) and which of its files (`include-patterns`, `exclude-patterns`,
//! `followpaths`); the folder itself lists its entries through [`SyncedDir`], which the build
//! stage implements (it knows `.dockerignore`; this module knows the wire).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::sync::mpsc;

/// The gRPC method BuildKit calls to fetch a folder.
pub const DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";

/// Bytes of a file per DATA packet.
const CHUNK: usize = 128 * 1024;
/// Packets queued for the connection before the file reader waits (bounds memory).
const QUEUED: usize = 32;

// ---- the protobuf messages (tonistiigi/fsutil types/wire.proto, types/stat.proto) ----------

#[derive(Clone, PartialEq, Message)]
struct Packet {
    #[prost(int32, tag = "1")]
    kind: i32,
    #[prost(message, optional, tag = "2")]
    stat: Option<Stat>,
    #[prost(uint32, tag = "3")]
    id: u32,
    #[prost(bytes = "bytes", tag = "4")]
    data: Bytes,
}

const PACKET_STAT: i32 = 0;
const PACKET_REQ: i32 = 1;
const PACKET_DATA: i32 = 2;
const PACKET_FIN: i32 = 3;
const PACKET_ERR: i32 = 4;

#[derive(Clone, PartialEq, Message)]
struct Stat {
    #[prost(string, tag = "1")]
    path: String,
    /// Go's `os.FileMode`: permission bits plus type and special bits of its own.
    #[prost(uint32, tag = "2")]
    mode: u32,
    #[prost(uint32, tag = "3")]
    uid: u32,
    #[prost(uint32, tag = "4")]
    gid: u32,
    #[prost(int64, tag = "5")]
    size: i64,
    #[prost(int64, tag = "6")]
    mod_time: i64,
    #[prost(string, tag = "7")]
    linkname: String,
}

// ---- what a folder offers ------------------------------------------------------------------

/// Which of a folder's files the engine asks for (the call's metadata), in `.dockerignore`
/// pattern syntax.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    /// Only these (and the folders leading to them); empty: everything.
    pub include: Vec<String>,
    /// Not these.
    pub exclude: Vec<String>,
    /// Paths whose symlinks are followed (their targets are included too).
    pub follow: Vec<String>,
}

/// One entry of a served folder.
#[derive(Debug, Clone)]
pub struct SyncEntry {
    /// Relative, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    /// Unix permission and special bits (`0o7777`).
    pub mode: u32,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch: with the size and mode, what tells
    /// the engine whether its copy is current.
    pub mtime_ns: i64,
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    Dir,
    /// A file and where its bytes come from.
    File(Source),
    Symlink(String),
}

#[derive(Debug, Clone)]
pub enum Source {
    Disk(PathBuf),
    Memory(Bytes),
}

/// A folder the session serves.
pub trait SyncedDir: Send + Sync + 'static {
    /// The entries the engine asked for, in the order fsutil walks (parents first, names
    /// sorted byte-wise in each folder). Blocking: it reads the disk.
    fn list(&self, wanted: &Wanted) -> std::result::Result<Vec<SyncEntry>, String>;
}

/// What was sent of one folder's files during a session (a file fetched by two calls, as
/// `.dockerignore` is, counts once).
#[derive(Debug, Default)]
pub struct Sent {
    files: Mutex<HashMap<String, u64>>,
}

impl Sent {
    fn add(&self, path: &str, size: u64) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(path.to_string(), size);
        }
    }

    /// Files and bytes sent so far.
    pub fn get(&self) -> (u64, u64) {
        self.files
            .lock()
            .map(|files| (files.len() as u64, files.values().sum()))
            .unwrap_or_default()
    }
}

/// A folder with its name (`context`, `dockerfile`) and its counters.
#[derive(Clone)]
pub struct Served {
    pub dir: Arc<dyn SyncedDir>,
    pub sent: Arc<Sent>,
}

// ---- serving one call ----------------------------------------------------------------------

/// What the connection writer is given.
enum Out {
    Frame(Bytes),
    /// End the call with this gRPC status and message.
    End(u32, String),
}

/// What the file reader is given.
enum Job {
    File(u32),
    Fin,
    /// The engine gave up: send nothing more.
    Stop,
    /// End the call with this error (INTERNAL).
    Fail(String),
}

/// Serves one DiffCopy call.
pub async fn serve(
    request: hyper::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    dirs: &HashMap<String, Served>,
) -> std::result::Result<(), h2::Error> {
    let headers = request.headers();
    let wanted = Wanted {
        include: metadata(headers, "include-patterns"),
        exclude: metadata(headers, "exclude-patterns"),
        follow: metadata(headers, "followpaths"),
    };
    let name = metadata(headers, "dir-name").into_iter().next();
    let mut stream = open_call(respond)?;
    let Some(served) = name.as_ref().and_then(|n| dirs.get(n)).cloned() else {
        // INVALID_ARGUMENT, as BuildKit's own provider answers for a folder it does not have.
        return end_call(
            &mut stream,
            3,
            &format!("no access allowed to dir {:?}", name.unwrap_or_default()),
        );
    };
    let mut body = request.into_body();

    let dir = Arc::clone(&served.dir);
    let listed = tokio::task::spawn_blocking(move || dir.list(&wanted))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let entries = match listed {
        Ok(entries) => Arc::new(entries),
        Err(message) => {
            let _ = stream.send_data(frame(&error_packet(&message)), false);
            return end_call(&mut stream, 2, &message);
        }
    };

    let (out_tx, out_rx) = mpsc::channel::<Out>(QUEUED);
    let writer = tokio::spawn(write_out(stream, out_rx));

    // The list, in batches of frames, sent while the engine's requests are read below (it
    // asks for files as the list arrives; unread requests would fill the connection window).
    let lister = {
        let out = out_tx.clone();
        let entries = Arc::clone(&entries);
        tokio::spawn(async move {
            let mut batch = BytesMut::new();
            for entry in entries.iter() {
                batch.extend_from_slice(&frame(&stat_packet(entry)));
                if batch.len() >= 64 * 1024
                    && out.send(Out::Frame(batch.split().freeze())).await.is_err()
                {
                    return;
                }
            }
            batch.extend_from_slice(&frame(&Packet::default().encode_to_vec()));
            let _ = out.send(Out::Frame(batch.freeze())).await;
        })
    };

    // Files, in the order asked, read on a blocking thread.
    let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
    let reader = {
        let out = out_tx.clone();
        let entries = Arc::clone(&entries);
        let sent = Arc::clone(&served.sent);
        tokio::task::spawn_blocking(move || send_files(&entries, &job_rx, &out, &sent))
    };

    // The engine's packets.
    let mut pending = BytesMut::new();
    'calls: while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        let _ = body.flow_control().release_capacity(chunk.len());
        pending.extend_from_slice(&chunk);
        while let Some(message) = next_message(&mut pending) {
            let Ok(packet) = Packet::decode(message) else {
                let _ = job_tx.send(Job::Fail(
                    "the engine sent a packet labship cannot read".into(),
                ));
                break 'calls;
            };
            match packet.kind {
                PACKET_REQ => {
                    let queued = job_tx.send(Job::File(packet.id));
                    if queued.is_err() {
                        break 'calls;
                    }
                }
                PACKET_FIN => {
                    let _ = job_tx.send(Job::Fin);
                    break 'calls;
                }
                PACKET_ERR => {
                    tracing::debug!(
                        "BuildKit ended the file sync: {}",
                        String::from_utf8_lossy(&packet.data)
                    );
                    let _ = job_tx.send(Job::Stop);
                    break 'calls;
                }
                _ => {}
            }
        }
    }
    drop(job_tx);
    let _ = reader.await;
    lister.abort();
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// Answers the file requests until FIN (answered with FIN) or the call ends.
fn send_files(
    entries: &[SyncEntry],
    jobs: &std::sync::mpsc::Receiver<Job>,
    out: &mpsc::Sender<Out>,
    sent: &Sent,
) {
    let put = |item: Out| out.blocking_send(item).is_ok();
    while let Ok(job) = jobs.recv() {
        let id = match job {
            Job::Fin => {
                let fin = Packet {
                    kind: PACKET_FIN,
                    ..Packet::default()
                };
                put(Out::Frame(frame(&fin.encode_to_vec())));
                put(Out::End(0, String::new()));
                return;
            }
            Job::Stop => return,
            Job::Fail(message) => {
                put(Out::Frame(frame(&error_packet(&message))));
                put(Out::End(13, message));
                return;
            }
            Job::File(id) => id,
        };
        let entry = usize::try_from(id).ok().and_then(|i| entries.get(i));
        let result = match entry {
            Some(SyncEntry {
                kind: EntryKind::File(source),
                size,
                path,
                ..
            }) => send_file(id, source, *size, &put).map_err(|e| format!("reading {path}: {e}")),
            _ => Err(format!("invalid file request {id}")),
        };
        match result {
            Ok(true) => {
                if let Some(e) = entry {
                    sent.add(&e.path, e.size);
                }
            }
            // The connection is gone.
            Ok(false) => return,
            Err(message) => {
                put(Out::Frame(frame(&error_packet(&message))));
                put(Out::End(2, message));
                return;
            }
        }
    }
}

/// Sends one file as DATA packets and an empty DATA. Ok(false) when the connection is gone;
/// a file whose size changed since it was listed is an error (the engine would take a
/// different file than the one it was told about).
fn send_file(
    id: u32,
    source: &Source,
    size: u64,
    put: &impl Fn(Out) -> bool,
) -> std::io::Result<bool> {
    let data = |data: Bytes| {
        frame(
            &Packet {
                kind: PACKET_DATA,
                id,
                data,
                ..Packet::default()
            }
            .encode_to_vec(),
        )
    };
    match source {
        Source::Memory(bytes) => {
            for chunk in bytes.chunks(CHUNK) {
                if !put(Out::Frame(data(Bytes::copy_from_slice(chunk)))) {
                    return Ok(false);
                }
            }
        }
        Source::Disk(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            // Not through a symlink put in the file's place since it was listed.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            let mut file = file.take(size.saturating_add(1));
            let mut total = 0u64;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = read_full(&mut file, &mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > size {
                    break;
                }
                buf.truncate(n);
                if !put(Out::Frame(data(Bytes::from(buf)))) {
                    return Ok(false);
                }
            }
            if total != size {
                return Err(std::io::Error::other(
                    "the file changed size while it was being sent; run the build again",
                ));
            }
        }
    }
    Ok(put(Out::Frame(data(Bytes::new()))))
}

/// Fills `buf` as far as the reader allows (fewer bytes only at the end).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes the queued packets within the connection's flow-control window (so a 1 GiB file
/// never sits in memory), then the trailers.
async fn write_out(mut stream: h2::SendStream<Bytes>, mut rx: mpsc::Receiver<Out>) {
    while let Some(item) = rx.recv().await {
        match item {
            Out::Frame(bytes) => {
                if !send_within_window(&mut stream, bytes).await {
                    return;
                }
            }
            Out::End(code, message) => {
                let _ = end_call(&mut stream, code, &message);
                return;
            }
        }
    }
    // Every sender is gone without an end (the engine hung up): close the call cleanly.
    let _ = end_call(&mut stream, 0, "");
}

/// Sends `bytes` on the call as the peer's flow-control window allows (never buffering more
/// than it grants); false when the call is gone.
pub(super) async fn send_within_window(
    stream: &mut h2::SendStream<Bytes>,
    mut bytes: Bytes,
) -> bool {
    while !bytes.is_empty() {
        stream.reserve_capacity(bytes.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) if n > 0 => n,
            Some(Ok(_)) => continue,
            _ => return false,
        };
        let part = bytes.split_to(granted.min(bytes.len()));
        if stream.send_data(part, false).is_err() {
            return false;
        }
    }
    true
}

/// Answers a call's headers (HTTP 200, `application/grpc`); messages and trailers follow.
pub(super) fn open_call(
    mut respond: h2::server::SendResponse<Bytes>,
) -> std::result::Result<h2::SendStream<Bytes>, h2::Error> {
    let head = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .map_err(|_| h2::Error::from(h2::Reason::INTERNAL_ERROR))?;
    respond.send_response(head, false)
}

/// Ends a call with its gRPC status (and message, when not OK).
pub(super) fn end_call(
    stream: &mut h2::SendStream<Bytes>,
    code: u32,
    message: &str,
) -> std::result::Result<(), h2::Error> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from(code));
    if !message.is_empty() {
        let text: String =
            percent_encoding::utf8_percent_encode(message, percent_encoding::CONTROLS).to_string();
        if let Ok(v) = hyper::header::HeaderValue::from_str(&text) {
            trailers.insert("grpc-message", v);
        }
    }
    stream.send_trailers(trailers)
}

/// A metadata key's values; `<key>-encoded: true` means they are URL-encoded (newer BuildKit
/// clients encode patterns that are not ASCII).
fn metadata(headers: &hyper::HeaderMap, key: &str) -> Vec<String> {
    let encoded = headers
        .get(format!("{key}-encoded"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
    headers
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            } else {
                v.to_string()
            }
        })
        .collect()
}

fn stat_packet(entry: &SyncEntry) -> Vec<u8> {
    Packet {
        kind: PACKET_STAT,
        stat: Some(Stat {
            path: entry.path.clone(),
            mode: go_mode(entry),
            // Files arrive owned by root, as the docker CLI sends them.
            uid: 0,
            gid: 0,
            size: if matches!(entry.kind, EntryKind::Dir) {
                0
            } else {
                i64::try_from(entry.size).unwrap_or(i64::MAX)
            },
            mod_time: entry.mtime_ns,
            linkname: match &entry.kind {
                EntryKind::Symlink(target) => target.clone(),
                _ => String::new(),
            },
        }),
        ..Packet::default()
    }
    .encode_to_vec()
}

fn error_packet(message: &str) -> Vec<u8> {
    Packet {
        kind: PACKET_ERR,
        data: Bytes::copy_from_slice(message.as_bytes()),
        ..Packet::default()
    }
    .encode_to_vec()
}

/// Go's `os.FileMode` for an entry: the permission bits, `ModeDir` (1<<31) or `ModeSymlink`
/// (1<<27), and setuid/setgid/sticky at Go's own positions.
fn go_mode(entry: &SyncEntry) -> u32 {
    let mut mode = entry.mode & 0o777;
    if entry.mode & 0o4000 != 0 {
        mode |= 1 << 23;
    }
    if entry.mode & 0o2000 != 0 {
        mode |= 1 << 22;
    }
    if entry.mode & 0o1000 != 0 {
        mode |= 1 << 20;
    }
    match entry.kind {
        EntryKind::Dir => mode | 1 << 31,
        EntryKind::Symlink(_) => mode | 1 << 27,
        EntryKind::File(_) => mode,
    }
}

/// A gRPC frame: 1 byte "compressed" (0), 4 bytes length, the message.
pub(super) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(message);
    out.freeze()
}

/// Takes one whole gRPC message off the front of `pending`, if it holds one.
pub(super) fn next_message(pending: &mut BytesMut) -> Option<Bytes> {
    if pending.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
    if pending.len() < 5 + len {
        return None;
    }
    pending.advance(5);
    Some(pending.split_to(len).freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, mode: u32) -> SyncEntry {
        SyncEntry {
            path: path.into(),
            kind,
            mode,
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn modes_are_gos() {
        assert_eq!(
            go_mode(&entry("d", EntryKind::Dir, 0o755)),
            0o755 | 0x8000_0000
        );
        assert_eq!(
            go_mode(&entry("l", EntryKind::Symlink("x".into()), 0o777)),
            0o777 | 0x0800_0000
        );
        let file = EntryKind::File(Source::Memory(Bytes::new()));
        assert_eq!(go_mode(&entry("f", file.clone(), 0o644)), 0o644);
        assert_eq!(
            go_mode(&entry("f", file, 0o4755 | 0o1000)),
            0o755 | 1 << 23 | 1 << 20
        );
    }

    #[test]
    fn stats_carry_path_time_size_and_link() {
        let packet = Packet::decode(
            &stat_packet(&entry("a/b", EntryKind::Symlink("../c".into()), 0o777))[..],
        )
        .expect("decode");
        assert_eq!(packet.kind, PACKET_STAT);
        let stat = packet.stat.expect("stat");
        assert_eq!(stat.path, "a/b");
        assert_eq!(stat.linkname, "../c");
        assert_eq!(stat.mod_time, 1_700_000_000_123_456_789);
        assert_eq!(stat.size, 3);
        assert_eq!((stat.uid, stat.gid), (0, 0));
        let dir = Packet::decode(&stat_packet(&entry("a", EntryKind::Dir, 0o755))[..])
            .expect("decode")
            .stat
            .expect("stat");
        assert_eq!(dir.size, 0);
        // The list ends with a STAT packet without a stat.
        let last = Packet::decode(&Packet::default().encode_to_vec()[..]).expect("decode");
        assert!(last.kind == PACKET_STAT && last.stat.is_none());
    }

    #[test]
    fn messages_are_taken_whole_across_chunks() {
        let one = frame(
            &Packet {
                kind: PACKET_REQ,
                id: 7,
                ..Packet::default()
            }
            .encode_to_vec(),
        );
        let two = frame(
            &Packet {
                kind: PACKET_FIN,
                ..Packet::default()
            }
            .encode_to_vec(),
        );
        let mut all = BytesMut::new();
        all.extend_from_slice(&one);
        all.extend_from_slice(&two);
        let mut pending = BytesMut::new();
        let mut got = Vec::new();
        for byte in all.iter() {
            pending.put_u8(*byte);
            while let Some(m) = next_message(&mut pending) {
                got.push(Packet::decode(m).expect("decode"));
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].kind, got[0].id), (PACKET_REQ, 7));
        assert_eq!(got[1].kind, PACKET_FIN);
    }

    #[test]
    fn files_go_in_chunks_and_end_with_an_empty_packet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; CHUNK + 10]).expect("write");
        let got = std::sync::Mutex::new(Vec::new());
        let put = |o: Out| {
            if let Out::Frame(mut b) = o {
                let m = next_message(&mut BytesMut::from(&b.split_off(0)[..])).expect("frame");
                got.lock()
                    .expect("lock")
                    .push(Packet::decode(m).expect("decode"));
            }
            true
        };
        assert!(
            send_file(4, &Source::Disk(path.clone()), (CHUNK + 10) as u64, &put).expect("send")
        );
        let got = got.into_inner().expect("lock");
        let sizes: Vec<usize> = got.iter().map(|p| p.data.len()).collect();
        assert_eq!(sizes, vec![CHUNK, 10, 0]);
        assert!(got.iter().all(|p| p.kind == PACKET_DATA && p.id == 4));
        // Listed at one size, found at another: an error, not a wrong file.
        let err = send_file(4, &Source::Disk(path), 5, &|_| true).expect_err("size changed");
        assert!(err.to_string().contains("changed size"), "{err}");
    }

    #[test]
    fn metadata_values_are_decoded_when_marked() {
        let mut h = hyper::HeaderMap::new();
        h.append("include-patterns", "a%2Fb%C3%A9".parse().expect("value"));
        h.append("include-patterns", "c".parse().expect("value"));
        assert_eq!(metadata(&h, "include-patterns"), vec!["a%2Fb%C3%A9", "c"]);
        h.insert("include-patterns-encoded", "true".parse().expect("value"));
        assert_eq!(metadata(&h, "include-patterns"), vec!["a/bé", "c"]);
    }
}
