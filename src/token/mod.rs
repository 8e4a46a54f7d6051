//! Recovering the Jupyter login token from any log a user or an API hands us:
//! `docker logs` output, `/var/log/cloud-init-output.log`, or EC2 console output
//! (GetConsoleOutput, decoded by `hosts::ec2::console`).
//!
//! Jupyter prints the URLs that carry its generated token when it starts
//! (`http://<host>:<port>/lab?token=<48 hex>`, several times: in the INFO lines and in
//! the CRITICAL "copy and paste one of these URLs" block). A token that was set
//! explicitly (`JUPYTER_TOKEN`, `--IdentityProvider.token`, ...) is never printed:
//! Jupyter logs the literal `?token=...` instead.
//!
//! [`find_token`] first runs the input through [`clean::clean_console`] (ANSI colours,
//! CR/CRLF, cloud-init console prefixes, AWS timestamps, getty prompts and SSM agent
//! messages interleaved mid-line), then scans every line, unanchored, for
//! `http(s)://host[:port][/path]?...token=<value>`. The host may also be notebook 5.x's
//! `(HOSTNAME or 127.0.0.1)`, which it prints when it listens on all addresses.
//!
//! The helpers that turn the result into what a user reads live here too, so that every
//! place that shows a token (local engine, EC2, `labship token`) says the same thing:
//! [`redact`] hides token values in text bound for messages and logs, and
//! [`TokenError::into_error`] turns a parser error into the crate's
//! [`Error::TokenNotFound`](crate::error::Error::TokenNotFound) with a reason and a hint.

pub mod clean;

use std::fmt;

/// A Jupyter login token.
///
/// A generated token is 48 lowercase hex characters; any token Jupyter can print in a
/// URL (`[A-Za-z0-9_-]+`) is accepted. The `Debug` impl never prints the secret
/// (`JupyterToken(****)`) and there is deliberately no `Display`: use
/// [`as_str`](Self::as_str) / [`expose`](Self::expose) where the value is needed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JupyterToken(String);

impl JupyterToken {
    /// Wrap `s` if it is a non-empty `[A-Za-z0-9_-]+` string.
    #[must_use]
    pub fn new(s: &str) -> Option<Self> {
        if !s.is_empty() && s.bytes().all(is_token_byte) {
            crate::secrets::hide(s);
            Some(JupyterToken(s.to_string()))
        } else {
            None
        }
    }

    /// A new token: 24 bytes from the operating system's random source, as 48 lowercase
    /// hex characters (the shape Jupyter itself generates). `None` when the OS has no
    /// randomness to give, which callers report rather than fall back from.
    #[must_use]
    pub fn generate() -> Option<Self> {
        let mut bytes = [0u8; 24];
        getrandom::getrandom(&mut bytes).ok()?;
        let token = hex::encode(bytes);
        crate::secrets::hide(&token);
        Some(JupyterToken(token))
    }

    /// The secret.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The secret (same as [`as_str`](Self::as_str), named for call sites that
    /// deliberately reveal it, e.g. when printing the login URL for the user).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret, by value.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }

    /// Whether this has the shape of a token Jupyter generated: 48 hex characters.
    #[must_use]
    pub fn is_generated(&self) -> bool {
        is_generated_shape(&self.0)
    }
}

impl fmt::Debug for JupyterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JupyterToken(****)")
    }
}

/// Where the token was found.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenFinding {
    /// The token.
    pub token: JupyterToken,
    /// The full URL as Jupyter printed it, after console cleaning (and, when a console
    /// split the token, with the token rejoined). It contains the secret.
    ///
    /// One exception: notebook 5.x, listening on all addresses, prints the host as
    /// `(HOSTNAME or 127.0.0.1)`, which no browser accepts; the URL here carries the
    /// address after `or` (Jupyter always writes `127.0.0.1` there) instead. Loopback is
    /// the choice that works wherever labship reaches the server (a published or
    /// forwarded port on this machine), whereas a container's hostname resolves only
    /// inside the container; it is also the URL later Jupyter versions print last.
    pub url: String,
    /// The port in the URL, if it had one.
    pub port: Option<u16>,
    /// The URL path: `/lab`, `/tree`, `/`, or a base URL such as `/user/x/lab`
    /// (`/` when the URL had no path).
    pub path: String,
}

