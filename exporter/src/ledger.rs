//! The ledger: where each attributed zone's energy went since the exporter started, per zone and
//! source — idle, all pods together, the system (processes outside any pod) and what no process
//! received. Conservation is its invariant: for every zone and source, the node's joules =
//! idle + pods + system + unattributed. Pure state: it books what [`crate::attribution`] split.
//!
//! It also knows which (zone, source) pairs were attributed this interval: only their books and
//! workload series are published (a source not in use has all its series withdrawn; they resume
//! where they stopped when it is back).

use std::collections::BTreeMap;

use crate::accounting::ProcessDelta;
use crate::attribution::{Attribution, GpuSplit};
use crate::snapshot::Books;

#[derive(Debug, Default)]
pub struct Ledger {
    books: BTreeMap<(String, &'static str), Books>,
    /// (zone, source) pairs attributed this interval.
    in_use: Vec<(String, &'static str)>,
}

impl Ledger {
    /// Starts an interval: nothing is attributed yet.
    pub fn begin_interval(&mut self) {
        self.in_use.clear();
    }

    /// Whether `zone` from `source` was attributed this interval.
    pub fn in_use(&self, zone: &str, source: &str) -> bool {
        self.in_use.iter().any(|(z, s)| z == zone && *s == source)
    }

    fn mark_in_use(&mut self, zone: &str, source: &'static str) {
        if !self.in_use(zone, source) {
            self.in_use.push((zone.to_string(), source));
        }
    }

    fn book(&mut self, zone: &str, source: &'static str) -> &mut Books {
        self.books
            .entry((zone.to_string(), source))
            .or_insert_with(|| Books {
                zone: zone.to_string(),
                source,
                ..Books::default()
            })
    }

    /// Books one interval's CPU-time split: `att.zones[i]` came from `sources[i]`; a process's
    /// share goes to `pods` when its cgroup names a pod, else to `system`.
    pub fn keep(
        &mut self,
        att: &Attribution,
        sources: &[&'static str],
        processes: &[ProcessDelta],
    ) {
        let (mut pod_share, mut system_share) = (0.0, 0.0);
        for (p, share) in processes.iter().zip(&att.shares) {
            if p.workload.pod_uid.is_some() {
                pod_share += share;
            } else {
                system_share += share;
            }
        }
        for (z, source) in att.zones.iter().zip(sources) {
            self.mark_in_use(&z.zone, source);
            let given = z.active - z.unattributed;
            let b = self.book(&z.zone, source);
            b.idle += z.idle;
            b.unattributed += z.unattributed;
            b.pods += given * pod_share;
            b.system += given * system_share;
        }
    }

    /// Books one GPU's split (zone `gpu`); `in_pod` says whether a pid belongs to a pod.
    pub fn keep_gpu(
        &mut self,
        source: &'static str,
        split: &GpuSplit,
        in_pod: impl Fn(u32) -> bool,
    ) {
        self.mark_in_use("gpu", source);
        let b = self.book("gpu", source);
        b.idle += split.idle;
        b.unattributed += split.unattributed;
        for (pid, j) in &split.processes {
            if in_pod(*pid) {
                b.pods += j;
            } else {
                b.system += j;
            }
        }
    }

    /// The books of the zones attributed this interval.
    pub fn published(&self) -> Vec<Books> {
        self.books
            .values()
            .filter(|b| self.in_use(&b.zone, b.source))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{attribute, split_gpu};
    use crate::cgroup::Workload;
    use crate::source::GpuUsage;
    use std::sync::Arc;

    fn process(pid: u32, pod: Option<&str>, cpu_seconds: f64) -> ProcessDelta {
        ProcessDelta {
            pid,
            comm: Arc::from("p"),
            workload: Arc::new(Workload {
                container_id: None,
                runtime: None,
                pod_uid: pod.map(String::from),
            }),
            cpu_seconds,
        }
    }

    #[track_caller]
    fn assert_balances(b: &Books, node: f64) {
        let sum = b.idle + b.pods + b.system + b.unattributed;
        assert!(
            (sum - node).abs() <= 1e-9 * node.max(1.0),
            "{} {}: node {node} != {b:?}",
            b.zone,
            b.source
        );
    }

    /// Node = idle + pods + system + unattributed per zone and source, over intervals of every
    /// kind: busy with pod and system processes, CPU time the accounting lost (eBPF's full map),
    /// no process at all (kernel work), and an idle node.
    #[test]
    fn every_zone_conserves_the_nodes_energy() {
        let mut ledger = Ledger::default();
        let procs = [
            process(1, Some("pod-a"), 3.0),
            process(2, Some("pod-b"), 1.0),
            process(3, None, 2.0),
        ];
        let mut node = [0.0, 0.0];
        let intervals: [(f64, f64, &[ProcessDelta], f64); 4] = [
            (40.0, 0.6, &procs, 0.0),
            (25.0, 0.9, &procs, 1.5),
            (10.0, 0.3, &[], 0.0),
            (5.0, 0.0, &procs, 0.0),
        ];
        for (pkg, busy, processes, lost) in intervals {
            ledger.begin_interval();
            let zones = [
                ("package".to_string(), pkg),
                ("dram".to_string(), pkg / 5.0),
            ];
            let att = attribute(&zones, busy, processes, lost);
            ledger.keep(&att, &["rapl", "rapl"], processes);
            node[0] += pkg;
            node[1] += pkg / 5.0;
            let books = ledger.published();
            assert_eq!(books.len(), 2);
            let by_zone = |z: &str| books.iter().find(|b| b.zone == z).unwrap();
            assert_balances(by_zone("package"), node[0]);
            assert_balances(by_zone("dram"), node[1]);
        }
        let pkg = ledger.published().into_iter().find(|b| b.zone == "package");
        let pkg = pkg.unwrap();
        // pods had 4 of every 6 CPU seconds the processes used
        assert!((pkg.pods - 2.0 * pkg.system).abs() < 1e-9, "{pkg:?}");
        assert!(
            pkg.unattributed > 0.0,
            "lost CPU time and kernel work stay unattributed"
        );
    }

    #[test]
    fn gpu_books_conserve_the_counter_delta() {
        let mut ledger = Ledger::default();
        let usage = GpuUsage {
            gpu: 0,
            busy: Some(0.6),
            processes: vec![(100, 0.3), (200, 0.1), (999, 0.05)],
        };
        let split = split_gpu(1000.0, &usage, |pid| pid != 999);
        ledger.begin_interval();
        ledger.keep_gpu("gpu", &split, |pid| pid == 100);
        let books = ledger.published();
        assert_balances(&books[0], 1000.0);
        assert_eq!(
            (books[0].pods, books[0].system),
            (300.0, 100.0),
            "pid 100 in a pod, 200 not"
        );
    }

    #[test]
    fn only_zones_attributed_this_interval_are_published_and_resume_where_they_stopped() {
        let mut ledger = Ledger::default();
        let procs = [process(1, None, 1.0)];
        let interval = |l: &mut Ledger, source: &'static str| {
            l.begin_interval();
            let att = attribute(&[("package".into(), 10.0)], 0.5, &procs, 0.0);
            l.keep(&att, &[source], &procs);
        };
        interval(&mut ledger, "rapl");
        interval(&mut ledger, "estimator");
        let books = ledger.published();
        assert_eq!(books.len(), 1);
        assert_eq!(books[0].source, "estimator");
        interval(&mut ledger, "rapl");
        let books = ledger.published();
        assert_eq!(
            (books[0].source, books[0].idle),
            ("rapl", 10.0),
            "2 × 5 J idle"
        );
        ledger.begin_interval();
        assert!(
            ledger.published().is_empty(),
            "nothing attributed: nothing shown"
        );
    }
}
