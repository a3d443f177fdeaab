//! edgewatt-exporter: per-node energy from whatever meters the machine has (or an estimate), split
//! over pods, containers and processes by CPU time, served as Prometheus metrics.
//!
//! One interval: [`collector`], the loop, does the reading (`/proc/stat`, every source in
//! [`sources`], the CPU [`accounting`], `/proc/<pid>/exe`) and feeds the pure parts — [`meters`],
//! [`attribution`], [`ledger`], [`workloads`] — which make a [`snapshot::Snapshot`]; [`metrics`],
//! [`top`] and `server` read the snapshot and nothing else.

/// Per-process CPU time: the interface procfs and eBPF accounting share.
pub mod accounting;
/// Command-line wiring: builds the collector, runs `serve` or `top`.
pub mod app;
/// Pure arithmetic that splits one interval's energy over idle and processes.
pub mod attribution;
/// What a cgroup path says: container id, runtime, pod UID.
pub mod cgroup;
/// Flags, config file, log filter.
pub mod cli;
/// The collection loop: reads `/proc/stat`, the sources and the accounting once per interval.
pub mod collector;
/// Monotonic totals from wrapping hardware counters (RAPL).
pub mod counter;
/// eBPF CPU-time accounting (the program in `ebpf/`, loaded with aya).
pub mod ebpf;
/// The power model that stands in while no meter reports.
pub mod estimator;
/// Fixture trees in the kernel's formats, for tests only (`--features fixture`).
#[cfg(feature = "fixture")]
pub mod fixture;
/// CPUs and RAPL paths, read once.
pub mod hostinfo;
/// The books: idle + pods + system + unattributed = node, per zone and source.
pub mod ledger;
/// Meter readings → deltas and totals, one meter per zone, node power.
pub mod meters;
/// The snapshot as Prometheus metrics (edgewatt's names or Kepler's).
pub mod metrics;
/// Pod names for pod UIDs (a watch of this node's pods).
pub mod pods;
/// procfs CPU-time accounting and `/proc/stat`.
pub mod procfs;
/// `/metrics`, `/healthz`, `/readyz` over HTTP.
#[cfg(feature = "serve")]
pub mod server;
/// PowerModels shared between metered and meterless nodes.
pub mod shared_model;
/// One source's status as the loop holds it (up, down and why, in use or standby).
pub mod slot;
/// The output model every reader depends on, instead of on the loop.
pub mod snapshot;
/// The `Source` interface every meter implements.
pub mod source;
/// The meters: RAPL, hwmon, batteries, Redfish, IPMI, NVML, discovery.
pub mod sources;
/// sysfs/procfs reads under a host root.
pub mod sysfs;
/// `edgewatt-exporter top`: the terminal view of a snapshot.
pub mod top;
/// Per-workload records: energy per zone, labels, expiry of gone workloads.
pub mod workloads;
