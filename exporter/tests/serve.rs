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
    start_serve(root, extra, &[])
}

/// `extra` before the subcommand, `serve_args` after it (e.g. `--process-metrics`).
fn start_serve(root: &std::path::Path, extra: &[&str], serve_args: &[&str]) -> Exporter {
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
        .args(serve_args)
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

/// `promtool check metrics` (text format 0.0.4, plus its lint) must accept `body`.
fn promtool_check(body: &str) {
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

/// One sample of the text exposition format: name, labels (unescaped), value.
type Parsed = (String, Vec<(String, String)>, f64);

/// Parses text format 0.0.4 the way its spec reads (label values: `\\`, `\"`, `\n` escapes),
/// independently of the exporter's encoder, so a round trip proves the escaping.
fn parse_samples(text: &str) -> Vec<Parsed> {
    let mut out = Vec::new();
    for line in text
        .split('\n')
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some(open) = line.find('{') else {
            let (n, v) = line.split_once(' ').unwrap();
            out.push((n.to_string(), vec![], v.trim().parse().unwrap()));
            continue;
        };
        let mut labels = Vec::new();
        let mut chars = line[open + 1..].chars();
        loop {
            let mut key = String::new();
            match chars.next() {
                Some('}') => break,
                Some(',') => continue,
                Some(c) => key.push(c),
                None => panic!("unterminated labels: {line:?}"),
            }
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(chars.next(), Some('"'), "{line:?}");
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        other => panic!("undefined escape {other:?} in {line:?}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated value: {line:?}"),
                }
            }
            labels.push((key, value));
        }
        let value: String = chars.collect();
        out.push((
            line[..open].to_string(),
            labels,
            value.trim().parse().unwrap(),
        ));
    }
    out
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
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
    let e = start_serve(t.root(), &[], &["--process-metrics"]);
    let mut body = String::new();
    for i in 1..20 {
        tick(&t, i);
        std::thread::sleep(Duration::from_millis(600));
        body = get(e.1, "/metrics").unwrap().1;
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
    prom.add_target(ScrapeTarget::new("edgewatt", &format!("127.0.0.1:{}", e.1)))
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
    let e = start(t.root(), &[]);
    let mut samples = Vec::new();
    for i in 1..6 {
        tick(&t, i);
        t.process_ticks(300, "worker", 1 + i * 25);
        std::thread::sleep(Duration::from_millis(1100));
        samples = parse_samples(&get(e.1, "/metrics").unwrap().1);
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
    let dir = tempfile::tempdir().unwrap();
    let t = FixtureTree::new(dir.path());
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
    let e = start(t.root(), &args);
    let wait_for_all = |needles: &[&str], i0: u64| -> String {
        let mut body = String::new();
        for i in i0..i0 + 20 {
            tick_cpu(&t, i);
            std::thread::sleep(Duration::from_millis(500));
            body = get(e.1, "/metrics").unwrap().1;
            if needles.iter().all(|n| body.contains(n)) {
                return body;
            }
        }
        panic!("never saw all of {needles:?} in\n{body}");
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
    let top = Command::new(BIN)
        .args([
            "--host-root",
            t.root().to_str().unwrap(),
            "--kubernetes",
            "off",
            "--attribution",
            "procfs",
            "--interval",
            "1s",
        ])
        .args(args)
        .args(["top", "-n", "1", "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for i in 100..106 {
        tick_cpu(&t, i); // CPU time moves while top measures
        std::thread::sleep(Duration::from_millis(400));
    }
    let top = top.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&top.stdout);
    assert!(
        stdout.contains(
            "(source: estimator, ESTIMATED — no meter reports: redfish error (GET http://127.0.0.1"
        ),
        "{stdout}"
    );

    // The BMC comes up: its chassis power is the node's, the estimator stands by.
    let mockup = tempfile::tempdir().unwrap();
    edgewatt_exporter::fixture::copy_tree(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/redfish/public-rackmount1"),
        mockup.path(),
    );
    let mut sushy = Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/sushy-static"),
    )
    .args([
        "-i",
        "127.0.0.1",
        "-p",
        &bmc_port.to_string(),
        "-m",
        mockup.path().to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("sushy-static (make deps)");
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
    let _ = sushy.kill();
    let _ = sushy.wait();
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
    let e = start(t.root(), &[]);
    let health = || get(e.1, "/healthz").map(|(c, _)| c);
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
    let (_, reason) = get(e.1, "/healthz").unwrap();
    assert!(reason.contains("no collection finished"), "{reason}");
    let (code, body) = get(e.1, "/metrics").unwrap();
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
