//! The degradation ladder (issue #27, DESIGN.md "Continuity") through the controller's public
//! interface: cycles driven with `cycle_with` at chosen `now`s against the API server double,
//! asserted through the API (the objects, the policy's status, Events) and the controller's
//! metrics.
//!
//! TEST PARTS, named as such: a solar site — one node `n1` on battery (capacity 1 kWh, reserve
//! 10 %), whose supply history is 0 W from 18:00 to 06:00 and 300 W by day over the 3 days
//! before `now` — running a StatefulSet and Deployments whose pods carry
//! `edgewatt.io/criticality`. The test plays the rest of the cluster: the Deployment and
//! StatefulSet controllers ([`Site::reconcile`]: each owner's pods follow its `spec.replicas`,
//! new pods with new names), and the exporter and Prometheus ([`Site::prom`]: each pod draws its
//! app's watts scaled by its CPU limit against the original one — a throttle to 50 % halves it
//! — and the node draws a base load plus its pods').
//!
//! Numbers used throughout (forecast.rs "Model"): at 22:05 the recharge is 8 h away (the 06:00
//! sample); to last until it with `margin: 1h` to spare the draw must be at most
//! (energy − reserve) / 9 h. With 595 Wh that is 55 W: at 85 W the ladder needs 30 W.
//!
//! Upstream contracts: KEP-1287 (kubernetes/enhancements
//! `keps/sig-node/1287-in-place-update-pod-resources/README.md`: CPU lowered through
//! `pods/{name}/resize`, QoS class kept), the Scale subresource (kubernetes/kubernetes
//! `staging/src/k8s.io/api/autoscaling/v1/types.go`), a Deployment's pods owned by ReplicaSet
//! `<deployment>-<pod-template-hash>` (`pkg/controller/deployment/sync.go`), events.k8s.io/v1
//! Events (`staging/src/k8s.io/api/events/v1/types.go`: `regarding`, `reason`, `note`, `type`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use edgewatt_controller::{context::Context, cycle_with, leader::Fence, snapshot::PromData};
use edgewatt_crds::{
    prom::{Reading, SignalTable},
    promql::Signal,
    Criticality, DegradeState, DegradeStep, DegradedKind, DegradedWorkload, EnergyPolicy,
};
use edgewatt_e2e::apiserver::ApiServer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{json, Value};

const NS: &str = "apps";
const NODE: &str = "n1";
const POLICY: &str = "solar-site";
/// The pod-template-hash of every Deployment's current ReplicaSet.
const HASH: &str = "7c9f4";
const CAPACITY_WH: f64 = 1000.0;

// ----- the site -----

/// One app: a Deployment or StatefulSet, its pods' criticality, draw and resources.
#[derive(Clone)]
struct App {
    name: &'static str,
    kind: &'static str,
    replicas: i32,
    criticality: Option<&'static str>,
    /// Each pod's draw at its original CPU limit, watts.
    watts: f64,
    /// The container's `resources` (empty: BestEffort).
    resources: Value,
}

fn burstable() -> Value {
    json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}})
}

fn app(
    name: &'static str,
    kind: &'static str,
    replicas: i32,
    crit: &'static str,
    watts: f64,
) -> App {
    App {
        name,
        kind,
        replicas,
        criticality: Some(crit),
        watts,
        resources: burstable(),
    }
}

/// What the node's battery and supply show.
#[derive(Clone, Copy)]
struct Supply {
    energy_wh: f64,
    /// A generator or the grid: the exporter's `external_power` is 1.
    mains: bool,
    /// Whether the exporter publishes the state of charge (else only energy and capacity).
    ratio: bool,
}

struct Site {
    server: ApiServer,
    ctx: Arc<Context>,
    apps: Vec<App>,
    base_watts: f64,
    supply: Mutex<Supply>,
    /// Pods created so far (new names for each).
    created: Mutex<u32>,
}

/// 2025-06-01 at `h:m` UTC (a virtual night: cycles minutes apart).
fn at(day: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, day, h, m, s).unwrap()
}

/// The outside supply by hour of day: dark from 18:00 to 06:00.
fn sun(hour: u32) -> f64 {
    if (6..18).contains(&hour) {
        300.0
    } else {
        0.0
    }
}

fn policy_spec(mode: &str) -> Value {
    // As examples/solar-site.yaml, in `mode`, with `for` windows of a minute or two.
    json!({
        "targets": {"nodeSelector": {"matchLabels": {"power": "solar"}}},
        "workloads": {"excludeNamespaces": ["kube-system"]},
        "criticality": {"criticalPriorityAtLeast": 100000, "sheddablePriorityBelow": 0},
        "forecast": {"period": "24h", "periods": 3, "horizon": "48h", "reservePercent": 10},
        "starvation": {"runwayBelowRecharge": true, "batteryBelowPercent": 15, "for": "1m"},
        "recovery": {"batteryAbovePercent": 30, "for": "2m"},
        "action": {
            "mode": mode, "maxConcurrent": 2, "maxPerHour": 10, "cooldown": "30m",
            "migrationTimeout": "5m",
            "degrade": {"steps": ["Throttle", "Suspend"], "throttlePercent": 50, "margin": "1h",
                        "restoreMargin": "30m", "flapWindow": "1h"}
        }
    })
}

async fn client(server: &ApiServer) -> kube::Client {
    let mut cfg = server.config().unwrap();
    cfg.default_retry = false;
    kube::Client::try_from(cfg).unwrap()
}

/// A controller on `server`, as the binary builds it, with cycles driven by hand.
async fn controller(server: &ApiServer) -> Arc<Context> {
    let ctx = common::context(
        client(server).await,
        common::no_prometheus(),
        Duration::from_secs(60),
        Fence::always(),
        "test",
    );
    ctx.stores.ready().await;
    ctx
}

impl Site {
    async fn start(apps: Vec<App>, base_watts: f64, energy_wh: f64, mode: &str) -> Site {
        let server = ApiServer::start().await.unwrap();
        let ctx = controller(&server).await;
        server
            .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .unwrap();
        server
            .put(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE, "labels": {"power": "solar"}},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
        let site = Site {
            server,
            ctx,
            apps,
            base_watts,
            supply: Mutex::new(Supply {
                energy_wh,
                mains: false,
                ratio: true,
            }),
            created: Mutex::new(0),
        };
        for a in site.apps.clone() {
            if a.kind == "Pod" {
                site.new_pod(&a, a.name); // a bare pod: created once, never replaced
            } else {
                site.owner(&a);
            }
        }
        site.reconcile();
        let p: EnergyPolicy = serde_json::from_value(json!({
            "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
            "metadata": {"name": POLICY}, "spec": policy_spec(mode)
        }))
        .unwrap();
        site.server.put_typed(&p).unwrap();
        site
    }

