//! What every part of the controller's runtime shares: its [`Settings`], the clients and caches,
//! the leadership [`Fence`], the [`Clock`], and each policy's memory. The bottom of the runtime
//! layer: it names the parts, it calls none of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edgewatt_crds::{metrics::MetricNames, prom::PromReader};
use kube::{
    runtime::events::{Recorder, Reporter},
    Client,
};
use tokio::sync::Mutex;

use crate::{
    actuator::Actuator, clock::Clock, degrader::KubeLadder, leader::Fence, metrics::Metrics,
    mover::KubeMoves, runtime::PolicyRuntime, signals::SupplyCache, stores::Stores,
};

/// Runtime settings (from the command line: [`crate::cli`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub metric_names: MetricNames,
    /// Label carrying the device id on device series.
    pub device_label: String,
    pub node_max_age: Duration,
    pub device_max_age: Duration,
    /// Overrides every policy's `migrationTimeout` when set.
    pub migration_timeout: Option<Duration>,
    /// The controller's own namespace: edgewatt never acts on the pods there.
    pub own_namespace: String,
}

impl Settings {
    /// The longest gap between cycles with known data that still counts as "seen continuously"
    /// for `for` windows: two intervals, at least 30 s (documented on the CRD's `for`).
    pub fn max_gap(&self) -> Duration {
        (self.interval * 2).max(Duration::from_secs(30))
    }
}

/// Shared context of the reconciler.
pub struct Context {
    pub client: Client,
    pub actuator: Actuator,
    /// EdgeWorkload moves' reads and writes.
    pub moves: KubeMoves,
    /// The degradation ladder's reads and writes (resize, scale, EdgeWorkloads kept).
    pub ladder: KubeLadder,
    pub reader: PromReader,
    pub stores: Stores,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Leadership: every write checks it.
    pub fence: Fence,
    /// Where decisions take `now` from.
    pub clock: Clock,
    /// Supply history reads, shared by the policies' forecasts.
    pub supply: SupplyCache,
    /// Per-policy memory, each behind its own lock.
    pub runtime: Mutex<HashMap<String, Arc<Mutex<PolicyRuntime>>>>,
}

impl Context {
    /// A context whose Events are reported as `edgewatt-controller` instance `instance`.
    /// `evict_client` should be built without kube's 429 retries (a PDB refusal must come back
    /// at once).
    pub fn new(
        client: Client,
        evict_client: Client,
        reader: PromReader,
        settings: Settings,
        fence: Fence,
        instance: &str,
    ) -> Self {
        let stores = Stores::spawn(&client);
        Self::with_stores(
            stores,
            client,
            evict_client,
            reader,
            settings,
            fence,
            instance,
        )
    }

    /// [`Context::new`] with caches of its own (tests whose caches must outlive a "killed"
    /// client).
    pub fn with_stores(
        stores: Stores,
        client: Client,
        evict_client: Client,
        reader: PromReader,
        settings: Settings,
        fence: Fence,
        instance: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "edgewatt-controller".into(),
                instance: Some(instance.into()),
            },
        );
        Self {
            stores,
            actuator: Actuator::new(client.clone(), evict_client, recorder),
            moves: KubeMoves {
                client: client.clone(),
            },
            ladder: KubeLadder {
                client: client.clone(),
            },
            client,
            reader,
            metrics: Metrics::with_fence(fence.clone()),
            settings,
            fence,
            clock: Clock::Real,
            supply: SupplyCache::default(),
            runtime: Default::default(),
        }
    }

    /// The same context reading time from `clock` (a virtual one in tests and simulations).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The memory of `policy` (created on first use).
    pub async fn policy_runtime(&self, policy: &str) -> Arc<Mutex<PolicyRuntime>> {
        self.runtime
            .lock()
            .await
            .entry(policy.to_string())
            .or_default()
            .clone()
    }

    /// Forgets `policy` (deleted).
    pub async fn forget(&self, policy: &str) {
        self.runtime.lock().await.remove(policy);
        self.metrics.withdraw_policy(policy);
    }
}

/// Reconcile errors (logged; the policy is retried next interval).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}