impl TokenFinding {
    /// The URL with the token replaced by `****`, safe to log.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        self.url.replace(self.token.as_str(), "****")
    }
}

impl fmt::Debug for TokenFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFinding")
            .field("token", &self.token)
            .field("url", &self.redacted_url())
            .field("port", &self.port)
            .field("path", &self.path)
            .finish()
    }
}

/// Why no token could be recovered.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The log shows a running server but its token was set explicitly: Jupyter
    /// logged it as the literal `?token=...`.
    #[error(
        "the Jupyter server's token was set explicitly and is not printed in its log \
         (it shows `?token=...`); use the token you configured"
    )]
    TokenNotLogged,
    /// No Jupyter server URL with a token in the log (the server has not started
    /// yet, runs without a token, or the log is something else).
    #[error("no Jupyter server URL with a login token found in the log")]
    NoToken,
}

impl TokenError {
    /// The error as the user should read it: [`Error::TokenNotFound`] naming `origin`
    /// (what was searched, e.g. "the log of labship-demo"), with the reason and a hint
    /// on what to do next.
    ///
    /// [`Error::TokenNotFound`]: crate::error::Error::TokenNotFound
    #[must_use]
    pub fn into_error(self, origin: &str) -> crate::error::Error {
        match self {
            TokenError::TokenNotLogged => crate::error::Error::TokenNotFound {
                origin: origin.to_string(),
                reason: "the server's token was set explicitly, so Jupyter logged `token=...` instead of it".into(),
                hint: "use the token that was configured (JUPYTER_TOKEN or --IdentityProvider.token)".into(),
            },
            TokenError::NoToken => crate::error::Error::TokenNotFound {
                origin: origin.to_string(),
                reason: "no Jupyter server URL with a token was found".into(),
                hint: "give the log of a Jupyter server start (docker logs, cloud-init-output.log or the EC2 console output); a server that is still starting has not printed it yet".into(),
            },
        }
    }
}

/// Hide login tokens in text that goes into messages and logs: every `token=<value>`
/// becomes `token=****`.
///
/// The value is the run of `[A-Za-z0-9_-]` after `token=`, the same characters
/// [`find_token`] accepts, so `&x=1` and whatever follows stay readable. Jupyter's own
/// placeholder `token=...` is no secret and is left as it is. Use
/// [`TokenFinding::redacted_url`] for a URL whose token is known.
#[must_use]
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("token=") {
        let (head, tail) = rest.split_at(i + "token=".len());
        out.push_str(head);
        let secret_len = tail.bytes().take_while(|&b| is_token_byte(b)).count();
        if secret_len > 0 {
            out.push_str("****");
        }
        rest = &tail[secret_len..];
    }
    out.push_str(rest);
    out
}

