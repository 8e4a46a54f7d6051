//! `labship up --local` and the verbs around it, on the real engine with real Jupyter.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn get(url: &str, token: &str) -> (u16, String) {
    match ureq::get(url)
        .header("Authorization", &format!("token {token}"))
        .call()
    {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(ureq::Error::StatusCode(code)) => (code, String::new()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn token_of(url: &str) -> String {
    url.split("token=")
        .nth(1)
        .expect("token in URL")
        .to_string()
}

fn base_of(url: &str) -> String {
    url.split("/lab").next().expect("base").to_string()
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).status.success()
}

fn container_state(name: &str) -> Option<String> {
    let out = docker(&["inspect", "--format", "{{.State.Status}}", name]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Cleans a deployment up whatever a test did.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &format!("labship-{}", self.0)]);
        let _ = docker(&["volume", "rm", &format!("labship-{}-work", self.0)]);
    }
}

#[test]
fn up_local_serves_jupyter_and_the_workspace_outlives_the_container() {
    // No BASE_IMAGE: the Dockerfile's public default cannot be pulled here, so labship uses
    // the offline base (made by the same recipe the rig ran).
    let p = Project::default_workload("local");
    p.write("labship.toml", &format!("name = \"{}\"\n", p.name));
    let _cleanup = Cleanup(p.name.clone());

    let up = json(&p.labship(&["up", "--local", "-o", "json"]));
    let url = up["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/lab?token="),
        "{url}"
    );
    assert_eq!(up["action"], "created");
    let token = token_of(&url);
    assert_eq!(token.len(), 48);
    let base = base_of(&url);
    let (status, body) = get(&format!("{base}/api/status"), &token);
    assert_eq!(status, 200, "{body}");
    // Without the token Jupyter refuses: the token is real.
    assert_eq!(get(&format!("{base}/api/contents"), "wrong").0, 403);

    // A notebook-side file, written through Jupyter's contents API, into the workspace.
    let put = ureq::put(&format!("{base}/api/contents/notes.txt"))
        .header("Authorization", &format!("token {token}"))
        .send_json(
            serde_json::json!({"type": "file", "format": "text", "content": "kept across down/up"}),
        )
        .expect("PUT contents");
    assert_eq!(put.status(), 201);

    // A second up changes nothing and prints the same URL.
    let again = json(&p.labship(&["up", "--local", "-o", "json"]));
    assert_eq!(again["action"], "unchanged");
    assert_eq!(again["built"], false);
    assert_eq!(again["url"], url.as_str());

    // token, status and logs find it by its labels.
    let t = json(&p.labship(&["token", "-o", "json"]));
    assert_eq!(t["token"], token.as_str());
    let status = json(&p.labship(&["status", "-o", "json"]));
    let mine: Vec<&Value> = status["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .filter(|d| d["name"] == p.name.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{status}");
    assert_eq!(mine[0]["state"], "running");
    assert_eq!(mine[0]["location"], "local");
    assert!(
        !mine[0]["url"].as_str().unwrap_or("").contains("token"),
        "status shows no secret"
    );
    let logs = p.labship(&["logs"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("Jupyter Server"));

    // down keeps the workspace; up again finds the file.
    let down = json(&p.labship(&["down", "-o", "json"]));
    assert_eq!(down["removed"].as_array().map(Vec::len), Some(1), "{down}");
    assert!(container_state(&format!("labship-{}", p.name)).is_none());
    assert!(volume_exists(&format!("labship-{}-work", p.name)));
    let up2 = json(&p.labship(&["up", "--local", "-o", "json"]));
    let token2 = token_of(up2["url"].as_str().expect("url"));
    assert_ne!(token2, token, "a new server, a new token");
    let (status, body) = get(
        &format!(
            "{}/api/contents/notes.txt",
            base_of(up2["url"].as_str().unwrap_or(""))
        ),
        &token2,
    );
    assert_eq!(status, 200);
    let file: Value = serde_json::from_str(&body).expect("contents JSON");
    assert_eq!(file["content"], "kept across down/up");

    // Deleting data needs a confirmation; without a terminal, --yes.
    let refused = p.labship(&["down", "--delete-data", "-o", "json"]);
    assert_eq!(json_error(&refused)["code"], "labship::confirm");
    assert!(
        volume_exists(&format!("labship-{}-work", p.name)),
        "nothing deleted without --yes"
    );
    let deleted = json(&p.labship(&["down", "--delete-data", "--yes", "-o", "json"]));
    assert_eq!(
        deleted["removed"].as_array().map(Vec::len),
        Some(2),
        "{deleted}"
    );
    assert!(!volume_exists(&format!("labship-{}-work", p.name)));
    let nothing = p.labship(&["down"]);
    assert!(nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("nothing to remove"));
}

