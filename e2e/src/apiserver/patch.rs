//! Patch formats: JSON merge (RFC 7386), JSON patch (RFC 6902), a strategic merge patch for the
//! list fields our code touches, and server-side apply as a strategic merge.
//!
//! Simplification: strategic merge knows list merge keys by field name alone (not by the full
//! Go type), which is right for pods, nodes and the other built-ins served here.

use serde_json::{Map, Value};

/// Merge key of a strategic-merge list field, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "addresses" => "type",
        _ => return None,
    })
}

/// Primitive lists merged as sets.
fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Applies a strategic merge patch to `target` (also used for server-side apply).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pmap.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut retain: Option<Vec<String>> = None;
    for (k, pv) in pmap {
        let tmap = target.as_object_mut().expect("object");
        if k == "$patch" {
            continue;
        }
        if k == "$retainKeys" {
            retain = pv.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            });
            continue;
        }
        if k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(arr), Some(del)) = (
                tmap.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                arr.retain(|v| !del.contains(v));
            }
            continue;
        }
        if pv.is_null() {
            tmap.remove(k);
            continue;
        }
        match (merge_key(k), pv) {
            (Some(key), Value::Array(items)) => {
                let cur = tmap.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(cur, items, key);
            }
            (None, Value::Array(items)) if is_set_list(k) => {
                let cur = tmap.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if let Some(arr) = cur.as_array_mut() {
                    for v in items {
                        if !arr.contains(v) {
                            arr.push(v.clone());
                        }
                    }
                } else {
                    *cur = pv.clone();
                }
            }
            (_, Value::Object(pobj))
                if pobj.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                tmap.remove(k);
            }
            (_, Value::Object(_)) => {
                let cur = tmap.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(cur, pv);
            }
            _ => {
                tmap.insert(k.clone(), pv.clone());
            }
        }
    }
    if let (Some(keys), Some(tmap)) = (retain, target.as_object_mut()) {
        tmap.retain(|k, _| keys.contains(k));
    }
}

fn merge_list(cur: &mut Value, items: &[Value], key: &str) {
    if !cur.is_array()
        || items
            .iter()
            .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *cur = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return;
    }
    let arr = cur.as_array_mut().expect("array");
    for item in items {
        let Some(k) = item.get(key) else {
            arr.push(item.clone());
            continue;
        };
        let pos = arr.iter().position(|e| e.get(key) == Some(k));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            arr.retain(|e| e.get(key) != Some(k));
            continue;
        }
        match pos {
            Some(i) => strategic_merge(&mut arr[i], item),
            None => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, item);
                arr.push(fresh);
            }
        }
    }
}

/// The patch types the server accepts, from the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        Some(match ct {
            "application/merge-patch+json" => PatchType::Merge,
            "application/json-patch+json" => PatchType::Json,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// Parses a body as JSON, or as YAML for apply patches.
pub fn parse_body(body: &[u8], yaml_ok: bool) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if yaml_ok => {
            let text = std::str::from_utf8(body).map_err(|_| e.to_string())?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Applies a non-apply patch to `doc`.
pub fn apply_patch(doc: &mut Value, pt: PatchType, patch: &Value) -> Result<(), String> {
    match pt {
        PatchType::Merge => {
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchType::Strategic | PatchType::Apply => {
            strategic_merge(doc, patch);
            Ok(())
        }
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
            json_patch::patch(doc, &ops.0).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
        );
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn strategic_replaces_plain_lists_and_unions_finalizers() {
        let mut node = json!({"metadata": {"finalizers": ["a"]}, "spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}});
        strategic_merge(
            &mut node,
            &json!({"metadata": {"finalizers": ["b"]}, "spec": {"taints": [{"key": "y", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(node["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "y", "effect": "NoSchedule"}])
        );
        strategic_merge(
            &mut node,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}, "spec": {"taints": null}}),
        );
        assert_eq!(node["metadata"]["finalizers"], json!(["b"]));
        assert!(node["spec"].get("taints").is_none());
    }

    #[test]
    fn yaml_apply_body() {
        let v = parse_body(b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n", true).unwrap();
        assert_eq!(v["metadata"]["name"], "x");
        assert!(parse_body(b"a: b", false).is_err());
    }
}
