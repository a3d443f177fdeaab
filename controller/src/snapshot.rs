//! The adapter from Kubernetes objects and Prometheus readings to planner inputs.
//!
//! Pure (no I/O) so the mapping rules — which pods may never be evicted, how a device's liveness
//! and budget are derived, how stale readings become "unknown" — are unit-tested without a cluster.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use edgewatt_crds::{
    flotta::WORKLOAD_LABEL_PREFIX, keys, prom::SignalTable, promql::Signal, EdgeDevice,
    EdgeWorkload, EnergyPolicySpec, WorkloadKind,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::planner::{
    Constraints, LabelOp, LabelRequirement, Placement, Selector, TaintSpec, TargetId,
    TargetSignals, TargetSnapshot, TolerationSpec, WorkloadId, WorkloadSnapshot,
};

/// Label put on the temporary copy of an EdgeWorkload during a make-before-break move; its value
/// is the original's name. Copies are never moved themselves.
pub const COPY_OF_LABEL: &str = "edgewatt.io/migration-copy-of";

/// What Prometheus said this cycle, per target kind.
#[derive(Debug, Clone, Default)]
pub struct PromData {
    pub nodes: SignalTable,
    pub devices: SignalTable,
    /// Flotta heartbeat increase per device id over the device window (absent: no data).
    pub heartbeats: HashMap<String, f64>,
    /// Custom query value per node / device.
    pub custom_nodes: HashMap<String, f64>,
    pub custom_devices: HashMap<String, f64>,
}

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
        battery_capacity_joules: None,
        charge_watts: None,
        runway_below_recharge: None,
    }
}

fn budget_annotation(annotations: &BTreeMap<String, String>) -> Option<f64> {
    annotations
        .get(keys::POWER_BUDGET_WATTS)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
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

/// Running pods bound to a node, as workloads. Finished and terminating pods are left out.
/// `exhausted` is [`exhausted_pdbs`]: pods they select are marked `pdb_blocked`.
pub fn pod_workloads(
    spec: &EnergyPolicySpec,
    pods: &[impl Borrow<Pod>],
    ns_labels: &HashMap<String, BTreeMap<String, String>>,
    exhausted: &HashMap<String, Vec<Selector>>,
) -> Vec<WorkloadSnapshot> {
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
            let ineligible = pod_ineligible(spec, p).or_else(|| {
                (!selected(spec, &ns, p.labels(), ns_labels))
                    .then(|| "not selected by the policy".to_string())
            });
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
                ladder: Default::default(),
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
    ns_labels: &HashMap<String, BTreeMap<String, String>>,
) -> Vec<WorkloadSnapshot> {
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
        let ineligible = if w.labels().contains_key(COPY_OF_LABEL) {
            Some("edgewatt migration copy".to_string())
        } else if !selected(spec, &ns, w.labels(), ns_labels) {
            Some("not selected by the policy".to_string())
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
            ladder: Default::default(),
        };
        match &w.spec.device {
            Some(d) => out.push(WorkloadSnapshot {
                target: Some(d.clone()),
                ..base
            }),
            None => {
                let devices = labelled
                    .get_or_insert_with(index)
                    .get(&(base.id.namespace.as_str(), base.id.name.as_str()));
                for d in devices.into_iter().flatten() {
                    out.push(WorkloadSnapshot {
                        target: Some(d.name_any()),
                        running: d.workload(&base.id.name).is_some_and(|dw| dw.is_running()),
                        ..base.clone()
                    });
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
        let w = pod_workloads(&s, &[pod(rs.clone(), serde_json::json!({}))], &ns, &no_pdb);
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
        let w = pod_workloads(&s, &[pod(ds, serde_json::json!({}))], &ns, &no_pdb);
        assert_eq!(w[0].ineligible.as_deref(), Some("DaemonSet pod"));
        let w = pod_workloads(
            &s,
            &[pod(serde_json::json!([]), serde_json::json!({}))],
            &ns,
            &no_pdb,
        );
        assert_eq!(w[0].ineligible.as_deref(), Some("no controller"));
        let w = pod_workloads(
            &s,
            &[pod(
                rs.clone(),
                serde_json::json!({"kubernetes.io/config.mirror": "x"}),
            )],
            &ns,
            &no_pdb,
        );
        assert_eq!(w[0].ineligible.as_deref(), Some("mirror pod"));
        let w = pod_workloads(
            &s,
            &[pod(rs, serde_json::json!({"edgewatt.io/pinned": "true"}))],
            &ns,
            &no_pdb,
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
        let w = pod_workloads(&spec(), &pods, &HashMap::new(), &exhausted);
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
        let out = edge_workloads(&spec(), &[w1, w2, w3], &[dev], &HashMap::new());
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
            &HashMap::new(),
            &HashMap::new(),
        );
        assert!(w[0].tolerates_starvation);
        assert_eq!(w[0].owner.as_deref(), Some("StatefulSet/default/db"));
        let other = serde_json::json!([{"key": "dedicated", "operator": "Exists"}]);
        let w = pod_workloads(
            &spec(),
            &[pod(sts, serde_json::json!({}), other)],
            &HashMap::new(),
            &HashMap::new(),
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
            &HashMap::new()
        )
        .is_empty());
        let out = edge_workloads(
            &spec(),
            &[plain],
            std::slice::from_ref(&dev),
            &HashMap::new(),
        );
        assert!(
            out[0]
                .ineligible
                .as_deref()
                .is_some_and(|m| m.contains("deviceSelector")),
            "{:?}",
            out[0].ineligible
        );
        let out = edge_workloads(&spec(), &[opted], &[dev], &HashMap::new());
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
}
