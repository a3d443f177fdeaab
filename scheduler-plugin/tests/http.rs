//! The extender's HTTP surface: bad input, fail-open, health and metrics, and a proof by
//! property test that no body makes it panic.

mod common;

use std::time::Duration;

use common::*;
use edgewatt_crds::promql::Signal;
use edgewatt_scheduler::{headroom::Policy, nodes::ViewState, state::AppState};
use proptest::prelude::*;
use serde_json::{json, Value};

#[tokio::test]
async fn malformed_bodies_get_400_with_the_reason() {
    let r = golden_router();
    for (body, needle) in [
        ("{", "EOF"),
        ("[]", "invalid length"),
        (r#"{"NodeNames": ["a"]}"#, "missing field `Pod`"),
        (r#"{"Pod": 7, "NodeNames": ["a"]}"#, "invalid type"),
        ("", "EOF"),
    ] {
        let (status, text) = call(&r, "POST", "/filter", body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(
            text.contains("invalid ExtenderArgs JSON") && text.contains(needle),
            "{body}: {text}"
        );
        let (status, _) = call(&r, "POST", "/prioritize", body).await;
        assert_eq!(status, 400);
    }
}

#[tokio::test]
async fn oversized_body_is_413_naming_the_limit() {
    let mut state = AppState::with_table(Policy::default(), golden_table());
    state.max_body_bytes = 1024;
    let r = router_with(state);
    let big = json!({"Pod": {"metadata": {"name": "p"}}, "NodeNames": vec!["x".repeat(100); 50]})
        .to_string();
    let (status, text) = call(&r, "POST", "/filter", big).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("1024") && text.contains("--max-body-bytes"),
        "{text}"
    );
}

#[tokio::test]
async fn stale_or_missing_data_fails_open() {
    use Signal::*;
    let args =
        json!({"Pod": {"metadata": {"name": "p", "namespace": "x"}}, "NodeNames": ["a", "b"]})
            .to_string();
    let nodes: &[(&str, &[(Signal, f64)])] = &[
        ("a", &[(PowerBudget, 10.0), (NodeWatts, 9.0)]),
        ("b", &[(PowerBudget, 100.0), (NodeWatts, 1.0)]),
    ];
    // fresh: a is rejected, b wins
    let fresh = router_with(AppState::with_table(
        Policy::default(),
        table(nodes, &[], &[]),
    ));
    let (_, body) = call(&fresh, "POST", "/filter", args.clone()).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["NodeNames"],
        json!(["b"])
    );
    // the same numbers, sampled 5 minutes ago (max age 2 minutes): every node passes, equal scores
    let stale = router_with(AppState::with_table(
        Policy::default(),
        table_at(Duration::from_secs(200), 100.0, nodes, &[], &[]),
    ));
    let (_, body) = call(&stale, "POST", "/filter", args.clone()).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"], json!(["a", "b"]), "{body}");
    assert_eq!(v["Error"], "");
    let (_, body) = call(&stale, "POST", "/prioritize", args.clone()).await;
    let scores: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(scores.iter().all(|s| s["Score"] == 5), "{body}");
    // no table at all (Prometheus never answered)
    let none = router_with(AppState::new(Policy::default(), ViewState::Disabled));
    let (status, body) = call(&none, "POST", "/filter", args.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["NodeNames"],
        json!(["a", "b"])
    );
    let (status, _) = call(&none, "GET", "/readyz", "").await;
    assert_eq!(status, 503, "not ready before the first refresh attempt");
    // fail-open is counted
    let (_, metrics) = call(&stale, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("edgewatt_scheduler_requests_total{verb=\"filter\",code=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("fail_open") && !l.starts_with('#')),
        "{metrics}"
    );
}

#[tokio::test]
async fn decisions_on_fixtures() {
    use Signal::*;
    let nodes: &[(&str, &[(Signal, f64)])] = &[
        ("roomy", &[(PowerBudget, 100.0), (NodeWatts, 20.0)]),
        ("tight", &[(PowerBudget, 100.0), (NodeWatts, 80.0)]),
        (
            "battery-ok",
            &[
                (NodeWatts, 10.0),
                (BatteryRatio, 0.8),
                (BatteryEnergy, 180_000.0),
                (BatteryDraw, 10.0),
                (ExternalPower, 0.0),
            ],
        ),
        (
            "battery-short",
            &[
                (NodeWatts, 10.0),
                (BatteryRatio, 0.5),
                (BatteryEnergy, 3_000.0),
                (BatteryDraw, 10.0),
                (ExternalPower, 0.0),
            ],
        ),
        (
            "mains-low",
            &[
                (NodeWatts, 10.0),
                (BatteryRatio, 0.05),
                (ExternalPower, 1.0),
            ],
        ),
    ];
    let policy = Policy {
        default_budget_watts: Some(60.0),
        ..Policy::default()
    };
    // pods of shop/db draw 12 W
    let r = router_with(AppState::with_table(
        policy,
        table(
            nodes,
            &[],
            &[("shop", "db-0", 12.0), ("shop", "db-1", 12.0)],
        ),
    ));
    let pod = json!({"metadata": {"name": "db-2", "namespace": "shop", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]}});
    let names = ["roomy", "tight", "battery-ok", "battery-short", "mains-low"];
    let (_, body) = call(
        &r,
        "POST",
        "/filter",
        json!({"Pod": pod, "NodeNames": names}).to_string(),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    // tight: 100 − 80 − 12 = 8 W ≥ 5 → fits; with the pod's 12 W a 20-W-headroom node is fine
    assert_eq!(
        v["NodeNames"],
        json!(["roomy", "tight", "battery-ok", "mains-low"]),
        "{body}"
    );
    let reason = v["FailedAndUnresolvableNodes"]["battery-short"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("min left"),
        "3 kJ at 22 W is ~2 min: {reason}"
    );
    let (_, body) = call(
        &r,
        "POST",
        "/prioritize",
        json!({"Pod": pod, "NodeNames": names}).to_string(),
    )
    .await;
    let scores: std::collections::BTreeMap<String, i64> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["Host"].as_str().unwrap().to_string(),
                h["Score"].as_i64().unwrap(),
            )
        })
        .collect();
    // share of the budget left after the pod: roomy 68/100 → 7, battery-ok 38/60 (default
    // budget; battery at 80 % does not cap it) → 6, mains-low 38/60 → 6, tight 8/100 → 1
    assert_eq!(scores["roomy"], 7, "{scores:?}");
    assert_eq!(scores["battery-ok"], 6, "{scores:?}");
    assert_eq!(scores["mains-low"], 6, "{scores:?}");
    assert_eq!(scores["tight"], 1, "{scores:?}");
    assert_eq!(scores["battery-short"], 0);
    // a pod with no history adds nothing: tight then has 20 W
    let (_, body) = call(
        &r,
        "POST",
        "/filter",
        json!({"Pod": {"metadata": {"name": "new", "namespace": "shop"}}, "NodeNames": ["tight"]})
            .to_string(),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["NodeNames"],
        json!(["tight"])
    );
}

fn arbitrary_body() -> impl Strategy<Value = Vec<u8>> {
    let json_like = prop::collection::vec(
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            "\"Pod\"",
            "\"NodeNames\"",
            "\"Nodes\"",
            "\"pod\"",
            ":",
            ",",
            "null",
            "1e400",
            "-1",
            "\"n1\"",
            "{\"metadata\":{\"name\":\"p\"}}",
            "{\"items\":[{\"metadata\":{\"name\":\"n2\"}}]}",
            "\"\\u0000\"",
            "true",
        ]),
        0..40,
    )
    .prop_map(|parts| parts.concat().into_bytes());
    prop_oneof![prop::collection::vec(any::<u8>(), 0..300), json_like]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6000))]
    /// 12 000 requests (6 000 cases × both verbs): only 200 or 400, never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(body in arbitrary_body()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = golden_router();
        for verb in ["/filter", "/prioritize"] {
            let (status, _) = rt.block_on(call(&r, "POST", verb, body.clone()));
            prop_assert!(status == 200 || status == 400, "{verb}: {status}");
        }
    }
}
