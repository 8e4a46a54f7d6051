//! `labship build` on the real engine, checked with the docker CLI. Every test runs once per
//! builder (`--builder classic` and `--builder buildkit`); `auto` picks BuildKit on an engine
//! that has it (the last tests), which fetches the context file by file.

use crate::support::*;

/// The engine's two builders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum B {
    Classic,
    Buildkit,
}

impl B {
    fn flag(self) -> &'static str {
        match self {
            B::Classic => "classic",
            B::Buildkit => "buildkit",
        }
    }
}

/// `labship build ARGS --builder B`.
fn build(p: &Project, b: B, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    all.extend(["--builder", b.flag()]);
    p.labship(&all)
}

/// One test per builder from `fn $name(b: B)`.
macro_rules! both {
    ($name:ident, $classic:ident, $buildkit:ident) => {
        #[test]
        fn $classic() {
            $name(B::Classic);
        }
        #[test]
        fn $buildkit() {
            $name(B::Buildkit);
        }
    };
}

both!(
    builds_the_default_workload_from_the_offline_base,
    builds_the_default_workload_classic,
    builds_the_default_workload_buildkit
);
fn builds_the_default_workload_from_the_offline_base(b: B) {
    let p = Project::default_workload("build");
    let out = build(&p, b, &["--output", "json"]);
    let report = json(&out);
    assert_eq!(report["builder"], b.flag(), "{report}");
    let tag = report["content_tag"].as_str().expect("content_tag");
    let image = format!("{}:{tag}", p.repository());
    assert_eq!(report["image"], image);
    assert_eq!(report["platform"], "linux/amd64");
    assert!(
        report["context_files"].as_u64().unwrap_or(0) >= 3,
        "{report}"
    );
    // Build output went to stderr, step by step; stdout held only JSON (checked by json()).
    let steps = match b {
        B::Classic => "Step 1/",
        B::Buildkit => "[internal] load build definition from Dockerfile",
    };
    assert!(stderr(&out).contains(steps), "{}", stderr(&out));
    // A new context folder: everything the image copies is sent (the Dockerfile and an
    // ignored .dockerignore are not part of BuildKit's context).
    assert!(report["sent_files"].as_u64().unwrap_or(0) >= 3, "{report}");

    // The engine has both tags, with the labels and the platform asked for.
    assert!(image_exists(&image));
    assert!(image_exists(&format!("{}:latest", p.repository())));
    let labels = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &image,
    ]);
    let labels: serde_json::Value = serde_json::from_str(&labels).expect("labels JSON");
    assert_eq!(labels["org.opencontainers.image.title"], p.name.as_str());
    assert_eq!(labels["dev.labship.deployment"], p.name.as_str());
    let arch = docker_ok(&["image", "inspect", "--format", "{{.Architecture}}", &image]);
    assert_eq!(arch.trim(), "amd64");

    // It is a Jupyter image with the starter material in the workspace, run as a non-root user.
    let listing = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "ls",
        &image,
        "/home/jovyan/work",
    ]);
    assert!(listing.contains("mtcars.csv"), "{listing}");
    assert!(listing.contains("parallel-processing.ipynb"), "{listing}");
    let version = docker_ok(&["run", "--rm", &image, "jupyter", "lab", "--version"]);
    assert!(version.trim().starts_with('4'), "{version}");
    let user = docker_ok(&["run", "--rm", "--entrypoint", "id", &image, "-u"]);
    assert_eq!(user.trim(), "1000");

    let _ = docker(&["rmi", "-f", &image, &format!("{}:latest", p.repository())]);
}

