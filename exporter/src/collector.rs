//! The collection loop's state: reads every source and the CPU accounting once per interval, turns
//! meter readings into energy deltas and monotonic totals, runs attribution, and keeps per-workload
//! totals until the workload has been gone for `expire_intervals`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::accounting::{CpuAccounting, ProcessDelta};
use crate::attribution::{attribute, Attribution};
use crate::cgroup::Workload;
use crate::pods::PodDirectory;
use crate::procfs::{read_cpu_times, CpuTimes};
use crate::source::{Battery, Context, Domain, MeterValue, Source};
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

/// Preference for the meter that attribution splits: real CPU meters first, then a whole-node
/// meter, then the model.
const ATTRIBUTION_PREFERENCE: [&str; 4] = ["rapl", "hwmon", "redfish", "estimator"];

/// One node-level energy series.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeries {
    pub source: &'static str,
    pub domain: Domain,
    pub zone: String,
    pub joules_total: f64,
    pub watts: f64,
    /// Active/idle split (CPU zones only).
    pub active_joules_total: f64,
    pub idle_joules_total: f64,
    pub active_watts: f64,
    pub idle_watts: f64,
}

/// Kind of workload series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Pod,
    Container,
    Process,
}

/// One workload's energy in one zone.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSeries {
    pub kind: WorkloadKind,
    /// Kepler's label names: `pod_id,pod_name,pod_namespace` / `container_id,container_name` /
    /// `pid,comm`.
    pub labels: Arc<Vec<(&'static str, String)>>,
    pub zone: String,
    pub source: &'static str,
    pub joules_total: f64,
    pub watts: f64,
}

/// State of one source after the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub name: &'static str,
    pub up: bool,
    /// Why it is down.
    pub reason: Option<String>,
}

/// Everything the last interval produced; what `/metrics` and `top` show.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node_name: String,
    pub taken_at: Option<SystemTime>,
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
    pub sources: Vec<SourceStatus>,
    pub attribution: &'static str,
    /// Which source attribution split this interval.
    pub attributed_source: Option<&'static str>,
    /// `(source, labels)` for sources that describe themselves (the estimator's reference).
    pub source_info: Vec<(&'static str, Vec<(&'static str, String)>)>,
    /// The estimator's calibration error, once it has seen a meter.
    pub fit_error_watts: Option<f64>,
    /// Intervals collected so far.
    pub intervals: u64,
}

#[derive(Debug, Default)]
struct MeterState {
    last_source_joules: Option<f64>,
    joules_total: f64,
    active_total: f64,
    idle_total: f64,
    watts: f64,
    active_watts: f64,
    idle_watts: f64,
    delta: f64,
    fresh: bool,
}

