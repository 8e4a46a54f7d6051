//! `--open`: hand the URL to the desktop's browser opener. The URL carries the login token,
//! and a command line is readable by every local user (`ps`), so the opener gets a file
//! that only the user can read, which redirects to the URL (as Jupyter itself does). Best
//! effort: a machine without an opener (a server, CI) gets a note, not an error, since the
//! URL is on stdout anyway.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::output::Printer;

fn redirect_file(url: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("labship-open-{}.html", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    let escaped = url.replace('&', "&amp;").replace('"', "&quot;");
    writeln!(
        file,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={escaped}\"></head><body><a href=\"{escaped}\">JupyterLab</a></body></html>"
    )?;
    Ok(path)
}

pub fn open(url: &str, printer: &Printer) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let target = match redirect_file(url) {
        Ok(path) => path,
        Err(e) => {
            printer.note(format!(
                "Could not prepare the browser page ({e}); open the URL above yourself"
            ));
            return;
        }
    };
    if let Err(e) = std::process::Command::new(opener)
        .arg(&target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        printer.note(format!(
            "Could not open a browser ({opener}: {e}); open the URL above yourself"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_file_is_private_and_escaped() {
        use std::os::unix::fs::PermissionsExt;
        let path = redirect_file("http://127.0.0.1:8888/lab?token=abc&x=\"1\"").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("token=abc&amp;x=&quot;1&quot;"), "{text}");
        std::fs::remove_file(path).unwrap();
    }
}
