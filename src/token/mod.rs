//! Recovering the Jupyter login token from any log a user or an API hands us:
//! `docker logs` output, `/var/log/cloud-init-output.log`, or EC2 console output
//! (GetConsoleOutput, see [`clean::decode_console_output`]).
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
//! `http(s)://host[:port][/path]?...token=<value>`.

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
            Some(JupyterToken(s.to_string()))
        } else {
            None
        }
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

    // host
    let host_start = i;
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
    if i == host_start {
        return None;
    }

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
                        url: text[start..url_end].to_string(),
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
            let mut url = text[start..i].to_string();
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
