//! edgewatt-controller: watches EnergyPolicies, finds energy-starved nodes and Flotta devices
//! from Prometheus, and moves work away (see DESIGN.md "EnergyPolicy" and "Failure rules").

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use edgewatt_controller::{
    actuator::Actuator,
    leader::{self, LeaseConfig},
    metrics::Metrics,
    reconciler::{self, Context, Settings, Stores},
};
use edgewatt_crds::{
    metrics::MetricNames,
    prom::{PromConfig, PromReader},
};
use kube::runtime::events::{Recorder, Reporter};

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
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "edgewatt-controller".into(),
            instance: Some(identity.clone()),
        },
    );
    let metrics = Metrics::new();
    let leader_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(leader::run(
        client.clone(),
        LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity,
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        },
        leader_flag.clone(),
    ));
    let router = metrics.router();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("metrics server: {e}");
        }
    });
    let ctx = Arc::new(Context {
        stores: Stores::spawn(&client),
        actuator: Actuator::new(client.clone(), evict_client, recorder),
        client,
        reader,
        metrics,
        settings: Settings {
            interval: args.interval,
            metric_names: MetricNames::new(args.metric_prefix),
            device_label: args.device_label,
            node_max_age: args.node_max_age,
            device_max_age: args.device_max_age,
            migration_timeout: args.migration_timeout,
        },
        leader: leader_flag,
        runtime: Default::default(),
    });
    tokio::select! {
        _ = reconciler::run(ctx) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}
