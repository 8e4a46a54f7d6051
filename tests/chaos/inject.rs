//! Fault injection: `up --ec2` → `token` → `down` while the simulator answers a share of the
//! AWS calls with throttling or a server error (before they reach moto), or applies a share
//! of the mutating calls and then loses the answer (the SDK sends them again). Every run
//! must succeed, launch exactly one instance, and leave nothing behind.
//!
//! One seed per mode runs in CI; seeds 2-5 (and 6-7 for lost answers: the data volume's
//! CreateVolume and AttachVolume) run with `--include-ignored`.

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
    let all = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:labship:deployment")
                .values(&deployment)
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    let launched: usize = all.reservations().iter().map(|r| r.instances().len()).sum();
    assert_eq!(launched, 1, "{mode:?} {seed}: instances launched");
    let left = aws_leftovers(&rig.aws_endpoint, &deployment, false).await;
    assert!(left.is_empty(), "{mode:?} {seed}: left in moto: {left:?}");
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
