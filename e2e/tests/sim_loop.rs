//! Issue #28 §4: the simulator carries over to the real loop. One compressed scenario
//! (`sim-loop-fleet.yaml`: three battery nodes on a summer morning, five pods, a `Migrate`
//! EnergyPolicy on battery percent) runs twice:
//!
//! - **virtual time**: `edgewatt-controller simulate`'s `migrate` run (the library's
//!   [`run::run_with`]) with its action log ([`ActionLog`]);
//! - **the real loop**: the chart installed into the API server double, every binary as the chart
//!   renders it (exporters, controller, extender), a real Prometheus, the kube-scheduler and
//!   ReplicaSet stand-ins. A driver steps the same battery physics
//!   ([`edgewatt_controller::sim::world::Battery::step`], the same site's TMY weather through the
//!   same PV model) with the load of the pods the API server has bound to each node, and writes
//!   each node's `power_supply` battery and hwmon power meter files, which its exporter reads.
//!   The pods start where the simulator's scheduler put them (its log's minute 0).
//!
//! and the sequence of actions must be the same: which node is starved and tainted, which pods
//! leave it in which order, where their replacements land, which stay (the pinned one), and the
//! recovery (untaint) once the sun has recharged it; no node goes dark.
//!
//! **Time**: one virtual minute is one real second. The fleet file's policy durations are
//! divided by 60 for the real loop (`for: 2m` → `2s`, recovery `for: 5m` → `5s`, `cooldown: 10m`
//! → `10s`); the simulator's 1-minute decision interval and physics step are the chart's 1 s
//! controller interval (`values-test.yaml`) and the driver's 1 s step; the exporters, Prometheus
//! and the extender's refresh run every second too, i.e. once per virtual minute.
//!
//! **What differs, and why** (the test prints both timelines and the lag of each action):
//! - *When*: measured on a loaded 2-core machine (three runs, load average 4–8), real minus
//!   virtual: the taint +0.1–0.3 s, the four evictions +0.1–0.3, +1.1, +2.1, +3.1 s, the untaint
//!   +6.3 s. The simulator's decision at minute m reads the world after minute m−1's physics;
//!   the real controller reads what the driver wrote through the exporter's next sample,
//!   Prometheus' next scrape and its own next cycle (1 s each, overlapping): about the same
//!   minute, so the taint comes on time. Each eviction then adds a second: with
//!   `maxConcurrent: 1` the next eviction waits until the evicted pod is gone, which in the
//!   simulator is at once (one eviction per virtual minute) and in the real loop after the pod's
//!   1 s grace period and the next cycle (one per 2 s). node-a thus carries its pods a few
//!   virtual minutes longer, ends about 3 points lower, and the sun needs about 6 minutes more
//!   to lift it past the recovery threshold: the untaint's lag. Only order and placement are
//!   asserted, never a time.
//! - *Interleaving*: in virtual time a replacement is placed the minute after its eviction (the
//!   pod restart delay, 30 s, rounded up to the 1-minute step); in the real loop the ReplicaSet
//!   and scheduler stand-ins place it within a fraction of a second (0.2–0.3 s measured). Could
//!   the next eviction overtake a placement, the order would differ without anything being
//!   wrong: evictions are compared in order, placements as a set.
//! - *Names*: pods of the simulator are `<workload>-<replica>-<generation>`, the real ones get
//!   ReplicaSet-style names: actions are compared by workload (the Deployment), never by pod.
//! - *Why they land where they land*: the simulator's scheduler binds to the node with the most
//!   watts of headroom; the real one is the stand-in plus the chart's extender, which scores the
//!   share of the budget left capped by the battery charge. The scenario makes both choose the
//!   same: node-b has both the most watts and the most charge; `ingest` may only run in zone `ac`.
//! - *The ladder and the forecast are off*: the runway forecast needs days of supply history in
//!   Prometheus (the simulator seeds it from the weather file; a real Prometheus has only this
//!   run's minutes), so the scenario is the `migrate` run, starvation on battery percent alone.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use edgewatt_controller::sim::actions::{Action, ActionLog};
use edgewatt_controller::sim::fleet::{Fleet, PlacementDef};
use edgewatt_controller::sim::pv::MINUTES_PER_YEAR;
use edgewatt_controller::sim::run::{self, Options, RunKind};
use edgewatt_controller::sim::world::{Battery, Flow, World};
use edgewatt_exporter::fixture::{BatteryFiles, FixtureTree};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

