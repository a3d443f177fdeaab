//! `/metrics`, `/healthz` and `/readyz` for `edgewatt-exporter serve`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::snapshot::SharedSnapshot;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    snapshot: SharedSnapshot,
    /// Collection interval: `/healthz` fails after three without a finished collection.
    interval: Duration,
    started: Instant,
}

pub fn router(registry: Arc<Registry>, snapshot: SharedSnapshot, interval: Duration) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            registry,
            snapshot,
            interval,
            started: Instant::now(),
        })
}

/// Healthy while collections keep finishing: a collector thread stuck on a hung read (a sensor
/// file that blocks, an NFS-backed host path) leaves `/metrics` serving the same numbers forever,
/// so after three intervals without a finished collection the liveness probe fails and the
/// kubelet restarts the exporter.
async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let last = s.snapshot.read().ok().and_then(|snap| snap.finished_at);
    let since = last.unwrap_or(s.started).elapsed();
    let limit = s.interval * 3;
    if since <= limit {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no collection finished for {:.0}s (limit: 3 intervals of {:?}); the collector is stuck",
                since.as_secs_f64(),
                s.interval
            ),
        )
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format.
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let body = crate::metrics::render(&s.registry);
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::to_text_format(&body),
        )
    }
}

/// Ready once the first interval has been collected, so a scrape never sees an empty exporter.
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let intervals = s.snapshot.read().map(|s| s.intervals).unwrap_or(0);
    if intervals > 0 {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first collection not done yet".to_string(),
        )
    }
}
