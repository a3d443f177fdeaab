//! One module per energy source; all implement [`crate::source::Source`].

pub mod battery;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod hwmon;
pub mod rapl;
pub mod redfish;

use crate::source::Source;
use crate::sysfs::HostRoot;

/// Finds the sysfs-backed sources present under `root`. A source that exists but cannot be read
/// (e.g. root-only RAPL) is reported in the returned warnings, not fatal: the others still run.
pub fn discover_local(root: &HostRoot) -> (Vec<Box<dyn Source>>, Vec<String>) {
    let mut found: Vec<Box<dyn Source>> = Vec::new();
    let mut warnings = Vec::new();
    match rapl::Rapl::discover(root) {
        Ok(Some(s)) => found.push(Box::new(s)),
        Ok(None) => {}
        Err(e) => warnings.push(format!("rapl: {e}")),
    }
    match hwmon::Hwmon::discover(root) {
        Ok(Some(s)) => found.push(Box::new(s)),
        Ok(None) => {}
        Err(e) => warnings.push(format!("hwmon: {e}")),
    }
    match battery::PowerSupply::discover(root) {
        Ok(Some(s)) => found.push(Box::new(s)),
        Ok(None) => {}
        Err(e) => warnings.push(format!("battery: {e}")),
    }
    #[cfg(feature = "gpu")]
    match gpu::Gpu::discover() {
        Ok(Some(s)) => found.push(Box::new(s)),
        Ok(None) => {}
        Err(e) => warnings.push(format!("gpu: {e}")),
    }
    (found, warnings)
}
