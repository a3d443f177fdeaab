//! The background refresher: reads every node's signals, the nodes the controller enforces
//! starvation on and the per-pod average draw from Prometheus with a fixed number of batched
//! queries (never one per node or per request), and publishes a new [`HeadroomTable`].
//!
//! The pod draw comes from the chart's recording rule `pod:edgewatt_pod_watts:avg_1h` (one
//! sample per pod); where it is absent (a Prometheus without the chart's rules) a bounded
//! subquery computes the same figure.
//!
//! A failed refresh keeps the previous table: its samples keep ageing, so after
//! `--max-data-age` the extender fails open by itself; one blip does not flap decisions.

use std::{collections::HashSet, sync::Arc, time::Duration};

use edgewatt_crds::{
    metrics::{label, MetricNames},
    prom::{PromError, PromReader, Series},
    promql::{self, TargetQuery},
};

use crate::{headroom::HeadroomTable, node_table::SIGNALS, state::AppState};

/// How far back the expected draw of a pod's owner looks.
pub const POD_HISTORY: Duration = Duration::from_secs(3600);

/// Builds [`HeadroomTable`]s from Prometheus.
#[derive(Clone)]
pub struct Refresher {
    reader: PromReader,
    query: TargetQuery,
    pod_record: String,
    pod_query: String,
    starved_query: String,
}

impl Refresher {
    /// `max_data_age` doubles as the query look-back and the starvation series' age limit, so
    /// anything younger than the limit is found and nothing older counts.
    pub fn new(reader: PromReader, names: MetricNames, max_data_age: Duration) -> Self {
        let pod_record = promql::pod_average_record(&names);
        let pod_query = promql::pod_average_watts(&names, POD_HISTORY);
        let mut query = TargetQuery::nodes(names);
        query.window = max_data_age.max(Duration::from_secs(1));
        Self {
            reader,
            query,
            pod_record,
            pod_query,
            starved_query: promql::starved_nodes(max_data_age),
        }
    }

    /// Per-pod average draw: the recording rule's series, else (rule absent, or no pods yet)
    /// the bounded fallback query.
    async fn pod_draws(&self) -> Result<Vec<Series>, PromError> {
        let recorded = self.reader.vector(&self.pod_record).await?;
        if !recorded.is_empty() {
            return Ok(recorded);
        }
        self.reader.vector(&self.pod_query).await
    }

    /// One refresh: 2 queries per signal plus 2 (3 without the recording rule), all in flight at
    /// once.
    pub async fn fetch(&self) -> Result<HeadroomTable, PromError> {
        let (signals, starved, pods) = tokio::try_join!(
            self.reader.signals(&self.query, &SIGNALS),
            self.reader.by_label(&self.starved_query, "name"),
            self.pod_draws(),
        )?;
        let starved: HashSet<String> = starved
            .into_iter()
            .filter(|(_, v)| *v >= 1.0)
            .map(|(k, _)| k)
            .collect();
        let pods = pods.into_iter().filter_map(|s| {
            Some((
                s.labels.get(label::POD_NAMESPACE)?.clone(),
                s.labels.get(label::POD_NAME)?.clone(),
                s.value,
            ))
        });
        Ok(HeadroomTable::new(signals, starved, pods))
    }

    /// Fetches once and publishes the result; returns whether it succeeded. Errors are counted;
    /// the caller logs state changes.
    pub async fn refresh_once(&self, state: &AppState) -> Result<(), PromError> {
        let result = self.fetch().await;
        if result.is_err() {
            state.metrics.prometheus_errors.inc();
        }
        let out = result.map(|t| state.publish(t));
        state.mark_ready();
        state.refresh_gauges();
        out
    }

    /// Refreshes every `interval` until the task is dropped, logging Prometheus failures once
    /// per change of state rather than once per attempt.
    pub async fn run(self, state: Arc<AppState>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing: Option<bool> = None;
        loop {
            tick.tick().await;
            match self.refresh_once(&state).await {
                Ok(()) => {
                    if failing != Some(false) {
                        tracing::info!("Prometheus refresh succeeded");
                    }
                    failing = Some(false);
                }
                Err(error) => {
                    if failing != Some(true) {
                        tracing::warn!(%error, "Prometheus refresh failed; keeping the previous table until it ages out");
                    } else {
                        tracing::debug!(%error, "Prometheus refresh failed again");
                    }
                    failing = Some(true);
                }
            }
        }
    }
}
