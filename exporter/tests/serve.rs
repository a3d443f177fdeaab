//! `edgewatt-exporter` as a process: `/metrics` scraped by a real Prometheus, `promtool check
//! metrics` clean, Kepler-compatible names, and the RAPL permission error as users meet it.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};
use edgewatt_exporter::fixture::{ids, pod_cgroup, BatteryFiles, FixtureTree};

const BIN: &str = env!("CARGO_BIN_EXE_edgewatt-exporter");

struct Exporter(Child, u16);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::blocking_get(port, path)?;
    Some(resp)
}

/// Tiny blocking HTTP GET (std only) so the test needs no extra client features.
mod reqwest {
    use std::io::{Read, Write};
    pub fn blocking_get(port: u16, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }
}

fn start(root: &std::path::Path, extra: &[&str]) -> Exporter {
    let port = edgewatt_e2e::free_port();
    let child = Command::new(BIN)
        .args([
            "--host-root",
            root.to_str().unwrap(),
            "--node-name",
            "fx",
            "--interval",
            "1s",
            "--kubernetes",
            "off",
            "--attribution",
            "procfs",
        ])
        .args(extra)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start exporter");
    let e = Exporter(child, port);
    for _ in 0..100 {
        if matches!(get(port, "/readyz"), Some((200, _))) {
            return e;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("exporter not ready on port {port}");
}

fn fixture() -> (tempfile::TempDir, FixtureTree) {
    let dir = tempfile::tempdir().unwrap();
    let t = FixtureTree::new(dir.path());
    t.proc_stat(10, 10);
    t.cpuinfo("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 8, false);
    t.rapl_zone("0", "package-0", 1_000_000, 262_143_328_850);
    t.rapl_zone("0:0", "dram", 1_000_000, 262_143_328_850);
    t.battery(
        "BAT0",
        &BatteryFiles {
            status: "Discharging",
            capacity: Some(35),
            energy_now_uwh: Some(17_500_000),
            energy_full_uwh: Some(50_000_000),
            power_now_uw: Some(9_000_000),
            ..Default::default()
        },
    );
    t.mains("AC", false);
    let (uid, cid) = ids(7);
    t.process(100, "app", 5, &pod_cgroup(&uid, &cid));
    t.process(200, "sshd", 1, "/system.slice/sshd.service");
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
    let e = start(
        t.root(),
        &["--power-budget-watts", "25", "--carbon-intensity", "300"],
    );
    for i in 1..4 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (code, body) = get(e.1, "/metrics").unwrap();
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
        "edgewatt_exporter_source_up{node_name=\"fx\",source=\"rapl\"} 1",
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
    assert!(body.contains("edgewatt_estimator_info{node_name=\"fx\",cpu_model=\"Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz\",reference=\"Intel Core i7-8650U\",confidence=\"medium\"}"), "{body}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed; `make deps` installs it");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    edgewatt_e2e::apiserver::install_crypto_provider();
    let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
    prom.add_target(ScrapeTarget::new("edgewatt", &format!("127.0.0.1:{}", e.1)))
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

#[test]
fn kepler_prefix_and_process_series() {
    let (_dir, t) = fixture();
    let e = start(t.root(), &["--metric-prefix", "kepler"]);
    tick(&t, 1);
    std::thread::sleep(Duration::from_millis(1200));
    tick(&t, 2);
    std::thread::sleep(Duration::from_millis(1200));
    let (_, body) = get(e.1, "/metrics").unwrap();
    assert!(body.contains("kepler_node_cpu_joules_total{"), "{body}");
    assert!(body.contains("kepler_pod_cpu_joules_total{"), "{body}");
    assert!(!body.contains("edgewatt_node"), "{body}");
    drop(e);
    let e = start(t.root(), &[]);
    let (_, body) = get(e.1, "/metrics").unwrap();
    assert!(!body.contains("process_cpu"));
    drop(e);
    // --process-metrics after the subcommand
    let port = edgewatt_e2e::free_port();
    let mut child = Command::new(BIN)
        .args([
            "--host-root",
            t.root().to_str().unwrap(),
            "--interval",
            "1s",
            "--kubernetes",
            "off",
            "--attribution",
            "procfs",
            "serve",
            "--process-metrics",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for i in 3..8 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(600));
        if let Some((200, b)) = get(port, "/metrics") {
            if b.contains("edgewatt_process_cpu_joules_total{") {
                body = b;
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
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
    std::fs::set_permissions(&energy, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root ignores file modes; run the exporter as nobody to meet EACCES for real.
    let is_root = rustix::process::geteuid().is_root();
    if is_root {
        for p in walk(dir.path()) {
            let mode = if p.is_dir() {
                0o755
            } else if p == energy {
                0o000
            } else {
                0o644
            };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
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

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
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
    let port = edgewatt_e2e::free_port();
    let child = Command::new(BIN)
        .args([
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
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let e = Exporter(child, port);
    let mut body = String::new();
    for _ in 0..50 {
        if let Some((200, b)) = get(e.1, "/metrics") {
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
