//! The controller's command line. Every flag also reads an environment variable (the chart sets
//! those). In the library so tests build their [`Settings`] from the same defaults users run.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use edgewatt_crds::{metrics::MetricNames, prom::PromConfig};

use crate::context::Settings;

fn duration(s: &str) -> Result<Duration, String> {
    edgewatt_crds::duration::parse(s).map_err(|e| e.to_string())
}

/// Command line. Every flag also reads an environment variable (for the chart).
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Without a subcommand: run the controller.
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub prometheus: PromConfig,
    /// How often each policy is re-evaluated.
    #[arg(long, env = "EDGEWATT_INTERVAL", default_value = "30s", value_parser = duration)]
    pub interval: Duration,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "edgewatt-system")]
    pub lease_namespace: String,
    #[arg(
        long,
        env = "EDGEWATT_LEASE_NAME",
        default_value = "edgewatt-controller"
    )]
    pub lease_name: String,
    /// How long a standby waits, after it last saw the Lease change, before taking it over
    /// (client-go's LeaseDuration). Must exceed --renew-deadline.
    #[arg(long, env = "EDGEWATT_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// The leader stops every write when it has not renewed the Lease for this long
    /// (client-go's RenewDeadline). Must exceed 1.2 × --retry-period.
    #[arg(long, env = "EDGEWATT_RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or tried (client-go's RetryPeriod).
    #[arg(long, env = "EDGEWATT_RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    pub retry_period: Duration,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "EDGEWATT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Prefix of the exporter's metrics (`kepler` when the exporter runs in Kepler mode).
    #[arg(long, env = "EDGEWATT_METRIC_PREFIX", default_value = "edgewatt")]
    pub metric_prefix: String,
    /// Label carrying the device id on remote-written Flotta series.
    #[arg(long, env = "EDGEWATT_DEVICE_LABEL", default_value = "edgedeviceid")]
    pub device_label: String,
    /// Readings older than this count as unknown for EdgeDevices (remote write batches ~5 min).
    #[arg(long, env = "EDGEWATT_DEVICE_MAX_AGE", default_value = "15m", value_parser = duration)]
    pub device_max_age: Duration,
    /// Readings older than this count as unknown for nodes.
    #[arg(long, env = "EDGEWATT_NODE_MAX_AGE", default_value = "2m", value_parser = duration)]
    pub node_max_age: Duration,
    /// Overrides every policy's `spec.action.migrationTimeout`.
    #[arg(long, env = "EDGEWATT_MIGRATION_TIMEOUT", value_parser = duration)]
    pub migration_timeout: Option<Duration>,
    /// Build PowerModels from metered nodes' calibrations and share them with meterless nodes
    /// of the same CPU model, board and thread count.
    #[arg(long, env = "EDGEWATT_POWER_MODELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub power_models: bool,
    /// How often PowerModels are rebuilt (each write refreshes `status.lastUpdate`).
    #[arg(long, env = "EDGEWATT_POWER_MODEL_INTERVAL", default_value = "1m", value_parser = duration)]
    pub power_model_interval: Duration,
    /// A model is shared only when built from at least this many metered nodes…
    #[arg(long, env = "EDGEWATT_POWER_MODEL_MIN_NODES", default_value_t = 1)]
    pub power_model_min_nodes: u32,
    /// …and at least this many meter samples, all nodes together.
    #[arg(long, env = "EDGEWATT_POWER_MODEL_MIN_SAMPLES", default_value_t = 60)]
    pub power_model_min_samples: u64,
    /// A model whose error against any contributing meter exceeds this (percent of that node's
    /// full-load watts) is not shared; its status says why.
    #[arg(
        long,
        env = "EDGEWATT_POWER_MODEL_MAX_ERROR_PERCENT",
        default_value_t = 10.0
    )]
    pub power_model_max_error_percent: f64,
}

/// Subcommands other than the controller itself.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Runs the controller's decision core (planner, policy memory, migration state machine)
    /// against a simulated fleet in virtual time on TMY weather: three runs (unmanaged, migrate,
    /// ladder) of the same fleet, reported side by side.
    Simulate(SimulateArgs),
}

/// How `--output` prints the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `edgewatt-controller simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The fleet file (YAML): sites and their weather, nodes, edge devices, workloads,
    /// EnergyPolicies, physics. See examples/simulate/winter-site.yaml.
    #[arg(long)]
    pub fleet: std::path::PathBuf,
    /// First day, MM-DD, at 00:00 local standard time of the first site.
    #[arg(long, default_value = "01-01")]
    pub start: String,
    /// How many days to simulate (the typical year wraps around).
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Also draw the runs (state of charge, service level) into this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// How often the policies decide (overrides the fleet's physics.decisionInterval); whole
    /// minutes. Moves in flight are driven every minute regardless.
    #[arg(long)]
    pub decision_interval: Option<String>,
}

impl Args {
    /// The runtime settings these flags give.
    pub fn settings(&self) -> Settings {
        Settings {
            interval: self.interval,
            metric_names: MetricNames::new(self.metric_prefix.clone()),
            device_label: self.device_label.clone(),
            node_max_age: self.node_max_age,
            device_max_age: self.device_max_age,
            migration_timeout: self.migration_timeout,
            own_namespace: self.lease_namespace.clone(),
        }
    }
}
