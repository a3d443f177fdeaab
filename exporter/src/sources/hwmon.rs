//! hwmon power and energy sensors (`/sys/class/hwmon/hwmon*`).
//!
//! Only sensors whose meaning is known are used, because a wrong guess double-counts: the ACPI
//! `power_meter` (whole platform), AMD's `amd_energy`/`zenergy` socket counters (CPU package), and
//! sensors whose `*_label` says CPU/package or system/platform. Everything else is listed once in
//! the log so an operator can see what was left out.

use std::path::{Path, PathBuf};

use crate::counter::WrappingCounter;
use crate::source::{Context, Domain, Meter, MeterValue, Sample, Source, SourceError};
use crate::sysfs::{list_dir, read_string, read_u64, HostRoot};

enum Kind {
    /// `energy*_input`, µJ, cumulative.
    Energy(WrappingCounter),
    /// `power*_input` or `power*_average`, µW.
    Power,
}

struct Sensor {
    domain: Domain,
    zone: &'static str,
    path: PathBuf,
    kind: Kind,
}

pub struct Hwmon {
    sensors: Vec<Sensor>,
    ignored: Vec<String>,
}

/// What a sensor measures, from the chip name and the channel label.
fn classify(chip: &str, label: &str) -> Option<(Domain, &'static str)> {
    let label = label.to_ascii_lowercase();
    match chip {
        "power_meter" => Some((Domain::Platform, "platform")),
        "amd_energy" | "zenergy" | "zenpower" => label
            .starts_with("esocket")
            .then_some((Domain::Cpu, "package")),
        _ if label.contains("package") || label.contains("cpu") || label == "pkg" => {
            Some((Domain::Cpu, "package"))
        }
        _ if label.contains("system") || label.contains("platform") || label == "sys" => {
            Some((Domain::Platform, "platform"))
        }
        _ => None,
    }
}

/// `power1_input` → (`power`, `1`, `input`).
fn split_attr(name: &str) -> Option<(&str, &str, &str)> {
    let (head, suffix) = name.split_once('_')?;
    let idx_at = head.find(|c: char| c.is_ascii_digit())?;
    Some((&head[..idx_at], &head[idx_at..], suffix))
}

fn chip_sensors(dir: &Path, sensors: &mut Vec<Sensor>, ignored: &mut Vec<String>) {
    let chip = read_string(&dir.join("name")).unwrap_or_default();
    for file in list_dir(dir) {
        let Some(fname) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((kind, idx, suffix)) = split_attr(fname) else {
            continue;
        };
        let is_energy = kind == "energy" && suffix == "input";
        let is_power = kind == "power" && (suffix == "input" || suffix == "average");
        if !is_energy && !is_power {
            continue;
        }
        // ACPI power meters have only power1_average; prefer `input` where both exist.
        if suffix == "average" && dir.join(format!("power{idx}_input")).exists() {
            continue;
        }
        let label = read_string(&dir.join(format!("{kind}{idx}_label"))).unwrap_or_default();
        match classify(&chip, &label) {
            Some((domain, zone)) => sensors.push(Sensor {
                domain,
                zone,
                path: file.clone(),
                kind: if is_energy {
                    Kind::Energy(WrappingCounter::new(0))
                } else {
                    Kind::Power
                },
            }),
            None => ignored.push(format!("{chip}/{fname} ({label})")),
        }
    }
}

impl Hwmon {
    /// `Ok(None)` when no usable sensor exists.
    pub fn discover(root: &HostRoot) -> Result<Option<Self>, SourceError> {
        let mut sensors = Vec::new();
        let mut ignored = Vec::new();
        for dir in list_dir(&root.path("/sys/class/hwmon")) {
            chip_sensors(&dir, &mut sensors, &mut ignored);
        }
        if !ignored.is_empty() {
            tracing::debug!(sensors = ?ignored, "hwmon: sensors of unknown meaning left out");
        }
        Ok((!sensors.is_empty()).then_some(Self { sensors, ignored }))
    }

    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }
}

impl Source for Hwmon {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn sample(&mut self, _ctx: &Context) -> Result<Sample, SourceError> {
        let mut meters: Vec<Meter> = Vec::new();
        for s in &mut self.sensors {
            let raw = read_u64(&s.path)?;
            let value = match &mut s.kind {
                Kind::Energy(c) => MeterValue::Joules(c.update(raw) as f64 / 1e6),
                Kind::Power => MeterValue::Watts(raw as f64 / 1e6),
            };
            // Several sockets' counters of one zone add up.
            match meters
                .iter_mut()
                .find(|m| m.domain == s.domain && m.zone == s.zone)
            {
                Some(m) => {
                    m.value = match (m.value, value) {
                        (MeterValue::Joules(a), MeterValue::Joules(b)) => MeterValue::Joules(a + b),
                        (MeterValue::Watts(a), MeterValue::Watts(b)) => MeterValue::Watts(a + b),
                        // Mixed kinds in one zone: keep the counter, it is the better measure.
                        (j @ MeterValue::Joules(_), _) | (_, j @ MeterValue::Joules(_)) => j,
                        // hwmon files are read now: never a polled counter
                        (other, MeterValue::JoulesAt(..)) | (MeterValue::JoulesAt(..), other) => {
                            other
                        }
                    }
                }
                None => meters.push(Meter {
                    domain: s.domain.clone(),
                    zone: s.zone.to_string(),
                    value,
                }),
            }
        }
        Ok(Sample {
            meters,
            ..Sample::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_known_sensors_only() {
        assert!(matches!(
            classify("power_meter", ""),
            Some((Domain::Platform, _))
        ));
        assert!(matches!(
            classify("amd_energy", "Esocket0"),
            Some((Domain::Cpu, "package"))
        ));
        assert!(classify("amd_energy", "Ecore001").is_none());
        assert!(classify("nvme", "Composite").is_none());
        assert_eq!(split_attr("power1_input"), Some(("power", "1", "input")));
        assert_eq!(
            split_attr("energy12_input"),
            Some(("energy", "12", "input"))
        );
        assert_eq!(split_attr("name"), None);
    }
}
