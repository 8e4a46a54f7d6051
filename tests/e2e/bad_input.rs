//! Bad input: a one-line cause and a hint, a non-zero exit, no panic, nothing half-created.

use std::process::Output;

use crate::support::*;

/// The error's code, after checking the one-line message and the hint are there.
fn failure(out: &Output) -> (String, String) {
    let err = json_error(out);
    let message = err["message"].as_str().unwrap_or_default().to_string();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "one-line message: {err}"
    );
    assert!(
        err["help"].as_str().is_some_and(|h| !h.is_empty()),
        "a hint: {err}"
    );
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
    assert_eq!(out.status.code(), Some(1));
    (
        err["code"].as_str().unwrap_or_default().to_string(),
        message,
    )
}

#[test]
fn no_build_context() {
    let p = Project::empty("noctx");
    let (code, message) = failure(&p.labship(&["build", "-o", "json"]));
    assert_eq!(code, "labship::build::no_context");
    assert!(message.contains("docker"), "{message}");
}

#[test]
fn no_dockerfile() {
    let p = Project::with_files("nodf", &[("data.csv", "1")]);
    let (code, message) = failure(&p.labship(&["build", "-o", "json"]));
    assert_eq!(code, "labship::build::no_dockerfile");
    assert!(message.contains("Dockerfile"), "{message}");
}

#[test]
fn unparsable_config() {
    let p = Project::default_workload("badtoml");
    p.write("labship.toml", "name = \"x\"\n[build\n");
    let (code, _) = failure(&p.labship(&["build", "-o", "json"]));
    assert_eq!(code, "labship::config::parse");
}

#[test]
fn unknown_config_key() {
    let p = Project::default_workload("typo");
    p.write(
        "labship.toml",
        "name = \"x\"\n[push]\nrepo = \"labship/x\"\n",
    );
    let (code, message) = failure(&p.labship(&["build", "-o", "json"]));
    assert_eq!(code, "labship::config::parse");
    assert!(message.contains("unknown field `repo`"), "{message}");
    assert!(message.contains("labship.toml"), "{message}");
    // Text mode shows the offending line.
    let text = stderr(&p.labship(&["build"]));
    assert!(text.contains("repo = \"labship/x\""), "{text}");
}

#[test]
fn engine_unreachable_names_what_was_tried() {
    let p = Project::default_workload("noengine");
    let out = p
        .command(&["build", "-o", "json"])
        .env("DOCKER_HOST", "unix:///tmp/labship-no-such-engine.sock")
        .output()
        .expect("run");
    let (code, message) = failure(&out);
    assert_eq!(code, "labship::engine::unreachable");
    assert!(
        message.contains("/tmp/labship-no-such-engine.sock"),
        "{message}"
    );
}

