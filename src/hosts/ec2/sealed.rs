//! A deployment's Jupyter token, sealed in SSM Parameter Store.
//!
//! labship makes the token (48 hex from the OS's random source) and stores it as a
//! SecureString, `/labship/<deployment>/token`, tagged like every labship resource, before
//! the instance exists. The host reads it with its instance role at boot (and at every
//! container replacement) into a root-only env file handed to the container as
//! `JUPYTER_TOKEN`. So the token is never in the user-data, never on the serial console,
//! never in SSM command output, never in a tag and never in a process's argv: reading it
//! takes `ssm:GetParameter` with decryption on labship's parameters, which is what
//! `labship token` does from any machine. `down` deletes it.

use crate::aws::Cloud;
use crate::error::{Error, Result};
use crate::token::JupyterToken;

/// The parameter holding a deployment's token.
#[must_use]
pub fn parameter(deployment: &str) -> String {
    format!("/labship/{deployment}/token")
}

/// The deployments whose token parameter is in the region (names only: no value is read).
pub async fn deployments_with_tokens(cloud: &Cloud) -> Result<Vec<String>> {
    Ok(cloud
        .parameter_names("/labship/")
        .await?
        .iter()
        .filter_map(|name| deployment_of(name))
        .collect())
}

/// The deployment whose token parameter `name` is (`/labship/<deployment>/token`).
fn deployment_of(name: &str) -> Option<String> {
    let deployment = name.strip_prefix("/labship/")?.strip_suffix("/token")?;
    (!deployment.is_empty() && !deployment.contains('/')).then(|| deployment.to_string())
}

/// The class and seat a token names in its tags (a seat's token is tagged at creation as its
/// instance is); None for a deployment of its own, or a token sealed by an older labship.
pub async fn seat_of(cloud: &Cloud, deployment: &str) -> Result<Option<crate::hosts::SeatOf>> {
    let tags = cloud.parameter_tags(&parameter(deployment)).await?;
    let value = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    Ok(
        match (value(crate::tags::CLASS), value(crate::tags::SEAT)) {
            (Some(class), Some(seat)) => Some(crate::hosts::SeatOf {
                class,
                seat,
                student: None,
                email: None,
                host: None,
            }),
            _ => None,
        },
    )
}

/// The deployment's token: the sealed one, or a new one sealed now, tagged like the
/// deployment's resources and with `seat_tags` (a class's seat). Safe to repeat: a second
/// `up` (or the SDK sending the call again after a lost answer) reads what the first wrote.
pub async fn ensure(
    cloud: &Cloud,
    deployment: &str,
    seat_tags: &[(String, String)],
) -> Result<JupyterToken> {
    let name = parameter(deployment);
    if let Some(token) = read(cloud, deployment).await? {
        return Ok(token);
    }
    let token = generate(&name)?;
    let mut tags: Vec<(&str, String)> = crate::tags::for_deployment(deployment);
    tags.extend(seat_tags.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let written = cloud
        .put_secure_parameter(&name, token.expose(), DESCRIPTION, &tags, false)
        .await?;
    if written {
        return Ok(token);
    }
    // It exists after all: another `up` of the same deployment, or this call's own earlier
    // attempt whose answer was lost. What is stored is the token.
    read(cloud, deployment).await?.ok_or_else(|| missing(&name))
}

/// A new token in place of the old one (`token --rotate`).
pub async fn rotate(cloud: &Cloud, deployment: &str) -> Result<JupyterToken> {
    let name = parameter(deployment);
    let token = generate(&name)?;
    cloud
        .put_secure_parameter(&name, token.expose(), DESCRIPTION, &[], true)
        .await?;
    Ok(token)
}

/// Puts back a token that [`rotate`] replaced (the new container did not start).
pub async fn restore(cloud: &Cloud, deployment: &str, token: &JupyterToken) -> Result<()> {
    cloud
        .put_secure_parameter(
            &parameter(deployment),
            token.expose(),
            DESCRIPTION,
            &[],
            true,
        )
        .await
        .map(|_| ())
}

/// The sealed token; `None` when the deployment has none (never launched, or removed).
pub async fn read(cloud: &Cloud, deployment: &str) -> Result<Option<JupyterToken>> {
    let name = parameter(deployment);
    match cloud.secure_parameter(&name).await? {
        None => Ok(None),
        Some(value) => JupyterToken::new(value.trim())
            .map(Some)
            .ok_or_else(|| Error::Aws {
                action: "ssm:GetParameter".into(),
                resource: name.clone(),
                region: cloud.region.clone(),
                message: "the parameter does not hold a Jupyter token (A-Z, a-z, 0-9, _ and -)"
                    .into(),
                hint: format!(
                    "`labship token {deployment} --ec2 --rotate` writes a new one and restarts Jupyter with it"
                ),
            }),
    }
}

/// Deletes the token; true if there was one.
pub async fn remove(cloud: &Cloud, deployment: &str) -> Result<bool> {
    cloud.delete_parameter(&parameter(deployment)).await
}

/// How many tokens [`remove_all`] takes: DeleteParameters' limit.
pub const REMOVED_AT_ONCE: usize = 10;

/// Deletes the tokens of these deployments (at most [`REMOVED_AT_ONCE`]) in one call;
/// for each deployment, in order, whether it had one.
pub async fn remove_all(cloud: &Cloud, deployments: &[&str]) -> Result<Vec<bool>> {
    let names: Vec<String> = deployments.iter().map(|d| parameter(d)).collect();
    let deleted = cloud.delete_parameters(&names).await?;
    Ok(names.iter().map(|n| deleted.contains(n)).collect())
}

const DESCRIPTION: &str = "labship: the Jupyter token of this deployment (read by its instance)";

fn generate(name: &str) -> Result<JupyterToken> {
    JupyterToken::generate().ok_or_else(|| Error::Aws {
        action: "ssm:PutParameter".into(),
        resource: name.to_string(),
        region: String::new(),
        message: "the operating system gave no random bytes for a new token".into(),
        hint: "check that /dev/urandom (or getrandom(2)) works on this machine".into(),
    })
}

fn missing(name: &str) -> Error {
    Error::Aws {
        action: "ssm:GetParameter".into(),
        resource: name.to_string(),
        region: String::new(),
        message: "SSM said the parameter exists, then that it does not".into(),
        hint: "another labship may be removing this deployment; run the command again".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deployments_token_parameter_names_a_deployment() {
        assert_eq!(deployment_of(&parameter("lab-3")).as_deref(), Some("lab-3"));
        for other in [
            "/labship/token",
            "/labship//token",
            "/labship/a/b/token",
            "/labship/lab-3/other",
            "/other/lab-3/token",
        ] {
            assert_eq!(deployment_of(other), None, "{other}");
        }
    }

    #[test]
    fn the_parameter_is_under_labships_prefix() {
        assert_eq!(parameter("demo"), "/labship/demo/token");
    }
}
