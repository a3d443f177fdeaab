//! The chart on clusters that lack something (issue 16): no Flotta CRDs, or a trimmed controller
//! role. The binaries run as the chart renders them, under RBAC enforced like kube-apiserver's.
//!
//! The controller's behaviour asserted here (Ready and `Degraded` with a reason naming what is
//! missing, every other policy still run) is issue 17's contract; these tests are its
//! chart-driven proof.

mod common;

use std::time::Duration;

use common::*;
use edgewatt_e2e::apiserver::ApiServer;
use serde_json::{json, Value};

fn condition(policy: &Value, kind: &str) -> Option<(String, String, String)> {
    let c = policy["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Every controller replica answers `/readyz` 200.
async fn all_ready(l: &Loop) {
    for c in &l.controllers {
        let url = c.readiness_url().expect("the chart's readiness probe");
        wait_http_url(&url, Duration::from_secs(40)).await;
    }
    l.timeline
        .mark("every controller replica Ready (readinessProbe /readyz)");
}

/// A cluster without Flotta's CRDs: the controller still becomes Ready, reports
/// `Degraded=FlottaNotInstalled` on the policy that targets EdgeDevices, and still runs the
/// node policy (a starved node is tainted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flotta_the_controller_is_ready_and_degraded_flotta_not_installed() {
    if needs_double(
        "it drives a simulated node's battery (a real node's exporter reads that node's own /sys)",
    ) {
        return;
    }
    let l = Loop::start(
        &[("node-a", Kind::Node), ("node-b", Kind::Node)],
        Install::defaults().without_flotta(),
    )
    .await;
    assert!(
        l.cluster
            .server
            .get(
                "customresourcedefinitions",
                None,
                "edgedevices.management.project-flotta.io"
            )
            .is_none(),
        "no Flotta CRDs on this cluster"
    );
    let policies = l.cluster.policies();
    for (name, targets) in [
        (
            "nodes",
            json!({"nodeSelector": {"matchLabels": {"power": "battery"}}}),
        ),
        ("devices", json!({"edgeDeviceSelector": {}})),
    ] {
        l.cluster
            .apply(&policies, policy(name, "Migrate", targets, "2s"))
            .await;
    }
    all_ready(&l).await;
    let (status, reason, message) = wait_for(
        "Degraded=True reason FlottaNotInstalled on the device policy",
        Duration::from_secs(40),
        || async {
            let p = policies.get("devices").await.ok()?;
            condition(&p.data, "Degraded").filter(|c| c.0 == "True" && c.1 == "FlottaNotInstalled")
        },
    )
    .await;
    l.timeline
        .mark(format!("devices: Degraded={status} {reason}: {message}"));
    l.sim("node-a").set_battery(10, true);
    let nodes = l.cluster.nodes();
    wait_for(
        "the node policy still acts: node-a tainted",
        Duration::from_secs(40),
        || async {
            let n = nodes.get("node-a").await.ok()?;
            n.data["spec"]["taints"]
                .as_array()?
                .iter()
                .any(|t| t["key"] == "edgewatt.io/energy-starved")
                .then_some(())
        },
    )
    .await;
    l.timeline.mark("node-a tainted by the node policy");
    l.assert_no_request_refused();
    l.timeline.print("cluster without Flotta");
}

/// The chart's controller ClusterRole without its PodDisruptionBudget rule.
fn drop_pdb_rule(s: &ApiServer) {
    let mut role = s
        .get(
            "clusterroles.rbac.authorization.k8s.io",
            None,
            "edgewatt-controller",
        )
        .expect("the controller's ClusterRole");
    let rules: Vec<Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["resources"].to_string().contains("poddisruptionbudgets"))
        .cloned()
        .collect();
    assert!(
        rules.len() < role["rules"].as_array().unwrap().len(),
        "the chart grants the PodDisruptionBudget watch"
    );
    role["rules"] = rules.into();
    s.put(role).unwrap();
}

/// A trimmed role (no PodDisruptionBudget access) is refused exactly as kube-apiserver refuses
/// it, and the controller says so: still Ready, every policy `Degraded` with the missing
/// permission named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_role_is_forbidden_and_reported_degraded() {
    if needs_double("it trims the chart's ClusterRole in the double's store before the pods start")
    {
        return;
    }
    let mut install = Install::defaults();
    install.tamper = Some(drop_pdb_rule);
    let l = Loop::start(&[("node-a", Kind::Node)], install).await;
    let refused = wait_for(
        "the controller's PodDisruptionBudget list refused",
        Duration::from_secs(30),
        || async {
            let r: Vec<String> = l
                .refused_requests()
                .into_iter()
                .filter(|r| r.contains("/poddisruptionbudgets"))
                .collect();
            (!r.is_empty()).then_some(r)
        },
    )
    .await;
    l.timeline.mark(format!("refused: {}", refused[0]));
    // kube-apiserver's Status, as the controller received it
    let policies = l.cluster.policies();
    l.cluster
        .apply(
            &policies,
            policy(
                "nodes",
                "Migrate",
                json!({"nodeSelector": {"matchLabels": {"power": "battery"}}}),
                "2s",
            ),
        )
        .await;
    all_ready(&l).await;
    let (_, reason, message) = wait_for(
        "Degraded=True naming `list poddisruptionbudgets`",
        Duration::from_secs(40),
        || async {
            let p = policies.get("nodes").await.ok()?;
            condition(&p.data, "Degraded").filter(|c| {
                c.0 == "True"
                    && format!("{} {}", c.1, c.2).contains("Forbidden")
                    && c.2.contains("poddisruptionbudgets")
            })
        },
    )
    .await;
    l.timeline.mark(format!("Degraded {reason}: {message}"));
    l.timeline.print("trimmed controller role");
}

/// The refusal itself, independent of what the controller makes of it: kube-apiserver's 403
/// Status for the controller's ServiceAccount, from the chart's roles minus one rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_role_refusal_is_kube_apiservers_forbidden() {
    if needs_double("it trims the chart's ClusterRole in the double's store before the pods start")
    {
        return;
    }
    let mut install = Install::defaults();
    install.tamper = Some(drop_pdb_rule);
    let l = Loop::start(&[("node-a", Kind::Node)], install).await;
    wait_for(
        "a refused PodDisruptionBudget request",
        Duration::from_secs(30),
        || async {
            l.refused_requests()
                .iter()
                .any(|r| r.contains("/apis/policy/v1/poddisruptionbudgets") && r.ends_with("403"))
                .then_some(())
        },
    )
    .await;
    // the same request with the controller's token shows the body it got
    let token = l.controllers[0]
        .token
        .clone()
        .expect("the controller's token");
    let client =
        kube::Client::try_from(l.cluster.server.config_with_token(&token).unwrap()).unwrap();
    let pdbs: kube::Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = kube::Api::all(client);
    match pdbs.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                "poddisruptionbudgets.policy is forbidden: User \
                 \"system:serviceaccount:edgewatt-system:edgewatt-controller\" cannot list \
                 resource \"poddisruptionbudgets\" in API group \"policy\" at the cluster scope"
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // everything the chart still grants works: no other refusal
    let others: Vec<String> = l
        .refused_requests()
        .into_iter()
        .filter(|r| !r.contains("/poddisruptionbudgets"))
        .collect();
    assert!(others.is_empty(), "{others:#?}");
}
