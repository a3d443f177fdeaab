//! In-place pod resize: the `pods/{name}/resize` subresource, the pod QoS class it must keep, and
//! a test hook that plays the kubelet's answer.
//!
//! Sources (kubernetes/kubernetes unless noted):
//! - kubernetes/enhancements `keps/sig-node/1287-in-place-update-pod-resources/README.md`
//!   ("Subresource", "Validation", "Resize Status", "Memory Limit Decreases", "QOS Class").
//! - `pkg/registry/core/pod/strategy.go` `podResizeStrategy`: `dropNonResizeUpdates` keeps only
//!   `spec.{,init}containers[*].resources` and `.resizePolicy` of the request — every other change
//!   (metadata, status, other spec fields) is silently dropped, unless containers were added,
//!   removed, reordered or renamed, which validation then refuses; `updatePodGeneration` bumps
//!   `metadata.generation` when the spec changed. The API server does not touch the status: since
//!   1.33 the kubelet reports the outcome as conditions `PodResizePending` (reason `Deferred` or
//!   `Infeasible`) and `PodResizeInProgress`, with `observedGeneration`
//!   (`staging/src/k8s.io/api/core/v1/types.go`, `pkg/kubelet/allocation/allocation_manager.go`
//!   `handlePodResourcesResize`). Kubernetes 1.27–1.32 used `status.resize`
//!   (`Proposed`/`InProgress`/`Deferred`/`Infeasible`, `Proposed` written by the API server on
//!   every resize); deprecated in 1.33 and not written here.
//! - `pkg/apis/core/validation/validation.go` `ValidatePodResize`, `validateContainerResize`,
//!   `dropCPUMemoryResourcesFromContainer`, `isPodResizeRequestSupported`,
//!   `validateResourceRequirements` (request ≤ limit, non-negative) and `ValidatePodUpdate`
//!   (`updatablePodSpecFields`: a plain pod update may not change resources).
//! - `pkg/apis/core/helper/qos/qos.go` `GetPodQOS`/`ComputePodQOS`; `pkg/apis/core/v1/defaults.go`
//!   `SetDefaults_Pod` (requests default to limits, on create and on every decoded request body).
//!
//! Simplified: `resizePolicy` values are not validated (only compared), no pod-level resources
//! resize (the `InPlacePodLevelResourcesVerticalScaling` gate is off by default), no LimitRange or
//! ResourceQuota admission, resource names are not checked against the standard list.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::ops::{now, Via};
use super::quantity::Quantity;
use super::resources::ResourceDef;
use super::status::ApiError;
use super::store::Inner;
use super::App;

/// The kubelet's answer to a resize, as a test plays it with
/// [`ApiServer::set_resize_outcome`](super::ApiServer::set_resize_outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizeOutcome {
    /// `PodResizePending`, reason `Deferred`: fits the node in theory, not now; retried.
    Deferred(String),
    /// `PodResizePending`, reason `Infeasible`: can never fit this node; not retried.
    Infeasible(String),
    /// `PodResizeInProgress`: allocated (`allocatedResources` = the new requests), not yet
    /// actuated.
    InProgress,
    /// Actuated: both conditions gone, `containerStatuses[].resources` = the spec's CPU and
    /// memory, `status.observedGeneration` = `metadata.generation`.
    Applied,
}

/// The annotation of a static pod's mirror (`core.MirrorPodAnnotationKey`).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The resources a resize may change and QoS looks at (`supportedQoSComputeResources`).
const CPU_MEMORY: [&str; 2] = ["cpu", "memory"];

/// `validation.go` `updatablePodSpecFields`, joined as `ValidatePodUpdate` prints them.
const UPDATABLE_POD_SPEC_FIELDS: &str =
    "`spec.containers[*].image`,`spec.initContainers[*].image`,\
`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),\
`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

type ResourceList = BTreeMap<String, Quantity>;

/// A `ResourceList` (`requests` or `limits`); a quantity that does not parse is a decode error
/// (400), as when the real server unmarshals the body.
fn resource_list(v: &Value) -> Result<ResourceList, ApiError> {
    let mut out = ResourceList::new();
    for (k, q) in v.as_object().into_iter().flatten() {
        let parsed = Quantity::from_json(q).map_err(|e| {
            ApiError::bad_request(format!("unable to decode resource {k}={q}: {e}"))
        })?;
        out.insert(k.clone(), parsed);
    }
    Ok(out)
}

