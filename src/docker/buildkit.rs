//! BuildKit builds through the engine API: `POST /build?version=2&remote=client-session`, the
//! context served through the session (see [`super::filesync`]), sent by hand because bollard (without its gRPC `buildkit` feature) cannot read the
//! answer: BuildKit reports progress as `{"id":"moby.buildkit.trace","aux":"<base64>"}`
//! records whose payload is a protobuf `moby.buildkit.v1.StatusResponse`, decoded here with
//! prost (the few fields labship shows, declared below rather than generated from the .proto).
//!
//! The records become the step lines `docker build --progress=plain` prints (`#3 [2/4] RUN
//! ...`, the step's output, `#3 DONE 1.2s`, `#3 CACHED`), and a failure names the failed step
//! with its last lines, as the classic builder's does.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper::Request;
use prost::Message;

use super::connect::Endpoint;
use super::Built;
use crate::error::{Error, Result};

/// The longest silence accepted from the engine during a build: BuildKit reports a running
/// step's output as it comes, but a quiet step (a long compile) may print nothing for minutes.
const IDLE: Duration = Duration::from_secs(1800);
/// Lines of a step kept to explain its failure.
const TAIL: usize = 12;

// ---- the protobuf messages (moby/buildkit api/services/control/control.proto) -------------

#[derive(Clone, PartialEq, Message)]
pub struct StatusResponse {
    #[prost(message, repeated, tag = "1")]
    pub vertexes: Vec<Vertex>,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<VertexStatus>,
    #[prost(message, repeated, tag = "3")]
    pub logs: Vec<VertexLog>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Vertex {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(string, repeated, tag = "2")]
    pub inputs: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(bool, tag = "4")]
    pub cached: bool,
    #[prost(message, optional, tag = "5")]
    pub started: Option<Timestamp>,
    #[prost(message, optional, tag = "6")]
    pub completed: Option<Timestamp>,
    #[prost(string, tag = "7")]
    pub error: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct VertexStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub vertex: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(int64, tag = "4")]
    pub current: i64,
    #[prost(int64, tag = "5")]
    pub total: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct VertexLog {
    #[prost(string, tag = "1")]
    pub vertex: String,
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Timestamp>,
    #[prost(int64, tag = "3")]
    pub stream: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub msg: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    fn secs(self) -> f64 {
        self.seconds as f64 + f64::from(self.nanos) / 1e9
    }
}

// ---- the request ---------------------------------------------------------------------------

impl super::BuildRequest {
    fn query(&self, session: &str) -> Result<String> {
        let json = |v: &HashMap<String, String>| {
            serde_json::to_string(v).map_err(|e| Error::engine("encoding the build request", e))
        };
        let mut q = vec![
            ("version", "2".to_string()),
            ("dockerfile", self.dockerfile.clone()),
            ("platform", self.platform.clone()),
            ("buildargs", json(&self.args)?),
            ("labels", json(&self.labels)?),
            ("networkmode", self.network.to_string()),
            ("rm", "1".into()),
            ("forcerm", "1".into()),
        ];
        if let Some(t) = &self.target {
            q.push(("target", t.clone()));
        }
        q.push(("session", session.to_string()));
        // The context comes through the session's file sync, not the request body.
        q.push(("remote", "client-session".to_string()));
        Ok(q.into_iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&"))
    }
}

/// Builds with BuildKit. `on_output` sees each progress line; the engine's refusal of BuildKit
/// itself is [`Error::BuildKitRefused`] (the caller may fall back to the classic builder).
pub(super) async fn build(
    endpoint: &Endpoint,
    api_version: &str,
    request: &super::BuildRequest,
    session: &str,
    mut on_output: impl FnMut(StepEvent<'_>),
) -> Result<Built> {
    let fail = |e: &dyn std::fmt::Display| Error::engine("building the image", e.to_string());
    let http = Request::post(format!("/v{api_version}/build?{}", request.query(session)?))
        .header("Host", "docker")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    let response = endpoint.send(http).await.map_err(|e| fail(&e))?;

    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let message = super::connect::error_message(body)
            .await
            .map_err(|e| fail(&e))?;
        if message.to_ascii_lowercase().contains("buildkit") {
            return Err(Error::BuildKitRefused { message });
        }
        return Err(Error::engine(
            "building the image",
            format!("{message} (HTTP {status})"),
        ));
    }

    let mut progress = Progress {
        platform: request.platform.clone(),
        ..Progress::default()
    };
    let mut image_id = None;
    super::connect::each_line(body, IDLE, fail, |line| {
        record(line, &mut progress, &mut image_id, &mut on_output)
    })
    .await?;
    progress.flush(&mut on_output);
    image_id.map(|image_id| Built { image_id }).ok_or_else(|| {
        Error::engine(
            "building the image",
            "BuildKit finished without reporting an image ID",
        )
    })
}

/// One JSON record of the answer.
fn record(
    line: &[u8],
    progress: &mut Progress,
    image_id: &mut Option<String>,
    on_output: &mut impl FnMut(StepEvent<'_>),
) -> Result<()> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| Error::engine("reading BuildKit's progress", e))?;
    if let Some(message) = value
        .get("errorDetail")
        .and_then(|d| d.get("message"))
        .and_then(|m| m.as_str())
        .or_else(|| value.get("error").and_then(|m| m.as_str()))
    {
        progress.flush(on_output);
        return Err(progress.failure(message));
    }
    match value.get("aux") {
        Some(serde_json::Value::String(b64)) if value["id"] == "moby.buildkit.trace" => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| Error::engine("reading BuildKit's progress", e))?;
            let status = StatusResponse::decode(raw.as_slice())
                .map_err(|e| Error::engine("reading BuildKit's progress", e))?;
            progress.apply(&status, on_output);
        }
        Some(aux) => {
            if let Some(id) = aux.get("ID").and_then(|i| i.as_str()) {
                *image_id = Some(id.to_string());
            }
        }
        None => {
            if let Some(text) = value.get("stream").and_then(|s| s.as_str()) {
                for l in text.lines().filter(|l| !l.trim().is_empty()) {
                    on_output(StepEvent::Text(l));
                }
            }
        }
    }
    Ok(())
}

