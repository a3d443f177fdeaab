//! Energy sources and attribution against fixture trees in the kernel's exact formats.

mod common;

use edgewatt_exporter::collector::Collector;
use edgewatt_exporter::fixture::{ids, pod_cgroup, BatteryFiles, FixtureTree};
use edgewatt_exporter::pods::PodDirectory;
use edgewatt_exporter::procfs::Procfs;
use edgewatt_exporter::snapshot::{Snapshot, WorkloadKind};
use edgewatt_exporter::source::Domain;
use edgewatt_exporter::sysfs::HostRoot;

fn collector(t: &FixtureTree) -> Collector {
    let mut cfg = common::config("n1", 2, true);
    cfg.carbon_intensity = Some(400.0);
    common::collector(t, cfg, false, PodDirectory::default())
}

fn cpu_joules(s: &Snapshot, zone: &str) -> f64 {
    s.node
        .iter()
        .filter(|n| n.domain == Domain::Cpu && n.zone == zone && n.source == "rapl")
        .map(|n| n.joules_total)
        .sum()
}

const MAX: u64 = 262_143_328_850;

/// Two sockets, dram only on socket 0, and socket 1's package counter wraps between readings.
#[test]
fn rapl_two_sockets_missing_dram_and_wrap() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    t.rapl_zone("0", "package-0", 1_000_000, MAX);
    t.rapl_zone("0:0", "dram", 500_000, MAX);
    t.rapl_zone("1", "package-1", MAX - 2_000_000, MAX);
    t.rapl_zone("1:0", "core", 10, MAX);
    // an MMIO duplicate of package-0 must not be counted
    t.set("sys/class/powercap/intel-rapl-mmio:0/name", "package-0");
    t.set(
        "sys/class/powercap/intel-rapl-mmio:0/energy_uj",
        999_999_999,
    );
    let mut c = collector(&t);
    let first = c.collect();
    assert_eq!(
        cpu_joules(&first, "package"),
        0.0,
        "the first reading is a baseline"
    );

    t.rapl_energy("0", 6_000_000); // +5 J
    t.rapl_energy("0:0", 1_500_000); // +1 J
    t.rapl_energy("1", 3_000_000); // wrapped: +2 J to the end, +3 J from zero
    t.proc_stat(50, 50);
    let s = c.collect();
    assert!(
        (cpu_joules(&s, "package") - 10.0).abs() < 1e-9,
        "{}",
        cpu_joules(&s, "package")
    );
    assert!((cpu_joules(&s, "dram") - 1.0).abs() < 1e-9);
    let pkg = s.node.iter().find(|n| n.zone == "package").unwrap();
    assert!((pkg.active_joules_total + pkg.idle_joules_total - 10.0).abs() < 1e-9);
    assert!(
        (pkg.active_joules_total - 5.0).abs() < 1e-9,
        "busy ratio 0.5"
    );
    assert!(s.sources.iter().all(|x| x.up));

    // counters keep growing monotonically over many wraps
    let mut prev = cpu_joules(&s, "package");
    for i in 1..20u64 {
        t.rapl_energy("1", (3_000_000 + i * 50_000_000_000) % MAX);
        let s = c.collect();
        let now = cpu_joules(&s, "package");
        assert!(now >= prev, "{now} < {prev}");
        prev = now;
    }
}

/// Garbage in one source marks it down with a reason naming the file; others keep working.
#[test]
fn garbage_marks_only_that_source_down() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    t.rapl_zone("0", "package-0", 1_000, MAX);
    t.battery(
        "BAT0",
        &BatteryFiles {
            status: "Discharging",
            capacity: Some(50),
            ..Default::default()
        },
    );
    let mut c = collector(&t);
    c.collect();
    t.set("sys/class/power_supply/BAT0/capacity", "lots");
    t.rapl_energy("0", 2_001_000);
    let s = c.collect();
    let bat = s.sources.iter().find(|x| x.name == "battery").unwrap();
    assert!(!bat.up);
    let reason = bat.reason.clone().unwrap();
    assert!(
        reason.contains("BAT0/capacity") && reason.contains("lots"),
        "{reason}"
    );
    assert!(s.sources.iter().find(|x| x.name == "rapl").unwrap().up);
    assert!((cpu_joules(&s, "package") - 2.0).abs() < 1e-9);
    // and RAPL garbage: down, battery fine again
    t.set("sys/class/power_supply/BAT0/capacity", 49);
    t.set("sys/class/powercap/intel-rapl:0/energy_uj", "");
    let s = c.collect();
    assert!(!s.sources.iter().find(|x| x.name == "rapl").unwrap().up);
    assert_eq!(s.battery.as_ref().unwrap().charge_ratio, Some(0.49));
}

