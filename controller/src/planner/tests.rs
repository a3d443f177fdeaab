use super::*;
use chrono::TimeZone;
use edgewatt_crds::{Action as PolicyAction, Recovery, Starvation, Targets};
use proptest::prelude::*;

pub(crate) fn t0() -> Time {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// Generous: these tests step minutes apart and are not about gaps.
const MAX_GAP: std::time::Duration = std::time::Duration::from_secs(7200);

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

pub(crate) fn spec(mode: Mode) -> EnergyPolicySpec {
    EnergyPolicySpec {
        targets: Targets::default(),
        workloads: None,
        starvation: Starvation {
            battery_below_percent: Some(20.0),
            min_runtime_minutes: None,
            power_above_watts: None,
            query: None,
            runway_below_recharge: None,
            for_: "2m".into(),
        },
        recovery: Some(Recovery {
            battery_above_percent: Some(35.0),
            for_: "5m".into(),
        }),
        action: PolicyAction {
            mode,
            max_concurrent: 2,
            max_per_hour: 20,
            ..Default::default()
        },
        scheduling: Default::default(),
        criticality: None,
        forecast: Default::default(),
    }
}

fn device(name: &str, battery: Option<f64>) -> TargetSnapshot {
    TargetSnapshot {
        id: TargetId::device("edge", name),
        labels: BTreeMap::new(),
        in_policy: true,
        alive: true,
        taints: vec![],
        tainted: false,
        taint_ours: false,
        signals: TargetSignals {
            battery_ratio: battery,
            ..Default::default()
        },
    }
}

fn node(name: &str, battery: Option<f64>) -> TargetSnapshot {
    TargetSnapshot {
        id: TargetId::node(name),
        ..device(name, battery)
    }
}

fn ew(name: &str, on: &str) -> WorkloadSnapshot {
    WorkloadSnapshot {
        id: WorkloadId {
            kind: WorkloadKind::EdgeWorkload,
            namespace: "edge".into(),
            name: name.into(),
        },
        target: Some(on.into()),
        pinned: false,
        ineligible: None,
        in_flight: false,
        pdb_blocked: false,
        constraints: Constraints::EdgeWorkload {
            device_selector: None,
        },
        owner: None,
        placement: Placement::Device,
        running: true,
        host_bound: None,
        tolerates_starvation: false,
        ladder: Default::default(),
    }
}

fn pod(name: &str, on: &str) -> WorkloadSnapshot {
    WorkloadSnapshot {
        id: WorkloadId {
            kind: WorkloadKind::Pod,
            namespace: "default".into(),
            name: name.into(),
        },
        constraints: Constraints::Pod {
            node_selector: BTreeMap::new(),
            affinity_terms: vec![],
            tolerations: vec![],
        },
        ..ew(name, on)
    }
}

struct Sim {
    spec: EnergyPolicySpec,
    durations: PolicyDurations,
    states: TargetStates,
    history: MoveHistory,
}

impl Sim {
    fn new(spec: EnergyPolicySpec) -> Self {
        let durations = spec.durations().unwrap();
        Self {
            spec,
            durations,
            states: TargetStates::default(),
            history: MoveHistory::default(),
        }
    }
    fn step(
        &mut self,
        now: Time,
        targets: &[TargetSnapshot],
        workloads: &[WorkloadSnapshot],
    ) -> Plan {
        let plan = plan(&PlanInput {
            spec: &self.spec,
            durations: &self.durations,
            now,
            targets,
            workloads,
            previous: &self.states,
            history: &self.history,
            max_gap: MAX_GAP,
        });
        self.states = plan.states.clone();
        for a in &plan.actions {
            match a {
                Action::Evict {
                    pod,
                    owner,
                    siblings,
                    ..
                } => {
                    self.history.record(pod.clone(), owner.as_deref(), now);
                    if let Some(o) = owner {
                        self.history.record_drain(o, pod, siblings);
                    }
                }
                Action::MigrateEdgeWorkload { workload, .. } => {
                    self.history.record(workload.clone(), None, now)
                }
                _ => {}
            }
        }
        plan
    }
}

#[test]
fn starves_only_after_for_and_recovers_after_recovery_for() {
    let mut sim = Sim::new(spec(Mode::Migrate));
    let low = [device("a", Some(0.1)), device("b", Some(0.9))];
    let p = sim.step(t0(), &low, &[]);
    assert_eq!(p.starved().count(), 0);
    let p = sim.step(t0() + secs(119), &low, &[]);
    assert_eq!(p.starved().count(), 0);
    let p = sim.step(t0() + secs(120), &low, &[]);
    let starved: Vec<_> = p
        .starved()
        .map(|(id, _, i)| (id.name.clone(), i.since))
        .collect();
    assert_eq!(starved, vec![("a".to_string(), t0())]);
    assert!(matches!(p.transitions[0], Transition::Starved { .. }));
    // Between thresholds: stays starved indefinitely.
    let mid = [device("a", Some(0.3)), device("b", Some(0.9))];
    let p = sim.step(t0() + secs(3600), &mid, &[]);
    assert_eq!(p.starved().count(), 1);
    let high = [device("a", Some(0.5)), device("b", Some(0.9))];
    let p = sim.step(t0() + secs(4000), &high, &[]);
    assert_eq!(p.starved().count(), 1);
    let p = sim.step(t0() + secs(4299), &high, &[]);
    assert_eq!(p.starved().count(), 1);
    let p = sim.step(t0() + secs(4300), &high, &[]);
    assert_eq!(p.starved().count(), 0);
    assert!(matches!(p.transitions[0], Transition::Recovered { .. }));
}

#[test]
fn a_break_in_the_condition_resets_the_timer() {
    let mut sim = Sim::new(spec(Mode::Migrate));
    sim.step(t0(), &[device("a", Some(0.1))], &[]);
    sim.step(t0() + secs(60), &[device("a", Some(0.25))], &[]);
    let p = sim.step(t0() + secs(130), &[device("a", Some(0.1))], &[]);
    assert_eq!(p.starved().count(), 0);
    let p = sim.step(t0() + secs(250), &[device("a", Some(0.1))], &[]);
    assert_eq!(p.starved().count(), 1);
}

#[test]
fn unknown_data_changes_nothing() {
    let mut sim = Sim::new(spec(Mode::Migrate));
    sim.step(t0(), &[node("a", Some(0.1))], &[]);
    let before = sim.states.clone();
    let p = sim.step(t0() + secs(600), &[node("a", None)], &[pod("p", "a")]);
    assert_eq!(p.states, before);
    assert!(p.actions.is_empty());
    // Starved, then unknown: no untaint, no eviction, still starved.
    sim.step(t0() + secs(700), &[node("a", Some(0.1))], &[]);
    assert_eq!(
        sim.states.values().filter(|s| s.starved.is_some()).count(),
        1
    );
    let before = sim.states.clone();
    let mut tainted = node("a", None);
    tainted.tainted = true;
    let p = sim.step(
        t0() + secs(9000),
        &[tainted, node("b", None)],
        &[pod("p", "a")],
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(
        p.states.get(&TargetId::node("a")),
        before.get(&TargetId::node("a"))
    );
}

#[test]
fn conditions_runtime_power_custom() {
    let mut s = spec(Mode::Migrate);
    s.starvation.battery_below_percent = None;
    s.recovery = None;
    s.starvation.min_runtime_minutes = Some(30.0);
    s.starvation.power_above_watts = Some(5.0);
    let sig = TargetSignals {
        battery_energy_joules: Some(20.0 * 60.0 * 10.0), // 20 min at 10 W
        battery_draw_watts: Some(10.0),
        watts: Some(50.0),
        budget_watts: Some(60.0),
        ..Default::default()
    };
    match starvation(&s, &sig) {
        Eval::Holds(r) => assert!(r.contains("runtime 20 min"), "{r}"),
        e => panic!("{e:?}"),
    }
    let mains = TargetSignals {
        external_power: Some(true),
        ..sig
    };
    assert_eq!(starvation(&s, &mains), Eval::Clear);
    let over = TargetSignals {
        watts: Some(70.0),
        ..mains
    };
    assert!(matches!(starvation(&s, &over), Eval::Holds(r) if r.contains("exceeds budget")));
    let no_budget = TargetSignals {
        budget_watts: None,
        ..mains
    };
    assert_eq!(starvation(&s, &no_budget), Eval::Unknown);
    s.starvation.query = Some(edgewatt_crds::CustomQuery {
        promql: "x".into(),
        above: None,
        below: Some(3.0),
    });
    let custom = TargetSignals {
        custom: Some(2.0),
        ..no_budget
    };
    assert!(matches!(starvation(&s, &custom), Eval::Holds(_)));
}

fn starved_setup(mode: Mode) -> (Sim, Vec<TargetSnapshot>) {
    let mut sim = Sim::new(spec(mode));
    let targets = vec![
        device("a", Some(0.1)),
        device("b", Some(0.6)),
        device("c", Some(0.8)),
        node("n1", Some(0.1)),
        node("n2", Some(0.9)),
    ];
    sim.step(t0(), &targets, &[]);
    (sim, targets)
}

#[test]
fn migrates_to_most_headroom_taints_and_evicts() {
    let (mut sim, targets) = starved_setup(Mode::Migrate);
    let workloads = vec![ew("w1", "a"), pod("p1", "n1")];
    let p = sim.step(t0() + secs(120), &targets, &workloads);
    assert_eq!(
        p.actions,
        vec![
            // Starved devices carry the starvation label (nothing selector-placed leaves here).
            Action::LabelDevice {
                device: TargetId::device("edge", "a"),
                leaving: vec![]
            },
            Action::Taint { node: "n1".into() },
            Action::Evict {
                pod: workloads[1].id.clone(),
                node: "n1".into(),
                owner: None,
                siblings: vec![],
            },
            Action::MigrateEdgeWorkload {
                workload: workloads[0].id.clone(),
                from: "a".into(),
                to: "c".into()
            },
        ]
    );
}

#[test]
fn observe_mode_emits_only_dry_run() {
    let (mut sim, targets) = starved_setup(Mode::Observe);
    let p = sim.step(
        t0() + secs(120),
        &targets,
        &[ew("w1", "a"), pod("p1", "n1")],
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.dry_run.len(), 4);
    assert_eq!(p.starved().count(), 2);
}

#[test]
fn device_selector_tie_break_and_no_target() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    targets[1].signals.battery_ratio = Some(0.8); // b ties with c: name wins
    let mut w = ew("w1", "a");
    let p = sim.step(t0() + secs(120), &targets, std::slice::from_ref(&w));
    assert!(matches!(&p.actions[..], [_, _, Action::MigrateEdgeWorkload { to, .. }] if to == "b"));
    w.constraints = Constraints::EdgeWorkload {
        device_selector: Some(Selector {
            match_labels: [("gpu".to_string(), "yes".to_string())].into(),
            match_expressions: vec![],
        }),
    };
    let mut sim2 = Sim::new(spec(Mode::Migrate));
    sim2.step(t0(), &targets, &[]);
    let p = sim2.step(t0() + secs(120), &targets, std::slice::from_ref(&w));
    assert_eq!(p.skipped[0].reason, SkipReason::NoTarget);
    targets[2].labels.insert("gpu".into(), "yes".into());
    let p = sim2.step(t0() + secs(121), &targets, std::slice::from_ref(&w));
    assert!(matches!(&p.actions[..], [_, _, Action::MigrateEdgeWorkload { to, .. }] if to == "c"));
}

#[test]
fn no_target_rejections_say_why_each_device_was_not_chosen() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    targets[1].alive = false; // b: phase not up or heartbeat stopped
    targets[2].signals.battery_ratio = None; // c: battery unknown
    targets.push(TargetSnapshot {
        id: TargetId::device("other", "d"),
        ..device("d", Some(0.9))
    });
    let w = ew("w1", "a");
    let p = sim.step(t0() + secs(120), &targets, std::slice::from_ref(&w));
    assert_eq!(p.skipped[0].reason, SkipReason::NoTarget);
    assert!(p.unknown.contains(&TargetId::device("edge", "c")));
    assert_eq!(p.unfit(&targets[0]), Some(Unfit::Starved));
    assert_eq!(p.unfit(&targets[1]), Some(Unfit::NotAlive));
    assert_eq!(p.unfit(&targets[2]), Some(Unfit::UnknownData));
    assert_eq!(p.unfit(&targets[4]), None, "n2 could take pods");
    // Other devices of the workload's namespace only; its own device is no candidate.
    let r = p.rejections(&targets, &w);
    assert_eq!(
        r,
        vec![
            (&targets[1].id, Rejection::Unfit(Unfit::NotAlive)),
            (&targets[2].id, Rejection::Unfit(Unfit::UnknownData)),
        ]
    );
    // Constraints are named when the device itself is fit.
    targets[1].alive = true;
    let mut w = w;
    w.constraints = Constraints::EdgeWorkload {
        device_selector: Some(Selector {
            match_labels: [("gpu".to_string(), "yes".to_string())].into(),
            match_expressions: vec![],
        }),
    };
    let p = sim.step(t0() + secs(121), &targets, std::slice::from_ref(&w));
    assert_eq!(p.skipped[0].reason, SkipReason::NoTarget);
    assert_eq!(
        p.rejections(&targets, &w)[0],
        (&targets[1].id, Rejection::Constraints)
    );
}