both!(
    same_inputs_give_the_same_tag_and_any_change_a_new_one,
    same_inputs_same_tag_classic,
    same_inputs_same_tag_buildkit
);
fn same_inputs_give_the_same_tag_and_any_change_a_new_one(b: B) {
    let p = Project::with_files(
        "tags",
        &[
            (
                "Dockerfile",
                "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY data.txt /data.txt\n",
            ),
            ("data.txt", "one"),
        ],
    );
    let tag =
        |out: &std::process::Output| json(out)["content_tag"].as_str().expect("tag").to_string();
    let first = tag(&build(&p, b, &["-o", "json", "-q"]));
    let again = tag(&build(&p, b, &["-o", "json", "-q"]));
    assert_eq!(first, again);
    p.write("docker/data.txt", "two");
    let changed = tag(&build(&p, b, &["-o", "json", "-q"]));
    assert_ne!(first, changed);
    let with_arg = tag(&build(
        &p,
        b,
        &["-o", "json", "-q", "--build-arg", "EXTRA=1"],
    ));
    assert_ne!(changed, with_arg);
    let content = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &format!("{}:{changed}", p.repository()),
        "/data.txt",
    ]);
    assert_eq!(content, "two");
    let _ = docker(&[
        "rmi",
        "-f",
        &format!("{}:{first}", p.repository()),
        &format!("{}:{changed}", p.repository()),
        &format!("{}:{with_arg}", p.repository()),
        &format!("{}:latest", p.repository()),
    ]);
}

/// What the engine received, listed from inside the image.
fn files_in_image(p: &Project, b: B) -> Vec<String> {
    let report = json(&build(p, b, &["-o", "json", "-q"]));
    let image = report["image"].as_str().expect("image").to_string();
    let files = ctx_files(&image);
    let _ = docker(&["rmi", "-f", &image, &format!("{}:latest", p.repository())]);
    files
}

/// The files under /ctx in an image, relative and sorted.
fn ctx_files(image: &str) -> Vec<String> {
    let listing = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "find",
        image,
        "/ctx",
        "-type",
        "f",
    ]);
    let mut files: Vec<String> = listing
        .lines()
        .map(|l| l.trim_start_matches("/ctx/").to_string())
        .collect();
    files.sort();
    files
}

both!(
    dockerignore_is_honoured_like_docker_does,
    dockerignore_classic,
    dockerignore_buildkit
);
fn dockerignore_is_honoured_like_docker_does(b: B) {
    let p = Project::with_files(
        "ignore",
        &[
            ("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /ctx/\n"),
            (
                ".dockerignore",
                "# comments and blank lines are skipped\n\n*.log\n!keep.log\nsecret/\n**/*.tmp\n/top.txt\nnode_modules\n",
            ),
            ("a.txt", "a"),
            ("debug.log", "x"),
            ("keep.log", "k"),
            ("secret/key.pem", "k"),
            ("deep/er/x.tmp", "t"),
            ("deep/er/y.txt", "y"),
            ("top.txt", "t"),
            ("sub/top.txt", "kept: only the root one is ignored"),
            ("node_modules/pkg/index.js", "x"),
        ],
    );
    assert_eq!(
        files_in_image(&p, b),
        [
            ".dockerignore",
            "Dockerfile",
            "a.txt",
            "deep/er/y.txt",
            "keep.log",
            "sub/top.txt"
        ]
    );
}

both!(
    dockerfile_and_dockerignore_are_sent_even_when_ignored,
    ignored_dockerfile_classic,
    ignored_dockerfile_buildkit
);
fn dockerfile_and_dockerignore_are_sent_even_when_ignored(b: B) {
    let p = Project::with_files(
        "ignore-df",
        &[
            (
                "Dockerfile",
                "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /ctx/\n",
            ),
            (".dockerignore", "Dockerfile\n.dockerignore\n*\n!data/\n"),
            ("data/a.csv", "1,2"),
            ("other.txt", "x"),
        ],
    );
    // The build works (the engine got its Dockerfile) and COPY sees only what is not ignored,
    // with either builder (BuildKit gets the Dockerfile through a folder of its own).
    assert_eq!(files_in_image(&p, b), ["data/a.csv"]);
}

