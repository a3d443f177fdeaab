//! Authentication and RBAC of the API server double, through kube's client with ServiceAccount
//! and user tokens, against the rules of kube-apiserver (kubernetes/kubernetes
//! `plugin/pkg/auth/authorizer/rbac/rbac.go`, `pkg/apis/rbac/v1/evaluation_helpers.go`,
//! `pkg/registry/rbac/validation/rule.go`, `staging/src/k8s.io/apiserver/pkg/endpoints/request/
//! requestinfo.go`, `.../handlers/responsewriters/errors.go` for the exact Forbidden message).

use edgewatt_e2e::apiserver::ApiServer;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event as NewEvent;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const NS: &str = "apps";
const SA: &str = "system:serviceaccount:apps:robot";

fn from<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

/// (code, reason, message) of an API error.
fn status(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn forbidden(e: kube::Error) -> String {
    let (code, reason, message) = status(e);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"), "{message}");
    message
}

/// A double with namespaces `apps` and `other`, ServiceAccount `apps/robot` and a client that
/// authenticates with its token.
async fn setup() -> (ApiServer, Client, Client) {
    let s = ApiServer::start().await.unwrap();
    let admin = s.client().unwrap();
    for ns in [NS, "other"] {
        s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
    }
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    sas.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "robot"}})),
    )
    .await
    .unwrap();
    let token = s.service_account_token(NS, "robot", Some("robot-7d9f8-abcde"));
    let robot = Client::try_from(s.config_with_token(&token).unwrap()).unwrap();
    (s, admin, robot)
}

fn rbac(s: &ApiServer, objs: Value) {
    for o in objs.as_array().unwrap() {
        let mut o = o.clone();
        o["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
        s.put(o).unwrap();
    }
}

fn sa_subject() -> Value {
    json!([{"kind": "ServiceAccount", "name": "robot", "namespace": NS}])
}

#[tokio::test]
async fn a_service_account_without_bindings_gets_kube_apiservers_forbidden_status() {
    let (s, _admin, robot) = setup().await;
    // discovery: system:discovery is bound to system:authenticated
    let v = robot.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    robot.list_api_groups().await.unwrap();

    let pods: Api<Pod> = Api::all(robot.clone());
    assert_eq!(
        forbidden(pods.list(&ListParams::default()).await.unwrap_err()),
        format!("pods is forbidden: User \"{SA}\" cannot list resource \"pods\" in API group \"\" at the cluster scope")
    );
    let in_ns: Api<Pod> = Api::namespaced(robot.clone(), NS);
    assert_eq!(
        forbidden(in_ns.get("web").await.unwrap_err()),
        format!("pods \"web\" is forbidden: User \"{SA}\" cannot get resource \"pods\" in API group \"\" in the namespace \"{NS}\"")
    );
    let leases: Api<Lease> = Api::namespaced(robot.clone(), NS);
    assert_eq!(
        forbidden(leases.get("x").await.unwrap_err()),
        format!("leases.coordination.k8s.io \"x\" is forbidden: User \"{SA}\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{NS}\"")
    );
    // the request log names the user and the pod the token is bound to
    let last = s.requests().pop().unwrap();
    assert_eq!((last.status, last.user.as_str()), (403, SA));
    assert_eq!(last.pod.as_deref(), Some("robot-7d9f8-abcde"));
}

#[tokio::test]
async fn tokens_unknown_or_of_a_deleted_service_account_are_401() {
    let (s, admin, robot) = setup().await;
    let bogus = Client::try_from(s.config_with_token("not-a-token").unwrap()).unwrap();
    let (code, reason, message) = status(bogus.apiserver_version().await.unwrap_err());
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    let sas: Api<ServiceAccount> = Api::namespaced(admin, NS);
    sas.delete("robot", &DeleteParams::default()).await.unwrap();
    assert_eq!(status(robot.apiserver_version().await.unwrap_err()).0, 401);
    // anonymous: /version is public (system:public-info-viewer), discovery is not
    edgewatt_e2e::install_crypto_provider();
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("{}{p}", s.url())).send();
    assert_eq!(get("/version").await.unwrap().status(), 200);
    let r = get("/api").await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["message"],
        "forbidden: User \"system:anonymous\" cannot get path \"/api\""
    );
}

