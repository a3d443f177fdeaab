//! The headroom model and the extender's decisions, with no I/O: given a [`HeadroomTable`] (or
//! none), the Node informer's view, the candidate nodes and the pod, decide which nodes fit and
//! how they rank.
//!
//! Kept pure so every rule (budget sources, battery, starvation, exemptions, fail-open) is tested
//! with plain fixtures and the request path never waits on anything.
//!
//! ## Rules
//! - exempt pods ([`crate::exempt`]) pass every node with [`NEUTRAL_SCORE`];
//! - budget, in the controller's order: the Node's `edgewatt.io/power-budget-watts` annotation
//!   (from the request's Node objects, else the extender's Node informer), else the node's
//!   `PowerBudget` signal, else `--default-power-budget-watts`;
//! - draw: the node's `NodeWatts` signal; headroom = budget − draw − the pod's expected draw;
//! - filter rejects (as `FailedAndUnresolvableNodes`) starved nodes (taint
//!   `edgewatt.io/energy-starved`, or the controller's enforced starvation series), nodes on
//!   battery below the ratio or runtime threshold, and nodes whose headroom is below
//!   `minHeadroomWatts`;
//! - prioritize scores the share of the budget left, 0..=10 (absolute: 60 % free is 6 whatever
//!   the other candidates), capped by the battery charge on battery; a node without fresh data
//!   scores per [`Unmeasured`], never above a measured node with half its budget free;
//! - when the whole table is missing, empty or older than `--max-data-age`, every node passes and
//!   every score is [`NEUTRAL_SCORE`] (fail open): a broken monitoring stack must not stop
//!   scheduling, and unlike Trimaran or Telemetry Aware Scheduling we never act on a value whose
//!   sample is older than the limit.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use edgewatt_crds::{
    budget_annotation, keys,
    prom::{Reading, SignalTable},
    promql::Signal,
};
use k8s_openapi::api::core::v1::Pod;

use crate::{
    exempt::{self, Exemption},
    node_table::{signal_index, NodeState, NodeTable, SIGNALS},
    nodes::{self, NodeView, ViewState},
    protocol::{
        ExtenderArgs, ExtenderFilterResult, HostPriority, Node, MAX_EXTENDER_PRIORITY,
        NEUTRAL_SCORE,
    },
};

/// Below this discharge rate a battery's runtime is treated as unbounded noise, not a division by
/// ~zero.
const MIN_BATTERY_DRAW_WATTS: f64 = 0.1;

/// Namespace and owner name: the key under which pods of one workload share a draw estimate.
pub type OwnerKey = (String, String);

/// Everything a decision needs, built by the refresher once per interval.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadroomTable {
    /// When the queries ran; sample ages grow from here.
    pub fetched_at: SystemTime,
    pub nodes: NodeTable,
    /// Average watts per pod of each owner over the last hour.
    pub owner_draw: HashMap<OwnerKey, f64>,
    /// Age (at `fetched_at`) of the newest `NodeWatts` sample of any node; `None` = no data.
    newest_age_secs: Option<f64>,
    /// The Node view generation whose facts `nodes` carry; `None` = not joined.
    facts_generation: Option<u64>,
}

