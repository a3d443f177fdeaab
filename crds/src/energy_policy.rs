//! `EnergyPolicy` (`edgewatt.io/v1alpha1`): what can starve, when it counts as starved, and what
//! edgewatt may do about it. See DESIGN.md "EnergyPolicy" for the contract.
//!
//! Validation lives in the generated CRD itself (OpenAPI bounds plus CEL rules), so a bad policy is
//! rejected by the API server at `kubectl apply` time rather than discovered by the controller.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration;

/// A label selector: `metav1.LabelSelector`'s JSON, with what kube-apiserver's
/// `ValidateLabelSelectorRequirement` checks for built-in types (apimachinery
/// `pkg/apis/meta/v1/validation/validation.go`) checked at admission: only the four label
/// operators (`Gt`/`Lt` exist only in node selectors), `values` non-empty for `In`/`NotIn` and
/// empty otherwise. Without it a typo (`in`, `Equals`) would be stored and the controller would
/// have to guess what it meant. Bounded lists keep the CEL rule's estimated cost within the API
/// server's budget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

/// One `matchExpressions` entry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "(self.operator == 'In' || self.operator == 'NotIn') ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)"
).message("values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"))]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub values: Option<Vec<String>>,
}

/// Label selector operators.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Spec of an EnergyPolicy. Cluster-scoped: one policy can cover nodes and devices anywhere.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgewatt.io",
    version = "v1alpha1",
    kind = "EnergyPolicy",
    plural = "energypolicies",
    shortname = "enpol",
    category = "edgewatt",
    status = "EnergyPolicyStatus",
    doc = "EnergyPolicy says which nodes and Flotta edge devices can become energy-starved, when, and which workloads edgewatt may move away from them.",
    // Raw JSON form: clippy's duplicated_attributes lint misreads repeated `printcolumn(...)`.
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.action.mode"}"#,
    printcolumn = r#"{"name":"Starved","type":"integer","jsonPath":".status.starvedCount"}"#,
    printcolumn = r#"{"name":"Migrations","type":"integer","jsonPath":".status.migrationCount"}"#,
    printcolumn = r#"{"name":"InFlight","type":"integer","jsonPath":".status.movesInFlight","description":"EdgeWorkload moves and pod evictions in flight"}"#,
    printcolumn = r#"{"name":"Shed","type":"integer","jsonPath":".status.degradedCount","description":"workloads the degradation ladder holds throttled or suspended"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Degraded","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].reason","description":"every Degraded reason, comma-separated (AsExpected when none)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.recovery) || !has(self.recovery.batteryAbovePercent) || !has(self.starvation.batteryBelowPercent) || self.recovery.batteryAbovePercent > self.starvation.batteryBelowPercent"
).message("recovery.batteryAbovePercent must be greater than starvation.batteryBelowPercent (hysteresis)").field_path(".recovery.batteryAbovePercent"))]
#[schemars(transform = crate::openapi::k8s_integer_formats)]
#[serde(rename_all = "camelCase")]
pub struct EnergyPolicySpec {
    /// What can be energy-starved.
    pub targets: Targets,
    /// What may be moved away from a starved target. Empty means every workload on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<WorkloadSelector>,
    /// When a target counts as starved.
    pub starvation: Starvation,
    /// When a starved target counts as recovered (hysteresis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// What edgewatt does about starved targets.
    #[serde(default)]
    pub action: Action,
    /// How a workload's criticality follows from its priority when it carries no
    /// `edgewatt.io/criticality` annotation (else `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<crate::degrade::CriticalityThresholds>,
    /// The runway forecast (`starvation.runwayBelowRecharge` and `action.degrade` use it).
    #[serde(default)]
    pub forecast: crate::degrade::Forecast,
    /// Inputs for the scheduler extender.
    #[serde(default)]
    pub scheduling: Scheduling,
}

/// Which nodes and Flotta EdgeDevices the policy watches. At least one selector must be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("has(self.nodeSelector) || has(self.edgeDeviceSelector)")
    .message("targets needs nodeSelector, edgeDeviceSelector or both"))]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    /// Kubernetes nodes. `{}` selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Selector>,
    /// Flotta EdgeDevices in any namespace. `{}` selects every device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_device_selector: Option<Selector>,
}

