//! The executor of the degradation ladder's steps (issue #27): **Throttle** lowers a pod's CPU
//! limit in place through `pods/{name}/resize` (KEP-1287) and restores it; **Suspend** scales a
//! pod's owner (Deployment, StatefulSet, or a ReplicaSet without a Deployment) to zero through its
//! `scale` subresource and restores the exact replica count, or deletes a Flotta EdgeWorkload
//! with its whole object kept and recreates it unchanged. The decisions (what to degrade, when to
//! restore) are the ladder's; this module reads, writes, and says what happened.
//!
//! Acting only on what it has seen, as [`crate::mover`] does: every read is a fresh GET (a pod
//! through `pods/{name}/resize`, an owner through its Scale — the ladder's Role grants nothing
//! else), every write is conditioned on the resourceVersion (and UID) of that read, and every
//! write goes through the leadership [`Fence`]. The cluster is reached through [`LadderApi`], so
//! the model test (`tests/ladder_model.rs`) drives this same code against a simulated cluster.
//!
//! # The protocol the runtime follows (what makes "never lose a workload" hold)
//! The ledger is the policy's `status.degraded[]`; the runtime owns it in memory, loads it with
//! a fresh GET at the start of each leadership term (never from the cache), and writes it
//! through the status subresource whenever it differs from **the last write the server
//! acknowledged** (not from a cached status, which may lag; after a failed write, write again).
//! 1. **Settle**: at term start and at the start of every cycle while `Pending` entries remain,
//!    [`reconcile_pending`] (a `Pending` entry whose object shows the step becomes `Applied`,
//!    else it is dropped).
//! 2. **Watch**: every cycle, [`check`] each `Applied` entry: `Some(outcome)` means a user took
//!    the object over (restored, changed, deleted or replaced it): remove the entry, an Event.
//! 3. **Shed** (each workload the ladder picks that [`already_degraded`] says is not in the
//!    ledger, in any state — a second throttle would record lowered CPU as the one to restore):
//!    [`prepare`] → `NotPossible(why)`: report, try the next rung; `Ready`: push
//!    [`Prepared::entry`] (`Pending`, with the restore data). **Write the ledger and wait for the
//!    server's success before any [`apply`]**; a failed write means no apply (drop them).
//! 4. [`apply`] each: `Ok` → mark it `Applied` (report a `Deferred`/`Infeasible` resize, now or
//!    later through [`progress`]: the spec is lowered, the saving is not there); `Err(e)` with
//!    [`StepError::nothing_done`] → drop the entry; any other `Err` (leadership lost mid-write,
//!    5xx, transport) → leave it `Pending` for step 1. Write the ledger (this write may be lost:
//!    a `Pending` entry is confirmed again, an `Applied` one checked and restored again — both
//!    idempotent).
//! 5. **Restore** (the ladder's choice, or every entry while the policy is being deleted; its
//!    finalizer goes once the ledger is empty): [`restore`] → `Ok(Done | Gone | Edited |
//!    Exists)`: remove the entry (an Event for each but `Done`); `Err` → keep it, next cycle.
//!    `Pending` entries may be restored directly (restore judges from the object: a step that
//!    never happened restores as `Done`). Write the ledger (may be lost: restoring again is
//!    `Done`, with no write).
//!
//! What no protocol that only reads the objects can tell apart (documented; the model test
//! exercises and counts them): a user change that leaves the object exactly as the controller's
//! own write would have, made while the controller does not know the outcome of that write — a
//! user scaling an owner to 0 or deleting an EdgeWorkload between a `Pending` write and the
//! step, when the controller dies or the step's answer is lost (the entry is confirmed `Applied`
//! and the workload later restored: kept rather than risked); the same after a restore whose
//! answer or ledger removal was lost; and two user changes that cancel out between two of the
//! controller's reads.
//!
//! `RestoreData.object` holds, besides an EdgeWorkload's kept object, the identity of a pod or
//! owner (`{"uid": …}`) and for a throttle what it set (`{"throttledTo": [ContainerCpu…]}`), so a
//! restore tells its own throttle from someone's edit and a replaced object from the original.
//! Entries without them (written by hand) still restore, with a looser test (CPU at most the
//! recorded values; no identity check).

mod cpu;
mod keep;

use std::future::Future;

use edgewatt_crds::degrade::ContainerCpu;
use edgewatt_crds::{
    Criticality, DegradeState, DegradeStep, DegradedKind, DegradedWorkload, EdgeWorkload,
    RestoreData,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    Api, Client,
};
use serde_json::{json, Value};

pub use cpu::{
    format_millicores, parse_quantity, pod_qos, restore_patch, same_cpu, throttle, Throttle,
};
pub use keep::{keep, recreate};

use crate::leader::Fence;
use crate::mover::MoveApi;
use crate::planner::SuspendUnit;

/// Why a throttle is not possible on a cluster without the resize subresource (the ladder goes
/// on to its next rung).
pub const RESIZE_NOT_SERVED: &str = "the API server does not serve pods/resize (Kubernetes < 1.33, or InPlacePodVerticalScaling off)";

/// How often a write is tried again after a 409 (a status update by the kubelet or a
/// controller changes the resourceVersion without changing what the step depends on).
const TRIES: usize = 4;

