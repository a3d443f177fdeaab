//! The pure planner: one control cycle as a function from snapshots to decisions.
//!
//! Everything that decides *whether* and *what* to move lives here, with no I/O and no clock, so
//! that the safety rules (fail safe on unknown data, rate limits, cooldown, pinned work, target
//! choice) can be unit- and property-tested exhaustively and benchmarked at fleet scale. The
//! runtime (`reconciler`, `actuator`) only gathers inputs (`snapshot`) and executes [`Plan`]s.
//!
//! Rules, in short:
//! - A target is *starved* once any configured starvation condition has held continuously for
//!   `starvation.for`; it *recovers* once no starvation condition holds **and** the recovery
//!   thresholds hold, continuously for `recovery.for`. Between the two thresholds nothing changes
//!   (hysteresis), so a battery hovering around one line cannot flap.
//! - Unknown data (a missing or stale signal that a condition needs) never starts or ends
//!   starvation and a target with unknown data causes no action at all. A `for` window needs the
//!   condition *seen* over its whole length: a gap in known data longer than
//!   [`PlanInput::max_gap`] restarts the window from the next known reading.
//! - Work is moved only off starved targets, never when pinned or ineligible, never twice within
//!   the cooldown (per workload and per owner: a ReplicaSet's replacement pod is the same work),
//!   never more than `maxConcurrent` in flight or `maxPerHour` per rolling hour (per policy and
//!   per owner).
//! - Pods are evicted only from a node whose starvation taint is in place (or placed this cycle)
//!   and only when they do not tolerate it: anything else would be scheduled straight back.
//! - EdgeWorkloads placed by `spec.device` move with a copy (make-before-break) or re-pointed
//!   (Recreate); one whose instances cannot share a device (host ports) is refused
//!   make-before-break. Selector-placed ones are never re-pointed (that would collapse N devices
//!   into one): they leave a starved device through its `edgewatt.io/energy-starved` label,
//!   which their deviceSelector must exclude, and only while another instance runs elsewhere.
//! - EdgeWorkloads go to the alive, non-starved device with known data that satisfies the
//!   workload's `deviceSelector` and has the most headroom (ties: name); each assignment lowers
//!   the chosen device's headroom for the rest of the cycle, so a batch spreads out. Pods are only
//!   evicted (the scheduler places them), and only when some healthy, non-starved node would
//!   accept them.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    Criticality, DegradedKind, EnergyPolicySpec, Mode, PolicyDurations, TargetKind, WorkloadKind,
};

/// Wall-clock time as the planner sees it (passed in, never read).
pub type Time = DateTime<Utc>;

/// The Fx hash (rustc's): the planner hashes a few hundred thousand short names per cycle, and
/// std's SipHash was an eighth of the fleet cycle. Its inputs are the cluster's object names;
/// a flood of crafted names could only slow the planner, never change a decision.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        // The tail (most names are shorter than 8 bytes) in at most three fixed-size reads: a
        // variable-length copy into a buffer was a `memcpy` call per name, 4 % of a cycle.
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let (mut word, mut at) = (0u64, 0);
            if rest.len() >= 4 {
                word = u64::from(u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")));
                at = 4;
            }
            if rest.len() - at >= 2 {
                let two = u16::from_le_bytes(rest[at..at + 2].try_into().expect("2 bytes"));
                word |= u64::from(two) << (8 * at);
                at += 2;
            }
            if at < rest.len() {
                word |= u64::from(rest[at]) << (8 * at);
            }
            self.add(word);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `BuildHasher` for the planner's maps and sets.
pub type FastHash = std::hash::BuildHasherDefault<Fx>;
type FastMap<K, V> = HashMap<K, V, FastHash>;
type FastSet<K> = HashSet<K, FastHash>;

/// Each target's state, carried from one cycle into the next. A hash map: the cycle looks up
/// every target's previous state and builds the next, and an ordered map's string comparisons
/// (10 000 sorted inserts and lookups) were a fifth of a fleet cycle. [`Plan::starved`] is sorted.
pub type TargetStates = HashMap<TargetId, TargetState, FastHash>;

/// Identity of a target. Nodes have no namespace; EdgeDevices do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId {
    pub kind: TargetKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl TargetId {
    pub fn node(name: impl Into<String>) -> Self {
        Self {
            kind: TargetKind::Node,
            namespace: None,
            name: name.into(),
        }
    }
    pub fn device(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind: TargetKind::EdgeDevice,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }
}

/// Fresh signal values of one target; `None` means missing or stale, i.e. unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetSignals {
    /// Battery state of charge, 0..1.
    pub battery_ratio: Option<f64>,
    /// Energy left in the battery, joules.
    pub battery_energy_joules: Option<f64>,
    /// Battery discharge power, watts.
    pub battery_draw_watts: Option<f64>,
    /// Whole-target draw, watts.
    pub watts: Option<f64>,
    /// Power budget, watts (annotation, metric or policy default, resolved by the adapter).
    pub budget_watts: Option<f64>,
    /// `Some(true)` on mains/AC. Optional metric: `None` is read as "on battery".
    pub external_power: Option<bool>,
    /// Value of the policy's custom query for this target.
    pub custom: Option<f64>,
    /// Full battery energy, joules.
    pub battery_capacity_joules: Option<f64>,
    /// Power flowing into the battery now, watts (0 when it is not charging).
    pub charge_watts: Option<f64>,
    /// The runway forecast's verdict (`starvation.runwayBelowRecharge`): the battery reaches its
    /// reserve before the forecast recharge. `None`: unknown (no battery data or no history).
    pub runway_below_recharge: Option<bool>,
    /// The most more the target could draw and still reach its forecast recharge
    /// (`forecast::spare_watts`, with what the ladder holds on it back). A target with a
    /// forecast takes on work from a starved one only within it. `None`: no forecast.
    pub runway_spare_watts: Option<f64>,
}

/// A taint on a node, as far as scheduling checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintSpec {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

/// A pod toleration (Kubernetes semantics: empty key + Exists tolerates everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TolerationSpec {
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    pub operator: Option<String>,
    pub value: Option<String>,
    /// Empty: every effect.
    pub effect: Option<String>,
}

impl TolerationSpec {
    /// Whether this toleration tolerates `taint` (the kubelet's `ToleratesTaint`).
    pub fn tolerates(&self, taint: &TaintSpec) -> bool {
        if let Some(effect) = self.effect.as_deref().filter(|e| !e.is_empty()) {
            if effect != taint.effect {
                return false;
            }
        }
        let key = self.key.as_deref().unwrap_or("");
        if !key.is_empty() && key != taint.key {
            return false;
        }
        match self.operator.as_deref().unwrap_or("Equal") {
            "Exists" => true,
            "Equal" | "" => {
                key == taint.key
                    && self.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
            _ => false,
        }
    }
}

/// Label selector requirement operators (Kubernetes label and node selector semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    /// An operator Kubernetes does not know: the requirement matches nothing.
    Invalid,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: LabelOp,
    pub values: Vec<String>,
}

