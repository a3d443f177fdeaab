//! Property tests of the prioritize scores (issue 18): monotone in headroom, a node without data
//! never above a measured node with half its budget free, never NaN, always in 0..=10 — the
//! range of upstream `MaxExtenderPriority` (`k8s.io/kube-scheduler/extender/v1/types.go`), which
//! kube-scheduler multiplies by the weight without checking (`schedule_one.go`
//! `prioritizeNodes`).

mod common;

use std::time::SystemTime;

use common::table;
use edgewatt_crds::promql::Signal;
use edgewatt_scheduler::{
    headroom::{prioritize, Inputs, Policy, Unmeasured},
    nodes::{NodeView, ViewState},
    protocol::ExtenderArgs,
};
use proptest::prelude::*;
use serde_json::json;

fn args(names: &[&str]) -> ExtenderArgs {
    serde_json::from_value(
        json!({"Pod": {"metadata": {"name": "p", "namespace": "x"}}, "NodeNames": names}),
    )
    .unwrap()
}

/// Scores of nodes `(name, budget, draw)` plus one node "unknown" without data.
fn scores(policy: &Policy, nodes: &[(&str, f64, f64)]) -> Vec<i64> {
    let rows: Vec<(&str, Vec<(Signal, f64)>)> = nodes
        .iter()
        .map(|(n, b, d)| (*n, vec![(Signal::PowerBudget, *b), (Signal::NodeWatts, *d)]))
        .collect();
    let rows: Vec<(&str, &[(Signal, f64)])> =
        rows.iter().map(|(n, s)| (*n, s.as_slice())).collect();
    let t = table(&rows, &[], &[]);
    let view = NodeView::new(ViewState::Disabled);
    let mut names: Vec<&str> = nodes.iter().map(|n| n.0).collect();
    names.push("unknown");
    let inputs = Inputs {
        table: Some(&t),
        nodes: &view,
        policy,
        now: SystemTime::now(),
    };
    let request = args(&names);
    let (out, _) = prioritize(&inputs, &request);
    out.into_iter().map(|h| h.score).collect()
}