impl HeadroomTable {
    /// Builds the table from one refresh: the batched signals, the nodes the controller reports
    /// starved, and `(namespace, pod, watts)` averages, grouped here by owner (mean per pod).
    pub fn new(
        signals: SignalTable,
        starved: HashSet<String>,
        pod_watts: impl IntoIterator<Item = (String, String, f64)>,
    ) -> Self {
        let fetched_at = signals.fetched_at.unwrap_or_else(SystemTime::now);
        let mut nodes: NodeTable = signals
            .readings
            .into_iter()
            .map(|(name, by_signal)| {
                let mut readings: [Option<Reading>; SIGNALS.len()] = Default::default();
                for (signal, r) in by_signal {
                    readings[signal_index(signal)] = Some(r);
                }
                (
                    name,
                    NodeState {
                        readings,
                        starved: false,
                        facts: None,
                    },
                )
            })
            .collect();
        for name in starved {
            nodes.entry(&name).starved = true;
        }
        let mut sums: HashMap<OwnerKey, (f64, u32)> = HashMap::new();
        for (ns, pod, watts) in pod_watts {
            if !watts.is_finite() || watts < 0.0 {
                continue;
            }
            let e = sums
                .entry((ns, owner_from_pod_name(&pod).to_string()))
                .or_default();
            e.0 += watts;
            e.1 += 1;
        }
        let owner_draw = sums
            .into_iter()
            .map(|(k, (sum, n))| (k, sum / f64::from(n)))
            .collect();
        let newest_age_secs = nodes
            .values()
            .filter_map(|n| n.readings[signal_index(Signal::NodeWatts)].as_ref())
            .filter(|r| r.value.is_finite())
            .filter_map(|r| r.age_secs)
            .reduce(f64::min);
        Self {
            fetched_at,
            nodes,
            owner_draw,
            newest_age_secs,
            facts_generation: None,
        }
    }

    /// Copies the Node view's facts into the table's nodes, so that a decision looks a
    /// measured node up once, not in both maps (the second lookup was 17 % of a 5 000-name
    /// prioritize). Valid while the view's generation is unchanged; `annotated` checks.
    pub fn join(&mut self, view: &NodeView) {
        for (name, state) in self.nodes.iter_mut() {
            state.facts = view.get(name).copied();
        }
        self.facts_generation = Some(view.generation());
    }

    /// Age at `now` of the newest node draw sample: how old the freshest thing we know is.
    pub fn data_age(&self, now: SystemTime) -> Option<Duration> {
        let elapsed = now
            .duration_since(self.fetched_at)
            .unwrap_or_default()
            .as_secs_f64();
        self.newest_age_secs
            .map(|a| Duration::from_secs_f64((a + elapsed).max(0.0)))
    }

    /// The expected draw of `pod`: its owner's per-pod average, 0 when the owner has no history.
    pub fn pod_expected_draw(&self, pod: &Pod) -> f64 {
        owner_key_of_pod(pod)
            .and_then(|k| self.owner_draw.get(&k).copied())
            .unwrap_or(0.0)
    }
}

/// What the extender does with a node it has no fresh power data for (`--unmeasured-nodes`).
///
/// Whatever the choice, such a node never ranks above a measured node with half its budget
/// free (score ≥ 5): an exporter that died must not attract pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Unmeasured {
    /// Score 3, as if 30 % of its budget were free: below any comfortable measured node, above
    /// measured nodes close to their limit.
    #[default]
    Cautious,
    /// Score 5, the middle: ties with a measured node at half its budget.
    Neutral,
    /// Score 0: every measured node that fits ranks first.
    Last,
}

impl Unmeasured {
    pub fn score(self) -> i64 {
        match self {
            Unmeasured::Cautious => 3,
            Unmeasured::Neutral => NEUTRAL_SCORE,
            Unmeasured::Last => 0,
        }
    }
}

/// Thresholds, from the command line (the EnergyPolicy `scheduling` block's fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub default_budget_watts: Option<f64>,
    pub min_headroom_watts: f64,
    /// Nodes on battery below this charge ratio (0..1) are rejected.
    pub min_battery_ratio: f64,
    /// Nodes on battery whose runtime (with the pod) is below this are rejected; zero disables.
    pub min_battery_runtime: Duration,
    /// Samples older than this are ignored; a table with nothing newer fails open.
    pub max_data_age: Duration,
    /// The score of nodes without fresh power data.
    pub unmeasured: Unmeasured,
    /// Pods at or above this priority are never filtered (see [`crate::exempt`]).
    pub exempt_priority: i32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_budget_watts: None,
            min_headroom_watts: 5.0,
            min_battery_ratio: 0.2,
            min_battery_runtime: Duration::from_secs(15 * 60),
            max_data_age: Duration::from_secs(120),
            unmeasured: Unmeasured::default(),
            exempt_priority: exempt::SYSTEM_CLUSTER_CRITICAL,
        }
    }
}

