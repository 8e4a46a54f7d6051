//! `labship init`: a commented `labship.toml` and, when the folder has none, the default
//! `docker/` workload (a JupyterLab Dockerfile, the mtcars data set and a starter notebook).
//! Files are created with `create_new`, so a user's file is never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{self, FILE_NAME};
use crate::error::{Error, Result};

/// The default workload, embedded from this repository's `docker/` folder.
const WORKLOAD: &[(&str, &str)] = &[
    ("Dockerfile", include_str!("../docker/Dockerfile")),
    (".dockerignore", include_str!("../docker/.dockerignore")),
    ("README.md", include_str!("../docker/README.md")),
    (
        "resources/mtcars.csv",
        include_str!("../docker/resources/mtcars.csv"),
    ),
    (
        "resources/parallel-processing.ipynb",
        include_str!("../docker/resources/parallel-processing.ipynb"),
    ),
];

pub struct InitOptions {
    pub name: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub name: String,
    pub created: Vec<PathBuf>,
    /// Files or folders that existed and were left as they were.
    pub kept: Vec<PathBuf>,
}

impl std::fmt::Display for InitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.created {
            writeln!(f, "created  {}", p.display())?;
        }
        for p in &self.kept {
            writeln!(f, "kept     {} (already there)", p.display())?;
        }
        write!(
            f,
            "deployment `{}`: run `labship build` to build the image, `labship push` to send it to ECR",
            self.name
        )
    }
}

fn template(name: &str) -> String {
    format!(
        r#"# labship.toml: settings for `labship`. Flags beat LABSHIP_* environment variables,
# which beat this file, which beats the defaults shown in the comments.

# Deployment name: tags every cloud resource and names the ECR repository.
name = "{name}"

# Where `up`, `token`, `logs`, `status` and `down` act: "local" (the Docker engine here,
# no AWS account needed) or "ec2" (your AWS account). Flags: --local, --ec2.
# target = "ec2"

# AWS region and profile (default: the standard AWS chain, e.g. AWS_REGION, ~/.aws/config).
# region = "eu-west-1"
# profile = "default"

[build]
# Folder sent to the Docker engine as the build context.
context = "docker"
# Dockerfile, relative to this file (default: Dockerfile inside the context).
# dockerfile = "docker/Dockerfile"
# Multi-stage target (default: the last stage).
# target = "runtime"
# Image platform: linux/amd64 or linux/arm64 (default: the instance type's architecture).
# platform = "linux/amd64"
# Builder: auto (BuildKit when the engine has it), buildkit or classic.
# builder = "auto"
# Secrets for RUN --mount=type=secret,id=NAME (the value never goes into the image).
# secrets = ["id=pypi,env=PIP_INDEX_TOKEN"]
# ssh-agents for RUN --mount=type=ssh: default ($SSH_AUTH_SOCK) or ID=SOCKET.
# ssh = ["default"]
# Network of RUN steps: default, host (this machine's loopback) or none.
# network = "default"

# Build arguments, e.g. a base image from a private mirror or one made offline.
[build.args]
# BASE_IMAGE = "public.ecr.aws/docker/library/python:3.12-slim-bookworm"

[push]
# ECR repository (default: labship/<name>); created on first push.
# repository = "labship/{name}"
# Push to this registry host[:port] instead of the one ECR reports (tests, local mirrors).
# Only ECR or this machine: labship sends it your ECR password. Any other host needs
# --insecure-registry-endpoint on the command line; this file cannot accept it.
# registry_endpoint = "127.0.0.1:5000"

[ec2]
# Instance type the image is for; its architecture decides the default platform.
instance_type = "{instance_type}"
# Host image: "ecs" (ECS-optimized Amazon Linux 2023, Docker preinstalled: the fastest start),
# "al2023" (Docker installed at boot), or an AMI id.
# ami = "ecs"
# Launch in this subnet (default: the region's default VPC).
# subnet = "subnet-0123456789abcdef0"
# Jupyter's port on the instance.
# port = 8888
# Who may reach Jupyter (default: your public IP as /32).
# allow_cidr = ["203.0.113.7/32"]
# An EC2 key pair for SSH (opens port 22 to the same addresses; default: no SSH).
# ssh_key = "my-key"
# How Jupyter is reached: "https" (its port open to the addresses above) or "ssm" (no open
# port: `labship connect` goes through Systems Manager; needs the AWS session-manager-plugin).
# access = "https"

[workspace]
# A git repository (URL or URL#branch/tag/commit) whose files every deployment and seat gets
# in its workspace when it starts (fetched on this machine with your git and its credentials);
# `labship distribute --git` brings new commits, keeping files someone changed.
# git = "https://github.com/me/course-notebooks.git"

[data]
# S3 folders or objects a job (`labship run`, and `up --local`) gets read-only at
# inputs/<name> in its working folder, copied with your AWS credentials on this machine.
# inputs = ["s3://labship-course/week1/"]
"#,
        instance_type = config::DEFAULT_INSTANCE_TYPE
    )
}

/// Creates `path` with `contents` unless it exists; returns whether it was created.
fn create_new(path: &Path, contents: &str) -> Result<bool> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(contents.as_bytes())
                .map_err(|source| Error::Write {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub fn init(dir: &Path, options: &InitOptions) -> Result<InitReport> {
    let folder = dir.file_name().and_then(|s| s.to_str()).unwrap_or("lab");
    let name = match &options.name {
        Some(n) => config::validate_name(n)?,
        None => config::sanitise_name(folder),
    };
    let mut report = InitReport {
        name: name.clone(),
        created: Vec::new(),
        kept: Vec::new(),
    };
    let toml = dir.join(FILE_NAME);
    if create_new(&toml, &template(&name))? {
        report.created.push(PathBuf::from(FILE_NAME));
    } else {
        report.kept.push(PathBuf::from(FILE_NAME));
    }
    let docker = dir.join("docker");
    if docker.exists() {
        report.kept.push(PathBuf::from("docker/"));
    } else {
        for (rel, contents) in WORKLOAD {
            if create_new(&docker.join(rel), contents)? {
                report.created.push(Path::new("docker").join(rel));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(
            dir.path(),
            &InitOptions {
                name: Some("my-lab".into()),
            },
        )
        .unwrap();
        assert!(first.created.contains(&PathBuf::from("labship.toml")));
        assert!(first.created.contains(&PathBuf::from("docker/Dockerfile")));
        // The template is a valid config with the name in it.
        let cfg = config::Config::load(dir.path(), Default::default(), Default::default()).unwrap();
        assert_eq!(cfg.name, "my-lab");
        assert_eq!(cfg.build.context, dir.path().join("docker"));

        std::fs::write(dir.path().join("labship.toml"), "name = \"mine\"\n").unwrap();
        std::fs::write(dir.path().join("docker/Dockerfile"), "FROM mine\n").unwrap();
        let second = init(dir.path(), &InitOptions { name: None }).unwrap();
        assert!(second.created.is_empty(), "{:?}", second.created);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("labship.toml")).unwrap(),
            "name = \"mine\"\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("docker/Dockerfile")).unwrap(),
            "FROM mine\n"
        );
    }

    #[test]
    fn init_refuses_a_bad_name() {
        let dir = tempfile::tempdir().unwrap();
        assert!(init(
            dir.path(),
            &InitOptions {
                name: Some("Bad Name".into())
            }
        )
        .is_err());
        assert!(!dir.path().join("labship.toml").exists());
    }
}
