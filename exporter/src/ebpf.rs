//! Per-process CPU accounting from the eBPF program in `ebpf/cpu_account.bpf.c`, loaded with
//! `aya`: the kernel charges on-CPU time to each process as the scheduler accounts it, and the
//! exporter reads one map per interval instead of thousands of `/proc/<pid>/stat` files.
//!
//! Needs: `CAP_BPF` + `CAP_PERFMON` (Linux ≥ 5.8; before that `CAP_SYS_ADMIN`), tracefs (mounted
//! here when missing and permitted: `mount -t tracefs nodev /sys/kernel/tracing`), and on kernels
//! before 5.11 a raised `RLIMIT_MEMLOCK` (done here). Where the kernel has BTF
//! (`/sys/kernel/btf/vmlinux`) `tp_btf/sched_stat_runtime` supplies the exact runtime per task:
//! [`Ebpf::program_kind`] is `tp_btf`. Otherwise the classic `sched/sched_switch` tracepoint
//! charges the time between switches to the task switched out (`tracepoint`; coarser for
//! CPU-bound tasks, exact over longer intervals). `sched/sched_process_exec` refreshes a process's
//! name and cgroup when it execs. No hardware counters are opened: nothing in the attribution would
//! use them, and reading them cost every context switch.
//!
//! The process map is a plain hash: when it is full, new processes are not added and their time
//! is counted as dropped ([`CpuAccounting::dropped_total`], exported), and that CPU time's share
//! of the energy stays unattributed ([`CpuAccounting::unaccounted_cpu_seconds`]).
//!
//! Cgroups: on cgroup v2 the program's cgroup id is the inode number of the cgroup directory,
//! resolved by walking `/sys/fs/cgroup` (again only when an unknown id appears, at most once per
//! collect); the program keeps the id current, so a process that moves is re-attributed. On cgroup
//! v1 `/proc/<pid>/cgroup` is read when a process is first seen and again, while it uses CPU, every
//! interval while it is in no pod and every [`crate::procfs::RECHECK_INTERVALS`] otherwise. The
//! interned workloads are pruned as processes go, so pod churn does not grow the exporter.
//! Any failure to load is returned as one readable reason; `--attribution auto` then falls back
//! to procfs (see `app.rs`).

use std::collections::HashMap as StdHashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf as AyaEbpf, EbpfLoader};

use crate::accounting::{CpuAccounting, ProcessDelta};
use crate::cgroup::{self, Workload};
use crate::source::{error_chain, SourceError};
use crate::sysfs::{read_string, HostRoot};

/// The compiled program (committed; `make ebpf` rebuilds it, `make ebpf-check` verifies it).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../ebpf/cpu_account.bpf.o");

/// Mirror of `struct proc_stats` in the C program.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    pub cpu_ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pad: u32,
    pub comm: [u8; 16],
}

// SAFETY: plain old data, `repr(C)`, no padding beyond the explicit field, any bit pattern valid.
unsafe impl aya::Pod for ProcStats {}

/// Mirror of `struct drops` in the C program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Drops {
    pub events: u64,
    pub ns: u64,
}

// SAFETY: as above.
unsafe impl aya::Pod for Drops {}

struct Entry {
    cpu_ns: u64,
    comm_raw: [u8; 16],
    comm: Arc<str>,
    workload: Arc<Workload>,
    cgroup_id: u64,
    /// Interval of the last cgroup resolution.
    resolved_at: u64,
    /// The cgroup id was not found under the cgroup root (v2).
    unresolved: bool,
}

/// How to load (tests shrink the process map to fill it).
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// `false` forces the classic `sched/sched_switch` tracepoint even where BTF is available.
    pub btf: bool,
    /// Size of the process map (default 32 768).
    pub max_processes: Option<u32>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            btf: true,
            max_processes: None,
        }
    }
}