/// Why the extender is answering neutrally for every node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailOpen {
    /// No refresh has succeeded yet.
    NoTable,
    /// Prometheus answered but had no node draw at all.
    NoData,
    /// The newest sample is older than `--max-data-age`.
    Stale { age_secs: f64 },
}

impl std::fmt::Display for FailOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailOpen::NoTable => f.write_str("no successful Prometheus refresh yet"),
            FailOpen::NoData => f.write_str("Prometheus has no node draw data"),
            FailOpen::Stale { age_secs } => write!(f, "newest node data is {age_secs:.0}s old"),
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Per node, from the table.
    Decided,
    /// Every node passes with [`NEUTRAL_SCORE`]: no usable data.
    FailOpen(FailOpen),
    /// Every node passes with [`NEUTRAL_SCORE`]: the pod is never filtered.
    Exempt(Exemption),
}

/// Whether decisions can use the table at all.
pub fn mode(
    table: Option<&HeadroomTable>,
    policy: &Policy,
    now: SystemTime,
) -> Result<(), FailOpen> {
    let table = table.ok_or(FailOpen::NoTable)?;
    let age = table.data_age(now).ok_or(FailOpen::NoData)?;
    if age > policy.max_data_age {
        return Err(FailOpen::Stale {
            age_secs: age.as_secs_f64(),
        });
    }
    Ok(())
}

/// One node's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Fits; `share` (0..1) is what is left of its budget after the pod, capped by the battery
    /// charge when the node runs on battery.
    Fits { share: f64 },
    /// No fresh budget and draw (nor battery): passes, scored by [`Unmeasured`].
    Unknown,
    /// Filtered out, with the reason shown in the pod's events.
    Rejected { reason: String },
}

/// Everything one request is decided against.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The latest Prometheus table, if any.
    pub table: Option<&'a HeadroomTable>,
    /// The Node informer's budgets and taints.
    pub nodes: &'a NodeView,
    pub policy: &'a Policy,
    pub now: SystemTime,
}

/// What the Node objects say about a node: from the request's Node object when the scheduler
/// sent one, else from the watcher. The budget is `Err(())` while the watcher has not listed the
/// nodes yet (then nothing is known: an annotation could override any other budget).
struct Annotated {
    budget: Result<Option<f64>, ()>,
    starved_taint: bool,
}

/// This runs for each of thousands of candidates: a measured node's facts come from its table
/// entry (`state`) while the table is joined with the view's current generation; only other
/// nodes cost a lookup in the view.
fn annotated(
    view: &NodeView,
    table: &HeadroomTable,
    state: Option<&NodeState>,
    name: &str,
    node: Option<&Node>,
) -> Annotated {
    if let Some(n) = node {
        return Annotated {
            budget: Ok(n.metadata.annotations.as_ref().and_then(budget_annotation)),
            starved_taint: nodes::starved_taint(n.spec.as_ref()),
        };
    }
    let joined = table.facts_generation == Some(view.generation());
    let facts = match (view.state, state) {
        (ViewState::Disabled, _) => None,
        (_, Some(s)) if joined => s.facts.as_ref(),
        _ => view.get(name),
    };
    Annotated {
        budget: match view.state {
            ViewState::Syncing => Err(()),
            ViewState::Disabled | ViewState::Synced => Ok(facts.and_then(|f| f.budget_watts)),
        },
        starved_taint: facts.is_some_and(|f| f.starved_taint),
    }
}

