//! `labship up --local` and the verbs around it, on the real engine with real Jupyter.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Status and body of a GET with a token; status 0 when the connection failed (a server
/// that is restarting), so callers that poll can try again.
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
        Err(e) => (0, e.to_string()),
    }
}

fn put_file(url: &str, name: &str, content: &str) {
    let put = ureq::put(&format!("{}/api/contents/{name}", base_of(url)))
        .header("Authorization", &format!("token {}", token_of(url)))
        .send_json(serde_json::json!({"type": "file", "format": "text", "content": content}))
        .expect("PUT contents");
    assert_eq!(put.status(), 201);
}

/// The text of a workspace file through Jupyter's contents API, or None.
fn read_file(url: &str, name: &str) -> Option<String> {
    let (code, body) = get(
        &format!("{}/api/contents/{name}", base_of(url)),
        &token_of(url),
    );
    if code != 200 {
        return None;
    }
    let file: Value = serde_json::from_str(&body).expect("contents JSON");
    file["content"].as_str().map(str::to_string)
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
pub(crate) struct Cleanup(pub(crate) String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &format!("labship-{}", self.0)]);
        let _ = docker(&["rm", "-f", &format!("labship-{}-previous", self.0)]);
        let _ = docker(&["volume", "rm", &format!("labship-{}-work", self.0)]);
    }
}

const JUPYTER_DOCKERFILE: &str = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN useradd -m -u 1000 jovyan && install -d -o 1000 -g 1000 /home/jovyan/work\nCOPY --chown=1000:1000 files/ /home/jovyan/work/\nWORKDIR /home/jovyan/work\nUSER 1000\nCMD [\"jupyter\", \"lab\", \"--ip=0.0.0.0\", \"--no-browser\"]\n";

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
    // A real browser renders JupyterLab's application at the URL; with a wrong token it gets
    // Jupyter's login page, which the check refuses.
    crate::browser::assert_lab_renders(&url);
    let refused = crate::browser::lab_renders(&format!("{base}/lab?token=wrong"))
        .expect_err("a wrong token must not render JupyterLab");
    assert!(refused.contains("login page"), "{refused}");
    // The starter material is in the workspace.
    assert!(read_file(&url, "mtcars.csv").is_some_and(|c| c.contains("Mazda RX4")));

    // A file written through Jupyter's contents API, into the workspace.
    put_file(&url, "notes.txt", "kept across down/up");
    // backup: every file of the workspace, through Jupyter, into the folder asked for.
    let dest = p.path().join("backup-here");
    let backup = json(&p.labship(&[
        "backup",
        "--local",
        "--to",
        dest.to_str().expect("utf-8"),
        "-o",
        "json",
    ]));
    assert_eq!(backup["target"], "local", "{backup}");
    assert_eq!(
        backup["saved"]["dir"],
        dest.to_str().expect("utf-8"),
        "{backup}"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("notes.txt")).expect("saved notes"),
        "kept across down/up"
    );
    assert_eq!(
        std::fs::read(dest.join("mtcars.csv")).expect("saved data"),
        std::fs::read(p.path().join("docker/resources/mtcars.csv")).expect("original")
    );

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
    assert_eq!(mine[0]["target"], "local");
    assert_eq!(
        mine[0]["url"],
        format!("{base}/lab"),
        "status shows the address, not the secret"
    );
    let logs = p.labship(&["logs"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("Jupyter Server"));

    // down keeps the workspace; up again finds the file.
    let down = json(&p.labship(&["down", "-o", "json"]));
    assert_eq!(down["removed"].as_array().map(Vec::len), Some(1), "{down}");
    assert!(container_state(&format!("labship-{}", p.name)).is_none());
    assert!(volume_exists(&format!("labship-{}-work", p.name)));
    let up2 = json(&p.labship(&["up", "--local", "-o", "json"]));
    let url2 = up2["url"].as_str().expect("url");
    assert_ne!(token_of(url2), token, "a new server, a new token");
    assert_eq!(
        read_file(url2, "notes.txt").as_deref(),
        Some("kept across down/up")
    );

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
            ("Dockerfile", JUPYTER_DOCKERFILE),
            ("files/version.txt", "one"),
        ],
    );
    let _cleanup = Cleanup(p.name.clone());
    let first = json(&p.labship(&["up", "--local", "-o", "json"]));
    let url = first["url"].as_str().expect("url");
    put_file(url, "mine.txt", "mine");

    p.write("docker/files/version.txt", "two");
    p.write("docker/files/new-notebook.txt", "new in the second image");
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
    assert_eq!(
        read_file(url2, "mine.txt").as_deref(),
        Some("mine"),
        "the workspace volume survived"
    );
    // The image's new file was added; a file already in the workspace was kept as it was.
    assert_eq!(
        read_file(url2, "new-notebook.txt").as_deref(),
        Some("new in the second image")
    );
    assert_eq!(read_file(url2, "version.txt").as_deref(), Some("one"));
    assert!(
        container_state(&format!("labship-{}-previous", p.name)).is_none(),
        "the old container is gone"
    );
}

