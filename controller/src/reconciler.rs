//! The runtime loop: a `kube_runtime::Controller` on EnergyPolicy, requeued every `interval`,
//! with reflector stores for Nodes, Pods, Namespaces, EdgeDevices and EdgeWorkloads.
//!
//! One cycle per policy: drive moves in flight (from the cluster's state, so a restart resumes),
//! read Prometheus (failure ⇒ `PrometheusAvailable=False` and no new actions), build the snapshot,
//! run the pure planner, execute (Migrate) or only report (Observe), write status, Events and
//! metrics. Only the Lease holder reconciles.

use std::collections::{BTreeMap, HashMap};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    metrics::MetricNames, prom::PromReader, EdgeDevice, EdgeWorkload, EnergyPolicy,
    EnergyPolicySpec, EnergyPolicyStatus, MigrationRecord, MigrationResult, Mode, TargetKind,
    WorkloadKind,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{
    runtime::{
        controller::{Action as Requeue, Controller},
        reflector::{self, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource, ResourceExt,
};
use tokio::sync::Mutex;

use crate::{
    actuator::{reference, Actuator, Eviction, Intent},
    metrics::{KindLabels, Metrics, PolicyLabels, TargetLabels},
    planner::{
        self, Action, MoveHistory, PlanInput, SkipReason, TargetId, TargetState, Transition,
        WorkloadId,
    },
    signals::{self, ReadError},
    snapshot::{self, PromData},
    status,
};

/// Runtime settings (from the command line in `main`, set directly in tests).
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub metric_names: MetricNames,
    /// Label carrying the device id on device series.
    pub device_label: String,
    pub node_max_age: Duration,
    pub device_max_age: Duration,
    /// Overrides every policy's `migrationTimeout` when set.
    pub migration_timeout: Option<Duration>,
}

/// Reflector stores shared by all policies. The reflector tasks stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub devices: Store<EdgeDevice>,
    pub workloads: Store<EdgeWorkload>,
    _tasks: Arc<Tasks>,
}

/// What the stores keep of each object: only what the snapshot, the planner and the actuator
/// read, so 100 000 EdgeWorkloads fit in a small controller (the pod template of a workload is
/// read from the API server when it is copied, never from the store).
pub mod trim {
    use super::*;

    /// `uid` is never read (store keys hash name and namespace only) but costs two strings per
    /// object: one in the object, one in its store key. `resourceVersion` stays: the intent patch
    /// uses it for optimistic concurrency.
    fn meta(m: &mut kube::api::ObjectMeta) {
        m.managed_fields = None;
        m.finalizers = None;
        m.uid = None;
        m.generate_name = None;
        m.self_link = None;
    }

    pub fn workload(w: &mut EdgeWorkload) {
        meta(&mut w.metadata);
        w.spec.pod = None;
        w.spec.data = None;
        w.spec.image_registries = None;
        w.spec.metrics = None;
        w.spec.extra.clear();
        w.spec.type_ = String::new();
        w.status = None;
    }

    pub fn device(d: &mut EdgeDevice) {
        meta(&mut d.metadata);
        d.spec = Default::default();
        if let Some(s) = d.status.as_mut() {
            s.hardware = None;
            s.extra.clear();
            for w in &mut s.workloads {
                w.extra.clear();
                w.last_data_upload = None;
                w.last_transition_time = None;
            }
        }
    }

    pub fn pod(p: &mut Pod) {
        meta(&mut p.metadata);
        if let Some(s) = p.spec.as_mut() {
            s.containers.clear();
            s.init_containers = None;
            s.ephemeral_containers = None;
            s.volumes = None;
        }
        if let Some(s) = p.status.as_mut() {
            *s = k8s_openapi::api::core::v1::PodStatus {
                phase: s.phase.take(),
                ..Default::default()
            };
        }
    }

    pub fn node(n: &mut Node) {
        meta(&mut n.metadata);
        if let Some(s) = n.status.as_mut() {
            *s = k8s_openapi::api::core::v1::NodeStatus {
                conditions: s.conditions.take(),
                ..Default::default()
            };
        }
    }

    pub fn namespace(n: &mut Namespace) {
        meta(&mut n.metadata);
    }

    pub fn pdb(p: &mut PodDisruptionBudget) {
        meta(&mut p.metadata);
    }
}

/// Aborts the reflector tasks on drop.
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// What the controller remembers per policy between cycles.
#[derive(Debug, Default)]
pub struct PolicyRuntime {
    pub states: BTreeMap<TargetId, TargetState>,
    pub history: MoveHistory,
    pub migrations: Vec<MigrationRecord>,
    pub migration_count: u64,
    /// Pods skipped last cycle because their PDB allowed no disruption (Event on change only).
    pub pdb_blocked: std::collections::HashSet<WorkloadId>,
    /// Configuration problems reported last cycle (Event on change only).
    pub problems: Vec<(String, String)>,
    /// How each target looked to the planner last cycle (debug log on change only).
    views: HashMap<TargetId, String>,
    /// Since when each live, selected target's data has been unknown (for `TargetDataMissing`).
    unknown_since: HashMap<TargetId, DateTime<Utc>>,
    loaded: bool,
}

