//! The cycle's continuity steps (DESIGN.md "Continuity"): each target's runway forecast before
//! the plan (its verdict is `starvation.runwayBelowRecharge`), the degradation ladder after it
//! ([`crate::ladder`]), and what they publish: forecast and ladder gauges, the status's forecast
//! figures and ledger, problems for what cannot be done.
//!
//! The ladder's writes go through [`crate::degrader`], by its protocol (its module docs): the
//! ledger (`status.degraded`) holds what restores a step and is written, and acknowledged by the
//! API server, before the step is taken; `Pending` entries are settled from the objects; an
//! `Applied` entry a user took over (restored, changed, deleted) leaves with an Event; restores
//! are idempotent, so a lost status write only repeats one that changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use edgewatt_crds::{
    Criticality, DegradeState, DegradeStep, DegradedWorkload, EnergyPolicySpec, LadderDurations,
    Mode, TargetKind, WorkloadKind,
};

use k8s_openapi::api::core::v1::ObjectReference;

use crate::{
    cycle::Cycle,
    degrader::{self, Confirmed, Prepare, ResizeProgress, Restored, StepError},
    forecast::{below_recharge, forecast, spare_watts, ForecastInput, Forecasts, SupplyProfile},
    ladder::{self, Held, LadderInput, LadderPlan, LadderStep},
    metrics::{DegradedLabels, ForecastLabels},
    planner::{Plan, TargetId, TargetSnapshot, Time, WorkloadId},
    snapshot::PromData,
    view::View,
};

fn labels(policy: &str, id: &TargetId) -> ForecastLabels {
    ForecastLabels {
        policy: policy.into(),
        kind: id.kind.as_str().into(),
        name: id.name.clone(),
        namespace: id.namespace.clone().unwrap_or_default(),
    }
}

/// Every target's supply profile and forecast, before the plan: the profile from its hourly
/// supply history (`history` of its id; none: unknown), the forecast from its signals and that
/// profile, and the verdict as its `runway_below_recharge` (unknown where any input is: no
/// battery, no history yet). Pure: the controller's cycle and `simulate` share it.
///
/// The verdict is judged with what the ladder holds on the target (`held`, not Observe's dry
/// runs) back: the measured draw already shows it saved, so judged on that alone the ladder's
/// own savings would make the target recover, everything be restored and shed again once the
/// `for` window passed — a flap every few minutes all night (`simulate` showed it: 16 minutes
/// from restore to shed on the winter site).
pub fn forecast_targets<'h>(
    spec: &EnergyPolicySpec,
    durations: &LadderDurations,
    now: Time,
    targets: &mut [TargetSnapshot],
    held: &[Held],
    history: impl Fn(&TargetId) -> Option<&'h [(Time, f64)]>,
) -> Forecasts {
    let mut out = Forecasts::default();
    let mut held_w: HashMap<&TargetId, f64> = HashMap::new();
    for h in held.iter().filter(|h| !h.dry_run) {
        *held_w.entry(&h.target).or_default() += h.saved_watts.max(0.0);
    }
    for t in targets.iter_mut() {
        let profile = history(&t.id).and_then(|h| {
            SupplyProfile::from_history(
                h,
                now,
                durations.period,
                spec.forecast.periods,
                durations.horizon,
            )
        });
        let input = profile
            .as_ref()
            .and_then(|p| ForecastInput::of(&t.signals, spec.forecast.reserve_percent, p));
        let f = input.as_ref().map(forecast);
        t.signals.runway_below_recharge = input.as_ref().map(|i| match held_w.get(&t.id) {
            Some(w) => below_recharge(&forecast(&i.at_draw(i.draw_w + w))),
            None => f.as_ref().is_some_and(below_recharge),
        });
        t.signals.runway_spare_watts = match (&input, t.signals.runway_below_recharge) {
            (Some(i), Some(false)) => Some(spare_watts(
                &i.at_draw(i.draw_w + held_w.get(&t.id).copied().unwrap_or(0.0)),
            )),
            (Some(_), _) => Some(0.0),
            (None, _) => None,
        };
        out.profiles.push(profile);
        out.forecasts.push(f);
    }
    out
}

