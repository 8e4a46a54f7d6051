//! A deployment's own role. A deployment without `[data] inputs` runs on the shared role
//! (`labship-instance`: its token parameter, labship's images, the SSM agent, no S3 at all).
//! One with inputs gets a role of its own, `labship-dep-<hash>` under
//! `/labship/deployments/<region>/<name>/`, within the deployments' permissions boundary,
//! whose one inline policy names exactly its token parameter, its repository and its inputs.
//! It is put again on every replace (other inputs, other reads), kept while its instance
//! lives (inputs taken away leave it with no S3 read rather than moving the instance back),
//! and removed by `down` once the instance is gone.

use serde::Serialize;
use serde_json::json;

use crate::aws::ec2::Instance;
use crate::aws::grants::{policy_document, pull, Reads};
use crate::aws::iam;
use crate::aws::s3::S3Uri;
use crate::error::Result;

/// The role a deployment's instance runs with, as the plan shows it and `up` makes it.
#[derive(Debug, Clone, Serialize)]
pub struct OwnRole {
    /// The role and its instance profile (one name).
    pub role: String,
    /// Its permissions boundary (a managed policy `up` makes when missing).
    pub boundary: &'static str,
    /// Its one inline policy's name, and the policy itself.
    pub policy_name: &'static str,
    pub policy: serde_json::Value,
    /// The live instance runs with another profile (the shared one) and is moved to this one
    /// before its container is replaced.
    pub moves_instance: bool,
}

/// Whether `deployment` runs with a role of its own: when it has inputs, or its instance
/// already does.
pub fn wanted(
    region: &str,
    deployment: &str,
    reach: &[(S3Uri, bool)],
    live: Option<&Instance>,
) -> bool {
    !reach.is_empty() || live.is_some_and(|i| has_own(region, deployment, i))
}

/// Whether `instance` runs with its deployment's own profile.
pub fn has_own(region: &str, deployment: &str, instance: &Instance) -> bool {
    instance.profile.as_deref() == Some(iam::deployment_role_name(region, deployment).as_str())
}

/// The role `deployment` runs with when [`wanted`], with its policy; `live`: the instance a
/// replace acts on.
pub fn own_role(
    account: &str,
    region: &str,
    deployment: &str,
    repository: &str,
    reach: &[(S3Uri, bool)],
    live: Option<&Instance>,
) -> Result<OwnRole> {
    let text = policy(account, region, deployment, repository, reach)?;
    Ok(OwnRole {
        role: iam::deployment_role_name(region, deployment),
        boundary: iam::DEPLOYMENT_BOUNDARY,
        policy_name: iam::DEPLOYMENT_POLICY_NAME,
        policy: serde_json::from_str(&text).unwrap_or_default(),
        moves_instance: live.is_some_and(|i| !has_own(region, deployment, i)),
    })
}

/// A deployment's role policy: read its own token parameter, log in to ECR and pull its
/// repository, run the SSM agent (Run Command replaces its container; `--access ssm`), and
/// read exactly its inputs in the account's own buckets. Nothing else.
pub fn policy(
    account: &str,
    region: &str,
    deployment: &str,
    repository: &str,
    reach: &[(S3Uri, bool)],
) -> Result<String> {
    let mut statements = vec![
        json!({
            "Sid": "ReadItsToken",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": format!(
                "arn:aws:ssm:{region}:{account}:parameter{}",
                super::sealed::parameter(deployment)
            )
        }),
        json!({
            "Sid": "SsmAgentRegistersItsOwnInstance",
            "Effect": "Allow",
            "Action": "ssm:UpdateInstanceInformation",
            "Resource": format!("arn:aws:ec2:{region}:{account}:instance/*")
        }),
        json!({
            "Sid": "SsmAgentRunCommandAndSessionChannels",
            "Effect": "Allow",
            "Action": [
                "ec2messages:AcknowledgeMessage",
                "ec2messages:DeleteMessage",
                "ec2messages:FailMessage",
                "ec2messages:GetEndpoint",
                "ec2messages:GetMessages",
                "ec2messages:SendReply",
                "ssmmessages:CreateControlChannel",
                "ssmmessages:CreateDataChannel",
                "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel"
            ],
            "Resource": "*"
        }),
    ];
    statements.extend(pull(
        &format!("arn:aws:ecr:{region}:{account}:repository/{repository}"),
        "PullItsImage",
    ));
    statements.extend(
        Reads {
            account,
            inputs: reach,
            folders: &[],
            what: "ItsInputs",
            list: "ItsInputFolders",
        }
        .statements(),
    );
    policy_document(statements, "the deployment's", reach.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> S3Uri {
        S3Uri::parse(s).expect("an S3 address")
    }

    fn statement<'a>(doc: &'a serde_json::Value, sid: &str) -> &'a serde_json::Value {
        doc["Statement"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["Sid"] == sid))
            .unwrap_or_else(|| panic!("no statement {sid} in {doc}"))
    }

    #[test]
    fn a_deployments_policy_names_exactly_its_token_image_and_inputs() {
        let reach = [
            (uri("s3://labship-data/points.csv"), true),
            (uri("s3://labship-data/week1/"), false),
            (uri("s3://labship-other"), false),
        ];
        let text =
            policy("123456789012", "eu-west-1", "demo", "labship/demo", &reach).expect("policy");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            statement(&doc, "ReadItsToken")["Resource"],
            "arn:aws:ssm:eu-west-1:123456789012:parameter/labship/demo/token"
        );
        assert_eq!(
            statement(&doc, "PullItsImage")["Resource"],
            "arn:aws:ecr:eu-west-1:123456789012:repository/labship/demo"
        );
        assert_eq!(
            statement(&doc, "ReadItsInputs")["Resource"],
            json!([
                "arn:aws:s3:::labship-data/points.csv",
                "arn:aws:s3:::labship-data/week1/*",
                "arn:aws:s3:::labship-other/*"
            ])
        );
        assert_eq!(
            statement(&doc, "ReadItsInputs")["Condition"]["StringEquals"]["s3:ResourceAccount"],
            "123456789012"
        );
        // Listing: only the folder in one bucket, all of the whole-bucket input.
        let data = statement(&doc, "ListItsInputFolders1");
        assert_eq!(data["Resource"], "arn:aws:s3:::labship-data");
        assert_eq!(
            data["Condition"]["StringLike"]["s3:prefix"],
            json!(["week1/", "week1/*"])
        );
        let other = statement(&doc, "ListItsInputFolders2");
        assert_eq!(other["Resource"], "arn:aws:s3:::labship-other");
        assert!(other["Condition"].get("StringLike").is_none(), "{other}");
        // No write anywhere, and nothing of S3 without inputs.
        let actions: Vec<&str> = doc["Statement"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| match &s["Action"] {
                serde_json::Value::Array(all) => all.iter().filter_map(|a| a.as_str()).collect(),
                one => one.as_str().into_iter().collect::<Vec<_>>(),
            })
            .collect();
        for action in &actions {
            let service = action.split_once(':').map_or("", |(svc, _)| svc);
            assert!(
                !matches!(service, "iam" | "ec2" | "sts" | "kms")
                    && !action.starts_with("s3:Put")
                    && !action.starts_with("s3:Delete")
                    && !action.starts_with("ssm:Put")
                    && !action.starts_with("ssm:Send"),
                "{action} in {text}"
            );
        }
        let none =
            policy("123456789012", "eu-west-1", "demo", "labship/demo", &[]).expect("policy");
        assert!(!none.contains("s3:"), "{none}");
    }
}