/// The fleet file, beside this test.
const FLEET: &str = "tests/sim-loop-fleet.yaml";
/// 21 June, 07:00 local standard time at the site.
const START_DAY: &str = "06-21";
const START_MINUTE_OF_DAY: u32 = 7 * 60;
/// Real seconds per virtual minute.
const SECONDS_PER_MINUTE: f64 = 1.0;
/// Generous bound on the real run (the virtual one recovers within the hour).
const REAL_RUN_LIMIT: Duration = Duration::from_secs(300);
/// The starvation taint (DESIGN.md).
const TAINT: &str = "edgewatt.io/energy-starved";

fn fleet_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FLEET)
}

fn options() -> Options {
    Options {
        start_minute: run::parse_start(START_DAY).unwrap() + START_MINUTE_OF_DAY,
        days: 1,
        // one plotted sample per minute (the node-a charge printed beside the real one)
        sample_points: 24 * 60,
        ..Options::default()
    }
}

/// The fleet file's one policy for the real loop: as written, every duration a 60th.
fn compressed_policy() -> Value {
    let text = std::fs::read_to_string(fleet_path()).unwrap();
    let file: Value = serde_saphyr::from_str(&text).unwrap();
    let policies = file["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 1, "the scenario has one policy");
    let mut p = policies[0].clone();
    for (section, field) in [
        ("starvation", "for"),
        ("recovery", "for"),
        ("action", "cooldown"),
        ("action", "migrationTimeout"),
    ] {
        let v = &mut p["spec"][section][field];
        if let Some(s) = v.as_str() {
            let d = edgewatt_crds::duration::parse(s).unwrap();
            assert_eq!(d.as_secs() % 60, 0, "{section}.{field} {s}: whole minutes");
            *v = json!(format!("{}s", d.as_secs() / 60));
        }
    }
    p
}

/// An action seen in the real loop, `secs` after the driver's first step.
#[derive(Debug, Clone)]
struct Seen {
    secs: f64,
    action: Action,
}

/// What the comparison looks at of a run: marks (taints) in order, evictions `(workload, from)`
/// in order, placements after the start `(workload, on)` as a sorted list.
#[derive(Debug, PartialEq)]
struct Sequence {
    marks: Vec<String>,
    evictions: Vec<(String, String)>,
    placements: Vec<(String, String)>,
}

fn sequence<'a>(actions: impl Iterator<Item = &'a Action>) -> Sequence {
    let mut s = Sequence {
        marks: Vec::new(),
        evictions: Vec::new(),
        placements: Vec::new(),
    };
    for a in actions {
        match a {
            Action::Taint { node } => s.marks.push(format!("taint {node}")),
            Action::Untaint { node } => s.marks.push(format!("untaint {node}")),
            Action::Evicted { workload, from, .. } => {
                s.evictions.push((workload.clone(), from.clone()))
            }
            Action::Placed { workload, on, .. } => {
                s.placements.push((workload.clone(), on.clone()))
            }
            other => s.marks.push(format!("{other:?}")),
        }
    }
    s.placements.sort();
    s
}

