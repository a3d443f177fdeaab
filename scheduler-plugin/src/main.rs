//! `edgewatt-scheduler`: the kube-scheduler extender binary.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use edgewatt_crds::{metrics::MetricNames, prom::PromReader};
use edgewatt_scheduler::{config::Config, refresh::Refresher, server, state::AppState};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let mut state = AppState::new(config.policy());
    state.max_body_bytes = config.max_body_bytes;
    let state = Arc::new(state);
    let reader = PromReader::new(&config.prometheus).context("prometheus client")?;
    let refresher = Refresher::new(
        reader,
        MetricNames::new(config.metric_prefix.clone()),
        config.max_data_age,
    );
    tokio::spawn(refresher.run(state.clone(), config.refresh_interval));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    tracing::info!(listen = %config.listen, prometheus = %config.prometheus.url, "edgewatt-scheduler serving");
    axum::serve(listener, server::router(state))
        .with_graceful_shutdown(shutdown())
        .await
        .context("serve")?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
