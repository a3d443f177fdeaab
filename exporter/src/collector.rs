//! The collection loop's state: reads every source and the CPU accounting once per interval, turns
//! meter readings into energy deltas and monotonic totals, picks one source per zone, runs
//! attribution, and keeps per-workload totals until the workload has been gone for
//! `expire_intervals`.
//!
//! A figure is either true or absent (DESIGN.md "Failure rules"):
//! - A meter that did not produce a usable reading this interval (its source is down, stale, or
//!   reports no power) is not *fresh*; its series are left out of the snapshot, never shown as 0 W.
//! - One source per zone ([`Collector::select`]): RAPL before hwmon for CPU zones (hwmon's
//!   `amd_energy`/`zenergy` socket counters measure the same package as RAPL), hwmon's ACPI power
//!   meter before Redfish for the platform, and the estimator only while no real CPU or platform
//!   meter is fresh — so node power falls back meter by meter to the estimator, and the series
//!   say which source they come from.
//! - A counter that missed an interval (source down, file unreadable) restarts from a new baseline:
//!   its first delta after the gap would re-count energy the fallback already counted.
//! - Energy totals grow only while their meter is the one selected, so a series that comes back
//!   continues where it stopped instead of jumping by what another source already reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::accounting::{CpuAccounting, ProcessDelta};
use crate::attribution::{attribute, split_gpu, Attribution, GpuSplit};
use crate::cgroup::Workload;
use crate::pods::PodDirectory;
use crate::procfs::{read_cpu_times, CpuTimes};
use crate::source::{Battery, Context, Domain, GpuUsage, MeterValue, SharedMeter, Source};
use crate::sysfs::HostRoot;

/// Settings that shape what is collected and kept.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub node_name: String,
    /// Series of workloads gone for this many intervals are dropped.
    pub expire_intervals: u64,
    /// Operator-set budget; wins over a budget the hardware states.
    pub power_budget_watts: Option<f64>,
    /// Grid carbon intensity, g CO2 per kWh, for the CO2 counter.
    pub carbon_intensity: Option<f64>,
    /// Keep per-process series (for `top` and `--process-metrics`); pods and containers always.
    pub process_detail: bool,
}

/// The model; it stands in only while no real meter reports.
pub const ESTIMATOR: &str = "estimator";

/// CPU zones that are parts of `package` (or, for `psys`, the whole SoC): exported, never
/// attributed, so no energy is split twice.
const NESTED_ZONES: [&str; 3] = ["core", "uncore", "psys"];

/// The CPU zones that make up node power where no platform meter reports (NodeWatts in
/// `crds/src/promql.rs` sums the same two). Any other CPU-domain zone — `core`/`uncore`/`psys`,
/// or a board's sub-rail read through hwmon (`vdd_soc`, `vdd_cpu_gpu_cv`) — is shown but never
/// attributed and never stands for the node, so a rail is not counted on top of its input.
fn node_cpu_zone(zone: &str) -> bool {
    zone == "package" || zone == "dram"
}

/// Rank of `source` for a meter of `domain` (lower wins); `None`: not eligible now.
/// `real_meter`: some real CPU or platform meter is fresh this interval.
fn rank(source: &str, domain: &Domain, real_meter: bool) -> Option<usize> {
    match domain {
        Domain::Cpu => match source {
            "rapl" => Some(0),
            "hwmon" => Some(1),
            ESTIMATOR if real_meter => None,
            ESTIMATOR => Some(3),
            _ => Some(2),
        },
        // The ACPI power meter is local and read every interval; a BMC is polled.
        Domain::Platform => match source {
            "hwmon" => Some(0),
            "redfish" => Some(1),
            _ => Some(2),
        },
        Domain::Gpu { .. } => Some(0),
    }
}

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

#[derive(Debug, Default)]
struct MeterState {
    last_source_joules: Option<f64>,
    /// When a polled counter ([`MeterValue::JoulesAt`]) was last measured.
    last_measured: Option<Instant>,
    /// A polled counter has a measured power since its last baseline.
    has_rate: bool,
    /// Interval of the last reading; a counter read in the one before is contiguous.
    last_read: u64,
    delta: f64,
    watts: f64,
    fresh: bool,
    /// Whether it was fresh in the previous interval (else another source may have stood in).
    was_fresh: bool,
    selected: bool,
    joules_total: f64,
    active_total: f64,
    idle_total: f64,
    active_watts: f64,
    idle_watts: f64,
}

