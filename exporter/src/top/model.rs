//! What `top` shows, as plain data: pure functions of a [`Snapshot`] (and the running totals the
//! loop keeps), so the rows, shares, sort, filter and runway are tested without a terminal.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::snapshot::{Snapshot, WorkloadKind};
use crate::source::Domain;

/// Which workloads the table lists. Each level's rows plus `[idle]` and `[system]` add up to the
/// node's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pods,
    Containers,
    Processes,
}

impl Level {
    pub fn next(self) -> Self {
        match self {
            Level::Pods => Level::Containers,
            Level::Containers => Level::Processes,
            Level::Processes => Level::Pods,
        }
    }

    fn kind(self) -> WorkloadKind {
        match self {
            Level::Pods => WorkloadKind::Pod,
            Level::Containers => WorkloadKind::Container,
            Level::Processes => WorkloadKind::Process,
        }
    }
}

/// Table order; power and CPU descending, name ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    Power,
    Cpu,
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    Pod,
    Container,
    Process,
    /// The node's idle power (the busy ratio's complement of the meter's reading).
    Idle,
    /// Node power no listed workload received: the kernel, processes outside pods (at the pod
    /// level), exited processes, components the meter sees but attribution does not split.
    System,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub kind: RowKind,
    /// Pod UID, container id, pid; empty for `[idle]`/`[system]`.
    pub id: String,
    /// Display name, control characters escaped.
    pub name: String,
    /// Power over the last interval (all zones that make up node power, GPUs included).
    pub watts: f64,
    /// Share of the node's power, 0..1; `None` while node power is unknown.
    pub share: Option<f64>,
    /// Share of all CPUs' time, 0..1 (from the attribution's CPU-time split).
    pub cpu: Option<f64>,
    /// Watts per attributed zone (`package`, `dram`, `gpu`, …).
    pub zones: BTreeMap<String, f64>,
    /// Energy since `top` started, in Wh.
    pub wh: f64,
}

/// Battery state and how long it lasts at the current draw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatteryView {
    pub charge_percent: Option<f64>,
    pub status: String,
    pub draw_watts: Option<f64>,
    /// Power into the battery; `None` when the kernel does not say.
    pub charge_watts: Option<f64>,
    pub on_mains: Option<bool>,
    /// Remaining energy ÷ current draw; `None` on mains, charging, or when either is unknown.
    pub runway_hours: Option<f64>,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub node_name: String,
    pub interval_seconds: f64,
    pub node_watts: Option<f64>,
    pub node_source: Option<String>,
    /// The node-power line's explanation (why estimated, why unknown).
    pub power_note: String,
    /// Node energy since `top` started.
    pub node_wh: f64,
    pub cpu_busy: Option<f64>,
    pub attribution: String,
    pub sources_up: Vec<String>,
    /// What each source that is up reads (`ipmi`: DCMI or which SDR sensor; `hwmon`: which rails
    /// and files make each figure), one line per source.
    pub source_details: Vec<(String, String)>,
    /// Warnings that stay on screen: sources down and why, discovery and log warnings.
    pub warnings: Vec<String>,
    pub battery: Option<BatteryView>,
    pub budget_watts: Option<f64>,
    /// Attributed zones, in column order.
    pub zones: Vec<String>,
    pub pods: Vec<Row>,
    pub containers: Vec<Row>,
    pub processes: Vec<Row>,
}

impl Model {
    pub fn rows(&self, level: Level) -> &[Row] {
        match level {
            Level::Pods => &self.pods,
            Level::Containers => &self.containers,
            Level::Processes => &self.processes,
        }
    }

    pub fn has_gpu(&self) -> bool {
        self.zones.iter().any(|z| z == "gpu")
    }
}