/// Which pods and EdgeWorkloads may be moved. Objects annotated `edgewatt.io/pinned=true` never move.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Namespaces whose workloads may move. Unset: all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    /// Labels of movable pods/EdgeWorkloads. Unset: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// Namespaces whose workloads are never acted on (moved, evicted, throttled, suspended),
    /// whatever the selectors say. Default `[kube-system]`; `[]` turns the default off.
    /// Independently of it, pods with a system-critical priority and edgewatt's own pods are
    /// never touched.
    #[serde(default = "crate::degrade::default_exclude_namespaces")]
    #[schemars(length(max = 64))]
    pub exclude_namespaces: Vec<String>,
}

impl Default for WorkloadSelector {
    fn default() -> Self {
        Self {
            namespace_selector: None,
            selector: None,
            exclude_namespaces: crate::degrade::default_exclude_namespaces(),
        }
    }
}

/// Starvation conditions; a target is starved when any set condition has held for `for`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.batteryBelowPercent) || has(self.minRuntimeMinutes) || has(self.powerAboveWatts) || has(self.query) || (has(self.runwayBelowRecharge) && self.runwayBelowRecharge)"
).message("starvation needs at least one condition: batteryBelowPercent, minRuntimeMinutes, powerAboveWatts, query or runwayBelowRecharge"))]
#[serde(rename_all = "camelCase")]
pub struct Starvation {
    /// Starved when the battery charge is below this percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub battery_below_percent: Option<f64>,
    /// Starved when remaining battery energy / current draw is below this many minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_runtime_minutes: Option<f64>,
    /// Starved when the draw exceeds the power budget by more than this many watts (0: any excess).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub power_above_watts: Option<f64>,
    /// A custom signal: one value per target, compared with `above` or `below`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<CustomQuery>,
    /// Starved when the runway forecast (`spec.forecast`) says the battery reaches its reserve
    /// before the forecast recharge: the whole site on battery at night, a cloudy week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runway_below_recharge: Option<bool>,
    /// How long a condition must hold before the target counts as starved. The condition must be
    /// *seen* holding over the whole window: data that is missing or stale does not count towards
    /// it, and a gap in the data longer than the controller's tolerance (twice its `--interval`,
    /// at least 30 s — e.g. a Prometheus outage) restarts the window from the next reading.
    #[serde(rename = "for", default = "default_starvation_for")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub for_: String,
}

/// A user-supplied PromQL signal. The result must carry the target's join label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("has(self.above) != has(self.below)")
    .message("query needs exactly one of above or below"))]
#[serde(rename_all = "camelCase")]
pub struct CustomQuery {
    /// PromQL returning one series per target.
    #[schemars(length(min = 1))]
    pub promql: String,
    /// Starved when the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Starved when the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

/// Recovery thresholds; wider than starvation so a target near the line does not flap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Recovered once the battery is above this percentage (must exceed batteryBelowPercent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub battery_above_percent: Option<f64>,
    /// How long the recovery condition must hold, seen over the whole window like
    /// `starvation.for` (a gap in the data restarts it).
    #[serde(rename = "for", default = "default_recovery_for")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub for_: String,
}

/// `Migrate` acts; `Observe` is a dry run that only writes status, Events and metrics.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    Migrate,
    /// The default, so a freshly applied policy never moves anything by surprise.
    #[default]
    Observe,
}

/// How an EdgeWorkload is moved.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Start on the target, wait until it runs there, then remove from the starved device.
    #[default]
    MakeBeforeBreak,
    /// Re-point the workload, then verify it runs on the target.
    Recreate,
}

