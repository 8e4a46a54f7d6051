// `Error` carries the config file's text for miette's source snippets, which makes it large;
// errors are the cold path of a CLI, so the size is not worth boxing every variant for.
#![allow(clippy::result_large_err)]

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
use cli::Cli;
use labship::error::Error;
use labship::output::{OutputFormat, Printer};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose, cli.global.quiet);
    let printer = Printer::new(cli.global.output.into(), cli.global.quiet);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("labship: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C keeps its default meaning (stop now) except where a command needs to clean up
    // (`up --attach` stops its container), which installs its own handler.
    let result = runtime.block_on(commands::run(cli.command, &cli.global, &printer));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(err, cli.global.output.into());
            ExitCode::FAILURE
        }
    }
}

/// -v: labship's info (and the SDKs' warnings), -vv: debug, -vvv: everything (the AWS SDK's
/// traces included). The default shows labship's warnings only: the SDK's own warnings (a
/// missing ~/.aws/config, an unreachable instance metadata service while it looks for
/// credentials) are noise next to labship's errors, which carry their cause. Nothing labship
/// logs at any level holds a secret.
fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "error,labship=warn",
        (_, 1) => "warn,labship=info",
        (_, 2) => "warn,labship=debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("LABSHIP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn report_error(err: Error, format: OutputFormat) {
    use miette::Diagnostic;
    if format == OutputFormat::Json {
        let json = serde_json::json!({
            "error": {
                "code": err.code().map(|c| c.to_string()),
                "message": err.to_string(),
                "help": err.help().map(|h| h.to_string()),
            }
        });
        println!("{json:#}");
    }
    eprintln!("{:?}", miette::Report::new(err));
}
