//! Reads of single things asked at about the same time, answered by one call for all of
//! them: a class's seats each wait for their own instance (running yet? still there?), and
//! 30 of them polling DescribeInstances one instance at a time would be 30 calls a round
//! where one answers every seat.
//!
//! Group commit, not a timer: a lone caller calls at once (no added latency); callers that
//! arrive while a call is in flight join the next call, which goes as soon as that one ends,
//! for all of them. Nothing is kept after it is answered. When the call for many fails (one
//! id it names is gone, throttling), each of its callers asks on its own, so each gets the
//! error its own call would have given; a caller whose batch's leader was cancelled does the
//! same.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::error::Result;

/// What one call for many answered: by key (a key it did not list: `None`), or that it failed.
type Answer<V> = Option<std::result::Result<Arc<HashMap<String, V>>, ()>>;

/// The callers waiting for the next call: their keys, and where its answer goes.
struct Batch<V> {
    keys: Vec<String>,
    answer: watch::Sender<Answer<V>>,
}

/// Reads of one kind (see the module's documentation).
pub struct Together<V> {
    /// Held by the call in flight.
    calling: tokio::sync::Mutex<()>,
    next: Mutex<Option<Batch<V>>>,
}

impl<V> Default for Together<V> {
    fn default() -> Self {
        Together {
            calling: tokio::sync::Mutex::new(()),
            next: Mutex::new(None),
        }
    }
}

impl<V: Clone> Together<V> {
    /// The answer for `key`: from one call `many` makes for every caller asking at about the
    /// same time, or from `one` (this key alone) when that call failed or never came.
    pub async fn read<M, MF, O, OF>(&self, key: &str, many: M, one: O) -> Result<Option<V>>
    where
        M: Fn(Vec<String>) -> MF,
        MF: Future<Output = Result<HashMap<String, V>>>,
        O: FnOnce() -> OF,
        OF: Future<Output = Result<Option<V>>>,
    {
        let mut answer = self.join(key);
        loop {
            tokio::select! {
                changed = answer.changed() => {
                    let got = answer.borrow_and_update().clone();
                    return match (changed, got) {
                        (Ok(()), Some(Ok(found))) => Ok(found.get(key).cloned()),
                        (Ok(()), None) => continue,
                        // The call failed, or its caller went away before answering.
                        _ => one().await,
                    };
                }
                _calling = self.calling.lock() => {
                    // No call in flight: this caller makes the next one, for every caller
                    // waiting (its own batch, or a later one: then its own was answered).
                    let Some(batch) = self.lock_next().take() else {
                        continue;
                    };
                    let keys = batch.keys.clone();
                    let result = many(keys).await.map(Arc::new).map_err(|_| ());
                    let _ = batch.answer.send(Some(result));
                }
            }
        }
    }

    /// Adds `key` to the next call; where its answer will come.
    fn join(&self, key: &str) -> watch::Receiver<Answer<V>> {
        let mut next = self.lock_next();
        let batch = next.get_or_insert_with(|| Batch {
            keys: Vec::new(),
            answer: watch::channel(None).0,
        });
        if !batch.keys.iter().any(|k| k == key) {
            batch.keys.push(key.to_string());
        }
        batch.answer.subscribe()
    }

    fn lock_next(&self) -> std::sync::MutexGuard<'_, Option<Batch<V>>> {
        // A poisoned lock means a panic elsewhere while joining; the batch is still whole.
        self.next.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn callers_at_once_share_calls_and_a_failed_call_leaves_each_its_own() {
        let together: Together<String> = Together::default();
        let calls = Mutex::new(Vec::<Vec<String>>::new());
        let singles = AtomicUsize::new(0);
        let many = |fail: bool| {
            let calls = &calls;
            move |keys: Vec<String>| async move {
                calls.lock().expect("calls").push(keys.clone());
                tokio::time::sleep(Duration::from_millis(50)).await;
                if fail {
                    return Err(crate::error::Error::CallerIp {
                        message: "throttled".into(),
                    });
                }
                Ok(keys
                    .into_iter()
                    .filter(|k| k != "gone")
                    .map(|k| (k.clone(), format!("state of {k}")))
                    .collect())
            }
        };
        let one = |key: String| {
            let singles = &singles;
            move || async move {
                singles.fetch_add(1, Ordering::SeqCst);
                Ok(Some(format!("alone {key}")))
            }
        };

        // A lone caller: one call, for its key alone.
        let alone = together
            .read("i-0", many(false), one("i-0".into()))
            .await
            .expect("read");
        assert_eq!(alone.as_deref(), Some("state of i-0"));

        // Eight at once: the first calls alone, the seven that came meanwhile share the next.
        calls.lock().expect("calls").clear();
        let keys: Vec<String> = (1..=8).map(|i| format!("i-{i}")).collect();
        let answers = futures_util::future::join_all(
            keys.iter()
                .map(|k| together.read(k, many(false), one(k.clone()))),
        )
        .await;
        for (k, a) in keys.iter().zip(&answers) {
            assert_eq!(
                a.as_ref().expect("read").as_deref(),
                Some(format!("state of {k}").as_str())
            );
        }
        let made = calls.lock().expect("calls").clone();
        assert_eq!(made.len(), 2, "{made:?}");
        assert_eq!(made[0], vec!["i-1".to_string()]);
        assert_eq!(made[1].len(), 7);

        // A key the call did not list: None, as DescribeInstances of it alone would say.
        let gone = together
            .read("gone", many(false), one("gone".into()))
            .await
            .expect("read");
        assert_eq!(gone, None);

        // The shared call fails: each of its callers asks on its own.
        calls.lock().expect("calls").clear();
        let answers = futures_util::future::join_all(
            keys.iter()
                .take(4)
                .map(|k| together.read(k, many(true), one(k.clone()))),
        )
        .await;
        for (k, a) in keys.iter().zip(&answers) {
            assert_eq!(
                a.as_ref().expect("read").as_deref(),
                Some(format!("alone {k}").as_str())
            );
        }
        assert_eq!(singles.load(Ordering::SeqCst), 4);
        assert_eq!(calls.lock().expect("calls").len(), 2);
    }

    #[tokio::test]
    async fn a_cancelled_caller_leaves_the_others_answered() {
        let together: Together<String> = Together::default();
        let many = |keys: Vec<String>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(keys.into_iter().map(|k| (k.clone(), k)).collect())
        };
        let one = || async { Ok(Some("alone".to_string())) };
        // The first caller's call is in flight when it is cancelled (a timeout); the second,
        // waiting on it, still gets an answer.
        let first = tokio::time::timeout(Duration::from_millis(10), together.read("a", many, one));
        let second = async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            together.read("b", many, one).await
        };
        let (first, second) = tokio::join!(first, second);
        assert!(first.is_err(), "the first was cancelled");
        assert_eq!(second.expect("read").as_deref(), Some("b"));
    }
}
