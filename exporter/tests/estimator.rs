//! The estimator through its public interface: calibration convergence on a synthetic metered
//! trace, persistence and reuse when the meter disappears, and bad `/proc/cpuinfo`.

use std::time::{Duration, Instant};

use edgewatt_exporter::estimator::{
    parse_cpuinfo, Confidence, CpuInfo, Estimator, LoadCurve, TdpTable,
};
use edgewatt_exporter::fixture::FixtureTree;
use edgewatt_exporter::source::{Context, MeterValue, Source};
use edgewatt_exporter::sysfs::HostRoot;

fn ctx(now: Instant, u: f64) -> Context {
    Context {
        now,
        cpu_busy_ratio: Some(u),
        cpu_freq_ratio: None,
    }
}

fn cpu() -> CpuInfo {
    CpuInfo {
        model_name: "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz".into(),
        threads: 8,
        cores: 4,
        sockets: 1,
        ..CpuInfo::default()
    }
}

/// 5 minutes of 1 s samples from a known curve with ±5 % noise: coefficients within 5 %; then
/// saved, reloaded by a fresh estimator, and used once the meter has been silent.
#[test]
fn calibrates_persists_and_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("calibration.json");
    let curve = LoadCurve::bundled();
    let (idle, dynamic) = (9.0, 23.0);
    let start = Instant::now();
    let mut est = Estimator::new(cpu(), &TdpTable::bundled(), Some(file.clone()));
    assert_eq!(
        est.confidence(),
        Confidence::Medium,
        "known model on bare metal"
    );
    let mut seed = 7u64;
    let mut noise = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.1
    };
    for s in 0..300u64 {
        let u = 0.5 + 0.45 * (s as f64 / 13.0).sin();
        let w = (idle + dynamic * curve.shape(u)) * (1.0 + noise());
        est.observe_measured(&ctx(start + Duration::from_secs(s), u), w);
    }
    let t = est.fit().theta;
    assert!((t[0] / idle - 1.0).abs() < 0.05, "idle {t:?}");
    assert!((t[1] / dynamic - 1.0).abs() < 0.05, "dynamic {t:?}");
    assert_eq!(est.confidence(), Confidence::Calibrated);
    // It keeps estimating (from the fit now) so it can stand in the moment the meter goes; the
    // collector publishes it only while no meter reports (tests/fallback.rs).
    let s = est
        .sample(&ctx(start + Duration::from_secs(300), 1.0))
        .unwrap();
    let MeterValue::Watts(w) = s.meters[0].value else {
        panic!("watts")
    };
    assert!(
        (w - (idle + dynamic)).abs() / (idle + dynamic) < 0.05,
        "{w}"
    );
    assert!(file.exists(), "coefficients persisted");

    // A new process on the same machine without the meter: calibrated numbers from the file.
    let mut fresh = Estimator::new(cpu(), &TdpTable::bundled(), Some(file.clone()));
    assert_eq!(fresh.confidence(), Confidence::Calibrated);
    let s = fresh.sample(&ctx(Instant::now(), 1.0)).unwrap();
    let MeterValue::Watts(w) = s.meters[0].value else {
        panic!("watts")
    };
    assert!(
        (w - (idle + dynamic)).abs() / (idle + dynamic) < 0.05,
        "{w}"
    );
    assert_eq!(s.meters[0].zone, "package");

    // Another CPU ignores the file.
    let other = CpuInfo {
        model_name: "Other".into(),
        ..cpu()
    };
    assert_ne!(
        Estimator::new(other, &TdpTable::bundled(), Some(file)).confidence(),
        Confidence::Calibrated
    );
}

#[test]
fn bad_cpuinfo_gives_the_default_model() {
    for text in [
        "",
        "garbage\n\u{0}\u{1}::::",
        "processor : x\nmodel name :",
        "flags: hypervisor",
    ] {
        let info = parse_cpuinfo(text);
        let est = Estimator::new(info, &TdpTable::bundled(), None);
        assert_eq!(est.reference(), "default", "{text:?}");
        let w = est.estimate(0.5);
        assert!(w.is_finite() && w > 0.0, "{text:?}: {w}");
    }
    // missing /proc/cpuinfo: still an estimator, with the default model
    let dir = tempfile::tempdir().unwrap();
    let t = FixtureTree::new(dir.path());
    let est = Estimator::for_host(&HostRoot::new(t.root()), None).unwrap();
    assert_eq!(est.reference(), "default");
}
