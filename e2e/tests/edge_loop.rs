//! End-to-end scenarios for the whole loop (issue 7): exporters → Prometheus → controller and
//! extender → cluster state, on the chart as installed (issue 16): every binary runs as the chart
//! renders it, the controller as two replicas under its ServiceAccount's RBAC, against the API
//! server double. Each scenario prints a timeline.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The controller's ServiceAccount as RBAC sees it.
const CONTROLLER_USER: &str = "system:serviceaccount:edgewatt-system:edgewatt-controller";

const NS: &str = "edge";

async fn edge_cluster(install: Install) -> Loop {
    let mut l = Loop::start(
        &[("dev-a", Kind::Device(NS)), ("dev-b", Kind::Device(NS))],
        install,
    )
    .await;
    l.cluster
        .namespace(NS, json!({"edgewatt.io/movable": "true"}))
        .await;
    for d in ["dev-a", "dev-b"] {
        let api = l.cluster.devices(NS);
        l.cluster
            .apply(&api, json!({"apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeDevice",
                "metadata": {"name": d, "namespace": NS, "labels": {"power": "battery"}}, "spec": {"heartbeat": {"periodSeconds": 5}}}))
            .await;
    }
    let api = l.cluster.workloads(NS);
    l.cluster
        .apply(&api, json!({"apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
            "metadata": {"name": "camera", "namespace": NS},
            "spec": {"device": "dev-a", "type": "pod", "pod": {"spec": {"containers": [{"name": "c", "image": "quay.io/example/camera:1"}]}}}}))
        .await;
    let agent = flotta_standin(l.cluster.client.clone(), NS, Duration::from_millis(1500));
    l.spawn_task(agent);
    let devices = l.cluster.devices(NS);
    wait_for(
        "camera running on dev-a",
        Duration::from_secs(15),
        || async {
            let d = devices.get("dev-a").await.ok()?;
            running_on(&d).contains(&"camera".to_string()).then_some(())
        },
    )
    .await;
    l.timeline.mark("camera Running on dev-a (Flotta stand-in)");
    l
}

/// Where `camera` (or its copy) runs, as the devices report it.
async fn placements(l: &Loop) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(ds) = l.cluster.devices(NS).list(&Default::default()).await {
        for d in ds.items {
            for w in running_on(&d) {
                out.push((d.metadata.name.clone().unwrap_or_default(), w));
            }
        }
    }
    out
}

/// Watches lag per resource on a real API server (each has its own watch cache): device status
/// and workloads reach the controller 0–3 s late, in order, while reads stay current.
fn flotta_watch_lag(s: &edgewatt_e2e::apiserver::ApiServer) {
    for r in [
        "edgedevices.management.project-flotta.io",
        "edgeworkloads.management.project-flotta.io",
    ] {
        s.set_watch_delay(r, Duration::ZERO, Duration::from_secs(3));
    }
}

