//! Controller memory with a fleet in its stores: 10 000 EdgeDevices and 100 000 EdgeWorkloads
//! as typed objects in the same reflector stores the controller uses, then one snapshot and plan
//! built from them (what a cycle holds at its peak). Prints the process RSS; target < 300 MB.
//! Run: `cargo bench -p edgewatt-controller --bench rss`. No API server is needed: the stores are
//! fed the objects a watch would deliver.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use edgewatt_controller::{planner, snapshot, stores::trim};
use edgewatt_crds::{
    prom::{Reading, SignalTable},
    promql::Signal,
    EdgeDevice, EdgeWorkload, EnergyPolicySpec,
};
use kube::runtime::{reflector, watcher};
use serde_json::json;

const DEVICES: usize = 10_000;
const WORKLOADS: usize = 100_000;
/// As the controller's reflectors do (`stores::trim`); `EDGEWATT_RSS_UNTRIMMED=1` keeps whole
/// objects, for comparison.
static TRIM: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("EDGEWATT_RSS_UNTRIMMED").is_none());

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

fn report(what: &str) {
    println!(
        "{what:<44} RSS {:>6.1} MB   peak {:>6.1} MB",
        status_kib("VmRSS:") as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0
    );
}

fn device_name(i: usize) -> String {
    format!("dev-{i:05}")
}

