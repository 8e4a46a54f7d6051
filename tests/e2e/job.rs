//! `labship run`: a notebook as a job on the local engine, run for real by the image's own
//! Jupyter stack (nbclient and the python3 kernel), with its results read back from disk.

use serde_json::{json, Value};

use crate::support::*;

/// A notebook with a `parameters` cell that fans work out with multiprocessing and writes a
/// CSV and a PNG (made with the standard library: the default image has no plotting
/// library); `label = "fail"` makes its last cell raise.
fn analysis() -> String {
    let code = |tags: &[&str], source: &str| {
        json!({"cell_type": "code", "execution_count": null, "metadata": {"tags": tags},
               "outputs": [], "source": source})
    };
    json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# Squares"},
            code(&["parameters"], "n = 3\nlabel = 'default'\n"),
            code(&[], "from multiprocessing import Pool\n\ndef square(x):\n    return x * x\n\nwith Pool(2) as pool:\n    squares = pool.map(square, range(n))\nprint(label, squares)\n"),
            code(&[], "import os, struct, zlib\nos.makedirs('outputs', exist_ok=True)\nwith open('outputs/squares.csv', 'w') as f:\n    f.write('x,square\\n' + ''.join(f'{i},{s}\\n' for i, s in enumerate(squares)))\ndef chunk(kind, data):\n    c = struct.pack('>I', len(data)) + kind + data\n    return c + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)\nrows = b''.join(b'\\x00' + bytes([min(255, s)] * n) for s in squares)\npng = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', n, n, 8, 0, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')\nopen('outputs/plot.png', 'wb').write(png)\n"),
            code(&[], "if label == 'fail':\n    raise ValueError('asked to fail')\n"),
        ]
    })
    .to_string()
}

fn job_containers(name: &str) -> String {
    docker_ok(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=dev.labship.job-of={name}"),
    ])
}

