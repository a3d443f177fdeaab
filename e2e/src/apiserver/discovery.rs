//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{g}`, `/api/v1`, `/apis/{g}/{v}`.

use serde_json::{json, Value};

use super::resources::ResourceDef;

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-edgewatt-double",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn api_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]
    })
}

fn group_versions(reg: &[ResourceDef], group: &str) -> Vec<String> {
    let mut vs: Vec<String> = Vec::new();
    for r in reg.iter().filter(|r| r.group == group) {
        if !vs.contains(&r.version) {
            vs.push(r.version.clone());
        }
    }
    vs
}

fn api_group(reg: &[ResourceDef], group: &str) -> Value {
    let versions: Vec<Value> = group_versions(reg, group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis`.
pub fn api_group_list(reg: &[ResourceDef]) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for r in reg.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&r.group.as_str()) {
            groups.push(&r.group);
        }
    }
    let groups: Vec<Value> = groups.iter().map(|g| api_group(reg, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, or `None` when the group is not served.
pub fn api_group_doc(reg: &[ResourceDef], group: &str) -> Option<Value> {
    if !reg.iter().any(|r| r.group == group) {
        return None;
    }
    let mut g = api_group(reg, group);
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Some(g)
}

/// `/api/v1` or `/apis/{group}/{version}`, or `None` when not served. Subresources follow their
/// resource sorted by name, as in kube-apiserver's documents: `pods/eviction`, `pods/resize`
/// (while served, see [`ApiServer::serve_pod_resize`](super::ApiServer::serve_pod_resize)),
/// `*/scale` of Deployments, ReplicaSets and StatefulSets (kind `autoscaling/v1` Scale), and
/// `*/status`.
pub fn api_resource_list(
    reg: &[ResourceDef],
    group: &str,
    version: &str,
    pod_resize: bool,
) -> Option<Value> {
    let mut resources = Vec::new();
    for r in reg
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        resources.push(main);
        let sub = |name: &str, kind: &str, verbs: Value| {
            json!({
                "name": format!("{}/{name}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            })
        };
        let mut subs = Vec::new();
        if r.has_status {
            subs.push(sub("status", &r.kind, json!(["get", "patch", "update"])));
        }
        let pods = r.group.is_empty() && r.plural == "pods";
        if pods {
            let mut eviction = sub("eviction", "Eviction", json!(["create"]));
            eviction["group"] = "policy".into();
            eviction["version"] = "v1".into();
            subs.push(eviction);
        }
        if pods && pod_resize {
            subs.push(sub("resize", "Pod", json!(["get", "patch", "update"])));
        }
        if super::scale::scalable(r) {
            let mut scale = sub("scale", "Scale", json!(["get", "patch", "update"]));
            scale["group"] = "autoscaling".into();
            scale["version"] = "v1".into();
            subs.push(scale);
        }
        subs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        resources.extend(subs);
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources
    }))
}