fn policies() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(vec![
            Unmeasured::Cautious,
            Unmeasured::Neutral,
            Unmeasured::Last,
        ]),
        0.0f64..20.0,
    )
        .prop_map(|(unmeasured, min_headroom_watts)| Policy {
            unmeasured,
            min_headroom_watts,
            ..Policy::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Less draw on the same budget never scores lower.
    #[test]
    fn monotone_in_headroom(policy in policies(), budget in 1.0f64..5000.0, a in 0.0f64..1.2, b in 0.0f64..1.2) {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let s = scores(&policy, &[("more-headroom", budget, budget * lo), ("less-headroom", budget, budget * hi)]);
        prop_assert!(s[0] >= s[1], "draw {lo} scores {} < draw {hi} scores {}", s[0], s[1]);
    }

    /// Whatever the unmeasured policy, a node without data never ranks above a measured one
    /// with at least half of its budget left (and so passing the filter: half of ≥ 40 W is at
    /// least the largest `min_headroom_watts` drawn).
    #[test]
    fn unknown_never_above_comfortable(policy in policies(), budget in 40.0f64..5000.0, used in 0.0f64..=0.5) {
        let s = scores(&policy, &[("comfortable", budget, budget * used)]);
        prop_assert!(s[1] <= s[0], "unknown {} above measured {} ({}% used)", s[1], s[0], used * 100.0);
    }

    /// Any numbers Prometheus may hand over — NaN, ±inf, negative, huge — give scores in 0..=10.
    #[test]
    fn always_in_range(policy in policies(), nodes in prop::collection::vec((any::<f64>(), any::<f64>()), 1..8)) {
        let named: Vec<(String, f64, f64)> = nodes.iter().enumerate().map(|(i, (b, d))| (format!("n{i}"), *b, *d)).collect();
        let refs: Vec<(&str, f64, f64)> = named.iter().map(|(n, b, d)| (n.as_str(), *b, *d)).collect();
        for s in scores(&policy, &refs) {
            prop_assert!((0..=10).contains(&s), "score {s}");
        }
    }
}

/// Absolute, not relative: a huge node does not flatten the others (it flattened every other
/// node to 1 when scores were proportional to the best candidate's headroom).
#[test]
fn one_huge_node_does_not_flatten_the_rest() {
    let p = Policy::default();
    let s = scores(
        &p,
        &[
            ("huge", 100_000.0, 0.0),
            ("half", 100.0, 50.0),
            ("tight", 100.0, 85.0),
        ],
    );
    assert_eq!(&s[..3], [10, 5, 2]);
    assert_eq!(s[3], 3, "unknown, cautious");
}

/// Until the Node watcher has listed the nodes, an annotation could override any budget: no
/// headroom is judged (the node scores as unmeasured), but starvation and battery still are.
#[test]
fn budgets_unknown_until_nodes_are_listed() {
    let t = table(
        &[
            (
                "a",
                &[(Signal::PowerBudget, 100.0), (Signal::NodeWatts, 98.0)],
            ),
            (
                "b",
                &[(Signal::NodeWatts, 10.0), (Signal::BatteryRatio, 0.05)],
            ),
        ],
        &[],
        &[],
    );
    let policy = Policy::default();
    let view = NodeView::new(ViewState::Syncing);
    let inputs = Inputs {
        table: Some(&t),
        nodes: &view,
        policy: &policy,
        now: SystemTime::now(),
    };
    let (r, _) = edgewatt_scheduler::headroom::filter(&inputs, args(&["a", "b"]));
    assert_eq!(r.node_names, Some(vec!["a".to_string()]), "{r:?}");
    assert!(r.failed_and_unresolvable_nodes["b"].contains("battery"));
    let request = args(&["a"]);
    let (s, _) = prioritize(&inputs, &request);
    assert_eq!(s[0].score, 3);
    // synced, without an annotation: the budget metric applies and a is full
    let view = NodeView::synced([]);
    let inputs = Inputs {
        nodes: &view,
        ..inputs
    };
    let (r, _) = edgewatt_scheduler::headroom::filter(&inputs, args(&["a"]));
    assert!(r.failed_and_unresolvable_nodes.contains_key("a"), "{r:?}");
}

/// The published table carries the Node view's facts so a measured node costs one lookup per
/// candidate; a fact that changes after publication (the controller's taint, an annotation
/// edited) must still be seen at once, not at the next refresh.
#[test]
fn node_facts_changed_after_the_table_was_published_are_seen_at_once() {
    use edgewatt_scheduler::{nodes::NodeFacts, state::AppState};
    let t = table(
        &[
            (
                "a",
                &[(Signal::PowerBudget, 100.0), (Signal::NodeWatts, 40.0)],
            ),
            (
                "b",
                &[(Signal::PowerBudget, 100.0), (Signal::NodeWatts, 40.0)],
            ),
        ],
        &[],
        &[],
    );
    let budget = |w| NodeFacts {
        budget_watts: Some(w),
        starved_taint: false,
    };
    let state = AppState::with_view(
        Policy::default(),
        t,
        NodeView::synced([
            ("a".to_string(), budget(50.0)),
            ("b".to_string(), budget(200.0)),
        ]),
    );
    let decide = || {
        state.decide(|inputs| {
            let (r, _) = edgewatt_scheduler::headroom::filter(inputs, args(&["a", "b"]));
            let request = args(&["a", "b"]);
            let (s, _) = prioritize(inputs, &request);
            (r, s.into_iter().map(|h| h.score).collect::<Vec<_>>())
        })
    };
    // joined: the annotations (50 W and 200 W), not the metric's 100 W, decide
    let (r, s) = decide();
    assert_eq!(
        r.node_names.as_deref().map(<[String]>::len),
        Some(2),
        "{r:?}"
    );
    assert!(
        s[0] < s[1],
        "a has 10 W of 50 W left, b 160 W of 200 W: {s:?}"
    );
    // the controller taints b after the table was published
    state.update_node(
        "b".to_string(),
        Some(NodeFacts {
            budget_watts: Some(200.0),
            starved_taint: true,
        }),
    );
    let (r, _) = decide();
    assert!(
        r.failed_and_unresolvable_nodes["b"].contains("energy-starved"),
        "the taint was not seen before the next refresh: {r:?}"
    );
    // the annotation of a is raised: seen at once too
    state.update_node("a".to_string(), Some(budget(1000.0)));
    let (_, s) = decide();
    assert!(s[0] >= 9, "a now has 960 W of 1000 W left: {s:?}");
}
