use labship::error::Result;
use labship::init::{self, InitOptions};
use labship::output::Printer;

pub fn run(args: crate::cli::InitArgs, printer: &Printer) -> Result<()> {
    let cwd = super::current_dir()?;
    let report = init::init(&cwd, &InitOptions { name: args.name })?;
    super::emit(printer, &report)
}
