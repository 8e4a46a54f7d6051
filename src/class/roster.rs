//! Who the seats are for: `--seats N` (seats `1`..`N`) or a roster file (`--roster FILE`),
//! a CSV with a header row naming an `id` column and optionally `name` and `email` (other
//! columns, as an LMS export has, are ignored). Spreadsheet exports are taken as they come:
//! a UTF-8 byte-order mark, quoted fields with commas and quotes, CRLF line ends, blank lines,
//! and columns separated by `;` or tabs (as a spreadsheet in a language with decimal commas
//! saves "CSV", or as a copy of its cells is pasted). A file in another encoding than UTF-8
//! (UTF-16, Windows-1252) is refused with the line and the way to save it.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// The most seats one class may have (a room, not a campus).
pub const MAX_SEATS: usize = 500;
/// The longest seat id (it goes into container, volume and resource names).
const MAX_ID: usize = 20;

/// One seat: its id (`3`, `ann-lee`), and the student's name and email when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seat {
    pub id: String,
    pub student: Option<String>,
    pub email: Option<String>,
}

/// The seats of a class, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    pub seats: Vec<Seat>,
}

impl Roster {
    /// Seats `1`..=`n`.
    pub fn numbered(n: usize) -> Result<Roster> {
        if n == 0 || n > MAX_SEATS {
            return Err(Error::InvalidSetting {
                what: "--seats",
                value: n.to_string(),
                reason: format!("a class has 1 to {MAX_SEATS} seats"),
                hint: "give the number of students".into(),
            });
        }
        Ok(Roster {
            seats: (1..=n)
                .map(|i| Seat {
                    id: i.to_string(),
                    student: None,
                    email: None,
                })
                .collect(),
        })
    }

    /// Reads a roster file.
    pub fn from_file(path: &Path) -> Result<Roster> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        Roster::parse(path, &bytes)
    }

    /// Parses a roster's bytes (`path` names it in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Roster> {
        let fail = |line: Option<u64>, message: String, hint: &str| Error::Roster {
            path: path.to_path_buf(),
            line,
            message,
            hint: hint.to_string(),
        };
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        // UTF-16 with a byte-order mark, or without one (its ASCII has a NUL every other byte).
        if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") || bytes.contains(&0) {
            return Err(fail(
                Some(1),
                "the file is UTF-16 (as a spreadsheet's \"Unicode text\" saves it), not UTF-8"
                    .into(),
                SAVE_AS_UTF8,
            ));
        }
        if let Err(e) = std::str::from_utf8(bytes) {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            return Err(fail(
                u64::try_from(line).ok(),
                format!(
                    "byte 0x{:02X} is not UTF-8: the file was saved in another encoding (e.g. Windows-1252)",
                    bytes[at]
                ),
                SAVE_AS_UTF8,
            ));
        }
        let (delimiter, header_at) = delimiter(bytes);
        // The file's line of a line of the CSV (an Excel `sep=` line before it is skipped).
        let skipped = u64::try_from(bytes[..header_at].iter().filter(|b| **b == b'\n').count())
            .unwrap_or_default();
        let bytes = &bytes[header_at..];
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(bytes);
        let headers = reader
            .headers()
            .map_err(|e| {
                fail(
                    Some(1 + skipped),
                    format!("unreadable header: {e}"),
                    HEADER_HINT,
                )
            })?
            .clone();
        let column = |names: &[&str]| {
            headers
                .iter()
                .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
        };
        let Some(id_col) = column(&["id", "seat"]) else {
            return Err(fail(
                Some(1 + skipped),
                format!(
                    "the header row ({}) has no `id` column",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
                HEADER_HINT,
            ));
        };
        let name_col = column(&["name", "student"]);
        let email_col = column(&["email", "e-mail", "mail"]);
        let mut seats = Vec::new();
        let mut lines: HashMap<String, u64> = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map(|p| p.line() + skipped);
                fail(line, format!("unreadable row: {e}"), "check the row's quotes: a field with a comma or a quote is written \"like, this\" with quotes doubled (\"\")")
            })?;
            let line = record.position().map(|p| p.line() + skipped);
            let field = |col: Option<usize>| {
                col.and_then(|c| record.get(c))
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            // A row of empty cells (a spreadsheet's trailing rows) is no seat.
            if record.iter().all(str::is_empty) {
                continue;
            }
            let Some(id) = field(Some(id_col)) else {
                return Err(fail(
                    line,
                    "the row has no id".into(),
                    "give every student an id (a student number or a short name: lowercase letters, digits and dashes)",
                ));
            };
            check_id(&id)
                .map_err(|(reason, hint)| fail(line, format!("seat id `{id}` {reason}"), &hint))?;
            if let Some(first) = lines.get(&id) {
                return Err(fail(
                    line,
                    format!("seat id `{id}` is also on line {first}"),
                    "every seat needs its own id: fix or remove one of the two rows",
                ));
            }
            lines.insert(id.clone(), line.unwrap_or_default());
            seats.push(Seat {
                id,
                student: field(name_col),
                email: field(email_col),
            });
        }
        if seats.is_empty() {
            return Err(fail(None, "it lists no students".into(), HEADER_HINT));
        }
        if seats.len() > MAX_SEATS {
            return Err(fail(
                None,
                format!("it lists {} students, more than {MAX_SEATS}", seats.len()),
                "split the class into rosters of at most 500 (a class each)",
            ));
        }
        Ok(Roster { seats })
    }
}