/// Escapes what a terminal would interpret in a name the kernel or a runtime hands us
/// (`/proc/<pid>/comm` is set by the process itself): C0/C1 controls, DEL, and the bidirectional
/// and zero-width format characters that reorder or hide text. Backslashes are doubled so an
/// escaped name cannot pass for another.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let hostile = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        match c {
            '\\' => out.push_str("\\\\"),
            c if hostile && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hostile => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Container id → name from the container runtime's own state (see `runtime.rs`).
pub type ContainerNames<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Per-workload sums over the zones that make up node power.
#[derive(Default)]
struct Acc {
    kind: Option<WorkloadKind>,
    labels: Vec<(&'static str, String)>,
    watts: f64,
    joules: f64,
    zones: BTreeMap<String, f64>,
}

/// Builds the frame's model. `node_wh`: node energy since start (kept by the loop);
/// `warnings`: discovery and log warnings to keep on screen.
pub fn build(s: &Snapshot, node_wh: f64, warnings: &[String], names: ContainerNames<'_>) -> Model {
    let zones: BTreeSet<String> = s
        .workloads
        .iter()
        .filter(|w| w.watts.is_some())
        .map(|w| w.zone.clone())
        .collect();
    let mut per: HashMap<(WorkloadKind, String), Acc> = HashMap::new();
    for w in &s.workloads {
        let id = w.labels.first().map(|l| l.1.clone()).unwrap_or_default();
        let a = per.entry((w.kind, id)).or_default();
        a.kind = Some(w.kind);
        if a.labels.is_empty() {
            a.labels = w.labels.as_ref().clone();
        }
        let watts = w.watts.unwrap_or(0.0);
        a.watts += watts;
        a.joules += w.joules_total;
        *a.zones.entry(w.zone.clone()).or_default() += watts;
    }
    // Every CPU zone is split by the same CPU-time shares, so a workload's CPU-zone watts over
    // the level's are its share of the CPU time the accounting saw.
    let cpu_watts = |a: &Acc| -> f64 {
        a.zones
            .iter()
            .filter(|(z, _)| *z != "gpu")
            .map(|(_, w)| w)
            .sum()
    };
    let idle = idle_watts(s);
    let idle_wh: f64 = s.books.iter().map(|b| b.idle).sum::<f64>() / 3600.0;
    let level_rows = |level: Level| {
        let kind = level.kind();
        let in_cpu: f64 = per
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, a)| cpu_watts(a))
            .sum();
        let mut rows: Vec<Row> = per
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, id), a)| Row {
                kind: row_kind(kind),
                id: escape(id),
                name: escape(&display_name(kind, id, &a.labels, names)),
                watts: a.watts,
                share: s.node_watts.filter(|n| *n > 0.0).map(|n| a.watts / n),
                cpu: s
                    .cpu_busy_ratio
                    .filter(|_| in_cpu > 0.0)
                    .map(|busy| cpu_watts(a) / in_cpu * busy),
                zones: a.zones.clone(),
                wh: a.joules / 3600.0,
            })
            .collect();
        rows.extend(rest_rows(s, &rows, idle, idle_wh, node_wh));
        rows
    };
    Model {
        node_name: escape(&s.node_name),
        interval_seconds: s.interval_seconds,
        node_watts: s.node_watts,
        node_source: s.node_watts_source.map(str::to_string),
        power_note: power_note(s, warnings),
        node_wh,
        cpu_busy: s.cpu_busy_ratio,
        attribution: s.attribution.to_string(),
        sources_up: s
            .sources
            .iter()
            .filter(|x| x.up)
            .map(|x| match x.state {
                "standby" => format!("{} (standby)", x.name),
                _ => x.name.to_string(),
            })
            .collect(),
        source_details: s
            .sources
            .iter()
            .filter(|x| x.up)
            .filter_map(|x| Some((x.name.to_string(), x.detail.clone()?)))
            .collect(),
        warnings: all_warnings(s, warnings),
        battery: battery(s),
        budget_watts: s.budget_watts,
        zones: zones.into_iter().collect(),
        pods: level_rows(Level::Pods),
        containers: level_rows(Level::Containers),
        processes: level_rows(Level::Processes),
    }
}