    fn owner(&self, a: &App) {
        let mut annotations = json!({});
        if let Some(c) = a.criticality {
            annotations["edgewatt.io/criticality"] = json!(c);
        }
        let mut o = json!({
            "apiVersion": "apps/v1", "kind": a.kind,
            "metadata": {"name": a.name, "namespace": NS},
            "spec": {"replicas": a.replicas, "selector": {"matchLabels": {"app": a.name}},
                "template": {"metadata": {"labels": {"app": a.name}, "annotations": annotations},
                    "spec": {"containers": [{"name": "app", "image": "busybox",
                        "resources": a.resources}]}}}
        });
        if a.kind == "StatefulSet" {
            o["spec"]["serviceName"] = json!(a.name);
        }
        self.server.put(o).unwrap();
    }

    fn app(&self, name: &str) -> &App {
        self.apps.iter().find(|a| a.name == name).unwrap()
    }

    fn set_supply(&self, energy_wh: f64, mains: bool) {
        let mut s = self.supply.lock().unwrap();
        s.energy_wh = energy_wh;
        s.mains = mains;
    }

    /// The pods of app `name`, by name.
    fn pods_of(&self, name: &str) -> Vec<Value> {
        self.server
            .list("pods")
            .into_iter()
            .filter(|p| p["metadata"]["namespace"] == NS && p["metadata"]["labels"]["app"] == name)
            .collect()
    }

    fn pod(&self, name: &str) -> Value {
        self.server
            .get("pods", Some(NS), name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// The only pod of app `name`.
    fn only_pod(&self, app: &str) -> String {
        let pods = self.pods_of(app);
        assert_eq!(pods.len(), 1, "{app}: {pods:?}");
        pods[0]["metadata"]["name"].as_str().unwrap().to_string()
    }

    fn replicas(&self, kind: &str, name: &str) -> i64 {
        let plural = match kind {
            "Deployment" => "deployments.apps",
            "StatefulSet" => "statefulsets.apps",
            _ => panic!("{kind}"),
        };
        self.server.get(plural, Some(NS), name).unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap_or(0)
    }

    /// TEST PART: the Deployment and StatefulSet controllers. Each owner's pods follow its
    /// `spec.replicas` (a StatefulSet's keep their ordinal names; a Deployment's get new names).
    fn reconcile(&self) {
        for a in self.apps.iter().filter(|a| a.kind != "Pod") {
            let want = self.replicas(a.kind, a.name).max(0) as usize;
            let mut pods = self.pods_of(a.name);
            pods.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap().to_string());
            while pods.len() > want {
                let gone = pods.pop().unwrap();
                self.server
                    .remove("pods", Some(NS), gone["metadata"]["name"].as_str().unwrap());
            }
            for i in pods.len()..want {
                let name = if a.kind == "StatefulSet" {
                    format!("{}-{i}", a.name)
                } else {
                    let mut n = self.created.lock().unwrap();
                    *n += 1;
                    format!("{}-{HASH}-p{n}", a.name)
                };
                self.new_pod(a, &name);
            }
        }
    }

    fn new_pod(&self, a: &App, name: &str) {
        let (owner_kind, owner) = if a.kind == "StatefulSet" {
            ("StatefulSet", a.name.to_string())
        } else {
            ("ReplicaSet", format!("{}-{HASH}", a.name))
        };
        let mut annotations = json!({});
        if let Some(c) = a.criticality {
            annotations["edgewatt.io/criticality"] = json!(c);
        }
        let owners = if a.kind == "Pod" {
            json!([])
        } else {
            json!([{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                "uid": format!("uid-{owner}"), "controller": true}])
        };
        let qos = if a.resources == json!({}) {
            "BestEffort"
        } else {
            "Burstable"
        };
        self.server
            .put(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS,
                    "labels": {"app": a.name, "pod-template-hash": HASH},
                    "annotations": annotations,
                    "ownerReferences": owners},
                "spec": {"nodeName": NODE,
                    "containers": [{"name": "app", "image": "busybox", "resources": a.resources}]},
                "status": {"phase": "Running", "qosClass": qos}
            }))
            .unwrap();
    }

    /// A pod's draw now: its app's watts scaled by its CPU limit against the original.
    fn pod_watts(&self, p: &Value) -> f64 {
        let a = self.app(p["metadata"]["labels"]["app"].as_str().unwrap());
        let original = a.resources["limits"]["cpu"].as_str().map(millicores);
        let now = p["spec"]["containers"][0]["resources"]["limits"]["cpu"]
            .as_str()
            .map(millicores);
        match (original, now) {
            (Some(o), Some(n)) => a.watts * n / o,
            _ => a.watts,
        }
    }

    /// TEST PART: the exporter and Prometheus. The node's battery, draw and charge now, its
    /// hourly supply over the 3 days before `now`, each pod's draw.
    fn prom(&self, now: DateTime<Utc>) -> PromData {
        let s = *self.supply.lock().unwrap();
        let mut data = PromData::default();
        let mut draw = self.base_watts;
        for p in self.server.list("pods") {
            if p["spec"]["nodeName"] != NODE {
                continue;
            }
            let w = self.pod_watts(&p);
            draw += w;
            data.workload_watts.pods.insert(
                (
                    p["metadata"]["namespace"].as_str().unwrap().to_string(),
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                ),
                w,
            );
        }
        let supply_now = if s.mains { 500.0 } else { sun(now.hour()) };
        let net = supply_now - draw;
        let mut t = SignalTable::default();
        let row = t.readings.entry(NODE.to_string()).or_default();
        for (signal, value) in [
            (Signal::BatteryRatio, s.energy_wh / CAPACITY_WH),
            (Signal::BatteryEnergy, s.energy_wh * 3600.0),
            (Signal::BatteryCapacity, CAPACITY_WH * 3600.0),
            (Signal::BatteryDraw, (-net).max(0.0)),
            (Signal::ChargePower, net.max(0.0)),
            (Signal::NodeWatts, draw),
            (Signal::ExternalPower, if s.mains { 1.0 } else { 0.0 }),
        ] {
            if signal == Signal::BatteryRatio && !s.ratio {
                continue;
            }
            row.insert(
                signal,
                Reading {
                    value,
                    age_secs: Some(1.0),
                },
            );
        }
        data.nodes = t;
        // Hourly samples, each standing for the hour it starts, the last one at or before now.
        let last = now
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap();
        let history: Vec<(DateTime<Utc>, f64)> = (0..=74)
            .rev()
            .map(|h| {
                let t = last - chrono::Duration::hours(h);
                (t, sun(t.hour()))
            })
            .collect();
        let mut supply = edgewatt_controller::signals::SupplyHistory::new();
        supply.insert(NODE.to_string(), history);
        data.supply_nodes = Arc::new(supply);
        data
    }

    fn policy(&self) -> EnergyPolicy {
        self.server.get_typed(None, POLICY).unwrap()
    }

    /// One controller cycle at `now`: the cluster's controllers act first (on what the last
    /// cycle did), the controller's caches catch up, Prometheus reads the site.
    async fn cycle(&self, now: DateTime<Utc>) -> EnergyPolicy {
        self.cycle_on(&self.ctx, now).await
    }

    async fn cycle_on(&self, ctx: &Context, now: DateTime<Utc>) -> EnergyPolicy {
        self.reconcile();
        common::sync(ctx, &self.server).await;
        cycle_with(&self.policy(), ctx, now, Ok(self.prom(now)))
            .await
            .unwrap();
        self.policy()
    }

    /// Events with `reason` (events.k8s.io/v1), as (regarding kind, regarding name, type, note).
    fn events(&self, reason: &str) -> Vec<(String, String, String, String)> {
        self.server
            .list("events.events.k8s.io")
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (
                    s(&e["regarding"]["kind"]),
                    s(&e["regarding"]["name"]),
                    s(&e["type"]),
                    s(&e["note"]),
                )
            })
            .collect()
    }

    /// The value of the controller's series `name` whose labels include `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric(&self.ctx, name, labels)
    }

    /// Writes to pods and owners (`pods/*/resize`, `*/scale`) served so far, as "METHOD path".
    fn ladder_writes(&self) -> Vec<String> {
        self.server
            .writes()
            .into_iter()
            .filter(|r| r.path.ends_with("/resize") || r.path.ends_with("/scale"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

fn metric(ctx: &Context, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = ctx.metrics.encode();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name).then_some((rest, value))
        })
        .find(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse().unwrap())
}

