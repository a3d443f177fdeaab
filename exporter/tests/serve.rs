//! `edgewatt-exporter` as a process: `/metrics` scraped by a real Prometheus, `promtool check
//! metrics` clean, Kepler-compatible names, and the RAPL permission error as users meet it.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{label, parse_samples, promtool_check, Exporter, BIN};
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};
use edgewatt_exporter::fixture::{ids, pod_cgroup, BatteryFiles, FixtureTree};

/// The standard laptop ([`common::laptop`]).
fn fixture() -> (tempfile::TempDir, FixtureTree) {
    let (dir, t) = common::tree();
    common::laptop(&t);
    (dir, t)
}

/// Keeps the fixture moving so rates are non-zero.
fn tick(t: &FixtureTree, i: u64) {
    t.rapl_energy("0", 1_000_000 + i * 5_000_000);
    t.rapl_energy("0:0", 1_000_000 + i * 1_000_000);
    t.proc_stat(10 + i * 60, 10 + i * 40);
    t.process_ticks(100, "app", 5 + i * 40);
    t.process_ticks(200, "sshd", 1 + i * 10);
}

#[test]
fn metrics_pass_promtool_and_reach_prometheus() {
    let (_dir, t) = fixture();
    let e = Exporter::on_fixture(
        t.root(),
        &["--power-budget-watts", "25", "--carbon-intensity", "300"],
        &[],
    );
    for i in 1..4 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (code, body) = e.get("/metrics").unwrap();
    assert_eq!(code, 200);
    for needle in [
        "edgewatt_node_cpu_joules_total{node_name=\"fx\",zone=\"package\",source=\"rapl\"}",
        "edgewatt_node_cpu_watts{node_name=\"fx\",zone=\"dram\",source=\"rapl\"}",
        "edgewatt_node_battery_charge_ratio{node_name=\"fx\",status=\"Discharging\"} 0.35",
        "edgewatt_node_battery_power_watts{node_name=\"fx\",status=\"Discharging\"} 9",
        "edgewatt_node_external_power{node_name=\"fx\"} 0",
        "edgewatt_node_power_budget_watts{node_name=\"fx\"} 25",
        "edgewatt_pod_cpu_joules_total{node_name=\"fx\",pod_id=\"00000007-0000-4000-8000-000000000007\"",
        "edgewatt_container_cpu_watts{node_name=\"fx\",container_id=",
        "edgewatt_exporter_source_up{node_name=\"fx\",source=\"rapl\",state=\"in_use\"} 1",
        "edgewatt_exporter_source_up{node_name=\"fx\",source=\"estimator\",state=\"standby\"} 1",
        "edgewatt_node_unattributed_joules_total{node_name=\"fx\",zone=\"package\",source=\"rapl\"}",
        "edgewatt_exporter_last_collection_timestamp_seconds{node_name=\"fx\"}",
        "edgewatt_exporter_info{node_name=\"fx\",version=",
        "edgewatt_node_co2_grams_total{node_name=\"fx\"}",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    assert!(
        !body.contains("edgewatt_process_cpu"),
        "process series are off by default"
    );
    // The estimator calibrates next to RAPL but must not double the node's CPU series.
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("edgewatt_node_cpu") && l.contains("source=\"estimator\"")),
        "{body}"
    );
    assert!(body.contains("edgewatt_estimator_info{node_name=\"fx\",cpu_model=\"Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz\",reference=\"Intel Core i7-8650U\",confidence=\"medium\",model_source=\"reference\"}"), "{body}");

    promtool_check(&body);

    edgewatt_e2e::apiserver::install_crypto_provider();
    let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
    prom.add_target(ScrapeTarget::new(
        "edgewatt",
        &format!("127.0.0.1:{}", e.port),
    ))
    .unwrap();
    let v = prom
        .wait_for_series(
            "edgewatt_node_battery_charge_ratio{node_name=\"fx\"}",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(v.to_string().contains("0.35"), "{v}");
    for i in 4..7 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(1000));
    }
    let rate = prom
        .wait_for_series(
            "rate(edgewatt_node_cpu_joules_total{zone=\"package\"}[5s]) > 0",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(!rate.to_string().is_empty());
}

