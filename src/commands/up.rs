//! `labship up`: one handler for every target.

use std::time::Duration;

use labship::aws::s3::S3;
use labship::class::Roster;
use labship::config::{Config, Target};
use labship::data;
use labship::error::{Error, Result};
use labship::hosts::ec2::Ec2Host;
use labship::hosts::local::LocalHost;
use labship::hosts::{Host, UpOptions};
use labship::interrupt;
use labship::output::Printer;

use crate::cli::UpArgs;

pub async fn run(config: Config, args: &UpArgs, printer: &Printer) -> Result<()> {
    let mut options = UpOptions {
        port: args.port,
        bind: args.bind,
        wait: args.wait.map(Duration::from_secs),
        allow_cidr: args.allow_cidr.clone(),
        public: args.public,
        access: args.access,
        attach: args.attach,
        connect: args.connect,
        force: args.force,
        ..UpOptions::default()
    };
    let roster = match (args.seats, &args.roster) {
        (Some(n), _) => Some(Roster::numbered(n)?),
        (None, Some(path)) => Some(Roster::from_file(path)?),
        (None, None) => None,
    };
    if roster.is_none() {
        if let Some(flag) = [
            ("--seat-memory", args.seat_memory.is_some()),
            ("--seat-cpus", args.seat_cpus.is_some()),
            ("--fallback-type", args.fallback_type.is_some()),
            ("--seats-per-instance", args.seats_per_instance.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
        {
            return Err(Error::InvalidSetting {
                what: "option",
                value: flag.into(),
                reason: "it is for a class's seats".into(),
                hint: "add --seats N or --roster FILE, or drop it".into(),
            });
        }
    }
    // Before anything is observed or created.
    let ec2_flags: Vec<&'static str> = [
        ("--ami", args.ami.is_some()),
        ("--subnet", args.subnet.is_some()),
        ("--idle-stop", args.idle_stop.is_some()),
        ("--ttl", args.ttl.is_some()),
        ("--volume-size", args.volume_size.is_some()),
        ("--spot", args.spot),
        ("--on-demand", args.on_demand),
        ("--fallback-type", args.fallback_type.is_some()),
        ("--seats-per-instance", args.seats_per_instance.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    options.refuse(config.target, &ec2_flags)?;
    inputs(&config, &mut options, args.dry_run, printer).await?;
    if let Some(roster) = roster {
        return class(config, roster, options, args, printer).await;
    }
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

/// `[data] inputs`: checked before anything is made, then (not for a dry run) copied; a
/// local deployment (every seat of a local class) gets them read-only at `inputs/<name>`.
/// An EC2 host copies them itself with its role (their lines go into its scripts, and so
/// into the plan), and mounts them read-only the same way.
async fn inputs(
    config: &Config,
    options: &mut UpOptions,
    dry_run: bool,
    printer: &Printer,
) -> Result<()> {
    if config.data.inputs.is_empty() {
        return Ok(());
    }
    let s3 = S3::new(&labship::aws::load(config).await?);
    let checked = data::check(&s3, &config.data.inputs).await?;
    if config.target == Target::Ec2 {
        // The host copies them itself, with its role, before Jupyter starts.
        options.host_inputs = checked
            .iter()
            .map(|c| c.on_host().map(|(line, _)| line))
            .collect::<Result<String>>()?;
        options.host_reach = checked
            .iter()
            .map(|c| (c.uri.clone(), c.single()))
            .collect();
        let outside: std::collections::BTreeSet<&str> = checked
            .iter()
            .map(|c| c.uri.bucket.as_str())
            .filter(|b| !b.starts_with("labship-"))
            .collect();
        if !outside.is_empty() {
            printer.note(format!(
                "The deployments' permissions boundary (labship-deployment-boundary) allows buckets named labship-* only: unless an administrator added {} to it by name (infra/README.md), the host will be refused there",
                outside.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        return Ok(());
    }
    options.inputs_label = data::label(&checked);
    if !dry_run {
        // Nothing is made yet: a Ctrl-C during the copy only stops it.
        interrupt::install(interrupt::Then::Remove(super::down_command(
            config,
            config.target,
            "",
        )))?;
        data::prune_unused_copies(&labship::docker::Engine::connect().await?, printer).await;
        options.inputs = data::sync(&checked, None, printer).await?;
    }
    Ok(())
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
    // The notebooks' repository is fetched first: a wrong URL or ref is an error before
    // anything is made.
    let snapshot = labship::workspace::fetch(config, printer).await?;
    let mut report = host.up(config, options, printer).await?;
    if args.timings {
        printer.note(&report.timings);
    }
    let mut git_failed = None;
    if let Some(snapshot) = &snapshot {
        match labship::workspace::sync_deployment(host, &config.name, snapshot).await {
            Ok(synced) => {
                printer.note(format!("Workspace: {synced}"));
                report.git = Some(synced);
            }
            Err(e) => git_failed = Some(e),
        }
    }
    super::emit(printer, &report)?;
    if let Some(e) = git_failed {
        return Err(e);
    }
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

/// `up --seats N` / `--roster FILE`: the class's seats side by side, the roster on stdout.
async fn class(
    mut config: Config,
    roster: Roster,
    mut options: UpOptions,
    args: &UpArgs,
    printer: &Printer,
) -> Result<()> {
    let per_host = args.seats_per_instance.map_or(1, usize::from);
    if per_host > 1 && !config.data.inputs.is_empty() {
        // The host copies the inputs with the deployment's own role, and one instance has
        // one role: the seats beside each other would need one made for the host.
        return Err(Error::Unsupported {
            option: "--seats-per-instance with [data] inputs".into(),
            target: Target::Ec2.to_string(),
            hint: "drop --seats-per-instance (each seat then has an instance and a role of its own), or put the data into the image or the notebooks' repository".into(),
        });
    }
    if config.target == Target::Ec2 && per_host > 1 && !config.ec2.instance_type_asked {
        // Room for every seat's limits, and a vCPU each.
        let limits = labship::hosts::Limits {
            memory_mib: Some(args.seat_memory.unwrap_or(labship::class::SEAT_MEMORY_MIB)),
            cpus: Some(args.seat_cpus.unwrap_or(labship::class::SEAT_CPUS)),
        };
        config.ec2.instance_type =
            labship::class::host_type(per_host, config.build.platform, limits);
        printer.note(format!(
            "{per_host} seats to an instance: {} (--instance-type chooses another)",
            config.ec2.instance_type
        ));
    }
    if config.target == Target::Ec2 && per_host == 1 {
        if let Some(flag) = [
            ("--seat-memory", args.seat_memory.is_some()),
            ("--seat-cpus", args.seat_cpus.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
        {
            return Err(Error::Unsupported {
                option: flag.into(),
                target: Target::Ec2.to_string(),
                hint: "each seat has an instance of its own on EC2: choose its size with --instance-type (ec2.instance_type), or put several seats on one with --seats-per-instance K, where each has these limits".into(),
            });
        }
    }
    if let Some(fallback) = &args.fallback_type {
        labship::config::check_fallback_type(&config, fallback)?;
    }
    // A class's students are elsewhere: a seat opened only to the instructor's own address
    // (the default) is a URL they cannot reach.
    if config.target == Target::Ec2
        && options.access.or(config.ec2.access) != Some(labship::config::Access::Ssm)
        && !options.public
        && options.allow_cidr.is_empty()
        && config.ec2.allow_cidr.is_empty()
    {
        printer.note(
            "Warning: the seats' port opens only to this machine's public IP (detected), and a seat opened to other networks before is narrowed to it: \
             students on other networks cannot reach their URLs. Give their networks with --allow-cidr CIDR (repeatable, e.g. the campus range; \
             ec2.allow_cidr in labship.toml keeps it for every run), or --public for everyone (each seat still needs its own token, over TLS).",
        );
    }
    if let Some(cpus) = args.seat_cpus {
        labship::hosts::Limits::check_cpus("--seat-cpus", cpus)?;
    }
    if config.target == Target::Local || per_host > 1 {
        options.limits = labship::hosts::Limits {
            memory_mib: Some(args.seat_memory.unwrap_or(labship::class::SEAT_MEMORY_MIB)),
            cpus: Some(args.seat_cpus.unwrap_or(labship::class::SEAT_CPUS)),
        };
    }
    // Interrupted, `down` of the class removes every seat made so far.
    interrupt::install(interrupt::Then::Remove(super::down_command(
        &config,
        config.target,
        "",
    )))?;
    let snapshot = labship::workspace::fetch(&config, printer).await?;
    let snapshot = snapshot.as_ref();
    let launch = labship::class::ClassLaunch {
        fallback_type: args.fallback_type.as_deref(),
        seats_per_instance: args.seats_per_instance.map_or(1, usize::from),
    };
    let report = match config.target {
        Target::Local => {
            let host = LocalHost::connect().await?;
            labship::class::up(
                &host, &config, &roster, &options, snapshot, &launch, printer,
            )
            .await?
        }
        Target::Ec2 => {
            let host = Ec2Host::connect_bulk(&config).await?;
            labship::class::up(
                &host, &config, &roster, &options, snapshot, &launch, printer,
            )
            .await?
        }
    };
    super::emit_roster(printer, &report)?;
    if report.interrupted {
        // Each seat stopped at its next safe point (its row says where); the command ends as
        // an interrupted one does: exit 130, what exists now, the command to finish.
        return Err(Error::SeatsInterrupted {
            class: config.name.clone(),
            summary: interrupt::what_now(),
        });
    }
    if report.failed > 0 {
        let again = match &args.roster {
            Some(path) => format!(
                "{} --roster {}",
                super::command_for("up", &config, config.target),
                path.display()
            ),
            None => format!(
                "{} --seats {}",
                super::command_for("up", &config, config.target),
                roster.seats.len()
            ),
        };
        return Err(Error::SeatsFailed {
            class: config.name.clone(),
            failed: report.failed,
            total: report.seats.len(),
            seats: report
                .not_ready()
                .map(|s| s.seat.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            again,
        });
    }
    Ok(())
}
