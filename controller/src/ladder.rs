//! The degradation ladder (issue #27, DESIGN.md "Continuity"): what to throttle or suspend on a
//! starved target whose workloads have nowhere to go, and what to restore once the forecast
//! allows. Pure like the [`planner`](crate::planner): no I/O, no clock (`now` is an input), the
//! same input gives the same plan; the runtime executes [`LadderPlan`]s and keeps the ledger
//! ([`Held`]) of what is degraded.
//!
//! Rules, in short:
//! - Only starved targets with known data are degraded for; on a target whose data is unknown
//!   nothing is shed and nothing restored (no action on data not seen). A starved target without
//!   a forecast (no supply history, no battery energy, draw or capacity) is treated the same.
//! - Candidates are the workloads on such a target that cannot leave it (planner skip reasons
//!   `NoTarget`, `Pinned`, `Ineligible`, `ToleratesTaint`, `TaintNotInPlace`, `NoOtherInstance`,
//!   `Refused`); not those leaving (in flight, cooling down, rate-limited, blocked by a PDB, or
//!   moved this cycle), and never a `critical` one.
//! - Rungs: for `sheddable`, then `normal`, each step of `spec.action.degrade.steps` in order;
//!   within a rung the largest watts saved first (ties by id). A step a workload cannot take
//!   (`LadderFacts` says why) is reported in [`LadderPlan::not_degradable`] and the ladder goes on.
//! - Only as far as needed: each target's need is [`forecast::savings_needed`] at its measured
//!   draw (which already shows what is held) with `spec.action.degrade.margin`; rungs are taken
//!   until this cycle's savings cover it. A suspended unit counts on every starved target its
//!   workloads run on. When every candidate is not enough, all are taken and the target is
//!   reported [`LadderPlan::exhausted`].
//! - A target with a step younger than `settle` gets no new one (its draw does not show it yet).
//! - A suspend only when every target the workload could run on is starved (else the scheduler
//!   or Flotta would run it there, or it should move there).
//! - Restore: an entry whose target recovered or is gone; on a starved target, in order (normal
//!   before sheddable, suspends before throttles, largest first) while the forecast with the
//!   watts back still reaches the recharge plus `margin` + `restoreMargin` (hysteresis), and
//!   not while an earlier restore is younger than `settle`.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use edgewatt_crds::{
    Criticality, DegradeStep, EnergyPolicySpec, LadderDurations, Mode, TargetKind, WorkloadKind,
};

use crate::forecast::{self, Forecast, ForecastInput, Need, SupplyProfile};
use crate::planner::{
    Constraints, FastHash, Fx, Plan, SkipReason, SuspendUnit, TargetId, TargetSnapshot, Time,
    WorkloadId, WorkloadSnapshot,
};

type FastMap<K, V> = HashMap<K, V, FastHash>;
type FastSet<K> = HashSet<K, FastHash>;

/// What one ladder step acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Degradee {
    /// A throttle acts on one pod.
    Pod(WorkloadId),
    /// A suspend acts on a Deployment, StatefulSet, ReplicaSet or EdgeWorkload, which several
    /// workloads (replicas, selector instances) may share.
    Unit(SuspendUnit),
}

impl std::fmt::Display for Degradee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Degradee::Pod(id) => write!(f, "Pod {}/{}", id.namespace, id.name),
            Degradee::Unit(u) => write!(f, "{} {}/{}", u.kind.as_str(), u.namespace, u.name),
        }
    }
}

/// One entry of the runtime's ledger: what the ladder holds degraded now.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub who: Degradee,
    pub step: DegradeStep,
    /// The starved target it was degraded for.
    pub target: TargetId,
    pub criticality: Criticality,
    /// What the step was expected to save (what a restore adds back to the forecast).
    pub saved_watts: f64,
    pub since: Time,
    /// Observe mode's entry: nothing was done, so nothing to restore, and it is ignored.
    pub dry_run: bool,
}

