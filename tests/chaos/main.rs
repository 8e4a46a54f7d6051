//! Chaos: labship stopped at named points (SIGINT and SIGKILL), and AWS answering the way it
//! does on a busy day (throttling, server errors, answers lost after the call was applied),
//! through the fault injector of the instance simulator (tests/rig/instance-sim.py). Each test
//! ends with nothing left in moto or on the engine. Run by `bash tests/rig/run.sh`; a
//! representative subset by default, everything with `-- --include-ignored`.

#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

mod data;
mod driver;
mod inject;
mod kill;
