//! The adapter from Kubernetes objects and Prometheus readings to planner inputs.
//!
//! Pure (no I/O) so the mapping rules — which pods may never be evicted, how a device's liveness
//! and budget are derived, how stale readings become "unknown" — are unit-tested without a cluster.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use edgewatt_crds::{
    budget_annotation, flotta::WORKLOAD_LABEL_PREFIX, keys, prom::SignalTable, promql::Signal,
    Criticality, DegradedKind, EdgeDevice, EdgeWorkload, EnergyPolicySpec, WorkloadKind,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::planner::{
    Constraints, LabelOp, LabelRequirement, LadderFacts, Placement, Selector, SuspendUnit,
    TaintSpec, TargetId, TargetSignals, TargetSnapshot, TolerationSpec, WorkloadId,
    WorkloadSnapshot,
};
/// Re-exported: the readings this adapter maps (they live with the code that reads them).
pub use crate::signals::{PromData, WorkloadWatts};

/// Label put on the temporary copy of an EdgeWorkload during a make-before-break move; its value
/// is the original's name. Copies are never moved themselves.
pub const COPY_OF_LABEL: &str = "edgewatt.io/migration-copy-of";

/// Freshness windows: older readings count as unknown.
#[derive(Debug, Clone, Copy)]
pub struct MaxAge {
    pub node: Duration,
    pub device: Duration,
}

