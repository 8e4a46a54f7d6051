//! Table tests over REAL captured Jupyter logs (see
//! `tests/fixtures/jupyter-logs/README.md` for how each was captured). The expected
//! tokens are the ones `jupyter server list --json` / `jupyter notebook list --json`
//! reported for the same running server, saved next to the logs under `server-list/`;
//! `expected_tokens_match_server_list` checks the constants below against those files.

use super::clean::clean_console;
use super::*;
use crate::aws::ec2::decode_console_output;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/jupyter-logs/", $name))
    };
}

const NB5_ALL: &str = fixture!("notebook-5.7.16-all-addresses.log");
const EXPLICIT_ENV_NB5_ALL: &str = fixture!("explicit-token-env-notebook-5.7.16-all-addresses.log");
const NB6: &str = fixture!("notebook-6.5.7.log");
const JS124: &str = fixture!("jupyter_server-1.24.0.log");
const JS124_LOCALHOST: &str = fixture!("jupyter_server-1.24.0-localhost.log");
const JL36_JS221: &str = fixture!("jupyterlab-3.6.8-server-2.2.1.log");
const JL4410: &str = fixture!("jupyterlab-4.4.10.log");
const JL4410_LOCALHOST: &str = fixture!("jupyterlab-4.4.10-localhost.log");
const JL4410_IPV6: &str = fixture!("jupyterlab-4.4.10-ipv6.log");
const JL4410_CONTAINER: &str = fixture!("jupyterlab-4.4.10-container-hostname.log");
const NB7: &str = fixture!("notebook-7.6.5.log");
const EXPLICIT: &str = fixture!("explicit-token.log");
const EXPLICIT_ENV_NB6: &str = fixture!("explicit-token-env-notebook-6.5.7.log");
const TTY_ANSI: &str = fixture!("tty-ansi.log");
const CRLF: &str = fixture!("crlf.log");
const RESTARTED: &str = fixture!("restarted.log");
const EC2_CONSOLE: &str = fixture!("ec2-console.log");
const EC2_CONSOLE_B64: &str = fixture!("ec2-console.b64");
const CLOUD_INIT_OUTPUT: &str = fixture!("cloud-init-output.log");

// Tokens as reported by `jupyter ... list --json` for each captured server.
const T_NB5_ALL: &str = "338c702766b7b2a1eeeba8841eca35a72aae056fe1dcf2fe";
const T_NB6: &str = "b01cb6093b85495005c6b42c20cfab5e70d6392d88ef9b58";
const T_JS124: &str = "1ce155e2bdf612546ea35fa4df89e3f6a4eb543d5d4053d5";
const T_JS124_LOCALHOST: &str = "82520dd961f71c788be89e9faa57c6557ccee5305d41f799";
const T_JL36_JS221: &str = "bee591548b60704f0d3ab82c7a717492707cca1a32798dd7";
const T_JL4410: &str = "ea9620c5f2f2488b2568f6a22df8e4b5751d2e7437db1fd3";
const T_JL4410_LOCALHOST: &str = "9a54d415e87a806985ed02ebe03e332117abaec7e28cf4ff";
const T_JL4410_IPV6: &str = "44cf0f301f3e92fb3e7af96e61788ed28a9e8e12c658591d";
const T_JL4410_CONTAINER: &str = "c753d1343375fbaad82aa4f60f12ea79384d236ae54733c0";
const T_NB7: &str = "57a2d849200e9142cb9ca79bd6a7d8fdeddbca022420786e";
const T_TTY: &str = "12179a3ebb738d79d8ff2fa805893e12a1edb1bd0d13d2c9";
const T_RESTART_FIRST: &str = "b4c5984c0a44b6343ef861cd4268919f761c2daa44c23572";
const T_RESTART_SECOND: &str = "08b53e551940263e49b9c917f23587df917f19769575dae1";

/// `"token": "<value>"` from one line of `jupyter server list --json` output.
fn list_json_token(json: &str) -> &str {
    let key = "\"token\": \"";
    let start = json.find(key).map(|p| p + key.len()).unwrap_or(json.len());
    let len = json[start..].find('"').unwrap_or(0);
    &json[start..start + len]
}

