//! The IAM documents in `infra/`, checked against the code that needs them. The AWS calls
//! labship makes are found by scanning `src/` for SDK operations (`self.ec2.run_instances()`
//! is `ec2:RunInstances`); `infra/operator-policy.json` must allow each of them, grant nothing
//! else, and keep every mutation on labship's own (named or tagged) resources.
//!
//! moto does not take part: its IAM enforcement ignores condition keys (a missing key passes)
//! and checks every non-IAM call against the resource `*`, so a correctly scoped policy would
//! be refused there and a wrong condition would pass (moto 5.x, `moto/iam/access_control.py`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

const MANAGED_BY: &str = "labship:managed-by";
const MANAGED_BY_VALUE: &str = "labship";

/// Actions that no SDK call in `src/` names but that labship's calls need.
const NEEDED_WITHOUT_SDK_CALL: [(&str, &str); 11] = [
    (
        "iam:PassRole",
        "RunInstances with an instance profile; AddRoleToInstanceProfile",
    ),
    ("iam:TagRole", "CreateRole with Tags (a run's role)"),
    (
        "iam:TagInstanceProfile",
        "CreateInstanceProfile with Tags (a run's profile)",
    ),
    (
        "ec2:CreateTags",
        "TagSpecifications on RunInstances, CreateSecurityGroup, CreateVolume and CreateSnapshot",
    ),
    ("ecr:BatchCheckLayerAvailability", "docker push"),
    ("ecr:InitiateLayerUpload", "docker push"),
    ("ecr:UploadLayerPart", "docker push"),
    ("ecr:CompleteLayerUpload", "docker push"),
    ("ecr:PutImage", "docker push"),
    ("ecr:BatchGetImage", "docker push (manifest lookups)"),
    (
        "ssm:AddTagsToResource",
        "PutParameter with Tags (the sealed token)",
    ),
];

/// IAM writes the code makes only as an administrator: the shared instance role's legacy
/// policies detached, the job hosts' permissions boundary created and removed. The operator
/// policy grants none of them (`src/aws/iam.rs` turns the AccessDenied into
/// `InstanceRoleMissing` or `BoundaryMissing`, `down --all` into "kept").
const ADMIN_ONLY: [&str; 3] = [
    "iam:CreatePolicy",
    "iam:DeletePolicy",
    "iam:DetachRolePolicy",
];

/// IAM writes the operator makes, on a run's own role and profile only (`role/labship/jobs/*`,
/// `instance-profile/labship/jobs/*`), never on the shared instance role (an administrator's)
/// nor anything else; a role only under the job boundary.
const JOB_ROLE_ONLY: [&str; 10] = [
    "iam:AddRoleToInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:CreateRole",
    "iam:DeleteInstanceProfile",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:PutRolePolicy",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:TagInstanceProfile",
    "iam:TagRole",
];

const JOB_ROLE: &str =
    "arn:aws:iam::123456789012:role/labship/jobs/eu-west-1/labship-job-20261201-101010-abcd";
const JOB_PROFILE: &str = "arn:aws:iam::123456789012:instance-profile/labship/jobs/eu-west-1/labship-job-20261201-101010-abcd";
const BOUNDARY: &str = "arn:aws:iam::123456789012:policy/labship/labship-job-boundary";
/// The boundary as the operator policy's condition names it.
const BOUNDARY_IN_POLICY: &str =
    "arn:aws:iam::${aws:PrincipalAccount}:policy/labship/labship-job-boundary";
const DEP_ROLE: &str =
    "arn:aws:iam::123456789012:role/labship/deployments/eu-west-1/demo/labship-dep-0123456789abcdef";
const DEP_PROFILE: &str = "arn:aws:iam::123456789012:instance-profile/labship/deployments/eu-west-1/demo/labship-dep-0123456789abcdef";
const DEP_BOUNDARY: &str = "arn:aws:iam::123456789012:policy/labship/labship-deployment-boundary";
const DEP_BOUNDARY_IN_POLICY: &str =
    "arn:aws:iam::${aws:PrincipalAccount}:policy/labship/labship-deployment-boundary";

/// The two kinds of host role the operator makes: (what, role, profile, the boundary, as the
/// operator policy names it, its document, how the code names its ARN).
const HOST_ROLES: [(&str, &str, &str, &str, &str, &str, &str); 2] = [
    (
        "job",
        JOB_ROLE,
        JOB_PROFILE,
        BOUNDARY,
        BOUNDARY_IN_POLICY,
        "job-boundary-policy.json",
        ".permissions_boundary(job_boundary_arn(",
    ),
    (
        "deployment",
        DEP_ROLE,
        DEP_PROFILE,
        DEP_BOUNDARY,
        DEP_BOUNDARY_IN_POLICY,
        "deployment-boundary-policy.json",
        ".permissions_boundary(Boundary::Deployment.arn(",
    ),
];

/// Prefixes of actions that change something: never on `*` without a condition.
const MUTATING: &str = "create delete run terminate put attach detach add remove authorize \
    revoke passrole sendcommand batchdelete upload initiate complete tag untag";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub(crate) fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn read_json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

// ---- the code side ------------------------------------------------------------------------

