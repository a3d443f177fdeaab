//! The degradation ladder end to end (issue #27), on the chart as installed: every binary runs
//! as the chart renders it, under the chart's RBAC (its `pods/resize` and `*/scale` rules
//! enforced by the API server double), against a real Prometheus whose TSDB holds three days of
//! the nodes' supply history, backfilled before it starts (common/mod.rs `Install::history`).
//!
//! The scenario: a two-node site on battery at night, both nodes starved, nowhere to move the
//! work. The ladder throttles and suspends the least critical work first and only as far as the
//! forecast needs, never touches critical pods, kube-system's or edgewatt's own; when the
//! batteries are charged and the forecast says the load fits, everything comes back exactly.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use edgewatt_crds::metrics::{base, MetricNames};
use edgewatt_crds::promql::{TargetQuery, SUPPLY_RESOLUTION};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};

const NS: &str = "shop";
const NODES: [&str; 2] = ["node-a", "node-b"];

/// Every pod draws this at its full CPU limit (see [`site_standin`]).
const POD_WATTS: f64 = 1.0;

/// The supply history: from this time of day on, each of the last days had `NIGHT` of no supply
/// at all, then 100 W of sun. A little longer than the 8 h the forecast should see, so that the
/// minutes between writing the history and the controller's read never move the recharge.
const NIGHT: Duration = Duration::from_secs(8 * 3600 + 30 * 60);
const SUN_WATTS: f64 = 100.0;
/// How far back the history goes: `spec.forecast.periods` (3) × `period` (24 h) plus the hour
/// the controller's range query adds (controller/src/signals.rs `supply_history`), and one more.
const HISTORY: Duration = Duration::from_secs(74 * 3600);
/// One sample per 15 s: the supply query reads the node's draw through
/// `last_over_time(…[nodeMaxAge])`, 20 s in values-test.yaml, at each 60 s subquery step.
const STEP_S: i64 = 15;

