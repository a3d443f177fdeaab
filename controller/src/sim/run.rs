//! Runs of one fleet over one stretch of weather in virtual time: `unmanaged` (no edgewatt),
//! `migrate` (the policies with `action.degrade` removed; their forecast and
//! `runwayBelowRecharge` kept, so the two differ by the ladder alone) and `ladder` (as
//! configured), in parallel threads; and what each run reports.
//!
//! Each minute (the physics step): the [`Clock`] moves, due world events happen (instances
//! reach Running, waiting pods are placed, the node lifecycle evicts pods off dark nodes),
//! moves in flight are driven, every `decision_interval` each policy decides, then the minute's
//! energy is integrated; every hour each target's supply sample goes to the [`SupplyLog`] the
//! forecasts read.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::actions::ActionLog;
use super::fleet::Fleet;
use super::pv::MINUTES_PER_YEAR;
use super::twin::{PolicyTwin, SupplyLog};
use super::world::World;
use crate::clock::Clock;

/// Which run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Unmanaged,
    Migrate,
    Ladder,
}

impl RunKind {
    pub const ALL: [RunKind; 3] = [RunKind::Unmanaged, RunKind::Migrate, RunKind::Ladder];
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Unmanaged => "unmanaged",
            RunKind::Migrate => "migrate",
            RunKind::Ladder => "ladder",
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Local standard time of the first site: minute of the (365-day) year the run starts at.
    pub start_minute: u32,
    pub days: u32,
    /// Overrides the fleet's `physics.decisionInterval`.
    pub decision_interval: Option<Duration>,
    /// Points per plotted series (the series are sampled down to about this many).
    pub sample_points: usize,
    /// How many targets' state of charge is plotted.
    pub plot_targets: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            start_minute: 0,
            days: 14,
            decision_interval: None,
            sample_points: 1500,
            plot_targets: 8,
        }
    }
}

/// Minutes lost by criticality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ByCriticality {
    pub critical: u64,
    pub normal: u64,
    pub sheddable: u64,
}

/// One run's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run: RunKind,
    /// Replica-minutes in which a replica that should run did not serve.
    pub service_minutes_lost: ByCriticality,
    /// Share of replica-minutes served, percent.
    pub service_percent: [f64; 3],
    /// Target-minutes spent dark (nodes and devices).
    pub dark_node_minutes: u64,
    /// Pod evictions, EdgeWorkload moves started.
    pub moves: u64,
    pub evictions: u64,
    pub edge_moves: u64,
    pub edge_moves_failed: u64,
    /// Ladder steps: sheds taken (throttles and suspends of a Deployment or EdgeWorkload, one
    /// each), of which throttles; restores.
    pub sheds: u64,
    pub throttles: u64,
    pub restores: u64,
    /// Replicas suspended (a Deployment's suspend counts each of its replicas).
    pub replicas_suspended: u64,
    /// Moves back onto the target moved off within the hour, and replicas degraded again
    /// within the hour of a restore (counted by the world, per replica).
    pub flaps: u64,
    /// The ladder's own flap count (a degradee shed again within `flapWindow` of its restore;
    /// the controller's flaps metric).
    pub ladder_flaps: u64,
    /// Decisions × targets where shedding everything the ladder may was not enough.
    pub ladder_exhausted: u64,
    /// Decisions × starved targets without a forecast (no supply history for some hour ahead).
    pub starved_without_forecast: u64,
    /// Throttled pods replaced (evicted) while throttled: their ledger entries were let go.
    pub ladder_released: u64,
    pub max_moves_per_workload_per_hour: u32,
    /// Pods the node lifecycle evicted off nodes dark for the NotReady timeout.
    pub lifecycle_evictions: u64,
    /// Energy delivered to the loads.
    pub energy_kwh: f64,
    /// Solar not stored because the battery was full.
    pub solar_curtailed_kwh: f64,
    pub solar_kwh: f64,
    pub decisions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the plot draws of a run.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Hours since the start.
    pub hours: Vec<f64>,
    /// Per plotted target: its name and state of charge (percent) at each sample.
    pub soc: Vec<(String, Vec<f64>)>,
    /// Per criticality, share of replicas serving (percent) at each sample.
    pub service: [Vec<f64>; 3],
    /// Hours at which moves started.
    pub moves: Vec<f64>,
    /// Hours at which the ladder shed (throttled or suspended), and restored.
    pub sheds: Vec<f64>,
    pub restores: Vec<f64>,
}

/// The whole invocation's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub fleet: String,
    pub start: String,
    pub days: u32,
    pub step_seconds: u32,
    pub decision_interval_seconds: u64,
    pub nodes: usize,
    pub edge_devices: usize,
    pub replicas: usize,
    pub policies: Vec<String>,
    pub runs: Vec<RunReport>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `MM-DD` → minute of the 365-day year.