/// Shared context of the reconciler.
pub struct Context {
    pub client: Client,
    pub actuator: Actuator,
    pub reader: PromReader,
    pub stores: Stores,
    pub metrics: Metrics,
    pub settings: Settings,
    pub leader: Arc<AtomicBool>,
    pub runtime: Mutex<HashMap<String, PolicyRuntime>>,
}

/// Reconcile errors (logged; the policy is retried next interval).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

/// Re-watch backoff for the stores: 500 ms doubling to at most 5 s, reset on success. kube's
/// default grows to 30 s and only resets after 2 minutes without errors; an API server that
/// closes slow watches a few times in a row (it does under load) then leaves the stores — and
/// every decision taken from them — up to half a minute stale.
#[derive(Debug, Clone)]
struct WatchBackoff {
    next: std::time::Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: std::time::Duration::from_millis(500),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<Self::Item> {
        let now = self.next;
        self.next = (self.next * 2).min(std::time::Duration::from_secs(5));
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

fn spawn_store<K>(
    api: Api<K>,
    trim: fn(&mut K),
    tasks: &mut Vec<tokio::task::AbortHandle>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(trim),
    )
    .backoff(WatchBackoff::default())
    .touched_objects();
    let task = tokio::spawn(async move {
        stream
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!("watch: {e}");
                }
            })
            .await
    });
    tasks.push(task.abort_handle());
    reader
}

use kube::runtime::reflector::reflector;

impl Stores {
    /// Starts the reflectors.
    pub fn spawn(client: &Client) -> Self {
        let mut t = Vec::new();
        Self {
            nodes: spawn_store(Api::all(client.clone()), trim::node, &mut t),
            pods: spawn_store(Api::all(client.clone()), trim::pod, &mut t),
            namespaces: spawn_store(Api::all(client.clone()), trim::namespace, &mut t),
            pdbs: spawn_store(Api::all(client.clone()), trim::pdb, &mut t),
            devices: spawn_store(Api::all(client.clone()), trim::device, &mut t),
            workloads: spawn_store(Api::all(client.clone()), trim::workload, &mut t),
            _tasks: Arc::new(Tasks(t)),
        }
    }

    /// Waits until every store has its initial list.
    pub async fn ready(&self) {
        let _ = futures::join!(
            self.nodes.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.pdbs.wait_until_ready(),
            self.devices.wait_until_ready(),
            self.workloads.wait_until_ready()
        );
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn kind_str(k: WorkloadKind) -> &'static str {
    match k {
        WorkloadKind::Pod => "Pod",
        WorkloadKind::EdgeWorkload => "EdgeWorkload",
    }
}

fn result_str(r: MigrationResult) -> &'static str {
    match r {
        MigrationResult::InProgress => "InProgress",
        MigrationResult::Succeeded => "Succeeded",
        MigrationResult::Failed => "Failed",
        MigrationResult::Blocked => "Blocked",
        MigrationResult::DryRun => "DryRun",
    }
}

