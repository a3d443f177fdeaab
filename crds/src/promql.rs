//! Every PromQL string edgewatt sends, built in one place so the controller, the extender, the
//! dashboards' tests and the alert rules cannot drift apart.
//!
//! Each signal comes as a pair of queries for *all* targets at once: its latest value and its
//! sample age. Nodes are scraped every few seconds; Flotta devices remote-write in batches every
//! ~5 minutes, so the look-back window and the join label are per target kind ([`TargetQuery`]).

use std::time::Duration;

use crate::metrics::{base, control, label, MetricNames};

/// The subquery step of [`TargetQuery::supply_hourly`]: fine enough for an hourly average,
/// coarse enough for 10 000 targets over days.
pub const SUPPLY_RESOLUTION: Duration = Duration::from_secs(60);

/// A per-target signal the controller and extender read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Battery state of charge, 0..1.
    BatteryRatio,
    /// Energy left in the battery, joules.
    BatteryEnergy,
    /// Battery discharge power, watts (0 when charging or on mains).
    BatteryDraw,
    /// Whole-node draw: the platform meter where there is one, else the sum of CPU packages and
    /// DRAM (RAPL, hwmon or estimator) plus GPUs, each zone and GPU counted once.
    NodeWatts,
    /// The node's configured budget (exporter `--power-budget-watts` or BMC limit).
    PowerBudget,
    /// 1 when on mains/AC.
    ExternalPower,
    /// Full battery energy, joules (the runway forecast).
    BatteryCapacity,
    /// Power flowing into the battery, watts (the runway forecast).
    ChargePower,
}

impl Signal {
    pub const ALL: [Signal; 6] = [
        Signal::BatteryRatio,
        Signal::BatteryEnergy,
        Signal::BatteryDraw,
        Signal::NodeWatts,
        Signal::PowerBudget,
        Signal::ExternalPower,
    ];

    /// What the runway forecast reads besides [`Signal::ALL`].
    pub const FORECAST: [Signal; 2] = [Signal::BatteryCapacity, Signal::ChargePower];

    /// The metrics this signal is built from, most preferred first.
    fn metrics(self, names: &MetricNames) -> Vec<String> {
        match self {
            Signal::BatteryRatio => vec![names.name(base::BATTERY_CHARGE_RATIO)],
            Signal::BatteryEnergy => vec![names.name(base::BATTERY_ENERGY_JOULES)],
            Signal::BatteryDraw => vec![names.name(base::BATTERY_POWER_WATTS)],
            Signal::NodeWatts => vec![
                names.name(base::NODE_PLATFORM_WATTS),
                names.name(base::NODE_CPU_WATTS),
            ],
            Signal::PowerBudget => vec![names.name(base::POWER_BUDGET_WATTS)],
            Signal::ExternalPower => vec![names.name(base::EXTERNAL_POWER)],
            Signal::BatteryCapacity => vec![names.name(base::BATTERY_CAPACITY_JOULES)],
            Signal::ChargePower => vec![names.name(base::BATTERY_CHARGE_POWER_WATTS)],
        }
    }
}

/// How to find one kind of target's series in Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetQuery {
    pub names: MetricNames,
    /// The label carrying the target's name (`node_name`, or `edgedeviceid` for remote-written
    /// Flotta devices).
    pub join_label: String,
    /// How far back a sample may be and still be used (the freshness window).
    pub window: Duration,
}

impl TargetQuery {
    /// Scraped Kubernetes nodes: `node_name`, 2 minutes.
    pub fn nodes(names: MetricNames) -> Self {
        Self {
            names,
            join_label: label::NODE.to_string(),
            window: Duration::from_secs(120),
        }
    }

    /// Flotta devices: `edgedeviceid`, 15 minutes (three remote-write batches).
    pub fn edge_devices(names: MetricNames) -> Self {
        Self {
            names,
            join_label: label::FLOTTA_DEVICE.to_string(),
            window: Duration::from_secs(900),
        }
    }

    fn range(&self) -> String {
        format!("{}s", self.window.as_secs().max(1))
    }

