//! Builders for sysfs/procfs trees in the exact kernel formats, for tests, benchmarks and the
//! end-to-end harness (which scripts battery and power files over time under `--host-root`).
//!
//! Values are written the way the kernel shows them: one decimal number or word and a newline.

use std::path::{Path, PathBuf};

/// A fake host root. Files are plain files; rewrite them to move time forward.
#[derive(Debug, Clone)]
pub struct FixtureTree {
    root: PathBuf,
}

/// Writes through a temporary file and a rename: a reader racing the test sees the old or the
/// new content, never a truncated file — as with the kernel, whose small sysfs/procfs files are
/// produced whole on each read. (A torn `/proc/stat` once cost the estimator a cycle in CI.)
fn write(path: &Path, value: impl std::fmt::Display) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create fixture dir");
    }
    let name = path.file_name().expect("fixture path names a file");
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, format!("{value}\n")).expect("write fixture file");
    std::fs::rename(&tmp, path).expect("rename fixture file");
}

/// Battery files; `None` leaves the attribute out (drivers differ in what they offer).
#[derive(Debug, Clone, Default)]
pub struct BatteryFiles {
    pub status: &'static str,
    pub capacity: Option<u64>,
    pub energy_now_uwh: Option<u64>,
    pub energy_full_uwh: Option<u64>,
    pub charge_now_uah: Option<u64>,
    pub charge_full_uah: Option<u64>,
    pub voltage_now_uv: Option<u64>,
    pub power_now_uw: Option<u64>,
    pub current_now_ua: Option<i64>,
}

impl FixtureTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let t = Self { root: root.into() };
        std::fs::create_dir_all(t.root.join("proc")).expect("create fixture root");
        t
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Writes any attribute file.
    pub fn set(&self, rel: &str, value: impl std::fmt::Display) {
        write(&self.path(rel), value);
    }

    /// A RAPL zone `intel-rapl:<id>` (`id` like `0` or `0:1`).
    pub fn rapl_zone(&self, id: &str, name: &str, energy_uj: u64, max_range_uj: u64) {
        let dir = format!("sys/class/powercap/intel-rapl:{id}");
        self.set(&format!("{dir}/name"), name);
        self.set(&format!("{dir}/energy_uj"), energy_uj);
        self.set(&format!("{dir}/max_energy_range_uj"), max_range_uj);
        self.set(&format!("{dir}/enabled"), 1);
    }

    pub fn rapl_energy(&self, id: &str, energy_uj: u64) {
        self.set(
            &format!("sys/class/powercap/intel-rapl:{id}/energy_uj"),
            energy_uj,
        );
    }

    pub fn battery(&self, name: &str, b: &BatteryFiles) {
        let dir = format!("sys/class/power_supply/{name}");
        self.set(&format!("{dir}/type"), "Battery");
        self.set(&format!("{dir}/present"), 1);
        self.set(&format!("{dir}/status"), b.status);
        let opt = |attr: &str, v: Option<String>| match v {
            Some(v) => self.set(&format!("{dir}/{attr}"), v),
            None => {
                let _ = std::fs::remove_file(self.path(&format!("{dir}/{attr}")));
            }
        };
        opt("capacity", b.capacity.map(|v| v.to_string()));
        opt("energy_now", b.energy_now_uwh.map(|v| v.to_string()));
        opt("energy_full", b.energy_full_uwh.map(|v| v.to_string()));
        opt("charge_now", b.charge_now_uah.map(|v| v.to_string()));
        opt("charge_full", b.charge_full_uah.map(|v| v.to_string()));
        opt("voltage_now", b.voltage_now_uv.map(|v| v.to_string()));
        opt("power_now", b.power_now_uw.map(|v| v.to_string()));
        opt("current_now", b.current_now_ua.map(|v| v.to_string()));
    }

    /// A mains adapter (`AC`, `ADP1`).
    pub fn mains(&self, name: &str, online: bool) {
        let dir = format!("sys/class/power_supply/{name}");
        self.set(&format!("{dir}/type"), "Mains");
        self.set(&format!("{dir}/online"), u8::from(online));
    }

    /// `/proc/stat` with the aggregate line (ticks) and `cpus` per-CPU lines.
    pub fn proc_stat(&self, busy_ticks: u64, idle_ticks: u64) {
        let (user, system) = (busy_ticks * 3 / 4, busy_ticks - busy_ticks * 3 / 4);
        self.set(
            "proc/stat",
            format!("cpu  {user} 0 {system} {idle_ticks} 0 0 0 0 0 0\ncpu0 {user} 0 {system} {idle_ticks} 0 0 0 0 0 0\nintr 0\nctxt 0\nbtime 0\nprocesses 1\nprocs_running 1\nprocs_blocked 0"),
        );
    }

    /// `/proc/<pid>/stat` and `/proc/<pid>/cgroup` (v2 line) for a process.
    pub fn process(&self, pid: u32, comm: &str, cpu_ticks: u64, cgroup: &str) {
        self.process_ticks(pid, comm, cpu_ticks);
        self.set(&format!("proc/{pid}/cgroup"), format!("0::{cgroup}"));
    }

    /// Updates only `/proc/<pid>/stat` (utime = ticks, stime = 0, starttime = pid).
    pub fn process_ticks(&self, pid: u32, comm: &str, cpu_ticks: u64) {
        self.set(
            &format!("proc/{pid}/stat"),
            format!("{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {cpu_ticks} 0 0 0 20 0 1 0 {pid} 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"),
        );
    }

    pub fn remove_process(&self, pid: u32) {
        let _ = std::fs::remove_dir_all(self.path(&format!("proc/{pid}")));
    }

    /// `/proc/cpuinfo` for `threads` logical CPUs of `model`.
    pub fn cpuinfo(&self, model: &str, threads: u32, hypervisor: bool) {
        let flags = if hypervisor {
            "fpu sse2 hypervisor"
        } else {
            "fpu sse2"
        };
        let text: String = (0..threads)
            .map(|i| format!("processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\nphysical id\t: 0\ncore id\t: {i}\nflags\t\t: {flags}\n\n"))
            .collect();
        self.set("proc/cpuinfo", text.trim_end());
    }
}

/// Copies a directory tree (tests serve private, editable copies of Redfish mockups).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create copy");
    for e in std::fs::read_dir(src).expect("read source tree").flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).expect("copy file");
        }
    }
}

/// Pod cgroup path (containerd, systemd driver, burstable QoS) for `uid` and a 64-hex `container`.
pub fn pod_cgroup(uid: &str, container: &str) -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container}.scope",
        uid.replace('-', "_")
    )
}

/// A deterministic pod UID and container id for index `i`.
pub fn ids(i: usize) -> (String, String) {
    (
        format!("{:08x}-0000-4000-8000-{:012x}", i, i),
        format!("{:064x}", i + 1),
    )
}
