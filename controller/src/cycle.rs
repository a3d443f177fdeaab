//! One control cycle of one policy: **read** (moves in flight, Prometheus) → **snapshot** (the
//! stores as planner inputs, [`crate::view`]) → **plan** (pure, [`crate::planner`]) → **execute**
//! (the writes, [`crate::execute`]) → one [`status::build_status`] and at most one status write.
//!
//! A cycle is one [`Cycle`] value carrying what every step needs (context, the policy and its
//! memory, `now`, the problems found so far); the steps are its methods, here and in
//! [`crate::execute`] (writes) and [`crate::lifecycle`] (loading, finalizer, cleanup), which
//! build on this module and are not imported by it. What a policy remembers between cycles is its
//! [`PolicyRuntime`]; it is (re)loaded from the cluster whenever this replica (re)gains the Lease,
//! never carried over from an earlier term.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{EnergyPolicy, EnergyPolicySpec, LadderDurations, LeftAlone};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;

use crate::{
    actuator::reference,
    context::{Context, Error},
    diagnostics,
    forecast::Forecasts,
    metrics::{KindLabels, ReasonLabels, TargetLabels},
    planner::{self, PlanInput, Transition},
    runtime::PolicyRuntime,
    signals::{self, MaxAges, ReadError},
    snapshot::PromData,
    status::{self, Evaluated, Outcome, Problem},
    stores::{Res, StoreState},
    view::{missing_parts, View},
};

/// One cycle of one policy at `now`.
pub struct Cycle<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) rt: &'a mut PolicyRuntime,
    pub(crate) policy: &'a EnergyPolicy,
    pub(crate) name: String,
    pub(crate) now: DateTime<Utc>,
    /// How long an EdgeWorkload move may take before it is undone.
    pub(crate) timeout: Duration,
    /// Every reason for `Degraded` found so far, in order.
    pub(crate) problems: Vec<Problem>,
    /// Workloads on starved targets left alone, by reason (`None`: not evaluated this cycle).
    pub(crate) left_alone: Option<Vec<LeftAlone>>,
}

/// One control cycle for one policy at `now`: reads Prometheus, then [`cycle_with`].
pub async fn cycle(policy: &EnergyPolicy, ctx: &Context, now: DateTime<Utc>) -> Result<(), Error> {
    let s = &ctx.settings;
    let src = signals::Source {
        reader: &ctx.reader,
        names: &s.metric_names,
        device_label: &s.device_label,
        ages: MaxAges {
            node: s.node_max_age,
            device: s.device_max_age,
        },
        supply: &ctx.supply,
    };
    let prom = signals::read(&src, &policy.spec, now).await;
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
    let rt = ctx.policy_runtime(&policy.name_any()).await;
    let mut rt = rt.lock().await;
    rt.ran(policy, now);
    let mut c = Cycle::new(ctx, &mut rt, policy, now);
    if c.rt.term() != term {
        c.load().await?;
        c.rt.set_term(term);
    }
    if policy.metadata.deletion_timestamp.is_some() {
        return c.finalize().await;
    }
    c.ensure_finalizer().await?;
    c.run(prom).await
}