/// What edgewatt does, and how fast it may do it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub strategy: Strategy,
    /// Taint starved nodes `edgewatt.io/energy-starved:NoSchedule` and label starved EdgeDevices
    /// `edgewatt.io/energy-starved=true` while starved. Pods are only evicted from a node once the
    /// taint is in place (an evicted pod would otherwise be scheduled straight back), so with
    /// `false` pods are reported, never evicted. Selector-placed EdgeWorkloads leave a device
    /// through the label (their deviceSelector must exclude it), so with `false` they stay.
    #[serde(default = "default_true")]
    pub taint_nodes: bool,
    /// Evict pods that have no controller (they will not come back anywhere).
    #[serde(default)]
    pub evict_uncontrolled_pods: bool,
    /// Moves in flight at once, per policy.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1))]
    pub max_concurrent: u32,
    /// Moves started per rolling hour, per policy (and per owner of the pods moved).
    #[serde(default = "default_max_per_hour")]
    #[schemars(range(min = 1))]
    pub max_per_hour: u32,
    /// The same workload — and the same owner (Deployment, ReplicaSet, StatefulSet, Job) of a
    /// pod — is not moved twice within this window.
    #[serde(default = "default_cooldown")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub cooldown: String,
    /// A move whose workload is not Running on the target by then is undone: the workload is
    /// re-pointed to its source and the copy removed once it runs there again. Annotating the
    /// EdgeWorkload `edgewatt.io/abort-migration=true` undoes an in-flight move at once.
    #[serde(default = "default_migration_timeout")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub migration_timeout: String,
    /// The degradation ladder: when a starved target's workloads have nowhere to go, throttle
    /// and suspend the least critical, only as far as the runway forecast needs. Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade: Option<crate::degrade::Degrade>,
}

impl Default for Action {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            strategy: Strategy::default(),
            taint_nodes: true,
            evict_uncontrolled_pods: false,
            max_concurrent: default_max_concurrent(),
            max_per_hour: default_max_per_hour(),
            cooldown: default_cooldown(),
            migration_timeout: default_migration_timeout(),
            degrade: None,
        }
    }
}

/// Inputs the scheduler extender uses for nodes this policy covers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Budget for nodes without an `edgewatt.io/power-budget-watts` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub default_power_budget_watts: Option<f64>,
    /// Nodes with less headroom than this (after the pod's expected draw) are filtered out.
    #[serde(default = "default_min_headroom")]
    #[schemars(range(min = 0))]
    pub min_headroom_watts: f64,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self {
            default_power_budget_watts: None,
            min_headroom_watts: default_min_headroom(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_starvation_for() -> String {
    "2m".into()
}
fn default_recovery_for() -> String {
    "5m".into()
}
fn default_max_concurrent() -> u32 {
    2
}
fn default_max_per_hour() -> u32 {
    20
}
fn default_cooldown() -> String {
    "10m".into()
}
fn default_migration_timeout() -> String {
    "5m".into()
}
fn default_min_headroom() -> f64 {
    5.0
}

/// What a target is.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum TargetKind {
    Node,
    EdgeDevice,
}

/// What was moved.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum WorkloadKind {
    Pod,
    EdgeWorkload,
}

/// `as_str` (a `const fn`, for metric label values and Events) and `Display` for unit enums whose
/// serde form is the variant name; `tests::enum_strings_are_the_api_values` holds them to it.
macro_rules! api_strings {
    ($($ty:ident { $($variant:ident),+ $(,)? })+) => {$(
        impl $ty {
            /// The value as the API writes it (its serde form).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

api_strings! {
    Mode { Migrate, Observe }
    TargetKind { Node, EdgeDevice }
    WorkloadKind { Pod, EdgeWorkload }
    MigrationResult { InProgress, Succeeded, Failed, Blocked, Aborted, DryRun }
}

/// Observed state, written by the controller through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[schemars(transform = crate::openapi::k8s_integer_formats)]
#[serde(rename_all = "camelCase")]
pub struct EnergyPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `PrometheusAvailable`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Number of entries in `starved` (for the printer column).
    #[serde(default)]
    pub starved_count: u32,
    /// Migrations recorded since the policy was created (for the printer column).
    #[serde(default)]
    pub migration_count: u64,
    /// EdgeWorkload moves and pod evictions (until the pod is gone) in flight now.
    #[serde(default)]
    pub moves_in_flight: u32,
    #[serde(default)]
    pub starved: Vec<StarvedTarget>,
    /// The last [`MAX_MIGRATIONS_IN_STATUS`] migrations, newest last.
    #[serde(default)]
    pub migrations: Vec<MigrationRecord>,
    /// Number of workloads the ladder holds throttled or suspended now (for the printer column).
    #[serde(default)]
    pub degraded_count: u32,
    /// Workloads the ladder throttled or suspended (Observe: would have), with what restores
    /// them: written before each step is taken.
    #[serde(default)]
    pub degraded: Vec<crate::degrade::DegradedWorkload>,
    /// Workloads on starved targets left alone, counted by reason (system pods, edgewatt's own,
    /// pinned, ineligible…).
    #[serde(default)]
    pub left_alone: Vec<crate::degrade::LeftAlone>,
}

/// How many migrations `status.migrations` keeps.
pub const MAX_MIGRATIONS_IN_STATUS: usize = 20;

/// A target currently starved.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StarvedTarget {
    pub kind: TargetKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// RFC 3339 time the starvation condition was first met.
    pub since: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watts: Option<f64>,
    /// Forecast minutes until the battery reaches its reserve (absent: beyond the horizon or
    /// unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runway_minutes: Option<f64>,
    /// Forecast minutes until it charges again (absent: beyond the horizon or unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recharge_minutes: Option<f64>,
}

/// Outcome of a migration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MigrationResult {
    /// Started, not finished yet.
    InProgress,
    Succeeded,
    /// Failed and was undone; `message` says why.
    Failed,
    /// Refused by the cluster (e.g. a PodDisruptionBudget); will be retried.
    Blocked,
    /// Ended by the `edgewatt.io/abort-migration` annotation and undone.
    Aborted,
    /// Observe mode: what would have been done.
    DryRun,
}

/// One move of one workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRecord {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The pod's owner (`Deployment/web`, `StatefulSet/db`…), so cooldown and `maxPerHour` per
    /// owner survive a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub result: MigrationResult,
    #[serde(default)]
    pub message: String,
}

