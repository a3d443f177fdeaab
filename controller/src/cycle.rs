//! One control cycle of one policy: **read** (moves in flight, Prometheus) → **snapshot** (stores
//! to planner inputs) → **plan** (pure) → **execute** ([`crate::execute`]) → one
//! [`status::build_status`] and at most one status write.
//!
//! What a policy remembers between cycles is its [`PolicyRuntime`]; it is (re)loaded from the
//! cluster whenever this replica (re)gains the Lease ([`crate::lifecycle::load`]), never carried
//! over from an earlier term.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    EdgeDevice, EnergyPolicy, EnergyPolicySpec, EnergyPolicyStatus, MigrationRecord, Mode,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::{
    actuator::reference,
    diagnostics::{self, kind_name},
    metrics::{KindLabels, TargetLabels},
    mover::MoveKey,
    planner::{
        self, MoveHistory, PlanInput, TargetSnapshot, TargetStates, Transition, WorkloadId,
        WorkloadSnapshot,
    },
    reconciler::{Context, Error},
    signals::{self, MaxAges, ReadError},
    snapshot::{self, PromData},
    status::{self, Evaluated, Outcome, Problem},
    stores::{Res, StoreState, Stores},
};

/// An evicted pod, counted in flight until it is gone.
#[derive(Debug, Clone)]
pub struct Evicting {
    pub uid: Option<String>,
    pub node: String,
}

/// What the controller remembers per policy between cycles.
#[derive(Debug, Default)]
pub struct PolicyRuntime {
    /// The leadership term this memory was loaded in; another term reloads it.
    pub(crate) term: u64,
    /// When the last cycle ran, for which generation and whether the policy was being deleted.
    last_run: Option<(std::time::Instant, Option<i64>, bool)>,
    pub states: TargetStates,
    pub history: MoveHistory,
    pub migrations: Vec<MigrationRecord>,
    pub migration_count: u64,
    /// EdgeWorkload moves in flight (by this policy), with their start.
    pub moves: BTreeMap<MoveKey, DateTime<Utc>>,
    /// Moves that ended in this term, by their start: a lagging cache may still show their
    /// intent for a moment, which must not bring them back.
    pub(crate) ended: HashMap<MoveKey, DateTime<Utc>>,
    /// Pods evicted and not gone yet.
    pub evicting: HashMap<WorkloadId, Evicting>,
    /// Moves resumed from their record after their intent vanished (once each).
    pub(crate) resumed: HashSet<MoveKey>,
    /// Event-on-change memories.
    pub(crate) pdb_blocked: HashSet<WorkloadId>,
    pub(crate) refused: HashSet<WorkloadId>,
    pub(crate) problems: Vec<Problem>,
    pub(crate) diag: diagnostics::Memory,
    /// The status as last written (or read at load): what the next one is compared with.
    pub(crate) last_status: Option<EnergyPolicyStatus>,
    /// The cleanup finalizer is on the policy (seen or written in this term).
    pub(crate) has_finalizer: bool,
}

impl PolicyRuntime {
    /// `None` when a cycle is due now: never ran in this term, the spec changed (generation), the
    /// deletion started, or the interval has passed. Else how long until it is due.
    pub fn due_in(&self, policy: &EnergyPolicy, interval: Duration, term: u64) -> Option<Duration> {
        let (at, generation, deleting) = self.last_run?;
        if self.term != term
            || generation != policy.metadata.generation
            || deleting != policy.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        let elapsed = at.elapsed();
        // A requeue can fire a little early.
        (elapsed + Duration::from_millis(50) < interval).then(|| interval - elapsed)
    }

    pub fn in_flight(&self) -> u32 {
        (self.moves.len() + self.evicting.len()) as u32
    }
}

/// One control cycle for one policy at `now`: reads Prometheus, then [`cycle_with`].
pub async fn cycle(policy: &EnergyPolicy, ctx: &Context, now: DateTime<Utc>) -> Result<(), Error> {
    let s = &ctx.settings;
    let prom = signals::read(
        &ctx.reader,
        &s.metric_names,
        &policy.spec,
        &s.device_label,
        MaxAges {
            node: s.node_max_age,
            device: s.device_max_age,
        },
    )
    .await;
    cycle_with(policy, ctx, now, prom).await
}

