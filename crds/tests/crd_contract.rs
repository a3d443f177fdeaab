//! The generated CRDs are committed, copied into the chart, and enforce the policy rules.

use std::path::{Path, PathBuf};

use edgewatt_crds::{validation, EnergyPolicy};
use kube::CustomResourceExt;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn committed_crds_match_generated() {
    for (file, yaml) in edgewatt_crds::generated_yaml().unwrap() {
        let path = repo().join("crds").join(file);
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == yaml,
            "{} is stale: run `make crds`",
            path.display()
        );
    }
}

#[test]
fn chart_carries_the_same_crd() {
    let generated =
        std::fs::read_to_string(repo().join("crds/edgewatt.io_energypolicies.yaml")).unwrap();
    let chart = std::fs::read_to_string(
        repo().join("charts/edgewatt/crds/edgewatt.io_energypolicies.yaml"),
    )
    .expect("the chart must ship the EnergyPolicy CRD");
    assert!(
        chart == generated,
        "charts/edgewatt/crds/ differs from crds/: copy it (make crds)"
    );
}

fn schema() -> Value {
    validation::schema_of(&EnergyPolicy::crd()).unwrap()
}

/// Admission as the API server does it: default, then validate.
fn admit(object: &Value) -> Result<Value, Vec<String>> {
    let schema = schema();
    let defaulted = validation::apply_defaults(&schema, object);
    validation::validate(&schema, &defaulted, None)
        .map(|_| defaulted)
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
}

#[test]
fn every_example_parses_and_passes_validation() {
    let dir = repo().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if value["kind"] != "EnergyPolicy" {
            continue;
        }
        let admitted =
            admit(&value).unwrap_or_else(|e| panic!("{} rejected: {e:?}", path.display()));
        let policy: EnergyPolicy = serde_json::from_value(admitted)
            .unwrap_or_else(|e| panic!("{} does not deserialize: {e}", path.display()));
        policy.spec.durations().unwrap();
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the three sample policies, found {seen}"
    );
}

fn valid() -> Value {
    json!({
        "apiVersion": "edgewatt.io/v1alpha1",
        "kind": "EnergyPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "targets": {"nodeSelector": {}},
            "starvation": {"batteryBelowPercent": 20, "for": "2m"},
            "recovery": {"batteryAbovePercent": 35}
        }
    })
}

fn rejected_with(mutate: impl FnOnce(&mut Value), expected: &str) {
    let mut object = valid();
    mutate(&mut object);
    let errors = admit(&object).expect_err("invalid sample was admitted");
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errors:?}"
    );
}

#[test]
fn baseline_sample_is_valid_and_defaulted() {
    let admitted = admit(&valid()).unwrap();
    assert_eq!(admitted["spec"]["action"]["mode"], "Observe");
    assert_eq!(admitted["spec"]["action"]["maxConcurrent"], 2);
    assert_eq!(admitted["spec"]["recovery"]["for"], "5m");
}

#[test]
fn cel_rejects_missing_target_selector() {
    rejected_with(
        |o| o["spec"]["targets"] = json!({}),
        "targets needs nodeSelector, edgeDeviceSelector or both",
    );
}

#[test]
fn cel_rejects_policy_without_starvation_condition() {
    rejected_with(
        |o| o["spec"]["starvation"] = json!({"for": "1m"}),
        "starvation needs at least one condition",
    );
}

#[test]
fn cel_rejects_recovery_not_above_starvation() {
    rejected_with(
        |o| o["spec"]["recovery"]["batteryAbovePercent"] = json!(15),
        "must be greater than starvation.batteryBelowPercent",
    );
    rejected_with(
        |o| o["spec"]["recovery"]["batteryAbovePercent"] = json!(20),
        "must be greater than starvation.batteryBelowPercent",
    );
}

#[test]
fn cel_rejects_query_with_both_or_no_threshold() {
    rejected_with(
        |o| o["spec"]["starvation"]["query"] = json!({"promql": "up", "above": 1, "below": 2}),
        "query needs exactly one of above or below",
    );
    rejected_with(
        |o| o["spec"]["starvation"]["query"] = json!({"promql": "up"}),
        "query needs exactly one of above or below",
    );
}

#[test]
fn openapi_rejects_out_of_range_percent() {
    rejected_with(
        |o| o["spec"]["starvation"]["batteryBelowPercent"] = json!(120),
        "should be less than or equal to 100",
    );
    rejected_with(
        |o| o["spec"]["recovery"]["batteryAbovePercent"] = json!(-1),
        "should be greater than or equal to 0",
    );
}

