//! Wiring: builds the collector from the command line and runs `serve` or `top`.

use std::time::Duration;

use crate::accounting::CpuAccounting;
use crate::cli::{AttributionMode, Common, Toggle, Top};
use crate::collector::{Collector, CollectorConfig};
use crate::pods::PodDirectory;
use crate::procfs::Procfs;
use crate::source::Source;
use crate::sysfs::HostRoot;

/// The error for asking a binary built without `feature` (as `make run` builds `top`, to show its
/// first frame sooner) for `what`, which needs it.
#[cfg_attr(
    all(feature = "redfish", feature = "ipmi", feature = "serve"),
    allow(dead_code)
)]
pub fn not_built(what: &str, feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: this binary was built without the `{feature}` feature (as `make run` builds it, to show its first frame sooner); build with default features (`cargo build --release -p edgewatt-exporter`) or use the container image"
    )
}

fn hostname(root: &HostRoot) -> String {
    crate::sysfs::read_string(&root.path("/proc/sys/kernel/hostname"))
        .or_else(|_| crate::sysfs::read_string(std::path::Path::new("/proc/sys/kernel/hostname")))
        .unwrap_or_else(|_| "localhost".into())
}

/// Chooses the CPU accounting per `--attribution`; eBPF failures fall back with one clear line.
pub fn accounting(
    mode: AttributionMode,
    root: &HostRoot,
) -> anyhow::Result<Box<dyn CpuAccounting>> {
    let chosen = choose_accounting(mode, root);
    // Loading parses the kernel's BTF (megabytes, freed right after): hand that memory back so
    // the exporter's steady-state RSS is not the load's peak.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; no pointers are affected.
    unsafe {
        libc::malloc_trim(0);
    }
    chosen
}

/// The eBPF accounting, announced once whichever mode chose it.
fn loaded(e: crate::ebpf::Ebpf) -> Box<dyn CpuAccounting> {
    tracing::info!(program = e.program_kind(), "per-process CPU time from eBPF");
    Box::new(e)
}

fn choose_accounting(
    mode: AttributionMode,
    root: &HostRoot,
) -> anyhow::Result<Box<dyn CpuAccounting>> {
    match mode {
        AttributionMode::Procfs => Ok(Box::new(Procfs::new(root))),
        AttributionMode::Ebpf => crate::ebpf::Ebpf::load(root)
            .map(loaded)
            .map_err(|reason| anyhow::anyhow!("--attribution ebpf: {reason}")),
        AttributionMode::Auto => match crate::ebpf::Ebpf::load(root) {
            Ok(e) => Ok(loaded(e)),
            Err(reason) => {
                tracing::warn!(%reason, "eBPF attribution unavailable; using procfs");
                Ok(Box::new(Procfs::new(root)))
            }
        },
    }
}

/// Every source found on this machine, plus the configured remote ones. `interval` is the
/// collection interval (Redfish uses the BMC's energy counter only when polled at least as often).
pub fn sources(
    common: &Common,
    root: &HostRoot,
    interval: Duration,
) -> anyhow::Result<Vec<Box<dyn Source>>> {
    let (mut found, warnings) = crate::sources::discover_local(root);
    for w in warnings {
        tracing::warn!("{w}");
    }
    #[cfg(not(feature = "redfish"))]
    if common.redfish_url.is_some() {
        let _ = interval; // the Redfish poller's collection interval
        return Err(not_built("--redfish-url", "redfish"));
    }
    #[cfg(feature = "redfish")]
    if let Some(url) = &common.redfish_url {
        found.push(Box::new(crate::sources::redfish::Redfish::start(
            crate::sources::redfish::RedfishConfig {
                url: url.clone(),
                credentials_file: common.redfish_credentials_file.clone(),
                insecure: common.redfish_insecure,
                ca_file: common.redfish_ca_file.clone(),
                interval: common.redfish_interval,
                timeout: common.redfish_timeout,
                collect_interval: interval,
                chassis: common.redfish_chassis.clone(),
                host_root: root.clone(),
            },
        )?));
    }
    #[cfg(not(feature = "ipmi"))]
    if common.ipmi_device.is_some() || common.ipmi_host.is_some() {
        return Err(not_built("--ipmi-device/--ipmi-host", "ipmi"));
    }
    #[cfg(feature = "ipmi")]
    if let Some(target) = ipmi_target(common) {
        found.push(Box::new(crate::sources::ipmi::IpmiSource::start(
            crate::sources::ipmi::IpmiConfig {
                target,
                interval: common.ipmi_interval,
                timeout: common.ipmi_timeout,
                sensor: common.ipmi_sensor.clone(),
            },
        )?));
    }
    let has_meter = found
        .iter()
        .any(|s| matches!(s.name(), "rapl" | "hwmon" | "redfish" | "ipmi"));
    if !common.no_estimator {
        match crate::estimator::Estimator::for_host(root, common.calibration_file.clone()) {
            Ok(est) => {
                if has_meter {
                    tracing::info!(model = %est.describe(), "estimator calibrates against the meters and stands in for node power whenever none reports");
                } else {
                    tracing::info!(model = %est.describe(), "no energy meter found (no RAPL, hwmon or Redfish): node power is ESTIMATED");
                }
                #[cfg(feature = "kubernetes")]
                found.push(Box::new(crate::shared_model::SharedEstimator::new(
                    est,
                    &crate::shared_model::board_name(root),
                    crate::shared_model::start_watch(power_models_on(common)),
                    common.power_model_max_age,
                )));
                // Without the Kubernetes API there are no shared models to use.
                #[cfg(not(feature = "kubernetes"))]
                found.push(Box::new(est));
            }
            Err(e) => tracing::warn!(error = %e, "estimator unavailable"),
        }
    } else if !has_meter {
        tracing::warn!("no energy meter found (no RAPL, hwmon or Redfish) and the estimator is off: only CPU-time shares can be shown");
    }
    let names: Vec<&str> = found.iter().map(|s| s.name()).collect();
    tracing::info!(sources = ?names, "energy sources");
    Ok(found)
}

