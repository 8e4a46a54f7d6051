//! Console-noise cleaning.
//!
//! Text that reaches us from an EC2 serial console (GetConsoleOutput), a tty
//! (`docker run -t`, `script`) or cloud-init carries noise that the program that
//! printed a line never wrote. [`clean_console`] removes it so that each line reads
//! as the program printed it; `hosts::ec2::console::decode_console_output` turns the base64 payload of
//! GetConsoleOutput into text first.
//!
//! What is removed or undone, in this order:
//!
//! 1. ANSI / VT100 escape sequences: CSI (`ESC [ ... X`, also the 8-bit `0x9B` form),
//!    OSC (`ESC ] ... BEL` or `ESC ] ... ESC \`), DCS/SOS/PM/APC strings, charset
//!    designations (`ESC ( B`), other two-byte escapes (`ESC =`, `ESC 7`, ...), and
//!    stray C0/C1 control characters (NUL, BEL, backspace, ...). Tabs stay.
//! 2. Line endings: `\r\n`, `\r\r\n` (a tty's ONLCR applied to CRLF) and a lone `\r`
//!    all become `\n`.
//! 3. The bracketed ISO-8601 timestamps AWS inserts into long console lines
//!    (`[2025-01-01T12:00:00.123]`, the shape `\[[\d-]+T[\d:.]+\]`, with an optional
//!    `Z` or `+hh:mm` zone). Only the bracketed stamp itself is removed, so a token it
//!    split is whole again.
//! 4. Console record prefixes at the start of a line: `[   37.061390] cloud-init[2179]: `
//!    (kernel uptime + syslog identifier + pid, as `cloud-final.service` writes to the
//!    console) and a bare kernel `[   37.061390] `.
//! 5. Interleaved writers:
//!    - an SSM agent serial-port message (`2025/01/01 12:00:00Z: text`, always ending
//!      in a newline) that starts in the middle of a line: the message becomes its own
//!      line and the interrupted line is rejoined with the line that follows it;
//!    - a getty login prompt (`ip-172-31-0-5 login: `) printed in the middle of a line
//!      is removed;
//!    - a getty block (blank lines, the `/etc/issue` banner, `HOST login: `) that broke
//!      a console record in two: the banner is dropped and the text after the prompt is
//!      appended back to the interrupted record.
//!
//! Nothing here knows about Jupyter; it only restores lines.

/// Clean EC2 console / cloud-init / tty noise so lines read as the program printed them.
///
/// See the module documentation for exactly what is removed. The result uses `\n`
/// line endings; a trailing newline of the input is kept. Clean input (plain
/// `docker logs` output) comes back unchanged.
#[must_use]
pub fn clean_console(raw: &str) -> String {
    let text = strip_escapes(raw);
    let text = normalize_newlines(&text);
    let text = remove_aws_timestamps(&text);
    undo_interleaving(&text)
}

// ---------------------------------------------------------------------------
// 1. escapes and control characters

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';

