//! Board power rails through hwmon, per chip rule, against fixture trees in the kernel's layout
//! (torvalds/linux `Documentation/hwmon/sysfs-interface.rst`, `ina3221.rst`, `ina2xx.rst`,
//! `pmbus-core.rst`; Jetson rail names and which feeds which from energymon/energymon
//! `jetson/JetsonPowerRails.md`, built from NVIDIA's Jetson Developer Guide and L4T device trees —
//! see `FixtureTree::jetson_*`).
//!
//! For every rule: the board input is node `platform` power, sub-rails are zones that are never
//! added to it (node power = the input alone), and a rail that cannot be read is withdrawn —
//! together with every figure it is part of — while node power falls back (the estimator last).

mod common;

use std::time::Duration;

use common::Exporter;
use edgewatt_crds::metrics::MetricNames;
use edgewatt_crds::promql::{Signal, TargetQuery};
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};
use edgewatt_exporter::collector::Collector;
use edgewatt_exporter::fixture::FixtureTree;
use edgewatt_exporter::snapshot::Snapshot;
use edgewatt_exporter::source::Domain;

fn host() -> (tempfile::TempDir, FixtureTree) {
    let (dir, t) = common::tree();
    t.proc_stat(10, 10);
    t.cpuinfo("ARMv8 Processor rev 1 (v8l)", 6, false);
    t.process(200, "sshd", 1, "/system.slice/sshd.service");
    (dir, t)
}

/// Sources as the exporter finds them (discovery, plus the estimator it always adds).
fn collector(t: &FixtureTree) -> Collector {
    common::collector(t, common::config("n", 5, false), true, Default::default())
}

/// Two intervals (the second has a time delta), with the CPU moving.
fn run(c: &mut Collector, t: &FixtureTree, i: u64) -> Snapshot {
    t.proc_stat(10 + i * 60, 10 + i * 40);
    c.collect();
    std::thread::sleep(Duration::from_millis(20));
    t.proc_stat(10 + i * 60 + 30, 10 + i * 40 + 20);
    c.collect()
}

/// hwmon's watts for `zone` (`platform` is the platform domain, else a CPU-domain zone).
fn hwmon(s: &Snapshot, zone: &str) -> Option<f64> {
    s.node
        .iter()
        .find(|n| {
            n.source == "hwmon"
                && n.zone == zone
                && (n.domain == Domain::Platform) == (zone == "platform")
        })
        .map(|n| n.watts)
}

