//! The controller tests' harness: the controller's settings and context as the binary builds
//! them, a loopback HTTP proxy in front of the API server double, for faults the double
//! does not have per client: answering some requests itself (a denied permission), holding
//! others forever (a hung Lease renew of one replica), and logging when each request left its
//! client.

#![allow(dead_code)]

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};
use std::time::Instant;

use edgewatt_e2e::apiserver::ApiServer;

/// A request as the proxy received it (i.e. when the client sent it).
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
}

impl Seen {
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

/// Answers a request itself instead of forwarding it (method, path).
pub type Deny = fn(&str, &str) -> Option<axum::response::Response>;

pub struct Proxy {
    /// A client whose requests all go through the proxy (no retries).
    pub client: kube::Client,
    pub log: Arc<Mutex<Vec<Seen>>>,
    /// While set, requests whose path contains `hang_on` are held forever (until the client
    /// gives up on them).
    pub hang: Arc<AtomicBool>,
}

impl Proxy {
    pub fn writes_after(&self, t: Instant, skip: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at > t && s.is_write() && !s.path.contains(skip))
            .cloned()
            .collect()
    }
}

pub async fn proxy(server: &ApiServer, deny: Deny, hang_on: &'static str) -> Proxy {
    let mut up = server.config().unwrap();
    up.default_retry = false;
    let upstream = kube::Client::try_from(up).unwrap();
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let hang = Arc::new(AtomicBool::new(false));
    let (l, h) = (log.clone(), hang.clone());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (upstream, log, hang) = (upstream.clone(), l.clone(), h.clone());
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            log.lock().unwrap().push(Seen {
                at: Instant::now(),
                method: method.clone(),
                path: path.clone(),
            });
            if let Some(r) = deny(&method, &path) {
                return r;
            }
            if hang.load(Ordering::SeqCst) && path.contains(hang_on) {
                std::future::pending::<()>().await;
            }
            let (mut parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            parts.headers.remove(axum::http::header::HOST);
            let up =
                axum::http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
            match upstream.send(up).await {
                // Streamed through (watches stay open).
                Ok(r) => {
                    let (parts, body) = r.into_parts();
                    axum::response::Response::from_parts(parts, axum::body::Body::new(body))
                }
                Err(e) => axum::response::Response::builder()
                    .status(502)
                    .body(axum::body::Body::from(e.to_string()))
                    .unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cfg = server.config().unwrap();
    cfg.cluster_url = format!("http://{addr}").parse().unwrap();
    cfg.default_retry = false;
    Proxy {
        client: kube::Client::try_from(cfg).unwrap(),
        log,
        hang,
    }
}

pub fn forward_all(_: &str, _: &str) -> Option<axum::response::Response> {
    None
}

/// TEST PART: a scripted exporter (`/metrics` whose battery readings the test sets) and a real
/// Prometheus scraping it every second, waiting until the series are there.
pub mod scripted {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};

    pub fn body(devices: &[(&str, f64)], nodes: &[(&str, f64)]) -> String {
        let mut s = String::from("# TYPE edgewatt_node_battery_charge_ratio gauge\n");
        for (d, r) in devices {
            s.push_str(&format!(
                "edgewatt_node_battery_charge_ratio{{edgedeviceid=\"{d}\"}} {r}\n"
            ));
        }
        for (n, r) in nodes {
            s.push_str(&format!(
                "edgewatt_node_battery_charge_ratio{{node_name=\"{n}\"}} {r}\n"
            ));
        }
        s
    }

    pub async fn prometheus(text: String) -> (Prometheus, Arc<Mutex<String>>) {
        let body = Arc::new(Mutex::new(text));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let b = body.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let b = b.clone();
                async move { b.lock().unwrap().clone() }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let prom = tokio::task::spawn_blocking(move || {
            let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
            prom.add_target(ScrapeTarget::new("edge", &addr.to_string()))
                .unwrap();
            prom.wait_for_series(
                "edgewatt_node_battery_charge_ratio",
                Duration::from_secs(30),
            )
            .unwrap();
            prom
        })
        .await
        .unwrap();
        (prom, body)
    }
}

/// Waits until the controller's caches hold exactly what the API server holds (names and
/// resourceVersions of nodes, pods, PDBs, EdgeDevices and EdgeWorkloads): a test step acts on
/// a settled view instead of sleeping and hoping.
pub async fn sync(ctx: &edgewatt_controller::context::Context, server: &ApiServer) {
    use kube::Resource;
    fn want(list: Vec<serde_json::Value>) -> Vec<String> {
        let mut v: Vec<String> = list
            .iter()
            .map(|o| {
                format!(
                    "{}/{}@{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default(),
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                )
            })
            .collect();
        v.sort();
        v
    }
    fn have<K: Resource>(items: Vec<Arc<K>>) -> Vec<String> {
        let mut v: Vec<String> = items
            .iter()
            .map(|o| {
                format!(
                    "{}/{}@{}",
                    o.meta().namespace.as_deref().unwrap_or_default(),
                    o.meta().name.as_deref().unwrap_or_default(),
                    o.meta().resource_version.as_deref().unwrap_or_default()
                )
            })
            .collect();
        v.sort();
        v
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = &ctx.stores;
        let ok = want(server.list("edgeworkloads")) == have(s.workloads.state())
            && want(server.list("edgedevices")) == have(s.devices.state())
            && want(server.list("pods")) == have(s.pods.state())
            && want(server.list("nodes")) == have(s.nodes.state())
            && want(server.list("poddisruptionbudgets.policy")) == have(s.pdbs.state());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "stores did not catch up");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The controller's settings as the binary builds them from its command line with every flag at
/// its default (what the chart runs, [`edgewatt_controller::cli::Args`]), but for `interval`:
/// tests that drive cycles by hand step `now` up to a minute at a time, and an interval of a
/// minute keeps such steps within the data-gap tolerance (2 × interval) of `for` windows.
pub fn settings(interval: std::time::Duration) -> edgewatt_controller::context::Settings {
    use clap::Parser;
    let mut args = edgewatt_controller::cli::Args::try_parse_from(["edgewatt-controller"])
        .expect("the controller's defaults parse");
    args.interval = interval;
    args.settings()
}

/// A Prometheus reader nobody answers, for cycles driven with their readings given.
pub fn no_prometheus() -> edgewatt_crds::prom::PromReader {
    edgewatt_crds::prom::PromReader::new(&edgewatt_crds::prom::PromConfig::new(
        "http://127.0.0.1:9",
    ))
    .unwrap()
}

/// A controller context on `client` (evictions too) reading `reader`, at `interval`.
pub fn context(
    client: kube::Client,
    reader: edgewatt_crds::prom::PromReader,
    interval: std::time::Duration,
    fence: edgewatt_controller::leader::Fence,
    instance: &str,
) -> Arc<edgewatt_controller::context::Context> {
    Arc::new(edgewatt_controller::context::Context::new(
        client.clone(),
        client,
        reader,
        settings(interval),
        fence,
        instance,
    ))
}

/// splitmix64: the model tests' seeded randomness (a case is replayed from its seed).
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}