/// Power into the battery is its own gauge beside the draw, in both namings, and is withdrawn
/// (not 0 W) when the kernel stops saying: a charging battery without a power reading.
#[test]
fn charge_power_is_its_own_gauge_and_absent_when_unknown() {
    let (_dir, t) = fixture();
    let charging = |power_now_uw| BatteryFiles {
        status: "Charging",
        capacity: Some(35),
        energy_now_uwh: Some(17_500_000),
        energy_full_uwh: Some(50_000_000),
        power_now_uw,
        ..Default::default()
    };
    t.battery("BAT0", &charging(Some(12_000_000)));
    t.mains("AC", true);
    let e = Exporter::on_fixture(t.root(), &[], &[]);
    let body = e.wait_for_all(
        &[
            "edgewatt_node_battery_charge_power_watts{node_name=\"fx\",status=\"Charging\"} 12",
            "edgewatt_node_battery_power_watts{node_name=\"fx\",status=\"Charging\"} 0",
        ],
        1..10,
        Duration::from_millis(300),
        |i| tick(&t, i),
    );
    promtool_check(&body);
    t.battery("BAT0", &charging(None));
    let mut withdrawn = false;
    for i in 10..30 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(300));
        let body = e.metrics();
        if body.contains("edgewatt_node_battery_charge_ratio{")
            && !body.contains("battery_charge_power_watts")
        {
            withdrawn = true;
            break;
        }
    }
    assert!(withdrawn, "unknown charge power is absent, not 0 W");
    drop(e);
    t.battery("BAT0", &charging(Some(12_000_000)));
    let e = Exporter::on_fixture(t.root(), &["--metric-prefix", "kepler"], &[]);
    e.wait_for_all(
        &["kepler_node_battery_charge_power_watts{node_name=\"fx\",status=\"Charging\"} 12"],
        30..40,
        Duration::from_millis(300),
        |i| tick(&t, i),
    );
}

#[test]
fn kepler_prefix_and_process_series() {
    let (_dir, t) = fixture();
    let e = Exporter::on_fixture(t.root(), &["--metric-prefix", "kepler"], &[]);
    tick(&t, 1);
    std::thread::sleep(Duration::from_millis(1200));
    tick(&t, 2);
    std::thread::sleep(Duration::from_millis(1200));
    let body = e.metrics();
    assert!(body.contains("kepler_node_cpu_joules_total{"), "{body}");
    assert!(body.contains("kepler_pod_cpu_joules_total{"), "{body}");
    assert!(!body.contains("edgewatt_node"), "{body}");
    drop(e);
    let e = Exporter::on_fixture(t.root(), &[], &[]);
    let body = e.metrics();
    assert!(!body.contains("process_cpu"));
    drop(e);
    // --process-metrics after the subcommand
    let args = [
        "--host-root",
        t.root().to_str().unwrap(),
        "--interval",
        "1s",
        "--kubernetes",
        "off",
        "--attribution",
        "procfs",
    ];
    let e = Exporter::start(args.map(String::from).to_vec(), &["--process-metrics"]);
    let mut body = String::new();
    for i in 3..8 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(600));
        if let Some((200, b)) = e.get("/metrics") {
            if b.contains("edgewatt_process_cpu_joules_total{") {
                body = b;
                break;
            }
        }
    }
    drop(e);
    assert!(body.contains("comm=\"sshd\""), "{body}");
    // at most two series (joules, watts) per process and zone: Kepler 0.7 emitted 25
    let per_pid = body.lines().filter(|l| l.contains("pid=\"200\"")).count();
    assert!(
        per_pid <= 4,
        "{per_pid} series for one process (2 zones × joules/watts)"
    );
}

