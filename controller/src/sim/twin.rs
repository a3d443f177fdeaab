//! The controller half of the twin: one policy's real decision core — [`planner::plan`] fed
//! through the policy's [`PolicyRuntime`] (its starvation states, move history, moves and
//! evictions in flight), EdgeWorkload moves driven by [`migration::next_step`] — against the
//! simulated [`World`] instead of the API server and Prometheus.
//!
//! Inputs are built the way `snapshot.rs` builds them from the cluster and Prometheus, but kept
//! alive between decisions and updated in place: a target's signals and marks, a workload's
//! target, name and (throttled) draw change; nothing else is rebuilt (10 000 workloads' strings
//! per decision would dominate a year's run). Actions are applied the way `execute.rs` applies
//! them and recorded with the same runtime methods (`begin_eviction`, `begin_move`/`end_move`,
//! `dry_run`, `track_evictions`), so cooldowns and `maxPerHour` read the same history.
//!
//! Continuity as `cycle.rs` runs it (`continuity.rs`): before the plan each target's forecast by
//! [`continuity::forecast_targets`] from its hourly supply history ([`SupplyLog`], what the
//! controller's range query would return), whose verdict is `starvation.runwayBelowRecharge`;
//! after it [`ladder::plan_ladder`] with the runtime's ledger, its steps taken the way the
//! degrader takes them (restores first; a shed recorded `Pending`, applied, then `Applied`) with
//! [`World::throttle`], [`World::suspend`] and [`World::restore`] instead of the API server, and
//! the ledger settled each decision (a throttled pod that was replaced is released).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    keys, DegradeState, DegradeStep, DegradedKind, EnergyPolicy, LadderDurations, MigrationRecord,
    MigrationResult, Mode, PolicyDurations, Strategy, TargetKind, WorkloadKind,
};
use kube::ResourceExt;

use super::fleet::Fleet;
use super::pv::MINUTES_PER_YEAR;
use super::world::World;
use crate::continuity;
use crate::degrader::{self, Degradee};
use crate::forecast::Forecasts;
use crate::ladder::{self, LadderInput, LadderPlan, LadderStep};
use crate::migration::{self, Intent, Step};
use crate::mover::{self, MoveKey};
use crate::planner::{
    self, Action, Constraints, LadderFacts, Placement, PlanInput, SuspendUnit, TargetId,
    TargetSignals, TargetSnapshot, WorkloadId, WorkloadSnapshot,
};
use crate::runtime::{Evicting, PolicyRuntime};
use crate::snapshot::{selected, starvation_taint};
use crate::status::rfc3339;

/// How many steps one drive takes at most (as `mover::drive`).
const MAX_STEPS: usize = 8;

/// Outcomes of one policy's moves and ladder steps over a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MoveCounts {
    pub evictions: u64,
    pub moves_started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dry_runs: u64,
    pub plans: u64,
    /// Ladder sheds taken (throttles and suspends), of which throttles.
    pub sheds: u64,
    pub throttles: u64,
    pub restores: u64,
    /// Ledger entries let go because their object was replaced (a throttled pod evicted).
    pub released: u64,
    /// Sheds of a degradee restored less than `flapWindow` before (the ladder's own count).
    pub ladder_flaps: u64,
    /// Decisions × targets the ladder reported exhausted: shedding all it may was not enough.
    pub exhausted: u64,
    /// Decisions × starved targets without a forecast (no supply history for some hour ahead:
    /// the target was dark then in every period of the history): the ladder cannot act there.
    pub starved_unforecast: u64,
    /// Observe mode: sheds the ladder would hold, summed over decisions.
    pub ladder_dry_runs: u64,
}

