//! Answers that hold for the whole of one command, asked of AWS once however many
//! deployments ask for them. A class's `up` runs one `up` per seat, and each needs the same
//! caller, instance type, host image, network, key pair, shared instance profile, registry
//! login and repository: without this, a class of 30 asks each of them 30 times.
//!
//! Only answers that labship itself does not change in the same command are kept (never
//! instances, volumes or tokens; a class's group is made once for all its seats, and a
//! group's rules are made right once for the same rules); what removes a kept resource (a
//! repository, the shared profile) forgets it. Callers asking at once wait for the one call in flight; when
//! it fails, nothing is kept and the callers that waited each ask at once, as they would
//! have without this (a failing lookup is not retried seat after seat). Each [`super::Aws`]
//! has its own (`Aws::in_region` starts afresh: answers are per region).
//!
//! Written here rather than taken from a caching crate (moka, cached): what is needed is a
//! map of `tokio::sync::OnceCell`s and a lock for the call in flight; a cache crate would
//! add eviction and expiry that a command lasting minutes has no use for.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use super::ec2::{HostImage, InstanceTypeInfo, Network};
use super::ecr::Repository;
use crate::docker::RegistryAuth;
use crate::error::Result;

/// One answer per key, asked once.
pub struct Keyed<K, V>(Mutex<HashMap<K, Arc<Slot<V>>>>);