#[test]
fn a_notebook_runs_as_a_job_with_its_parameters_and_its_results_come_back() {
    let p = Project::default_workload("job");
    p.write("analysis.ipynb", &analysis());

    // Every cell runs; the parameters are injected after the `parameters` cell.
    let out = p.labship(&[
        "run",
        "analysis.ipynb",
        "--local",
        "-p",
        "n=5",
        "-p",
        "label=demo",
        "--cpus",
        "2",
        "-o",
        "json",
    ]);
    let report = json(&out);
    assert_eq!(report["state"], "succeeded", "{report}");
    assert_eq!(report["cells"], 5, "{report}");
    assert_eq!(report["parameters"], json!({"n": 5, "label": "demo"}));
    let err = stderr(&out);
    assert!(err.contains("cell 5 of 5"), "progress on stderr: {err}");
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    assert!(results.starts_with(p.path().join("runs")), "{report}");
    let files: Vec<&str> = report["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        files,
        [
            "analysis.ipynb",
            "outputs/plot.png",
            "outputs/squares.csv",
            "run.json"
        ]
    );
    // The report beside the results: what `labship runs` reads once the container is gone.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("run.json")).expect("run.json"))
            .expect("run.json is JSON");
    assert_eq!(saved["run_id"], report["run_id"]);
    assert_eq!(saved["state"], "succeeded");
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/squares.csv")).expect("csv"),
        "x,square\n0,0\n1,1\n2,4\n3,9\n4,16\n"
    );
    let png = std::fs::read(results.join("outputs/plot.png")).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let executed: Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("analysis.ipynb")).expect("executed notebook"),
    )
    .expect("notebook JSON");
    let cells = executed["cells"].as_array().expect("cells");
    assert_eq!(cells[2]["metadata"]["tags"], json!(["injected-parameters"]));
    let injected: String = cells[2]["source"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .or_else(|| cells[2]["source"].as_str().map(String::from))
        .expect("source");
    assert!(injected.contains("n = 5\nlabel = 'demo'"), "{injected}");
    let printed = cells[3]["outputs"].to_string();
    assert!(printed.contains("demo [0, 1, 4, 9, 16]"), "{printed}");
    assert_eq!(
        job_containers(&p.name),
        "",
        "the job's container is removed"
    );

    // A failing cell: exit 1, the cell and its error said, what ran kept.
    let out = p.labship(&["run", "analysis.ipynb", "-p", "label=fail", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report["state"], "failed", "{report}");
    assert_eq!(
        report["failed_cell"],
        json!({"cell": 5, "ename": "ValueError", "evalue": "asked to fail"})
    );
    let err = stderr(&out);
    assert!(
        unwrapped(&err).contains("cell 5 of 5 failed: ValueError: asked to fail"),
        "{err}"
    );
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    let executed = std::fs::read_to_string(results.join("analysis.ipynb")).expect("partial");
    assert!(executed.contains("asked to fail"), "the traceback is kept");
    assert!(results.join("outputs/squares.csv").exists());
    assert_eq!(job_containers(&p.name), "");
}

#[test]
fn a_job_past_its_deadline_is_stopped_and_what_ran_is_kept() {
    let p = Project::default_workload("jobt");
    p.write(
        "slow.py",
        "import time\nprint('started', flush=True)\ntime.sleep(600)\n",
    );
    let out = p.labship(&["run", "slow.py", "--timeout", "30s", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report["state"], "timed_out", "{report}");
    assert!(
        report["duration_secs"].as_f64().expect("duration") < 120.0,
        "stopped at its deadline, not at the end of the sleep: {report}"
    );
    let err = stderr(&out);
    assert!(err.contains("stopped after 30s (--timeout)"), "{err}");
    // The script ran as one cell of a notebook, saved with what it printed.
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    let executed = std::fs::read_to_string(results.join("slow.ipynb")).expect("slow.ipynb");
    assert!(executed.contains("time.sleep(600)"), "{executed}");
    assert_eq!(job_containers(&p.name), "");
}

#[test]
fn a_matrix_runs_once_per_value_side_by_side_with_one_summary() {
    let p = Project::default_workload("jobm");
    p.write("analysis.ipynb", &analysis());
    let out = p.labship(&[
        "run",
        "analysis.ipynb",
        "-p",
        "n=4",
        "--matrix",
        "label=a,b,fail",
        "--parallel",
        "3",
        "-o",
        "json",
    ]);
    // One run failed, so the command did; the summary is the one document on stdout.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    assert_eq!(
        (report["succeeded"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    let runs = report["runs"].as_array().expect("runs");
    let labels: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["matrix"]["label"].as_str())
        .collect();
    assert_eq!(labels, ["a", "b", "fail"], "in the grid's order");
    let mut folders = std::collections::BTreeSet::new();
    for run in runs {
        let run = &run["run"];
        let label = run["parameters"]["label"].as_str().expect("label");
        assert_eq!(run["parameters"]["n"], 4, "{run}");
        let results = std::path::PathBuf::from(run["results"].as_str().expect("results"));
        folders.insert(results.clone());
        let executed =
            std::fs::read_to_string(results.join("analysis.ipynb")).expect("executed notebook");
        assert!(
            executed.contains(&format!("{label} [0, 1, 4, 9]")),
            "run {label} printed its own label"
        );
        let expected = if label == "fail" {
            "failed"
        } else {
            "succeeded"
        };
        assert_eq!(run["state"], expected, "{run}");
    }
    assert_eq!(folders.len(), 3, "a folder of its own per run");
    let err = stderr(&out);
    assert!(err.contains("[label=b] cell 5 of 5"), "{err}");
    assert!(err.contains("1 of 3 runs did not succeed"), "{err}");
    assert_eq!(job_containers(&p.name), "");
}

/// A notebook that works for a few seconds, then writes its result.
fn slow_notebook() -> String {
    json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [],
             "source": "import os, time\ntime.sleep(6)\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/done.txt', 'w').write('done')\n"},
        ]
    })
    .to_string()
}