/// One control cycle for one policy at `now`, with this cycle's Prometheus reading (or why there
/// is none) given. Split from [`cycle`] so tests can drive the runtime without Prometheus.
/// Does nothing unless this replica leads.
pub async fn cycle_with(
    policy: &EnergyPolicy,
    ctx: &Context,
    now: DateTime<Utc>,
    prom: Result<PromData, ReadError>,
) -> Result<(), Error> {
    let Ok(term) = ctx.fence.check() else {
        return Ok(());
    };
    let name = policy.name_any();
    let rt = ctx.policy_runtime(&name).await;
    let mut rt = rt.lock().await;
    rt.last_run = Some((
        std::time::Instant::now(),
        policy.metadata.generation,
        policy.metadata.deletion_timestamp.is_some(),
    ));
    if rt.term != term {
        crate::lifecycle::load(ctx, &mut rt, policy, now).await?;
        rt.term = term;
    }
    if policy.metadata.deletion_timestamp.is_some() {
        return crate::lifecycle::finalize(ctx, &mut rt, policy, now).await;
    }
    crate::lifecycle::ensure_finalizer(ctx, &mut rt, policy).await?;
    run(ctx, &mut rt, policy, now, prom).await
}

async fn run(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &EnergyPolicy,
    now: DateTime<Utc>,
    prom: Result<PromData, ReadError>,
) -> Result<(), Error> {
    let name = policy.name_any();
    let spec = &policy.spec;
    let mut problems: Vec<Problem> = Vec::new();
    let durations = match spec.durations() {
        Ok(d) => d,
        Err(msg) => {
            problems.push(("InvalidSpec".into(), msg.clone()));
            return finish(
                ctx,
                rt,
                policy,
                Evaluated::InvalidSpec(msg),
                None,
                problems,
                now,
            )
            .await;
        }
    };
    let timeout = ctx
        .settings
        .migration_timeout
        .unwrap_or(durations.migration_timeout);

    // What this policy needs that the cluster does not have (reported even while Prometheus is
    // down: an operator should see both).
    problems.extend(missing_parts(&ctx.stores, spec));

    // Read: moves in flight are driven whatever Prometheus says (finishing or undoing is safe).
    if ctx.stores.health.get(Res::Workloads) == StoreState::Synced {
        crate::execute::drive_moves(ctx, rt, &name, timeout, now, &mut problems).await;
        crate::execute::collect_orphans(ctx, rt, &name).await;
    }
    crate::execute::track_evictions(ctx, rt);

    let prom = match prom {
        Ok(p) => p,
        Err(ReadError::InvalidQuery { query, error }) => {
            let msg = format!(
                "starvation.query.promql {query:?} is rejected by Prometheus: {error}; \
                 no actions are taken until it is fixed"
            );
            problems.insert(0, ("InvalidQuery".into(), msg.clone()));
            return finish(
                ctx,
                rt,
                policy,
                Evaluated::InvalidQuery(msg),
                None,
                problems,
                now,
            )
            .await;
        }
        Err(ReadError::Prometheus(e)) => {
            ctx.metrics.prometheus_errors.inc();
            tracing::warn!(policy = %name, "prometheus: {e}");
            problems.push(("PrometheusUnavailable".into(), e.to_string()));
            let ev = Evaluated::PrometheusDown(e.to_string());
            return finish(ctx, rt, policy, ev, None, problems, now).await;
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

    // Snapshot and plan.
    let view = View::read(
        &ctx.stores,
        &name,
        spec,
        &prom,
        ctx.settings.node_max_age,
        ctx.settings.device_max_age,
        &mut problems,
    );
    rt.history.in_flight = rt.in_flight();
    let plan = planner::plan(&PlanInput {
        spec,
        durations: &durations,
        now,
        targets: &view.targets,
        workloads: &view.workloads,
        previous: &rt.states,
        history: &rt.history,
        max_gap: ctx.settings.max_gap(),
    });
    rt.states = plan.states.clone();
    diagnostics::log_target_views(
        &name,
        &mut rt.diag,
        &view.targets,
        &plan,
        &view.nodes,
        &view.devices,
        &prom,
    );
    if let Some(p) = diagnostics::data_missing(
        &mut rt.diag,
        &view.targets,
        &plan,
        now,
        durations.starvation_for,
    ) {
        problems.push(p);
    }
    log_skips(&name, &plan, &view);

    // Execute (Migrate) or only report (Observe).
    let policy_ref = reference(policy);
    transitions(ctx, &name, &policy_ref, &plan).await;
    export_starved(ctx, &name, spec, &plan);
    crate::execute::skipped_events(ctx, rt, &plan, &view.pods).await;
    crate::execute::execute(
        ctx,
        rt,
        &name,
        spec,
        &plan,
        &view,
        timeout,
        now,
        &mut problems,
    )
    .await;
    crate::execute::dry_run(ctx, rt, &name, &policy_ref, &plan, now).await;
    finish(
        ctx,
        rt,
        policy,
        Evaluated::Yes,
        Some(status::starved(&plan)),
        problems,
        now,
    )
    .await
}

/// The starvation gauges of this policy: exactly the targets starved now, labelled with the
/// policy's mode (the extender filters nodes on `mode="Migrate"` only).
fn export_starved(ctx: &Context, policy: &str, spec: &EnergyPolicySpec, plan: &planner::Plan) {
    let mode = mode_str(spec.action.mode);
    let series: BTreeSet<TargetLabels> = plan
        .starved()
        .map(|(id, _, _)| TargetLabels {
            policy: policy.into(),
            mode: mode.into(),
            kind: kind_name(id.kind).into(),
            name: id.name.clone(),
            namespace: id.namespace.clone().unwrap_or_default(),
        })
        .collect();
    ctx.metrics.set_starved(policy, mode, series);
}

pub fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Migrate => "Migrate",
        Mode::Observe => "Observe",
    }
}

