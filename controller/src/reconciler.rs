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
    planner::{self, Action, MoveHistory, PlanInput, TargetId, TargetState, Transition},
    signals, snapshot, status,
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

/// Reflector stores shared by all policies.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub devices: Store<EdgeDevice>,
    pub workloads: Store<EdgeWorkload>,
}

/// What the controller remembers per policy between cycles.
#[derive(Debug, Default)]
pub struct PolicyRuntime {
    pub states: BTreeMap<TargetId, TargetState>,
    pub history: MoveHistory,
    pub migrations: Vec<MigrationRecord>,
    pub migration_count: u64,
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

fn spawn_store<K>(api: Api<K>) -> Store<K>
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
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        stream
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!("watch: {e}");
                }
            })
            .await
    });
    reader
}

use kube::runtime::reflector::reflector;

impl Stores {
    /// Starts the reflectors.
    pub fn spawn(client: &Client) -> Self {
        Self {
            nodes: spawn_store(Api::all(client.clone())),
            pods: spawn_store(Api::all(client.clone())),
            namespaces: spawn_store(Api::all(client.clone())),
            devices: spawn_store(Api::all(client.clone())),
            workloads: spawn_store(Api::all(client.clone())),
        }
    }

    /// Waits until every store has its initial list.
    pub async fn ready(&self) {
        let _ = futures::join!(
            self.nodes.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.namespaces.wait_until_ready(),
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
    cycle(&policy, &ctx, Utc::now()).await?;
    Ok(requeue)
}

/// One control cycle for one policy at `now`.
pub async fn cycle(policy: &EnergyPolicy, ctx: &Context, now: DateTime<Utc>) -> Result<(), Error> {
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
            let st = EnergyPolicyStatus {
                observed_generation: generation,
                conditions: status::conditions(
                    &prev_status.conditions,
                    &[("Ready", false, "InvalidSpec", msg)],
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
    let mut failures = Vec::new();
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
                    failures.push(rec.message.clone());
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

    // 2. Prometheus.
    let prom = match signals::read(
        &ctx.reader,
        &ctx.settings.metric_names,
        spec,
        &ctx.settings.device_label,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
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
    if spec.targets.node_selector.is_some() {
        targets.extend(snapshot::node_targets(
            spec,
            &nodes,
            &prom,
            ctx.settings.node_max_age,
        ));
        wl.extend(snapshot::pod_workloads(spec, &pods, &ns_labels));
    }
    if spec.targets.edge_device_selector.is_some() {
        targets.extend(snapshot::device_targets(
            spec,
            &devices,
            &prom,
            ctx.settings.device_max_age,
        ));
        wl.extend(snapshot::edge_workloads(
            spec, &workloads, &devices, &ns_labels,
        ));
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
    let st = EnergyPolicyStatus {
        observed_generation: generation,
        conditions: status::conditions(
            &prev_status.conditions,
            &[
                ("Ready", true, "Reconciled", String::new()),
                ("PrometheusAvailable", true, "QueryOk", String::new()),
                (
                    "Degraded",
                    !failures.is_empty(),
                    if failures.is_empty() {
                        "AsExpected"
                    } else {
                        "ActionsFailed"
                    },
                    failures.join("; "),
                ),
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
    failures: &mut Vec<String>,
) {
    debug_assert_eq!(spec.action.mode, Mode::Migrate);
    match action {
        Action::Taint { node } | Action::Untaint { node } => {
            let on = matches!(action, Action::Taint { .. });
            if let Err(e) = ctx.actuator.set_taint(node, on).await {
                failures.push(format!("taint {node}: {e}"));
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
                    failures.push(format!("evict {}/{}: {m}", pod.namespace, pod.name));
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
                Err(e) => failures.push(format!(
                    "start moving {}/{}: {e}",
                    workload.namespace, workload.name
                )),
            }
        }
    }
}
