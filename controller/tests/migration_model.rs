//! Model-based randomized test of the migration state machine (`migration::next_step`) and its
//! executor (`mover::{start, drive, collect_orphan}`) against a simulated Flotta, 1 200 seeded
//! cases.
//!
//! TEST PARTS, named as such: a simulated cluster holding EdgeWorkloads (JSON merge patch,
//! resourceVersion preconditions, 409 on conflicts), and a Flotta operator/agent stand-in that
//! lists on each device the workloads whose `spec.device` names it — `Deploying` for a few
//! steps, then `Running` — with per-case faults:
//! - a target that never reports Running, or vanishes (at a random step); a source that starts
//!   nothing new for a while (up to four timeouts), so an undo has to wait;
//! - host ports: two instances of the workload on one device, the second never runs;
//! - the original deleted mid-move (its owner), the intent stripped (a GitOps tool), an abort;
//! - controller restarts (memory lost; the status write of that cycle maybe lost too);
//! - leadership lost after a random number of writes (every step of a move is a candidate);
//! - the controller's cache of EdgeWorkloads lagging 0–3 steps behind (watch delay).
//!
//! Invariants, checked at every write and at the end:
//! - no controller write takes the workload from ≥ 1 instance seen Running where it is placed
//!   to none (Recreate's own re-points excepted: the user chose a restart);
//! - no write is repeated (each kind of write at most once per move), the move is started once;
//! - one record per move, never left `InProgress`, `Succeeded` only when the workload runs on the
//!   target, and at the end no intent, no copy, and the workload running somewhere (unless its
//!   owner deleted it).

mod common;

use common::Rng;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_controller::{
    leader::Fence,
    migration::{copy_name, Intent},
    mover::{self, Drive, MoveApi, MoveError, MoveKey, Start, COPY_OF_LABEL},
};
use edgewatt_crds::{keys, EdgeDevice, EdgeWorkload, MigrationResult, Strategy};
use serde_json::{json, Value};

const CASES: u64 = 1200;
const NS: &str = "edge";
const APP: &str = "app";
const POLICY: &str = "p";
const STEP_SECS: i64 = 30;
const TIMEOUT: Duration = Duration::from_secs(150);

// ---------------- TEST PART: the simulated cluster and Flotta ----------------

#[derive(Debug, Clone)]
struct Inst {
    running: bool,
    steps: u32,
}

#[derive(Debug, Clone)]
struct Dev {
    exists: bool,
    never_runs: bool,
    run_after: u32,
    reports: BTreeMap<String, Inst>,
}

#[derive(Debug, Default)]
struct World {
    rv: u64,
    objs: BTreeMap<String, Value>,
    /// Copies being deleted (Flotta's finalizer): steps left.
    terminating: BTreeMap<String, u32>,
    devs: BTreeMap<String, Dev>,
    host_port: bool,
    recreate: bool,
    /// Controller writes by kind, for "never repeated".
    writes: BTreeMap<String, u32>,
    violations: Vec<String>,
    fence: Option<Fence>,
    budget: Option<u32>,
    /// The workload was Running on its source when the move started (so it must never be lost).
    deleted_by_owner: bool,
}

fn device_of(o: &Value) -> Option<String> {
    o["spec"]["device"].as_str().map(String::from)
}

impl World {
    /// Instances that exist, are not being deleted, and run where they are placed.
    fn live(&self) -> usize {
        self.objs
            .iter()
            .filter(|(n, _)| !self.terminating.contains_key(*n))
            .filter(|(n, o)| {
                device_of(o).is_some_and(|d| {
                    self.devs.get(&d).is_some_and(|dev| {
                        dev.exists && dev.reports.get(*n).is_some_and(|i| i.running)
                    })
                })
            })
            .count()
    }

