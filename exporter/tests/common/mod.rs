//! The exporter's integration-test harness, shared by every test file that needs it: the binary
//! started with args and ready, `/metrics` fetched and waited on, `promtool check metrics`, an
//! exposition parser, a collector over a fixture tree, the standard fixture host, a ticking
//! fixture, and sushy-static serving Redfish mockups.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgewatt_exporter::collector::{Collector, CollectorConfig};
use edgewatt_exporter::estimator::Estimator;
use edgewatt_exporter::fixture::{ids, pod_cgroup, BatteryFiles, FixtureTree};
use edgewatt_exporter::pods::PodDirectory;
use edgewatt_exporter::procfs::Procfs;
use edgewatt_exporter::source::Source;
use edgewatt_exporter::sources::discover_local;
use edgewatt_exporter::sysfs::HostRoot;

pub const BIN: &str = env!("CARGO_BIN_EXE_edgewatt-exporter");

/// A child process, killed and reaped when dropped (a failing test leaves nothing behind).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A blocking HTTP/1.1 GET on loopback (std only): status and body; `None` when nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
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

/// The flags the fixture tests run the binary with: the fixture as host root, node `fx`, a 1 s
/// interval, no cluster, procfs attribution.
pub fn fixture_flags(root: &Path) -> Vec<String> {
    [
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
    ]
    .map(String::from)
    .to_vec()
}

/// `edgewatt-exporter serve` on a free loopback port, ready (`/readyz` answered 200).
pub struct Exporter {
    _child: Running,
    pub port: u16,
    /// The flags before `serve` (what `top` runs with to show the same node).
    pub args: Vec<String>,
}

impl Exporter {
    /// `edgewatt-exporter ARGS serve --listen 127.0.0.1:PORT SERVE_ARGS`.
    pub fn start(args: Vec<String>, serve_args: &[&str]) -> Self {
        Self::start_env(args, serve_args, &[])
    }