/// Every eviction comes after its node's taint and before its untaint.
fn evictions_within_starvation<T>(log: &[(T, Action)]) -> Result<(), String>
where
    T: std::fmt::Debug,
{
    let mut tainted: BTreeMap<&str, bool> = BTreeMap::new();
    for (t, a) in log {
        match a {
            Action::Taint { node } => {
                tainted.insert(node, true);
            }
            Action::Untaint { node } => {
                tainted.insert(node, false);
            }
            Action::Evicted { from, object, .. }
                if !tainted.get(from.as_str()).copied().unwrap_or(false) =>
            {
                return Err(format!(
                    "{object} evicted from {from} at {t:?} while it was not tainted"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The load of each node: its base draw and the pods bound to it that are not terminating.
fn loads(fleet: &Fleet, pods: &[DynamicObject]) -> BTreeMap<String, f64> {
    let draw: BTreeMap<&str, f64> = fleet
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), w.draw_watts))
        .collect();
    let mut load: BTreeMap<String, f64> = fleet
        .targets
        .iter()
        .map(|t| (t.id.name.clone(), t.base_watts))
        .collect();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(node), Some(app)) = (
            p.data["spec"]["nodeName"].as_str(),
            p.metadata.labels.as_ref().and_then(|l| l.get("app")),
        ) else {
            continue;
        };
        if let (Some(l), Some(w)) = (load.get_mut(node), draw.get(app.as_str())) {
            *l += w;
        }
    }
    load
}

/// A node's supply as the kernel shows it: the battery (`power_supply`, ABI
/// `sysfs-class-power`: `status`, `capacity`, `energy_now`/`energy_full` in µWh, `power_now` in
/// µW, a magnitude whose direction `status` gives), the mains adapter offline (off-grid: the
/// panel charges the battery, it is no external supply), and the node's platform meter (hwmon
/// `power1_average`, µW).
fn write_supply(tree: &FixtureTree, b: &Battery, soc_wh: f64, flow: &Flow, load_w: f64) {
    let (drawn_w, stored_w) = (flow.drawn_wh * 60.0, flow.stored_wh * 60.0);
    let status = if drawn_w > 0.0 {
        "Discharging"
    } else if stored_w > 0.0 {
        "Charging"
    } else {
        "Not charging"
    };
    tree.battery(
        "BAT0",
        &BatteryFiles {
            status,
            capacity: Some((soc_wh / b.capacity_wh * 100.0).round() as u64),
            energy_now_uwh: Some((soc_wh * 1e6) as u64),
            energy_full_uwh: Some((b.capacity_wh * 1e6) as u64),
            power_now_uw: Some((drawn_w.max(stored_w) * 1e6) as u64),
            ..Default::default()
        },
    );
    tree.mains("AC", false);
    tree.set(
        "sys/class/hwmon/hwmon0/power1_average",
        (load_w * 1e6) as u64,
    );
}

fn pods_api(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NS,
        &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
    )
}

const NS: &str = "shop";

/// A pod of `workload` as its ReplicaSet creates it: the workload's labels, its criticality and
/// pin as annotations, its nodeSelector; bound to `node` when given (the initial placement).
fn pod_of(fleet: &Fleet, workload: &str, n: u32, node: Option<&str>) -> Value {
    let w = fleet
        .workloads
        .iter()
        .find(|w| w.name == workload)
        .expect("a workload of the fleet");
    let PlacementDef::Pod { node_selector } = &w.placement else {
        panic!("{workload}: the scenario has pods only");
    };
    let hash = "6d4b75cb6d";
    let mut labels: serde_json::Map<String, Value> = w
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    labels.insert("app".into(), json!(workload));
    labels.insert("pod-template-hash".into(), json!(hash));
    let mut annotations = json!({"edgewatt.io/criticality": w.criticality});
    if w.pinned {
        annotations["edgewatt.io/pinned"] = json!("true");
    }
    let mut spec = json!({"nodeSelector": node_selector, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": workload, "image": "registry.k8s.io/pause:3.10"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{workload}-{hash}-{n:05}"), "namespace": NS,
            "labels": labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{workload}-{hash}"),
                "uid": format!("00000000-0000-0000-0000-{:012}", workload.len()), "controller": true}]},
        "spec": spec})
}

