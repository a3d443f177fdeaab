//! The refresher against a real Prometheus: prioritize follows measured headroom, and once
//! Prometheus is gone and the data ages past `--max-data-age`, the extender fails open.

mod common;

use std::{sync::Arc, time::Duration};

use common::call;
use edgewatt_crds::{
    metrics::MetricNames,
    prom::{PromConfig, PromReader},
};
use edgewatt_scheduler::{
    headroom::Policy, nodes::ViewState, protocol::HostPriority, refresh::Refresher, server,
    state::AppState,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_follow_prometheus_then_fail_open_when_it_stops() {
    // a: 100 − 30 = 70 W headroom, b: 100 − 80 = 20 W, c: 200 − 20 = 180 W.
    let body = "\
# TYPE edgewatt_node_platform_watts gauge
edgewatt_node_platform_watts{node_name=\"a\"} 30
edgewatt_node_platform_watts{node_name=\"b\"} 80
edgewatt_node_platform_watts{node_name=\"c\"} 20
# TYPE edgewatt_node_power_budget_watts gauge
edgewatt_node_power_budget_watts{node_name=\"a\"} 100
edgewatt_node_power_budget_watts{node_name=\"b\"} 100
edgewatt_node_power_budget_watts{node_name=\"c\"} 200
";
    let mut prom =
        common::prometheus_scraping(|| body.to_string(), "edgewatt_node_power_budget_watts").await;

    let max_age = Duration::from_secs(4);
    let state = Arc::new(AppState::new(
        Policy {
            max_data_age: max_age,
            ..Policy::default()
        },
        ViewState::Disabled,
    ));
    let reader = PromReader::new(&PromConfig::new(prom.url())).unwrap();
    let refresher = Refresher::new(reader, MetricNames::default(), max_age);
    refresher.refresh_once(&state).await.unwrap();
    assert!(state.is_ready());
    let router = server::router(state.clone());

    let request = json!({"Pod": {"metadata": {"name": "p", "namespace": "default"}},
                         "NodeNames": ["a", "b", "c", "unknown"]})
    .to_string();
    let (status, text) = call(&router, "POST", "/prioritize", request.clone()).await;
    assert_eq!(status, 200, "{text}");
    let scores: Vec<HostPriority> = serde_json::from_str(&text).unwrap();
    let score = |h: &str| scores.iter().find(|s| s.host == h).unwrap().score;
    // The share of each node's own budget left: 180/200 → 9, 70/100 → 7, 20/100 → 2.
    assert_eq!(score("c"), 9, "{text}");
    assert_eq!(score("a"), 7, "{text}");
    assert_eq!(score("b"), 2, "{text}");
    assert_eq!(score("unknown"), 3, "no data: --unmeasured-nodes=cautious");

    // Prometheus stops: refreshes fail (counted), the old table ages out, answers go neutral.
    tokio::task::spawn_blocking(move || {
        prom.stop();
        prom
    })
    .await
    .unwrap();
    assert!(refresher.refresh_once(&state).await.is_err());
    tokio::time::sleep(max_age + Duration::from_secs(2)).await;
    let (status, text) = call(&router, "POST", "/prioritize", request).await;
    assert_eq!(status, 200, "{text}");
    let scores: Vec<HostPriority> = serde_json::from_str(&text).unwrap();
    assert!(scores.iter().all(|s| s.score == 5), "fail open: {text}");
    let filter = json!({"Pod": {}, "NodeNames": ["a", "b", "c"]}).to_string();
    let (_, text) = call(&router, "POST", "/filter", filter).await;
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["NodeNames"], json!(["a", "b", "c"]), "{text}");
    let (_, metrics) = call(&router, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("edgewatt_prometheus_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgewatt_scheduler_fail_open 1"),
        "{metrics}"
    );
}
