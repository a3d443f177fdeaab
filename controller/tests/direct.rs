//! The runtime against the API server double with the planner's Prometheus input given directly
//! (`reconciler::cycle_with`): restarts (cooldown from status), PodDisruptionBudgets, bad input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use edgewatt_controller::{
    actuator::{copy_name, Intent},
    context::Context,
    cycle_with,
    leader::Fence,
    snapshot::PromData,
};
use edgewatt_crds::{
    keys,
    prom::{Reading, SignalTable},
    promql::Signal,
    EdgeWorkload, EnergyPolicy, MigrationResult,
};
use edgewatt_e2e::apiserver::ApiServer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde_json::{json, Value};

mod common;

struct H {
    server: ApiServer,
    ctx: Arc<Context>,
}

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

fn devices(rows: &[(&str, f64)]) -> PromData {
    PromData {
        devices: table(rows),
        ..Default::default()
    }
}

fn nodes(rows: &[(&str, f64)]) -> PromData {
    PromData {
        nodes: table(rows),
        ..Default::default()
    }
}

async fn start() -> H {
    let server = ApiServer::start().await.unwrap();
    let mut cfg = server.config().unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    // Cycles are driven by hand, up to a minute of `now` apart: see `common::settings`.
    let ctx = common::context(
        client.clone(),
        common::no_prometheus(),
        Duration::from_secs(60),
        Fence::always(),
        "test",
    );
    ctx.stores.ready().await;
    server
        .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}}))
        .unwrap();
    H { server, ctx }
}

impl H {
    fn policy(&self, name: &str, spec: Value) {
        let mut base = json!({
            "starvation": {"batteryBelowPercent": 20, "for": "1m"},
            "recovery": {"batteryAbovePercent": 35, "for": "1m"},
            "action": {"mode": "Migrate", "cooldown": "10m", "migrationTimeout": "5m"}
        });
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        let p: EnergyPolicy = serde_json::from_value(json!({
            "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
            "metadata": {"name": name}, "spec": base
        }))
        .unwrap();
        self.server.put_typed(&p).unwrap();
    }

    fn device(&self, name: &str, labels: Value, workloads: Value) {
        let mut obj = json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeDevice",
            "metadata": {"name": name, "namespace": "edge", "labels": labels},
            "spec": {},
            "status": {"phase": "up", "workloads": workloads}
        });
        if let Some(old) = self.server.get("edgedevices", Some("edge"), name) {
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        self.server.put(obj).unwrap();
    }

    fn edge_workload(&self, name: &str, device: &str, selector: Value) {
        self.server
            .put(json!({
                "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
                "metadata": {"name": name, "namespace": "edge"},
                "spec": {"device": device, "deviceSelector": selector, "type": "pod",
                    "pod": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
            }))
            .unwrap();
    }

    fn workload(&self, name: &str) -> Option<EdgeWorkload> {
        self.server.get_typed(Some("edge"), name)
    }

    /// Waits until every store shows the server's current objects.
    async fn sync(&self) {
        common::sync(&self.ctx, &self.server).await;
    }

    async fn cycle(&self, policy: &str, now: DateTime<Utc>, prom: PromData) -> EnergyPolicy {
        self.sync().await;
        let p: EnergyPolicy = self.server.get_typed(None, policy).unwrap();
        cycle_with(&p, &self.ctx, now, Ok(prom)).await.unwrap();
        self.server.get_typed(None, policy).unwrap()
    }

    fn events(&self, reason: &str) -> Vec<Value> {
        self.server
            .list("events.events.k8s.io")
            .into_iter()
            .chain(self.server.list("events"))
            .filter(|e| e["reason"] == reason)
            .collect()
    }
}