// ---- progress ------------------------------------------------------------------------------

/// What BuildKit reports about its steps, in the order it happens. `Display` gives the line
/// `docker build --progress=plain` prints for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepEvent<'a> {
    /// Step `n` began (or was found cached, or printed before its start was reported).
    Start {
        n: usize,
        name: &'a str,
    },
    /// A line the step printed.
    Line {
        n: usize,
        text: &'a str,
    },
    Cached {
        n: usize,
    },
    Done {
        n: usize,
        seconds: Option<f64>,
    },
    Error {
        n: usize,
        message: &'a str,
    },
    /// Text of the engine's own, outside any step.
    Text(&'a str),
}

impl std::fmt::Display for StepEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepEvent::Start { n, name } => write!(f, "#{n} {name}"),
            StepEvent::Line { n, text } => write!(f, "#{n} {text}"),
            StepEvent::Cached { n } => write!(f, "#{n} CACHED"),
            StepEvent::Done { n, seconds } => match seconds {
                Some(t) => write!(f, "#{n} DONE {t:.1}s"),
                None => write!(f, "#{n} DONE "),
            },
            StepEvent::Error { n, message } => write!(f, "#{n} ERROR: {message}"),
            StepEvent::Text(text) => f.write_str(text),
        }
    }
}

/// A step as BuildKit reports it.
#[derive(Default)]
struct Step {
    number: usize,
    name: String,
    announced: bool,
    done: bool,
    started: Option<f64>,
    error: String,
    /// A line its output has begun but not ended.
    partial: String,
    tail: VecDeque<String>,
}

impl Step {
    fn keep(&mut self, line: &str) {
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }
}

/// BuildKit's steps, numbered in the order they started, rendered as `--progress=plain`
/// lines.
#[derive(Default)]
pub struct Progress {
    steps: HashMap<String, Step>,
    order: Vec<String>,
    announced: usize,
    /// The platform asked for (named when the engine cannot build for it).
    platform: String,
}

impl Progress {
    fn step(&mut self, digest: &str) -> &mut Step {
        if !self.steps.contains_key(digest) {
            self.order.push(digest.to_string());
        }
        self.steps.entry(digest.to_string()).or_default()
    }