both!(
    multi_stage_target_and_build_args,
    multi_stage_classic,
    multi_stage_buildkit
);
fn multi_stage_target_and_build_args(b: B) {
    let p = Project::with_files(
        "stages",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS base\nARG GREETING=hello\nRUN echo \"$GREETING\" > /greeting\nFROM base AS dev\nRUN echo dev > /stage\nFROM base AS prod\nRUN echo prod > /stage\n",
        )],
    );
    let report = json(&build(
        &p,
        b,
        &[
            "-o",
            "json",
            "-q",
            "--target",
            "dev",
            "--build-arg",
            "GREETING=bonjour",
        ],
    ));
    let image = report["image"].as_str().expect("image");
    assert_eq!(
        docker_ok(&["run", "--rm", "--entrypoint", "cat", image, "/stage"]).trim(),
        "dev"
    );
    assert_eq!(
        docker_ok(&["run", "--rm", "--entrypoint", "cat", image, "/greeting"]).trim(),
        "bonjour"
    );
    let _ = docker(&["rmi", "-f", image, &format!("{}:latest", p.repository())]);
}

both!(
    a_failing_step_is_shown_with_its_last_lines,
    a_failing_step_classic,
    a_failing_step_buildkit
);
fn a_failing_step_is_shown_with_its_last_lines(b: B) {
    let p = Project::with_files(
        "fail",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo preparing-things && echo the-last-words >&2 && exit 3\n")],
    );
    let out = build(&p, b, &["-o", "json"]);
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::build::step_failed");
    let message = err["message"].as_str().unwrap_or_default();
    let (step, code) = match b {
        B::Classic => ("build failed at Step ", "returned a non-zero code: 3"),
        B::Buildkit => ("build failed at [2/2] RUN ", "exit code: 3"),
    };
    assert!(message.starts_with(step), "{message}");
    assert!(message.contains("RUN echo preparing-things"), "{message}");
    assert!(message.contains(code), "{message}");
    let help = err["help"].as_str().unwrap_or_default();
    assert!(
        help.contains("the-last-words") && help.contains("preparing-things"),
        "{help}"
    );
    assert!(
        !help.contains('\u{1b}'),
        "no colour codes in the hint: {help:?}"
    );
    let out = build(&p, b, &[]);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a failed text-mode build"
    );
    assert!(
        !image_exists(&format!("{}:latest", p.repository())),
        "a failed build tags nothing"
    );
}

both!(
    a_platform_the_engine_cannot_build_is_a_clear_error,
    a_foreign_platform_classic,
    a_foreign_platform_buildkit
);
fn a_platform_the_engine_cannot_build_is_a_clear_error(b: B) {
    let p = Project::with_files(
        "arch",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n",
        )],
    );
    // t4g is Graviton: the default platform follows the instance type to linux/arm64, which
    // this amd64 engine (no emulation, no registry) cannot build from the amd64 base.
    let out = build(&p, b, &["-o", "json", "--instance-type", "t4g.medium"]);
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::build::platform", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("linux/arm64"),
        "{err}"
    );
    assert!(!image_exists(&format!("{}:latest", p.repository())));
}

// ---- what only BuildKit builds -------------------------------------------------------------

