//! End-to-end tests: the real `labship` binary against the real Docker engine, a real
//! registry (Debian's docker-registry with htpasswd auth) and moto for the AWS APIs, all
//! started by `tests/rig/run.sh`. One test binary, so the heavy crates link once.

mod support;

mod bad_input;
mod browser;
mod build;
mod class;
mod config;
mod ec2;
mod job;
mod job_ec2;
mod life;
mod local;
mod policy;
mod push;
