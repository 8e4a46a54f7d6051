//! Fault injection: `up --ec2` → `token` → `down` while the simulator answers a share of the
//! AWS calls with throttling or a server error (before they reach moto), or applies a share
//! of the mutating calls and then loses the answer (the SDK sends them again). Every run
//! must succeed, launch exactly one instance (one per seat for a class), and leave nothing
//! behind.
//!
//! One seed per mode runs in CI; seeds 2-5 (and 6-7 for lost answers: the data volume's
//! CreateVolume and AttachVolume) run with `--include-ignored`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::driver::*;
use crate::support::*;

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// 20 % of all calls: RequestLimitExceeded/Throttling or a 500, not forwarded.
    Busy,
    /// 10 % of mutating calls: applied by moto, then answered with a 500.
    LostAnswers,
}

/// Mutating calls that must not make a second resource when the SDK sends them again.
const CRITICAL: [&str; 7] = [
    "ec2:RunInstances",
    "ec2:CreateSecurityGroup",
    "ecr:CreateRepository",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:TerminateInstances",
    "ec2:CreateVolume",
    "ec2:AttachVolume",
];

async fn injected(mode: Mode, seed: u64) {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload(&format!("f{seed}"));
    let deployment = p.name.clone();
    let faults = Faults::new(&sim, &format!("{mode:?}{seed}"));
    let env = faults.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let rules = match mode {
        Mode::Busy => json!([{"action": "*", "share": 0.2, "fault": "throttle-or-5xx"}]),
        // One of the calls whose retry most needs to be idempotent always loses its answer
        // (a different one per seed), and 10 % of the others at random.
        Mode::LostAnswers => json!([
            {"action": CRITICAL[(seed as usize - 1) % CRITICAL.len()], "nth": 1, "fault": "lose-response"},
            {"action": "mutating", "share": 0.1, "fault": "lose-response"},
        ]),
    };
    faults.set(seed, rules);
    let port = free_port().to_string();
    let up: Value = json(&p.labship_at(&sim, &ec2_up_args(&port), &env));
    let url = up["url"].as_str().expect("url").to_string();
    assert_eq!(report_answers(&up), 200, "{mode:?} {seed}: {url}");
    let token: Value = json(&p.labship_at(&sim, &["token", "--ec2", "-o", "json"], &env));
    assert!(url.contains(token["token"].as_str().expect("token")));
    json(&p.labship_at(
        &sim,
        &ec2_down_args(&["--delete-data", "--purge-images"]),
        &env,
    ));
    let report = faults.report();
    let fired = report["fired"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        fired > 0,
        "{mode:?} {seed}: no fault was injected: {report}"
    );
    eprintln!(
        "{mode:?} seed {seed}: {fired} faults over {} calls",
        report["calls"]
            .as_object()
            .map(|c| c.values().filter_map(Value::as_u64).sum::<u64>())
            .unwrap_or(0)
    );

    // Exactly one instance was ever launched, and nothing is left.
    let ec2 = ec2_client(&rig.aws_endpoint);
    assert_eq!(
        launched(&ec2, &deployment).await,
        1,
        "{mode:?} {seed}: instances launched"
    );
    let left = aws_leftovers(&rig.aws_endpoint, &deployment, false).await;
    assert!(left.is_empty(), "{mode:?} {seed}: left in moto: {left:?}");
}

/// How many instances were ever launched for the deployment (terminated ones included).
async fn launched(ec2: &aws_sdk_ec2::Client, deployment: &str) -> usize {
    tagged(ec2, "labship:deployment", deployment).await
}

/// How many instances were ever launched with the tag `key` = `value` (terminated ones
/// included). A class's seats carry `labship:class` from their launch, their own deployment
/// tag only once it could be set after it.
async fn tagged(ec2: &aws_sdk_ec2::Client, key: &str, value: &str) -> usize {
    let all = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    all.reservations().iter().map(|r| r.instances().len()).sum()
}

macro_rules! case {
    ($test:ident, $mode:expr, $seed:expr) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $test() {
            injected($mode, $seed).await;
        }
    };
    (ignore $test:ident, $mode:expr, $seed:expr) => {
        #[tokio::test(flavor = "multi_thread")]
        #[ignore = "exhaustive fault injection: --include-ignored"]
        async fn $test() {
            injected($mode, $seed).await;
        }
    };
}

