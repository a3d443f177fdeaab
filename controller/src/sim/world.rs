//! The simulated fleet: batteries charged by the sun and drained by the work on them, targets
//! that go dark at the cut-off and boot again when recharged, pods placed by a simulated
//! scheduler, EdgeWorkload instances reported Running by their device. The one owner of that
//! state: every change of a replica goes through [`World::change`], which keeps each target's
//! draw, its list of replicas and the count of replicas not serving in step with the replica.
//!
//! Time is whole minutes since the start (the physics step); delays are rounded up to minutes.
//! What the controller may do to the world is a method each: taint/label, evict, create or
//! delete a copy, re-point, and for the degradation ladder [`World::throttle`],
//! [`World::suspend`] and [`World::restore`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use edgewatt_crds::{Criticality, TargetKind, WorkloadKind};

use super::fleet::{Fleet, PlacementDef, TargetDef};
use crate::migration::{CopyState, Intent, Observed};
use crate::planner::Selector;

/// A flap: the same workload acted on again within this many minutes, undoing the last action
/// (moved back onto the target it was moved off, or shed again after a restore).
pub const FLAP_WINDOW_MINUTES: u32 = 60;

/// Criticalities in report order.
pub const CRITICALITIES: [Criticality; 3] = [
    Criticality::Critical,
    Criticality::Normal,
    Criticality::Sheddable,
];

pub fn crit_index(c: Criticality) -> usize {
    match c {
        Criticality::Critical => 0,
        Criticality::Normal => 1,
        Criticality::Sheddable => 2,
    }
}

/// Where an instance stands on its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Placed, starting; serves from minute `until` (if the target stays up).
    Starting {
        until: u32,
    },
    Running,
    /// Its target is dark: it neither draws nor serves; it restarts when the target boots.
    Down,
}

/// One running copy of a workload on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub target: usize,
    pub phase: Phase,
}

/// One pod (the lineage of one replica of a Deployment: an evicted pod's replacement continues
/// it under a new name) or one EdgeWorkload object.
#[derive(Debug, Clone)]
pub struct Replica {
    pub workload: usize,
    pub kind: WorkloadKind,
    pub namespace: String,
    /// The object's name now (a pod's replacement gets a new one).
    pub name: String,
    /// Pods: how many times this replica was replaced.
    pub generation: u32,
    pub draw_watts: f64,
    pub criticality: Criticality,
    /// EdgeWorkloads: `spec.device`, where Flotta runs the original.
    pub device: Option<usize>,
    /// Pods: where it is bound; EdgeWorkloads: the original on `device`. `None`: a pod waiting
    /// for the scheduler, or a suspended workload.
    pub main: Option<Instance>,
    /// A make-before-break copy (EdgeWorkloads).
    pub copy: Option<Instance>,
    /// A pod waiting to be placed, from this minute on.
    pub pending_from: Option<u32>,
    /// Share of its draw while throttled (1.0: not throttled).
    pub throttle: f64,
    /// Scaled to zero / removed by the ladder.
    pub suspended: bool,
    /// The move intent on the object (`edgewatt.io/migration`), by policy index.
    pub intent: Option<(usize, Intent)>,
    serving: bool,
    /// The target a policy last moved it off, and when (for flaps).
    left: Option<(u32, usize)>,
    /// The one before (a pod lands after its eviction is recorded).
    left_before: Option<(u32, usize)>,
    last_restore: Option<u32>,
    recent_moves: VecDeque<u32>,
}

impl Replica {
    fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.main.iter().chain(self.copy.iter())
    }

    fn watts(&self) -> f64 {
        self.draw_watts * self.throttle
    }

    fn is_serving(&self) -> bool {
        self.instances().any(|i| i.phase == Phase::Running)
    }
}

/// What the controller's snapshot shows of a replica, kept in a compact array beside the
/// replicas so that a decision compares 10 000 of these instead of walking the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shown {
    /// The target the object names: a pod's node, an EdgeWorkload's `spec.device` (`None`: a
    /// pod waiting for a node, a suspended workload).
    pub at: Option<u32>,
    /// A pod's replacement count (its name changes with it).
    pub generation: u32,
    /// A move intent is on the object.
    pub in_flight: bool,
    /// Percent of its draw while throttled (100: not throttled).
    pub throttle_pct: u8,
}