/// The IPMI BMC the flags name, if any (`--ipmi-device` and `--ipmi-host` exclude each other).
#[cfg(feature = "ipmi")]
fn ipmi_target(common: &Common) -> Option<crate::sources::ipmi::Target> {
    use crate::sources::ipmi::Target;
    match (&common.ipmi_device, &common.ipmi_host) {
        (Some(dev), _) => Some(Target::Device(dev.clone())),
        (None, Some(host)) => Some(Target::Lan {
            host: host.clone(),
            credentials_file: common.ipmi_credentials_file.clone(),
        }),
        (None, None) => None,
    }
}

/// `process_detail`: keep per-process series (top, `--process-metrics`); `interval`: the
/// collection interval.
pub fn build(
    common: &Common,
    process_detail: bool,
    interval: Duration,
) -> anyhow::Result<Collector> {
    let root = HostRoot::new(&common.host_root);
    let node_name = common.node_name.clone().unwrap_or_else(|| hostname(&root));
    let sources = sources(common, &root, interval)?;
    let accounting = accounting(common.attribution, &root)?;
    let pods = PodDirectory::default();
    start_pod_watch(common.kubernetes, &node_name, &pods);
    Ok(Collector::new(
        CollectorConfig {
            node_name,
            expire_intervals: common.expire_intervals,
            power_budget_watts: common.power_budget_watts,
            carbon_intensity: common.carbon_intensity,
            process_detail,
        },
        root,
        sources,
        accounting,
        pods,
    )
    .rescan_sources(common.source_rescan))
}

/// Whether to watch the cluster's PowerModels: `--power-models` on, or auto with `--kubernetes`
/// on (or auto in a cluster); never with `--kubernetes off`.
#[cfg(feature = "kubernetes")]
fn power_models_on(common: &Common) -> bool {
    let configured = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some();
    match (common.kubernetes, common.power_models) {
        (Toggle::Off, _) | (_, Toggle::Off) => false,
        (Toggle::On, _) | (_, Toggle::On) => true,
        (Toggle::Auto, Toggle::Auto) => configured,
    }
}

/// Starts the pod-name watch on its own thread when a cluster is configured (see `pods.rs` for why
/// an API watch rather than the kubelet).
fn start_pod_watch(mode: Toggle, node_name: &str, pods: &PodDirectory) {
    let configured = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some();
    match mode {
        Toggle::Off => return,
        Toggle::Auto if !configured => {
            tracing::info!("no Kubernetes configuration (in-cluster or KUBECONFIG): pods are labelled by UID only");
            return;
        }
        _ => {}
    }
    #[cfg(not(feature = "kubernetes"))]
    return tracing::warn!(
        ?mode,
        node_name,
        pods = pods.len(),
        "built without the `kubernetes` feature (as `make run` builds it): pods are labelled by UID only"
    );
    #[cfg(feature = "kubernetes")]
    spawn_pod_watch(node_name, pods);
}

#[cfg(feature = "kubernetes")]
fn spawn_pod_watch(node_name: &str, pods: &PodDirectory) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (node, dir) = (node_name.to_string(), pods.clone());
    let spawned = std::thread::Builder::new().name("pod-watch".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::warn!(error = %e, "cannot start the pod watch"),
        };
        rt.block_on(async move {
            match kube::Client::try_default().await {
                Ok(client) => crate::pods::watch(client, node, dir).await,
                Err(e) => tracing::warn!(error = %e, "cannot build a Kubernetes client; pods are labelled by UID only"),
            }
        });
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the pod watch thread");
    }
}

/// `edgewatt-exporter serve`: collects on its own thread and serves `/metrics` and `/healthz`.
#[cfg(feature = "serve")]
pub async fn serve(common: Common, serve: crate::cli::Serve) -> anyhow::Result<()> {
    use crate::snapshot::{SharedSnapshot, Snapshot};
    use edgewatt_crds::metrics::MetricNames;
    use std::sync::Arc;
    let interval = common.interval.unwrap_or(Duration::from_secs(10));
    let mut collector = build(&common, serve.process_metrics, interval)?;
    let snapshot: SharedSnapshot = Arc::new(std::sync::RwLock::new(Arc::new(Snapshot::default())));
    let registry = Arc::new(crate::metrics::registry(
        crate::metrics::MetricsConfig {
            names: MetricNames::new(common.metric_prefix.clone()),
            process_metrics: serve.process_metrics,
            version: env!("CARGO_PKG_VERSION"),
        },
        snapshot.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", serve.listen))?;
    tracing::info!(listen = %listener.local_addr()?, interval = ?interval, "serving /metrics");
    let shared = snapshot.clone();
    // Collection is blocking file I/O: a dedicated thread, never on the async workers.
    std::thread::Builder::new()
        .name("collector".into())
        .spawn(move || loop {
            let started = std::time::Instant::now();
            let snap = collector.collect();
            if let Ok(mut s) = shared.write() {
                *s = Arc::new(snap);
            }
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        })?;
    let app = crate::server::router(registry, snapshot, interval);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// `edgewatt-exporter top`: see [`crate::top::run`].
pub fn top(common: Common, top: Top) -> anyhow::Result<()> {
    let interval = common.interval.unwrap_or(Duration::from_secs(2));
    let mut collector = build(&common, true, interval)?;
    crate::top::run(
        move || collector.collect(),
        HostRoot::new(&common.host_root),
        interval,
        top,
    )
}
