//! Estimator validation (issue 6): the load curves against published SPECpower_ssj2008 results by
//! leave-one-out cross-validation, and self-calibration converging on a synthetic metered trace.
//! Run: `cargo bench -p edgewatt-exporter --bench estimator`.
//!
//! Each of the results in data/specpower_results.json is held out in turn; its curve is rebuilt
//! exactly as the exporter's bundled one is (`LoadCurve::median_of` over the other results of the
//! era `LoadCurveEra::of` gives its CPU name) and compared with the measured watts. The results
//! give whole-server power, so the curve is scaled by each server's own 100 % power: this measures
//! the *shape* error, the part of the model the reference data decides (TDP is a separate input).

use edgewatt_exporter::counter::WrappingCounter;
use edgewatt_exporter::estimator::{CpuInfo, Estimator, LoadCurve, LoadCurveEra, TdpTable};
use edgewatt_exporter::source::{Context, Source};

struct Result {
    name: String,
    cpu: String,
    watts: Vec<f64>,
}

fn load_results() -> Vec<Result> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../data/specpower_results.json")).unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let system = r["system"].as_str().unwrap();
            let name = match (r["id"].as_str(), r["published"].as_str()) {
                (Some(id), _) => format!("{} {system}", id.trim_start_matches("power_ssj2008-")),
                (None, Some(p)) => format!("({p}) {system}"),
                (None, None) => system.to_string(),
            };
            Result {
                name,
                cpu: r["cpu"].as_str().unwrap().to_string(),
                watts: r["watts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
            }
        })
        .collect()
}

/// Absolute percentage error per load level of `curve` scaled to `r`'s 100 % power.
fn ape(curve: &LoadCurve, r: &Result) -> Vec<f64> {
    r.watts
        .iter()
        .enumerate()
        .map(|(i, measured)| {
            let predicted = curve.at(i as f64 / 10.0) * r.watts[10];
            (predicted - measured).abs() / measured * 100.0
        })
        .collect()
}

/// Leave-one-out errors; `by_era` false pools all results into one curve (the ablation).
fn cross_validate(results: &[Result], by_era: bool) -> Vec<Vec<f64>> {
    results
        .iter()
        .enumerate()
        .map(|(i, held_out)| {
            let era = LoadCurveEra::of(&held_out.cpu);
            let curve = LoadCurve::median_of(
                results
                    .iter()
                    .enumerate()
                    .filter(|(j, r)| *j != i && (!by_era || LoadCurveEra::of(&r.cpu) == era))
                    .map(|(_, r)| r.watts.as_slice()),
            );
            ape(&curve, held_out)
        })
        .collect()
}

fn print_mape(label: &str, errors: &[&Vec<f64>]) {
    print!("{label:<58}");
    let per_level: Vec<f64> = (0..11)
        .map(|k| errors.iter().map(|e| e[k]).sum::<f64>() / errors.len() as f64)
        .collect();
    for m in &per_level {
        print!("{m:>6.1}");
    }
    let mean = per_level.iter().sum::<f64>() / per_level.len() as f64;
    let worst = per_level.iter().cloned().fold(0.0, f64::max);
    println!("   mean {mean:.1} %, worst level {worst:.1} %");
}

fn main() {
    let results = load_results();
    let eras: Vec<LoadCurveEra> = results.iter().map(|r| LoadCurveEra::of(&r.cpu)).collect();
    let loo = cross_validate(&results, true);
    println!(
        "load curves vs {} published SPECpower_ssj2008 results, leave-one-out: absolute percentage error",
        results.len()
    );
    print!("{:<58}", "result (era)");
    for l in (0..=100).step_by(10) {
        print!("{l:>5}%");
    }
    println!();
    for ((r, e), era) in results.iter().zip(&loo).zip(&eras) {
        let tag = if *era == LoadCurveEra::Legacy {
            " (legacy)"
        } else {
            ""
        };
        let label: String = format!("{}{tag}", r.name).chars().take(57).collect();
        print!("{label:<58}");
        for x in e {
            print!("{x:>6.1}");
        }
        println!();
    }
    println!();
    let all: Vec<&Vec<f64>> = loo.iter().collect();
    let of_era = |want: LoadCurveEra| -> Vec<&Vec<f64>> {
        loo.iter()
            .zip(&eras)
            .filter(|(_, e)| **e == want)
            .map(|(x, _)| x)
            .collect()
    };
    print_mape(
        &format!("MAPE, all {} results (shipped method)", all.len()),
        &all,
    );
    let modern = of_era(LoadCurveEra::Modern);
    print_mape(
        &format!("MAPE, {} modern-era results", modern.len()),
        &modern,
    );
    let legacy = of_era(LoadCurveEra::Legacy);
    print_mape(
        &format!("MAPE, {} legacy-era results (pre-Nehalem)", legacy.len()),
        &legacy,
    );
    let pooled = cross_validate(&results, false);
    let pooled: Vec<&Vec<f64>> = pooled.iter().collect();
    print_mape("ablation: one pooled curve, no era split", &pooled);
    for era in [LoadCurveEra::Modern, LoadCurveEra::Legacy] {
        let c = LoadCurve::bundled_era(era);
        let r: Vec<String> = c.ratios().iter().map(|x| format!("{x:.3}")).collect();
        println!("bundled {era:?} curve: {}", r.join(" "));
    }
    let curve = LoadCurve::bundled();

    // Calibration: RAPL counters generated from P = 14 W + 41 W · shape(u) plus noise, 1 s samples.
    let (idle, dynamic) = (14.0, 41.0);
    let cpu = CpuInfo {
        model_name: "Test CPU".into(),
        threads: 8,
        cores: 4,
        sockets: 1,
        ..CpuInfo::default()
    };
    let mut est = Estimator::new(cpu, &TdpTable::bundled(), None);
    let mut counter = WrappingCounter::new(262_143_328_850);
    let mut raw: u64 = 262_100_000_000; // wraps during the trace
    counter.update(raw);
    let mut last_total = 0u128;
    let mut seed = 42u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let now = std::time::Instant::now();
    println!("\ncalibration on a synthetic RAPL trace (true idle {idle} W, dynamic {dynamic} W, ±5 % noise, 1 s samples)");
    for second in 1..=300u64 {
        let u =
            (0.5 + 0.45 * ((second as f64) / 17.0).sin() + 0.05 * (rnd() - 0.5)).clamp(0.0, 1.0);
        let watts = (idle + dynamic * curve.shape(u)) * (1.0 + 0.1 * (rnd() - 0.5));
        raw = (raw + (watts * 1e6) as u64) % 262_143_328_850;
        let total = counter.update(raw);
        let measured = (total - last_total) as f64 / 1e6; // joules in 1 s = watts
        last_total = total;
        let ctx = Context {
            now,
            cpu_busy_ratio: Some(u),
            cpu_freq_ratio: None,
        };
        est.observe_measured(&ctx, measured);
        if [30, 60, 120, 300].contains(&second) {
            let t = est.fit().theta;
            println!(
                "  after {second:>3} s: idle {:.2} W ({:+.1} %), dynamic {:.2} W ({:+.1} %), fit RMSE {:.2} W, usable {}",
                t[0], (t[0] / idle - 1.0) * 100.0, t[1], (t[1] / dynamic - 1.0) * 100.0, est.fit().rmse, est.fit().is_usable()
            );
        }
    }
}
