//! labship: ship JupyterLab to the cloud in one command.
//!
//! The modules follow the pipeline a user runs: settings ([`config`], [`init`]), then
//! [`build`] the image (with the offline base), copy a job's [`data`] from S3, [`push`] it to a registry, run it on a
//! [`hosts`] target (the local Docker engine or EC2), and recover the Jupyter [`token`].
//! The adapters over the outside world come after: the Docker engine ([`docker`]) and AWS
//! ([`aws`]); then support: [`output`] keeps results on stdout and progress on stderr,
//! [`error`] says what failed, why, and what to do, [`secrets`] keeps what labship holds
//! out of its diagnostics. The command line itself lives in the
//! binary (`src/main.rs`, `src/cli.rs`, `src/commands/`): this library knows nothing of clap.

// `Error` carries the config file's text for miette's source snippets, which makes it large;
// errors are the cold path of a CLI, so the size is not worth boxing every variant for.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod init;

pub mod build;
pub mod data;
pub mod push;

pub mod class;
pub mod hosts;
pub mod job;
pub mod token;
pub mod workspace;

pub mod aws;
pub mod docker;

pub mod browser;
pub mod error;
pub mod forward;
pub mod http;
pub mod interrupt;
pub mod output;
pub mod secrets;
pub mod tags;
pub mod tls;
pub mod tunnel;
