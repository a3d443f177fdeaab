//! One planner cycle at fleet scale: 10 000 edge devices and 100 000 workloads.
//! Run: `cargo bench -p edgewatt-controller --bench planner`. Target (issue 17): ≤ 0.5 µs per
//! workload (50 ms per cycle). Prints wall time and the time the thread actually ran on a CPU
//! (`/proc/thread-self/schedstat`): on a shared machine under load the two differ, and only the
//! second says what the planner costs.
//!
//! Then (issue 27) a night on a battery site: every device's runway forecast, 2 000 devices
//! starved whose workloads have nowhere to go, the degradation ladder on top of the plan.
//! Target: plan + forecasts + ladder ≤ 1 µs per workload. `EDGEWATT_BENCH=plan` runs only the
//! first scenario, `EDGEWATT_BENCH=ladder` only the second.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use edgewatt_controller::forecast::{self, ForecastInput, SupplyProfile};
use edgewatt_controller::ladder::{self, Degradee, Held, LadderInput};
use edgewatt_controller::planner::*;
use edgewatt_crds::{
    Action as PolicyAction, Criticality, Degrade, DegradeStep, DegradedKind, EnergyPolicySpec,
    LadderDurations, Mode, Recovery, Starvation, WorkloadKind,
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
    let which = std::env::var("EDGEWATT_BENCH").unwrap_or_default();
    if which != "ladder" {
        migrations();
    }
    if which != "plan" {
        night();
    }
}

fn median_ms(v: &mut [u64]) -> f64 {
    v.sort();
    v[v.len() / 2] as f64 / 1e6
}