/// Converts a Kubernetes `LabelSelector` (a Flotta workload's `deviceSelector`) to the planner's.
pub fn selector(sel: &LabelSelector) -> Selector {
    Selector {
        match_labels: sel.match_labels.clone().unwrap_or_default(),
        match_expressions: sel
            .match_expressions
            .iter()
            .flatten()
            .map(|e| LabelRequirement {
                key: e.key.clone(),
                op: op(&e.operator),
                values: e.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Converts one of the policy's selectors (operators checked at admission) to the planner's.
pub fn policy_selector(sel: &edgewatt_crds::Selector) -> Selector {
    use edgewatt_crds::SelectorOperator as O;
    Selector {
        match_labels: sel.match_labels.clone().unwrap_or_default(),
        match_expressions: sel
            .match_expressions
            .iter()
            .flatten()
            .map(|e| LabelRequirement {
                key: e.key.clone(),
                op: match e.operator {
                    O::In => LabelOp::In,
                    O::NotIn => LabelOp::NotIn,
                    O::Exists => LabelOp::Exists,
                    O::DoesNotExist => LabelOp::DoesNotExist,
                },
                values: e.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// A selector operator as Kubernetes spells it. Anything else matches nothing: a selector
/// that cannot be read must not select (the old reading, `In`, could select what `NotIn` meant
/// to exclude). Label selectors know the first four, node selectors also `Gt` and `Lt`.
fn op(s: &str) -> LabelOp {
    match s {
        "In" => LabelOp::In,
        "NotIn" => LabelOp::NotIn,
        "Exists" => LabelOp::Exists,
        "DoesNotExist" => LabelOp::DoesNotExist,
        "Gt" => LabelOp::Gt,
        "Lt" => LabelOp::Lt,
        _ => LabelOp::Invalid,
    }
}

fn matches(sel: Option<&edgewatt_crds::Selector>, labels: &BTreeMap<String, String>) -> bool {
    sel.is_none_or(|s| policy_selector(s).matches(labels))
}

/// Whether a policy's starvation taint/label on an object is this policy's to remove: the
/// annotation names it, or names no one (set by an edgewatt that did not record it).
fn starved_by_us(annotations: &BTreeMap<String, String>, policy: &str) -> bool {
    annotations
        .get(keys::STARVED_BY)
        .is_none_or(|by| by.is_empty() || by == policy)
}

fn signals(
    table: &SignalTable,
    name: &str,
    max_age: Duration,
    budget_annotation: Option<f64>,
    default_budget: Option<f64>,
    custom: Option<f64>,
) -> TargetSignals {
    let get = |s: Signal| table.get(name, s).and_then(|r| r.fresh(max_age));
    TargetSignals {
        battery_ratio: get(Signal::BatteryRatio),
        battery_energy_joules: get(Signal::BatteryEnergy),
        battery_draw_watts: get(Signal::BatteryDraw),
        watts: get(Signal::NodeWatts),
        budget_watts: budget_annotation
            .or_else(|| get(Signal::PowerBudget))
            .or(default_budget),
        external_power: get(Signal::ExternalPower).map(|v| v >= 0.5),
        custom,
        battery_capacity_joules: get(Signal::BatteryCapacity),
        charge_watts: get(Signal::ChargePower),
        runway_below_recharge: None,
        runway_spare_watts: None,
    }
}

/// Every node as a target (policy-selected ones can starve; all can receive pods).
pub fn node_targets(
    policy: &str,
    spec: &EnergyPolicySpec,
    nodes: &[impl Borrow<Node>],
    prom: &PromData,
    max_age: Duration,
) -> Vec<TargetSnapshot> {
    nodes
        .iter()
        .map(|n| {
            let n: &_ = n.borrow();
            let name = n.name_any();
            let labels = n.labels().clone();
            let spec_ = n.spec.as_ref();
            let taints: Vec<TaintSpec> = spec_
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .map(|t| TaintSpec {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: t.effect.clone(),
                })
                .collect();
            let ready = ready_status(n) == Some("True");
            let unschedulable = spec_.and_then(|s| s.unschedulable).unwrap_or(false);
            let tainted = taints.iter().any(|t| t.key == keys::STARVED_TAINT);
            TargetSnapshot {
                id: TargetId::node(&name),
                in_policy: spec.targets.node_selector.is_some()
                    && matches(spec.targets.node_selector.as_ref(), &labels),
                alive: ready && !unschedulable,
                tainted,
                taint_ours: tainted && starved_by_us(n.annotations(), policy),
                taints,
                signals: signals(
                    &prom.nodes,
                    &name,
                    max_age,
                    budget_annotation(n.annotations()),
                    spec.scheduling.default_power_budget_watts,
                    prom.custom_nodes.get(&name).copied(),
                ),
                labels,
            }
        })
        .collect()
}

/// Every EdgeDevice as a target. Alive = `status.phase` up and, where Flotta's heartbeat counter
/// is in Prometheus, a non-zero increase (a device whose agent stopped is not alive whatever its
/// phase says).
pub fn device_targets(
    policy: &str,
    spec: &EnergyPolicySpec,
    devices: &[impl Borrow<EdgeDevice>],
    prom: &PromData,
    max_age: Duration,
) -> Vec<TargetSnapshot> {
    devices
        .iter()
        .map(|d| {
            let d: &_ = d.borrow();
            let name = d.name_any();
            let labels = d.labels().clone();
            let heartbeat_ok = prom.heartbeats.get(&name).is_none_or(|inc| *inc > 0.0);
            let tainted = labels.contains_key(keys::STARVED_LABEL);
            TargetSnapshot {
                id: TargetId::device(d.namespace().unwrap_or_default(), &name),
                in_policy: spec.targets.edge_device_selector.is_some()
                    && matches(spec.targets.edge_device_selector.as_ref(), &labels),
                alive: d.is_up() && heartbeat_ok,
                taints: vec![],
                tainted,
                taint_ours: tainted && starved_by_us(d.annotations(), policy),
                signals: signals(
                    &prom.devices,
                    &name,
                    max_age,
                    budget_annotation(d.annotations()),
                    spec.scheduling.default_power_budget_watts,
                    prom.custom_devices.get(&name).copied(),
                ),
                labels,
            }
        })
        .collect()
}

/// A device's liveness inputs in words, for diagnostics: the `status.phase` the store holds
/// (and the store's resourceVersion of the device), and the heartbeat increase Prometheus
/// reported (`absent`: no heartbeat series, which does not count against the device).
pub fn device_liveness(d: &EdgeDevice, prom: &PromData) -> String {
    let phase = d
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("<none>");
    let heartbeat = match prom.heartbeats.get(&d.name_any()) {
        Some(inc) => format!("{inc:.1}"),
        None => "absent".into(),
    };
    format!(
        "phase={phase} heartbeat_increase={heartbeat} store_rv={}",
        d.metadata.resource_version.as_deref().unwrap_or("?")
    )
}

/// The status of a node's `Ready` condition (`True`, `False`, `Unknown`), if it has one.
fn ready_status(n: &Node) -> Option<&str> {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// A node's liveness inputs in words, for diagnostics.
pub fn node_liveness(n: &Node) -> String {
    let ready = ready_status(n).unwrap_or("<none>");
    let unschedulable = n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    format!(
        "ready={ready} unschedulable={unschedulable} store_rv={}",
        n.metadata.resource_version.as_deref().unwrap_or("?")
    )
}

fn pinned(annotations: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    let yes = |v: Option<&String>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    yes(annotations.get(keys::PINNED)) || yes(labels.get(keys::PINNED))
}

/// Whether the policy's workload selector covers an object in `namespace` with `labels`.
pub fn selected(
    spec: &EnergyPolicySpec,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    ns_labels: &HashMap<String, BTreeMap<String, String>>,
) -> bool {
    let Some(ws) = &spec.workloads else {
        return true;
    };
    let ns_ok = match &ws.namespace_selector {
        None => true,
        Some(sel) => ns_labels
            .get(namespace)
            .is_some_and(|l| policy_selector(sel).matches(l)),
    };
    ns_ok && matches(ws.selector.as_ref(), labels)
}

/// Namespace name → labels, for namespace selectors.
pub fn namespace_labels(
    namespaces: &[impl Borrow<Namespace>],
) -> HashMap<String, BTreeMap<String, String>> {
    namespaces
        .iter()
        .map(|n| (n.borrow().name_any(), n.borrow().labels().clone()))
        .collect()
}

/// `SystemCriticalPriority` (kubernetes/kubernetes `pkg/apis/scheduling/types.go`): pods at or
/// above it (`system-cluster-critical`, `system-node-critical`) keep the cluster itself running.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The PriorityClasses Kubernetes ships at [`SYSTEM_CRITICAL_PRIORITY`] and above.
const SYSTEM_CRITICAL_CLASSES: [&str; 2] = ["system-cluster-critical", "system-node-critical"];

/// The namespaces `spec` never touches: its `workloads.excludeNamespaces`, `[kube-system]` by
/// default.
pub fn excluded_namespaces(spec: &EnergyPolicySpec) -> std::borrow::Cow<'_, [String]> {
    match &spec.workloads {
        Some(w) => std::borrow::Cow::Borrowed(&w.exclude_namespaces),
        None => std::borrow::Cow::Owned(edgewatt_crds::degrade::default_exclude_namespaces()),
    }
}

/// Why no action (move, evict, throttle, suspend) may ever touch this object, if so: an excluded
/// namespace, or edgewatt's own (its namespace, or the chart's `part-of` label).
fn protected_object(
    spec: &EnergyPolicySpec,
    own_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<String> {
    if excluded_namespaces(spec).iter().any(|n| n == namespace) {
        return Some(format!(
            "namespace {namespace} is excluded (workloads.excludeNamespaces)"
        ));
    }
    let (k, v) = keys::PART_OF;
    if namespace == own_namespace || labels.get(k).map(String::as_str) == Some(v) {
        return Some("edgewatt's own pod".into());
    }
    None
}

/// Why no action may ever touch this pod, if so: [`protected_object`], or a system-critical
/// priority — the descheduler's default evictor never evicts those either
/// (kubernetes-sigs/descheduler `IsCriticalPriorityPod`: `spec.priority >= SystemCriticalPriority`);
/// the class name counts too where the priority was not resolved.
pub fn protected_pod(spec: &EnergyPolicySpec, own_namespace: &str, pod: &Pod) -> Option<String> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(why) = protected_object(spec, own_namespace, &ns, pod.labels()) {
        return Some(why);
    }
    let ps = pod.spec.as_ref();
    let class = ps.and_then(|s| s.priority_class_name.as_deref());
    let priority = ps.and_then(|s| s.priority);
    if priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
        || class.is_some_and(|c| SYSTEM_CRITICAL_CLASSES.contains(&c))
    {
        return Some(format!(
            "system-critical priority ({})",
            class
                .map(String::from)
                .or(priority.map(|p| p.to_string()))
                .unwrap_or_default()
        ));
    }
    None
}

/// A workload's criticality: its `edgewatt.io/criticality` annotation, else its priority against
/// the policy's thresholds, else `normal`. An annotation that cannot be read makes it `critical`
/// (never degraded) and says why: a typo must never make a critical workload sheddable.
pub fn criticality(
    spec: &EnergyPolicySpec,
    annotations: &BTreeMap<String, String>,
    priority: Option<i32>,
) -> (Criticality, Option<String>) {
    if let Some(v) = annotations.get(keys::CRITICALITY) {
        return match Criticality::parse(v) {
            Ok(c) => (c, None),
            Err(e) => (Criticality::Critical, Some(e)),
        };
    }
    let t = spec.criticality.as_ref();
    match (priority, t) {
        (Some(p), Some(t)) if t.critical_priority_at_least.is_some_and(|at| p >= at) => {
            (Criticality::Critical, None)
        }
        (Some(p), Some(t)) if t.sheddable_priority_below.is_some_and(|b| p < b) => {
            (Criticality::Sheddable, None)
        }
        _ => (Criticality::Normal, None),
    }
}

/// What the ladder may do to a pod. `protected`: why nothing may touch it (then nothing may).
fn pod_ladder_facts(
    spec: &EnergyPolicySpec,
    pod: &Pod,
    protected: Option<String>,
    watts: &HashMap<(String, String), f64>,
) -> LadderFacts {
    let ps = pod.spec.as_ref();
    let (criticality, criticality_error) =
        criticality(spec, pod.annotations(), ps.and_then(|s| s.priority));
    let key = (pod.namespace().unwrap_or_default(), pod.name_any());
    let watts = watts.get(&key).copied();
    if let Some(why) = protected {
        return LadderFacts {
            criticality,
            criticality_error,
            watts,
            throttle: Err(why.clone()),
            suspend: Err(why),
        };
    }
    LadderFacts {
        criticality,
        criticality_error,
        watts,
        throttle: throttleable(pod),
        suspend: suspend_unit(pod),
    }
}

/// Whether the pod's CPU limit can be lowered in place (`pods/resize`, KEP-1287): it needs a
/// container with a CPU limit (a BestEffort pod has none, and lowering a limit it lacks is
/// not a resize), and a mirror pod belongs to its kubelet.
fn throttleable(pod: &Pod) -> Result<(), String> {
    if pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror")
    {
        return Err("mirror pod: the kubelet owns its spec".into());
    }
    let has_limit = pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| {
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .is_some_and(|l| l.contains_key("cpu"))
        })
    });
    if has_limit {
        Ok(())
    } else {
        Err("no CPU limit to lower".into())
    }
}

/// What a suspend of this pod scales to zero: its Deployment (a ReplicaSet named
/// `<deployment>-<pod-template-hash>`), StatefulSet, or a ReplicaSet without a Deployment.
fn suspend_unit(pod: &Pod) -> Result<SuspendUnit, String> {
    let Some(o) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return Err("no controller to scale (it would not come back)".into());
    };
    let namespace = pod.namespace().unwrap_or_default();
    let unit = |kind, name: &str| {
        Ok(SuspendUnit {
            kind,
            namespace: namespace.clone(),
            name: name.to_string(),
        })
    };
    match o.kind.as_str() {
        "ReplicaSet" => {
            let deployment = pod
                .labels()
                .get("pod-template-hash")
                .and_then(|h| o.name.strip_suffix(&format!("-{h}")));
            match deployment {
                Some(d) => unit(DegradedKind::Deployment, d),
                None => unit(DegradedKind::ReplicaSet, &o.name),
            }
        }
        "StatefulSet" => unit(DegradedKind::StatefulSet, &o.name),
        other => Err(format!("owned by a {other}, which has no scale to suspend")),
    }
}

/// Why a pod may never be evicted, if so. DaemonSet pods come straight back, mirror pods cannot
/// be evicted, and pods without a controller would simply be gone.
pub fn pod_ineligible(spec: &EnergyPolicySpec, pod: &Pod) -> Option<String> {
    if pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror")
    {
        return Some("mirror pod".into());
    }
    let controller = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(o) if o.kind == "DaemonSet" => Some("DaemonSet pod".into()),
        Some(o) if o.kind == "Node" => Some("static pod".into()),
        Some(_) => None,
        None if spec.action.evict_uncontrolled_pods => None,
        None => Some("no controller".into()),
    }
}

/// Namespace → selectors of the PodDisruptionBudgets there that allow no disruption now
/// (`status.disruptionsAllowed == 0`). A PDB without a selector selects nothing (policy/v1); an
/// empty selector selects every pod of its namespace. PDBs without a status yet are left out:
/// the Eviction API decides for them.
pub fn exhausted_pdbs(pdbs: &[impl Borrow<PodDisruptionBudget>]) -> HashMap<String, Vec<Selector>> {
    let mut out: HashMap<String, Vec<Selector>> = HashMap::new();
    for p in pdbs {
        let p: &PodDisruptionBudget = p.borrow();
        let exhausted = p
            .status
            .as_ref()
            .is_some_and(|s| s.disruptions_allowed.is_some_and(|a| a <= 0));
        let Some(sel) = p.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if exhausted {
            out.entry(p.namespace().unwrap_or_default())
                .or_default()
                .push(selector(sel));
        }
    }
    out
}

/// The owner a pod's moves are counted against: its controller, with a ReplicaSet named
/// `<deployment>-<pod-template-hash>` counted as that Deployment (its ReplicaSets change with
/// every rollout, its pods with every eviction). `None` for pods without a controller.
pub fn pod_owner(pod: &Pod) -> Option<String> {
    let o = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))?;
    let ns = pod.namespace().unwrap_or_default();
    if o.kind == "ReplicaSet" {
        if let Some(hash) = pod.labels().get("pod-template-hash") {
            if let Some(deployment) = o.name.strip_suffix(&format!("-{hash}")) {
                return Some(format!("Deployment/{ns}/{deployment}"));
            }
        }
    }
    Some(format!("{}/{ns}/{}", o.kind, o.name))
}

/// The taint edgewatt puts on starved nodes.
pub fn starvation_taint() -> TaintSpec {
    TaintSpec {
        key: keys::STARVED_TAINT.into(),
        value: Some("true".into()),
        effect: "NoSchedule".into(),
    }
}

/// What the planner inputs need besides the objects themselves.
#[derive(Debug, Clone, Copy)]
pub struct Around<'a> {
    /// Namespace name → labels, for namespace selectors.
    pub ns_labels: &'a HashMap<String, BTreeMap<String, String>>,
    /// [`exhausted_pdbs`]: pods they select are marked `pdb_blocked`.
    pub exhausted: &'a HashMap<String, Vec<Selector>>,
    /// The controller's own namespace: its pods are edgewatt's own, never touched.
    pub own_namespace: &'a str,
    /// Each workload's own draw, watts.
    pub watts: &'a WorkloadWatts,
}

