//! `labship backup --ec2`: the workspace of a running instance, downloaded through its own
//! Jupyter (the contents API, with the sealed token, over the pinned TLS or an SSM session)
//! into a local folder. `down` of an instance without a data volume (an older labship's)
//! saves the same way first, because its disk goes with it.

use std::path::Path;

use super::console::{self, TokenFrom};
use super::{info, sealed};
use crate::aws::ec2::Instance;
use crate::aws::Aws;
use crate::aws::Cloud;
use crate::config::Target;
use crate::error::{Error, Result};
use crate::hosts::{BackupReport, SavedWorkspace};
use crate::interrupt;
use crate::output::Printer;

/// `labship backup --ec2`: the deployment's running instance's workspace into `dest`.
pub async fn backup(
    aws: &Aws,
    deployment: &str,
    dest: &Path,
    printer: &Printer,
) -> Result<BackupReport> {
    let cloud = Cloud::new(aws);
    let inst = info::running(&cloud, deployment).await?;
    printer.note(format!(
        "Saving the workspace of {} to {}",
        inst.id,
        dest.display()
    ));
    let fail = |message: String| Error::BackupFailed {
        deployment: deployment.to_string(),
        instance: inst.id.clone(),
        message,
    };
    let saved = interrupt::cancellable("saving the workspace", async {
        save(&cloud, &inst, dest).await.map_err(fail)
    })
    .await?
    .ok_or_else(|| fail("its Jupyter never started, so there is no workspace to save".into()))?;
    Ok(BackupReport {
        target: Target::Ec2,
        deployment: deployment.to_string(),
        region: Some(cloud.region.clone()),
        saved,
    })
}

/// Saves one instance's workspace through its Jupyter (with the sealed token). None: its
/// Jupyter never started (the console never said it served), so there is nothing to save.
pub(crate) async fn save(
    cloud: &Cloud,
    inst: &Instance,
    dest: &std::path::Path,
) -> Result<Option<SavedWorkspace>, String> {
    let Some(jupyter) = access(cloud, inst).await? else {
        return Ok(None);
    };
    let saved = crate::hosts::backup::save_workspace(&jupyter, &[], dest)
        .await
        .map(Some);
    jupyter.close().await;
    saved
}

/// How to reach one instance's Jupyter (with the sealed token, over the pinned TLS or a
/// Systems Manager session). None: its Jupyter never started (the console never said it
/// served).
pub(crate) async fn access(
    cloud: &Cloud,
    inst: &Instance,
) -> Result<Option<crate::hosts::JupyterAccess>, String> {
    // A pending instance has never run anything.
    if inst.state == "pending" {
        return Ok(None);
    }
    if inst.state == "stopped" {
        return Err(format!(
            "the instance is stopped, so its Jupyter cannot be reached; `labship up {} --ec2` starts it with its notebooks",
            inst.deployment
        ));
    }
    if inst.state != "running" {
        return Err(format!(
            "the instance is {}, so its Jupyter cannot be reached",
            inst.state
        ));
    }
    let console = cloud
        .console(&inst.id, true)
        .await
        .map_err(|e| e.to_string())?
        .map(|text| console::seen_by(text, inst))
        .unwrap_or_default();
    if !console::ever_served(&console) {
        return Ok(None);
    }
    let Some(port) = inst.port else {
        return Err("the instance has no labship:port tag to reach Jupyter on".into());
    };
    let served = console::served(&console);
    let (path, pin) = served
        .as_ref()
        .map_or(("/lab".to_string(), None), |s| (s.path.clone(), s.tls));
    let token = match served.map(|s| s.token) {
        Some(TokenFrom::Image) => {
            return Err("its image sets its own Jupyter token, which labship does not hold, so it cannot reach the workspace".into())
        }
        Some(TokenFrom::Logged(finding)) => finding.token,
        _ => sealed::read(cloud, &inst.deployment)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "its token parameter {} is gone",
                    sealed::parameter(&inst.deployment)
                )
            })?,
    };
    // Through a Systems Manager session when no port is open (--access ssm).
    let (addr, tunnel) = super::jupyter_address(cloud, inst, port)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the instance has no public IP address to reach Jupyter on")?;
    // Over TLS to the certificate the host published; plain HTTP only for a host of a
    // labship from before TLS, whose console has no fingerprint.
    let endpoint = match pin {
        Some(pin) => crate::http::Endpoint::Pinned(addr, pin),
        None => crate::http::Endpoint::Plain(addr),
    };
    Ok(Some(crate::hosts::JupyterAccess {
        endpoint,
        base: crate::hosts::backup::api_base(&path),
        token: token.expose().to_string(),
        server: inst.id.clone(),
        tunnel,
    }))
}