/// TEST PART — ReplicaSet stand-in for every workload of the fleet: keeps its `replicas` live
/// (not terminating) pods, creating each missing one unbound (the scheduler stand-in places it).
fn replicasets(client: kube::Client, fleet: Arc<Fleet>, first: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods = pods_api(&client);
        let mut n = first;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(ps) = pods.list(&Default::default()).await else {
                continue;
            };
            for w in &fleet.workloads {
                let live = ps
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.metadata.labels.as_ref().and_then(|l| l.get("app")) == Some(&w.name)
                    })
                    .count() as u32;
                for _ in live..w.replicas {
                    n += 1;
                    let o: DynamicObject =
                        serde_json::from_value(pod_of(&fleet, &w.name, n, None)).unwrap();
                    let _ = pods.create(&PostParams::default(), &o).await;
                }
            }
        }
    })
}

/// The cluster as the recorder last saw it.
#[derive(Default)]
struct Observed {
    tainted: BTreeMap<String, bool>,
    /// Live pods: name → (workload, bound node).
    pods: BTreeMap<String, (String, Option<String>)>,
}

impl Observed {
    /// What changed since the last look, as actions (taints first, then evictions, then
    /// placements, as the simulator's log orders a minute).
    fn diff(&mut self, nodes: &[DynamicObject], pods: &[DynamicObject]) -> Vec<Action> {
        let mut out = Vec::new();
        for n in nodes {
            let name = n.metadata.name.clone().unwrap_or_default();
            let tainted = n.data["spec"]["taints"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["key"] == TAINT));
            let was = self.tainted.insert(name.clone(), tainted).unwrap_or(false);
            if tainted != was {
                out.push(if tainted {
                    Action::Taint { node: name }
                } else {
                    Action::Untaint { node: name }
                });
            }
        }
        let live: BTreeMap<String, (String, Option<String>)> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let app = p.metadata.labels.as_ref()?.get("app")?.clone();
                let node = p.data["spec"]["nodeName"].as_str().map(String::from);
                Some((p.metadata.name.clone()?, (app, node)))
            })
            .collect();
        for (name, (workload, node)) in &self.pods {
            if let (Some(from), false) = (node, live.contains_key(name)) {
                out.push(Action::Evicted {
                    workload: workload.clone(),
                    object: name.clone(),
                    from: from.clone(),
                });
            }
        }
        for (name, (workload, node)) in &live {
            let before = self.pods.get(name).and_then(|(_, n)| n.as_ref());
            if let (Some(on), None) = (node, before) {
                out.push(Action::Placed {
                    workload: workload.clone(),
                    object: name.clone(),
                    on: on.clone(),
                });
            }
        }
        self.pods = live;
        out
    }
}

