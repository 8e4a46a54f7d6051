//! Step 3 of the pipeline on AWS: launch a host for the pushed image and read its token.
//!
//! `up` checks everything that can be checked without changing anything (instance type and
//! its architecture against the image's platform, the host image, the VPC, the caller's
//! address), builds and prepares the push, makes sure the shared instance role and the
//! deployment's security group (a class's seat: the group its class's seats share) exist,
//! then launches the instance while the layers are still
//! uploading: the user-data (rendered from `userdata/`) retries the pull until the image is
//! there. The console shows the user-data's phase markers; the token is read from it.
//!
//! State lives in AWS tags only (see [`crate::tags`]): `status`, `token`, `logs` and `down`
//! work from any machine.

pub mod backup;
pub mod console;
pub mod down;
pub mod info;
pub mod launch;
pub mod plan;
pub mod role;
pub mod sealed;
pub mod stop;
pub mod up;
pub mod userdata;
mod watch;

use std::net::IpAddr;
use std::time::Duration;

use crate::aws::Aws;
use crate::config::{Arch, Config, HostAmi, Target};
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::hosts::{
    DeploymentStatus, DownOptions, DownReport, Host, LogsReport, Plan, StopReport, TokenReport,
    UpOptions, UpReport,
};
use crate::output::Printer;

pub use crate::aws::Cloud;

/// The address service asked for the caller's public IP. Over HTTPS: its answer decides which
/// address the security group opens to, so no one on the network path may choose it.
const CHECKIP: &str = "https://checkip.amazonaws.com/";

/// The SSM parameter holding the latest AMI id of a host kind and architecture.
pub fn ami_parameter(ami: &HostAmi, arch: Arch) -> Option<String> {
    let a = match arch {
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "arm64",
    };
    match ami {
        HostAmi::Al2023 => Some(format!(
            "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{a}"
        )),
        HostAmi::Ecs => Some(match arch {
            Arch::Amd64 => {
                "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id".into()
            }
            Arch::Arm64 => {
                "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id".into()
            }
        }),
        HostAmi::Id(_) => None,
    }
}

/// EC2's architecture name of an image platform.
pub fn ec2_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "arm64",
    }
}

/// Resolves the host image: the latest Amazon Linux 2023 (plain or ECS-optimized) through
/// the public SSM parameters, or the given AMI, which must exist and match `arch`.
pub async fn resolve_ami(
    cloud: &Cloud,
    ami: &HostAmi,
    arch: Arch,
) -> Result<crate::aws::ec2::HostImage> {
    cloud
        .lookups()
        .host_images
        .get_or_try(format!("{ami:?}/{arch:?}"), || ask_ami(cloud, ami, arch))
        .await
}

async fn ask_ami(cloud: &Cloud, ami: &HostAmi, arch: Arch) -> Result<crate::aws::ec2::HostImage> {
    let min_root = match ami {
        // The ECS-optimized AMI's snapshot is 30 GiB; EC2 refuses a smaller root volume.
        HostAmi::Ecs => 30,
        _ => 8,
    };
    let (id, source) = match ami {
        HostAmi::Id(id) => (id.clone(), "given".to_string()),
        kind => {
            let param = ami_parameter(kind, arch).unwrap_or_default();
            (cloud.parameter(&param).await?, param)
        }
    };
    let described = cloud.describe_image(&id).await?;
    match (ami, described) {
        (HostAmi::Id(_), None) => Err(Error::Ami {
            ami: id,
            region: cloud.region.clone(),
            message: "EC2 does not know this AMI (DescribeImages found nothing)".into(),
            hint: "AMI ids differ per region: check the id and --region, or use --ami ecs / --ami al2023".into(),
        }),
        (_, Some(mut img)) => {
            if let Some(found) = &img.architecture {
                if found != ec2_arch(arch) {
                    return Err(Error::Ami {
                        ami: id,
                        region: cloud.region.clone(),
                        message: format!(
                            "the AMI is for {found}, the instance type and image are {}",
                            ec2_arch(arch)
                        ),
                        hint: "choose an AMI of the instance type's architecture".into(),
                    });
                }
            }
            img.source = source;
            img.min_root_gib = img.min_root_gib.max(min_root);
            Ok(img)
        }
        // Amazon's own AMIs are public and always described on AWS; an emulator may not
        // know them. Their root device is /dev/xvda.
        (_, None) => Ok(crate::aws::ec2::HostImage {
            id,
            source,
            root_device: "/dev/xvda".into(),
            min_root_gib: min_root,
            architecture: None,
        }),
    }
}