fn run_state(p: &Project, run_id: &str) -> Option<String> {
    let runs = json(&p.labship(&["runs", "-o", "json"]));
    runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["run_id"] == run_id)
        .and_then(|r| r["state"].as_str().map(String::from))
}

#[test]
fn a_detached_or_abandoned_run_goes_on_and_fetch_brings_its_results() {
    let p = Project::default_workload("jobd");
    p.write("slow.ipynb", &slow_notebook());

    // --detach: labship returns at once, the job runs on.
    let started = json(&p.labship(&["run", "slow.ipynb", "--detach", "-o", "json"]));
    assert_eq!(started["state"], "running", "{started}");
    let run_id = started["run_id"].as_str().expect("run id").to_string();
    assert_eq!(run_state(&p, &run_id).as_deref(), Some("running"));
    // A job is not a deployment: `status` does not list its container.
    let status = p.labship(&["status", "--local", "-o", "json"]);
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains(&run_id),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    // fetch follows it to its end and brings the results.
    let fetched = json(&p.labship(&["fetch", &run_id, "-o", "json"]));
    assert_eq!(fetched["state"], "succeeded", "{fetched}");
    let results = std::path::PathBuf::from(fetched["results"].as_str().expect("results"));
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/done.txt")).expect("done.txt"),
        "done"
    );
    assert_eq!(run_state(&p, &run_id).as_deref(), Some("succeeded"));
    assert_eq!(job_containers(&p.name), "");

    // labship killed while it follows a run: the job finishes all the same, and fetch gets
    // what it wrote.
    let mut child = p
        .command(&["run", "slow.ipynb", "-o", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("labship run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let container = loop {
        let names = job_containers(&p.name);
        if let Some(name) = names.split_whitespace().next() {
            break name.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no job container");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    child.kill().expect("SIGKILL labship");
    let _ = child.wait();
    let run_id = container
        .rsplit('-')
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("-");
    let state = run_state(&p, &run_id).expect("the abandoned run is listed");
    assert!(
        state == "running" || state.starts_with("ended"),
        "{run_id}: {state}"
    );
    let fetched = json(&p.labship(&["fetch", &run_id, "-o", "json"]));
    assert_eq!(fetched["state"], "succeeded", "{fetched}");
    let results = std::path::PathBuf::from(fetched["results"].as_str().expect("results"));
    assert!(results.join("outputs/done.txt").exists());
    assert!(results.join("slow.ipynb").exists());
    assert_eq!(job_containers(&p.name), "");
}

/// Spawns `labship ARGS` in `p`, waits until its stderr shows `marker`, sends it SIGINT, and
/// returns its exit code and whole stderr.
fn interrupted(p: &Project, args: &[&str], marker: &str) -> (Option<i32>, String) {
    interrupted_command(p.command(args), marker)
}

/// [`interrupted`] of a labship command made by the caller.
pub(crate) fn interrupted_command(
    mut command: std::process::Command,
    marker: &str,
) -> (Option<i32>, String) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("labship");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).expect("stderr line") == 0 {
            panic!("labship ended before `{marker}`: {seen}");
        }
        seen.push_str(&line);
        if line.contains(marker) {
            break;
        }
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).expect("the rest of stderr");
    seen.push_str(&rest);
    let code = child.wait().expect("wait").code();
    (code, seen)
}