fn row_kind(k: WorkloadKind) -> RowKind {
    match k {
        WorkloadKind::Pod => RowKind::Pod,
        WorkloadKind::Container => RowKind::Container,
        WorkloadKind::Process => RowKind::Process,
    }
}

/// `[idle]` and `[system]`: with them a level's rows add up to node power. Both are absent while
/// node power is unknown (a share of nothing is not a figure).
fn rest_rows(s: &Snapshot, rows: &[Row], idle: f64, idle_wh: f64, node_wh: f64) -> Vec<Row> {
    let Some(node) = s.node_watts else {
        return Vec::new();
    };
    let listed: f64 = rows.iter().map(|r| r.watts).sum();
    let listed_wh: f64 = rows.iter().map(|r| r.wh).sum();
    let system = (node - idle - listed).max(0.0);
    let share = |w: f64| (node > 0.0).then(|| w / node);
    let row = |kind, name: &str, watts: f64, wh: f64| Row {
        kind,
        id: String::new(),
        name: name.into(),
        watts,
        share: share(watts),
        cpu: None,
        zones: BTreeMap::new(),
        wh,
    };
    vec![
        row(RowKind::Idle, "[idle]", idle.min(node), idle_wh),
        row(
            RowKind::System,
            "[system]",
            system,
            (node_wh - idle_wh - listed_wh).max(0.0),
        ),
    ]
}

/// The idle part of the node series that make up node power: the platform meter's when it is
/// the node's source, else the CPU package and DRAM zones'.
fn idle_watts(s: &Snapshot) -> f64 {
    let platform: Vec<f64> = s
        .node
        .iter()
        .filter(|n| n.domain == Domain::Platform)
        .map(|n| n.idle_watts)
        .collect();
    if let Some(p) = platform.first() {
        return *p;
    }
    s.node
        .iter()
        .filter(|n| n.domain == Domain::Cpu && (n.zone == "package" || n.zone == "dram"))
        .map(|n| n.idle_watts)
        .sum()
}