/// Everything the ladder needs for one cycle.
pub struct LadderInput<'a> {
    pub spec: &'a EnergyPolicySpec,
    pub durations: &'a LadderDurations,
    pub now: Time,
    pub targets: &'a [TargetSnapshot],
    pub workloads: &'a [WorkloadSnapshot],
    /// This cycle's plan of the same targets and workloads.
    pub plan: &'a Plan,
    /// Each target's supply profile, aligned with `targets` (missing: unknown).
    pub profiles: &'a [Option<SupplyProfile>],
    /// The ledger.
    pub held: &'a [Held],
    /// When each degradee was last restored: flaps, and the restore settle (see `settle`).
    pub restored: &'a HashMap<Degradee, Time>,
    /// How long after a step a target's measured draw is trusted to show it: a target with a
    /// shed younger than this gets no new shed, and while any restore is younger than this no
    /// restore is decided on a forecast (the draw does not show the load that came back yet, so
    /// the next one would be judged on too low a draw; `restored` does not say which target a
    /// restore was on, so this holds fleet-wide). Restores of recovered or gone targets go on.
    pub settle: Duration,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum LadderStep {
    Shed {
        who: Degradee,
        step: DegradeStep,
        /// The starved target it is shed for.
        target: TargetId,
        criticality: Criticality,
        /// What it saves: for a suspend, its workloads' watts on every starved target.
        saved_watts: f64,
        reason: String,
    },
    Restore {
        who: Degradee,
        reason: String,
    },
}

/// The ladder's output for one cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LadderPlan {
    /// Each target's forecast, aligned with the input's targets (`None`: unknown), for metrics
    /// and status.
    pub forecasts: Vec<Option<Forecast>>,
    /// Migrate mode: the steps to take, restores first. Empty in Observe mode.
    pub steps: Vec<LadderStep>,
    /// Observe mode: every shed the ladder would hold now (dry-run entries of the ledger are
    /// ignored; there is nothing to restore).
    pub dry_run: Vec<LadderStep>,
    /// Targets whose need every candidate together does not cover, with the watts still
    /// missing (when not even 0 W would do, [`Need::Impossible`]: the draw left).
    pub exhausted: Vec<(TargetId, f64)>,
    /// Candidates that could not take a step the ladder reached for them, and why (once per
    /// workload, the first reason).
    pub not_degradable: Vec<(WorkloadId, String)>,
    /// Sheds of a degradee restored less than `flapWindow` ago.
    pub flaps: u32,
}

/// What a target is to the ladder this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Data known, not starved.
    Clear,
    /// Data unknown: nothing is shed or restored for it.
    Unknown,
    /// Starved with known data.
    Starved,
}

/// Whether a planner skip reason means the workload stays on its target (a candidate), rather
/// than leaving it soon (in flight, cooling down, rate-limited, waiting on a PDB).
fn stays(r: &SkipReason) -> bool {
    match r {
        SkipReason::NoTarget
        | SkipReason::Pinned
        | SkipReason::Ineligible(_)
        | SkipReason::ToleratesTaint
        | SkipReason::TaintNotInPlace
        | SkipReason::NoOtherInstance
        | SkipReason::Refused(_) => true,
        SkipReason::InFlight
        | SkipReason::Cooldown
        | SkipReason::MaxConcurrent
        | SkipReason::MaxPerHour
        | SkipReason::DisruptionBudget => false,
    }
}

/// Runs the ladder for one cycle. Pure: the same input always gives the same plan.
pub fn plan_ladder(input: &LadderInput<'_>) -> LadderPlan {
    let mut out = LadderPlan::default();
    let targets = input.targets;
    let plan = input.plan;
    let reserve = input.spec.forecast.reserve_percent;
    let inputs: Vec<Option<ForecastInput<'_>>> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let profile = input.profiles.get(i)?.as_ref()?;
            ForecastInput::of(&t.signals, reserve, profile)
        })
        .collect();
    out.forecasts = inputs
        .iter()
        .map(|i| i.as_ref().map(forecast::forecast))
        .collect();

    // The ledger's real entries, and the targets they were degraded for.
    let held: Vec<&Held> = input.held.iter().filter(|h| !h.dry_run).collect();
    let mut held_at: FastMap<&TargetId, Vec<usize>> = FastMap::default();
    for (h, e) in held.iter().enumerate() {
        held_at.entry(&e.target).or_default().push(h);
    }
    let mut held_target: Vec<Option<usize>> = vec![None; held.len()];
    let check_unknown = !plan.unknown.is_empty();
    let mut status = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        status.push(if check_unknown && plan.unknown.contains(&t.id) {
            Status::Unknown
        } else if plan.states.get(&t.id).is_some_and(|s| s.starved.is_some()) {
            Status::Starved
        } else {
            Status::Clear
        });
        if !held_at.is_empty() {
            if let Some(hs) = held_at.get(&t.id) {
                for h in hs {
                    held_target[*h] = Some(i);
                }
            }
        }
    }
    let mut starved: Vec<usize> = (0..targets.len())
        .filter(|i| status[*i] == Status::Starved)
        .collect();
    starved.sort_unstable_by(|a, b| targets[*a].id.cmp(&targets[*b].id));

    let d = input.durations;
    if input.spec.action.mode == Mode::Migrate {
        out.steps = restores(input, &held, &held_target, &status, &inputs);
    }

    let sheds = Sheds::new(input, &held, &held_target, &status, &inputs, &starved)
        .map(|s| s.run(&mut out))
        .unwrap_or_default();
    let flap_window = chrono::Duration::from_std(d.flap_window).unwrap_or(chrono::Duration::MAX);
    out.flaps = sheds
        .iter()
        .filter(|s| match s {
            LadderStep::Shed { who, .. } => input
                .restored
                .get(who)
                .is_some_and(|at| input.now - *at < flap_window),
            LadderStep::Restore { .. } => false,
        })
        .count() as u32;
    match input.spec.action.mode {
        Mode::Migrate => out.steps.extend(sheds),
        Mode::Observe => out.dry_run = sheds,
    }
    out
}

