//! The EC2 serial console as labship reads it: the progress markers the host scripts print
//! ([`markers`], written by the templates in `userdata/`). The adapter decodes the console
//! ([`crate::aws::ec2::decode_console_output`]); finding the Jupyter token in the text is the
//! token module's job ([`crate::token::find_token`]).

use std::fmt;

use serde::Serialize;

/// A step the host scripts report, in the order they happen. Displayed (and serialized)
/// as the marker word: `begin`, `docker-ready`, `logged-in`, `pulled`, `started`, `token`,
/// `ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The boot script started.
    Begin,
    /// Docker answers.
    DockerReady,
    /// `docker login` to ECR succeeded.
    LoggedIn,
    /// The image is on the host.
    Pulled,
    /// The Jupyter container runs.
    Started,
    /// The line with Jupyter's login URL appeared (the URL itself is left to
    /// `crate::token::find_token`).
    Token,
    /// Jupyter answers on the host port.
    Ready,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 7] = [
        Phase::Begin,
        Phase::DockerReady,
        Phase::LoggedIn,
        Phase::Pulled,
        Phase::Started,
        Phase::Token,
        Phase::Ready,
    ];

    /// The marker word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Begin => "begin",
            Phase::DockerReady => "docker-ready",
            Phase::LoggedIn => "logged-in",
            Phase::Pulled => "pulled",
            Phase::Started => "started",
            Phase::Token => "token",
            Phase::Ready => "ready",
        }
    }

    fn from_word(word: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == word)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a marker line says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MarkerKind {
    /// A step was reached.
    Phase(Phase),
    /// The script failed and exited.
    Error {
        /// The step that was running: `host`, `docker`, `login`, `pull`, `start` or
        /// `jupyter` (empty if the line had no `phase=`).
        phase: String,
        /// A short cause, e.g. the failed command and the last line of its output.
        cause: String,
    },
}

/// One marker line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    /// What it says.
    pub phase: MarkerKind,
    /// The host's clock when it was printed (`t=`, Unix seconds); `None` for `token` and
    /// `error` lines, and when the value was unreadable.
    pub at: Option<f64>,
}

const MARKER_PREFIX: &str = "labship: ";

/// The markers in console text, in order.
///
/// Grammar, searched anywhere in a line (console prefixes such as
/// `[   37.061390] cloud-init[2179]: ` may come first):
///
/// ```text
/// labship: <phase word> [t=<unix secs[.frac]>]
/// labship: token <url>
/// labship: error phase=<step> <cause>
/// ```
///
/// The text is first cleaned with [`crate::token::clean::clean_console`], so raw console
/// output works too: AWS timestamps inserted mid-line, colour codes and CRLF are removed.
/// Lines with an unknown word after `labship: ` are ignored.
#[must_use]
pub fn markers(console_text: &str) -> Vec<Marker> {
    let text = crate::token::clean::clean_console(console_text);
    let mut found = Vec::new();
    for line in text.lines() {
        let starts: Vec<usize> = line.match_indices(MARKER_PREFIX).map(|(i, _)| i).collect();
        for (n, &start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(line.len());
            if let Some(marker) = parse_marker(&line[start + MARKER_PREFIX.len()..end]) {
                found.push(marker);
            }
        }
    }
    found
}

/// False only when the console proves that Jupyter never served: the boot script's `begin`
/// marker is still in view (so nothing has scrolled out of the console's last 64 KiB) and
/// no `token` or `ready` marker follows it. Anything else (an empty console, a console that
/// has scrolled) counts as "may have served", the safe answer for `down`, which saves the
/// workspace of an instance that may hold notebooks.
#[must_use]
pub fn ever_served(console_text: &str) -> bool {
    let found = markers(console_text);
    let begun = found
        .iter()
        .any(|m| m.phase == MarkerKind::Phase(Phase::Begin));
    let served = found.iter().any(|m| {
        matches!(
            m.phase,
            MarkerKind::Phase(Phase::Token) | MarkerKind::Phase(Phase::Ready)
        )
    });
    !begun || served
}

