//! `labship stop --ec2`: the deployment's instance stops (StopInstances) and keeps its disk:
//! the workspace volume, the TLS certificate and, in SSM, the sealed token. Compute is no
//! longer billed; the EBS volume is. `up` starts it again (see `up::start`).

use std::time::Duration;

use crate::aws::{Aws, Cloud};
use crate::config::Target;
use crate::error::{Error, Result};
use crate::hosts::StopReport;
use crate::interrupt;
use crate::output::Printer;

/// How long a stop may take before labship says so (EC2 stops in well under a minute; a
/// host that ignores the ACPI signal is forced off after about ten).
const STOP_WAIT: Duration = Duration::from_secs(600);

pub async fn stop(
    aws: &Aws,
    deployment: &str,
    force: bool,
    printer: &Printer,
) -> Result<StopReport> {
    let cloud = Cloud::new(aws);
    let (instances, caller) =
        tokio::try_join!(cloud.instances(Some(deployment)), cloud.caller_arn())?;
    let instances: Vec<_> = instances
        .into_iter()
        .filter(|i| i.state != "shutting-down")
        .collect();
    if instances.is_empty() {
        return Err(Error::DeploymentNotFound {
            name: deployment.to_string(),
            place: format!(
                "on EC2 in {} (no instance of `{deployment}` that is not being terminated)",
                cloud.region
            ),
        });
    }
    super::require_owner(
        deployment,
        &caller,
        instances.iter().map(|i| &i.owner),
        force,
        "stop",
    )?;
    // Its host's other seats would stop with it; the host stops by itself once all are idle.
    if let Some(refused) = instances
        .iter()
        .find_map(|i| super::plan::shared_refusal(i, "stopping it"))
    {
        return Err(refused);
    }
    let (running, stopped): (Vec<_>, Vec<_>) = instances
        .iter()
        .partition(|i| matches!(i.state.as_str(), "pending" | "running"));
    let ids: Vec<String> = running.iter().map(|i| i.id.clone()).collect();
    let mut report = StopReport {
        target: Target::Ec2,
        deployment: deployment.to_string(),
        region: Some(cloud.region.clone()),
        stopped: Vec::new(),
        already_stopped: stopped
            .iter()
            .map(|i| format!("instance {} ({})", i.id, i.state))
            .collect(),
        kept: Vec::new(),
    };
    if !ids.is_empty() {
        interrupt::checkpoint("stopping the instance")?;
        printer.note(format!("Stopping {} of `{deployment}`", ids.join(", ")));
        cloud.stop(&ids).await?;
        let left =
            interrupt::cancellable("the instance stopped", cloud.wait_stopped(&ids, STOP_WAIT))
                .await?;
        if !left.is_empty() {
            return Err(Error::Replace {
                deployment: deployment.to_string(),
                instance: left.join(", "),
                message: format!(
                    "asked to stop, it was still not stopped after {}s",
                    STOP_WAIT.as_secs()
                ),
                hint: format!("see its state in the EC2 console; `labship stop {deployment} --ec2` again waits for it"),
            });
        }
        report
            .stopped
            .extend(ids.iter().map(|id| format!("instance {id}")));
    }
    for i in &instances {
        report.kept.push(format!(
            "the EBS volume of {} with the workspace and the TLS certificate (storage is still billed while it is stopped; `labship down {deployment} --ec2` ends that)",
            i.id
        ));
    }
    report.kept.push(format!(
        "the token in SSM ({}); `labship up {deployment} --ec2` starts the instance again with the same token and notebooks (its address may change)",
        super::sealed::parameter(deployment)
    ));
    Ok(report)
}