#[test]
fn openapi_rejects_zero_max_concurrent() {
    rejected_with(
        |o| o["spec"]["action"] = json!({"maxConcurrent": 0}),
        "spec.action.maxConcurrent in body should be greater than or equal to 1",
    );
}

#[test]
fn openapi_rejects_malformed_duration_and_mode() {
    rejected_with(
        |o| o["spec"]["starvation"]["for"] = json!("2 minutes"),
        "should match",
    );
    rejected_with(
        |o| o["spec"]["action"] = json!({"mode": "Evict"}),
        "Unsupported value",
    );
    rejected_with(
        |o| o["spec"]["targets"] = json!("all"),
        "must be of type object",
    );
}

/// kube-apiserver's `ValidateLabelSelectorRequirement` (apimachinery
/// `pkg/apis/meta/v1/validation/validation.go`): the four operators only, values for In/NotIn and
/// none for Exists/DoesNotExist. An unknown operator used to be stored and read as `In`.
#[test]
fn cel_rejects_unknown_selector_operators_and_misplaced_values() {
    let expr = |op: &str, values: Value| json!({"matchExpressions": [{"key": "k", "operator": op, "values": values}]});
    for path in ["nodeSelector", "edgeDeviceSelector"] {
        rejected_with(
            |o| o["spec"]["targets"][path] = expr("in", json!(["a"])),
            "Unsupported value: \"in\"",
        );
        rejected_with(
            |o| o["spec"]["targets"][path] = expr("In", json!([])),
            "values must be non-empty for In and NotIn",
        );
        rejected_with(
            |o| o["spec"]["targets"][path] = expr("Exists", json!(["a"])),
            "empty for Exists and DoesNotExist",
        );
    }
    for path in ["namespaceSelector", "selector"] {
        rejected_with(
            |o| o["spec"]["workloads"] = json!({path: expr("Gt", json!(["1"]))}),
            "Unsupported value: \"Gt\"",
        );
    }
    let mut ok = valid();
    ok["spec"]["targets"]["edgeDeviceSelector"] = json!({"matchExpressions": [
        {"key": "a", "operator": "In", "values": ["x"]},
        {"key": "b", "operator": "DoesNotExist"},
        {"key": "c", "operator": "NotIn", "values": ["y"]},
        {"key": "d", "operator": "Exists"}
    ]});
    ok["spec"]["workloads"] = json!({"selector": {"matchLabels": {"app": "x"}}});
    admit(&ok).unwrap_or_else(|e| panic!("valid selectors rejected: {e:?}"));
}

/// Issue 27: the ladder's settings are checked at admission, each rule naming its field.
#[test]
fn degrade_and_forecast_settings_are_validated() {
    rejected_with(
        |v| v["spec"]["action"]["degrade"] = json!({"steps": ["Throttle", "Throttle"]}),
        "steps must not repeat a step",
    );
    rejected_with(
        |v| v["spec"]["action"]["degrade"] = json!({"steps": ["Shed"]}),
        "Shed",
    );
    rejected_with(
        |v| v["spec"]["action"]["degrade"] = json!({"throttlePercent": 0}),
        "throttlePercent",
    );
    rejected_with(
        |v| v["spec"]["action"]["degrade"] = json!({"margin": "an hour"}),
        "margin",
    );
    rejected_with(
        |v| {
            v["spec"]["criticality"] =
                json!({"criticalPriorityAtLeast": 10, "sheddablePriorityBelow": 100})
        },
        "sheddablePriorityBelow must not exceed criticalPriorityAtLeast",
    );
    rejected_with(
        |v| v["spec"]["forecast"] = json!({"reservePercent": 95}),
        "reservePercent",
    );
    // The forecast condition alone is a starvation condition; false is none.
    let mut only_forecast = valid();
    only_forecast["spec"]["starvation"] = json!({"runwayBelowRecharge": true});
    admit(&only_forecast).unwrap();
    rejected_with(
        |v| v["spec"]["starvation"] = json!({"runwayBelowRecharge": false}),
        "starvation needs at least one condition",
    );
    // Defaults: the ladder's rungs, the forecast, kube-system excluded.
    let mut on = valid();
    on["spec"]["action"]["degrade"] = json!({});
    on["spec"]["workloads"] = json!({});
    let d = admit(&on).unwrap();
    assert_eq!(
        d["spec"]["action"]["degrade"]["steps"],
        json!(["Throttle", "Suspend"])
    );
    assert_eq!(d["spec"]["forecast"]["period"], json!("24h"));
    assert_eq!(
        d["spec"]["workloads"]["excludeNamespaces"],
        json!(["kube-system"])
    );
}