/// The nodes' supply history as OpenMetrics text, in the series the controller's supply query
/// reads: `TargetQuery::supply_hourly` (crds/src/promql.rs) is
/// `avg_over_time((max by (node_name) (<charge>) - max by (node_name) (<draw>) + on (node_name)
/// (<node watts>))[1h:60s])` over `edgewatt_node_battery_charge_power_watts`,
/// `edgewatt_node_battery_power_watts` and, for a node with a platform meter,
/// `edgewatt_node_platform_watts` (crds/src/metrics.rs `base::*` under the default prefix), each
/// per `node_name` — the names the exporter serves them under. At night the battery carries the
/// node (5 W out, 5 W drawn: supply 0); by day the sun charges it at 95 W while the node draws
/// 5 W (supply 100 W).
fn supply_history(t0: DateTime<Utc>) -> String {
    let names = MetricNames::default();
    let families = [
        base::BATTERY_CHARGE_POWER_WATTS,
        base::BATTERY_POWER_WATTS,
        base::NODE_PLATFORM_WATTS,
    ];
    let (end, start) = (t0.timestamp(), (t0 - HISTORY).timestamp());
    let mut out = String::with_capacity(8 << 20);
    for family in families {
        let name = names.name(family);
        writeln!(out, "# TYPE {name} gauge").unwrap();
        for node in NODES {
            let mut t = start;
            while t < end {
                let night = (t - end).rem_euclid(86_400) < NIGHT.as_secs() as i64;
                let v = match (family, night) {
                    (base::BATTERY_CHARGE_POWER_WATTS, true) => 0.0,
                    (base::BATTERY_CHARGE_POWER_WATTS, false) => SUN_WATTS - 5.0,
                    (base::BATTERY_POWER_WATTS, true) => 5.0,
                    (base::BATTERY_POWER_WATTS, false) => 0.0,
                    _ => 5.0,
                };
                writeln!(out, "{name}{{node_name=\"{node}\"}} {v} {t}").unwrap();
                t += STEP_S;
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A Deployment of the shop: one replica, pinned to `node` by the placement the stand-in plays,
/// its criticality on its template (where the controller reads it, as Deployments copy template
/// annotations to their pods) and on itself.
fn deployment(name: &str, criticality: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": {"edgewatt.io/criticality": criticality}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"edgewatt.io/criticality": criticality}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}]}}}})
}

/// The node the shop's Deployment `name` runs on: `*-a` on node-a, `*-b` on node-b (each
/// Deployment on one node: what a suspend saves is then on the target it is held for).
fn node_of(name: &str) -> &'static str {
    if name.ends_with("-a") {
        "node-a"
    } else {
        "node-b"
    }
}

/// A pod's first container's CPU limit in millicores.
fn cpu_limit_m(pod: &Value) -> Option<f64> {
    let q = pod["spec"]["containers"][0]["resources"]["limits"]["cpu"].as_str()?;
    match q.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => q.parse::<f64>().ok().map(|c| c * 1000.0),
    }
}

/// TEST PART — what a cluster does around the ladder, in one loop every 300 ms:
/// - the Deployment controller: one ReplicaSet `<deployment>-<hash>` per Deployment in `shop`
///   (owned by it, `pod-template-hash` label, its replicas), and the Deployment's status;
/// - the ReplicaSet controller and scheduler: each ReplicaSet's pods, created bound to the node
///   of its Deployment ([`node_of`]), extra ones deleted — a suspend (scale to 0) removes them,
///   a restore brings new ones from the template;
/// - the kubelet: once a pod's generation moved past what its status observed (a resize), it
///   actuates it and says so in the pod's status as a kubelet ≥ 1.33 does (what
///   `ApiServer::set_resize_outcome(Applied)` writes: `containerStatuses[].resources` = the
///   spec's, `observedGeneration` = the generation; e2e/src/apiserver/resize.rs);
/// - each node's platform meter: [`POD_WATTS`] per pod bound to it (every namespace), scaled by
///   its actuated CPU limit against its Deployment's template (a throttled pod draws that much
///   less).
///   Every pod draws the same, so the controller's share of a node's draw among its workloads
///   (no per-pod series here) is what each really draws, and a step saves what it was expected
///   to.
fn site_standin(l: &Loop) -> tokio::task::JoinHandle<()> {
    let client = l.cluster.client.clone();
    let trees: BTreeMap<String, edgewatt_exporter::fixture::FixtureTree> = l
        .sims
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                edgewatt_exporter::fixture::FixtureTree::new(s.tree.root()),
            )
        })
        .collect();
    tokio::spawn(async move {
        let ar = |kind: &str, plural: &str, group: &str| kube::discovery::ApiResource {
            group: group.into(),
            version: "v1".into(),
            api_version: if group.is_empty() {
                "v1".into()
            } else {
                format!("{group}/v1")
            },
            kind: kind.into(),
            plural: plural.into(),
        };
        let deployments: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), NS, &ar("Deployment", "deployments", "apps"));
        let replicasets: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), NS, &ar("ReplicaSet", "replicasets", "apps"));
        let shop_pods: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), NS, &ar("Pod", "pods", ""));
        let all_pods: Api<DynamicObject> = Api::all_with(client.clone(), &ar("Pod", "pods", ""));
        let mut n = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(ds) = deployments.list(&Default::default()).await else {
                continue;
            };
            let mut full_cpu: BTreeMap<String, f64> = BTreeMap::new();
            for d in &ds.items {
                let d = serde_json::to_value(d).unwrap();
                let name = d["metadata"]["name"].as_str().unwrap().to_string();
                let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let hash = "7c9d5f8b6";
                let rs_name = format!("{name}-{hash}");
                let mut template = d["spec"]["template"].clone();
                template["metadata"]["labels"]["pod-template-hash"] = hash.into();
                if let Some(c) = cpu_limit_m(&template) {
                    full_cpu.insert(rs_name.clone(), c);
                }
                let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": NS, "labels": template["metadata"]["labels"],
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                            "uid": d["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": template["metadata"]["labels"]}, "template": template}});
                let _ = replicasets
                    .patch(
                        &rs_name,
                        &PatchParams::apply("deployment-controller").force(),
                        &Patch::Apply(&rs),
                    )
                    .await;
                let Ok(rs) = replicasets.get(&rs_name).await else {
                    continue;
                };
                let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
                let Ok(ps) = shop_pods.list(&Default::default()).await else {
                    continue;
                };
                let mine: Vec<&DynamicObject> = ps
                    .items
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.metadata
                                .owner_references
                                .as_ref()
                                .is_some_and(|o| o.iter().any(|o| o.name == rs_name))
                    })
                    .collect();
                for _ in mine.len() as i64..replicas {
                    n += 1;
                    let mut spec = template["spec"].clone();
                    spec["nodeName"] = node_of(&name).into();
                    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("{rs_name}-x{n:04}"), "namespace": NS,
                            "labels": template["metadata"]["labels"], "annotations": template["metadata"]["annotations"],
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                "uid": rs_uid, "controller": true, "blockOwnerDeletion": true}]},
                        "spec": spec});
                    let o: DynamicObject = serde_json::from_value(pod).unwrap();
                    if let Ok(p) = shop_pods.create(&Default::default(), &o).await {
                        let _ = shop_pods
                            .patch_status(
                                &p.metadata.name.unwrap(),
                                &PatchParams::default(),
                                &Patch::Merge(
                                    &json!({"status": {"phase": "Running", "podIP": "10.0.0.9"}}),
                                ),
                            )
                            .await;
                    }
                }
                for p in mine.iter().skip(replicas.max(0) as usize) {
                    let _ = shop_pods
                        .delete(
                            p.metadata.name.as_deref().unwrap(),
                            &DeleteParams::default().grace_period(0),
                        )
                        .await;
                }
                let ready = mine.len().min(replicas.max(0) as usize);
                let _ = deployments
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"observedGeneration": d["metadata"]["generation"],
                            "replicas": ready, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": ready}})),
                    )
                    .await;
            }
            let Ok(ps) = all_pods.list(&Default::default()).await else {
                continue;
            };
            let mut watts: BTreeMap<&str, f64> = NODES.iter().map(|n| (*n, 0.0)).collect();
            for p in &ps.items {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let v = serde_json::to_value(p).unwrap();
                // the kubelet actuates a resize it has not yet
                let generation = v["metadata"]["generation"].as_i64().unwrap_or(0);
                let mut actuated = v["status"]["containerStatuses"][0]["resources"].clone();
                if v["metadata"]["namespace"] == NS
                    && v["status"]["observedGeneration"].as_i64().unwrap_or(0) < generation
                {
                    let c = &v["spec"]["containers"][0];
                    actuated = c["resources"].clone();
                    let _ = shop_pods
                        .patch_status(
                            p.metadata.name.as_deref().unwrap(),
                            &PatchParams::default(),
                            &Patch::Merge(&json!({"status": {"observedGeneration": generation,
                                "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "",
                                    "ready": true, "restartCount": 0, "started": true,
                                    "allocatedResources": c["resources"]["requests"], "resources": actuated}]}})),
                        )
                        .await;
                }
                let Some(node) = v["spec"]["nodeName"].as_str() else {
                    continue;
                };
                let owner = p
                    .metadata
                    .owner_references
                    .as_ref()
                    .and_then(|o| o.first())
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                let actual = json!({"spec": {"containers": [{"resources": actuated}]}});
                let share = match (full_cpu.get(&owner), cpu_limit_m(&actual)) {
                    (Some(full), Some(now)) if v["metadata"]["namespace"] == NS => now / full,
                    _ => 1.0,
                };
                if let Some(w) = watts.get_mut(node) {
                    *w += POD_WATTS * share;
                }
            }
            for (node, w) in watts {
                trees[node].set("sys/class/hwmon/hwmon0/power1_average", (w * 1e6) as u64);
            }
        }
    })
}

