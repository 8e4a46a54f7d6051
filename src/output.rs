//! What a user sees: results on stdout, everything else on stderr.
//!
//! Every command returns a report that is both `Display` (text mode) and `Serialize`
//! (`--output json`). Progress (notes, build output) goes to stderr, silenced by `-q`;
//! progress bars are drawn only on a terminal in text mode. stdout carries the report alone,
//! so `labship ... --output json | jq` always sees JSON and nothing else.

use std::fmt::Display;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
    /// A table as CSV: only the class roster has one (`up --seats`, `token` of a class).
    Csv,
}

/// A command's result.
pub trait Report: Display + Serialize {}
impl<T: Display + Serialize> Report for T {}

#[derive(Debug, Clone)]
pub struct Printer {
    format: OutputFormat,
    /// -q: no notes, no engine output, no bars.
    quiet: bool,
    /// Progress bars are drawn only on a terminal.
    bars: bool,
}

impl Printer {
    pub fn new(format: OutputFormat, quiet: bool) -> Self {
        let bars = !quiet && format == OutputFormat::Text && std::io::stderr().is_terminal();
        Printer {
            format,
            quiet,
            bars,
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Whether live views (progress bars, a build's running steps) are drawn: stderr is a
    /// terminal, the output is text, and not `-q`.
    pub fn is_live(&self) -> bool {
        self.bars
    }

    /// A progress note on stderr ("Building image ...").
    pub fn note(&self, msg: impl Display) {
        if !self.quiet {
            let _ = writeln!(
                std::io::stderr(),
                "{}",
                crate::secrets::scrub(&msg.to_string())
            );
        }
    }

    /// A line of a tool's own output relayed as it comes (engine build steps).
    pub fn relay(&self, line: &str) {
        if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(crate::secrets::scrub(line).as_bytes());
            if !line.ends_with('\n') {
                let _ = err.write_all(b"\n");
            }
        }
    }

    /// A group of progress bars; hidden unless stderr is a terminal in text mode.
    pub fn bars(&self) -> MultiProgress {
        if self.bars {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        }
    }

    pub fn byte_bar(&self, group: &MultiProgress, label: &str, total: u64) -> ProgressBar {
        let bar = group.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{prefix:>14} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()); // ok: the template is a constant
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(label.to_string());
        bar
    }

    /// A bar counting things (seats) done.
    pub fn count_bar(&self, group: &MultiProgress, label: &str, total: u64) -> ProgressBar {
        let bar = group.add(ProgressBar::new(total));
        let style =
            ProgressStyle::with_template("{prefix:>14} {bar:30.cyan/blue} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()); // ok: the template is a constant
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(label.to_string());
        bar
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// The command's result, on stdout.
    pub fn result<R: Report>(&self, report: &R) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.format {
            OutputFormat::Text => writeln!(out, "{report}"),
            // Reports without a table get JSON; the handlers refuse `-o csv` for them first.
            OutputFormat::Json | OutputFormat::Csv => {
                serde_json::to_writer_pretty(&mut out, report).map_err(std::io::Error::other)?;
                writeln!(out)
            }
        }
    }
}

/// Rows under a header as aligned columns, two spaces apart; the columns whose index is in
/// `right` are aligned right (numbers), the last column is never padded.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]], right: &[usize]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = header.map(String::from);
    std::iter::once(&header)
        .chain(rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| match (i + 1 == N, right.contains(&i)) {
                    (true, _) => cell.clone(),
                    (false, true) => format!("{cell:>w$}", w = widths[i]),
                    (false, false) => format!("{cell:<w$}", w = widths[i]),
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod table_tests {
    #[test]
    fn columns_line_up() {
        let rows = [
            ["a".to_string(), "1.5".to_string(), "x".to_string()],
            ["long".to_string(), "12.0".to_string(), "".to_string()],
        ];
        assert_eq!(
            super::table(["NAME", "SECONDS", "NOTE"], &rows, &[1]),
            "NAME  SECONDS  NOTE\na         1.5  x\nlong     12.0"
        );
    }
}
