//! The `pods/{name}/resize` and `{deployments,statefulsets,replicasets}/{name}/scale`
//! subresources of the API server double, through kube's client, against kube-apiserver's rules.
//!
//! Sources (cited per test): kubernetes/enhancements `keps/sig-node/1287-in-place-update-pod-
//! resources/README.md` (KEP); kubernetes/kubernetes `pkg/apis/core/validation/validation.go`
//! (`ValidatePodResize`, `validateContainerResize`, `validateResourceRequirements`,
//! `ValidatePodUpdate`), `pkg/registry/core/pod/strategy.go` (`podResizeStrategy`),
//! `pkg/apis/core/helper/qos/qos.go`, `pkg/registry/apps/deployment/storage/storage.go`
//! (`ScaleREST`), `pkg/apis/autoscaling/validation/validation.go` (`ValidateScale`),
//! `staging/src/k8s.io/api/autoscaling/v1/types.go`, `plugin/pkg/auth/authorizer/rbac/rbac.go`
//! and `pkg/apis/rbac/v1/evaluation_helpers.go` (`ResourceMatches`).

use std::time::Duration;

use edgewatt_e2e::apiserver::{ApiServer, ResizeOutcome};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::Status;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const NS: &str = "apps";
const T: Duration = Duration::from_secs(5);

fn from<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

fn api_error(e: kube::Error) -> Box<Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The 422 a field error list becomes (`apierrors.NewInvalid`): (message, [(reason, field, msg)]).
fn invalid(e: kube::Error) -> (String, Vec<(String, String, String)>) {
    let s = api_error(e);
    assert_eq!(
        (s.code, s.reason.as_str()),
        (422, "Invalid"),
        "{}",
        s.message
    );
    let causes = s
        .details
        .map(|d| {
            d.causes
                .into_iter()
                .map(|c| (c.reason, c.field, c.message))
                .collect()
        })
        .unwrap_or_default();
    (s.message, causes)
}

async fn setup() -> (ApiServer, Client) {
    let s = ApiServer::start().await.unwrap();
    s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    let c = s.client().unwrap();
    (s, c)
}

/// A one-container pod with these resources, created through the API (defaulting, QoS).
async fn create_pod(pods: &Api<Pod>, name: &str, resources: Value) -> Pod {
    create_pod_spec(
        pods,
        name,
        json!({"containers": [{"name": "app", "image": "busybox", "resources": resources}]}),
    )
    .await
}

async fn create_pod_spec(pods: &Api<Pod>, name: &str, spec: Value) -> Pod {
    pods.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": name}, "spec": spec})),
    )
    .await
    .unwrap()
}

fn burstable() -> Value {
    json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}})
}

fn guaranteed() -> Value {
    json!({"limits": {"cpu": "1", "memory": "128Mi"}})
}

fn cpu_limit(value: &str) -> Value {
    json!({"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": value}}}]}})
}

fn limits(p: &Pod) -> Value {
    serde_json::to_value(&p.spec.as_ref().unwrap().containers[0].resources).unwrap()["limits"]
        .clone()
}

/// The next non-bookmark watch event.
async fn next_event<K: Clone + DeserializeOwned + Send + 'static>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    loop {
        match tokio::time::timeout(T, stream.try_next())
            .await
            .expect("a watch event in time")
            .unwrap()
            .expect("stream open")
        {
            WatchEvent::Bookmark(_) => continue,
            ev => return ev,
        }
    }
}

fn watch_params() -> WatchParams {
    let mut wp = WatchParams::default().timeout(10);
    wp.bookmarks = false;
    wp
}

// ---------------------------------------------------------------------------------------------
// pods/{name}/resize
// ---------------------------------------------------------------------------------------------

/// KEP "Subresource": resources change through `/resize` with PATCH (strategic merge, JSON merge,
/// JSON patch) and PUT; strategy.go `updatePodGeneration` bumps the generation on a spec change;
/// the API server leaves the status alone (since 1.33 nothing like `status.resize: Proposed`).
/// Each write is one MODIFIED event with the new resourceVersion.
#[tokio::test]
async fn resize_patches_and_puts_container_resources_and_bumps_the_generation() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    let created = create_pod(&pods, "web", burstable()).await;
    assert_eq!(created.metadata.generation, Some(1));
    let mut stream = pods
        .watch(&watch_params(), &created.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let pp = PatchParams::default();
    let patches: Vec<(&str, Patch<Value>)> = vec![
        ("800m", Patch::Strategic(cpu_limit("800m"))),
        (
            "700m",
            Patch::Merge(
                json!({"spec": {"containers": [{"name": "app", "image": "busybox",
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                              "limits": {"cpu": "700m", "memory": "128Mi"}}}]}}),
            ),
        ),
        (
            "600m",
            Patch::Json(from(json!([{"op": "replace",
                "path": "/spec/containers/0/resources/limits/cpu", "value": "600m"}]))),
        ),
    ];
    let mut rv = created.resource_version().unwrap();
    for (gen, (want, patch)) in (2..).zip(patches) {
        let p = pods.patch_resize("web", &pp, &patch).await.unwrap();
        assert_eq!(limits(&p)["cpu"], want);
        assert_eq!(p.metadata.generation, Some(gen));
        assert_ne!(p.resource_version().unwrap(), rv);
        rv = p.resource_version().unwrap();
        assert!(p.status.as_ref().unwrap().conditions.is_none());
        assert!(p.status.as_ref().unwrap().resize.is_none());
        match next_event(&mut stream).await {
            WatchEvent::Modified(m) => {
                assert_eq!(m.resource_version(), Some(rv.clone()));
                assert_eq!(limits(&m)["cpu"], want);
            }
            other => panic!("{other:?}"),
        }
    }
    // PUT: the whole pod, from GET on the subresource.
    let mut p = pods.get_resize("web").await.unwrap();
    p.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .limits
        .as_mut()
        .unwrap()
        .insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("500m".into()),
        );
    let put = pods
        .replace_resize("web", &PostParams::default(), &p)
        .await
        .unwrap();
    assert_eq!(limits(&put)["cpu"], "500m");
    assert_eq!(put.metadata.generation, Some(5));
    // The same resources again: no change, no new resourceVersion (a no-op write).
    let same = pods
        .patch_resize("web", &pp, &Patch::Strategic(cpu_limit("500m")))
        .await
        .unwrap();
    assert_eq!(same.resource_version(), put.resource_version());
    assert_eq!(same.metadata.generation, Some(5));
}

