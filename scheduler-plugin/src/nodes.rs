//! The extender's read-only view of the cluster's Nodes: each node's
//! `edgewatt.io/power-budget-watts` annotation and whether it carries edgewatt's taint.
//!
//! With `nodeCacheCapable: true` kube-scheduler sends node names only, so the annotation the
//! controller reads never reached the extender and the two disagreed on budgets. The view keeps
//! just these two facts per node — not the objects, so memory stays flat at thousands of nodes.
//! Until the first list completes nothing is known about annotations, and budgets count as
//! unknown rather than guessed. [`crate::node_watch`] fills it; this module does no I/O.

use k8s_openapi::api::core::v1::{Node, NodeSpec};

use edgewatt_crds::{budget_annotation, keys};

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
            budget_watts: node
                .metadata
                .annotations
                .as_ref()
                .and_then(budget_annotation),
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

    /// A synced view of `nodes` (a complete Node list; tests, benchmarks).
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

    /// How many nodes have a budget annotation.
    pub fn annotated(&self) -> usize {
        self.nodes
            .values()
            .filter(|f| f.budget_watts.is_some())
            .count()
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

/// Whether the spec carries edgewatt's taint (any value or effect: the controller owns the key).
pub fn starved_taint(spec: Option<&NodeSpec>) -> bool {
    spec.and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == keys::STARVED_TAINT))
}
