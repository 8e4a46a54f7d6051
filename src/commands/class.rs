//! `labship collect` and `labship distribute`: an instructor's verbs over a class's seats
//! (or a single deployment, as a class of one).

use labship::class;
use labship::config::{Config, Target};
use labship::error::Result;
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::Host;
use labship::output::Printer;

use crate::cli::{CollectArgs, DistributeArgs};

pub async fn collect(config: Config, args: &CollectArgs, printer: &Printer) -> Result<()> {
    let dest = args
        .to
        .clone()
        .unwrap_or_else(|| config.root.join("collected"));
    match config.target {
        Target::Local => {
            collect_on(&LocalHost::connect().await?, &config, args, &dest, printer).await
        }
        Target::Ec2 => {
            collect_on(
                &Ec2Host::connect(&config).await?,
                &config,
                args,
                &dest,
                printer,
            )
            .await
        }
    }
}

async fn collect_on<H: Host>(
    host: &H,
    config: &Config,
    args: &CollectArgs,
    dest: &std::path::Path,
    printer: &Printer,
) -> Result<()> {
    let report = class::collect(
        host,
        &config.name,
        args.seats.seat.as_deref(),
        &args.paths,
        dest,
        printer,
    )
    .await?;
    super::emit(printer, &report)?;
    failed(
        &config.name,
        report.seats.len(),
        report
            .seats
            .iter()
            .filter(|s| s.error.is_some())
            .map(|s| s.seat.as_str()),
        "collect",
    )
}

pub async fn distribute(config: Config, args: &DistributeArgs, printer: &Printer) -> Result<()> {
    // Read (and checked) before any seat is touched.
    let (files, snapshot) = if args.git.is_some() {
        let snapshot = labship::workspace::fetch(&config, printer)
            .await?
            .ok_or_else(|| labship::error::Error::InvalidSetting {
                what: "--git",
                value: config.name.clone(),
                reason: "no notebooks' repository is configured".into(),
                hint: "name it: `labship distribute --git URL[#REF]` (the one `up --git` was given), or set `[workspace] git = \"URL\"` in labship.toml (or LABSHIP_GIT)".into(),
            })?;
        (Vec::new(), Some(snapshot))
    } else {
        (class::files_to_give(&args.files)?, None)
    };
    let handout = match &snapshot {
        Some(s) => class::Handout::Git(s),
        None => class::Handout::Files(&files),
    };
    match config.target {
        Target::Local => {
            distribute_on(
                &LocalHost::connect().await?,
                &config,
                args,
                handout,
                printer,
            )
            .await
        }
        Target::Ec2 => {
            distribute_on(
                &Ec2Host::connect(&config).await?,
                &config,
                args,
                handout,
                printer,
            )
            .await
        }
    }
}

async fn distribute_on<H: Host>(
    host: &H,
    config: &Config,
    args: &DistributeArgs,
    handout: class::Handout<'_>,
    printer: &Printer,
) -> Result<()> {
    let report = class::distribute(
        host,
        &config.name,
        args.seats.seat.as_deref(),
        handout,
        printer,
    )
    .await?;
    super::emit(printer, &report)?;
    failed(
        &config.name,
        report.seats.len(),
        report
            .seats
            .iter()
            .filter(|s| s.error.is_some())
            .map(|s| s.seat.as_str()),
        "distribute",
    )
}

/// A non-zero exit when some seats were not reached (the report above says why for each).
fn failed<'a>(
    class: &str,
    total: usize,
    not_reached: impl Iterator<Item = &'a str>,
    verb: &str,
) -> Result<()> {
    let seats: Vec<&str> = not_reached.collect();
    if seats.is_empty() {
        return Ok(());
    }
    Err(labship::error::Error::SeatsFailed {
        class: class.to_string(),
        failed: seats.len(),
        total,
        seats: seats.join(", "),
        again: format!("`labship {verb}` with --seat ID"),
    })
}