#[test]
fn ctrl_c_ends_an_attached_run_but_never_a_fetched_one() {
    let p = Project::default_workload("jobi");
    p.write("slow.ipynb", &slow_notebook());

    // Ctrl-C while `fetch` follows a detached run: the run goes on, `fetch` again ends it.
    let started = json(&p.labship(&["run", "slow.ipynb", "--detach", "-o", "json"]));
    let run_id = started["run_id"].as_str().expect("run id").to_string();
    let (code, err) = interrupted(&p, &["fetch", &run_id], "still going");
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("`labship fetch {run_id}` follows it again")),
        "{err}"
    );
    assert_eq!(run_state(&p, &run_id).as_deref(), Some("running"), "{err}");
    let fetched = json(&p.labship(&["fetch", &run_id, "-o", "json"]));
    assert_eq!(fetched["state"], "succeeded", "{fetched}");

    // Ctrl-C during an attached run: it ends with its labship, what ran is kept and said.
    let (code, err) = interrupted(&p, &["run", "slow.ipynb"], "cell 1 of 1");
    assert_eq!(code, Some(130), "{err}");
    assert_eq!(job_containers(&p.name), "", "{err}");
    let runs = json(&p.labship(&["runs", "-o", "json"]));
    let states: Vec<&str> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert!(states.contains(&"interrupted"), "{runs}");
}

/// A notebook that reads its inputs (and finds them read-only) and writes a result.
fn reads_inputs() -> String {
    let code = |source: &str| {
        json!({"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [],
               "source": source})
    };
    json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            code("import csv, os\nrows = list(csv.DictReader(open('inputs/data/points.csv')))\ntotal = sum(int(r['v']) for r in rows)\nextra_file = 'inputs/data/more/extra.txt'\nextra = open(extra_file).read().strip() if os.path.exists(extra_file) else 'gone'\nnote = open('inputs/note.txt').read().strip()\n"),
            code("ro = all(os.statvfs(d).f_flag & os.ST_RDONLY for d in ('inputs/data', 'inputs/note.txt'))\nwritable = 'read-only' if ro else 'writable'\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/sum.txt', 'w').write(f'{total} {extra} {note} {writable}\\n')\n"),
        ]
    })
    .to_string()
}

/// `labship run` with the cache of inputs in `cache`.
fn run_with_cache(p: &Project, cache: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = p.command(args);
    cmd.env("LABSHIP_CACHE_DIR", cache);
    run_logged(cmd, args, "")
}