impl LabelRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            LabelOp::In => v.is_some_and(|v| self.values.contains(v)),
            LabelOp::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            LabelOp::Exists => v.is_some(),
            LabelOp::DoesNotExist => v.is_none(),
            LabelOp::Invalid => false,
            LabelOp::Gt | LabelOp::Lt => {
                let (Some(v), Some(bound)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == LabelOp::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// `matchLabels` AND `matchExpressions`. `None` where a selector is absent means "everything".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelRequirement>,
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// Where a workload may run, as the workload itself says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraints {
    /// A pod: `nodeSelector` AND (any of the required node-affinity terms), tolerations.
    Pod {
        node_selector: BTreeMap<String, String>,
        /// Required node-affinity terms, ORed; empty means no affinity constraint.
        affinity_terms: Vec<Vec<LabelRequirement>>,
        tolerations: Vec<TolerationSpec>,
    },
    /// An EdgeWorkload: its `deviceSelector` (None: any device).
    EdgeWorkload { device_selector: Option<Selector> },
}

impl Constraints {
    /// Whether a target with `labels` and `taints` satisfies these constraints.
    pub fn accepts(&self, labels: &BTreeMap<String, String>, taints: &[TaintSpec]) -> bool {
        match self {
            Constraints::Pod {
                node_selector,
                affinity_terms,
                tolerations,
            } => {
                node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    && (affinity_terms.is_empty()
                        || affinity_terms
                            .iter()
                            .any(|term| term.iter().all(|r| r.matches(labels))))
                    && taints
                        .iter()
                        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                        .all(|t| tolerations.iter().any(|tol| tol.tolerates(t)))
            }
            Constraints::EdgeWorkload { device_selector } => {
                device_selector.as_ref().is_none_or(|s| s.matches(labels))
            }
        }
    }
}

/// One target (node or device) as seen this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSnapshot {
    pub id: TargetId,
    pub labels: BTreeMap<String, String>,
    /// Selected by the policy's target selector. Unselected targets are never starved but may
    /// receive work.
    pub in_policy: bool,
    /// Ready/schedulable node, or a device that is up and heartbeating.
    pub alive: bool,
    pub taints: Vec<TaintSpec>,
    /// The node carries edgewatt's starvation taint (the device its starvation label) already.
    pub tainted: bool,
    /// ...put there by this policy (or by an edgewatt that did not say which), so this policy may
    /// remove it.
    pub taint_ours: bool,
    pub signals: TargetSignals,
}

/// Identity of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

/// One pod or EdgeWorkload as seen this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSnapshot {
    pub id: WorkloadId,
    /// The node or device it runs on (for EdgeWorkloads: namespace is the workload's).
    pub target: Option<String>,
    /// Annotated `edgewatt.io/pinned=true`.
    pub pinned: bool,
    /// Why it may never be moved (DaemonSet, mirror pod, no controller, not selected…).
    pub ineligible: Option<String>,
    /// A migration of it is already in flight (intent annotation present).
    pub in_flight: bool,
    /// A matching PodDisruptionBudget allows no disruption right now (`disruptionsAllowed == 0`):
    /// an eviction would only be refused, so none is tried this cycle.
    pub pdb_blocked: bool,
    pub constraints: Constraints,
    /// The pod's owner (`Deployment/ns/web`): cooldown and hourly limits apply to it as a whole.
    pub owner: Option<String>,
    /// How an EdgeWorkload is placed (pods: [`Placement::Device`], their node).
    pub placement: Placement,
    /// The target reports it Running (pods: always true).
    pub running: bool,
    /// Why two instances cannot share a device (`hostPort 9090`, `hostNetwork`), if so.
    pub host_bound: Option<String>,
    /// A pod that tolerates the starvation taint: evicted, it could come straight back.
    pub tolerates_starvation: bool,
    /// What the degradation ladder may do to it.
    pub ladder: LadderFacts,
}

/// What the degradation ladder needs to know of a workload ([`crate::ladder`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LadderFacts {
    /// From `edgewatt.io/criticality` on it (a pod's comes from its owner's pod template), else
    /// its priority against the policy's thresholds, else `normal`. An annotation that cannot be
    /// read makes it `critical` (never degraded) and is reported with `criticality_error`.
    pub criticality: Criticality,
    pub criticality_error: Option<String>,
    /// Its own draw in watts (the exporter's pod or EdgeWorkload power), when known.
    pub watts: Option<f64>,
    /// `Ok` when its CPU limit can be lowered in place (`pods/resize`), else why not.
    pub throttle: Result<(), String>,
    /// What a suspend scales to zero or removes (its owner, or the EdgeWorkload), else why it
    /// cannot be suspended.
    pub suspend: Result<SuspendUnit, String>,
}

impl Default for LadderFacts {
    fn default() -> Self {
        Self {
            criticality: Criticality::Normal,
            criticality_error: None,
            watts: None,
            throttle: Err("not a pod with a CPU limit".into()),
            suspend: Err("no owner to scale".into()),
        }
    }
}

/// What a suspend acts on: a pod's owner (scaled to zero) or an EdgeWorkload (removed, its
/// object kept). Several workloads (replicas, instances on several devices) share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SuspendUnit {
    pub kind: DegradedKind,
    pub namespace: String,
    pub name: String,
}

/// How a workload is placed on its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// A named device (`spec.device`), or a pod's node.
    #[default]
    Device,
    /// Flotta's `deviceSelector`: every matching device runs it. `opted_in`: the selector
    /// excludes devices labelled `edgewatt.io/energy-starved`, so the label moves it.
    Selector { opted_in: bool },
}

/// State carried between cycles for one target.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetState {
    /// Since when a starvation condition has held without a break (not yet starved, or starved).
    pub condition_since: Option<Time>,
    /// Set while starved.
    pub starved: Option<StarvedInfo>,
    /// Since when the recovery conditions have held (only while starved).
    pub recovery_since: Option<Time>,
    /// Last known battery percentage and draw (for status).
    pub battery_percent: Option<f64>,
    pub watts: Option<f64>,
    /// When this target's data was last known: a longer gap than [`PlanInput::max_gap`] before
    /// the next known reading restarts the `for` windows.
    pub known_at: Option<Time>,
}

/// Why and since when a target is starved.
#[derive(Debug, Clone, PartialEq)]
pub struct StarvedInfo {
    pub since: Time,
    pub reason: String,
}