/// Durations of a spec, parsed once. Errors name the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyDurations {
    pub starvation_for: std::time::Duration,
    pub recovery_for: std::time::Duration,
    pub cooldown: std::time::Duration,
    pub migration_timeout: std::time::Duration,
}

impl EnergyPolicySpec {
    /// Parses every duration field; the error names the offending field so it can go into a
    /// status condition verbatim.
    pub fn durations(&self) -> Result<PolicyDurations, String> {
        let field = |name: &str, v: &str| duration::parse(v).map_err(|e| format!("{name}: {e}"));
        Ok(PolicyDurations {
            starvation_for: field("spec.starvation.for", &self.starvation.for_)?,
            recovery_for: match &self.recovery {
                Some(r) => field("spec.recovery.for", &r.for_)?,
                None => duration::parse(&default_recovery_for()).expect("default parses"),
            },
            cooldown: field("spec.action.cooldown", &self.action.cooldown)?,
            migration_timeout: field(
                "spec.action.migrationTimeout",
                &self.action.migration_timeout,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;

    /// Every string the API schema allows for `T` (its `enum`/`const` values).
    fn api_values<T: JsonSchema>() -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::Array(vals)) = m.get("enum") {
                        out.extend(vals.iter().filter_map(|x| x.as_str().map(String::from)));
                    }
                    if let Some(Value::String(c)) = m.get("const") {
                        out.push(c.clone());
                    }
                    m.values().for_each(|x| walk(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&schemars::schema_for!(T).to_value(), &mut out);
        out.sort();
        out.dedup();
        out
    }

    /// `variants`: how many the schema must list (a walk that missed some would pass vacuously).
    fn check<T>(as_str: fn(T) -> &'static str, variants: usize)
    where
        T: JsonSchema + DeserializeOwned + Serialize + Copy + std::fmt::Display,
    {
        let values = api_values::<T>();
        assert_eq!(values.len(), variants, "{values:?}");
        for s in values {
            let v: T = serde_json::from_value(Value::String(s.clone())).unwrap();
            assert_eq!(as_str(v), s);
            assert_eq!(v.to_string(), s);
            assert_eq!(serde_json::to_value(v).unwrap(), Value::String(s));
        }
    }

    /// Label values and Event texts use `as_str`; they must be what the API stores, or a
    /// dashboard filtering on `result="DryRun"` would silently match nothing.
    #[test]
    fn enum_strings_are_the_api_values() {
        check(Mode::as_str, 2);
        check(TargetKind::as_str, 2);
        check(WorkloadKind::as_str, 2);
        check(MigrationResult::as_str, 6);
    }
}
