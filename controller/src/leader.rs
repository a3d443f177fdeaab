//! Leader election on a `coordination.k8s.io/v1` Lease, so only one replica acts.
//!
//! Deliberately small: try to take or renew the Lease every `renew` period; a Lease whose holder
//! has not renewed within `leaseDurationSeconds` is taken over. Writes carry the resourceVersion
//! read, so two candidates racing for an expired Lease cannot both win (one gets a 409).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::json;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
}

fn micro(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One attempt to acquire or renew. Returns whether we hold the Lease afterwards.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> kube::Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = chrono::Utc::now();
    let spec = json!({
        "holderIdentity": cfg.identity,
        "leaseDurationSeconds": cfg.duration.as_secs(),
        "renewTime": micro(now),
    });
    let Some(lease) = api.get_opt(&cfg.name).await? else {
        let mut spec = spec;
        spec["acquireTime"] = json!(micro(now));
        let obj: Lease = serde_json::from_value(json!({
            "metadata": {"name": cfg.name, "namespace": cfg.namespace},
            "spec": spec,
        }))
        .map_err(kube::Error::SerdeError)?;
        return match api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let ls = lease.spec.clone().unwrap_or_default();
    let holder = ls.holder_identity.clone().unwrap_or_default();
    let ours = holder == cfg.identity;
    let expired = match (&ls.renew_time, ls.lease_duration_seconds) {
        (Some(t), Some(d)) => {
            let renewed = t.0.as_second();
            now.timestamp() > renewed + i64::from(d)
        }
        _ => true,
    };
    if !ours && !expired && !holder.is_empty() {
        return Ok(false);
    }
    let mut spec = spec;
    if !ours {
        spec["acquireTime"] = json!(micro(now));
        spec["leaseTransitions"] = json!(ls.lease_transitions.unwrap_or(0) + 1);
    }
    let patch = json!({
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": spec,
    });
    match api
        .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs forever, keeping `leader` up to date. Errors drop leadership (fail safe).
pub async fn run(client: Client, cfg: LeaseConfig, leader: Arc<AtomicBool>) {
    loop {
        let held = match try_acquire(&client, &cfg).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("lease {}/{}: {e}", cfg.namespace, cfg.name);
                false
            }
        };
        if held != leader.swap(held, Ordering::SeqCst) {
            tracing::info!(leader = held, "leadership changed");
        }
        tokio::time::sleep(cfg.renew).await;
    }
}
