//! One module per energy source; all implement [`crate::source::Source`].

pub mod battery;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod hwmon;
#[cfg(feature = "ipmi")]
pub mod ipmi;
pub mod rapl;
#[cfg(feature = "redfish")]
pub mod redfish;

use crate::source::Source;
use crate::sysfs::HostRoot;

/// Finds the sysfs-backed sources present under `root`. A source that exists but cannot be read
/// (e.g. root-only RAPL) is reported in the returned warnings, not fatal: the others still run.
pub fn discover_local(root: &HostRoot) -> (Vec<Box<dyn Source>>, Vec<String>) {
    discover_local_except(root, &[])
}

/// [`discover_local`] for the kinds (source names) not in `have` only: a rescan does not probe
/// again what it already reads (for a GPU that would mean initialising NVML every time).
pub fn discover_local_except(
    root: &HostRoot,
    have: &[&str],
) -> (Vec<Box<dyn Source>>, Vec<String>) {
    let mut found: Vec<Box<dyn Source>> = Vec::new();
    let mut warnings = Vec::new();
    let mut probe = |kind: &str, discover: &dyn Fn() -> Result<Option<Box<dyn Source>>, String>| {
        if have.contains(&kind) {
            return;
        }
        match discover() {
            Ok(Some(s)) => found.push(s),
            Ok(None) => {}
            Err(e) => warnings.push(format!("{kind}: {e}")),
        }
    };
    probe("rapl", &|| boxed(rapl::Rapl::discover(root)));
    probe("hwmon", &|| boxed(hwmon::Hwmon::discover(root)));
    probe("battery", &|| boxed(battery::PowerSupply::discover(root)));
    #[cfg(feature = "gpu")]
    probe("gpu", &|| boxed(gpu::Gpu::discover()));
    (found, warnings)
}

fn boxed<S: Source + 'static, E: std::fmt::Display>(
    r: Result<Option<S>, E>,
) -> Result<Option<Box<dyn Source>>, String> {
    r.map(|s| s.map(|s| Box::new(s) as Box<dyn Source>))
        .map_err(|e| e.to_string())
}
