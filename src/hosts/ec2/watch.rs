//! Watching an instance come up through its serial console: the user-data's phase markers
//! drive the progress display, an error marker ends the wait with its phase and cause, and
//! the token line (which says whose token Jupyter accepts, never the token) ends it. Every
//! wait has a deadline.

use std::time::{Duration, Instant};

use super::console::{self, Marker, MarkerKind, Phase, Served};
use crate::aws::ec2::Instance;
use crate::aws::retry;
use crate::aws::Cloud;
use crate::error::{Error, Result};
use crate::output::Printer;
use crate::token;

/// How often the console is read: the token is seen at most this late. GetConsoleOutput is a
/// cheap read; one call a second for the few minutes of a boot is well within EC2's limits.
const POLL: Duration = Duration::from_secs(1);
/// How often a wait for a new instance's first boot reads the console while its host has not
/// pulled the image yet, when this process waits for other instances too (a class):
/// booting, setting up, logging in and pulling take most of a first boot, and only an error
/// would be acted on before the image is there; the token comes after. Each read saved
/// leaves the class's shared pace (see [`PACE`]) to the seats whose token is near. A lone
/// wait, and a wait for a started or restarted host (whose console says no `pulled`), read
/// every [`POLL`] throughout.
const EARLY_POLL: Duration = Duration::from_secs(4);
/// The waits of this process now.
static WAITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a wait in [`WAITS`] while it lives.
struct Waiting;