#[test]
fn a_changed_image_replaces_the_container_and_keeps_the_volume() {
    let p = Project::with_files(
        "replace",
        &[
            ("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN useradd -m -u 1000 jovyan && install -d -o 1000 -g 1000 /home/jovyan/work\nCOPY --chown=1000:1000 version.txt /home/jovyan/work/\nWORKDIR /home/jovyan/work\nUSER 1000\nCMD [\"jupyter\", \"lab\", \"--ip=0.0.0.0\", \"--no-browser\"]\n"),
            ("version.txt", "one"),
        ],
    );
    let _cleanup = Cleanup(p.name.clone());
    let first = json(&p.labship(&["up", "--local", "-o", "json"]));
    let url = first["url"].as_str().expect("url");
    let put = ureq::put(&format!("{}/api/contents/mine.txt", base_of(url)))
        .header("Authorization", &format!("token {}", token_of(url)))
        .send_json(serde_json::json!({"type": "file", "format": "text", "content": "mine"}))
        .expect("PUT");
    assert_eq!(put.status(), 201);

    p.write("docker/version.txt", "two");
    let out = p.labship(&["up", "--local", "-o", "json"]);
    assert!(
        stderr(&out).contains("The image changed"),
        "{}",
        stderr(&out)
    );
    let second = json(&out);
    assert_eq!(second["action"], "replaced");
    assert_ne!(second["image"], first["image"]);
    let url2 = second["url"].as_str().expect("url");
    let (code, body) = get(
        &format!("{}/api/contents/mine.txt", base_of(url2)),
        &token_of(url2),
    );
    assert_eq!(
        code, 200,
        "the workspace volume survived the replacement: {body}"
    );
}

#[test]
fn a_busy_port_names_its_holder_and_creates_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let p = Project::default_workload("busy");
    let _cleanup = Cleanup(p.name.clone());
    let out = p.labship(&["up", "--local", "--port", &port.to_string(), "-o", "json"]);
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::local::port_busy", "{err}");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.contains(&port.to_string()), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "the holder is this test: {message}"
    );
    assert!(container_state(&format!("labship-{}", p.name)).is_none());
    assert!(!volume_exists(&format!("labship-{}-work", p.name)));
}

#[test]
fn a_container_that_exits_at_start_shows_its_last_lines() {
    let p = Project::with_files(
        "exits",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo missing-config-file >&2; exit 7\"]\n")],
    );
    let _cleanup = Cleanup(p.name.clone());
    let err = json_error(&p.labship(&["up", "--local", "-o", "json"]));
    assert_eq!(err["code"], "labship::local::exited", "{err}");
    assert!(
        err["message"].as_str().unwrap_or("").contains("code 7"),
        "{err}"
    );
    assert!(
        err["help"]
            .as_str()
            .unwrap_or("")
            .contains("missing-config-file"),
        "{err}"
    );
    assert!(
        container_state(&format!("labship-{}", p.name)).is_none(),
        "nothing half-made"
    );
    assert!(!volume_exists(&format!("labship-{}-work", p.name)));
}

#[test]
fn no_token_within_the_deadline_is_an_error_with_the_log() {
    let p = Project::with_files(
        "silent",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo warming-up; sleep 300\"]\n")],
    );
    let _cleanup = Cleanup(p.name.clone());
    let started = Instant::now();
    let err = json_error(&p.labship(&["up", "--local", "--wait", "3", "-o", "json"]));
    assert_eq!(err["code"], "labship::local::token_timeout", "{err}");
    assert!(
        err["help"].as_str().unwrap_or("").contains("warming-up"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the wait is bounded"
    );
    assert!(container_state(&format!("labship-{}", p.name)).is_none());
}

#[test]
fn an_image_without_jupyter_is_named_as_such() {
    let p = Project::with_files(
        "nojupyter",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN rm -f /opt/jupyter/bin/jupyter /opt/jupyter/bin/jupyter-*\nCMD [\"jupyter\", \"lab\"]\n")],
    );
    let _cleanup = Cleanup(p.name.clone());
    let err = json_error(&p.labship(&["up", "--local", "-o", "json"]));
    assert_eq!(err["code"], "labship::local::no_jupyter", "{err}");
    assert!(container_state(&format!("labship-{}", p.name)).is_none());
}

#[test]
fn attach_streams_the_log_and_ctrl_c_stops_the_container() {
    let p = Project::default_workload("attach");
    let _cleanup = Cleanup(p.name.clone());
    let mut child = p
        .command(&["up", "--local", "--attach"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("URL line");
    assert!(line.starts_with("http://127.0.0.1:"), "{line}");
    assert_eq!(
        container_state(&format!("labship-{}", p.name)).as_deref(),
        Some("running")
    );
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "labship did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        container_state(&format!("labship-{}", p.name)).as_deref(),
        Some("exited")
    );
}

#[test]
fn token_from_a_pasted_log() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jupyter-logs");
    let p = Project::empty("fromlog");
    let ec2 = fixtures.join("ec2-console.log");
    let found = json(&p.labship(&[
        "token",
        "--from-log",
        ec2.to_str().expect("path"),
        "-o",
        "json",
    ]));
    let token = found["token"].as_str().expect("token");
    assert_eq!(token.len(), 48);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));

    // From standard input, text mode: the token alone on stdout.
    let log = std::fs::read(fixtures.join("notebook-6.5.7.log")).expect("fixture");
    let mut child = p
        .command(&["token", "--from-log", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &log).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(printed.len(), 48, "{printed}");

    // A server whose token was set explicitly: an error, never a wrong token.
    let explicit = fixtures.join("explicit-token.log");
    let err = json_error(&p.labship(&[
        "token",
        "--from-log",
        explicit.to_str().expect("path"),
        "-o",
        "json",
    ]));
    assert_eq!(err["code"], "labship::token::not_found");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("set explicitly"),
        "{err}"
    );
}

#[test]
fn verbs_on_an_unknown_deployment_say_so() {
    let p = Project::empty("ghost");
    for verb in ["token", "logs"] {
        let err = json_error(&p.labship(&[verb, "-o", "json"]));
        assert_eq!(
            err["code"], "labship::deployment::not_found",
            "{verb}: {err}"
        );
    }
}