/// Find the CURRENT token in `log`.
///
/// The input may be raw: it is cleaned with [`clean::clean_console`] first.
///
/// Rules, in order:
/// - Every `http(s)://` URL whose query has a `token=` parameter is a candidate,
///   wherever it sits in a line. The value runs up to the first character outside
///   `[A-Za-z0-9_-]` (`&`, whitespace, quotes, `#`, ...).
/// - `token=...` (three dots) is Jupyter's placeholder for an explicitly set token:
///   never a token.
/// - A hex value shorter than 48 characters that ends at a line break or a single
///   space is rejoined with the hex run that follows when together they make exactly
///   48 hex characters (a console split the cleaner could not undo).
/// - A hex value shorter than 48 characters that is a prefix of a 48-hex token found
///   elsewhere, or that the input cuts off (it ends the input), is a fragment and is
///   ignored.
/// - A generated (48 hex) token is preferred: the newest (last) one wins, because a
///   restarted server prints a new one. Other values count only when no generated
///   token is in the log.
/// - If a `token=...` placeholder comes after the chosen URL, the server that is
///   running now has an explicit token: [`TokenError::TokenNotLogged`].
pub fn find_token(log: &str) -> Result<TokenFinding, TokenError> {
    let text = clean::clean_console(log);
    let candidates = scan(&text);

    let generated: Vec<&str> = candidates
        .iter()
        .filter_map(|c| match &c.value {
            Value::Token(t) if is_generated_shape(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();

    let usable = |c: &Candidate| -> bool {
        match &c.value {
            Value::Placeholder => false,
            Value::Token(t) => {
                if is_generated_shape(t) {
                    return true;
                }
                let fragment = is_hex(t)
                    && t.len() < GENERATED_LEN
                    && (c.at_end_of_input
                        || generated
                            .iter()
                            .any(|g| g.len() > t.len() && g.starts_with(t.as_str())));
                !fragment
            }
        }
    };

    let chosen = candidates
        .iter()
        .rposition(|c| matches!(&c.value, Value::Token(t) if is_generated_shape(t)))
        .or_else(|| candidates.iter().rposition(usable));
    let last_placeholder = candidates
        .iter()
        .rposition(|c| matches!(c.value, Value::Placeholder));

    match (chosen, last_placeholder) {
        (Some(i), Some(p)) if p > i => Err(TokenError::TokenNotLogged),
        (None, Some(_)) => Err(TokenError::TokenNotLogged),
        (None, None) => Err(TokenError::NoToken),
        (Some(i), _) => {
            let c = &candidates[i];
            match &c.value {
                Value::Token(t) => Ok(TokenFinding {
                    token: JupyterToken(t.clone()),
                    url: c.url.clone(),
                    port: c.port,
                    path: c.path.clone(),
                }),
                Value::Placeholder => Err(TokenError::TokenNotLogged),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// scanning

const GENERATED_LEN: usize = 48;

fn is_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_hexdigit())
}

fn is_generated_shape(s: &str) -> bool {
    s.len() == GENERATED_LEN && is_hex(s)
}

/// Characters that end a URL as printed in a log line.
fn ends_url(c: u8) -> bool {
    c.is_ascii_whitespace()
        || c.is_ascii_control()
        || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'`' | b'#')
        || c >= 0x80
}

fn is_host_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'~' | b'%')
}

fn is_path_byte(c: u8) -> bool {
    !ends_url(c) && c != b'?'
}

#[derive(Debug)]
enum Value {
    /// `token=...`: an explicitly set token Jupyter did not print
    Placeholder,
    Token(String),
}

#[derive(Debug)]
struct Candidate {
    value: Value,
    url: String,
    port: Option<u16>,
    path: String,
    /// the token value runs to the very end of the input (likely cut off)
    at_end_of_input: bool,
}

fn scan(text: &str) -> Vec<Candidate> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 7 <= b.len() {
        let scheme_len = if b[i..].len() >= 7 && b[i..i + 7].eq_ignore_ascii_case(b"http://") {
            7
        } else if b[i..].len() >= 8 && b[i..i + 8].eq_ignore_ascii_case(b"https://") {
            8
        } else {
            i += 1;
            continue;
        };
        match parse_url(text, i, scheme_len) {
            Some((cand, end)) => {
                out.push(cand);
                i = end.max(i + 1);
            }
            None => i += scheme_len,
        }
    }
    out
}

/// Parse the URL starting at `start` (its scheme is `scheme_len` bytes). Returns the
/// candidate, if the URL has a `token=` query parameter, and where the URL ends.
fn parse_url(text: &str, start: usize, scheme_len: usize) -> Option<(Candidate, usize)> {
    let b = text.as_bytes();
    let mut i = start + scheme_len;

    // host: as printed, or the usable address notebook 5's `(HOSTNAME or ADDRESS)` offers
    let host_start = i;
    let usable_host = if b.get(i) == Some(&b'(') {
        let (address, end) = parse_either_host(text, i)?;
        i = end;
        Some(address)
    } else {
        i = parse_host(b, i)?;
        None
    };
    let host_end = i;
    // The URL from `start` up to `end`, with the host a browser can use.
    let url_to = |end: usize| -> String {
        match usable_host {
            Some(address) => format!(
                "{}{address}{}",
                &text[start..host_start],
                &text[host_end..end]
            ),
            None => text[start..end].to_string(),
        }
    };

    // port
    let mut port = None;
    if b.get(i) == Some(&b':') {
        i += 1;
        let ps = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        port = text[ps..i].parse::<u16>().ok();
    }

    // path
    let path_start = i;
    if b.get(i) == Some(&b'/') {
        while i < b.len() && is_path_byte(b[i]) {
            i += 1;
        }
    }
    let path = if i == path_start {
        "/".to_string()
    } else {
        text[path_start..i].to_string()
    };

    // query
    if b.get(i) != Some(&b'?') {
        return None;
    }
    i += 1;
    loop {
        let name_start = i;
        while i < b.len() && !ends_url(b[i]) && !matches!(b[i], b'=' | b'&') {
            i += 1;
        }
        let name = &text[name_start..i];
        let has_value = b.get(i) == Some(&b'=');
        if has_value {
            i += 1;
        }
        if name == "token" && has_value {
            if b[i..].starts_with(b"...") {
                let url_end = i + 3;
                return Some((
                    Candidate {
                        value: Value::Placeholder,
                        url: url_to(url_end),
                        port,
                        path,
                        at_end_of_input: false,
                    },
                    url_end,
                ));
            }
            let vs = i;
            while i < b.len() && is_token_byte(b[i]) {
                i += 1;
            }
            if i == vs {
                return None;
            }
            let mut token = text[vs..i].to_string();
            let mut url = url_to(i);
            let mut end = i;
            if let Some(rest) = rejoin_split(b, &token, i) {
                token.push_str(&text[i + 1..i + 1 + rest]);
                url.push_str(&text[i + 1..i + 1 + rest]);
                end = i + 1 + rest;
            }
            let at_end_of_input = end == b.len();
            // further parameters (`&x=y`) belong to the URL as printed
            let mut j = end;
            while b.get(j) == Some(&b'&') {
                j += 1;
                while j < b.len() && !ends_url(b[j]) && b[j] != b'&' {
                    j += 1;
                }
            }
            url.push_str(&text[end..j]);
            return Some((
                Candidate {
                    value: Value::Token(token),
                    url,
                    port,
                    path,
                    at_end_of_input,
                },
                j,
            ));
        }
        // skip this parameter's value
        while has_value && i < b.len() && !ends_url(b[i]) && b[i] != b'&' {
            i += 1;
        }
        if b.get(i) == Some(&b'&') {
            i += 1;
            continue;
        }
        return None;
    }
}

/// The end of a host that starts at `at`: a name or IPv4 address, or a bracketed IPv6
/// address. `None` when there is none.
fn parse_host(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    if b.get(i) == Some(&b'[') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_hexdigit() || matches!(b[i], b':' | b'.')) {
            i += 1;
        }
        if b.get(i) != Some(&b']') {
            return None;
        }
        i += 1;
    } else {
        while i < b.len() && is_host_byte(b[i]) {
            i += 1;
        }
    }
    (i > at).then_some(i)
}

