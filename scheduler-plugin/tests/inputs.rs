//! The extender's Prometheus inputs against a real Prometheus scraping synthetic series in the
//! exporter's and the controller's exact shapes:
//! - starvation: only `edgewatt_target_starved{kind="Node",mode="Migrate"} == 1` filters (the
//!   contract in DESIGN.md "Controller and extender metrics"); a dry-run (`Observe`) series, a 0,
//!   an EdgeDevice's series do not; a series the controller withdraws (a standby, a deleted
//!   policy: Prometheus marks it stale) stops at once; one that stops being updated without a
//!   staleness marker (explicit timestamps, as federated or remote-written data) stops after
//!   `--max-data-age`;
//! - pod draw: the sum of a pod's zones (package + dram + GPU), from the bounded fallback query
//!   without the chart's recording rules, then from the recorded series once the chart's rule
//!   file is loaded (proved by removing the raw series: only the hour-long record remains).

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::call;
use edgewatt_crds::{
    metrics::MetricNames,
    prom::{PromConfig, PromReader},
};
use edgewatt_scheduler::{
    headroom::Policy, nodes::ViewState, refresh::Refresher, server, state::AppState,
};
use serde_json::{json, Value};

const NODES: &str = "\
# TYPE edgewatt_node_platform_watts gauge
edgewatt_node_platform_watts{node_name=\"s1\"} 20
edgewatt_node_platform_watts{node_name=\"s2\"} 20
edgewatt_node_platform_watts{node_name=\"s3\"} 20
edgewatt_node_platform_watts{node_name=\"s4\"} 20
edgewatt_node_platform_watts{node_name=\"s5\"} 20
edgewatt_node_platform_watts{node_name=\"s6\"} 20
edgewatt_node_platform_watts{node_name=\"s7\"} 84
# TYPE edgewatt_node_power_budget_watts gauge
edgewatt_node_power_budget_watts{node_name=\"s1\"} 100
edgewatt_node_power_budget_watts{node_name=\"s2\"} 100
edgewatt_node_power_budget_watts{node_name=\"s3\"} 100
edgewatt_node_power_budget_watts{node_name=\"s4\"} 100
edgewatt_node_power_budget_watts{node_name=\"s5\"} 100
edgewatt_node_power_budget_watts{node_name=\"s6\"} 100
edgewatt_node_power_budget_watts{node_name=\"s7\"} 100
";

fn starved(withdrawn: bool, frozen_ms: u128) -> String {
    let mut s = String::from("# TYPE edgewatt_target_starved gauge\n");
    let l = |policy: &str, mode: &str, kind: &str, name: &str| {
        format!("edgewatt_target_starved{{policy=\"{policy}\",mode=\"{mode}\",kind=\"{kind}\",name=\"{name}\",namespace=\"\"}}")
    };
    s += &format!("{} 1\n", l("guard", "Migrate", "Node", "s1"));
    s += &format!("{} 1\n", l("dry-run", "Observe", "Node", "s2"));
    s += &format!("{} 0\n", l("guard", "Migrate", "Node", "s3"));
    s += &format!("{} 1 {frozen_ms}\n", l("guard", "Migrate", "Node", "s4"));
    s += &format!("{} 1\n", l("guard", "Migrate", "EdgeDevice", "s5"));
    if !withdrawn {
        s += &format!("{} 1\n", l("guard", "Migrate", "Node", "s6"));
    }
    s
}

/// A `web` pod (owner `shop/web`) drawing 6 W package + 2 W dram (one zone duplicated by a
/// second series) + 4 W GPU = 12 W.
const PODS: &str = "\
# TYPE edgewatt_pod_cpu_watts gauge
edgewatt_pod_cpu_watts{node_name=\"s1\",pod_namespace=\"shop\",pod_name=\"web-7d4b9c8f6-x2k9p\",zone=\"package\",source=\"rapl\"} 6
edgewatt_pod_cpu_watts{node_name=\"s1\",pod_namespace=\"shop\",pod_name=\"web-7d4b9c8f6-x2k9p\",zone=\"dram\",source=\"rapl\"} 2
edgewatt_pod_cpu_watts{node_name=\"s1\",pod_namespace=\"shop\",pod_name=\"web-7d4b9c8f6-x2k9p\",zone=\"dram\",source=\"rapl\",exporter=\"old\"} 2
# TYPE edgewatt_pod_gpu_watts gauge
edgewatt_pod_gpu_watts{node_name=\"s1\",pod_namespace=\"shop\",pod_name=\"web-7d4b9c8f6-x2k9p\",zone=\"gpu\",source=\"nvml\"} 4
";

struct Exposition {
    withdrawn: bool,
    pods: bool,
    frozen_ms: u128,
}

fn render(e: &Exposition) -> String {
    let mut s = format!("{NODES}{}", starved(e.withdrawn, e.frozen_ms));
    if e.pods {
        s += PODS;
    }
    s
}

async fn filter(router: &axum::Router) -> Value {
    let pod = json!({"metadata": {"name": "web-7d4b9c8f6-new01", "namespace": "shop",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6", "uid": "u", "controller": true}]}});
    let req = json!({"Pod": pod, "NodeNames": ["s1", "s2", "s3", "s4", "s5", "s6", "s7"]});
    let (status, text) = call(router, "POST", "/filter", req.to_string()).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn rejected(v: &Value) -> Vec<String> {
    v["FailedAndUnresolvableNodes"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_starvation_and_pod_draw_from_prometheus() {
    let frozen_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let exposition = Arc::new(Mutex::new(Exposition {
        withdrawn: false,
        pods: true,
        frozen_ms,
    }));
    let served = exposition.clone();
    let mut prom = common::prometheus_scraping(
        move || render(&served.lock().unwrap()),
        "edgewatt_pod_gpu_watts",
    )
    .await;

    // s4's sample is frozen from now on (explicit timestamp); wait until it is ingested
    let frozen_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    exposition.lock().unwrap().frozen_ms = frozen_ms;
    let p = prom.url();
    wait(
        &p,
        &format!("timestamp(edgewatt_target_starved{{name=\"s4\"}}) * 1000 >= {frozen_ms}"),
        true,
    )
    .await;
    let max_age = Duration::from_secs(6);
    let policy = Policy {
        max_data_age: max_age,
        ..Policy::default()
    };
    let state = Arc::new(AppState::new(policy, ViewState::Disabled));
    let reader = PromReader::new(&PromConfig::new(prom.url())).unwrap();
    let refresher = Refresher::new(reader, MetricNames::default(), max_age);
    let router = server::router(state.clone());

    refresher.refresh_once(&state).await.unwrap();
    let v = filter(&router).await;
    // s7: 100 − 84 = 16 W, minus the pod's 12 W (fallback query) = 4 W < 5 W: only with the pod
    assert_eq!(rejected(&v), ["s1", "s4", "s6", "s7"], "{v}");
    let reason = v["FailedAndUnresolvableNodes"]["s7"].as_str().unwrap();
    assert!(
        reason.contains("pod 12.0 W"),
        "sum of zones, dram once: {reason}"
    );

    // the controller withdraws s6's series (a standby, or the policy was deleted)
    exposition.lock().unwrap().withdrawn = true;
    wait(&p, "edgewatt_target_starved{name=\"s6\"}", false).await;
    // s4's frozen sample passes the age limit
    tokio::time::sleep(max_age + Duration::from_secs(1)).await;
    refresher.refresh_once(&state).await.unwrap();
    assert_eq!(rejected(&filter(&router).await), ["s1", "s7"]);

    // the chart's recording rules: the draw now comes from the hour-long record, which outlives
    // the raw series
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/edgewatt/files/alerts.rules.yaml");
    prom = tokio::task::spawn_blocking(move || {
        prom.add_rule_file(rules).unwrap();
        prom.wait_for_series("pod:edgewatt_pod_watts:avg_1h", Duration::from_secs(30))
            .unwrap();
        prom
    })
    .await
    .unwrap();
    exposition.lock().unwrap().pods = false;
    wait(&p, "edgewatt_pod_cpu_watts", false).await;
    refresher.refresh_once(&state).await.unwrap();
    let v = filter(&router).await;
    let reason = v["FailedAndUnresolvableNodes"]["s7"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("pod 12.0 W"),
        "from the recorded average: {v}"
    );
    drop(prom);
}

/// Polls `query` until it has series (`present`) or none.
async fn wait(url: &str, query: &str, present: bool) {
    let reader = PromReader::new(&PromConfig::new(url)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = reader.vector(query).await.unwrap().len();
        if (n > 0) == present {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{query}: {n} series"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The chart's recording rules are the expressions edgewatt-crds builds and the extender reads.
#[test]
fn chart_recording_rules_match_the_builders() {
    use edgewatt_crds::promql;
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/edgewatt/files/alerts.rules.yaml"),
    )
    .unwrap();
    let n = MetricNames::default();
    for (record, expr) in [
        (promql::pod_watts_record(&n), promql::pod_watts_sum(&n)),
        (promql::pod_average_record(&n), promql::pod_average_rule(&n)),
    ] {
        let rule = format!("- record: {record}\n        expr: {expr}\n");
        assert!(
            file.contains(&rule),
            "{rule} missing from the chart's rules"
        );
    }
}
