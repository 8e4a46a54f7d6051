//! Containers and volumes on the local engine, in the words `up --local`, `status`, `logs` and
//! `down` need: run a labelled container with a published port and a workspace volume, find
//! containers by label, read their logs, stop and remove them.

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HostConfig, Mount, MountType, PortBinding,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListVolumesOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, RenameContainerOptions, StopContainerOptions,
};
use futures_util::{Stream, StreamExt};

use super::Engine;
use crate::error::{engine_message, Error, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    /// The port inside the container, e.g. 8888.
    pub container_port: u16,
    pub host_ip: String,
    pub host_port: u16,
    /// A named volume and where it is mounted.
    pub volume: Option<(String, String)>,
    /// Read-only bind mounts (this machine's path, the container's): the inputs.
    pub inputs: Vec<(String, String)>,
    /// Limits: memory in bytes, CPUs in billionths (`None`: unlimited).
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
}

/// A volume and its labels.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// A container as `status` shows it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    /// created, running, exited, restarting, ...
    pub state: String,
    /// Unix seconds.
    pub created: i64,
    pub host_ip: Option<String>,
    pub host_port: Option<u16>,
}

impl ContainerInfo {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// The engine's own name of a state enum (`running`, `exited`, ...), as it serialises.
fn enum_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A container with an init process (it reaps the zombies finished kernels leave behind, and
/// ends the container's other processes when the main one ends) and these limits: memory
/// in bytes, with no swap beyond it (a container that runs out is stopped, not the
/// machine), and CPUs in billionths.
/// Read-only bind mounts of (this machine's path, the container's). Unlike `-v`'s binds, a
/// path that does not exist is an error, not an empty folder made in its place.
pub(super) fn read_only_binds(pairs: &[(String, String)]) -> Vec<Mount> {
    pairs
        .iter()
        .map(|(source, target)| Mount {
            source: Some(source.clone()),
            target: Some(target.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        })
        .collect()
}

pub(super) fn confined(memory_bytes: Option<i64>, nano_cpus: Option<i64>) -> HostConfig {
    HostConfig {
        init: Some(true),
        memory: memory_bytes,
        memory_swap: memory_bytes,
        nano_cpus,
        ..Default::default()
    }
}

pub(super) fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Creates the volume unless it exists; returns whether it was created.
    pub async fn ensure_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<bool> {
        if self.volume_exists(name).await? {
            return Ok(false);
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map_err(|e| Error::engine(format!("creating volume {name}"), engine_message(&e)))?;
        Ok(true)
    }

    pub async fn volume_exists(&self, name: &str) -> Result<bool> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(Error::engine(
                format!("inspecting volume {name}"),
                engine_message(&e),
            )),
        }
    }

    /// Removes the volume; returns whether it existed.
    pub async fn remove_volume(&self, name: &str) -> Result<bool> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(Error::engine(
                format!("removing volume {name}"),
                engine_message(&e),
            )),
        }
    }

    /// Creates and starts a container. A container that cannot start is removed again, so
    /// nothing half-made is left; the engine's reason is returned.
    pub async fn run_container(&self, spec: &ContainerSpec) -> Result<String> {
        let port_key = format!("{}/tcp", spec.container_port);
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(spec.host_ip.clone()),
                    host_port: Some(spec.host_port.to_string()),
                }]),
            )])),
            // No restart policy yet: a server that fails at start must stay down, with its exit
            // code, for us to report. `keep_running` sets it once Jupyter is up.
            mounts: Some(
                spec.volume
                    .iter()
                    .map(|(source, target)| Mount {
                        source: Some(source.clone()),
                        target: Some(target.clone()),
                        typ: Some(MountType::VOLUME),
                        ..Default::default()
                    })
                    .chain(read_only_binds(&spec.inputs))
                    .collect(),
            ),
            ..confined(spec.memory_bytes, spec.nano_cpus)
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            labels: Some(spec.labels.clone()),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| {
                Error::engine(
                    format!("creating container {}", spec.name),
                    engine_message(&e),
                )
            })?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove_container(&created.id).await;
            return Err(Error::ContainerStart {
                container: spec.name.clone(),
                image: spec.image.clone(),
                message: engine_message(&e),
            });
        }
        Ok(created.id)
    }

    /// Restarts the container with the engine and after crashes, unless a user stops it.
    pub async fn keep_running(&self, name: &str) -> Result<()> {
        let update = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker
            .update_container(name, update)
            .await
            .map_err(|e| {
                Error::engine(
                    format!("setting the restart policy of {name}"),
                    engine_message(&e),
                )
            })
    }

    pub async fn start_container(&self, name: &str) -> Result<()> {
        self.docker
            .start_container(name, None)
            .await
            .map_err(|e| Error::engine(format!("starting container {name}"), engine_message(&e)))
    }

    pub async fn stop_container(&self, name: &str) -> Result<()> {
        let options = StopContainerOptions {
            t: Some(10),
            signal: None,
        };
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(Error::engine(
                format!("stopping container {name}"),
                engine_message(&e),
            )),
        }
    }

    /// Removes a container (stopping it first); returns whether it existed.
    pub async fn remove_container(&self, name: &str) -> Result<bool> {
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(Error::engine(
                format!("removing container {name}"),
                engine_message(&e),
            )),
        }
    }

    /// Names of running containers that publish `port` on the host.
    pub async fn containers_publishing(&self, port: u16) -> Result<Vec<String>> {
        let found = self.list(false, "publish", port.to_string()).await?;
        Ok(found.into_iter().map(|c| c.name).collect())
    }

    /// Every container, running or not, that carries `label=value`.
    pub async fn containers_labelled(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<ContainerInfo>> {
        let filter = match value {
            Some(v) => format!("{label}={v}"),
            None => label.to_string(),
        };
        self.list(true, "label", filter).await
    }

    /// What every container, running or not, mounts from this machine (bind mounts'
    /// sources; a volume's own folder too).
    pub async fn mount_sources(&self) -> Result<std::collections::HashSet<std::path::PathBuf>> {
        Ok(self
            .summaries(true, None)
            .await?
            .into_iter()
            .flat_map(|c| c.mounts.unwrap_or_default())
            .filter_map(|m| m.source)
            .map(std::path::PathBuf::from)
            .collect())
    }

    /// Every volume that carries `label` (any value).
    pub async fn volumes_labelled(&self, label: &str) -> Result<Vec<VolumeInfo>> {
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
        };
        let found = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| Error::engine("listing volumes", engine_message(&e)))?;
        Ok(found
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                labels: v.labels,
            })
            .collect())
    }

    /// The engine's list of containers (`all`: stopped ones too), filtered.
    async fn summaries(
        &self,
        all: bool,
        filters: Option<HashMap<String, Vec<String>>>,
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        let options = ListContainersOptions {
            all,
            filters,
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::engine("listing containers", engine_message(&e)))
    }

    /// Containers matching one engine filter (`label`, `publish`, ...).
    async fn list(&self, all: bool, filter: &str, value: String) -> Result<Vec<ContainerInfo>> {
        let filters = HashMap::from([(filter.to_string(), vec![value])]);
        Ok(self
            .summaries(all, Some(filters))
            .await?
            .into_iter()
            .map(|c| {
                let published = c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .find(|p| p.public_port.is_some());
                ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    image: c.image.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default(),
                    state: c.state.map(|s| enum_name(&s)).unwrap_or_default(),
                    created: c.created.unwrap_or_default(),
                    host_ip: published.as_ref().and_then(|p| p.ip.clone()),
                    host_port: published.and_then(|p| p.public_port),
                }
            })
            .collect())
    }

    /// The container's whole log (stdout and stderr interleaved as written), or its last
    /// `tail` lines.
    pub async fn container_logs(&self, name: &str, tail: Option<usize>) -> Result<String> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
            ..Default::default()
        };
        self.read_logs(name, options).await
    }

    /// What the container wrote from `since` to `until` (Unix seconds, by the engine's own
    /// timestamps of each line).
    pub async fn container_logs_between(
        &self,
        name: &str,
        since: i64,
        until: i64,
    ) -> Result<String> {
        let seconds = |t: i64| i32::try_from(t.max(1)).unwrap_or(i32::MAX);
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            since: seconds(since),
            until: seconds(until),
            tail: "all".into(),
            ..Default::default()
        };
        self.read_logs(name, options).await
    }

    async fn read_logs(&self, name: &str, options: LogsOptions) -> Result<String> {
        let mut stream = self.docker.logs(name, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Error::engine(format!("reading the logs of {name}"), engine_message(&e))
            })?;
            text.push_str(&String::from_utf8_lossy(&log_bytes(chunk)));
        }
        Ok(text)
    }

    /// The container's log from its start, then as it is written (`--attach`).
    pub fn follow_logs(&self, name: &str) -> impl Stream<Item = Result<String>> + '_ {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            follow: true,
            tail: "all".into(),
            ..Default::default()
        };
        let name = name.to_string();
        self.docker.logs(&name, Some(options)).map(move |chunk| {
            chunk
                .map(|c| String::from_utf8_lossy(&log_bytes(c)).into_owned())
                .map_err(|e| {
                    Error::engine(format!("following the logs of {name}"), engine_message(&e))
                })
        })
    }
}

