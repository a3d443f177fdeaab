//! Renders the latest [`Snapshot`] as Prometheus metrics (DESIGN.md "Exporter metrics").
//!
//! A custom `prometheus-client` collector encodes straight from the snapshot on each scrape, so
//! series of expired workloads disappear without unregistering anything, and a scrape never waits
//! for a collection.

use std::sync::Arc;

use edgewatt_crds::metrics::{base, MetricNames};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::snapshot::{NodeSeries, SharedSnapshot, Snapshot, WorkloadKind, WorkloadSeries};
use crate::source::Domain;

mod kepler;

/// What the encoder needs besides the snapshot.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub names: MetricNames,
    /// Process-level series (off by default: one pair of series per process is a lot).
    pub process_metrics: bool,
    pub version: &'static str,
}

#[derive(Debug)]
struct SnapshotCollector {
    cfg: MetricsConfig,
    snapshot: SharedSnapshot,
}

type Labels = Vec<(&'static str, String)>;
/// name, help, is counter, series
type Family = (String, String, bool, Vec<(Labels, f64)>);

/// A label value written the way both exposition formats require: `\`, `"` and line feed
/// escaped as `\\`, `\"` and `\n`; every other character, control characters included, as is
/// (prometheus/docs `content/docs/instrumenting/exposition_formats.md`: "label_value can be any
/// sequence of UTF-8 characters, but the backslash, the double-quote, and the line-feed characters
/// have to be escaped"; OpenMetrics 1.0 ABNF: `escaped-char = normal-char / BS ("n" / DQUOTE /
/// BS)`, `normal-char` = any code point but LF, `"` and `\`). prometheus-client 0.24 writes
/// label values verbatim, so a process named `a"b` would otherwise break the whole scrape.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let mut rest = self.0;
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

/// Encodes one family: counters get `_total` from the encoder, so it is stripped here.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counter: bool,
    series: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let (name, ty) = if counter {
        (
            name.strip_suffix("_total").unwrap_or(name),
            MetricType::Counter,
        )
    } else {
        (name, MetricType::Gauge)
    };
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        let escaped: Vec<(&str, Escaped)> = labels.iter().map(|(k, v)| (*k, Escaped(v))).collect();
        let fam = m.encode_family(&escaped)?;
        if counter {
            ConstCounter::new(*v).encode(fam)?;
        } else {
            ConstGauge::new(*v).encode(fam)?;
        }
    }
    Ok(())
}

impl SnapshotCollector {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// The families of one scrape, in first-seen order; every series gets `node_name` first.
struct Families<'a> {
    names: &'a MetricNames,
    node: &'a str,
    groups: Vec<Family>,
}

impl Families<'_> {
    fn push(&mut self, base: &str, help: &str, counter: bool, mut labels: Labels, v: f64) {
        let name = self.names.name(base);
        labels.insert(0, ("node_name", self.node.to_string()));
        match self.groups.iter_mut().find(|g| g.0 == name) {
            Some(g) => g.3.push((labels, v)),
            None => self
                .groups
                .push((name, help.to_string(), counter, vec![(labels, v)])),
        }
    }
}

/// Node energy per domain (only the sources selected this interval are in the snapshot).
fn node_families(f: &mut Families, s: &Snapshot) {
    for ns in &s.node {
        let src = ns.source.to_string();
        match &ns.domain {
            Domain::Cpu => {
                let l = vec![("zone", ns.zone.clone()), ("source", src)];
                node_cpu_families(f, ns, l, &CPU_HELP);
            }
            Domain::Platform => node_platform_families(f, ns),
            Domain::Gpu { index, uuid } => node_gpu_families(f, ns, *index, uuid),
        }
    }
}

/// Help of the six CPU families, in [`node_cpu_families`]' order.
const CPU_HELP: [&str; 6] = [
    "CPU energy by RAPL zone, monotonic across counter wrap-around",
    "CPU power over the last interval",
    "CPU energy while busy (busy share of /proc/stat)",
    "CPU energy while idle",
    "CPU power while busy",
    "CPU power while idle",
];

