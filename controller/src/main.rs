//! edgewatt-controller: watches EnergyPolicies, finds energy-starved nodes and Flotta devices
//! from Prometheus, and moves work away (see DESIGN.md "EnergyPolicy" and "Failure rules").

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use edgewatt_controller::{
    leader::{Elector, Fence, LeaseConfig},
    reconciler::{self, Context, Settings},
};
use edgewatt_crds::{
    metrics::MetricNames,
    prom::{PromConfig, PromReader},
};

fn duration(s: &str) -> Result<Duration, String> {
    edgewatt_crds::duration::parse(s).map_err(|e| e.to_string())
}

/// Command line. Every flag also reads an environment variable (for the chart).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    prometheus: PromConfig,
    /// How often each policy is re-evaluated.
    #[arg(long, env = "EDGEWATT_INTERVAL", default_value = "30s", value_parser = duration)]
    interval: Duration,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "edgewatt-system")]
    lease_namespace: String,
    #[arg(
        long,
        env = "EDGEWATT_LEASE_NAME",
        default_value = "edgewatt-controller"
    )]
    lease_name: String,
    /// How long a standby waits, after it last saw the Lease change, before taking it over
    /// (client-go's LeaseDuration). Must exceed --renew-deadline.
    #[arg(long, env = "EDGEWATT_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// The leader stops every write when it has not renewed the Lease for this long
    /// (client-go's RenewDeadline). Must exceed 1.2 × --retry-period.
    #[arg(long, env = "EDGEWATT_RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    renew_deadline: Duration,
    /// How often the Lease is renewed or tried (client-go's RetryPeriod).
    #[arg(long, env = "EDGEWATT_RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    retry_period: Duration,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "EDGEWATT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Prefix of the exporter's metrics (`kepler` when the exporter runs in Kepler mode).
    #[arg(long, env = "EDGEWATT_METRIC_PREFIX", default_value = "edgewatt")]
    metric_prefix: String,
    /// Label carrying the device id on remote-written Flotta series.
    #[arg(long, env = "EDGEWATT_DEVICE_LABEL", default_value = "edgedeviceid")]
    device_label: String,
    /// Readings older than this count as unknown for EdgeDevices (remote write batches ~5 min).
    #[arg(long, env = "EDGEWATT_DEVICE_MAX_AGE", default_value = "15m", value_parser = duration)]
    device_max_age: Duration,
    /// Readings older than this count as unknown for nodes.
    #[arg(long, env = "EDGEWATT_NODE_MAX_AGE", default_value = "2m", value_parser = duration)]
    node_max_age: Duration,
    /// Overrides every policy's `spec.action.migrationTimeout`.
    #[arg(long, env = "EDGEWATT_MIGRATION_TIMEOUT", value_parser = duration)]
    migration_timeout: Option<Duration>,
    /// Build PowerModels from metered nodes' calibrations and share them with meterless nodes
    /// of the same CPU model, board and thread count.
    #[arg(long, env = "EDGEWATT_POWER_MODELS", default_value_t = true, action = clap::ArgAction::Set)]
    power_models: bool,
    /// How often PowerModels are rebuilt (each write refreshes `status.lastUpdate`).
    #[arg(long, env = "EDGEWATT_POWER_MODEL_INTERVAL", default_value = "1m", value_parser = duration)]
    power_model_interval: Duration,
    /// A model is shared only when built from at least this many metered nodes…
    #[arg(long, env = "EDGEWATT_POWER_MODEL_MIN_NODES", default_value_t = 1)]
    power_model_min_nodes: u32,
    /// …and at least this many meter samples, all nodes together.
    #[arg(long, env = "EDGEWATT_POWER_MODEL_MIN_SAMPLES", default_value_t = 60)]
    power_model_min_samples: u64,
    /// A model whose error against any contributing meter exceeds this (percent of that node's
    /// full-load watts) is not shared; its status says why.
    #[arg(
        long,
        env = "EDGEWATT_POWER_MODEL_MAX_ERROR_PERCENT",
        default_value_t = 10.0
    )]
    power_model_max_error_percent: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // Built first: it installs rustls' ring provider, which kube's TLS set-up then uses.
    let reader = PromReader::new(&args.prometheus).context("prometheus client")?;
    let config = kube::Config::infer().await.context("kubernetes config")?;
    let client = kube::Client::try_from(config.clone())?;
    let mut evict_config = config;
    evict_config.default_retry = false;
    let evict_client = kube::Client::try_from(evict_config)?;
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("edgewatt-controller-{}", std::process::id()));
    let lease = LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };
    lease.validate().map_err(anyhow::Error::msg)?;
    let fence = Fence::new();
    let ctx = Arc::new(Context::new(
        client.clone(),
        evict_client,
        reader,
        Settings {
            interval: args.interval,
            metric_names: MetricNames::new(args.metric_prefix),
            device_label: args.device_label,
            node_max_age: args.node_max_age,
            device_max_age: args.device_max_age,
            migration_timeout: args.migration_timeout,
        },
        fence.clone(),
        &identity,
    ));
    if args.power_models {
        let th = edgewatt_controller::power_models::Thresholds {
            min_nodes: args.power_model_min_nodes,
            min_samples: args.power_model_min_samples,
            max_error_percent: args.power_model_max_error_percent,
            max_data_age: args.node_max_age,
        };
        tokio::spawn(edgewatt_controller::power_models::run(
            ctx.clone(),
            th,
            args.power_model_interval,
        ));
    }
    let router = ctx.metrics.router();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("metrics server: {e}");
        }
    });
    // SIGTERM (a rolling update, a drain) or Ctrl-C: stop acting, then release the Lease so a
    // standby takes over at once instead of after the lease duration.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let elector = tokio::spawn(Elector::new(client, lease, fence).run(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = reconciler::run(ctx) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM; shutting down"),
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    Ok(())
}
