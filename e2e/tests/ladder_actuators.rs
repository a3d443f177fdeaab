//! The degradation ladder's executor (`edgewatt_controller::degrader`, through `KubeLadder`)
//! against the API server double, as a ServiceAccount holding exactly the ladder's Role:
//! `pods/resize` get and patch, `{deployments,statefulsets,replicasets}/scale` get and patch,
//! EdgeWorkloads get, create and delete. Every test ends by checking that no request of that
//! ServiceAccount was refused (a 403 anywhere fails it): the executor never needs more.
//!
//! Sources: kubernetes/enhancements `keps/sig-node/1287-in-place-update-pod-resources/README.md`
//! ("QOS Class", "Resize Status"); kubernetes/kubernetes `pkg/apis/core/validation/validation.go`
//! (`ValidatePodResize`), `pkg/apis/core/v1/helper/qos/qos.go`,
//! `pkg/registry/apps/deployment/storage/storage.go` (`ScaleREST`),
//! `staging/src/k8s.io/api/autoscaling/v1/types.go` (`spec.replicas` omitempty),
//! `pkg/registry/core/rest/storage_core.go` (`pods/resize` only with `InPlacePodVerticalScaling`).

use edgewatt_controller::degrader::{
    self, keep, pod_qos, Confirmed, Degradee, KubeLadder, Prepare, Prepared, ResizeProgress,
    Restored, RESIZE_NOT_SERVED,
};
use edgewatt_controller::leader::Fence;
use edgewatt_crds::{
    Criticality, DegradeState, DegradeStep, DegradedKind, DegradedWorkload, EdgeWorkload,
};
use edgewatt_e2e::apiserver::{ApiServer, ResizeOutcome};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const NS: &str = "apps";
const ROBOT: &str = "system:serviceaccount:apps:ladder";

fn from<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

/// The double, an admin client (the test's hands) and the executor with the ladder's Role.
struct Env {
    s: ApiServer,
    admin: Client,
    ladder: KubeLadder,
    fence: Fence,
}