/// The few calls the ladder makes. `kube::Error::Api` carries the HTTP status (404, 409…).
pub trait LadderApi {
    /// A fresh read of a pod through `GET pods/{name}/resize`. `Ok(None)`: no such pod. A 404
    /// that does not name the pod (the subresource is not served) is an error: see
    /// [`resize_not_served`].
    fn get_pod(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = kube::Result<Option<Pod>>> + Send;
    /// A strategic merge patch on `pods/{name}/resize`; a `metadata.resourceVersion` in it makes
    /// it conditional.
    fn resize_pod(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = kube::Result<Pod>> + Send;
    /// `GET {deployments,statefulsets,replicasets}/{name}/scale`; `Ok(None)`: no such owner.
    fn get_scale(
        &self,
        kind: DegradedKind,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = kube::Result<Option<Scale>>> + Send;
    /// A JSON merge patch of the Scale; its `metadata.resourceVersion` and `uid` are
    /// preconditions.
    fn patch_scale(
        &self,
        kind: DegradedKind,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = kube::Result<Scale>> + Send;
    fn get_workload(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = kube::Result<Option<EdgeWorkload>>> + Send;
    /// Creates; `AlreadyExists` (409) is an error.
    fn create_workload(&self, w: &EdgeWorkload) -> impl Future<Output = kube::Result<()>> + Send;
    /// Deletes with preconditions (UID and resourceVersion: 409 when either changed); a
    /// missing object is a 404 error.
    fn delete_workload(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> impl Future<Output = kube::Result<()>> + Send;
}

/// [`LadderApi`] against the API server, with exactly the ladder's Role: `pods/resize` get and
/// patch, `{deployments,statefulsets,replicasets}/scale` get and patch, EdgeWorkloads get,
/// create and delete.
#[derive(Clone)]
pub struct KubeLadder {
    pub client: Client,
}

impl KubeLadder {
    fn moves(&self) -> crate::mover::KubeMoves {
        crate::mover::KubeMoves {
            client: self.client.clone(),
        }
    }
}

/// Whether `e` is a 404 about the object `name` itself (`pods "web" not found`).
fn names_object(e: &kube::Error, name: &str) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        && s.details.as_ref().is_some_and(|d| d.name == name))
}

/// A 404 on `pods/{name}/resize` that is not the pod's own NotFound: the route does not exist
/// (kube-apiserver < 1.33 or the `InPlacePodVerticalScaling` gate off; `storage_core.go`
/// registers `pods/resize` only with it), answered as "404 page not found" or "the server could
/// not find the requested resource", without details naming the pod.
pub fn resize_not_served(e: &kube::Error, pod: &str) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404) && !names_object(e, pod)
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

impl LadderApi for KubeLadder {
    async fn get_pod(&self, ns: &str, name: &str) -> kube::Result<Option<Pod>> {
        match Api::<Pod>::namespaced(self.client.clone(), ns)
            .get_resize(name)
            .await
        {
            Ok(p) => Ok(Some(p)),
            Err(e) if names_object(&e, name) => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn resize_pod(&self, ns: &str, name: &str, patch: &Value) -> kube::Result<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_resize(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
    }
    async fn get_scale(
        &self,
        kind: DegradedKind,
        ns: &str,
        name: &str,
    ) -> kube::Result<Option<Scale>> {
        let c = self.client.clone();
        let r = match kind {
            DegradedKind::Deployment => Api::<Deployment>::namespaced(c, ns).get_scale(name).await,
            DegradedKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(c, ns).get_scale(name).await
            }
            DegradedKind::ReplicaSet => Api::<ReplicaSet>::namespaced(c, ns).get_scale(name).await,
            other => return Err(no_scale(other)),
        };
        match r {
            Ok(s) => Ok(Some(s)),
            Err(e) if names_object(&e, name) => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn patch_scale(
        &self,
        kind: DegradedKind,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> kube::Result<Scale> {
        let (c, pp, p) = (
            self.client.clone(),
            PatchParams::default(),
            Patch::Merge(patch),
        );
        match kind {
            DegradedKind::Deployment => {
                Api::<Deployment>::namespaced(c, ns)
                    .patch_scale(name, &pp, &p)
                    .await
            }
            DegradedKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(c, ns)
                    .patch_scale(name, &pp, &p)
                    .await
            }
            DegradedKind::ReplicaSet => {
                Api::<ReplicaSet>::namespaced(c, ns)
                    .patch_scale(name, &pp, &p)
                    .await
            }
            other => Err(no_scale(other)),
        }
    }
    // An EdgeWorkload is read and created as a move does it (the same calls, one place).
    async fn get_workload(&self, ns: &str, name: &str) -> kube::Result<Option<EdgeWorkload>> {
        self.moves().get_workload(ns, name).await
    }
    async fn create_workload(&self, w: &EdgeWorkload) -> kube::Result<()> {
        self.moves().create_workload(w).await
    }
    async fn delete_workload(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> kube::Result<()> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: Some(resource_version.to_string()),
            }),
            ..DeleteParams::default()
        };
        Api::<EdgeWorkload>::namespaced(self.client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ())
    }
}

fn no_scale(kind: DegradedKind) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(
            &format!("a {} has no scale subresource", kind.as_str()),
            "BadRequest",
        )
        .with_code(400)
        .boxed(),
    )
}

/// What a step acts on: a pod (throttle), an owner or an EdgeWorkload (suspend).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Degradee {
    pub kind: DegradedKind,
    pub namespace: String,
    pub name: String,
}