fn millicores(q: &str) -> f64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<f64>().unwrap() * 1000.0,
    }
}

/// The container's CPU (limit, request).
fn cpu(pod: &Value) -> (String, String) {
    let r = &pod["spec"]["containers"][0]["resources"];
    (
        r["limits"]["cpu"].as_str().unwrap_or_default().to_string(),
        r["requests"]["cpu"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn ledger(p: &EnergyPolicy) -> Vec<DegradedWorkload> {
    p.status.clone().unwrap_or_default().degraded
}

fn degraded_count(p: &EnergyPolicy) -> u32 {
    p.status.clone().unwrap_or_default().degraded_count
}

/// The ledger as (kind, name, action, criticality, state).
fn held(p: &EnergyPolicy) -> Vec<(DegradedKind, String, DegradeStep, Criticality, DegradeState)> {
    let mut v: Vec<_> = ledger(p)
        .into_iter()
        .map(|d| (d.kind, d.name, d.action, d.criticality, d.state))
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

fn entry(p: &EnergyPolicy, name: &str) -> DegradedWorkload {
    ledger(p)
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} not in the ledger: {:?}", ledger(p)))
}

fn condition(p: &EnergyPolicy, type_: &str) -> Condition {
    p.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn mins(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// The site of most tests: a critical database, a normal API, two sheddable apps; 10 W base.
/// All up it draws 85 W.
fn apps() -> Vec<App> {
    vec![
        app("db", "StatefulSet", 1, "critical", 20.0),
        app("api", "Deployment", 1, "normal", 15.0),
        app("batch", "Deployment", 1, "sheddable", 10.0),
        app("report", "Deployment", 2, "sheddable", 15.0),
    ]
}

/// 22:05 on June 1st: the first cycle of the night.
fn night() -> DateTime<Utc> {
    at(1, 22, 5, 0)
}

/// Brings the site with `energy_wh` to the point where the node has just starved (its `for`
/// window of a minute): two cycles, the second at 22:06:01.
async fn starve(site: &Site) -> (DateTime<Utc>, EnergyPolicy) {
    let p = site.cycle(night()).await;
    assert!(ledger(&p).is_empty(), "nothing before the node starves");
    let t = night() + secs(61);
    (t, site.cycle(t).await)
}

// ----- 1. the night -----

/// Issue #27 "Degradation ladder" (rungs and order; only as far as the forecast needs;
/// `critical` never; the ledger written with what restores it; Events; metrics): at 85 W with
/// 595 Wh the node needs 30 W less. Sheddable first: throttle `batch` (its CPU limit 1 → 500m,
/// request 250m kept: 5 W) and suspend `report` (its Deployment's Scale 2 → 0: 30 W; its own
/// throttles dropped); `api` (normal) and `db` (critical) untouched. The night then holds: no
/// further step while the degraded site lasts until the recharge, and no restore while
/// restoring would not (hysteresis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn night_sheds_the_sheddable_first_and_only_as_far_as_needed() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    let batch = site.only_pod("batch");
    let api = site.only_pod("api");
    let (t, p) = starve(&site).await;

    assert_eq!(
        held(&p),
        vec![
            (
                DegradedKind::Pod,
                batch.clone(),
                DegradeStep::Throttle,
                Criticality::Sheddable,
                DegradeState::Applied
            ),
            (
                DegradedKind::Deployment,
                "report".into(),
                DegradeStep::Suspend,
                Criticality::Sheddable,
                DegradeState::Applied
            ),
        ]
    );
    assert_eq!(degraded_count(&p), 2);
    // The throttle: the limit halved through pods/resize, the request (already below) kept.
    assert_eq!(cpu(&site.pod(&batch)), ("500m".into(), "250m".into()));
    let e = entry(&p, &batch);
    let restore = e.restore.containers.clone().unwrap();
    assert_eq!(
        (restore[0].name.as_str(), restore[0].limit.as_str()),
        ("app", "1")
    );
    assert_eq!(restore[0].request.as_deref(), Some("250m"));
    assert_eq!(e.saved_watts, Some(5.0));
    assert_eq!(e.target, NODE);
    assert_eq!(e.since, "2025-06-01T22:06:01Z");
    assert!(
        e.reason.contains("n1") && e.reason.contains("W less"),
        "{}",
        e.reason
    );
    // The suspend: the Deployment at 0, its 2 replicas kept for the restore.
    assert_eq!(site.replicas("Deployment", "report"), 0);
    let e = entry(&p, "report");
    assert_eq!(e.restore.replicas, Some(2));
    assert_eq!(e.saved_watts, Some(30.0));
    // Untouched: the normal API and the critical database.
    assert_eq!(cpu(&site.pod(&api)), ("1".into(), "250m".into()));
    assert_eq!(cpu(&site.pod("db-0")), ("1".into(), "250m".into()));
    assert_eq!(site.replicas("Deployment", "api"), 1);
    assert_eq!(site.replicas("StatefulSet", "db"), 1);
    assert_eq!(
        site.ladder_writes().len(),
        2,
        "one resize, one scale: {:?}",
        site.ladder_writes()
    );
    // Events on the objects themselves.
    let th = site.events("WorkloadThrottled");
    assert_eq!(th.len(), 1, "{th:?}");
    assert_eq!(
        (th[0].0.as_str(), th[0].1.as_str()),
        ("Pod", batch.as_str())
    );
    assert_eq!(th[0].2, "Normal");
    let su = site.events("WorkloadSuspended");
    assert_eq!(su.len(), 1, "{su:?}");
    assert_eq!(
        (su[0].0.as_str(), su[0].1.as_str()),
        ("Deployment", "report")
    );
    // Metrics.
    let m = "edgewatt_degraded_workloads";
    for action in ["Throttle", "Suspend"] {
        assert_eq!(
            site.metric(
                m,
                &[
                    ("policy", POLICY),
                    ("mode", "Migrate"),
                    ("action", action),
                    ("criticality", "sheddable")
                ]
            ),
            Some(1.0),
            "{action}"
        );
        assert_eq!(
            site.metric(
                "edgewatt_ladder_steps_total",
                &[
                    ("policy", POLICY),
                    ("action", action),
                    ("result", "Applied")
                ]
            ),
            Some(1.0),
            "{action}"
        );
    }
    assert_eq!(site.metric(m, &[("criticality", "normal")]), None);
    // The forecast at 85 W: 495 Wh above the reserve last 5.82 h; the sun is 8 h away.
    let node = [("policy", POLICY), ("kind", "Node"), ("name", NODE)];
    let runway = site
        .metric("edgewatt_runway_forecast_seconds", &node)
        .unwrap();
    assert!((runway - 495.0 * 3600.0 / 85.0).abs() < 1.0, "{runway}");
    assert_eq!(
        site.metric("edgewatt_recharge_forecast_seconds", &node),
        Some(8.0 * 3600.0)
    );
    let starved = p.status.clone().unwrap().starved;
    assert_eq!(starved.len(), 1);
    assert_eq!(starved[0].name, NODE);
    assert_eq!(starved[0].runway_minutes, Some(349.4));
    assert_eq!(starved[0].recharge_minutes, Some(480.0));
    assert_eq!(
        condition(&p, "Degraded").status,
        "False",
        "{:?}",
        condition(&p, "Degraded")
    );

    // The night goes on: the degraded site (50 W) lasts until the recharge with the margin,
    // the held 35 W back would not: nothing more shed, nothing restored.
    let mut last = p;
    for i in 1..=20 {
        last = site.cycle(t + mins(i)).await;
    }
    assert_eq!(degraded_count(&last), 2, "{:?}", held(&last));
    assert_eq!(site.ladder_writes().len(), 2, "{:?}", site.ladder_writes());
    assert_eq!(site.pods_of("report").len(), 0);
    assert!(site.events("WorkloadRestored").is_empty());
    assert_eq!(
        site.metric("edgewatt_target_starved", &[("name", NODE)]),
        Some(1.0),
        "the node stays starved while the ladder holds its load"
    );
}

/// Issue #27 "Degradation ladder" (a `normal` workload only when the `sheddable` ones are not
/// enough): with 500 Wh the node needs 40.6 W less; every sheddable rung together saves 40 W
/// (both suspended: `report` 30 W, `batch` 10 W — their throttles dropped), so the normal rung
/// is reached and `api` is throttled (7.5 W) — not suspended, which it does not need. `db`
/// (critical) untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_workload_is_degraded_only_when_the_sheddable_ones_are_not_enough() {
    let site = Site::start(apps(), 10.0, 500.0, "Migrate").await;
    let api = site.only_pod("api");
    let (_, p) = starve(&site).await;
    assert_eq!(
        held(&p),
        vec![
            (
                DegradedKind::Pod,
                api.clone(),
                DegradeStep::Throttle,
                Criticality::Normal,
                DegradeState::Applied
            ),
            (
                DegradedKind::Deployment,
                "batch".into(),
                DegradeStep::Suspend,
                Criticality::Sheddable,
                DegradeState::Applied
            ),
            (
                DegradedKind::Deployment,
                "report".into(),
                DegradeStep::Suspend,
                Criticality::Sheddable,
                DegradeState::Applied
            ),
        ]
    );
    assert_eq!(cpu(&site.pod(&api)), ("500m".into(), "250m".into()));
    assert_eq!(site.replicas("Deployment", "api"), 1);
    assert_eq!(site.replicas("Deployment", "batch"), 0);
    assert_eq!(site.replicas("Deployment", "report"), 0);
    assert_eq!(cpu(&site.pod("db-0")), ("1".into(), "250m".into()));
    assert_eq!(site.replicas("StatefulSet", "db"), 1);
    assert_eq!(
        site.metric(
            "edgewatt_degraded_workloads",
            &[("action", "Throttle"), ("criticality", "normal")]
        ),
        Some(1.0)
    );
    assert_eq!(
        site.metric(
            "edgewatt_degraded_workloads",
            &[("action", "Suspend"), ("criticality", "sheddable")]
        ),
        Some(2.0)
    );
}

/// The night of [`a_normal_workload_is_degraded_only_when_the_sheddable_ones_are_not_enough`],
/// then the morning.
async fn night_with_api_throttled() -> (Site, String) {
    let site = Site::start(apps(), 10.0, 500.0, "Migrate").await;
    let api = site.only_pod("api");
    let (t, p) = starve(&site).await;
    assert_eq!(degraded_count(&p), 3);
    for i in 1..=5 {
        site.cycle(t + mins(i)).await;
    }
    (site, api)
}

/// Issue #27 "Restore in criticality order once the forecast says it fits", "What a restore
/// needs is written before the step" and "flaps": in the morning the sun is back (300 W, the
/// battery charging at 40 %): with everything back the supply still exceeds the draw, so the
/// forecast allows every restore at once (before the node has even recovered), and everything
/// comes back exactly as it was — `api`'s CPU limit and request, `report` at 2 replicas and `batch` at 1 —
/// in criticality order (the normal `api` first, then the sheddable suspends, largest first),
/// each with a `WorkloadRestored` Event; the ledger is empty and no flap is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn morning_restores_everything_exactly_in_criticality_order() {
    let (site, api) = night_with_api_throttled().await;
    let writes_at_night = site.ladder_writes().len();
    assert_eq!(writes_at_night, 3, "{:?}", site.ladder_writes());
    site.set_supply(400.0, false);
    let dawn = at(2, 6, 40, 0);
    let p = site.cycle(dawn).await;
    assert!(ledger(&p).is_empty(), "{:?}", held(&p));
    assert_eq!(degraded_count(&p), 0);
    // Exactly as before the night.
    assert_eq!(cpu(&site.pod(&api)), ("1".into(), "250m".into()));
    assert_eq!(site.replicas("Deployment", "report"), 2);
    assert_eq!(site.replicas("Deployment", "batch"), 1);
    // In criticality order, then largest first.
    let restores: Vec<String> = site.ladder_writes()[writes_at_night..].to_vec();
    assert_eq!(
        restores,
        vec![
            format!("PATCH /api/v1/namespaces/apps/pods/{api}/resize"),
            "PATCH /apis/apps/v1/namespaces/apps/deployments/report/scale".into(),
            "PATCH /apis/apps/v1/namespaces/apps/deployments/batch/scale".into(),
        ]
    );
    let restored = site.events("WorkloadRestored");
    let mut names: Vec<&str> = restored.iter().map(|e| e.1.as_str()).collect();
    names.sort();
    assert_eq!(names, vec![api.as_str(), "batch", "report"]);
    assert!(restored.iter().all(|e| e.2 == "Normal"));
    assert_eq!(
        site.metric(
            "edgewatt_ladder_steps_total",
            &[("action", "Restore"), ("result", "Applied")]
        ),
        Some(3.0)
    );
    assert_eq!(
        site.metric("edgewatt_degraded_workloads", &[("policy", POLICY)]),
        None
    );
    // The day goes on: the pods are back, the node recovers, nothing is shed again, no flap.
    let mut p = p;
    for i in 1..10 {
        p = site.cycle(dawn + mins(i)).await;
    }
    assert!(p.status.clone().unwrap().starved.is_empty());
    assert_eq!(site.pods_of("report").len(), 2);
    assert_eq!(site.ladder_writes().len(), writes_at_night + 3);
    assert_eq!(site.metric("edgewatt_ladder_flaps_total", &[]), None);
}

/// Issue #27 "flapWindow": a restore followed by a shed of the same workload within the window
/// is a flap. A generator runs for a few minutes at night (the node on mains: not starved, it
/// recovers and everything is restored); once it stops the node starves again and the same two
/// are shed again: two flaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_then_a_shed_within_the_flap_window_counts_as_a_flap() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    let (t, p) = starve(&site).await;
    assert_eq!(degraded_count(&p), 2);
    site.set_supply(595.0, true);
    site.cycle(t + mins(1)).await;
    site.cycle(t + mins(2)).await;
    let p = site.cycle(t + mins(3)).await;
    assert!(ledger(&p).is_empty(), "restored on mains: {:?}", held(&p));
    assert_eq!(site.events("WorkloadRestored").len(), 2);
    assert_eq!(site.metric("edgewatt_ladder_flaps_total", &[]), None);
    site.set_supply(595.0, false);
    site.cycle(t + mins(5)).await;
    let p = site.cycle(t + mins(6) + secs(1)).await;
    assert_eq!(degraded_count(&p), 2, "shed again: {:?}", held(&p));
    assert_eq!(
        site.metric("edgewatt_ladder_flaps_total", &[("policy", POLICY)]),
        Some(2.0)
    );
}

// ----- 3. exhausted -----

/// Issue #27 "only as far as the runway forecast needs … `critical` never degraded", when that
/// is not enough: a critical 40 W database and a sheddable 10 W batch at 300 Wh need 37.8 W
/// less; suspending `batch` is all the ladder may do. The policy says so (`Degraded`,
/// `LadderExhausted`, naming the node and the watts missing), a Warning Event on the policy,
/// and `edgewatt_ladder_shortfall_watts` shows the 27.8 W still missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_shedding_everything_is_not_enough_the_policy_says_so() {
    let apps = vec![
        app("db", "StatefulSet", 1, "critical", 40.0),
        app("batch", "Deployment", 1, "sheddable", 10.0),
    ];
    let site = Site::start(apps, 10.0, 300.0, "Migrate").await;
    let (_, p) = starve(&site).await;
    assert_eq!(
        held(&p)
            .into_iter()
            .map(|h| (h.0, h.1, h.2))
            .collect::<Vec<_>>(),
        vec![(
            DegradedKind::Deployment,
            "batch".into(),
            DegradeStep::Suspend
        )]
    );
    assert_eq!(cpu(&site.pod("db-0")), ("1".into(), "250m".into()));
    let c = condition(&p, "Degraded");
    assert_eq!(c.status, "True");
    assert!(c.reason.contains("LadderExhausted"), "{c:?}");
    assert!(
        c.message.contains("Node n1 (27.8 W short)"),
        "{}",
        c.message
    );
    let ev = site.events("LadderExhausted");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0].0.as_str(), ev[0].1.as_str(), ev[0].2.as_str()),
        ("EnergyPolicy", POLICY, "Warning")
    );
    let short = site
        .metric(
            "edgewatt_ladder_shortfall_watts",
            &[("policy", POLICY), ("kind", "Node"), ("name", NODE)],
        )
        .unwrap();
    assert!(
        (short - (60.0 - 200.0 / 9.0 - 10.0)).abs() < 0.01,
        "{short}"
    );
}