/// Runs the controller until the stream ends (forever in production).
pub async fn run(ctx: Arc<Context>) {
    ctx.stores.ready().await;
    ctx.metrics.ready.store(true, Ordering::Relaxed);
    let interval = ctx.settings.interval;
    Controller::new(
        Api::<EnergyPolicy>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(
        reconcile,
        move |_, err, _| {
            tracing::warn!("reconcile failed: {err}");
            Requeue::requeue(interval)
        },
        ctx,
    )
    .for_each(|_| async {})
    .await;
}

async fn reconcile(policy: Arc<EnergyPolicy>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let requeue = Requeue::requeue(ctx.settings.interval);
    if !ctx.leader.load(Ordering::SeqCst) {
        return Ok(requeue);
    }
    let started = std::time::Instant::now();
    let name = policy.metadata.name.clone().unwrap_or_default();
    let result = cycle(&policy, &ctx, Utc::now()).await;
    let took = started.elapsed();
    if took > ctx.settings.interval {
        tracing::info!(policy = %name, took_ms = took.as_millis() as u64, "policy cycle took longer than the interval");
    } else {
        tracing::debug!(policy = %name, took_ms = took.as_millis() as u64, ok = result.is_ok(), "policy cycle");
    }
    result?;
    Ok(requeue)
}

/// Move history as far as the status shows it (the last 20 migrations), so a restarted
/// controller keeps honouring `cooldown` and `maxPerHour`. A workload's last move counts from
/// when it finished (or started, while in progress); evictions blocked by a PDB are not moves.
pub fn history_from_status(records: &[MigrationRecord]) -> MoveHistory {
    let parse = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let mut h = MoveHistory::default();
    for r in records {
        if r.result == MigrationResult::Blocked {
            continue;
        }
        let Some(started) = parse(&r.started_at) else {
            continue;
        };
        let last = r
            .finished_at
            .as_deref()
            .and_then(parse)
            .map_or(started, |f| f.max(started));
        let id = WorkloadId {
            kind: r.kind,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        };
        let e = h.last_moved.entry(id).or_insert(last);
        *e = (*e).max(last);
        h.recent_moves.push(started);
    }
    h.recent_moves.sort();
    h
}

/// One control cycle for one policy at `now`: reads Prometheus, then [`cycle_with`].
pub async fn cycle(policy: &EnergyPolicy, ctx: &Context, now: DateTime<Utc>) -> Result<(), Error> {
    let prom = signals::read(
        &ctx.reader,
        &ctx.settings.metric_names,
        &policy.spec,
        &ctx.settings.device_label,
    )
    .await;
    cycle_with(policy, ctx, now, prom).await
}

/// A problem with the policy or the cluster that makes the policy `Degraded`: (reason, message).
type Problem = (String, String);

/// One control cycle for one policy at `now`, with this cycle's Prometheus reading (or why there
/// is none) given. Split from [`cycle`] so tests can drive the runtime without Prometheus.
pub async fn cycle_with(
    policy: &EnergyPolicy,
    ctx: &Context,
    now: DateTime<Utc>,
    prom: Result<PromData, ReadError>,
) -> Result<(), Error> {
    let name = policy.name_any();
    let spec = &policy.spec;
    let generation = policy.metadata.generation;
    let prev_status = policy.status.clone().unwrap_or_default();
    let policy_ref = reference(policy);

    let mut all = ctx.runtime.lock().await;
    let rt = all.entry(name.clone()).or_default();
    if !rt.loaded {
        rt.migrations = prev_status.migrations.clone();
        rt.migration_count = prev_status.migration_count;
        rt.history = history_from_status(&prev_status.migrations);
        // After a restart, starved targets stay starved (and recover through hysteresis)
        // instead of silently restarting their `for` window.
        for s in &prev_status.starved {
            let Ok(since) = DateTime::parse_from_rfc3339(&s.since) else {
                continue;
            };
            let since = since.with_timezone(&Utc);
            rt.states.insert(
                TargetId {
                    kind: s.kind,
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                },
                TargetState {
                    condition_since: Some(since),
                    starved: Some(planner::StarvedInfo {
                        since,
                        reason: s.reason.clone(),
                    }),
                    recovery_since: None,
                    battery_percent: s.battery_percent,
                    watts: s.watts,
                },
            );
        }
        rt.loaded = true;
    }

    let durations = match spec.durations() {
        Ok(d) => d,
        Err(msg) => {
            report_problems(
                ctx,
                rt,
                &policy_ref,
                vec![("InvalidSpec".into(), msg.clone())],
            )
            .await;
            let st = EnergyPolicyStatus {
                observed_generation: generation,
                conditions: status::conditions(
                    &prev_status.conditions,
                    &[
                        ("Ready", false, "InvalidSpec", msg.clone()),
                        ("Degraded", true, "InvalidSpec", msg),
                    ],
                    generation,
                    now,
                ),
                ..prev_status.clone()
            };
            status::write(&ctx.client, &name, &st).await?;
            return Ok(());
        }
    };
    let timeout = ctx
        .settings
        .migration_timeout
        .unwrap_or(durations.migration_timeout);

    // 1. Moves in flight: advance them whatever Prometheus says (finishing or undoing is safe).
    let workloads = ctx.stores.workloads.state();
    let devices = ctx.stores.devices.state();
    let mut in_flight = 0u32;
    let mut failures: Vec<Problem> = Vec::new();
    for w in &workloads {
        let Some(intent) = Intent::of(w) else {
            continue;
        };
        if intent.policy != name {
            continue;
        }
        let ns = w.namespace().unwrap_or_default();
        let target = devices
            .iter()
            .find(|d| d.namespace().as_deref() == Some(ns.as_str()) && d.name_any() == intent.to);
        match ctx
            .actuator
            .advance(w, &intent, target.map(|d| d.as_ref()), timeout, now)
            .await
        {
            Ok(Some(rec)) => {
                let ok = rec.result == MigrationResult::Succeeded;
                ctx.metrics
                    .migration(&name, "EdgeWorkload", result_str(rec.result));
                ctx.metrics
                    .migration_duration
                    .observe((now - intent.started_at).num_milliseconds() as f64 / 1000.0);
                // The cooldown runs from the end of the move.
                rt.history.last_moved.insert(
                    WorkloadId {
                        kind: WorkloadKind::EdgeWorkload,
                        namespace: ns.clone(),
                        name: w.name_any(),
                    },
                    now,
                );
                ctx.actuator
                    .event(
                        &reference(w.as_ref()),
                        !ok,
                        if ok {
                            "MigrationSucceeded"
                        } else {
                            "MigrationFailed"
                        },
                        format!("{}/{}: {}", rec.namespace, rec.name, rec.message),
                    )
                    .await;
                if !ok {
                    let reason = if target.is_none() {
                        "TargetDisappeared"
                    } else {
                        "ActionsFailed"
                    };
                    failures.push((reason.into(), rec.message.clone()));
                }
                status::push_record(&mut rt.migrations, rec);
            }
            Ok(None) => in_flight += 1,
            Err(e) => {
                in_flight += 1;
                tracing::warn!(workload = %w.name_any(), "advancing migration: {e}");
            }
        }
    }
    rt.history.in_flight = in_flight;
    // Records still `InProgress` whose intent is gone: a controller was killed between finishing
    // (or undoing) the move and writing the status. Settle them from where the workload is.
    for rec in rt
        .migrations
        .iter_mut()
        .filter(|r| r.result == MigrationResult::InProgress && r.kind == WorkloadKind::EdgeWorkload)
    {
        let w = workloads
            .iter()
            .find(|w| w.namespace().as_deref() == Some(&rec.namespace) && w.name_any() == rec.name);
        if w.is_some_and(|w| Intent::of(w).is_some_and(|i| i.policy == name)) {
            continue;
        }
        let arrived = w.is_some_and(|w| w.spec.device.is_some() && w.spec.device == rec.to);
        rec.result = if arrived {
            MigrationResult::Succeeded
        } else {
            MigrationResult::Failed
        };
        rec.finished_at = Some(rfc3339(now));
        rec.message = if arrived {
            format!(
                "on {} (settled after a controller restart)",
                rec.to.clone().unwrap_or_default()
            )
        } else {
            format!(
                "undone or abandoned (settled after a controller restart), on {}",
                rec.from
            )
        };
    }

    // 2. Prometheus.
    let prom = match prom {
        Ok(p) => p,
        Err(ReadError::InvalidQuery { query, error }) => {
            // The policy's own query is wrong: say so, act on nothing, keep the rest going.
            let msg = format!(
                "starvation.query.promql {query:?} is rejected by Prometheus: {error}; \
                 no actions are taken until it is fixed"
            );
            let mut problems = failures.clone();
            problems.insert(0, ("InvalidQuery".into(), msg.clone()));
            report_problems(ctx, rt, &policy_ref, problems.clone()).await;
            let st = EnergyPolicyStatus {
                observed_generation: generation,
                conditions: status::conditions(
                    &prev_status.conditions,
                    &[
                        ("Ready", false, "InvalidQuery", msg),
                        ("PrometheusAvailable", true, "QueryOk", String::new()),
                        degraded(&problems),
                    ],
                    generation,
                    now,
                ),
                migrations: rt.migrations.clone(),
                migration_count: rt.migration_count,
                ..prev_status.clone()
            };
            status::write(&ctx.client, &name, &st).await?;
            return Ok(());
        }
        Err(ReadError::Prometheus(e)) => {
            ctx.metrics.prometheus_errors.inc();
            tracing::warn!(policy = %name, "prometheus: {e}");
            let st = EnergyPolicyStatus {
                observed_generation: generation,
                conditions: status::conditions(
                    &prev_status.conditions,
                    &[
                        ("Ready", true, "Reconciled", String::new()),
                        (
                            "PrometheusAvailable",
                            false,
                            "QueryFailed",
                            format!("{e}; no actions are taken until it answers"),
                        ),
                        ("Degraded", true, "PrometheusUnavailable", e.to_string()),
                    ],
                    generation,
                    now,
                ),
                migrations: rt.migrations.clone(),
                migration_count: rt.migration_count,
                ..prev_status.clone()
            };
            status::write(&ctx.client, &name, &st).await?;
            return Ok(());
        }
    };
    for (kind, table) in [("Node", &prom.nodes), ("EdgeDevice", &prom.devices)] {
        if let Some(age) = signals::oldest_age(table) {
            ctx.metrics
                .data_age
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(age);
        }
    }

    // 3. Snapshot and plan.
    let nodes = ctx.stores.nodes.state();
    let pods = ctx.stores.pods.state();
    let ns_labels = snapshot::namespace_labels(&ctx.stores.namespaces.state());
    let mut targets = Vec::new();
    let mut wl = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();
    if spec.targets.node_selector.is_some() {
        let t = snapshot::node_targets(spec, &nodes, &prom, ctx.settings.node_max_age);
        if !t.iter().any(|t| t.in_policy) {
            problems.push((
                "SelectorMatchesNothing".into(),
                "targets.nodeSelector matches no Node".into(),
            ));
        }
        targets.extend(t);
        let exhausted = snapshot::exhausted_pdbs(&ctx.stores.pdbs.state());
        wl.extend(snapshot::pod_workloads(spec, &pods, &ns_labels, &exhausted));
    }
    if spec.targets.edge_device_selector.is_some() {
        let t = snapshot::device_targets(spec, &devices, &prom, ctx.settings.device_max_age);
        if !t.iter().any(|t| t.in_policy) {
            problems.push((
                "SelectorMatchesNothing".into(),
                "targets.edgeDeviceSelector matches no EdgeDevice".into(),
            ));
        }
        targets.extend(t);
        wl.extend(snapshot::edge_workloads(
            spec, &workloads, &devices, &ns_labels,
        ));
    }
    if spec.workloads.is_some() {
        let pods_selected = spec.targets.node_selector.is_some()
            && pods.iter().any(|p| {
                snapshot::selected(
                    spec,
                    &p.namespace().unwrap_or_default(),
                    p.labels(),
                    &ns_labels,
                )
            });
        let edge_selected = spec.targets.edge_device_selector.is_some()
            && workloads.iter().any(|w| {
                !w.labels().contains_key(snapshot::COPY_OF_LABEL)
                    && snapshot::selected(
                        spec,
                        &w.namespace().unwrap_or_default(),
                        w.labels(),
                        &ns_labels,
                    )
            });
        if !pods_selected && !edge_selected {
            problems.push((
                "SelectorMatchesNothing".into(),
                "workloads selects no Pod or EdgeWorkload".into(),
            ));
        }
    }
    let plan = planner::plan(&PlanInput {
        spec,
        durations: &durations,
        now,
        targets: &targets,
        workloads: &wl,
        previous: &rt.states,
        history: &rt.history,
    });
    rt.states = plan.states.clone();
    log_target_views(&name, rt, &targets, &plan, &nodes, &devices, &prom);
    if let Some(p) = data_missing(rt, &targets, &plan, now, durations.starvation_for) {
        problems.push(p);
    }

    // 4. Transitions: Events and metrics.
    for tr in &plan.transitions {
        match tr {
            Transition::Starved { target, reason } => {
                ctx.metrics
                    .target_starved
                    .get_or_create(&target_labels(&name, target))
                    .set(1);
                ctx.actuator
                    .event(
                        &policy_ref,
                        true,
                        "TargetStarved",
                        format!("{} {}: {reason}", kind_name(target.kind), target.name),
                    )
                    .await;
            }
            Transition::Recovered { target } => {
                ctx.metrics
                    .target_starved
                    .remove(&target_labels(&name, target));
                ctx.actuator
                    .event(
                        &policy_ref,
                        false,
                        "TargetRecovered",
                        format!("{} {} recovered", kind_name(target.kind), target.name),
                    )
                    .await;
            }
        }
    }
    let starved = status::starved(&plan);
    ctx.metrics
        .starved_targets
        .get_or_create(&PolicyLabels {
            policy: name.clone(),
        })
        .set(starved.len() as i64);

    // Why starved targets' workloads stay put: the first thing to read when nothing moves.
    // For NoTarget: every possible destination and why it was rejected.
    for skip in &plan.skipped {
        if skip.reason == SkipReason::NoTarget && tracing::enabled!(tracing::Level::DEBUG) {
            let candidates = wl
                .iter()
                .find(|w| w.id == skip.workload)
                .map(|w| describe_rejections(&plan.rejections(&targets, w)))
                .unwrap_or_default();
            tracing::debug!(policy = %name, workload = ?skip.workload, reason = ?skip.reason, candidates = %candidates, "not moved");
        } else {
            tracing::debug!(policy = %name, workload = ?skip.workload, reason = ?skip.reason, "not moved");
        }
    }

    // Pods whose PDB allows no disruption: not evicted (the Eviction API would refuse), one
    // Event when that starts.
    let blocked: std::collections::HashSet<WorkloadId> = plan
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::DisruptionBudget)
        .map(|s| s.workload.clone())
        .collect();
    for id in blocked.difference(&rt.pdb_blocked) {
        if let Some(p) = pods
            .iter()
            .find(|p| p.namespace().as_deref() == Some(&id.namespace) && p.name_any() == id.name)
        {
            ctx.actuator
                .event(
                    &reference(p.as_ref()),
                    true,
                    "EvictionSkipped",
                    format!(
                        "{}; not evicted, retried later",
                        SkipReason::DisruptionBudget
                    ),
                )
                .await;
        }
    }
    rt.pdb_blocked = blocked;

    // 5. Execute (Migrate) or report (Observe).
    for a in &plan.actions {
        execute(
            ctx,
            rt,
            &name,
            spec,
            a,
            &workloads,
            &pods,
            now,
            &mut failures,
        )
        .await;
    }
    for a in &plan.dry_run {
        let (kind, ns, wname, from, to) = match a {
            Action::Evict { pod, node } => (pod.kind, &pod.namespace, &pod.name, node, None),
            Action::MigrateEdgeWorkload { workload, from, to } => (
                workload.kind,
                &workload.namespace,
                &workload.name,
                from,
                Some(to.clone()),
            ),
            _ => continue,
        };
        rt.history.record(
            planner::WorkloadId {
                kind,
                namespace: ns.clone(),
                name: wname.clone(),
            },
            now,
        );
        ctx.metrics.migration(&name, kind_str(kind), "DryRun");
        let rec = MigrationRecord {
            kind,
            namespace: ns.clone(),
            name: wname.clone(),
            from: from.clone(),
            to: to.clone(),
            started_at: rfc3339(now),
            finished_at: Some(rfc3339(now)),
            result: MigrationResult::DryRun,
            message: format!(
                "Observe mode: would move {} from {from}{}",
                wname,
                to.as_ref().map(|t| format!(" to {t}")).unwrap_or_default()
            ),
        };
        ctx.actuator
            .event(&policy_ref, false, "DryRun", rec.message.clone())
            .await;
        status::push_record(&mut rt.migrations, rec);
    }

    // 6. Status.
    report_problems(ctx, rt, &policy_ref, problems.clone()).await;
    failures.extend(problems);
    let st = EnergyPolicyStatus {
        observed_generation: generation,
        conditions: status::conditions(
            &prev_status.conditions,
            &[
                ("Ready", true, "Reconciled", String::new()),
                ("PrometheusAvailable", true, "QueryOk", String::new()),
                degraded(&failures),
            ],
            generation,
            now,
        ),
        starved_count: starved.len() as u32,
        migration_count: rt.migration_count,
        starved,
        migrations: rt.migrations.clone(),
    };
    status::write(&ctx.client, &name, &st).await?;
    Ok(())
}

