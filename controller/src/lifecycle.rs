//! A policy's life as the controller sees it: loading its memory from the cluster when this
//! replica (re)gains the Lease, its finalizer, and the cleanup when it is deleted.

use chrono::{DateTime, Utc};
use edgewatt_crds::{keys, EnergyPolicy, MigrationRecord, MigrationResult, WorkloadKind};
use kube::{
    api::{Patch, PatchParams},
    Api, ResourceExt,
};
use serde_json::json;

use crate::{
    cycle::{Evicting, PolicyRuntime},
    execute::{self, result_str},
    migration::Intent,
    mover::{KubeMoves, MoveApi, MoveKey, COPY_OF_LABEL},
    planner::{self, MoveHistory, TargetId, TargetState, WorkloadId},
    reconciler::{Context, Error},
    status::push_record,
};

fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Move history as far as the status shows it (the last 20 migrations), so a restarted
/// controller keeps honouring `cooldown` and `maxPerHour`, per workload and per owner. A
/// workload's last move counts from when it finished (or started, while in progress); evictions
/// blocked by a PDB and dry runs are no moves.
pub fn history_from_status(records: &[MigrationRecord]) -> MoveHistory {
    let mut h = MoveHistory::default();
    for r in records {
        if matches!(r.result, MigrationResult::Blocked) {
            continue;
        }
        let Some(started) = parse(&r.started_at) else {
            continue;
        };
        let last = r
            .finished_at
            .as_deref()
            .and_then(parse)
            .map_or(started, |f| f.max(started));
        let id = WorkloadId {
            kind: r.kind,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        };
        h.record(id.clone(), r.owner.as_deref(), started);
        h.ended(id, last);
        if let Some(o) = &r.owner {
            let e = h.owner_last_moved.entry(o.clone()).or_insert(last);
            *e = (*e).max(last);
        }
    }
    h.recent_moves.sort();
    h
}

/// Loads the policy's memory from the cluster: called on the first cycle of every leadership
/// term. The status is read fresh (the cached policy may lag behind the last leader's write);
/// records still `InProgress` are settled from a fresh read of their workload — here and only
/// here, after a real restart or failover, can a move have ended unrecorded.
pub async fn load(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &EnergyPolicy,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let name = policy.name_any();
    let api: Api<EnergyPolicy> = Api::all(ctx.client.clone());
    let fresh = api.get_opt(&name).await?;
    let status = match &fresh {
        Some(p) => p.status.clone().unwrap_or_default(),
        None => policy.status.clone().unwrap_or_default(),
    };
    *rt = PolicyRuntime::default();
    rt.has_finalizer = fresh.as_ref().is_some_and(has_finalizer);
    rt.migrations = status.migrations.clone();
    rt.migration_count = status.migration_count;
    rt.history = history_from_status(&status.migrations);
    // Starved targets stay starved (and recover through hysteresis) instead of silently
    // restarting their `for` window; their gauges are set by this term's first cycle.
    for s in &status.starved {
        let Some(since) = parse(&s.since) else {
            continue;
        };
        rt.states.insert(
            TargetId {
                kind: s.kind,
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            },
            TargetState {
                condition_since: Some(since),
                starved: Some(planner::StarvedInfo {
                    since,
                    reason: s.reason.clone(),
                }),
                recovery_since: None,
                battery_percent: s.battery_percent,
                watts: s.watts,
                known_at: None,
            },
        );
    }
    settle_records(ctx, rt, &name, now).await;
    restore_evictions(ctx, rt, &name);
    rt.last_status = Some(status);
    tracing::info!(policy = %name, moves = rt.moves.len(), evicting = rt.evicting.len(), "policy state loaded from the cluster");
    Ok(())
}

