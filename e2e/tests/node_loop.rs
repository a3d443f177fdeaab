//! End-to-end scenarios on Kubernetes nodes (issue 7), on the chart as installed (issue 16):
//! power budget → taint + PDB-respecting evictions + placement through the extender; recovery
//! with hysteresis and no flapping; Prometheus outage → fail safe and fail open. Every binary
//! runs as the chart renders it, under the chart's RBAC (see common/mod.rs).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const NS: &str = "shop";

fn tainted(node: &DynamicObject) -> bool {
    node.data["spec"]["taints"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["key"] == "edgewatt.io/energy-starved"))
}

/// TEST PART — ReplicaSet + disruption controller stand-in: keeps `replicas` pods of app `web`
/// (owned by a ReplicaSet, so they are evictable), recreating evicted ones as pending pods, and
/// keeps the PDB's `disruptionsAllowed` = running − minAvailable (the double has no disruption
/// controller).
fn replicaset_standin(
    l: &Loop,
    replicas: usize,
    min_available: i64,
) -> tokio::task::JoinHandle<()> {
    let client = l.cluster.client.clone();
    tokio::spawn(async move {
        let pods: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            NS,
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        );
        let pdbs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            NS,
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
                &(),
            ),
        );
        let mut n = 0;
        loop {
            let Ok(ps) = pods.list(&Default::default()).await else {
                continue;
            };
            let live: Vec<&DynamicObject> = ps
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            for _ in live.len()..replicas {
                n += 1;
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("web-7d9f8-{n:05}"), "namespace": NS, "labels": {"app": "web"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8", "uid": "11111111-2222-3333-4444-555555555555", "controller": true}]},
                    // a short grace period: evicted pods stay Terminating on their node for it
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [{"name": "web", "image": "nginx"}]}});
                let o: DynamicObject = serde_json::from_value(pod).unwrap();
                let _ = pods.create(&PostParams::default(), &o).await;
            }
            // the disruption controller: terminating pods are not healthy
            let running = live
                .iter()
                .filter(|p| !p.data["spec"]["nodeName"].is_null())
                .count() as i64;
            let allowed = (running - min_available).max(0);
            let _ = pdbs.patch_status("web", &PatchParams::default(), &Patch::Merge(&json!({"status": {"disruptionsAllowed": allowed, "currentHealthy": running, "desiredHealthy": min_available, "expectedPods": replicas}}))).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// Nodes labelled `power=battery` (the harness adds the well-known node labels) with the chart
/// installed per `install`, and namespace `shop`.
async fn node_cluster(names: &[&str], install: Install) -> Loop {
    let targets: Vec<(&str, Kind)> = names.iter().map(|n| (*n, Kind::Node)).collect();
    let l = Loop::start(&targets, install).await;
    l.cluster.namespace(NS, json!({})).await;
    l
}

