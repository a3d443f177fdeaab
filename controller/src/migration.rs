//! Moving one EdgeWorkload between Flotta devices, as a pure state machine.
//!
//! [`next_step`] decides the one next write of a move from the [`Intent`] stored on the workload
//! and what the cluster shows *now* ([`Observed`], built by the executor from fresh reads, never
//! from a cache that may lag), with no I/O and no clock. The executor (`mover`) performs the step,
//! reads again and asks again, so the same code starts, resumes after a restart or failover, and
//! undoes a move.
//!
//! # Make-before-break
//! Flotta keys a device's `status.workloads[]` by EdgeWorkload name, so "the workload on two
//! devices at once" needs a second object: a temporary copy (`<name>-edgewatt-copy`, owned by the
//! original so deleting the original removes it).
//! 1. `Copying`: create the copy pinned to the target; wait until the target reports it Running.
//! 2. `Repointed`: point the original at the target (Flotta removes it from the source; the copy
//!    serves meanwhile); wait until the target reports the original Running; delete the copy.
//! 3. Done: the intent annotation goes.
//!
//! **Recreate** starts at `Repointed` (intent and `spec.device` in one patch), with no copy.
//!
//! # Undo, and the invariant
//! A workload that was Running somewhere is never left with zero instances that were last seen
//! Running: **the copy is deleted only while the original is seen Running**, or while the copy
//! itself is not Running. So an undo after the original was re-pointed (timeout, abort, target
//! gone) first points the original back at its source (`RollingBack`) and keeps the copy until
//! the original runs there again; if it never does, the copy keeps serving and the move is
//! reported stuck rather than taking the last instance down.
//!
//! Two instances that cannot share a device (host ports, host network) would make step 2 fail
//! on every device; the planner refuses make-before-break for such workloads with a reason
//! (see `snapshot::host_bound`), and this machine stays safe even if one is started anyway.

use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{keys, EdgeWorkload, MigrationResult, Strategy};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

/// Where a move stands, stored in the intent annotation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Phase {
    /// Make-before-break: the copy is being created / waited for on the target.
    Copying,
    /// The original points at the target; waiting for it to run there.
    Repointed,
    /// Being undone: the original points back at its source; the copy (if any) stays until the
    /// original runs there.
    RollingBack,
}

/// How an undone move ends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum UndoKind {
    Failed,
    Aborted,
}

impl From<UndoKind> for MigrationResult {
    fn from(k: UndoKind) -> Self {
        match k {
            UndoKind::Failed => MigrationResult::Failed,
            UndoKind::Aborted => MigrationResult::Aborted,
        }
    }
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
    /// Name of the temporary copy (make-before-break).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// `spec.device` before the move, restored on undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repointed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// Why the move is being undone, and how it will be recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<(UndoKind, String)>,
}

impl Intent {
    /// A new move of a workload now on `from` (its `spec.device`).
    pub fn new(
        policy: &str,
        workload: &str,
        from: &str,
        to: &str,
        strategy: Strategy,
        now: DateTime<Utc>,
    ) -> Self {
        let mbb = strategy == Strategy::MakeBeforeBreak;
        Self {
            policy: policy.into(),
            from: from.into(),
            to: to.into(),
            started_at: now,
            strategy,
            phase: if mbb {
                Phase::Copying
            } else {
                Phase::Repointed
            },
            copy: mbb.then(|| copy_name(workload)),
            original_device: Some(from.into()),
            repointed_at: (!mbb).then_some(now),
            rolled_back_at: None,
            undo: None,
        }
    }

    /// The intent on `w`, if any (unparseable annotations are ignored, not acted on).
    pub fn of(w: &EdgeWorkload) -> Option<Intent> {
        serde_json::from_str(w.annotations().get(keys::MIGRATION_INTENT)?).ok()
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("an intent serialises")
    }

    /// Where the original goes back to on undo.
    pub fn undo_device(&self) -> &str {
        self.original_device.as_deref().unwrap_or(&self.from)
    }
}

const COPY_SUFFIX: &str = "-edgewatt-copy";

/// FNV-1a, for short stable name suffixes (no dependency, same on every replica).
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

/// Name of the make-before-break copy of `name`: `<name>-edgewatt-copy`, at most 253 characters
/// (a truncated name gets a hash so two long names cannot share a copy).
pub fn copy_name(name: &str) -> String {
    if name.len() + COPY_SUFFIX.len() <= 253 {
        return format!("{name}{COPY_SUFFIX}");
    }
    let keep = 253 - COPY_SUFFIX.len() - 9;
    let base: String = name.chars().take(keep).collect();
    format!("{base}-{}{COPY_SUFFIX}", short_hash(name))
}

