//! A job's inputs from S3 on a bad day: every GET of the copy fails more often than the SDK
//! retries (labship asks for the range again), answers come late, and a Ctrl-C in the middle
//! of the copy leaves no half file where the job would read it; the next run copies it whole.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::driver::*;
use crate::support::*;

/// The files of the input cache, the partial ones (`*.labship-part`) and the whole ones.
fn cached(cache: &Path) -> (Vec<String>, Vec<String>) {
    let (mut partial, mut whole) = (Vec::new(), Vec::new());
    let mut dirs = vec![cache.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if name.ends_with(".labship-part") {
                partial.push(name);
            } else if path.parent().is_some_and(|p| p.ends_with("files")) {
                whole.push(name);
            }
        }
    }
    whole.sort();
    (partial, whole)
}

#[test]
fn the_copy_of_inputs_survives_failing_gets_and_ctrl_c_leaves_no_half_file() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("s3chaos");
    p.write("count.py", "import os\nprint(sorted(os.listdir('inputs/data')))\nprint(os.path.getsize('inputs/data/big.bin'))\n");
    let bucket = unique("chaos-data");
    aws_json(
        &rig.aws_endpoint,
        &["s3api", "create-bucket", "--bucket", &bucket],
    );
    // One object of a single range (7 MiB): every GET of the copy is a GET of it.
    let big = p.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 7 << 20]).expect("write");
    let out = aws_cli(
        &rig.aws_endpoint,
        &[
            "s3",
            "cp",
            big.to_str().expect("path"),
            &format!("s3://{bucket}/data/big.bin"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&big).expect("rm");
    let cache = tempfile::tempdir().expect("cache");
    let faults = Faults::new(&sim, "s3copy");
    let input = format!("s3://{bucket}/data/");
    let command = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("LABSHIP_CACHE_DIR", cache.path());
        for (k, v) in faults.env() {
            cmd.env(k, v);
        }
        cmd
    };

    // The first six GETs fail: the SDK gives up after five attempts, labship asks again.
    let get = |extra: Value| {
        let mut rule = json!({"action": "s3:*", "param": {"x-id": "GetObject"}});
        if let (Some(rule), Some(extra)) = (rule.as_object_mut(), extra.as_object()) {
            rule.extend(extra.clone());
        }
        rule
    };
    faults.set(
        1,
        Value::Array(
            (1..=6)
                .map(|n| get(json!({"nth": n, "fault": "5xx"})))
                .collect(),
        ),
    );
    let args = ["run", "count.py", "--input", &input, "-o", "json"];
    let ended = run(
        command(&args),
        Some(&faults),
        Trigger::Simulator,
        Sig::Int,
        Duration::from_secs(300),
    );
    assert!(ended.status.success(), "{}", ended.stderr);
    let report: Value = serde_json::from_str(&ended.stdout).expect("report");
    assert_eq!(report["state"], "succeeded", "{report}");
    assert_eq!(report["inputs"][0]["fetched_bytes"], 7 << 20, "{report}");
    let fired = faults.report()["fired"].as_array().map_or(0, Vec::len);
    assert_eq!(fired, 6, "{}", faults.report());
    let results = std::path::PathBuf::from(report["results"].as_str().expect("results"));
    let executed = std::fs::read_to_string(results.join("count.ipynb")).expect("notebook");
    assert!(executed.contains("7340032"), "the whole object: {executed}");

    // Ctrl-C while the copy waits for S3: exit 130, nothing started, no half file as a whole
    // one; the next run (S3 well again) copies it whole.
    std::fs::remove_dir_all(cache.path()).expect("clear the cache");
    let runs = || std::fs::read_dir(p.path().join("runs")).map_or(0, |d| d.count());
    let runs_before = runs();
    faults.set(2, json!([get(json!({"delay": 20}))]));
    // Signalled once the copy has begun its file (the GET of it is held 20 s): a signal on
    // the "Copying" line alone may land before the copy starts, which leaves nothing to see.
    let begun = cache.path().to_path_buf();
    let ended = run(
        command(&args),
        Some(&faults),
        Trigger::Engine(Box::new(move || !cached(&begun).0.is_empty())),
        Sig::Int,
        Duration::from_secs(120),
    );
    assert_stopped_by(&ended, Sig::Int, "Ctrl-C during the copy");
    let (partial, whole) = cached(cache.path());
    assert_eq!(
        partial,
        ["big.bin.labship-part"],
        "the copy was cut off midway"
    );
    assert!(
        whole.is_empty(),
        "a file in the copy after Ctrl-C: {whole:?}"
    );
    assert_eq!(
        runs(),
        runs_before,
        "no run folder for a run that never started"
    );
    assert_eq!(
        docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.labship.job-of={}", p.name)
        ]),
        ""
    );
    faults.clear();
    let ended = run(
        command(&args),
        None,
        Trigger::Simulator,
        Sig::Int,
        Duration::from_secs(300),
    );
    assert!(ended.status.success(), "{}", ended.stderr);
    let report: Value = serde_json::from_str(&ended.stdout).expect("report");
    assert_eq!(report["inputs"][0]["fetched_bytes"], 7 << 20, "{report}");
    let (partial, whole) = cached(cache.path());
    assert_eq!(
        partial,
        Vec::<String>::new(),
        "the cut copy's part file is gone"
    );
    assert_eq!(whole, ["big.bin"]);
}

