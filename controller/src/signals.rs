//! Reading the policy's signals from Prometheus: one batched query pair per signal per target
//! kind (never one per target), Flotta's heartbeat counter, and the policy's custom query.
//! Any failure fails the whole read: a partial picture could make a healthy target look starved.
//!
//! The look-back windows are the configured freshness ages (`--node-max-age`,
//! `--device-max-age`), so a reading is never older than what the controller accepts. The
//! custom query's values get the same age check (through `timestamp()`, which is the sample's
//! own time for a plain selector and the evaluation time otherwise) and must be finite numbers;
//! a target with several series is ambiguous. Any of these makes the value unknown, never a
//! number that satisfies a threshold (NaN used to become −∞, which is `below` anything).

use std::collections::HashMap;
use std::time::Duration;

use edgewatt_crds::{
    metrics::{label, MetricNames},
    prom::{PromError, PromReader},
    promql::{self, Signal, TargetQuery},
    EnergyPolicySpec,
};

use crate::snapshot::PromData;

/// Signals every cycle needs (budget and mains for fail-safe reading of power conditions).
const SIGNALS: [Signal; 6] = Signal::ALL;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Prometheus is down or failing: the built-in signals could not be read.
    #[error(transparent)]
    Prometheus(#[from] PromError),
    /// The built-in signals were read but Prometheus rejected the policy's own query (a PromQL
    /// syntax or execution error, a result that is not an instant vector): the policy is at
    /// fault, not Prometheus. A timeout or an unreachable Prometheus is not this.
    #[error("custom query {query:?} failed: {error}")]
    InvalidQuery { query: String, error: PromError },
}

/// Whether Prometheus refused the query itself (as opposed to failing to answer).
fn query_rejected(e: &PromError) -> bool {
    use prometheus_http_query::{error::PrometheusErrorType as T, Error as E};
    match e {
        PromError::NotAVector { .. } => true,
        PromError::Request(E::Prometheus(p)) => {
            matches!(p.error_type(), T::BadData | T::Execution)
        }
        _ => false,
    }
}

/// Per target: the custom query's value when it is one finite number at most `max_age` old.
pub fn custom_values(
    values: &[edgewatt_crds::prom::Series],
    ages: &[edgewatt_crds::prom::Series],
    label: &str,
    max_age: Duration,
) -> HashMap<String, f64> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in values {
        if let Some(k) = s.labels.get(label) {
            *count.entry(k).or_default() += 1;
        }
    }
    let mut age: HashMap<&str, f64> = HashMap::new();
    for s in ages {
        if let Some(k) = s.labels.get(label) {
            let e = age.entry(k).or_insert(f64::INFINITY);
            // The oldest sample behind the value decides.
            if s.value.is_finite() {
                *e = if e.is_finite() {
                    e.max(s.value)
                } else {
                    s.value
                };
            }
        }
    }
    values
        .iter()
        .filter_map(|s| {
            let k = s.labels.get(label)?;
            let fresh = age
                .get(k.as_str())
                .is_some_and(|a| *a <= max_age.as_secs_f64());
            (count[k.as_str()] == 1 && s.value.is_finite() && fresh).then(|| (k.clone(), s.value))
        })
        .collect()
}

