//! CRUD, status, patch, selectors, finalizers, admission and fault hooks of the API server
//! double, all through a real `kube::Client` over HTTP.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgewatt_crds::{EdgeDevice, EdgeWorkload, EnergyPolicy};
use edgewatt_e2e::apiserver::{ApiServer, ResourceDef};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event as NewEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

fn err_code(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn from<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

/// Create, get, list, replace (label change), delete; checks the server-side metadata.
async fn crud<K>(api: Api<K>, obj: Value)
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let obj: K = from(obj);
    let name = obj.name_any();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(created.meta().uid.is_some(), "uid for {name}");
    assert!(created.meta().creation_timestamp.is_some());
    let rv1 = created.resource_version().unwrap();
    let got = api.get(&name).await.unwrap();
    assert_eq!(got.resource_version(), Some(rv1.clone()));
    let list = api.list(&ListParams::default()).await.unwrap();
    assert!(list.items.iter().any(|o| o.name_any() == name));
    let mut changed = got.clone();
    changed
        .meta_mut()
        .labels
        .get_or_insert_with(Default::default)
        .insert("changed".into(), "yes".into());
    let replaced = api
        .replace(&name, &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_ne!(replaced.resource_version(), Some(rv1));
    assert_eq!(replaced.labels()["changed"], "yes");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let (code, reason) = err_code(&api.get(&name).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn crud_for_every_served_resource() {
    let s = ApiServer::start().await.unwrap();
    let c = s.client().unwrap();
    crud::<Namespace>(Api::all(c.clone()), json!({"metadata": {"name": "edge"}})).await;
    crud::<Node>(
        Api::all(c.clone()),
        json!({"metadata": {"name": "n1"}, "spec": {}}),
    )
    .await;
    crud::<Pod>(
        Api::default_namespaced(c.clone()),
        json!({"metadata": {"name": "p1"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    crud::<Event>(
        Api::default_namespaced(c.clone()),
        json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p1"}, "reason": "Test"}),
    )
    .await;
    crud::<NewEvent>(
        Api::default_namespaced(c.clone()),
        json!({"metadata": {"name": "e2"}, "eventTime": "2025-01-01T00:00:00.000000Z", "reason": "Test", "action": "A", "reportingController": "x", "reportingInstance": "y"}),
    )
    .await;
    crud::<Lease>(
        Api::default_namespaced(c.clone()),
        json!({"metadata": {"name": "l1"}, "spec": {"holderIdentity": "a"}}),
    )
    .await;
    crud::<PodDisruptionBudget>(
        Api::default_namespaced(c.clone()),
        json!({"metadata": {"name": "pdb"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .await;
    crud::<EnergyPolicy>(
        Api::all(c.clone()),
        json!({"metadata": {"name": "ep"}, "spec": {"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20.0, "for": "2m"}}}),
    )
    .await;
    crud::<EdgeDevice>(
        Api::default_namespaced(c.clone()),
        json!({"metadata": {"name": "dev1"}, "spec": {"heartbeat": {"periodSeconds": 5}}}),
    )
    .await;
    crud::<EdgeWorkload>(
        Api::default_namespaced(c.clone()),
        json!({"metadata": {"name": "w1"}, "spec": {"device": "dev1", "type": "pod", "pod": {"spec": {"containers": []}}}}),
    )
    .await;
}

#[tokio::test]
async fn create_metadata_and_error_statuses() {
    let s = ApiServer::start().await.unwrap();
    let c = s.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let p: Pod = from(json!({"metadata": {"generateName": "web-"}, "spec": {"containers": []}}));
    let a = pods.create(&PostParams::default(), &p).await.unwrap();
    let b = pods.create(&PostParams::default(), &p).await.unwrap();
    assert!(a.name_any().starts_with("web-") && a.name_any().len() == 9);
    assert_ne!(a.name_any(), b.name_any());
    assert_ne!(a.uid(), b.uid());
    assert_eq!(a.meta().generation, Some(1));
    // The real server resets pod status on create.
    assert_eq!(a.status.unwrap().phase.as_deref(), Some("Pending"));

    let named: Pod = from(json!({"metadata": {"name": "x"}, "spec": {"containers": []}}));
    pods.create(&PostParams::default(), &named).await.unwrap();
    let e = pods
        .create(&PostParams::default(), &named)
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (409, "AlreadyExists".into()));

    let in_missing_ns: Api<Pod> = Api::namespaced(c.clone(), "nope");
    let e = in_missing_ns
        .create(&PostParams::default(), &named)
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (404, "NotFound".into()));

    // Optimistic concurrency: a stale resourceVersion is a 409 Conflict.
    let first = pods.get("x").await.unwrap();
    let mut one = first.clone();
    one.labels_mut().insert("a".into(), "1".into());
    pods.replace("x", &PostParams::default(), &one)
        .await
        .unwrap();
    let mut two = first.clone();
    two.labels_mut().insert("a".into(), "2".into());
    let e = pods
        .replace("x", &PostParams::default(), &two)
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (409, "Conflict".into()));
    if let kube::Error::Api(st) = &e {
        assert!(
            st.message.contains("the object has been modified"),
            "{}",
            st.message
        );
    }

    // Custom resources require a resourceVersion on update (422), built-ins do not.
    let eps: Api<EnergyPolicy> = Api::all(c.clone());
    let ep: EnergyPolicy = from(
        json!({"metadata": {"name": "ep"}, "spec": {"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20.0, "for": "2m"}}}),
    );
    eps.create(&PostParams::default(), &ep).await.unwrap();
    let e = eps
        .replace("ep", &PostParams::default(), &ep)
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (422, "Invalid".into()));
    let mut unconditional = first.clone();
    unconditional.metadata.resource_version = None;
    pods.replace("x", &PostParams::default(), &unconditional)
        .await
        .unwrap();

    // Unknown field selector labels are refused like the real server does.
    let e = pods
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (400, "BadRequest".into()));
}

#[tokio::test]
async fn status_subresource_rules_and_generation() {
    let s = ApiServer::start().await.unwrap();
    let c = s.client().unwrap();
    let eps: Api<EnergyPolicy> = Api::all(c.clone());
    let ep: EnergyPolicy = from(json!({
        "metadata": {"name": "ep"},
        "spec": {"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20.0, "for": "2m"}},
        "status": {"observedGeneration": 7}
    }));
    let created = eps.create(&PostParams::default(), &ep).await.unwrap();
    assert!(created.status.is_none(), "status is ignored on create");
    assert_eq!(created.metadata.generation, Some(1));

    // A status write that also carries a changed spec: only status changes.
    let mut st = created.clone();
    st.spec.starvation.battery_below_percent = Some(5.0);
    st.status = Some(from(json!({"observedGeneration": 1})));
    let after = eps
        .replace_status("ep", &PostParams::default(), &st)
        .await
        .unwrap();
    assert_eq!(after.spec.starvation.battery_below_percent, Some(20.0));
    assert_eq!(after.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "status writes keep generation"
    );

    // A main-resource write ignores status and bumps generation on a spec change.
    let mut main = after.clone();
    main.spec.starvation.battery_below_percent = Some(10.0);
    main.status = None;
    let after2 = eps
        .replace("ep", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(after2.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(after2.metadata.generation, Some(2));

    // A metadata-only change does not bump generation; a no-op keeps the resourceVersion.
    let labelled = eps
        .patch(
            "ep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    let again = eps
        .patch(
            "ep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), labelled.resource_version());

    // Status patch through kube's patch_status.
    let patched = eps
        .patch_status("ep", &PatchParams::default(), &Patch::Merge(json!({"status": {"observedGeneration": 2}, "spec": {"starvation": {"batteryBelowPercent": 1.0}}})))
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().observed_generation, Some(2));
    assert_eq!(patched.spec.starvation.battery_below_percent, Some(10.0));

    // Types without a status subresource have no /status.
    let leases: Api<Lease> = Api::default_namespaced(c);
    let e = leases.get_status("nope").await.unwrap_err();
    assert_eq!(err_code(&e).0, 404);
}

#[tokio::test]
async fn all_patch_types_through_kube() {
    let s = ApiServer::start().await.unwrap();
    let c = s.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let p: Pod = from(
        json!({"metadata": {"name": "p", "finalizers": ["a"]}, "spec": {"containers": [
        {"name": "app", "image": "app:1"}, {"name": "side", "image": "side:1"}]}}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();

    // Strategic merge: containers merge by name.
    let got = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "side", "image": "side:2"}]}})))
        .await
        .unwrap();
    let images: Vec<_> = got
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.image.clone().unwrap())
        .collect();
    assert_eq!(images, ["app:1", "side:2"]);
    assert_eq!(
        got.metadata.finalizers.as_deref(),
        Some(&["a".to_string(), "b".to_string()][..])
    );

    // JSON merge patch: lists are replaced.
    let got = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null, "annotations": {"k": "v"}}})),
        )
        .await
        .unwrap();
    assert!(got.metadata.finalizers.is_none());
    assert_eq!(got.annotations()["k"], "v");

    // JSON patch, including a failing test op (422).
    let got = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::<Value>::Json(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/spec/nodeName", "value": "n1"}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(got.spec.unwrap().node_name.as_deref(), Some("n1"));
    let e = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::<Value>::Json(
                serde_json::from_value(
                    json!([{"op": "test", "path": "/spec/nodeName", "value": "other"}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).0, 422);

    // Server-side apply creates, then merges; fieldManager is required.
    let applied = pods
        .patch(
            "q",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.labels()["a"], "1");
    let applied = pods
        .patch(
            "q",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "labels": {"b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            applied.labels()["a"].as_str(),
            applied.labels()["b"].as_str()
        ),
        ("1", "2")
    );
    let e = pods
        .patch(
            "q",
            &PatchParams::default(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).0, 422);

    // A patch carrying a stale resourceVersion is a conflict.
    let e = pods
        .patch(
            "q",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (409, "Conflict".into()));

    // Custom resources refuse strategic merge (415), accept merge and apply.
    let eps: Api<EnergyPolicy> = Api::all(c);
    let e = eps
        .patch("ep", &PatchParams::default(), &Patch::Strategic(json!({})))
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (415, "UnsupportedMediaType".into()));
    let ep = eps
        .patch(
            "ep",
            &PatchParams::apply("t"),
            &Patch::Apply(json!({"apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy", "metadata": {"name": "ep"}, "spec": {"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20.0, "for": "1m"}}})),
        )
        .await
        .unwrap();
    assert_eq!(ep.spec.starvation.for_, "1m");
}

#[tokio::test]
async fn selectors_and_pagination() {
    let s = ApiServer::start().await.unwrap();
    let c = s.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    for i in 0..7 {
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        let tier = if i < 3 { "front" } else { "back" };
        let p: Pod = from(
            json!({"metadata": {"name": format!("p{i}"), "labels": {"tier": tier}}, "spec": {"nodeName": node, "containers": []}}),
        );
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let names =
        |l: kube::core::ObjectList<Pod>| l.items.iter().map(|p| p.name_any()).collect::<Vec<_>>();
    let on_n1 = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(names(on_n1), ["p0", "p2", "p4", "p6"]);
    let front_not_n1 = pods
        .list(
            &ListParams::default()
                .labels("tier in (front)")
                .fields("spec.nodeName!=n1"),
        )
        .await
        .unwrap();
    assert_eq!(names(front_not_n1), ["p1"]);
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=p3"))
        .await
        .unwrap();
    assert_eq!(names(by_name), ["p3"]);
    let no_tier = pods
        .list(&ListParams::default().labels("!tier"))
        .await
        .unwrap();
    assert!(no_tier.items.is_empty());

    let page1 = pods.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(page1.clone()), ["p0", "p1", "p2"]);
    assert_eq!(page1.metadata.remaining_item_count, Some(4));
    let token = page1.metadata.continue_.clone().unwrap();
    let page2 = pods
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(page2.clone()), ["p3", "p4", "p5"]);
    let page3 = pods
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(page2.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(page3.clone()), ["p6"]);
    assert!(page3.metadata.continue_.is_none());
    assert_eq!(
        page1.metadata.resource_version,
        page3.metadata.resource_version
    );

    // All-namespaces list sees pods of every namespace.
    let ns: Namespace = from(json!({"metadata": {"name": "other"}}));
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let p: Pod = from(json!({"metadata": {"name": "z"}, "spec": {"containers": []}}));
    Api::<Pod>::namespaced(c.clone(), "other")
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
    assert_eq!(
        Api::<Pod>::all(c.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        8
    );
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        7
    );

    // A compacted continue token is 410 Expired.
    s.compact();
    pods.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "late"}, "spec": {"containers": []}})),
    )
    .await
    .unwrap();
    let e = pods
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), (410, "Expired".into()));
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let s = ApiServer::start().await.unwrap();
    let c = s.client().unwrap();
    let devs: Api<EdgeDevice> = Api::default_namespaced(c);
    let d: EdgeDevice = from(
        json!({"metadata": {"name": "d", "finalizers": ["edgewatt.io/migration"]}, "spec": {}}),
    );
    devs.create(&PostParams::default(), &d).await.unwrap();
    devs.delete("d", &DeleteParams::foreground()).await.unwrap();
    let pending = devs.get("d").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    devs.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(err_code(&devs.get("d").await.unwrap_err()).0, 404);

    // Preconditions on delete.
    devs.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "e"}, "spec": {}})),
    )
    .await
    .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..Default::default()
    };
    assert_eq!(err_code(&devs.delete("e", &dp).await.unwrap_err()).0, 409);
}