pub fn parse_start(s: &str) -> Result<u32, String> {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let bad = || format!("--start {s:?}: expected MM-DD (a day of a 365-day year, e.g. 01-08)");
    let (m, d) = s.split_once('-').ok_or_else(bad)?;
    let m: usize = m.parse().map_err(|_| bad())?;
    let d: u32 = d.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || d == 0 || d > DAYS[m - 1] {
        return Err(bad());
    }
    let day = DAYS[..m - 1].iter().sum::<u32>() + d - 1;
    Ok(day * 1440)
}

fn start_label(minute: u32) -> String {
    let t = Utc
        .with_ymd_and_hms(1990, 1, 1, 0, 0, 0)
        .single()
        .expect("valid")
        + chrono::Duration::minutes(i64::from(minute));
    t.format("%m-%d").to_string()
}

/// One run of `fleet`.
pub fn run(fleet: &Fleet, kind: RunKind, opts: &Options) -> (RunReport, Series) {
    run_with(fleet, kind, opts, None)
}

/// [`run`], logging what happened to the fleet in `log` when given.
pub fn run_with(
    fleet: &Fleet,
    kind: RunKind,
    opts: &Options,
    mut log: Option<&mut ActionLog>,
) -> (RunReport, Series) {
    let interval = opts.decision_interval.unwrap_or(fleet.decision_interval);
    let every = (interval.as_secs() / 60).max(1) as u32;
    let total = opts.days * 1440;
    // One clock for the fleet, in UTC; the first site's local start.
    let offset = fleet.sites[0].solar.utc_offset_minutes();
    let start_utc = (i64::from(opts.start_minute) - i64::from(offset))
        .rem_euclid(i64::from(MINUTES_PER_YEAR)) as u32;
    let t0: DateTime<Utc> = Utc
        .with_ymd_and_hms(1990, 1, 1, 0, 0, 0)
        .single()
        .expect("valid")
        + chrono::Duration::minutes(i64::from(start_utc));
    let clock = Clock::starting_at(t0);

    let mut world = World::new(fleet);
    let keep = match kind {
        RunKind::Unmanaged => 0,
        _ => SupplyLog::hours_needed(&fleet.policies),
    };
    let mut supply = (keep > 0).then(|| SupplyLog::new(fleet, t0, start_utc, keep));
    let mut twins: Vec<PolicyTwin> = match kind {
        RunKind::Unmanaged => Vec::new(),
        RunKind::Migrate | RunKind::Ladder => fleet
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut p = p.clone();
                if kind == RunKind::Migrate {
                    p.spec.action.degrade = None;
                }
                PolicyTwin::new(i, p, fleet, &world, interval)
            })
            .collect(),
    };

    let sample_every = (total as usize / opts.sample_points.max(1)).max(1) as u32;
    let plot_n = opts.plot_targets.min(world.targets.len());
    let by_crit = world.replicas_by_criticality();
    let mut series = Series {
        soc: world.targets[..plot_n]
            .iter()
            .map(|t| (t.def.id.name.clone(), Vec::new()))
            .collect(),
        ..Series::default()
    };
    let mut site_w = vec![0f32; fleet.sites.len()];
    let mut moves_seen = 0;
    let ladder_steps = |twins: &[PolicyTwin]| -> (u64, u64) {
        twins.iter().fold((0, 0), |(s, r), t| {
            (s + t.counts.sheds, r + t.counts.restores)
        })
    };
    let (mut sheds_seen, mut restores_seen) = (0, 0);
    for m in 0..total {
        clock.set(t0 + chrono::Duration::minutes(i64::from(m)));
        let now = clock.now();
        world.begin_step(m);
        for t in &mut twins {
            t.drive_moves(&mut world, now);
        }
        if let Some(l) = log.as_deref_mut() {
            l.observe(&world);
        }
        if m % every == 0 {
            for t in &mut twins {
                t.decide(&mut world, now, supply.as_ref());
            }
            let (sh, re) = ladder_steps(&twins);
            let h = f64::from(m) / 60.0;
            if sh > sheds_seen {
                series.sheds.push(h);
            }
            if re > restores_seen {
                series.restores.push(h);
            }
            (sheds_seen, restores_seen) = (sh, re);
            if let Some(l) = log.as_deref_mut() {
                l.observe(&world);
            }
        }
        let moy = (start_utc + m) % MINUTES_PER_YEAR;
        for (w, s) in site_w.iter_mut().zip(&fleet.sites) {
            *w = s.solar.watts_per_wp_utc(moy);
        }
        world.physics(&site_w);
        if let Some(l) = log.as_deref_mut() {
            l.observe(&world);
        }
        if (m + 1) % 60 == 0 {
            if let Some(log) = supply.as_mut() {
                log.record_hour(&mut world, now - chrono::Duration::minutes(59));
            }
        }
        let h = f64::from(m) / 60.0;
        if world.totals.moves > moves_seen {
            moves_seen = world.totals.moves;
            series.moves.push(h);
        }
        if m % sample_every == 0 {
            series.hours.push(h);
            for (k, (_, v)) in series.soc.iter_mut().enumerate() {
                v.push(world.targets[k].ratio() * 100.0);
            }
            let lost = world.not_serving();
            for c in 0..3 {
                let n = by_crit[c].max(1) as f64;
                series.service[c].push(100.0 * (n - lost[c] as f64) / n);
            }
        }
    }

    let tot = &world.totals;
    let lost = tot.service_minutes_lost;
    let pct = |c: usize| {
        let n = by_crit[c] * u64::from(total);
        if n == 0 {
            100.0
        } else {
            round3(100.0 * (n - lost[c]) as f64 / n as f64)
        }
    };
    let sum = |f: fn(&super::twin::MoveCounts) -> u64| twins.iter().map(|t| f(&t.counts)).sum();
    let report = RunReport {
        run: kind,
        service_minutes_lost: ByCriticality {
            critical: lost[0],
            normal: lost[1],
            sheddable: lost[2],
        },
        service_percent: [pct(0), pct(1), pct(2)],
        dark_node_minutes: tot.dark_target_minutes,
        moves: tot.moves,
        evictions: sum(|c| c.evictions),
        edge_moves: sum(|c| c.moves_started),
        edge_moves_failed: sum(|c| c.failed),
        sheds: sum(|c| c.sheds),
        throttles: sum(|c| c.throttles),
        restores: sum(|c| c.restores),
        replicas_suspended: tot.sheds,
        flaps: tot.flaps,
        ladder_flaps: sum(|c| c.ladder_flaps),
        ladder_exhausted: sum(|c| c.exhausted),
        starved_without_forecast: sum(|c| c.starved_unforecast),
        ladder_released: sum(|c| c.released),
        max_moves_per_workload_per_hour: tot.max_moves_per_workload_per_hour,
        lifecycle_evictions: tot.lifecycle_evictions,
        energy_kwh: round3(tot.consumed_wh / 1000.0),
        solar_curtailed_kwh: round3(tot.curtailed_wh / 1000.0),
        solar_kwh: round3(tot.solar_wh / 1000.0),
        decisions: sum(|c| c.plans),
        note: None,
    };
    (report, series)
}

