//! Reading the policy's signals from Prometheus: one batched query pair per signal per target
//! kind (never one per target), Flotta's heartbeat counter, and the policy's custom query.
//! Any failure fails the whole read: a partial picture could make a healthy target look starved.

use std::collections::HashMap;

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
    /// The built-in signals were read but the policy's own query failed (a PromQL syntax error,
    /// a result that is not an instant vector): the policy is at fault, not Prometheus.
    #[error("custom query {query:?} failed: {error}")]
    InvalidQuery { query: String, error: PromError },
}

/// Reads everything `spec` needs. Target kinds the policy does not select are not queried,
/// except that device heartbeats are read whenever devices are selected. `device_label` is the
/// label carrying the device id on device series (`edgedeviceid` for Flotta remote write).
pub async fn read(
    reader: &PromReader,
    names: &MetricNames,
    spec: &EnergyPolicySpec,
    device_label: &str,
) -> Result<PromData, ReadError> {
    let mut out = PromData::default();
    let nodes_q = TargetQuery::nodes(names.clone());
    let mut devices_q = TargetQuery::edge_devices(names.clone());
    devices_q.join_label = device_label.to_string();
    let want_nodes = spec.targets.node_selector.is_some();
    let want_devices = spec.targets.edge_device_selector.is_some();
    let custom = spec
        .starvation
        .query
        .as_ref()
        .map(|q| promql::custom(&q.promql));
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
        match &custom {
            Some(q) => {
                let (n, d) = futures::try_join!(
                    async {
                        if want_nodes {
                            reader.by_label(q, label::NODE).await
                        } else {
                            Ok(HashMap::new())
                        }
                    },
                    async {
                        if want_devices {
                            reader.by_label(q, device_label).await
                        } else {
                            Ok(HashMap::new())
                        }
                    }
                )?;
                Ok::<_, PromError>((n, d))
            }
            None => Ok((HashMap::new(), HashMap::new())),
        }
    };
    let (builtin, customs) = futures::join!(async { futures::try_join!(nodes, devices) }, customs);
    let (n, d) = builtin?;
    let (cn, cd) = customs.map_err(|error| ReadError::InvalidQuery {
        query: spec
            .starvation
            .query
            .as_ref()
            .map(|q| q.promql.clone())
            .unwrap_or_default(),
        error,
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