// ----- 4. Observe -----

/// Issue #27 and DESIGN.md "`Observe` = dry run: status, Events, metrics only": the same night
/// in Observe mode writes nothing to a pod or an owner; `status.degraded` lists what Migrate
/// would hold, as `DryRun` entries; `degradedCount` (what is held) stays 0; the gauge says
/// `mode="Observe"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_lists_what_it_would_degrade_and_writes_nothing() {
    let site = Site::start(apps(), 10.0, 595.0, "Observe").await;
    let batch = site.only_pod("batch");
    let before: Vec<Value> = site.server.list("pods");
    let (t, p) = starve(&site).await;
    assert_eq!(
        held(&p),
        vec![
            (
                DegradedKind::Pod,
                batch.clone(),
                DegradeStep::Throttle,
                Criticality::Sheddable,
                DegradeState::DryRun
            ),
            (
                DegradedKind::Deployment,
                "report".into(),
                DegradeStep::Suspend,
                Criticality::Sheddable,
                DegradeState::DryRun
            ),
        ]
    );
    assert_eq!(degraded_count(&p), 0);
    assert_eq!(
        site.metric(
            "edgewatt_degraded_workloads",
            &[("mode", "Observe"), ("action", "Throttle")]
        ),
        Some(1.0)
    );
    assert_eq!(
        site.metric("edgewatt_degraded_workloads", &[("mode", "Migrate")]),
        None
    );
    // The status is written once for the dry run, not again each cycle while nothing changes.
    let status_writes = || {
        site.server
            .writes()
            .iter()
            .filter(|r| r.path.ends_with("/status"))
            .count()
    };
    site.cycle(t + mins(1)).await;
    let before_quiet = status_writes();
    for i in 2..=5 {
        site.cycle(t + mins(i)).await;
    }
    assert_eq!(status_writes(), before_quiet);
    let p = site.policy();
    assert_eq!(ledger(&p).len(), 2);
    for e in ledger(&p) {
        assert_eq!(
            e.since, "2025-06-01T22:06:01Z",
            "{}: would be held since it starved",
            e.name
        );
    }
    assert!(
        site.ladder_writes().is_empty(),
        "{:?}",
        site.ladder_writes()
    );
    assert_eq!(site.server.list("pods"), before, "no pod changed");
    assert_eq!(site.replicas("Deployment", "report"), 2);
    assert_eq!(
        site.metric("edgewatt_ladder_steps_total", &[("policy", POLICY)]),
        None
    );
}