impl Degradee {
    pub fn pod(namespace: &str, name: &str) -> Self {
        Self {
            kind: DegradedKind::Pod,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    /// What a ledger entry names.
    pub fn of(entry: &DegradedWorkload) -> Self {
        Self {
            kind: entry.kind,
            namespace: entry.namespace.clone(),
            name: entry.name.clone(),
        }
    }
}

impl From<&SuspendUnit> for Degradee {
    fn from(u: &SuspendUnit) -> Self {
        Self {
            kind: u.kind,
            namespace: u.namespace.clone(),
            name: u.name.clone(),
        }
    }
}

impl std::fmt::Display for Degradee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Whether the ledger already holds `who` in any state: it is never prepared again (a second
/// throttle would record the lowered CPU as the one to restore).
pub fn already_degraded(ledger: &[DegradedWorkload], who: &Degradee) -> bool {
    ledger
        .iter()
        .any(|e| e.kind == who.kind && e.namespace == who.namespace && e.name == who.name)
}

/// Why a step did not go through.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Leadership not confirmed, or lost while the write was in flight: it may have happened.
    #[error("not the leader (Lease not renewed within the renew deadline)")]
    NotLeader,
    /// Nothing was done: the object changed or went between the read and the write, or the
    /// write was refused; re-decided next cycle.
    #[error("{0}")]
    NotDone(String),
    /// Nothing was done yet: waiting (an EdgeWorkload still being deleted).
    #[error("{0}")]
    Wait(String),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

impl StepError {
    /// The write certainly did not happen: the server refused it (4xx) or it was never sent.
    /// Otherwise (5xx, transport, leadership lost mid-write) it may have.
    pub fn nothing_done(&self) -> bool {
        match self {
            StepError::NotLeader => false,
            StepError::NotDone(_) | StepError::Wait(_) => true,
            StepError::Kube(e) => code(e).is_some_and(|c| (400..500).contains(&c)),
        }
    }
}

impl From<crate::leader::NotLeader> for StepError {
    fn from(_: crate::leader::NotLeader) -> Self {
        StepError::NotLeader
    }
}

/// The one write a prepared step makes.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    Resize {
        uid: Option<String>,
        rv: Option<String>,
        patch: Value,
    },
    Scale {
        uid: Option<String>,
        rv: Option<String>,
        replicas: i32,
    },
    Delete {
        uid: String,
        rv: String,
        kept: Value,
    },
}

/// A step ready to take: the restore data to write to the ledger first, and the write.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub who: Degradee,
    pub step: DegradeStep,
    pub restore: RestoreData,
    /// The share of the workload's draw the step is expected to remove: 1 for a suspend; for a
    /// throttle the share of its CPU limit taken away (an upper bound).
    pub saved_fraction: f64,
    write: Write,
}

impl Prepared {
    /// The ledger entry to write (`Pending`) before [`apply`].
    pub fn entry(
        &self,
        target: &str,
        criticality: Criticality,
        since: String,
        reason: String,
        saved_watts: Option<f64>,
    ) -> DegradedWorkload {
        DegradedWorkload {
            kind: self.who.kind,
            namespace: self.who.namespace.clone(),
            name: self.who.name.clone(),
            target: target.into(),
            action: self.step,
            criticality,
            since,
            reason,
            saved_watts,
            state: DegradeState::Pending,
            restore: self.restore.clone(),
        }
    }
}

/// What [`prepare`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepare {
    Ready(Box<Prepared>),
    /// This rung cannot act on it (why): the ladder tries the next.
    NotPossible(String),
}

/// The identity and throttle kept in `RestoreData.object` for pods and owners.
fn identity(uid: Option<&str>, throttled: Option<&[ContainerCpu]>) -> Option<Value> {
    let mut o = json!({});
    if let Some(u) = uid {
        o["uid"] = json!(u);
    }
    if let Some(t) = throttled {
        o["throttledTo"] = serde_json::to_value(t).unwrap_or(Value::Null);
    }
    (o != json!({})).then_some(o)
}

fn recorded_uid(r: &RestoreData) -> Option<&str> {
    r.object.as_ref()?.get("uid")?.as_str()
}

fn recorded_throttle(r: &RestoreData) -> Option<Vec<ContainerCpu>> {
    serde_json::from_value(r.object.as_ref()?.get("throttledTo")?.clone()).ok()
}

fn other_uid(recorded: Option<&str>, now: Option<&str>) -> bool {
    matches!((recorded, now), (Some(a), Some(b)) if a != b)
}

