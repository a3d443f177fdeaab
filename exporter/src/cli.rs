//! Command line, environment and config file. Every flag has an `EDGEWATT_*` environment
//! variable; `--config FILE` (or `EDGEWATT_CONFIG`) reads `EDGEWATT_KEY=value` lines, which fill in
//! whatever the command line and environment did not set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

fn parse_duration(s: &str) -> Result<Duration, String> {
    edgewatt_crds::duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Parser)]
#[command(
    name = "edgewatt-exporter",
    version,
    about = "Measures node, pod, container and process energy and serves it as Prometheus metrics",
    long_about = "Measures node, pod, container and process energy and serves it as Prometheus metrics.\n\nSources (all that exist are read): RAPL powercap, hwmon power/energy sensors, batteries and mains in /sys/class/power_supply, a Redfish BMC (--redfish-url), an IPMI BMC (--ipmi-device or --ipmi-host), NVIDIA GPUs (build feature `gpu`), and a CPU power estimator. One source per zone is published: RAPL before hwmon for CPU zones, hwmon's ACPI power meter before Redfish before IPMI for the platform, the estimator only while no real meter reports. A source that is down, stale or reports no power has its series withdrawn (never 0 W) and node power falls back to the next; `exporter_source_up{source,state}` and `top` say which is in use and why. Energy is attributed to processes, containers and pods by CPU time (procfs, or eBPF with --attribution ebpf); node = idle + pods + system + unattributed per zone (`node_{idle,pods,system,unattributed}_joules_total`).\n\nRun `edgewatt-exporter top` for a live table on this machine, `edgewatt-exporter serve` for /metrics (/healthz fails after 3 intervals without a finished collection)."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /metrics, /healthz and /readyz (the default; what the DaemonSet runs).
    Serve(Serve),
    /// Live table of the top energy consumers on this machine.
    Top(Top),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttributionMode {
    /// eBPF when it loads, else procfs.
    Auto,
    Ebpf,
    Procfs,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Optional file of `EDGEWATT_KEY=value` lines (same names as the environment variables).
    #[arg(long, env = "EDGEWATT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Where the host's filesystem is mounted (`/host` in the chart; a fixture tree in tests).
    #[arg(long, env = "EDGEWATT_HOST_ROOT", default_value = "/", global = true)]
    pub host_root: PathBuf,
    /// The `node_name` label. Default: the host name (the chart passes spec.nodeName).
    #[arg(long, env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,
    /// Collection interval (`10s`, `1m`). Default: 10s for serve, 2s for top.
    #[arg(long, env = "EDGEWATT_INTERVAL", value_parser = parse_duration, global = true)]
    pub interval: Option<Duration>,
    /// Metric name prefix; `kepler` emits Kepler's names so Kepler dashboards keep working.
    #[arg(
        long,
        env = "EDGEWATT_METRIC_PREFIX",
        default_value = "edgewatt",
        global = true
    )]
    pub metric_prefix: String,
    /// This node's power budget in watts (exported for the controller and scheduler extender).
    #[arg(long, env = "EDGEWATT_POWER_BUDGET_WATTS", global = true)]
    pub power_budget_watts: Option<f64>,
    /// Grid carbon intensity in g CO2/kWh; enables the CO2 counter.
    #[arg(long, env = "EDGEWATT_CARBON_INTENSITY", global = true)]
    pub carbon_intensity: Option<f64>,
    /// Drop a terminated workload's series after this many intervals.
    #[arg(
        long,
        env = "EDGEWATT_EXPIRE_INTERVALS",
        default_value_t = 3,
        global = true
    )]
    pub expire_intervals: u64,
    /// Per-process CPU accounting.
    #[arg(
        long,
        env = "EDGEWATT_ATTRIBUTION",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub attribution: AttributionMode,
    /// How often to look again for local energy sources (battery, hwmon, RAPL) that were absent,
    /// e.g. a driver loaded after the exporter started; `0s` turns it off.
    #[arg(long, env = "EDGEWATT_SOURCE_RESCAN", value_parser = parse_duration, default_value = "60s", global = true)]
    pub source_rescan: Duration,
    /// Turn off the power estimator even where no meter exists.
    #[arg(long, env = "EDGEWATT_NO_ESTIMATOR", global = true)]
    pub no_estimator: bool,
    /// Where the estimator keeps its self-calibrated coefficients (a hostPath in the chart).
    #[arg(long, env = "EDGEWATT_CALIBRATION_FILE", global = true)]
    pub calibration_file: Option<PathBuf>,
    /// Redfish service root of this node's BMC, e.g. `https://10.0.0.5` (platform power, budget).
    #[arg(long, env = "EDGEWATT_REDFISH_URL", global = true)]
    pub redfish_url: Option<String>,
    /// File with `user:password` for the BMC (a mounted Secret).
    #[arg(long, env = "EDGEWATT_REDFISH_CREDENTIALS_FILE", global = true)]
    pub redfish_credentials_file: Option<PathBuf>,
    /// Accept any BMC certificate (BMCs often have self-signed ones). Off by default; prefer
    /// --redfish-ca-file.
    #[arg(long, env = "EDGEWATT_REDFISH_INSECURE", global = true)]
    pub redfish_insecure: bool,
    /// PEM file with the CA certificate(s) that signed the BMC's certificate; trusted instead of
    /// the system roots.
    #[arg(long, env = "EDGEWATT_REDFISH_CA_FILE", global = true)]
    pub redfish_ca_file: Option<PathBuf>,
    /// How often the BMC is polled (in the background; collection never waits for it). At or
    /// below --interval the BMC's energy counter (EnergykWh) is used where it has one; above it,
    /// its power reading.
    #[arg(long, env = "EDGEWATT_REDFISH_INTERVAL", value_parser = parse_duration, default_value = "30s", global = true)]
    pub redfish_interval: Duration,
    /// Timeout of one request to the BMC.
    #[arg(long, env = "EDGEWATT_REDFISH_TIMEOUT", value_parser = parse_duration, default_value = "5s", global = true)]
    pub redfish_timeout: Duration,
    /// This node's chassis on the BMC (its Id, e.g. `1U`, or `/redfish/v1/Chassis/1U`). Default:
    /// the chassis of the ComputerSystem whose UUID or serial matches this machine's SMBIOS
    /// (/sys/class/dmi/id); an enclosure powering several systems is never taken as this node's.
    #[arg(long, env = "EDGEWATT_REDFISH_CHASSIS", global = true)]
    pub redfish_chassis: Option<String>,
    /// In-band IPMI: the kernel's IPMI device of this node's BMC, e.g. `/dev/ipmi0` (modules
    /// ipmi_devintf and ipmi_si; root). Platform power from DCMI, else the SDR's power sensors.
    #[arg(
        long,
        env = "EDGEWATT_IPMI_DEVICE",
        global = true,
        conflicts_with = "ipmi_host"
    )]
    pub ipmi_device: Option<PathBuf>,
    /// Out-of-band IPMI: this node's BMC on the network, `host` or `host:port` (UDP 623 by
    /// default); RMCP+ where the BMC offers it, else an IPMI 1.5 session.
    #[arg(long, env = "EDGEWATT_IPMI_HOST", global = true)]
    pub ipmi_host: Option<String>,
    /// File with `user:password` for --ipmi-host (a mounted Secret); else EDGEWATT_IPMI_USERNAME
    /// and EDGEWATT_IPMI_PASSWORD.
    #[arg(long, env = "EDGEWATT_IPMI_CREDENTIALS_FILE", global = true)]
    pub ipmi_credentials_file: Option<PathBuf>,
    /// How often the BMC is polled over IPMI (in the background; collection never waits for it).
    /// A reading older than three intervals is stale and its series are withdrawn.
    #[arg(long, env = "EDGEWATT_IPMI_INTERVAL", value_parser = parse_duration, default_value = "15s", global = true)]
    pub ipmi_interval: Duration,
    /// Timeout of one IPMI request.
    #[arg(long, env = "EDGEWATT_IPMI_TIMEOUT", value_parser = parse_duration, default_value = "3s", global = true)]
    pub ipmi_timeout: Duration,
    /// Read this SDR sensor (by name, e.g. `Pwr Consumption`) as the node's power instead of
    /// DCMI or the automatic choice (a whole-node sensor, else the supplies' input power summed).
    #[arg(long, env = "EDGEWATT_IPMI_SENSOR", global = true)]
    pub ipmi_sensor: Option<String>,
    /// Watch this node's pods in Kubernetes for pod names: auto (when in a cluster or KUBECONFIG is set), on, off.
    #[arg(
        long,
        env = "EDGEWATT_KUBERNETES",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub kubernetes: Toggle,
    /// Estimate with the cluster's PowerModel for this CPU (edgewatt.io, fitted on metered
    /// siblings) when this node has no meter: auto/on follow --kubernetes, off keeps the
    /// reference curve. The node's own meter and its own saved calibration always win.
    #[arg(
        long,
        env = "EDGEWATT_POWER_MODELS",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub power_models: Toggle,
    /// A PowerModel the controller has not re-judged for this long is ignored (the reference
    /// curve is used again).
    #[arg(long, env = "EDGEWATT_POWER_MODEL_MAX_AGE", value_parser = parse_duration, default_value = "10m", global = true)]
    pub power_model_max_age: Duration,
    /// Log format.
    #[arg(
        long,
        env = "EDGEWATT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Serve {
    /// Address for /metrics, /healthz, /readyz.
    #[arg(long, env = "EDGEWATT_LISTEN", default_value = "0.0.0.0:9102")]
    pub listen: SocketAddr,
    /// Also export per-process series (off by default: cardinality).
    #[arg(long, env = "EDGEWATT_PROCESS_METRICS")]
    pub process_metrics: bool,
}

