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
//!   (`LadderFacts` says why) is skipped and the ladder goes on; a workload the ladder reached
//!   for and could not degrade at all is reported in [`LadderPlan::not_degradable`] with every
//!   reason met. EdgeWorkloads have no throttle step (nothing to resize): not a reason.
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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use edgewatt_crds::{
    Criticality, DegradeStep, DegradedKind, EnergyPolicySpec, LadderDurations, Mode, TargetKind,
    WorkloadKind,
};

use crate::forecast::{self, Forecast, ForecastInput, Need, SupplyProfile};
use crate::planner::{
    Constraints, FastHash, Fx, Plan, SkipReason, SuspendUnit, TargetId, TargetSnapshot, Time,
    WorkloadId, WorkloadSnapshot,
};

type FastMap<K, V> = HashMap<K, V, FastHash>;

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
    /// Candidates the ladder reached for and could not degrade at all this cycle, and why:
    /// every step it could not take, in rung order, `; `-separated (once per workload, by id).
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
        if let Some(ahead) = targets.get(i + PREFETCH_AHEAD) {
            prefetch(&ahead.id.name);
            prefetch(ahead.id.namespace.as_deref().unwrap_or_default());
        }
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
    /// The workloads on starved targets, read once.
    items: Vec<Item<'a>>,
    /// Item indices grouped by slot: slot `s` has `by_slot[first[s]..first[s + 1]]`.
    by_slot: Vec<u32>,
    first: Vec<u32>,
    /// Watts this cycle's choices save on each starved target.
    covered: Vec<f64>,
    units: Vec<Unit<'a>>,
    /// Candidates the ladder reached for but could not degrade (item index), and why, in the
    /// order met; formatted at the end for those nothing degraded.
    not_degradable: Vec<(u32, Why<'a>)>,
    /// Where suspends could still run: cached per constraints.
    blockers: Option<Blockers<'a>>,
    steps: Vec<DegradeStep>,
    throttle_keeps: f64,
    /// Marks the units met in one rung (`Unit::seen`).
    stamp: u32,
}

const NONE: u32 = u32::MAX;

/// What the ladder needs of one workload on a starved target, read in one pass: its snapshot is
/// large and its names are allocations of their own, scattered over the heap, so later passes
/// touch only this (and the names through the `&str`s kept here, prefetched).
struct Item<'a> {
    /// Index in `LadderInput::workloads`.
    n: u32,
    slot: u32,
    kind: WorkloadKind,
    ns: &'a str,
    name: &'a str,
    criticality: Criticality,
    throttle: Result<(), &'a str>,
    suspend: Result<&'a SuspendUnit, &'a str>,
    /// Its suspend unit's id (`NONE`: none).
    unit: u32,
    /// Its draw: its own, else its target's shared (`shared`).
    watts: f64,
    shared: bool,
    /// The planner says it cannot leave its target.
    stays: bool,
    /// The ledger holds its throttle.
    held: bool,
    /// What the ledger's throttle of it saved (0: none): its owner recreates it unthrottled on
    /// restore, so a suspend of its unit saves this too.
    held_saved: f64,
    /// What a throttle chosen this cycle saves (`None`: not throttled).
    throttled: Option<f64>,
}

impl Item<'_> {
    fn id_cmp(&self, o: &Item<'_>) -> std::cmp::Ordering {
        (self.kind, self.ns, self.name).cmp(&(o.kind, o.ns, o.name))
    }

    /// What suspending its unit still saves of it: its draw, less what a throttle this cycle
    /// already counted.
    fn remaining(&self) -> f64 {
        (self.watts - self.throttled.unwrap_or(0.0)).max(0.0)
    }
}

