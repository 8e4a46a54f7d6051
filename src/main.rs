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
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

fn main() -> ExitCode {
    report_panics();
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
    // Ctrl-C keeps its default meaning (stop now) except in the commands that change things
    // (`up`, `down`, `push`), which install `labship::interrupt` to stop at a safe point.
    let result = runtime.block_on(commands::run(cli.command, &cli.global, &printer));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err.exit_code();
            report_error(err, cli.global.output.into());
            ExitCode::from(code)
        }
    }
}

/// A panic is a bug: say so, with the exact place (Rust keeps a panic's file, line and column
/// in the binary, so this reads well even though the release binary has no symbol table) and
/// how to get a backtrace with function names. Exit code 101, as for any Rust panic.
fn report_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown place".into());
        eprintln!(
            "labship {} hit a bug at {place}: {}",
            env!("CARGO_PKG_VERSION"),
            info.payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)")
        );
        eprintln!(
            "Please report it with the command you ran. For a backtrace with function names, build with `cargo build --profile release-symbols` and run it again with RUST_BACKTRACE=1."
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
    }));
}

/// The module of the SDK whose traces carry whole requests and responses.
const SDK_ORCHESTRATOR: &str = "aws_smithy_runtime::client::orchestrator";

/// -v: labship's info (and the SDKs' warnings), -vv: debug, -vvv: everything (the AWS SDK's
/// traces included). The default shows labship's warnings only: the SDK's own warnings (a
/// missing ~/.aws/config, an unreachable instance metadata service while it looks for
/// credentials) are noise next to labship's errors, which carry their cause. Nothing labship
/// logs at any level holds a secret, and the writer scrubs every secret labship holds from
/// what the libraries log (`labship::secrets`).
fn init_tracing(verbose: u8, quiet: bool) {
    // Read by the SDK at every response: set before any thread exists.
    std::env::remove_var("LOG_SENSITIVE_BODIES");
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "error,labship=warn",
        (_, 1) => "warn,labship=info",
        (_, 2) => "warn,labship=debug",
        _ => "trace",
    };
    // The SDK's orchestrator traces whole response bodies and outputs (an ECR authorization
    // token among them, which its model does not mark sensitive): never shown, whatever the
    // level asked for. And the SDK's own switch for logging sensitive bodies is turned off.
    let filter = EnvFilter::try_from_env("LABSHIP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let no_bodies = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with(SDK_ORCHESTRATOR) && *meta.level() == tracing::Level::TRACE)
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| labship::secrets::Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(no_bodies);
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .init();
}

fn report_error(err: Error, format: OutputFormat) {
    use miette::Diagnostic;
    // A partial failure whose report is already on stdout (seats of a class) is not
    // followed by a second JSON document: the report says what failed.
    if format == OutputFormat::Json && !err.reported() {
        let json = serde_json::json!({
            "error": {
                "code": err.code().map(|c| c.to_string()),
                "message": err.to_string(),
                "help": err.help().map(|h| h.to_string()),
            }
        });
        println!("{json:#}");
    }
    eprintln!(
        "{}",
        labship::secrets::scrub(&format!("{:?}", miette::Report::new(err)))
    );
}
