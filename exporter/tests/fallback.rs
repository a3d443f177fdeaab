//! "A figure is either true or absent" through the collector, against fixture trees in the
//! kernel's formats: a meter that goes down is withdrawn and node power falls back to the next
//! source (the estimator last), one source per zone, no energy counted twice across an outage,
//! and the books (idle + pods + system + unattributed = node) balance every interval.

mod common;

use edgewatt_exporter::collector::Collector;
use edgewatt_exporter::fixture::{ids, pod_cgroup, FixtureTree};
use edgewatt_exporter::pods::{PodDirectory, PodInfo};
use edgewatt_exporter::procfs::Procfs;
use edgewatt_exporter::snapshot::{Snapshot, WorkloadKind};
use edgewatt_exporter::source::Source;
use edgewatt_exporter::sources::discover_local;
use edgewatt_exporter::sysfs::HostRoot;

const MAX: u64 = 262_143_328_850;

fn collector_with(t: &FixtureTree, estimator: bool, pods: PodDirectory) -> Collector {
    common::collector(t, common::config("n", 5, true), estimator, pods)
}

fn node<'a>(
    s: &'a Snapshot,
    source: &str,
    zone: &str,
) -> Option<&'a edgewatt_exporter::snapshot::NodeSeries> {
    s.node.iter().find(|n| n.source == source && n.zone == zone)
}

fn state(s: &Snapshot, source: &str) -> &'static str {
    s.sources.iter().find(|x| x.name == source).unwrap().state
}

/// For every attributed zone and source, the node's joules = idle + pods + system + unattributed,
/// and all pods together = the sum of the pod series (none has expired here).
fn assert_books_balance(s: &Snapshot) {
    for b in &s.books {
        let total: f64 = s
            .node
            .iter()
            .filter(|n| n.zone == b.zone && n.source == b.source)
            .map(|n| n.joules_total)
            .sum();
        if s.node
            .iter()
            .all(|n| !(n.zone == b.zone && n.source == b.source))
        {
            continue; // not selected now (withdrawn): its books stay as they were
        }
        let sum = b.idle + b.pods + b.system + b.unattributed;
        assert!(
            (sum - total).abs() <= 1e-9 * total.max(1.0),
            "{} {}: node {total} != idle {} + pods {} + system {} + unattributed {}",
            b.zone,
            b.source,
            b.idle,
            b.pods,
            b.system,
            b.unattributed
        );
        let pods: f64 = s
            .workloads
            .iter()
            .filter(|w| w.kind == WorkloadKind::Pod && w.zone == b.zone && w.source == b.source)
            .map(|w| w.joules_total)
            .sum();
        assert!(
            (pods - b.pods).abs() <= 1e-9 * b.pods.max(1.0),
            "{pods} != {}",
            b.pods
        );
    }
}

