//! EC2 in the pipeline's words: check an instance type, resolve a host image, find the VPC,
//! make sure the deployment's security group exists with exactly its ingress, launch, find,
//! read the console, tag, terminate. Every create is tagged at creation and every
//! create-or-reuse is idempotent, so an interrupted `up` leaves only tagged resources that
//! the next `up` reuses and `down` removes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, IpPermission, IpRange,
    Ipv6Range, MarketType, Placement, ResourceType, ShutdownBehavior, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification, VolumeType,
};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::Serialize;

use super::retry::{self, Step};
use super::{error_code, Cloud};
use crate::error::{Error, Result};
use crate::tags;

/// States in which an instance still exists (and costs, or will).
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

/// Where an instance launches: a VPC and, with a configured subnet, its Availability Zone.
#[derive(Debug, Clone)]
pub struct Network {
    pub vpc: String,
    pub subnet_zone: Option<String>,
}

/// The security group of a deployment.
pub fn security_group_name(deployment: &str) -> String {
    format!("labship-{deployment}")
}

/// The security group every seat of a class shares (since labship 0.9; a seat made before
/// has a group of its own). A dot keeps it apart from any deployment's group: a deployment's
/// name has letters, digits and dashes only.
pub fn class_group_name(class: &str) -> String {
    format!("labship-class.{class}")
}

/// What labship needs to know about an instance type.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceTypeInfo {
    pub name: String,
    /// EC2's names: `x86_64`, `arm64`.
    pub architectures: Vec<String>,
    /// Nitro instances serve the live console (`GetConsoleOutput Latest=true`).
    pub nitro: bool,
    /// Its memory (MiB) and vCPUs, when EC2 says (what the seats of a shared host share).
    pub memory_mib: Option<u64>,
    pub vcpus: Option<u32>,
}

/// A host image, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct HostImage {
    pub id: String,
    /// Where it came from: the SSM parameter, or "given".
    pub source: String,
    pub root_device: String,
    /// The smallest root volume the image allows.
    pub min_root_gib: i32,
    pub architecture: Option<String>,
}

/// A labship instance, as found by its tags.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: String,
    pub deployment: String,
    /// A seat launched with others whose own tags (deployment, seat) were never set: it is its
    /// seat by its launch index ([`deployment_of`]) until the next `up` sets them.
    #[serde(skip)]
    pub untagged_seat: bool,
    pub state: String,
    pub instance_type: String,
    pub public_ip: Option<String>,
    /// RFC 3339.
    pub launched: Option<String>,
    #[serde(skip)]
    pub launched_secs: Option<i64>,
    /// The image its container runs (tag `labship:image`).
    pub image: Option<String>,
    pub port: Option<u16>,
    /// Its Jupyter serves HTTPS (tag `labship:scheme=https`).
    pub https: bool,
    /// How it is reached (tag `labship:access`; HTTPS when absent).
    pub access: crate::config::Access,
    /// Who launched it (tag `labship:owner`; none on instances of older labship versions).
    pub owner: Option<String>,
    pub security_groups: Vec<String>,
    /// The names of `security_groups`, in the same order.
    #[serde(skip)]
    pub security_group_names: Vec<String>,
    /// Its idle stop and TTL (tags `labship:idle-stop`, `labship:ttl`; `None` on instances
    /// of older labship versions, which have neither).
    pub idle_stop: Option<Option<Duration>>,
    pub ttl: Option<Option<Duration>>,
    /// Its Availability Zone.
    pub availability_zone: Option<String>,
    /// Its workspace lives on the deployment's data volume (tag `labship:data-volume`).
    pub data_volume: bool,
    /// A spot instance (EC2's InstanceLifecycle), and its spot request.
    pub spot: bool,
    pub spot_request: Option<String>,
    /// Why it is in its state (EC2's StateReason code, e.g. `Server.SpotInstanceShutdown`).
    pub state_reason: Option<String>,
    /// A class's seat (tags `labship:class`, `labship:seat`).
    pub seat: Option<crate::hosts::SeatOf>,
    /// Which inputs its host copied (tag `labship:inputs`).
    pub inputs: Option<String>,
    /// Its instance profile, by name (the shared one, or its deployment's own).
    pub profile: Option<String>,
}

impl Instance {
    /// It is in the group `class`'s seats share ([`class_group_name`]).
    pub fn in_class_group(&self, class: &str) -> bool {
        self.security_group_names.contains(&class_group_name(class))
    }

    /// The host it shares with other seats of its class, if any.
    pub fn shared_host(&self) -> Option<&crate::hosts::SharedHost> {
        self.seat.as_ref().and_then(|s| s.host.as_ref())
    }

    /// This instance (read again by id) as `like`'s seat sees it: on a shared host, a seat
    /// other than the first has its own deployment, seat and port.
    pub fn seated_as(self, like: &Instance) -> Instance {
        if like.shared_host().is_none() {
            return self;
        }
        Instance {
            deployment: like.deployment.clone(),
            seat: like.seat.clone(),
            port: like.port,
            untagged_seat: like.untagged_seat,
            ..self
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }

    /// A spot instance EC2 stopped for want of capacity (it starts it again by itself when
    /// capacity returns; `up` asks for it too).
    pub fn interrupted(&self) -> bool {
        self.spot
            && self.state == "stopped"
            && self
                .state_reason
                .as_deref()
                .is_some_and(|r| r.starts_with("Server.Spot"))
    }
}

/// The job hosts' security group (per VPC). Its name cannot be a deployment's group
/// (`labship-<name>`, names being `[a-z0-9-]`).
pub const JOB_GROUP: &str = "labship.job-hosts";

/// A job host (`labship run --ec2`): its instance (`deployment` holds the project it runs
/// for), its run and where its results go.
#[derive(Debug, Clone, Serialize)]
pub struct JobHost {
    pub instance: Instance,
    pub run_id: String,
    pub output: Option<String>,
}

/// A labship security group.
#[derive(Debug, Clone, Serialize)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub deployment: Option<String>,
    pub vpc: Option<String>,
    /// Who created it (tag `labship:owner`; none on groups of older labship versions).
    pub owner: Option<String>,
    /// A class's seat (tags `labship:class`, `labship:seat`; none on groups of older labship
    /// versions).
    pub seat: Option<crate::hosts::SeatOf>,
    /// The class whose seats share this group ([`class_group_name`]: tag `labship:class`,
    /// and no `labship:deployment`).
    pub class: Option<String>,
}

/// The ingress a deployment's security group should have: TCP `port` from `cidrs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Ingress {
    pub port: u16,
    pub cidrs: Vec<String>,
    pub description: String,
}

/// What RunInstances gets, decided by the plan (see `plan::plan`); the security group is
/// added at launch, once it exists.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub deployment: String,
    pub ami: String,
    pub instance_type: String,
    pub root_device: String,
    pub root_gib: i32,
    pub metadata_hop_limit: i32,
    pub subnet: Option<String>,
    /// The Availability Zone to launch in (where the deployment's data volume is); None: EC2
    /// chooses (or the subnet decides).
    pub availability_zone: Option<String>,
    /// A spot instance: persistent request, stopped (not terminated) on interruption.
    pub spot: bool,
    pub ssh_key: Option<String>,
    /// The user-data's bytes, gzipped (cloud-init unpacks it).
    pub user_data: Vec<u8>,
    pub instance_tags: Vec<(String, String)>,
    /// For the root volume and the network interface.
    pub volume_tags: Vec<(String, String)>,
    /// A job host: a `shutdown` on it terminates it (a deployment's host is stopped, and
    /// keeps its disk).
    pub terminate_on_shutdown: bool,
    /// The instance profile: the shared one (deployments), or a run's own (job hosts).
    pub instance_profile: String,
}

fn ec2_tags(pairs: &[(&str, String)]) -> Vec<Tag> {
    pairs
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(v).build())
        .collect()
}

fn tag_spec(kind: ResourceType, pairs: &[(&str, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(ec2_tags(pairs)))
        .build()
}

/// Each (port, CIDR) of `ingress`, with its description.
fn rules_of(ingress: &[Ingress]) -> Vec<NewRule<'_>> {
    ingress
        .iter()
        .flat_map(|r| {
            r.cidrs
                .iter()
                .map(move |c| (i32::from(r.port), c.clone(), r.description.as_str()))
        })
        .collect()
}

/// An inbound rule as EC2 lists it: (port, CIDR).
type Rule = (i32, String);
/// An inbound rule to add: (port, CIDR, description).
type NewRule<'a> = (i32, String, &'a str);

/// What settling a class's group changes ([`Cloud::settle_class_group`]), from its rules
/// (`have`, as (port, CIDR)), the rules the seats of this command asked for (`asked`), and the
/// ports the HTTPS seats in it are on (`seated`, as DescribeInstances says, which may lag):
/// (rules to add, rules to remove). A rule stays when it was asked for, or when its port
/// was not asked about and a seat is on it (a seat whose move failed); it goes when no seat
/// is on its port and no one asked for it (a port the seats left, or every seat reached
/// through SSM now), or when its port was asked about without its address (an address that
/// changed). Rules for SSH (port 22, `ec2.ssh_key`) are asked for as they are wanted.
pub(crate) fn settled_rules<'a>(
    have: &'a [Rule],
    asked: &'a [Ingress],
    seated: &[i32],
) -> (Vec<NewRule<'a>>, Vec<&'a Rule>) {
    let wanted = rules_of(asked);
    let asked_ports: Vec<i32> = asked.iter().map(|r| i32::from(r.port)).collect();
    let remove = have
        .iter()
        .filter(|(p, c)| {
            let wanted_here = wanted.iter().any(|(wp, wc, _)| wp == p && wc == c);
            !wanted_here && (asked_ports.contains(p) || !seated.contains(p))
        })
        .collect();
    (wanted, remove)
}

/// At most this many deployments are named in one describe's tag filter: EC2 takes up to 200
/// filter values in a call, and the other filters use a few.
pub(super) const TAG_VALUES_PER_CALL: usize = 100;

/// `describe` of `deployments`, [`TAG_VALUES_PER_CALL`] names to a call, the answers together.
pub(super) async fn in_chunks<'a, T, F, Fut>(
    deployments: &'a [&'a str],
    describe: F,
) -> Result<Vec<T>>
where
    F: Fn(&'a [&'a str]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>>>,
{
    let mut found = Vec::new();
    for some in deployments.chunks(TAG_VALUES_PER_CALL) {
        found.extend(describe(some).await?);
    }
    Ok(found)
}

