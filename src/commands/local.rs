use std::time::Duration;

use crate::cli::UpArgs;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::Result;
use crate::local::{self, UpOptions};
use crate::output::Printer;
use crate::status::{self, StatusReport};

pub async fn up(config: Config, args: &UpArgs, printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    let options = UpOptions {
        port: args.port,
        bind: args
            .bind
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
            .to_string(),
        wait: Duration::from_secs(args.wait.unwrap_or(180)),
    };
    let report = local::up(&engine, &config, printer, &options).await?;
    super::emit(printer, &report)?;
    if args.open {
        crate::browser::open(&report.url, printer);
    }
    if args.attach {
        local::attach(&engine, &config.name, printer).await?;
    }
    Ok(())
}

pub async fn status(printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    let report: StatusReport = status::local(&engine).await?;
    super::emit(printer, &report)
}
