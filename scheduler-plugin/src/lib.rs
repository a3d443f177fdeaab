//! edgewatt's kube-scheduler extender: filters out nodes without power headroom and ranks the
//! rest by it, from a Prometheus-fed table refreshed in the background, failing open when the
//! data is missing or stale.
//!
//! - [`protocol`]: the extender wire types (upstream Go field names);
//! - [`headroom`]: the pure headroom model and decisions;
//! - [`node_table`]: its per-node states, by name;
//! - [`exempt`]: pods that are never filtered;
//! - [`nodes`]: the Node view (budget annotations, taints), pure;
//! - [`tls`]: HTTPS with certificate reload;
//! - [`refresh`]: the background Prometheus refresher;
//! - [`node_watch`]: the Node watcher that keeps the view current;
//! - [`state`]: what handlers and the refresher share;
//! - [`server`]: the axum routes;
//! - [`metrics`]: the extender's own metrics;
//! - [`config`]: the command line.

pub mod config;
pub mod exempt;
pub mod headroom;
pub mod metrics;
pub mod node_table;
pub mod node_watch;
pub mod nodes;
pub mod protocol;
pub mod refresh;
pub mod server;
pub mod state;
pub mod tls;
