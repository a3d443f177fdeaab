//! Keeping work alive when there is nowhere to move it (DESIGN.md "Continuity"): workloads'
//! criticality, the runway forecast's settings, the degradation ladder (`spec.action.degrade`)
//! and what the status records of each degraded workload — enough to restore it exactly, written
//! before the step is taken.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration;

/// How much a workload matters when energy runs short. Ordered: the ladder sheds the lowest
/// first, and never degrades `critical`.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// Shed first.
    Sheddable,
    /// The default.
    Normal,
    /// Never throttled or suspended: the ladder exists so that it outlives the shortage.
    Critical,
}

impl Criticality {
    /// The annotation's value (`edgewatt.io/criticality`) and the metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Criticality::Sheddable => "sheddable",
            Criticality::Normal => "normal",
            Criticality::Critical => "critical",
        }
    }

    /// Reads the annotation's value; anything else is an error naming the allowed values (a typo
    /// must not silently make a critical workload sheddable).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "critical" => Ok(Criticality::Critical),
            "normal" => Ok(Criticality::Normal),
            "sheddable" => Ok(Criticality::Sheddable),
            other => Err(format!(
                "{}={other:?} is not one of critical, normal, sheddable",
                crate::keys::CRITICALITY
            )),
        }
    }
}

/// How a pod's resolved priority (`spec.priority`, set from its PriorityClass) gives its
/// criticality when neither it nor its EdgeWorkload carries `edgewatt.io/criticality`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.criticalPriorityAtLeast) || !has(self.sheddablePriorityBelow) || self.sheddablePriorityBelow <= self.criticalPriorityAtLeast"
).message("sheddablePriorityBelow must not exceed criticalPriorityAtLeast").field_path(".sheddablePriorityBelow"))]
#[serde(rename_all = "camelCase")]
pub struct CriticalityThresholds {
    /// Pods with at least this priority are `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_priority_at_least: Option<i32>,
    /// Pods with a priority below this are `sheddable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheddable_priority_below: Option<i32>,
}

/// The runway forecast: battery energy, net draw, and the charging input expected over the next
/// hours, learned from the same hours of earlier periods (a solar site repeats daily).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    /// The charging input is expected to repeat with this period.
    #[serde(default = "default_period")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub period: String,
    /// How many past periods are averaged for each hour ahead.
    #[serde(default = "default_periods")]
    #[schemars(range(min = 1, max = 14))]
    pub periods: u32,
    /// How far ahead the forecast looks; a runway or recharge beyond it counts as "beyond".
    #[serde(default = "default_horizon")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub horizon: String,
    /// The battery level (percent of capacity) the runway is measured to: below it a device may
    /// cut off or age its battery.
    #[serde(default = "default_reserve")]
    #[schemars(range(min = 0, max = 90))]
    pub reserve_percent: f64,
}

impl Default for Forecast {
    fn default() -> Self {
        Self {
            period: default_period(),
            periods: default_periods(),
            horizon: default_horizon(),
            reserve_percent: default_reserve(),
        }
    }
}

/// One rung of the ladder.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum DegradeStep {
    /// Lower a pod's CPU limit through the in-place resize subresource (`pods/resize`).
    Throttle,
    /// Scale the pod's owner to zero through `scale`; an EdgeWorkload is removed from its device
    /// with its whole object kept for the restore.
    Suspend,
}

impl DegradeStep {
    pub const fn as_str(self) -> &'static str {
        match self {
            DegradeStep::Throttle => "Throttle",
            DegradeStep::Suspend => "Suspend",
        }
    }
}

/// `spec.action.degrade`: what to do when a starved target's workloads have nowhere to go.
/// Lowest criticality first, best watts saved first, only as far as the runway forecast needs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "self.steps.all(s, self.steps.exists_one(t, t == s))"
).message("steps must not repeat a step").field_path(".steps"))]
#[serde(rename_all = "camelCase")]
pub struct Degrade {
    /// The rungs, in order, for each criticality from the lowest. Empty: the ladder is off.
    #[serde(default = "default_steps")]
    #[schemars(length(max = 2))]
    pub steps: Vec<DegradeStep>,
    /// Throttle lowers each container's CPU limit to this percentage of its original.
    #[serde(default = "default_throttle_percent")]
    #[schemars(range(min = 1, max = 95))]
    pub throttle_percent: u32,
    /// The critical workloads' forecast runway must reach the forecast recharge plus this.
    #[serde(default = "default_margin")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub margin: String,
    /// Hysteresis: a degraded workload is restored only while the forecast with its load back
    /// still reaches the recharge plus `margin` plus this (or its target is no longer starved).
    #[serde(default = "default_restore_margin")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub restore_margin: String,
    /// A restore followed by a shed of the same workload within this window counts as a flap.
    #[serde(default = "default_flap_window")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub flap_window: String,
}

impl Default for Degrade {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            throttle_percent: default_throttle_percent(),
            margin: default_margin(),
            restore_margin: default_restore_margin(),
            flap_window: default_flap_window(),
        }
    }
}

/// The durations of the forecast and ladder settings, parsed once. Errors name the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LadderDurations {
    pub period: std::time::Duration,
    pub horizon: std::time::Duration,
    pub margin: std::time::Duration,
    pub restore_margin: std::time::Duration,
    pub flap_window: std::time::Duration,
}