    /// Latest value of `signal` for every target, one series per `join_label` value.
    pub fn value(&self, signal: Signal) -> String {
        let l = &self.join_label;
        let w = self.range();
        match signal {
            Signal::NodeWatts => {
                // Platform meter first (it covers GPUs too); else CPU zones plus GPUs. Each zone
                // and each GPU counts once: `max by` over whatever series carry it (a restarted
                // exporter's old series, a second source of the same zone) before summing, so a
                // duplicate can never double the draw (DESIGN.md "Failure rules").
                let m = signal.metrics(&self.names);
                let cpu = format!(
                    "sum by ({l}) (max by ({l}, zone) (last_over_time({}{{zone=~\"package|dram\"}}[{w}])))",
                    m[1]
                );
                let gpu = format!(
                    "sum by ({l}) (max by ({l}, gpu) (last_over_time({}[{w}])))",
                    self.names.name(base::NODE_GPU_WATTS)
                );
                format!(
                    "max by ({l}) (last_over_time({}[{w}])) or ({cpu} + {gpu}) or {cpu}",
                    m[0]
                )
            }
            _ => {
                let m = &signal.metrics(&self.names)[0];
                format!("max by ({l}) (last_over_time({m}[{w}]))")
            }
        }
    }

    /// Hourly average of each target's external supply over the hour before each evaluation
    /// (a range query, step 1 h, over the forecast's history): what solar or mains delivered,
    /// i.e. battery charge power − battery discharge power + node draw (what flows in equals
    /// what is stored plus what is used). A target missing any of the three has no series (the
    /// forecast is then unknown, never 0 W).
    /// `resolution` is the subquery step: 1 minute in the controller ([`SUPPLY_RESOLUTION`]).
    pub fn supply_hourly(&self, resolution: Duration) -> String {
        let l = &self.join_label;
        let charge = self.names.name(base::BATTERY_CHARGE_POWER_WATTS);
        let draw = self.names.name(base::BATTERY_POWER_WATTS);
        let node = self.value(Signal::NodeWatts);
        format!(
            "avg_over_time((max by ({l}) ({charge}) - max by ({l}) ({draw}) + on ({l}) ({node}))[1h:{}s])",
            resolution.as_secs().max(1)
        )
    }

    /// Each workload's own draw now: pods' attributed CPU power by namespace and name, each
    /// zone counted once (a restarted exporter's old series never doubles it); the join label
    /// keeps a device's workloads apart (on Flotta devices `pod_name` is the workload's).
    pub fn workload_watts(&self) -> String {
        let l = &self.join_label;
        let w = self.range();
        let pod = self.names.name(base::POD_CPU_WATTS);
        format!(
            "sum by ({l}, {ns}, {name}) (max by ({l}, {ns}, {name}, zone) (last_over_time({pod}[{w}])))",
            ns = label::POD_NAMESPACE,
            name = label::POD_NAME
        )
    }

    /// Age in seconds of the newest sample behind `signal`, per target. Missing targets have no
    /// data inside the window at all.
    pub fn age(&self, signal: Signal) -> String {
        let l = &self.join_label;
        let w = self.range();
        let selectors: Vec<String> = signal
            .metrics(&self.names)
            .iter()
            .map(|m| {
                if signal == Signal::NodeWatts && m.ends_with(base::NODE_CPU_WATTS) {
                    format!("{m}{{zone=~\"package|dram\"}}")
                } else {
                    m.clone()
                }
            })
            .collect();
        // `timestamp()` of a plain selector is the sample's own time, but only within the 5 minute
        // look-back; the subquery finds older samples (to a 10 s step) up to the window.
        let newest = selectors
            .iter()
            .map(|s| {
                format!("max by ({l}) (timestamp({s})) or max by ({l}) (max_over_time(timestamp({s})[{w}:10s]))")
            })
            .collect::<Vec<_>>()
            .join(" or ");
        format!("time() - ({newest})")
    }

    /// Flotta heartbeat increase per device over the window: a device whose counter stopped is
    /// not alive, whatever its `status.phase` says.
    pub fn heartbeat_increase(&self) -> String {
        let w = self.range();
        format!(
            "sum by ({l}) (increase({m}[{w}]))",
            l = label::FLOTTA_DEVICE_ID,
            m = control::FLOTTA_HEARTBEAT
        )
    }
}

/// A pod's draw now: the sum of its zones (CPU package + DRAM, or platform, plus GPUs), each
/// zone counted once (`max by` over duplicate series: a restarted exporter, a second source).
/// The expression of the recording rule [`pod_watts_record`] (`charts/edgewatt/files`).
pub fn pod_watts_sum(names: &MetricNames) -> String {
    let by = format!("{}, {}", label::POD_NAMESPACE, label::POD_NAME);
    format!(
        "sum by ({by}) (max by ({by}, {zone}) ({cpu}) or max by ({by}, {zone}) ({gpu}))",
        zone = label::ZONE,
        cpu = names.name(base::POD_CPU_WATTS),
        gpu = names.name(base::POD_GPU_WATTS),
    )
}

