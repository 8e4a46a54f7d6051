//! The life of an EC2 deployment, on the instance simulator: `labship stop` and the next `up`
//! keep the token, the certificate and the notebooks; the host's watchdog stops an idle
//! instance by itself (a busy kernel keeps it up, a client that only polls does not) and a
//! busy one at its TTL; the data volume outlives the instance and brings the notebooks back
//! on the next one; a spot interruption stops the host and `up` resumes it; a host of two seats
//! serves each its own Jupyter and watches both. What AWS shows is read with the AWS CLI;
//! Jupyter is driven through its REST API and kernel websocket, as a browser does.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ec2::{assert_nothing_left, jupyter_status, origin_of, pin_of, token_of, Connect};
use crate::support::*;

/// The instance's state as `aws ec2 describe-instances` shows it.
pub(crate) fn state_of(id: &str) -> String {
    let rig = rig();
    let out = aws_json(
        &rig.aws_endpoint,
        &["ec2", "describe-instances", "--instance-ids", id],
    );
    out["Reservations"][0]["Instances"][0]["State"]["Name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the instance is in `want`, calling `meanwhile` between looks; the time it took.
pub(crate) fn wait_state(
    id: &str,
    want: &str,
    within: Duration,
    mut meanwhile: impl FnMut(),
) -> Duration {
    let t = Instant::now();
    loop {
        let now = state_of(id);
        if now == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "{id} still {now}, not {want}, after {within:?}"
        );
        meanwhile();
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn console_of(sim: &str, id: &str) -> String {
    let out = aws_json(sim, &["ec2", "get-console-output", "--instance-id", id]);
    out["Output"].as_str().unwrap_or_default().to_string()
}

/// Waits until the instance's console shows `line`.
fn wait_console(sim: &str, id: &str, line: &str, within: Duration) {
    let t = Instant::now();
    while !console_of(sim, id).contains(line) {
        assert!(
            t.elapsed() < within,
            "no `{line}` on the console within {within:?}: {}",
            console_of(sim, id)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn status_row(p: &Project, sim: &str) -> Value {
    let status = json(&p.labship_at(sim, &["status", "--ec2", "-o", "json"], &[]));
    status["deployments"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == p.name.as_str()).cloned())
        .unwrap_or_else(|| panic!("{} not in {status}", p.name))
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_then_up_keeps_the_token_the_certificate_and_the_notebooks() {
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2stop");
    let port = free_port();
    let port_s = port.to_string();
    let first = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(first["action"], "created", "{first}");
    let id = first["instance_id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let token = token_of(first["url"].as_str().expect("url"));
    let at = origin_of(first["url"].as_str().expect("url"));
    let pin = pin_of(&first);
    let container = format!("labship-ec2-{}", p.name);
    docker_ok(&[
        "exec",
        &container,
        "sh",
        "-c",
        "echo before-the-stop > notes-stop.txt",
    ]);
    // The watchdog runs with the defaults and says so on the console.
    let running = status_row(&p, &sim);
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["idle_stop_seconds"], 3600, "{running}");
    assert_eq!(running["ttl_seconds"], 86_400, "{running}");
    assert_eq!(running["stops_because"], "ttl", "{running}");
    let left = running["stops_in_seconds"]
        .as_i64()
        .expect("stops_in_seconds");
    assert!((85_000..=86_400).contains(&left), "{running}");

    let stop = p.labship_at(&sim, &["stop", "--ec2", "-o", "json"], &[]);
    let stopped = json(&stop);
    assert_eq!(stopped["stopped"][0], format!("instance {id}"), "{stopped}");
    assert!(
        stopped["kept"].to_string().contains("still billed"),
        "the stop says what still costs: {stopped}"
    );
    assert_eq!(state_of(&id), "stopped");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &container]).trim(),
        "false"
    );
    assert_eq!(
        jupyter_status(&at, &pin, Some(&token)),
        0,
        "a stopped host answers"
    );
    let row = status_row(&p, &sim);
    assert_eq!(row["state"], "stopped", "{row}");
    assert!(
        row["note"]
            .as_str()
            .unwrap_or_default()
            .contains("labship up"),
        "{row}"
    );
    assert_eq!(row["stops_in_seconds"], Value::Null, "{row}");
    // Again: nothing to do, said so.
    let again = json(&p.labship_at(&sim, &["stop", "--ec2", "-o", "json"], &[]));
    assert_eq!(again["stopped"], serde_json::json!([]), "{again}");
    assert!(
        again["already_stopped"][0]
            .as_str()
            .unwrap_or_default()
            .contains(&id),
        "{again}"
    );
    // The plan says what `up` will do.
    let plan = json(&p.labship_at(
        &sim,
        &[
            "up",
            "--ec2",
            "--dry-run",
            "--allow-cidr",
            "127.0.0.1/32",
            "--bind",
            "127.0.0.1",
            "--port",
            &port_s,
            "-o",
            "json",
        ],
        &[],
    ));
    assert_eq!(plan["action"], "start", "{plan}");
    assert_eq!(state_of(&id), "stopped", "the dry run started it");

    let second = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(second["action"], "started", "{second}");
    assert_eq!(
        second["instance_id"],
        id.as_str(),
        "a new instance was launched"
    );
    assert_eq!(token_of(second["url"].as_str().expect("url")), token);
    assert_eq!(pin_of(&second), pin, "the host made a new certificate");
    assert_eq!(jupyter_status(&at, &pin, Some(&token)), 200);
    let notes = docker_ok(&["exec", &container, "cat", "notes-stop.txt"]);
    assert_eq!(notes.trim(), "before-the-stop");
    // After a start the console is the new boot's, and the watchdog runs again.
    let console = console_of(&sim, &id);
    assert!(
        console.contains("labship: watch idle-stop=3600 ttl=86400"),
        "{console}"
    );
    let row = status_row(&p, &sim);
    assert_eq!(row["state"], "running", "{row}");
    assert!(
        row["uptime_seconds"].as_i64().is_some_and(|s| s < 600),
        "{row}"
    );
    let unchanged = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(unchanged["action"], "unchanged", "{unchanged}");
    // Another idle stop on the running deployment: the container stays, the host's watchdog
    // is replaced by one with the new setting (the old one, and its TTL timer, let it in).
    let mut args = ec2_up_args(&port_s);
    args.extend(["--idle-stop", "30m"]);
    let changed = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(changed["action"], "replaced", "{changed}");
    assert!(
        changed["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("idle stop 1h -> 30m"),
        "{changed}"
    );
    wait_console(
        &sim,
        &id,
        "labship: watch idle-stop=1800 ttl=86400",
        Duration::from_secs(60),
    );
    let row = status_row(&p, &sim);
    assert_eq!(row["idle_stop_seconds"], 1800, "{row}");
    // Kept from now on: a plain `up` changes nothing.
    let kept = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert_eq!(kept["action"], "unchanged", "{kept}");

    // Started from outside labship (the EC2 console, the AWS CLI): no labship script runs,
    // the watchdog says again what Jupyter serves, and `up` finds it serving.
    p.labship_at(&sim, &["stop", "--ec2", "-o", "json"], &[]);
    assert_eq!(state_of(&id), "stopped");
    aws_json(&sim, &["ec2", "start-instances", "--instance-ids", &id]);
    wait_console(
        &sim,
        &id,
        "labship: token path=/lab source=labship",
        Duration::from_secs(120),
    );
    let after = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    assert!(
        after["action"] == "unchanged" || after["action"] == "resumed",
        "{after}"
    );
    assert_eq!(token_of(after["url"].as_str().expect("url")), token);
    assert_eq!(jupyter_status(&at, &pin, Some(&token)), 200);

    p.labship_at(
        &sim,
        &["down", "--ec2", "--yes", "--delete-data", "--purge-images"],
        &[],
    );
    assert_nothing_left(&p.name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_stops_an_idle_host_not_a_busy_one_and_the_ttl_stops_it_anyway() {
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2idle");
    let port_s = free_port().to_string();
    let mut args = ec2_up_args(&port_s);
    args.extend(["--idle-stop", "60s", "--ttl", "off"]);
    let first = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(first["action"], "created", "{first}");
    let id = first["instance_id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let token = token_of(first["url"].as_str().expect("url"));

    // A kernel busy for longer than the idle stop keeps the host up; a client that keeps
    // polling the API (an open tab) and keeps its websocket open does not, once it is idle.
    let connect = Connect::start(&p, &sim);
    let mut kernel = Kernel::start(&connect.base(), &token);
    let busy_for = Duration::from_secs(80);
    let run = kernel.execute(&format!("import time; time.sleep({})", busy_for.as_secs()));
    let t_busy = Instant::now();
    let mut states = Vec::new();
    kernel.wait_done(&run, busy_for + Duration::from_secs(60), || {
        states.push(state_of(&id));
    });
    assert!(t_busy.elapsed() >= busy_for - Duration::from_secs(2));
    assert!(
        states.iter().all(|s| s == "running"),
        "the host stopped while a kernel was busy: {states:?}"
    );
    let t_idle = Instant::now();
    let mut polled = 0;
    let took = wait_state(&id, "stopped", Duration::from_secs(180), || {
        kernel.poll();
        polled += 1;
    });
    assert!(polled > 5, "the test polled only {polled} times");
    assert!(
        t_idle.elapsed() >= Duration::from_secs(55),
        "stopped {took:?} after the kernel went idle: sooner than the idle stop"
    );
    let console = console_of(&sim, &id);
    assert!(console.contains("labship: idle-stop idle="), "{console}");
    assert!(console.contains("labship: idle since="), "{console}");
    let row = status_row(&p, &sim);
    assert_eq!(row["state"], "stopped", "{row}");
    assert!(
        row["note"]
            .as_str()
            .unwrap_or_default()
            .contains("idle-stop"),
        "status says why it stopped: {row}"
    );
    drop(kernel);
    drop(connect);

    // Started again with a TTL and no idle stop: a kernel busy forever does not keep it up.
    let mut args = ec2_up_args(&port_s);
    args.extend(["--idle-stop", "off", "--ttl", "2m"]);
    let started = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(started["action"], "started", "{started}");
    assert_eq!(started["instance_id"], id.as_str());
    let connect = Connect::start(&p, &sim);
    let mut kernel = Kernel::start(&connect.base(), &token);
    kernel.execute("import time; time.sleep(600)");
    let t = Instant::now();
    while kernel.poll() != "busy" {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the kernel never got busy"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let row = status_row(&p, &sim);
    assert_eq!(row["stops_because"], "ttl", "{row}");
    assert_eq!(row["ttl_seconds"], 120, "{row}");
    assert_eq!(row["idle_stop_seconds"], Value::Null, "{row}");
    wait_state(&id, "stopped", Duration::from_secs(180), || {});
    let console = console_of(&sim, &id);
    assert!(console.contains("labship: ttl-stop ttl=2m"), "{console}");
    drop(kernel);
    drop(connect);

    // A stopped host's workspace is on its data volume: `down` terminates it and keeps that;
    // with --delete-data it goes too.
    let down = json(&p.labship_at(&sim, &ec2_down_args(&[]), &[]));
    assert_eq!(down["terminated"], serde_json::json!([id]), "{down}");
    assert_eq!(
        down["data_volumes_kept"].as_array().map(Vec::len),
        Some(1),
        "{down}"
    );
    p.labship_at(
        &sim,
        &["down", "--ec2", "--yes", "--delete-data", "--purge-images"],
        &[],
    );
    assert_nothing_left(&p.name).await;
}

/// The data volume outlives the instance: `down` keeps it (and says so, and `status` lists
/// it), the next `up` launches a new instance in its zone with the user's files back and the
/// image's new ones added beside them; an `up` in a subnet of another zone copies it there
/// through a snapshot; `--delete-data` deletes it. What AWS shows is read
/// with the AWS CLI.
#[tokio::test(flavor = "multi_thread")]
async fn down_keeps_the_data_volume_and_the_next_up_brings_the_notebooks_back() {
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2vol");
    let port = free_port();
    let port_s = port.to_string();
    let mut args = ec2_up_args(&port_s);
    args.extend(["--volume-size", "2"]);
    let first = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(first["action"], "created", "{first}");
    let id = first["instance_id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let volumes = |extra: &[&str]| {
        let tag = format!("Name=tag:labship:deployment,Values={}", p.name);
        let mut args = vec![
            "ec2",
            "describe-volumes",
            "--filters",
            &tag,
            "Name=tag:labship:volume,Values=workspace",
        ];
        args.extend(extra);
        aws_json(&sim, &args)["Volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let found = volumes(&[]);
    assert_eq!(found.len(), 1, "{found:?}");
    let v = &found[0];
    let vol = v["VolumeId"].as_str().expect("volume id").to_string();
    assert_eq!(
        (v["Size"].as_i64(), v["VolumeType"].as_str()),
        (Some(2), Some("gp3")),
        "{v}"
    );
    assert_eq!(v["Encrypted"], true, "{v}");
    assert_eq!(v["Attachments"][0]["InstanceId"], id.as_str(), "{v}");
    assert_eq!(v["Attachments"][0]["Device"], "/dev/sdf", "{v}");
    // (moto leaves out the attachment's DeleteOnTermination; the termination below shows it.)
    assert!(
        v["Tags"]
            .to_string()
            .contains(r#""Key":"labship:managed-by","Value":"labship""#),
        "{v}"
    );
    let row = status_row(&p, &sim);
    assert_eq!(row["data_volume"]["id"], vol.as_str(), "{row}");

    // The user's own notebook, and a file of the image they changed.
    let container = format!("labship-ec2-{}", p.name);
    docker_ok(&[
        "exec",
        &container,
        "sh",
        "-c",
        "echo mine > notes-vol.txt && echo changed > parallel-processing.ipynb",
    ]);

    let down = json(&p.labship_at(&sim, &ec2_down_args(&[]), &[]));
    assert_eq!(down["terminated"], serde_json::json!([id]), "{down}");
    assert_eq!(down["data_volumes_kept"][0]["id"], vol.as_str(), "{down}");
    assert!(down["kept"].to_string().contains(&vol), "{down}");
    assert_eq!(state_of(&id), "terminated");
    let kept = volumes(&[]);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["State"], "available", "{kept:?}");
    let row = status_row(&p, &sim);
    assert_eq!(row["state"], "down", "{row}");
    assert_eq!(row["data_volume"]["id"], vol.as_str(), "{row}");
    assert!(
        row["note"]
            .as_str()
            .unwrap_or_default()
            .contains("--delete-data"),
        "{row}"
    );

    // A new file in the image; the plan attaches the kept volume, in its zone.
    p.write("docker/resources/added-later.txt", "new in the image\n");
    let up_args = ec2_up_args(&port_s);
    let mut dry = up_args.clone();
    dry.push("--dry-run");
    let plan = json(&p.labship_at(&sim, &dry, &[]));
    assert_eq!(plan["action"], "create", "{plan}");
    assert_eq!(plan["data_volume"]["action"], "attach", "{plan}");
    assert_eq!(plan["data_volume"]["id"], vol.as_str(), "{plan}");
    assert_eq!(
        plan["data_volume"]["availability_zone"], kept[0]["AvailabilityZone"],
        "{plan}"
    );

    let second = json(&p.labship_at(&sim, &up_args, &[]));
    assert_eq!(second["action"], "created", "{second}");
    let new_id = second["instance_id"]
        .as_str()
        .expect("instance id")
        .to_string();
    assert_ne!(new_id, id, "{second}");
    assert!(
        second["reason"].as_str().unwrap_or_default().contains(&vol),
        "{second}"
    );
    let token = token_of(second["url"].as_str().expect("url"));
    let at = origin_of(second["url"].as_str().expect("url"));
    assert_eq!(jupyter_status(&at, &pin_of(&second), Some(&token)), 200);
    let cat = |file: &str| {
        docker_ok(&["exec", &container, "cat", file])
            .trim()
            .to_string()
    };
    assert_eq!(cat("notes-vol.txt"), "mine");
    assert_eq!(
        cat("parallel-processing.ipynb"),
        "changed",
        "the image's file overwrote the user's"
    );
    assert_eq!(cat("added-later.txt"), "new in the image");
    let attached = volumes(&[]);
    assert_eq!(
        attached[0]["Attachments"][0]["InstanceId"],
        new_id.as_str(),
        "{attached:?}"
    );

    // Down again, and up in a subnet of another zone: the volume is copied there through a
    // snapshot, with the files; the original and the snapshot go.
    json(&p.labship_at(&sim, &ec2_down_args(&[]), &[]));
    let zone = kept[0]["AvailabilityZone"]
        .as_str()
        .expect("zone")
        .to_string();
    let other = if zone.ends_with('b') {
        format!("{}c", &zone[..zone.len() - 1])
    } else {
        format!("{}b", &zone[..zone.len() - 1])
    };
    let subnets = aws_json(
        &sim,
        &[
            "ec2",
            "describe-subnets",
            "--filters",
            &format!("Name=availability-zone,Values={other}"),
        ],
    );
    let subnet = subnets["Subnets"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["MapPublicIpOnLaunch"] == true))
        .and_then(|s| s["SubnetId"].as_str())
        .unwrap_or_else(|| panic!("no public subnet in {other}: {subnets}"))
        .to_string();
    let mut in_subnet = ec2_up_args(&port_s);
    in_subnet.extend(["--subnet", &subnet]);
    let third = json(&p.labship_at(&sim, &in_subnet, &[]));
    assert_eq!(third["action"], "created", "{third}");
    assert!(
        third["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("through a snapshot"),
        "{third}"
    );
    assert_eq!(cat("notes-vol.txt"), "mine");
    let moved = volumes(&[]);
    assert_eq!(moved.len(), 1, "the original stayed: {moved:?}");
    assert_eq!(moved[0]["AvailabilityZone"], other.as_str(), "{moved:?}");
    assert_eq!(
        moved[0]["Attachments"][0]["InstanceId"], third["instance_id"],
        "{moved:?}"
    );
    let moved_id = moved[0]["VolumeId"]
        .as_str()
        .expect("volume id")
        .to_string();
    assert_ne!(moved_id, vol);
    let snapshots = aws_json(
        &sim,
        &[
            "ec2",
            "describe-snapshots",
            "--owner-ids",
            "self",
            "--filters",
            &format!("Name=tag:labship:deployment,Values={}", p.name),
        ],
    );
    assert_eq!(snapshots["Snapshots"], serde_json::json!([]), "{snapshots}");

    let gone = json(&p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &[],
    ));
    assert_eq!(
        gone["data_volumes_deleted"],
        serde_json::json!([moved_id]),
        "{gone}"
    );
    assert!(volumes(&[]).is_empty());
    assert_nothing_left(&p.name).await;
}

/// POST to the simulator's own API (`/_sim/...`); the answer's JSON.
fn sim_post(sim: &str, path: &str, body: Value) -> Value {
    let mut answer = ureq::post(&format!("{sim}{path}"))
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    answer
        .body_mut()
        .read_json()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// A spot deployment: EC2 interrupting it stops it, and `status` says so; only EC2 restarts
/// it, so `up` waits: with no capacity it says so and changes nothing; when capacity returns
/// it brings back the same instance with its token and notebooks.
#[tokio::test(flavor = "multi_thread")]
async fn a_spot_interruption_stops_the_host_and_up_resumes_it() {
    let sim = sim_endpoint();
    let p = Project::default_workload("ec2spot");
    let port = free_port();
    let port_s = port.to_string();
    let mut args = ec2_up_args(&port_s);
    args.push("--spot");
    let mut dry = args.clone();
    dry.push("--dry-run");
    let plan = json(&p.labship_at(&sim, &dry, &[]));
    assert_eq!(plan["market"], "spot", "{plan}");
    let first = json(&p.labship_at(&sim, &args, &[]));
    assert_eq!(first["action"], "created", "{first}");
    let id = first["instance_id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let token = token_of(first["url"].as_str().expect("url"));
    let at = origin_of(first["url"].as_str().expect("url"));
    let pin = pin_of(&first);
    let described = aws_json(&sim, &["ec2", "describe-instances", "--instance-ids", &id]);
    assert_eq!(
        described["Reservations"][0]["Instances"][0]["InstanceLifecycle"], "spot",
        "{described}"
    );
    let container = format!("labship-ec2-{}", p.name);
    docker_ok(&[
        "exec",
        &container,
        "sh",
        "-c",
        "echo before > notes-spot.txt",
    ]);
    let row = status_row(&p, &sim);
    assert_eq!(
        (row["spot"].as_bool(), row["interrupted"].as_bool()),
        (Some(true), Some(false)),
        "{row}"
    );

    // EC2 takes the capacity back.
    let interrupted = sim_post(
        &sim,
        &format!("/_sim/instances/{id}/interrupt"),
        serde_json::json!({"capacity": false}),
    );
    assert_eq!(interrupted["interrupted"], true, "{interrupted}");
    assert_eq!(state_of(&id), "stopped");
    let row = status_row(&p, &sim);
    assert_eq!(row["interrupted"], true, "{row}");
    assert!(
        row["note"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted"),
        "{row}"
    );
    // Only EC2 restarts it: `up` waits (here 5 s) and, with no capacity yet, says so and
    // changes nothing.
    let mut short = ec2_up_args(&port_s);
    if let Some(w) = short.iter_mut().find(|a| **a == "600") {
        *w = "5";
    }
    let refused = json_error(&p.labship_at(&sim, &short, &[]));
    assert_eq!(refused["code"], "labship::ec2::no_capacity", "{refused}");
    assert_eq!(state_of(&id), "stopped");

    // Capacity returns while `up` waits: EC2 starts it, and `up` brings back the same
    // instance, token and notebooks.
    let restart = {
        let (sim, id) = (sim.clone(), id.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(8));
            sim_post(
                &sim,
                &format!("/_sim/instances/{id}/capacity"),
                serde_json::json!({}),
            )
        })
    };
    let second = json(&p.labship_at(&sim, &ec2_up_args(&port_s), &[]));
    let returned = restart.join().expect("the capacity thread");
    assert_eq!(returned["capacity"], true, "{returned}");
    assert_eq!(second["action"], "started", "{second}");
    assert!(
        second["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("spot interruption"),
        "{second}"
    );
    assert_eq!(second["instance_id"], id.as_str(), "{second}");
    assert_eq!(token_of(second["url"].as_str().expect("url")), token);
    assert_eq!(jupyter_status(&at, &pin, Some(&token)), 200);
    let notes = docker_ok(&["exec", &container, "cat", "notes-spot.txt"]);
    assert_eq!(notes.trim(), "before");
    let row = status_row(&p, &sim);
    assert_eq!(row["interrupted"], false, "{row}");

    p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &[],
    );
    assert_nothing_left(&p.name).await;
}

/// A host of two seats, launched with the boot script labship renders for one (`SEATS`), as a
/// class packed two to a host will be: each seat reads its own sealed token, waits for its own
/// data volume (/dev/sdf, /dev/sdg) and serves its own Jupyter on its own port with the
/// host's one certificate, where the other seat's token is refused; the watchdog keeps the
/// host up while one seat works and stops it once both are idle, and after a start says what
/// each serves; terminating the instance leaves nothing of either seat. The instance carries no labship tag: it is nobody's
/// deployment to the other tests (`down --all` among them).
#[tokio::test(flavor = "multi_thread")]
async fn a_host_of_two_seats_serves_each_its_own_jupyter_and_stops_when_both_are_idle() {
    use labship::hosts::ec2::console::{
        markers, of_seat, served, tls_fingerprint, MarkerKind, Phase,
    };
    use labship::hosts::ec2::sealed::parameter;
    use labship::hosts::ec2::userdata::{gzip, render_boot, HostKind, UserDataInputs};

    let sim = sim_endpoint();
    let p = Project::default_workload("seats2");
    let pushed = json(&p.labship(&["push", "-o", "json"]));
    let image = pushed["image_uri"].as_str().expect("image_uri").to_string();
    let registry = image.split('/').next().expect("registry").to_string();
    let seats = [format!("{}-a", p.name), format!("{}-b", p.name)];
    let port = free_ports(2);
    // Tokens as labship makes and seals them.
    let token = || {
        labship::token::JupyterToken::generate()
            .expect("a random token")
            .into_inner()
    };
    let tokens = [token(), token()];
    for (seat, token) in seats.iter().zip(&tokens) {
        aws_json(
            &sim,
            &[
                "ssm",
                "put-parameter",
                "--name",
                &parameter(seat),
                "--type",
                "SecureString",
                "--value",
                token,
            ],
        );
    }
    let names = [seats[0].as_str(), seats[1].as_str()];
    let script = render_boot(&UserDataInputs {
        deployment: names[0],
        seats: &names,
        region: "us-east-1",
        registry: &registry,
        image: &image,
        host_kind: HostKind::EcsAl2023,
        bind: "127.0.0.1".parse().expect("address"),
        port,
        container_port: 8888,
        pull_deadline_secs: 600,
        jupyter_deadline_secs: 600,
        idle_stop_secs: 45,
        ttl_secs: 0,
        data_volume: true,
        inputs: "",
        limits: labship::hosts::Limits::default(),
    })
    .expect("the boot script renders");
    let user_data = p.path().join("user-data.gz");
    std::fs::write(&user_data, gzip(&script)).expect("user-data");
    let launched = aws_json(
        &sim,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            "ami-12345678",
            "--instance-type",
            "t3.medium",
            "--count",
            "1",
            "--user-data",
            &format!("fileb://{}", user_data.display()),
            "--tag-specifications",
            &format!(
                "ResourceType=instance,Tags=[{{Key=test-case,Value={}}}]",
                p.name
            ),
        ],
    );
    let id = launched["Instances"][0]["InstanceId"]
        .as_str()
        .expect("instance id")
        .to_string();
    // A failed assertion below takes the instance (and so both seats' Jupyter) with it.
    struct TerminatedOnPanic<'a>(&'a str, String);
    impl Drop for TerminatedOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = aws_cli(
                    self.0,
                    &["ec2", "terminate-instances", "--instance-ids", &self.1],
                );
            }
        }
    }
    let _terminated = TerminatedOnPanic(&sim, id.clone());
    let zone = launched["Instances"][0]["Placement"]["AvailabilityZone"]
        .as_str()
        .expect("zone")
        .to_string();
    // Each seat's data volume, attached as its slot's device once the instance runs.
    wait_state(&id, "running", Duration::from_secs(120), || {});
    let mut volumes = Vec::new();
    for device in ["/dev/sdf", "/dev/sdg"] {
        let vol = aws_json(
            &sim,
            &[
                "ec2",
                "create-volume",
                "--availability-zone",
                &zone,
                "--size",
                "1",
                "--volume-type",
                "gp3",
            ],
        )["VolumeId"]
            .as_str()
            .expect("volume id")
            .to_string();
        aws_json(
            &sim,
            &[
                "ec2",
                "attach-volume",
                "--volume-id",
                &vol,
                "--instance-id",
                &id,
                "--device",
                device,
            ],
        );
        volumes.push(vol);
    }

    // Both seats ready, each saying so under its own name.
    let t = Instant::now();
    let console = loop {
        let console = console_of(&sim, &id);
        let done = seats.iter().all(|s| {
            markers(&of_seat(&console, s)).iter().any(|m| {
                matches!(
                    m.phase,
                    MarkerKind::Phase(Phase::Ready) | MarkerKind::Error { .. }
                )
            })
        });
        if done {
            break console;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "the seats are not ready after 10 minutes:\n{console}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    let ready_at = Instant::now();
    let address = aws_json(&sim, &["ec2", "describe-instances", "--instance-ids", &id])
        ["Reservations"][0]["Instances"][0]["PublicIpAddress"]
        .as_str()
        .expect("public address")
        .to_string();
    let mut pins = Vec::new();
    for (n, seat) in seats.iter().enumerate() {
        let own = of_seat(&console, seat);
        let got: Vec<MarkerKind> = markers(&own).into_iter().map(|m| m.phase).collect();
        assert_eq!(got, Phase::ALL.map(MarkerKind::Phase), "{seat}:\n{console}");
        pins.push(
            tls_fingerprint(&own)
                .expect("the seat's certificate")
                .to_string(),
        );
        // Its own disk holds its workspace.
        let device = docker_ok(&[
            "volume",
            "inspect",
            "--format",
            "{{index .Options \"device\"}}",
            &format!("labship-ec2-{seat}-work"),
        ]);
        assert!(
            device
                .trim()
                .ends_with(&format!("/ebs/volumes/{}/workspace", volumes[n])),
            "{seat}'s workspace is on {device}"
        );
    }
    // One host, one certificate.
    assert_eq!(pins[0], pins[1]);
    let url = |slot: usize, token: &str| {
        format!(
            "https://{address}:{}/lab?token={token}",
            port + u16::try_from(slot).expect("slot")
        )
    };
    for slot in 0..2 {
        assert_eq!(
            crate::support::jupyter_status(&url(slot, &tokens[slot]), Some(&pins[0]), true),
            200
        );
        // The other seat's token opens nothing here.
        assert_eq!(
            crate::support::jupyter_status(&url(slot, &tokens[1 - slot]), Some(&pins[0]), true),
            403
        );
    }
    assert!(!console.contains(&tokens[0]) && !console.contains(&tokens[1]));

    // The second seat works (a process in its container, as a job in a terminal) past the
    // idle stop of 45 s while the first is idle: the host stays up.
    docker_ok(&[
        "exec",
        "-d",
        &format!("labship-ec2-{}", seats[1]),
        "timeout",
        "75",
        "python3",
        "-c",
        "while True: pass",
    ]);
    while ready_at.elapsed() < Duration::from_secs(65) {
        assert_eq!(
            state_of(&id),
            "running",
            "the host stopped while its second seat worked:\n{}",
            console_of(&sim, &id)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    // Both idle: the watchdog stops the host.
    wait_state(&id, "stopped", Duration::from_secs(240), || {});
    assert!(
        console_of(&sim, &id).contains("labship: idle-stop idle="),
        "{}",
        console_of(&sim, &id)
    );

    // Started again: Docker brings both seats back, the watchdog says on the new boot's
    // console what each serves, and each takes its own token again.
    aws_json(&sim, &["ec2", "start-instances", "--instance-ids", &id]);
    wait_state(&id, "running", Duration::from_secs(120), || {});
    let t = Instant::now();
    loop {
        let console = console_of(&sim, &id);
        if seats
            .iter()
            .all(|s| served(&of_seat(&console, s)).is_some())
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the watchdog did not say what both seats serve after the start:\n{console}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    for (slot, token) in tokens.iter().enumerate() {
        assert_eq!(
            crate::support::jupyter_status(&url(slot, token), Some(&pins[0]), true),
            200
        );
    }

    aws_json(&sim, &["ec2", "terminate-instances", "--instance-ids", &id]);
    wait_state(&id, "terminated", Duration::from_secs(120), || {});
    for seat in &seats {
        let label = format!("label=dev.labship.ec2.deployment={seat}");
        assert_eq!(
            docker_ok(&["ps", "-aq", "--filter", &label]).trim(),
            "",
            "{seat}"
        );
        assert_eq!(
            docker_ok(&["volume", "ls", "-q", "--filter", &label]).trim(),
            "",
            "{seat}"
        );
        let out = aws_cli(
            &sim,
            &["ssm", "delete-parameter", "--name", &parameter(seat)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for vol in &volumes {
        let out = aws_cli(&sim, &["ec2", "delete-volume", "--volume-id", vol]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}