/// `energy_uj` is root-only on modern kernels: the exporter must say so and keep running.
#[test]
fn unreadable_rapl_names_the_fix() {
    let (dir, t) = fixture();
    let energy = t.path("sys/class/powercap/intel-rapl:0/energy_uj");
    use std::os::unix::fs::PermissionsExt;
    // Root ignores file modes; run the exporter as nobody to meet EACCES for real.
    let is_root = rustix::process::geteuid().is_root();
    if is_root {
        common::readable_by_all(dir.path());
    }
    std::fs::set_permissions(&energy, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let out = cmd
        .args([
            "--host-root",
            t.root().to_str().unwrap(),
            "--kubernetes",
            "off",
            "--attribution",
            "procfs",
            "--interval",
            "200ms",
            "top",
            "-n",
            "1",
            "--plain",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "must keep running: {stderr}");
    assert!(
        stderr.contains("energy_uj: permission denied")
            && stderr.contains("root-only since Linux 5.10"),
        "{stderr}"
    );
    assert!(
        stdout.contains("battery"),
        "the other sources still work: {stdout}"
    );
}

/// `--config FILE` fills unset settings; a bad key is a clear error naming the line.
#[test]
fn config_file_and_errors() {
    let (dir, t) = fixture();
    let cfg = dir.path().join("edgewatt.env");
    std::fs::write(
        &cfg,
        "# node settings\nEDGEWATT_POWER_BUDGET_WATTS=42\nNODE_NAME=from-file\n",
    )
    .unwrap();
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        t.root().to_str().unwrap(),
        "--interval",
        "1s",
        "--kubernetes",
        "off",
        "--attribution",
        "procfs",
    ];
    let e = Exporter::start(args.map(String::from).to_vec(), &[]);
    let mut body = String::new();
    for _ in 0..50 {
        if let Some((200, b)) = e.get("/metrics") {
            body = b;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        body.contains("edgewatt_node_power_budget_watts{node_name=\"from-file\"} 42"),
        "{body}"
    );
    drop(e);
    std::fs::write(&cfg, "EDGEWATT_INTERVAL=10s\nINTERVAL=5\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "top", "-n", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("unknown key INTERVAL"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["--interval", "soon", "top"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--interval"),
        "bad flag values name the flag"
    );
}

/// Any user can name a process anything (15 bytes, any byte but NUL in the kernel; more here):
/// quotes, backslashes, line feeds, carriage returns, control characters, braces, invalid UTF-8.
/// With `--process-metrics` every name must come out of both exposition formats unchanged — text
/// 0.0.4 checked by `promtool check metrics` and an independent parser, OpenMetrics by a real
/// Prometheus scrape (which negotiates OpenMetrics) — or the whole scrape is lost.
#[test]
fn hostile_process_names_survive_both_exposition_formats() {
    let (_dir, t) = fixture();
    let mut expected: std::collections::BTreeMap<u32, String> = std::collections::BTreeMap::new();
    let fixed: [&[u8]; 14] = [
        b"a\"b",
        b"back\\slash",
        b"new\nline",
        b"lit\\n",
        b"trail\\",
        b"\"",
        b"x\"},evil=\"1",
        b"# EOF",
        b"cr\rtab\t",
        b"bell\x07esc\x1bdel\x7f",
        b"nul\x00in",
        b"\xff\xfebad utf8",
        b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
        b"(x) S 1 2 (y)",
    ];
    let pool: Vec<u8> = b"\"\\\n\r\t\x01\x1f\x7f{}=,# ()aZ9\xc3\xa9".to_vec();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut names: Vec<Vec<u8>> = fixed.iter().map(|n| n.to_vec()).collect();
    for _ in 0..40 {
        let len = 1 + (next() % 16) as usize;
        names.push(
            (0..len)
                .map(|_| pool[(next() % pool.len() as u64) as usize])
                .collect(),
        );
    }
    for (i, name) in names.iter().enumerate() {
        let pid = 1000 + i as u32;
        let mut stat = format!("{pid} (").into_bytes();
        stat.extend_from_slice(name);
        stat.extend_from_slice(format!(") S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {} 0 0 0 20 0 1 0 {pid} 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", i).as_bytes());
        std::fs::create_dir_all(t.path(&format!("proc/{pid}"))).unwrap();
        std::fs::write(t.path(&format!("proc/{pid}/stat")), stat).unwrap();
        t.set(
            &format!("proc/{pid}/cgroup"),
            "0::/user.slice/session-1.scope",
        );
        expected.insert(pid, String::from_utf8_lossy(name).into_owned());
    }
    let e = Exporter::on_fixture(t.root(), &[], &["--process-metrics"]);
    let mut body = String::new();
    for i in 1..20 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(600));
        body = e.metrics();
        if body.contains("pid=\"1053\"") {
            break;
        }
    }
    promtool_check(&body);
    let text_names: std::collections::BTreeMap<u32, String> = parse_samples(&body)
        .into_iter()
        .filter(|(n, ..)| n == "edgewatt_process_cpu_joules_total")
        .filter_map(|(_, l, _)| {
            let pid: u32 = label(&l, "pid")?.parse().ok()?;
            (pid >= 1000).then(|| (pid, label(&l, "comm").unwrap_or_default().to_string()))
        })
        .collect();
    assert_eq!(text_names, expected, "text format 0.0.4");

    edgewatt_e2e::apiserver::install_crypto_provider();
    let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
    prom.add_target(ScrapeTarget::new(
        "edgewatt",
        &format!("127.0.0.1:{}", e.port),
    ))
    .unwrap();
    prom.wait_for_series(
        "edgewatt_process_cpu_joules_total{pid=\"1053\"}",
        Duration::from_secs(30),
    )
    .unwrap();
    let up = prom.query_raw("up{job=\"edgewatt\"}").unwrap();
    assert_eq!(up[0]["value"][1], "1", "{up}");
    let result = prom
        .query_raw("edgewatt_process_cpu_joules_total{zone=\"package\"}")
        .unwrap();
    let prom_names: std::collections::BTreeMap<u32, String> = result
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let pid: u32 = s["metric"]["pid"].as_str()?.parse().ok()?;
            // Prometheus drops empty labels; none of these names is empty
            (pid >= 1000).then(|| (pid, s["metric"]["comm"].as_str().unwrap_or("").to_string()))
        })
        .collect();
    assert_eq!(prom_names, expected, "OpenMetrics through Prometheus");
}

