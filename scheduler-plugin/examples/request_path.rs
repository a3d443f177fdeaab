//! The extender's request path without sockets, for instruction counts (callgrind) where wall time
//! is too noisy: the real router through `tower::ServiceExt::oneshot`, N requests (9 prioritize of
//! 5 000 names : 1 filter of 1 000 Nodes) against the table and view of `benches/extender.rs`.
//! Per request = (I refs at N = 220 − at N = 20) / 200:
//! `valgrind --tool=callgrind target/release/examples/request_path 220` (BENCHMARKS.md).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use edgewatt_crds::prom::{Reading, SignalTable};
use edgewatt_crds::promql::Signal;
use edgewatt_scheduler::headroom::{HeadroomTable, Policy};
use edgewatt_scheduler::nodes::{NodeFacts, NodeView};
use edgewatt_scheduler::{server, state::AppState};
use serde_json::json;
use tower::ServiceExt;

fn table(n: usize) -> HeadroomTable {
    let mut readings = HashMap::new();
    for i in 0..n {
        let mut m = HashMap::new();
        m.insert(
            Signal::PowerBudget,
            Reading {
                value: 100.0,
                age_secs: Some(1.0),
            },
        );
        m.insert(
            Signal::NodeWatts,
            Reading {
                value: (i % 90) as f64,
                age_secs: Some(1.0),
            },
        );
        readings.insert(format!("node-{i:05}"), m);
    }
    let pods = (0..2000).map(|i| ("shop".to_string(), format!("web-7d4b9c8f6-{i:05}"), 5.0));
    HeadroomTable::new(
        SignalTable {
            fetched_at: Some(SystemTime::now()),
            readings,
        },
        HashSet::new(),
        pods,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100);
    let view = NodeView::synced((0..5000).map(|i| {
        (
            format!("node-{i:05}"),
            NodeFacts {
                budget_watts: (i % 2 == 0).then_some(120.0),
                starved_taint: false,
            },
        )
    }));
    let state = Arc::new(AppState::with_view(Policy::default(), table(5000), view));
    let router = server::router(state);
    let pod = json!({"metadata": {"name": "web-7d4b9c8f6-new", "namespace": "shop", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6", "uid": "u", "controller": true}]}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
    let names: Vec<String> = (0..5000).map(|i| format!("node-{i:05}")).collect();
    let pbody = json!({"Pod": pod, "NodeNames": names}).to_string();
    let items: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"metadata": {"name": format!("node-{i:05}"), "annotations": {"node.alpha.kubernetes.io/ttl": "0"}}, "spec": {"podCIDR": "10.0.0.0/24"}}))
        .collect();
    let fbody = json!({"Pod": pod, "Nodes": {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}}).to_string();
    let mut bytes = 0usize;
    for k in 0..n {
        let (uri, body) = if k % 10 == 9 {
            ("/filter", &fbody)
        } else {
            ("/prioritize", &pbody)
        };
        let req = axum::http::Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success());
        bytes += axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .len();
    }
    println!("{n} requests, {bytes} reply bytes");
}
