//! A real browser on what labship serves. Headless Chromium (Debian's `chromium`, installed
//! by `bash tests/rig/setup.sh`) loads the URL, runs JupyterLab's JavaScript and dumps the DOM
//! it built; the check is that this DOM holds JupyterLab's application shell, not Jupyter's
//! login page, an error page, or a page whose scripts failed (the server's HTML alone has
//! none of the shell: JavaScript builds all of it).
//!
//! How it waits: `--virtual-time-budget` gives the page that much virtual time after it
//! loaded, and virtual time stands still while a fetch is pending, so JupyterLab's lazily
//! loaded chunks and its first API calls all land before the DOM is dumped whatever the
//! server's speed; idle, virtual time runs faster than real time (a local check takes ~5 s).
//! A real-time bound kills the browser (its whole process group) when it hangs.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Real time one browser run may take before it is killed.
const HARD_TIMEOUT: Duration = Duration::from_secs(120);
/// Virtual milliseconds the page gets after its load event (see the module comment).
const VIRTUAL_TIME_BUDGET_MS: u32 = 30_000;

/// Panics unless headless Chromium renders JupyterLab's application at `url`
/// (`http://127.0.0.1:PORT/lab?token=...`); see [`lab_renders`].
pub fn assert_lab_renders(url: &str) {
    if let Err(e) = lab_renders(url) {
        panic!("{e}");
    }
}

/// Loads `url` in headless Chromium and checks that JupyterLab's JavaScript built its
/// application: the shell (`.jp-LabShell`), the main dock panel (`#jp-main-dock-panel`) and
/// the launcher or the file browser. The error says what the browser got instead (the login
/// page, an error page, an empty page) and why when Chromium said so.
pub fn lab_renders(url: &str) -> Result<(), String> {
    let started = Instant::now();
    let run = dump_dom(url)?;
    let page = Page::parse(&run.dom);
    if page.has_class("jp-LabShell")
        && page.has_id("jp-main-dock-panel")
        && (page.has_class("jp-Launcher") || page.has_class("jp-FileBrowser"))
    {
        eprintln!(
            "browser: JupyterLab rendered {url_shown} in {:.1} s (launcher: {}, files listed: {})",
            started.elapsed().as_secs_f64(),
            page.has_class("jp-Launcher"),
            page.count_class("jp-DirListing-item"),
            url_shown = redact(url),
        );
        return Ok(());
    }
    let what = if run.dom.trim().is_empty() {
        "an empty page (the page did not load)".to_string()
    } else if page.has_id("password_input") || page.has_id("token_input") {
        "Jupyter's login page (the token was refused)".to_string()
    } else if page.title == "JupyterLab" {
        "JupyterLab's HTML without its application (its JavaScript did not build the shell)"
            .to_string()
    } else {
        format!("a page titled {:?}", page.title)
    };
    let why = run
        .log
        .lines()
        .filter(|l| l.contains("Page load failed") || l.contains("net::ERR_"))
        .map(|l| l.rsplit("] ").next().unwrap_or(l).trim())
        .collect::<Vec<_>>()
        .join("; ");
    Err(format!(
        "headless Chromium did not render JupyterLab at {}: it got {what}{}{}\nthe page's text: \
         {:?}",
        redact(url),
        if why.is_empty() { "" } else { "; Chromium: " },
        why,
        visible_text(&run.dom, 300),
    ))
}

/// The first `max` characters of the text a reader would see in `dom` (no tags, scripts or
/// style sheets), whitespace collapsed.
fn visible_text(dom: &str, max: usize) -> String {
    let mut rest = dom
        .split_once("<body")
        .and_then(|(_, body)| body.split_once('>'))
        .map_or(dom, |(_, body)| body);
    let mut text = String::new();
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        rest = &rest[open..];
        // The content of a script or style element is not text.
        let skip_to = ["script", "style"]
            .iter()
            .find(|tag| rest[1..].starts_with(*tag))
            .and_then(|tag| rest.find(&format!("</{tag}>")));
        rest = &rest[skip_to.unwrap_or(0)..];
        rest = rest.find('>').map_or("", |close| &rest[close + 1..]);
    }
    text.push_str(rest);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(max)
        .collect()
}

