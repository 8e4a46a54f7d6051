//! `--open`: hand the URL to the desktop's browser opener. Best effort: a machine without
//! one (a server, CI) gets a note, not an error, since the URL is on stdout anyway.

use crate::output::Printer;

pub fn open(url: &str, printer: &Printer) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    match std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => {}
        Err(e) => printer.note(format!(
            "Could not open a browser ({opener}: {e}); open the URL above yourself"
        )),
    }
}
