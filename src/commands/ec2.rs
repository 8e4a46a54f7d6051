//! Handlers for deployments on EC2 (`--ec2`, or `target = "ec2"` in labship.toml).

use std::time::Duration;

use crate::cli::{DownArgs, UpArgs};
use crate::config::Config;
use crate::ec2::down::DownOptions;
use crate::ec2::up::{UpOptions, UpOutcome};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::Printer;

/// Default wait for a new instance: boot, Docker, pull of a multi-GB image, Jupyter.
const DEFAULT_WAIT: u64 = 900;

pub async fn up(config: Config, args: &UpArgs, printer: &Printer) -> Result<()> {
    let options = UpOptions {
        port: args.port.unwrap_or(config.ec2.port),
        bind: args
            .bind
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        wait: Duration::from_secs(args.wait.unwrap_or(DEFAULT_WAIT)),
        allow_cidr: args.allow_cidr.clone(),
        public: args.public,
        dry_run: args.dry_run,
    };
    if options.port == 0 {
        return Err(Error::InvalidSetting {
            what: "port",
            value: "0".into(),
            reason: "a port is 1-65535".into(),
            hint: "use e.g. --port 8888".into(),
        });
    }
    let engine = Engine::connect().await?;
    let config = crate::base::prefer_offline(&engine, &config).await?;
    let aws = crate::aws::load(&config).await?;
    match crate::ec2::up::up(&engine, &aws, &config, &options, printer).await? {
        UpOutcome::Plan(plan) => super::emit(printer, plan.as_ref()),
        UpOutcome::Up(report) => {
            if args.timings {
                printer.note(&report.timings);
            }
            super::emit(printer, report.as_ref())?;
            if args.open {
                crate::browser::open(&report.url, printer);
            }
            Ok(())
        }
    }
}

pub async fn status(config: Config, printer: &Printer) -> Result<()> {
    let aws = crate::aws::load(&config).await?;
    let report = crate::ec2::info::status(&aws).await?;
    super::emit(printer, &report)
}

pub async fn down(config: Config, args: &DownArgs, printer: &Printer) -> Result<()> {
    let aws = crate::aws::load(&config).await?;
    if !args.yes {
        let (instances, groups) = crate::ec2::down::preview(&aws, &config.name).await?;
        if !instances.is_empty() || !groups.is_empty() || args.purge_images || args.all {
            let mut what = Vec::new();
            if !instances.is_empty() {
                what.push(if args.delete_data {
                    format!(
                        "terminate {} WITHOUT saving its workspace (its notebooks are deleted with the instance's disk)",
                        instances.join(", ")
                    )
                } else {
                    format!(
                        "save the workspace of {} to {} and terminate it",
                        instances.join(", "),
                        config.root.join("labship-backups").display()
                    )
                });
            }
            if !groups.is_empty() {
                what.push(format!("delete security group {}", groups.join(", ")));
            }
            if args.purge_images {
                what.push(format!(
                    "delete every image in ECR repository {}",
                    config.push.repository
                ));
            }
            if args.all {
                what.push(
                    "remove the shared IAM role labship-instance if no deployment uses it".into(),
                );
            }
            let action = format!("{} of `{}` in {}", what.join(", "), config.name, aws.region);
            if !super::down::confirm(&action)? {
                return Err(Error::NeedsConfirmation { action });
            }
        }
    }
    let report = crate::ec2::down::down(
        &aws,
        &config.name,
        &config.push.repository,
        config.push.registry_endpoint.clone(),
        &DownOptions {
            purge_images: args.purge_images,
            all: args.all,
            delete_data: args.delete_data,
            backup_root: config.root.join("labship-backups"),
        },
        printer,
    )
    .await?;
    super::emit(printer, &report)
}
