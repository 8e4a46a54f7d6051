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