/// Scenario 2: node X goes over its power budget → tainted, its pods evicted one at a time
/// under a PDB, and the stand-in scheduler places them through the extender on the node with
/// the most headroom — never back on X. Installed with `examples/chart-values-edge.yaml`, whose
/// `scheduler.defaultPowerBudgetWatts: 60` gives the extender the budgets (with chart defaults it
/// has none and scores neutrally).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_node_is_drained_onto_the_most_headroom() {
    if needs_double("it drives simulated nodes' power meters (a real node's exporter reads that node's own /sys) and injects API priority-and-fairness 429s") {
        return;
    }
    let mut l = node_cluster(&["node-x", "node-y", "node-z"], Install::edge_example()).await;
    l.sim("node-x").set_power(30.0);
    // node-z has the most headroom; name order alone would pick node-y.
    l.sim("node-y").set_power(45.0);
    l.sim("node-z").set_power(15.0);
    let pdb_api: Api<DynamicObject> = Api::namespaced_with(
        l.cluster.client.clone(),
        NS,
        &kube::discovery::ApiResource::erase::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
            &(),
        ),
    );
    l.cluster.apply(&pdb_api, json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": NS}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})).await;
    // Three replicas, all on node-x to start with (as if scheduled before the budget mattered).
    let placements = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rs = replicaset_standin(&l, 3, 2);
    l.spawn_task(rs);
    let pods = l.cluster.pods(NS);
    wait_for("3 web pods", Duration::from_secs(10), || async {
        (pods.list(&Default::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await;
    for p in pods.list(&Default::default()).await.unwrap().items {
        let name = p.metadata.name.unwrap();
        pods.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"nodeName": "node-x"}})),
        )
        .await
        .unwrap();
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }
    let sched = scheduler_standin(
        l.cluster.client.clone(),
        l.extender_addrs(),
        l.extender_config(),
        placements.clone(),
    );
    l.spawn_task(sched);
    let policies = l.cluster.policies();
    let mut p = policy(
        "power-budget",
        "Migrate",
        json!({"nodeSelector": {"matchLabels": {"power": "battery"}}}),
        "3s",
    );
    p["spec"]["starvation"] = json!({"powerAboveWatts": 5, "for": "3s"});
    p["spec"]["recovery"] = json!({"for": "3s"});
    l.cluster.apply(&policies, p).await;
    l.timeline
        .mark("3 web pods on node-x; PDB minAvailable 2; budgets 60 W (policy default)");
    tokio::time::sleep(Duration::from_secs(3)).await;
    l.sim("node-x").set_power(80.0);
    let over = l
        .timeline
        .mark("node-x draws 80 W (budget 60 W + 5 W allowance)");
    // API priority and fairness sheds the next writes (429, Retry-After, no Status cause): the
    // taint, the evictions and the status must still happen, and no PDB-refused eviction may be
    // confused with it
    l.cluster
        .server
        .throttle_next(4, Duration::from_secs(1), true);

    let nodes = l.cluster.nodes();
    wait_for("node-x tainted", Duration::from_secs(30), || async {
        tainted(&nodes.get("node-x").await.ok()?).then_some(())
    })
    .await;
    let t = l
        .timeline
        .mark("node-x tainted edgewatt.io/energy-starved:NoSchedule");
    eprintln!(
        "detection→taint: {:.2}s after the power rose ({:.2}s after the 3 s `for` window)",
        t - over,
        t - over - 3.0
    );
    let mut min_running = 3usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ps = pods.list(&Default::default()).await.unwrap();
        // Running and not terminating (an evicted pod stays on its node for its grace period)
        let running: Vec<(String, String)> = ps
            .items
            .iter()
            .filter(|p| {
                p.data["status"]["phase"] == "Running"
                    && !p.data["spec"]["nodeName"].is_null()
                    && p.metadata.deletion_timestamp.is_none()
            })
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap(),
                    p.data["spec"]["nodeName"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        min_running = min_running.min(running.len());
        if running.len() == 3 && running.iter().all(|(_, n)| n != "node-x") {
            l.timeline
                .mark(format!("all web pods off node-x: {running:?}"));
            break;
        }
        assert!(Instant::now() < deadline, "node-x not drained: {running:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        min_running >= 2,
        "PDB minAvailable 2 violated: {min_running} running"
    );
    // every evicted pod goes once its grace period is over (nothing left Terminating on node-x)
    wait_for(
        "no web pod left on node-x",
        Duration::from_secs(10),
        || async {
            let ps = pods.list(&Default::default()).await.ok()?;
            ps.items
                .iter()
                .all(|p| p.data["spec"]["nodeName"] != "node-x")
                .then_some(())
        },
    )
    .await;
    let placed = placements.lock().unwrap().clone();
    l.timeline
        .mark(format!("scheduler stand-in placements: {placed:?}"));
    assert!(
        placed.iter().all(|(_, n)| n != "node-x"),
        "evicted pods landed back on the starved node: {placed:?}"
    );
    // node-z had the most headroom (45 W) when the first replacement was placed.
    assert_eq!(
        placed.first().map(|(_, n)| n.as_str()),
        Some("node-z"),
        "{placed:?}"
    );
    let reasons = l.cluster.event_reasons().await;
    l.timeline.mark(format!("events: {reasons:?}"));
    assert!(reasons.keys().any(|r| r.contains("Evict")), "{reasons:?}");
    l.timeline
        .print("over budget → taint, PDB-safe evictions, placement by headroom");
}

