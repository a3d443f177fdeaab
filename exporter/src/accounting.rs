//! Per-process CPU time, the input to attribution. Two implementations share this interface:
//! procfs polling (always available) and the eBPF program (`ebpf/`), chosen by `--attribution`.

use std::sync::Arc;

use crate::cgroup::Workload;
use crate::source::SourceError;

/// CPU time one process used during the last interval.
#[derive(Debug, Clone)]
pub struct ProcessDelta {
    pub pid: u32,
    pub comm: Arc<str>,
    /// Container and pod, from the process's cgroup.
    pub workload: Arc<Workload>,
    pub cpu_seconds: f64,
}

/// A way of measuring per-process CPU time.
pub trait CpuAccounting: Send {
    /// `procfs` or `ebpf`, for `exporter_info{attribution}`.
    fn name(&self) -> &'static str;
    /// Every live process with its CPU time since the previous call (zero on the first call).
    /// Exited processes are dropped from the accounting's own state.
    fn collect(&mut self) -> Result<Vec<ProcessDelta>, SourceError>;
    /// CPU seconds of the last `collect` interval that were used but could not be charged to a
    /// process (eBPF: scheduler events dropped because the process map was full). Attribution
    /// keeps their share of the energy unattributed.
    fn unaccounted_cpu_seconds(&self) -> f64 {
        0.0
    }
    /// Events the accounting had to drop since it started (eBPF: a full process map); `None`
    /// where nothing can be dropped (procfs).
    fn dropped_total(&self) -> Option<u64> {
        None
    }
}
