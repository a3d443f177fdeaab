//! The PowerModel CRD: committed, shipped by the chart, cluster-scoped with a status
//! subresource (exporters read, only the controller writes status), and admission rejects
//! models no estimator could use.

use std::path::{Path, PathBuf};

use edgewatt_crds::{validation, PowerModel};
use kube::CustomResourceExt;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn chart_carries_the_power_model_crd() {
    let generated =
        std::fs::read_to_string(repo().join("crds/edgewatt.io_powermodels.yaml")).unwrap();
    let chart =
        std::fs::read_to_string(repo().join("charts/edgewatt/crds/edgewatt.io_powermodels.yaml"))
            .expect("the chart must ship the PowerModel CRD");
    assert!(
        chart == generated,
        "charts/edgewatt/crds/ differs from crds/: copy it (make crds)"
    );
}

#[test]
fn cluster_scoped_with_a_status_subresource() {
    let crd = PowerModel::crd();
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.plural, "powermodels");
    let v = &crd.spec.versions[0];
    assert!(v.subresources.as_ref().unwrap().status.is_some());
}

fn admit(object: &Value) -> Result<Value, Vec<String>> {
    let schema = validation::schema_of(&PowerModel::crd()).unwrap();
    let defaulted = validation::apply_defaults(&schema, object);
    validation::validate(&schema, &defaulted, None)
        .map(|_| defaulted)
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
}

fn valid() -> Value {
    json!({
        "apiVersion": "edgewatt.io/v1alpha1",
        "kind": "PowerModel",
        "metadata": {"name": "m"},
        "spec": {"cpuModel": "Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz", "threads": 8,
            "curve": "modern", "idleWatts": 50.5, "dynamicWatts": 170.0},
        "status": {"shared": true, "reason": "Shared", "meteredNodes": ["n1"],
            "meteredNodeCount": 1, "samples": 120, "errorPercent": 3.2,
            "lastUpdate": "2026-12-02T04:00:00Z"}
    })
}

#[test]
fn valid_model_round_trips() {
    let admitted = admit(&valid()).unwrap();
    let m: PowerModel = serde_json::from_value(admitted).unwrap();
    assert_eq!(m.spec.board, "", "board defaults to unknown");
    assert_eq!(m.status.unwrap().samples, 120);
}

#[test]
fn unusable_models_are_rejected() {
    for (field, value) in [
        ("idleWatts", json!(-1.0)),
        ("dynamicWatts", json!(-0.5)),
        ("threads", json!(0)),
        ("cpuModel", json!("")),
        ("curve", json!("")),
    ] {
        let mut o = valid();
        o["spec"][field] = value.clone();
        let errors = admit(&o).expect_err(&format!("{field}={value} admitted"));
        assert!(
            errors.iter().any(|e| e.contains(field)),
            "{field}: {errors:?}"
        );
    }
    let mut o = valid();
    o["spec"].as_object_mut().unwrap().remove("idleWatts");
    assert!(admit(&o).is_err(), "a model without coefficients");
}
