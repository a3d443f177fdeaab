//! Issue 16 item 4: the controller with parts of the cluster missing. Flotta's CRDs not installed
//! (the API server double's `unregister`: 404 and absent from discovery), or a permission
//! missing (a test-local proxy in front of the double answers a list of PodDisruptionBudgets
//! the way kube-apiserver answers a request RBAC denies). Either way the controller becomes
//! Ready, runs every policy it can, and says what is missing in `Degraded` and an Event; Flotta
//! installed later is picked up without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use edgewatt_controller::{
    context::Context,
    cycle_with,
    leader::Fence,
    reconciler,
    snapshot::PromData,
    stores::{Res, StoreState},
};
use edgewatt_crds::{
    prom::{Reading, SignalTable},
    promql::Signal,
    EnergyPolicy,
};
use edgewatt_e2e::apiserver::{parse_crd, ApiServer};
use serde_json::{json, Value};

mod common;

fn table(rows: &[(&str, f64)]) -> SignalTable {
    let mut t = SignalTable::default();
    for (name, ratio) in rows {
        t.readings.entry(name.to_string()).or_default().insert(
            Signal::BatteryRatio,
            Reading {
                value: *ratio,
                age_secs: Some(1.0),
            },
        );
    }
    t
}

fn context(client: kube::Client, fence: Fence) -> Arc<Context> {
    // Cycles are driven by hand a minute apart (see direct.rs).
    common::context(
        client,
        common::no_prometheus(),
        Duration::from_secs(60),
        fence,
        "test",
    )
}

fn cluster(server: &ApiServer) {
    for (n, _) in [("n1", 0.1), ("n2", 0.9)] {
        server
            .put(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n, "labels": {"edge": "true"}},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
    }
    server
        .put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
    let p: EnergyPolicy = serde_json::from_value(json!({
        "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "targets": {"nodeSelector": {"matchLabels": {"edge": "true"}}, "edgeDeviceSelector": {}},
            "starvation": {"batteryBelowPercent": 20, "for": "1m"},
            "recovery": {"batteryAbovePercent": 35, "for": "1m"},
            "action": {"mode": "Migrate", "cooldown": "10m"}
        }
    }))
    .unwrap();
    server.put_typed(&p).unwrap();
}