/// A cache mount keeps its content from one build to the next: the step counts the builds that
/// saw the cache (a pip cache would keep the wheels it downloaded the same way).
#[test]
fn auto_builds_a_cache_mount_with_buildkit_and_the_cache_persists() {
    let id = unique("cache");
    let dockerfile = format!(
        "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY requirements.txt /tmp/requirements.txt\nRUN --mount=type=cache,id={id},target=/cache sh -c 'n=$(cat /cache/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /cache/n; echo cache-builds=$n'\n"
    );
    let p = Project::with_files(
        "cache",
        &[
            ("Dockerfile", dockerfile.as_str()),
            ("requirements.txt", "six==1.16.0\n"),
        ],
    );
    let first = p.labship(&["build", "-o", "json"]);
    let report = json(&first);
    assert_eq!(report["builder"], "buildkit", "{report}");
    let err = stderr(&first);
    assert!(err.contains("cache-builds=1"), "{err}");
    // A changed requirements file runs the step again, and it finds the cache it left.
    p.write("docker/requirements.txt", "six==1.16.0\nidna==3.7\n");
    let second = p.labship(&["build", "-o", "json"]);
    let err = stderr(&second);
    assert!(err.contains("cache-builds=2"), "{err}");
    // The classic builder cannot, and says what to do.
    let classic = json_error(&p.labship(&["build", "-o", "json", "--builder", "classic"]));
    assert_eq!(classic["code"], "labship::build::step_failed", "{classic}");
    assert!(
        classic["help"]
            .as_str()
            .unwrap_or_default()
            .contains("needs BuildKit"),
        "{classic}"
    );
    let image = json(&second)["image"].as_str().expect("image").to_string();
    let _ = docker(&[
        "rmi",
        "-f",
        report["image"].as_str().unwrap_or_default(),
        &image,
        &format!("{}:latest", p.repository()),
    ]);
}

/// BuildKit fetches the context file by file and keeps its copy between builds: after one
/// notebook changed, only that notebook is sent, not the data beside it; a deleted file is gone
/// from the image; an unchanged context sends nothing.
#[test]
fn buildkit_sends_only_the_files_that_changed() {
    let data = "0123456789abcdef".repeat(256 * 1024); // 4 MiB
    let p = Project::with_files(
        "incremental",
        &[
            (
                "Dockerfile",
                "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /ctx/\n",
            ),
            (".dockerignore", "scratch/\n"),
            ("data/big.csv", data.as_str()),
            ("notebooks/a.ipynb", "{}"),
            ("notebooks/b.ipynb", "{\"v\": 1}"),
            ("scratch/tmp.txt", "ignored"),
        ],
    );
    let built = |p: &Project| -> serde_json::Value { json(&p.labship(&["build", "-o", "json"])) };
    let cat =
        |image: &str, file: &str| docker_ok(&["run", "--rm", "--entrypoint", "cat", image, file]);
    let first = built(&p);
    assert_eq!(first["builder"], "buildkit", "{first}");
    assert!(
        first["sent_bytes"].as_u64().unwrap_or(0) >= data.len() as u64,
        "the first build sends the data: {first}"
    );

    let again = built(&p);
    assert_eq!(
        again["sent_files"], 0,
        "an unchanged context sends nothing: {again}"
    );
    assert_eq!(again["content_tag"], first["content_tag"]);

    let changed = "{\"v\": 2, \"cells\": []}";
    p.write("docker/notebooks/b.ipynb", changed);
    let third = built(&p);
    assert_eq!(third["sent_files"], 1, "only the notebook: {third}");
    assert_eq!(third["sent_bytes"], changed.len() as u64, "{third}");
    assert_ne!(third["content_tag"], first["content_tag"]);
    let image = third["image"].as_str().expect("image").to_string();
    assert_eq!(cat(&image, "/ctx/notebooks/b.ipynb"), changed);
    assert_eq!(cat(&image, "/ctx/data/big.csv").len(), data.len());

    std::fs::remove_file(p.path().join("docker/notebooks/a.ipynb")).expect("remove");
    let fourth = built(&p);
    assert_eq!(fourth["sent_files"], 0, "{fourth}");
    let image4 = fourth["image"].as_str().expect("image").to_string();
    let files = ctx_files(&image4);
    assert_eq!(
        files,
        [
            ".dockerignore",
            "Dockerfile",
            "data/big.csv",
            "notebooks/b.ipynb"
        ]
    );
    for report in [&first, &third, &fourth] {
        let _ = docker(&["rmi", "-f", report["image"].as_str().unwrap_or_default()]);
    }
    let _ = docker(&["rmi", "-f", &format!("{}:latest", p.repository())]);
}

