//! The extender's own metrics (names from `edgewatt_crds::metrics::control`, shared with the
//! controller so the chart's alert rules cover both), served on `/metrics`.

use std::time::Duration;

use edgewatt_crds::metrics::control;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// `edgewatt_scheduler_fail_open`: 1 while every answer is neutral for lack of fresh data.
pub const FAIL_OPEN: &str = "edgewatt_scheduler_fail_open";
/// `edgewatt_scheduler_fail_open_requests_total`: requests answered neutrally (fail open).
pub const FAIL_OPEN_REQUESTS_TOTAL: &str = "edgewatt_scheduler_fail_open_requests_total";
/// `edgewatt_scheduler_exempt_requests_total{verb,reason}`: requests for pods never filtered.
pub const EXEMPT_REQUESTS_TOTAL: &str = "edgewatt_scheduler_exempt_requests_total";
/// `edgewatt_scheduler_node_watch_errors_total`: failed Node list/watch attempts.
pub const NODE_WATCH_ERRORS_TOTAL: &str = "edgewatt_scheduler_node_watch_errors_total";
/// `edgewatt_scheduler_node_view_synced`: 1 once the Node list completed (budget annotations known).
pub const NODE_VIEW_SYNCED: &str = "edgewatt_scheduler_node_view_synced";
/// `edgewatt_scheduler_nodes`: nodes in the Node view.
pub const NODES: &str = "edgewatt_scheduler_nodes";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExemptLabels {
    pub verb: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

type HistogramFamily = Family<VerbLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 50 µs .. ~0.8 s: a prioritize answer takes well under a millisecond, the scheduler's
    // httpTimeout is 300 ms.
    Histogram::new(exponential_buckets(0.00005, 2.0, 15))
}

fn strip_total(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// All extender metrics; the handles are shared, so clones count into the same series.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub prometheus_errors: Counter,
    /// `{kind="Node"}`, the same shape as the controller's; +Inf while there is no data.
    pub data_age: Family<KindLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub fail_open: Gauge,
    pub fail_open_requests: Counter,
    pub exempt_requests: Family<ExemptLabels, Counter>,
    pub node_watch_errors: Counter,
    pub node_view_synced: Gauge,
    pub nodes_known: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let prometheus_errors = Counter::default();
        let data_age = Family::default();
        let fail_open = Gauge::default();
        let fail_open_requests = Counter::default();
        let exempt_requests = Family::<ExemptLabels, Counter>::default();
        let node_watch_errors = Counter::default();
        let node_view_synced = Gauge::default();
        let nodes_known = Gauge::default();
        r.register(
            strip_total(control::SCHEDULER_REQUESTS_TOTAL),
            "Extender requests by verb and HTTP status code",
            requests.clone(),
        );
        r.register(
            control::SCHEDULER_REQUEST_DURATION_SECONDS,
            "Extender request handling time by verb",
            request_duration.clone(),
        );
        r.register(
            strip_total(control::PROMETHEUS_ERRORS_TOTAL),
            "Failed Prometheus refreshes",
            prometheus_errors.clone(),
        );
        r.register(
            control::PROMETHEUS_DATA_AGE_SECONDS,
            "Age of the newest node draw sample the extender can use (+Inf: none)",
            data_age.clone(),
        );
        r.register(
            FAIL_OPEN,
            "1 while the extender passes every node for lack of fresh data",
            fail_open.clone(),
        );
        r.register(
            strip_total(FAIL_OPEN_REQUESTS_TOTAL),
            "Requests answered neutrally because data was missing or stale",
            fail_open_requests.clone(),
        );
        r.register(
            strip_total(EXEMPT_REQUESTS_TOTAL),
            "Requests for pods the extender never filters (DaemonSet, static/mirror, tolerating the starvation taint, high priority), by reason",
            exempt_requests.clone(),
        );
        r.register(
            strip_total(NODE_WATCH_ERRORS_TOTAL),
            "Failed Node list/watch attempts (budget annotations)",
            node_watch_errors.clone(),
        );
        r.register(
            NODE_VIEW_SYNCED,
            "1 once the Node list completed and budget annotations are known",
            node_view_synced.clone(),
        );
        r.register(
            NODES,
            "Nodes in the extender's Node view",
            nodes_known.clone(),
        );
        Self {
            registry: r,
            requests,
            request_duration,
            prometheus_errors,
            data_age,
            fail_open,
            fail_open_requests,
            exempt_requests,
            node_watch_errors,
            node_view_synced,
            nodes_known,
        }
    }

    /// Counts one request for an exempt pod.
    pub fn count_exempt(&self, verb: &str, reason: &str) {
        self.exempt_requests
            .get_or_create(&ExemptLabels {
                verb: verb.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records one handled request.
    pub fn observe(&self, verb: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.request_duration
            .get_or_create(&VerbLabels {
                verb: verb.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets the data-age gauge (`None`: no data at all).
    pub fn set_data_age(&self, age: Option<Duration>) {
        self.data_age
            .get_or_create(&KindLabels {
                kind: "Node".to_string(),
            })
            .set(age.map_or(f64::INFINITY, |a| a.as_secs_f64()));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