#[test]
fn expected_tokens_match_server_list() {
    macro_rules! list {
        ($name:literal) => {
            list_json_token(include_str!(concat!(
                "../../tests/fixtures/jupyter-logs/server-list/",
                $name
            )))
        };
    }
    assert_eq!(list!("notebook-6.5.7.list.json"), T_NB6);
    assert_eq!(list!("jupyter_server-1.24.0.list.json"), T_JS124);
    assert_eq!(
        list!("jupyter_server-1.24.0-localhost.list.json"),
        T_JS124_LOCALHOST
    );
    assert_eq!(
        list!("jupyterlab-3.6.8-server-2.2.1.list.json"),
        T_JL36_JS221
    );
    assert_eq!(list!("jupyterlab-4.4.10.list.json"), T_JL4410);
    assert_eq!(
        list!("jupyterlab-4.4.10-localhost.list.json"),
        T_JL4410_LOCALHOST
    );
    assert_eq!(list!("jupyterlab-4.4.10-ipv6.list.json"), T_JL4410_IPV6);
    assert_eq!(
        list!("jupyterlab-4.4.10-container-hostname.list.json"),
        T_JL4410_CONTAINER
    );
    assert_eq!(list!("notebook-7.6.5.list.json"), T_NB7);
    assert_eq!(list!("tty-ansi.list.json"), T_TTY);
    assert_eq!(list!("restarted.list1.json"), T_RESTART_FIRST);
    assert_eq!(list!("restarted.list2.json"), T_RESTART_SECOND);
    // the explicit tokens were set by us, and Jupyter did not print them
    assert_eq!(list!("explicit-token.list.json"), "abc");
    assert_eq!(
        list!("explicit-token-env-notebook-6.5.7.list.json"),
        "s3cr3t-Token_value"
    );
    assert!(!EXPLICIT.contains("token=abc"));
    assert!(!EXPLICIT_ENV_NB6.contains("s3cr3t-Token_value"));
}

struct Case {
    name: &'static str,
    log: &'static str,
    token: &'static str,
    url: &'static str,
    port: u16,
    path: &'static str,
}