/// Recent moves, kept by the runtime and passed in each cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MoveHistory {
    /// When each workload was last moved (started, or finished once it ended).
    pub last_moved: HashMap<WorkloadId, Time>,
    /// Move start times within (at least) the last hour.
    pub recent_moves: Vec<Time>,
    /// The same per owner of the pods moved (`Deployment/ns/web`).
    pub owner_last_moved: HashMap<String, Time>,
    pub owner_recent: HashMap<String, Vec<Time>>,
    /// Per owner, its other pods that were on the node when one of them was evicted and have not
    /// been evicted since: they are the rest of that node's drain, not replacements, so the
    /// owner's cooldown does not hold them back (a starved node with three replicas of one
    /// Deployment is drained, not left with two for a cooldown). Replacements created later are
    /// never in it. Not restored after a restart: the rest then waits for the cooldown (safe).
    pub owner_drain: HashMap<String, HashSet<WorkloadId>>,
    /// Moves in flight: EdgeWorkload moves not yet ended, evicted pods not yet gone.
    pub in_flight: u32,
}

impl MoveHistory {
    /// Moves started within the hour before `now`.
    pub fn moves_last_hour(&self, now: Time) -> u32 {
        let hour_ago = now - chrono::Duration::hours(1);
        self.recent_moves.iter().filter(|t| **t > hour_ago).count() as u32
    }

    /// Moves of `owner`'s workloads started within the hour before `now`.
    pub fn owner_moves_last_hour(&self, owner: &str, now: Time) -> u32 {
        let hour_ago = now - chrono::Duration::hours(1);
        self.owner_recent
            .get(owner)
            .map_or(0, |v| v.iter().filter(|t| **t > hour_ago).count() as u32)
    }

    /// Records a started move (what the runtime calls after executing an action).
    pub fn record(&mut self, id: WorkloadId, owner: Option<&str>, at: Time) {
        let hour_ago = at - chrono::Duration::hours(1);
        self.last_moved.insert(id, at);
        self.recent_moves.push(at);
        self.recent_moves.retain(|t| *t > hour_ago);
        if let Some(o) = owner {
            self.owner_last_moved.insert(o.to_string(), at);
            let v = self.owner_recent.entry(o.to_string()).or_default();
            v.push(at);
            v.retain(|t| *t > hour_ago);
        }
    }

    /// A started eviction: the move itself and, for a pod with an owner, its place in the
    /// owner's drain. Migrate and Observe (dry run) record the same, so a dry run reports what
    /// an enforced run would do — the whole drain, not one pod per cooldown.
    pub fn record_eviction(
        &mut self,
        pod: &WorkloadId,
        owner: Option<&str>,
        siblings: &[WorkloadId],
        at: Time,
    ) {
        self.record(pod.clone(), owner, at);
        if let Some(o) = owner {
            self.record_drain(o, pod, siblings);
        }
    }

    /// An eviction of `pod` of `owner` whose `siblings` (the owner's other pods on the same
    /// node) were there at the decision. The first eviction of a drain starts the set; a later
    /// one from the set keeps only the pods that were in it and are still there.
    pub fn record_drain(&mut self, owner: &str, pod: &WorkloadId, siblings: &[WorkloadId]) {
        let drain = self.owner_drain.entry(owner.to_string()).or_default();
        if drain.remove(pod) {
            drain.retain(|p| siblings.contains(p));
        } else {
            *drain = siblings.iter().cloned().collect();
        }
    }

    /// Forgets what no rule can read any more: moves that ended before `before` (the runtime
    /// passes now − max(cooldown, 1 h): older ones neither cool a workload or an owner down nor
    /// count towards an hourly limit). Without it a fleet whose pods get new names at every
    /// eviction would grow this history for as long as the controller runs.
    pub fn forget_before(&mut self, before: Time) {
        self.last_moved.retain(|_, t| *t >= before);
        self.recent_moves.retain(|t| *t >= before);
        self.owner_last_moved.retain(|_, t| *t >= before);
        self.owner_recent.retain(|_, v| {
            v.retain(|t| *t >= before);
            !v.is_empty()
        });
        let owners = &self.owner_last_moved;
        self.owner_drain.retain(|o, _| owners.contains_key(o));
    }

    /// A move ended at `at`: the cooldown runs from its end.
    pub fn ended(&mut self, id: WorkloadId, at: Time) {
        let e = self.last_moved.entry(id).or_insert(at);
        *e = (*e).max(at);
    }

    fn cooling(&self, w: &WorkloadSnapshot, now: Time, cooldown: chrono::Duration) -> bool {
        let within = |at: &Time| now - *at < cooldown;
        self.last_moved.get(&w.id).is_some_and(within)
            || w.owner.as_ref().is_some_and(|o| {
                self.owner_last_moved.get(o).is_some_and(within)
                    && !self.owner_drain.get(o).is_some_and(|d| d.contains(&w.id))
            })
    }
}

/// Something the runtime should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Put `edgewatt.io/energy-starved:NoSchedule` on the node.
    Taint { node: String },
    /// Remove it.
    Untaint { node: String },
    /// Evict the pod through the Eviction API (PDBs respected).
    Evict {
        pod: WorkloadId,
        node: String,
        owner: Option<String>,
        /// The owner's other pods on the node now (see [`MoveHistory::owner_drain`]).
        siblings: Vec<WorkloadId>,
    },
    /// Label the starved device `edgewatt.io/energy-starved=true`: the selector-placed
    /// EdgeWorkloads in `leaving` (which exclude the label) leave it; each runs elsewhere too.
    LabelDevice {
        device: TargetId,
        leaving: Vec<WorkloadId>,
    },
    /// Remove the label (the device recovered).
    UnlabelDevice { device: TargetId },
    /// Move an EdgeWorkload from a starved device to `to` (same namespace).
    MigrateEdgeWorkload {
        workload: WorkloadId,
        from: String,
        to: String,
    },
}

/// A workload on a starved target that was not moved this cycle, and why (for visibility).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub workload: WorkloadId,
    pub reason: SkipReason,
}

/// Why a workload on a starved target stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    Pinned,
    Ineligible(String),
    InFlight,
    Cooldown,
    MaxConcurrent,
    MaxPerHour,
    /// No healthy, non-starved target satisfies its constraints.
    NoTarget,
    /// A PodDisruptionBudget allows no disruption now; retried in a later cycle.
    DisruptionBudget,
    /// The pod tolerates the starvation taint: it would be scheduled straight back.
    ToleratesTaint,
    /// The node's starvation taint is not in place (`taintNodes: false`, or not written yet).
    TaintNotInPlace,
    /// Make-before-break cannot work for it (and why); strategy `Recreate` can.
    Refused(String),
    /// Selector-placed: no other device runs it, so leaving this one would stop it.
    NoOtherInstance,
}

