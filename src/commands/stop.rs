//! `labship stop`: the deployment's server stops and keeps its workspace; `up` starts it.

use labship::config::{Config, Target};
use labship::error::Result;
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::Host;
use labship::output::Printer;

use crate::cli::StopArgs;

pub async fn run(config: Config, args: &StopArgs, printer: &Printer) -> Result<()> {
    labship::interrupt::install(labship::interrupt::Then::Repeat(super::command_for(
        "stop",
        &config,
        config.target,
    )))?;
    let report = match config.target {
        Target::Local => {
            LocalHost::connect()
                .await?
                .stop(&config.name, args.force, printer)
                .await?
        }
        Target::Ec2 => {
            Ec2Host::connect(&config)
                .await?
                .stop(&config.name, args.force, printer)
                .await?
        }
    };
    super::emit(printer, &report)
}
