use super::*;
use chrono::TimeZone;
use edgewatt_crds::{Action as PolicyAction, Recovery, Starvation, Targets};
use proptest::prelude::*;

pub(crate) fn t0() -> Time {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

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
    states: BTreeMap<TargetId, TargetState>,
    history: MoveHistory,
}

impl Sim {
    fn new(spec: EnergyPolicySpec) -> Self {
        let durations = spec.durations().unwrap();
        Self {
            spec,
            durations,
            states: BTreeMap::new(),
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
        });
        self.states = plan.states.clone();
        for a in &plan.actions {
            match a {
                Action::Evict { pod, .. } => self.history.record(pod.clone(), now),
                Action::MigrateEdgeWorkload { workload, .. } => {
                    self.history.record(workload.clone(), now)
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
            Action::Taint { node: "n1".into() },
            Action::Evict {
                pod: workloads[1].id.clone(),
                node: "n1".into()
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
    assert_eq!(p.dry_run.len(), 3);
    assert_eq!(p.starved().count(), 2);
}

#[test]
fn device_selector_tie_break_and_no_target() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    targets[1].signals.battery_ratio = Some(0.8); // b ties with c: name wins
    let mut w = ew("w1", "a");
    let p = sim.step(t0() + secs(120), &targets, std::slice::from_ref(&w));
    assert!(matches!(&p.actions[..], [_, Action::MigrateEdgeWorkload { to, .. }] if to == "b"));
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
    assert!(matches!(&p.actions[..], [_, Action::MigrateEdgeWorkload { to, .. }] if to == "c"));
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

#[test]
fn untaints_after_recovery() {
    let (mut sim, mut targets) = starved_setup(Mode::Migrate);
    sim.step(t0() + secs(120), &targets, &[]);
    targets[3].tainted = true;
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
        previous: &BTreeMap::new(),
        history: &MoveHistory::default(),
    });
    let second = plan(&PlanInput {
        spec: &s,
        durations: &durations,
        now: t0() + secs(3600),
        targets: &w.targets,
        workloads: &w.workloads,
        previous: &first.states,
        history: &w.history,
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
                Action::Untaint { .. } => {}
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
            workloads: &w.workloads, previous: &p.states, history: &w.history,
        });
        prop_assert!(q.actions.is_empty() && q.dry_run.is_empty(), "{:?}", q.actions);
        for t in blind.iter().filter(|t| t.in_policy) {
            prop_assert_eq!(q.states.get(&t.id), p.states.get(&t.id));
        }
    }

    #[test]
    fn prop_no_flapping(series in prop::collection::vec(0.15f64..0.40, 1..200), step in 10i64..120) {
        // A battery oscillating between thresholds (20%/35%) plus noise beyond them for less
        // than `for` can starve and recover at most once per sustained crossing.
        let mut sim = Sim::new(spec(Mode::Migrate));
        let mut transitions = 0;
        let mut now = t0();
        for b in &series {
            let p = sim.step(now, &[device("a", Some(*b))], &[]);
            transitions += p.transitions.len();
            now += secs(step);
        }
        // At most one starvation per 2m of continuous low, one recovery per 5m of continuous high:
        // transitions alternate, so count <= 1 + number of recoveries possible.
        let total = series.len() as i64 * step;
        prop_assert!(transitions as i64 <= 1 + 2 * (total / (7 * 60)), "{transitions} in {total}s");
        // Values strictly between thresholds never cause a transition.
        let mut sim = Sim::new(spec(Mode::Migrate));
        let mut now = t0();
        for b in &series {
            let b = 0.2 + (b - 0.15) * 0.15 / 0.25 * 0.999; // squeeze into [20%, 35%)
            let p = sim.step(now, &[device("a", Some(b))], &[]);
            prop_assert!(p.transitions.is_empty());
            now += secs(step);
        }
    }
}