#[test]
fn discharging_battery_and_mains() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    // energy_* driver: 20 Wh of 50 Wh, 7.5 W draw
    t.battery(
        "BAT0",
        &BatteryFiles {
            status: "Discharging",
            capacity: Some(40),
            energy_now_uwh: Some(20_000_000),
            energy_full_uwh: Some(50_000_000),
            voltage_now_uv: Some(12_000_000),
            power_now_uw: Some(7_500_000),
            ..Default::default()
        },
    );
    t.mains("AC", false);
    let mut c = collector(&t);
    let s = c.collect();
    let b = s.battery.clone().unwrap();
    assert_eq!(b.charge_ratio, Some(0.4));
    assert!((b.energy_joules.unwrap() - 72_000.0).abs() < 1e-6);
    assert!((b.capacity_joules.unwrap() - 180_000.0).abs() < 1e-6);
    assert_eq!(b.draw_watts, Some(7.5));
    assert_eq!(s.external_power, Some(false));

    // charge_* driver on mains: charging current is not draw; no capacity file → energy ratio
    t.battery(
        "BAT0",
        &BatteryFiles {
            status: "Charging",
            charge_now_uah: Some(1_000_000),
            charge_full_uah: Some(4_000_000),
            voltage_now_uv: Some(12_000_000),
            current_now_ua: Some(-500_000),
            ..Default::default()
        },
    );
    t.mains("AC", true);
    let s = c.collect();
    let b = s.battery.clone().unwrap();
    assert!(
        (b.energy_joules.unwrap() - 43_200.0).abs() < 1e-6,
        "1 Ah at 12 V"
    );
    assert_eq!(b.charge_ratio, Some(0.25));
    assert_eq!(b.draw_watts, Some(0.0));
    assert_eq!(s.external_power, Some(true));
}

/// Power into the battery from the kernel's own words (torvalds/linux
/// `Documentation/ABI/testing/sysfs-class-power`): `status` Charging / Discharging / Not charging /
/// Full / Unknown, the reading in `power_now` (µW) or `current_now` (µA; "negative values are used
/// for discharging batteries, positive values for charging batteries") × `voltage_now` (µV). A
/// laptop's ACPI battery reports magnitudes only, so its status gives the direction.
#[test]
fn charging_power_into_a_laptop_battery() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    let laptop = |status: &'static str, power_now_uw: Option<u64>| BatteryFiles {
        status,
        capacity: Some(60),
        energy_now_uwh: Some(30_000_000),
        energy_full_uwh: Some(50_000_000),
        voltage_now_uv: Some(12_600_000),
        power_now_uw,
        ..Default::default()
    };
    t.battery("BAT0", &laptop("Charging", Some(12_000_000)));
    t.mains("AC", true);
    let mut c = collector(&t);
    let charge_and_draw = |c: &mut Collector| {
        let b = c.collect().battery.unwrap();
        (b.charge_watts, b.draw_watts)
    };
    assert_eq!(
        charge_and_draw(&mut c),
        (Some(12.0), Some(0.0)),
        "12 W in, nothing drawn"
    );
    for status in ["Full", "Not charging", "Discharging"] {
        t.battery("BAT0", &laptop(status, Some(12_000_000)));
        let (charge, _) = charge_and_draw(&mut c);
        assert_eq!(
            charge,
            Some(0.0),
            "{status}: the kernel says nothing flows in"
        );
    }
    t.battery("BAT0", &laptop("Discharging", Some(12_000_000)));
    assert_eq!(
        charge_and_draw(&mut c),
        (Some(0.0), Some(12.0)),
        "the draw as before"
    );
    // Charging with no power or current reading: unknown, not 0 W.
    t.battery("BAT0", &laptop("Charging", None));
    assert_eq!(charge_and_draw(&mut c), (None, None));
}

