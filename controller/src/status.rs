//! The EnergyPolicy status: what the controller saw and did, for `kubectl get ep` and alerts.

use chrono::{DateTime, Utc};
use edgewatt_crds::{
    EnergyPolicy, EnergyPolicyStatus, MigrationRecord, StarvedTarget, MAX_MIGRATIONS_IN_STATUS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};

use crate::planner::Plan;

/// A condition to set: (type, ok, reason, message).
pub type Cond<'a> = (&'a str, bool, &'a str, String);

fn jiff(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

/// Builds conditions, keeping `lastTransitionTime` where the status did not change.
pub fn conditions(
    previous: &[Condition],
    set: &[Cond<'_>],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    set.iter()
        .map(|(type_, ok, reason, message)| {
            let status = if *ok { "True" } else { "False" }.to_string();
            let last = previous
                .iter()
                .find(|c| c.type_ == *type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| jiff(now));
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: message.clone(),
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

/// The starved list from a plan.
pub fn starved(plan: &Plan) -> Vec<StarvedTarget> {
    plan.starved()
        .map(|(id, st, info)| StarvedTarget {
            kind: id.kind,
            name: id.name.clone(),
            namespace: id.namespace.clone(),
            since: info
                .since
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            reason: info.reason.clone(),
            battery_percent: st.battery_percent,
            watts: st.watts,
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

/// Writes the status subresource (merge patch; a no-op write changes nothing).
pub async fn write(client: &Client, name: &str, status: &EnergyPolicyStatus) -> kube::Result<()> {
    let api: Api<EnergyPolicy> = Api::all(client.clone());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatt_crds::{MigrationResult, WorkloadKind};

    #[test]
    fn records_update_in_place_and_cap_at_20() {
        let rec = |i: usize, r| MigrationRecord {
            kind: WorkloadKind::EdgeWorkload,
            namespace: "n".into(),
            name: format!("w{i}"),
            from: "a".into(),
            to: Some("b".into()),
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
    fn transition_time_kept_while_status_unchanged() {
        let t1 = Utc::now() - chrono::Duration::hours(1);
        let first = conditions(&[], &[("Ready", true, "Ok", String::new())], Some(1), t1);
        let again = conditions(
            &first,
            &[("Ready", true, "Ok", String::new())],
            Some(2),
            Utc::now(),
        );
        assert_eq!(first[0].last_transition_time, again[0].last_transition_time);
        let flipped = conditions(
            &first,
            &[("Ready", false, "X", String::new())],
            Some(2),
            Utc::now(),
        );
        assert_ne!(
            first[0].last_transition_time,
            flipped[0].last_transition_time
        );
    }
}
