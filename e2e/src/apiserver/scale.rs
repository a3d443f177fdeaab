//! The `scale` subresource of Deployments, StatefulSets and ReplicaSets (`autoscaling/v1` Scale).
//!
//! Sources (kubernetes/kubernetes): `pkg/registry/apps/deployment/storage/storage.go` `ScaleREST`
//! and its twins in `pkg/registry/apps/statefulset/storage/storage.go` and
//! `pkg/registry/apps/replicaset/storage/storage.go`: GET builds the Scale from the parent
//! (`scaleFromDeployment`: the parent's name, namespace, uid, resourceVersion and
//! creationTimestamp; `spec.replicas`; `status.replicas`; `status.selector` as
//! `LabelSelectorAsSelector(..).String()`); an update turns parent → old Scale → new Scale →
//! parent: `ValidateScale` (`spec.replicas` ≥ 0, `Scale.autoscaling` Invalid), a UID in the Scale
//! must match (Conflict on `deployments/scale`), the Scale's resourceVersion becomes the parent's
//! precondition (Conflict on the parent when stale, unconditional when empty) and only
//! `spec.replicas` moves to the parent — whose strategy then bumps `metadata.generation` as for
//! any spec change. A missing parent is the parent's NotFound. `staging/src/k8s.io/api/
//! autoscaling/v1/types.go`: `spec.replicas` is `omitempty` (a Scale to zero has `spec: {}`),
//! `status.replicas` is always present, `status.selector` is omitted when empty.

use serde_json::{json, Value};

use super::ops::Via;
use super::patch::{apply_patch, PatchType};
use super::resources::ResourceDef;
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::App;

/// Whether `res` has a `scale` subresource here.
pub(crate) fn scalable(res: &ResourceDef) -> bool {
    res.group == "apps"
        && res.version == "v1"
        && matches!(
            res.plural.as_str(),
            "deployments" | "statefulsets" | "replicasets"
        )
}

/// The `Scale` kind, for its Invalid errors (`Scale.autoscaling "web" is invalid: …`).
fn scale_kind() -> ResourceDef {
    ResourceDef::crd("autoscaling", "v1", "scale", "Scale", true, false)
}

/// What a PUT or PATCH on `…/scale` asks for.
pub(crate) enum ScaleWrite {
    Replace(Value),
    Patch(PatchType, Value),
}

/// `scaleFromDeployment` (and the StatefulSet/ReplicaSet twins).
fn scale_of(parent: &Value) -> Result<Value, ApiError> {
    let meta = &parent["metadata"];
    let selector =
        LabelSelector::query_string(&parent["spec"]["selector"]).map_err(ApiError::bad_request)?;
    // A stored object without spec.replicas decodes with the v1 default, 1.
    let replicas = parent["spec"]["replicas"].as_i64().unwrap_or(1);
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {},
        "status": {"replicas": parent["status"]["replicas"].as_i64().unwrap_or(0)},
    });
    if replicas != 0 {
        scale["spec"]["replicas"] = replicas.into();
    }
    if !selector.is_empty() {
        scale["status"]["selector"] = selector.into();
    }
    Ok(scale)
}

impl App {
    /// GET `…/{name}/scale`.
    pub(crate) fn get_scale(
        &self,
        res: &ResourceDef,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let inner = self.store.lock().expect("store lock");
        let parent = inner
            .get(&res.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        scale_of(&parent)
    }

    /// PUT or PATCH `…/{name}/scale`: writes the parent's `spec.replicas`, returns the new Scale.
    pub(crate) fn write_scale(
        &self,
        res: &ResourceDef,
        ns: &str,
        name: &str,
        write: ScaleWrite,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.store.lock().expect("store lock");
        let old = inner
            .get(&res.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let old_scale = scale_of(&old)?;
        let new_scale = match write {
            ScaleWrite::Replace(body) => {
                check_scale_body(&body, ns, name)?;
                body
            }
            ScaleWrite::Patch(pt, patch) => {
                let mut s = old_scale;
                apply_patch(&mut s, pt, &patch)
                    .map_err(|e| ApiError::invalid(&scale_kind(), name, &[e]))?;
                s
            }
        };
        let replicas = match &new_scale["spec"]["replicas"] {
            Value::Null => 0, // int32 zero value: `spec: {}` scales to zero
            v => v
                .as_i64()
                .filter(|r| i32::try_from(*r).is_ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Scale in version \"v1\" cannot be handled as a Scale: \
                         spec.replicas: invalid value {v}: expected an int32"
                    ))
                })?,
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                &scale_kind(),
                name,
                &[format!(
                    "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
                )],
            ));
        }
        let parent_uid = old["metadata"]["uid"].as_str().unwrap_or_default();
        if let Some(uid) = new_scale["metadata"]["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
        {
            if uid != parent_uid {
                let mut sub = res.clone();
                sub.plural = format!("{}/scale", res.plural);
                return Err(ApiError::conflict_msg(
                    &sub,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {parent_uid}"
                    ),
                ));
            }
        }
        let mut candidate = (*old).clone();
        candidate["spec"]["replicas"] = replicas.into();
        match new_scale["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty())
        {
            Some(rv) => candidate["metadata"]["resourceVersion"] = rv.into(),
            None => {
                if let Some(m) = candidate["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
            }
        }
        let stored = self.write_existing(
            &mut inner,
            res,
            name,
            &old,
            candidate,
            Via::Main,
            false,
            dry_run,
        )?;
        scale_of(&stored)
    }
}

/// The body of a PUT: an `autoscaling/v1` Scale for this object.
fn check_scale_body(body: &Value, ns: &str, name: &str) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    for (field, want) in [("apiVersion", "autoscaling/v1"), ("kind", "Scale")] {
        if let Some(got) = body[field].as_str().filter(|s| !s.is_empty()) {
            if got != want {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version (autoscaling/v1)",
                    body["apiVersion"].as_str().unwrap_or_default()
                )));
            }
        }
    }
    if let Some(n) = body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    if let Some(n) = body["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        if n != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_of_a_deployment() {
        let d = json!({"metadata": {"name": "web", "namespace": "a", "uid": "u1",
                "resourceVersion": "7", "creationTimestamp": "2025-01-01T00:00:00Z", "generation": 3},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}});
        let s = scale_of(&d).unwrap();
        assert_eq!(s["spec"], json!({}), "replicas 0 is omitted (omitempty)");
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(s["metadata"].get("generation").is_none());
    }
}