impl MeterState {
    /// Takes this interval's reading. A counter's first reading, a counter that went backwards
    /// (a reset), and a counter that was not read in the previous interval are baselines: their
    /// delta would cover time this interval does not (or the fallback already counted).
    fn read(&mut self, value: MeterValue, gen: u64, dt: Option<f64>, now: Instant) {
        let contiguous = self.last_read + 1 == gen;
        self.last_read = gen;
        match value {
            MeterValue::Joules(j) if j.is_finite() => match self.last_source_joules.replace(j) {
                Some(last) if j >= last && contiguous => {
                    self.delta = j - last;
                    self.fresh = dt.is_some();
                    self.watts = dt.map(|dt| self.delta / dt).unwrap_or(0.0);
                }
                _ => {}
            },
            MeterValue::JoulesAt(j, at) if j.is_finite() => {
                // the previous collection's start
                let prev = dt.map(|dt| now - Duration::from_secs_f64(dt));
                self.read_polled(j, at, contiguous, prev)
            }
            MeterValue::Watts(w) if w.is_finite() => {
                self.watts = w.max(0.0);
                self.delta = self.watts * dt.unwrap_or(0.0);
                self.fresh = true;
            }
            _ => {}
        }
    }
}

impl MeterState {
    /// A polled counter: power over the device's own reading times; an interval without a new
    /// reading adds nothing (the next brings it) and keeps the last measured power. After an
    /// interval this meter did not stand for (another source may have), a new reading counts
    /// only what it measured after the previous collection (`since`), at its measured power.
    fn read_polled(&mut self, j: f64, at: Instant, contiguous: bool, since: Option<Instant>) {
        let prev = self.last_source_joules.replace(j);
        let prev_at = self.last_measured.replace(at);
        let (Some(last), Some(last_at)) = (prev, prev_at) else {
            self.has_rate = false;
            return;
        };
        if j < last || !contiguous {
            self.has_rate = false;
            return;
        }
        let span = at.saturating_duration_since(last_at).as_secs_f64();
        if span > 0.0 {
            self.watts = (j - last) / span;
            self.delta = match since {
                Some(_) if self.was_fresh => j - last,
                Some(since) => {
                    self.watts
                        * at.saturating_duration_since(since.max(last_at))
                            .as_secs_f64()
                }
                None => 0.0,
            };
            self.has_rate = true;
        }
        self.fresh = self.has_rate && since.is_some();
    }
}

/// One zone of one workload.
#[derive(Debug, Clone)]
struct ZoneTotal {
    zone: String,
    source: &'static str,
    joules: f64,
    watts: f64,
    /// Interval in which `watts` was last set.
    updated: u64,
}