/// The scenario of `sim-loop-fleet.yaml` in virtual time and through the chart's binaries: the
/// same sequence of actions (see the module docs for what differs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_scenario_plays_out_the_same_in_the_real_loop() {
    if needs_double(
        "it drives simulated nodes' batteries (a real node's exporter reads that node's own /sys)",
    ) {
        return;
    }
    let fleet = Arc::new(Fleet::load(fleet_path()).unwrap_or_else(|e| panic!("{e}")));
    let opts = options();

    // ---- virtual time ---------------------------------------------------------------------
    let mut vlog = ActionLog::new(&fleet);
    let (_, series) = run::run_with(&fleet, RunKind::Migrate, &opts, Some(&mut vlog));
    let initial: Vec<(String, String)> = vlog
        .actions
        .iter()
        .filter(|a| a.minute == 0)
        .filter_map(|a| match &a.action {
            Action::Placed { workload, on, .. } => Some((workload.clone(), on.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        initial.len(),
        fleet
            .workloads
            .iter()
            .map(|w| w.replicas as usize)
            .sum::<usize>(),
        "every pod placed at the start: {initial:?}"
    );

    // ---- the real loop ------------------------------------------------------------------------
    let world = World::new(&fleet);
    let nodes: Vec<(String, Value)> = fleet
        .targets
        .iter()
        .map(|t| {
            let labels: serde_json::Map<String, Value> = t
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            (t.id.name.clone(), Value::Object(labels))
        })
        .collect();
    let targets: Vec<(&str, Kind)> = nodes
        .iter()
        .map(|(n, labels)| (n.as_str(), Kind::LabelledNode(labels.clone())))
        .collect();
    let mut initial_load: BTreeMap<String, f64> = fleet
        .targets
        .iter()
        .map(|t| (t.id.name.clone(), t.base_watts))
        .collect();
    for (w, on) in &initial {
        let draw = fleet
            .workloads
            .iter()
            .find(|d| &d.name == w)
            .unwrap()
            .draw_watts;
        *initial_load.get_mut(on).unwrap() += draw;
    }
    // Each exporter discovers its sources at start: the battery and the meter as at minute 0.
    let world_ref = &world;
    let load_ref = &initial_load;
    let mut l = Loop::start_with(&targets, Install::defaults(), |name, tree| {
        let t = world_ref
            .targets
            .iter()
            .find(|t| t.def.id.name == name)
            .unwrap();
        let flow = Flow {
            drawn_wh: load_ref[name] / 60.0,
            ..Flow::default()
        };
        write_supply(tree, &t.battery, t.soc_wh, &flow, load_ref[name]);
    })
    .await;
    l.cluster.namespace(NS, json!({})).await;
    // A node's budget: the fleet's `maxWatts` as the node's annotation (what both the extender
    // and the controller read).
    let nodes_api = l.cluster.nodes();
    for t in &fleet.targets {
        let budget = t
            .max_watts
            .expect("every node of the scenario has maxWatts");
        nodes_api
            .patch(
                &t.id.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {"edgewatt.io/power-budget-watts": budget.to_string()}}})),
            )
            .await
            .unwrap();
    }
    // The pods where the simulator's scheduler put them at the start.
    let pods = pods_api(&l.cluster.client);
    for (n, (w, on)) in initial.iter().enumerate() {
        let o = l
            .cluster
            .create(&pods, pod_of(&fleet, w, n as u32, Some(on)))
            .await;
        pods.patch_status(
            &o.metadata.name.unwrap(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }
    l.timeline.mark(format!(
        "pods placed as the simulator placed them: {initial:?}"
    ));
    let rs = replicasets(
        l.cluster.client.clone(),
        fleet.clone(),
        initial.len() as u32,
    );
    l.spawn_task(rs);
    let placements = Arc::new(Mutex::new(Vec::new()));
    let sched = scheduler_standin(
        l.cluster.client.clone(),
        l.extender_addrs(),
        l.extender_config(),
        placements.clone(),
    );
    l.spawn_task(sched);
    // Every node's battery in Prometheus, so the extender decides on data from the first pod on.
    wait_for(
        "every node's battery in Prometheus",
        Duration::from_secs(60),
        || async {
            let r = l.query("edgewatt_node_battery_charge_ratio").await;
            (r.as_array()?.len() == fleet.targets.len()).then_some(())
        },
    )
    .await;
    let policy = compressed_policy();
    l.cluster.apply(&l.cluster.policies(), policy.clone()).await;
    l.timeline.mark(format!(
        "policy applied, durations a 60th: {}",
        policy["spec"]
    ));

    // The driver: minute m of the scenario at t0 + m seconds.
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let minutes_done = Arc::new(AtomicU32::new(0));
    let dark = Arc::new(Mutex::new(Vec::<String>::new()));
    let soc_real = Arc::new(Mutex::new(Vec::<(u32, f64)>::new()));
    let driver = {
        let fleet = fleet.clone();
        let client = l.cluster.client.clone();
        let trees: BTreeMap<String, FixtureTree> = l
            .sims
            .iter()
            .map(|(n, s)| (n.clone(), s.tree.clone()))
            .collect();
        let mut state: Vec<(String, Battery, f64, f64, usize)> = world
            .targets
            .iter()
            .map(|t| {
                (
                    t.def.id.name.clone(),
                    t.battery,
                    t.soc_wh,
                    t.def.solar_wp,
                    t.def.site,
                )
            })
            .collect();
        let (stop, minutes_done, dark, soc_real) = (
            stop.clone(),
            minutes_done.clone(),
            dark.clone(),
            soc_real.clone(),
        );
        let offset = fleet.sites[0].solar.utc_offset_minutes();
        let start_utc = (i64::from(opts.start_minute) - i64::from(offset))
            .rem_euclid(i64::from(MINUTES_PER_YEAR)) as u32;
        tokio::spawn(async move {
            let pods = pods_api(&client);
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(t0),
                Duration::from_secs_f64(SECONDS_PER_MINUTE),
            );
            let mut m = 0u32;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let Ok(ps) = pods.list(&Default::default()).await else {
                    continue; // the minute is stepped at the next tick, with the load then
                };
                let load = loads(&fleet, &ps.items);
                let moy = (start_utc + m) % MINUTES_PER_YEAR;
                for (name, battery, soc, solar_wp, site) in &mut state {
                    let solar =
                        f64::from(fleet.sites[*site].solar.watts_per_wp_utc(moy)) * *solar_wp;
                    let (next, flow) = battery.step(*soc, solar, load[name.as_str()], 1.0 / 60.0);
                    *soc = next;
                    if flow.cut_off {
                        dark.lock().unwrap().push(format!("{name} at minute {m}"));
                    }
                    write_supply(
                        &trees[name.as_str()],
                        battery,
                        next,
                        &flow,
                        load[name.as_str()],
                    );
                    if name == "node-a" {
                        soc_real
                            .lock()
                            .unwrap()
                            .push((m, next / battery.capacity_wh * 100.0));
                    }
                }
                m += 1;
                minutes_done.store(m, Ordering::SeqCst);
            }
        })
    };
    // The recorder: what the cluster shows, four times per virtual minute.
    let real: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let recorder = {
        let (real, client, stop) = (real.clone(), l.cluster.client.clone(), stop.clone());
        let nodes_api = l.cluster.nodes();
        let mut seen = Observed::default();
        // The baseline: the initial pods, no taint.
        let ps = pods.list(&Default::default()).await.unwrap();
        let ns = nodes_api.list(&Default::default()).await.unwrap();
        let _ = seen.diff(&ns.items, &ps.items);
        tokio::spawn(async move {
            let pods = pods_api(&client);
            while !stop.load(Ordering::SeqCst) {
                if let (Ok(ns), Ok(ps)) = (
                    nodes_api.list(&Default::default()).await,
                    pods.list(&Default::default()).await,
                ) {
                    let secs = t0.elapsed().as_secs_f64();
                    for action in seen.diff(&ns.items, &ps.items) {
                        eprintln!("[real {secs:6.1}s] {action:?}");
                        real.lock().unwrap().push(Seen { secs, action });
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    l.timeline
        .mark("driver started: one virtual minute per second");
    let recovered = |real: &[Seen]| {
        let evictions = real
            .iter()
            .filter(|s| matches!(s.action, Action::Evicted { .. }))
            .count();
        evictions > 0
            && real
                .iter()
                .any(|s| matches!(s.action, Action::Untaint { .. }))
    };
    while !recovered(&real.lock().unwrap()) && t0.elapsed() < REAL_RUN_LIMIT {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more minutes: nothing else may happen (the simulator does nothing more by then).
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = driver.await;
    let _ = recorder.await;
    let end = minutes_done.load(Ordering::SeqCst);
    l.timeline
        .mark(format!("driver stopped after {end} virtual minutes"));

    // ---- the two timelines ----------------------------------------------------------------
    let virt: Vec<(u32, Action)> = vlog
        .actions
        .iter()
        .filter(|a| a.minute > 0 && a.minute < end)
        .map(|a| (a.minute, a.action.clone()))
        .collect();
    let real: Vec<Seen> = real.lock().unwrap().clone();
    eprintln!("\n== virtual time (migrate run, minute = virtual minute) ==");
    for (m, a) in &virt {
        eprintln!("  {m:4}  {a:?}");
    }
    eprintln!("\n== real loop (seconds after the driver's first step = virtual minutes) ==");
    for s in &real {
        eprintln!("  {:6.1}  {:?}", s.secs, s.action);
    }
    let soc_virtual: Vec<f64> = series.soc[0].1.clone();
    assert_eq!(series.soc[0].0, "node-a");
    eprintln!("\n== node-a state of charge, % (virtual | real) ==");
    for (m, r) in soc_real.lock().unwrap().iter().filter(|(m, _)| m % 5 == 0) {
        // the plot's samples: one per minute, after its physics (as the driver's)
        let v = soc_virtual.get(*m as usize).copied().unwrap_or(f64::NAN);
        eprintln!("  minute {m:3}: {v:5.1} | {r:5.1}");
    }
    let vseq = sequence(virt.iter().map(|(_, a)| a));
    let rseq = sequence(real.iter().map(|s| &s.action));
    // Lag of each real action behind its virtual counterpart (marks and evictions in order).
    eprintln!("\n== lag (real seconds − virtual minutes × {SECONDS_PER_MINUTE} s) ==");
    let pick = |f: &dyn Fn(&Action) -> bool, v: &[(f64, Action)]| -> Vec<(f64, Action)> {
        v.iter().filter(|(_, a)| f(a)).cloned().collect()
    };
    let v_timed: Vec<(f64, Action)> = virt
        .iter()
        .map(|(m, a)| (f64::from(*m) * SECONDS_PER_MINUTE, a.clone()))
        .collect();
    let r_timed: Vec<(f64, Action)> = real.iter().map(|s| (s.secs, s.action.clone())).collect();
    let is_mark = |a: &Action| matches!(a, Action::Taint { .. } | Action::Untaint { .. });
    let is_evict = |a: &Action| matches!(a, Action::Evicted { .. });
    let mut lags = Vec::new();
    for f in [&is_mark as &dyn Fn(&Action) -> bool, &is_evict] {
        for ((vt, va), (rt, _)) in pick(f, &v_timed).iter().zip(pick(f, &r_timed).iter()) {
            eprintln!(
                "  {:+6.1}s  {va:?} (virtual {vt:.0}, real {rt:.1})",
                rt - vt
            );
            lags.push(rt - vt);
        }
    }
    if !lags.is_empty() {
        let mean = lags.iter().sum::<f64>() / lags.len() as f64;
        let max = lags.iter().cloned().fold(f64::MIN, f64::max);
        eprintln!("  mean {mean:.1}s, max {max:.1}s");
    }
    l.timeline.print("the simulated scenario in the real loop");

    // ---- the same sequence --------------------------------------------------------------------
    // The scenario does what it is for (else the comparison below would prove nothing).
    assert!(
        vseq.marks.first().is_some_and(|m| m == "taint node-a")
            && vseq.marks.last().is_some_and(|m| m == "untaint node-a"),
        "the virtual run starves and recovers node-a: {vseq:?}"
    );
    let landed: std::collections::BTreeSet<&str> =
        vseq.placements.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        vseq.evictions.len() >= 3 && landed.len() >= 2,
        "the virtual run drains node-a onto more than one node: {vseq:?}"
    );
    assert!(
        !vseq.evictions.iter().any(|(w, _)| w == "logger"),
        "the pinned pod stays: {vseq:?}"
    );
    evictions_within_starvation(&virt).unwrap();
    assert!(
        dark.lock().unwrap().is_empty(),
        "a node went dark in the real loop: {:?}",
        dark.lock().unwrap()
    );
    assert_eq!(
        rseq, vseq,
        "the real loop's actions differ from the simulator's (printed above)"
    );
    evictions_within_starvation(&r_timed).unwrap();
    // The recorder's evictions are the controller's: its Events name the same pods.
    let mut evicted_events: Vec<String> = l
        .cluster
        .events()
        .await
        .iter()
        .filter(|e| e["reason"] == "PodEvicted")
        .filter_map(|e| {
            let on = if e["regarding"].is_null() {
                &e["involvedObject"]
            } else {
                &e["regarding"]
            };
            on["name"].as_str().map(String::from)
        })
        .collect();
    evicted_events.sort();
    let mut evicted_seen: Vec<String> = real
        .iter()
        .filter_map(|s| match &s.action {
            Action::Evicted { object, .. } => Some(object.clone()),
            _ => None,
        })
        .collect();
    evicted_seen.sort();
    assert_eq!(evicted_events, evicted_seen, "PodEvicted Events");
    l.assert_no_request_refused();
}