/// The root volume: room for the OS, the compressed layers while they are pulled and the
/// extracted image, never under the AMI's own size.
pub fn root_volume_gib(min_root: i32, image_bytes: Option<u64>) -> i32 {
    const GIB: u64 = 1 << 30;
    let image_gib = image_bytes.map(|b| b.div_ceil(GIB)).unwrap_or(4);
    let need = 4 + 2 * image_gib;
    i32::try_from(need).unwrap_or(i32::MAX).max(min_root)
}

/// The CIDRs the Jupyter port opens to: `--allow-cidr`/`ec2.allow_cidr`, the whole internet
/// with `--public`, else the caller's public IP (detected) as /32 (or /128).
pub async fn ingress_cidrs(allow: &[String], public: bool) -> Result<(Vec<String>, String)> {
    if public {
        return Ok((
            vec!["0.0.0.0/0".into(), "::/0".into()],
            "--public: open to everyone".into(),
        ));
    }
    if !allow.is_empty() {
        return Ok((allowed_cidrs(allow)?, "--allow-cidr".into()));
    }
    let ip = caller_ip().await?;
    let cidr = match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    };
    Ok((vec![cidr], "your public IP (detected)".into()))
}

/// A security group holds 60 inbound rules per address family by default (each CIDR is one
/// rule, and SSH doubles them).
const MAX_RULES: usize = 60;

/// `--allow-cidr`/`ec2.allow_cidr`, checked and normalised: a range open to everyone (`/0`)
/// must be asked for with `--public`, and no more ranges than a security group holds.
pub fn allowed_cidrs(allow: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in allow {
        let cidr = normalise_cidr(c)?;
        if cidr.ends_with("/0") {
            return Err(Error::InvalidSetting {
                what: "CIDR",
                value: c.clone(),
                reason: "a /0 range opens Jupyter to the whole internet".into(),
                hint: "if that is what you want, say so with --public (the token then is the only guard); otherwise use your address range, e.g. 203.0.113.7/32".into(),
            });
        }
        if !out.contains(&cidr) {
            out.push(cidr);
        }
    }
    let v6 = out.iter().filter(|c| c.contains(':')).count();
    if v6 > MAX_RULES || out.len() - v6 > MAX_RULES {
        return Err(Error::InvalidSetting {
            what: "CIDR list",
            value: format!("{} ranges", out.len()),
            reason: format!(
                "a security group holds at most {MAX_RULES} inbound rules per address family"
            ),
            hint: "merge neighbouring ranges into wider prefixes, or use --public".into(),
        });
    }
    Ok(out)
}

/// `A.B.C.D` -> `A.B.C.D/32`; validates `ADDR/LEN` and masks it to its network address
/// (EC2 stores 10.0.0.28/29 as 10.0.0.24/29: so does labship, or every `up` would see a
/// changed rule).
pub fn normalise_cidr(c: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidSetting {
        what: "CIDR",
        value: c.to_string(),
        reason: reason.to_string(),
        hint: "use an address range like 203.0.113.7/32 or 2001:db8::/64".into(),
    };
    let trimmed = c.trim();
    let addr = trimmed.split_once('/').map_or(trimmed, |(a, _)| a);
    let ip: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let net = if trimmed.contains('/') {
        trimmed.parse::<ipnet::IpNet>().map_err(|_| {
            bad(if ip.is_ipv4() {
                "the prefix length is not a number from 0 to 32"
            } else {
                "the prefix length is not a number from 0 to 128"
            })
        })?
    } else {
        ipnet::IpNet::from(ip)
    };
    Ok(net.trunc().to_string())
}

/// Refuses to `action` a deployment whose resources another identity created (their
/// `labship:owner` tags), unless `force`. Resources without the tag (older labship) pass.
pub fn require_owner<'a>(
    deployment: &str,
    caller: &str,
    owners: impl IntoIterator<Item = &'a Option<String>>,
    force: bool,
    action: &'static str,
) -> Result<()> {
    if force {
        return Ok(());
    }
    match owners.into_iter().flatten().find(|o| o.as_str() != caller) {
        Some(owner) => Err(Error::NotOwner {
            deployment: deployment.to_string(),
            owner: owner.clone(),
            caller: caller.to_string(),
            action,
        }),
        None => Ok(()),
    }
}