fn containers(spec: &Value, kind: &str) -> Vec<Value> {
    spec[kind].as_array().cloned().unwrap_or_default()
}

/// A sidecar: an init container with `restartPolicy: Always`.
fn is_restartable_init(c: &Value) -> bool {
    c["restartPolicy"] == "Always"
}

/// `SetDefaults_Pod`: a limit without a request defaults the request.
pub(crate) fn default_requests_from_limits(spec: &mut Value) {
    for kind in ["containers", "initContainers"] {
        for c in spec[kind].as_array_mut().into_iter().flatten() {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                continue;
            };
            if !c["resources"]["requests"].is_object() {
                c["resources"]["requests"] = json!({});
            }
            let requests = c["resources"]["requests"]
                .as_object_mut()
                .expect("just made an object");
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
}

/// `resourceQOS`: the QoS "shape" of one resource of one container.
fn resource_qos(requests: &ResourceList, limits: &ResourceList, res: &str) -> &'static str {
    let zero = Quantity::parse("0").expect("zero parses");
    let req = requests.get(res).copied().unwrap_or(zero);
    let lim = limits.get(res).copied().unwrap_or(zero);
    if req != lim {
        "Burstable"
    } else if req.is_zero() {
        "BestEffort"
    } else {
        "Guaranteed"
    }
}

/// `ComputePodQOS` (container-level resources; init containers count too).
pub(crate) fn compute_qos(spec: &Value) -> Result<&'static str, ApiError> {
    let mut pod_qos: Option<&'static str> = None;
    for c in containers(spec, "initContainers")
        .iter()
        .chain(containers(spec, "containers").iter())
    {
        let requests = resource_list(&c["resources"]["requests"])?;
        let limits = resource_list(&c["resources"]["limits"])?;
        let container_qos = if requests.is_empty() && limits.is_empty() {
            "BestEffort"
        } else {
            let shapes: Vec<&str> = CPU_MEMORY
                .iter()
                .map(|r| resource_qos(&requests, &limits, r))
                .collect();
            if shapes.contains(&"Burstable") || shapes[0] != shapes[1] {
                "Burstable"
            } else {
                shapes[0]
            }
        };
        match pod_qos {
            _ if container_qos == "Burstable" => return Ok("Burstable"),
            None => pod_qos = Some(container_qos),
            Some(q) if q != container_qos => return Ok("Burstable"),
            Some(_) => {}
        }
    }
    Ok(pod_qos.unwrap_or("BestEffort"))
}

/// `GetPodQOS`: the stored class, computed only when the status has none.
fn get_pod_qos(pod: &Value) -> Result<&str, ApiError> {
    match pod["status"]["qosClass"].as_str().filter(|q| !q.is_empty()) {
        Some(q) => Ok(q),
        None => compute_qos(&pod["spec"]),
    }
}

/// Semantic equality of two resource lists (`nil` = empty, quantities by value).
fn same_list(a: &Value, b: &Value) -> Result<bool, ApiError> {
    Ok(resource_list(a)? == resource_list(b)?)
}

/// Semantic equality of two containers' `resources` (limits and requests).
fn same_resources(a: &Value, b: &Value) -> Result<bool, ApiError> {
    Ok(same_list(&a["limits"], &b["limits"])? && same_list(&a["requests"], &b["requests"])?)
}

fn null_is_empty(v: &Value) -> Value {
    match v {
        Value::Null => json!([]),
        other => other.clone(),
    }
}

/// `validateResourceRequirements` for one container: non-negative, request ≤ limit.
fn validate_requirements(
    resources: &Value,
    path: &str,
    errs: &mut Vec<String>,
) -> Result<(), ApiError> {
    let limits = resource_list(&resources["limits"])?;
    let requests = resource_list(&resources["requests"])?;
    for (kind, list) in [("limits", &limits), ("requests", &requests)] {
        for (name, q) in list {
            if q.is_negative() {
                errs.push(format!(
                    "{path}.{kind}[{name}]: Invalid value: \"{}\": must be greater than or equal to 0",
                    q.canonical()
                ));
            }
        }
    }
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name) {
            if req > lim {
                errs.push(format!(
                    "{path}.requests: Invalid value: \"{}\": must be less than or equal to {name} limit of {}",
                    req.canonical(),
                    lim.canonical()
                ));
            }
        }
    }
    Ok(())
}

