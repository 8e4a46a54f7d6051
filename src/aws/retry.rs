//! The one bounded retry loop labship's AWS calls share.
//!
//! The SDK already retries throttling, 5xx and timeouts a few times (its `standard` mode,
//! see [`super::load`]). A wait lasts minutes, though, and on a busy day some call of it
//! will fail even after those attempts: so an attempt that ends in a transient error
//! ([`Error::is_transient`]) is tried again here, with exponential backoff and jitter, until
//! the wait's own deadline. What else is retried are AWS's *documented* eventual-consistency
//! answers, each only where its caller says why: a just-created instance profile or security
//! group that EC2 does not know yet, a security group still held by a terminating instance's
//! network interface, an instance still pending. The caller decides, per attempt, whether
//! the answer is final ([`Step::Done`] or an `Err`) or worth another try ([`Step::Again`],
//! with the error to report should the deadline pass).

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

/// The longest pause between two attempts after transient errors.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// Runs `attempt` until it is [`Step::Done`] or fails, sleeping `every` between attempts,
/// for at most `within` (the first attempt always runs). A transient `Err` counts as "not
/// yet" (with a growing, jittered pause); any other `Err` ends it at once.
pub async fn until<T, F, Fut>(within: Duration, every: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Step<T>>>,
{
    let deadline = Instant::now() + within;
    let mut transient_in_a_row = 0u32;
    loop {
        let (last, pause) = match attempt().await {
            Ok(Step::Done(value)) => return Ok(value),
            Ok(Step::Again(last)) => {
                transient_in_a_row = 0;
                (last, every)
            }
            Err(e) if e.is_transient() => {
                transient_in_a_row += 1;
                (e, backoff(every, transient_in_a_row))
            }
            Err(e) => return Err(e),
        };
        if Instant::now() + pause > deadline {
            return Err(last);
        }
        tracing::debug!("not yet ({last}); retrying in {:.1}s", pause.as_secs_f32());
        tokio::time::sleep(pause).await;
    }
}

/// A single read that keeps trying through transient errors (every 2 s, with backoff) for
/// at most `within`; any other error ends it at once.
pub async fn read<T, F, Fut>(within: Duration, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    until(within, Duration::from_secs(2), || {
        let fut = call();
        async move { fut.await.map(Step::Done) }
    })
    .await
}

/// `Ok(Some(value))`, or `Ok(None)` for a transient error (logged), which a polling loop
/// treats as "nothing new this time"; other errors stay errors.
pub fn tolerate<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_transient() => {
            tracing::debug!("transient, polling on: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The pause after the `n`-th transient error in a row: `every` doubled each time, at most
/// [`MAX_BACKOFF`], then a random share of 50-100 % of it (so many clients that AWS
/// throttled at once do not all come back at the same moment).
pub fn backoff(every: Duration, n: u32) -> Duration {
    let full = every
        .max(Duration::from_millis(100))
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let mut byte = [0u8; 1];
    let share = match getrandom::getrandom(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 510.0,
        Err(_) => 0.75,
    };
    full.mul_f64(share)
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

    fn throttled(n: u32) -> Error {
        Error::AwsUnavailable {
            action: "ec2:DescribeInstances".into(),
            resource: "i-1".into(),
            region: "eu-west-1".into(),
            message: format!("RequestLimitExceeded {n}"),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_done() {
        let tries = Cell::new(0);
        let got = until(Duration::from_secs(5), Duration::from_millis(1), || async {
            tries.set(tries.get() + 1);
            if tries.get() < 4 {
                Err(throttled(tries.get()))
            } else {
                Ok(Step::Done(tries.get()))
            }
        })
        .await
        .expect("done");
        assert_eq!(got, 4);
    }

    #[tokio::test]
    async fn transient_errors_until_the_deadline_return_the_last() {
        let tries = Cell::new(0);
        let err = until(
            Duration::from_millis(400),
            Duration::from_millis(1),
            || async {
                tries.set(tries.get() + 1);
                Err::<Step<()>, Error>(throttled(tries.get()))
            },
        )
        .await
        .expect_err("times out");
        assert!(err.is_transient());
        assert!(err
            .to_string()
            .contains(&format!("RequestLimitExceeded {}", tries.get())));
        assert!(tries.get() >= 2, "{}", tries.get());
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let every = Duration::from_secs(1);
        for n in 1..=3 {
            let full = Duration::from_secs(1 << (n - 1));
            let got = backoff(every, n);
            assert!(got >= full / 2 && got <= full, "{n}: {got:?}");
        }
        assert!(backoff(every, 30) <= MAX_BACKOFF);
        let draws: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff(every, 5)).collect();
        assert!(draws.len() > 1, "no jitter: {draws:?}");
    }

    #[test]
    fn tolerate_keeps_terminal_errors() {
        assert_eq!(tolerate(Ok::<u8, Error>(1)).ok().flatten(), Some(1));
        assert!(matches!(tolerate::<u8>(Err(throttled(1))), Ok(None)));
        assert!(tolerate::<u8>(Err(transient(1))).is_err());
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
