//! The EnergyPolicy status: what the controller saw and did, for `kubectl get enpol` and alerts.
//!
//! One [`build_status`] from the previous status and the cycle's [`Outcome`], one write per cycle
//! and only when something changed (a write re-triggers every watcher of the policy; a
//! condition's `lastTransitionTime` moves only when its status does).

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    EnergyPolicy, EnergyPolicyStatus, MigrationRecord, StarvedTarget, MAX_MIGRATIONS_IN_STATUS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};

use crate::leader::{Fence, NotLeader};
use crate::planner::Plan;

/// A time as the status writes it: RFC 3339, whole seconds, UTC (`2026-01-01T00:00:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A status time read back ([`rfc3339`], or any RFC 3339 offset).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A reason the policy is `Degraded`: (reason, message). Reasons are CamelCase tokens.
pub type Problem = (String, String);

/// Whether the policy was evaluated this cycle, and if not why.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluated {
    Yes,
    /// Prometheus could not be read: nothing was decided.
    PrometheusDown(String),
    /// Prometheus refused the policy's own query.
    InvalidQuery(String),
    /// The spec cannot be read (a duration that does not parse).
    InvalidSpec(String),
}

/// What one cycle found and did, as far as the status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub generation: Option<i64>,
    pub evaluated: Evaluated,
    /// Starved targets now; `None` when not evaluated (the last known list stays).
    pub starved: Option<Vec<StarvedTarget>>,
    pub migrations: Vec<MigrationRecord>,
    pub migration_count: u64,
    pub moves_in_flight: u32,
    /// Every reason for `Degraded`, in the order found.
    pub problems: Vec<Problem>,
    /// The ladder's ledger: what it holds throttled or suspended (Observe: would).
    pub degraded: Vec<edgewatt_crds::DegradedWorkload>,
    /// Workloads on starved targets left alone, by reason; `None` when not evaluated (the last
    /// known counts stay).
    pub left_alone: Option<Vec<edgewatt_crds::LeftAlone>>,
}

/// A condition to set: (type, status `True|False|Unknown`, reason, message).
type Cond = (&'static str, &'static str, String, String);

