//! The one bounded retry loop labship's AWS calls share.
//!
//! The SDK already retries throttling, 5xx and timeouts (its `standard` mode, see
//! [`super::load`]). What remains are AWS's *documented* eventual-consistency answers, each
//! retried only where its caller says why: a just-created instance profile or security group
//! that EC2 does not know yet, a security group still held by a terminating instance's
//! network interface, an SSM invocation that does not exist yet right after SendCommand, an
//! instance still pending. The caller decides, per attempt, whether the answer is final
//! ([`Step::Done`] or an `Err`) or worth another try ([`Step::Again`], with the error to
//! report should the deadline pass).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// One attempt's verdict.
pub enum Step<T> {
    /// Finished: the value.
    Done(T),
    /// Not yet: try again after the interval; this error is the answer if time runs out.
    Again(Error),
}

/// Runs `attempt` until it is [`Step::Done`] or fails, sleeping `every` between attempts,
/// for at most `within` (the first attempt always runs). A terminal `Err` ends it at once.
pub async fn until<T, F, Fut>(within: Duration, every: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Step<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await? {
            Step::Done(value) => return Ok(value),
            Step::Again(last) => {
                if Instant::now() + every > deadline {
                    return Err(last);
                }
                tracing::debug!("not yet ({last}); retrying in {}s", every.as_secs_f32());
                tokio::time::sleep(every).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn transient(n: u32) -> Error {
        Error::engine("trying", format!("attempt {n}"))
    }

    #[tokio::test]
    async fn retries_until_done() {
        let tries = Cell::new(0);
        let got = until(Duration::from_secs(5), Duration::from_millis(1), || async {
            tries.set(tries.get() + 1);
            Ok(if tries.get() < 3 {
                Step::Again(transient(tries.get()))
            } else {
                Step::Done(tries.get())
            })
        })
        .await
        .expect("done");
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn the_deadline_returns_the_last_answer() {
        let tries = Cell::new(0);
        let err = until(
            Duration::from_millis(30),
            Duration::from_millis(10),
            || async {
                tries.set(tries.get() + 1);
                Ok::<Step<()>, Error>(Step::Again(transient(tries.get())))
            },
        )
        .await
        .expect_err("times out");
        assert!(
            err.to_string()
                .contains(&format!("attempt {}", tries.get())),
            "{err}"
        );
        assert!(tries.get() >= 2 && tries.get() <= 5, "{}", tries.get());
    }

    #[tokio::test]
    async fn a_terminal_error_stops_at_once() {
        let tries = Cell::new(0);
        let err = until(Duration::from_secs(5), Duration::from_millis(1), || async {
            tries.set(tries.get() + 1);
            Err::<Step<()>, Error>(transient(0))
        })
        .await
        .expect_err("fails");
        assert_eq!(tries.get(), 1);
        assert!(err.to_string().contains("attempt 0"));
    }
}
