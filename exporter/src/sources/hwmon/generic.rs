//! Chips without a rail rule: only `power*`/`energy*` sensors whose meaning is known — the ACPI
//! `power_meter` (whole platform), AMD's `amd_energy`/`zenergy` socket counters (CPU package), and
//! sensors whose `*_label` says CPU/package or system/platform.

use super::{Chip, Input, Rail, RailKind, Reading};
use crate::counter::WrappingCounter;
use crate::source::Domain;
use crate::sysfs::list_dir;

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
pub(super) fn split_attr(name: &str) -> Option<(&str, &str, &str)> {
    let (head, suffix) = name.split_once('_')?;
    let idx_at = head.find(|c: char| c.is_ascii_digit())?;
    Some((&head[..idx_at], &head[idx_at..], suffix))
}

pub(super) fn rails(chip: &Chip, rails: &mut Vec<Rail>, ignored: &mut Vec<String>) {
    for file in list_dir(&chip.dir) {
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
        if suffix == "average" && chip.has(&format!("power{idx}_input")) {
            continue;
        }
        let label = chip
            .label(&format!("{kind}{idx}_label"))
            .unwrap_or_default();
        let Some((domain, zone)) = classify(&chip.name, &label) else {
            ignored.push(format!("{}/{fname} ({label})", chip.name));
            continue;
        };
        let reading = if is_energy {
            Reading::Energy(file.clone(), WrappingCounter::new(0))
        } else {
            Reading::Power(file.clone())
        };
        // A platform meter is a known board input (it outranks any guess of a rail rule).
        let kind = match domain {
            Domain::Platform => RailKind::Input {
                how: Input::Known,
                also_zone: false,
            },
            d => RailKind::Fixed(d, zone),
        };
        rails.push(Rail {
            chip: chip.id(),
            label: if label.is_empty() {
                chip.name.clone()
            } else {
                label
            },
            reading,
            kind,
        });
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