// ----- 5. restart -----

/// Issue #27 "What a restore needs is written before the step and survives restarts": the
/// controller's memory is lost mid-night (a new `Context` on the same API server, as after a
/// crash or a failover). It reloads the ledger from the status, takes no step twice — the pod
/// is not throttled again and its restore data is still its original limit (`1`), not the
/// lowered `500m` — exports the held workloads again, and restores each exactly once in the
/// morning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_never_degrades_twice_and_restores_once() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    let batch = site.only_pod("batch");
    let (t, p) = starve(&site).await;
    let before = ledger(&p);
    assert_eq!(before.len(), 2);
    let restarted = controller(&site.server).await;
    let mut p = p;
    for i in 1..=10 {
        p = site.cycle_on(&restarted, t + mins(i)).await;
    }
    assert_eq!(
        ledger(&p),
        before,
        "the ledger as written before the restart"
    );
    assert_eq!(
        entry(&p, &batch).restore.containers.unwrap()[0].limit,
        "1",
        "the original limit, not the lowered one"
    );
    assert_eq!(site.ladder_writes().len(), 2, "{:?}", site.ladder_writes());
    assert_eq!(
        metric(
            &restarted,
            "edgewatt_degraded_workloads",
            &[("action", "Throttle"), ("mode", "Migrate")]
        ),
        Some(1.0)
    );
    // Morning, on the restarted controller.
    site.set_supply(400.0, false);
    let dawn = at(2, 6, 40, 0);
    for i in 0..5 {
        p = site.cycle_on(&restarted, dawn + mins(i)).await;
    }
    assert!(ledger(&p).is_empty());
    assert_eq!(cpu(&site.pod(&batch)), ("1".into(), "250m".into()));
    assert_eq!(site.replicas("Deployment", "report"), 2);
    assert_eq!(
        site.ladder_writes(),
        vec![
            format!("PATCH /api/v1/namespaces/apps/pods/{batch}/resize"),
            "PATCH /apis/apps/v1/namespaces/apps/deployments/report/scale".into(),
            "PATCH /apis/apps/v1/namespaces/apps/deployments/report/scale".into(),
            format!("PATCH /api/v1/namespaces/apps/pods/{batch}/resize"),
        ],
        "one step and one restore each"
    );
    assert_eq!(site.events("WorkloadRestored").len(), 2);
}