impl Env {
    async fn start() -> Env {
        let s = ApiServer::start().await.unwrap();
        s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .unwrap();
        let admin = s.client().unwrap();
        Api::<ServiceAccount>::namespaced(admin.clone(), NS)
            .create(
                &PostParams::default(),
                &from(json!({"metadata": {"name": "ladder"}})),
            )
            .await
            .unwrap();
        s.put(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "ladder", "namespace": NS},
            "rules": [
                {"apiGroups": [""], "resources": ["pods/resize"], "verbs": ["get", "patch"]},
                {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale",
                 "replicasets/scale"], "verbs": ["get", "patch"]},
                {"apiGroups": ["management.project-flotta.io"], "resources": ["edgeworkloads"],
                 "verbs": ["get", "create", "delete"]}]}),
        )
        .unwrap();
        s.put(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "ladder", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ladder"},
            "subjects": [{"kind": "ServiceAccount", "name": "ladder", "namespace": NS}]}),
        )
        .unwrap();
        let token = s.service_account_token(NS, "ladder", None);
        let client = Client::try_from(s.config_with_token(&token).unwrap()).unwrap();
        Env {
            s,
            admin,
            ladder: KubeLadder { client },
            fence: Fence::always(),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), NS)
    }

    async fn pod(&self, name: &str, resources: Value) -> Pod {
        self.pods()
            .create(
                &PostParams::default(),
                &from(json!({"metadata": {"name": name},
                "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}]}})),
            )
            .await
            .unwrap()
    }

    fn owner(&self, kind: &str, name: &str, replicas: i32) {
        let mut o = json!({"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}});
        if kind == "StatefulSet" {
            o["spec"]["serviceName"] = json!(name);
        }
        self.s.put(o).unwrap();
    }

    /// prepare → the ledger entry (Pending) → apply → Applied, as the runtime does it.
    async fn shed(&self, who: &Degradee, step: DegradeStep) -> DegradedWorkload {
        let p = self.prepared(who, step).await;
        let mut e = p.entry(
            "node-1",
            Criticality::Sheddable,
            "2025-01-01T00:00:00Z".into(),
            "runway".into(),
            None,
        );
        degrader::apply(&self.ladder, &self.fence, &p)
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        e.state = DegradeState::Applied;
        e
    }

    async fn prepared(&self, who: &Degradee, step: DegradeStep) -> Prepared {
        match degrader::prepare(&self.ladder, who, step, 50)
            .await
            .unwrap()
        {
            Prepare::Ready(p) => *p,
            Prepare::NotPossible(why) => panic!("{who}: not possible: {why}"),
        }
    }

    async fn restore(&self, e: &DegradedWorkload) -> Restored {
        degrader::restore(&self.ladder, &self.fence, e)
            .await
            .unwrap_or_else(|x| panic!("{}: {x}", Degradee::of(e)))
    }

    /// The robot's writes so far.
    fn robot_writes(&self) -> usize {
        self.s.writes().iter().filter(|r| r.user == ROBOT).count()
    }

    /// RBAC: not one request of the ladder's ServiceAccount was refused.
    fn assert_never_forbidden(&self) {
        let refused: Vec<String> = self
            .s
            .requests()
            .iter()
            .filter(|r| r.user == ROBOT && r.status == 403)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            refused.is_empty(),
            "the ladder's Role was not enough: {refused:?}"
        );
        assert!(
            self.s.requests().iter().any(|r| r.user == ROBOT),
            "the test made its requests as the ladder's ServiceAccount"
        );
    }
}

fn cpu(p: &Pod, kind: &str) -> String {
    let r = p.spec.as_ref().unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    let list = if kind == "limits" {
        r.limits
    } else {
        r.requests
    };
    list.unwrap()["cpu"].0.clone()
}

fn pending(mut e: DegradedWorkload) -> DegradedWorkload {
    e.state = DegradeState::Pending;
    e
}

/// KEP-1287 "QOS Class" + validation.go `ValidatePodResize`: the API server refuses a resize
/// that changes the QoS class or puts a request above its limit — so a Guaranteed pod's CPU
/// request goes down with its limit, a Burstable one's only as far as the new limit needs.
/// Restored exactly; a second restore writes nothing.
#[tokio::test]
async fn throttles_and_restores_a_burstable_and_a_guaranteed_pod_keeping_their_qos() {
    let env = Env::start().await;
    let cases = [
        (
            "burst",
            json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}),
            "Burstable",
            ("500m", "250m"),
        ),
        (
            "burst-high",
            json!({"requests": {"cpu": "800m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}),
            "Burstable",
            ("500m", "500m"),
        ),
        // Lowering the request to the new limit would make every request equal its limit
        // (Guaranteed): one millicore below it keeps the pod Burstable.
        (
            "burst-flip",
            json!({"requests": {"cpu": "800m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}),
            "Burstable",
            ("500m", "499m"),
        ),
        (
            "guar",
            json!({"limits": {"cpu": "1", "memory": "128Mi"}}),
            "Guaranteed",
            ("500m", "500m"),
        ),
    ];
    for (name, resources, qos, (limit, request)) in cases {
        let before = env.pod(name, resources).await;
        assert_eq!(pod_qos(&before).unwrap(), qos);
        let who = Degradee::pod(NS, name);
        let e = env.shed(&who, DegradeStep::Throttle).await;
        let after = env.pods().get(name).await.unwrap();
        assert_eq!(
            (
                cpu(&after, "limits").as_str(),
                cpu(&after, "requests").as_str()
            ),
            (limit, request),
            "{name}"
        );
        assert_eq!(pod_qos(&after).unwrap(), qos, "{name} keeps its QoS class");
        assert_eq!(
            after.status.as_ref().unwrap().qos_class.as_deref(),
            Some(qos)
        );
        // A restarted controller confirms a Pending entry from the pod; the step still holds.
        assert_eq!(
            degrader::confirm(&env.ladder, &pending(e.clone()))
                .await
                .unwrap(),
            Confirmed::Applied
        );
        assert_eq!(degrader::check(&env.ladder, &e).await.unwrap(), None);
        assert_eq!(env.restore(&e).await, Restored::Done);
        let back = env.pods().get(name).await.unwrap();
        assert_eq!(
            back.spec.as_ref().unwrap().containers[0].resources,
            before.spec.as_ref().unwrap().containers[0].resources,
            "{name}: CPU back exactly"
        );
        let writes = env.robot_writes();
        assert_eq!(env.restore(&e).await, Restored::Done, "idempotent");
        assert_eq!(
            env.robot_writes(),
            writes,
            "a second restore writes nothing"
        );
        // Restored: a Pending entry of it is dropped.
        assert!(matches!(
            degrader::confirm(&env.ladder, &pending(e)).await.unwrap(),
            Confirmed::NotApplied(_)
        ));
    }
    env.assert_never_forbidden();
}

/// qos.go: a pod without any request or limit is BestEffort; lowering a limit it lacks would
/// add one, which `ValidatePodResize` refuses (QoS change): nothing is written.
#[tokio::test]
async fn a_besteffort_pod_is_not_throttled() {
    let env = Env::start().await;
    env.pod("be", json!({})).await;
    let r = degrader::prepare(
        &env.ladder,
        &Degradee::pod(NS, "be"),
        DegradeStep::Throttle,
        50,
    )
    .await
    .unwrap();
    let Prepare::NotPossible(why) = r else {
        panic!("{r:?}")
    };
    assert!(why.contains("BestEffort"), "{why}");
    assert_eq!(env.robot_writes(), 0);
    env.assert_never_forbidden();
}

/// storage_core.go registers `pods/resize` only with `InPlacePodVerticalScaling` (default on
/// from 1.33): without it the throttle is not possible and says why (the ladder suspends
/// instead); a pod that does not exist is told apart from a route that does not.
#[tokio::test]
async fn without_the_resize_subresource_a_throttle_is_not_possible() {
    let env = Env::start().await;
    env.pod("web", json!({"limits": {"cpu": "1", "memory": "128Mi"}}))
        .await;
    env.s.serve_pod_resize(false);
    let who = Degradee::pod(NS, "web");
    let r = degrader::prepare(&env.ladder, &who, DegradeStep::Throttle, 50)
        .await
        .unwrap();
    assert_eq!(r, Prepare::NotPossible(RESIZE_NOT_SERVED.into()));
    env.s.serve_pod_resize(true);
    let r = degrader::prepare(
        &env.ladder,
        &Degradee::pod(NS, "nope"),
        DegradeStep::Throttle,
        50,
    )
    .await
    .unwrap();
    assert_eq!(r, Prepare::NotPossible("the pod is gone".into()));
    assert_eq!(env.robot_writes(), 0);
    env.assert_never_forbidden();
}

/// A throttled pod deleted and created again under its name (a StatefulSet's `db-0`, here with
/// a template lowered to what the throttle set) is another pod: its UID differs, so the
/// restore leaves it alone (Gone) instead of raising a CPU limit someone chose.
#[tokio::test]
async fn a_throttled_pod_replaced_by_a_new_one_of_that_name_is_left_alone() {
    let env = Env::start().await;
    let resources = json!({"limits": {"cpu": "1", "memory": "128Mi"}});
    env.pod("db-0", resources).await;
    let e = env
        .shed(&Degradee::pod(NS, "db-0"), DegradeStep::Throttle)
        .await;
    env.pods()
        .delete("db-0", &DeleteParams::default())
        .await
        .unwrap();
    assert!(env.pods().get_opt("db-0").await.unwrap().is_none());
    env.pod(
        "db-0",
        json!({"limits": {"cpu": "500m", "memory": "128Mi"}}),
    )
    .await;
    let writes = env.robot_writes();
    let r = env.restore(&e).await;
    assert!(
        matches!(&r, Restored::Gone(m) if m.contains("replaced")),
        "{r:?}"
    );
    assert_eq!(env.robot_writes(), writes);
    assert_eq!(
        cpu(&env.pods().get("db-0").await.unwrap(), "limits"),
        "500m"
    );
    env.assert_never_forbidden();
}

/// KEP-1287 "Resize Status" (1.33+): the kubelet answers with `PodResizePending` (reason
/// `Deferred` or `Infeasible`) — the spec is lowered but the saving is not there, and the
/// executor says so; once actuated, `containerStatuses[].resources` shows the new limit.
#[tokio::test]
async fn a_deferred_or_infeasible_resize_is_reported() {
    let env = Env::start().await;
    env.pod(
        "web",
        json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}),
    )
    .await;
    let e = env
        .shed(&Degradee::pod(NS, "web"), DegradeStep::Throttle)
        .await;
    assert_eq!(
        degrader::progress(&env.ladder, &e).await.unwrap(),
        Some(ResizeProgress::Waiting)
    );
    let msg = "Node didn't have enough resource: cpu";
    env.s
        .set_resize_outcome(NS, "web", ResizeOutcome::Deferred(msg.into()))
        .unwrap();
    assert_eq!(
        degrader::progress(&env.ladder, &e).await.unwrap(),
        Some(ResizeProgress::Deferred(msg.into()))
    );
    env.s
        .set_resize_outcome(NS, "web", ResizeOutcome::Infeasible("too big".into()))
        .unwrap();
    assert_eq!(
        degrader::progress(&env.ladder, &e).await.unwrap(),
        Some(ResizeProgress::Infeasible("too big".into()))
    );
    env.s
        .set_resize_outcome(NS, "web", ResizeOutcome::InProgress)
        .unwrap();
    assert_eq!(
        degrader::progress(&env.ladder, &e).await.unwrap(),
        Some(ResizeProgress::InProgress)
    );
    env.s
        .set_resize_outcome(NS, "web", ResizeOutcome::Applied)
        .unwrap();
    assert_eq!(
        degrader::progress(&env.ladder, &e).await.unwrap(),
        Some(ResizeProgress::Actuated)
    );
    env.assert_never_forbidden();
}

/// A change between the executor's read and its write is never overwritten: the write is
/// conditioned on the read's resourceVersion (409), the executor reads again and goes on only
/// while the pod still has the CPU it recorded.
#[tokio::test]
async fn a_change_between_read_and_write_is_never_overwritten() {
    let env = Env::start().await;
    env.pod("web", json!({"limits": {"cpu": "1", "memory": "128Mi"}}))
        .await;
    let who = Degradee::pod(NS, "web");
    // A label change (a new resourceVersion, same CPU): the step goes through.
    let p = env.prepared(&who, DegradeStep::Throttle).await;
    env.pods()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    degrader::apply(&env.ladder, &env.fence, &p).await.unwrap();
    assert_eq!(cpu(&env.pods().get("web").await.unwrap(), "limits"), "500m");
    // Someone resizes it between another read and write: nothing is done.
    env.pod("db", json!({"limits": {"cpu": "2", "memory": "128Mi"}}))
        .await;
    let p = env
        .prepared(&Degradee::pod(NS, "db"), DegradeStep::Throttle)
        .await;
    env.pods()
        .patch_resize(
            "db",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "app",
                "resources": {"limits": {"cpu": "1500m"}, "requests": {"cpu": "1500m"}}}]}})),
        )
        .await
        .unwrap();
    let err = degrader::apply(&env.ladder, &env.fence, &p)
        .await
        .unwrap_err();
    assert!(err.nothing_done(), "{err}");
    assert_eq!(cpu(&env.pods().get("db").await.unwrap(), "limits"), "1500m");
    // Not the leader: no write at all.
    let writes = env.robot_writes();
    let p = env
        .prepared(&Degradee::pod(NS, "db"), DegradeStep::Throttle)
        .await;
    let gone = Fence::new();
    assert!(degrader::apply(&env.ladder, &gone, &p).await.is_err());
    assert_eq!(env.robot_writes(), writes);
    env.assert_never_forbidden();
}

