//! `/metrics`, `/healthz` and `/readyz` for `edgewatt-exporter serve`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::collector::SharedSnapshot;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    snapshot: SharedSnapshot,
}

pub fn router(registry: Arc<Registry>, snapshot: SharedSnapshot) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, snapshot })
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