fn zones(s: &Snapshot) -> Vec<&str> {
    let mut z: Vec<&str> = s
        .node
        .iter()
        .filter(|n| n.source == "hwmon" && n.domain == Domain::Cpu)
        .map(|n| n.zone.as_str())
        .collect();
    z.sort();
    z
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

#[track_caller]
fn assert_watts(s: &Snapshot, zone: &str, want: f64) {
    let got = hwmon(s, zone);
    assert!(close(got, want), "{zone}: {got:?} != {want}\n{:#?}", s.node);
}

/// Node power is the board input alone, from hwmon, attributed as `platform`: no sub-rail is added
/// on top and none is split over workloads a second time.
#[track_caller]
fn assert_node_is_input(s: &Snapshot, watts: f64) {
    assert!(
        close(s.node_watts, watts),
        "node {:?} != {watts}",
        s.node_watts
    );
    assert_eq!(s.node_watts_source, Some("hwmon"));
    assert_eq!(s.attributed_source, Some("hwmon"));
    assert!(
        s.books.iter().all(|b| b.zone == "platform"),
        "only the input is attributed: {:?}",
        s.books
    );
    assert!(
        s.node.iter().all(|n| n.source != "estimator"),
        "the estimator stands by while the input reads"
    );
}

#[test]
fn xavier_nx_vdd_in_is_platform_and_its_sub_rails_are_zones() {
    let (_d, t) = host();
    t.jetson_xavier_nx();
    let mut c = collector(&t);
    let s = run(&mut c, &t, 1);
    assert_watts(&s, "platform", 6.0);
    assert_watts(&s, "vdd_cpu_gpu_cv", 2.0);
    assert_watts(&s, "vdd_soc", 1.5);
    // VDD_IN is the platform figure, not a zone too; in7 (sum of shunts) is no rail
    assert_eq!(zones(&s), ["vdd_cpu_gpu_cv", "vdd_soc"]);
    assert_node_is_input(&s, 6.0);
    // the rails move with their files
    t.ina3221_rail("hwmon6", 1, 5_000, 2_000);
    t.ina3221_rail("hwmon6", 3, 4_900, 500);
    let s = run(&mut c, &t, 2);
    assert_watts(&s, "platform", 10.0);
    assert_watts(&s, "vdd_soc", 2.45);
    assert_node_is_input(&s, 10.0);
}

/// `FixtureTree::jetson_agx_orin`: VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (not VDDQ_VDD2_1V8AO).
const AGX_ORIN_MODULE: f64 = 19.936 * 0.2 + 19.936 * 0.1 + 5.0 * 0.6;
/// Its rails as zones: both chips, without the two NC channels of 0x41.
const AGX_ORIN_ZONES: [&str; 4] = [
    "vdd_cpu_cv",
    "vdd_gpu_soc",
    "vddq_vdd2_1v8ao",
    "vin_sys_5v0",
];

#[test]
fn agx_orin_two_chips_sum_the_top_rails_not_the_nested_one() {
    let (_d, t) = host();
    t.jetson_agx_orin();
    let mut c = collector(&t);
    let s = run(&mut c, &t, 1);
    assert_watts(&s, "platform", AGX_ORIN_MODULE);
    // VDDQ_VDD2_1V8AO (1 W, fed by VIN_SYS_5V0) is shown but not added: 8.98 W, not 9.98 W
    assert_watts(&s, "vddq_vdd2_1v8ao", 1.0);
    assert_watts(&s, "vin_sys_5v0", 3.0);
    assert_eq!(
        zones(&s),
        AGX_ORIN_ZONES,
        "the two NC channels of 0x41 are not rails"
    );
    assert_node_is_input(&s, AGX_ORIN_MODULE);
}

#[test]
fn agx_orin_top_rail_unreadable_withdraws_the_module_total() {
    let (_d, t) = host();
    t.jetson_agx_orin();
    let mut c = collector(&t);
    run(&mut c, &t, 1);
    // the driver answers a failed conversion with an error; a file that does not parse stands in
    t.set("sys/class/hwmon/hwmon1/curr2_input", "");
    let s = run(&mut c, &t, 2);
    assert_eq!(
        hwmon(&s, "platform"),
        None,
        "a partial sum is not the module"
    );
    assert_eq!(hwmon(&s, "vdd_cpu_cv"), None);
    assert_watts(&s, "vdd_gpu_soc", 19.936 * 0.2);
    assert_eq!(s.node_watts_source, Some("estimator"), "{:?}", s.node);
    assert_eq!(
        s.sources.iter().find(|x| x.name == "hwmon").unwrap().state,
        "in_use",
        "the readable rails stay published"
    );
}

#[test]
fn xavier_nx_rail_unreadable_is_withdrawn_and_comes_back() {
    let (_d, t) = host();
    t.jetson_xavier_nx();
    let mut c = collector(&t);
    run(&mut c, &t, 1);
    // a sub-rail gone: only its zone goes, the input still stands for the node
    std::fs::remove_file(t.path("sys/class/hwmon/hwmon6/curr2_input")).unwrap();
    let s = run(&mut c, &t, 2);
    assert_eq!(hwmon(&s, "vdd_cpu_gpu_cv"), None);
    assert_eq!(zones(&s), ["vdd_soc"]);
    assert_node_is_input(&s, 6.0);
    // the input gone: no platform figure (never 0 W), the estimator stands in
    t.set("sys/class/hwmon/hwmon6/in1_input", "x");
    let s = run(&mut c, &t, 3);
    assert_eq!(hwmon(&s, "platform"), None);
    assert!(s.node.iter().all(|n| n.watts > 0.0 || n.source != "hwmon"));
    assert_eq!(s.node_watts_source, Some("estimator"));
    assert_watts(&s, "vdd_soc", 1.5);
    // both back
    t.ina3221_rail("hwmon6", 1, 5_000, 1_200);
    t.ina3221_rail("hwmon6", 2, 5_000, 400);
    let s = run(&mut c, &t, 4);
    assert_watts(&s, "vdd_cpu_gpu_cv", 2.0);
    assert_node_is_input(&s, 6.0);
}

#[test]
fn every_rail_unreadable_takes_the_source_down() {
    let (_d, t) = host();
    t.jetson_xavier_nx();
    let mut c = collector(&t);
    run(&mut c, &t, 1);
    for n in 1..=3 {
        std::fs::remove_file(t.path(&format!("sys/class/hwmon/hwmon6/in{n}_input"))).unwrap();
    }
    let s = run(&mut c, &t, 2);
    assert!(s.node.iter().all(|n| n.source != "hwmon"), "{:?}", s.node);
    let st = s.sources.iter().find(|x| x.name == "hwmon").unwrap();
    assert!(!st.up);
    assert!(
        st.reason.as_deref().unwrap().contains("in1_input"),
        "{st:?}"
    );
}

#[test]
fn ina226_alone_is_the_board_input_from_power1_or_in1_times_curr1() {
    let (_d, t) = host();
    // 12.1 V × 0.5 A; the chip's own power1_input (its averaging) is preferred
    t.ina226("hwmon0", "1-0040", None, 12_100, 500, Some(6_000_000));
    let mut c = collector(&t);
    let s = run(&mut c, &t, 1);
    assert_watts(&s, "platform", 6.0);
    assert!(zones(&s).is_empty());
    assert_node_is_input(&s, 6.0);

    // without power1_input (e.g. a driver that does not offer it): bus mV × mA
    let (_d2, t2) = host();
    t2.ina226("hwmon0", "1-0040", Some("VIN"), 12_000, 250, None);
    let mut c2 = collector(&t2);
    let s = run(&mut c2, &t2, 1);
    assert_watts(&s, "platform", 3.0);
}

#[test]
fn ina226_labelled_as_a_load_or_not_alone_is_a_zone_only() {
    // a monitor on a named load is a sub-rail
    let (_d, t) = host();
    t.ina226(
        "hwmon0",
        "1-0040",
        Some("motor"),
        12_000,
        1_000,
        Some(12_000_000),
    );
    let mut c = collector(&t);
    let s = run(&mut c, &t, 1);
    assert_eq!(hwmon(&s, "platform"), None);
    assert_watts(&s, "motor", 12.0);
    assert_eq!(
        s.node_watts_source,
        Some("estimator"),
        "a load is not the node"
    );

    // two unlabelled monitors: either may sit under the other, so neither is the input
    let (_d2, t2) = host();
    t2.ina226("hwmon0", "1-0040", None, 12_000, 1_000, Some(12_000_000));
    t2.ina226("hwmon1", "1-0041", None, 5_000, 400, Some(2_000_000));
    let mut c2 = collector(&t2);
    let s = run(&mut c2, &t2, 1);
    assert_eq!(hwmon(&s, "platform"), None);
    assert_watts(&s, "ina226_1_0040", 12.0);
    assert_watts(&s, "ina226_1_0041", 2.0);
    assert_eq!(s.node_watts_source, Some("estimator"));

    // next to a Jetson input rail, an INA226 is a zone and VDD_IN stays the node
    let (_d3, t3) = host();
    t3.jetson_xavier_nx();
    t3.ina226("hwmon0", "1-0045", None, 5_000, 200, Some(1_000_000));
    let mut c3 = collector(&t3);
    let s = run(&mut c3, &t3, 1);
    assert_watts(&s, "ina226", 1.0);
    assert_node_is_input(&s, 6.0);
}

#[test]
fn pmbus_supply_pin_is_platform_pout_a_zone_phases_never_added() {
    let (_d, t) = host();
    t.pmbus_psu("hwmon3", "3-0058", 210_000_000, 190_000_000);
    let mut c = collector(&t);
    let s = run(&mut c, &t, 1);
    assert_watts(&s, "platform", 210.0);
    // pout1.0/pout1.1 are pout1's phases: no zone of their own
    assert_eq!(zones(&s), ["pmbus_pout1"]);
    assert_watts(&s, "pmbus_pout1", 190.0);
    assert_node_is_input(&s, 210.0);

    // redundant supplies share the load: their inputs add up
    t.pmbus_psu("hwmon4", "3-0059", 200_000_000, 180_000_000);
    let mut c = collector(&t);
    let s = run(&mut c, &t, 2);
    assert_watts(&s, "platform", 410.0);
    assert_watts(&s, "pmbus_pout1_3_0058", 190.0);
    assert_watts(&s, "pmbus_pout1_3_0059", 180.0);
    assert_node_is_input(&s, 410.0);
}

#[test]
fn pmbus_supply_without_power_files_uses_vin_times_iin() {
    let (_d, t) = host();
    t.pmbus_psu("hwmon3", "3-0058", 230_000_000, 207_000_000);
    for n in 1..=4 {
        std::fs::remove_file(t.path(&format!("sys/class/hwmon/hwmon3/power{n}_input"))).unwrap();
    }
    let mut c = collector(&t);
    let s = run(&mut c, &t, 1);
    // 230 V × 1 000 mA; 12 V × 17 250 mA
    assert_watts(&s, "platform", 230.0);
    assert_watts(&s, "pmbus_pout1", 207.0);
}

/// Discovery runs once; each interval reads only the rails' own files: with every other file of
/// the chips gone (labels, enables, shunt voltages, limits) the figures still come, and a label
/// changed after discovery renames nothing.
#[test]
fn an_interval_reads_only_the_rails_files() {
    let (_d, t) = host();
    t.jetson_agx_orin();
    let mut c = collector(&t);
    run(&mut c, &t, 1);
    let used = [
        "in1_input",
        "curr1_input",
        "in2_input",
        "curr2_input",
        "in3_input",
        "curr3_input",
    ];
    for (hwmon, keep) in [
        ("hwmon1", &used[..]),
        ("hwmon2", &["in2_input", "curr2_input"][..]),
    ] {
        for f in std::fs::read_dir(t.path(&format!("sys/class/hwmon/{hwmon}"))).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            if name == "in2_label" {
                t.set(&format!("sys/class/hwmon/{hwmon}/{name}"), "RENAMED");
            } else if !keep.contains(&name.as_str()) && f.file_type().unwrap().is_file() {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
    }
    let s = run(&mut c, &t, 2);
    assert_eq!(zones(&s), AGX_ORIN_ZONES);
    assert_node_is_input(&s, AGX_ORIN_MODULE);
}

/// The exporter binary on a Xavier NX fixture, scraped by a real Prometheus: the served series
/// say platform 6 W and the rails as zones, and the controller's and extender's NodeWatts query
/// (crds `TargetQuery::value`) reads 6 W — the input, not input + rails (9.5 W).
#[test]
fn served_metrics_and_node_watts_query_read_the_input_only() {
    let (_d, t) = host();
    t.jetson_xavier_nx();
    let args = [
        "--host-root",
        t.root().to_str().unwrap(),
        "--node-name",
        "jetson",
        "--interval",
        "1s",
        "--kubernetes",
        "off",
        "--attribution",
        "procfs",
    ];
    let exporter = Exporter::start(args.map(String::from).to_vec(), &[]);
    let port = exporter.port;
    edgewatt_e2e::apiserver::install_crypto_provider();
    let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
    prom.add_target(ScrapeTarget::new("edgewatt", &format!("127.0.0.1:{port}")))
        .unwrap();
    let wait = |q: &str| prom.wait_for_series(q, Duration::from_secs(60)).unwrap();
    let value =
        |r: &serde_json::Value| -> f64 { r[0]["value"][1].as_str().unwrap().parse().unwrap() };
    let platform = wait("edgewatt_node_platform_watts{node_name=\"jetson\",source=\"hwmon\"}");
    assert_eq!(value(&platform), 6.0, "{platform}");
    let soc =
        wait("edgewatt_node_cpu_watts{node_name=\"jetson\",zone=\"vdd_soc\",source=\"hwmon\"}");
    assert_eq!(value(&soc), 1.5, "{soc}");
    let rails = wait("edgewatt_node_cpu_watts{node_name=\"jetson\",source=\"hwmon\"}");
    assert_eq!(rails.as_array().unwrap().len(), 2, "{rails}");
    let query = TargetQuery::nodes(MetricNames::default()).value(Signal::NodeWatts);
    let node = wait(&query);
    assert_eq!(node.as_array().unwrap().len(), 1, "{node}");
    assert_eq!(node[0]["metric"]["node_name"], "jetson");
    assert_eq!(value(&node), 6.0, "{query} → {node}");
    // the estimator stands by: no CPU series of its own next to the rails
    let est = prom
        .query_raw("edgewatt_node_cpu_watts{node_name=\"jetson\",source=\"estimator\"}")
        .unwrap();
    assert_eq!(est.as_array().unwrap().len(), 0, "{est}");
}