#[test]
fn no_aws_credentials() {
    let p = Project::default_workload("nocreds");
    let out = p
        .command(&["push", "-o", "json"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run");
    let (code, _) = failure(&out);
    assert_eq!(code, "labship::aws::no_credentials");
}

#[test]
fn no_aws_region() {
    let p = Project::default_workload("noregion");
    let out = p
        .command(&["push", "-o", "json"])
        .env_remove("AWS_REGION")
        .output()
        .expect("run");
    let (code, _) = failure(&out);
    assert_eq!(code, "labship::aws::no_region");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_repository_name_creates_nothing() {
    let p = Project::default_workload("badrepo");
    let ecr = ecr_client(&rig().aws_endpoint).await;
    let count = || async {
        let repos = ecr.describe_repositories().send().await.expect("describe");
        repos.repositories().len()
    };
    let before = count().await;
    let (code, message) =
        failure(&p.labship(&["push", "-o", "json", "--repository", "Labship/My_Lab!"]));
    assert_eq!(code, "labship::config::invalid");
    assert!(message.contains("Labship/My_Lab!"), "{message}");
    // Other tests create repositories concurrently; none may be this one.
    let after = ecr.describe_repositories().send().await.expect("describe");
    assert!(after.repositories().iter().all(|r| !r
        .repository_name()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("my_lab")));
    assert!(after.repositories().len() >= before);
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_login_refused_creates_nothing() {
    // A registry whose password is not the one ECR (moto) hands out.
    let other = Server::registry("AWS", "some-other-password");
    let p = Project::with_files(
        "refused",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")],
    );
    let out = p
        .command(&["push", "-o", "json"])
        .env("LABSHIP_REGISTRY_ENDPOINT", &other.addr)
        .output()
        .expect("run");
    let (code, message) = failure(&out);
    assert_eq!(code, "labship::push::login");
    assert!(message.contains(&other.addr), "{message}");
    let ecr = ecr_client(&rig().aws_endpoint).await;
    let found = ecr
        .describe_repositories()
        .repository_names(p.repository())
        .send()
        .await;
    let missing = found
        .err()
        .is_some_and(|e| e.into_service_error().is_repository_not_found_exception());
    assert!(
        missing,
        "no repository is created when the login is refused"
    );
}

#[test]
fn access_denied_names_the_action_and_the_policy() {
    // Our own moto with IAM checks on after the three calls that set up a limited user.
    let moto = Server::moto_with_iam(3);
    let endpoint = format!("http://{}", moto.addr);
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:DescribeRepositories"],"Resource":"*"}]}"#;
    let (key_id, secret) = limited_user(&endpoint, "student", policy);

    let p = Project::with_files(
        "denied",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")],
    );
    let out = p
        .command(&["push", "-o", "json"])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .output()
        .expect("run");
    let (code, message) = failure(&out);
    assert_eq!(code, "labship::aws::access_denied");
    assert!(message.contains("ecr:CreateRepository"), "{message}");
    let help = json_error(&out)["help"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        help.contains("AmazonEC2ContainerRegistryFullAccess"),
        "{help}"
    );
}

#[test]
fn a_base_image_that_cannot_be_pulled_is_named_with_the_way_out() {
    // `.invalid` never resolves, on any machine.
    let p = Project::default_workload("nobase");
    let out = p.labship(&[
        "build",
        "-o",
        "json",
        "--build-arg",
        "BASE_IMAGE=registry.invalid/labship/none:1",
    ]);
    let (code, message) = failure(&out);
    assert_eq!(code, "labship::build::base_image");
    assert!(
        message.contains("registry.invalid/labship/none:1"),
        "the resolved image, not ${{BASE_IMAGE}}: {message}"
    );
    let help = json_error(&out)["help"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(help.contains("labship base"), "{help}");
}

/// The table of bad input to `up`: each case is refused before anything is created (no image
/// built, no container, no security group), with exit code 2 for what the command line
/// itself rejects and 1 with a cause and a hint for what labship checks.
#[test]
fn bad_input_to_up_is_refused_before_anything_is_made() {
    let p = Project::default_workload("badup");
    let many_cidrs: Vec<String> = (0..61).map(|i| format!("10.9.{i}.0/24")).collect();
    let mut too_many = vec!["up", "--ec2"];
    for c in &many_cidrs {
        too_many.extend(["--allow-cidr", c.as_str()]);
    }
    let long_name = "a".repeat(33);
    let big_log = p.path().join("big.log");
    std::fs::File::create(&big_log)
        .and_then(|f| f.set_len((64 << 20) + 1))
        .expect("a sparse 64 MiB log");
    let big_log = big_log.display().to_string();
    // (arguments, exit code, the error code (exit 1) or a piece of clap's message (exit 2))
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["up", "--wait", "0"], 2, "--wait"),
        (vec!["up", "--wait", "18446744073709551615"], 2, "--wait"),
        (vec!["up", "--wait", "86401"], 2, "--wait"),
        (vec!["up", "--port", "0"], 2, "--port"),
        (vec!["up", "--port", "70000"], 2, "--port"),
        (vec!["up", "--ec2", "--port", "0"], 2, "--port"),
        (
            vec!["up", "--ec2", "--port", "22"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--allow-cidr", "0.0.0.0/0"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--allow-cidr", "::/0"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--allow-cidr", ""],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--allow-cidr", "10.0.0.0/33"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--allow-cidr", "example.com"],
            1,
            "labship::config::invalid",
        ),
        (too_many, 1, "labship::config::invalid"),
        (
            vec!["up", "--ec2", "--region", "eu west 1"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--instance-type", "T3.MEDIUM"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--instance-type", "t3"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["run", "/nonexistent/analysis.ipynb"],
            1,
            "labship::config::invalid",
        ),
        (vec!["run", "labship.toml"], 1, "labship::config::invalid"),
        (
            vec!["run", "x.ipynb", "-p", "1n=2"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["run", "x.ipynb", "--timeout", "off"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["run", "x.ipynb", "--matrix", "n=1"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["run", "x.ipynb", "-p", "n=1", "--matrix", "n=2,3"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["run", "x.ipynb", "--ec2"],
            1,
            "labship::config::invalid",
        ),
        (
            vec![
                "run",
                "x.ipynb",
                "--ec2",
                "--output-uri",
                "s3://labship-b/p",
                "--memory",
                "512",
            ],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--fallback-type", "t3a.medium"],
            1,
            "labship::config::invalid",
        ),
        (
            vec![
                "up",
                "--local",
                "--seats",
                "2",
                "--fallback-type",
                "t3a.medium",
            ],
            1,
            "labship::unsupported",
        ),
        (
            vec![
                "up",
                "--ec2",
                "--seats",
                "2",
                "--fallback-type",
                "t4g.medium",
            ],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--ami", "ami-xyz"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["up", "--ec2", "--platform", "linux/s390x"],
            1,
            "labship::config::invalid",
        ),
        (vec!["up", "my lab"], 1, "labship::config::invalid"),
        (vec!["up", &long_name], 1, "labship::config::invalid"),
        (vec!["up", "Lab"], 1, "labship::config::invalid"),
        (vec!["up", "--build-arg", "=x"], 2, "--build-arg"),
        (vec!["up", "--build-arg", "NOEQUALS"], 2, "--build-arg"),
        (
            vec!["push", "--repository", "UPPER/case"],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["push", "--repository", "a//b"],
            1,
            "labship::config::invalid",
        ),
        (vec!["up", "--local", "--public"], 1, "labship::unsupported"),
        (vec!["up", "--ec2", "--attach"], 1, "labship::unsupported"),
        (vec!["up", "--bind", "localhost"], 2, "--bind"),
        (
            vec!["token", "--from-log", &big_log],
            1,
            "labship::config::invalid",
        ),
        (
            vec!["token", "--from-log", "/nonexistent/jupyter.log"],
            1,
            "labship::read",
        ),
        (vec!["status", "--local", "--ec2"], 2, "--ec2"),
        (vec!["down", "--delete-data"], 1, "labship::confirm"),
        // Checked with a describe call before anything is made.
        (
            vec![
                "up",
                "--ec2",
                "--allow-cidr",
                "127.0.0.1/32",
                "--subnet",
                "subnet-0123456789abcdef0",
            ],
            1,
            "labship::ec2::network",
        ),
        (
            vec!["up", "--ec2", "--subnet", "vpc-123"],
            1,
            "labship::config::invalid",
        ),
    ];
    for (args, exit, expected) in &cases {
        let mut all = args.clone();
        all.extend(["-o", "json"]);
        let out = p.labship(&all);
        assert_eq!(out.status.code(), Some(*exit), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
        if *exit == 2 {
            assert!(
                stderr(&out).contains(expected),
                "{args:?}: {}",
                stderr(&out)
            );
        } else {
            let (code, _) = failure(&out);
            assert_eq!(code, *expected, "{args:?}");
        }
    }
    assert!(cases.len() >= 34, "{} cases", cases.len());
    // Nothing was built or started for any of them.
    nothing_made(&p);
}

/// `-o csv` of a command whose result is not a class's roster is refused before the command
/// acts: `up` builds and starts nothing, `down` and `stop` find nothing to touch.
#[test]
fn csv_output_of_a_command_without_a_roster_is_refused_before_it_acts() {
    let p = Project::default_workload("csvup");
    for args in [
        vec!["up", "-o", "csv"],
        vec!["up", "--ec2", "-o", "csv"],
        vec!["down", "-y", "-o", "csv"],
        vec!["stop", "-o", "csv"],
        vec!["token", "--rotate", "-o", "csv"],
        vec!["run", "x.ipynb", "-o", "csv"],
    ] {
        let out = p.labship(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("only a class's roster is a table"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Nothing was built or started.
    nothing_made(&p);
}

/// Nothing of `p`'s deployment was made: no image, no container, nothing in moto.
fn nothing_made(p: &Project) {
    assert!(!image_exists(&format!("labship/{}:latest", p.name)));
    let containers = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.labship.deployment={}", p.name),
        ])
        .output()
        .expect("docker ps");
    assert!(containers.stdout.is_empty(), "a container was made");
    nothing_in_aws(p);
}

/// Nothing of `p`'s deployment exists in moto: no repository, security group or instance.
fn nothing_in_aws(p: &Project) {
    let endpoint = rig().aws_endpoint.clone();
    let name = p.name.clone();
    let repository = p.repository();
    let found = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async move {
            let ec2 = ec2_client(&endpoint);
            let tag = aws_sdk_ec2::types::Filter::builder()
                .name("tag:labship:deployment")
                .values(&name)
                .build();
            let groups = ec2
                .describe_security_groups()
                .filters(tag.clone())
                .send()
                .await
                .expect("describe groups");
            let instances = ec2
                .describe_instances()
                .filters(tag)
                .send()
                .await
                .expect("describe instances");
            let repo = ecr_client(&endpoint)
                .await
                .describe_repositories()
                .repository_names(&repository)
                .send()
                .await;
            (
                groups.security_groups().len(),
                instances.reservations().len(),
                repo.is_ok(),
            )
        });
    assert_eq!(
        found,
        (0, 0, false),
        "(groups, reservations, repository) of {}",
        p.name
    );
}

/// Values from labship.toml are checked like flags, with the file's line shown.
#[test]
fn bad_values_in_the_config_file_are_refused() {
    let p = Project::default_workload("badfile");
    for (toml, code) in [
        ("[ec2]\nport = 70000\n", "labship::config::parse"),
        ("[ec2]\nport = 0\n", "labship::config::invalid"),
        (
            "[ec2]\nallow_cidr = [\"0.0.0.0/0\"]\n",
            "labship::config::invalid",
        ),
        ("region = \"Mars\"\n", "labship::config::invalid"),
        (
            "[ec2]\ninstance_typ = \"t3.micro\"\n",
            "labship::config::parse",
        ),
        // SSH's port is refused with and without a key pair for SSH.
        ("[ec2]\nport = 22\n", "labship::config::invalid"),
        (
            "[ec2]\nport = 22\nssh_key = \"labship-test\"\n",
            "labship::config::invalid",
        ),
        // A key pair that does not exist (DescribeKeyPairs), before anything is made.
        (
            "[ec2]\nssh_key = \"labship-no-such-key\"\n",
            "labship::config::invalid",
        ),
    ] {
        p.write("labship.toml", toml);
        // The address is given (this machine may have no way to look its own up), unless
        // the case is about the file's own list.
        let mut args = vec!["up", "--ec2", "-o", "json"];
        if !toml.contains("allow_cidr") {
            args.extend(["--allow-cidr", "127.0.0.1/32"]);
        }
        let (got, message) = failure(&p.labship(&args));
        assert_eq!(got, code, "{toml}: {message}");
    }
    assert!(!image_exists(&format!("labship/{}:latest", p.name)));
    nothing_in_aws(&p);
}
