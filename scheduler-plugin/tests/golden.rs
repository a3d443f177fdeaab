//! Golden requests and replies in both node forms and both key casings. The files in
//! `tests/golden/` were checked by hand against `k8s.io/kube-scheduler/extender/v1/types.go`:
//! `ExtenderArgs{Pod, Nodes, NodeNames}`, `ExtenderFilterResult{Nodes, NodeNames, FailedNodes,
//! FailedAndUnresolvableNodes, Error}`, `HostPriority{Host, Score}` — Go field names, no tags.
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
        // n2 is nearly full by the default budget, but its annotation (150 W) only arrives with
        // full Node objects; n3 starved by the controller, n4 by the taint (Node form only),
        // n5 on a low battery.
        let failed = v["FailedNodes"].as_object().unwrap();
        assert!(
            failed.contains_key("n3") && failed.contains_key("n5"),
            "{name}: {body}"
        );
        assert_eq!(failed.contains_key("n2"), by_names, "{name}: {body}");
        assert_eq!(failed.contains_key("n4"), !by_names, "{name}: {body}");
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