#[tokio::test]
async fn cluster_role_binding_grants_verbs_cluster_wide_and_nothing_else() {
    let (s, _admin, robot) = setup().await;
    rbac(
        &s,
        json!([
            {"kind": "ClusterRole", "metadata": {"name": "pod-reader"},
             "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]},
            {"kind": "ClusterRoleBinding", "metadata": {"name": "robot-pod-reader"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-reader"},
             "subjects": sa_subject()}
        ]),
    );
    let pods: Api<Pod> = Api::all(robot.clone());
    pods.list(&ListParams::default()).await.unwrap();
    Api::<Pod>::namespaced(robot.clone(), "other")
        .list(&ListParams::default())
        .await
        .unwrap();
    // watch is its own verb: a real watch request goes through
    let w = pods
        .watch(&kube::api::WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    drop(futures::StreamExt::next(&mut Box::pin(w)).await);
    // get is not list; a pod of another kind of API (nodes) is not pods
    let m = forbidden(
        Api::<Pod>::namespaced(robot.clone(), NS)
            .get("a")
            .await
            .unwrap_err(),
    );
    assert!(m.contains("cannot get resource \"pods\""), "{m}");
    let m = forbidden(
        Api::<Node>::all(robot)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert!(m.contains("cannot list resource \"nodes\""), "{m}");
}

#[tokio::test]
async fn role_binding_grants_only_in_its_namespace_and_never_cluster_scoped_resources() {
    let (s, _admin, robot) = setup().await;
    rbac(
        &s,
        json!([
            {"kind": "ClusterRole", "metadata": {"name": "viewer"},
             "rules": [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list"]}]},
            // a RoleBinding to a ClusterRole: its rules, in the binding's namespace only
            {"kind": "RoleBinding", "metadata": {"name": "robot-viewer", "namespace": NS},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "viewer"},
             "subjects": [{"kind": "ServiceAccount", "name": "robot"}]}
        ]),
    );
    Api::<Pod>::namespaced(robot.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let m = forbidden(
        Api::<Pod>::namespaced(robot.clone(), "other")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert!(m.ends_with("in the namespace \"other\""), "{m}");
    forbidden(
        Api::<Pod>::all(robot.clone())
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    let m = forbidden(
        Api::<Node>::all(robot)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert!(m.ends_with("at the cluster scope"), "{m}");
}

#[tokio::test]
async fn subresources_are_separate_resources_and_star_slash_matches_them() {
    let (s, admin, robot) = setup().await;
    rbac(
        &s,
        json!([
            {"kind": "ClusterRole", "metadata": {"name": "evictor"},
             "rules": [{"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                       {"apiGroups": ["edgewatt.io"], "resources": ["*/status"], "verbs": ["patch"]}]},
            {"kind": "ClusterRoleBinding", "metadata": {"name": "robot-evictor"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "evictor"},
             "subjects": sa_subject()}
        ]),
    );
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    admin_pods
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(robot.clone(), NS);
    pods.evict("web", &Default::default()).await.unwrap();
    let m = forbidden(
        pods.delete("web", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert!(m.contains("cannot delete resource \"pods\""), "{m}");

    let admin_eps = Api::<edgewatt_crds::EnergyPolicy>::all(admin);
    admin_eps
        .create(
            &PostParams::default(),
            &from(
                json!({"metadata": {"name": "ep"}, "spec": {"targets": {"nodeSelector": {}},
                "starvation": {"batteryBelowPercent": 20.0, "for": "2m"}}}),
            ),
        )
        .await
        .unwrap();
    let eps = Api::<edgewatt_crds::EnergyPolicy>::all(robot);
    let patch = Patch::Merge(json!({"status": {"starvedCount": 1}}));
    eps.patch_status("ep", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let m = forbidden(
        eps.patch("ep", &PatchParams::default(), &patch)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        m,
        format!("energypolicies.edgewatt.io \"ep\" is forbidden: User \"{SA}\" cannot patch resource \"energypolicies\" in API group \"edgewatt.io\" at the cluster scope")
    );
    let m = forbidden(eps.get_status("ep").await.unwrap_err());
    assert!(
        m.contains("cannot get resource \"energypolicies/status\""),
        "{m}"
    );
}

#[tokio::test]
async fn resource_names_restrict_get_and_patch_but_never_create_or_a_plain_list() {
    let (s, admin, robot) = setup().await;
    rbac(
        &s,
        json!([
            {"kind": "Role", "metadata": {"name": "lease", "namespace": NS},
             "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                        "resourceNames": ["mine"], "verbs": ["get", "patch", "create", "list", "watch"]}]},
            {"kind": "RoleBinding", "metadata": {"name": "lease", "namespace": NS},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease"},
             "subjects": sa_subject()}
        ]),
    );
    let admin_leases: Api<Lease> = Api::namespaced(admin, NS);
    for n in ["mine", "theirs"] {
        admin_leases
            .create(
                &PostParams::default(),
                &from(json!({"metadata": {"name": n}})),
            )
            .await
            .unwrap();
    }
    let leases: Api<Lease> = Api::namespaced(robot, NS);
    leases.get("mine").await.unwrap();
    let p = Patch::Merge(json!({"spec": {"holderIdentity": "me"}}));
    leases
        .patch("mine", &PatchParams::default(), &p)
        .await
        .unwrap();
    forbidden(leases.get("theirs").await.unwrap_err());
    // create carries no name in the URL: a rule with resourceNames cannot allow it
    let m = forbidden(
        leases
            .create(
                &PostParams::default(),
                &from(json!({"metadata": {"name": "mine2"}})),
            )
            .await
            .unwrap_err(),
    );
    assert!(m.contains("cannot create resource \"leases\""), "{m}");
    forbidden(leases.list(&ListParams::default()).await.unwrap_err());
    // ...but a list naming the object with `metadata.name=` is a request for that name
    let one = leases
        .list(&ListParams::default().fields("metadata.name=mine"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
}

#[tokio::test]
async fn events_in_each_group_deletecollection_groups_and_missing_roles() {
    let (s, admin, robot) = setup().await;
    rbac(
        &s,
        json!([
            {"kind": "ClusterRole", "metadata": {"name": "recorder"},
             "rules": [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "delete"]}]},
            // bound to the namespace's service-account group, not to the account
            {"kind": "ClusterRoleBinding", "metadata": {"name": "recorder"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "recorder"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": format!("system:serviceaccounts:{NS}")}]},
            {"kind": "ClusterRoleBinding", "metadata": {"name": "dangling"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
             "subjects": sa_subject()}
        ]),
    );
    let event = json!({"metadata": {"name": "e1"}, "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "x", "reportingInstance": "y", "action": "A", "reason": "R", "type": "Normal"});
    let new_events: Api<NewEvent> = Api::namespaced(robot.clone(), NS);
    new_events
        .create(&PostParams::default(), &from(event))
        .await
        .unwrap();
    // core/v1 events are another resource for RBAC
    let core: Api<Event> = Api::namespaced(robot.clone(), NS);
    let m = forbidden(
        core.create(
            &PostParams::default(),
            &from(
                json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "p"}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    // the dangling binding is the reason kube-apiserver appends
    assert_eq!(
        m,
        format!("events is forbidden: User \"{SA}\" cannot create resource \"events\" in API group \"\" in the namespace \"{NS}\": RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found")
    );
    new_events
        .delete("e1", &DeleteParams::default())
        .await
        .unwrap();
    let m = forbidden(
        new_events
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap_err(),
    );
    assert!(
        m.contains("cannot deletecollection resource \"events\""),
        "{m}"
    );
    // a user token with a group
    let user = s.user_token("jane", &["ops"]);
    rbac(
        &s,
        json!([{"kind": "ClusterRoleBinding", "metadata": {"name": "ops-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "recorder"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}]}]),
    );
    let jane = Client::try_from(s.config_with_token(&user).unwrap()).unwrap();
    let e3 = json!({"metadata": {"name": "e3"}, "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "x", "reportingInstance": "y", "action": "A", "reason": "R", "type": "Normal"});
    Api::<NewEvent>::namespaced(jane, "other")
        .create(&PostParams::default(), &from(e3))
        .await
        .unwrap();
    // the admin is never refused
    let any = ApiResource::erase::<Node>(&());
    Api::<DynamicObject>::all_with(admin, &any)
        .list(&ListParams::default())
        .await
        .unwrap();
}