#[test]
fn a_job_reads_its_inputs_from_s3_and_its_results_go_back_to_s3() {
    let endpoint = rig().aws_endpoint;
    let p = Project::default_workload("jobs3");
    p.write("sum.ipynb", &reads_inputs());
    let cache = tempfile::tempdir().expect("cache");
    let (input, output) = (unique("in"), unique("out"));
    // The data in another region than labship's (us-east-1); the results' bucket here.
    aws_json(
        &endpoint,
        &[
            "s3api",
            "create-bucket",
            "--bucket",
            &input,
            "--region",
            "eu-west-1",
            "--create-bucket-configuration",
            "LocationConstraint=eu-west-1",
        ],
    );
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &output]);
    let put = |key: &str, body: &str| s3_put(&endpoint, &input, key, body, "eu-west-1");
    put("data/points.csv", "v\n1\n2\n3\n");
    put("data/more/extra.txt", "extra\n");
    put("data-other/not-mine.txt", "not under data/\n");
    put("notes/note.txt", "first\n");
    p.write(
        "labship.toml",
        // No slash: the folder data/, not data-other/ beside it.
        &format!("[data]\ninputs = [\"s3://{input}/data\"]\n"),
    );

    let single = format!("s3://{input}/notes/note.txt");
    let out_uri = format!("s3://{output}/results");
    let args = [
        "run",
        "sum.ipynb",
        "--input",
        &single,
        "--output-uri",
        &out_uri,
        "-o",
        "json",
    ];
    let out = run_with_cache(&p, cache.path(), &args);
    let report = json(&out);
    assert_eq!(report["state"], "succeeded", "{report}");
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/sum.txt")).expect("sum"),
        "6 extra first read-only\n",
        "the inputs' contents, read-only"
    );
    let inputs = report["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 2, "{report}");
    assert_eq!(inputs[0]["path"], "inputs/data");
    assert_eq!(inputs[0]["region"], "eu-west-1", "the bucket's own region");
    assert_eq!(inputs[0]["objects"], 2, "data-other/ is not under data/");
    assert_eq!(inputs[0]["bytes"], 14);
    assert_eq!(inputs[0]["fetched_bytes"], 14);
    assert_eq!(inputs[1]["path"], "inputs/note.txt");

    // The run's folder is in S3 as the AWS CLI lists it, run.json saying so.
    let run_id = report["run_id"].as_str().expect("run id");
    assert_eq!(report["output_uri"], format!("{out_uri}/{run_id}/"));
    assert_eq!(report["uploaded"], true);
    let keys = s3_keys(&endpoint, &output, &format!("results/{run_id}/"));
    let prefix = format!("results/{run_id}");
    assert_eq!(
        keys,
        [
            format!("{prefix}/outputs/sum.txt"),
            format!("{prefix}/run.json"),
            format!("{prefix}/sum.ipynb")
        ]
    );
    let got = p.path().join("got.txt");
    let out = aws_cli(
        &endpoint,
        &[
            "s3",
            "cp",
            &format!("s3://{output}/{prefix}/outputs/sum.txt"),
            got.to_str().expect("path"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&got).expect("got"),
        "6 extra first read-only\n"
    );

    // Again: only what changed is fetched; what is gone from S3 is gone from the copy.
    put("data/points.csv", "v\n10\n20\n");
    let out = aws_cli(
        &endpoint,
        &[
            "s3",
            "rm",
            &format!("s3://{input}/data/more/extra.txt"),
            "--region",
            "eu-west-1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_with_cache(
        &p,
        cache.path(),
        &["run", "sum.ipynb", "--input", &single, "-o", "json"],
    );
    let report = json(&out);
    assert_eq!(report["state"], "succeeded", "{report}");
    let inputs = report["inputs"].as_array().expect("inputs");
    // points.csv changed with its size kept (its ETag tells); extra.txt is gone.
    assert_eq!(inputs[0]["objects"], 1, "{report}");
    assert_eq!(
        inputs[0]["fetched_bytes"], 8,
        "only points.csv is fetched: {report}"
    );
    assert_eq!(inputs[1]["fetched_bytes"], 0, "note.txt did not");
    assert_eq!(report["output_uri"], Value::Null);
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/sum.txt")).expect("sum"),
        "30 gone first read-only\n",
        "the removed object is gone from the job's inputs too"
    );
    assert_eq!(job_containers(&p.name), "");
}

#[test]
fn inputs_or_an_output_that_cannot_be_used_are_refused_before_anything_runs() {
    let endpoint = rig().aws_endpoint;
    let p = Project::default_workload("jobs3bad");
    p.write("job.py", "print('ran')\n");
    let bucket = unique("data");
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &bucket]);
    let cache = tempfile::tempdir().expect("cache");
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec!["--input".into(), format!("s3://{bucket}-missing/x/")],
            "does not exist",
        ),
        (
            vec!["--input".into(), format!("s3://{bucket}/nothing-here/")],
            "no object under this address",
        ),
        (
            vec!["--input".into(), "s3://Bad_Bucket/x".into()],
            "bucket name is not one S3 allows",
        ),
        (
            vec![
                "--input".into(),
                format!("s3://{bucket}/a/data"),
                "--input".into(),
                format!("s3://{bucket}/b/data"),
            ],
            "lands in inputs/data as well",
        ),
        (
            vec!["--output-uri".into(), format!("s3://{bucket}-gone/results")],
            "does not exist",
        ),
    ];
    for (extra, said) in cases {
        let mut args = vec!["run", "job.py", "-o", "json"];
        args.extend(extra.iter().map(String::as_str));
        let out = run_with_cache(&p, cache.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = json_error(&out).to_string();
        assert!(err.contains(said), "{args:?}: {err}");
        assert_eq!(job_containers(&p.name), "", "{args:?}: nothing started");
        assert!(!p.path().join("runs").exists(), "{args:?}: no run folder");
        assert_eq!(
            docker_ok(&["images", "-q", &p.repository()]),
            "",
            "{args:?}: nothing built"
        );
    }
}

