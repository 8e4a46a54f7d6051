//! The rig as tests see it: where the servers are, a project folder per test, the binary,
//! and clients for checking results independently of labship (the registry's own API, the
//! docker CLI, the AWS SDK against moto).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

/// Where the rig's servers are. Tests fail (never skip) without it: run them through
/// `bash tests/rig/run.sh`.
#[derive(Debug, Clone)]
pub struct Rig {
    pub aws_endpoint: String,
    pub registry: String,
    pub registry_user: String,
    pub registry_password: String,
    pub base_image: String,
    pub venv: PathBuf,
}

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through `bash tests/rig/run.sh`, which starts the registry, moto and the offline base image")
    })
}

pub fn rig() -> Rig {
    Rig {
        aws_endpoint: need("LABSHIP_TEST_AWS_ENDPOINT"),
        registry: need("LABSHIP_TEST_REGISTRY"),
        registry_user: need("LABSHIP_TEST_REGISTRY_USER"),
        registry_password: need("LABSHIP_TEST_REGISTRY_PASSWORD"),
        base_image: need("LABSHIP_TEST_BASE_IMAGE"),
        venv: PathBuf::from(need("LABSHIP_RIG_VENV")),
    }
}

/// A unique deployment name, so tests sharing moto and the registry never collide.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}{:x}",
        std::process::id() & 0xfff,
        nanos & 0xfffff
    )
}

/// A project folder: labship.toml plus a build context. Its images go when it does.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Drop for Project {
    fn drop(&mut self) {
        remove_images(&format!("labship/{}", self.name));
    }
}

