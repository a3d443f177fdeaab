//! Splitting one interval's node energy between idle, processes, containers and pods.
//!
//! Pure arithmetic, no I/O: the collector feeds it meter deltas and CPU-time deltas. The model is
//! Kepler's: a zone's energy is split into idle and active by the node's busy ratio
//! (`/proc/stat`); active energy is split by each process's share of the processes' CPU time.
//! Whatever cannot be given to a process (no process used CPU, e.g. only kernel work) stays
//! `unattributed`, so the books always balance: pods + non-pod processes + idle + unattributed
//! equals the node, to rounding.

use std::collections::HashMap;

use crate::accounting::ProcessDelta;

/// One zone's energy this interval and its split.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSplit {
    pub zone: String,
    pub joules: f64,
    pub idle: f64,
    pub active: f64,
    /// Active energy no process received.
    pub unattributed: f64,
}

/// What one interval's attribution produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    pub zones: Vec<ZoneSplit>,
    /// Each process's share of the active energy (same order as the input), summing to 1 or all 0.
    pub shares: Vec<f64>,
}

impl Attribution {
    /// Joules of `zone_index` given to the process at `process_index`.
    pub fn process_joules(&self, zone_index: usize, process_index: usize) -> f64 {
        let z = &self.zones[zone_index];
        (z.active - z.unattributed) * self.shares[process_index]
    }
}

/// Splits `zones` (zone name, joules this interval) given the node's busy ratio and the
/// processes' CPU time. `unaccounted_cpu` is CPU time the accounting knows was used but cannot
/// name a process for (eBPF events dropped on a full map): its share of the active energy stays
/// unattributed instead of being handed to the processes that were counted.
pub fn attribute(
    zones: &[(String, f64)],
    busy_ratio: f64,
    processes: &[ProcessDelta],
    unaccounted_cpu: f64,
) -> Attribution {
    let busy = if busy_ratio.is_finite() {
        busy_ratio.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let unaccounted = if unaccounted_cpu.is_finite() {
        unaccounted_cpu.max(0.0)
    } else {
        0.0
    };
    // Shares are of the processes' CPU time; the lost time's share of the active energy is taken
    // out first (as `unattributed`), so processes share only what is theirs.
    let process_cpu: f64 = processes
        .iter()
        .map(|p| p.cpu_seconds.max(0.0))
        .filter(|s| s.is_finite())
        .sum::<f64>();
    let total_cpu = process_cpu + unaccounted;
    let shares: Vec<f64> = processes
        .iter()
        .map(|p| {
            let s = p.cpu_seconds.max(0.0);
            if process_cpu > 0.0 && s.is_finite() {
                s / process_cpu
            } else {
                0.0
            }
        })
        .collect();
    let zones = zones
        .iter()
        .map(|(zone, joules)| {
            let joules = if joules.is_finite() {
                joules.max(0.0)
            } else {
                0.0
            };
            let active = joules * busy;
            ZoneSplit {
                zone: zone.clone(),
                joules,
                idle: joules - active,
                active,
                unattributed: if process_cpu > 0.0 {
                    active * unaccounted / total_cpu
                } else {
                    active
                },
            }
        })
        .collect();
    Attribution { zones, shares }
}

/// One GPU's energy over an interval, split like a CPU zone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSplit {
    /// Energy while the GPU executed nothing (kept out of every workload).
    pub idle: f64,
    /// (pid, joules) for processes the CPU accounting knows.
    pub processes: Vec<(u32, f64)>,
    /// Busy energy no known process received (a process in another PID namespace, one that
    /// exited, busy time the per-process samples do not cover).
    pub unattributed: f64,
}

