//! IPMI platform power against a real BMC implementation: OpenIPMI's `ipmi_sim` (Debian package
//! `openipmi`) serving a LAN interface with full sensor records in watts, cross-checked with
//! `ipmitool` (Debian package `ipmitool`). `ipmi_sim` has no DCMI commands (it answers Get Power
//! Reading with C1h "invalid command"), so these tests also prove the fall-back from DCMI to the
//! SDR; DCMI's framing and decoding are unit-tested in `sources/ipmi/dcmi.rs`.
//!
//! The SDR records are written byte by byte after IPMI 2.0 Table 43-1 ("Full Sensor Record"); the
//! simulator's commands after its manual pages ipmi_sim(1), ipmi_sim_cmd(5) and ipmi_lan(5).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Exporter;
use edgewatt_exporter::fixture::FixtureTree;

const USER: &str = "edgewatt";
const PASSWORD: &str = "s3cret-Pw";

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// One analog threshold sensor in watts: reading = M·raw.
struct WattSensor {
    number: u8,
    name: &'static str,
    /// IPMI entity id: 07h system board, 0Ah power supply.
    entity: u8,
    m: u8,
    /// Initial raw reading; `None`: sensor scanning disabled, so the BMC has no reading for it
    /// (Get Sensor Reading byte 2 bit 6 clear; ipmitool shows "ns").
    raw: Option<u8>,
}

/// `main_sdr_add` line for a Full Sensor Record (IPMI 2.0 Table 43-1).
fn full_sensor_record(s: &WattSensor) -> String {
    let id = s.name.as_bytes();
    let mut body = vec![
        0x20, 0x00, s.number, // owner: BMC, LUN 0, sensor number
        s.entity, 0x01, // entity id and instance
        0x7F, // initialisation: scanning, events, thresholds, hysteresis, type
        0x40, // capabilities: auto re-arm, no hysteresis, no thresholds
        0x03, // sensor type: Current (what Dell's "Pwr Consumption" uses)
        0x01, // event/reading type: threshold
    ];
    body.extend([0u8; 6]); // event and threshold masks
    body.extend([0x00, 0x06, 0x00]); // units: unsigned analog, base unit 6 = Watts
    body.push(0x00); // linear
    body.extend([s.m, 0x00, 0x00, 0x00, 0x00, 0x00]); // M, tolerance, B, accuracy, R/B exponents 0
    body.push(0x00); // analog characteristics
    body.extend([0x00, 0x00, 0x00, 0xFF, 0x00]); // nominal, normal max/min, sensor max/min
    body.extend([0u8; 6]); // thresholds
    body.extend([0u8; 2]); // hysteresis
    body.extend([0u8; 2]); // reserved
    body.push(0x00); // OEM
    body.push(0xC0 | id.len() as u8); // id string: 8-bit ASCII + Latin 1
    body.extend(id);
    let mut rec = vec![s.number, 0x00, 0x51, 0x01, body.len() as u8];
    rec.extend(body);
    let bytes: Vec<String> = rec.iter().map(|b| format!("{b:#04x}")).collect();
    format!("main_sdr_add 0x20 {}", bytes.join(" "))
}

/// A running `ipmi_sim` with a LAN channel on `port` and its command console on `console`.
struct IpmiSim {
    child: Child,
    port: u16,
    console: u16,
    _dir: tempfile::TempDir,
}

impl IpmiSim {
    fn start(sensors: &[WattSensor]) -> Self {
        Self::start_on(free_udp_port(), sensors)
    }

