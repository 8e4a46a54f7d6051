//! `.dockerignore` matching with Docker's exact semantics.
//!
//! The build step streams the build context (a tar of the project directory)
//! to the Docker engine itself, so it has to leave out ignored files exactly
//! as `docker build` would. [`DockerIgnore`] reproduces the behaviour of the
//! reference implementation: `ignorefile.ReadAll` (used by the docker CLI's
//! `ReadDockerignore`) for reading the file, and `github.com/moby/patternmatcher`
//! (`New`, then `MatchesUsingParentResults` down the directory tree, as the
//! classic builder's archiver and `BuildKit`'s context walker use it) for
//! matching.
//!
//! Reading the file (`ReadAll`):
//! * a UTF-8 BOM at the start of the file is dropped;
//! * lines whose *first* character is `#` are comments (a line `  # x` is a
//!   pattern, because the comment check happens before trimming);
//! * leading and trailing whitespace is trimmed and blank lines are skipped;
//! * a leading `!` marks an exception (whitespace after the `!` is trimmed);
//! * the pattern is cleaned like Go's `filepath.Clean` and one leading `/` is
//!   removed, so `/foo`, `./foo`, `foo/` and `foo//.` all mean `foo`.
//!
//! Matching (`patternmatcher`), with `/` as the separator (Unix semantics):
//! * patternmatcher does not use `filepath.Match` to match: it uses it only to
//!   reject malformed patterns, then translates each pattern into a Go regular
//!   expression (`*` is `[^/]*`, `?` is `[^/]`, `**` is `(.*/)?`, a trailing
//!   `**` is `.*`, `\x` is the regexp escape `\x`, `[...]` is copied verbatim)
//!   or into a plain exact / prefix / suffix string comparison. This module
//!   performs the same translation and runs the resulting regular expression
//!   with `regex-automata`, read by Go's rules where `regex-syntax`'s differ
//!   (see `go_to_regex_syntax`), so the quirks are the same: for example
//!   `[!a]` is a class of `!` and `a` (only `^` negates), `\d` in a pattern
//!   means "an ASCII digit" because it reaches Go's regexp engine as `\d`,
//!   `?` matches one character (`☺` too, not one byte), and `|`, `{` and `}`
//!   are not escaped (a bug in patternmatcher's escape table), so in a
//!   pattern with wildcards `a|b*` is an alternation and `x{2}` a count;
//! * a pattern that matches a directory matches everything below it, and the
//!   last matching pattern wins, so a later `!exception` re-includes and a
//!   later plain pattern excludes again;
//! * paths are judged top-down like Docker's walkers do: on each directory,
//!   a pattern that cannot change the verdict at that point is skipped and
//!   so does not count as matching it. This only differs from
//!   `MatchesOrParentMatches` in a corner case: with `**/*.md` then `!docs`,
//!   `docs/x.md` stays excluded (`!docs` was skipped on `docs`, which was not
//!   excluded, and does not match `docs/x.md` itself), as with `docker build`;
//! * the context root itself is never excluded.
//!
//! Patterns that Docker would reject at match time (for example a reversed
//! class range such as `[z-a]`) are rejected here when the file is parsed.
//! Deliberate limits: only Unix semantics (on Windows, Docker treats `\` in
//! patterns as a separator, not an escape), and Unicode classes such as
//! `\pL`, which Docker's regexp engine accepts, are refused as invalid
//! (Go's Unicode tables and names differ from `regex-syntax`'s).

use std::borrow::Cow;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::{meta, Anchored, Input};
use regex_syntax::ast::{self, Ast, RepetitionKind, RepetitionRange};
use regex_syntax::hir::translate::Translator;
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Parsed .dockerignore rules.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// Why a `.dockerignore` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A line holds a pattern Docker would refuse (bad glob syntax, a bare
    /// `!`, or a pattern whose translated regular expression does not compile).
    #[error(".dockerignore line {line}: invalid pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// 1-based line number in the `.dockerignore` file.
        line: usize,
        /// The offending line, trimmed.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DockerIgnore {
    /// Parse the text of a .dockerignore file.
    ///
    /// # Errors
    /// [`IgnoreError::InvalidPattern`] for the first line Docker would refuse.
    pub fn parse(contents: &str) -> Result<Self, IgnoreError> {
        let mut patterns = Vec::new();
        for (index, raw_line) in contents.lines().enumerate() {
            let line = if index == 0 {
                raw_line.strip_prefix('\u{feff}').unwrap_or(raw_line)
            } else {
                raw_line
            };
            let Some(entry) = read_all_entry(line) else {
                continue;
            };
            match Pattern::new(&entry) {
                Ok(Some(pattern)) => patterns.push(pattern),
                Ok(None) => {}
                Err(reason) => {
                    return Err(IgnoreError::InvalidPattern {
                        line: index + 1,
                        pattern: line.trim().to_owned(),
                        reason,
                    })
                }
            }
        }
        Ok(Self { patterns })
    }

    /// True when `rel_path` (relative to the context root, '/'-separated, no leading "./" or "/") is excluded from the build context.
    ///
    /// The path is cleaned first, so `./a//b/` is treated as `a/b`. The context
    /// root (`""` or `"."`) is never excluded.
    #[must_use]
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let path = normalize_path(rel_path);
        if is_root(&path) {
            return false;
        }
        let mut flags = Vec::new();
        self.evaluate(&path, &mut flags)
    }

    /// True when walking into the directory `dir_rel` (which is itself excluded) is still needed because some exception pattern (`!pattern`) could re-include something beneath it. When false, the caller prunes the whole directory without reading it (this is what makes big ignored folders like `node_modules` cheap).
    ///
    /// Returns true for the context root and for directories that are not
    /// excluded at all. Otherwise it returns false only when it is provable
    /// that every path below `dir_rel` is excluded: the pattern that excludes
    /// `dir_rel` also excludes everything below it, so only an exception
    /// listed after that pattern that can match some path starting with
    /// `dir_rel/` can re-include anything.
    #[must_use]
    pub fn may_reinclude_under(&self, dir_rel: &str) -> bool {
        let dir = normalize_path(dir_rel);
        if is_root(&dir) {
            return true;
        }
        let mut flags = Vec::new();
        if !self.evaluate(&dir, &mut flags) {
            return true; // not excluded: walk it like any other directory
        }
        // The last pattern that matched `dir` decided; it stays matched for
        // everything below, so only a later exception can overrule it.
        let Some(decisive) = flags.iter().rposition(|&matched| matched) else {
            return true;
        };
        let later = self.patterns.get(decisive + 1..).unwrap_or_default();
        let prefix = format!("{dir}/");
        later
            .iter()
            .filter(|p| p.exception)
            .any(|p| p.may_match_with_prefix(&prefix))
    }

    /// Docker's verdict for a clean, non-root path: patternmatcher's
    /// `MatchesUsingParentResults` applied to each ancestor of `path` from
    /// the top and then to `path`, which is what the classic builder's
    /// archiver and `BuildKit`'s context walker do. Leaves in `flags` which
    /// patterns count as matching `path` (its `MatchInfo`).
    fn evaluate(&self, path: &str, flags: &mut Vec<bool>) -> bool {
        flags.clear();
        flags.resize(self.patterns.len(), false);
        let mut excluded = false;
        let ends = path
            .match_indices('/')
            .map(|(end, _)| end)
            .chain(std::iter::once(path.len()));
        for (slashes, end) in ends.enumerate() {
            let prefix = &path[..end];
            excluded = false;
            for (pattern, matched) in self.patterns.iter().zip(flags.iter_mut()) {
                // A pattern that matched a parent directory matches here too.
                // Otherwise, like patternmatcher, a pattern that cannot change
                // the verdict so far is skipped, and then not recorded as
                // matching either.
                if !*matched {
                    if pattern.exception != excluded {
                        continue;
                    }
                    *matched = pattern.matches_at(prefix, slashes);
                }
                if *matched {
                    excluded = !pattern.exception;
                }
            }
        }
        excluded
    }

    /// True when there are no patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when at least one pattern is an exception (`!pattern`).
    #[must_use]
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

