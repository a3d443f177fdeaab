//! The extender's read-only view of the cluster's Nodes: each node's
//! `edgewatt.io/power-budget-watts` annotation and whether it carries edgewatt's taint.
//!
//! With `nodeCacheCapable: true` kube-scheduler sends node names only, so the annotation the
//! controller reads never reached the extender and the two disagreed on budgets. A Node watcher
//! (RBAC `get/list/watch nodes`, nothing else) keeps just these two facts per node — not the
//! objects, so memory stays flat at thousands of nodes. Until the first list completes nothing
//! is known about annotations, and budgets count as unknown rather than guessed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};

use edgewatt_crds::keys;

use crate::state::AppState;

/// What the Node objects say about one node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeFacts {
    /// The `edgewatt.io/power-budget-watts` annotation, when set to a finite number ≥ 0.
    pub budget_watts: Option<f64>,
    /// The node carries the `edgewatt.io/energy-starved` taint.
    pub starved_taint: bool,
}

impl NodeFacts {
    pub fn of(node: &Node) -> Self {
        Self {
            budget_watts: budget_annotation(node.metadata.annotations.as_ref()),
            starved_taint: starved_taint(node.spec.as_ref()),
        }
    }
}

/// Whether the view can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewState {
    /// `--watch-nodes=false`: annotations are never known; budgets come from the budget metric
    /// and the default only.
    Disabled,
    /// Watching, first list not complete: annotation budgets unknown.
    Syncing,
    /// Listed at least once; kept current by the watch.
    Synced,
}

type Map = std::collections::HashMap<String, NodeFacts, foldhash::fast::RandomState>;

/// Every known node's facts.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub state: ViewState,
    nodes: Map,
    /// Bumped whenever some node's facts change (not on every Node event: status updates that
    /// leave the budget and taint alone keep it). A table that copied the facts at this
    /// generation may answer for the view without a second lookup per candidate.
    generation: u64,
}

impl NodeView {
    pub fn new(state: ViewState) -> Self {
        Self {
            state,
            nodes: Map::default(),
            generation: 0,
        }
    }

    /// A synced view of `nodes` (tests, benchmarks).
    pub fn synced(nodes: impl IntoIterator<Item = (String, NodeFacts)>) -> Self {
        Self {
            state: ViewState::Synced,
            nodes: nodes.into_iter().collect(),
            generation: 0,
        }
    }

    pub fn get(&self, name: &str) -> Option<&NodeFacts> {
        self.nodes.get(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn insert(&mut self, name: String, facts: NodeFacts) {
        if self.nodes.insert(name, facts) != Some(facts) {
            self.generation += 1;
        }
    }

    pub fn remove(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.generation += 1;
        }
    }

    /// See the field: changes whenever any node's facts change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes the place of `old`: a generation that never equals one `old` had.
    pub fn succeed(&mut self, old: &NodeView) {
        self.generation = old.generation + 1;
    }
}

/// The budget annotation, parsed the way the controller does (`controller/src/snapshot.rs`):
/// a finite number of watts ≥ 0, surrounding spaces allowed; anything else is no budget.
pub fn budget_annotation(annotations: Option<&BTreeMap<String, String>>) -> Option<f64> {
    annotations?
        .get(keys::POWER_BUDGET_WATTS)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|b| b.is_finite() && *b >= 0.0)
}

/// Whether the spec carries edgewatt's taint (any value or effect: the controller owns the key).
pub fn starved_taint(spec: Option<&NodeSpec>) -> bool {
    spec.and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == keys::STARVED_TAINT))
}

/// Watches Nodes until the task is dropped, keeping `state`'s view current. A re-list (after a
/// 410 or a reconnect) replaces the view at once when complete, so deleted nodes go too. Errors
/// (403 without the chart's RBAC, API server down) are retried with kube-runtime's backoff,
/// counted, and logged once per change of state.
pub async fn watch(client: Client, state: Arc<AppState>) {
    let api: Api<Node> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Option<Map> = None;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) => {
                state.metrics.node_watch_errors.inc();
                if !failing {
                    tracing::warn!(%error, "cannot list/watch Nodes: budget annotations are not refreshed (needs RBAC get/list/watch nodes)");
                } else {
                    tracing::debug!(%error, "Node watch failed again");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!("Node watch works again");
            failing = false;
        }
        match event {
            watcher::Event::Init => listing = Some(Map::default()),
            watcher::Event::InitApply(n) => {
                if let (Some(l), Some(name)) = (listing.as_mut(), n.metadata.name.clone()) {
                    l.insert(name, NodeFacts::of(&n));
                }
            }
            watcher::Event::InitDone => {
                let nodes = listing.take().unwrap_or_default();
                let annotated = nodes.values().filter(|f| f.budget_watts.is_some()).count();
                tracing::info!(
                    nodes = nodes.len(),
                    annotated,
                    "Node list complete: budget annotations known"
                );
                state.replace_nodes(NodeView {
                    state: ViewState::Synced,
                    nodes,
                    generation: 0, // replace_nodes gives it its successor's
                });
            }
            watcher::Event::Apply(n) => {
                if let Some(name) = n.metadata.name.clone() {
                    state.update_node(name, Some(NodeFacts::of(&n)));
                }
            }
            watcher::Event::Delete(n) => {
                if let Some(name) = n.metadata.name.clone() {
                    state.update_node(name, None);
                }
            }
        }
    }
}

/// Builds the client from the in-cluster service account, else `KUBECONFIG`/`~/.kube/config`
/// (kube's inference), retrying every `retry` until it works: a missing kubeconfig is logged, and
/// until then budgets from annotations stay unknown (neutral, never guessed).
pub async fn client_with_retry(retry: Duration) -> Client {
    let mut logged = false;
    loop {
        match Client::try_default().await {
            Ok(c) => return c,
            Err(error) => {
                if !logged {
                    tracing::error!(%error, "no Kubernetes client configuration (in-cluster or KUBECONFIG): cannot watch Nodes; retrying");
                    logged = true;
                }
                tokio::time::sleep(retry).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_annotation_is_parsed_like_the_controller() {
        let a = |v: &str| BTreeMap::from([(keys::POWER_BUDGET_WATTS.to_string(), v.to_string())]);
        assert_eq!(budget_annotation(Some(&a(" 45.5 "))), Some(45.5));
        assert_eq!(budget_annotation(Some(&a("0"))), Some(0.0));
        for bad in ["-1", "NaN", "inf", "60W", ""] {
            assert_eq!(budget_annotation(Some(&a(bad))), None, "{bad:?}");
        }
        assert_eq!(budget_annotation(None), None);
    }
}
