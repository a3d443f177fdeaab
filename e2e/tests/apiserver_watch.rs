//! Watch semantics of the API server double, through kube's raw watch, `watcher`, reflector and
//! `Controller`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgewatt_crds::EnergyPolicy;
use edgewatt_e2e::apiserver::{ApiServer, Options};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use tokio::time::timeout;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"containers": []}}),
    )
    .unwrap()
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn raw_watch_history_selectors_bookmarks_gone_and_timeout() {
    let s = ApiServer::start_with(Options {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(s.client().unwrap());
    let a = pods
        .create(&PostParams::default(), &pod("a", json!({"app": "web"})))
        .await
        .unwrap();
    let rv_a = a.resource_version().unwrap();
    pods.create(&PostParams::default(), &pod("b", json!({"app": "db"})))
        .await
        .unwrap();

    // From a resourceVersion: only later events, filtered by the label selector.
    let mut wp = WatchParams::default().labels("app=web").timeout(2);
    wp.bookmarks = false;
    let mut stream = pods.watch(&wp, "0").await.unwrap().boxed();
    match timeout(T, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(p) => assert_eq!(p.name_any(), "a"),
        other => panic!("{other:?}"),
    }
    // Relabelling b into the selector shows up as ADDED, out of it as DELETED.
    pods.patch(
        "b",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    match timeout(T, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(p) => assert_eq!(p.name_any(), "b"),
        other => panic!("{other:?}"),
    }
    pods.patch(
        "b",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    match timeout(T, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Deleted(p) => assert_eq!(p.name_any(), "b"),
        other => panic!("{other:?}"),
    }
    // timeoutSeconds ends the stream.
    let rest: Vec<_> = timeout(T, stream.collect::<Vec<_>>()).await.unwrap();
    assert!(rest.iter().all(|e| !matches!(e, Ok(WatchEvent::Added(_)))));

    // Replay from an old resourceVersion, with bookmarks carrying the current one.
    let wp = WatchParams::default().timeout(5);
    let mut stream = pods.watch(&wp, &rv_a).await.unwrap().boxed();
    let mut names = Vec::new();
    let mut bookmark = None;
    while bookmark.is_none() {
        match timeout(T, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => names.push(p.name_any()),
            WatchEvent::Bookmark(b) => bookmark = Some(b.metadata.resource_version),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(names, ["b", "b", "b"]);
    assert_eq!(bookmark.unwrap(), s.resource_version().to_string());

    // After compaction an old resourceVersion is 410 Gone, as an ERROR event.
    s.compact();
    let mut stream = pods
        .watch(
            &WatchParams {
                bookmarks: false,
                ..Default::default()
            },
            &rv_a,
        )
        .await
        .unwrap()
        .boxed();
    match timeout(T, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Gone")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn watcher_lists_streams_and_relists_after_410() {
    let s = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(s.client().unwrap());
    pods.create(&PostParams::default(), &pod("a", json!({})))
        .await
        .unwrap();
    let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
    let log = || {
        s.requests()
            .iter()
            .map(|r| format!("{} {}?{} {}", r.method, r.path, r.query, r.status))
            .collect::<Vec<_>>()
    };
    let mut next = async || match timeout(T, events.try_next()).await {
        Ok(e) => e.transpose().unwrap(),
        Err(_) => panic!("no watcher event; requests: {:#?}", log()),
    };
    assert!(matches!(next().await.unwrap(), watcher::Event::Init));
    match next().await.unwrap() {
        watcher::Event::InitApply(p) => assert_eq!(p.name_any(), "a"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next().await.unwrap(), watcher::Event::InitDone));
    pods.create(&PostParams::default(), &pod("b", json!({})))
        .await
        .unwrap();
    match next().await.unwrap() {
        watcher::Event::Apply(p) => assert_eq!(p.name_any(), "b"),
        other => panic!("{other:?}"),
    }
    // Force the watch through 410: the watcher must re-list and see the current state.
    s.force_relist();
    pods.create(&PostParams::default(), &pod("c", json!({})))
        .await
        .unwrap();
    let mut relisted = Vec::new();
    let mut saw_gone = false;
    loop {
        match next().await {
            Err(watcher::Error::WatchError(st)) if st.code == 410 => saw_gone = true,
            Err(e) => panic!("{e:?}"),
            Ok(e) => match e {
                watcher::Event::Init => relisted.clear(),
                watcher::Event::InitApply(p) => relisted.push(p.name_any()),
                watcher::Event::InitDone => break,
                other => panic!("{other:?}"),
            },
        }
    }
    assert!(saw_gone, "the watcher saw 410 Gone");
    relisted.sort();
    assert_eq!(relisted, ["a", "b", "c"]);
    pods.delete("a", &Default::default()).await.unwrap();
    match next().await.unwrap() {
        watcher::Event::Delete(p) => assert_eq!(p.name_any(), "a"),
        other => panic!("{other:?}"),
    }
    let requests = s.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.query.contains("watch=true"))
            .count()
            >= 2,
        "the watcher reconnected"
    );
}

#[tokio::test]
async fn reflector_store_converges_through_dropped_watches() {
    let s = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(s.client().unwrap());
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {}),
    );
    for i in 0..20 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({})))
            .await
            .unwrap();
        if i == 10 {
            s.drop_watches();
        }
    }
    for i in 0..5 {
        pods.delete(&format!("p{i}"), &Default::default())
            .await
            .unwrap();
    }
    timeout(T, async {
        loop {
            if reader.state().len() == 15 && reader.state().iter().all(|p| p.name_any() != "p0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reflector converged");
    task.abort();
}

#[tokio::test]
async fn controller_reconciles_on_changes() {
    let s = ApiServer::start().await.unwrap();
    let client = s.client().unwrap();
    let eps: Api<EnergyPolicy> = Api::all(client.clone());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let ctl = tokio::spawn(
        Controller::new(eps.clone(), watcher::Config::default())
            .run(
                move |ep: Arc<EnergyPolicy>, ctx: Arc<Api<EnergyPolicy>>| {
                    let seen = seen.clone();
                    async move {
                        seen.fetch_add(1, Ordering::SeqCst);
                        // Write observedGeneration through the status subresource.
                        let g = ep.metadata.generation;
                        ctx.patch_status(
                            &ep.name_any(),
                            &Default::default(),
                            &kube::api::Patch::Merge(json!({"status": {"observedGeneration": g}})),
                        )
                        .await?;
                        Ok::<_, kube::Error>(Action::await_change())
                    }
                },
                |_, _, _| Action::requeue(Duration::from_secs(1)),
                Arc::new(eps.clone()),
            )
            .for_each(|_| async {}),
    );
    let ep: EnergyPolicy = serde_json::from_value(json!({"metadata": {"name": "ep"}, "spec": {"targets": {"nodeSelector": {}}, "starvation": {"batteryBelowPercent": 20.0, "for": "2m"}}})).unwrap();
    eps.create(&PostParams::default(), &ep).await.unwrap();
    let wait_gen = |g: i64| {
        let eps = eps.clone();
        async move {
            timeout(T, async {
                loop {
                    let ep = eps.get("ep").await.unwrap();
                    if ep.status.and_then(|st| st.observed_generation) == Some(g) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("reconciled")
        }
    };
    wait_gen(1).await;
    eps.patch(
        "ep",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"starvation": {"for": "3m"}}})),
    )
    .await
    .unwrap();
    wait_gen(2).await;
    // The status write triggers one more (no-op) reconcile, which must not loop forever:
    // identical status patches keep the resourceVersion and emit no event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count.load(Ordering::SeqCst), n, "controller settled");
    assert!(n >= 2);
    ctl.abort();
}

/// Fault hook: a resource's watch events arrive late (as a real server's watch cache lags behind
/// its writes), in order, while GET stays current — the situation in which a controller that acts
/// on its own cache repeats steps.
#[tokio::test]
async fn watch_delay_delivers_events_late_in_order_while_reads_stay_current() {
    let s = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(s.client().unwrap());
    s.set_watch_delay(
        "pods",
        Duration::from_millis(800),
        Duration::from_millis(1200),
    );
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {}),
    );
    // The initial (empty) list is not delayed: wait until the watch is open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    for i in 0..5 {
        pods.create(&PostParams::default(), &pod(&format!("late{i}"), json!({})))
            .await
            .unwrap();
    }
    // A GET sees the write at once; the cache does not, yet.
    assert!(pods.get("late4").await.is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reader.state().len(), 0, "events arrived before their delay");
    timeout(T, async {
        while reader.state().len() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("delayed events arrive");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Other resources are not delayed.
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(s.client().unwrap());
    let mut w = ns
        .watch(&WatchParams::default(), &s.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    let t0 = std::time::Instant::now();
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "prompt"}})).unwrap(),
    )
    .await
    .unwrap();
    let ev = timeout(T, w.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Added(_)));
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    task.abort();
}