/// Events for starvation transitions, on the policy.
async fn transitions(
    ctx: &Context,
    policy: &str,
    policy_ref: &k8s_openapi::api::core::v1::ObjectReference,
    plan: &planner::Plan,
) {
    for tr in &plan.transitions {
        let (warning, reason, note) = match tr {
            Transition::Starved { target, reason } => (
                true,
                "TargetStarved",
                format!("{}: {reason}", diagnostics::target_str(target)),
            ),
            Transition::Recovered { target } => (
                false,
                "TargetRecovered",
                format!("{} recovered", diagnostics::target_str(target)),
            ),
        };
        tracing::info!(policy, reason, "{note}");
        ctx.actuator
            .event(&ctx.fence, policy_ref, warning, reason, note)
            .await;
    }
}

/// Why starved targets' workloads stay put: the first thing to read when nothing moves. For
/// `NoTarget`: every possible destination and why it was rejected.
fn log_skips(policy: &str, plan: &planner::Plan, view: &View) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for skip in &plan.skipped {
        if skip.reason == planner::SkipReason::NoTarget {
            let candidates = view
                .workloads
                .iter()
                .find(|w| w.id == skip.workload)
                .map(|w| diagnostics::describe_rejections(&plan.rejections(&view.targets, w)))
                .unwrap_or_default();
            tracing::debug!(policy, workload = ?skip.workload, reason = ?skip.reason, candidates = %candidates, "not moved");
        } else {
            tracing::debug!(policy, workload = ?skip.workload, reason = ?skip.reason, "not moved");
        }
    }
}