// ---------------------------------------------------------------------------
// Reading the file (ignorefile.ReadAll) and building patterns (patternmatcher.New)
// ---------------------------------------------------------------------------

/// One line as `ignorefile.ReadAll` returns it, or `None` for comments and
/// blank lines. Exceptions come back with their `!` prefix.
fn read_all_entry(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let pattern = line.trim();
    if pattern.is_empty() {
        return None;
    }
    let (invert, body) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, pattern),
    };
    let body = if body.is_empty() {
        String::new()
    } else {
        let mut cleaned = go_clean(body);
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        cleaned
    };
    Some(if invert { format!("!{body}") } else { body })
}

#[derive(Debug, Clone)]
struct Pattern {
    /// `!pattern`: re-includes what it matches.
    exception: bool,
    /// The cleaned pattern without its `!`.
    text: String,
    matcher: Matcher,
    /// Every path this pattern matches has exactly this many `/`.
    fixed_slashes: Option<usize>,
}

/// How patternmatcher compares a path with a pattern.
#[derive(Debug, Clone)]
enum Matcher {
    /// No wildcards: the path must equal the pattern text.
    Exact,
    /// `literal**`: the path must start with these bytes.
    Prefix(Box<[u8]>),
    /// `**literal`: the path must end with these bytes (or equal them minus a
    /// leading `/`).
    Suffix(Box<[u8]>),
    /// Everything else: the translated regular expression.
    Regex(GoRegex),
}

impl Pattern {
    /// The body of patternmatcher's `New` for one `ReadAll` entry.
    fn new(entry: &str) -> Result<Option<Self>, String> {
        let trimmed = entry.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let cleaned = go_clean(trimmed);
        let (exception, text) = match cleaned.strip_prefix('!') {
            Some("") => {
                return Err("illegal exclusion pattern: `!` must be followed by a pattern".into())
            }
            Some(rest) => (true, rest),
            None => (false, cleaned.as_str()),
        };
        check_glob_syntax(text)?;
        let matcher = translate(text).into_matcher(exception)?;
        let fixed_slashes = match &matcher {
            Matcher::Exact => Some(text.matches('/').count()),
            Matcher::Regex(regex) => regex.slashes,
            Matcher::Prefix(_) | Matcher::Suffix(_) => None,
        };
        Ok(Some(Self {
            exception,
            text: text.to_owned(),
            matcher,
            fixed_slashes,
        }))
    }

    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.text,
            Matcher::Prefix(prefix) => path.as_bytes().starts_with(prefix),
            Matcher::Suffix(suffix) => {
                let path = path.as_bytes();
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }

    /// [`Self::matches`] for a path holding `slashes` slashes.
    fn matches_at(&self, path: &str, slashes: usize) -> bool {
        self.fixed_slashes.is_none_or(|k| k == slashes) && self.matches(path)
    }

    /// Whether this pattern could match some path that starts with `prefix`
    /// (a directory followed by `/`). False only when that is impossible.
    fn may_match_with_prefix(&self, prefix: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => self.text.len() > prefix.len() && self.text.starts_with(prefix),
            Matcher::Prefix(p) => {
                prefix.as_bytes().starts_with(p) || p.starts_with(prefix.as_bytes())
            }
            // `prefix` followed by `x/` and the suffix always matches.
            Matcher::Suffix(_) => true,
            Matcher::Regex(regex) => regex.may_match_with_prefix(prefix),
        }
    }
}

fn is_root(path: &str) -> bool {
    path.is_empty() || path == "."
}

/// Clean a caller-supplied relative path; borrows when it is already clean.
fn normalize_path(path: &str) -> Cow<'_, str> {
    let already_clean = !path.is_empty()
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if already_clean {
        return Cow::Borrowed(path);
    }
    let mut cleaned = go_clean(path);
    if cleaned.starts_with('/') {
        cleaned.remove(0);
    }
    Cow::Owned(cleaned)
}

/// Go's `path/filepath.Clean` on Unix: the shortest path equivalent to
/// `path` by purely lexical processing.
fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let src = path.as_bytes();
    let rooted = src[0] == b'/';
    let n = src.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let mut r = 0;
    let mut dotdot = 0;
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        let at_sep = |i: usize| i == n || src[i] == b'/';
        if src[r] == b'/' || (src[r] == b'.' && at_sep(r + 1)) {
            // empty element or `.`
            r += 1;
        } else if src[r] == b'.' && src.get(r + 1) == Some(&b'.') && at_sep(r + 2) {
            r += 2;
            if out.len() > dotdot {
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && src[r] != b'/' {
                out.push(src[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        out.push(b'.');
    }
    // Only whole elements were copied or cut at '/', so this is valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

// ---------------------------------------------------------------------------
// Syntax check: Go's filepath.Match(pattern, ".") returning ErrBadPattern
// ---------------------------------------------------------------------------

/// Reject what Go's `filepath.Match` reports as `ErrBadPattern` (Unix rules:
/// `\` escapes). patternmatcher runs this check on every pattern in `New`.
fn check_glob_syntax(pattern: &str) -> Result<(), String> {
    let mut rest = pattern;
    while !rest.is_empty() {
        let (chunk, tail) = scan_chunk(rest);
        check_chunk(chunk)?;
        rest = tail;
    }
    Ok(())
}

/// Go's `scanChunk`: skip leading stars, then take everything up to the next
/// `*` that is not inside a bracket expression.
fn scan_chunk(pattern: &str) -> (&str, &str) {
    let pattern = pattern.trim_start_matches('*');
    let bytes = pattern.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    // `i` is at an ASCII byte or the end, so this is a char boundary; if the
    // escape skip landed inside a multi-byte char, `get` keeps us safe.
    match (pattern.get(..i), pattern.get(i..)) {
        (Some(chunk), Some(tail)) => (chunk, tail),
        _ => (pattern, ""),
    }
}

/// The syntax side of Go's `matchChunk`.
fn check_chunk(chunk: &str) -> Result<(), String> {
    let mut rest = chunk;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '[' => {
                let class_start = rest;
                if let Some(r) = rest.strip_prefix('^') {
                    rest = r;
                }
                let mut ranges = 0;
                loop {
                    if ranges > 0 {
                        if let Some(r) = rest.strip_prefix(']') {
                            rest = r;
                            break;
                        }
                    }
                    rest = class_char(rest, class_start)?;
                    if let Some(r) = rest.strip_prefix('-') {
                        rest = class_char(r, class_start)?;
                    }
                    ranges += 1;
                }
            }
            '\\' => match rest.chars().next() {
                Some(escaped) => rest = &rest[escaped.len_utf8()..],
                None => return Err("trailing backslash".into()),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Go's `getEsc`: one (possibly escaped) character of a bracket expression,
/// which must be followed by more pattern text.
fn class_char<'a>(rest: &'a str, class_start: &str) -> Result<&'a str, String> {
    let unterminated = || format!("unterminated character class `[{class_start}`");
    let rest = match rest.chars().next() {
        None => return Err(unterminated()),
        Some('-') => return Err("`-` must sit between two characters in a character class".into()),
        Some(']') => return Err("empty character class or misplaced `]`".into()),
        Some('\\') => {
            let after = &rest[1..];
            match after.chars().next() {
                Some(c) => &after[c.len_utf8()..],
                None => return Err(unterminated()),
            }
        }
        Some(c) => &rest[c.len_utf8()..],
    };
    if rest.is_empty() {
        return Err(unterminated());
    }
    Ok(rest)
}

// ---------------------------------------------------------------------------
// patternmatcher's Pattern.compile: glob -> match kind / regexp text
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchKind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

#[derive(Debug)]
struct Translation<'a> {
    kind: MatchKind,
    /// The Go regexp text; only meaningful for [`MatchKind::Regex`].
    regex: String,
    pattern: &'a str,
}

/// Translate a cleaned pattern exactly the way patternmatcher's `compile`
/// does on Unix.
fn translate(pattern: &str) -> Translation<'_> {
    let chars: Vec<char> = pattern.chars().collect();
    // text/scanner silently drops a byte order mark at the start of its input.
    let mut i = usize::from(chars.first() == Some(&'\u{feff}'));
    let mut regex = String::from("^");
    let mut kind = MatchKind::Exact;
    let mut step = 0usize;
    while let Some(&ch) = chars.get(i) {
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == MatchKind::Exact {
                        kind = MatchKind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = MatchKind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = MatchKind::Regex;
                }
                if step == 0 {
                    kind = MatchKind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = MatchKind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = MatchKind::Regex;
            }
            // patternmatcher means to escape `.+()|{}$`, but its bitmap only
            // has room for bytes below 64, so `|`, `{` and `}` reach the
            // regexp unescaped (alternation and counted repetition).
            '.' | '+' | '(' | ')' | '$' => {
                regex.push('\\');
                regex.push(ch);
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    regex.push('\\');
                    regex.push(next);
                    kind = MatchKind::Regex;
                }
                None => regex.push('\\'),
            },
            '[' | ']' => {
                regex.push(ch);
                kind = MatchKind::Regex;
            }
            _ => regex.push(ch),
        }
        step += 1;
    }
    if kind == MatchKind::Regex {
        regex.push('$');
    }
    Translation {
        kind,
        regex,
        pattern,
    }
}

