//! The eBPF accounting, loaded and attached for real (root; this machine allows BPF). Without the
//! privilege each test says SKIPPED loudly — and `.ci/run` runs as root, so in CI they run.

use std::process::{Child, Command};
use std::time::Duration;

use edgewatt_exporter::accounting::CpuAccounting;
use edgewatt_exporter::ebpf::Ebpf;
use edgewatt_exporter::sysfs::HostRoot;

fn load() -> Option<Ebpf> {
    load_or_skip(&HostRoot::new("/"), Default::default())
}

/// Loads with `opts`; `None` (SKIPPED, said loudly) only where eBPF is not permitted — as root a
/// failure is a failure.
fn load_or_skip(root: &HostRoot, opts: edgewatt_exporter::ebpf::LoadOptions) -> Option<Ebpf> {
    match Ebpf::load_opts(root, opts) {
        Ok(e) => Some(e),
        Err(reason) => {
            assert!(
                !is_root() || std::env::var_os("EDGEWATT_EBPF_OPTIONAL").is_some(),
                "running as root but eBPF did not load: {reason}"
            );
            eprintln!("SKIPPED: eBPF not permitted here ({reason}); run as root to exercise it");
            None
        }
    }
}

/// A CPU burner that is killed when dropped: a failing assertion (these tests are timing-
/// sensitive under load) must not leave an orphaned busy loop that slows everything after it.
struct Burner(Option<Child>);

impl Burner {
    /// The child, handed to a guard that kills it.
    fn into_child(mut self) -> Child {
        self.0.take().expect("burner child")
    }
}

impl std::ops::Deref for Burner {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("burner child")
    }
}

impl std::ops::DerefMut for Burner {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("burner child")
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn burn() -> Burner {
    Burner(Some(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap(),
    ))
}

fn schedstat_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e9
}

fn steal() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .next()?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn measures_a_cpu_burner_within_10_percent_of_procfs() {
    let Some(mut e) = load() else { return };
    eprintln!("program {}", e.program_kind());
    let mut child = burn();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    e.collect().unwrap();
    let before = proc_cpu_seconds(pid);
    let sched0 = schedstat_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let deltas = e.collect().unwrap();
    let after = proc_cpu_seconds(pid);
    let sched1 = schedstat_seconds(pid);
    eprintln!(
        "schedstat runtime: {:.3} s; steal on this machine: {:?}",
        sched1 - sched0,
        steal()
    );
    let _ = child.kill();
    let _ = child.wait();
    let ebpf = deltas
        .iter()
        .find(|d| d.pid == pid)
        .map(|d| d.cpu_seconds)
        .unwrap_or(0.0);
    let procfs = after - before;
    eprintln!("burner: eBPF {ebpf:.3} s, procfs {procfs:.3} s");
    assert!(procfs > 1.0, "the burner should have run ~2 s: {procfs}");
    assert!(
        (ebpf - procfs).abs() / procfs < 0.10,
        "eBPF {ebpf:.3} s vs procfs {procfs:.3} s"
    );
    // exited: its last CPU time may still be reported once, then it is gone
    std::thread::sleep(Duration::from_millis(200));
    e.collect().unwrap();
    let later = e.collect().unwrap();
    assert!(
        !later.iter().any(|d| d.pid == pid),
        "an exited process must be dropped"
    );
}