/// The three runs, in parallel threads, and the report.
pub fn simulate(fleet: &Fleet, opts: &Options) -> (Report, Vec<Series>) {
    let results: Vec<(RunReport, Series)> = std::thread::scope(|s| {
        let handles: Vec<_> = RunKind::ALL
            .iter()
            .map(|&k| s.spawn(move || run(fleet, k, opts)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a run panicked"))
            .collect()
    });
    let interval = opts.decision_interval.unwrap_or(fleet.decision_interval);
    let count = |k| fleet.targets.iter().filter(|t| t.id.kind == k).count();
    let report = Report {
        fleet: fleet.file.clone(),
        start: start_label(opts.start_minute),
        days: opts.days,
        step_seconds: 60,
        decision_interval_seconds: interval.as_secs(),
        nodes: count(edgewatt_crds::TargetKind::Node),
        edge_devices: count(edgewatt_crds::TargetKind::EdgeDevice),
        replicas: fleet.workloads.iter().map(|w| w.replicas as usize).sum(),
        policies: fleet
            .policies
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect(),
        runs: results.iter().map(|(r, _)| r.clone()).collect(),
    };
    (report, results.into_iter().map(|(_, s)| s).collect())
}

/// The report as a table.
pub fn text(report: &Report) -> String {
    let mut s = format!(
        "edgewatt simulate: {} — {} days from {} (local standard time of the first site), step {} s, decisions every {} s\n\
         {} nodes, {} edge devices, {} workload replicas, policies: {}\n\n",
        report.fleet,
        report.days,
        report.start,
        report.step_seconds,
        report.decision_interval_seconds,
        report.nodes,
        report.edge_devices,
        report.replicas,
        if report.policies.is_empty() {
            "none".to_string()
        } else {
            report.policies.join(", ")
        },
    );
    s.push_str(&format!(
        "{:<10} {:>28} {:>22} {:>9} {:>6} {:>6} {:>8} {:>6} {:>9} {:>8} {:>10}\n",
        "run",
        "service min lost crit/norm/shed",
        "served % crit/norm/shed",
        "dark min",
        "moves",
        "sheds",
        "restores",
        "flaps",
        "max mv/h",
        "energy",
        "curtailed"
    ));
    for r in &report.runs {
        let l = &r.service_minutes_lost;
        let p = &r.service_percent;
        s.push_str(&format!(
            "{:<10} {:>28} {:>22} {:>9} {:>6} {:>6} {:>8} {:>6} {:>9} {:>8} {:>10}\n",
            r.run.as_str(),
            format!("{}/{}/{}", l.critical, l.normal, l.sheddable),
            format!("{:.1}/{:.1}/{:.1}", p[0], p[1], p[2]),
            r.dark_node_minutes,
            r.moves,
            r.sheds,
            r.restores,
            r.flaps,
            r.max_moves_per_workload_per_hour,
            format!("{:.2} kWh", r.energy_kwh),
            format!("{:.2} kWh", r.solar_curtailed_kwh),
        ));
    }
    for r in &report.runs {
        if let Some(n) = &r.note {
            s.push_str(&format!("\n{}: {n}", r.run.as_str()));
        }
    }
    s.push('\n');
    s
}
