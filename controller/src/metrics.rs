//! The controller's own metrics (names in `edgewatt_crds::metrics::control`), served with
//! `/healthz` and `/readyz` so the chart's PrometheusRule can alert on migrations, failures,
//! starved targets and stale data.
//!
//! The decision gauges (`edgewatt_target_starved`, `edgewatt_starved_targets`) are what the
//! scheduler extender filters nodes by, so only the Lease holder exports them: they sit in their
//! own registry that `/metrics` serves only while [`Fence::is_leader`] holds — a standby, or a
//! leader past its renew deadline, exports none (DESIGN.md "Controller and extender metrics").
//! Their `mode` label (`Migrate`/`Observe`) lets the extender ignore dry runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use crate::leader::Fence;

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
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct TargetLabels {
    pub policy: String,
    pub mode: String,
    pub kind: String,
    pub name: String,
    /// EdgeDevices' namespace; empty for nodes.
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PowerModelLabels {
    pub model: String,
    pub cpu_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReasonLabels {
    pub policy: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DegradedLabels {
    pub policy: String,
    pub mode: String,
    pub action: String,
    pub criticality: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ForecastLabels {
    pub policy: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub policy: String,
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OnePolicy {
    pub policy: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A gauge family whose series belong to policies: a cycle sets a policy's series to exactly
/// the given ones and the rest of that policy's go, so a figure never outlives what it
/// describes (a restored workload, a vanished target, a deleted policy).
#[derive(Clone)]
pub struct PolicyGauges<L> {
    pub family: Family<L, F64Gauge>,
    owned: Arc<Mutex<BTreeMap<String, BTreeSet<L>>>>,
}

impl<L> Default for PolicyGauges<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    fn default() -> Self {
        Self {
            family: Family::default(),
            owned: Arc::default(),
        }
    }
}

impl<L> PolicyGauges<L>
where
    L: Clone + std::hash::Hash + Eq + Ord,
{
    /// `policy`'s series are now exactly `series`.
    pub fn set(&self, policy: &str, series: impl IntoIterator<Item = (L, f64)>) {
        let mut owned = self.owned.lock().expect("policy gauges lock");
        let mut now = BTreeSet::new();
        for (l, v) in series {
            self.family.get_or_create(&l).set(v);
            now.insert(l);
        }
        if let Some(old) = owned.get(policy) {
            for l in old.difference(&now) {
                self.family.remove(l);
            }
        }
        owned.insert(policy.to_string(), now);
    }

    /// Every series of `policy` goes.
    pub fn withdraw(&self, policy: &str) {
        if let Some(old) = self
            .owned
            .lock()
            .expect("policy gauges lock")
            .remove(policy)
        {
            for l in &old {
                self.family.remove(l);
            }
        }
    }

    pub fn clear(&self) {
        self.owned.lock().expect("policy gauges lock").clear();
        self.family.clear();
    }
}

/// The decision series set per policy.
type Exported = BTreeMap<String, (PolicyLabels, BTreeSet<TargetLabels>)>;

/// All controller metrics, cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// The decision gauges, served only while leading.
    decisions: Arc<Registry>,
    fence: Fence,
    /// The decision series currently set, per policy (to withdraw them).
    exported: Arc<Mutex<Exported>>,
    pub migrations: Family<MigrationLabels, Counter>,
    pub migration_duration: Histogram,
    pub starved_targets: Family<PolicyLabels, Gauge>,
    pub target_starved: Family<TargetLabels, Gauge>,
    pub prometheus_errors: Counter,
    pub data_age: Family<KindLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Shared power models (Lease holder only, like the decision gauges).
    pub power_model_shared: Family<PowerModelLabels, Gauge>,
    pub power_model_error: Family<PowerModelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Set once the stores have synced; `/readyz` answers 200 after that.
    pub ready: Arc<AtomicBool>,
    // The continuity series: decisions too, exported by the Lease holder only.
    pub left_alone: PolicyGauges<ReasonLabels>,
    pub degraded: PolicyGauges<DegradedLabels>,
    pub runway: PolicyGauges<ForecastLabels>,
    pub recharge: PolicyGauges<ForecastLabels>,
    pub shortfall: PolicyGauges<ForecastLabels>,
    pub ladder_steps: Family<StepLabels, Counter>,
    pub flaps: Family<OnePolicy, Counter>,
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
    /// Metrics of a controller that always leads (tests).
    pub fn new() -> Self {
        Self::with_fence(Fence::always())
    }

    /// Metrics whose decision gauges are exported only while `fence` confirms leadership.
    pub fn with_fence(fence: Fence) -> Self {
        let mut r = Registry::default();
        let mut d = Registry::default();
        let migrations = Family::<MigrationLabels, Counter>::default();
        let migration_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 12),
        );
        let starved_targets = Family::<PolicyLabels, Gauge>::default();
        let target_starved = Family::<TargetLabels, Gauge>::default();
        let prometheus_errors = Counter::default();
        let data_age = Family::default();
        let power_model_shared = Family::<PowerModelLabels, Gauge>::default();
        let power_model_error = Family::default();
        d.register(
            control::POWER_MODEL_SHARED,
            "1 while a PowerModel is shared with meterless nodes (Lease holder only)",
            power_model_shared.clone(),
        );
        d.register(
            control::POWER_MODEL_ERROR_PERCENT,
            "A PowerModel's error against its meters, percent of full-load watts (Lease holder only)",
            power_model_error.clone(),
        );
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
        d.register(
            control::STARVED_TARGETS,
            "Targets currently starved per policy (Lease holder only; mode Migrate or Observe)",
            starved_targets.clone(),
        );
        d.register(
            control::TARGET_STARVED,
            "1 while a target is starved (Lease holder only; mode Migrate or Observe)",
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
        let left_alone = PolicyGauges::default();
        let degraded = PolicyGauges::default();
        let runway = PolicyGauges::default();
        let recharge = PolicyGauges::default();
        let shortfall = PolicyGauges::default();
        let ladder_steps = Family::<StepLabels, Counter>::default();
        let flaps = Family::<OnePolicy, Counter>::default();
        d.register(
            control::LEFT_ALONE_WORKLOADS,
            "Workloads on starved targets left alone, by reason (Lease holder only)",
            left_alone.family.clone(),
        );
        d.register(
            control::DEGRADED_WORKLOADS,
            "Workloads the degradation ladder holds throttled or suspended (Observe: would hold)",
            degraded.family.clone(),
        );
        d.register(
            control::RUNWAY_FORECAST_SECONDS,
            "Forecast time until the target's battery reaches its reserve (absent beyond the horizon)",
            runway.family.clone(),
        );
        d.register(
            control::RECHARGE_FORECAST_SECONDS,
            "Forecast time until the target charges again (absent beyond the horizon)",
            recharge.family.clone(),
        );
        d.register(
            control::LADDER_SHORTFALL_WATTS,
            "Watts the ladder cannot save on a starved target even shedding all it may",
            shortfall.family.clone(),
        );
        r.register(
            strip_total(control::LADDER_STEPS_TOTAL),
            "Degradation ladder steps by policy, action and result",
            ladder_steps.clone(),
        );
        r.register(
            strip_total(control::LADDER_FLAPS_TOTAL),
            "Restores followed by a shed of the same workload within the flap window",
            flaps.clone(),
        );
        Self {
            left_alone,
            degraded,
            runway,
            recharge,
            shortfall,
            ladder_steps,
            flaps,
            registry: Arc::new(r),
            decisions: Arc::new(d),
            fence,
            exported: Arc::default(),
            migrations,
            migration_duration,
            starved_targets,
            target_starved,
            prometheus_errors,
            data_age,
            power_model_shared,
            power_model_error,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sets a PowerModel's gauges.
    pub fn set_power_model(&self, model: &str, cpu_model: &str, shared: bool, error: Option<f64>) {
        let l = PowerModelLabels {
            model: model.into(),
            cpu_model: cpu_model.into(),
        };
        self.power_model_shared
            .get_or_create(&l)
            .set(i64::from(shared));
        match error {
            Some(e) => {
                self.power_model_error.get_or_create(&l).set(e);
            }
            None => {
                self.power_model_error.remove(&l);
            }
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

    /// Sets policy `policy`'s decision gauges to exactly `starved` (mode `mode`): series of
    /// targets no longer starved, vanished, or of the other mode are withdrawn.
    pub fn set_starved(&self, policy: &str, mode: &str, starved: BTreeSet<TargetLabels>) {
        let mut ex = self.exported.lock().expect("exported lock");
        let labels = PolicyLabels {
            policy: policy.into(),
            mode: mode.into(),
        };
        if let Some((old_p, old_t)) = ex.get(policy) {
            for t in old_t.difference(&starved) {
                self.target_starved.remove(t);
            }
            if *old_p != labels {
                self.starved_targets.remove(old_p);
            }
        }
        for t in &starved {
            self.target_starved.get_or_create(t).set(1);
        }
        self.starved_targets
            .get_or_create(&labels)
            .set(starved.len() as i64);
        ex.insert(policy.into(), (labels, starved));
    }

    /// Withdraws every decision series of `policy` (deleted, or no longer evaluated).
    pub fn withdraw_policy(&self, policy: &str) {
        let mut ex = self.exported.lock().expect("exported lock");
        if let Some((p, ts)) = ex.remove(policy) {
            for t in &ts {
                self.target_starved.remove(t);
            }
            self.starved_targets.remove(&p);
        }
        drop(ex);
        self.left_alone.withdraw(policy);
        self.degraded.withdraw(policy);
        self.runway.withdraw(policy);
        self.recharge.withdraw(policy);
        self.shortfall.withdraw(policy);
    }

    /// Withdraws every decision series (leadership lost).
    pub fn withdraw_all(&self) {
        self.exported.lock().expect("exported lock").clear();
        self.target_starved.clear();
        self.starved_targets.clear();
        self.left_alone.clear();
        self.degraded.clear();
        self.runway.clear();
        self.recharge.clear();
        self.shortfall.clear();
    }

    /// The text exposition format; the decision gauges only while leading.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if self.fence.is_leader() {
            let mut d = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut d, &self.decisions);
            // One exposition: a single `# EOF` at the end.
            if let Some(body) = out.strip_suffix("# EOF\n") {
                out = format!("{body}{d}");
            }
        }
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
        let t = |name: &str, mode: &str| TargetLabels {
            policy: "p".into(),
            mode: mode.into(),
            kind: "Node".into(),
            name: name.into(),
            namespace: String::new(),
        };
        m.set_starved("p", "Migrate", [t("n1", "Migrate")].into());
        let text = m.encode();
        assert!(text.contains(
            "edgewatt_target_starved{policy=\"p\",mode=\"Migrate\",kind=\"Node\",name=\"n1\",namespace=\"\"} 1"
        ), "{text}");
        assert!(text.contains("edgewatt_starved_targets{policy=\"p\",mode=\"Migrate\"} 1"));
        assert_eq!(text.matches("# EOF").count(), 1);
        // Switched to Observe: the Migrate series go (the extender filters on those).
        m.set_starved("p", "Observe", [t("n1", "Observe")].into());
        let text = m.encode();
        assert!(!text.contains("mode=\"Migrate\""), "{text}");
        m.withdraw_policy("p");
        assert!(!m.encode().contains("edgewatt_target_starved{"));
        assert!(text.contains(
            "edgewatt_migrations_total{policy=\"p\",kind=\"EdgeWorkload\",result=\"Succeeded\"} 1"
        ), "{text}");
        assert!(text.contains("edgewatt_prometheus_errors_total 1"));
        assert!(text.contains("# TYPE edgewatt_migration_duration_seconds histogram"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_exports_no_decisions() {
        let fence = Fence::new();
        let m = Metrics::with_fence(fence.clone());
        let t = TargetLabels {
            policy: "p".into(),
            mode: "Migrate".into(),
            kind: "Node".into(),
            name: "n1".into(),
            namespace: String::new(),
        };
        m.set_starved("p", "Migrate", [t].into());
        assert!(!m.encode().contains("edgewatt_target_starved"));
        fence.confirm(tokio::time::Instant::now() + std::time::Duration::from_secs(10));
        assert!(m.encode().contains("edgewatt_target_starved{"));
        // Past the renew deadline, before anything noticed: gone from the next scrape.
        tokio::time::advance(std::time::Duration::from_secs(11)).await;
        assert!(!m.encode().contains("edgewatt_target_starved"));
        assert!(m.encode().ends_with("# EOF\n"));
    }
}