fn label<'a>(labels: &'a [(&'static str, String)], k: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.0 == k)
        .map(|l| l.1.as_str())
        .unwrap_or("")
}

/// Pods as `namespace/name` (UID until the pod watch knows them), containers by Kubernetes name,
/// else the runtime's name, else a 12-digit short id (as `docker ps` prints it).
fn display_name(
    kind: WorkloadKind,
    id: &str,
    labels: &[(&'static str, String)],
    names: ContainerNames<'_>,
) -> String {
    let get = |k| label(labels, k);
    match kind {
        WorkloadKind::Pod if !get("pod_name").is_empty() => {
            format!("{}/{}", get("pod_namespace"), get("pod_name"))
        }
        WorkloadKind::Pod => format!("pod {id}"),
        WorkloadKind::Container if !get("container_name").is_empty() => format!(
            "{} ({}/{})",
            get("container_name"),
            get("pod_namespace"),
            get("pod_name")
        ),
        WorkloadKind::Container => {
            let short: String = id.chars().take(12).collect();
            match names(id) {
                Some(n) => format!("{n} ({short})"),
                None => short,
            }
        }
        WorkloadKind::Process => get("comm").to_string(),
    }
}

fn down_sources(s: &Snapshot) -> Vec<String> {
    s.sources
        .iter()
        .filter(|x| !x.up)
        .map(|x| {
            format!(
                "{} {} ({})",
                x.name,
                x.state,
                x.reason.as_deref().unwrap_or("down")
            )
        })
        .collect()
}

/// True when a warning says RAPL exists but its counters are root-only (Linux ≥ 5.10).
fn rapl_needs_root(warnings: &[String]) -> bool {
    warnings
        .iter()
        .any(|w| w.starts_with("rapl:") && w.contains("permission denied"))
}

/// Why node power comes from where it does. A machine with RAPL run without root is not "a
/// machine without a meter": it says how to get the meter.
fn power_note(s: &Snapshot, warnings: &[String]) -> String {
    let down = down_sources(s);
    let root = rapl_needs_root(warnings) || down.iter().any(|d| d.contains("permission denied"));
    let root_hint = "RAPL present, needs root (sudo make run)";
    match (s.node_watts_source, root, down.is_empty()) {
        (Some("estimator"), true, _) => format!("ESTIMATED — {root_hint}"),
        (Some("estimator"), false, true) => "ESTIMATED — no meter on this machine".into(),
        (Some("estimator"), false, false) => {
            format!("ESTIMATED — no meter reports: {}", down.join("; "))
        }
        (Some(_), _, _) => String::new(),
        (None, true, _) => format!("unknown — {root_hint}; showing CPU-time shares only"),
        (None, false, false) => format!(
            "unknown — {}; showing CPU-time shares only",
            down.join("; ")
        ),
        (None, false, true) => "unknown — no energy meter found (no RAPL, hwmon, battery or Redfish); showing CPU-time shares only".into(),
    }
}

fn all_warnings(s: &Snapshot, warnings: &[String]) -> Vec<String> {
    let mut out: Vec<String> = down_sources(s)
        .into_iter()
        .map(|d| format!("source {d}"))
        .collect();
    for w in warnings {
        if !out.contains(w) {
            out.push(escape(w));
        }
    }
    out
}

fn battery(s: &Snapshot) -> Option<BatteryView> {
    let b = s.battery.as_ref()?;
    let energy = b
        .energy_joules
        .or_else(|| Some(b.charge_ratio? * b.capacity_joules?));
    Some(BatteryView {
        charge_percent: b.charge_ratio.map(|r| r * 100.0),
        status: escape(&b.status),
        draw_watts: b.draw_watts,
        charge_watts: b.charge_watts,
        on_mains: s.external_power,
        runway_hours: runway_hours(energy, b.draw_watts, s.external_power),
    })
}

/// Remaining energy ÷ draw. None on mains or while not drawing (charging, full): no runway then.
pub fn runway_hours(
    energy_joules: Option<f64>,
    draw_watts: Option<f64>,
    on_mains: Option<bool>,
) -> Option<f64> {
    if on_mains == Some(true) {
        return None;
    }
    let (e, d) = (energy_joules?, draw_watts?);
    (d > 0.0 && e >= 0.0).then(|| e / d / 3600.0)
}

/// The listed rows of one level after filter and sort; `[idle]`/`[system]` stay last, unfiltered
/// (they are what makes the column add up).
pub fn visible<'a>(rows: &'a [Row], sort: SortKey, filter: &str) -> Vec<&'a Row> {
    let needle = filter.to_lowercase();
    let mut out: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.kind, RowKind::Pod | RowKind::Container | RowKind::Process))
        .filter(|r| {
            needle.is_empty()
                || r.name.to_lowercase().contains(&needle)
                || r.id.to_lowercase().contains(&needle)
        })
        .collect();
    out.sort_by(|a, b| {
        match sort {
            SortKey::Power => b.watts.total_cmp(&a.watts),
            SortKey::Cpu => b.cpu.unwrap_or(0.0).total_cmp(&a.cpu.unwrap_or(0.0)),
            SortKey::Name => a.name.cmp(&b.name),
        }
        .then_with(|| a.name.cmp(&b.name))
        .then_with(|| a.id.cmp(&b.id))
    });
    out.extend(
        rows.iter()
            .filter(|r| matches!(r.kind, RowKind::Idle | RowKind::System)),
    );
    out
}

/// Formats watts for a column: `1.2 kW`, `42 W`, `3.6 W`, `420 mW`.
pub fn fmt_w(w: f64) -> String {
    if w >= 1000.0 {
        format!("{:.1} kW", w / 1000.0)
    } else if w >= 100.0 {
        format!("{w:.0} W")
    } else if w >= 1.0 {
        format!("{w:.1} W")
    } else {
        format!("{:.0} mW", w * 1000.0)
    }
}