/// Restore order: normal before sheddable, suspends before throttles, largest first, then id.
fn restore_order(a: &Held, b: &Held) -> std::cmp::Ordering {
    b.criticality
        .cmp(&a.criticality)
        .then(b.step.cmp(&a.step))
        .then(b.saved_watts.total_cmp(&a.saved_watts))
        .then_with(|| a.who.cmp(&b.who))
}

/// The restores: entries whose target is gone or recovered, then per starved target (by id)
/// while the forecast with their watts back reaches the recharge plus both margins.
fn restores(
    input: &LadderInput<'_>,
    held: &[&Held],
    held_target: &[Option<usize>],
    status: &[Status],
    inputs: &[Option<ForecastInput<'_>>],
) -> Vec<LadderStep> {
    let targets = input.targets;
    let mut done: Vec<(&Held, String)> = Vec::new();
    let mut on_starved: FastMap<usize, Vec<&Held>> = FastMap::default();
    for (h, e) in held.iter().enumerate() {
        match held_target[h] {
            None => done.push((e, format!("{} is gone", e.target.name))),
            Some(i) => match status[i] {
                Status::Unknown => {}
                Status::Clear => done.push((e, format!("{} is no longer starved", e.target.name))),
                Status::Starved => on_starved.entry(i).or_default().push(e),
            },
        }
    }
    done.sort_by(|a, b| restore_order(a.0, b.0));
    let mut out: Vec<LadderStep> = done
        .into_iter()
        .map(|(e, reason)| LadderStep::Restore {
            who: e.who.clone(),
            reason,
        })
        .collect();
    let mut starved: Vec<usize> = on_starved.keys().copied().collect();
    starved.sort_unstable_by(|a, b| targets[*a].id.cmp(&targets[*b].id));
    let d = input.durations;
    let margin = d.margin + d.restore_margin;
    let settle = chrono::Duration::from_std(input.settle).unwrap_or(chrono::Duration::MAX);
    if input.restored.values().any(|at| input.now - *at < settle) {
        return out;
    }
    for i in starved {
        let Some(f) = &inputs[i] else { continue };
        let mut entries = on_starved.remove(&i).unwrap_or_default();
        entries.sort_by(|a, b| restore_order(a, b));
        let mut back = 0.0;
        for e in entries {
            let w = e.saved_watts;
            if !(w.is_finite() && forecast::reaches(&f.at_draw(f.draw_w + back + w), margin)) {
                break;
            }
            back += w;
            out.push(LadderStep::Restore {
                who: e.who.clone(),
                reason: format!(
                    "{}: with its {w:.1} W back ({back:.1} W in all) the battery still lasts until the recharge with {} to spare",
                    e.target.name,
                    human(margin)
                ),
            });
        }
    }
    out
}

/// The shedding half of one cycle: starved targets by id (`slot`s), the workloads on them, what
/// each cycle's choice has saved on each.
struct Sheds<'i, 'a> {
    input: &'i LadderInput<'a>,
    status: &'i [Status],
    inputs: &'i [Option<ForecastInput<'a>>],
    /// Starved targets with known data, sorted by id: index = slot.
    starved: &'i [usize],
    /// What each starved target needs (`None`: nothing this cycle).
    need: Vec<Option<Need>>,
    /// Workloads (indices) on each starved target.
    on: Vec<Vec<u32>>,
    /// A workload's draw when it does not know its own: its target's draw shared.
    share: Vec<Option<f64>>,
    /// Watts this cycle's choices save on each starved target.
    covered: Vec<f64>,
    skip: FastMap<&'a WorkloadId, &'a SkipReason>,
    /// Every suspend unit with a workload on a starved target: its workloads (slot, index) and
    /// their highest criticality.
    units: FastMap<&'a SuspendUnit, Unit>,
    held_pods: FastSet<&'a WorkloadId>,
    held_units: FastSet<&'a SuspendUnit>,
    /// Throttled this cycle: workload index → watts saved.
    throttled: FastMap<u32, f64>,
    chosen_units: FastSet<&'a SuspendUnit>,
    /// Candidates the ladder reached for but could not degrade: workload index, why (every step
    /// it could not take, in rung order); by id, once per workload.
    not_degradable: Vec<(u32, String)>,
    reported: FastMap<&'a WorkloadId, usize>,
    /// Where suspends could still run: cached per constraints.
    blockers: Option<Blockers<'a>>,
    steps: Vec<DegradeStep>,
    throttle_keeps: f64,
}