/// What a describe of `deployments` (None: all of labship's) names in an error.
pub(super) fn named(deployments: Option<&[&str]>) -> String {
    match deployments {
        None => "labship".into(),
        Some([one]) => (*one).to_string(),
        Some(many) => format!(
            "{} deployments ({}, ...)",
            many.len(),
            many.first().copied().unwrap_or_default()
        ),
    }
}

pub(super) fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

impl Cloud {
    // ---- what to launch ------------------------------------------------------------------

    /// The instance type's architectures and hypervisor; an unknown type is an error.
    pub async fn instance_type(&self, name: &str) -> Result<InstanceTypeInfo> {
        self.lookups
            .instance_types
            .get_or_try(name.to_string(), || self.ask_instance_type(name))
            .await
    }

    async fn ask_instance_type(&self, name: &str) -> Result<InstanceTypeInfo> {
        let out = self
            .ec2
            .describe_instance_types()
            .instance_types(InstanceType::from(name))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e)
                if matches!(
                    error_code(&e),
                    "InvalidInstanceType" | "InvalidParameterValue"
                ) =>
            {
                return Err(Error::UnknownInstanceType {
                    instance_type: name.to_string(),
                    region: self.region.clone(),
                })
            }
            Err(e) => return Err(self.fail("ec2", "DescribeInstanceTypes", name, &e)),
        };
        let Some(info) = out.instance_types().first() else {
            return Err(Error::UnknownInstanceType {
                instance_type: name.to_string(),
                region: self.region.clone(),
            });
        };
        let architectures = info
            .processor_info()
            .map(|p| {
                p.supported_architectures()
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let nitro = info
            .hypervisor()
            .is_some_and(|h| h.as_str().eq_ignore_ascii_case("nitro"));
        Ok(InstanceTypeInfo {
            name: name.to_string(),
            architectures,
            nitro,
            memory_mib: info
                .memory_info()
                .and_then(|m| m.size_in_mib())
                .and_then(|m| u64::try_from(m).ok()),
            vcpus: info
                .v_cpu_info()
                .and_then(|v| v.default_v_cpus())
                .and_then(|v| u32::try_from(v).ok()),
        })
    }

    /// A public SSM parameter's value (the latest Amazon Linux AMI ids live there).
    /// Root device and size of an AMI, when EC2 knows it (None: not found).
    pub async fn describe_image(&self, id: &str) -> Result<Option<HostImage>> {
        let out = match self.ec2.describe_images().image_ids(id).send().await {
            Ok(out) => out,
            Err(e) if error_code(&e).starts_with("InvalidAMIID") => return Ok(None),
            Err(e) => return Err(self.fail("ec2", "DescribeImages", id, &e)),
        };
        Ok(out.images().first().map(|img| {
            let root_device = img.root_device_name().unwrap_or("/dev/xvda").to_string();
            let min_root_gib = img
                .block_device_mappings()
                .iter()
                .find(|m| m.device_name() == Some(root_device.as_str()))
                .and_then(|m| m.ebs())
                .and_then(|e| e.volume_size())
                .unwrap_or(8);
            HostImage {
                id: id.to_string(),
                source: "given".into(),
                root_device,
                min_root_gib,
                architecture: img.architecture().map(|a| a.as_str().to_string()),
            }
        }))
    }

    /// The VPC to launch in: the subnet's, or the region's default VPC; with a subnet, its
    /// Availability Zone too (where the instance, and so its data volume, will be).
    pub async fn vpc(&self, subnet: Option<&str>) -> Result<Network> {
        self.lookups
            .networks
            .get_or_try(subnet.map(str::to_string), || self.ask_vpc(subnet))
            .await
    }

    async fn ask_vpc(&self, subnet: Option<&str>) -> Result<Network> {
        if let Some(subnet) = subnet {
            let out = self
                .ec2
                .describe_subnets()
                .subnet_ids(subnet)
                .send()
                .await
                .map_err(|e| {
                    if error_code(&e).starts_with("InvalidSubnetID") {
                        Error::Network {
                            what: format!("subnet {subnet} does not exist"),
                            region: self.region.clone(),
                            message: crate::error::aws_message(&e),
                            hint: "check ec2.subnet / --subnet and the region".into(),
                        }
                    } else {
                        self.fail("ec2", "DescribeSubnets", subnet, &e)
                    }
                })?;
            let Some(found) = out.subnets().first() else {
                return Err(Error::Network {
                    what: format!("subnet {subnet} does not exist"),
                    region: self.region.clone(),
                    message: "DescribeSubnets returned nothing".into(),
                    hint: "check ec2.subnet / --subnet and the region".into(),
                });
            };
            // Jupyter is reached on the instance's public address.
            if found.map_public_ip_on_launch() == Some(false) {
                return Err(Error::Network {
                    what: format!("subnet {subnet} gives instances no public IP address"),
                    region: self.region.clone(),
                    message: "its MapPublicIpOnLaunch is false, so Jupyter could not be reached from here".into(),
                    hint: format!("choose a public subnet, or turn it on: `aws ec2 modify-subnet-attribute --subnet-id {subnet} --map-public-ip-on-launch`"),
                });
            }
            let vpc = found
                .vpc_id()
                .map(str::to_string)
                .ok_or_else(|| Error::Network {
                    what: format!("subnet {subnet} has no VPC"),
                    region: self.region.clone(),
                    message: "DescribeSubnets returned no VpcId".into(),
                    hint: "check ec2.subnet / --subnet".into(),
                })?;
            return Ok(Network {
                vpc,
                subnet_zone: found.availability_zone().map(str::to_string),
            });
        }
        let out = self
            .ec2
            .describe_vpcs()
            .filters(filter("is-default", &["true"]))
            .send()
            .await
            .map_err(|e| self.fail("ec2", "DescribeVpcs", "default VPC", &e))?;
        let vpc = out
            .vpcs()
            .first()
            .and_then(|v| v.vpc_id())
            .map(str::to_string)
            .ok_or_else(|| Error::Network {
                what: "there is no default VPC".into(),
                region: self.region.clone(),
                message: "DescribeVpcs found no VPC with isDefault=true".into(),
                hint: "create one with `aws ec2 create-default-vpc`, or name a subnet with a route to the internet: --subnet subnet-... (or ec2.subnet in labship.toml)".into(),
            })?;
        Ok(Network {
            vpc,
            subnet_zone: None,
        })
    }

    /// Refuses a key pair (`ec2.ssh_key`) that does not exist in this region, before
    /// anything is made (RunInstances would refuse it only after the build and the push).
    pub async fn require_key_pair(&self, name: Option<&str>) -> Result<()> {
        let Some(name) = name else { return Ok(()) };
        self.lookups
            .key_pairs
            .get_or_try(name.to_string(), || self.ask_key_pair(name))
            .await
    }

    async fn ask_key_pair(&self, name: &str) -> Result<()> {
        match self.ec2.describe_key_pairs().key_names(name).send().await {
            Ok(out) if !out.key_pairs().is_empty() => Ok(()),
            Ok(_) => Err(no_key_pair(
                name,
                &self.region,
                "DescribeKeyPairs found none",
            )),
            Err(e) if error_code(&e) == "InvalidKeyPair.NotFound" => Err(no_key_pair(
                name,
                &self.region,
                &crate::error::aws_message(&e),
            )),
            Err(e) => Err(self.fail("ec2", "DescribeKeyPairs", name, &e)),
        }
    }

    // ---- network -------------------------------------------------------------------------

    /// The deployment's security group in `vpc`, created (tagged) when missing, with its
    /// ingress made exactly `ingress` (a changed IP replaces the old rule). Egress stays
    /// EC2's default (all), which the host needs to reach ECR. Returns (id, created).
    pub async fn ensure_security_group(
        &self,
        deployment: &str,
        vpc: &str,
        ingress: &[Ingress],
    ) -> Result<(String, bool)> {
        self.ensure_group(
            &security_group_name(deployment),
            &format!("labship deployment {deployment}: Jupyter port only"),
            tags::for_deployment(deployment),
            vpc,
            ingress,
            None::<fn(&Option<String>) -> Result<()>>,
        )
        .await
    }

    /// The security group of a class's seats in `vpc` ([`class_group_name`]), made with
    /// `ingress` or made to have it, once in a command: the seats of a class asking at once
    /// wait for the first one's answer and take it as it is (they all ask for the same rules:
    /// the class's one port, from the same addresses). True for the one caller whose call
    /// created it.
    ///
    /// The owner of a group found is first shown to `allow` (the caller refuses another
    /// identity's), and the group gets the rules added ([`Cloud::share_ingress`]), never removed: what no seat wants any
    /// more goes when the class's `up` ends.
    pub async fn ensure_class_group(
        &self,
        class: &str,
        vpc: &str,
        ingress: &[Ingress],
        allow: impl FnOnce(&Option<String>) -> Result<()>,
    ) -> Result<(String, bool)> {
        let ((id, created), mine) = self
            .lookups
            .class_groups
            .get_or_try_first((class.to_string(), vpc.to_string()), || async {
                let mut pairs = vec![
                    (tags::MANAGED_BY, tags::MANAGED_BY_VALUE.to_string()),
                    (tags::CLASS, class.to_string()),
                ];
                pairs.extend(tags::owner().map(|arn| (tags::OWNER, arn)));
                self.ensure_group(
                    &class_group_name(class),
                    &format!("labship class {class}: its seats' Jupyter port only"),
                    pairs,
                    vpc,
                    ingress,
                    Some(allow),
                )
                .await
            })
            .await?;
        Ok((id, created && mine))
    }

    /// The group `name` in `vpc` with exactly `ingress`: found, or made with `pairs` as its
    /// tags (and its Name). True when this call made it. A class's (`shared`: the owner of
    /// one found is shown to it first) gets `ingress` added instead, see
    /// [`Cloud::share_ingress`].
    async fn ensure_group(
        &self,
        name: &str,
        description: &str,
        mut pairs: Vec<(&str, String)>,
        vpc: &str,
        ingress: &[Ingress],
        shared: Option<impl FnOnce(&Option<String>) -> Result<()>>,
    ) -> Result<(String, bool)> {
        let name = name.to_string();
        let (id, owner) = match self.find_group(&name, vpc).await? {
            Some(found) => found,
            None => {
                pairs.push(("Name", name.clone()));
                match self
                    .ec2
                    .create_security_group()
                    .group_name(&name)
                    .description(description)
                    .vpc_id(vpc)
                    .tag_specifications(tag_spec(ResourceType::SecurityGroup, &pairs))
                    .send()
                    .await
                {
                    Ok(out) => {
                        let id = out.group_id().unwrap_or_default().to_string();
                        return self.with_rules(id, ingress, shared.is_some()).await;
                    }
                    // Another `up` made it meanwhile.
                    Err(e) if error_code(&e) == "InvalidGroup.Duplicate" => {
                        match self.find_group(&name, vpc).await? {
                            Some(found) => found,
                            None => return Err(self.fail("ec2", "CreateSecurityGroup", &name, &e)),
                        }
                    }
                    Err(e) => return Err(self.fail("ec2", "CreateSecurityGroup", &name, &e)),
                }
            }
        };
        match shared {
            Some(allow) => {
                allow(&owner)?;
                self.share_ingress(&id, ingress).await?;
            }
            None => {
                self.set_ingress(&id, ingress).await?;
            }
        }
        Ok((id, false))
    }

    /// A group just made (`id`) given its rules; (`id`, true).
    async fn with_rules(
        &self,
        id: String,
        ingress: &[Ingress],
        shared: bool,
    ) -> Result<(String, bool)> {
        // A new group has no ingress: add the rules without describing it first (a group just
        // made may not be visible to a describe yet).
        let perms = rules_of(ingress)
            .iter()
            .map(|(p, c, d)| permission(*p, c, Some(d)))
            .collect();
        self.authorize(&id, perms).await?;
        if shared {
            self.record_shared(&id, ingress);
        }
        Ok((id, true))
    }

    async fn find_security_group(&self, name: &str, vpc: &str) -> Result<Option<String>> {
        Ok(self.find_group(name, vpc).await?.map(|(id, _)| id))
    }

    /// The group `name` in `vpc`, as (id, owner tag).
    async fn find_group(&self, name: &str, vpc: &str) -> Result<Option<(String, Option<String>)>> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(filter("group-name", &[name]))
            .filters(filter("vpc-id", &[vpc]))
            .send()
            .await
            .map_err(|e| self.fail("ec2", "DescribeSecurityGroups", name, &e))?;
        Ok(out.security_groups().first().and_then(|g| {
            let id = g.group_id()?.to_string();
            Some((id, tag_value(g.tags(), tags::OWNER)))
        }))
    }

    /// Adds ingress permissions (the rules of a new group, or the missing ones of an old one).
    async fn authorize(&self, group: &str, perms: Vec<IpPermission>) -> Result<()> {
        // Eventual consistency: a group id can be unknown to other calls for a few seconds
        // after CreateSecurityGroup returned it. Only that error is retried, for up to 30 s.
        retry::until(Duration::from_secs(30), Duration::from_secs(2), || async {
            let sent = self
                .ec2
                .authorize_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(perms.clone()))
                .send()
                .await;
            match sent {
                Ok(_) => Ok(Step::Done(())),
                // The rule is there: an earlier attempt whose answer was lost, or another
                // `up` at the same time. What was asked holds.
                Err(e) if error_code(&e) == "InvalidPermission.Duplicate" => Ok(Step::Done(())),
                Err(e) => {
                    let err = self.fail("ec2", "AuthorizeSecurityGroupIngress", group, &e);
                    if error_code(&e) == "InvalidGroup.NotFound" {
                        Ok(Step::Again(err))
                    } else {
                        Err(err)
                    }
                }
            }
        })
        .await
    }

    /// Makes the group's ingress exactly `want`, once in a command (the seats of a class that
    /// share a group ask at once: the first one's call does it for all); true for the caller
    /// whose call added or removed a rule.
    pub async fn reconcile_ingress(&self, group: &str, want: &[Ingress]) -> Result<bool> {
        self.ingress_once(group, want, true).await
    }

    /// [`Cloud::change_ingress`] once in a command for this group and these rules; true for
    /// the caller whose call added or removed a rule.
    async fn ingress_once(&self, group: &str, want: &[Ingress], revoke: bool) -> Result<bool> {
        let (changed, mine) = self
            .lookups
            .ingress_set
            .get_or_try_first((group.to_string(), want.to_vec()), || {
                self.change_ingress(group, want, revoke)
            })
            .await?;
        Ok(changed && mine)
    }

    /// The rules `inst`'s group (`group`) should have for this `up`: exactly `want` for a
    /// deployment's own group; for the group a class's seats share, `want` added
    /// ([`Cloud::share_ingress`]). True for the caller whose call changed a rule.
    pub async fn allow_ingress(
        &self,
        group: &str,
        inst: &Instance,
        want: &[Ingress],
    ) -> Result<bool> {
        if inst
            .seat
            .as_ref()
            .is_some_and(|s| inst.in_class_group(&s.class))
        {
            self.share_ingress(group, want).await
        } else {
            self.reconcile_ingress(group, want).await
        }
    }

    /// Gives a class's group (`group`) the rules a seat wants, removing none: while the seats
    /// of one `up` move (`--port`), a seat not moved yet, or one whose move failed, keeps its
    /// way in. What no seat wants any more goes at the end ([`Cloud::settle_class_group`]),
    /// which keeps only rules asked for in this command. Once per command for these rules;
    /// true for the caller whose call added one.
    pub async fn share_ingress(&self, group: &str, want: &[Ingress]) -> Result<bool> {
        self.record_shared(group, want);
        self.ingress_once(group, want, false).await
    }

    /// Remembers, for this command, the rules a seat asked of its class's group.
    fn record_shared(&self, group: &str, want: &[Ingress]) {
        let mut asked = self
            .lookups
            .shared_rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rules = asked.entry(group.to_string()).or_default();
        for rule in want {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }

    /// After a class's `up`: each of its groups keeps the rules its seats asked for in this
    /// command ([`Cloud::share_ingress`]) and those of a port an HTTPS seat in it is on that
    /// no seat asked about (a seat whose move failed); see [`settled_rules`]. A group no seat
    /// of this command asked anything of is left as it is. True when a rule was removed or
    /// added.
    pub async fn settle_class_group(&self, class: &str) -> Result<bool> {
        let asked = self
            .lookups
            .shared_rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let groups = self.class_groups(&[class]).await?;
        if groups.iter().all(|g| !asked.contains_key(&g.id)) {
            return Ok(false);
        }
        let seats = self.class_seats(class).await?;
        let mut changed = false;
        for g in groups {
            let Some(rules) = asked.get(&g.id) else {
                continue;
            };
            let seated: Vec<i32> = seats
                .iter()
                .filter(|s| s.security_groups.contains(&g.id))
                .filter(|s| s.access == crate::config::Access::Https)
                .filter_map(|s| s.port.map(i32::from))
                .collect();
            let have = self.ingress_of(&g.id).await?;
            let (add, remove) = settled_rules(&have, rules, &seated);
            changed |= self.apply_ingress(&g.id, &have, &add, &remove).await?;
        }
        Ok(changed)
    }

    /// After a seat left its shared host (`down --seat`): the class's groups close `port`
    /// when no seat of the class is on it any more (its other ports stay as they are); true
    /// when a rule was removed.
    pub async fn close_unseated_port(&self, class: &str, port: u16) -> Result<bool> {
        let one = [class];
        let (groups, seats) = tokio::try_join!(self.class_groups(&one), self.class_seats(class))?;
        let mut changed = false;
        for g in groups {
            let seated = seats
                .iter()
                .any(|s| s.security_groups.contains(&g.id) && s.port == Some(port));
            if seated {
                continue;
            }
            let have = self.ingress_of(&g.id).await?;
            let stale: Vec<&Rule> = have.iter().filter(|(p, _)| *p == i32::from(port)).collect();
            if !stale.is_empty() {
                changed |= self.apply_ingress(&g.id, &have, &[], &stale).await?;
            }
        }
        Ok(changed)
    }

    /// Makes the group's ingress exactly `want`; true when a rule was added or removed.
    async fn set_ingress(&self, group: &str, want: &[Ingress]) -> Result<bool> {
        self.change_ingress(group, want, true).await
    }

    /// Adds the rules of `want` the group lacks and, with `revoke`, removes the others; true
    /// when a rule was added or removed.
    async fn change_ingress(&self, group: &str, want: &[Ingress], revoke: bool) -> Result<bool> {
        let have = self.ingress_of(group).await?;
        let wanted = rules_of(want);
        let stale: Vec<&Rule> = have
            .iter()
            .filter(|(p, c)| !wanted.iter().any(|(wp, wc, _)| wp == p && wc == c))
            .filter(|_| revoke)
            .collect();
        self.apply_ingress(group, &have, &wanted, &stale).await
    }

    /// Adds what of `wanted` the group lacks (`have`), then removes `stale` (a failure leaves
    /// no one without a way in); true when a rule was added or removed.
    async fn apply_ingress(
        &self,
        group: &str,
        have: &[Rule],
        wanted: &[NewRule<'_>],
        stale: &[&Rule],
    ) -> Result<bool> {
        let missing: Vec<&NewRule<'_>> = wanted
            .iter()
            .filter(|(p, c, _)| !have.iter().any(|(hp, hc)| hp == p && hc == c))
            .collect();
        if !missing.is_empty() {
            let perms = missing
                .iter()
                .map(|(p, c, d)| permission(*p, c, Some(d)))
                .collect();
            self.authorize(group, perms).await?;
        }
        if !stale.is_empty() {
            let perms = stale.iter().map(|(p, c)| permission(*p, c, None)).collect();
            self.ec2
                .revoke_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(perms))
                .send()
                .await
                .map_err(|e| self.fail("ec2", "RevokeSecurityGroupIngress", group, &e))?;
        }
        Ok(!stale.is_empty() || !missing.is_empty())
    }

    /// The group's inbound rules, as (port, CIDR).
    async fn ingress_of(&self, group: &str) -> Result<Vec<Rule>> {
        let out = self
            .ec2
            .describe_security_groups()
            .group_ids(group)
            .send()
            .await
            .map_err(|e| self.fail("ec2", "DescribeSecurityGroups", group, &e))?;
        let have: Vec<Rule> = out
            .security_groups()
            .first()
            .map(|g| {
                g.ip_permissions()
                    .iter()
                    .flat_map(|p| {
                        let port = p.from_port().unwrap_or(-1);
                        let v4 = p
                            .ip_ranges()
                            .iter()
                            .filter_map(|r| r.cidr_ip().map(str::to_string));
                        let v6 = p
                            .ipv6_ranges()
                            .iter()
                            .filter_map(|r| r.cidr_ipv6().map(str::to_string));
                        v4.chain(v6).map(move |c| (port, c)).collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(have)
    }

    /// labship's security groups (of one deployment, or all).
    pub async fn security_groups(&self, deployment: Option<&str>) -> Result<Vec<SecurityGroup>> {
        self.security_groups_where(deployment.as_ref().map(std::slice::from_ref))
            .await
    }

    /// The security groups of these deployments (a few calls for a whole class).
    pub async fn security_groups_of(&self, deployments: &[&str]) -> Result<Vec<SecurityGroup>> {
        in_chunks(deployments, |some| self.security_groups_where(Some(some))).await
    }

    /// The groups the seats of these classes share ([`class_group_name`]; one in each VPC
    /// a class was started in).
    pub async fn class_groups(&self, classes: &[&str]) -> Result<Vec<SecurityGroup>> {
        let found = in_chunks(classes, |some| {
            self.groups_tagged(tags::CLASS, Some(some), named(Some(some)))
        })
        .await?;
        Ok(found.into_iter().filter(|g| g.class.is_some()).collect())
    }

    async fn security_groups_where(
        &self,
        deployments: Option<&[&str]>,
    ) -> Result<Vec<SecurityGroup>> {
        self.groups_tagged(tags::DEPLOYMENT, deployments, named(deployments))
            .await
    }

    /// labship's groups, those whose tag `key` is one of `values` when given.
    async fn groups_tagged(
        &self,
        key: &str,
        values: Option<&[&str]>,
        what: String,
    ) -> Result<Vec<SecurityGroup>> {
        let mut req = self.ec2.describe_security_groups().filters(filter(
            &format!("tag:{}", tags::MANAGED_BY),
            &[tags::MANAGED_BY_VALUE],
        ));
        if let Some(v) = values {
            req = req.filters(filter(&format!("tag:{key}"), v));
        }
        let mut groups = Vec::new();
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("ec2", "DescribeSecurityGroups", &what, &e))?;
            groups.extend(page.security_groups().iter().cloned());
        }
        Ok(groups
            .iter()
            .map(|g| {
                let deployment = tag_value(g.tags(), tags::DEPLOYMENT);
                SecurityGroup {
                    id: g.group_id().unwrap_or_default().to_string(),
                    name: g.group_name().unwrap_or_default().to_string(),
                    vpc: g.vpc_id().map(str::to_string),
                    owner: tag_value(g.tags(), tags::OWNER),
                    seat: seat_of(g.tags()),
                    class: deployment
                        .is_none()
                        .then(|| tag_value(g.tags(), tags::CLASS))
                        .flatten(),
                    deployment,
                }
            })
            .collect())
    }

    /// The instances of a class's seats that are not ending (pending, running, stopping or
    /// stopped): while one is in the class's group, the group is in use.
    pub async fn class_seats(&self, class: &str) -> Result<Vec<Instance>> {
        let req = self
            .ec2
            .describe_instances()
            .filters(filter(
                &format!("tag:{}", tags::MANAGED_BY),
                &[tags::MANAGED_BY_VALUE],
            ))
            .filters(filter(&format!("tag:{}", tags::CLASS), &[class]))
            .filters(filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped"],
            ));
        Ok(self
            .described(req, &format!("the seats of class `{class}`"))
            .await?
            .iter()
            .flat_map(to_instances)
            .collect())
    }

    /// The port and access of the seats in a class's group ([`class_group_name`]) that are
    /// not ending, asked once in a command: a seat in the group, or a new one, takes them
    /// unless others are asked for, as the group's rules are for one port and one way in
    /// (the ones most seats have, should they differ; of a tie, the highest port, and SSM,
    /// which opens no port, before HTTPS). None when no seat is in the group.
    pub async fn class_settings(
        &self,
        class: &str,
    ) -> Result<Option<(u16, crate::config::Access)>> {
        self.lookups
            .class_settings
            .get_or_try(class.to_string(), || async {
                let mut seen: BTreeMap<(u16, bool), usize> = BTreeMap::new();
                for seat in self.class_seats(class).await? {
                    // A shared host's seat: its host's first port (each seat takes the next).
                    let slot = seat.shared_host().map_or(0, |h| h.slot);
                    let first = seat
                        .port
                        .and_then(|p| p.checked_sub(u16::try_from(slot).ok()?));
                    if let (true, Some(port)) = (seat.in_class_group(class), first) {
                        let ssm = seat.access == crate::config::Access::Ssm;
                        *seen.entry((port, ssm)).or_default() += 1;
                    }
                }
                Ok(seen
                    .into_iter()
                    .max_by_key(|(_, n)| *n)
                    .map(|((port, ssm), _)| {
                        let access = if ssm {
                            crate::config::Access::Ssm
                        } else {
                            crate::config::Access::Https
                        };
                        (port, access)
                    }))
            })
            .await
    }

    /// Deletes a security group, retrying while a terminated instance's network interface
    /// still holds it (DependencyViolation), within `within`.
    pub async fn delete_security_group(&self, id: &str, within: Duration) -> Result<bool> {
        retry::until(within, Duration::from_secs(5), || async {
            match self.ec2.delete_security_group().group_id(id).send().await {
                Ok(_) => Ok(Step::Done(true)),
                Err(e) if error_code(&e) == "InvalidGroup.NotFound" => Ok(Step::Done(false)),
                // The network interface of a just-terminated instance lets go within a
                // minute or two; nothing else makes this transient.
                Err(e) if error_code(&e) == "DependencyViolation" => {
                    Ok(Step::Again(self.fail("ec2", "DeleteSecurityGroup", id, &e)))
                }
                Err(e) => Err(self.fail("ec2", "DeleteSecurityGroup", id, &e)),
            }
        })
        .await
    }

    // ---- instances -----------------------------------------------------------------------

    /// Launches one instance. A just-created instance profile is refused for a few seconds
    /// ("Invalid IAM Instance Profile"): exactly that error is retried, for up to `profile_wait`.
    pub async fn launch(
        &self,
        spec: &LaunchSpec,
        security_group: &str,
        profile_wait: Duration,
    ) -> Result<Instance> {
        let launched = self
            .launch_many(spec, 1, security_group, profile_wait)
            .await?;
        launched.into_iter().next().ok_or_else(|| Error::Aws {
            action: "ec2:RunInstances".into(),
            resource: spec.deployment.clone(),
            region: self.region.clone(),
            message: "RunInstances returned no instance".into(),
            hint: "check the EC2 console; run `labship down` to remove anything made".into(),
        })
    }

    /// Launches up to `count` instances of one spec with one RunInstances (as many as EC2
    /// has capacity for, at least one), in launch-index order (`spec.deployment` names the
    /// call: a class's name for its seats). Retried as [`Cloud::launch`].
    pub async fn launch_many(
        &self,
        spec: &LaunchSpec,
        count: usize,
        security_group: &str,
        profile_wait: Duration,
    ) -> Result<Vec<Instance>> {
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let instance_tags = borrowed(&spec.instance_tags);
        let volume_tags = borrowed(&spec.volume_tags);
        let user_data = base64::engine::general_purpose::STANDARD.encode(&spec.user_data);
        // One token per RunInstances (a deployment's, or a class's seats launched together):
        // the SDK's own retries of this call cannot launch them twice.
        let client_token = client_token(&spec.deployment, rand_bytes());
        retry::until(profile_wait, Duration::from_secs(3), || async {
            let req = self
                .ec2
                .run_instances()
                .image_id(&spec.ami)
                .instance_type(InstanceType::from(spec.instance_type.as_str()))
                .min_count(1)
                .max_count(count)
                .client_token(&client_token)
                .user_data(&user_data)
                // A `shutdown` on the host (the idle watchdog, the TTL) stops the instance:
                // its disk, token and notebooks stay for the next `up`. A job host's ends it.
                .instance_initiated_shutdown_behavior(if spec.terminate_on_shutdown {
                    ShutdownBehavior::Terminate
                } else {
                    ShutdownBehavior::Stop
                })
                .iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .name(&spec.instance_profile)
                        .build(),
                )
                .security_group_ids(security_group)
                .set_subnet_id(spec.subnet.clone())
                .set_placement(
                    spec.availability_zone
                        .as_ref()
                        .map(|az| Placement::builder().availability_zone(az).build()),
                )
                // Spot: a persistent request whose interruption stops the instance, so its
                // disk, data volume and token stay and it can run again.
                .set_instance_market_options(spec.spot.then(|| {
                    InstanceMarketOptionsRequest::builder()
                        .market_type(MarketType::Spot)
                        .spot_options(
                            SpotMarketOptions::builder()
                                .spot_instance_type(SpotInstanceType::Persistent)
                                .instance_interruption_behavior(InstanceInterruptionBehavior::Stop)
                                .build(),
                        )
                        .build()
                }))
                .set_key_name(spec.ssh_key.clone())
                // IMDSv2 only, hop limit 1: containers on the host cannot reach the
                // instance role's credentials.
                .metadata_options(
                    InstanceMetadataOptionsRequest::builder()
                        .http_tokens(HttpTokensState::Required)
                        .http_put_response_hop_limit(spec.metadata_hop_limit)
                        .http_endpoint(InstanceMetadataEndpointState::Enabled)
                        .build(),
                )
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(&spec.root_device)
                        .ebs(
                            EbsBlockDevice::builder()
                                .volume_size(spec.root_gib)
                                .volume_type(VolumeType::Gp3)
                                .encrypted(true)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(tag_spec(ResourceType::Instance, &instance_tags))
                .tag_specifications(tag_spec(ResourceType::Volume, &volume_tags))
                .tag_specifications(tag_spec(ResourceType::NetworkInterface, &volume_tags));
            // The spot request a spot launch makes is tagged too (the operator policy allows
            // only tagged creations).
            let req = if spec.spot {
                req.tag_specifications(tag_spec(ResourceType::SpotInstancesRequest, &volume_tags))
            } else {
                req
            };
            match req.send().await {
                Ok(out) => {
                    let mut launched: Vec<_> = out.instances().iter().collect();
                    launched.sort_by_key(|i| i.ami_launch_index());
                    Ok(Step::Done(
                        launched
                            .into_iter()
                            .map(|i| to_instance(i, &spec.deployment))
                            .collect(),
                    ))
                }
                // Both are propagation delays of what this `up` just created.
                Err(e) if profile_not_ready(&e) || error_code(&e) == "InvalidGroup.NotFound" => {
                    tracing::info!("the instance profile is not usable yet; retrying RunInstances");
                    Ok(Step::Again(self.fail(
                        "ec2",
                        "RunInstances",
                        &spec.deployment,
                        &e,
                    )))
                }
                Err(e) => Err(self.fail("ec2", "RunInstances", &spec.deployment, &e)),
            }
        })
        .await
    }

    /// labship's instances that still exist (of one deployment, or all).
    pub async fn instances(&self, deployment: Option<&str>) -> Result<Vec<Instance>> {
        self.instances_where(deployment.as_ref().map(std::slice::from_ref))
            .await
    }

    /// The instances of these deployments that still exist (a few calls for a whole class),
    /// in the order of [`Cloud::instances`].
    pub async fn instances_of(&self, deployments: &[&str]) -> Result<Vec<Instance>> {
        self.instances_where(Some(deployments)).await
    }

    /// labship's live instances, those of `deployments` when given: by their
    /// `labship:deployment` tag, and, for a name that can be a seat's (`CLASS-SEAT`), among
    /// the instances of such a class launched together that have no such tag yet (a moment
    /// after their launch; see [`deployment_of`]), which must not be missed meanwhile.
    async fn instances_where(&self, deployments: Option<&[&str]>) -> Result<Vec<Instance>> {
        let live = || {
            self.ec2
                .describe_instances()
                .filters(filter(
                    &format!("tag:{}", tags::MANAGED_BY),
                    &[tags::MANAGED_BY_VALUE],
                ))
                .filters(filter("instance-state-name", &LIVE_STATES))
        };
        let described = match deployments {
            None => self.described(live(), &named(None)).await?,
            Some(names) => {
                let mut found = in_chunks(names, |some| async move {
                    let req = live().filters(filter(&format!("tag:{}", tags::DEPLOYMENT), some));
                    self.described(req, &named(Some(some))).await
                })
                .await?;
                let classes = seat_classes(names);
                let classes: Vec<&str> = classes.iter().map(String::as_str).collect();
                let untagged = in_chunks(&classes, |some| async move {
                    let req = live()
                        .filters(filter("tag-key", &[tags::LAUNCH_SEATS, tags::HOST_SEATS]))
                        .filters(filter(&format!("tag:{}", tags::CLASS), some));
                    self.described(req, &named(Some(names))).await
                })
                .await?;
                found.extend(
                    untagged
                        .into_iter()
                        .filter(|i| tag_value(i.tags(), tags::DEPLOYMENT).is_none()),
                );
                found
            }
        };
        let mut found = Vec::new();
        // A job host is not a deployment's.
        for instance in described
            .iter()
            .filter(|i| tag_value(i.tags(), tags::JOB).is_none())
            .flat_map(to_instances)
        {
            if deployments.is_none_or(|d| d.contains(&instance.deployment.as_str())) {
                found.push(instance);
            }
        }
        found.sort_by(|a, b| {
            a.deployment
                .cmp(&b.deployment)
                .then(a.launched.cmp(&b.launched))
        });
        Ok(found)
    }

    /// Every instance a DescribeInstances request finds, page after page (`resource`: what
    /// an error names).
    async fn described(
        &self,
        req: aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder,
        resource: &str,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>> {
        let mut found = Vec::new();
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("ec2", "DescribeInstances", resource, &e))?;
            found.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .cloned(),
            );
        }
        Ok(found)
    }

    /// Job hosts (`labship run --ec2`) that still exist, of one run or all, as (instance,
    /// run id, project, results address), oldest first.
    pub async fn job_hosts(&self, run: Option<&str>) -> Result<Vec<JobHost>> {
        let mut req = self.ec2.describe_instances().filters(filter(
            &format!("tag:{}", tags::MANAGED_BY),
            &[tags::MANAGED_BY_VALUE],
        ));
        req = match run {
            Some(run) => req.filters(filter(&format!("tag:{}", tags::JOB), &[run])),
            None => req
                .filters(filter("tag-key", &[tags::JOB]))
                .filters(filter("instance-state-name", &LIVE_STATES)),
        };
        let mut found = Vec::new();
        for i in self.described(req, run.unwrap_or("labship jobs")).await? {
            let of = tag_value(i.tags(), tags::JOB_OF).unwrap_or_default();
            found.push(JobHost {
                run_id: tag_value(i.tags(), tags::JOB).unwrap_or_default(),
                output: tag_value(i.tags(), tags::JOB_OUTPUT),
                instance: to_instance(&i, &of),
            });
        }
        found.sort_by(|a, b| a.instance.launched.cmp(&b.instance.launched));
        Ok(found)
    }

    /// The job hosts' security group in `vpc` (one per VPC, shared by every run, like the
    /// instance role): no inbound rule at all (a host reaches ECR and S3; nothing reaches
    /// it), created (tagged) when missing. Returns its id.
    pub async fn ensure_job_security_group(&self, vpc: &str) -> Result<String> {
        if let Some(id) = self.find_security_group(JOB_GROUP, vpc).await? {
            return Ok(id);
        }
        let mut pairs = vec![
            (tags::MANAGED_BY, tags::MANAGED_BY_VALUE.to_string()),
            (tags::JOB_GROUP, "yes".to_string()),
            ("Name", JOB_GROUP.to_string()),
        ];
        pairs.extend(tags::owner().map(|arn| (tags::OWNER, arn)));
        match self
            .ec2
            .create_security_group()
            .group_name(JOB_GROUP)
            .description("labship job hosts: no inbound traffic")
            .vpc_id(vpc)
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, &pairs))
            .send()
            .await
        {
            Ok(out) => out
                .group_id()
                .map(str::to_string)
                .ok_or_else(|| Error::Aws {
                    action: "ec2:CreateSecurityGroup".into(),
                    resource: JOB_GROUP.into(),
                    region: self.region.clone(),
                    message: "CreateSecurityGroup answered without a group id".into(),
                    hint: "run the command again: the group is found by its name then".into(),
                }),
            // Another labship made it meanwhile.
            Err(e) if error_code(&e) == "InvalidGroup.Duplicate" => self
                .find_security_group(JOB_GROUP, vpc)
                .await?
                .ok_or_else(|| self.fail("ec2", "CreateSecurityGroup", JOB_GROUP, &e)),
            Err(e) => Err(self.fail("ec2", "CreateSecurityGroup", JOB_GROUP, &e)),
        }
    }

    /// The job hosts' security groups of this region (one per VPC).
    pub async fn job_security_groups(&self) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(filter(
                &format!("tag:{}", tags::MANAGED_BY),
                &[tags::MANAGED_BY_VALUE],
            ))
            .filters(filter("tag-key", &[tags::JOB_GROUP]))
            .send()
            .await
            .map_err(|e| self.fail("ec2", "DescribeSecurityGroups", JOB_GROUP, &e))?;
        Ok(out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect())
    }

    /// One instance by id (None when it no longer exists).
    /// Reads made at about the same time by other tasks of this command (a class's seats)
    /// share one DescribeInstances (see [`super::rounds`]).
    pub async fn instance(&self, id: &str) -> Result<Option<Instance>> {
        self.lookups
            .instance_reads
            .read(
                id,
                |ids| self.instances_by_id(ids),
                || self.instance_alone(id),
            )
            .await
    }

    /// The instances of `ids` that EC2 knows, by id, in one call (any unknown id fails it).
    async fn instances_by_id(&self, ids: Vec<String>) -> Result<HashMap<String, Instance>> {
        let out = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
            .map_err(|e| self.fail("ec2", "DescribeInstances", &ids.join(","), &e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                let found = to_instance(i, "");
                (found.id.clone(), found)
            })
            .collect())
    }

    async fn instance_alone(&self, id: &str) -> Result<Option<Instance>> {
        let out = match self.ec2.describe_instances().instance_ids(id).send().await {
            Ok(out) => out,
            Err(e) if error_code(&e) == "InvalidInstanceID.NotFound" => return Ok(None),
            Err(e) => return Err(self.fail("ec2", "DescribeInstances", id, &e)),
        };
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .map(|i| to_instance(i, "")))
    }

    /// The serial console (decoded lossily; None while EC2 has nothing yet).
    pub async fn console(&self, id: &str, latest: bool) -> Result<Option<String>> {
        let mut req = self.ec2.get_console_output().instance_id(id);
        if latest {
            req = req.latest(true);
        }
        let out = match req.send().await {
            Ok(out) => out,
            // Latest is only for Nitro types; ask again without it.
            // (AWS documents no error code for it: any refusal of the request is retried once.)
            Err(e) if latest && matches!(e, aws_sdk_ec2::error::SdkError::ServiceError(_)) => {
                return Box::pin(self.console(id, false)).await
            }
            Err(e) => return Err(self.fail("ec2", "GetConsoleOutput", id, &e)),
        };
        Ok(out
            .output()
            .filter(|o| !o.is_empty())
            // A non-base64 answer is passed on as it is (lossy decoding is the rule here).
            .map(|o| decode_console_output(o).unwrap_or_else(|_| o.to_string())))
    }

    /// Records how the instance is reached (`up --access` changed it).
    pub async fn set_access_tag(&self, id: &str, access: crate::config::Access) -> Result<()> {
        self.retag(id, &[(tags::ACCESS, access.as_str().to_string())])
            .await
    }

    /// Records what the instance now serves, after its container was replaced, and the idle
    /// stop and TTL its watchdog now has.
    pub async fn set_serving_tags(
        &self,
        id: &str,
        image: &str,
        port: u16,
        life: (Option<Duration>, Option<Duration>),
        inputs: &str,
    ) -> Result<()> {
        self.retag(
            id,
            &[
                (tags::IMAGE, image.to_string()),
                (tags::PORT, port.to_string()),
                (tags::INPUTS, inputs.to_string()),
                (tags::IDLE_STOP, crate::config::lifetime_text(life.0)),
                (tags::TTL, crate::config::lifetime_text(life.1)),
            ],
        )
        .await
    }

    /// After one seat of a shared host got a new container: the seat's own image tag
    /// ([`tags::seat_image`]) and the host's watchdog settings, which its replace installed
    /// (the host's port and inputs stay: a seat's do not change alone).
    pub async fn set_seat_serving_tags(
        &self,
        id: &str,
        seat: &str,
        image: &str,
        life: (Option<Duration>, Option<Duration>),
    ) -> Result<()> {
        let key = tags::seat_image(seat);
        self.retag(
            id,
            &[
                (key.as_str(), image.to_string()),
                (tags::IDLE_STOP, crate::config::lifetime_text(life.0)),
                (tags::TTL, crate::config::lifetime_text(life.1)),
            ],
        )
        .await
    }

    /// The seats taken off a shared host alone (`labship:host-gone`), space-separated.
    pub async fn set_host_gone(&self, id: &str, gone: &[String]) -> Result<()> {
        self.retag(id, &[(tags::HOST_GONE, gone.join(" "))]).await
    }

    /// Gives an instance launched with others ([`Cloud::launch_many`]) the tags of its own
    /// (its deployment and seat: they were the class's at creation). An instance just
    /// launched may be unknown to CreateTags for a few seconds (eventual consistency): that is
    /// retried for up to a minute.
    pub async fn tag_launched(&self, id: &str, pairs: &[(String, String)]) -> Result<()> {
        let pairs = borrowed(pairs);
        retry::until(Duration::from_secs(60), Duration::from_secs(2), || async {
            match self.create_tags(id, &pairs).send().await {
                Ok(_) => Ok(Step::Done(())),
                Err(e) if error_code(&e) == "InvalidInstanceID.NotFound" => {
                    Ok(Step::Again(self.fail("ec2", "CreateTags", id, &e)))
                }
                Err(e) => Err(self.fail("ec2", "CreateTags", id, &e)),
            }
        })
        .await
    }

    /// The CreateTags call that sets (or replaces) `pairs` on the resource `id`.
    fn create_tags(
        &self,
        id: &str,
        pairs: &[(&str, String)],
    ) -> aws_sdk_ec2::operation::create_tags::builders::CreateTagsFluentBuilder {
        self.ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(ec2_tags(pairs)))
    }

    /// Sets (or replaces) tags of an existing instance.
    async fn retag(&self, id: &str, pairs: &[(&str, String)]) -> Result<()> {
        self.create_tags(id, pairs)
            .send()
            .await
            .map_err(|e| self.fail("ec2", "CreateTags", id, &e))?;
        Ok(())
    }

    /// The regions this account has enabled (DescribeRegions).
    pub async fn regions(&self) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_regions()
            .send()
            .await
            .map_err(|e| self.fail("ec2", "DescribeRegions", "all regions", &e))?;
        Ok(out
            .regions()
            .iter()
            .filter_map(|r| r.region_name().map(str::to_string))
            .collect())
    }

    /// labship's instances in every region this account has enabled (the instance role is
    /// global, so "is it still used?" is asked everywhere).
    pub async fn instances_everywhere(&self) -> Result<Vec<(String, Instance)>> {
        let mut found = Vec::new();
        for name in self.regions().await? {
            let other = Cloud::new(&self.aws().in_region(&name));
            for i in other.instances(None).await? {
                found.push((name.clone(), i));
            }
            // A job host runs with the role too (its `deployment` is the project it runs for).
            for h in other.job_hosts(None).await? {
                found.push((name.clone(), h.instance));
            }
        }
        Ok(found)
    }

    /// Gives a running or stopped instance `profile` instead of the one it has (a
    /// deployment moving from the shared role to its own): the association is replaced, or
    /// made when it has none; nothing when it has `profile` already, unless `anew` (a profile
    /// of that name was made again: the association holds the old one's id, the name the new
    /// one's). A profile made moments ago is not usable yet, and another `up` may have
    /// replaced the association meanwhile: both are tried again within `wait`. The instance's
    /// credentials follow within seconds.
    pub async fn set_instance_profile(
        &self,
        instance: &str,
        profile: &str,
        wait: Duration,
        anew: bool,
    ) -> Result<()> {
        use aws_sdk_ec2::types::IamInstanceProfileAssociationState as State;
        retry::until(wait, Duration::from_secs(3), || async {
            let spec = IamInstanceProfileSpecification::builder()
                .name(profile)
                .build();
            let found = self
                .ec2
                .describe_iam_instance_profile_associations()
                .filters(filter("instance-id", &[instance]))
                .send()
                .await
                .map_err(|e| {
                    self.fail(
                        "ec2",
                        "DescribeIamInstanceProfileAssociations",
                        instance,
                        &e,
                    )
                })?;
            let current = found
                .iam_instance_profile_associations()
                .iter()
                .find(|a| matches!(a.state(), Some(State::Associated | State::Associating)));
            let holds = |a: &aws_sdk_ec2::types::IamInstanceProfileAssociation| {
                a.iam_instance_profile()
                    .and_then(|p| p.arn())
                    .is_some_and(|arn| arn.rsplit('/').next() == Some(profile))
            };
            if !anew && current.is_some_and(holds) {
                return Ok(Step::Done(()));
            }
            let sent = match current.and_then(|a| a.association_id()) {
                Some(association) => self
                    .ec2
                    .replace_iam_instance_profile_association()
                    .association_id(association)
                    .iam_instance_profile(spec)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.association_refused(REPLACE, instance, &e)),
                None => self
                    .ec2
                    .associate_iam_instance_profile()
                    .instance_id(instance)
                    .iam_instance_profile(spec)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.association_refused(ASSOCIATE, instance, &e)),
            };
            match sent {
                Ok(()) => Ok(Step::Done(())),
                Err((op, true, e)) => {
                    tracing::info!("{op} of {instance}: not yet ({e}); trying again");
                    Ok(Step::Again(e))
                }
                Err((_, false, e)) => Err(e),
            }
        })
        .await
    }

    /// A refused `op` ([`ASSOCIATE`] or [`REPLACE`]) of `instance`'s profile: the call, whether
    /// to try again (EC2 does not accept a profile made moments ago yet, or another `up` is
    /// moving the association), and the error.
    fn association_refused<E>(
        &self,
        op: &'static str,
        instance: &str,
        err: &aws_sdk_ec2::error::SdkError<E>,
    ) -> (&'static str, bool, Error)
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = error_code(err);
        let again = profile_not_ready(err)
            || code == "IncorrectState"
            || (op == REPLACE && code == "InvalidAssociationID.NotFound");
        (op, again, self.fail("ec2", op, instance, err))
    }

    pub async fn terminate(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(once_each(ids)))
            .send()
            .await
            .map_err(|e| self.fail("ec2", "TerminateInstances", &ids.join(","), &e))?;
        Ok(())
    }

    /// Cancels spot requests (CancelSpotInstanceRequests): a persistent request left open
    /// would launch a new instance once its instance is terminated.
    pub async fn cancel_spot_requests(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.ec2
            .cancel_spot_instance_requests()
            .set_spot_instance_request_ids(Some(once_each(ids)))
            .send()
            .await
            .map_err(|e| self.fail("ec2", "CancelSpotInstanceRequests", &ids.join(","), &e))?;
        Ok(())
    }

    /// Stops instances (StopInstances; stopping or stopped ones are left as they are).
    pub async fn stop(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.ec2
            .stop_instances()
            .set_instance_ids(Some(once_each(ids)))
            .send()
            .await
            .map_err(|e| self.fail("ec2", "StopInstances", &ids.join(","), &e))?;
        Ok(())
    }

    /// Starts a stopped instance (StartInstances; a running one is left as it is). No
    /// capacity for it now (a spot instance after an interruption, or a type the zone is out
    /// of) is [`Error::NoCapacity`].
    pub async fn start(&self, id: &str) -> Result<()> {
        match self.ec2.start_instances().instance_ids(id).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    error_code(&e),
                    "InsufficientInstanceCapacity"
                        | "IncorrectSpotRequestState"
                        | "SpotMaxPriceTooLow"
                ) =>
            {
                Err(Error::NoCapacity {
                    instance: id.to_string(),
                    region: self.region.clone(),
                    message: crate::error::aws_message(&e),
                })
            }
            Err(e) => Err(self.fail("ec2", "StartInstances", id, &e)),
        }
    }

    /// Waits until every one of `ids` is stopped, within `within`; returns the ids not
    /// stopped then.
    pub async fn wait_stopped(&self, ids: &[String], within: Duration) -> Result<Vec<String>> {
        self.wait_settled(ids, within, InstanceStateName::Stopped)
            .await
    }

    /// Waits until none of `ids` runs any more (terminated, or gone), within `within`;
    /// returns the ids still not terminated then.
    pub async fn wait_terminated(&self, ids: &[String], within: Duration) -> Result<Vec<String>> {
        self.wait_settled(ids, within, InstanceStateName::Terminated)
            .await
    }

    /// Polls DescribeInstances until every one of `ids` is in `state` (or gone), after 1 s,
    /// then half as long again each time, at most 5 s apart. Not the SDK's waiters: they ask
    /// 15 s apart at the soonest (up to 120 s later on), so a host gone in two seconds would
    /// hold `down` for fifteen. A call that fails transiently (throttled past the SDK's
    /// retries) is asked again within the same deadline. Returns the ids not in `state` when
    /// the time is up, or at once when one of them cannot get there any more (waiting for
    /// stopped, it is being terminated).
    async fn wait_settled(
        &self,
        ids: &[String],
        within: Duration,
        state: InstanceStateName,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = &once_each(ids);
        let deadline = std::time::Instant::now() + within;
        let mut pause = Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let unsettled = retry::read(left.max(Duration::from_secs(1)), || {
                self.not_in(ids, &state)
            })
            .await?;
            let hopeless = unsettled.iter().any(|(_, now)| never_gets(now, &state));
            if unsettled.is_empty() || hopeless || std::time::Instant::now() + pause >= deadline {
                return Ok(unsettled.into_iter().map(|(id, _)| id).collect());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
    }

    /// Those of `ids` that DescribeInstances shows in another state than `state`, with the
    /// state they are in (one unknown to EC2 is gone: not among them).
    async fn not_in(
        &self,
        ids: &[String],
        state: &InstanceStateName,
    ) -> Result<Vec<(String, String)>> {
        let out = match self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
        {
            Ok(out) => out,
            // One is unknown (EC2 forgets a terminated instance after a while): one by one,
            // each alone (in rounds, each would wait for the next).
            Err(e) if error_code(&e) == "InvalidInstanceID.NotFound" => {
                let mut left = Vec::new();
                for id in ids {
                    if let Some(i) = self.instance_alone(id).await? {
                        if i.state != state.as_str() {
                            left.push((id.clone(), i.state));
                        }
                    }
                }
                return Ok(left);
            }
            Err(e) => return Err(self.fail("ec2", "DescribeInstances", &ids.join(","), &e)),
        };
        let seen: std::collections::HashMap<&str, &str> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some((
                    i.instance_id()?,
                    i.state().and_then(|s| s.name()).map(|n| n.as_str())?,
                ))
            })
            .collect();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let now = seen.get(id.as_str())?;
                (*now != state.as_str()).then(|| (id.clone(), now.to_string()))
            })
            .collect())
    }
}