/// Whose token the Jupyter on the host accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenFrom {
    /// The token labship sealed in SSM (`/labship/<deployment>/token`): the host handed it
    /// to Jupyter and checked that Jupyter accepts it. The console says only that.
    Labship,
    /// The image sets a token of its own (Jupyter refused labship's and accepted the one
    /// in its log). labship does not hold it and never relays it.
    Image,
    /// A host started by labship before 0.2 relayed the whole login URL to the console.
    Logged(crate::token::TokenFinding),
}

/// What the host says Jupyter serves: the newest `labship: token` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The URL path Jupyter logged: `/lab`, `/tree`, `/user/x/lab`...
    pub path: String,
    /// Whose token it accepts.
    pub token: TokenFrom,
    /// The certificate Jupyter serves HTTPS with ([`tls_fingerprint`]); `None` on a host of
    /// a labship from before TLS, which serves plain HTTP.
    pub tls: Option<crate::tls::Fingerprint>,
}

impl Served {
    /// The token of the login URL: the sealed one when Jupyter accepts labship's, none when
    /// the image sets its own (labship does not hold that one), the one the console relayed
    /// for a host of an older labship.
    #[must_use]
    pub fn login_token(
        &self,
        sealed: Option<&crate::token::JupyterToken>,
    ) -> Option<crate::token::JupyterToken> {
        match &self.token {
            TokenFrom::Labship => sealed.cloned(),
            TokenFrom::Image => None,
            TokenFrom::Logged(finding) => Some(finding.token.clone()),
        }
    }
}

/// The newest `labship: token path=<path> source=<labship|image>` line in console (or SSM
/// command) output; a console of a host from before labship 0.2, whose token line carries
/// the login URL itself, gives [`TokenFrom::Logged`]. `None` while there is no token line.
#[must_use]
pub fn served(console_text: &str) -> Option<Served> {
    let text = crate::token::clean::clean_console(console_text);
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.split_once("labship: token ").map(|(_, rest)| rest.trim()));
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    if let Some(line) = line {
        if let (Some(path), Some(source)) = (field(line, "path="), field(line, "source=")) {
            if !path.starts_with('/') {
                return None;
            }
            let token = match source.as_str() {
                "image" => TokenFrom::Image,
                _ => TokenFrom::Labship,
            };
            return Some(Served {
                path,
                token,
                tls: fingerprint_in(&text),
            });
        }
    }
    crate::token::find_token(&text).ok().map(|finding| Served {
        path: finding.path.clone(),
        token: TokenFrom::Logged(finding),
        tls: None,
    })
}

/// The SHA-256 fingerprint of the certificate Jupyter serves, from the newest
/// `labship: tls sha256=AB:CD:...` line (the host prints it at every start). `None` on a
/// host of a labship from before TLS.
#[must_use]
pub fn tls_fingerprint(console_text: &str) -> Option<crate::tls::Fingerprint> {
    fingerprint_in(&crate::token::clean::clean_console(console_text))
}

/// [`tls_fingerprint`] of text already cleaned.
fn fingerprint_in(text: &str) -> Option<crate::tls::Fingerprint> {
    text.lines().rev().find_map(|l| {
        let rest = l.split_once("labship: tls ")?.1;
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix("sha256="))?
            .parse()
            .ok()
    })
}

/// The text after `labship: ` up to the end of the line (or the next marker).
fn parse_marker(text: &str) -> Option<Marker> {
    let text = text.trim();
    let (word, rest) = text
        .split_once(char::is_whitespace)
        .map_or((text, ""), |(w, r)| (w, r.trim_start()));
    if word == "error" {
        let (phase, cause) = match rest.strip_prefix("phase=") {
            Some(after) => after
                .split_once(char::is_whitespace)
                .map_or((after, ""), |(p, c)| (p, c.trim())),
            None => ("", rest),
        };
        return Some(Marker {
            phase: MarkerKind::Error {
                phase: phase.to_string(),
                cause: cause.to_string(),
            },
            at: None,
        });
    }
    let phase = Phase::from_word(word)?;
    let at = if phase == Phase::Token {
        None
    } else {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix("t="))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    Some(Marker {
        phase: MarkerKind::Phase(phase),
        at,
    })
}