/// storage.go `ScaleREST`: the Scale is the owner's replicas; at 0 it reads `spec: {}`
/// (types.go omitempty). A Deployment goes to 0 and back to exactly 3; a StatefulSet and a
/// ReplicaSet likewise; a second restore writes nothing.
#[tokio::test]
async fn suspends_owners_to_zero_and_back_to_exactly_their_replicas() {
    let env = Env::start().await;
    for (kind, dk, name, n) in [
        ("Deployment", DegradedKind::Deployment, "web", 3),
        ("StatefulSet", DegradedKind::StatefulSet, "db", 2),
        ("ReplicaSet", DegradedKind::ReplicaSet, "solo", 4),
    ] {
        env.owner(kind, name, n);
        let who = Degradee {
            kind: dk,
            namespace: NS.into(),
            name: name.into(),
        };
        let e = env.shed(&who, DegradeStep::Suspend).await;
        assert_eq!(e.restore.replicas, Some(n));
        let stored = env
            .s
            .get(&format!("{}s.apps", kind.to_lowercase()), Some(NS), name)
            .unwrap();
        assert_eq!(stored["spec"]["replicas"], 0, "{kind}");
        assert_eq!(
            degrader::confirm(&env.ladder, &pending(e.clone()))
                .await
                .unwrap(),
            Confirmed::Applied
        );
        // Already at 0: nothing to suspend again.
        assert!(matches!(
            degrader::prepare(&env.ladder, &who, DegradeStep::Suspend, 50)
                .await
                .unwrap(),
            Prepare::NotPossible(_)
        ));
        assert_eq!(env.restore(&e).await, Restored::Done);
        let stored = env
            .s
            .get(&format!("{}s.apps", kind.to_lowercase()), Some(NS), name)
            .unwrap();
        assert_eq!(stored["spec"]["replicas"], n, "{kind} back to exactly {n}");
        let writes = env.robot_writes();
        assert_eq!(env.restore(&e).await, Restored::Done);
        assert_eq!(
            env.robot_writes(),
            writes,
            "never a scale from a non-zero value"
        );
    }
    env.assert_never_forbidden();
}