fn replicas(s: &Scale) -> i32 {
    // autoscaling/v1 `spec.replicas` is omitempty: a Scale at 0 reads `spec: {}`.
    s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Reads `who` fresh and builds what the step needs: the restore data (a pod's CPU as it is, an
/// owner's replicas from its Scale, an EdgeWorkload's object) and the conditional write.
pub async fn prepare<A: LadderApi>(
    api: &A,
    who: &Degradee,
    step: DegradeStep,
    throttle_percent: u32,
) -> Result<Prepare, StepError> {
    let not = |why: String| Ok(Prepare::NotPossible(why));
    let (ns, name) = (who.namespace.as_str(), who.name.as_str());
    match (step, who.kind) {
        (DegradeStep::Throttle, DegradedKind::Pod) => {
            let pod = match api.get_pod(ns, name).await {
                Ok(Some(p)) => p,
                Ok(None) => return not("the pod is gone".into()),
                Err(e) if resize_not_served(&e, name) => return not(RESIZE_NOT_SERVED.into()),
                Err(e) => return Err(e.into()),
            };
            if pod.metadata.deletion_timestamp.is_some() {
                return not("the pod is being deleted".into());
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                return not(format!(
                    "the pod has finished ({})",
                    phase.unwrap_or_default()
                ));
            }
            let t = match throttle(&pod, throttle_percent) {
                Ok(t) => t,
                Err(why) => return not(why),
            };
            let uid = pod.metadata.uid.clone();
            Ok(Prepare::Ready(Box::new(Prepared {
                who: who.clone(),
                step,
                restore: RestoreData {
                    containers: Some(t.restore.clone()),
                    replicas: None,
                    object: identity(uid.as_deref(), Some(&t.throttled)),
                },
                saved_fraction: t.saved_fraction,
                write: Write::Resize {
                    uid,
                    rv: pod.metadata.resource_version.clone(),
                    patch: t.patch,
                },
            })))
        }
        (
            DegradeStep::Suspend,
            DegradedKind::Deployment | DegradedKind::StatefulSet | DegradedKind::ReplicaSet,
        ) => {
            let Some(scale) = api.get_scale(who.kind, ns, name).await? else {
                return not(format!("the {} is gone", who.kind.as_str()));
            };
            let n = replicas(&scale);
            if n == 0 {
                return not(format!(
                    "the {} is already scaled to 0: nothing to suspend",
                    who.kind.as_str()
                ));
            }
            let uid = scale.metadata.uid.clone();
            Ok(Prepare::Ready(Box::new(Prepared {
                who: who.clone(),
                step,
                restore: RestoreData {
                    containers: None,
                    replicas: Some(n),
                    object: identity(uid.as_deref(), None),
                },
                saved_fraction: 1.0,
                write: Write::Scale {
                    uid,
                    rv: scale.metadata.resource_version.clone(),
                    replicas: n,
                },
            })))
        }
        (DegradeStep::Suspend, DegradedKind::EdgeWorkload) => {
            let Some(w) = api.get_workload(ns, name).await? else {
                return not("the EdgeWorkload is gone".into());
            };
            if w.metadata.deletion_timestamp.is_some() {
                return not("the EdgeWorkload is being deleted".into());
            }
            let (Some(uid), Some(rv)) =
                (w.metadata.uid.clone(), w.metadata.resource_version.clone())
            else {
                return not("the EdgeWorkload has no uid or resourceVersion".into());
            };
            let kept = keep(&w);
            Ok(Prepare::Ready(Box::new(Prepared {
                who: who.clone(),
                step,
                restore: RestoreData {
                    containers: None,
                    replicas: None,
                    object: Some(kept.clone()),
                },
                saved_fraction: 1.0,
                write: Write::Delete { uid, rv, kept },
            })))
        }
        (step, kind) => not(format!(
            "a {} acts on {}, not on a {}",
            step.as_str(),
            match step {
                DegradeStep::Throttle => "a pod",
                DegradeStep::Suspend => "an owner with a scale or an EdgeWorkload",
            },
            kind.as_str()
        )),
    }
}

/// What the kubelet has made of a pod's latest resize (KEP-1287 "Resize Status", 1.33+:
/// conditions `PodResizePending` with reason `Deferred`/`Infeasible`, `PodResizeInProgress`;
/// the actual values in `status.containerStatuses[].resources`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizeProgress {
    /// Every container runs with the spec's CPU limit.
    Actuated,
    /// Allocated, being actuated.
    InProgress,
    /// Not answered yet (or a kubelet that does not report it).
    Waiting,
    /// The kubelet will retry (the node lacks room now): the saving is not there yet.
    Deferred(String),
    /// The kubelet will never apply it on this node: the saving is not there.
    Infeasible(String),
}

/// Reads a pod's resize progress. Conditions that carry an `observedGeneration` older than the
/// pod's generation answer an earlier resize and are ignored.
pub fn resize_progress(pod: &Pod) -> ResizeProgress {
    let generation = pod.metadata.generation;
    let status = pod.status.as_ref();
    let current = |c: &&k8s_openapi::api::core::v1::PodCondition| {
        c.status == "True"
            && match (c.observed_generation, generation) {
                (Some(o), Some(g)) => o >= g,
                _ => true,
            }
    };
    let conds: Vec<_> = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(current)
        .collect();
    if let Some(c) = conds.iter().find(|c| c.type_ == "PodResizePending") {
        let msg = c.message.clone().unwrap_or_default();
        return match c.reason.as_deref() {
            Some("Infeasible") => ResizeProgress::Infeasible(msg),
            // KEP: "consumers should assume that any unknown value means the same as Deferred".
            _ => ResizeProgress::Deferred(msg),
        };
    }
    if conds.iter().any(|c| c.type_ == "PodResizeInProgress") {
        return ResizeProgress::InProgress;
    }
    let spec = pod.spec.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_ref());
    let actuated = spec.is_some_and(|spec| {
        spec.containers.iter().all(|c| {
            let want = c
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("cpu"));
            let Some(want) = want else { return true };
            statuses
                .into_iter()
                .flatten()
                .find(|s| s.name == c.name)
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("cpu"))
                .is_some_and(|got| same_cpu(&got.0, &want.0))
        })
    });
    if actuated {
        ResizeProgress::Actuated
    } else {
        ResizeProgress::Waiting
    }
}

/// A step taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// A throttle: what the kubelet has made of it so far (usually `Waiting` right after the
    /// write; [`progress`] reads it again later).
    pub resize: Option<ResizeProgress>,
}

fn conflict(e: &kube::Error) -> bool {
    code(e) == Some(409)
}

