//! `edgewatt-exporter top` as people use it: in a real terminal (a tmux pane, whose screen
//! `capture-pane` reads back as the user sees it) on a fixture machine — RAPL, a battery on its
//! own, a pod, a Docker container outside Kubernetes, a host daemon and a process with a hostile
//! name — and `--once --output json` as scripts use it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Ticker, BIN};
use edgewatt_exporter::fixture::FixtureTree;

/// What a process may set as its own name (`prctl(PR_SET_NAME)`; the kernel keeps any byte but
/// NUL): a screen clear, then a bell.
const HOSTILE: &str = "\x1b[2Jevil\x07";
const HOSTILE_SHOWN: &str = "\\x1b[2Jevil\\x07";
const DOCKER_ID: &str = "d0c0000000000000000000000000000000000000000000000000000000000001";

/// The fixture machine, ticking (CPU time and RAPL energy move) until dropped.
struct Machine {
    _ticker: Ticker,
    t: Arc<FixtureTree>,
    _dir: tempfile::TempDir,
}

/// CPU ticks per step: app (pod) 40, nginx (Docker) 20, sshd 10, the hostile one 5.
fn tick(t: &FixtureTree, i: u64) {
    t.rapl_energy("0", 1_000_000 + i * 5_000_000);
    t.rapl_energy("0:0", 1_000_000 + i * 1_000_000);
    t.proc_stat(10 + i * 100, 10 + i * 100);
    t.process_ticks(100, "app", 5 + i * 40);
    t.process_ticks(400, "nginx", 5 + i * 20);
    t.process_ticks(200, "sshd", 1 + i * 10);
    t.process_ticks(300, HOSTILE, 1 + i * 5);
}