/// The caller's public IP as AWS sees it, from `https://checkip.amazonaws.com/`.
/// `LABSHIP_CHECKIP` replaces the service (tests, proxies): an `https://` URL anywhere, plain
/// HTTP (`http://HOST:PORT/` or `HOST:PORT`) only on this machine. An answer that cannot be
/// anyone's public address (private, loopback, link-local...) is refused: it would open the
/// port to the wrong network.
pub async fn caller_ip() -> Result<IpAddr> {
    let service = std::env::var("LABSHIP_CHECKIP")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| CHECKIP.to_string());
    let fail = |message: String| Error::CallerIp { message };
    let within = Duration::from_secs(8);
    let (status, body) = match service.strip_prefix("https://") {
        Some(rest) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u16>()
                        .map_err(|_| fail(format!("{service}: the port is not a number")))?,
                ),
                None => (authority, 443),
            };
            crate::http::get_text_https(host, port, &format!("/{path}"), within).await
        }
        None => {
            let addr = service.strip_prefix("http://").unwrap_or(&service);
            let addr = addr.split('/').next().unwrap_or_default();
            let loopback = addr
                .rsplit_once(':')
                .map_or(addr, |(h, _)| h)
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(fail(format!(
                    "{service}: plain HTTP is only accepted on this machine (LABSHIP_CHECKIP); use an https:// URL"
                )));
            }
            crate::http::get_text(addr, "/", within).await
        }
    }
    .map_err(|message| fail(format!("{service}: {message}")))?;
    if status != 200 {
        return Err(fail(format!("{service} answered HTTP {status}")));
    }
    let ip: IpAddr = body.trim().parse().map_err(|_| {
        fail(format!(
            "{service} answered something that is not an address"
        ))
    })?;
    if !is_public(ip) {
        return Err(fail(format!(
            "{service} answered {ip}, which is not a public address (a proxy or a captive portal in the way?)"
        )));
    }
    Ok(ip)
}

/// Whether `ip` can be a caller's address on the internet: not private, loopback,
/// link-local, shared (carrier NAT), unspecified, broadcast or multicast.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// EC2 in the user's AWS account as a [`Host`]. The AWS configuration is loaded once per
/// command; the Docker engine (which builds and pushes the image) is reached only by the
/// verbs that need it, so `status`, `token`, `logs` and `down` work without one.
pub struct Ec2Host {
    engine: tokio::sync::OnceCell<Engine>,
    aws: Aws,
}

impl Ec2Host {
    pub async fn connect(config: &Config) -> Result<Ec2Host> {
        Ok(Ec2Host {
            engine: tokio::sync::OnceCell::new(),
            aws: crate::aws::load(config).await?,
        })
    }

    /// For many deployments at once (a class): the SDK's adaptive retry, whose client-side
    /// rate limiter backs every seat off together when AWS throttles.
    pub async fn connect_bulk(config: &Config) -> Result<Ec2Host> {
        Ok(Ec2Host {
            engine: tokio::sync::OnceCell::new(),
            aws: crate::aws::load_with(config, crate::aws::RetryMode::Bulk).await?,
        })
    }

    /// The engine, the settings (with the offline base when the default cannot be pulled)
    /// and EC2's options: what both planning and applying start from.
    async fn start(
        &self,
        config: &Config,
        options: &UpOptions,
    ) -> Result<(&Engine, Config, plan::Options)> {
        let engine = self.engine.get_or_try_init(Engine::connect).await?;
        let config = crate::build::base::prefer_offline(engine, config).await?;
        let opts = plan::Options::resolve(&config, options)?;
        Ok((engine, config, opts))
    }
}

impl Host for Ec2Host {
    fn target(&self) -> Target {
        Target::Ec2
    }

    async fn plan(&self, config: &Config, options: &UpOptions, _printer: &Printer) -> Result<Plan> {
        let (engine, config, opts) = self.start(config, options).await?;
        up::dry_run(engine, &self.aws, &config, &opts).await
    }