struct Unit {
    members: Vec<(u32, u32)>,
    criticality: Criticality,
}

impl<'i, 'a> Sheds<'i, 'a> {
    /// `None` when nothing needs shedding this cycle (the ladder off, no starved target with a
    /// need): the workloads are then not even walked.
    fn new(
        input: &'i LadderInput<'a>,
        held: &[&'a Held],
        held_target: &[Option<usize>],
        status: &'i [Status],
        inputs: &'i [Option<ForecastInput<'a>>],
        starved: &'i [usize],
    ) -> Option<Self> {
        let degrade = input.spec.action.degrade.as_ref()?;
        let mut steps: Vec<DegradeStep> = Vec::new();
        for s in &degrade.steps {
            if !steps.contains(s) {
                steps.push(*s);
            }
        }
        if steps.is_empty() || starved.is_empty() {
            return None;
        }
        let settle = chrono::Duration::from_std(input.settle).unwrap_or(chrono::Duration::MAX);
        let mut settling = vec![false; input.targets.len()];
        for (h, e) in held.iter().enumerate() {
            if let Some(i) = held_target[h] {
                settling[i] |= input.now - e.since < settle;
            }
        }
        let need: Vec<Option<Need>> = starved
            .iter()
            .map(|&i| {
                if settling[i] {
                    return None;
                }
                match forecast::savings_needed(inputs[i].as_ref()?, input.durations.margin) {
                    Need::Enough => None,
                    n => Some(n),
                }
            })
            .collect();
        if need.iter().all(Option::is_none) {
            return None;
        }
        let mut held_pods = FastSet::default();
        let mut held_units = FastSet::default();
        for e in held {
            match &e.who {
                Degradee::Pod(id) => held_pods.insert(id),
                Degradee::Unit(u) => held_units.insert(u),
            };
        }
        let mut s = Self {
            input,
            status,
            inputs,
            starved,
            need,
            on: vec![Vec::new(); starved.len()],
            share: Vec::new(),
            covered: vec![0.0; starved.len()],
            skip: FastMap::default(),
            units: FastMap::default(),
            held_pods,
            held_units,
            throttled: FastMap::default(),
            chosen_units: FastSet::default(),
            reported: FastMap::default(),
            blockers: None,
            not_degradable: Vec::new(),
            throttle_keeps: f64::from(degrade.throttle_percent.min(100)) / 100.0,
            steps,
        };
        s.index();
        Some(s)
    }