/// Every `src/**/*.rs` file with its text (whole-line comments dropped: prose about a call is
/// not a call).
fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(repo_path("src")) {
        let entry = entry.expect("walk src/");
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            files.push((path.to_path_buf(), code));
        }
    }
    files
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The IAM action of an SDK method. A waiter polls a describe operation of its own; S3's
/// operations are authorized under other names.
fn iam_action(service: &str, method: &str) -> String {
    match (service, method) {
        ("s3", "head_bucket" | "list_objects_v2") => return "s3:ListBucket".into(),
        ("s3", "get_object") => return "s3:GetObject".into(),
        // A multipart upload is authorized as PutObject, all but its abort.
        (
            "s3",
            "put_object" | "create_multipart_upload" | "upload_part" | "complete_multipart_upload",
        ) => return "s3:PutObject".into(),
        ("s3", "abort_multipart_upload") => return "s3:AbortMultipartUpload".into(),
        ("s3", "delete_object") => return "s3:DeleteObject".into(),
        ("s3", other) => panic!(
            "s3 `{other}`: add the action it is authorized as to iam_action() in tests/e2e/policy.rs"
        ),
        _ => {}
    }
    let Some(what) = method.strip_prefix("wait_until_") else {
        return format!("{service}:{}", pascal(method));
    };
    let op = match (service, what) {
        ("ec2", w) if w.starts_with("instance_status") || w.starts_with("system_status") => {
            "DescribeInstanceStatus"
        }
        ("ec2", w) if w.starts_with("instance_") => "DescribeInstances",
        ("ec2", w) if w.starts_with("security_group") => "DescribeSecurityGroups",
        ("ec2", w) if w.starts_with("image_") => "DescribeImages",
        ("ec2", w) if w.starts_with("volume_") => "DescribeVolumes",
        ("ec2", w) if w.starts_with("snapshot_") => "DescribeSnapshots",
        ("ssm", "command_executed") => "GetCommandInvocation",
        ("iam", w) if w.starts_with("role_") => "GetRole",
        ("iam", w) if w.starts_with("instance_profile_") => "GetInstanceProfile",
        _ => panic!(
            "{service} waiter `{method}`: add the operation it polls to iam_action() in tests/e2e/policy.rs"
        ),
    };
    format!("{service}:{op}")
}

/// The IAM actions of the SDK calls in `src/`: `.ec2.<op>(`, `.iam.<op>(`, `.ssm.<op>(` in
/// files that use that SDK, and `.client.<op>(` in files that use the ECR SDK. Whitespace is
/// removed first, so a call split over lines (`self\n    .ec2\n    .describe_vpcs()`) counts.
fn actions_in_code() -> BTreeSet<String> {
    const CLIENTS: [(&str, &str, &str); 5] = [
        ("aws_sdk_ec2", ".ec2.", "ec2"),
        ("aws_sdk_iam", ".iam.", "iam"),
        ("aws_sdk_ssm", ".ssm.", "ssm"),
        ("aws_sdk_ecr", ".client.", "ecr"),
        ("aws_sdk_s3", ".client.", "s3"),
    ];
    // Methods of the client itself, not operations.
    const NOT_OPERATIONS: [&str; 3] = ["clone", "config", "to_owned"];
    let mut found = BTreeSet::new();
    for (_, code) in sources() {
        let flat: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        for (sdk, needle, service) in CLIENTS {
            if !code.contains(sdk) {
                continue;
            }
            for (at, _) in flat.match_indices(needle) {
                let rest = &flat[at + needle.len()..];
                let method: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let called = rest[method.len()..].starts_with('(');
                if called && !method.is_empty() && !NOT_OPERATIONS.contains(&method.as_str()) {
                    found.insert(iam_action(service, &method));
                }
            }
        }
    }
    // A scan that finds little is a broken scan, not a small program.
    let expected = [
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "iam:CreateRole",
        "ecr:GetAuthorizationToken",
        "ssm:SendCommand",
        "s3:GetObject",
    ];
    for a in expected {
        assert!(
            found.contains(a),
            "the scan of src/ did not find {a}: {found:?}"
        );
    }
    assert!(
        found.len() >= 25,
        "the scan of src/ found only {} AWS actions: {found:?}",
        found.len()
    );
    found
}

/// What the operator policy must allow: the scanned calls plus what they need besides, less
/// the administrator's.
fn needed_actions() -> BTreeSet<String> {
    let mut all = actions_in_code();
    all.retain(|a| !ADMIN_ONLY.contains(&a.as_str()));
    all.extend(NEEDED_WITHOUT_SDK_CALL.iter().map(|(a, _)| a.to_string()));
    all
}

// ---- the policy side -----------------------------------------------------------------------

#[derive(Debug)]
struct Statement {
    sid: String,
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    condition: Option<Value>,
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .unwrap_or_else(|| panic!("{what}: {i} is not a string"))
                    .to_string()
            })
            .collect(),
        other => panic!("{what} must be a string or a list of strings, not {other}"),
    }
}

fn statements(policy: &Value) -> Vec<Statement> {
    assert_eq!(policy["Version"], "2012-10-17", "policy version");
    let list = policy["Statement"]
        .as_array()
        .expect("Statement must be a list");
    list.iter()
        .map(|s| {
            let sid = s["Sid"].as_str().unwrap_or_default().to_string();
            for inverted in ["NotAction", "NotResource", "NotPrincipal"] {
                assert!(
                    s.get(inverted).is_none(),
                    "{sid}: {inverted} grants by exclusion"
                );
            }
            Statement {
                allow: match s["Effect"].as_str() {
                    Some("Allow") => true,
                    Some("Deny") => false,
                    other => panic!("{sid}: Effect {other:?}"),
                },
                actions: strings(&s["Action"], &format!("{sid}.Action")),
                resources: s
                    .get("Resource")
                    .map(|r| strings(r, &format!("{sid}.Resource")))
                    .unwrap_or_default(),
                condition: s.get("Condition").cloned(),
                sid,
            }
        })
        .collect()
}

fn operator_policy() -> Vec<Statement> {
    statements(&read_json("infra/operator-policy.json"))
}

fn boundary_policy() -> Vec<Statement> {
    statements(&read_json("infra/job-boundary-policy.json"))
}

fn deployment_boundary_policy() -> Vec<Statement> {
    statements(&read_json("infra/deployment-boundary-policy.json"))
}

fn instance_policy() -> Vec<Statement> {
    statements(&read_json("infra/instance-policy.json"))
}