/// Formats hours as `3 h 20 min` / `45 min`.
pub fn fmt_hours(h: f64) -> String {
    let min = (h * 60.0).round() as u64;
    if min >= 60 {
        format!("{} h {:02} min", min / 60, min % 60)
    } else {
        format!("{min} min")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::snapshot::{NodeSeries, WorkloadSeries};
    use crate::source::Battery;

    fn node(zone: &str, watts: f64, busy: f64) -> NodeSeries {
        NodeSeries {
            source: "rapl",
            domain: Domain::Cpu,
            zone: zone.into(),
            joules_total: watts * 10.0,
            watts,
            active_joules_total: 0.0,
            idle_joules_total: 0.0,
            active_watts: watts * busy,
            idle_watts: watts * (1.0 - busy),
        }
    }

    fn process(pid: u32, comm: &str, zone: &str, watts: f64) -> WorkloadSeries {
        WorkloadSeries {
            kind: WorkloadKind::Process,
            labels: Arc::new(vec![("pid", pid.to_string()), ("comm", comm.into())]),
            zone: zone.into(),
            source: "rapl",
            joules_total: watts * 36.0,
            watts: Some(watts),
            running: true,
            cgroup: None,
            exe: None,
        }
    }

    /// 10 W package + 2 W dram at 50 % busy: 6 W idle; processes get 4 W of the 6 W active.
    fn snapshot() -> Snapshot {
        Snapshot {
            node_name: "n".into(),
            node: vec![node("package", 10.0, 0.5), node("dram", 2.0, 0.5)],
            node_watts: Some(12.0),
            node_watts_source: Some("rapl"),
            cpu_busy_ratio: Some(0.5),
            workloads: vec![
                process(1, "big", "package", 2.5),
                process(1, "big", "dram", 0.5),
                process(2, "small", "package", 1.0),
            ],
            ..Snapshot::default()
        }
    }

    #[test]
    fn level_rows_add_up_to_node_power() {
        let m = build(&snapshot(), 0.1, &[], &|_| None);
        let rows = m.rows(Level::Processes);
        let total: f64 = rows.iter().map(|r| r.watts).sum();
        assert!((total - 12.0).abs() < 1e-9, "{rows:?}");
        let shares: f64 = rows.iter().map(|r| r.share.unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        let idle = rows.iter().find(|r| r.kind == RowKind::Idle).unwrap();
        assert!((idle.watts - 6.0).abs() < 1e-9);
        let system = rows.iter().find(|r| r.kind == RowKind::System).unwrap();
        assert!(
            (system.watts - 2.0).abs() < 1e-9,
            "6 W active, 4 W to processes"
        );
        let big = rows.iter().find(|r| r.name == "big").unwrap();
        assert!(
            (big.share.unwrap() - 0.25).abs() < 1e-9,
            "3 W of a 12 W node"
        );
        assert_eq!(big.zones["dram"], 0.5);
        assert!((big.wh - 3.0 * 36.0 / 3600.0).abs() < 1e-9);
        // CPU: 3 of the 4 W the processes got in CPU zones, times 50 % busy.
        assert!((big.cpu.unwrap() - 3.0 / 4.0 * 0.5).abs() < 1e-9);
    }

    #[test]
    fn no_node_power_no_shares_and_no_rest_rows() {
        let mut s = snapshot();
        s.node_watts = None;
        s.node_watts_source = None;
        let m = build(&s, 0.0, &[], &|_| None);
        assert!(m.processes.iter().all(|r| r.share.is_none()));
        assert!(!m.processes.iter().any(|r| r.kind == RowKind::Idle));
    }

    #[test]
    fn sort_and_filter() {
        let mut s = snapshot();
        // "small" uses more CPU in the package zone but less power overall than "gpu-user".
        s.workloads.push(process(3, "gpu-user", "gpu", 5.0));
        s.workloads.push(process(3, "gpu-user", "package", 0.1));
        let m = build(&s, 0.0, &[], &|_| None);
        let names = |rows: Vec<&Row>| rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let rows = m.rows(Level::Processes);
        assert_eq!(
            names(visible(rows, SortKey::Power, "")),
            ["gpu-user", "big", "small", "[idle]", "[system]"]
        );
        assert_eq!(
            names(visible(rows, SortKey::Cpu, "")),
            ["big", "small", "gpu-user", "[idle]", "[system]"]
        );
        assert_eq!(
            names(visible(rows, SortKey::Name, "")),
            ["big", "gpu-user", "small", "[idle]", "[system]"]
        );
        assert_eq!(
            names(visible(rows, SortKey::Power, "SMA")),
            ["small", "[idle]", "[system]"]
        );
        assert_eq!(
            names(visible(rows, SortKey::Power, "3")),
            ["gpu-user", "[idle]", "[system]"],
            "pids match too"
        );
        assert!(m.has_gpu());
    }

    #[test]
    fn runway() {
        assert_eq!(
            runway_hours(Some(36_000.0), Some(10.0), Some(false)),
            Some(1.0)
        );
        assert_eq!(runway_hours(Some(36_000.0), Some(10.0), Some(true)), None);
        assert_eq!(runway_hours(Some(36_000.0), Some(0.0), None), None);
        assert_eq!(runway_hours(None, Some(10.0), None), None);
        let mut s = snapshot();
        s.battery = Some(Battery {
            charge_ratio: Some(0.5),
            energy_joules: None,
            capacity_joules: Some(180_000.0),
            draw_watts: Some(12.5),
            charge_watts: Some(0.0),
            status: "Discharging".into(),
        });
        s.external_power = Some(false);
        let b = build(&s, 0.0, &[], &|_| None).battery.unwrap();
        assert_eq!(b.runway_hours, Some(2.0), "90 kJ at 12.5 W");
        assert_eq!(fmt_hours(2.0), "2 h 00 min");
        assert_eq!(fmt_hours(0.75), "45 min");
    }

    #[test]
    fn hostile_names_are_escaped() {
        assert_eq!(escape("ok name"), "ok name");
        assert_eq!(escape("\x1b[2Jevil\x07"), "\\x1b[2Jevil\\x07");
        assert_eq!(escape("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(
            escape("back\\x1b"),
            "back\\\\x1b",
            "cannot pass for an escape"
        );
        assert_eq!(escape("\u{9b}c"), "\\x9bc", "C1 CSI");
    }

    #[test]
    fn rapl_without_root_says_so() {
        let mut s = snapshot();
        s.node_watts_source = Some("estimator");
        let warn = [
            "rapl: /sys/class/powercap/intel-rapl:0/energy_uj: permission denied; …".to_string(),
        ];
        let m = build(&s, 0.0, &warn, &|_| None);
        assert_eq!(
            m.power_note,
            "ESTIMATED — RAPL present, needs root (sudo make run)"
        );
        assert_eq!(m.warnings, warn);
        let m = build(&s, 0.0, &[], &|_| None);
        assert_eq!(m.power_note, "ESTIMATED — no meter on this machine");
    }

    #[test]
    fn containers_by_runtime_name_or_short_id() {
        let id = "ab".repeat(32);
        let labels = Arc::new(vec![
            ("container_id", id.clone()),
            ("container_name", String::new()),
            ("pod_id", String::new()),
        ]);
        let mut s = snapshot();
        s.workloads.push(WorkloadSeries {
            kind: WorkloadKind::Container,
            labels,
            zone: "package".into(),
            source: "rapl",
            joules_total: 1.0,
            watts: Some(1.0),
            running: true,
            cgroup: None,
            exe: None,
        });
        let m = build(&s, 0.0, &[], &|_| None);
        assert_eq!(m.containers[0].name, "abababababab");
        let m = build(&s, 0.0, &[], &|i| (i == id).then(|| "web".to_string()));
        assert_eq!(m.containers[0].name, "web (abababababab)");
    }
}