const CASES: &[Case] = &[
    Case {
        // printed as `http://(3f2a1b0c9d8e or 127.0.0.1):8888/?token=...`
        name: "notebook 5.7.16, --ip=0.0.0.0 with a container hostname",
        log: NB5_ALL,
        token: T_NB5_ALL,
        url: "http://127.0.0.1:8888/?token=338c702766b7b2a1eeeba8841eca35a72aae056fe1dcf2fe",
        port: 8888,
        path: "/",
    },
    Case {
        name: "notebook 6.5.7",
        log: NB6,
        token: T_NB6,
        url: "http://127.0.0.1:18881/?token=b01cb6093b85495005c6b42c20cfab5e70d6392d88ef9b58",
        port: 18881,
        path: "/",
    },
    Case {
        name: "jupyter_server 1.24.0",
        log: JS124,
        token: T_JS124,
        url: "http://127.0.0.1:18882/?token=1ce155e2bdf612546ea35fa4df89e3f6a4eb543d5d4053d5",
        port: 18882,
        path: "/",
    },
    Case {
        name: "jupyter_server 1.24.0, --ip=localhost",
        log: JS124_LOCALHOST,
        token: T_JS124_LOCALHOST,
        url: "http://127.0.0.1:18890/?token=82520dd961f71c788be89e9faa57c6557ccee5305d41f799",
        port: 18890,
        path: "/",
    },
    Case {
        name: "jupyterlab 3.6.8 on jupyter_server 2.2.1",
        log: JL36_JS221,
        token: T_JL36_JS221,
        url: "http://127.0.0.1:18883/lab?token=bee591548b60704f0d3ab82c7a717492707cca1a32798dd7",
        port: 18883,
        path: "/lab",
    },
    Case {
        name: "jupyterlab 4.4.10 (jupyter_server 2.21.1)",
        log: JL4410,
        token: T_JL4410,
        url: "http://127.0.0.1:18884/lab?token=ea9620c5f2f2488b2568f6a22df8e4b5751d2e7437db1fd3",
        port: 18884,
        path: "/lab",
    },
    Case {
        name: "jupyterlab 4.4.10, --ip=localhost",
        log: JL4410_LOCALHOST,
        token: T_JL4410_LOCALHOST,
        url: "http://127.0.0.1:18888/lab?token=9a54d415e87a806985ed02ebe03e332117abaec7e28cf4ff",
        port: 18888,
        path: "/lab",
    },
    Case {
        name: "jupyterlab 4.4.10, --ip=::1",
        log: JL4410_IPV6,
        token: T_JL4410_IPV6,
        url: "http://[::1]:18889/lab?token=44cf0f301f3e92fb3e7af96e61788ed28a9e8e12c658591d",
        port: 18889,
        path: "/lab",
    },
    Case {
        name: "jupyterlab 4.4.10, --ip=0.0.0.0 with a container hostname",
        log: JL4410_CONTAINER,
        token: T_JL4410_CONTAINER,
        url: "http://127.0.0.1:8888/lab?token=c753d1343375fbaad82aa4f60f12ea79384d236ae54733c0",
        port: 8888,
        path: "/lab",
    },
    Case {
        name: "notebook 7.6.5",
        log: NB7,
        token: T_NB7,
        url: "http://127.0.0.1:18885/tree?token=57a2d849200e9142cb9ca79bd6a7d8fdeddbca022420786e",
        port: 18885,
        path: "/tree",
    },
    Case {
        name: "tty with ANSI colours (script -qfc)",
        log: TTY_ANSI,
        token: T_TTY,
        url: "http://127.0.0.1:18891/lab?token=12179a3ebb738d79d8ff2fa805893e12a1edb1bd0d13d2c9",
        port: 18891,
        path: "/lab",
    },
    Case {
        name: "CRLF line endings",
        log: CRLF,
        token: T_JL36_JS221,
        url: "http://127.0.0.1:18883/lab?token=bee591548b60704f0d3ab82c7a717492707cca1a32798dd7",
        port: 18883,
        path: "/lab",
    },
    Case {
        name: "restarted server: the second token wins",
        log: RESTARTED,
        token: T_RESTART_SECOND,
        url: "http://127.0.0.1:18892/lab?token=08b53e551940263e49b9c917f23587df917f19769575dae1",
        port: 18892,
        path: "/lab",
    },
    Case {
        name: "EC2 console with interleaved SSM / getty / AWS timestamps",
        log: EC2_CONSOLE,
        token: T_JL4410_CONTAINER,
        url: "http://127.0.0.1:8888/lab?token=c753d1343375fbaad82aa4f60f12ea79384d236ae54733c0",
        port: 8888,
        path: "/lab",
    },
    Case {
        name: "cloud-init-output.log",
        log: CLOUD_INIT_OUTPUT,
        token: T_JL4410_CONTAINER,
        url: "http://127.0.0.1:8888/lab?token=c753d1343375fbaad82aa4f60f12ea79384d236ae54733c0",
        port: 8888,
        path: "/lab",
    },
];

#[test]
fn finds_the_token_in_every_captured_log() {
    for case in CASES {
        let found = match find_token(case.log) {
            Ok(f) => f,
            Err(e) => panic!("{}: {e}", case.name),
        };
        assert_eq!(found.token.as_str(), case.token, "{}", case.name);
        assert!(found.token.is_generated(), "{}", case.name);
        assert_eq!(found.url, case.url, "{}", case.name);
        assert_eq!(found.port, Some(case.port), "{}", case.name);
        assert_eq!(found.path, case.path, "{}", case.name);
    }
}

#[test]
fn explicit_token_is_not_logged() {
    assert_eq!(find_token(EXPLICIT), Err(TokenError::TokenNotLogged));
    assert_eq!(
        find_token(EXPLICIT_ENV_NB6),
        Err(TokenError::TokenNotLogged)
    );
}

#[test]
fn restart_into_an_explicit_token_is_not_logged() {
    // the server running now is the second one: its token was never printed
    let log = format!("{JL4410}{EXPLICIT}");
    assert_eq!(find_token(&log), Err(TokenError::TokenNotLogged));
    // and the other way round the generated token of the newer server wins
    let log = format!("{EXPLICIT}{JL4410}");
    assert_eq!(
        find_token(&log).map(|f| f.token.into_inner()),
        Ok(T_JL4410.to_string())
    );
}

#[test]
fn restarted_log_holds_both_tokens_in_order() {
    let first = RESTARTED.find(T_RESTART_FIRST);
    let second = RESTARTED.find(T_RESTART_SECOND);
    assert!(matches!((first, second), (Some(a), Some(b)) if a < b));
}