impl SkipReason {
    /// Whether the workload stays on its starved target for good (until something about it or
    /// the cluster changes), rather than leaving it soon: in flight, cooling down, rate-limited
    /// or waiting on a PodDisruptionBudget are "not now". What the status counts as left alone,
    /// and what the degradation ladder may act on.
    pub fn stays(&self) -> bool {
        match self {
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
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Pinned => f.write_str("pinned"),
            SkipReason::Ineligible(why) => write!(f, "ineligible: {why}"),
            SkipReason::InFlight => f.write_str("a move is already in flight"),
            SkipReason::Cooldown => f.write_str("moved within the cooldown"),
            SkipReason::MaxConcurrent => f.write_str("maxConcurrent reached"),
            SkipReason::MaxPerHour => f.write_str("maxPerHour reached"),
            SkipReason::NoTarget => f.write_str("no healthy target accepts it"),
            SkipReason::DisruptionBudget => f.write_str("PDB allows no disruption now"),
            SkipReason::ToleratesTaint => f.write_str("tolerates the starvation taint"),
            SkipReason::TaintNotInPlace => {
                f.write_str("the node's starvation taint is not in place")
            }
            SkipReason::Refused(why) => write!(f, "make-before-break refused: {why}"),
            SkipReason::NoOtherInstance => {
                f.write_str("no other device runs it; leaving this one would stop it")
            }
        }
    }
}

/// Why a target cannot receive work this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// A node that is not Ready or is unschedulable; a device that is not `up` or whose
    /// heartbeat counter stopped.
    NotAlive,
    /// A signal the policy's starvation conditions need is missing or stale.
    UnknownData,
    Starved,
    /// A device with neither a battery level, mains power nor budget and draw known.
    NoHeadroom,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unfit::NotAlive => "not alive",
            Unfit::UnknownData => "data unknown (missing or stale)",
            Unfit::Starved => "starved",
            Unfit::NoHeadroom => "headroom unknown",
        })
    }
}

/// Whether `t` could receive work, given whether its data is known and it is starved. The one
/// rule both [`plan`] and the runtime's diagnostics ([`Plan::unfit`]) use.
fn unfit_with(t: &TargetSnapshot, known: bool, starved: bool) -> Option<Unfit> {
    if !t.alive {
        Some(Unfit::NotAlive)
    } else if !known {
        Some(Unfit::UnknownData)
    } else if starved {
        Some(Unfit::Starved)
    } else if t.id.kind == TargetKind::EdgeDevice && headroom(t).is_none() {
        Some(Unfit::NoHeadroom)
    } else {
        None
    }
}

/// Why one possible destination of a workload was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Unfit(Unfit),
    /// The workload's own constraints (deviceSelector; nodeSelector, affinity, tolerations).
    Constraints,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unfit(u) => u.fmt(f),
            Rejection::Constraints => f.write_str("does not satisfy the workload's constraints"),
        }
    }
}

/// What a starvation transition was.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Starved { target: TargetId, reason: String },
    Recovered { target: TargetId },
}

/// The output of one cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// State to carry into the next cycle (only targets present in this cycle's snapshot).
    pub states: TargetStates,
    /// Actions to execute. Always empty in Observe mode.
    pub actions: Vec<Action>,
    /// Observe mode: what would have been done.
    pub dry_run: Vec<Action>,
    pub skipped: Vec<Skipped>,
    pub transitions: Vec<Transition>,
    /// Targets whose data was not known this cycle (a signal a condition needs was missing or
    /// stale): they neither change state nor receive work. Kept so the runtime can say why.
    /// A hash set: most targets of a large fleet can be unknown at once (no battery metric yet),
    /// and ordered inserts of 10 000 ids cost 14 ms of a 46 ms cycle.
    pub unknown: HashSet<TargetId, FastHash>,
}

impl Plan {
    /// Targets currently starved, sorted by id.
    pub fn starved(&self) -> impl Iterator<Item = (&TargetId, &TargetState, &StarvedInfo)> {
        let mut starved: Vec<_> = self
            .states
            .iter()
            .filter_map(|(id, s)| s.starved.as_ref().map(|i| (id, s, i)))
            .collect();
        starved.sort_unstable_by(|a, b| a.0.cmp(b.0));
        starved.into_iter()
    }

    fn is_starved(&self, id: &TargetId) -> bool {
        self.states.get(id).is_some_and(|s| s.starved.is_some())
    }

    /// Why `t` (one of this cycle's targets) could not receive work; `None` when it could.
    pub fn unfit(&self, t: &TargetSnapshot) -> Option<Unfit> {
        unfit_with(t, !self.unknown.contains(&t.id), self.is_starved(&t.id))
    }

    /// Why each possible destination of `w` was not chosen: every target of its kind (for
    /// EdgeWorkloads: in its namespace) other than the one it runs on. What a
    /// [`SkipReason::NoTarget`] comes from, for the runtime's diagnostics.
    pub fn rejections<'t>(
        &self,
        targets: &'t [TargetSnapshot],
        w: &WorkloadSnapshot,
    ) -> Vec<(&'t TargetId, Rejection)> {
        targets
            .iter()
            .filter(|t| same_kind(t, w) && Some(t.id.name.as_str()) != w.target.as_deref())
            .filter(|t| {
                w.id.kind == WorkloadKind::Pod
                    || t.id.namespace.as_deref() == Some(w.id.namespace.as_str())
            })
            .filter_map(|t| {
                let why = match self.unfit(t) {
                    Some(u) => Rejection::Unfit(u),
                    None if !w.constraints.accepts(&t.labels, &t.taints) => Rejection::Constraints,
                    None => return None,
                };
                Some((&t.id, why))
            })
            .collect()
    }
}

fn same_kind(t: &TargetSnapshot, w: &WorkloadSnapshot) -> bool {
    matches!(
        (t.id.kind, w.id.kind),
        (TargetKind::Node, WorkloadKind::Pod)
            | (TargetKind::EdgeDevice, WorkloadKind::EdgeWorkload)
    )
}

/// Everything the planner needs for one cycle.
pub struct PlanInput<'a> {
    pub spec: &'a EnergyPolicySpec,
    pub durations: &'a PolicyDurations,
    pub now: Time,
    pub targets: &'a [TargetSnapshot],
    pub workloads: &'a [WorkloadSnapshot],
    pub previous: &'a TargetStates,
    pub history: &'a MoveHistory,
    /// The longest gap between two cycles with known data that still counts as "seen
    /// continuously" for `for` windows.
    pub max_gap: std::time::Duration,
}

