//! Fixtures shared by the extender's tests.
#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    body::{to_bytes, Body},
    http::{Request, StatusCode},
    Router,
};
use edgewatt_crds::{
    prom::{Reading, SignalTable},
    promql::Signal,
};
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};
use edgewatt_scheduler::{
    headroom::{HeadroomTable, Policy},
    nodes::{NodeFacts, NodeView},
    server,
    state::AppState,
};
use tower::ServiceExt;

/// A table fetched `fetched_ago` before now, every sample `sample_age` old at fetch time.
pub fn table_at(
    fetched_ago: Duration,
    sample_age: f64,
    nodes: &[(&str, &[(Signal, f64)])],
    starved: &[&str],
    pods: &[(&str, &str, f64)],
) -> HeadroomTable {
    let mut readings: HashMap<String, HashMap<Signal, Reading>> = HashMap::new();
    for (name, signals) in nodes {
        let entry = readings.entry(name.to_string()).or_default();
        for (signal, value) in *signals {
            entry.insert(
                *signal,
                Reading {
                    value: *value,
                    age_secs: Some(sample_age),
                },
            );
        }
    }
    HeadroomTable::new(
        SignalTable {
            fetched_at: Some(SystemTime::now() - fetched_ago),
            readings,
        },
        starved
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>(),
        pods.iter()
            .map(|(ns, pod, w)| (ns.to_string(), pod.to_string(), *w)),
    )
}

/// A fresh table (fetched now, samples 1 s old).
pub fn table(
    nodes: &[(&str, &[(Signal, f64)])],
    starved: &[&str],
    pods: &[(&str, &str, f64)],
) -> HeadroomTable {
    table_at(Duration::ZERO, 1.0, nodes, starved, pods)
}

/// The golden fixture: n1 roomy, n2 nearly full, n3 starved by the controller, n4 unknown, n5
/// on a low battery, n6 roomiest; pods of `shop/web` draw 8 W each.
pub fn golden_table() -> HeadroomTable {
    use Signal::*;
    table(
        &[
            ("n1", &[(PowerBudget, 100.0), (NodeWatts, 30.0)]),
            ("n2", &[(PowerBudget, 100.0), (NodeWatts, 90.0)]),
            ("n3", &[(PowerBudget, 100.0), (NodeWatts, 10.0)]),
            (
                "n5",
                &[
                    (PowerBudget, 100.0),
                    (NodeWatts, 10.0),
                    (BatteryRatio, 0.1),
                    (ExternalPower, 0.0),
                ],
            ),
            ("n6", &[(PowerBudget, 200.0), (NodeWatts, 100.0)]),
        ],
        &["n3"],
        &[
            ("shop", "web-7d4b9c8f6-x2k9p", 6.0),
            ("shop", "web-7d4b9c8f6-b7zqm", 10.0),
            ("other", "web-7d4b9c8f6-x2k9p", 50.0),
        ],
    )
}

pub fn router_with(state: AppState) -> Router {
    server::router(Arc::new(state))
}

/// The Node informer's view matching the golden Node objects: n2 annotated with a 150 W
/// budget, n4 tainted by the controller.
pub fn golden_view() -> NodeView {
    NodeView::synced([
        (
            "n2".to_string(),
            NodeFacts {
                budget_watts: Some(150.0),
                starved_taint: false,
            },
        ),
        (
            "n4".to_string(),
            NodeFacts {
                budget_watts: None,
                starved_taint: true,
            },
        ),
    ])
}

pub fn golden_router() -> Router {
    router_with(AppState::with_view(
        Policy::default(),
        golden_table(),
        golden_view(),
    ))
}

/// Sends one request through the router in-process.
pub async fn call(
    router: &Router,
    method: &str,
    path: &str,
    body: impl Into<Body>,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A real Prometheus (1 s scrapes) of a `/metrics` endpoint answering `body()`, returned once
/// `series` has been scraped.
pub async fn prometheus_scraping<F>(body: F, series: &'static str) -> Prometheus
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = body();
            async move { text }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    tokio::task::spawn_blocking(move || {
        let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
        prom.add_target(ScrapeTarget::new("synthetic", &addr.to_string()))
            .unwrap();
        prom.wait_for_series(series, Duration::from_secs(30))
            .unwrap();
        prom
    })
    .await
    .unwrap()
}