#[test]
fn no_token_before_the_server_prints_its_urls() {
    assert_eq!(find_token(""), Err(TokenError::NoToken));
    // the real log up to (not including) the "is running at" block
    let head_end = JL4410
        .find("Jupyter Server 2.21.1 is running at")
        .unwrap_or(0);
    assert!(head_end > 0);
    assert_eq!(find_token(&JL4410[..head_end]), Err(TokenError::NoToken));
    // the file:// URL has no token; a token-less server URL is no token either
    assert_eq!(
        find_token("        file:///tmp/jpserver-1-open.html\n    http://127.0.0.1:8888/lab\n"),
        Err(TokenError::NoToken)
    );
    assert_eq!(
        find_token("http://127.0.0.1:8888/lab?token=\n"),
        Err(TokenError::NoToken)
    );
}

#[test]
fn a_log_cut_mid_token_never_yields_the_fragment() {
    // GetConsoleOutput / a live tail can end in the middle of the first URL line
    let at = JL4410_CONTAINER
        .find(T_JL4410_CONTAINER)
        .expect("the fixture holds its token") // ok: test code (this file is the test module)
        + 20;
    assert_eq!(
        find_token(&JL4410_CONTAINER[..at]),
        Err(TokenError::NoToken)
    );
    // cut in the second URL line: the complete first one is used
    let second = JL4410_CONTAINER
        .find("    http://127.0.0.1:8888/lab?token=")
        .unwrap_or(0);
    let cut = &JL4410_CONTAINER[..second + 60];
    let found = find_token(cut);
    assert_eq!(
        found.map(|f| (f.token.into_inner(), f.url)),
        Ok((
            T_JL4410_CONTAINER.to_string(),
            format!("http://0.0.0.0:8888/lab?token={T_JL4410_CONTAINER}")
        ))
    );
}

#[test]
fn ec2_console_needs_the_cleaner() {
    // the fixture damages every copy of the token, so a scan of the raw text cannot
    // find it...
    assert!(!EC2_CONSOLE.contains(T_JL4410_CONTAINER));
    let raw = scan(EC2_CONSOLE);
    assert!(!raw
        .iter()
        .any(|c| matches!(&c.value, Value::Token(t) if t == T_JL4410_CONTAINER)));
    // ...and after cleaning, every line of the real log reads as Jupyter printed it
    let cleaned = clean_console(EC2_CONSOLE);
    let cleaned_lines: Vec<&str> = cleaned.lines().collect();
    for line in JL4410_CONTAINER.lines() {
        if line.starts_with("[I 2026-11-21 08:11:50.200") {
            break; // the console sample stops after "received signal 15"
        }
        assert!(
            cleaned_lines.contains(&line),
            "missing after cleaning: {line:?}"
        );
    }
    // all four URL lines are whole again
    let copies = scan(&cleaned)
        .iter()
        .filter(|c| matches!(&c.value, Value::Token(t) if t == T_JL4410_CONTAINER))
        .count();
    assert_eq!(copies, 4);
    // the interleaved SSM message survives as its own line
    assert!(
        cleaned_lines.contains(&"2026/11/21 08:11:44Z: Amazon SSM Agent v3.3.1802.0 is running")
    );
}

#[test]
fn aws_timestamp_split_of_the_winning_url_is_rejoined() {
    // The exact case: the last URL in the console has an AWS timestamp inside its
    // token, leaving 37 hex characters before it. Without the cleaner that is a
    // 37-character candidate; the cleaner must make it whole.
    let line = EC2_CONSOLE
        .lines()
        .find(|l| l.contains("[2026-11-21T08:12:04.512]36ae"))
        .unwrap_or("");
    let raw = scan(line);
    assert!(matches!(raw.as_slice(), [c] if matches!(&c.value, Value::Token(t) if t.len() == 37)));
    let found = find_token(line);
    assert_eq!(
        found.map(|f| f.token.into_inner()),
        Ok(T_JL4410_CONTAINER.to_string())
    );
}

#[test]
fn base64_console_output_decodes_and_yields_the_token() {
    let text = match decode_console_output(EC2_CONSOLE_B64) {
        Ok(t) => t,
        Err(e) => panic!("decode: {e}"),
    };
    // the two invalid bytes became replacement characters
    assert!(text.contains("(mock\u{fffd}\u{fffd}build@"));
    assert_eq!(
        find_token(&text).map(|f| f.token.into_inner()),
        Ok(T_JL4410_CONTAINER.to_string())
    );
}