/// A key's answer, and the lock its one call in flight holds.
struct Slot<V> {
    answer: OnceCell<V>,
    asking: tokio::sync::Mutex<()>,
}

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Slot {
            answer: OnceCell::new(),
            asking: tokio::sync::Mutex::new(()),
        }
    }
}

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Keyed(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash, V: Clone> Keyed<K, V> {
    /// The answer for `key`: kept from an earlier call, awaited from one in flight, or asked
    /// now with `ask` (and kept when it succeeds).
    pub async fn get_or_try<F, Fut>(&self, key: K, ask: F) -> Result<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        Ok(self.get_or_try_first(key, ask).await?.0)
    }

    /// [`Self::get_or_try`], and whether this caller's `ask` made the answer (a resource it
    /// reports as created is reported so once, and removed again only by the one who made
    /// it).
    pub async fn get_or_try_first<F, Fut>(&self, key: K, ask: F) -> Result<(V, bool)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        let slot = self.slot(key);
        if let Some(kept) = slot.answer.get() {
            return Ok((kept.clone(), false));
        }
        let first = slot.asking.try_lock();
        match first {
            // No call in flight: this one asks, and the others wait for it.
            Ok(_asking) => Ok(keep(&slot, ask().await?)),
            Err(_) => {
                // Wait for the call in flight to end.
                drop(slot.asking.lock().await);
                match slot.answer.get() {
                    Some(kept) => Ok((kept.clone(), false)),
                    // It failed: every caller that waited asks on its own, at once.
                    None => Ok(keep(&slot, ask().await?)),
                }
            }
        }
    }

    /// Forgets the answer for `key` (what it names was removed): the next caller asks again.
    pub fn forget(&self, key: &K) {
        self.map().remove(key);
    }

    fn slot(&self, key: K) -> Arc<Slot<V>> {
        self.map().entry(key).or_default().clone()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<Slot<V>>>> {
        // A poisoned lock means a panic elsewhere while inserting; the map is still whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps `answer` unless another caller's was kept first: (the kept one, whether it is
/// this caller's).
fn keep<V: Clone>(slot: &Slot<V>, answer: V) -> (V, bool) {
    let mine = slot.answer.set(answer.clone()).is_ok();
    (slot.answer.get().cloned().unwrap_or(answer), mine)
}

/// The answers one [`super::Aws`] keeps (see the module's documentation).
#[derive(Default)]
pub struct Lookups {
    /// STS GetCallerIdentity's ARN.
    pub caller: Keyed<(), String>,
    /// DescribeInstanceTypes, by type (a class's fallback type is a second key).
    pub instance_types: Keyed<String, InstanceTypeInfo>,
    /// The host image (its SSM parameter and DescribeImages), by what `ec2.ami` says and the
    /// architecture.
    pub host_images: Keyed<String, HostImage>,
    /// The VPC (and the subnet's zone), by subnet.
    pub networks: Keyed<Option<String>, Network>,
    /// Key pairs found to exist, by name.
    pub key_pairs: Keyed<String, ()>,
    /// The shared instance role and profile made sure of, and whether this command made them.
    pub shared_profile: Keyed<(), bool>,
    /// ECR's login, by the registry endpoint that replaces ECR's (tests, private endpoints).
    /// Its password is valid for 12 hours; a command lasts minutes.
    pub registry_logins: Keyed<Option<String>, RegistryAuth>,
    /// Repositories made sure of (created, lifecycle policy, tagged), by name.
    pub repositories: Keyed<String, Repository>,
    /// The security group a class's seats share, made sure of (found or created, and its
    /// rules): its id and whether it was created, by class and VPC.
    pub class_groups: Keyed<(String, String), (String, bool)>,
    /// The port and access of the seats in a class's group (a new seat takes them), by
    /// class.
    pub class_settings: Keyed<String, Option<(u16, crate::config::Access)>>,
    /// Not an answer kept: the rules the seats of this command asked of their class's group,
    /// by group id (what the group keeps when the class's `up` ends).
    pub shared_rules: Mutex<HashMap<String, Vec<super::ec2::Ingress>>>,
    /// Groups whose rules were made exactly these (a class's seats share one): whether a
    /// rule was added or removed, by group id and rules.
    pub ingress_set: Keyed<(String, Vec<super::ec2::Ingress>), bool>,
    /// Not an answer kept: instances read by id at about the same time (a class's seats
    /// waiting for theirs), one DescribeInstances a round, rounds at least a second apart.
    pub instance_reads: super::rounds::Rounds<super::ec2::Instance>,
    /// Not an answer kept: the launches of a class's seats, made together.
    pub seat_launches: super::together::Together<
        crate::hosts::ec2::launch::SeatLaunch,
        Result<super::ec2::Instance>,
    >,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn callers_at_once_share_one_call_and_a_failure_is_not_kept() {
        let keyed: Keyed<&str, usize> = Keyed::default();
        let calls = AtomicUsize::new(0);
        let ask = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(calls.load(Ordering::SeqCst))
        };
        let answers = futures_util::future::join_all((0..8).map(|_| keyed.get_or_try("a", ask)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()
            .expect("answers");
        assert_eq!(answers, vec![1; 8]);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one call for eight callers"
        );

        // Another key is asked on its own.
        assert_eq!(keyed.get_or_try("b", ask).await.expect("b"), 2);

        // A failure is not kept: the next caller asks again, and its answer is kept.
        let failed = keyed
            .get_or_try("c", || async {
                Err(crate::error::Error::CallerIp {
                    message: "down".into(),
                })
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(keyed.get_or_try("c", ask).await.expect("c"), 3);
        assert_eq!(keyed.get_or_try("c", ask).await.expect("c again"), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A failed call with callers waiting: they ask at once (not one after another), and
        // one answer is kept for all.
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let tries = AtomicUsize::new(0);
        let flaky = || async {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            if n == 0 {
                Err(crate::error::Error::CallerIp {
                    message: "throttled".into(),
                })
            } else {
                Ok(n)
            }
        };
        let answers =
            futures_util::future::join_all((0..6).map(|_| keyed.get_or_try_first("e", flaky)))
                .await;
        assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 1);
        let kept: Vec<usize> = answers.iter().flatten().map(|(v, _)| *v).collect();
        assert!(
            kept.windows(2).all(|w| w[0] == w[1]),
            "one answer: {kept:?}"
        );
        assert_eq!(
            answers.iter().flatten().filter(|(_, mine)| *mine).count(),
            1
        );
        assert_eq!(tries.load(Ordering::SeqCst), 6);
        assert_eq!(
            most.load(Ordering::SeqCst),
            5,
            "the five that waited asked together"
        );

        // Only the caller whose call made the answer is told so; a forgotten answer is asked
        // again.
        assert_eq!(
            keyed.get_or_try_first("d", ask).await.expect("d"),
            (4, true)
        );
        assert_eq!(
            keyed.get_or_try_first("d", ask).await.expect("d"),
            (4, false)
        );
        keyed.forget(&"d");
        assert_eq!(
            keyed.get_or_try_first("d", ask).await.expect("d"),
            (5, true)
        );
    }
}