// ----- 6. policy deletion -----

/// Issue #27 "everything restored when … the policy is deleted" (DESIGN.md "Policy
/// lifecycle": the finalizer holds the policy until what it did is undone): deleting the policy
/// mid-night restores the throttled pod and the suspended Deployment, and only then is the
/// finalizer removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_policy_restores_everything_before_its_finalizer_goes() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    let batch = site.only_pod("batch");
    let (t, p) = starve(&site).await;
    assert_eq!(degraded_count(&p), 2);
    assert_eq!(
        p.metadata.finalizers,
        Some(vec!["edgewatt.io/cleanup".to_string()])
    );
    let api: kube::Api<EnergyPolicy> = kube::Api::all(site.server.client().unwrap());
    api.delete(POLICY, &Default::default()).await.unwrap();
    let mut i = 1;
    while let Some(p) = site.server.get_typed::<EnergyPolicy>(None, POLICY) {
        assert!(p.metadata.deletion_timestamp.is_some());
        assert!(i < 5, "the finalizer was not removed: {:?}", held(&p));
        site.reconcile();
        common::sync(&site.ctx, &site.server).await;
        cycle_with(&p, &site.ctx, t + mins(i), Ok(site.prom(t + mins(i))))
            .await
            .unwrap();
        i += 1;
    }
    assert_eq!(cpu(&site.pod(&batch)), ("1".into(), "250m".into()));
    assert_eq!(site.replicas("Deployment", "report"), 2);
    let restored = site.events("WorkloadRestored");
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert!(
        restored.iter().all(|e| e.3.contains("being deleted")),
        "{restored:?}"
    );
    // Restored before the finalizer went.
    let writes = site.server.writes();
    let last_restore = writes
        .iter()
        .rposition(|r| r.path.ends_with("/resize") || r.path.ends_with("/scale"))
        .unwrap();
    let finalizer = writes
        .iter()
        .rposition(|r| r.path.ends_with(&format!("/energypolicies/{POLICY}")))
        .unwrap();
    assert!(last_restore < finalizer, "{writes:?}");
    assert_eq!(
        site.metric("edgewatt_degraded_workloads", &[("policy", POLICY)]),
        None
    );
}

