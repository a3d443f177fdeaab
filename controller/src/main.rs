//! edgewatt-controller: watches EnergyPolicies, finds energy-starved nodes and Flotta devices
//! from Prometheus, and moves work away (see DESIGN.md "EnergyPolicy" and "Failure rules").

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use edgewatt_controller::{
    cli::{Args, Command},
    context::Context,
    leader::{Elector, Fence, LeaseConfig},
    reconciler,
};
use edgewatt_crds::prom::PromReader;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Simulate(sim)) = &args.command {
        // Synchronous and CPU-bound (its runs are threads); stdout carries only the report.
        return edgewatt_controller::sim::command(sim);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(controller(args))
}

async fn controller(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
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
        args.settings(),
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