    /// Lists the workloads of each starved target (one pass over all workloads, looking up only
    /// the names of starved targets: a small map that stays in cache), the planner's verdicts on
    /// them, and the suspend units they share.
    fn index(&mut self) {
        let targets = self.input.targets;
        const NONE: u32 = u32::MAX;
        let mut head: FastMap<&str, u32> = FastMap::default();
        let mut next = vec![NONE; self.starved.len()];
        for (slot, &i) in self.starved.iter().enumerate().rev() {
            if let Some(h) = head.insert(targets[i].id.name.as_str(), slot as u32) {
                next[slot] = h;
            }
        }
        let all = self.input.workloads;
        for (n, w) in all.iter().enumerate() {
            if let Some(ahead) = all.get(n + PREFETCH_AHEAD) {
                prefetch(ahead.target.as_deref().unwrap_or_default());
            }
            let Some(name) = w.target.as_deref() else {
                continue;
            };
            let Some(&first) = head.get(name) else {
                continue;
            };
            let mut slot = first;
            while slot != NONE {
                let t = &targets[self.starved[slot as usize]];
                let here = match w.id.kind {
                    WorkloadKind::Pod => t.id.kind == TargetKind::Node,
                    WorkloadKind::EdgeWorkload => {
                        t.id.kind == TargetKind::EdgeDevice
                            && t.id.namespace.as_deref() == Some(w.id.namespace.as_str())
                    }
                };
                if here {
                    self.on[slot as usize].push(n as u32);
                    break;
                }
                slot = next[slot as usize];
            }
        }
        self.share = self
            .on
            .iter()
            .zip(self.starved)
            .map(|(on, &i)| {
                let s = &targets[i].signals;
                s.watts
                    .or(s.battery_draw_watts)
                    .filter(|w| w.is_finite())
                    .map(|w| w.max(0.0) / on.len().max(1) as f64)
            })
            .collect();
        self.skip = self
            .input
            .plan
            .skipped
            .iter()
            .map(|s| (&s.workload, &s.reason))
            .collect();
        if self.steps.contains(&DegradeStep::Suspend) {
            for (slot, on) in self.on.iter().enumerate() {
                for &n in on {
                    let w = &all[n as usize];
                    if let Ok(u) = &w.ladder.suspend {
                        let e = self.units.entry(u).or_insert(Unit {
                            members: Vec::new(),
                            criticality: Criticality::Sheddable,
                        });
                        e.members.push((slot as u32, n));
                        e.criticality = e.criticality.max(w.ladder.criticality);
                    }
                }
            }
            // Sums over members in one order whatever the input's.
            for u in self.units.values_mut() {
                u.members.sort_unstable_by(|a, b| {
                    a.0.cmp(&b.0)
                        .then_with(|| all[a.1 as usize].id.cmp(&all[b.1 as usize].id))
                });
            }
        }
    }