#[tokio::test]
async fn admission_validator_rejects_and_defaults() {
    let s = ApiServer::start().await.unwrap();
    let schema =
        edgewatt_crds::validation::schema_of(&<EnergyPolicy as kube::CustomResourceExt>::crd())
            .unwrap();
    s.register_validator(
        "energypolicies",
        Arc::new(move |new: &Value, old: Option<&Value>| {
            let defaulted = edgewatt_crds::validation::apply_defaults(&schema, new);
            edgewatt_crds::validation::validate(&schema, &defaulted, old)
                .map(|_| defaulted)
                .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
        }),
    );
    let eps: Api<EnergyPolicy> = Api::all(s.client().unwrap());
    let bad: EnergyPolicy = from(
        json!({"metadata": {"name": "bad"}, "spec": {"targets": {}, "starvation": {"for": "2m"}}}),
    );
    let e = eps.create(&PostParams::default(), &bad).await.unwrap_err();
    let kube::Error::Api(st) = e else { panic!() };
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert!(
        st.message
            .contains("EnergyPolicy.edgewatt.io \"bad\" is invalid"),
        "{}",
        st.message
    );
    assert!(
        st.message.contains("targets needs nodeSelector"),
        "{}",
        st.message
    );
    let good: EnergyPolicy = from(
        json!({"metadata": {"name": "good"}, "spec": {"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20.0, "for": "2m"}}}),
    );
    let created = eps.create(&PostParams::default(), &good).await.unwrap();
    assert_eq!(
        created.spec.action.max_concurrent, 2,
        "defaulted by the schema"
    );
}

#[tokio::test]
async fn discovery_kubeconfig_faults_and_request_log() {
    let s = ApiServer::start().await.unwrap();
    // A client built from the kubeconfig file, like a separately started binary would.
    edgewatt_e2e::apiserver::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let c = Client::try_from(cfg).unwrap();
    let v = c.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");

    let d = kube::Discovery::new(c.clone()).run().await.unwrap();
    let (pods, caps) = d
        .resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "Pod"))
        .unwrap();
    assert_eq!(pods.plural, "pods");
    assert!(caps
        .subresources
        .iter()
        .any(|(r, _)| r.plural == "pods/status" || r.plural == "status"));
    let (ep, caps) = d
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "edgewatt.io",
            "v1alpha1",
            "EnergyPolicy",
        ))
        .unwrap();
    assert_eq!(ep.plural, "energypolicies");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(d
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "management.project-flotta.io",
            "v1alpha1",
            "EdgeWorkload"
        ))
        .is_some());

    // Runtime registration of another kind is one line, and it is served and discovered.
    s.register(ResourceDef::crd(
        "example.com",
        "v1",
        "widgets",
        "Widget",
        true,
        false,
    ));
    let ar = kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<kube::api::DynamicObject> = Api::default_namespaced_with(c.clone(), &ar);
    let w: kube::api::DynamicObject = from(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "size": 3}),
    );
    widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(widgets.get("w").await.unwrap().data["size"], 3);
    assert_eq!(
        s.get("widgets.example.com", Some("default"), "w").unwrap()["size"],
        3
    );

    // Request log: reads only so far after clearing.
    s.clear_requests();
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    pods.list(&ListParams::default()).await.unwrap();
    assert!(s.writes().is_empty());
    pods.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "p"}, "spec": {"containers": []}})),
    )
    .await
    .unwrap();
    let writes = s.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("POST", "/api/v1/namespaces/default/pods")
    );
    assert_eq!(writes[0].content_type.as_deref(), Some("application/json"));

    // Injected 500s, then recovery.
    s.fail_next(2);
    assert_eq!(
        err_code(&pods.get("p").await.unwrap_err()),
        (500, "InternalError".into())
    );
    assert_eq!(err_code(&pods.get("p").await.unwrap_err()).0, 500);
    pods.get("p").await.unwrap();

    // Latency.
    s.set_latency(Duration::from_millis(150));
    let t = Instant::now();
    pods.get("p").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    s.set_latency(Duration::ZERO);

    // Direct store hooks produce objects visible over HTTP.
    let mut pod = s.get("pods", Some("default"), "p").unwrap();
    pod["status"]["phase"] = "Running".into();
    s.put(pod).unwrap();
    assert_eq!(
        pods.get("p")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );
    s.remove("pods", Some("default"), "p").unwrap();
    assert_eq!(err_code(&pods.get("p").await.unwrap_err()).0, 404);
}

