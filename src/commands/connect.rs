//! `labship connect`: the deployment on http://127.0.0.1:PORT through the local forwarder
//! (TLS to the instance with its pinned certificate), until Ctrl-C. Also the end of
//! `up --ec2 --connect`.

use labship::config::{Access, Config, Target};
use labship::error::{Error, Result};
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::{ConnectReport, ConnectTarget, Host};
use labship::output::Printer;
use labship::tls::TlsError;

pub async fn run(config: &Config, port: Option<u16>, open: bool, printer: &Printer) -> Result<()> {
    // Before a Systems Manager session may be opened: a Ctrl-C then ends it, not labship alone.
    labship::interrupt::install(labship::interrupt::Then::Retry(format!(
        "{} (to open it again)",
        super::command_for("connect", config, config.target)
    )))?;
    let target = match config.target {
        Target::Local => {
            LocalHost::connect()
                .await?
                .connect_target(&config.name)
                .await?
        }
        Target::Ec2 => {
            Ec2Host::connect(config)
                .await?
                .connect_target(&config.name)
                .await?
        }
    };
    serve(config, target, port, open, printer).await
}

/// Checks the instance's certificate, listens, prints the URL, serves until Ctrl-C.
pub async fn serve(
    config: &Config,
    target: ConnectTarget,
    port: Option<u16>,
    open: bool,
    printer: &Printer,
) -> Result<()> {
    let served = forward(config, &target, port, open, printer).await;
    if let Some(tunnel) = target.tunnel {
        let session = tunnel.session_id().to_string();
        tunnel.close().await;
        printer.note(format!("Ended the Systems Manager session {session}"));
    }
    served
}

/// The forwarder itself, through the target's address (the instance, or the local end of its
/// Systems Manager session).
async fn forward(
    config: &Config,
    target: &ConnectTarget,
    port: Option<u16>,
    open: bool,
    printer: &Printer,
) -> Result<()> {
    let remote = target.remote.clone();
    let via_ssm = target.tunnel.as_ref().map(|t| t.session_id().to_string());
    labship::forward::check(&remote).await.map_err(|e| match e {
        TlsError::Mismatch { .. } => Error::TlsMismatch {
            deployment: config.name.clone(),
            address: remote.addr.clone(),
            cause: e.to_string(),
        },
        TlsError::Failed(why) => Error::Network {
            what: format!("Jupyter of `{}` on {}", config.name, remote.addr),
            region: "its instance's region".into(),
            message: why,
            hint: if via_ssm.is_some() {
                "the Systems Manager session opened, but Jupyter did not answer through it: `labship logs --ec2` shows the host's side".into()
            } else {
                "the security group opens the port to the addresses `up` detected or was given (--allow-cidr); from another network run `labship up --ec2` there to update it".into()
            },
        },
    })?;
    let listener = labship::forward::listen(port).await?;
    let local = listener.local_addr().map_err(|source| Error::Write {
        path: "(the forwarder's socket)".into(),
        source,
    })?;
    let url = labship::hosts::ec2::up::url(
        "127.0.0.1",
        local.port(),
        &target.path,
        false,
        target.token.as_ref(),
    );
    // From here Ctrl-C ends the forwarder; nothing is left behind.
    labship::interrupt::install(labship::interrupt::Then::Retry(format!(
        "{} (to open it again)",
        super::command_for("connect", config, config.target)
    )))?;
    let report = ConnectReport {
        target: config.target,
        deployment: config.name.clone(),
        url: url.clone(),
        port: local.port(),
        remote: remote.addr.clone(),
        tls_fingerprint: remote.pin,
        access: if via_ssm.is_some() {
            Access::Ssm
        } else {
            Access::Https
        },
        ssm_session: via_ssm.clone(),
    };
    super::emit(printer, &report)?;
    let through = match &via_ssm {
        Some(session) => format!(" through the Systems Manager session {session}"),
        None => String::new(),
    };
    printer.note(format!(
        "Forwarding http://127.0.0.1:{} to https://{}{through} (certificate SHA-256 {}); Ctrl-C stops",
        local.port(),
        remote.addr,
        remote.pin
    ));
    if open {
        labship::browser::open(&url, printer);
    }
    labship::forward::serve(listener, remote, labship::interrupt::stopped()).await
}
