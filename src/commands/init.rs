use crate::error::Result;
use crate::init::{self, InitOptions};
use crate::output::Printer;

pub fn run(args: crate::cli::InitArgs, printer: &Printer) -> Result<()> {
    let cwd = super::current_dir()?;
    let report = init::init(&cwd, &InitOptions { name: args.name })?;
    super::emit(printer, &report)
}
