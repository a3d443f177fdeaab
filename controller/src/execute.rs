//! Executing a plan and driving moves in flight: the I/O half of a cycle. Every outcome becomes
//! a status record, a metric and an Event on the object concerned (read with its uid, so
//! `kubectl describe` shows it).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use edgewatt_crds::{EnergyPolicySpec, MigrationRecord, MigrationResult, WorkloadKind};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::ResourceExt;

use crate::{
    actuator::{reference, Eviction, WriteError},
    cycle::{Evicting, PolicyRuntime, View},
    migration::Intent,
    mover::{self, Drive, KubeMoves, MoveApi, MoveError, MoveKey, Start},
    planner::{Action, Plan, SkipReason, WorkloadId},
    reconciler::Context,
    snapshot::COPY_OF_LABEL,
    status::{push_record, Problem},
};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn kind_str(k: WorkloadKind) -> &'static str {
    match k {
        WorkloadKind::Pod => "Pod",
        WorkloadKind::EdgeWorkload => "EdgeWorkload",
    }
}

pub fn result_str(r: MigrationResult) -> &'static str {
    match r {
        MigrationResult::InProgress => "InProgress",
        MigrationResult::Succeeded => "Succeeded",
        MigrationResult::Failed => "Failed",
        MigrationResult::Blocked => "Blocked",
        MigrationResult::Aborted => "Aborted",
        MigrationResult::DryRun => "DryRun",
    }
}

