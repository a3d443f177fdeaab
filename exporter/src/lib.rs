//! Per-node and per-workload energy from RAPL, hwmon, batteries, Redfish, NVML or an estimator, served as Prometheus metrics