    fn start_on(port: u16, sensors: &[WattSensor]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let console = edgewatt_e2e::free_port();
        let lan = format!(
            "name \"edgewatt\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_callback md5\n    allowed_auths_user md5\n    allowed_auths_operator md5\n    allowed_auths_admin md5\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 md5\nconsole 127.0.0.1 {console}\n"
        );
        let mut emu = String::from(
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\n",
        );
        for s in sensors {
            emu.push_str(&full_sensor_record(s));
            emu.push('\n');
            emu.push_str(&format!("sensor_add 0x20 0 {:#04x} 0x03 0x01\n", s.number));
            match s.raw {
                Some(raw) => {
                    emu.push_str(&format!("sensor_set_value 0x20 0 {:#04x} {raw} 0\n", s.number))
                }
                None => emu.push_str(&format!(
                    "sensor_set_event_support 0x20 0 {:#04x} enable no-scanning per-state {z} {z} {z} {z}\n",
                    s.number,
                    z = "000000000000000"
                )),
            }
        }
        emu.push_str("mc_enable 0x20\n");
        std::fs::write(dir.path().join("lan.conf"), lan).unwrap();
        std::fs::write(dir.path().join("sim.emu"), emu).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let child = Command::new("ipmi_sim")
            .current_dir(dir.path())
            .args(["-c", "lan.conf", "-f", "sim.emu", "-s", "state", "-n"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("sim.log")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ipmi_sim (Debian package openipmi; `make deps` installs it)");
        let sim = IpmiSim {
            child,
            port,
            console,
            _dir: dir,
        };
        for _ in 0..50 {
            // The prompt must be read before hanging up: ipmi_sim dies of SIGPIPE when its
            // console's peer is gone before the greeting is written.
            if let Ok(s) = TcpStream::connect(("127.0.0.1", console)) {
                read_until(s, "> ");
                return sim;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "ipmi_sim did not start: {}",
            std::fs::read_to_string(sim._dir.path().join("sim.log")).unwrap_or_default()
        );
    }

    /// Runs a simulator command on its console (e.g. a new sensor value), waiting for the next
    /// prompt (the command is done then).
    fn command(&self, line: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.console)).unwrap();
        let mut s2 = s.try_clone().unwrap();
        s = read_until(s, "> ");
        writeln!(s2, "{line}").unwrap();
        read_until(s, &format!("{line}\n\r> "));
    }

    /// `ipmitool sdr elist full` over LAN: what an operator would see for this BMC.
    fn ipmitool_sdr(&self) -> String {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", USER, "-P", PASSWORD, "sdr", "elist", "full"])
            .output()
            .expect("ipmitool (Debian package ipmitool; `make deps` installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Reads the console until `end` (or 3 s pass); returns the stream for more.
fn read_until(mut s: TcpStream, end: &str) -> TcpStream {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (mut seen, mut buf) = (Vec::new(), [0u8; 256]);
    while !String::from_utf8_lossy(&seen).ends_with(end) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend(&buf[..n]),
        }
    }
    s
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node without local meters (the estimator's input only), so IPMI is its one meter.
fn node() -> (tempfile::TempDir, FixtureTree) {
    let (dir, t) = common::tree();
    t.proc_stat(10, 10);
    t.cpuinfo("Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz", 8, false);
    t.process(200, "sshd", 1, "/system.slice/sshd.service");
    (dir, t)
}

fn tick_cpu(t: &FixtureTree, i: u64) {
    t.proc_stat(10 + i * 60, 10 + i * 40);
    t.process_ticks(200, "sshd", 1 + i * 10);
}

fn credentials(dir: &Path, user: &str, password: &str) -> PathBuf {
    let p = dir.join("ipmi-credentials");
    std::fs::write(&p, format!("{user}:{password}\n")).unwrap();
    p
}

/// The exporter against the BMC on `bmc_port`, polled every 300 ms.
fn start(root: &Path, bmc_port: u16, credentials: &Path, extra: &[&str]) -> Exporter {
    let mut args = common::fixture_flags(root);
    args.extend(
        [
            "--ipmi-host",
            &format!("127.0.0.1:{bmc_port}"),
            "--ipmi-credentials-file",
            credentials.to_str().unwrap(),
            "--ipmi-interval",
            "300ms",
            "--ipmi-timeout",
            "500ms",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    Exporter::start(args, &[])
}

/// Scrapes until every needle is in one body, CPU time moving on meanwhile.
fn wait_for_all(e: &Exporter, t: &FixtureTree, needles: &[&str], i0: u64) -> String {
    e.wait_for_all(needles, i0..i0 + 30, Duration::from_millis(500), |i| {
        tick_cpu(t, i)
    })
}

/// One `top` frame with the same flags.
fn top(e: &Exporter, t: &FixtureTree) -> String {
    e.top(|i| tick_cpu(t, i))
}

const UP_IPMI: &str =
    "edgewatt_exporter_source_up{node_name=\"fx\",source=\"ipmi\",state=\"in_use\"} 1";
const ESTIMATED: &str =
    "edgewatt_exporter_source_up{node_name=\"fx\",source=\"estimator\",state=\"in_use\"} 1";

/// "Pwr Consumption" (a whole-node sensor, 2 W per count) is the node's power, the same figure
/// ipmitool shows; a change on the BMC reaches /metrics; `top` says which sensor.
#[test]
fn sdr_power_over_lan_is_the_nodes_platform_power() {
    let (dir, t) = node();
    let sim = IpmiSim::start(&[
        WattSensor {
            number: 0x10,
            name: "PS1 Input Power",
            entity: 0x0A,
            m: 1,
            raw: Some(90),
        },
        WattSensor {
            number: 0x11,
            name: "Pwr Consumption",
            entity: 0x07,
            m: 2,
            raw: Some(120),
        },
    ]);
    assert!(
        sim.ipmitool_sdr().contains("240 Watts"),
        "ipmitool: {}",
        sim.ipmitool_sdr()
    );
    let e = start(
        t.root(),
        sim.port,
        &credentials(dir.path(), USER, PASSWORD),
        &[],
    );
    let body = wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_node_platform_watts{node_name=\"fx\",source=\"ipmi\"} 240",
            UP_IPMI,
            // ipmi_sim answers DCMI with D4h: the SDR is what was used, and /metrics says so.
            "edgewatt_exporter_source_info{node_name=\"fx\",source=\"ipmi\",method=\"sdr\"} 1",
        ],
        1,
    );
    assert!(
        !body.contains("source=\"estimator\"}"),
        "one source: {body}"
    );

    sim.command("sensor_set_value 0x20 0 0x11 130 0");
    assert!(sim.ipmitool_sdr().contains("260 Watts"));
    wait_for_all(
        &e,
        &t,
        &["edgewatt_node_platform_watts{node_name=\"fx\",source=\"ipmi\"} 260"],
        40,
    );
    let top = top(&e, &t);
    assert!(
        top.contains("sdr: SDR sensor \"Pwr Consumption\""),
        "top names the sensor:\n{top}"
    );
}

/// Without a whole-node sensor the supplies' input power is summed (90 W + 2·55 W); their
/// output power is not added to it.
#[test]
fn supplies_input_power_is_summed() {
    let (dir, t) = node();
    let sim = IpmiSim::start(&[
        WattSensor {
            number: 0x20,
            name: "PS1 Input Power",
            entity: 0x0A,
            m: 1,
            raw: Some(90),
        },
        WattSensor {
            number: 0x21,
            name: "PS2 Input Power",
            entity: 0x0A,
            m: 2,
            raw: Some(55),
        },
        WattSensor {
            number: 0x22,
            name: "PS1 Output Power",
            entity: 0x0A,
            m: 1,
            raw: Some(80),
        },
    ]);
    let e = start(
        t.root(),
        sim.port,
        &credentials(dir.path(), USER, PASSWORD),
        &[],
    );
    wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_node_platform_watts{node_name=\"fx\",source=\"ipmi\"} 200",
            UP_IPMI,
        ],
        1,
    );
}

/// A wrong password: the source is in error (never 0 W), the estimator reports, and `top` says
/// the session could not be opened.
#[test]
fn a_wrong_password_is_an_error_and_the_estimator_reports() {
    let (dir, t) = node();
    let sim = IpmiSim::start(&[WattSensor {
        number: 0x10,
        name: "Pwr Consumption",
        entity: 0x07,
        m: 2,
        raw: Some(120),
    }]);
    let e = start(
        t.root(),
        sim.port,
        &credentials(dir.path(), USER, "not-the-password"),
        &[],
    );
    let body = wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"ipmi\",state=\"error\"} 0",
            ESTIMATED,
        ],
        1,
    );
    assert!(!body.contains("edgewatt_node_platform"), "{body}");
    let top = top(&e, &t);
    assert!(
        top.contains("authentication failed for user \"edgewatt\" (wrong user or password)"),
        "{top}"
    );
}

/// A power sensor the BMC has no reading for (scanning disabled, as for a supply not inserted;
/// ipmitool shows "ns"): no_power, the series is absent, the estimator reports.
#[test]
fn a_sensor_without_a_reading_is_no_power() {
    let (dir, t) = node();
    let sim = IpmiSim::start(&[WattSensor {
        number: 0x10,
        name: "Pwr Consumption",
        entity: 0x07,
        m: 2,
        raw: None,
    }]);
    assert!(
        sim.ipmitool_sdr().contains("| ns  |"),
        "{}",
        sim.ipmitool_sdr()
    );
    let e = start(
        t.root(),
        sim.port,
        &credentials(dir.path(), USER, PASSWORD),
        &[],
    );
    let body = wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"ipmi\",state=\"no_power\"} 0",
            ESTIMATED,
        ],
        1,
    );
    assert!(!body.contains("edgewatt_node_platform"), "{body}");
}

