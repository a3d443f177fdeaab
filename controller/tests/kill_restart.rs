//! A controller killed mid-migration and restarted resumes the move: nothing duplicated, nothing
//! lost — repeated with seeded random kill points.
//!
//! Each run drives the reconcile cycle step by step against the API server double, with the
//! planner's Prometheus input given directly (`reconciler::cycle_with`). The controller talks to
//! the double through a kill switch: a loopback proxy that forwards requests until the
//! controller's write budget is spent, then refuses everything, so the cluster holds exactly the
//! writes made before the "kill" (the same as a SIGKILL between two requests). The controller is
//! then dropped — its memory, stores and Event cache with it — and a fresh one started from what
//! the API server holds. The test plays the Flotta operator and device agent: a device lists the
//! EdgeWorkloads whose `spec.device` names it, `Deploying` first and `running` after a random
//! number of steps.
//!
//! Checked after every write that reached the server and after every step: the original exists,
//! at most one copy exists, and at least one instance (original or copy) runs on a device
//! (never zero copies). At the end: exactly one EdgeWorkload, the original, re-pointed to and
//! running on the target; no copy, no intent annotation.

mod common;

use common::Rng;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};
use std::time::{Duration, Instant};

use chrono::Utc;
use edgewatt_controller::{
    actuator::copy_name, context::Context, cycle_with, leader::Fence, snapshot::PromData,
};
use edgewatt_crds::{
    keys,
    prom::{Reading, SignalTable},
    promql::Signal,
    EdgeWorkload, EnergyPolicy, MigrationResult,
};
use edgewatt_e2e::apiserver::ApiServer;
use kube::ResourceExt;
use serde_json::{json, Value};

const SEEDS: u64 = 60;
const NS: &str = "edge";
const APP: &str = "app";

// ----- what the cluster shows -----

fn workloads(server: &ApiServer) -> Vec<Value> {
    server
        .list("edgeworkloads")
        .into_iter()
        .filter(|w| w["metadata"]["namespace"] == NS)
        .collect()
}