/// For every attributed zone, read back from `/metrics` of the running binary: node =
/// idle + pods + system + unattributed, and the pods together = the pod series summed.
#[test]
fn books_balance_in_a_scrape() {
    let (_dir, t) = fixture();
    let (uid, cid) = ids(8);
    t.process(300, "worker", 1, &pod_cgroup(&uid, &cid));
    let e = Exporter::on_fixture(t.root(), &[], &[]);
    let mut samples = Vec::new();
    for i in 1..6 {
        tick(&t, i);
        t.process_ticks(300, "worker", 1 + i * 25);
        std::thread::sleep(Duration::from_millis(1100));
        samples = parse_samples(&e.metrics());
    }
    let value = |name: &str, zone: &str| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name && label(l, "zone") == Some(zone) && label(l, "source") == Some("rapl")
            })
            .map(|(.., v)| v)
            .sum()
    };
    for zone in ["package", "dram"] {
        let node = value("edgewatt_node_cpu_joules_total", zone);
        let parts = [
            "edgewatt_node_idle_joules_total",
            "edgewatt_node_pods_joules_total",
            "edgewatt_node_system_joules_total",
            "edgewatt_node_unattributed_joules_total",
        ]
        .map(|n| value(n, zone));
        assert!(node > 0.0, "{zone}: no energy measured");
        let sum: f64 = parts.iter().sum();
        assert!(
            (sum - node).abs() <= 1e-6 * node,
            "{zone}: {node} != {parts:?}"
        );
        assert!(
            parts[1] > 0.0 && parts[2] > 0.0,
            "{zone}: pods and system both ran: {parts:?}"
        );
        let pods = value("edgewatt_pod_cpu_joules_total", zone);
        assert!(
            (pods - parts[1]).abs() <= 1e-6 * pods.max(1.0),
            "{zone}: pod series {pods} vs {}",
            parts[1]
        );
    }
}