/// Takes a prepared step — after its ledger entry is written. On a 409 it re-reads and tries
/// again only while the object is still the one prepared (same UID, same CPU or replicas or
/// object as the ledger records); otherwise nothing is done ([`StepError::NotDone`]).
pub async fn apply<A: LadderApi>(
    api: &A,
    fence: &Fence,
    p: &Prepared,
) -> Result<Applied, StepError> {
    let (ns, name) = (p.who.namespace.as_str(), p.who.name.as_str());
    match &p.write {
        Write::Resize { uid, rv, patch } => {
            let before = p.restore.containers.clone().unwrap_or_default();
            let mut rv = rv.clone();
            for _ in 0..TRIES {
                let mut body = patch.clone();
                if let Some(rv) = &rv {
                    body["metadata"] = json!({"resourceVersion": rv});
                }
                match fence.guard(api.resize_pod(ns, name, &body)).await? {
                    Ok(pod) => {
                        return Ok(Applied {
                            resize: Some(resize_progress(&pod)),
                        })
                    }
                    Err(e) if conflict(&e) => {}
                    Err(e) if names_object(&e, name) => {
                        return Err(StepError::NotDone("the pod was deleted meanwhile".into()))
                    }
                    Err(e) if resize_not_served(&e, name) => {
                        return Err(StepError::NotDone(RESIZE_NOT_SERVED.into()))
                    }
                    Err(e) => return Err(e.into()),
                }
                let pod = match api.get_pod(ns, name).await? {
                    Some(pod) if !other_uid(uid.as_deref(), pod.metadata.uid.as_deref()) => pod,
                    _ => {
                        return Err(StepError::NotDone(
                            "the pod was deleted or replaced meanwhile".into(),
                        ))
                    }
                };
                if !cpu::matches(&pod, &before).unwrap_or(false) {
                    return Err(StepError::NotDone(format!(
                        "its CPU changed meanwhile ({})",
                        cpu::describe(&pod, &before)
                    )));
                }
                rv = pod.metadata.resource_version.clone();
            }
        }
        Write::Scale {
            uid,
            rv,
            replicas: n,
        } => {
            let mut rv = rv.clone();
            for _ in 0..TRIES {
                let mut body = json!({"spec": {"replicas": 0}});
                if let Some(rv) = &rv {
                    body["metadata"]["resourceVersion"] = json!(rv);
                }
                if let Some(uid) = uid {
                    body["metadata"]["uid"] = json!(uid);
                }
                match fence
                    .guard(api.patch_scale(p.who.kind, ns, name, &body))
                    .await?
                {
                    Ok(_) => return Ok(Applied { resize: None }),
                    Err(e) if conflict(&e) => {}
                    Err(e) if code(&e) == Some(404) => {
                        return Err(StepError::NotDone(format!(
                            "the {} was deleted meanwhile",
                            p.who.kind.as_str()
                        )))
                    }
                    Err(e) => return Err(e.into()),
                }
                let scale = match api.get_scale(p.who.kind, ns, name).await? {
                    Some(s) if !other_uid(uid.as_deref(), s.metadata.uid.as_deref()) => s,
                    _ => {
                        return Err(StepError::NotDone(format!(
                            "the {} was deleted or replaced meanwhile",
                            p.who.kind.as_str()
                        )))
                    }
                };
                if replicas(&scale) != *n {
                    return Err(StepError::NotDone(format!(
                        "scaled to {} meanwhile",
                        replicas(&scale)
                    )));
                }
                rv = scale.metadata.resource_version.clone();
            }
        }
        Write::Delete { uid, rv, kept } => {
            let mut rv = rv.clone();
            for _ in 0..TRIES {
                match fence.guard(api.delete_workload(ns, name, uid, &rv)).await? {
                    Ok(()) => return Ok(Applied { resize: None }),
                    Err(e) if conflict(&e) => {}
                    Err(e) if code(&e) == Some(404) => {
                        return Err(StepError::NotDone(
                            "the EdgeWorkload was deleted meanwhile".into(),
                        ))
                    }
                    Err(e) => return Err(e.into()),
                }
                let w = match api.get_workload(ns, name).await? {
                    Some(w)
                        if w.metadata.uid.as_deref() == Some(uid.as_str())
                            && w.metadata.deletion_timestamp.is_none() =>
                    {
                        w
                    }
                    _ => {
                        return Err(StepError::NotDone(
                            "the EdgeWorkload was deleted or replaced meanwhile".into(),
                        ))
                    }
                };
                if keep(&w) != *kept {
                    return Err(StepError::NotDone(
                        "the EdgeWorkload changed meanwhile (its kept object would be stale)"
                            .into(),
                    ));
                }
                rv = w.metadata.resource_version.clone().unwrap_or_default();
            }
        }
    }
    Err(StepError::NotDone(
        "changed again between every read and write; re-decided next cycle".into(),
    ))
}

/// How a `Pending` entry's step turned out, judged from the object.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmed {
    /// The object shows the step: the entry becomes `Applied`.
    Applied,
    /// It does not (why): the step never happened; the entry is dropped.
    NotApplied(String),
}

