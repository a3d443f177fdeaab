//! What the controller remembers about one policy between cycles, and the only code that changes
//! it: every write goes through a method here, so the bookkeeping of a move or an eviction (in
//! flight, ended, history for cooldown and rate limits, the status record) is done in one place
//! and cannot be half-done by a caller.
//!
//! The memory is (re)built from the cluster whenever this replica (re)gains the Lease
//! ([`PolicyRuntime::from_status`], then the lifecycle's settling), never carried over from an
//! earlier term.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    DegradeState, DegradeStep, DegradedKind, DegradedWorkload, EnergyPolicy, EnergyPolicyStatus,
    MigrationRecord, MigrationResult, TargetKind, WorkloadKind,
};

use crate::{
    diagnostics,
    ladder::{Degradee, Held},
    mover::MoveKey,
    planner::{self, MoveHistory, TargetId, TargetState, TargetStates, WorkloadId},
    status::{parse_time, push_record, rfc3339, Problem},
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
    term: u64,
    /// When the last cycle ran, for which generation and whether the policy was being deleted.
    last_run: Option<(DateTime<Utc>, Option<i64>, bool)>,
    states: TargetStates,
    history: MoveHistory,
    migrations: Vec<MigrationRecord>,
    migration_count: u64,
    /// EdgeWorkload moves in flight (by this policy), with their start.
    moves: BTreeMap<MoveKey, DateTime<Utc>>,
    /// Moves that ended in this term, by their start: a lagging cache may still show their
    /// intent for a moment, which must not bring them back.
    ended: HashMap<MoveKey, DateTime<Utc>>,
    /// Pods evicted and not gone yet.
    evicting: HashMap<WorkloadId, Evicting>,
    /// Moves resumed from their record after their intent vanished (once each).
    resumed: HashSet<MoveKey>,
    /// Event-on-change memories.
    pdb_blocked: HashSet<WorkloadId>,
    refused: HashSet<WorkloadId>,
    problems: Vec<Problem>,
    diag: diagnostics::Memory,
    /// The status as last written (or read at load): what the next one is compared with.
    last_status: Option<EnergyPolicyStatus>,
    /// The cleanup finalizer is on the policy (seen or written in this term).
    has_finalizer: bool,
    /// The degradation ladder's ledger, as `status.degraded` shows it: each entry is written
    /// (and the status with it) before its step is taken, and leaves only once restored.
    degraded: Vec<DegradedWorkload>,
    /// When each degradee was last restored in this term (flaps, the restore settle).
    restored: HashMap<Degradee, DateTime<Utc>>,
    /// What the ladder leaves alone until its target's shortage ends, with that target and why:
    /// a step the executor found not possible (no `pods/resize`, an owner already at 0…), so
    /// the next plan goes on to the next rung instead of asking for it every cycle; and what a
    /// user took back from the ladder (scaled up, resized, deleted), never taken again meanwhile.
    /// Pods (throttle) and units (suspend) apart, so the plan's facts are marked by reference.
    pods_left_alone: HashMap<WorkloadId, (TargetId, String)>,
    units_left_alone: HashMap<planner::SuspendUnit, (TargetId, String)>,
    /// Workloads the ladder reported it could not degrade last cycle (an Event when one is new).
    not_degradable: HashSet<WorkloadId>,
}