/// The six CPU families of one zone (total, active, idle × joules, watts) with labels `l`.
fn node_cpu_families(f: &mut Families, ns: &NodeSeries, l: Labels, help: &[&str; 6]) {
    let series = [
        (base::NODE_CPU_JOULES, true, ns.joules_total),
        (base::NODE_CPU_WATTS, false, ns.watts),
        (base::NODE_CPU_ACTIVE_JOULES, true, ns.active_joules_total),
        (base::NODE_CPU_IDLE_JOULES, true, ns.idle_joules_total),
        (base::NODE_CPU_ACTIVE_WATTS, false, ns.active_watts),
        (base::NODE_CPU_IDLE_WATTS, false, ns.idle_watts),
    ];
    for ((name, counter, v), help) in series.into_iter().zip(help) {
        f.push(name, help, counter, l.clone(), v);
    }
}

/// The whole-node meter's families, `{source}`.
fn node_platform_families(f: &mut Families, ns: &NodeSeries) {
    let l = vec![("source", ns.source.to_string())];
    f.push(
        base::NODE_PLATFORM_JOULES,
        "Whole-node energy (BMC, ACPI power meter)",
        true,
        l.clone(),
        ns.joules_total,
    );
    f.push(
        base::NODE_PLATFORM_WATTS,
        "Whole-node power",
        false,
        l,
        ns.watts,
    );
}

/// One GPU's families, `{gpu,uuid,source}`.
fn node_gpu_families(f: &mut Families, ns: &NodeSeries, index: u32, uuid: &str) {
    let l = vec![
        ("gpu", index.to_string()),
        ("uuid", uuid.to_string()),
        ("source", ns.source.to_string()),
    ];
    f.push(
        base::NODE_GPU_JOULES,
        "GPU energy (NVML)",
        true,
        l.clone(),
        ns.joules_total,
    );
    f.push(base::NODE_GPU_WATTS, "GPU power (NVML)", false, l, ns.watts);
}

/// Family names (joules, watts) and the noun of a workload series; `None` for process series
/// without `--process-metrics`.
fn workload_names(
    kind: WorkloadKind,
    gpu: bool,
    process_metrics: bool,
) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match (kind, gpu) {
        (WorkloadKind::Pod, false) => (base::POD_CPU_JOULES, base::POD_CPU_WATTS, "pod"),
        (WorkloadKind::Pod, true) => (base::POD_GPU_JOULES, base::POD_GPU_WATTS, "pod"),
        (WorkloadKind::Container, false) => (
            base::CONTAINER_CPU_JOULES,
            base::CONTAINER_CPU_WATTS,
            "container",
        ),
        (WorkloadKind::Container, true) => (
            base::CONTAINER_GPU_JOULES,
            base::CONTAINER_GPU_WATTS,
            "container",
        ),
        (WorkloadKind::Process, false) if process_metrics => {
            (base::PROCESS_CPU_JOULES, base::PROCESS_CPU_WATTS, "process")
        }
        (WorkloadKind::Process, true) if process_metrics => {
            (base::PROCESS_GPU_JOULES, base::PROCESS_GPU_WATTS, "process")
        }
        (WorkloadKind::Process, _) => return None,
    })
}

/// One workload series: its joules, and its watts when the zone was attributed this interval.
fn push_workload(f: &mut Families, w: &WorkloadSeries, process_metrics: bool, l: Labels) {
    let gpu = w.zone == "gpu";
    let Some((j, wt, help)) = workload_names(w.kind, gpu, process_metrics) else {
        return;
    };
    let by = if gpu {
        "GPU SM utilisation (NVML)"
    } else {
        "CPU time"
    };
    f.push(
        j,
        &format!("Energy attributed to the {help} by its {by}"),
        true,
        l.clone(),
        w.joules_total,
    );
    // Absent when this zone was not attributed this interval (true or absent).
    if let Some(watts) = w.watts {
        f.push(
            wt,
            &format!("Power attributed to the {help} over the last interval"),
            false,
            l,
            watts,
        );
    }
}