/// The URL without the token's value, for messages.
fn redact(url: &str) -> String {
    match url.split_once("token=") {
        Some((head, _)) => format!("{head}token=…"),
        None => url.to_string(),
    }
}

struct Run {
    /// The serialized DOM (`--dump-dom`), empty when the page did not load.
    dom: String,
    /// Chromium's stderr.
    log: String,
}

/// Runs headless Chromium on `url` with a fresh profile (removed afterwards) and returns the
/// DOM it dumped, or an error when Chromium is missing, failed or ran out of time.
fn dump_dom(url: &str) -> Result<Run, String> {
    let dir = tempfile::Builder::new()
        .prefix("labship-chromium-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory for Chromium: {e}"))?;
    let profile = dir.path().join("profile");
    let dom_path = dir.path().join("dom.html");
    let log_path = dir.path().join("chromium.log");
    let file = |p: &std::path::Path| {
        std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
    };
    let mut child = Command::new("chromium")
        .args([
            "--headless=new",
            // The tests run as root, where Chromium refuses to start with its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            // /dev/shm is small in containers.
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--password-store=basic",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(file(&dom_path)?)
        .stderr(file(&log_path)?)
        // Its own process group, so a timeout kills the renderers and helpers too.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "headless Chromium is not installed (no `chromium` on PATH): install the Debian \
                 package `chromium` with `bash tests/rig/setup.sh`"
                    .to_string()
            } else {
                format!("cannot start chromium: {e}")
            }
        })?;
    let deadline = Instant::now() + HARD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            waited => {
                // Still running (or unwaitable): kill its process group, by its id (the
                // group is this child's, not yet reaped), then reap it.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(match waited {
                    Err(e) => format!("cannot wait for chromium: {e}"),
                    _ => format!(
                        "headless Chromium did not finish {} within {} s (killed); its last \
                         lines:\n{}",
                        redact(url),
                        HARD_TIMEOUT.as_secs(),
                        tail(&log, 10)
                    ),
                });
            }
        }
    };
    let dom = std::fs::read_to_string(&dom_path).unwrap_or_default();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "headless Chromium failed on {} ({status}); its last lines:\n{}",
            redact(url),
            tail(&log, 10)
        ));
    }
    Ok(Run { dom, log })
}

/// The last `n` lines of Chromium's stderr, without its D-Bus complaints (there is no bus)
/// and the Debian launcher script's own noise.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("dbus") && !l.starts_with("/usr/bin/chromium:"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the checks need of a serialized DOM: its elements' ids and class names (attributes
/// only: the same names inside style sheets and scripts do not count) and its title.
struct Page {
    ids: Vec<String>,
    classes: Vec<String>,
    title: String,
}

impl Page {
    fn parse(dom: &str) -> Page {
        let attribute = |name: &str| -> Vec<String> {
            let needle = format!(" {name}=\"");
            dom.match_indices(&needle)
                .filter_map(|(at, _)| {
                    let value = &dom[at + needle.len()..];
                    value.find('"').map(|end| value[..end].to_string())
                })
                .collect()
        };
        let classes = attribute("class")
            .iter()
            .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let title = dom
            .split_once("<title>")
            .and_then(|(_, rest)| rest.split_once("</title>"))
            .map(|(t, _)| t.trim().to_string())
            .unwrap_or_default();
        Page {
            ids: attribute("id"),
            classes,
            title,
        }
    }

    fn has_id(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }

    fn has_class(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == class)
    }

    fn count_class(&self, class: &str) -> usize {
        self.classes.iter().filter(|c| *c == class).count()
    }
}