/// IAM's wildcard match: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Statement {
    /// Action names are case-insensitive in IAM.
    fn covers(&self, action: &str) -> bool {
        self.actions
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
    }

    fn reaches(&self, arn: &str) -> bool {
        self.resources.iter().any(|r| glob(r, arn))
    }

    /// The values of `operator` / `key` in the Condition (keys are case-insensitive).
    fn condition(&self, operator: &str, key: &str) -> Option<Vec<String>> {
        let block = self.condition.as_ref()?.get(operator)?.as_object()?;
        block
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| strings(v, &format!("{}.Condition.{operator}.{key}", self.sid)))
    }

    fn requires(&self, operator: &str, key: &str, value: &str) -> bool {
        self.condition(operator, key)
            .is_some_and(|values| values == [value.to_string()])
    }
}

/// The Allow statements that grant `action` on `arn`.
fn granting<'a>(policy: &'a [Statement], action: &str, arn: &str) -> Vec<&'a Statement> {
    policy
        .iter()
        .filter(|s| s.allow && s.covers(action) && s.reaches(arn))
        .collect()
}

/// An ARN a policy's resource pattern reaches (`*` stays `*`): region, account and names
/// filled in.
fn sample_arn(resource: &str) -> String {
    match resource {
        "*" => "*".to_string(),
        r => r
            .replace(":*:*:", ":eu-west-1:123456789012:")
            .replace('*', "demo"),
    }
}

/// A statement's S3 `action` is held to the account's own buckets (`s3:ResourceAccount`).
fn assert_held_to_the_account(s: &Statement, action: &str) {
    assert!(
        s.requires(
            "StringEquals",
            "s3:ResourceAccount",
            "${aws:PrincipalAccount}"
        ),
        "{}: {action} must be held to the account's own buckets",
        s.sid
    );
}

/// `action` on `arn` is granted, and every statement granting it carries the condition
/// `operator` `key` = `value`.
fn assert_granted_only_with(
    policy: &[Statement],
    action: &str,
    arn: &str,
    (operator, key, value): (&str, &str, &str),
) {
    let grants = granting(policy, action, arn);
    assert!(!grants.is_empty(), "{action} on {arn}");
    for s in grants {
        assert!(
            s.requires(operator, key, value),
            "{}: {action} on {arn} must require {operator} {key} = {value}",
            s.sid
        );
    }
}

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn operator_policy_allows_every_aws_call_labship_makes() {
    let policy = operator_policy();
    let needed = needed_actions();
    eprintln!("AWS actions labship needs: {needed:?}");
    let missing: Vec<String> = needed
        .into_iter()
        .filter(|a| !policy.iter().any(|s| s.allow && s.covers(a)))
        .collect();
    assert!(
        missing.is_empty(),
        "infra/operator-policy.json does not allow {missing:?}; labship calls them (src/) or \
         needs them for its calls. Add each to the statement of its resource in the policy, and \
         describe it in infra/README.md"
    );
}

#[test]
fn operator_policy_grants_nothing_labship_does_not_use() {
    let needed = needed_actions();
    let unused: Vec<String> = operator_policy()
        .iter()
        .filter(|s| s.allow)
        .flat_map(|s| s.actions.iter())
        .filter(|granted| {
            !needed
                .iter()
                .any(|n| glob(&granted.to_ascii_lowercase(), &n.to_ascii_lowercase()))
        })
        .cloned()
        .collect();
    assert!(
        unused.is_empty(),
        "infra/operator-policy.json grants {unused:?}, which no call in src/ needs; remove them \
         (or, if a call needs them without naming them, add them to NEEDED_WITHOUT_SDK_CALL in \
         tests/e2e/policy.rs with the reason)"
    );
}

#[test]
fn operator_policy_has_no_wildcard_grants() {
    for s in operator_policy().iter().filter(|s| s.allow) {
        for action in &s.actions {
            assert!(
                !action.contains('*') && !action.contains('?'),
                "{}: the action {action} is a wildcard; name each action",
                s.sid
            );
        }
        let on_everything = s.resources.iter().any(|r| r == "*");
        if on_everything && s.condition.is_none() {
            for action in &s.actions {
                let name = action
                    .split_once(':')
                    .map_or(action.as_str(), |(_, n)| n)
                    .to_ascii_lowercase();
                let mutating = MUTATING.split_whitespace().any(|m| name.starts_with(m));
                assert!(
                    !mutating,
                    "{}: {action} changes resources, yet is granted on \"*\" without a condition",
                    s.sid
                );
            }
        }
    }
}