fn workload_id(key: &MoveKey) -> WorkloadId {
    WorkloadId {
        kind: WorkloadKind::EdgeWorkload,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

/// Drives every EdgeWorkload move of `policy` in flight: those this runtime knows, and intents the
/// cache shows that did not end in this term (after a restart the cache is where they are found;
/// while its watch lags it may still show the intent of a move that just ended).
pub async fn drive_moves(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    timeout: std::time::Duration,
    now: DateTime<Utc>,
    problems: &mut Vec<Problem>,
) {
    for w in ctx.stores.workloads.state() {
        let Some(i) = Intent::of(&w).filter(|i| i.policy == policy) else {
            continue;
        };
        let key = MoveKey {
            namespace: w.namespace().unwrap_or_default(),
            name: w.name_any(),
        };
        if rt.ended.get(&key) != Some(&i.started_at) {
            rt.moves.entry(key).or_insert(i.started_at);
        }
    }
    let api = KubeMoves {
        client: ctx.client.clone(),
    };
    let keys: Vec<MoveKey> = rt.moves.keys().cloned().collect();
    for key in keys {
        if drive_one(ctx, rt, &api, policy, &key, timeout, now, problems)
            .await
            .is_err()
        {
            return; // not the leader any more
        }
    }
    let day_ago = now - chrono::Duration::days(1);
    rt.ended.retain(|_, started| *started > day_ago);
}

/// Drives one move; `Err` only when leadership is gone.
#[allow(clippy::too_many_arguments)]
async fn drive_one(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    api: &KubeMoves,
    policy: &str,
    key: &MoveKey,
    timeout: std::time::Duration,
    now: DateTime<Utc>,
    problems: &mut Vec<Problem>,
) -> Result<(), ()> {
    match mover::drive(api, &ctx.fence, policy, key, now, timeout).await {
        Ok(Drive::InFlight { why, stuck }) => {
            tracing::debug!(policy, workload = %key.name, "move in flight: {why}");
            if stuck {
                problems.push((
                    "MigrationStuck".into(),
                    format!("{}/{}: {why}", key.namespace, key.name),
                ));
            }
        }
        Ok(Drive::Ended { record, regarding }) => {
            ended(
                ctx,
                rt,
                policy,
                key,
                *record,
                regarding.map(|r| *r),
                now,
                problems,
            )
            .await
        }
        Ok(Drive::NoIntent) => settle_lost(ctx, rt, api, policy, key, now).await,
        Err(MoveError::NotLeader(_)) => return Err(()),
        Err(MoveError::Kube(e)) => {
            tracing::warn!(policy, workload = %key.name, "driving the move: {e}");
        }
    }
    Ok(())
}

/// A move ended by this replica's write: record, metric, Event.
#[allow(clippy::too_many_arguments)]
async fn ended(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    key: &MoveKey,
    record: MigrationRecord,
    regarding: Option<ObjectReference>,
    now: DateTime<Utc>,
    problems: &mut Vec<Problem>,
) {
    let started = rt.moves.remove(key);
    if let Some(s) = started {
        rt.ended.insert(key.clone(), s);
        ctx.metrics
            .migration_duration
            .observe((now - s).num_milliseconds() as f64 / 1000.0);
    }
    rt.history.ended(workload_id(key), now);
    let result = record.result;
    ctx.metrics
        .migration(policy, "EdgeWorkload", result_str(result));
    let (reason, warning) = match result {
        MigrationResult::Succeeded => ("MigrationSucceeded", false),
        MigrationResult::Aborted => ("MigrationAborted", false),
        _ => ("MigrationFailed", true),
    };
    let note = format!("{}/{}: {}", record.namespace, record.name, record.message);
    tracing::info!(policy, reason, "{note}");
    if let Some(r) = &regarding {
        ctx.actuator
            .event(&ctx.fence, r, warning, reason, note)
            .await;
    }
    if result == MigrationResult::Failed {
        let reason = if record.message.contains("disappeared") {
            "TargetDisappeared"
        } else {
            "ActionsFailed"
        };
        problems.push((reason.into(), record.message.clone()));
    }
    push_record(&mut rt.migrations, record);
}

/// A move this runtime had in flight carries no intent any more, and not by our write: the
/// workload was deleted, or another writer removed the annotation. Settled from a fresh read
/// ([`mover::settle_lost`]); a move left where nothing runs it is resumed once from its record.
async fn settle_lost(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    api: &KubeMoves,
    policy: &str,
    key: &MoveKey,
    now: DateTime<Utc>,
) {
    let Some(started) = rt.moves.remove(key) else {
        return;
    };
    rt.ended.insert(key.clone(), started);
    let started_s = rfc3339(started);
    let Some(rec) = rt
        .migrations
        .iter()
        .find(|r| {
            r.kind == WorkloadKind::EdgeWorkload
                && r.namespace == key.namespace
                && r.name == key.name
                && r.started_at == started_s
                && r.result == MigrationResult::InProgress
        })
        .cloned()
    else {
        return;
    };
    let to = rec.to.clone().unwrap_or_default();
    let resume = rt.resumed.insert(key.clone());
    let lost = mover::settle_lost(
        api, &ctx.fence, policy, key, &rec.from, &to, started, now, resume,
    )
    .await;
    let (result, message) = match lost {
        Ok(mover::Lost::Ended(result, message)) => (result, message),
        Ok(mover::Lost::Resumed) => {
            tracing::warn!(policy, workload = %key.name, "intent annotation removed by another writer; the move is resumed from its record");
            rt.ended.remove(key);
            rt.moves.insert(key.clone(), started);
            return;
        }
        Err(e) => {
            tracing::warn!(policy, workload = %key.name, "settling a move whose intent vanished: {e}");
            rt.ended.remove(key);
            rt.moves.insert(key.clone(), started);
            return;
        }
    };
    tracing::warn!(policy, workload = %key.name, "{message}");
    ctx.metrics
        .migration(policy, "EdgeWorkload", result_str(result));
    rt.history.ended(workload_id(key), now);
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

/// Removes this policy's copies whose original has no intent any more (see
/// [`mover::collect_orphan`]).
pub async fn collect_orphans(ctx: &Context, rt: &PolicyRuntime, policy: &str) {
    let api = KubeMoves {
        client: ctx.client.clone(),
    };
    for c in ctx.stores.workloads.state() {
        if !c.labels().contains_key(COPY_OF_LABEL) || c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let by = c.annotations().get(mover::COPY_POLICY_ANNOTATION);
        if by.is_some_and(|p| p != policy) {
            continue;
        }
        let original = c
            .annotations()
            .get(mover::COPY_OF_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let key = MoveKey {
            namespace: c.namespace().unwrap_or_default(),
            name: original,
        };
        if rt.moves.contains_key(&key) {
            continue;
        }
        match mover::collect_orphan(&api, &ctx.fence, &c).await {
            Ok(true) => {
                tracing::info!(policy, copy = %c.name_any(), "orphaned migration copy removed (its original has no move in flight)")
            }
            Ok(false) => {}
            Err(MoveError::NotLeader(_)) => return,
            Err(MoveError::Kube(e)) => {
                tracing::warn!(policy, copy = %c.name_any(), "collecting an orphaned copy: {e}")
            }
        }
    }
}

/// Evicted pods count in flight until *that* pod (by uid) is gone from the cache: a pod in
/// graceful deletion still runs.
pub fn track_evictions(ctx: &Context, rt: &mut PolicyRuntime) {
    if rt.evicting.is_empty() {
        return;
    }
    let pods: HashMap<(String, String), Option<String>> = ctx
        .stores
        .pods
        .state()
        .iter()
        .map(|p| {
            (
                (p.namespace().unwrap_or_default(), p.name_any()),
                p.metadata.uid.clone(),
            )
        })
        .collect();
    rt.evicting.retain(|id, e| {
        pods.get(&(id.namespace.clone(), id.name.clone()))
            .is_some_and(|uid| e.uid.is_none() || *uid == e.uid)
    });
}

/// Events, on change only, for workloads kept by a PDB with no disruption left or refused
/// make-before-break.
pub async fn skipped_events(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    plan: &Plan,
    pods: &[std::sync::Arc<Pod>],
) {
    let with = |r: fn(&SkipReason) -> bool| -> HashSet<WorkloadId> {
        plan.skipped
            .iter()
            .filter(|s| r(&s.reason))
            .map(|s| s.workload.clone())
            .collect()
    };
    let blocked = with(|r| *r == SkipReason::DisruptionBudget);
    for id in blocked.difference(&rt.pdb_blocked) {
        if let Some(p) = pods
            .iter()
            .find(|p| p.namespace().as_deref() == Some(&id.namespace) && p.name_any() == id.name)
        {
            let note = format!(
                "{}; not evicted, retried later",
                SkipReason::DisruptionBudget
            );
            ctx.actuator
                .event(
                    &ctx.fence,
                    &reference(p.as_ref()),
                    true,
                    "EvictionSkipped",
                    note,
                )
                .await;
        }
    }
    rt.pdb_blocked = blocked;
    let refused = with(|r| matches!(r, SkipReason::Refused(_)));
    let api = KubeMoves {
        client: ctx.client.clone(),
    };
    for id in refused.difference(&rt.refused) {
        let why = plan
            .skipped
            .iter()
            .find(|s| &s.workload == id)
            .map(|s| s.reason.to_string())
            .unwrap_or_default();
        if let Ok(Some(w)) = api.get_workload(&id.namespace, &id.name).await {
            ctx.actuator
                .event(&ctx.fence, &reference(&w), true, "MigrationRefused", why)
                .await;
        }
    }
    rt.refused = refused;
}

/// Executes the plan's actions (Migrate mode): taints and labels first (evictions depend on the
/// taint being in place), then evictions and move starts.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    spec: &EnergyPolicySpec,
    plan: &Plan,
    view: &View,
    timeout: std::time::Duration,
    now: DateTime<Utc>,
    problems: &mut Vec<Problem>,
) {
    let mut untainted: HashSet<&str> = HashSet::new();
    for a in &plan.actions {
        let r = match a {
            Action::Taint { node } | Action::Untaint { node } => {
                let on = matches!(a, Action::Taint { .. });
                let r = ctx.actuator.set_taint(&ctx.fence, node, policy, on).await;
                if on && r.is_err() {
                    untainted.insert(node);
                }
                r.map(|(reference, wrote)| {
                    wrote.then_some((reference, if on { "NodeTainted" } else { "NodeUntainted" }))
                })
                .map_err(|e| (format!("taint {node}"), e))
            }
            Action::LabelDevice { device, .. } | Action::UnlabelDevice { device } => {
                let on = matches!(a, Action::LabelDevice { .. });
                let ns = device.namespace.clone().unwrap_or_default();
                let r = ctx
                    .actuator
                    .set_device_label(&ctx.fence, &ns, &device.name, policy, on)
                    .await;
                if let (Ok(_), Action::LabelDevice { leaving, .. }) = (&r, a) {
                    leave_by_label(ctx, rt, policy, &device.name, leaving, now).await;
                }
                r.map(|(reference, wrote)| {
                    wrote.then_some((
                        reference,
                        if on {
                            "DeviceLabelled"
                        } else {
                            "DeviceUnlabelled"
                        },
                    ))
                })
                .map_err(|e| (format!("label {}/{}", ns, device.name), e))
            }
            _ => continue,
        };
        match r {
            Ok(Some((reference, reason))) => {
                let note = format!("{reason} by EnergyPolicy {policy}");
                ctx.actuator
                    .event(&ctx.fence, &reference, false, reason, note)
                    .await;
            }
            Ok(None) => {}
            Err((_, WriteError::NotLeader(_))) => return,
            Err((what, WriteError::Kube(e))) => {
                problems.push(("ActionsFailed".into(), format!("{what}: {e}")))
            }
        }
    }
    for a in &plan.actions {
        let done = match a {
            Action::Evict {
                pod,
                node,
                owner,
                siblings,
            } => {
                if untainted.contains(node.as_str()) {
                    continue; // never evict onto a node that could take the pod straight back
                }
                evict(
                    ctx,
                    rt,
                    policy,
                    pod,
                    node,
                    (owner.as_deref(), siblings),
                    view,
                    now,
                    problems,
                )
                .await
            }
            Action::MigrateEdgeWorkload { workload, from, to } => {
                start_move(
                    ctx, rt, policy, spec, workload, from, to, timeout, now, problems,
                )
                .await
            }
            _ => Ok(()),
        };
        if done.is_err() {
            return;
        }
    }
}

/// Records the selector-placed workloads that leave `device` through its label.
async fn leave_by_label(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    device: &str,
    leaving: &[WorkloadId],
    now: DateTime<Utc>,
) {
    let api = KubeMoves {
        client: ctx.client.clone(),
    };
    for id in leaving {
        rt.history.record(id.clone(), None, now);
        rt.migration_count += 1;
        ctx.metrics.migration(policy, "EdgeWorkload", "Succeeded");
        let message = format!(
            "leaves {device}: its deviceSelector excludes the {} label (Flotta removes it); it keeps running on its other devices",
            edgewatt_crds::keys::STARVED_LABEL
        );
        if let Ok(Some(w)) = api.get_workload(&id.namespace, &id.name).await {
            ctx.actuator
                .event(
                    &ctx.fence,
                    &reference(&w),
                    false,
                    "MigrationSucceeded",
                    message.clone(),
                )
                .await;
        }
        push_record(
            &mut rt.migrations,
            MigrationRecord {
                kind: WorkloadKind::EdgeWorkload,
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                from: device.to_string(),
                to: None,
                owner: None,
                started_at: rfc3339(now),
                finished_at: Some(rfc3339(now)),
                result: MigrationResult::Succeeded,
                message,
            },
        );
    }
}

/// One eviction; `Err` only when leadership is gone.
#[allow(clippy::too_many_arguments)]
async fn evict(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    pod: &WorkloadId,
    node: &str,
    (owner, siblings): (Option<&str>, &[WorkloadId]),
    view: &View,
    now: DateTime<Utc>,
    problems: &mut Vec<Problem>,
) -> Result<(), ()> {
    let seen = view
        .pods
        .iter()
        .find(|p| p.namespace().as_deref() == Some(&pod.namespace) && p.name_any() == pod.name);
    let uid = seen.and_then(|p| p.metadata.uid.clone());
    let outcome = ctx
        .actuator
        .evict(&ctx.fence, &pod.namespace, &pod.name, uid.as_deref())
        .await
        .map_err(|_| ())?;
    let (result, reason, message) = match &outcome {
        Eviction::Evicted => {
            rt.history.record_eviction(pod, owner, siblings, now);
            rt.evicting.insert(
                pod.clone(),
                Evicting {
                    uid: uid.clone(),
                    node: node.to_string(),
                },
            );
            rt.migration_count += 1;
            (
                MigrationResult::Succeeded,
                "PodEvicted",
                format!("evicted from {node}"),
            )
        }
        Eviction::Blocked(m) => (
            MigrationResult::Blocked,
            "EvictionBlocked",
            format!("eviction blocked, retried next cycle: {m}"),
        ),
        Eviction::Throttled(m) => {
            tracing::info!(policy, pod = %pod.name, "eviction not attempted this cycle: {m}");
            return Ok(());
        }
        Eviction::Gone => return Ok(()),
        Eviction::Failed(m) => {
            problems.push((
                "ActionsFailed".into(),
                format!("evict {}/{}: {m}", pod.namespace, pod.name),
            ));
            (MigrationResult::Failed, "EvictionFailed", m.clone())
        }
    };
    ctx.metrics.migration(policy, "Pod", result_str(result));
    if let Some(p) = seen {
        let warning = result != MigrationResult::Succeeded;
        ctx.actuator
            .event(
                &ctx.fence,
                &reference(p.as_ref()),
                warning,
                reason,
                message.clone(),
            )
            .await;
    }
    push_record(
        &mut rt.migrations,
        MigrationRecord {
            kind: WorkloadKind::Pod,
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            from: node.to_string(),
            to: None,
            owner: owner.map(String::from),
            started_at: rfc3339(now),
            finished_at: Some(rfc3339(now)),
            result,
            message,
        },
    );
    Ok(())
}

/// Starts one EdgeWorkload move and drives it as far as it goes now (the copy is created in the
/// same cycle). `Err` only when leadership is gone.
#[allow(clippy::too_many_arguments)]
async fn start_move(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    spec: &EnergyPolicySpec,
    workload: &WorkloadId,
    from: &str,
    to: &str,
    timeout: std::time::Duration,
    now: DateTime<Utc>,
    problems: &mut Vec<Problem>,
) -> Result<(), ()> {
    let api = KubeMoves {
        client: ctx.client.clone(),
    };
    let key = MoveKey {
        namespace: workload.namespace.clone(),
        name: workload.name.clone(),
    };
    let intent = Intent::new(policy, &key.name, from, to, spec.action.strategy, now);
    let (intent, regarding) = match mover::start(&api, &ctx.fence, &key, intent).await {
        Ok(Start::Started { intent, regarding }) => (*intent, *regarding),
        Ok(Start::Stale(why)) => {
            tracing::info!(policy, workload = %key.name, "move not started: {why}");
            return Ok(());
        }
        Err(MoveError::NotLeader(_)) => return Err(()),
        Err(MoveError::Kube(e)) => {
            problems.push((
                "ActionsFailed".into(),
                format!("start moving {}/{}: {e}", key.namespace, key.name),
            ));
            return Ok(());
        }
    };
    rt.moves.insert(key.clone(), intent.started_at);
    rt.history.record(workload.clone(), None, now);
    rt.migration_count += 1;
    ctx.metrics.migration(policy, "EdgeWorkload", "Started");
    let message = format!("moving from {from} to {to} ({:?})", intent.strategy);
    tracing::info!(policy, workload = %key.name, "{message}");
    ctx.actuator
        .event(
            &ctx.fence,
            &regarding,
            false,
            "MigrationStarted",
            message.clone(),
        )
        .await;
    push_record(
        &mut rt.migrations,
        mover::record(&key, &intent, MigrationResult::InProgress, message, None),
    );
    drive_one(ctx, rt, &api, policy, &key, timeout, now, problems).await
}

/// Observe mode: what would have been done, as DryRun records, metrics and Events.
pub async fn dry_run(
    ctx: &Context,
    rt: &mut PolicyRuntime,
    policy: &str,
    policy_ref: &ObjectReference,
    plan: &Plan,
    now: DateTime<Utc>,
) {
    for a in &plan.dry_run {
        let moves: Vec<(WorkloadId, String, Option<String>, Option<String>)> = match a {
            Action::Evict {
                pod,
                node,
                owner,
                siblings,
            } => {
                rt.history
                    .record_eviction(pod, owner.as_deref(), siblings, now);
                vec![(pod.clone(), node.clone(), None, owner.clone())]
            }
            Action::MigrateEdgeWorkload { workload, from, to } => {
                rt.history.record(workload.clone(), None, now);
                vec![(workload.clone(), from.clone(), Some(to.clone()), None)]
            }
            Action::LabelDevice { device, leaving } => leaving
                .iter()
                .map(|w| {
                    rt.history.record(w.clone(), None, now);
                    (w.clone(), device.name.clone(), None, None)
                })
                .collect(),
            _ => continue,
        };
        for (id, from, to, owner) in moves {
            ctx.metrics.migration(policy, kind_str(id.kind), "DryRun");
            let message = format!(
                "Observe mode: would move {} from {from}{}",
                id.name,
                to.as_ref().map(|t| format!(" to {t}")).unwrap_or_default()
            );
            ctx.actuator
                .event(&ctx.fence, policy_ref, false, "DryRun", message.clone())
                .await;
            push_record(
                &mut rt.migrations,
                MigrationRecord {
                    kind: id.kind,
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                    from,
                    to,
                    owner,
                    started_at: rfc3339(now),
                    finished_at: Some(rfc3339(now)),
                    result: MigrationResult::DryRun,
                    message,
                },
            );
        }
    }
}