/// An owner deleted while suspended is not recreated (Gone); one deleted and created again
/// under the same name is a new object (another UID): left as it is.
#[tokio::test]
async fn an_owner_deleted_meanwhile_is_gone() {
    let env = Env::start().await;
    env.owner("Deployment", "web", 3);
    let who = Degradee {
        kind: DegradedKind::Deployment,
        namespace: NS.into(),
        name: "web".into(),
    };
    let e = env.shed(&who, DegradeStep::Suspend).await;
    let deploys: Api<Deployment> = Api::namespaced(env.admin.clone(), NS);
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert!(matches!(
        degrader::check(&env.ladder, &e).await.unwrap(),
        Some(Restored::Gone(_))
    ));
    assert!(matches!(env.restore(&e).await, Restored::Gone(_)));
    assert!(
        deploys.get_opt("web").await.unwrap().is_none(),
        "nothing recreated"
    );
    // Created again under that name, at 0: not ours.
    env.owner("Deployment", "web", 0);
    let r = env.restore(&e).await;
    assert!(
        matches!(&r, Restored::Gone(m) if m.contains("replaced")),
        "{r:?}"
    );
    assert_eq!(deploys.get("web").await.unwrap().spec.replicas, Some(0));
    env.assert_never_forbidden();
}

/// Replicas someone set while suspended are theirs: left as they are (Edited), never
/// overridden by the restore.
#[tokio::test]
async fn replicas_changed_meanwhile_are_left_as_edited() {
    let env = Env::start().await;
    env.owner("StatefulSet", "db", 3);
    let who = Degradee {
        kind: DegradedKind::StatefulSet,
        namespace: NS.into(),
        name: "db".into(),
    };
    let e = env.shed(&who, DegradeStep::Suspend).await;
    let sets: Api<StatefulSet> = Api::namespaced(env.admin.clone(), NS);
    sets.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let r = degrader::check(&env.ladder, &e).await.unwrap();
    assert!(
        matches!(&r, Some(Restored::Edited(m)) if m.contains("scaled to 5")),
        "{r:?}"
    );
    assert!(matches!(env.restore(&e).await, Restored::Edited(_)));
    assert_eq!(sets.get("db").await.unwrap().spec.replicas, Some(5));
    // A ReplicaSet's too.
    env.owner("ReplicaSet", "solo", 2);
    let who = Degradee {
        kind: DegradedKind::ReplicaSet,
        namespace: NS.into(),
        name: "solo".into(),
    };
    let e = env.shed(&who, DegradeStep::Suspend).await;
    let rsets: Api<ReplicaSet> = Api::namespaced(env.admin.clone(), NS);
    rsets
        .patch_scale(
            "solo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert!(matches!(env.restore(&e).await, Restored::Edited(_)));
    assert_eq!(rsets.get("solo").await.unwrap().spec.replicas, Some(1));
    env.assert_never_forbidden();
}

fn edge_workload(name: &str, image: &str) -> Value {
    json!({"apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name},
                     "annotations": {"edgewatt.io/criticality": "sheddable"}},
        "spec": {"device": "d1", "type": "pod",
                 "pod": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
}

/// A suspended EdgeWorkload is deleted with its object kept in the ledger and recreated
/// unchanged (its labels, annotations and spec; a new UID); a restore that already happened is
/// `Done` without a second create; one that a user created again differently is left (Exists).
#[tokio::test]
async fn an_edgeworkload_is_removed_and_recreated_unchanged() {
    let env = Env::start().await;
    let wls: Api<EdgeWorkload> = Api::namespaced(env.admin.clone(), NS);
    let original = wls
        .create(
            &PostParams::default(),
            &from(edge_workload("cam", "cam:v1")),
        )
        .await
        .unwrap();
    let who = Degradee {
        kind: DegradedKind::EdgeWorkload,
        namespace: NS.into(),
        name: "cam".into(),
    };
    let e = env.shed(&who, DegradeStep::Suspend).await;
    assert_eq!(e.restore.object.as_ref(), Some(&keep(&original)));
    assert!(
        wls.get_opt("cam").await.unwrap().is_none(),
        "removed from its device"
    );
    assert_eq!(
        degrader::confirm(&env.ladder, &pending(e.clone()))
            .await
            .unwrap(),
        Confirmed::Applied
    );
    assert_eq!(degrader::check(&env.ladder, &e).await.unwrap(), None);
    assert_eq!(env.restore(&e).await, Restored::Done);
    let again = wls.get("cam").await.unwrap();
    assert_eq!(keep(&again), keep(&original), "recreated unchanged");
    assert_ne!(again.metadata.uid, original.metadata.uid);
    let creates = || {
        env.s
            .writes()
            .iter()
            .filter(|r| r.user == ROBOT && r.method == "POST" && r.path.contains("edgeworkloads"))
            .count()
    };
    assert_eq!(creates(), 1);
    assert_eq!(env.restore(&e).await, Restored::Done);
    assert_eq!(creates(), 1, "never a second create");

    // Suspended again; someone creates one of that name with another spec: left as is.
    let e = env.shed(&who, DegradeStep::Suspend).await;
    wls.create(
        &PostParams::default(),
        &from(edge_workload("cam", "cam:v2")),
    )
    .await
    .unwrap();
    assert!(matches!(env.restore(&e).await, Restored::Exists(_)));
    let now = wls.get("cam").await.unwrap();
    let spec = serde_json::to_value(&now.spec).unwrap();
    assert_eq!(spec["pod"]["spec"]["containers"][0]["image"], "cam:v2");
    env.assert_never_forbidden();
}

/// The Role is exactly what the ladder needs, and no more: the ladder's ServiceAccount cannot
/// read Deployments or Pods themselves (rbac.go `ResourceMatches`: a subresource grants nothing
/// on its resource), yet every step above went through.
#[tokio::test]
async fn the_ladders_role_grants_nothing_beyond_its_subresources() {
    let env = Env::start().await;
    env.owner("Deployment", "web", 1);
    env.pod("p", json!({"limits": {"cpu": "1", "memory": "128Mi"}}))
        .await;
    let deploys: Api<Deployment> = Api::namespaced(env.ladder.client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(env.ladder.client.clone(), NS);
    let code = |e: kube::Error| match e {
        kube::Error::Api(s) => s.code,
        other => panic!("{other}"),
    };
    assert_eq!(code(deploys.get("web").await.unwrap_err()), 403);
    assert_eq!(code(pods.get("p").await.unwrap_err()), 403);
    let who = Degradee {
        kind: DegradedKind::Deployment,
        namespace: NS.into(),
        name: "web".into(),
    };
    let e = env.shed(&who, DegradeStep::Suspend).await;
    assert_eq!(env.restore(&e).await, Restored::Done);
    let e = env
        .shed(&Degradee::pod(NS, "p"), DegradeStep::Throttle)
        .await;
    assert_eq!(env.restore(&e).await, Restored::Done);
    // Only the two deliberate probes above were refused.
    let refused = env
        .s
        .requests()
        .iter()
        .filter(|r| r.user == ROBOT && r.status == 403)
        .count();
    assert_eq!(refused, 2);
}