/// Issue 27: a battery site at night. 10 000 devices, each with a supply profile (48 h: a
/// night, a day) and a forecast; every fifth device (2 000) is on the site's dark side, starved,
/// and its workloads' deviceSelector (`site=night`) accepts no healthy device (`NoTarget`) or
/// they are pinned. Their draw must drop until the runway reaches sunrise + 1 h: the ladder
/// suspends sheddable then normal EdgeWorkloads, largest first; 1 000 earlier suspends are
/// held (restores are tried). Prints plan-only and plan + forecasts + ladder on-CPU medians.
fn night() {
    const DEVICES: usize = 10_000;
    const WORKLOADS: usize = 100_000;
    const CYCLES: usize = 9;
    const CAPACITY_J: f64 = 2000.0 * 3600.0;
    let spec = EnergyPolicySpec {
        targets: Default::default(),
        workloads: None,
        starvation: Starvation {
            battery_below_percent: Some(30.0),
            min_runtime_minutes: None,
            power_above_watts: None,
            query: None,
            runway_below_recharge: Some(true),
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
            degrade: Some(Degrade::default()),
            ..Default::default()
        },
        scheduling: Default::default(),
        criticality: None,
        forecast: Default::default(),
    };
    let durations = spec.durations().unwrap();
    let ladder_durations =
        LadderDurations::of(&spec.forecast, spec.action.degrade.as_ref()).unwrap();
    let dark = |i: usize| i.is_multiple_of(5);
    let targets: Vec<TargetSnapshot> = (0..DEVICES)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert("zone".to_string(), format!("z{}", i % 10));
            labels.insert(
                "site".to_string(),
                if dark(i) { "night" } else { "day" }.to_string(),
            );
            let ratio = if dark(i) {
                0.2 + (i % 9) as f64 / 100.0
            } else {
                0.3 + (i % 70) as f64 / 100.0
            };
            TargetSnapshot {
                id: TargetId::device(format!("ns{}", i % 4), format!("dev-{i:05}")),
                labels,
                in_policy: true,
                alive: i % 50 != 1,
                taints: vec![],
                tainted: false,
                taint_ours: false,
                signals: TargetSignals {
                    battery_ratio: Some(ratio),
                    battery_energy_joules: Some(ratio * CAPACITY_J),
                    battery_capacity_joules: Some(CAPACITY_J),
                    battery_draw_watts: Some(30.0 + (i % 11) as f64),
                    watts: Some(30.0 + (i % 11) as f64),
                    ..Default::default()
                },
            }
        })
        .collect();
    // Night then day: 8–13 dark hours, then 150 W for 11 h, and again.
    let profiles: Vec<Option<SupplyProfile>> = (0..DEVICES)
        .map(|i| {
            let dark_hours = if dark(i) { 8 + i % 6 } else { i % 3 };
            let hours = (0..48)
                .map(|h| {
                    if (h % 24) < dark_hours {
                        0.0
                    } else if (h % 24) < dark_hours + 11 {
                        150.0
                    } else {
                        0.0
                    }
                })
                .collect();
            Some(SupplyProfile { hours })
        })
        .collect();
    let crit = |i: usize| match i % 10 {
        0 => Criticality::Critical,
        1..=4 => Criticality::Sheddable,
        _ => Criticality::Normal,
    };
    let workloads: Vec<WorkloadSnapshot> = (0..WORKLOADS)
        .map(|i| {
            let dev = i % DEVICES;
            let name = format!("wl-{i:06}");
            let namespace = format!("ns{}", dev % 4);
            WorkloadSnapshot {
                id: WorkloadId {
                    kind: WorkloadKind::EdgeWorkload,
                    namespace: namespace.clone(),
                    name: name.clone(),
                },
                target: Some(format!("dev-{dev:05}")),
                pinned: i % 17 == 0,
                ineligible: None,
                in_flight: false,
                pdb_blocked: false,
                constraints: Constraints::EdgeWorkload {
                    device_selector: if dark(dev) {
                        Some(Selector {
                            match_labels: [("site".to_string(), "night".to_string())].into(),
                            match_expressions: vec![],
                        })
                    } else {
                        (i % 3 == 0).then(|| Selector {
                            match_labels: [("zone".to_string(), format!("z{}", i % 10))].into(),
                            match_expressions: vec![],
                        })
                    },
                },
                owner: None,
                placement: Placement::Device,
                running: true,
                host_bound: None,
                tolerates_starvation: false,
                ladder: LadderFacts {
                    criticality: crit(i),
                    criticality_error: None,
                    watts: (i % 10 != 3).then_some(1.0 + (i % 5) as f64),
                    throttle: Err("not a pod".into()),
                    suspend: Ok(SuspendUnit {
                        kind: DegradedKind::EdgeWorkload,
                        namespace,
                        name,
                    }),
                },
            }
        })
        .collect();
    let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let now = t0 + chrono::Duration::seconds(180);
    // 1 000 suspends held from an hour ago: one sheddable workload on every other dark device.
    let held: Vec<Held> = (0..DEVICES)
        .filter(|d| dark(*d) && d % 2 == 0)
        .map(|d| {
            let w = &workloads[d + DEVICES];
            Held {
                who: Degradee::Unit(w.ladder.suspend.clone().unwrap()),
                step: DegradeStep::Suspend,
                target: targets[d].id.clone(),
                criticality: Criticality::Sheddable,
                saved_watts: 2.0,
                since: now - chrono::Duration::hours(1),
                dry_run: false,
            }
        })
        .collect();
    let restored = std::collections::HashMap::new();
    let history = MoveHistory::default();
    let input = |now, previous| PlanInput {
        spec: &spec,
        durations: &durations,
        now,
        targets: &targets,
        workloads: &workloads,
        previous,
        history: &history,
        max_gap: std::time::Duration::from_secs(600),
    };
    let empty = TargetStates::default();
    let warm = plan(&input(t0, &empty));
    // The runtime's part of the forecast: each target's verdict for `runwayBelowRecharge`.
    let verdicts = || -> usize {
        targets
            .iter()
            .zip(&profiles)
            .filter(|(t, p)| {
                p.as_ref()
                    .and_then(|p| ForecastInput::of(&t.signals, spec.forecast.reserve_percent, p))
                    .is_some_and(|i| forecast::below_recharge(&forecast::forecast(&i)))
            })
            .count()
    };
    let (mut plan_only, mut full, mut ladder_only) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..CYCLES {
        let c = cpu_ns();
        let p = plan(&input(now, &warm.states));
        plan_only.push(cpu_ns() - c);
        drop(p);
        let c = cpu_ns();
        let below = verdicts();
        let p = plan(&input(now, &warm.states));
        let l0 = cpu_ns();
        let l = ladder::plan_ladder(&LadderInput {
            spec: &spec,
            durations: &ladder_durations,
            now,
            targets: &targets,
            workloads: &workloads,
            plan: &p,
            profiles: &profiles,
            held: &held,
            restored: &restored,
            settle: std::time::Duration::from_secs(300),
        });
        let end = cpu_ns();
        full.push(end - c);
        ladder_only.push(end - l0);
        last = Some((p, l, below));
    }
    // What the runtime pays to learn the profiles each cycle, if it rebuilds them: 10 000
    // targets × 3 days of hourly samples.
    let history_samples: Vec<Vec<(Time, f64)>> = (0..DEVICES)
        .map(|i| {
            (0..72)
                .map(|h| {
                    (
                        now - chrono::Duration::hours(72 - h),
                        profiles[i].as_ref().unwrap().hours[(h % 24) as usize],
                    )
                })
                .collect()
        })
        .collect();
    let c = cpu_ns();
    let built = history_samples
        .iter()
        .filter_map(|s| {
            SupplyProfile::from_history(
                s,
                now,
                ladder_durations.period,
                spec.forecast.periods,
                ladder_durations.horizon,
            )
        })
        .count();
    let profiles_ms = (cpu_ns() - c) as f64 / 1e6;
    // Issue 28: what the runtime adds to each cycle's forecasts for the planner's destinations:
    // every target not below its recharge gets its spare watts (a bisection of forecasts).
    let c = cpu_ns();
    let spare: f64 = targets
        .iter()
        .zip(&profiles)
        .filter_map(|(t, p)| {
            let i = ForecastInput::of(&t.signals, spec.forecast.reserve_percent, p.as_ref()?)?;
            (!forecast::below_recharge(&forecast::forecast(&i))).then(|| forecast::spare_watts(&i))
        })
        .sum();
    let spare_ms = (cpu_ns() - c) as f64 / 1e6;
    println!("forecast spare watts of every target not below its recharge: {spare_ms:.1} ms on-CPU (sum {spare:.0} W)");
    let (p, l, below) = last.unwrap();
    let per = |ms: f64| ms * 1e3 / WORKLOADS as f64;
    let (plan_ms, full_ms, ladder_ms) = (
        median_ms(&mut plan_only),
        median_ms(&mut full),
        median_ms(&mut ladder_only),
    );
    let sheds = l
        .steps
        .iter()
        .filter(|s| matches!(s, ladder::LadderStep::Shed { .. }))
        .count();
    println!(
        "night site: {DEVICES} devices ({} starved, {below} with runway below recharge), {WORKLOADS} workloads, {} held; on-CPU medians over {CYCLES}: plan only {plan_ms:.1} ms ({:.2} µs/workload); plan + forecasts + ladder {full_ms:.1} ms ({:.2} µs/workload), of which the ladder {ladder_ms:.1} ms; {} forecasts, {sheds} sheds, {} restores, {} exhausted, {} not degradable; profiles from history for {built} targets {profiles_ms:.1} ms",
        p.starved().count(),
        held.len(),
        per(plan_ms),
        per(full_ms),
        l.forecasts.iter().filter(|f| f.is_some()).count(),
        l.steps.len() - sheds,
        l.exhausted.len(),
        l.not_degradable.len(),
    );
}

/// The issue-17 scenario: 1 000 starved devices whose work moves to healthy ones.
fn migrations() {
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
