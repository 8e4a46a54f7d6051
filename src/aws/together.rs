//! Requests that the tasks of one command make at about the same point, made together once
//! every task that may make one has made it or gone another way. A class's seats each reach
//! "launch my instance", and one RunInstances can launch them all: 30 seats launching on
//! their own would be 30 calls.
//!
//! A task that may make a request takes a [`Ticket`] first (a seat's `up`, when it starts).
//! When it makes its request ([`Together::join`]), it waits until no ticket holder is left
//! that has not made its own (it dropped its ticket: it went another way, failed or was
//! cancelled), or until [`Together::max_wait`] after the first request; then the waiting
//! requests are taken at once and handed to one run of `act` (in the order their tickets
//! were taken: a class's seats in roster order), in a task of their own (so
//! that no caller's cancellation stops a call half-way), and each caller gets its answer.
//! A caller cancelled while waiting takes its request back, and so does one whose `stop`
//! (Ctrl-C) comes while its request waits; once its request is taken, a caller waits for its
//! answer whatever happens (the call is on its way, and its result must be known). Nothing is
//! kept: later requests (tasks that started after, seats of a second batch) gather again.
//!
//! Written here rather than taken from a crate: the batching crates (dataloader,
//! async-dataloader) gather by a fixed delay; what is needed is to know that no other task
//! will come, which only the tickets tell.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How often a waiting caller looks whether the requests are due (a ticket dropped without a
/// request cannot hand them over itself).
const POLL: Duration = Duration::from_millis(200);

/// How a request made together ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined<Ans> {
    /// Its answer.
    Answered(Ans),
    /// `act` gave none for it (it panicked, or answered fewer).
    Unanswered,
    /// `stop` came while it waited: it was taken back, and nothing was asked for it.
    Stopped,
}

/// Requests made together (see the module's documentation).
pub struct Together<Req, Ans> {
    max_wait: Duration,
    state: Mutex<State<Req, Ans>>,
}

struct State<Req, Ans> {
    next_ticket: u64,
    /// Tickets whose holders have not made their request.
    expected: HashSet<u64>,
    /// Requests made and not taken yet, by ticket.
    waiting: Vec<(u64, Req, oneshot::Sender<Ans>)>,
    /// When the first of `waiting` was made.
    first_at: Option<Instant>,
}

/// A task's place among those that may make a request: dropped, it no longer holds the
/// others up (and takes back its request, if it made one that was not taken).
pub struct Ticket<'a, Req, Ans> {
    together: &'a Together<Req, Ans>,
    id: u64,
}

impl<Req, Ans> Drop for Ticket<'_, Req, Ans> {
    fn drop(&mut self) {
        let mut state = self.together.lock();
        state.expected.remove(&self.id);
        state.waiting.retain(|(id, _, _)| *id != self.id);
        if state.waiting.is_empty() {
            state.first_at = None;
        }
    }
}

impl<Req, Ans> Default for Together<Req, Ans> {
    /// Requests wait at most 60 s for the other ticket holders.
    fn default() -> Self {
        Together::new(Duration::from_secs(60))
    }
}

impl<Req, Ans> Together<Req, Ans> {
    /// Requests that wait at most `max_wait` for the other ticket holders.
    #[must_use]
    pub fn new(max_wait: Duration) -> Self {
        Together {
            max_wait,
            state: Mutex::new(State {
                next_ticket: 0,
                expected: HashSet::new(),
                waiting: Vec::new(),
                first_at: None,
            }),
        }
    }

    /// How long a request waits at most for the holders of other tickets to make theirs.
    #[must_use]
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<Req, Ans>> {
        // A poisoned lock means a panic elsewhere under it; the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place among the tasks that may make a request.
    pub fn ticket(&self) -> Ticket<'_, Req, Ans> {
        let mut state = self.lock();
        let id = state.next_ticket;
        state.next_ticket += 1;
        state.expected.insert(id);
        Ticket { together: self, id }
    }

    /// Takes back the request of ticket `id` if it is still waiting; false once it is taken.
    fn withdraw(&self, id: u64) -> bool {
        let mut state = self.lock();
        let before = state.waiting.len();
        state.waiting.retain(|(waiting, _, _)| *waiting != id);
        before != state.waiting.len()
    }

    /// The waiting requests, taken, when they are due: no ticket holder is left that has
    /// not made its request, or the first waited `max_wait`.
    fn take_due(&self) -> Vec<(Req, oneshot::Sender<Ans>)> {
        let mut state = self.lock();
        let due = state.expected.is_empty()
            || state
                .first_at
                .is_some_and(|at| at.elapsed() >= self.max_wait);
        if !due || state.waiting.is_empty() {
            return Vec::new();
        }
        state.first_at = None;
        let mut taken = std::mem::take(&mut state.waiting);
        // In the order the tickets were taken, whatever order the requests came in.
        taken.sort_by_key(|(id, _, _)| *id);
        taken.into_iter().map(|(_, req, tx)| (req, tx)).collect()
    }