/// Judges a `Pending` entry from a fresh read of its object: a throttle happened if the pod
/// (the same UID) runs with the CPU the throttle set (without a record of it: CPU at most the
/// recorded values, and lower somewhere); a suspend of an owner if its Scale reads 0; of an
/// EdgeWorkload if it is gone or being deleted.
pub async fn confirm<A: LadderApi>(
    api: &A,
    entry: &DegradedWorkload,
) -> Result<Confirmed, StepError> {
    let (ns, name) = (entry.namespace.as_str(), entry.name.as_str());
    let r = &entry.restore;
    let not = |why: &str| Ok(Confirmed::NotApplied(why.to_string()));
    match entry.kind {
        DegradedKind::Pod => {
            let Some(pod) = api.get_pod(ns, name).await? else {
                return not("the pod is gone");
            };
            if other_uid(recorded_uid(r), pod.metadata.uid.as_deref()) {
                return not("the pod was replaced");
            }
            let before = r.containers.clone().unwrap_or_default();
            let lowered = match recorded_throttle(r) {
                Some(t) => cpu::matches(&pod, &t).unwrap_or(false),
                None => {
                    cpu::at_most(&pod, &before).unwrap_or(false)
                        && !cpu::matches(&pod, &before).unwrap_or(true)
                }
            };
            if lowered {
                Ok(Confirmed::Applied)
            } else {
                not("its CPU is not the throttled one")
            }
        }
        DegradedKind::Deployment | DegradedKind::StatefulSet | DegradedKind::ReplicaSet => {
            let Some(scale) = api.get_scale(entry.kind, ns, name).await? else {
                return not("the owner is gone");
            };
            if other_uid(recorded_uid(r), scale.metadata.uid.as_deref()) {
                return not("the owner was replaced");
            }
            if replicas(&scale) == 0 {
                Ok(Confirmed::Applied)
            } else {
                not("its replicas are not 0")
            }
        }
        DegradedKind::EdgeWorkload => match api.get_workload(ns, name).await? {
            None => Ok(Confirmed::Applied),
            Some(w) if w.metadata.deletion_timestamp.is_some() => Ok(Confirmed::Applied),
            Some(_) => not("the EdgeWorkload still exists"),
        },
    }
}

/// Settles every `Pending` entry of a ledger from the objects (step 1 of the protocol): each is
/// marked `Applied` or removed; one whose object cannot be read now stays `Pending`. Returns
/// the settled entries (as they were) with their outcome, for Events and metrics.
pub async fn reconcile_pending<A: LadderApi>(
    api: &A,
    ledger: &mut Vec<DegradedWorkload>,
) -> Vec<(DegradedWorkload, Confirmed)> {
    let mut settled = Vec::new();
    let mut keep_list = Vec::with_capacity(ledger.len());
    for mut e in std::mem::take(ledger) {
        if e.state != DegradeState::Pending {
            keep_list.push(e);
            continue;
        }
        match confirm(api, &e).await {
            Ok(Confirmed::Applied) => {
                settled.push((e.clone(), Confirmed::Applied));
                e.state = DegradeState::Applied;
                keep_list.push(e);
            }
            Ok(c @ Confirmed::NotApplied(_)) => settled.push((e, c)),
            Err(err) => {
                tracing::debug!(workload = %e.name, error = %err, "pending ladder step not settled yet");
                keep_list.push(e);
            }
        }
    }
    *ledger = keep_list;
    settled
}

/// How a restore ended; each ends the entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    /// Back as it was (now, or already).
    Done,
    /// The object was deleted or replaced meanwhile: nothing recreated.
    Gone(String),
    /// Someone changed its replicas or CPU meanwhile: left as they set it.
    Edited(String),
    /// An EdgeWorkload of that name exists again, not as it was kept: left as is.
    Exists(String),
}

/// What a fresh read says of a degraded object.
enum Seen {
    /// As the step left it: the write that restores it, conditioned on this read.
    AsLeft(Undo),
    /// An EdgeWorkload still being deleted (ours): not recreated before it is gone.
    Terminating,
    /// No longer ours to restore (or restored already).
    Ended(Restored),
}

enum Undo {
    Resize(Value),
    Scale(Value),
    Create(Box<EdgeWorkload>),
}