/// A pip cache mount, proven by a package index on loopback that reports each download (the
/// build reaches it with `--network host`; pip caches downloads only from HTTPS or trusted
/// hosts): a rebuild after a requirement was added downloads only the new package, because
/// the first one's wheel is in the cache the mount kept.
#[test]
fn a_pip_cache_mount_downloads_each_package_once() {
    let index = PackageIndex::start(&["alpha==1.0", "beta==1.0"]);
    let id = unique("pip");
    let dockerfile = format!(
        "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY requirements.txt /tmp/requirements.txt\nRUN --mount=type=cache,id={id},target=/pipcache PIP_CACHE_DIR=/pipcache pip install --disable-pip-version-check --no-input --trusted-host 127.0.0.1 --index-url http://127.0.0.1:{}/simple --target /opt/pkgs -r /tmp/requirements.txt\n",
        index.port
    );
    let p = Project::with_files(
        "pip",
        &[
            ("Dockerfile", dockerfile.as_str()),
            ("requirements.txt", "alpha==1.0\n"),
        ],
    );
    let first = json(&p.labship(&["build", "-o", "json", "--network", "host"]));
    assert_eq!(first["builder"], "buildkit", "{first}");
    assert_eq!(index.take_downloads(), ["alpha-1.0-py3-none-any.whl"]);

    p.write("docker/requirements.txt", "alpha==1.0\nbeta==1.0\n");
    let second = json(&p.labship(&["build", "-o", "json", "--network", "host"]));
    assert_eq!(
        index.take_downloads(),
        ["beta-1.0-py3-none-any.whl"],
        "alpha came from the cache mount"
    );
    let image = second["image"].as_str().expect("image").to_string();
    let versions = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        &image,
        "-c",
        "import sys; sys.path.insert(0, '/opt/pkgs'); import alpha, beta; print(alpha.VERSION, beta.VERSION)",
    ]);
    assert_eq!(versions.trim(), "1.0 1.0");
    // A build network that does not exist is refused before anything is built.
    let bad = json_error(&p.labship(&["build", "-o", "json", "--network", "bridge0"]));
    assert_eq!(bad["code"], "labship::config::invalid", "{bad}");
    for report in [&first, &second] {
        let _ = docker(&["rmi", "-f", report["image"].as_str().unwrap_or_default()]);
    }
    let _ = docker(&["rmi", "-f", &format!("{}:latest", p.repository())]);
}

/// On a terminal, a BuildKit build is drawn live as `docker build` draws it (a header with the
/// time and the steps done, a spinner per running step, each finished step printed once); the
/// terminal is a real pseudo-terminal (`script`), as a user's would be.
#[test]
fn on_a_terminal_buildkit_steps_are_drawn_live() {
    // A step of its own, so that BuildKit runs it (an identical step would be CACHED).
    let dockerfile = format!(
        "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN echo {} && for i in 1 2 3; do echo working-$i; sleep 0.5; done\n",
        unique("live")
    );
    let p = Project::with_files("live", &[("Dockerfile", dockerfile.as_str())]);
    let command = p.command(&["build", "--name", &p.name]);
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let typescript = p.path().join("typescript");
    let mut script = std::process::Command::new("script");
    script
        .args(["-qfec", &line])
        .arg(&typescript)
        .current_dir(p.path())
        .stdin(std::process::Stdio::null());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let status = script.status().expect("run script");
    let seen = std::fs::read_to_string(&typescript).expect("typescript");
    // What the terminal showed last (the whole typescript is long).
    let end: String = {
        let chars: Vec<char> = seen.chars().collect();
        chars[chars.len().saturating_sub(2000)..].iter().collect()
    };
    assert!(status.success(), "{end}");
    assert!(seen.contains("[+] Building"), "{end}");
    assert!(seen.contains("\u{1b}["), "cursor movement: {end}");
    assert!(seen.contains(" => #"), "{end}");
    assert!(
        seen.contains("for i in 1 2 3") && seen.contains("DONE"),
        "{end}"
    );
    // The step's output was shown while it ran, under its name.
    assert!(seen.contains("> working-"), "{end}");
    // The report still follows, once the view is gone.
    assert!(seen.contains("builder   buildkit"), "{end}");
    let _ = docker(&["rmi", "-f", &format!("{}:latest", p.repository())]);
    remove_images(&p.repository());
}