#[test]
fn a_detached_runs_results_go_to_s3_when_fetched_and_a_failed_upload_is_tried_again() {
    let endpoint = rig().aws_endpoint;
    let p = Project::default_workload("jobs3d");
    p.write("slow.ipynb", &slow_notebook());
    let output = unique("results");
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &output]);
    let out_uri = format!("s3://{output}/runs");
    let started = json(&p.labship(&[
        "run",
        "slow.ipynb",
        "--detach",
        "--output-uri",
        &out_uri,
        "-o",
        "json",
    ]));
    let run_id = started["run_id"].as_str().expect("run id").to_string();
    // Listed while it runs with where it will go.
    let runs = json(&p.labship(&["runs", "-o", "json"]));
    assert_eq!(
        runs["runs"][0]["output_uri"],
        format!("{out_uri}/{run_id}/"),
        "{runs}"
    );
    // The bucket goes while the job runs: the results stay here, and say they are not in S3.
    let gone = aws_cli(&endpoint, &["s3", "rb", &format!("s3://{output}")]);
    assert!(
        gone.status.success(),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    let fetched = p.labship(&["fetch", &run_id, "-o", "json"]);
    assert_eq!(fetched.status.code(), Some(1), "{}", stderr(&fetched));
    let err = json_error(&fetched).to_string();
    assert!(err.contains("were not uploaded"), "{err}");
    assert!(
        err.contains(&format!("labship fetch {run_id}")),
        "how to try again: {err}"
    );
    let results = p.path().join("runs").join(&run_id);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("run.json")).expect("run.json"))
            .expect("JSON");
    assert_eq!(saved["state"], "succeeded");
    assert_eq!(saved["uploaded"], false);
    assert!(results.join("outputs/done.txt").exists());
    assert_eq!(job_containers(&p.name), "");

    let runs = json(&p.labship(&["runs", "-o", "json"]));
    let row = run_row(&runs, &run_id);
    assert_eq!(row["uploaded"], false, "{row}");
    assert!(
        row["note"]
            .as_str()
            .unwrap_or_default()
            .contains("labship fetch"),
        "{row}"
    );

    // The bucket back: fetch puts the run there.
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &output]);
    let fetched = json(&p.labship(&["fetch", &run_id, "-o", "json"]));
    assert_eq!(fetched["uploaded"], true, "{fetched}");
    assert_eq!(fetched["output_uri"], format!("{out_uri}/{run_id}/"));
    let keys = s3_keys(&endpoint, &output, &format!("runs/{run_id}/"));
    let prefix = format!("runs/{run_id}");
    assert_eq!(
        keys,
        [
            format!("{prefix}/outputs/done.txt"),
            format!("{prefix}/run.json"),
            format!("{prefix}/slow.ipynb")
        ]
    );
}