#[derive(Debug, Clone, Args)]
pub struct Top {
    /// Stop after this many refreshes (0: until interrupted).
    #[arg(long, short = 'n', default_value_t = 0)]
    pub count: u64,
    /// Rows per table.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Plain text output (same as `--output text`).
    #[arg(long)]
    pub plain: bool,
    /// One measurement, then exit (same as `-n 1`).
    #[arg(long)]
    pub once: bool,
    /// `tui`: full-screen table with sort and filter keys; `text`: plain lines per refresh;
    /// `json`: one JSON object per refresh (every level's rows, `[idle]` and `[system]`
    /// included, shares of node power), for scripts. `auto`: `tui` on a terminal, else `text`.
    #[arg(long, value_enum, default_value = "auto")]
    pub output: TopOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopOutput {
    Auto,
    Tui,
    Text,
    Json,
}

/// Applies `EDGEWATT_KEY=value` lines from the config file to the environment where unset, before
/// clap reads it. Errors name the line.
pub fn load_config_file(path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            anyhow::bail!(
                "config file {} line {}: expected KEY=value",
                path.display(),
                i + 1
            );
        };
        let k = k.trim();
        if !(k.starts_with("EDGEWATT_") || k == "NODE_NAME") {
            anyhow::bail!("config file {} line {}: unknown key {k} (keys are the EDGEWATT_* environment variables)", path.display(), i + 1);
        }
        if std::env::var_os(k).is_none() {
            // SAFETY: called before any other thread starts (first thing in main).
            unsafe { std::env::set_var(k, v.trim().trim_matches('"')) };
        }
    }
    Ok(())
}

