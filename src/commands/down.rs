//! `labship down`: one handler for every target; asks before deleting (or `--yes`).

use std::io::{BufRead, IsTerminal, Write};

use labship::config::{Config, Target};
use labship::error::{Error, Result};
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::{DownOptions, Host};
use labship::output::Printer;

use crate::cli::DownArgs;

pub async fn run(config: Config, args: &DownArgs, printer: &Printer) -> Result<()> {
    let options = DownOptions {
        delete_data: args.delete_data,
        purge_images: args.purge_images,
        all: args.all,
        force: args.force,
        backup_root: config.root.join("labship-backups"),
    };
    match config.target {
        Target::Local => {
            if args.purge_images || args.all {
                return Err(Error::Unsupported {
                    option: if args.all { "--all" } else { "--purge-images" }.into(),
                    target: Target::Local.to_string(),
                    hint: "the local image stays on the engine (`docker image rm` removes it); these options act on ECR and IAM: add --ec2".into(),
                });
            }
            on(
                &LocalHost::connect().await?,
                &config,
                &options,
                args,
                printer,
            )
            .await
        }
        Target::Ec2 => {
            on(
                &Ec2Host::connect(&config).await?,
                &config,
                &options,
                args,
                printer,
            )
            .await
        }
    }
}

async fn on<H: Host>(
    host: &H,
    config: &Config,
    options: &DownOptions,
    args: &DownArgs,
    printer: &Printer,
) -> Result<()> {
    // A class (or one of its seats): its seats, from one listing.
    let seat = args.seat.as_deref();
    let seats = if args.all {
        Vec::new()
    } else {
        labship::class::seats(host, &config.name).await?
    };
    let seats = (seat.is_some() || !seats.is_empty())
        .then(|| labship::class::pick(seats, &config.name, seat, host.target()))
        .transpose()?;
    if !args.yes {
        let preview = match &seats {
            Some(seats) => labship::class::down_preview(host, config, options, seats).await?,
            None if args.all => host.down_preview(config, options).await?,
            // A plain deployment, or what a class of this name left: the group its seats
            // shared, once they are all gone.
            None => {
                let own = host.down_preview(config, options).await?;
                // A listing that fails here does not stop the `down` of a deployment: the
                // group, if there is one, is looked for again below.
                let class = host
                    .release_preview(&config.name, &[&config.name])
                    .await
                    .unwrap_or(None);
                match (own, class) {
                    (Some(own), Some(class)) => Some(format!("{own}; {class}")),
                    (own, class) => own.or(class),
                }
            }
        };
        if let Some(action) = preview {
            if !confirm(&action)? {
                return Err(Error::NeedsConfirmation { action });
            }
        }
    }
    let again = if args.all {
        // No name: every deployment.
        super::down_command(config, config.target, " --all").replacen(
            &format!("labship down {} ", config.name),
            "labship down ",
            1,
        )
    } else {
        // The same down again: the same seat and the same flags (a volume the user asked to
        // delete must not become a kept one).
        let mut extra = seat.map(|s| format!(" --seat {s}")).unwrap_or_default();
        for (set, flag) in [
            (args.delete_data, " --delete-data"),
            (args.purge_images, " --purge-images"),
            (args.force, " --force"),
        ] {
            if set {
                extra.push_str(flag);
            }
        }
        super::down_command(config, config.target, &extra)
    };
    labship::interrupt::install(labship::interrupt::Then::Repeat(again.clone()))?;
    let Some(seats) = seats else {
        let mut report = host.down(config, options, printer).await?;
        if args.all {
            return super::emit(printer, &report);
        }
        // What was removed is reported whatever happens to the group.
        let left = match host.release_class(&config.name, options.force).await {
            Ok(released) => {
                let left = released.failures.first().cloned();
                report.absorb(released);
                left
            }
            Err(e @ Error::Interrupted { .. }) => {
                super::emit(printer, &report)?;
                return Err(e);
            }
            // Whether a class of this name left a group is not known: the deployment is
            // gone all the same; `status` lists such a group.
            Err(e) => {
                printer.note(format!(
                    "whether a class named `{}` left a security group could not be checked: {e}; `labship status` lists one",
                    config.name
                ));
                None
            }
        };
        super::emit(printer, &report)?;
        return match left {
            Some(cause) => Err(Error::ClassGroupLeft {
                class: config.name.clone(),
                cause,
                again,
            }),
            None => Ok(()),
        };
    };
    let total = seats.len();
    let (report, left) = labship::class::down(host, config, options, seats, printer).await?;
    super::emit(printer, &report)?;
    if !left.seats.is_empty() {
        return Err(Error::SeatsLeft {
            class: config.name.clone(),
            failed: left.seats.len(),
            total,
            seats: left.seats.join(", "),
            again,
        });
    }
    match left.group {
        Some(cause) => Err(Error::ClassGroupLeft {
            class: config.name.clone(),
            cause,
            again,
        }),
        None => Ok(()),
    }
}

/// Asks on the terminal; false when the answer is no or there is no terminal to ask on.
fn confirm(action: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "This will {action}. Continue? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| Error::Write {
            path: "(stdin)".into(),
            source,
        })?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
