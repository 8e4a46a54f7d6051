//! EBS in the pipeline's words: a deployment's data volume, which holds its workspace and
//! outlives its instances. Found by its tags (`labship:volume=workspace` and the deployment),
//! created tagged and encrypted in the instance's Availability Zone, attached as
//! [`DEVICE`], deleted only when asked. Every call is safe to repeat: a create carries a
//! client token, attaching what is already attached to the same instance is done, deleting
//! what is gone is done.

use std::time::Duration;

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification, VolumeState, VolumeType};
use aws_smithy_runtime_api::client::waiters::error::WaiterError;
use serde::Serialize;

use super::ec2::{filter, tag_value};
use super::retry::{self, Step};
use super::{error_code, Cloud};
use crate::error::{Error, Result};
use crate::tags;

/// The device name the data volume is attached as (Nitro hosts show it as an NVMe device
/// whose serial is the volume id; the host script finds it either way).
pub const DEVICE: &str = "/dev/sdf";

/// The device a data volume is attached as on a host several seats share: the seat of slot
/// N at `/dev/sd` + the Nth letter from `f` (the first at [`DEVICE`]); the host script finds
/// each seat's by this name. Slots past `m` (more than the 8 seats a host serves) have none.
pub fn device(slot: usize) -> Option<String> {
    let letter = u8::try_from(slot).ok().and_then(|s| b'f'.checked_add(s))?;
    (letter <= b'm').then(|| format!("/dev/sd{}", char::from(letter)))
}

/// A deployment's data volume.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DataVolume {
    pub id: String,
    pub deployment: String,
    pub size_gib: i32,
    pub availability_zone: String,
    /// creating, available, in-use, error (deleting and deleted ones are not listed).
    pub state: String,
    /// The instance it is attached to, if any.
    pub attached_to: Option<String>,
    /// Who created it (tag `labship:owner`).
    pub owner: Option<String>,
    /// RFC 3339.
    pub created: Option<String>,
    /// A class's seat (tags `labship:class`, `labship:seat`).
    pub seat: Option<crate::hosts::SeatOf>,
}

impl DataVolume {
    /// "vol-0abc (20 GiB gp3, eu-west-1a)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({} GiB gp3, {})",
            self.id, self.size_gib, self.availability_zone
        )
    }
}

/// What a new data volume is.
#[derive(Debug, Clone)]
pub struct VolumeSpec {
    pub deployment: String,
    pub availability_zone: String,
    pub size_gib: i32,
    /// Every tag it is created with (the deployment's and `labship:volume=workspace`).
    pub tags: Vec<(String, String)>,
    /// Made from this snapshot (a kept volume moved to another zone); its size then.
    pub snapshot: Option<String>,
}

fn to_volume(v: &aws_sdk_ec2::types::Volume) -> DataVolume {
    DataVolume {
        id: v.volume_id().unwrap_or_default().to_string(),
        deployment: tag_value(v.tags(), tags::DEPLOYMENT).unwrap_or_default(),
        size_gib: v.size().unwrap_or_default(),
        availability_zone: v.availability_zone().unwrap_or_default().to_string(),
        state: v
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        attached_to: v
            .attachments()
            .iter()
            .find(|a| {
                a.state().map(|s| s.as_str()) != Some("detached")
                    && a.state().map(|s| s.as_str()) != Some("detaching")
            })
            .and_then(|a| a.instance_id())
            .map(str::to_string),
        owner: tag_value(v.tags(), tags::OWNER),
        seat: super::ec2::seat_of(v.tags()),
        created: v
            .create_time()
            .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
    }
}

impl Cloud {
    /// labship's data volumes that exist (of one deployment, or all), oldest first.
    pub async fn data_volumes(&self, deployment: Option<&str>) -> Result<Vec<DataVolume>> {
        self.data_volumes_where(deployment.as_ref().map(std::slice::from_ref))
            .await
    }

    /// The data volumes of these deployments (a few calls for a whole class), in the order
    /// of [`Cloud::data_volumes`].
    pub async fn data_volumes_of(&self, deployments: &[&str]) -> Result<Vec<DataVolume>> {
        let mut found =
            super::ec2::in_chunks(deployments, |some| self.data_volumes_where(Some(some))).await?;
        found.sort_by(|a, b| {
            a.deployment
                .cmp(&b.deployment)
                .then(a.created.cmp(&b.created))
        });
        Ok(found)
    }

