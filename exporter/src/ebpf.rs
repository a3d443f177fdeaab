//! Per-process CPU accounting from the eBPF program in `ebpf/cpu_account.bpf.c`, loaded with
//! `aya`: the kernel charges on-CPU time to each process as the scheduler accounts it, and the
//! exporter reads one map per interval instead of thousands of `/proc/<pid>/stat` files.
//!
//! Needs: `CAP_BPF` + `CAP_PERFMON` (Linux ≥ 5.8; before that `CAP_SYS_ADMIN`), tracefs (mounted
//! here when missing and permitted: `mount -t tracefs nodev /sys/kernel/tracing`), and on kernels
//! before 5.11 a raised `RLIMIT_MEMLOCK` (done here). Where the kernel has BTF
//! (`/sys/kernel/btf/vmlinux`) `tp_btf/sched_stat_runtime` supplies the exact runtime per task
//! (plus `tp_btf/sched_switch` for hardware counters): [`Ebpf::program_kind`] is `tp_btf`.
//! Otherwise the classic `sched/sched_switch` tracepoint charges the time between switches to the
//! task switched out (`tracepoint`; coarser for CPU-bound tasks, exact over longer intervals).
//! Hardware cycle/instruction counters are opened where the machine offers them (VMs usually do
//! not; logged once at info, never fatal).
//!
//! Cgroups: on cgroup v2 the program's cgroup id is the inode number of the cgroup directory,
//! resolved by walking `/sys/fs/cgroup` (again only when an unknown id appears, at most once per
//! collect). On cgroup v1 `/proc/<pid>/cgroup` is read once per new process instead.
//! Any failure to load is returned as one readable reason; `--attribution auto` then falls back
//! to procfs (see `app.rs`).

use std::collections::HashMap as StdHashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{HashMap, Map, MapData};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf as AyaEbpf, EbpfLoader};

use crate::accounting::{CpuAccounting, ProcessDelta};
use crate::cgroup::{self, Workload};
use crate::source::SourceError;
use crate::sysfs::{read_string, HostRoot};

/// The compiled program (committed; `make ebpf` rebuilds it, `make ebpf-check` verifies it).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../ebpf/cpu_account.bpf.o");

/// Mirror of `struct proc_stats` in the C program.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    pub cpu_ns: u64,
    pub cycles: u64,
    pub instructions: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pad: u32,
    pub comm: [u8; 16],
}

// SAFETY: plain old data, `repr(C)`, no padding beyond the explicit field, any bit pattern valid.
unsafe impl aya::Pod for ProcStats {}

struct Entry {
    cpu_ns: u64,
    comm: Arc<str>,
    workload: Arc<Workload>,
    cgroup_id: u64,
}

pub struct Ebpf {
    _bpf: AyaEbpf,
    stats: HashMap<MapData, u32, ProcStats>,
    /// The same map's fd, for `BPF_MAP_LOOKUP_BATCH` (aya 0.13 has no batch operations).
    stats_fd: OwnedFd,
    /// Whether batch lookup works here (Linux ≥ 5.6); per-key iteration otherwise.
    batch: bool,
    batch_keys: Vec<u32>,
    batch_values: Vec<ProcStats>,
    kind: &'static str,
    hw_counters: bool,
    proc_dir: PathBuf,
    cgroup_root: PathBuf,
    cgroup_v2: bool,
    entries: StdHashMap<u32, Entry>,
    /// cgroup v2 id (directory inode) → path relative to the cgroup root.
    cgroup_paths: StdHashMap<u64, String>,
    workloads: StdHashMap<String, Arc<Workload>>,
}

fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct; failure only means the old limit stays.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

fn ensure_tracefs() {
    if Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
    }
}

/// The error and its whole source chain: aya's own messages stop at a code (`failed to create map
/// ... with code -1`), the `io::Error` underneath says why (`Operation not permitted`).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Every load/attach failure names what was attempted, what is needed, and the kernel's reason.
fn needs(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    format!(
        "{what} needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN before Linux 5.8) and tracefs: {}",
        chain(e)
    )
}

/// `perf_event_open` for a hardware counter on one CPU; `Err(errno text)` when unavailable.
fn open_hw_counter(cpu: i32, config: u64) -> Result<i32, String> {
    #[repr(C)]
    struct PerfEventAttr {
        type_: u32,
        size: u32,
        config: u64,
        rest: [u64; 14],
    }
    let attr = PerfEventAttr {
        type_: 0, /* PERF_TYPE_HARDWARE */
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        rest: [0; 14],
    };
    // SAFETY: perf_event_open(attr, pid = -1, cpu, group_fd = -1, flags = 0) with a valid attr.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1i32,
            cpu,
            -1i32,
            0u64,
        )
    };
    if fd < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(fd as i32)
    }
}

