//! Benchmark of the API server double (not a timed test): listing 10 000 pods, and watch fan-out
//! to 10 watchers. Run: `cargo bench -p edgewatt-e2e --bench apiserver`.

use std::time::{Duration, Instant};

use edgewatt_e2e::apiserver::ApiServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn pod_json(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}"), "namespace": "default",
                     "labels": {"app": format!("app-{}", i % 50), "tier": "edge"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]},
        "spec": {"nodeName": format!("node-{}", i % 100),
                 "containers": [{"name": "app", "image": "registry.example/app:1.2.3",
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.168.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn list_bench(s: &ApiServer) {
    for i in 0..10_000 {
        s.put(pod_json(i)).unwrap();
    }
    let client = s.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut typed = Vec::new();
    let mut raw = Vec::new();
    let mut bytes = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let list = pods.list(&ListParams::default()).await.unwrap();
        typed.push(t.elapsed());
        assert_eq!(list.items.len(), 10_000);
        let t = Instant::now();
        let req = http::Request::get("/api/v1/namespaces/default/pods")
            .body(Vec::new())
            .unwrap();
        let text = client.request_text(req).await.unwrap();
        raw.push(t.elapsed());
        bytes = text.len();
    }
    println!(
        "list 10000 pods: raw HTTP GET p50 {:?} (max {:?}, {} KiB); typed kube Api::list p50 {:?} (max {:?})",
        median(raw.clone()),
        raw.iter().max().unwrap(),
        bytes / 1024,
        median(typed.clone()),
        typed.iter().max().unwrap()
    );
}

async fn watch_bench(s: &ApiServer, events: usize, via_http: bool) {
    let client = s.client().unwrap();
    let ns_pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench"}})).unwrap(),
        )
        .await;
    let rv = s.resource_version().to_string();
    let mut watchers = Vec::new();
    for _ in 0..10 {
        let mut wp = WatchParams::default().timeout(290);
        wp.bookmarks = false;
        let stream = ns_pods.watch(&wp, &rv).await.unwrap();
        watchers.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut n = 0;
            while let Some(ev) = stream.try_next().await.unwrap() {
                if matches!(ev, WatchEvent::Added(_)) {
                    n += 1;
                    if n == events {
                        return Instant::now();
                    }
                }
            }
            panic!("watch ended after {n} events");
        }));
    }
    let start = Instant::now();
    if via_http {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let api = ns_pods.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..events).step_by(8) {
                    let mut p = pod_json(i);
                    p["metadata"]["namespace"] = "bench".into();
                    let p: Pod = serde_json::from_value(p).unwrap();
                    api.create(&PostParams::default(), &p).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    } else {
        for i in 0..events {
            let mut p = pod_json(i);
            p["metadata"]["namespace"] = "bench".into();
            s.put(p).unwrap();
        }
    }
    let written = start.elapsed();
    let mut last = start;
    for w in watchers {
        last = last.max(w.await.unwrap());
    }
    let total = last - start;
    println!(
        "watch fan-out ({}): {events} events to 10 watchers: writes took {written:?}, all delivered after {total:?} \
         => {:.0} events/s per watcher, {:.0} deliveries/s total",
        if via_http { "8 concurrent HTTP creators" } else { "direct store writes" },
        events as f64 / total.as_secs_f64(),
        (events * 10) as f64 / total.as_secs_f64()
    );
    // Clean up for the next run.
    for i in 0..events {
        s.remove("pods", Some("bench"), &format!("pod-{i:05}"));
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = ApiServer::start().await.unwrap();
        list_bench(&s).await;
        let s = ApiServer::start().await.unwrap();
        watch_bench(&s, 5_000, false).await;
        watch_bench(&s, 2_000, true).await;
    });
}
