//! Reading the policy's signals from Prometheus: one batched query pair per signal per target
//! kind (never one per target), Flotta's heartbeat counter, and the policy's custom query. A
//! policy that uses the runway forecast also gets battery capacity and charge power, each
//! workload's own draw (one query per kind), and the targets' hourly supply history (one range
//! query per kind, kept for [`SUPPLY_REFRESH`]: it changes by the hour).
//! Any failure fails the whole read: a partial picture could make a healthy target look starved.
//!
//! The look-back windows are the configured freshness ages (`--node-max-age`,
//! `--device-max-age`), so a reading is never older than what the controller accepts. The
//! custom query's values get the same age check (through `timestamp()`, which is the sample's
//! own time for a plain selector and the evaluation time otherwise) and must be finite numbers;
//! a target with several series is ambiguous. Any of these makes the value unknown, never a
//! number that satisfies a threshold (NaN used to become −∞, which is `below` anything).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use edgewatt_crds::{
    metrics::{label, MetricNames},
    prom::{PromError, PromReader, SignalTable},
    promql::{self, Signal, TargetQuery},
    EnergyPolicySpec,
};

/// What Prometheus said this cycle, per target kind.
#[derive(Debug, Clone, Default)]
pub struct PromData {
    pub nodes: SignalTable,
    pub devices: SignalTable,
    /// Flotta heartbeat increase per device id over the device window (absent: no data).
    pub heartbeats: HashMap<String, f64>,
    /// Custom query value per node / device.
    pub custom_nodes: HashMap<String, f64>,
    pub custom_devices: HashMap<String, f64>,
    /// Each workload's own draw, watts (policies that use the forecast).
    pub workload_watts: WorkloadWatts,
    /// Hourly supply history per node / device (policies that use the forecast).
    pub supply_nodes: Arc<SupplyHistory>,
    pub supply_devices: Arc<SupplyHistory>,
}

/// Each workload's own draw, watts.
#[derive(Debug, Clone, Default)]
pub struct WorkloadWatts {
    /// Pods by (namespace, name).
    pub pods: HashMap<(String, String), f64>,
    /// EdgeWorkload instances by (device, workload name): device series carry no namespace.
    pub edge: HashMap<(String, String), f64>,
}

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

/// Whether `spec` uses the runway forecast (its starvation condition or the ladder).
pub fn needs_forecast(spec: &EnergyPolicySpec) -> bool {
    spec.starvation.runway_below_recharge == Some(true)
        || spec
            .action
            .degrade
            .as_ref()
            .is_some_and(|d| !d.steps.is_empty())
}

/// How long a supply history read stays in use: the forecast works by the hour.
pub const SUPPLY_REFRESH: Duration = Duration::from_secs(15 * 60);

/// Hourly supply samples per target name: `(time, watts)`, oldest first.
pub type SupplyHistory = HashMap<String, Vec<(DateTime<Utc>, f64)>>;

/// The supply history reads of every policy, by query and window (policies with the same
/// forecast settings share one read).
#[derive(Debug, Default)]
pub struct SupplyCache(Mutex<HashMap<String, Fetched>>);

/// A supply history read and when it was made.
type Fetched = (DateTime<Utc>, Arc<SupplyHistory>);

impl SupplyCache {
    fn fresh(&self, key: &str, now: DateTime<Utc>) -> Option<Arc<SupplyHistory>> {
        let m = self.0.lock().expect("supply cache lock");
        let (at, h) = m.get(key)?;
        ((now - *at).to_std().is_ok_and(|age| age < SUPPLY_REFRESH)).then(|| h.clone())
    }
    fn store(&self, key: String, now: DateTime<Utc>, h: Arc<SupplyHistory>) {
        self.0
            .lock()
            .expect("supply cache lock")
            .insert(key, (now, h));
    }
}

/// Where and how signals are read.
pub struct Source<'a> {
    pub reader: &'a PromReader,
    pub names: &'a MetricNames,
    /// The label carrying the device id on device series (`edgedeviceid` for Flotta).
    pub device_label: &'a str,
    pub ages: MaxAges,
    pub supply: &'a SupplyCache,
}

/// The supply history of one target kind for `spec`'s forecast, from the cache or one range
/// query: the last `periods × period` hours, one sample an hour.
async fn supply_history(
    src: &Source<'_>,
    q: &TargetQuery,
    spec: &EnergyPolicySpec,
    now: DateTime<Utc>,
) -> Result<Arc<SupplyHistory>, PromError> {
    let period = edgewatt_crds::duration::parse(&spec.forecast.period)
        .map(|d| d.as_secs())
        .unwrap_or(86_400)
        .max(3600);
    let span = period.saturating_mul(u64::from(spec.forecast.periods.max(1))) + 3600;
    let expr = q.supply_hourly(promql::SUPPLY_RESOLUTION);
    let key = format!("{expr}|{span}");
    if let Some(h) = src.supply.fresh(&key, now) {
        return Ok(h);
    }
    let end = now.timestamp();
    let series = src
        .reader
        .matrix(&expr, end - span as i64, end, 3600.0)
        .await?;
    let h = Arc::new(hourly_history(&series, &q.join_label));
    src.supply.store(key, now, h.clone());
    Ok(h)
}

