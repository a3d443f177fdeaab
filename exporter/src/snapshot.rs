//! What one collection produced: the output model that `/metrics`, `top` and `/healthz` read.
//!
//! Only the collection loop ([`crate::collector`]) builds a [`Snapshot`]; readers depend on this
//! module alone, so the meters, the books and the workload records can change without touching
//! how figures are shown. Every figure here is either true or absent (DESIGN.md "Failure rules").

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::cgroup::Workload;
use crate::source::{Battery, Domain, SharedMeter};

/// One node-level energy series (only meters selected this interval are in a snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeries {
    pub source: &'static str,
    pub domain: Domain,
    pub zone: String,
    pub joules_total: f64,
    pub watts: f64,
    /// Active/idle split by the node's CPU busy ratio (CPU and platform meters).
    pub active_joules_total: f64,
    pub idle_joules_total: f64,
    pub active_watts: f64,
    pub idle_watts: f64,
}

/// Where one attributed zone's energy went since the exporter started. For every zone and
/// source: the node's joules = idle + pods + system + unattributed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Books {
    pub zone: String,
    pub source: &'static str,
    pub idle: f64,
    /// All pods together, including pods whose series have since expired.
    pub pods: f64,
    /// Processes outside any pod (kubelet, the runtime, host daemons).
    pub system: f64,
    /// Active energy no process received (kernel work, processes that exited unseen, CPU time
    /// the accounting could not name).
    pub unattributed: f64,
}

/// Kind of workload series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Pod,
    Container,
    Process,
}

/// One workload's energy in one zone from one source.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSeries {
    pub kind: WorkloadKind,
    /// Kepler's label names: `pod_id,pod_name,pod_namespace` / `container_id,container_name` /
    /// `pid,comm`.
    pub labels: Arc<Vec<(&'static str, String)>>,
    pub zone: String,
    pub source: &'static str,
    pub joules_total: f64,
    /// Power over the last interval; `None` when this zone was not attributed this interval (its
    /// source is not in use now, or the accounting failed).
    pub watts: Option<f64>,
    /// Seen in the last interval (Kepler's `state="running"`); a workload that has gone keeps its
    /// series until `expire_intervals` pass (`state="terminated"`).
    pub running: bool,
    /// What a process's or container's cgroup path says (container id, runtime), for the labels
    /// only the Kepler naming shows.
    pub cgroup: Option<Arc<Workload>>,
    /// A process's executable (`/proc/<pid>/exe`), read once when the process is first seen;
    /// empty where the link cannot be read (kernel threads, no ptrace access).
    pub exe: Option<Arc<str>>,
}

/// State of one source after the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub name: &'static str,
    pub up: bool,
    /// `in_use` (read, and its figures are published), `standby` (read, but another source is
    /// preferred for everything it measures), or, when down,
    /// [`crate::source::SourceError::state`].
    pub state: &'static str,
    /// Why it is down.
    pub reason: Option<String>,
    /// What it read last (e.g. the Redfish chassis and resource).
    pub detail: Option<String>,
}

/// Everything the last interval produced; what `/metrics` and `top` show.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node_name: String,
    pub taken_at: Option<SystemTime>,
    /// When the collection finished (monotonic, for `/healthz`).
    pub finished_at: Option<Instant>,
    pub interval_seconds: f64,
    pub collection_seconds: f64,
    pub node: Vec<NodeSeries>,
    /// The node's draw: platform meter if any, else CPU package + dram, plus GPUs.
    pub node_watts: Option<f64>,
    pub node_watts_source: Option<&'static str>,
    pub cpu_busy_ratio: Option<f64>,
    pub battery: Option<Battery>,
    pub external_power: Option<bool>,
    pub budget_watts: Option<f64>,
    pub co2_grams_total: Option<f64>,
    pub workloads: Vec<WorkloadSeries>,
    /// Per attributed zone and source: idle, pods, system, unattributed.
    pub books: Vec<Books>,
    /// Power of shared hardware (a blade enclosure), never counted as this node's.
    pub shared: Vec<SharedMeter>,
    pub sources: Vec<SourceStatus>,
    pub attribution: &'static str,
    /// Events the CPU accounting dropped since start (eBPF full map).
    pub accounting_dropped: Option<u64>,
    /// Which source attribution split this interval.
    pub attributed_source: Option<&'static str>,
    /// `(source, labels)` for sources that describe themselves (the estimator's reference).
    pub source_info: Vec<(&'static str, Vec<(&'static str, String)>)>,
    /// The estimator's calibration error, once it has seen a meter.
    pub fit_error_watts: Option<f64>,
    /// The estimator's fit against this node's meter, for the cluster's PowerModels.
    pub calibration: Option<crate::shared_model::CalibrationReport>,
    /// Intervals collected so far.
    pub intervals: u64,
    /// CPUs and RAPL zone paths, read once (for `kepler_node_cpu_info` and the `path` label).
    pub host: Arc<crate::hostinfo::HostFacts>,
}

/// Shared handle to the latest snapshot, written by the loop, read by `/metrics`.
pub type SharedSnapshot = Arc<std::sync::RwLock<Arc<Snapshot>>>;
