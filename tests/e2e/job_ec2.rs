//! `labship run --ec2`: a job on a host of its own, in the instance simulator, which runs
//! the job host's user-data for real (the job's container on this machine's engine, the AWS
//! CLI against moto), with its data from moto's S3 and its results back there. The AWS CLI
//! (against moto itself) is the witness of what is left.

use serde_json::{json, Value};

use crate::support::*;

/// A notebook with a `parameters` cell that reads a CSV input and a folder input, fans work
/// out with multiprocessing and writes a CSV, a PNG (standard library only) and what it
/// found; `label = "fail"` makes its last cell raise, `pause` makes it sleep first.
fn analysis() -> String {
    let code = |tags: &[&str], source: &str| {
        json!({"cell_type": "code", "execution_count": null, "metadata": {"tags": tags},
               "outputs": [], "source": source})
    };
    json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            code(&["parameters"], "n = 3\nlabel = 'default'\npause = 0\n"),
            code(&[], "import csv, os, time\ntime.sleep(pause)\ntotal = sum(int(r['v']) for r in csv.DictReader(open('inputs/points.csv')))\nextra = open('inputs/data/more/extra.txt').read().strip()\nlocked = 'locked' if not os.access('inputs/data', os.W_OK) else 'writable'\nodd = open('inputs/.v1,\"a\":b.txt').read().strip() if os.path.exists('inputs/.v1,\"a\":b.txt') else '-'\nown = 'own' if os.path.exists('inputs/README.txt') else '-'\n"),
            code(&[], "from multiprocessing import Pool\n\ndef square(x):\n    return x * x\n\nwith Pool(2) as pool:\n    squares = pool.map(square, range(n))\nprint(label, squares)\n"),
            code(&[], "import struct, zlib\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/found.txt', 'w').write(f'{total} {extra} {locked} {odd} {own}\\n')\nwith open('outputs/squares.csv', 'w') as f:\n    f.write('x,square\\n' + ''.join(f'{i},{s}\\n' for i, s in enumerate(squares)))\ndef chunk(kind, data):\n    c = struct.pack('>I', len(data)) + kind + data\n    return c + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)\nrows = b''.join(b'\\x00' + bytes([min(255, s)] * n) for s in squares)\npng = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', n, n, 8, 0, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')\nopen('outputs/plot.png', 'wb').write(png)\n"),
            code(&[], "if label == 'fail':\n    raise ValueError('asked to fail')\n"),
        ]
    })
    .to_string()
}