/// notebook 5.x, listening on all addresses (`--ip=0.0.0.0` or `''`), prints its host as
/// `(<socket.gethostname()> or 127.0.0.1)` (`NotebookApp.display_url`). For such a
/// group starting at `at` (the `(`): the address after `or` and the end of the group.
fn parse_either_host(text: &str, at: usize) -> Option<(&str, usize)> {
    const OR: &[u8] = b" or ";
    let b = text.as_bytes();
    let name_end = parse_host(b, at + 1)?;
    if !b[name_end..].starts_with(OR) {
        return None;
    }
    let address_start = name_end + OR.len();
    let address_end = parse_host(b, address_start)?;
    if b.get(address_end) != Some(&b')') {
        return None;
    }
    Some((&text[address_start..address_end], address_end + 1))
}

/// A hex token shorter than 48 that ends at `end`, right before a line break or a
/// single space, followed by exactly the hex characters that complete 48 (and then a
/// non-token character or the end): the length of that continuation.
fn rejoin_split(b: &[u8], token: &str, end: usize) -> Option<usize> {
    if !is_hex(token) || token.len() >= GENERATED_LEN {
        return None;
    }
    if !matches!(b.get(end), Some(b'\n' | b' ')) {
        return None;
    }
    let cs = end + 1;
    let mut k = cs;
    while k < b.len() && b[k].is_ascii_hexdigit() {
        k += 1;
    }
    let next_is_token = k < b.len() && is_token_byte(b[k]);
    if token.len() + (k - cs) == GENERATED_LEN && !next_is_token {
        Some(k - cs)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