/// Pod, container and (with `--process-metrics`) process series.
fn workload_families(f: &mut Families, s: &Snapshot, process_metrics: bool) {
    for w in &s.workloads {
        if w.kind == WorkloadKind::Process && !process_metrics {
            continue;
        }
        let mut l = (*w.labels).clone();
        l.push(("zone", w.zone.clone()));
        l.push(("source", w.source.to_string()));
        push_workload(f, w, process_metrics, l);
    }
}

/// The books of each attributed zone, and shared enclosures.
fn books_families(f: &mut Families, s: &Snapshot) {
    for b in &s.books {
        let l = vec![("zone", b.zone.clone()), ("source", b.source.to_string())];
        for (name, help, v) in [
            (base::NODE_IDLE_JOULES, "Energy of an attributed zone while idle (the node's busy ratio; for GPUs the device's utilisation); node = idle + pods + system + unattributed per zone and source", b.idle),
            (base::NODE_PODS_JOULES, "Energy attributed to all pods together, including pods whose series have expired", b.pods),
            (base::NODE_SYSTEM_JOULES, "Energy attributed to processes outside any pod (kubelet, container runtime, host daemons)", b.system),
            (base::NODE_UNATTRIBUTED_JOULES, "Active energy no process received (kernel work, processes that exited unseen, CPU time the accounting could not name)", b.unattributed),
        ] {
            f.push(name, help, true, l.clone(), v);
        }
    }
    for sh in &s.shared {
        f.push(
            base::NODE_ENCLOSURE_WATTS,
            "Power of hardware this node shares with others (a blade enclosure, from Redfish); not the node's own draw",
            false,
            vec![("chassis", sh.name.clone())],
            sh.watts,
        );
    }
}

/// Battery, supply, budget, CO2.
fn supply_families(f: &mut Families, s: &Snapshot) {
    if let Some(b) = &s.battery {
        let l = vec![("status", b.status.clone())];
        let gauges = [
            (
                base::BATTERY_CHARGE_RATIO,
                "Battery state of charge, 0..1",
                b.charge_ratio,
            ),
            (
                base::BATTERY_ENERGY_JOULES,
                "Energy left in the battery",
                b.energy_joules,
            ),
            (
                base::BATTERY_CAPACITY_JOULES,
                "Battery energy when full",
                b.capacity_joules,
            ),
            (
                base::BATTERY_POWER_WATTS,
                "Battery discharge power (0 when charging or full)",
                b.draw_watts,
            ),
            (
                base::BATTERY_CHARGE_POWER_WATTS,
                "Power flowing into the battery (0 when discharging, full or not charging)",
                b.charge_watts,
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                f.push(name, help, false, l.clone(), v);
            }
        }
    }
    if let Some(ext) = s.external_power {
        f.push(
            base::EXTERNAL_POWER,
            "1 when the node runs on mains/AC",
            false,
            vec![],
            if ext { 1.0 } else { 0.0 },
        );
    }
    if let Some(b) = s.budget_watts {
        f.push(
            base::POWER_BUDGET_WATTS,
            "The node's power budget (flag or BMC power limit)",
            false,
            vec![],
            b,
        );
    }
    if let Some(g) = s.co2_grams_total {
        f.push(
            base::CO2_GRAMS,
            "CO2 emitted for the node's energy at the configured grid intensity",
            true,
            vec![],
            g,
        );
    }
}

