//! `labship up`: one handler for every target.

use std::time::Duration;

use labship::config::{Config, Target};
use labship::error::Result;
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::{Host, UpOptions};
use labship::interrupt;
use labship::output::Printer;

use crate::cli::UpArgs;

pub async fn run(config: Config, args: &UpArgs, printer: &Printer) -> Result<()> {
    let options = UpOptions {
        port: args.port,
        bind: args.bind,
        wait: args.wait.map(Duration::from_secs),
        allow_cidr: args.allow_cidr.clone(),
        public: args.public,
        access: args.access,
        attach: args.attach,
        connect: args.connect,
        force: args.force,
    };
    // Before anything is observed or created.
    let ec2_flags: Vec<&'static str> = [
        ("--ami", args.ami.is_some()),
        ("--subnet", args.subnet.is_some()),
        ("--idle-stop", args.idle_stop.is_some()),
        ("--ttl", args.ttl.is_some()),
        ("--volume-size", args.volume_size.is_some()),
        ("--spot", args.spot),
        ("--on-demand", args.on_demand),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    options.refuse(config.target, &ec2_flags)?;
    match config.target {
        Target::Local => {
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
    options: &UpOptions,
    args: &UpArgs,
    printer: &Printer,
) -> Result<()> {
    if args.dry_run {
        let plan = host.plan(config, options, printer).await?;
        return super::emit(printer, &plan);
    }
    // From here Ctrl-C stops at the next safe point (exit 130) instead of at once. Also
    // registered before the URL is printed: with --attach, a Ctrl-C sent as soon as the URL
    // is seen stops the container rather than leaving it running.
    interrupt::install(interrupt::Then::Remove(super::down_command(
        config,
        config.target,
        "",
    )))?;
    let report = host.up(config, options, printer).await?;
    if args.timings {
        printer.note(&report.timings);
    }
    super::emit(printer, &report)?;
    match &report.url {
        Some(url) if args.open => labship::browser::open(url, printer),
        _ => {}
    }
    if args.attach {
        host.attach(&config.name, printer).await?;
    }
    // With --access ssm there is no URL to open but the forwarder's.
    let open_through_forwarder = args.open && report.url.is_none();
    if args.connect || open_through_forwarder {
        // The connect report follows the up report on stdout (a second line, or a second
        // JSON document).
        let target = host.connect_target(&config.name).await?;
        super::connect::serve(config, target, None, open_through_forwarder, printer).await?;
    }
    Ok(())
}