#[test]
fn operator_policy_keeps_to_labship_resources() {
    let policy = operator_policy();
    let tagged = |s: &Statement| {
        s.requires(
            "StringEquals",
            &format!("aws:ResourceTag/{MANAGED_BY}"),
            MANAGED_BY_VALUE,
        )
    };
    let created_tagged = |s: &Statement| {
        s.requires(
            "StringEquals",
            &format!("aws:RequestTag/{MANAGED_BY}"),
            MANAGED_BY_VALUE,
        )
    };
    // `action` reaches `ours` and not `theirs`.
    let only_ours = |action: &str, ours: &str, theirs: &str| {
        assert!(
            !granting(&policy, action, ours).is_empty(),
            "{action} on {ours}"
        );
        assert!(
            granting(&policy, action, theirs).is_empty(),
            "{action} reaches {theirs}"
        );
    };

    // ECR: only repositories under labship/ (the default `labship/<name>`).
    let ours = "arn:aws:ecr:eu-west-1:123456789012:repository/labship/demo";
    let theirs = "arn:aws:ecr:eu-west-1:123456789012:repository/payments/api";
    for action in needed_actions().iter().filter(|a| a.starts_with("ecr:")) {
        if action == "ecr:GetAuthorizationToken" {
            continue; // no resource-level permissions
        }
        only_ours(action, ours, theirs);
    }

    // S3: the job data buckets by name (`labship-*`), not every bucket of the account.
    for action in needed_actions().iter().filter(|a| a.starts_with("s3:")) {
        if action == "s3:DeleteObject" {
            // Only a staged job that never started: not a run's results, not other data.
            only_ours(
                action,
                "arn:aws:s3:::labship-course/runs/r1/.labship-job/job.json",
                "arn:aws:s3:::labship-course/runs/r1/analysis.ipynb",
            );
            only_ours(
                action,
                "arn:aws:s3:::labship-course/r1/.labship-job/runner.py",
                "arn:aws:s3:::payroll/r1/.labship-job/runner.py",
            );
            continue;
        }
        let (ours, theirs) = if action == "s3:ListBucket" {
            ("arn:aws:s3:::labship-course", "arn:aws:s3:::payroll")
        } else {
            (
                "arn:aws:s3:::labship-course/week1/a.csv",
                "arn:aws:s3:::payroll/2026/march.csv",
            )
        };
        only_ours(action, ours, theirs);
    }

    // IAM: the instance role and profile by their path and name, the job boundary by name,
    // runs' roles and profiles by their path; nothing else.
    let role = "arn:aws:iam::123456789012:role/labship/labship-instance";
    let profile = "arn:aws:iam::123456789012:instance-profile/labship/labship-instance";
    for action in needed_actions().iter().filter(|a| a.starts_with("iam:")) {
        if action == "iam:ListRoles" {
            continue; // no resource-level permissions; read-only
        }
        for other in [
            "arn:aws:iam::123456789012:role/Admin",
            "arn:aws:iam::123456789012:role/labship-instance",
            "arn:aws:iam::123456789012:role/labship/jobsx/labship-job-1",
            "arn:aws:iam::123456789012:role/labship/deploymentsx/labship-dep-1",
            "arn:aws:iam::123456789012:instance-profile/Admin",
            "arn:aws:iam::123456789012:policy/Admin",
        ] {
            assert!(
                granting(&policy, action, other).is_empty(),
                "{action} reaches {other}"
            );
        }
        let targets: &[&str] = match action.as_str() {
            "iam:GetPolicy" => &[BOUNDARY, DEP_BOUNDARY],
            "iam:GetInstanceProfile" => &[profile, DEP_PROFILE],
            "iam:PassRole" => &[role, JOB_ROLE, DEP_ROLE],
            a if JOB_ROLE_ONLY.contains(&a) && a.contains("InstanceProfile") => {
                &[JOB_PROFILE, DEP_PROFILE]
            }
            a if JOB_ROLE_ONLY.contains(&a) => &[JOB_ROLE, DEP_ROLE],
            a => panic!("{a}: an IAM action this test does not know the resource of"),
        };
        for target in targets {
            assert!(
                !granting(&policy, action, target).is_empty(),
                "{action} on {target}"
            );
        }
    }
    for s in granting(&policy, "iam:PassRole", role) {
        assert!(
            s.requires("StringEquals", "iam:PassedToService", "ec2.amazonaws.com"),
            "{}: PassRole must be limited to EC2 (iam:PassedToService)",
            s.sid
        );
    }
    // EC2 resources that exist: only labship-tagged ones.
    let instance = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0";
    let group = "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-0123456789abcdef0";
    let volume = "arn:aws:ec2:eu-west-1:123456789012:volume/vol-0123456789abcdef0";
    let snapshot = "arn:aws:ec2:eu-west-1::snapshot/snap-0123456789abcdef0";
    for (action, arn) in [
        // An instance can only be put in labship's own security groups (escalation: an
        // operator launching into the account's other groups, with their rules).
        ("ec2:RunInstances", group),
        // A data volume goes only to labship's instances (attaching another volume to a
        // labship instance, or a labship volume to another instance, would read it).
        ("ec2:AttachVolume", volume),
        ("ec2:AttachVolume", instance),
        ("ec2:DeleteVolume", volume),
        (
            "ec2:CancelSpotInstanceRequests",
            "arn:aws:ec2:eu-west-1:123456789012:spot-instances-request/sir-0123abcd",
        ),
        // Only labship's volumes are snapshotted, only labship's snapshots restored or deleted.
        ("ec2:CreateSnapshot", volume),
        ("ec2:CreateVolume", snapshot),
        ("ec2:DeleteSnapshot", snapshot),
        ("ec2:TerminateInstances", instance),
        // Moving an instance to its deployment's role: only labship's instances.
        ("ec2:ReplaceIamInstanceProfileAssociation", instance),
        ("ec2:AssociateIamInstanceProfile", instance),
        ("ec2:StopInstances", instance),
        ("ec2:StartInstances", instance),
        ("ec2:GetConsoleOutput", instance),
        ("ec2:DeleteSecurityGroup", group),
        ("ec2:AuthorizeSecurityGroupIngress", group),
        ("ec2:RevokeSecurityGroupIngress", group),
    ] {
        let grants = granting(&policy, action, arn);
        assert!(!grants.is_empty(), "{action} on {arn}");
        for s in grants {
            assert!(
                tagged(s),
                "{}: {action} must require the tag {MANAGED_BY}={MANAGED_BY_VALUE}",
                s.sid
            );
        }
    }
    // Tagging: while creating, or labship's own resources.
    for arn in [instance, group, volume, snapshot] {
        for s in granting(&policy, "ec2:CreateTags", arn) {
            let on_create = s
                .condition("StringEquals", "ec2:CreateAction")
                .is_some_and(|v| {
                    v.iter().all(|a| {
                        [
                            "RunInstances",
                            "CreateSecurityGroup",
                            "CreateVolume",
                            "CreateSnapshot",
                        ]
                        .contains(&a.as_str())
                    })
                });
            assert!(
                on_create || tagged(s),
                "{}: CreateTags on {arn} is unconditioned",
                s.sid
            );
        }
    }
    // What creation makes carries the tag.
    for (action, arn) in [
        ("ec2:RunInstances", instance),
        ("ec2:RunInstances", volume),
        (
            "ec2:RunInstances",
            "arn:aws:ec2:eu-west-1:123456789012:spot-instances-request/sir-0123abcd",
        ),
        ("ec2:CreateVolume", volume),
        (
            "ec2:RunInstances",
            "arn:aws:ec2:eu-west-1:123456789012:network-interface/eni-0123456789abcdef0",
        ),
        ("ec2:CreateSnapshot", snapshot),
        ("ec2:CreateSecurityGroup", group),
    ] {
        let grants = granting(&policy, action, arn);
        assert!(!grants.is_empty(), "{action} on {arn}");
        for s in grants {
            assert!(
                created_tagged(s),
                "{}: {action} must require the request tag {MANAGED_BY}",
                s.sid
            );
        }
    }

    // Systems Manager: the shell-script document on labship's instances; public AMI parameters.
    let document = "arn:aws:ssm:eu-west-1::document/AWS-RunShellScript";
    assert!(
        !granting(&policy, "ssm:SendCommand", document).is_empty(),
        "SendCommand {document}"
    );
    for other in [
        "arn:aws:ssm:eu-west-1::document/AWS-RunPowerShellScript",
        "arn:aws:ssm:eu-west-1:123456789012:document/Anything",
    ] {
        assert!(
            granting(&policy, "ssm:SendCommand", other).is_empty(),
            "SendCommand reaches {other}"
        );
    }
    for s in granting(&policy, "ssm:SendCommand", instance) {
        assert!(
            s.requires(
                "StringEquals",
                &format!("ssm:resourceTag/{MANAGED_BY}"),
                MANAGED_BY_VALUE
            ),
            "{}: SendCommand on instances must require the tag {MANAGED_BY}",
            s.sid
        );
    }
    let ami = "arn:aws:ssm:eu-west-1::parameter/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
    let ecs_ami = "arn:aws:ssm:eu-west-1::parameter/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id";
    let secret = "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db-password";
    assert!(
        !granting(&policy, "ssm:GetParameter", ami).is_empty(),
        "GetParameter {ami}"
    );
    assert!(
        !granting(&policy, "ssm:GetParameter", ecs_ami).is_empty(),
        "GetParameter {ecs_ami}"
    );
    assert!(
        granting(&policy, "ssm:GetParameter", secret).is_empty(),
        "GetParameter reaches {secret}"
    );
    // The sealed tokens: labship's own parameters, /labship/*, and no one else's.
    let token = "arn:aws:ssm:eu-west-1:123456789012:parameter/labship/demo/token";
    for action in [
        "ssm:PutParameter",
        "ssm:GetParameter",
        "ssm:DeleteParameter",
        "ssm:DeleteParameters",
        "ssm:AddTagsToResource",
    ] {
        assert!(
            !granting(&policy, action, token).is_empty(),
            "{action} on {token}"
        );
        for other in [
            secret,
            "arn:aws:ssm:eu-west-1:123456789012:parameter/labshipper/x",
        ] {
            assert!(
                granting(&policy, action, other).is_empty(),
                "{action} reaches {other}"
            );
        }
    }

    // Port-forwarding sessions (--access ssm): only the port-forwarding document, only on
    // labship's instances, and an operator ends only its own sessions.
    let forwarding = "arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSession";
    assert!(
        !granting(&policy, "ssm:StartSession", forwarding).is_empty(),
        "StartSession {forwarding}"
    );
    for other in [
        "arn:aws:ssm:eu-west-1::document/AWS-StartInteractiveCommand",
        "arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSessionToRemoteHost",
        "arn:aws:ssm:eu-west-1:123456789012:document/SSM-SessionManagerRunShell",
    ] {
        assert!(
            granting(&policy, "ssm:StartSession", other).is_empty(),
            "StartSession reaches {other} (a shell, or a hop to other hosts)"
        );
    }
    let grants = granting(&policy, "ssm:StartSession", instance);
    assert!(!grants.is_empty(), "StartSession on {instance}");
    for s in grants {
        assert!(
            s.requires(
                "StringEquals",
                &format!("ssm:resourceTag/{MANAGED_BY}"),
                MANAGED_BY_VALUE
            ),
            "{}: StartSession on instances must require the tag {MANAGED_BY}",
            s.sid
        );
    }
    let own = "arn:aws:ssm:eu-west-1:123456789012:session/${aws:userid}-0123456789abcdef0";
    assert!(
        !granting(&policy, "ssm:TerminateSession", own).is_empty(),
        "TerminateSession on the caller's own sessions"
    );
    for s in operator_policy()
        .iter()
        .filter(|s| s.covers("ssm:TerminateSession"))
    {
        assert_eq!(
            s.resources,
            ["arn:aws:ssm:*:*:session/${aws:userid}-*"],
            "{}: TerminateSession only on the caller's own sessions",
            s.sid
        );
    }

    // The tag the conditions name is the one the code writes.
    let code: String = sources().into_iter().map(|(_, c)| c).collect();
    assert!(
        code.contains(&format!("\"{MANAGED_BY}\"")) && code.contains(&format!("\"{MANAGED_BY_VALUE}\"")),
        "src/ no longer writes the tag {MANAGED_BY}={MANAGED_BY_VALUE} the policy's conditions name"
    );
}

