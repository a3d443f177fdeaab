//! Thin I/O for node taints, device labels, evictions and Events. EdgeWorkload moves are in
//! [`crate::mover`].
//!
//! Every write goes through the [`Fence`] and is conditioned on a fresh read (taints, labels) so
//! a concurrent change is never overwritten. Events are published on the real objects, read
//! fresh with their uid, so `kubectl describe` shows them.

use edgewatt_crds::{keys, EdgeDevice};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    api::{EvictParams, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder},
    Api, Client, Resource, ResourceExt,
};
use serde_json::json;

use crate::leader::{Fence, NotLeader};

pub use crate::migration::{copy_name, Intent};

/// Result of one eviction attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Eviction {
    Evicted,
    /// 429 with a `DisruptionBudget` cause: a PodDisruptionBudget refused it. Retried next
    /// cycle, never forced.
    Blocked(String),
    /// 429 from API priority and fairness (no `Status` cause; a `Retry-After`): the API server
    /// is busy, which says nothing about the pod. Retried next cycle, not recorded.
    Throttled(String),
    /// The pod is already gone.
    Gone,
    Failed(String),
}

/// How a 429 from the Eviction API reads: a PDB refusal carries `details.causes[].reason ==
/// "DisruptionBudget"` (kube-apiserver `pkg/registry/core/pod/storage/eviction.go`); API
/// priority and fairness answers a plain-text body with no Status
/// (`staging/src/k8s.io/apiserver/pkg/server/filters/priority-and-fairness.go`).
pub fn classify_eviction(err: &kube::Error) -> Eviction {
    match err {
        kube::Error::Api(s) if s.code == 429 => {
            let pdb = s
                .details
                .as_ref()
                .is_some_and(|d| d.causes.iter().any(|c| c.reason == "DisruptionBudget"));
            if pdb {
                Eviction::Blocked(s.message.clone())
            } else {
                Eviction::Throttled(format!("API server busy (429): {}", s.message))
            }
        }
        kube::Error::Api(s) if s.code == 404 => Eviction::Gone,
        e => Eviction::Failed(e.to_string()),
    }
}

/// Why a taint or label write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// Talks to the API server on behalf of one controller.
#[derive(Clone)]
pub struct Actuator {
    client: Client,
    /// A client without kube's 429 retries, so a PDB refusal comes back at once.
    evict_client: Client,
    recorder: Recorder,
}

