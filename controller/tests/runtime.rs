//! The controller's runtime against the API server double and a real Prometheus scraping a
//! scripted `/metrics` endpoint whose battery readings the tests change over time.
//!
//! Cycles are driven directly (`reconciler::cycle` with a chosen `now`), so `for` windows and
//! migration timeouts are exercised without waiting for them in real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use edgewatt_controller::{
    actuator::{copy_name, Intent},
    context::Context,
    cycle,
    leader::Fence,
};
use edgewatt_crds::{
    keys,
    prom::{PromConfig, PromReader},
    EdgeWorkload, EnergyPolicy, MigrationResult,
};
use edgewatt_e2e::{apiserver::ApiServer, prometheus::Prometheus};
use serde_json::json;

mod common;

struct Harness {
    server: ApiServer,
    ctx: Arc<Context>,
    body: Arc<Mutex<String>>,
    prom: Prometheus,
}

fn metrics_body(devices: &[(&str, f64)], nodes: &[(&str, f64)]) -> String {
    common::scripted::body(devices, nodes)
}

async fn harness(devices: &[(&str, f64)], nodes: &[(&str, f64)]) -> Harness {
    // Cycles are driven by hand, up to a minute of `now` apart: an interval of a minute keeps
    // such steps within the data-gap tolerance (2 × interval) of `for` windows.
    harness_every(Duration::from_secs(60), devices, nodes).await
}

async fn harness_every(
    interval: Duration,
    devices: &[(&str, f64)],
    nodes: &[(&str, f64)],
) -> Harness {
    let server = ApiServer::start().await.unwrap();
    let (prom, body) = common::scripted::prometheus(metrics_body(devices, nodes)).await;
    let reader = PromReader::new(&PromConfig::new(prom.url())).unwrap();
    let client = server.client().unwrap();
    let mut cfg = server.config().unwrap();
    cfg.default_retry = false;
    let evict_client = kube::Client::try_from(cfg).unwrap();
    let ctx = Arc::new(Context::new(
        client.clone(),
        evict_client,
        reader,
        common::settings(interval),
        Fence::always(),
        "test",
    ));
    ctx.stores.ready().await;
    Harness {
        server,
        ctx,
        body,
        prom,
    }
}

impl Harness {
    fn policy(&self, mode: &str, targets: serde_json::Value) -> EnergyPolicy {
        let p: EnergyPolicy = serde_json::from_value(json!({
            "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "targets": targets,
                "starvation": {"batteryBelowPercent": 20, "for": "1m"},
                "recovery": {"batteryAbovePercent": 35, "for": "1m"},
                "action": {"mode": mode, "cooldown": "10m", "migrationTimeout": "5m"}
            }
        }))
        .unwrap();
        self.server.put_typed(&p).unwrap()
    }

    fn device(&self, name: &str, workloads: serde_json::Value) {
        let existing = self
            .server
            .get("edgedevices", Some("edge"), name)
            .map(|v| v["metadata"]["resourceVersion"].clone());
        let mut obj = json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeDevice",
            "metadata": {"name": name, "namespace": "edge"},
            "spec": {},
            "status": {"phase": "up", "workloads": workloads}
        });
        if let Some(rv) = existing {
            obj["metadata"]["resourceVersion"] = rv;
        }
        self.server.put(obj).unwrap();
    }

    /// Waits until Prometheus has scraped the scripted exporter's new value.
    async fn prometheus_shows(&self, query: &str, value: f64) {
        let t = std::time::Instant::now();
        while !self
            .ctx
            .reader
            .vector(query)
            .await
            .is_ok_and(|v| v.iter().any(|s| s.value == value))
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "Prometheus never showed {query} = {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn workload(&self, name: &str) -> Option<EdgeWorkload> {
        self.server.get_typed(Some("edge"), name)
    }

    /// Runs a cycle at `now` once the reflectors hold what the double holds.
    async fn cycle(&self, now: chrono::DateTime<Utc>) -> EnergyPolicy {
        common::sync(&self.ctx, &self.server).await;
        let p: EnergyPolicy = self.server.get_typed(None, "p").unwrap();
        cycle(&p, &self.ctx, now).await.unwrap();
        self.server.get_typed(None, "p").unwrap()
    }

    fn events(&self, reason: &str) -> usize {
        self.server
            .list("events.events.k8s.io")
            .iter()
            .chain(self.server.list("events").iter())
            .filter(|e| e["reason"] == reason)
            .count()
    }
}

