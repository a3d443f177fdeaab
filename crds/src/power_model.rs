//! `PowerModel` (`edgewatt.io/v1alpha1`, cluster-scoped): a power model for one CPU model (and
//! board type), fitted on the cluster's metered nodes and shared with meterless siblings.
//!
//! The path with the least privilege: metered nodes' exporters publish their estimator's
//! calibration as metrics (no write access to the API), the controller — which already reads
//! Prometheus and holds the Lease — aggregates them per model, judges the result against each
//! meter and writes one PowerModel per model; meterless exporters only get/list/watch them.
//!
//! The model is the estimator's: `P(u) = idleWatts + dynamicWatts · shape(u)`, where `shape` is
//! the reference load curve named by `spec.curve`, rescaled to 0..1 (exporter/src/estimator.rs).
//! An exporter uses it only when `status.shared` and `status.lastUpdate` is younger than its max
//! age ([`PowerModel::usable`]); its own meter (or its own saved calibration) always wins.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a PowerModel: what it applies to and its coefficients. Written by the controller.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgewatt.io",
    version = "v1alpha1",
    kind = "PowerModel",
    plural = "powermodels",
    shortname = "pm",
    category = "edgewatt",
    status = "PowerModelStatus",
    doc = "PowerModel is a CPU power model (idle and dynamic watts over the reference load curve) fitted by edgewatt on the metered nodes of one CPU model and board type, and used by meterless nodes of the same kind instead of the reference curve.",
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".spec.cpuModel"}"#,
    printcolumn = r#"{"name":"Threads","type":"integer","jsonPath":".spec.threads"}"#,
    printcolumn = r#"{"name":"Idle W","type":"number","jsonPath":".spec.idleWatts"}"#,
    printcolumn = r#"{"name":"Dynamic W","type":"number","jsonPath":".spec.dynamicWatts"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.meteredNodeCount"}"#,
    printcolumn = r#"{"name":"Error %","type":"number","jsonPath":".status.errorPercent"}"#,
    printcolumn = r#"{"name":"Shared","type":"boolean","jsonPath":".status.shared"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Updated","type":"date","jsonPath":".status.lastUpdate"}"#
)]
#[schemars(transform = crate::openapi::k8s_integer_formats)]
#[serde(rename_all = "camelCase")]
pub struct PowerModelSpec {
    /// `model name` from /proc/cpuinfo, exactly as the nodes report it.
    #[schemars(length(min = 1, max = 256))]
    pub cpu_model: String,
    /// Board or product name (devicetree `model`, else DMI `product_name`); empty when unknown.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub board: String,
    /// Logical CPUs of the nodes the model was fitted on; it applies to nodes with as many.
    #[schemars(range(min = 1))]
    pub threads: u32,
    /// The reference load curve the coefficients apply to (`modern` or `legacy`).
    #[schemars(length(min = 1, max = 32))]
    pub curve: String,
    /// Watts at 0 % CPU load.
    #[schemars(range(min = 0.0))]
    pub idle_watts: f64,
    /// Watts added between 0 % and 100 % load.
    #[schemars(range(min = 0.0))]
    pub dynamic_watts: f64,
}

/// What the model was built from and whether it is shared.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[schemars(transform = crate::openapi::k8s_integer_formats)]
#[serde(rename_all = "camelCase")]
pub struct PowerModelStatus {
    /// True when meterless nodes may use the model: enough data, error within the threshold.
    #[serde(default)]
    pub shared: bool,
    /// `Shared`, `TooFewNodes`, `TooFewSamples`, `ErrorAboveThreshold` or `NoFreshData`.
    #[serde(default)]
    pub reason: String,
    /// Human-readable detail of `reason`.
    #[serde(default)]
    pub message: String,
    /// Metered nodes whose calibration the model was built from (at most 50 listed).
    #[serde(default)]
    pub metered_nodes: Vec<String>,
    #[serde(default)]
    pub metered_node_count: u32,
    /// Calibration samples behind the model, all nodes together.
    #[serde(default)]
    pub samples: u64,
    /// Worst error of the model against any contributing meter, percent of that node's
    /// full-load watts: the node's own fit error plus the widest gap between the model and the
    /// node's own fit over the load range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_percent: Option<f64>,
    /// When the controller last judged the model (RFC 3339). Exporters treat a model older than
    /// their max age as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<String>,
}

