//! A policy's life as the controller sees it, as steps of a [`Cycle`]: loading its memory from
//! the cluster when this replica (re)gains the Lease, its finalizer, and the cleanup when it is
//! deleted.

use edgewatt_crds::{keys, EnergyPolicy, MigrationRecord, MigrationResult, WorkloadKind};
use kube::{
    api::{Patch, PatchParams},
    Api, ResourceExt,
};
use serde_json::json;

use crate::{
    context::{Context, Error},
    cycle::Cycle,
    migration::Intent,
    mover::{MoveApi, MoveKey, COPY_OF_LABEL},
    planner::WorkloadId,
    runtime::{Evicting, PolicyRuntime},
    status::rfc3339,
};

pub use crate::runtime::history_from_status;

impl Cycle<'_> {
    /// Loads the policy's memory from the cluster: called on the first cycle of every leadership
    /// term. The status is read fresh (the cached policy may lag behind the last leader's write);
    /// records still `InProgress` are settled from a fresh read of their workload — here and only
    /// here, after a real restart or failover, can a move have ended unrecorded.
    pub(crate) async fn load(&mut self) -> Result<(), Error> {
        let api: Api<EnergyPolicy> = Api::all(self.ctx.client.clone());
        let fresh = api.get_opt(&self.name).await?;
        let status = match &fresh {
            Some(p) => p.status.clone().unwrap_or_default(),
            None => self.policy.status.clone().unwrap_or_default(),
        };
        *self.rt = PolicyRuntime::from_status(status, fresh.as_ref().is_some_and(has_finalizer));
        self.settle_records().await;
        self.restore_evictions();
        tracing::info!(policy = %self.name, moves = self.rt.moves().len(), evicting = self.rt.evicting(), "policy state loaded from the cluster");
        Ok(())
    }

    /// `InProgress` EdgeWorkload records: still moving (intent with that start) → in flight;
    /// else ended while no controller of this term was watching → settled from where the
    /// workload is.
    async fn settle_records(&mut self) {
        let (ctx, policy) = (self.ctx, self.name.as_str());
        for rec in self.rt.open_moves() {
            let key = MoveKey {
                namespace: rec.namespace.clone(),
                name: rec.name.clone(),
            };
            let Ok(fresh) = ctx.moves.get_workload(&key.namespace, &key.name).await else {
                continue; // cannot tell now; the next term's load tries again
            };
            let intent = fresh.as_ref().and_then(Intent::of);
            if let Some(i) =
                intent.filter(|i| i.policy == policy && rfc3339(i.started_at) == rec.started_at)
            {
                self.rt.keep_moving(&key, i.started_at);
                continue;
            }
            let arrived = fresh
                .as_ref()
                .is_some_and(|w| w.spec.device.is_some() && w.spec.device == rec.to);
            let (result, message) = if arrived {
                (
                    MigrationResult::Succeeded,
                    format!(
                        "on {} (settled after a controller restart)",
                        rec.to.clone().unwrap_or_default()
                    ),
                )
            } else {
                (
                    MigrationResult::Failed,
                    format!(
                        "undone or abandoned (settled after a controller restart), on {}",
                        rec.from
                    ),
                )
            };
            ctx.metrics
                .migration(policy, "EdgeWorkload", result.as_str());
            self.rt.record(MigrationRecord {
                result,
                message,
                finished_at: Some(rfc3339(self.now)),
                ..rec
            });
        }
    }

    /// Pods evicted by an earlier term that are still terminating on nodes this policy tainted
    /// count in flight again.
    fn restore_evictions(&mut self) {
        let policy = self.name.as_str();
        let ours: std::collections::HashSet<String> = self
            .ctx
            .stores
            .nodes
            .state()
            .iter()
            .filter(|n| n.annotations().get(keys::STARVED_BY).map(String::as_str) == Some(policy))
            .map(|n| n.name_any())
            .collect();
        for p in self.ctx.stores.pods.state() {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if p.metadata.deletion_timestamp.is_some() && ours.contains(&node) {
                self.rt.adopt_eviction(
                    WorkloadId {
                        kind: WorkloadKind::Pod,
                        namespace: p.namespace().unwrap_or_default(),
                        name: p.name_any(),
                    },
                    Evicting {
                        uid: p.metadata.uid.clone(),
                        node,
                    },
                );
            }
        }
    }

    /// Adds the cleanup finalizer, so deleting the policy first removes what it put in the
    /// cluster. Decided on a fresh read (the cached policy may not show the finalizer written a
    /// moment ago) and written conditioned on it; once seen, not read again in this term.
    pub(crate) async fn ensure_finalizer(&mut self) -> Result<(), Error> {
        if self.rt.has_finalizer() || has_finalizer(self.policy) {
            self.rt.finalizer_seen();
            return Ok(());
        }
        let api: Api<EnergyPolicy> = Api::all(self.ctx.client.clone());
        let Some(fresh) = api.get_opt(&self.name).await? else {
            return Ok(());
        };
        if has_finalizer(&fresh) {
            self.rt.finalizer_seen();
            return Ok(());
        }
        let mut list = fresh.finalizers().to_vec();
        list.push(keys::POLICY_FINALIZER.into());
        patch_finalizers(self.ctx, &fresh, list).await?;
        self.rt.finalizer_seen();
        Ok(())
    }

    /// The policy is being deleted: undo its moves in flight (abort: the copy stays until the
    /// original runs on its source again), remove its taints and labels and its orphaned copies,
    /// withdraw its metrics; the finalizer goes once nothing of it is left.
    pub(crate) async fn finalize(mut self) -> Result<(), Error> {
        let (ctx, policy) = (self.ctx, self.policy);
        let name = self.name.clone();
        ctx.metrics.withdraw_policy(&name);
        if !has_finalizer(policy) {
            return Ok(());
        }
        let mut left = 0usize;
        // Moves: abort each (idempotent), then drive.
        for w in ctx.stores.workloads.state() {
            if Intent::of(&w).is_some_and(|i| i.policy == name) {
                let key = MoveKey {
                    namespace: w.namespace().unwrap_or_default(),
                    name: w.name_any(),
                };
                self.rt.adopt_move(key, self.now);
            }
        }
        for key in self.rt.moves() {
            let abort =
                json!({"metadata": {"annotations": {keys::ABORT_MIGRATION: "policy deleted"}}});
            if let Ok(Some(w)) = ctx.moves.get_workload(&key.namespace, &key.name).await {
                if Intent::of(&w).is_some() && !w.annotations().contains_key(keys::ABORT_MIGRATION)
                {
                    let _ = ctx
                        .fence
                        .guard(ctx.moves.patch_workload(&key.namespace, &key.name, &abort))
                        .await;
                }
            }
        }
        self.timeout = std::time::Duration::from_secs(300);
        self.drive_moves().await;
        left += self.rt.moves().len();
        // What the ladder throttled or suspended comes back before the policy goes.
        self.restore_all("the policy is being deleted").await;
        left += self.rt.degraded().len();
        // Taints and labels this policy put.
        for n in ctx.stores.nodes.state() {
            if n.annotations().get(keys::STARVED_BY).map(String::as_str) == Some(name.as_str()) {
                if let Err(e) = ctx
                    .actuator
                    .set_taint(&ctx.fence, &n.name_any(), &name, false)
                    .await
                {
                    left += 1;
                    tracing::warn!(policy = %name, node = %n.name_any(), "removing the taint: {e}");
                }
            }
        }
        for d in ctx.stores.devices.state() {
            if d.annotations().get(keys::STARVED_BY).map(String::as_str) == Some(name.as_str()) {
                let ns = d.namespace().unwrap_or_default();
                if let Err(e) = ctx
                    .actuator
                    .set_device_label(&ctx.fence, &ns, &d.name_any(), &name, false)
                    .await
                {
                    left += 1;
                    tracing::warn!(policy = %name, device = %d.name_any(), "removing the label: {e}");
                }
            }
        }
        self.collect_orphans().await;
        for c in ctx.stores.workloads.state() {
            let ours = c.labels().contains_key(COPY_OF_LABEL)
                && c.annotations().get(crate::mover::COPY_POLICY_ANNOTATION) == Some(&name);
            if ours {
                // The cache may still show a copy just removed: ask the API server.
                let ns = c.namespace().unwrap_or_default();
                if let Ok(Some(fresh)) = ctx.moves.get_workload(&ns, &c.name_any()).await {
                    if fresh.metadata.deletion_timestamp.is_none() {
                        left += 1;
                    }
                }
            }
        }
        if left > 0 {
            tracing::info!(policy = %name, left, "policy being deleted: cleaning up");
            return Ok(());
        }
        let list: Vec<String> = policy
            .finalizers()
            .iter()
            .filter(|f| *f != keys::POLICY_FINALIZER)
            .cloned()
            .collect();
        patch_finalizers(ctx, policy, list).await?;
        tracing::info!(policy = %name, "policy deleted: its taints, labels, moves and metrics are gone");
        Ok(())
    }
}

fn has_finalizer(p: &EnergyPolicy) -> bool {
    p.finalizers().iter().any(|f| f == keys::POLICY_FINALIZER)
}

async fn patch_finalizers(
    ctx: &Context,
    policy: &EnergyPolicy,
    list: Vec<String>,
) -> Result<(), Error> {
    let api: Api<EnergyPolicy> = Api::all(ctx.client.clone());
    let patch =
        json!({"metadata": {"resourceVersion": policy.resource_version(), "finalizers": list}});
    match ctx
        .fence
        .guard(api.patch(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        ))
        .await
    {
        Ok(Ok(_)) | Err(_) => Ok(()),
        // Changed meanwhile (or gone): next cycle reads it again.
        Ok(Err(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => Ok(()),
        Ok(Err(e)) => Err(e.into()),
    }
}
