//! A class: N seats from one image, for an instructor. Each seat is a deployment of its own,
//! `<class>-<seat>`, with its own server, token, workspace and URL, labelled with the class
//! and the seat, so every verb finds a class's seats from its host alone (no state file):
//!
//! - [`up`]: the image made once ([`Host::prepare`]), then every seat's `up` side by side
//!   (bounded); a seat that fails is reported and the others still come up;
//! - [`roster`]: seat → login URL (and student), for `up` and `token`; `-o csv` for an LMS;
//! - [`collect`]: each seat's notebooks (or some paths) into `collected/<seat>/`;
//! - [`distribute`]: files added to every seat's workspace, a student's own file of the same
//!   name kept;
//! - [`down`]: every seat, or one.
//!
//! The seats' servers are reached through their own Jupyter ([`Host::jupyter`]), as a student
//! reaches them: no shell, no extra permission.

pub mod roster;

use std::path::{Path, PathBuf};

use futures_util::{stream, StreamExt};
use serde::Serialize;

pub use roster::{Roster, Seat};

use crate::config::{Config, Target};
use crate::error::{Error, Result};
use crate::hosts::backup::{add_files, save_workspace, Added};
use crate::hosts::{
    DeploymentStatus, DownOptions, DownReport, Host, SeatOf, SharedHost, UpAction, UpOptions,
};
use crate::output::Printer;
use crate::workspace::git::Snapshot;

/// How many seats are collected, given files or taken down at once.
pub const CONCURRENCY: usize = 6;

/// How many seats start at once: locally they share this machine's CPUs (a Jupyter start is
/// about a CPU-second, so more at once only interleaves them); on EC2 each seat boots on its
/// own instance, so the bound is what AWS's request rates allow (with the adaptive retry):
/// a class of up to 64 seats starts at once, and its instances are launched together
/// (`hosts::ec2::launch`; seats started later, as earlier ones end, launch with whichever
/// others are waiting then).
pub fn starting_at_once(target: Target) -> usize {
    match target {
        Target::Local => std::thread::available_parallelism()
            .map_or(2, usize::from)
            .clamp(2, CONCURRENCY),
        Target::Ec2 => 64,
    }
}
/// The first port of a local class's seats without `--port` (the others one after another
/// from here). On EC2 every seat takes the deployment's one port (`ec2.port` or `--port`).
const FIRST_PORT: u16 = 8888;
/// Defaults of a seat's container: a notebook's pandas and plots fit; one runaway kernel
/// cannot take the machine from the others.
pub const SEAT_MEMORY_MIB: u64 = 2048;
pub const SEAT_CPUS: f64 = 1.0;

/// The instance type of a host of `per_host` seats when none is asked for: a vCPU and at
/// least [`SEAT_MEMORY_MIB`] for each seat with room for the host (burstable T types, whose
/// price per vCPU and GiB is the same at every size: packing saves the per-instance costs,
/// the root volume, public address, boot and image pull, not compute).
pub fn host_type(
    per_host: usize,
    platform: crate::config::Arch,
    limits: crate::hosts::Limits,
) -> String {
    // T sizes: (name, MiB, vCPUs).
    const SIZES: [(&str, u64, f64); 4] = [
        ("medium", 4096, 2.0),
        ("large", 8192, 2.0),
        ("xlarge", 16384, 4.0),
        ("2xlarge", 32768, 8.0),
    ];
    let family = match platform {
        crate::config::Arch::Amd64 => "t3",
        crate::config::Arch::Arm64 => "t4g",
    };
    if per_host <= 1 {
        return format!("{family}.medium");
    }
    let seats = per_host as u64;
    let memory = seats
        .saturating_mul(limits.memory_mib.unwrap_or(SEAT_MEMORY_MIB))
        .saturating_add(crate::hosts::ec2::plan::HOST_RESERVE_MIB);
    // A vCPU for each seat, and at least a seat's own CPUs.
    let cpus = limits.cpus.unwrap_or(SEAT_CPUS).max(seats as f64);
    // The largest when none is enough: the launch's check then says what the seats need.
    let size = SIZES
        .iter()
        .find(|(_, mib, vcpus)| *mib >= memory && *vcpus >= cpus)
        .map_or("2xlarge", |(name, _, _)| name);
    format!("{family}.{size}")
}

/// The deployment of one seat.
pub fn seat_deployment(class: &str, seat: &str) -> String {
    format!("{class}-{seat}")
}

/// `config` for one seat's deployment.
fn seat_config(config: &Config, seat: &str) -> Config {
    seat_config_of(config, &seat_deployment(&config.name, seat))
}

/// `config` for the seat deployment `deployment` (the class's image and settings).
fn seat_config_of(config: &Config, deployment: &str) -> Config {
    let mut c = config.clone();
    c.name = deployment.to_string();
    c
}

/// One seat as the roster shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SeatRow {
    pub seat: String,
    pub student: Option<String>,
    pub email: Option<String>,
    pub deployment: String,
    /// `running`, `failed`, or what the host says (`exited`, `down`, ...).
    pub state: String,
    /// The login URL (with the token): what the student opens.
    pub url: Option<String>,
    pub token: Option<String>,
    /// EC2: the fingerprint of the certificate the seat's Jupyter serves.
    pub tls_fingerprint: Option<crate::tls::Fingerprint>,
    /// `up` only: what it did for this seat.
    pub action: Option<UpAction>,
    /// `up` only: the notebooks' repository put into its workspace.
    pub git: Option<crate::workspace::GitSynced>,
    /// `up` only: the seat was started on this instance type, as EC2 had no capacity for the
    /// class's.
    pub fallback_type: Option<String>,
    /// Why the seat is not ready.
    pub error: Option<String>,
}

