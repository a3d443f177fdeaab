//! Estimator validation (issue 6): the load curve against held-out SPECpower results, and
//! self-calibration converging on a synthetic metered trace.
//! Run: `cargo bench -p edgewatt-exporter --bench estimator`.
//!
//! The held-out results give whole-server power, so the curve is scaled by each server's own
//! 100 % power: this measures the *shape* error, the part of the model the reference data decides.

use edgewatt_exporter::counter::WrappingCounter;
use edgewatt_exporter::estimator::{CpuInfo, Estimator, LoadCurve, TdpTable};
use edgewatt_exporter::source::{Context, Source};

fn main() {
    let curve = LoadCurve::bundled();
    let holdout: serde_json::Value =
        serde_json::from_str(include_str!("../data/specpower_holdout.json")).unwrap();
    let results = holdout["results"].as_object().unwrap();
    println!("load curve vs held-out SPECpower_ssj2008 results: absolute percentage error");
    print!("{:<62}", "result");
    for l in (0..=100).step_by(10) {
        print!("{l:>6}%");
    }
    println!();
    let mut per_level = vec![Vec::new(); 11];
    for (name, v) in results {
        let p: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        print!("{name:<62}");
        for (i, measured) in p.iter().enumerate() {
            let predicted = curve.at(i as f64 / 10.0) * p[10];
            let ape = (predicted - measured).abs() / measured * 100.0;
            per_level[i].push((name.contains("2010") || name.contains("2011"), ape));
            print!("{ape:>7.1}");
        }
        println!();
    }
    for (label, filter) in [
        ("MAPE, all held-out", None),
        ("MAPE, 2010-2011 servers", Some(true)),
        ("MAPE, 2008 servers", Some(false)),
    ] {
        print!("{label:<62}");
        let mut all = Vec::new();
        for level in &per_level {
            let v: Vec<f64> = level
                .iter()
                .filter(|(modern, _)| filter.is_none_or(|f| f == *modern))
                .map(|(_, e)| *e)
                .collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            all.push(m);
            print!("{m:>7.1}");
        }
        println!(
            "   (mean {:.1} %)",
            all.iter().sum::<f64>() / all.len() as f64
        );
    }

    // Calibration: RAPL counters generated from P = 14 W + 41 W · shape(u) plus noise, 1 s samples.
    let (idle, dynamic) = (14.0, 41.0);
    let cpu = CpuInfo {
        model_name: "Test CPU".into(),
        threads: 8,
        cores: 4,
        sockets: 1,
        ..CpuInfo::default()
    };
    let mut est = Estimator::new(cpu, &TdpTable::bundled(), None).calibrate_only();
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
