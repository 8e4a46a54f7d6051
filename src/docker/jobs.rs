//! A job's container on the local engine, in the words `labship run` needs: create it without
//! starting it, put its files in, start it, take files out, end it.

use std::collections::HashMap;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, KillContainerOptions,
    UploadToContainerOptions,
};
use futures_util::StreamExt;

use super::containers::{confined, not_found, read_only_binds};
use super::Engine;
use crate::error::{engine_message, Error, Result};

/// What a job's container runs.
#[derive(Debug, Clone)]
pub struct JobContainer {
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub cmd: Vec<String>,
    /// Memory in bytes and CPUs in billionths (`None`: unlimited).
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    /// Read-only bind mounts (this machine's path, the container's): the job's inputs.
    pub inputs: Vec<(String, String)>,
}

impl Engine {
    /// Creates the job's container (not started: its files go in first).
    pub async fn create_job(&self, job: &JobContainer) -> Result<()> {
        let body = ContainerCreateBody {
            image: Some(job.image.clone()),
            labels: Some(job.labels.clone()),
            cmd: Some(job.cmd.clone()),
            entrypoint: Some(Vec::new()),
            // The runner is the process init waits for: when it ends, the kernel and any
            // worker processes end with the container.
            host_config: Some(bollard::models::HostConfig {
                mounts: Some(read_only_binds(&job.inputs)),
                ..confined(job.memory_bytes, job.nano_cpus)
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(job.name.clone()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| {
                Error::engine(
                    format!("creating container {}", job.name),
                    engine_message(&e),
                )
            })?;
        Ok(())
    }

    /// Unpacks the tar archive `tar` into the container's folder `dir`.
    pub async fn put_files(&self, container: &str, dir: &str, tar: Vec<u8>) -> Result<()> {
        let options = UploadToContainerOptions {
            path: dir.to_string(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| {
                Error::engine(
                    format!("copying files into {container}:{dir}"),
                    engine_message(&e),
                )
            })
    }

    /// The container's file or folder `path` as a tar archive (named by its last component),
    /// spooled to a temporary file (a job's outputs may be larger than memory); None when it
    /// does not exist.
    pub async fn get_files(&self, container: &str, path: &str) -> Result<Option<std::fs::File>> {
        use std::io::{Seek, Write};
        let failed = |e: &dyn std::fmt::Display| {
            Error::engine(format!("copying {container}:{path} out"), e.to_string())
        };
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self
            .docker
            .download_from_container(container, Some(options));
        let mut spool = tempfile::tempfile().map_err(|e| failed(&e))?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => spool.write_all(&bytes).map_err(|e| failed(&e))?,
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(failed(&engine_message(&e))),
            }
        }
        spool.rewind().map_err(|e| failed(&e))?;
        Ok(Some(spool))
    }

    /// Kills the container's processes at once (a job past its deadline); one already ended
    /// or gone is fine.
    pub async fn kill_container(&self, name: &str) -> Result<()> {
        match self
            .docker
            .kill_container(name, None::<KillContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 409: not running.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(Error::engine(
                format!("killing container {name}"),
                engine_message(&e),
            )),
        }
    }
}
