//! Diagnostics: why targets look the way they do to the planner, and why nothing moved. Logged
//! at debug on change only (readable with thousands of targets), plus the `TargetDataMissing`
//! problem for live targets whose data never arrives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use edgewatt_crds::{EdgeDevice, TargetKind};
use k8s_openapi::api::core::v1::Node;

use crate::planner::{self, TargetId, TargetState};
use crate::snapshot::{self, PromData};
use crate::status::{rfc3339, Problem};

/// What diagnostics remember between cycles, per policy.
#[derive(Debug, Default)]
pub struct Memory {
    /// How each target looked to the planner last cycle (debug log on change only).
    views: HashMap<TargetId, String>,
    /// Since when each live, selected target's data has been unknown (for `TargetDataMissing`).
    unknown_since: HashMap<TargetId, DateTime<Utc>>,
}

pub fn target_str(t: &TargetId) -> String {
    match &t.namespace {
        Some(ns) => format!("{} {ns}/{}", t.kind, t.name),
        None => format!("{} {}", t.kind, t.name),
    }
}

/// `dev-b: not alive; dev-c: starved`, or why there was nothing to reject.
pub fn describe_rejections(r: &[(&TargetId, planner::Rejection)]) -> String {
    if r.is_empty() {
        return "no other target of its kind (and namespace)".into();
    }
    r.iter()
        .map(|(id, why)| format!("{}: {why}", target_str(id)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Debug diagnostics: how each target looks to the planner (selected, alive and from what,
/// data known, starvation state, whether it could receive work, signals), logged when that
/// changes — once per change, not per cycle, so it stays readable with many targets. What to
/// read when a target is not starved although it should be, or nothing moves to a device.
pub fn log_target_views(
    policy: &str,
    rt: &mut Memory,
    targets: &[planner::TargetSnapshot],
    plan: &planner::Plan,
    nodes: &[Arc<Node>],
    devices: &[Arc<EdgeDevice>],
    prom: &PromData,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        rt.views.clear();
        return;
    }
    // Indexed once: with thousands of targets every view changes on the first debug cycle, and a
    // linear search per target would make that cycle quadratic.
    let device_by_id: HashMap<(&str, &str), &EdgeDevice> = devices
        .iter()
        .map(|d| {
            let key = (
                d.metadata.namespace.as_deref().unwrap_or_default(),
                d.metadata.name.as_deref().unwrap_or_default(),
            );
            (key, d.as_ref())
        })
        .collect();
    let node_by_name: HashMap<&str, &Node> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n.as_ref()))
        .collect();
    for t in targets {
        let state = plan.states.get(&t.id);
        let condition = match state {
            Some(TargetState {
                starved: Some(i), ..
            }) => format!("starved since {} ({})", rfc3339(i.since), i.reason),
            Some(TargetState {
                condition_since: Some(since),
                ..
            }) => format!("condition holds since {}", rfc3339(*since)),
            _ => "clear".into(),
        };
        let known = !plan.unknown.contains(&t.id);
        let destination = plan
            .unfit(t)
            .map_or_else(|| "yes".to_string(), |u| format!("no: {u}"));
        let key = format!(
            "{} {} {known} {} {destination}",
            t.in_policy,
            t.alive,
            condition.split(" (").next().unwrap_or_default()
        );
        if rt.views.get(&t.id) == Some(&key) {
            continue;
        }
        let liveness = match t.id.kind {
            TargetKind::EdgeDevice => device_by_id
                .get(&(
                    t.id.namespace.as_deref().unwrap_or_default(),
                    t.id.name.as_str(),
                ))
                .map(|d| snapshot::device_liveness(d, prom)),
            TargetKind::Node => node_by_name
                .get(t.id.name.as_str())
                .map(|n| snapshot::node_liveness(n)),
        }
        .unwrap_or_default();
        tracing::debug!(
            policy = %policy,
            target = %target_str(&t.id),
            in_policy = t.in_policy,
            alive = t.alive,
            liveness = %liveness,
            data_known = known,
            state = %condition,
            destination = %destination,
            signals = ?t.signals,
            "target view changed"
        );
        rt.views.insert(t.id.clone(), key);
    }
    rt.views.retain(|id, _| plan.states.contains_key(id));
}

/// How long a live, selected target may go without the data the policy needs before the policy
/// says so: at least this, and at least the starvation `for` window (within it nothing could have
/// been decided anyway). Covers an exporter's first scrape after a device comes up.
const DATA_MISSING_GRACE: Duration = Duration::from_secs(60);

/// `TargetDataMissing` when a target that is selected and alive (Ready node; device up and
/// heartbeating) has had no fresh signal the policy needs for longer than the grace period: such
/// a target is never starved and never chosen as a destination, which otherwise only the debug
/// log would explain (exporter not scraped, metric missing, wrong device label). Offline targets
/// are not listed: their silence is expected.
pub fn data_missing(
    rt: &mut Memory,
    targets: &[planner::TargetSnapshot],
    plan: &planner::Plan,
    now: DateTime<Utc>,
    starvation_for: Duration,
) -> Option<Problem> {
    let grace = chrono::Duration::from_std(starvation_for.max(DATA_MISSING_GRACE))
        .unwrap_or(chrono::Duration::MAX);
    let mut still = HashMap::new();
    let mut missing: Vec<&TargetId> = Vec::new();
    for t in targets {
        if !(t.in_policy && t.alive && plan.unknown.contains(&t.id)) {
            continue;
        }
        let since = rt.unknown_since.get(&t.id).copied().unwrap_or(now);
        if now - since >= grace {
            missing.push(&t.id);
        }
        still.insert(t.id.clone(), since);
    }
    rt.unknown_since = still;
    if missing.is_empty() {
        return None;
    }
    missing.sort();
    let shown: Vec<String> = missing.iter().take(5).map(|id| target_str(id)).collect();
    let more = missing.len().saturating_sub(shown.len());
    Some((
        "TargetDataMissing".into(),
        format!(
            "{} live target(s) without fresh data the starvation conditions need for over {}s: {}{} — never starved nor chosen as a destination until their metrics arrive (exporter scraped? device label?)",
            missing.len(),
            grace.num_seconds(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ),
    ))
}