#[test]
fn a_failed_up_keeps_the_existing_workspace() {
    let p = Project::default_workload("keepvol");
    let _cleanup = Cleanup(p.name.clone());
    let up = json(&p.labship(&["up", "--local", "-o", "json"]));
    put_file(up["url"].as_str().expect("url"), "precious.txt", "precious");
    assert!(p.labship(&["down"]).status.success());
    // The next image crashes at start: up fails, and the workspace must survive it.
    p.write(
        "docker/Dockerfile",
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"exit 3\"]\n",
    );
    let err = json_error(&p.labship(&["up", "--local", "-o", "json"]));
    assert_eq!(err["code"], "labship::local::exited");
    assert!(
        volume_exists(&format!("labship-{}-work", p.name)),
        "the notebooks are still there"
    );
}

#[test]
fn a_failed_replacement_puts_the_old_container_back() {
    let p = Project::default_workload("rollback");
    let _cleanup = Cleanup(p.name.clone());
    // A port outside the 8888+ range other tests scan, so nobody takes it while it is free.
    let port = free_port().to_string();
    let first = json(&p.labship(&["up", "--local", "--port", &port, "-o", "json"]));
    let url = first["url"].as_str().expect("url");
    p.write(
        "docker/Dockerfile",
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"exit 4\"]\n",
    );
    let err = json_error(&p.labship(&["up", "--local", "-o", "json"]));
    assert_eq!(err["code"], "labship::local::exited");
    // The working deployment is back on its port, with a token that works.
    assert_eq!(
        container_state(&format!("labship-{}", p.name)).as_deref(),
        Some("running")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = p.labship(&["token", "-o", "json"]);
        if t.status.success() {
            let token = json(&t)["token"].as_str().unwrap_or_default().to_string();
            if get(&format!("{}/api/status", base_of(url)), &token).0 == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the old container did not come back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
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
    let port = free_port().to_string();
    let err_file = p.path().join("attach.stderr");
    let mut child = p
        .command(&["up", "--local", "--attach", "--port", &port])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_file).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("URL line");
    assert!(
        line.starts_with(&format!("http://127.0.0.1:{port}/lab?token=")),
        "{line}"
    );
    assert_eq!(
        container_state(&format!("labship-{}", p.name)).as_deref(),
        Some("running")
    );
    // The Ctrl-C handler exists before the URL is printed; wait for a streamed log line (not
    // a fixed sleep) so the assertion below has something to see.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&err_file)
        .unwrap_or_default()
        .contains("Jupyter Server")
    {
        assert!(Instant::now() < deadline, "no log line was streamed");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let streamed = std::fs::read_to_string(&err_file).expect("stderr");
    assert!(
        streamed.contains("Jupyter Server"),
        "the log was streamed: {streamed}"
    );

    // up again starts the stopped container on its own port, with a fresh token.
    let again = json(&p.labship(&["up", "--local", "-o", "json"]));
    assert_eq!(again["action"], "started");
    let url = again["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/")),
        "{url}"
    );
    assert_eq!(
        get(&format!("{}/api/status", base_of(url)), &token_of(url)).0,
        200
    );

    // `labship stop` stops it and keeps it; `up` starts it again.
    let stopped = json(&p.labship(&["stop", "--local", "-o", "json"]));
    let container = format!("labship-{}", p.name);
    assert_eq!(
        stopped["stopped"][0],
        format!("container {container}"),
        "{stopped}"
    );
    assert_eq!(container_state(&container).as_deref(), Some("exited"));
    let again = json(&p.labship(&["stop", "--local", "-o", "json"]));
    assert_eq!(again["stopped"], serde_json::json!([]), "{again}");
    let restarted = json(&p.labship(&["up", "--local", "-o", "json"]));
    assert_eq!(restarted["action"], "started", "{restarted}");
    // EC2-only settings are refused here, naming the flag.
    let refused = p.labship(&["up", "--local", "--idle-stop", "30m", "-o", "json"]);
    let err = json_error(&refused);
    assert_eq!(err["code"], "labship::unsupported", "{err}");
    assert!(err.to_string().contains("--idle-stop"), "{err}");
}

