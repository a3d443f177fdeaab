//! Metric names and labels: the contract between the exporter, Prometheus, the controller, the
//! extender, the chart's dashboards and alert rules. DESIGN.md "Exporter metrics" is the prose.
//!
//! Exporter metrics are named `<prefix>_<base>`; the prefix is `edgewatt` unless the exporter runs
//! with `--metric-prefix kepler`, so readers take a [`MetricNames`] rather than a constant.

/// Default prefix of every edgewatt metric.
pub const DEFAULT_PREFIX: &str = "edgewatt";

/// Base names (without prefix) of the exporter's metrics.
pub mod base {
    pub const NODE_CPU_JOULES: &str = "node_cpu_joules_total";
    pub const NODE_CPU_WATTS: &str = "node_cpu_watts";
    pub const NODE_CPU_ACTIVE_JOULES: &str = "node_cpu_active_joules_total";
    pub const NODE_CPU_ACTIVE_WATTS: &str = "node_cpu_active_watts";
    pub const NODE_CPU_IDLE_JOULES: &str = "node_cpu_idle_joules_total";
    pub const NODE_CPU_IDLE_WATTS: &str = "node_cpu_idle_watts";
    pub const NODE_PLATFORM_JOULES: &str = "node_platform_joules_total";
    pub const NODE_PLATFORM_WATTS: &str = "node_platform_watts";
    pub const NODE_GPU_JOULES: &str = "node_gpu_joules_total";
    pub const NODE_GPU_WATTS: &str = "node_gpu_watts";
    pub const POD_CPU_JOULES: &str = "pod_cpu_joules_total";
    pub const POD_CPU_WATTS: &str = "pod_cpu_watts";
    pub const POD_GPU_JOULES: &str = "pod_gpu_joules_total";
    pub const POD_GPU_WATTS: &str = "pod_gpu_watts";
    pub const CONTAINER_CPU_JOULES: &str = "container_cpu_joules_total";
    pub const CONTAINER_CPU_WATTS: &str = "container_cpu_watts";
    pub const CONTAINER_GPU_JOULES: &str = "container_gpu_joules_total";
    pub const CONTAINER_GPU_WATTS: &str = "container_gpu_watts";
    pub const PROCESS_CPU_JOULES: &str = "process_cpu_joules_total";
    pub const PROCESS_CPU_WATTS: &str = "process_cpu_watts";
    pub const PROCESS_GPU_JOULES: &str = "process_gpu_joules_total";
    pub const PROCESS_GPU_WATTS: &str = "process_gpu_watts";
    pub const BATTERY_CHARGE_RATIO: &str = "node_battery_charge_ratio";
    pub const BATTERY_ENERGY_JOULES: &str = "node_battery_energy_joules";
    pub const BATTERY_CAPACITY_JOULES: &str = "node_battery_capacity_joules";
    pub const BATTERY_POWER_WATTS: &str = "node_battery_power_watts";
    /// Power flowing into the battery (charging), ≥ 0; absent when the kernel does not say.
    pub const BATTERY_CHARGE_POWER_WATTS: &str = "node_battery_charge_power_watts";
    pub const EXTERNAL_POWER: &str = "node_external_power";
    pub const POWER_BUDGET_WATTS: &str = "node_power_budget_watts";
    pub const CO2_GRAMS: &str = "node_co2_grams_total";
    pub const EXPORTER_INFO: &str = "exporter_info";
    pub const EXPORTER_SOURCE_UP: &str = "exporter_source_up";
    /// How a source reads its meter, `{source,method}` (IPMI: `dcmi`, `sdr` or `none` yet).
    pub const EXPORTER_SOURCE_INFO: &str = "exporter_source_info";
    pub const EXPORTER_COLLECTION_SECONDS: &str = "exporter_collection_duration_seconds";
    pub const ESTIMATOR_INFO: &str = "estimator_info";
    /// RMS error of the estimator's self-calibration against a real meter, watts.
    pub const ESTIMATOR_FIT_ERROR_WATTS: &str = "estimator_fit_error_watts";
    /// A metered node's fitted estimator coefficients, `{cpu_model,board,threads,curve,
    /// coefficient="idle"|"dynamic"}`, watts: what the controller builds PowerModels from.
    pub const ESTIMATOR_CALIBRATION_WATTS: &str = "estimator_calibration_watts";
    /// Meter samples behind that fit (same labels, no `coefficient`).
    pub const ESTIMATOR_CALIBRATION_SAMPLES: &str = "estimator_calibration_samples";
    /// Where each attributed zone's energy went, `{zone,source}`: for every zone and source,
    /// `node_{cpu,platform,gpu}_joules_total` = idle + pods + system + unattributed.
    pub const NODE_IDLE_JOULES: &str = "node_idle_joules_total";
    /// All pods together (pods whose own series expired included).
    pub const NODE_PODS_JOULES: &str = "node_pods_joules_total";
    /// Processes outside any pod.
    pub const NODE_SYSTEM_JOULES: &str = "node_system_joules_total";
    /// Active energy no process received.
    pub const NODE_UNATTRIBUTED_JOULES: &str = "node_unattributed_joules_total";
    /// Power of hardware the node shares (a blade enclosure via Redfish), `{chassis}`; never node power.
    pub const NODE_ENCLOSURE_WATTS: &str = "node_enclosure_watts";
    /// Unix time the last collection finished.
    pub const EXPORTER_LAST_COLLECTION: &str = "exporter_last_collection_timestamp_seconds";
    /// Scheduler events the eBPF accounting dropped on a full process map.
    pub const EXPORTER_EBPF_DROPPED: &str = "exporter_ebpf_dropped_events_total";
}

