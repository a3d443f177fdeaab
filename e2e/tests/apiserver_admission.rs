//! What the double checks and changes before it stores, through kube's client: CRD admission from
//! the generated CRD YAML (structural pruning, defaults, OpenAPI validation, the CRD's own CEL
//! rules), CRDs installed and removed at runtime, graceful pod deletion, a create that carries a
//! resourceVersion, and the Status reasons and messages of kube-apiserver.
//!
//! Sources (kubernetes/kubernetes): apiextensions-apiserver `pkg/apiserver/schema/pruning` and
//! `.../defaulting`, the CRD documentation ("Defaulting and Nullable"), `pkg/registry/core/pod/
//! strategy.go` (`CheckGracefulDelete`), `staging/src/k8s.io/apiserver/pkg/registry/rest/delete.go`
//! (`BeforeDelete`), `staging/src/k8s.io/apiserver/pkg/storage/errors.go`
//! (`ErrResourceVersionSetOnCreate`), `staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go`.

use std::time::{Duration, Instant};

use edgewatt_crds::{EdgeWorkload, EnergyPolicy};
use edgewatt_e2e::apiserver::{parse_crd, ApiServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams};
use kube::discovery::ApiResource;
use kube::{Api, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

fn from<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

fn status(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn raw(s: &ApiServer, plural: &str, ns: Option<&str>, name: &str) -> Value {
    s.get(plural, ns, name)
        .unwrap_or_else(|| panic!("{plural} {name} not stored"))
}

/// The EnergyPolicy CRD from `crds/edgewatt.io_energypolicies.yaml`: its CEL rules refuse, its
/// defaults fill, unknown fields are pruned, nulls of non-nullable fields dropped.
#[tokio::test]
async fn energy_policy_admission_comes_from_the_generated_crd() {
    let s = ApiServer::start().await.unwrap();
    let eps = Api::<DynamicObject>::all_with(
        s.client().unwrap(),
        &ApiResource::erase::<EnergyPolicy>(&()),
    );
    let obj = |spec: Value| -> DynamicObject {
        from(
            json!({"apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
            "metadata": {"name": "p"}, "spec": spec}),
        )
    };
    // CEL: x-kubernetes-validations of spec.targets and of spec (with its fieldPath)
    let (code, reason, msg) = status(
        eps.create(
            &PostParams::default(),
            &obj(json!({"targets": {}, "starvation": {"batteryBelowPercent": 20}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        msg,
        "EnergyPolicy.edgewatt.io \"p\" is invalid: spec.targets: Invalid value: \"object\": \
         targets needs nodeSelector, edgeDeviceSelector or both"
    );
    let (_, _, msg) = status(
        eps.create(
            &PostParams::default(),
            &obj(json!({"targets": {"nodeSelector": {}},
                "starvation": {"batteryBelowPercent": 30}, "recovery": {"batteryAbovePercent": 25}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.contains("spec.recovery.batteryAbovePercent: Invalid value")
            && msg.contains("(hysteresis)"),
        "{msg}"
    );
    // OpenAPI: types and enums
    let (_, _, msg) = status(
        eps.create(
            &PostParams::default(),
            &obj(
                json!({"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20},
                "action": {"mode": "Panic", "maxConcurrent": "two"}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.contains("spec.action.mode: Unsupported value: \"Panic\""),
        "{msg}"
    );
    assert!(
        msg.contains("spec.action.maxConcurrent: Invalid value: \"string\": spec.action.maxConcurrent in body must be of type integer: \"string\""),
        "{msg}"
    );
    // accepted: defaulted, pruned, nulls dropped
    let created = eps
        .create(
            &PostParams::default(),
            &obj(json!({"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20},
                "bogus": {"x": 1}, "action": {"mode": "Migrate", "typo": true, "maxPerHour": null}})),
        )
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert!(spec.get("bogus").is_none(), "unknown field pruned: {spec}");
    assert!(spec["action"].get("typo").is_none(), "{spec}");
    assert_eq!(spec["action"]["maxConcurrent"], 2, "schema default");
    assert_eq!(
        spec["action"]["maxPerHour"], 20,
        "null dropped, then defaulted"
    );
    assert_eq!(spec["action"]["mode"], "Migrate");
    assert_eq!(raw(&s, "energypolicies", None, "p")["spec"], *spec);
}

/// A CRD created through the API serves its resource with its schema; deleting it takes the
/// resource and its objects away (404, not in discovery).
#[tokio::test]
async fn a_crd_created_at_runtime_is_served_validated_and_removed() {
    let s = ApiServer::start().await.unwrap();
    let client = s.client().unwrap();
    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::erase::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(&()),
    );
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"],
                        "x-kubernetes-validations": [{"rule": "self.size <= self.max", "message": "size above max"}],
                        "properties": {"size": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "default": 10},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}}}]}});
    let created = crds
        .create(&PostParams::default(), &from(crd))
        .await
        .unwrap();
    let conditions = created.data["status"]["conditions"].to_string();
    assert!(conditions.contains("Established"), "{conditions}");
    let ar = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &ar);
    let w = |spec: Value| -> DynamicObject {
        from(
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}),
        )
    };
    let (code, _, msg) = status(
        widgets
            .create(&PostParams::default(), &w(json!({"size": 11})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        msg.contains("spec: Invalid value: \"object\": size above max"),
        "{msg}"
    );
    let (_, _, msg) = status(
        widgets
            .create(&PostParams::default(), &w(json!({"max": 3})))
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("spec.size: Required value"), "{msg}");
    let ok = widgets
        .create(
            &PostParams::default(),
            &w(json!({"size": 3, "extra": {"kept": {"deep": true}}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.data["spec"]["max"], 10);
    assert_eq!(
        ok.data["spec"]["extra"]["kept"]["deep"], true,
        "preserve-unknown-fields"
    );
    let groups = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(groups.groups().any(|g| g.name() == "example.com"));

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let (code, reason, _) = status(widgets.get("w").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let groups = kube::Discovery::new(client).run().await.unwrap();
    assert!(!groups.groups().any(|g| g.name() == "example.com"));
    assert!(s.get("widgets.example.com", Some("default"), "w").is_none());
}

/// `ApiServer::unregister` of a CRD-served resource deletes its CRD (a cluster without Flotta).
#[tokio::test]
async fn unregister_deletes_the_crd() {
    let s = ApiServer::start().await.unwrap();
    assert!(s
        .get(
            "customresourcedefinitions",
            None,
            "edgeworkloads.management.project-flotta.io"
        )
        .is_some());
    s.unregister("edgeworkloads.management.project-flotta.io");
    assert!(s
        .get(
            "customresourcedefinitions",
            None,
            "edgeworkloads.management.project-flotta.io"
        )
        .is_none());
    let wls: Api<EdgeWorkload> = Api::namespaced(s.client().unwrap(), "default");
    assert_eq!(
        status(wls.list(&ListParams::default()).await.unwrap_err()).0,
        404
    );
    // installing it again serves it again
    s.put(
        parse_crd(include_str!(
            "../../crds/flotta/management.project-flotta.io_edgeworkloads.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    wls.list(&ListParams::default()).await.unwrap();
}

fn pod(name: &str, node: Option<&str>, grace: Option<i64>) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
    if let Some(n) = node {
        spec["nodeName"] = n.into();
    }
    if let Some(g) = grace {
        spec["terminationGracePeriodSeconds"] = g.into();
    }
    from(json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec}))
}

/// A deleted or evicted pod stays Terminating on its node for its grace period, then goes; an
/// unscheduled pod or `gracePeriodSeconds: 0` goes at once; a second delete only shortens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_deletion_keeps_a_pod_terminating_for_its_grace_period() {
    let s = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(s.client().unwrap());
    let created = pods
        .create(&PostParams::default(), &pod("defaulted", None, None))
        .await
        .unwrap();
    assert_eq!(
        created.spec.unwrap().termination_grace_period_seconds,
        Some(30),
        "the apiserver's pod default"
    );
    pods.create(&PostParams::default(), &pod("g2", Some("n1"), Some(2)))
        .await
        .unwrap();
    let mut events = pods
        .watch(&WatchParams::default().fields("metadata.name=g2"), "0")
        .await
        .unwrap()
        .boxed();
    let started = Instant::now();
    let r = pods.delete("g2", &DeleteParams::default()).await.unwrap();
    let terminating = r
        .left()
        .expect("the pod itself comes back while it terminates");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(2));
    assert_eq!(terminating.spec.unwrap().node_name.as_deref(), Some("n1"));
    assert!(
        pods.get("g2").await.is_ok(),
        "still there during its grace period"
    );
    let mut deleted_after = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(6), events.next())
        .await
        .expect("DELETED within the grace period + slack")
    {
        if let WatchEvent::Deleted(_) = ev.unwrap() {
            deleted_after = Some(started.elapsed());
            break;
        }
    }
    let after = deleted_after.expect("a DELETED event");
    assert!(after >= Duration::from_millis(1900), "gone after {after:?}");
    assert_eq!(status(pods.get("g2").await.unwrap_err()).1, "NotFound");

    // unscheduled: immediately; explicit 0: immediately
    pods.create(&PostParams::default(), &pod("pending", None, Some(30)))
        .await
        .unwrap();
    assert!(pods
        .delete("pending", &DeleteParams::default())
        .await
        .unwrap()
        .is_left());
    assert!(pods.get("pending").await.is_err());
    pods.create(&PostParams::default(), &pod("now", Some("n1"), Some(30)))
        .await
        .unwrap();
    pods.delete("now", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(pods.get("now").await.is_err());

    // eviction is a graceful delete too; a later delete may only shorten the period
    pods.create(&PostParams::default(), &pod("ev", Some("n1"), Some(60)))
        .await
        .unwrap();
    pods.evict("ev", &Default::default()).await.unwrap();
    let p = pods.get("ev").await.unwrap();
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(60));
    pods.delete("ev", &DeleteParams::default().grace_period(120))
        .await
        .unwrap();
    assert_eq!(
        pods.get("ev")
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(60),
        "never extended"
    );
    pods.delete("ev", &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    assert_eq!(
        pods.get("ev")
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(1)
    );
    let gone = Instant::now() + Duration::from_secs(5);
    while pods.get("ev").await.is_ok() {
        assert!(Instant::now() < gone, "shortened deletion did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Create with `metadata.resourceVersion` is refused by the storage layer (500, no reason); the
/// standard reasons carry kube-apiserver's messages.
#[tokio::test]
async fn create_with_resource_version_and_standard_reasons() {
    let s = ApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(s.client().unwrap());
    let cm: ConfigMap = from(json!({"metadata": {"name": "a"}, "data": {"k": "v"}}));
    let stored = cms.create(&PostParams::default(), &cm).await.unwrap();
    // re-creating what was read (resourceVersion still set): the classic mistake
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let (code, reason, msg) = status(
        cms.create(&PostParams::default(), &stored)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (
            500,
            "",
            "resourceVersion should not be set on objects to be created"
        )
    );
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let (code, reason, msg) = status(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (409, "AlreadyExists", "configmaps \"a\" already exists")
    );
    let (code, reason, msg) = status(cms.get("nope").await.unwrap_err());
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );
    let mut stale = stored.clone();
    stale.data = Some([("k".to_string(), "w".to_string())].into());
    let (code, reason, msg) = status(
        cms.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        msg,
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    let current = cms.get("a").await.unwrap();
    assert_ne!(current.resource_version(), stored.resource_version());
}