/// `InProgress` EdgeWorkload records: still moving (intent with that start) → in flight; else
/// ended while no controller of this term was watching → settled from where the workload is.
async fn settle_records(ctx: &Context, rt: &mut PolicyRuntime, policy: &str, now: DateTime<Utc>) {
    let api = KubeMoves {
        client: ctx.client.clone(),
    };
    let open: Vec<MigrationRecord> = rt
        .migrations
        .iter()
        .filter(|r| r.result == MigrationResult::InProgress && r.kind == WorkloadKind::EdgeWorkload)
        .cloned()
        .collect();
    for rec in open {
        let key = MoveKey {
            namespace: rec.namespace.clone(),
            name: rec.name.clone(),
        };
        let Ok(fresh) = api.get_workload(&key.namespace, &key.name).await else {
            continue; // cannot tell now; the next term's load tries again
        };
        let intent = fresh.as_ref().and_then(Intent::of);
        if let Some(i) =
            intent.filter(|i| i.policy == policy && rfc3339(i.started_at) == rec.started_at)
        {
            rt.moves.insert(key, i.started_at);
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
            .migration(policy, "EdgeWorkload", result_str(result));
        push_record(
            &mut rt.migrations,
            MigrationRecord {
                result,
                message,
                finished_at: Some(rfc3339(now)),
                ..rec
            },
        );
    }
}

/// Pods evicted by an earlier term that are still terminating on nodes this policy tainted
/// count in flight again.
fn restore_evictions(ctx: &Context, rt: &mut PolicyRuntime, policy: &str) {
    let ours: std::collections::HashSet<String> = ctx
        .stores
        .nodes
        .state()
        .iter()
        .filter(|n| n.annotations().get(keys::STARVED_BY).map(String::as_str) == Some(policy))
        .map(|n| n.name_any())
        .collect();
    for p in ctx.stores.pods.state() {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() && ours.contains(&node) {
            rt.evicting.insert(
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

fn has_finalizer(p: &EnergyPolicy) -> bool {
    p.finalizers().iter().any(|f| f == keys::POLICY_FINALIZER)
}

/// Adds the cleanup finalizer, so deleting the policy first removes what it put in the cluster.
/// Decided on a fresh read (the cached policy may not show the finalizer written a moment ago)
/// and written conditioned on it; once seen, not read again in this term.
pub async fn ensure_finalizer(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &EnergyPolicy,
) -> Result<(), Error> {
    if rt.has_finalizer || has_finalizer(policy) {
        rt.has_finalizer = true;
        return Ok(());
    }
    let api: Api<EnergyPolicy> = Api::all(ctx.client.clone());
    let Some(fresh) = api.get_opt(&policy.name_any()).await? else {
        return Ok(());
    };
    if has_finalizer(&fresh) {
        rt.has_finalizer = true;
        return Ok(());
    }
    let mut list = fresh.finalizers().to_vec();
    list.push(keys::POLICY_FINALIZER.into());
    patch_finalizers(ctx, &fresh, list).await?;
    rt.has_finalizer = true;
    Ok(())
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

/// The policy is being deleted: undo its moves in flight (abort: the copy stays until the
/// original runs on its source again), remove its taints and labels and its orphaned copies,
/// withdraw its metrics; the finalizer goes once nothing of it is left.
pub async fn finalize(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &EnergyPolicy,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let name = policy.name_any();
    if !policy
        .finalizers()
        .iter()
        .any(|f| f == keys::POLICY_FINALIZER)
    {
        ctx.metrics.withdraw_policy(&name);
        return Ok(());
    }
    ctx.metrics.withdraw_policy(&name);
    let mut left = 0usize;
    let api = KubeMoves {
        client: ctx.client.clone(),
    };
    // Moves: abort each (idempotent), then drive.
    let mut problems = Vec::new();
    for w in ctx.stores.workloads.state() {
        if Intent::of(&w).is_some_and(|i| i.policy == name) {
            rt.moves
                .entry(MoveKey {
                    namespace: w.namespace().unwrap_or_default(),
                    name: w.name_any(),
                })
                .or_insert(now);
        }
    }
    for key in rt.moves.keys().cloned().collect::<Vec<_>>() {
        let abort = json!({"metadata": {"annotations": {keys::ABORT_MIGRATION: "policy deleted"}}});
        if let Ok(Some(w)) = api.get_workload(&key.namespace, &key.name).await {
            if Intent::of(&w).is_some() && !w.annotations().contains_key(keys::ABORT_MIGRATION) {
                let _ = ctx
                    .fence
                    .guard(api.patch_workload(&key.namespace, &key.name, &abort))
                    .await;
            }
        }
    }
    let timeout = std::time::Duration::from_secs(300);
    execute::drive_moves(ctx, rt, &name, timeout, now, &mut problems).await;
    left += rt.moves.len();
    // Taints and labels this policy put.
    for n in ctx.stores.nodes.state() {
        if n.annotations().get(keys::STARVED_BY).map(String::as_str) == Some(name.as_str()) {
            match ctx
                .actuator
                .set_taint(&ctx.fence, &n.name_any(), &name, false)
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    left += 1;
                    tracing::warn!(policy = %name, node = %n.name_any(), "removing the taint: {e}");
                }
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
    execute::collect_orphans(ctx, rt, &name).await;
    for c in ctx.stores.workloads.state() {
        let ours = c.labels().contains_key(COPY_OF_LABEL)
            && c.annotations().get(crate::mover::COPY_POLICY_ANNOTATION) == Some(&name);
        if ours {
            // The cache may still show a copy just removed: ask the API server.
            let ns = c.namespace().unwrap_or_default();
            if let Ok(Some(fresh)) = api.get_workload(&ns, &c.name_any()).await {
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