    /// TEST PART: one Flotta sync: devices list the workloads placed on them, which start
    /// after `run_after` steps unless the device never runs anything or a host port is taken.
    fn flotta(&mut self) {
        let placed: Vec<(String, String)> = self
            .objs
            .iter()
            .filter(|(n, _)| !self.terminating.contains_key(*n))
            .filter_map(|(n, o)| device_of(o).map(|d| (n.clone(), d)))
            .collect();
        let host_port = self.host_port;
        for (name, dev) in self.devs.iter_mut() {
            if !dev.exists {
                dev.reports.clear();
                continue;
            }
            let want: Vec<&String> = placed
                .iter()
                .filter(|(_, d)| d == name)
                .map(|(n, _)| n)
                .collect();
            dev.reports.retain(|n, _| want.contains(&n));
            for n in &want {
                dev.reports.entry((*n).clone()).or_insert(Inst {
                    running: false,
                    steps: 0,
                });
            }
            let port_taken = |reports: &BTreeMap<String, Inst>, me: &str| {
                host_port && reports.iter().any(|(o, i)| o != me && i.running)
            };
            let names: Vec<String> = dev.reports.keys().cloned().collect();
            for n in names {
                let taken = port_taken(&dev.reports, &n);
                let (never, after) = (dev.never_runs, dev.run_after);
                let i = dev.reports.get_mut(&n).expect("listed");
                if !i.running && !never && i.steps >= after && !taken {
                    i.running = true;
                }
                i.steps += 1;
            }
        }
        let done: Vec<String> = self
            .terminating
            .iter_mut()
            .filter_map(|(n, left)| {
                *left = left.saturating_sub(1);
                (*left == 0).then(|| n.clone())
            })
            .collect();
        for n in done {
            self.terminating.remove(&n);
            self.objs.remove(&n);
        }
    }

    /// Book-keeping around a controller write: the invariant and the leadership budget.
    fn wrote(&mut self, kind: &str, before: usize) {
        let after = self.live();
        // Recreate's re-points: the user chose a restart. The copy of an original its owner
        // deleted: it goes with it (its ownerReference says so too).
        let exempt = (self.recreate && kind.starts_with("repoint"))
            || (self.deleted_by_owner && kind == "delete-copy");
        if before >= 1 && after == 0 && !exempt {
            self.violations.push(format!(
                "write {kind} left no running instance (was {before})"
            ));
        }
        *self.writes.entry(kind.to_string()).or_default() += 1;
        if let Some(b) = self.budget.as_mut() {
            *b = b.saturating_sub(1);
            if *b == 0 {
                if let Some(f) = &self.fence {
                    f.revoke();
                }
            }
        }
    }

    fn bump(&mut self, name: &str) {
        self.rv += 1;
        let rv = self.rv.to_string();
        if let Some(o) = self.objs.get_mut(name) {
            o["metadata"]["resourceVersion"] = json!(rv);
        }
    }
}

fn api_error(code: u16, reason: &str) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(reason, reason)
            .with_code(code)
            .boxed(),
    )
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[derive(Clone)]
struct SimApi(Arc<Mutex<World>>);

impl MoveApi for SimApi {
    async fn get_workload(&self, _ns: &str, name: &str) -> kube::Result<Option<EdgeWorkload>> {
        let w = self.0.lock().unwrap();
        let Some(o) = w.objs.get(name) else {
            return Ok(None);
        };
        let mut o = o.clone();
        if w.terminating.contains_key(name) {
            o["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        Ok(Some(serde_json::from_value(o).expect("an EdgeWorkload")))
    }
    async fn get_device(&self, _ns: &str, name: &str) -> kube::Result<Option<EdgeDevice>> {
        let w = self.0.lock().unwrap();
        Ok(w.devs.get(name).filter(|d| d.exists).map(|d| {
            let workloads: Vec<Value> = d
                .reports
                .iter()
                .map(|(n, i)| json!({"name": n, "phase": if i.running { "running" } else { "Deploying" }}))
                .collect();
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS},
                "spec": {}, "status": {"phase": "up", "workloads": workloads}
            }))
            .expect("an EdgeDevice")
        }))
    }
    async fn create_workload(&self, obj: &EdgeWorkload) -> kube::Result<()> {
        let mut w = self.0.lock().unwrap();
        let name = obj.metadata.name.clone().unwrap_or_default();
        if w.objs.contains_key(&name) {
            return Err(api_error(409, "AlreadyExists"));
        }
        let before = w.live();
        let mut v = serde_json::to_value(obj).unwrap();
        v["metadata"]["uid"] = json!(format!("uid-{name}"));
        w.objs.insert(name.clone(), v);
        w.bump(&name);
        w.wrote("create-copy", before);
        Ok(())
    }
    async fn patch_workload(
        &self,
        _ns: &str,
        name: &str,
        patch: &Value,
    ) -> kube::Result<EdgeWorkload> {
        let mut w = self.0.lock().unwrap();
        let Some(cur) = w.objs.get(name).cloned() else {
            return Err(api_error(404, "NotFound"));
        };
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
            if cur["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(api_error(409, "Conflict"));
            }
        }
        let before = w.live();
        let mut next = cur.clone();
        let mut p = patch.clone();
        if let Some(m) = p["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        merge(&mut next, &p);
        let kind = if patch["spec"]["device"].is_string() {
            let i: Option<Intent> = patch["metadata"]["annotations"][keys::MIGRATION_INTENT]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok());
            format!(
                "repoint-{}-{:?}",
                patch["spec"]["device"].as_str().unwrap_or_default(),
                i.map(|i| i.phase)
            )
        } else if patch["metadata"]["annotations"][keys::MIGRATION_INTENT].is_null()
            && patch["metadata"]["annotations"]
                .as_object()
                .is_some_and(|a| a.contains_key(keys::MIGRATION_INTENT))
        {
            "finish".to_string()
        } else {
            let i: Option<Intent> = patch["metadata"]["annotations"][keys::MIGRATION_INTENT]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok());
            match i.map(|i| i.phase) {
                Some(edgewatt_controller::migration::Phase::Copying) => "intent".to_string(),
                // Written back from the record after another writer removed it.
                _ => "resume".to_string(),
            }
        };
        w.objs.insert(name.to_string(), next);
        w.bump(name);
        w.wrote(&kind, before);
        Ok(serde_json::from_value(w.objs[name].clone()).unwrap())
    }
    async fn delete_workload(&self, _ns: &str, name: &str) -> kube::Result<()> {
        let mut w = self.0.lock().unwrap();
        if !w.objs.contains_key(name) || w.terminating.contains_key(name) {
            return Ok(());
        }
        let before = w.live();
        let steps = 1 + (w.rv % 2) as u32;
        w.terminating.insert(name.to_string(), steps);
        w.wrote("delete-copy", before);
        Ok(())
    }
}

