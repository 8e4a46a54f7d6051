//! Thin handlers: load the settings, call the library, print the report.

mod base;
mod build;
mod down;
mod ec2;
mod init;
mod local;
mod push;
mod token;

use crate::cli::{named, Command, GlobalArgs};
use crate::config::{Config, Overrides, Target};
use crate::error::{Error, Result};
use crate::output::Printer;

pub async fn run(command: Command, global: &GlobalArgs, printer: &Printer) -> Result<()> {
    match command {
        Command::Init(args) => init::run(args, printer),
        Command::Build(args) => build::run(load(args.overrides(global))?, printer).await,
        Command::Push(args) => push::run(load(args.overrides(global))?, printer).await,
        Command::Up(args) => {
            let config = load(args.overrides(global))?;
            match config.target {
                Target::Local => local::up(config, &args, printer).await,
                Target::Ec2 => ec2::up(config, &args, printer).await,
            }
        }
        Command::Token(args) => token::run(&args, global, printer).await,
        Command::Status(args) => {
            let config = load(named(global, &None, args.target))?;
            match config.target {
                Target::Local => local::status(printer).await,
                Target::Ec2 => ec2::status(config, printer).await,
            }
        }
        Command::Logs(args) => {
            logs(
                load(named(global, &args.deployment, args.on))?,
                args.tail,
                printer,
            )
            .await
        }
        Command::Down(args) => {
            let config = load(named(global, &args.deployment, args.on))?;
            match config.target {
                Target::Local => down::run(config, &args, printer).await,
                Target::Ec2 => ec2::down(config, &args, printer).await,
            }
        }
        Command::Base => base::run(printer).await,
    }
}

#[derive(serde::Serialize)]
struct LogsReport {
    name: String,
    log: String,
}

impl std::fmt::Display for LogsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.log.trim_end_matches('\n'))
    }
}

/// The container's log (local) or the instance's cleaned console (EC2).
async fn logs(config: Config, tail: Option<usize>, printer: &Printer) -> Result<()> {
    let log = match config.target {
        Target::Local => {
            let engine = crate::engine::Engine::connect().await?;
            crate::local::logs(&engine, &config.name, tail).await?
        }
        Target::Ec2 => {
            let aws = crate::aws::load(&config).await?;
            crate::ec2::info::logs(&aws, &config.name, tail).await?
        }
    };
    emit(
        printer,
        &LogsReport {
            name: config.name,
            log,
        },
    )
}

fn current_dir() -> Result<std::path::PathBuf> {
    std::env::current_dir().map_err(|source| Error::ConfigRead {
        path: ".".into(),
        source,
    })
}

fn load(flags: Overrides) -> Result<Config> {
    let env = Overrides::from_env(|k| std::env::var(k).ok())?;
    Config::load(&current_dir()?, flags, env)
}

fn emit<R: crate::output::Report>(printer: &Printer, report: &R) -> Result<()> {
    printer.result(report).map_err(|source| Error::Write {
        path: "(stdout)".into(),
        source,
    })
}
