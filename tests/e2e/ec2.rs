//! `labship up/token/status/logs/down --ec2` against moto, with the instance simulator
//! (tests/rig/instance-sim.py) running each instance's user-data for real: real build, real
//! push to the loopback registry, RunInstances, the user-data logs in and pulls from that
//! registry, starts Jupyter from the pushed image, labship reads the console, and the test
//! logs in to that Jupyter with the token. What labship created is checked through moto's
//! API, the engine and the registry, independently of labship.

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use base64::Engine as _;
use serde_json::Value;

use crate::support::*;

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

pub(crate) fn token_of(url: &str) -> String {
    url.split("token=")
        .nth(1)
        .expect("token in URL")
        .to_string()
}

/// The origin (`https://ADDRESS:PORT`) of a deployment's Jupyter URL on the simulator, whose
/// address must be the instance's own: one of 127.0.0.0/8 but not 127.0.0.1 (the simulator
/// gives each instance one and publishes its ports there).
pub(crate) fn origin_of(url: &str) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("no scheme in {url}"));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in {url}"));
    let ip: std::net::Ipv4Addr = host
        .parse()
        .unwrap_or_else(|_| panic!("no IPv4 address in {url}"));
    assert!(
        ip.is_loopback() && ip != std::net::Ipv4Addr::LOCALHOST,
        "{url}: not an instance's own address"
    );
    port.parse::<u16>()
        .unwrap_or_else(|_| panic!("bad port in {url}"));
    format!("{scheme}://{authority}")
}

/// `origin` (see [`origin_of`]) on another port.
pub(crate) fn on_port(origin: &str, port: u16) -> String {
    let (head, _) = origin.rsplit_once(':').expect("origin with a port");
    format!("{head}:{port}")
}

/// Jupyter at `origin` (`https://ADDRESS:PORT`, where the simulator publishes the instance's
/// port), over TLS pinned to `pin`, with the token or without: the status code of
/// /api/status, 0 when there was no answer (a refused certificate among the reasons).
pub(crate) fn jupyter_status(origin: &str, pin: &str, token: Option<&str>) -> u16 {
    let url = match token {
        Some(t) => format!("{origin}/lab?token={t}"),
        None => format!("{origin}/lab"),
    };
    crate::support::jupyter_status(&url, Some(pin), token.is_some())
}

/// The user-data as EC2 shows it (base64 of gzip, which cloud-init unpacks), as text.
pub(crate) fn user_data_text(b64: &str) -> String {
    let gz = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    assert_eq!(
        gz.get(..2),
        Some(&[0x1f, 0x8b][..]),
        "the user-data is gzipped"
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut text)
        .expect("gzip of UTF-8 text");
    text
}

/// The certificate fingerprint an `up` report gives.
pub(crate) fn pin_of(report: &Value) -> String {
    report["tls_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no tls_fingerprint in {report}"))
        .to_string()
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> std::collections::HashMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `labship connect` running in the background: the URL it printed, stopped with Ctrl-C.
pub(crate) struct Connect {
    child: std::process::Child,
    url: String,
}

impl Connect {
    pub(crate) fn start(p: &Project, sim: &str) -> Connect {
        Connect::start_with(p, sim, &[])
    }