/// What flowed through a target's battery over one step (watt-hours).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Flow {
    pub solar_wh: f64,
    /// Delivered to the load (base draw and workloads).
    pub consumed_wh: f64,
    /// Added to the battery (after charge losses).
    pub stored_wh: f64,
    /// Taken out of the battery (before discharge losses).
    pub drawn_wh: f64,
    /// Solar that could not be stored: the battery was full.
    pub curtailed_wh: f64,
    /// Lost charging and discharging.
    pub losses_wh: f64,
    /// The battery reached the cut-off: the target goes dark.
    pub cut_off: bool,
}

/// A battery's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Battery {
    pub capacity_wh: f64,
    pub cutoff_wh: f64,
    pub charge_efficiency: f64,
    pub discharge_efficiency: f64,
}

impl Battery {
    /// One step of `hours`: the load (`load_w`, 0 when dark) is served from the sun first, then
    /// from the battery down to the cut-off; surplus charges the battery up to full, the rest is
    /// curtailed. Returns the new charge and the flows; `solar = consumed − drawn·ηd + stored/ηc +
    /// curtailed` exactly (every watt-hour accounted for). Pure.
    pub fn step(&self, soc_wh: f64, solar_w: f64, load_w: f64, hours: f64) -> (f64, Flow) {
        let solar_wh = solar_w * hours;
        let load_wh = load_w * hours;
        let mut f = Flow {
            solar_wh,
            ..Flow::default()
        };
        if solar_wh >= load_wh {
            let surplus = solar_wh - load_wh;
            let room = (self.capacity_wh - soc_wh).max(0.0);
            let stored = (surplus * self.charge_efficiency).min(room);
            let taken = stored / self.charge_efficiency;
            f.consumed_wh = load_wh;
            f.stored_wh = stored;
            f.losses_wh = taken - stored;
            // Never below zero by rounding (`taken` ≤ `surplus` exactly in real numbers).
            f.curtailed_wh = (surplus - taken).max(0.0);
            (soc_wh + stored, f)
        } else {
            let need = load_wh - solar_wh;
            let want = need / self.discharge_efficiency;
            let available = (soc_wh - self.cutoff_wh).max(0.0);
            if want <= available {
                f.consumed_wh = load_wh;
                f.drawn_wh = want;
                f.losses_wh = want - need;
                // Down to the cut-off exactly (within rounding): the battery disconnects now.
                f.cut_off = available - want <= 1e-9;
                (soc_wh - want, f)
            } else {
                let delivered = available * self.discharge_efficiency;
                f.consumed_wh = solar_wh + delivered;
                f.drawn_wh = available;
                f.losses_wh = available - delivered;
                f.cut_off = true;
                (soc_wh - available, f)
            }
        }
    }
}

/// One node or device.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: TargetDef,
    pub battery: Battery,
    pub soc_wh: f64,
    restart_wh: f64,
    max_watts: f64,
    pub dark: bool,
    pub dark_since: Option<u32>,
    /// edgewatt's starvation taint (node) or label (device), and the policy that placed it.
    pub mark: Option<String>,
    /// Base draw plus every drawing instance on it (what it draws while up).
    pub load_w: f64,
    /// Last step's flows, as the exporter would report them.
    pub last: Flow,
    replicas: Vec<u32>,
}

impl Target {
    pub fn is_node(&self) -> bool {
        self.def.id.kind == TargetKind::Node
    }
    pub fn ratio(&self) -> f64 {
        self.soc_wh / self.battery.capacity_wh
    }
    /// Power the scheduler may still place here.
    pub fn headroom(&self) -> f64 {
        self.max_watts - self.load_w
    }
}

/// Counters over a run (what the report sums).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub service_minutes_lost: [u64; 3],
    pub dark_target_minutes: u64,
    pub consumed_wh: f64,
    pub curtailed_wh: f64,
    pub solar_wh: f64,
    pub moves: u64,
    pub sheds: u64,
    pub throttles: u64,
    pub restores: u64,
    pub flaps: u64,
    pub max_moves_per_workload_per_hour: u32,
    pub lifecycle_evictions: u64,
}

/// Delays in whole minutes.
#[derive(Debug, Clone, Copy)]
struct Delays {
    migration: u32,
    pod_restart: u32,
    not_ready_eviction: Option<u32>,
}

fn minutes(seconds: u32) -> u32 {
    seconds.div_ceil(60)
}

