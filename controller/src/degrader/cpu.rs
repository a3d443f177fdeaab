//! What a throttle writes: each container's CPU lowered in place through `pods/{name}/resize`
//! with the pod's QoS class kept, and what restores it. Pure.
//!
//! Sources (kubernetes/kubernetes unless noted):
//! - `staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go` (`ParseQuantity`): the
//!   quantity grammar — `[+-]<digits>[.<digits>]` then a suffix `Ki…Ei`, `n u m "" k M G T P E`
//!   or `e<exponent>`/`E<exponent>`; "values that are too precise are rounded up".
//! - kubernetes/enhancements `keps/sig-node/1287-in-place-update-pod-resources/README.md`
//!   ("QOS Class": a resize may not change it; "Container Resize Policy": `RestartContainer`
//!   restarts the container to apply a change; "Sidecars").
//! - `pkg/apis/core/validation/validation.go` `ValidatePodResize` (static, Windows and pod-level
//!   resources pods refused; `qos.GetPodQOS(old) != qos.ComputePodQOS(new)` refused;
//!   non-sidecar init containers' resources immutable) and `validateResourceRequirements`
//!   (request ≤ limit).
//! - `pkg/apis/core/v1/helper/qos/qos.go` `GetPodQOS`: BestEffort without any CPU or memory
//!   request or limit; Guaranteed when every container has CPU and memory limits and the
//!   requests equal the limits; else Burstable. `pkg/apis/core/v1/defaults.go` `SetDefaults_Pod`:
//!   a missing request defaults to the limit.

use std::collections::BTreeMap;

use edgewatt_crds::degrade::ContainerCpu;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

const MILLI_NANOS: i128 = 1_000_000;
/// Bigger than any CPU or memory figure (10^18 base units, `1E`): refused as "too large".
const MAX_NANOS: i128 = 1_000_000_000_000_000_000_000_000_000;

/// quantity.go `ErrFormatWrong`.
const FORMAT_WRONG: &str =
    "not a Kubernetes quantity (expected e.g. \"500m\", \"1\", \"0.5\", \"2Gi\")";

/// A quantity in nano-units (1 CPU = 10^9), exact to 1n (finer digits round up, as quantity.go
/// does). Errors name what is wrong; nothing here panics on any input.
pub fn parse_quantity(s: &str) -> Result<i128, String> {
    let bad = |why: &str| format!("{s:?}: {why}");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(bad(FORMAT_WRONG));
    }
    // (base 10 exponent, base 1024 exponent)
    let (exp10, exp1024): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let e = &s[1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(FORMAT_WRONG));
            }
            // Anything beyond ±60 is out of range either way (too large, or rounds to 0/1n).
            let v: i64 = if digits.len() > 4 {
                if e.starts_with('-') {
                    -9999
                } else {
                    9999
                }
            } else {
                e.parse().map_err(|_| bad(FORMAT_WRONG))?
            };
            (v, 0)
        }
        _ => return Err(bad(FORMAT_WRONG)),
    };
    // mantissa × 10^(exp10 + 9 − fraction digits) × 1024^exp1024, in nano-units.
    let digits: String = int_part
        .chars()
        .chain(frac_part.chars())
        .skip_while(|c| *c == '0')
        .collect();
    let zero = digits.is_empty();
    if digits.len() > 30 {
        return Err(bad("too large"));
    }
    let mantissa: i128 = if zero {
        0
    } else {
        digits.parse().map_err(|_| bad(FORMAT_WRONG))?
    };
    let scale = exp10 + 9 - frac_part.len() as i64;
    let binary = 1024i128.pow(exp1024);
    let value = if zero {
        0
    } else if scale >= 0 {
        u32::try_from(scale)
            .ok()
            .and_then(|s| 10i128.checked_pow(s))
            .and_then(|p| mantissa.checked_mul(p))
            .and_then(|v| v.checked_mul(binary))
            .filter(|v| *v <= MAX_NANOS)
            .ok_or_else(|| bad("too large"))?
    } else {
        let m = mantissa
            .checked_mul(binary)
            .ok_or_else(|| bad("too large"))?;
        if -scale > 38 {
            1 // a positive value below 1n rounds up to 1n
        } else {
            let d = 10i128.pow((-scale) as u32);
            (m + d - 1) / d
        }
    };
    if value > MAX_NANOS {
        return Err(bad("too large"));
    }
    Ok(if negative { -value } else { value })
}