/// Reasons in `status.reason`.
pub mod reason {
    pub const SHARED: &str = "Shared";
    pub const TOO_FEW_NODES: &str = "TooFewNodes";
    pub const TOO_FEW_SAMPLES: &str = "TooFewSamples";
    pub const ERROR_ABOVE_THRESHOLD: &str = "ErrorAboveThreshold";
    pub const NO_FRESH_DATA: &str = "NoFreshData";
}

/// What a model applies to: nodes with the same CPU model string, board and thread count (the
/// curve follows from the CPU model).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelKey {
    pub cpu_model: String,
    pub board: String,
    pub threads: u32,
    pub curve: String,
}

impl ModelKey {
    /// The object name: a readable slug of the key plus a hash of all of it (two CPU names that
    /// slug alike still get two objects). A DNS-1123 subdomain, as metadata.name must be.
    pub fn object_name(&self) -> String {
        let slug = |s: &str| {
            let mut out = String::new();
            for c in s.to_ascii_lowercase().chars() {
                if c.is_ascii_alphanumeric() {
                    out.push(c);
                } else if !out.ends_with('-') {
                    out.push('-');
                }
            }
            out.trim_matches('-').chars().take(60).collect::<String>()
        };
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let mut h: u64 = 0xcbf29ce484222325;
        for b in format!(
            "{}\0{}\0{}\0{}",
            self.cpu_model, self.board, self.threads, self.curve
        )
        .bytes()
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        let mut parts = vec![slug(&self.cpu_model)];
        if !self.board.is_empty() {
            parts.push(slug(&self.board));
        }
        parts.push(format!("{}t", self.threads));
        parts.push(format!("{:08x}", h as u32));
        parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-")
    }
}

impl PowerModelSpec {
    pub fn key(&self) -> ModelKey {
        ModelKey {
            cpu_model: self.cpu_model.clone(),
            board: self.board.clone(),
            threads: self.threads,
            curve: self.curve.clone(),
        }
    }
}

/// Why a PowerModel cannot be used by an exporter now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unusable {
    #[error("not shared ({0})")]
    NotShared(String),
    #[error("never updated")]
    NeverUpdated,
    #[error("last updated {0:.0} s ago, more than the max age")]
    Stale(f64),
    #[error("coefficients not finite or negative")]
    BadCoefficients,
}

impl PowerModel {
    /// Whether a meterless node may use the model at `now`: shared by the controller, judged at
    /// most `max_age` ago (a controller that stopped, or metered nodes that went away, leave a
    /// model that ages out), with sane coefficients.
    pub fn usable(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        max_age: std::time::Duration,
    ) -> Result<(), Unusable> {
        let status = self.status.clone().unwrap_or_default();
        if !status.shared {
            return Err(Unusable::NotShared(status.reason));
        }
        let updated = status
            .last_update
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .ok_or(Unusable::NeverUpdated)?;
        let age = (now - updated.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1e3;
        if age > max_age.as_secs_f64() {
            return Err(Unusable::Stale(age));
        }
        let (a, b) = (self.spec.idle_watts, self.spec.dynamic_watts);
        if !(a.is_finite() && b.is_finite() && a >= 0.0 && b >= 0.0) {
            return Err(Unusable::BadCoefficients);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cpu: &str, board: &str) -> ModelKey {
        ModelKey {
            cpu_model: cpu.into(),
            board: board.into(),
            threads: 8,
            curve: "modern".into(),
        }
    }

    #[test]
    fn object_names_are_dns_subdomains_and_distinct() {
        let re = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
        let a = key(
            "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz",
            "PowerEdge R630",
        )
        .object_name();
        let b = key("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", "").object_name();
        let c = key("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHZ", "").object_name();
        for n in [&a, &b, &c] {
            assert!(re.is_match(n) && n.len() <= 253, "{n}");
        }
        assert!(a.starts_with("intel-r-xeon-r-cpu-e5-2680-v4-2-40ghz-poweredge-r630-8t-"));
        assert!(a != b && b != c, "{a} {b} {c}");
        assert_eq!(key("", "").object_name().len(), "8t-".len() + 8);
        assert!(re.is_match(&key("€€€", "").object_name()));
    }
}