/// `validateContainerResize`: no request or limit may be removed; without `RestartContainer` for
/// memory, a memory limit may neither shrink nor appear.
fn validate_container_resize(
    new: &Value,
    old: &Value,
    path: &str,
    errs: &mut Vec<String>,
) -> Result<(), ApiError> {
    let removed = |kind: &str| -> Result<bool, ApiError> {
        let n = resource_list(&new["resources"][kind])?;
        let o = resource_list(&old["resources"][kind])?;
        Ok(o.keys().any(|k| !n.contains_key(k)))
    };
    if removed("requests")? {
        errs.push(format!(
            "{path}.requests: Forbidden: resource requests cannot be removed"
        ));
    }
    if removed("limits")? {
        errs.push(format!(
            "{path}.limits: Forbidden: resource limits cannot be removed"
        ));
    }
    let mem_policy = new["resizePolicy"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["resourceName"] == "memory")
        .and_then(|p| p["restartPolicy"].as_str())
        .unwrap_or("");
    // `NotRequired` is the pre-1.33 spelling of `PreferNoRestart` (KEP "Container Resize Policy").
    if matches!(mem_policy, "" | "NotRequired" | "PreferNoRestart") {
        let new_lim = resource_list(&new["resources"]["limits"])?;
        let old_lim = resource_list(&old["resources"]["limits"])?;
        match (new_lim.get("memory"), old_lim.get("memory")) {
            (Some(n), Some(o)) if n < o => errs.push(format!(
                "{path}.limits[memory]: Forbidden: memory limits cannot be decreased unless resizePolicy is RestartContainer"
            )),
            (Some(_), None) => errs.push(format!(
                "{path}.limits[memory]: Forbidden: memory limits cannot be added unless resizePolicy is RestartContainer"
            )),
            _ => {}
        }
    }
    Ok(())
}

/// `dropCPUMemoryResourcesFromContainer` then the comparison with the old container: whether
/// anything but CPU and memory requests/limits changed (the resize policy included).
fn only_cpu_memory_changed(new: &Value, old: &Value) -> Result<bool, ApiError> {
    let munge = |kind: &str| -> Result<Option<ResourceList>, ApiError> {
        let old_list = &old["resources"][kind];
        if old_list.is_null() {
            return Ok(None);
        }
        let mut munged = resource_list(&new["resources"][kind])?;
        let old_parsed = resource_list(old_list)?;
        for r in CPU_MEMORY {
            munged.remove(r);
            if let Some(q) = old_parsed.get(r) {
                munged.insert(r.into(), *q);
            }
        }
        Ok(Some(munged))
    };
    for kind in ["limits", "requests"] {
        let old_list = resource_list(&old["resources"][kind])?;
        if munge(kind)?.unwrap_or_default() != old_list {
            return Ok(false);
        }
    }
    Ok(null_is_empty(&new["resizePolicy"]) == null_is_empty(&old["resizePolicy"]))
}

/// Whether the containers of two specs line up (same count, same names in order).
fn same_shape(new: &Value, old: &Value, kind: &str) -> bool {
    let (n, o) = (containers(new, kind), containers(old, kind));
    n.len() == o.len() && n.iter().zip(&o).all(|(a, b)| a["name"] == b["name"])
}

/// `dropNonResizeUpdates`: the old pod with the request's container resources and resize
/// policies; `None` when containers were added, removed, reordered or renamed.
fn drop_non_resize_updates(candidate: &Value, old: &Value) -> Option<Value> {
    let (cs, os) = (&candidate["spec"], &old["spec"]);
    if !same_shape(cs, os, "containers") || !same_shape(cs, os, "initContainers") {
        return None;
    }
    let mut new = old.clone();
    for kind in ["containers", "initContainers"] {
        let from = containers(cs, kind);
        for (i, c) in new["spec"][kind]
            .as_array_mut()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let obj = c.as_object_mut().expect("container is an object");
            for field in ["resources", "resizePolicy"] {
                match from[i].get(field) {
                    Some(v) if !v.is_null() => obj.insert(field.into(), v.clone()),
                    _ => obj.remove(field),
                };
            }
        }
    }
    // The precondition travels with the request (checked against the stored object).
    match candidate["metadata"].get("resourceVersion") {
        Some(rv) => new["metadata"]["resourceVersion"] = rv.clone(),
        None => {
            if let Some(m) = new["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
        }
    }
    Some(new)
}