/// A CPU amount as a non-negative count of nanocores.
fn parse_cpu(s: &str) -> Result<i128, String> {
    let v = parse_quantity(s)?;
    if v < 0 {
        return Err(format!("{s:?}: negative"));
    }
    Ok(v)
}

/// Whole millicores as Kubernetes prints them (`1500m`, `2`).
pub fn format_millicores(m: i128) -> String {
    if m % 1000 == 0 {
        format!("{}", m / 1000)
    } else {
        format!("{m}m")
    }
}

/// Two CPU quantities name the same amount (`"0.5"` and `"500m"`). Unparseable ones are equal
/// only as the same text.
pub fn same_cpu(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The pod's QoS class, `qos.go` `GetPodQOS` after `SetDefaults_Pod` (requests default to
/// limits). Regular and init containers count.
pub fn pod_qos(pod: &Pod) -> Result<&'static str, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let res = c.resources.as_ref();
        let lim = res.and_then(|r| r.limits.as_ref());
        let req = res.and_then(|r| r.requests.as_ref());
        let mut found = 0;
        for name in ["cpu", "memory"] {
            let l = match lim.and_then(|l| l.get(name)) {
                Some(q) => parse_quantity(&q.0).map_err(|e| format!("{}: {e}", c.name))?,
                None => 0,
            };
            let r = match req.and_then(|r| r.get(name)) {
                Some(q) => parse_quantity(&q.0).map_err(|e| format!("{}: {e}", c.name))?,
                None => l, // SetDefaults_Pod
            };
            if r > 0 {
                *requests.entry(name).or_default() += r;
            }
            if l > 0 {
                found += 1;
                *limits.entry(name).or_default() += l;
            }
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return Ok("BestEffort");
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(k, r)| limits.get(k) == Some(r))
    {
        return Ok("Guaranteed");
    }
    Ok("Burstable")
}

/// `GetPodQOS` on the stored pod: its `status.qosClass` when set (what `ValidatePodResize`
/// compares against), else computed.
fn stored_qos(pod: &Pod) -> Result<String, String> {
    match pod
        .status
        .as_ref()
        .and_then(|s| s.qos_class.clone())
        .filter(|q| !q.is_empty())
    {
        Some(q) => Ok(q),
        None => pod_qos(pod).map(str::to_string),
    }
}

/// A throttle of one pod: the patch for `pods/{name}/resize`, what restores it, and what it
/// sets (the ledger keeps both, so a restore can tell its own throttle from someone's edit).
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    /// Strategic merge patch of `spec.containers[*].resources` (CPU only).
    pub patch: Value,
    /// Each lowered container's CPU before.
    pub restore: Vec<ContainerCpu>,
    /// Each lowered container's CPU after.
    pub throttled: Vec<ContainerCpu>,
    /// The share of the pod's total CPU limit taken away (0–1): an upper bound of the share of
    /// its draw saved, reached only when it is CPU-bound.
    pub saved_fraction: f64,
}

fn cpu_of(c: &Container, kind: &str) -> Option<String> {
    let r = c.resources.as_ref()?;
    let list = if kind == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    };
    list?.get("cpu").map(|q| q.0.clone())
}

/// Whether a change of the container's CPU restarts it (`resizePolicy` `RestartContainer`).
fn restarts_on_cpu_resize(c: &Container) -> bool {
    c.resize_policy
        .iter()
        .flatten()
        .any(|p| p.resource_name == "cpu" && p.restart_policy == "RestartContainer")
}