// Hand-written rather than `strip_ansi_escapes::strip_str` (vte 0.14), which gives the
// same text on every captured log but, on console damage the tests pin, drops tabs and
// a lone `\r` (it keeps no control but `\n`), leaves the `1m` of an 8-bit CSI
// (`\u{9b}1m`), and lets an unterminated OSC swallow all the text after it, later lines
// included (vte ignores `\n` inside OSC): one title whose terminator never came (its
// writer killed mid-sequence) would hide Jupyter's URL printed after it.
fn strip_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            ESC => match it.peek().copied() {
                Some('[') => {
                    it.next();
                    skip_csi_body(&mut it);
                }
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    it.next();
                    skip_string_body(&mut it);
                }
                Some('(' | ')' | '*' | '+' | '-' | '.' | '/' | '#' | '%' | ' ') => {
                    it.next();
                    // the designated charset / option: one printable character
                    if matches!(it.peek(), Some(d) if ('\u{20}'..='\u{7e}').contains(d)) {
                        it.next();
                    }
                }
                Some(d) if ('\u{30}'..='\u{7e}').contains(&d) => {
                    it.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi_body(&mut it),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string_body(&mut it),
            '\n' | '\r' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Skip CSI parameters (0x30-0x3F), intermediates (0x20-0x2F) and the final byte
/// (0x40-0x7E). A malformed sequence ends at the first other character, which is kept.
fn skip_csi_body(it: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = it.peek() {
        if ('\u{20}'..='\u{3f}').contains(&c) {
            it.next();
        } else {
            if ('\u{40}'..='\u{7e}').contains(&c) {
                it.next();
            }
            return;
        }
    }
}

/// Skip an OSC/DCS/... string up to its terminator: BEL, `ESC \` or the 8-bit ST.
/// An unterminated string ends at the end of its line (the newline is kept).
fn skip_string_body(it: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = it.peek() {
        match c {
            BEL | '\u{9c}' => {
                it.next();
                return;
            }
            ESC => {
                it.next();
                if it.peek() == Some(&'\\') {
                    it.next();
                }
                return;
            }
            '\n' | '\r' => return,
            _ => {
                it.next();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 2. line endings

fn normalize_newlines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\r' {
            while it.peek() == Some(&'\r') {
                it.next();
            }
            if it.peek() == Some(&'\n') {
                it.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 3. AWS timestamps

fn remove_aws_timestamps(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            if let Some(len) = aws_timestamp_len(&b[i..]) {
                out.push_str(&text[copied..i]);
                i += len;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Length of a bracketed ISO-8601 stamp at the start of `b`:
/// `[` date (digits and `-`, at least one of each) `T` time (digits, `:` and `.`,
/// starting with a digit and holding a `:`) optional zone (`Z`, `+hh:mm`, `-hhmm`) `]`.
fn aws_timestamp_len(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    let date_start = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'-') {
        i += 1;
    }
    let date = &b[date_start..i];
    if date.len() < 3 || !date.contains(&b'-') || !date[0].is_ascii_digit() {
        return None;
    }
    if b.get(i) != Some(&b'T') {
        return None;
    }
    i += 1;
    let time_start = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b':' || b[i] == b'.') {
        i += 1;
    }
    let time = &b[time_start..i];
    if time.is_empty() || !time[0].is_ascii_digit() || !time.contains(&b':') {
        return None;
    }
    match b.get(i) {
        Some(b'Z') => i += 1,
        Some(b'+' | b'-') => {
            let zone_start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b':') {
                i += 1;
            }
            if i - zone_start < 3 {
                return None;
            }
        }
        _ => {}
    }
    if b.get(i) == Some(&b']') {
        Some(i + 1)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// 4. console record prefixes

/// Length of a console record prefix at the start of `line`:
/// `[ <secs>.<frac>] ` optionally followed by `ident[pid]: `.
fn console_prefix_len(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let secs = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == secs || b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let frac = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == frac || b.get(i) != Some(&b']') {
        return None;
    }
    i += 1;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    let kernel_only = i;
    // ident[pid]:
    let ident = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_.@/-".contains(&b[i])) {
        i += 1;
    }
    if i > ident && b.get(i) == Some(&b'[') {
        let mut j = i + 1;
        let pid = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > pid && b.get(j) == Some(&b']') && b.get(j + 1) == Some(&b':') {
            j += 2;
            if b.get(j) == Some(&b' ') {
                j += 1;
            }
            return Some(j);
        }
    }
    Some(kernel_only)
}

// ---------------------------------------------------------------------------
// 5. interleaved writers

/// Position of an SSM agent serial-port message `YYYY/MM/DD HH:MM:SSZ: ` in `s`.
fn find_ssm_message(s: &str) -> Option<usize> {
    const SHAPE: &[u8] = b"dddd/dd/dd dd:dd:ddZ: ";
    let b = s.as_bytes();
    if b.len() < SHAPE.len() {
        return None;
    }
    (0..=b.len() - SHAPE.len()).find(|&start| {
        SHAPE.iter().zip(&b[start..]).all(|(&want, &got)| {
            if want == b'd' {
                got.is_ascii_digit()
            } else {
                want == got
            }
        })
    })
}

fn is_hostname_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_'
}

const LOGIN: &str = " login: ";

/// If `body` starts with a getty prompt `HOST login: `, the text after it.
fn strip_prompt_at_start(body: &str) -> Option<&str> {
    let pos = body.find(LOGIN)?;
    let host = &body.as_bytes()[..pos];
    if host.is_empty() || !host.iter().all(|&c| is_hostname_byte(c)) {
        return None;
    }
    Some(&body[pos + LOGIN.len()..])
}

/// Does `host` look like an EC2 hostname: `ip-A-B-C-D` or `i-<hex>`, either optionally
/// followed by a DNS suffix such as `.ec2.internal` or `.eu-west-1.compute.internal`?
fn is_ec2_hostname(host: &str) -> bool {
    let (name, suffix) = match host.find('.') {
        Some(p) => (&host[..p], &host[p..]),
        None => (host, ""),
    };
    let suffix_ok = suffix
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    if !suffix_ok || suffix == "." {
        return false;
    }
    if let Some(ip) = name.strip_prefix("ip-") {
        let parts: Vec<&str> = ip.split('-').collect();
        return parts.len() == 4
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()));
    }
    if let Some(id) = name.strip_prefix("i-") {
        return (8..=17).contains(&id.len())
            && id
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    }
    false
}

/// Remove getty prompts (`HOST login: `) printed in the middle of a line.
///
/// The host must be one seen prompting at the start of a line elsewhere in the log,
/// or have the shape of an EC2 hostname; the host may be glued to the text before it.
fn remove_inline_prompts(body: &str, known_hosts: &[String]) -> String {
    let mut s = body.to_string();
    let mut from = 0;
    while let Some(rel) = s[from..].find(LOGIN) {
        let pos = from + rel;
        let b = s.as_bytes();
        // the longest hostname-shaped run ending at `pos`
        let mut run = pos;
        while run > 0 && is_hostname_byte(b[run - 1]) {
            run -= 1;
        }
        let mut host_start = None;
        for h in known_hosts {
            if s[..pos].ends_with(h.as_str()) {
                let start = pos - h.len();
                if start > 0 && host_start.is_none_or(|cur| start < cur) {
                    host_start = Some(start);
                }
            }
        }
        if host_start.is_none() {
            // leftmost start inside the run that makes an EC2 hostname
            host_start = (run..pos)
                .filter(|&st| st > 0 && s.is_char_boundary(st))
                .find(|&st| is_ec2_hostname(&s[st..pos]));
        }
        match host_start {
            Some(start) => {
                s.replace_range(start..pos + LOGIN.len(), "");
                from = start;
            }
            None => from = pos + LOGIN.len(),
        }
    }
    s
}

struct Line {
    text: String,
    /// the line began with a console record prefix (a new record, not a continuation)
    record: bool,
}

fn is_record_start(s: &str) -> bool {
    console_prefix_len(s).is_some() || find_ssm_message(s) == Some(0)
}

/// Index of the console record a getty block interrupted: walk back over the banner
/// (blank lines, `Kernel ... on ...` and the OS-name line above it). Returns `None`
/// unless the line found is a console record.
fn interrupted_record(out: &[Line]) -> Option<usize> {
    let mut i = out.len();
    let mut skipped = 0;
    while i > 0 && out[i - 1].text.trim().is_empty() && !out[i - 1].record {
        i -= 1;
        skipped += 1;
    }
    if i > 0 {
        let t = &out[i - 1].text;
        if !out[i - 1].record && t.starts_with("Kernel ") && t.contains(" on ") {
            i -= 1;
            skipped += 1;
            // the OS name line (`\S` of /etc/issue) right above it
            if i > 0 && !out[i - 1].record && !out[i - 1].text.trim().is_empty() {
                i -= 1;
                skipped += 1;
            }
            while i > 0 && out[i - 1].text.trim().is_empty() && !out[i - 1].record {
                i -= 1;
                skipped += 1;
            }
        }
    }
    if i > 0 && out[i - 1].record && skipped <= 8 {
        Some(i - 1)
    } else {
        None
    }
}

fn undo_interleaving(text: &str) -> String {
    let raw_lines: Vec<&str> = text.split('\n').collect();

    // hosts seen prompting at the start of a line
    let mut known_hosts: Vec<String> = Vec::new();
    for l in &raw_lines {
        let body = match console_prefix_len(l) {
            Some(n) => &l[n..],
            None => l,
        };
        if let Some(pos) = body.find(LOGIN) {
            let host = &body[..pos];
            if strip_prompt_at_start(body).is_some() && !known_hosts.iter().any(|h| h == host) {
                known_hosts.push(host.to_string());
            }
        }
    }

    let mut out: Vec<Line> = Vec::with_capacity(raw_lines.len());
    let mut carry: Option<Line> = None;
    for l in raw_lines {
        let (record, body) = match console_prefix_len(l) {
            Some(n) => (true, &l[n..]),
            None => (false, l),
        };
        let mut line = match carry.take() {
            // the line an SSM message interrupted continues here...
            Some(mut head) if !record => {
                head.text.push_str(body);
                head
            }
            // ...unless a new record starts: the rest of the interrupted line was lost
            Some(head) => {
                out.push(head);
                Line {
                    text: body.to_string(),
                    record,
                }
            }
            None => Line {
                text: body.to_string(),
                record,
            },
        };

        // An SSM agent message that started in the middle of the line.
        if let Some(p) = find_ssm_message(&line.text).filter(|&p| p > 0) {
            let msg = line.text.split_off(p);
            out.push(Line {
                text: msg,
                record: true,
            });
            carry = Some(line);
            continue;
        }

        // A getty block that broke a record: `HOST login: <rest of the record>`.
        if !line.record {
            if let Some(rest) = strip_prompt_at_start(&line.text) {
                let rest = rest.to_string();
                if !rest.is_empty() {
                    if let Some(n) = console_prefix_len(&rest) {
                        line = Line {
                            text: rest[n..].to_string(),
                            record: true,
                        };
                    } else if is_record_start(&rest) {
                        line = Line {
                            text: rest,
                            record: true,
                        };
                    } else if let Some(idx) = interrupted_record(&out) {
                        out.truncate(idx + 1);
                        let rest = remove_inline_prompts(&rest, &known_hosts);
                        out[idx].text.push_str(&rest);
                        continue;
                    } else {
                        line.text = rest;
                    }
                }
            }
        }

        line.text = remove_inline_prompts(&line.text, &known_hosts);
        out.push(line);
    }
    if let Some(head) = carry {
        out.push(head);
    }

    let mut s = String::with_capacity(text.len());
    for (i, l) in out.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&l.text);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "c753d1343375fbaad82aa4f60f12ea79384d236ae54733c0";

    #[test]
    fn clean_text_is_unchanged() {
        let s = "[I 2026-11-21 08:11:43.222 ServerApp] http://127.0.0.1:8888/lab?token=abc\n    indented\n\tx\n";
        assert_eq!(clean_console(s), s);
        assert_eq!(clean_console(""), "");
    }

    #[test]
    fn strips_csi_charset_and_osc() {
        let s = "\u{1b}[32m[I 12:00:00.1 NotebookApp]\u{1b}(B\u{1b}[m hello \u{1b}[0;1;39mworld\u{1b}[0m\n";
        assert_eq!(clean_console(s), "[I 12:00:00.1 NotebookApp] hello world\n");
        let osc = "\u{1b}]0;title\u{7}a\u{1b}]8;;http://x\u{1b}\\b\u{1b}]8;;\u{1b}\\c";
        assert_eq!(clean_console(osc), "abc");
        assert_eq!(
            clean_console("a\u{1b}=b\u{1b}7c\u{1b}[?2004hd\u{9b}1me"),
            "abcde"
        );
        assert_eq!(clean_console("nul\0 bel\u{7} bs\u{8}!"), "nul bel bs!");
    }

    #[test]
    fn unterminated_osc_stops_at_line_end() {
        assert_eq!(clean_console("\u{1b}]0;broken\nnext"), "\nnext");
    }

    #[test]
    fn line_endings_become_lf() {
        assert_eq!(clean_console("a\r\nb\r\r\nc\rd\n"), "a\nb\nc\nd\n");
    }

    #[test]
    fn aws_timestamp_shapes_are_removed() {
        let joined = format!("token={TOKEN}");
        for ts in [
            "[2026-11-21T08:12:04.512]",
            "[2026-11-21T08:12:04]",
            "[2026-11-21T08:12:04.512Z]",
            "[2026-11-21T08:12:04.512+00:00]",
            "[2026-11-21T08:12:04.512123-0700]",
        ] {
            let split = format!("token={}{ts}{}", &TOKEN[..37], &TOKEN[37..]);
            assert_eq!(clean_console(&split), joined, "{ts}");
        }
        // not timestamps: Jupyter's own prefix, kernel uptime, a lone bracket
        for keep in [
            "[I 2026-11-21 08:11:43.222 ServerApp] x",
            "[T] [2026T] [-T1:2] [2026-11-21T] [2026-11-21Tab:cd]",
            "[",
        ] {
            assert_eq!(clean_console(keep), keep);
        }
    }

    #[test]
    fn console_prefixes_are_stripped() {
        let s = "[   37.061390] cloud-init[2179]: + docker logs -f lab\n[    0.000000] Linux version 6.1\n[  OK  ] Started x\n";
        assert_eq!(
            clean_console(s),
            "+ docker logs -f lab\nLinux version 6.1\n[  OK  ] Started x\n"
        );
        // a record prefix only counts at the start of a line
        let mid = "x [   37.061390] cloud-init[2179]: y";
        assert_eq!(clean_console(mid), mid);
    }

    #[test]
    fn ssm_message_mid_line_is_split_out_and_line_rejoined() {
        let s = format!(
            "[   36.9] cloud-init[2179]: url?token={}2026/11/21 08:11:44Z: Amazon SSM Agent v3.3.1802.0 is running\r\n{}\r\n[   37.0] cloud-init[2179]: next\r\n",
            &TOKEN[..20],
            &TOKEN[20..]
        );
        assert_eq!(
            clean_console(&s),
            format!(
                "2026/11/21 08:11:44Z: Amazon SSM Agent v3.3.1802.0 is running\nurl?token={TOKEN}\nnext\n"
            )
        );
        // an SSM message at the start of a line is left alone
        let own = "2026/11/21 08:11:44Z: OsVersion: 2023\nnext";
        assert_eq!(clean_console(own), own);
    }

    #[test]
    fn ssm_interrupted_line_whose_rest_was_lost_is_kept() {
        let s =
            "[ 1.0] cloud-init[1]: head2026/11/21 08:11:44Z: msg\n[ 2.0] cloud-init[1]: new record";
        assert_eq!(
            clean_console(s),
            "2026/11/21 08:11:44Z: msg\nhead\nnew record"
        );
    }

    #[test]
    fn getty_block_is_dropped_and_record_rejoined() {
        let s = format!(
            "[   36.98] cloud-init[2179]: url?token={}\r\n\r\nAmazon Linux 2023.6.20241212\r\nKernel 6.1.119-129.201.amzn2023.x86_64 on an x86_64 (-)\r\n\r\nip-172-31-0-5 login: {}\r\n[   37.04] cloud-init[2179]: next\r\n",
            &TOKEN[..10],
            &TOKEN[10..]
        );
        assert_eq!(clean_console(&s), format!("url?token={TOKEN}\nnext\n"));
    }

    #[test]
    fn getty_prompt_followed_by_a_new_record_is_not_joined() {
        let s = "[ 1.0] cloud-init[1]: complete line\n\nAmazon Linux 2023\nKernel 6.1 on an x86_64 (-)\n\nip-172-31-0-5 login: [ 2.0] cloud-init[1]: second\n";
        assert_eq!(
            clean_console(s),
            "complete line\n\nAmazon Linux 2023\nKernel 6.1 on an x86_64 (-)\n\nsecond\n"
        );
        // a bare prompt (nothing after it) stays as printed
        let bare = "Amazon Linux 2023\n\nip-172-31-0-5 login: \n";
        assert_eq!(clean_console(bare), bare);
    }

    #[test]
    fn inline_getty_prompt_is_removed() {
        let s = format!(
            "        http://7f3c2a9d41be:8888/lab?token={}ip-172-31-0-5 login: {}",
            &TOKEN[..14],
            &TOKEN[14..]
        );
        assert_eq!(
            clean_console(&s),
            format!("        http://7f3c2a9d41be:8888/lab?token={TOKEN}")
        );
        for host in [
            "ip-10-0-0-1.ec2.internal",
            "ip-10-0-0-1.eu-west-1.compute.internal",
            "i-0123456789abcdef0",
            "i-0123456789abcdef0.us-east-2.compute.internal",
        ] {
            let s = format!("token={}{host} login: {}", &TOKEN[..30], &TOKEN[30..]);
            assert_eq!(clean_console(&s), format!("token={TOKEN}"), "{host}");
        }
        // a host learned from a prompt at the start of another line
        let s = format!(
            "mybox login: \ntoken={}mybox login: {}",
            &TOKEN[..5],
            &TOKEN[5..]
        );
        assert_eq!(clean_console(&s), format!("mybox login: \ntoken={TOKEN}"));
        // ordinary prose with "login: " is left alone
        let prose = "sshd: Failed login: root from 127.0.0.1";
        assert_eq!(clean_console(prose), prose);
    }
}
