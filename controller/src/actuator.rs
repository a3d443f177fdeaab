//! Executing planner actions against the cluster: taints, evictions, EdgeWorkload moves.
//!
//! # How an EdgeWorkload moves
//!
//! Flotta keys a device's `status.workloads[]` by EdgeWorkload name and names are unique per
//! namespace, so "the same workload on two devices at once" needs a second object. edgewatt
//! keeps the user's object (its name, labels, GitOps ownership) and uses a temporary copy:
//!
//! 1. write the intent annotation `edgewatt.io/migration` ([`Intent`]) on the original — before
//!    any other change, so a restarted controller finds every move in flight;
//! 2. **MakeBeforeBreak**: create `<name>-edgewatt-copy` (label [`COPY_OF_LABEL`]) pinned to the
//!    target with `spec.device` (which takes precedence over `deviceSelector`, so selector-placed
//!    workloads move the same way); wait until the target device reports the copy `Running`;
//! 3. re-point the original: `spec.device = <target>` (Flotta removes it from the starved device;
//!    the copy keeps serving on the target meanwhile); wait until the target reports the
//!    original `Running`;
//! 4. delete the copy and the intent annotation: done.
//!
//! **Recreate** skips the copy: the intent and `spec.device` are written in one patch, then step 3.
//! A step that does not reach `Running` within `migrationTimeout` is undone (copy deleted,
//! `spec.device` restored) and recorded as `Failed`. Each step is driven by [`Actuator::advance`]
//! once per cycle from what the cluster shows, so the same code resumes after a restart.

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    keys, EdgeDevice, EdgeWorkload, MigrationRecord, MigrationResult, Strategy, WorkloadKind,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    api::{DeleteParams, EvictParams, Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType, Recorder},
    Api, Client, Resource, ResourceExt,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::snapshot::COPY_OF_LABEL;

/// Phase of an EdgeWorkload move, stored in the intent annotation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Phase {
    /// The copy is being created / waited for on the target.
    Copying,
    /// The original points at the target; waiting for it to run there.
    Repointed,
}

/// The `edgewatt.io/migration` annotation: enough to resume or undo a move after a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    pub policy: String,
    pub from: String,
    pub to: String,
    pub started_at: DateTime<Utc>,
    pub strategy: Strategy,
    pub phase: Phase,
    /// Name of the temporary copy (MakeBeforeBreak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// `spec.device` before the move (None: the workload was placed by selector), for undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repointed_at: Option<DateTime<Utc>>,
}

impl Intent {
    /// The intent on `w`, if any (unparseable annotations are ignored, not acted on).
    pub fn of(w: &EdgeWorkload) -> Option<Intent> {
        serde_json::from_str(w.annotations().get(keys::MIGRATION_INTENT)?).ok()
    }
}

/// Name of the make-before-break copy of `name`.
pub fn copy_name(name: &str) -> String {
    let mut base = name.to_string();
    base.truncate(253 - "-edgewatt-copy".len());
    format!("{base}-edgewatt-copy")
}

/// Result of one eviction attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Eviction {
    Evicted,
    /// HTTP 429: a PodDisruptionBudget refused it. Retried next cycle, never forced.
    Blocked(String),
    Failed(String),
}