/// Lowers every regular container's CPU limit to `percent` % (whole millicores, at least 1m),
/// keeping the pod's QoS class: a Guaranteed pod's request follows its limit; a Burstable pod's
/// request is lowered only as far as the new limit needs (request ≤ limit) — and one millicore
/// further where it would otherwise make every request equal its limit (Guaranteed).
///
/// Left alone: init containers (a non-sidecar one's resources are immutable; sidecars keep
/// serving the app, and the ledger names containers without their list), containers whose CPU
/// resize policy is `RestartContainer` (the throttle would restart them), and containers
/// without a CPU limit. Refused with the reason: BestEffort, static (mirror) and Windows pods,
/// pods with pod-level resources, nothing to lower, unreadable quantities.
pub fn throttle(pod: &Pod, percent: u32) -> Result<Throttle, String> {
    if !(1..=99).contains(&percent) {
        return Err(format!("throttle percent {percent} is outside 1–99"));
    }
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        return Err("static (mirror) pods cannot be resized".into());
    }
    if spec.os.as_ref().is_some_and(|o| o.name == "windows") {
        return Err("Windows pods cannot be resized".into());
    }
    if spec.resources.as_ref().is_some_and(|r| {
        r.limits.as_ref().is_some_and(|l| !l.is_empty())
            || r.requests.as_ref().is_some_and(|l| !l.is_empty())
    }) {
        return Err("pods with pod-level resources cannot be resized".into());
    }
    let qos = stored_qos(pod)?;
    if qos == "BestEffort" {
        return Err(
            "BestEffort pod: no CPU limit to lower (adding one would change its QoS class)".into(),
        );
    }
    let guaranteed = qos == "Guaranteed";

    struct Change {
        name: String,
        limit_before: String,
        request_before: String,
        /// Millicores.
        limit: i128,
        /// Millicores, when the request changes too.
        request: Option<i128>,
        /// The request now, in nano-units.
        request_nanos: i128,
    }
    let mut changes: Vec<Change> = Vec::new();
    let mut total_limit: i128 = 0;
    let mut removed: i128 = 0;
    let mut restart_only = false;
    for c in &spec.containers {
        let Some(limit_s) = cpu_of(c, "limits") else {
            continue;
        };
        let limit =
            parse_cpu(&limit_s).map_err(|e| format!("container {}: CPU limit {e}", c.name))?;
        let request_s = cpu_of(c, "requests").unwrap_or_else(|| limit_s.clone());
        let request =
            parse_cpu(&request_s).map_err(|e| format!("container {}: CPU request {e}", c.name))?;
        total_limit += limit;
        if restarts_on_cpu_resize(c) {
            restart_only = true;
            continue;
        }
        // Nearest whole millicore of limit × percent, at least 1m.
        let target =
            ((limit * i128::from(percent) + 50 * MILLI_NANOS) / (100 * MILLI_NANOS)).max(1);
        if target * MILLI_NANOS >= limit {
            continue;
        }
        // Guaranteed: the request follows the limit. Burstable: it goes down only where it
        // would exceed the new limit.
        let new_request = (guaranteed || request > target * MILLI_NANOS).then_some(target);
        removed += limit - target * MILLI_NANOS;
        changes.push(Change {
            name: c.name.clone(),
            limit_before: limit_s,
            request_before: request_s,
            limit: target,
            request: new_request,
            request_nanos: request,
        });
    }
    if changes.is_empty() {
        return Err(if restart_only {
            "its containers' CPU resize policy is RestartContainer: a throttle would restart them"
                .into()
        } else if total_limit == 0 {
            "no container has a CPU limit to lower".into()
        } else {
            format!("its CPU limits are already at or below {percent}% (at the 1m floor)")
        });
    }
    // Keep the QoS class: check the pod as it would be, and for a Burstable pod that would
    // become Guaranteed take one millicore off one lowered request.
    let build = |changes: &[Change]| -> Pod {
        let mut p = pod.clone();
        if let Some(s) = p.spec.as_mut() {
            for c in s.containers.iter_mut() {
                if let Some(ch) = changes.iter().find(|ch| ch.name == c.name) {
                    let r = c.resources.get_or_insert_with(Default::default);
                    r.limits
                        .get_or_insert_with(Default::default)
                        .insert("cpu".into(), Quantity(format_millicores(ch.limit)));
                    if let Some(req) = ch.request {
                        r.requests
                            .get_or_insert_with(Default::default)
                            .insert("cpu".into(), Quantity(format_millicores(req)));
                    }
                }
            }
        }
        p
    };
    if pod_qos(&build(&changes))? != qos {
        let fix = changes.iter_mut().find(|ch| {
            ch.request.map_or(ch.request_nanos, |r| r * MILLI_NANOS) == ch.limit * MILLI_NANOS
                && ch.limit >= 2
        });
        match fix {
            Some(ch) if !guaranteed => ch.request = Some(ch.limit - 1),
            _ => {
                return Err(format!(
                    "lowering its CPU limit would change its QoS class ({qos})"
                ))
            }
        }
        if pod_qos(&build(&changes))? != qos {
            return Err(format!(
                "lowering its CPU limit would change its QoS class ({qos})"
            ));
        }
    }
    let patch = json!({"spec": {"containers": changes.iter().map(|ch| {
        let mut r = json!({"limits": {"cpu": format_millicores(ch.limit)}});
        if let Some(req) = ch.request {
            r["requests"] = json!({"cpu": format_millicores(req)});
        }
        json!({"name": ch.name, "resources": r})
    }).collect::<Vec<_>>()}});
    Ok(Throttle {
        patch,
        restore: changes
            .iter()
            .map(|ch| ContainerCpu {
                name: ch.name.clone(),
                limit: ch.limit_before.clone(),
                request: Some(ch.request_before.clone()),
            })
            .collect(),
        throttled: changes
            .iter()
            .map(|ch| ContainerCpu {
                name: ch.name.clone(),
                limit: format_millicores(ch.limit),
                request: Some(
                    ch.request
                        .map(format_millicores)
                        .unwrap_or_else(|| ch.request_before.clone()),
                ),
            })
            .collect(),
        saved_fraction: if total_limit > 0 {
            (removed as f64 / total_limit as f64).clamp(0.0, 1.0)
        } else {
            0.0
        },
    })
}