/// `ValidatePodResize` on the pod `dropNonResizeUpdates` produced (`new`) or, when the containers
/// do not line up, on the request as sent (`shape_changed`).
fn validate_pod_resize(
    new: &Value,
    old: &Value,
    shape_changed: bool,
) -> Result<Vec<String>, ApiError> {
    let mut errs = Vec::new();
    // validatePodMetadataAndSpec: the new resources must be valid as on create.
    for (kind, field) in [
        ("containers", "containers"),
        ("initContainers", "initContainers"),
    ] {
        for (i, c) in containers(&new["spec"], kind).iter().enumerate() {
            validate_requirements(
                &c["resources"],
                &format!("spec.{field}[{i}].resources"),
                &mut errs,
            )?;
        }
    }
    let pod_level = |p: &Value| {
        let r = &p["spec"]["resources"];
        r["requests"].as_object().is_some_and(|m| !m.is_empty())
            || r["limits"].as_object().is_some_and(|m| !m.is_empty())
    };
    if pod_level(old) || pod_level(new) {
        return Ok(vec![
            ": Forbidden: pods with pod-level resources cannot be resized".into(),
        ]);
    }
    if old["metadata"]["annotations"]
        .get(MIRROR_ANNOTATION)
        .is_some()
    {
        return Ok(vec![": Forbidden: static pods cannot be resized".into()]);
    }
    if old["spec"]["os"]["name"] == "windows" {
        return Ok(vec![": Forbidden: windows pods cannot be resized".into()]);
    }
    if get_pod_qos(old)? != compute_qos(&new["spec"])? {
        errs.push(format!(
            "spec: Invalid value: {}: Pod QOS Class may not change as a result of resizing",
            Value::from(new["status"]["qosClass"].as_str().unwrap_or_default())
        ));
    }
    // isPodResizeRequestSupported: a running container without status resources means a kubelet
    // that cannot resize.
    let running = old["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| !s["state"]["running"].is_null());
    if running.is_some_and(|s| s["resources"].is_null()) {
        errs.push("spec: Forbidden: Pod running on node without support for resize".into());
    }
    if shape_changed {
        errs.push("spec: Forbidden: only cpu and memory resources are mutable".into());
        return Ok(dedup(errs));
    }
    let (new_init, old_init) = (
        containers(&new["spec"], "initContainers"),
        containers(&old["spec"], "initContainers"),
    );
    let (new_ctrs, old_ctrs) = (
        containers(&new["spec"], "containers"),
        containers(&old["spec"], "containers"),
    );
    for (i, (n, o)) in new_init.iter().zip(&old_init).enumerate() {
        if is_restartable_init(o) {
            validate_container_resize(
                n,
                o,
                &format!("spec.initContainers[{i}].resources"),
                &mut errs,
            )?;
        }
    }
    for (i, (n, o)) in new_ctrs.iter().zip(&old_ctrs).enumerate() {
        validate_container_resize(n, o, &format!("spec.containers[{i}].resources"), &mut errs)?;
    }
    for (n, o) in new_ctrs.iter().zip(&old_ctrs) {
        if !only_cpu_memory_changed(n, o)? {
            errs.push("spec: Forbidden: only cpu and memory resources are mutable".into());
        }
    }
    for (n, o) in new_init.iter().zip(&old_init) {
        if is_restartable_init(n) {
            if !only_cpu_memory_changed(n, o)? {
                errs.push(
                    "spec: Forbidden: only cpu and memory resources for sidecar containers are mutable"
                        .into(),
                );
            }
        } else if !same_resources(&n["resources"], &o["resources"])?
            || null_is_empty(&n["resizePolicy"]) != null_is_empty(&o["resizePolicy"])
        {
            errs.push(
                "spec: Forbidden: resources for non-sidecar init containers are immutable".into(),
            );
        }
    }
    Ok(dedup(errs))
}

/// `ErrorList.ToAggregate` drops repeated messages.
fn dedup(errs: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in errs {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// `ValidatePodUpdate`, as far as this double checks it: a plain update may not add or remove
/// containers nor change their resources or resize policy (that is what `/resize` is for).
pub(crate) fn validate_pod_update(new: &Value, old: &Value) -> Result<Vec<String>, ApiError> {
    for (kind, path) in [
        ("containers", "spec.containers"),
        ("initContainers", "spec.initContainers"),
    ] {
        if containers(&new["spec"], kind).len() != containers(&old["spec"], kind).len() {
            return Ok(vec![format!(
                "{path}: Forbidden: pod updates may not add or remove containers"
            )]);
        }
    }
    for kind in ["containers", "initContainers"] {
        for (n, o) in containers(&new["spec"], kind)
            .iter()
            .zip(&containers(&old["spec"], kind))
        {
            let policy_changed =
                null_is_empty(&n["resizePolicy"]) != null_is_empty(&o["resizePolicy"]);
            if policy_changed || !same_resources(&n["resources"], &o["resources"])? {
                return Ok(vec![format!(
                    "spec: Forbidden: pod updates may not change fields other than {UPDATABLE_POD_SPEC_FIELDS}\n\
                     (the double does not print cmp.Diff: container {} changed its resources or resizePolicy)",
                    n["name"].as_str().unwrap_or_default()
                )]);
            }
        }
    }
    Ok(Vec::new())
}

/// Sets or replaces a pod condition; `lastTransitionTime` stays when the status is unchanged.
fn set_condition(status: &mut Value, mut cond: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let list = status["conditions"].as_array_mut().expect("array");
    match list.iter_mut().find(|c| c["type"] == cond["type"]) {
        Some(existing) => {
            if existing["status"] == cond["status"] {
                cond["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = cond;
        }
        None => list.push(cond),
    }
}

fn remove_condition(status: &mut Value, kind: &str) {
    if let Some(list) = status["conditions"].as_array_mut() {
        list.retain(|c| c["type"] != kind);
    }
}

/// Only the CPU and memory entries of a `ResourceList` (what the kubelet reports).
fn cpu_memory(list: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in list.as_object().into_iter().flatten() {
        if CPU_MEMORY.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The status entry of a container, created (not running, no state) when missing.
fn container_status<'a>(status: &'a mut Value, container: &Value) -> &'a mut Value {
    if !status["containerStatuses"].is_array() {
        status["containerStatuses"] = json!([]);
    }
    let list = status["containerStatuses"].as_array_mut().expect("array");
    let name = &container["name"];
    let at = match list.iter().position(|s| &s["name"] == name) {
        Some(i) => i,
        None => {
            list.push(
                json!({"name": name, "image": container["image"], "imageID": "",
                             "ready": false, "restartCount": 0}),
            );
            list.len() - 1
        }
    };
    &mut list[at]
}

/// What a kubelet writes to a pod's status for an outcome of its current resize.
pub(crate) fn apply_outcome(pod: &mut Value, outcome: &ResizeOutcome) {
    let generation = pod["metadata"]["generation"].clone();
    let spec = pod["spec"].clone();
    let status = &mut pod["status"];
    if !status.is_object() {
        *status = json!({});
    }
    let condition = |kind: &str, reason: Option<&str>, message: Option<&str>| {
        let mut c = json!({"type": kind, "status": "True", "observedGeneration": generation,
                           "lastProbeTime": null, "lastTransitionTime": now()});
        if let Some(r) = reason {
            c["reason"] = r.into();
        }
        if let Some(m) = message {
            c["message"] = m.into();
        }
        c
    };
    match outcome {
        ResizeOutcome::Deferred(msg) => set_condition(
            status,
            condition("PodResizePending", Some("Deferred"), Some(msg)),
        ),
        ResizeOutcome::Infeasible(msg) => set_condition(
            status,
            condition("PodResizePending", Some("Infeasible"), Some(msg)),
        ),
        ResizeOutcome::InProgress => {
            remove_condition(status, "PodResizePending");
            set_condition(status, condition("PodResizeInProgress", None, None));
            for c in containers(&spec, "containers") {
                container_status(status, &c)["allocatedResources"] =
                    cpu_memory(&c["resources"]["requests"]);
            }
        }
        ResizeOutcome::Applied => {
            remove_condition(status, "PodResizePending");
            remove_condition(status, "PodResizeInProgress");
            for c in containers(&spec, "containers") {
                let s = container_status(status, &c);
                s["allocatedResources"] = cpu_memory(&c["resources"]["requests"]);
                let mut actual = json!({});
                for kind in ["requests", "limits"] {
                    let list = cpu_memory(&c["resources"][kind]);
                    if list.as_object().is_some_and(|m| !m.is_empty()) {
                        actual[kind] = list;
                    }
                }
                s["resources"] = actual;
            }
            status["observedGeneration"] = generation;
        }
    }
}

impl App {
    /// PUT or PATCH on `pods/{name}/resize`, the request already applied to the stored pod
    /// (`candidate`), under the store lock.
    pub(crate) fn resize_locked(
        &self,
        inner: &mut Inner,
        pods: &ResourceDef,
        name: &str,
        old: &Arc<Value>,
        mut candidate: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        // The generic registry's optimistic lock comes before the strategy and validation
        // (`Store.Update`: a stale resourceVersion is a Conflict whatever else is wrong).
        let sent_rv = candidate["metadata"]["resourceVersion"].as_str();
        if sent_rv.is_some_and(|rv| {
            !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        }) {
            return Err(ApiError::conflict(pods, name));
        }
        default_requests_from_limits(&mut candidate["spec"]);
        let (new, shape_changed) = match drop_non_resize_updates(&candidate, old) {
            Some(new) => (new, false),
            None => (candidate, true),
        };
        let errs = validate_pod_resize(&new, old, shape_changed)?;
        if !errs.is_empty() {
            return Err(ApiError::invalid(pods, name, &errs));
        }
        self.write_existing(inner, pods, name, old, new, Via::Resize, false, dry_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resources: Value) -> Value {
        json!({"containers": [{"name": "a", "image": "x", "resources": resources}]})
    }

    #[test]
    fn qos_classes() {
        // qos.go: requests == limits != 0 for cpu and memory in every container: Guaranteed
        let g = json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}});
        assert_eq!(compute_qos(&spec(g)).unwrap(), "Guaranteed");
        let b = json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}});
        assert_eq!(compute_qos(&spec(b)).unwrap(), "Burstable");
        // cpu only, request == limit: memory's shape is BestEffort, cpu's Guaranteed → Burstable
        let cpu_only = json!({"requests": {"cpu": "1"}, "limits": {"cpu": "1"}});
        assert_eq!(compute_qos(&spec(cpu_only)).unwrap(), "Burstable");
        assert_eq!(compute_qos(&spec(json!({}))).unwrap(), "BestEffort");
        // only other resources: BestEffort
        let storage = json!({"limits": {"ephemeral-storage": "1Gi"}});
        assert_eq!(compute_qos(&spec(storage)).unwrap(), "BestEffort");
    }

    #[test]
    fn limits_default_requests() {
        let mut s = spec(json!({"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}));
        default_requests_from_limits(&mut s);
        assert_eq!(
            s["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
    }

    #[test]
    fn non_resize_changes_are_dropped_but_renames_are_not() {
        let old = json!({"metadata": {"name": "p", "resourceVersion": "5", "labels": {"a": "b"}},
            "spec": spec(json!({"limits": {"cpu": "1"}})), "status": {"phase": "Running"}});
        let mut cand = old.clone();
        cand["metadata"]["labels"]["a"] = "c".into();
        cand["status"]["phase"] = "Failed".into();
        cand["spec"]["containers"][0]["image"] = "y".into();
        cand["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m".into();
        let new = drop_non_resize_updates(&cand, &old).unwrap();
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        assert_eq!(new["status"]["phase"], "Running");
        assert_eq!(new["spec"]["containers"][0]["image"], "x");
        assert_eq!(
            new["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "500m"
        );
        cand["spec"]["containers"][0]["name"] = "b".into();
        assert!(drop_non_resize_updates(&cand, &old).is_none());
    }
}