/// Scenario 3: recovery only above the hysteresis level; a battery oscillating between the
/// thresholds produces no flapping; recovery removes the taint and nothing else moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_has_hysteresis_and_no_flapping() {
    if needs_double(
        "it drives simulated nodes' batteries (a real node's exporter reads that node's own /sys)",
    ) {
        return;
    }
    let l = node_cluster(&["node-b", "node-c"], Install::defaults()).await;
    let policies = l.cluster.policies();
    l.cluster
        .apply(
            &policies,
            policy(
                "battery-guard",
                "Migrate",
                json!({"nodeSelector": {"matchLabels": {"power": "battery"}}}),
                "2s",
            ),
        )
        .await;
    l.sim("node-b").set_battery(12, true);
    l.timeline.mark("node-b battery 12 %");
    let nodes = l.cluster.nodes();
    wait_for("node-b tainted", Duration::from_secs(30), || async {
        tainted(&nodes.get("node-b").await.ok()?).then_some(())
    })
    .await;
    l.timeline.mark("node-b tainted");
    // Oscillate between the thresholds (20 % and 35 %) for 12 s, sampling the taint.
    let mut transitions = 0;
    let mut last = true;
    let levels = [18u64, 30, 19, 33, 21, 17, 34, 25];
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(12) {
        if start.elapsed() >= Duration::from_millis(1500 * i as u64) && i < levels.len() {
            l.sim("node-b").set_battery(levels[i], true);
            i += 1;
        }
        let now = tainted(&nodes.get("node-b").await.unwrap());
        if now != last {
            transitions += 1;
            l.timeline.mark(format!("taint changed to {now}"));
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    l.timeline.mark(format!(
        "oscillation 17–34 % for 12 s: {transitions} taint transitions"
    ));
    assert_eq!(transitions, 0, "flapping between the thresholds");
    assert!(
        last,
        "must stay starved until above 35 % for the recovery window"
    );
    l.sim("node-b").set_battery(80, false);
    let up = l.timeline.mark("node-b charged to 80 %");
    wait_for("taint removed", Duration::from_secs(30), || async {
        (!tainted(&nodes.get("node-b").await.ok()?)).then_some(())
    })
    .await;
    let t = l.timeline.mark("node-b untainted (recovered)");
    assert!(
        t - up >= 2.0,
        "recovered before the 2 s recovery window: {:.2}s",
        t - up
    );
    let reasons = l.cluster.event_reasons().await;
    assert!(reasons.keys().any(|r| r.contains("Recover")), "{reasons:?}");
    assert!(!tainted(&nodes.get("node-c").await.unwrap()));
    l.timeline.print("recovery with hysteresis");
}

/// Scenario 4: Prometheus stopped mid-run → no actions, PrometheusAvailable=False, extender
/// neutral; restarted → back to normal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_fails_safe_and_open() {
    if needs_double(
        "it drives simulated nodes' batteries (a real node's exporter reads that node's own /sys)",
    ) {
        return;
    }
    let mut l = node_cluster(&["node-p", "node-q"], Install::edge_example()).await;
    l.sim("node-p").set_power(10.0);
    l.sim("node-q").set_power(50.0);
    let policies = l.cluster.policies();
    l.cluster
        .apply(
            &policies,
            policy(
                "battery-guard",
                "Migrate",
                json!({"nodeSelector": {"matchLabels": {"power": "battery"}}}),
                "2s",
            ),
        )
        .await;
    let http = reqwest::Client::new();
    // every extender replica behind the Service must answer the same way
    let extenders = l.extender_addrs();
    assert_eq!(extenders.len(), 2, "scheduler.replicas defaults to 2");
    let prioritize = |http: reqwest::Client, addr: String| async move {
        let pod = json!({"metadata": {"name": "x", "namespace": NS}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let v: Value = http
            .post(format!("http://{addr}/prioritize"))
            .json(&json!({"Pod": pod, "NodeNames": ["node-p", "node-q"]}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let m: BTreeMap<String, i64> = v
            .as_array()?
            .iter()
            .map(|h| {
                (
                    h["Host"].as_str().unwrap().to_string(),
                    h["Score"].as_i64().unwrap(),
                )
            })
            .collect();
        Some(m)
    };
    let mut scores = BTreeMap::new();
    for e in &extenders {
        scores = wait_for(
            "every extender prefers node-p",
            Duration::from_secs(20),
            || async {
                prioritize(http.clone(), e.clone())
                    .await
                    .filter(|m| m["node-p"] > m["node-q"])
            },
        )
        .await;
    }
    l.timeline
        .mark(format!("extender scores with data: {scores:?}"));
    wait_for(
        "PrometheusAvailable=True",
        Duration::from_secs(20),
        || async {
            let p = policies.get("battery-guard").await.ok()?;
            condition(&p.data, "PrometheusAvailable").filter(|s| s == "True")
        },
    )
    .await;

    tokio::task::block_in_place(|| l.prom.stop());
    l.timeline.mark("Prometheus stopped");
    // While Prometheus is gone the battery crashes: the controller must not act on it.
    l.sim("node-p").set_battery(5, true);
    wait_for(
        "PrometheusAvailable=False",
        Duration::from_secs(30),
        || async {
            let p = policies.get("battery-guard").await.ok()?;
            condition(&p.data, "PrometheusAvailable").filter(|s| s == "False")
        },
    )
    .await;
    l.timeline.mark("status: PrometheusAvailable=False");
    let mut neutral = BTreeMap::new();
    for e in &extenders {
        neutral = wait_for(
            "every extender fails open (equal scores)",
            Duration::from_secs(30),
            || async {
                prioritize(http.clone(), e.clone())
                    .await
                    .filter(|m| m["node-p"] == m["node-q"])
            },
        )
        .await;
    }
    l.timeline
        .mark(format!("extender scores without data: {neutral:?}"));
    let filter: Value = http
        .post(format!("http://{}/filter", l.extender_addr()))
        .json(&json!({"Pod": {"metadata": {"name": "x"}, "spec": {"containers": []}}, "NodeNames": ["node-p", "node-q"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        filter["NodeNames"],
        json!(["node-p", "node-q"]),
        "filter passes every node: {filter}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let nodes = l.cluster.nodes();
    assert!(
        !tainted(&nodes.get("node-p").await.unwrap()),
        "acted without Prometheus"
    );

    // the fixture's restart waits with a blocking client: not on an async worker
    tokio::task::block_in_place(|| l.prom.restart()).unwrap();
    l.timeline.mark("Prometheus restarted");
    wait_for(
        "PrometheusAvailable=True again",
        Duration::from_secs(40),
        || async {
            let p = policies.get("battery-guard").await.ok()?;
            condition(&p.data, "PrometheusAvailable").filter(|s| s == "True")
        },
    )
    .await;
    l.timeline.mark("status: PrometheusAvailable=True");
    // Now the (real) low battery is seen and acted upon.
    wait_for(
        "node-p tainted after recovery of the data",
        Duration::from_secs(40),
        || async { tainted(&nodes.get("node-p").await.ok()?).then_some(()) },
    )
    .await;
    l.timeline.mark("node-p tainted on fresh data");
    l.timeline.print("Prometheus outage");
}

fn condition(obj: &Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
        .map(String::from)
}

/// Issue 29 §1, reproduced as a new user hit it: `examples/power-budget.yaml` (no workload
/// selector, so every namespace) on a node over budget evicted `kube-system/coredns-…`
/// (`system-cluster-critical`), `kube-system/metrics-server-…` and edgewatt's own controller.
/// Now the ordinary pod on the node is evicted and those three stay, counted with their reason
/// in the policy's status (`leftAlone`) and the `edgewatt_left_alone_workloads` gauge. The
/// rules' upstream sources are cited in the controller's `snapshot` unit tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_policy_leaves_system_pods_and_edgewatt_alone() {
    let l = node_cluster(&["node-x", "node-y"], Install::edge_example()).await;
    l.sim("node-x").set_power(30.0);
    l.sim("node-y").set_power(15.0);
    let pod = |ns: &str, name: &str, labels: Value, extra_spec: Value| {
        let mut spec = json!({"nodeName": "node-x", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]});
        for (k, v) in extra_spec.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-6d4b75cb6d-x7k2p"), "namespace": ns,
                "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{name}-6d4b75cb6d"), "uid": format!("00000000-0000-0000-0000-{:012}", name.len()),
                    "controller": true}]},
            "spec": spec})
    };
    let chart_labels = json!({"app.kubernetes.io/name": "edgewatt", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "controller", "app.kubernetes.io/part-of": "edgewatt",
        "pod-template-hash": "6d4b75cb6d"});
    let pods = [
        pod(
            "kube-system",
            "coredns",
            json!({"k8s-app": "kube-dns", "pod-template-hash": "6d4b75cb6d"}),
            json!({"priorityClassName": "system-cluster-critical"}),
        ),
        pod(
            "kube-system",
            "metrics-server",
            json!({"k8s-app": "metrics-server", "pod-template-hash": "6d4b75cb6d"}),
            json!({}),
        ),
        pod(NS_SYSTEM, "edgewatt-controller", chart_labels, json!({})),
        pod(
            NS,
            "web",
            json!({"app": "web", "pod-template-hash": "6d4b75cb6d"}),
            json!({}),
        ),
    ];
    for p in pods {
        let ns = p["metadata"]["namespace"].as_str().unwrap().to_string();
        let api = l.cluster.pods(&ns);
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        l.cluster.create(&api, p).await;
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }
    // The example as shipped, with its `for` windows shortened for the test.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/power-budget.yaml"),
    )
    .unwrap();
    let mut p: Value = serde_saphyr::from_str(&text).unwrap();
    assert!(
        p["spec"]["workloads"].is_null(),
        "the example covers every namespace"
    );
    p["spec"]["starvation"]["for"] = json!("3s");
    p["spec"]["recovery"] = json!({"for": "3s"});
    let policies = l.cluster.policies();
    l.cluster.apply(&policies, p).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    l.sim("node-x").set_power(80.0);
    l.timeline
        .mark("node-x draws 80 W over its 60 W budget; coredns, metrics-server, the controller and web on it");
    let shop = l.cluster.pods(NS);
    wait_for("web evicted", Duration::from_secs(40), || async {
        let web = shop.get("web-6d4b75cb6d-x7k2p").await;
        (web.is_err() || web.ok()?.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    l.timeline.mark("web evicted");
    // Several more cycles.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (ns, name) in [
        ("kube-system", "coredns"),
        ("kube-system", "metrics-server"),
        (NS_SYSTEM, "edgewatt-controller"),
    ] {
        let got = l
            .cluster
            .pods(ns)
            .get(&format!("{name}-6d4b75cb6d-x7k2p"))
            .await
            .unwrap_or_else(|e| panic!("{ns}/{name} was removed: {e}"));
        assert!(
            got.metadata.deletion_timestamp.is_none(),
            "{ns}/{name} was evicted"
        );
    }
    let evicted: Vec<String> = l
        .cluster
        .events()
        .await
        .iter()
        .filter(|e| e["reason"] == "PodEvicted")
        .map(|e| {
            let on = if e["regarding"].is_null() {
                &e["involvedObject"]
            } else {
                &e["regarding"]
            };
            on["name"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(evicted, ["web-6d4b75cb6d-x7k2p"], "{evicted:?}");
    let status = policies.get("power-budget").await.unwrap().data["status"].clone();
    let left: BTreeMap<String, u64> = status["leftAlone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    l.timeline.mark(format!("status.leftAlone: {left:?}"));
    assert_eq!(
        left.get("namespace kube-system is excluded (workloads.excludeNamespaces)"),
        Some(&2),
        "{left:?}"
    );
    // The controller pod and the chart's exporter DaemonSet pod on node-x.
    assert_eq!(left.get("edgewatt's own pod"), Some(&2), "{left:?}");
    let gauge = l
        .query_value(
            "edgewatt_left_alone_workloads{policy=\"power-budget\",reason=\"edgewatt's own pod\"}",
        )
        .await;
    assert_eq!(gauge, Some(2.0));
    l.timeline.print("system pods and edgewatt's own stay");
}

/// The release's namespace (the controller's own).
const NS_SYSTEM: &str = common::NS;