// ---------------- the controller model (what `execute`/`lifecycle` do around the executor) ----

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    started_at: DateTime<Utc>,
    to: String,
    result: MigrationResult,
}

/// One controller process: memory that dies with it.
struct Ctl {
    fence: Fence,
    moves: BTreeMap<MoveKey, DateTime<Utc>>,
    ended: HashMap<MoveKey, DateTime<Utc>>,
    records: Vec<Rec>,
    ended_count: u32,
    resumed: bool,
}

fn key() -> MoveKey {
    MoveKey {
        namespace: NS.into(),
        name: APP.into(),
    }
}

impl Ctl {
    /// Start of a leadership term: records from the (persisted) status; `InProgress` ones are
    /// settled from a fresh read unless their intent is still there (as `lifecycle::load`).
    async fn load(api: &SimApi, fence: Fence, persisted: &[Rec]) -> Ctl {
        let mut c = Ctl {
            fence,
            moves: BTreeMap::new(),
            ended: HashMap::new(),
            records: persisted.to_vec(),
            ended_count: 0,
            resumed: false,
        };
        for r in c
            .records
            .iter_mut()
            .filter(|r| r.result == MigrationResult::InProgress)
        {
            let w = api.get_workload(NS, APP).await.unwrap();
            match w.as_ref().and_then(Intent::of) {
                Some(i) if i.started_at == r.started_at => {
                    c.moves.insert(key(), i.started_at);
                }
                _ => {
                    let arrived =
                        w.is_some_and(|w| w.spec.device.as_deref() == Some(r.to.as_str()));
                    r.result = if arrived {
                        MigrationResult::Succeeded
                    } else {
                        MigrationResult::Failed
                    };
                }
            }
        }
        c
    }