// ----- 7. users -----

/// Issue #27 ladder protocol "a user's takeover released with an Event" (degrader.rs: a
/// workload a user restored or changed is never overridden): a user scales the suspended
/// `report` back to 2 at night. The controller leaves it as the user set it — not scaled to 0
/// again for the rest of the night, not "restored" over the user's change — says so with a
/// Warning Event on the Deployment, and its ledger entry goes. (The ladder may still find the
/// watts elsewhere, its pods' throttles included: the user took back the replicas.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_deployment_a_user_scales_up_is_left_as_they_set_it() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    let (t, _) = starve(&site).await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(site.server.client().unwrap(), NS);
    deployments
        .patch_scale(
            "report",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let writes = site.ladder_writes().len();
    let p = site.cycle(t + mins(1)).await;
    assert!(
        ledger(&p).iter().all(|e| e.name != "report"),
        "{:?}",
        held(&p)
    );
    let released = site.events("Released");
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(
        (
            released[0].0.as_str(),
            released[0].1.as_str(),
            released[0].2.as_str()
        ),
        ("Deployment", "report", "Warning")
    );
    let mut p = p;
    for i in 2..=30 {
        p = site.cycle(t + mins(i)).await;
    }
    assert_eq!(site.replicas("Deployment", "report"), 2, "{:?}", held(&p));
    assert_eq!(site.pods_of("report").len(), 2);
    assert!(
        !site.ladder_writes()[writes..]
            .iter()
            .any(|w| w.contains("/deployments/report/")),
        "{:?}",
        site.ladder_writes()
    );
}

/// Issue #27 ladder protocol: a throttled pod a user deletes (its ReplicaSet makes a new one)
/// leaves the ledger with a Warning Event; nothing is written to it or restored in its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_pod_a_user_deletes_leaves_the_ledger() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    let batch = site.only_pod("batch");
    let (t, _) = starve(&site).await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(site.server.client().unwrap(), NS);
    pods.delete(&batch, &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let p = site.cycle(t + mins(1)).await;
    assert!(site.server.get("pods", Some(NS), &batch).is_none());
    assert!(ledger(&p).iter().all(|e| e.name != batch), "{:?}", held(&p));
    assert_eq!(degraded_count(&p), 1);
    let released = site.events("Released");
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(
        (
            released[0].0.as_str(),
            released[0].1.as_str(),
            released[0].2.as_str()
        ),
        ("Pod", batch.as_str(), "Warning")
    );
    assert_eq!(
        site.ladder_writes()
            .iter()
            .filter(|w| w.contains(&batch))
            .count(),
        1,
        "the throttle only"
    );
}

/// Issue #27 "throttle (pod CPU limit through `pods/resize`)" where there is none: a BestEffort
/// pod has no CPU limit to lower (KEP-1287 "QOS Class": adding one would change its class), so
/// the ladder suspends its Deployment instead (the throttle it could not take is no news once
/// its unit is suspended: ladder.rs); a BestEffort pod without an owner can take neither step
/// and is reported with a `DegradeSkipped` Warning Event saying why. 25 W needed: `cache`
/// suspended (20 W), `api` throttled (7.5 W).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_besteffort_pod_is_not_throttled_and_goes_to_the_suspend_rung() {
    let best_effort = |name, kind, watts| App {
        resources: json!({}),
        ..app(name, kind, 1, "sheddable", watts)
    };
    let apps = vec![
        app("db", "StatefulSet", 1, "critical", 20.0),
        app("api", "Deployment", 1, "normal", 15.0),
        best_effort("cache", "Deployment", 20.0),
        best_effort("debug", "Pod", 0.0),
    ];
    let site = Site::start(apps, 10.0, 460.0, "Migrate").await;
    let api = site.only_pod("api");
    let cache = site.only_pod("cache");
    let (_, p) = starve(&site).await;
    assert_eq!(
        held(&p)
            .into_iter()
            .map(|h| (h.0, h.1, h.2))
            .collect::<Vec<_>>(),
        vec![
            (DegradedKind::Pod, api.clone(), DegradeStep::Throttle),
            (
                DegradedKind::Deployment,
                "cache".into(),
                DegradeStep::Suspend
            ),
        ]
    );
    assert!(
        !site.ladder_writes().iter().any(|w| w.contains(&cache)),
        "{:?}",
        site.ladder_writes()
    );
    assert_eq!(site.replicas("Deployment", "cache"), 0);
    let skipped = site.events("DegradeSkipped");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(
        (
            skipped[0].0.as_str(),
            skipped[0].1.as_str(),
            skipped[0].2.as_str()
        ),
        ("Pod", "debug", "Warning")
    );
    assert!(
        skipped[0].3.contains("no CPU limit") && skipped[0].3.contains("no controller"),
        "{}",
        skipped[0].3
    );
}