    fn start_with(p: &Project, sim: &str, env: &[(&str, &str)]) -> Connect {
        let mut cmd = p.command(&["connect", "--ec2"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("AWS_ENDPOINT_URL", sim)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = cmd.spawn().expect("labship connect");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut url = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut url).expect("the URL line");
        Connect {
            child,
            url: url.trim().to_string(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base(&self) -> String {
        self.url
            .split("/lab")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Ctrl-C: the forwarder ends cleanly.
    fn stop(mut self) {
        let sent = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "connect did not stop on Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "connect ended with {status} after Ctrl-C");
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS server with a key and certificate of its own (`openssl s_server`) on the instance's
/// address and port, pretending to be the instance.
struct Forged {
    child: std::process::Child,
    fingerprint: String,
    _dir: tempfile::TempDir,
}

impl Forged {
    /// On `origin`'s address and port (`https://ADDRESS:PORT`).
    fn start(origin: &str) -> Forged {
        let authority = origin.split("://").nth(1).expect("an origin");
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=labship forged"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl req");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let fp = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        let fingerprint = String::from_utf8_lossy(&fp.stdout)
            .trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .to_string();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", authority])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(authority).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s_server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Forged {
            child,
            fingerprint,
            _dir: dir,
        }
    }
}

impl Drop for Forged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Through `base` (`http://127.0.0.1:PORT`): a kernel started over Jupyter's REST API, `1+1`
/// executed over its websocket (Jupyter's JSON message protocol, with the Origin a browser
/// sends), the result's text/plain; the kernel is shut down again.
fn kernel_round_trip(base: &str, token: &str) -> String {
    let mut kernel = Kernel::start(base, token);
    let run = kernel.execute("1+1");
    let result = kernel.result(&run, Duration::from_secs(90));
    kernel.shutdown();
    result
}

/// Whether the deployment's security group exists.
async fn has_group(ec2: &aws_sdk_ec2::Client, deployment: &str) -> bool {
    let groups = ec2
        .describe_security_groups()
        .filters(filter("group-name", &format!("labship-{deployment}")))
        .send()
        .await
        .expect("DescribeSecurityGroups");
    !groups.security_groups().is_empty()
}

/// Nothing of the deployment is left: no live instance, no security group, no repository,
/// no container or volume made by its user-data.
pub(crate) async fn assert_nothing_left(name: &str) {
    let rig = rig();
    let ec2 = ec2_client(&rig.aws_endpoint);
    let live = ec2
        .describe_instances()
        .filters(filter("tag:labship:deployment", name))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .values("shutting-down")
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    let count: usize = live
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    assert_eq!(count, 0, "instances of {name} left");
    assert!(
        !has_group(&ec2, name).await,
        "security group of {name} left"
    );
    let volumes = ec2
        .describe_volumes()
        .filters(filter("tag:labship:deployment", name))
        .filters(filter("tag:labship:volume", "workspace"))
        .send()
        .await
        .expect("DescribeVolumes");
    let left: Vec<&str> = volumes
        .volumes()
        .iter()
        .filter_map(|v| v.volume_id())
        .collect();
    assert!(left.is_empty(), "data volumes of {name} left: {left:?}");
    let ecr = ecr_client(&rig.aws_endpoint).await;
    let repo = ecr
        .describe_repositories()
        .repository_names(format!("labship/{name}"))
        .send()
        .await;
    assert!(repo.is_err(), "repository labship/{name} left");
    // The sealed token went with it.
    let parameter = format!("/labship/{name}/token");
    let gone = aws_cli(
        &rig.aws_endpoint,
        &["ssm", "get-parameter", "--name", &parameter],
    );
    assert!(
        !gone.status.success()
            && String::from_utf8_lossy(&gone.stderr).contains("ParameterNotFound"),
        "token parameter {parameter} left"
    );
    // And its own role, if it had one.
    assert_eq!(deployment_role(name), None, "the IAM role of {name} left");
    let label = format!("label=dev.labship.ec2.deployment={name}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &label]).trim(), "");
    assert_eq!(
        docker_ok(&["volume", "ls", "-q", "--filter", &label]).trim(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn up_reaches_jupyter_on_the_instance_and_down_leaves_nothing() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2");
    // A file of its own, so that its layers are not all in the registry already (BuildKit's
    // layers are reproducible, and other tests push the same workload).
    p.write("docker/resources/marker.txt", &p.name);
    let name = p.name.clone();
    let port = free_port();
    let port_s = port.to_string();

    let mut args = ec2_up_args(&port_s);
    args.push("--timings");
    let first = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(first["action"], "created", "{first}");
    assert_eq!(first["built"], true, "{first}");
    assert!(first["bytes_uploaded"].as_u64().unwrap_or(0) > 0, "{first}");
    for phase in [
        "push", "launch", "boot", "docker", "pull", "jupyter", "total",
    ] {
        assert!(
            first["timings"][phase].as_f64().is_some(),
            "timing {phase}: {first}"
        );
    }
    let url = first["url"].as_str().expect("url");
    let token = token_of(url);
    assert_eq!(token.len(), 48, "{url}");
    let at = origin_of(url);
    assert!(
        url.starts_with(&format!("{}/lab?token=", on_port(&at, port))),
        "{url}"
    );
    // The URL works: Jupyter from the pushed image, on the instance, accepts the token...
    let pin = pin_of(&first);
    assert_eq!(jupyter_status(&at, &pin, Some(&token)), 200);
    // ...and nothing gets in without it.
    assert_eq!(jupyter_status(&at, &pin, None), 403);

    // What was created, seen through moto's API.
    let ec2 = ec2_client(&rig.aws_endpoint);
    let id = first["instance_id"]
        .as_str()
        .expect("instance_id")
        .to_string();
    let described = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("DescribeInstances");
    let inst = described
        .reservations()
        .first()
        .and_then(|r| r.instances().first())
        .expect("the instance")
        .clone();
    let md = inst.metadata_options().expect("metadata options");
    assert_eq!(md.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(md.http_put_response_hop_limit(), Some(1));
    let tags = tags_of(inst.tags());
    assert_eq!(
        tags.get("labship:managed-by").map(String::as_str),
        Some("labship")
    );
    assert_eq!(tags.get("labship:deployment"), Some(&name));
    assert_eq!(
        tags.get("labship:image").map(String::as_str),
        first["image"].as_str()
    );
    assert_eq!(tags.get("labship:port"), Some(&port_s));
    // Who made it: the caller's ARN as STS gives it, on the instance and its group.
    let owner = tags.get("labship:owner").cloned().unwrap_or_default();
    assert!(owner.starts_with("arn:aws:"), "{tags:?}");
    assert!(
        inst.iam_instance_profile()
            .and_then(|p| p.arn())
            .is_some_and(|a| a.ends_with("/labship-instance")),
        "{:?}",
        inst.iam_instance_profile()
    );

    // The root volume: encrypted gp3, tagged at creation.
    let volumes = ec2
        .describe_volumes()
        .filters(filter("attachment.instance-id", &id))
        .send()
        .await
        .expect("DescribeVolumes");
    let vol = volumes.volumes().first().expect("root volume");
    assert_eq!(vol.encrypted(), Some(true));
    assert_eq!(vol.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(tags_of(vol.tags()).get("labship:deployment"), Some(&name));

    // The security group: only the Jupyter port, only to the allowed /32, no SSH.
    let groups = ec2
        .describe_security_groups()
        .group_ids(inst.security_groups()[0].group_id().expect("group id"))
        .send()
        .await
        .expect("DescribeSecurityGroups");
    let group = &groups.security_groups()[0];
    assert_eq!(group.group_name(), Some(format!("labship-{name}").as_str()));
    assert_eq!(tags_of(group.tags()).get("labship:deployment"), Some(&name));
    let rules = group.ip_permissions();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].ip_protocol(), Some("tcp"));
    assert_eq!(rules[0].from_port(), Some(i32::from(port)));
    assert_eq!(rules[0].to_port(), Some(i32::from(port)));
    let cidrs: Vec<&str> = rules[0]
        .ip_ranges()
        .iter()
        .filter_map(|r| r.cidr_ip())
        .collect();
    assert_eq!(cidrs, ["127.0.0.1/32"]);
    assert!(rules[0].ipv6_ranges().is_empty());

    // The user-data: labship's script, and no secret in it.
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(&id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .expect("DescribeInstanceAttribute");
    let b64 = attr.user_data().and_then(|u| u.value()).expect("user data");
    let script = user_data_text(b64);
    assert!(script.starts_with("#!/bin/bash"), "{script}");
    assert!(script.contains(first["image"].as_str().expect("image")));
    assert!(
        !script.contains(&rig.registry_password),
        "the ECR password is in the user-data"
    );
    assert!(
        !script.contains(&token),
        "the Jupyter token is in the user-data"
    );
    let lower = script.to_ascii_lowercase();
    assert!(!lower.contains("aws_secret_access_key") && !lower.contains("aws_access_key_id"));
    assert!(
        !script.as_bytes().windows(20).any(|w| w.starts_with(b"AKIA")
            && w[4..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())),
        "an access key id is in the user-data"
    );

    // The shared instance role: tagged, no managed policy, exactly infra/instance-policy.json
    // inline (read /labship/* parameters, pull labship images, the SSM agent).
    let iam = iam_client(&rig.aws_endpoint);
    let role = iam
        .get_role()
        .role_name("labship-instance")
        .send()
        .await
        .expect("GetRole");
    assert!(role
        .role()
        .map(|r| r.tags().iter().any(|t| t.key() == "labship:managed-by"))
        .unwrap_or(false));
    let attached = iam
        .list_attached_role_policies()
        .role_name("labship-instance")
        .send()
        .await
        .expect("ListAttachedRolePolicies");
    assert!(
        attached.attached_policies().is_empty(),
        "managed policies on the instance role: {:?}",
        attached.attached_policies()
    );
    let inline = iam
        .get_role_policy()
        .role_name("labship-instance")
        .policy_name("labship-instance")
        .send()
        .await
        .expect("GetRolePolicy labship-instance");
    // IAM answers the document URL-encoded.
    let document = percent_encoding::percent_decode_str(inline.policy_document())
        .decode_utf8()
        .expect("UTF-8 policy")
        .into_owned();
    let put: serde_json::Value = serde_json::from_str(&document).expect("policy JSON");
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/instance-policy.json"),
        )
        .expect("infra/instance-policy.json"),
    )
    .expect("infra JSON");
    assert_eq!(put, file, "the role's inline policy");

    // Again: nothing built, nothing uploaded, nothing launched, the same URL.
    let again = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(again["action"], "unchanged", "{again}");
    assert_eq!(again["built"], false);
    assert_eq!(again["bytes_uploaded"], 0);
    assert_eq!(again["instance_id"], first["instance_id"]);
    assert_eq!(again["url"], first["url"]);

    // token, status and logs from AWS alone.
    let t = p.labship_at(&sim, &["token", "--ec2"], &[]);
    assert!(t.status.success(), "{}", stderr(&t));
    assert_eq!(String::from_utf8_lossy(&t.stdout).trim(), token);
    // One table for every target: without --ec2, status lists local and EC2 together.
    let status = json(&p.labship_at(&sim, &["status", "-o", "json"], &[]));
    let row = status["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .find(|d| d["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not in {status}"))
        .clone();
    assert_eq!(row["target"], "ec2");
    assert_eq!(row["state"], "running");
    assert_eq!(row["instance_id"], first["instance_id"]);
    assert!(!row.to_string().contains(&token), "status shows the token");
    let logs = p.labship_at(&sim, &["logs", "--ec2"], &[]);
    let logs_text = String::from_utf8_lossy(&logs.stdout);
    assert!(logs_text.contains("labship: ready"), "{logs_text}");
    assert!(logs_text.contains("labship: pulled"), "{logs_text}");

    // Another identity of the same account: its `up` and `down` of this deployment are refused,
    // naming both, and nothing is removed.
    let (key, secret) = limited_user(
        &rig.aws_endpoint,
        &format!("{name}-other"),
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    );
    let other = [
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    for args in [
        vec!["down", "--ec2", "--yes", "-o", "json"],
        ec2_up_args(&port_s),
    ] {
        let err = json_error(&p.labship_at(&sim, &args, &other));
        assert_eq!(err["code"], "labship::ec2::not_owner", "{args:?}: {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&owner) && message.contains(&format!("user/{name}-other")),
            "{err}"
        );
    }
    assert_eq!(jupyter_status(&at, &pin, Some(&token)), 200, "still there");

    // connect: JupyterLab on http://127.0.0.1 of this machine, through a forwarder that speaks
    // TLS to the instance with the pinned certificate; pages, REST and kernel websockets pass.
    let forwarder = Connect::start(&p, &sim);
    assert!(
        forwarder.url.starts_with("http://127.0.0.1:")
            && forwarder.url.ends_with(&format!("/lab?token={token}")),
        "{}",
        forwarder.url
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut page = agent.get(&forwarder.url).call().expect("the lab page");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.body_mut().read_to_string().expect("HTML");
    assert!(
        html.contains("jupyter-config-data") && html.contains("JupyterLab"),
        "{html}"
    );
    assert_eq!(kernel_round_trip(&forwarder.base(), &token), "2");
    // What a user sees: a real browser renders JupyterLab through the forwarder.
    crate::browser::assert_lab_renders(&forwarder.url);
    forwarder.stop();

    // Someone else answering on the instance's address (another key): refused before any
    // token is sent, with both fingerprints named; `backup` will not read through it either.
    let container = format!("labship-ec2-{name}");
    docker_ok(&["stop", &container]);
    let forged = Forged::start(&at);
    let refused = json_error(&p.labship_at(&sim, &["connect", "--ec2", "-o", "json"], &[]));
    assert_eq!(refused["code"], "labship::ec2::tls_mismatch", "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&pin) && message.contains(&forged.fingerprint),
        "{refused}"
    );
    let kept = p.labship_at(&sim, &["backup", "--ec2", "-o", "json"], &[]);
    let kept_err = json_error(&kept);
    assert!(
        kept_err["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&forged.fingerprint),
        "{kept_err}"
    );
    drop(forged);
    docker_ok(&["start", &container]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while jupyter_status(&at, &pin, Some(&token)) != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "Jupyter did not come back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // --access ssm on the same deployment: no inbound rule any more, and every connection
    // (up's check, connect, down's backup) goes through a Systems Manager session carried by
    // the plugin: the rig's stand-in, which checks each session with the simulator and
    // records how it was run.
    let path_without_plugin = std::env::var("PATH").unwrap_or_default();
    let ssm_up_args = [
        "up",
        "--ec2",
        "--access",
        "ssm",
        "--bind",
        "127.0.0.1",
        "--port",
        &port_s,
        "--wait",
        "600",
        "-o",
        "json",
    ];
    let missing = json_error(&p.labship_at(
        &sim,
        &ssm_up_args,
        &[("PATH", path_without_plugin.as_str())],
    ));
    assert_eq!(
        missing["code"], "labship::ec2::ssm_plugin_missing",
        "{missing}"
    );
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or_default()
            .contains("session-manager-plugin"),
        "{missing}"
    );
    let ec2 = ec2_client(&rig.aws_endpoint);
    let ingress_of_group = || async {
        let groups = ec2
            .describe_security_groups()
            .filters(filter("tag:labship:deployment", &name))
            .send()
            .await
            .expect("DescribeSecurityGroups");
        groups
            .security_groups()
            .iter()
            .map(|g| g.ip_permissions().len())
            .sum::<usize>()
    };
    assert!(ingress_of_group().await > 0, "refused, so still open");
    let plugin_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rig/ssm-plugin");
    let plugin_log = p.path().join("ssm-plugin.log");
    let with_plugin_path = format!("{}:{path_without_plugin}", plugin_dir.display());
    let plugin_env = [
        ("PATH", with_plugin_path.as_str()),
        (
            "LABSHIP_SSM_PLUGIN_LOG",
            plugin_log.to_str().expect("UTF-8 path"),
        ),
    ];
    let ssm_up = json(&p.labship_at(&sim, &ssm_up_args, &plugin_env));
    assert_eq!(ssm_up["action"], "unchanged", "{ssm_up}");
    assert_eq!(ssm_up["access"], "ssm", "{ssm_up}");
    assert!(
        ssm_up["url"].is_null(),
        "no URL without an open port: {ssm_up}"
    );
    assert_eq!(
        ingress_of_group().await,
        0,
        "--access ssm leaves no inbound rule"
    );
    let described = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("DescribeInstances");
    let instance_tags = tags_of(described.reservations()[0].instances()[0].tags());
    assert_eq!(instance_tags["labship:access"], "ssm");
    // A plain `up` later (no --access, no address) keeps it so: no port opened behind its back.
    let plain_up: Vec<&str> = ssm_up_args
        .iter()
        .copied()
        .filter(|a| *a != "--access" && *a != "ssm")
        .collect();
    let kept = json(&p.labship_at(&sim, &plain_up, &plugin_env));
    assert_eq!(kept["access"], "ssm", "{kept}");
    assert_eq!(
        ingress_of_group().await,
        0,
        "a plain up opened the port again"
    );
    let tunnelled = Connect::start_with(&p, &sim, &plugin_env);
    assert!(
        tunnelled.url.starts_with("http://127.0.0.1:")
            && tunnelled.url.ends_with(&format!("/lab?token={token}")),
        "{}",
        tunnelled.url
    );
    let mut status_page = agent
        .get(&format!("{}/api/status", tunnelled.base()))
        .header("Authorization", &format!("token {token}"))
        .call()
        .expect("/api/status through the session");
    assert_eq!(status_page.status().as_u16(), 200);
    let _ = status_page.body_mut().read_to_string();
    assert_eq!(kernel_round_trip(&tunnelled.base(), &token), "2");
    tunnelled.stop();
    // How the plugin was run: the session's answer in the environment, nothing secret in argv,
    // every session ended by labship.
    let events: Vec<Value> = std::fs::read_to_string(&plugin_log)
        .expect("the plugin's log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let starts: Vec<&Value> = events.iter().filter(|e| e["event"] == "start").collect();
    assert!(starts.len() >= 2, "up's check and connect: {events:?}");
    for start in &starts {
        assert_eq!(
            start["argv"][1], "AWS_SSM_START_SESSION_RESPONSE",
            "{start}"
        );
        assert_eq!(start["env_has_response"], true, "{start}");
        assert_eq!(start["target"], id.as_str(), "{start}");
        assert!(!start["argv"].to_string().contains(&token), "{start}");
    }
    assert!(
        events.iter().any(|e| e["event"] == "connection"),
        "no connection went through the session: {events:?}"
    );
    let sessions: Value = serde_json::from_str(
        &agent
            .get(&format!("{sim}/_sim/sessions"))
            .call()
            .expect("/_sim/sessions")
            .body_mut()
            .read_to_string()
            .expect("sessions JSON"),
    )
    .expect("sessions");
    let ours: Vec<&Value> = sessions["sessions"]
        .as_array()
        .expect("sessions list")
        .iter()
        .filter(|s| s["Target"] == id.as_str())
        .collect();
    assert!(ours.len() >= 2, "{sessions}");
    for session in &ours {
        assert_eq!(session["State"], "Terminated", "left open: {session}");
    }
    // Each plugin saw its session end and exited by itself; none is left running.
    assert_eq!(
        events_exited(&plugin_log),
        starts.len(),
        "{}",
        std::fs::read_to_string(&plugin_log).unwrap_or_default()
    );
    for start in &starts {
        let pid = start["pid"].as_u64().expect("pid");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the plugin {pid} is still running"
        );
    }

    // backup: the workspace, through Jupyter (here through a session), byte for byte.
    let backup = json(&p.labship_at(&sim, &["backup", "--ec2", "-o", "json"], &plugin_env));
    let saved_dir = std::path::PathBuf::from(backup["saved"]["dir"].as_str().expect("saved dir"));
    assert!(
        saved_dir.starts_with(p.path().join("labship-backups")),
        "{backup}"
    );
    assert_eq!(backup["saved"]["instance"], id.as_str(), "{backup}");
    let notebook =
        std::fs::read(saved_dir.join("parallel-processing.ipynb")).expect("saved notebook");
    assert_eq!(
        notebook,
        std::fs::read(p.path().join("docker/resources/parallel-processing.ipynb"))
            .expect("original")
    );

    // down: everything goes (the data volume with --delete-data), and a second down finds
    // nothing.
    let down = json(&p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &plugin_env,
    ));
    assert_eq!(down["terminated"], serde_json::json!([id]), "{down}");
    assert_eq!(down["saved"], serde_json::json!([]), "{down}");
    assert_eq!(
        down["data_volumes_deleted"].as_array().map(Vec::len),
        Some(1),
        "{down}"
    );
    assert_eq!(
        down["security_groups_deleted"].as_array().map(Vec::len),
        Some(1),
        "{down}"
    );
    assert_eq!(
        down["repository_deleted"],
        format!("labship/{name}"),
        "{down}"
    );
    assert_nothing_left(&name).await;
    let second = p.labship_at(&sim, &["down", "--ec2", "--yes"], &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(String::from_utf8_lossy(&second.stdout).contains("Nothing left"));
}

/// How many plugin processes logged their exit because their session ended.
fn events_exited(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "exit" && e["why"] == "terminated")
        .count()
}

/// Where a secret must never be: what `secrets_are_nowhere` scans.
struct Shown {
    what: &'static str,
    text: String,
}

/// No `secret` in any of `places`; each place named in the failure.
fn secrets_are_nowhere(secrets: &[(&str, &str)], places: &[Shown]) {
    for (secret_name, secret) in secrets {
        assert!(
            secret.len() >= 8,
            "{secret_name} is not a real secret: {secret:?}"
        );
        for place in places {
            assert!(
                !place.text.contains(secret),
                "the {secret_name} is in {} ({} bytes scanned)",
                place.what,
                place.text.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_image_replaces_the_container_and_keeps_the_notebooks() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2swap");
    let name = p.name.clone();
    let port = free_port();
    let port_s = port.to_string();
    // Every command line on this machine while labship works, the simulated host's included.
    let argv = Argv::sample();
    fn verbose(port: &str) -> Vec<&str> {
        let mut args = ec2_up_args(port);
        args.push("-vvv");
        args
    }

    let up = p.labship_at(&sim, &verbose(&port_s), &[]);
    let first = json(&up);
    let mut diagnostics = stderr(&up);
    assert_eq!(first["action"], "created", "{first}");
    let container = format!("labship-ec2-{name}");
    // A notebook written in Jupyter's workspace.
    docker_ok(&[
        "exec",
        &container,
        "sh",
        "-c",
        "echo keep-me > notes-e2e.txt",
    ]);

    // The default Dockerfile copies resources/ into the working directory.
    p.write(
        "docker/resources/extra.txt",
        "a new file makes a new image\n",
    );
    let replaced = p.labship_at(&sim, &verbose(&port_s), &[]);
    let second = json(&replaced);
    diagnostics.push_str(&stderr(&replaced));
    assert_eq!(second["action"], "replaced", "{second}");
    assert_eq!(
        second["instance_id"], first["instance_id"],
        "the instance was replaced"
    );
    assert_ne!(second["image"], first["image"]);
    let token = token_of(second["url"].as_str().expect("url"));
    let at = origin_of(second["url"].as_str().expect("url"));
    // The token is sealed in SSM, not in the container: the login URL survives the swap.
    assert_eq!(token, token_of(first["url"].as_str().expect("url")));
    // The certificate is the host's: a new container serves the same one.
    let pin = pin_of(&first);
    assert_eq!(pin_of(&second), pin);
    assert_eq!(jupyter_status(&at, &pin, Some(&token)), 200);
    // A SecureString under /labship/, tagged, whose value is the token.
    let parameter = format!("/labship/{name}/token");
    let described = aws_json(
        &rig.aws_endpoint,
        &[
            "ssm",
            "describe-parameters",
            "--parameter-filters",
            &format!("Key=Name,Values={parameter}"),
        ],
    );
    assert_eq!(
        described["Parameters"][0]["Type"], "SecureString",
        "{described}"
    );
    let sealed = aws_json(
        &rig.aws_endpoint,
        &[
            "ssm",
            "get-parameter",
            "--name",
            &parameter,
            "--with-decryption",
        ],
    );
    assert_eq!(sealed["Parameter"]["Value"], token.as_str());
    let parameter_tags = aws_json(
        &rig.aws_endpoint,
        &[
            "ssm",
            "list-tags-for-resource",
            "--resource-type",
            "Parameter",
            "--resource-id",
            &parameter,
        ],
    );
    assert!(
        parameter_tags.to_string().contains("labship:managed-by"),
        "{parameter_tags}"
    );
    // The new container runs the new image, on the same workspace volume.
    let inside = docker_ok(&["exec", &container, "sh", "-c", "cat notes-e2e.txt; ls"]);
    assert!(inside.contains("keep-me"), "{inside}");
    // The new image's new file reached the workspace too (copied, never overwriting).
    assert!(inside.contains("extra.txt"), "{inside}");
    // The token can be recovered later, from SSM (the only place it is).
    let t = p.labship_at(&sim, &["token", "--ec2", "-vvv"], &[]);
    assert_eq!(String::from_utf8_lossy(&t.stdout).trim(), token);
    diagnostics.push_str(&stderr(&t));
    // A new token: sealed, the container started again with it, the workspace kept; the old
    // token no longer opens Jupyter.
    let rotated = p.labship_at(
        &sim,
        &["token", "--ec2", "--rotate", "-vvv", "-o", "json"],
        &[],
    );
    diagnostics.push_str(&stderr(&rotated));
    let rotated = json(&rotated);
    let new_token = rotated["token"].as_str().expect("token").to_string();
    assert_ne!(new_token, token, "{rotated}");
    assert_eq!(token_of(rotated["url"].as_str().expect("url")), new_token);
    assert_eq!(jupyter_status(&at, &pin, Some(&new_token)), 200);
    assert_eq!(jupyter_status(&at, &pin, Some(&token)), 403);
    let inside = docker_ok(&["exec", &container, "sh", "-c", "cat notes-e2e.txt"]);
    assert!(inside.contains("keep-me"), "{inside}");
    let t = p.labship_at(&sim, &["token", "--ec2"], &[]);
    assert_eq!(String::from_utf8_lossy(&t.stdout).trim(), new_token);
    // Locally, a token is the container's own: --rotate is refused there, clearly.
    let local = p.labship_at(&sim, &["token", "--local", "--rotate", "-o", "json"], &[]);
    assert_eq!(json_error(&local)["code"], "labship::unsupported");
    let logs = p.labship_at(&sim, &["logs", "--ec2", "-vvv"], &[]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    diagnostics.push_str(&stderr(&logs));
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    let command_lines = argv.stop();

    // Everything AWS shows about the deployment, through the AWS CLI, and everything this
    // machine showed: the token and the ECR password are in none of it.
    let id = second["instance_id"].as_str().expect("instance id");
    let console = aws_json(&sim, &["ec2", "get-console-output", "--instance-id", id]);
    let console = console["Output"].as_str().unwrap_or_default().to_string();
    assert!(
        console.contains("labship: token path=/lab source=labship"),
        "the console says whose token Jupyter accepts: {console}"
    );
    let user_data = aws_json(
        &rig.aws_endpoint,
        &[
            "ec2",
            "describe-instance-attribute",
            "--instance-id",
            id,
            "--attribute",
            "userData",
        ],
    );
    let user_data = user_data_text(user_data["UserData"]["Value"].as_str().expect("user data"));
    let outputs = aws_json(
        &sim,
        &[
            "ssm",
            "list-command-invocations",
            "--instance-id",
            id,
            "--details",
        ],
    );
    assert!(
        outputs.to_string().contains("labship: ready"),
        "the replace's output is there to scan: {outputs}"
    );
    let tags = [
        aws_json(&rig.aws_endpoint, &["ec2", "describe-tags"]).to_string(),
        parameter_tags.to_string(),
        aws_json(
            &rig.aws_endpoint,
            &["iam", "list-role-tags", "--role-name", "labship-instance"],
        )
        .to_string(),
    ]
    .join("\n");
    let ecr_basic =
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", rig.registry_password));
    secrets_are_nowhere(
        &[
            ("Jupyter token", &token),
            ("rotated Jupyter token", &new_token),
            ("ECR password", &rig.registry_password),
            ("ECR authorization token", &ecr_basic),
        ],
        &[
            Shown {
                what: "the console (GetConsoleOutput)",
                text: console,
            },
            Shown {
                what: "the user-data (DescribeInstanceAttribute)",
                text: user_data,
            },
            Shown {
                what: "the SSM command output (ListCommandInvocations)",
                text: outputs.to_string(),
            },
            Shown {
                what: "the tags (EC2, SSM, IAM)",
                text: tags,
            },
            Shown {
                what: "`labship logs --ec2`",
                text: logs,
            },
            Shown {
                what: "labship's stderr at -vvv (up, replace, token, logs)",
                text: diagnostics,
            },
            Shown {
                what: "a process's command line (/proc/*/cmdline)",
                text: command_lines.into_iter().collect::<Vec<_>>().join("\n"),
            },
        ],
    );

    // Another port, same image: the container moves, the tags follow, the old port closes.
    let new_port = free_port();
    let new_port_s = new_port.to_string();
    let moved = json(&p.labship_at(&sim, &ec2_up_args(&new_port_s), &[]));
    assert_eq!(moved["action"], "replaced", "{moved}");
    assert!(
        moved["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("port"),
        "{moved}"
    );
    assert_eq!(
        jupyter_status(&on_port(&at, new_port), &pin, Some(&new_token)),
        200
    );
    assert_eq!(
        jupyter_status(&at, &pin, Some(&new_token)),
        0,
        "the old port still answers"
    );
    let again = json(&p.labship_at(&sim, &ec2_up_args(&new_port_s), &[]));
    assert_eq!(again["action"], "unchanged", "{again}");

    // The notebook written on the instance, saved where asked.
    let dest = p.path().join("saved-here");
    let backup = backup_ec2_to(&p, &sim, &dest);
    assert_eq!(
        backup["saved"]["dir"],
        dest.to_str().expect("utf-8"),
        "{backup}"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("notes-e2e.txt")).expect("saved notes"),
        "keep-me\n"
    );
    json(&p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &[],
    ));
    assert_nothing_left(&name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_container_surfaces_the_phase_and_cause_from_the_console() {
    let sim = sim_endpoint();
    let p = Project::with_files(
        "ec2fail",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nLABEL purpose=fails\nCMD [\"sh\", \"-c\", \"echo no jupyter here >&2; exit 3\"]\n",
        )],
    );
    let name = p.name.clone();
    let port_s = free_port().to_string();
    let out = p.labship_at(&sim, &ec2_up_args(&port_s), &[]);
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::ec2::boot", "{err}");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.contains(&name), "{message}");
    assert!(message.contains("failed while"), "{message}");
    assert!(
        err["help"]
            .as_str()
            .unwrap_or_default()
            .contains("labship logs"),
        "{err}"
    );
    // `up` again retries on the same instance (through Systems Manager), and fails the same way.
    let retry = p.labship_at(&sim, &ec2_up_args(&port_s), &[]);
    let err = json_error(&retry);
    assert_eq!(err["code"], "labship::ec2::boot", "{err}");
    assert!(
        stderr(&retry).contains("starting it again"),
        "{}",
        stderr(&retry)
    );
    // The instance stays for inspection. A plain down removes it and keeps the data volume
    // (nothing to save through Jupyter: the workspace is on the volume); --delete-data then
    // deletes that.
    let down = p.labship_at(&sim, &ec2_down_args(&["--purge-images"]), &[]);
    let report = json(&down);
    assert_eq!(report["saved"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["terminated"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        report["data_volumes_kept"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let gone = json(&p.labship_at(&sim, &ec2_down_args(&["--delete-data"]), &[]));
    assert_eq!(
        gone["data_volumes_deleted"].as_array().map(Vec::len),
        Some(1),
        "{gone}"
    );
    assert_nothing_left(&name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_before_anything_is_created() {
    let rig = rig();
    let p = Project::default_workload("ec2bad");
    let moto = rig.aws_endpoint.clone();
    let code_of = |args: &[&str], env: &[(&str, &str)]| -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        json_error(&p.labship_at(&moto, &all, env))
    };

    let err = code_of(
        &[
            "up",
            "--ec2",
            "--instance-type",
            "t3.gigantic",
            "--allow-cidr",
            "127.0.0.1",
        ],
        &[],
    );
    assert_eq!(err["code"], "labship::ec2::instance_type", "{err}");
    assert!(err["message"]
        .as_str()
        .unwrap_or_default()
        .contains("t3.gigantic"));

    let err = code_of(
        &[
            "up",
            "--ec2",
            "--instance-type",
            "t4g.medium",
            "--platform",
            "linux/amd64",
            "--allow-cidr",
            "127.0.0.1",
        ],
        &[],
    );
    assert_eq!(err["code"], "labship::ec2::architecture", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("arm64"),
        "{err}"
    );

    let err = code_of(&["up", "--ec2", "--allow-cidr", "300.1.2.3/32"], &[]);
    assert_eq!(err["code"], "labship::config::invalid", "{err}");
    // --access ssm opens no port: a port opened by the settings is a contradiction; locally
    // there is nothing to reach through Systems Manager.
    let toml = std::fs::read_to_string(p.path().join("labship.toml")).expect("labship.toml");
    p.write(
        "labship.toml",
        &format!("{toml}[ec2]\nallow_cidr = [\"203.0.113.0/24\"]\naccess = \"ssm\"\n"),
    );
    let err = code_of(&["up", "--ec2"], &[]);
    assert_eq!(err["code"], "labship::config::invalid", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ec2.allow_cidr"),
        "{err}"
    );
    p.write("labship.toml", &toml);
    let err = code_of(&["up", "--local", "--access", "ssm"], &[]);
    assert_eq!(err["code"], "labship::unsupported", "{err}");

    let err = code_of(&["up", "--ec2", "--ami", "ubuntu"], &[]);
    assert_eq!(err["code"], "labship::config::invalid", "{err}");

    let err = code_of(
        &[
            "up",
            "--ec2",
            "--ami",
            "ami-0123456789abcdef0",
            "--allow-cidr",
            "127.0.0.1",
        ],
        &[],
    );
    assert_eq!(err["code"], "labship::ec2::ami", "{err}");

    // The caller's address cannot be found (nothing listens on the address service).
    let closed = format!("127.0.0.1:{}", free_port());
    let err = code_of(&["up", "--ec2"], &[("LABSHIP_CHECKIP", &closed)]);
    assert_eq!(err["code"], "labship::ec2::caller_ip", "{err}");
    assert!(
        err["help"]
            .as_str()
            .unwrap_or_default()
            .contains("--allow-cidr"),
        "{err}"
    );

    // A deployment that does not exist.
    let err = code_of(&["token", "--ec2", "no-such-deployment"], &[]);
    assert_eq!(err["code"], "labship::deployment::not_found", "{err}");
    let err = code_of(&["logs", "--ec2", "no-such-deployment"], &[]);
    assert_eq!(err["code"], "labship::deployment::not_found", "{err}");
    // down without a terminal and without --yes refuses only when there is something to remove.
    let nothing = p.labship_at(&moto, &["down", "--ec2", "no-such-deployment"], &[]);
    assert!(nothing.status.success(), "{}", stderr(&nothing));

    // None of it created anything.
    let ec2 = ec2_client(&moto);
    assert!(!has_group(&ec2, &p.name).await);
    let instances = ec2
        .describe_instances()
        .filters(filter("tag:labship:deployment", &p.name))
        .send()
        .await
        .expect("DescribeInstances");
    assert!(instances.reservations().is_empty());
    assert!(
        !image_exists(&format!("labship/{}:latest", p.name)),
        "bad input built an image"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_with_the_detected_address_and_changes_nothing() {
    let rig = rig();
    let p = Project::default_workload("ec2plan");
    let checkip = text_server("203.0.113.9\n");
    let plan = json(&p.labship_at(
        &rig.aws_endpoint,
        &["up", "--ec2", "--dry-run", "-o", "json"],
        &[("LABSHIP_CHECKIP", &checkip)],
    ));
    assert_eq!(plan["action"], "create", "{plan}");
    assert_eq!(plan["target"], "ec2", "{plan}");
    assert_eq!(
        plan["security_group"]["ingress"][0]["cidrs"],
        serde_json::json!(["203.0.113.9/32"])
    );
    assert_eq!(plan["security_group"]["ingress"][0]["port"], 8888);
    assert_eq!(
        plan["security_group"]["ingress"].as_array().map(Vec::len),
        Some(1),
        "no SSH unless asked"
    );
    assert_eq!(plan["metadata_options"]["http_tokens"], "required");
    assert_eq!(plan["metadata_options"]["hop_limit"], 1);
    assert_eq!(plan["root_volume"]["encrypted"], true);
    assert!(
        plan["root_volume"]["size_gib"].as_i64().unwrap_or(0) >= 30,
        "ECS AMI needs 30 GiB: {plan}"
    );
    assert!(plan["ami"]["source"]
        .as_str()
        .unwrap_or_default()
        .contains("/ecs/optimized-ami/"));
    assert_eq!(plan["tags"]["labship:deployment"], p.name.as_str());
    let user_data = plan["user_data"].as_str().expect("user_data");
    assert!(user_data.starts_with("#!/bin/bash"));
    // The script labship would send is shellcheck-clean.
    let mut check = std::process::Command::new("shellcheck")
        .args(["-s", "bash", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("shellcheck (run tests/rig/setup.sh)");
    {
        use std::io::Write;
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(user_data.as_bytes())
            .expect("write");
    }
    let checked = check.wait_with_output().expect("shellcheck");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    // --public opens to everyone, IPv4 and IPv6, and says so.
    let public = json(&p.labship_at(
        &rig.aws_endpoint,
        &["up", "--ec2", "--dry-run", "--public", "-o", "json"],
        &[],
    ));
    assert_eq!(
        public["security_group"]["ingress"][0]["cidrs"],
        serde_json::json!(["0.0.0.0/0", "::/0"])
    );

    // Nothing was created or built.
    let ec2 = ec2_client(&rig.aws_endpoint);
    assert!(!has_group(&ec2, &p.name).await);
    let ecr = ecr_client(&rig.aws_endpoint).await;
    assert!(ecr
        .describe_repositories()
        .repository_names(p.repository())
        .send()
        .await
        .is_err());
}

/// On a private moto: a shared instance profile that holds someone else's role is refused
/// before anything is made (instances launched with it would run with that role).
#[test]
fn a_shared_profile_holding_another_role_is_refused() {
    let moto = Server::moto();
    let endpoint = format!("http://{}", moto.addr);
    let trust = crate::policy::read("infra/instance-trust-policy.json");
    aws_json(
        &endpoint,
        &[
            "iam",
            "create-role",
            "--role-name",
            "someone-else",
            "--assume-role-policy-document",
            &trust,
        ],
    );
    for args in [
        vec![
            "iam",
            "create-instance-profile",
            "--instance-profile-name",
            "labship-instance",
            "--path",
            "/labship/",
        ],
        vec![
            "iam",
            "add-role-to-instance-profile",
            "--instance-profile-name",
            "labship-instance",
            "--role-name",
            "someone-else",
        ],
    ] {
        let out = aws_cli(&endpoint, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let p = Project::default_workload("ec2foreign");
    let err = json_error(&p.labship_at(
        &endpoint,
        &["up", "--ec2", "--allow-cidr", "127.0.0.1", "-o", "json"],
        &[],
    ));
    assert_eq!(
        err["code"], "labship::ec2::instance_profile_foreign_role",
        "{err}"
    );
    let message = unwrapped(err["message"].as_str().unwrap_or_default());
    assert!(message.contains("someone-else"), "{err}");
    assert!(
        unwrapped(err["help"].as_str().unwrap_or_default()).contains(
            "`aws iam remove-role-from-instance-profile --instance-profile-name labship-instance --role-name someone-else`"
        ),
        "{err}"
    );
    // Nothing made: no instance, no security group of the deployment, no role of labship's.
    let instances = aws_json(&endpoint, &["ec2", "describe-instances"]);
    assert_eq!(
        instances["Reservations"],
        serde_json::json!([]),
        "{instances}"
    );
    let groups = aws_json(
        &endpoint,
        &[
            "ec2",
            "describe-security-groups",
            "--filters",
            "Name=tag-key,Values=labship:deployment",
        ],
    );
    assert_eq!(groups["SecurityGroups"], serde_json::json!([]), "{groups}");
    let roles = aws_cli(
        &endpoint,
        &["iam", "get-role", "--role-name", "labship-instance"],
    );
    assert!(!roles.status.success(), "labship's role was made");
}

/// On a private moto without the simulator: the console never shows a token (moto's is a
/// fixed text), so `up` times out with the console's last lines; `down --all` then takes down
/// every deployment in every region (after a confirmation naming them) and the shared IAM
/// role; and a region without a default VPC is refused.
#[tokio::test(flavor = "multi_thread")]
async fn timeout_shows_the_console_and_down_all_removes_the_shared_role() {
    let moto = Server::moto();
    let endpoint = format!("http://{}", moto.addr);
    let p = Project::default_workload("ec2wait");
    // An `up` whose hosts never answer (moto runs no instance): it times out after 8 s.
    let timed_out_up = |extra: &[&str]| {
        let mut args = vec!["up", "--ec2", "--allow-cidr", "127.0.0.1", "--wait", "8"];
        args.extend(extra);
        args.extend(["-o", "json"]);
        p.labship_at(&endpoint, &args, &[])
    };

    let out = timed_out_up(&[]);
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::ec2::token_timeout", "{err}");
    let help = err["help"].as_str().unwrap_or_default();
    assert!(help.contains("last console lines"), "{help}");
    assert!(help.contains("--wait"), "{help}");

    // A class of two seats whose hosts time out the same way: their instances and the group
    // they share stay, for `down --all` to take with the rest.
    let class_up = timed_out_up(&["--seats", "2"]);
    // Reported: the roster on stdout, each seat's failure in its row, the error's code on stderr.
    assert!(!class_up.status.success());
    assert!(
        stderr(&class_up).contains("labship::class::seats_failed"),
        "{}",
        stderr(&class_up)
    );
    let roster: serde_json::Value = serde_json::from_slice(&class_up.stdout).expect("the roster");
    assert_eq!(roster["ready"], 0, "{roster}");
    let seat_ids: Vec<String> = class_instances(&endpoint, &p.name)
        .iter()
        .map(|i| i["InstanceId"].as_str().expect("instance id").to_string())
        .collect();
    assert_eq!(seat_ids.len(), 2);
    assert!(class_group(&endpoint, &p.name).is_some());

    // Another deployment in another region (made with the AWS CLI, tagged as labship tags):
    // `down --all` takes down both, after one confirmation that lists them.
    let other = unique("ec2far");
    let tags = |extra: &str| {
        format!(
            "Tags=[{{Key=labship:managed-by,Value=labship}},{{Key=labship:deployment,Value={other}}}{extra}]"
        )
    };
    let far = aws_json(
        &endpoint,
        &[
            "ec2",
            "run-instances",
            "--region",
            "eu-west-1",
            "--image-id",
            "ami-12345678",
            "--instance-type",
            "t3.micro",
            "--tag-specifications",
            &format!("ResourceType=instance,{}", tags("")),
        ],
    );
    let far_id = far["Instances"][0]["InstanceId"]
        .as_str()
        .expect("id")
        .to_string();
    let far_volume = aws_json(
        &endpoint,
        &[
            "ec2",
            "create-volume",
            "--region",
            "eu-west-1",
            "--availability-zone",
            "eu-west-1a",
            "--size",
            "1",
            "--tag-specifications",
            &format!(
                "ResourceType=volume,{}",
                tags(",{Key=labship:volume,Value=workspace}")
            ),
        ],
    )["VolumeId"]
        .as_str()
        .expect("volume id")
        .to_string();
    // Without a terminal to confirm on, nothing happens; the question names both.
    let asked =
        json_error(&p.labship_at(&endpoint, &["down", "--ec2", "--all", "-o", "json"], &[]));
    assert_eq!(asked["code"], "labship::confirm", "{asked}");
    let question = asked.to_string();
    for needle in [
        format!("`{}` in us-east-1", p.name),
        format!("`{other}` in eu-west-1"),
        far_id.clone(),
        format!("data volume {far_volume}"),
    ] {
        assert!(question.contains(&needle), "{needle}: {question}");
    }
    let far_state = || {
        aws_json(
            &endpoint,
            &[
                "ec2",
                "describe-instances",
                "--region",
                "eu-west-1",
                "--instance-ids",
                &far_id,
            ],
        )["Reservations"][0]["Instances"][0]["State"]["Name"]
            .clone()
    };
    assert_eq!(far_state(), "running");

    let down = json(&p.labship_at(
        &endpoint,
        &ec2_down_args(&["--all", "--delete-data", "--purge-images"]),
        &[],
    ));
    assert_eq!(down["deployment"], "all", "{down}");
    assert_eq!(
        down["terminated"].as_array().map(Vec::len),
        Some(4),
        "{down}"
    );
    // The class's seats and the group they shared went too.
    for id in &seat_ids {
        assert!(
            down["terminated"].to_string().contains(id.as_str()),
            "{id}: {down}"
        );
    }
    assert!(class_instances(&endpoint, &p.name).is_empty());
    assert!(
        class_group(&endpoint, &p.name).is_none(),
        "{:?}",
        class_group(&endpoint, &p.name)
    );
    assert!(
        down["data_volumes_deleted"]
            .to_string()
            .contains(&far_volume),
        "{down}"
    );
    assert!(
        down["removed"]
            .to_string()
            .contains(&format!("`{other}` in eu-west-1: instance {far_id}")),
        "{down}"
    );
    assert_eq!(down["iam_removed"], true, "{down}");
    let gone = aws_cli(
        &endpoint,
        &[
            "ec2",
            "describe-volumes",
            "--region",
            "eu-west-1",
            "--volume-ids",
            &far_volume,
        ],
    );
    assert!(!gone.status.success(), "{far_volume} is still there");
    assert_eq!(far_state(), "terminated");
    let iam = iam_client(&endpoint);
    assert!(iam
        .get_role()
        .role_name("labship-instance")
        .send()
        .await
        .is_err());
    assert!(iam
        .get_instance_profile()
        .instance_profile_name("labship-instance")
        .send()
        .await
        .is_err());

    // No default VPC: refused with the fix.
    let ec2 = ec2_client(&endpoint);
    let vpcs = ec2
        .describe_vpcs()
        .filters(filter("is-default", "true"))
        .send()
        .await
        .expect("DescribeVpcs");
    let vpc = vpcs.vpcs()[0].vpc_id().expect("vpc id").to_string();
    let subnets = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc))
        .send()
        .await
        .expect("DescribeSubnets");
    for s in subnets.subnets() {
        ec2.delete_subnet()
            .subnet_id(s.subnet_id().expect("subnet id"))
            .send()
            .await
            .expect("DeleteSubnet");
    }
    let igws = ec2
        .describe_internet_gateways()
        .filters(filter("attachment.vpc-id", &vpc))
        .send()
        .await
        .expect("DescribeInternetGateways");
    for g in igws.internet_gateways() {
        let id = g.internet_gateway_id().expect("igw id");
        ec2.detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(&vpc)
            .send()
            .await
            .expect("DetachInternetGateway");
        ec2.delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await
            .expect("DeleteInternetGateway");
    }
    ec2.delete_vpc()
        .vpc_id(&vpc)
        .send()
        .await
        .expect("DeleteVpc");
    let err = json_error(&p.labship_at(
        &endpoint,
        &[
            "up",
            "--ec2",
            "--dry-run",
            "--allow-cidr",
            "127.0.0.1",
            "-o",
            "json",
        ],
        &[],
    ));
    assert_eq!(err["code"], "labship::ec2::network", "{err}");
    assert!(
        err["help"]
            .as_str()
            .unwrap_or_default()
            .contains("create-default-vpc"),
        "{err}"
    );
}

/// Ctrl-C while the instance boots (and the upload may still run): what is left is tagged,
/// a second `up` reuses it (finishing the push when needed), and `down` removes it all.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_up_is_resumed_by_the_next_one() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2int");
    let name = p.name.clone();
    let port = free_port();
    let port_s = port.to_string();

    let mut cmd = p.command(&ec2_up_args(&port_s));
    cmd.env("AWS_ENDPOINT_URL", &sim)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("start labship up");
    let ec2 = ec2_client(&rig.aws_endpoint);
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let launched = loop {
        let out = ec2
            .describe_instances()
            .filters(filter("tag:labship:deployment", &name))
            .send()
            .await
            .expect("DescribeInstances");
        if let Some(i) = out
            .reservations()
            .first()
            .and_then(|r| r.instances().first())
        {
            break i.instance_id().expect("id").to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("labship up ended ({status}) before launching");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no instance after 600s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the interrupted up should not succeed");

    let again = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert!(
        again["action"] == "resumed" || again["action"] == "unchanged",
        "{again}"
    );
    assert_eq!(
        again["instance_id"],
        launched.as_str(),
        "a second instance was launched"
    );
    assert_eq!(report_answers(&again), 200, "{again}");

    json(&p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &[],
    ));
    assert_nothing_left(&name).await;
}

/// A caller without EC2 permissions is told which action is missing and where the policy is.
/// An operator (no IAM write, as infra/operator-policy.json) in an account without the instance
/// role: told who must create it and how, before a build and before anything of the deployment
/// exists.
#[test]
fn an_operator_without_the_instance_role_is_told_and_nothing_is_created() {
    let moto = Server::moto_with_iam(3);
    let endpoint = format!("http://{}", moto.addr);
    let (key_id, secret) = limited_user(
        &endpoint,
        "operator",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","ecr:*","ssm:*","sts:*","iam:GetInstanceProfile","iam:PassRole"],"Resource":"*"}]}"#,
    );
    // A real context (never built: the refusal comes first).
    let p = Project::with_files("ec2operator", &[("Dockerfile", "FROM scratch\n")]);
    let out = p
        .command(&["up", "--ec2", "--allow-cidr", "127.0.0.1/32", "-o", "json"])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .output()
        .expect("run labship");
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::ec2::instance_role_missing", "{err}");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/labship/labship-instance") && message.contains("iam:CreateRole"),
        "{err}"
    );
    assert!(
        err["help"]
            .as_str()
            .unwrap_or_default()
            .contains("infra/README.md"),
        "{err}"
    );
    // What the operator itself sees (moto refuses unknown keys now).
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(&key_id, &secret, None, None, "test"),
            ),
        )
        .build();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let groups = ec2
            .describe_security_groups()
            .filters(filter("tag-key", "labship:deployment"))
            .send()
            .await
            .expect("DescribeSecurityGroups");
        assert!(groups.security_groups().is_empty(), "{groups:?}");
        let instances = ec2
            .describe_instances()
            .send()
            .await
            .expect("DescribeInstances");
        assert!(instances.reservations().is_empty(), "{instances:?}");
        let params = aws_sdk_ssm::Client::new(&sdk)
            .describe_parameters()
            .parameter_filters(
                aws_sdk_ssm::types::ParameterStringFilter::builder()
                    .key("Name")
                    .option("BeginsWith")
                    .values("/labship/")
                    .build()
                    .expect("filter"),
            )
            .send()
            .await
            .expect("DescribeParameters");
        assert!(params.parameters().is_empty(), "{params:?}");
        let profile = aws_sdk_iam::Client::new(&sdk)
            .get_instance_profile()
            .instance_profile_name("labship-instance")
            .send()
            .await;
        assert!(profile.is_err(), "{profile:?}");
    });
}

#[test]
fn access_denied_names_the_ec2_action_and_labships_policy() {
    let moto = Server::moto_with_iam(3);
    let endpoint = format!("http://{}", moto.addr);
    let (key_id, secret) = limited_user(
        &endpoint,
        "ecr-only",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:*"],"Resource":"*"}]}"#,
    );
    let p = Project::empty("ec2denied");
    let out = p
        .command(&[
            "up",
            "--ec2",
            "--dry-run",
            "--allow-cidr",
            "127.0.0.1",
            "-o",
            "json",
        ])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .output()
        .expect("run labship");
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::aws::access_denied", "{err}");
    // The first reads run together: whichever is refused first is named.
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ec2:DescribeInstanceTypes")
            || message.contains("ec2:DescribeInstances ")
            || message.contains("ec2:DescribeVolumes "),
        "{err}"
    );
    assert!(
        err["help"]
            .as_str()
            .unwrap_or_default()
            .contains("infra/operator-policy.json"),
        "{err}"
    );
}

/// A deployment's own role, as IAM lists it (under `/labship/deployments/<region>/<name>/`):
/// its name and its one inline policy.
fn deployment_role(name: &str) -> Option<(String, Value)> {
    let endpoint = rig().aws_endpoint.clone();
    let roles = aws_json(
        &endpoint,
        &[
            "iam",
            "list-roles",
            "--path-prefix",
            "/labship/deployments/",
        ],
    );
    let role = roles["Roles"].as_array()?.iter().find(|r| {
        r["Path"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("/{name}/")))
    })?["RoleName"]
        .as_str()?
        .to_string();
    let policy = aws_json(
        &endpoint,
        &[
            "iam",
            "get-role-policy",
            "--role-name",
            &role,
            "--policy-name",
            "labship-deployment",
        ],
    );
    let document = match &policy["PolicyDocument"] {
        Value::String(text) => {
            serde_json::from_str(&percent_encoding::percent_decode_str(text).decode_utf8_lossy())
                .expect("the policy as JSON")
        }
        doc => doc.clone(),
    };
    Some((role, document))
}

/// The S3 resources a deployment's role reads (its `ReadItsInputs` statement).
fn reads(policy: &Value) -> Vec<String> {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["Sid"] == "ReadItsInputs")
        .flat_map(|s| match &s["Resource"] {
            Value::Array(all) => all
                .iter()
                .filter_map(|r| r.as_str())
                .map(String::from)
                .collect(),
            one => one
                .as_str()
                .map(String::from)
                .into_iter()
                .collect::<Vec<_>>(),
        })
        .collect()
}

/// The instance profile an instance runs with (EC2's association), by name.
fn profile_of(instance: &str) -> String {
    let found = aws_json(
        &rig().aws_endpoint,
        &[
            "ec2",
            "describe-iam-instance-profile-associations",
            "--filters",
            &format!("Name=instance-id,Values={instance}"),
        ],
    );
    found["IamInstanceProfileAssociations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["State"] == "associated")
        .filter_map(|a| a["IamInstanceProfile"]["Arn"].as_str())
        .filter_map(|arn| arn.rsplit('/').next())
        .map(String::from)
        .next_back()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployments_inputs_are_copied_by_its_host_and_other_inputs_replace_its_container() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2in");
    p.write("docker/resources/marker.txt", &p.name);
    let name = p.name.clone();
    let bucket = unique("labship-in");
    aws_json(
        &rig.aws_endpoint,
        &["s3api", "create-bucket", "--bucket", &bucket],
    );
    s3_put(
        &rig.aws_endpoint,
        &bucket,
        "points.csv",
        "v\n1\n2\n",
        "us-east-1",
    );
    s3_put(
        &rig.aws_endpoint,
        &bucket,
        "data/more/extra.txt",
        "extra\n",
        "us-east-1",
    );
    // The project's own settings (its name, the rig's base image), then the inputs.
    let toml = std::fs::read_to_string(p.path().join("labship.toml")).expect("labship.toml");
    p.write(
        "labship.toml",
        &format!("{toml}[data]\ninputs = [\"s3://{bucket}/points.csv\"]\n"),
    );
    let port = free_port();
    let port_s = port.to_string();
    let first = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(first["action"], "created", "{first}");
    // The host copied it: Jupyter lists it in the workspace, at inputs/.
    let saved = p.path().join("saved-1");
    let backup = |dest: &std::path::Path| backup_ec2_to(&p, &sim, dest);
    backup(&saved);
    assert_eq!(
        std::fs::read_to_string(saved.join("inputs/points.csv")).expect("the input"),
        "v\n1\n2\n"
    );
    // Its host runs with a role of its own that reads exactly that input.
    let (role, policy) = deployment_role(&name).expect("the deployment's own role");
    let instance = first["instance_id"]
        .as_str()
        .expect("instance id")
        .to_string();
    assert_eq!(profile_of(&instance), role);
    assert_eq!(
        reads(&policy),
        [format!("arn:aws:s3:::{bucket}/points.csv")],
        "{policy}"
    );
    let again = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(again["action"], "unchanged", "the same inputs: {again}");

    // Another input: the plan says so, and the container is replaced on the same instance.
    p.write(
        "labship.toml",
        &format!(
            "{toml}[data]\ninputs = [\"s3://{bucket}/points.csv\", \"s3://{bucket}/data/\"]\n"
        ),
    );
    let mut dry = ec2_up_args(&port_s);
    dry.push("--dry-run");
    let plan = json(&p.labship_at(&sim, &dry, &[]));
    assert_eq!(plan["action"], "replace", "{plan}");
    assert!(
        plan["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("inputs changed"),
        "{plan}"
    );
    let replaced = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(replaced["action"], "replaced", "{replaced}");
    assert_eq!(replaced["instance_id"], first["instance_id"]);
    let saved = p.path().join("saved-2");
    backup(&saved);
    assert_eq!(
        std::fs::read_to_string(saved.join("inputs/data/more/extra.txt")).expect("the folder"),
        "extra\n"
    );
    assert!(saved.join("inputs/points.csv").exists());
    // The same role, its policy put again: the folder too.
    let (same, policy) = deployment_role(&name).expect("the deployment's own role");
    assert_eq!(same, role);
    assert_eq!(
        reads(&policy),
        [
            format!("arn:aws:s3:::{bucket}/data/*"),
            format!("arn:aws:s3:::{bucket}/points.csv")
        ],
        "{policy}"
    );
    // Read-only, as the engine says.
    let inputs = mount_of(&format!("labship-ec2-{name}"), "/inputs");
    assert_eq!(inputs["RW"], false, "{inputs}");
    // A token rotation makes a new container with the inputs the host has.
    let rotated = p.labship_at(&sim, &["token", "--rotate", "--ec2"], &[]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let saved = p.path().join("saved-3");
    backup(&saved);
    assert!(saved.join("inputs/data/more/extra.txt").exists());
    json(&p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &[],
    ));
    assert_nothing_left(&name).await;
}

/// A deployment launched on the shared role (no inputs) that gains inputs is moved to a role
/// of its own before its host copies them; the plan says so; `down` removes the role.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_that_gains_inputs_moves_to_a_role_of_its_own() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2mv");
    p.write("docker/resources/marker.txt", &p.name);
    let name = p.name.clone();
    let bucket = unique("labship-mv");
    aws_json(
        &rig.aws_endpoint,
        &["s3api", "create-bucket", "--bucket", &bucket],
    );
    s3_put(
        &rig.aws_endpoint,
        &bucket,
        "week1/a.csv",
        "a\n1\n",
        "us-east-1",
    );
    let port = free_port();
    let port_s = port.to_string();
    let first = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(first["action"], "created", "{first}");
    let instance = first["instance_id"]
        .as_str()
        .expect("instance id")
        .to_string();
    assert_eq!(profile_of(&instance), "labship-instance");
    assert_eq!(
        deployment_role(&name),
        None,
        "no inputs, no role of its own"
    );

    let toml = std::fs::read_to_string(p.path().join("labship.toml")).expect("labship.toml");
    p.write(
        "labship.toml",
        &format!("{toml}[data]\ninputs = [\"s3://{bucket}/week1/\"]\n"),
    );
    let mut dry = ec2_up_args(&port_s);
    dry.push("--dry-run");
    let plan = json(&p.labship_at(&sim, &dry, &[]));
    assert_eq!(plan["action"], "replace", "{plan}");
    let own = &plan["iam"]["own"];
    assert_eq!(own["moves_instance"], true, "{plan}");
    assert_eq!(own["boundary"], "labship-deployment-boundary", "{plan}");
    assert_eq!(
        reads(&own["policy"]),
        [format!("arn:aws:s3:::{bucket}/week1/*")],
        "{plan}"
    );
    // The dry run made nothing.
    assert_eq!(deployment_role(&name), None);
    // A role of that name someone else made, under its path, trusted by another account:
    // not labship's as it is, so `up` makes it again, trusted by EC2 alone.
    let squatted = labship::aws::iam::deployment_role_name("us-east-1", &name);
    let foreign = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"sts:AssumeRole"}]}"#;
    aws_json(
        &rig.aws_endpoint,
        &[
            "iam",
            "create-role",
            "--role-name",
            &squatted,
            "--path",
            &format!("/labship/deployments/us-east-1/{name}/"),
            "--assume-role-policy-document",
            foreign,
        ],
    );

    let replaced = p.labship_at(&sim, &ec2_up_args(&port_s), &[]);
    let moved = json(&replaced);
    assert_eq!(moved["action"], "replaced", "{moved}");
    assert_eq!(moved["instance_id"], first["instance_id"]);
    assert!(
        stderr(&replaced).contains("from the shared role"),
        "{}",
        stderr(&replaced)
    );
    let (role, policy) = deployment_role(&name).expect("the deployment's own role");
    assert_eq!(profile_of(&instance), role);
    assert_eq!(role, squatted);
    let trust = aws_json(
        &rig.aws_endpoint,
        &["iam", "get-role", "--role-name", &role],
    );
    let trust = trust["Role"]["AssumeRolePolicyDocument"].to_string();
    assert!(
        trust.contains("ec2.amazonaws.com") && !trust.contains("999999999999"),
        "{trust}"
    );
    // Exactly what the plan showed.
    assert_eq!(policy, *own.get("policy").expect("the planned policy"));
    let saved = p.path().join("saved");
    backup_ec2_to(&p, &sim, &saved);
    assert_eq!(
        std::fs::read_to_string(saved.join("inputs/week1/a.csv")).expect("the input"),
        "a\n1\n"
    );
    json(&p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &[],
    ));
    assert_nothing_left(&name).await;
}

/// An operator (no iam:CreatePolicy) whose deployment has inputs, in an account without the
/// deployments' permissions boundary: told who makes it and how, before a build, and nothing
/// is made.
#[test]
fn an_operator_without_the_deployment_boundary_is_told_and_nothing_is_created() {
    let moto = Server::moto_with_iam(3);
    let endpoint = format!("http://{}", moto.addr);
    let (key_id, secret) = limited_user(
        &endpoint,
        "operator",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","ecr:*","ssm:*","sts:*","s3:*","iam:GetPolicy","iam:GetInstanceProfile","iam:ListRoles","iam:CreateRole","iam:PutRolePolicy","iam:CreateInstanceProfile","iam:AddRoleToInstanceProfile","iam:PassRole"],"Resource":"*"}]}"#,
    );
    let operator = (key_id.as_str(), secret.as_str());
    let bucket = unique("labship-op");
    for args in [
        vec!["s3api", "create-bucket", "--bucket", bucket.as_str()],
        vec![
            "s3api",
            "put-object",
            "--bucket",
            bucket.as_str(),
            "--key",
            "week1/a.csv",
        ],
    ] {
        let out = aws_cli_as(&endpoint, &args, operator);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let p = Project::default_workload("ec2opin");
    let toml = std::fs::read_to_string(p.path().join("labship.toml")).expect("labship.toml");
    p.write(
        "labship.toml",
        &format!("{toml}[data]\ninputs = [\"s3://{bucket}/week1/\"]\n"),
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let err = json_error(&p.labship_at(
        &endpoint,
        &["up", "--ec2", "--allow-cidr", "127.0.0.1", "-o", "json"],
        &env,
    ));
    assert_eq!(err["code"], "labship::ec2::boundary_missing", "{err}");
    let message = unwrapped(err["message"].as_str().unwrap_or_default());
    assert!(
        message.contains("labship-deployment-boundary") && message.contains("iam:CreatePolicy"),
        "{err}"
    );
    assert!(
        unwrapped(err["help"].as_str().unwrap_or_default())
            .contains("file://infra/deployment-boundary-policy.json"),
        "the fix: {err}"
    );
    // Nothing made: no instance, no group, no role, no token, no image built.
    for (args, field) in [
        (vec!["ec2", "describe-instances"], "Reservations"),
        (
            vec![
                "ec2",
                "describe-security-groups",
                "--filters",
                "Name=tag-key,Values=labship:deployment",
            ],
            "SecurityGroups",
        ),
        (
            vec!["iam", "list-roles", "--path-prefix", "/labship/"],
            "Roles",
        ),
        (
            vec![
                "ssm",
                "describe-parameters",
                "--parameter-filters",
                "Key=Name,Option=BeginsWith,Values=/labship/",
            ],
            "Parameters",
        ),
    ] {
        let listed = aws_cli_as(&endpoint, &args, operator);
        let value: Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        assert!(
            value[field].as_array().is_none_or(Vec::is_empty),
            "{args:?}: {value}"
        );
    }
    assert!(
        docker_ok(&["images", "-q", &format!("labship/{}", p.name)])
            .trim()
            .is_empty(),
        "built before the refusal"
    );
}