/// The job hosts of a run, as the AWS CLI describes them: (instance id, state), once none is
/// shutting-down any more (waited for up to 60 s).
fn hosts_of(endpoint: &str, run_id: &str) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let described = aws_json(
            endpoint,
            &[
                "ec2",
                "describe-instances",
                "--filters",
                &format!("Name=tag:labship:job,Values={run_id}"),
            ],
        );
        let hosts: Vec<(String, String)> = described["Reservations"]
            .as_array()
            .expect("reservations")
            .iter()
            .flat_map(|r| r["Instances"].as_array().cloned().unwrap_or_default())
            .map(|i| {
                (
                    i["InstanceId"].as_str().unwrap_or_default().to_string(),
                    i["State"]["Name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        if hosts.iter().all(|h| h.1 != "shutting-down") || std::time::Instant::now() > deadline {
            return hosts;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// The job hosts' security group: there (one per VPC), with no inbound rule.
fn assert_job_group_closed(endpoint: &str) {
    let described = aws_json(
        endpoint,
        &[
            "ec2",
            "describe-security-groups",
            "--filters",
            "Name=tag-key,Values=labship:job-group",
        ],
    );
    let groups = described["SecurityGroups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "one per VPC: {described}");
    assert_eq!(groups[0]["GroupName"], "labship.job-hosts");
    assert_eq!(
        groups[0]["IpPermissions"],
        json!([]),
        "nothing reaches a job host: {described}"
    );
}

/// An input whose name a `docker -v`/`--mount` option would split, and a glob leave out.
const ODD: &str = ".v1,\"a\":b.txt";

/// A project with the analysis notebook, its input bucket filled and an output bucket: the
/// project, the output bucket, and the addresses a run gets (the CSV input, the folder input,
/// the output).
fn project(prefix: &str) -> (Project, String, [String; 3]) {
    let endpoint = rig().aws_endpoint;
    let p = Project::default_workload(prefix);
    // A file of its own, so that its layers are not all in the registry already.
    p.write("docker/resources/marker.txt", &p.name);
    // An inputs/ folder of the image's own: a run's inputs land in it, not under it.
    p.write(
        "docker/resources/inputs/README.txt",
        "the image's inputs/\n",
    );
    p.write("analysis.ipynb", &analysis());
    let (input, output) = (unique("labship-in"), unique("labship-out"));
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &input]);
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &output]);
    s3_put(&endpoint, &input, "points.csv", "v\n1\n2\n3\n", "us-east-1");
    // A name with a comma, quotes and a colon, which a mount's options hold too.
    s3_put(&endpoint, &input, ODD, "odd\n", "us-east-1");
    s3_put(
        &endpoint,
        &input,
        "data/more/extra.txt",
        "extra\n",
        "us-east-1",
    );
    let addresses = [
        format!("s3://{input}/points.csv"),
        format!("s3://{input}/data"),
        format!("s3://{output}/results"),
    ];
    (p, output, addresses)
}

/// The inline policy of a run's own role as the AWS CLI shows it, or None when the role or
/// its policy is gone.
fn job_role_policy(endpoint: &str, run_id: &str) -> Option<Value> {
    let out = aws_cli(
        endpoint,
        &[
            "iam",
            "get-role-policy",
            "--role-name",
            &format!("labship-job-{run_id}"),
            "--policy-name",
            "labship-job",
        ],
    );
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("NoSuchEntity"), "{err}");
        return None;
    }
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // The CLI decodes the document; a string is decoded here.
    match &answer["PolicyDocument"] {
        Value::String(text) => Some(serde_json::from_str(text).expect("policy JSON")),
        doc => Some(doc.clone()),
    }
}

/// A statement of a policy, by its Sid.
fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
    policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("{sid} in {policy}"))
}