fn condition(p: &EnergyPolicy, type_: &str) -> Condition {
    p.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// app on d1 (starved), d2 healthy; moves app to d2 make-before-break, the test playing Flotta.
async fn move_app_to_d2(h: &H, policy: &str, t0: DateTime<Utc>, prom: &PromData) {
    h.cycle(policy, t0, prom.clone()).await;
    h.cycle(policy, t0 + secs(61), prom.clone()).await;
    let copy = h.workload(&copy_name("app")).expect("copy created");
    assert!(
        copy.spec
            .pod
            .is_some_and(|p| p.spec["containers"][0]["image"] == "nginx"),
        "the copy carries the pod template (read from the API server, not the trimmed cache)"
    );
    h.device(
        "d2",
        json!({}),
        json!([{"name": copy_name("app"), "phase": "running"}]),
    );
    h.cycle(policy, t0 + secs(70), prom.clone()).await;
    h.device("d1", json!({}), json!([]));
    h.device(
        "d2",
        json!({}),
        json!([{"name": "app", "phase": "Running"}]),
    );
    h.cycle(policy, t0 + secs(80), prom.clone()).await;
    let app = h.workload("app").unwrap();
    assert_eq!(app.spec.device.as_deref(), Some("d2"));
    assert!(Intent::of(&app).is_none() && h.workload(&copy_name("app")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_survives_a_restart() {
    let h = start().await;
    h.device(
        "d1",
        json!({}),
        json!([{"name": "app", "phase": "Running"}]),
    );
    h.device("d2", json!({}), json!([]));
    h.edge_workload("app", "d1", Value::Null);
    h.policy("p", json!({"targets": {"edgeDeviceSelector": {}}}));
    let t0 = Utc::now();
    move_app_to_d2(&h, "p", t0, &devices(&[("d1", 0.1), ("d2", 0.9)])).await;
    let finished = t0 + secs(80);

    // Restart: the controller forgets everything; only the API server remembers.
    h.ctx.runtime.lock().await.clear();
    // Now d2 drains and d1 is full: app sits on a starved device again.
    let flipped = devices(&[("d1", 0.9), ("d2", 0.1)]);
    h.cycle("p", finished + secs(10), flipped.clone()).await;
    let p = h.cycle("p", finished + secs(80), flipped.clone()).await;
    assert!(p
        .status
        .as_ref()
        .unwrap()
        .starved
        .iter()
        .any(|s| s.name == "d2"));
    let app = h.workload("app").unwrap();
    assert!(
        Intent::of(&app).is_none() && h.workload(&copy_name("app")).is_none(),
        "moved again within the cooldown after a restart"
    );
    // Another restart, still within the cooldown (10 min from the end of the move).
    h.ctx.runtime.lock().await.clear();
    h.cycle("p", finished + secs(590), flipped.clone()).await;
    assert!(Intent::of(&h.workload("app").unwrap()).is_none());
    // Once the cooldown is over it moves.
    h.cycle("p", finished + secs(610), flipped.clone()).await;
    let intent = Intent::of(&h.workload("app").unwrap()).expect("moves after the cooldown");
    assert_eq!((intent.from.as_str(), intent.to.as_str()), ("d2", "d1"));
}

/// A pod labelled app=web, owned by ReplicaSet `name` (one owner per pod here: the PDB, not
/// the per-owner cooldown, is what this test is about).
fn web_pod(h: &H, name: &str) {
    h.server
        .put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": name, "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_with_no_disruption_left_is_not_hammered_and_429_is_still_handled() {
    let h = start().await;
    for n in ["n1", "n2"] {
        h.server
            .put(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n, "labels": {"edge": "true"}},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
    }
    web_pod(&h, "web-1");
    web_pod(&h, "web-2");
    h.server
        .put(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 1}
        }))
        .unwrap();
    h.server
        .set_pdb_disruptions_allowed("default", "web", 1)
        .unwrap();
    h.policy(
        "p",
        json!({"targets": {"nodeSelector": {"matchLabels": {"edge": "true"}}}}),
    );
    let prom = nodes(&[("n1", 0.1), ("n2", 0.9)]);
    let t0 = Utc::now();
    h.cycle("p", t0, prom.clone()).await;
    // One disruption allowed: web-1 goes, web-2's eviction is refused (429) — and not forced.
    let started = Instant::now();
    let p = h.cycle("p", t0 + secs(61), prom.clone()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "429 not retried in-client"
    );
    assert!(h.server.get("pods", Some("default"), "web-1").is_none());
    assert!(h.server.get("pods", Some("default"), "web-2").is_some());
    let recs = &p.status.as_ref().unwrap().migrations;
    assert!(recs
        .iter()
        .any(|r| r.name == "web-2" && r.result == MigrationResult::Blocked));
    let evictions = |h: &H| {
        h.server
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/eviction"))
            .count()
    };
    assert_eq!(evictions(&h), 2);
    // The budget is now 0 in the PDB's status: web-2 is skipped, no Eviction call at all.
    for i in 0..3 {
        h.cycle("p", t0 + secs(91 + 30 * i), prom.clone()).await;
    }
    assert_eq!(
        evictions(&h),
        2,
        "Eviction API hammered despite an exhausted PDB"
    );
    let blocked = h.events("EvictionSkipped");
    assert!(
        blocked.iter().any(|e| e["note"]
            .as_str()
            .is_some_and(|n| n.contains("PDB allows no disruption now"))),
        "{blocked:?}"
    );
    assert!(h.server.get("pods", Some("default"), "web-2").is_some());
    // The budget frees up: web-2 is evicted through the Eviction API.
    h.server
        .set_pdb_disruptions_allowed("default", "web", 1)
        .unwrap();
    h.cycle("p", t0 + secs(200), prom.clone()).await;
    assert_eq!(evictions(&h), 3);
    assert!(h.server.get("pods", Some("default"), "web-2").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_matching_nothing_is_reported_and_other_policies_go_on() {
    let h = start().await;
    h.device(
        "d1",
        json!({}),
        json!([{"name": "app", "phase": "Running"}]),
    );
    h.device("d2", json!({}), json!([]));
    h.edge_workload("app", "d1", Value::Null);
    h.policy("p", json!({"targets": {"edgeDeviceSelector": {}}}));
    h.policy(
        "nothing",
        json!({"targets": {"edgeDeviceSelector": {"matchLabels": {"zone": "nowhere"}}}}),
    );
    h.policy(
        "no-workloads",
        json!({"targets": {"edgeDeviceSelector": {}},
               "workloads": {"selector": {"matchLabels": {"tier": "none"}}}}),
    );
    let prom = devices(&[("d1", 0.1), ("d2", 0.9)]);
    let t0 = Utc::now();
    for (i, t) in [t0, t0 + secs(61)].into_iter().enumerate() {
        for name in ["nothing", "no-workloads", "p"] {
            let p = h.cycle(name, t, prom.clone()).await;
            if name != "p" {
                let c = condition(&p, "Degraded");
                assert_eq!(
                    (c.status.as_str(), c.reason.as_str()),
                    ("True", "SelectorMatchesNothing"),
                    "{name}"
                );
                assert!(c.message.contains(if name == "nothing" {
                    "edgeDeviceSelector matches no EdgeDevice"
                } else {
                    "selects no Pod or EdgeWorkload"
                }));
            }
            if i == 1 && name == "p" {
                assert_eq!(condition(&p, "Degraded").status, "False");
            }
        }
    }
    // One Event per policy and problem, not one per cycle.
    assert_eq!(h.events("SelectorMatchesNothing").len(), 2);
    // The good policy went on: the move started.
    assert!(h.workload(&copy_name("app")).is_some());
    assert!(Intent::of(&h.workload("app").unwrap()).is_some_and(|i| i.policy == "p"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_disappearing_mid_migration_is_undone_and_reported() {
    let h = start().await;
    let a = json!({"zone": "a"});
    let b = json!({"zone": "b"});
    h.device(
        "d1",
        a.clone(),
        json!([{"name": "app", "phase": "Running"}]),
    );
    h.device("d2", a.clone(), json!([]));
    h.device(
        "d3",
        b.clone(),
        json!([{"name": "app-b", "phase": "Running"}]),
    );
    h.device("d4", b.clone(), json!([]));
    h.edge_workload("app", "d1", json!({"matchLabels": a}));
    h.edge_workload("app-b", "d3", json!({"matchLabels": b}));
    h.policy(
        "pa",
        json!({"targets": {"edgeDeviceSelector": {"matchLabels": a}}}),
    );
    h.policy(
        "pb",
        json!({"targets": {"edgeDeviceSelector": {"matchLabels": b}}}),
    );
    let prom = devices(&[("d1", 0.1), ("d2", 0.9), ("d3", 0.1), ("d4", 0.9)]);
    let t0 = Utc::now();
    h.cycle("pa", t0, prom.clone()).await;
    h.cycle("pa", t0 + secs(61), prom.clone()).await;
    assert_eq!(
        Intent::of(&h.workload("app").unwrap()).map(|i| i.to),
        Some("d2".into())
    );
    // The copy runs on d2 and the original is re-pointed; then d2 is deleted.
    h.device(
        "d2",
        a.clone(),
        json!([{"name": copy_name("app"), "phase": "running"}]),
    );
    h.cycle("pa", t0 + secs(70), prom.clone()).await;
    assert_eq!(
        h.workload("app").unwrap().spec.device.as_deref(),
        Some("d2")
    );
    h.server.remove("edgedevices", Some("edge"), "d2").unwrap();
    let prom_gone = devices(&[("d1", 0.1), ("d3", 0.1), ("d4", 0.9)]);
    let p = h.cycle("pa", t0 + secs(80), prom_gone.clone()).await;
    // Undone at once (not after the 5 min timeout): back on d1, no copy, no intent.
    let app = h.workload("app").unwrap();
    assert_eq!(app.spec.device.as_deref(), Some("d1"));
    assert!(!app.annotations().contains_key(keys::MIGRATION_INTENT));
    assert!(h.workload(&copy_name("app")).is_none());
    let c = condition(&p, "Degraded");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "TargetDisappeared")
    );
    assert!(c.message.contains("d2 disappeared"), "{}", c.message);
    let last = p
        .status
        .as_ref()
        .unwrap()
        .migrations
        .last()
        .unwrap()
        .clone();
    assert_eq!(last.result, MigrationResult::Failed);
    assert!(h.events("MigrationFailed").iter().any(|e| e["note"]
        .as_str()
        .is_some_and(|n| n.contains("disappeared"))));
    // The other policy is served as usual meanwhile.
    h.cycle("pb", t0 + secs(80), prom_gone.clone()).await;
    h.cycle("pb", t0 + secs(141), prom_gone.clone()).await;
    assert_eq!(
        Intent::of(&h.workload("app-b").unwrap()).map(|i| i.to),
        Some("d4".into())
    );
    // And pa itself keeps running: no target left for app, nothing moves, no panic.
    let p = h.cycle("pa", t0 + secs(150), prom_gone).await;
    assert_eq!(condition(&p, "Ready").status, "True");
    assert!(Intent::of(&h.workload("app").unwrap()).is_none());
}

/// A live, selected device without the data the policy needs is reported once the grace period
/// (here the 1 m starvation window) has passed — it can never be starved nor receive work — and
/// the report clears when its data arrives. An offline device's silence is not reported.
#[tokio::test]
async fn live_target_without_data_is_reported_after_the_grace_period() {
    let h = start().await;
    h.device("d1", json!({}), json!([]));
    h.device("d2", json!({}), json!([]));
    h.server
        .put(json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeDevice",
            "metadata": {"name": "d3", "namespace": "edge"},
            "spec": {}, "status": {"phase": "down"}
        }))
        .unwrap();
    h.policy("p", json!({"targets": {"edgeDeviceSelector": {}}}));
    let only_d1 = devices(&[("d1", 0.9)]);
    let t0 = Utc::now();
    let p = h.cycle("p", t0, only_d1.clone()).await;
    assert_eq!(
        condition(&p, "Degraded").status,
        "False",
        "within the grace period"
    );
    let p = h.cycle("p", t0 + secs(59), only_d1.clone()).await;
    assert_eq!(
        condition(&p, "Degraded").status,
        "False",
        "within the grace period"
    );
    for t in [61, 62] {
        let p = h.cycle("p", t0 + secs(t), only_d1.clone()).await;
        let c = condition(&p, "Degraded");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "TargetDataMissing")
        );
        assert!(
            c.message.starts_with("1 live target(s)") && c.message.contains("EdgeDevice edge/d2"),
            "{}",
            c.message
        );
    }
    assert_eq!(
        h.events("TargetDataMissing").len(),
        1,
        "one Event, not one per cycle"
    );
    let p = h
        .cycle("p", t0 + secs(63), devices(&[("d1", 0.9), ("d2", 0.8)]))
        .await;
    assert_eq!(condition(&p, "Degraded").status, "False");
}

fn node(h: &H, name: &str) {
    h.server
        .put(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"edge": "true"}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
}

/// A pod of Deployment `web` (ReplicaSet `web-5d4f8`, as the Deployment controller names it).
fn deployment_pod(h: &H, name: &str, node: &str) {
    h.server
        .put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                "labels": {"app": "web", "pod-template-hash": "5d4f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8", "uid": "rs1", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
}

/// Issue 17 "No loops": a Deployment whose pods keep landing on a starved node (replaced by
/// its ReplicaSet, new names each time) has its two pods that were on the node evicted (the
/// drain) and no replacement within the cooldown — the cooldown is the owner's, not the pod
/// name's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_evicted_at_most_once_per_cooldown_as_its_pods_are_replaced() {
    let h = start().await;
    node(&h, "n1");
    node(&h, "n2");
    deployment_pod(&h, "web-a", "n1");
    deployment_pod(&h, "web-b", "n1");
    h.policy(
        "p",
        json!({"targets": {"nodeSelector": {"matchLabels": {"edge": "true"}}}}),
    );
    let prom = nodes(&[("n1", 0.1), ("n2", 0.9)]);
    // Paths of the accepted Eviction calls, in order.
    let evicted = |h: &H| -> Vec<String> {
        h.server
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/eviction") && r.status < 300)
            .map(|r| r.path.clone())
            .collect()
    };
    let t0 = Utc::now();
    h.cycle("p", t0, prom.clone()).await;
    let mut k = 0;
    // Nine minutes of cycles every 30 s; the ReplicaSet stand-in puts a replacement on n1
    // whenever one goes (as a scheduler would that saw the node before its taint).
    for i in 0..19 {
        h.cycle("p", t0 + secs(61 + 30 * i), prom.clone()).await;
        let on_n1 = h
            .server
            .list("pods")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "n1")
            .count();
        for _ in on_n1..2 {
            k += 1;
            deployment_pod(&h, &format!("web-r{k}"), "n1");
        }
    }
    let drained = evicted(&h);
    assert_eq!(
        drained.len(),
        2,
        "web-a and web-b drained, no replacement evicted within the cooldown: {drained:?}"
    );
    assert!(drained[0].contains("/web-a/") && drained[1].contains("/web-b/"));
    // web-b went in the cycle at 91 s: the owner's cooldown runs 10 minutes from there.
    let p = h.cycle("p", t0 + secs(91 + 601), prom.clone()).await;
    assert_eq!(
        evicted(&h).len(),
        3,
        "after the cooldown the owner may move again"
    );
    let rec = p.status.unwrap().migrations;
    assert!(rec
        .iter()
        .all(|r| r.owner.as_deref() == Some("Deployment/default/web")));
    // The node carries the taint (and says which policy put it).
    let n1 = h.server.get("nodes", None, "n1").unwrap();
    assert_eq!(n1["spec"]["taints"][0]["key"], "edgewatt.io/energy-starved");
    assert_eq!(
        n1["metadata"]["annotations"]["edgewatt.io/energy-starved-by"],
        "p"
    );
}

