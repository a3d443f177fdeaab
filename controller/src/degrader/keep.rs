//! What a suspended EdgeWorkload's restore recreates: its object as the user wrote it. Pure.
//!
//! Source: kubernetes/kubernetes `staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go`
//! (`ObjectMeta`): `uid`, `resourceVersion`, `generation`, `creationTimestamp`,
//! `deletionTimestamp`, `deletionGracePeriodSeconds`, `managedFields` and `selfLink` are set by
//! the server ("Populated by the system. Read-only."), and a create that carries a
//! `resourceVersion` is refused; names, labels, annotations, owner references and finalizers are
//! the writer's.

use edgewatt_crds::EdgeWorkload;
use serde_json::{json, Map, Value};

/// Metadata fields the API server sets: never kept, never sent on a create.
const SERVER_SET: [&str; 8] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn writer_metadata(meta: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in meta.as_object().into_iter().flatten() {
        if !SERVER_SET.contains(&k.as_str()) && !v.is_null() {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The object to keep in the ledger: apiVersion, kind, metadata without the server's fields
/// (ownerReferences and finalizers kept), and the spec — unknown spec fields included (Flotta's
/// CRD has more than edgewatt reads). No status.
pub fn keep(w: &EdgeWorkload) -> Value {
    let v = serde_json::to_value(w).unwrap_or(Value::Null);
    json!({
        "apiVersion": v["apiVersion"],
        "kind": v["kind"],
        "metadata": writer_metadata(&v["metadata"]),
        "spec": v["spec"],
    })
}

/// The EdgeWorkload to create from a kept object (server fields and status dropped again: the
/// ledger lives in a status anyone with access may edit). Errors name what is wrong.
pub fn recreate(kept: &Value) -> Result<EdgeWorkload, String> {
    if !kept.is_object() {
        return Err("the kept object is not a JSON object".into());
    }
    let name = kept["metadata"]["name"].as_str().unwrap_or_default();
    let ns = kept["metadata"]["namespace"].as_str().unwrap_or_default();
    if name.is_empty() || ns.is_empty() {
        return Err("the kept object has no metadata.name or metadata.namespace".into());
    }
    if !kept["spec"].is_object() {
        return Err(format!("the kept object {ns}/{name} has no spec"));
    }
    let clean = json!({
        "apiVersion": kept["apiVersion"],
        "kind": kept["kind"],
        "metadata": writer_metadata(&kept["metadata"]),
        "spec": kept["spec"],
    });
    serde_json::from_value(clean)
        .map_err(|e| format!("the kept object {ns}/{name} is not an EdgeWorkload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> EdgeWorkload {
        serde_json::from_value(json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
            "metadata": {"name": "cam", "namespace": "edge", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2025-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl"}],
                "labels": {"app": "cam"}, "annotations": {"note": "x"},
                "finalizers": ["flotta/cleanup"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-o"}]},
            "spec": {"device": "d1", "type": "pod", "pod": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                     "imageRegistries": {"secretRef": {"name": "reg"}}},
            "status": {"deployed": true}
        }))
        .unwrap()
    }

    #[test]
    fn keeps_what_the_writer_wrote_and_drops_what_the_server_set() {
        let k = keep(&live());
        let m = k["metadata"].as_object().unwrap();
        for f in SERVER_SET {
            assert!(!m.contains_key(f), "{f} kept");
        }
        assert_eq!(k["metadata"]["labels"], json!({"app": "cam"}));
        assert_eq!(k["metadata"]["finalizers"], json!(["flotta/cleanup"]));
        assert_eq!(k["metadata"]["ownerReferences"][0]["uid"], "u-o");
        assert_eq!(
            k["spec"]["imageRegistries"],
            json!({"secretRef": {"name": "reg"}}),
            "unknown spec fields kept"
        );
        assert!(k.get("status").is_none());
        assert_eq!(k["kind"], "EdgeWorkload");
    }

    #[test]
    fn recreates_it_unchanged() {
        let k = keep(&live());
        let w = recreate(&k).unwrap();
        assert_eq!(keep(&w), k, "keep ∘ recreate is the identity");
        assert!(w.metadata.uid.is_none() && w.metadata.resource_version.is_none());
    }

    #[test]
    fn a_hand_edited_ledger_object_is_cleaned_or_refused() {
        let mut k = keep(&live());
        k["metadata"]["resourceVersion"] = json!("7");
        k["status"] = json!({"x": 1});
        let w = recreate(&k).unwrap();
        assert!(w.metadata.resource_version.is_none());
        for bad in [
            json!(null),
            json!("x"),
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"name": "a", "namespace": "b"}}),
        ] {
            assert!(recreate(&bad).is_err(), "{bad}");
        }
    }
}