/// A configured BMC that is down: node power comes from the estimator, labelled so, and
/// `source_up` and `top` say why; no platform series (never 0 W). The BMC answers: its power is
/// the node's and the estimator stands by. It stops answering: stale, withdrawn, estimator again.
#[test]
fn a_down_bmc_falls_back_to_the_estimator() {
    let (_dir, t) = common::tree();
    t.proc_stat(10, 10);
    t.cpuinfo("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 8, false);
    t.process(200, "sshd", 1, "/system.slice/sshd.service");
    let bmc_port = edgewatt_e2e::free_port();
    let url = format!("http://127.0.0.1:{bmc_port}");
    let args = [
        "--redfish-url",
        url.as_str(),
        "--redfish-interval",
        "300ms",
        "--redfish-timeout",
        "500ms",
    ];
    let e = Exporter::on_fixture(t.root(), &args, &[]);
    let wait_for_all = |needles: &[&str], i0: u64| -> String {
        e.wait_for_all(needles, i0..i0 + 20, Duration::from_millis(500), |i| {
            tick_cpu(&t, i)
        })
    };
    let wait_for = |needle: &str, i0: u64| wait_for_all(&[needle], i0);
    let body = wait_for(
        "edgewatt_node_cpu_watts{node_name=\"fx\",zone=\"package\",source=\"estimator\"}",
        1,
    );
    assert!(
        !body.contains("edgewatt_node_platform"),
        "a down BMC exports no platform series:\n{body}"
    );
    assert!(
        body.contains(
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"redfish\",state=\"error\"} 0"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"estimator\",state=\"in_use\"} 1"
        ),
        "{body}"
    );
    let stdout = e.top(|i| tick_cpu(&t, i)); // CPU time moves while top measures
    assert!(
        stdout.contains(
            "(source: estimator, ESTIMATED — no meter reports: redfish error (GET http://127.0.0.1"
        ),
        "{stdout}"
    );

    // The BMC comes up: its chassis power is the node's, the estimator stands by.
    let mockup = common::mockup_copy("public-rackmount1");
    let sushy = common::serve_mockup_on(bmc_port, mockup.path(), None);
    let body = wait_for(
        "edgewatt_node_platform_watts{node_name=\"fx\",source=\"redfish\"} 374",
        30,
    );
    assert!(
        !body.contains("source=\"estimator\"}"),
        "one source: {body}"
    );
    assert!(body.contains("edgewatt_exporter_source_up{node_name=\"fx\",source=\"estimator\",state=\"standby\"} 1"), "{body}");
    assert!(
        body.contains("edgewatt_node_power_budget_watts{node_name=\"fx\"} 500"),
        "{body}"
    );

    // It stops answering: after three poll intervals the reading is stale and withdrawn.
    drop(sushy);
    // Stale and the estimator back in the same scrape (the collection that marks the BMC stale
    // is also the one in which the estimator takes over).
    let body = wait_for_all(
        &[
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"redfish\",state=\"stale\"} 0",
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"estimator\",state=\"in_use\"} 1",
        ],
        60,
    );
    assert!(
        !body.contains("edgewatt_node_platform"),
        "stale BMC readings are withdrawn:\n{body}"
    );
    assert!(body.contains("source=\"estimator\"}"), "{body}");
}

/// Moves CPU time on (no meters in this fixture).
fn tick_cpu(t: &FixtureTree, i: u64) {
    t.proc_stat(10 + i * 60, 10 + i * 40);
    t.process_ticks(200, "sshd", 1 + i * 10);
}

/// A sensor file whose read hangs (a FIFO here; a wedged I2C sensor or a dead NFS mount in the
/// field) stops the collector: `/metrics` keeps serving the last figures, the last-collection
/// timestamp stops moving, and after three intervals `/healthz` fails so the kubelet restarts
/// the exporter. Unstuck, it is healthy again.
#[test]
fn healthz_fails_when_collection_hangs() {
    let (_dir, t) = fixture();
    t.set("sys/class/hwmon/hwmon0/name", "power_meter");
    t.set("sys/class/hwmon/hwmon0/power1_average", 95_000_000);
    let e = Exporter::on_fixture(t.root(), &[], &[]);
    let health = || e.get("/healthz").map(|(c, _)| c);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(health(), Some(200));
    let stamp = |body: &str| -> f64 {
        parse_samples(body)
            .into_iter()
            .find(|(n, ..)| n == "edgewatt_exporter_last_collection_timestamp_seconds")
            .map(|(.., v)| v)
            .expect("last collection timestamp exported")
    };
    let sensor = t.path("sys/class/hwmon/hwmon0/power1_average");
    std::fs::remove_file(&sensor).unwrap();
    let made = Command::new("mkfifo").arg(&sensor).status().unwrap();
    assert!(made.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while health() != Some(503) {
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, reason) = e.get("/healthz").unwrap();
    assert!(reason.contains("no collection finished"), "{reason}");
    let (code, body) = e.get("/metrics").unwrap();
    assert_eq!(code, 200, "metrics still served");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - stamp(&body) > 3.0, "the timestamp shows the hang");
    // Unstick it: a writer opens the FIFO and hands over a value; the file becomes a file again.
    let fifo = sensor.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        f.write_all(b"95000000\n").unwrap();
    });
    writer.join().unwrap();
    std::fs::remove_file(&sensor).unwrap();
    std::fs::write(&sensor, "95000000\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while health() != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz never recovered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
