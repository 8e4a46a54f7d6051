//! Step 3 of the pipeline on AWS: launch a host for the pushed image and read its token.
//!
//! `up` checks everything that can be checked without changing anything (instance type and
//! its architecture against the image's platform, the host image, the VPC, the caller's
//! address), builds and prepares the push, makes sure the shared instance role and the
//! deployment's security group exist, then launches the instance while the layers are still
//! uploading: the user-data (rendered from `userdata/`) retries the pull until the image is
//! there. The console shows the user-data's phase markers; the token is read from it.
//!
//! State lives in AWS tags only (see [`crate::tags`]): `status`, `token`, `logs` and `down`
//! work from any machine.

pub mod backup;
pub mod console;
pub mod down;
pub mod info;
pub mod plan;
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
    DeploymentStatus, DownOptions, DownReport, Host, LogsReport, Plan, TokenReport, UpOptions,
    UpReport,
};
use crate::output::Printer;

pub use crate::aws::Cloud;

/// The address service asked for the caller's public IP (plain HTTP: it only decides which
/// address the security group opens to, and `--allow-cidr` replaces it).
const CHECKIP: &str = "checkip.amazonaws.com:80";

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

/// The caller's public IP as AWS sees it. `LABSHIP_CHECKIP` (host:port) replaces the
/// service (tests, proxies).
pub async fn caller_ip() -> Result<IpAddr> {
    let addr = std::env::var("LABSHIP_CHECKIP")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| CHECKIP.to_string());
    let (status, body) = crate::http::get_text(&addr, "/", Duration::from_secs(8))
        .await
        .map_err(|message| Error::CallerIp {
            message: format!("http://{addr}/: {message}"),
        })?;
    if status != 200 {
        return Err(Error::CallerIp {
            message: format!("http://{addr}/ answered HTTP {status}"),
        });
    }
    body.trim().parse().map_err(|_| Error::CallerIp {
        message: format!("http://{addr}/ answered something that is not an address"),
    })
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
        let (engine, config, opts) = self.start(config, options).await?;
        up::up(engine, &self.aws, &config, &opts, printer).await
    }

    async fn status(&self) -> Result<Vec<DeploymentStatus>> {
        info::status(&self.aws).await
    }

    async fn token(&self, deployment: &str) -> Result<TokenReport> {
        info::token(&self.aws, deployment).await
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
        .refuse(Target::Ec2, false)
    }

    async fn down_preview(&self, config: &Config, options: &DownOptions) -> Result<Option<String>> {
        down::preview(&self.aws, config, options).await
    }

    async fn down(
        &self,
        config: &Config,
        options: &DownOptions,
        printer: &Printer,
    ) -> Result<DownReport> {
        down::down(&self.aws, config, options, printer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