#[test]
fn pods_not_evicted_when_no_node_accepts_them() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    targets[4].taints.push(TaintSpec {
        key: "dedicated".into(),
        value: Some("x".into()),
        effect: "NoSchedule".into(),
    });
    let mut p1 = pod("p1", "n1");
    let p = sim.step(t0() + secs(120), &targets, std::slice::from_ref(&p1));
    assert_eq!(p.skipped[0].reason, SkipReason::NoTarget);
    p1.constraints = Constraints::Pod {
        node_selector: BTreeMap::new(),
        affinity_terms: vec![],
        tolerations: vec![TolerationSpec {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("x".into()),
            effect: None,
        }],
    };
    let p = sim.step(t0() + secs(121), &targets, std::slice::from_ref(&p1));
    assert!(p.actions.iter().any(|a| matches!(a, Action::Evict { .. })));
}

/// Issue #28: a target with a forecast takes on a starved target's work only within its spare
/// watts (what it could draw more and still reach its forecast recharge), and each assignment
/// of the cycle spends them: `simulate` sent pods to nodes that died before sunrise, where
/// they were starved again and moved back.
#[test]
fn work_goes_only_where_the_forecast_spare_carries_it() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    let watts = |mut w: WorkloadSnapshot, x: f64| {
        w.ladder.watts = Some(x);
        w
    };
    let workloads = vec![
        watts(pod("p1", "n1"), 6.0),
        watts(pod("p2", "n1"), 6.0),
        watts(ew("w1", "a"), 3.0),
    ];
    let evicted = |p: &Plan| {
        p.actions
            .iter()
            .filter(|a| matches!(a, Action::Evict { .. }))
            .count()
    };
    targets[4].signals.runway_spare_watts = Some(5.0);
    targets[1].signals.runway_spare_watts = Some(1.0);
    targets[2].signals.runway_spare_watts = Some(2.9);
    let p = sim.step(t0() + secs(120), &targets, &workloads);
    assert_eq!(evicted(&p), 0, "{:?}", p.actions);
    assert!(
        p.skipped.iter().all(|s| s.reason == SkipReason::NoTarget),
        "{:?}",
        p.skipped
    );
    // 8 W carry one 6 W pod, not two; the EdgeWorkload goes to b, which can carry it, rather
    // than to c with the most headroom.
    targets[4].signals.runway_spare_watts = Some(8.0);
    targets[1].signals.runway_spare_watts = Some(3.5);
    let p = sim.step(t0() + secs(121), &targets, &workloads);
    assert_eq!(evicted(&p), 1, "{:?}", p.actions);
    assert!(p.actions.contains(&Action::MigrateEdgeWorkload {
        workload: workloads[2].id.clone(),
        from: "a".into(),
        to: "b".into()
    }));
}