/// The `pods/{name}/resize` strategic merge patch that sets these containers' CPU (a restore:
/// the values recorded before the throttle).
pub fn restore_patch(containers: &[ContainerCpu]) -> Value {
    json!({"spec": {"containers": containers.iter().map(|c| {
        let mut r = json!({"limits": {"cpu": c.limit}});
        if let Some(req) = &c.request {
            r["requests"] = json!({"cpu": req});
        }
        json!({"name": c.name, "resources": r})
    }).collect::<Vec<_>>()}})
}

/// How the pod's containers' CPU compares with a list of container CPU values.
pub(crate) fn matches(pod: &Pod, want: &[ContainerCpu]) -> Result<bool, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    for w in want {
        let Some(c) = spec.containers.iter().find(|c| c.name == w.name) else {
            return Err(format!("it has no container {}", w.name));
        };
        let limit = cpu_of(c, "limits").unwrap_or_default();
        if !same_cpu(&limit, &w.limit) {
            return Ok(false);
        }
        if let Some(req) = &w.request {
            let request = cpu_of(c, "requests").unwrap_or_else(|| limit.clone());
            if !same_cpu(&request, req) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The containers' CPU now, for messages (`app 300m/100m`).
pub(crate) fn describe(pod: &Pod, names: &[ContainerCpu]) -> String {
    let spec = pod.spec.as_ref();
    names
        .iter()
        .map(|w| {
            let c = spec.and_then(|s| s.containers.iter().find(|c| c.name == w.name));
            let l = c
                .and_then(|c| cpu_of(c, "limits"))
                .unwrap_or_else(|| "none".into());
            let r = c
                .and_then(|c| cpu_of(c, "requests"))
                .unwrap_or_else(|| "none".into());
            format!("{} limit {l} request {r}", w.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether every listed container's CPU limit and request are at most the recorded ones (used
/// when the ledger does not say what the throttle set).
pub(crate) fn at_most(pod: &Pod, before: &[ContainerCpu]) -> Result<bool, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    for w in before {
        let Some(c) = spec.containers.iter().find(|c| c.name == w.name) else {
            return Err(format!("it has no container {}", w.name));
        };
        let le = |now: Option<String>, was: &str| -> bool {
            match (now.as_deref().map(parse_quantity), parse_quantity(was)) {
                (Some(Ok(n)), Ok(w)) => n <= w,
                _ => false,
            }
        };
        if !le(cpu_of(c, "limits"), &w.limit) {
            return Ok(false);
        }
        if let Some(req) = &w.request {
            let now = cpu_of(c, "requests").or_else(|| cpu_of(c, "limits"));
            if !le(now, req) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NANO: i128 = 1_000_000_000;

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}, "spec": spec}))
            .unwrap()
    }

    fn one(resources: Value) -> Pod {
        pod(json!({"containers": [{"name": "app", "image": "x", "resources": resources}]}))
    }

    /// quantity.go `ParseQuantity`: the grammar, suffixes, exponents; "too precise" rounds up.
    #[test]
    fn quantities_parse_like_kubernetes() {
        let n = |s: &str| parse_quantity(s).unwrap();
        assert_eq!(n("1"), NANO);
        assert_eq!(n("500m"), NANO / 2);
        assert_eq!(n("0.5"), NANO / 2);
        assert_eq!(n(".5"), NANO / 2);
        assert_eq!(n("5."), 5 * NANO);
        assert_eq!(n("+1.5"), 3 * NANO / 2);
        assert_eq!(n("2500u"), 2_500_000);
        assert_eq!(n("1n"), 1);
        assert_eq!(n("1e3"), 1000 * NANO);
        assert_eq!(n("1E-3"), NANO / 1000);
        assert_eq!(n("1k"), 1000 * NANO);
        assert_eq!(n("1Ki"), 1024 * NANO);
        assert_eq!(n("128Mi"), 128 * 1024 * 1024 * NANO);
        assert_eq!(n("1E"), 1_000_000_000_000_000_000 * NANO, "E alone is exa");
        assert_eq!(n("0.0000000001"), 1, "below 1n rounds up");
        assert_eq!(n("1.0000000001"), NANO + 1);
        assert_eq!(n("-1"), -NANO);
        assert_eq!(n("0"), 0);
        assert_eq!(n("000"), 0);
    }

    /// Hostile input is refused with a reason, never a panic.
    #[test]
    fn hostile_quantities_are_refused() {
        for s in [
            "",
            "m",
            ".",
            "1..2",
            "1.2.3",
            "abc",
            "1K",
            "1 m",
            " 1",
            "1mm",
            "1e",
            "1e+",
            "1ee3",
            "1Ki2",
            "--1",
            "1e99999999999999999999",
            "9".repeat(60).as_str(),
            "1e41",
            "99999999999E",
            "1Ei1",
            "\u{0661}",
            "1\u{00a0}",
        ] {
            let e = parse_quantity(s);
            assert!(e.is_err(), "{s:?} parsed as {e:?}");
        }
        assert!(parse_quantity(&"9".repeat(60))
            .unwrap_err()
            .contains("too large"));
        assert_eq!(
            parse_quantity("1e-99999").unwrap(),
            1,
            "tiny positive rounds up to 1n"
        );
        assert!(parse_cpu("-500m").unwrap_err().contains("negative"));
        // A hostile limit in a pod: refused, naming the container.
        let p = one(json!({"limits": {"cpu": "lots"}, "requests": {"cpu": "1"}}));
        let e = throttle(&p, 50).unwrap_err();
        assert!(e.contains("app") && e.contains("lots"), "{e}");
        let p = one(json!({"limits": {"cpu": "-1", "memory": "1Gi"}}));
        assert!(throttle(&p, 50).is_err());
        let p = one(json!({"limits": {"cpu": "1e30"}}));
        assert!(throttle(&p, 50).unwrap_err().contains("too large"));
    }

    #[test]
    fn millicores_print_as_kubernetes_canonicalizes() {
        assert_eq!(format_millicores(500), "500m");
        assert_eq!(format_millicores(1000), "1");
        assert_eq!(format_millicores(1500), "1500m");
        assert_eq!(format_millicores(1), "1m");
        assert!(same_cpu("0.5", "500m"));
        assert!(!same_cpu("0.5", "501m"));
    }

    /// qos.go `GetPodQOS`, with `SetDefaults_Pod` (a limit alone defaults the request).
    #[test]
    fn qos_classes() {
        assert_eq!(pod_qos(&one(json!({}))).unwrap(), "BestEffort");
        let g = one(json!({"limits": {"cpu": "1", "memory": "1Gi"}}));
        assert_eq!(pod_qos(&g).unwrap(), "Guaranteed");
        let g2 = one(json!({"limits": {"cpu": "1", "memory": "1Gi"},
                            "requests": {"cpu": "1000m", "memory": "1024Mi"}}));
        assert_eq!(pod_qos(&g2).unwrap(), "Guaranteed");
        let cpu_only = one(json!({"limits": {"cpu": "1"}}));
        assert_eq!(pod_qos(&cpu_only).unwrap(), "Burstable");
        let b = one(json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m"}}));
        assert_eq!(pod_qos(&b).unwrap(), "Burstable");
        // Only other resources: BestEffort.
        let storage = one(json!({"limits": {"ephemeral-storage": "1Gi"}}));
        assert_eq!(pod_qos(&storage).unwrap(), "BestEffort");
    }

    /// KEP 1287 "QOS Class" + validation.go: a Guaranteed pod's request moves with its limit.
    #[test]
    fn guaranteed_request_follows_the_limit() {
        let p = one(json!({"limits": {"cpu": "1", "memory": "128Mi"},
                           "requests": {"cpu": "1", "memory": "128Mi"}}));
        let t = throttle(&p, 50).unwrap();
        assert_eq!(
            t.patch,
            json!({"spec": {"containers": [{"name": "app", "resources": {
                "limits": {"cpu": "500m"}, "requests": {"cpu": "500m"}}}]}})
        );
        assert_eq!(
            t.restore,
            [ContainerCpu {
                name: "app".into(),
                limit: "1".into(),
                request: Some("1".into())
            }]
        );
        assert!((t.saved_fraction - 0.5).abs() < 1e-9);
        // Applied, the pod stays Guaranteed.
        let mut after = p.clone();
        let c = &mut after.spec.as_mut().unwrap().containers[0];
        let r = c.resources.as_mut().unwrap();
        r.limits
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("500m".into()));
        r.requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("500m".into()));
        assert_eq!(pod_qos(&after).unwrap(), "Guaranteed");
    }

    /// validation.go `validateResourceRequirements`: request ≤ limit; a request already below
    /// the new limit stays.
    #[test]
    fn burstable_request_goes_down_only_as_far_as_the_new_limit() {
        let low = one(json!({"limits": {"cpu": "1", "memory": "1Gi"},
                             "requests": {"cpu": "250m", "memory": "512Mi"}}));
        let t = throttle(&low, 50).unwrap();
        assert_eq!(t.throttled[0].limit, "500m");
        assert_eq!(t.throttled[0].request.as_deref(), Some("250m"));
        let high = one(json!({"limits": {"cpu": "2", "memory": "1Gi"},
                              "requests": {"cpu": "1500m", "memory": "512Mi"}}));
        let t = throttle(&high, 50).unwrap();
        assert_eq!(t.throttled[0].limit, "1");
        assert_eq!(t.throttled[0].request.as_deref(), Some("1"));
        assert_eq!(t.restore[0].request.as_deref(), Some("1500m"));
    }

    /// A Burstable pod whose lowered request would equal its lowered limit in every container
    /// (CPU and memory both equal) would become Guaranteed, which validation.go refuses: the
    /// request goes one millicore lower.
    #[test]
    fn burstable_never_becomes_guaranteed() {
        let p = one(json!({"limits": {"cpu": "1", "memory": "1Gi"},
                           "requests": {"cpu": "800m", "memory": "1Gi"}}));
        let t = throttle(&p, 50).unwrap();
        assert_eq!(t.throttled[0].limit, "500m");
        assert_eq!(t.throttled[0].request.as_deref(), Some("499m"));
        // At the 2m → 1m floor there is no room: refused.
        let tiny = one(json!({"limits": {"cpu": "2m", "memory": "1Gi"},
                              "requests": {"cpu": "2m", "memory": "1Gi"}}));
        let mut tiny = tiny;
        tiny.status = Some(serde_json::from_value(json!({"qosClass": "Burstable"})).unwrap());
        assert!(throttle(&tiny, 50).unwrap_err().contains("QoS"));
    }

    #[test]
    fn refusals_name_the_reason() {
        let be = one(json!({}));
        assert!(throttle(&be, 50).unwrap_err().contains("BestEffort"));
        let no_cpu_limit = one(json!({"limits": {"memory": "1Gi"}, "requests": {"cpu": "100m"}}));
        assert!(throttle(&no_cpu_limit, 50)
            .unwrap_err()
            .contains("no container has a CPU limit"));
        let floor = one(json!({"limits": {"cpu": "1m", "memory": "1Gi"}}));
        assert!(throttle(&floor, 50)
            .unwrap_err()
            .contains("already at or below"));
        let mut win = one(json!({"limits": {"cpu": "1"}}));
        win.spec.as_mut().unwrap().os =
            Some(serde_json::from_value(json!({"name": "windows"})).unwrap());
        assert!(throttle(&win, 50).unwrap_err().contains("Windows"));
        let mut mirror = one(json!({"limits": {"cpu": "1"}}));
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        assert!(throttle(&mirror, 50).unwrap_err().contains("static"));
        let level = pod(json!({"resources": {"limits": {"cpu": "2"}},
            "containers": [{"name": "app", "image": "x", "resources": {"limits": {"cpu": "1"}}}]}));
        assert!(throttle(&level, 50).unwrap_err().contains("pod-level"));
        let restart = pod(json!({"containers": [{"name": "app", "image": "x",
            "resources": {"limits": {"cpu": "1"}},
            "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "RestartContainer"}]}]}));
        assert!(throttle(&restart, 50)
            .unwrap_err()
            .contains("RestartContainer"));
        let p = one(json!({"limits": {"cpu": "1"}}));
        assert!(throttle(&p, 0).is_err());
        assert!(throttle(&p, 100).is_err());
    }

    /// KEP 1287 "Sidecars" / validation.go: non-sidecar init containers are immutable; init
    /// containers are left alone, regular ones lowered; one without a limit is skipped.
    #[test]
    fn only_regular_containers_with_a_cpu_limit_are_lowered() {
        let p = pod(json!({
            "initContainers": [{"name": "setup", "image": "x", "resources": {"limits": {"cpu": "1"}}},
                               {"name": "proxy", "image": "x", "restartPolicy": "Always",
                                "resources": {"limits": {"cpu": "1"}}}],
            "containers": [{"name": "app", "image": "x", "resources": {"limits": {"cpu": "3"}, "requests": {"cpu": "100m"}}},
                           {"name": "side", "image": "x", "resources": {"requests": {"cpu": "100m"}}}]}));
        let t = throttle(&p, 10).unwrap();
        let names: Vec<_> = t.restore.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app"]);
        assert_eq!(t.throttled[0].limit, "300m");
        assert!((t.saved_fraction - 0.9).abs() < 1e-9);
    }

    /// Whole millicores, nearest, at least 1m; odd spellings of the same amount.
    #[test]
    fn the_target_is_rounded_to_whole_millicores() {
        for (limit, percent, want) in [
            ("1", 33, "330m"),
            ("0.5", 50, "250m"),
            ("2500u", 50, "1m"), // 1.25m → 1m
            ("3m", 50, "2m"),    // 1.5m → 2m (half up)
            ("2", 75, "1500m"),
            ("1e0", 10, "100m"),
        ] {
            let p = one(json!({"limits": {"cpu": limit}}));
            let t = throttle(&p, percent).unwrap_or_else(|e| panic!("{limit}: {e}"));
            assert_eq!(t.throttled[0].limit, want, "{limit} at {percent}%");
        }
    }

    #[test]
    fn restore_patch_sets_the_recorded_values_verbatim() {
        let p = restore_patch(&[
            ContainerCpu {
                name: "a".into(),
                limit: "0.5".into(),
                request: Some("100m".into()),
            },
            ContainerCpu {
                name: "b".into(),
                limit: "2".into(),
                request: None,
            },
        ]);
        assert_eq!(
            p,
            json!({"spec": {"containers": [
                {"name": "a", "resources": {"limits": {"cpu": "0.5"}, "requests": {"cpu": "100m"}}},
                {"name": "b", "resources": {"limits": {"cpu": "2"}}}]}})
        );
    }

    /// Applies a `{spec: {containers: [{name, resources}]}}` CPU patch as the strategic merge
    /// patch on `pods/resize` does (containers merged by name).
    fn patched(p: &Pod, patch: &Value) -> Pod {
        let mut v = serde_json::to_value(p).unwrap();
        for c in patch["spec"]["containers"].as_array().unwrap() {
            let target = v["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|t| t["name"] == c["name"])
                .unwrap();
            for kind in ["limits", "requests"] {
                if let Some(cpu) = c["resources"][kind].get("cpu") {
                    target["resources"][kind]["cpu"] = cpu.clone();
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn arb_cpu() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            (1i128..8000).prop_map(|m| Some(format!("{m}m"))),
            (1i128..8).prop_map(|c| Some(c.to_string())),
            (1u32..9).prop_map(|d| Some(format!("0.{d}"))),
        ]
    }

    fn arb_container(i: usize) -> impl Strategy<Value = Value> {
        (
            arb_cpu(),
            arb_cpu(),
            prop::option::of(1u32..4),
            any::<bool>(),
        )
            .prop_map(move |(lim, req, mem, mem_req_eq)| {
                let mut r = json!({});
                if let Some(l) = lim {
                    r["limits"]["cpu"] = json!(l);
                }
                if let Some(q) = req {
                    r["requests"]["cpu"] = json!(q);
                }
                if let Some(m) = mem {
                    r["limits"]["memory"] = json!(format!("{m}Gi"));
                    if !mem_req_eq {
                        r["requests"]["memory"] = json!("512Mi");
                    }
                }
                json!({"name": format!("c{i}"), "image": "x", "resources": r})
            })
    }

    use proptest::prelude::*;

    proptest! {
        /// Any text: a value or a reason, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,40}") {
            let _ = parse_quantity(&s);
        }

        /// Text shaped like a quantity, with huge digit runs and exponents.
        #[test]
        fn quantity_shaped_text_never_panics(
            s in "[+-]?[0-9]{0,45}(\\.[0-9]{0,45})?([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,8})?"
        ) {
            let _ = parse_quantity(&s);
        }

        #[test]
        fn millicores_round_trip(m in 0i128..10_000_000_000) {
            prop_assert_eq!(parse_quantity(&format_millicores(m)), Ok(m * MILLI_NANOS));
        }

        /// Whatever the pod (1–3 containers, CPU and memory limits and requests present or not,
        /// some requests above their limits — which the API server would refuse, so throttle
        /// may too): a throttle lowers limits to at least 1m, keeps request ≤ limit and the QoS
        /// class (validation.go), and its restore data puts the pod back as it was.
        #[test]
        fn a_throttle_keeps_qos_and_restores_exactly(
            containers in (1usize..4).prop_flat_map(|n| (0..n).map(arb_container).collect::<Vec<_>>()),
            percent in 1u32..100,
        ) {
            let p = pod(json!({"containers": containers}));
            let Ok(t) = throttle(&p, percent) else { return Ok(()) };
            let after = patched(&p, &t.patch);
            prop_assert_eq!(pod_qos(&after).unwrap(), pod_qos(&p).unwrap());
            for (before, now) in t.restore.iter().zip(&t.throttled) {
                let (b, n) = (parse_quantity(&before.limit).unwrap(), parse_quantity(&now.limit).unwrap());
                prop_assert!(n < b && n >= MILLI_NANOS, "{} → {}", before.limit, now.limit);
                let r = parse_quantity(now.request.as_deref().unwrap()).unwrap();
                prop_assert!(r <= n, "request {r} above limit {n}");
            }
            prop_assert!(matches(&after, &t.throttled).unwrap());
            prop_assert!(at_most(&after, &t.restore).unwrap());
            prop_assert!(t.saved_fraction > 0.0 && t.saved_fraction <= 1.0);
            let back = patched(&after, &restore_patch(&t.restore));
            prop_assert!(matches(&back, &t.restore).unwrap());
            prop_assert_eq!(pod_qos(&back).unwrap(), pod_qos(&p).unwrap());
        }
    }
}
