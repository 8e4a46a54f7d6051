//! Ctrl-C and SIGTERM for the commands that change things (`up`, `down`, `push`).
//!
//! The first signal asks the command to stop at its next *safe point*: long waits (a build,
//! an upload, the wait for a console marker or a token, a termination) end at once, and the
//! steps that must not be cut in half (a role and its instance profile, a repository and its
//! lifecycle policy, a container renamed during a replace) finish first, because they run
//! without a safe point inside them. The command then fails with [`Error::Interrupted`],
//! which lists what this run made or found, and the command that removes it; `main` exits
//! 130, the shell's code for "ended by SIGINT". A second signal exits 130 at once.
//!
//! This is process-wide state on purpose: a signal is process-wide, and the safe points
//! are deep in the pipeline, where passing a handle through every layer would add an
//! argument to dozens of functions for no gain in clarity. Until [`install`] is called
//! (read-only commands never call it), the default meaning of Ctrl-C, stop now, holds.

use std::future::Future;
use std::sync::{Mutex, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

struct State {
    stop: CancellationToken,
    /// What this run made or found that would remain, in the user's words.
    made: Mutex<Vec<String>>,
    /// What the user runs next.
    then: Mutex<Then>,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(|| State {
        stop: CancellationToken::new(),
        made: Mutex::new(Vec::new()),
        then: Mutex::new(Then::Remove(String::new())),
    })
}

/// What an interrupted command tells the user to run next.
#[derive(Debug, Clone)]
pub enum Then {
    /// A command that makes things (`up`, `push`): this command removes what it made.
    Remove(String),
    /// A command that removes things (`down`): run this again to finish.
    Repeat(String),
    /// A command that changes something in place (`token --rotate`): run it again to finish.
    Retry(String),
}

/// Registers the handlers (once; later calls only update `then`): from now on SIGINT and
/// SIGTERM mean "stop at the next safe point", and a second one "exit now".
pub fn install(then: Then) -> Result<()> {
    let state = state();
    if let Ok(mut t) = state.then.lock() {
        *t = then;
    }
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let mut signals = Signals::new().map_err(|source| Error::Write {
        path: "(signal handler)".into(),
        source,
    })?;
    let _ = INSTALLED.set(());
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!(
            "\nlabship: stopping at the next safe point (press Ctrl-C again to quit at once)"
        );
        state.stop.cancel();
        signals.recv().await;
        eprintln!("\nlabship: quit at once.{}", summary());
        std::process::exit(130);
    });
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STATE.get().is_some_and(|s| s.stop.is_cancelled())
}

/// Resolves when a stop is asked for (never, when [`install`] was not called).
pub async fn stopped() {
    state().stop.cancelled().await
}

/// A safe point between two steps: `Err(Interrupted)` when a stop was asked for. `next` is
/// the step that will not run, in the user's words.
pub fn checkpoint(next: &str) -> Result<()> {
    if requested() {
        return Err(interrupted(next));
    }
    Ok(())
}

/// Runs `work` (a step that may be abandoned at any moment: a wait, a build, an upload) until
/// it finishes or a stop is asked for.
pub async fn cancellable<T>(step: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    checkpoint(step)?;
    tokio::select! {
        out = work => out,
        _ = stopped() => Err(interrupted(step)),
    }
}

/// Records something this run made or found that outlives it (listed when interrupted).
pub fn made(what: impl Into<String>) {
    if let Ok(mut made) = state().made.lock() {
        let what = what.into();
        if !made.contains(&what) {
            made.push(what);
        }
    }
}

/// Forgets something [`made`] recorded that this run removed again (undoing a step).
pub fn gone(what: &str) {
    if let Ok(mut made) = state().made.lock() {
        made.retain(|m| m != what);
    }
}

fn interrupted(step: &str) -> Error {
    Error::Interrupted {
        step: step.to_string(),
        summary: what_now(),
    }
}

/// What exists now and what to run next, as an interruption's error says it (for a command
/// whose interruption is reported its own way: a class's seats).
pub fn what_now() -> String {
    summary().trim_start().to_string()
}

/// What exists now and what to run next.
fn summary() -> String {
    let state = state();
    let made = state.made.lock().map(|m| m.clone()).unwrap_or_default();
    let then = state
        .then
        .lock()
        .map(|t| t.clone())
        .unwrap_or(Then::Remove(String::new()));
    match then {
        Then::Repeat(cmd) => {
            format!(" What was removed stays removed; run `{cmd}` again to remove the rest.")
        }
        Then::Retry(cmd) => format!(" Run `{cmd}` again to finish."),
        Then::Remove(_) if made.is_empty() => " Nothing was created.".into(),
        Then::Remove(cmd) if cmd.is_empty() => format!(
            " What exists now: {}. Run the same command again to finish.",
            made.join("; ")
        ),
        Then::Remove(cmd) => format!(
            " What exists now: {}. Run the same command again to finish, or `{cmd}` to remove it.",
            made.join("; ")
        ),
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