/// `labship up --seats` / `--roster`, and `labship token` of a class: one row per seat.
#[derive(Debug, Clone, Serialize)]
pub struct RosterReport {
    pub target: Target,
    pub class: String,
    pub seats: Vec<SeatRow>,
    pub ready: usize,
    pub failed: usize,
    /// `up` was stopped by Ctrl-C: each seat at its own safe point (its row says where), and
    /// what follows the seats' start (a second batch, the class's group settled) not done.
    pub interrupted: bool,
}

impl RosterReport {
    fn new(target: Target, class: &str, seats: Vec<SeatRow>) -> RosterReport {
        let mut report = RosterReport {
            target,
            class: class.to_string(),
            seats,
            ready: 0,
            failed: 0,
            interrupted: false,
        };
        report.failed = report.not_ready().count();
        report.ready = report.seats.len() - report.failed;
        report
    }

    /// Fills each seat's student name and email from `roster` (by seat id) where the host
    /// keeps none; returns the roster's ids that are no seat of the class.
    pub fn with_names(&mut self, roster: &Roster) -> Vec<String> {
        let mut unknown = Vec::new();
        for given in &roster.seats {
            match self.seats.iter_mut().find(|s| s.seat == given.id) {
                Some(row) => {
                    if row.student.is_none() {
                        row.student.clone_from(&given.student);
                    }
                    if row.email.is_none() {
                        row.email.clone_from(&given.email);
                    }
                }
                None => unknown.push(given.id.clone()),
            }
        }
        unknown
    }

    /// The seats not ready: without a URL, or up with an error (their notebooks from git).
    pub fn not_ready(&self) -> impl Iterator<Item = &SeatRow> {
        self.seats
            .iter()
            .filter(|s| s.url.is_none() || s.error.is_some())
    }

    /// The roster as CSV (`-o csv`): a header row, then `seat,student,email,url,token,state,error`
    /// per seat, quoted where a field needs it — ready for a mail merge or an LMS import.
    pub fn to_csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let fail = |e: csv::Error| Error::Write {
            path: "(stdout)".into(),
            source: std::io::Error::other(e),
        };
        w.write_record(["seat", "student", "email", "url", "token", "state", "error"])
            .map_err(fail)?;
        for s in &self.seats {
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            w.write_record([
                s.seat.clone(),
                opt(&s.student),
                opt(&s.email),
                opt(&s.url),
                opt(&s.token),
                s.state.clone(),
                opt(&s.error),
            ])
            .map_err(fail)?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Write {
            path: "(stdout)".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl std::fmt::Display for RosterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<[String; 3]> = self
            .seats
            .iter()
            .map(|s| {
                [
                    s.seat.clone(),
                    s.student.clone().unwrap_or_else(|| "-".into()),
                    match (&s.url, &s.error) {
                        (Some(url), None) => url.clone(),
                        // Up, but not all done (its notebooks from git): the URL and why.
                        (Some(url), Some(e)) => format!("{url} ({e})"),
                        (None, Some(e)) => format!("{} ({e})", s.state),
                        (None, None) => s.state.clone(),
                    },
                ]
            })
            .collect();
        let header = ["SEAT", "STUDENT", "URL"].map(String::from);
        let widths = [0, 1].map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        });
        for row in std::iter::once(&header).chain(rows.iter()) {
            writeln!(
                f,
                "{:<w0$}  {:<w1$}  {}",
                row[0],
                row[1],
                row[2],
                w0 = widths[0],
                w1 = widths[1]
            )?;
        }
        write!(
            f,
            "class `{}` on {}: {} of {} seats ready",
            self.class,
            self.target,
            self.ready,
            self.seats.len()
        )?;
        if self.failed > 0 {
            write!(f, ", {} not", self.failed)?;
        }
        Ok(())
    }
}