    async fn up(
        &self,
        config: &Config,
        options: &UpOptions,
        printer: &Printer,
    ) -> Result<UpReport> {
        // A seat may launch with the other seats of this command: they wait for it until it
        // launches or goes another way (its ticket dropped).
        let ticket = options.seat.is_some().then(|| launch::ticket(&self.aws));
        let (engine, config, opts) = self.start(config, options).await?;
        up::up(engine, &self.aws, &config, &opts, ticket, printer).await
    }

    async fn status(&self) -> Result<Vec<DeploymentStatus>> {
        info::status(&self.aws).await
    }

    async fn listing(&self) -> Result<Vec<DeploymentStatus>> {
        info::listing(&self.aws).await
    }

    async fn token(&self, deployment: &str) -> Result<TokenReport> {
        info::token(&self.aws, deployment).await
    }

    async fn connect_target(&self, deployment: &str) -> Result<crate::hosts::ConnectTarget> {
        info::connect_target(&self.aws, deployment).await
    }

    async fn rotate_token(&self, config: &Config, printer: &Printer) -> Result<TokenReport> {
        up::rotate_token(&self.aws, config, printer).await
    }

    async fn logs(&self, deployment: &str, tail: Option<usize>) -> Result<LogsReport> {
        info::logs(&self.aws, deployment, tail).await
    }

    async fn attach(&self, _deployment: &str, _printer: &Printer) -> Result<()> {
        // Refused before anything happens by `UpOptions::refuse`; kept an error here too.
        UpOptions {
            attach: true,
            ..UpOptions::default()
        }
        .refuse(Target::Ec2, &[])
    }

    async fn stop(&self, deployment: &str, force: bool, printer: &Printer) -> Result<StopReport> {
        stop::stop(&self.aws, deployment, force, printer).await
    }

    /// The image in ECR (built and pushed when missing), so the seats' `up`s find it there.
    async fn prepare(&self, config: &Config, printer: &Printer) -> Result<()> {
        let (engine, config, _) = self.start(config, &UpOptions::default()).await?;
        let ecr = crate::push::Ecr::new(&self.aws, config.push.registry_endpoint.clone());
        crate::interrupt::cancellable(
            "pushing the image",
            crate::push::push(engine, &ecr, &config, printer),
        )
        .await?;
        Ok(())
    }

    async fn jupyter(&self, deployment: &str) -> Result<crate::hosts::JupyterAccess> {
        let cloud = crate::aws::Cloud::new(&self.aws);
        let inst = info::running(&cloud, deployment).await?;
        let unreachable = |message: String| Error::NotRunning {
            deployment: deployment.to_string(),
            server: inst.id.clone(),
            state: inst.state.clone(),
            hint: message,
        };
        backup::access(&cloud, &inst)
            .await
            .map_err(unreachable)?
            .ok_or_else(|| {
                unreachable(format!(
                    "its Jupyter never started: `labship logs {deployment} --ec2` shows why"
                ))
            })
    }

    async fn backup(
        &self,
        deployment: &str,
        dest: &std::path::Path,
        printer: &Printer,
    ) -> Result<crate::hosts::BackupReport> {
        backup::backup(&self.aws, deployment, dest, printer).await
    }

    async fn down_preview(&self, config: &Config, options: &DownOptions) -> Result<Option<String>> {
        if options.all {
            down::preview_all(&self.aws, options).await
        } else {
            down::preview(&self.aws, config, options).await
        }
    }

    async fn down(
        &self,
        config: &Config,
        options: &DownOptions,
        printer: &Printer,
    ) -> Result<DownReport> {
        if options.all {
            down::down_all(&self.aws, config, options, printer).await
        } else {
            down::down(&self.aws, config, options, printer).await
        }
    }

    async fn down_each(
        &self,
        configs: &[Config],
        options: &DownOptions,
        printer: &Printer,
    ) -> Result<Vec<(String, Result<DownReport>)>> {
        down::down_many(&self.aws, configs, options, printer).await
    }

    async fn settle_class(&self, class: &str) -> Result<()> {
        crate::aws::Cloud::new(&self.aws)
            .settle_class_group(class)
            .await
            .map(|_| ())
    }

    async fn release_class(&self, class: &str, force: bool) -> Result<DownReport> {
        down::release_class(&self.aws, class, force).await
    }

    async fn release_preview(&self, class: &str, removing: &[&str]) -> Result<Option<String>> {
        down::release_preview(&self.aws, class, removing).await
    }
}