/// Scenario 1: device A's battery drains below the policy → its EdgeWorkload runs on device B
/// before it leaves A; `edgewatt_migrations_total` increases; the chart's migration alert fires.
/// The controller's watches of devices and workloads lag 0–3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_drain_migrates_make_before_break_and_alerts() {
    let mut install = Install::defaults();
    install.tamper = Some(flotta_watch_lag);
    let l = edge_cluster(install).await;
    let api = l.cluster.policies();
    l.cluster
        .apply(
            &api,
            policy(
                "battery-guard",
                "Migrate",
                json!({"edgeDeviceSelector": {"matchLabels": {"power": "battery"}}}),
                "3s",
            ),
        )
        .await;
    l.sim("dev-a").set_battery(12, true);
    let drained = l
        .timeline
        .mark("dev-a battery set to 12 % (policy: below 20 % for 3s)");

    // Watch placements continuously: the camera must never be running nowhere.
    let mut first_action = None;
    let mut moved = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let p = placements(&l).await;
        let on: Vec<&str> = p
            .iter()
            .filter(|(_, w)| w.starts_with("camera"))
            .map(|(d, _)| d.as_str())
            .collect();
        assert!(
            !on.is_empty(),
            "make-before-break violated: camera running nowhere at {:.2}s",
            l.timeline.now()
        );
        let wls = l
            .cluster
            .workloads(NS)
            .list(&Default::default())
            .await
            .unwrap();
        if first_action.is_none()
            && (wls.items.len() > 1
                || wls.items.iter().any(|w| {
                    w.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("edgewatt.io/migration"))
                }))
        {
            first_action = Some(
                l.timeline
                    .mark("controller wrote migration intent / created the copy on dev-b"),
            );
        }
        if on == ["dev-b"] && wls.items.len() == 1 {
            moved = Some(
                l.timeline
                    .mark("camera Running only on dev-b; copy cleaned up"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (Some(action), Some(_)) = (first_action, moved) else {
        panic!("camera not migrated: placements {:?}", placements(&l).await);
    };
    let wl = l.cluster.workloads(NS).get("camera").await.unwrap();
    assert_eq!(wl.data["spec"]["device"], "dev-b");
    // detection → first action, after the 3 s `for` window (and ≤1 s scrape + 1 s evaluation lag)
    eprintln!(
        "detection→first action: {:.2}s after the drain, {:.2}s after the `for` window",
        action - drained,
        action - drained - 3.0
    );

    let total = wait_for(
        "edgewatt_migrations_total in Prometheus",
        Duration::from_secs(20),
        || async {
            l.query_value("sum(edgewatt_migrations_total{result=\"Succeeded\"})")
                .await
                .filter(|v| *v >= 1.0)
        },
    )
    .await;
    l.timeline.mark(format!(
        "Prometheus: edgewatt_migrations_total{{result=Succeeded}} = {total}"
    ));
    let reasons = l.cluster.event_reasons().await;
    l.timeline.mark(format!("events: {reasons:?}"));
    assert!(reasons.keys().any(|r| r.contains("Starved")), "{reasons:?}");
    assert!(reasons.keys().any(|r| r.contains("Migrat")), "{reasons:?}");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/edgewatt/files/alerts.rules.yaml");
    assert!(
        rules.exists(),
        "the chart's alert rules file {} is missing",
        rules.display()
    );
    wait_for(
        "EdgewattMigration alert firing",
        Duration::from_secs(40),
        || async {
            let r = l
                .query("ALERTS{alertname=\"EdgewattMigration\",alertstate=\"firing\"}")
                .await;
            r.as_array().is_some_and(|a| !a.is_empty()).then_some(())
        },
    )
    .await;
    l.timeline
        .mark("alert EdgewattMigration firing in Prometheus");
    l.assert_no_request_refused();
    l.timeline
        .print("battery drain → make-before-break migration");
}

/// Migration started: an intent annotation or a second EdgeWorkload exists.
async fn migration_started(wl_api: &kube::Api<kube::api::DynamicObject>) -> Option<()> {
    let wls = wl_api.list(&Default::default()).await.ok()?;
    (wls.items.len() > 1
        || wls.items.iter().any(|w| {
            w.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("edgewatt.io/migration"))
        }))
    .then_some(())
}

/// The camera runs on dev-b only, as the only EdgeWorkload, without an intent annotation.
async fn camera_moved_once(l: &Loop) -> Option<()> {
    let p = placements(l).await;
    let wls = l
        .cluster
        .workloads(NS)
        .list(&Default::default())
        .await
        .ok()?;
    let on: Vec<&str> = p
        .iter()
        .filter(|(_, w)| w.starts_with("camera"))
        .map(|(d, _)| d.as_str())
        .collect();
    (on == ["dev-b"]
        && wls.items.len() == 1
        && wls.items[0]
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("edgewatt.io/migration")))
    .then_some(())
}