#[test]
fn infra_documents_parse_and_ec2_may_assume_the_instance_role() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("infra"))
        .expect("infra/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "infra/ JSON documents: {files:?}");
    for file in &files {
        let rel = file
            .strip_prefix(repo_path(""))
            .expect("under the repo")
            .to_string_lossy()
            .into_owned();
        let doc = read_json(&rel);
        let mut sids = BTreeSet::new();
        for s in statements(&doc) {
            assert!(!s.sid.is_empty(), "{rel}: a statement without a Sid");
            assert!(sids.insert(s.sid.clone()), "{rel}: Sid {} twice", s.sid);
        }
    }

    let trust = read_json("infra/instance-trust-policy.json");
    let statements = trust["Statement"].as_array().expect("Statement list");
    assert_eq!(
        statements.len(),
        1,
        "the trust policy has one statement: {trust}"
    );
    let s = &statements[0];
    assert_eq!(s["Effect"], "Allow");
    assert_eq!(strings(&s["Action"], "Action"), ["sts:AssumeRole"]);
    let principal = s["Principal"].as_object().expect("Principal object");
    assert_eq!(
        principal.len(),
        1,
        "only a service principal: {principal:?}"
    );
    assert_eq!(
        strings(&principal["Service"], "Service"),
        ["ec2.amazonaws.com"]
    );
}