/// A container's state while we wait for it.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub state: String,
    pub exit_code: i64,
    /// The kernel ended it for using more than its memory limit.
    pub oom_killed: bool,
    /// How often the engine restarted it (restart policy) since it was created.
    pub restarts: i64,
    /// When it last started (Unix seconds; `None`: never).
    pub started_at: Option<i64>,
}

impl Engine {
    pub async fn container_status(&self, name: &str) -> Result<Option<ContainerStatus>> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                Ok(Some(ContainerStatus {
                    state: state.status.map(|s| enum_name(&s)).unwrap_or_default(),
                    exit_code: state.exit_code.unwrap_or_default(),
                    oom_killed: state.oom_killed.unwrap_or_default(),
                    restarts: c.restart_count.unwrap_or_default(),
                    // Docker says 0001-01-01T00:00:00Z for a container never started.
                    started_at: state
                        .started_at
                        .as_deref()
                        .and_then(crate::hosts::unix_of)
                        .filter(|t| *t > 0),
                }))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(Error::engine(
                format!("inspecting container {name}"),
                engine_message(&e),
            )),
        }
    }

    /// The image's WORKDIR, where a workspace volume belongs.
    pub async fn image_workdir(&self, image: &str) -> Result<Option<String>> {
        let inspected =
            self.docker.inspect_image(image).await.map_err(|e| {
                Error::engine(format!("inspecting image {image}"), engine_message(&e))
            })?;
        Ok(inspected
            .config
            .and_then(|c| c.working_dir)
            .filter(|w| !w.is_empty() && w != "/"))
    }
}