fn no_key_pair(name: &str, region: &str, message: &str) -> Error {
    Error::InvalidSetting {
        what: "ec2.ssh_key",
        value: name.to_string(),
        reason: format!("there is no key pair of that name in {region} ({message})"),
        hint: format!("list them with `aws ec2 describe-key-pairs --region {region}`, import yours with `aws ec2 import-key-pair`, or remove ec2.ssh_key"),
    }
}

/// EC2's answer while a new instance profile propagates: InvalidParameterValue, "Invalid IAM
/// Instance Profile name".
/// The two calls that give an instance its profile ([`Cloud::set_instance_profile`]).
const ASSOCIATE: &str = "AssociateIamInstanceProfile";
const REPLACE: &str = "ReplaceIamInstanceProfileAssociation";

fn profile_not_ready<E>(err: &aws_sdk_ec2::error::SdkError<E>) -> bool
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    error_code(err) == "InvalidParameterValue"
        && crate::error::aws_message(err)
            .to_ascii_lowercase()
            .contains("instance profile")
}

fn permission(port: i32, cidr: &str, description: Option<&str>) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port);
    if cidr.contains(':') {
        let mut r = Ipv6Range::builder().cidr_ipv6(cidr);
        if let Some(d) = description {
            r = r.description(d);
        }
        b.ipv6_ranges(r.build()).build()
    } else {
        let mut r = IpRange::builder().cidr_ip(cidr);
        if let Some(d) = description {
            r = r.description(d);
        }
        b.ip_ranges(r.build()).build()
    }
}

