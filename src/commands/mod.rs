//! Thin handlers: load the settings, pick the host, call the library, print the report.

mod backup;
mod base;
mod build;
mod class;
mod connect;
mod down;
mod init;
mod logs;
mod push;
mod run;
mod status;
mod stop;
mod token;
mod up;

use labship::config::{Config, Overrides};
use labship::error::{Error, Result};
use labship::output::Printer;

use crate::cli::{named, Command, GlobalArgs};

pub async fn run(command: Command, global: &GlobalArgs, printer: &Printer) -> Result<()> {
    csv_only_for_rosters(&command, printer)?;
    match command {
        Command::Init(args) => init::run(args, printer),
        Command::Build(args) => build::run(load(args.overrides(global))?, printer).await,
        Command::Push(args) => push::run(load(args.overrides(global))?, printer).await,
        Command::Up(args) => up::run(load(args.overrides(global))?, &args, printer).await,
        Command::Run(args) => run::run(load(args.overrides(global))?, &args, printer).await,
        Command::Runs(args) => {
            run::runs(
                load(named(global, &args.deployment, args.on))?,
                &args,
                printer,
            )
            .await
        }
        Command::Fetch(args) => {
            run::fetch(load(named(global, &args.name, args.on))?, &args, printer).await
        }
        Command::Token(args) => token::run(&args, global, printer).await,
        Command::Connect(args) => {
            let config =
                for_seat(load(named(global, &args.deployment, args.on))?, &args.seat).await?;
            connect::run(&config, args.port, args.open, printer).await
        }
        Command::Status(args) => {
            status::run(load(named(global, &None, args.target))?, &args, printer).await
        }
        Command::Logs(args) => {
            logs::run(
                for_seat(load(named(global, &args.deployment, args.on))?, &args.seat).await?,
                &args,
                printer,
            )
            .await
        }
        Command::Stop(args) => {
            stop::run(
                for_seat(load(named(global, &args.deployment, args.on))?, &args.seat).await?,
                &args,
                printer,
            )
            .await
        }
        Command::Backup(args) => {
            backup::run(
                for_seat(load(named(global, &args.deployment, args.on))?, &args.seat).await?,
                &args,
                printer,
            )
            .await
        }
        Command::Down(args) => {
            down::run(
                load(named(global, &args.deployment, args.on))?,
                &args,
                printer,
            )
            .await
        }
        Command::Collect(args) => {
            class::collect(
                load(named(global, &args.seats.name, args.seats.on))?,
                &args,
                printer,
            )
            .await
        }
        Command::Distribute(args) => {
            let mut flags = named(global, &args.seats.name, args.seats.on);
            // `--git URL`: that repository, as `up --git URL` took it (a file is no repository:
            // `--git notes.md` meant the files to hand out).
            flags.git = args.git.clone().filter(|url| !url.is_empty());
            if let Some(file) = flags
                .git
                .as_deref()
                .filter(|u| std::path::Path::new(u).is_file())
            {
                return Err(Error::InvalidSetting {
                    what: "--git",
                    value: file.to_string(),
                    reason: "a file, not a repository: `--git` takes the notebooks' repository (URL[#REF]) or nothing".into(),
                    hint: format!("to hand out files: `labship distribute {file}`; for the configured repository: `labship distribute --git`"),
                });
            }
            class::distribute(load(flags)?, &args, printer).await
        }
        Command::Base => base::run(printer).await,
    }
}

fn current_dir() -> Result<std::path::PathBuf> {
    std::env::current_dir().map_err(|source| Error::ConfigRead {
        path: ".".into(),
        source,
    })
}

/// `--seat ID` of the class `config.name`: `config` for that seat's deployment (found on
/// the host, so a seat that is not there is named as such). Without it, `config` as it is.
async fn for_seat(mut config: Config, seat: &Option<String>) -> Result<Config> {
    use labship::hosts::{ec2::Ec2Host, local::LocalHost};
    let Some(seat) = seat else {
        return Ok(config);
    };
    config.name = match config.target {
        labship::config::Target::Local => {
            labship::class::seat(&LocalHost::connect().await?, &config.name, seat).await?
        }
        labship::config::Target::Ec2 => {
            labship::class::seat(&Ec2Host::connect(&config).await?, &config.name, seat).await?
        }
    };
    Ok(config)
}

fn load(flags: Overrides) -> Result<Config> {
    let env = Overrides::from_env(|k| std::env::var(k).ok())?;
    Config::load(&current_dir()?, flags, env)
}

/// The `labship down ...` that removes what a command made for `config`'s deployment on
/// `target`, with `extra` options.
fn down_command(config: &Config, target: labship::config::Target, extra: &str) -> String {
    let mut cmd = command_for("down", config, target);
    cmd.push_str(extra);
    cmd
}

/// `labship VERB NAME [--ec2] [--region R] [--profile P]`: a command to suggest for this
/// deployment.
fn command_for(verb: &str, config: &Config, target: labship::config::Target) -> String {
    let mut cmd = format!("labship {verb} {}", config.name);
    if target == labship::config::Target::Ec2 {
        cmd.push_str(" --ec2");
    }
    if let Some(region) = &config.region {
        cmd.push_str(&format!(" --region {region}"));
    }
    if let Some(profile) = &config.profile {
        cmd.push_str(&format!(" --profile {profile}"));
    }
    cmd
}

fn emit<R: labship::output::Report>(printer: &Printer, report: &R) -> Result<()> {
    if printer.format() == labship::output::OutputFormat::Csv {
        return Err(no_csv());
    }
    printer.result(report).map_err(|source| Error::Write {
        path: "(stdout)".into(),
        source,
    })
}

/// `-o csv` is refused before a command acts, not after it has (a `down` that removed a
/// class, an `up` that launched, a job of hours): only a class's roster is a table, and only
/// `up --seats N`/`--roster FILE` and a plain `token` (of a class) may print one.
fn csv_only_for_rosters(command: &Command, printer: &Printer) -> Result<()> {
    if printer.format() != labship::output::OutputFormat::Csv {
        return Ok(());
    }
    let may_be_a_roster = match command {
        Command::Up(args) => args.seats.is_some() || args.roster.is_some(),
        Command::Token(args) => !args.rotate && args.seat.is_none() && args.from_log.is_none(),
        _ => false,
    };
    if may_be_a_roster {
        Ok(())
    } else {
        Err(no_csv())
    }
}

/// `-o csv` of a command whose result is not a table of seats.
fn no_csv() -> Error {
    Error::InvalidSetting {
        what: "--output",
        value: "csv".into(),
        reason:
            "only a class's roster is a table (`up --seats N`/`--roster FILE`, `token` of a class)"
                .into(),
        hint: "use --output json (or text) for this command".into(),
    }
}

/// A class's roster: a table, JSON, or CSV.
fn emit_roster(printer: &Printer, report: &labship::class::RosterReport) -> Result<()> {
    if printer.format() == labship::output::OutputFormat::Csv {
        use std::io::Write;
        let csv = report.to_csv()?;
        return std::io::stdout()
            .lock()
            .write_all(csv.as_bytes())
            .map_err(|source| Error::Write {
                path: "(stdout)".into(),
                source,
            });
    }
    printer.result(report).map_err(|source| Error::Write {
        path: "(stdout)".into(),
        source,
    })
}