/// Splits `joules` of one GPU: the busy share (the device's utilisation, else the processes'
/// shares summed) is active energy, each process gets `joules × its SM share` (scaled down when
/// the shares add up to more than the device was busy, as overlapping samples can), the rest of
/// the active energy is unattributed and the remainder idle. `known` says whether a pid can be
/// named. Pods + system + idle + unattributed = `joules`.
pub fn split_gpu(
    joules: f64,
    usage: &crate::source::GpuUsage,
    known: impl Fn(u32) -> bool,
) -> GpuSplit {
    let joules = if joules.is_finite() {
        joules.max(0.0)
    } else {
        0.0
    };
    let clean = |x: f64| {
        if x.is_finite() {
            x.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let sum: f64 = usage.processes.iter().map(|(_, s)| clean(*s)).sum();
    let busy = clean(usage.busy.unwrap_or(sum.min(1.0)));
    let scale = if sum > busy && sum > 0.0 {
        busy / sum
    } else {
        1.0
    };
    let active = joules * busy;
    let mut split = GpuSplit {
        idle: joules - active,
        ..GpuSplit::default()
    };
    let mut given = 0.0;
    for (pid, share) in &usage.processes {
        let j = joules * clean(*share) * scale;
        if j <= 0.0 || !known(*pid) {
            continue;
        }
        given += j;
        match split.processes.iter_mut().find(|(p, _)| p == pid) {
            Some(e) => e.1 += j,
            None => split.processes.push((*pid, j)),
        }
    }
    split.unattributed = (active - given).max(0.0);
    split
}

/// The owner a process's energy is summed into.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Pod(String),
    Container(String),
}

/// Sums process joules per pod and per container for one zone. Containers of pods appear under
/// both keys; a process in a pod cgroup but no container (the pause parent, conmon) only under
/// its pod.
pub fn by_owner(
    att: &Attribution,
    zone_index: usize,
    processes: &[ProcessDelta],
) -> HashMap<Owner, f64> {
    let mut out: HashMap<Owner, f64> = HashMap::new();
    for (i, p) in processes.iter().enumerate() {
        let j = att.process_joules(zone_index, i);
        if let Some(uid) = &p.workload.pod_uid {
            *out.entry(Owner::Pod(uid.clone())).or_default() += j;
        }
        if let Some(id) = &p.workload.container_id {
            *out.entry(Owner::Container(id.clone())).or_default() += j;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Workload;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn proc(pid: u32, secs: f64, pod: Option<usize>, container: Option<usize>) -> ProcessDelta {
        ProcessDelta {
            pid,
            comm: Arc::from("p"),
            workload: Arc::new(Workload {
                container_id: container.map(|c| format!("c{c}")),
                runtime: None,
                pod_uid: pod.map(|p| format!("pod{p}")),
            }),
            cpu_seconds: secs,
        }
    }

    #[test]
    fn splits_by_cpu_time() {
        let ps = vec![proc(1, 3.0, Some(0), Some(0)), proc(2, 1.0, None, None)];
        let a = attribute(&[("package".into(), 100.0)], 0.4, &ps, 0.0);
        assert_eq!(a.zones[0].idle, 60.0);
        assert_eq!(a.process_joules(0, 0), 30.0);
        assert_eq!(a.process_joules(0, 1), 10.0);
    }

    #[test]
    fn no_cpu_time_leaves_active_unattributed() {
        let ps = vec![proc(1, 0.0, None, None)];
        let a = attribute(&[("package".into(), 10.0)], 0.5, &ps, 0.0);
        assert_eq!(a.zones[0].unattributed, 5.0);
        assert_eq!(a.process_joules(0, 0), 0.0);
    }

    /// CPU time the accounting lost (a full eBPF map) keeps its share out of the counted processes.
    #[test]
    fn unaccounted_cpu_stays_unattributed() {
        let ps = vec![proc(1, 3.0, None, None)];
        let a = attribute(&[("package".into(), 100.0)], 1.0, &ps, 1.0);
        assert_eq!(a.zones[0].unattributed, 25.0);
        assert_eq!(a.process_joules(0, 0), 75.0);
    }

    #[test]
    fn gpu_idle_stays_out_of_processes() {
        use crate::source::GpuUsage;
        // 300 J, GPU busy 50 %: pid 10 held 30 %, pid 11 10 %, pid 12 (unknown) 5 %
        let usage = GpuUsage {
            gpu: 0,
            busy: Some(0.5),
            processes: vec![(10, 0.3), (11, 0.1), (12, 0.05)],
        };
        let s = split_gpu(300.0, &usage, |p| p != 12);
        assert!((s.idle - 150.0).abs() < 1e-9);
        assert_eq!(s.processes, vec![(10, 90.0), (11, 30.0)]);
        assert!((s.unattributed - 30.0).abs() < 1e-9, "{s:?}");
        // shares above the device's busy time are scaled down to it
        let over = GpuUsage {
            gpu: 0,
            busy: Some(0.5),
            processes: vec![(10, 0.5), (11, 0.5)],
        };
        let s = split_gpu(100.0, &over, |_| true);
        assert_eq!(s.processes, vec![(10, 25.0), (11, 25.0)]);
        // a lone process at 5 % gets 5 %, not the whole board (the bug)
        let low = GpuUsage {
            gpu: 0,
            busy: None,
            processes: vec![(10, 0.05)],
        };
        let s = split_gpu(200.0, &low, |_| true);
        assert_eq!(s.processes, vec![(10, 10.0)]);
        assert!((s.idle - 190.0).abs() < 1e-9);
    }

    fn process_strategy() -> impl Strategy<Value = Vec<ProcessDelta>> {
        prop::collection::vec(
            (
                0.0f64..10.0,
                prop::option::of(0usize..5),
                prop::option::of(0usize..10),
            ),
            0..60,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (s, pod, c))| {
                    // a container id implies its pod here, like Kubernetes containers
                    proc(
                        i as u32,
                        s,
                        pod.or(c.map(|c| c % 5))
                            .filter(|_| c.is_some() || pod.is_some()),
                        c,
                    )
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// GPU: idle + known processes + unattributed = the GPU's energy, for any samples.
        #[test]
        fn gpu_energy_is_conserved(
            joules in 0.0f64..1e5,
            busy in prop::option::of(0.0f64..=1.0),
            procs in prop::collection::vec((0u32..8, 0.0f64..=1.0), 0..12),
        ) {
            let usage = crate::source::GpuUsage { gpu: 0, busy, processes: procs };
            let s = split_gpu(joules, &usage, |p| p % 3 != 0);
            let sum = s.idle + s.unattributed + s.processes.iter().map(|(_, j)| j).sum::<f64>();
            prop_assert!((sum - joules).abs() <= 1e-6 * joules.max(1.0), "{sum} != {joules}: {s:?}");
            prop_assert!(s.idle >= -1e-9 && s.unattributed >= -1e-9);
        }

        /// pods + non-pod processes + idle + unattributed = node, for every zone.
        #[test]
        fn energy_is_conserved(
            zones in prop::collection::vec(0.0f64..1e4, 1..4),
            busy in 0.0f64..=1.0,
            ps in process_strategy(),
            lost in prop_oneof![Just(0.0f64), 0.0f64..5.0],
        ) {
            let zones: Vec<(String, f64)> = zones.into_iter().enumerate().map(|(i, j)| (format!("z{i}"), j)).collect();
            let a = attribute(&zones, busy, &ps, lost);
            for (zi, z) in a.zones.iter().enumerate() {
                let owners = by_owner(&a, zi, &ps);
                let pods: f64 = owners.iter().filter(|(k, _)| matches!(k, Owner::Pod(_))).map(|(_, v)| v).sum();
                let non_pod: f64 = ps.iter().enumerate().filter(|(_, p)| p.workload.pod_uid.is_none()).map(|(i, _)| a.process_joules(zi, i)).sum();
                let sum = pods + non_pod + z.idle + z.unattributed;
                prop_assert!((sum - z.joules).abs() <= 1e-6 * z.joules.max(1.0), "{sum} != {}", z.joules);
                prop_assert!(a.shares.iter().all(|s| (0.0..=1.0).contains(s)));
            }
        }
    }
}