    /// One cycle: discover moves from the (lagging) cache, drive them, collect orphans, and
    /// start the move when the cache shows the workload unmoved and no record exists (the
    /// planner's view; `start` re-reads fresh before writing).
    async fn cycle(
        &mut self,
        api: &SimApi,
        cache: &BTreeMap<String, Value>,
        now: DateTime<Utc>,
        to: &str,
        strategy: Strategy,
    ) -> Result<(), ()> {
        if let Some(o) = cache.get(APP) {
            let w: EdgeWorkload = serde_json::from_value(o.clone()).unwrap();
            if let Some(i) = Intent::of(&w).filter(|i| i.policy == POLICY) {
                if self.ended.get(&key()) != Some(&i.started_at) {
                    self.moves.entry(key()).or_insert(i.started_at);
                }
            }
        }
        for k in self.moves.keys().cloned().collect::<Vec<_>>() {
            match mover::drive(api, &self.fence, POLICY, &k, now, TIMEOUT).await {
                Ok(Drive::InFlight { .. }) => {}
                Ok(Drive::Ended { record, .. }) => {
                    let s = self.moves.remove(&k).expect("known");
                    self.ended.insert(k, s);
                    self.ended_count += 1;
                    self.settle(s, record.result);
                }
                Ok(Drive::NoIntent) => {
                    // As `execute::settle_lost`: only a record still InProgress is settled.
                    let s = self.moves.remove(&k).expect("known");
                    self.ended.insert(k.clone(), s);
                    let Some(i) = self
                        .records
                        .iter()
                        .position(|r| r.started_at == s && r.result == MigrationResult::InProgress)
                    else {
                        continue;
                    };
                    let resume = !std::mem::replace(&mut self.resumed, true);
                    match mover::settle_lost(api, &self.fence, POLICY, &k, "d1", to, s, now, resume)
                        .await
                    {
                        Ok(mover::Lost::Ended(result, _)) => self.records[i].result = result,
                        Ok(mover::Lost::Resumed) => {
                            self.ended.remove(&k);
                            self.moves.insert(k, s);
                        }
                        Err(MoveError::NotLeader(_)) => return Err(()),
                        Err(MoveError::Kube(e)) => panic!("unexpected API error: {e}"),
                    }
                }
                Err(MoveError::NotLeader(_)) => return Err(()),
                Err(MoveError::Kube(e)) => panic!("unexpected API error: {e}"),
            }
        }
        for o in cache.values() {
            if o["metadata"]["labels"][COPY_OF_LABEL].is_string()
                && !self.moves.contains_key(&key())
            {
                let c: EdgeWorkload = serde_json::from_value(o.clone()).unwrap();
                if let Err(MoveError::NotLeader(_)) =
                    mover::collect_orphan(api, &self.fence, &c).await
                {
                    return Err(());
                }
            }
        }
        let unmoved = cache.get(APP).is_some_and(|o| {
            o["metadata"]["annotations"][keys::MIGRATION_INTENT].is_null()
                && device_of(o).as_deref() == Some("d1")
        });
        if self.records.is_empty() && unmoved {
            let intent = Intent::new(POLICY, APP, "d1", to, strategy, now);
            match mover::start(api, &self.fence, &key(), intent).await {
                Ok(Start::Started { intent, .. }) => {
                    self.moves.insert(key(), intent.started_at);
                    self.records.push(Rec {
                        started_at: intent.started_at,
                        to: to.into(),
                        result: MigrationResult::InProgress,
                    });
                    let _ = mover::drive(api, &self.fence, POLICY, &key(), now, TIMEOUT).await;
                }
                Ok(Start::Stale(_)) => {}
                Err(MoveError::NotLeader(_)) => return Err(()),
                Err(MoveError::Kube(e)) => panic!("unexpected API error: {e}"),
            }
        }
        Ok(())
    }

    fn settle(&mut self, started: DateTime<Utc>, result: MigrationResult) {
        match self.records.iter_mut().find(|r| r.started_at == started) {
            Some(r) => r.result = result,
            None => self.records.push(Rec {
                started_at: started,
                to: "d2".into(),
                result,
            }),
        }
    }
}

// ---------------- one case ----------------

#[derive(Debug)]
struct Faults {
    strategy: Strategy,
    host_port: bool,
    target_never_runs: bool,
    target_vanishes_at: Option<u32>,
    /// From step .0, for .1 steps, the source starts nothing new.
    source_stalls: Option<(u32, u32)>,
    delete_original_at: Option<u32>,
    strip_intent_at: Option<u32>,
    abort_at: Option<u32>,
    restarts: Vec<u32>,
    lose_status_on_restart: bool,
    leadership_budget: Vec<u32>,
    lag: usize,
}

fn faults(rng: &mut Rng) -> Faults {
    let at = |rng: &mut Rng, p: u64| rng.chance(p).then(|| rng.below(12) as u32);
    Faults {
        strategy: if rng.chance(70) {
            Strategy::MakeBeforeBreak
        } else {
            Strategy::Recreate
        },
        host_port: rng.chance(25),
        target_never_runs: rng.chance(20),
        target_vanishes_at: at(rng, 15),
        source_stalls: rng
            .chance(30)
            .then(|| (rng.below(10) as u32, 1 + rng.below(20) as u32)),
        delete_original_at: at(rng, 10),
        strip_intent_at: at(rng, 10),
        abort_at: at(rng, 15),
        restarts: (0..rng.below(3)).map(|_| rng.below(14) as u32).collect(),
        lose_status_on_restart: rng.chance(50),
        leadership_budget: (0..rng.below(4)).map(|_| 1 + rng.below(5) as u32).collect(),
        lag: rng.below(4) as usize,
    }
}

