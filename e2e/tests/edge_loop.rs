//! End-to-end scenarios for the whole loop (issue 7): exporters → Prometheus → controller and
//! extender → cluster state, on the embedded API server double (or a real cluster with
//! `E2E_KUBECONFIG`). Each scenario prints a timeline.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const NS: &str = "edge";

async fn edge_cluster() -> Loop {
    let mut l = Loop::start(&[("dev-a", Kind::Device(NS)), ("dev-b", Kind::Device(NS))]).await;
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

/// Scenario 1: device A's battery drains below the policy → its EdgeWorkload runs on device B
/// before it leaves A; `edgewatt_migrations_total` increases; the chart's migration alert fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_drain_migrates_make_before_break_and_alerts() {
    let l = edge_cluster().await;
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
    l.timeline
        .print("battery drain → make-before-break migration");
}

/// Scenario 5: the controller is killed (SIGKILL) while the copy is deploying and restarted:
/// nothing duplicated, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_mid_migration_resumes() {
    let mut l = edge_cluster().await;
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
        || async {
            let wls = wl_api.list(&Default::default()).await.ok()?;
            (wls.items.len() > 1
                || wls.items.iter().any(|w| {
                    w.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("edgewatt.io/migration"))
                }))
            .then_some(())
        },
    )
    .await;
    l.controller.kill();
    l.timeline.mark("controller SIGKILLed mid-migration");
    tokio::time::sleep(Duration::from_secs(3)).await;
    l.controller.start();
    l.timeline.mark("controller restarted");
    wait_for(
        "camera only on dev-b, no leftovers",
        Duration::from_secs(60),
        || async {
            let p = placements(&l).await;
            let wls = wl_api.list(&Default::default()).await.ok()?;
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
        },
    )
    .await;
    l.timeline
        .mark("camera on dev-b exactly once; intent cleared");
    l.timeline.print("controller killed mid-migration");
}

/// Scenario 6: Observe mode → status and Events only, no move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_only_reports() {
    let l = edge_cluster().await;
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
    if let Some(s) = &l.cluster.server {
        s.clear_requests();
    }
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
    if let Some(s) = &l.cluster.server {
        let controller_writes: Vec<String> = s
            .writes()
            .into_iter()
            // the Flotta stand-in writes devices; the controller may write status, Events, its Lease
            .filter(|w| !w.path.contains("/edgedevices"))
            .filter(|w| {
                !w.path.ends_with("/status")
                    && !w.path.contains("/events")
                    && !w.path.contains("/leases")
            })
            .map(|w| format!("{} {}", w.method, w.path))
            .collect();
        assert!(
            controller_writes.is_empty(),
            "Observe mode wrote: {controller_writes:?}"
        );
    }
    let reasons = l.cluster.event_reasons().await;
    assert!(reasons.keys().any(|r| r.contains("Starved")), "{reasons:?}");
    l.timeline.print("Observe mode");
}