/// Issue 17 "Policy lifecycle": deleting a policy undoes its move in flight, removes its taint
/// and its copy, withdraws its metrics, then lets the policy go (finalizer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_policy_leaves_no_taint_intent_or_copy() {
    let h = start().await;
    node(&h, "n1");
    node(&h, "n2");
    h.device(
        "d1",
        json!({}),
        json!([{"name": "app", "phase": "Running"}]),
    );
    h.device("d2", json!({}), json!([]));
    h.edge_workload("app", "d1", Value::Null);
    h.policy(
        "p",
        json!({"targets": {"nodeSelector": {"matchLabels": {"edge": "true"}}, "edgeDeviceSelector": {}}}),
    );
    let prom = PromData {
        nodes: table(&[("n1", 0.1), ("n2", 0.9)]),
        devices: table(&[("d1", 0.1), ("d2", 0.9)]),
        ..Default::default()
    };
    let t0 = Utc::now();
    h.cycle("p", t0, prom.clone()).await;
    let p = h.cycle("p", t0 + secs(61), prom.clone()).await;
    assert_eq!(p.finalizers(), ["edgewatt.io/cleanup"]);
    assert!(Intent::of(&h.workload("app").unwrap()).is_some());
    assert!(h.workload(&copy_name("app")).is_some());
    let tainted = |h: &H| {
        h.server.get("nodes", None, "n1").unwrap()["spec"]["taints"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    };
    assert!(tainted(&h));
    assert!(h.ctx.metrics.encode().contains("policy=\"p\""));
    // kubectl delete: the finalizer holds the policy while the controller cleans up.
    let api: kube::Api<EnergyPolicy> = kube::Api::all(h.server.client().unwrap());
    api.delete("p", &Default::default()).await.unwrap();
    let deleting: EnergyPolicy = h
        .server
        .get_typed(None, "p")
        .expect("held by its finalizer");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    for i in 0..3 {
        let Some(p) = h.server.get_typed::<EnergyPolicy>(None, "p") else {
            break;
        };
        h.sync().await;
        cycle_with(&p, &h.ctx, t0 + secs(70 + i), Ok(prom.clone()))
            .await
            .unwrap();
    }
    assert!(
        h.server.get("energypolicies", None, "p").is_none(),
        "the finalizer was not removed"
    );
    let app = h.workload("app").unwrap();
    assert!(Intent::of(&app).is_none(), "intent left behind");
    assert!(!app.annotations().contains_key(keys::ABORT_MIGRATION));
    assert_eq!(app.spec.device.as_deref(), Some("d1"), "undone");
    assert!(h.workload(&copy_name("app")).is_none(), "copy left behind");
    assert!(!tainted(&h), "taint left behind");
    assert!(
        h.server.get("nodes", None, "n1").unwrap()["metadata"]["annotations"]
            ["edgewatt.io/energy-starved-by"]
            .is_null()
    );
    assert!(
        !h.ctx.metrics.encode().contains("policy=\"p\",mode"),
        "the deleted policy's gauges are still exported"
    );
    assert!(h
        .events("MigrationAborted")
        .iter()
        .any(|e| e["regarding"]["uid"].is_string()));
}