#[test]
fn token_from_a_pasted_log() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jupyter-logs");
    let p = Project::empty("fromlog");
    // Tokens as `jupyter server list --json` reported them when the fixtures were captured.
    let ec2 = fixtures.join("ec2-console.log");
    let found = json(&p.labship(&[
        "token",
        "--from-log",
        ec2.to_str().expect("path"),
        "-o",
        "json",
    ]));
    assert_eq!(
        found["token"],
        "c753d1343375fbaad82aa4f60f12ea79384d236ae54733c0"
    );

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
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "b01cb6093b85495005c6b42c20cfab5e70d6392d88ef9b58"
    );

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
    for verb in ["token", "logs", "backup"] {
        let err = json_error(&p.labship(&[verb, "-o", "json"]));
        assert_eq!(
            err["code"], "labship::deployment::not_found",
            "{verb}: {err}"
        );
    }
}

#[test]
fn labship_base_makes_the_same_image_the_rig_uses() {
    // The rig ran the recipe labship embeds; `labship base` finds that image by its tag.
    let p = Project::empty("base");
    let out = json(&p.labship(&["base", "-o", "json"]));
    assert_eq!(out["image"], rig().base_image.as_str());
}

#[test]
fn dry_run_plans_locally_and_changes_nothing() {
    let p = Project::default_workload("localplan");
    let _cleanup = Cleanup(p.name.clone());
    let port = free_port().to_string();
    let plan = json(&p.labship(&["up", "--local", "--dry-run", "--port", &port, "-o", "json"]));
    assert_eq!(plan["target"], "local", "{plan}");
    assert_eq!(plan["action"], "create", "{plan}");
    assert_eq!(plan["container"], format!("labship-{}", p.name));
    assert_eq!(plan["volume"], format!("labship-{}-work", p.name));
    assert_eq!(plan["labels"]["dev.labship.deployment"], p.name.as_str());
    assert!(container_state(&format!("labship-{}", p.name)).is_none());
    assert!(!volume_exists(&format!("labship-{}-work", p.name)));

    // Applied, the plan is what happens; planned again, nothing is left to do.
    let up = json(&p.labship(&["up", "--local", "--port", &port, "-o", "json"]));
    assert_eq!(up["action"], "created", "{up}");
    assert_eq!(up["target"], "local");
    let again = json(&p.labship(&["up", "--local", "--dry-run", "--port", &port, "-o", "json"]));
    assert_eq!(again["action"], "nothing", "{again}");
    assert_eq!(again["build"], false, "{again}");
    assert_eq!(again["image"], up["image"]);
    let other = free_port().to_string();
    let moved = json(&p.labship(&["up", "--local", "--dry-run", "--port", &other, "-o", "json"]));
    assert_eq!(moved["action"], "replace", "{moved}");
    assert_eq!(
        container_state(&format!("labship-{}", p.name)).as_deref(),
        Some("running"),
        "a dry run replaced nothing"
    );
}

