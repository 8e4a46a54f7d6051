//! `labship status`: every deployment of every target in one table (one JSON array).
//!
//! Without `--local`/`--ec2` both are listed; EC2 only when AWS is configured (a region and
//! credentials): a machine without an AWS account still gets its local list, and the report
//! says why EC2 was not checked. Asking for one target makes its failure an error.

use labship::config::{Config, Target};
use labship::error::Result;
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::{Host, NotChecked, StatusReport};
use labship::output::Printer;

use crate::cli::StatusArgs;

pub async fn run(config: Config, args: &StatusArgs, printer: &Printer) -> Result<()> {
    let asked = args.target.target();
    let mut report = StatusReport {
        deployments: Vec::new(),
        not_checked: Vec::new(),
    };
    if asked != Some(Target::Ec2) {
        let local = async { LocalHost::connect().await?.status().await };
        match local.await {
            Ok(rows) => report.deployments.extend(rows),
            Err(e) if asked.is_none() => report.not_checked.push(NotChecked {
                target: Target::Local,
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    if asked != Some(Target::Local) {
        let ec2 = async { Ec2Host::connect(&config).await?.status().await };
        match ec2.await {
            Ok(rows) => report.deployments.extend(rows),
            Err(e) if asked.is_none() => report.not_checked.push(NotChecked {
                target: Target::Ec2,
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    super::emit(printer, &report)
}