/// The class and seat a resource's tags name, if any.
pub(super) fn seat_of(tags: &[aws_sdk_ec2::types::Tag]) -> Option<crate::hosts::SeatOf> {
    Some(crate::hosts::SeatOf {
        class: tag_value(tags, tags::CLASS)?,
        seat: tag_value(tags, tags::SEAT)?,
        student: None,
        email: None,
        host: None,
    })
}

pub(super) fn tag_value(tags: &[aws_sdk_ec2::types::Tag], key: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// The seat an instance launched with others is, by its launch index among the seats its
/// `labship:launch-seats` tag lists (until its own tags are set; see [`Cloud::tag_launched`]).
fn launched_seat(i: &aws_sdk_ec2::types::Instance) -> Option<crate::hosts::SeatOf> {
    if is_shared_host(i) {
        return None;
    }
    Some(crate::hosts::SeatOf {
        class: tag_value(i.tags(), tags::CLASS)?,
        seat: launch_entry(i)?,
        student: None,
        email: None,
        host: None,
    })
}

/// An instance's entry in its `labship:launch-seats` tag, by its launch index.
fn launch_entry(i: &aws_sdk_ec2::types::Instance) -> Option<String> {
    let index = usize::try_from(i.ami_launch_index()?).ok()?;
    tag_value(i.tags(), tags::LAUNCH_SEATS)?
        .split_whitespace()
        .nth(index)
        .map(str::to_string)
}

/// A host several seats of a class share (it has the `labship:host-seats` tag, empty until
/// its seats are set after a launch with other hosts).
fn is_shared_host(i: &aws_sdk_ec2::types::Instance) -> bool {
    i.tags().iter().any(|t| t.key() == Some(tags::HOST_SEATS))
}

/// A shared host's class and seats in slot order: its `labship:host-seats` tag, or, until
/// that is set, its entry of `labship:launch-seats` (the seats joined by
/// [`tags::HOST_SEATS_JOIN`]); and whether its own tag is set.
fn host_seats(i: &aws_sdk_ec2::types::Instance) -> Option<(String, Vec<String>, bool)> {
    if !is_shared_host(i) {
        return None;
    }
    let class = tag_value(i.tags(), tags::CLASS)?;
    let own = tag_value(i.tags(), tags::HOST_SEATS).filter(|s| !s.trim().is_empty());
    let tagged = own.is_some();
    let seats: Vec<String> = match own {
        Some(seats) => seats.split_whitespace().map(str::to_string).collect(),
        None => launch_entry(i)?
            .split(tags::HOST_SEATS_JOIN)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    };
    (!seats.is_empty()).then_some((class, seats, tagged))
}

/// The instance as each seat it serves sees it: one per seat on a shared host (its own
/// deployment, seat and port: the host's first port plus its slot), else the one
/// [`to_instance`] makes.
fn to_instances(i: &aws_sdk_ec2::types::Instance) -> Vec<Instance> {
    let host = to_instance(i, "");
    let Some((class, seats, _)) = host_seats(i) else {
        return vec![host];
    };
    let gone = host_gone(i);
    // Every seat taken off it alone (by `down --seat`s that ran side by side): the host as
    // it is, under its first seat's name, for `down` to end.
    if seats.iter().all(|s| gone.contains(s)) {
        return vec![host];
    }
    seats
        .iter()
        .enumerate()
        .filter(|(_, seat)| !gone.contains(seat))
        .map(|(slot, seat)| Instance {
            deployment: crate::class::seat_deployment(&class, seat),
            image: tag_value(i.tags(), &tags::seat_image(seat)).or_else(|| host.image.clone()),
            port: host
                .port
                .and_then(|p| u16::try_from(slot).ok().and_then(|s| p.checked_add(s))),
            seat: Some(shared_seat(&class, &seats, slot, &gone)),
            ..host.clone()
        })
        .collect()
}

/// The seats taken off a shared host alone (`labship:host-gone`).
fn host_gone(i: &aws_sdk_ec2::types::Instance) -> Vec<String> {
    tag_value(i.tags(), tags::HOST_GONE)
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Seat `slot` of a shared host of `class`'s `seats`, of which `gone` were taken off it.
pub fn shared_seat(
    class: &str,
    seats: &[String],
    slot: usize,
    gone: &[String],
) -> crate::hosts::SeatOf {
    crate::hosts::SeatOf {
        class: class.to_string(),
        seat: seats.get(slot).cloned().unwrap_or_default(),
        student: None,
        email: None,
        host: Some(crate::hosts::SharedHost {
            seats: seats.to_vec(),
            slot,
            gone: gone.to_vec(),
        }),
    }
}

/// The classes whose seats `deployments` can be (`a-b-1` is seat `b-1` of `a` or seat `1` of
/// `a-b`), once each.
fn seat_classes(deployments: &[&str]) -> Vec<String> {
    let mut classes: Vec<String> = deployments
        .iter()
        .flat_map(|d| d.match_indices('-').map(|(at, _)| d[..at].to_string()))
        .filter(|c| !c.is_empty())
        .collect();
    classes.sort();
    classes.dedup();
    classes
}

/// The deployment an instance is: its tag's, or the seat its launch index makes it, or
/// `otherwise`.
fn deployment_of(i: &aws_sdk_ec2::types::Instance, otherwise: &str) -> String {
    if let Some((class, seats, _)) = host_seats(i) {
        return crate::class::seat_deployment(&class, &seats[0]);
    }
    tag_value(i.tags(), tags::DEPLOYMENT)
        .or_else(|| launched_seat(i).map(|s| crate::class::seat_deployment(&s.class, &s.seat)))
        .unwrap_or_else(|| otherwise.to_string())
}

/// The instance as labship sees it: of the deployment [`deployment_of`] says (`otherwise`
/// when it names none).
fn to_instance(i: &aws_sdk_ec2::types::Instance, otherwise: &str) -> Instance {
    let launched = i.launch_time();
    let by_index = launched_seat(i);
    let shared = host_seats(i);
    Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        deployment: deployment_of(i, otherwise),
        untagged_seat: match &shared {
            Some((_, _, tagged)) => !tagged,
            None => tag_value(i.tags(), tags::DEPLOYMENT).is_none() && by_index.is_some(),
        },
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| InstanceStateName::Pending.as_str().to_string()),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        public_ip: i.public_ip_address().map(str::to_string),
        launched: launched.and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
        launched_secs: launched.map(|t| t.secs()),
        image: tag_value(i.tags(), tags::IMAGE),
        port: tag_value(i.tags(), tags::PORT).and_then(|p| p.parse().ok()),
        https: tag_value(i.tags(), tags::SCHEME).as_deref() == Some("https"),
        access: tag_value(i.tags(), tags::ACCESS)
            .and_then(|a| crate::config::Access::parse(&a).ok())
            .unwrap_or_default(),
        owner: tag_value(i.tags(), tags::OWNER),
        idle_stop: tag_value(i.tags(), tags::IDLE_STOP)
            .and_then(|v| crate::config::parse_lifetime("idle stop", &v).ok()),
        ttl: tag_value(i.tags(), tags::TTL)
            .and_then(|v| crate::config::parse_lifetime("ttl", &v).ok()),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        data_volume: tag_value(i.tags(), tags::DATA_VOLUME).as_deref() == Some("yes"),
        spot: i.instance_lifecycle().map(|l| l.as_str()) == Some("spot"),
        spot_request: i.spot_instance_request_id().map(str::to_string),
        seat: match &shared {
            Some((class, seats, _)) => Some(shared_seat(class, seats, 0, &host_gone(i))),
            None => seat_of(i.tags()).or(by_index),
        },
        inputs: tag_value(i.tags(), tags::INPUTS),
        profile: i
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .and_then(|arn| arn.rsplit('/').next())
            .map(String::from),
        state_reason: i
            .state_reason()
            .and_then(|r| r.code())
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        security_groups: i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        security_group_names: i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name().map(str::to_string))
            .collect(),
    }
}