#[test]
fn options_a_target_cannot_honour_are_refused_before_anything_is_made() {
    let p = Project::default_workload("refused");
    for (args, option) in [
        (&["up", "--ec2", "--attach", "-o", "json"][..], "--attach"),
        (&["up", "--local", "--public", "-o", "json"][..], "--public"),
        (
            &["up", "--local", "--allow-cidr", "10.0.0.0/8", "-o", "json"][..],
            "--allow-cidr",
        ),
        (
            &["up", "--local", "--ami", "al2023", "-o", "json"][..],
            "--ami",
        ),
        (
            &["up", "--local", "--volume-size", "50", "-o", "json"][..],
            "--volume-size",
        ),
        (
            &["down", "--local", "--purge-images", "--yes", "-o", "json"][..],
            "--purge-images",
        ),
    ] {
        let out = p.labship(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = json_error(&out);
        assert_eq!(err["code"], "labship::unsupported", "{args:?}: {err}");
        assert!(
            err["message"].as_str().unwrap_or_default().contains(option),
            "{args:?}: {err}"
        );
        assert!(!err["help"].as_str().unwrap_or_default().is_empty());
    }
    assert!(container_state(&format!("labship-{}", p.name)).is_none());
}

/// What a replace killed half-way leaves (the old container renamed `-previous`, still
/// holding the workspace volume) is neither mistaken for the server nor left behind.
#[test]
fn a_container_left_by_an_interrupted_replace_is_ignored_then_removed() {
    let p = Project::default_workload("leftover");
    let _cleanup = Cleanup(p.name.clone());
    let port = free_port().to_string();
    let first = json(&p.labship(&["up", "--local", "--port", &port, "-o", "json"]));
    let image = first["image"].as_str().expect("image").to_string();
    let previous = format!("labship-{}-previous", p.name);
    let made = Command::new("docker")
        .args([
            "create",
            "--name",
            &previous,
            "--label",
            "dev.labship.managed-by=labship",
            "--label",
            &format!("dev.labship.deployment={}", p.name),
            "-v",
            &format!("labship-{}-work:/home/jovyan/work", p.name),
            &image,
        ])
        .output()
        .expect("docker create");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let again = json(&p.labship(&["up", "--local", "--port", &port, "-o", "json"]));
    assert_eq!(again["action"], "unchanged", "{again}");
    assert_eq!(again["container"], format!("labship-{}", p.name));
    let token = json(&p.labship(&["token", "-o", "json"]));
    assert_eq!(
        token_of(token["url"].as_str().expect("url")),
        token_of(first["url"].as_str().expect("url")),
        "the token of the server, not of the leftover"
    );

    let down = json(&p.labship(&["down", "--delete-data", "--yes", "-o", "json"]));
    let removed = down["removed"].to_string();
    assert!(removed.contains(&previous), "{down}");
    assert!(container_state(&previous).is_none());
    assert!(
        !volume_exists(&format!("labship-{}-work", p.name)),
        "{down}"
    );
}

#[test]
fn a_local_deployment_reads_its_inputs_and_other_inputs_replace_its_container() {
    let endpoint = rig().aws_endpoint;
    let p = Project::default_workload("localin");
    let _cleanup = Cleanup(p.name.clone());
    let cache = tempfile::tempdir().expect("cache");
    let bucket = unique("course");
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &bucket]);
    s3_put(
        &endpoint,
        &bucket,
        "week1/grades.csv",
        "a,b\n1,2\n",
        "us-east-1",
    );
    s3_put(&endpoint, &bucket, "week2/more.txt", "more\n", "us-east-1");
    let inputs = |uris: &[&str]| {
        let list: Vec<String> = uris
            .iter()
            .map(|u| format!("\"s3://{bucket}/{u}\""))
            .collect();
        p.write(
            "labship.toml",
            &format!(
                "name = \"{}\"\n[data]\ninputs = [{}]\n",
                p.name,
                list.join(", ")
            ),
        );
    };
    let up = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("LABSHIP_CACHE_DIR", cache.path());
        json(&run_logged(cmd, args, ""))
    };
    inputs(&["week1/"]);
    let first = up(&["up", "--local", "-o", "json"]);
    assert_eq!(first["action"], "created", "{first}");
    let url = first["url"].as_str().expect("url").to_string();
    assert_eq!(
        read_file(&url, "inputs/week1/grades.csv").as_deref(),
        Some("a,b\n1,2\n"),
        "the input, through Jupyter's contents API"
    );
    // The inputs are mounted read-only (as the engine says); the rest of the workspace is not.
    let input = mount_of(&format!("labship-{}", p.name), "/inputs/week1");
    assert_eq!(input["RW"], false, "{input}");
    assert_eq!(input["Type"], "bind", "{input}");
    put_file(&url, "notes.txt", "mine");

    // The same inputs: nothing to do. Another one: the container is replaced, the
    // workspace kept, both inputs there.
    let again = up(&["up", "--local", "-o", "json"]);
    assert_eq!(again["action"], "unchanged", "{again}");
    inputs(&["week1/", "week2/"]);
    let plan = up(&["up", "--local", "--dry-run", "-o", "json"]);
    assert_eq!(plan["action"], "replace", "{plan}");
    assert!(
        plan["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("inputs changed"),
        "{plan}"
    );
    // Copies of inputs no one used for a month go before a copy, unless a container mounts
    // them: week1's, aged, stays as it is (the running container mounts it); an abandoned
    // one goes.
    let copies = cache.path().join("inputs");
    let week1_copy = std::fs::read_dir(&copies)
        .expect("the copies")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").exists())
        .expect("week1's copy");
    let abandoned = copies.join("00000000deadbeef");
    std::fs::create_dir_all(abandoned.join("files")).unwrap();
    std::fs::write(abandoned.join("files/old.csv"), "old\n").unwrap();
    std::fs::write(abandoned.join("lock"), "").unwrap();
    std::fs::write(abandoned.join("manifest.json"), "{}").unwrap();
    let month_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
    for copy in [&week1_copy, &abandoned] {
        std::fs::File::options()
            .write(true)
            .open(copy.join("manifest.json"))
            .and_then(|f| f.set_modified(month_ago))
            .expect("aged");
    }
    // Beside its files (which a sync tidies): it stays unless the copy is removed.
    std::fs::write(week1_copy.join("kept-marker"), "").unwrap();
    let replaced = up(&["up", "--local", "-o", "json"]);
    assert_eq!(replaced["action"], "replaced", "{replaced}");
    assert!(!abandoned.exists(), "an unused copy is removed");
    assert!(
        week1_copy.join("kept-marker").exists(),
        "a mounted copy is kept, not removed and fetched again"
    );
    let url = replaced["url"].as_str().expect("url").to_string();
    assert_eq!(
        read_file(&url, "inputs/week2/more.txt").as_deref(),
        Some("more\n")
    );
    assert_eq!(
        read_file(&url, "inputs/week1/grades.csv").as_deref(),
        Some("a,b\n1,2\n")
    );
    assert_eq!(read_file(&url, "notes.txt").as_deref(), Some("mine"));

    // A single object is mounted as a file: its new version is a new container.
    s3_put(&endpoint, &bucket, "syllabus.md", "v1\n", "us-east-1");
    inputs(&["week1/", "syllabus.md"]);
    let with_file = up(&["up", "--local", "-o", "json"]);
    assert_eq!(with_file["action"], "replaced", "{with_file}");
    let url = with_file["url"].as_str().expect("url").to_string();
    assert_eq!(
        read_file(&url, "inputs/syllabus.md").as_deref(),
        Some("v1\n")
    );
    let same = up(&["up", "--local", "-o", "json"]);
    assert_eq!(same["action"], "unchanged", "{same}");
    s3_put(&endpoint, &bucket, "syllabus.md", "v2\n", "us-east-1");
    let newer = up(&["up", "--local", "-o", "json"]);
    assert_eq!(newer["action"], "replaced", "{newer}");
    let url = newer["url"].as_str().expect("url").to_string();
    assert_eq!(
        read_file(&url, "inputs/syllabus.md").as_deref(),
        Some("v2\n")
    );

    let down = p.labship(&["down", "--local", "--delete-data", "--yes"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(container_state(&format!("labship-{}", p.name)), None);
    assert!(!volume_exists(&format!("labship-{}-work", p.name)));
}
