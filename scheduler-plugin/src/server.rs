//! HTTP routes: `POST /filter`, `POST /prioritize`, `GET /healthz`, `/readyz`, `/metrics`.
//!
//! Bodies are read as bytes and decoded here (not by axum's `Json`), so a malformed request gets
//! a 400 with serde's reason, an oversized one a 413 naming the limit, and no `Content-Type`
//! header is required (kube-scheduler sets it, curl users often do not).

use std::{sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};

use crate::{headroom, protocol::ExtenderArgs, state::AppState};

/// The extender's router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Decodes `ExtenderArgs`, or the error reply.
/// The error is boxed: a `Response` is large and this is the hot path's happy case.
fn decode(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExtenderArgs, Box<Response>> {
    let body = body
        .map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                (
                    status,
                    format!(
                        "request body exceeds the limit of {} bytes (--max-body-bytes)\n",
                        state.max_body_bytes
                    ),
                )
                    .into_response()
            } else {
                (
                    status,
                    format!("cannot read request body: {}\n", rejection.body_text()),
                )
                    .into_response()
            }
        })
        .map_err(Box::new)?;
    serde_json::from_slice(&body)
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("invalid ExtenderArgs JSON: {e}\n"),
            )
                .into_response()
        })
        .map_err(Box::new)
}

async fn filter(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let response = match decode(&state, body) {
        Ok(args) => {
            let pod = pod_key(&args);
            let (result, outcome) = state.decide(|inputs| headroom::filter(inputs, args));
            state.count_outcome("filter", outcome, &pod);
            Json(result).into_response()
        }
        Err(r) => *r,
    };
    state
        .metrics
        .observe("filter", response.status().as_u16(), start.elapsed());
    response
}

async fn prioritize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let response = match decode(&state, body) {
        Ok(args) => {
            let (scores, outcome) = state.decide(|inputs| headroom::prioritize(inputs, &args));
            state.count_outcome("prioritize", outcome, &pod_key(&args));
            json_sized(&scores, scores.len() * 32)
        }
        Err(r) => *r,
    };
    state
        .metrics
        .observe("prioritize", response.status().as_u16(), start.elapsed());
    response
}

/// `value` as a JSON reply, serialised into a buffer of `capacity` bytes: axum's `Json` starts at
/// 128 bytes and doubles its way to a 5 000-node reply (≈ 150 KiB), copying it ten times.
fn json_sized(value: &impl serde::Serialize, capacity: usize) -> Response {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], buf).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the reply: {e}\n"),
        )
            .into_response(),
    }
}

/// `namespace/name` of the request's pod, for logs.
fn pod_key(args: &ExtenderArgs) -> String {
    let m = &args.pod.metadata;
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first Prometheus refresh attempt\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
