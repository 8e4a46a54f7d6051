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
        err.contains("cell 5 of 5 failed: ValueError: asked to fail"),
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
    use std::io::BufRead;
    let mut child = p
        .command(args)
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
