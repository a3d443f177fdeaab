//! The Prometheus fixture runs the real binary: it scrapes a local endpoint, and
//! `prometheus-http-query` (the client the controller and extender use) reads the value back.

use std::{path::Path, time::Duration};

use edgewatt_crds::{
    metrics::MetricNames,
    promql::{Signal, TargetQuery},
};
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_a_local_endpoint_and_reads_back_with_the_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            "# TYPE edgewatt_node_battery_charge_ratio gauge\nedgewatt_node_battery_charge_ratio{node_name=\"edge-1\"} 0.42\n"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let prom = tokio::task::spawn_blocking(move || {
        let mut prom = Prometheus::start(Duration::from_secs(1)).expect("start prometheus");
        prom.add_target(ScrapeTarget::new("fixture", &addr.to_string()))
            .unwrap();
        prom.wait_for_series(
            "edgewatt_node_battery_charge_ratio",
            Duration::from_secs(30),
        )
        .unwrap();
        prom
    })
    .await
    .unwrap();

    let client = prometheus_http_query::Client::try_from(prom.url().as_str()).unwrap();
    let nodes = TargetQuery::nodes(MetricNames::default());
    let response = client
        .query(nodes.value(Signal::BatteryRatio))
        .get()
        .await
        .unwrap();
    let vector = response.data().as_vector().expect("instant vector");
    assert_eq!(vector.len(), 1);
    assert_eq!(
        vector[0].metric().get("node_name").map(String::as_str),
        Some("edge-1")
    );
    assert!((vector[0].sample().value() - 0.42).abs() < 1e-9);

    // Sample age: the edgewatt age queries rely on timestamp() returning the sample's own time.
    let age = client
        .query(nodes.age(Signal::BatteryRatio))
        .get()
        .await
        .unwrap();
    let age = age.data().as_vector().unwrap();
    assert_eq!(age.len(), 1, "one age per node");
    assert_eq!(
        age[0].metric().get("node_name").map(String::as_str),
        Some("edge-1")
    );
    let age = age[0].sample().value();
    assert!((0.0..15.0).contains(&age), "sample age {age}s");
    drop(prom);
}

#[test]
fn missing_binary_is_a_clear_error() {
    let err = Prometheus::start_with(Path::new("/nonexistent/prometheus"), Duration::from_secs(1))
        .err()
        .expect("must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("/nonexistent/prometheus") && msg.contains("make deps"),
        "{msg}"
    );
}