#[test]
fn debug_never_prints_the_secret() {
    let found = match find_token(JL4410) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let dbg = format!("{found:?}");
    assert!(!dbg.contains(T_JL4410), "{dbg}");
    assert!(dbg.contains("JupyterToken(****)"), "{dbg}");
    assert!(
        dbg.contains("http://127.0.0.1:18884/lab?token=****"),
        "{dbg}"
    );
    assert_eq!(format!("{:?}", found.token), "JupyterToken(****)");
    assert_eq!(found.token.expose(), T_JL4410);
    let pretty = format!("{found:#?}");
    assert!(!pretty.contains(T_JL4410));
}

#[test]
fn token_value_stops_at_non_token_characters() {
    let t = T_JL4410;
    for (log, url) in [
        (
            format!("x http://h:1/lab?token={t}&a=b y"),
            format!("http://h:1/lab?token={t}&a=b"),
        ),
        (
            format!("see \"http://h:1/lab?token={t}\""),
            format!("http://h:1/lab?token={t}"),
        ),
        (
            format!("'http://h:1/lab?token={t}'"),
            format!("http://h:1/lab?token={t}"),
        ),
        (
            format!("<http://h:1/lab?token={t}>"),
            format!("http://h:1/lab?token={t}"),
        ),
        (
            format!("http://h:1/lab?token={t}#frag"),
            format!("http://h:1/lab?token={t}"),
        ),
        (
            format!("(http://h:1/lab?token={t})."),
            format!("http://h:1/lab?token={t}"),
        ),
        (
            format!("HTTPS://h:1/lab?token={t}\t"),
            format!("HTTPS://h:1/lab?token={t}"),
        ),
        (
            format!("{{\"url\": \"http://h:1/?token={t}\"}}"),
            format!("http://h:1/?token={t}"),
        ),
    ] {
        let found = find_token(&log);
        assert_eq!(
            found.map(|f| (f.token.into_inner(), f.url)),
            Ok((t.to_string(), url)),
            "{log}"
        );
    }
}

#[test]
fn url_shapes() {
    let t = T_NB7;
    let cases = [
        (
            format!("https://example.org/user/ana/lab?foo=1&token={t}"),
            None,
            "/user/ana/lab",
        ),
        (format!("http://10.1.2.3:8888?token={t}"), Some(8888), "/"),
        (
            format!("http://a1b2c3d4e5f6:8888/tree?token={t}"),
            Some(8888),
            "/tree",
        ),
        (format!("http://[fe80::1]:9999/?token={t}"), Some(9999), "/"),
        (
            format!("http://localhost:99999/lab?token={t}"),
            None,
            "/lab",
        ),
    ];
    for (log, port, path) in cases {
        let found = find_token(&log);
        assert_eq!(
            found.map(|f| (f.token.into_inner(), f.port, f.path)),
            Ok((t.to_string(), port, path.to_string())),
            "{log}"
        );
    }
    // a custom (non-hex) token printed in a URL is accepted as printed
    let found = find_token("http://127.0.0.1:8888/lab?token=My_custom-Token9\n");
    assert_eq!(
        found.map(|f| f.token.into_inner()),
        Ok("My_custom-Token9".to_string())
    );
    // `token` must be the parameter name, not a suffix of one
    assert_eq!(
        find_token(&format!("http://h:1/lab?xtoken={t}")),
        Err(TokenError::NoToken)
    );
}

#[test]
fn generated_tokens_are_preferred_over_other_values() {
    let log = format!(
        "http://127.0.0.1:8888/lab?token={T_NB7}\nhttp://127.0.0.1:8888/lab?token=c753d1343375fbip-172-31-0-5\n"
    );
    assert_eq!(
        find_token(&log).map(|f| f.token.into_inner()),
        Ok(T_NB7.to_string())
    );
    // a hex fragment that comes after the whole token is never returned
    let log = format!(
        "http://127.0.0.1:8888/lab?token={T_NB7}\nhttp://127.0.0.1:8888/lab?token={}\n",
        &T_NB7[..30]
    );
    assert_eq!(
        find_token(&log).map(|f| f.token.into_inner()),
        Ok(T_NB7.to_string())
    );
    // nor one the input cuts off
    let log = format!("http://127.0.0.1:8888/lab?token={}", &T_NB7[..30]);
    assert_eq!(find_token(&log), Err(TokenError::NoToken));
}

