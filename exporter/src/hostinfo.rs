//! Static facts about the host that only the Kepler naming (`--metric-prefix kepler`) publishes:
//! one row per logical CPU for `kepler_node_cpu_info`, and the sysfs path of each RAPL zone for
//! the `path` label of `kepler_node_cpu_*`. Read once when the collector is built (CPU hotplug
//! and RAPL driver loads after start are not followed: a restart picks them up).

use std::collections::BTreeMap;

use crate::sysfs::{list_dir, read_string, HostRoot};

/// One logical CPU of `/proc/cpuinfo`, with the fields Kepler's `kepler_node_cpu_info` labels
/// (sustainable-computing-io/kepler `internal/exporter/prometheus/collector/cpuinfo.go`, through
/// prometheus/procfs `CPUInfo`). A field the kernel does not write for this architecture is
/// empty: arm64 kernels write no `vendor_id`, `model name`, `physical id` or `core id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogicalCpu {
    pub processor: String,
    pub vendor_id: String,
    pub model_name: String,
    pub physical_id: String,
    pub core_id: String,
}

/// What [`read`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: Vec<LogicalCpu>,
    /// RAPL zone name (`package`, `dram`, ...) → the zone's directory as the exporter reads it
    /// (`<host root>/sys/class/powercap/intel-rapl:0`), or `aggregated-<name>` where several
    /// zones of that name (sockets) are summed — what Kepler's `AggregatedZone.Path()` says.
    pub rapl_paths: BTreeMap<String, String>,
}

/// Splits `/proc/cpuinfo` into logical CPUs (blocks starting at `processor`). 32-bit ARM
/// kernels name the part in a `Processor` line instead of `model name`; it stands in, as in
/// prometheus/procfs `parseCPUInfoARM`.
pub fn parse_cpus(text: &str) -> Vec<LogicalCpu> {
    let mut cpus: Vec<LogicalCpu> = Vec::new();
    let mut arm_model = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        if k == "processor" {
            cpus.push(LogicalCpu {
                processor: v,
                ..LogicalCpu::default()
            });
            continue;
        }
        if k == "Processor" {
            arm_model = v;
            continue;
        }
        let Some(cpu) = cpus.last_mut() else {
            continue;
        };
        match k {
            "vendor_id" => cpu.vendor_id = v,
            "model name" => cpu.model_name = v,
            "physical id" => cpu.physical_id = v,
            "core id" => cpu.core_id = v,
            _ => {}
        }
    }
    for cpu in cpus.iter_mut().filter(|c| c.model_name.is_empty()) {
        cpu.model_name = arm_model.clone();
    }
    cpus
}

/// RAPL zone paths under `root`, named as [`crate::sources::rapl`] names zones.
fn rapl_paths(root: &HostRoot) -> BTreeMap<String, String> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dir in list_dir(&root.path("/sys/class/powercap")) {
        let fname = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !crate::sources::rapl::is_zone_dir(fname) {
            continue;
        }
        if let Ok(raw) = read_string(&dir.join("name")) {
            by_name
                .entry(crate::sources::rapl::zone_name(&raw))
                .or_default()
                .push(dir.to_string_lossy().into_owned());
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut paths)| {
            let path = if paths.len() == 1 {
                paths.remove(0)
            } else {
                format!("aggregated-{name}")
            };
            (name, path)
        })
        .collect()
}

/// Reads the facts; anything unreadable is left out (no row, no path), never guessed.
pub fn read(root: &HostRoot) -> HostFacts {
    HostFacts {
        cpus: read_string(&root.path("/proc/cpuinfo"))
            .map(|t| parse_cpus(&t))
            .unwrap_or_default(),
        rapl_paths: rapl_paths(root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_rows_per_logical_cpu() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\nphysical id\t: 1\ncore id\t\t: 3\n";
        let cpus = parse_cpus(text);
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            cpus[1],
            LogicalCpu {
                processor: "1".into(),
                vendor_id: "GenuineIntel".into(),
                model_name: "Intel(R) Xeon(R)".into(),
                physical_id: "1".into(),
                core_id: "3".into(),
            }
        );
    }

    /// An arm64 board (Jetson, Raspberry Pi 4/5) writes no model name per CPU: rows stay, with
    /// the fields empty, rather than invented.
    #[test]
    fn arm64_rows_keep_unknown_fields_empty() {
        let text = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\nprocessor\t: 1\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n";
        let cpus = parse_cpus(text);
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].model_name, "");
        assert_eq!(cpus[1].vendor_id, "");
    }

    #[test]
    fn armv7_processor_line_names_the_model() {
        let text = "Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\nBogoMIPS\t: 38.40\n";
        assert_eq!(
            parse_cpus(text)[0].model_name,
            "ARMv7 Processor rev 4 (v7l)"
        );
    }
}