/// Result of evaluating a set of conditions: known to hold (with reason), known not to, unknown.
#[derive(Debug, Clone, PartialEq)]
enum Eval {
    Holds(String),
    Clear,
    Unknown,
}

/// Starvation: any configured condition holds. Unknown only when none holds and one is unknown.
fn starvation(spec: &EnergyPolicySpec, s: &TargetSignals) -> Eval {
    let st = &spec.starvation;
    let on_mains = s.external_power == Some(true);
    let mut reasons = Vec::new();
    let mut unknown = false;
    let mut check = |v: Option<bool>, reason: &dyn Fn() -> String| match v {
        Some(true) => reasons.push(reason()),
        Some(false) => {}
        None => unknown = true,
    };
    if let Some(below) = st.battery_below_percent {
        let v = if on_mains {
            Some(false)
        } else {
            s.battery_ratio.map(|r| r * 100.0 < below)
        };
        check(v, &|| {
            format!(
                "battery {:.0}% below {below}%",
                s.battery_ratio.unwrap_or(0.0) * 100.0
            )
        });
    }
    if let Some(min) = st.min_runtime_minutes {
        let v = if on_mains || s.battery_draw_watts.is_some_and(|d| d <= 0.0) {
            Some(false)
        } else {
            match (s.battery_energy_joules, s.battery_draw_watts) {
                (Some(e), Some(d)) => Some(e / d / 60.0 < min),
                _ => None,
            }
        };
        check(v, &|| {
            let mins =
                s.battery_energy_joules.unwrap_or(0.0) / s.battery_draw_watts.unwrap_or(1.0) / 60.0;
            format!("runtime {mins:.0} min below {min} min")
        });
    }
    if let Some(above) = st.power_above_watts {
        let v = match (s.watts, s.budget_watts) {
            (Some(w), Some(b)) => Some(w - b > above),
            _ => None,
        };
        check(v, &|| {
            format!(
                "draw {:.1} W exceeds budget {:.1} W by more than {above} W",
                s.watts.unwrap_or(0.0),
                s.budget_watts.unwrap_or(0.0)
            )
        });
    }
    if st.runway_below_recharge == Some(true) {
        let v = if on_mains {
            Some(false)
        } else {
            s.runway_below_recharge
        };
        check(v, &|| {
            "the forecast runway ends before the forecast recharge".to_string()
        });
    }
    if let Some(q) = &st.query {
        let v = s.custom.and_then(|c| match (q.above, q.below) {
            (Some(a), _) => Some(c > a),
            (None, Some(b)) => Some(c < b),
            (None, None) => None,
        });
        check(v, &|| {
            format!("custom query value {}", s.custom.unwrap_or(0.0))
        });
    }
    if !reasons.is_empty() {
        Eval::Holds(reasons.join("; "))
    } else if unknown {
        Eval::Unknown
    } else {
        Eval::Clear
    }
}

/// Recovery: no starvation condition holds and every recovery threshold holds (known).
fn recovery(spec: &EnergyPolicySpec, s: &TargetSignals) -> Eval {
    match starvation(spec, s) {
        Eval::Holds(r) => return Eval::Holds(r),
        Eval::Unknown => return Eval::Unknown,
        Eval::Clear => {}
    }
    if let Some(above) = spec.recovery.as_ref().and_then(|r| r.battery_above_percent) {
        if s.external_power != Some(true) {
            match s.battery_ratio {
                None => return Eval::Unknown,
                Some(r) if r * 100.0 <= above => {
                    return Eval::Holds(format!("battery {:.0}% not above {above}%", r * 100.0))
                }
                Some(_) => {}
            }
        }
    }
    Eval::Clear
}

fn elapsed(since: Time, now: Time) -> std::time::Duration {
    (now - since).to_std().unwrap_or_default()
}

/// Advances one target's state. Returns the new state, whether its data was known this cycle,
/// and a transition if one happened.
fn step_target(
    input: &PlanInput<'_>,
    t: &TargetSnapshot,
    prev: Option<&TargetState>,
) -> (TargetState, bool, Option<Transition>) {
    let now = input.now;
    let mut st = prev.cloned().unwrap_or_default();
    // Rounded: the status shows them, and a status is written only when it changes.
    if let Some(r) = t.signals.battery_ratio {
        st.battery_percent = Some((r * 1000.0).round() / 10.0);
    }
    if let Some(w) = t.signals.watts.or(t.signals.battery_draw_watts) {
        st.watts = Some((w * 10.0).round() / 10.0);
    }
    if !t.in_policy {
        // Not covered (any more): never starved.
        let was = st.starved.is_some();
        let out = TargetState {
            battery_percent: st.battery_percent,
            watts: st.watts,
            known_at: Some(now),
            ..Default::default()
        };
        let tr = was.then(|| Transition::Recovered {
            target: t.id.clone(),
        });
        return (out, true, tr);
    }
    let eval = match &st.starved {
        None => starvation(input.spec, &t.signals),
        Some(_) => recovery(input.spec, &t.signals),
    };
    let holds = match eval {
        Eval::Unknown => return (st, false, None),
        Eval::Holds(reason) => Some(reason),
        Eval::Clear => None,
    };
    // Known now. Time not seen does not count towards a `for` window: after a gap the windows
    // start again from this reading (a starved target stays starved; only timers restart).
    if st.known_at.is_some_and(|k| elapsed(k, now) > input.max_gap) {
        st.condition_since = None;
        st.recovery_since = None;
    }
    st.known_at = Some(now);
    match (&st.starved, holds) {
        (None, None) => {
            st.condition_since = None;
            (st, true, None)
        }
        (None, Some(reason)) => {
            let since = *st.condition_since.get_or_insert(now);
            if elapsed(since, now) >= input.durations.starvation_for {
                st.starved = Some(StarvedInfo {
                    since,
                    reason: reason.clone(),
                });
                st.recovery_since = None;
                let tr = Transition::Starved {
                    target: t.id.clone(),
                    reason,
                };
                (st, true, Some(tr))
            } else {
                (st, true, None)
            }
        }
        (Some(_), Some(_)) => {
            st.recovery_since = None;
            if let Eval::Holds(reason) = starvation(input.spec, &t.signals) {
                if let Some(info) = st.starved.as_mut() {
                    info.reason = reason;
                }
            }
            (st, true, None)
        }
        (Some(_), None) => {
            let since = *st.recovery_since.get_or_insert(now);
            if elapsed(since, now) >= input.durations.recovery_for {
                let out = TargetState {
                    battery_percent: st.battery_percent,
                    watts: st.watts,
                    known_at: st.known_at,
                    ..Default::default()
                };
                let tr = Transition::Recovered {
                    target: t.id.clone(),
                };
                (out, true, Some(tr))
            } else {
                (st, true, None)
            }
        }
    }
}