/// Issue #28: the taint steers pods to a healthy node; with every node starved it would only
/// leave the pods that must start somewhere (a dark node's, a restored Deployment's) Pending
/// everywhere, so starved nodes are untainted until one node is healthy again. (kube-scheduler's
/// TaintToleration filter, `pkg/scheduler/framework/plugins/tainttoleration`: a NoSchedule taint
/// the pod does not tolerate makes the node unschedulable for it.)
#[test]
fn starved_nodes_are_tainted_only_while_some_node_is_healthy() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    targets[4].signals.battery_ratio = Some(0.1);
    let p = sim.step(t0() + secs(120), &targets, &[]);
    assert!(p.actions.contains(&Action::Taint { node: "n1".into() }));
    targets[3] = tainted(targets[3].clone());
    let p = sim.step(t0() + secs(240), &targets, &[pod("p1", "n1")]);
    assert!(p.actions.contains(&Action::Untaint { node: "n1".into() }));
    assert!(!p
        .actions
        .iter()
        .any(|a| matches!(a, Action::Taint { .. } | Action::Evict { .. })));
    targets[3].tainted = false;
    targets[3].taint_ours = false;
    targets[4].signals.battery_ratio = Some(0.9);
    sim.step(t0() + secs(300), &targets, &[]);
    let p = sim.step(t0() + secs(600), &targets, &[]);
    assert!(
        p.actions.contains(&Action::Taint { node: "n1".into() }),
        "{:?}",
        p.actions
    );
}