case!(busy_aws_seed_1, Mode::Busy, 1);
case!(lost_answers_seed_1, Mode::LostAnswers, 1);
case!(ignore busy_aws_seed_2, Mode::Busy, 2);
case!(ignore busy_aws_seed_3, Mode::Busy, 3);
case!(ignore busy_aws_seed_4, Mode::Busy, 4);
case!(ignore busy_aws_seed_5, Mode::Busy, 5);
case!(ignore lost_answers_seed_2, Mode::LostAnswers, 2);
case!(ignore lost_answers_seed_3, Mode::LostAnswers, 3);
case!(ignore lost_answers_seed_4, Mode::LostAnswers, 4);
case!(ignore lost_answers_seed_5, Mode::LostAnswers, 5);
case!(ignore lost_answers_seed_6, Mode::LostAnswers, 6);
case!(ignore lost_answers_seed_7, Mode::LostAnswers, 7);

/// A class of three seats on EC2 while AWS throttles or fails a share of the calls (10 % in
/// CI, 20 % in the exhaustive seeds): every seat comes up (the SDK's adaptive retry backs the
/// seats off together), each with exactly one instance, and `down` of the class leaves
/// nothing. The simulator throttles at random, whatever the rate, which the adaptive rate
/// limiter answers by slowing down further: the 20 % runs take minutes.
async fn busy_class(seed: u64, share: f64) {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload(&format!("fc{seed}"));
    let class = p.name.clone();
    let faults = Faults::new(&sim, &format!("class{seed}"));
    let env = faults.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    faults.set(
        seed,
        json!([{"action": "*", "share": share, "fault": "throttle-or-5xx"}]),
    );
    // The seats' one port (each has an instance, so an address, of its own).
    let port = free_port().to_string();
    let mut args = ec2_up_args(&port);
    args.extend(["--seats", "3"]);
    let up: Value = json(&p.labship_at(&sim, &args, &env));
    assert_eq!(up["ready"], 3, "seed {seed}: {up}");
    let roster: Value = json(&p.labship_at(&sim, &["token", "--ec2", "-o", "json"], &env));
    assert_eq!(roster["ready"], 3, "seed {seed}: {roster}");
    json(&p.labship_at(&sim, &ec2_down_args(&["--delete-data"]), &env));
    let report = faults.report();
    let fired = report["fired"].as_array().map(Vec::len).unwrap_or(0);
    assert!(fired > 0, "seed {seed}: no fault was injected: {report}");
    eprintln!("class seed {seed}: {fired} faults");
    // One instance per seat: counted by the class, which every seat's instance has from
    // its launch (a seat's own tags may have been refused by the faults).
    let ec2 = ec2_client(&rig.aws_endpoint);
    assert_eq!(
        tagged(&ec2, "labship:class", &class).await,
        3,
        "seed {seed}: instances of the class"
    );
    nothing_left_of_class(&rig.aws_endpoint, &class, 3, &format!("seed {seed}")).await;
}