/// Labels shared by exporter series (Kepler's names where Kepler has one).
pub mod label {
    pub const NODE: &str = "node_name";
    pub const ZONE: &str = "zone";
    pub const SOURCE: &str = "source";
    pub const POD_ID: &str = "pod_id";
    pub const POD_NAME: &str = "pod_name";
    pub const POD_NAMESPACE: &str = "pod_namespace";
    pub const CONTAINER_ID: &str = "container_id";
    pub const CONTAINER_NAME: &str = "container_name";
    pub const PID: &str = "pid";
    pub const COMM: &str = "comm";
    pub const GPU: &str = "gpu";
    pub const UUID: &str = "uuid";
    /// Label Flotta's device worker adds to remote-written series.
    pub const FLOTTA_DEVICE: &str = "edgedeviceid";
    /// Label of Flotta's heartbeat counter.
    pub const FLOTTA_DEVICE_ID: &str = "deviceID";
}

/// Controller and extender metrics; always `edgewatt_`-prefixed (Kepler has no equivalent).
pub mod control {
    pub const MIGRATIONS_TOTAL: &str = "edgewatt_migrations_total";
    pub const MIGRATION_DURATION_SECONDS: &str = "edgewatt_migration_duration_seconds";
    pub const STARVED_TARGETS: &str = "edgewatt_starved_targets";
    pub const TARGET_STARVED: &str = "edgewatt_target_starved";
    pub const PROMETHEUS_ERRORS_TOTAL: &str = "edgewatt_prometheus_errors_total";
    pub const PROMETHEUS_DATA_AGE_SECONDS: &str = "edgewatt_prometheus_data_age_seconds";
    pub const SCHEDULER_REQUESTS_TOTAL: &str = "edgewatt_scheduler_requests_total";
    pub const SCHEDULER_REQUEST_DURATION_SECONDS: &str =
        "edgewatt_scheduler_request_duration_seconds";
    /// 1 while a PowerModel is shared with meterless nodes, else 0, `{model,cpu_model}` (Lease
    /// holder only).
    pub const POWER_MODEL_SHARED: &str = "edgewatt_power_model_shared";
    /// A PowerModel's error against its meters, percent of full-load watts, `{model,cpu_model}`.
    pub const POWER_MODEL_ERROR_PERCENT: &str = "edgewatt_power_model_error_percent";
    /// Flotta operator's per-device heartbeat counter: liveness of an EdgeDevice.
    pub const FLOTTA_HEARTBEAT: &str = "flotta_api_edge_devices_heartbeat";
}

/// Exporter metric names under a chosen prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricNames {
    prefix: String,
}

impl Default for MetricNames {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl MetricNames {
    /// `prefix` without the trailing underscore (`edgewatt`, `kepler`).
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            prefix: prefix.trim_end_matches('_').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full name of a [`base`] metric.
    pub fn name(&self, base: &str) -> String {
        format!("{}_{}", self.prefix, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_compose() {
        assert_eq!(
            MetricNames::default().name(base::NODE_CPU_WATTS),
            "edgewatt_node_cpu_watts"
        );
        assert_eq!(
            MetricNames::new("kepler_").name(base::POD_CPU_JOULES),
            "kepler_pod_cpu_joules_total"
        );
    }
}
