//! `status`, `token` and `logs` for EC2 deployments, from AWS alone (tags, the serial
//! console and the sealed token in SSM), so they work from any machine at any later time.

use crate::aws::ec2::Instance;
use crate::aws::Aws;
use crate::aws::Cloud;
use crate::config::{Access, Target};
use crate::error::{Error, Result};
use crate::hosts::{named, up_again, DeploymentStatus, HostLife, LogsReport, TokenReport};
use crate::token;

use super::console::{self, TokenFrom};
use super::sealed;

/// Every labship deployment in the region: its instances, and data volumes, security groups
/// and tokens left without an instance (a `down` that kept the volume, an interrupted `up` or
/// `down`), with what each host's watchdog says.
pub async fn status(aws: &Aws) -> Result<Vec<DeploymentStatus>> {
    list(aws, true).await
}

/// [`status`] without reading each running host's console for its watchdog: what a verb
/// needs to find deployments (a class's seats): the listings of instances, volumes, groups and
/// token names, and the tags of each token left alone.
pub async fn listing(aws: &Aws) -> Result<Vec<DeploymentStatus>> {
    list(aws, false).await
}

async fn list(aws: &Aws, watchdogs: bool) -> Result<Vec<DeploymentStatus>> {
    let cloud = Cloud::new(aws);
    let (instances, groups, volumes, tokens) = tokio::try_join!(
        cloud.instances(None),
        cloud.security_groups(None),
        cloud.data_volumes(None),
        // Names only. A listing that cannot be had (throttled, an operator policy without
        // DescribeParameters) leaves out the tokens left alone, not the rest, and says so.
        async {
            Ok(match sealed::deployments_with_tokens(&cloud).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(
                        "tokens left without the rest of their deployment are not listed: {e}"
                    );
                    Vec::new()
                }
            })
        }
    )?;
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
        data_volume: None,
        spot: None,
        interrupted: None,
        life: HostLife::default(),
        seat: None,
    };
    // What the hosts' watchdogs said (when and why they stop), read at once; a console that
    // cannot be read leaves those columns empty rather than failing the listing.
    // Each instance's console once, whatever the seats it serves.
    let mut wanted: Vec<&str> = instances
        .iter()
        .filter(|i| watchdogs && matches!(i.state.as_str(), "running" | "stopped"))
        .map(|i| i.id.as_str())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let consoles: std::collections::HashMap<&str, String> =
        futures_util::future::join_all(wanted.into_iter().map(|id| {
            let cloud = &cloud;
            async move {
                match cloud.console(id, true).await {
                    Ok(Some(text)) => Some((id, text)),
                    _ => None,
                }
            }
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
    let watches: Vec<console::Watch> = instances
        .iter()
        .map(|i| match consoles.get(i.id.as_str()) {
            Some(text) => console::watch(&console::seen_by(text.clone(), i)),
            None => console::Watch::default(),
        })
        .collect();
    let mut rows: Vec<DeploymentStatus> = instances
        .iter()
        .zip(watches)
        .map(|(i, w)| DeploymentStatus {
            state: i.state.clone(),
            instance_id: Some(i.id.clone()),
            instance_type: Some(i.instance_type.clone()),
            public_ip: i.public_ip.clone(),
            url: match (&i.public_ip, i.port) {
                (Some(ip), Some(port)) if i.state == "running" && i.access == Access::Https => {
                    Some(format!(
                        "{}://{}/lab",
                        if i.https { "https" } else { "http" },
                        super::up::host_port(ip, port)
                    ))
                }
                _ => None,
            },
            note: match (i.state.as_str(), &w.stopped, i.access) {
                ("stopped", _, _) if i.interrupted() => Some(format!(
                    "interrupted by EC2 (no spot capacity): EC2 starts it again when capacity returns; {} waits for that",
                    up_again(&i.deployment, i.seat.as_ref(), "--ec2")
                )),
                ("stopped", Some(why), _) => Some(format!(
                    "stopped itself ({why}); {} starts it",
                    up_again(&i.deployment, i.seat.as_ref(), "--ec2")
                )),
                ("stopped", None, _) => Some(format!(
                    "{} starts it",
                    up_again(&i.deployment, i.seat.as_ref(), "--ec2")
                )),
                (_, _, Access::Ssm) => Some(format!(
                    "no open port: `labship connect {} --ec2`",
                    named(&i.deployment, i.seat.as_ref())
                )),
                _ => None,
            },
            age_seconds: i.launched_secs.map(|t| (now - t).max(0)),
            image: i.image.clone(),
            life: life(i, &w, now),
            spot: Some(i.spot),
            interrupted: Some(i.interrupted()),
            // Its own, or the deployment's when none is attached (an interrupted `up`).
            seat: i.seat.clone(),
            data_volume: volumes
                .iter()
                .find(|v| {
                    v.attached_to.as_deref() == Some(i.id.as_str())
                        && (i.shared_host().is_none() || v.deployment == i.deployment)
                })
                .or_else(|| volumes.iter().find(|v| v.deployment == i.deployment))
                .cloned(),
            ..row(i.deployment.clone())
        })
        .collect();
    // A deployment that was taken down keeps its data volume (and its notebooks): shown, as
    // it is billed.
    for v in volumes {
        if v.deployment.is_empty() || rows.iter().any(|r| r.name == v.deployment) {
            continue;
        }
        let dep = v.deployment.clone();
        rows.push(DeploymentStatus {
            state: "down".into(),
            note: Some(format!(
                "data volume {} kept with the workspace: {} brings it back, `labship down {} --ec2 --delete-data` deletes it",
                v.describe(),
                up_again(&dep, v.seat.as_ref(), "--ec2"),
                named(&dep, v.seat.as_ref())
            )),
            seat: v.seat.clone(),
            data_volume: Some(v),
            ..row(dep)
        });
    }
    let (class_groups, groups): (Vec<_>, Vec<_>) =
        groups.into_iter().partition(|g| g.class.is_some());
    for g in groups {
        let Some(dep) = g.deployment else { continue };
        if !rows.iter().any(|r| r.name == dep) {
            rows.push(DeploymentStatus {
                state: "no instance".into(),
                note: Some(format!(
                    "security group {} left; `labship down {dep} --ec2` removes it",
                    g.id
                )),
                // A seat's, so that `down` of its class finds what is left of it.
                seat: g.seat,
                ..row(dep.clone())
            });
        }
    }
    // A token with nothing else of its deployment: a `down` interrupted after the rest, or an
    // `up` about to launch. Listed with the class and seat its tags name (one call for each
    // such token), so that `down` of a class finds a seat's.
    let alone: Vec<String> = tokens
        .into_iter()
        .filter(|d| !rows.iter().any(|r| &r.name == d))
        .collect();
    let seats: Vec<Result<Option<crate::hosts::SeatOf>>> =
        futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
            futures_util::stream::iter(alone.iter().map(|d| sealed::seat_of(&cloud, d))),
            8,
        ))
        .await;
    for (dep, seat) in alone.into_iter().zip(seats) {
        let seat = seat.unwrap_or_else(|e| {
            tracing::warn!("whether the token of `{dep}` is a class's seat is not known: {e}");
            None
        });
        rows.push(DeploymentStatus {
            state: "token left".into(),
            note: Some(format!(
                "only its token (SSM parameter {}) is here: an interrupted `down` left it, or an `up` is about to launch; `labship down {dep} --ec2` removes it",
                sealed::parameter(&dep)
            )),
            seat,
            ..row(dep)
        });
    }
    // The group a class's seats shared, with no seat of the class left (a class's `up` in
    // which no seat started, a `down` interrupted before it): listed by the class's name,
    // which `down` takes.
    let mut alone: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for g in class_groups {
        let Some(class) = g.class else { continue };
        let seated = rows
            .iter()
            .any(|r| r.seat.as_ref().is_some_and(|s| s.class == class));
        if !seated {
            alone.entry(class).or_default().push(g.id);
        }
    }
    // One row a class (its group in each VPC it was started in).
    for (class, ids) in alone {
        rows.push(DeploymentStatus {
            state: "group left".into(),
            note: Some(format!(
                "security group {} of the class's seats is left, and no seat; `labship down {class} --ec2` removes it",
                ids.join(", ")
            )),
            ..row(class)
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// What the watchdog's console lines and the instance's tags say of its life; only a running
/// host has an uptime, an idle time and a time it stops at.
fn life(i: &Instance, w: &console::Watch, now: i64) -> HostLife {
    let settings = HostLife {
        idle_stop_seconds: i.idle_stop.flatten().map(|d| d.as_secs()),
        ttl_seconds: i.ttl.flatten().map(|d| d.as_secs()),
        ..HostLife::default()
    };
    if i.state != "running" {
        return settings;
    }
    let stops = w.stops_at();
    HostLife {
        uptime_seconds: w.boot.or(i.launched_secs).map(|b| (now - b).max(0)),
        idle_seconds: w.idle_since.map(|t| (now - t).max(0)),
        last_activity: w.idle_since.and_then(crate::hosts::rfc3339),
        stops_in_seconds: stops.map(|(at, _)| (at - now).max(0)),
        stops_because: stops.map(|(_, why)| why.to_string()),
        ..settings
    }
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
            place: format!("on EC2 in {} (no instance of `{deployment}`)", cloud.region),
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
    let console = cloud
        .console(&inst.id, nitro)
        .await?
        .map(|text| console::seen_by(text, &inst));
    Ok((inst, console))
}

/// The token (sealed in SSM) and the full URL (the path the host reported on its console).
pub async fn token(aws: &Aws, deployment: &str) -> Result<TokenReport> {
    let cloud = Cloud::new(aws);
    let ((inst, console), sealed) = tokio::try_join!(
        console_of(&cloud, deployment),
        sealed::read(&cloud, deployment)
    )?;
    let served = console.as_deref().and_then(console::served);
    if served.as_ref().is_some_and(|s| s.token == TokenFrom::Image) {
        return Err(Error::TokenNotFound {
            origin: format!("the deployment `{deployment}` ({})", inst.id),
            reason: "its image sets its own Jupyter token, which labship never holds".into(),
            hint: "use the token the image's documentation (or its JUPYTER_TOKEN setting) gives; `labship status --ec2` shows the URL".into(),
        });
    }
    // Not served yet: the sealed token is the one it will accept.
    let token = match &served {
        Some(s) => s.login_token(sealed.as_ref()),
        None => sealed,
    }
    .ok_or_else(|| Error::TokenNotFound {
        origin: format!("SSM parameter {}", sealed::parameter(deployment)),
        reason: "the deployment has no sealed token".into(),
        hint: format!("`labship up {deployment} --ec2` seals one (and starts Jupyter with it)"),
    })?;
    // A host that has not said yet is a new one: it will serve HTTPS.
    let tls = served.as_ref().is_none_or(|s| s.tls.is_some()) && inst.https;
    let tls_fingerprint = served.as_ref().and_then(|s| s.tls);
    let path = served.map_or_else(|| "/lab".to_string(), |s| s.path);
    let url = match (&inst.public_ip, inst.port) {
        (Some(ip), Some(port)) if inst.access == Access::Https => {
            super::up::url(ip, port, &path, tls, Some(&token))
        }
        _ => format!("{path}?token={}", token.expose()),
    };
    Ok(TokenReport {
        target: Some(Target::Ec2),
        deployment: Some(deployment.to_string()),
        token: token.expose().to_string(),
        url,
        tls_fingerprint,
    })
}

/// Where `labship connect` forwards to: the instance's Jupyter over TLS, pinned to the
/// certificate its console published, with the sealed token.
pub async fn connect_target(aws: &Aws, deployment: &str) -> Result<crate::hosts::ConnectTarget> {
    let cloud = Cloud::new(aws);
    let ((inst, console), sealed) = tokio::try_join!(
        console_of(&cloud, deployment),
        sealed::read(&cloud, deployment)
    )?;
    let not_yet = |reason: &str| {
        Error::Unsupported {
        option: "connect".into(),
        target: format!("`{deployment}` ({}) yet: {reason}", inst.id),
        hint: format!(
            "wait for `labship up {deployment} --ec2` to print the URL, then connect; `labship logs {deployment} --ec2` shows how far it got"
        ),
    }
    };
    let served = console
        .as_deref()
        .and_then(console::served)
        .ok_or_else(|| not_yet("its Jupyter has not answered"))?;
    let Some(pin) = served.tls else {
        return Err(Error::Unsupported {
            option: "connect".into(),
            target: format!("`{deployment}` ({}), which serves plain HTTP", inst.id),
            hint: format!("it was started by an older labship; `labship down {deployment} --ec2` then `labship up --ec2` gives it TLS"),
        });
    };
    let token = served.login_token(sealed.as_ref());
    let port = inst
        .port
        .ok_or_else(|| not_yet("it has no labship:port tag"))?;
    let (addr, tunnel) = super::jupyter_address(&cloud, &inst, port)
        .await?
        .ok_or_else(|| not_yet("it has no public address"))?;
    Ok(crate::hosts::ConnectTarget {
        remote: crate::forward::Remote { addr, pin },
        tunnel,
        path: served.path,
        token,
    })
}

/// The cleaned console output (optionally its last `tail` lines).
pub async fn logs(aws: &Aws, deployment: &str, tail: Option<usize>) -> Result<LogsReport> {
    let (_, console) = console_of(&Cloud::new(aws), deployment).await?;
    let text = console.unwrap_or_default();
    // A host of an older labship relayed the login URL, and an error may quote a log line.
    let clean = token::redact(&token::clean::clean_console(&text));
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