struct WorkloadState {
    labels: Arc<Vec<(&'static str, String)>>,
    kind: WorkloadKind,
    /// (zone, joules total, watts now, source). The source is per zone: a pod's CPU zones come
    /// from the attributed meter and its `gpu` zone from NVML.
    zones: Vec<(String, f64, f64, &'static str)>,
    last_seen: u64,
}

impl WorkloadState {
    fn new(kind: WorkloadKind, labels: Arc<Vec<(&'static str, String)>>, gen: u64) -> Self {
        Self {
            labels,
            kind,
            zones: Vec::new(),
            last_seen: gen,
        }
    }

    fn add(
        &mut self,
        gen: u64,
        source: &'static str,
        zones: &[crate::attribution::ZoneSplit],
        attributable: &[f64],
        share: f64,
        dt: Option<f64>,
    ) {
        self.last_seen = gen;
        for (z, a) in zones.iter().zip(attributable) {
            let j = a * share;
            let w = dt.map(|dt| j / dt).unwrap_or(0.0);
            match self.zones.iter_mut().find(|(name, ..)| *name == z.zone) {
                Some(e) => {
                    e.1 += j;
                    e.2 = w;
                    e.3 = source;
                }
                None => self.zones.push((z.zone.clone(), j, w, source)),
            }
        }
    }
}

struct Slot {
    source: Box<dyn Source>,
    status: SourceStatus,
}

impl Slot {
    fn new(source: Box<dyn Source>) -> Self {
        Self {
            status: SourceStatus {
                name: source.name(),
                up: false,
                reason: Some("not read yet".into()),
            },
            source,
        }
    }
}

pub struct Collector {
    cfg: CollectorConfig,
    root: HostRoot,
    slots: Vec<Slot>,
    accounting: Box<dyn CpuAccounting>,
    pods: PodDirectory,
    last_cpu: Option<CpuTimes>,
    last_at: Option<Instant>,
    meters: BTreeMap<(&'static str, Domain, String), MeterState>,
    workloads: HashMap<(WorkloadKind, String), WorkloadState>,
    intervals: u64,
    co2_grams: f64,
    accounting_down: Option<String>,
    rescan: Option<Rescan>,
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
            cfg,
            root,
            slots,
            accounting,
            pods,
            last_cpu: None,
            last_at: None,
            meters: BTreeMap::new(),
            workloads: HashMap::new(),
            intervals: 0,
            co2_grams: 0.0,
            accounting_down: None,
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
        let ctx = Context {
            now: started,
            cpu_busy_ratio: busy,
            cpu_freq_ratio: None,
        };

        for m in self.meters.values_mut() {
            m.fresh = false;
            m.delta = 0.0;
        }
        let mut battery = None;
        let mut gpu_processes = Vec::new();
        let mut external = None;
        let mut hw_budget = None;
        for slot in &mut self.slots {
            let name = slot.source.name();
            match slot.source.sample(&ctx) {
                Ok(sample) => {
                    if !slot.status.up {
                        tracing::info!(source = name, "source up");
                    }
                    slot.status = SourceStatus {
                        name,
                        up: true,
                        reason: None,
                    };
                    for meter in sample.meters {
                        let st = self
                            .meters
                            .entry((name, meter.domain.clone(), meter.zone.clone()))
                            .or_default();
                        // A counter's first reading (or a restarted source's) is only a baseline.
                        let mut baseline = false;
                        let delta = match meter.value {
                            MeterValue::Joules(j) => {
                                let d = match st.last_source_joules {
                                    Some(last) if j >= last => j - last,
                                    _ => {
                                        baseline = true;
                                        0.0
                                    }
                                };
                                st.last_source_joules = Some(j);
                                d
                            }
                            MeterValue::Watts(w) => w.max(0.0) * dt.unwrap_or(0.0),
                        };
                        st.delta = delta;
                        st.joules_total += delta;
                        st.watts = match (meter.value, dt) {
                            (MeterValue::Watts(w), _) => w.max(0.0),
                            (_, Some(dt)) => delta / dt,
                            _ => 0.0,
                        };
                        st.fresh = !baseline;
                        if matches!(meter.domain, Domain::Cpu) {
                            let b = busy.unwrap_or(0.0);
                            st.active_total += delta * b;
                            st.idle_total += delta * (1.0 - b);
                            st.active_watts = st.watts * b;
                            st.idle_watts = st.watts * (1.0 - b);
                        }
                    }
                    if sample.battery.is_some() {
                        battery = sample.battery;
                    }
                    gpu_processes.extend(sample.gpu_processes);
                    external = external.or(sample.external_power);
                    hw_budget = hw_budget.or(sample.budget_watts);
                }
                Err(e) => {
                    let reason = e.to_string();
                    if slot.status.up || slot.status.reason.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(source = name, %reason, "source down");
                    }
                    slot.status = SourceStatus {
                        name,
                        up: false,
                        reason: Some(reason),
                    };
                }
            }
        }

        let (node_watts, node_watts_source) = self.node_watts();
        // Let models calibrate against what real meters measured this interval.
        if let Some(measured) = self.measured_cpu_watts() {
            for slot in &mut self.slots {
                slot.source.observe_measured(&ctx, measured);
            }
        }

        let processes = match self.accounting.collect() {
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
        };
        let attributed_source = self.attribute(&processes, busy, dt);
        self.attribute_gpu(&gpu_processes, &processes, dt);
        self.expire();

        if let (Some(ci), Some(dt), Some(w)) = (self.cfg.carbon_intensity, dt, node_watts) {
            self.co2_grams += w * dt / 3.6e6 * ci;
        }

        Snapshot {
            node_name: self.cfg.node_name.clone(),
            taken_at: Some(SystemTime::now()),
            interval_seconds: dt.unwrap_or(0.0),
            collection_seconds: started.elapsed().as_secs_f64(),
            node: self
                .meters
                .iter()
                .map(|((source, domain, zone), m)| NodeSeries {
                    source,
                    domain: domain.clone(),
                    zone: zone.clone(),
                    joules_total: m.joules_total,
                    watts: if m.fresh { m.watts } else { 0.0 },
                    active_joules_total: m.active_total,
                    idle_joules_total: m.idle_total,
                    active_watts: if m.fresh { m.active_watts } else { 0.0 },
                    idle_watts: if m.fresh { m.idle_watts } else { 0.0 },
                })
                .collect(),
            node_watts,
            node_watts_source,
            cpu_busy_ratio: busy,
            battery,
            external_power: external,
            budget_watts: self.cfg.power_budget_watts.or(hw_budget),
            co2_grams_total: self.cfg.carbon_intensity.map(|_| self.co2_grams),
            workloads: self.workload_series(),
            sources: self.slots.iter().map(|s| s.status.clone()).collect(),
            attribution: self.accounting.name(),
            attributed_source,
            source_info: self
                .slots
                .iter()
                .filter_map(|s| s.source.info().map(|i| (s.source.name(), i)))
                .collect(),
            fit_error_watts: self.slots.iter().find_map(|s| s.source.fit_error_watts()),
            intervals: self.intervals,
        }
    }

    /// Platform meter if any, else CPU package + dram; GPUs added to the CPU sum.
    fn node_watts(&self) -> (Option<f64>, Option<&'static str>) {
        let fresh = || self.meters.iter().filter(|(_, m)| m.fresh);
        if let Some(((source, _, _), m)) = fresh().find(|((_, d, _), _)| *d == Domain::Platform) {
            return (Some(m.watts), Some(source));
        }
        for pref in ATTRIBUTION_PREFERENCE {
            let cpu: Vec<f64> = fresh()
                .filter(|((s, d, z), _)| {
                    *s == pref && *d == Domain::Cpu && (z == "package" || z == "dram")
                })
                .map(|(_, m)| m.watts)
                .collect();
            if !cpu.is_empty() {
                let gpu: f64 = fresh()
                    .filter(|((_, d, _), _)| matches!(d, Domain::Gpu { .. }))
                    .map(|(_, m)| m.watts)
                    .sum();
                return (Some(cpu.iter().sum::<f64>() + gpu), Some(pref));
            }
        }
        (None, None)
    }

    /// CPU package + dram watts from real meters (not the estimator), for calibration.
    fn measured_cpu_watts(&self) -> Option<f64> {
        let w: Vec<f64> = self
            .meters
            .iter()
            .filter(|((s, d, z), m)| {
                m.fresh && *s != "estimator" && *d == Domain::Cpu && (z == "package" || z == "dram")
            })
            .map(|(_, m)| m.watts)
            .collect();
        (!w.is_empty()).then(|| w.iter().sum())
    }

    /// Splits the preferred meter's energy over the workloads; returns that meter's source.
    fn attribute(
        &mut self,
        processes: &[ProcessDelta],
        busy: Option<f64>,
        dt: Option<f64>,
    ) -> Option<&'static str> {
        let pick =
            |domain_ok: &dyn Fn(&Domain) -> bool| -> Option<(&'static str, Vec<(String, f64)>)> {
                for pref in ATTRIBUTION_PREFERENCE {
                    let zones: Vec<(String, f64)> = self
                        .meters
                        .iter()
                        .filter(|((s, d, z), m)| {
                            m.fresh
                                && *s == pref
                                && domain_ok(d)
                                && z != "psys"
                                && z != "core"
                                && z != "uncore"
                        })
                        .map(|((_, _, z), m)| (z.clone(), m.delta))
                        .collect();
                    if !zones.is_empty() {
                        return Some((pref, zones));
                    }
                }
                None
            };
        let (source, zones) =
            pick(&|d| *d == Domain::Cpu).or_else(|| pick(&|d| *d == Domain::Platform))?;
        let att = attribute(&zones, busy.unwrap_or(0.0), processes);
        self.record(&att, processes, source, dt);
        Some(source)
    }

    fn record(
        &mut self,
        att: &Attribution,
        processes: &[ProcessDelta],
        source: &'static str,
        dt: Option<f64>,
    ) {
        let gen = self.intervals;
        let attributable: Vec<f64> = att
            .zones
            .iter()
            .map(|z| z.active - z.unattributed)
            .collect();
        // Group by workload first (processes of one container share one Arc): one map entry per
        // container instead of one allocation per process.
        let mut by_workload: HashMap<*const Workload, (&Arc<Workload>, f64)> = HashMap::new();
        for (pi, p) in processes.iter().enumerate() {
            let share = att.shares[pi];
            by_workload
                .entry(Arc::as_ptr(&p.workload))
                .or_insert((&p.workload, 0.0))
                .1 += share;
            if self.cfg.process_detail {
                let key = (WorkloadKind::Process, p.pid.to_string());
                let st = self.workloads.entry(key).or_insert_with_key(|(kind, pid)| {
                    let labels = workload_labels(&self.pods, *kind, pid, None, &p.comm);
                    WorkloadState::new(*kind, labels, gen)
                });
                st.add(gen, source, &att.zones, &attributable, share, dt);
            }
        }
        let mut owners: HashMap<(WorkloadKind, &str), (f64, Option<&str>)> = HashMap::new();
        for (w, share) in by_workload.values() {
            if let Some(uid) = &w.pod_uid {
                owners
                    .entry((WorkloadKind::Pod, uid.as_str()))
                    .or_insert((0.0, None))
                    .0 += share;
            }
            if let Some(id) = &w.container_id {
                let e = owners
                    .entry((WorkloadKind::Container, id.as_str()))
                    .or_insert((0.0, None));
                e.0 += share;
                e.1 = w.pod_uid.as_deref();
            }
        }
        for ((kind, id), (share, pod)) in owners {
            let labels = || workload_labels(&self.pods, kind, id, pod, "");
            match self.workloads.get_mut(&(kind, id.to_string())) {
                Some(st) => {
                    // Pod names can arrive after the first sighting (the watch lags a new pod).
                    if st
                        .labels
                        .iter()
                        .any(|(k, v)| *k == "pod_name" && v.is_empty())
                        && !self.pods.is_empty()
                    {
                        st.labels = labels();
                    }
                    st.add(gen, source, &att.zones, &attributable, share, dt);
                }
                None => {
                    let mut st = WorkloadState::new(kind, labels(), gen);
                    st.add(gen, source, &att.zones, &attributable, share, dt);
                    self.workloads.insert((kind, id.to_string()), st);
                }
            }
        }
    }

    /// GPU energy per process (NVML's split) summed into the process's container and pod, as
    /// zone `gpu` (rendered as the `*_gpu_*` families).
    fn attribute_gpu(
        &mut self,
        gpu: &[crate::source::GpuProcess],
        processes: &[ProcessDelta],
        dt: Option<f64>,
    ) {
        let Some(dt) = dt else { return };
        if gpu.is_empty() {
            return;
        }
        let gen = self.intervals;
        let by_pid: HashMap<u32, &ProcessDelta> = processes.iter().map(|p| (p.pid, p)).collect();
        let zone = [crate::attribution::ZoneSplit {
            zone: "gpu".into(),
            joules: 0.0,
            idle: 0.0,
            active: 0.0,
            unattributed: 0.0,
        }];
        for g in gpu {
            let joules = g.watts * dt;
            let Some(p) = by_pid.get(&g.pid) else {
                continue;
            };
            let pod = p.workload.pod_uid.as_deref();
            let mut keys = Vec::with_capacity(3);
            if self.cfg.process_detail {
                keys.push((WorkloadKind::Process, p.pid.to_string(), None));
            }
            if let Some(uid) = pod {
                keys.push((WorkloadKind::Pod, uid.to_string(), None));
            }
            if let Some(id) = &p.workload.container_id {
                keys.push((WorkloadKind::Container, id.clone(), pod));
            }
            for (kind, id, pod) in keys {
                let st = self
                    .workloads
                    .entry((kind, id))
                    .or_insert_with_key(|(kind, id)| {
                        let labels = workload_labels(&self.pods, *kind, id, pod, &p.comm);
                        WorkloadState::new(*kind, labels, gen)
                    });
                // `add` splits `attributable × share`: pass the joules as the attributable amount.
                st.add(gen, "gpu", &zone, &[joules], 1.0, Some(dt));
            }
        }
    }

    fn expire(&mut self) {
        let gen = self.intervals;
        let keep = self.cfg.expire_intervals.max(1);
        self.workloads.retain(|_, s| gen - s.last_seen < keep);
        for s in self.workloads.values_mut() {
            if s.last_seen != gen {
                for z in &mut s.zones {
                    z.2 = 0.0;
                }
            }
        }
    }

    fn workload_series(&self) -> Vec<WorkloadSeries> {
        let mut out = Vec::with_capacity(self.workloads.len());
        for st in self.workloads.values() {
            for (zone, j, w, source) in &st.zones {
                out.push(WorkloadSeries {
                    kind: st.kind,
                    labels: st.labels.clone(),
                    zone: zone.clone(),
                    source,
                    joules_total: *j,
                    watts: *w,
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

/// Shared handle to the latest snapshot, written by the loop, read by `/metrics`.
pub type SharedSnapshot = Arc<std::sync::RwLock<Arc<Snapshot>>>;