/// One suspend unit: its workloads on starved targets (item indices, by slot then id), their
/// highest criticality, whether the ledger holds it and whether this cycle suspends it.
struct Unit<'a> {
    unit: &'a SuspendUnit,
    members: Vec<u32>,
    criticality: Criticality,
    held: bool,
    chosen: bool,
    seen: u32,
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
        let mut s = Self {
            input,
            status,
            inputs,
            starved,
            need,
            items: Vec::new(),
            by_slot: Vec::new(),
            first: Vec::new(),
            covered: vec![0.0; starved.len()],
            units: Vec::new(),
            blockers: None,
            not_degradable: Vec::new(),
            throttle_keeps: f64::from(degrade.throttle_percent.min(100)) / 100.0,
            steps,
            stamp: 0,
        };
        s.index(held);
        Some(s)
    }

    /// Reads the workloads of each starved target (one pass over all workloads, looking up only
    /// the names of starved targets: a small map that stays in cache), then the planner's
    /// verdicts on them and the suspend units they share (a second pass over those alone).
    fn index(&mut self, held: &[&'a Held]) {
        let targets = self.input.targets;
        let mut head: FastMap<&str, u32> = FastMap::default();
        let mut next = vec![NONE; self.starved.len()];
        for (slot, &i) in self.starved.iter().enumerate().rev() {
            if let Some(h) = head.insert(targets[i].id.name.as_str(), slot as u32) {
                next[slot] = h;
            }
        }
        let all = self.input.workloads;
        let mut count = vec![0u32; self.starved.len()];
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
                    count[slot as usize] += 1;
                    let f = &w.ladder;
                    self.items.push(Item {
                        n: n as u32,
                        slot,
                        kind: w.id.kind,
                        ns: &w.id.namespace,
                        name: &w.id.name,
                        criticality: f.criticality,
                        throttle: f.throttle.as_ref().map(|_| ()).map_err(String::as_str),
                        suspend: f.suspend.as_ref().map_err(String::as_str),
                        unit: NONE,
                        watts: f
                            .watts
                            .filter(|w| w.is_finite())
                            .map_or(-1.0, |w| w.max(0.0)),
                        shared: false,
                        stays: false,
                        held: false,
                        held_saved: 0.0,
                        throttled: None,
                    });
                    break;
                }
                slot = next[slot as usize];
            }
        }
        // Group by slot (a counting sort: no list per target).
        self.first = Vec::with_capacity(count.len() + 1);
        let mut at = 0;
        for c in &count {
            self.first.push(at);
            at += c;
        }
        self.first.push(at);
        let mut fill = self.first.clone();
        self.by_slot = vec![0; self.items.len()];
        for (k, it) in self.items.iter().enumerate() {
            let f = &mut fill[it.slot as usize];
            self.by_slot[*f as usize] = k as u32;
            *f += 1;
        }
        // A workload without its own draw: its target's shared by the workloads on it.
        for it in &mut self.items {
            if it.watts < 0.0 {
                let s = &targets[self.starved[it.slot as usize]].signals;
                it.watts = s
                    .watts
                    .or(s.battery_draw_watts)
                    .filter(|w| w.is_finite())
                    .map_or(0.0, |w| {
                        w.max(0.0) / f64::from(count[it.slot as usize].max(1))
                    });
                it.shared = true;
            }
        }
        // The planner's verdicts, the ledger, the units: maps of names (kept in cache, asked for
        // a few items ahead).
        let skipped = &self.input.plan.skipped;
        let mut skip: FastMap<(WorkloadKind, &str, &str), &SkipReason> = FastMap::default();
        skip.reserve(skipped.len());
        for (k, s) in skipped.iter().enumerate() {
            if let Some(ahead) = skipped.get(k + PREFETCH_AHEAD) {
                prefetch(&ahead.workload.namespace);
                prefetch(&ahead.workload.name);
            }
            let id = &s.workload;
            skip.insert((id.kind, &id.namespace, &id.name), &s.reason);
        }
        let mut held_pods: FastMap<(&str, &str), f64> = FastMap::default();
        let mut units: FastMap<(DegradedKind, &str, &str), u32> = FastMap::default();
        let mut unit_id = |u: &'a SuspendUnit, list: &mut Vec<Unit<'a>>| {
            *units
                .entry((u.kind, u.namespace.as_str(), u.name.as_str()))
                .or_insert_with(|| {
                    list.push(Unit {
                        unit: u,
                        members: Vec::new(),
                        criticality: Criticality::Sheddable,
                        held: false,
                        chosen: false,
                        seen: 0,
                    });
                    list.len() as u32 - 1
                })
        };
        for e in held {
            match &e.who {
                Degradee::Pod(id) => {
                    held_pods.insert((&id.namespace, &id.name), e.saved_watts);
                }
                Degradee::Unit(u) => {
                    let id = unit_id(u, &mut self.units);
                    self.units[id as usize].held = true;
                }
            }
        }
        let suspends = self.steps.contains(&DegradeStep::Suspend);
        for k in 0..self.items.len() {
            if let Some(ahead) = self.items.get(k + PREFETCH_AHEAD) {
                prefetch(ahead.ns);
                prefetch(ahead.name);
                if let Ok(u) = ahead.suspend {
                    prefetch(&u.namespace);
                    prefetch(&u.name);
                }
            }
            let it = &mut self.items[k];
            it.stays = skip
                .get(&(it.kind, it.ns, it.name))
                .is_some_and(|r| r.stays());
            let saved = if it.kind == WorkloadKind::Pod && !held_pods.is_empty() {
                held_pods.get(&(it.ns, it.name)).copied()
            } else {
                None
            };
            it.held = saved.is_some();
            it.held_saved = saved.filter(|w| w.is_finite()).map_or(0.0, |w| w.max(0.0));
            if let (true, Ok(u)) = (suspends, it.suspend) {
                let id = unit_id(u, &mut self.units);
                it.unit = id;
                let unit = &mut self.units[id as usize];
                unit.members.push(k as u32);
                unit.criticality = unit.criticality.max(it.criticality);
            }
        }
        // Members by slot then id: sums in one order whatever the input's.
        let items = &self.items;
        for u in &mut self.units {
            if u.members.len() > 1 {
                u.members.sort_unstable_by(|a, b| {
                    let (a, b) = (&items[*a as usize], &items[*b as usize]);
                    a.slot.cmp(&b.slot).then_with(|| a.id_cmp(b))
                });
            }
        }
    }

    fn workload(&self, k: u32) -> &'a WorkloadSnapshot {
        &self.input.workloads[self.items[k as usize].n as usize]
    }

    fn report(&mut self, k: u32, why: Why<'a>) {
        self.not_degradable.push((k, why));
    }

    /// Walks the rungs for each starved target with a need, by id; returns the sheds (in the
    /// order chosen, less throttles of pods whose unit was suspended after all).
    fn run(mut self, out: &mut LadderPlan) -> Vec<LadderStep> {
        let mut chosen: Vec<Chosen> = Vec::new();
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
            let range = self.first[slot as usize] as usize..self.first[slot as usize + 1] as usize;
            let cands: Vec<u32> = self.by_slot[range]
                .iter()
                .copied()
                .filter(|k| {
                    let it = &self.items[*k as usize];
                    it.stays && it.criticality != Criticality::Critical
                })
                .collect();
            let why = self.why(slot, need);
            'rungs: for crit in [Criticality::Sheddable, Criticality::Normal] {
                for s in 0..self.steps.len() {
                    if self.covered[slot as usize] >= goal {
                        break 'rungs;
                    }
                    match self.steps[s] {
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
        // Reported only when nothing degraded it in the end (a step it could not take is no news
        // once its unit is suspended); once per workload (selector instances share an id), its
        // reasons in the order met.
        let mut reports: Vec<(u32, Why<'a>)> = std::mem::take(&mut self.not_degradable)
            .into_iter()
            .filter(|(k, _)| {
                let it = &self.items[*k as usize];
                it.throttled.is_none() && (it.unit == NONE || !self.units[it.unit as usize].chosen)
            })
            .collect();
        reports.sort_by(|a, b| self.items[a.0 as usize].id_cmp(&self.items[b.0 as usize]));
        for (k, why) in reports {
            let id = &self.workload(k).id;
            let text = why.text(self.input.targets);
            match out.not_degradable.last_mut() {
                Some((last, all)) if last == id => {
                    if !all.split("; ").any(|r| r == text) {
                        all.push_str("; ");
                        all.push_str(&text);
                    }
                }
                _ => out.not_degradable.push((id.clone(), text)),
            }
        }
        chosen
            .into_iter()
            .filter(|c| {
                c.step != DegradeStep::Throttle
                    || !c.unit.is_some_and(|u| self.units[u as usize].chosen)
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

    /// Already degraded: the ledger holds its throttle or its unit's suspend, or this cycle
    /// suspends its unit.
    fn is_held(&self, it: &Item<'_>) -> bool {
        it.held
            || (it.unit != NONE && {
                let u = &self.units[it.unit as usize];
                u.held || u.chosen
            })
    }

    /// The throttle rung of `crit` on target `slot`.
    fn throttle(
        &mut self,
        slot: u32,
        crit: Criticality,
        goal: f64,
        cands: &[u32],
        why: &str,
        chosen: &mut Vec<Chosen>,
    ) {
        let mut options: Vec<(f64, u32)> = Vec::new();
        for &k in cands {
            let it = &self.items[k as usize];
            // An EdgeWorkload has no throttle (no pod to resize): not a step for it at all.
            if it.criticality != crit || it.kind == WorkloadKind::EdgeWorkload || self.is_held(it) {
                continue;
            }
            match it.throttle {
                Err(e) => self.report(k, Why::Cannot(DegradeStep::Throttle, e)),
                Ok(()) => options.push((it.watts * (1.0 - self.throttle_keeps), k)),
            }
        }
        let items = &self.items;
        options.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| items[a.1 as usize].id_cmp(&items[b.1 as usize]))
        });
        for (saved, k) in options {
            if self.covered[slot as usize] >= goal {
                break;
            }
            self.covered[slot as usize] += saved;
            let it = &mut self.items[k as usize];
            it.throttled = Some(saved);
            let (shared, unit) = (it.shared, it.unit);
            let note = if shared {
                self.shared_note(slot)
            } else {
                String::new()
            };
            chosen.push(Chosen {
                who: Degradee::Pod(self.workload(k).id.clone()),
                step: DegradeStep::Throttle,
                slot,
                criticality: crit,
                saved_watts: saved,
                unit: (unit != NONE).then_some(unit),
                reason: format!(
                    "{why}; throttled to {:.0}% saves {} W{note}",
                    self.throttle_keeps * 100.0,
                    Tenths(saved)
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
        chosen: &mut Vec<Chosen>,
    ) {
        self.stamp += 1;
        let mut options: Vec<(f64, u32, u32)> = Vec::new();
        for &k in cands {
            let it = &self.items[k as usize];
            if let Err(e) = it.suspend {
                if it.criticality == crit {
                    self.report(k, Why::Cannot(DegradeStep::Suspend, e));
                }
                continue;
            }
            let (id, own) = (it.unit, it.criticality);
            let unit = &mut self.units[id as usize];
            if unit.held || unit.chosen || unit.seen == self.stamp {
                continue;
            }
            unit.seen = self.stamp;
            if unit.criticality != crit {
                if unit.criticality == Criticality::Critical && own == crit {
                    let u = unit.unit;
                    self.report(k, Why::CriticalUnit(u));
                }
                continue;
            }
            let here: f64 = unit
                .members
                .iter()
                .map(|m| &self.items[*m as usize])
                .filter(|m| m.slot == slot)
                .map(Item::remaining)
                .sum();
            // The unit's candidate here with the least id stands for it (its constraints, its
            // report), whatever the input's order.
            let rep = if unit.members.len() > 1 {
                unit.members
                    .iter()
                    .copied()
                    .filter(|m| {
                        let m = &self.items[*m as usize];
                        m.slot == slot && m.stays && m.criticality != Criticality::Critical
                    })
                    .min_by(|a, b| self.items[*a as usize].id_cmp(&self.items[*b as usize]))
                    .unwrap_or(k)
            } else {
                k
            };
            options.push((here, id, rep));
        }
        let units = &self.units;
        options.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| units[a.1 as usize].unit.cmp(units[b.1 as usize].unit))
        });
        for (_, id, k) in options {
            if self.covered[slot as usize] >= goal {
                break;
            }
            if let Some(b) = self.blocker(self.workload(k)) {
                self.report(k, Why::Elsewhere(b));
                continue;
            }
            let unit = &self.units[id as usize];
            let (mut saved, mut shared) = (0.0, 0);
            for &m in &unit.members {
                let it = &self.items[m as usize];
                self.covered[it.slot as usize] += it.remaining();
                // A pod throttled earlier draws less than it will after the restore (its owner
                // recreates it with the template's CPU limit) and its throttle's entry leaves
                // the ledger with it: the suspend saves that too.
                saved += it.watts + it.held_saved;
                shared += usize::from(it.shared);
            }
            let (u, count) = (unit.unit, unit.members.len());
            self.units[id as usize].chosen = true;
            let note = if shared > 0 {
                format!(
                    " ({shared} of its {count} workloads do not know their draw: their targets' draw shared)"
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
                unit: Some(id),
                reason: format!("{why}; suspended saves {} W{note}", Tenths(saved)),
            });
        }
    }

    fn shared_note(&self, slot: u32) -> String {
        let n = self.first[slot as usize + 1] - self.first[slot as usize];
        format!(
            " (its own draw unknown: {}'s draw shared by its {n} workloads)",
            self.target(slot).id.name
        )
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

/// Why a candidate could not take a step (formatted only for those reported).
enum Why<'a> {
    /// Its `LadderFacts` say it cannot.
    Cannot(DegradeStep, &'a str),
    /// Its unit also runs critical workloads.
    CriticalUnit(&'a SuspendUnit),
    /// It could run on this target, which is not starved (or its data is unknown).
    Elsewhere(usize),
}

impl Why<'_> {
    fn text(&self, targets: &[TargetSnapshot]) -> String {
        match self {
            Why::Cannot(step, e) => format!("{}: {e}", step.as_str().to_lowercase()),
            Why::CriticalUnit(u) => format!(
                "suspend: {} {}/{} also runs critical workloads",
                u.kind.as_str(),
                u.namespace,
                u.name
            ),
            Why::Elsewhere(i) => format!(
                "suspend: it could run on {}, which is not starved",
                targets[*i].id.name
            ),
        }
    }
}

/// One shed chosen this cycle, before the throttles made moot by a suspend are dropped.
struct Chosen {
    who: Degradee,
    step: DegradeStep,
    slot: u32,
    criticality: Criticality,
    saved_watts: f64,
    /// The pod's suspend unit (throttles) or the unit (suspends), by id.
    unit: Option<u32>,
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

/// Watts to a tenth, as `{:.1}` prints them, without its exact decimal expansion (thousands of
/// reasons per cycle on a starved fleet).
struct Tenths(f64);

impl std::fmt::Display for Tenths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = (self.0 * 10.0).round();
        if t.is_finite() && t.abs() < 1e15 {
            let t = t as i64;
            let sign = if t < 0 { "-" } else { "" };
            write!(f, "{sign}{}.{}", t.abs() / 10, t.abs() % 10)
        } else {
            write!(f, "{:.1}", self.0)
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