impl Translation<'_> {
    /// `exception`: pruning asks exceptions (only)
    /// [`Pattern::may_match_with_prefix`], so they get a prefix DFA.
    fn into_matcher(self, exception: bool) -> Result<Matcher, String> {
        let bytes = self.pattern.as_bytes();
        Ok(match self.kind {
            MatchKind::Exact => Matcher::Exact,
            MatchKind::Prefix => Matcher::Prefix(bytes[..bytes.len().saturating_sub(2)].into()),
            MatchKind::Suffix => Matcher::Suffix(bytes.get(2..).unwrap_or_default().into()),
            MatchKind::Regex => {
                Matcher::Regex(GoRegex::compile(&self.regex, exception).map_err(|e| {
                    format!(
                        "Docker translates it to the regular expression `{}`, which {e}",
                        self.regex
                    )
                })?)
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Go's regexp on regex-automata
// ---------------------------------------------------------------------------

/// A translated pattern, compiled once with `regex-automata` and searched
/// like Go's `Regexp.MatchString`.
///
/// Go and `regex-syntax` agree on how to read most of what `translate` can
/// emit, and on what it matches: `.` and classes match one code point
/// (`?` matches `☺`), `^` and `$` anchor to the whole text, and `*`, `?`,
/// `{n,m}`, `|` and groups mean the same. [`go_to_regex_syntax`] rewrites the
/// rest, where the two dialects differ, before `regex-syntax` parses it.
#[derive(Debug, Clone)]
struct GoRegex {
    regex: meta::Regex,
    /// An anchored DFA that tells whether a match could still start with a
    /// given text (for pruning). Only built for exceptions whose every match
    /// starts at offset 0, and `None` when that DFA would be too large; then
    /// pruning assumes a match is possible.
    prefix_dfa: Option<Box<dense::DFA<Vec<u32>>>>,
    /// For `^...$` expressions whose every match holds the same number of
    /// `/`, that number: then only one of a path and its parents can match.
    slashes: Option<usize>,
}

/// Memory cap for one pruning DFA; past it, a pattern is just not pruned on.
const PREFIX_DFA_LIMIT: usize = 1 << 20;

impl GoRegex {
    /// Compile Go regexp text; `for_pruning` also builds the prefix DFA.
    fn compile(go: &str, for_pruning: bool) -> Result<Self, String> {
        let syntax = go_to_regex_syntax(go)?;
        let ast = ast::parse::Parser::new()
            .parse(&syntax)
            .map_err(|e| format!("is invalid: {}", e.kind()))?;
        if !repeats_are_valid(&ast) {
            return Err("has an invalid repeat count".into());
        }
        let hir = Translator::new()
            .translate(&syntax, &ast)
            .map_err(|e| format!("is invalid: {}", e.kind()))?;
        let regex = meta::Regex::builder()
            .build_from_hir(&hir)
            .map_err(|e| format!("cannot be compiled: {e}"))?;
        let props = hir.properties();
        let starts_at_zero = props.look_set_prefix().contains(Look::Start);
        let whole_text = starts_at_zero && props.look_set_suffix().contains(Look::End);
        Ok(Self {
            regex,
            prefix_dfa: if for_pruning && starts_at_zero {
                prefix_dfa(&hir)
            } else {
                None
            },
            slashes: if whole_text { slash_count(&hir) } else { None },
        })
    }

    /// Go's `Regexp.MatchString`.
    fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }

    /// Could this expression match some string that starts with `prefix`?
    /// Conservative: true unless provably impossible.
    fn may_match_with_prefix(&self, prefix: &str) -> bool {
        let Some(dfa) = &self.prefix_dfa else {
            return true;
        };
        let input = Input::new(prefix).anchored(Anchored::Yes);
        let Ok(mut state) = dfa.start_state_forward(&input) else {
            return true;
        };
        for &byte in prefix.as_bytes() {
            state = dfa.next_state(state, byte);
            if dfa.is_match_state(state) {
                return true; // a match ends inside `prefix`
            }
            if dfa.is_dead_state(state) {
                return false;
            }
        }
        true
    }
}

/// The DFA behind [`GoRegex::may_match_with_prefix`]: anchored at offset 0,
/// and reporting every match (not leftmost-first), so that a state is dead
/// only when no continuation of the text can match.
fn prefix_dfa(hir: &Hir) -> Option<Box<dense::DFA<Vec<u32>>>> {
    let nfa = thompson::Compiler::new()
        .configure(thompson::Config::new().which_captures(WhichCaptures::None))
        .build_from_hir(hir)
        .ok()?;
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(regex_automata::MatchKind::All)
                .start_kind(StartKind::Anchored)
                .determinize_size_limit(Some(PREFIX_DFA_LIMIT))
                .dfa_size_limit(Some(PREFIX_DFA_LIMIT)),
        )
        .build_from_nfa(&nfa)
        .ok()
        .map(Box::new)
}

/// The number of `/` in every string `hir` matches, when it is fixed.
fn slash_count(hir: &Hir) -> Option<usize> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(0),
        HirKind::Literal(literal) => Some(literal.0.iter().filter(|&&b| b == b'/').count()),
        HirKind::Class(Class::Unicode(class)) => {
            let slash = class
                .ranges()
                .iter()
                .any(|r| r.start() <= '/' && '/' <= r.end());
            (!slash).then_some(0)
        }
        HirKind::Class(Class::Bytes(class)) => {
            let slash = class
                .ranges()
                .iter()
                .any(|r| r.start() <= b'/' && b'/' <= r.end());
            (!slash).then_some(0)
        }
        HirKind::Repetition(rep) => match slash_count(&rep.sub)? {
            0 => Some(0),
            k if rep.max == Some(rep.min) => k.checked_mul(usize::try_from(rep.min).ok()?),
            _ => None,
        },
        HirKind::Capture(capture) => slash_count(&capture.sub),
        HirKind::Concat(subs) => subs
            .iter()
            .try_fold(0usize, |sum, sub| sum.checked_add(slash_count(sub)?)),
        HirKind::Alternation(subs) => {
            let first = slash_count(subs.first()?)?;
            subs[1..]
                .iter()
                .all(|sub| slash_count(sub) == Some(first))
                .then_some(first)
        }
    }
}

/// Go's parser checks each counted repetition with a bound of 2 or more
/// (`x{2}`, `x{0,5}`) with `repeatIsValid(re, 1000)`; `regex-syntax` has no
/// such limit.
fn repeats_are_valid(ast: &Ast) -> bool {
    match ast {
        Ast::Repetition(rep) => {
            let checked = counted_bounds(rep).is_some_and(|(min, max)| min >= 2 || max >= Some(2));
            (!checked || repeat_is_valid(ast, 1000)) && repeats_are_valid(&rep.ast)
        }
        Ast::Group(group) => repeats_are_valid(&group.ast),
        Ast::Concat(concat) => concat.asts.iter().all(repeats_are_valid),
        Ast::Alternation(alt) => alt.asts.iter().all(repeats_are_valid),
        _ => true,
    }
}

