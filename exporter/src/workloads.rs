//! Workload records: each pod's, container's and (with `process_detail`) process's energy per
//! zone and source, its labels, and its expiry. A workload that has gone keeps its series
//! (`running: false`, Kepler's `state="terminated"`) until `expire_intervals` pass without it.
//! Pure state: the collection loop hands in this interval's split and how to read a process's
//! executable (the one file read, done by the loop).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use crate::accounting::ProcessDelta;
use crate::attribution::Attribution;
use crate::cgroup::Workload;
use crate::pods::PodDirectory;
use crate::snapshot::{WorkloadKind, WorkloadSeries};

/// One zone of one workload.
#[derive(Debug, Clone)]
struct ZoneTotal {
    zone: String,
    source: &'static str,
    joules: f64,
    watts: f64,
    /// Interval in which `watts` was last set.
    updated: u64,
}

struct WorkloadState {
    labels: Arc<Vec<(&'static str, String)>>,
    kind: WorkloadKind,
    zones: Vec<ZoneTotal>,
    last_seen: u64,
    cgroup: Option<Arc<Workload>>,
    exe: Option<Arc<str>>,
}

impl WorkloadState {
    fn new(kind: WorkloadKind, labels: Arc<Vec<(&'static str, String)>>, gen: u64) -> Self {
        Self {
            labels,
            kind,
            zones: Vec::new(),
            last_seen: gen,
            cgroup: None,
            exe: None,
        }
    }

    /// Remembers a container's cgroup facts (its runtime) the first time it is charged.
    fn note_cgroup(&mut self, w: &Arc<Workload>) {
        if self.kind == WorkloadKind::Container && self.cgroup.is_none() {
            self.cgroup = Some(w.clone());
        }
    }

    /// Adds `joules` to (zone, source); watts of several additions in one interval add up (one
    /// process on two GPUs).
    fn add(&mut self, gen: u64, zone: &str, source: &'static str, joules: f64, dt: Option<f64>) {
        self.last_seen = gen;
        let i = match self
            .zones
            .iter()
            .position(|z| z.zone == zone && z.source == source)
        {
            Some(i) => i,
            None => {
                self.zones.push(ZoneTotal {
                    zone: zone.to_string(),
                    source,
                    joules: 0.0,
                    watts: 0.0,
                    updated: 0,
                });
                self.zones.len() - 1
            }
        };
        let z = &mut self.zones[i];
        if z.updated != gen {
            z.watts = 0.0;
            z.updated = gen;
        }
        z.joules += joules;
        z.watts += dt.map(|dt| joules / dt).unwrap_or(0.0);
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A pod or container whose names the pod watch did not know when it was first seen.
    fn unnamed(&self) -> bool {
        match self.kind {
            WorkloadKind::Pod => self.label("pod_name") == Some(""),
            WorkloadKind::Container => {
                self.label("container_name") == Some("") || self.label("pod_name") == Some("")
            }
            WorkloadKind::Process => false,
        }
    }
}

/// One pod's or container's share this interval, its pod's UID, and one of its cgroups.
type Owner<'a> = (f64, Option<&'a str>, &'a Arc<Workload>);

/// A process's executable path by pid (the loop reads `/proc/<pid>/exe`).
pub type ExeReader<'a> = &'a dyn Fn(u32) -> Arc<str>;

/// Every workload seen in the last `expire_intervals` intervals.
pub struct Workloads {
    map: HashMap<(WorkloadKind, String), WorkloadState>,
    pods: PodDirectory,
    /// Pod directory generation when labels were last refreshed.
    pods_generation: u64,
    /// Keep per-process records (for `top` and `--process-metrics`); pods and containers always.
    process_detail: bool,
    expire_intervals: u64,
}

impl Workloads {
    pub fn new(pods: PodDirectory, process_detail: bool, expire_intervals: u64) -> Self {
        Self {
            map: HashMap::new(),
            pods_generation: pods.generation(),
            pods,
            process_detail,
            expire_intervals,
        }
    }

    /// Whether pod names should be looked up again: the pod directory changed since last time.
    fn pods_changed(&mut self) -> bool {
        let g = self.pods.generation();
        let changed = g != self.pods_generation;
        self.pods_generation = g;
        changed
    }

    /// Adds interval `gen`'s CPU split (`att.zones[i]` from `sources[i]`) to every process (with
    /// `process_detail`), container and pod.
    pub fn record(
        &mut self,
        gen: u64,
        att: &Attribution,
        sources: &[&'static str],
        processes: &[ProcessDelta],
        dt: Option<f64>,
        exe: ExeReader,
    ) {
        let attributable: Vec<(&str, &'static str, f64)> = att
            .zones
            .iter()
            .zip(sources)
            .map(|(z, s)| (z.zone.as_str(), *s, z.active - z.unattributed))
            .collect();
        let add = |st: &mut WorkloadState, share: f64| {
            for (zone, source, j) in &attributable {
                st.add(gen, zone, source, j * share, dt);
            }
        };
        // Group by workload first (processes of one container share one Arc): one map entry per
        // container instead of one allocation per process.
        let mut by_workload: HashMap<*const Workload, (&Arc<Workload>, f64)> = HashMap::new();
        for (p, share) in processes.iter().zip(&att.shares) {
            by_workload
                .entry(Arc::as_ptr(&p.workload))
                .or_insert((&p.workload, 0.0))
                .1 += share;
            if self.process_detail {
                let st = self.process_state(p, gen, exe);
                add(st, *share);
            }
        }
        // (kind, id) → (share, its pod, a cgroup of it)
        let mut owners: HashMap<(WorkloadKind, &str), Owner> = HashMap::new();
        for (w, share) in by_workload.values() {
            if let Some(uid) = &w.pod_uid {
                owners
                    .entry((WorkloadKind::Pod, uid.as_str()))
                    .or_insert((0.0, None, w))
                    .0 += share;
            }
            if let Some(id) = &w.container_id {
                let e = owners
                    .entry((WorkloadKind::Container, id.as_str()))
                    .or_insert((0.0, None, w));
                e.0 += share;
                e.1 = w.pod_uid.as_deref();
            }
        }
        let relabel = self.pods_changed();
        for ((kind, id), (share, pod, w)) in owners {
            let st = self.owner_state(kind, id, pod, relabel, gen);
            st.note_cgroup(w);
            add(st, share);
        }
    }

    /// The process's state; a process that exec'd another program (new `comm`) starts a new one.
    fn process_state(&mut self, p: &ProcessDelta, gen: u64, exe: ExeReader) -> &mut WorkloadState {
        let key = (WorkloadKind::Process, p.pid.to_string());
        let pods = &self.pods;
        let fresh = || {
            let labels = workload_labels(pods, WorkloadKind::Process, &key.1, None, &p.comm);
            let mut st = WorkloadState::new(WorkloadKind::Process, labels, gen);
            st.cgroup = Some(p.workload.clone());
            st.exe = Some(exe(p.pid));
            st
        };
        match self.map.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                if e.get().label("comm") != Some(&*p.comm) {
                    e.insert(fresh());
                }
                e.into_mut()
            }
            Entry::Vacant(e) => e.insert(fresh()),
        }
    }

    /// A pod's or container's state; names the pod watch learnt since it was first seen are
    /// filled in (a container started before its pod's status listed it).
    fn owner_state(
        &mut self,
        kind: WorkloadKind,
        id: &str,
        pod: Option<&str>,
        relabel: bool,
        gen: u64,
    ) -> &mut WorkloadState {
        let pods = &self.pods;
        let st = self.map.entry((kind, id.to_string())).or_insert_with(|| {
            WorkloadState::new(kind, workload_labels(pods, kind, id, pod, ""), gen)
        });
        if relabel && st.unnamed() {
            st.labels = workload_labels(pods, kind, id, pod, "");
        }
        st
    }

    /// Starts interval `gen`'s GPU attribution: every workload's GPU power is 0 W until a GPU's
    /// samples name it (NVML lists only the processes that used a GPU).
    pub fn begin_gpu(&mut self, gen: u64) {
        for st in self.map.values_mut() {
            for z in st.zones.iter_mut().filter(|z| z.zone == "gpu") {
                z.watts = 0.0;
                z.updated = gen;
            }
        }
    }

    /// Adds one process's GPU joules to its process, container and pod records.
    pub fn add_gpu(
        &mut self,
        gen: u64,
        p: &ProcessDelta,
        source: &'static str,
        j: f64,
        dt: Option<f64>,
        exe: ExeReader,
    ) {
        if self.process_detail {
            self.process_state(p, gen, exe)
                .add(gen, "gpu", source, j, dt);
        }
        let pod = p.workload.pod_uid.as_deref();
        if let Some(uid) = pod {
            self.owner_state(WorkloadKind::Pod, uid, None, false, gen)
                .add(gen, "gpu", source, j, dt);
        }
        if let Some(id) = &p.workload.container_id {
            let st = self.owner_state(WorkloadKind::Container, id, pod, false, gen);
            st.note_cgroup(&p.workload);
            st.add(gen, "gpu", source, j, dt);
        }
    }

    /// Drops the records of workloads not seen for `expire_intervals` intervals (at least 1).
    pub fn expire(&mut self, gen: u64) {
        let keep = self.expire_intervals.max(1);
        self.map.retain(|_, s| gen - s.last_seen < keep);
    }

    /// The series of interval `gen`, for the (zone, source) pairs `in_use` accepts.
    pub fn series(&self, gen: u64, in_use: impl Fn(&str, &str) -> bool) -> Vec<WorkloadSeries> {
        let mut out = Vec::with_capacity(self.map.len());
        for st in self.map.values() {
            for z in st.zones.iter().filter(|z| in_use(&z.zone, z.source)) {
                out.push(WorkloadSeries {
                    kind: st.kind,
                    labels: st.labels.clone(),
                    zone: z.zone.clone(),
                    source: z.source,
                    joules_total: z.joules,
                    watts: (z.updated == gen).then_some(z.watts),
                    running: st.last_seen == gen,
                    cgroup: st.cgroup.clone(),
                    exe: st.exe.clone(),
                });
            }
        }
        out
    }
}

/// Labels of one workload's series (Kepler's names), the same whichever zone (CPU, GPU) created it:
/// a pod by its UID, a container by its ID and its pod's UID, a process by pid and comm. Names come
/// from the pod directory and stay empty until the pod watch knows the pod.
fn workload_labels(
    pods: &PodDirectory,
    kind: WorkloadKind,
    id: &str,
    pod: Option<&str>,
    comm: &str,
) -> Arc<Vec<(&'static str, String)>> {
    Arc::new(match kind {
        WorkloadKind::Pod => {
            let info = pods.get(id).unwrap_or_default();
            vec![
                ("pod_id", id.to_string()),
                ("pod_name", info.name),
                ("pod_namespace", info.namespace),
            ]
        }
        WorkloadKind::Container => {
            let info = pod.and_then(|p| pods.get(p)).unwrap_or_default();
            vec![
                ("container_id", id.to_string()),
                (
                    "container_name",
                    info.containers.get(id).cloned().unwrap_or_default(),
                ),
                ("pod_id", pod.unwrap_or_default().to_string()),
                ("pod_name", info.name),
                ("pod_namespace", info.namespace),
            ]
        }
        WorkloadKind::Process => vec![("pid", id.to_string()), ("comm", comm.to_string())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::attribute;
    use crate::pods::PodInfo;

    const POD: &str = "00000001-0000-4000-8000-000000000001";
    const CONTAINER: &str = "c0c0000000000000000000000000000000000000000000000000000000000001";

    fn in_pod() -> Arc<Workload> {
        Arc::new(Workload {
            container_id: Some(CONTAINER.into()),
            runtime: None,
            pod_uid: Some(POD.into()),
        })
    }

    fn process(pid: u32, comm: &str, workload: &Arc<Workload>, cpu_seconds: f64) -> ProcessDelta {
        ProcessDelta {
            pid,
            comm: Arc::from(comm),
            workload: workload.clone(),
            cpu_seconds,
        }
    }

    fn exe(pid: u32) -> Arc<str> {
        Arc::from(format!("/bin/p{pid}").as_str())
    }

    /// One interval: 10 J of package energy, all active, split over `processes`.
    fn interval(w: &mut Workloads, gen: u64, processes: &[ProcessDelta]) -> Vec<WorkloadSeries> {
        let att = attribute(&[("package".into(), 10.0)], 1.0, processes, 0.0);
        w.record(gen, &att, &["rapl"], processes, Some(1.0), &exe);
        w.expire(gen);
        let mut s = w.series(gen, |_, _| true);
        s.sort_by_key(|s| (s.kind, s.labels[0].1.clone()));
        s
    }

    fn find(s: &[WorkloadSeries], kind: WorkloadKind) -> Option<&WorkloadSeries> {
        s.iter().find(|s| s.kind == kind)
    }

    /// A workload that has gone stays, terminated and without power, for `expire_intervals`
    /// intervals counted from the last one it was seen in; then its series are dropped.
    #[test]
    fn a_gone_workload_is_terminated_then_expires() {
        let mut w = Workloads::new(PodDirectory::default(), true, 3);
        let p = [process(100, "app", &in_pod(), 1.0)];
        let s = interval(&mut w, 1, &p);
        assert_eq!(s.len(), 3, "pod, container, process: {s:?}");
        assert!(s.iter().all(|s| s.running && s.watts == Some(10.0)));
        for gen in 2..=3 {
            let s = interval(&mut w, gen, &[]);
            assert_eq!(s.len(), 3, "interval {gen}");
            assert!(s.iter().all(|s| !s.running && s.watts.is_none()));
            assert!(s.iter().all(|s| s.joules_total == 10.0), "totals kept");
        }
        assert!(
            interval(&mut w, 4, &[]).is_empty(),
            "3 intervals gone: expired"
        );
    }

    #[test]
    fn pods_and_containers_always_processes_only_with_detail() {
        let mut w = Workloads::new(PodDirectory::default(), false, 3);
        let c = in_pod();
        let host = Arc::new(Workload::default());
        let s = interval(
            &mut w,
            1,
            &[
                process(1, "a", &c, 3.0),
                process(2, "b", &c, 1.0),
                process(3, "sshd", &host, 4.0),
            ],
        );
        let kinds: Vec<WorkloadKind> = s.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [WorkloadKind::Pod, WorkloadKind::Container]);
        assert_eq!(
            find(&s, WorkloadKind::Pod).unwrap().joules_total,
            5.0,
            "half the CPU time"
        );
    }

    /// Names the pod watch learns after a workload was first seen are filled in; a process that
    /// exec'd another program (new `comm`) is a new record with its own executable.
    #[test]
    fn late_pod_names_are_filled_in_and_an_exec_starts_a_new_process() {
        let pods = PodDirectory::default();
        let mut w = Workloads::new(pods.clone(), true, 3);
        let c = in_pod();
        let s = interval(&mut w, 1, &[process(100, "sh", &c, 1.0)]);
        let labels = |s: &[WorkloadSeries], k| find(s, k).unwrap().labels.to_vec();
        assert_eq!(
            labels(&s, WorkloadKind::Pod),
            [
                ("pod_id", POD.to_string()),
                ("pod_name", String::new()),
                ("pod_namespace", String::new())
            ]
        );
        pods.insert(
            POD.into(),
            PodInfo {
                name: "web".into(),
                namespace: "shop".into(),
                containers: [(CONTAINER.to_string(), "nginx".to_string())].into(),
            },
        );
        let s = interval(&mut w, 2, &[process(100, "nginx", &c, 1.0)]);
        assert_eq!(
            labels(&s, WorkloadKind::Pod)[1],
            ("pod_name", "web".to_string())
        );
        assert_eq!(
            labels(&s, WorkloadKind::Container)[1..4],
            [
                ("container_name", "nginx".to_string()),
                ("pod_id", POD.to_string()),
                ("pod_name", "web".to_string())
            ]
        );
        let proc = find(&s, WorkloadKind::Process).unwrap();
        assert_eq!(proc.labels[1], ("comm", "nginx".to_string()));
        assert_eq!(
            proc.joules_total, 10.0,
            "a new record after the exec, not 20 J"
        );
        assert_eq!(proc.exe.as_deref(), Some("/bin/p100"));
        assert_eq!(find(&s, WorkloadKind::Pod).unwrap().joules_total, 20.0);
    }

    #[test]
    fn gpu_power_is_zero_unless_named_and_series_follow_the_zones_in_use() {
        let mut w = Workloads::new(PodDirectory::default(), false, 3);
        let p = process(100, "trainer", &in_pod(), 1.0);
        w.begin_gpu(1);
        w.add_gpu(1, &p, "gpu", 30.0, Some(1.0), &exe);
        w.add_gpu(1, &p, "gpu", 20.0, Some(1.0), &exe);
        let s = w.series(1, |z, _| z == "gpu");
        assert_eq!(s.len(), 2);
        assert!(
            s.iter().all(|s| s.watts == Some(50.0)),
            "two GPUs add up: {s:?}"
        );
        w.begin_gpu(2);
        let s = w.series(2, |z, _| z == "gpu");
        assert!(s
            .iter()
            .all(|s| s.watts == Some(0.0) && s.joules_total == 50.0));
        assert!(
            w.series(2, |z, _| z != "gpu").is_empty(),
            "zone not in use: withdrawn"
        );
    }
}