const SAVE_AS_UTF8: &str =
    "save the roster as \"CSV UTF-8\" (Excel: File > Save As > CSV UTF-8; LibreOffice: character set Unicode (UTF-8))";

/// The columns' separator, and where the CSV starts in `bytes`: Excel's `sep=X` first line
/// says it (and is no header); else the one of `,`, `;` and tab that the first non-blank
/// line holds most often outside quotes (`,` when none; a tie goes to `,`, then to tab).
fn delimiter(bytes: &[u8]) -> (u8, usize) {
    let mut lines = bytes.split(|b| *b == b'\n');
    let header = lines
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default();
    let trimmed = header.trim_ascii();
    if let [b's' | b'S', b'e' | b'E', b'p' | b'P', b'=', sep] = trimmed {
        // The CSV starts on the line after `sep=`.
        let end = header.as_ptr() as usize - bytes.as_ptr() as usize + header.len();
        return (*sep, (end + 1).min(bytes.len()));
    }
    let mut counts = [(b',', 0usize), (b'\t', 0), (b';', 0)];
    let mut quoted = false;
    for b in header {
        if *b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if let Some(c) = counts.iter_mut().find(|(d, _)| d == b) {
                c.1 += 1;
            }
        }
    }
    // The first of the most frequent: `,` wins a tie, then a tab.
    let best = counts
        .iter()
        .fold((b',', 0), |best, c| if c.1 > best.1 { *c } else { best });
    (best.0, 0)
}

const HEADER_HINT: &str =
    "the first row names the columns, e.g. `id,name,email`, then one row per student";

