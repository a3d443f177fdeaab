//! The simulator at fleet scale: `examples/simulate/scale-1000.yaml` (1 000 nodes and devices,
//! 10 000 workload replicas, one policy) for a year at a 1-minute physics step, the three runs in
//! parallel threads. Prints wall time, the process's CPU time and peak RSS (BENCHMARKS.md,
//! "Simulator"; target: under 10 minutes on 2 cores, under 2 GB).
//! Run: `cargo bench -p edgewatt-controller --bench simulate`; `EDGEWATT_SIM_DAYS` (default 365)
//! and `EDGEWATT_SIM_INTERVAL` (a duration, default the fleet's) change the run.

use std::time::{Duration, Instant};

use edgewatt_controller::sim::{fleet::Fleet, run};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of the whole process (all threads), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/simulate/scale-1000.yaml"
    );
    let days: u32 = std::env::var("EDGEWATT_SIM_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(365);
    let interval: Option<Duration> = std::env::var("EDGEWATT_SIM_INTERVAL")
        .ok()
        .map(|d| edgewatt_crds::duration::parse(&d).expect("EDGEWATT_SIM_INTERVAL"));
    let started = Instant::now();
    let fleet = Fleet::load(path).unwrap_or_else(|e| panic!("{e}"));
    let loaded = started.elapsed();
    let opts = run::Options {
        start_minute: 0,
        days,
        decision_interval: interval,
        ..run::Options::default()
    };
    let (report, _) = run::simulate(&fleet, &opts);
    let wall = started.elapsed();
    print!("{}", run::text(&report));
    println!(
        "\n{} targets, {} replicas, {days} days, decisions every {} s: load {:.1} s, total wall {:.1} s, CPU {:.1} s, peak RSS {:.0} MB",
        fleet.targets.len(),
        report.replicas,
        report.decision_interval_seconds,
        loaded.as_secs_f64(),
        wall.as_secs_f64(),
        cpu_seconds(),
        status_kib("VmHWM:") as f64 / 1024.0
    );
}
