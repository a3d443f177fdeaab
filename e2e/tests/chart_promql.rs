//! Every PromQL expression the chart ships (dashboards, alert rules, Grafana alert rules; listed
//! by `charts/tests/promql.py --list`) evaluated against a real Prometheus scraping real
//! `edgewatt-exporter serve`, `edgewatt-controller` and `edgewatt-scheduler` processes, after a
//! real migration: each must return data, or — where it only has data after an event this run
//! does not produce (a failed migration, a down exporter) — every series it selects must exist
//! with the labels it matches on. A renamed metric or label in the code, the dashboards or the
//! rules fails here.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use edgewatt_exporter::fixture::{ids, pod_cgroup, BatteryFiles, FixtureTree};
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};

const NS: &str = "shop";

/// Series this test cannot produce, and why.
const ABSENT: &[(&str, &str)] = &[
    (
        "_gpu_",
        "needs an NVIDIA GPU (the NVML source is tested with a stand-in in the exporter's tests)",
    ),
    // The continuity series need the runway forecast, which needs days of supply history in
    // Prometheus (and the ladder a whole site starved): proven through the controller's public
    // metrics in controller/tests/ladder_runtime.rs; their names are the ones crds defines.
    (
        "_forecast_seconds",
        "needs days of supply history (controller/tests/ladder_runtime.rs)",
    ),
    (
        "_ladder_",
        "needs a starved site under the ladder (controller/tests/ladder_runtime.rs)",
    ),
    (
        "_degraded_workloads",
        "needs a starved site under the ladder (controller/tests/ladder_runtime.rs)",
    ),
];