/// Each target's hourly supply samples `(t, watts)`, each the mean over the hour starting at `t`
/// of charge − discharge + draw over the minutes the target was up (what the controller's
/// `avg_over_time(...[1h:1m])` range query returns: a dark target has no series, so an hour it
/// was dark throughout has no sample). Shared by the policies of a run.
///
/// History before the start: the same hours of the days before, from the site's weather, as
/// the panel's output times the charge efficiency (what a target that was up, with room in its
/// battery, would have shown; a controller is assumed to have been watching before the run).
pub struct SupplyLog {
    hours: Vec<Vec<(DateTime<Utc>, f64)>>,
    /// Samples kept per target: what the longest `periods × period` asks for.
    keep: usize,
}

impl SupplyLog {
    /// `keep` hours of history before `t0` (UTC minute of the year `start_utc`) for every target.
    pub fn new(fleet: &Fleet, t0: DateTime<Utc>, start_utc: u32, keep: usize) -> Self {
        let eta = fleet.physics.charge_efficiency;
        let hours = fleet
            .targets
            .iter()
            .map(|t| {
                let solar = &fleet.sites[t.site].solar;
                (1..=keep)
                    .rev()
                    .map(|h| {
                        let first = i64::from(start_utc) - 60 * h as i64;
                        let mean = (0..60)
                            .map(|k| {
                                let moy = (first + k).rem_euclid(i64::from(MINUTES_PER_YEAR));
                                f64::from(solar.watts_per_wp_utc(moy as u32))
                            })
                            .sum::<f64>()
                            / 60.0;
                        (
                            t0 - chrono::Duration::hours(h as i64),
                            mean * t.solar_wp * eta,
                        )
                    })
                    .collect()
            })
            .collect();
        SupplyLog { hours, keep }
    }

    /// The hour that started at `start` ended: each target's sample from the world's meters.
    pub fn record_hour(&mut self, world: &mut World, start: DateTime<Utc>) {
        for (h, w) in self.hours.iter_mut().zip(world.take_supply()) {
            if let Some(w) = w {
                h.push((start, w));
            }
            if h.len() > self.keep + 48 {
                let drop = h.len() - self.keep;
                h.drain(..drop);
            }
        }
    }

    /// Target `t`'s samples, oldest first.
    pub fn of(&self, t: usize) -> &[(DateTime<Utc>, f64)] {
        &self.hours[t]
    }

    /// The hours of history `policies` need (0: none uses the forecast).
    pub fn hours_needed<'p>(policies: impl IntoIterator<Item = &'p EnergyPolicy>) -> usize {
        policies
            .into_iter()
            .filter(|p| crate::signals::needs_forecast(&p.spec))
            .filter_map(|p| {
                let d =
                    LadderDurations::of(&p.spec.forecast, p.spec.action.degrade.as_ref()).ok()?;
                let h = d.period.as_secs().div_ceil(3600) as usize;
                Some(h * p.spec.forecast.periods.max(1) as usize + 1)
            })
            .max()
            .unwrap_or(0)
    }
}

/// One EnergyPolicy's controller in the twin.
pub struct PolicyTwin {
    pub index: usize,
    pub name: String,
    policy: EnergyPolicy,
    durations: PolicyDurations,
    ladder_durations: LadderDurations,
    rt: PolicyRuntime,
    max_gap: Duration,
    targets: Vec<TargetSnapshot>,
    /// One per replica (same index), then the copies of moves in flight.
    workloads: Vec<WorkloadSnapshot>,
    replicas: usize,
    /// Per replica: what the snapshot shows (compared with the world's).
    shown: Vec<super::world::Shown>,
    /// The world's `marks_version` the snapshot's taints and labels are from.
    marks_version: Option<u64>,
    /// Moves in flight → replica.
    moving: BTreeMap<MoveKey, u32>,
    /// Target index by id (what actions name).
    target_ids: HashMap<TargetId, usize>,
    /// Deployments by namespace and name: the fleet file's workload (what a suspend scales).
    deployments: HashMap<(String, String), usize>,
    /// Per replica, its own draw (what the exporter shows of it, times its throttle).
    draw: Vec<f64>,
    pub counts: MoveCounts,
}

fn owner_of(namespace: &str, workload: &str) -> String {
    format!("Deployment/{namespace}/{workload}")
}