impl LadderDurations {
    pub fn of(forecast: &Forecast, degrade: Option<&Degrade>) -> Result<Self, String> {
        let field = |name: &str, v: &str| duration::parse(v).map_err(|e| format!("{name}: {e}"));
        let d = degrade.cloned().unwrap_or_default();
        let period = field("spec.forecast.period", &forecast.period)?;
        if period.is_zero() {
            return Err("spec.forecast.period: must be longer than 0s".into());
        }
        Ok(Self {
            period,
            horizon: field("spec.forecast.horizon", &forecast.horizon)?,
            margin: field("spec.action.degrade.margin", &d.margin)?,
            restore_margin: field("spec.action.degrade.restoreMargin", &d.restore_margin)?,
            flap_window: field("spec.action.degrade.flapWindow", &d.flap_window)?,
        })
    }
}

/// What was degraded.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum DegradedKind {
    /// A throttled pod.
    Pod,
    Deployment,
    StatefulSet,
    /// A ReplicaSet without a Deployment.
    ReplicaSet,
    EdgeWorkload,
}

impl DegradedKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            DegradedKind::Pod => "Pod",
            DegradedKind::Deployment => "Deployment",
            DegradedKind::StatefulSet => "StatefulSet",
            DegradedKind::ReplicaSet => "ReplicaSet",
            DegradedKind::EdgeWorkload => "EdgeWorkload",
        }
    }
}

/// Where a ladder step stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DegradeState {
    /// Recorded, not yet confirmed done: a restarted controller checks the object and either
    /// confirms it or drops the entry (nothing to restore).
    Pending,
    /// Done; restored on recovery, on policy deletion, or dropped with an Event when the user
    /// deleted or changed the object meanwhile.
    Applied,
    /// Observe mode: what would be degraded. Nothing to restore.
    DryRun,
}

/// One container's CPU before a throttle.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCpu {
    pub name: String,
    /// The CPU limit before (a Kubernetes quantity, e.g. `500m`).
    pub limit: String,
    /// The CPU request before, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// What a restore needs, written before the step is taken.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreData {
    /// Throttle: each throttled container's CPU as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerCpu>>,
    /// Suspend of an owner: its replicas as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Suspend of an EdgeWorkload: the whole object as it was (metadata without server fields,
    /// spec), recreated unchanged. For a pod or an owner: its identity (`{"uid": …}`), and for a
    /// throttle what it set (`{"throttledTo": [{name, limit, request}…]}`), so a restore tells
    /// its own throttle from someone's edit and the original from an object replaced under its
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub object: Option<serde_json::Value>,
}

fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A workload the ladder throttled or suspended (or, in Observe mode, would have).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DegradedWorkload {
    pub kind: DegradedKind,
    pub namespace: String,
    pub name: String,
    /// The starved node or device it was degraded for.
    pub target: String,
    pub action: DegradeStep,
    pub criticality: Criticality,
    /// RFC 3339 time of the step.
    pub since: String,
    /// Why: the forecast that asked for it.
    pub reason: String,
    /// Watts the step was expected to save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_watts: Option<f64>,
    pub state: DegradeState,
    #[serde(default)]
    pub restore: RestoreData,
}

/// Workloads left alone for one reason (system pods, edgewatt's own, pinned…), counted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeftAlone {
    pub reason: String,
    pub count: u32,
}

/// Namespaces a policy never touches unless its `workloads.excludeNamespaces` says otherwise:
/// `kube-system` (cluster-autoscaler's drain treats its pods as not movable by default,
/// kubernetes/autoscaler `cluster-autoscaler/simulator/drain`).
pub fn default_exclude_namespaces() -> Vec<String> {
    vec!["kube-system".into()]
}

fn default_period() -> String {
    "24h".into()
}
fn default_periods() -> u32 {
    3
}
fn default_horizon() -> String {
    "48h".into()
}
fn default_reserve() -> f64 {
    10.0
}
fn default_steps() -> Vec<DegradeStep> {
    vec![DegradeStep::Throttle, DegradeStep::Suspend]
}
fn default_throttle_percent() -> u32 {
    50
}
fn default_margin() -> String {
    "1h".into()
}
fn default_restore_margin() -> String {
    "30m".into()
}
fn default_flap_window() -> String {
    "1h".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criticality_reads_its_three_values_and_names_the_allowed_ones_otherwise() {
        for c in [
            Criticality::Critical,
            Criticality::Normal,
            Criticality::Sheddable,
        ] {
            assert_eq!(Criticality::parse(c.as_str()), Ok(c));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
        let e = Criticality::parse("Critical!").unwrap_err();
        assert!(e.contains("critical, normal, sheddable"), "{e}");
        assert!(Criticality::Sheddable < Criticality::Normal);
        assert!(Criticality::Normal < Criticality::Critical);
    }

    #[test]
    fn ladder_durations_name_the_bad_field() {
        let f = Forecast {
            period: "0s".into(),
            ..Default::default()
        };
        let e = LadderDurations::of(&f, None).unwrap_err();
        assert!(e.starts_with("spec.forecast.period"), "{e}");
        let d = Degrade {
            flap_window: "soon".into(),
            ..Default::default()
        };
        let e = LadderDurations::of(&Forecast::default(), Some(&d)).unwrap_err();
        assert!(e.starts_with("spec.action.degrade.flapWindow"), "{e}");
        let ok = LadderDurations::of(&Forecast::default(), Some(&Degrade::default())).unwrap();
        assert_eq!(ok.period, std::time::Duration::from_secs(86_400));
    }
}