/// Decides one node. `node` is the Node object when the scheduler sent one (annotation, taint).
/// `state`: the table's entry for it, if any.
pub fn judge(
    inputs: &Inputs,
    table: &HeadroomTable,
    name: &str,
    state: Option<&NodeState>,
    node: Option<&Node>,
    pod_draw: f64,
) -> Verdict {
    let policy = inputs.policy;
    let annotated = annotated(inputs.nodes, table, state, name, node);
    if annotated.starved_taint {
        return Verdict::Rejected {
            reason: format!("node is energy-starved (taint {})", keys::STARVED_TAINT),
        };
    }
    if state.is_some_and(|s| s.starved) {
        return Verdict::Rejected {
            reason: "node is energy-starved (edgewatt controller, mode Migrate)".to_string(),
        };
    }
    let elapsed = inputs
        .now
        .duration_since(table.fetched_at)
        .unwrap_or_default()
        .as_secs_f64();
    let fresh = |signal: Signal| -> Option<f64> {
        let r = state?.readings[signal_index(signal)].as_ref()?;
        Reading {
            value: r.value,
            age_secs: r.age_secs.map(|a| a + elapsed),
        }
        .fresh(policy.max_data_age)
    };
    let draw = fresh(Signal::NodeWatts);

    // Battery: only when we know the charge and the node is not on mains.
    let mut battery_share = None;
    if let Some(ratio) = fresh(Signal::BatteryRatio) {
        if fresh(Signal::ExternalPower) != Some(1.0) {
            if ratio < policy.min_battery_ratio {
                return Verdict::Rejected {
                    reason: format!(
                        "on battery at {:.0}% (< {:.0}%)",
                        ratio * 100.0,
                        policy.min_battery_ratio * 100.0
                    ),
                };
            }
            if let (Some(energy), false) = (
                fresh(Signal::BatteryEnergy),
                policy.min_battery_runtime.is_zero(),
            ) {
                let battery_draw = fresh(Signal::BatteryDraw).or(draw).unwrap_or(0.0) + pod_draw;
                let runtime = energy / battery_draw.max(MIN_BATTERY_DRAW_WATTS);
                if runtime < policy.min_battery_runtime.as_secs_f64() {
                    return Verdict::Rejected {
                        reason: format!(
                            "on battery with {:.0} min left at {battery_draw:.1} W (< {:.0} min)",
                            runtime / 60.0,
                            policy.min_battery_runtime.as_secs_f64() / 60.0
                        ),
                    };
                }
            }
            battery_share = Some(ratio.clamp(0.0, 1.0));
        }
    }

    // The controller's precedence (controller/src/snapshot.rs): annotation, budget metric, default.
    let budget = match annotated.budget {
        Ok(annotated) => annotated
            .or_else(|| fresh(Signal::PowerBudget))
            .or(policy.default_budget_watts),
        Err(()) => None,
    };
    let power_share = match (budget, draw) {
        (Some(budget), Some(draw)) => {
            let headroom = budget - draw - pod_draw;
            if headroom < policy.min_headroom_watts {
                return Verdict::Rejected {
                    reason: format!(
                        "power headroom {headroom:.1} W < {:.1} W (budget {budget:.1} W, draw {draw:.1} W, pod {pod_draw:.1} W)",
                        policy.min_headroom_watts
                    ),
                };
            }
            Some(if budget > 0.0 { headroom / budget } else { 0.0 })
        }
        _ => None,
    };
    match (power_share, battery_share) {
        (Some(p), Some(b)) => Verdict::Fits { share: p.min(b) },
        (Some(s), None) | (None, Some(s)) => Verdict::Fits { share: s },
        (None, None) => Verdict::Unknown,
    }
}

/// The 0..=10 score of a share of the budget left: absolute, so one roomy node cannot flatten
/// the others. Not finite (never expected) scores 0.
pub fn share_score(share: f64) -> i64 {
    if !share.is_finite() {
        return 0;
    }
    let s = (share.clamp(0.0, 1.0) * MAX_EXTENDER_PRIORITY as f64).round() as i64;
    s.clamp(0, MAX_EXTENDER_PRIORITY)
}

