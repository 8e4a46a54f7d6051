//! The kill matrix: labship is stopped (SIGINT, the first Ctrl-C, or SIGKILL) at named points
//! of `up --ec2`, `up --local` and `down --ec2`. After each: a plain re-run converges (the
//! same instance, a working URL), then `down` leaves nothing in moto or on the engine.
//!
//! A representative subset runs in CI; every point with both signals runs with
//! `bash tests/rig/run.sh --test chaos -- --include-ignored`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::driver::*;
use crate::support::*;

/// Where the signal comes.
#[derive(Clone, Copy)]
enum At {
    /// Before (false) or after (true) the `nth` call of an AWS action, by the simulator.
    Call(&'static str, u32, bool),
    /// When labship prints a line with this text.
    Line(&'static str),
}

/// Which run is stopped.
#[derive(Clone, Copy, PartialEq)]
enum Run {
    /// The first `up`.
    Up,
    /// An `up` that replaces the container of a running deployment with a new image.
    Replace,
    /// `down`.
    Down,
}

fn live_instances(report: &[String]) -> Vec<String> {
    report
        .iter()
        .filter(|r| r.starts_with("instance "))
        .cloned()
        .collect()
}

/// One EC2 kill point. `private`: on a moto and simulator of its own (for points that need
/// the shared IAM role not to exist yet); `down --all` then also removes the role.
async fn ec2_point(name: &str, run: Run, at: At, sig: Sig, private: bool) {
    let own = private.then(PrivateSim::start);
    let (sim, moto) = match &own {
        Some(s) => (s.url.clone(), s.moto_url.clone()),
        None => (sim_endpoint(), rig().aws_endpoint),
    };
    let p = Project::default_workload(&short(name));
    let deployment = p.name.clone();
    let faults = Faults::new(&sim, name);
    let env = faults.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let port = free_port().to_string();

    // What exists before the stopped run.
    if run != Run::Up {
        json(&p.labship_at(&sim, &ec2_up_args(&port), &env));
    }
    if run == Run::Replace {
        p.write("docker/added.txt", "a change, so a new image\n");
    }
    let before = live_instances(&aws_leftovers(&moto, &deployment, false).await);

    let (rules, trigger) = match at {
        At::Call(action, nth, after) => (
            json!([{"action": action, "nth": nth, "when": if after {"after"} else {"before"}, "signal": sig.name()}]),
            Trigger::Simulator,
        ),
        At::Line(text) => (json!([]), Trigger::Stderr(text)),
    };
    faults.set(1, rules);
    let args: Vec<&str> = match run {
        Run::Down => vec!["down", "--ec2", "--yes", "--purge-images", "-o", "json"],
        _ => ec2_up_args(&port),
    };
    let mut cmd = p.command(&args);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let ended = crate::driver::run(cmd, Some(&faults), trigger, sig, Duration::from_secs(900));
    if let At::Call(..) = at {
        let fired = faults.report()["fired"].clone();
        assert!(
            fired.as_array().is_some_and(|f| !f.is_empty()),
            "{name}: the simulator never reached the kill point; stderr:\n{}",
            ended.stderr
        );
    }
    assert_stopped_by(&ended, sig, name);
    faults.clear();

    // A plain re-run converges: one instance (the same one, if one existed), a URL that works.
    let after_kill = live_instances(&aws_leftovers(&moto, &deployment, false).await);
    if run != Run::Down {
        let again: Value = json(&p.labship_at(&sim, &ec2_up_args(&port), &env));
        let url = again["url"].as_str().expect("url").to_string();
        assert_eq!(report_answers(&again), 200, "{name}: {url} does not answer");
        let now = live_instances(&aws_leftovers(&moto, &deployment, false).await);
        assert_eq!(now.len(), 1, "{name}: instances now {now:?}");
        if let Some(existing) = after_kill.first().or(before.first()) {
            assert_eq!(&now[0], existing, "{name}: a second instance was launched");
        }
    }
    let mut down = vec!["down", "--ec2", "--yes", "--delete-data", "--purge-images"];
    if private {
        down.push("--all");
    }
    down.extend(["-o", "json"]);
    json(&p.labship_at(&sim, &down, &env));
    let left = aws_leftovers(&moto, &deployment, private).await;
    assert!(left.is_empty(), "{name}: left in moto: {left:?}");
    let label = format!("label=dev.labship.ec2.deployment={deployment}");
    assert_eq!(
        docker_ok(&["ps", "-aq", "--filter", &label]).trim(),
        "",
        "{name}: instance containers left"
    );
}

/// One local kill point.
fn local_point(name: &str, replace: bool, trigger: fn(String) -> Trigger, sig: Sig) {
    let p = Project::default_workload(&short(name));
    let deployment = p.name.clone();
    let args = ["up", "--wait", "300", "-o", "json"];
    if replace {
        json(&p.labship(&args));
        p.write("docker/added.txt", "a change, so a new image\n");
    }
    let ended = crate::driver::run(
        p.command(&args),
        None,
        trigger(deployment.clone()),
        sig,
        Duration::from_secs(600),
    );
    assert_stopped_by(&ended, sig, name);

    let again = json(&p.labship(&args));
    let url = again["url"].as_str().expect("url").to_string();
    assert_eq!(report_answers(&again), 200, "{name}: {url} does not answer");
    let running = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.labship.deployment={deployment}"),
    ]);
    assert_eq!(running.lines().count(), 1, "{name}: containers {running}");

