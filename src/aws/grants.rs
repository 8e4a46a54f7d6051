//! What a host's own role may read in S3: exactly its inputs, in the account's own buckets.
//! A job host's role ([`crate::job`]) and a deployment's role with `[data] inputs`
//! ([`crate::hosts::ec2`]) are both written from these statements, so that the two read the
//! same way: one object is one ARN, a folder is its prefix, and listing is held to those
//! folders by `s3:prefix`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::s3::S3Uri;
use crate::error::{Error, Result};

/// IAM's limit on a role's inline policies, in characters (whitespace not counted; labship
/// writes none).
pub const ROLE_POLICY_MAX: usize = 10_240;

/// An S3 ARN's key as IAM reads it: `*`, `?` and `$` are policy syntax, and `${*}`,
/// `${?}` and `${$}` stand for them.
pub fn arn_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '*' | '?' | '$' => {
                out.push_str("${");
                out.push(c);
                out.push('}');
            }
            c => out.push(c),
        }
    }
    out
}

/// A folder address's prefix, with its one trailing `/` (empty: the whole bucket).
pub fn folder(uri: &S3Uri) -> String {
    let key = uri.key.trim_end_matches('/');
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    }
}

/// The registry login and pulling one repository (`repository`: its ARN), the pull named
/// `pull_sid`: what every host role needs to start its image.
pub fn pull(repository: &str, pull_sid: &str) -> [Value; 2] {
    [
        json!({
            "Sid": "LogInToEcr",
            "Effect": "Allow",
            "Action": "ecr:GetAuthorizationToken",
            "Resource": "*"
        }),
        json!({
            "Sid": pull_sid,
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": repository
        }),
    ]
}

/// A role's inline policy of `statements`, refused (before anything is made) when IAM would
/// refuse it for its size: `whose` role it is, for `inputs` inputs.
pub fn policy_document(statements: Vec<Value>, whose: &str, inputs: usize) -> Result<String> {
    let policy = json!({ "Version": "2012-10-17", "Statement": statements }).to_string();
    if policy.len() > ROLE_POLICY_MAX {
        return Err(Error::InvalidSetting {
            what: "[data] inputs",
            value: format!("{inputs} inputs"),
            reason: format!(
                "{whose} role would name each of them, and its policy would be {} characters, over IAM's {ROLE_POLICY_MAX}",
                policy.len()
            ),
            hint: "put the inputs under fewer folders in S3 and give the folders".into(),
        });
    }
    Ok(policy)
}

/// What one role reads: `inputs` (each address, and whether it is one object rather than a
/// folder) and `folders` besides (bucket, prefix with its trailing `/`), named in the
/// statements' Sids as `what` (`Read<what>`, `List<list>1`, `List<list>2`, ...).
pub struct Reads<'a> {
    pub account: &'a str,
    pub inputs: &'a [(S3Uri, bool)],
    pub folders: &'a [(&'a str, String)],
    pub what: &'a str,
    pub list: &'a str,
}

impl Reads<'_> {
    /// No statement at all when there is nothing to read.
    pub fn statements(&self) -> Vec<Value> {
        let mut read = Vec::new();
        // Per bucket, the prefixes listed (an empty prefix: the whole bucket).
        let mut listed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (bucket, prefix) in self.folders {
            read.push(format!("arn:aws:s3:::{bucket}/{}*", arn_key(prefix)));
            listed.entry(bucket).or_default().push(prefix.clone());
        }
        for (uri, object) in self.inputs {
            if *object {
                read.push(format!("arn:aws:s3:::{}/{}", uri.bucket, arn_key(&uri.key)));
            } else {
                let prefix = folder(uri);
                read.push(format!("arn:aws:s3:::{}/{}*", uri.bucket, arn_key(&prefix)));
                listed.entry(uri.bucket.as_str()).or_default().push(prefix);
            }
        }
        if read.is_empty() {
            return Vec::new();
        }
        read.sort();
        read.dedup();
        let mut statements = vec![json!({
            "Sid": format!("Read{}", self.what),
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": read,
            "Condition": self.account_only()
        })];
        for (n, (bucket, mut prefixes)) in listed.into_iter().enumerate() {
            prefixes.sort();
            prefixes.dedup();
            let mut condition = self.account_only();
            // A whole bucket's input lists all of it.
            if !prefixes.iter().any(String::is_empty) {
                let values: Vec<String> = prefixes
                    .iter()
                    .flat_map(|p| [arn_key(p), format!("{}*", arn_key(p))])
                    .collect();
                condition["StringLike"] = json!({ "s3:prefix": values });
            }
            statements.push(json!({
                "Sid": format!("List{}{}", self.list, n + 1),
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": condition
            }));
        }
        statements
    }

    /// Only the account's own buckets.
    pub fn account_only(&self) -> Value {
        json!({ "StringEquals": { "s3:ResourceAccount": self.account } })
    }
}