fn main() {
    report("start");
    println!(
        "object sizes (bytes, without heap): EdgeWorkload {}, EdgeDevice {}, ObjectMeta {}",
        std::mem::size_of::<EdgeWorkload>(),
        std::mem::size_of::<EdgeDevice>(),
        std::mem::size_of::<kube::api::ObjectMeta>()
    );
    println!("objects trimmed as the controller's stores do: {}", *TRIM);
    let started = Instant::now();
    let (devices, mut dw) = reflector::store::<EdgeDevice>();
    let (workloads, mut ww) = reflector::store::<EdgeWorkload>();
    dw.apply_watcher_event(&watcher::Event::Init);
    ww.apply_watcher_event(&watcher::Event::Init);
    let per_device = WORKLOADS / DEVICES;
    for d in 0..DEVICES {
        let ns = format!("ns{}", d % 4);
        let names: Vec<String> = (0..per_device)
            .map(|k| format!("wl-{:06}", d * per_device + k))
            .collect();
        let mut labels = serde_json::Map::new();
        labels.insert("zone".into(), json!(format!("z{}", d % 20)));
        labels.insert("edgewatt.io/fleet".into(), json!("true"));
        for n in &names {
            labels.insert(format!("workload/{n}"), json!("true"));
        }
        let dev: EdgeDevice = serde_json::from_value(json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeDevice",
            "metadata": {"name": device_name(d), "namespace": ns, "labels": labels,
                "uid": format!("00000000-0000-0000-0000-{d:012}"), "resourceVersion": format!("{d}"),
                "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"requestTime": "2025-01-01T00:00:00Z",
                "heartbeat": {"periodSeconds": 60, "hardwareProfile": {"include": true, "scope": "delta"}}},
            "status": {"phase": "up", "lastSyncedResourceVersion": format!("{d}"),
                "workloads": names.iter().map(|n| json!({"name": n, "phase": "Running",
                    "lastTransitionTime": "2025-01-01T00:00:00Z", "lastDataUpload": "2025-01-01T00:00:00Z"})).collect::<Vec<_>>()}
        }))
        .unwrap();
        let mut dev = dev;
        if *TRIM {
            trim::device(&mut dev);
        }
        dw.apply_watcher_event(&watcher::Event::InitApply(dev));
        for (k, n) in names.iter().enumerate() {
            let w: EdgeWorkload = serde_json::from_value(json!({
                "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
                "metadata": {"name": n, "namespace": ns, "labels": {"app": n, "tier": "edge"},
                    "uid": format!("10000000-0000-0000-{d:04}-{k:012}"),
                    "resourceVersion": format!("{}", d * per_device + k),
                    "creationTimestamp": "2025-01-01T00:00:00Z"},
                "spec": {"device": device_name(d), "type": "pod",
                    "pod": {"spec": {"containers": [{"name": "app", "image": format!("quay.io/example/{n}:1.0"),
                        "env": [{"name": "MODE", "value": "edge"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
            }))
            .unwrap();
            let mut w = w;
            if *TRIM {
                trim::workload(&mut w);
            }
            ww.apply_watcher_event(&watcher::Event::InitApply(w));
        }
    }
    dw.apply_watcher_event(&watcher::Event::InitDone);
    ww.apply_watcher_event(&watcher::Event::InitDone);
    println!(
        "stores filled: {} EdgeDevices, {} EdgeWorkloads in {:.1}s",
        devices.state().len(),
        workloads.state().len(),
        started.elapsed().as_secs_f64()
    );
    report("stores (typed objects, as the reflectors hold them)");

    // One cycle's inputs and plan, built from the stores as the reconciler does.
    let spec: EnergyPolicySpec = serde_json::from_value(json!({
        "targets": {"edgeDeviceSelector": {"matchLabels": {"edgewatt.io/fleet": "true"}}},
        "starvation": {"batteryBelowPercent": 20, "for": "2m"},
        "recovery": {"batteryAbovePercent": 35, "for": "5m"},
        "action": {"mode": "Migrate", "maxConcurrent": 50, "maxPerHour": 500}
    }))
    .unwrap();
    let mut table = SignalTable::default();
    for d in 0..DEVICES {
        let ratio = if d % 50 == 0 {
            0.1
        } else {
            0.3 + (d % 7) as f64 / 10.0
        };
        table.readings.entry(device_name(d)).or_default().insert(
            Signal::BatteryRatio,
            Reading {
                value: ratio,
                age_secs: Some(5.0),
            },
        );
    }
    let prom = snapshot::PromData {
        devices: table,
        ..Default::default()
    };
    let t = Instant::now();
    let dev_state = devices.state();
    let wl_state = workloads.state();
    let targets =
        snapshot::device_targets("fleet", &spec, &dev_state, &prom, Duration::from_secs(900));
    let (ns_labels, no_pdbs, no_watts) = (HashMap::new(), HashMap::new(), Default::default());
    let around = snapshot::Around {
        ns_labels: &ns_labels,
        exhausted: &no_pdbs,
        own_namespace: "edgewatt-system",
        watts: &no_watts,
    };
    let wl = snapshot::edge_workloads(&spec, &wl_state, &dev_state, around);
    let durations = spec.durations().unwrap();
    let now = Utc::now();
    let first = planner::plan(&planner::PlanInput {
        spec: &spec,
        durations: &durations,
        now: now - chrono::Duration::minutes(3),
        targets: &targets,
        workloads: &wl,
        previous: &Default::default(),
        history: &Default::default(),
        max_gap: Duration::from_secs(600),
    });
    let plan = planner::plan(&planner::PlanInput {
        spec: &spec,
        durations: &durations,
        now,
        targets: &targets,
        workloads: &wl,
        previous: &first.states,
        history: &Default::default(),
        max_gap: Duration::from_secs(600),
    });
    println!(
        "snapshot + 2 plans in {:.0} ms: {} targets, {} workloads, {} starved, {} actions",
        t.elapsed().as_secs_f64() * 1000.0,
        targets.len(),
        wl.len(),
        plan.starved().count(),
        plan.actions.len()
    );
    report("stores + snapshot + plan (cycle peak)");
    drop((targets, wl, first, plan, dev_state, wl_state));
    report("after the cycle");
    let peak_mb = status_kib("VmHWM:") as f64 / 1024.0;
    println!("controller RSS with 10 000 devices and 100 000 workloads: peak {peak_mb:.0} MB (target < 300 MB)");
}
