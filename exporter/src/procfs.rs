//! procfs readers: node CPU time (`/proc/stat`) and per-process CPU time (`/proc/<pid>/stat`).
//!
//! A process is keyed by pid *and* start time, so a recycled pid is not mistaken for the old
//! process. Its cgroup is read when it is first seen, and again — only when it used CPU, so idle
//! processes cost nothing — every interval while it belongs to no pod (a process moved into a
//! pod's cgroup after it started: the `runc init` window, `systemd` moves, a manual move) and every
//! [`RECHECK_INTERVALS`] otherwise. Its name (`comm`) is taken from every `stat` read, so an
//! `exec` (a container's PID 1 leaving `runc:[2:INIT]`) renames it; kernel threads keep the name
//! they were first seen with (they rename themselves as they work).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::{Dir, Mode, OFlags};

use crate::accounting::{CpuAccounting, ProcessDelta};
use crate::cgroup::{self, Workload};
use crate::source::SourceError;
use crate::sysfs::{read_into, HostRoot, ReadError};

/// Aggregate CPU time of the node, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Busy share between two readings, 0..1; `None` when no time passed.
    pub fn busy_ratio_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.saturating_sub(earlier.busy);
        (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// Parses the `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal
/// (guest time is already inside user, so it is not added again).
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

pub fn read_cpu_times(root: &HostRoot) -> Result<CpuTimes, SourceError> {
    let path = root.path("/proc/stat");
    let mut buf = String::new();
    read_into(&path, &mut buf)?;
    parse_stat(&buf).ok_or_else(|| SourceError::Other(format!("{}: no cpu line", path.display())))
}

/// Fields of `/proc/<pid>/stat` we use. `comm` may contain spaces and parentheses, so the fixed
/// fields are counted from the *last* `)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat<'a> {
    pub comm: &'a str,
    pub ticks: u64,
    pub starttime: u64,
    /// A kernel thread (`PF_KTHREAD`): it renames itself as it works (`kworker/1:1-events`),
    /// which is not a new program.
    pub kthread: bool,
}

/// `PF_KTHREAD` in the `flags` field (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

pub fn parse_pid_stat(text: &str) -> Option<PidStat<'_>> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    // After `)`: state(3) ppid pgrp session tty_nr tpgid flags(9) minflt cminflt majflt
    // cmajflt utime(14) stime(15) ... starttime(22).
    let flags: u64 = rest.nth(6)?.parse().ok()?;
    let utime: u64 = rest.nth(4)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    let starttime: u64 = rest.nth(6)?.parse().ok()?;
    Some(PidStat {
        comm,
        ticks: utime + stime,
        starttime,
        kthread: flags & PF_KTHREAD != 0,
    })
}

/// A busy process already placed in a pod has its cgroup read again this often (intervals).
pub const RECHECK_INTERVALS: u64 = 6;

struct Entry {
    starttime: u64,
    comm: Arc<str>,
    workload: Arc<Workload>,
    ticks: u64,
    seen: u64,
    /// Interval of the last cgroup read.
    cgroup_read: u64,
}

impl Entry {
    /// Whether a process that used CPU should have its cgroup read again.
    fn recheck(&self, gen: u64) -> bool {
        self.workload.pod_uid.is_none() || gen.saturating_sub(self.cgroup_read) >= RECHECK_INTERVALS
    }
}

/// Per-process CPU accounting by polling procfs.
///
/// The hot path is one `open`, one `read` and one `close` per process: files are opened relative
/// to a held `/proc` descriptor (no walk of the host-root prefix per file), and read into a fixed
/// buffer with a single `read` (std's `read_to_string` adds `statx`, `lseek` and a second `read`,
/// which doubled the cost at 2 000 processes).
pub struct Procfs {
    proc_dir: PathBuf,
    /// `/proc` under the host root, opened lazily and again after an error.
    proc_fd: Option<OwnedFd>,
    seconds_per_tick: f64,
    entries: HashMap<u32, Entry>,
    /// Interned workloads: 2 000 processes in 500 containers share 500 allocations.
    workloads: HashMap<String, Arc<Workload>>,
    generation: u64,
    buf: Vec<u8>,
    name: String,
}