#[test]
fn untaints_after_recovery() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    sim.step(t0() + secs(120), &targets, &[]);
    targets[3] = tainted(targets[3].clone());
    targets[3].signals.battery_ratio = Some(0.9);
    sim.step(t0() + secs(200), &targets, &[]);
    let p = sim.step(t0() + secs(500), &targets, &[]);
    assert!(p.actions.contains(&Action::Untaint { node: "n1".into() }));
}

// ---------- properties ----------

#[derive(Debug, Clone)]
struct World {
    targets: Vec<TargetSnapshot>,
    workloads: Vec<WorkloadSnapshot>,
    history: MoveHistory,
    max_concurrent: u32,
    max_per_hour: u32,
}

fn arb_world() -> impl Strategy<Value = World> {
    let target = (
        any::<bool>(),
        0usize..8,
        prop::option::of(0.0f64..1.0),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    let workload = (
        any::<bool>(),
        0usize..8,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u32..4,
    );
    (
        prop::collection::vec(target, 1..8),
        prop::collection::vec(workload, 0..30),
        0u32..3,
        1u32..4,
        1u32..6,
        0u32..6,
        prop::collection::vec(0i64..4000, 0..4),
    )
        .prop_map(|(ts, ws, in_flight, mc, mph, recent, cooled)| {
            let targets: Vec<TargetSnapshot> = ts
                .iter()
                .enumerate()
                .map(|(i, (is_node, _, battery, alive, gpu, in_policy))| {
                    let name = format!("t{i}");
                    let mut t = if *is_node {
                        node(&name, *battery)
                    } else {
                        device(&name, *battery)
                    };
                    t.alive = *alive;
                    t.in_policy = *in_policy || i % 2 == 0;
                    if *gpu {
                        t.labels.insert("gpu".into(), "yes".into());
                    }
                    t
                })
                .collect();
            let n = targets.len();
            let workloads = ws
                .iter()
                .enumerate()
                .map(|(i, (is_pod, on, pinned, inel, sel, inflight, _))| {
                    let name = format!("w{i}");
                    let on = format!("t{}", on % n);
                    let mut w = if *is_pod {
                        pod(&name, &on)
                    } else {
                        ew(&name, &on)
                    };
                    w.pinned = *pinned && i % 3 == 0;
                    w.ineligible = (*inel && i % 4 == 1).then(|| "DaemonSet".into());
                    w.in_flight = *inflight && i % 5 == 2;
                    w.pdb_blocked = *is_pod && i % 7 == 3;
                    if *sel {
                        w.constraints = match w.constraints {
                            Constraints::Pod { .. } => Constraints::Pod {
                                node_selector: [("gpu".to_string(), "yes".to_string())].into(),
                                affinity_terms: vec![],
                                tolerations: vec![],
                            },
                            Constraints::EdgeWorkload { .. } => Constraints::EdgeWorkload {
                                device_selector: Some(Selector {
                                    match_labels: [("gpu".to_string(), "yes".to_string())].into(),
                                    match_expressions: vec![],
                                }),
                            },
                        };
                    }
                    w
                })
                .collect::<Vec<_>>();
            let mut history = MoveHistory {
                in_flight,
                ..Default::default()
            };
            for k in 0..recent {
                history.recent_moves.push(t0() + secs(100 + k as i64 * 60));
            }
            for (k, ago) in cooled.iter().enumerate() {
                if let Some(w) = workloads.get(k * 3) {
                    history
                        .last_moved
                        .insert(w.id.clone(), t0() + secs(3600) - secs(*ago));
                }
            }
            World {
                targets,
                workloads,
                history,
                max_concurrent: mc,
                max_per_hour: mph,
            }
        })
}

/// Runs the world twice (t0 to establish conditions, t0+1h to act) and returns the second plan.
fn run_world(w: &World) -> (Plan, EnergyPolicySpec) {
    let mut s = spec(Mode::Migrate);
    s.action.max_concurrent = w.max_concurrent;
    s.action.max_per_hour = w.max_per_hour;
    let durations = s.durations().unwrap();
    let first = plan(&PlanInput {
        spec: &s,
        durations: &durations,
        now: t0(),
        targets: &w.targets,
        workloads: &[],
        previous: &TargetStates::default(),
        history: &MoveHistory::default(),
        max_gap: MAX_GAP,
    });
    let second = plan(&PlanInput {
        spec: &s,
        durations: &durations,
        now: t0() + secs(3600),
        targets: &w.targets,
        workloads: &w.workloads,
        previous: &first.states,
        history: &w.history,
        max_gap: MAX_GAP,
    });
    (second, s)
}

fn moved(a: &Action) -> Option<&WorkloadId> {
    match a {
        Action::Evict { pod, .. } => Some(pod),
        Action::MigrateEdgeWorkload { workload, .. } => Some(workload),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn prop_safety(w in arb_world()) {
        let (p, s) = run_world(&w);
        let now = t0() + secs(3600);
        let moves: Vec<&WorkloadId> = p.actions.iter().filter_map(moved).collect();
        // limits
        prop_assert!(moves.len() as u32 + w.history.in_flight <= s.action.max_concurrent.max(w.history.in_flight));
        prop_assert!(moves.len() as u32 + w.history.moves_last_hour(now) <= s.action.max_per_hour.max(w.history.moves_last_hour(now)));
        let by_id: HashMap<&WorkloadId, &WorkloadSnapshot> = w.workloads.iter().map(|x| (&x.id, x)).collect();
        let target = |kind: TargetKind, name: &str| w.targets.iter().find(|t| t.id.kind == kind && t.id.name == name).unwrap();
        for a in &p.actions {
            if let Some(id) = moved(a) {
                let wl = by_id[id];
                prop_assert!(!wl.pinned && wl.ineligible.is_none() && !wl.in_flight && !wl.pdb_blocked);
                if let Some(at) = w.history.last_moved.get(id) {
                    prop_assert!(now - *at >= chrono::Duration::from_std(s.durations().unwrap().cooldown).unwrap());
                }
            }
            match a {
                Action::MigrateEdgeWorkload { workload, from, to } => {
                    let dest = target(TargetKind::EdgeDevice, to);
                    let src = target(TargetKind::EdgeDevice, from);
                    prop_assert!(dest.alive && to != from);
                    prop_assert!(p.states[&dest.id].starved.is_none());
                    prop_assert!(p.states[&src.id].starved.is_some());
                    prop_assert!(dest.signals.battery_ratio.is_some());
                    prop_assert!(by_id[workload].constraints.accepts(&dest.labels, &dest.taints));
                }
                Action::Evict { node, .. } => {
                    let src = target(TargetKind::Node, node);
                    prop_assert!(p.states[&src.id].starved.is_some());
                    prop_assert!(src.signals.battery_ratio.is_some());
                }
                Action::Taint { node } => {
                    prop_assert!(p.states[&TargetId::node(node)].starved.is_some());
                }
                Action::Untaint { .. } | Action::LabelDevice { .. } | Action::UnlabelDevice { .. } => {}
            }
            if let Action::Evict { pod, node, .. } = a {
                // Never onto a node that could take it straight back.
                let src = target(TargetKind::Node, node);
                let taint = Action::Taint { node: node.clone() };
                prop_assert!(src.tainted || p.actions.contains(&taint), "evicted from an untainted node");
                prop_assert!(!by_id[pod].tolerates_starvation);
            }
        }
    }

    #[test]
    fn prop_unknown_data_no_action_no_change(w in arb_world()) {
        let (p, s) = run_world(&w);
        let durations = s.durations().unwrap();
        let mut blind = w.targets.clone();
        for t in &mut blind { t.signals = TargetSignals::default(); t.tainted = !t.tainted; }
        let q = plan(&PlanInput {
            spec: &s, durations: &durations, now: t0() + secs(7200), targets: &blind,
            workloads: &w.workloads, previous: &p.states, history: &w.history, max_gap: MAX_GAP,
        });
        prop_assert!(q.actions.is_empty() && q.dry_run.is_empty(), "{:?}", q.actions);
        for t in blind.iter().filter(|t| t.in_policy) {
            prop_assert_eq!(q.states.get(&t.id), p.states.get(&t.id));
        }
    }

    /// Hysteresis, for real: a battery that spends sustained stretches low (< 20 %), in
    /// between and high (> 35 %), with noise that crosses the lines for less than the windows.
    /// It must starve exactly when it has been low for `for` (2 m) and recover exactly when it has
    /// been high for `recovery.for` (5 m) — checked against an independent replay — and at least
    /// once in every case.
    #[test]
    fn prop_hysteresis_starves_and_recovers(
        segments in prop::collection::vec((0u8..3, 1i64..60, any::<bool>()), 1..12),
    ) {
        const STEP: i64 = 10;
        // Always at least one full starve/recover cycle, then the random segments.
        let mut series: Vec<f64> = Vec::new();
        let level = |l: u8, k: usize| match l { 0 => 0.10 + (k % 5) as f64 * 0.01, 1 => 0.27, _ => 0.60 };
        for (l, n) in [(0u8, 15usize), (2, 35)] {
            for k in 0..n { series.push(level(l, k)); }
        }
        for (l, n, noisy) in &segments {
            for k in 0..*n as usize {
                // A short blip across the other line (1 step, shorter than either window).
                let v = if *noisy && k == 3 { if *l == 0 { 0.5 } else { 0.1 } } else { level(*l, k) };
                series.push(v);
            }
        }
        let mut sim = Sim::new(spec(Mode::Migrate));
        let (mut starved, mut low_since, mut high_since) = (false, None::<i64>, None::<i64>);
        let (mut starves, mut recoveries) = (0, 0);
        for (i, b) in series.iter().enumerate() {
            let t = i as i64 * STEP;
            let p = sim.step(t0() + secs(t), &[device("a", Some(*b))], &[]);
            // The model: low for 120 s starves; recovered once high (> 35 %) for 300 s.
            if *b < 0.20 { low_since.get_or_insert(t); } else { low_since = None; }
            if *b > 0.35 { high_since.get_or_insert(t); } else { high_since = None; }
            let expect = if starved {
                high_since.is_none_or(|h| t - h < 300)
            } else {
                low_since.is_some_and(|l| t - l >= 120)
            };
            if expect != starved { if expect { starves += 1 } else { recoveries += 1 } }
            starved = expect;
            prop_assert_eq!(p.starved().count() == 1, starved, "t={} battery={}", t, b);
            for tr in &p.transitions {
                match tr {
                    Transition::Starved { .. } => prop_assert!(starved),
                    Transition::Recovered { .. } => prop_assert!(!starved),
                }
            }
        }
        prop_assert!(starves >= 1 && recoveries >= 1, "the scenario must really starve and recover");
        // Values strictly between the lines never cause a transition.
        let mut sim = Sim::new(spec(Mode::Migrate));
        for (i, (_, n, _)) in segments.iter().enumerate() {
            let p = sim.step(t0() + secs(i as i64 * 600), &[device("a", Some(0.2 + (*n as f64 % 15.0) / 100.0))], &[]);
            prop_assert!(p.transitions.is_empty());
        }
    }
}

// ---------- no loops, placement, headroom ----------

fn pod_of(name: &str, on: &str, owner: &str) -> WorkloadSnapshot {
    WorkloadSnapshot {
        owner: Some(owner.into()),
        ..pod(name, on)
    }
}

fn tainted(mut t: TargetSnapshot) -> TargetSnapshot {
    t.tainted = true;
    t.taint_ours = true;
    t
}

/// The case: a condition seen for 12 s, then 51 s without data (Prometheus down), must
/// not count as 63 s of starvation for `for: 20s`.
#[test]
fn a_gap_in_the_data_restarts_the_for_window() {
    let mut s = spec(Mode::Migrate);
    s.starvation.for_ = "20s".into();
    let mut sim = Sim::new(s);
    let gap = std::time::Duration::from_secs(30);
    let step = |sim: &mut Sim, t: i64| {
        let p = plan(&PlanInput {
            spec: &sim.spec,
            durations: &sim.durations,
            now: t0() + secs(t),
            targets: &[device("a", Some(0.1))],
            workloads: &[],
            previous: &sim.states,
            history: &sim.history,
            max_gap: gap,
        });
        sim.states = p.states.clone();
        p
    };
    step(&mut sim, 0);
    assert_eq!(step(&mut sim, 12).starved().count(), 0);
    // 51 s outage: no cycle saw data. The first sample back restarts the window.
    assert_eq!(
        step(&mut sim, 63).starved().count(),
        0,
        "the outage counted towards `for`"
    );
    assert_eq!(step(&mut sim, 75).starved().count(), 0);
    assert_eq!(
        step(&mut sim, 84).starved().count(),
        1,
        "20 s seen after the gap"
    );
}

/// A Deployment's pods on a starved node: one eviction per cooldown for the owner, however its
/// pods are replaced (new names) — not one per pod name.
#[test]
fn cooldown_and_hourly_limit_are_per_owner() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    targets[3] = tainted(targets[3].clone());
    let owner = "Deployment/default/web";
    let p = sim.step(t0() + secs(120), &targets, &[pod_of("web-1", "n1", owner)]);
    assert_eq!(
        p.actions
            .iter()
            .filter(|a| matches!(a, Action::Evict { .. }))
            .count(),
        1
    );
    // The ReplicaSet's replacement lands on n1 again (say it tolerated the old state): new name.
    let p = sim.step(t0() + secs(150), &targets, &[pod_of("web-2", "n1", owner)]);
    assert!(
        p.actions.iter().all(|a| !matches!(a, Action::Evict { .. })),
        "{:?}",
        p.actions
    );
    assert_eq!(p.skipped[0].reason, SkipReason::Cooldown);
    // After the cooldown (10 m) it may go.
    let p = sim.step(
        t0() + secs(120 + 601),
        &targets,
        &[pod_of("web-3", "n1", owner)],
    );
    assert!(p.actions.iter().any(|a| matches!(a, Action::Evict { .. })));
    // maxPerHour per owner.
    let mut h = MoveHistory::default();
    for k in 0..20 {
        h.record(
            WorkloadId {
                kind: WorkloadKind::Pod,
                namespace: "default".into(),
                name: format!("x{k}"),
            },
            Some(owner),
            t0(),
        );
    }
    assert_eq!(h.owner_moves_last_hour(owner, t0() + secs(60)), 20);
    assert_eq!(h.owner_moves_last_hour(owner, t0() + secs(3601)), 0);
}

/// A starved node with three replicas of one Deployment is drained one pod per cycle (the
/// owner's cooldown does not hold back pods that were there at its first eviction), while a
/// replacement that lands on the node afterwards is held back for the cooldown.
#[test]
fn an_owners_pods_on_the_node_are_drained_but_replacements_wait() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    targets[3] = tainted(targets[3].clone());
    let owner = "Deployment/default/web";
    let evicted = |p: &Plan| -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Evict { pod, .. } => Some(pod.name.clone()),
                _ => None,
            })
            .collect()
    };
    let mut on_n1 = vec![
        pod_of("web-1", "n1", owner),
        pod_of("web-2", "n1", owner),
        pod_of("web-3", "n1", owner),
    ];
    let mut gone = Vec::new();
    for t in [120, 150, 180, 210] {
        let p = sim.step(t0() + secs(t), &targets, &on_n1);
        let e = evicted(&p);
        assert!(e.len() <= 1, "one per owner per cycle: {e:?}");
        on_n1.retain(|w| !e.contains(&w.id.name));
        gone.extend(e);
        // The ReplicaSet's replacement lands on n1 again right away.
        if t == 120 {
            on_n1.push(pod_of("web-r1", "n1", owner));
        }
    }
    assert_eq!(gone, ["web-1", "web-2", "web-3"]);
    assert_eq!(
        on_n1.iter().map(|w| w.id.name.as_str()).collect::<Vec<_>>(),
        ["web-r1"],
        "the replacement is held back by the owner's cooldown"
    );
}