fn jiff(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

/// Builds conditions, keeping `lastTransitionTime` where the status did not change.
fn conditions(
    previous: &[Condition],
    set: Vec<Cond>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    set.into_iter()
        .map(|(type_, status, reason, message)| {
            let last = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| jiff(now));
            Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason,
                message,
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

/// `Degraded`: every distinct reason, comma-separated (a condition reason may contain commas),
/// and every message.
fn degraded(problems: &[Problem]) -> Cond {
    if problems.is_empty() {
        return ("Degraded", "False", "AsExpected".into(), String::new());
    }
    let mut reasons: Vec<&str> = Vec::new();
    for (r, _) in problems {
        if !reasons.contains(&r.as_str()) {
            reasons.push(r);
        }
    }
    let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
    ("Degraded", "True", reasons.join(","), messages.join("; "))
}

/// The status after a cycle. Pure.
pub fn build_status(
    prev: &EnergyPolicyStatus,
    o: &Outcome,
    now: DateTime<Utc>,
) -> EnergyPolicyStatus {
    let (ready, prom): (Cond, Cond) = match &o.evaluated {
        Evaluated::Yes => (
            ("Ready", "True", "Reconciled".into(), String::new()),
            ("PrometheusAvailable", "True", "QueryOk".into(), String::new()),
        ),
        Evaluated::PrometheusDown(e) => (
            (
                "Ready",
                "False",
                "PrometheusUnavailable".into(),
                "the policy cannot be evaluated while Prometheus does not answer; no actions are taken".into(),
            ),
            (
                "PrometheusAvailable",
                "False",
                "QueryFailed".into(),
                format!("{e}; no actions are taken until it answers"),
            ),
        ),
        Evaluated::InvalidQuery(m) => (
            ("Ready", "False", "InvalidQuery".into(), m.clone()),
            ("PrometheusAvailable", "True", "QueryOk".into(), String::new()),
        ),
        Evaluated::InvalidSpec(m) => (
            ("Ready", "False", "InvalidSpec".into(), m.clone()),
            (
                "PrometheusAvailable",
                "Unknown",
                "NotQueried".into(),
                "the spec is invalid".into(),
            ),
        ),
    };
    let starved = o.starved.clone().unwrap_or_else(|| prev.starved.clone());
    EnergyPolicyStatus {
        observed_generation: o.generation,
        conditions: conditions(
            &prev.conditions,
            vec![ready, prom, degraded(&o.problems)],
            o.generation,
            now,
        ),
        starved_count: starved.len() as u32,
        migration_count: o.migration_count,
        moves_in_flight: o.moves_in_flight,
        starved,
        migrations: o.migrations.clone(),
        degraded_count: o
            .degraded
            .iter()
            .filter(|d| d.state != edgewatt_crds::DegradeState::DryRun)
            .count() as u32,
        degraded: o.degraded.clone(),
        left_alone: o
            .left_alone
            .clone()
            .unwrap_or_else(|| prev.left_alone.clone()),
    }
}

/// The starved list from a plan.
pub fn starved(plan: &Plan) -> Vec<StarvedTarget> {
    plan.starved()
        .map(|(id, st, info)| StarvedTarget {
            kind: id.kind,
            name: id.name.clone(),
            namespace: id.namespace.clone(),
            since: rfc3339(info.since),
            reason: info.reason.clone(),
            battery_percent: st.battery_percent,
            watts: st.watts,
            runway_minutes: None,
            recharge_minutes: None,
        })
        .collect()
}

/// Appends or updates (same kind/namespace/name/startedAt) a record; keeps the last 20.
/// Returns true when it was a new record.
pub fn push_record(list: &mut Vec<MigrationRecord>, rec: MigrationRecord) -> bool {
    if let Some(existing) = list.iter_mut().find(|r| {
        r.kind == rec.kind
            && r.namespace == rec.namespace
            && r.name == rec.name
            && r.started_at == rec.started_at
    }) {
        *existing = rec;
        return false;
    }
    list.push(rec);
    if list.len() > MAX_MIGRATIONS_IN_STATUS {
        let drop = list.len() - MAX_MIGRATIONS_IN_STATUS;
        list.drain(..drop);
    }
    true
}

/// Why a status write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// Writes the status subresource when it differs from `prev`; `Ok(false)` when nothing changed.
pub async fn write_if_changed(
    client: &Client,
    fence: &Fence,
    name: &str,
    prev: &EnergyPolicyStatus,
    status: &EnergyPolicyStatus,
) -> Result<bool, WriteError> {
    if prev == status {
        return Ok(false);
    }
    let api: Api<EnergyPolicy> = Api::all(client.clone());
    fence
        .guard(api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        ))
        .await??;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatt_crds::{MigrationResult, WorkloadKind};

    fn outcome() -> Outcome {
        Outcome {
            generation: Some(1),
            evaluated: Evaluated::Yes,
            starved: Some(vec![]),
            migrations: vec![],
            migration_count: 0,
            moves_in_flight: 0,
            problems: vec![],
            degraded: vec![],
            left_alone: None,
        }
    }

    #[test]
    fn records_update_in_place_and_cap_at_20() {
        let rec = |i: usize, r| MigrationRecord {
            kind: WorkloadKind::EdgeWorkload,
            namespace: "n".into(),
            name: format!("w{i}"),
            from: "a".into(),
            to: Some("b".into()),
            owner: None,
            started_at: "t".into(),
            finished_at: None,
            result: r,
            message: String::new(),
        };
        let mut list = vec![];
        for i in 0..25 {
            assert!(push_record(&mut list, rec(i, MigrationResult::InProgress)));
        }
        assert_eq!(list.len(), 20);
        assert_eq!(list[0].name, "w5");
        assert!(!push_record(&mut list, rec(24, MigrationResult::Succeeded)));
        assert_eq!(list[19].result, MigrationResult::Succeeded);
    }

    #[test]
    fn same_outcome_same_status_and_transition_time_moves_only_on_change() {
        let t1 = Utc::now() - chrono::Duration::hours(1);
        let first = build_status(&EnergyPolicyStatus::default(), &outcome(), t1);
        let again = build_status(&first, &outcome(), Utc::now());
        assert_eq!(first, again, "nothing changed: nothing to write");
        let mut down = outcome();
        down.evaluated = Evaluated::PrometheusDown("connection refused".into());
        let flipped = build_status(&first, &down, Utc::now());
        let ready = |s: &EnergyPolicyStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(
            ready(&flipped).status,
            "False",
            "not Ready while Prometheus is down"
        );
        assert_ne!(
            ready(&first).last_transition_time,
            ready(&flipped).last_transition_time
        );
        let degraded_t = |s: &EnergyPolicyStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(degraded_t(&first), degraded_t(&flipped));
    }

    #[test]
    fn degraded_lists_every_reason() {
        let mut o = outcome();
        o.problems = vec![
            ("FlottaNotInstalled".into(), "a".into()),
            (
                "Forbidden".into(),
                "Forbidden: list poddisruptionbudgets".into(),
            ),
            ("FlottaNotInstalled".into(), "b".into()),
        ];
        let st = build_status(&EnergyPolicyStatus::default(), &o, Utc::now());
        let d = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(d.reason, "FlottaNotInstalled,Forbidden");
        assert_eq!(d.message, "a; Forbidden: list poddisruptionbudgets; b");
    }
}