/// A UPS whose driver follows the ABI's sign for `current_now`: +2 A at 13.5 V while charging is
/// 27 W in; -3 A while discharging is 40.5 W drawn and nothing in. A sign that contradicts the
/// status leaves the charge power unknown; with status `Unknown`, a negative current says nothing
/// flows in, a positive one (a magnitude-only driver might be discharging) says nothing certain.
#[test]
fn charging_power_into_a_ups_from_signed_current() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    let ups = |status: &'static str, current_now_ua: i64| BatteryFiles {
        status,
        capacity: Some(80),
        charge_now_uah: Some(7_200_000),
        charge_full_uah: Some(9_000_000),
        voltage_now_uv: Some(13_500_000),
        current_now_ua: Some(current_now_ua),
        ..Default::default()
    };
    t.ups("ups0", &ups("Charging", 2_000_000));
    let mut c = collector(&t);
    let charge_and_draw = |c: &mut Collector| {
        let b = c.collect().battery.unwrap();
        (b.charge_watts, b.draw_watts)
    };
    let close = |got: (Option<f64>, Option<f64>), want: (Option<f64>, Option<f64>)| {
        let eq = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (a, b) => a == b,
        };
        assert!(
            eq(got.0, want.0) && eq(got.1, want.1),
            "{got:?} != {want:?}"
        );
    };
    close(charge_and_draw(&mut c), (Some(27.0), Some(0.0)));
    t.ups("ups0", &ups("Discharging", -3_000_000));
    close(charge_and_draw(&mut c), (Some(0.0), Some(40.5)));
    t.ups("ups0", &ups("Charging", -500_000));
    close(charge_and_draw(&mut c), (None, Some(0.0)));
    t.ups("ups0", &ups("Unknown", -500_000));
    close(charge_and_draw(&mut c), (Some(0.0), Some(0.0)));
    t.ups("ups0", &ups("Unknown", 500_000));
    close(charge_and_draw(&mut c), (None, Some(0.0)));
}

/// Several batteries are one node battery: charge power is their sum, and unknown when any one's
/// is unknown (a sum over some would be a made-up figure).
#[test]
fn charging_power_of_several_batteries_is_summed_or_unknown() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    let charging = |power_now_uw: Option<u64>| BatteryFiles {
        status: "Charging",
        energy_now_uwh: Some(10_000_000),
        energy_full_uwh: Some(40_000_000),
        power_now_uw,
        ..Default::default()
    };
    t.battery("BAT0", &charging(Some(15_000_000)));
    t.battery("BAT1", &charging(Some(5_000_000)));
    let mut c = collector(&t);
    assert_eq!(c.collect().battery.unwrap().charge_watts, Some(20.0));
    t.battery("BAT1", &charging(None));
    assert_eq!(c.collect().battery.unwrap().charge_watts, None);
}

#[test]
fn hwmon_power_meter_and_amd_energy() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    t.set("sys/class/hwmon/hwmon0/name", "power_meter");
    t.set("sys/class/hwmon/hwmon0/power1_average", 95_000_000);
    t.set("sys/class/hwmon/hwmon1/name", "amd_energy");
    t.set("sys/class/hwmon/hwmon1/energy1_input", 1_000_000);
    t.set("sys/class/hwmon/hwmon1/energy1_label", "Esocket0");
    t.set("sys/class/hwmon/hwmon1/energy2_input", 5_000_000);
    t.set("sys/class/hwmon/hwmon1/energy2_label", "Ecore000");
    t.set("sys/class/hwmon/hwmon2/name", "nvme");
    t.set("sys/class/hwmon/hwmon2/temp1_input", 40_000);
    let mut c = collector(&t);
    c.collect();
    t.set("sys/class/hwmon/hwmon1/energy1_input", 4_000_000);
    let s = c.collect();
    let platform = s
        .node
        .iter()
        .find(|n| n.domain == Domain::Platform)
        .unwrap();
    assert_eq!(platform.watts, 95.0);
    assert_eq!(
        s.node_watts,
        Some(95.0),
        "the platform meter is the node's draw"
    );
    let pkg = s.node.iter().find(|n| n.domain == Domain::Cpu).unwrap();
    assert_eq!((pkg.source, pkg.zone.as_str()), ("hwmon", "package"));
    assert!(
        (pkg.joules_total - 3.0).abs() < 1e-9,
        "Ecore is left out, Esocket counts"
    );
}

