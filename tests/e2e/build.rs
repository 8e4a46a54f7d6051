//! `labship build` on the real engine, checked with the docker CLI.

use crate::support::*;

#[test]
fn builds_the_default_workload_from_the_offline_base() {
    let p = Project::default_workload("build");
    let out = p.labship(&["build", "--output", "json"]);
    let report = json(&out);
    let tag = report["content_tag"].as_str().expect("content_tag");
    let image = format!("{}:{tag}", p.repository());
    assert_eq!(report["image"], image);
    assert_eq!(report["platform"], "linux/amd64");
    assert!(
        report["context_files"].as_u64().unwrap_or(0) >= 3,
        "{report}"
    );
    // Build output went to stderr, step by step; stdout held only JSON (checked by json()).
    assert!(stderr(&out).contains("Step 1/"), "{}", stderr(&out));

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

#[test]
fn same_inputs_give_the_same_tag_and_any_change_a_new_one() {
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
    let first = tag(&p.labship(&["build", "-o", "json", "-q"]));
    let again = tag(&p.labship(&["build", "-o", "json", "-q"]));
    assert_eq!(first, again);
    p.write("docker/data.txt", "two");
    let changed = tag(&p.labship(&["build", "-o", "json", "-q"]));
    assert_ne!(first, changed);
    let with_arg = tag(&p.labship(&["build", "-o", "json", "-q", "--build-arg", "EXTRA=1"]));
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
fn files_in_image(p: &Project) -> Vec<String> {
    let report = json(&p.labship(&["build", "-o", "json", "-q"]));
    let image = report["image"].as_str().expect("image").to_string();
    let listing = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "find",
        &image,
        "/ctx",
        "-type",
        "f",
    ]);
    let _ = docker(&["rmi", "-f", &image, &format!("{}:latest", p.repository())]);
    let mut files: Vec<String> = listing
        .lines()
        .map(|l| l.trim_start_matches("/ctx/").to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn dockerignore_is_honoured_like_docker_does() {
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
        files_in_image(&p),
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

#[test]
fn dockerfile_and_dockerignore_are_sent_even_when_ignored() {
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
    // The build works (the engine got its Dockerfile) and COPY sees only what is not ignored.
    assert_eq!(files_in_image(&p), ["data/a.csv"]);
}

#[test]
fn multi_stage_target_and_build_args() {
    let p = Project::with_files(
        "stages",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS base\nARG GREETING=hello\nRUN echo \"$GREETING\" > /greeting\nFROM base AS dev\nRUN echo dev > /stage\nFROM base AS prod\nRUN echo prod > /stage\n",
        )],
    );
    let report = json(&p.labship(&[
        "build",
        "-o",
        "json",
        "-q",
        "--target",
        "dev",
        "--build-arg",
        "GREETING=bonjour",
    ]));
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

#[test]
fn a_failing_step_is_shown_with_its_last_lines() {
    let p = Project::with_files(
        "fail",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo preparing-things && echo the-last-words >&2 && exit 3\n")],
    );
    let out = p.labship(&["build", "-o", "json"]);
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::build::step_failed");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("build failed at Step "), "{message}");
    assert!(message.contains(": RUN echo preparing-things"), "{message}");
    assert!(message.contains("returned a non-zero code: 3"), "{message}");
    let help = err["help"].as_str().unwrap_or_default();
    assert!(
        help.contains("the-last-words") && help.contains("preparing-things"),
        "{help}"
    );
    assert!(
        !help.contains('\u{1b}'),
        "no colour codes in the hint: {help:?}"
    );
    let out = p.labship(&["build"]);
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

#[test]
fn a_platform_the_engine_cannot_build_is_a_clear_error() {
    let p = Project::with_files(
        "arch",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n",
        )],
    );
    // t4g is Graviton: the default platform follows the instance type to linux/arm64, which
    // this amd64 engine (no emulation, no registry) cannot build from the amd64 base.
    let out = p.labship(&["build", "-o", "json", "--instance-type", "t4g.medium"]);
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