#[test]
fn infra_readme_covers_every_document_statement_and_instance_policy() {
    let readme = read("infra/README.md");
    for entry in std::fs::read_dir(repo_path("infra")).expect("infra/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != "README.md" {
            assert!(
                readme.contains(&name),
                "infra/README.md does not describe {name}"
            );
        }
    }
    for s in operator_policy() {
        assert!(
            readme.contains(&s.sid),
            "infra/README.md does not explain statement {}",
            s.sid
        );
    }
    for s in instance_policy() {
        assert!(
            readme.contains(&s.sid),
            "infra/README.md does not explain the instance policy's statement {}",
            s.sid
        );
    }
    for s in boundary_policy()
        .into_iter()
        .chain(deployment_boundary_policy())
    {
        assert!(
            readme.contains(&s.sid),
            "infra/README.md does not explain the boundary statement {}",
            s.sid
        );
    }
}

// ---- escalation paths ----------------------------------------------------------------------

const ROLE: &str = "arn:aws:iam::123456789012:role/labship/labship-instance";
const PROFILE: &str = "arn:aws:iam::123456789012:instance-profile/labship/labship-instance";

/// IAM actions that would let an operator turn the instance role (or IAM at large) against
/// the account: re-create or re-trust the role, put or attach more power on it, lift its
/// limits, or make a new identity or policy.
const IAM_ESCALATIONS: [&str; 30] = [
    "iam:CreateRole",
    "iam:DeleteRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateRole",
    "iam:PutRolePolicy",
    "iam:AttachRolePolicy",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary",
    "iam:TagRole",
    "iam:UntagRole",
    "iam:CreateInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:DeleteInstanceProfile",
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:CreateUser",
    "iam:CreateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:AttachUserPolicy",
    "iam:PutUserPolicy",
    "iam:AttachGroupPolicy",
    "iam:PutGroupPolicy",
    "iam:AddUserToGroup",
    "iam:CreateServiceLinkedRole",
    "iam:UpdateRoleDescription",
];

fn iam_targets() -> [&'static str; 6] {
    [
        ROLE,
        PROFILE,
        "arn:aws:iam::123456789012:role/Admin",
        "arn:aws:iam::123456789012:policy/labship-anything",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::123456789012:group/admins",
    ]
}

#[test]
fn admin_only_iam_calls_are_made_by_the_code_and_granted_to_no_operator() {
    let code = actions_in_code();
    let policy = operator_policy();
    for action in JOB_ROLE_ONLY {
        let tagging = action == "iam:TagRole" || action == "iam:TagInstanceProfile";
        assert!(
            tagging || code.contains(action),
            "{action} is listed as a job role's, but src/ no longer calls it: drop it from JOB_ROLE_ONLY"
        );
    }
    for action in ADMIN_ONLY.iter().chain(JOB_ROLE_ONLY.iter()).copied() {
        assert!(
            !ADMIN_ONLY.contains(&action) || code.contains(action),
            "{action} is listed as the administrator's, but src/ no longer calls it: drop it from ADMIN_ONLY"
        );
        for arn in iam_targets().into_iter().chain([BOUNDARY, DEP_BOUNDARY]) {
            let grants: Vec<&str> = granting(&policy, action, arn)
                .iter()
                .map(|s| s.sid.as_str())
                .collect();
            assert!(
                grants.is_empty(),
                "{grants:?} grant {action} on {arn}: an operator could re-create, re-trust or widen the instance role"
            );
        }
    }
    // The errors an operator meets instead, naming the fix.
    let iam_rs = read("src/aws/iam.rs");
    for error in ["Error::InstanceRoleMissing", "Error::BoundaryMissing"] {
        assert!(
            iam_rs.contains(error),
            "src/aws/iam.rs must turn an operator's AccessDenied into {error}"
        );
    }
}

/// A run's or a deployment's role is the operator's to make, so it must not be a way out:
/// made only with its boundary, which the operator can neither change nor lift, and passed
/// only to EC2.
#[test]
fn operator_makes_job_and_deployment_roles_only_within_their_boundary() {
    let policy = operator_policy();
    let iam_rs = read("src/aws/iam.rs");
    for (what, role, profile, boundary, in_policy, document, in_code) in HOST_ROLES {
        for action in ["iam:CreateRole", "iam:PutRolePolicy"] {
            let boundary = ("StringEquals", "iam:PermissionsBoundary", in_policy);
            assert_granted_only_with(&policy, action, role, boundary);
        }
        let to_ec2 = ("StringEquals", "iam:PassedToService", "ec2.amazonaws.com");
        assert_granted_only_with(&policy, "iam:PassRole", role, to_ec2);
        // Tags: labship's keys only (an account's tag-based access control reads its own).
        let labship_keys = ("ForAllValues:StringLike", "aws:TagKeys", "labship:*");
        assert_granted_only_with(&policy, "iam:TagRole", role, labship_keys);
        assert_granted_only_with(&policy, "iam:TagInstanceProfile", profile, labship_keys);
        // Lifting or changing the boundary, or re-trusting, attaching to or renaming the role.
        for action in [
            "iam:PutRolePermissionsBoundary",
            "iam:DeleteRolePermissionsBoundary",
            "iam:UpdateAssumeRolePolicy",
            "iam:AttachRolePolicy",
            "iam:DetachRolePolicy",
            "iam:UpdateRole",
            "iam:UntagRole",
        ] {
            assert!(
                granting(&policy, action, role).is_empty(),
                "{action} on {role}"
            );
        }
        for action in [
            "iam:CreatePolicy",
            "iam:CreatePolicyVersion",
            "iam:SetDefaultPolicyVersion",
            "iam:DeletePolicy",
            "iam:DeletePolicyVersion",
            "iam:TagPolicy",
        ] {
            assert!(
                granting(&policy, action, boundary).is_empty(),
                "{action} on the boundary {boundary}"
            );
        }
        // The code makes them with it.
        assert!(
            iam_rs.contains(in_code)
                && iam_rs.contains(&format!("include_str!(\"../../infra/{document}\")")),
            "src/aws/iam.rs must create {what} roles with the boundary of infra/{document}"
        );
    }
}

