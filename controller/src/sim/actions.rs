//! What happened in a run, in order: an optional log that [`super::run::run_with`] keeps by
//! comparing the [`World`] with what it was at the last look, so the virtual-time run of a
//! fleet can be set beside the real loop running the same scenario (the end-to-end test
//! `e2e/tests/sim_loop.rs`), action by action.
//!
//! It watches the world, not the controller: a taint is logged once the world has it, an
//! eviction when the pod is gone, a placement when the scheduler bound its replacement. That is
//! what the real test can see of the cluster too. The run looks after each part of a minute
//! (events and moves, the decision, the physics), so within a minute taints come before the
//! evictions they allow and placements after the restart delay.

use serde::Serialize;

use super::fleet::Fleet;
use super::world::World;
use edgewatt_crds::{TargetKind, WorkloadKind};

/// One thing that happened to the fleet. Names are the fleet file's: `workload` is the
/// workload's name (a Deployment's or an EdgeWorkload's), `object` the pod or EdgeWorkload
/// object (a pod's replacement has a new name), targets by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// edgewatt's starvation taint on a node.
    Taint {
        node: String,
    },
    Untaint {
        node: String,
    },
    /// edgewatt's starvation label on a device.
    Label {
        device: String,
    },
    Unlabel {
        device: String,
    },
    /// A pod left its node: evicted by a policy (or by the node lifecycle off a dark node).
    Evicted {
        workload: String,
        object: String,
        from: String,
    },
    /// A pod bound to a node (at the start, or a replacement), or an EdgeWorkload started on
    /// its device at the start.
    Placed {
        workload: String,
        object: String,
        on: String,
    },
    /// An EdgeWorkload's `spec.device` changed.
    Moved {
        workload: String,
        object: String,
        from: String,
        to: String,
    },
    /// The ladder suspended, restored or throttled a replica (`percent`: its share of its draw;
    /// 100 is un-throttled).
    Suspended {
        workload: String,
        object: String,
    },
    Restored {
        workload: String,
        object: String,
    },
    Throttled {
        workload: String,
        object: String,
        percent: u8,
    },
    /// A target's battery reached the cut-off, or it booted again.
    Dark {
        target: String,
    },
    Boot {
        target: String,
    },
}

/// An action and the minute of the run it was seen in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logged {
    pub minute: u32,
    #[serde(flatten)]
    pub action: Action,
}

/// What the log saw of a replica at its last look.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    object: String,
    generation: u32,
    /// Pods: the node bound to; EdgeWorkloads: `spec.device` (not while suspended).
    at: Option<usize>,
    suspended: bool,
    throttle_pct: u8,
}

/// The log. Starts from an empty fleet: the first look logs every initial placement (and any
/// target that starts dark) at minute 0.
#[derive(Debug)]
pub struct ActionLog {
    pub actions: Vec<Logged>,
    /// The fleet file's workload names, by index.
    workloads: Vec<String>,
    marks: Vec<bool>,
    dark: Vec<bool>,
    replicas: Vec<Seen>,
}

impl ActionLog {
    pub fn new(fleet: &Fleet) -> Self {
        ActionLog {
            actions: Vec::new(),
            workloads: fleet.workloads.iter().map(|w| w.name.clone()).collect(),
            marks: Vec::new(),
            dark: Vec::new(),
            replicas: Vec::new(),
        }
    }

