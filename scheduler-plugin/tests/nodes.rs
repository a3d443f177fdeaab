//! The Node watcher against the API server double, through kube's client: budgets and taints
//! follow Node creates, updates and deletes; a node without the annotation falls back to the
//! budget metric; a malformed annotation is no budget (as in the controller).

mod common;

use std::{sync::Arc, time::Duration};

use edgewatt_crds::{keys, promql::Signal};
use edgewatt_e2e::apiserver::ApiServer;
use edgewatt_scheduler::{headroom::Policy, node_watch, nodes::ViewState, state::AppState};
use serde_json::{json, Value};

fn node(name: &str, budget: Option<&str>, tainted: bool) -> Value {
    let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
    if let Some(b) = budget {
        n["metadata"]["annotations"] = json!({keys::POWER_BUDGET_WATTS: b});
    }
    if tainted {
        n["spec"]["taints"] =
            json!([{"key": keys::STARVED_TAINT, "value": "true", "effect": "NoSchedule"}]);
    }
    n
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn prioritize(state: &Arc<AppState>, names: &[&str]) -> Vec<i64> {
    let router = edgewatt_scheduler::server::router(state.clone());
    let body = json!({"Pod": {"metadata": {"name": "p", "namespace": "x"}}, "NodeNames": names});
    let (status, text) = common::call(&router, "POST", "/prioritize", body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Vec<Value>>(&text)
        .unwrap()
        .iter()
        .map(|h| h["Score"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_nodes() {
    let api = ApiServer::start().await.unwrap();
    api.put(node("a", Some("200"), false)).unwrap();
    api.put(node("b", None, false)).unwrap();
    api.put(node("c", Some("sixty"), false)).unwrap();
    // every node draws 50 W and reports a 100 W budget metric
    let rows: Vec<(&str, &[(Signal, f64)])> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            (
                *n,
                &[(Signal::PowerBudget, 100.0), (Signal::NodeWatts, 50.0)][..],
            )
        })
        .collect();
    let state = Arc::new(AppState::new(Policy::default(), ViewState::Syncing));
    state.publish(common::table(&rows, &[], &[]));
    state.mark_ready();
    // before the list: no budget is trusted
    assert_eq!(prioritize(&state, &["a", "b"]).await, [3, 3]);

    let task = tokio::spawn(node_watch::watch(api.client().unwrap(), state.clone()));
    let synced = || state.decide(|i| i.nodes.state == ViewState::Synced);
    until("first list", synced).await;
    // a: 150/200 → 8 (annotation wins); b: 50/100 → 5 (metric); c: malformed → metric → 5
    assert_eq!(prioritize(&state, &["a", "b", "c"]).await, [8, 5, 5]);

    // an annotation added later, a taint, a new node and a deletion
    api.put(node("b", Some("500"), false)).unwrap();
    api.put(node("d", Some("50"), true)).unwrap();
    api.remove("nodes", None, "a");
    let s = state.clone();
    until("watch events applied", move || {
        s.decide(|i| {
            i.nodes.get("b").and_then(|f| f.budget_watts) == Some(500.0)
                && i.nodes.get("d").is_some_and(|f| f.starved_taint)
                && i.nodes.get("a").is_none()
        })
    })
    .await;
    // a: back to the metric; b: 450/500 → 9; d: tainted → rejected
    assert_eq!(prioritize(&state, &["a", "b", "d"]).await, [5, 9, 0]);
    let router = edgewatt_scheduler::server::router(state.clone());
    let (_, metrics) = common::call(&router, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("edgewatt_scheduler_node_view_synced 1"),
        "{metrics}"
    );
    assert!(metrics.contains("edgewatt_scheduler_nodes 3"), "{metrics}");
    task.abort();
}
