//! End-to-end tests: the real `labship` binary against the real Docker engine, a real
//! registry (Debian's docker-registry with htpasswd auth) and moto for the AWS APIs, all
//! started by `tests/rig/run.sh`. One test binary, so the heavy crates link once.

mod support;

// libtest starts tests in the order of their names, as many at once as there are CPUs. The
// host-life tests wait for minutes (an idle stop, a TTL) while doing little, so their module
// is named to come first: they then run beside the others instead of alone at the end.
mod alive;
mod bad_input;
mod browser;
mod build;
mod class;
mod config;
mod ec2;
mod job;
mod job_ec2;
mod local;
mod policy;
mod push;