    /// Logs what changed in `world` since the last look.
    pub fn observe(&mut self, world: &World) {
        let minute = world.now;
        let mut log = |action| self.actions.push(Logged { minute, action });
        self.marks.resize(world.targets.len(), false);
        self.dark.resize(world.targets.len(), false);
        let name = |t: usize| world.targets[t].def.id.name.clone();
        for (t, target) in world.targets.iter().enumerate() {
            let marked = target.mark.is_some();
            if marked != self.marks[t] {
                self.marks[t] = marked;
                let (node, device) = (name(t), name(t));
                log(match (target.def.id.kind, marked) {
                    (TargetKind::Node, true) => Action::Taint { node },
                    (TargetKind::Node, false) => Action::Untaint { node },
                    (TargetKind::EdgeDevice, true) => Action::Label { device },
                    (TargetKind::EdgeDevice, false) => Action::Unlabel { device },
                });
            }
        }
        if self.replicas.len() < world.replicas.len() {
            self.replicas = world
                .replicas
                .iter()
                .map(|r| Seen {
                    object: r.name.clone(),
                    generation: r.generation,
                    throttle_pct: 100,
                    ..Seen::default()
                })
                .collect();
        }
        for (r, (rep, seen)) in world.replicas.iter().zip(&mut self.replicas).enumerate() {
            let now = Seen {
                object: rep.name.clone(),
                generation: rep.generation,
                at: match rep.kind {
                    WorkloadKind::Pod => world.shown[r].at.map(|t| t as usize),
                    WorkloadKind::EdgeWorkload => rep.device.filter(|_| !rep.suspended),
                },
                suspended: rep.suspended,
                throttle_pct: world.shown[r].throttle_pct,
            };
            if now == *seen {
                continue;
            }
            let workload = || self.workloads[rep.workload].clone();
            if now.suspended && !seen.suspended {
                log(Action::Suspended {
                    workload: workload(),
                    object: seen.object.clone(),
                });
            }
            if now.generation != seen.generation && !seen.suspended {
                if let Some(from) = seen.at {
                    log(Action::Evicted {
                        workload: workload(),
                        object: seen.object.clone(),
                        from: name(from),
                    });
                }
            }
            if !now.suspended && seen.suspended {
                log(Action::Restored {
                    workload: workload(),
                    object: now.object.clone(),
                });
            }
            match (rep.kind, seen.at, now.at) {
                (WorkloadKind::EdgeWorkload, Some(from), Some(to)) if from != to => {
                    log(Action::Moved {
                        workload: workload(),
                        object: now.object.clone(),
                        from: name(from),
                        to: name(to),
                    })
                }
                (_, _, Some(on))
                    if seen.at.is_none()
                        || (rep.kind == WorkloadKind::Pod && now.generation != seen.generation) =>
                {
                    log(Action::Placed {
                        workload: workload(),
                        object: now.object.clone(),
                        on: name(on),
                    })
                }
                _ => {}
            }
            if now.throttle_pct != seen.throttle_pct && now.generation == seen.generation {
                log(Action::Throttled {
                    workload: workload(),
                    object: now.object.clone(),
                    percent: now.throttle_pct,
                });
            }
            *seen = now;
        }
        for (t, target) in world.targets.iter().enumerate() {
            if target.dark != self.dark[t] {
                self.dark[t] = target.dark;
                let target = name(t);
                log(if self.dark[t] {
                    Action::Dark { target }
                } else {
                    Action::Boot { target }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::run::{self, Options, RunKind};

    /// Two nodes without panels at night: `a` runs low with both pods on it, is starved,
    /// tainted and drained onto `b` (one eviction per decision: `maxConcurrent: 1`), the pinned
    /// pod stays, and `a` goes dark on its base draw.
    const FLEET: &str = r#"
sites:
  - {name: gso, weather: 723170TYA.CSV}
nodes:
  - {name: a, batteryWh: 10, solarWp: 0, baseWatts: 5, maxWatts: 100, initialChargePercent: 35, labels: {pool: x}}
  - {name: b, batteryWh: 1000, solarWp: 0, baseWatts: 5, maxWatts: 50, labels: {pool: x}}
workloads:
  - {name: web, kind: Pod, drawWatts: 5, replicas: 2, nodeSelector: {pool: x}}
  - {name: pin, kind: Pod, drawWatts: 1, pinned: true, nodeSelector: {pool: x}}
policies:
  - apiVersion: edgewatt.io/v1alpha1
    kind: EnergyPolicy
    metadata: {name: guard}
    spec:
      targets: {nodeSelector: {}}
      starvation: {batteryBelowPercent: 30, for: 2m}
      action: {mode: Migrate, maxConcurrent: 1, cooldown: 10m}
physics: {notReadyEvictionSeconds: null}
"#;

    fn fleet() -> Fleet {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/weather");
        Fleet::parse(FLEET, "fleet.yaml", &dir).unwrap()
    }

    fn opts() -> Options {
        Options {
            days: 1,
            ..Options::default()
        }
    }

    #[test]
    fn the_log_follows_a_drain_in_order() {
        let fleet = fleet();
        let mut log = ActionLog::new(&fleet);
        run::run_with(&fleet, RunKind::Migrate, &opts(), Some(&mut log));
        let placed = |object: &str, on: &str| Action::Placed {
            workload: object.split('-').next().unwrap().into(),
            object: object.into(),
            on: on.into(),
        };
        let evicted = |object: &str| Action::Evicted {
            workload: "web".into(),
            object: object.into(),
            from: "a".into(),
        };
        let got: Vec<&Action> = log.actions.iter().map(|l| &l.action).collect();
        let want = [
            // the most headroom first: every pod on `a` at the start
            placed("web-0-0", "a"),
            placed("web-1-0", "a"),
            placed("pin-0", "a"),
            Action::Taint { node: "a".into() },
            evicted("web-0-0"),
            placed("web-0-1", "b"),
            evicted("web-1-0"),
            placed("web-1-1", "b"),
            Action::Dark { target: "a".into() },
        ];
        assert_eq!(got, want.iter().collect::<Vec<_>>(), "{:#?}", log.actions);
        let at = |i: usize| log.actions[i].minute;
        assert_eq!((at(0), at(1), at(2)), (0, 0, 0));
        // the taint comes before the eviction it allows, in the same decision
        assert_eq!(at(3), at(4));
        // a replacement serves after the pod restart delay (30 s: the next minute), and the next
        // eviction waits for the decision after the first one is done
        assert_eq!((at(5), at(6)), (at(4) + 1, at(4) + 1));
        assert!(at(8) > at(7));
    }

    #[test]
    fn logging_does_not_change_the_run() {
        let fleet = fleet();
        let mut log = ActionLog::new(&fleet);
        let logged = run::run_with(&fleet, RunKind::Migrate, &opts(), Some(&mut log));
        let plain = run::run(&fleet, RunKind::Migrate, &opts());
        assert_eq!(logged.0, plain.0);
        assert_eq!(logged.1.soc, plain.1.soc);
        // evictions counted by the report are the log's
        let evictions = log
            .actions
            .iter()
            .filter(|l| matches!(l.action, Action::Evicted { .. }))
            .count() as u64;
        assert_eq!(evictions, plain.0.evictions);
    }
}