/// Nothing of the class's seats `1..=seats` is left in moto, nor the group they shared
/// (`after`: when, for the message).
async fn nothing_left_of_class(endpoint: &str, class: &str, seats: usize, after: &str) {
    for seat in 1..=seats {
        let deployment = format!("{class}-{seat}");
        let left = aws_leftovers(endpoint, &deployment, false).await;
        assert!(
            left.is_empty(),
            "left of seat {seat} after {after}: {left:?}"
        );
    }
    let group = class_group(endpoint, class);
    assert!(
        group.is_none(),
        "the class's group after {after}: {group:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_aws_class_seed_1() {
    busy_class(1, 0.1).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "exhaustive fault injection: --include-ignored"]
async fn busy_aws_class_seed_2() {
    busy_class(2, 0.2).await;
}

/// A class whose instance type EC2 has no capacity for (every RunInstances of t3.medium is
/// answered InsufficientInstanceCapacity, the SDK's retries included). Without a fallback:
/// every seat is reported with the cause, the command fails, and nothing is left of the
/// seats (their security groups and tokens go with the refused launch). The account's vCPU
/// quota used up: the seats fail with it at once, not tried again (the seats that started
/// use the quota, and a fallback type of the same quota group meets the same limit), and
/// nothing is left of them. With capacity for one t3.medium only and `--fallback-type
/// t3a.medium`: the one RunInstances for both seats launches one (the first seat's), the
/// second batch starts the other on t3a.medium, the roster says so, and `down` leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn no_capacity_class_falls_back_to_another_type() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("cap");
    let class = p.name.clone();
    let faults = Faults::new(&sim, "capacity");
    let env = faults.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    faults.set(
        1,
        json!([{"action": "ec2:RunInstances", "param": {"InstanceType": "t3.medium"}, "fault": "capacity"}]),
    );
    let port = free_port().to_string();
    let mut args = ec2_up_args(&port);
    args.extend(["--seats", "2", "--instance-type", "t3.medium"]);

    let refused = p.labship_at(&sim, &args, &env);
    assert!(!refused.status.success(), "no capacity fails the command");
    let report: Value = serde_json::from_slice(&refused.stdout).expect("the roster as JSON");
    assert_eq!(
        (report["ready"].as_u64(), report["failed"].as_u64()),
        (Some(0), Some(2)),
        "{report}"
    );
    for row in report["seats"].as_array().expect("seats") {
        let error = row["error"].as_str().unwrap_or_default();
        assert!(error.contains("InsufficientInstanceCapacity"), "{row}");
    }
    let err = stderr(&refused);
    assert!(err.contains("starting them again on t3.medium"), "{err}");
    // Nothing launched, and nothing left of the seats.
    let nothing_of_the_seats = |after: &'static str| {
        let (endpoint, class) = (rig.aws_endpoint.clone(), class.clone());
        async move {
            let ec2 = ec2_client(&endpoint);
            assert_eq!(tagged(&ec2, "labship:class", &class).await, 0, "{after}");
            // No seat started: the group they were to share goes too.
            nothing_left_of_class(&endpoint, &class, 2, after).await;
        }
    };
    nothing_of_the_seats("the refused launch").await;

    faults.set(
        1,
        json!([{"action": "ec2:RunInstances", "param": {"InstanceType": "t3.medium"}, "fault": "vcpu-quota"}]),
    );
    let refused = p.labship_at(&sim, &args, &env);
    assert!(!refused.status.success(), "no quota fails the command");
    let report: Value = serde_json::from_slice(&refused.stdout).expect("the roster as JSON");
    for row in report["seats"].as_array().expect("seats") {
        let error = row["error"].as_str().unwrap_or_default();
        assert!(error.contains("VcpuLimitExceeded"), "{row}");
    }
    let err = stderr(&refused);
    assert!(!err.contains("starting them again"), "{err}");
    nothing_of_the_seats("the quota").await;

    faults.set(
        1,
        json!([{"action": "ec2:RunInstances", "param": {"InstanceType": "t3.medium"}, "launch_at_most": 1}]),
    );
    args.extend(["--fallback-type", "t3a.medium"]);
    let up: Value = json(&p.labship_at(&sim, &args, &env));
    assert_eq!(up["ready"], 2, "{up}");
    let fallbacks: Vec<&Value> = up["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|row| &row["fallback_type"])
        .collect();
    assert_eq!(fallbacks, [&Value::Null, &json!("t3a.medium")], "{up}");
    // One RunInstances for both seats (one launched), one for the seat without an instance.
    assert_eq!(faults.report()["calls"]["ec2:RunInstances"], 2, "{up}");
    let instances = class_instances(&rig.aws_endpoint, &class);
    let mut types: Vec<(&str, &str)> = instances
        .iter()
        .map(|i| {
            let tag = |key: &str| {
                i["Tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["Key"] == key)
                    .and_then(|t| t["Value"].as_str())
                    .unwrap_or_default()
            };
            (
                tag("labship:seat"),
                i["InstanceType"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [("1", "t3.medium"), ("2", "t3a.medium")],
        "{instances:?}"
    );
    // Both in the group the class's seats share (which the down below removes).
    let group = class_group(&rig.aws_endpoint, &class).expect("the class's group");
    for i in &instances {
        assert_eq!(i["SecurityGroups"][0]["GroupId"], group["GroupId"], "{i}");
    }
    json(&p.labship_at(&sim, &ec2_down_args(&["--delete-data"]), &env));
    nothing_left_of_class(&rig.aws_endpoint, &class, 2, "down").await;
}

/// A class whose seats, launched by one RunInstances, cannot be given their own tags after
/// it (the first CreateTags is answered as EC2 answers for an instance it does not know yet,
/// and is tried again; then every CreateTags is refused): each instance is still its seat, by its launch index
/// among the seats its `labship:launch-seats` tag lists. The seats come up; `status` lists
/// them; `up` again launches nothing (each seat finds its instance, and tries its tags
/// again); `down` removes them and leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn seats_launched_together_are_their_instances_without_their_own_tags() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("untagged");
    let class = p.name.clone();
    let faults = Faults::new(&sim, "untagged");
    let env = faults.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    faults.set(
        1,
        json!([
            {"action": "ec2:CreateTags", "nth": 1, "fault": "instance-not-found"},
            {"action": "ec2:CreateTags", "fault": "unauthorized"},
        ]),
    );
    let port = free_port().to_string();
    let mut args = ec2_up_args(&port);
    args.extend(["--seats", "2"]);
    let up: Value = json(&p.labship_at(&sim, &args, &env));
    assert_eq!(up["ready"], 2, "{up}");
    // The instance EC2 did not know yet was tagged again; a refusal is not tried again.
    let report = faults.report();
    let fired: Vec<&str> = report["fired"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["action"] == "ec2:CreateTags")
        .filter_map(|f| f["what"].as_str())
        .collect();
    assert_eq!(
        fired,
        ["instance-not-found", "unauthorized", "unauthorized"],
        "{report}"
    );
    assert_eq!(report["calls"]["ec2:CreateTags"], 3, "{report}");
    let instances = class_instances(&rig.aws_endpoint, &class);
    assert_eq!(instances.len(), 2, "{instances:?}");
    for i in &instances {
        let keys: Vec<&str> = i["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["Key"].as_str())
            .collect();
        assert!(keys.contains(&"labship:launch-seats"), "{i}");
        assert!(!keys.contains(&"labship:deployment"), "{i}");
    }
    let status: Value = json(&p.labship_at(&sim, &["status", "--ec2", "-o", "json"], &env));
    let mut seats: Vec<(&str, &str)> = status["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .filter(|d| d["seat"]["class"] == class.as_str())
        .filter_map(|d| Some((d["name"].as_str()?, d["seat"]["seat"].as_str()?)))
        .collect();
    seats.sort_unstable();
    let names = [format!("{class}-1"), format!("{class}-2")];
    assert_eq!(
        seats,
        [(names[0].as_str(), "1"), (names[1].as_str(), "2")],
        "{status}"
    );

    let out = p.labship_at(&sim, &args, &env);
    let again: Value = json(&out);
    assert_eq!(again["ready"], 2, "{again}");
    assert_eq!(faults.report()["calls"]["ec2:RunInstances"], 1, "{again}");
    assert_eq!(class_instances(&rig.aws_endpoint, &class).len(), 2);
    // Each seat tries to set its own tags again, and says it could not.
    let err = stderr(&out);
    assert_eq!(
        err.matches("by its launch index; its own tags still cannot be set")
            .count(),
        2,
        "{err}"
    );

    // `down` finds them by their launch index too: nothing of the class is left in any state
    // but terminated.
    json(&p.labship_at(&sim, &ec2_down_args(&["--delete-data"]), &env));
    let left = aws_json(
        &rig.aws_endpoint,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            &format!("Name=tag:labship:class,Values={class}"),
            "Name=instance-state-name,Values=pending,running,stopping,stopped",
        ],
    );
    assert_eq!(left["Reservations"], json!([]), "{left}");
    nothing_left_of_class(&rig.aws_endpoint, &class, 2, "down").await;
}

/// Ctrl-C while a class's seats gather before their one RunInstances: one seat's token is
/// held 8 s by the simulator and the signal comes 2 s into that, while the other seat waits
/// at the launch. labship stops (exit 130, the roster says so) and launches nothing; a plain
/// `up` again brings both seats up with one RunInstances. A `down` stopped once the
/// instances are terminating ends as interrupted too, and `down` again leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_the_seats_gather_launches_nothing_and_up_again_converges() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("gather");
    let class = p.name.clone();
    let faults = Faults::new(&sim, "gather");
    let env = faults.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // labship on the simulator with the scope's key, to be signalled.
    let command = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("AWS_ENDPOINT_URL", &sim);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd
    };
    faults.set(
        1,
        json!([{"action": "ssm:PutParameter", "nth": 2, "delay": 8}]),
    );
    // The signal 2 s after the second token's call came (and was held): the first seat has
    // long reached the launch, and the stop is seen before the held call is answered.
    let report = faults.reader();
    let held = std::sync::Mutex::new(None::<std::time::Instant>);
    let trigger = Trigger::Engine(Box::new(move || {
        let mut held = held.lock().expect("lock");
        if held.is_none() && report()["fired"].as_array().is_some_and(|f| !f.is_empty()) {
            *held = Some(std::time::Instant::now());
        }
        held.is_some_and(|t| t.elapsed() >= Duration::from_secs(2))
    }));
    let port = free_port().to_string();
    let mut args = ec2_up_args(&port);
    args.extend(["--seats", "2"]);
    let ended = run(
        command(&args),
        None,
        trigger,
        Sig::Int,
        Duration::from_secs(600),
    );
    // Exit 130; on stdout the roster alone, which says it was interrupted and each seat
    // where it stopped.
    assert_eq!(ended.status.code(), Some(130), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("labship::class::interrupted"),
        "{}",
        ended.stderr
    );
    let roster: Value = serde_json::from_str(&ended.stdout)
        .unwrap_or_else(|e| panic!("one JSON document: {e}: {}", ended.stdout));
    assert_eq!(roster["interrupted"], true, "{roster}");
    assert_eq!(roster["ready"], 0, "{roster}");
    for seat in roster["seats"].as_array().expect("seats") {
        let error = seat["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("interrupted: stopped before"), "{seat}");
    }
    let report = faults.report();
    assert_eq!(report["calls"]["ec2:RunInstances"], Value::Null, "{report}");
    let ec2 = ec2_client(&rig.aws_endpoint);
    assert_eq!(tagged(&ec2, "labship:class", &class).await, 0);

    faults.set(2, json!([]));
    let again: Value = json(&p.labship_at(&sim, &args, &env));
    assert_eq!(again["ready"], 2, "{again}");
    assert_eq!(faults.report()["calls"]["ec2:RunInstances"], 1, "{again}");

    faults.set(
        3,
        json!([{"action": "ec2:TerminateInstances", "nth": 1, "signal": "INT", "when": "after"}]),
    );
    let down = ec2_down_args(&["--delete-data"]);
    let ended = run(
        command(&down),
        Some(&faults),
        Trigger::Simulator,
        Sig::Int,
        Duration::from_secs(600),
    );
    assert_stopped_by(&ended, Sig::Int, "Ctrl-C during the class's down");
    faults.set(4, json!([]));
    json(&p.labship_at(&sim, &down, &env));
    nothing_left_of_class(&rig.aws_endpoint, &class, 2, "down").await;
}

/// A job whose host's launch never gets an answer (every RunInstances is applied and its
/// answer lost, the SDK's retries included: the client token makes them one instance):
/// `run --ec2` fails, and the host EC2 made all the same is terminated at once with the
/// run's role and its staged job gone, instead of waiting for its registry login to fail.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_host_whose_launch_answers_are_all_lost_is_ended_with_its_role() {
    let rig = rig();
    let sim = sim_endpoint();
    let p = Project::default_workload("lostjob");
    // Long enough to still run when labship gives up on the launch (its SDK retries, then
    // its own within the new role's propagation allowance).
    p.write("hello.py", "import time\ntime.sleep(900)\n");
    let output = unique("labship-lost");
    aws_json(
        &rig.aws_endpoint,
        &["s3api", "create-bucket", "--bucket", &output],
    );
    let faults = Faults::new(&sim, "lostjob");
    let env = faults.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    faults.set(
        1,
        json!([{"action": "ec2:RunInstances", "share": 1.0, "fault": "lose-response"}]),
    );
    let uri = format!("s3://{output}/runs");
    let out = p.labship_at(
        &sim,
        &[
            "run",
            "hello.py",
            "--ec2",
            "--output-uri",
            &uri,
            "-o",
            "json",
        ],
        &env,
    );
    faults.clear();
    assert!(!out.status.success(), "every launch answer was lost");
    let err = stderr(&out);
    assert!(err.contains("all the same: terminating it"), "{err}");
    let described = aws_json(
        &rig.aws_endpoint,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            &format!("Name=tag:labship:job-of,Values={}", p.name),
        ],
    );
    let hosts: Vec<&Value> = described["Reservations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["Instances"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(hosts.len(), 1, "one host for all the retries: {described}");
    let state = hosts[0]["State"]["Name"].as_str().unwrap_or_default();
    assert!(
        matches!(state, "shutting-down" | "terminated"),
        "the host is ended: {state}"
    );
    let run_id = hosts[0]["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["Key"] == "labship:job")
        .and_then(|t| t["Value"].as_str())
        .expect("the run's tag");
    let role = aws_cli(
        &rig.aws_endpoint,
        &[
            "iam",
            "get-role",
            "--role-name",
            &format!("labship-job-{run_id}"),
        ],
    );
    assert!(!role.status.success(), "the run's role is gone");
    // Nor is the staged job left in the results bucket, nor a run folder here.
    let listed = aws_json(
        &rig.aws_endpoint,
        &["s3api", "list-objects-v2", "--bucket", &output],
    );
    let staged: Vec<&str> = listed["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["Key"].as_str())
        .filter(|k| k.contains("/.labship-job/"))
        .collect();
    assert!(staged.is_empty(), "{listed}");
    assert!(!p.path().join("runs").join(run_id).exists());
}