/// Reads `entry`'s object and judges whether it is still as the step left it.
async fn judge<A: LadderApi>(api: &A, entry: &DegradedWorkload) -> Result<Seen, StepError> {
    let (ns, name) = (entry.namespace.as_str(), entry.name.as_str());
    let r = &entry.restore;
    let ended = |x: Restored| Ok(Seen::Ended(x));
    match entry.kind {
        DegradedKind::Pod => {
            let Some(before) = r.containers.clone().filter(|c| !c.is_empty()) else {
                return ended(Restored::Gone(
                    "the ledger records no CPU to restore".into(),
                ));
            };
            let pod =
                match api.get_pod(ns, name).await? {
                    None => return ended(Restored::Gone(
                        "the pod was deleted meanwhile: nothing to restore (a replacement runs \
                         with its template's CPU)"
                            .into(),
                    )),
                    Some(p) if p.metadata.deletion_timestamp.is_some() => {
                        return ended(Restored::Gone("the pod is being deleted".into()))
                    }
                    Some(p) if other_uid(recorded_uid(r), p.metadata.uid.as_deref()) => {
                        return ended(Restored::Gone(
                            "the pod was replaced by a new one of that name, which runs with its \
                         template's CPU"
                                .into(),
                        ))
                    }
                    Some(p) => p,
                };
            match cpu::matches(&pod, &before) {
                Ok(true) => return ended(Restored::Done),
                Ok(false) => {}
                Err(why) => return ended(Restored::Gone(why)),
            }
            let ours = match recorded_throttle(r) {
                Some(t) => cpu::matches(&pod, &t).unwrap_or(false),
                None => cpu::at_most(&pod, &before).unwrap_or(false),
            };
            if !ours {
                return ended(Restored::Edited(format!(
                    "its CPU was changed meanwhile ({}): left as is",
                    cpu::describe(&pod, &before)
                )));
            }
            let mut body = restore_patch(&before);
            body["metadata"] = json!({"resourceVersion": pod.metadata.resource_version});
            Ok(Seen::AsLeft(Undo::Resize(body)))
        }
        DegradedKind::Deployment | DegradedKind::StatefulSet | DegradedKind::ReplicaSet => {
            let kind = entry.kind.as_str();
            let Some(want) = r.replicas else {
                return ended(Restored::Gone(
                    "the ledger records no replicas to restore".into(),
                ));
            };
            let Some(scale) = api.get_scale(entry.kind, ns, name).await? else {
                return ended(Restored::Gone(format!(
                    "the {kind} was deleted meanwhile: not recreated"
                )));
            };
            if other_uid(recorded_uid(r), scale.metadata.uid.as_deref()) {
                return ended(Restored::Gone(format!(
                    "the {kind} was replaced by a new one of that name: left as is"
                )));
            }
            let now = replicas(&scale);
            if now == want {
                return ended(Restored::Done);
            }
            if now != 0 {
                return ended(Restored::Edited(format!(
                    "scaled to {now} meanwhile ({want} before the suspend): left as is"
                )));
            }
            let mut body = json!({"metadata": {"resourceVersion": scale.metadata.resource_version},
                                  "spec": {"replicas": want}});
            if let Some(uid) = &scale.metadata.uid {
                body["metadata"]["uid"] = json!(uid);
            }
            Ok(Seen::AsLeft(Undo::Scale(body)))
        }
        DegradedKind::EdgeWorkload => {
            let Some(kept) = &r.object else {
                return ended(Restored::Gone(
                    "the ledger kept no object to recreate".into(),
                ));
            };
            let obj = match recreate(kept) {
                Ok(o) => o,
                Err(why) => return ended(Restored::Gone(format!("cannot recreate it: {why}"))),
            };
            match api.get_workload(ns, name).await? {
                Some(w) if w.metadata.deletion_timestamp.is_some() => Ok(Seen::Terminating),
                Some(w) if keep(&w)["spec"] == kept["spec"] => ended(Restored::Done),
                Some(_) => ended(Restored::Exists(format!(
                    "an EdgeWorkload {name} exists again, not as it was kept: left as is"
                ))),
                None => Ok(Seen::AsLeft(Undo::Create(Box::new(obj)))),
            }
        }
    }
}

/// Whether an `Applied` entry still holds: `None` while its object is as the step left it;
/// otherwise how it ended without us (someone restored it, changed it, deleted or replaced it).
/// The runtime calls it every cycle for `Applied` entries, so a user's takeover ends the entry
/// at once (and a later restore never meets an object the user changed twice unseen). Reads
/// only.
pub async fn check<A: LadderApi>(
    api: &A,
    entry: &DegradedWorkload,
) -> Result<Option<Restored>, StepError> {
    if entry.state != DegradeState::Applied {
        return Ok(None);
    }
    Ok(match judge(api, entry).await? {
        Seen::AsLeft(_) | Seen::Terminating => None,
        Seen::Ended(r) => Some(r),
    })
}