/// The simulated fleet.
pub struct World {
    pub targets: Vec<Target>,
    pub replicas: Vec<Replica>,
    /// Per replica, what a snapshot shows of it (kept by [`World::change`]).
    pub shown: Vec<Shown>,
    /// Replicas with a make-before-break copy now.
    pub with_copy: std::collections::BTreeSet<u32>,
    /// Bumped whenever a taint or device label changes.
    pub marks_version: u64,
    /// Per workload of the fleet file, its replicas (consecutive).
    workload_replicas: Vec<std::ops::Range<u32>>,
    /// Per target, the supply (watts) summed over the minutes it was up since the last
    /// [`World::take_supply`], and how many minutes that was.
    supply: Vec<(f64, u32)>,
    /// Per workload: its pods' node selector or its EdgeWorkloads' device selector.
    pod_selectors: Vec<Option<BTreeMap<String, String>>>,
    edge_selectors: Vec<Option<Selector>>,
    /// Not serving now, by criticality.
    not_serving: [u64; 3],
    events: BinaryHeap<Reverse<(u32, u32)>>,
    /// Pods waiting for a node; retried when something that could place them changed.
    pending: Vec<u32>,
    sched_dirty: bool,
    /// Objects by kind, namespace and name (a pod's name changes with each replacement).
    by_name: HashMap<(WorkloadKind, String, String), u32>,
    /// Devices by namespace and name.
    devices: HashMap<(String, String), usize>,
    delays: Delays,
    pub totals: Totals,
    pub now: u32,
}

impl World {
    /// The fleet at minute 0: batteries at their initial charge, pods placed by the scheduler
    /// in order, EdgeWorkloads on their device (or the matching device with the most headroom),
    /// everything Running.
    pub fn new(fleet: &Fleet) -> World {
        let p = &fleet.physics;
        let targets = fleet
            .targets
            .iter()
            .map(|d| {
                let battery = Battery {
                    capacity_wh: d.battery_wh,
                    cutoff_wh: d.battery_wh * p.cutoff_percent / 100.0,
                    charge_efficiency: p.charge_efficiency,
                    discharge_efficiency: p.discharge_efficiency,
                };
                let soc = d.battery_wh * d.initial_charge_percent / 100.0;
                Target {
                    battery,
                    soc_wh: soc,
                    restart_wh: d.battery_wh * p.restart_percent / 100.0,
                    // Without a limit the scheduler still prefers the least loaded.
                    max_watts: d.max_watts.unwrap_or(1e12),
                    dark: soc <= battery.cutoff_wh,
                    dark_since: (soc <= battery.cutoff_wh).then_some(0),
                    mark: None,
                    load_w: d.base_watts,
                    last: Flow::default(),
                    replicas: Vec::new(),
                    def: d.clone(),
                }
            })
            .collect();
        let mut w = World {
            targets,
            replicas: Vec::new(),
            shown: Vec::new(),
            with_copy: Default::default(),
            marks_version: 0,
            workload_replicas: Vec::new(),
            supply: Vec::new(),
            pod_selectors: Vec::new(),
            edge_selectors: Vec::new(),
            not_serving: [0; 3],
            events: BinaryHeap::new(),
            pending: Vec::new(),
            sched_dirty: false,
            by_name: HashMap::new(),
            devices: HashMap::new(),
            delays: Delays {
                migration: minutes(p.migration_seconds),
                pod_restart: minutes(p.pod_restart_seconds),
                not_ready_eviction: p.not_ready_eviction_seconds.map(minutes),
            },
            totals: Totals::default(),
            now: 0,
        };
        for (i, t) in w.targets.iter().enumerate() {
            if let Some(ns) = &t.def.id.namespace {
                w.devices.insert((ns.clone(), t.def.id.name.clone()), i);
            }
        }
        w.supply = vec![(0.0, 0); w.targets.len()];
        for (wi, def) in fleet.workloads.iter().enumerate() {
            let first = w.replicas.len() as u32;
            w.workload_replicas.push(first..first + def.replicas);
            let (pod_sel, edge_sel) = match &def.placement {
                PlacementDef::Pod { node_selector } => (Some(node_selector.clone()), None),
                PlacementDef::Edge { selector, .. } => (None, selector.clone()),
            };
            w.pod_selectors.push(pod_sel);
            w.edge_selectors.push(edge_sel);
            for slot in 0..def.replicas {
                let base = if def.replicas == 1 {
                    def.name.clone()
                } else {
                    format!("{}-{slot}", def.name)
                };
                let r = w.replicas.len() as u32;
                let mut rep = Replica {
                    workload: wi,
                    kind: def.kind,
                    namespace: def.namespace.clone(),
                    name: base,
                    generation: 0,
                    draw_watts: def.draw_watts,
                    criticality: def.criticality,
                    device: None,
                    main: None,
                    copy: None,
                    pending_from: None,
                    throttle: 1.0,
                    suspended: false,
                    intent: None,
                    serving: false,
                    left: None,
                    left_before: None,
                    last_restore: None,
                    recent_moves: VecDeque::new(),
                };
                if def.kind == WorkloadKind::Pod {
                    rep.name = format!("{}-{}", rep.name, 0);
                }
                w.by_name
                    .insert((rep.kind, rep.namespace.clone(), rep.name.clone()), r);
                w.replicas.push(rep);
                w.shown.push(Shown::default());
                w.not_serving[crit_index(def.criticality)] += 1;
                match &def.placement {
                    PlacementDef::Pod { .. } => {
                        if let Some(node) = w.schedule(r) {
                            w.change(r, |rep| {
                                rep.main = Some(Instance {
                                    target: node,
                                    phase: Phase::Running,
                                })
                            });
                        } else {
                            w.change(r, |rep| rep.pending_from = Some(0));
                            w.pending.push(r);
                        }
                    }
                    PlacementDef::Edge { device, .. } => {
                        let d = device.unwrap_or_else(|| w.best_device(r));
                        w.change(r, |rep| {
                            rep.device = Some(d);
                            rep.main = Some(Instance {
                                target: d,
                                phase: Phase::Running,
                            });
                        });
                    }
                }
            }
        }
        // Instances on targets that start dark are down.
        for t in 0..w.targets.len() {
            if w.targets[t].dark {
                w.set_dark(t, true);
            }
        }
        w
    }

