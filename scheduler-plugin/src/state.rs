//! State shared by the request handlers and the background refresher.
//!
//! Handlers only ever clone an `Arc` to the latest table under a short read lock, so a slow or
//! dead Prometheus can never delay a scheduling decision.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, RwLock,
    },
    time::SystemTime,
};

use crate::{
    headroom::{self, FailOpen, HeadroomTable, Policy},
    metrics::Metrics,
};

/// Default request body limit: 1 000 full Node objects with long image lists are ~20 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Everything a request handler needs.
pub struct AppState {
    pub policy: Policy,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    table: RwLock<Option<Arc<HeadroomTable>>>,
    ready: AtomicBool,
    /// Last fail-open state seen (see [`mode_code`]), so it is logged once per change.
    mode: AtomicU8,
}

const MODE_UNSET: u8 = u8::MAX;

fn mode_code(f: Option<FailOpen>) -> u8 {
    match f {
        None => 0,
        Some(FailOpen::NoTable) => 1,
        Some(FailOpen::NoData) => 2,
        Some(FailOpen::Stale { .. }) => 3,
    }
}

impl AppState {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            metrics: Metrics::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            table: RwLock::new(None),
            ready: AtomicBool::new(false),
            mode: AtomicU8::new(MODE_UNSET),
        }
    }

    /// With a table already in place (tests, benchmarks).
    pub fn with_table(policy: Policy, table: HeadroomTable) -> Self {
        let s = Self::new(policy);
        s.publish(table);
        s.mark_ready();
        s
    }

    /// The latest table, if any refresh has succeeded.
    pub fn table(&self) -> Option<Arc<HeadroomTable>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the table (a successful refresh).
    pub fn publish(&self, table: HeadroomTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(table));
        self.refresh_gauges();
    }

    /// Called after the first refresh attempt, whatever its result: from then on `/readyz` is
    /// 200 (an extender that fails open is still useful to the scheduler).
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Updates the data-age and fail-open gauges from the current table and returns the mode.
    pub fn refresh_gauges(&self) -> Option<FailOpen> {
        let table = self.table();
        let now = SystemTime::now();
        self.metrics
            .set_data_age(table.as_ref().and_then(|t| t.data_age(now)));
        let mode = headroom::mode(table.as_deref(), &self.policy, now).err();
        self.record_mode(mode);
        mode
    }

    /// Logs a change of fail-open state (once per change, never per request) and sets the gauge.
    pub fn record_mode(&self, mode: Option<FailOpen>) {
        let code = mode_code(mode);
        self.metrics.fail_open.set(i64::from(mode.is_some()));
        let old = self.mode.swap(code, Ordering::AcqRel);
        if old != code {
            match mode {
                Some(reason) => tracing::warn!(
                    %reason,
                    "failing open: every node passes the filter with a neutral score"
                ),
                None if old != MODE_UNSET => {
                    tracing::info!("fresh power data again: filtering and scoring by headroom")
                }
                None => {}
            }
        }
    }

    /// Counts one request answered in fail-open mode.
    pub fn count_fail_open(&self, mode: Option<FailOpen>) {
        self.record_mode(mode);
        if mode.is_some() {
            self.metrics.fail_open_requests.inc();
        }
    }
}
