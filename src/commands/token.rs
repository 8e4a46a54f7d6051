//! `labship token`: the deployment's token (from its host), or the one in a log
//! (`--from-log`); `--rotate` seals a new one and restarts Jupyter with it.

use std::io::Read;

use labship::config::Target;
use labship::error::{Error, Result};
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::{Host, TokenReport};
use labship::output::Printer;

use crate::cli::{named, GlobalArgs, TokenArgs};

pub async fn run(args: &TokenArgs, global: &GlobalArgs, printer: &Printer) -> Result<()> {
    let report = match &args.from_log {
        Some(path) => {
            let (origin, text) = read_log(path)?;
            let found = labship::token::find_token(&text).map_err(|e| e.into_error(&origin))?;
            TokenReport {
                target: None,
                deployment: None,
                token: found.token.expose().to_string(),
                url: found.url,
                tls_fingerprint: None,
            }
        }
        None if args.rotate => {
            let mut config = super::load(named(global, &args.deployment, args.on))?;
            let again = format!(
                "{} --rotate{}",
                super::command_for("token", &config, config.target),
                args.seat
                    .as_ref()
                    .map(|s| format!(" --seat {s}"))
                    .unwrap_or_default()
            );
            labship::interrupt::install(labship::interrupt::Then::Retry(again))?;
            // One seat of a class alone: its own deployment.
            match config.target {
                Target::Local => {
                    let host = LocalHost::connect().await?;
                    if let Some(seat) = &args.seat {
                        config.name = labship::class::seat(&host, &config.name, seat).await?;
                    }
                    host.rotate_token(&config, printer).await?
                }
                Target::Ec2 => {
                    let host = Ec2Host::connect(&config).await?;
                    if let Some(seat) = &args.seat {
                        config.name = labship::class::seat(&host, &config.name, seat).await?;
                    }
                    host.rotate_token(&config, printer).await?
                }
            }
        }
        None => {
            let config = super::load(named(global, &args.deployment, args.on))?;
            match config.target {
                Target::Local => {
                    return of(&LocalHost::connect().await?, &config.name, args, printer).await
                }
                Target::Ec2 => {
                    return of(
                        &Ec2Host::connect(&config).await?,
                        &config.name,
                        args,
                        printer,
                    )
                    .await
                }
            }
        }
    };
    super::emit(printer, &report)
}

/// The token of a deployment, of one seat (`--seat`), or a class's whole roster (its names
/// and emails from `--roster` where the host keeps none).
async fn of<H: Host>(host: &H, name: &str, args: &TokenArgs, printer: &Printer) -> Result<()> {
    // Read (and checked) before anything is asked of the host.
    let names = args
        .roster
        .as_deref()
        .map(labship::class::Roster::from_file)
        .transpose()?;
    let seats = labship::class::seats(host, name).await?;
    if let Some(seat) = &args.seat {
        let one = labship::class::pick(seats, name, Some(seat), host.target())?;
        return super::emit(printer, &host.token(&one[0].name).await?);
    }
    if !seats.is_empty() {
        let mut roster = labship::class::roster(host, name, seats).await?;
        if let Some(names) = &names {
            let unknown = roster.with_names(names);
            if !unknown.is_empty() {
                printer.note(format!(
                    "Warning: {} of the roster file's seats are not seats of class `{name}`: {}",
                    unknown.len(),
                    unknown.join(", ")
                ));
            }
        }
        return super::emit_roster(printer, &roster);
    }
    if let Some(path) = &args.roster {
        return Err(Error::InvalidSetting {
            what: "--roster",
            value: path.display().to_string(),
            reason: format!("`{name}` is no class: it has no seats to name"),
            hint:
                "give the class's name (`labship token CLASS --roster FILE`), or leave --roster out"
                    .into(),
        });
    }
    super::emit(printer, &host.token(name).await?)
}

/// Jupyter logs worth searching are small; a bigger input (`/dev/zero`, a wrong file) is
/// refused instead of read forever.
const MAX_LOG: u64 = 64 << 20;

fn read_log(path: &std::path::Path) -> Result<(String, String)> {
    let (origin, reader): (String, Box<dyn Read>) = if path.as_os_str() == "-" {
        ("standard input".into(), Box::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        (path.display().to_string(), Box::new(file))
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_LOG + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_LOG {
        return Err(Error::InvalidSetting {
            what: "--from-log",
            value: origin,
            reason: format!("it is larger than {} MiB, more than any Jupyter log", MAX_LOG >> 20),
            hint: "give the log of the server's start (e.g. `docker logs CONTAINER 2>&1 | head -n 200`)".into(),
        });
    }
    Ok((origin, String::from_utf8_lossy(&bytes).into_owned()))
}
