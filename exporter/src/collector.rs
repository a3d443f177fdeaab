//! The collection loop: once per interval it reads `/proc/stat` (the busy ratio), every source
//! and the per-process CPU accounting — the I/O — and hands what it read to the pure parts:
//! [`Meters`] (deltas, totals, one meter per zone, node power), [`crate::attribution`] (the split),
//! [`Ledger`] (the books) and [`Workloads`] (per-workload records, expiry). What comes out is a
//! [`Snapshot`]. The rules every figure follows (true or absent, fallback order, baselines after
//! a gap) are the meters' ([`crate::meters`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::accounting::{CpuAccounting, ProcessDelta};
use crate::attribution::{attribute, split_gpu, GpuSplit};
use crate::ledger::Ledger;
use crate::meters::Meters;
use crate::pods::PodDirectory;
use crate::procfs::{read_cpu_times, CpuTimes};
use crate::slot::Slot;
use crate::snapshot::Snapshot;
use crate::source::{Battery, Context, GpuUsage, SharedMeter, Source};
use crate::sysfs::HostRoot;
use crate::workloads::Workloads;

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
    last_cpu: Option<CpuTimes>,
    last_at: Option<Instant>,
    meters: Meters,
    ledger: Ledger,
    workloads: Workloads,
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
        Self {
            host: Arc::new(crate::hostinfo::read(&root)),
            workloads: Workloads::new(pods, cfg.process_detail, cfg.expire_intervals),
            cfg,
            root,
            slots: sources.into_iter().map(Slot::new).collect(),
            accounting,
            last_cpu: None,
            last_at: None,
            meters: Meters::default(),
            ledger: Ledger::default(),
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
        self.meters.select();
        self.meters.accumulate(busy);
        for slot in &mut self.slots {
            slot.settle(self.meters.selects_from(slot.status.name));
        }
        let (node_watts, node_watts_source) = self.meters.node_power();
        self.log_node_source(node_watts_source);
        // Let models calibrate against what real meters measured this interval.
        if let Some(measured) = self.meters.measured_cpu_watts() {
            for slot in &mut self.slots {
                slot.source.observe_measured(&ctx, measured);
            }
        }

        let processes = self.processes();
        self.ledger.begin_interval();
        let attributed_source = self.attribute(&processes, busy, dt);
        self.attribute_gpu(&extras.gpu_usage, &processes, dt);
        self.workloads.expire(self.intervals);

        if let (Some(ci), Some(dt), Some(w)) = (self.cfg.carbon_intensity, dt, node_watts) {
            self.co2_grams += w * dt / 3.6e6 * ci;
        }

        Snapshot {
            node_name: self.cfg.node_name.clone(),
            taken_at: Some(SystemTime::now()),
            finished_at: Some(Instant::now()),
            interval_seconds: dt.unwrap_or(0.0),
            collection_seconds: started.elapsed().as_secs_f64(),
            node: self.meters.series(),
            node_watts,
            node_watts_source,
            cpu_busy_ratio: busy,
            battery: extras.battery,
            external_power: extras.external,
            budget_watts: self.cfg.power_budget_watts.or(extras.hw_budget),
            co2_grams_total: self.cfg.carbon_intensity.map(|_| self.co2_grams),
            workloads: (self.workloads).series(self.intervals, |z, s| self.ledger.in_use(z, s)),
            books: self.ledger.published(),
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
        self.meters.begin_interval();
        let mut extras = Extras::default();
        for slot in &mut self.slots {
            let name = slot.source.name();
            let sampled = slot.source.sample(ctx);
            let Some(sample) = slot.took(sampled) else {
                continue;
            };
            for meter in sample.meters {
                self.meters.read(name, meter, gen, dt, ctx.now);
            }
            if sample.battery.is_some() {
                extras.battery = sample.battery;
            }
            extras.external = extras.external.or(sample.external_power);
            extras.hw_budget = extras.hw_budget.or(sample.budget_watts);
            extras.gpu_usage.extend(sample.gpu_usage);
            extras.shared.extend(sample.shared);
        }
        extras
    }

    /// Says once, with the reasons, when node power moves to another source (a fallback).
    fn log_node_source(&mut self, now: Option<&'static str>) {
        if now == self.node_source {
            return;
        }
        let down = crate::slot::down(&self.slots);
        match now {
            Some(source) => tracing::info!(
                source,
                previous = self.node_source.unwrap_or("none"),
                down = %down,
                "node power now comes from {source}"
            ),
            None => tracing::warn!(
                previous = self.node_source.unwrap_or("none"),
                down = %down,
                "node power unknown: no source reports it"
            ),
        }
        self.node_source = now;
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

    /// Splits the selected meters' energy over the workloads; returns the (first) source split.
    fn attribute(
        &mut self,
        processes: &[ProcessDelta],
        busy: Option<f64>,
        dt: Option<f64>,
    ) -> Option<&'static str> {
        let zones = self.meters.attributable_zones();
        let source = zones.first().map(|(_, s, _)| *s)?;
        let names: Vec<(String, f64)> = zones.iter().map(|(z, _, j)| (z.clone(), *j)).collect();
        let lost = if self.accounting_down.is_some() {
            0.0
        } else {
            self.accounting.unaccounted_cpu_seconds()
        };
        let att = attribute(&names, busy.unwrap_or(0.0), processes, lost);
        let sources: Vec<&'static str> = zones.iter().map(|(_, s, _)| *s).collect();
        self.ledger.keep(&att, &sources, processes);
        let root = &self.root;
        (self.workloads).record(self.intervals, &att, &sources, processes, dt, &|pid| {
            read_exe(root, pid)
        });
        Some(source)
    }

    /// Each GPU's energy-counter delta split by NVML's utilisation samples: the busy share to the
    /// processes (and so their containers and pods) as zone `gpu`, the rest idle.
    fn attribute_gpu(&mut self, usage: &[GpuUsage], processes: &[ProcessDelta], dt: Option<f64>) {
        let gen = self.intervals;
        let gpus = self.meters.selected_gpus();
        if gpus.is_empty() || dt.is_none() {
            return;
        }
        self.workloads.begin_gpu(gen);
        let by_pid: HashMap<u32, &ProcessDelta> = processes.iter().map(|p| (p.pid, p)).collect();
        let root = &self.root;
        let exe = |pid| read_exe(root, pid);
        for (index, source, joules) in gpus {
            let split = match usage.iter().find(|u| u.gpu == index) {
                Some(u) => split_gpu(joules, u, |pid| by_pid.contains_key(&pid)),
                // Nothing known about who used it: unattributed, not idle.
                None => GpuSplit {
                    unattributed: joules,
                    ..GpuSplit::default()
                },
            };
            let in_pod = |pid| by_pid[&pid].workload.pod_uid.is_some();
            self.ledger.keep_gpu(source, &split, in_pod);
            for (pid, j) in split.processes {
                (self.workloads).add_gpu(gen, by_pid[&pid], source, j, dt, &exe);
            }
        }
    }
}

/// `/proc/<pid>/exe` as the kernel resolves it: one `readlink` per process when first seen
/// (the 2 000-process steady state reads none). Empty for kernel threads and where the exporter
/// may not trace the process — Kepler's `exe` label is empty there too.
fn read_exe(root: &HostRoot, pid: u32) -> Arc<str> {
    std::fs::read_link(root.path(format!("/proc/{pid}/exe")))
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
        .unwrap_or_else(|_| Arc::from(""))
}