fn fixture() -> (tempfile::TempDir, FixtureTree) {
    let (dir, t) = common::tree();
    t.proc_stat(0, 0);
    t.cpuinfo("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 8, false);
    t.rapl_zone("0", "package-0", 0, MAX);
    t.rapl_zone("0:0", "dram", 0, MAX);
    let (uid, cid) = ids(1);
    t.process(100, "app", 0, &pod_cgroup(&uid, &cid));
    t.process(200, "sshd", 0, "/system.slice/sshd.service");
    (dir, t)
}

/// Moves the fixture one interval on: RAPL by `pkg_uj`/`dram_uj`, CPU 60 % busy.
fn tick(t: &FixtureTree, i: u64, pkg_uj: u64, dram_uj: u64) {
    t.rapl_energy("0", pkg_uj);
    t.rapl_energy("0:0", dram_uj);
    t.proc_stat(60 * i, 40 * i);
    t.process_ticks(100, "app", 40 * i);
    t.process_ticks(200, "sshd", 10 * i);
}

/// RAPL goes down: its series go (never 0 W), the estimator takes node power over, labelled
/// `estimator`, and the source states say which is in use and why. RAPL comes back: its first
/// reading after the gap is a new baseline, so the outage (which the estimator already counted)
/// is not counted again.
#[test]
fn a_down_meter_is_withdrawn_and_the_estimator_stands_in() {
    let (_dir, t) = fixture();
    let mut c = collector_with(&t, true, PodDirectory::default());
    c.collect();
    tick(&t, 1, 10_000_000, 2_000_000);
    let s = c.collect();
    assert_eq!(s.node_watts_source, Some("rapl"));
    assert_eq!(state(&s, "rapl"), "in_use");
    assert_eq!(
        state(&s, "estimator"),
        "standby",
        "calibrating, not published"
    );
    assert!(s.node.iter().all(|n| n.source == "rapl"), "{:?}", s.node);
    assert_books_balance(&s);
    let rapl_before = node(&s, "rapl", "package").unwrap().joules_total;
    assert!((rapl_before - 10.0).abs() < 1e-9);

    // RAPL's counter unreadable for two intervals (driver reload, hung file): withdrawn.
    for i in 2..4 {
        t.set("sys/class/powercap/intel-rapl:0/energy_uj", "");
        t.proc_stat(60 * i, 40 * i);
        let s = c.collect();
        assert!(
            node(&s, "rapl", "package").is_none(),
            "a down meter's series are withdrawn"
        );
        assert!(
            node(&s, "rapl", "dram").is_none(),
            "the whole source is down"
        );
        let est = node(&s, "estimator", "package").expect("the estimator stands in");
        assert!(est.watts > 0.0);
        assert_eq!(s.node_watts_source, Some("estimator"));
        assert_eq!(state(&s, "rapl"), "error");
        assert_eq!(state(&s, "estimator"), "in_use");
        let top = edgewatt_exporter::top::render(&s, 5);
        assert!(
            top.contains("source: estimator, ESTIMATED — no meter reports: rapl error (")
                && top.contains("energy_uj"),
            "{top}"
        );
        assert_books_balance(&s);
    }
    // Back, 30 J later (the outage's energy is in the jump): a baseline, the estimator still
    // covers this interval.
    tick(&t, 4, 40_000_000, 6_000_000);
    let s = c.collect();
    assert!(
        node(&s, "rapl", "package").is_none(),
        "first reading after a gap is a baseline"
    );
    assert_eq!(s.node_watts_source, Some("estimator"));
    // Then RAPL again, from where it stopped plus only this interval's 5 J.
    tick(&t, 5, 45_000_000, 7_000_000);
    let s = c.collect();
    let pkg = node(&s, "rapl", "package").expect("rapl back");
    assert!(
        (pkg.joules_total - (rapl_before + 5.0)).abs() < 1e-9,
        "{} — the 30 J gap must not be counted again",
        pkg.joules_total
    );
    assert_eq!(s.node_watts_source, Some("rapl"));
    assert!(
        node(&s, "estimator", "package").is_none(),
        "one source per zone"
    );
    assert_books_balance(&s);
}

/// RAPL and hwmon's `zenergy` both measure the package: only RAPL is published (hwmon waits in
/// standby); when RAPL fails hwmon takes the zone, starting from its own zero, not from what it
/// counted while unpublished.
#[test]
fn one_source_per_zone_rapl_before_hwmon() {
    let (_dir, t) = fixture();
    t.set("sys/class/hwmon/hwmon3/name", "zenergy");
    t.set("sys/class/hwmon/hwmon3/energy1_input", 0);
    t.set("sys/class/hwmon/hwmon3/energy1_label", "Esocket0");
    let mut c = collector_with(&t, false, PodDirectory::default());
    c.collect();
    for i in 1..4u64 {
        tick(&t, i, i * 10_000_000, i * 1_000_000);
        t.set("sys/class/hwmon/hwmon3/energy1_input", i * 9_000_000);
        let s = c.collect();
        let pkgs: Vec<&str> = s
            .node
            .iter()
            .filter(|n| n.zone == "package")
            .map(|n| n.source)
            .collect();
        assert_eq!(pkgs, ["rapl"]);
        assert_eq!(state(&s, "hwmon"), "standby");
    }
    t.set("sys/class/powercap/intel-rapl:0/energy_uj", "garbage");
    t.set("sys/class/hwmon/hwmon3/energy1_input", 4 * 9_000_000);
    t.proc_stat(240, 160);
    let s = c.collect();
    let pkg = node(&s, "hwmon", "package").expect("hwmon takes the package over");
    assert!(
        (pkg.joules_total - 9.0).abs() < 1e-9,
        "{}",
        pkg.joules_total
    );
    assert_eq!(s.node_watts_source, Some("hwmon"));
    assert_eq!(state(&s, "hwmon"), "in_use");
    assert_books_balance(&s);
}

/// A process moved into a pod's cgroup after the exporter first saw it is attributed to that pod
/// from its next busy interval; an exec renames it; a container whose pod status did not list it
/// yet gets its name once the pod watch does.
#[test]
fn moved_renamed_and_late_named_workloads() {
    let (_dir, t) = fixture();
    let pods = PodDirectory::default();
    let (uid, cid) = ids(1);
    pods.insert(
        uid.clone(),
        PodInfo {
            name: "web".into(),
            namespace: "shop".into(),
            containers: Default::default(),
        },
    );
    t.process(300, "runc:[2:INIT]", 0, "/system.slice/containerd.service");
    let mut c = collector_with(&t, false, pods.clone());
    c.collect();
    tick(&t, 1, 10_000_000, 1_000_000);
    t.process_ticks(300, "runc:[2:INIT]", 20);
    let s = c.collect();
    let proc300 = |s: &Snapshot| {
        s.workloads
            .iter()
            .find(|w| w.kind == WorkloadKind::Process && w.labels[0].1 == "300")
            .map(|w| w.labels[1].1.clone())
    };
    assert_eq!(proc300(&s).as_deref(), Some("runc:[2:INIT]"));
    let pod_joules = |s: &Snapshot| -> f64 {
        s.workloads
            .iter()
            .filter(|w| w.kind == WorkloadKind::Pod && w.labels[0].1 == uid)
            .map(|w| w.joules_total)
            .sum()
    };
    let before = pod_joules(&s);
    // runc moves it into the container's cgroup and execs the entrypoint.
    t.set("proc/300/cgroup", format!("0::{}", pod_cgroup(&uid, &cid)));
    tick(&t, 2, 20_000_000, 2_000_000);
    t.process_ticks(300, "nginx", 60);
    let s = c.collect();
    assert_eq!(proc300(&s).as_deref(), Some("nginx"), "renamed on exec");
    // package 10 J + dram 1 J, 60 % busy; CPU ticks this interval: app 40, sshd 10, pid 300 40
    let got = pod_joules(&s) - before;
    assert!(
        (got - 6.6 * 80.0 / 90.0).abs() < 1e-9,
        "moved process not re-attributed: {got}"
    );
    let container = |s: &Snapshot| {
        s.workloads
            .iter()
            .find(|w| w.kind == WorkloadKind::Container)
            .map(|w| (w.labels[1].1.clone(), w.labels[3].1.clone()))
            .unwrap()
    };
    assert_eq!(
        container(&s),
        (String::new(), "web".to_string()),
        "status lists no container yet"
    );
    pods.insert(
        uid.clone(),
        PodInfo {
            name: "web".into(),
            namespace: "shop".into(),
            containers: [(cid.clone(), "nginx".to_string())].into(),
        },
    );
    tick(&t, 3, 30_000_000, 3_000_000);
    let s = c.collect();
    assert_eq!(container(&s), ("nginx".to_string(), "web".to_string()));
    assert_books_balance(&s);
}

/// Procfs accounting that fails on demand (a `/proc` that cannot be listed).
struct Flaky(Procfs, std::sync::Arc<std::sync::atomic::AtomicBool>);

impl edgewatt_exporter::accounting::CpuAccounting for Flaky {
    fn name(&self) -> &'static str {
        "procfs"
    }
    fn collect(
        &mut self,
    ) -> Result<
        Vec<edgewatt_exporter::accounting::ProcessDelta>,
        edgewatt_exporter::source::SourceError,
    > {
        if self.1.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(edgewatt_exporter::source::SourceError::Other(
                "/proc: EIO".into(),
            ));
        }
        self.0.collect()
    }
}

