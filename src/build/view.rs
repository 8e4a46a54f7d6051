//! How a BuildKit build is shown on stderr: the plain step lines `docker build --progress=plain`
//! prints (a pipe, a log, CI), or on a terminal a live view as `docker build` draws it: a
//! header with the elapsed time and the steps done, a spinner per running step with its
//! elapsed time and its latest output line, and each finished step printed once above them
//! (`=> #4 [2/3] COPY . /ctx  DONE 0.3s`).

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::docker::StepEvent;
use crate::output::Printer;

/// Output lines of a running step longer than this are cut (the view must not wrap).
const WIDTH: usize = 110;

pub struct BuildView<'p> {
    printer: &'p Printer,
    live: Option<Live>,
}

struct Live {
    multi: MultiProgress,
    header: ProgressBar,
    /// The spinner of each running step.
    running: HashMap<usize, ProgressBar>,
    /// Every step's name, by number (running or finished).
    names: HashMap<usize, String>,
    done: usize,
}

impl<'p> BuildView<'p> {
    /// Live on a terminal in text mode (and not `-q`); plain lines otherwise.
    pub fn new(printer: &'p Printer) -> BuildView<'p> {
        let live = printer.is_live().then(|| {
            let multi = printer.bars();
            let header = multi.add(ProgressBar::new_spinner());
            header.set_style(style("[+] Building {elapsed_precise} {msg}"));
            header.enable_steady_tick(Duration::from_millis(120));
            Live {
                multi,
                header,
                running: HashMap::new(),
                names: HashMap::new(),
                done: 0,
            }
        });
        BuildView { printer, live }
    }

    pub fn event(&mut self, event: StepEvent<'_>) {
        let Some(live) = self.live.as_mut() else {
            self.printer.relay(&event.to_string());
            return;
        };
        match event {
            StepEvent::Start { n, name } => {
                let name = crate::secrets::scrub(name);
                let bar = live.multi.add(ProgressBar::new_spinner());
                bar.set_style(style(" {spinner} #{prefix} {msg} {elapsed:>4}"));
                bar.set_prefix(n.to_string());
                bar.set_message(cut(&name));
                bar.enable_steady_tick(Duration::from_millis(120));
                live.names.insert(n, name);
                live.running.insert(n, bar);
            }
            StepEvent::Line { n, text } => {
                if let (Some(bar), Some(name)) = (live.running.get(&n), live.names.get(&n)) {
                    let text = crate::secrets::scrub(text);
                    bar.set_message(format!("{}\n     > {}", cut(name), cut(&text)));
                }
            }
            StepEvent::Cached { n } => live.finish(n, "CACHED"),
            StepEvent::Done { n, seconds } => live.finish(
                n,
                &seconds.map_or_else(|| "DONE".to_string(), |t| format!("DONE {t:.1}s")),
            ),
            StepEvent::Error { n, message } => {
                live.finish(n, &format!("ERROR: {}", crate::secrets::scrub(message)));
            }
            StepEvent::Text(text) => {
                let _ = live.multi.println(crate::secrets::scrub(text));
            }
        }
    }

    /// Ends the live view (the header goes; finished steps stay printed).
    pub fn close(self) {
        if let Some(live) = self.live {
            for bar in live.running.values() {
                bar.finish_and_clear();
            }
            live.header.finish_and_clear();
        }
    }
}

impl Live {
    fn finish(&mut self, n: usize, how: &str) {
        if let Some(bar) = self.running.remove(&n) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let name = self.names.get(&n).map_or("", String::as_str);
        let _ = self.multi.println(format!(" => #{n} {} {how}", cut(name)));
        self.done += 1;
        self.header
            .set_message(format!("({}/{} steps)", self.done, self.names.len()));
    }
}

fn style(template: &str) -> ProgressStyle {
    // ok: the templates are constants of this file.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// One line, at most [`WIDTH`] characters.
fn cut(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= WIDTH {
        return line.to_string();
    }
    let mut out: String = line.chars().take(WIDTH - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_multi_line_text_is_cut_to_one_line() {
        assert_eq!(cut("short"), "short");
        assert_eq!(cut("a\nb"), "a");
        let long = "x".repeat(WIDTH + 20);
        let cut = cut(&long);
        assert_eq!(cut.chars().count(), WIDTH);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn without_a_terminal_the_view_is_plain_lines() {
        // Tests run with stderr not a terminal (or -q): the view never draws.
        let printer = Printer::new(crate::output::OutputFormat::Json, false);
        let view = BuildView::new(&printer);
        assert!(view.live.is_none());
    }
}