/// `labship up --seats N` / `--roster FILE`: the image once, then each seat's `up`, at most
/// [`starting_at_once`] at a time. Seats that fail are rows with their error; the others
/// come up. Seats EC2 had no capacity for are tried once more, in a second batch after the
/// first, on `fallback_type` when given (else the same type: capacity comes back). Seats
/// that met the account's vCPU quota are not: the seats that started use it, and another
/// type of the same quota group (every T, M, C, R... type is one group) meets the same
/// limit; their rows say how to raise it.
pub async fn up<H: Host>(
    host: &H,
    config: &Config,
    roster: &Roster,
    options: &UpOptions,
    snapshot: Option<&Snapshot>,
    launch: &ClassLaunch<'_>,
    printer: &Printer,
) -> Result<RosterReport> {
    let fallback_type = launch.fallback_type;
    let per_host = launch.seats_per_instance.max(1);
    host.prepare(config, printer).await?;
    // Seats that have an instance keep it; the others are placed on new hosts.
    let existing: std::collections::HashSet<String> = if per_host > 1 {
        seats(host, &config.name)
            .await?
            .into_iter()
            .filter(|d| d.instance_id.is_some())
            .filter_map(|d| d.seat.map(|s| s.seat))
            .collect()
    } else {
        std::collections::HashSet::new()
    };
    let total = roster.seats.len();
    printer.note(match per_host {
        1 => format!(
            "Starting {total} seats of class `{}` ({} at a time)",
            config.name,
            starting_at_once(host.target())
        ),
        k => format!(
            "Starting {total} seats of class `{}`, new ones {k} to an instance ({} at a time)",
            config.name,
            starting_at_once(host.target()) / k * k
        ),
    });
    let placing = (&existing, per_host);
    let all: Vec<(usize, &Seat)> = roster.seats.iter().enumerate().collect();
    let mut started = start_seats(host, config, &all, options, snapshot, placing, printer).await;
    let again: Vec<(usize, &Seat)> = started
        .iter()
        .zip(&all)
        .filter(|(s, _)| s.no_capacity)
        .map(|(_, seat)| *seat)
        .collect();
    if !again.is_empty() {
        let instead = fallback_type.unwrap_or(&config.ec2.instance_type);
        printer.note(format!(
            "EC2 had no {} capacity for {} of the seats: starting them again on {instead}",
            config.ec2.instance_type,
            again.len()
        ));
        let mut second = config.clone();
        second.ec2.instance_type = instead.to_string();
        second.ec2.instance_type_asked |= fallback_type.is_some();
        let retried = start_seats(host, &second, &again, options, snapshot, placing, printer).await;
        for ((i, _), mut row) in again.iter().zip(retried) {
            if fallback_type.is_some() && row.row.url.is_some() {
                row.row.fallback_type = Some(instead.to_string());
            }
            started[*i] = row;
        }
    }
    let rows: Vec<SeatRow> = started.into_iter().map(|s| s.row).collect();
    // What the seats share keeps what they need now (a rule for a port the seats left goes
    // once every seat moved), and goes when no seat started (capacity, a quota). Not after
    // Ctrl-C: the next `up` or `down` does it.
    if crate::interrupt::requested() {
        let mut report = RosterReport::new(host.target(), &config.name, rows);
        report.interrupted = true;
        return Ok(report);
    }
    if let Err(e) = host.settle_class(&config.name).await {
        printer.note(format!(
            "the rules of the class's security group were left as they are: {}",
            one_line(&e)
        ));
    }
    if rows.iter().all(|r| r.url.is_none()) {
        match host.release_class(&config.name, options.force).await {
            Ok(released) => {
                for what in &released.removed {
                    printer.note(format!(
                        "Removed {what}: no seat of `{}` started",
                        config.name
                    ));
                }
                for e in &released.failures {
                    printer.note(format!(
                        "{e}; `labship down {} --ec2` removes it",
                        config.name
                    ));
                }
            }
            Err(e) => printer.note(format!(
                "the class's security group may be left: {}; `labship status` lists it",
                one_line(&e)
            )),
        }
    }
    Ok(RosterReport::new(host.target(), &config.name, rows))
}

/// How a class's seats are launched (EC2).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassLaunch<'a> {
    /// The instance type for the seats EC2 has no capacity for (`--fallback-type`).
    pub fallback_type: Option<&'a str>,
    /// How many new seats share a host (`--seats-per-instance`; 0 or 1: each its own).
    pub seats_per_instance: usize,
}

/// One seat's `up` as the roster shows it.
struct Started {
    row: SeatRow,
    /// It failed as EC2 had no capacity for its instance type.
    no_capacity: bool,
}

/// The `up` of `seats` (each with its place in the roster, which gives its port locally), at
/// most [`starting_at_once`] at a time, in their order.
async fn start_seats<H: Host>(
    host: &H,
    config: &Config,
    seats: &[(usize, &Seat)],
    options: &UpOptions,
    snapshot: Option<&Snapshot>,
    (existing, per_host): (&std::collections::HashSet<String>, usize),
    printer: &Printer,
) -> Vec<Started> {
    let first_port = options.port.unwrap_or(FIRST_PORT);
    // Seats that share this machine's addresses need a port each; on EC2 each seat has an
    // address of its own, so all take the deployment's one port (a class on `--port 443`
    // passes a campus firewall, every rule is the same, and no student's URL depends on the
    // roster's order).
    let consecutive = host.target() == Target::Local;
    let total = seats.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    let units = place(seats, existing, per_host);
    let at_once = (starting_at_once(host.target()) / per_host.max(1)).max(1);
    let mut started: Vec<(usize, Started)> = stream::iter(units)
        .map(|unit| {
            // Without --instance-type, a host is sized for the seats it has (a seat alone,
            // or the last host of an uneven class, takes a smaller type than K's).
            let sized = (per_host > 1 && !config.ec2.instance_type_asked)
                .then(|| host_type(unit.len(), config.build.platform, options.limits));
            futures_util::future::join_all(unit.into_iter().map(move |(i, seat, shared)| {
                // A seat with an instance keeps the one it has.
                let sized = sized.clone().filter(|_| !existing.contains(&seat.id));
                async move {
                    let mut seat_config = seat_config(config, &seat.id);
                    if let Some(t) = sized {
                        seat_config.ec2.instance_type = t;
                    }
                    // Locally its place: asked for with `--port` (existing seats move there too),
                    // else where a new seat goes (an existing one keeps its port). On EC2 the
                    // deployment's one port (an existing seat keeps its own unless `--port`).
                    let (port, preferred_port) = if consecutive {
                        let place = u16::try_from(i)
                            .ok()
                            .and_then(|i| first_port.checked_add(i));
                        match options.port {
                            Some(_) => (place, None),
                            None => (None, place),
                        }
                    } else {
                        (options.port, None)
                    };
                    let seat_options = UpOptions {
                        port,
                        preferred_port,
                        seat: Some(SeatOf {
                            class: config.name.clone(),
                            seat: seat.id.clone(),
                            student: seat.student.clone(),
                            email: seat.email.clone(),
                            host: shared,
                        }),
                        ..options.clone()
                    };
                    let mut row = SeatRow {
                        seat: seat.id.clone(),
                        student: seat.student.clone(),
                        email: seat.email.clone(),
                        deployment: seat_config.name.clone(),
                        state: "failed".into(),
                        url: None,
                        token: None,
                        tls_fingerprint: None,
                        action: None,
                        git: None,
                        fallback_type: None,
                        error: None,
                    };
                    let mut no_capacity = false;
                    let up = host.up(&seat_config, &seat_options, printer).await;
                    let up = match up {
                        Ok(report) => host
                            .token(&seat_config.name)
                            .await
                            .map(|token| (report, token)),
                        Err(e) => Err(e),
                    };
                    match up {
                        Ok((report, token)) => {
                            row.state = "running".into();
                            row.action = Some(report.action);
                            row.url = Some(token.url);
                            row.token = Some(token.token);
                            row.tls_fingerprint = token.tls_fingerprint;
                            if let Some(snapshot) = snapshot {
                                match crate::workspace::sync_deployment(
                                    host,
                                    &seat_config.name,
                                    snapshot,
                                )
                                .await
                                {
                                    Ok(synced) => row.git = Some(synced),
                                    Err(e) => row.error = Some(one_line(&e)),
                                }
                            }
                        }
                        Err(e) => {
                            no_capacity = e.is_no_capacity();
                            row.error = Some(one_line(&e));
                        }
                    }
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    printer.note(format!(
                        "[{n}/{total}] seat {}: {}",
                        seat.id,
                        row.error.as_deref().unwrap_or("ready")
                    ));
                    (i, Started { row, no_capacity })
                }
            }))
        })
        .buffered(at_once)
        .flat_map(stream::iter)
        .collect()
        .await;
    started.sort_by_key(|(i, _)| *i);
    started.into_iter().map(|(_, s)| s).collect()
}