    // ---- the one way a replica changes ---------------------------------------------------

    /// Changes replica `r` with `f`, keeping each target's draw and replica list and the
    /// not-serving counts in step. An instance placed on a dark target is down.
    pub fn change<R>(&mut self, r: u32, f: impl FnOnce(&mut Replica) -> R) -> R {
        self.detach(r);
        let out = f(&mut self.replicas[r as usize]);
        let targets = &self.targets;
        let rep = &mut self.replicas[r as usize];
        for inst in rep.main.iter_mut().chain(rep.copy.iter_mut()) {
            if targets[inst.target].dark {
                inst.phase = Phase::Down;
            }
        }
        self.attach(r);
        out
    }

    fn detach(&mut self, r: u32) {
        let rep = &self.replicas[r as usize];
        let watts = rep.watts();
        let serving = rep.serving;
        let crit = crit_index(rep.criticality);
        let insts = [rep.main, rep.copy];
        for i in insts.into_iter().flatten() {
            let t = &mut self.targets[i.target];
            if i.phase != Phase::Down {
                t.load_w -= watts;
            }
            if let Some(k) = t.replicas.iter().position(|x| *x == r) {
                t.replicas.swap_remove(k);
            }
        }
        if serving {
            self.not_serving[crit] += 1;
        }
    }

    fn attach(&mut self, r: u32) {
        let now = self.now;
        let rep = &mut self.replicas[r as usize];
        rep.serving = rep.is_serving();
        let watts = rep.watts();
        let crit = crit_index(rep.criticality);
        let serving = rep.serving;
        let insts = [rep.main, rep.copy];
        for i in insts.into_iter().flatten() {
            let t = &mut self.targets[i.target];
            if i.phase != Phase::Down {
                t.load_w += watts;
            }
            if !t.replicas.contains(&r) {
                t.replicas.push(r);
            }
            if let Phase::Starting { until } = i.phase {
                self.events.push(Reverse((until.max(now), r)));
            }
        }
        if serving {
            self.not_serving[crit] -= 1;
        }
        let rep = &self.replicas[r as usize];
        self.shown[r as usize] = Shown {
            at: match rep.kind {
                WorkloadKind::Pod => rep.main.map(|i| i.target as u32),
                WorkloadKind::EdgeWorkload => {
                    rep.device.filter(|_| !rep.suspended).map(|d| d as u32)
                }
            },
            generation: rep.generation,
            in_flight: rep.intent.is_some(),
            throttle_pct: (rep.throttle * 100.0).round() as u8,
        };
        if rep.copy.is_some() {
            self.with_copy.insert(r);
        } else {
            self.with_copy.remove(&r);
        }
    }

