use std::io::{BufRead, IsTerminal, Write};

use crate::cli::DownArgs;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::Printer;

pub async fn run(config: Config, args: &DownArgs, printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    if args.delete_data && !args.yes {
        let action = format!(
            "delete the workspace volume {} with every notebook in it",
            crate::local::volume_name(&config.name)
        );
        if !confirm(&action)? {
            return Err(Error::NeedsConfirmation { action });
        }
    }
    let report = crate::local::down(&engine, &config.name, args.delete_data).await?;
    super::emit(printer, &report)
}

/// Asks on the terminal; false when the answer is no or there is no terminal to ask on.
pub(super) fn confirm(action: &str) -> Result<bool> {
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
