//! Systems Manager: public parameters (the latest Amazon Linux AMI ids), whether a host's
//! agent is online, and a shell script run on a host (RunCommand) and waited for.

use std::time::Duration;

use aws_sdk_ssm::client::Waiters;
use aws_sdk_ssm::types::{CommandInvocationStatus, InstanceInformationStringFilter, PingStatus};

use aws_smithy_runtime_api::client::waiters::error::WaiterError;

use super::retry::{self, Step};
use super::Cloud;
use crate::error::{Error, Result};

/// The outcome of a command run on an instance through Systems Manager.
#[derive(Debug, Clone)]
pub struct CommandResult {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl Cloud {
    pub async fn parameter(&self, name: &str) -> Result<String> {
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| self.fail("ssm", "GetParameter", name, &e))?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| Error::Ami {
                ami: name.to_string(),
                region: self.region.clone(),
                message: "the SSM parameter has no value".into(),
                hint: "pass an AMI id with --ami ami-...".into(),
            })
    }

    /// Whether the instance's SSM agent is online.
    pub async fn ssm_online(&self, id: &str) -> Result<bool> {
        let f = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(id)
            .build()
            .map_err(|e| Error::Aws {
                action: "ssm:DescribeInstanceInformation".into(),
                resource: id.into(),
                region: self.region.clone(),
                message: e.to_string(),
                hint: "this is a bug in labship".into(),
            })?;
        let out = self
            .ssm
            .describe_instance_information()
            .filters(f)
            .send()
            .await
            .map_err(|e| self.fail("ssm", "DescribeInstanceInformation", id, &e))?;
        Ok(out
            .instance_information_list()
            .iter()
            .any(|i| i.instance_id() == Some(id) && i.ping_status() == Some(&PingStatus::Online)))
    }

    /// Runs a shell script on the instance through SSM RunCommand and waits for it
    /// (bounded by `within`).
    pub async fn run_script(
        &self,
        id: &str,
        script: &str,
        comment: &str,
        within: Duration,
    ) -> Result<CommandResult> {
        let out = self
            .ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(id)
            .comment(comment)
            .timeout_seconds(600)
            .parameters("commands", vec![script.to_string()])
            .parameters("executionTimeout", vec![within.as_secs().to_string()])
            .send()
            .await
            .map_err(|e| self.fail("ssm", "SendCommand", id, &e))?;
        let command_id = out
            .command()
            .and_then(|c| c.command_id())
            .unwrap_or_default()
            .to_string();
        // The SDK's `command_executed` waiter: it retries while the invocation does not
        // exist yet (right after SendCommand) and while it is pending or running. A call of it
        // that fails transiently (throttled after the SDK's retries) starts it again, within
        // the same deadline.
        let within = within + Duration::from_secs(30);
        let deadline = std::time::Instant::now() + within;
        let done = retry::until(within, Duration::from_secs(2), || async {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let waited = self
                .ssm
                .wait_until_command_executed()
                .command_id(&command_id)
                .instance_id(id)
                .wait(left.max(Duration::from_secs(1)))
                .await;
            match waited {
                Ok(poll) => Ok(Step::Done(poll.into_result().ok())),
                Err(WaiterError::FailureState(failed)) => {
                    Ok(Step::Done(failed.into_final_poll().into_result().ok()))
                }
                Err(WaiterError::ExceededMaxWait(_)) => Ok(Step::Done(None)),
                Err(WaiterError::OperationFailed(failed)) => {
                    Err(self.fail("ssm", "GetCommandInvocation", id, &failed.into_error()))
                }
                Err(other) => Err(Error::Aws {
                    action: "ssm:GetCommandInvocation".into(),
                    resource: id.into(),
                    region: self.region.clone(),
                    message: format!("waiting for the command failed: {other:?}"),
                    hint: "try again; `labship logs --ec2` shows the host's console".into(),
                }),
            }
        })
        .await?;
        // Out of time (or an answer without output): one last look says where it stands.
        let inv = match done {
            Some(inv) => inv,
            None => {
                retry::read(Duration::from_secs(60), || async {
                    self.ssm
                        .get_command_invocation()
                        .command_id(&command_id)
                        .instance_id(id)
                        .send()
                        .await
                        .map_err(|e| self.fail("ssm", "GetCommandInvocation", id, &e))
                })
                .await?
            }
        };
        let status = inv.status().cloned();
        Ok(CommandResult {
            success: status == Some(CommandInvocationStatus::Success),
            status: status
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "unknown".into()),
            stdout: inv
                .standard_output_content()
                .unwrap_or_default()
                .to_string(),
            stderr: inv.standard_error_content().unwrap_or_default().to_string(),
        })
    }
}
