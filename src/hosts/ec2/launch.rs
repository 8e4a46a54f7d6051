//! A class's seats launched together: the seats of one `up` that need a new instance each
//! meet before RunInstances ([`crate::aws::together`]), and those that would be launched
//! alike (same AMI, type, zone, group, profile...) are launched by one RunInstances of as
//! many instances. Their user-data is one script ([`userdata::batch`]) in which each instance
//! takes its seat's name by its launch index, and their instances are tagged with the class
//! and `labship:launch-seats` (the seats in launch-index order) at creation, then each with
//! its own deployment and seat right after (CreateTags: a seat's tags are not the others').
//!
//! Seats that cannot share a script or a tag (too many for the 16 KiB user-data or the
//! 256-character tag) are split in halves until they can; a seat alike to no other is
//! launched alone, as a deployment is. When EC2 launches fewer instances than asked (it had
//! no capacity for more), the seats without one fail as for want of capacity, and the
//! class's second batch launches them again.

use std::io::Read as _;
use std::time::Duration;

use super::userdata;
use crate::aws::ec2::{Instance, LaunchSpec};
use crate::aws::together::{Joined, Ticket};
use crate::aws::{Aws, Cloud};
use crate::error::{Error, Result};
use crate::hosts::SeatOf;
use crate::tags;

/// The step a Ctrl-C stops here, in the user's words.
const LAUNCHING: &str = "launching the seats' instances";

/// A seat's launch, as it waits for the others'.
pub struct SeatLaunch {
    spec: LaunchSpec,
    group: String,
    profile_wait: Duration,
}

/// A seat's place among the launches of its command ([`crate::aws::lookups::Lookups`]).
pub type SeatTicket<'a> = Ticket<'a, SeatLaunch, Result<Instance>>;

/// A place among the seats of this command that may launch an instance: taken when a seat's
/// `up` starts (before its first wait, so that every seat the class starts at once has one
/// before any launches), and dropped when it goes another way (its instance runs or is
/// stopped, or the `up` fails), so that the others do not wait for it.
pub fn ticket(aws: &Aws) -> SeatTicket<'_> {
    aws.lookups.seat_launches.ticket()
}

/// Launches the seat's instance (`spec`, into `group`), with those of the other seats of
/// this command that launch alike: one RunInstances for them all.
pub async fn launch_seat(
    cloud: &Cloud,
    ticket: SeatTicket<'_>,
    spec: &LaunchSpec,
    group: &str,
    profile_wait: Duration,
) -> Result<Instance> {
    let request = SeatLaunch {
        spec: spec.clone(),
        group: group.to_string(),
        profile_wait,
    };
    let acting = cloud.clone();
    let launches = &cloud.lookups().seat_launches;
    // Ctrl-C while the seats gather takes this seat's launch back; once it is taken, the
    // seat waits for its instance (the launch is on its way; its instances are recorded as
    // made, for the error's list, and the next safe point stops the seat).
    let joined = launches
        .join(
            ticket,
            request,
            move |seats| {
                let cloud = acting.clone();
                async move { launch_together(&cloud, seats).await }
            },
            crate::interrupt::stopped(),
        )
        .await;
    let answer = match joined {
        Joined::Answered(answer) => Some(answer),
        Joined::Stopped => {
            crate::interrupt::checkpoint(LAUNCHING)?;
            None
        }
        Joined::Unanswered => None,
    };
    answer.unwrap_or_else(|| {
        Err(Error::Aws {
            action: "ec2:RunInstances".into(),
            resource: spec.deployment.clone(),
            region: cloud.region.clone(),
            message: "the launch of the class's seats ended without an answer for this one".into(),
            hint: "run `labship status` to see whether its instance exists, and `labship up` again"
                .into(),
        })
    })
}