/// A permissions boundary (`what`) holds only actions of `services`, none a wildcard; each of
/// its statements but the pull and the `agent`'s (action prefixes: the SSM agent's own
/// channels) needs EC2 instance credentials; S3 only in the account's own buckets; and
/// nothing the operator lacks, but pulling the images the operator pushes and the agent's.
fn assert_capped_by_the_operator(
    boundary: &[Statement],
    what: &str,
    services: &[&str],
    agent: &[&str],
) {
    let operator = operator_policy();
    assert!(!boundary.is_empty(), "{what} is empty");
    let agents = |a: &str| agent.iter().any(|p| a.starts_with(p));
    for s in boundary.iter().filter(|s| s.allow) {
        // The registry's own calls (docker pull's manifest and layers) carry the login's
        // token, not a signature of the instance's credentials: no such key there. Pulling
        // labship's images is what the operator does anyway.
        let pulls_only = s.actions.iter().all(|a| {
            [
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ]
            .contains(&a.as_str())
        });
        let agent_only = !agent.is_empty() && s.actions.iter().all(|a| agents(a));
        assert!(
            agent_only || pulls_only || s.requires("Null", "aws:Ec2InstanceSourceVpc", "false"),
            "{}: only with EC2 instance credentials (Null aws:Ec2InstanceSourceVpc false)",
            s.sid
        );
        for action in &s.actions {
            let service = action.split_once(':').map_or("", |(svc, _)| svc);
            assert!(
                services.contains(&service) && !action.contains('*'),
                "{}: {what} may not hold {action}",
                s.sid
            );
            if service == "s3" {
                assert_held_to_the_account(s, action);
            }
            if action == "ecr:GetDownloadUrlForLayer" || agents(action) {
                continue; // pulling the images the operator pushes; the agent's own
            }
            for resource in &s.resources {
                let arn = sample_arn(resource);
                assert!(
                    !granting(&operator, action, &arn).is_empty(),
                    "{what} allows {action} on {arn} ({}), which the operator lacks",
                    s.sid
                );
            }
        }
    }
}

/// The boundary is the most a job role can do whatever its inline policy: pull labship's
/// images and use the objects of the account's labship-* buckets, with EC2 instance
/// credentials only (a role re-trusted to someone else gets nothing), and nothing the
/// operator lacks.
#[test]
fn the_job_boundary_caps_job_roles_at_what_the_operator_has() {
    let boundary = boundary_policy();
    assert_capped_by_the_operator(&boundary, "the job boundary", &["ecr", "s3"], &[]);
    for (action, arn) in [
        ("s3:GetObject", "arn:aws:s3:::payroll/x.csv"),
        ("s3:PutObject", "arn:aws:s3:::payroll/x.csv"),
        ("s3:ListBucket", "arn:aws:s3:::payroll"),
        ("s3:DeleteObject", "arn:aws:s3:::labship-course/x"),
        ("s3:PutBucketPolicy", "arn:aws:s3:::labship-course"),
        (
            "ssm:GetParameter",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/labship/demo/token",
        ),
        (
            "ecr:BatchGetImage",
            "arn:aws:ecr:eu-west-1:123456789012:repository/payments/api",
        ),
    ] {
        assert!(
            granting(&boundary, action, arn).is_empty(),
            "the job boundary: {action} on {arn}"
        );
    }
}

/// The deployments' boundary is the most a deployment's own role can do: read labship's
/// parameters (its token), pull labship's images, run the SSM agent and read the objects of
/// the account's labship-* buckets; parameters and S3 with EC2 instance credentials only;
/// no write anywhere; nothing the operator lacks but the agent's channels and the pull.
#[test]
fn the_deployment_boundary_caps_deployment_roles_at_what_the_operator_has() {
    const AGENT: [&str; 3] = [
        "ec2messages:",
        "ssmmessages:",
        "ssm:UpdateInstanceInformation",
    ];
    let boundary = deployment_boundary_policy();
    assert_capped_by_the_operator(
        &boundary,
        "the deployments' boundary",
        &["ecr", "s3", "ssm", "ec2messages", "ssmmessages"],
        &AGENT,
    );
    assert!(
        !granting(
            &boundary,
            "ssm:GetParameter",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/labship/demo/token"
        )
        .is_empty(),
        "a deployment's host reads its token"
    );
    for (action, arn) in [
        ("s3:GetObject", "arn:aws:s3:::payroll/x.csv"),
        ("s3:ListBucket", "arn:aws:s3:::payroll"),
        ("s3:PutObject", "arn:aws:s3:::labship-course/x"),
        ("s3:DeleteObject", "arn:aws:s3:::labship-course/x"),
        ("s3:PutBucketPolicy", "arn:aws:s3:::labship-course"),
        (
            "ssm:GetParameter",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db-password",
        ),
        (
            "ssm:PutParameter",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/labship/demo/token",
        ),
        (
            "ssm:SendCommand",
            "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0",
        ),
        (
            "ecr:BatchGetImage",
            "arn:aws:ecr:eu-west-1:123456789012:repository/payments/api",
        ),
    ] {
        assert!(
            granting(&boundary, action, arn).is_empty(),
            "the deployments' boundary: {action} on {arn}"
        );
    }
}