/// A seat id names containers, volumes and resources: 1-20 lowercase letters, digits and
/// single dashes. Err: why not, and a fix.
pub fn check_id(id: &str) -> std::result::Result<(), (String, String)> {
    let clean = crate::config::sanitise_name(id);
    let clean: String = clean.chars().take(MAX_ID).collect();
    let clean = clean.trim_end_matches('-');
    let ok = id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
        && !id.contains("--");
    if ok {
        Ok(())
    } else {
        Err((
            format!("is not a seat id: use 1-{MAX_ID} lowercase letters, digits and single dashes"),
            format!("try `{clean}`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Roster> {
        Roster::parse(Path::new("roster.csv"), text.as_bytes())
    }

    fn message(e: Error) -> String {
        let help = miette::Diagnostic::help(&e)
            .map(|h| h.to_string())
            .unwrap_or_default();
        format!("{e} | {help}")
    }

    #[test]
    fn numbered_seats_count_from_one() {
        let r = Roster::numbered(3).unwrap();
        let ids: Vec<&str> = r.seats.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert!(Roster::numbered(0).is_err());
        assert!(Roster::numbered(MAX_SEATS + 1).is_err());
    }

    #[test]
    fn a_spreadsheet_export_is_read_as_it_comes() {
        let text = "\u{feff}Student Number,Name,Email,Section\r\n";
        // No `id` column: refused with the header shown.
        let e = message(parse(text).unwrap_err());
        assert!(e.contains("line 1") && e.contains("no `id` column"), "{e}");
        let text = "\u{feff}ID,Name,Email,Section\r\n\
                    s1,\"Lee, Ann\",ann@example.org,A\r\n\
                    \r\n\
                    s2,\"Bo \"\"Bobby\"\" Chen\",,B\r\n\
                    ,,,\r\n";
        let r = parse(text).unwrap();
        assert_eq!(
            r.seats,
            vec![
                Seat {
                    id: "s1".into(),
                    student: Some("Lee, Ann".into()),
                    email: Some("ann@example.org".into())
                },
                Seat {
                    id: "s2".into(),
                    student: Some("Bo \"Bobby\" Chen".into()),
                    email: None
                },
            ]
        );
    }

    #[test]
    fn semicolons_and_tabs_separate_columns_when_the_header_has_no_comma() {
        for text in [
            "\u{feff}id;name;email\r\nann;\"Lee; Ann\";ann@example.org\r\nbo;Bo, Chen;\r\n",
            "id\tname\temail\nann\tLee; Ann\tann@example.org\nbo\tBo, Chen\t\n",
        ] {
            let r = parse(text).unwrap();
            let seats: Vec<(&str, Option<&str>, Option<&str>)> = r
                .seats
                .iter()
                .map(|s| (s.id.as_str(), s.student.as_deref(), s.email.as_deref()))
                .collect();
            assert_eq!(
                seats,
                [
                    ("ann", Some("Lee; Ann"), Some("ann@example.org")),
                    ("bo", Some("Bo, Chen"), None)
                ],
                "{text:?}"
            );
        }
        // Lines are the file's, the `sep=` line counted.
        let e = message(parse("sep=;\nid;name\nann;Ann\nann;Again\n").unwrap_err());
        assert!(e.contains("line 4") && e.contains("also on line 3"), "{e}");
        // A comma in the header row: commas separate, a `;` is in a field.
        let r = parse("id,name\nann,Lee; Ann\n").unwrap();
        assert_eq!(r.seats[0].student.as_deref(), Some("Lee; Ann"));
        // Counted outside quotes, on the first line that is not blank; Excel's `sep=` line.
        for text in [
            "\n\"id\";\"name\";\"Notes, extra\"\nann;Ann;x\n",
            "id\tname\tnotes; more\nann\tAnn\tx\n",
            "sep=;\r\nid;name\r\nann;Ann\r\n",
        ] {
            let r = parse(text).unwrap_or_else(|e| panic!("{text:?}: {}", message(e)));
            assert_eq!(
                (r.seats[0].id.as_str(), r.seats[0].student.as_deref()),
                ("ann", Some("Ann")),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bad_rosters_name_the_line_and_the_fix() {
        let e = message(parse("id,name\nann,Ann\nbo,Bo\nann,Another Ann\n").unwrap_err());
        assert!(
            e.contains("line 4") && e.contains("`ann` is also on line 2"),
            "{e}"
        );
        let e = message(parse("id,name\nAnn Lee,Ann\n").unwrap_err());
        assert!(
            e.contains("line 2") && e.contains("`Ann Lee`") && e.contains("try `ann-lee`"),
            "{e}"
        );
        let e = message(parse("id,name\n,Nobody\n").unwrap_err());
        assert!(e.contains("line 2") && e.contains("no id"), "{e}");
        let e = message(parse("id,name\n").unwrap_err());
        assert!(e.contains("lists no students"), "{e}");
        let e = message(parse("id,name\n\"ann,Ann\n").unwrap_err());
        assert!(e.contains("roster.csv"), "{e}");
        assert!(check_id("a-very-long-seat-id-indeed").is_err());
        // Another encoding than UTF-8: the line and how to save it.
        let cp1252 = b"id,name\nann,Ann\njose,Jos\xE9\n";
        let e = message(Roster::parse(Path::new("roster.csv"), cp1252).unwrap_err());
        assert!(
            e.contains("line 3") && e.contains("0xE9") && e.contains("CSV UTF-8"),
            "{e}"
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("id\r\n1\r\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let e = message(Roster::parse(Path::new("roster.csv"), &utf16).unwrap_err());
        assert!(e.contains("UTF-16") && e.contains("CSV UTF-8"), "{e}");
        let e = message(Roster::parse(Path::new("roster.csv"), &utf16[2..]).unwrap_err());
        assert!(e.contains("UTF-16") && e.contains("CSV UTF-8"), "{e}");
        assert!(check_id("-a").is_err() && check_id("a--b").is_err());
        assert!(check_id("42").is_ok() && check_id("ann-lee").is_ok());
    }
}