/// `bpf(BPF_MAP_UPDATE_ELEM)` of `cpu → fd` into a PERF_EVENT_ARRAY (aya exposes no setter).
fn set_perf_fd(map_fd: i32, cpu: u32, fd: i32) -> Result<(), String> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let value = fd as u32;
    let attr = Attr {
        map_fd: map_fd as u32,
        pad: 0,
        key: &cpu as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    // SAFETY: BPF_MAP_UPDATE_ELEM (2) with pointers to live locals of the map's key/value size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            2i32,
            &attr as *const Attr,
            std::mem::size_of::<Attr>() as u32,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(())
    }
}

/// Opens cycles and instructions on every online CPU and hands them to the program. On failure
/// the reason is returned; counters already handed over stay (harmless: `has_hw_counters` is
/// false and nothing reads the cycle/instruction fields then).
fn attach_hw_counters(bpf: &mut AyaEbpf) -> Result<(), String> {
    let cpus = aya::util::online_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
    for (map_name, config) in [("cycles", 0u64), ("instructions", 1u64)] {
        let map_fd = match bpf.map(map_name) {
            Some(Map::PerfEventArray(m)) => m.fd().as_fd_raw(),
            _ => return Err(format!("map {map_name} missing from the object")),
        };
        for &cpu in &cpus {
            let fd = open_hw_counter(cpu as i32, config)
                .map_err(|e| format!("perf_event_open({map_name}, cpu {cpu}): {e}"))?;
            let set = set_perf_fd(map_fd, cpu, fd);
            // The map holds its own reference to the perf event.
            // SAFETY: fd was returned by perf_event_open above and is not used after this.
            unsafe { libc::close(fd) };
            set.map_err(|e| format!("storing the {map_name} counter of cpu {cpu}: {e}"))?;
        }
    }
    Ok(())
}

const ZERO_STATS: ProcStats = ProcStats {
    cpu_ns: 0,
    cycles: 0,
    instructions: 0,
    cgroup_id: 0,
    tgid: 0,
    pad: 0,
    comm: [0; 16],
};

/// The whole `proc_stats` map through `bpf(BPF_MAP_LOOKUP_BATCH)` (Linux ≥ 5.6): one syscall
/// per 4 096 entries instead of two per entry with aya's key-by-key iteration.
/// `Err(errno)` when the kernel refuses (then `out` may hold a partial result: discard it).
fn lookup_batch(
    map_fd: i32,
    keys: &mut Vec<u32>,
    values: &mut Vec<ProcStats>,
    out: &mut Vec<(u32, ProcStats)>,
) -> Result<(), i32> {
    #[repr(C)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const CHUNK: usize = 4096;
    const BPF_MAP_LOOKUP_BATCH: i32 = 24;
    keys.resize(CHUNK, 0);
    values.resize(CHUNK, ZERO_STATS);
    // The batch token is opaque (a bucket index for hash maps): room for a u64 is enough.
    let mut token = 0u64;
    let mut next = 0u64;
    let mut first = true;
    loop {
        let mut attr = Attr {
            in_batch: if first {
                0
            } else {
                &token as *const u64 as u64
            },
            out_batch: &mut next as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map_fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the kernel writes at most `count` keys (4 bytes) and values (the map's value
        // size, == size_of::<ProcStats>()) into buffers of CHUNK elements, the token into
        // `next`, and the returned count into `attr`; all outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut Attr,
                std::mem::size_of::<Attr>() as u32,
            )
        };
        let errno = if r < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        if r < 0 && errno != libc::ENOENT {
            return Err(errno);
        }
        let n = (attr.count as usize).min(CHUNK);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        if errno == libc::ENOENT {
            return Ok(()); // the end of the map
        }
        token = next;
        first = false;
    }
}