impl Actuator {
    pub fn new(client: Client, evict_client: Client, recorder: Recorder) -> Self {
        Self {
            client,
            evict_client,
            recorder,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes an Event; failures are logged, never fatal (Events are best effort). Only the
    /// leader publishes.
    pub async fn event(
        &self,
        fence: &Fence,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        match fence.guard(self.recorder.publish(&ev, regarding)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(reason, "publishing event failed: {e}"),
            Err(NotLeader) => tracing::debug!(reason, "event not published: not the leader"),
        }
    }

    /// Adds or removes edgewatt's NoSchedule taint on `node`, with the annotation naming
    /// `policy`. Removes only a taint this policy put (or one nobody claimed). Conditioned on a
    /// fresh read; returns the node (for Events) and whether it wrote.
    pub async fn set_taint(
        &self,
        fence: &Fence,
        node: &str,
        policy: &str,
        starved: bool,
    ) -> Result<(ObjectReference, bool), WriteError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let n = api.get(node).await?;
        let reference = n.object_ref(&());
        let mut taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let has = taints.iter().any(|t| t.key == keys::STARVED_TAINT);
        let by = n.annotations().get(keys::STARVED_BY).cloned();
        let ours = by.as_deref().is_none_or(|b| b.is_empty() || b == policy);
        if has == starved || (!starved && !ours) {
            return Ok((reference, false));
        }
        if starved {
            taints.push(k8s_openapi::api::core::v1::Taint {
                key: keys::STARVED_TAINT.into(),
                effect: "NoSchedule".into(),
                value: Some("true".into()),
                ..Default::default()
            });
        } else {
            taints.retain(|t| t.key != keys::STARVED_TAINT);
        }
        let annotation = if starved { json!(policy) } else { json!(null) };
        let patch = json!({
            "metadata": {"resourceVersion": n.metadata.resource_version,
                "annotations": {keys::STARVED_BY: annotation}},
            "spec": {"taints": taints},
        });
        fence
            .guard(api.patch(node, &PatchParams::default(), &Patch::Merge(patch)))
            .await??;
        Ok((reference, true))
    }

    /// The device counterpart of [`Actuator::set_taint`]: the `edgewatt.io/energy-starved=true`
    /// label that opted-in selector-placed EdgeWorkloads' deviceSelectors exclude.
    pub async fn set_device_label(
        &self,
        fence: &Fence,
        namespace: &str,
        device: &str,
        policy: &str,
        starved: bool,
    ) -> Result<(ObjectReference, bool), WriteError> {
        let api: Api<EdgeDevice> = Api::namespaced(self.client.clone(), namespace);
        let d = api.get(device).await?;
        let reference = d.object_ref(&());
        let has = d.labels().contains_key(keys::STARVED_LABEL);
        let by = d.annotations().get(keys::STARVED_BY).cloned();
        let ours = by.as_deref().is_none_or(|b| b.is_empty() || b == policy);
        if has == starved || (!starved && !ours) {
            return Ok((reference, false));
        }
        let (label, annotation) = if starved {
            (json!("true"), json!(policy))
        } else {
            (json!(null), json!(null))
        };
        let patch = json!({"metadata": {"resourceVersion": d.metadata.resource_version,
            "labels": {keys::STARVED_LABEL: label},
            "annotations": {keys::STARVED_BY: annotation}}});
        fence
            .guard(api.patch(device, &PatchParams::default(), &Patch::Merge(patch)))
            .await??;
        Ok((reference, true))
    }

    /// Evicts through the Eviction API (policy/v1), so PodDisruptionBudgets are honoured.
    /// `uid`: the pod the plan saw (a replacement with the same name is not evicted).
    pub async fn evict(
        &self,
        fence: &Fence,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
    ) -> Result<Eviction, NotLeader> {
        let api: Api<Pod> = Api::namespaced(self.evict_client.clone(), namespace);
        let mut params = EvictParams::default();
        if let Some(uid) = uid {
            params.delete_options = Some(kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid.into()),
                    resource_version: None,
                }),
                ..Default::default()
            });
        }
        Ok(match fence.guard(api.evict(pod, &params)).await? {
            Ok(_) => Eviction::Evicted,
            Err(e) => classify_eviction(&e),
        })
    }
}

/// An ObjectReference for any resource (Events' `regarding`). Built from an object read from the
/// API server it carries the uid, which `kubectl describe` matches Events on.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// The name of a reference, for messages.
pub fn name_of(r: &ObjectReference) -> String {
    match &r.namespace {
        Some(ns) => format!("{ns}/{}", r.name.clone().unwrap_or_default()),
        None => r.name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdb_and_priority_and_fairness_429s_are_told_apart() {
        let pdb = kube::core::Status::failure(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            "TooManyRequests",
        )
        .with_code(429)
        .with_details(
            serde_json::from_value(serde_json::json!({"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web needs 1 healthy pods and has 1 currently"}]}))
            .unwrap(),
        );
        assert!(matches!(
            classify_eviction(&kube::Error::Api(pdb.boxed())),
            Eviction::Blocked(_)
        ));
        // What kube's client makes of APF's plain-text body.
        let apf = kube::core::Status::failure(
            "Too many requests, please try again later.",
            "Failed to parse error data",
        )
        .with_code(429);
        assert!(matches!(
            classify_eviction(&kube::Error::Api(apf.boxed())),
            Eviction::Throttled(_)
        ));
        let gone = kube::core::Status::failure("not found", "NotFound").with_code(404);
        assert_eq!(
            classify_eviction(&kube::Error::Api(gone.boxed())),
            Eviction::Gone
        );
    }
}
