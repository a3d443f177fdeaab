//! The runtime loop: a `kube_runtime::Controller` on EnergyPolicy that runs each policy's cycle
//! ([`crate::cycle`]) every `interval` — and at once when its spec changes or it is being
//! deleted, but not when only its status changes (the controller's own status writes would
//! otherwise re-trigger it in a loop).
//!
//! Only the Lease holder runs cycles; every reconcile of a standby returns at once. Each policy
//! has its own runtime memory behind its own lock, so a slow policy (API calls) never holds up
//! another.

use std::sync::{atomic::Ordering, Arc};

use edgewatt_crds::EnergyPolicy;
use futures::StreamExt;
use kube::{
    runtime::{
        controller::{Action as Requeue, Controller},
        watcher,
    },
    Api, ResourceExt,
};

use crate::context::{Context, Error};

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
    let now = ctx.clock.now();
    let wait = rt
        .lock()
        .await
        .due_in(&policy, interval, ctx.fence.term(), now);
    if let Some(wait) = wait {
        return Ok(Requeue::requeue(wait));
    }
    // How long the cycle took, for the log: real time whatever the decisions' clock says.
    let started = std::time::Instant::now();
    let result = crate::cycle::cycle(&policy, &ctx, now).await;
    let took = started.elapsed();
    if took > interval {
        tracing::info!(policy = %name, took_ms = took.as_millis() as u64, "policy cycle took longer than the interval");
    } else {
        tracing::debug!(policy = %name, took_ms = took.as_millis() as u64, ok = result.is_ok(), "policy cycle");
    }
    result?;
    Ok(Requeue::requeue(interval))
}
