//! Extender latency and throughput over loopback HTTP, with the real router and a table of 5 000
//! nodes. Run: `cargo bench -p edgewatt-scheduler --bench extender`.
//!
//! Targets (issues 10, 18): prioritize over 5 000 node names p99 < 2 ms and ≥ 2 000 requests/s; filter
//! over 1 000 full Node objects p99 < 50 ms; RSS < 50 MB with 5 000 nodes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use edgewatt_crds::prom::{Reading, SignalTable};
use edgewatt_crds::promql::Signal;
use edgewatt_scheduler::headroom::{HeadroomTable, Policy};
use edgewatt_scheduler::nodes::{NodeFacts, NodeView};
use edgewatt_scheduler::{server, state::AppState};
use serde_json::json;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn table(n: usize) -> HeadroomTable {
    let mut readings = HashMap::new();
    for i in 0..n {
        let mut m = HashMap::new();
        m.insert(
            Signal::PowerBudget,
            Reading {
                value: 100.0,
                age_secs: Some(1.0),
            },
        );
        m.insert(
            Signal::NodeWatts,
            Reading {
                value: (i % 90) as f64,
                age_secs: Some(1.0),
            },
        );
        readings.insert(format!("node-{i:05}"), m);
    }
    let pods = (0..2000).map(|i| ("shop".to_string(), format!("web-7d4b9c8f6-{i:05}"), 5.0));
    HeadroomTable::new(
        SignalTable {
            fetched_at: Some(SystemTime::now()),
            readings,
        },
        HashSet::new(),
        pods,
    )
}

async fn load(
    url: String,
    body: String,
    total: usize,
    concurrency: usize,
) -> (Vec<Duration>, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let body = Arc::new(body);
    let start = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
                let _ = resp.bytes().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, start.elapsed())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let before = rss_mb();
    // the Node watcher's view: every node known, half with a budget annotation
    let view = NodeView::synced((0..5000).map(|i| {
        (
            format!("node-{i:05}"),
            NodeFacts {
                budget_watts: (i % 2 == 0).then_some(120.0),
                starved_taint: false,
            },
        )
    }));
    let state = Arc::new(AppState::with_view(Policy::default(), table(5000), view));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server::router(state)).await.unwrap() });
    let pod = json!({"metadata": {"name": "web-7d4b9c8f6-new", "namespace": "shop", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6", "uid": "u", "controller": true}]}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}});

    let names: Vec<String> = (0..5000).map(|i| format!("node-{i:05}")).collect();
    let body = json!({"Pod": pod, "NodeNames": names}).to_string();
    let url = format!("http://{addr}/prioritize");
    load(url.clone(), body.clone(), 200, 4).await; // warm-up
    let (mut lat, took) = load(url, body.clone(), 4000, 4).await;
    println!(
        "prioritize, 5 000 NodeNames ({} KiB request), 4 000 requests, 4 concurrent clients:",
        body.len() / 1024
    );
    println!(
        "  p50 {:.3} ms, p99 {:.3} ms, {:.0} requests/s (targets: p99 < 2 ms, ≥ 2 000/s)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        lat.len() as f64 / took.as_secs_f64()
    );
    let (mut lat2, took2) = load(format!("http://{addr}/prioritize"), body.clone(), 2000, 2).await;
    println!(
        "  two clients: p50 {:.3} ms, p99 {:.3} ms, {:.0} requests/s",
        pct(&mut lat2, 0.5),
        pct(&mut lat2, 0.99),
        lat2.len() as f64 / took2.as_secs_f64()
    );
    let (mut lat1, took1) = load(format!("http://{addr}/prioritize"), body, 1000, 1).await;
    println!(
        "  single client: p50 {:.3} ms, p99 {:.3} ms, {:.0} requests/s",
        pct(&mut lat1, 0.5),
        pct(&mut lat1, 0.99),
        lat1.len() as f64 / took1.as_secs_f64()
    );

    let items: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"metadata": {"name": format!("node-{i:05}"), "labels": {"kubernetes.io/hostname": format!("node-{i:05}"), "topology.kubernetes.io/zone": "edge-1"}, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "images": [{"names": ["registry.k8s.io/pause:3.9"], "sizeBytes": 321520}], "nodeInfo": {"kubeletVersion": "v1.31.0", "osImage": "Debian", "architecture": "amd64", "containerRuntimeVersion": "containerd://1.7", "kernelVersion": "6.1", "kubeProxyVersion": "", "machineID": "m", "systemUUID": "s", "bootID": "b", "operatingSystem": "linux"}}}))
        .collect();
    let body = json!({"Pod": pod, "Nodes": {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}}).to_string();
    let (mut lat, _) = load(format!("http://{addr}/filter"), body.clone(), 200, 2).await;
    println!(
        "filter, 1 000 full Node objects ({} KiB request), 200 requests, 2 clients:",
        body.len() / 1024
    );
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms (target p99 < 50 ms)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!(
        "RSS {:.1} MB (before the table {:.1} MB; target < 50 MB with 5 000 nodes)",
        rss_mb(),
        before
    );
}