/// The standard laptop ([`common::laptop`]) with a process of a hostile name and a Docker
/// container outside Kubernetes.
fn machine() -> Machine {
    let (dir, t) = common::tree();
    common::laptop(&t);
    t.process(
        300,
        HOSTILE,
        1,
        "/user.slice/user-1000.slice/session-1.scope",
    );
    t.process(
        400,
        "nginx",
        5,
        &format!("/system.slice/docker-{DOCKER_ID}.scope"),
    );
    // Docker's own record of the container (moby daemon/container: config.v2.json, "Name").
    t.set(
        &format!("var/lib/docker/containers/{DOCKER_ID}/config.v2.json"),
        format!(r#"{{"ID":"{DOCKER_ID}","Name":"/web","State":{{"Running":true}}}}"#),
    );
    tick(&t, 0);
    let t = Arc::new(t);
    let moving = t.clone();
    Machine {
        _ticker: Ticker::start(Duration::from_millis(250), move |i| tick(&moving, i)),
        t,
        _dir: dir,
    }
}

fn args(root: &std::path::Path) -> Vec<String> {
    [
        "--host-root",
        root.to_str().unwrap(),
        "--node-name",
        "fx",
        "--kubernetes",
        "off",
        "--attribution",
        "procfs",
        "--interval",
        "1s",
        "--source-rescan",
        "0s",
        "top",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A tmux server of its own (its own socket), one pane of a fixed size running `cmd`.
struct Tmux {
    socket: String,
    _conf: tempfile::NamedTempFile,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Tmux {
    fn start(cmd: &[String], width: u16, height: u16) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let socket = format!(
            "edgewatt-top-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        // The pane stays (and can be read) after top exits.
        let conf = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(conf.path(), "set -g remain-on-exit on\n").unwrap();
        let line: Vec<String> = cmd.iter().map(|a| shell_quote(a)).collect();
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", conf.path().to_str().unwrap()])
            .args(["new-session", "-d", "-s", "t", "-x", &width.to_string()])
            .args(["-y", &height.to_string(), &line.join(" ")])
            .env_remove("TMUX")
            .status()
            .expect("tmux (Debian package tmux; `make deps` installs it)");
        assert!(status.success());
        Tmux {
            socket,
            _conf: conf,
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "t"];
        a.extend(keys);
        self.tmux(&a);
    }

    /// The screen once `pred` holds (30 s at most; the machine is shared and builds run).
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waited for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// Line index on screen of the first line containing `needle`.
fn line_of(screen: &str, needle: &str) -> Option<usize> {
    screen.lines().position(|l| l.contains(needle))
}

/// The share column (the first `N.N%` cell) of every table row, in percent.
fn shares(screen: &str) -> Vec<f64> {
    screen
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|c| c.ends_with('%') && c[..c.len() - 1].parse::<f64>().is_ok())
                .map(|c| c[..c.len() - 1].parse().unwrap())
        })
        .collect()
}

/// The terminal UI shows the expected rows at each level, the idle and system rows with shares
/// of node power adding up to 100 %, sorts and filters by key, escapes a hostile process name,
/// and names a Docker container from Docker's own state.
#[test]
fn tui_rows_keys_and_escaping() {
    let m = machine();
    let mut cmd = vec![BIN.to_string()];
    cmd.extend(args(m.t.root()));
    let tmux = Tmux::start(&cmd, 140, 40);
    // A pod on the machine: the table opens at the pod level.
    let s = tmux.wait_for("the pod table with figures", |s| {
        s.contains("PODS") && s.contains("[idle]") && s.contains("pod 00000007")
    });
    assert!(
        s.contains("node power") && s.contains("(source: rapl)"),
        "{s}"
    );
    assert!(
        s.contains("package") && s.contains("dram"),
        "zone columns:\n{s}"
    );
    assert!(
        s.contains("battery 35 % Discharging, draw 9.0 W, runway 1 h 57 min"),
        "{s}"
    );

    tmux.keys(&["Tab"]);
    let s = tmux.wait_for("the container level", |s| s.contains("CONTAINERS"));
    assert!(
        s.contains("web (d0c000000000)"),
        "Docker's name and a short id:\n{s}"
    );
    assert!(!s.contains(DOCKER_ID), "never the 64-digit id:\n{s}");

    tmux.keys(&["Tab"]);
    let s = tmux.wait_for("the process level with all four", |s| {
        s.contains("PROCESSES") && s.contains("sshd") && s.contains("nginx") && s.contains("evil")
    });
    assert!(s.contains(HOSTILE_SHOWN), "escaped:\n{s}");
    assert!(!s.contains('\x1b') && !s.contains('\x07'), "{s:?}");
    let total: f64 = shares(&s).iter().sum();
    assert!(
        (total - 100.0).abs() < 0.6,
        "shares {:?} of\n{s}",
        shares(&s)
    );
    // By power: app (40 ticks per step) above nginx (20), sshd (10), the hostile one (5).
    let order = |s: &str| {
        ["app", "nginx", "sshd", HOSTILE_SHOWN, "[idle]", "[system]"]
            .map(|n| line_of(s, &format!(" {n}")).unwrap_or_else(|| panic!("{n} in\n{s}")))
    };
    let o = order(&s);
    assert!(o.windows(2).all(|w| w[0] < w[1]), "{o:?}\n{s}");

    tmux.keys(&["n"]);
    let s = tmux.wait_for("sorted by name", |s| s.contains("sorted by name"));
    let o = order(&s);
    // Byte order: '\' < 'a' < 'n' < 's'; [idle] and [system] stay last.
    assert!(
        o[3] < o[0] && o[0] < o[1] && o[1] < o[2] && o[2] < o[4],
        "{o:?}\n{s}"
    );

    tmux.keys(&["/"]);
    tmux.keys(&["-l", "ssh"]);
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("filtered to ssh", |s| s.contains("filter \"ssh\""));
    assert!(s.contains(" sshd") && s.contains("[idle]"), "{s}");
    assert!(!s.contains(" app ") && !s.contains("nginx"), "{s}");

    tmux.keys(&["Escape"]);
    tmux.wait_for("filter cleared", |s| s.contains("nginx"));
    tmux.keys(&["q"]);
    tmux.wait_for("top gone", |s| !s.contains("PROCESSES"));
}

/// A small terminal: the zone columns give way, `[idle]` and `[system]` stay; a resize is
/// redrawn at the new size.
#[test]
fn tui_small_terminal() {
    let m = machine();
    let mut cmd = vec![BIN.to_string()];
    cmd.extend(args(m.t.root()));
    let tmux = Tmux::start(&cmd, 60, 12);
    let s = tmux.wait_for("a frame", |s| s.contains("[system]"));
    assert!(s.contains("[idle]") && !s.contains("package"), "{s}");
    assert!(s.lines().all(|l| l.chars().count() <= 60), "{s}");
    tmux.tmux(&["resize-window", "-t", "t", "-x", "140", "-y", "40"]);
    let s = tmux.wait_for("the zone columns back", |s| s.contains("package"));
    assert!(s.contains("[idle]"), "{s}");
    tmux.keys(&["q"]);
}

/// Without root on a machine with RAPL (energy_uj root-only since Linux 5.10): the UI says so
/// and how to fix it rather than "no meter", and the warning stays on screen refresh after
/// refresh. The reader meets the kernel's refusal for real: the file is mode 000 and top runs
/// as nobody (setpriv), or as the unprivileged user running the test.
#[test]
fn tui_rapl_without_root() {
    let m = machine();
    let energy = m.t.path("sys/class/powercap/intel-rapl:0/energy_uj");
    let is_root = rustix::process::geteuid().is_root();
    let mut cmd = Vec::new();
    if is_root {
        common::readable_by_all(m.t.root());
        cmd.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]
            .map(String::from),
        );
    }
    std::fs::set_permissions(&energy, std::fs::Permissions::from_mode(0o000)).unwrap();
    cmd.push(BIN.to_string());
    cmd.extend(args(m.t.root()));
    let tmux = Tmux::start(&cmd, 140, 40);
    let s = tmux.wait_for("a frame", |s| s.contains("[idle]"));
    assert!(
        s.contains("RAPL present, needs root (sudo make run)") && !s.contains("no meter on this"),
        "{s}"
    );
    assert!(
        s.contains("warnings") && s.contains("energy_uj: permission denied"),
        "{s}"
    );
    // Two refreshes later the pane is still there (a log line under the UI would be wiped).
    let first_wh = s
        .lines()
        .find(|l| l.contains("Wh since start"))
        .unwrap()
        .to_string();
    let s = tmux.wait_for("two more refreshes", |s| {
        s.lines()
            .find(|l| l.contains("Wh since start"))
            .is_some_and(|l| l != first_wh)
    });
    std::thread::sleep(Duration::from_millis(1200));
    let s2 = tmux.screen();
    for s in [&s, &s2] {
        assert!(s.contains("energy_uj: permission denied"), "{s}");
    }
    tmux.keys(&["q"]);
}

