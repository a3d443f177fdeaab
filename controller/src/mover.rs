//! The executor of EdgeWorkload moves: reads fresh state, asks [`migration::next_step`], performs
//! that one write, and repeats until the move waits or ends.
//!
//! Acting only on what it has seen: every read here is a fresh GET (never the controller's
//! cache, whose watch may lag seconds behind), and every write of the original is conditioned on
//! the resourceVersion of that read, so a concurrent change makes the write fail (409) instead of
//! being overwritten, and the step is re-decided next cycle. Every write goes through the
//! [`Fence`]: none once leadership is not confirmed.
//!
//! The cluster is reached through [`MoveApi`], so the model test drives this same code against a
//! simulated Flotta.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    keys, EdgeDevice, EdgeWorkload, MigrationRecord, MigrationResult, WorkloadKind,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api, Client, Resource, ResourceExt,
};
use serde_json::{json, Value};

use crate::leader::{Fence, NotLeader};
use crate::migration::{self, copy_label_value, CopyState, Intent, Observed, Step};
use crate::status::rfc3339;

/// Label on a make-before-break copy; its value is the original's name (or a prefix and hash,
/// see [`copy_label_value`]). Copies are never moved themselves.
pub use crate::snapshot::COPY_OF_LABEL;
/// The copy's annotations: the original's full name, and the policy that made it.
pub const COPY_OF_ANNOTATION: &str = "edgewatt.io/migration-copy-of";
pub const COPY_POLICY_ANNOTATION: &str = "edgewatt.io/migration-policy";