#[test]
fn pods_that_tolerate_the_taint_or_without_taint_stay() {
    let (mut sim, targets) = starved_setup(Mode::Migrate);
    let mut tol = pod("tol", "n1");
    tol.tolerates_starvation = true;
    let p = sim.step(t0() + secs(120), &targets, &[tol, pod("plain", "n1")]);
    assert!(p.actions.contains(&Action::Taint { node: "n1".into() }));
    let reasons: Vec<_> = p
        .skipped
        .iter()
        .map(|s| (s.workload.name.as_str(), s.reason.clone()))
        .collect();
    assert_eq!(reasons, vec![("tol", SkipReason::ToleratesTaint)]);
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Evict { pod, .. } if pod.name == "plain")),
        "evicted in the cycle that places the taint"
    );
    // taintNodes: false → never evicted (it would be scheduled straight back).
    let mut s = spec(Mode::Migrate);
    s.action.taint_nodes = false;
    let mut sim = Sim::new(s);
    sim.step(t0(), &targets, &[]);
    let p = sim.step(t0() + secs(120), &targets, &[pod("plain", "n1")]);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.skipped[0].reason, SkipReason::TaintNotInPlace);
}

/// Two workloads moved in one cycle do not both land on the best device when a second one is
/// nearly as good: each assignment lowers the chosen device's headroom.
#[test]
fn a_cycles_assignments_spread_over_destinations() {
    let mut s = spec(Mode::Migrate);
    s.action.max_concurrent = 4;
    let mut sim = Sim::new(s);
    let targets = vec![
        device("a", Some(0.1)),
        device("b", Some(0.80)),
        device("c", Some(0.75)),
    ];
    sim.step(t0(), &targets, &[]);
    let ws = [ew("w1", "a"), ew("w2", "a"), ew("w3", "a")];
    let p = sim.step(t0() + secs(120), &targets, &ws);
    let to: Vec<&str> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::MigrateEdgeWorkload { to, .. } => Some(to.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(to.len(), 3);
    assert!(to.contains(&"b") && to.contains(&"c"), "{to:?}");
}

#[test]
fn host_bound_workloads_are_refused_make_before_break_but_recreate_moves_them() {
    let (mut sim, targets) = starved_setup(Mode::Migrate);
    let mut w = ew("hp", "a");
    w.host_bound = Some("hostPort 9090".into());
    let p = sim.step(t0() + secs(120), &targets, std::slice::from_ref(&w));
    assert!(
        matches!(&p.skipped[0].reason, SkipReason::Refused(why) if why.contains("hostPort 9090"))
    );
    let mut s = spec(Mode::Migrate);
    s.action.strategy = edgewatt_crds::Strategy::Recreate;
    let mut sim = Sim::new(s);
    sim.step(t0(), &targets, &[]);
    let p = sim.step(t0() + secs(120), &targets, &[w]);
    assert!(p
        .actions
        .iter()
        .any(|a| matches!(a, Action::MigrateEdgeWorkload { .. })));
}

/// Selector-placed workloads are never re-pointed: the starved device is labelled (their
/// selector excludes the label) only while each runs on another healthy device.
#[test]
fn selector_placed_workloads_leave_by_label_only_when_running_elsewhere() {
    let (mut sim, targets) = starved_setup(Mode::Migrate);
    let sel = |on: &str, running: bool| WorkloadSnapshot {
        placement: Placement::Selector { opted_in: true },
        running,
        ..ew("s", on)
    };
    // Only on a (starved): labelling a would stop it.
    let p = sim.step(t0() + secs(120), &targets, &[sel("a", true)]);
    assert!(
        p.actions
            .iter()
            .all(|a| !matches!(a, Action::LabelDevice { .. })),
        "{:?}",
        p.actions
    );
    assert_eq!(p.skipped[0].reason, SkipReason::NoOtherInstance);
    // Also Running on c: a is labelled, s leaves through it; never a MigrateEdgeWorkload.
    let p = sim.step(
        t0() + secs(121),
        &targets,
        &[sel("a", true), sel("c", true)],
    );
    let label = p.actions.iter().find_map(|a| match a {
        Action::LabelDevice { device, leaving } => Some((device.name.clone(), leaving.clone())),
        _ => None,
    });
    assert_eq!(label.map(|(d, l)| (d, l.len())), Some(("a".to_string(), 1)));
    assert!(p
        .actions
        .iter()
        .all(|a| !matches!(a, Action::MigrateEdgeWorkload { .. })));
    // Deploying (not Running) on c does not count.
    let mut sim = Sim::new(spec(Mode::Migrate));
    sim.step(t0(), &targets, &[]);
    let p = sim.step(
        t0() + secs(120),
        &targets,
        &[sel("a", true), sel("c", false)],
    );
    assert!(p
        .actions
        .iter()
        .all(|a| !matches!(a, Action::LabelDevice { .. })));
    // Recovered: the label this policy put goes.
    let mut t2 = targets.clone();
    t2[0] = tainted(device("a", Some(0.9)));
    let mut sim = Sim::new(spec(Mode::Migrate));
    let p = sim.step(t0(), &t2, &[]);
    assert!(p.actions.contains(&Action::UnlabelDevice {
        device: TargetId::device("edge", "a")
    }));
}

/// Issue 29 §1 through the planner: on a starved node with a healthy node beside it, a policy
/// without a workload selector evicts the ordinary pod and leaves `kube-system`'s, the
/// system-critical and edgewatt's own pods where they are, each with its reason (the rules and
/// their upstream sources: `snapshot::tests::system_pods_and_edgewatts_own_are_never_touched`).
#[test]
fn system_and_own_pods_are_never_evicted() {
    let (mut sim, targets) = starved_setup(Mode::Migrate);
    let pod = |ns: &str, name: &str, extra: serde_json::Value| -> k8s_openapi::api::core::v1::Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": {},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{name}-rs"), "uid": "1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running"}
        });
        for (k, val) in extra.as_object().unwrap() {
            for (k2, v2) in val.as_object().unwrap() {
                v[k][k2] = v2.clone();
            }
        }
        serde_json::from_value(v).unwrap()
    };
    let pods = [
        pod(
            "kube-system",
            "coredns",
            serde_json::json!({"spec": {"priorityClassName": "system-cluster-critical"}}),
        ),
        pod("kube-system", "metrics-server", serde_json::json!({})),
        pod(
            "edgewatt-system",
            "edgewatt-controller",
            serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/part-of": "edgewatt"}}}),
        ),
        pod(
            "monitoring",
            "node-agent",
            serde_json::json!({"spec": {"priority": 2_000_001_000}}),
        ),
        pod("apps", "web", serde_json::json!({})),
    ];
    let (ns, pdbs, watts) = (HashMap::new(), HashMap::new(), Default::default());
    let around = crate::snapshot::Around {
        ns_labels: &ns,
        exhausted: &pdbs,
        own_namespace: "edgewatt-system",
        watts: &watts,
    };
    let workloads = crate::snapshot::pod_workloads(&sim.spec.clone(), &pods, around);
    let p = sim.step(t0() + secs(120), &targets, &workloads);
    let evicted: Vec<&str> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Evict { pod, .. } => Some(pod.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, ["web"]);
    let left: Vec<(&str, String)> = p
        .skipped
        .iter()
        .map(|s| (s.workload.name.as_str(), s.reason.to_string()))
        .collect();
    assert_eq!(
        left,
        // By id: namespace, then name.
        [
            (
                "edgewatt-controller",
                "ineligible: edgewatt's own pod".to_string()
            ),
            (
                "coredns",
                "ineligible: namespace kube-system is excluded (workloads.excludeNamespaces)"
                    .to_string()
            ),
            (
                "metrics-server",
                "ineligible: namespace kube-system is excluded (workloads.excludeNamespaces)"
                    .to_string()
            ),
            (
                "node-agent",
                "ineligible: system-critical priority (2000001000)".to_string()
            ),
        ]
    );
}

