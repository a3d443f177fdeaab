//! Executing a plan and driving moves in flight: the I/O half of a [`Cycle`]. Every outcome
//! becomes a status record and a history entry (through the policy's
//! [`crate::runtime::PolicyRuntime`]), a metric and an Event on the object concerned (read with
//! its uid, so `kubectl describe` shows it).

use std::collections::{HashMap, HashSet};

use edgewatt_crds::{MigrationRecord, MigrationResult, WorkloadKind};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::ResourceExt;

use crate::{
    actuator::{reference, Eviction, WriteError},
    cycle::Cycle,
    migration::Intent,
    mover::{self, Drive, MoveApi, MoveError, MoveKey, Start},
    planner::{Action, Plan, SkipReason, WorkloadId},
    runtime::Evicting,
    snapshot::COPY_OF_LABEL,
    status::rfc3339,
    view::View,
};

/// A move Observe mode would have made.
struct Would<'p> {
    id: &'p WorkloadId,
    from: &'p str,
    to: Option<&'p str>,
    owner: Option<&'p str>,
    siblings: &'p [WorkloadId],
}

/// Leadership is gone: the cycle stops writing.
struct NotLeading;

impl Cycle<'_> {
    /// Drives every EdgeWorkload move of the policy in flight: those its memory knows, and
    /// intents the cache shows that did not end in this term (after a restart the cache is where
    /// they are found; while its watch lags it may still show the intent of a move that just
    /// ended).
    pub(crate) async fn drive_moves(&mut self) {
        for w in self.ctx.stores.workloads.state() {
            let Some(i) = Intent::of(&w).filter(|i| i.policy == self.name) else {
                continue;
            };
            let key = MoveKey {
                namespace: w.namespace().unwrap_or_default(),
                name: w.name_any(),
            };
            self.rt.track_intent(key, i.started_at);
        }
        for key in self.rt.moves() {
            if self.drive_one(&key).await.is_err() {
                return;
            }
        }
        self.rt.prune_ended(self.now);
    }

    /// Drives one move as far as it goes now.
    async fn drive_one(&mut self, key: &MoveKey) -> Result<(), NotLeading> {
        let (ctx, policy) = (self.ctx, self.name.as_str());
        match mover::drive(&ctx.moves, &ctx.fence, policy, key, self.now, self.timeout).await {
            Ok(Drive::InFlight { why, stuck }) => {
                tracing::debug!(policy, workload = %key.name, "move in flight: {why}");
                if stuck {
                    self.problems.push((
                        "MigrationStuck".into(),
                        format!("{}/{}: {why}", key.namespace, key.name),
                    ));
                }
            }
            Ok(Drive::Ended { record, regarding }) => {
                self.ended(key, *record, regarding.map(|r| *r)).await
            }
            Ok(Drive::NoIntent) => self.settle_lost(key).await,
            Err(MoveError::NotLeader(_)) => return Err(NotLeading),
            Err(MoveError::Kube(e)) => {
                tracing::warn!(policy, workload = %key.name, "driving the move: {e}");
            }
        }
        Ok(())
    }

    /// A move ended by this replica's write: memory, metric, Event.
    async fn ended(
        &mut self,
        key: &MoveKey,
        record: MigrationRecord,
        regarding: Option<ObjectReference>,
    ) {
        let (ctx, policy) = (self.ctx, self.name.as_str());
        let result = record.result;
        let note = format!("{}/{}: {}", record.namespace, record.name, record.message);
        if result == MigrationResult::Failed {
            let reason = if record.message.contains("disappeared") {
                "TargetDisappeared"
            } else {
                "ActionsFailed"
            };
            self.problems.push((reason.into(), record.message.clone()));
        }
        if let Some(s) = self.rt.end_move(key, record, self.now) {
            ctx.metrics
                .migration_duration
                .observe((self.now - s).num_milliseconds() as f64 / 1000.0);
        }
        ctx.metrics
            .migration(policy, "EdgeWorkload", result.as_str());
        let (reason, warning) = match result {
            MigrationResult::Succeeded => ("MigrationSucceeded", false),
            MigrationResult::Aborted => ("MigrationAborted", false),
            _ => ("MigrationFailed", true),
        };
        tracing::info!(policy, reason, "{note}");
        if let Some(r) = &regarding {
            ctx.actuator
                .event(&ctx.fence, r, warning, reason, note)
                .await;
        }
    }

    /// A move this memory had in flight carries no intent any more, and not by our write: the
    /// workload was deleted, or another writer removed the annotation. Settled from a fresh read
    /// ([`mover::settle_lost`]); a move left where nothing runs it is resumed once from its
    /// record.
    async fn settle_lost(&mut self, key: &MoveKey) {
        let (ctx, policy) = (self.ctx, self.name.as_str());
        let Some((started, Some(rec))) = self.rt.lose_move(key) else {
            return;
        };
        let to = rec.to.clone().unwrap_or_default();
        let resume = self.rt.first_resume(key);
        let lost = mover::settle_lost(
            &ctx.moves, &ctx.fence, policy, key, &rec.from, &to, started, self.now, resume,
        )
        .await;
        let (result, message) = match lost {
            Ok(mover::Lost::Ended(result, message)) => (result, message),
            Ok(mover::Lost::Resumed) => {
                tracing::warn!(policy, workload = %key.name, "intent annotation removed by another writer; the move is resumed from its record");
                self.rt.keep_moving(key, started);
                return;
            }
            Err(e) => {
                tracing::warn!(policy, workload = %key.name, "settling a move whose intent vanished: {e}");
                self.rt.keep_moving(key, started);
                return;
            }
        };
        tracing::warn!(policy, workload = %key.name, "{message}");
        ctx.metrics
            .migration(policy, "EdgeWorkload", result.as_str());
        let record = MigrationRecord {
            result,
            message,
            finished_at: Some(rfc3339(self.now)),
            ..rec
        };
        self.rt.end_move(key, record, self.now);
    }

    /// Removes this policy's copies whose original has no intent any more (see
    /// [`mover::collect_orphan`]).
    pub(crate) async fn collect_orphans(&self) {
        let (ctx, policy) = (self.ctx, self.name.as_str());
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
            if self.rt.is_moving(&key) {
                continue;
            }
            match mover::collect_orphan(&ctx.moves, &ctx.fence, &c).await {
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
    pub(crate) fn track_evictions(&mut self) {
        if self.rt.evicting() == 0 {
            return;
        }
        let pods: HashMap<(String, String), Option<String>> = self
            .ctx
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
        self.rt.track_evictions(|id, evicted_uid| {
            pods.get(&(id.namespace.clone(), id.name.clone()))
                .is_some_and(|uid| evicted_uid.is_none() || uid.as_deref() == evicted_uid)
        });
    }

    /// Events, on change only, for workloads kept by a PDB with no disruption left or refused
    /// make-before-break.
    pub(crate) async fn skipped_events(&mut self, plan: &Plan, pods: &[std::sync::Arc<Pod>]) {
        let ctx = self.ctx;
        let with = |r: fn(&SkipReason) -> bool| -> HashSet<WorkloadId> {
            plan.skipped
                .iter()
                .filter(|s| r(&s.reason))
                .map(|s| s.workload.clone())
                .collect()
        };
        let blocked = with(|r| *r == SkipReason::DisruptionBudget);
        for id in self.rt.newly_pdb_blocked(blocked) {
            if let Some(p) = pods.iter().find(|p| {
                p.namespace().as_deref() == Some(&id.namespace) && p.name_any() == id.name
            }) {
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
        let refused = with(|r| matches!(r, SkipReason::Refused(_)));
        for id in self.rt.newly_refused(refused) {
            let why = plan
                .skipped
                .iter()
                .find(|s| s.workload == id)
                .map(|s| s.reason.to_string())
                .unwrap_or_default();
            if let Ok(Some(w)) = ctx.moves.get_workload(&id.namespace, &id.name).await {
                ctx.actuator
                    .event(&ctx.fence, &reference(&w), true, "MigrationRefused", why)
                    .await;
            }
        }
    }

    /// Executes the plan's actions (Migrate mode): taints and labels first (evictions depend on
    /// the taint being in place), then evictions and move starts.
    pub(crate) async fn execute(&mut self, plan: &Plan, view: &View) {
        let Ok(untainted) = self.taints_and_labels(plan).await else {
            return;
        };
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
                    self.evict(pod, node, (owner.as_deref(), siblings), view)
                        .await
                }
                Action::MigrateEdgeWorkload { workload, from, to } => {
                    self.start_move(workload, from, to).await
                }
                _ => Ok(()),
            };
            if done.is_err() {
                return;
            }
        }
    }

    /// The plan's taints and device labels (with the workloads that leave through a label).
    /// Returns the nodes whose taint could not be placed: nothing is evicted from them.
    async fn taints_and_labels<'p>(
        &mut self,
        plan: &'p Plan,
    ) -> Result<HashSet<&'p str>, NotLeading> {
        let (ctx, policy) = (self.ctx, self.name.clone());
        let mut untainted: HashSet<&str> = HashSet::new();
        for a in &plan.actions {
            let r = match a {
                Action::Taint { node } | Action::Untaint { node } => {
                    let on = matches!(a, Action::Taint { .. });
                    let r = ctx.actuator.set_taint(&ctx.fence, node, &policy, on).await;
                    if on && r.is_err() {
                        untainted.insert(node);
                    }
                    r.map(|(reference, wrote)| {
                        wrote.then_some((
                            reference,
                            if on { "NodeTainted" } else { "NodeUntainted" },
                        ))
                    })
                    .map_err(|e| (format!("taint {node}"), e))
                }
                Action::LabelDevice { device, .. } | Action::UnlabelDevice { device } => {
                    let on = matches!(a, Action::LabelDevice { .. });
                    let ns = device.namespace.clone().unwrap_or_default();
                    let r = ctx
                        .actuator
                        .set_device_label(&ctx.fence, &ns, &device.name, &policy, on)
                        .await;
                    if let (Ok(_), Action::LabelDevice { leaving, .. }) = (&r, a) {
                        self.leave_by_label(&device.name, leaving).await;
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
                Err((_, WriteError::NotLeader(_))) => return Err(NotLeading),
                Err((what, WriteError::Kube(e))) => self
                    .problems
                    .push(("ActionsFailed".into(), format!("{what}: {e}"))),
            }
        }
        Ok(untainted)
    }

    /// Records the selector-placed workloads that leave `device` through its label.
    async fn leave_by_label(&mut self, device: &str, leaving: &[WorkloadId]) {
        let (ctx, policy) = (self.ctx, self.name.as_str());
        for id in leaving {
            ctx.metrics.migration(policy, "EdgeWorkload", "Succeeded");
            let message = format!(
                "leaves {device}: its deviceSelector excludes the {} label (Flotta removes it); it keeps running on its other devices",
                edgewatt_crds::keys::STARVED_LABEL
            );
            if let Ok(Some(w)) = ctx.moves.get_workload(&id.namespace, &id.name).await {
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
            let record = MigrationRecord {
                kind: WorkloadKind::EdgeWorkload,
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                from: device.to_string(),
                to: None,
                owner: None,
                started_at: rfc3339(self.now),
                finished_at: Some(rfc3339(self.now)),
                result: MigrationResult::Succeeded,
                message,
            };
            self.rt.left_by_label(id.clone(), record, self.now);
        }
    }

    /// One eviction.
    async fn evict(
        &mut self,
        pod: &WorkloadId,
        node: &str,
        (owner, siblings): (Option<&str>, &[WorkloadId]),
        view: &View,
    ) -> Result<(), NotLeading> {
        let (ctx, policy, now) = (self.ctx, self.name.as_str(), self.now);
        let seen = view
            .pods
            .iter()
            .find(|p| p.namespace().as_deref() == Some(&pod.namespace) && p.name_any() == pod.name);
        let uid = seen.and_then(|p| p.metadata.uid.clone());
        let outcome = ctx
            .actuator
            .evict(&ctx.fence, &pod.namespace, &pod.name, uid.as_deref())
            .await
            .map_err(|_| NotLeading)?;
        let (result, reason, message) = match &outcome {
            Eviction::Evicted => (
                MigrationResult::Succeeded,
                "PodEvicted",
                format!("evicted from {node}"),
            ),
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
                self.problems.push((
                    "ActionsFailed".into(),
                    format!("evict {}/{}: {m}", pod.namespace, pod.name),
                ));
                (MigrationResult::Failed, "EvictionFailed", m.clone())
            }
        };
        ctx.metrics.migration(policy, "Pod", result.as_str());
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
        let record = MigrationRecord {
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
        };
        if outcome == Eviction::Evicted {
            let evicting = Evicting {
                uid,
                node: node.to_string(),
            };
            self.rt
                .begin_eviction(pod, (owner, siblings), evicting, record, now);
        } else {
            self.rt.record(record);
        }
        Ok(())
    }

    /// Starts one EdgeWorkload move and drives it as far as it goes now (the copy is created in
    /// the same cycle).
    async fn start_move(
        &mut self,
        workload: &WorkloadId,
        from: &str,
        to: &str,
    ) -> Result<(), NotLeading> {
        let (ctx, policy, now) = (self.ctx, self.name.as_str(), self.now);
        let key = MoveKey {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        };
        let intent = Intent::new(
            policy,
            &key.name,
            from,
            to,
            self.spec().action.strategy,
            now,
        );
        let (intent, regarding) = match mover::start(&ctx.moves, &ctx.fence, &key, intent).await {
            Ok(Start::Started { intent, regarding }) => (*intent, *regarding),
            Ok(Start::Stale(why)) => {
                tracing::info!(policy, workload = %key.name, "move not started: {why}");
                return Ok(());
            }
            Err(MoveError::NotLeader(_)) => return Err(NotLeading),
            Err(MoveError::Kube(e)) => {
                self.problems.push((
                    "ActionsFailed".into(),
                    format!("start moving {}/{}: {e}", key.namespace, key.name),
                ));
                return Ok(());
            }
        };
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
        let record = mover::record(&key, &intent, MigrationResult::InProgress, message, None);
        self.rt
            .begin_move(key.clone(), intent.started_at, record, now);
        self.drive_one(&key).await
    }

    /// Observe mode: what would have been done, as DryRun records, metrics and Events.
    pub(crate) async fn dry_run(&mut self, policy_ref: &ObjectReference, plan: &Plan) {
        let (ctx, policy, now) = (self.ctx, self.name.as_str(), self.now);
        for a in &plan.dry_run {
            let would = |id, from, to, owner, siblings| Would {
                id,
                from,
                to,
                owner,
                siblings,
            };
            let moves: Vec<Would> = match a {
                Action::Evict {
                    pod,
                    node,
                    owner,
                    siblings,
                } => vec![would(pod, node, None, owner.as_deref(), siblings)],
                Action::MigrateEdgeWorkload { workload, from, to } => {
                    vec![would(workload, from, Some(to), None, &[])]
                }
                Action::LabelDevice { device, leaving } => leaving
                    .iter()
                    .map(|w| would(w, &device.name, None, None, &[]))
                    .collect(),
                _ => continue,
            };
            for Would {
                id,
                from,
                to,
                owner,
                siblings,
            } in moves
            {
                ctx.metrics.migration(policy, id.kind.as_str(), "DryRun");
                let message = format!(
                    "Observe mode: would move {} from {from}{}",
                    id.name,
                    to.map(|t| format!(" to {t}")).unwrap_or_default()
                );
                ctx.actuator
                    .event(&ctx.fence, policy_ref, false, "DryRun", message.clone())
                    .await;
                let record = MigrationRecord {
                    kind: id.kind,
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                    from: from.to_string(),
                    to: to.map(String::from),
                    owner: owner.map(String::from),
                    started_at: rfc3339(now),
                    finished_at: Some(rfc3339(now)),
                    result: MigrationResult::DryRun,
                    message,
                };
                self.rt.dry_run(id, (owner, siblings), record, now);
            }
        }
    }
}