/// Talks to the API server on behalf of one controller.
#[derive(Clone)]
pub struct Actuator {
    client: Client,
    /// A client without kube's 429 retries, so a PDB refusal comes back at once.
    evict_client: Client,
    recorder: Recorder,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Actuator {
    pub fn new(client: Client, evict_client: Client, recorder: Recorder) -> Self {
        Self {
            client,
            evict_client,
            recorder,
        }
    }

    /// Publishes an Event; failures are logged, never fatal (Events are best effort).
    pub async fn event(
        &self,
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
        if let Err(e) = self.recorder.publish(&ev, regarding).await {
            tracing::warn!(reason, "publishing event failed: {e}");
        }
    }

    /// Adds (`starved`) or removes edgewatt's NoSchedule taint. Idempotent.
    pub async fn set_taint(&self, node: &str, starved: bool) -> kube::Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let n = api.get(node).await?;
        let mut taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        let has = taints.iter().any(|t| t.key == keys::STARVED_TAINT);
        if has == starved {
            return Ok(());
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
        let rv = n.metadata.resource_version;
        api.patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "spec": {"taints": taints}})),
        )
        .await?;
        Ok(())
    }

    /// Evicts through the Eviction API (policy/v1), so PodDisruptionBudgets are honoured.
    pub async fn evict(&self, namespace: &str, pod: &str) -> Eviction {
        let api: Api<Pod> = Api::namespaced(self.evict_client.clone(), namespace);
        match api.evict(pod, &EvictParams::default()).await {
            Ok(_) => Eviction::Evicted,
            Err(kube::Error::Api(s)) if s.code == 429 => Eviction::Blocked(s.message.clone()),
            Err(kube::Error::Api(s)) if s.code == 404 => Eviction::Evicted,
            Err(e) => Eviction::Failed(e.to_string()),
        }
    }

    /// Starts moving `w` from `from` to `to` (same namespace). Writes the intent first.
    pub async fn start_migration(
        &self,
        policy: &str,
        w: &EdgeWorkload,
        from: &str,
        to: &str,
        strategy: Strategy,
        now: DateTime<Utc>,
    ) -> kube::Result<Intent> {
        let ns = w.namespace().unwrap_or_default();
        let api: Api<EdgeWorkload> = Api::namespaced(self.client.clone(), &ns);
        let name = w.name_any();
        let mut intent = Intent {
            policy: policy.into(),
            from: from.into(),
            to: to.into(),
            started_at: now,
            strategy,
            phase: Phase::Copying,
            copy: Some(copy_name(&name)),
            original_device: w.spec.device.clone(),
            repointed_at: None,
        };
        let mut patch = json!({"metadata": {
            "resourceVersion": w.metadata.resource_version,
        }});
        if strategy == Strategy::Recreate {
            intent.phase = Phase::Repointed;
            intent.copy = None;
            intent.repointed_at = Some(now);
            patch["spec"] = json!({"device": to});
        }
        patch["metadata"]["annotations"] =
            json!({keys::MIGRATION_INTENT: serde_json::to_string(&intent).expect("serialises")});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        if strategy == Strategy::MakeBeforeBreak {
            self.ensure_copy(w, &intent).await?;
        }
        Ok(intent)
    }

    async fn ensure_copy(&self, w: &EdgeWorkload, intent: &Intent) -> kube::Result<()> {
        let Some(copy) = &intent.copy else {
            return Ok(());
        };
        let ns = w.namespace().unwrap_or_default();
        let api: Api<EdgeWorkload> = Api::namespaced(self.client.clone(), &ns);
        if api.get_opt(copy).await?.is_some() {
            return Ok(());
        }
        // The full object (the controller's cache keeps no pod template).
        let w = api.get(&w.name_any()).await?;
        let mut labels = w.labels().clone();
        labels.insert(COPY_OF_LABEL.into(), w.name_any());
        let mut spec = w.spec.clone();
        spec.device = Some(intent.to.clone());
        let mut obj = EdgeWorkload::new(copy, spec);
        obj.metadata.namespace = Some(ns);
        obj.metadata.labels = Some(labels);
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_copy(&self, ns: &str, intent: &Intent) -> kube::Result<()> {
        if let Some(copy) = &intent.copy {
            let api: Api<EdgeWorkload> = Api::namespaced(self.client.clone(), ns);
            match api.delete(copy, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drives a move in flight one step, from what the cluster shows now. Returns the final
    /// record when the move ended (succeeded, or failed and undone); `None` while it goes on.
    pub async fn advance(
        &self,
        w: &EdgeWorkload,
        intent: &Intent,
        target: Option<&EdgeDevice>,
        timeout: std::time::Duration,
        now: DateTime<Utc>,
    ) -> kube::Result<Option<MigrationRecord>> {
        let ns = w.namespace().unwrap_or_default();
        let name = w.name_any();
        let api: Api<EdgeWorkload> = Api::namespaced(self.client.clone(), &ns);
        let running = |n: &str| {
            target
                .and_then(|d| d.workload(n))
                .is_some_and(|dw| dw.is_running())
        };
        let timeout_c = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let record = |result, message: String| MigrationRecord {
            kind: WorkloadKind::EdgeWorkload,
            namespace: ns.clone(),
            name: name.clone(),
            from: intent.from.clone(),
            to: Some(intent.to.clone()),
            started_at: rfc3339(intent.started_at),
            finished_at: Some(rfc3339(now)),
            result,
            message,
        };
        if target.is_none() {
            // The target device was deleted: waiting cannot succeed, undo now.
            self.undo(&api, &ns, &name, intent).await?;
            return Ok(Some(record(
                MigrationResult::Failed,
                format!(
                    "target device {} disappeared mid-migration; undone, {name} stays on {}",
                    intent.to, intent.from
                ),
            )));
        }
        match intent.phase {
            Phase::Copying => {
                let copy = intent.copy.clone().unwrap_or_default();
                if running(&copy) {
                    let mut next = intent.clone();
                    next.phase = Phase::Repointed;
                    next.repointed_at = Some(now);
                    let patch = json!({
                        "metadata": {"annotations": {keys::MIGRATION_INTENT: serde_json::to_string(&next).expect("serialises")}},
                        "spec": {"device": intent.to},
                    });
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                    return Ok(None);
                }
                if now - intent.started_at > timeout_c {
                    self.undo(&api, &ns, &name, intent).await?;
                    return Ok(Some(record(
                        MigrationResult::Failed,
                        format!(
                            "copy {copy} did not reach Running on {} within {}; undone",
                            intent.to,
                            edgewatt_crds::duration::format(timeout)
                        ),
                    )));
                }
                self.ensure_copy(w, intent).await?;
                Ok(None)
            }
            Phase::Repointed => {
                if running(&name) {
                    self.delete_copy(&ns, intent).await?;
                    self.clear_intent(&api, &name).await?;
                    return Ok(Some(record(
                        MigrationResult::Succeeded,
                        format!("running on {}", intent.to),
                    )));
                }
                let since = intent.repointed_at.unwrap_or(intent.started_at);
                if now - since > timeout_c {
                    self.undo(&api, &ns, &name, intent).await?;
                    return Ok(Some(record(
                        MigrationResult::Failed,
                        format!(
                            "{name} did not reach Running on {} within {}; re-pointed back to {}",
                            intent.to,
                            edgewatt_crds::duration::format(timeout),
                            intent.from
                        ),
                    )));
                }
                Ok(None)
            }
        }
    }

    /// Undoes a move. Every step is idempotent and the intent goes last, so a controller killed
    /// half-way repeats the undo after its restart instead of leaving a copy behind:
    /// `spec.device` is restored first (when already re-pointed), then the copy deleted, then the
    /// intent removed.
    async fn undo(
        &self,
        api: &Api<EdgeWorkload>,
        ns: &str,
        name: &str,
        intent: &Intent,
    ) -> kube::Result<()> {
        if intent.phase == Phase::Repointed {
            let patch = json!({"spec": {"device": intent.original_device}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        self.delete_copy(ns, intent).await?;
        self.clear_intent(api, name).await
    }

    /// Removes the intent annotation.
    async fn clear_intent(&self, api: &Api<EdgeWorkload>, name: &str) -> kube::Result<()> {
        let patch = json!({"metadata": {"annotations": {keys::MIGRATION_INTENT: null}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
}

/// An ObjectReference for any resource (Events' `regarding`).
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_round_trips_and_copy_names_fit() {
        let i = Intent {
            policy: "p".into(),
            from: "a".into(),
            to: "b".into(),
            started_at: Utc::now(),
            strategy: Strategy::MakeBeforeBreak,
            phase: Phase::Copying,
            copy: Some(copy_name("w")),
            original_device: Some("a".into()),
            repointed_at: None,
        };
        let s = serde_json::to_string(&i).unwrap();
        assert!(s.contains("\"from\":\"a\"") && s.contains("\"startedAt\""));
        let back: Intent = serde_json::from_str(&s).unwrap();
        assert_eq!(back.started_at.timestamp(), i.started_at.timestamp());
        assert_eq!(copy_name("w"), "w-edgewatt-copy");
        assert_eq!(copy_name(&"x".repeat(300)).len(), 253);
    }
}