/// The score of one verdict.
pub fn score(verdict: &Verdict, policy: &Policy) -> i64 {
    match verdict {
        Verdict::Fits { share } => share_score(*share),
        Verdict::Unknown => policy.unmeasured.score(),
        Verdict::Rejected { .. } => 0,
    }
}

/// Verdicts for every candidate of a request, or why they are not needed. Candidate order is
/// kept.
pub fn judge_all<'a>(
    inputs: &Inputs,
    args: &'a ExtenderArgs,
) -> Result<Vec<(&'a str, Verdict)>, Outcome> {
    if let Some(e) = exempt::exemption(&args.pod, inputs.policy.exempt_priority) {
        return Err(Outcome::Exempt(e));
    }
    mode(inputs.table, inputs.policy, inputs.now).map_err(Outcome::FailOpen)?;
    let table = inputs.table.expect("mode() checked the table exists");
    let pod_draw = table.pod_expected_draw(&args.pod);
    let objects: HashMap<&str, &Node> = args
        .nodes
        .iter()
        .flat_map(|l| l.items.iter())
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    // Every candidate's place in the table first (small, dense arrays), then the decisions, with
    // the states fetched a few candidates ahead (see `node_table`).
    let names = args.candidate_names();
    let found: Vec<Option<usize>> = names.iter().map(|n| table.nodes.find(n)).collect();
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(k, name)| {
            if let Some(Some(ahead)) = found.get(k + PREFETCH_AHEAD) {
                table.nodes.prefetch(*ahead);
            }
            let state = found[k].map(|i| table.nodes.state(i));
            let v = judge(
                inputs,
                table,
                name,
                state,
                objects.get(name).copied(),
                pod_draw,
            );
            (name, v)
        })
        .collect())
}

/// How many candidates ahead `judge_all` asks for a node's state: enough to cover a memory access
/// with the decisions in between.
const PREFETCH_AHEAD: usize = 8;

/// The filter reply, in the request's form (names, objects or both), and how it was decided.
/// Only names from the request are ever returned. Power rejections are
/// `FailedAndUnresolvableNodes`: preemption frees no power (its dry run runs the filter plugins,
/// not extenders — `schedule_one.go` `findNodesThatPassExtenders`, upstream
/// `ExtenderFilterResult`), so a resolvable rejection would only let it evict pods for nothing.
pub fn filter(inputs: &Inputs, args: ExtenderArgs) -> (ExtenderFilterResult, Outcome) {
    let (rejected, outcome) = match judge_all(inputs, &args) {
        Ok(verdicts) => (
            verdicts
                .into_iter()
                .filter_map(|(name, v)| match v {
                    Verdict::Rejected { reason } => Some((name.to_string(), reason)),
                    _ => None,
                })
                .collect::<HashMap<String, String>>(),
            Outcome::Decided,
        ),
        Err(o) => (HashMap::new(), o),
    };
    let passes = |name: &str| !rejected.contains_key(name);
    let node_names = args.node_names.map(|names| {
        names
            .iter()
            .filter(|n| passes(n))
            .map(str::to_string)
            .collect()
    });
    let nodes = args.nodes.map(|mut list| {
        list.items
            .retain(|n| passes(n.metadata.name.as_deref().unwrap_or_default()));
        list
    });
    let result = ExtenderFilterResult {
        nodes,
        node_names,
        failed_and_unresolvable_nodes: rejected.into_iter().collect(),
        ..Default::default()
    };
    (result, outcome)
}

/// Prioritize scores on an absolute scale: the share of each node's budget left after the pod
/// (capped by its battery charge on battery), 0..=10; nodes without data per [`Unmeasured`];
/// rejected nodes 0; every node [`NEUTRAL_SCORE`] when failing open or for an exempt pod.
pub fn prioritize<'a>(
    inputs: &Inputs,
    args: &'a ExtenderArgs,
) -> (Vec<HostPriority<&'a str>>, Outcome) {
    let verdicts = match judge_all(inputs, args) {
        Ok(v) => v,
        Err(o) => {
            let all = args
                .candidate_names()
                .into_iter()
                .map(|host| HostPriority {
                    host,
                    score: NEUTRAL_SCORE,
                })
                .collect();
            return (all, o);
        }
    };
    let scores = verdicts
        .into_iter()
        .map(|(host, v)| HostPriority {
            host,
            score: score(&v, inputs.policy),
        })
        .collect();
    (scores, Outcome::Decided)
}

