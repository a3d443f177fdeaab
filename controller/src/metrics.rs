//! The controller's own metrics (names in `edgewatt_crds::metrics::control`), served with
//! `/healthz` and `/readyz` so the chart's PrometheusRule can alert on migrations, failures,
//! starved targets and stale data.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{http::StatusCode, response::IntoResponse, routing::get, Router};
use edgewatt_crds::metrics::control;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MigrationLabels {
    pub policy: String,
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub policy: String,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// All controller metrics, cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub migrations: Family<MigrationLabels, Counter>,
    pub migration_duration: Histogram,
    pub starved_targets: Family<PolicyLabels, Gauge>,
    pub target_starved: Family<TargetLabels, Gauge>,
    pub prometheus_errors: Counter,
    pub data_age: Family<KindLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Set once the stores have synced; `/readyz` answers 200 after that.
    pub ready: Arc<AtomicBool>,
}

fn strip_total(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let migrations = Family::<MigrationLabels, Counter>::default();
        let migration_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 12),
        );
        let starved_targets = Family::<PolicyLabels, Gauge>::default();
        let target_starved = Family::<TargetLabels, Gauge>::default();
        let prometheus_errors = Counter::default();
        let data_age = Family::default();
        r.register(
            strip_total(control::MIGRATIONS_TOTAL),
            "Workload moves by policy, kind and result",
            migrations.clone(),
        );
        r.register(
            control::MIGRATION_DURATION_SECONDS,
            "Time from migration start to its end",
            migration_duration.clone(),
        );
        r.register(
            control::STARVED_TARGETS,
            "Targets currently starved per policy",
            starved_targets.clone(),
        );
        r.register(
            control::TARGET_STARVED,
            "1 while a target is starved",
            target_starved.clone(),
        );
        r.register(
            strip_total(control::PROMETHEUS_ERRORS_TOTAL),
            "Failed Prometheus reads",
            prometheus_errors.clone(),
        );
        r.register(
            control::PROMETHEUS_DATA_AGE_SECONDS,
            "Age of the oldest sample used in the last cycle, per target kind",
            data_age.clone(),
        );
        Self {
            registry: Arc::new(r),
            migrations,
            migration_duration,
            starved_targets,
            target_starved,
            prometheus_errors,
            data_age,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Counts one migration outcome.
    pub fn migration(&self, policy: &str, kind: &str, result: &str) {
        self.migrations
            .get_or_create(&MigrationLabels {
                policy: policy.into(),
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `/metrics`, `/healthz`, `/readyz`.
    pub fn router(&self) -> Router {
        let m = self.clone();
        let ready = self.ready.clone();
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = m.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.encode(),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = ready.load(Ordering::Relaxed);
                    async move {
                        if ready {
                            (StatusCode::OK, "ready").into_response()
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "stores not synced").into_response()
                        }
                    }
                }),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_contract() {
        let m = Metrics::new();
        m.migration("p", "EdgeWorkload", "Succeeded");
        m.prometheus_errors.inc();
        let text = m.encode();
        assert!(text.contains(
            "edgewatt_migrations_total{policy=\"p\",kind=\"EdgeWorkload\",result=\"Succeeded\"} 1"
        ), "{text}");
        assert!(text.contains("edgewatt_prometheus_errors_total 1"));
        assert!(text.contains("# TYPE edgewatt_migration_duration_seconds histogram"));
    }
}