/// The object an Event is about (`events.k8s.io/v1` `regarding`, core `involvedObject`).
fn regarding(e: &Value) -> &Value {
    if e["regarding"].is_object() {
        &e["regarding"]
    } else {
        &e["involvedObject"]
    }
}

/// `(resourceVersion, reason, kind, name)` of every Event on an object in `shop`, in the order
/// the API server stored them.
async fn shop_events(l: &Loop) -> Vec<(u64, String, String, String)> {
    let mut out: Vec<(u64, String, String, String)> = l
        .cluster
        .events()
        .await
        .iter()
        .filter_map(|e| {
            let r = regarding(e);
            (r["namespace"] == NS).then(|| {
                (
                    e["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(u64::MAX),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    r["kind"].as_str().unwrap_or_default().to_string(),
                    r["name"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect();
    out.sort();
    out
}

/// The policy's `status.degraded` as `(kind, name, action, criticality, state)`.
async fn degraded(l: &Loop) -> Vec<(String, String, String, String, String)> {
    let p = l.cluster.policies().get("solar-site").await.ok();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    p.map(|p| p.data["status"]["degraded"].clone())
        .and_then(|d| d.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                s(&d["kind"]),
                s(&d["name"]),
                s(&d["action"]),
                s(&d["criticality"]),
                s(&d["state"]),
            )
        })
        .collect()
}

/// The criticality of a shop object by its name (`db-*` critical, `api-*` normal, `batch-*`
/// sheddable).
fn criticality_of(name: &str) -> &'static str {
    if name.starts_with("db-") {
        "critical"
    } else if name.starts_with("api-") {
        "normal"
    } else {
        "sheddable"
    }
}

/// Instant query at time `at` (the backfilled past).
async fn query_at(l: &Loop, promql: String, at: DateTime<Utc>) -> Value {
    let url = l.prom.url();
    tokio::task::spawn_blocking(move || {
        reqwest::blocking::Client::new()
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", promql), ("time", at.timestamp().to_string())])
            .send()
            .and_then(|r| r.json::<Value>())
            .map(|v| v["data"]["result"].clone())
            .unwrap_or(Value::Null)
    })
    .await
    .unwrap()
}

/// Issue #27 end to end: night on a two-node battery site, both nodes starved, nowhere to move
/// the work (examples/solar-site.yaml in Migrate mode). The forecast (from three backfilled days:
/// 8½ h of no supply from now on, then sun) says each node's 5 W would take its battery to the
/// reserve before the sunrise:
/// 1. at 86 % (43 of 50 Wh, reserve 5 Wh): 38 Wh lasts 7.6 h at 5 W, the recharge is in 8 h; to
///    last until it plus the 1 h margin the draw must be 38/9 = 4.2 W: 0.8 W less. The
///    `sheddable` rung is enough: throttling the batch pod would save 0.5 W, so the ladder
///    suspends its Deployment on each node (1 W), nothing else — not the `normal` api (not
///    needed), never the `critical` db, nor kube-proxy (kube-system, annotated sheddable), nor
///    the exporter (edgewatt's own).
/// 2. at 78 % (34 Wh usable, 4 W): 0.2 W more is needed: the `normal` api pods are throttled,
///    after every sheddable step; the db still untouched.
/// 3. charged to 100 %: with what the ladder holds back, 45 Wh at 5 W lasts 9 h, past the
///    recharge: the nodes recover and everything is restored, normal before sheddable, to
///    exactly its replicas and CPU limits.
///
/// Status, Events, the `edgewatt_degraded_workloads` and runway gauges in Prometheus, and no
/// request of the chart's ServiceAccounts refused by its RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_on_battery_at_night_sheds_least_critical_first_and_restores_exactly() {
    if needs_double(
        "it drives simulated nodes' batteries and meters, and plays the kubelet's resize answers",
    ) {
        return;
    }
    let t0 = Utc::now();
    let history = supply_history(t0);
    let targets: Vec<(&str, Kind)> = NODES.iter().map(|n| (*n, Kind::Node)).collect();
    let mut l = Loop::start(&targets, Install::defaults().with_history(history)).await;
    l.timeline.mark(format!(
        "Prometheus holds {} h of backfilled supply history",
        HISTORY.as_secs() / 3600
    ));
    // The backfill is what the controller's own supply query reads: a day ago, the hour after
    // this time of day had no supply; 12 h later, the sun's 100 W.
    let mut q = TargetQuery::nodes(MetricNames::default());
    q.window = Duration::from_secs(20);
    let supply = q.supply_hourly(SUPPLY_RESOLUTION);
    for (hours_ago, want) in [(23, 0.0), (11, SUN_WATTS)] {
        let r = query_at(&l, supply.clone(), t0 - chrono::Duration::hours(hours_ago)).await;
        let got: Vec<(String, f64)> = r
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["metric"]["node_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN),
                )
            })
            .collect();
        assert_eq!(got.len(), 2, "supply {hours_ago} h ago: {r}");
        assert!(
            got.iter().all(|(_, v)| (v - want).abs() < 1e-6),
            "supply {hours_ago} h ago: {got:?}, want {want} W"
        );
    }

    l.cluster.namespace(NS, json!({})).await;
    l.cluster.namespace("kube-system", json!({})).await;
    // kube-proxy on each node: kube-system, annotated sheddable all the same.
    for node in NODES {
        let api = l.cluster.pods("kube-system");
        let name = format!("kube-proxy-{node}");
        l.cluster.create(&api, json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"},
                "annotations": {"edgewatt.io/criticality": "sheddable"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy",
                    "uid": "6f1c2d3e-0000-4000-8000-00000000a11c", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.33.0",
                "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}}]}})).await;
        l.cluster
            .patch_status(&api, &name, json!({"phase": "Running"}))
            .await;
    }
    let deployments = l
        .cluster
        .api("apps", "v1", "Deployment", "deployments", Some(NS));
    let mut names = Vec::new();
    for node in ["a", "b"] {
        for (app, crit) in [
            ("db", "critical"),
            ("api", "normal"),
            ("batch", "sheddable"),
        ] {
            let name = format!("{app}-{node}");
            l.cluster.apply(&deployments, deployment(&name, crit)).await;
            names.push(name);
        }
    }
    let standin = site_standin(&l);
    l.spawn_task(standin);
    let pods = l.cluster.pods(NS);
    let shop_pods = || async {
        pods.list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| serde_json::to_value(p).unwrap())
                    .collect::<Vec<Value>>()
            })
            .unwrap_or_default()
    };
    wait_for("6 shop pods running", Duration::from_secs(30), || async {
        let ps = shop_pods().await;
        (ps.len() == 6 && ps.iter().all(|p| p["status"]["phase"] == "Running")).then_some(())
    })
    .await;
    let before = shop_pods().await;
    let db_pods: Vec<String> = before
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .filter(|n| n.starts_with("db-"))
        .map(String::from)
        .collect();
    // Night: both batteries at 86 %, discharging; each node draws 5 W (3 shop pods, kube-proxy,
    // the exporter).
    for node in NODES {
        l.sim(node).set_battery(86, true);
    }
    for node in NODES {
        let q = format!(
            "edgewatt_node_platform_watts{{node_name=\"{node}\"}} > 4.99 < 5.01 and on (node_name) edgewatt_node_battery_charge_ratio{{node_name=\"{node}\"}} > 0.855 < 0.865"
        );
        wait_for(
            &format!("Prometheus sees {node} at 86 % drawing 5 W"),
            Duration::from_secs(40),
            || {
                let q = q.clone();
                let l = &l;
                async move { l.query_value(&q).await }
            },
        )
        .await;
    }
    l.timeline.mark(
        "night: 3 Deployments per node (db critical, api normal, batch sheddable), 86 %, 5 W each",
    );

    // examples/solar-site.yaml as shipped, on this site's nodes, in Migrate mode, with its `for`
    // windows shortened for the test.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/solar-site.yaml"),
    )
    .unwrap();
    let mut p: Value = serde_saphyr::from_str(&text).unwrap();
    p["spec"]["targets"] = json!({"nodeSelector": {"matchLabels": {"power": "battery"}}});
    p["spec"]["action"]["mode"] = json!("Migrate");
    p["spec"]["starvation"]["for"] = json!("3s");
    p["spec"]["recovery"]["for"] = json!("3s");
    assert_eq!(p["metadata"]["name"], "solar-site");
    assert_eq!(p["spec"]["action"]["degrade"]["margin"], "1h");
    let policies = l.cluster.policies();
    l.cluster.apply(&policies, p).await;
    l.timeline
        .mark("policy solar-site (the example) applied in Migrate mode");

    // 1. The sheddable batch Deployments are suspended (their pods throttled first or not).
    let suspended = |d: &[(String, String, String, String, String)]| {
        ["batch-a", "batch-b"].iter().all(|b| {
            d.iter().any(|(k, n, a, c, s)| {
                k == "Deployment" && n == b && a == "Suspend" && c == "sheddable" && s == "Applied"
            })
        })
    };
    let d = wait_for(
        "the policy status lists batch-a and batch-b suspended",
        Duration::from_secs(120),
        || async {
            let d = degraded(&l).await;
            suspended(&d).then_some(d)
        },
    )
    .await;
    l.timeline.mark(format!("degraded: {d:?}"));
    wait_for("the batch pods gone", Duration::from_secs(30), || async {
        let ps = shop_pods().await;
        (!ps.iter().any(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("batch-")
        }))
        .then_some(())
    })
    .await;
    for b in ["batch-a", "batch-b"] {
        let d = deployments.get(b).await.unwrap();
        assert_eq!(
            d.data["spec"]["replicas"], 0,
            "{b} scaled to 0: {}",
            d.data["spec"]
        );
    }
    let d = wait_for(
        "edgewatt_degraded_workloads{criticality=\"sheddable\"} and the runway forecast in Prometheus",
        Duration::from_secs(60),
        || async {
            let shed = l
                .query_value("sum(edgewatt_degraded_workloads{policy=\"solar-site\",criticality=\"sheddable\",action=\"Suspend\"})")
                .await?;
            let runway = l
                .query_value("min(edgewatt_runway_forecast_seconds{policy=\"solar-site\",name=\"node-a\"})")
                .await?;
            (shed >= 2.0).then_some((shed, runway))
        },
    )
    .await;
    l.timeline.mark(format!(
        "Prometheus: 2 sheddable suspended = {}, node-a runway {:.0} s",
        d.0, d.1
    ));
    // Only as far as needed: past the ladder's settle time (30 s at a 1 s interval:
    // controller/src/context.rs `max_gap`) with the batch's watts gone, nothing more is shed.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let d = degraded(&l).await;
    l.timeline.mark(format!("45 s later: {d:?}"));
    assert!(suspended(&d), "{d:?}");
    assert!(
        d.iter()
            .all(|(_, n, _, c, _)| c == "sheddable" && n.starts_with("batch-")),
        "more than the sheddable batch degraded while it was enough: {d:?}"
    );

    // 2. Lower batteries: the normal api pods are throttled too, never the db.
    for node in NODES {
        l.sim(node).set_battery(78, true);
    }
    l.timeline.mark("batteries at 78 %");
    let d = wait_for(
        "the policy status lists the api pods throttled",
        Duration::from_secs(120),
        || async {
            let d = degraded(&l).await;
            let throttled = d
                .iter()
                .filter(|(k, n, a, c, s)| {
                    k == "Pod"
                        && n.starts_with("api-")
                        && a == "Throttle"
                        && c == "normal"
                        && s == "Applied"
                })
                .count();
            (throttled == 2).then_some(d)
        },
    )
    .await;
    l.timeline.mark(format!("degraded: {d:?}"));
    assert!(suspended(&d), "{d:?}");
    assert!(
        !d.iter().any(|(_, n, _, _, _)| n.starts_with("db-")),
        "a critical workload degraded: {d:?}"
    );
    let ps = shop_pods().await;
    for p in &ps {
        let name = p["metadata"]["name"].as_str().unwrap();
        let want = if name.starts_with("api-") {
            250.0
        } else {
            500.0
        };
        assert_eq!(cpu_limit_m(p), Some(want), "{name}: {}", p["spec"]);
    }
    // Events for each step, every sheddable one before any normal one.
    let events = shop_events(&l).await;
    l.timeline.mark(format!("shop events: {events:?}"));
    let sheds: Vec<&(u64, String, String, String)> = events
        .iter()
        .filter(|e| e.1 == "WorkloadThrottled" || e.1 == "WorkloadSuspended")
        .collect();
    for b in ["batch-a", "batch-b"] {
        assert!(
            sheds
                .iter()
                .any(|e| e.1 == "WorkloadSuspended" && e.2 == "Deployment" && e.3 == b),
            "no WorkloadSuspended Event on {b}: {events:?}"
        );
    }
    for e in sheds.iter().filter(|e| e.3.starts_with("api-")) {
        assert_eq!(e.1, "WorkloadThrottled", "{events:?}");
    }
    assert_eq!(
        sheds.iter().filter(|e| e.3.starts_with("api-")).count(),
        2,
        "{events:?}"
    );
    let last_sheddable = sheds
        .iter()
        .filter(|e| criticality_of(&e.3) == "sheddable")
        .map(|e| e.0)
        .max()
        .unwrap();
    let first_normal = sheds
        .iter()
        .filter(|e| criticality_of(&e.3) == "normal")
        .map(|e| e.0)
        .min()
        .unwrap();
    assert!(
        last_sheddable < first_normal,
        "a normal workload was shed before a sheddable one: {events:?}"
    );
    assert!(
        !events.iter().any(|e| e.3.starts_with("db-")),
        "an Event on a critical workload: {events:?}"
    );

    // 3. Charged: everything restored exactly.
    for node in NODES {
        l.sim(node).set_battery(100, true);
    }
    l.timeline.mark("batteries charged to 100 %");
    wait_for(
        "nothing degraded any more",
        Duration::from_secs(120),
        || async { degraded(&l).await.is_empty().then_some(()) },
    )
    .await;
    l.timeline.mark("status: nothing degraded");
    let after = wait_for(
        "6 shop pods running at their template's CPU limit",
        Duration::from_secs(30),
        || async {
            let ps = shop_pods().await;
            (ps.len() == 6
                && ps
                    .iter()
                    .all(|p| cpu_limit_m(p) == Some(500.0) && p["status"]["phase"] == "Running"))
            .then_some(ps)
        },
    )
    .await;
    for name in &names {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(d.data["spec"]["replicas"], 1, "{name}: {}", d.data["spec"]);
    }
    for p in &after {
        let name = p["metadata"]["name"].as_str().unwrap();
        let requests = &p["spec"]["containers"][0]["resources"]["requests"];
        assert_eq!(requests["cpu"], "250m", "{name}: {requests}");
        assert_eq!(
            p["spec"]["nodeName"],
            node_of(&name[..name.find('-').unwrap() + 2])
        );
    }
    // The db pods are the very ones from before: never resized, never deleted.
    for name in &db_pods {
        let p = pods.get(name).await.unwrap();
        assert_eq!(p.metadata.generation, Some(1), "{name} was changed");
    }
    for node in NODES {
        let p = l
            .cluster
            .pods("kube-system")
            .get(&format!("kube-proxy-{node}"))
            .await
            .unwrap();
        assert_eq!(
            p.metadata.generation,
            Some(1),
            "kube-proxy on {node} was changed"
        );
    }
    let events = shop_events(&l).await;
    l.timeline.mark(format!("shop events: {events:?}"));
    let restored: Vec<&(u64, String, String, String)> = events
        .iter()
        .filter(|e| e.1 == "WorkloadRestored")
        .collect();
    for (kind, name) in [("Deployment", "batch-a"), ("Deployment", "batch-b")] {
        assert!(
            restored.iter().any(|e| e.2 == kind && e.3 == name),
            "no WorkloadRestored Event on {kind} {name}: {events:?}"
        );
    }
    assert_eq!(
        restored
            .iter()
            .filter(|e| e.2 == "Pod" && e.3.starts_with("api-"))
            .count(),
        2,
        "{events:?}"
    );
    // On each node normal before sheddable (controller/src/ladder.rs `restore_order`; the nodes
    // may recover in different cycles).
    for node in ["-a", "-b"] {
        let on = |crit: &str| {
            restored
                .iter()
                .filter(|e| criticality_of(&e.3) == crit && e.3.contains(node))
                .map(|e| e.0)
                .collect::<Vec<u64>>()
        };
        let (normal, sheddable) = (on("normal"), on("sheddable"));
        assert!(
            normal.iter().max() < sheddable.iter().min(),
            "on node{node} a sheddable workload restored before a normal one: {events:?}"
        );
    }
    // The ladder reached for kube-proxy (annotated sheddable) and left it alone, saying why.
    let skipped = l
        .cluster
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e["reason"] == "DegradeSkipped"
                && regarding(e)["namespace"] == "kube-system"
                && regarding(e)["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-proxy-"))
        })
        .count();
    assert!(skipped > 0, "no DegradeSkipped Event on kube-proxy");
    wait_for(
        "edgewatt_degraded_workloads withdrawn (nothing held: no series)",
        Duration::from_secs(30),
        || async {
            l.query_value("absent(edgewatt_degraded_workloads{policy=\"solar-site\"})")
                .await
                .filter(|v| *v == 1.0)
        },
    )
    .await;
    // Nowhere to move: not one eviction was asked for.
    let evictions: Vec<String> = l
        .cluster
        .server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/eviction"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(evictions.is_empty(), "{evictions:?}");
    l.assert_no_request_refused();
    l.timeline
        .print("night on battery → ladder → charged → restored");
}