/// `RUN --mount=type=ssh` talks to the user's own ssh-agent through the session: the step
/// lists the agent's keys with the agent protocol (REQUEST_IDENTITIES) and sees the test key,
/// which stays in the agent. A key file is refused as an agent, and so is the classic builder.
#[test]
fn an_ssh_mount_reaches_the_users_agent() {
    let agent_py = "import os, socket, struct\ns = socket.socket(socket.AF_UNIX)\ns.connect(os.environ['SSH_AUTH_SOCK'])\ns.sendall(struct.pack('>IB', 1, 11))\ndef read(n):\n    d = b''\n    while len(d) < n:\n        d += s.recv(n - len(d))\n    return d\nbody = read(struct.unpack('>I', read(4))[0])\nassert body[0] == 12, body[0]\ncount = struct.unpack('>I', body[1:5])[0]\npos, comments = 5, []\nfor _ in range(count):\n    for field in range(2):\n        n = struct.unpack('>I', body[pos:pos + 4])[0]\n        if field == 1:\n            comments.append(body[pos + 4:pos + 4 + n].decode())\n        pos += 4 + n\nprint('agent-keys', count, ' '.join(comments))\n";
    // A step of its own, so that BuildKit runs it (an identical step would be CACHED).
    let dockerfile = format!(
        "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY agent.py /agent.py\nRUN --mount=type=ssh echo {} && python3 /agent.py\n",
        unique("ssh")
    );
    let p = Project::with_files(
        "ssh",
        &[("Dockerfile", dockerfile.as_str()), ("agent.py", agent_py)],
    );
    let dir = p.path();
    let socket = dir.join("agent.sock");
    let key = dir.join("id_test");
    let comment = unique("labship-key");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start ssh-agent");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    for _ in 0..50 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("ssh-add");
    assert!(added.success());

    let out = p
        .command(&["build", "-o", "json", "--ssh", "default"])
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .expect("run labship");
    let report = json(&out);
    assert_eq!(report["builder"], "buildkit", "{report}");
    let err = stderr(&out);
    assert!(err.contains(&format!("agent-keys 1 {comment}")), "{err}");
    let private = std::fs::read_to_string(&key).expect("key");
    let body = private.lines().nth(1).unwrap_or_default();
    assert!(!err.contains(body), "the private key stays in the agent");

    // An explicit id=socket works the same; a key file is not an agent; classic has no mounts.
    let by_path = format!("default={}", socket.display());
    let again = json(&p.labship(&["build", "-o", "json", "--ssh", &by_path]));
    assert_eq!(again["builder"], "buildkit", "{again}");
    let not_agent = json_error(&p.labship(&[
        "build",
        "-o",
        "json",
        "--ssh",
        &format!("default={}", key.display()),
    ]));
    assert_eq!(not_agent["code"], "labship::config::invalid", "{not_agent}");
    assert!(
        not_agent["help"]
            .as_str()
            .unwrap_or_default()
            .contains("ssh-add"),
        "{not_agent}"
    );
    let classic = json_error(&p.labship(&[
        "build",
        "-o",
        "json",
        "--builder",
        "classic",
        "--ssh",
        &by_path,
    ]));
    assert_eq!(classic["code"], "labship::config::invalid", "{classic}");
    let _ = agent.kill();
    let _ = agent.wait();
    for r in [&report, &again] {
        let _ = docker(&["rmi", "-f", r["image"].as_str().unwrap_or_default()]);
    }
    let _ = docker(&["rmi", "-f", &format!("{}:latest", p.repository())]);
}

