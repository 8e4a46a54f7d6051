//! `status`, `token` and `logs` for EC2 deployments, from AWS alone (tags and the serial
//! console), so they work from any machine at any later time.

use crate::aws::ec2::Instance;
use crate::aws::Aws;
use crate::aws::Cloud;
use crate::config::Target;
use crate::error::{Error, Result};
use crate::hosts::{DeploymentStatus, LogsReport, TokenReport};
use crate::token;

/// Every labship deployment in the region: its instances, and security groups left without
/// an instance (an interrupted `up` or `down`).
pub async fn status(aws: &Aws) -> Result<Vec<DeploymentStatus>> {
    let cloud = Cloud::new(aws);
    let (instances, groups) = tokio::try_join!(cloud.instances(None), cloud.security_groups(None))?;
    let now = crate::hosts::now_secs();
    let row = |name: String| DeploymentStatus {
        target: Target::Ec2,
        name,
        state: String::new(),
        image: None,
        url: None,
        age_seconds: None,
        container: None,
        region: Some(cloud.region.clone()),
        instance_id: None,
        instance_type: None,
        public_ip: None,
        note: None,
    };
    let mut rows: Vec<DeploymentStatus> = instances
        .iter()
        .map(|i| DeploymentStatus {
            state: i.state.clone(),
            instance_id: Some(i.id.clone()),
            instance_type: Some(i.instance_type.clone()),
            public_ip: i.public_ip.clone(),
            url: match (&i.public_ip, i.port) {
                (Some(ip), Some(port)) if i.state == "running" => {
                    Some(format!("http://{ip}:{port}/lab"))
                }
                _ => None,
            },
            age_seconds: i.launched_secs.map(|t| (now - t).max(0)),
            image: i.image.clone(),
            ..row(i.deployment.clone())
        })
        .collect();
    for g in groups {
        let Some(dep) = g.deployment else { continue };
        if !rows.iter().any(|r| r.name == dep) {
            rows.push(DeploymentStatus {
                state: "no instance".into(),
                note: Some(format!(
                    "security group {} left; `labship down {dep} --ec2` removes it",
                    g.id
                )),
                ..row(dep.clone())
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
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

/// The deployment's instance and its console (None while EC2 has none yet); the live one
/// (`Latest`) on Nitro types.
async fn console_of(cloud: &Cloud, deployment: &str) -> Result<(Instance, Option<String>)> {
    let inst = running(cloud, deployment).await?;
    let nitro = cloud
        .instance_type(&inst.instance_type)
        .await
        .map(|t| t.nitro)
        .unwrap_or(false);
    let console = cloud.console(&inst.id, nitro).await?;
    Ok((inst, console))
}

/// The token and full URL, from the instance's console.
pub async fn token(aws: &Aws, deployment: &str) -> Result<TokenReport> {
    let (inst, console) = console_of(&Cloud::new(aws), deployment).await?;
    let origin = format!("the console of {} ({deployment})", inst.id);
    let text = console.ok_or_else(|| Error::TokenNotFound {
        origin: origin.clone(),
        reason: "EC2 has no console output for it yet".into(),
        hint: "a new instance shows its console after a minute or two; try again, or `labship logs --ec2`".into(),
    })?;
    let finding = token::find_token(&text).map_err(|e| e.into_error(&origin))?;
    let url = match (&inst.public_ip, inst.port) {
        (Some(ip), Some(port)) => format!(
            "http://{ip}:{port}{}?token={}",
            finding.path,
            finding.token.expose()
        ),
        _ => finding.url.clone(),
    };
    Ok(TokenReport {
        target: Some(Target::Ec2),
        deployment: Some(deployment.to_string()),
        token: finding.token.expose().to_string(),
        url,
    })
}

/// The cleaned console output (optionally its last `tail` lines).
pub async fn logs(aws: &Aws, deployment: &str, tail: Option<usize>) -> Result<LogsReport> {
    let (_, console) = console_of(&Cloud::new(aws), deployment).await?;
    let text = console.unwrap_or_default();
    let clean = token::clean::clean_console(&text);
    let log = match tail {
        Some(n) => {
            let lines: Vec<&str> = clean.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        None => clean,
    };
    Ok(LogsReport {
        target: Target::Ec2,
        deployment: deployment.to_string(),
        log,
    })
}