impl Project {
    /// The repository's own default workload (`docker/`), built on the rig's offline base.
    pub fn default_workload(prefix: &str) -> Project {
        let p = Project::empty(prefix);
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("docker"),
            &p.dir.path().join("docker"),
        );
        p
    }

    /// A labship.toml naming the rig's base image and nothing else.
    pub fn empty(prefix: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("labship-e2e-")
            .tempdir()
            .expect("tempdir");
        let name = unique(prefix);
        let toml = format!(
            "name = \"{name}\"\n[build.args]\nBASE_IMAGE = \"{}\"\n",
            rig().base_image
        );
        std::fs::write(dir.path().join("labship.toml"), toml).expect("write labship.toml");
        Project { dir, name }
    }

    /// A project whose context holds the given files.
    pub fn with_files(prefix: &str, files: &[(&str, &str)]) -> Project {
        let p = Project::empty(prefix);
        for (rel, body) in files {
            p.write(&format!("docker/{rel}"), body);
        }
        p
    }

    pub fn write(&self, rel: &str, body: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, body).expect("write");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn repository(&self) -> String {
        format!("labship/{}", self.name)
    }

    /// `labship ARGS` in this project with the rig's AWS and registry settings.
    pub fn labship(&self, args: &[&str]) -> Output {
        run_logged(self.command(args), args, "")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let rig = rig();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_labship"));
        cmd.args(args).current_dir(self.path()).stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("LABSHIP_") || key.starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("AWS_ENDPOINT_URL", &rig.aws_endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/nonexistent/labship-test-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/labship-test-credentials",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("LABSHIP_REGISTRY_ENDPOINT", &rig.registry);
        cmd
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

pub fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "labship failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The JSON error object labship prints with `--output json`, after checking the exit code.
pub fn json_error(output: &Output) -> Value {
    assert!(!output.status.success(), "expected a failure");
    let v: Value = serde_json::from_slice(&output.stdout).expect("error JSON on stdout");
    v["error"].clone()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The docker CLI, as an independent witness of what is on the engine.
/// An error's words as one line: miette wraps its message at the terminal's width (with a
/// `│` margin), so a longer name moves where lines break.
pub fn unwrapped(text: &str) -> String {
    text.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker CLI")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mount of `container` whose destination ends with `suffix`, as the engine describes
/// it (`docker inspect`'s `.Mounts`).
pub fn mount_of(container: &str, suffix: &str) -> Value {
    let mounts: Value = serde_json::from_str(&docker_ok(&[
        "inspect",
        "--format",
        "{{json .Mounts}}",
        container,
    ]))
    .expect("mounts JSON");
    mounts
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| {
            m["Destination"]
                .as_str()
                .is_some_and(|d| d.ends_with(suffix))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no mount at …{suffix} in {mounts}"))
}

/// Removes every tag of `repo` (locally built, or named with a registry in front).
pub fn remove_images(repo: &str) {
    let listed = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let refs: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|r| {
            let name = r.rsplit_once(':').map_or(*r, |(n, _)| n);
            name == repo || name.ends_with(&format!("/{repo}"))
        })
        .map(str::to_string)
        .collect();
    if !refs.is_empty() {
        let mut args = vec!["rmi", "-f"];
        args.extend(refs.iter().map(String::as_str));
        let _ = docker(&args);
    }
}

pub fn image_exists(reference: &str) -> bool {
    docker(&["image", "inspect", reference]).status.success()
}

/// The registry's own v2 API with basic auth.
pub struct Registry {
    base: String,
    auth: String,
}

impl Registry {
    pub fn new(host: &str, user: &str, password: &str) -> Registry {
        Registry {
            base: format!("http://{host}"),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        }
    }

    pub fn rig() -> Registry {
        let r = rig();
        Registry::new(&r.registry, &r.registry_user, &r.registry_password)
    }

    /// The manifest of `repo:reference`, or None when the registry has no such tag.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Value> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
        match ureq::get(&url)
            .header("Authorization", &self.auth)
            .header("Accept", accept)
            .call()
        {
            Ok(mut resp) => Some(resp.body_mut().read_json().expect("manifest JSON")),
            Err(ureq::Error::StatusCode(404)) => None,
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        match ureq::head(&url).header("Authorization", &self.auth).call() {
            Ok(resp) => resp.status() == 200,
            Err(ureq::Error::StatusCode(404)) => false,
            Err(e) => panic!("HEAD {url}: {e}"),
        }
    }
}

/// A server process the test owns; stopped (killed and reaped) on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on every address now, for a server a test starts.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive ports free on every address now (bound on 0.0.0.0: not held on
/// 127.0.0.1, nor on a simulated instance's own address in 127.0.0.0/8). They are taken below the
/// kernel's ephemeral range (32768-60999 here): an ephemeral port the OS handed out for a
/// check is the next one any outgoing connection may take before the test's server binds it
/// (seen as a seat's `docker run` failing with "port is already allocated"). Each call starts
/// elsewhere in 12000-31999 (the process id and a counter), so concurrent tests do not meet.
pub fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    let seed = std::process::id().wrapping_mul(7919)
        + CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729);
    for attempt in 0..SPAN {
        let first = LOW + (seed.wrapping_add(attempt.wrapping_mul(61)) % (SPAN - u32::from(n)));
        let Ok(first) = u16::try_from(first) else {
            continue;
        };
        if (0..n).all(|i| std::net::TcpListener::bind(("0.0.0.0", first + i)).is_ok()) {
            return first;
        }
    }
    panic!("no {n} consecutive free ports in 12000-31999");
}

fn wait_for(addr: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {addr} after {within:?}");
}

impl Server {
    /// A second registry whose only user has the given password (for a refused login).
    pub fn registry(user: &str, password: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils)");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("write htpasswd");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("write config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        wait_for(&addr, Duration::from_secs(20));
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    /// A moto server of our own with IAM authorization switched on after `free_actions`
    /// unauthenticated calls (moto's INITIAL_NO_AUTH_ACTION_COUNT).
    pub fn moto_with_iam(free_actions: u32) -> Server {
        Server::moto_with("INITIAL_NO_AUTH_ACTION_COUNT", &free_actions.to_string())
    }

    /// A moto server of our own with one setting in its environment.
    fn moto_with(key: &str, value: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(rig().venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env(key, value)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_for(&addr, Duration::from_secs(30));
        Server {
            child,
            addr,
            _dir: dir,
        }
    }
}

/// An ECR client against moto (an independent view of what labship created).
pub async fn ecr_client(endpoint: &str) -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::new(&sdk_config(endpoint))
}

/// `labship backup --ec2 --to DEST` of `p`'s deployment through `endpoint`: its JSON report.
pub fn backup_ec2_to(p: &Project, endpoint: &str, dest: &Path) -> Value {
    json(&p.labship_at(
        endpoint,
        &[
            "backup",
            "--ec2",
            "--to",
            dest.to_str().expect("utf-8"),
            "-o",
            "json",
        ],
        &[],
    ))
}

/// The row of `run_id` in a `labship runs -o json` report.
pub fn run_row(runs: &Value, run_id: &str) -> Value {
    runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["run_id"] == run_id)
        .cloned()
        .unwrap_or_else(|| panic!("{run_id} in {runs}"))
}

/// `labship up --ec2` as the EC2 tests run it: Jupyter on `port` of the instance (of its own
/// address, where the simulator publishes it), open to 127.0.0.1 only, JSON out.
pub fn ec2_up_args(port: &str) -> Vec<&str> {
    vec![
        "up",
        "--ec2",
        "--allow-cidr",
        "127.0.0.1/32",
        "--bind",
        "127.0.0.1",
        "--port",
        port,
        "--wait",
        "600",
        "-o",
        "json",
    ]
}

/// `labship down --ec2 --yes EXTRA... -o json`: the EC2 tests' teardown (with
/// `--delete-data --purge-images`, everything goes).
pub fn ec2_down_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["down", "--ec2", "--yes"];
    args.extend(extra);
    args.extend(["-o", "json"]);
    args
}