#[test]
fn maps_a_process_to_its_fresh_cgroup() {
    let Some(mut e) = load() else { return };
    // cgroup v2, or on v1/hybrid hosts (like this VM) the cpu controller's hierarchy
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let base = std::path::Path::new(if v2 {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/cpu"
    });
    eprintln!(
        "cgroup {} at {}",
        if v2 { "v2" } else { "v1" },
        base.display()
    );
    let uid = "5f1c2d3e-0000-4000-8000-00000000abcd";
    let id = "e".repeat(64);
    let pod_dir = base
        .join(format!("edgewatt-test-{}.slice", std::process::id()))
        .join(format!("kubepods-pod{}.slice", uid.replace('-', "_")));
    let dir = pod_dir.join(format!("cri-containerd-{id}.scope"));
    std::fs::create_dir_all(&dir).expect("create a test cgroup (root)");
    let mut child = burn();
    let pid = child.id();
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    e.collect().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let deltas = e.collect().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(100));
    let mine = deltas.iter().find(|d| d.pid == pid).cloned();
    // clean up before asserting
    let top = pod_dir.parent().unwrap().to_path_buf();
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir(&pod_dir);
    let _ = std::fs::remove_dir(&top);
    let mine = mine.expect("the burner is in the map");
    assert_eq!(mine.workload.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(mine.workload.pod_uid.as_deref(), Some(uid));
    assert!(mine.cpu_seconds > 0.3, "{}", mine.cpu_seconds);
}

/// Without privileges loading fails with a reason naming the capabilities, and the exporter's
/// `--attribution auto` falls back to procfs and says so in `exporter_info`.
#[test]
fn denied_load_names_capabilities_and_auto_falls_back() {
    let bin = env!("CARGO_BIN_EXE_edgewatt-exporter");
    // As root, drop to nobody with no capabilities; otherwise we already lack them.
    let unprivileged = || {
        if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                bin,
            ]);
            c
        } else {
            Command::new(bin)
        }
    };
    let out = unprivileged()
        .args([
            "--attribution",
            "ebpf",
            "--kubernetes",
            "off",
            "top",
            "-n",
            "1",
            "--interval",
            "100ms",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--attribution ebpf") && stderr.contains("CAP_BPF"),
        "{stderr}"
    );
    let out = unprivileged()
        .args([
            "--attribution",
            "auto",
            "--kubernetes",
            "off",
            "top",
            "-n",
            "1",
            "--interval",
            "100ms",
            "--plain",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("eBPF attribution unavailable; using procfs"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("attribution: procfs"));
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Removes the test cgroups (deepest first) and kills the child even when an assertion fails.
struct Cleanup {
    child: Option<Child>,
    dirs: Vec<std::path::PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            for _ in 0..20 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// cgroup v2 ids are directory inodes: checked on a v2 host directly, and on a v1/hybrid host
/// (like this VM) through its `unified` v2 hierarchy presented as the host's /sys/fs/cgroup.
#[test]
fn maps_cgroup_v2_ids_by_directory_inode() {
    let v2_root = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        eprintln!("SKIPPED: no cgroup v2 hierarchy on this host");
        return;
    };
    // a host root whose /proc is the real one and whose /sys/fs/cgroup is the v2 hierarchy
    let fake = tempfile::tempdir().unwrap();
    let host = if v2_root == "/sys/fs/cgroup" {
        HostRoot::new("/")
    } else {
        std::fs::create_dir_all(fake.path().join("sys/fs")).unwrap();
        std::os::unix::fs::symlink(v2_root, fake.path().join("sys/fs/cgroup")).unwrap();
        std::os::unix::fs::symlink("/proc", fake.path().join("proc")).unwrap();
        HostRoot::new(fake.path())
    };
    let Some(mut e) = load_or_skip(&host, Default::default()) else {
        return;
    };
    let uid = "0b6f7d1e-1111-4222-8333-444455556666";
    let id = "a".repeat(64);
    let (dir, mut guard) = pod_cgroup_dir(std::path::Path::new(v2_root), "test", uid, &id);
    let child = burn();
    let pid = child.id();
    guard.child = Some(child.into_child());
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    let v2_line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    eprintln!("v2 root {v2_root}; /proc/{pid}/cgroup:\n{v2_line}");
    e.collect().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let deltas = e.collect().unwrap();
    let mine = deltas
        .iter()
        .find(|d| d.pid == pid)
        .cloned()
        .expect("the burner is in the map");
    drop(guard);
    assert_eq!(mine.workload.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(mine.workload.pod_uid.as_deref(), Some(uid));
    assert!(mine.cpu_seconds > 0.2, "{}", mine.cpu_seconds);
}

#[test]
fn exited_processes_leave_the_collect_and_the_map() {
    let Some(mut e) = load() else { return };
    let mut child = burn();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(200));
    e.collect().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let running = e.collect().unwrap();
    assert!(running.iter().any(|d| d.pid == pid && d.cpu_seconds > 0.1));
    assert!(e.in_map(pid), "a running process is in the kernel map");
    child.kill().unwrap();
    child.wait().unwrap();
    // the CPU it used since the last collect may be reported once; then it is gone
    e.collect().unwrap();
    let after = e.collect().unwrap();
    assert!(
        !after.iter().any(|d| d.pid == pid),
        "exited pid {pid} still reported"
    );
    assert!(!e.in_map(pid), "exited pid {pid} still in the kernel map");
    assert!(!e.collect().unwrap().iter().any(|d| d.pid == pid));
    eprintln!(
        "kernel map holds {} processes; batch lookup {}",
        e.map_len(),
        e.reads_in_batches()
    );
    // this kernel (≥ 5.6) supports BPF_MAP_LOOKUP_BATCH; older ones fall back key by key
    if is_root() {
        assert!(e.reads_in_batches(), "batch lookup fell back");
    }
}

/// Run by `denied_load_reports_what_is_needed` under `setpriv` as nobody without capabilities.
#[test]
#[ignore = "helper: run unprivileged by denied_load_reports_what_is_needed"]
fn helper_load_unprivileged() {
    match Ebpf::load(&HostRoot::new("/")) {
        Ok(e) => println!("LOAD-OK: {}", e.program_kind()),
        Err(reason) => println!("LOAD-ERR: {reason}"),
    }
}

#[test]
fn denied_load_reports_what_is_needed() {
    let out = if is_root() {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_load_unprivileged",
                "--ignored",
                "--nocapture",
            ])
            .output()
            .expect("setpriv (util-linux)")
    } else {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_load_unprivileged",
                "--ignored",
                "--nocapture",
            ])
            .output()
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    if !is_root() && stdout.contains("LOAD-OK") {
        eprintln!("SKIPPED: this unprivileged user may load eBPF (CAP_BPF granted)");
        return;
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("LOAD-ERR: "))
        .unwrap_or_else(|| panic!("no load result: {stdout}\n{stderr}"));
    eprintln!("{line}");
    assert!(
        line.contains("CAP_BPF") && line.contains("CAP_PERFMON"),
        "{line}"
    );
    assert!(line.contains("CAP_SYS_ADMIN before Linux 5.8"), "{line}");
    // the kernel's own reason, not just aya's "with code -1"
    assert!(
        line.contains("Operation not permitted") || line.contains("Permission denied"),
        "{line}"
    );
}