    // ---- scheduling ------------------------------------------------------------------------

    /// The node the scheduler would bind pod `r` to: up, without edgewatt's taint (simulated
    /// pods tolerate nothing), matching its nodeSelector, with room for its draw; the most
    /// headroom wins, then the name.
    fn schedule(&self, r: u32) -> Option<usize> {
        let rep = &self.replicas[r as usize];
        let sel = self.pod_selectors[rep.workload].as_ref()?;
        let need = rep.watts();
        let mut best: Option<(usize, f64)> = None;
        for (i, t) in self.targets.iter().enumerate() {
            if !t.is_node() || t.dark || t.mark.is_some() {
                continue;
            }
            if !sel.iter().all(|(k, v)| t.def.labels.get(k) == Some(v)) {
                continue;
            }
            let h = t.headroom();
            if h < need {
                continue;
            }
            if best.is_none_or(|(_, bh)| h > bh) {
                best = Some((i, h));
            }
        }
        best.map(|(i, _)| i)
    }

    /// The initial device of a selector-placed EdgeWorkload: the matching device in its
    /// namespace with the most headroom (the fleet file checked that one matches).
    fn best_device(&self, r: u32) -> usize {
        let rep = &self.replicas[r as usize];
        let sel = &self.edge_selectors[rep.workload];
        let mut best: Option<(usize, f64)> = None;
        for (i, t) in self.targets.iter().enumerate() {
            if t.is_node() || t.def.id.namespace.as_deref() != Some(rep.namespace.as_str()) {
                continue;
            }
            if !sel.as_ref().is_none_or(|s| s.matches(&t.def.labels)) {
                continue;
            }
            let h = t.headroom();
            if best.is_none_or(|(_, bh)| h > bh) {
                best = Some((i, h));
            }
        }
        best.map_or(0, |(i, _)| i)
    }

    /// Places waiting pods whose restart delay is over, when something changed that could let
    /// them in. Pods of one workload are alike: once one does not fit, the others of that
    /// workload are not tried again in this pass.
    fn place_pending(&mut self) {
        if self.pending.is_empty() || !self.sched_dirty {
            return;
        }
        self.sched_dirty = false;
        let now = self.now;
        let mut failed: Vec<usize> = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        let mut still = Vec::with_capacity(pending.len());
        for r in pending {
            let rep = &self.replicas[r as usize];
            if rep.suspended || rep.pending_from.is_none() {
                continue;
            }
            if rep.pending_from.is_some_and(|t| t > now) || failed.contains(&rep.workload) {
                still.push(r);
                continue;
            }
            match self.schedule(r) {
                Some(node) => {
                    self.change(r, |rep| {
                        rep.pending_from = None;
                        rep.main = Some(Instance {
                            target: node,
                            phase: Phase::Running,
                        });
                    });
                    self.arrived(r, node);
                }
                None => {
                    failed.push(self.replicas[r as usize].workload);
                    still.push(r);
                }
            }
        }
        self.pending = still;
    }

    // ---- time ------------------------------------------------------------------------------

    /// Minute `now` begins: instances whose start delay is over run, waiting pods whose delay is
    /// over are placed, pods on nodes dark for the NotReady eviction time are evicted.
    pub fn begin_step(&mut self, now: u32) {
        self.now = now;
        while let Some(Reverse((at, r))) = self.events.peek().copied() {
            if at > now {
                break;
            }
            self.events.pop();
            let due = |i: &Option<Instance>| matches!(i, Some(Instance { phase: Phase::Starting { until }, .. }) if *until <= now);
            let rep = &self.replicas[r as usize];
            if due(&rep.main) || due(&rep.copy) {
                self.change(r, |rep| {
                    for i in rep.main.iter_mut().chain(rep.copy.iter_mut()) {
                        if matches!(i.phase, Phase::Starting { until } if until <= now) {
                            i.phase = Phase::Running;
                        }
                    }
                });
            }
            if self.replicas[r as usize]
                .pending_from
                .is_some_and(|t| t <= now)
            {
                self.sched_dirty = true;
            }
        }
        if let Some(after) = self.delays.not_ready_eviction {
            for t in 0..self.targets.len() {
                let tg = &self.targets[t];
                if tg.is_node() && tg.dark && tg.dark_since.is_some_and(|s| s + after == now) {
                    let pods: Vec<u32> = tg.replicas.clone();
                    for r in pods {
                        self.totals.lifecycle_evictions += 1;
                        self.replace_pod(r);
                    }
                }
            }
        }
        self.place_pending();
    }