fn world(f: &Faults, rng: &mut Rng) -> World {
    let dev = |never: bool, after: u32| Dev {
        exists: true,
        never_runs: never,
        run_after: after,
        reports: BTreeMap::new(),
    };
    let mut w = World {
        host_port: f.host_port,
        recreate: f.strategy == Strategy::Recreate,
        ..Default::default()
    };
    w.devs.insert("d1".into(), dev(false, rng.below(3) as u32));
    w.devs
        .insert("d2".into(), dev(f.target_never_runs, rng.below(3) as u32));
    let mut pod = json!({"containers": [{"name": "c", "image": "nginx"}]});
    if f.host_port {
        pod["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 9090}]);
    }
    w.objs.insert(
        APP.into(),
        json!({
            "apiVersion": "management.project-flotta.io/v1alpha1", "kind": "EdgeWorkload",
            "metadata": {"name": APP, "namespace": NS, "uid": "uid-app", "resourceVersion": "1"},
            "spec": {"device": "d1", "type": "pod", "pod": {"spec": pod}}
        }),
    );
    w.rv = 1;
    // Running on d1 before the move starts.
    for _ in 0..4 {
        w.flotta();
    }
    w
}

async fn run(seed: u64) -> Result<String, String> {
    let mut rng = Rng(seed);
    let f = faults(&mut rng);
    let w = Arc::new(Mutex::new(world(&f, &mut rng)));
    let api = SimApi(w.clone());
    assert_eq!(w.lock().unwrap().live(), 1, "seed {seed}: setup");
    let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let mut budgets: VecDeque<u32> = f.leadership_budget.iter().copied().collect();
    let new_fence = |w: &Arc<Mutex<World>>, budget: Option<u32>| {
        let fence = Fence::always();
        let mut g = w.lock().unwrap();
        g.fence = Some(fence.clone());
        g.budget = budget;
        fence
    };
    let mut persisted: Vec<Rec> = Vec::new();
    let mut ctl = Ctl::load(&api, new_fence(&w, budgets.pop_front()), &persisted).await;
    let mut history: VecDeque<BTreeMap<String, Value>> = VecDeque::new();
    let mut events = Vec::new();
    for step in 0..80u32 {
        let now = t0 + chrono::Duration::seconds(STEP_SECS * i64::from(step));
        {
            let mut g = w.lock().unwrap();
            if let Some((from, len)) = f.source_stalls {
                g.devs.get_mut("d1").unwrap().never_runs = step >= from && step < from + len;
            }
            if f.target_vanishes_at == Some(step) {
                g.devs.get_mut("d2").unwrap().exists = false;
                events.push(format!("{step}: target vanished"));
            }
            if f.delete_original_at == Some(step) && g.objs.remove(APP).is_some() {
                g.deleted_by_owner = true;
                events.push(format!("{step}: original deleted"));
            }
            if f.strip_intent_at == Some(step) {
                if let Some(o) = g.objs.get_mut(APP) {
                    if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                        a.remove(keys::MIGRATION_INTENT);
                        events.push(format!("{step}: intent stripped"));
                    }
                }
                g.bump(APP);
            }
            if f.abort_at == Some(step) {
                if let Some(o) = g.objs.get_mut(APP) {
                    o["metadata"]["annotations"][keys::ABORT_MIGRATION] = json!("true");
                    events.push(format!("{step}: abort"));
                }
                g.bump(APP);
            }
        }
        // The controller's cache: the cluster as it was `lag` steps ago.
        history.push_back(w.lock().unwrap().objs.clone());
        if history.len() > f.lag + 1 {
            history.pop_front();
        }
        let cache = history.front().cloned().unwrap_or_default();
        let restart = f.restarts.contains(&step);
        let leading = ctl.fence.is_leader();
        if !leading || restart {
            if restart && !f.lose_status_on_restart {
                persisted = ctl.records.clone();
            }
            events.push(format!(
                "{step}: {}",
                if restart { "restart" } else { "new leader" }
            ));
            ctl = Ctl::load(&api, new_fence(&w, budgets.pop_front()), &persisted).await;
        }
        if ctl.cycle(&api, &cache, now, "d2", f.strategy).await.is_ok() {
            persisted = ctl.records.clone(); // the status write of this cycle
        }
        w.lock().unwrap().flotta();
        let g = w.lock().unwrap();
        let settled = !g.objs.contains_key(&copy_name(APP))
            && g.objs
                .get(APP)
                .is_none_or(|o| o["metadata"]["annotations"][keys::MIGRATION_INTENT].is_null())
            && !persisted.is_empty()
            && persisted
                .iter()
                .all(|r| r.result != MigrationResult::InProgress);
        let quiet = f.source_stalls.map_or(16, |(a, l)| (a + l + 3).max(16));
        if step > quiet && settled {
            break;
        }
    }
    let g = w.lock().unwrap();
    let ctx = format!(
        "seed {seed}: {f:?} events {events:?} writes {:?} records {persisted:?}",
        g.writes
    );
    if !g.violations.is_empty() {
        return Err(format!("{ctx}: {:?}", g.violations));
    }
    for (k, n) in &g.writes {
        if *n > 1 && k != "intent" {
            return Err(format!("{ctx}: write {k} repeated {n}×"));
        }
    }
    if g.writes.get("intent").copied().unwrap_or(0) > 1 {
        return Err(format!("{ctx}: the move was started more than once"));
    }
    // A copy may stay only as the one instance still serving (its original, re-pointed, does
    // not run and nothing tells the controller any more where it should go): never lost.
    let original_live = g.objs.get(APP).is_some_and(|o| {
        let d = device_of(o).unwrap_or_default();
        g.devs
            .get(&d)
            .is_some_and(|dev| dev.exists && dev.reports.get(APP).is_some_and(|i| i.running))
    });
    if g.objs.contains_key(&copy_name(APP)) && (original_live || !g.objs.contains_key(APP)) {
        return Err(format!("{ctx}: copy left behind"));
    }
    if persisted.len() > 1 {
        return Err(format!("{ctx}: {} records for one move", persisted.len()));
    }
    if persisted
        .iter()
        .any(|r| r.result == MigrationResult::InProgress)
    {
        return Err(format!("{ctx}: record left InProgress"));
    }
    if ctl.ended_count > 1 {
        return Err(format!("{ctx}: ended twice"));
    }
    if let Some(o) = g.objs.get(APP) {
        if !o["metadata"]["annotations"][keys::MIGRATION_INTENT].is_null() {
            return Err(format!("{ctx}: intent left behind"));
        }
        // Unless the device it ended on vanished afterwards (not the controller's doing).
        let home_exists = g
            .devs
            .get(&device_of(o).unwrap_or_default())
            .is_some_and(|d| d.exists);
        if g.live() == 0 && home_exists {
            return Err(format!("{ctx}: the workload runs nowhere"));
        }
        let on = device_of(o).unwrap_or_default();
        if persisted
            .iter()
            .any(|r| r.result == MigrationResult::Succeeded)
            && on != "d2"
        {
            return Err(format!("{ctx}: Succeeded but on {on}"));
        }
    } else if !g.deleted_by_owner {
        return Err(format!("{ctx}: the workload was lost"));
    }
    let outcome = persisted
        .first()
        .map(|r| format!("{:?}", r.result))
        .unwrap_or_else(|| "not started".into());
    Ok(outcome)
}

#[tokio::test(flavor = "current_thread")]
async fn migrations_keep_the_workload_under_every_fault() {
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for seed in 0..CASES {
        match run(seed).await {
            Ok(o) => *outcomes.entry(o).or_default() += 1,
            Err(e) => failures.push(e),
        }
    }
    println!("{CASES} cases: {outcomes:?}");
    for f in failures.iter().take(8) {
        println!("FAILED {}", f.rsplit(": ").next().unwrap_or_default());
        println!("  {f}\n");
    }
    assert!(
        failures.is_empty(),
        "{} of {CASES} cases failed; first:\n{}",
        failures.len(),
        failures[0]
    );
    // The faults do reach every ending.
    for o in ["Succeeded", "Failed", "Aborted"] {
        assert!(
            outcomes.get(o).copied().unwrap_or(0) > 10,
            "too few {o}: {outcomes:?}"
        );
    }
}