/// Pods, containers and plain processes share the package by CPU time; pods + non-pod processes
/// + idle = node; a finished pod's series expire.
#[test]
fn attribution_through_the_collector() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    t.rapl_zone("0", "package-0", 0, MAX);
    let (uid_a, c_a) = ids(1);
    let (uid_b, c_b) = ids(2);
    t.process(100, "nginx", 0, &pod_cgroup(&uid_a, &c_a));
    t.process(101, "worker", 0, &pod_cgroup(&uid_a, &c_a));
    t.process(200, "redis", 0, &pod_cgroup(&uid_b, &c_b));
    t.process(300, "sshd", 0, "/system.slice/sshd.service");
    let mut c = collector(&t);
    c.collect();
    // 100 J; 60 % busy; CPU ticks 30:10:15:5
    t.rapl_energy("0", 100_000_000);
    t.proc_stat(60, 40);
    t.process_ticks(100, "nginx", 30);
    t.process_ticks(101, "worker", 10);
    t.process_ticks(200, "redis", 15);
    t.process_ticks(300, "sshd", 5);
    let s = c.collect();
    let sum = |kind: WorkloadKind, id: &str| -> f64 {
        s.workloads
            .iter()
            .filter(|w| w.kind == kind && w.labels[0].1 == id)
            .map(|w| w.joules_total)
            .sum()
    };
    let active = 60.0;
    assert!((sum(WorkloadKind::Pod, &uid_a) - active * 40.0 / 60.0).abs() < 1e-9);
    assert!((sum(WorkloadKind::Pod, &uid_b) - active * 15.0 / 60.0).abs() < 1e-9);
    assert!((sum(WorkloadKind::Container, &c_a) - active * 40.0 / 60.0).abs() < 1e-9);
    assert!((sum(WorkloadKind::Process, "300") - active * 5.0 / 60.0).abs() < 1e-9);
    let pods = sum(WorkloadKind::Pod, &uid_a) + sum(WorkloadKind::Pod, &uid_b);
    let idle = s.node[0].idle_joules_total;
    assert!((pods + sum(WorkloadKind::Process, "300") + idle - 100.0).abs() < 1e-9);
    assert!(s.workloads.iter().all(|w| w.source == "rapl"));
    // container series carry their pod
    let cont = s
        .workloads
        .iter()
        .find(|w| w.kind == WorkloadKind::Container)
        .unwrap();
    assert!(cont
        .labels
        .iter()
        .any(|(k, v)| *k == "pod_id" && !v.is_empty()));

    // pod B ends: its series stay for expire_intervals (2), then go
    t.remove_process(200);
    let s = c.collect();
    assert!(s.workloads.iter().any(|w| w.labels[0].1 == uid_b));
    let s = c.collect();
    assert!(
        !s.workloads.iter().any(|w| w.labels[0].1 == uid_b),
        "expired"
    );
    assert!(s.workloads.iter().any(|w| w.labels[0].1 == uid_a));
    assert!(s.co2_grams_total.unwrap() > 0.0);
}

/// With no meter, the estimator gives node watts on the machine's real load.
#[test]
fn estimator_on_real_proc() {
    use clap::Parser;
    use edgewatt_exporter::cli::{Cli, Command};
    let cli = Cli::parse_from(["edgewatt-exporter", "--host-root", "/", "top"]);
    assert!(matches!(cli.command, Some(Command::Top(_))));
    let mut c = edgewatt_exporter::app::build(&cli.common, true, std::time::Duration::from_secs(2))
        .unwrap();
    c.collect();
    // burn some CPU so the interval is not idle
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(300) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
    let s = c.collect();
    let has_meter = s
        .sources
        .iter()
        .any(|x| matches!(x.name, "rapl" | "hwmon") && x.up);
    if has_meter {
        eprintln!("this machine has a real CPU meter; the estimator only calibrates here");
        return;
    }
    assert_eq!(s.node_watts_source, Some("estimator"));
    assert!(s.node_watts.unwrap() > 0.0);
    let me = std::process::id().to_string();
    let mine: f64 = s
        .workloads
        .iter()
        .filter(|w| w.kind == WorkloadKind::Process && w.labels[0].1 == me)
        .filter_map(|w| w.watts)
        .sum();
    assert!(
        mine > 0.0,
        "this test process burned CPU and must get a share"
    );
    assert!(s
        .source_info
        .iter()
        .any(|(src, l)| *src == "estimator" && l.iter().any(|(k, _)| *k == "confidence")));
}