/// Value of the copy's `edgewatt.io/migration-copy-of` label: the original's name when it fits a
/// label value (63 characters), else a prefix and a hash. The full name is in the annotation of
/// the same key.
pub fn copy_label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let prefix: String = name.chars().take(54).collect();
    let prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}-{}", short_hash(name))
}

/// The copy object as the cluster shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    Absent,
    Present,
    /// Deleted, still held by a finalizer (Flotta's own on EdgeWorkloads).
    Terminating,
}

/// What a fresh read of the cluster shows for one move.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The original's `spec.device`; `None` when the original is gone or being deleted.
    pub original: Option<Option<String>>,
    pub copy: CopyState,
    /// The target device exists.
    pub target_exists: bool,
    /// The target device reports the copy Running.
    pub copy_running: bool,
    /// The device the original now points at reports it Running.
    pub original_running: bool,
    /// `edgewatt.io/abort-migration` is set on the original.
    pub abort: bool,
}

/// The one next thing to do for a move.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to write now. `stuck`: an undo cannot complete safely (the copy is the only
    /// running instance) and needs an operator.
    Wait { why: String, stuck: bool },
    /// Create the copy on the target.
    CreateCopy,
    /// Point the original at `device` and store `intent`, in one patch.
    Repoint { device: String, intent: Intent },
    /// Delete the copy.
    DeleteCopy,
    /// Remove the intent (if the original still exists): the move ended.
    Finish {
        result: MigrationResult,
        message: String,
    },
}

fn wait(why: String) -> Step {
    Step::Wait { why, stuck: false }
}

/// The next step of the move `i`, given what the cluster shows now. Pure.
pub fn next_step(i: &Intent, o: &Observed, now: DateTime<Utc>, timeout: Duration) -> Step {
    let Some(device) = &o.original else {
        // Deleted by its owner mid-move: the copy goes with it (an ownerReference does the same
        // wherever a garbage collector runs).
        return match o.copy {
            CopyState::Present => Step::DeleteCopy,
            CopyState::Terminating => wait("copy being removed".into()),
            CopyState::Absent => Step::Finish {
                result: MigrationResult::Failed,
                message: "the workload was deleted mid-move; its copy was removed".into(),
            },
        };
    };
    let expired = |since: DateTime<Utc>| (now - since).to_std().unwrap_or_default() > timeout;
    let timeout_s = edgewatt_crds::duration::format(timeout);
    match i.phase {
        Phase::Copying => {
            if device.as_deref() != Some(i.from.as_str()) {
                let why = moved_by_someone_else(device);
                return rolled_back(i, o, UndoKind::Failed, &why, false);
            }
            let undo = if o.abort {
                Some((UndoKind::Aborted, "aborted by annotation".to_string()))
            } else if !o.target_exists {
                Some((
                    UndoKind::Failed,
                    format!("target device {} disappeared", i.to),
                ))
            } else if expired(i.started_at) && !o.copy_running {
                Some((
                    UndoKind::Failed,
                    format!("copy did not reach Running on {} within {timeout_s}", i.to),
                ))
            } else {
                None
            };
            match (undo, o.copy) {
                (None, CopyState::Absent) => Step::CreateCopy,
                (None, CopyState::Terminating) => {
                    wait("an earlier copy is still being removed".into())
                }
                (None, CopyState::Present) if o.copy_running => Step::Repoint {
                    device: i.to.clone(),
                    intent: Intent {
                        phase: Phase::Repointed,
                        repointed_at: Some(now),
                        ..i.clone()
                    },
                },
                (None, CopyState::Present) => wait(format!("copy deploying on {}", i.to)),
                // The original never left its source: undoing is removing the copy, unless the
                // copy is the only instance running.
                (Some((kind, why)), _) => rolled_back(i, o, kind, &why, false),
            }
        }
        Phase::Repointed => {
            if device.as_deref() != Some(i.to.as_str()) {
                let why = moved_by_someone_else(device);
                return rolled_back(i, o, UndoKind::Failed, &why, false);
            }
            if o.original_running {
                return match o.copy {
                    CopyState::Present => Step::DeleteCopy,
                    CopyState::Terminating => wait("copy being removed".into()),
                    CopyState::Absent => Step::Finish {
                        result: MigrationResult::Succeeded,
                        message: format!("running on {}", i.to),
                    },
                };
            }
            let since = i.repointed_at.unwrap_or(i.started_at);
            let undo = if o.abort {
                Some((UndoKind::Aborted, "aborted by annotation".to_string()))
            } else if !o.target_exists {
                Some((
                    UndoKind::Failed,
                    format!("target device {} disappeared", i.to),
                ))
            } else if expired(since) {
                Some((
                    UndoKind::Failed,
                    format!("did not reach Running on {} within {timeout_s}", i.to),
                ))
            } else {
                None
            };
            match undo {
                None => wait(format!("deploying on {}", i.to)),
                Some((kind, why)) => Step::Repoint {
                    device: i.undo_device().to_string(),
                    intent: Intent {
                        phase: Phase::RollingBack,
                        rolled_back_at: Some(now),
                        undo: Some((kind, why)),
                        ..i.clone()
                    },
                },
            }
        }
        Phase::RollingBack => {
            let (kind, why) = i
                .undo
                .clone()
                .unwrap_or((UndoKind::Failed, "undone".into()));
            let since = i.rolled_back_at.or(i.repointed_at).unwrap_or(i.started_at);
            rolled_back(i, o, kind, &why, expired(since))
        }
    }
}

