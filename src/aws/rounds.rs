//! Reads by id that many tasks of one command make at about the same time, made as one call
//! per round. A class's seats each wait for their own instance (is it running yet, is it still
//! there), and 30 seats polling DescribeInstances each on their own would be 30 calls every
//! few seconds, where one call can name all 30 instances.
//!
//! A read joins the round that is still gathering ids, or opens one. Its opener waits until
//! the round is due (a brief gathering time, and at least a period after the last round of
//! several waits), closes it and makes one call for every id in it; the others wait for
//! its answer. A round is "of several waits" when it named several ids, or one id other than
//! the last round that named one: the next round then gathers for up to a period, so while
//! several waits read, each round gathers every read since the last and they make about one
//! call a period however many they are. A round that gathered only its opener's id is that
//! read alone, as it would have been without this: one wait's reads of its one instance are
//! only delayed by the gathering time. When the call for a round fails (one unknown id
//! fails DescribeInstances for all), or its opener is cancelled, each read of the round is
//! made alone, and gets its own answer or error; when it was throttled or met a server
//! error, each read gets that error (waits take it as "not yet"). Nothing is kept: the next
//! read asks again.
//!
//! Written here rather than taken from a crate: the data-loader crates (dataloader,
//! async-dataloader) batch by a fixed delay and cache answers, and a read here must never be
//! answered from a cache; what is needed is one open round behind a lock and a watch channel
//! for its answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How long a round gathers ids at least.
const GATHER: Duration = Duration::from_millis(50);

/// Rounds of [`Rounds::default`], at most one a second: EC2 refills its bucket for reads at 20
/// a second, shared with every other read of the account, and a class's waits need no more.
const PERIOD: Duration = Duration::from_secs(1);

/// What one round's call answered, for its readers (None until it has).
type Answers<T> = Option<Answer<T>>;

#[derive(Clone)]
enum Answer<T> {
    /// What it found, by id (an id that is not there is gone).
    Found(Arc<HashMap<String, T>>),
    /// Throttled, a 5xx or a timeout: each reader gets that, as it would have alone, rather
    /// than all of them asking again at once when AWS asks for fewer calls.
    Unavailable {
        action: String,
        region: String,
        message: String,
    },
}

/// Reads by id, one call per round (see the module's documentation).
pub struct Rounds<T> {
    period: Duration,
    state: Mutex<State<T>>,
}

struct State<T> {
    /// When the next round may be due.
    next_at: Option<Instant>,
    /// The id of the last round that named one id only.
    last_alone: Option<String>,
    /// The round still gathering ids.
    open: Option<Arc<Round<T>>>,
}

struct Round<T> {
    ids: Mutex<Vec<String>>,
    answer: watch::Receiver<Answers<T>>,
}

/// Closes its round when due ([`Closing::close`]), or when dropped before (its opener was
/// cancelled: its readers then read alone, and the next read opens a new round).
struct Closing<'a, T> {
    rounds: &'a Rounds<T>,
    round: Arc<Round<T>>,
}

impl<T> Closing<'_, T> {
    /// Takes the state's lock and, if the round is still open, closes it to new reads (and
    /// says so).
    fn shut(&self) -> (std::sync::MutexGuard<'_, State<T>>, bool) {
        let mut state = self
            .rounds
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state
            .open
            .as_ref()
            .is_some_and(|open| Arc::ptr_eq(open, &self.round))
        {
            state.open = None;
            return (state, true);
        }
        (state, false)
    }

    /// Closes the round and returns its ids, sorted and once each. Under the state's lock,
    /// so that no read joins a round whose ids are already taken. A round of several waits
    /// puts the next one a period later.
    fn close(&self) -> Vec<String> {
        let (mut state, _) = self.shut();
        let mut ids = std::mem::take(
            &mut *self
                .round
                .ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        ids.sort();
        ids.dedup();
        let several = match ids.as_slice() {
            [one] => {
                let other = state.last_alone.as_ref().is_some_and(|last| last != one);
                state.last_alone = Some(one.clone());
                other
            }
            _ => true,
        };
        if several {
            state.next_at = Some(Instant::now() + self.rounds.period);
        }
        ids
    }
}