/// The fallback for kernels without BTF: time between switches, charged to the task switched
/// out. Coarser per interval (a running task's current slice is counted at its next switch), so
/// the burner is measured over a longer window with a wider margin.
#[test]
fn tracepoint_fallback_measures_a_burner() {
    let opts = edgewatt_exporter::ebpf::LoadOptions {
        btf: false,
        ..Default::default()
    };
    let Some(mut e) = load_or_skip(&HostRoot::new("/"), opts) else {
        return;
    };
    assert_eq!(e.program_kind(), "tracepoint");
    // Switch-based accounting charges a running task only when it is switched out, so compare
    // over the burner's whole life (its exit is the last switch), not over a window that may
    // cut a time slice in two.
    e.collect().unwrap();
    let mut child = burn();
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    let before = 0.0;
    let after = proc_cpu_seconds(pid);
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(100));
    let ebpf: f64 = (0..2)
        .flat_map(|_| e.collect().unwrap())
        .filter(|d| d.pid == pid)
        .map(|d| d.cpu_seconds)
        .sum();
    let procfs: f64 = after - before;
    eprintln!("tracepoint: burner eBPF {ebpf:.3} s, procfs {procfs:.3} s");
    assert!(procfs > 1.0, "the burner should have run ~2 s: {procfs}");
    assert!(
        (ebpf - procfs).abs() / procfs < 0.15,
        "eBPF {ebpf:.3} s vs procfs {procfs:.3} s"
    );
}