    fn workload(&self, n: u32) -> &'a WorkloadSnapshot {
        &self.input.workloads[n as usize]
    }

    /// A workload's draw on starved target `slot`, and whether it is its target's share.
    fn watts(&self, slot: u32, n: u32) -> (f64, bool) {
        match self.workload(n).ladder.watts.filter(|w| w.is_finite()) {
            Some(w) => (w.max(0.0), false),
            None => (self.share[slot as usize].unwrap_or(0.0), true),
        }
    }

    /// What suspending its unit still saves of a workload: its draw, less what a throttle this
    /// cycle already counted.
    fn remaining(&self, slot: u32, n: u32) -> f64 {
        let (w, _) = self.watts(slot, n);
        (w - self.throttled.get(&n).copied().unwrap_or(0.0)).max(0.0)
    }

    fn candidate(&self, w: &WorkloadSnapshot) -> bool {
        w.ladder.criticality != Criticality::Critical
            && self.skip.get(&w.id).is_some_and(|r| stays(r))
    }

    fn report(&mut self, n: u32, why: impl FnOnce() -> String) {
        let w = self.workload(n);
        match self.reported.get(&w.id) {
            Some(&k) => {
                let (_, text) = &mut self.not_degradable[k];
                text.push_str("; ");
                text.push_str(&why());
            }
            None => {
                self.reported.insert(&w.id, self.not_degradable.len());
                self.not_degradable.push((n, why()));
            }
        }
    }

    /// Walks the rungs for each starved target with a need, by id; returns the sheds (in the
    /// order chosen, less throttles of pods whose unit was suspended after all).
    fn run(mut self, out: &mut LadderPlan) -> Vec<LadderStep> {
        let mut chosen: Vec<Chosen<'a>> = Vec::new();
        for slot in 0..self.starved.len() as u32 {
            let Some(need) = self.need[slot as usize] else {
                continue;
            };
            let goal = match need {
                Need::Watts(w) => w,
                _ => f64::INFINITY,
            };
            if self.covered[slot as usize] >= goal {
                continue;
            }
            let mut cands: Vec<u32> = self.on[slot as usize]
                .iter()
                .copied()
                .filter(|n| self.candidate(self.workload(*n)))
                .collect();
            // By id: what is reported, and in which order, does not depend on the input's.
            cands.sort_unstable_by(|a, b| self.workload(*a).id.cmp(&self.workload(*b).id));
            let why = self.why(slot, need);
            'rungs: for crit in [Criticality::Sheddable, Criticality::Normal] {
                for k in 0..self.steps.len() {
                    if self.covered[slot as usize] >= goal {
                        break 'rungs;
                    }
                    match self.steps[k] {
                        DegradeStep::Throttle => {
                            self.throttle(slot, crit, goal, &cands, &why, &mut chosen)
                        }
                        DegradeStep::Suspend => {
                            self.suspend(slot, crit, goal, &cands, &why, &mut chosen)
                        }
                    }
                }
            }
        }
        // Once every target had its turn: a later target's suspend may have covered an earlier
        // one's rest.
        for slot in 0..self.starved.len() {
            let covered = self.covered[slot];
            let missing = match self.need[slot] {
                Some(Need::Watts(w)) if covered < w => w - covered,
                Some(Need::Impossible) => {
                    let f = self.inputs[self.starved[slot]].as_ref();
                    (f.map_or(0.0, |f| f.draw_w) - covered).max(0.0)
                }
                _ => continue,
            };
            out.exhausted
                .push((self.target(slot as u32).id.clone(), missing));
        }
        // Reported only when nothing degraded it in the end (a throttle it could not take is no
        // news once its unit is suspended).
        out.not_degradable = std::mem::take(&mut self.not_degradable)
            .into_iter()
            .filter(|(n, _)| {
                let w = self.workload(*n);
                !self.throttled.contains_key(n)
                    && !w
                        .ladder
                        .suspend
                        .as_ref()
                        .is_ok_and(|u| self.chosen_units.contains(u))
            })
            .map(|(n, why)| (self.workload(n).id.clone(), why))
            .collect();
        chosen
            .into_iter()
            .filter(|c| {
                c.step != DegradeStep::Throttle
                    || !c.unit.is_some_and(|u| self.chosen_units.contains(u))
            })
            .map(|c| LadderStep::Shed {
                who: c.who,
                step: c.step,
                target: self.target(c.slot).id.clone(),
                criticality: c.criticality,
                saved_watts: c.saved_watts,
                reason: c.reason,
            })
            .collect()
    }

    fn target(&self, slot: u32) -> &'a TargetSnapshot {
        &self.input.targets[self.starved[slot as usize]]
    }

    /// Why target `slot` sheds: its forecast and what it needs.
    fn why(&self, slot: u32, need: Need) -> String {
        let i = self.starved[slot as usize];
        let t = &self.input.targets[i];
        let f = self.inputs[i].as_ref().map(forecast::forecast);
        let when = |d: Option<Duration>| d.map_or_else(|| "beyond the horizon".to_string(), human);
        let runway = when(f.and_then(|f| f.runway));
        let recharge = when(f.and_then(|f| f.recharge));
        let margin = human(self.input.durations.margin);
        match need {
            Need::Watts(w) => format!(
                "{}: runway {runway}, recharge in {recharge}: {w:.1} W less to last until the recharge with {margin} to spare",
                t.id.name
            ),
            _ => format!(
                "{}: runway {runway}, recharge in {recharge}: not even 0 W would last until the recharge with {margin} to spare; shedding all it can",
                t.id.name
            ),
        }
    }

    /// The throttle rung of `crit` on target `slot`.
    fn throttle(
        &mut self,
        slot: u32,
        crit: Criticality,
        goal: f64,
        cands: &[u32],
        why: &str,
        chosen: &mut Vec<Chosen<'a>>,
    ) {
        let mut options: Vec<(f64, u32)> = Vec::new();
        for &n in cands {
            let w = self.workload(n);
            if w.ladder.criticality != crit || self.is_held(w) {
                continue;
            }
            match &w.ladder.throttle {
                Err(e) => self.report(n, || format!("throttle: {e}")),
                Ok(()) => options.push(((self.watts(slot, n).0) * (1.0 - self.throttle_keeps), n)),
            }
        }
        options.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| self.workload(a.1).id.cmp(&self.workload(b.1).id))
        });
        for (saved, n) in options {
            if self.covered[slot as usize] >= goal {
                break;
            }
            let w = self.workload(n);
            self.covered[slot as usize] += saved;
            self.throttled.insert(n, saved);
            let (_, shared) = self.watts(slot, n);
            chosen.push(Chosen {
                who: Degradee::Pod(w.id.clone()),
                step: DegradeStep::Throttle,
                slot,
                criticality: crit,
                saved_watts: saved,
                unit: w.ladder.suspend.as_ref().ok(),
                reason: format!(
                    "{why}; throttled to {:.0}% saves {saved:.1} W{}",
                    self.throttle_keeps * 100.0,
                    if shared {
                        self.shared_note(slot)
                    } else {
                        String::new()
                    }
                ),
            });
        }
    }

    /// The suspend rung of `crit` on target `slot`: units whose highest criticality is `crit`.
    fn suspend(
        &mut self,
        slot: u32,
        crit: Criticality,
        goal: f64,
        cands: &[u32],
        why: &str,
        chosen: &mut Vec<Chosen<'a>>,
    ) {
        let mut seen: FastSet<&SuspendUnit> = FastSet::default();
        let mut options: Vec<(f64, &'a SuspendUnit, u32)> = Vec::new();
        for &n in cands {
            let w = self.workload(n);
            let u = match &w.ladder.suspend {
                Err(e) => {
                    if w.ladder.criticality == crit {
                        self.report(n, || format!("suspend: {e}"));
                    }
                    continue;
                }
                Ok(u) => u,
            };
            if self.held_units.contains(u) || self.chosen_units.contains(u) || !seen.insert(u) {
                continue;
            }
            let unit_crit = self.units.get(u).map_or(crit, |x| x.criticality);
            if unit_crit == Criticality::Critical && w.ladder.criticality == crit {
                self.report(n, || {
                    format!(
                        "suspend: {} {}/{} also runs critical workloads",
                        u.kind.as_str(),
                        u.namespace,
                        u.name
                    )
                });
            }
            if unit_crit != crit {
                continue;
            }
            let here: f64 = self.units[u]
                .members
                .iter()
                .filter(|m| m.0 == slot)
                .map(|m| self.remaining(m.0, m.1))
                .sum();
            options.push((here, u, n));
        }
        options.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        for (_, u, n) in options {
            if self.covered[slot as usize] >= goal {
                break;
            }
            let w = self.workload(n);
            if let Some(b) = self.blocker(w) {
                let name = &self.input.targets[b].id.name;
                self.report(n, || {
                    format!("suspend: it could run on {name}, which is not starved")
                });
                continue;
            }
            let members = &self.units[u].members;
            let (mut saved, mut shared) = (0.0, 0);
            let mut gains: Vec<(u32, f64)> = Vec::with_capacity(members.len());
            for &(s, m) in members {
                gains.push((s, self.remaining(s, m)));
                let (full, guessed) = self.watts(s, m);
                saved += full;
                shared += usize::from(guessed);
            }
            for (s, g) in gains {
                self.covered[s as usize] += g;
            }
            self.chosen_units.insert(u);
            let note = if shared > 0 {
                format!(
                    " ({shared} of its {} workloads do not know their draw: their targets' draw shared)",
                    members.len()
                )
            } else {
                String::new()
            };
            chosen.push(Chosen {
                who: Degradee::Unit(u.clone()),
                step: DegradeStep::Suspend,
                slot,
                criticality: crit,
                saved_watts: saved,
                unit: Some(u),
                reason: format!("{why}; suspended saves {saved:.1} W{note}"),
            });
        }
    }

    fn shared_note(&self, slot: u32) -> String {
        format!(
            " (its own draw unknown: {}'s draw shared by its {} workloads)",
            self.target(slot).id.name,
            self.on[slot as usize].len()
        )
    }

    /// Already degraded (the ledger holds its throttle, or its unit's suspend).
    fn is_held(&self, w: &WorkloadSnapshot) -> bool {
        (!self.held_pods.is_empty() && self.held_pods.contains(&w.id))
            || w.ladder
                .suspend
                .as_ref()
                .is_ok_and(|u| self.held_units.contains(u) || self.chosen_units.contains(u))
    }

    /// An alive target `w` could run on that is not starved with known data (unknown counts as
    /// not starved): then it is not suspended. Cached per constraints: replicas and selector
    /// instances share theirs.
    fn blocker(&mut self, w: &'a WorkloadSnapshot) -> Option<usize> {
        let input = self.input;
        let status = self.status;
        self.blockers
            .get_or_insert_with(|| Blockers::new(input.targets, status))
            .first(input.targets, w)
    }
}