#[test]
fn operator_cannot_recreate_retrust_or_widen_the_instance_role() {
    let policy = operator_policy();
    for action in IAM_ESCALATIONS {
        for arn in iam_targets() {
            let grants: Vec<&str> = granting(&policy, action, arn)
                .iter()
                .map(|s| s.sid.as_str())
                .collect();
            assert!(grants.is_empty(), "{grants:?} grant {action} on {arn}");
        }
    }
    // The only IAM the operator holds: read the profile, pass the role.
    let iam: BTreeSet<String> = policy
        .iter()
        .filter(|s| s.allow)
        .flat_map(|s| s.actions.iter())
        .filter(|a| a.to_ascii_lowercase().starts_with("iam:"))
        .cloned()
        .collect();
    let expected: BTreeSet<String> = JOB_ROLE_ONLY
        .iter()
        .chain(&[
            "iam:GetInstanceProfile",
            "iam:GetPolicy",
            "iam:ListRoles",
            "iam:PassRole",
        ])
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        iam, expected,
        "the operator's IAM actions (reads, passing the roles, and runs' own roles)"
    );
}

#[test]
fn operator_can_pass_only_the_instance_role_and_only_to_ec2() {
    let policy = operator_policy();
    let grants = granting(&policy, "iam:PassRole", ROLE);
    assert!(!grants.is_empty(), "PassRole on {ROLE}");
    for s in grants {
        assert!(
            s.requires("StringEquals", "iam:PassedToService", "ec2.amazonaws.com"),
            "{}: PassRole must be limited to EC2 (iam:PassedToService)",
            s.sid
        );
    }
    for other in [
        "arn:aws:iam::123456789012:role/Admin",
        "arn:aws:iam::123456789012:role/labship/other",
        "arn:aws:iam::123456789012:role/labship-instance",
    ] {
        assert!(
            granting(&policy, "iam:PassRole", other).is_empty(),
            "PassRole reaches {other}"
        );
    }
}

#[test]
fn instance_role_reads_only_labship_parameters_and_holds_no_write() {
    let policy = instance_policy();
    let token = "arn:aws:ssm:eu-west-1:123456789012:parameter/labship/demo/token";
    assert!(
        !granting(&policy, "ssm:GetParameter", token).is_empty(),
        "the instance must read its sealed token {token}"
    );
    for other in [
        "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db-password",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/labshipper/x",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/",
    ] {
        for action in [
            "ssm:GetParameter",
            "ssm:GetParameters",
            "ssm:GetParametersByPath",
            "ssm:GetParameterHistory",
        ] {
            assert!(
                granting(&policy, action, other).is_empty(),
                "the instance role: {action} reaches {other}"
            );
        }
    }
    for s in policy.iter().filter(|s| s.allow) {
        for action in &s.actions {
            assert!(
                !action.contains('*') && !action.contains('?'),
                "{}: the instance policy's action {action} is a wildcard",
                s.sid
            );
            let service = action.split_once(':').map_or("", |(svc, _)| svc);
            assert!(
                !matches!(service, "iam" | "sts" | "kms" | "ec2" | "secretsmanager"),
                "{}: the instance role may not hold {action}",
                s.sid
            );
            // No S3 at all: a deployment with inputs has a role of its own, which reads
            // exactly them (src/hosts/ec2/role.rs).
            assert!(
                service != "s3",
                "{}: the shared instance role may not hold {action}",
                s.sid
            );
        }
    }
    for (action, arn) in [
        ("s3:GetObject", "arn:aws:s3:::labship-course/data/x.csv"),
        ("s3:ListBucket", "arn:aws:s3:::labship-course"),
        ("s3:PutObject", "arn:aws:s3:::labship-course/x"),
        ("s3:DeleteObject", "arn:aws:s3:::labship-course/x"),
        ("s3:PutBucketPolicy", "arn:aws:s3:::labship-course"),
        ("s3:PutBucketAcl", "arn:aws:s3:::labship-course"),
        ("s3:PutObjectAcl", "arn:aws:s3:::labship-course/x"),
    ] {
        assert!(
            granting(&policy, action, arn).is_empty(),
            "the instance role: {action} on {arn}"
        );
    }
    // Nothing that acts on other instances or writes parameters.
    let instance = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0";
    for (action, arn) in [
        ("ssm:SendCommand", instance),
        ("ssm:StartSession", instance),
        ("ssm:PutParameter", token),
        ("ssm:DeleteParameter", token),
        ("ssm:DeleteParameters", token),
    ] {
        assert!(
            granting(&policy, action, arn).is_empty(),
            "the instance role: {action} on {arn}"
        );
    }
}

/// An operator may run commands on labship's instances, so may read their role's credentials
/// (IMDS, as root on the host): that role must hold nothing the operator lacks, except the SSM
/// agent's own channels and pulling the images the operator pushes.
#[test]
fn an_instance_credentials_give_an_operator_nothing_more() {
    const AGENT_ONLY: [(&str, &str); 4] = [
        ("ec2messages:", "the SSM agent's Run Command channel"),
        ("ssmmessages:", "the SSM agent's session channel"),
        (
            "ssm:UpdateInstanceInformation",
            "the SSM agent registers its instance",
        ),
        (
            "ecr:GetDownloadUrlForLayer",
            "pulling labship's images, which the operator pushes",
        ),
    ];
    let operator = operator_policy();
    for s in instance_policy().iter().filter(|s| s.allow) {
        for action in &s.actions {
            if AGENT_ONLY
                .iter()
                .any(|(prefix, _)| action.starts_with(prefix))
            {
                continue;
            }
            for resource in &s.resources {
                let arn = sample_arn(resource);
                assert!(
                    !granting(&operator, action, &arn).is_empty(),
                    "the instance role grants {action} on {arn} ({}), which the operator lacks: an operator with SendCommand would gain it",
                    s.sid
                );
            }
        }
    }
}

#[test]
fn the_code_puts_exactly_the_infra_instance_policy() {
    let iam_rs = read("src/aws/iam.rs");
    assert!(
        iam_rs.contains("include_str!(\"../../infra/instance-policy.json\")"),
        "src/aws/iam.rs must compile in infra/instance-policy.json"
    );
    assert!(
        iam_rs.contains(".put_role_policy()") && !iam_rs.contains(".attach_role_policy()"),
        "the role gets the inline policy and no managed one"
    );
}