/// `(min, max)` of a counted repetition (`max: None` is unbounded); `None`
/// for `*`, `+` and `?`.
fn counted_bounds(rep: &ast::Repetition) -> Option<(u32, Option<u32>)> {
    match &rep.op.kind {
        RepetitionKind::Range(RepetitionRange::Exactly(n)) => Some((*n, Some(*n))),
        RepetitionKind::Range(RepetitionRange::AtLeast(n)) => Some((*n, None)),
        RepetitionKind::Range(RepetitionRange::Bounded(min, max)) => Some((*min, Some(*max))),
        _ => None,
    }
}

/// Go's `repeatIsValid`: nested counted repetitions may not produce more
/// than `n` copies of the innermost expression.
fn repeat_is_valid(ast: &Ast, mut n: u32) -> bool {
    match ast {
        Ast::Repetition(rep) => {
            if let Some((min, max)) = counted_bounds(rep) {
                let m = match max {
                    Some(0) => return true,
                    Some(max) => max,
                    None => min,
                };
                if m > n {
                    return false;
                }
                if let Some(q) = n.checked_div(m) {
                    n = q;
                }
            }
            repeat_is_valid(&rep.ast, n)
        }
        Ast::Group(group) => repeat_is_valid(&group.ast, n),
        Ast::Concat(concat) => concat.asts.iter().all(|a| repeat_is_valid(a, n)),
        Ast::Alternation(alt) => alt.asts.iter().all(|a| repeat_is_valid(a, n)),
        _ => true,
    }
}

/// Rewrite Go regexp text into `regex-syntax` text with the same meaning.
///
/// Where the dialects differ, Go's reading wins:
/// * `\d \s \w` and `\b \B` are ASCII-only in Go (Unicode in `regex-syntax`);
/// * in brackets, `[`, `&&`, `--` and `~~` are plain characters in Go (nested
///   classes and set operations in `regex-syntax`), so every member of a
///   class is written out again, escaped;
/// * a `{` that does not start `{n}`, `{n,}` or `{n,m}` (no leading zeros) is
///   a literal in Go, and counts over 1000 are errors;
/// * `\Q...\E` quotes text, and an escaped punctuation mark such as `\<` is
///   that mark;
/// * a repetition operator may not follow another one (`a**`, `x{2}{3}`).
///
/// Grouping, alternation, repetition, `.`, `^`, `$`, missing operands and
/// reversed ranges read the same and are left to `regex-syntax`. Unicode
/// classes (`\pL`) and flag groups (`(?i)`) are refused: `translate` never
/// emits `(?`, and Go's Unicode tables differ from `regex-syntax`'s.
fn go_to_regex_syntax(go: &str) -> Result<String, String> {
    let chars: Vec<char> = go.chars().collect();
    let mut rewriter = GoSyntax {
        s: &chars,
        i: 0,
        out: String::with_capacity(go.len() * 2),
    };
    rewriter.rewrite()?;
    Ok(rewriter.out)
}

/// A class that matches nothing: what Go makes of a surrogate code point
/// such as `\x{D800}`, which no (UTF-8) path can contain.
const NOTHING: &str = r"[^\x{0}-\x{10FFFF}]";

const SURROGATES: std::ops::RangeInclusive<u32> = 0xD800..=0xDFFF;

/// The ASCII classes Go and `regex-syntax` both know as `[:name:]`, with the
/// same members.
const POSIX_CLASSES: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// `\d \s \w` (upper case negates): Go's ASCII members, as class contents.
fn perl_class(c: char) -> Option<(&'static str, bool)> {
    let members = match c.to_ascii_lowercase() {
        'd' => "0-9",
        's' => r"\t\n\f\r ",
        'w' => "0-9A-Za-z_",
        _ => return None,
    };
    Some((members, c.is_ascii_uppercase()))
}

fn unicode_class_refused() -> String {
    "uses a Unicode class (`\\p`), which is not supported".into()
}

/// Append the code point `c` as a `regex-syntax` literal.
fn push_literal(out: &mut String, c: u32) {
    match char::from_u32(c) {
        Some(c) if c.is_control() => out.push_str(&format!("\\x{{{:X}}}", u32::from(c))),
        Some(c) => regex_syntax::escape_into(c.encode_utf8(&mut [0; 4]), out),
        None => out.push_str(NOTHING),
    }
}

/// Append the class member `lo-hi` (code points, `lo <= hi`), leaving out
/// surrogates as Go's matcher effectively does.
fn push_class_range(out: &mut String, lo: u32, hi: u32) {
    let lo = if SURROGATES.contains(&lo) { 0xE000 } else { lo };
    let hi = if SURROGATES.contains(&hi) { 0xD7FF } else { hi };
    if lo > hi {
        out.push_str(NOTHING);
        return;
    }
    push_literal(out, lo);
    if hi != lo {
        out.push('-');
        push_literal(out, hi);
    }
}

/// The state of [`go_to_regex_syntax`]: Go text as characters, the read
/// position, and the `regex-syntax` text written so far.
struct GoSyntax<'a> {
    s: &'a [char],
    i: usize,
    out: String,
}