/// One shed chosen this cycle, before the throttles made moot by a suspend are dropped.
struct Chosen<'a> {
    who: Degradee,
    step: DegradeStep,
    slot: u32,
    criticality: Criticality,
    saved_watts: f64,
    /// The pod's suspend unit (throttles) or the unit (suspends).
    unit: Option<&'a SuspendUnit>,
    reason: String,
}

/// One cached answer: these constraints, in this namespace (EdgeWorkloads), are blocked by
/// this target (or by none).
type Answer<'a> = (&'a Constraints, Option<&'a str>, Option<usize>);

/// Alive targets that are not starved with known data, where a workload could run instead of
/// being suspended: nodes, and devices by namespace. Answers are cached per constraints.
struct Blockers<'a> {
    nodes: Vec<usize>,
    devices: FastMap<&'a str, Vec<usize>>,
    cache: FastMap<u64, Vec<Answer<'a>>>,
}

impl<'a> Blockers<'a> {
    fn new(targets: &'a [TargetSnapshot], status: &[Status]) -> Self {
        let mut nodes = Vec::new();
        let mut devices: FastMap<&str, Vec<usize>> = FastMap::default();
        for (i, t) in targets.iter().enumerate() {
            if !t.alive || status[i] == Status::Starved {
                continue;
            }
            match (t.id.kind, t.id.namespace.as_deref()) {
                (TargetKind::Node, _) => nodes.push(i),
                (TargetKind::EdgeDevice, Some(ns)) => devices.entry(ns).or_default().push(i),
                (TargetKind::EdgeDevice, None) => {}
            }
        }
        Self {
            nodes,
            devices,
            cache: FastMap::default(),
        }
    }