/// Fault hook: API priority and fairness rejects with a plain-text 429 and `Retry-After`
/// (kube-apiserver `priority-and-fairness.go` `tooManyRequests`), which kube's client surfaces
/// as an error that carries no `DisruptionBudget` cause — unlike a PDB-refused eviction.
#[tokio::test]
async fn apf_throttling_answers_429_with_retry_after_and_no_status_cause() {
    let s = ApiServer::start().await.unwrap();
    let mut cfg = s.config().unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let cms: Api<Namespace> = Api::all(client.clone());
    s.throttle_next(1, Duration::from_secs(3), true);
    // reads pass while only writes are throttled
    cms.list(&Default::default()).await.unwrap();
    let err = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
        )
        .await
        .unwrap_err();
    match &err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 429, "{err:?}");
            assert!(
                status.message.contains("Too many requests"),
                "{:?}",
                status.message
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    let raw = s.requests();
    assert_eq!(raw.last().unwrap().status, 429);
    // the throttle is used up: the retry goes through
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
    )
    .await
    .unwrap();
    // The raw answer: text/plain body and Retry-After header.
    s.throttle_next(1, Duration::from_secs(7), false);
    let resp = reqwest::get(format!("{}/api/v1/namespaces", s.url()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

/// A CRD that is not installed: its resources answer 404 NotFound and discovery does not list
/// the group (what a controller meets on a cluster without Flotta).
#[tokio::test]
async fn an_uninstalled_crd_is_404_and_absent_from_discovery() {
    let s = ApiServer::start().await.unwrap();
    let client = s.client().unwrap();
    let devices: Api<EdgeDevice> = Api::all(client.clone());
    devices.list(&ListParams::default()).await.unwrap();
    s.unregister("edgedevices.management.project-flotta.io");
    let err = devices.list(&ListParams::default()).await.unwrap_err();
    match &err {
        kube::Error::Api(st) => {
            assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"), "{err:?}")
        }
        other => panic!("{other:?}"),
    }
    let discovery = kube::Discovery::new(client).run().await.unwrap();
    let flotta: Vec<String> = discovery
        .groups()
        .filter(|g| g.name() == "management.project-flotta.io")
        .flat_map(|g| g.recommended_resources())
        .map(|(r, _)| r.plural)
        .collect();
    assert_eq!(flotta, vec!["edgeworkloads".to_string()]);
}