    /// Integrates minute `now` for every target given each site's output per Wp, then applies
    /// dark and boot transitions. Adds the minute's lost service, dark targets and energy.
    pub fn physics(&mut self, site_w_per_wp: &[f32]) {
        let hours = 1.0 / 60.0;
        let mut cut: Vec<usize> = Vec::new();
        let mut boot: Vec<usize> = Vec::new();
        for (i, t) in self.targets.iter_mut().enumerate() {
            let solar = f64::from(site_w_per_wp[t.def.site]) * t.def.solar_wp;
            let load = if t.dark { 0.0 } else { t.load_w };
            let (soc, flow) = t.battery.step(t.soc_wh, solar, load, hours);
            t.soc_wh = soc;
            t.last = flow;
            if !t.dark {
                // What the exporter shows while up: charge − discharge + the target's draw.
                let acc = &mut self.supply[i];
                acc.0 += (flow.stored_wh - flow.drawn_wh + flow.consumed_wh) / hours;
                acc.1 += 1;
            }
            self.totals.consumed_wh += flow.consumed_wh;
            self.totals.curtailed_wh += flow.curtailed_wh;
            self.totals.solar_wh += flow.solar_wh;
            if t.dark {
                self.totals.dark_target_minutes += 1;
                if t.soc_wh >= t.restart_wh {
                    boot.push(i);
                }
            } else if flow.cut_off {
                cut.push(i);
            }
        }
        for (k, lost) in self.not_serving.iter().enumerate() {
            self.totals.service_minutes_lost[k] += lost;
        }
        for t in cut {
            self.set_dark(t, true);
        }
        for t in boot {
            self.set_dark(t, false);
        }
    }

    /// A target goes dark (its instances stop) or boots (they restart after the pod restart
    /// delay).
    fn set_dark(&mut self, t: usize, dark: bool) {
        let now = self.now + 1;
        self.targets[t].dark = dark;
        self.targets[t].dark_since = dark.then_some(now);
        let restart = now + self.delays.pod_restart;
        for r in self.targets[t].replicas.clone() {
            self.change(r, |rep| {
                for i in rep.main.iter_mut().chain(rep.copy.iter_mut()) {
                    if i.target == t {
                        i.phase = if dark {
                            Phase::Down
                        } else {
                            Phase::Starting { until: restart }
                        };
                    }
                }
            });
        }
        if !dark {
            self.sched_dirty = true;
        }
    }

    // ---- what the controller does ------------------------------------------------------------

    /// Places (`Some(policy)`) or removes edgewatt's starvation taint or label on target `t`.
    pub fn set_mark(&mut self, t: usize, by: Option<&str>) {
        self.targets[t].mark = by.map(str::to_string);
        self.marks_version += 1;
        if by.is_none() {
            self.sched_dirty = true;
        }
    }