impl<'a> Cycle<'a> {
    pub(crate) fn new(
        ctx: &'a Context,
        rt: &'a mut PolicyRuntime,
        policy: &'a EnergyPolicy,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            ctx,
            rt,
            policy,
            name: policy.name_any(),
            now,
            timeout: ctx.settings.migration_timeout.unwrap_or_default(),
            problems: Vec::new(),
            left_alone: None,
        }
    }

    pub(crate) fn spec(&self) -> &'a EnergyPolicySpec {
        &self.policy.spec
    }

    /// The cycle of a live policy: moves in flight are driven whatever Prometheus says
    /// (finishing or undoing is safe); new actions only on a fresh reading of a valid spec.
    async fn run(mut self, prom: Result<PromData, ReadError>) -> Result<(), Error> {
        let durations = match self.spec().durations() {
            Ok(d) => d,
            Err(msg) => {
                self.problems.push(("InvalidSpec".into(), msg.clone()));
                return self.finish(Evaluated::InvalidSpec(msg), None).await;
            }
        };
        if self.ctx.settings.migration_timeout.is_none() {
            self.timeout = durations.migration_timeout;
        }
        let ladder_durations =
            match LadderDurations::of(&self.spec().forecast, self.spec().action.degrade.as_ref()) {
                Ok(d) => d,
                Err(msg) => {
                    self.problems.push(("InvalidSpec".into(), msg.clone()));
                    return self.finish(Evaluated::InvalidSpec(msg), None).await;
                }
            };
        // What this policy needs that the cluster does not have (reported even while Prometheus
        // is down: an operator should see both).
        self.problems
            .extend(missing_parts(&self.ctx.stores, self.spec()));
        if self.ctx.stores.health.get(Res::Workloads) == StoreState::Synced {
            self.drive_moves().await;
            self.collect_orphans().await;
        }
        self.track_evictions();
        // The ladder's ledger against the objects (a step of unknown outcome, a user's takeover).
        self.settle_ledger().await;

        let prom = match self.read(prom) {
            Ok(p) => p,
            Err(ev) => return self.finish(ev, None).await,
        };

        // Snapshot, forecast and plan.
        let mut view = View::read(
            &self.ctx.stores,
            &self.name,
            self.spec(),
            &prom,
            &self.ctx.settings,
            &mut self.problems,
        );
        let forecasts = if signals::needs_forecast(self.spec()) {
            self.forecast(&mut view, &prom, &ladder_durations)
        } else {
            Forecasts::default()
        };
        let spec = self.spec();
        let (previous, history) = self.rt.plan_inputs(self.now, durations.cooldown);
        let plan = planner::plan(&PlanInput {
            spec,
            durations: &durations,
            now: self.now,
            targets: &view.targets,
            workloads: &view.workloads,
            previous,
            history,
            max_gap: self.ctx.settings.max_gap(),
        });
        self.rt.set_states(plan.states.clone());
        self.diagnose(&plan, &view, &prom, durations.starvation_for);

        // Execute (Migrate) or only report (Observe).
        let policy_ref = reference(self.policy);
        self.transitions(&policy_ref, &plan).await;
        self.export_starved(&plan);
        self.left_alone(&plan);
        self.skipped_events(&plan, &view.pods).await;
        self.execute(&plan, &view).await;
        self.dry_run(&policy_ref, &plan).await;
        self.criticality_errors(&view);
        let ladder = self.plan_ladder(&mut view, &plan, &forecasts, &ladder_durations);
        self.run_ladder(ladder.as_ref(), &view).await;
        self.export_degraded();
        let starved = forecasts.fill_starved(status::starved(&plan), &view.targets);
        self.finish(Evaluated::Yes, Some(starved)).await
    }

    /// This cycle's Prometheus reading, or why the policy cannot be evaluated (as its problem).
    fn read(&mut self, prom: Result<PromData, ReadError>) -> Result<PromData, Evaluated> {
        let prom = match prom {
            Ok(p) => p,
            Err(ReadError::InvalidQuery { query, error }) => {
                let msg = format!(
                    "starvation.query.promql {query:?} is rejected by Prometheus: {error}; \
                     no actions are taken until it is fixed"
                );
                self.problems
                    .insert(0, ("InvalidQuery".into(), msg.clone()));
                return Err(Evaluated::InvalidQuery(msg));
            }
            Err(ReadError::Prometheus(e)) => {
                self.ctx.metrics.prometheus_errors.inc();
                tracing::warn!(policy = %self.name, "prometheus: {e}");
                self.problems
                    .push(("PrometheusUnavailable".into(), e.to_string()));
                return Err(Evaluated::PrometheusDown(e.to_string()));
            }
        };
        for (kind, table) in [("Node", &prom.nodes), ("EdgeDevice", &prom.devices)] {
            if let Some(age) = signals::oldest_age(table) {
                self.ctx
                    .metrics
                    .data_age
                    .get_or_create(&KindLabels { kind: kind.into() })
                    .set(age);
            }
        }
        Ok(prom)
    }

    /// Debug views of the targets, the `TargetDataMissing` problem, why workloads stay.
    fn diagnose(
        &mut self,
        plan: &planner::Plan,
        view: &View,
        prom: &PromData,
        starvation_for: Duration,
    ) {
        diagnostics::log_target_views(
            &self.name,
            self.rt.diag(),
            &view.targets,
            plan,
            &view.nodes,
            &view.devices,
            prom,
        );
        if let Some(p) = diagnostics::data_missing(
            self.rt.diag(),
            &view.targets,
            plan,
            self.now,
            starvation_for,
        ) {
            self.problems.push(p);
        }
        log_skips(&self.name, plan, view);
    }

    /// The starvation gauges of this policy: exactly the targets starved now, labelled with the
    /// policy's mode (the extender filters nodes on `mode="Migrate"` only).
    fn export_starved(&self, plan: &planner::Plan) {
        let mode = self.spec().action.mode.as_str();
        let series: BTreeSet<TargetLabels> = plan
            .starved()
            .map(|(id, _, _)| TargetLabels {
                policy: self.name.clone(),
                mode: mode.into(),
                kind: id.kind.as_str().into(),
                name: id.name.clone(),
                namespace: id.namespace.clone().unwrap_or_default(),
            })
            .collect();
        self.ctx.metrics.set_starved(&self.name, mode, series);
    }

    /// What stays on starved targets and why, counted: the status and a gauge per reason. Only
    /// reasons that keep a workload there for good ([`planner::SkipReason::stays`]: protected,
    /// ineligible, pinned, nowhere to go…); a move in flight or a cooldown is "not now", shown in
    /// Events and logs, and would change the status at every step of a move.
    fn left_alone(&mut self, plan: &planner::Plan) {
        let mut counts: std::collections::BTreeMap<String, u32> = Default::default();
        for s in plan.skipped.iter().filter(|s| s.reason.stays()) {
            let reason = match &s.reason {
                planner::SkipReason::Ineligible(why) => why.clone(),
                r => r.to_string(),
            };
            *counts.entry(reason).or_default() += 1;
        }
        self.ctx.metrics.left_alone.set(
            &self.name,
            counts.iter().map(|(reason, n)| {
                (
                    ReasonLabels {
                        policy: self.name.clone(),
                        reason: reason.clone(),
                    },
                    f64::from(*n),
                )
            }),
        );
        self.left_alone = Some(
            counts
                .into_iter()
                .map(|(reason, count)| LeftAlone { reason, count })
                .collect(),
        );
    }

    /// Events for starvation transitions, on the policy.
    async fn transitions(&self, policy_ref: &ObjectReference, plan: &planner::Plan) {
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
            tracing::info!(policy = %self.name, reason, "{note}");
            self.ctx
                .actuator
                .event(&self.ctx.fence, policy_ref, warning, reason, note)
                .await;
        }
    }

    /// Reports problems (a Warning Event on the policy for each one new since the last cycle),
    /// builds the status and writes it if it changed.
    pub(crate) async fn finish(
        self,
        evaluated: Evaluated,
        starved: Option<Vec<edgewatt_crds::StarvedTarget>>,
    ) -> Result<(), Error> {
        let Cycle {
            ctx,
            rt,
            policy,
            name,
            now,
            problems,
            left_alone,
            ..
        } = self;
        let policy_ref = reference(policy);
        for (reason, msg) in rt.new_problems(&problems) {
            if REPORTED_ELSEWHERE.contains(&reason.as_str()) {
                continue;
            }
            tracing::warn!(policy = %name, reason = %reason, "{msg}");
            ctx.actuator
                .event(&ctx.fence, &policy_ref, true, reason, msg.clone())
                .await;
        }
        let outcome = Outcome {
            generation: policy.metadata.generation,
            evaluated,
            starved,
            migrations: rt.migrations().to_vec(),
            migration_count: rt.migration_count(),
            moves_in_flight: rt.in_flight(),
            problems,
            degraded: rt.degraded().to_vec(),
            left_alone,
        };
        let prev = rt.last_status(policy);
        let st = status::build_status(&prev, &outcome, now);
        match status::write_if_changed(&ctx.client, &ctx.fence, &name, &prev, &st).await {
            Ok(_) => {
                rt.status_written(st);
                Ok(())
            }
            Err(status::WriteError::NotLeader(_)) => Ok(()),
            Err(status::WriteError::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(()),
            Err(status::WriteError::Kube(e)) => Err(e.into()),
        }
    }
}

/// Problems whose own Events are published elsewhere (the migration's, the eviction's).
const REPORTED_ELSEWHERE: [&str; 3] = ["ActionsFailed", "TargetDisappeared", "MigrationStuck"];

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