/// Running pods bound to a node, as workloads. Finished and terminating pods are left out.
pub fn pod_workloads(
    spec: &EnergyPolicySpec,
    pods: &[impl Borrow<Pod>],
    around: Around<'_>,
) -> Vec<WorkloadSnapshot> {
    let Around {
        ns_labels,
        exhausted,
        ..
    } = around;
    pods.iter()
        .filter_map(|p| {
            let p: &_ = p.borrow();
            if p.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                return None;
            }
            let ps = p.spec.as_ref()?;
            let node = ps.node_name.clone()?;
            let ns = p.namespace().unwrap_or_default();
            let protected = protected_pod(spec, around.own_namespace, p);
            let unselected = (!selected(spec, &ns, p.labels(), ns_labels))
                .then(|| "not selected by the policy".to_string());
            let ineligible = protected
                .clone()
                .or_else(|| pod_ineligible(spec, p))
                .or(unselected.clone());
            let ladder = pod_ladder_facts(spec, p, protected.or(unselected), &around.watts.pods);
            let affinity_terms = ps
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|na| {
                    na.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|req| {
                    req.node_selector_terms
                        .iter()
                        .map(|t| {
                            t.match_expressions
                                .iter()
                                .flatten()
                                .map(|e| LabelRequirement {
                                    key: e.key.clone(),
                                    op: op(&e.operator),
                                    values: e.values.clone().unwrap_or_default(),
                                })
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let pdb_blocked = exhausted
                .get(&ns)
                .is_some_and(|sels| sels.iter().any(|s| s.matches(p.labels())));
            let tolerations: Vec<TolerationSpec> = ps
                .tolerations
                .iter()
                .flatten()
                .map(|t| TolerationSpec {
                    key: t.key.clone(),
                    operator: t.operator.clone(),
                    value: t.value.clone(),
                    effect: t.effect.clone(),
                })
                .collect();
            let taint = starvation_taint();
            Some(WorkloadSnapshot {
                owner: pod_owner(p),
                placement: Placement::Device,
                running: true,
                host_bound: None,
                tolerates_starvation: tolerations.iter().any(|t| t.tolerates(&taint)),
                ladder,
                id: WorkloadId {
                    kind: WorkloadKind::Pod,
                    namespace: ns,
                    name: p.name_any(),
                },
                target: Some(node),
                pinned: pinned(p.annotations(), p.labels()),
                pdb_blocked,
                ineligible,
                in_flight: false,
                constraints: Constraints::Pod {
                    node_selector: ps.node_selector.clone().unwrap_or_default(),
                    affinity_terms,
                    tolerations,
                },
            })
        })
        .collect()
}

/// Why two instances of this pod spec cannot share a device (`hostNetwork`, `hostPort 9090`),
/// if so. The store keeps exactly these facts of a workload's pod spec ([`crate::stores`]).
pub fn host_bound(pod_spec: &serde_json::Value) -> Option<String> {
    if pod_spec["hostNetwork"].as_bool() == Some(true) {
        return Some("hostNetwork".into());
    }
    let ports: Vec<String> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod_spec[k].as_array())
        .flatten()
        .filter_map(|c| c["ports"].as_array())
        .flatten()
        .filter_map(|p| p["hostPort"].as_i64())
        .filter(|p| *p > 0)
        .map(|p| p.to_string())
        .collect();
    (!ports.is_empty()).then(|| format!("hostPort {}", ports.join(", ")))
}

/// Whether a selector-placed workload lets edgewatt move it: its deviceSelector excludes devices
/// carrying the starvation label (`DoesNotExist`, or `NotIn [true]`), so labelling a starved
/// device makes Flotta remove it from there while it keeps running on the other devices.
pub fn excludes_starved(sel: &LabelSelector) -> bool {
    sel.match_expressions.iter().flatten().any(|e| {
        e.key == keys::STARVED_LABEL
            && (e.operator == "DoesNotExist"
                || (e.operator == "NotIn" && e.values.iter().flatten().any(|v| v == "true")))
    })
}

/// EdgeWorkloads as workloads, one per device they run on: `spec.device` when set, else every
/// device in the namespace carrying the operator's `workload/<name>` label.
pub fn edge_workloads(
    spec: &EnergyPolicySpec,
    workloads: &[impl Borrow<EdgeWorkload>],
    devices: &[impl Borrow<EdgeDevice>],
    around: Around<'_>,
) -> Vec<WorkloadSnapshot> {
    let ns_labels = around.ns_labels;
    // (namespace, workload name) -> the devices labelled `workload/<name>`; borrowed from the
    // store and built only when a selector-placed workload needs it (at 100 000 workloads an
    // owned index was ~20 MB of the cycle's peak).
    let mut labelled: Option<HashMap<(&str, &str), Vec<&EdgeDevice>>> = None;
    let index = || {
        let mut m: HashMap<(&str, &str), Vec<&EdgeDevice>> = HashMap::new();
        for d in devices {
            let d: &EdgeDevice = d.borrow();
            let ns = d.metadata.namespace.as_deref().unwrap_or_default();
            for k in d.labels().keys() {
                if let Some(w) = k.strip_prefix(WORKLOAD_LABEL_PREFIX) {
                    m.entry((ns, w)).or_default().push(d);
                }
            }
        }
        m
    };
    let mut out = Vec::with_capacity(workloads.len());
    for w in workloads {
        let w: &_ = w.borrow();
        if w.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = w.namespace().unwrap_or_default();
        let name = w.name_any();
        let by_selector = w.spec.device.is_none();
        let opted_in = w
            .spec
            .device_selector
            .as_ref()
            .is_some_and(excludes_starved);
        let protected = if w.labels().contains_key(COPY_OF_LABEL) {
            Some("edgewatt migration copy".to_string())
        } else if let Some(why) = protected_object(spec, around.own_namespace, &ns, w.labels()) {
            Some(why)
        } else if !selected(spec, &ns, w.labels(), ns_labels) {
            Some("not selected by the policy".to_string())
        } else {
            None
        };
        let (criticality, criticality_error) = criticality(spec, w.annotations(), None);
        let ladder = LadderFacts {
            criticality,
            criticality_error,
            watts: None, // per instance, below
            throttle: Err(protected.clone().unwrap_or_else(|| {
                "an EdgeWorkload has no in-place resize (Flotta restarts it)".into()
            })),
            suspend: match &protected {
                Some(why) => Err(why.clone()),
                None => Ok(SuspendUnit {
                    kind: DegradedKind::EdgeWorkload,
                    namespace: ns.clone(),
                    name: name.clone(),
                }),
            },
        };
        let ineligible = if let Some(why) = protected {
            Some(why)
        } else if by_selector && !opted_in {
            Some(format!(
                "placed by deviceSelector, which does not exclude devices labelled {}: \
                 re-pointing it would collapse it onto one device (add matchExpressions \
                 {{key: {}, operator: DoesNotExist}} to let edgewatt move it)",
                keys::STARVED_LABEL,
                keys::STARVED_LABEL
            ))
        } else {
            None
        };
        let base = WorkloadSnapshot {
            id: WorkloadId {
                kind: WorkloadKind::EdgeWorkload,
                namespace: ns,
                name,
            },
            target: None,
            pinned: pinned(w.annotations(), w.labels()),
            ineligible,
            in_flight: w.annotations().contains_key(keys::MIGRATION_INTENT),
            pdb_blocked: false,
            constraints: Constraints::EdgeWorkload {
                device_selector: w.spec.device_selector.as_ref().map(selector),
            },
            owner: None,
            placement: if by_selector {
                Placement::Selector { opted_in }
            } else {
                Placement::Device
            },
            running: false,
            host_bound: w.spec.pod.as_ref().and_then(|p| host_bound(&p.spec)),
            tolerates_starvation: false,
            ladder,
        };
        match &w.spec.device {
            Some(d) => {
                let watts = around.watts.edge.get(&(d.clone(), base.id.name.clone()));
                let mut w = WorkloadSnapshot {
                    target: Some(d.clone()),
                    ..base
                };
                w.ladder.watts = watts.copied();
                out.push(w)
            }
            None => {
                let devices = labelled
                    .get_or_insert_with(index)
                    .get(&(base.id.namespace.as_str(), base.id.name.as_str()));
                for d in devices.into_iter().flatten() {
                    let mut w = WorkloadSnapshot {
                        target: Some(d.name_any()),
                        running: d.workload(&base.id.name).is_some_and(|dw| dw.is_running()),
                        ..base.clone()
                    };
                    w.ladder.watts = around
                        .watts
                        .edge
                        .get(&(d.name_any(), base.id.name.clone()))
                        .copied();
                    out.push(w);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatt_crds::prom::Reading;

    /// Planner inputs around the objects: no own namespace among the tests', no draws known.
    fn around<'a>(
        ns_labels: &'a HashMap<String, BTreeMap<String, String>>,
        exhausted: &'a HashMap<String, Vec<Selector>>,
    ) -> Around<'a> {
        static NO_WATTS: std::sync::OnceLock<WorkloadWatts> = std::sync::OnceLock::new();
        Around {
            ns_labels,
            exhausted,
            own_namespace: "edgewatt-system",
            watts: NO_WATTS.get_or_init(WorkloadWatts::default),
        }
    }

    fn spec() -> EnergyPolicySpec {
        serde_json::from_value(serde_json::json!({
            "targets": {"nodeSelector": {"matchLabels": {"edge": "true"}}, "edgeDeviceSelector": {}},
            "starvation": {"batteryBelowPercent": 20},
            "scheduling": {"defaultPowerBudgetWatts": 60}
        }))
        .unwrap()
    }

    fn table(name: &str, ratio: f64, age: f64) -> SignalTable {
        let mut t = SignalTable::default();
        t.readings.entry(name.into()).or_default().insert(
            Signal::BatteryRatio,
            Reading {
                value: ratio,
                age_secs: Some(age),
            },
        );
        t
    }

    #[test]
    fn nodes_selection_liveness_taints_budget_and_staleness() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"edge": "true"},
                "annotations": {"edgewatt.io/power-budget-watts": "45"}},
            "spec": {"taints": [{"key": "edgewatt.io/energy-starved", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let other: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n2"}, "spec": {"unschedulable": true}
        }))
        .unwrap();
        let prom = PromData {
            nodes: table("n1", 0.1, 10.0),
            ..Default::default()
        };
        let t = node_targets(
            "p",
            &spec(),
            &[node.clone(), other],
            &prom,
            Duration::from_secs(120),
        );
        assert!(t[0].in_policy && t[0].alive && t[0].tainted);
        assert_eq!(t[0].signals.battery_ratio, Some(0.1));
        assert_eq!(t[0].signals.budget_watts, Some(45.0));
        assert!(!t[1].in_policy && !t[1].alive);
        assert_eq!(t[1].signals.budget_watts, Some(60.0));
        let stale = PromData {
            nodes: table("n1", 0.1, 500.0),
            ..Default::default()
        };
        let t = node_targets("p", &spec(), &[node], &stale, Duration::from_secs(120));
        assert_eq!(t[0].signals.battery_ratio, None);
    }

    #[test]
    fn devices_need_phase_up_and_heartbeats() {
        let dev: EdgeDevice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d1", "namespace": "edge"},
            "spec": {}, "status": {"phase": "up"}
        }))
        .unwrap();
        let mut prom = PromData::default();
        let t = device_targets(
            "p",
            &spec(),
            std::slice::from_ref(&dev),
            &prom,
            Duration::from_secs(900),
        );
        assert!(t[0].alive && t[0].in_policy);
        assert_eq!(t[0].id, TargetId::device("edge", "d1"));
        prom.heartbeats.insert("d1".into(), 0.0);
        let t = device_targets("p", &spec(), &[dev], &prom, Duration::from_secs(900));
        assert!(!t[0].alive);
    }

    #[test]
    fn pod_eligibility() {
        let pod = |owner: serde_json::Value, ann: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "default", "ownerReferences": owner, "annotations": ann},
                "spec": {"nodeName": "n1", "containers": [], "nodeSelector": {"a": "b"},
                    "tolerations": [{"operator": "Exists"}]},
                "status": {"phase": "Running"}
            }))
            .unwrap()
        };
        let rs = serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "1", "controller": true}]);
        let ds = serde_json::json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "1", "controller": true}]);
        let s = spec();
        let ns = HashMap::new();
        let no_pdb = HashMap::new();
        let w = pod_workloads(
            &s,
            &[pod(rs.clone(), serde_json::json!({}))],
            around(&ns, &no_pdb),
        );
        assert_eq!(w[0].ineligible, None);
        assert_eq!(w[0].target.as_deref(), Some("n1"));
        let Constraints::Pod {
            node_selector,
            tolerations,
            ..
        } = &w[0].constraints
        else {
            panic!()
        };
        assert_eq!(node_selector.get("a").map(String::as_str), Some("b"));
        assert_eq!(tolerations.len(), 1);
        let w = pod_workloads(&s, &[pod(ds, serde_json::json!({}))], around(&ns, &no_pdb));
        assert_eq!(w[0].ineligible.as_deref(), Some("DaemonSet pod"));
        let w = pod_workloads(
            &s,
            &[pod(serde_json::json!([]), serde_json::json!({}))],
            around(&ns, &no_pdb),
        );
        assert_eq!(w[0].ineligible.as_deref(), Some("no controller"));
        let w = pod_workloads(
            &s,
            &[pod(
                rs.clone(),
                serde_json::json!({"kubernetes.io/config.mirror": "x"}),
            )],
            around(&ns, &no_pdb),
        );
        assert_eq!(w[0].ineligible.as_deref(), Some("mirror pod"));
        let w = pod_workloads(
            &s,
            &[pod(rs, serde_json::json!({"edgewatt.io/pinned": "true"}))],
            around(&ns, &no_pdb),
        );
        assert!(w[0].pinned);
    }

    #[test]
    fn pods_under_an_exhausted_pdb_are_blocked() {
        let pdb =
            |name: &str, sel: serde_json::Value, allowed: Option<i32>| -> PodDisruptionBudget {
                let mut v = serde_json::json!({
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"selector": sel}
                });
                if let Some(a) = allowed {
                    v["status"] = serde_json::json!({"disruptionsAllowed": a, "currentHealthy": 1,
                    "desiredHealthy": 1, "expectedPods": 1});
                }
                serde_json::from_value(v).unwrap()
            };
        let pods: Vec<Pod> = ["web", "db"]
            .iter()
            .map(|app| {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": app, "namespace": "default", "labels": {"app": app},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "name": "r", "uid": "1", "controller": true}]},
                    "spec": {"nodeName": "n1", "containers": []},
                    "status": {"phase": "Running"}
                }))
                .unwrap()
            })
            .collect();
        let exhausted = exhausted_pdbs(&[
            pdb(
                "web",
                serde_json::json!({"matchLabels": {"app": "web"}}),
                Some(0),
            ),
            pdb(
                "db",
                serde_json::json!({"matchLabels": {"app": "db"}}),
                Some(1),
            ),
            pdb("new", serde_json::json!({}), None),
        ]);
        let w = pod_workloads(&spec(), &pods, around(&HashMap::new(), &exhausted));
        assert!(w[0].pdb_blocked, "web: its PDB allows 0");
        assert!(
            !w[1].pdb_blocked,
            "db: its PDB allows 1; a PDB without status is not used"
        );
    }

    #[test]
    fn edge_workloads_by_device_or_operator_label() {
        let dev: EdgeDevice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d2", "namespace": "edge", "labels": {"workload/sel": "true"}}, "spec": {}
        }))
        .unwrap();
        let w1: EdgeWorkload = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pinned", "namespace": "edge", "annotations": {"edgewatt.io/pinned": "true", "edgewatt.io/migration": "{}"}},
            "spec": {"device": "d1", "type": "pod"}
        }))
        .unwrap();
        let w2: EdgeWorkload = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sel", "namespace": "edge"},
            "spec": {"deviceSelector": {"matchLabels": {"zone": "a"}}, "type": "pod"}
        }))
        .unwrap();
        let w3: EdgeWorkload = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "copy", "namespace": "edge", "labels": {COPY_OF_LABEL: "x"}},
            "spec": {"device": "d1", "type": "pod"}
        }))
        .unwrap();
        let out = edge_workloads(
            &spec(),
            &[w1, w2, w3],
            &[dev],
            around(&HashMap::new(), &HashMap::new()),
        );
        assert_eq!(out.len(), 3);
        assert!(out[0].pinned && out[0].in_flight && out[0].target.as_deref() == Some("d1"));
        assert_eq!(out[1].target.as_deref(), Some("d2"));
        let mut labels = BTreeMap::new();
        labels.insert("zone".to_string(), "a".to_string());
        assert!(out[1].constraints.accepts(&labels, &[]));
        assert!(!out[1].constraints.accepts(&BTreeMap::new(), &[]));
        assert!(out[2].ineligible.is_some());
    }

    #[test]
    fn owners_taint_ownership_and_tolerations() {
        let pod = |owner: serde_json::Value,
                   labels: serde_json::Value,
                   tol: serde_json::Value|
         -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "default", "ownerReferences": owner, "labels": labels},
                "spec": {"nodeName": "n1", "containers": [], "tolerations": tol},
                "status": {"phase": "Running"}
            }))
            .unwrap()
        };
        let rs = serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8", "uid": "1", "controller": true}]);
        let p = pod(
            rs.clone(),
            serde_json::json!({"pod-template-hash": "5d4f8"}),
            serde_json::json!([]),
        );
        assert_eq!(pod_owner(&p).as_deref(), Some("Deployment/default/web"));
        let p = pod(rs, serde_json::json!({}), serde_json::json!([]));
        assert_eq!(
            pod_owner(&p).as_deref(),
            Some("ReplicaSet/default/web-5d4f8")
        );
        let sts = serde_json::json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "1", "controller": true}]);
        let tol = serde_json::json!([{"key": "edgewatt.io/energy-starved", "operator": "Exists"}]);
        let w = pod_workloads(
            &spec(),
            &[pod(sts.clone(), serde_json::json!({}), tol)],
            around(&HashMap::new(), &HashMap::new()),
        );
        assert!(w[0].tolerates_starvation);
        assert_eq!(w[0].owner.as_deref(), Some("StatefulSet/default/db"));
        let other = serde_json::json!([{"key": "dedicated", "operator": "Exists"}]);
        let w = pod_workloads(
            &spec(),
            &[pod(sts, serde_json::json!({}), other)],
            around(&HashMap::new(), &HashMap::new()),
        );
        assert!(!w[0].tolerates_starvation);

        let node = |by: Option<&str>| -> Node {
            let mut v = serde_json::json!({
                "metadata": {"name": "n1", "labels": {"edge": "true"}},
                "spec": {"taints": [{"key": "edgewatt.io/energy-starved", "value": "true", "effect": "NoSchedule"}]},
            });
            if let Some(b) = by {
                v["metadata"]["annotations"] =
                    serde_json::json!({"edgewatt.io/energy-starved-by": b});
            }
            serde_json::from_value(v).unwrap()
        };
        let prom = PromData::default();
        let age = Duration::from_secs(60);
        assert!(node_targets("p", &spec(), &[node(Some("p"))], &prom, age)[0].taint_ours);
        assert!(node_targets("p", &spec(), &[node(None)], &prom, age)[0].taint_ours);
        assert!(!node_targets("p", &spec(), &[node(Some("q"))], &prom, age)[0].taint_ours);
    }

    #[test]
    fn host_bound_and_selector_placement() {
        assert_eq!(
            host_bound(&serde_json::json!({"hostNetwork": true})).as_deref(),
            Some("hostNetwork")
        );
        assert_eq!(
            host_bound(&serde_json::json!({"containers": [{"ports": [{"containerPort": 80, "hostPort": 9090}, {"containerPort": 81}]}]})).as_deref(),
            Some("hostPort 9090")
        );
        assert_eq!(
            host_bound(&serde_json::json!({"containers": [{"ports": [{"containerPort": 80}]}]})),
            None
        );
        let w = |sel: serde_json::Value| -> EdgeWorkload {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s", "namespace": "edge"},
                "spec": {"deviceSelector": sel, "type": "pod",
                    "pod": {"spec": {"containers": [{"ports": [{"hostPort": 9090}]}]}}}
            }))
            .unwrap()
        };
        let plain = w(serde_json::json!({"matchLabels": {"zone": "a"}}));
        let opted = w(serde_json::json!({"matchLabels": {"zone": "a"},
            "matchExpressions": [{"key": "edgewatt.io/energy-starved", "operator": "DoesNotExist"}]}));
        let no_devices: [EdgeDevice; 0] = [];
        let dev: EdgeDevice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d1", "namespace": "edge", "labels": {"workload/s": "true"}},
            "spec": {}, "status": {"workloads": [{"name": "s", "phase": "running"}]}
        }))
        .unwrap();
        assert!(edge_workloads(
            &spec(),
            std::slice::from_ref(&plain),
            &no_devices,
            around(&HashMap::new(), &HashMap::new())
        )
        .is_empty());
        let out = edge_workloads(
            &spec(),
            &[plain],
            std::slice::from_ref(&dev),
            around(&HashMap::new(), &HashMap::new()),
        );
        assert!(
            out[0]
                .ineligible
                .as_deref()
                .is_some_and(|m| m.contains("deviceSelector")),
            "{:?}",
            out[0].ineligible
        );
        let out = edge_workloads(
            &spec(),
            &[opted],
            &[dev],
            around(&HashMap::new(), &HashMap::new()),
        );
        assert_eq!(out[0].ineligible, None);
        assert_eq!(out[0].placement, Placement::Selector { opted_in: true });
        assert!(out[0].running);
        assert_eq!(out[0].host_bound.as_deref(), Some("hostPort 9090"));
    }

    #[test]
    fn unknown_operators_match_nothing() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "zone", "operator": "NotEquals", "values": ["b"]}]
        }))
        .unwrap();
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        assert!(!selector(&sel).matches(&labels));
        assert!(!selector(&sel).matches(&BTreeMap::new()));
    }

    /// A pod of `owner` (a ReplicaSet `web-5d4f8` of Deployment `web` unless told) in `ns`.
    fn system_pod(ns: &str, name: &str, extra: serde_json::Value) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": ns,
                "labels": {"pod-template-hash": "5d4f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{name}-5d4f8"), "uid": "1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "resources": {"limits": {"cpu": "500m"}}}]},
            "status": {"phase": "Running"}
        });
        json_merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    /// Issue 29 §1: on a node over budget a policy without a workload selector evicted
    /// `kube-system/coredns` (priorityClassName `system-cluster-critical`),
    /// `kube-system/metrics-server` and `edgewatt-system/edgewatt-controller`. Rules: pods at or
    /// above `SystemCriticalPriority` are never evicted (kubernetes-sigs/descheduler
    /// `pkg/utils/pod.go` `IsCriticalPriorityPod`; the value from kubernetes/kubernetes
    /// `pkg/apis/scheduling/types.go`), `kube-system` pods are not movable by default
    /// (kubernetes/autoscaler `cluster-autoscaler/simulator/drain`), and edgewatt never acts on
    /// its own pods. Nothing may touch them: no move, no throttle, no suspend.
    #[test]
    fn system_pods_and_edgewatts_own_are_never_touched() {
        let everything = spec(); // no workloads selector: every namespace
        let pods = [
            system_pod(
                "kube-system",
                "coredns",
                serde_json::json!({"spec": {"priorityClassName": "system-cluster-critical",
                    "priority": 2_000_000_000}}),
            ),
            system_pod("kube-system", "metrics-server", serde_json::json!({})),
            system_pod(
                "edgewatt-system",
                "edgewatt-controller",
                serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/part-of": "edgewatt"}}}),
            ),
            system_pod(
                "apps",
                "node-critical-agent",
                serde_json::json!({"spec": {"priority": 2_000_001_000}}),
            ),
            system_pod(
                "apps",
                "edgewatt-extender-elsewhere",
                serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/part-of": "edgewatt"}}}),
            ),
            system_pod("apps", "web", serde_json::json!({})),
        ];
        let w = pod_workloads(&everything, &pods, around(&HashMap::new(), &HashMap::new()));
        let why: Vec<(&str, Option<&str>)> = w
            .iter()
            .map(|w| (w.id.name.as_str(), w.ineligible.as_deref()))
            .collect();
        assert_eq!(
            why,
            [
                (
                    "coredns",
                    Some("namespace kube-system is excluded (workloads.excludeNamespaces)")
                ),
                (
                    "metrics-server",
                    Some("namespace kube-system is excluded (workloads.excludeNamespaces)")
                ),
                ("edgewatt-controller", Some("edgewatt's own pod")),
                (
                    "node-critical-agent",
                    Some("system-critical priority (2000001000)")
                ),
                ("edgewatt-extender-elsewhere", Some("edgewatt's own pod")),
                ("web", None),
            ]
        );
        for w in &w[..5] {
            assert_eq!(
                w.ladder.throttle.as_ref().err(),
                w.ineligible.as_ref(),
                "{:?}",
                w.id
            );
            assert_eq!(
                w.ladder.suspend.as_ref().err(),
                w.ineligible.as_ref(),
                "{:?}",
                w.id
            );
        }
        assert_eq!(w[5].ladder.throttle, Ok(()));
        // The exclusion is a default the policy may override: coredns stays protected by its
        // priority, metrics-server becomes movable.
        let mut opened = everything.clone();
        opened.workloads = Some(edgewatt_crds::WorkloadSelector {
            exclude_namespaces: vec![],
            ..Default::default()
        });
        let w = pod_workloads(
            &opened,
            &pods[..2],
            around(&HashMap::new(), &HashMap::new()),
        );
        assert_eq!(
            w[0].ineligible.as_deref(),
            Some("system-critical priority (system-cluster-critical)")
        );
        assert_eq!(w[1].ineligible, None);
    }

    /// Issue 27 §1: criticality from the annotation, else the priority against the policy's
    /// thresholds, else `normal`; an unreadable annotation is critical and said so.
    #[test]
    fn criticality_from_annotation_then_priority_then_normal() {
        let mut s = spec();
        let ann = |v: &str| BTreeMap::from([(keys::CRITICALITY.to_string(), v.to_string())]);
        assert_eq!(
            criticality(&s, &ann("sheddable"), Some(5_000)),
            (Criticality::Sheddable, None)
        );
        assert_eq!(
            criticality(&s, &BTreeMap::new(), Some(5_000)).0,
            Criticality::Normal
        );
        s.criticality = Some(edgewatt_crds::CriticalityThresholds {
            critical_priority_at_least: Some(1_000),
            sheddable_priority_below: Some(0),
        });
        assert_eq!(
            criticality(&s, &BTreeMap::new(), Some(1_000)).0,
            Criticality::Critical
        );
        assert_eq!(
            criticality(&s, &BTreeMap::new(), Some(999)).0,
            Criticality::Normal
        );
        assert_eq!(
            criticality(&s, &BTreeMap::new(), Some(-1)).0,
            Criticality::Sheddable
        );
        assert_eq!(
            criticality(&s, &BTreeMap::new(), None).0,
            Criticality::Normal
        );
        let (c, e) = criticality(&s, &ann("low"), Some(-5));
        assert_eq!(
            c,
            Criticality::Critical,
            "a typo never makes anything sheddable"
        );
        assert!(e.unwrap().contains("edgewatt.io/criticality=\"low\""));
    }

    /// Issue 27 §2: what a throttle and a suspend can act on.
    #[test]
    fn throttle_needs_a_cpu_limit_and_suspend_an_owner_with_a_scale() {
        let s = spec();
        let (ns, pdbs) = (HashMap::new(), HashMap::new());
        let a = around(&ns, &pdbs);
        let best_effort = system_pod(
            "apps",
            "be",
            serde_json::json!({"spec": {"containers": [{"name": "c"}]}}),
        );
        let sts = system_pod(
            "apps",
            "db-0",
            serde_json::json!({"metadata": {"labels": {}, "ownerReferences": [{"apiVersion": "apps/v1",
                "kind": "StatefulSet", "name": "db", "uid": "2", "controller": true}]}}),
        );
        let bare_rs = system_pod(
            "apps",
            "solo",
            serde_json::json!({"metadata": {"labels": {"pod-template-hash": "zzz"}}}),
        );
        let job = system_pod(
            "apps",
            "batch",
            serde_json::json!({"metadata": {"ownerReferences": [{"apiVersion": "batch/v1",
                "kind": "Job", "name": "batch", "uid": "3", "controller": true}]}}),
        );
        let w = pod_workloads(&s, &[best_effort, sts, bare_rs, job], a);
        assert_eq!(w[0].ladder.throttle, Err("no CPU limit to lower".into()));
        assert_eq!(
            w[0].ladder.suspend.as_ref().unwrap().kind,
            DegradedKind::Deployment
        );
        assert_eq!(w[0].ladder.suspend.as_ref().unwrap().name, "be");
        let u = w[1].ladder.suspend.as_ref().unwrap();
        assert_eq!((u.kind, u.name.as_str()), (DegradedKind::StatefulSet, "db"));
        let u = w[2].ladder.suspend.as_ref().unwrap();
        assert_eq!(
            (u.kind, u.name.as_str()),
            (DegradedKind::ReplicaSet, "solo-5d4f8")
        );
        assert!(w[3].ladder.suspend.as_ref().unwrap_err().contains("Job"));
    }
}
