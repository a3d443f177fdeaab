//! Golden requests and replies in both node forms and both key casings. The files in
//! `tests/golden/` were checked by hand against `k8s.io/kube-scheduler/extender/v1/types.go`:
//! `ExtenderArgs{Pod, Nodes, NodeNames}`, `ExtenderFilterResult{Nodes, NodeNames, FailedNodes,
//! FailedAndUnresolvableNodes, Error}`, `HostPriority{Host, Score}` — Go field names, no tags.
//! Filter reasons go in `FailedAndUnresolvableNodes` (`FailedNodes` is for what preemption could
//! fix: `schedule_one.go` `findNodesThatPassExtenders` maps them to `UnschedulableAndUnresolvable`
//! and `Unschedulable`). The exempt pods are shaped as their controllers and the kubelet create
//! them (DaemonSet controller: controller ownerReference + `matchFields` node affinity; kubelet
//! mirror pod: `kubernetes.io/config.*` annotations + a Node owner; the Priority admission
//! plugin's resolved `priority`).
//! `GOLDEN_UPDATE=1` rewrites the expected replies (then check the diff by hand).

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The pod being scheduled: a `shop/web` replica (its ReplicaSet's pods draw 8 W on average).
fn pod() -> Value {
    json!({
        "metadata": {"name": "web-7d4b9c8f6-new01", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6", "uid": "6b1f0c1e-0000-4000-8000-000000000001", "controller": true}]},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    })
}

fn node(name: &str, extra: Value) -> Value {
    let mut n = json!({"metadata": {"name": name}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            n[k] = v;
        }
    }
    n
}

const NAMES: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];

/// The requests, as kube-scheduler (PascalCase) and hand-written tools (lowercase) send them.
fn requests() -> Vec<(&'static str, Value)> {
    let items: Vec<Value> = NAMES
        .iter()
        .map(|n| match *n {
            // a node the controller tainted, and one with its own budget annotation
            "n4" => node(n, json!({"spec": {"taints": [{"key": "edgewatt.io/energy-starved", "effect": "NoSchedule"}]}})),
            "n2" => node(n, json!({"metadata": {"name": "n2", "annotations": {"edgewatt.io/power-budget-watts": "150"}}})),
            _ => node(n, json!({})),
        })
        .collect();
    let node_list = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items});
    vec![
        (
            "nodenames-pascal",
            json!({"Pod": pod(), "Nodes": null, "NodeNames": NAMES}),
        ),
        ("nodenames-lower", json!({"pod": pod(), "nodenames": NAMES})),
        (
            "nodes-pascal",
            json!({"Pod": pod(), "Nodes": node_list, "NodeNames": null}),
        ),
        (
            "nodes-camel",
            json!({"pod": pod(), "nodes": node_list, "unknownField": {"ignored": true}}),
        ),
    ]
}

fn meta(name: &str, ns: &str, extra: Value) -> Value {
    let mut m = json!({"name": name, "namespace": ns, "uid": format!("00000000-0000-4000-8000-{:012}", name.len()),
        "resourceVersion": "4711", "creationTimestamp": "2025-06-01T10:00:00Z"});
    if let Value::Object(e) = extra {
        for (k, v) in e {
            m[k] = v;
        }
    }
    m
}

fn spec(extra: Value) -> Value {
    let mut s = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": {}}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default", "securityContext": {}, "schedulerName": "default-scheduler",
        "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]});
    if let Value::Object(e) = extra {
        for (k, v) in e {
            s[k] = v;
        }
    }
    s
}

/// Pods the extender must never filter, each sent for every golden node (n3 starved by the
/// controller, n4 tainted, n5 on a low battery).
fn exempt_requests() -> Vec<(&'static str, Value)> {
    let status = json!({"phase": "Pending", "qosClass": "BestEffort"});
    let pods = [
        (
            "exempt-daemonset",
            json!({
                "metadata": meta("edgewatt-exporter-x2k9p", "edgewatt-system", json!({"generateName": "edgewatt-exporter-",
                    "labels": {"app.kubernetes.io/component": "exporter", "controller-revision-hash": "6b7c9d8f5", "pod-template-generation": "1"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "edgewatt-exporter",
                        "uid": "d5a0c3e1-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}]})),
                "spec": spec(json!({"priorityClassName": "system-node-critical", "priority": 2_000_001_000,
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}})),
                "status": status,
            }),
        ),
        (
            "exempt-mirror",
            json!({
                "metadata": meta("kube-apiserver-n4", "kube-system", json!({
                    "annotations": {"kubernetes.io/config.hash": "9c1e4b", "kubernetes.io/config.mirror": "9c1e4b",
                        "kubernetes.io/config.seen": "2025-06-01T10:00:00.000000000Z", "kubernetes.io/config.source": "file"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n4", "uid": "a1b2c3d4-0000-4000-8000-000000000004", "controller": true}]})),
                "spec": spec(json!({"nodeName": "n4", "priorityClassName": "system-node-critical", "priority": 2_000_001_000})),
                "status": status,
            }),
        ),
        (
            "exempt-toleration",
            json!({
                "metadata": meta("sensor-agent-7d4b9c8f6-q8vwz", "iot", json!({
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "sensor-agent-7d4b9c8f6",
                        "uid": "b0c1d2e3-0000-4000-8000-000000000002", "controller": true, "blockOwnerDeletion": true}]})),
                "spec": spec(json!({"tolerations": [
                    {"key": "edgewatt.io/energy-starved", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]})),
                "status": status,
            }),
        ),
        (
            "exempt-priority",
            json!({
                "metadata": meta("coredns-5d78c9869d-k7hzx", "kube-system", json!({
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "coredns-5d78c9869d",
                        "uid": "c2d3e4f5-0000-4000-8000-000000000003", "controller": true, "blockOwnerDeletion": true}]})),
                "spec": spec(json!({"priorityClassName": "system-cluster-critical", "priority": 2_000_000_000})),
                "status": status,
            }),
        ),
    ];
    pods.into_iter()
        .map(|(name, pod)| (name, json!({"Pod": pod, "Nodes": null, "NodeNames": NAMES})))
        .collect()
}

async fn check(verb: &str, name: &str, request: &Value) {
    let router = golden_router();
    let (status, body) = call(&router, "POST", &format!("/{verb}"), request.to_string()).await;
    assert_eq!(status, 200, "{verb} {name}: {body}");
    let got: Value = serde_json::from_str(&body).unwrap();
    let path = golden_dir().join(format!("{verb}-{name}.response.json"));
    let req_path = golden_dir().join(format!("{verb}-{name}.request.json"));
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        std::fs::write(
            &req_path,
            serde_json::to_string_pretty(request).unwrap() + "\n",
        )
        .unwrap();
    }
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing {}", path.display())),
    )
    .unwrap();
    assert_eq!(
        got,
        want,
        "{verb} {name}: reply differs from {}",
        path.display()
    );
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&req_path).unwrap()).unwrap();
    assert_eq!(
        &stored,
        request,
        "request fixture {} out of date",
        req_path.display()
    );
}

#[tokio::test]
async fn filter_replies_in_the_requests_form() {
    for (name, req) in requests() {
        check("filter", name, &req).await;
    }
}

#[tokio::test]
async fn prioritize_replies_host_priority_list() {
    for (name, req) in requests() {
        check("prioritize", name, &req).await;
    }
}

/// DaemonSet, mirror, starvation-tolerating and system-critical pods: every node passes (the
/// starved, tainted and low-battery ones too), every score is the same, and each is counted.
#[tokio::test]
async fn exempt_pods_are_never_filtered() {
    let router = golden_router();
    for (name, req) in exempt_requests() {
        check("filter", name, &req).await;
        check("prioritize", name, &req).await;
        let (_, body) = call(&router, "POST", "/filter", req.to_string()).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["NodeNames"], json!(NAMES), "{name}: {body}");
        assert_eq!(v["FailedAndUnresolvableNodes"], json!({}), "{name}: {body}");
        assert_eq!(v["FailedNodes"], json!({}), "{name}: {body}");
        let (_, body) = call(&router, "POST", "/prioritize", req.to_string()).await;
        let scores: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert!(scores.iter().all(|s| s["Score"] == 5), "{name}: {body}");
    }
    // the same pods without what exempts them are filtered
    let mut plain = exempt_requests()[3].1.clone();
    plain["Pod"]["spec"]["priority"] = json!(1000);
    plain["Pod"]["spec"]["priorityClassName"] = json!("high");
    let (_, body) = call(&router, "POST", "/filter", plain.to_string()).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["FailedAndUnresolvableNodes"]["n3"].is_string(), "{body}");
    let (_, metrics) = call(&router, "GET", "/metrics", "").await;
    for reason in [
        "daemonset",
        "static-or-mirror",
        "tolerates-starvation",
        "priority",
    ] {
        assert!(
            metrics.contains(&format!(
                "edgewatt_scheduler_exempt_requests_total{{verb=\"filter\",reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }
}

/// What the golden replies must say, independent of the files: names only from the request,
/// the request's form, PascalCase keys, scores in 0..=10.
#[tokio::test]
async fn golden_invariants() {
    let router = golden_router();
    for (name, req) in requests() {
        let (_, body) = call(&router, "POST", "/filter", req.to_string()).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let obj = v.as_object().unwrap();
        for key in [
            "Nodes",
            "NodeNames",
            "FailedNodes",
            "FailedAndUnresolvableNodes",
            "Error",
        ] {
            assert!(obj.contains_key(key), "{name}: reply lacks {key}: {body}");
        }
        let by_names = name.starts_with("nodenames");
        assert_eq!(v["NodeNames"].is_array(), by_names, "{name}: {body}");
        assert_eq!(v["Nodes"].is_object(), !by_names, "{name}: {body}");
        let passed: Vec<String> = if by_names {
            v["NodeNames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        } else {
            v["Nodes"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert!(passed.iter().all(|n| NAMES.contains(&n.as_str())));
        // n2 would be nearly full by its budget metric, but its annotation (150 W) wins, from
        // the Node objects or from the Node watcher; n3 starved by the controller, n4 by the
        // taint, n5 on a low battery: the same in both forms, and all unresolvable.
        assert_eq!(v["FailedNodes"], json!({}), "{name}: {body}");
        let failed = v["FailedAndUnresolvableNodes"].as_object().unwrap();
        let mut keys: Vec<&str> = failed.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["n3", "n4", "n5"], "{name}: {body}");
        for f in failed.keys() {
            assert!(!passed.contains(f));
        }
        let (_, body) = call(&router, "POST", "/prioritize", req.to_string()).await;
        let scores: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(scores.len(), NAMES.len(), "{name}: one score per candidate");
        for s in &scores {
            let score = s["Score"].as_i64().unwrap();
            assert!((0..=10).contains(&score), "{body}");
            assert!(s["Host"].is_string());
        }
    }
}