fn ns_edge(server: &ApiServer) {
    server
        .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}}))
        .unwrap();
}

async fn edge_setup() -> Harness {
    let h = harness(&[("d1", 0.1), ("d2", 0.9)], &[]).await;
    ns_edge(&h.server);
    h.device("d1", json!([{"name": "app", "phase": "Running"}]));
    h.device("d2", json!([]));
    h.server
        .put(json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
            "metadata": {"name": "app", "namespace": "edge"},
            "spec": {"device": "d1", "type": "pod", "pod": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .unwrap();
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_drain_moves_edge_workload_make_before_break() {
    let h = edge_setup().await;
    h.policy("Migrate", json!({"edgeDeviceSelector": {}}));
    let t0 = Utc::now();
    let p = h.cycle(t0).await;
    assert_eq!(
        p.status.unwrap().starved_count,
        0,
        "not starved before `for`"
    );
    let p = h.cycle(t0 + chrono::Duration::seconds(61)).await;
    let st = p.status.unwrap();
    assert_eq!(st.starved_count, 1);
    assert_eq!(st.starved[0].name, "d1");
    // Intent written, copy created on d2, original still on d1.
    let app = h.workload("app").unwrap();
    let intent = Intent::of(&app).expect("intent annotation");
    assert_eq!((intent.from.as_str(), intent.to.as_str()), ("d1", "d2"));
    assert_eq!(app.spec.device.as_deref(), Some("d1"));
    let copy = h.workload(&copy_name("app")).expect("copy created");
    assert_eq!(copy.spec.device.as_deref(), Some("d2"));
    // Not running on the target yet: nothing else happens.
    h.cycle(t0 + chrono::Duration::seconds(70)).await;
    assert_eq!(
        h.workload("app").unwrap().spec.device.as_deref(),
        Some("d1")
    );
    // The device agent reports the copy running (lowercase, like heartbeats).
    h.device(
        "d2",
        json!([{"name": copy_name("app"), "phase": "running"}]),
    );
    h.cycle(t0 + chrono::Duration::seconds(80)).await;
    let app = h.workload("app").unwrap();
    assert_eq!(
        app.spec.device.as_deref(),
        Some("d2"),
        "re-pointed after copy runs"
    );
    assert!(
        h.workload(&copy_name("app")).is_some(),
        "copy kept until original runs"
    );
    h.device(
        "d2",
        json!([{"name": copy_name("app"), "phase": "Running"}, {"name": "app", "phase": "Running"}]),
    );
    let p = h.cycle(t0 + chrono::Duration::seconds(90)).await;
    let app = h.workload("app").unwrap();
    assert!(!app.annotations().contains_key(keys::MIGRATION_INTENT));
    assert!(h.workload(&copy_name("app")).is_none(), "copy removed");
    let st = p.status.unwrap();
    let last = st.migrations.last().unwrap();
    assert_eq!(last.result, MigrationResult::Succeeded);
    assert_eq!(st.migration_count, 1);
    assert!(h.events("MigrationStarted") >= 1 && h.events("MigrationSucceeded") >= 1);
    assert!(h.ctx.metrics.encode().contains("result=\"Succeeded\""));
    drop(h.prom);
}

use kube::ResourceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_never_running_is_undone_with_failure_event() {
    let h = edge_setup().await;
    h.policy("Migrate", json!({"edgeDeviceSelector": {}}));
    let t0 = Utc::now();
    h.cycle(t0).await;
    h.cycle(t0 + chrono::Duration::seconds(61)).await;
    assert!(h.workload(&copy_name("app")).is_some());
    let p = h.cycle(t0 + chrono::Duration::seconds(61 + 301)).await;
    let app = h.workload("app").unwrap();
    assert!(!app.annotations().contains_key(keys::MIGRATION_INTENT));
    assert_eq!(app.spec.device.as_deref(), Some("d1"));
    assert!(
        h.workload(&copy_name("app")).is_none(),
        "copy removed on undo"
    );
    let st = p.status.unwrap();
    assert_eq!(
        st.migrations.last().unwrap().result,
        MigrationResult::Failed
    );
    assert!(h.events("MigrationFailed") >= 1);
    // Cooldown: not retried immediately.
    h.cycle(t0 + chrono::Duration::seconds(370)).await;
    assert!(h.workload(&copy_name("app")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_means_no_actions() {
    let mut h = edge_setup().await;
    h.policy("Migrate", json!({"edgeDeviceSelector": {}}));
    let t0 = Utc::now();
    h.cycle(t0).await;
    let prom = &mut h.prom;
    tokio::task::block_in_place(|| prom.stop());
    h.server.clear_requests();
    let p = h.cycle(t0 + chrono::Duration::seconds(120)).await;
    let writes: Vec<_> = h
        .server
        .writes()
        .into_iter()
        .filter(|w| !w.path.contains("/status") && !w.path.contains("events"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    let cond = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "PrometheusAvailable")
        .unwrap();
    assert_eq!(cond.status, "False");
    assert!(h
        .ctx
        .metrics
        .encode()
        .contains("edgewatt_prometheus_errors_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_writes_only_status_and_events() {
    let h = edge_setup().await;
    h.policy("Observe", json!({"edgeDeviceSelector": {}}));
    let t0 = Utc::now();
    h.server.clear_requests();
    h.cycle(t0).await;
    let p = h.cycle(t0 + chrono::Duration::seconds(61)).await;
    // Status, Events — and the policy's own finalizer (metadata of the policy itself).
    let writes: Vec<_> = h
        .server
        .writes()
        .into_iter()
        .filter(|w| {
            !w.path.contains("/status")
                && !w.path.contains("events")
                && !w.path.ends_with("/energypolicies/p")
        })
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    let st = p.status.unwrap();
    assert_eq!(st.starved_count, 1);
    assert_eq!(
        st.migrations.last().unwrap().result,
        MigrationResult::DryRun
    );
    assert!(h.workload(&copy_name("app")).is_none());
}

// PDBs (exhausted budget skipped, 429 handled, retried): `tests/direct.rs`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_controller_resumes_move_from_intent_and_target_recovers() {
    let h = edge_setup().await;
    h.policy("Migrate", json!({"edgeDeviceSelector": {}}));
    let t0 = Utc::now();
    h.cycle(t0).await;
    h.cycle(t0 + chrono::Duration::seconds(61)).await;
    assert!(h.workload(&copy_name("app")).is_some());
    // "Restart": forget everything held in memory; only the cluster remembers.
    h.ctx.runtime.lock().await.clear();
    h.device(
        "d2",
        json!([{"name": copy_name("app"), "phase": "Running"}]),
    );
    h.cycle(t0 + chrono::Duration::seconds(70)).await;
    assert_eq!(
        h.workload("app").unwrap().spec.device.as_deref(),
        Some("d2")
    );
    h.device("d2", json!([{"name": "app", "phase": "Running"}]));
    let p = h.cycle(t0 + chrono::Duration::seconds(80)).await;
    assert!(h.workload(&copy_name("app")).is_none());
    let st = p.status.unwrap();
    assert_eq!(
        st.migrations.last().unwrap().result,
        MigrationResult::Succeeded
    );
    assert_eq!(
        st.migrations.len(),
        1,
        "in-progress record updated in place"
    );
    // The battery recovers (the scripted exporter changes): starved ends after recovery `for`.
    *h.body.lock().unwrap() = metrics_body(&[("d1", 0.8), ("d2", 0.9)], &[]);
    h.prometheus_shows(
        "edgewatt_node_battery_charge_ratio{edgedeviceid=\"d1\"}",
        0.8,
    )
    .await;
    h.cycle(t0 + chrono::Duration::seconds(100)).await;
    let p = h.cycle(t0 + chrono::Duration::seconds(161)).await;
    assert_eq!(p.status.unwrap().starved_count, 0);
    assert!(h.events("TargetRecovered") >= 1);
}

/// client-go's rules through the real API (the double): one holder; a standby takes over only
/// after it has seen the record unchanged for the lease duration — however old `renewTime`
/// looks by its own clock; a released Lease is taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_lease_holder_and_takeover_by_observed_expiry() {
    use edgewatt_controller::leader::{Elector, LeaseConfig};
    let server = ApiServer::start().await.unwrap();
    let client = server.client().unwrap();
    let cfg = |id: &str| LeaseConfig {
        namespace: "default".into(),
        name: "edgewatt-controller".into(),
        identity: id.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    };
    let (fa, fb) = (Fence::new(), Fence::new());
    let mut a = Elector::new(client.clone(), cfg("a"), fa.clone());
    let mut b = Elector::new(client.clone(), cfg("b"), fb.clone());
    a.round().await;
    assert!(fa.is_leader());
    // A renewTime far in the past (another node's clock): b still has to watch it unchanged.
    let mut lease = server
        .get(
            "leases.coordination.k8s.io",
            Some("default"),
            "edgewatt-controller",
        )
        .unwrap();
    lease["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
    server.put(lease).unwrap();
    b.round().await;
    assert!(!fb.is_leader(), "took over on a clock comparison");
    a.round().await;
    assert!(fa.is_leader(), "renewed");
    b.round().await; // b sees the renew: its 2 s start now
                     // a stops renewing: its fence is down after the renew deadline (1.5 s), before b may take
                     // over (2 s after b saw the last change).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!fa.is_leader(), "a writes past its renew deadline");
    b.round().await;
    assert!(!fb.is_leader(), "took over before the lease duration");
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.round().await;
    assert!(fb.is_leader());
    a.round().await;
    assert!(!fa.is_leader());
    // Release: b gives it up; a takes it at once.
    b.release().await;
    assert!(!fb.is_leader());
    a.round().await;
    assert!(fa.is_leader(), "a released Lease is free at once");
}

impl Harness {
    async fn cycle_policy(&self, name: &str, now: chrono::DateTime<Utc>) -> EnergyPolicy {
        common::sync(&self.ctx, &self.server).await;
        let p: EnergyPolicy = self.server.get_typed(None, name).unwrap();
        cycle(&p, &self.ctx, now).await.unwrap();
        self.server.get_typed(None, name).unwrap()
    }
}

fn cond(p: &EnergyPolicy, type_: &str) -> (String, String, String) {
    let c = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
        .clone();
    (c.status, c.reason, c.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_custom_promql_is_reported_and_other_policies_go_on() {
    let h = edge_setup().await;
    h.policy("Migrate", json!({"edgeDeviceSelector": {}}));
    let bad: EnergyPolicy = serde_json::from_value(json!({
        "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
        "metadata": {"name": "bad"},
        "spec": {
            "targets": {"edgeDeviceSelector": {}},
            "starvation": {"query": {"promql": "sum(edgewatt_node_battery_charge_ratio", "below": 1},
                "for": "1m"},
            "action": {"mode": "Migrate"}
        }
    }))
    .unwrap();
    h.server.put_typed(&bad).unwrap();
    let t0 = Utc::now();
    for t in [
        t0,
        t0 + chrono::Duration::seconds(61),
        t0 + chrono::Duration::seconds(70),
    ] {
        let b = h.cycle_policy("bad", t).await;
        let (status, reason, msg) = cond(&b, "Degraded");
        assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidQuery"));
        assert!(
            msg.contains("sum(edgewatt_node_battery_charge_ratio"),
            "{msg}"
        );
        assert_eq!(cond(&b, "Ready").1, "InvalidQuery");
        assert_eq!(
            cond(&b, "PrometheusAvailable").0,
            "True",
            "Prometheus is fine"
        );
        h.cycle_policy("p", t).await;
    }
    assert_eq!(h.events("InvalidQuery"), 1, "one Event, not one per cycle");
    // The good policy went on: the move started.
    let intent = Intent::of(&h.workload("app").unwrap()).expect("p still acts");
    assert_eq!(intent.policy, "p");
    assert!(h.workload(&copy_name("app")).is_some());
    assert!(!h
        .ctx
        .metrics
        .encode()
        .contains("edgewatt_prometheus_errors_total 1"));
}

/// Detection → first action in real time: the real run loop (`Controller`, 1 s interval), a real
/// Prometheus scraping every second, `for: 3s`. Measured from the moment the `for` window
/// expires (battery drop at the exporter + `for`) to the first write of the move (intent
/// annotation). Printed, not asserted as a timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_to_first_action_latency() {
    let h = harness_every(Duration::from_secs(1), &[("d1", 0.9), ("d2", 0.9)], &[]).await;
    ns_edge(&h.server);
    h.device("d1", json!([{"name": "app", "phase": "Running"}]));
    h.device("d2", json!([]));
    h.server
        .put(json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
            "metadata": {"name": "app", "namespace": "edge"},
            "spec": {"device": "d1", "type": "pod", "pod": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .unwrap();
    let p: EnergyPolicy = serde_json::from_value(json!({
        "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "targets": {"edgeDeviceSelector": {}},
            "starvation": {"batteryBelowPercent": 20, "for": "3s"},
            "action": {"mode": "Migrate", "cooldown": "10m", "migrationTimeout": "5m"}
        }
    }))
    .unwrap();
    h.server.put_typed(&p).unwrap();
    let run = tokio::spawn(edgewatt_controller::reconciler::run(h.ctx.clone()));
    // Wait for the first reconciled status.
    let t = std::time::Instant::now();
    while h
        .server
        .get_typed::<EnergyPolicy>(None, "p")
        .and_then(|p| p.status)
        .is_none_or(|s| s.conditions.is_empty())
    {
        assert!(t.elapsed() < Duration::from_secs(20), "no first cycle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let for_ = Duration::from_secs(3);
    *h.body.lock().unwrap() = metrics_body(&[("d1", 0.1), ("d2", 0.9)], &[]);
    let drop_at = std::time::Instant::now();
    let mut starved_at = None;
    let action_at = loop {
        let now = std::time::Instant::now();
        assert!(now - drop_at < Duration::from_secs(30), "no action");
        if starved_at.is_none()
            && h.server
                .get_typed::<EnergyPolicy>(None, "p")
                .and_then(|p| p.status)
                .is_some_and(|s| s.starved_count > 0)
        {
            starved_at = Some(now);
        }
        if h.workload("app").and_then(|w| Intent::of(&w)).is_some() {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    run.abort();
    let expired = drop_at + for_;
    let ms = |a: std::time::Instant, b: std::time::Instant| {
        a.checked_duration_since(b)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(|| -(b.duration_since(a).as_millis() as i64))
    };
    println!("timeline (scrape 1 s, controller interval 1 s, for 3 s):");
    println!("  t=0 ms      battery drops to 10% at the exporter");
    println!(
        "  t={} ms  `for` window expires (drop + for)",
        for_.as_millis()
    );
    if let Some(s) = starved_at {
        println!("  t={} ms  status shows the device starved", ms(s, drop_at));
    }
    println!(
        "  t={} ms  first action (intent annotation written)",
        ms(action_at, drop_at)
    );
    println!(
        "detection -> first action after `for` expired: {} ms",
        ms(action_at, expired)
    );
    assert!(action_at > expired, "acted before the `for` window expired");
}