fn chart_exprs() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = root.join(".venv/bin/python");
    assert!(py.exists(), "{} missing: run `make deps`", py.display());
    let out = std::process::Command::new(py)
        .arg(root.join("charts/tests/promql.py"))
        .arg("--list")
        .output()
        .expect("charts/tests/promql.py --list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|e| {
            (
                e["where"].as_str().unwrap().to_string(),
                e["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The vector selectors of edgewatt's metrics (and `up`) in an expression: (name, matchers).
/// (label, operator, value)
type Matcher = (String, String, String);

fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c == '"' {
            // skip string literals outside selectors
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len()
                && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
            {
                i += 1;
            }
            let name = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let mut matchers = Vec::new();
            if j < b.len() && b[j] == b'{' {
                let end = expr[j..].find('}').map(|e| j + e).unwrap_or(b.len() - 1);
                for m in split_matchers(&expr[j + 1..end]) {
                    matchers.push(m);
                }
                i = end + 1;
            } else if j < b.len() && b[j] == b'(' {
                continue; // a function or aggregation
            }
            if name.starts_with("edgewatt_") || name == "up" {
                out.push((name.to_string(), matchers));
            }
            continue;
        }
        i += 1;
    }
    out
}

fn split_matchers(s: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).unwrap();
        let label = rest[..op_at].trim().to_string();
        let op_len = if rest[op_at..].starts_with("=~")
            || rest[op_at..].starts_with("!~")
            || rest[op_at..].starts_with("!=")
        {
            2
        } else {
            1
        };
        let op = rest[op_at..op_at + op_len].to_string();
        let after = rest[op_at + op_len..].trim_start();
        let close = after[1..].find('"').unwrap() + 1;
        let value = after[1..close].to_string();
        out.push((label, op, value));
        rest = after[close + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out
}

fn selector_text(name: &str, m: &[Matcher]) -> String {
    let inner: Vec<String> = m.iter().map(|(l, o, v)| format!("{l}{o}\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// `edge-c`'s root filesystem: RAPL package and DRAM zones, a discharging battery, a pod's
/// process and a system process (their counters advance in the test).
fn edge_c_fixture(tree: &FixtureTree) {
    tree.proc_stat(10, 10);
    tree.cpuinfo("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 8, false);
    tree.rapl_zone("0", "package-0", 1_000_000, 262_143_328_850);
    tree.rapl_zone("0:0", "dram", 1_000_000, 262_143_328_850);
    tree.battery(
        "BAT0",
        &BatteryFiles {
            status: "Discharging",
            capacity: Some(60),
            energy_now_uwh: Some(30_000_000),
            energy_full_uwh: Some(50_000_000),
            power_now_uw: Some(9_000_000),
            ..Default::default()
        },
    );
    tree.mains("AC", false);
    let (uid, cid) = ids(7);
    tree.process(100, "app", 5, &pod_cgroup(&uid, &cid));
    tree.process(200, "sshd", 1, "/system.slice/sshd.service");
}

/// The whole loop installed with `examples/chart-values-edge.yaml` (kube-prometheus-stack's
/// `release` label, a grid intensity of 380 g/kWh and a solar zone of 45) plus a node budget of
/// 45 W (`exporter.powerBudgetWatts`): `edge-c` is a solar node, so the zone's DaemonSet runs
/// there; then a real migration: node-x over budget, its pod evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_expressions_return_data() {
    if needs_double("it runs exporters on simulated nodes (a solar-zone node among them) whose power and batteries it drives") {
        return;
    }
    let exprs = chart_exprs();
    assert!(
        exprs.len() > 30,
        "expected the chart's expressions, got {}",
        exprs.len()
    );
    let mut install = Install::edge_example();
    edgewatt_e2e::chart::merge(
        &mut install.values,
        &json!({"exporter": {"powerBudgetWatts": 45}}),
    );
    let mut l = Loop::start_with(
        &[
            ("node-x", Kind::Node),
            ("node-y", Kind::Node),
            (
                "edge-c",
                Kind::LabelledNode(json!({"edgewatt.io/grid": "solar"})),
            ),
        ],
        install,
        |name, tree| {
            if name == "edge-c" {
                edge_c_fixture(tree)
            }
        },
    )
    .await;
    let solar = l.sim("edge-c").exporter.as_ref().unwrap().name.clone();
    assert!(
        solar.starts_with("edgewatt-exporter-solar-"),
        "the solar zone's DaemonSet runs on edge-c: {solar}"
    );
    let ticker_root = l.sim("edge-c").dir.path().to_path_buf();
    l.spawn_task(tokio::spawn(async move {
        let t = FixtureTree::new(&ticker_root);
        for i in 1u64.. {
            t.rapl_energy("0", 1_000_000 + i * 5_000_000);
            t.rapl_energy("0:0", 1_000_000 + i * 1_000_000);
            t.proc_stat(10 + i * 60, 10 + i * 40);
            t.process_ticks(100, "app", 5 + i * 40);
            t.process_ticks(200, "sshd", 1 + i * 10);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }));
    tokio::task::block_in_place(|| {
        l.prom
            .wait_for_series(
                "edgewatt_node_co2_grams_total{node_name=\"edge-c\"}",
                Duration::from_secs(30),
            )
            .unwrap();
    });
    l.timeline
        .mark("the solar zone's exporter on edge-c scraped");

    // A real migration for the controller's metrics: node-x goes over its budget, its pod is evicted.
    l.cluster.namespace(NS, json!({})).await;
    let pods = l.cluster.pods(NS);
    l.cluster
        .create(
            &pods,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-7d9f8-00001", "namespace": NS, "labels": {"app": "web"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8",
                        "uid": "11111111-2222-3333-4444-555555555555", "controller": true}]},
                "spec": {"nodeName": "node-x", "containers": [{"name": "web", "image": "nginx"}]}}),
        )
        .await;
    pods.patch_status(
        "web-7d9f8-00001",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    let mut p = policy(
        "power-budget",
        "Migrate",
        json!({"nodeSelector": {"matchLabels": {"power": "battery"}}}),
        "2s",
    );
    p["spec"]["starvation"] = json!({"powerAboveWatts": 5, "for": "2s"});
    l.cluster.apply(&l.cluster.policies(), p).await;
    l.sim("node-x").set_power(80.0);
    l.sim("node-y").set_power(20.0);
    l.timeline.mark("node-x draws 80 W against a 60 W budget");
    let migrated = wait_for(
        "a Succeeded migration in Prometheus",
        Duration::from_secs(60),
        || async {
            l.query_value("sum(edgewatt_migrations_total{result=\"Succeeded\"})")
                .await
                .filter(|v| *v >= 1.0)
        },
    )
    .await;
    l.timeline.mark(format!(
        "{migrated} migration(s) scraped from the controller"
    ));
    wait_for(
        "node-x starved in Prometheus",
        Duration::from_secs(30),
        || async {
            l.query_value("max(edgewatt_target_starved{name=\"node-x\"})")
                .await
                .filter(|v| *v == 1.0)
        },
    )
    .await;
    // kube-scheduler calling the extender (as configured by the chart's scheduler ConfigMap)
    let http = reqwest::Client::new();
    for verb in ["filter", "prioritize"] {
        let r = http
            .post(format!("http://{}/{verb}", l.extender_addr()))
            .json(
                &json!({"Pod": {"metadata": {"name": "p", "namespace": NS}, "spec": {}},
                "Nodes": null, "NodeNames": ["node-x", "node-y"]}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{verb}: {}", r.status());
    }
    // two more scrapes so rate()/increase() have points after the event
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut report: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (place, expr) in &exprs {
        let whole = l.query(expr).await;
        let Some(result) = whole.as_array() else {
            failures.push(format!("{place}: query failed: {expr}"));
            continue;
        };
        if !result.is_empty() {
            report
                .entry("returns data")
                .or_default()
                .push(place.clone());
            continue;
        }
        // no data as a whole: each selector must match series (or, for a matcher on an event
        // label value, the metric must exist with that label)
        let mut why = Vec::new();
        let mut ok = true;
        for (name, m) in selectors(expr) {
            if let Some((_, reason)) = ABSENT.iter().find(|(pat, _)| name.contains(pat)) {
                why.push(format!("{name}: {reason}"));
                continue;
            }
            let sel = selector_text(&name, &m);
            if l.query(&sel)
                .await
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                continue;
            }
            let series = l.query(&name).await;
            let series = series.as_array().cloned().unwrap_or_default();
            let has_labels = !series.is_empty()
                && m.iter()
                    .all(|(label, _, _)| series.iter().any(|s| s["metric"].get(label).is_some()));
            if has_labels {
                why.push(format!(
                    "{sel}: no such event in this run; {name} has the labels"
                ));
            } else {
                ok = false;
                why.push(format!("{sel}: no series ({} of {name})", series.len()));
            }
        }
        if ok {
            report
                .entry("selectors wired, no data for this run")
                .or_default()
                .push(format!("{place} [{}]", why.join("; ")));
        } else {
            failures.push(format!("{place}: {expr}\n      {}", why.join("\n      ")));
        }
    }
    for (k, v) in &report {
        eprintln!("{k} ({}):", v.len());
        for p in v {
            eprintln!("  {p}");
        }
    }
    l.timeline
        .print("chart expressions against the real binaries");
    assert!(
        failures.is_empty(),
        "chart expressions without data:\n  {}",
        failures.join("\n  ")
    );
    let with_data = &report["returns data"];
    for must in [
        "cluster-power.json panel 'Draw by node'",
        "cluster-power.json panel 'Power by namespace'",
        "edge-devices.json panel 'Battery charge'",
        "edge-devices.json panel 'Runtime left at current draw'",
        "edge-devices.json panel 'Budget vs draw'",
        "co2.json panel 'CO2 rate by node'",
        "co2.json panel 'Carbon intensity per node (g/kWh)'",
        "migrations.json panel 'Migrations (timeline)'",
        "migrations.json panel 'Starved targets'",
        "migrations.json annotation 'Migrations'",
        "alerts.rules.yaml EdgewattMigration",
        "alerts.rules.yaml EdgewattTargetStarved",
    ] {
        assert!(
            with_data.iter().any(|p| p.starts_with(must)),
            "{must} returned no data"
        );
    }
    // the CO2 dashboard's per-node intensity recovers what the zone's exporter was configured
    // with (over a window the short run fills: rate() divides by the whole window)
    let ci = l
        .query_value(
            "sum by (node_name) (rate(edgewatt_node_co2_grams_total{node_name=\"edge-c\"}[6s])) / on (node_name) (sum by (node_name) (edgewatt_node_platform_watts{node_name=\"edge-c\"}) or sum by (node_name) (edgewatt_node_cpu_watts{node_name=\"edge-c\", zone=~\"package|dram\"})) * 3.6e6",
        )
        .await
        .expect("intensity");
    assert!(
        (ci - 45.0).abs() < 4.5,
        "recovered intensity {ci} g/kWh, the solar zone's 45"
    );
    l.assert_no_request_refused();
}
