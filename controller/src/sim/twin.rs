//! The controller half of the twin: one policy's real decision core — [`planner::plan`] fed
//! through the policy's [`PolicyRuntime`] (its starvation states, move history, moves and
//! evictions in flight), EdgeWorkload moves driven by [`migration::next_step`] — against the
//! simulated [`World`] instead of the API server and Prometheus.
//!
//! Inputs are built the way `snapshot.rs` builds them from the cluster and Prometheus, but kept
//! alive between decisions and updated in place: a target's signals and marks, a workload's
//! target and name change; nothing else is rebuilt (10 000 workloads' strings per decision would
//! dominate a year's run). Actions are applied the way `execute.rs` applies them and recorded
//! with the same runtime methods (`begin_eviction`, `begin_move`/`end_move`, `dry_run`,
//! `track_evictions`), so cooldowns and `maxPerHour` read the same history.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    keys, EnergyPolicy, MigrationRecord, MigrationResult, Mode, PolicyDurations, Strategy,
    TargetKind, WorkloadKind,
};
use kube::ResourceExt;

use super::world::World;
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

/// Outcomes of one policy's moves over a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MoveCounts {
    pub evictions: u64,
    pub moves_started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dry_runs: u64,
    pub plans: u64,
}

/// One EnergyPolicy's controller in the twin.
pub struct PolicyTwin {
    pub index: usize,
    pub name: String,
    policy: EnergyPolicy,
    durations: PolicyDurations,
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
                        Ok(()),
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
                        Err("not a pod with a CPU limit".to_string()),
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
                    budget_watts: self.policy.spec.scheduling.default_power_budget_watts,
                    external_power: None,
                    custom: None,
                    battery_capacity_joules: Some(t.battery.capacity_wh * 3600.0),
                    charge_watts: Some(charge_w),
                    runway_below_recharge: None,
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

    /// One decision at `now` (`cycle::run`'s read → snapshot → plan → execute): evicted pods
    /// that are gone leave flight, the planner runs on the refreshed snapshots, and its actions
    /// are applied (Migrate) or recorded as dry runs (Observe).
    pub fn decide(&mut self, world: &mut World, now: DateTime<Utc>) {
        if self.rt.evicting() > 0 {
            self.rt
                .track_evictions(|id, _| world.pod(&id.namespace, &id.name).is_some());
        }
        self.refresh(world);
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
        let planner::Plan {
            states,
            actions,
            dry_run,
            ..
        } = plan;
        self.rt.set_states(states);
        match self.policy.spec.action.mode {
            Mode::Migrate => self.execute(world, &actions, now),
            Mode::Observe => self.dry_runs(&dry_run, now),
        }
        self.rt.prune_ended(now);
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
