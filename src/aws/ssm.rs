//! Systems Manager: public parameters (the latest Amazon Linux AMI ids), labship's own
//! SecureString parameters (a deployment's sealed Jupyter token), whether a host's agent is
//! online, and a shell script run on a host (RunCommand) and waited for.

use std::time::Duration;

use aws_sdk_ssm::client::Waiters;
use aws_sdk_ssm::operation::delete_parameter::DeleteParameterError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_sdk_ssm::types::{
    CommandInvocationStatus, InstanceInformationStringFilter, ParameterType, PingStatus, Tag,
};

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

    /// The decrypted value of a SecureString parameter; `None` when it does not exist.
    pub async fn secure_parameter(&self, name: &str) -> Result<Option<String>> {
        match self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetParameterError::is_parameter_not_found) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("ssm", "GetParameter", name, &e)),
        }
    }

    /// Whether a parameter exists, without reading (or decrypting) its value.
    pub async fn secure_parameter_exists(&self, name: &str) -> Result<bool> {
        let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(name)
            .build()
            .map_err(|e| self.unbuildable("ssm:DescribeParameters", name, e))?;
        let out = self
            .ssm
            .describe_parameters()
            .parameter_filters(filter)
            .send()
            .await
            .map_err(|e| self.fail("ssm", "DescribeParameters", name, &e))?;
        Ok(out.parameters().iter().any(|p| p.name() == Some(name)))
    }

    /// The names of the parameters under `prefix` (names only, never values: DescribeParameters),
    /// every page.
    pub async fn parameter_names(&self, prefix: &str) -> Result<Vec<String>> {
        let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
            .key("Name")
            .option("BeginsWith")
            .values(prefix)
            .build()
            .map_err(|e| self.unbuildable("ssm:DescribeParameters", prefix, e))?;
        let mut pages = self
            .ssm
            .describe_parameters()
            .parameter_filters(filter)
            // SSM filters each page after reading it (10 a page by default): the most a page
            // may hold is the fewest calls.
            .max_results(50)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("ssm", "DescribeParameters", prefix, &e))?;
            names.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| p.name().map(str::to_string)),
            );
        }
        Ok(names)
    }

    /// A parameter's tags (ListTagsForResource; none once it is gone).
    pub async fn parameter_tags(&self, name: &str) -> Result<Vec<(String, String)>> {
        match self
            .ssm
            .list_tags_for_resource()
            .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .tag_list()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_resource_id()) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(self.fail("ssm", "ListTagsForResource", name, &e)),
        }
    }

    /// Writes a SecureString parameter (encrypted with the account's `aws/ssm` key). A new
    /// one is created with `tags`; `overwrite` replaces the value of an existing one (SSM
    /// takes no tags then: it keeps those it has). Returns false when `overwrite` is off and
    /// the parameter already exists (also when the answer to an earlier attempt of this very
    /// call was lost and the SDK sent it again).
    pub async fn put_secure_parameter(
        &self,
        name: &str,
        value: &str,
        description: &str,
        tags: &[(&str, String)],
        overwrite: bool,
    ) -> Result<bool> {
        let mut call = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .description(description)
            .r#type(ParameterType::SecureString)
            .overwrite(overwrite);
        if !overwrite {
            for (k, v) in tags {
                call = call.tags(
                    Tag::builder()
                        .key(*k)
                        .value(v)
                        .build()
                        .map_err(|e| self.unbuildable("ssm:PutParameter", name, e))?,
                );
            }
        }
        match call.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if !overwrite
                    && e.as_service_error()
                        .is_some_and(PutParameterError::is_parameter_already_exists) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail("ssm", "PutParameter", name, &e)),
        }
    }

    /// Deletes a parameter; one that is already gone is not an error (false).
    pub async fn delete_parameter(&self, name: &str) -> Result<bool> {
        match self.ssm.delete_parameter().name(name).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(DeleteParameterError::is_parameter_not_found) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail("ssm", "DeleteParameter", name, &e)),
        }
    }

    /// Deletes these parameters (at most ten: DeleteParameters' limit) in one call; returns
    /// the names that were there and are deleted now (one already gone is not among them).
    pub async fn delete_parameters(&self, names: &[String]) -> Result<Vec<String>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ssm
            .delete_parameters()
            .set_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| self.fail("ssm", "DeleteParameters", &names.join(", "), &e))?;
        Ok(out.deleted_parameters().to_vec())
    }

    /// Whether the instance's SSM agent is online.
    pub async fn ssm_online(&self, id: &str) -> Result<bool> {
        let f = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(id)
            .build()
            .map_err(|e| self.unbuildable("ssm:DescribeInstanceInformation", id, e))?;
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

/// A Systems Manager session, as StartSession answers it: what the session-manager-plugin
/// needs to open the data channel. `token` authenticates that channel: it never goes into
/// argv, logs or errors (registered with [`crate::secrets::hide`]; no `Debug`).
pub struct SsmSession {
    pub id: String,
    pub stream_url: String,
    pub token: String,
    /// The StartSession request, as the plugin receives it (no secret in it).
    pub request: serde_json::Value,
    /// The SSM endpoint the session was started at.
    pub endpoint: String,
}

impl Cloud {
    /// Starts a port-forwarding session (`AWS-StartPortForwardingSession`) from
    /// `local_port` on this machine to `port` on the instance.
    pub async fn start_port_forwarding(
        &self,
        instance: &str,
        port: u16,
        local_port: u16,
    ) -> Result<SsmSession> {
        const DOCUMENT: &str = "AWS-StartPortForwardingSession";
        let out = self
            .ssm
            .start_session()
            .target(instance)
            .document_name(DOCUMENT)
            .reason("labship connect")
            .parameters("portNumber", vec![port.to_string()])
            .parameters("localPortNumber", vec![local_port.to_string()])
            .send()
            .await
            .map_err(|e| self.fail("ssm", "StartSession", instance, &e))?;
        let (Some(id), Some(stream_url), Some(token)) =
            (out.session_id(), out.stream_url(), out.token_value())
        else {
            return Err(Error::Network {
                what: format!("the Systems Manager session to {instance}"),
                region: self.region.clone(),
                message: "StartSession answered without a session id, stream URL or token".into(),
                hint: "try again; if it persists, check the SSM endpoint (AWS_ENDPOINT_URL)".into(),
            });
        };
        let endpoint = self
            .sdk
            .endpoint_url()
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://ssm.{}.amazonaws.com", self.region));
        Ok(SsmSession {
            id: id.to_string(),
            stream_url: stream_url.to_string(),
            token: {
                crate::secrets::hide(token);
                token.to_string()
            },
            request: serde_json::json!({
                "Target": instance,
                "DocumentName": DOCUMENT,
                "Parameters": {
                    "portNumber": [port.to_string()],
                    "localPortNumber": [local_port.to_string()],
                },
            }),
            endpoint,
        })
    }

    /// Ends a session (one that is already over is no error).
    pub async fn terminate_session(&self, id: &str) -> Result<()> {
        self.ssm
            .terminate_session()
            .session_id(id)
            .send()
            .await
            .map_err(|e| self.fail("ssm", "TerminateSession", id, &e))?;
        Ok(())
    }
}