/// Process ids listed in `/proc` (thread-group ids only).
fn live_pids(proc_dir: &Path) -> std::collections::HashSet<u32> {
    std::fs::read_dir(proc_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

trait RawFdOf {
    fn as_fd_raw(&self) -> i32;
}
impl RawFdOf for aya::maps::MapFd {
    fn as_fd_raw(&self) -> i32 {
        self.as_fd().as_raw_fd()
    }
}

impl Ebpf {
    /// Loads and attaches the program. The error says what failed and what is needed.
    pub fn load(root: &HostRoot) -> Result<Self, String> {
        Self::load_with(root, true)
    }

    /// [`Ebpf::load`], with `use_btf: false` forcing the classic `sched/sched_switch`
    /// tracepoint even where BTF is available (tests; kernels whose `tp_btf` misbehaves).
    pub fn load_with(root: &HostRoot, use_btf: bool) -> Result<Self, String> {
        raise_memlock();
        ensure_tracefs();
        let btf = Btf::from_sys_fs().ok();
        let mut bpf = EbpfLoader::new()
            .btf(btf.as_ref())
            .load(OBJECT)
            .map_err(|e| needs("loading the eBPF program", &e))?;
        let hw_counters = match attach_hw_counters(&mut bpf) {
            Ok(()) => true,
            Err(reason) => {
                tracing::info!("hardware counters not available: {reason}; CPU time only");
                false
            }
        };
        let mut kind = "tp_btf";
        let btf_attach = match &btf {
            Some(btf) if use_btf => (|| -> Result<(), String> {
                for (program, tracepoint) in [
                    ("edgewatt_stat_runtime_btf", "sched_stat_runtime"),
                    ("edgewatt_sched_switch_btf", "sched_switch"),
                ] {
                    // sched_switch only carries the hardware counters: without them it would
                    // cost every context switch for nothing.
                    if tracepoint == "sched_switch" && !hw_counters {
                        continue;
                    }
                    let prog: &mut BtfTracePoint = bpf
                        .program_mut(program)
                        .ok_or(format!("program {program} missing"))?
                        .try_into()
                        .map_err(|e| format!("{e}"))?;
                    prog.load(tracepoint, btf)
                        .map_err(|e| needs(&format!("loading tp_btf/{tracepoint}"), &e))?;
                    prog.attach()
                        .map_err(|e| needs(&format!("attaching tp_btf/{tracepoint}"), &e))?;
                }
                Ok(())
            })(),
            Some(_) => Err("tp_btf not requested".into()),
            None => Err("kernel has no BTF (/sys/kernel/btf/vmlinux)".into()),
        };
        if let Err(reason) = btf_attach {
            // A half-attached pair would charge time twice with the fallback: detach both.
            for program in ["edgewatt_stat_runtime_btf", "edgewatt_sched_switch_btf"] {
                if let Some(p) = bpf.program_mut(program) {
                    let p: Result<&mut BtfTracePoint, _> = p.try_into();
                    if let Ok(p) = p {
                        let _ = p.unload();
                    }
                }
            }
            tracing::info!(%reason, "tp_btf (sched_stat_runtime) unavailable; using the sched/sched_switch tracepoint (time between switches)");
            kind = "tracepoint";
            let prog: &mut TracePoint = bpf
                .program_mut("edgewatt_sched_switch_tp")
                .ok_or("program edgewatt_sched_switch_tp missing")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            prog.load()
                .map_err(|e| needs("loading the sched/sched_switch tracepoint program", &e))?;
            prog.attach("sched", "sched_switch").map_err(|e| {
                needs(
                    "attaching to sched/sched_switch (tracefs at /sys/kernel/tracing)",
                    &e,
                )
            })?;
        }
        let map = bpf.take_map("proc_stats").ok_or("map proc_stats missing")?;
        let stats_fd = match &map {
            Map::LruHashMap(data) | Map::HashMap(data) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("duplicating the proc_stats map fd: {e}"))?,
            _ => return Err("map proc_stats is not a hash map".into()),
        };
        let stats: HashMap<MapData, u32, ProcStats> =
            HashMap::try_from(map).map_err(|e| e.to_string())?;
        let cgroup_root = root.path("/sys/fs/cgroup");
        let cgroup_v2 = cgroup_root.join("cgroup.controllers").exists();
        Ok(Self {
            _bpf: bpf,
            stats,
            stats_fd,
            batch: true,
            batch_keys: Vec::new(),
            batch_values: Vec::new(),
            kind,
            hw_counters,
            proc_dir: root.path("/proc"),
            cgroup_root,
            cgroup_v2,
            entries: StdHashMap::new(),
            cgroup_paths: StdHashMap::new(),
            workloads: StdHashMap::new(),
        })
    }

    /// `tp_btf` (runtime from `sched_stat_runtime`) or `tracepoint` (time between switches).
    pub fn program_kind(&self) -> &'static str {
        self.kind
    }

    /// Whether cycles/instructions perf events were opened on every CPU (rarely on VMs).
    pub fn has_hw_counters(&self) -> bool {
        self.hw_counters
    }

    /// Whether the kernel map still holds `tgid` (exited processes are deleted at the next
    /// collect so the LRU map does not fill with them).
    pub fn in_map(&self, tgid: u32) -> bool {
        self.stats.get(&tgid, 0).is_ok()
    }

    /// Whether the map is read with `BPF_MAP_LOOKUP_BATCH` (false after the kernel refused it).
    pub fn reads_in_batches(&self) -> bool {
        self.batch
    }

    /// Number of processes the kernel map holds.
    pub fn map_len(&self) -> usize {
        self.stats.keys().filter(|k| k.is_ok()).count()
    }

    /// Rebuilds the cgroup id → path table (v2: the id is the directory's inode number).
    fn walk_cgroups(&mut self) {
        self.cgroup_paths.clear();
        let mut stack = vec![self.cgroup_root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir
                .strip_prefix(&self.cgroup_root)
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_default();
            self.cgroup_paths
                .insert(meta.ino(), if rel == "/" { "/".into() } else { rel });
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }

    fn intern(&mut self, path: &str) -> Arc<Workload> {
        if let Some(w) = self.workloads.get(path) {
            return w.clone();
        }
        let w = Arc::new(cgroup::parse_path(path));
        self.workloads.insert(path.to_string(), w.clone());
        w
    }

    fn workload_of(&mut self, tgid: u32, cgroup_id: u64, walked: &mut bool) -> Arc<Workload> {
        if !self.cgroup_v2 {
            // cgroup v1: the id is not an inode of one hierarchy; ask procfs once per process.
            let text = read_string(&self.proc_dir.join(tgid.to_string()).join("cgroup"))
                .unwrap_or_default();
            let path = cgroup::select_path(&text).to_string();
            return self.intern(&path);
        }
        if !self.cgroup_paths.contains_key(&cgroup_id) && !*walked {
            self.walk_cgroups();
            *walked = true;
        }
        let path = self
            .cgroup_paths
            .get(&cgroup_id)
            .cloned()
            .unwrap_or_default();
        self.intern(&path)
    }
}

fn comm_of(raw: &[u8; 16]) -> Arc<str> {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Arc::from(String::from_utf8_lossy(&raw[..end]).as_ref())
}

impl CpuAccounting for Ebpf {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn collect(&mut self) -> Result<Vec<ProcessDelta>, SourceError> {
        let mut snapshot: Vec<(u32, ProcStats)> = Vec::with_capacity(self.entries.len() + 64);
        if self.batch {
            let fd = self.stats_fd.as_raw_fd();
            if let Err(errno) = lookup_batch(
                fd,
                &mut self.batch_keys,
                &mut self.batch_values,
                &mut snapshot,
            ) {
                tracing::info!(
                    errno,
                    "BPF_MAP_LOOKUP_BATCH unavailable; reading the map key by key"
                );
                self.batch = false;
                self.batch_keys = Vec::new();
                self.batch_values = Vec::new();
                snapshot.clear();
            }
        }
        if !self.batch {
            snapshot.extend(self.stats.iter().filter_map(|r| r.ok()));
        }
        // Idle processes may have exited. With many, one read of /proc beats a stat each.
        let mut live: Option<std::collections::HashSet<u32>> = None;
        let many = snapshot.len() > 256;
        let mut walked = false;
        let mut out = Vec::with_capacity(snapshot.len());
        let mut seen = std::collections::HashSet::with_capacity(snapshot.len());
        let mut gone = Vec::new();
        for (tgid, s) in snapshot {
            let known = self.entries.get(&tgid).map(|e| (e.cpu_ns, e.cgroup_id));
            let delta_ns = match known {
                Some((prev, _)) => s.cpu_ns.saturating_sub(prev),
                // The map counts from attach, so a first sighting's total is all new time: a
                // process that starts and exits between two collections is still charged
                // (procfs cannot see it at all).
                None => s.cpu_ns,
            };
            // A process that did not run may have exited: check only those (cheap for busy ones).
            let exists = |live: &mut Option<std::collections::HashSet<u32>>| {
                if many {
                    live.get_or_insert_with(|| live_pids(&self.proc_dir))
                        .contains(&tgid)
                } else {
                    self.proc_dir.join(tgid.to_string()).exists()
                }
            };
            if delta_ns == 0 && !exists(&mut live) {
                gone.push(tgid);
                continue;
            }
            let needs_workload = known.is_none_or(|(_, cg)| cg != s.cgroup_id);
            if needs_workload {
                let workload = self.workload_of(tgid, s.cgroup_id, &mut walked);
                self.entries.insert(
                    tgid,
                    Entry {
                        cpu_ns: s.cpu_ns,
                        comm: comm_of(&s.comm),
                        workload,
                        cgroup_id: s.cgroup_id,
                    },
                );
            }
            let e = self.entries.get_mut(&tgid).expect("inserted above");
            e.cpu_ns = s.cpu_ns;
            seen.insert(tgid);
            out.push(ProcessDelta {
                pid: tgid,
                comm: e.comm.clone(),
                workload: e.workload.clone(),
                cpu_seconds: delta_ns as f64 / 1e9,
            });
        }
        for tgid in gone {
            let _ = self.stats.remove(&tgid);
            self.entries.remove(&tgid);
        }
        self.entries.retain(|k, _| seen.contains(k));
        Ok(out)
    }
}