/// Headroom ranking key of a possible destination; `None` when unknown (never chosen).
/// Devices rank by battery ratio (mains = 1.0) first, then devices with only a watts headroom;
/// nodes rank by budget − draw.
fn headroom(t: &TargetSnapshot) -> Option<(u8, f64)> {
    let s = &t.signals;
    let watts = match (s.budget_watts, s.watts) {
        (Some(b), Some(w)) => Some(b - w),
        _ => None,
    };
    match t.id.kind {
        TargetKind::EdgeDevice => {
            if s.external_power == Some(true) {
                Some((1, 1.0))
            } else if let Some(r) = s.battery_ratio {
                Some((1, r))
            } else {
                watts.map(|w| (0, w))
            }
        }
        TargetKind::Node => watts.map(|w| (0, w)),
    }
}

/// Runs one planning cycle. Pure: the same input always gives the same plan.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    let mut flags = Vec::with_capacity(input.targets.len());
    out.states.reserve(input.targets.len());
    for t in input.targets {
        let (state, known, tr) = step_target(input, t, input.previous.get(&t.id));
        if !known {
            out.unknown.insert(t.id.clone());
        }
        if let Some(tr) = tr {
            out.transitions.push(tr);
        }
        flags.push(Flags {
            known,
            starved_since: state.starved.as_ref().map(|i| i.since),
        });
        out.states.insert(t.id.clone(), state);
    }
    let mut skipped = Vec::new();
    let mut cycle = Cycle::new(input, &flags);
    let mut actions = cycle.taints();
    actions.extend(cycle.moves(&mut skipped));
    out.skipped = skipped;
    match input.spec.action.mode {
        Mode::Migrate => out.actions = actions,
        Mode::Observe => out.dry_run = actions,
    }
    out
}

/// One target's verdict this cycle, by its index in `PlanInput::targets`.
#[derive(Debug, Clone, Copy)]
struct Flags {
    known: bool,
    starved_since: Option<Time>,
}

impl Flags {
    /// Starved with known data: the targets whose workloads are moved (and so listed).
    fn walked(self) -> bool {
        self.known && self.starved_since.is_some()
    }
}

/// One destination device and what it looks like after this cycle's assignments.
struct Destination<'a> {
    target: &'a TargetSnapshot,
    key: (u8, f64),
    /// Workloads it carries (before this cycle) plus those assigned to it this cycle.
    carried: usize,
    /// Its forecast spare watts less what was assigned to it this cycle (`None`: no forecast).
    spare: Option<f64>,
}

/// Whether a destination with `spare` forecast watts can take on `need` more (issue #28): a
/// target without a forecast is judged on its starvation alone, as before.
fn carries(spare: Option<f64>, need: f64) -> bool {
    spare.is_none_or(|s| s > 0.0 && s >= need)
}

/// Workloads by the index of their target in [`PlanInput::targets`]: how many each carries, and
/// the workloads themselves only on starved targets (the only ones whose workloads are walked).
/// Counting instead of listing everywhere keeps 100 000 workloads from growing 10 000 lists.
struct ByTarget<'a> {
    /// (kind, namespace for devices, name) → index: what a workload's `target` names.
    index: FastMap<(TargetKind, Option<&'a str>, &'a str), usize>,
    carried: Vec<usize>,
    listed: Vec<Vec<&'a WorkloadSnapshot>>,
    /// Every instance (one per device) of each selector-placed workload.
    selector_instances: FastMap<&'a WorkloadId, Vec<&'a WorkloadSnapshot>>,
}

impl<'a> ByTarget<'a> {
    fn new(input: &PlanInput<'a>, flags: &[Flags]) -> Self {
        let targets = input.targets;
        let mut by = Self {
            index: targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        (t.id.kind, t.id.namespace.as_deref(), t.id.name.as_str()),
                        i,
                    )
                })
                .collect(),
            carried: vec![0; targets.len()],
            listed: vec![Vec::new(); targets.len()],
            selector_instances: FastMap::default(),
        };
        // One pass over the workloads, fetching the names a few workloads ahead: at fleet scale
        // this loop waits on memory (each workload's names are their own allocations, scattered
        // over tens of MB), not on the CPU.
        let all = input.workloads;
        for (n, w) in all.iter().enumerate() {
            if let Some(next) = all.get(n + PREFETCH_AHEAD) {
                prefetch(next.target.as_deref().unwrap_or_default());
                prefetch(&next.id.namespace);
            }
            if let Placement::Selector { .. } = w.placement {
                by.selector_instances.entry(&w.id).or_default().push(w);
            }
            if let Some(i) = by.target_of(w) {
                by.carried[i] += 1;
                if flags[i].walked() {
                    by.listed[i].push(w);
                }
            }
        }
        by
    }

    /// The index of the target `w` runs on, if it is one of this cycle's targets.
    fn target_of(&self, w: &WorkloadSnapshot) -> Option<usize> {
        let target = w.target.as_deref()?;
        let key = match w.id.kind {
            WorkloadKind::Pod => (TargetKind::Node, None, target),
            WorkloadKind::EdgeWorkload => (
                TargetKind::EdgeDevice,
                Some(w.id.namespace.as_str()),
                target,
            ),
        };
        self.index.get(&key).copied()
    }
}

/// How many workloads ahead the index asks for the names it will hash: enough to cover a memory
/// access (≈ 100 ns) with the work on the workloads in between. Indexing 100 000 workloads went
/// from 24–33 ms to ≈ 8 ms (BENCHMARKS.md, planner). The 10 000-target loop showed no gain.
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

/// The moving part of a plan: limits left, destinations, workloads by target.
struct Cycle<'i, 'a> {
    input: &'i PlanInput<'a>,
    flags: &'i [Flags],
    by_target: ByTarget<'a>,
    budget_concurrent: u32,
    budget_hour: u32,
    /// Nodes whose taint is in place or placed this cycle.
    tainted_now: FastSet<&'a str>,
    /// Devices labelled this cycle: their opted-in selector workloads leave through the label.
    labelled_now: FastSet<&'a TargetId>,
    /// Owners with a workload moved this cycle: one per owner per cooldown.
    owners_now: FastSet<&'a str>,
    cooldown: chrono::Duration,
}

