//! `labship logs`: the container's log (local) or the instance's cleaned console (EC2).

use labship::config::{Config, Target};
use labship::error::Result;
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::Host;
use labship::output::Printer;

use crate::cli::LogsArgs;

pub async fn run(config: Config, args: &LogsArgs, printer: &Printer) -> Result<()> {
    let report = match config.target {
        Target::Local => {
            LocalHost::connect()
                .await?
                .logs(&config.name, args.tail)
                .await?
        }
        Target::Ec2 => {
            Ec2Host::connect(&config)
                .await?
                .logs(&config.name, args.tail)
                .await?
        }
    };
    super::emit(printer, &report)
}