    /// [`Exporter::start`] with environment variables set.
    pub fn start_env(args: Vec<String>, serve_args: &[&str], env: &[(&str, &Path)]) -> Self {
        let port = edgewatt_e2e::free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(serve_args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let e = Self {
            _child: Running(cmd.spawn().expect("start exporter")),
            port,
            args,
        };
        for _ in 0..100 {
            if matches!(e.get("/readyz"), Some((200, _))) {
                return e;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("exporter not ready on port {port}");
    }

    /// The fixture flags plus `extra` (before `serve`).
    pub fn on_fixture(root: &Path, extra: &[&str], serve_args: &[&str]) -> Self {
        let mut args = fixture_flags(root);
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(args, serve_args)
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.port, path)
    }

    /// One scrape's body (`/metrics` must answer).
    pub fn metrics(&self) -> String {
        self.get("/metrics").expect("/metrics answers").1
    }

    /// Scrapes every `pause` until one body holds every needle; before each scrape `tick(i)`
    /// moves the fixture on, for `i` in `ticks`. Panics with the last body when they run out.
    pub fn wait_for_all(
        &self,
        needles: &[&str],
        ticks: Range<u64>,
        pause: Duration,
        mut tick: impl FnMut(u64),
    ) -> String {
        let mut body = String::new();
        for i in ticks {
            tick(i);
            std::thread::sleep(pause);
            body = self.metrics();
            if needles.iter().all(|n| body.contains(n)) {
                return body;
            }
        }
        panic!("never saw all of {needles:?} in\n{body}");
    }

    /// One `top --plain` frame with the same flags; `tick(i)` for `i` in 100..106, 400 ms apart,
    /// moves CPU time on while `top` measures.
    pub fn top(&self, mut tick: impl FnMut(u64)) -> String {
        let top = Command::new(BIN)
            .args(&self.args)
            .args(["top", "-n", "1", "--plain"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for i in 100..106 {
            tick(i);
            std::thread::sleep(Duration::from_millis(400));
        }
        String::from_utf8_lossy(&top.wait_with_output().unwrap().stdout).into_owned()
    }
}

/// `promtool check metrics` (text format 0.0.4, plus its lint) must accept `body`.
pub fn promtool_check(body: &str) {
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

/// One sample of the text exposition format: name, labels (unescaped, in order), value.
pub type Parsed = (String, Vec<(String, String)>, f64);

/// Parses text format 0.0.4 the way its spec reads (label values: `\\`, `\"`, `\n` escapes),
/// independently of the exporter's encoder, so a round trip proves the escaping.
pub fn parse_samples(text: &str) -> Vec<Parsed> {
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

/// A label's value in a parsed sample.
pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Collector settings for a fixture: node `node`, no budget, no CO2 unless set afterwards.
pub fn config(node: &str, expire_intervals: u64, process_detail: bool) -> CollectorConfig {
    CollectorConfig {
        node_name: node.into(),
        expire_intervals,
        power_budget_watts: None,
        carbon_intensity: None,
        process_detail,
    }
}

/// A collector over the fixture tree as the exporter builds one: the sources discovery finds
/// (it must warn of nothing), the estimator it adds unless `--no-estimator` (`estimator`),
/// procfs accounting, `pods` for names.
pub fn collector(
    t: &FixtureTree,
    cfg: CollectorConfig,
    estimator: bool,
    pods: PodDirectory,
) -> Collector {
    let root = HostRoot::new(t.root());
    let (mut sources, warnings) = discover_local(&root);
    assert!(warnings.is_empty(), "{warnings:?}");
    if estimator {
        sources.push(Box::new(Estimator::for_host(&root, None).unwrap()) as Box<dyn Source>);
    }
    Collector::new(
        cfg,
        root.clone(),
        sources,
        Box::new(Procfs::new(&root)),
        pods,
    )
}

/// A fixture tree in a temporary directory (removed with the `TempDir`).
pub fn tree() -> (tempfile::TempDir, FixtureTree) {
    let dir = tempfile::tempdir().unwrap();
    let t = FixtureTree::new(dir.path());
    (dir, t)
}

/// The standard fixture host: a laptop (i7-8650U, 8 threads; RAPL package and dram at 1 J), its
/// battery discharging at 35 % (17.5 of 50 Wh) and drawing 9 W, mains offline; a pod's process
/// (pid 100 `app`, pod [`ids`]`(7)`) and a host daemon (pid 200 `sshd`).
pub fn laptop(t: &FixtureTree) {
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
}

/// Calls `tick(i)` for i = 1, 2, … every `period` on a thread of its own, until dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(period: Duration, mut tick: impl FnMut(u64) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 1;
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(period);
                tick(i);
                i += 1;
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every path under `p`, `p` first.
pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// Makes the tree readable by anyone (directories 755, files 644), so the binary run as
/// `nobody` (`setpriv`) meets only the permissions a test sets afterwards.
pub fn readable_by_all(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in walk(root) {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// sushy-static (PyPI `sushy-tools`, installed by `make deps` into `.venv/`): a real Redfish
/// server for DMTF's mockups.
pub fn sushy_static() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let candidates = [
        std::env::var_os("SUSHY_STATIC").map(PathBuf::from),
        Some(repo.join(".venv/bin/sushy-static")),
        Some(PathBuf::from("/usr/local/bin/sushy-static")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .expect("sushy-static not found: run `make deps` (it installs sushy-tools into .venv/) or set SUSHY_STATIC")
}

/// sushy-static serving the mockup in `dir` on `port`, accepting connections; `tls`:
/// (certificate, key) files.
pub fn serve_mockup_on(port: u16, dir: &Path, tls: Option<(&Path, &Path)>) -> Running {
    let mut cmd = Command::new(sushy_static());
    cmd.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        dir.to_str().unwrap(),
    ]);
    if let Some((cert, key)) = tls {
        cmd.args(["-c", cert.to_str().unwrap(), "-k", key.to_str().unwrap()]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sushy-static");
    let server = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sushy-static did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// [`serve_mockup_on`] a free port.
pub fn serve_mockup(dir: &Path, tls: Option<(&Path, &Path)>) -> (Running, u16) {
    let port = edgewatt_e2e::free_port();
    (serve_mockup_on(port, dir, tls), port)
}

/// A private copy of a mockup under `tests/data/redfish/`, to edit while it is served.
pub fn mockup_copy(name: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/redfish")
        .join(name);
    let dst = tempfile::tempdir().unwrap();
    edgewatt_exporter::fixture::copy_tree(&src, dst.path());
    dst
}