/// The workload a move is of.
fn workload_id(key: &MoveKey) -> WorkloadId {
    WorkloadId {
        kind: WorkloadKind::EdgeWorkload,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

impl PolicyRuntime {
    /// The memory a new leadership term starts from: the policy's last written `status` (its
    /// migrations, their history, the starved targets) and whether the finalizer is on it.
    /// Moves and evictions in flight are found by the lifecycle's settling afterwards.
    pub fn from_status(status: EnergyPolicyStatus, has_finalizer: bool) -> Self {
        let mut rt = PolicyRuntime {
            has_finalizer,
            degraded: status.degraded.clone(),
            migrations: status.migrations.clone(),
            migration_count: status.migration_count,
            history: history_from_status(&status.migrations),
            ..Default::default()
        };
        // Starved targets stay starved (and recover through hysteresis) instead of silently
        // restarting their `for` window; their gauges are set by this term's first cycle.
        for s in &status.starved {
            let Some(since) = parse_time(&s.since) else {
                continue;
            };
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
                    known_at: None,
                },
            );
        }
        rt.last_status = Some(status);
        rt
    }

    // ---- terms and scheduling ------------------------------------------------------------

    pub fn term(&self) -> u64 {
        self.term
    }

    /// This memory now belongs to leadership term `term`.
    pub fn set_term(&mut self, term: u64) {
        self.term = term;
    }

    /// A cycle of `policy` runs at `now`.
    pub fn ran(&mut self, policy: &EnergyPolicy, now: DateTime<Utc>) {
        self.last_run = Some((
            now,
            policy.metadata.generation,
            policy.metadata.deletion_timestamp.is_some(),
        ));
    }

    /// `None` when a cycle is due at `now`: never ran in this term, the spec changed
    /// (generation), the deletion started, the interval has passed, or the clock went back.
    /// Else how long until it is due.
    pub fn due_in(
        &self,
        policy: &EnergyPolicy,
        interval: Duration,
        term: u64,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        let (at, generation, deleting) = self.last_run?;
        if self.term != term
            || generation != policy.metadata.generation
            || deleting != policy.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        let elapsed = (now - at).to_std().ok()?;
        // A requeue can fire a little early.
        (elapsed + Duration::from_millis(50) < interval).then(|| interval - elapsed)
    }

    // ---- what the planner reads and writes -------------------------------------------------

    /// The targets' states after this cycle's plan.
    pub fn set_states(&mut self, states: TargetStates) {
        self.states = states;
    }

    /// What the planner reads of this memory at `now`: the targets' states after the last cycle,
    /// and the move history with this moment's moves in flight — without the moves no rule can
    /// read any more (ended more than `cooldown`, and more than an hour, ago), so the history
    /// stays as small as the recent past.
    pub fn plan_inputs(
        &mut self,
        now: DateTime<Utc>,
        cooldown: Duration,
    ) -> (&TargetStates, &MoveHistory) {
        let keep = chrono::Duration::from_std(cooldown.max(Duration::from_secs(3600)))
            .unwrap_or(chrono::Duration::MAX);
        if let Some(before) = now.checked_sub_signed(keep) {
            self.history.forget_before(before);
        }
        self.history.in_flight = self.in_flight();
        (&self.states, &self.history)
    }

    /// EdgeWorkload moves and pod evictions in flight.
    pub fn in_flight(&self) -> u32 {
        (self.moves.len() + self.evicting.len()) as u32
    }

    pub fn migrations(&self) -> &[MigrationRecord] {
        &self.migrations
    }

    pub fn migration_count(&self) -> u64 {
        self.migration_count
    }

    /// Records a finished action that is not a move in flight (a blocked or failed eviction):
    /// the status shows it, nothing else changes.
    pub fn record(&mut self, rec: MigrationRecord) {
        push_record(&mut self.migrations, rec);
    }

    // ---- EdgeWorkload moves ----------------------------------------------------------------

    /// The cache shows `key`'s intent started at `started`: in flight unless this term ended
    /// exactly that move (a lagging cache may still show it).
    pub fn track_intent(&mut self, key: MoveKey, started: DateTime<Utc>) {
        if self.ended.get(&key) != Some(&started) {
            self.adopt_move(key, started);
        }
    }

    /// `key` is in flight (since `started`, unless already known).
    pub fn adopt_move(&mut self, key: MoveKey, started: DateTime<Utc>) {
        self.moves.entry(key).or_insert(started);
    }

    /// Forgets ended moves started more than a day before `now` (no cache lags that long).
    pub fn prune_ended(&mut self, now: DateTime<Utc>) {
        let day_ago = now - chrono::Duration::days(1);
        self.ended.retain(|_, started| *started > day_ago);
    }

    /// The moves in flight now.
    pub fn moves(&self) -> Vec<MoveKey> {
        self.moves.keys().cloned().collect()
    }

    pub fn is_moving(&self, key: &MoveKey) -> bool {
        self.moves.contains_key(key)
    }

    /// A move of `key` was started by this replica at `started` (its first record `rec`).
    pub fn begin_move(
        &mut self,
        key: MoveKey,
        started: DateTime<Utc>,
        rec: MigrationRecord,
        now: DateTime<Utc>,
    ) {
        self.history.record(workload_id(&key), None, now);
        self.moves.insert(key, started);
        self.migration_count += 1;
        push_record(&mut self.migrations, rec);
    }

    /// A move of `key` ended at `now` with `rec`: no longer in flight, its cooldown runs from
    /// now, the status shows the final record. Returns its start when it was in flight here.
    pub fn end_move(
        &mut self,
        key: &MoveKey,
        rec: MigrationRecord,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let started = self.moves.remove(key);
        if let Some(s) = started {
            self.ended.insert(key.clone(), s);
        }
        self.history.ended(workload_id(key), now);
        push_record(&mut self.migrations, rec);
        started
    }

    /// A move in flight whose intent vanished (not by our write): taken out of flight, with its
    /// start and its `InProgress` record if the status still has one (the caller then settles it
    /// from a fresh read: [`PolicyRuntime::end_move`] or [`PolicyRuntime::keep_moving`]).
    pub fn lose_move(&mut self, key: &MoveKey) -> Option<(DateTime<Utc>, Option<MigrationRecord>)> {
        let started = self.moves.remove(key)?;
        self.ended.insert(key.clone(), started);
        let started_s = rfc3339(started);
        let rec = self
            .migrations
            .iter()
            .find(|r| {
                r.kind == WorkloadKind::EdgeWorkload
                    && r.namespace == key.namespace
                    && r.name == key.name
                    && r.started_at == started_s
                    && r.result == MigrationResult::InProgress
            })
            .cloned();
        Some((started, rec))
    }

    /// Whether a lost move of `key` may be resumed from its record: once per term.
    pub fn first_resume(&mut self, key: &MoveKey) -> bool {
        self.resumed.insert(key.clone())
    }

    /// A lost move goes on after all (resumed, or it could not be settled now).
    pub fn keep_moving(&mut self, key: &MoveKey, started: DateTime<Utc>) {
        self.ended.remove(key);
        self.moves.insert(key.clone(), started);
    }

    /// `InProgress` EdgeWorkload records of the status (what a new term must settle).
    pub fn open_moves(&self) -> Vec<MigrationRecord> {
        self.migrations
            .iter()
            .filter(|r| {
                r.result == MigrationResult::InProgress && r.kind == WorkloadKind::EdgeWorkload
            })
            .cloned()
            .collect()
    }

    /// Selector-placed workloads left a device through its starvation label: a move each.
    pub fn left_by_label(&mut self, id: WorkloadId, rec: MigrationRecord, now: DateTime<Utc>) {
        self.history.record(id, None, now);
        self.migration_count += 1;
        push_record(&mut self.migrations, rec);
    }

    // ---- pod evictions ---------------------------------------------------------------------

    /// `pod` was evicted from `node` at `now`: in flight until that pod (by uid) is gone.
    pub fn begin_eviction(
        &mut self,
        pod: &WorkloadId,
        (owner, siblings): (Option<&str>, &[WorkloadId]),
        evicting: Evicting,
        rec: MigrationRecord,
        now: DateTime<Utc>,
    ) {
        self.history.record_eviction(pod, owner, siblings, now);
        self.evicting.insert(pod.clone(), evicting);
        self.migration_count += 1;
        push_record(&mut self.migrations, rec);
    }

    /// A pod evicted by an earlier term is still terminating: in flight again.
    pub fn adopt_eviction(&mut self, pod: WorkloadId, evicting: Evicting) {
        self.evicting.insert(pod, evicting);
    }

    pub fn evicting(&self) -> usize {
        self.evicting.len()
    }

    /// Keeps in flight only the evicted pods `present` still holds (by namespace and name, with
    /// the uid evicted when known): a pod in graceful deletion still runs.
    pub fn track_evictions(&mut self, present: impl Fn(&WorkloadId, Option<&str>) -> bool) {
        self.evicting.retain(|id, e| present(id, e.uid.as_deref()));
    }

    // ---- Observe mode ----------------------------------------------------------------------

    /// Observe mode would have moved `id` now: the history counts it as a move, so a dry run
    /// reports what an enforced run would do (cooldowns, limits, the whole drain).
    pub fn dry_run(
        &mut self,
        id: &WorkloadId,
        (owner, siblings): (Option<&str>, &[WorkloadId]),
        rec: MigrationRecord,
        now: DateTime<Utc>,
    ) {
        self.history.record_eviction(id, owner, siblings, now);
        push_record(&mut self.migrations, rec);
    }

    // ---- Event-on-change memories ------------------------------------------------------------

    /// Workloads kept by a PDB now; returns those that were not last cycle.
    pub fn newly_pdb_blocked(&mut self, now: HashSet<WorkloadId>) -> Vec<WorkloadId> {
        let new = now.difference(&self.pdb_blocked).cloned().collect();
        self.pdb_blocked = now;
        new
    }

    /// Workloads refused make-before-break now; returns those that were not last cycle.
    pub fn newly_refused(&mut self, now: HashSet<WorkloadId>) -> Vec<WorkloadId> {
        let new = now.difference(&self.refused).cloned().collect();
        self.refused = now;
        new
    }

    /// This cycle's problems; returns those that are new since the last cycle.
    pub fn new_problems<'p>(&mut self, now: &'p [Problem]) -> Vec<&'p Problem> {
        let new = now
            .iter()
            .filter(|(r, m)| !self.problems.iter().any(|(pr, pm)| pr == r && pm == m))
            .collect();
        self.problems = now.to_vec();
        new
    }

    pub fn diag(&mut self) -> &mut diagnostics::Memory {
        &mut self.diag
    }

    // ---- the degradation ladder's ledger --------------------------------------------------------

    /// The ledger, as the status shows it.
    pub fn degraded(&self) -> &[DegradedWorkload] {
        &self.degraded
    }

    /// The ledger as the ladder reads it (entries whose time cannot be read are left out: the
    /// status was edited by hand).
    pub fn held(&self) -> Vec<Held> {
        self.degraded
            .iter()
            .filter_map(|d| {
                Some(Held {
                    who: degradee(d),
                    step: d.action,
                    target: target_of(d),
                    criticality: d.criticality,
                    saved_watts: d.saved_watts.unwrap_or(0.0),
                    since: parse_time(&d.since)?,
                    dry_run: d.state == DegradeState::DryRun,
                })
            })
            .collect()
    }

    pub fn restored(&self) -> &HashMap<Degradee, DateTime<Utc>> {
        &self.restored
    }

    /// Observe mode: the dry-run entries are now exactly `entries` (what the ladder would hold).
    pub fn set_dry_run(&mut self, entries: Vec<DegradedWorkload>) {
        self.degraded.retain(|d| d.state != DegradeState::DryRun);
        self.degraded.extend(entries);
    }

    /// A step is about to be taken: its entry (with what restores it) goes into the ledger as
    /// `Pending`, replacing an older entry of the same object and step.
    pub fn degrade_pending(&mut self, mut entry: DegradedWorkload) {
        entry.state = DegradeState::Pending;
        self.degraded
            .retain(|d| !(same_object(d, &entry) && d.action == entry.action));
        self.degraded.push(entry);
    }

    /// The step of `entry`'s object went through.
    pub fn degrade_applied(
        &mut self,
        kind: DegradedKind,
        namespace: &str,
        name: &str,
        step: DegradeStep,
    ) {
        for d in &mut self.degraded {
            if d.kind == kind && d.namespace == namespace && d.name == name && d.action == step {
                d.state = DegradeState::Applied;
            }
        }
    }

    /// The ladder leaves `who` alone until `target` is no longer starved, because of `why`.
    pub fn leave_alone(&mut self, who: Degradee, target: TargetId, why: String) {
        match who {
            Degradee::Pod(id) => self.pods_left_alone.insert(id, (target, why)),
            Degradee::Unit(u) => self.units_left_alone.insert(u, (target, why)),
        };
    }

    /// A user took `entry`'s object back from the ladder: left alone until its shortage ends.
    pub fn taken_back(&mut self, entry: &DegradedWorkload, why: String) {
        self.leave_alone(degradee(entry), target_of(entry), why);
    }

    /// Forgets what was left alone for targets no longer starved (`states`: this cycle's plan),
    /// and marks the rest on the workloads' ladder facts: the step is not possible, and why.
    pub fn mark_left_alone(
        &mut self,
        states: &TargetStates,
        workloads: &mut [planner::WorkloadSnapshot],
    ) {
        let starved = |t: &TargetId| states.get(t).is_some_and(|s| s.starved.is_some());
        self.pods_left_alone.retain(|_, (t, _)| starved(t));
        self.units_left_alone.retain(|_, (t, _)| starved(t));
        if self.pods_left_alone.is_empty() && self.units_left_alone.is_empty() {
            return;
        }
        for w in workloads {
            if let Some((_, why)) = self.pods_left_alone.get(&w.id) {
                w.ladder.throttle = Err(why.clone());
            }
            let unit = w.ladder.suspend.as_ref().ok();
            if let Some((_, why)) = unit.and_then(|u| self.units_left_alone.get(u)) {
                w.ladder.suspend = Err(why.clone());
            }
        }
    }

    /// Workloads the ladder could not degrade now; returns those that were not last cycle.
    pub fn newly_not_degradable(&mut self, now: HashSet<WorkloadId>) -> Vec<WorkloadId> {
        let new = now.difference(&self.not_degradable).cloned().collect();
        self.not_degradable = now;
        new
    }

    /// The entry leaves the ledger: restored, or nothing to restore (the step did not happen,
    /// the object is gone). A restore is remembered for flaps.
    pub fn degrade_done(
        &mut self,
        kind: DegradedKind,
        namespace: &str,
        name: &str,
        step: DegradeStep,
        restored_at: Option<DateTime<Utc>>,
    ) {
        let before = self.degraded.len();
        self.degraded.retain(|d| {
            !(d.kind == kind && d.namespace == namespace && d.name == name && d.action == step)
        });
        if let (true, Some(at)) = (self.degraded.len() < before, restored_at) {
            let probe = DegradedWorkload {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
                target: String::new(),
                action: step,
                criticality: edgewatt_crds::Criticality::Normal,
                since: String::new(),
                reason: String::new(),
                saved_watts: None,
                state: DegradeState::Applied,
                restore: Default::default(),
            };
            self.restored.insert(degradee(&probe), at);
        }
    }

    // ---- status and finalizer ----------------------------------------------------------------

    /// The status the next one is compared with: as last written, else as the policy shows it.
    pub fn last_status(&self, policy: &EnergyPolicy) -> EnergyPolicyStatus {
        self.last_status
            .clone()
            .unwrap_or_else(|| policy.status.clone().unwrap_or_default())
    }

    pub fn status_written(&mut self, st: EnergyPolicyStatus) {
        self.last_status = Some(st);
    }

    pub fn has_finalizer(&self) -> bool {
        self.has_finalizer
    }

    pub fn finalizer_seen(&mut self) {
        self.has_finalizer = true;
    }
}

