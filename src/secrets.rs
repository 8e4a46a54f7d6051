//! The secrets this process holds (the ECR password, Jupyter tokens), kept out of its
//! diagnostics at every verbosity.
//!
//! labship never logs a secret itself; but `-vvv` turns on every library's traces (the AWS
//! SDK, hyper, bollard), and a library may one day print a header or a body. So every
//! secret labship learns is registered here ([`hide`]) and the diagnostics writer
//! ([`Stderr`]) replaces each with `****` before a line reaches the terminal. Results on
//! stdout (the URL `up` prints, `token`'s answer) are not filtered: they are what the user
//! asked for.

use std::io::Write;
use std::sync::RwLock;

use base64::Engine as _;

/// At most this many secrets are remembered (a process holds a handful).
const MAX: usize = 64;
/// Shorter strings are not secrets worth hiding (and would blank out ordinary words).
const MIN_LEN: usize = 8;

static HIDDEN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret: from now on, diagnostics show it as `****`.
pub fn hide(secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    if let Ok(mut hidden) = HIDDEN.write() {
        if !hidden.iter().any(|h| h == secret) {
            if hidden.len() >= MAX {
                hidden.remove(0);
            }
            hidden.push(secret.to_string());
        }
    }
}

/// Registers registry credentials: the password, and `base64(user:password)` as it travels
/// in an `Authorization: Basic` header or an ECR authorization token.
pub fn hide_credentials(user: &str, password: &str) {
    hide(password);
    hide(&base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
}

/// `text` with every registered secret replaced by `****`.
#[must_use]
pub fn scrub(text: &str) -> String {
    let Ok(hidden) = HIDDEN.read() else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for secret in hidden.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "****");
        }
    }
    out
}

/// Standard error for diagnostics, with registered secrets scrubbed. tracing's formatter
/// writes each event in one call, so a secret is never split between two writes.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_scrubbed_and_short_strings_are_not_registered() {
        hide("s3cr3t-ecr-password-for-test");
        hide_credentials("AWS", "another-password-123");
        hide("short");
        let line = format!(
            "auth s3cr3t-ecr-password-for-test basic {} and another-password-123; short stays",
            base64::engine::general_purpose::STANDARD.encode("AWS:another-password-123")
        );
        assert_eq!(scrub(&line), "auth **** basic **** and ****; short stays");
    }
}
