//! One planner cycle at fleet scale: 10 000 edge devices and 100 000 workloads.
//! Run: `cargo bench -p edgewatt-controller --bench planner`. Target (issue 17): ≤ 0.5 µs per
//! workload (50 ms per cycle). Prints wall time and the time the thread actually ran on a CPU
//! (`/proc/thread-self/schedstat`): on a shared machine under load the two differ, and only the
//! second says what the planner costs.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use edgewatt_controller::planner::*;
use edgewatt_crds::{
    Action as PolicyAction, EnergyPolicySpec, Mode, Recovery, Starvation, WorkloadKind,
};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat, first field).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    const DEVICES: usize = 10_000;
    const CYCLES: usize = 9;
    const WORKLOADS: usize = 100_000;
    let spec = EnergyPolicySpec {
        targets: Default::default(),
        workloads: None,
        starvation: Starvation {
            battery_below_percent: Some(20.0),
            min_runtime_minutes: Some(30.0),
            power_above_watts: None,
            query: None,
            runway_below_recharge: None,
            for_: "2m".into(),
        },
        recovery: Some(Recovery {
            battery_above_percent: Some(35.0),
            for_: "5m".into(),
        }),
        action: PolicyAction {
            mode: Mode::Migrate,
            max_concurrent: 50,
            max_per_hour: 500,
            ..Default::default()
        },
        scheduling: Default::default(),
        criticality: None,
        forecast: Default::default(),
    };
    let durations = spec.durations().unwrap();
    let targets: Vec<TargetSnapshot> = (0..DEVICES)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert("zone".to_string(), format!("z{}", i % 10));
            TargetSnapshot {
                id: TargetId::device(format!("ns{}", i % 4), format!("dev-{i:05}")),
                labels,
                in_policy: true,
                alive: i % 50 != 0,
                taints: vec![],
                tainted: false,
                taint_ours: false,
                signals: TargetSignals {
                    // 10% of devices are low.
                    battery_ratio: Some(if i % 10 == 0 {
                        0.1
                    } else {
                        0.3 + (i % 70) as f64 / 100.0
                    }),
                    battery_energy_joules: Some(50_000.0),
                    battery_draw_watts: Some(8.0),
                    ..Default::default()
                },
            }
        })
        .collect();
    let workloads: Vec<WorkloadSnapshot> = (0..WORKLOADS)
        .map(|i| {
            let dev = i % DEVICES;
            WorkloadSnapshot {
                id: WorkloadId {
                    kind: WorkloadKind::EdgeWorkload,
                    namespace: format!("ns{}", dev % 4),
                    name: format!("wl-{i:06}"),
                },
                target: Some(format!("dev-{dev:05}")),
                pinned: i % 17 == 0,
                ineligible: None,
                in_flight: false,
                pdb_blocked: false,
                constraints: Constraints::EdgeWorkload {
                    device_selector: (i % 3 == 0).then(|| Selector {
                        match_labels: [("zone".to_string(), format!("z{}", i % 10))].into(),
                        match_expressions: vec![],
                    }),
                },
                owner: None,
                placement: Placement::Device,
                running: true,
                host_bound: None,
                tolerates_starvation: false,
                ladder: Default::default(),
            }
        })
        .collect();
    let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let history = MoveHistory::default();
    let warm = plan(&PlanInput {
        spec: &spec,
        durations: &durations,
        now: t0,
        targets: &targets,
        workloads: &workloads,
        previous: &TargetStates::default(),
        history: &history,
        max_gap: std::time::Duration::from_secs(600),
    });
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut last = None;
    for _ in 0..CYCLES {
        let start = Instant::now();
        let cpu_start = cpu_ns();
        let p = plan(&PlanInput {
            spec: &spec,
            durations: &durations,
            now: t0 + chrono::Duration::seconds(180),
            targets: &targets,
            workloads: &workloads,
            previous: &warm.states,
            history: &history,
            max_gap: std::time::Duration::from_secs(600),
        });
        times.push(start.elapsed());
        cpu.push(cpu_ns() - cpu_start);
        last = Some(p);
    }
    // Where the time goes: the same cycle without any workload (targets only).
    let mut targets_only = Vec::new();
    for _ in 0..CYCLES {
        let c = cpu_ns();
        let p = plan(&PlanInput {
            spec: &spec,
            durations: &durations,
            now: t0 + chrono::Duration::seconds(180),
            targets: &targets,
            workloads: &[],
            previous: &warm.states,
            history: &history,
            max_gap: std::time::Duration::from_secs(600),
        });
        targets_only.push(cpu_ns() - c);
        drop(p);
    }
    targets_only.sort();
    println!(
        "targets only (no workloads): on-CPU median {:.1} ms",
        targets_only[CYCLES / 2] as f64 / 1e6
    );
    times.sort();
    cpu.sort();
    let p = last.unwrap();
    let per = |ms: f64| ms * 1e3 / WORKLOADS as f64;
    let cpu_ms = cpu[CYCLES / 2] as f64 / 1e6;
    println!(
        "on-CPU: median {cpu_ms:.1} ms ({:.2} µs/workload), min {:.1} ms, max {:.1} ms",
        per(cpu_ms),
        cpu[0] as f64 / 1e6,
        cpu[CYCLES - 1] as f64 / 1e6
    );
    let wall_ms = times[CYCLES / 2].as_secs_f64() * 1e3;
    println!(
        "planner cycle: {DEVICES} devices, {WORKLOADS} workloads: wall median {wall_ms:.1} ms ({:.2} µs/workload), min {:.1} ms, max {:.1} ms; starved {}, actions {}, skipped {}; peak RSS {} MiB",
        per(wall_ms),
        times[0].as_secs_f64() * 1e3,
        times[CYCLES - 1].as_secs_f64() * 1e3,
        p.starved().count(),
        p.actions.len(),
        p.skipped.len(),
        rss_kib() / 1024
    );
}