impl Cycle<'_> {
    /// Before the plan: every target's forecast ([`forecast_targets`]) from the supply history
    /// read from Prometheus (policies that use the forecast); the runway and recharge gauges
    /// follow.
    pub(crate) fn forecast(
        &mut self,
        view: &mut View,
        prom: &PromData,
        durations: &LadderDurations,
    ) -> Forecasts {
        let held = self.rt.held();
        let out = forecast_targets(
            self.spec(),
            durations,
            self.now,
            &mut view.targets,
            &held,
            |id| {
                match id.kind {
                    TargetKind::Node => prom.supply_nodes.get(&id.name),
                    TargetKind::EdgeDevice => prom.supply_devices.get(&id.name),
                }
                .map(Vec::as_slice)
            },
        );
        let mut runway = Vec::new();
        let mut recharge = Vec::new();
        for (t, f) in view.targets.iter().zip(&out.forecasts) {
            if let (true, Some(f)) = (t.in_policy, f) {
                if let Some(r) = f.runway {
                    runway.push((labels(&self.name, &t.id), r.as_secs_f64()));
                }
                if let Some(r) = f.recharge {
                    recharge.push((labels(&self.name, &t.id), r.as_secs_f64()));
                }
            }
        }
        self.ctx.metrics.runway.set(&self.name, runway);
        self.ctx.metrics.recharge.set(&self.name, recharge);
        out
    }

    /// After the plan: the ladder's decisions for targets whose work has nowhere to go, from the
    /// ledger this memory holds. `None` when the policy has no ladder.
    pub(crate) fn plan_ladder(
        &mut self,
        view: &mut View,
        plan: &Plan,
        forecasts: &Forecasts,
        durations: &LadderDurations,
    ) -> Option<LadderPlan> {
        let spec = self.spec();
        if spec
            .action
            .degrade
            .as_ref()
            .is_none_or(|d| d.steps.is_empty())
        {
            return None;
        }
        // What the executor found not possible, or a user took back: the plan goes on without.
        self.rt.mark_left_alone(&plan.states, &mut view.workloads);
        let held = self.rt.held();
        let lp = ladder::plan_ladder(&LadderInput {
            spec,
            durations,
            now: self.now,
            targets: &view.targets,
            workloads: &view.workloads,
            plan,
            profiles: &forecasts.profiles,
            held: &held,
            restored: self.rt.restored(),
            settle: self.ctx.settings.max_gap(),
        });
        if lp.flaps > 0 {
            self.ctx
                .metrics
                .flaps
                .get_or_create(&crate::metrics::OnePolicy {
                    policy: self.name.clone(),
                })
                .inc_by(u64::from(lp.flaps));
        }
        let shortfall: Vec<(ForecastLabels, f64)> = lp
            .exhausted
            .iter()
            .map(|(id, w)| (labels(&self.name, id), *w))
            .collect();
        self.ctx.metrics.shortfall.set(&self.name, shortfall);
        if !lp.exhausted.is_empty() {
            let list: Vec<String> = lp
                .exhausted
                .iter()
                .map(|(id, w)| format!("{} ({w:.1} W short)", crate::diagnostics::target_str(id)))
                .collect();
            self.problems.push((
                "LadderExhausted".into(),
                format!(
                    "shedding everything the ladder may is not enough for the critical workloads to outlive the shortage on {}",
                    list.join(", ")
                ),
            ));
        }
        Some(lp)
    }

    /// Unreadable `edgewatt.io/criticality` values, as one problem naming the objects (they
    /// count as critical meanwhile: never degraded).
    pub(crate) fn criticality_errors(&mut self, view: &View) {
        let bad: Vec<String> = view
            .workloads
            .iter()
            .filter_map(|w| {
                let e = w.ladder.criticality_error.as_ref()?;
                Some(format!(
                    "{} {}/{}: {e}",
                    w.id.kind.as_str(),
                    w.id.namespace,
                    w.id.name
                ))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !bad.is_empty() {
            self.problems.push((
                "InvalidCriticality".into(),
                format!(
                    "{} (treated as critical: never throttled or suspended)",
                    bad.join("; ")
                ),
            ));
        }
    }

    /// The degraded-workloads gauge from the ledger: what is held (Migrate) and what would be
    /// (Observe), by action and criticality.
    pub(crate) fn export_degraded(&self) {
        let mut counts: BTreeMap<(String, &'static str, &'static str), u32> = BTreeMap::new();
        for d in self.rt.degraded() {
            let mode = if d.state == DegradeState::DryRun {
                Mode::Observe
            } else {
                Mode::Migrate
            };
            *counts
                .entry((
                    mode.as_str().to_string(),
                    d.action.as_str(),
                    d.criticality.as_str(),
                ))
                .or_default() += 1;
        }
        self.ctx.metrics.degraded.set(
            &self.name,
            counts.into_iter().map(|((mode, action, criticality), n)| {
                (
                    DegradedLabels {
                        policy: self.name.clone(),
                        mode,
                        action: action.into(),
                        criticality: criticality.into(),
                    },
                    f64::from(n),
                )
            }),
        );
    }

    /// The ladder's plan, carried out: Observe mode records what it would hold; Migrate mode
    /// takes its steps ([`crate::degrader`]). A policy that no longer has a ladder, or is no
    /// longer in Migrate mode, gives back what it holds.
    pub(crate) async fn run_ladder(&mut self, lp: Option<&LadderPlan>, view: &View) {
        let migrate = self.spec().action.mode == Mode::Migrate;
        let mut told = HashSet::new();
        match lp {
            Some(lp) if !migrate => self.dry_run_ladder(lp),
            Some(lp) => told = self.take_ladder_steps(lp, view).await,
            None => self.rt.set_dry_run(Vec::new()),
        }
        if let Some(lp) = lp {
            self.report_not_degradable(lp, &told).await;
        }
        if lp.is_none() || !migrate {
            self.restore_all("the policy no longer degrades in Migrate mode")
                .await;
        }
    }

    /// A `DegradeSkipped` Event on each workload the ladder reached for but could not degrade
    /// (`LadderPlan::not_degradable`: no CPU limit, no owner to scale, left alone…), once while
    /// it stays so; `told`: workloads whose step the executor already reported this cycle.
    async fn report_not_degradable(&mut self, lp: &LadderPlan, told: &HashSet<WorkloadId>) {
        let now: HashSet<WorkloadId> = lp
            .not_degradable
            .iter()
            .map(|(id, _)| id.clone())
            .chain(told.iter().cloned())
            .collect();
        let new: HashSet<WorkloadId> = self.rt.newly_not_degradable(now).into_iter().collect();
        for (id, why) in &lp.not_degradable {
            if told.contains(id) || !new.contains(id) {
                continue;
            }
            let who = degrader::Degradee {
                kind: match id.kind {
                    WorkloadKind::Pod => edgewatt_crds::DegradedKind::Pod,
                    WorkloadKind::EdgeWorkload => edgewatt_crds::DegradedKind::EdgeWorkload,
                },
                namespace: id.namespace.clone(),
                name: id.name.clone(),
            };
            tracing::info!(policy = %self.name, workload = %who, "the ladder cannot degrade it: {why}");
            self.ctx
                .actuator
                .event(
                    &self.ctx.fence,
                    &reference_to(&who),
                    true,
                    "DegradeSkipped",
                    format!("the ladder cannot degrade it: {why}"),
                )
                .await;
        }
    }

    /// Settles the ledger against the objects, each cycle: a `Pending` entry (a step whose outcome
    /// is not known: a restart, a lost write) is confirmed or dropped; an `Applied` entry a user
    /// took over (restored, changed, deleted or replaced the object) leaves with an Event.
    pub(crate) async fn settle_ledger(&mut self) {
        let ctx = self.ctx;
        for e in self.rt.degraded().to_vec() {
            match e.state {
                DegradeState::Pending => match degrader::confirm(&ctx.ladder, &e).await {
                    Ok(Confirmed::Applied) => {
                        self.rt
                            .degrade_applied(e.kind, &e.namespace, &e.name, e.action)
                    }
                    Ok(Confirmed::NotApplied(why)) => {
                        tracing::info!(policy = %self.name, workload = %e.name, "{} not taken: {why}", e.action.as_str());
                        self.rt
                            .degrade_done(e.kind, &e.namespace, &e.name, e.action, None);
                    }
                    Err(err) => {
                        tracing::warn!(policy = %self.name, workload = %e.name, "settling a pending {}: {err}", e.action.as_str())
                    }
                },
                DegradeState::Applied => match degrader::check(&ctx.ladder, &e).await {
                    Ok(Some(outcome)) => self.ended_without_us(&e, outcome).await,
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(policy = %self.name, workload = %e.name, "checking a degraded workload: {err}")
                    }
                },
                DegradeState::DryRun => {}
            }
        }
    }

    /// A user took a degraded workload over: the entry goes, an Event says what was seen.
    async fn ended_without_us(&mut self, e: &DegradedWorkload, outcome: Restored) {
        let why = match &outcome {
            Restored::Done => "restored by someone else".to_string(),
            Restored::Gone(m) | Restored::Edited(m) | Restored::Exists(m) => m.clone(),
        };
        self.step_done(
            e,
            "Released",
            &format!("no longer held by the ladder: {why}"),
            true,
        )
        .await;
        self.rt
            .taken_back(e, format!("left as a user set it ({why})"));
        self.rt
            .degrade_done(e.kind, &e.namespace, &e.name, e.action, None);
    }

    /// Migrate mode: the ladder's restores, then its sheds, each by the degrader's protocol.
    /// Returns the workloads whose step was not possible (reported here, and left alone).
    async fn take_ladder_steps(&mut self, lp: &LadderPlan, view: &View) -> HashSet<WorkloadId> {
        let mut told = HashSet::new();
        let ctx = self.ctx;
        let percent = self
            .spec()
            .action
            .degrade
            .as_ref()
            .map_or(50, |d| d.throttle_percent);
        for step in &lp.steps {
            if let LadderStep::Restore { who, reason } = step {
                let who = to_degrader(who);
                let Some(e) = self
                    .rt
                    .degraded()
                    .iter()
                    .find(|e| degrader::Degradee::of(e) == who && e.state != DegradeState::DryRun)
                    .cloned()
                else {
                    continue;
                };
                if self.restore_one(&e, reason).await.is_err() {
                    return told;
                }
            }
        }
        // Sheds: prepared and recorded first; applied only once the ledger is acknowledged.
        let since = crate::status::rfc3339(self.now);
        let mut ready = Vec::new();
        for step in &lp.steps {
            let LadderStep::Shed {
                who,
                step,
                target,
                criticality,
                saved_watts,
                reason,
            } = step
            else {
                continue;
            };
            let d = to_degrader(who);
            if degrader::already_degraded(self.rt.degraded(), &d) {
                continue;
            }
            match degrader::prepare(&ctx.ladder, &d, *step, percent).await {
                Ok(Prepare::Ready(p)) => {
                    let entry = p.entry(
                        &target.name,
                        *criticality,
                        since.clone(),
                        reason.clone(),
                        Some((saved_watts * 10.0).round() / 10.0),
                    );
                    self.rt.degrade_pending(entry.clone());
                    ready.push((p, entry));
                }
                Ok(Prepare::NotPossible(why)) => {
                    self.not_degradable(&d, *step, &why).await;
                    told.extend(
                        view.workloads
                            .iter()
                            .filter(|w| match who {
                                ladder::Degradee::Pod(id) => &w.id == id,
                                ladder::Degradee::Unit(u) => w.ladder.suspend.as_ref() == Ok(u),
                            })
                            .map(|w| w.id.clone()),
                    );
                    self.rt.leave_alone(who.clone(), target.clone(), why);
                }
                Err(err) => {
                    tracing::warn!(policy = %self.name, workload = %d, "preparing a {}: {err}", step.as_str());
                }
            }
        }
        if ready.is_empty() {
            return told;
        }
        if let Err(err) = self.write_ledger().await {
            // Not recorded, so not taken: the entries go and the ladder decides again.
            tracing::warn!(policy = %self.name, "the ledger could not be written; no step taken: {err}");
            for (_, e) in &ready {
                self.rt
                    .degrade_done(e.kind, &e.namespace, &e.name, e.action, None);
            }
            return told;
        }
        for (p, e) in ready {
            match degrader::apply(&ctx.ladder, &ctx.fence, &p).await {
                Ok(applied) => {
                    self.rt
                        .degrade_applied(e.kind, &e.namespace, &e.name, e.action);
                    self.count_step(e.action.as_str(), "Applied");
                    let what = match e.action {
                        DegradeStep::Throttle => "WorkloadThrottled",
                        DegradeStep::Suspend => "WorkloadSuspended",
                    };
                    self.step_done(&e, what, &e.reason, false).await;
                    if let Some(ResizeProgress::Deferred(m) | ResizeProgress::Infeasible(m)) =
                        applied.resize
                    {
                        let note = format!("the kubelet has not applied the lower CPU limit: {m}; the saving is not there yet");
                        self.step_done(&e, "ThrottleNotApplied", &note, true).await;
                    }
                }
                Err(StepError::NotLeader) => return told,
                Err(err) if err.nothing_done() => {
                    self.count_step(e.action.as_str(), "Failed");
                    self.step_done(&e, "DegradeFailed", &err.to_string(), true)
                        .await;
                    self.rt
                        .degrade_done(e.kind, &e.namespace, &e.name, e.action, None);
                }
                Err(err) => {
                    // It may have happened: the entry stays Pending and is settled next cycle.
                    tracing::warn!(policy = %self.name, workload = %e.name, "{} outcome unknown: {err}", e.action.as_str());
                }
            }
        }
        told
    }

    /// Restores one entry; `Err` only when leadership is gone.
    async fn restore_one(&mut self, e: &DegradedWorkload, why: &str) -> Result<(), ()> {
        match degrader::restore(&self.ctx.ladder, &self.ctx.fence, e).await {
            Ok(Restored::Done) => {
                self.count_step("Restore", "Applied");
                self.step_done(e, "WorkloadRestored", why, false).await;
                self.rt
                    .degrade_done(e.kind, &e.namespace, &e.name, e.action, Some(self.now));
                Ok(())
            }
            Ok(other) => {
                self.count_step("Restore", "Released");
                self.ended_without_us(e, other).await;
                Ok(())
            }
            Err(StepError::NotLeader) => Err(()),
            Err(err) => {
                tracing::warn!(policy = %self.name, workload = %e.name, "restoring: {err}; tried again next cycle");
                Ok(())
            }
        }
    }

    /// Gives back everything the ledger holds (the ladder is off, the policy left Migrate mode,
    /// or it is being deleted). Entries not restored now stay and are tried again.
    pub(crate) async fn restore_all(&mut self, why: &str) {
        let held: Vec<DegradedWorkload> = self
            .rt
            .degraded()
            .iter()
            .filter(|e| e.state != DegradeState::DryRun)
            .cloned()
            .collect();
        for e in held {
            if self.restore_one(&e, why).await.is_err() {
                return;
            }
        }
    }

    /// The ledger written now, through the status subresource; the step waits for this.
    async fn write_ledger(&mut self) -> Result<(), String> {
        let api: kube::Api<edgewatt_crds::EnergyPolicy> = kube::Api::all(self.ctx.client.clone());
        let degraded = self.rt.degraded().to_vec();
        let count = degraded
            .iter()
            .filter(|d| d.state != DegradeState::DryRun)
            .count();
        let patch = serde_json::json!({"status": {"degraded": degraded, "degradedCount": count}});
        self.ctx
            .fence
            .guard(api.patch_status(
                &self.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            ))
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn count_step(&self, action: &str, result: &str) {
        self.ctx
            .metrics
            .ladder_steps
            .get_or_create(&crate::metrics::StepLabels {
                policy: self.name.clone(),
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }

    /// An Event on the degraded object (and a log line).
    async fn step_done(&self, e: &DegradedWorkload, reason: &str, note: &str, warning: bool) {
        let what = degrader::Degradee::of(e);
        tracing::info!(policy = %self.name, workload = %what, reason, "{note}");
        self.ctx
            .actuator
            .event(
                &self.ctx.fence,
                &reference_to(&what),
                warning,
                reason,
                note.to_string(),
            )
            .await;
    }

    /// A rung that cannot act on a workload: said once per cycle in the log, and as an Event.
    async fn not_degradable(&self, who: &degrader::Degradee, step: DegradeStep, why: &str) {
        tracing::info!(policy = %self.name, workload = %who, "cannot {}: {why}", step.as_str());
        self.ctx
            .actuator
            .event(
                &self.ctx.fence,
                &reference_to(who),
                true,
                "DegradeSkipped",
                format!(
                    "cannot {}: {why}; the ladder goes on to its next step",
                    step.as_str()
                ),
            )
            .await;
    }

    /// Observe mode: the ledger's dry-run entries become exactly what the ladder would hold now;
    /// one it already would hold keeps its `since` (when it would have been taken: the status
    /// is not rewritten every cycle for a step that did not change).
    pub(crate) fn dry_run_ladder(&mut self, lp: &LadderPlan) {
        let now = crate::status::rfc3339(self.now);
        let earlier: HashMap<(degrader::Degradee, DegradeStep), String> = self
            .rt
            .degraded()
            .iter()
            .filter(|d| d.state == DegradeState::DryRun)
            .map(|d| ((degrader::Degradee::of(d), d.action), d.since.clone()))
            .collect();
        let entries: Vec<DegradedWorkload> = lp
            .dry_run
            .iter()
            .filter_map(|s| match s {
                LadderStep::Shed {
                    who,
                    step,
                    target,
                    criticality,
                    saved_watts,
                    reason,
                } => {
                    let since = earlier.get(&(to_degrader(who), *step)).unwrap_or(&now);
                    Some(entry(
                        who,
                        *step,
                        target,
                        *criticality,
                        *saved_watts,
                        reason,
                        since,
                    ))
                }
                LadderStep::Restore { .. } => None,
            })
            .collect();
        self.rt.set_dry_run(entries);
    }
}

/// A ledger entry for a shed of `who` (restore data filled in by the executor).
pub(crate) fn entry(
    who: &ladder::Degradee,
    step: DegradeStep,
    target: &TargetId,
    criticality: Criticality,
    saved_watts: f64,
    reason: &str,
    since: &str,
) -> DegradedWorkload {
    let (kind, namespace, name) = match who {
        ladder::Degradee::Pod(id) => (
            edgewatt_crds::DegradedKind::Pod,
            id.namespace.clone(),
            id.name.clone(),
        ),
        ladder::Degradee::Unit(u) => (u.kind, u.namespace.clone(), u.name.clone()),
    };
    DegradedWorkload {
        kind,
        namespace,
        name,
        target: target.name.clone(),
        action: step,
        criticality,
        since: since.to_string(),
        reason: reason.to_string(),
        saved_watts: Some((saved_watts * 10.0).round() / 10.0),
        state: DegradeState::DryRun,
        restore: Default::default(),
    }
}

/// The degrader's name for what a ladder step acts on.
pub(crate) fn to_degrader(who: &ladder::Degradee) -> degrader::Degradee {
    match who {
        ladder::Degradee::Pod(id) => degrader::Degradee::pod(&id.namespace, &id.name),
        ladder::Degradee::Unit(u) => degrader::Degradee::from(u),
    }
}

/// An Event's reference to a degraded object (no uid: the ladder's Role cannot read owners).
fn reference_to(who: &degrader::Degradee) -> ObjectReference {
    use edgewatt_crds::DegradedKind as K;
    let api_version = match who.kind {
        K::Pod => "v1".to_string(),
        K::Deployment | K::StatefulSet | K::ReplicaSet => "apps/v1".to_string(),
        K::EdgeWorkload => {
            <edgewatt_crds::EdgeWorkload as kube::Resource>::api_version(&()).to_string()
        }
    };
    ObjectReference {
        api_version: Some(api_version),
        kind: Some(who.kind.as_str().to_string()),
        name: Some(who.name.clone()),
        namespace: Some(who.namespace.clone()),
        ..Default::default()
    }
}
