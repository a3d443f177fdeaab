//! What the caches hold for one policy, as planner inputs: the targets (nodes, EdgeDevices) and
//! workloads (pods, EdgeWorkloads) the policy covers, and what it needs that the cluster does not
//! have (a store missing, forbidden or not synced yet), as problems. Pure over the stores.

use std::collections::HashMap;
use std::sync::Arc;

use edgewatt_crds::{EdgeDevice, EnergyPolicySpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::{
    context::Settings,
    planner::{TargetSnapshot, WorkloadSnapshot},
    snapshot::{self, PromData},
    status::Problem,
    stores::{Res, StoreState, Stores},
};

/// What the stores hold for one policy, as planner inputs.
pub struct View {
    pub targets: Vec<TargetSnapshot>,
    pub workloads: Vec<WorkloadSnapshot>,
    pub nodes: Vec<Arc<Node>>,
    pub devices: Vec<Arc<EdgeDevice>>,
    pub pods: Vec<Arc<Pod>>,
}

/// What `spec` needs from the caches that is not there: every missing or forbidden resource, as
/// problems. The parts of the policy that need them are skipped; the rest runs. Without
/// PodDisruptionBudgets the Eviction API still enforces them (only the pre-check goes).
pub fn missing_parts(stores: &Stores, spec: &EnergyPolicySpec) -> Vec<Problem> {
    let mut needed: Vec<&[Res]> = Vec::new();
    if spec.targets.node_selector.is_some() {
        needed.extend([&[Res::Nodes][..], &[Res::Pods][..], &[Res::Pdbs][..]]);
    }
    if spec.targets.edge_device_selector.is_some() {
        needed.push(&[Res::Devices, Res::Workloads]); // one report for Flotta as a whole
    }
    if spec
        .workloads
        .as_ref()
        .is_some_and(|w| w.namespace_selector.is_some())
    {
        needed.push(&[Res::Namespaces]);
    }
    needed
        .into_iter()
        .filter_map(|r| store_problem(stores, r))
        .collect()
}

/// Why a store cannot be used now, as a problem of the policies that need it.
fn store_problem(stores: &Stores, needed: &[Res]) -> Option<Problem> {
    needed.iter().find_map(|r| match stores.health.get(*r) {
        StoreState::Synced => None,
        StoreState::Missing(m) if r.is_flotta() => Some((
            "FlottaNotInstalled".into(),
            format!(
                "Flotta's CRDs are not installed ({}.management.project-flotta.io: {m}); \
                 EdgeDevice targets are skipped until they are (picked up without a restart)",
                r.plural()
            ),
        )),
        StoreState::Missing(m) => Some((
            "ResourceMissing".into(),
            format!("{} is not served: {m}", r.plural()),
        )),
        StoreState::Forbidden(m) => Some((
            "Forbidden".into(),
            format!("Forbidden: list {}: {m}", r.plural()),
        )),
        StoreState::Syncing => Some(("NotSynced".into(), format!("{} not listed yet", r.plural()))),
        StoreState::Failing(m) => Some((
            "NotSynced".into(),
            format!("{} not listed yet: {m}", r.plural()),
        )),
    })
}

impl View {
    /// Targets and workloads for `spec` from the stores; a store that is missing or forbidden
    /// leaves its part out and says so in `problems`.
    pub fn read(
        stores: &Stores,
        policy: &str,
        spec: &EnergyPolicySpec,
        prom: &PromData,
        settings: &Settings,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let (node_max_age, device_max_age) = (settings.node_max_age, settings.device_max_age);
        let mut v = View {
            targets: Vec::new(),
            workloads: Vec::new(),
            nodes: Vec::new(),
            devices: Vec::new(),
            pods: Vec::new(),
        };
        let ns_labels =
            snapshot::namespace_labels(&stores.synced(Res::Namespaces, &stores.namespaces));
        let no_pdbs = HashMap::new();
        let around = snapshot::Around {
            ns_labels: &ns_labels,
            exhausted: &no_pdbs,
            own_namespace: &settings.own_namespace,
            watts: &prom.workload_watts,
        };
        let mut edge_workloads = Vec::new();
        if spec.targets.node_selector.is_some() {
            match store_problem(stores, &[Res::Nodes, Res::Pods]) {
                Some(_) => {}
                None => {
                    v.nodes = stores.nodes.state();
                    v.pods = stores.pods.state();
                    let t = snapshot::node_targets(policy, spec, &v.nodes, prom, node_max_age);
                    if !t.iter().any(|t| t.in_policy) {
                        problems.push((
                            "SelectorMatchesNothing".into(),
                            "targets.nodeSelector matches no Node".into(),
                        ));
                    }
                    v.targets.extend(t);
                    let exhausted =
                        snapshot::exhausted_pdbs(&stores.synced(Res::Pdbs, &stores.pdbs));
                    let around = snapshot::Around {
                        exhausted: &exhausted,
                        ..around
                    };
                    v.workloads
                        .extend(snapshot::pod_workloads(spec, &v.pods, around));
                }
            }
        }
        if spec.targets.edge_device_selector.is_some() {
            match store_problem(stores, &[Res::Devices, Res::Workloads]) {
                Some(_) => {}
                None => {
                    v.devices = stores.devices.state();
                    edge_workloads = stores.workloads.state();
                    let t =
                        snapshot::device_targets(policy, spec, &v.devices, prom, device_max_age);
                    if !t.iter().any(|t| t.in_policy) {
                        problems.push((
                            "SelectorMatchesNothing".into(),
                            "targets.edgeDeviceSelector matches no EdgeDevice".into(),
                        ));
                    }
                    v.targets.extend(t);
                    v.workloads.extend(snapshot::edge_workloads(
                        spec,
                        &edge_workloads,
                        &v.devices,
                        around,
                    ));
                }
            }
        }
        if spec.workloads.is_some() && !v.targets.is_empty() {
            let pods_selected = v.pods.iter().any(|p| {
                snapshot::selected(
                    spec,
                    &p.namespace().unwrap_or_default(),
                    p.labels(),
                    &ns_labels,
                )
            });
            let edge_selected = edge_workloads.iter().any(|w| {
                !w.labels().contains_key(crate::mover::COPY_OF_LABEL)
                    && snapshot::selected(
                        spec,
                        &w.namespace().unwrap_or_default(),
                        w.labels(),
                        &ns_labels,
                    )
            });
            if !pods_selected && !edge_selected {
                problems.push((
                    "SelectorMatchesNothing".into(),
                    "workloads selects no Pod or EdgeWorkload".into(),
                ));
            }
        }
        v
    }
}
