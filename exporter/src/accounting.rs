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
}