/// The log filter from `RUST_LOG`: comma-separated `level` and `target=level` directives
/// (`info`, `warn,edgewatt_exporter=debug`), the syntax of tracing-subscriber's `Targets` (its
/// `EnvFilter` also takes span and field filters, but pulls in regex: a quarter-minute more of
/// `make run`'s build). Unset or empty: `info`. Invalid: `info` and the error, to be logged.
pub fn log_filter(rust_log: Option<&str>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (info(), None),
        Some(s) => match s.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (info(), Some(format!("cannot parse {s:?}: {e}"))),
        },
    }
}

/// Scans raw args for `--config` before clap runs, so the file can fill env defaults.
pub fn config_path_from_args(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("EDGEWATT_CONFIG").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn rust_log_takes_levels_and_targets_and_never_silences_on_a_typo() {
        let (f, e) = log_filter(None);
        assert!(e.is_none() && f.would_enable("kube::client", &Level::INFO));
        assert!(!f.would_enable("kube::client", &Level::DEBUG));
        let (f, e) = log_filter(Some("warn,edgewatt_exporter=debug"));
        assert!(e.is_none());
        assert!(f.would_enable("edgewatt_exporter::collector", &Level::DEBUG));
        assert!(!f.would_enable("edgewatt_exporter::collector", &Level::TRACE));
        assert!(!f.would_enable("aya::maps", &Level::INFO));
        assert!(f.would_enable("aya::maps", &Level::WARN));
        // A typo must not turn logging off: info, and the reason to log.
        let (f, e) = log_filter(Some("edgewatt_exporter=loud"));
        assert!(e.unwrap().contains("edgewatt_exporter=loud"));
        assert!(f.would_enable("edgewatt_exporter", &Level::INFO));
        assert!(log_filter(Some("  ")).1.is_none());
    }
}