#[test]
fn split_tokens_are_rejoined_across_a_break_or_space() {
    let t = T_JS124;
    for sep in ["\n", " "] {
        let log = format!(
            "http://127.0.0.1:8888/?token={}{sep}{}\n",
            &t[..25],
            &t[25..]
        );
        let found = find_token(&log);
        assert_eq!(
            found.map(|f| (f.token.into_inner(), f.url)),
            Ok((t.to_string(), format!("http://127.0.0.1:8888/?token={t}"))),
            "{sep:?}"
        );
    }
    // not when the continuation does not make exactly 48 hex characters
    let log = format!("http://127.0.0.1:8888/?token={}\n{}0\n", &t[..25], &t[25..]);
    assert_ne!(
        find_token(&log).map(|f| f.token.into_inner()),
        Ok(t.to_string())
    );
    let log = format!("http://127.0.0.1:8888/?token={}\n{}x\n", &t[..25], &t[25..]);
    assert_ne!(
        find_token(&log).map(|f| f.token.into_inner()),
        Ok(t.to_string())
    );
}

#[test]
fn jupyter_token_constructor() {
    assert!(JupyterToken::new("abc_DEF-123").is_some());
    assert!(JupyterToken::new("").is_none());
    assert!(JupyterToken::new("a b").is_none());
    assert!(JupyterToken::new("...").is_none());
    assert!(JupyterToken::new(T_NB6).is_some_and(|t| t.is_generated()));
    assert!(JupyterToken::new("abc").is_some_and(|t| !t.is_generated()));
}

#[test]
fn error_messages() {
    assert!(TokenError::TokenNotLogged
        .to_string()
        .contains("set explicitly"));
    assert!(TokenError::NoToken
        .to_string()
        .contains("no Jupyter server URL"));
}

// ---------------------------------------------------------------------------
// notebook 5.x on all addresses: `http://(HOSTNAME or 127.0.0.1):PORT/...`

#[test]
fn notebook_5_expected_tokens_match_server_list() {
    assert_eq!(
        list_json_token(fixture!(
            "server-list/notebook-5.7.16-all-addresses.list.json"
        )),
        T_NB5_ALL
    );
    assert_eq!(
        list_json_token(fixture!(
            "server-list/explicit-token-env-notebook-5.7.16-all-addresses.list.json"
        )),
        "s3cr3t-Token_value"
    );
    // the capture really is the parenthesised form, and never names the explicit token
    assert!(NB5_ALL.contains(&format!(
        "http://(3f2a1b0c9d8e or 127.0.0.1):8888/?token={T_NB5_ALL}"
    )));
    assert!(EXPLICIT_ENV_NB5_ALL.contains("http://(3f2a1b0c9d8e or 127.0.0.1):8888/?token=..."));
    assert!(!EXPLICIT_ENV_NB5_ALL.contains("s3cr3t-Token_value"));
}

#[test]
fn notebook_5_explicit_token_is_not_logged() {
    assert_eq!(
        find_token(EXPLICIT_ENV_NB5_ALL),
        Err(TokenError::TokenNotLogged)
    );
    // a restart into an explicit token, and the other way round
    let log = format!("{NB5_ALL}{EXPLICIT_ENV_NB5_ALL}");
    assert_eq!(find_token(&log), Err(TokenError::TokenNotLogged));
    let log = format!("{EXPLICIT_ENV_NB5_ALL}{NB5_ALL}");
    assert_eq!(
        find_token(&log).map(|f| f.token.into_inner()),
        Ok(T_NB5_ALL.to_string())
    );
}

