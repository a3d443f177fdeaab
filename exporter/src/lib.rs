//! edgewatt-exporter: per-node energy from whatever meters the machine has (or an estimate), split
//! over pods, containers and processes by CPU time, served as Prometheus metrics.

pub mod accounting;
pub mod app;
pub mod attribution;
pub mod cgroup;
pub mod cli;
pub mod collector;
pub mod counter;
pub mod ebpf;
pub mod estimator;
pub mod fixture;
pub mod hostinfo;
pub mod metrics;
pub mod pods;
pub mod procfs;
#[cfg(feature = "serve")]
pub mod server;
pub mod shared_model;
pub mod source;
pub mod sources;
pub mod sysfs;
pub mod top;