/// The few calls a move makes. `kube::Error::Api` carries the HTTP status (404, 409…).
pub trait MoveApi {
    fn get_workload(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = kube::Result<Option<EdgeWorkload>>> + Send;
    fn get_device(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = kube::Result<Option<EdgeDevice>>> + Send;
    /// Creates; `AlreadyExists` is an error (the caller read that it was absent).
    fn create_workload(&self, w: &EdgeWorkload) -> impl Future<Output = kube::Result<()>> + Send;
    /// JSON merge patch; a `metadata.resourceVersion` in it makes it conditional.
    fn patch_workload(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = kube::Result<EdgeWorkload>> + Send;
    /// Deletes; already gone is success.
    fn delete_workload(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = kube::Result<()>> + Send;
}

/// [`MoveApi`] against the API server.
#[derive(Clone)]
pub struct KubeMoves {
    pub client: Client,
}

impl MoveApi for KubeMoves {
    async fn get_workload(&self, ns: &str, name: &str) -> kube::Result<Option<EdgeWorkload>> {
        Api::<EdgeWorkload>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
    }
    async fn get_device(&self, ns: &str, name: &str) -> kube::Result<Option<EdgeDevice>> {
        Api::<EdgeDevice>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
    }
    async fn create_workload(&self, w: &EdgeWorkload) -> kube::Result<()> {
        let ns = w.namespace().unwrap_or_default();
        Api::<EdgeWorkload>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), w)
            .await
            .map(|_| ())
    }
    async fn patch_workload(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> kube::Result<EdgeWorkload> {
        Api::<EdgeWorkload>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
    }
    async fn delete_workload(&self, ns: &str, name: &str) -> kube::Result<()> {
        match Api::<EdgeWorkload>::namespaced(self.client.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Why a move could not be driven this time.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

/// A move, named by its workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoveKey {
    pub namespace: String,
    pub name: String,
}

/// Where a move stands after [`drive`].
#[derive(Debug, Clone, PartialEq)]
pub enum Drive {
    /// Still going; why it waits. `stuck`: an undo waits on the copy, which is the only running
    /// instance (reported until it resolves or an operator steps in).
    InFlight { why: String, stuck: bool },
    /// It ended now, by this call: the final record, and the workload for Events.
    Ended {
        record: Box<MigrationRecord>,
        regarding: Option<Box<ObjectReference>>,
    },
    /// The workload carries no intent of this policy (ended earlier, elsewhere or by someone).
    NoIntent,
}

/// How many steps one call takes at most (a move needs five writes in all).
const MAX_STEPS: usize = 8;

async fn observe<A: MoveApi>(
    api: &A,
    ns: &str,
    w: Option<&EdgeWorkload>,
    i: &Intent,
) -> kube::Result<Observed> {
    let original_device = w.map(|w| w.spec.device.clone());
    let copy = match &i.copy {
        Some(c) => match api.get_workload(ns, c).await? {
            None => CopyState::Absent,
            Some(c) if c.metadata.deletion_timestamp.is_some() => CopyState::Terminating,
            Some(_) => CopyState::Present,
        },
        None => CopyState::Absent,
    };
    let target = api.get_device(ns, &i.to).await?;
    let name = w.map(|w| w.name_any()).unwrap_or_default();
    let runs = |d: Option<&EdgeDevice>, n: &str| {
        d.and_then(|d| d.workload(n))
            .is_some_and(|dw| dw.is_running())
    };
    let original_running = match original_device.as_ref().and_then(|d| d.as_deref()) {
        Some(d) if d == i.to => runs(target.as_ref(), &name),
        Some(d) => runs(api.get_device(ns, d).await?.as_ref(), &name),
        None => false,
    };
    Ok(Observed {
        original: original_device,
        copy,
        target_exists: target.is_some(),
        copy_running: i.copy.as_deref().is_some_and(|c| runs(target.as_ref(), c)),
        original_running,
        abort: w.is_some_and(|w| w.annotations().contains_key(keys::ABORT_MIGRATION)),
    })
}

/// The record of a move of `key` as `intent` describes it.
pub fn record(
    key: &MoveKey,
    i: &Intent,
    result: MigrationResult,
    message: String,
    finished: Option<DateTime<Utc>>,
) -> MigrationRecord {
    MigrationRecord {
        kind: WorkloadKind::EdgeWorkload,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        from: i.from.clone(),
        to: Some(i.to.clone()),
        owner: None,
        started_at: rfc3339(i.started_at),
        finished_at: finished.map(rfc3339),
        result,
        message,
    }
}

/// The copy of `w` on `to`: same spec pinned to the target, owned by the original (so deleting
/// the original deletes it wherever a garbage collector runs), labelled as a copy.
fn copy_of(w: &EdgeWorkload, i: &Intent, copy: &str) -> EdgeWorkload {
    let name = w.name_any();
    let mut labels = w.labels().clone();
    labels.insert(COPY_OF_LABEL.into(), copy_label_value(&name));
    let mut spec = w.spec.clone();
    spec.device = Some(i.to.clone());
    spec.device_selector = None;
    let mut obj = EdgeWorkload::new(copy, spec);
    obj.metadata.namespace = w.namespace();
    obj.metadata.labels = Some(labels);
    obj.metadata.annotations = Some(
        [
            (COPY_OF_ANNOTATION.to_string(), name.clone()),
            (COPY_POLICY_ANNOTATION.to_string(), i.policy.clone()),
        ]
        .into(),
    );
    if let Some(uid) = w.uid() {
        obj.metadata.owner_references = Some(vec![OwnerReference {
            api_version: EdgeWorkload::api_version(&()).into(),
            kind: EdgeWorkload::kind(&()).into(),
            name,
            uid,
            controller: Some(false),
            block_owner_deletion: Some(false),
        }]);
    }
    obj
}

/// A conditional merge patch of the original.
fn conditional(w: &EdgeWorkload, mut patch: Value) -> Value {
    patch["metadata"]["resourceVersion"] = json!(w.metadata.resource_version);
    patch
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

/// Drives the move of `key` (an intent of `policy`) as far as it can go now.
pub async fn drive<A: MoveApi>(
    api: &A,
    fence: &Fence,
    policy: &str,
    key: &MoveKey,
    now: DateTime<Utc>,
    timeout: Duration,
) -> Result<Drive, MoveError> {
    let ns = key.namespace.as_str();
    for _ in 0..MAX_STEPS {
        let w = api
            .get_workload(ns, &key.name)
            .await?
            .filter(|w| w.metadata.deletion_timestamp.is_none());
        // A deleted original has no annotation to read: the copy (named after it) tells.
        let intent = match &w {
            Some(w) => match Intent::of(w) {
                Some(i) if i.policy == policy => i,
                _ => return Ok(Drive::NoIntent),
            },
            None => return orphaned_original(api, fence, policy, key).await,
        };
        let o = observe(api, ns, w.as_ref(), &intent).await?;
        let step = migration::next_step(&intent, &o, now, timeout);
        tracing::debug!(workload = %key.name, phase = ?intent.phase, ?step, "move step");
        let w = w.expect("checked above");
        match step {
            Step::Wait { why, stuck } => return Ok(Drive::InFlight { why, stuck }),
            Step::CreateCopy => {
                let copy = intent.copy.clone().unwrap_or_default();
                match fence
                    .guard(api.create_workload(&copy_of(&w, &intent, &copy)))
                    .await?
                {
                    Ok(()) => {}
                    // Created meanwhile (read again next step).
                    Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Step::Repoint {
                device,
                intent: next,
            } => {
                let patch = conditional(
                    &w,
                    json!({"metadata": {"annotations": {keys::MIGRATION_INTENT: next.to_annotation()}},
                        "spec": {"device": device}}),
                );
                match fence
                    .guard(api.patch_workload(ns, &key.name, &patch))
                    .await?
                {
                    Ok(_) => {}
                    Err(e) if conflict(&e) => {
                        return Ok(Drive::InFlight {
                            why: "changed meanwhile; re-read next cycle".into(),
                            stuck: false,
                        })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Step::DeleteCopy => {
                let copy = intent.copy.clone().unwrap_or_default();
                fence.guard(api.delete_workload(ns, &copy)).await??;
            }
            Step::Finish { result, message } => {
                let patch = conditional(
                    &w,
                    json!({"metadata": {"annotations": {keys::MIGRATION_INTENT: null, keys::ABORT_MIGRATION: null}}}),
                );
                let done = match fence
                    .guard(api.patch_workload(ns, &key.name, &patch))
                    .await?
                {
                    Ok(w) => w,
                    Err(e) if conflict(&e) => {
                        return Ok(Drive::InFlight {
                            why: "changed meanwhile; re-read next cycle".into(),
                            stuck: false,
                        })
                    }
                    Err(e) => return Err(e.into()),
                };
                return Ok(Drive::Ended {
                    record: Box::new(record(key, &intent, result, message, Some(now))),
                    regarding: Some(Box::new(done.object_ref(&()))),
                });
            }
        }
    }
    Ok(Drive::InFlight {
        why: "more steps next cycle".into(),
        stuck: false,
    })
}

/// The original is gone mid-move: remove its copy (if this policy made it) and end the move.
async fn orphaned_original<A: MoveApi>(
    api: &A,
    fence: &Fence,
    policy: &str,
    key: &MoveKey,
) -> Result<Drive, MoveError> {
    let copy = migration::copy_name(&key.name);
    let ours = api.get_workload(&key.namespace, &copy).await?.filter(|c| {
        c.annotations()
            .get(COPY_POLICY_ANNOTATION)
            .map(String::as_str)
            == Some(policy)
    });
    if let Some(c) = ours {
        if c.metadata.deletion_timestamp.is_none() {
            fence
                .guard(api.delete_workload(&key.namespace, &copy))
                .await??;
        }
    }
    Ok(Drive::NoIntent)
}

/// Why a planned move was not started.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Started: the intent is written; the caller drives it on.
    Started {
        intent: Box<Intent>,
        regarding: Box<ObjectReference>,
    },
    /// The fresh read disagrees with the plan (the cache lagged): nothing written.
    Stale(String),
}

/// Starts moving `key` from `from` to `to`: reads the workload fresh, checks it still is where
/// the plan saw it and not moving, and writes the intent (Recreate: with `spec.device`) in one
/// patch conditioned on that read.
pub async fn start<A: MoveApi>(
    api: &A,
    fence: &Fence,
    key: &MoveKey,
    intent: Intent,
) -> Result<Start, MoveError> {
    let Some(w) = api
        .get_workload(&key.namespace, &key.name)
        .await?
        .filter(|w| w.metadata.deletion_timestamp.is_none())
    else {
        return Ok(Start::Stale("gone".into()));
    };
    if let Some(i) = Intent::of(&w) {
        return Ok(Start::Stale(format!(
            "already moving ({} policy)",
            i.policy
        )));
    }
    if w.spec.device.as_deref() != Some(intent.from.as_str()) {
        return Ok(Start::Stale(format!(
            "no longer on {} (spec.device {:?})",
            intent.from, w.spec.device
        )));
    }
    let mut patch =
        json!({"metadata": {"annotations": {keys::MIGRATION_INTENT: intent.to_annotation()}}});
    if intent.phase == migration::Phase::Repointed {
        patch["spec"] = json!({"device": intent.to});
    }
    match fence
        .guard(api.patch_workload(&key.namespace, &key.name, &conditional(&w, patch)))
        .await?
    {
        Ok(w) => Ok(Start::Started {
            intent: Box::new(intent),
            regarding: Box::new(w.object_ref(&())),
        }),
        Err(e) if conflict(&e) => Ok(Start::Stale("changed meanwhile".into())),
        Err(e) => Err(e.into()),
    }
}

/// A copy whose original carries no intent for it any more (an intent stripped by a GitOps
/// tool, a controller that lost its memory): deleted once the original is seen Running, so the
/// copy is never the instance taken away last. `true` when it was deleted.
pub async fn collect_orphan<A: MoveApi>(
    api: &A,
    fence: &Fence,
    copy: &EdgeWorkload,
) -> Result<bool, MoveError> {
    let ns = copy.namespace().unwrap_or_default();
    let Some(original) = copy
        .annotations()
        .get(COPY_OF_ANNOTATION)
        .or_else(|| copy.labels().get(COPY_OF_LABEL))
        .cloned()
    else {
        return Ok(false);
    };
    let fresh = api.get_workload(&ns, &original).await?;
    let running = match &fresh {
        Some(w) if Intent::of(w).is_some() => return Ok(false), // a move in flight: not orphaned
        Some(w) => match w.spec.device.as_deref() {
            Some(d) => api
                .get_device(&ns, d)
                .await?
                .and_then(|d| d.workload(&original).map(|dw| dw.is_running()))
                .unwrap_or(false),
            // Selector-placed: any device reporting it Running.
            None => false,
        },
        None => true, // the original was deleted: its copy goes with it
    };
    if !running {
        return Ok(false);
    }
    // Read the copy again: it must still be there and still a copy of that original.
    let copy_name = copy.name_any();
    let still = api.get_workload(&ns, &copy_name).await?;
    if still.as_ref().is_none_or(|c| {
        c.metadata.deletion_timestamp.is_some() || !c.labels().contains_key(COPY_OF_LABEL)
    }) {
        return Ok(false);
    }
    fence.guard(api.delete_workload(&ns, &copy_name)).await??;
    Ok(true)
}

/// What became of a move whose intent vanished without this controller's write.
#[derive(Debug, Clone, PartialEq)]
pub enum Lost {
    /// It is over: how, and why.
    Ended(MigrationResult, String),
    /// The intent was written again from the record, so the move ends safely (undone if the
    /// workload does not run on the target in time).
    Resumed,
}

/// The move of `key` (`from` → `to`, started at `started_at`) has no intent any more and this
/// controller did not remove it: the workload was deleted, or another writer (a GitOps tool
/// that strips unknown annotations) removed it. Judged from a fresh read: running on the target
/// is a success; re-pointed there but not running is resumed once from the record (`resume`),
/// so it is undone in time instead of left where nothing runs it; anything else failed (its
/// copy, if any, is collected as an orphan once the original runs).
#[allow(clippy::too_many_arguments)]
pub async fn settle_lost<A: MoveApi>(
    api: &A,
    fence: &Fence,
    policy: &str,
    key: &MoveKey,
    from: &str,
    to: &str,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
    resume: bool,
) -> Result<Lost, MoveError> {
    let ns = key.namespace.as_str();
    let Some(w) = api
        .get_workload(ns, &key.name)
        .await?
        .filter(|w| w.metadata.deletion_timestamp.is_none())
    else {
        return Ok(Lost::Ended(
            MigrationResult::Failed,
            "the workload was deleted mid-move".into(),
        ));
    };
    if Intent::of(&w).is_some() {
        return Ok(Lost::Resumed); // moving again (written back meanwhile)
    }
    let device = w.spec.device.clone().unwrap_or_default();
    if device != to {
        return Ok(Lost::Ended(
            MigrationResult::Failed,
            format!(
                "its intent annotation was removed by another writer mid-move; stays on {device}"
            ),
        ));
    }
    let running = api
        .get_device(ns, to)
        .await?
        .and_then(|d| d.workload(&key.name).map(|dw| dw.is_running()))
        .unwrap_or(false);
    if running {
        return Ok(Lost::Ended(
            MigrationResult::Succeeded,
            format!("running on {to} (its intent annotation was removed by another writer)"),
        ));
    }
    if !resume {
        return Ok(Lost::Ended(
            MigrationResult::Failed,
            format!("its intent annotation was removed again; on {to}, not Running there"),
        ));
    }
    let copy = migration::copy_name(&key.name);
    let has_copy = api.get_workload(ns, &copy).await?.is_some();
    let intent = Intent {
        policy: policy.into(),
        from: from.into(),
        to: to.into(),
        started_at,
        strategy: if has_copy {
            edgewatt_crds::Strategy::MakeBeforeBreak
        } else {
            edgewatt_crds::Strategy::Recreate
        },
        phase: migration::Phase::Repointed,
        copy: has_copy.then_some(copy),
        original_device: Some(from.into()),
        repointed_at: Some(now),
        rolled_back_at: None,
        undo: None,
    };
    let patch = conditional(
        &w,
        json!({"metadata": {"annotations": {keys::MIGRATION_INTENT: intent.to_annotation()}}}),
    );
    match fence
        .guard(api.patch_workload(ns, &key.name, &patch))
        .await?
    {
        Ok(_) => Ok(Lost::Resumed),
        Err(e) if conflict(&e) => Ok(Lost::Resumed), // re-read next cycle
        Err(e) => Err(e.into()),
    }
}