    /// Makes `req` with those of the other ticket holders, through one run of `act` (given
    /// the requests, it answers each, in their order), and returns this one's answer; or
    /// takes it back when `stop` comes first while it waits.
    pub async fn join<F, Fut>(
        &self,
        ticket: Ticket<'_, Req, Ans>,
        req: Req,
        act: F,
        stop: impl Future<Output = ()>,
    ) -> Joined<Ans>
    where
        F: Fn(Vec<Req>) -> Fut,
        Fut: Future<Output = Vec<Ans>> + Send + 'static,
        Ans: Send + 'static,
    {
        let (tx, mut rx) = oneshot::channel();
        {
            let mut state = self.lock();
            state.expected.remove(&ticket.id);
            state.waiting.push((ticket.id, req, tx));
            state.first_at.get_or_insert_with(Instant::now);
        }
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        loop {
            let due = self.take_due();
            if !due.is_empty() {
                let (reqs, answer_to): (Vec<Req>, Vec<_>) = due.into_iter().unzip();
                let acting = act(reqs);
                tokio::spawn(async move {
                    for (tx, answer) in answer_to.into_iter().zip(acting.await) {
                        // A caller gone meanwhile (cancelled) does not take its answer.
                        let _ = tx.send(answer);
                    }
                });
            }
            tokio::select! {
                answer = &mut rx => {
                    return answer.map_or(Joined::Unanswered, Joined::Answered);
                }
                () = &mut stop, if !stopping => {
                    if self.withdraw(ticket.id) {
                        return Joined::Stopped;
                    }
                    // Taken already: its answer is on its way.
                    stopping = true;
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// What each run of `act` was given.
    type Runs = Arc<Mutex<Vec<Vec<u32>>>>;

    fn act(runs: &Runs) -> impl Fn(Vec<u32>) -> std::future::Ready<Vec<u32>> + '_ {
        move |reqs: Vec<u32>| {
            runs.lock().expect("runs").push(reqs.clone());
            std::future::ready(reqs.iter().map(|r| r * 10).collect())
        }
    }

    use std::future::pending;

    #[tokio::test]
    async fn requests_of_every_ticket_holder_are_made_in_one_run() {
        let together: Together<u32, u32> = Together::new(Duration::from_secs(60));
        let runs = Runs::default();
        let tickets: Vec<_> = (0..3).map(|_| together.ticket()).collect();
        let answers = futures_util::future::join_all(
            tickets
                .into_iter()
                .zip(1..)
                .map(|(t, req)| together.join(t, req, act(&runs), pending())),
        )
        .await;
        assert_eq!(
            answers,
            [10, 20, 30]
                .map(Joined::Answered)
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(*runs.lock().expect("runs"), vec![vec![1, 2, 3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_goes_another_way_holds_no_one_up_and_one_that_never_comes_only_until_the_bound(
    ) {
        let together: Together<u32, u32> = Together::new(Duration::from_secs(60));
        let runs = Runs::default();
        // Two requests and a ticket dropped without one: made at once, together.
        let (a, b, c) = (together.ticket(), together.ticket(), together.ticket());
        let started = Instant::now();
        let (x, y, ()) = tokio::join!(
            together.join(a, 1, act(&runs), pending()),
            together.join(b, 2, act(&runs), pending()),
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(c);
            }
        );
        assert_eq!((x, y), (Joined::Answered(10), Joined::Answered(20)));
        assert!(started.elapsed() < Duration::from_secs(2));
        // A holder that never makes its request: the others go after the bound.
        let (d, _e) = (together.ticket(), together.ticket());
        let started = Instant::now();
        assert_eq!(
            together.join(d, 4, act(&runs), pending()).await,
            Joined::Answered(40)
        );
        assert!(started.elapsed() >= Duration::from_secs(60));
        assert_eq!(*runs.lock().expect("runs"), vec![vec![1, 2], vec![4]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_cancelled_while_waiting_takes_its_request_back() {
        let together: Together<u32, u32> = Together::new(Duration::from_secs(60));
        let runs = Runs::default();
        let (a, b, c) = (together.ticket(), together.ticket(), together.ticket());
        let cancelled = tokio::time::timeout(
            Duration::from_secs(1),
            together.join(a, 1, act(&runs), pending()),
        );
        assert!(cancelled.await.is_err());
        let (y, z) = tokio::join!(
            together.join(b, 2, act(&runs), pending()),
            together.join(c, 3, act(&runs), pending())
        );
        assert_eq!((y, z), (Joined::Answered(20), Joined::Answered(30)));
        assert_eq!(*runs.lock().expect("runs"), vec![vec![2, 3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_takes_a_waiting_request_back_but_waits_for_one_taken() {
        let together: Together<u32, u32> = Together::new(Duration::from_secs(60));
        let runs = Runs::default();
        let soon = |secs| tokio::time::sleep(Duration::from_secs(secs));
        // Waiting for another holder when the stop comes: taken back, nothing made.
        let (a, b) = (together.ticket(), together.ticket());
        assert_eq!(
            together.join(a, 1, act(&runs), soon(1)).await,
            Joined::Stopped
        );
        assert!(runs.lock().expect("runs").is_empty());
        drop(b);
        // Taken, its call still going when the stop comes: its answer all the same.
        let slow = |reqs: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reqs.iter().map(|r| r * 10).collect::<Vec<u32>>()
        };
        let c = together.ticket();
        assert_eq!(
            together.join(c, 3, slow, soon(1)).await,
            Joined::Answered(30)
        );
    }
}