/// Reads a small kernel file at `name` under `dir` into `buf` (grown if a file fills it) and
/// returns its text; invalid UTF-8 (a `comm` may hold any bytes) is replaced, not an error.
///
/// One `read` suffices: a short read is the end of file both for regular files (fixtures) and for
/// procfs's seq files, which produce files this small in one go.
fn read_small<'b>(
    dir: &OwnedFd,
    name: &str,
    buf: &'b mut Vec<u8>,
) -> std::io::Result<Cow<'b, str>> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut len = 0;
    loop {
        let n = rustix::io::read(&fd, &mut buf[len..])?;
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    Ok(String::from_utf8_lossy(&buf[..len]))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

impl Procfs {
    pub fn new(root: &HostRoot) -> Self {
        Self {
            proc_dir: root.path("/proc"),
            proc_fd: None,
            seconds_per_tick: 1.0 / clock_ticks_per_second(),
            entries: HashMap::new(),
            workloads: HashMap::new(),
            generation: 0,
            buf: vec![0; 4096],
            name: String::with_capacity(32),
        }
    }

    fn proc_fd(&mut self) -> Result<&OwnedFd, SourceError> {
        if self.proc_fd.is_none() {
            let fd = rustix::fs::open(
                &self.proc_dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.dir_error(e.into()))?;
            self.proc_fd = Some(fd);
        }
        Ok(self.proc_fd.as_ref().expect("just opened"))
    }

    fn dir_error(&self, e: std::io::Error) -> SourceError {
        SourceError::Read(ReadError::Io {
            path: self.proc_dir.clone(),
            source: e,
        })
    }

    fn workload_of(
        workloads: &mut HashMap<String, Arc<Workload>>,
        dir: &OwnedFd,
        pid: u32,
        name: &mut String,
        buf: &mut Vec<u8>,
    ) -> Arc<Workload> {
        name.clear();
        let _ = write!(name, "{pid}/cgroup");
        let text = read_small(dir, name, buf).unwrap_or_default();
        let selected = cgroup::select_path(&text);
        if let Some(w) = workloads.get(selected) {
            return w.clone();
        }
        let w = Arc::new(cgroup::parse_path(selected));
        workloads.insert(selected.to_string(), w.clone());
        w
    }
}

impl CpuAccounting for Procfs {
    fn name(&self) -> &'static str {
        "procfs"
    }

    fn collect(&mut self) -> Result<Vec<ProcessDelta>, SourceError> {
        self.generation += 1;
        let gen = self.generation;
        let listing = Dir::read_from(self.proc_fd()?).map_err(|e| {
            // A stale descriptor (proc remounted) is reopened next time.
            self.proc_fd = None;
            self.dir_error(e.into())
        });
        let listing = listing?;
        let dir = self.proc_fd.as_ref().expect("opened above");
        let mut out = Vec::with_capacity(self.entries.len() + 16);
        for entry in listing {
            let Ok(entry) = entry else { break };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            self.name.clear();
            let _ = write!(self.name, "{pid}/stat");
            // A process may exit between readdir and open: skip it silently.
            let Ok(text) = read_small(dir, &self.name, &mut self.buf) else {
                continue;
            };
            let Some(stat) = parse_pid_stat(&text) else {
                continue;
            };
            let (ticks, starttime) = (stat.ticks, stat.starttime);
            let (delta, recheck) = match self.entries.get_mut(&pid) {
                Some(e) if e.starttime == starttime => {
                    let d = ticks.saturating_sub(e.ticks);
                    e.ticks = ticks;
                    e.seen = gen;
                    if *e.comm != *stat.comm && !stat.kthread {
                        e.comm = Arc::from(stat.comm);
                    }
                    (d, d > 0 && e.recheck(gen))
                }
                _ => {
                    let comm: Arc<str> = Arc::from(stat.comm);
                    drop(text);
                    let workload = Self::workload_of(
                        &mut self.workloads,
                        dir,
                        pid,
                        &mut self.name,
                        &mut self.buf,
                    );
                    self.entries.insert(
                        pid,
                        Entry {
                            starttime,
                            comm,
                            workload,
                            ticks,
                            seen: gen,
                            cgroup_read: gen,
                        },
                    );
                    (0, false)
                }
            };
            if recheck {
                let workload =
                    Self::workload_of(&mut self.workloads, dir, pid, &mut self.name, &mut self.buf);
                if let Some(e) = self.entries.get_mut(&pid) {
                    e.workload = workload;
                    e.cgroup_read = gen;
                }
            }
            let e = &self.entries[&pid];
            out.push(ProcessDelta {
                pid,
                comm: e.comm.clone(),
                workload: e.workload.clone(),
                cpu_seconds: delta as f64 * self.seconds_per_tick,
            });
        }
        self.entries.retain(|_, e| e.seen == gen);
        if self.workloads.len() > 4 * self.entries.len().max(256) {
            self.workloads.retain(|_, w| Arc::strong_count(w) > 1);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_line() {
        let t = parse_stat("cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(t.total, 981);
        assert_eq!(t.busy, 981 - 820);
        assert!(parse_stat("intr 1 2 3").is_none());
        assert!(parse_stat("cpu  a b c d").is_none());
    }

    #[test]
    fn parses_pid_stat_with_hostile_comm() {
        let line = "42 (we ird) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 12345 1000 10 18446744073709551615";
        let s = parse_pid_stat(line).unwrap();
        assert_eq!(s.comm, "we ird) (x)");
        assert_eq!(s.ticks, 300);
        assert_eq!(s.starttime, 12345);
        assert!(!s.kthread);
        // a kworker (flags 0x04208060: PF_KTHREAD | PF_WQ_WORKER | …)
        let kw = "63 (kworker/1:1-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 7 0 0 20 0 1 0 210 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0";
        let k = parse_pid_stat(kw).unwrap();
        assert!(k.kthread);
        assert_eq!((k.ticks, k.starttime), (7, 210));
        assert!(parse_pid_stat("42 (x) S 1").is_none());
    }

    #[test]
    fn busy_ratio() {
        let a = CpuTimes {
            busy: 10,
            total: 100,
        };
        let b = CpuTimes {
            busy: 60,
            total: 200,
        };
        assert_eq!(b.busy_ratio_since(&a), Some(0.5));
        assert_eq!(a.busy_ratio_since(&a), None);
    }
}