/// Each seat's instance, in the seats' order: those alike launched together.
async fn launch_together(cloud: &Cloud, seats: Vec<SeatLaunch>) -> Vec<Result<Instance>> {
    // Ctrl-C while they gathered: no launch.
    if let Err(e) = crate::interrupt::checkpoint(LAUNCHING) {
        return for_each(e, seats.len());
    }
    let mut answers: Vec<Option<Result<Instance>>> = seats.iter().map(|_| None).collect();
    // The seats of one shared host are one instance: launched by its first seat's request
    // (each seat of the host asks for the same), answered to each as its seat.
    let mut hosts: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for (n, seat) in seats.iter().enumerate() {
        let host = shared_of(&seat.spec).map(|h| format!("{} {}", h.class, h.seats.join(" ")));
        match hosts.iter_mut().find(|(k, _)| host.is_some() && *k == host) {
            Some((_, members)) => members.push(n),
            None => hosts.push((host, vec![n])),
        }
    }
    // A host is launched with all its seats or not at all: one launched for some of them
    // would list seats that never come onto it (their tokens, volumes and rules missing), and
    // another launch would make a second instance for the same seats.
    let mut units: Vec<(SeatLaunch, Vec<usize>)> = Vec::new();
    for (_, members) in hosts {
        let first = &seats[members[0]];
        if let Some(why) = not_launchable(&seats, &members) {
            for &n in &members {
                answers[n] = Some(Err(Error::Aws {
                    action: "ec2:RunInstances".into(),
                    resource: seats[n].spec.deployment.clone(),
                    region: cloud.region.clone(),
                    message: format!("its host was not launched: {why}"),
                    hint: "run the class's `labship up` again: the seats without an instance are placed anew".into(),
                }));
            }
            continue;
        }
        // Launched in a kept data volume's zone when a seat has one (another seat's kept
        // volume in another zone is copied to it when it is attached).
        let mut spec = first.spec.clone();
        let mut by_slot = members.clone();
        by_slot.sort_by_key(|&n| shared_of(&seats[n].spec).map_or(0, |h| h.slot));
        spec.availability_zone = by_slot
            .iter()
            .find_map(|&n| seats[n].spec.availability_zone.clone());
        let unit = SeatLaunch {
            spec,
            group: first.group.clone(),
            profile_wait: first.profile_wait,
        };
        units.push((unit, members));
    }
    let mut alike: Vec<(String, Vec<usize>)> = Vec::new();
    for (u, (unit, _)) in units.iter().enumerate() {
        let key = shared_key(unit, true);
        match alike.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(u),
            None => alike.push((key, vec![u])),
        }
    }
    let launched = futures_util::future::join_all(alike.iter().map(|(_, members)| {
        let group: Vec<&SeatLaunch> = members.iter().map(|&u| &units[u].0).collect();
        async move { launch_alike(cloud, &group).await }
    }))
    .await;
    for ((_, members), results) in alike.iter().zip(launched) {
        for (&u, result) in members.iter().zip(results) {
            let seats_of = &units[u].1;
            match result {
                Ok(host) => {
                    for &n in seats_of {
                        answers[n] = Some(Ok(seated(host.clone(), &seats[n].spec)));
                    }
                }
                // The first seat's answer is the error itself (its kind kept for the
                // report), the others' its copies.
                Err(e) => {
                    for &n in &seats_of[1..] {
                        answers[n] = Some(Err(e.again()));
                    }
                    answers[seats_of[0]] = Some(Err(e));
                }
            }
        }
    }
    answers
        .into_iter()
        .zip(&seats)
        .map(|(answer, seat)| {
            answer.unwrap_or_else(|| {
                Err(Error::Aws {
                    action: "ec2:RunInstances".into(),
                    resource: seat.spec.deployment.clone(),
                    region: cloud.region.clone(),
                    message: "no launch was made for this seat".into(),
                    hint: "run `labship up` again".into(),
                })
            })
        })
        .collect()
}

/// Why the seats `members` of one host cannot be launched (None: they can): not all of its
/// seats came to the launch, or they would be launched differently.
fn not_launchable(seats: &[SeatLaunch], members: &[usize]) -> Option<String> {
    let first = &seats[*members.first()?];
    let wanted = shared_of(&first.spec).map_or(1, |h| h.seats.len());
    let alike = members.iter().all(|&n| {
        shared_key(&seats[n], false) == shared_key(first, false)
            && seats[n].spec.user_data == first.spec.user_data
    });
    if !alike {
        return Some(
            "its host's seats would be launched differently (another instance type, group or profile)"
                .into(),
        );
    }
    (members.len() != wanted).then(|| {
        format!(
            "{} of its host's {wanted} seats came to the launch (the others failed before it)",
            members.len()
        )
    })
}

/// What must be the same for seats to be launched by one RunInstances: everything but the
/// seat's own name, user-data and tags (and its zone unless `zone`: the seats of one shared
/// host go to one zone whatever their kept volumes').
fn shared_key(seat: &SeatLaunch, zone: bool) -> String {
    let s = &seat.spec;
    format!(
        "{:?}",
        (
            (shared_of(s).is_some(), &seat.group),
            &s.ami,
            &s.instance_type,
            &s.root_device,
            s.root_gib,
            s.metadata_hop_limit,
            &s.subnet,
            zone.then_some(&s.availability_zone),
            s.spot,
            &s.ssh_key,
            s.terminate_on_shutdown,
            &s.instance_profile,
        )
    )
}

