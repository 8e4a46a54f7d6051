//! `status`, `token` and `logs` for EC2 deployments, from AWS alone (tags and the serial
//! console), so they work from any machine at any later time.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::cloud::{Cloud, Instance};
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::token::{self, TokenFinding};

#[derive(Debug, Serialize)]
pub struct DeploymentRow {
    pub name: String,
    pub state: String,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub ip: Option<String>,
    /// The URL without its token (`labship token NAME` prints that).
    pub url: Option<String>,
    pub age_seconds: Option<i64>,
    pub image: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Ec2Status {
    pub region: String,
    pub deployments: Vec<DeploymentRow>,
}

impl std::fmt::Display for Ec2Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.deployments.is_empty() {
            return write!(f, "No labship deployments on EC2 in {}", self.region);
        }
        writeln!(
            f,
            "{:<24} {:<14} {:<20} {:<12} {:<16} {:<8} URL",
            "NAME", "STATE", "INSTANCE", "TYPE", "IP", "AGE"
        )?;
        let last = self.deployments.len() - 1;
        for (n, d) in self.deployments.iter().enumerate() {
            write!(
                f,
                "{:<24} {:<14} {:<20} {:<12} {:<16} {:<8} {}",
                d.name,
                d.state,
                d.instance_id.as_deref().unwrap_or("-"),
                d.instance_type.as_deref().unwrap_or("-"),
                d.ip.as_deref().unwrap_or("-"),
                d.age_seconds.map(age).unwrap_or_else(|| "-".into()),
                d.url.as_deref().unwrap_or("-"),
            )?;
            if n != last {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Every labship deployment in the region: its instances, and security groups left without
/// an instance (an interrupted `up` or `down`).
pub async fn status(aws: &Aws) -> Result<Ec2Status> {
    let cloud = Cloud::new(aws);
    let (instances, groups) = tokio::try_join!(cloud.instances(None), cloud.security_groups(None))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mut rows: Vec<DeploymentRow> = instances
        .iter()
        .map(|i| DeploymentRow {
            name: i.deployment.clone(),
            state: i.state.clone(),
            instance_id: Some(i.id.clone()),
            instance_type: Some(i.instance_type.clone()),
            ip: i.public_ip.clone(),
            url: match (&i.public_ip, i.port) {
                (Some(ip), Some(port)) if i.state == "running" => {
                    Some(format!("http://{ip}:{port}/lab?token=****"))
                }
                _ => None,
            },
            age_seconds: i.launched_secs.map(|t| (now - t).max(0)),
            image: i.image.clone(),
        })
        .collect();
    for g in groups {
        let Some(dep) = g.deployment else { continue };
        if !rows.iter().any(|r| r.name == dep) {
            rows.push(DeploymentRow {
                name: dep,
                state: "no instance".into(),
                instance_id: None,
                instance_type: None,
                ip: None,
                url: None,
                age_seconds: None,
                image: Some(format!(
                    "(security group {} left; `labship down` removes it)",
                    g.id
                )),
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Ec2Status {
        region: cloud.region.clone(),
        deployments: rows,
    })
}

/// The deployment's running instance (the newest when there are several).
pub async fn running(cloud: &Cloud, deployment: &str) -> Result<Instance> {
    let instances = cloud.instances(Some(deployment)).await?;
    instances
        .iter()
        .rfind(|i| i.is_live())
        .or(instances.last())
        .cloned()
        .ok_or_else(|| Error::DeploymentNotFound {
            name: deployment.to_string(),
            place: format!(
                "on EC2 in {} (no instance tagged labship:deployment={deployment})",
                cloud.region
            ),
        })
}

/// The token and full URL, from the instance's console.
pub async fn token(aws: &Aws, deployment: &str) -> Result<(TokenFinding, String)> {
    let cloud = Cloud::new(aws);
    let inst = running(&cloud, deployment).await?;
    let nitro = cloud
        .instance_type(&inst.instance_type)
        .await
        .map(|t| t.nitro)
        .unwrap_or(false);
    let origin = format!("the console of {} ({deployment})", inst.id);
    let text = cloud.console(&inst.id, nitro).await?.ok_or_else(|| Error::TokenNotFound {
        origin: origin.clone(),
        reason: "EC2 has no console output for it yet".into(),
        hint: "a new instance shows its console after a minute or two; try again, or `labship logs --ec2`".into(),
    })?;
    let finding = token::find_token(&text).map_err(|e| crate::local::token_error(e, &origin))?;
    let url = match (&inst.public_ip, inst.port) {
        (Some(ip), Some(port)) => format!(
            "http://{ip}:{port}{}?token={}",
            finding.path,
            finding.token.expose()
        ),
        _ => finding.url.clone(),
    };
    Ok((finding, url))
}

/// The cleaned console output (optionally its last `tail` lines).
pub async fn logs(aws: &Aws, deployment: &str, tail: Option<usize>) -> Result<String> {
    let cloud = Cloud::new(aws);
    let inst = running(&cloud, deployment).await?;
    let nitro = cloud
        .instance_type(&inst.instance_type)
        .await
        .map(|t| t.nitro)
        .unwrap_or(false);
    let text = cloud.console(&inst.id, nitro).await?.unwrap_or_default();
    let clean = token::clean::clean_console(&text);
    Ok(match tail {
        Some(n) => {
            let lines: Vec<&str> = clean.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        None => clean,
    })
}