/// Name of the recording rule holding [`pod_watts_sum`]: `pod:<prefix>_pod_watts:sum`.
pub fn pod_watts_record(names: &MetricNames) -> String {
    format!("pod:{}_pod_watts:sum", names.prefix())
}

/// Name of the recording rule averaging [`pod_watts_record`] over an hour:
/// `pod:<prefix>_pod_watts:avg_1h`. The extender reads it with one instant query, which costs
/// one sample per pod however long the history (cheap at 10 000 pods).
pub fn pod_average_record(names: &MetricNames) -> String {
    format!("pod:{}_pod_watts:avg_1h", names.prefix())
}

/// The expression of [`pod_average_record`].
pub fn pod_average_rule(names: &MetricNames) -> String {
    format!("avg_over_time({}[1h])", pod_watts_record(names))
}

/// Average draw of every pod over `window` (sum of its zones, per pod; grouped by owner in code,
/// so one query serves all pending pods), for a Prometheus without the recording rules: a
/// subquery at a 5 minute step evaluates [`pod_watts_sum`] at most `window / 5m` times per pod,
/// bounded whatever the scrape interval (a range over the raw series would read every sample);
/// pods younger than the last step get their current draw.
pub fn pod_average_watts(names: &MetricNames, window: Duration) -> String {
    let sum = pod_watts_sum(names);
    format!(
        "avg_over_time(({sum})[{}s:5m]) or {sum}",
        window.as_secs().max(300)
    )
}

/// Nodes the controller enforces starvation on: `edgewatt_target_starved{kind="Node",
/// mode="Migrate"} == 1` whose newest sample is at most `max_age` old, one series per node
/// (`name`). Dry-run policies (`mode="Observe"`) never filter; the Lease holder alone exports the
/// series and a standby withdraws its own (DESIGN.md "Controller and extender metrics"), and a
/// series that stopped being updated (a controller gone without staleness markers, remote-written
/// or federated data) stops counting after `max_age`.
pub fn starved_nodes(max_age: Duration) -> String {
    let sel = format!(
        "{}{{kind=\"Node\",mode=\"Migrate\"}}",
        control::TARGET_STARVED
    );
    format!(
        "max by (name) ({sel} == 1 and (time() - timestamp({sel})) <= {})",
        max_age.as_secs().max(1)
    )
}

/// A user's custom starvation query, wrapped so it can be evaluated for all targets at once.
/// The user's expression must itself return one series per target with the join label.
pub fn custom(promql: &str) -> String {
    format!("({promql})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_use_prefix_join_label_and_window() {
        let q = TargetQuery::nodes(MetricNames::default());
        assert_eq!(
            q.value(Signal::BatteryRatio),
            "max by (node_name) (last_over_time(edgewatt_node_battery_charge_ratio[120s]))"
        );
        let d = TargetQuery::edge_devices(MetricNames::new("kepler"));
        assert!(d
            .value(Signal::BatteryDraw)
            .contains("kepler_node_battery_power_watts[900s]"));
        assert!(d
            .age(Signal::BatteryRatio)
            .starts_with("time() - (max by (edgedeviceid)"));
        assert!(q.age(Signal::NodeWatts).contains(" or "));
    }

    #[test]
    fn pod_and_starved_queries() {
        let n = MetricNames::default();
        assert_eq!(
            pod_watts_sum(&n),
            "sum by (pod_namespace, pod_name) (max by (pod_namespace, pod_name, zone) (edgewatt_pod_cpu_watts) or max by (pod_namespace, pod_name, zone) (edgewatt_pod_gpu_watts))"
        );
        assert_eq!(pod_average_record(&n), "pod:edgewatt_pod_watts:avg_1h");
        assert_eq!(
            pod_average_rule(&MetricNames::new("kepler")),
            "avg_over_time(pod:kepler_pod_watts:sum[1h])"
        );
        assert!(pod_average_watts(&n, Duration::from_secs(3600))
            .starts_with("avg_over_time((sum by (pod_namespace, pod_name) (max by"));
        assert!(pod_average_watts(&n, Duration::from_secs(3600))
            .ends_with(&format!(")[3600s:5m]) or {}", pod_watts_sum(&n))));
        assert_eq!(
            starved_nodes(Duration::from_secs(120)),
            "max by (name) (edgewatt_target_starved{kind=\"Node\",mode=\"Migrate\"} == 1 and (time() - timestamp(edgewatt_target_starved{kind=\"Node\",mode=\"Migrate\"})) <= 120)"
        );
    }
}