/// Scenario 5: the leader's container is killed (SIGKILL) while the copy is deploying and
/// restarted in the same pod: nothing duplicated, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_mid_migration_resumes() {
    if needs_double("it SIGKILLs the leader controller's process and restarts it mid-migration") {
        return;
    }
    let mut l = edge_cluster(Install::defaults()).await;
    let api = l.cluster.policies();
    l.cluster
        .apply(
            &api,
            policy(
                "battery-guard",
                "Migrate",
                json!({"edgeDeviceSelector": {"matchLabels": {"power": "battery"}}}),
                "2s",
            ),
        )
        .await;
    l.sim("dev-a").set_battery(10, true);
    l.timeline.mark("dev-a battery 10 %");
    let wl_api = l.cluster.workloads(NS);
    wait_for(
        "migration started (intent annotation or copy)",
        Duration::from_secs(90),
        || migration_started(&wl_api),
    )
    .await;
    let leader = l
        .leader()
        .expect("a Lease holder among the controller pods");
    l.controllers[leader].main().kill();
    l.timeline.mark(format!(
        "leader {} SIGKILLed mid-migration",
        l.controllers[leader].name
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    l.controllers[leader].main().start();
    l.timeline.mark("its container restarted (same pod)");
    wait_for(
        "camera only on dev-b, no leftovers",
        Duration::from_secs(60),
        || camera_moved_once(&l),
    )
    .await;
    l.timeline
        .mark("camera on dev-b exactly once; intent cleared");
    l.timeline.print("controller killed mid-migration");
}

/// Scenario 6: Observe mode → status and Events only, no move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_only_reports() {
    if needs_double("it asserts on the API server's request log (the writes of the controller's ServiceAccount)") {
        return;
    }
    let l = edge_cluster(Install::edge_example()).await;
    let api = l.cluster.policies();
    l.cluster
        .apply(
            &api,
            policy(
                "watch-only",
                "Observe",
                json!({"edgeDeviceSelector": {"matchLabels": {"power": "battery"}}}),
                "2s",
            ),
        )
        .await;
    l.cluster.server.clear_requests();
    l.sim("dev-a").set_battery(8, true);
    l.timeline.mark("dev-a battery 8 % under an Observe policy");
    wait_for(
        "dev-a reported starved in status",
        Duration::from_secs(40),
        || async {
            let p = api.get("watch-only").await.ok()?;
            (p.data["status"]["starvedCount"].as_i64() == Some(1)).then_some(())
        },
    )
    .await;
    l.timeline.mark("status.starvedCount = 1");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let wls = l
        .cluster
        .workloads(NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(wls.items.len(), 1);
    assert_eq!(
        wls.items[0].data["spec"]["device"], "dev-a",
        "Observe must not move"
    );
    // the controllers' own requests, told apart by their ServiceAccount: the policy itself (its
    // status and its cleanup finalizer), Events and the Lease only
    let controller_writes: Vec<String> = l
        .cluster
        .server
        .writes()
        .into_iter()
        .filter(|w| w.user == CONTROLLER_USER)
        .filter(|w| {
            !w.path.contains("/energypolicies/watch-only")
                && !w.path.contains("/events")
                && !w.path.contains("/leases")
        })
        .map(|w| format!("{} {}", w.method, w.path))
        .collect();
    assert!(
        controller_writes.is_empty(),
        "Observe mode wrote: {controller_writes:?}"
    );
    let finalizers = api.get("watch-only").await.unwrap().metadata.finalizers;
    assert_eq!(
        finalizers,
        Some(vec!["edgewatt.io/cleanup".to_string()]),
        "the policy's one write to itself is its cleanup finalizer"
    );
    let reasons = l.cluster.event_reasons().await;
    assert!(reasons.keys().any(|r| r.contains("Starved")), "{reasons:?}");
    l.timeline.print("Observe mode");
}

/// Two controller replicas, as the chart deploys them: only the Lease holder writes; SIGKILL the
/// leader mid-migration (it never comes back) and the standby takes the Lease once it has
/// expired — not before (one writer), and within the lease duration plus two retry periods
/// (client-go `leaderelection`: a standby compares against the record it last observed, at most
/// one retry period old, and tries once per retry period) — and finishes the move: nothing lost,
/// nothing duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_hands_over_to_the_standby_within_the_lease_duration() {
    if needs_double("it SIGKILLs the leader's process and reads the API server's request log") {
        return;
    }
    let mut l = edge_cluster(Install::defaults()).await;
    assert_eq!(l.controllers.len(), 2, "controller.replicas defaults to 2");
    let leader = wait_for("a Lease holder", Duration::from_secs(30), || async {
        l.leader()
    })
    .await;
    let old = l.controllers[leader].name.clone();
    let standby = l.controllers[1 - leader].name.clone();
    l.timeline.mark(format!("leader {old}, standby {standby}"));
    let api = l.cluster.policies();
    l.cluster
        .apply(
            &api,
            policy(
                "battery-guard",
                "Migrate",
                json!({"edgeDeviceSelector": {"matchLabels": {"power": "battery"}}}),
                "2s",
            ),
        )
        .await;
    l.sim("dev-a").set_battery(10, true);
    let wl_api = l.cluster.workloads(NS);
    wait_for(
        "migration started (intent annotation or copy)",
        Duration::from_secs(90),
        || migration_started(&wl_api),
    )
    .await;
    let before_kill = l.cluster.server.requests().len();
    l.controllers[leader].main().kill();
    let killed = l.timeline.mark(format!(
        "leader {old} SIGKILLed mid-migration (not restarted)"
    ));
    let lease = |l: &Loop| {
        l.cluster
            .server
            .get(
                "leases.coordination.k8s.io",
                Some(common::NS),
                "edgewatt-controller",
            )
            .expect("the Lease")
    };
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a Lease time")).expect("MicroTime")
    };
    // the dead leader's last renewal
    let last = lease(&l);
    assert_eq!(last["spec"]["holderIdentity"], old.as_str());
    let lease_duration = last["spec"]["leaseDurationSeconds"]
        .as_f64()
        .expect("leaseDurationSeconds");
    let renewed = time(&last["spec"]["renewTime"]);
    wait_for(
        "the standby holds the Lease",
        Duration::from_secs(60),
        || async { (l.leader() == Some(1 - leader)).then_some(()) },
    )
    .await;
    let took = l.timeline.mark(format!("{standby} holds the Lease"));
    let acquired = time(&lease(&l)["spec"]["acquireTime"]);
    let gap = (acquired - renewed).num_milliseconds() as f64 / 1000.0;
    eprintln!(
        "handover: the standby acquired {gap:.2}s after the last renewal, {:.2}s after the kill \
         (leaseDurationSeconds {lease_duration})",
        took - killed
    );
    // The retry period of the chart's controller (controller/src/main.rs: renew every 5 s).
    const RETRY: f64 = 5.0;
    assert!(
        gap >= lease_duration - 1.0,
        "taken over {gap:.2}s after the last renewal: before the {lease_duration}s Lease expired"
    );
    assert!(
        gap <= lease_duration + 2.0 * RETRY,
        "taken over {gap:.2}s after the last renewal (lease {lease_duration}s, retry {RETRY}s)"
    );
    wait_for(
        "camera only on dev-b, no leftovers",
        Duration::from_secs(60),
        || camera_moved_once(&l),
    )
    .await;
    l.timeline
        .mark("camera on dev-b exactly once; intent cleared");
    // one writer at a time: before the kill only the old leader wrote, after it only the new one
    let writes = l.cluster.server.requests();
    let writers =
        |range: &[edgewatt_e2e::apiserver::RequestRecord]| -> std::collections::BTreeSet<String> {
            range
                .iter()
                .filter(|r| {
                    r.is_write() && r.user == CONTROLLER_USER && !r.path.contains("/leases")
                })
                .filter_map(|r| r.pod.clone())
                .collect()
        };
    let (before, after) = writes.split_at(before_kill);
    assert!(
        writers(before).iter().all(|p| *p == old),
        "writers before the kill: {:?}",
        writers(before)
    );
    assert!(
        writers(after).iter().all(|p| *p == standby),
        "writers after the kill: {:?}",
        writers(after)
    );
    assert!(
        writers(after).contains(&standby),
        "the new leader finished the move"
    );
    let p = api.get("battery-guard").await.unwrap();
    let moves: Vec<&serde_json::Value> = p.data["status"]["migrations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("camera")))
        .collect();
    assert!(
        moves.iter().filter(|m| m["result"] == "Succeeded").count() <= 1
            && !moves.iter().any(|m| m["result"] == "Failed"),
        "migrations recorded: {moves:?}"
    );
    l.assert_no_request_refused();
    l.timeline.print("leader killed → standby takes over");
}
