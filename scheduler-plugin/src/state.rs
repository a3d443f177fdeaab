//! State shared by the request handlers and the background refresher.
//!
//! Handlers only ever clone an `Arc` to the latest table under a short read lock, so a slow or
//! dead Prometheus can never delay a scheduling decision.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, RwLock,
    },
    time::SystemTime,
};

use crate::{
    headroom::{self, FailOpen, HeadroomTable, Inputs, Outcome, Policy},
    metrics::Metrics,
    nodes::{NodeFacts, NodeView, ViewState},
};

/// Default request body limit: 1 000 full Node objects with long image lists are ~20 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Everything a request handler needs.
pub struct AppState {
    pub policy: Policy,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    table: RwLock<Option<Arc<HeadroomTable>>>,
    nodes: RwLock<NodeView>,
    ready: AtomicBool,
    /// Last fail-open state seen (see [`mode_code`]), so it is logged once per change.
    mode: AtomicU8,
}

const MODE_UNSET: u8 = u8::MAX;

fn mode_code(f: Option<FailOpen>) -> u8 {
    match f {
        None => 0,
        Some(FailOpen::NoTable) => 1,
        Some(FailOpen::NoData) => 2,
        Some(FailOpen::Stale { .. }) => 3,
    }
}

impl AppState {
    /// A state whose Node view starts in `nodes` state (`Syncing` when a watcher will fill it,
    /// `Disabled` without one).
    pub fn new(policy: Policy, nodes: ViewState) -> Self {
        let s = Self {
            policy,
            metrics: Metrics::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            table: RwLock::new(None),
            nodes: RwLock::new(NodeView::new(nodes)),
            ready: AtomicBool::new(false),
            mode: AtomicU8::new(MODE_UNSET),
        };
        s.node_gauges(&NodeView::new(nodes));
        s
    }

    /// With a table already in place and no Node watcher (tests, benchmarks).
    pub fn with_table(policy: Policy, table: HeadroomTable) -> Self {
        Self::with_view(policy, table, NodeView::new(ViewState::Disabled))
    }

    /// With a table and a Node view already in place (tests, benchmarks).
    pub fn with_view(policy: Policy, table: HeadroomTable, nodes: NodeView) -> Self {
        let s = Self::new(policy, nodes.state);
        s.replace_nodes(nodes);
        s.publish(table);
        s.mark_ready();
        s
    }

    /// Runs `f` on the inputs of one decision (the table and Node view as of now), holding the
    /// view's read lock only for its duration.
    pub fn decide<T>(&self, f: impl FnOnce(&Inputs) -> T) -> T {
        let table = self.table();
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        f(&Inputs {
            table: table.as_deref(),
            nodes: &nodes,
            policy: &self.policy,
            now: SystemTime::now(),
        })
    }

    /// Replaces the Node view (a complete list).
    pub fn replace_nodes(&self, mut view: NodeView) {
        self.node_gauges(&view);
        let mut current = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        view.succeed(&current);
        *current = view;
    }

    /// Sets (`Some`) or removes (`None`) one node's facts.
    pub fn update_node(&self, name: String, facts: Option<NodeFacts>) {
        let mut view = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        match facts {
            Some(f) => view.insert(name, f),
            None => view.remove(&name),
        }
        self.node_gauges(&view);
    }

    fn node_gauges(&self, view: &NodeView) {
        self.metrics
            .node_view_synced
            .set(i64::from(view.state == ViewState::Synced));
        self.metrics.nodes_known.set(view.len() as i64);
    }

    /// The latest table, if any refresh has succeeded.
    pub fn table(&self) -> Option<Arc<HeadroomTable>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the table (a successful refresh).
    pub fn publish(&self, mut table: HeadroomTable) {
        table.join(&self.nodes.read().unwrap_or_else(|e| e.into_inner()));
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(table));
        self.refresh_gauges();
    }

    /// Called after the first refresh attempt, whatever its result: from then on `/readyz` is
    /// 200 (an extender that fails open is still useful to the scheduler).
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Updates the data-age and fail-open gauges from the current table and returns the mode.
    pub fn refresh_gauges(&self) -> Option<FailOpen> {
        let table = self.table();
        let now = SystemTime::now();
        self.metrics
            .set_data_age(table.as_ref().and_then(|t| t.data_age(now)));
        let mode = headroom::mode(table.as_deref(), &self.policy, now).err();
        self.record_mode(mode);
        mode
    }

    /// Logs a change of fail-open state (once per change, never per request) and sets the gauge.
    pub fn record_mode(&self, mode: Option<FailOpen>) {
        let code = mode_code(mode);
        self.metrics.fail_open.set(i64::from(mode.is_some()));
        let old = self.mode.swap(code, Ordering::AcqRel);
        if old != code {
            match mode {
                Some(reason) => tracing::warn!(
                    %reason,
                    "failing open: every node passes the filter with a neutral score"
                ),
                None if old != MODE_UNSET => {
                    tracing::info!("fresh power data again: filtering and scoring by headroom")
                }
                None => {}
            }
        }
    }

    /// Counts how one request was answered: fail-open requests, and exempt pods (logged at
    /// debug with the reason).
    pub fn count_outcome(&self, verb: &str, outcome: Outcome, pod: &str) {
        match outcome {
            Outcome::Decided => self.record_mode(None),
            Outcome::FailOpen(f) => {
                self.record_mode(Some(f));
                self.metrics.fail_open_requests.inc();
            }
            Outcome::Exempt(e) => {
                tracing::debug!(verb, pod, reason = %e, "exempt pod: every node passes with a neutral score");
                self.metrics.count_exempt(verb, e.label());
            }
        }
    }
}