/// The supply history per target from the range query's series. A point at `T` is
/// `avg_over_time(…[1h:…])` evaluated at `T`: the mean over the hour *before* `T`, so it stands
/// for the hour that starts at `T − 1h` — what [`SupplyHistory`] samples mean
/// (`SupplyProfile::from_history`). Taken at `T`, each hour ahead would be forecast from the hour
/// before it on the earlier days: a sunrise an hour late, a sunset an hour late.
fn hourly_history(series: &[edgewatt_crds::prom::RangeSeries], join_label: &str) -> SupplyHistory {
    let mut out = SupplyHistory::new();
    for s in series {
        let Some(target) = s.labels.get(join_label) else {
            continue;
        };
        let samples = out.entry(target.clone()).or_default();
        samples.extend(
            s.samples
                .iter()
                .filter(|(_, v)| v.is_finite())
                .filter_map(|(t, v)| {
                    DateTime::from_timestamp(*t as i64 - 3600, 0).map(|t| (t, *v))
                }),
        );
    }
    out
}

/// Each workload's own draw, keyed `(namespace, pod)` for nodes and `(device, workload)` for
/// devices (a device's series carry no namespace).
async fn workload_watts(
    src: &Source<'_>,
    q: &TargetQuery,
    devices: bool,
) -> Result<HashMap<(String, String), f64>, PromError> {
    use edgewatt_crds::metrics::label as l;
    let mut out = HashMap::new();
    for s in src.reader.vector(&q.workload_watts()).await? {
        let first = if devices {
            s.labels.get(&q.join_label)
        } else {
            s.labels.get(l::POD_NAMESPACE)
        };
        if let (Some(a), Some(name)) = (first, s.labels.get(l::POD_NAME)) {
            if s.value.is_finite() && s.value >= 0.0 {
                out.insert((a.clone(), name.clone()), s.value);
            }
        }
    }
    Ok(out)
}

/// Reads everything `spec` needs at `now`. Target kinds the policy does not select are not
/// queried, except that device heartbeats are read whenever devices are selected.
pub async fn read(
    src: &Source<'_>,
    spec: &EnergyPolicySpec,
    now: DateTime<Utc>,
) -> Result<PromData, ReadError> {
    let (reader, names, device_label, ages) = (src.reader, src.names, src.device_label, src.ages);
    let signals: Vec<Signal> = if needs_forecast(spec) {
        SIGNALS.iter().chain(&Signal::FORECAST).copied().collect()
    } else {
        SIGNALS.to_vec()
    };
    let signals = &signals[..];
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
            reader.signals(&nodes_q, signals).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let devices = async {
        if want_devices {
            let hb_q = devices_q.heartbeat_increase();
            let (table, heartbeats) = futures::try_join!(
                reader.signals(&devices_q, signals),
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
    if needs_forecast(spec) {
        let forecast = async {
            futures::try_join!(
                async {
                    if want_nodes {
                        let (h, w) = futures::try_join!(
                            supply_history(src, &nodes_q, spec, now),
                            workload_watts(src, &nodes_q, false)
                        )?;
                        Ok::<_, PromError>(Some((h, w)))
                    } else {
                        Ok(None)
                    }
                },
                async {
                    if want_devices {
                        let (h, w) = futures::try_join!(
                            supply_history(src, &devices_q, spec, now),
                            workload_watts(src, &devices_q, true)
                        )?;
                        Ok::<_, PromError>(Some((h, w)))
                    } else {
                        Ok(None)
                    }
                }
            )
        };
        let (n, d) = forecast.await?;
        if let Some((h, w)) = n {
            out.supply_nodes = h;
            out.workload_watts.pods = w;
        }
        if let Some((h, w)) = d {
            out.supply_devices = h;
            out.workload_watts.edge = w;
        }
    }
    Ok(out)
}

/// The freshness ages: readings older than these are unknown, and no query looks further back.
#[derive(Debug, Clone, Copy)]
pub struct MaxAges {
    pub node: Duration,
    pub device: Duration,
}

/// Age in seconds of the oldest reading in `table` (for `edgewatt_prometheus_data_age_seconds`).
pub fn oldest_age(table: &SignalTable) -> Option<f64> {
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
    use std::collections::BTreeMap;

    fn series(target: &str, v: f64) -> Series {
        Series {
            labels: [("node_name".to_string(), target.to_string())].into(),
            value: v,
        }
    }

    /// A range query's point at `T` averages `[T − 1h, T]` (Prometheus `avg_over_time` over a
    /// `[1h:…]` subquery ends at the evaluation time): it is the sample of the hour starting at
    /// `T − 1h`; points without the join label or not finite are no data. Source: Prometheus
    /// "Querying basics", Range Vector Selectors ("a range of samples back from the current
    /// instant") and Subquery; e2e/tests/ladder_loop.rs checks it against a real Prometheus.
    #[test]
    fn a_supply_point_stands_for_the_hour_before_it() {
        use edgewatt_crds::prom::RangeSeries;
        let t = 1_800_000_000.0;
        let series = [
            RangeSeries {
                labels: [("node_name".to_string(), "a".to_string())].into(),
                samples: vec![(t, 0.0), (t + 3600.0, 100.0), (t + 7200.0, f64::NAN)],
            },
            RangeSeries {
                labels: BTreeMap::new(),
                samples: vec![(t, 5.0)],
            },
        ];
        let h = hourly_history(&series, "node_name");
        let at = |s: f64| DateTime::from_timestamp(s as i64, 0).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h["a"], vec![(at(t - 3600.0), 0.0), (at(t), 100.0)]);
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