fn device_running(server: &ApiServer, device: &str, workload: &str) -> bool {
    server
        .get("edgedevices", Some(NS), device)
        .and_then(|d| d["status"]["workloads"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|w| {
            w["name"] == workload
                && w["phase"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case("running"))
        })
}

/// The safety invariant at one observed point; `Err` says what is wrong.
fn check(server: &ApiServer) -> Result<(), String> {
    let ws = workloads(server);
    let names: Vec<&str> = ws
        .iter()
        .filter_map(|w| w["metadata"]["name"].as_str())
        .collect();
    if !names.contains(&APP) {
        return Err(format!("original lost: {names:?}"));
    }
    if ws.len() > 2 || names.iter().any(|n| *n != APP && *n != copy_name(APP)) {
        return Err(format!("duplicate: {names:?}"));
    }
    let live = ws
        .iter()
        .filter(|w| {
            let name = w["metadata"]["name"].as_str().unwrap_or_default();
            w["spec"]["device"]
                .as_str()
                .is_some_and(|d| device_running(server, d, name))
        })
        .count();
    if live == 0 {
        return Err(format!("zero running instances: {ws:?}"));
    }
    Ok(())
}

// ----- the kill switch -----

struct Switch {
    upstream: kube::Client,
    server: Arc<ApiServer>,
    /// Writes still allowed; `None`: never killed.
    budget: Mutex<Option<u32>>,
    killed: AtomicBool,
    last_write: Mutex<String>,
    violations: Arc<Mutex<Vec<String>>>,
}

async fn proxy(
    axum::extract::State(sw): axum::extract::State<Arc<Switch>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let refuse = || {
        axum::response::Response::builder()
            .status(503)
            .body(axum::body::Body::from("killed"))
            .unwrap()
    };
    if sw.killed.load(Ordering::SeqCst) {
        return refuse();
    }
    let write = !matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let what = format!("{} {}", req.method(), req.uri().path());
    if write {
        let mut b = sw.budget.lock().unwrap();
        if let Some(n) = b.as_mut() {
            if *n == 0 {
                sw.killed.store(true, Ordering::SeqCst);
                return refuse();
            }
            *n -= 1;
        }
    }
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    parts.headers.remove(axum::http::header::HOST);
    let up = axum::http::Request::from_parts(parts, kube::client::Body::from(bytes));
    let resp = match sw.upstream.send(up).await {
        Ok(r) => r,
        Err(e) => {
            return axum::response::Response::builder()
                .status(502)
                .body(axum::body::Body::from(e.to_string()))
                .unwrap()
        }
    };
    let (parts, body) = resp.into_parts();
    let bytes = body.collect_bytes().await.unwrap_or_default();
    if write {
        *sw.last_write.lock().unwrap() = what.clone();
        if let Err(v) = check(&sw.server) {
            sw.violations
                .lock()
                .unwrap()
                .push(format!("after {what}: {v}"));
        }
    }
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// One controller process: its context and its kill switch.
struct Controller {
    ctx: Arc<Context>,
    switch: Arc<Switch>,
    proxy_task: tokio::task::JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.proxy_task.abort();
    }
}

async fn start_controller(
    server: &Arc<ApiServer>,
    budget: Option<u32>,
    violations: &Arc<Mutex<Vec<String>>>,
) -> Controller {
    let mut up_cfg = server.config().unwrap();
    up_cfg.default_retry = false;
    let switch = Arc::new(Switch {
        upstream: kube::Client::try_from(up_cfg).unwrap(),
        server: server.clone(),
        budget: Mutex::new(budget),
        killed: AtomicBool::new(false),
        last_write: Mutex::new("none".into()),
        violations: violations.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(proxy)
        .with_state(switch.clone());
    let proxy_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cfg = server.config().unwrap();
    cfg.cluster_url = format!("http://{addr}").parse().unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    // The informer caches read the server directly; they die with the context.
    let stores = edgewatt_controller::stores::Stores::spawn(&server.client().unwrap());
    stores.ready().await;
    let ctx = Arc::new(Context::with_stores(
        stores,
        client.clone(),
        client,
        common::no_prometheus(),
        common::settings(Duration::from_secs(60)),
        Fence::always(),
        "kill-test",
    ));
    Controller {
        ctx,
        switch,
        proxy_task,
    }
}

/// Waits until the controller's EdgeWorkload and EdgeDevice caches show what the server holds.
async fn sync(ctx: &Context, server: &ApiServer) {
    let rv_of = |v: &Value| {
        (
            v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut want_w: Vec<_> = workloads(server).iter().map(rv_of).collect();
        let mut want_d: Vec<_> = server.list("edgedevices").iter().map(rv_of).collect();
        let mut have_w: Vec<_> = ctx
            .stores
            .workloads
            .state()
            .iter()
            .map(|w| (w.name_any(), w.resource_version().unwrap_or_default()))
            .collect();
        let mut have_d: Vec<_> = ctx
            .stores
            .devices
            .state()
            .iter()
            .map(|d| (d.name_any(), d.resource_version().unwrap_or_default()))
            .collect();
        for v in [&mut want_w, &mut want_d, &mut have_w, &mut have_d] {
            v.sort();
        }
        if want_w == have_w && want_d == have_d {
            return;
        }
        assert!(Instant::now() < deadline, "stores did not catch up");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ----- the Flotta stand-in -----

/// TEST PART: the Flotta operator and device agents. A device lists every EdgeWorkload whose
/// `spec.device` names it: `Deploying` for a random 0–2 steps, then `running` (lowercase, as
/// heartbeats write it) or `Running`.
struct Agent {
    /// (device, workload) → (steps seen, steps until running)
    seen: HashMap<(String, String), (u32, u32)>,
}

impl Agent {
    fn sync(&mut self, server: &ApiServer, rng: &mut Rng) {
        let ws = workloads(server);
        for dev in ["d1", "d2"] {
            let desired: Vec<String> = ws
                .iter()
                .filter(|w| {
                    w["spec"]["device"] == dev && w["metadata"]["deletionTimestamp"].is_null()
                })
                .filter_map(|w| w["metadata"]["name"].as_str().map(String::from))
                .collect();
            self.seen
                .retain(|(d, w), _| d != dev || desired.contains(w));
            let mut status = Vec::new();
            for w in &desired {
                let e = self
                    .seen
                    .entry((dev.to_string(), w.clone()))
                    .or_insert_with(|| (0, rng.below(3) as u32));
                let phase = if e.0 >= e.1 {
                    if rng.below(2) == 0 {
                        "running"
                    } else {
                        "Running"
                    }
                } else {
                    "Deploying"
                };
                e.0 += 1;
                status.push(json!({"name": w, "phase": phase}));
            }
            let mut d = server.get("edgedevices", Some(NS), dev).unwrap();
            let before = d["status"]["workloads"].clone();
            let same = before.as_array().is_some_and(|b| {
                b.len() == status.len()
                    && b.iter().zip(&status).all(|(x, y)| {
                        x["name"] == y["name"]
                            && x["phase"].as_str().map(str::to_lowercase)
                                == y["phase"].as_str().map(str::to_lowercase)
                    })
            });
            if !same {
                d["status"]["workloads"] = Value::Array(status);
                server.put(d).unwrap();
            }
        }
    }
}

fn prom() -> PromData {
    let mut devices = SignalTable::default();
    for (d, ratio) in [("d1", 0.1), ("d2", 0.9)] {
        devices.readings.entry(d.into()).or_default().insert(
            Signal::BatteryRatio,
            Reading {
                value: ratio,
                age_secs: Some(1.0),
            },
        );
    }
    PromData {
        devices,
        ..Default::default()
    }
}

async fn setup() -> Arc<ApiServer> {
    let server = ApiServer::start().await.unwrap();
    server
        .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    for (d, ws) in [
        ("d1", json!([{"name": APP, "phase": "Running"}])),
        ("d2", json!([])),
    ] {
        server
            .put(json!({
                "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeDevice",
                "metadata": {"name": d, "namespace": NS},
                "spec": {},
                "status": {"phase": "up", "workloads": ws}
            }))
            .unwrap();
    }
    server
        .put(json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
            "metadata": {"name": APP, "namespace": NS},
            "spec": {"device": "d1", "type": "pod",
                "pod": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .unwrap();
    let p: EnergyPolicy = serde_json::from_value(json!({
        "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "targets": {"edgeDeviceSelector": {}},
            "starvation": {"batteryBelowPercent": 20, "for": "1m"},
            "recovery": {"batteryAbovePercent": 35, "for": "1m"},
            "action": {"mode": "Migrate", "strategy": "MakeBeforeBreak",
                "cooldown": "10m", "migrationTimeout": "30m"}
        }
    }))
    .unwrap();
    server.put_typed(&p).unwrap();
    Arc::new(server)
}

fn done(server: &ApiServer) -> bool {
    let ws = workloads(server);
    ws.len() == 1
        && ws[0]["metadata"]["name"] == APP
        && ws[0]["spec"]["device"] == "d2"
        && ws[0]["metadata"]["annotations"][keys::MIGRATION_INTENT].is_null()
        && device_running(server, "d2", APP)
}

/// One seeded run; returns the writes after which the controller was killed.
async fn run(seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let server = setup().await;
    let violations = Arc::new(Mutex::new(Vec::new()));
    // One or two kills, each after a random number of writes of that controller's life.
    let mut kills: Vec<u32> = (0..1 + rng.below(2))
        .map(|_| rng.below(16) as u32)
        .collect();
    kills.reverse();
    let mut ctl = start_controller(&server, kills.pop(), &violations).await;
    let mut agent = Agent {
        seen: [(("d1".to_string(), APP.to_string()), (100, 0))].into(),
    };
    let mut killed_after = Vec::new();
    let t0 = Utc::now();
    let prom = prom();
    let mut step = 0i64;
    while !done(&server) {
        assert!(
            step < 40,
            "seed {seed}: no convergence; {:?}",
            workloads(&server)
        );
        agent.sync(&server, &mut rng);
        if let Err(v) = check(&server) {
            panic!("seed {seed} step {step}: {v}");
        }
        sync(&ctl.ctx, &server).await;
        let p: EnergyPolicy = server.get_typed(None, "p").unwrap();
        let now = t0 + chrono::Duration::seconds(31 * step);
        let res = cycle_with(&p, &ctl.ctx, now, Ok(prom.clone())).await;
        if ctl.switch.killed.load(Ordering::SeqCst) {
            killed_after.push(ctl.switch.last_write.lock().unwrap().clone());
            if let Err(v) = check(&server) {
                panic!("seed {seed} after kill: {v}");
            }
            // Restart: nothing survives but what the API server holds.
            let budget = kills.pop();
            drop(ctl);
            ctl = start_controller(&server, budget, &violations).await;
        } else {
            res.unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
        }
        step += 1;
    }
    // Exactly one workload, the original, on the target; nothing left over.
    let ws = workloads(&server);
    assert_eq!(ws.len(), 1, "seed {seed}: {ws:?}");
    let app: EdgeWorkload = server.get_typed(Some(NS), APP).unwrap();
    assert_eq!(app.spec.device.as_deref(), Some("d2"), "seed {seed}");
    assert!(!app.annotations().contains_key(keys::MIGRATION_INTENT));
    assert!(server
        .get("edgeworkloads", Some(NS), &copy_name(APP))
        .is_none());
    // The status tells the truth too, once the controller has run after the move ended.
    // (A last restart, with no kill pending.)
    drop(ctl);
    let ctl = start_controller(&server, None, &violations).await;
    let p: EnergyPolicy = server.get_typed(None, "p").unwrap();
    sync(&ctl.ctx, &server).await;
    cycle_with(
        &p,
        &ctl.ctx,
        t0 + chrono::Duration::seconds(31 * step),
        Ok(prom.clone()),
    )
    .await
    .unwrap();
    let st = server
        .get_typed::<EnergyPolicy>(None, "p")
        .unwrap()
        .status
        .unwrap();
    let recs: Vec<_> = st.migrations.iter().filter(|r| r.name == APP).collect();
    // A record can be missing: two kills, each just before the status write that would have
    // carried it (start, then finish). What is there is never wrong.
    assert!(
        recs.last()
            .is_none_or(|r| r.result == MigrationResult::Succeeded),
        "seed {seed}: {recs:?}"
    );
    if recs.is_empty() {
        println!("seed {seed}: the migration record was lost with the kills {killed_after:?}");
    }
    assert!(
        recs.iter().all(|r| r.result != MigrationResult::InProgress),
        "seed {seed}: {recs:?}"
    );
    let v = violations.lock().unwrap();
    assert!(v.is_empty(), "seed {seed}: {v:?}");
    // Never twice: one move (one record at most), one copy ever created, however often the
    // controller was killed and restarted in between.
    assert!(
        recs.len() <= 1,
        "seed {seed}: the workload was moved twice: {recs:?}"
    );
    let copies_created = server
        .writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/edgeworkloads") && w.status < 300)
        .count();
    assert_eq!(copies_created, 1, "seed {seed}: copies created");
    killed_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_migration_resumes_without_duplicate_or_loss() {
    let started = Instant::now();
    let mut points: HashMap<String, usize> = HashMap::new();
    let mut kills = 0;
    for seed in 0..SEEDS {
        for after in run(seed).await {
            kills += 1;
            // Name the kill point by the last write before it: method and resource.
            let mut key = after.split(' ').next().unwrap_or_default().to_string();
            let segs: Vec<&str> = after.split('/').collect();
            if let Some(r) = segs
                .iter()
                .find(|s| ["edgeworkloads", "energypolicies", "events", "edgedevices"].contains(s))
            {
                key = format!("{key} {r}");
            }
            if after.ends_with("/status") {
                key.push_str("/status");
            }
            *points.entry(key).or_default() += 1;
        }
    }
    let mut points: Vec<_> = points.into_iter().collect();
    points.sort();
    println!(
        "{SEEDS} runs, {kills} kills in {:.1}s; killed right after:",
        started.elapsed().as_secs_f64()
    );
    for (k, n) in &points {
        println!("  {n:3} × {k}");
    }
    assert!(kills >= SEEDS as usize);
    assert!(started.elapsed() < Duration::from_secs(60));
}