/// The seats that start together, in roster order: on EC2 with `per_host` > 1 the seats
/// without an instance (not in `existing`) `per_host` to a host, in roster order, each with
/// its place on it; every other seat alone (one that has an instance keeps it).
fn place<'s>(
    seats: &[(usize, &'s Seat)],
    existing: &std::collections::HashSet<String>,
    per_host: usize,
) -> Vec<Vec<(usize, &'s Seat, Option<SharedHost>)>> {
    if per_host <= 1 {
        return seats.iter().map(|(i, s)| vec![(*i, *s, None)]).collect();
    }
    let (kept, new): (Vec<_>, Vec<_>) = seats.iter().partition(|(_, s)| existing.contains(&s.id));
    let mut units: Vec<Vec<(usize, &Seat, Option<SharedHost>)>> =
        kept.iter().map(|(i, s)| vec![(*i, *s, None)]).collect();
    for chunk in new.chunks(per_host) {
        // A seat left alone (the last of an uneven class) has an instance of its own, as
        // every seat has without `--seats-per-instance`: nothing of a shared host's limits.
        if let [(i, s)] = chunk {
            units.push(vec![(*i, *s, None)]);
            continue;
        }
        let ids: Vec<String> = chunk.iter().map(|(_, s)| s.id.clone()).collect();
        units.push(
            chunk
                .iter()
                .enumerate()
                .map(|(slot, (i, s))| {
                    let host = SharedHost {
                        seats: ids.clone(),
                        slot,
                        gone: Vec::new(),
                    };
                    (*i, *s, Some(host))
                })
                .collect(),
        );
    }
    units.sort_by_key(|unit| unit.first().map_or(usize::MAX, |(i, _, _)| *i));
    units
}

/// An error on one line, with its fix: for a seat's row.
fn one_line(e: &Error) -> String {
    let help = miette::Diagnostic::help(e).map(|h| h.to_string());
    let text = match help {
        Some(h) => format!("{e}; {h}"),
        None => e.to_string(),
    };
    crate::token::redact(&text.replace('\n', " "))
}

/// The seats of `class` on the host (one [`Host::listing`]), in seat order.
pub async fn seats<H: Host>(host: &H, class: &str) -> Result<Vec<DeploymentStatus>> {
    Ok(seats_in(host.listing().await?, class))
}

/// The seats of `class` among the host's deployments, in seat order (numbers by their value).
fn seats_in(status: Vec<DeploymentStatus>, class: &str) -> Vec<DeploymentStatus> {
    let mut seats: Vec<DeploymentStatus> = status
        .into_iter()
        .filter(|d| d.seat.as_ref().is_some_and(|s| s.class == class))
        .collect();
    seats.sort_by_key(|d| seat_order(d.seat.as_ref().map_or("", |s| s.seat.as_str())));
    // A container being replaced is listed beside its successor: one row per seat.
    seats.dedup_by(|a, b| a.name == b.name);
    seats
}

fn seat_order(id: &str) -> (u64, String) {
    (id.parse::<u64>().unwrap_or(u64::MAX), id.to_string())
}

/// Of a class's `seats` ([`seats`]), those to act on: all, or the one asked for. Err: the
/// class has none, or not that one.
pub fn pick(
    seats: Vec<DeploymentStatus>,
    class: &str,
    only: Option<&str>,
    target: Target,
) -> Result<Vec<DeploymentStatus>> {
    if seats.is_empty() {
        return Err(Error::NotAClass {
            class: class.to_string(),
            target: target.to_string(),
        });
    }
    let Some(id) = only else {
        return Ok(seats);
    };
    let one: Vec<DeploymentStatus> = seats
        .into_iter()
        .filter(|d| d.seat.as_ref().is_some_and(|s| s.seat == id))
        .collect();
    if one.is_empty() {
        return Err(Error::SeatNotFound {
            class: class.to_string(),
            seat: id.to_string(),
            target: target.to_string(),
        });
    }
    Ok(one)
}

/// The seats to act on (one [`Host::listing`]); without `only`, a single deployment named `class` is a
/// class of one (`collect`, `distribute`).
async fn chosen<H: Host>(
    host: &H,
    class: &str,
    only: Option<&str>,
) -> Result<Vec<DeploymentStatus>> {
    let status = host.listing().await?;
    let single = status
        .iter()
        .find(|d| only.is_none() && d.name == class && d.seat.is_none())
        .cloned();
    let seats = seats_in(status, class);
    match single {
        Some(d) if seats.is_empty() => Ok(vec![d]),
        _ => pick(seats, class, only, host.target()),
    }
}

/// The deployment of one seat, checked to exist.
pub async fn seat<H: Host>(host: &H, class: &str, id: &str) -> Result<String> {
    Ok(chosen(host, class, Some(id)).await?.remove(0).name)
}

/// `labship token` of a class: the roster again, from the host (`seats` from [`seats`]).
pub async fn roster<H: Host>(
    host: &H,
    class: &str,
    seats: Vec<DeploymentStatus>,
) -> Result<RosterReport> {
    let rows: Vec<SeatRow> = stream::iter(seats)
        .map(|d| async move {
            let seat = d.seat.clone().unwrap_or(SeatOf {
                class: class.to_string(),
                seat: d.name.clone(),
                student: None,
                email: None,
                host: None,
            });
            let mut row = SeatRow {
                seat: seat.seat,
                student: seat.student,
                email: seat.email,
                deployment: d.name.clone(),
                state: d.state.clone(),
                url: None,
                token: None,
                tls_fingerprint: None,
                action: None,
                git: None,
                fallback_type: None,
                error: None,
            };
            if d.url.is_none() {
                row.error = d.note.clone().or_else(|| Some("not serving".into()));
                return row;
            }
            match host.token(&d.name).await {
                Ok(t) => {
                    row.url = Some(t.url);
                    row.token = Some(t.token);
                    row.tls_fingerprint = t.tls_fingerprint;
                }
                Err(e) => row.error = Some(one_line(&e)),
            }
            row
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    Ok(RosterReport::new(host.target(), class, rows))
}

/// What `down` of these seats ([`pick`]) would delete that deserves a confirmation.
pub async fn down_preview<H: Host>(
    host: &H,
    config: &Config,
    options: &DownOptions,
    seats: &[DeploymentStatus],
) -> Result<Option<String>> {
    // Asked side by side, told in seat order.
    let asks: Vec<Option<String>> = stream::iter(seats)
        .map(|d| async move {
            let c = seat_config_of(config, &d.name);
            host.down_preview(&c, options).await
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let mut asks: Vec<String> = asks.into_iter().flatten().collect();
    let removing: Vec<&str> = seats.iter().map(|d| d.name.as_str()).collect();
    asks.extend(host.release_preview(&config.name, &removing).await?);
    Ok((!asks.is_empty()).then(|| asks.join("; ")))
}

/// What [`down`] leaves of a class that it was asked to remove.
#[derive(Debug, Default)]
pub struct Left {
    /// The seats not all removed (their failures are in the report).
    pub seats: Vec<String>,
    /// Why the security group the seats share is still there although no seat uses it.
    pub group: Option<String>,
}

/// `labship down` of these seats ([`pick`]): each as `down` of its deployment would, all
/// together ([`Host::down_each`]), then what the class's seats share once none uses it
/// ([`Host::release_class`]); one report, and what is left. One seat's failure does not stop
/// the others.
pub async fn down<H: Host>(
    host: &H,
    config: &Config,
    options: &DownOptions,
    seats: Vec<DeploymentStatus>,
    printer: &Printer,
) -> Result<(DownReport, Left)> {
    let configs: Vec<Config> = seats
        .iter()
        .map(|d| seat_config_of(config, &d.name))
        .collect();
    let results = host.down_each(&configs, options, printer).await?;
    let mut report = DownReport::new(host.target(), &config.name, None);
    let mut left = Vec::new();
    for ((name, result), d) in results.into_iter().zip(&seats) {
        let seat = d.seat.as_ref().map_or(name.clone(), |s| s.seat.clone());
        match result {
            Ok(r) => {
                if !r.failures.is_empty() {
                    left.push(seat);
                }
                report.absorb(r);
            }
            Err(e) => {
                report.failures.push(format!("`{name}`: {}", one_line(&e)));
                left.push(seat);
            }
        }
    }
    let mut left = Left {
        seats: left,
        group: None,
    };
    match host.release_class(&config.name, options.force).await {
        Ok(released) => {
            left.group = released.failures.first().cloned();
            report.absorb(released);
        }
        Err(e @ Error::Interrupted { .. }) => return Err(e),
        Err(e) => {
            let cause = one_line(&e);
            report.failures.push(format!("`{}`: {cause}", config.name));
            left.group = Some(cause);
        }
    }
    Ok((report, left))
}

/// What one seat gave `collect`.
#[derive(Debug, Clone, Serialize)]
pub struct CollectedSeat {
    pub seat: String,
    pub student: Option<String>,
    pub dir: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub skipped: Vec<String>,
    pub error: Option<String>,
}

/// `labship collect`.
#[derive(Debug, Clone, Serialize)]
pub struct CollectReport {
    pub target: Target,
    pub class: String,
    pub dir: PathBuf,
    pub seats: Vec<CollectedSeat>,
    pub files: usize,
    pub bytes: u64,
    pub failed: usize,
}

impl std::fmt::Display for CollectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.seats {
            match &s.error {
                Some(e) => writeln!(f, "seat {}: not collected: {e}", s.seat)?,
                None => {
                    writeln!(
                        f,
                        "seat {}: {} files ({} bytes) in {}",
                        s.seat,
                        s.files,
                        s.bytes,
                        s.dir.display()
                    )?;
                    for skipped in &s.skipped {
                        writeln!(f, "  skipped {skipped}")?;
                    }
                }
            }
        }
        write!(
            f,
            "collected {} files ({} bytes) from {} of {} seats of `{}` into {}",
            self.files,
            self.bytes,
            self.seats.len() - self.failed,
            self.seats.len(),
            self.class,
            self.dir.display()
        )
    }
}

/// `labship collect [--seat ID] [PATH...]`: each seat's workspace (or those paths in it)
/// into `<dest>/<seat>/`, side by side, through the seat's Jupyter. A folder of an earlier
/// collect is replaced, so it holds what the seat has now.
pub async fn collect<H: Host>(
    host: &H,
    class: &str,
    only: Option<&str>,
    paths: &[String],
    dest: &Path,
    printer: &Printer,
) -> Result<CollectReport> {
    let seats = chosen(host, class, only).await?;
    let done = through_each_jupyter(
        host,
        seats,
        "collecting",
        printer,
        |id, jupyter| async move {
            // Into a fresh folder beside it, then in its place: a collect that fails halfway
            // leaves the last good copy.
            let dir = dest.join(&id);
            let fresh = dest.join(format!(".{id}.partial"));
            let _ = std::fs::remove_dir_all(&fresh);
            let saved = save_workspace(&jupyter, paths, &fresh)
                .await
                .and_then(|saved| {
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::rename(&fresh, &dir).map(|()| saved).map_err(|e| {
                        format!("cannot move {} to {}: {e}", fresh.display(), dir.display())
                    })
                });
            (jupyter, saved)
        },
    )
    .await;
    let rows: Vec<CollectedSeat> = done
        .into_iter()
        .map(|(id, student, saved)| {
            let (files, bytes, skipped, error) = match saved {
                Ok(s) => (s.files, s.bytes, s.skipped, None),
                Err(e) => (0, 0, Vec::new(), Some(e)),
            };
            CollectedSeat {
                dir: dest.join(&id),
                seat: id,
                student,
                files,
                bytes,
                skipped,
                error,
            }
        })
        .collect();
    Ok(CollectReport {
        target: host.target(),
        class: class.to_string(),
        dir: dest.to_path_buf(),
        files: rows.iter().map(|r| r.files).sum(),
        bytes: rows.iter().map(|r| r.bytes).sum(),
        failed: rows.iter().filter(|r| r.error.is_some()).count(),
        seats: rows,
    })
}

/// What one seat got from `distribute`.
#[derive(Debug, Clone, Serialize)]
pub struct DistributedSeat {
    pub seat: String,
    pub student: Option<String>,
    #[serde(flatten)]
    pub files: Added,
    pub error: Option<String>,
}

/// `labship distribute`.
#[derive(Debug, Clone, Serialize)]
pub struct DistributeReport {
    pub target: Target,
    pub class: String,
    /// `--git`: the notebooks' repository and the commit given out (`null` for files).
    pub repository: Option<String>,
    pub commit: Option<String>,
    /// The workspace paths given out.
    pub files: Vec<String>,
    pub seats: Vec<DistributedSeat>,
    pub failed: usize,
}

impl std::fmt::Display for DistributeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.seats {
            match &s.error {
                Some(e) => writeln!(f, "seat {}: not given the files: {e}", s.seat)?,
                None => {
                    write!(f, "seat {}: added {}", s.seat, s.files.added.len())?;
                    if !s.files.updated.is_empty() {
                        write!(f, ", updated {}", s.files.updated.len())?;
                    }
                    if !s.files.kept.is_empty() {
                        write!(f, ", kept its own {}", s.files.kept.join(", "))?;
                    }
                    writeln!(f)?;
                }
            }
        }
        write!(
            f,
            "gave {} file(s) to {} of {} seats of `{}`",
            self.files.len(),
            self.seats.len() - self.failed,
            self.seats.len(),
            self.class
        )
    }
}

/// Runs `work` on each seat's Jupyter ([`CONCURRENCY`] at a time, a progress bar on a
/// terminal): per seat, in order, its id, its student, and what `work` gave or why the seat
/// could not be reached. `work` hands the access back, to be closed.
async fn through_each_jupyter<H, T, F, Fut>(
    host: &H,
    seats: Vec<DeploymentStatus>,
    label: &str,
    printer: &Printer,
    work: F,
) -> Vec<(String, Option<String>, std::result::Result<T, String>)>
where
    H: Host,
    F: Fn(String, crate::hosts::JupyterAccess) -> Fut,
    Fut:
        std::future::Future<Output = (crate::hosts::JupyterAccess, std::result::Result<T, String>)>,
{
    let bars = printer.bars();
    let bar = printer.count_bar(&bars, label, seats.len() as u64);
    let done = stream::iter(seats)
        .map(|d| {
            let (bar, work) = (&bar, &work);
            async move {
                let id = d.seat.as_ref().map_or(d.name.clone(), |s| s.seat.clone());
                let student = d.seat.and_then(|s| s.student);
                let result = match host.jupyter(&d.name).await {
                    Ok(jupyter) => {
                        let (jupyter, result) = work(id.clone(), jupyter).await;
                        jupyter.close().await;
                        result
                    }
                    Err(e) => Err(one_line(&e)),
                };
                bar.inc(1);
                bar.set_message(format!("seat {id}"));
                (id, student, result)
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    done
}

/// The largest file `distribute` sends (it goes through Jupyter's API, in memory).
const MAX_DISTRIBUTED: u64 = 256 << 20;

/// Reads what `distribute` gives out: each FILE as its name, each folder with its files
/// under the folder's name. Err: a path that is missing or too large.
pub fn files_to_give(paths: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for path in paths {
        let read = |p: &Path| -> Result<Vec<u8>> {
            let len = std::fs::metadata(p)
                .map_err(|source| Error::ReadInput {
                    path: p.to_path_buf(),
                    source,
                })?
                .len();
            if len > MAX_DISTRIBUTED {
                return Err(Error::InvalidSetting {
                    what: "file to distribute",
                    value: p.display().to_string(),
                    reason: format!("it is larger than {} MiB", MAX_DISTRIBUTED >> 20),
                    hint: "put large data in the image (docker/) or give students a link".into(),
                });
            }
            std::fs::read(p).map_err(|source| Error::ReadInput {
                path: p.to_path_buf(),
                source,
            })
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::InvalidSetting {
                what: "file to distribute",
                value: path.display().to_string(),
                reason: "it has no file name".into(),
                hint: "name a file or a folder".into(),
            })?;
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
                let entry = entry.map_err(|e| Error::ReadInput {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                if entry.file_type().is_file() {
                    let rel = entry
                        .path()
                        .strip_prefix(path)
                        .unwrap_or(entry.path())
                        .to_string_lossy()
                        .replace('\\', "/");
                    out.push((format!("{name}/{rel}"), read(entry.path())?));
                }
            }
        } else {
            out.push((name, read(path)?));
        }
    }
    Ok(out)
}

/// What `distribute` gives out.
#[derive(Clone, Copy)]
pub enum Handout<'a> {
    /// Files, added where the workspace lacks them.
    Files(&'a [(String, Vec<u8>)]),
    /// The notebooks' repository: added, updated where unchanged, kept where changed.
    Git(&'a Snapshot),
}

/// `labship distribute FILE...` (or `--git`): gives every seat's workspace (or one seat's)
/// the files, side by side; a student's file of the same name is kept, and the report says
/// whose.
pub async fn distribute<H: Host>(
    host: &H,
    class: &str,
    only: Option<&str>,
    handout: Handout<'_>,
    printer: &Printer,
) -> Result<DistributeReport> {
    let seats = chosen(host, class, only).await?;
    let done = through_each_jupyter(
        host,
        seats,
        "distributing",
        printer,
        |_, jupyter| async move {
            let added = match handout {
                Handout::Files(files) => add_files(&jupyter, files).await,
                Handout::Git(snapshot) => crate::workspace::sync(&jupyter, snapshot)
                    .await
                    .map(|s| s.files),
            };
            (jupyter, added)
        },
    )
    .await;
    let rows: Vec<DistributedSeat> = done
        .into_iter()
        .map(|(seat, student, given)| {
            let (files, error) = match given {
                Ok(a) => (a, None),
                Err(e) => (Added::default(), Some(e)),
            };
            DistributedSeat {
                seat,
                student,
                files,
                error,
            }
        })
        .collect();
    Ok(DistributeReport {
        target: host.target(),
        class: class.to_string(),
        repository: match handout {
            Handout::Git(snapshot) => Some(crate::token::redact(&snapshot.source.spec())),
            Handout::Files(_) => None,
        },
        commit: match handout {
            Handout::Git(snapshot) => Some(snapshot.commit.clone()),
            Handout::Files(_) => None,
        },
        files: match handout {
            Handout::Files(files) => files.iter().map(|(p, _)| p.clone()).collect(),
            Handout::Git(snapshot) => snapshot.files.iter().map(|f| f.path.clone()).collect(),
        },
        failed: rows.iter().filter(|r| r.error.is_some()).count(),
        seats: rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seat: &str, url: Option<&str>, error: Option<&str>) -> SeatRow {
        SeatRow {
            seat: seat.into(),
            student: Some("Lee, \"Ann\"".into()),
            email: None,
            deployment: format!("c-{seat}"),
            state: if url.is_some() { "running" } else { "failed" }.into(),
            url: url.map(String::from),
            token: url.map(|_| "abc".into()),
            tls_fingerprint: None,
            action: None,
            git: None,
            fallback_type: None,
            error: error.map(String::from),
        }
    }

    #[test]
    fn a_host_of_k_seats_has_a_vcpu_and_room_for_each() {
        use crate::config::Arch;
        let seat = crate::hosts::Limits {
            memory_mib: Some(SEAT_MEMORY_MIB),
            cpus: Some(SEAT_CPUS),
        };
        assert_eq!(
            host_type(1, Arch::Amd64, seat),
            crate::config::DEFAULT_INSTANCE_TYPE
        );
        assert_eq!(host_type(2, Arch::Amd64, seat), "t3.large");
        assert_eq!(host_type(3, Arch::Amd64, seat), "t3.xlarge");
        assert_eq!(host_type(4, Arch::Arm64, seat), "t4g.xlarge");
        assert_eq!(host_type(8, Arch::Amd64, seat), "t3.2xlarge");
        // Larger seats take a larger host: two of 4 GiB need more than 8 GiB.
        let big = crate::hosts::Limits {
            memory_mib: Some(4096),
            ..seat
        };
        assert_eq!(host_type(2, Arch::Amd64, big), "t3.xlarge");
        // A seat of 3 CPUs needs 4 vCPUs.
        let busy = crate::hosts::Limits {
            cpus: Some(3.0),
            ..seat
        };
        assert_eq!(host_type(2, Arch::Amd64, busy), "t3.xlarge");
    }

    #[test]
    fn new_seats_are_placed_k_to_a_host_in_roster_order_and_a_seat_with_a_host_keeps_it() {
        let roster = Roster::numbered(5).expect("roster");
        let all: Vec<(usize, &Seat)> = roster.seats.iter().enumerate().collect();
        let existing: std::collections::HashSet<String> = ["2".to_string()].into();
        let units = place(&all, &existing, 2);
        let seen: Vec<Vec<_>> = units
            .iter()
            .map(|u| {
                u.iter()
                    .map(|(i, _, h)| (*i, h.as_ref().map(|h| (h.seats.clone(), h.slot))))
                    .collect()
            })
            .collect();
        let host =
            |seats: &[&str], slot| Some((seats.iter().map(|s| s.to_string()).collect(), slot));
        assert_eq!(
            seen,
            vec![
                vec![(0, host(&["1", "3"], 0)), (2, host(&["1", "3"], 1))],
                vec![(1, None)],
                vec![(3, host(&["4", "5"], 0)), (4, host(&["4", "5"], 1))],
            ]
        );
        // One to a host (the default): each seat alone, with no host to share.
        let alone = place(&all, &existing, 1);
        assert_eq!(alone.len(), 5);
        assert!(alone.iter().all(|u| u.len() == 1 && u[0].2.is_none()));
        // The last host takes what is left: 5 seats 3 to a host are hosts of 3 and 2.
        let sizes: Vec<usize> = place(&all, &Default::default(), 3)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [3, 2]);
        // A seat left alone has an instance of its own.
        let last = place(&all, &Default::default(), 2);
        assert_eq!(last.len(), 3);
        assert!(last[2].len() == 1 && last[2][0].2.is_none());
    }

    #[test]
    fn the_roster_is_a_table_and_a_csv() {
        let r = RosterReport::new(
            Target::Local,
            "c",
            vec![
                row("1", Some("http://127.0.0.1:8888/lab?token=abc"), None),
                row("2", None, Some("port busy")),
                row(
                    "3",
                    Some("http://127.0.0.1:8890/lab?token=abc"),
                    Some("git clone failed"),
                ),
            ],
        );
        assert_eq!((r.ready, r.failed), (1, 2));
        // Up but its notebooks from git failed: not ready, and named with its error.
        let not_ready: Vec<&str> = r.not_ready().map(|s| s.seat.as_str()).collect();
        assert_eq!(not_ready, ["2", "3"]);
        let text = r.to_string();
        assert!(
            text.contains("http://127.0.0.1:8888/lab?token=abc"),
            "{text}"
        );
        assert!(text.contains("failed (port busy)"), "{text}");
        assert!(
            text.contains("http://127.0.0.1:8890/lab?token=abc (git clone failed)"),
            "{text}"
        );
        assert!(text.ends_with("1 of 3 seats ready, 2 not"), "{text}");
        let csv = r.to_csv().unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("seat,student,email,url,token,state,error")
        );
        assert_eq!(
            lines.next(),
            Some("1,\"Lee, \"\"Ann\"\"\",,http://127.0.0.1:8888/lab?token=abc,abc,running,")
        );
        assert_eq!(
            lines.next(),
            Some("2,\"Lee, \"\"Ann\"\"\",,,,failed,port busy")
        );
        assert_eq!(
            lines.next(),
            Some("3,\"Lee, \"\"Ann\"\"\",,http://127.0.0.1:8890/lab?token=abc,abc,running,git clone failed")
        );
    }

    #[test]
    fn a_roster_file_fills_the_names_the_host_does_not_keep() {
        let mut kept = row("2", None, None);
        kept.student = Some("Kept Name".into());
        let mut r = RosterReport::new(
            Target::Ec2,
            "c",
            vec![
                SeatRow {
                    student: None,
                    ..row("1", Some("https://127.0.0.1:8888/lab?token=abc"), None)
                },
                kept,
            ],
        );
        let roster = Roster::parse(
            std::path::Path::new("r.csv"),
            b"id,name,email\n1,Ann Lee,ann@example.org\n2,Other,bo@example.org\n7,Gone,\n",
        )
        .unwrap();
        assert_eq!(r.with_names(&roster), ["7"]);
        assert_eq!(r.seats[0].student.as_deref(), Some("Ann Lee"));
        assert_eq!(r.seats[0].email.as_deref(), Some("ann@example.org"));
        // What the host keeps stays.
        assert_eq!(r.seats[1].student.as_deref(), Some("Kept Name"));
        assert_eq!(r.seats[1].email.as_deref(), Some("bo@example.org"));
    }

    #[test]
    fn seats_sort_by_number_then_name() {
        let mut ids = vec!["10", "2", "ann", "1"];
        ids.sort_by_key(|s| seat_order(s));
        assert_eq!(ids, ["1", "2", "10", "ann"]);
        assert_eq!(seat_deployment("ds101", "7"), "ds101-7");
    }

    #[test]
    fn folders_are_given_with_their_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("week2/data")).unwrap();
        std::fs::write(dir.path().join("week2/data/a.csv"), "x").unwrap();
        std::fs::write(dir.path().join("week2/lab.ipynb"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.md"), "hi").unwrap();
        let files =
            files_to_give(&[dir.path().join("week2"), dir.path().join("notes.md")]).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["week2/data/a.csv", "week2/lab.ipynb", "notes.md"]);
        assert!(files_to_give(&[dir.path().join("missing")]).is_err());
    }
}