/// The owner key of the pod being scheduled, from its controller ownerReference.
///
/// Heuristic, kept consistent with [`owner_from_pod_name`] (used for pods in Prometheus, which
/// only carry the pod name): a ReplicaSet owner loses its pod-template-hash suffix (so all
/// ReplicaSets of a Deployment share history); other controllers (StatefulSet, DaemonSet, Job)
/// are used as named; a pod without a controller falls back to its own name's heuristic.
pub fn owner_key_of_pod(pod: &Pod) -> Option<OwnerKey> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let controller = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let owner = match controller {
        Some(o) if o.kind == "ReplicaSet" => strip_segment(&o.name, is_template_hash),
        Some(o) => o.name.as_str(),
        None => owner_from_pod_name(pod.metadata.name.as_deref()?),
    };
    Some((ns, owner.to_string()))
}

/// Maps a pod name to its owner's name:
/// - `web-7d4b9c8f6-x2k9p` (Deployment) → `web`: drop the 5-character random suffix, then the
///   pod-template hash;
/// - `agent-x2k9p` (DaemonSet, Job) → `agent`;
/// - `db-0` (StatefulSet ordinal) → `db`;
/// - anything else is its own owner.
///
/// Random suffixes and hashes use Kubernetes' "safe" alphabet (no vowels, no 0/1/3), so ordinary
/// words are rarely mistaken for one. A CronJob's pods key on the Job (`backup-28941234`), so each
/// run starts without history.
pub fn owner_from_pod_name(name: &str) -> &str {
    let stripped = strip_segment(name, is_random_suffix);
    if stripped.len() != name.len() {
        return strip_segment(stripped, is_template_hash);
    }
    strip_segment(name, |s| s.bytes().all(|b| b.is_ascii_digit()))
}

/// `name` without its last `-segment` when `matches(segment)`; never returns an empty name.
fn strip_segment(name: &str, matches: impl Fn(&str) -> bool) -> &str {
    match name.rsplit_once('-') {
        Some((head, tail)) if !head.is_empty() && !tail.is_empty() && matches(tail) => head,
        _ => name,
    }
}

/// Kubernetes' `rand.String` / `SafeEncodeString` alphabet.
fn is_safe(b: u8) -> bool {
    b"bcdfghjklmnpqrstvwxz2456789".contains(&b)
}

fn is_random_suffix(s: &str) -> bool {
    s.len() == 5 && s.bytes().all(is_safe)
}

fn is_template_hash(s: &str) -> bool {
    (6..=10).contains(&s.len()) && s.bytes().all(is_safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_map_to_owners() {
        assert_eq!(owner_from_pod_name("web-7d4b9c8f6-x2k9p"), "web");
        assert_eq!(owner_from_pod_name("my-web-7d4b9c8f6-x2k9p"), "my-web");
        assert_eq!(owner_from_pod_name("agent-x2k9p"), "agent");
        assert_eq!(owner_from_pod_name("db-0"), "db");
        assert_eq!(owner_from_pod_name("db-12"), "db");
        assert_eq!(owner_from_pod_name("nginx"), "nginx");
        assert_eq!(owner_from_pod_name("test-pod"), "test-pod");
        assert_eq!(owner_from_pod_name("-x2k9p"), "-x2k9p");
        assert_eq!(
            owner_from_pod_name("backup-28941234-x2k9p"),
            "backup-28941234"
        );
        assert_eq!(strip_segment("web-7d4b9c8f6", is_template_hash), "web");
        assert_eq!(
            strip_segment("web-frontend", is_template_hash),
            "web-frontend"
        );
    }
}
