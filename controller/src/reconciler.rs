//! The runtime loop: a `kube_runtime::Controller` on EnergyPolicy that runs each policy's cycle
//! ([`crate::cycle`]) every `interval` — and at once when its spec changes or it is being
//! deleted, but not when only its status changes (the controller's own status writes would
//! otherwise re-trigger it in a loop).
//!
//! Only the Lease holder runs cycles; every reconcile of a standby returns at once. Each policy
//! has its own runtime memory behind its own lock, so a slow policy (API calls) never holds up
//! another.

use std::collections::HashMap;
use std::sync::{atomic::Ordering, Arc};
use std::time::Duration;

use edgewatt_crds::{metrics::MetricNames, prom::PromReader, EnergyPolicy};
use futures::StreamExt;
use kube::{
    runtime::{
        controller::{Action as Requeue, Controller},
        events::{Recorder, Reporter},
        watcher,
    },
    Api, Client, ResourceExt,
};
use tokio::sync::Mutex;

use crate::{
    actuator::Actuator, cycle::PolicyRuntime, leader::Fence, metrics::Metrics, stores::Stores,
};

/// Runtime settings (from the command line in `main`, set directly in tests).
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
    pub reader: PromReader,
    pub stores: Stores,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Leadership: every write checks it.
    pub fence: Fence,
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
            client,
            reader,
            metrics: Metrics::with_fence(fence.clone()),
            settings,
            fence,
            runtime: Default::default(),
        }
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

/// Runs the controller until the stream ends (forever in production). Ready (`/readyz`) once
/// every store has listed or failed in a way waiting will not fix (a CRD not installed, a
/// permission missing): those are reported per policy instead of holding everything back.
pub async fn run(ctx: Arc<Context>) {
    ctx.stores.ready().await;
    ctx.metrics.ready.store(true, Ordering::Relaxed);
    // Leadership changes: on a gain every policy is reconciled at once (and reloads its history);
    // on a loss the decision gauges go.
    let metrics = ctx.metrics.clone();
    let gains = futures::stream::unfold(ctx.fence.subscribe(), move |mut rx| {
        let metrics = metrics.clone();
        async move {
            loop {
                rx.changed().await.ok()?;
                let l = *rx.borrow_and_update();
                if l.leading {
                    return Some(((), rx));
                }
                metrics.withdraw_all();
            }
        }
    });
    let interval = ctx.settings.interval;
    Controller::new(
        Api::<EnergyPolicy>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(gains)
    .run(
        reconcile,
        move |_, err, _| {
            tracing::warn!("reconcile failed: {err}");
            Requeue::requeue(interval)
        },
        ctx,
    )
    .for_each(|_| async {})
    .await;
}

/// Runs the policy's cycle when it is due: never as leader-less standby, and for a status-only
/// change (which is what most watch events of a policy are) only once its interval has passed.
async fn reconcile(policy: Arc<EnergyPolicy>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let interval = ctx.settings.interval;
    if !ctx.fence.is_leader() {
        return Ok(Requeue::requeue(interval));
    }
    let name = policy.name_any();
    let rt = ctx.policy_runtime(&name).await;
    let wait = rt.lock().await.due_in(&policy, interval, ctx.fence.term());
    if let Some(wait) = wait {
        return Ok(Requeue::requeue(wait));
    }
    let started = std::time::Instant::now();
    let result = crate::cycle::cycle(&policy, &ctx, chrono::Utc::now()).await;
    let took = started.elapsed();
    if took > interval {
        tracing::info!(policy = %name, took_ms = took.as_millis() as u64, "policy cycle took longer than the interval");
    } else {
        tracing::debug!(policy = %name, took_ms = took.as_millis() as u64, ok = result.is_ok(), "policy cycle");
    }
    result?;
    Ok(Requeue::requeue(interval))
}