#[test]
fn a_large_result_goes_to_s3_in_parts() {
    let endpoint = rig().aws_endpoint;
    let p = Project::default_workload("jobs3big");
    // 70 MiB: five parts of a multipart upload (16 MiB each, the last 6 MiB).
    p.write(
        "big.py",
        "import os\nos.makedirs('outputs', exist_ok=True)\nwith open('outputs/big.bin', 'wb') as f:\n    for i in range(70):\n        f.write(bytes([i]) * (1 << 20))\n",
    );
    let output = unique("big");
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &output]);
    let out_uri = format!("s3://{output}/runs");
    let report = json(&p.labship(&["run", "big.py", "--output-uri", &out_uri, "-o", "json"]));
    assert_eq!(report["uploaded"], true, "{report}");
    let run_id = report["run_id"].as_str().expect("run id");
    let head = aws_json(
        &endpoint,
        &[
            "s3api",
            "head-object",
            "--bucket",
            &output,
            "--key",
            &format!("runs/{run_id}/outputs/big.bin"),
        ],
    );
    assert_eq!(head["ContentLength"], 70 << 20, "{head}");
    assert!(
        head["ETag"].as_str().unwrap_or_default().ends_with("-5\""),
        "a multipart upload of five parts: {head}"
    );
    let got = p.path().join("got.bin");
    let copy = aws_cli(
        &endpoint,
        &[
            "s3",
            "cp",
            &format!("s3://{output}/runs/{run_id}/outputs/big.bin"),
            got.to_str().expect("path"),
        ],
    );
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    assert!(
        std::fs::read(&got).expect("got")
            == std::fs::read(results.join("outputs/big.bin")).expect("local"),
        "the object in S3 is the result, byte for byte"
    );
    // No upload left half-made in the bucket.
    let pending = aws_json(
        &endpoint,
        &["s3api", "list-multipart-uploads", "--bucket", &output],
    );
    assert!(
        pending
            .get("Uploads")
            .is_none_or(|u| u.as_array().is_none_or(Vec::is_empty)),
        "{pending}"
    );
}

#[test]
fn a_running_job_keeps_the_inputs_it_started_with() {
    let endpoint = rig().aws_endpoint;
    let p = Project::default_workload("jobsnap");
    // Reads its input when the test says so (a file it waits for, at most two minutes):
    // after another run has brought the copy up to date.
    p.write(
        "late.py",
        "import os, time\nfor _ in range(1200):\n    if os.path.exists('/tmp/go'):\n        break\n    time.sleep(0.1)\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/seen.txt', 'w').write(open('inputs/data/v.txt').read())\n",
    );
    p.write(
        "now.py",
        "print('seen:', open('inputs/data/v.txt').read())\n",
    );
    let bucket = unique("snap");
    aws_json(&endpoint, &["s3api", "create-bucket", "--bucket", &bucket]);
    s3_put(&endpoint, &bucket, "data/v.txt", "one", "us-east-1");
    let cache = tempfile::tempdir().expect("cache");
    let input = format!("s3://{bucket}/data");
    let started = json(&run_with_cache(
        &p,
        cache.path(),
        &[
            "run", "late.py", "--input", &input, "--detach", "-o", "json",
        ],
    ));
    let run_id = started["run_id"].as_str().expect("run id").to_string();
    s3_put(&endpoint, &bucket, "data/v.txt", "two", "us-east-1");
    let now = json(&run_with_cache(
        &p,
        cache.path(),
        &["run", "now.py", "--input", &input, "-o", "json"],
    ));
    let results = std::path::PathBuf::from(now["results"].as_str().expect("results"));
    let executed = std::fs::read_to_string(results.join("now.ipynb")).expect("notebook");
    assert!(
        executed.contains("seen: two"),
        "the new run sees the new version"
    );
    // The detached run's snapshot is there while it runs; now it reads.
    let snapshots = cache.path().join("inputs/snapshots");
    let held: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).collect())
        .unwrap_or_default();
    assert_eq!(held.len(), 1, "{snapshots:?}");
    let container = started["container"].as_str().expect("container");
    docker_ok(&["exec", container, "touch", "/tmp/go"]);
    let fetched = json(&run_with_cache(
        &p,
        cache.path(),
        &["fetch", &run_id, "-o", "json"],
    ));
    assert_eq!(fetched["state"], "succeeded", "{fetched}");
    let results = std::path::PathBuf::from(fetched["results"].as_str().expect("results"));
    assert_eq!(
        std::fs::read_to_string(results.join("outputs/seen.txt")).expect("seen"),
        "one",
        "the running job kept the version it started with"
    );
    // Both runs are over: their snapshots are gone, the copy stays.
    let left: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
