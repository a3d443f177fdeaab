//! Graceful deletion of pods: a deleted or evicted pod stays, `Terminating`, with
//! `metadata.deletionTimestamp` (now + grace) and its node, until its grace period is over; then
//! it goes (the kubelet's final delete — the double plays the kubelet, whose containers use the
//! whole period).
//!
//! Sources (kubernetes/kubernetes): `pkg/registry/core/pod/strategy.go` `CheckGracefulDelete`
//! (grace = `DeleteOptions.gracePeriodSeconds`, else `spec.terminationGracePeriodSeconds`; 0 for a
//! pod that is not scheduled or already terminated; negative → 1) and
//! `staging/src/k8s.io/apiserver/pkg/registry/rest/delete.go` `BeforeDelete` (a pending graceful
//! deletion may only be shortened; the generation is bumped when it starts).

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

use super::resources::ResourceDef;
use super::store::Inner;
use super::App;

/// A pod whose grace period ends after `after`.
#[derive(Debug)]
pub(crate) struct Expiry {
    key: String,
    ns: String,
    name: String,
    uid: String,
    after: Duration,
}

/// What a DELETE of a pod does.
pub(crate) enum Graceful {
    /// The pod stays Terminating (returned as it now is).
    Pending(Arc<Value>),
    /// Delete now (grace 0, or a forced delete of a pod already terminating).
    Now,
}

/// `CheckGracefulDelete` of the pod strategy.
fn pod_grace(pod: &Value, opts: &Value) -> i64 {
    let mut period = opts["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(0);
    if pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        period = 0;
    }
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Failed" | "Succeeded")
    ) {
        period = 0;
    }
    if period < 0 {
        1
    } else {
        period
    }
}

fn timestamp(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl App {
    /// `BeforeDelete` for a pod: start, shorten or keep its graceful deletion.
    pub(crate) fn delete_pod(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        old: &Arc<Value>,
        opts: &Value,
    ) -> Graceful {
        let period = pod_grace(old, opts);
        let meta = &old["metadata"];
        let mut new = (**old).clone();
        match (
            timestamp(&meta["deletionTimestamp"]),
            meta["deletionGracePeriodSeconds"].as_i64(),
        ) {
            (Some(_), None | Some(0)) => return Graceful::Now,
            (Some(_), Some(current)) if period >= current => return Graceful::Pending(old.clone()),
            (Some(ts), Some(current)) => {
                let shortened = ts - chrono::Duration::seconds(current - period);
                new["metadata"]["deletionTimestamp"] = rfc3339(shortened).into();
            }
            (None, _) if period == 0 => return Graceful::Now,
            (None, _) => {
                let deadline = chrono::Utc::now() + chrono::Duration::seconds(period);
                new["metadata"]["deletionTimestamp"] = rfc3339(deadline).into();
                let g = meta["generation"].as_i64().unwrap_or(0);
                if g > 0 {
                    new["metadata"]["generation"] = (g + 1).into();
                }
            }
        }
        if period == 0 {
            return Graceful::Now;
        }
        new["metadata"]["deletionGracePeriodSeconds"] = period.into();
        let stored = inner.put(&res.key(), new);
        let _ = self.kubelet.send(Expiry {
            key: res.key(),
            ns: meta["namespace"].as_str().unwrap_or_default().into(),
            name: meta["name"].as_str().unwrap_or_default().into(),
            uid: meta["uid"].as_str().unwrap_or_default().into(),
            after: Duration::from_secs(period as u64),
        });
        Graceful::Pending(stored)
    }

    /// The end of a grace period: the kubelet's delete with grace 0 (finalizers still hold it).
    fn expire(&self, e: &Expiry) {
        let mut inner = self.store.lock().expect("store lock");
        let Some(pod) = inner.get(&e.key, &e.ns, &e.name) else {
            return;
        };
        let meta = &pod["metadata"];
        let due = timestamp(&meta["deletionTimestamp"]).is_some_and(|t| t <= chrono::Utc::now());
        if meta["uid"] != e.uid.as_str() || !due {
            return;
        }
        let finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if finalizers {
            let mut held = (*pod).clone();
            held["metadata"]["deletionGracePeriodSeconds"] = 0.into();
            inner.put(&e.key, held);
        } else {
            inner.remove(&e.key, &e.ns, &e.name);
        }
    }
}

/// The kubelet stand-in: ends each grace period on time while the server lives.
pub(crate) fn spawn_kubelet(
    app: Weak<App>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Expiry>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let app = app.clone();
            tokio::spawn(async move {
                // deletionTimestamp has whole seconds: wait until it has surely passed.
                tokio::time::sleep(e.after + Duration::from_millis(50)).await;
                if let Some(app) = app.upgrade() {
                    app.expire(&e);
                }
            });
        }
    })
}

/// Pod fields the real server defaults on create (`SetDefaults_PodSpec`) that deletion and
/// scheduling read.
pub(crate) fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    for (k, v) in [
        ("terminationGracePeriodSeconds", Value::from(30)),
        ("restartPolicy", "Always".into()),
        ("dnsPolicy", "ClusterFirst".into()),
        ("schedulerName", "default-scheduler".into()),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
}