/// Reads everything `spec` needs. Target kinds the policy does not select are not queried,
/// except that device heartbeats are read whenever devices are selected. `device_label` is the
/// label carrying the device id on device series (`edgedeviceid` for Flotta remote write).
pub async fn read(
    reader: &PromReader,
    names: &MetricNames,
    spec: &EnergyPolicySpec,
    device_label: &str,
    ages: MaxAges,
) -> Result<PromData, ReadError> {
    let mut out = PromData::default();
    let mut nodes_q = TargetQuery::nodes(names.clone());
    nodes_q.window = ages.node;
    let mut devices_q = TargetQuery::edge_devices(names.clone());
    devices_q.join_label = device_label.to_string();
    devices_q.window = ages.device;
    let want_nodes = spec.targets.node_selector.is_some();
    let want_devices = spec.targets.edge_device_selector.is_some();
    let custom = spec
        .starvation
        .query
        .as_ref()
        .map(|q| promql::custom(&q.promql));
    let custom_by = |label: String, max_age: Duration| {
        let q = custom.clone();
        async move {
            let Some(q) = q else {
                return Ok(HashMap::new());
            };
            let age_q = format!("time() - timestamp({q})");
            let (v, a) = futures::try_join!(reader.vector(&q), reader.vector(&age_q))?;
            Ok::<_, PromError>(custom_values(&v, &a, &label, max_age))
        }
    };
    let nodes = async {
        if want_nodes {
            reader.signals(&nodes_q, &SIGNALS).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let devices = async {
        if want_devices {
            let hb_q = devices_q.heartbeat_increase();
            let (table, heartbeats) = futures::try_join!(
                reader.signals(&devices_q, &SIGNALS),
                reader.by_label(&hb_q, label::FLOTTA_DEVICE_ID)
            )?;
            Ok(Some((table, heartbeats)))
        } else {
            Ok::<_, PromError>(None)
        }
    };
    let customs = async {
        futures::try_join!(
            async {
                if want_nodes {
                    custom_by(label::NODE.to_string(), ages.node).await
                } else {
                    Ok(HashMap::new())
                }
            },
            async {
                if want_devices {
                    custom_by(device_label.to_string(), ages.device).await
                } else {
                    Ok(HashMap::new())
                }
            }
        )
    };
    let (builtin, customs) = futures::join!(async { futures::try_join!(nodes, devices) }, customs);
    let (n, d) = builtin?;
    let (cn, cd) = customs.map_err(|error| {
        if query_rejected(&error) {
            ReadError::InvalidQuery {
                query: spec
                    .starvation
                    .query
                    .as_ref()
                    .map(|q| q.promql.clone())
                    .unwrap_or_default(),
                error,
            }
        } else {
            ReadError::Prometheus(error)
        }
    })?;
    if let Some(n) = n {
        out.nodes = n;
    }
    if let Some((d, hb)) = d {
        out.devices = d;
        out.heartbeats = hb;
    }
    out.custom_nodes = cn;
    out.custom_devices = cd;
    Ok(out)
}

/// The freshness ages: readings older than these are unknown, and no query looks further back.
#[derive(Debug, Clone, Copy)]
pub struct MaxAges {
    pub node: Duration,
    pub device: Duration,
}

/// Age in seconds of the oldest reading in `table` (for `edgewatt_prometheus_data_age_seconds`).
pub fn oldest_age(table: &edgewatt_crds::prom::SignalTable) -> Option<f64> {
    table
        .readings
        .values()
        .flat_map(|m| m.values())
        .filter_map(|r| r.age_secs)
        .fold(None, |acc: Option<f64>, a| {
            Some(acc.map_or(a, |x| x.max(a)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatt_crds::prom::Series;

    fn series(target: &str, v: f64) -> Series {
        Series {
            labels: [("node_name".to_string(), target.to_string())].into(),
            value: v,
        }
    }

    #[test]
    fn custom_values_are_finite_fresh_and_unambiguous() {
        let values = [
            series("ok", 3.0),
            series("nan", f64::NAN),
            series("inf", f64::NEG_INFINITY),
            series("stale", 1.0),
            series("twice", 1.0),
            series("twice", 9.0),
            series("no-age", 1.0),
        ];
        let ages = [
            series("ok", 5.0),
            series("nan", 5.0),
            series("inf", 5.0),
            series("stale", 500.0),
            series("twice", 1.0),
            series("twice", 1.0),
        ];
        let got = custom_values(&values, &ages, "node_name", Duration::from_secs(120));
        assert_eq!(got, [("ok".to_string(), 3.0)].into());
    }
}