/// A project whose job writes a 70 MiB result (five parts of a multipart upload), a bucket
/// for it, and the fault rules on UploadPart: the command that runs it with
/// `--output-uri s3://BUCKET/runs` in the faults' scope.
fn large_result(name: &str, rule: Value) -> (Project, String, Faults, std::process::Command) {
    let rig = rig();
    let p = Project::default_workload(name);
    p.write(
        "big.py",
        "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/big.bin', 'wb').write(b'x' * (70 << 20))\n",
    );
    let bucket = unique(name);
    aws_json(
        &rig.aws_endpoint,
        &["s3api", "create-bucket", "--bucket", &bucket],
    );
    let faults = Faults::new(&sim_endpoint(), name);
    let mut rule = rule;
    if let Some(r) = rule.as_object_mut() {
        r.insert("action".into(), json!("s3:*"));
        r.insert("param".into(), json!({"x-id": "UploadPart"}));
    }
    faults.set(1, json!([rule]));
    let out_uri = format!("s3://{bucket}/runs");
    let mut cmd = p.command(&["run", "big.py", "--output-uri", &out_uri, "-o", "json"]);
    for (k, v) in faults.env() {
        cmd.env(k, v);
    }
    (p, bucket, faults, cmd)
}

/// No multipart upload pending in `bucket`, and neither run.json nor the large file there.
fn nothing_half_uploaded(bucket: &str) {
    let endpoint = rig().aws_endpoint;
    let pending = aws_json(
        &endpoint,
        &["s3api", "list-multipart-uploads", "--bucket", bucket],
    );
    assert!(
        pending
            .get("Uploads")
            .is_none_or(|u| u.as_array().is_none_or(Vec::is_empty)),
        "the failed upload is aborted: {pending}"
    );
    // Files that went up may stay; run.json, which says the run is there, did not go.
    let keys = s3_keys(&endpoint, bucket, "runs/");
    assert!(
        !keys
            .iter()
            .any(|k| k.ends_with("/run.json") || k.ends_with("/big.bin")),
        "{keys:?}"
    );
}

#[test]
fn a_large_result_whose_parts_fail_leaves_no_upload_behind() {
    // Every part is refused (a 500 the SDK retries, then gives up on).
    let (p, bucket, faults, cmd) = large_result("s3parts", json!({"fault": "5xx"}));
    let ended = run(
        cmd,
        Some(&faults),
        Trigger::Simulator,
        Sig::Int,
        Duration::from_secs(300),
    );
    assert_eq!(ended.status.code(), Some(1), "{}", ended.stderr);
    assert!(
        ended.stdout.contains("were not uploaded"),
        "{}",
        ended.stdout
    );
    nothing_half_uploaded(&bucket);
    // The run is kept here, marked as not uploaded.
    let runs = std::fs::read_dir(p.path().join("runs"))
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .collect::<Vec<_>>();
    assert_eq!(runs.len(), 1);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("run.json")).expect("run.json"))
            .expect("JSON");
    assert_eq!(saved["uploaded"], false);
    assert_eq!(saved["state"], "succeeded");
}

#[test]
fn ctrl_c_during_a_large_upload_aborts_it_before_labship_exits() {
    // Every part takes 5 s: the upload is under way when the Ctrl-C comes.
    let (_p, bucket, faults, cmd) = large_result("s3cut", json!({"delay": 5}));
    let ended = run(
        cmd,
        Some(&faults),
        Trigger::Stderr("Uploading run"),
        Sig::Int,
        Duration::from_secs(300),
    );
    assert_stopped_by(&ended, Sig::Int, "Ctrl-C during the upload");
    nothing_half_uploaded(&bucket);
}