impl Engine {
    pub async fn rename_container(&self, from: &str, to: &str) -> Result<()> {
        self.docker
            .rename_container(
                from,
                RenameContainerOptions {
                    name: to.to_string(),
                },
            )
            .await
            .map_err(|e| {
                Error::engine(
                    format!("renaming container {from} to {to}"),
                    engine_message(&e),
                )
            })
    }

    /// The host address and port a container publishes `container_port` on, from its
    /// configuration (so it is known for stopped containers too).
    pub async fn container_binding(
        &self,
        name: &str,
        container_port: u16,
    ) -> Result<Option<(String, u16)>> {
        let inspected = match self.docker.inspect_container(name, None).await {
            Ok(c) => c,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(Error::engine(
                    format!("inspecting container {name}"),
                    engine_message(&e),
                ))
            }
        };
        let binding = inspected
            .host_config
            .and_then(|h| h.port_bindings)
            .and_then(|mut b| b.remove(&format!("{container_port}/tcp")))
            .flatten()
            .and_then(|v| v.into_iter().next());
        Ok(binding.and_then(|b| {
            let port = b.host_port?.parse().ok()?;
            Some((
                b.host_ip
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port,
            ))
        }))
    }

    /// Runs `cmd` in a throwaway container of `image` with `volume` mounted and `labels` on
    /// it, waits (bounded) for it to finish, removes it, and returns its exit code and log.
    pub async fn run_once(
        &self,
        image: &str,
        cmd: Vec<String>,
        volume: (&str, &str),
        labels: HashMap<String, String>,
        within: std::time::Duration,
    ) -> Result<(i64, String)> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            labels: Some(labels),
            cmd: Some(cmd),
            entrypoint: Some(Vec::new()),
            user: Some("0".into()),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    source: Some(volume.0.to_string()),
                    target: Some(volume.1.to_string()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| Error::engine("creating a helper container", engine_message(&e)))?;
        let id = created.id;
        let result = async {
            self.start_container(&id).await?;
            let deadline = std::time::Instant::now() + within;
            loop {
                match self.container_status(&id).await? {
                    Some(s) if s.state == "exited" || s.state == "dead" => {
                        return Ok((s.exit_code, self.container_logs(&id, Some(20)).await?));
                    }
                    _ if std::time::Instant::now() >= deadline => {
                        return Err(Error::engine(
                            "running a helper container",
                            format!("it did not finish within {}s", within.as_secs()),
                        ));
                    }
                    _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
        }
        .await;
        let _ = self.remove_container(&id).await;
        result
    }
}

fn log_bytes(chunk: LogOutput) -> bytes::Bytes {
    match chunk {
        LogOutput::StdErr { message }
        | LogOutput::StdOut { message }
        | LogOutput::StdIn { message }
        | LogOutput::Console { message } => message,
    }
}
