//! The command line. Prometheus flags are the shared `PromConfig`, so the extender and the
//! controller are configured the same way.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::ArgAction;
use edgewatt_crds::prom::PromConfig;

use crate::{
    exempt::SYSTEM_CLUSTER_CRITICAL,
    headroom::{Policy, Unmeasured},
    state::DEFAULT_MAX_BODY_BYTES,
};

fn parse_duration(s: &str) -> Result<Duration, String> {
    edgewatt_crds::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("{e}"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 100".into())
    }
}

fn parse_watts(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a finite number of watts >= 0".into())
    }
}

/// kube-scheduler extender that filters and scores nodes by power headroom.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "edgewatt-scheduler", version, about)]
pub struct Config {
    /// Address to serve the extender (HTTPS with --tls-cert-file/--tls-key-file, else HTTP).
    #[arg(long, env = "EDGEWATT_LISTEN", default_value = "0.0.0.0:8888")]
    pub listen: SocketAddr,
    /// PEM certificate chain to serve HTTPS with (kube-scheduler `enableHTTPS: true`); re-read
    /// when the file changes (a renewed cert-manager or Secret volume), no restart needed.
    #[arg(long, env = "EDGEWATT_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "EDGEWATT_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Watch Nodes (RBAC get/list/watch nodes) for their `edgewatt.io/power-budget-watts`
    /// annotation, the budget the controller uses first; kube-scheduler sends only node names
    /// with `nodeCacheCapable: true`. In-cluster config, else KUBECONFIG. With false, budgets come
    /// from the exporters' budget metric and --default-power-budget-watts only.
    #[arg(long, env = "EDGEWATT_WATCH_NODES", default_value_t = true, action = ArgAction::Set)]
    pub watch_nodes: bool,
    /// Score of nodes without fresh power data: cautious (3), neutral (5) or last (0). Never
    /// above a measured node with half its budget free.
    #[arg(long, env = "EDGEWATT_UNMEASURED_NODES", value_enum, default_value_t = Unmeasured::Cautious)]
    pub unmeasured_nodes: Unmeasured,
    /// Pods with at least this priority are never filtered and get equal scores (default:
    /// system-cluster-critical). DaemonSet, static/mirror pods and pods tolerating
    /// `edgewatt.io/energy-starved` are always exempt.
    #[arg(long, env = "EDGEWATT_EXEMPT_PRIORITY", default_value_t = SYSTEM_CLUSTER_CRITICAL, allow_negative_numbers = true)]
    pub exempt_priority: i32,
    #[command(flatten)]
    pub prometheus: PromConfig,
    /// How often the headroom table is rebuilt from Prometheus.
    #[arg(long, env = "EDGEWATT_REFRESH_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub refresh_interval: Duration,
    /// Samples older than this are ignored; with nothing newer the extender fails open.
    #[arg(long, env = "EDGEWATT_MAX_DATA_AGE", default_value = "2m", value_parser = parse_duration)]
    pub max_data_age: Duration,
    /// Budget of nodes with neither the `edgewatt.io/power-budget-watts` annotation nor a
    /// budget metric (the EnergyPolicy's `scheduling.defaultPowerBudgetWatts`). Unset: such
    /// nodes get a neutral score.
    #[arg(long, env = "EDGEWATT_DEFAULT_POWER_BUDGET_WATTS", value_parser = parse_watts)]
    pub default_power_budget_watts: Option<f64>,
    /// Nodes with less headroom than this after the pod's expected draw are filtered out.
    #[arg(long, env = "EDGEWATT_MIN_HEADROOM_WATTS", default_value = "5", value_parser = parse_watts)]
    pub min_headroom_watts: f64,
    /// Nodes on battery below this charge (percent) are filtered out.
    #[arg(long, env = "EDGEWATT_MIN_BATTERY_PERCENT", default_value = "20", value_parser = parse_percent)]
    pub min_battery_percent: f64,
    /// Nodes on battery with less runtime than this (with the pod) are filtered out; 0s disables.
    #[arg(long, env = "EDGEWATT_MIN_BATTERY_RUNTIME", default_value = "15m", value_parser = parse_duration)]
    pub min_battery_runtime: Duration,
    /// Exporter metric prefix (`edgewatt`, or `kepler` with a Kepler-compatible exporter).
    #[arg(long, env = "EDGEWATT_METRIC_PREFIX", default_value = "edgewatt")]
    pub metric_prefix: String,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long, env = "EDGEWATT_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "EDGEWATT_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// The decision thresholds.
    pub fn policy(&self) -> Policy {
        Policy {
            default_budget_watts: self.default_power_budget_watts,
            min_headroom_watts: self.min_headroom_watts,
            min_battery_ratio: self.min_battery_percent / 100.0,
            min_battery_runtime: self.min_battery_runtime,
            max_data_age: self.max_data_age,
            unmeasured: self.unmeasured_nodes,
            exempt_priority: self.exempt_priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::try_parse_from(["edgewatt-scheduler"]).unwrap();
        assert_eq!(c.refresh_interval, Duration::from_secs(15));
        assert_eq!(c.max_data_age, Duration::from_secs(120));
        assert_eq!(c.policy().min_headroom_watts, 5.0);
        assert_eq!(c.policy().min_battery_ratio, 0.2);
        assert_eq!(c.metric_prefix, "edgewatt");
        assert!(c.watch_nodes);
        assert_eq!(c.policy().exempt_priority, 2_000_000_000);
        assert_eq!(c.policy().unmeasured, Unmeasured::Cautious);
        assert!(c.tls_cert_file.is_none());
        let c = Config::try_parse_from(["x", "--watch-nodes=false", "--unmeasured-nodes=last"])
            .unwrap();
        assert!(!c.watch_nodes);
        assert_eq!(c.policy().unmeasured, Unmeasured::Last);
        assert!(
            Config::try_parse_from(["x", "--tls-cert-file=/c"]).is_err(),
            "a certificate needs its key"
        );
        assert!(Config::try_parse_from(["x", "--min-battery-percent", "150"]).is_err());
        assert!(Config::try_parse_from(["x", "--default-power-budget-watts", "-1"]).is_err());
    }
}