/// One interval of a stand-in GPU: joules added, device busy, per-pid SM shares.
type GpuStep = (f64, Option<f64>, Vec<(u32, f64)>);

/// A stand-in GPU source: what NVML reports (an energy counter, the device's utilisation, per
/// process SM shares), without NVIDIA hardware.
struct FakeGpu {
    script: Vec<GpuStep>,
    counter: f64,
    step: usize,
    /// Whether NVML says who used the GPU at all.
    usage: bool,
}

impl edgewatt_exporter::source::Source for FakeGpu {
    fn name(&self) -> &'static str {
        "gpu"
    }
    fn sample(
        &mut self,
        _: &edgewatt_exporter::source::Context,
    ) -> Result<edgewatt_exporter::source::Sample, edgewatt_exporter::source::SourceError> {
        use edgewatt_exporter::source::{GpuUsage, Meter, MeterValue, Sample};
        let (add, busy, procs) = self.script[self.step.min(self.script.len() - 1)].clone();
        self.step += 1;
        self.counter += add;
        Ok(Sample {
            meters: vec![Meter {
                domain: Domain::Gpu {
                    index: 0,
                    uuid: "GPU-1".into(),
                },
                zone: "gpu".into(),
                value: MeterValue::Joules(self.counter),
            }],
            gpu_usage: if self.usage {
                vec![GpuUsage {
                    gpu: 0,
                    busy,
                    processes: procs,
                }]
            } else {
                vec![]
            },
            ..Sample::default()
        })
    }
}

/// A collector whose only source is `gpu`.
fn gpu_collector(
    t: &FixtureTree,
    gpu: impl edgewatt_exporter::source::Source + 'static,
) -> Collector {
    let root = HostRoot::new(t.root());
    Collector::new(
        common::config("g", 3, false),
        root.clone(),
        vec![Box::new(gpu)],
        Box::new(Procfs::new(&root)),
        PodDirectory::default(),
    )
}