/// Two stages that do not depend on each other run at the same time with BuildKit: each
/// records when it ran, and the two intervals overlap.
#[test]
fn buildkit_runs_independent_stages_in_parallel() {
    let stage = |name: &str| {
        format!(
            "FROM ${{BASE_IMAGE}} AS {name}\nRUN date +%s.%N > /start && sleep 3 && date +%s.%N > /end\n"
        )
    };
    let dockerfile = format!(
        "ARG BASE_IMAGE\n{}{}FROM ${{BASE_IMAGE}}\nCOPY --from=a /start /a.start\nCOPY --from=a /end /a.end\nCOPY --from=b /start /b.start\nCOPY --from=b /end /b.end\n",
        stage("a"),
        stage("b")
    );
    let p = Project::with_files("parallel", &[("Dockerfile", dockerfile.as_str())]);
    let report = json(&build(&p, B::Buildkit, &["-o", "json", "-q"]));
    let image = report["image"].as_str().expect("image");
    let read = |f: &str| -> f64 {
        docker_ok(&["run", "--rm", "--entrypoint", "cat", image, f])
            .trim()
            .parse()
            .expect("a time")
    };
    let (a0, a1, b0, b1) = (
        read("/a.start"),
        read("/a.end"),
        read("/b.start"),
        read("/b.end"),
    );
    assert!(
        a0 < b1 && b0 < a1,
        "the stages ran one after the other: a {a0}..{a1}, b {b0}..{b1}"
    );
    let _ = docker(&["rmi", "-f", image, &format!("{}:latest", p.repository())]);
}

/// An engine that turns BuildKit away (a proxy in front of this one answers `/build?version=2`
/// as an engine without BuildKit does): `auto` says so in one line and builds with the classic
/// builder, which then names what the Dockerfile needs.
#[test]
fn an_engine_that_refuses_buildkit_gets_the_classic_builder_with_a_note() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || refuse_buildkit(client));
        }
    });
    fn refuse_buildkit(mut client: std::net::TcpStream) {
        let mut head = [0u8; 512];
        let Ok(n) = client.peek(&mut head) else {
            return;
        };
        let first = String::from_utf8_lossy(&head[..n]);
        if first.starts_with("POST ") && first.contains("/build?version=2") {
            let body = r#"{"message":"buildkit not supported by daemon"}"#;
            let _ = write!(
                client,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 65536];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
        let Ok(engine) = std::os::unix::net::UnixStream::connect("/var/run/docker.sock") else {
            return;
        };
        let (mut c2, mut e2) = (
            client.try_clone().expect("clone"),
            engine.try_clone().expect("clone"),
        );
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut e2);
            let _ = e2.shutdown(std::net::Shutdown::Write);
        });
        let (mut engine, mut client) = (engine, client);
        let _ = std::io::copy(&mut engine, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
        let _ = up.join();
    }

    let p = Project::with_files(
        "refused",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN --mount=type=cache,target=/cache true\n",
        )],
    );
    let out = p
        .command(&["build", "-o", "json"])
        .env("DOCKER_HOST", format!("tcp://{addr}"))
        .output()
        .expect("run labship");
    let err = stderr(&out);
    assert!(
        err.contains("The engine refused BuildKit (buildkit not supported by daemon): building with the classic builder"),
        "{err}"
    );
    let failure = json_error(&out);
    assert!(
        failure["help"]
            .as_str()
            .unwrap_or_default()
            .contains("needs BuildKit"),
        "{failure}"
    );
}

