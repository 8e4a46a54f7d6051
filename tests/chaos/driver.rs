//! What the chaos tests drive: the simulator's fault API (tests/rig/instance-sim.py,
//! `/_sim/faults`), a labship process that can be signalled when a line appears on its
//! stderr or a condition holds on the engine, and the checks that nothing is left.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// SIGINT (the first Ctrl-C) or SIGKILL (nothing runs after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Int,
    Kill,
}

impl Sig {
    pub fn name(self) -> &'static str {
        match self {
            Sig::Int => "INT",
            Sig::Kill => "KILL",
        }
    }

    pub fn send(self, pid: u32) {
        let _ = Command::new("kill")
            .args([&format!("-{}", self.name()), &pid.to_string()])
            .status();
    }
}

/// What makes the test itself send a signal (calls are signalled by the simulator).
pub enum Trigger {
    /// None: the simulator signals.
    Simulator,
    /// When a stderr line contains this text.
    Stderr(&'static str),
    /// When this holds (polled every 100 ms).
    Engine(Box<dyn Fn() -> bool + Send>),
}

/// A finished run: its status, stdout and stderr.
pub struct Ended {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ended {
    pub fn killed_by(&self, signal: i32) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal() == Some(signal)
    }
}

/// Runs `cmd` (stdout and stderr captured), registering its pid with `faults` when given,
/// and signals it with `sig` when `trigger` says so. Bounded: killed after `within`.
pub fn run(
    mut cmd: Command,
    faults: Option<&Faults>,
    trigger: Trigger,
    sig: Sig,
    within: Duration,
) -> Ended {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start labship");
    let pid = child.id();
    if let Some(f) = faults {
        f.pid(pid);
    }
    let fired = Arc::new(Mutex::new(false));
    let stderr_lines = Arc::new(Mutex::new(String::new()));
    let err_pipe = child.stderr.take().expect("stderr");
    let (pattern, engine) = match trigger {
        Trigger::Simulator => (None, None),
        Trigger::Stderr(p) => (Some(p), None),
        Trigger::Engine(check) => (None, Some(check)),
    };
    let reader = {
        let fired = fired.clone();
        let lines = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                if let Some(p) = pattern {
                    let mut f = fired.lock().expect("lock");
                    if !*f && line.contains(p) {
                        *f = true;
                        sig.send(pid);
                    }
                }
                let mut all = lines.lock().expect("lock");
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    let mut out_pipe = child.stdout.take().expect("stdout");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out_pipe, &mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if let Some(check) = &engine {
            let mut f = fired.lock().expect("lock");
            if !*f && check() {
                *f = true;
                sig.send(pid);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("labship did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = stderr_lines.lock().expect("lock").clone();
    Ended {
        status,
        stdout,
        stderr,
    }
}

/// The run ended the way `sig` makes it end: SIGKILL kills it; after SIGINT it stops at a
/// safe point, says so, and exits 130.
pub fn assert_stopped_by(ended: &Ended, sig: Sig, what: &str) {
    match sig {
        Sig::Kill => assert!(
            ended.killed_by(9),
            "{what}: not killed ({:?}); stderr:\n{}",
            ended.status,
            ended.stderr
        ),
        Sig::Int => {
            assert_eq!(
                ended.status.code(),
                Some(130),
                "{what}: exit code after SIGINT; stderr:\n{}",
                ended.stderr
            );
            assert!(
                ended.stderr.contains("interrupted"),
                "{what}: no interruption message:\n{}",
                ended.stderr
            );
            assert!(
                ended.stdout.contains("labship::interrupted"),
                "{what}: the JSON error is not the interruption: {}",
                ended.stdout
            );
            assert!(
                !ended.stderr.contains("panicked"),
                "{what}: {}",
                ended.stderr
            );
        }
    }
}

/// Containers and volumes of a local deployment (its label, or a helper's).
pub fn local_leftovers(name: &str) -> String {
    let mut found = String::new();
    for label in [
        format!("label=dev.labship.deployment={name}"),
        format!("label=dev.labship.helper-of={name}"),
    ] {
        found.push_str(&docker_ok(&["ps", "-aq", "--filter", &label]));
        found.push_str(&docker_ok(&["volume", "ls", "-q", "--filter", &label]));
    }
    found.trim().to_string()
}

/// A GET of Jupyter's API with the token of `url`: the HTTP status (0: no answer).
fn tag(name: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("tag:labship:deployment")
        .values(name)
        .build()
}

/// What moto still holds of deployment `name` (seen directly on moto at `endpoint`, not
/// through labship): live instances, security groups, volumes, network interfaces, the
/// repository; with `shared`, also labship's IAM role and instance profile.
pub async fn aws_leftovers(endpoint: &str, name: &str, shared: bool) -> Vec<String> {
    let ec2 = ec2_client(endpoint);
    let mut left = Vec::new();
    let instances = ec2
        .describe_instances()
        .filters(tag(name))
        .send()
        .await
        .expect("DescribeInstances");
    for i in instances.reservations().iter().flat_map(|r| r.instances()) {
        let state = i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        if state != "terminated" {
            left.push(format!(
                "instance {} ({state})",
                i.instance_id().unwrap_or_default()
            ));
        }
    }
    let groups = ec2
        .describe_security_groups()
        .filters(tag(name))
        .send()
        .await
        .expect("DescribeSecurityGroups");
    for g in groups.security_groups() {
        left.push(format!(
            "security group {}",
            g.group_id().unwrap_or_default()
        ));
        let enis = ec2
            .describe_network_interfaces()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-id")
                    .values(g.group_id().unwrap_or_default())
                    .build(),
            )
            .send()
            .await
            .expect("DescribeNetworkInterfaces");
        for e in enis.network_interfaces() {
            left.push(format!(
                "network interface {}",
                e.network_interface_id().unwrap_or_default()
            ));
        }
    }
    let volumes = ec2
        .describe_volumes()
        .filters(tag(name))
        .send()
        .await
        .expect("DescribeVolumes");
    for v in volumes.volumes() {
        left.push(format!("volume {}", v.volume_id().unwrap_or_default()));
    }
    let parameter = format!("/labship/{name}/token");
    let sealed = aws_cli(endpoint, &["ssm", "get-parameter", "--name", &parameter]);
    if sealed.status.success() {
        left.push(format!("SSM parameter {parameter}"));
    } else if !String::from_utf8_lossy(&sealed.stderr).contains("ParameterNotFound") {
        panic!(
            "aws ssm get-parameter {parameter}: {}",
            String::from_utf8_lossy(&sealed.stderr)
        );
    }
    let repo = ecr_client(endpoint)
        .await
        .describe_repositories()
        .repository_names(format!("labship/{name}"))
        .send()
        .await;
    if repo.is_ok() {
        left.push(format!("repository labship/{name}"));
    }
    if shared {
        let iam = iam_client(endpoint);
        if iam
            .get_role()
            .role_name("labship-instance")
            .send()
            .await
            .is_ok()
        {
            left.push("IAM role labship-instance".into());
        }
        if iam
            .get_instance_profile()
            .instance_profile_name("labship-instance")
            .send()
            .await
            .is_ok()
        {
            left.push("instance profile labship-instance".into());
        }
    }
    left
}
