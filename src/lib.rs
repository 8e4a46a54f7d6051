//! labship: ship JupyterLab to the cloud in one command.
//!
//! The modules follow the pipeline a user runs: settings ([`config`], [`init`]), then
//! [`build`] the image on the Docker [`engine`], then [`push`] it to ECR through the one
//! [`aws`] configuration and launch it on [`ec2`] (or run it on this machine, [`local`]), and
//! recover the Jupyter [`token`] from its log; [`status`] lists what runs; `down` in both
//! removes it. [`output`] keeps results on stdout and progress on stderr;
//! [`error`] says what failed, why, and what to do.

// `Error` carries the config file's text for miette's source snippets, which makes it large;
// errors are the cold path of a CLI, so the size is not worth boxing every variant for.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod init;

pub mod base;
pub mod build;
pub mod engine;
pub mod push;

pub mod ec2;
pub mod local;
pub mod status;
pub mod token;

pub mod aws;
pub mod tags;

pub mod browser;
pub mod cli;
pub mod commands;
pub mod error;
pub mod http;
pub mod output;