/// strategy.go `dropNonResizeUpdates`: everything but container resources and resize policy in a
/// resize request is dropped without an error (labels, image, status).
#[tokio::test]
async fn resize_drops_every_change_but_container_resources() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    create_pod(&pods, "web", burstable()).await;
    let p = pods
        .patch_resize(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "metadata": {"labels": {"sneaky": "yes"}},
                "spec": {"containers": [{"name": "app", "image": "evil:1",
                    "resources": {"limits": {"cpu": "900m"}}}], "activeDeadlineSeconds": 5},
                "status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert!(p.labels().get("sneaky").is_none());
    let spec = p.spec.unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some("busybox"));
    assert_eq!(spec.active_deadline_seconds, None);
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        serde_json::to_value(&spec.containers[0].resources).unwrap()["limits"]["cpu"],
        "900m"
    );
}

/// validation.go `validateResourceRequirements` (run by `validatePodMetadataAndSpec` inside
/// `ValidatePodResize`): a request above its limit is `Invalid` on `…resources.requests`, with
/// both quantities in canonical form. This is what lowering a CPU limit under the request hits.
#[tokio::test]
async fn lowering_a_limit_below_its_request_is_invalid() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    create_pod(&pods, "web", burstable()).await;
    let e = pods
        .patch_resize(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(cpu_limit("0.1")),
        )
        .await
        .unwrap_err();
    let (msg, causes) = invalid(e);
    assert_eq!(
        msg,
        "Pod \"web\" is invalid: spec.containers[0].resources.requests: Invalid value: \"250m\": \
         must be less than or equal to cpu limit of 100m"
    );
    assert_eq!(
        causes,
        [(
            "FieldValueInvalid".to_string(),
            "spec.containers[0].resources.requests".to_string(),
            "Invalid value: \"250m\": must be less than or equal to cpu limit of 100m".to_string()
        )]
    );
    // Unchanged.
    assert_eq!(limits(&pods.get("web").await.unwrap())["cpu"], "1");
}