impl PolicyTwin {
    /// The controller of `policy` (index `index` in the fleet) over `world`, deciding every
    /// `interval` (the gap rule of `Settings::max_gap`).
    pub fn new(
        index: usize,
        policy: EnergyPolicy,
        fleet: &super::fleet::Fleet,
        world: &World,
        interval: Duration,
    ) -> Self {
        let durations = policy
            .spec
            .durations()
            .expect("checked when the fleet was read");
        let ladder_durations =
            LadderDurations::of(&policy.spec.forecast, policy.spec.action.degrade.as_ref())
                .expect("checked when the fleet was read");
        let spec = &policy.spec;
        let matches = |sel: Option<&edgewatt_crds::Selector>, labels| {
            sel.is_some_and(|s| crate::snapshot::policy_selector(s).matches(labels))
        };
        let targets = world
            .targets
            .iter()
            .map(|t| {
                let sel = match t.def.id.kind {
                    TargetKind::Node => spec.targets.node_selector.as_ref(),
                    TargetKind::EdgeDevice => spec.targets.edge_device_selector.as_ref(),
                };
                TargetSnapshot {
                    id: t.def.id.clone(),
                    labels: t.def.labels.clone(),
                    in_policy: matches(sel, &t.def.labels),
                    alive: !t.dark,
                    taints: Vec::new(),
                    tainted: false,
                    taint_ours: false,
                    signals: TargetSignals::default(),
                }
            })
            .collect();
        let no_ns = Default::default();
        let workloads = world
            .replicas
            .iter()
            .map(|r| {
                let def = &fleet.workloads[r.workload];
                let ineligible = (!selected(spec, &r.namespace, &def.labels, &no_ns))
                    .then(|| "not selected by the policy".to_string());
                let (constraints, owner, suspend, throttle) = match &def.placement {
                    super::fleet::PlacementDef::Pod { node_selector } => (
                        Constraints::Pod {
                            node_selector: node_selector.clone(),
                            affinity_terms: Vec::new(),
                            tolerations: Vec::new(),
                        },
                        Some(owner_of(&r.namespace, &def.name)),
                        SuspendUnit {
                            kind: edgewatt_crds::DegradedKind::Deployment,
                            namespace: r.namespace.clone(),
                            name: def.name.clone(),
                        },
                        if def.cpu_limit {
                            Ok(())
                        } else {
                            Err("no CPU limit to lower".to_string())
                        },
                    ),
                    super::fleet::PlacementDef::Edge { selector, .. } => (
                        Constraints::EdgeWorkload {
                            device_selector: selector.clone(),
                        },
                        None,
                        SuspendUnit {
                            kind: edgewatt_crds::DegradedKind::EdgeWorkload,
                            namespace: r.namespace.clone(),
                            name: r.name.clone(),
                        },
                        Err(
                            "an EdgeWorkload has no in-place resize (Flotta restarts it)"
                                .to_string(),
                        ),
                    ),
                };
                WorkloadSnapshot {
                    id: WorkloadId {
                        kind: r.kind,
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                    },
                    target: None,
                    pinned: def.pinned,
                    ineligible,
                    in_flight: false,
                    pdb_blocked: false,
                    constraints,
                    owner,
                    placement: Placement::Device,
                    running: r.kind == WorkloadKind::Pod,
                    host_bound: None,
                    tolerates_starvation: false,
                    ladder: LadderFacts {
                        criticality: r.criticality,
                        criticality_error: None,
                        watts: Some(r.draw_watts),
                        throttle,
                        suspend: Ok(suspend),
                    },
                }
            })
            .collect::<Vec<_>>();
        let replicas = workloads.len();
        let settings = crate::context::Settings {
            interval,
            metric_names: edgewatt_crds::metrics::MetricNames::new("edgewatt"),
            device_label: String::new(),
            node_max_age: Duration::from_secs(120),
            device_max_age: Duration::from_secs(900),
            migration_timeout: None,
            own_namespace: "edgewatt-system".into(),
        };
        PolicyTwin {
            index,
            name: policy.name_any(),
            policy,
            durations,
            ladder_durations,
            rt: PolicyRuntime::default(),
            max_gap: settings.max_gap(),
            targets,
            workloads,
            replicas,
            shown: vec![
                super::world::Shown {
                    generation: u32::MAX,
                    ..Default::default()
                };
                replicas
            ],
            marks_version: None,
            moving: BTreeMap::new(),
            target_ids: world
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| (t.def.id.clone(), i))
                .collect(),
            deployments: fleet
                .workloads
                .iter()
                .enumerate()
                .filter(|(_, w)| w.kind == WorkloadKind::Pod)
                .map(|(i, w)| ((w.namespace.clone(), w.name.clone()), i))
                .collect(),
            draw: world.replicas.iter().map(|r| r.draw_watts).collect(),
            counts: MoveCounts::default(),
        }
    }

    /// The planner's inputs from the world now, updated in place.
    fn refresh(&mut self, world: &World) {
        let marks_changed = self.marks_version != Some(world.marks_version);
        self.marks_version = Some(world.marks_version);
        for (snap, t) in self.targets.iter_mut().zip(&world.targets) {
            snap.alive = !t.dark;
            // A dark target's exporter is down: its series are gone (unknown, never 0).
            snap.signals = if t.dark {
                TargetSignals::default()
            } else {
                let f = t.last;
                let discharge_w = f.drawn_wh * 60.0;
                let charge_w = f.stored_wh * 60.0;
                TargetSignals {
                    battery_ratio: Some(t.ratio()),
                    battery_energy_joules: Some(t.soc_wh * 3600.0),
                    battery_draw_watts: Some(if discharge_w > 0.0 {
                        discharge_w
                    } else {
                        -charge_w
                    }),
                    watts: Some(t.load_w),
                    // `maxWatts` as the node's `edgewatt.io/power-budget-watts` annotation.
                    budget_watts: t.def.max_watts.or(self
                        .policy
                        .spec
                        .scheduling
                        .default_power_budget_watts),
                    external_power: None,
                    custom: None,
                    battery_capacity_joules: Some(t.battery.capacity_wh * 3600.0),
                    charge_watts: Some(charge_w),
                    runway_below_recharge: None,
                    runway_spare_watts: None,
                }
            };
            if marks_changed && snap.tainted != t.mark.is_some() {
                snap.tainted = t.mark.is_some();
                match t.def.id.kind {
                    TargetKind::Node => {
                        snap.taints = if t.mark.is_some() {
                            vec![starvation_taint()]
                        } else {
                            Vec::new()
                        };
                    }
                    TargetKind::EdgeDevice => {
                        if t.mark.is_some() {
                            snap.labels
                                .insert(keys::STARVED_LABEL.into(), "true".into());
                        } else {
                            snap.labels.remove(keys::STARVED_LABEL);
                        }
                    }
                }
            }
            if marks_changed {
                snap.taint_ours = t.mark.as_deref().is_some_and(|by| by == self.name);
            }
        }
        for (k, (seen, now)) in self.shown.iter_mut().zip(&world.shown).enumerate() {
            if seen == now {
                continue;
            }
            let snap = &mut self.workloads[k];
            if seen.generation != now.generation {
                snap.id.name.clone_from(&world.replicas[k].name);
            }
            if seen.at != now.at {
                snap.target = now
                    .at
                    .map(|t| world.targets[t as usize].def.id.name.clone());
            }
            snap.in_flight = now.in_flight;
            if seen.throttle_pct != now.throttle_pct {
                snap.ladder.watts = Some(self.draw[k] * f64::from(now.throttle_pct) / 100.0);
            }
            *seen = *now;
        }
        // Copies of moves in flight are EdgeWorkloads of their own (never moved themselves).
        self.workloads.truncate(self.replicas);
        for &r in &world.with_copy {
            let r = &world.replicas[r as usize];
            let Some(c) = r.copy else { continue };
            self.workloads.push(WorkloadSnapshot {
                id: WorkloadId {
                    kind: WorkloadKind::EdgeWorkload,
                    namespace: r.namespace.clone(),
                    name: migration::copy_name(&r.name),
                },
                target: Some(world.targets[c.target].def.id.name.clone()),
                pinned: false,
                ineligible: Some("edgewatt migration copy".into()),
                in_flight: false,
                pdb_blocked: false,
                constraints: Constraints::EdgeWorkload {
                    device_selector: None,
                },
                owner: None,
                placement: Placement::Device,
                running: false,
                host_bound: None,
                tolerates_starvation: false,
                ladder: LadderFacts::default(),
            });
        }
    }

    /// One decision at `now` (`cycle::run`'s read → snapshot → forecast → plan → execute →
    /// ladder): evicted pods that are gone leave flight, the ledger is settled, each target's
    /// forecast is made from `supply` (policies that use it), the planner runs on the refreshed
    /// snapshots and its actions are applied (Migrate) or recorded as dry runs (Observe), then
    /// the ladder's.
    pub fn decide(&mut self, world: &mut World, now: DateTime<Utc>, supply: Option<&SupplyLog>) {
        if self.rt.evicting() > 0 {
            self.rt
                .track_evictions(|id, _| world.pod(&id.namespace, &id.name).is_some());
        }
        self.settle_ledger(world);
        self.refresh(world);
        let forecasts = match supply {
            Some(log) if crate::signals::needs_forecast(&self.policy.spec) => {
                let ids = &self.target_ids;
                continuity::forecast_targets(
                    &self.policy.spec,
                    &self.ladder_durations,
                    now,
                    &mut self.targets,
                    &self.rt.held(),
                    |id| ids.get(id).map(|&t| log.of(t)),
                )
            }
            _ => Forecasts::default(),
        };
        let (previous, history) = self.rt.plan_inputs(now, self.durations.cooldown);
        let plan = planner::plan(&PlanInput {
            spec: &self.policy.spec,
            durations: &self.durations,
            now,
            targets: &self.targets,
            workloads: &self.workloads,
            previous,
            history,
            max_gap: self.max_gap,
        });
        self.counts.plans += 1;
        self.rt.set_states(plan.states.clone());
        match self.policy.spec.action.mode {
            Mode::Migrate => self.execute(world, &plan.actions, now),
            Mode::Observe => self.dry_runs(&plan.dry_run, now),
        }
        if let Some(lp) = self.plan_ladder(&plan, &forecasts, now) {
            match self.policy.spec.action.mode {
                Mode::Migrate => self.take_ladder_steps(world, &lp, now),
                Mode::Observe => self.dry_run_ladder(&lp, now),
            }
        }
        self.rt.prune_ended(now);
    }

    /// `continuity::plan_ladder`'s call: the ladder on this decision's plan, targets and
    /// workloads, with the runtime's ledger. `None` when the policy has no ladder.
    fn plan_ladder(
        &mut self,
        plan: &planner::Plan,
        forecasts: &Forecasts,
        now: DateTime<Utc>,
    ) -> Option<LadderPlan> {
        let spec = &self.policy.spec;
        if spec
            .action
            .degrade
            .as_ref()
            .is_none_or(|d| d.steps.is_empty())
        {
            return None;
        }
        for (t, f) in self.targets.iter().zip(&forecasts.profiles) {
            if f.is_none() && plan.states.get(&t.id).is_some_and(|s| s.starved.is_some()) {
                self.counts.starved_unforecast += 1;
            }
        }
        // What a step found not possible or a user took back (never, in the world: a no-op
        // kept so the call sequence is the controller's).
        self.rt.mark_left_alone(&plan.states, &mut self.workloads);
        let held = self.rt.held();
        let lp = ladder::plan_ladder(&LadderInput {
            spec,
            durations: &self.ladder_durations,
            now,
            targets: &self.targets,
            workloads: &self.workloads,
            plan,
            profiles: &forecasts.profiles,
            held: &held,
            restored: self.rt.restored(),
            settle: self.max_gap,
        });
        self.counts.ladder_flaps += u64::from(lp.flaps);
        self.counts.exhausted += lp.exhausted.len() as u64;
        Some(lp)
    }

    /// The replicas a ladder step acts on: a throttled pod; every replica of a suspended
    /// Deployment; a suspended EdgeWorkload.
    fn replicas_of(&self, world: &World, who: &Degradee) -> Vec<u32> {
        match who.kind {
            DegradedKind::Pod => world.pod(&who.namespace, &who.name).into_iter().collect(),
            DegradedKind::EdgeWorkload => world
                .edge_workload(&who.namespace, &who.name)
                .into_iter()
                .collect(),
            DegradedKind::Deployment | DegradedKind::StatefulSet | DegradedKind::ReplicaSet => self
                .deployments
                .get(&(who.namespace.clone(), who.name.clone()))
                .map_or_else(Vec::new, |&w| world.replicas_of(w).collect()),
        }
    }

    /// `continuity::take_ladder_steps` against the world: restores first, then sheds, each
    /// recorded in the ledger as the degrader's protocol does (`Pending` before the step,
    /// `Applied` after it; a restore leaves the ledger with its time, for flaps and settling).
    fn take_ladder_steps(&mut self, world: &mut World, lp: &LadderPlan, now: DateTime<Utc>) {
        let share = self
            .policy
            .spec
            .action
            .degrade
            .as_ref()
            .map_or(50, |d| d.throttle_percent);
        let share = f64::from(share) / 100.0;
        for step in &lp.steps {
            let LadderStep::Restore { who, .. } = step else {
                continue;
            };
            let who = continuity::to_degrader(who);
            let Some(e) = self
                .rt
                .degraded()
                .iter()
                .find(|e| Degradee::of(e) == who && e.state != DegradeState::DryRun)
                .cloned()
            else {
                continue;
            };
            for r in self.replicas_of(world, &who) {
                match e.action {
                    DegradeStep::Throttle => world.throttle(r, 1.0),
                    DegradeStep::Suspend => world.restore(r),
                }
            }
            self.counts.restores += 1;
            self.rt
                .degrade_done(e.kind, &e.namespace, &e.name, e.action, Some(now));
        }
        let since = rfc3339(now);
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
            let d = continuity::to_degrader(who);
            if degrader::already_degraded(self.rt.degraded(), &d) {
                continue;
            }
            let replicas = self.replicas_of(world, &d);
            if replicas.is_empty() {
                continue; // gone meanwhile: not possible
            }
            let entry = continuity::entry(
                who,
                *step,
                target,
                *criticality,
                *saved_watts,
                reason,
                &since,
            );
            self.rt.degrade_pending(entry.clone());
            for r in replicas {
                match step {
                    DegradeStep::Throttle => world.throttle(r, share),
                    DegradeStep::Suspend => world.suspend(r),
                }
            }
            self.rt
                .degrade_applied(entry.kind, &entry.namespace, &entry.name, entry.action);
            self.counts.sheds += 1;
            if *step == DegradeStep::Throttle {
                self.counts.throttles += 1;
            }
        }
    }

    /// `continuity::settle_ledger` against the world: an `Applied` throttle whose pod is gone
    /// (evicted, replaced by the node lifecycle; its replacement has the template's CPU limit)
    /// leaves the ledger (the degrader's `check` reports it `Gone`). Nothing else in the world
    /// changes a degraded object behind the controller's back.
    fn settle_ledger(&mut self, world: &World) {
        let gone: Vec<_> = self
            .rt
            .degraded()
            .iter()
            .filter(|e| e.state == DegradeState::Applied && e.kind == DegradedKind::Pod)
            .filter(|e| world.pod(&e.namespace, &e.name).is_none())
            .map(|e| (e.kind, e.namespace.clone(), e.name.clone(), e.action))
            .collect();
        for (kind, ns, name, action) in gone {
            self.counts.released += 1;
            self.rt.degrade_done(kind, &ns, &name, action, None);
        }
    }

    /// Observe mode: the ledger's dry-run entries are what the ladder would hold now.
    fn dry_run_ladder(&mut self, lp: &LadderPlan, now: DateTime<Utc>) {
        let since = rfc3339(now);
        let entries: Vec<_> = lp
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
                } => Some(continuity::entry(
                    who,
                    *step,
                    target,
                    *criticality,
                    *saved_watts,
                    reason,
                    &since,
                )),
                LadderStep::Restore { .. } => None,
            })
            .collect();
        self.counts.ladder_dry_runs += entries.len() as u64;
        self.rt.set_dry_run(entries);
    }

    fn target_index(&self, kind: TargetKind, namespace: Option<&str>, name: &str) -> Option<usize> {
        let id = TargetId {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        };
        self.target_ids.get(&id).copied()
    }

    /// Taints and labels first (evictions need the taint in place), then evictions and moves.
    fn execute(&mut self, world: &mut World, actions: &[Action], now: DateTime<Utc>) {
        for a in actions {
            match a {
                Action::Taint { node } | Action::Untaint { node } => {
                    if let Some(t) = self.target_index(TargetKind::Node, None, node) {
                        let on = matches!(a, Action::Taint { .. });
                        world.set_mark(t, on.then_some(self.name.as_str()));
                    }
                }
                Action::LabelDevice { device, leaving } => {
                    if let Some(t) = self.device(device) {
                        world.set_mark(t, Some(self.name.as_str()));
                    }
                    // Selector-placed workloads are not simulated: `leaving` is empty.
                    debug_assert!(leaving.is_empty());
                }
                Action::UnlabelDevice { device } => {
                    if let Some(t) = self.device(device) {
                        world.set_mark(t, None);
                    }
                }
                _ => {}
            }
        }
        for a in actions {
            match a {
                Action::Evict {
                    pod,
                    node,
                    owner,
                    siblings,
                } => self.evict(world, pod, node, (owner.as_deref(), siblings), now),
                Action::MigrateEdgeWorkload { workload, from, to } => {
                    self.start_move(world, workload, from, to, now)
                }
                _ => {}
            }
        }
    }

    fn device(&self, id: &TargetId) -> Option<usize> {
        self.target_index(TargetKind::EdgeDevice, id.namespace.as_deref(), &id.name)
    }

    /// One eviction, recorded as `execute::evict` records a granted one.
    fn evict(
        &mut self,
        world: &mut World,
        pod: &WorkloadId,
        node: &str,
        (owner, siblings): (Option<&str>, &[WorkloadId]),
        now: DateTime<Utc>,
    ) {
        let Some(r) = world.pod(&pod.namespace, &pod.name) else {
            return; // gone meanwhile
        };
        world.evict(r);
        self.counts.evictions += 1;
        let record = MigrationRecord {
            kind: WorkloadKind::Pod,
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            from: node.to_string(),
            to: None,
            owner: owner.map(String::from),
            started_at: rfc3339(now),
            finished_at: Some(rfc3339(now)),
            result: MigrationResult::Succeeded,
            message: format!("evicted from {node}"),
        };
        let evicting = Evicting {
            uid: None,
            node: node.to_string(),
        };
        self.rt
            .begin_eviction(pod, (owner, siblings), evicting, record, now);
    }

    /// Starts a move as `mover::start` does (the object still on `from`, no intent on it), then
    /// drives it as far as it goes now.
    fn start_move(
        &mut self,
        world: &mut World,
        workload: &WorkloadId,
        from: &str,
        to: &str,
        now: DateTime<Utc>,
    ) {
        let Some(r) = world.edge_workload(&workload.namespace, &workload.name) else {
            return;
        };
        let Some(to_i) = world.device_index(&workload.namespace, to) else {
            return;
        };
        let rep = &world.replicas[r as usize];
        let on_from = rep
            .device
            .is_some_and(|d| world.targets[d].def.id.name == from);
        if rep.intent.is_some() || !on_from {
            return; // stale plan
        }
        let key = MoveKey {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        };
        let strategy = self.policy.spec.action.strategy;
        let intent = Intent::new(&self.name, &key.name, from, to, strategy, now);
        world.move_started(r, to_i);
        if strategy == Strategy::Recreate {
            world.repoint(r, to_i);
        }
        world.set_intent(r, Some((self.index, intent.clone())));
        self.counts.moves_started += 1;
        let message = format!("moving from {from} to {to} ({strategy:?})");
        let record = mover::record(&key, &intent, MigrationResult::InProgress, message, None);
        self.rt
            .begin_move(key.clone(), intent.started_at, record, now);
        self.moving.insert(key.clone(), r);
        self.drive_one(world, &key, now);
    }

    /// Drives every move in flight (each step: the real controller drives them every cycle, and
    /// a move should not wait for a coarse decision interval).
    pub fn drive_moves(&mut self, world: &mut World, now: DateTime<Utc>) {
        if self.moving.is_empty() {
            return;
        }
        for key in self.rt.moves() {
            self.drive_one(world, &key, now);
        }
    }

    /// `mover::drive` against the world: observe, ask `next_step`, do that one step, repeat.
    fn drive_one(&mut self, world: &mut World, key: &MoveKey, now: DateTime<Utc>) {
        let Some(&r) = self.moving.get(key) else {
            return;
        };
        let timeout = self.durations.migration_timeout;
        for _ in 0..MAX_STEPS {
            let Some((_, intent)) = world.replicas[r as usize]
                .intent
                .clone()
                .filter(|(p, _)| *p == self.index)
            else {
                return;
            };
            let o = world.observe(r, &intent);
            match migration::next_step(&intent, &o, now, timeout) {
                Step::Wait { .. } => return,
                Step::CreateCopy => {
                    if let Some(to) = world.device_index(&key.namespace, &intent.to) {
                        world.create_copy(r, to);
                    }
                }
                Step::Repoint { device, intent } => {
                    if let Some(d) = world.device_index(&key.namespace, &device) {
                        world.repoint(r, d);
                    }
                    world.set_intent(r, Some((self.index, intent)));
                }
                Step::DeleteCopy => world.delete_copy(r),
                Step::Finish { result, message } => {
                    world.set_intent(r, None);
                    match result {
                        MigrationResult::Succeeded => self.counts.succeeded += 1,
                        _ => self.counts.failed += 1,
                    }
                    let rec = mover::record(key, &intent, result, message, Some(now));
                    self.rt.end_move(key, rec, now);
                    self.moving.remove(key);
                    return;
                }
            }
        }
    }

    /// Observe mode: the history counts what would have been done (`execute::dry_run`).
    fn dry_runs(&mut self, actions: &[Action], now: DateTime<Utc>) {
        for a in actions {
            let (id, from, to, owner, siblings): (_, _, _, Option<&str>, &[WorkloadId]) = match a {
                Action::Evict {
                    pod,
                    node,
                    owner,
                    siblings,
                } => (pod, node, None, owner.as_deref(), siblings),
                Action::MigrateEdgeWorkload { workload, from, to } => {
                    (workload, from, Some(to), None, &[])
                }
                _ => continue,
            };
            self.counts.dry_runs += 1;
            let record = MigrationRecord {
                kind: id.kind,
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                from: from.clone(),
                to: to.cloned(),
                owner: owner.map(String::from),
                started_at: rfc3339(now),
                finished_at: Some(rfc3339(now)),
                result: MigrationResult::DryRun,
                message: "Observe mode".into(),
            };
            self.rt.dry_run(id, (owner, siblings), record, now);
        }
    }

    /// Moves in flight now.
    pub fn in_flight(&self) -> usize {
        self.moving.len()
    }
}