#[test]
fn notebook_5_either_host_uses_the_address_after_or() {
    let t = T_NB5_ALL;
    for (log, url, port, path) in [
        (
            format!("[I 06:02:53.833 NotebookApp] http://(3f2a1b0c9d8e or 127.0.0.1):8888/?token={t}"),
            format!("http://127.0.0.1:8888/?token={t}"),
            Some(8888),
            "/",
        ),
        // a base URL, TLS, a dotted hostname, no port
        (
            format!("https://(ip-10-0-0-5.ec2.internal or 127.0.0.1):9999/user/ana/?token={t}&x=1"),
            format!("https://127.0.0.1:9999/user/ana/?token={t}&x=1"),
            Some(9999),
            "/user/ana/",
        ),
        (
            format!("http://(box or 127.0.0.1)/?token={t}"),
            format!("http://127.0.0.1/?token={t}"),
            None,
            "/",
        ),
        // through a tty: colour codes around the prefix
        (
            format!("\u{1b}[32m[I 06:02:53.833 NotebookApp]\u{1b}(B\u{1b}[m http://(3f2a1b0c9d8e or 127.0.0.1):8888/?token={t}\r\n"),
            format!("http://127.0.0.1:8888/?token={t}"),
            Some(8888),
            "/",
        ),
        // a token split by a line break is still rejoined
        (
            format!("http://(h or 127.0.0.1):8888/?token={}\n{}\n", &t[..20], &t[20..]),
            format!("http://127.0.0.1:8888/?token={t}"),
            Some(8888),
            "/",
        ),
    ] {
        let found = find_token(&log);
        assert_eq!(
            found.map(|f| (f.token.into_inner(), f.url, f.port, f.path)),
            Ok((t.to_string(), url, port, path.to_string())),
            "{log:?}"
        );
    }
    // the redacted URL is the usable one, without the secret
    let found = find_token(NB5_ALL).map(|f| f.redacted_url());
    assert_eq!(found, Ok("http://127.0.0.1:8888/?token=****".to_string()));
}

#[test]
fn malformed_either_hosts_are_no_urls() {
    let t = T_NB5_ALL;
    for log in [
        format!("http://(3f2a1b0c9d8e or 127.0.0.1:8888/?token={t}"),
        format!("http://(or 127.0.0.1):8888/?token={t}"),
        format!("http://(3f2a1b0c9d8e or ):8888/?token={t}"),
        format!("http://(3f2a1b0c9d8e):8888/?token={t}"),
        format!("http://(3f2a1b0c9d8e and 127.0.0.1):8888/?token={t}"),
        format!("http://():8888/?token={t}"),
    ] {
        assert_eq!(find_token(&log), Err(TokenError::NoToken), "{log}");
    }
}

// ---------------------------------------------------------------------------
// helpers for what the user reads

#[test]
fn tokens_are_redacted() {
    assert_eq!(
        redact("open http://x:8888/lab?token=0123abcd&x=1 or token=... now"),
        "open http://x:8888/lab?token=****&x=1 or token=... now"
    );
    assert_eq!(redact("no secrets"), "no secrets");
    assert!(redact("http://h:8888/lab?token=deadbeef").contains("token=****"));
    // every captured log loses its secret and keeps everything else
    for (log, token) in [(NB5_ALL, T_NB5_ALL), (NB6, T_NB6), (JL4410, T_JL4410)] {
        let r = redact(log);
        assert!(!r.contains(token));
        assert_eq!(r.lines().count(), log.lines().count());
        assert!(r.contains("?token=****\n"));
    }
    assert_eq!(redact(EXPLICIT_ENV_NB5_ALL), EXPLICIT_ENV_NB5_ALL);
    assert_eq!(redact("token="), "token=");
    assert_eq!(redact("token=a b"), "token=**** b");
}

#[test]
fn token_errors_become_token_not_found() {
    use crate::error::Error;

    match TokenError::TokenNotLogged.into_error("the log of labship-demo") {
        Error::TokenNotFound {
            origin,
            reason,
            hint,
        } => {
            assert_eq!(origin, "the log of labship-demo");
            assert_eq!(
                reason,
                "the server's token was set explicitly, so Jupyter logged `token=...` instead of it"
            );
            assert_eq!(
                hint,
                "use the token that was configured (JUPYTER_TOKEN or --IdentityProvider.token)"
            );
        }
        other => panic!("{other:?}"),
    }
    match TokenError::NoToken.into_error("the console of i-0123") {
        Error::TokenNotFound {
            origin,
            reason,
            hint,
        } => {
            assert_eq!(origin, "the console of i-0123");
            assert_eq!(reason, "no Jupyter server URL with a token was found");
            assert_eq!(
                hint,
                "give the log of a Jupyter server start (docker logs, cloud-init-output.log or the EC2 console output); a server that is still starting has not printed it yet"
            );
        }
        other => panic!("{other:?}"),
    }
}