/// Observe mode reports what Migrate would do: both pods of the Deployment on the starved node
/// (the drain) as DryRun records, one per cycle, and nothing more within the cooldown — never
/// an eviction or a taint. (Before, the dry run recorded the move but not the drain, so it
/// reported one pod per cooldown where an enforced run drains the node.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_reports_the_whole_drain_like_migrate_would() {
    let h = start().await;
    node(&h, "n1");
    node(&h, "n2");
    deployment_pod(&h, "web-a", "n1");
    deployment_pod(&h, "web-b", "n1");
    h.policy(
        "p",
        json!({
            "targets": {"nodeSelector": {"matchLabels": {"edge": "true"}}},
            "action": {"mode": "Observe", "cooldown": "10m", "migrationTimeout": "5m"}
        }),
    );
    let prom = nodes(&[("n1", 0.1), ("n2", 0.9)]);
    let t0 = Utc::now();
    let mut p = h.cycle("p", t0, prom.clone()).await;
    for i in 0..10 {
        p = h.cycle("p", t0 + secs(61 + 30 * i), prom.clone()).await;
    }
    let reported: Vec<(String, MigrationResult)> = p
        .status
        .unwrap()
        .migrations
        .iter()
        .map(|r| (r.name.clone(), r.result))
        .collect();
    assert_eq!(
        reported,
        vec![
            ("web-a".to_string(), MigrationResult::DryRun),
            ("web-b".to_string(), MigrationResult::DryRun)
        ],
        "the whole drain, once each, within the cooldown"
    );
    assert!(
        !h.server
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/eviction")),
        "a dry run evicts nothing"
    );
    let n1 = h.server.get("nodes", None, "n1").unwrap();
    assert!(
        n1["spec"]["taints"].is_null(),
        "a dry run taints nothing: {n1}"
    );
}