/// A build secret reaches `RUN --mount=type=secret` and nothing else: not the image's layers
/// or history, not labship's output at any verbosity, not the content tag.
#[test]
fn a_build_secret_reaches_the_step_and_nothing_else() {
    let value = format!("s3cr3t-{}", unique("value"));
    // A step of its own: BuildKit's cache key leaves secrets out, so an identical step from an
    // earlier run would be CACHED with that run's secret length.
    let dockerfile = format!(
        "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN --mount=type=secret,id=token,required=true sh -c 'echo {} && test -s /run/secrets/token && wc -c < /run/secrets/token > /token-length && echo secret-was-readable'\n",
        unique("step")
    );
    let p = Project::with_files("secret", &[("Dockerfile", dockerfile.as_str())]);
    let secret_file = p.path().join("token.txt");
    std::fs::write(&secret_file, &value).expect("write the secret");
    let from_file = format!("id=token,src={}", secret_file.display());
    let out = p.labship(&["build", "-o", "json", "-vvv", "--secret", &from_file]);
    let report = json(&out);
    assert_eq!(report["builder"], "buildkit", "{report}");
    let err = stderr(&out);
    assert!(err.contains("secret-was-readable"), "{err}");
    let image = report["image"].as_str().expect("image").to_string();
    assert_eq!(
        docker_ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            &image,
            "/token-length"
        ])
        .trim(),
        value.len().to_string(),
        "the step read the whole secret"
    );
    // Nowhere it must not be: labship's output (-vvv), the history, every byte of the image.
    let history = docker_ok(&["history", "--no-trunc", &image]);
    let saved = std::process::Command::new("docker")
        .args(["save", &image])
        .output()
        .expect("docker save");
    assert!(saved.status.success());
    for (place, text) in [
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("stderr at -vvv", err.clone()),
        ("docker history", history),
    ] {
        assert!(!text.contains(&value), "the secret is in {place}");
    }
    assert!(
        !saved
            .stdout
            .windows(value.len())
            .any(|w| w == value.as_bytes()),
        "the secret is in the image's layers or config"
    );
    // Another value of the secret is the same build: the tag does not depend on it.
    std::fs::write(&secret_file, "another-value").expect("write");
    let again = json(&p.labship(&["build", "-o", "json", "-q", "--secret", &from_file]));
    assert_eq!(again["content_tag"], report["content_tag"]);
    // From the environment too; and a missing one is named.
    let by_env = p
        .command(&[
            "build",
            "-o",
            "json",
            "-q",
            "--secret",
            "id=token,env=LABSHIP_TEST_TOKEN",
        ])
        .env("LABSHIP_TEST_TOKEN", &value)
        .output()
        .expect("run labship");
    assert!(by_env.status.success(), "{}", stderr(&by_env));
    let missing = json_error(&p.labship(&[
        "build",
        "-o",
        "json",
        "--secret",
        "id=token,env=LABSHIP_TEST_NO_SUCH_VAR",
    ]));
    assert_eq!(missing["code"], "labship::config::invalid", "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or_default()
            .contains("LABSHIP_TEST_NO_SUCH_VAR"),
        "{missing}"
    );
    // A secret file inside the context would travel with it: refused, naming .dockerignore.
    p.write("docker/token.txt", &value);
    let inside = json_error(&p.labship(&[
        "build",
        "-o",
        "json",
        "--secret",
        &format!(
            "id=token,src={}",
            p.path().join("docker/token.txt").display()
        ),
    ]));
    assert_eq!(inside["code"], "labship::config::invalid", "{inside}");
    assert!(
        inside["help"]
            .as_str()
            .unwrap_or_default()
            .contains(".dockerignore"),
        "{inside}"
    );
    std::fs::remove_file(p.path().join("docker/token.txt")).expect("remove");
    // The classic builder has no secret mounts: refused before anything is built.
    let classic = json_error(&p.labship(&[
        "build",
        "-o",
        "json",
        "--builder",
        "classic",
        "--secret",
        &from_file,
    ]));
    assert_eq!(classic["code"], "labship::config::invalid", "{classic}");
    let _ = docker(&["rmi", "-f", &image, &format!("{}:latest", p.repository())]);
}