/// Seats launched alike: together when their user-data and tags allow, else in halves.
async fn launch_alike(cloud: &Cloud, seats: &[&SeatLaunch]) -> Vec<Result<Instance>> {
    if let [one] = seats {
        return vec![cloud.launch(&one.spec, &one.group, one.profile_wait).await];
    }
    let Some(spec) = merged(seats) else {
        return in_halves(cloud, seats).await;
    };
    let wait = seats
        .iter()
        .map(|s| s.profile_wait)
        .max()
        .unwrap_or_default();
    let launched = match cloud
        .launch_many(&spec, seats.len(), &seats[0].group, wait)
        .await
    {
        Ok(launched) => launched,
        // A quota (vCPUs, instances) may allow some of them: as many as it allows start.
        Err(e) if over_quota(&e) => return within_quota(cloud, seats).await,
        Err(e) => return for_each(e, seats.len()),
    };
    let got = launched.len();
    // Recorded here, not only by each seat's `up`: a seat cancelled meanwhile has its instance
    // all the same, and an interrupted command lists it.
    for (instance, seat) in launched.iter().zip(seats) {
        crate::interrupt::made(super::up::instance_made(
            &instance.id,
            &seat.spec.deployment,
        ));
    }
    let mut launched = launched.into_iter();
    let tagged = seats.iter().map(|seat| {
        let instance = launched.next();
        async move {
            let Some(mut instance) = instance else {
                return Err(Error::QuotaExceeded {
                    action: "ec2:RunInstances".into(),
                    resource: seat.spec.deployment.clone(),
                    region: cloud.region.clone(),
                    message: format!(
                        "InsufficientInstanceCapacity: EC2 launched {got} of the {} instances asked for the class's seats",
                        seats.len()
                    ),
                    hint: "the seats without one run again in a second batch (on --fallback-type when given)".into(),
                });
            };
            // The instance exists and is this seat's (its launch index says so until its tags
            // do): tags that could not be set are not a failed launch.
            if let Err(e) = cloud
                .tag_launched(&instance.id, &seat.spec.instance_tags)
                .await
            {
                tracing::warn!(
                    "{} is {}'s instance, but its tags could not be set: {e}",
                    instance.id,
                    seat.spec.deployment
                );
            }
            instance.deployment.clone_from(&seat.spec.deployment);
            instance.seat = seat_of(&seat.spec.instance_tags);
            Ok(instance)
        }
    });
    futures_util::future::join_all(tagged).await
}

/// Seats launched alike, in two halves: each launched together as far as it can be.
async fn in_halves(cloud: &Cloud, seats: &[&SeatLaunch]) -> Vec<Result<Instance>> {
    let (a, b) = seats.split_at(seats.len() / 2);
    let (x, y) = futures_util::future::join(
        Box::pin(launch_alike(cloud, a)),
        Box::pin(launch_alike(cloud, b)),
    )
    .await;
    x.into_iter().chain(y).collect()
}

/// `e` for each of `n` seats.
fn for_each(e: Error, n: usize) -> Vec<Result<Instance>> {
    let mut errors: Vec<Result<Instance>> = (1..n).map(|_| Err(e.again())).collect();
    if n > 0 {
        errors.insert(0, Err(e));
    }
    errors
}

/// A quota refused the launch (not a want of capacity, which another type may not meet).
fn over_quota(e: &Error) -> bool {
    matches!(e, Error::QuotaExceeded { .. }) && !e.is_no_capacity()
}

/// Seats a quota refused together, launched in halves one after the other, so that as many
/// start as it allows: once a seat of the first half is refused, the quota is used up and the
/// second half gets that refusal without asking (about log2 of the seats' calls).
async fn within_quota(cloud: &Cloud, seats: &[&SeatLaunch]) -> Vec<Result<Instance>> {
    let (a, b) = seats.split_at(seats.len() / 2);
    let mut first = Box::pin(launch_alike(cloud, a)).await;
    let refused = first.iter().find_map(|r| match r {
        Err(e) if over_quota(e) => Some(e.again()),
        _ => None,
    });
    let second = match refused {
        Some(e) => for_each(e, b.len()),
        None => Box::pin(launch_alike(cloud, b)).await,
    };
    first.extend(second);
    first
}