/// A run's role and instance profile are gone (the AWS CLI's view).
fn assert_job_role_gone(endpoint: &str, run_id: &str) {
    let name = format!("labship-job-{run_id}");
    for args in [
        vec!["iam", "get-role", "--role-name", name.as_str()],
        vec![
            "iam",
            "get-instance-profile",
            "--instance-profile-name",
            name.as_str(),
        ],
    ] {
        let out = aws_cli(endpoint, &args);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NoSuchEntity"),
            "{args:?} is still there: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The account's own IAM policies under `/labship/` (the job boundary), as the AWS CLI lists
/// them.
fn labship_policies(endpoint: &str) -> Value {
    aws_json(
        endpoint,
        &[
            "iam",
            "list-policies",
            "--scope",
            "Local",
            "--path-prefix",
            "/labship/",
        ],
    )
}

fn files_of(report: &Value) -> Vec<&str> {
    report["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn a_notebook_runs_on_a_host_of_its_own_with_s3_data_and_the_host_ends_itself() {
    let endpoint = rig().aws_endpoint;
    let sim = sim_endpoint();
    let (p, output, [points, data, out_uri]) = project("jobec2");
    let odd = points.replace("points.csv", ODD);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "analysis.ipynb",
            "--ec2",
            "--input",
            &points,
            "--input",
            &data,
            "--input",
            &odd,
            "--output-uri",
            &out_uri,
            "-o",
            "json",
        ];
        args.extend(extra);
        p.labship_at(&sim, &args, &[])
    };

    let out = run(&["-p", "n=5", "-p", "label=demo"]);
    let report = json(&out);
    assert_eq!(report["state"], "succeeded", "{report}");
    assert_eq!(report["target"], "ec2", "{report}");
    assert_eq!(report["cells"], 6, "{report}");
    assert_eq!(report["parameters"], json!({"n": 5, "label": "demo"}));
    let err = stderr(&out);
    assert!(err.contains("cell 6 of 6"), "progress on stderr: {err}");
    let run_id = report["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        files_of(&report),
        [
            "analysis.ipynb",
            "outputs/found.txt",
            "outputs/plot.png",
            "outputs/squares.csv",
            "run.json"
        ]
    );
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/found.txt")).expect("found"),
        "6 extra locked odd own\n",
        "every input, read-only, beside the image's own inputs/"
    );
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/squares.csv")).expect("csv"),
        "x,square\n0,0\n1,1\n2,4\n3,9\n4,16\n"
    );
    let png = std::fs::read(results.join("outputs/plot.png")).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let executed = std::fs::read_to_string(results.join("analysis.ipynb")).expect("executed");
    assert!(executed.contains("injected-parameters"), "{executed}");
    assert!(
        executed.contains("n = 5"),
        "the injected parameter is in the notebook"
    );
    assert!(executed.contains("demo [0, 1, 4, 9, 16]"), "{executed}");

    // In S3 as the AWS CLI lists it: the results, run.json saying so, and the job as staged.
    let prefix = format!("results/{run_id}");
    assert_eq!(report["output_uri"], format!("{out_uri}/{run_id}/"));
    assert_eq!(report["uploaded"], true);
    let keys = s3_keys(&endpoint, &output, &format!("{prefix}/"));
    for key in [
        "analysis.ipynb",
        "outputs/found.txt",
        "outputs/plot.png",
        "outputs/squares.csv",
        "run.json",
        ".labship-host.json",
        ".labship-job/job.json",
    ] {
        assert!(
            keys.contains(&format!("{prefix}/{key}")),
            "{key} in S3: {keys:?}"
        );
    }
    let in_s3 = aws_cli(
        &endpoint,
        &["s3", "cp", &format!("s3://{output}/{prefix}/run.json"), "-"],
    );
    let in_s3: Value = serde_json::from_slice(&in_s3.stdout).expect("run.json in S3");
    assert_eq!(in_s3["state"], "succeeded");
    // A quick pull and copy: the host gave the job its whole deadline (the default hour).
    let host_end = aws_cli(
        &endpoint,
        &[
            "s3",
            "cp",
            &format!("s3://{output}/{prefix}/.labship-host.json"),
            "-",
        ],
    );
    let host_end: Value = serde_json::from_slice(&host_end.stdout).expect("the host's end");
    assert_eq!(
        host_end["job_timeout"], report["timeout_secs"],
        "{host_end}"
    );
    assert_eq!(report["time_given_secs"], Value::Null, "{report}");

    // The host ended itself, and its own role went with it.
    let hosts = hosts_of(&endpoint, &run_id);
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].1, "terminated", "{hosts:?}");
    assert_job_role_gone(&endpoint, &run_id);
    assert_job_group_closed(&endpoint);
    // No deployment sees it.
    let status = json(&p.labship_at(&sim, &["status", "--ec2", "-o", "json"], &[]));
    assert!(
        !status.to_string().contains(&hosts[0].0),
        "a job host is not a deployment: {status}"
    );

    // A failing cell: exit 1, the cell and its error said, what ran kept, the host gone.
    let out = run(&["-p", "label=fail"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report["state"], "failed", "{report}");
    assert_eq!(
        report["failed_cell"],
        json!({"cell": 6, "ename": "ValueError", "evalue": "asked to fail"})
    );
    assert!(
        unwrapped(&stderr(&out)).contains("cell 6 of 6 failed: ValueError: asked to fail"),
        "{}",
        stderr(&out)
    );
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    let executed = std::fs::read_to_string(results.join("analysis.ipynb")).expect("partial");
    assert!(executed.contains("asked to fail"), "the traceback is kept");
    let run_id = report["run_id"].as_str().expect("run id");
    let hosts = hosts_of(&endpoint, run_id);
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].1, "terminated", "{hosts:?}");
    assert_job_role_gone(&endpoint, run_id);
    assert_job_group_closed(&endpoint);
}