/// What the host's watchdog (idle stop and TTL, `userdata/common.sh`) last said on the
/// console of the current boot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    /// Its settings when it started: idle stop and TTL in seconds (0: off), and when the boot
    /// began (Unix seconds).
    pub idle_stop: Option<u64>,
    pub ttl: Option<u64>,
    pub boot: Option<i64>,
    /// Nothing has happened in Jupyter since then (Unix seconds); `None` while active.
    pub idle_since: Option<i64>,
    /// Why it stopped the host: `idle-stop idle=61m` or `ttl-stop ttl=8h`.
    pub stopped: Option<String>,
}

impl Watch {
    /// When the host will stop itself, and why (`idle` or `ttl`): the earlier of the TTL and,
    /// when idle, the idle stop. `None` when neither is known.
    #[must_use]
    pub fn stops_at(&self) -> Option<(i64, &'static str)> {
        let ttl = match (self.ttl, self.boot) {
            (Some(t), Some(b)) if t > 0 => Some((b + t as i64, "ttl")),
            _ => None,
        };
        let idle = match (self.idle_stop, self.idle_since) {
            (Some(i), Some(since)) if i > 0 => Some((since + i as i64, "idle")),
            _ => None,
        };
        match (ttl, idle) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// The console of a host of several seats as one seat sees it: its own lines
/// (`labship: seat=NAME <marker>`) as a deployment's (`labship: <marker>`), the host's lines
/// (no `seat=`: its boot, Docker, login, pull, watchdog) as they are, and every other seat's
/// lines left out; cleaned as [`markers`] cleans it. Every reading of the console
/// ([`markers`], [`served`], [`tls_fingerprint`], [`watch`], [`since_boot`]) then works for
/// that seat. A deployment's console has no `seat=` lines and comes back cleaned only. As
/// in [`markers`], several markers may share a line (the console merges lines): each is
/// kept or left out on its own.
/// The console as `inst`'s deployment sees it: a shared host's seat's own view
/// ([`of_seat`]), else the console as it is.
#[must_use]
pub fn seen_by(console_text: String, inst: &crate::aws::ec2::Instance) -> String {
    match inst.shared_host() {
        Some(_) => of_seat(&console_text, &inst.deployment),
        None => console_text,
    }
}

#[must_use]
pub fn of_seat(console_text: &str, seat: &str) -> String {
    let text = crate::token::clean::clean_console(console_text);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let starts: Vec<usize> = line.match_indices(MARKER_PREFIX).map(|(i, _)| i).collect();
        let mut kept = String::with_capacity(line.len());
        kept.push_str(&line[..starts.first().copied().unwrap_or(line.len())]);
        for (n, &start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(line.len());
            let marker = &line[start + MARKER_PREFIX.len()..end];
            match marker.strip_prefix("seat=") {
                None => kept.push_str(&line[start..end]),
                Some(after) => {
                    let (name, rest) = after.split_once(' ').unwrap_or((after, ""));
                    if name == seat {
                        kept.push_str(MARKER_PREFIX);
                        kept.push_str(rest);
                    }
                }
            }
        }
        if !kept.trim().is_empty() || starts.is_empty() {
            out.push_str(&kept);
            out.push('\n');
        }
    }
    out
}

/// The console text from the current boot on: from the last watchdog line
/// (`labship: watch ... boot=T`) whose boot began at `not_before` (Unix seconds) or later.
/// `None` while the console shows no such boot yet (an older boot's text is still there).
#[must_use]
pub fn since_boot(console_text: &str, not_before: i64) -> Option<&str> {
    let mut at = None;
    let mut offset = 0;
    for line in console_text.split_inclusive('\n') {
        if let Some((_, rest)) = line.split_once("labship: watch ") {
            let boot = rest
                .split_whitespace()
                .find_map(|f| f.strip_prefix("boot="))
                .and_then(|v| v.parse::<i64>().ok());
            if boot.is_some_and(|b| b >= not_before) {
                at = Some(offset);
            }
        }
        offset += line.len();
    }
    at.map(|i| &console_text[i..])
}

/// The watchdog's lines in console text (`labship: watch ...`, `idle since=`, `active`,
/// `idle-stop`, `ttl-stop`), the newest of each kind.
#[must_use]
pub fn watch(console_text: &str) -> Watch {
    let text = crate::token::clean::clean_console(console_text);
    let mut w = Watch::default();
    let field = |rest: &str, key: &str| {
        rest.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .and_then(|v| v.parse::<i64>().ok())
    };
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(MARKER_PREFIX) else {
            continue;
        };
        let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match word {
            "watch" => {
                w = Watch {
                    idle_stop: field(rest, "idle-stop=").and_then(|v| u64::try_from(v).ok()),
                    ttl: field(rest, "ttl=").and_then(|v| u64::try_from(v).ok()),
                    boot: field(rest, "boot="),
                    ..Watch::default()
                };
            }
            "idle" => w.idle_since = field(rest, "since="),
            "active" => w.idle_since = None,
            "idle-stop" | "ttl-stop" => {
                let what = rest
                    .split_whitespace()
                    .filter(|f| !f.starts_with("t="))
                    .collect::<Vec<_>>()
                    .join(" ");
                w.stopped = Some(format!("{word} {what}").trim().to_string());
            }
            _ => {}
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_boot_counts_after_a_start() {
        let console = "\
labship: watch idle-stop=3600 ttl=0 boot=100 t=101
labship: token path=/lab source=labship
labship: watch idle-stop=3600 ttl=0 boot=500 t=501
";
        // The boot that began at 500 has not said what it serves yet.
        let now = since_boot(console, 490).expect("the new boot");
        assert!(now.starts_with("labship: watch idle-stop=3600 ttl=0 boot=500"));
        assert!(served(now).is_none());
        // No boot after 600 yet: nothing to read.
        assert!(since_boot(console, 600).is_none());
        let later = format!(
            "{console}labship: tls sha256=AB\nlabship: token path=/lab source=labship t=503\n"
        );
        assert!(served(since_boot(&later, 490).expect("boot")).is_some());
    }

    #[test]
    fn each_seat_of_a_host_of_several_reads_the_hosts_lines_and_its_own() {
        let console = "\
[  3.1] cloud-init[2179]: labship: begin t=10.0
labship: watch idle-stop=3600 ttl=0 boot=9 t=10.5
[  9.2] cloud-init[2179]: labship: docker-ready t=12.0
labship: logged-in t=13.0
labship: pulled t=20.0
labship: seat=lab-a started t=21.0
labship: seat=lab-b error phase=token the token parameter /labship/lab-b/token does not exist
[ 30.0] cloud-init[2179]: labship: seat=lab-a tls sha256=AB:CD
labship: seat=lab-a token path=/lab source=labship
labship: seat=lab-a ready t=25.0
labship: seat=lab-ab ready t=26.0
labship: idle since=30 t=700.0
";
        let a = of_seat(console, "lab-a");
        let steps: Vec<MarkerKind> = markers(&a).into_iter().map(|m| m.phase).collect();
        assert_eq!(steps, Phase::ALL.map(MarkerKind::Phase), "{a}");
        assert_eq!(served(&a).map(|s| s.path).as_deref(), Some("/lab"));
        // The seat's own error, after the host's steps; no other seat's line (lab-ab is not
        // lab-a, nor lab-b).
        let b = of_seat(console, "lab-b");
        let got = markers(&b);
        assert_eq!(got.len(), 5, "{b}");
        assert_eq!(
            got[4].phase,
            MarkerKind::Error {
                phase: "token".into(),
                cause: "the token parameter /labship/lab-b/token does not exist".into()
            }
        );
        assert!(served(&b).is_none(), "{b}");
        assert!(!b.contains("lab-a") && !b.contains("lab-ab"), "{b}");
        // The watchdog is the host's: both seats see it.
        for seat in [&a, &b] {
            assert_eq!(watch(seat).idle_since, Some(30));
        }
        // Markers with a seat are no deployment's: a deployment's reading leaves them out.
        assert_eq!(markers(console).len(), 4);
        // Markers merged on one line are each the host's, this seat's or another's.
        let merged = "labship: pulled t=20.0 labship: seat=lab-b started t=21 labship: seat=lab-a started t=22\n";
        let seen: Vec<MarkerKind> = markers(&of_seat(merged, "lab-a"))
            .into_iter()
            .map(|m| m.phase)
            .collect();
        assert_eq!(
            seen,
            [
                MarkerKind::Phase(Phase::Pulled),
                MarkerKind::Phase(Phase::Started)
            ]
        );
        assert_eq!(
            markers(&of_seat(merged, "lab-b"))
                .iter()
                .filter_map(|m| m.at)
                .collect::<Vec<_>>(),
            [20.0, 21.0]
        );
        // A deployment's console is its own seat's, whatever the name.
        let one = "labship: begin t=1\nlabship: token path=/lab source=labship\n";
        assert_eq!(markers(&of_seat(one, "x")), markers(one));
    }

    #[test]
    fn the_watchdogs_lines_say_when_and_why_the_host_stops() {
        let console = "\
[  1.0] cloud-init[2179]: labship: ready t=1000.5
labship: watch idle-stop=3600 ttl=86400 boot=990 t=1001.0
labship: idle since=1001 t=1700.0
labship: active t=1800.0
labship: idle since=1900 t=2500.0
";
        let w = watch(console);
        assert_eq!(w.idle_stop, Some(3600));
        assert_eq!(w.ttl, Some(86_400));
        assert_eq!(w.boot, Some(990));
        assert_eq!(w.idle_since, Some(1900));
        assert_eq!(w.stops_at(), Some((5500, "idle")));
        // Active again: only the TTL is known.
        let active = format!("{console}labship: active t=2600\n");
        assert_eq!(watch(&active).stops_at(), Some((87_390, "ttl")));
        // The TTL comes first.
        let short =
            "labship: watch idle-stop=3600 ttl=60 boot=100 t=1\nlabship: idle since=100 t=2\n";
        assert_eq!(watch(short).stops_at(), Some((160, "ttl")));
        // Stopped by it: the reason, without the time stamp.
        let stopped = format!("{console}labship: idle-stop idle=61m t=5600.1\n");
        assert_eq!(
            watch(&stopped).stopped.as_deref(),
            Some("idle-stop idle=61m")
        );
        // Both off, or no watchdog (an older host): nothing is known.
        assert_eq!(
            watch("labship: watch idle-stop=0 ttl=0 boot=5 t=1\n").stops_at(),
            None
        );
        assert_eq!(watch("labship: ready t=1\n"), Watch::default());
    }

    const NEW_TOKEN: &str = "8a6cbd3f0e4f4b2a9c1d7e5f3a2b1c0d9e8f7a6b5c4d3e2f";

    fn phase(p: Phase, at: Option<f64>) -> Marker {
        Marker {
            phase: MarkerKind::Phase(p),
            at,
        }
    }

    fn error(phase: &str, cause: &str) -> Marker {
        Marker {
            phase: MarkerKind::Error {
                phase: phase.into(),
                cause: cause.into(),
            },
            at: None,
        }
    }

    #[test]
    fn served_unless_the_whole_boot_is_in_view_without_a_token() {
        let token = format!("labship: token http://127.0.0.1:8888/lab?token={NEW_TOKEN}\n");
        let cases = [
            ("", true),
            ("boot noise only\n", true),
            ("labship: begin t=1\nlabship: pulled t=2\n", false),
            (
                "labship: begin t=1\nlabship: error phase=pull denied\n",
                false,
            ),
            (&format!("labship: begin t=1\n{token}"), true),
            ("labship: begin t=1\nlabship: ready t=3\n", true),
            // The start scrolled out: it may have served long ago.
            ("labship: pulled t=2\nlabship: started t=3\n", true),
        ];
        for (console, served) in cases {
            assert_eq!(ever_served(console), served, "{console:?}");
        }
    }

    #[test]
    fn the_token_line_says_whose_token_and_never_carries_one() {
        let cases = [
            (
                "[ 52.0] cloud-init[2179]: labship: token path=/lab source=labship\r\n",
                Some(("/lab", TokenFrom::Labship)),
            ),
            (
                "labship: token path=/lab source=labship\nlabship: token path=/user/x/tree source=image\n",
                Some(("/user/x/tree", TokenFrom::Image)),
            ),
            ("labship: begin t=1\nlabship: started t=2\n", None),
            ("labship: token path=lab source=labship\n", None),
        ];
        for (console, want) in cases {
            let got = served(console).map(|s| (s.path, s.token));
            assert_eq!(got, want.map(|(p, t)| (p.to_string(), t)), "{console:?}");
        }
        // A host of an older labship relayed the URL: still readable.
        let legacy = format!("labship: token http://127.0.0.1:8888/tree?token={NEW_TOKEN}\n");
        let got = served(&legacy).expect("legacy line");
        assert_eq!(got.path, "/tree");
        match got.token {
            TokenFrom::Logged(f) => assert_eq!(f.token.as_str(), NEW_TOKEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn markers_table() {
        let token_line = format!("labship: token http://127.0.0.1:8888/lab?token={NEW_TOKEN}");
        let cases: Vec<(String, Vec<Marker>)> = vec![
            ("labship: begin t=1732200000.123\n".into(), vec![phase(Phase::Begin, Some(1_732_200_000.123))]),
            (
                "[   37.061390] cloud-init[2179]: labship: pulled t=1732200000.123\n".into(),
                vec![phase(Phase::Pulled, Some(1_732_200_000.123))],
            ),
            // AWS cuts long console lines with a timestamp, even inside a word or a number.
            (
                "[   38.1] cloud-init[2179]: labship: dock[2026-11-21T10:00:01.123456]er-ready t=17322[2026-11-21T10:00:01.223456Z]00007.5\n"
                    .into(),
                vec![phase(Phase::DockerReady, Some(1_732_200_007.5))],
            ),
            (
                "noise before labship: logged-in t=1732200008\r\n".into(),
                vec![phase(Phase::LoggedIn, Some(1_732_200_008.0))],
            ),
            (format!("[   52.000001] cloud-init[2179]: {token_line}\n"), vec![phase(Phase::Token, None)]),
            ("labship: ready\n".into(), vec![phase(Phase::Ready, None)]),
            ("labship: started t=soon\n".into(), vec![phase(Phase::Started, None)]),
            (
                "[  960.5] cloud-init[2179]: labship: error phase=pull docker pull: Error response from daemon: manifest for x/y:z not found: manifest unknown: manifest unknown (gave up after 900s)\n"
                    .into(),
                vec![error(
                    "pull",
                    "docker pull: Error response from daemon: manifest for x/y:z not found: manifest unknown: manifest unknown (gave up after 900s)",
                )],
            ),
            ("labship: error something broke\n".into(), vec![error("", "something broke")]),
            ("labship: error phase=docker\n".into(), vec![error("docker", "")]),
            // not markers
            ("labship: frobnicated t=1\nlabship:begin t=1\nlabship begin\n\n".into(), vec![]),
            ("[I 2026-11-21 10:00:00.500 ServerApp] Jupyter Server 2.14.2 is running at:\n".into(), vec![]),
        ];
        for (text, want) in cases {
            assert_eq!(markers(&text), want, "input: {text:?}");
        }
    }

    #[test]
    fn markers_come_in_order_from_a_whole_console() {
        let console = format!(
            "[    0.000000] Linux version 6.1.115-126.197.amzn2023.x86_64\r\n\
             [   30.1] cloud-init[2179]: labship: begin t=1732200000.001\r\n\
             [   31.5] cloud-init[2179]: Complete!\r\n\
             [   37.0] cloud-init[2179]: labship: docker-ready t=1732200007.002\r\n\
             [   38.0] cloud-init[2179]: labship: logged-in t=1732200008.003\r\n\
             ip-172-31-0-5 login: \r\n\
             [   45.0] cloud-init[2179]: labship: pulled t=1732200015.004\r\n\
             [   46.0] cloud-init[2179]: labship: started t=1732200016.005\r\n\
             [   52.0] cloud-init[2179]: labship: token http://127.0.0.1:8888/lab?token={NEW_TOKEN}\r\n\
             [   52.1] cloud-init[2179]: labship: ready t=1732200022.006\r\n"
        );
        let got: Vec<MarkerKind> = markers(&console).into_iter().map(|m| m.phase).collect();
        let want: Vec<MarkerKind> = Phase::ALL.into_iter().map(MarkerKind::Phase).collect();
        assert_eq!(got, want);
        assert_eq!(Phase::DockerReady.to_string(), "docker-ready");
        assert_eq!(
            serde_json::to_string(&Phase::LoggedIn).expect("json"),
            "\"logged-in\""
        );
        let json = serde_json::to_value(markers("labship: error phase=pull x")).expect("json");
        assert_eq!(
            json,
            serde_json::json!([{"phase": {"phase": "pull", "cause": "x"}, "at": null}])
        );
    }
}