/// Watts of a workload zone not attributed this interval are absent, not 0 and not stale: when
/// the accounting fails, no workload has a power figure, the energy is unattributed, and the
/// books still balance.
#[test]
fn failed_accounting_leaves_power_absent() {
    let (_dir, t) = fixture();
    let root = HostRoot::new(t.root());
    let (sources, _) = discover_local(&root);
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = Collector::new(
        common::config("n", 5, false),
        root.clone(),
        sources,
        Box::new(Flaky(Procfs::new(&root), fail.clone())),
        PodDirectory::default(),
    );
    c.collect();
    tick(&t, 1, 10_000_000, 1_000_000);
    let s = c.collect();
    assert!(s.workloads.iter().all(|w| w.watts.is_some()));
    let unattributed = |s: &Snapshot| {
        s.books
            .iter()
            .find(|b| b.zone == "package")
            .unwrap()
            .unattributed
    };
    let before = unattributed(&s);
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    tick(&t, 2, 20_000_000, 2_000_000);
    let s = c.collect();
    assert!(!s.workloads.is_empty(), "totals are kept");
    assert!(
        s.workloads.iter().all(|w| w.watts.is_none()),
        "{:?}",
        s.workloads
    );
    assert!(
        (unattributed(&s) - before - 6.0).abs() < 1e-9,
        "10 J at 60 % busy, nobody named"
    );
    assert_books_balance(&s);
}