#[test]
fn a_detached_run_on_ec2_goes_on_without_labship_and_its_deadline_ends_it() {
    let endpoint = rig().aws_endpoint;
    let sim = sim_endpoint();
    let (p, _, [points, data, out_uri]) = project("jobec2d");
    let common = [
        "--input",
        &points,
        "--input",
        &data,
        "--output-uri",
        &out_uri,
        "-o",
        "json",
    ];

    // Detached: labship is gone once the host runs; the job goes on.
    let mut args = vec!["run", "analysis.ipynb", "--ec2", "--detach", "-p", "n=4"];
    args.extend(common);
    let started = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(started["state"], "running", "{started}");
    let run_id = started["run_id"].as_str().expect("run id").to_string();
    let instance = started["container"].as_str().expect("instance").to_string();
    assert!(instance.starts_with("i-"), "{started}");
    // Its host runs with a role of its own, which reads exactly this run's job and inputs
    // and writes exactly its folder.
    let described = aws_json(
        &endpoint,
        &["ec2", "describe-instances", "--instance-ids", &instance],
    );
    let profile = described["Reservations"][0]["Instances"][0]["IamInstanceProfile"]["Arn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        profile.ends_with(&format!(
            ":instance-profile/labship/jobs/us-east-1/labship-job-{run_id}"
        )),
        "{described}"
    );
    let role = aws_json(
        &endpoint,
        &[
            "iam",
            "get-role",
            "--role-name",
            &format!("labship-job-{run_id}"),
        ],
    );
    assert!(
        role["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"]
            .as_str()
            .unwrap_or_default()
            .ends_with(":policy/labship/labship-job-boundary"),
        "{role}"
    );
    let policy = job_role_policy(&endpoint, &run_id).expect("the run's role policy");
    let (input, output) = (
        points["s3://".len()..].split('/').next().expect("bucket"),
        out_uri["s3://".len()..].split('/').next().expect("bucket"),
    );
    assert_eq!(
        statement(&policy, "ReadTheJobAndItsInputs")["Resource"],
        json!([
            format!("arn:aws:s3:::{input}/data/*"),
            format!("arn:aws:s3:::{input}/points.csv"),
            format!("arn:aws:s3:::{output}/results/{run_id}/.labship-job/*"),
        ]),
        "{policy}"
    );
    assert_eq!(
        statement(&policy, "PutTheResultsInTheRunsFolder")["Resource"],
        format!("arn:aws:s3:::{output}/results/{run_id}/*"),
        "{policy}"
    );
    assert!(
        !policy.to_string().contains("ssm:"),
        "no parameter, no agent: {policy}"
    );
    let runs = json(&p.labship_at(&sim, &["runs", "--ec2", "-o", "json"], &[]));
    assert!(
        runs["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .any(|r| r["run_id"] == run_id.as_str()),
        "runs lists it from its host's tags: {runs}"
    );

    // `fetch` from another machine (no record of the run there): found by its host's tags.
    let elsewhere = tempfile::tempdir().expect("runs dir");
    let dir = elsewhere.path().to_str().expect("path");
    let fetched = json(&p.labship_at(
        &sim,
        &["fetch", &run_id, "--ec2", "--runs-dir", dir, "-o", "json"],
        &[],
    ));
    assert_eq!(fetched["state"], "succeeded", "{fetched}");
    assert_eq!(fetched["parameters"], json!({"n": 4}));
    assert!(
        elsewhere
            .path()
            .join(&run_id)
            .join("outputs/squares.csv")
            .exists(),
        "{fetched}"
    );
    assert_job_role_gone(&endpoint, &run_id);
    assert_eq!(hosts_of(&endpoint, &run_id)[0].1, "terminated");
    assert_job_group_closed(&endpoint);

    // Past its deadline: the runner stops, the host puts what ran and ends itself.
    let mut args = vec![
        "run",
        "analysis.ipynb",
        "--ec2",
        "-p",
        "pause=600",
        "--timeout",
        "30s",
    ];
    args.extend(common);
    let out = p.labship_at(&sim, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report["state"], "timed_out", "{report}");
    let run_id = report["run_id"].as_str().expect("run id");
    assert!(
        files_of(&report).contains(&"analysis.ipynb"),
        "what ran is kept: {report}"
    );
    assert_eq!(hosts_of(&endpoint, run_id)[0].1, "terminated");
    assert_job_group_closed(&endpoint);
}

