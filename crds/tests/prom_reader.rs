//! The shared Prometheus reader against a real Prometheus: batched signals, ages, failures.

use std::time::Duration;

use edgewatt_crds::{
    metrics::MetricNames,
    prom::{PromConfig, PromReader},
    promql::{Signal, TargetQuery},
};
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_signals_for_all_targets_with_ages() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = "\
# TYPE edgewatt_node_battery_charge_ratio gauge
edgewatt_node_battery_charge_ratio{node_name=\"a\"} 0.15
edgewatt_node_battery_charge_ratio{node_name=\"b\"} 0.80
# TYPE edgewatt_node_cpu_watts gauge
edgewatt_node_cpu_watts{node_name=\"a\",zone=\"package\",source=\"rapl\"} 10
edgewatt_node_cpu_watts{node_name=\"a\",zone=\"dram\",source=\"rapl\"} 3
edgewatt_node_cpu_watts{node_name=\"a\",zone=\"core\",source=\"rapl\"} 6
edgewatt_node_cpu_watts{node_name=\"b\",zone=\"package\",source=\"rapl\"} 7
edgewatt_node_cpu_watts{node_name=\"c\",zone=\"package\",source=\"rapl\"} 10
edgewatt_node_cpu_watts{node_name=\"c\",zone=\"package\",source=\"hwmon\"} 9
edgewatt_node_cpu_watts{node_name=\"c\",zone=\"dram\",source=\"rapl\"} 2
# TYPE edgewatt_node_gpu_watts gauge
edgewatt_node_gpu_watts{node_name=\"c\",gpu=\"0\",uuid=\"GPU-0\"} 50
edgewatt_node_gpu_watts{node_name=\"c\",gpu=\"1\",uuid=\"GPU-1\"} 30
edgewatt_node_gpu_watts{node_name=\"b\",gpu=\"0\",uuid=\"GPU-2\"} 99
# TYPE edgewatt_node_platform_watts gauge
edgewatt_node_platform_watts{node_name=\"b\",source=\"redfish\"} 42
";
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let prom = tokio::task::spawn_blocking(move || {
        let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
        prom.add_target(ScrapeTarget::new("nodes", &addr.to_string()))
            .unwrap();
        prom.wait_for_series("edgewatt_node_platform_watts", Duration::from_secs(30))
            .unwrap();
        prom
    })
    .await
    .unwrap();

    let reader = PromReader::new(&PromConfig::new(prom.url())).unwrap();
    let q = TargetQuery::nodes(MetricNames::default());
    let table = reader
        .signals(
            &q,
            &[Signal::BatteryRatio, Signal::NodeWatts, Signal::BatteryDraw],
        )
        .await
        .unwrap();
    let fresh = Duration::from_secs(30);
    assert_eq!(
        table.get("a", Signal::BatteryRatio).unwrap().fresh(fresh),
        Some(0.15)
    );
    assert_eq!(
        table.get("b", Signal::BatteryRatio).unwrap().fresh(fresh),
        Some(0.80)
    );
    // a has no platform meter: CPU packages plus DRAM (separate RAPL domains).
    assert_eq!(
        table.get("a", Signal::NodeWatts).unwrap().fresh(fresh),
        Some(13.0)
    );
    // c: one package zone from two sources counts once (the larger), plus DRAM, plus each GPU.
    assert_eq!(
        table.get("c", Signal::NodeWatts).unwrap().fresh(fresh),
        Some(10.0 + 2.0 + 50.0 + 30.0)
    );
    // b has a platform meter, which wins (it already covers the GPU).
    assert_eq!(
        table.get("b", Signal::NodeWatts).unwrap().fresh(fresh),
        Some(42.0)
    );
    assert!(
        table.get("a", Signal::BatteryDraw).is_none(),
        "absent metric is absent, not 0"
    );
    let age = table.get("a", Signal::NodeWatts).unwrap().age_secs.unwrap();
    assert!((0.0..15.0).contains(&age), "age {age}");

    // A stopped Prometheus is an error, never an empty (healthy-looking) table.
    let url = prom.url();
    drop(prom);
    let reader = PromReader::new(&PromConfig::new(url)).unwrap();
    assert!(reader.signals(&q, &[Signal::BatteryRatio]).await.is_err());
}