impl GoSyntax<'_> {
    fn peek(&self) -> Option<char> {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn rewrite(&mut self) -> Result<(), String> {
        let mut after_repeat = false;
        while let Some(c) = self.peek() {
            let mut repeat = false;
            match c {
                '*' | '+' | '?' => {
                    self.i += 1;
                    self.push_repeat(&c.to_string(), after_repeat)?;
                    repeat = true;
                }
                '{' => {
                    if let Some((op, len)) = self.repeat_counts()? {
                        self.i += len;
                        self.push_repeat(&op, after_repeat)?;
                        repeat = true;
                    } else {
                        self.i += 1;
                        self.out.push_str(r"\{");
                    }
                }
                '}' | ']' => {
                    self.i += 1;
                    self.out.push('\\');
                    self.out.push(c);
                }
                '(' if self.peek_at(1) == Some('?') => {
                    return Err("uses an unsupported group flag".into());
                }
                '[' => self.class()?,
                '\\' => self.top_escape()?,
                // `( ) | ^ $ .` and ordinary characters read the same.
                _ => {
                    self.i += 1;
                    self.out.push(c);
                }
            }
            after_repeat = repeat;
        }
        Ok(())
    }

    /// Write a repetition operator (already consumed) and its lazy `?`, with
    /// Go's refusal of stacked operators. A missing operand is left to
    /// `regex-syntax`, which refuses it too.
    fn push_repeat(&mut self, op: &str, after_repeat: bool) -> Result<(), String> {
        if after_repeat {
            return Err("has an invalid nested repetition operator".into());
        }
        self.out.push_str(op);
        if self.peek() == Some('?') {
            self.i += 1;
            self.out.push('?');
        }
        Ok(())
    }

    /// Go's `parseRepeat` at a `{`: `Ok(Some((operator, length)))` for
    /// `{n}`, `{n,}` or `{n,m}`, `Ok(None)` when the text is not of that
    /// form (the brace is then literal), an error for counts over 1000 or
    /// `min > max`.
    fn repeat_counts(&self) -> Result<Option<(String, usize)>, String> {
        let mut pos = self.i + 1;
        let Some((min, after)) = self.parse_int(pos) else {
            return Ok(None);
        };
        pos = after;
        let max = match self.s.get(pos) {
            None => return Ok(None),
            Some(',') => {
                pos += 1;
                match self.s.get(pos) {
                    None => return Ok(None),
                    Some('}') => None,
                    Some(_) => {
                        let Some((max, after)) = self.parse_int(pos) else {
                            return Ok(None);
                        };
                        pos = after;
                        Some(max)
                    }
                }
            }
            Some(_) => Some(min),
        };
        if self.s.get(pos) != Some(&'}') {
            return Ok(None);
        }
        let too_big = |n: Option<u32>| n.is_none_or(|n| n > 1000);
        if too_big(min)
            || max.is_some_and(too_big)
            || matches!((min, max), (Some(lo), Some(Some(hi))) if lo > hi)
        {
            return Err("has an invalid repeat count".into());
        }
        let min = min.unwrap_or_default();
        let op = match max.map(Option::unwrap_or_default) {
            None => format!("{{{min},}}"),
            Some(max) if max == min => format!("{{{min}}}"),
            Some(max) => format!("{{{min},{max}}}"),
        };
        Ok(Some((op, pos + 1 - self.i)))
    }

    /// Go's `parseInt` for repeat counts: decimal without leading zeros;
    /// `Some((None, _))` when the number is too large.
    fn parse_int(&self, start: usize) -> Option<(Option<u32>, usize)> {
        let digits = self.s.get(start..)?;
        let len = digits.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 || (len >= 2 && digits[0] == '0') {
            return None;
        }
        let mut value: Option<u32> = Some(0);
        for d in &digits[..len] {
            value = value
                .filter(|v| *v < 100_000_000)
                .map(|v| v * 10 + d.to_digit(10).unwrap_or_default());
        }
        Some((value, start + len))
    }

    /// A backslash outside a bracket expression.
    fn top_escape(&mut self) -> Result<(), String> {
        let Some(c) = self.peek_at(1) else {
            return Err("ends with a trailing backslash".into());
        };
        match c {
            'A' | 'z' => {
                self.i += 2;
                self.out.push('\\');
                self.out.push(c);
            }
            'b' | 'B' => {
                self.i += 2;
                self.out
                    .push_str(if c == 'b' { r"(?-u:\b)" } else { r"(?-u:\B)" });
            }
            'Q' => {
                // \Q...\E: everything up to \E (or the end) is literal.
                self.i += 2;
                let rest = &self.s[self.i..];
                let end = rest.windows(2).position(|w| w == ['\\', 'E']);
                for &q in &rest[..end.unwrap_or(rest.len())] {
                    push_literal(&mut self.out, u32::from(q));
                }
                self.i += end.map_or(rest.len(), |e| e + 2);
            }
            'p' | 'P' => return Err(unicode_class_refused()),
            'C' => return Err("uses the invalid escape `\\C`".into()),
            _ => {
                if let Some((members, negated)) = perl_class(c) {
                    self.i += 2;
                    self.push_perl_class(members, negated);
                } else {
                    let literal = self.parse_escape()?;
                    push_literal(&mut self.out, literal);
                }
            }
        }
        Ok(())
    }

    fn push_perl_class(&mut self, members: &str, negated: bool) {
        self.out.push_str(if negated { "[^" } else { "[" });
        self.out.push_str(members);
        self.out.push(']');
    }

    /// Go's `parseEscape`: `self.i` is at the backslash.
    fn parse_escape(&mut self) -> Result<u32, String> {
        self.i += 1;
        let Some(c) = self.peek() else {
            return Err("ends with a trailing backslash".into());
        };
        self.i += 1;
        let invalid = || format!("has an invalid escape sequence `\\{c}`");
        let is_octal = |c: Option<char>| matches!(c, Some('0'..='7'));
        match c {
            '1'..='7' if !is_octal(self.peek()) => Err(invalid()),
            '0'..='7' => {
                let mut r = u32::from(c) - u32::from('0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            r = r * 8 + (u32::from(d) - u32::from('0'));
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                Ok(r)
            }
            'x' => {
                let first = self.peek().ok_or_else(invalid)?;
                self.i += 1;
                if first == '{' {
                    let mut r = 0u32;
                    let mut digits = 0;
                    loop {
                        let d = self.peek().ok_or_else(invalid)?;
                        self.i += 1;
                        if d == '}' {
                            break;
                        }
                        r = r * 16 + d.to_digit(16).ok_or_else(invalid)?;
                        if r > u32::from(char::MAX) {
                            return Err(invalid());
                        }
                        digits += 1;
                    }
                    if digits == 0 {
                        return Err(invalid());
                    }
                    Ok(r)
                } else {
                    let hi = first.to_digit(16);
                    let lo = self.peek().and_then(|d| d.to_digit(16));
                    if lo.is_some() {
                        self.i += 1;
                    }
                    match (hi, lo) {
                        (Some(hi), Some(lo)) => Ok(hi * 16 + lo),
                        _ => Err(invalid()),
                    }
                }
            }
            'a' => Ok(0x07),
            'f' => Ok(0x0C),
            'n' => Ok(0x0A),
            'r' => Ok(0x0D),
            't' => Ok(0x09),
            'v' => Ok(0x0B),
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(u32::from(c)),
            _ => Err(invalid()),
        }
    }

    /// Go's `parseClass`: `self.i` is at the `[`. Writes the class with every
    /// member escaped.
    fn class(&mut self) -> Result<(), String> {
        self.i += 1;
        self.out.push('[');
        if self.peek() == Some('^') {
            self.i += 1;
            self.out.push('^');
        }
        let mut first = true;
        loop {
            match self.peek() {
                None => return Err("has a missing closing ]".into()),
                Some(']') if !first => {
                    self.i += 1;
                    self.out.push(']');
                    return Ok(());
                }
                _ => {}
            }
            first = false;
            if self.posix_class()? {
                continue;
            }
            if self.peek() == Some('\\') {
                match self.peek_at(1) {
                    Some('p' | 'P') => return Err(unicode_class_refused()),
                    Some(c) => {
                        if let Some((members, negated)) = perl_class(c) {
                            // A nested class: `regex-syntax` takes the union.
                            self.i += 2;
                            self.push_perl_class(members, negated);
                            continue;
                        }
                    }
                    None => {}
                }
            }
            let lo = self.class_char()?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.i += 1;
                hi = self.class_char()?;
                if hi < lo {
                    return Err("has an invalid character class range (end before start)".into());
                }
            }
            push_class_range(&mut self.out, lo, hi);
        }
    }

    /// Go's `parseNamedClass`: at `[:`, when a `:]` follows somewhere, the
    /// text up to it must name a POSIX class. Writes it and returns true, or
    /// returns false when this is not a named class.
    fn posix_class(&mut self) -> Result<bool, String> {
        if self.peek() != Some('[') || self.peek_at(1) != Some(':') || self.peek_at(2).is_none() {
            return Ok(false);
        }
        let tail = &self.s[self.i + 2..];
        let Some(pos) = tail.windows(2).position(|w| w == [':', ']']) else {
            return Ok(false);
        };
        let end = self.i + 2 + pos + 2;
        let name: String = self.s[self.i..end].iter().collect();
        let bare = name
            .strip_prefix("[:")
            .map(|n| n.strip_prefix('^').unwrap_or(n))
            .and_then(|n| n.strip_suffix(":]"));
        if !bare.is_some_and(|n| POSIX_CLASSES.contains(&n)) {
            return Err(format!("has an invalid character class `{name}`"));
        }
        self.out.push_str(&name);
        self.i = end;
        Ok(true)
    }

    /// Go's `parseClassChar`.
    fn class_char(&mut self) -> Result<u32, String> {
        match self.peek() {
            None => Err("has a missing closing ]".into()),
            Some('\\') => self.parse_escape(),
            Some(c) => {
                self.i += 1;
                Ok(u32::from(c))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        match DockerIgnore::parse(text) {
            Ok(ig) => ig,
            Err(e) => panic!("parse({text:?}) failed: {e}"),
        }
    }

    /// Each case: the .dockerignore text and (path, excluded?) expectations.
    fn check_table(cases: &[(&str, &[(&str, bool)])]) {
        for (text, expectations) in cases {
            let ig = ignore(text);
            for (path, want) in *expectations {
                assert_eq!(
                    ig.is_excluded(path),
                    *want,
                    ".dockerignore {text:?}: is_excluded({path:?}) should be {want}"
                );
            }
        }
    }

    fn parse_error(text: &str) -> (usize, String, String) {
        match DockerIgnore::parse(text) {
            Ok(ig) => panic!("parse({text:?}) should fail, got {ig:?}"),
            Err(IgnoreError::InvalidPattern {
                line,
                pattern,
                reason,
            }) => (line, pattern, reason),
        }
    }

    #[test]
    fn comments_and_blank_lines() {
        check_table(&[
            (
                "# a comment\n\n   \n\t\nfoo\n#bar\n",
                &[
                    ("foo", true),
                    ("bar", false),
                    ("#bar", false),
                    ("# a comment", false),
                ],
            ),
            // Only a `#` in the first column starts a comment.
            (
                "  # not a comment",
                &[("# not a comment", true), ("x", false)],
            ),
            (
                "  spaced.txt  \t",
                &[("spaced.txt", true), ("  spaced.txt", false)],
            ),
        ]);
        assert!(ignore("# only\n\n  \n# comments").is_empty());
        assert!(ignore("").is_empty());
        assert!(DockerIgnore::default().is_empty());
        assert!(!ignore("foo").is_empty());
        assert!(!DockerIgnore::default().is_excluded("anything"));
    }

    #[test]
    fn bom_and_crlf() {
        check_table(&[(
            "\u{feff}first\r\nsecond\r\n# c\r\n!second/keep\r\n",
            &[
                ("first", true),
                ("second/x", true),
                ("second/keep", false),
                ("\u{feff}first", false),
            ],
        )]);
    }

    #[test]
    fn star_does_not_cross_directories() {
        check_table(&[
            (
                "*.md",
                &[
                    ("README.md", true),
                    ("a.md", true),
                    (".md", true),
                    ("docs/README.md", false),
                    ("README.mdx", false),
                    ("README.txt", false),
                    // parent directory named like a markdown file
                    ("notes.md/inner.txt", true),
                ],
            ),
            (
                "*/temp*",
                &[
                    ("somedir/temporary.txt", true),
                    ("somedir/temp", true),
                    ("temp", false),
                    ("a/b/temp", false),
                ],
            ),
            ("*/*/temp*", &[("a/b/temp.x", true), ("a/temp.x", false)]),
            (
                "*",
                &[("anything", true), ("a/b/c", true), (".hidden", true)],
            ),
        ]);
    }

    #[test]
    fn double_star_patterns() {
        check_table(&[
            (
                "**/*.log",
                &[
                    ("a.log", true),
                    ("x/a.log", true),
                    ("x/y/z/a.log", true),
                    ("a.log.txt", false),
                    ("x/alog", false),
                ],
            ),
            (
                "docs/**",
                &[
                    // `docs/**` is a prefix match on "docs/": the directory
                    // itself stays in the context (empty), like Docker.
                    ("docs", false),
                    ("docs/a", true),
                    ("docs/a/b.md", true),
                    ("docsx/a", false),
                    ("x/docs/a", false),
                ],
            ),
            (
                "**",
                &[("a", true), ("a/b", true), (".git", true), ("x/y/z", true)],
            ),
            (
                "**/dir",
                &[
                    ("dir", true),
                    ("a/dir", true),
                    ("a/dir/file", true),
                    ("adir", false),
                ],
            ),
            (
                "**/dir2/*",
                &[
                    ("dir/dir2/file", true),
                    ("dir2/file", true),
                    ("dir/dir2", false),
                ],
            ),
            (
                "**/foo/bar",
                &[
                    ("foo/bar", true),
                    ("a/b/foo/bar", true),
                    ("afoo/bar", false),
                ],
            ),
            (
                "a**/*.txt",
                &[
                    ("a/f.txt", true),
                    ("a/b/c/f.txt", true),
                    ("ab/f.txt", true),
                    ("b/f.txt", false),
                ],
            ),
            (
                "**/**/*.txt",
                &[("f.txt", true), ("a/b/f.txt", true), ("a/b/f.txt2", false)],
            ),
            // `**` inside a segment may match zero or more whole directories.
            ("a**b", &[("ab", true), ("a/x/b", true), ("axb", false)]),
            // Docker quirk: a leading `**` followed by plain text is a raw
            // suffix comparison, so `**file` also matches `myfile`.
            (
                "**file",
                &[
                    ("file", true),
                    ("dir/file", true),
                    ("myfile", true),
                    ("file2", false),
                ],
            ),
            (
                "**/.foo",
                &[(".foo", true), ("a/.foo", true), ("bar.foo", false)],
            ),
        ]);
    }

    #[test]
    fn root_is_never_excluded() {
        let ig = ignore("**\n*\n.");
        assert!(!ig.is_excluded(""));
        assert!(!ig.is_excluded("."));
        assert!(!ig.is_excluded("./"));
        assert!(ig.is_excluded("x"));
    }

    #[test]
    fn exceptions_and_order() {
        check_table(&[
            (
                "*.md\n!README.md",
                &[
                    ("README.md", false),
                    ("CHANGES.md", true),
                    ("docs/README.md", false),
                ],
            ),
            (
                "*.md\n!README*.md\nREADME-secret.md",
                &[
                    ("README.md", false),
                    ("README-secret.md", true),
                    ("other.md", true),
                ],
            ),
            // The last matching pattern wins.
            ("*.md\n!README.md\nREADME.md", &[("README.md", true)]),
            ("!README.md\n*.md", &[("README.md", true)]),
            (
                "docs\n!docs/keep.md",
                &[
                    ("docs", true),
                    ("docs/keep.md", false),
                    ("docs/other.md", true),
                ],
            ),
            ("!docs/keep.md\ndocs", &[("docs/keep.md", true)]),
            // An exception for a directory re-includes everything below it.
            (
                "**\n!util/docker/web",
                &[
                    ("util/docker/web/foo", false),
                    ("util/docker", true),
                    ("other", true),
                ],
            ),
            (
                "**\n!util/docker/web\nutil/docker/web/foo",
                &[("util/docker/web/foo", true)],
            ),
            (
                "**\n!dist/*.whl",
                &[("dist/a-1.0+g08-py3.whl", false), ("dist/a.tar", true)],
            ),
            // Whitespace after `!` is trimmed, and `!!x` is an exception for `!x`.
            ("*\n!   keep", &[("keep", false), ("other", true)]),
            ("*\n!!bang", &[("!bang", false), ("bang", true)]),
        ]);
        assert!(ignore("a\n!b").has_exceptions());
        assert!(!ignore("a\nb").has_exceptions());
    }

    /// Docker's walkers (`MatchesUsingParentResults` down the tree) differ
    /// from `MatchesOrParentMatches` when an exception names a directory
    /// that was not excluded when the walk reached it.
    #[test]
    fn walk_semantics_match_docker_builders() {
        check_table(&[
            (
                "**/*.md\n!docs",
                &[
                    ("docs", false),
                    ("docs/x.md", true),
                    ("docs/x.txt", false),
                    ("x.md", true),
                ],
            ),
            ("a/*\n!a", &[("a", false), ("a/b", true), ("a/b/c", true)]),
            // When the directory itself was excluded, the exception is tried
            // on it and re-includes everything below.
            ("docs\n!docs", &[("docs", false), ("docs/x.md", false)]),
            (
                "*\n!docs",
                &[("docs", false), ("docs/x.md", false), ("other/x", true)],
            ),
        ]);
    }

    #[test]
    fn leading_slash_and_cleaning() {
        check_table(&[
            (
                "/foo",
                &[("foo", true), ("foo/bar", true), ("x/foo", false)],
            ),
            ("/foo/bar", &[("foo/bar", true), ("foo", false)]),
            ("./foo", &[("foo", true), ("x/foo", false)]),
            ("foo/", &[("foo", true), ("foo/x", true), ("foox", false)]),
            ("foo//bar/./baz", &[("foo/bar/baz", true)]),
            ("foo/../bar", &[("bar", true), ("foo", false)]),
            ("//abs/../x", &[("x", true)]),
            ("!/docs\n*", &[("docs", true)]),
            (
                "*\n!/docs",
                &[("docs", false), ("docs/a", false), ("x", true)],
            ),
            // `.` and `/` survive cleaning but can never match a relative path.
            (".", &[("a", false), (".", false)]),
            ("/", &[("a", false), ("b/c", false)]),
            ("./", &[("a", false)]),
        ]);
        // Caller paths are cleaned too.
        let ig = ignore("foo/bar");
        assert!(ig.is_excluded("./foo/bar"));
        assert!(ig.is_excluded("foo//bar/"));
        assert!(ig.is_excluded("/foo/bar"));
        assert!(ig.is_excluded("foo/x/../bar/baz"));
    }

    #[test]
    fn parent_directory_matching() {
        check_table(&[
            (
                "build",
                &[
                    ("build", true),
                    ("build/a/b.txt", true),
                    ("build.txt", false),
                    ("rebuild", false),
                    ("src/build", false),
                    ("src/build/x", false),
                ],
            ),
            (
                "a/b",
                &[
                    ("a/b", true),
                    ("a/b/c/d", true),
                    ("a", false),
                    ("x/a/b", false),
                ],
            ),
            (
                "a/*/c",
                &[("a/b/c", true), ("a/b/c/d", true), ("a/b/x/c", false)],
            ),
        ]);
    }

    #[test]
    fn question_mark_and_classes() {
        check_table(&[
            (
                "temp?",
                &[
                    ("tempa", true),
                    ("temp.", true),
                    ("temp", false),
                    ("tempab", false),
                    ("temp/", false),
                ],
            ),
            ("a?b", &[("a☺b", true), ("a/b", false)]),
            (
                "[abc].txt",
                &[("a.txt", true), ("c.txt", true), ("d.txt", false)],
            ),
            (
                "[a-c].txt",
                &[("b.txt", true), ("d.txt", false), ("-.txt", false)],
            ),
            ("[^a-c].txt", &[("d.txt", true), ("b.txt", false)]),
            // Only `^` negates: `[!a]` is the set {'!', 'a'}, as in Docker.
            (
                "[!a].txt",
                &[("!.txt", true), ("a.txt", true), ("b.txt", false)],
            ),
            ("[a-ζ]*", &[("α", true), ("A", false)]),
            ("a[^a]b", &[("a☺b", true), ("aab", false)]),
            (r"[\]a]", &[("]", true), ("a", true), ("b", false)]),
            (r"[x\-]", &[("x", true), ("-", true), ("z", false)]),
            (r"[\-x]", &[("x", true), ("-", true), ("a", false)]),
            ("ab[^b-d]", &[("abe", true), ("abc", false)]),
        ]);
    }

    #[test]
    fn escaped_characters() {
        check_table(&[
            (r"\*.txt", &[("*.txt", true), ("a.txt", false)]),
            (r"foo\?", &[("foo?", true), ("fooa", false)]),
            (r"\[x\]", &[("[x]", true), ("x", false)]),
            (r"a\\", &[("a\\", true), ("a", false)]),
            (r"a\*b", &[("a*b", true), ("ab", false), ("axb", false)]),
            // Regexp metacharacters are literal in patterns.
            ("a.|)$(}+{bc", &[("a.|)$(}+{bc", true), ("a", false)]),
            ("a(b)c/def", &[("a(b)c/def", true), ("a(b)c/xyz", false)]),
            ("abc.def", &[("abc.def", true), ("abcZdef", false)]),
            (".*", &[(".foo", true), ("foo", false)]),
            ("v1.2*", &[("v1.2.3", true), ("v1x2", false)]),
        ]);
    }

    #[test]
    fn docker_regexp_quirks() {
        check_table(&[
            // `\d` reaches Go's regexp as a digit class.
            (r"file\d", &[("file7", true), ("filed", false)]),
            (r"\x41*", &[("ABC", true), ("x41", false)]),
            // A POSIX class inside brackets is honoured by the regexp (Go's
            // filepath.Match would read `[[:digit:]` + `]` and match "d]").
            ("[[:digit:]]", &[("1", true), ("1]", false), ("d]", false)]),
            // `^` is not escaped: in a regexp pattern it is a start anchor...
            ("^foo*", &[("foobar", true), ("^foobar", false)]),
            // ...while a pattern without wildcards is compared literally.
            ("^foo", &[("^foo", true), ("foo", false)]),
            // `|`, `{` and `}` reach the regexp unescaped.
            (
                "a|b*",
                &[
                    ("apple", true),
                    ("a/x", true),
                    ("xb", true),
                    ("x/by", true),
                    ("c", false),
                ],
            ),
            (
                "x{2}*",
                &[("xx", true), ("xxyz", true), ("x", false), ("x{2}", false)],
            ),
            ("x{2}", &[("x{2}", true), ("xx", false)]),
            ("*.{js,ts}", &[("a.{js,ts}", true), ("a.js", false)]),
            ("x{,2}*", &[("x{,2}", true), ("xx", false)]),
        ]);
    }

    #[test]
    fn translation_matches_patternmatcher() {
        let cases = [
            ("*", MatchKind::Regex, "^[^/]*$"),
            ("file*", MatchKind::Regex, "^file[^/]*$"),
            ("a*/b", MatchKind::Regex, "^a[^/]*/b$"),
            ("**", MatchKind::Suffix, ""),
            ("**/**", MatchKind::Regex, "^(.*/)?.*$"),
            ("dir/**", MatchKind::Prefix, ""),
            ("**/dir", MatchKind::Suffix, ""),
            ("**/dir2/*", MatchKind::Regex, "^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", MatchKind::Regex, "^(.*/)?dir2/.*$"),
            ("**file", MatchKind::Suffix, ""),
            ("**/**/*.txt", MatchKind::Regex, r"^(.*/)?(.*/)?[^/]*\.txt$"),
            ("a[b-d]e", MatchKind::Regex, "^a[b-d]e$"),
            (".*", MatchKind::Regex, r"^\.[^/]*$"),
            ("abc.def", MatchKind::Exact, ""),
            ("abc?def", MatchKind::Regex, "^abc[^/]def$"),
            ("a(b)c/def", MatchKind::Exact, ""),
            (r"a\*b", MatchKind::Regex, r"^a\*b$"),
        ];
        for (pattern, kind, regex) in cases {
            let t = translate(pattern);
            assert_eq!(t.kind, kind, "kind of {pattern:?}");
            if kind == MatchKind::Regex {
                assert_eq!(t.regex, regex, "regexp of {pattern:?}");
            }
        }
    }

    #[test]
    fn go_clean_matches_go() {
        let cases = [
            ("", "."),
            ("abc", "abc"),
            ("abc/", "abc"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("./abc", "abc"),
            ("/", "/"),
            ("//", "/"),
            ("/../a", "/a"),
            ("../../a", "../../a"),
            ("a/../../b", "../b"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/./../def", "def"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("..", ".."),
            ("!.", "!."),
            ("!/", "!"),
            ("/é//ü/", "/é/ü"),
        ];
        for (input, want) in cases {
            assert_eq!(go_clean(input), want, "Clean({input:?})");
        }
    }

    #[test]
    fn invalid_patterns_report_line_numbers() {
        let (line, pattern, reason) = parse_error("ok\n# comment\n\n  [abc  \n");
        assert_eq!(line, 4);
        assert_eq!(pattern, "[abc");
        assert!(reason.contains("unterminated"), "{reason}");

        let (line, _, reason) = parse_error("a\n!");
        assert_eq!(line, 2);
        assert!(reason.contains("exclusion"), "{reason}");
        assert_eq!(parse_error("!   ").0, 1);
        assert_eq!(parse_error("x\ny\n!/").0, 3);

        // Go filepath.Match syntax errors.
        for bad in [
            "[", "[^", "[^bc", "a[", "a/b[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "a\\", "[a-b-c]",
            "x/[a-*",
        ] {
            let (line, pattern, _) = parse_error(&format!("# header\n{bad}\n"));
            assert_eq!(line, 2, "{bad:?}");
            assert_eq!(pattern, bad);
        }
        // Valid for filepath.Match but rejected by Go's regexp at match time.
        for bad in [
            "[z-a]",
            "[Local-Only]/",
            r"\e",
            r"\pL*",
            "[[:nope:]]",
            "x{1001}*",
            "x{3,2}*",
            "*{2}",
        ] {
            let (line, _, reason) = parse_error(bad);
            assert_eq!(line, 1, "{bad:?}");
            assert!(reason.contains("regular expression"), "{bad:?}: {reason}");
        }
        let message = DockerIgnore::parse("[oops")
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            message,
            Err(".dockerignore line 1: invalid pattern `[oops`: unterminated character class `[oops`"
                .to_owned())
        );
    }

    #[test]
    fn valid_unusual_patterns_parse() {
        for ok in ["[*]", "[?]", r"[\]a]", "[[]", "a]b", "*x", "[^]]x]"] {
            // `[^]]x]` is rejected by Go's Match; keep the others.
            let result = DockerIgnore::parse(ok);
            if ok == "[^]]x]" {
                assert!(result.is_err(), "{ok:?}");
            } else {
                assert!(result.is_ok(), "{ok:?}: {result:?}");
            }
        }
        check_table(&[("a]b", &[("a]b", true)]), ("[[]", &[("[", true)])]);
    }

    #[test]
    fn may_reinclude_under_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("node_modules", "node_modules", false),
            ("node_modules", "node_modules/pkg", false),
            ("docs\n!docs/keep.md", "docs", true),
            ("docs\n!docs/keep.md\nnode_modules", "node_modules", false),
            ("!docs/keep.md\ndocs", "docs", false),
            ("node_modules\n!**/keep.txt", "node_modules", true),
            ("node_modules\n!*.md", "node_modules", false),
            ("node_modules\n!*/keep", "node_modules", true),
            ("node_modules\n!node_modules/foo*", "node_modules", true),
            ("node_modules\n!node_mod*.md", "node_modules", false),
            // The exception matches the directory itself, so it is not excluded.
            ("node_modules\n!node_mod*", "node_modules", true),
            ("node_modules\n!node_modules/**", "node_modules", true),
            ("node_modules\n!no**", "node_modules", true),
            ("node_modules\n!src/main.rs", "node_modules", false),
            ("**\n!src/main.rs", "src", true),
            ("**\n!src/main.rs", "target", false),
            ("vendor/\n!vendor/*/LICENSE", "vendor", true),
            ("vendor/\n!vendor/*/LICENSE", "vendor/pkg", true),
            ("vendor/\n!vendor/*/LICENSE", "vendor/pkg/sub", false),
            // Not excluded at all: walk it.
            ("node_modules", "src", true),
            ("*.md\n!README.md", "docs", true),
            // The root is always walked.
            ("**", "", true),
            ("**", ".", true),
        ];
        for (text, dir, want) in cases {
            assert_eq!(
                ignore(text).may_reinclude_under(dir),
                *want,
                ".dockerignore {text:?}: may_reinclude_under({dir:?})"
            );
        }
    }

    /// Pruning is sound: whenever a directory is excluded and
    /// `may_reinclude_under` says no, every path below it is excluded.
    #[test]
    fn pruning_never_hides_reincluded_files() {
        let files = [
            "**\n!src/main.rs",
            "node_modules\n!*.md",
            "node_modules\n!**/keep.txt",
            "node_modules\n!*/keep",
            "docs\n!docs/keep.md",
            "!docs/keep.md\ndocs",
            "a\n!a/*/c\na/b/c/d",
            "*\n!*/x*",
            "a/**\n!a/b",
            "a\n!a?b/c",
            "a\n![ab]/[bc]",
            "a\n!**c",
            "*/b\n!a/b/c*",
        ];
        let dirs = [
            "a",
            "a/b",
            "a/b/c",
            "docs",
            "node_modules",
            "node_modules/pkg",
            "src",
            "x",
        ];
        let leaves = [
            "c", "c/d", "keep", "keep.txt", "keep.md", "main.rs", "x1", "b/c", "bc",
        ];
        for text in files {
            let ig = ignore(text);
            for dir in dirs {
                if !ig.is_excluded(dir) || ig.may_reinclude_under(dir) {
                    continue;
                }
                for leaf in leaves {
                    let path = format!("{dir}/{leaf}");
                    assert!(
                        ig.is_excluded(&path),
                        ".dockerignore {text:?}: {dir:?} was pruned but {path:?} is included"
                    );
                }
            }
        }
    }

    #[test]
    fn regex_engine_basics() {
        let cases = [
            (r"^a(.*/)?b$", "ab", true),
            (r"^a(.*/)?b$", "a/x/y/b", true),
            (r"^a(.*/)?b$", "axb", false),
            (r"^.*$", "a\nb", false),
            (r"^[^/]*$", "a\nb", true),
            (r"^\bfoo\b", "foo.txt", true),
            (r"^\bfoo\b", "food", false),
            (r"^a\Q*.\E+$", "a*..", true),
            (r"^a\Q*.\E+$", "a*", false),
            (r"^a\Q*.\Eb+$", "a*.bbb", true),
            (r"^x\101$", "xA", true),
            (r"^[\d_]+$", "1_2", true),
            (r"^[[:^alpha:]]$", "1", true),
            (r"^[[:^alpha:]]$", "q", false),
            ("^a*$", "", true),
            ("a", "bab", true),
            ("^a|b$", "xb", true),
            ("^a|b$", "xa", false),
            ("^(a|bc)d$", "bcd", true),
            ("^x{2,3}$", "xxxx", false),
            ("^x{2,3}$", "xxx", true),
            ("^x{2,}$", "xxxxx", true),
            ("^x{0}y$", "y", true),
            ("^x{01}$", "x{01}", true),
            ("^{2}a", "a", true),
        ];
        for (re, text, want) in cases {
            let regex = match GoRegex::compile(re, false) {
                Ok(r) => r,
                Err(e) => panic!("{re:?}: {e}"),
            };
            assert_eq!(regex.is_match(text), want, "{re:?} on {text:?}");
        }
        for bad in [
            "a**",
            "*a",
            "(a",
            "a)",
            r"\8",
            r"[b-a]",
            "[a",
            r"\x4",
            "a|*",
            "x{1001}",
            "(x{100}){100}",
            "x{2}{3}",
        ] {
            assert!(
                GoRegex::compile(bad, false).is_err(),
                "{bad:?} should not compile"
            );
        }
    }
    /// Each place where Go's regexp syntax and `regex-syntax` read the same
    /// text differently, in Go's favour (see `go_to_regex_syntax`).
    #[test]
    fn go_dialect_where_regex_syntax_differs() {
        let cases = [
            // Perl classes and word boundaries are ASCII-only in Go.
            (r"^\s$", " ", true),
            (r"^\s$", "\u{b}", false),
            (r"^\d$", "\u{663}", false),
            (r"^\w$", "é", false),
            (r"^[\W]$", "é", true),
            (r"^a\bé$", "aé", true),
            (r"^é\Bé$", "éé", true),
            // In brackets, `[`, `&&`, `--`, `~~` are plain characters.
            ("^[[]$", "[", true),
            ("^[&&~~]$", "~", true),
            ("^[a[:digit:]]$", "7", true),
            // Escaped punctuation is itself; `\Q...\E` quotes.
            (r"^a\<\>$", "a<>", true),
            (r"^\Q[^/]*\E$", "[^/]*", true),
            // A `{` that is not a count is a literal.
            ("^a{,2}$", "a{,2}", true),
            ("^a{x}$", "a{x}", true),
            // Surrogates are accepted and never match.
            (r"^a\x{D800}?$", "a", true),
            (r"^[\x{D800}-\x{E000}]$", "\u{e000}", true),
            (r"^[^\x{DFFF}]$", "x", true),
            // regex-automata 0.4 panics on this one ("ReverseInner always
            // has a DFA") with `dfa-build` but not `hybrid`; `dfa-build` also
            // comes in through tracing-subscriber, so `hybrid` must stay on.
            (r"w{0} \D1[^/]*_", ".1 E", false),
        ];
        for (re, text, want) in cases {
            let regex = match GoRegex::compile(re, true) {
                Ok(r) => r,
                Err(e) => panic!("{re:?}: {e}"),
            };
            assert_eq!(regex.is_match(text), want, "{re:?} on {text:?}");
        }
        for bad in [
            r"^\1$", "^[a--b]$", "^a{2}*$", r"^\pL$", r"^[\pL]$", "^(?i)a$",
        ] {
            assert!(
                GoRegex::compile(bad, false).is_err(),
                "{bad:?} should not compile"
            );
        }
    }
}
