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

/// The forecast's reads against a real Prometheus: each target's supply (what flows in = what is
/// stored + what is used: charge − discharge + node draw) as an hourly-average range query, and
/// each pod's own draw. A target missing the charge metric has no supply (unknown, never 0 W).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supply_history_and_workload_draw() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = "\
# TYPE edgewatt_node_battery_charge_power_watts gauge
edgewatt_node_battery_charge_power_watts{node_name=\"sunny\"} 5
edgewatt_node_battery_charge_power_watts{node_name=\"night\"} 0
# TYPE edgewatt_node_battery_power_watts gauge
edgewatt_node_battery_power_watts{node_name=\"sunny\"} 0
edgewatt_node_battery_power_watts{node_name=\"night\"} 10
edgewatt_node_battery_power_watts{node_name=\"old-exporter\"} 10
# TYPE edgewatt_node_cpu_watts gauge
edgewatt_node_cpu_watts{node_name=\"sunny\",zone=\"package\",source=\"rapl\"} 10
edgewatt_node_cpu_watts{node_name=\"sunny\",zone=\"dram\",source=\"rapl\"} 3
edgewatt_node_cpu_watts{node_name=\"old-exporter\",zone=\"package\",source=\"rapl\"} 10
# TYPE edgewatt_node_platform_watts gauge
edgewatt_node_platform_watts{node_name=\"night\",source=\"hwmon\"} 12
# TYPE edgewatt_pod_cpu_watts gauge
edgewatt_pod_cpu_watts{node_name=\"sunny\",pod_namespace=\"shop\",pod_name=\"web\",pod_id=\"1\",zone=\"package\"} 2.5
edgewatt_pod_cpu_watts{node_name=\"sunny\",pod_namespace=\"shop\",pod_name=\"web\",pod_id=\"1\",zone=\"dram\"} 0.5
edgewatt_pod_cpu_watts{node_name=\"night\",pod_namespace=\"shop\",pod_name=\"db\",pod_id=\"2\",zone=\"package\"} 4
";
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let prom = tokio::task::spawn_blocking(move || {
        let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
        prom.add_target(ScrapeTarget::new("nodes", &addr.to_string()))
            .unwrap();
        prom.wait_for_series("edgewatt_pod_cpu_watts", Duration::from_secs(30))
            .unwrap();
        prom
    })
    .await
    .unwrap();
    let reader = PromReader::new(&PromConfig::new(prom.url())).unwrap();
    let q = TargetQuery::nodes(MetricNames::default());
    // A 1 s subquery step: the data is seconds old (the controller uses 1 min over days). The
    // first evaluation after the first scrape can come too early for the subquery: wait for it.
    let supply = q.supply_hourly(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reader.vector(&supply).await.unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no supply series");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let series = reader.matrix(&supply, now - 60, now, 30.0).await.unwrap();
    let latest: std::collections::BTreeMap<String, f64> = series
        .iter()
        .map(|s| {
            (
                s.labels["node_name"].clone(),
                s.samples.last().expect("a sample").1,
            )
        })
        .collect();
    assert_eq!(
        latest,
        [("night".to_string(), 2.0), ("sunny".to_string(), 18.0)].into(),
        "sunny: 5 W stored + 13 W used; night: 12 W used − 10 W from the battery"
    );
    let watts = reader.vector(&q.workload_watts()).await.unwrap();
    let by_pod: std::collections::BTreeMap<(String, String), f64> = watts
        .iter()
        .map(|s| {
            (
                (
                    s.labels["pod_namespace"].clone(),
                    s.labels["pod_name"].clone(),
                ),
                s.value,
            )
        })
        .collect();
    assert_eq!(
        by_pod,
        [
            (("shop".to_string(), "db".to_string()), 4.0),
            (("shop".to_string(), "web".to_string()), 3.0)
        ]
        .into()
    );
}
