//! `labship backup`: a running deployment's workspace, saved to a local folder.

use labship::config::{Config, Target};
use labship::error::Result;
use labship::hosts::backup::stamped_dir;
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::Host;
use labship::output::Printer;

use crate::cli::BackupArgs;

pub async fn run(config: Config, args: &BackupArgs, printer: &Printer) -> Result<()> {
    labship::interrupt::install(labship::interrupt::Then::Repeat(super::command_for(
        "backup",
        &config,
        config.target,
    )))?;
    let dest = args
        .to
        .clone()
        .unwrap_or_else(|| stamped_dir(&config.root.join("labship-backups"), &config.name));
    let report = match config.target {
        Target::Local => {
            LocalHost::connect()
                .await?
                .backup(&config.name, &dest, printer)
                .await?
        }
        Target::Ec2 => {
            Ec2Host::connect(&config)
                .await?
                .backup(&config.name, &dest, printer)
                .await?
        }
    };
    super::emit(printer, &report)
}