/// validation.go `ValidatePodResize`: "Pod QOS Class may not change as a result of resizing"
/// (`qos.GetPodQOS(oldPod) != qos.ComputePodQOS(newPod)`, reported on `spec` with the stored
/// class as value); qos.go: Guaranteed = requests == limits for CPU and memory. A Guaranteed pod
/// may lower CPU request and limit together, but not the limit alone.
#[tokio::test]
async fn resize_keeps_the_qos_class() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    let g = create_pod(&pods, "g", guaranteed()).await;
    // SetDefaults_Pod copied the limits into the requests; PrepareForCreate computed the class.
    assert_eq!(g.status.unwrap().qos_class.as_deref(), Some("Guaranteed"));
    let pp = PatchParams::default();
    let both = json!({"spec": {"containers": [{"name": "app", "resources": {
        "requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}}}]}});
    pods.patch_resize("g", &pp, &Patch::Strategic(both))
        .await
        .unwrap();
    // Limit alone below the request: invalid (request > limit).
    let (msg, _) = invalid(
        pods.patch_resize("g", &pp, &Patch::Strategic(cpu_limit("250m")))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("must be less than or equal to cpu limit of 250m"),
        "{msg}"
    );
    // Raising the CPU limit alone makes it Burstable: refused.
    let (msg, causes) = invalid(
        pods.patch_resize("g", &pp, &Patch::Strategic(cpu_limit("2")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"g\" is invalid: spec: Invalid value: \"Guaranteed\": Pod QOS Class may not change \
         as a result of resizing"
    );
    assert_eq!(causes[0].0, "FieldValueInvalid");
    assert_eq!(causes[0].1, "spec");
    // A Burstable pod whose requests reach its limits would become Guaranteed: refused.
    create_pod(&pods, "b", burstable()).await;
    let eq = json!({"spec": {"containers": [{"name": "app", "resources": {
        "requests": {"cpu": "1", "memory": "128Mi"}}}]}});
    let (msg, _) = invalid(
        pods.patch_resize("b", &pp, &Patch::Strategic(eq))
            .await
            .unwrap_err(),
    );
    assert!(msg.ends_with("spec: Invalid value: \"Burstable\": Pod QOS Class may not change as a result of resizing"), "{msg}");
    // BestEffort stays BestEffort: adding resources is refused.
    create_pod(&pods, "be", json!({})).await;
    let (msg, _) = invalid(
        pods.patch_resize("be", &pp, &Patch::Strategic(cpu_limit("1")))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("\"BestEffort\": Pod QOS Class may not change"),
        "{msg}"
    );
}

/// validation.go `ValidatePodResize`: "only cpu and memory resources are mutable" (Forbidden on
/// `spec`); KEP non-goal "updating extended resources or any other resource types besides CPU,
/// memory". The resize policy is compared too (KEP: "The `ResizePolicy` field is immutable").
#[tokio::test]
async fn only_cpu_and_memory_may_change() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    let mut r = burstable();
    r["limits"]["ephemeral-storage"] = "1Gi".into();
    create_pod(&pods, "web", r).await;
    let patch = json!({"spec": {"containers": [{"name": "app", "resources": {
        "limits": {"ephemeral-storage": "2Gi"}}}]}});
    let (msg, causes) = invalid(
        pods.patch_resize("web", &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"web\" is invalid: spec: Forbidden: only cpu and memory resources are mutable"
    );
    assert_eq!(
        causes,
        [(
            "FieldValueForbidden".to_string(),
            "spec".to_string(),
            "Forbidden: only cpu and memory resources are mutable".to_string()
        )]
    );
    let policy = json!({"spec": {"containers": [{"name": "app",
        "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "RestartContainer"}]}]}});
    let (msg, _) = invalid(
        pods.patch_resize("web", &PatchParams::default(), &Patch::Strategic(policy))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.ends_with("only cpu and memory resources are mutable"),
        "{msg}"
    );
    // Renaming a container (strategy.go leaves the request as sent; validation refuses it).
    let renamed = json!([{"op": "replace", "path": "/spec/containers/0/name", "value": "other"}]);
    let (msg, _) = invalid(
        pods.patch_resize(
            "web",
            &PatchParams::default(),
            &Patch::Json::<Value>(from(renamed)),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.ends_with("only cpu and memory resources are mutable"),
        "{msg}"
    );
}

/// validation.go `validateContainerResize`: requests and limits cannot be removed; with a memory
/// resize policy other than `RestartContainer`, a memory limit may neither decrease nor be added
/// (KEP "Memory Limit Decreases"); with `RestartContainer` it may decrease.
#[tokio::test]
async fn requests_and_limits_stay_and_memory_limits_only_shrink_with_restart() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    create_pod(&pods, "web", burstable()).await;
    let pp = PatchParams::default();
    let remove = json!([{"op": "remove", "path": "/spec/containers/0/resources/limits/cpu"}]);
    let (msg, causes) = invalid(
        pods.patch_resize("web", &pp, &Patch::Json::<Value>(from(remove)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"web\" is invalid: spec.containers[0].resources.limits: Forbidden: resource limits \
         cannot be removed"
    );
    assert_eq!(causes[0].0, "FieldValueForbidden");
    // A request without a limit cannot be removed…
    create_pod(
        &pods,
        "reqs",
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}),
    )
    .await;
    let remove = json!([{"op": "remove", "path": "/spec/containers/0/resources/requests/cpu"}]);
    let (msg, _) = invalid(
        pods.patch_resize("reqs", &pp, &Patch::Json::<Value>(from(remove)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"reqs\" is invalid: spec.containers[0].resources.requests: Forbidden: resource \
         requests cannot be removed"
    );
    // …but removing one that has a limit is undone by SetDefaults_Pod, which runs on the
    // decoded request: the request becomes the limit.
    let remove = json!([{"op": "remove", "path": "/spec/containers/0/resources/requests/memory"}]);
    let p = pods
        .patch_resize("reqs", &pp, &Patch::Json::<Value>(from(remove)))
        .await
        .unwrap();
    let requests = serde_json::to_value(&p.spec.unwrap().containers[0].resources).unwrap();
    assert_eq!(
        requests["requests"],
        json!({"cpu": "100m", "memory": "128Mi"})
    );
    let mem = json!({"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "100Mi"}}}]}});
    let (msg, causes) = invalid(
        pods.patch_resize("web", &pp, &Patch::Strategic(mem.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"web\" is invalid: spec.containers[0].resources.limits[memory]: Forbidden: memory \
         limits cannot be decreased unless resizePolicy is RestartContainer"
    );
    assert_eq!(causes[0].1, "spec.containers[0].resources.limits[memory]");
    // Raising is fine.
    let up = json!({"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "256Mi"}}}]}});
    pods.patch_resize("web", &pp, &Patch::Strategic(up))
        .await
        .unwrap();
    // With RestartContainer for memory, decreasing is allowed.
    create_pod_spec(
        &pods,
        "restart",
        json!({"containers": [{"name": "app", "image": "busybox", "resources": burstable(),
            "resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}]}),
    )
    .await;
    let p = pods
        .patch_resize("restart", &pp, &Patch::Strategic(mem))
        .await
        .unwrap();
    assert_eq!(limits(&p)["memory"], "100Mi");
    // Adding a memory limit where there was none is an implicit decrease from "max".
    create_pod(
        &pods,
        "nolimit",
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}),
    )
    .await;
    let add = json!({"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "1Gi"}}}]}});
    let (msg, _) = invalid(
        pods.patch_resize("nolimit", &pp, &Patch::Strategic(add))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.ends_with("memory limits cannot be added unless resizePolicy is RestartContainer"),
        "{msg}"
    );
}

/// KEP "Sidecars": restartable init containers resize like containers; validation.go: "resources
/// for non-sidecar init containers are immutable".
#[tokio::test]
async fn only_sidecar_init_containers_resize() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    create_pod_spec(
        &pods,
        "web",
        json!({"initContainers": [
                {"name": "setup", "image": "busybox", "resources": burstable()},
                {"name": "proxy", "image": "envoy", "restartPolicy": "Always", "resources": burstable()}],
               "containers": [{"name": "app", "image": "busybox", "resources": burstable()}]}),
    )
    .await;
    let pp = PatchParams::default();
    let sidecar = json!({"spec": {"initContainers": [{"name": "proxy", "resources": {"limits": {"cpu": "2"}}}]}});
    let p = pods
        .patch_resize("web", &pp, &Patch::Strategic(sidecar))
        .await
        .unwrap();
    let init = serde_json::to_value(&p.spec.unwrap().init_containers).unwrap();
    assert_eq!(init[1]["resources"]["limits"]["cpu"], "2");
    let plain = json!({"spec": {"initContainers": [{"name": "setup", "resources": {"limits": {"cpu": "2"}}}]}});
    let (msg, _) = invalid(
        pods.patch_resize("web", &pp, &Patch::Strategic(plain))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"web\" is invalid: spec: Forbidden: resources for non-sidecar init containers are immutable"
    );
}

/// validation.go `ValidatePodResize`: static (mirror) pods and Windows pods cannot be resized —
/// `field.Forbidden(field.NewPath(""), …)`, so the message has an empty field (": Forbidden: …")
/// and the cause no field; `isPodResizeRequestSupported`: a running container without
/// `status.containerStatuses[].resources` is on a kubelet that cannot resize (KEP "Version Skew").
#[tokio::test]
async fn static_windows_and_old_kubelet_pods_cannot_be_resized() {
    let (s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    let pp = PatchParams::default();
    let mut mirror: Value = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "static", "namespace": NS,
                     "annotations": {"kubernetes.io/config.mirror": "abc"}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": burstable()}]},
        "status": {"qosClass": "Burstable"}});
    s.put(mirror.clone()).unwrap();
    let (msg, causes) = invalid(
        pods.patch_resize("static", &pp, &Patch::Strategic(cpu_limit("2")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"static\" is invalid: : Forbidden: static pods cannot be resized"
    );
    assert_eq!(
        causes,
        [(
            "FieldValueForbidden".to_string(),
            String::new(),
            "Forbidden: static pods cannot be resized".to_string()
        )]
    );
    mirror["metadata"]["name"] = "win".into();
    mirror["metadata"]["annotations"] = json!({});
    mirror["spec"]["os"] = json!({"name": "windows"});
    s.put(mirror.clone()).unwrap();
    let (msg, _) = invalid(
        pods.patch_resize("win", &pp, &Patch::Strategic(cpu_limit("2")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"win\" is invalid: : Forbidden: windows pods cannot be resized"
    );
    // A running container that reports no resources: an old kubelet.
    mirror["metadata"]["name"] = "old".into();
    mirror["spec"].as_object_mut().unwrap().remove("os");
    mirror["status"]["containerStatuses"] = json!([{"name": "app", "image": "busybox",
        "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]);
    s.put(mirror.clone()).unwrap();
    let (msg, _) = invalid(
        pods.patch_resize("old", &pp, &Patch::Strategic(cpu_limit("2")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Pod \"old\" is invalid: spec: Forbidden: Pod running on node without support for resize"
    );
    // The same pod once its kubelet reports resources can be resized.
    mirror["status"]["containerStatuses"][0]["resources"] = burstable();
    s.put(mirror).unwrap();
    pods.patch_resize("old", &pp, &Patch::Strategic(cpu_limit("2")))
        .await
        .unwrap();
}

/// 404 for a missing pod (`pods "x" not found`), 409 Conflict for a stale resourceVersion in the
/// request (the generic registry's optimistic lock, which the resize update goes through).
#[tokio::test]
async fn resize_of_a_missing_pod_is_404_and_a_stale_one_409() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    let e = api_error(
        pods.patch_resize(
            "nope",
            &PatchParams::default(),
            &Patch::Strategic(cpu_limit("1")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "pods \"nope\" not found")
    );
    let e = api_error(pods.get_resize("nope").await.unwrap_err());
    assert_eq!(e.code, 404);
    let old = create_pod(&pods, "web", burstable()).await;
    pods.patch_resize(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(cpu_limit("900m")),
    )
    .await
    .unwrap();
    let e = api_error(
        pods.replace_resize("web", &PostParams::default(), &old)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on pods \"web\": the object has been modified; please \
         apply your changes to the latest version and try again"
    );
    // A patch carrying the stale resourceVersion as precondition conflicts too, before any
    // validation (`Store.Update` checks the resourceVersion before `BeforeUpdate`): this merge
    // patch also drops the memory limit, which alone would be a 422.
    let mut stale = cpu_limit("800m");
    stale["metadata"] = json!({"resourceVersion": old.resource_version().unwrap()});
    let e = api_error(
        pods.patch_resize("web", &PatchParams::default(), &Patch::Merge(stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
}

/// validation.go `ValidatePodUpdate` (`updatablePodSpecFields`): since resources moved to
/// `/resize` (KEP "Validation": "Resource fields remain immutable via pod update"), a plain pod
/// update that changes them is Forbidden on `spec`.
#[tokio::test]
async fn a_plain_pod_update_may_not_change_resources() {
    let (_s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    create_pod(&pods, "web", burstable()).await;
    let (msg, causes) = invalid(
        pods.patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(cpu_limit("2")),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.starts_with(
            "Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields other \
             than `spec.containers[*].image`,`spec.initContainers[*].image`,\
             `spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing \
             tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it \
             was previously negative)\n"
        ),
        "{msg}"
    );
    assert_eq!(
        (causes[0].0.as_str(), causes[0].1.as_str()),
        ("FieldValueForbidden", "spec")
    );
    // Other updates still pass.
    pods.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
}

/// The kubelet's side (KEP "Resize Status"; types.go `PodResizePending`/`PodResizeInProgress`;
/// allocation_manager.go `handlePodResourcesResize`): a test plays it; each outcome is one
/// MODIFIED event; the conditions carry the generation they answer.
#[tokio::test]
async fn the_kubelet_outcome_of_a_resize_is_reported_in_the_status() {
    let (s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c, NS);
    create_pod(&pods, "web", burstable()).await;
    let resized = pods
        .patch_resize(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(cpu_limit("500m")),
        )
        .await
        .unwrap();
    let generation = resized.metadata.generation.unwrap();
    let mut stream = pods
        .watch(&watch_params(), &resized.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let condition = |p: &Pod, kind: &str| {
        p.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .cloned()
    };
    // Nothing happens unless the test says so.
    assert!(condition(&pods.get("web").await.unwrap(), "PodResizePending").is_none());

    s.set_resize_outcome(
        NS,
        "web",
        ResizeOutcome::Deferred("Node didn't have enough resource: cpu".into()),
    )
    .unwrap();
    let WatchEvent::Modified(p) = next_event(&mut stream).await else {
        panic!("MODIFIED expected")
    };
    let pending = condition(&p, "PodResizePending").unwrap();
    assert_eq!(
        (
            pending.status.as_str(),
            pending.reason.as_deref(),
            pending.observed_generation
        ),
        ("True", Some("Deferred"), Some(generation))
    );
    assert_eq!(
        pending.message.as_deref(),
        Some("Node didn't have enough resource: cpu")
    );

    s.set_resize_outcome(
        NS,
        "web",
        ResizeOutcome::Infeasible("Node didn't have enough capacity".into()),
    )
    .unwrap();
    let WatchEvent::Modified(p) = next_event(&mut stream).await else {
        panic!("MODIFIED expected")
    };
    assert_eq!(
        condition(&p, "PodResizePending").unwrap().reason.as_deref(),
        Some("Infeasible")
    );

    s.set_resize_outcome(NS, "web", ResizeOutcome::InProgress)
        .unwrap();
    let WatchEvent::Modified(p) = next_event(&mut stream).await else {
        panic!("MODIFIED expected")
    };
    assert!(condition(&p, "PodResizePending").is_none());
    assert_eq!(condition(&p, "PodResizeInProgress").unwrap().status, "True");
    let cs = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        serde_json::to_value(&cs.allocated_resources).unwrap(),
        json!({"cpu": "250m", "memory": "64Mi"})
    );
    assert!(cs.resources.is_none(), "not actuated yet");

    s.set_resize_outcome(NS, "web", ResizeOutcome::Applied)
        .unwrap();
    let WatchEvent::Modified(p) = next_event(&mut stream).await else {
        panic!("MODIFIED expected")
    };
    assert!(condition(&p, "PodResizeInProgress").is_none());
    let status = p.status.unwrap();
    assert_eq!(status.observed_generation, Some(generation));
    let actual = serde_json::to_value(&status.container_statuses.unwrap()[0].resources).unwrap();
    assert_eq!(actual["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
}

/// `pkg/registry/core/rest/storage_core.go` registers `pods/resize` only with the
/// `InPlacePodVerticalScaling` gate (on by default from 1.33): without it the path is 404 and
/// discovery does not list it; the real discovery document lists it with verbs get/patch/update.
#[tokio::test]
async fn the_resize_subresource_can_be_absent_like_on_an_older_cluster() {
    let (s, c) = setup().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    create_pod(&pods, "web", burstable()).await;
    let listed = |list: &k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList| {
        list.resources
            .iter()
            .find(|r| r.name == "pods/resize")
            .cloned()
    };
    let r = listed(&c.list_core_api_resources("v1").await.unwrap()).unwrap();
    assert_eq!((r.kind.as_str(), r.namespaced), ("Pod", true));
    assert_eq!(r.verbs, ["get", "patch", "update"]);

    s.serve_pod_resize(false);
    assert!(listed(&c.list_core_api_resources("v1").await.unwrap()).is_none());
    let e = api_error(
        pods.patch_resize(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(cpu_limit("2")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "the server could not find the requested resource")
    );
    assert_eq!(
        api_error(pods.get_resize("web").await.unwrap_err()).code,
        404
    );
    s.serve_pod_resize(true);
    pods.patch_resize(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(cpu_limit("2")),
    )
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// {deployments,statefulsets,replicasets}/{name}/scale
// ---------------------------------------------------------------------------------------------

fn workload(kind: &str, name: &str, replicas: Option<i32>) -> Value {
    let mut o = json!({"apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": name},
                              "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "edge"]}]},
                 "template": {"metadata": {"labels": {"app": name, "tier": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}});
    if let Some(r) = replicas {
        o["spec"]["replicas"] = r.into();
    }
    if kind == "StatefulSet" {
        o["spec"]["serviceName"] = name.into();
    }
    o
}

/// storage.go `scaleFromDeployment` (and its StatefulSet/ReplicaSet twins): the Scale carries the
/// parent's name, namespace, uid, resourceVersion and creationTimestamp, `spec.replicas`,
/// `status.replicas` and the selector as `LabelSelectorAsSelector(..).String()`; types.go:
/// `spec.replicas` is omitempty. Deployments default to 1 replica (`SetDefaults_Deployment`).
#[tokio::test]
async fn get_scale_is_built_from_the_parent_for_each_workload_kind() {
    let (s, c) = setup().await;
    async fn check<K>(s: &ApiServer, api: Api<K>, kind: &str)
    where
        K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
    {
        let created = api
            .create(&PostParams::default(), &from(workload(kind, "w", None)))
            .await
            .unwrap();
        let mut stored = s
            .get(&format!("{}.apps", K::plural(&())), Some(NS), "w")
            .unwrap();
        assert_eq!(stored["spec"]["replicas"], 1, "{kind} defaulted");
        stored["status"] = json!({"replicas": 3});
        s.put(stored).unwrap();
        let scale = api.get_scale("w").await.unwrap();
        let m = &scale.metadata;
        assert_eq!(m.name.as_deref(), Some("w"));
        assert_eq!(m.namespace.as_deref(), Some(NS));
        assert_eq!(m.uid, created.meta().uid);
        assert_eq!(m.creation_timestamp, created.meta().creation_timestamp);
        assert_eq!(
            m.resource_version,
            api.get("w").await.unwrap().resource_version()
        );
        assert_eq!(m.generation, None);
        assert_eq!(scale.spec.unwrap().replicas, Some(1));
        let st = scale.status.unwrap();
        assert_eq!(st.replicas, 3);
        assert_eq!(st.selector.as_deref(), Some("app=w,tier in (edge,web)"));
        let e = api_error(api.get_scale("nope").await.unwrap_err());
        assert_eq!(
            (e.code, e.message),
            (404, format!("{}.apps \"nope\" not found", K::plural(&())))
        );
    }
    check::<Deployment>(&s, Api::namespaced(c.clone(), NS), "Deployment").await;
    check::<StatefulSet>(&s, Api::namespaced(c.clone(), NS), "StatefulSet").await;
    check::<ReplicaSet>(&s, Api::namespaced(c.clone(), NS), "ReplicaSet").await;
}

/// storage.go `scaleUpdatedObjectInfo`: only `spec.replicas` moves to the parent; the parent's
/// strategy bumps `metadata.generation` for the spec change; one MODIFIED event of the parent
/// with the new resourceVersion; scaling to 0 leaves `spec: {}` in the Scale (omitempty).
#[tokio::test]
async fn patch_scale_to_zero_and_back_writes_the_parents_replicas() {
    let (_s, c) = setup().await;
    let deploys: Api<Deployment> = Api::namespaced(c, NS);
    let created = deploys
        .create(
            &PostParams::default(),
            &from(workload("Deployment", "web", Some(3))),
        )
        .await
        .unwrap();
    let mut stream = deploys
        .watch(&watch_params(), &created.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let pp = PatchParams::default();
    let zero = deploys
        .patch_scale("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .unwrap();
    assert_eq!(zero.spec.as_ref().unwrap().replicas, None, "0 is omitted");
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.spec.replicas, Some(0));
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(zero.metadata.resource_version, d.resource_version());
    match next_event(&mut stream).await {
        WatchEvent::Modified(m) => {
            assert_eq!(m.resource_version(), d.resource_version());
            assert_eq!(m.spec.replicas, Some(0));
        }
        other => panic!("{other:?}"),
    }
    let back = deploys
        .patch_scale(
            "web",
            &pp,
            &Patch::Strategic(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(back.spec.unwrap().replicas, Some(3));
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.metadata.generation, Some(3));
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Modified(_)
    ));
    // JSON patch too, and a no-op write keeps the resourceVersion.
    let same = deploys
        .patch_scale(
            "web",
            &pp,
            &Patch::Json::<Value>(from(
                json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
            )),
        )
        .await
        .unwrap();
    assert_eq!(same.metadata.resource_version, d.resource_version());
}

/// storage.go: the Scale's resourceVersion is the parent's precondition (409 Conflict on
/// `deployments.apps` when stale; none when empty), a UID in the Scale must match (409 on
/// `deployments/scale`); autoscaling validation `ValidateScale`: `spec.replicas` ≥ 0, else 422 on
/// `Scale.autoscaling`; a missing parent is the parent's 404.
#[tokio::test]
async fn replace_scale_preconditions_and_validation() {
    let (_s, c) = setup().await;
    let deploys: Api<Deployment> = Api::namespaced(c, NS);
    deploys
        .create(
            &PostParams::default(),
            &from(workload("Deployment", "web", Some(2))),
        )
        .await
        .unwrap();
    let pp = PostParams::default();
    let scale = deploys.get_scale("web").await.unwrap();
    let mut five = scale.clone();
    five.spec.as_mut().unwrap().replicas = Some(5);
    let done = deploys.replace_scale("web", &pp, &five).await.unwrap();
    assert_eq!(done.spec.unwrap().replicas, Some(5));
    // The same (now stale) Scale again.
    let e = api_error(deploys.replace_scale("web", &pp, &five).await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (
            409,
            "Conflict",
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been \
             modified; please apply your changes to the latest version and try again"
        )
    );
    // No resourceVersion: unconditional.
    let mut blind = five.clone();
    blind.metadata.resource_version = None;
    blind.spec.as_mut().unwrap().replicas = Some(1);
    deploys.replace_scale("web", &pp, &blind).await.unwrap();
    // A foreign UID.
    let mut foreign = blind.clone();
    foreign.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let e = api_error(
        deploys
            .replace_scale("web", &pp, &foreign)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert!(
        e.message.starts_with(
            "Operation cannot be fulfilled on deployments/scale.apps \"web\": Precondition \
             failed: UID in precondition: 00000000-0000-0000-0000-000000000000, UID in object meta: "
        ),
        "{}",
        e.message
    );
    // Negative replicas.
    let (msg, causes) = invalid(
        deploys
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": -1}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "Scale.autoscaling \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater \
         than or equal to 0"
    );
    assert_eq!(
        causes,
        [(
            "FieldValueInvalid".to_string(),
            "spec.replicas".to_string(),
            "Invalid value: -1: must be greater than or equal to 0".to_string()
        )]
    );
    assert_eq!(deploys.get("web").await.unwrap().spec.replicas, Some(1));
    // A missing parent.
    let e = api_error(
        deploys
            .patch_scale(
                "nope",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "deployments.apps \"nope\" not found")
    );
    let e = api_error(
        deploys
            .replace_scale("nope", &pp, &blind)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

/// Discovery lists `deployments/scale`, `statefulsets/scale`, `replicasets/scale` as kube-apiserver
/// does: kind Scale of `autoscaling/v1`, verbs get/patch/update.
#[tokio::test]
async fn discovery_lists_the_scale_subresources() {
    let (_s, c) = setup().await;
    let list = c.list_api_group_resources("apps/v1").await.unwrap();
    for plural in ["deployments", "statefulsets", "replicasets"] {
        let r = list
            .resources
            .iter()
            .find(|r| r.name == format!("{plural}/scale"))
            .unwrap_or_else(|| panic!("{plural}/scale"));
        assert_eq!(
            (r.kind.as_str(), r.group.as_deref(), r.version.as_deref()),
            ("Scale", Some("autoscaling"), Some("v1"))
        );
        assert_eq!(r.verbs, ["get", "patch", "update"]);
    }
}

/// Property: whatever sequence of scale writes (PATCH and PUT, valid, negative, stale), a read
/// afterwards — of the Scale and of the parent — returns the replicas of the last accepted one.
#[tokio::test]
async fn any_sequence_of_scale_writes_reads_back_the_last_accepted_replicas() {
    let (_s, c) = setup().await;
    let sets: Api<StatefulSet> = Api::namespaced(c, NS);
    sets.create(
        &PostParams::default(),
        &from(workload("StatefulSet", "db", Some(2))),
    )
    .await
    .unwrap();
    for seed in [1u64, 7, 42, 1234, 99991] {
        let mut rng = seed;
        let mut next = move |n: u64| {
            // xorshift64: deterministic, so a failure reproduces
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut model = sets
            .get_scale("db")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
            .unwrap_or(0);
        let mut stale = sets.get_scale("db").await.unwrap();
        for _ in 0..12 {
            let want = next(8) as i32 - 2; // -2..=5: some invalid
            let current = sets
                .get_scale("db")
                .await
                .unwrap()
                .metadata
                .resource_version;
            let way = next(3);
            // Accepted iff valid and, for the stale PUT, its resourceVersion is still current.
            let expected = want >= 0 && (way != 2 || stale.metadata.resource_version == current);
            let accepted = match way {
                0 => sets
                    .patch_scale(
                        "db",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"replicas": want}})),
                    )
                    .await
                    .is_ok(),
                1 => {
                    let mut fresh = sets.get_scale("db").await.unwrap();
                    fresh.spec.as_mut().unwrap().replicas = Some(want);
                    stale = fresh.clone();
                    sets.replace_scale("db", &PostParams::default(), &fresh)
                        .await
                        .is_ok()
                }
                _ => {
                    let mut s = stale.clone();
                    s.spec.as_mut().unwrap().replicas = Some(want);
                    sets.replace_scale("db", &PostParams::default(), &s)
                        .await
                        .is_ok()
                }
            };
            assert_eq!(accepted, expected, "seed {seed}: write {way} of {want}");
            if accepted {
                model = want;
            }
            let scale: Scale = sets.get_scale("db").await.unwrap();
            assert_eq!(
                scale.spec.unwrap().replicas.unwrap_or(0),
                model,
                "seed {seed}"
            );
            assert_eq!(
                sets.get("db").await.unwrap().spec.replicas,
                Some(model),
                "seed {seed}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------------

/// A ServiceAccount `apps/robot` bound to `rules`, and a client with its token.
async fn robot_with(s: &ApiServer, admin: &Client, rules: Value) -> Client {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    if sas.get_opt("robot").await.unwrap().is_none() {
        sas.create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "robot"}})),
        )
        .await
        .unwrap();
    }
    s.put(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "robot", "namespace": NS}, "rules": rules}),
    )
    .unwrap();
    s.put(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "robot", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "robot"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": NS}]}),
    )
    .unwrap();
    let token = s.service_account_token(NS, "robot", None);
    Client::try_from(s.config_with_token(&token).unwrap()).unwrap()
}

fn forbidden(e: kube::Error) -> String {
    let s = api_error(e);
    assert_eq!(
        (s.code, s.reason.as_str()),
        (403, "Forbidden"),
        "{}",
        s.message
    );
    s.message
}

/// The degradation ladder's Role (issue #27): `pods/resize` patch, `{deployments,statefulsets,
/// replicasets}/scale` get/patch. rbac.go `RuleAllows` / evaluation_helpers.go `ResourceMatches`
/// match `resource/subresource` exactly (or `*/subresource`): these grant nothing on `pods` or
/// `deployments` themselves, nor verbs not listed (`update` = PUT, `get` on `pods/resize`).
#[tokio::test]
async fn the_controllers_role_allows_resize_and_scale_and_nothing_more() {
    let (s, admin) = setup().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    create_pod(&pods, "web", burstable()).await;
    for (kind, name) in [
        ("Deployment", "d"),
        ("StatefulSet", "ss"),
        ("ReplicaSet", "rs"),
    ] {
        s.put(workload(kind, name, Some(2))).unwrap();
    }
    let robot = robot_with(
        &s,
        &admin,
        json!([{"apiGroups": [""], "resources": ["pods/resize"], "verbs": ["patch"]},
               {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale",
                "replicasets/scale"], "verbs": ["get", "patch"]}]),
    )
    .await;
    let rpods: Api<Pod> = Api::namespaced(robot.clone(), NS);
    let pp = PatchParams::default();
    rpods
        .patch_resize("web", &pp, &Patch::Strategic(cpu_limit("500m")))
        .await
        .unwrap();
    let zero = Patch::Merge(json!({"spec": {"replicas": 0}}));
    let deploys: Api<Deployment> = Api::namespaced(robot.clone(), NS);
    let sets: Api<StatefulSet> = Api::namespaced(robot.clone(), NS);
    let rsets: Api<ReplicaSet> = Api::namespaced(robot.clone(), NS);
    assert_eq!(
        deploys.get_scale("d").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );
    deploys.patch_scale("d", &pp, &zero).await.unwrap();
    sets.get_scale("ss").await.unwrap();
    sets.patch_scale("ss", &pp, &zero).await.unwrap();
    rsets.get_scale("rs").await.unwrap();
    rsets.patch_scale("rs", &pp, &zero).await.unwrap();

    // responsewriters.Forbidden: `<resource>.<group> "<name>" is forbidden: User … cannot <verb>
    // resource "<resource>/<subresource>" in API group "<group>" in the namespace "<ns>"`.
    let sa = "system:serviceaccount:apps:robot";
    let scale = deploys.get_scale("d").await.unwrap();
    assert_eq!(
        forbidden(
            deploys
                .replace_scale("d", &PostParams::default(), &scale)
                .await
                .unwrap_err()
        ),
        format!(
            "deployments.apps \"d\" is forbidden: User \"{sa}\" cannot update resource \
                 \"deployments/scale\" in API group \"apps\" in the namespace \"apps\""
        )
    );
    assert_eq!(
        forbidden(rpods.get_resize("web").await.unwrap_err()),
        format!(
            "pods \"web\" is forbidden: User \"{sa}\" cannot get resource \"pods/resize\" in \
                 API group \"\" in the namespace \"apps\""
        )
    );
    assert_eq!(
        forbidden(
            rpods
                .patch("web", &pp, &Patch::Merge(json!({})))
                .await
                .unwrap_err()
        ),
        format!(
            "pods \"web\" is forbidden: User \"{sa}\" cannot patch resource \"pods\" in API \
                 group \"\" in the namespace \"apps\""
        )
    );
    forbidden(deploys.patch("d", &pp, &zero).await.unwrap_err());
    forbidden(
        rpods
            .patch_status("web", &pp, &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    let status = api_error(deploys.get("d").await.unwrap_err());
    assert_eq!(status.code, 403);
    let details = status.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("d", "apps", "deployments")
    );
}

/// evaluation_helpers.go `ResourceMatches`: a rule for `pods` (even with every verb) does not
/// grant `pods/resize`; `*/scale` grants every resource's scale subresource.
#[tokio::test]
async fn a_rule_for_the_resource_does_not_grant_its_subresources() {
    let (s, admin) = setup().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    create_pod(&pods, "web", burstable()).await;
    s.put(workload("Deployment", "d", Some(1))).unwrap();
    let robot = robot_with(
        &s,
        &admin,
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
               {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}]),
    )
    .await;
    let rpods: Api<Pod> = Api::namespaced(robot.clone(), NS);
    let deploys: Api<Deployment> = Api::namespaced(robot.clone(), NS);
    let pp = PatchParams::default();
    forbidden(
        rpods
            .patch_resize("web", &pp, &Patch::Strategic(cpu_limit("500m")))
            .await
            .unwrap_err(),
    );
    forbidden(deploys.get_scale("d").await.unwrap_err());
    // The plain resources are allowed.
    rpods.get("web").await.unwrap();
    deploys.get("d").await.unwrap();

    let robot = robot_with(
        &s,
        &admin,
        json!([{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get", "patch"]}]),
    )
    .await;
    let deploys: Api<Deployment> = Api::namespaced(robot, NS);
    deploys
        .patch_scale("d", &pp, &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .unwrap();
    forbidden(deploys.get("d").await.unwrap_err());
}