/// Issue #27 "throttle … through `pods/resize`" on a cluster that does not serve it
/// (Kubernetes < 1.33 or `InPlacePodVerticalScaling` off: kubernetes/kubernetes
/// `pkg/registry/core/rest/storage_core.go`): the throttles the ladder picked are not possible
/// (`DegradeSkipped` on each pod, naming pods/resize), and the ladder goes on to its next rung —
/// `report` suspended — instead of asking for the same impossible throttles every cycle.
/// 18.3 W needed: the three sheddable throttles would have saved 20 W.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pods_resize_the_ladder_suspends_instead() {
    let site = Site::start(apps(), 10.0, 700.0, "Migrate").await;
    site.server.serve_pod_resize(false);
    let (t, p) = starve(&site).await;
    assert!(ledger(&p).is_empty(), "{:?}", held(&p));
    let skipped = site.events("DegradeSkipped");
    let mut on: Vec<&str> = skipped.iter().map(|e| e.1.as_str()).collect();
    on.sort();
    assert_eq!(on.len(), 3, "{skipped:?}");
    assert!(on[0].starts_with("batch-") && on[1].starts_with("report-"));
    assert!(
        skipped.iter().all(|e| e.3.contains("pods/resize")),
        "{skipped:?}"
    );
    let mut p = p;
    for i in 1..=3 {
        p = site.cycle(t + mins(i)).await;
    }
    assert_eq!(
        held(&p)
            .into_iter()
            .map(|h| (h.0, h.1, h.2))
            .collect::<Vec<_>>(),
        vec![(
            DegradedKind::Deployment,
            "report".into(),
            DegradeStep::Suspend
        )]
    );
    assert_eq!(site.replicas("Deployment", "report"), 0);
    assert_eq!(site.pods_of("batch").len(), 1);
    assert_eq!(cpu(&site.pods_of("batch")[0]), ("1".into(), "250m".into()));
    assert_eq!(site.events("DegradeSkipped").len(), 3, "not asked again");
}

// ----- 8. fail safe -----

/// DESIGN.md "Failure rules" (Prometheus down ⇒ no new actions) for the ladder: while
/// Prometheus cannot be read (the controller's real reader against an address nobody answers)
/// nothing is shed at night and nothing restored in the morning; the policy says
/// `PrometheusAvailable: False`. Once it answers again the ladder goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prometheus_unreadable_nothing_is_shed_or_restored() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    let down = |site: &Site, now: DateTime<Utc>| {
        let ctx = site.ctx.clone();
        let p = site.policy();
        async move {
            edgewatt_controller::cycle(&p, &ctx, now).await.unwrap();
        }
    };
    site.cycle(night()).await;
    for i in 1..=5 {
        site.reconcile();
        down(&site, night() + secs(61) + mins(i - 1)).await;
    }
    let p = site.policy();
    assert_eq!(condition(&p, "PrometheusAvailable").status, "False");
    assert!(ledger(&p).is_empty());
    assert!(site.ladder_writes().is_empty());
    // Prometheus back: the node starves (its `for` window starts again after the gap), the
    // ladder sheds.
    let t = night() + mins(10);
    site.cycle(t).await;
    let p = site.cycle(t + secs(61)).await;
    assert_eq!(degraded_count(&p), 2);
    let writes = site.ladder_writes().len();
    // Morning with Prometheus down: nothing restored.
    site.set_supply(400.0, false);
    let dawn = at(2, 6, 40, 0);
    for i in 0..5 {
        down(&site, dawn + mins(i)).await;
    }
    assert_eq!(degraded_count(&site.policy()), 2);
    assert_eq!(site.ladder_writes().len(), writes);
    let p = site.cycle(dawn + mins(6)).await;
    assert_eq!(degraded_count(&p), 0);
}

// ----- 9. bad input -----

/// Issue #27 "Bad input ⇒ a clear error … never a panic" and crds `Criticality::parse` ("a typo
/// must not silently make a critical workload sheddable"): `edgewatt.io/criticality: urgent` on
/// `batch` makes the policy `Degraded` with reason `InvalidCriticality` naming the pod and the
/// allowed values; `batch` counts as critical, so it is never degraded while the ladder takes
/// what it needs elsewhere (`report` suspended, then the normal `api` throttled — where a
/// sheddable `batch` would have been throttled instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_criticality_is_reported_and_never_degraded() {
    let mut apps = apps();
    apps[2].criticality = Some("urgent");
    let site = Site::start(apps, 10.0, 595.0, "Migrate").await;
    let batch = site.only_pod("batch");
    let api = site.only_pod("api");
    let (t, p) = starve(&site).await;
    let c = condition(&p, "Degraded");
    assert_eq!(c.status, "True");
    assert!(c.reason.contains("InvalidCriticality"), "{c:?}");
    assert!(
        c.message.contains(&format!("Pod apps/{batch}"))
            && c.message.contains("\"urgent\"")
            && c.message.contains("critical, normal, sheddable"),
        "{}",
        c.message
    );
    assert!(!site.events("InvalidCriticality").is_empty());
    let mut p = p;
    for i in 1..=5 {
        p = site.cycle(t + mins(i)).await;
    }
    assert_eq!(
        held(&p)
            .into_iter()
            .map(|h| (h.0, h.1, h.2))
            .collect::<Vec<_>>(),
        vec![
            (DegradedKind::Pod, api.clone(), DegradeStep::Throttle),
            (
                DegradedKind::Deployment,
                "report".into(),
                DegradeStep::Suspend
            ),
        ]
    );
    assert_eq!(cpu(&site.pod(&batch)), ("1".into(), "250m".into()));
    assert_eq!(site.replicas("Deployment", "batch"), 1);
}

/// Issue #27 "Runway forecast per target: battery energy, net draw, …" with the battery's
/// capacity as the exporter measures it (`edgewatt_node_battery_capacity_joules`, forecast.rs
/// `ForecastInput::of`: "capacity (measured, else energy / state of charge)"): a battery that
/// reports its energy and full energy but no state of charge still gets a forecast, so the
/// node starves on its runway and the ladder sheds as on any other night.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_uses_the_measured_battery_capacity() {
    let site = Site::start(apps(), 10.0, 595.0, "Migrate").await;
    site.supply.lock().unwrap().ratio = false;
    let (_, p) = starve(&site).await;
    assert_eq!(degraded_count(&p), 2, "{:?}", held(&p));
    let starved = p.status.clone().unwrap().starved;
    assert_eq!(starved[0].runway_minutes, Some(349.4));
    assert_eq!(starved[0].battery_percent, None);
}