/// What a ledger entry's step acts on, as the ladder names it.
pub fn degradee(d: &DegradedWorkload) -> Degradee {
    match d.kind {
        DegradedKind::Pod => Degradee::Pod(WorkloadId {
            kind: WorkloadKind::Pod,
            namespace: d.namespace.clone(),
            name: d.name.clone(),
        }),
        kind => Degradee::Unit(crate::planner::SuspendUnit {
            kind,
            namespace: d.namespace.clone(),
            name: d.name.clone(),
        }),
    }
}

/// The target a ledger entry was degraded for: a node for pods and their owners, a device (in
/// the workload's namespace) for an EdgeWorkload.
fn target_of(d: &DegradedWorkload) -> TargetId {
    match d.kind {
        DegradedKind::EdgeWorkload => TargetId {
            kind: TargetKind::EdgeDevice,
            namespace: Some(d.namespace.clone()),
            name: d.target.clone(),
        },
        _ => TargetId::node(d.target.clone()),
    }
}

fn same_object(a: &DegradedWorkload, b: &DegradedWorkload) -> bool {
    a.kind == b.kind && a.namespace == b.namespace && a.name == b.name
}

/// Move history as far as the status shows it (the last 20 migrations), so a restarted
/// controller keeps honouring `cooldown` and `maxPerHour`, per workload and per owner. A
/// workload's last move counts from when it finished (or started, while in progress); evictions
/// blocked by a PDB and dry runs are no moves.
pub fn history_from_status(records: &[MigrationRecord]) -> MoveHistory {
    let mut h = MoveHistory::default();
    for r in records {
        if matches!(r.result, MigrationResult::Blocked) {
            continue;
        }
        let Some(started) = parse_time(&r.started_at) else {
            continue;
        };
        let last = r
            .finished_at
            .as_deref()
            .and_then(parse_time)
            .map_or(started, |f| f.max(started));
        let id = WorkloadId {
            kind: r.kind,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        };
        h.record(id.clone(), r.owner.as_deref(), started);
        h.ended(id, last);
        if let Some(o) = &r.owner {
            let e = h.owner_last_moved.entry(o.clone()).or_insert(last);
            *e = (*e).max(last);
        }
    }
    h.recent_moves.sort();
    h
}