/// A BMC without any power sensor: no_power, and the reason names what is missing.
#[test]
fn a_bmc_without_power_sensors_is_no_power() {
    let (dir, t) = node();
    let sim = IpmiSim::start(&[]);
    let e = start(
        t.root(),
        sim.port,
        &credentials(dir.path(), USER, PASSWORD),
        &[],
    );
    wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"ipmi\",state=\"no_power\"} 0",
            ESTIMATED,
        ],
        1,
    );
    assert!(top(&e, &t).contains("no power sensors"));
}

/// The BMC does not answer (a socket that swallows every packet: each request times out):
/// error and the estimator; it comes up: its power is the node's; it stops answering: after
/// three poll intervals the reading is stale, the series is withdrawn and the estimator takes
/// over in the same scrape.
#[test]
fn a_down_bmc_falls_back_to_the_estimator() {
    let (dir, t) = node();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let e = start(
        t.root(),
        port,
        &credentials(dir.path(), USER, PASSWORD),
        &[],
    );
    let body = wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"ipmi\",state=\"error\"} 0",
            ESTIMATED,
        ],
        1,
    );
    assert!(!body.contains("edgewatt_node_platform"), "{body}");
    let top = top(&e, &t);
    assert!(top.contains("no answer within 500ms"), "{top}");
    drop(silent);

    let sim = IpmiSim::start_on(
        port,
        &[WattSensor {
            number: 0x10,
            name: "Pwr Consumption",
            entity: 0x07,
            m: 2,
            raw: Some(150),
        }],
    );
    wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_node_platform_watts{node_name=\"fx\",source=\"ipmi\"} 300",
            UP_IPMI,
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"estimator\",state=\"standby\"} 1",
        ],
        40,
    );

    drop(sim);
    let body = wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"ipmi\",state=\"stale\"} 0",
            ESTIMATED,
        ],
        80,
    );
    assert!(!body.contains("edgewatt_node_platform"), "{body}");
}

/// In-band without the kernel's device: a clear error naming the modules, the estimator reports.
#[test]
fn in_band_without_the_device_says_which_modules() {
    let (dir, t) = node();
    let missing = dir.path().join("ipmi0");
    let mut args = common::fixture_flags(t.root());
    args.extend([
        "--ipmi-device".to_string(),
        missing.to_str().unwrap().into(),
    ]);
    let e = Exporter::start(args, &[]);
    wait_for_all(
        &e,
        &t,
        &[
            "edgewatt_exporter_source_up{node_name=\"fx\",source=\"ipmi\",state=\"error\"} 0",
            ESTIMATED,
        ],
        1,
    );
    let top = top(&e, &t);
    assert!(top.contains("ipmi_devintf"), "{top}");
}