impl<T> Drop for Closing<'_, T> {
    fn drop(&mut self) {
        // Cancelled before it was due: its readers read alone now, so the next round is a
        // period later.
        let (mut state, cancelled) = self.shut();
        if cancelled {
            state.next_at = Some(Instant::now() + self.rounds.period);
        }
    }
}

impl<T> Default for Rounds<T> {
    fn default() -> Self {
        Rounds::new(PERIOD)
    }
}

impl<T> Rounds<T> {
    /// Rounds at least `period` apart.
    pub fn new(period: Duration) -> Self {
        Rounds {
            period,
            state: Mutex::new(State {
                next_at: None,
                last_alone: None,
                open: None,
            }),
        }
    }
}

impl<T: Clone> Rounds<T> {
    /// Reads `id`: in a round's one call `together` (given every id of the round, it answers
    /// what it found by id), or through `alone` (this id only) when the round had no other id
    /// or its call failed. `Ok(None)`: the id is not there.
    pub async fn read<C, CFut, A, AFut>(&self, id: &str, together: C, alone: A) -> Result<Option<T>>
    where
        C: FnOnce(Vec<String>) -> CFut,
        CFut: Future<Output = Result<HashMap<String, T>>>,
        A: FnOnce() -> AFut,
        AFut: Future<Output = Result<Option<T>>>,
    {
        let (mut answer, opened) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            match &state.open {
                Some(open) => {
                    open.ids
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(id.to_string());
                    (open.answer.clone(), None)
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    let round = Arc::new(Round {
                        ids: Mutex::new(vec![id.to_string()]),
                        answer: rx.clone(),
                    });
                    let due = state
                        .next_at
                        .map_or(now + GATHER, |next| next.max(now + GATHER));
                    state.open = Some(round.clone());
                    (rx, Some((tx, round, due)))
                }
            }
        };
        let Some((tx, round, due)) = opened else {
            // Another read's round: its answer, or alone when it has none.
            let answer = match answer.wait_for(Option::is_some).await {
                Ok(answer) => answer.clone(),
                Err(_) => None,
            };
            return match answer {
                Some(Answer::Found(all)) => Ok(all.get(id).cloned()),
                Some(Answer::Unavailable {
                    action,
                    region,
                    message,
                }) => Err(Error::AwsUnavailable {
                    action,
                    resource: id.to_string(),
                    region,
                    message,
                }),
                None => alone().await,
            };
        };
        let closing = Closing {
            rounds: self,
            round,
        };
        tokio::time::sleep_until(due).await;
        let ids = closing.close();
        drop(closing);
        if ids.len() == 1 {
            drop(tx);
            return alone().await;
        }
        match together(ids).await {
            Ok(found) => {
                let found = Arc::new(found);
                let mine = found.get(id).cloned();
                // No reader left is not a failure: they were cancelled.
                let _ = tx.send(Some(Answer::Found(found)));
                Ok(mine)
            }
            Err(Error::AwsUnavailable {
                action,
                resource: _,
                region,
                message,
            }) => {
                let _ = tx.send(Some(Answer::Unavailable {
                    action: action.clone(),
                    region: region.clone(),
                    message: message.clone(),
                }));
                Err(Error::AwsUnavailable {
                    action,
                    resource: id.to_string(),
                    region,
                    message,
                })
            }
            Err(_) => {
                drop(tx);
                alone().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How the call for a round fails.
    #[derive(Clone, Copy)]
    enum Fail {
        Not,
        Refused,
        Throttled,
    }

    fn failure(how: Fail) -> Error {
        match how {
            Fail::Throttled => Error::AwsUnavailable {
                action: "ec2:DescribeInstances".into(),
                resource: "i-1,i-2".into(),
                region: "us-east-1".into(),
                message: "RequestLimitExceeded".into(),
            },
            _ => Error::Aws {
                action: "ec2:DescribeInstances".into(),
                resource: "i-1,i-2".into(),
                region: "us-east-1".into(),
                message: "InvalidInstanceID.NotFound".into(),
                hint: String::new(),
            },
        }
    }

    /// Reads of `ids` at once; returns their answers, the calls made together (the ids of
    /// each) and the number of reads made alone.
    async fn read_all(
        rounds: &Rounds<String>,
        ids: &[&str],
        fail: Fail,
    ) -> (Vec<Result<Option<String>>>, Vec<Vec<String>>, usize) {
        let together_calls = Mutex::new(Vec::new());
        let alone_calls = AtomicUsize::new(0);
        let answers = futures_util::future::join_all(ids.iter().map(|id| {
            rounds.read(
                id,
                |all: Vec<String>| {
                    together_calls.lock().unwrap().push(all.clone());
                    async move {
                        if !matches!(fail, Fail::Not) {
                            return Err(failure(fail));
                        }
                        // "gone" is not there.
                        Ok(all
                            .into_iter()
                            .filter(|i| i != "gone")
                            .map(|i| (i.clone(), format!("state of {i}")))
                            .collect())
                    }
                },
                || {
                    alone_calls.fetch_add(1, Ordering::SeqCst);
                    let id = id.to_string();
                    async move { Ok((id != "gone").then(|| format!("alone {id}"))) }
                },
            )
        }))
        .await;
        (
            answers,
            together_calls.into_inner().unwrap(),
            alone_calls.into_inner(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn reads_at_once_are_one_call_and_each_gets_its_own_answer() {
        let rounds = Rounds::new(PERIOD);
        let (answers, together, alone) =
            read_all(&rounds, &["i-2", "i-1", "gone", "i-1"], Fail::Not).await;
        assert_eq!(together, vec![vec!["gone", "i-1", "i-2"]]);
        assert_eq!(alone, 0);
        let answers: Vec<Option<String>> = answers.into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(
            answers,
            vec![
                Some("state of i-2".to_string()),
                Some("state of i-1".to_string()),
                None,
                Some("state of i-1".to_string()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_on_its_own_is_made_alone() {
        let rounds = Rounds::new(PERIOD);
        let t0 = Instant::now();
        let (answers, together, alone) = read_all(&rounds, &["i-1"], Fail::Not).await;
        assert_eq!(answers[0].as_ref().unwrap().as_deref(), Some("alone i-1"));
        assert!(together.is_empty());
        assert_eq!(alone, 1);
        assert!(t0.elapsed() <= GATHER, "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn one_waits_reads_of_its_instance_are_not_held_back() {
        let rounds = Rounds::new(PERIOD);
        let t0 = Instant::now();
        for _ in 0..5 {
            let (answers, together, alone) = read_all(&rounds, &["i-1"], Fail::Not).await;
            assert_eq!(answers[0].as_ref().unwrap().as_deref(), Some("alone i-1"));
            assert!(together.is_empty());
            assert_eq!(alone, 1);
        }
        assert!(t0.elapsed() <= GATHER * 5, "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_round_is_read_alone_by_each() {
        let rounds = Rounds::new(PERIOD);
        let (answers, together, alone) =
            read_all(&rounds, &["i-1", "i-2", "gone"], Fail::Refused).await;
        assert_eq!(together.len(), 1);
        assert_eq!(alone, 3);
        let answers: Vec<Option<String>> = answers.into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(
            answers,
            vec![
                Some("alone i-1".to_string()),
                Some("alone i-2".to_string()),
                None
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_round_is_throttled_for_each_without_asking_again() {
        let rounds = Rounds::new(PERIOD);
        let (answers, together, alone) =
            read_all(&rounds, &["i-1", "i-2", "i-3"], Fail::Throttled).await;
        assert_eq!(together.len(), 1);
        assert_eq!(alone, 0);
        for (answer, id) in answers.iter().zip(["i-1", "i-2", "i-3"]) {
            match answer {
                Err(e @ Error::AwsUnavailable { resource, .. }) => {
                    assert!(e.is_transient());
                    assert_eq!(resource, id);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_are_a_period_apart() {
        let rounds = Rounds::new(PERIOD);
        let t0 = Instant::now();
        read_all(&rounds, &["i-1", "i-2"], Fail::Not).await;
        let first = t0.elapsed();
        read_all(&rounds, &["i-1", "i-2"], Fail::Not).await;
        assert!(t0.elapsed() >= first + PERIOD, "{:?}", t0.elapsed());
        // Once a period has passed, a read is due after the gathering time only.
        tokio::time::sleep(PERIOD).await;
        let t1 = Instant::now();
        read_all(&rounds, &["i-1", "i-2"], Fail::Not).await;
        assert!(t1.elapsed() <= GATHER, "{:?}", t1.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn many_waits_make_one_call_a_period_and_each_gets_its_own_answer() {
        let rounds: Rounds<String> = Rounds::new(PERIOD);
        let calls = Mutex::new(Vec::new());
        // 30 waits, each reading its id every 2 s for 20 s, starting 0.1 s apart.
        let wait = |n: u64| {
            let rounds = &rounds;
            let calls = &calls;
            async move {
                let id = format!("i-{n}");
                tokio::time::sleep(Duration::from_millis(100 * n)).await;
                let end = Instant::now() + Duration::from_secs(20);
                while Instant::now() < end {
                    let found = rounds
                        .read(
                            &id,
                            |all: Vec<String>| {
                                calls.lock().unwrap().push((Instant::now(), all.len()));
                                async move { Ok(all.into_iter().map(|i| (i.clone(), i)).collect()) }
                            },
                            || {
                                calls.lock().unwrap().push((Instant::now(), 1));
                                let id = id.clone();
                                async move { Ok(Some(id)) }
                            },
                        )
                        .await
                        .unwrap();
                    assert_eq!(found.as_deref(), Some(id.as_str()));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let t0 = Instant::now();
        futures_util::future::join_all((0..30).map(wait)).await;
        let calls = calls.into_inner().unwrap();
        let reads: usize = calls.iter().map(|(_, n)| n).sum();
        // Alone, 30 waits would have made a call for each of these reads.
        assert!(reads >= 30 * 7, "{reads}");
        // The first two waits' first reads are alone (the second read of another id makes
        // the rounds a period apart); then at most one call a period.
        let span = calls.last().unwrap().0 - t0;
        assert!(
            calls.len() as f64 <= span.as_secs_f64() / PERIOD.as_secs_f64() + 2.0,
            "{} calls in {span:?}",
            calls.len()
        );
        for pair in calls[1..].windows(2) {
            assert!(pair[1].0 - pair[0].0 >= PERIOD, "{calls:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_opener_leaves_its_readers_to_read_alone_and_the_next_round_works() {
        let rounds: Rounds<String> = Rounds::new(PERIOD);
        // The opener is cancelled while its round gathers.
        let opener = rounds.read(
            "i-1",
            |_| async { panic!("a cancelled round makes no call") },
            || async { panic!("a cancelled read makes no call") },
        );
        let cancelled = tokio::time::timeout(GATHER / 2, opener).await;
        assert!(cancelled.is_err());
        // The round it opened is closed: reads now open and share a new one.
        let (answers, together, alone) = read_all(&rounds, &["i-2", "i-3"], Fail::Not).await;
        assert_eq!(together, vec![vec!["i-2", "i-3"]]);
        assert_eq!(alone, 0);
        assert_eq!(
            answers[0].as_ref().unwrap().as_deref(),
            Some("state of i-2")
        );

        // A reader that joined a round whose opener is then cancelled reads alone.
        let calls = AtomicUsize::new(0);
        let opener = async {
            let _ = tokio::time::timeout(
                GATHER / 2,
                rounds.read(
                    "i-1",
                    |_| async { panic!("cancelled") },
                    || async { panic!("cancelled") },
                ),
            )
            .await;
        };
        let joiner = rounds.read(
            "i-4",
            |_| async { panic!("the joiner does not call for the round") },
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(Some("alone i-4".to_string())) }
            },
        );
        let ((), joined) = tokio::join!(opener, joiner);
        assert_eq!(joined.unwrap().as_deref(), Some("alone i-4"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