/// The shared host a seat's launch is for (its tags' class and `labship:host-seats`), with
/// its slot and the host's first port.
struct SharedOf {
    class: String,
    seats: Vec<String>,
    slot: usize,
    first_port: Option<u16>,
}

fn shared_of(spec: &LaunchSpec) -> Option<SharedOf> {
    let tag = |key: &str| {
        spec.instance_tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let class = tag(tags::CLASS)?;
    let seats: Vec<String> = tag(tags::HOST_SEATS)?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let slot = seats
        .iter()
        .position(|s| crate::class::seat_deployment(&class, s) == spec.deployment)?;
    Some(SharedOf {
        first_port: tag(tags::PORT).and_then(|p| p.parse().ok()),
        class,
        seats,
        slot,
    })
}

/// The instance launched for `spec` as its seat sees it: on a shared host, its own
/// deployment, seat and port (the host's first plus its slot).
fn seated(mut instance: Instance, spec: &LaunchSpec) -> Instance {
    if let Some(host) = shared_of(spec) {
        instance.deployment.clone_from(&spec.deployment);
        instance.port = host
            .first_port
            .and_then(|p| p.checked_add(u16::try_from(host.slot).ok()?));
        instance.seat = Some(crate::aws::ec2::shared_seat(
            &host.class,
            &host.seats,
            host.slot,
            &[],
        ));
        instance.untagged_seat = false;
    }
    instance
}

/// The class and seat a launch's tags name.
fn seat_of(pairs: &[(String, String)]) -> Option<SeatOf> {
    let tag = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    Some(SeatOf {
        class: tag(tags::CLASS)?,
        seat: tag(tags::SEAT)?,
        student: None,
        email: None,
        host: None,
    })
}

/// The launch of `seats` as one RunInstances: their shared spec, one user-data for all, the
/// tags they share and the seats in launch-index order. None when they are not one class's
/// seats, or their user-data or the seats' tag cannot be one.
fn merged(seats: &[&SeatLaunch]) -> Option<LaunchSpec> {
    let first = &seats.first()?.spec;
    // Each instance's entry: its seat, or a shared host's seats joined.
    let of: Vec<(String, String, bool)> = seats
        .iter()
        .map(|s| match shared_of(&s.spec) {
            Some(host) => Some((
                host.class,
                host.seats.join(&tags::HOST_SEATS_JOIN.to_string()),
                true,
            )),
            None => seat_of(&s.spec.instance_tags).map(|s| (s.class, s.seat, false)),
        })
        .collect::<Option<_>>()?;
    let (class, _, packed) = &of[0];
    if of.iter().any(|(c, _, p)| c != class || p != packed) {
        return None;
    }
    let order = of
        .iter()
        .map(|(_, entry, _)| entry.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if order.len() > 256 {
        return None;
    }
    let scripts = seats
        .iter()
        .map(|s| gunzip(&s.spec.user_data))
        .collect::<Option<Vec<_>>>()?;
    let script = userdata::batch(&scripts)?;
    let shared = |each: fn(&LaunchSpec) -> &Vec<(String, String)>| -> Vec<(String, String)> {
        each(first)
            .iter()
            .filter(|pair| seats.iter().all(|s| each(&s.spec).contains(pair)))
            .cloned()
            .collect()
    };
    let mut instance_tags = shared(|s| &s.instance_tags);
    instance_tags.push((tags::LAUNCH_SEATS.to_string(), order));
    if *packed {
        // Shared hosts from their creation: their seats by their entry until their own tag.
        instance_tags.retain(|(k, _)| k != tags::HOST_SEATS);
        instance_tags.push((tags::HOST_SEATS.to_string(), String::new()));
    }
    Some(LaunchSpec {
        deployment: class.clone(),
        user_data: userdata::gzip(&script),
        instance_tags,
        volume_tags: shared(|s| &s.volume_tags),
        ..first.clone()
    })
}

/// A seat's user-data as text (it is gzipped for RunInstances).
fn gunzip(bytes: &[u8]) -> Option<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launch of seat `seat` on the shared host of `seats` of class `ds`.
    fn seat_launch(seat: &str, seats: &str) -> SeatLaunch {
        let deployments: Vec<String> = seats.split(' ').map(|s| format!("ds-{s}")).collect();
        let names: Vec<&str> = deployments.iter().map(String::as_str).collect();
        let script = userdata::render_boot(&userdata::UserDataInputs {
            deployment: names[0],
            seats: &names,
            region: "eu-west-1",
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/labship/ds:abc",
            host_kind: userdata::HostKind::Al2023,
            bind: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 9000,
            container_port: 8888,
            pull_deadline_secs: 900,
            jupyter_deadline_secs: 300,
            idle_stop_secs: 0,
            ttl_secs: 0,
            data_volume: true,
            inputs: userdata::NO_INPUTS,
            limits: crate::hosts::Limits::default(),
        })
        .expect("rendered");
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        SeatLaunch {
            spec: LaunchSpec {
                deployment: format!("ds-{seat}"),
                ami: "ami-1".into(),
                instance_type: "t3.large".into(),
                root_device: "/dev/xvda".into(),
                root_gib: 30,
                metadata_hop_limit: 2,
                subnet: None,
                availability_zone: None,
                spot: false,
                ssh_key: None,
                user_data: userdata::gzip(&script),
                instance_tags: vec![
                    pair(tags::MANAGED_BY, tags::MANAGED_BY_VALUE),
                    pair(tags::CLASS, "ds"),
                    pair(tags::PORT, "9000"),
                    pair(tags::HOST_SEATS, seats),
                ],
                volume_tags: vec![pair(tags::CLASS, "ds")],
                terminate_on_shutdown: false,
                instance_profile: "labship-instance".into(),
            },
            group: "sg-1".into(),
            profile_wait: Duration::from_secs(20),
        }
    }

    #[test]
    fn shared_hosts_launch_together_each_its_seats_by_its_launch_index() {
        let (a, c) = (seat_launch("a", "a b"), seat_launch("c", "c"));
        let spec = merged(&[&a, &c]).expect("merged");
        let tag = |k: &str| {
            spec.instance_tags
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(tag(tags::LAUNCH_SEATS), Some("a+b c"));
        // Shared hosts from their creation; their own seats' tag is set after.
        assert_eq!(tag(tags::HOST_SEATS), Some(""));
        assert_eq!(tag(tags::PORT), Some("9000"));
        let script = gunzip(&spec.user_data).expect("text");
        assert!(script.contains("ds-a ds-b"), "the first host's seats");
        // A seat of a host sees the host's instance as its own seat: its port, its slot.
        let b = seat_launch("b", "a b");
        let host = Instance {
            id: "i-1".into(),
            deployment: "ds-a".into(),
            untagged_seat: true,
            state: "pending".into(),
            instance_type: "t3.large".into(),
            public_ip: None,
            launched: None,
            launched_secs: None,
            image: None,
            port: None,
            https: true,
            access: crate::config::Access::Https,
            owner: None,
            security_groups: vec!["sg-1".into()],
            security_group_names: Vec::new(),
            idle_stop: None,
            ttl: None,
            availability_zone: None,
            data_volume: true,
            spot: false,
            spot_request: None,
            state_reason: None,
            seat: None,
            inputs: None,
            profile: None,
        };
        let seen = seated(host, &b.spec);
        assert_eq!(seen.deployment, "ds-b");
        assert_eq!(seen.port, Some(9001));
        assert_eq!(seen.shared_host().map(|h| h.slot), Some(1));
        // A host is launched with all its seats, alike (whatever their kept volumes' zones),
        // or not at all.
        let mut b_elsewhere = seat_launch("b", "a b");
        b_elsewhere.spec.availability_zone = Some("eu-west-1b".into());
        let pair = [seat_launch("a", "a b"), b_elsewhere];
        assert_eq!(not_launchable(&pair, &[0, 1]), None);
        let why = not_launchable(&pair, &[0]).expect("a seat missing");
        assert!(why.contains("1 of its host's 2 seats"), "{why}");
        let mut other_type = seat_launch("b", "a b");
        other_type.spec.instance_type = "t3.xlarge".into();
        let odd = [seat_launch("a", "a b"), other_type];
        assert!(not_launchable(&odd, &[0, 1]).is_some());
        // A seat of its own and a shared host are not one launch.
        let mut alone = seat_launch("d", "d");
        alone
            .spec
            .instance_tags
            .retain(|(k, _)| k != tags::HOST_SEATS);
        alone
            .spec
            .instance_tags
            .push((tags::SEAT.to_string(), "d".to_string()));
        assert!(merged(&[&a, &alone]).is_none());
    }
}