/// The instance simulator in front of moto (tests/rig/instance-sim.py): EC2 calls through it
/// run each instance's user-data for real and serve its output as the console.
pub fn sim_endpoint() -> String {
    need("LABSHIP_TEST_SIM_ENDPOINT")
}

impl Project {
    /// `labship ARGS` with the AWS endpoint replaced (the simulator, a private moto) and
    /// extra environment.
    pub fn labship_at(&self, endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.env("AWS_ENDPOINT_URL", endpoint);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_logged(cmd, args, &format!("  (AWS at {endpoint})"))
    }
}

impl Server {
    /// A private moto like the rig's (AWS managed policies loaded), for tests that change
    /// account-wide things (the default VPC, the shared IAM role).
    pub fn moto() -> Server {
        Server::moto_with("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    }
}

fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("testing", "testing", None, None, "test"),
            ),
        )
        .build()
}

/// EC2 and IAM clients against moto (an independent view of what labship created).
pub fn ec2_client(endpoint: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config(endpoint))
}

pub fn iam_client(endpoint: &str) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&sdk_config(endpoint))
}

/// A one-line HTTP server answering every request with `body` (a stand-in for the public
/// address service), on a free loopback port; lives as long as the test process.
pub fn text_server(body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Runs labship and shows what it printed (cargo test prints it for a failing test).
pub fn run_logged(mut cmd: Command, args: &[&str], note: &str) -> Output {
    let output = cmd.output().expect("run labship");
    eprintln!(
        "$ labship {}{note}\n--- stderr ---\n{}--- stdout ---\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// An IAM user on the moto at `endpoint` whose only permissions are `policy`: its key id and
/// secret (made with the aws CLI, as an administrator would).
pub fn limited_user(endpoint: &str, user: &str, policy: &str) -> (String, String) {
    let aws = |args: &[&str]| -> String {
        let out = aws_cli(endpoint, args);
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    aws(&["iam", "create-user", "--user-name", user]);
    let key: Value = serde_json::from_str(&aws(&["iam", "create-access-key", "--user-name", user]))
        .expect("key JSON");
    aws(&[
        "iam",
        "put-user-policy",
        "--user-name",
        user,
        "--policy-name",
        user,
        "--policy-document",
        policy,
    ]);
    let field = |f: &str| {
        key["AccessKey"][f]
            .as_str()
            .expect("access key")
            .to_string()
    };
    (field("AccessKeyId"), field("SecretAccessKey"))
}

/// `aws ARGS` (the AWS CLI of the rig's venv, the client a user would use) against
/// `endpoint` as the test account (in us-east-1 unless ARGS name `--region`), JSON out.
pub fn aws_cli(endpoint: &str, args: &[&str]) -> Output {
    aws_cli_as(endpoint, args, ("testing", "testing"))
}

/// [`aws_cli`] as the identity of `(key id, secret)`.
pub fn aws_cli_as(endpoint: &str, args: &[&str], (key, secret): (&str, &str)) -> Output {
    // us-east-1 unless the arguments name a region.
    let region: &[&str] = if args.contains(&"--region") {
        &[]
    } else {
        &["--region", "us-east-1"]
    };
    Command::new(rig().venv.join("bin/aws"))
        .args(args)
        .args(region)
        .args(["--endpoint-url", endpoint, "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("aws CLI")
}

/// Puts `body` at `s3://bucket/key` with the AWS CLI (the bucket in `region`).
pub fn s3_put(endpoint: &str, bucket: &str, key: &str, body: &str, region: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("object");
    std::fs::write(&file, body).expect("write");
    let out = aws_cli(
        endpoint,
        &[
            "s3",
            "cp",
            file.to_str().expect("path"),
            &format!("s3://{bucket}/{key}"),
            "--region",
            region,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The keys under `prefix` of `bucket`, sorted, as the AWS CLI lists them.
pub fn s3_keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = aws_json(
        endpoint,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
        ],
    );
    let mut keys: Vec<String> = listed["Contents"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|o| o["Key"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// The running instances of a class, as the AWS CLI describes them.
pub fn class_instances(endpoint: &str, class: &str) -> Vec<Value> {
    let described = aws_json(
        endpoint,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            &format!("Name=tag:labship:class,Values={class}"),
            "Name=instance-state-name,Values=running",
        ],
    );
    described["Reservations"]
        .as_array()
        .expect("reservations")
        .iter()
        .flat_map(|r| r["Instances"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The security group a class's seats share (`labship-class.CLASS`), as the AWS CLI
/// describes it, if there is one.
pub fn class_group(endpoint: &str, class: &str) -> Option<Value> {
    let described = aws_json(
        endpoint,
        &[
            "ec2",
            "describe-security-groups",
            "--filters",
            &format!("Name=group-name,Values=labship-class.{class}"),
        ],
    );
    described["SecurityGroups"]
        .as_array()
        .and_then(|all| all.first().cloned())
}

/// [`aws_cli`], which must succeed: its stdout as JSON.
pub fn aws_json(endpoint: &str, args: &[&str]) -> Value {
    let out = aws_cli(endpoint, args);
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "aws {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every distinct command line of this machine's processes (containers' included: they
/// share the kernel), sampled every 20 ms from `/proc/*/cmdline` until [`Argv::stop`].
pub struct Argv {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::collections::BTreeSet<String>>,
}

impl Argv {
    pub fn sample() -> Argv {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            // Bounded: at most 30 minutes of sampling and 200,000 distinct lines.
            let until = std::time::Instant::now() + Duration::from_secs(1800);
            while !flag.load(Ordering::Relaxed)
                && std::time::Instant::now() < until
                && seen.len() < 200_000
            {
                if let Ok(dir) = std::fs::read_dir("/proc") {
                    for entry in dir.flatten() {
                        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
                            if !raw.is_empty() {
                                seen.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Argv { stop, thread }
    }

    pub fn stop(self) -> std::collections::BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the sampler")
    }
}

/// `GET <base>/api/status` for a Jupyter login URL (`<scheme>://host:port<path>?token=T`),
/// with its token in a header, or without one: the status code, 0 when there was no answer.
/// An `https://` URL is reached over TLS pinned to `pin` (the certificate the instance
/// published), as labship does; an `http://` URL in the clear.
pub fn jupyter_status(url: &str, pin: Option<&str>, with_token: bool) -> u16 {
    let token = url
        .split("token=")
        .nth(1)
        .filter(|_| with_token)
        .map(str::to_string);
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{}", path.split('?').next().unwrap_or_default());
    let api = path
        .trim_end_matches('/')
        .trim_end_matches("/lab")
        .trim_end_matches("/tree")
        .to_string();
    let endpoint = match (url.starts_with("https://"), pin) {
        (true, Some(pin)) => labship::http::Endpoint::Pinned(
            addr.to_string(),
            pin.parse().expect("a SHA-256 fingerprint"),
        ),
        (true, None) => panic!("{url}: an https URL needs the fingerprint to pin"),
        (false, _) => labship::http::Endpoint::Plain(addr.to_string()),
    };
    // Its own runtime on its own thread: callable from sync tests and async ones alike.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(labship::http::get_bytes_at(
            &endpoint,
            &format!("{api}/api/status"),
            token.as_deref(),
            1 << 16,
            Duration::from_secs(10),
        ))
        .map(|(status, _)| status)
        .unwrap_or(0)
    })
    .join()
    .expect("the status thread")
}

/// [`jupyter_status`] of the URL in an `up`/`token` JSON report, pinned to its
/// `tls_fingerprint` when it has one.
pub fn report_answers(report: &Value) -> u16 {
    jupyter_status(
        report["url"].as_str().expect("url"),
        report["tls_fingerprint"].as_str(),
        true,
    )
}

/// A PyPI-like index on loopback (`tests/rig/pypi.py`) that reports every wheel it sends.
pub struct PackageIndex {
    child: Child,
    pub port: u16,
    downloads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl PackageIndex {
    /// Serves `packages` (`name==version`), each a generated pure-Python wheel.
    pub fn start(packages: &[&str]) -> PackageIndex {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rig/pypi.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(packages)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the package index");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the package index did not start: {first:?}"));
        let downloads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&downloads);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(file) = line.strip_prefix("download ") {
                    seen.lock().expect("lock").push(file.to_string());
                }
            }
        });
        PackageIndex {
            child,
            port,
            downloads,
        }
    }

    /// The wheels sent since the last call.
    pub fn take_downloads(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        let mut all = std::mem::take(&mut *self.downloads.lock().expect("lock"));
        all.sort();
        all
    }
}

impl Drop for PackageIndex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kernel driven as JupyterLab drives it: started over REST, code sent over its websocket
/// without waiting, the REST API polled as an open tab polls it.
pub struct Kernel {
    agent: ureq::Agent,
    base: String,
    auth: String,
    id: String,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
}

impl Kernel {
    pub fn start(base: &str, token: &str) -> Kernel {
        use tungstenite::client::IntoClientRequest;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let auth = format!("token {token}");
        let mut started = agent
            .post(&format!("{base}/api/kernels"))
            .header("Authorization", &auth)
            .send_json(serde_json::json!({"name": "python3"}))
            .expect("POST /api/kernels");
        assert_eq!(started.status().as_u16(), 201, "POST /api/kernels");
        let kernel: Value = started.body_mut().read_json().expect("kernel JSON");
        let id = kernel["id"].as_str().expect("kernel id").to_string();
        let host = base.trim_start_matches("http://");
        let mut request = format!("ws://{host}/api/kernels/{id}/channels")
            .into_client_request()
            .expect("ws request");
        request
            .headers_mut()
            .insert("Authorization", auth.parse().expect("header"));
        request
            .headers_mut()
            .insert("Origin", base.parse().expect("header"));
        let (mut ws, _) = tungstenite::connect(request).expect("kernel websocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_mut() {
            tcp.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
        }
        Kernel {
            agent,
            base: base.to_string(),
            auth,
            id,
            ws,
        }
    }

    /// Sends `code` for execution; returns the request's id.
    pub fn execute(&mut self, code: &str) -> String {
        let msg_id = unique("exec");
        let execute = serde_json::json!({
            "header": {"msg_id": msg_id, "username": "labship-test", "session": unique("session"),
                       "msg_type": "execute_request", "version": "5.3",
                       "date": "2026-11-30T00:00:00.000000Z"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": false, "store_history": false,
                        "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}
        });
        self.ws
            .send(tungstenite::Message::Text(execute.to_string().into()))
            .expect("send execute_request");
        msg_id
    }

    /// What Jupyter says of the kernel over REST (`busy`, `idle`, ...): the polling of an
    /// open tab, which must not count as activity.
    pub fn poll(&self) -> String {
        for page in ["api/status", "api/sessions", "api/terminals"] {
            let _ = self
                .agent
                .get(&format!("{}/{page}", self.base))
                .header("Authorization", &self.auth)
                .call();
        }
        let mut kernels = match self
            .agent
            .get(&format!("{}/api/kernels", self.base))
            .header("Authorization", &self.auth)
            .call()
        {
            Ok(r) => r,
            Err(_) => return "unreachable".into(),
        };
        let list: Value = kernels.body_mut().read_json().unwrap_or_default();
        list.as_array()
            .and_then(|ks| ks.iter().find(|k| k["id"] == self.id.as_str()))
            .and_then(|k| k["execution_state"].as_str())
            .unwrap_or("gone")
            .to_string()
    }

    /// Reads the websocket until `pick` returns something for a message, calling
    /// `meanwhile` about every 3 s.
    fn read_until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&Value) -> Option<T>,
        mut meanwhile: impl FnMut(),
    ) -> T {
        let t = Instant::now();
        let mut last_poll = Instant::now();
        loop {
            assert!(t.elapsed() < within, "{what}: nothing within {within:?}");
            match self.ws.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let msg: Value = serde_json::from_str(&text).unwrap_or_default();
                    if let Some(found) = pick(&msg) {
                        return found;
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("kernel websocket: {e}"),
            }
            if last_poll.elapsed() > Duration::from_secs(3) {
                last_poll = Instant::now();
                meanwhile();
            }
        }
    }

    /// Reads the websocket until the kernel says it is idle after `msg_id` (the code ran).
    pub fn wait_done(&mut self, msg_id: &str, within: Duration, meanwhile: impl FnMut()) {
        self.read_until(
            msg_id,
            within,
            |msg| {
                (msg["parent_header"]["msg_id"] == msg_id
                    && msg["msg_type"] == "status"
                    && msg["content"]["execution_state"] == "idle")
                    .then_some(())
            },
            meanwhile,
        )
    }

    /// The text/plain result of `msg_id`.
    pub fn result(&mut self, msg_id: &str, within: Duration) -> String {
        self.read_until(
            msg_id,
            within,
            |msg| {
                (msg["parent_header"]["msg_id"] == msg_id && msg["msg_type"] == "execute_result")
                    .then(|| {
                        msg["content"]["data"]["text/plain"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
            },
            || {},
        )
    }

    /// Closes the websocket and shuts the kernel down.
    pub fn shutdown(mut self) {
        let _ = self.ws.close(None);
        let _ = self
            .agent
            .delete(&format!("{}/api/kernels/{}", self.base, self.id))
            .header("Authorization", &self.auth)
            .call();
    }
}

/// `{"calls": {...}, "fired": [...]}` of the fault scope `key` of the simulator at `sim`.
fn fault_report(sim: &str, key: &str) -> Value {
    let mut resp = sim_agent()
        .get(&format!("{sim}/_sim/faults?scope={key}"))
        .call()
        .expect("GET /_sim/faults");
    resp.body_mut().read_json().expect("fault report JSON")
}

/// One scope of the simulator's fault injector: the rules apply only to calls signed with
/// this access key, so tests running at the same time do not see each other's faults.
pub struct Faults {
    sim: String,
    pub key: String,
}

fn sim_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl Faults {
    pub fn new(sim: &str, test: &str) -> Faults {
        let key = format!(
            "AKIDCHAOS{}",
            unique(test).replace('-', "").to_ascii_uppercase()
        );
        let f = Faults {
            sim: sim.trim_end_matches('/').to_string(),
            key,
        };
        f.clear();
        f
    }

    /// Replaces the scope's rules.
    pub fn set(&self, seed: u64, rules: Value) {
        let body = serde_json::json!({"scope": self.key, "seed": seed, "rules": rules});
        let mut resp = sim_agent()
            .post(&format!("{}/_sim/faults", self.sim))
            .send_json(&body)
            .expect("POST /_sim/faults");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 200, "fault rules refused: {text}");
    }

    /// The process that signal rules signal (the chaos tests').
    #[allow(dead_code)]
    pub fn pid(&self, pid: u32) {
        let resp = sim_agent()
            .post(format!("{}/_sim/faults/pid", self.sim))
            .send_json(serde_json::json!({"scope": self.key, "pid": pid}))
            .expect("POST /_sim/faults/pid");
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// `{"calls": {...}, "fired": [...]}` of this scope.
    pub fn report(&self) -> Value {
        fault_report(&self.sim, &self.key)
    }

    /// What reads this scope's report from another thread (a test's trigger).
    #[allow(dead_code)] // the chaos suite's
    pub fn reader(&self) -> impl Fn() -> Value + Send + 'static {
        let (sim, key) = (self.sim.clone(), self.key.clone());
        move || fault_report(&sim, &key)
    }

    pub fn clear(&self) {
        let _ = sim_agent()
            .delete(&format!("{}/_sim/faults?scope={}", self.sim, self.key))
            .call();
    }

    /// Environment for a labship run whose calls are in this scope (the chaos tests').
    #[allow(dead_code)]
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("AWS_ENDPOINT_URL", self.sim.clone()),
            ("AWS_ACCESS_KEY_ID", self.key.clone()),
        ]
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        self.clear();
    }
}