fn target_str(t: &TargetId) -> String {
    match &t.namespace {
        Some(ns) => format!("{} {ns}/{}", kind_name(t.kind), t.name),
        None => format!("{} {}", kind_name(t.kind), t.name),
    }
}

/// `dev-b: not alive; dev-c: starved`, or why there was nothing to reject.
fn describe_rejections(r: &[(&TargetId, planner::Rejection)]) -> String {
    if r.is_empty() {
        return "no other target of its kind (and namespace)".into();
    }
    r.iter()
        .map(|(id, why)| format!("{}: {why}", target_str(id)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Debug diagnostics: how each target looks to the planner (selected, alive and from what,
/// data known, starvation state, whether it could receive work, signals), logged when that
/// changes — once per change, not per cycle, so it stays readable with many targets. What to
/// read when a target is not starved although it should be, or nothing moves to a device.
fn log_target_views(
    policy: &str,
    rt: &mut PolicyRuntime,
    targets: &[planner::TargetSnapshot],
    plan: &planner::Plan,
    nodes: &[Arc<Node>],
    devices: &[Arc<EdgeDevice>],
    prom: &PromData,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        rt.views.clear();
        return;
    }
    // Indexed once: with thousands of targets every view changes on the first debug cycle, and a
    // linear search per target would make that cycle quadratic.
    let device_by_id: HashMap<(&str, &str), &EdgeDevice> = devices
        .iter()
        .map(|d| {
            let key = (
                d.metadata.namespace.as_deref().unwrap_or_default(),
                d.metadata.name.as_deref().unwrap_or_default(),
            );
            (key, d.as_ref())
        })
        .collect();
    let node_by_name: HashMap<&str, &Node> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n.as_ref()))
        .collect();
    for t in targets {
        let state = plan.states.get(&t.id);
        let condition = match state {
            Some(TargetState {
                starved: Some(i), ..
            }) => format!("starved since {} ({})", rfc3339(i.since), i.reason),
            Some(TargetState {
                condition_since: Some(since),
                ..
            }) => format!("condition holds since {}", rfc3339(*since)),
            _ => "clear".into(),
        };
        let known = !plan.unknown.contains(&t.id);
        let destination = plan
            .unfit(t)
            .map_or_else(|| "yes".to_string(), |u| format!("no: {u}"));
        let key = format!(
            "{} {} {known} {} {destination}",
            t.in_policy,
            t.alive,
            condition.split(" (").next().unwrap_or_default()
        );
        if rt.views.get(&t.id) == Some(&key) {
            continue;
        }
        let liveness = match t.id.kind {
            TargetKind::EdgeDevice => device_by_id
                .get(&(
                    t.id.namespace.as_deref().unwrap_or_default(),
                    t.id.name.as_str(),
                ))
                .map(|d| snapshot::device_liveness(d, prom)),
            TargetKind::Node => node_by_name
                .get(t.id.name.as_str())
                .map(|n| snapshot::node_liveness(n)),
        }
        .unwrap_or_default();
        tracing::debug!(
            policy = %policy,
            target = %target_str(&t.id),
            in_policy = t.in_policy,
            alive = t.alive,
            liveness = %liveness,
            data_known = known,
            state = %condition,
            destination = %destination,
            signals = ?t.signals,
            "target view changed"
        );
        rt.views.insert(t.id.clone(), key);
    }
    rt.views.retain(|id, _| plan.states.contains_key(id));
}

/// How long a live, selected target may go without the data the policy needs before the policy
/// says so: at least this, and at least the starvation `for` window (within it nothing could have
/// been decided anyway). Covers an exporter's first scrape after a device comes up.
const DATA_MISSING_GRACE: Duration = Duration::from_secs(60);

/// `TargetDataMissing` when a target that is selected and alive (Ready node; device up and
/// heartbeating) has had no fresh signal the policy needs for longer than the grace period: such
/// a target is never starved and never chosen as a destination, which otherwise only the debug
/// log would explain (exporter not scraped, metric missing, wrong device label). Offline targets
/// are not listed: their silence is expected.
fn data_missing(
    rt: &mut PolicyRuntime,
    targets: &[planner::TargetSnapshot],
    plan: &planner::Plan,
    now: DateTime<Utc>,
    starvation_for: Duration,
) -> Option<Problem> {
    let grace = chrono::Duration::from_std(starvation_for.max(DATA_MISSING_GRACE))
        .unwrap_or(chrono::Duration::MAX);
    let mut still = HashMap::new();
    let mut missing: Vec<&TargetId> = Vec::new();
    for t in targets {
        if !(t.in_policy && t.alive && plan.unknown.contains(&t.id)) {
            continue;
        }
        let since = rt.unknown_since.get(&t.id).copied().unwrap_or(now);
        if now - since >= grace {
            missing.push(&t.id);
        }
        still.insert(t.id.clone(), since);
    }
    rt.unknown_since = still;
    if missing.is_empty() {
        return None;
    }
    missing.sort();
    let shown: Vec<String> = missing.iter().take(5).map(|id| target_str(id)).collect();
    let more = missing.len().saturating_sub(shown.len());
    Some((
        "TargetDataMissing".into(),
        format!(
            "{} live target(s) without fresh data the starvation conditions need for over {}s: {}{} — never starved nor chosen as a destination until their metrics arrive (exporter scraped? device label?)",
            missing.len(),
            grace.num_seconds(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ),
    ))
}

/// The `Degraded` condition for `problems`: the first one's reason, every message.
fn degraded(problems: &[Problem]) -> status::Cond<'_> {
    match problems.first() {
        None => ("Degraded", false, "AsExpected", String::new()),
        Some((reason, _)) => (
            "Degraded",
            true,
            reason.as_str(),
            problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// A Warning Event on the policy for each configuration problem that was not there last cycle.
async fn report_problems(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy_ref: &k8s_openapi::api::core::v1::ObjectReference,
    problems: Vec<Problem>,
) {
    for (reason, msg) in &problems {
        if reason == "ActionsFailed" || reason == "TargetDisappeared" {
            continue; // reported by the migration's own Events
        }
        if !rt.problems.iter().any(|(r, m)| r == reason && m == msg) {
            tracing::warn!(reason = %reason, "{msg}");
            ctx.actuator
                .event(policy_ref, true, reason, msg.clone())
                .await;
        }
    }
    rt.problems = problems;
}

fn kind_name(k: TargetKind) -> &'static str {
    match k {
        TargetKind::Node => "Node",
        TargetKind::EdgeDevice => "EdgeDevice",
    }
}

fn target_labels(policy: &str, t: &TargetId) -> TargetLabels {
    TargetLabels {
        policy: policy.into(),
        kind: kind_name(t.kind).into(),
        name: t.name.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    spec: &EnergyPolicySpec,
    action: &Action,
    workloads: &[Arc<EdgeWorkload>],
    pods: &[Arc<Pod>],
    now: DateTime<Utc>,
    failures: &mut Vec<Problem>,
) {
    debug_assert_eq!(spec.action.mode, Mode::Migrate);
    match action {
        Action::Taint { node } | Action::Untaint { node } => {
            let on = matches!(action, Action::Taint { .. });
            if let Err(e) = ctx.actuator.set_taint(node, on).await {
                failures.push(("ActionsFailed".into(), format!("taint {node}: {e}")));
            }
        }
        Action::Evict { pod, node } => {
            let regarding = pods
                .iter()
                .find(|p| {
                    p.namespace().as_deref() == Some(&pod.namespace) && p.name_any() == pod.name
                })
                .map(|p| reference(p.as_ref()));
            let outcome = ctx.actuator.evict(&pod.namespace, &pod.name).await;
            let (result, message) = match &outcome {
                Eviction::Evicted => {
                    rt.history.record(pod.clone(), now);
                    rt.migration_count += 1;
                    (MigrationResult::Succeeded, format!("evicted from {node}"))
                }
                Eviction::Blocked(m) => (
                    MigrationResult::Blocked,
                    format!("eviction blocked, retried next cycle: {m}"),
                ),
                Eviction::Failed(m) => {
                    failures.push((
                        "ActionsFailed".into(),
                        format!("evict {}/{}: {m}", pod.namespace, pod.name),
                    ));
                    (MigrationResult::Failed, m.clone())
                }
            };
            ctx.metrics.migration(policy, "Pod", result_str(result));
            let reason = match outcome {
                Eviction::Evicted => "PodEvicted",
                Eviction::Blocked(_) => "EvictionBlocked",
                Eviction::Failed(_) => "EvictionFailed",
            };
            if let Some(r) = &regarding {
                ctx.actuator
                    .event(
                        r,
                        result != MigrationResult::Succeeded,
                        reason,
                        message.clone(),
                    )
                    .await;
            }
            status::push_record(
                &mut rt.migrations,
                MigrationRecord {
                    kind: WorkloadKind::Pod,
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    from: node.clone(),
                    to: None,
                    started_at: rfc3339(now),
                    finished_at: Some(rfc3339(now)),
                    result,
                    message,
                },
            );
        }
        Action::MigrateEdgeWorkload { workload, from, to } => {
            let Some(w) = workloads.iter().find(|w| {
                w.namespace().as_deref() == Some(&workload.namespace)
                    && w.name_any() == workload.name
            }) else {
                return;
            };
            match ctx
                .actuator
                .start_migration(policy, w, from, to, spec.action.strategy, now)
                .await
            {
                Ok(_) => {
                    rt.history.record(workload.clone(), now);
                    rt.history.in_flight += 1;
                    rt.migration_count += 1;
                    ctx.metrics.migration(policy, "EdgeWorkload", "Started");
                    let message =
                        format!("moving from {from} to {to} ({:?})", spec.action.strategy);
                    ctx.actuator
                        .event(
                            &reference(w.as_ref()),
                            false,
                            "MigrationStarted",
                            message.clone(),
                        )
                        .await;
                    status::push_record(
                        &mut rt.migrations,
                        MigrationRecord {
                            kind: WorkloadKind::EdgeWorkload,
                            namespace: workload.namespace.clone(),
                            name: workload.name.clone(),
                            from: from.clone(),
                            to: Some(to.clone()),
                            started_at: rfc3339(now),
                            finished_at: None,
                            result: MigrationResult::InProgress,
                            message,
                        },
                    );
                }
                Err(e) => failures.push((
                    "ActionsFailed".into(),
                    format!("start moving {}/{}: {e}", workload.namespace, workload.name),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        name: &str,
        started: &str,
        finished: Option<&str>,
        r: MigrationResult,
    ) -> MigrationRecord {
        MigrationRecord {
            kind: WorkloadKind::EdgeWorkload,
            namespace: "edge".into(),
            name: name.into(),
            from: "d1".into(),
            to: Some("d2".into()),
            started_at: started.into(),
            finished_at: finished.map(String::from),
            result: r,
            message: String::new(),
        }
    }

    #[test]
    fn history_from_status_restores_cooldown_and_hourly_count() {
        use MigrationResult::*;
        let h = history_from_status(&[
            rec(
                "a",
                "2025-01-01T10:00:00Z",
                Some("2025-01-01T10:04:00Z"),
                Succeeded,
            ),
            rec("b", "2025-01-01T10:30:00Z", None, InProgress),
            rec(
                "c",
                "2025-01-01T10:40:00Z",
                Some("2025-01-01T10:40:00Z"),
                Blocked,
            ),
            rec(
                "a",
                "2025-01-01T09:00:00Z",
                Some("2025-01-01T09:01:00Z"),
                Failed,
            ),
            rec("d", "not a time", None, Failed),
        ]);
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let id = |n: &str| WorkloadId {
            kind: WorkloadKind::EdgeWorkload,
            namespace: "edge".into(),
            name: n.into(),
        };
        // Cooldown counts from the end of the latest move; blocked evictions are no moves.
        assert_eq!(h.last_moved[&id("a")], t("2025-01-01T10:04:00Z"));
        assert_eq!(h.last_moved[&id("b")], t("2025-01-01T10:30:00Z"));
        assert!(!h.last_moved.contains_key(&id("c")));
        assert!(!h.last_moved.contains_key(&id("d")));
        // maxPerHour: starts within the hour.
        assert_eq!(h.moves_last_hour(t("2025-01-01T10:45:00Z")), 2);
        assert_eq!(h.moves_last_hour(t("2025-01-01T11:05:00Z")), 1);
    }
}