pub struct Ebpf {
    _bpf: AyaEbpf,
    stats: HashMap<MapData, u32, ProcStats>,
    /// The same map's fd, for `BPF_MAP_LOOKUP_BATCH` (aya 0.13 has no batch operations).
    stats_fd: OwnedFd,
    drops: PerCpuArray<MapData, Drops>,
    /// Totals of `drops` at the last collect, and the CPU time dropped since the one before.
    dropped: Drops,
    dropped_since_last: f64,
    /// Whether batch lookup works here (Linux ≥ 5.6); per-key iteration otherwise.
    batch: bool,
    batch_keys: Vec<u32>,
    batch_values: Vec<ProcStats>,
    kind: &'static str,
    proc_dir: PathBuf,
    cgroup_root: PathBuf,
    cgroup_v2: bool,
    entries: StdHashMap<u32, Entry>,
    /// cgroup v2 id (directory inode) → path relative to the cgroup root.
    cgroup_paths: StdHashMap<u64, String>,
    workloads: StdHashMap<String, Arc<Workload>>,
    generation: u64,
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

/// Every load/attach failure names what was attempted, what is needed, and the kernel's reason.
fn needs(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    format!(
        "{what} needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN before Linux 5.8) and tracefs: {}",
        error_chain(e)
    )
}

const ZERO_STATS: ProcStats = ProcStats {
    cpu_ns: 0,
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

/// Loads and attaches `tp_btf/sched_stat_runtime`; `Err` says why it cannot be used.
fn attach_btf(bpf: &mut AyaEbpf, btf: &Btf) -> Result<(), String> {
    let prog: &mut BtfTracePoint = bpf
        .program_mut("edgewatt_stat_runtime_btf")
        .ok_or("program edgewatt_stat_runtime_btf missing")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    prog.load("sched_stat_runtime", btf)
        .map_err(|e| needs("loading tp_btf/sched_stat_runtime", &e))?;
    prog.attach()
        .map_err(|e| needs("attaching tp_btf/sched_stat_runtime", &e))?;
    Ok(())
}

/// Loads and attaches one classic tracepoint program.
fn attach_tracepoint(bpf: &mut AyaEbpf, program: &str, event: &str) -> Result<(), String> {
    let prog: &mut TracePoint = bpf
        .program_mut(program)
        .ok_or(format!("program {program} missing"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    prog.load()
        .map_err(|e| needs(&format!("loading the sched/{event} tracepoint program"), &e))?;
    prog.attach("sched", event).map_err(|e| {
        needs(
            &format!("attaching to sched/{event} (tracefs at /sys/kernel/tracing)"),
            &e,
        )
    })?;
    Ok(())
}

impl Ebpf {
    /// Loads and attaches the program. The error says what failed and what is needed.
    pub fn load(root: &HostRoot) -> Result<Self, String> {
        Self::load_opts(root, LoadOptions::default())
    }

    /// [`Ebpf::load`], with `use_btf: false` forcing the classic `sched/sched_switch`
    /// tracepoint even where BTF is available (tests; kernels whose `tp_btf` misbehaves).
    pub fn load_with(root: &HostRoot, use_btf: bool) -> Result<Self, String> {
        Self::load_opts(
            root,
            LoadOptions {
                btf: use_btf,
                ..LoadOptions::default()
            },
        )
    }

    pub fn load_opts(root: &HostRoot, opts: LoadOptions) -> Result<Self, String> {
        raise_memlock();
        ensure_tracefs();
        let btf = Btf::from_sys_fs().ok();
        let mut loader = EbpfLoader::new();
        loader.btf(btf.as_ref());
        if let Some(n) = opts.max_processes {
            loader.set_max_entries("proc_stats", n.max(1));
        }
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| needs("loading the eBPF program", &e))?;
        let mut kind = "tp_btf";
        let btf_attach = match &btf {
            Some(btf) if opts.btf => attach_btf(&mut bpf, btf),
            Some(_) => Err("tp_btf not requested".into()),
            None => Err("kernel has no BTF (/sys/kernel/btf/vmlinux)".into()),
        };
        if let Err(reason) = btf_attach {
            tracing::info!(%reason, "tp_btf (sched_stat_runtime) unavailable; using the sched/sched_switch tracepoint (time between switches)");
            kind = "tracepoint";
            attach_tracepoint(&mut bpf, "edgewatt_sched_switch_tp", "sched_switch")?;
        }
        if let Err(reason) =
            attach_tracepoint(&mut bpf, "edgewatt_process_exec", "sched_process_exec")
        {
            tracing::warn!(%reason, "process names are not refreshed on exec (a process keeps the name it had when first seen)");
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
        let drops = bpf.take_map("drops").ok_or("map drops missing")?;
        let drops: PerCpuArray<MapData, Drops> =
            PerCpuArray::try_from(drops).map_err(|e| e.to_string())?;
        let cgroup_root = root.path("/sys/fs/cgroup");
        let cgroup_v2 = cgroup_root.join("cgroup.controllers").exists();
        Ok(Self {
            _bpf: bpf,
            stats,
            stats_fd,
            drops,
            dropped: Drops::default(),
            dropped_since_last: 0.0,
            batch: true,
            batch_keys: Vec::new(),
            batch_values: Vec::new(),
            kind,
            proc_dir: root.path("/proc"),
            cgroup_root,
            cgroup_v2,
            entries: StdHashMap::new(),
            cgroup_paths: StdHashMap::new(),
            workloads: StdHashMap::new(),
            generation: 0,
        })
    }

    /// `tp_btf` (runtime from `sched_stat_runtime`) or `tracepoint` (time between switches).
    pub fn program_kind(&self) -> &'static str {
        self.kind
    }

    /// Whether the kernel map still holds `tgid` (exited processes are deleted at the next
    /// collect so the map does not fill with them).
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

    /// Number of distinct workloads (cgroup paths) held in memory; bounded by the live processes'.
    pub fn interned_workloads(&self) -> usize {
        self.workloads.len()
    }

    /// Sums the per-CPU drop counters.
    fn read_drops(&self) -> Drops {
        let mut total = Drops::default();
        if let Ok(values) = self.drops.get(&0, 0) {
            for d in values.iter() {
                total.events += d.events;
                total.ns += d.ns;
            }
        }
        total
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

    /// The process's workload and whether its cgroup was found.
    fn workload_of(
        &mut self,
        tgid: u32,
        cgroup_id: u64,
        walked: &mut bool,
    ) -> (Arc<Workload>, bool) {
        if !self.cgroup_v2 {
            // cgroup v1: the id is not an inode of one hierarchy; ask procfs.
            let text = read_string(&self.proc_dir.join(tgid.to_string()).join("cgroup"))
                .unwrap_or_default();
            let path = cgroup::select_path(&text).to_string();
            return (self.intern(&path), !text.is_empty());
        }
        if !self.cgroup_paths.contains_key(&cgroup_id) && !*walked {
            self.walk_cgroups();
            *walked = true;
        }
        match self.cgroup_paths.get(&cgroup_id).cloned() {
            Some(path) => (self.intern(&path), true),
            None => (self.intern(""), false),
        }
    }

    /// Whether a process that used CPU should have its workload resolved again: on v2 the
    /// program keeps the cgroup id current, so only when its id could not be found; on v1 every
    /// interval while it is in no pod, and every few otherwise.
    fn stale_workload(&self, e: &Entry) -> bool {
        if self.cgroup_v2 {
            e.unresolved
        } else {
            e.workload.pod_uid.is_none()
                || self.generation.saturating_sub(e.resolved_at) >= crate::procfs::RECHECK_INTERVALS
        }
    }

    /// The whole map, in batches where the kernel can.
    fn read_map(&mut self) -> Vec<(u32, ProcStats)> {
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
        snapshot
    }
}

fn comm_of(raw: &[u8; 16]) -> Arc<str> {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Arc::from(String::from_utf8_lossy(&raw[..end]).as_ref())
}

/// The process's name as `/proc/<tgid>/comm` gives it: the thread-group leader's. The program
/// records the name of whichever thread it first saw run (a worker thread's, for a multithreaded
/// process), so that one is only the fallback for a process already gone.
fn process_comm(proc_dir: &Path, tgid: u32, raw: &[u8; 16]) -> Arc<str> {
    match std::fs::read(proc_dir.join(tgid.to_string()).join("comm")) {
        Ok(mut bytes) => {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            Arc::from(String::from_utf8_lossy(&bytes).as_ref())
        }
        Err(_) => comm_of(raw),
    }
}

impl CpuAccounting for Ebpf {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn collect(&mut self) -> Result<Vec<ProcessDelta>, SourceError> {
        self.generation += 1;
        let gen = self.generation;
        let snapshot = self.read_map();
        let drops = self.read_drops();
        self.dropped_since_last = drops.ns.saturating_sub(self.dropped.ns) as f64 / 1e9;
        if drops.events > self.dropped.events && self.dropped.events == 0 {
            tracing::warn!(
                events = drops.events,
                "eBPF process map full: new processes are not tracked and their CPU time stays unattributed (edgewatt_exporter_ebpf_dropped_events_total)"
            );
        }
        self.dropped = drops;
        // Idle processes may have exited. With many, one read of /proc beats a stat each.
        let mut live: Option<std::collections::HashSet<u32>> = None;
        let many = snapshot.len() > 256;
        let mut walked = false;
        let mut out = Vec::with_capacity(snapshot.len());
        let mut seen = std::collections::HashSet::with_capacity(snapshot.len());
        let mut gone = Vec::new();
        for (tgid, s) in snapshot {
            let known = self.entries.get(&tgid);
            let delta_ns = match known {
                Some(e) => s.cpu_ns.saturating_sub(e.cpu_ns),
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
            let needs_workload = match known {
                None => true,
                Some(e) => e.cgroup_id != s.cgroup_id || (delta_ns > 0 && self.stale_workload(e)),
            };
            if needs_workload {
                let (workload, found) = self.workload_of(tgid, s.cgroup_id, &mut walked);
                let proc_dir = &self.proc_dir;
                let e = self.entries.entry(tgid).or_insert_with(|| Entry {
                    cpu_ns: 0,
                    comm_raw: s.comm,
                    comm: process_comm(proc_dir, tgid, &s.comm),
                    workload: workload.clone(),
                    cgroup_id: s.cgroup_id,
                    resolved_at: gen,
                    unresolved: !found,
                });
                e.workload = workload;
                e.cgroup_id = s.cgroup_id;
                e.resolved_at = gen;
                e.unresolved = !found;
            }
            let e = self.entries.get_mut(&tgid).expect("inserted above");
            // exec renamed it (the program rewrites comm at sched_process_exec).
            if e.comm_raw != s.comm {
                e.comm_raw = s.comm;
                e.comm = process_comm(&self.proc_dir, tgid, &s.comm);
            }
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
        // Pod churn leaves workloads no process holds any more: drop them.
        if self.workloads.len() > 2 * self.entries.len() + 64 {
            self.workloads.retain(|_, w| Arc::strong_count(w) > 1);
        }
        Ok(out)
    }

    fn unaccounted_cpu_seconds(&self) -> f64 {
        self.dropped_since_last
    }

    fn dropped_total(&self) -> Option<u64> {
        Some(self.dropped.events)
    }
}