/// The exporter's own state.
fn self_families(f: &mut Families, s: &Snapshot, version: &str) {
    let up_sources: Vec<&str> = s.sources.iter().filter(|x| x.up).map(|x| x.name).collect();
    f.push(
        base::EXPORTER_INFO,
        "Exporter build and configuration",
        false,
        vec![
            ("version", version.to_string()),
            ("sources", up_sources.join(",")),
            ("attribution", s.attribution.to_string()),
        ],
        1.0,
    );
    for src in &s.sources {
        f.push(
            base::EXPORTER_SOURCE_UP,
            "1 when the energy source was read in the last interval; state: in_use (its figures are published), standby (another source is preferred), error, stale or no_power (down: its series are withdrawn)",
            false,
            vec![
                ("source", src.name.to_string()),
                ("state", src.state.to_string()),
            ],
            if src.up { 1.0 } else { 0.0 },
        );
    }
    if let Some(d) = s.accounting_dropped {
        f.push(
            base::EXPORTER_EBPF_DROPPED,
            "Scheduler events the eBPF accounting dropped because its process map was full (their CPU time stays unattributed)",
            true,
            vec![],
            d as f64,
        );
    }
    if let Some(t) = s
        .taken_at
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    {
        f.push(
            base::EXPORTER_LAST_COLLECTION,
            "Unix time the last collection finished (/healthz fails after 3 intervals without one)",
            false,
            vec![],
            t.as_secs_f64(),
        );
    }
    for (src, labels) in &s.source_info {
        if *src == "estimator" {
            f.push(
                base::ESTIMATOR_INFO,
                "Which reference the power estimator uses and how sure it is",
                false,
                labels.clone(),
                1.0,
            );
        } else {
            let mut l = vec![("source", src.to_string())];
            l.extend(labels.iter().cloned());
            f.push(
                base::EXPORTER_SOURCE_INFO,
                "How a source reads its meter (IPMI: method dcmi, sdr, or none before the first reading)",
                false,
                l,
                1.0,
            );
        }
    }
    calibration_families(f, s);
    f.push(
        base::EXPORTER_COLLECTION_SECONDS,
        "Time the last collection took",
        false,
        vec![],
        s.collection_seconds,
    );
}

/// A metered node's estimator fit, what the controller builds PowerModels from (issue 21 §2).
fn calibration_families(f: &mut Families, s: &Snapshot) {
    let Some(c) = &s.calibration else { return };
    for (coefficient, v) in [("idle", c.idle_watts), ("dynamic", c.dynamic_watts)] {
        let mut l = c.labels.clone();
        l.push(("coefficient", coefficient.to_string()));
        f.push(
            base::ESTIMATOR_CALIBRATION_WATTS,
            "The estimator's fit against this node's meter: watts at idle and added at full load (on the reference load curve)",
            false,
            l,
            v,
        );
    }
    f.push(
        base::ESTIMATOR_CALIBRATION_SAMPLES,
        "Meter samples behind the estimator's fit",
        false,
        c.labels.clone(),
        c.samples as f64,
    );
    f.push(
        base::ESTIMATOR_FIT_ERROR_WATTS,
        "RMS error of the estimator's fit against this node's meter, watts",
        false,
        c.labels.clone(),
        c.fit_error_watts,
    );
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.snapshot();
        let mut f = Families {
            names: &self.cfg.names,
            node: &s.node_name,
            groups: Vec::new(),
        };
        if self.cfg.names.prefix() == kepler::PREFIX {
            kepler::families(&mut f, &s, self.cfg.process_metrics, self.cfg.version);
        } else {
            node_families(&mut f, &s);
            workload_families(&mut f, &s, self.cfg.process_metrics);
        }
        books_families(&mut f, &s);
        supply_families(&mut f, &s);
        self_families(&mut f, &s, self.cfg.version);
        for (name, help, counter, series) in &f.groups {
            family(&mut enc, name, help, *counter, series)?;
        }
        Ok(())
    }
}

/// A registry holding the snapshot collector plus any extra metrics (e.g. the estimator's info).
pub fn registry(cfg: MetricsConfig, snapshot: SharedSnapshot) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(SnapshotCollector { cfg, snapshot }));
    r
}

/// OpenMetrics exposition of a registry (what Prometheus asks for first).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Converts OpenMetrics to the classic text format 0.0.4 (for `promtool check metrics`, curl and
/// older scrapers): counter families are named with their `_total` suffix, `# UNIT` and `# EOF`
/// go. Only counters and gauges are produced here, so nothing else needs translating; label values
/// are escaped the same way in both formats. Lines are split on `\n` only (escaped values hold
/// no line feed, but may end in a carriage return, which `str::lines` would eat).
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.split('\n').filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // HELP comes before TYPE: decide by the family's samples, which end in `_total`.
            let is_counter = openmetrics.contains(&format!("\n{name}_total{{"))
                || openmetrics.contains(&format!("\n{name}_total "));
            if is_counter {
                out.push_str(&format!("# HELP {name}_total {help}\n"));
                continue;
            }
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