/// Restores one ledger entry, idempotently: a restore that already happened reads as `Done`
/// and writes nothing — never a second create, never a scale from a value someone else set.
/// Safe on a `Pending` entry too (a step that never happened reads as `Done`).
pub async fn restore<A: LadderApi>(
    api: &A,
    fence: &Fence,
    entry: &DegradedWorkload,
) -> Result<Restored, StepError> {
    if entry.state == DegradeState::DryRun {
        return Ok(Restored::Done);
    }
    let (ns, name, kind) = (entry.namespace.as_str(), entry.name.as_str(), entry.kind);
    for _ in 0..TRIES {
        let undo = match judge(api, entry).await? {
            Seen::Ended(r) => return Ok(r),
            Seen::Terminating => {
                return Err(StepError::Wait(
                    "the EdgeWorkload is still being deleted; recreated once it is gone".into(),
                ))
            }
            Seen::AsLeft(u) => u,
        };
        let result = match &undo {
            Undo::Resize(body) => fence
                .guard(api.resize_pod(ns, name, body))
                .await?
                .map(|_| ()),
            Undo::Scale(body) => fence
                .guard(api.patch_scale(kind, ns, name, body))
                .await?
                .map(|_| ()),
            Undo::Create(obj) => fence.guard(api.create_workload(obj)).await?,
        };
        match result {
            Ok(()) => return Ok(Restored::Done),
            // Changed (or, for a create, created) meanwhile: judge again.
            Err(e) if conflict(&e) => continue,
            Err(e) if kind == DegradedKind::Pod && resize_not_served(&e, name) => {
                return Err(e.into())
            }
            Err(e) if code(&e) == Some(404) => {
                let what = match undo {
                    Undo::Create(_) => format!("its namespace is gone ({})", message(&e)),
                    _ => format!("the {} was deleted meanwhile", kind.as_str()),
                };
                return Ok(Restored::Gone(format!("{what}: not recreated")));
            }
            Err(e) if code(&e) == Some(422) => {
                return Ok(Restored::Edited(format!(
                    "the API server refuses the restore ({}): left as is",
                    message(&e)
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StepError::NotDone(
        "changed again between every read and write; tried again next cycle".into(),
    ))
}

/// A throttled pod's resize as the kubelet answers it, for reporting a `Deferred` or
/// `Infeasible` one (the saving is not there). `None` for other entries, or when the pod is gone
/// or no longer runs with the throttled CPU.
pub async fn progress<A: LadderApi>(
    api: &A,
    entry: &DegradedWorkload,
) -> Result<Option<ResizeProgress>, StepError> {
    if entry.kind != DegradedKind::Pod || entry.state != DegradeState::Applied {
        return Ok(None);
    }
    let Some(pod) = api.get_pod(&entry.namespace, &entry.name).await? else {
        return Ok(None);
    };
    if other_uid(recorded_uid(&entry.restore), pod.metadata.uid.as_deref()) {
        return Ok(None);
    }
    if let Some(t) = recorded_throttle(&entry.restore) {
        if !cpu::matches(&pod, &t).unwrap_or(false) {
            return Ok(None);
        }
    }
    Ok(Some(resize_progress(&pod)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_err(code: u16, name: Option<&str>) -> kube::Error {
        let mut s = kube::core::Status::failure("x", "NotFound").with_code(code);
        if let Some(n) = name {
            s = s.with_details(serde_json::from_value(json!({"name": n, "kind": "pods"})).unwrap());
        }
        kube::Error::Api(s.boxed())
    }

    /// A pod's own NotFound names it (`apierrors.NewNotFound` details); a route that is not
    /// registered answers 404 without details (plain "404 page not found" on kube-apiserver,
    /// which kube turns into a Status without details).
    #[test]
    fn a_missing_pod_and_a_missing_subresource_are_told_apart() {
        assert!(names_object(&status_err(404, Some("web")), "web"));
        assert!(!resize_not_served(&status_err(404, Some("web")), "web"));
        assert!(resize_not_served(&status_err(404, None), "web"));
        assert!(!resize_not_served(&status_err(409, None), "web"));
    }

    #[test]
    fn only_refusals_are_certain_to_have_done_nothing() {
        assert!(StepError::Kube(status_err(409, None)).nothing_done());
        assert!(StepError::Kube(status_err(422, None)).nothing_done());
        assert!(!StepError::Kube(status_err(500, None)).nothing_done());
        assert!(!StepError::NotLeader.nothing_done());
        assert!(StepError::NotDone("x".into()).nothing_done());
    }

    fn pod_with(status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "generation": 3},
            "spec": {"containers": [{"name": "app", "image": "x",
                "resources": {"limits": {"cpu": "500m"}}}]},
            "status": status,
        }))
        .unwrap()
    }

    /// KEP-1287 "Resize Status" (1.33+): `PodResizePending` reason Deferred/Infeasible,
    /// `PodResizeInProgress`; the actual CPU in `containerStatuses[].resources`; conditions
    /// answering an older generation do not count; an unknown reason means Deferred.
    #[test]
    fn resize_progress_reads_the_kubelets_answer() {
        let cond = |t: &str, reason: &str, gen: i64| {
            json!({"type": t, "status": "True", "reason": reason, "message": "m",
                   "observedGeneration": gen})
        };
        assert_eq!(
            resize_progress(&pod_with(
                json!({"conditions": [cond("PodResizePending", "Deferred", 3)]})
            )),
            ResizeProgress::Deferred("m".into())
        );
        assert_eq!(
            resize_progress(&pod_with(
                json!({"conditions": [cond("PodResizePending", "Infeasible", 3)]})
            )),
            ResizeProgress::Infeasible("m".into())
        );
        assert_eq!(
            resize_progress(&pod_with(
                json!({"conditions": [cond("PodResizePending", "Whatever", 3)]})
            )),
            ResizeProgress::Deferred("m".into())
        );
        assert_eq!(
            resize_progress(&pod_with(
                json!({"conditions": [cond("PodResizePending", "Deferred", 2)]})
            )),
            ResizeProgress::Waiting,
            "an answer to the previous resize"
        );
        assert_eq!(
            resize_progress(&pod_with(
                json!({"conditions": [cond("PodResizeInProgress", "", 3)]})
            )),
            ResizeProgress::InProgress
        );
        let actual = json!({"containerStatuses": [{"name": "app", "image": "x", "imageID": "",
            "ready": true, "restartCount": 0, "resources": {"limits": {"cpu": "0.5"}}}]});
        assert_eq!(resize_progress(&pod_with(actual)), ResizeProgress::Actuated);
    }

    #[test]
    fn the_ledger_holds_one_entry_per_object() {
        let p = Prepared {
            who: Degradee::pod("n", "web"),
            step: DegradeStep::Throttle,
            restore: RestoreData::default(),
            saved_fraction: 0.5,
            write: Write::Resize {
                uid: None,
                rv: None,
                patch: json!({}),
            },
        };
        let e = p.entry(
            "node-1",
            Criticality::Sheddable,
            "t".into(),
            "r".into(),
            Some(2.0),
        );
        assert_eq!(e.state, DegradeState::Pending);
        let ledger = vec![e];
        assert!(already_degraded(&ledger, &Degradee::pod("n", "web")));
        assert!(!already_degraded(&ledger, &Degradee::pod("n", "db")));
        let d = Degradee {
            kind: DegradedKind::Deployment,
            namespace: "n".into(),
            name: "web".into(),
        };
        assert!(!already_degraded(&ledger, &d));
    }
}
