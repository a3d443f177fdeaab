//! Power models shared across the cluster (issue 21 §2; `PowerModel` in crds/src/power_model.rs).
//!
//! Two directions, both around the [`Estimator`]:
//! - A node with a meter publishes its estimator's fitted coefficients as
//!   `estimator_calibration_{watts,samples}` (and `estimator_fit_error_watts`) — a metered
//!   exporter needs no write access to the API: the controller builds PowerModels from these.
//! - A node without one watches PowerModels (get/list/watch only) and, while one for its CPU
//!   model, board and thread count is shared and fresh, estimates with it instead of the
//!   reference curve (`estimator_info{model_source="cluster"}`). Its own calibration (a meter it
//!   has or had) always wins; a stale or withdrawn model gives the reference curve back.

use crate::sysfs::HostRoot;

/// The PowerModel side needs the Kubernetes API (the CRD type and a watch): built with the
/// `kubernetes` feature (the default; `make run`'s local build has neither).
#[cfg(feature = "kubernetes")]
mod cluster;
#[cfg(feature = "kubernetes")]
pub use cluster::*;

/// A metered node's calibration, for `estimator_calibration_*`.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationReport {
    /// `cpu_model`, `board`, `threads`, `curve`.
    pub labels: Vec<(&'static str, String)>,
    pub idle_watts: f64,
    pub dynamic_watts: f64,
    pub samples: u64,
    pub fit_error_watts: f64,
}

/// Where the estimate comes from (`estimator_info{model_source}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// The bundled reference (TDP table and load curve).
    Reference,
    /// This node's own calibration against its meter (live or saved).
    Node,
    /// A PowerModel from the cluster.
    Cluster,
}

impl ModelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Node => "node",
            Self::Cluster => "cluster",
        }
    }
}

/// Board type: the devicetree `model` (ARM boards), else DMI's `product_name`; empty if neither.
pub fn board_name(root: &HostRoot) -> String {
    for p in [
        "/sys/firmware/devicetree/base/model",
        "/sys/class/dmi/id/product_name",
    ] {
        if let Ok(raw) = std::fs::read(root.path(p)) {
            let s = String::from_utf8_lossy(&raw)
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string();
            if !s.is_empty() {
                return s;
            }
        }
    }
    String::new()
}