/// Pod GPU joules are the board's energy-counter deltas split by NVML's utilisation samples: a
/// pod at 30 % SM gets 30 % of the counter's delta, idle time goes to no pod, a process this node
/// cannot name stays unattributed, and idle + pods + system + unattributed = the board's counter.
#[test]
fn gpu_energy_from_counter_deltas_is_conserved() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    let (uid, cid) = ids(3);
    t.process(100, "trainer", 0, &pod_cgroup(&uid, &cid));
    t.process(200, "Xorg", 0, "/system.slice/display.service");
    let gpu = FakeGpu {
        script: vec![
            (0.0, None, vec![]),
            // 1 000 J: busy 60 %: trainer 30 %, Xorg 10 %, pid 999 (another namespace) 5 %
            (1000.0, Some(0.6), vec![(100, 0.3), (200, 0.1), (999, 0.05)]),
            // 400 J, idle: no process ran
            (400.0, Some(0.0), vec![]),
        ],
        counter: 5000.0,
        step: 0,
        usage: true,
    };
    let mut c = gpu_collector(&t, gpu);
    c.collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let s = c.collect();
    let gpu = s
        .node
        .iter()
        .find(|n| matches!(n.domain, Domain::Gpu { .. }))
        .unwrap();
    assert_eq!(gpu.joules_total, 1000.0);
    let pod_gpu = |s: &Snapshot| -> f64 {
        s.workloads
            .iter()
            .filter(|w| w.kind == WorkloadKind::Pod && w.zone == "gpu")
            .map(|w| w.joules_total)
            .sum()
    };
    assert!((pod_gpu(&s) - 300.0).abs() < 1e-6, "{}", pod_gpu(&s));
    let b = s.books.iter().find(|b| b.zone == "gpu").unwrap();
    assert!((b.idle - 400.0).abs() < 1e-6, "{b:?}");
    assert!((b.pods - 300.0).abs() < 1e-6, "{b:?}");
    assert!((b.system - 100.0).abs() < 1e-6, "{b:?}");
    assert!((b.unattributed - 200.0).abs() < 1e-6, "{b:?}");
    // an idle interval: all idle, the pod's GPU power is 0 W, not its last value
    std::thread::sleep(std::time::Duration::from_millis(50));
    let s = c.collect();
    let b = s.books.iter().find(|b| b.zone == "gpu").unwrap();
    assert!(
        (b.idle + b.pods + b.system + b.unattributed - 1400.0).abs() < 1e-6,
        "{b:?}"
    );
    assert!((pod_gpu(&s) - 300.0).abs() < 1e-6);
    let watts: Vec<Option<f64>> = s
        .workloads
        .iter()
        .filter(|w| w.kind == WorkloadKind::Pod && w.zone == "gpu")
        .map(|w| w.watts)
        .collect();
    assert_eq!(watts, vec![Some(0.0)]);

    // The container's series carry the same labels as a CPU-created one (its pod included), even
    // though only the GPU pass saw it.
    let container = s
        .workloads
        .iter()
        .find(|w| w.kind == WorkloadKind::Container && w.zone == "gpu")
        .expect("container gpu series");
    let keys: Vec<&str> = container.labels.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "container_id",
            "container_name",
            "pod_id",
            "pod_name",
            "pod_namespace"
        ]
    );
    assert!(container
        .labels
        .iter()
        .any(|(k, v)| *k == "pod_id" && *v == uid));
    // and it renders as the pod GPU family and the books' families
    let snap = std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(s)));
    let reg = edgewatt_exporter::metrics::registry(
        edgewatt_exporter::metrics::MetricsConfig {
            names: Default::default(),
            process_metrics: false,
            version: "t",
        },
        snap,
    );
    let text =
        edgewatt_exporter::metrics::to_text_format(&edgewatt_exporter::metrics::render(&reg));
    for needle in [
        "edgewatt_pod_gpu_joules_total{node_name=\"g\",pod_id=",
        "edgewatt_node_gpu_watts{node_name=\"g\",gpu=\"0\",uuid=\"GPU-1\",source=\"gpu\"}",
        "edgewatt_node_idle_joules_total{node_name=\"g\",zone=\"gpu\",source=\"gpu\"} 800",
        "edgewatt_node_unattributed_joules_total{node_name=\"g\",zone=\"gpu\",source=\"gpu\"} 200",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }
}

/// A GPU with no usage information at all (NVML could not say who ran): its energy is
/// unattributed, not idle and not anyone's.
#[test]
fn gpu_without_usage_is_unattributed() {
    let (_dir, t) = common::tree();
    t.proc_stat(0, 0);
    let gpu = FakeGpu {
        script: vec![(50.0, None, vec![])],
        counter: 0.0,
        step: 0,
        usage: false,
    };
    let mut c = gpu_collector(&t, gpu);
    c.collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let s = c.collect();
    let b = s.books.iter().find(|b| b.zone == "gpu").unwrap();
    assert_eq!((b.idle, b.pods, b.unattributed), (0.0, 0.0, 50.0));
}

/// A battery whose driver shows up after the exporter started is read from the next rescan on
/// (and a meter appearing takes node power over from nothing); with rescans off it never is.
#[test]
fn a_source_that_appears_later_is_picked_up_by_the_rescan() {
    for rescan in [true, false] {
        let (_dir, t) = common::tree();
        t.proc_stat(0, 0);
        let mut c = collector(&t).rescan_sources(if rescan {
            std::time::Duration::from_millis(1)
        } else {
            std::time::Duration::ZERO
        });
        let s = c.collect();
        assert!(s.sources.is_empty(), "{:?}", s.sources);
        assert!(s.battery.is_none());
        t.battery(
            "BAT0",
            &BatteryFiles {
                status: "Discharging",
                capacity: Some(42),
                ..Default::default()
            },
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.collect();
        let s = c.collect();
        if rescan {
            assert!(
                s.sources.iter().any(|st| st.name == "battery" && st.up),
                "{:?}",
                s.sources
            );
            let b = s.battery.expect("battery read after the rescan");
            assert_eq!(b.charge_ratio, Some(0.42));
        } else {
            assert!(s.sources.is_empty(), "{:?}", s.sources);
            assert!(s.battery.is_none());
        }
    }
}
