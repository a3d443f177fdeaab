//! edgewatt's kube-scheduler extender: filters out nodes without power headroom and ranks the
//! rest by it, from a Prometheus-fed table refreshed in the background, failing open when the
//! data is missing or stale.
//!
//! - [`protocol`]: the extender wire types (upstream Go field names);
//! - [`headroom`]: the pure headroom model and decisions;
//! - [`refresh`]: the background Prometheus refresher;
//! - [`state`]: what handlers and the refresher share;
//! - [`server`]: the axum routes;
//! - [`metrics`]: the extender's own metrics;
//! - [`config`]: the command line.

pub mod config;
pub mod headroom;
pub mod metrics;
pub mod protocol;
pub mod refresh;
pub mod server;
pub mod state;