/// `ids` without repeats, in their order: the seats of a shared host name its instance each.
fn once_each(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
}

fn borrowed(tags: &[(String, String)]) -> Vec<(&str, String)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
}

/// Whether an instance `now` in this state can no longer get to `state` (one being terminated
/// never stops).
fn never_gets(now: &str, state: &InstanceStateName) -> bool {
    *state == InstanceStateName::Stopped && matches!(now, "shutting-down" | "terminated")
}

/// EC2's most characters in a ClientToken.
const CLIENT_TOKEN_MAX: usize = 64;

/// A launch's idempotency token: `labship-<deployment>-<16 hex of random>`, the deployment
/// cut short where the whole would pass [`CLIENT_TOKEN_MAX`] (a job host's deployment is its
/// project's name and run id, up to 57 characters); the random part alone makes it unique.
fn client_token(deployment: &str, random: [u8; 8]) -> String {
    let random = hex::encode(random);
    let room = CLIENT_TOKEN_MAX - "labship-".len() - 1 - random.len();
    let deployment: String = deployment.chars().take(room).collect();
    format!("labship-{deployment}-{random}")
}

/// 8 random bytes from the OS (for idempotency tokens; not a secret). Should the OS refuse,
/// the clock and process id still make the token unique enough for one `up`.
fn rand_bytes() -> [u8; 8] {
    let mut buf = [0u8; 8];
    if getrandom::getrandom(&mut buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    buf
}

/// Lossy decode of the base64 payload of EC2 GetConsoleOutput.
///
/// AWS returns the console bytes base64-encoded (the Rust SDK hands the string back
/// as is). ASCII whitespace (line wrapping) is ignored, padding is optional, and bytes
/// that are not valid UTF-8 (consoles carry mojibake) become U+FFFD.
pub fn decode_console_output(b64: &str) -> Result<String, base64::DecodeError> {
    let compact: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(compact)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance as DescribeInstances shows it: `i-INDEX`, its launch index, its tags.
    fn described(index: i32, pairs: &[(&str, &str)]) -> aws_sdk_ec2::types::Instance {
        aws_sdk_ec2::types::Instance::builder()
            .instance_id(format!("i-{index}"))
            .ami_launch_index(index)
            .set_tags(Some(
                pairs
                    .iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .build()
    }

    #[test]
    fn a_shared_host_is_one_instance_per_seat_on_the_hosts_port_plus_its_slot() {
        let host = described;
        let tagged = host(
            0,
            &[
                (tags::CLASS, "ds"),
                (tags::HOST_SEATS, "a b"),
                (tags::PORT, "9000"),
            ],
        );
        let seats = to_instances(&tagged);
        let seen: Vec<(&str, Option<u16>, usize, bool)> = seats
            .iter()
            .map(|i| {
                (
                    i.deployment.as_str(),
                    i.port,
                    i.shared_host().map_or(99, |h| h.slot),
                    i.untagged_seat,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("ds-a", Some(9000), 0, false),
                ("ds-b", Some(9001), 1, false)
            ]
        );
        assert!(seats.iter().all(|i| i.id == "i-0"));
        // Read by id, it is its first seat's; a seat's view keeps its own.
        let read = to_instance(&tagged, "");
        assert_eq!(read.deployment, "ds-a");
        let b = read.seated_as(&seats[1]);
        assert_eq!((b.deployment.as_str(), b.port), ("ds-b", Some(9001)));
        // Launched with other hosts: its seats by its entry until its own tag is set, and
        // no seat of its launch index alone.
        let launched = [
            (tags::CLASS, "ds"),
            (tags::LAUNCH_SEATS, "a+b c"),
            (tags::HOST_SEATS, ""),
            (tags::PORT, "9000"),
        ];
        let second = host(1, &launched);
        let only = to_instances(&second);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].deployment, "ds-c");
        assert!(only[0].untagged_seat, "its own tag is still to be set");
        assert!(launched_seat(&second).is_none());
        let first = to_instances(&host(0, &launched));
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].seat.as_ref().map(|s| s.seat.as_str()), Some("b"));
        // Ids named by several seats are sent once.
        assert_eq!(
            once_each(&["i-1".into(), "i-2".into(), "i-1".into()]),
            ["i-1", "i-2"]
        );
        // A seat taken off it alone is no longer read as one of its seats; the others keep
        // their slots and ports, and know it left. A seat's own image tag is its image.
        let left = host(
            0,
            &[
                (tags::CLASS, "ds"),
                (tags::HOST_SEATS, "a b c"),
                (tags::HOST_GONE, "b"),
                (tags::PORT, "9000"),
                (tags::IMAGE, "r/x:1"),
                ("labship:image:c", "r/x:2"),
            ],
        );
        let seats = to_instances(&left);
        let seen: Vec<(&str, Option<u16>, Option<&str>)> = seats
            .iter()
            .map(|i| (i.deployment.as_str(), i.port, i.image.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("ds-a", Some(9000), Some("r/x:1")),
                ("ds-c", Some(9002), Some("r/x:2"))
            ]
        );
        let c = seats[1].shared_host().expect("shared");
        assert_eq!((c.slot, c.gone.as_slice()), (2, &["b".to_string()][..]));
        assert_eq!(c.beside("c"), ["a"]);
    }

    #[test]
    fn an_instance_launched_with_other_seats_is_the_seat_of_its_launch_index() {
        let instance = described;
        let launched = [(tags::CLASS, "ds"), (tags::LAUNCH_SEATS, "alice bob carol")];
        let bob = instance(1, &launched);
        assert_eq!(deployment_of(&bob, ""), "ds-bob");
        let seat = to_instance(&bob, "").seat.expect("a seat");
        assert_eq!((seat.class.as_str(), seat.seat.as_str()), ("ds", "bob"));
        // Its own tags, once set, are what it is; an index beyond the list is no seat.
        let tagged = instance(
            1,
            &[
                launched[0],
                launched[1],
                (tags::DEPLOYMENT, "ds-bob"),
                (tags::SEAT, "bob"),
            ],
        );
        assert_eq!(deployment_of(&tagged, ""), "ds-bob");
        assert_eq!(deployment_of(&instance(3, &launched), "other"), "other");
        assert!(to_instance(&instance(3, &launched), "other").seat.is_none());
        assert_eq!(deployment_of(&instance(0, &[launched[1]]), "x"), "x");

        // The classes a name can be a seat of, for the lookup of instances not tagged yet.
        assert_eq!(
            seat_classes(&["ds-bob", "a-b-1", "plain", "-x"]),
            ["a", "a-b", "ds"]
        );
    }

    #[test]
    fn settling_a_class_group_keeps_what_seats_asked_for_and_what_an_unmoved_seat_needs() {
        let rule = |port: u16, cidrs: &[&str]| Ingress {
            port,
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            description: "d".into(),
        };
        let have = |rules: &[(i32, &str)]| -> Vec<(i32, String)> {
            rules.iter().map(|(p, c)| (*p, c.to_string())).collect()
        };
        let removed = |have: &[(i32, String)], asked: &[Ingress], seated: &[i32]| {
            let (_, remove) = settled_rules(have, asked, seated);
            remove.into_iter().cloned().collect::<Vec<_>>()
        };
        // Every seat moved from 8888 to 9000: the old port's rule goes.
        let now = have(&[(8888, "1.2.3.4/32"), (9000, "1.2.3.4/32")]);
        let asked = [rule(9000, &["1.2.3.4/32"])];
        assert_eq!(
            removed(&now, &asked, &[9000]),
            have(&[(8888, "1.2.3.4/32")])
        );
        // One seat's move failed (still on 8888, as its tag says): its rule stays. So does
        // it when the tags lag behind the moves (every seat still read on 8888).
        assert_eq!(removed(&now, &asked, &[9000, 8888]), Vec::new());
        assert_eq!(removed(&now, &asked, &[8888]), Vec::new());
        // The caller's address changed: the old one goes on the port asked about.
        let now = have(&[(9000, "1.2.3.4/32")]);
        let moved = [rule(9000, &["5.6.7.8/32"])];
        let (add, remove) = settled_rules(&now, &moved, &[9000]);
        assert_eq!(add, vec![(9000, "5.6.7.8/32".to_string(), "d")]);
        assert_eq!(remove, vec![&(9000, "1.2.3.4/32".to_string())]);
        // SSH (ec2.ssh_key) is asked for as Jupyter is: it stays, though no seat's Jupyter
        // is on port 22.
        let now = have(&[(9000, "1.2.3.4/32"), (22, "1.2.3.4/32")]);
        let asked = [rule(9000, &["1.2.3.4/32"]), rule(22, &["1.2.3.4/32"])];
        assert_eq!(removed(&now, &asked, &[9000]), Vec::new());
        // ... and goes once no key asks for it.
        assert_eq!(
            removed(&now, &asked[..1], &[9000]),
            have(&[(22, "1.2.3.4/32")])
        );
        // Every seat reached through SSM now: no rule is asked for, no HTTPS seat is on a
        // port, every rule goes.
        assert_eq!(removed(&now, &[], &[]).len(), 2);
    }

    #[test]
    fn a_wait_for_stopped_gives_up_on_an_instance_being_terminated() {
        let stopped = InstanceStateName::Stopped;
        let terminated = InstanceStateName::Terminated;
        assert!(never_gets("shutting-down", &stopped));
        assert!(never_gets("terminated", &stopped));
        for now in ["pending", "running", "stopping"] {
            assert!(!never_gets(now, &stopped), "{now}");
        }
        for now in ["pending", "running", "stopping", "stopped", "shutting-down"] {
            assert!(!never_gets(now, &terminated), "{now}");
        }
    }

    #[test]
    fn a_launchs_client_token_fits_ec2s_64_characters_whatever_the_name() {
        let random = [0xab; 8];
        assert_eq!(
            client_token("demo", random),
            "labship-demo-abababababababab"
        );
        // A job host of a 32-character project: name, dash, run id.
        let job = format!("{}-20261201-112233-3fa9c2e1", "n".repeat(32));
        let token = client_token(&job, random);
        assert_eq!(token.len(), CLIENT_TOKEN_MAX, "{token}");
        assert!(token.starts_with("labship-nnnn"), "{token}");
        assert!(token.ends_with("-abababababababab"), "{token}");
        assert_ne!(
            client_token(&job, [1; 8]),
            token,
            "unique by its random part"
        );
    }

    #[test]
    fn decodes_console_output_lossily() {
        // "ok\xff\r\n" with and without padding, wrapped
        assert_eq!(
            decode_console_output("b2v/DQo=").ok().as_deref(),
            Some("ok\u{fffd}\r\n")
        );
        assert_eq!(
            decode_console_output("b2v/\nDQo").ok().as_deref(),
            Some("ok\u{fffd}\r\n")
        );
        assert_eq!(decode_console_output("").ok().as_deref(), Some(""));
        assert!(decode_console_output("not base64!").is_err());
    }
}