    /// The pod named `namespace/name` now, if it exists.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<u32> {
        self.by_name
            .get(&(WorkloadKind::Pod, namespace.to_string(), name.to_string()))
            .copied()
    }

    /// The replica of an EdgeWorkload object.
    pub fn edge_workload(&self, namespace: &str, name: &str) -> Option<u32> {
        let key = (
            WorkloadKind::EdgeWorkload,
            namespace.to_string(),
            name.to_string(),
        );
        self.by_name.get(&key).copied()
    }

    /// The pod is deleted and its ReplicaSet creates a replacement (a new name), which waits
    /// the restart delay, then for the scheduler.
    fn replace_pod(&mut self, r: u32) {
        let from = self.now + self.delays.pod_restart;
        let old = {
            let rep = &self.replicas[r as usize];
            (rep.kind, rep.namespace.clone(), rep.name.clone())
        };
        self.by_name.remove(&old);
        self.change(r, |rep| {
            rep.main = None;
            rep.generation += 1;
            let base = rep
                .name
                .rsplit_once('-')
                .map_or(rep.name.as_str(), |(b, _)| b);
            rep.name = format!("{base}-{}", rep.generation);
            rep.pending_from = (!rep.suspended).then_some(from);
            // The replacement comes from the pod template: its CPU limit as it was.
            rep.throttle = 1.0;
        });
        let rep = &self.replicas[r as usize];
        self.by_name
            .insert((rep.kind, rep.namespace.clone(), rep.name.clone()), r);
        if !rep.suspended {
            self.pending.push(r);
            self.events.push(Reverse((from, r)));
        }
        self.sched_dirty = true;
    }

    /// A policy evicts pod `r` from the node it runs on.
    pub fn evict(&mut self, r: u32) {
        let Some(from) = self.replicas[r as usize].main.map(|i| i.target) else {
            return;
        };
        self.moved(r, from, None);
        self.replace_pod(r);
    }

    /// Counts a move of `r` off `from` (to `to` when known now) for the report.
    fn moved(&mut self, r: u32, from: usize, to: Option<usize>) {
        let now = self.now;
        let rep = &mut self.replicas[r as usize];
        rep.left_before = rep.left;
        rep.left = Some((now, from));
        rep.recent_moves.push_back(now);
        while rep.recent_moves.front().is_some_and(|t| now - t >= 60) {
            rep.recent_moves.pop_front();
        }
        let n = rep.recent_moves.len() as u32;
        self.totals.moves += 1;
        self.totals.max_moves_per_workload_per_hour =
            self.totals.max_moves_per_workload_per_hour.max(n);
        if let Some(to) = to {
            self.arrived(r, to);
        }
    }

    /// `r` arrived on `to` after a move: a flap when it was moved off `to` within the window.
    fn arrived(&mut self, r: u32, to: usize) {
        let now = self.now;
        let rep = &self.replicas[r as usize];
        if rep
            .left_before
            .is_some_and(|(at, t)| t == to && now - at <= FLAP_WINDOW_MINUTES)
        {
            self.totals.flaps += 1;
        }
    }

    /// What a fresh read shows of the move of EdgeWorkload `r` (see `mover::observe`).
    pub fn observe(&self, r: u32, intent: &Intent) -> Observed {
        let rep = &self.replicas[r as usize];
        let name_of = |t: usize| self.targets[t].def.id.name.as_str();
        let runs = |i: &Option<Instance>, on: &str| {
            i.is_some_and(|i| i.phase == Phase::Running && name_of(i.target) == on)
        };
        Observed {
            original: Some(rep.device.map(|d| name_of(d).to_string())),
            copy: if rep.copy.is_some() {
                CopyState::Present
            } else {
                CopyState::Absent
            },
            target_exists: self.device_index(&rep.namespace, &intent.to).is_some(),
            copy_running: runs(&rep.copy, &intent.to),
            original_running: rep.device.is_some_and(|d| runs(&rep.main, name_of(d))),
            abort: false,
        }
    }

    /// The device `name` in `namespace`.
    pub fn device_index(&self, namespace: &str, name: &str) -> Option<usize> {
        self.devices
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// The move of `r` starts towards `to` (for the report: flaps, moves per hour).
    pub fn move_started(&mut self, r: u32, to: usize) {
        if let Some(from) = self.replicas[r as usize].device {
            self.moved(r, from, Some(to));
        }
    }

    /// Flotta deploys a copy of EdgeWorkload `r` on device `to`.
    pub fn create_copy(&mut self, r: u32, to: usize) {
        let until = self.now + self.delays.migration;
        self.change(r, |rep| {
            rep.copy = (!rep.suspended).then_some(Instance {
                target: to,
                phase: Phase::Starting { until },
            })
        });
    }

    pub fn delete_copy(&mut self, r: u32) {
        self.change(r, |rep| rep.copy = None);
    }

    /// `spec.device` of EdgeWorkload `r` becomes `to`: Flotta removes it from the old device
    /// and deploys it on the new one.
    pub fn repoint(&mut self, r: u32, to: usize) {
        let until = self.now + self.delays.migration;
        self.change(r, |rep| {
            rep.device = Some(to);
            rep.main = (!rep.suspended).then_some(Instance {
                target: to,
                phase: Phase::Starting { until },
            });
        });
    }

    pub fn set_intent(&mut self, r: u32, intent: Option<(usize, Intent)>) {
        self.shown[r as usize].in_flight = intent.is_some();
        self.replicas[r as usize].intent = intent;
    }

    // ---- the degradation ladder's hooks --------------------------------------------------------

    /// Lowers (or, with 1.0, restores) the draw of `r` to `share` of its own: a CPU limit
    /// lowered in place. It keeps serving.
    /// A throttle within the flap window of a restore counts as a flap.
    pub fn throttle(&mut self, r: u32, share: f64) {
        let share = share.clamp(0.0, 1.0);
        let now = self.now;
        let was = self.replicas[r as usize].throttle;
        if share < 1.0 && was >= 1.0 {
            self.totals.throttles += 1;
            self.count_flap(r);
        }
        self.change(r, |rep| {
            if share >= 1.0 && was < 1.0 {
                rep.last_restore = Some(now);
            }
            rep.throttle = share;
        });
    }

    /// A replica degraded again within the flap window of its last restore.
    fn count_flap(&mut self, r: u32) {
        let now = self.now;
        if self.replicas[r as usize]
            .last_restore
            .is_some_and(|t| now - t <= FLAP_WINDOW_MINUTES)
        {
            self.totals.flaps += 1;
        }
    }

    /// Suspends `r` (its owner scaled to zero, or the EdgeWorkload removed from its device): it
    /// draws nothing and does not serve. A flap when restored within the flap window.
    pub fn suspend(&mut self, r: u32) {
        if self.replicas[r as usize].suspended {
            return;
        }
        self.count_flap(r);
        self.totals.sheds += 1;
        self.change(r, |rep| {
            rep.suspended = true;
            rep.main = None;
            rep.copy = None;
            rep.pending_from = None;
        });
        let rep = &self.replicas[r as usize];
        if rep.kind == WorkloadKind::Pod {
            // Scaled to zero: the pod is deleted (its owner recreates one on restore).
            self.by_name
                .remove(&(rep.kind, rep.namespace.clone(), rep.name.clone()));
        }
        self.sched_dirty = true;
    }

    /// Brings a suspended `r` back: a pod waits the restart delay and the scheduler, an
    /// EdgeWorkload starts again on its device.
    pub fn restore(&mut self, r: u32) {
        if !self.replicas[r as usize].suspended {
            return;
        }
        self.totals.restores += 1;
        let now = self.now;
        let restart = now + self.delays.pod_restart;
        self.change(r, |rep| {
            rep.suspended = false;
            rep.last_restore = Some(now);
        });
        match self.replicas[r as usize].kind {
            WorkloadKind::Pod => self.replace_pod(r),
            WorkloadKind::EdgeWorkload => {
                self.change(r, |rep| {
                    rep.main = rep.device.map(|d| Instance {
                        target: d,
                        phase: Phase::Starting { until: restart },
                    })
                });
            }
        }
    }

    // ---- reading ---------------------------------------------------------------------------

    /// Replicas not serving now, by criticality (critical, normal, sheddable).
    pub fn not_serving(&self) -> [u64; 3] {
        self.not_serving
    }

    /// Replicas by criticality.
    pub fn replicas_by_criticality(&self) -> [u64; 3] {
        let mut n = [0; 3];
        for r in &self.replicas {
            n[crit_index(r.criticality)] += 1;
        }
        n
    }

    /// Whether replica `r` serves now (recomputed, for tests of the bookkeeping).
    pub fn serves(&self, r: u32) -> bool {
        self.replicas[r as usize].is_serving()
    }

    /// The replicas of workload `w` (its index in the fleet file).
    pub fn replicas_of(&self, w: usize) -> std::ops::Range<u32> {
        self.workload_replicas[w].clone()
    }

    /// Each target's mean supply (watts) over the minutes it was up since the last call (`None`:
    /// dark all along, as the exporter was), and a new period starts.
    pub fn take_supply(&mut self) -> impl Iterator<Item = Option<f64>> + '_ {
        self.supply.iter_mut().map(|acc| {
            let (sum, n) = std::mem::take(acc);
            (n > 0).then(|| sum / f64::from(n))
        })
    }

    /// The replicas with an instance on target `t`.
    pub fn on_target(&self, t: usize) -> &[u32] {
        &self.targets[t].replicas
    }
}