impl<'i, 'a> Cycle<'i, 'a> {
    fn new(input: &'i PlanInput<'a>, flags: &'i [Flags]) -> Self {
        let by_target = ByTarget::new(input, flags);
        let action = &input.spec.action;
        Self {
            input,
            flags,
            budget_concurrent: action
                .max_concurrent
                .saturating_sub(input.history.in_flight),
            budget_hour: action
                .max_per_hour
                .saturating_sub(input.history.moves_last_hour(input.now)),
            tainted_now: FastSet::default(),
            labelled_now: FastSet::default(),
            owners_now: FastSet::default(),
            by_target,
            cooldown: chrono::Duration::from_std(input.durations.cooldown)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    fn healthy(&self, i: usize) -> bool {
        let f = self.flags[i];
        unfit_with(&self.input.targets[i], f.known, f.starved_since.is_some()).is_none()
    }

    /// The other pods of `w`'s owner on starved target `source` (none without an owner).
    fn siblings(&self, w: &WorkloadSnapshot, source: usize) -> Vec<WorkloadId> {
        let Some(owner) = &w.owner else {
            return Vec::new();
        };
        self.workloads_on(source)
            .iter()
            .filter(|o| o.owner.as_ref() == Some(owner) && o.id != w.id)
            .map(|o| o.id.clone())
            .collect()
    }

    /// The workloads on target `i`, which must be starved with known data (others are only
    /// counted: [`ByTarget`]).
    fn workloads_on(&self, i: usize) -> &[&'a WorkloadSnapshot] {
        debug_assert!(self.flags[i].walked());
        &self.by_target.listed[i]
    }

    /// Node taints and device labels follow starvation of targets whose data is known. A
    /// starved node is tainted only while some healthy node (a destination for its pods) exists:
    /// the taint steers the scheduler there. With every node starved it would steer nowhere and
    /// only leave the pods that must start somewhere — a dark node's pods replaced by the node
    /// lifecycle, a Deployment the ladder restores — Pending on every node (issue #28:
    /// `simulate` on the winter site kept both critical pods Pending for 18 hours while the hub
    /// had half its 1.5 kWh, starved only until it recovered to 60 %).
    fn taints(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let taint_nodes = self.input.spec.action.taint_nodes;
        let targets = self.input.targets;
        let shelter =
            (0..targets.len()).any(|i| targets[i].id.kind == TargetKind::Node && self.healthy(i));
        for (i, t) in targets.iter().enumerate() {
            let f = self.flags[i];
            if !f.known {
                continue;
            }
            let starved = f.starved_since.is_some();
            let want = starved && taint_nodes && (shelter || t.id.kind != TargetKind::Node);
            match t.id.kind {
                TargetKind::Node => {
                    if want && !t.tainted {
                        actions.push(Action::Taint {
                            node: t.id.name.clone(),
                        });
                    } else if !want && t.tainted && t.taint_ours {
                        actions.push(Action::Untaint {
                            node: t.id.name.clone(),
                        });
                    }
                    if want || t.tainted {
                        self.tainted_now.insert(t.id.name.as_str());
                    }
                }
                TargetKind::EdgeDevice => {
                    if want && !t.tainted {
                        if let Some(leaving) = self.label_leavers(i) {
                            self.labelled_now.insert(&t.id);
                            actions.push(Action::LabelDevice {
                                device: t.id.clone(),
                                leaving,
                            });
                        }
                    } else if !starved && t.tainted && t.taint_ours {
                        actions.push(Action::UnlabelDevice {
                            device: t.id.clone(),
                        });
                    }
                }
            }
        }
        actions
    }

    /// The opted-in selector-placed workloads that would leave device `t` if it were labelled,
    /// when that is safe: each runs (Running) on another healthy device, and the hourly budget
    /// covers them all. `None`: not now.
    fn label_leavers(&mut self, i: usize) -> Option<Vec<WorkloadId>> {
        let t = &self.input.targets[i];
        let leaving: Vec<&WorkloadSnapshot> = self
            .workloads_on(i)
            .iter()
            .copied()
            .filter(|w| w.placement == Placement::Selector { opted_in: true })
            .filter(|w| !w.pinned && w.ineligible.is_none())
            .collect();
        if leaving.is_empty() {
            return Some(Vec::new());
        }
        let runs_elsewhere = |w: &WorkloadSnapshot| {
            self.by_target
                .selector_instances
                .get(&w.id)
                .into_iter()
                .flatten()
                .any(|o| {
                    o.running
                        && o.target.as_deref() != Some(t.id.name.as_str())
                        && self.by_target.target_of(o).is_some_and(|d| self.healthy(d))
                })
        };
        if leaving.iter().all(|w| runs_elsewhere(w))
            && leaving.len() as u32 <= self.budget_hour
            && leaving
                .iter()
                .all(|w| !self.input.history.cooling(w, self.input.now, self.cooldown))
        {
            self.budget_hour -= leaving.len() as u32;
            return Some(leaving.iter().map(|w| w.id.clone()).collect());
        }
        None
    }

    /// Moves off starved targets with known data, oldest starvation first, then by id.
    fn moves(&mut self, skipped: &mut Vec<Skipped>) -> Vec<Action> {
        let targets = self.input.targets;
        let mut sources: Vec<(usize, Time)> = self
            .flags
            .iter()
            .enumerate()
            .filter(|(_, f)| f.known)
            .filter_map(|(i, f)| f.starved_since.map(|since| (i, since)))
            .collect();
        if sources.is_empty() {
            return Vec::new();
        }
        sources.sort_by(|a, b| {
            a.1.cmp(&b.1)
                .then_with(|| targets[a.0].id.cmp(&targets[b.0].id))
        });
        let mut nodes: Vec<(&TargetSnapshot, Option<f64>)> = (0..targets.len())
            .filter(|i| targets[*i].id.kind == TargetKind::Node && self.healthy(*i))
            .map(|i| (&targets[i], targets[i].signals.runway_spare_watts))
            .collect();
        let mut devices: Vec<Destination<'a>> = (0..targets.len())
            .filter(|i| targets[*i].id.kind == TargetKind::EdgeDevice && self.healthy(*i))
            .filter_map(|i| {
                let t = &targets[i];
                headroom(t).map(|key| Destination {
                    target: t,
                    key,
                    carried: self.by_target.carried[i],
                    spare: t.signals.runway_spare_watts,
                })
            })
            .collect();
        // `rank` is a total order (ids are unique), so an unstable sort gives the same list.
        devices.sort_unstable_by(rank);

        let mut actions = Vec::new();
        for (i, _) in sources {
            let source = &targets[i];
            let mut list: Vec<&'a WorkloadSnapshot> = self.workloads_on(i).to_vec();
            list.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            let per_workload_watts = source
                .signals
                .watts
                .or(source.signals.battery_draw_watts)
                .map(|w| w / list.len().max(1) as f64);
            for w in list {
                let reason = match self.verdict(w, source) {
                    Verdict::Skip(r) => r,
                    Verdict::Leaves => continue,
                    Verdict::Go => {
                        match self.destination(w, i, &mut nodes, &mut devices, per_workload_watts) {
                            Some(a) => {
                                self.budget_concurrent -= 1;
                                self.budget_hour -= 1;
                                if let Some(o) = &w.owner {
                                    self.owners_now.insert(o);
                                }
                                actions.push(a);
                                continue;
                            }
                            None => SkipReason::NoTarget,
                        }
                    }
                };
                skipped.push(Skipped {
                    workload: w.id.clone(),
                    reason,
                });
            }
        }
        actions
    }

    /// Whether `w` on starved `source` may be moved this cycle (before looking for a
    /// destination). Only a selector-placed EdgeWorkload sits on several devices, and it returns
    /// before any limit is spent; every other workload is on one target, so it is seen once.
    fn verdict(&self, w: &'a WorkloadSnapshot, source: &TargetSnapshot) -> Verdict {
        let now = self.input.now;
        let action = &self.input.spec.action;
        let skip = |r| Verdict::Skip(r);
        if w.pinned {
            return skip(SkipReason::Pinned);
        }
        if let Some(why) = &w.ineligible {
            return skip(SkipReason::Ineligible(why.clone()));
        }
        if let Placement::Selector { .. } = w.placement {
            // Opted in (the others are ineligible): it leaves through the device label, which
            // is only placed while another instance runs elsewhere.
            return if self.labelled_now.contains(&source.id) || source.tainted {
                Verdict::Leaves
            } else {
                skip(SkipReason::NoOtherInstance)
            };
        }
        if w.in_flight {
            return skip(SkipReason::InFlight);
        }
        if self.input.history.cooling(w, now, self.cooldown)
            || w.owner
                .as_deref()
                .is_some_and(|o| self.owners_now.contains(o))
        {
            return skip(SkipReason::Cooldown);
        }
        if w.pdb_blocked {
            return skip(SkipReason::DisruptionBudget);
        }
        if w.id.kind == WorkloadKind::Pod {
            if w.tolerates_starvation {
                return skip(SkipReason::ToleratesTaint);
            }
            if !self.tainted_now.contains(source.id.name.as_str()) {
                return skip(SkipReason::TaintNotInPlace);
            }
        }
        if w.id.kind == WorkloadKind::EdgeWorkload
            && action.strategy == edgewatt_crds::Strategy::MakeBeforeBreak
        {
            if let Some(why) = &w.host_bound {
                return skip(SkipReason::Refused(format!(
                    "{why}: the copy and the workload cannot run on one device at once; set strategy Recreate to move it with a restart"
                )));
            }
        }
        if self.budget_concurrent == 0 {
            return skip(SkipReason::MaxConcurrent);
        }
        if self.budget_hour == 0
            || w.owner.as_ref().is_some_and(|o| {
                self.input.history.owner_moves_last_hour(o, now) >= action.max_per_hour
            })
        {
            return skip(SkipReason::MaxPerHour);
        }
        Verdict::Go
    }

    /// Where `w` goes: for a pod, whether some healthy node accepts it (the scheduler places
    /// it); for an EdgeWorkload, the best device, whose headroom the assignment then lowers.
    /// A destination with a forecast must also carry the workload's draw (its own, else the
    /// source's share) until its recharge, and that draw is taken off its spare for the rest of
    /// the cycle.
    fn destination(
        &self,
        w: &WorkloadSnapshot,
        from: usize,
        nodes: &mut [(&TargetSnapshot, Option<f64>)],
        devices: &mut [Destination<'a>],
        per_workload_watts: Option<f64>,
    ) -> Option<Action> {
        let source = &self.input.targets[from];
        let need = w
            .ladder
            .watts
            .or(per_workload_watts)
            .filter(|x| x.is_finite())
            .unwrap_or(0.0)
            .max(0.0);
        match w.id.kind {
            WorkloadKind::Pod => {
                let (_, spare) = nodes.iter_mut().find(|(n, spare)| {
                    n.id != source.id
                        && carries(*spare, need)
                        && w.constraints.accepts(&n.labels, &n.taints)
                })?;
                *spare = spare.map(|s| s - need);
                Some(Action::Evict {
                    pod: w.id.clone(),
                    node: source.id.name.clone(),
                    owner: w.owner.clone(),
                    siblings: self.siblings(w, from),
                })
            }
            WorkloadKind::EdgeWorkload => {
                // Cheapest test first: most devices of a large fleet are in another namespace.
                let i = devices.iter().position(|d| {
                    d.target.id.namespace.as_deref() == Some(w.id.namespace.as_str())
                        && !std::ptr::eq(d.target, source)
                        && carries(d.spare, need)
                        && w.constraints.accepts(&d.target.labels, &d.target.taints)
                })?;
                let d = &mut devices[i];
                d.spare = d.spare.map(|s| s - need);
                let to = d.target.id.name.clone();
                d.key = after_assignment(d.key, d.carried, per_workload_watts);
                d.carried += 1;
                // Its headroom only shrank: it moves back among the next few. Rotating that
                // range, not removing and inserting, keeps the 10 000-entry list from shifting
                // twice per move.
                let rest = &devices[i + 1..];
                let at = i + rest.partition_point(|x| rank(x, &devices[i]).is_lt());
                devices[i..=at].rotate_left(1);
                Some(Action::MigrateEdgeWorkload {
                    workload: w.id.clone(),
                    from: source.id.name.clone(),
                    to,
                })
            }
        }
    }
}

/// What to do with one workload on a starved target.
enum Verdict {
    Skip(SkipReason),
    /// Leaves through its device's starvation label (selector-placed, opted in).
    Leaves,
    Go,
}

/// Best destination first: headroom class, then value, then name and namespace.
fn rank(a: &Destination<'_>, b: &Destination<'_>) -> std::cmp::Ordering {
    b.key
        .0
        .cmp(&a.key.0)
        .then(b.key.1.total_cmp(&a.key.1))
        .then_with(|| a.target.id.name.cmp(&b.target.id.name))
        .then_with(|| a.target.id.namespace.cmp(&b.target.id.namespace))
}

/// A destination's headroom key after one more workload: watts headroom loses the workload's
/// expected draw (the source's draw shared by its workloads, at least 1 W); a battery's charge
/// is shared by one more workload (`ratio × n/(n+1)` for `n` carried).
fn after_assignment(key: (u8, f64), carried: usize, watts: Option<f64>) -> (u8, f64) {
    let (class, value) = key;
    if class == 0 {
        (class, value - watts.unwrap_or(1.0).max(1.0))
    } else {
        let n = (carried + 1) as f64;
        (class, value * n / (n + 1.0))
    }
}

#[cfg(test)]
mod tests;