/// A container cgroup of pod `uid` below a per-test directory of `root`
/// (`…/kubepods-pod<uid>.slice/cri-containerd-<id>.scope`, the systemd driver's shape); removed,
/// deepest first, when the guard drops.
fn pod_cgroup_dir(
    root: &std::path::Path,
    tag: &str,
    uid: &str,
    id: &str,
) -> (std::path::PathBuf, Cleanup) {
    let top = root.join(format!("edgewatt-{tag}-{}", std::process::id()));
    let pod = top.join(format!("kubepods-pod{}.slice", uid.replace('-', "_")));
    let dir = pod.join(format!("cri-containerd-{id}.scope"));
    std::fs::create_dir_all(&dir).expect("create a test cgroup (root)");
    let guard = Cleanup {
        child: None,
        dirs: vec![dir.clone(), pod, top],
    };
    (dir, guard)
}

/// The cgroup hierarchy that places processes here: v2, or the v1 `cpu` controller's.
fn cpu_cgroup_root() -> std::path::PathBuf {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup".into()
    } else {
        "/sys/fs/cgroup/cpu".into()
    }
}

/// A container's PID 1 starts as the runtime's helper (`runc:[2:INIT]`) and execs the
/// entrypoint: the name must follow the exec (sched_process_exec), not stay the first one seen.
#[test]
fn exec_renames_the_process() {
    let Some(mut e) = load() else { return };
    // The shell spins (so it is scheduled and seen) until the test has seen it, then execs: a
    // fixed spin count was over before the first collection on a fast, idle machine.
    let go = std::env::temp_dir().join(format!("edgewatt-exec-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let mut child = Command::new("sh")
        .args([
            "-c",
            "while [ ! -e \"$1\" ]; do :; done; exec yes > /dev/null",
            "sh",
        ])
        .arg(&go)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut names = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(d) = e.collect().unwrap().into_iter().find(|d| d.pid == pid) {
            if names.last() != Some(&d.comm.to_string()) {
                names.push(d.comm.to_string());
            }
            if &*d.comm == "sh" {
                std::fs::write(&go, b"").unwrap();
            }
            if &*d.comm == "yes" {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&go);
    assert_eq!(
        names.last().map(String::as_str),
        Some("yes"),
        "names seen: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "sh"),
        "the shell was seen before the exec: {names:?}"
    );
}

/// A full process map drops new processes; the drops are counted (exported) and their CPU time is
/// handed to attribution as unaccounted, never silently given to the processes that were counted.
#[test]
fn a_full_map_counts_what_it_drops() {
    use edgewatt_exporter::accounting::CpuAccounting as _;
    let opts = edgewatt_exporter::ebpf::LoadOptions {
        max_processes: Some(4),
        ..Default::default()
    };
    let Some(mut e) = load_or_skip(&HostRoot::new("/"), opts) else {
        return;
    };
    let mut burners: Vec<Burner> = (0..6).map(|_| burn()).collect();
    let mut lost = 0.0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        e.collect().unwrap();
        lost += e.unaccounted_cpu_seconds();
    }
    for b in &mut burners {
        let _ = b.kill();
        let _ = b.wait();
    }
    assert!(e.map_len() <= 4, "{}", e.map_len());
    let dropped = e.dropped_total().unwrap();
    eprintln!("dropped {dropped} events, {lost:.3} s of CPU time");
    assert!(dropped > 0, "six burners cannot fit a 4-entry map");
    assert!(lost > 0.05, "the dropped CPU time is reported: {lost}");
}

/// Pods come and go; the workloads interned for them must go with them.
#[test]
fn pod_churn_does_not_grow_the_exporter() {
    let Some(mut e) = load() else { return };
    let base = cpu_cgroup_root().join(format!("edgewatt-churn-{}", std::process::id()));
    let mut dirs = vec![base.clone()];
    let mut peak = 0;
    for round in 0..10 {
        let mut children = Vec::new();
        for i in 0..40 {
            let n = round * 40 + i;
            let pod = base.join(format!(
                "kubepods-pod{:08x}_0000_4000_8000_{:012x}.slice",
                n, n
            ));
            let dir = pod.join(format!("cri-containerd-{:064x}.scope", n + 1));
            std::fs::create_dir_all(&dir).expect("create a test cgroup (root)");
            let child = Command::new("sleep").arg("30").spawn().unwrap();
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
            children.push(child);
            dirs.push(pod);
            dirs.push(dir);
        }
        e.collect().unwrap();
        peak = peak.max(e.interned_workloads());
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        e.collect().unwrap();
        e.collect().unwrap();
    }
    let after = e.interned_workloads();
    let cleanup = Cleanup {
        child: None,
        dirs: dirs.into_iter().rev().collect(),
    };
    drop(cleanup);
    eprintln!("interned workloads: peak {peak}, after 400 pods came and went {after}");
    assert!(
        after < 400,
        "interned workloads grow with pod churn: {after}"
    );
}

/// A busy process moved into a pod's cgroup after it was first seen (the `runc init` window, a
/// systemd move; observed on this VM's cgroup v1 hierarchy) is attributed to the pod from then on.
#[test]
fn a_busy_process_moved_into_a_pod_is_reattributed() {
    let Some(mut e) = load() else { return };
    let uid = "7d3c2b1a-0000-4000-8000-00000000beef";
    let id = "c".repeat(64);
    let (dir, mut guard) = pod_cgroup_dir(&cpu_cgroup_root(), "move", uid, &id);
    let child = burn();
    let pid = child.id();
    guard.child = Some(child.into_child());
    let mut placed = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while placed.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        placed = e.collect().unwrap().into_iter().find(|d| d.pid == pid);
    }
    let first = placed.expect("the burner is seen");
    assert_eq!(first.workload.pod_uid, None, "started outside any pod");
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    let mut now = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        now = e.collect().unwrap().into_iter().find(|d| d.pid == pid);
        if now.as_ref().is_some_and(|d| d.workload.pod_uid.is_some()) {
            break;
        }
    }
    drop(guard);
    let now = now.expect("still running");
    assert_eq!(now.workload.pod_uid.as_deref(), Some(uid));
    assert_eq!(now.workload.container_id.as_deref(), Some(id.as_str()));
}

/// A process is named like `/proc/<pid>/comm` (its thread-group leader), not after whichever of
/// its threads the program happened to see run first (rustc's LTO workers, tokio's runtime
/// threads): here a process whose leader sleeps while a thread named `spinner` burns CPU is
/// already running when the program is attached, so the first thread seen is the spinner.
#[test]
fn processes_are_named_by_their_leader_not_a_thread() {
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import threading,ctypes\ndef spin():\n    ctypes.CDLL(None).prctl(15, b'spinner', 0, 0, 0)\n    while True: pass\nthreading.Thread(target=spin, daemon=True).start()\nimport time; time.sleep(60)",
        ])
        .spawn()
        .expect("/usr/bin/python3");
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1500));
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .collect();
    let Some(mut e) = load() else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let mut comm = None;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(d) = e.collect().unwrap().into_iter().find(|d| d.pid == pid) {
            comm = Some(d.comm.to_string());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(threads.iter().any(|t| t == "spinner\n"), "{threads:?}");
    assert_eq!(comm.as_deref(), Some("python3"), "threads: {threads:?}");
}