/// An operator in an account without the job hosts' permissions boundary is told who makes
/// it and how, and nothing is made.
#[test]
fn an_operator_without_the_job_boundary_is_told_and_nothing_is_created() {
    let moto = Server::moto_with_iam(3);
    let endpoint = format!("http://{}", moto.addr);
    // An operator's reach, less what moto cannot judge (conditions): no CreatePolicy.
    let (key_id, secret) = limited_user(
        &endpoint,
        "operator",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","ecr:*","ssm:*","sts:*","s3:*","iam:GetPolicy","iam:ListRoles","iam:CreateRole","iam:PutRolePolicy","iam:CreateInstanceProfile","iam:AddRoleToInstanceProfile","iam:PassRole"],"Resource":"*"}]}"#,
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let output = unique("labship-out");
    let operator = (key_id.as_str(), secret.as_str());
    let made = aws_cli_as(
        &endpoint,
        &["s3api", "create-bucket", "--bucket", &output],
        operator,
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // A real context (never built: the refusal comes first).
    let p = Project::with_files("jobboundary", &[("Dockerfile", "FROM scratch\n")]);
    p.write("analysis.ipynb", &analysis());
    let out_uri = format!("s3://{output}/results");
    let out = p.labship_at(
        &endpoint,
        &[
            "run",
            "analysis.ipynb",
            "--ec2",
            "--output-uri",
            &out_uri,
            "-o",
            "json",
        ],
        &env,
    );
    let err = json_error(&out);
    assert_eq!(err["code"], "labship::ec2::boundary_missing", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("iam:CreatePolicy"),
        "{err}"
    );
    assert!(
        err["help"]
            .as_str()
            .unwrap_or_default()
            .contains("file://infra/job-boundary-policy.json"),
        "the fix: {err}"
    );
    // Nothing made: no host, no role, nothing staged, no run folder.
    for (args, field) in [
        (vec!["ec2", "describe-instances"], "Reservations"),
        (
            vec!["iam", "list-roles", "--path-prefix", "/labship/jobs/"],
            "Roles",
        ),
        (
            vec!["s3api", "list-objects-v2", "--bucket", output.as_str()],
            "Contents",
        ),
    ] {
        let listed = aws_cli_as(&endpoint, &args, operator);
        let value: Value = serde_json::from_slice(&listed.stdout).unwrap_or(json!({}));
        assert!(
            value[field].as_array().is_none_or(Vec::is_empty),
            "{args:?}: {value}"
        );
    }
    assert!(
        !p.path().join("runs").exists()
            || std::fs::read_dir(p.path().join("runs"))
                .expect("runs")
                .next()
                .is_none()
    );
}

/// A run's role is made (with the boundary, when missing) and kept while its host lives;
/// `down --all` then removes it with the job hosts' group and the boundary once the host is
/// gone.
#[test]
fn down_all_removes_the_job_roles_group_and_boundary_once_no_job_host_is_left() {
    // A moto of its own: the boundary and the shared role are account-wide.
    let moto = Server::moto();
    let endpoint = format!("http://{}", moto.addr);
    let output = unique("labship-out");
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &output]);
    let p = Project::default_workload("jobrole");
    p.write("analysis.ipynb", &analysis());
    let out_uri = format!("s3://{output}/results");
    // Detached: this moto runs no user-data.
    let started = json(&p.labship_at(
        &endpoint,
        &[
            "run",
            "analysis.ipynb",
            "--ec2",
            "--detach",
            "--output-uri",
            &out_uri,
            "-o",
            "json",
        ],
        &[],
    ));
    let instance = started["container"].as_str().expect("instance").to_string();
    let run_id = started["run_id"].as_str().expect("run id").to_string();
    let boundary = labship_policies(&endpoint);
    assert_eq!(
        boundary["Policies"][0]["PolicyName"], "labship-job-boundary",
        "{boundary}"
    );
    assert!(job_role_policy(&endpoint, &run_id).is_some());
    assert_job_group_closed(&endpoint);
    // A job host still there keeps its role, the group and the boundary.
    let kept = json(&p.labship_at(
        &endpoint,
        &["down", "--all", "--ec2", "--yes", "-o", "json"],
        &[],
    ));
    assert!(!kept.to_string().contains("job hosts"), "{kept}");
    assert!(job_role_policy(&endpoint, &run_id).is_some(), "{kept}");
    assert_job_group_closed(&endpoint);
    aws_json(
        &endpoint,
        &["ec2", "terminate-instances", "--instance-ids", &instance],
    );
    let down = json(&p.labship_at(
        &endpoint,
        &["down", "--all", "--ec2", "--yes", "-o", "json"],
        &[],
    ));
    let said = down.to_string();
    for removed in [
        "of the job hosts",
        &format!("labship-job-{run_id}"),
        "labship-job-boundary",
    ] {
        assert!(said.contains(removed), "{removed}: {down}");
    }
    let groups = aws_json(
        &endpoint,
        &[
            "ec2",
            "describe-security-groups",
            "--filters",
            "Name=tag-key,Values=labship:job-group",
        ],
    );
    assert_eq!(groups["SecurityGroups"], json!([]), "{groups}");
    assert_job_role_gone(&endpoint, &run_id);
    let policies = labship_policies(&endpoint);
    assert_eq!(policies["Policies"], json!([]), "{policies}");
}