/// Where labship reaches Jupyter on `inst` (on `port`): its public address, or with
/// `--access ssm` the local end of a Systems Manager session opened now (the caller closes
/// it). `None` for an HTTPS instance without a public address.
pub(crate) async fn jupyter_address(
    cloud: &crate::aws::Cloud,
    inst: &crate::aws::ec2::Instance,
    port: u16,
) -> Result<Option<(String, Option<crate::tunnel::Tunnel>)>> {
    Ok(match inst.access {
        crate::config::Access::Https => inst
            .public_ip
            .as_deref()
            .map(|ip| (up::host_port(ip, port), None)),
        crate::config::Access::Ssm => {
            let tunnel = crate::tunnel::Tunnel::open(cloud, &inst.id, port).await?;
            Some((tunnel.addr(), Some(tunnel)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_identitys_deployment_needs_force() {
        let me = "arn:aws:iam::123456789012:user/ana";
        let other = Some("arn:aws:iam::123456789012:user/bo".to_string());
        let mine = Some(me.to_string());
        assert!(require_owner("lab", me, [&mine, &None], false, "remove").is_ok());
        match require_owner("lab", me, [&mine, &other], false, "remove") {
            Err(Error::NotOwner { owner, caller, .. }) => {
                assert_eq!(owner, "arn:aws:iam::123456789012:user/bo");
                assert_eq!(caller, me);
            }
            other => panic!("{other:?}"),
        }
        assert!(require_owner("lab", me, [&other], true, "remove").is_ok());
    }

    #[test]
    fn only_a_public_address_can_be_the_callers() {
        for public in [
            "203.0.113.9",
            "52.95.110.1",
            "2600:1f18::1",
            "::ffff:52.95.110.1",
        ] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
        for not in [
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.10",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00::5",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(not.parse().expect("ip")), "{not}");
        }
    }

    #[test]
    fn cidrs_are_normalised_and_checked() {
        assert_eq!(normalise_cidr("203.0.113.7").unwrap(), "203.0.113.7/32");
        assert_eq!(normalise_cidr("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(normalise_cidr("10.0.0.28/29").unwrap(), "10.0.0.24/29");
        assert_eq!(normalise_cidr("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(normalise_cidr("2001:db8::1/64").unwrap(), "2001:db8::/64");
        assert_eq!(normalise_cidr("2001:db8::1").unwrap(), "2001:db8::1/128");
        assert!(normalise_cidr("10.0.0.0/33").is_err());
        assert!(normalise_cidr("example.com/32").is_err());
        assert!(normalise_cidr("10.0.0.1/x").is_err());
        assert!(normalise_cidr("").is_err());
    }

    #[test]
    fn allowed_cidrs_refuse_everyone_and_too_many() {
        assert_eq!(
            allowed_cidrs(&["10.0.0.1".into(), "10.0.0.1/32".into()]).unwrap(),
            vec!["10.0.0.1/32".to_string()],
            "duplicates are one rule"
        );
        assert!(allowed_cidrs(&["0.0.0.0/0".into()]).is_err());
        assert!(allowed_cidrs(&["::/0".into()]).is_err());
        let many: Vec<String> = (0..61).map(|i| format!("10.0.{i}.0/24")).collect();
        assert!(allowed_cidrs(&many).is_err());
        assert!(allowed_cidrs(&many[..60]).is_ok());
    }

    #[test]
    fn root_volume_fits_the_image_and_the_ami() {
        assert_eq!(root_volume_gib(8, Some(1 << 30)), 8);
        assert_eq!(root_volume_gib(8, Some(3 << 30)), 10);
        assert_eq!(root_volume_gib(30, Some(3 << 30)), 30);
        assert_eq!(root_volume_gib(8, None), 12);
    }

    #[test]
    fn ami_parameters_follow_kind_and_architecture() {
        assert_eq!(
            ami_parameter(&HostAmi::Al2023, Arch::Arm64).unwrap(),
            "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
        );
        assert!(ami_parameter(&HostAmi::Ecs, Arch::Amd64)
            .unwrap()
            .ends_with("/amazon-linux-2023/recommended/image_id"));
        assert!(ami_parameter(&HostAmi::Id("ami-1".into()), Arch::Amd64).is_none());
    }
}
