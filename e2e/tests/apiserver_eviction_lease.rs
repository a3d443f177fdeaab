//! Eviction honouring PodDisruptionBudgets, and Lease-based leadership between two clients.

use edgewatt_e2e::apiserver::ApiServer;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

async fn running_pod(s: &ApiServer, pods: &Api<Pod>, name: &str) {
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"containers": []}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    assert!(s.get("pods", Some("default"), name).is_some());
}

#[tokio::test]
async fn eviction_blocked_by_pdb_then_allowed() {
    let s = ApiServer::start().await.unwrap();
    // kube's default client retries 429 up to 15 times with exponential backoff (minutes); a
    // caller that wants the PDB refusal at once must turn that off, as against a real server.
    let mut cfg = s.config().unwrap();
    cfg.default_retry = false;
    let c = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(c.clone());
    running_pod(&s, &pods, "web-1").await;
    running_pod(&s, &pods, "web-2").await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})).unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();

    // disruptionsAllowed is 0 (no disruption controller has raised it): 429.
    let e = pods
        .evict("web-1", &EvictParams::default())
        .await
        .unwrap_err();
    let kube::Error::Api(st) = e else {
        panic!("{e:?}")
    };
    assert_eq!((st.code, st.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        st.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert!(pods.get("web-1").await.is_ok());

    s.set_pdb_disruptions_allowed("default", "web", 1).unwrap();
    let ok = pods.evict("web-1", &EvictParams::default()).await.unwrap();
    assert_eq!(
        ok.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    assert!(pods.get("web-1").await.is_err(), "evicted pod is deleted");
    let after = pdbs.get("web").await.unwrap();
    let st = after.status.unwrap();
    assert_eq!(
        st.disruptions_allowed,
        Some(0),
        "eviction consumed the budget"
    );
    assert!(st.disrupted_pods.unwrap().contains_key("web-1"));
    let e = pods
        .evict("web-2", &EvictParams::default())
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref st) if st.code == 429));

    // Pending pods ignore the budget, like the real handler; unknown pods are 404.
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "web-3", "labels": {"app": "web"}}, "spec": {"containers": []}})).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.evict("web-3", &EvictParams::default()).await.unwrap();
    let e = pods
        .evict("nope", &EvictParams::default())
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref st) if st.code == 404));

    // Two matching budgets: the real server refuses with 500.
    let second: PodDisruptionBudget = serde_json::from_value(
        json!({"metadata": {"name": "web2"}, "spec": {"maxUnavailable": 1, "selector": {}}}),
    )
    .unwrap();
    pdbs.create(&PostParams::default(), &second).await.unwrap();
    let e = pods
        .evict("web-2", &EvictParams::default())
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref st) if st.code == 500));
}

fn lease_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Tries to take or renew the lease for `me`; returns whether `me` holds it afterwards.
async fn try_acquire(api: &Api<Lease>, me: &str, expired: bool) -> kube::Result<bool> {
    match api.get_opt("leader").await? {
        None => {
            let l: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": me, "leaseDurationSeconds": 15, "leaseTransitions": 0}})).unwrap();
            match api.create(&PostParams::default(), &l).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(st)) if st.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut l) => {
            let spec = l.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone();
            if holder.as_deref() != Some(me) && !expired {
                return Ok(false);
            }
            if holder.as_deref() != Some(me) {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(me.into());
            }
            spec.renew_time = Some(lease_now());
            // resourceVersion stays set: the update is conditional.
            match api.replace("leader", &PostParams::default(), &l).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(st)) if st.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

#[tokio::test]
async fn lease_acquire_renew_takeover_between_two_clients() {
    let s = ApiServer::start().await.unwrap();
    let a: Api<Lease> = Api::default_namespaced(s.client().unwrap());
    let b: Api<Lease> = Api::default_namespaced(s.client().unwrap());
    assert!(try_acquire(&a, "a", false).await.unwrap());
    assert!(
        !try_acquire(&b, "b", false).await.unwrap(),
        "b cannot take a live lease"
    );
    assert!(try_acquire(&a, "a", false).await.unwrap(), "a renews");

    // Both read the same version; only one conditional update wins.
    let seen_a = a.get("leader").await.unwrap();
    let seen_b = b.get("leader").await.unwrap();
    let mut wa = seen_a.clone();
    wa.spec.as_mut().unwrap().renew_time = Some(lease_now());
    let mut wb = seen_b.clone();
    wb.spec.as_mut().unwrap().holder_identity = Some("b".into());
    a.replace("leader", &PostParams::default(), &wa)
        .await
        .unwrap();
    let e = b
        .replace("leader", &PostParams::default(), &wb)
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref st) if st.code == 409));

    // a stops renewing; b sees it expired and takes over.
    assert!(try_acquire(&b, "b", true).await.unwrap());
    let l = a.get("leader").await.unwrap();
    assert_eq!(
        l.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("b")
    );
    assert_eq!(l.spec.unwrap().lease_transitions, Some(1));
    assert!(!try_acquire(&a, "a", false).await.unwrap());
    assert_eq!(
        a.get("leader").await.unwrap().resource_version(),
        b.get("leader").await.unwrap().resource_version()
    );
}