/// Issue 27 §3: `starvation.runwayBelowRecharge` — starved when the runway forecast's verdict
/// says so, unknown (no action) without a verdict, and never on mains.
#[test]
fn the_forecast_condition_starves_on_its_verdict_only() {
    let mut s = spec(Mode::Migrate);
    s.starvation.battery_below_percent = None;
    s.recovery = None;
    s.starvation.runway_below_recharge = Some(true);
    let with = |v: Option<bool>| TargetSignals {
        runway_below_recharge: v,
        ..Default::default()
    };
    assert!(matches!(
        starvation(&s, &with(Some(true))),
        Eval::Holds(r) if r.contains("runway ends before the forecast recharge")
    ));
    assert_eq!(starvation(&s, &with(Some(false))), Eval::Clear);
    assert_eq!(starvation(&s, &with(None)), Eval::Unknown);
    let mains = TargetSignals {
        external_power: Some(true),
        ..with(Some(true))
    };
    assert_eq!(starvation(&s, &mains), Eval::Clear);
    s.starvation.runway_below_recharge = Some(false);
    assert_eq!(
        starvation(&s, &with(Some(true))),
        Eval::Clear,
        "off: not a condition"
    );
}

/// Moves older than every rule's window leave the history (a fleet whose evicted pods come back
/// under new names would otherwise grow it without bound); what a rule can still read stays.
#[test]
fn the_history_forgets_only_what_no_rule_reads() {
    let mut h = MoveHistory::default();
    let id = |n: &str| WorkloadId {
        kind: WorkloadKind::Pod,
        namespace: "shop".into(),
        name: n.into(),
    };
    h.record_eviction(&id("web-old"), Some("Deployment/shop/web"), &[], t0());
    h.record_eviction(
        &id("db-new"),
        Some("StatefulSet/shop/db"),
        &[id("db-1")],
        t0() + secs(3000),
    );
    h.forget_before(t0() + secs(60));
    assert!(!h.last_moved.contains_key(&id("web-old")));
    assert!(!h.owner_last_moved.contains_key("Deployment/shop/web"));
    assert!(!h.owner_recent.contains_key("Deployment/shop/web"));
    assert_eq!(h.recent_moves, vec![t0() + secs(3000)]);
    assert_eq!(h.moves_last_hour(t0() + secs(3100)), 1);
    assert!(h.owner_drain.contains_key("StatefulSet/shop/db"));
    assert!(!h.owner_drain.contains_key("Deployment/shop/web"));
    // The kept move still cools its workload and owner down.
    let w = WorkloadSnapshot {
        owner: Some("StatefulSet/shop/db".into()),
        ..pod("db-new", "n1")
    };
    assert!(h.cooling(&w, t0() + secs(3100), chrono::Duration::minutes(10)));
}