impl Waiting {
    fn new() -> Self {
        WAITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How often the wait asks whether the instance is still there.
const CHECK: Duration = Duration::from_secs(5);

/// How long to wait before the next read, given the newest phase marker seen (None: none
/// yet), the number of waits in this process and whether this is a new instance's first boot.
fn next_poll(newest: Option<Phase>, waits: usize, first_boot: bool) -> Duration {
    if first_boot && waits > 1 && newest.is_none_or(|p| p < Phase::Pulled) {
        EARLY_POLL
    } else {
        POLL
    }
}

/// Console reads of this process together, at most one per this interval: a class waits for
/// many instances at once, and 30 seats at one read a second each would outrun EC2's refill of
/// its bucket for reads (20 a second, shared with every other read) and be throttled. One
/// deployment is not slowed; seats are read in turn, each less often.
const PACE: Duration = Duration::from_millis(100);

/// Waits for this process's next console read (see [`PACE`]).
async fn paced() {
    static NEXT: std::sync::Mutex<Option<tokio::time::Instant>> = std::sync::Mutex::new(None);
    let wait = match NEXT.lock() {
        Ok(mut next) => {
            let now = tokio::time::Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + PACE);
            at - now
        }
        // A poisoned lock: a panic elsewhere; reading unpaced is still correct.
        Err(_) => Duration::ZERO,
    };
    tokio::time::sleep(wait).await;
}
/// The newest console read of each instance this process made, and when ([`shared_read`]).
type Reading = Option<(tokio::time::Instant, Option<String>)>;
type Readings = std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<Reading>>>;
static READS: std::sync::LazyLock<std::sync::Mutex<Readings>> =
    std::sync::LazyLock::new(Default::default);

/// The console of instance `id` as `read` gives it (its outer None: a transient failure, as
/// [`retry::tolerate`] says), or as another wait of this process read it less than [`POLL`]
/// ago: the seats of a shared host, each waiting for its own markers, share one
/// GetConsoleOutput a second rather than one each. One read of an instance at a time; a wait
/// that finds one in flight takes its answer.
async fn shared_read<F, Fut>(id: &str, read: F) -> Result<Option<Option<String>>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Option<String>>>>,
{
    let slot = READS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(id.to_string())
        .or_default()
        .clone();
    let mut last = slot.lock().await;
    if let Some((at, text)) = &*last {
        if at.elapsed() < POLL {
            return Ok(Some(text.clone()));
        }
    }
    let fresh = read().await?;
    if let Some(text) = &fresh {
        *last = Some((tokio::time::Instant::now(), text.clone()));
    }
    Ok(fresh)
}

/// How long reading the instance's address may keep meeting transient errors.
const RECHECK: Duration = Duration::from_secs(60);
/// Lines of console shown when something goes wrong.
const TAIL: usize = 15;

/// What the console showed when Jupyter answered.
pub struct Ready {
    pub served: Served,
    pub markers: Vec<Marker>,
    pub instance: Instance,
}

/// How to wait.
pub struct Wait {
    pub deadline: Instant,
    /// The user's `--wait`, for messages.
    pub wait_secs: u64,
    /// Announce phases already on the console too (a new instance) or only new ones.
    pub replay: bool,
    /// A console text read just before (saves one call).
    pub first_read: Option<String>,
    /// Nitro types serve the live console (`Latest`).
    pub nitro: bool,
    /// After a start: only the console of a boot that began at this time or later (Unix
    /// seconds; the watchdog's `boot=`) counts.
    pub boot_after: Option<i64>,
}

/// Waits until the console of `instance` shows the token line, an error marker, the
/// instance going away, or the deadline.
pub async fn until_token(
    cloud: &Cloud,
    instance: &Instance,
    wait: Wait,
    printer: &Printer,
) -> Result<Ready> {
    let Wait {
        deadline,
        wait_secs,
        replay,
        mut first_read,
        nitro,
        boot_after,
    } = wait;
    let mut shown = 0usize;
    let mut first = true;
    let mut last_text = String::new();
    let mut last_phase = "boot".to_string();
    let mut newest: Option<Phase> = None;
    let first_boot = replay && boot_after.is_none() && first_read.is_none();
    let mut checked = Instant::now();
    let _waiting = Waiting::new();
    loop {
        let read = match first_read.take() {
            Some(text) => Some(text),
            // Throttled or a 5xx: nothing new this time; the deadline still holds.
            None => shared_read(&instance.id, || async {
                paced().await;
                retry::tolerate(cloud.console(&instance.id, nitro).await)
            })
            .await?
            .flatten()
            .map(|text| console::seen_by(text, instance)),
        };
        let read = match (read, boot_after) {
            (Some(text), Some(after)) => console::since_boot(&text, after).map(str::to_string),
            (read, _) => read,
        };
        if let Some(text) = read {
            let markers = console::markers(&text);
            if first && !replay {
                // An instance that is already up: its history is not progress.
                shown = markers.len();
            }
            first = false;
            for m in markers.iter().skip(shown) {
                if let MarkerKind::Phase(p) = &m.phase {
                    printer.note(format!("  {}: {}", instance.id, describe(*p)));
                    last_phase = p.to_string();
                }
            }
            shown = shown.max(markers.len());
            newest = markers
                .iter()
                .rev()
                .find_map(|m| match m.phase {
                    MarkerKind::Phase(p) => Some(p),
                    MarkerKind::Error { .. } => None,
                })
                .or(newest);
            // The newest marker decides: an error after a token (a failed restart) is an error.
            match markers.last().map(|m| &m.phase) {
                Some(MarkerKind::Error { phase, cause }) => {
                    return Err(Error::BootFailed {
                        deployment: instance.deployment.clone(),
                        instance: instance.id.clone(),
                        phase: phase.clone(),
                        // The cause quotes a log line, which may carry a token.
                        cause: crate::token::redact(cause),
                        hint: hint_for(phase, &instance.deployment),
                    });
                }
                Some(MarkerKind::Phase(Phase::Token | Phase::Ready)) => {
                    // The token line may still be on its way (or split by the console).
                    if let Some(served) = console::served(&text) {
                        // A running instance already has its address; ask only when it was
                        // seen before it had one.
                        let instance = match &instance.public_ip {
                            Some(_) => instance.clone(),
                            None => retry::read(RECHECK, || cloud.instance(&instance.id))
                                .await?
                                .map_or_else(|| instance.clone(), |i| i.seated_as(instance)),
                        };
                        return Ok(Ready {
                            served,
                            markers,
                            instance,
                        });
                    }
                }
                _ => {}
            }
            last_text = text;
        }
        // The instance may be terminated from elsewhere, or fail to start.
        if checked.elapsed() >= CHECK {
            checked = Instant::now();
            match retry::tolerate(cloud.instance(&instance.id).await)? {
                // Transient: look again at the next check.
                None => {}
                Some(Some(i)) if matches!(i.state.as_str(), "pending" | "running") => {}
                Some(Some(i)) => {
                    return Err(Error::BootFailed {
                        deployment: instance.deployment.clone(),
                        instance: instance.id.clone(),
                        phase: last_phase,
                        cause: format!("the instance is {}", i.state),
                        hint: format!("something else stopped or terminated it; `labship up {}` launches a new one", instance.deployment),
                    })
                }
                Some(None) => {
                    return Err(Error::BootFailed {
                        deployment: instance.deployment.clone(),
                        instance: instance.id.clone(),
                        phase: last_phase,
                        cause: "the instance no longer exists".into(),
                        hint: format!("`labship up {}` launches a new one", instance.deployment),
                    })
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::InstanceTimeout {
                deployment: instance.deployment.clone(),
                instance: instance.id.clone(),
                seconds: wait_secs,
                phase: last_phase,
                hint: timeout_hint(&last_text, &instance.deployment),
            });
        }
        let next = next_poll(
            newest,
            WAITS.load(std::sync::atomic::Ordering::SeqCst),
            first_boot,
        );
        // Never past the deadline: its message comes on time.
        tokio::time::sleep(next.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

fn describe(p: Phase) -> &'static str {
    match p {
        Phase::Begin => "booted; user-data started",
        Phase::DockerReady => "Docker is ready",
        Phase::LoggedIn => "logged in to ECR",
        Phase::Pulled => "image pulled",
        Phase::Started => "container started",
        Phase::Token => "Jupyter accepts the token",
        Phase::Ready => "Jupyter answers",
    }
}

fn hint_for(phase: &str, deployment: &str) -> String {
    let what = match phase {
        "host" => "the host image lacks what labship needs (the AWS CLI v2 to log in to ECR): use --ami ecs or --ami al2023, or an AMI that has it",
        "docker" | "docker-ready" => "Docker could not be installed or started on the host: with --ami, choose an AMI with Docker or dnf/apt; the default --ami ecs has Docker preinstalled",
        "login" | "logged-in" => "the instance could not log in to ECR: check that the instance role (labship-instance, or the deployment's own labship-dep-* when it has [data] inputs) may pull from the repository (their inline policies cover repository/labship/*; see infra/README.md for another repository) and that the subnet reaches ECR (internet gateway, NAT or VPC endpoints)",
        "tls" => "the host could not make Jupyter's TLS certificate: with --ami, choose an AMI with openssl (the default ecs and al2023 have it)",
        "token" => "the instance could not read its token from SSM Parameter Store: check that the instance role (labship-instance, or the deployment's own labship-dep-*) may call ssm:GetParameter on its /labship/<name>/token and that the subnet reaches SSM",
        "data" => "the host could not put the workspace on its data volume (not attached in time, not blank without a file system, or not mountable: the cause above says which); a missing one is attached by `labship up`, and `aws ec2 describe-volumes --filters Name=tag:labship:volume,Values=workspace` shows where it is",
        "pull" | "pulled" => "the instance could not pull the image: check that the push finished (`labship push`) and that the subnet reaches ECR",
        "start" | "started" | "jupyter" | "ready" => "the container did not start Jupyter: run the image locally (`labship up --local`) to see why",
        _ => "see the cause above",
    };
    format!("{what}. `labship up --ec2` again retries on the same instance; `labship logs {deployment} --ec2` shows the whole console; `labship down {deployment} --ec2 --delete-data` removes the instance")
}

fn timeout_hint(console: &str, deployment: &str) -> String {
    let clean = token::clean::clean_console(console);
    let lines: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
    let tail = crate::token::redact(&tail);
    let shown = if tail.is_empty() {
        "the console is still empty (EC2 may take a few minutes to show it)".to_string()
    } else {
        format!("last console lines:\n{tail}")
    };
    format!("{shown}\nwait longer with `labship up --wait SECONDS`, look again with `labship logs {deployment} --ec2`, or remove it with `labship down {deployment} --ec2`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_reads_a_console_less_often_until_its_image_is_pulled() {
        // One wait: every second throughout.
        for phase in [
            None,
            Some(Phase::Begin),
            Some(Phase::Pulled),
            Some(Phase::Started),
        ] {
            assert_eq!(next_poll(phase, 1, true), POLL, "{phase:?}");
        }
        // Several, on first boots: slowly while the hosts boot, log in and pull, every
        // second after.
        for phase in [
            None,
            Some(Phase::Begin),
            Some(Phase::DockerReady),
            Some(Phase::LoggedIn),
        ] {
            assert_eq!(next_poll(phase, 30, true), EARLY_POLL, "{phase:?}");
            // A started or restarted host says no `pulled`: every second.
            assert_eq!(next_poll(phase, 30, false), POLL, "{phase:?}");
        }
        for phase in [Phase::Pulled, Phase::Started, Phase::Token, Phase::Ready] {
            assert_eq!(next_poll(Some(phase), 30, true), POLL, "{phase:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_waits_for_one_instance_share_its_console_reads() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = AtomicUsize::new(0);
        let read = |text: &'static str| {
            let calls = &calls;
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(Some(Some(text.to_string())))
            }
        };
        // Three seats of one host at once: one read, its answer for all.
        let seen =
            futures_util::future::join_all((0..3).map(|_| shared_read("i-shared-1", read("boot"))))
                .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for s in seen {
            assert_eq!(s.expect("read"), Some(Some("boot".to_string())));
        }
        // Another instance is read on its own.
        shared_read("i-shared-2", read("other"))
            .await
            .expect("read");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A second later the console is read again, with what it says now.
        tokio::time::sleep(POLL).await;
        let again = shared_read("i-shared-1", read("token"))
            .await
            .expect("read");
        assert_eq!(again, Some(Some("token".to_string())));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A transient failure is not kept: the next wait reads again.
        tokio::time::sleep(POLL).await;
        let failing = || async { Ok(None) };
        assert_eq!(
            shared_read("i-shared-1", failing).await.expect("read"),
            None
        );
        shared_read("i-shared-1", read("ready"))
            .await
            .expect("read");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn console_reads_of_many_waits_take_turns() {
        let t0 = tokio::time::Instant::now();
        let mut reads: Vec<Duration> = futures_util::future::join_all((0..5).map(|_| async {
            paced().await;
            t0.elapsed()
        }))
        .await;
        reads.sort();
        // One read now, then one every PACE, whatever the number of waits.
        for pair in reads.windows(2) {
            assert!(pair[1] - pair[0] >= PACE, "{reads:?}");
        }
        assert!(reads[4] >= PACE * 4, "{reads:?}");
    }
}