/// A BMC's energy counter, read by polls that do not line up with collections: power is the
/// counter's delta over the BMC's own reading times, so an interval without a new reading shows
/// the last measured power (never 0 W, never 2× the next time), its energy arriving with the next
/// reading; totals stay exact. After an outage, a baseline polled before the last collection
/// counts only from that collection on (whatever stood in covered the rest).
#[test]
fn a_polled_energy_counter_is_neither_zero_nor_doubled() {
    use edgewatt_exporter::source::{Context, Domain, Meter, MeterValue, Sample, SourceError};
    use std::time::{Duration, Instant};
    /// What the BMC does at each collection.
    #[derive(Clone, Copy)]
    enum Poll {
        /// A new reading, measured now (minus this many ms).
        New(u64),
        /// The same reading as last time.
        Same,
        Silent,
    }
    struct Bmc {
        script: Vec<Poll>,
        base: Instant,
        last: Option<(f64, Instant)>,
        step: usize,
    }
    impl Source for Bmc {
        fn name(&self) -> &'static str {
            "redfish"
        }
        fn sample(&mut self, _: &Context) -> Result<Sample, SourceError> {
            let poll = self.script[self.step];
            self.step += 1;
            let (j, at) = match poll {
                // a 100 W node: the counter is 100 J per second since `base`
                Poll::New(ago) => {
                    let at = Instant::now() - Duration::from_millis(ago);
                    (100.0 * at.duration_since(self.base).as_secs_f64(), at)
                }
                Poll::Same => self.last.unwrap(),
                Poll::Silent => return Err(SourceError::Stale("BMC silent".into())),
            };
            self.last = Some((j, at));
            Ok(Sample {
                meters: vec![Meter {
                    domain: Domain::Platform,
                    zone: "platform".into(),
                    value: MeterValue::JoulesAt(j, at),
                }],
                ..Sample::default()
            })
        }
    }
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    let root = HostRoot::new(t.root());
    use Poll::*;
    let script = vec![New(0), New(0), Same, New(0), Silent, New(150), New(0)];
    let mut c = Collector::new(
        common::config("n", 5, false),
        root.clone(),
        vec![Box::new(Bmc {
            script,
            base: Instant::now() - Duration::from_secs(1),
            last: None,
            step: 0,
        })],
        Box::new(Procfs::new(&root)),
        PodDirectory::default(),
    );
    let platform = |s: &Snapshot| {
        s.node
            .iter()
            .find(|n| n.domain == Domain::Platform)
            .map(|n| (n.watts, n.joules_total))
    };
    let mut seen = Vec::new();
    for _ in 0..7 {
        std::thread::sleep(Duration::from_millis(200));
        let s = c.collect();
        seen.push((platform(&s), s.interval_seconds));
    }
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.max(1.0);
    assert_eq!(seen[0].0, None, "first reading is a baseline");
    let (w1, j1) = seen[1].0.unwrap();
    assert!(near(w1, 100.0) && j1 > 15.0, "{:?}", seen[1]);
    let (w2, j2) = seen[2].0.expect("no new poll: still published");
    assert!(near(w2, 100.0), "the last measured power, not 0 W: {w2}");
    assert_eq!(j2, j1, "no new poll, no energy");
    let (w3, j3) = seen[3].0.unwrap();
    assert!(near(w3, 100.0), "{w3}");
    assert!(
        (j3 - j1 - 100.0 * (seen[2].1 + seen[3].1)).abs() < 2.0,
        "the next poll brings both intervals: {seen:?}"
    );
    assert_eq!(seen[4].0, None, "silent: withdrawn");
    assert_eq!(seen[5].0, None, "back: a new baseline");
    let (w6, j6) = seen[6].0.unwrap();
    assert!(near(w6, 100.0), "{w6}");
    // the baseline was measured 150 ms before its collection; only the time since that
    // collection counts (the previous interval belonged to whatever stood in)
    let counted = j6 - j3;
    assert!(
        (counted - 100.0 * seen[6].1).abs() < 2.0,
        "{counted} J counted for a {} s interval at 100 W",
        seen[6].1
    );
}