    json(&p.labship(&["down", "--yes", "--delete-data", "-o", "json"]));
    assert_eq!(
        local_leftovers(&deployment),
        "",
        "{name}: left on the engine"
    );
}

/// A deployment-name prefix from a test's name (`ec2_kill_after_run` → `ec2killaf`).
fn short(test: &str) -> String {
    test.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(9)
        .collect()
}

fn container_exists(name: &str) -> bool {
    docker(&["container", "inspect", name]).status.success()
}

fn container_running(name: &str) -> bool {
    docker_ok(&["ps", "-q", "--filter", &format!("name=^{name}$")])
        .trim()
        .len()
        > 1
}

fn after_create(deployment: String) -> Trigger {
    Trigger::Engine(Box::new(move || {
        container_exists(&format!("labship-{deployment}"))
    }))
}

fn mid_replace(deployment: String) -> Trigger {
    Trigger::Engine(Box::new(move || {
        container_exists(&format!("labship-{deployment}-previous"))
    }))
}

fn during_wait(deployment: String) -> Trigger {
    Trigger::Engine(Box::new(move || {
        container_running(&format!("labship-{deployment}"))
    }))
}

fn during_build(_: String) -> Trigger {
    Trigger::Stderr("Building ")
}

/// An instance simulator (and moto) of a test's own.
struct PrivateSim {
    url: String,
    moto_url: String,
    _moto: Server,
    child: std::process::Child,
    _state: tempfile::TempDir,
}

impl PrivateSim {
    fn start() -> PrivateSim {
        let moto = Server::moto();
        let moto_url = format!("http://{}", moto.addr);
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let state = tempfile::tempdir().expect("tempdir");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rig/instance-sim.py");
        let image = std::env::var("LABSHIP_TEST_SIM_HOST_IMAGE")
            .expect("LABSHIP_TEST_SIM_HOST_IMAGE: run through tests/rig/run.sh");
        let child = std::process::Command::new("python3")
            .arg(script)
            .args([
                "--port",
                &port.to_string(),
                "--moto",
                &moto_url,
                "--image",
                &image,
            ])
            .arg("--state-dir")
            .arg(state.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start instance-sim.py");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::process::Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", &format!("{url}/_sim/health")])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "private simulator did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        PrivateSim {
            url,
            moto_url,
            _moto: moto,
            child,
            _state: state,
        }
    }
}