    async fn data_volumes_where(&self, deployments: Option<&[&str]>) -> Result<Vec<DataVolume>> {
        let mut req = self
            .ec2
            .describe_volumes()
            .filters(filter(
                &format!("tag:{}", tags::MANAGED_BY),
                &[tags::MANAGED_BY_VALUE],
            ))
            .filters(filter(
                &format!("tag:{}", tags::VOLUME),
                &[tags::VOLUME_WORKSPACE],
            ))
            .filters(filter(
                "status",
                &["creating", "available", "in-use", "error"],
            ));
        if let Some(d) = deployments {
            req = req.filters(filter(&format!("tag:{}", tags::DEPLOYMENT), d));
        }
        let mut found = Vec::new();
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.fail(
                    "ec2",
                    "DescribeVolumes",
                    &super::ec2::named(deployments),
                    &e,
                )
            })?;
            found.extend(page.volumes().iter().map(to_volume));
        }
        found.sort_by(|a, b| {
            a.deployment
                .cmp(&b.deployment)
                .then(a.created.cmp(&b.created))
        });
        Ok(found)
    }

    /// One data volume by id (None once it is gone).
    pub async fn data_volume(&self, id: &str) -> Result<Option<DataVolume>> {
        match self.ec2.describe_volumes().volume_ids(id).send().await {
            Ok(out) => Ok(out.volumes().first().map(to_volume)),
            Err(e) if error_code(&e) == "InvalidVolume.NotFound" => Ok(None),
            Err(e) => Err(self.fail("ec2", "DescribeVolumes", id, &e)),
        }
    }

    /// Creates an encrypted gp3 volume, tagged at creation, and waits until it is available
    /// (the SDK's `volume_available` waiter). `client_token` makes the SDK's own retries of
    /// the call (and a repeat with the same token) one volume.
    pub async fn create_data_volume(
        &self,
        spec: &VolumeSpec,
        client_token: &str,
        within: Duration,
    ) -> Result<DataVolume> {
        let tags: Vec<Tag> = spec
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let out = self
            .ec2
            .create_volume()
            .availability_zone(&spec.availability_zone)
            .size(spec.size_gib)
            .set_snapshot_id(spec.snapshot.clone())
            .volume_type(VolumeType::Gp3)
            .encrypted(true)
            .client_token(client_token)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.fail("ec2", "CreateVolume", &spec.deployment, &e))?;
        let id = out.volume_id().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(Error::Aws {
                action: "ec2:CreateVolume".into(),
                resource: spec.deployment.clone(),
                region: self.region.clone(),
                message: "CreateVolume returned no volume id".into(),
                hint:
                    "check the EC2 console; `labship down --delete-data` removes labship's volumes"
                        .into(),
            });
        }
        self.wait_volume_available(&id, within).await?;
        self.data_volume(&id).await?.ok_or_else(|| Error::Aws {
            action: "ec2:DescribeVolumes".into(),
            resource: id.clone(),
            region: self.region.clone(),
            message: "the volume just created is gone".into(),
            hint: "run `labship up` again".into(),
        })
    }

    /// Waits until the volume is available (the SDK's `volume_available` waiter), within
    /// `within`.
    pub async fn wait_volume_available(&self, id: &str, within: Duration) -> Result<()> {
        self.settle(
            "DescribeVolumes",
            id,
            "available",
            within,
            |left| async move {
                self.ec2
                    .wait_until_volume_available()
                    .volume_ids(id)
                    .wait(left)
                    .await
                    .map(drop)
            },
        )
        .await
    }

    /// Waits until every one of `ids` is available, or cannot be any more (failed, being
    /// deleted, gone), within `within`: one DescribeVolumes for all of them each time, after
    /// 1 s, then half as long again, at most 5 s apart (the SDK's waiter asks each volume 15 s
    /// apart at the soonest). They are named in a `volume-id` filter, not as VolumeIds, so one
    /// EC2 no longer knows is simply not listed (as VolumeIds it would fail the call). A call
    /// that fails transiently is asked again within the same deadline. Returns the ids still
    /// not available when the time is up.
    pub async fn wait_volumes_available(
        &self,
        ids: &[String],
        within: Duration,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = std::time::Instant::now() + within;
        let mut pause = Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let waiting =
                retry::read(left.max(Duration::from_secs(1)), || self.not_available(ids)).await?;
            if waiting.is_empty() || std::time::Instant::now() + pause >= deadline {
                return Ok(waiting);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
    }

    /// Those of `ids` that are listed in a state from which they become available.
    async fn not_available(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut waiting = Vec::new();
        for some in ids.chunks(super::ec2::TAG_VALUES_PER_CALL) {
            let named: Vec<&str> = some.iter().map(String::as_str).collect();
            let mut pages = self
                .ec2
                .describe_volumes()
                .filters(filter("volume-id", &named))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| self.fail("ec2", "DescribeVolumes", &some.join(", "), &e))?;
                waiting.extend(
                    page.volumes()
                        .iter()
                        .filter(|v| {
                            matches!(v.state(), Some(VolumeState::Creating | VolumeState::InUse))
                        })
                        .filter_map(|v| v.volume_id().map(str::to_string)),
                );
            }
        }
        Ok(waiting)
    }

    /// Waits until the snapshot is complete (the SDK's `snapshot_completed` waiter).
    async fn wait_snapshot_completed(&self, id: &str, within: Duration) -> Result<()> {
        self.settle(
            "DescribeSnapshots",
            id,
            "completed",
            within,
            |left| async move {
                self.ec2
                    .wait_until_snapshot_completed()
                    .snapshot_ids(id)
                    .wait(left)
                    .await
                    .map(drop)
            },
        )
        .await
    }

    /// Runs an SDK waiter (`wait(time left)`) until it succeeds, within `within`; a poll that
    /// failed transiently (throttled past the SDK's retries) starts it again.
    async fn settle<O, E, F, Fut>(
        &self,
        op: &str,
        id: &str,
        state: &str,
        within: Duration,
        wait: F,
    ) -> Result<()>
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), WaiterError<O, E>>>,
    {
        let deadline = std::time::Instant::now() + within;
        retry::until(within, Duration::from_secs(2), || async {
            let left = deadline
                .saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_secs(1));
            match wait(left).await {
                Ok(()) => Ok(Step::Done(())),
                Err(WaiterError::OperationFailed(failed)) => {
                    Err(self.fail("ec2", op, id, &failed.into_error()))
                }
                Err(e) => Err(Error::Aws {
                    action: format!("ec2:{op}"),
                    resource: id.to_string(),
                    region: self.region.clone(),
                    message: format!("it was not {state} within {}s: {e}", within.as_secs()),
                    hint: format!(
                        "see {id} in the EC2 console; run the command again once it is {state}"
                    ),
                }),
            }
        })
        .await
    }

    /// Copies a data volume into another Availability Zone (volumes cannot move; snapshots
    /// can): a snapshot of it, tagged like it, then a volume made from that snapshot per
    /// `spec`. Returns the copy and the snapshot; the caller deletes the original and the
    /// snapshot once the copy is attached.
    pub async fn copy_data_volume(
        &self,
        from: &DataVolume,
        spec: &VolumeSpec,
        client_token: &str,
        within: Duration,
    ) -> Result<(DataVolume, String)> {
        let tags: Vec<Tag> = spec
            .tags
            .iter()
            .filter(|(k, _)| k != tags::VOLUME)
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let snapshot = self
            .ec2
            .create_snapshot()
            .volume_id(&from.id)
            .description(format!(
                "labship: the workspace of {}, moving to {}",
                spec.deployment, spec.availability_zone
            ))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Snapshot)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.fail("ec2", "CreateSnapshot", &from.id, &e))?
            .snapshot_id()
            .unwrap_or_default()
            .to_string();
        self.wait_snapshot_completed(&snapshot, within).await?;
        let spec = VolumeSpec {
            snapshot: Some(snapshot.clone()),
            size_gib: spec.size_gib.max(from.size_gib),
            ..spec.clone()
        };
        let copy = self.create_data_volume(&spec, client_token, within).await?;
        Ok((copy, snapshot))
    }

    /// Deletes a snapshot; false when it was already gone.
    pub async fn delete_snapshot(&self, id: &str) -> Result<bool> {
        match self.ec2.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == "InvalidSnapshot.NotFound" => Ok(false),
            Err(e) => Err(self.fail("ec2", "DeleteSnapshot", id, &e)),
        }
    }

    /// Attaches the volume to the instance as `device` ([`DEVICE`], or a shared host's
    /// seat's [`device`]). Already attached to this instance: done. The instance must be
    /// running or stopped.
    pub async fn attach_data_volume(
        &self,
        volume: &str,
        instance: &str,
        device: &str,
    ) -> Result<()> {
        match self
            .ec2
            .attach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(device)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                // A lost answer sent again: the volume is in use, by this instance.
                if let Some(v) = self.data_volume(volume).await? {
                    if v.attached_to.as_deref() == Some(instance) {
                        return Ok(());
                    }
                }
                Err(self.fail("ec2", "AttachVolume", volume, &e))
            }
        }
    }

    /// Detaches the volume from the instance (a seat leaving a shared host, which unmounted
    /// it first). Not attached to it (a lost answer sent again): done.
    pub async fn detach_data_volume(&self, volume: &str, instance: &str) -> Result<()> {
        match self
            .ec2
            .detach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let attached = self.data_volume(volume).await?.and_then(|v| v.attached_to);
                if attached.as_deref() != Some(instance) {
                    return Ok(());
                }
                Err(self.fail("ec2", "DetachVolume", volume, &e))
            }
        }
    }

    /// Deletes a volume; false when it was already gone.
    pub async fn delete_data_volume(&self, id: &str) -> Result<bool> {
        match self.ec2.delete_volume().volume_id(id).send().await {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == "InvalidVolume.NotFound" => Ok(false),
            Err(e) => Err(self.fail("ec2", "DeleteVolume", id, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_slot_of_a_host_has_its_own_device_up_to_eight() {
        assert_eq!(super::device(0).as_deref(), Some(super::DEVICE));
        assert_eq!(super::device(1).as_deref(), Some("/dev/sdg"));
        assert_eq!(super::device(7).as_deref(), Some("/dev/sdm"));
        assert_eq!(super::device(8), None);
        assert_eq!(super::device(usize::MAX), None);
    }
}