    /// Numbers the step and prints its name, once: when it starts (or is found cached, or
    /// prints before its start was reported).
    fn announce(&mut self, digest: &str, out: &mut impl FnMut(StepEvent<'_>)) -> usize {
        let next = self.announced + 1;
        let step = self.step(digest);
        if !step.announced {
            step.announced = true;
            step.number = next;
            out(StepEvent::Start {
                n: step.number,
                name: &step.name,
            });
            self.announced = next;
        }
        self.step(digest).number
    }

    /// Applies one status record, printing what changed.
    pub fn apply(&mut self, status: &StatusResponse, out: &mut impl FnMut(StepEvent<'_>)) {
        for v in &status.vertexes {
            let step = self.step(&v.digest);
            if !v.name.is_empty() {
                step.name = v.name.clone();
            }
            if let Some(t) = v.started {
                step.started = Some(t.secs());
            }
            if v.started.is_none() && !v.cached {
                continue;
            }
            self.announce(&v.digest, out);
            let step = self.step(&v.digest);
            if !v.error.is_empty() && step.error.is_empty() {
                step.error = v.error.clone();
                out(StepEvent::Error {
                    n: step.number,
                    message: &v.error,
                });
            } else if v.cached && !step.done {
                step.done = true;
                out(StepEvent::Cached { n: step.number });
            } else if let (Some(end), false) = (v.completed, step.done) {
                step.done = true;
                let took = step.started.map(|s| (end.secs() - s).max(0.0));
                out(StepEvent::Done {
                    n: step.number,
                    seconds: took,
                });
            }
        }
        for log in &status.logs {
            let number = self.announce(&log.vertex, out);
            let step = self.step(&log.vertex);
            let text = String::from_utf8_lossy(&log.msg);
            let mut buffer = std::mem::take(&mut step.partial);
            buffer.push_str(&text);
            let complete = buffer.ends_with('\n');
            let mut lines: Vec<&str> = buffer.split('\n').collect();
            let rest = if complete {
                String::new()
            } else {
                lines.pop().unwrap_or_default().to_string()
            };
            for line in lines {
                let clean = strip_ansi_escapes::strip_str(line.trim_end_matches('\r'));
                let clean = clean.trim_end();
                if clean.is_empty() {
                    continue;
                }
                step.keep(clean);
                out(StepEvent::Line {
                    n: number,
                    text: clean,
                });
            }
            step.partial = rest;
        }
    }

    /// Prints what steps began but did not end with a newline.
    fn flush(&mut self, out: &mut impl FnMut(StepEvent<'_>)) {
        for digest in &self.order {
            if let Some(step) = self.steps.get_mut(digest) {
                let rest = std::mem::take(&mut step.partial);
                let clean = strip_ansi_escapes::strip_str(rest.trim_end());
                if !clean.is_empty() {
                    step.keep(&clean);
                    out(StepEvent::Line {
                        n: step.number,
                        text: &clean,
                    });
                }
            }
        }
    }

    /// The error for a failed build: the failed step with its last lines; a base image that
    /// could not be pulled; or a platform the engine cannot build for.
    pub fn failure(&self, message: &str) -> Error {
        let message = message.trim().to_string();
        let lower = message.to_ascii_lowercase();
        let platform_word = [
            "exec format error",
            "no match for platform",
            "no matching manifest for",
        ];
        // The step whose own error the final message carries; else the last one that failed
        // for a reason of its own (parallel steps stopped by that failure say "canceled").
        let failing = || {
            self.order
                .iter()
                .rev()
                .filter_map(|d| self.steps.get(d))
                .filter(|s| !s.error.is_empty())
        };
        let failed = failing()
            .find(|s| message.contains(s.error.trim()))
            .or_else(|| failing().find(|s| !s.error.contains("canceled")))
            .or_else(|| failing().next());
        if platform_word.iter().any(|w| lower.contains(w)) {
            return Error::PlatformMismatch {
                platform: self.platform.clone(),
                message,
            };
        }
        if let Some(step) = failed {
            if let Some(image) = base_image_of(&step.name) {
                let pull = [
                    "pull access denied",
                    "not found",
                    "dial tcp",
                    "no such host",
                    "failed to resolve",
                    "failed to do request",
                    "unauthorized",
                ];
                if pull.iter().any(|w| lower.contains(w)) {
                    return Error::BaseImage { image, message };
                }
            }
            let tail: Vec<&str> = step.tail.iter().map(String::as_str).collect();
            return Error::BuildStepFailed {
                step: step.name.clone(),
                message,
                tail: if tail.is_empty() {
                    String::from("(the step printed nothing)")
                } else {
                    format!("last lines of the step:\n  {}", tail.join("\n  "))
                },
            };
        }
        Error::BuildStepFailed {
            step: "the start of the build".into(),
            message,
            tail: String::from("(no step had started)"),
        }
    }
}

/// The image a step pulls: `[internal] load metadata for docker.io/library/python:3.12` or
/// `[1/3] FROM docker.io/library/python:3.12@sha256:...`.
fn base_image_of(step: &str) -> Option<String> {
    if let Some(rest) = step.strip_prefix("[internal] load metadata for ") {
        return Some(rest.trim().to_string());
    }
    let from = step.split("] FROM ").nth(1)?;
    let image = from.split_whitespace().next()?;
    Some(image.split('@').next().unwrap_or(image).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn vertex(digest: &str, name: &str) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            ..Vertex::default()
        }
    }

    fn render(records: &[StatusResponse]) -> (Progress, Vec<String>) {
        let mut p = Progress::default();
        let mut lines = Vec::new();
        for r in records {
            p.apply(r, &mut |e: StepEvent<'_>| lines.push(e.to_string()));
        }
        (p, lines)
    }

    #[test]
    fn steps_render_as_plain_progress_lines() {
        let run = "[2/2] RUN pip install -r requirements.txt";
        let records = [
            StatusResponse {
                vertexes: vec![
                    Vertex {
                        started: ts(100),
                        ..vertex("a", "[1/2] FROM base")
                    },
                    Vertex {
                        cached: true,
                        ..vertex("b", "[internal] load .dockerignore")
                    },
                ],
                ..StatusResponse::default()
            },
            StatusResponse {
                vertexes: vec![Vertex {
                    started: ts(100),
                    completed: ts(102),
                    ..vertex("a", "[1/2] FROM base")
                }],
                ..StatusResponse::default()
            },
            StatusResponse {
                vertexes: vec![Vertex {
                    started: ts(103),
                    ..vertex("c", run)
                }],
                logs: vec![
                    VertexLog {
                        vertex: "c".into(),
                        msg: b"Collecting six\nDown".to_vec(),
                        ..VertexLog::default()
                    },
                    VertexLog {
                        vertex: "c".into(),
                        msg: b"loading six.whl\n".to_vec(),
                        ..VertexLog::default()
                    },
                ],
                ..StatusResponse::default()
            },
        ];
        let (_, lines) = render(&records);
        assert_eq!(
            lines,
            [
                "#1 [1/2] FROM base",
                "#2 [internal] load .dockerignore",
                "#2 CACHED",
                "#1 DONE 2.0s",
                "#3 [2/2] RUN pip install -r requirements.txt",
                "#3 Collecting six",
                "#3 Downloading six.whl",
            ]
        );
    }

    #[test]
    fn a_failed_step_is_named_with_its_last_lines() {
        let (p, _) = render(&[StatusResponse {
            vertexes: vec![Vertex {
                started: ts(1),
                error: "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"
                    .into(),
                ..vertex("c", "[2/2] RUN echo about to fail && exit 3")
            }],
            logs: vec![VertexLog {
                vertex: "c".into(),
                msg: b"about to fail\n".to_vec(),
                ..VertexLog::default()
            }],
            ..StatusResponse::default()
        }]);
        match p.failure("exit code: 3") {
            Error::BuildStepFailed { step, tail, .. } => {
                assert_eq!(step, "[2/2] RUN echo about to fail && exit 3");
                assert!(tail.contains("about to fail"), "{tail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_base_image_that_cannot_be_pulled_is_named() {
        let (p, _) = render(&[StatusResponse {
            vertexes: vec![Vertex {
                started: ts(1),
                error: "failed to resolve source metadata".into(),
                ..vertex("m", "[internal] load metadata for docker.io/library/nope:1")
            }],
            ..StatusResponse::default()
        }]);
        match p.failure(
            "failed to resolve source metadata for docker.io/library/nope:1: pull access denied",
        ) {
            Error::BaseImage { image, .. } => assert_eq!(image, "docker.io/library/nope:1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            base_image_of("[1/3] FROM docker.io/library/python:3.12@sha256:abc"),
            Some("docker.io/library/python:3.12".into())
        );
    }

    #[test]
    fn trace_records_decode() {
        // A record as a 20.10 engine sent it: "[internal] load remote build context".
        let b64 = "Cm8KR3NoYTI1Njo1NTExMGE4Y2U2ZDg0ZGM1Zjg0Y2U0YTM0ZDcyZDMxMDYzMDlmZWJkMjczNWVhMDY2Y2JkNDYzMzZkODhiZGRhGiRbaW50ZXJuYWxdIGxvYWQgcmVtb3RlIGJ1aWxkIGNvbnRleHQ=";
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let status = StatusResponse::decode(raw.as_slice()).expect("protobuf");
        assert_eq!(status.vertexes.len(), 1);
        assert_eq!(
            status.vertexes[0].name,
            "[internal] load remote build context"
        );
        assert!(status.vertexes[0].digest.starts_with("sha256:"));
    }

    #[test]
    fn the_query_carries_every_option_encoded() {
        let q = crate::docker::BuildRequest {
            dockerfile: "Dockerfile".into(),
            platform: "linux/amd64".into(),
            target: Some("final stage".into()),
            args: HashMap::from([("A".into(), "x&y".into())]),
            labels: HashMap::new(),
            secrets: Vec::new(),
            network: "host",
            ssh: HashMap::new(),
        }
        .query("abc")
        .expect("query");
        assert!(q.ends_with("&session=abc&remote=client%2Dsession"), "{q}");
        assert!(q.starts_with("version=2&"), "{q}");
        assert!(q.contains("platform=linux%2Famd64"), "{q}");
        assert!(q.contains("networkmode=host"), "{q}");
        assert!(q.contains("target=final%20stage"), "{q}");
        assert!(q.contains("buildargs=%7B%22A%22%3A%22x%26y%22%7D"), "{q}");
    }
}