/// Reports problems (a Warning Event on the policy for each one new since the last cycle),
/// builds the status and writes it if it changed.
async fn finish(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &EnergyPolicy,
    evaluated: Evaluated,
    starved: Option<Vec<edgewatt_crds::StarvedTarget>>,
    problems: Vec<Problem>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    report_problems(ctx, rt, policy, &problems).await;
    let outcome = Outcome {
        generation: policy.metadata.generation,
        evaluated,
        starved,
        migrations: rt.migrations.clone(),
        migration_count: rt.migration_count,
        moves_in_flight: rt.in_flight(),
        problems,
    };
    let prev = rt
        .last_status
        .clone()
        .unwrap_or_else(|| policy.status.clone().unwrap_or_default());
    let st = status::build_status(&prev, &outcome, now);
    match status::write_if_changed(&ctx.client, &ctx.fence, &policy.name_any(), &prev, &st).await {
        Ok(_) => {
            rt.last_status = Some(st);
            Ok(())
        }
        Err(status::WriteError::NotLeader(_)) => Ok(()),
        Err(status::WriteError::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        Err(status::WriteError::Kube(e)) => Err(e.into()),
    }
}

/// Problems whose own Events are published elsewhere (the migration's, the eviction's).
const REPORTED_ELSEWHERE: [&str; 3] = ["ActionsFailed", "TargetDisappeared", "MigrationStuck"];

async fn report_problems(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &EnergyPolicy,
    problems: &[Problem],
) {
    let policy_ref = reference(policy);
    for (reason, msg) in problems {
        if REPORTED_ELSEWHERE.contains(&reason.as_str()) {
            continue;
        }
        if !rt.problems.iter().any(|(r, m)| r == reason && m == msg) {
            tracing::warn!(policy = %policy.name_any(), reason = %reason, "{msg}");
            ctx.actuator
                .event(&ctx.fence, &policy_ref, true, reason, msg.clone())
                .await;
        }
    }
    rt.problems = problems.to_vec();
}

/// What the stores hold for one policy, as planner inputs.
pub struct View {
    pub targets: Vec<TargetSnapshot>,
    pub workloads: Vec<WorkloadSnapshot>,
    pub nodes: Vec<Arc<Node>>,
    pub devices: Vec<Arc<EdgeDevice>>,
    pub pods: Vec<Arc<Pod>>,
}

/// What `spec` needs from the caches that is not there: every missing or forbidden resource, as
/// problems. The parts of the policy that need them are skipped; the rest runs. Without
/// PodDisruptionBudgets the Eviction API still enforces them (only the pre-check goes).
pub fn missing_parts(stores: &Stores, spec: &EnergyPolicySpec) -> Vec<Problem> {
    let mut needed: Vec<&[Res]> = Vec::new();
    if spec.targets.node_selector.is_some() {
        needed.extend([&[Res::Nodes][..], &[Res::Pods][..], &[Res::Pdbs][..]]);
    }
    if spec.targets.edge_device_selector.is_some() {
        needed.push(&[Res::Devices, Res::Workloads]); // one report for Flotta as a whole
    }
    if spec
        .workloads
        .as_ref()
        .is_some_and(|w| w.namespace_selector.is_some())
    {
        needed.push(&[Res::Namespaces]);
    }
    needed
        .into_iter()
        .filter_map(|r| store_problem(stores, r))
        .collect()
}

/// Why a store cannot be used now, as a problem of the policies that need it.
fn store_problem(stores: &Stores, needed: &[Res]) -> Option<Problem> {
    needed.iter().find_map(|r| match stores.health.get(*r) {
        StoreState::Synced => None,
        StoreState::Missing(m) if r.is_flotta() => Some((
            "FlottaNotInstalled".into(),
            format!(
                "Flotta's CRDs are not installed ({}.management.project-flotta.io: {m}); \
                 EdgeDevice targets are skipped until they are (picked up without a restart)",
                r.plural()
            ),
        )),
        StoreState::Missing(m) => Some((
            "ResourceMissing".into(),
            format!("{} is not served: {m}", r.plural()),
        )),
        StoreState::Forbidden(m) => Some((
            "Forbidden".into(),
            format!("Forbidden: list {}: {m}", r.plural()),
        )),
        StoreState::Syncing => Some(("NotSynced".into(), format!("{} not listed yet", r.plural()))),
        StoreState::Failing(m) => Some((
            "NotSynced".into(),
            format!("{} not listed yet: {m}", r.plural()),
        )),
    })
}

impl View {
    /// Targets and workloads for `spec` from the stores; a store that is missing or forbidden
    /// leaves its part out and says so in `problems`.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        stores: &Stores,
        policy: &str,
        spec: &EnergyPolicySpec,
        prom: &PromData,
        node_max_age: Duration,
        device_max_age: Duration,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut v = View {
            targets: Vec::new(),
            workloads: Vec::new(),
            nodes: Vec::new(),
            devices: Vec::new(),
            pods: Vec::new(),
        };
        let ns_labels =
            snapshot::namespace_labels(&stores.synced(Res::Namespaces, &stores.namespaces));
        let mut edge_workloads = Vec::new();
        if spec.targets.node_selector.is_some() {
            match store_problem(stores, &[Res::Nodes, Res::Pods]) {
                Some(_) => {}
                None => {
                    v.nodes = stores.nodes.state();
                    v.pods = stores.pods.state();
                    let t = snapshot::node_targets(policy, spec, &v.nodes, prom, node_max_age);
                    if !t.iter().any(|t| t.in_policy) {
                        problems.push((
                            "SelectorMatchesNothing".into(),
                            "targets.nodeSelector matches no Node".into(),
                        ));
                    }
                    v.targets.extend(t);
                    let exhausted =
                        snapshot::exhausted_pdbs(&stores.synced(Res::Pdbs, &stores.pdbs));
                    v.workloads.extend(snapshot::pod_workloads(
                        spec, &v.pods, &ns_labels, &exhausted,
                    ));
                }
            }
        }
        if spec.targets.edge_device_selector.is_some() {
            match store_problem(stores, &[Res::Devices, Res::Workloads]) {
                Some(_) => {}
                None => {
                    v.devices = stores.devices.state();
                    edge_workloads = stores.workloads.state();
                    let t =
                        snapshot::device_targets(policy, spec, &v.devices, prom, device_max_age);
                    if !t.iter().any(|t| t.in_policy) {
                        problems.push((
                            "SelectorMatchesNothing".into(),
                            "targets.edgeDeviceSelector matches no EdgeDevice".into(),
                        ));
                    }
                    v.targets.extend(t);
                    v.workloads.extend(snapshot::edge_workloads(
                        spec,
                        &edge_workloads,
                        &v.devices,
                        &ns_labels,
                    ));
                }
            }
        }
        if spec.workloads.is_some() && !v.targets.is_empty() {
            let pods_selected = v.pods.iter().any(|p| {
                snapshot::selected(
                    spec,
                    &p.namespace().unwrap_or_default(),
                    p.labels(),
                    &ns_labels,
                )
            });
            let edge_selected = edge_workloads.iter().any(|w| {
                !w.labels().contains_key(crate::mover::COPY_OF_LABEL)
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
        v
    }
}