    fn first(&mut self, targets: &[TargetSnapshot], w: &'a WorkloadSnapshot) -> Option<usize> {
        let ns = (w.id.kind == WorkloadKind::EdgeWorkload).then_some(w.id.namespace.as_str());
        let mut h = Fx::default();
        ns.hash(&mut h);
        hash_constraints(&w.constraints, &mut h);
        let key = h.finish();
        if let Some(hit) = self
            .cache
            .get(&key)
            .and_then(|v| v.iter().find(|(c, n, _)| *n == ns && **c == w.constraints))
        {
            return hit.2;
        }
        let list = match ns {
            None => &self.nodes[..],
            Some(ns) => self.devices.get(ns).map_or(&[][..], |v| &v[..]),
        };
        let found = list.iter().copied().find(|&i| {
            w.constraints
                .accepts(&targets[i].labels, &targets[i].taints)
        });
        self.cache
            .entry(key)
            .or_default()
            .push((&w.constraints, ns, found));
        found
    }
}

/// Hashes what a workload's constraints say (the planner's types do not derive `Hash`).
fn hash_constraints(c: &Constraints, h: &mut Fx) {
    let req = |r: &crate::planner::LabelRequirement, h: &mut Fx| {
        r.key.hash(h);
        (r.op as u8).hash(h);
        r.values.hash(h);
    };
    match c {
        Constraints::Pod {
            node_selector,
            affinity_terms,
            tolerations,
        } => {
            0u8.hash(h);
            node_selector.hash(h);
            for term in affinity_terms {
                term.len().hash(h);
                for r in term {
                    req(r, h);
                }
            }
            for t in tolerations {
                (&t.key, &t.operator, &t.value, &t.effect).hash(h);
            }
        }
        Constraints::EdgeWorkload { device_selector } => {
            1u8.hash(h);
            if let Some(s) = device_selector {
                s.match_labels.hash(h);
                for r in &s.match_expressions {
                    req(r, h);
                }
            }
        }
    }
}

/// A duration as `5h12m` (minutes rounded down; seconds under a minute shown as such).
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    }
}

/// How many workloads ahead the index asks for the target name it will hash (as the planner's).
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to start loading `s`'s bytes into cache (a hint: no effect on results).
#[inline(always)]
fn prefetch(s: &str) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing into the program; any address is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(s.as_ptr().cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

#[cfg(test)]
mod tests;