async fn cycle(server: &ApiServer, ctx: &Context, now: chrono::DateTime<Utc>) -> EnergyPolicy {
    // The node and pod caches have caught up once they hold what the server holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctx.stores.pods.state().len() != server.list("pods").len()
        || ctx.stores.nodes.state().len() != server.list("nodes").len()
    {
        assert!(Instant::now() < deadline, "stores did not catch up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let p: EnergyPolicy = server.get_typed(None, "p").unwrap();
    let prom = PromData {
        nodes: table(&[("n1", 0.1), ("n2", 0.9)]),
        devices: table(&[("d1", 0.1), ("d2", 0.9)]),
        ..Default::default()
    };
    cycle_with(&p, ctx, now, Ok(prom)).await.unwrap();
    server.get_typed(None, "p").unwrap()
}

fn degraded(p: &EnergyPolicy) -> (String, String, String) {
    let c = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .clone();
    (c.status, c.reason, c.message)
}

fn events(server: &ApiServer, reason: &str) -> Vec<Value> {
    server
        .list("events.events.k8s.io")
        .into_iter()
        .chain(server.list("events"))
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn evictions(server: &ApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/eviction") && r.status < 300)
        .count()
}

/// Readiness as `/readyz` reports it: the run loop sets it once every store has listed or
/// failed in a way that waiting will not fix.
async fn becomes_ready(client: kube::Client) -> Duration {
    let standby = context(client, Fence::new());
    let t = Instant::now();
    let run = tokio::spawn(reconciler::run(standby.clone()));
    while !standby
        .metrics
        .ready
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        assert!(t.elapsed() < Duration::from_secs(15), "never Ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort();
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flotta_the_controller_is_ready_runs_node_policies_and_picks_flotta_up_later() {
    let server = ApiServer::start().await.unwrap();
    server.unregister("edgedevices.management.project-flotta.io");
    server.unregister("edgeworkloads.management.project-flotta.io");
    cluster(&server);
    becomes_ready(server.client().unwrap()).await;

    let ctx = context(server.client().unwrap(), Fence::always());
    ctx.stores.ready().await;
    assert!(matches!(
        ctx.stores.health.get(Res::Devices),
        StoreState::Missing(_)
    ));
    let t0 = Utc::now();
    cycle(&server, &ctx, t0).await;
    let p = cycle(&server, &ctx, t0 + chrono::Duration::seconds(61)).await;
    let (status, reason, message) = degraded(&p);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "FlottaNotInstalled")
    );
    assert!(
        message.contains("edgedevices.management.project-flotta.io"),
        "{message}"
    );
    // The node part of the same policy runs: n1 is starved, tainted and drained.
    let st = p.status.clone().unwrap();
    assert_eq!(st.starved_count, 1);
    assert_eq!(st.starved[0].name, "n1");
    assert_eq!(evictions(&server), 1);
    let ready = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(
        events(&server, "FlottaNotInstalled").len(),
        1,
        "one Event, not one per cycle"
    );

    // Flotta's CRDs appear: picked up without a restart.
    for crd in [
        include_str!("../../crds/flotta/management.project-flotta.io_edgedevices.yaml"),
        include_str!("../../crds/flotta/management.project-flotta.io_edgeworkloads.yaml"),
    ] {
        server.put(parse_crd(crd).unwrap()).unwrap();
    }
    let t = Instant::now();
    while ctx.stores.health.get(Res::Devices) != StoreState::Synced
        || ctx.stores.health.get(Res::Workloads) != StoreState::Synced
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "Flotta not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "Flotta's CRDs picked up {:.1} s after they appeared",
        t.elapsed().as_secs_f64()
    );
    server
        .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}}))
        .unwrap();
    for d in ["d1", "d2"] {
        server
            .put(json!({
                "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeDevice",
                "metadata": {"name": d, "namespace": "edge"},
                "spec": {}, "status": {"phase": "up"}
            }))
            .unwrap();
    }
    while ctx.stores.devices.state().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = cycle(&server, &ctx, t0 + chrono::Duration::seconds(90)).await;
    let (status, reason, _) = degraded(&p);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AsExpected"));
    let p = cycle(&server, &ctx, t0 + chrono::Duration::seconds(160)).await;
    assert!(
        p.status.unwrap().starved.iter().any(|s| s.name == "d1"),
        "devices are evaluated once Flotta is there"
    );
}

// ---------- a missing permission ----------

/// What kube-apiserver's authorization filter answers for a `list`/`watch` of
/// PodDisruptionBudgets at the cluster scope that RBAC denies: 403, a `Status` with reason
/// `Forbidden`, the message of `responsewriters.forbiddenMessage` wrapped by
/// `apierrors.NewForbidden` (`staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
/// responsewriters/errors.go`).
fn deny_pdb_list(method: &str, path: &str) -> Option<axum::response::Response> {
    (method == "GET" && path == "/apis/policy/v1/poddisruptionbudgets").then(|| {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "poddisruptionbudgets.policy is forbidden: User \"system:serviceaccount:edgewatt-system:edgewatt-controller\" cannot list resource \"poddisruptionbudgets\" in API group \"policy\" at the cluster scope",
            "reason": "Forbidden",
            "details": {"group": "policy", "kind": "poddisruptionbudgets"},
            "code": 403
        });
        axum::response::Response::builder()
            .status(403)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(status.to_string()))
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_permission_to_list_pdbs_the_controller_is_ready_evicts_and_says_so() {
    let server = ApiServer::start().await.unwrap();
    cluster(&server);
    let client = common::proxy(&server, deny_pdb_list, "").await.client;
    becomes_ready(client.clone()).await;
    let ctx = context(client, Fence::always());
    ctx.stores.ready().await;
    assert!(matches!(
        ctx.stores.health.get(Res::Pdbs),
        StoreState::Forbidden(_)
    ));
    let t0 = Utc::now();
    cycle(&server, &ctx, t0).await;
    let p = cycle(&server, &ctx, t0 + chrono::Duration::seconds(61)).await;
    let (status, reason, message) = degraded(&p);
    assert_eq!(status, "True");
    assert!(reason.split(',').any(|r| r == "Forbidden"), "{reason}");
    assert!(
        message.contains(
            "Forbidden: list poddisruptionbudgets: poddisruptionbudgets.policy is forbidden"
        ),
        "{message}"
    );
    // Evictions go on: the Eviction API enforces PDBs whatever the controller can list.
    assert_eq!(evictions(&server), 1);
    let ev = events(&server, "Forbidden");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["regarding"]["name"], "p");
}