struct WorkloadState {
    labels: Arc<Vec<(&'static str, String)>>,
    kind: WorkloadKind,
    zones: Vec<ZoneTotal>,
    last_seen: u64,
    cgroup: Option<Arc<Workload>>,
    exe: Option<Arc<str>>,
}

impl WorkloadState {
    fn new(kind: WorkloadKind, labels: Arc<Vec<(&'static str, String)>>, gen: u64) -> Self {
        Self {
            labels,
            kind,
            zones: Vec::new(),
            last_seen: gen,
            cgroup: None,
            exe: None,
        }
    }

    /// Remembers a container's cgroup facts (its runtime) the first time it is charged.
    fn note_cgroup(&mut self, w: &Arc<Workload>) {
        if self.kind == WorkloadKind::Container && self.cgroup.is_none() {
            self.cgroup = Some(w.clone());
        }
    }

    /// Adds `joules` to (zone, source); watts of several additions in one interval add up (one
    /// process on two GPUs).
    fn add(&mut self, gen: u64, zone: &str, source: &'static str, joules: f64, dt: Option<f64>) {
        self.last_seen = gen;
        let i = match self
            .zones
            .iter()
            .position(|z| z.zone == zone && z.source == source)
        {
            Some(i) => i,
            None => {
                self.zones.push(ZoneTotal {
                    zone: zone.to_string(),
                    source,
                    joules: 0.0,
                    watts: 0.0,
                    updated: 0,
                });
                self.zones.len() - 1
            }
        };
        let z = &mut self.zones[i];
        if z.updated != gen {
            z.watts = 0.0;
            z.updated = gen;
        }
        z.joules += joules;
        z.watts += dt.map(|dt| joules / dt).unwrap_or(0.0);
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A pod or container whose names the pod watch did not know when it was first seen.
    fn unnamed(&self) -> bool {
        match self.kind {
            WorkloadKind::Pod => self.label("pod_name") == Some(""),
            WorkloadKind::Container => {
                self.label("container_name") == Some("") || self.label("pod_name") == Some("")
            }
            WorkloadKind::Process => false,
        }
    }
}

struct Slot {
    source: Box<dyn Source>,
    status: SourceStatus,
    /// The source handed over something besides meters this interval (battery, budget, shared).
    published: bool,
}

impl Slot {
    fn new(source: Box<dyn Source>) -> Self {
        Self {
            status: SourceStatus {
                name: source.name(),
                up: false,
                state: "error",
                reason: Some("not read yet".into()),
                detail: None,
            },
            source,
            published: false,
        }
    }
}

/// What the sources handed over this interval besides meters.
#[derive(Default)]
struct Extras {
    battery: Option<Battery>,
    external: Option<bool>,
    hw_budget: Option<f64>,
    gpu_usage: Vec<GpuUsage>,
    shared: Vec<SharedMeter>,
}

pub struct Collector {
    cfg: CollectorConfig,
    root: HostRoot,
    slots: Vec<Slot>,
    accounting: Box<dyn CpuAccounting>,
    pods: PodDirectory,
    /// Pod directory generation when labels were last refreshed.
    pods_generation: u64,
    last_cpu: Option<CpuTimes>,
    last_at: Option<Instant>,
    meters: BTreeMap<(&'static str, Domain, String), MeterState>,
    books: BTreeMap<(String, &'static str), Books>,
    /// (zone, source) pairs attributed this interval: only their books and workload series are
    /// published (a source not in use has all its series withdrawn; they resume where they
    /// stopped when it is back).
    attributed: Vec<(String, &'static str)>,
    workloads: HashMap<(WorkloadKind, String), WorkloadState>,
    intervals: u64,
    co2_grams: f64,
    accounting_down: Option<String>,
    node_source: Option<&'static str>,
    rescan: Option<Rescan>,
    host: Arc<crate::hostinfo::HostFacts>,
}

/// When to look again for local sources that were absent.
struct Rescan {
    every: Duration,
    last: Instant,
}

impl Collector {
    pub fn new(
        cfg: CollectorConfig,
        root: HostRoot,
        sources: Vec<Box<dyn Source>>,
        accounting: Box<dyn CpuAccounting>,
        pods: PodDirectory,
    ) -> Self {
        let slots = sources.into_iter().map(Slot::new).collect();
        Self {
            host: Arc::new(crate::hostinfo::read(&root)),
            cfg,
            root,
            slots,
            accounting,
            pods_generation: pods.generation(),
            pods,
            last_cpu: None,
            last_at: None,
            meters: BTreeMap::new(),
            books: BTreeMap::new(),
            attributed: Vec::new(),
            workloads: HashMap::new(),
            intervals: 0,
            co2_grams: 0.0,
            accounting_down: None,
            node_source: None,
            rescan: None,
        }
    }

    /// Looks again every `every` (zero: never) for local sysfs sources of a kind not yet read —
    /// a battery, hwmon or RAPL driver that loaded after the exporter started (a DaemonSet often
    /// starts before a module does). Without it such a node would report no battery until restart.
    pub fn rescan_sources(mut self, every: Duration) -> Self {
        self.rescan = (!every.is_zero()).then(|| Rescan {
            every,
            last: Instant::now(),
        });
        self
    }

    /// Adds the sources of kinds not read yet that discovery finds now. Discovery warnings were
    /// logged at startup; repeating them every rescan would only be noise.
    fn add_new_sources(&mut self) {
        let have = self.source_names();
        let (found, _) = crate::sources::discover_local_except(&self.root, &have);
        for source in found {
            tracing::info!(
                source = source.name(),
                "energy source appeared; reading it from now on"
            );
            self.slots.push(Slot::new(source));
        }
    }

    pub fn source_names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.source.name()).collect()
    }

    /// Runs one interval.
    pub fn collect(&mut self) -> Snapshot {
        let started = Instant::now();
        let dt = self
            .last_at
            .map(|t| started.duration_since(t).as_secs_f64())
            .filter(|d| *d > 0.0);
        self.last_at = Some(started);
        self.intervals += 1;
        if let Some(r) = self.rescan.as_mut() {
            if started.duration_since(r.last) >= r.every {
                r.last = started;
                self.add_new_sources();
            }
        }
        let busy = self.busy_ratio();
        let ctx = Context {
            now: started,
            cpu_busy_ratio: busy,
            cpu_freq_ratio: None,
        };

        let extras = self.read_sources(&ctx, dt);
        self.select();
        self.accumulate(busy);
        self.update_states();
        let (node_watts, node_watts_source) = self.node_power();
        self.log_node_source(node_watts_source);
        // Let models calibrate against what real meters measured this interval.
        if let Some(measured) = self.measured_cpu_watts() {
            for slot in &mut self.slots {
                slot.source.observe_measured(&ctx, measured);
            }
        }

        let processes = self.processes();
        self.attributed.clear();
        let attributed_source = self.attribute(&processes, busy, dt);
        self.attribute_gpu(&extras.gpu_usage, &processes, dt);
        self.expire();

        if let (Some(ci), Some(dt), Some(w)) = (self.cfg.carbon_intensity, dt, node_watts) {
            self.co2_grams += w * dt / 3.6e6 * ci;
        }

        Snapshot {
            node_name: self.cfg.node_name.clone(),
            taken_at: Some(SystemTime::now()),
            finished_at: Some(Instant::now()),
            interval_seconds: dt.unwrap_or(0.0),
            collection_seconds: started.elapsed().as_secs_f64(),
            node: self.node_series(),
            node_watts,
            node_watts_source,
            cpu_busy_ratio: busy,
            battery: extras.battery,
            external_power: extras.external,
            budget_watts: self.cfg.power_budget_watts.or(extras.hw_budget),
            co2_grams_total: self.cfg.carbon_intensity.map(|_| self.co2_grams),
            workloads: self.workload_series(),
            books: self
                .books
                .values()
                .filter(|b| self.in_use(&b.zone, b.source))
                .cloned()
                .collect(),
            shared: extras.shared,
            sources: self.slots.iter().map(|s| s.status.clone()).collect(),
            attribution: self.accounting.name(),
            accounting_dropped: self.accounting.dropped_total(),
            attributed_source,
            source_info: self
                .slots
                .iter()
                .filter_map(|s| s.source.info().map(|i| (s.source.name(), i)))
                .collect(),
            fit_error_watts: self.slots.iter().find_map(|s| s.source.fit_error_watts()),
            calibration: self.slots.iter().find_map(|s| s.source.calibration()),
            intervals: self.intervals,
            host: self.host.clone(),
        }
    }

    /// The node's busy share since the last interval, from `/proc/stat`.
    fn busy_ratio(&mut self) -> Option<f64> {
        let cpu_now = read_cpu_times(&self.root)
            .map_err(|e| tracing::warn!(error = %e, "cannot read /proc/stat; no idle/active split"))
            .ok();
        let busy = match (cpu_now, self.last_cpu) {
            (Some(now), Some(before)) => now.busy_ratio_since(&before),
            _ => None,
        };
        if cpu_now.is_some() {
            self.last_cpu = cpu_now;
        }
        busy
    }

    /// Samples every source once, updating meters and source statuses.
    fn read_sources(&mut self, ctx: &Context, dt: Option<f64>) -> Extras {
        let gen = self.intervals;
        for m in self.meters.values_mut() {
            m.was_fresh = m.fresh;
            m.fresh = false;
            m.delta = 0.0;
        }
        let mut extras = Extras::default();
        for slot in &mut self.slots {
            let name = slot.source.name();
            slot.published = false;
            match slot.source.sample(ctx) {
                Ok(sample) => {
                    if !slot.status.up {
                        tracing::info!(source = name, "source up");
                    }
                    slot.status.up = true;
                    slot.status.reason = None;
                    if sample.detail.is_some() {
                        slot.status.detail = sample.detail;
                    }
                    for meter in sample.meters {
                        self.meters
                            .entry((name, meter.domain, meter.zone))
                            .or_default()
                            .read(meter.value, gen, dt, ctx.now);
                    }
                    slot.published = sample.battery.is_some()
                        || sample.external_power.is_some()
                        || sample.budget_watts.is_some()
                        || !sample.shared.is_empty();
                    if sample.battery.is_some() {
                        extras.battery = sample.battery;
                    }
                    extras.external = extras.external.or(sample.external_power);
                    extras.hw_budget = extras.hw_budget.or(sample.budget_watts);
                    extras.gpu_usage.extend(sample.gpu_usage);
                    extras.shared.extend(sample.shared);
                }
                Err(e) => {
                    let reason = e.to_string();
                    if slot.status.up || slot.status.reason.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(source = name, %reason, "source down; its series are withdrawn");
                    }
                    slot.status.up = false;
                    slot.status.state = e.state();
                    slot.status.reason = Some(reason);
                }
            }
        }
        extras
    }

    /// Picks one fresh meter per zone (see the module docs and [`rank`]).
    fn select(&mut self) {
        // A sub-rail alone (hwmon zones of a board whose input is unknown or unreadable) does
        // not measure the node: the estimator still stands in for it.
        let real_meter = self.meters.iter().any(|((s, d, z), m)| {
            m.fresh
                && *s != ESTIMATOR
                && (*d == Domain::Platform || (*d == Domain::Cpu && node_cpu_zone(z)))
        });
        let mut best: HashMap<(&Domain, &str), (usize, &'static str)> = HashMap::new();
        for ((source, domain, zone), m) in &self.meters {
            let Some(r) = m.fresh.then(|| rank(source, domain, real_meter)).flatten() else {
                continue;
            };
            let e = best.entry((domain, zone.as_str())).or_insert((r, source));
            if r < e.0 {
                *e = (r, source);
            }
        }
        let winners: Vec<(&'static str, Domain, String)> = best
            .into_iter()
            .map(|((d, z), (_, s))| (s, d.clone(), z.to_string()))
            .collect();
        for m in self.meters.values_mut() {
            m.selected = false;
        }
        for key in winners {
            if let Some(m) = self.meters.get_mut(&key) {
                m.selected = true;
            }
        }
    }

    /// Adds the selected meters' deltas to their totals, split active/idle by the busy ratio.
    fn accumulate(&mut self, busy: Option<f64>) {
        let b = busy.unwrap_or(0.0);
        for ((_, domain, _), m) in self.meters.iter_mut().filter(|(_, m)| m.selected) {
            m.joules_total += m.delta;
            if !matches!(domain, Domain::Gpu { .. }) {
                m.active_total += m.delta * b;
                m.idle_total += m.delta * (1.0 - b);
                m.active_watts = m.watts * b;
                m.idle_watts = m.watts * (1.0 - b);
            }
        }
    }

    /// `in_use` / `standby` for the sources that are up.
    fn update_states(&mut self) {
        for slot in &mut self.slots {
            if !slot.status.up {
                continue;
            }
            let name = slot.status.name;
            let in_use = slot.published
                || self
                    .meters
                    .iter()
                    .any(|((s, _, _), m)| *s == name && m.selected);
            slot.status.state = if in_use { "in_use" } else { "standby" };
        }
    }

    /// Platform meter if selected, else CPU package + dram, plus GPUs.
    fn node_power(&self) -> (Option<f64>, Option<&'static str>) {
        let selected = || self.meters.iter().filter(|(_, m)| m.selected);
        if let Some(((source, _, _), m)) = selected().find(|((_, d, _), _)| *d == Domain::Platform)
        {
            return (Some(m.watts), Some(source));
        }
        let cpu: Vec<(&'static str, f64)> = selected()
            .filter(|((_, d, z), _)| *d == Domain::Cpu && (z == "package" || z == "dram"))
            .map(|((s, _, _), m)| (*s, m.watts))
            .collect();
        let Some(source) = cpu.first().map(|(s, _)| *s) else {
            return (None, None);
        };
        let gpu: f64 = selected()
            .filter(|((_, d, _), _)| matches!(d, Domain::Gpu { .. }))
            .map(|(_, m)| m.watts)
            .sum();
        (
            Some(cpu.iter().map(|(_, w)| w).sum::<f64>() + gpu),
            Some(source),
        )
    }

    /// Says once, with the reasons, when node power moves to another source (a fallback).
    fn log_node_source(&mut self, now: Option<&'static str>) {
        if now == self.node_source {
            return;
        }
        let down: Vec<String> = self
            .slots
            .iter()
            .filter(|s| !s.status.up)
            .map(|s| {
                format!(
                    "{} ({})",
                    s.status.name,
                    s.status.reason.as_deref().unwrap_or("down")
                )
            })
            .collect();
        match now {
            Some(source) => tracing::info!(
                source,
                previous = self.node_source.unwrap_or("none"),
                down = %down.join("; "),
                "node power now comes from {source}"
            ),
            None => tracing::warn!(
                previous = self.node_source.unwrap_or("none"),
                down = %down.join("; "),
                "node power unknown: no source reports it"
            ),
        }
        self.node_source = now;
    }

    /// CPU package + dram watts from selected real meters (not the estimator), for calibration.
    fn measured_cpu_watts(&self) -> Option<f64> {
        let w: Vec<f64> = self
            .meters
            .iter()
            .filter(|((s, d, z), m)| {
                m.selected
                    && *s != ESTIMATOR
                    && *d == Domain::Cpu
                    && (z == "package" || z == "dram")
            })
            .map(|(_, m)| m.watts)
            .collect();
        (!w.is_empty()).then(|| w.iter().sum())
    }

    /// This interval's per-process CPU time; empty (all energy unattributed) when it failed.
    fn processes(&mut self) -> Vec<ProcessDelta> {
        match self.accounting.collect() {
            Ok(p) => {
                self.accounting_down = None;
                p
            }
            Err(e) => {
                let reason = e.to_string();
                if self.accounting_down.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(%reason, accounting = self.accounting.name(), "per-process CPU accounting failed; no workload attribution this interval");
                }
                self.accounting_down = Some(reason);
                Vec::new()
            }
        }
    }

    /// The zones attribution splits: selected CPU zones (not the nested ones), else the selected
    /// platform meter. `(zone, source, joules)`.
    fn attributable_zones(&self) -> Vec<(String, &'static str, f64)> {
        let pick = |want: &dyn Fn(&Domain, &str) -> bool| -> Vec<(String, &'static str, f64)> {
            self.meters
                .iter()
                .filter(|((_, d, z), m)| m.selected && want(d, z))
                .map(|((s, _, z), m)| (z.clone(), *s, m.delta))
                .collect()
        };
        let cpu = pick(&|d, z| *d == Domain::Cpu && !NESTED_ZONES.contains(&z) && node_cpu_zone(z));
        if cpu.is_empty() {
            pick(&|d, _| *d == Domain::Platform)
        } else {
            cpu
        }
    }

    /// Splits the selected meters' energy over the workloads; returns the (first) source split.
    fn attribute(
        &mut self,
        processes: &[ProcessDelta],
        busy: Option<f64>,
        dt: Option<f64>,
    ) -> Option<&'static str> {
        let zones = self.attributable_zones();
        let source = zones.first().map(|(_, s, _)| *s)?;
        let names: Vec<(String, f64)> = zones.iter().map(|(z, _, j)| (z.clone(), *j)).collect();
        let lost = if self.accounting_down.is_some() {
            0.0
        } else {
            self.accounting.unaccounted_cpu_seconds()
        };
        let att = attribute(&names, busy.unwrap_or(0.0), processes, lost);
        let sources: Vec<&'static str> = zones.iter().map(|(_, s, _)| *s).collect();
        self.attributed
            .extend(zones.iter().map(|(z, s, _)| (z.clone(), *s)));
        self.keep_books(&att, &sources, processes);
        self.record(&att, &sources, processes, dt);
        Some(source)
    }

    /// Adds one interval's split to the node-level books.
    fn keep_books(
        &mut self,
        att: &Attribution,
        sources: &[&'static str],
        processes: &[ProcessDelta],
    ) {
        let (mut pod_share, mut system_share) = (0.0, 0.0);
        for (p, share) in processes.iter().zip(&att.shares) {
            if p.workload.pod_uid.is_some() {
                pod_share += share;
            } else {
                system_share += share;
            }
        }
        for (z, source) in att.zones.iter().zip(sources) {
            let given = z.active - z.unattributed;
            let b = self.book(&z.zone, source);
            b.idle += z.idle;
            b.unattributed += z.unattributed;
            b.pods += given * pod_share;
            b.system += given * system_share;
        }
    }

    fn book(&mut self, zone: &str, source: &'static str) -> &mut Books {
        self.books
            .entry((zone.to_string(), source))
            .or_insert_with(|| Books {
                zone: zone.to_string(),
                source,
                ..Books::default()
            })
    }

    /// Whether pod names should be looked up again: the pod directory changed since last time.
    fn pods_changed(&mut self) -> bool {
        let g = self.pods.generation();
        let changed = g != self.pods_generation;
        self.pods_generation = g;
        changed
    }

    fn record(
        &mut self,
        att: &Attribution,
        sources: &[&'static str],
        processes: &[ProcessDelta],
        dt: Option<f64>,
    ) {
        let gen = self.intervals;
        let attributable: Vec<(&str, &'static str, f64)> = att
            .zones
            .iter()
            .zip(sources)
            .map(|(z, s)| (z.zone.as_str(), *s, z.active - z.unattributed))
            .collect();
        let add = |st: &mut WorkloadState, share: f64| {
            for (zone, source, j) in &attributable {
                st.add(gen, zone, source, j * share, dt);
            }
        };
        // Group by workload first (processes of one container share one Arc): one map entry per
        // container instead of one allocation per process.
        let mut by_workload: HashMap<*const Workload, (&Arc<Workload>, f64)> = HashMap::new();
        for (p, share) in processes.iter().zip(&att.shares) {
            by_workload
                .entry(Arc::as_ptr(&p.workload))
                .or_insert((&p.workload, 0.0))
                .1 += share;
            if self.cfg.process_detail {
                let st = self.process_state(p, gen);
                add(st, *share);
            }
        }
        // (kind, id) → (share, its pod, a cgroup of it)
        let mut owners: HashMap<(WorkloadKind, &str), Owner> = HashMap::new();
        for (w, share) in by_workload.values() {
            if let Some(uid) = &w.pod_uid {
                owners
                    .entry((WorkloadKind::Pod, uid.as_str()))
                    .or_insert((0.0, None, w))
                    .0 += share;
            }
            if let Some(id) = &w.container_id {
                let e = owners
                    .entry((WorkloadKind::Container, id.as_str()))
                    .or_insert((0.0, None, w));
                e.0 += share;
                e.1 = w.pod_uid.as_deref();
            }
        }
        let relabel = self.pods_changed();
        for ((kind, id), (share, pod, w)) in owners {
            let st = self.owner_state(kind, id, pod, relabel, gen);
            st.note_cgroup(w);
            add(st, share);
        }
    }

    /// The process's state; a process that exec'd another program (new `comm`) starts a new one.
    fn process_state(&mut self, p: &ProcessDelta, gen: u64) -> &mut WorkloadState {
        let key = (WorkloadKind::Process, p.pid.to_string());
        let (pods, root) = (&self.pods, &self.root);
        let fresh = || {
            let labels = workload_labels(pods, WorkloadKind::Process, &key.1, None, &p.comm);
            let mut st = WorkloadState::new(WorkloadKind::Process, labels, gen);
            st.cgroup = Some(p.workload.clone());
            st.exe = Some(read_exe(root, p.pid));
            st
        };
        match self.workloads.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if e.get().label("comm") != Some(&*p.comm) {
                    e.insert(fresh());
                }
                e.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(e) => e.insert(fresh()),
        }
    }

    /// A pod's or container's state; names the pod watch learnt since it was first seen are
    /// filled in (a container started before its pod's status listed it).
    fn owner_state(
        &mut self,
        kind: WorkloadKind,
        id: &str,
        pod: Option<&str>,
        relabel: bool,
        gen: u64,
    ) -> &mut WorkloadState {
        let pods = &self.pods;
        let st = self
            .workloads
            .entry((kind, id.to_string()))
            .or_insert_with(|| {
                WorkloadState::new(kind, workload_labels(pods, kind, id, pod, ""), gen)
            });
        if relabel && st.unnamed() {
            st.labels = workload_labels(pods, kind, id, pod, "");
        }
        st
    }

    /// Each GPU's energy-counter delta split by NVML's utilisation samples: the busy share to the
    /// processes (and so their containers and pods) as zone `gpu`, the rest idle.
    fn attribute_gpu(&mut self, usage: &[GpuUsage], processes: &[ProcessDelta], dt: Option<f64>) {
        let gen = self.intervals;
        let gpus: Vec<(u32, &'static str, f64)> = self
            .meters
            .iter()
            .filter(|(_, m)| m.selected)
            .filter_map(|((s, d, _), m)| match d {
                Domain::Gpu { index, .. } => Some((*index, *s, m.delta)),
                _ => None,
            })
            .collect();
        if gpus.is_empty() || dt.is_none() {
            return;
        }
        // This interval's GPU power of every workload starts at 0 W: NVML lists only the
        // processes that used a GPU.
        for st in self.workloads.values_mut() {
            for z in st.zones.iter_mut().filter(|z| z.zone == "gpu") {
                z.watts = 0.0;
                z.updated = gen;
            }
        }
        let by_pid: HashMap<u32, &ProcessDelta> = processes.iter().map(|p| (p.pid, p)).collect();
        for (index, source, joules) in gpus {
            if !self.in_use("gpu", source) {
                self.attributed.push(("gpu".into(), source));
            }
            let split = match usage.iter().find(|u| u.gpu == index) {
                Some(u) => split_gpu(joules, u, |pid| by_pid.contains_key(&pid)),
                // Nothing known about who used it: unattributed, not idle.
                None => GpuSplit {
                    unattributed: joules,
                    ..GpuSplit::default()
                },
            };
            let b = self.book("gpu", source);
            b.idle += split.idle;
            b.unattributed += split.unattributed;
            for (pid, j) in split.processes {
                let p = by_pid[&pid];
                let b = self.book("gpu", source);
                if p.workload.pod_uid.is_some() {
                    b.pods += j;
                } else {
                    b.system += j;
                }
                self.add_gpu_joules(p, source, j, dt, gen);
            }
        }
    }

    /// Adds one process's GPU joules to its process, container and pod series.
    fn add_gpu_joules(
        &mut self,
        p: &ProcessDelta,
        source: &'static str,
        j: f64,
        dt: Option<f64>,
        gen: u64,
    ) {
        if self.cfg.process_detail {
            self.process_state(p, gen).add(gen, "gpu", source, j, dt);
        }
        let pod = p.workload.pod_uid.as_deref();
        if let Some(uid) = pod {
            self.owner_state(WorkloadKind::Pod, uid, None, false, gen)
                .add(gen, "gpu", source, j, dt);
        }
        if let Some(id) = &p.workload.container_id {
            let st = self.owner_state(WorkloadKind::Container, id, pod, false, gen);
            st.note_cgroup(&p.workload);
            st.add(gen, "gpu", source, j, dt);
        }
    }

    fn expire(&mut self) {
        let gen = self.intervals;
        let keep = self.cfg.expire_intervals.max(1);
        self.workloads.retain(|_, s| gen - s.last_seen < keep);
    }

    fn node_series(&self) -> Vec<NodeSeries> {
        self.meters
            .iter()
            .filter(|(_, m)| m.selected)
            .map(|((source, domain, zone), m)| NodeSeries {
                source,
                domain: domain.clone(),
                zone: zone.clone(),
                joules_total: m.joules_total,
                watts: m.watts,
                active_joules_total: m.active_total,
                idle_joules_total: m.idle_total,
                active_watts: m.active_watts,
                idle_watts: m.idle_watts,
            })
            .collect()
    }

    fn in_use(&self, zone: &str, source: &str) -> bool {
        self.attributed
            .iter()
            .any(|(z, s)| z == zone && *s == source)
    }

    fn workload_series(&self) -> Vec<WorkloadSeries> {
        let gen = self.intervals;
        let mut out = Vec::with_capacity(self.workloads.len());
        for st in self.workloads.values() {
            for z in st.zones.iter().filter(|z| self.in_use(&z.zone, z.source)) {
                out.push(WorkloadSeries {
                    kind: st.kind,
                    labels: st.labels.clone(),
                    zone: z.zone.clone(),
                    source: z.source,
                    joules_total: z.joules,
                    watts: (z.updated == gen).then_some(z.watts),
                    running: st.last_seen == gen,
                    cgroup: st.cgroup.clone(),
                    exe: st.exe.clone(),
                });
            }
        }
        out
    }
}

/// Labels of one workload's series (Kepler's names), the same whichever zone (CPU, GPU) created it:
/// a pod by its UID, a container by its ID and its pod's UID, a process by pid and comm. Names come
/// from the pod directory and stay empty until the pod watch knows the pod.
fn workload_labels(
    pods: &PodDirectory,
    kind: WorkloadKind,
    id: &str,
    pod: Option<&str>,
    comm: &str,
) -> Arc<Vec<(&'static str, String)>> {
    Arc::new(match kind {
        WorkloadKind::Pod => {
            let info = pods.get(id).unwrap_or_default();
            vec![
                ("pod_id", id.to_string()),
                ("pod_name", info.name),
                ("pod_namespace", info.namespace),
            ]
        }
        WorkloadKind::Container => {
            let info = pod.and_then(|p| pods.get(p)).unwrap_or_default();
            vec![
                ("container_id", id.to_string()),
                (
                    "container_name",
                    info.containers.get(id).cloned().unwrap_or_default(),
                ),
                ("pod_id", pod.unwrap_or_default().to_string()),
                ("pod_name", info.name),
                ("pod_namespace", info.namespace),
            ]
        }
        WorkloadKind::Process => vec![("pid", id.to_string()), ("comm", comm.to_string())],
    })
}

/// One pod's or container's share this interval, its pod's UID, and one of its cgroups.
type Owner<'a> = (f64, Option<&'a str>, &'a Arc<Workload>);

/// `/proc/<pid>/exe` as the kernel resolves it: one `readlink` per process when first seen
/// (the 2 000-process steady state reads none). Empty for kernel threads and where the exporter
/// may not trace the process — Kepler's `exe` label is empty there too.
fn read_exe(root: &HostRoot, pid: u32) -> Arc<str> {
    std::fs::read_link(root.path(format!("/proc/{pid}/exe")))
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
        .unwrap_or_else(|_| Arc::from(""))
}

/// Shared handle to the latest snapshot, written by the loop, read by `/metrics`.
pub type SharedSnapshot = Arc<std::sync::RwLock<Arc<Snapshot>>>;