fn moved_by_someone_else(device: &Option<String>) -> String {
    format!(
        "spec.device was changed to {} by another writer",
        device.as_deref().unwrap_or("<none>")
    )
}

/// The original points where it should stay (its source, or wherever someone else put it):
/// remove the copy once that is safe, then end the move as `kind`. `gave_up`: the original has
/// not run there within the timeout either.
fn rolled_back(i: &Intent, o: &Observed, kind: UndoKind, why: &str, gave_up: bool) -> Step {
    let finish = |extra: &str| Step::Finish {
        result: kind.into(),
        message: format!("{why}; {extra}"),
    };
    let home = match &o.original {
        Some(Some(d)) => d.clone(),
        _ => i.undo_device().to_string(),
    };
    if o.original_running {
        return match o.copy {
            CopyState::Present => Step::DeleteCopy,
            CopyState::Terminating => wait("copy being removed".into()),
            CopyState::Absent => finish(&format!("running on {home}")),
        };
    }
    if o.copy == CopyState::Present && o.copy_running {
        // The copy is the only instance running: it stays until the original runs again.
        return Step::Wait {
            why: format!(
                "{why}; the copy keeps serving on {} until the workload runs on {home} again",
                i.to
            ),
            stuck: gave_up,
        };
    }
    if i.phase == Phase::Copying || gave_up {
        // Nothing was Running that this could take away: the original never left (Copying), or
        // neither instance has run for a whole timeout.
        return match o.copy {
            CopyState::Present => Step::DeleteCopy,
            CopyState::Terminating => wait("copy being removed".into()),
            CopyState::Absent if i.phase == Phase::Copying => finish(&format!("stays on {home}")),
            CopyState::Absent => finish(&format!("not Running on {home} either")),
        };
    }
    wait(format!("{why}; waiting for it to run on {home} again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }
    const TIMEOUT: Duration = Duration::from_secs(300);

    fn mbb() -> Intent {
        Intent::new("p", "app", "d1", "d2", Strategy::MakeBeforeBreak, t(0))
    }

    fn seen(device: &str) -> Observed {
        Observed {
            original: Some(Some(device.into())),
            copy: CopyState::Absent,
            target_exists: true,
            copy_running: false,
            original_running: true,
            abort: false,
        }
    }

    #[test]
    fn make_before_break_happy_path() {
        let i = mbb();
        assert_eq!(next_step(&i, &seen("d1"), t(1), TIMEOUT), Step::CreateCopy);
        let mut o = seen("d1");
        o.copy = CopyState::Present;
        assert!(matches!(
            next_step(&i, &o, t(2), TIMEOUT),
            Step::Wait { .. }
        ));
        o.copy_running = true;
        let Step::Repoint { device, intent } = next_step(&i, &o, t(3), TIMEOUT) else {
            panic!()
        };
        assert_eq!((device.as_str(), intent.phase), ("d2", Phase::Repointed));
        assert_eq!(intent.repointed_at, Some(t(3)));
        let mut o = seen("d2");
        o.copy = CopyState::Present;
        o.copy_running = true;
        o.original_running = false;
        assert!(matches!(
            next_step(&intent, &o, t(4), TIMEOUT),
            Step::Wait { .. }
        ));
        o.original_running = true;
        assert_eq!(next_step(&intent, &o, t(5), TIMEOUT), Step::DeleteCopy);
        o.copy = CopyState::Absent;
        assert!(matches!(
            next_step(&intent, &o, t(6), TIMEOUT),
            Step::Finish {
                result: MigrationResult::Succeeded,
                ..
            }
        ));
    }

    /// The old undo deleted the copy — the only running instance — after re-pointing back.
    #[test]
    fn undo_after_repoint_keeps_the_copy_until_the_original_runs_again() {
        let mut i = mbb();
        i.phase = Phase::Repointed;
        i.repointed_at = Some(t(10));
        let mut o = seen("d2");
        o.copy = CopyState::Present;
        o.copy_running = true;
        o.original_running = false;
        let Step::Repoint { device, intent } = next_step(&i, &o, t(10 + 301), TIMEOUT) else {
            panic!()
        };
        assert_eq!((device.as_str(), intent.phase), ("d1", Phase::RollingBack));
        let mut o = seen("d1");
        o.copy = CopyState::Present;
        o.copy_running = true;
        o.original_running = false;
        // Not running on d1 yet: the copy stays, even long after the timeout (stuck, reported).
        assert!(matches!(
            next_step(&intent, &o, t(400), TIMEOUT),
            Step::Wait { stuck: false, .. }
        ));
        assert!(matches!(
            next_step(&intent, &o, t(2000), TIMEOUT),
            Step::Wait { stuck: true, .. }
        ));
        o.original_running = true;
        assert_eq!(next_step(&intent, &o, t(2001), TIMEOUT), Step::DeleteCopy);
        o.copy = CopyState::Absent;
        let Step::Finish { result, message } = next_step(&intent, &o, t(2002), TIMEOUT) else {
            panic!()
        };
        assert_eq!(result, MigrationResult::Failed);
        assert!(message.contains("did not reach Running on d2") && message.contains("on d1"));
    }

    #[test]
    fn copying_timeout_abort_and_vanished_target_remove_the_copy() {
        let i = mbb();
        let mut o = seen("d1");
        o.copy = CopyState::Present;
        assert_eq!(next_step(&i, &o, t(301), TIMEOUT), Step::DeleteCopy);
        o.copy = CopyState::Absent;
        assert!(matches!(
            next_step(&i, &o, t(302), TIMEOUT),
            Step::Finish {
                result: MigrationResult::Failed,
                ..
            }
        ));
        let mut o = seen("d1");
        o.abort = true;
        assert!(matches!(
            next_step(&i, &o, t(5), TIMEOUT),
            Step::Finish {
                result: MigrationResult::Aborted,
                ..
            }
        ));
        let mut o = seen("d1");
        o.target_exists = false;
        o.copy = CopyState::Present;
        assert_eq!(next_step(&i, &o, t(5), TIMEOUT), Step::DeleteCopy);
        // The source died meanwhile and the copy runs: it is not taken away.
        let mut o = seen("d1");
        o.abort = true;
        o.copy = CopyState::Present;
        o.copy_running = true;
        o.original_running = false;
        assert!(matches!(
            next_step(&i, &o, t(5), TIMEOUT),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn original_deleted_or_moved_by_someone_else() {
        let i = mbb();
        let mut o = seen("d1");
        o.original = None;
        o.copy = CopyState::Present;
        assert_eq!(next_step(&i, &o, t(5), TIMEOUT), Step::DeleteCopy);
        o.copy = CopyState::Absent;
        assert!(matches!(
            next_step(&i, &o, t(5), TIMEOUT),
            Step::Finish { .. }
        ));
        // GitOps reverted spec.device while re-pointed: running back on d1 → copy goes, Failed.
        let mut r = mbb();
        r.phase = Phase::Repointed;
        let mut o = seen("d1");
        o.copy = CopyState::Present;
        assert_eq!(next_step(&r, &o, t(5), TIMEOUT), Step::DeleteCopy);
    }

    #[test]
    fn recreate_rolls_back_then_gives_up_without_a_copy() {
        let i = Intent::new("p", "app", "d1", "d2", Strategy::Recreate, t(0));
        assert_eq!((i.phase, i.copy.as_deref()), (Phase::Repointed, None));
        let mut o = seen("d2");
        o.original_running = false;
        let Step::Repoint { intent, .. } = next_step(&i, &o, t(301), TIMEOUT) else {
            panic!()
        };
        let mut o = seen("d1");
        o.original_running = false;
        assert!(matches!(
            next_step(&intent, &o, t(400), TIMEOUT),
            Step::Wait { .. }
        ));
        assert!(matches!(
            next_step(&intent, &o, t(700), TIMEOUT),
            Step::Finish {
                result: MigrationResult::Failed,
                ..
            }
        ));
    }

    #[test]
    fn names_fit_their_limits() {
        assert_eq!(copy_name("w"), "w-edgewatt-copy");
        let long = "x".repeat(300);
        assert_eq!(copy_name(&long).len(), 253);
        assert_ne!(copy_name(&long), copy_name(&format!("{long}y")));
        assert_eq!(copy_label_value("app"), "app");
        let v = copy_label_value(&"a-".repeat(100));
        assert!(
            v.len() <= 63 && v.chars().next().unwrap().is_ascii_alphanumeric(),
            "{v}"
        );
        let i = mbb();
        let back: Intent = serde_json::from_str(&i.to_annotation()).unwrap();
        assert_eq!(back, i);
    }
}
