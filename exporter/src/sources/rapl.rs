//! RAPL through the powercap sysfs interface (`/sys/class/powercap/intel-rapl:*`; AMD CPUs use the
//! same driver and naming since Linux 5.8, some kernels expose `amd-rapl:*`).
//!
//! Each socket has a package zone with subzones (core, uncore, dram); `psys` is a top-level zone on
//! client parts. Zones of the same name are summed over sockets: the controller and dashboards
//! want node totals, and per-socket series would multiply every workload series.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::counter::WrappingCounter;
use crate::source::{Context, Domain, Meter, MeterValue, Sample, Source, SourceError};
use crate::sysfs::{list_dir, read_string, read_u64, HostRoot, ReadError};

struct Zone {
    /// `package`, `core`, `uncore`, `dram`, `psys`.
    name: String,
    energy_path: PathBuf,
    counter: WrappingCounter,
}

pub struct Rapl {
    zones: Vec<Zone>,
}

/// `intel-rapl:0`, `intel-rapl:0:1`, `amd-rapl:0`; not `intel-rapl-mmio:*` (the same package
/// counter again through MMIO: counting it would double the package).
pub(crate) fn is_zone_dir(name: &str) -> bool {
    let Some((driver, idx)) = name.split_once(':') else {
        return false;
    };
    matches!(driver, "intel-rapl" | "amd-rapl")
        && idx
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `package-0` → `package`; other names as the kernel writes them.
pub(crate) fn zone_name(raw: &str) -> String {
    raw.split_once('-')
        .filter(|(head, tail)| *head == "package" && tail.bytes().all(|b| b.is_ascii_digit()))
        .map(|(head, _)| head.to_string())
        .unwrap_or_else(|| raw.to_string())
}

impl Rapl {
    /// Finds every RAPL zone; `Ok(None)` when the machine has none (VMs, ARM boards).
    /// An unreadable `energy_uj` is an error naming the fix: since Linux 5.10 (CVE-2020-8694) it
    /// is readable by root only.
    pub fn discover(root: &HostRoot) -> Result<Option<Self>, SourceError> {
        let base = root.path("/sys/class/powercap");
        let mut zones = Vec::new();
        for dir in list_dir(&base) {
            let fname = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_zone_dir(fname) {
                continue;
            }
            let Ok(raw_name) = read_string(&dir.join("name")) else {
                continue;
            };
            let energy_path = dir.join("energy_uj");
            let max = read_u64(&dir.join("max_energy_range_uj")).unwrap_or(0);
            match read_u64(&energy_path) {
                Ok(_) => {}
                Err(ReadError::PermissionDenied(p)) => {
                    return Err(SourceError::Other(format!(
                        "{}: permission denied; energy_uj is root-only since Linux 5.10 (CVE-2020-8694): run the exporter as root (the chart does), or `chmod a+r /sys/class/powercap/*/energy_uj` on the host",
                        p.display()
                    )))
                }
                Err(e) => return Err(e.into()),
            }
            let mut counter = WrappingCounter::new(max);
            counter.update(read_u64(&energy_path)?);
            zones.push(Zone {
                name: zone_name(&raw_name),
                energy_path,
                counter,
            });
        }
        Ok((!zones.is_empty()).then_some(Self { zones }))
    }

    pub fn zone_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.zones.iter().map(|z| z.name.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Source for Rapl {
    fn name(&self) -> &'static str {
        "rapl"
    }

    fn sample(&mut self, _ctx: &Context) -> Result<Sample, SourceError> {
        let mut by_zone: BTreeMap<&str, u128> = BTreeMap::new();
        for z in &mut self.zones {
            let raw = read_u64(&z.energy_path)?;
            *by_zone.entry(&z.name).or_default() += z.counter.update(raw);
        }
        Ok(Sample {
            meters: by_zone
                .into_iter()
                .map(|(zone, uj)| Meter {
                    domain: Domain::Cpu,
                    zone: zone.to_string(),
                    value: MeterValue::Joules(uj as f64 / 1e6),
                })
                .collect(),
            ..Sample::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_dirs_and_names() {
        assert!(is_zone_dir("intel-rapl:0"));
        assert!(is_zone_dir("intel-rapl:1:0"));
        assert!(is_zone_dir("amd-rapl:0"));
        assert!(!is_zone_dir("intel-rapl"));
        assert!(!is_zone_dir("intel-rapl-mmio:0"));
        assert!(!is_zone_dir("intel-rapl:x"));
        assert_eq!(zone_name("package-1"), "package");
        assert_eq!(zone_name("dram"), "dram");
        assert_eq!(zone_name("psys"), "psys");
    }
}
