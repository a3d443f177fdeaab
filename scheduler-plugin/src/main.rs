//! `edgewatt-scheduler`: the kube-scheduler extender binary.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use edgewatt_crds::{metrics::MetricNames, prom::PromReader};
use edgewatt_scheduler::{
    config::Config, node_watch, nodes::ViewState, refresh::Refresher, server, state::AppState,
    tls::ReloadingCert,
};

/// How often the TLS files are checked for a renewed pair.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// How often a missing Kubernetes client configuration is looked for again.
const KUBE_CONFIG_RETRY: Duration = Duration::from_secs(30);

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
    // kube and the TLS server use ring; reqwest (Prometheus) needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let view = if config.watch_nodes {
        ViewState::Syncing
    } else {
        ViewState::Disabled
    };
    let mut state = AppState::new(config.policy(), view);
    state.max_body_bytes = config.max_body_bytes;
    let state = Arc::new(state);
    let reader = PromReader::new(&config.prometheus).context("prometheus client")?;
    let refresher = Refresher::new(
        reader,
        MetricNames::new(config.metric_prefix.clone()),
        config.max_data_age,
    );
    tokio::spawn(refresher.run(state.clone(), config.refresh_interval));
    if config.watch_nodes {
        let state = state.clone();
        tokio::spawn(async move {
            let client = node_watch::client_with_retry(KUBE_CONFIG_RETRY).await;
            node_watch::watch(client, state).await;
        });
    }

    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(ReloadingCert::load(cert, key).context("TLS")?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        https = tls.is_some(),
        prometheus = %config.prometheus.url,
        watch_nodes = config.watch_nodes,
        "edgewatt-scheduler serving"
    );
    let router = server::router(state);
    match tls {
        Some(cert) => {
            let tls_config = cert.server_config()?;
            tokio::spawn(cert.watch(TLS_RELOAD_INTERVAL));
            edgewatt_scheduler::tls::serve(listener, router, tls_config, shutdown()).await?;
        }
        None => axum::serve(listener, router)
            .with_graceful_shutdown(shutdown())
            .await
            .context("serve")?,
    }
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
