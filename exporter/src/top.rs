//! `edgewatt-exporter top`: the live table of who uses the energy on this machine.

use std::collections::HashMap;
use std::fmt::Write;

use crate::collector::{Snapshot, WorkloadKind};

type Row<'a> = (f64, &'a [(&'static str, String)]);

fn fmt_w(w: f64) -> String {
    if w >= 100.0 {
        format!("{w:.0} W")
    } else if w >= 1.0 {
        format!("{w:.1} W")
    } else {
        format!("{:.0} mW", w * 1000.0)
    }
}

/// Renders one screen. Watts per workload are summed over zones; shares are of the attributed
/// total (processes + unattributed), so the column sums to the node's active power.
pub fn render(s: &Snapshot, limit: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "edgewatt top — node {}   interval {:.1}s   collection {:.2} ms",
        s.node_name,
        s.interval_seconds,
        s.collection_seconds * 1e3
    );
    // Why a better source is not the one in use: the down ones, with their reasons.
    let down: Vec<String> = s
        .sources
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
        .collect();
    match (s.node_watts, s.node_watts_source) {
        (Some(w), Some(src)) => {
            let why = match (src, down.is_empty()) {
                ("estimator", true) => ", ESTIMATED — no meter on this machine".to_string(),
                ("estimator", false) => {
                    format!(", ESTIMATED — no meter reports: {}", down.join("; "))
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "node power  {}  (source: {src}{why})", fmt_w(w));
        }
        _ if !down.is_empty() => {
            let _ = writeln!(
                out,
                "node power  unknown — {}; showing CPU-time shares only",
                down.join("; ")
            );
        }
        _ => {
            let _ = writeln!(out, "node power  unknown — no energy meter found (no RAPL, hwmon, battery or Redfish); showing CPU-time shares only");
        }
    }
    if let Some(b) = s.cpu_busy_ratio {
        let _ = writeln!(
            out,
            "cpu busy    {:.1} %   ({} of the node's CPU power is idle power)",
            b * 100.0,
            fmt_w(
                s.node
                    .iter()
                    .filter(|n| Some(n.source) == s.attributed_source)
                    .map(|n| n.idle_watts)
                    .sum()
            )
        );
    }
    if let Some(b) = &s.battery {
        let _ = writeln!(
            out,
            "battery     {}  {}  draw {}  {}",
            b.charge_ratio
                .map(|r| format!("{:.0} %", r * 100.0))
                .unwrap_or_else(|| "?".into()),
            b.status,
            b.draw_watts.map(fmt_w).unwrap_or_else(|| "?".into()),
            match s.external_power {
                Some(true) => "on mains",
                Some(false) => "on battery",
                None => "",
            },
        );
    }
    if let Some(b) = s.budget_watts {
        let _ = writeln!(out, "budget      {}", fmt_w(b));
    }
    let up: Vec<String> = s
        .sources
        .iter()
        .filter(|x| x.up)
        .map(|x| match x.state {
            "standby" => format!("{} (standby)", x.name),
            _ => x.name.to_string(),
        })
        .collect();
    let _ = writeln!(
        out,
        "sources     up: {}{}   attribution: {}",
        if up.is_empty() {
            "none".to_string()
        } else {
            up.join(", ")
        },
        if down.is_empty() {
            String::new()
        } else {
            format!("   down: {}", down.join("; "))
        },
        s.attribution
    );
    for x in s.sources.iter().filter(|x| x.up) {
        if let Some(d) = &x.detail {
            let _ = writeln!(out, "            {}: {d}", x.name);
        }
    }
    for sh in &s.shared {
        let _ = writeln!(
            out,
            "enclosure   {}  {} (shared with other nodes; not this node's power)",
            fmt_w(sh.watts),
            sh.name
        );
    }

    // Watts per workload, summed over zones.
    let mut per: HashMap<(WorkloadKind, String), Row> = HashMap::new();
    for w in &s.workloads {
        let id = w.labels.first().map(|l| l.1.clone()).unwrap_or_default();
        let e = per.entry((w.kind, id)).or_insert((0.0, &w.labels));
        e.0 += w.watts.unwrap_or(0.0);
    }
    let node_active: f64 = per
        .iter()
        .filter(|((k, _), _)| *k == WorkloadKind::Process)
        .map(|(_, v)| v.0)
        .sum();
    for (kind, title) in [
        (WorkloadKind::Pod, "PODS"),
        (WorkloadKind::Container, "CONTAINERS"),
        (WorkloadKind::Process, "PROCESSES"),
    ] {
        let mut rows: Vec<(&(WorkloadKind, String), &Row)> =
            per.iter().filter(|((k, _), _)| *k == kind).collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0).then(a.0 .1.cmp(&b.0 .1)));
        let _ = writeln!(out, "\n{title:<12} {:>10} {:>7}  name", "power", "share");
        // Idle workloads are not news; the header already says how many there are.
        for ((_, id), (w, labels)) in rows.into_iter().filter(|r| r.1 .0 > 0.0).take(limit) {
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|l| l.0 == k)
                    .map(|l| l.1.as_str())
                    .unwrap_or("")
            };
            let name = match kind {
                WorkloadKind::Pod if !get("pod_name").is_empty() => {
                    format!("{}/{}", get("pod_namespace"), get("pod_name"))
                }
                WorkloadKind::Container if !get("container_name").is_empty() => format!(
                    "{} ({}/{})",
                    get("container_name"),
                    get("pod_namespace"),
                    get("pod_name")
                ),
                WorkloadKind::Process => format!("{} {}", id, get("comm")),
                _ => id.chars().take(36).collect(),
            };
            let share = if node_active > 0.0 {
                w / node_active * 100.0
            } else {
                0.0
            };
            let power = if s.node_watts.is_some() {
                fmt_w(*w)
            } else {
                "-".into()
            };
            let _ = writeln!(out, "{:<12} {power:>10} {share:>6.1}%  {name}", "");
        }
    }
    out
}