/// `--once --output json`: one object, every level's rows with `[idle]` and `[system]`, shares
/// of node power adding up to 1, names escaped, containers named.
#[test]
fn once_json_for_scripts() {
    let m = machine();
    let out = Command::new(BIN)
        .args(args(m.t.root()))
        .args(["--once", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one refresh: {stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["node_name"], "fx");
    assert_eq!(v["node_source"], "rapl");
    let node = v["node_watts"].as_f64().unwrap();
    assert!(node > 0.0, "{v}");
    assert!(v["battery"]["runway_hours"].as_f64().unwrap() > 1.9, "{v}");
    for level in ["pods", "containers", "processes"] {
        let rows = v[level].as_array().unwrap();
        let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert!(
            kinds.contains(&"idle") && kinds.contains(&"system"),
            "{level}: {kinds:?}"
        );
        let share: f64 = rows.iter().map(|r| r["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-6, "{level}: {share}");
        let watts: f64 = rows.iter().map(|r| r["watts"].as_f64().unwrap()).sum();
        assert!(
            (watts - node).abs() < 1e-6 * node.max(1.0),
            "{level}: {watts} vs {node}"
        );
    }
    let names: Vec<&str> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in ["app", "nginx", "sshd", HOSTILE_SHOWN] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(
        !stdout.contains("\\u001b"),
        "no raw escape, not even JSON-encoded"
    );
    let containers: Vec<&str> = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(containers.contains(&"web (d0c000000000)"), "{containers:?}");
}
