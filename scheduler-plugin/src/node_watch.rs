//! The Node watcher: keeps the shared [`NodeView`] current from the API server (RBAC
//! `get/list/watch nodes`, nothing else). The view itself, and what it keeps per node, is
//! [`crate::nodes`]; this is its I/O, as [`crate::refresh`] is the headroom table's.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};

use crate::{
    nodes::{NodeFacts, NodeView, ViewState},
    state::AppState,
};

/// Watches Nodes until the task is dropped, keeping `state`'s view current. A re-list (after a
/// 410 or a reconnect) replaces the view at once when complete, so deleted nodes go too. Errors
/// (403 without the chart's RBAC, API server down) are retried with kube-runtime's backoff,
/// counted, and logged once per change of state.
pub async fn watch(client: Client, state: Arc<AppState>) {
    let api: Api<Node> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Option<NodeView> = None;
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
            watcher::Event::Init => listing = Some(NodeView::new(ViewState::Synced)),
            watcher::Event::InitApply(n) => {
                if let (Some(l), Some(name)) = (listing.as_mut(), n.metadata.name.clone()) {
                    l.insert(name, NodeFacts::of(&n));
                }
            }
            watcher::Event::InitDone => {
                // replace_nodes gives the new view its predecessor's successor generation
                let view = listing
                    .take()
                    .unwrap_or_else(|| NodeView::new(ViewState::Synced));
                tracing::info!(
                    nodes = view.len(),
                    annotated = view.annotated(),
                    "Node list complete: budget annotations known"
                );
                state.replace_nodes(view);
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