impl Drop for PrivateSim {
    fn drop(&mut self) {
        // SIGTERM: it removes the instance containers it started.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

macro_rules! ec2 {
    ($test:ident, $run:expr, $at:expr, $sig:expr) => {
        ec2!($test, $run, $at, $sig, false);
    };
    ($test:ident, $run:expr, $at:expr, $sig:expr, $private:expr) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $test() {
            ec2_point(stringify!($test), $run, $at, $sig, $private).await;
        }
    };
    (ignore $test:ident, $run:expr, $at:expr, $sig:expr $(, $private:expr)?) => {
        #[tokio::test(flavor = "multi_thread")]
        #[ignore = "exhaustive kill matrix: --include-ignored"]
        async fn $test() {
            ec2_point(stringify!($test), $run, $at, $sig, false $(|| $private)?).await;
        }
    };
}

macro_rules! local {
    ($test:ident, $replace:expr, $trigger:expr, $sig:expr) => {
        #[test]
        fn $test() {
            local_point(stringify!($test), $replace, $trigger, $sig);
        }
    };
    (ignore $test:ident, $replace:expr, $trigger:expr, $sig:expr) => {
        #[test]
        #[ignore = "exhaustive kill matrix: --include-ignored"]
        fn $test() {
            local_point(stringify!($test), $replace, $trigger, $sig);
        }
    };
}

use At::{Call, Line};
use Run::{Down, Replace, Up};
use Sig::{Int, Kill};

// ---- the CI subset: an EC2 kill and an EC2 interrupt mid-write, a local kill mid-replace --
ec2!(
    ec2_kill_after_create_repository,
    Up,
    Call("ecr:CreateRepository", 1, true),
    Kill
);
ec2!(
    ec2_int_after_run_instances,
    Up,
    Call("ec2:RunInstances", 1, true),
    Int
);
local!(local_kill_mid_replace, true, mid_replace, Kill);

// ---- the rest of the matrix ---------------------------------------------------------------
ec2!(ignore ec2_int_before_any_write, Up, Call("ecr:GetAuthorizationToken", 1, false), Int);
ec2!(ignore ec2_kill_before_any_write, Up, Call("ecr:GetAuthorizationToken", 1, false), Kill);
ec2!(ignore ec2_int_during_build, Up, Line("Building "), Int);
ec2!(ignore ec2_kill_during_build, Up, Line("Building "), Kill);
ec2!(ignore ec2_int_after_create_repository, Up, Call("ecr:CreateRepository", 1, true), Int);
ec2!(ignore ec2_int_between_role_and_profile, Up, Call("iam:CreateRole", 1, true), Int, true);
ec2!(ignore ec2_kill_between_role_and_profile, Up, Call("iam:CreateRole", 1, true), Kill, true);
ec2!(ignore ec2_int_after_create_security_group, Up, Call("ec2:CreateSecurityGroup", 1, true), Int);
ec2!(ignore ec2_kill_after_create_security_group, Up, Call("ec2:CreateSecurityGroup", 1, true), Kill);
ec2!(ignore ec2_int_after_authorize_ingress, Up, Call("ec2:AuthorizeSecurityGroupIngress", 1, true), Int);
ec2!(ignore ec2_kill_after_authorize_ingress, Up, Call("ec2:AuthorizeSecurityGroupIngress", 1, true), Kill);
ec2!(ignore ec2_int_before_run_instances, Up, Call("ec2:RunInstances", 1, false), Int);
ec2!(ignore ec2_kill_before_run_instances, Up, Call("ec2:RunInstances", 1, false), Kill);
ec2!(ignore ec2_kill_after_run_instances, Up, Call("ec2:RunInstances", 1, true), Kill);
ec2!(ignore ec2_int_during_push, Up, Line("Pushing "), Int);
ec2!(ignore ec2_kill_during_push, Up, Line("Pushing "), Kill);
ec2!(ignore ec2_int_during_console_wait, Up, Call("ec2:GetConsoleOutput", 2, true), Int);
ec2!(ignore ec2_int_after_replace_command, Replace, Call("ssm:SendCommand", 1, true), Int);
ec2!(ignore ec2_kill_after_replace_command, Replace, Call("ssm:SendCommand", 1, true), Kill);
ec2!(ignore ec2_kill_during_down, Down, Call("ec2:TerminateInstances", 1, true), Kill);
local!(ignore local_int_during_build, false, during_build, Int);
local!(ignore local_kill_during_build, false, during_build, Kill);
local!(ignore local_int_after_create, false, after_create, Int);
local!(ignore local_kill_after_create, false, after_create, Kill);
local!(ignore local_int_mid_replace, true, mid_replace, Int);
local!(ignore local_kill_during_wait, false, during_wait, Kill);
ec2!(ignore ec2_kill_during_console_wait, Up, Call("ec2:GetConsoleOutput", 2, true), Kill);
ec2!(ignore ec2_int_during_down, Down, Call("ec2:TerminateInstances", 1, true), Int);
local!(ignore local_int_during_wait, false, during_wait, Int);