#[test]
fn ctrl_c_during_an_attached_run_on_ec2_ends_its_host_and_leaves_nothing() {
    let endpoint = rig().aws_endpoint;
    let sim = sim_endpoint();
    let (p, _, [points, data, out_uri]) = project("jobec2i");
    let mut command = p.command(&[
        "run",
        "analysis.ipynb",
        "--ec2",
        "--input",
        &points,
        "--input",
        &data,
        "--output-uri",
        &out_uri,
        "-p",
        "pause=600",
    ]);
    command.env("AWS_ENDPOINT_URL", &sim);
    // The first cell ran on the host: its progress came through the console.
    let (code, err) = crate::job::interrupted_command(command, "cell 1 of");
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains("Interrupted: terminating the job host"),
        "{err}"
    );
    let run_id = err
        .split("as job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the run's id on stderr")
        .to_string();
    let hosts = hosts_of(&endpoint, &run_id);
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].1, "terminated", "{err}");
    assert_job_role_gone(&endpoint, &run_id);
    assert_job_group_closed(&endpoint);
    // Its folder says how it ended: `runs` lists it interrupted, and `fetch` reports that
    // (not a host to follow).
    let runs = json(&p.labship_at(&sim, &["runs", "--ec2", "-o", "json"], &[]));
    let row = run_row(&runs, &run_id);
    assert_eq!(row["state"], "interrupted", "{runs}");
    let out = p.labship_at(&sim, &["fetch", &run_id, "--ec2", "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let fetched: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(fetched["state"], "interrupted", "{fetched}");
    assert!(fetched["cells_run"].as_u64().unwrap_or(0) >= 1, "{fetched}");
    assert!(
        unwrapped(&stderr(&out)).contains("interrupted (Ctrl-C) in cell"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_matrix_on_ec2_runs_a_host_per_value_side_by_side_with_one_summary() {
    let endpoint = rig().aws_endpoint;
    let sim = sim_endpoint();
    let (p, _, [points, data, out_uri]) = project("jobec2m");
    let report = json(&p.labship_at(
        &sim,
        &[
            "run",
            "analysis.ipynb",
            "--ec2",
            "--matrix",
            "n=2,3,4",
            "--parallel",
            "3",
            "--input",
            &points,
            "--input",
            &data,
            "--output-uri",
            &out_uri,
            "-o",
            "json",
        ],
        &[],
    ));
    assert_eq!(report["target"], "ec2", "{report}");
    assert_eq!(report["succeeded"], 3, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let runs = report["runs"].as_array().expect("runs");
    let mut ids = std::collections::BTreeSet::new();
    for (run, n) in runs.iter().zip([2, 3, 4]) {
        assert_eq!(run["matrix"], json!({"n": n}), "{report}");
        let one = &run["run"];
        assert_eq!(one["target"], "ec2", "{one}");
        let run_id = one["run_id"].as_str().expect("run id");
        ids.insert(run_id.to_string());
        let results = std::path::PathBuf::from(one["results"].as_str().expect("results"));
        let csv = std::fs::read_to_string(results.join("outputs/squares.csv")).expect("csv");
        assert_eq!(csv.lines().count(), n + 1, "n={n}: {csv}");
        let hosts = hosts_of(&endpoint, run_id);
        assert_eq!(hosts.len(), 1, "a host per run: {hosts:?}");
        assert_eq!(hosts[0].1, "terminated", "{hosts:?}");
        assert_job_role_gone(&endpoint, run_id);
        assert_job_group_closed(&endpoint);
    }
    assert_eq!(ids.len(), 3, "a run id each: {report}");
}

#[test]
fn a_killed_labship_leaves_the_job_going_and_fetch_brings_it_from_the_record() {
    use std::io::BufRead;
    let endpoint = rig().aws_endpoint;
    let sim = sim_endpoint();
    let (p, _, [points, data, out_uri]) = project("jobec2k");
    let mut child = p
        .command(&[
            "run",
            "analysis.ipynb",
            "--ec2",
            "--input",
            &points,
            "--input",
            &data,
            "--output-uri",
            &out_uri,
            "-p",
            "pause=8",
        ])
        .env("AWS_ENDPOINT_URL", &sim)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("labship");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    // Killed (no Ctrl-C, no clean-up) once its job runs on the host.
    while !seen.contains("cell 1 of") {
        let mut line = String::new();
        if err.read_line(&mut line).expect("stderr") == 0 {
            panic!("labship ended before the job ran: {seen}");
        }
        seen.push_str(&line);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let run_id = seen
        .split("as job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the run's id on stderr")
        .to_string();
    // The same project (its record in runs/<id>/ec2.json): fetch follows the run to its end.
    let fetched = json(&p.labship_at(&sim, &["fetch", &run_id, "--ec2", "-o", "json"], &[]));
    assert_eq!(fetched["state"], "succeeded", "{fetched}");
    assert_eq!(fetched["parameters"], json!({"pause": 8}));
    let results = std::path::PathBuf::from(fetched["results"].as_str().expect("results"));
    assert!(results.join("outputs/squares.csv").exists(), "{fetched}");
    assert_eq!(hosts_of(&endpoint, &run_id)[0].1, "terminated");
    assert_job_role_gone(&endpoint, &run_id);
    // Fetched once: reported from its folder again, and listed as such.
    let again = json(&p.labship_at(&sim, &["fetch", &run_id, "--ec2", "-o", "json"], &[]));
    assert_eq!(again["run_id"], run_id.as_str());
    let runs = json(&p.labship_at(&sim, &["runs", "--ec2", "-o", "json"], &[]));
    let row = run_row(&runs, &run_id);
    assert_eq!(row["state"], "succeeded", "{runs}");
}
