//! Pods the extender must never filter: it may only make scheduling better, so pods that keep
//! the cluster (or edgewatt itself) running pass every node with a neutral score, whatever the
//! power data says.
//!
//! Each rule follows the upstream definition it mirrors:
//! - DaemonSet pods: a controller `ownerReference` of kind `DaemonSet` (the DaemonSet
//!   controller pins each pod to one node through node affinity; blocking it leaves that node
//!   without its agent — CNI, kube-proxy, CSI, edgewatt's own exporter);
//! - static and mirror pods: kubelet's `IsStaticPod`/`IsMirrorPod`
//!   (`pkg/kubelet/types/pod_update.go`: annotation `kubernetes.io/config.mirror`, or
//!   `kubernetes.io/config.source` other than `api`), and mirror pods' controller reference to
//!   their `Node`;
//! - pods tolerating edgewatt's taint: `Toleration.ToleratesTaint`
//!   (`k8s.io/api/core/v1/toleration.go`) against the exact taint the controller sets
//!   (`controller/src/actuator.rs` `set_taint`: `edgewatt.io/energy-starved=true:NoSchedule`);
//!   whoever tolerates it asked to run on starved nodes;
//! - pods at or above a priority (default `system-cluster-critical`, 2 000 000 000 —
//!   `pkg/apis/scheduling/types.go` `SystemCriticalPriority`).

use k8s_openapi::api::core::v1::{Pod, Toleration};

use edgewatt_crds::keys;

/// `system-cluster-critical`'s value (`SystemCriticalPriority` upstream).
pub const SYSTEM_CLUSTER_CRITICAL: i32 = 2_000_000_000;
/// `system-node-critical`'s value (`SystemCriticalPriority + 1000`).
pub const SYSTEM_NODE_CRITICAL: i32 = 2_000_001_000;

/// The value of the taint the controller puts on starved nodes (effect `NoSchedule`).
pub const STARVED_TAINT_VALUE: &str = "true";
/// The effect of that taint.
pub const STARVED_TAINT_EFFECT: &str = "NoSchedule";

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// Why a pod is never filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exemption {
    DaemonSet,
    StaticOrMirror,
    ToleratesStarvation,
    Priority(i32),
}

impl Exemption {
    /// The `reason` label of `edgewatt_scheduler_exempt_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Exemption::DaemonSet => "daemonset",
            Exemption::StaticOrMirror => "static-or-mirror",
            Exemption::ToleratesStarvation => "tolerates-starvation",
            Exemption::Priority(_) => "priority",
        }
    }
}

impl std::fmt::Display for Exemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exemption::DaemonSet => f.write_str("DaemonSet pod"),
            Exemption::StaticOrMirror => f.write_str("static/mirror pod"),
            Exemption::ToleratesStarvation => {
                write!(f, "tolerates the {} taint", keys::STARVED_TAINT)
            }
            Exemption::Priority(p) => write!(f, "priority {p}"),
        }
    }
}

/// Whether `pod` is exempt from filtering and scoring, and why. `min_priority` is the
/// `--exempt-priority` threshold.
pub fn exemption(pod: &Pod, min_priority: i32) -> Option<Exemption> {
    let meta = &pod.metadata;
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller.map(|o| o.kind.as_str()) {
        Some("DaemonSet") => return Some(Exemption::DaemonSet),
        Some("Node") => return Some(Exemption::StaticOrMirror),
        _ => {}
    }
    if let Some(a) = &meta.annotations {
        let from_file = a.get(SOURCE_ANNOTATION).is_some_and(|s| s != "api");
        if a.contains_key(MIRROR_ANNOTATION) || from_file {
            return Some(Exemption::StaticOrMirror);
        }
    }
    let spec = pod.spec.as_ref();
    if spec
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| ts.iter().any(tolerates_starvation))
    {
        return Some(Exemption::ToleratesStarvation);
    }
    let priority = spec.and_then(|s| {
        s.priority.or(match s.priority_class_name.as_deref() {
            // Admission fills `priority` from the class; a pod sent without it (tests, older
            // tools) is judged by the two built-in classes' fixed values.
            Some("system-node-critical") => Some(SYSTEM_NODE_CRITICAL),
            Some("system-cluster-critical") => Some(SYSTEM_CLUSTER_CRITICAL),
            _ => None,
        })
    });
    match priority {
        Some(p) if p >= min_priority => Some(Exemption::Priority(p)),
        _ => None,
    }
}

/// Upstream `Toleration.ToleratesTaint` against edgewatt's taint: an empty effect matches every
/// effect, an empty key (with `Exists`) every key, `Exists` every value, `Equal` (or no
/// operator) the exact value; any other operator (`Lt`/`Gt` compare integers, and the taint's
/// value is not one) does not match.
pub fn tolerates_starvation(t: &Toleration) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == STARVED_TAINT_EFFECT);
    let key_ok = t
        .key
        .as_deref()
        .is_none_or(|k| k.is_empty() || k == keys::STARVED_TAINT);
    let value_ok = match t.operator.as_deref() {
        None | Some("") | Some("Equal") => t.value.as_deref().unwrap_or("") == STARVED_TAINT_VALUE,
        Some("Exists") => true,
        _ => false,
    };
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>) -> bool {
        tolerates_starvation(&Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        })
    }

    /// The cases of upstream `TestTolerationToleratesTaint` (k8s.io/api/core/v1), applied to
    /// `edgewatt.io/energy-starved=true:NoSchedule`.
    #[test]
    fn toleration_matching_follows_upstream() {
        let k = Some(keys::STARVED_TAINT);
        assert!(tol(k, Some("Exists"), None, None), "Exists, any effect");
        assert!(tol(k, Some("Exists"), None, Some("NoSchedule")));
        assert!(
            !tol(k, Some("Exists"), None, Some("NoExecute")),
            "other effect"
        );
        assert!(tol(k, Some("Equal"), Some("true"), None));
        assert!(
            tol(k, None, Some("true"), Some("NoSchedule")),
            "no operator = Equal"
        );
        assert!(!tol(k, Some("Equal"), Some("false"), None), "other value");
        assert!(!tol(k, Some("Equal"), None, None), "Equal with no value");
        assert!(
            tol(None, Some("Exists"), None, None),
            "empty key + Exists = everything"
        );
        assert!(!tol(Some("other"), Some("Exists"), None, None));
        assert!(
            !tol(k, Some("Gt"), Some("1"), None),
            "value is not an integer"
        );
    }
}
