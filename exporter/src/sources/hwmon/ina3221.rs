//! TI INA3221, three-channel rail monitor (NVIDIA Jetson modules since L4T 34 / JetPack 5, whose
//! kernel binds the mainline `ina3221` hwmon driver; L4T 32 used the `ina3221x` IIO driver, which
//! is not hwmon and is not read here).
//!
//! Files (torvalds/linux `Documentation/hwmon/ina3221.rst`): `in[123]_input` bus voltage (mV),
//! `curr[123]_input` current (mA), `in[123]_label` the rail name from the device tree,
//! `in[123]_enable`, `shunt[123]_resistor` (µΩ); `in[456]_input` are shunt voltages and `in7`/
//! `curr4` sums, never rails. There is no power file: power = bus mV × mA.
//!
//! Which rail is the board input comes from published Jetson layouts (energymon/energymon
//! `jetson/JetsonPowerRails.md`, built from NVIDIA's Jetson Developer Guide "Platform Power and
//! Performance" and the L4T device trees; the AGX Orin layout from NVIDIA's forum thread "Jetson
//! AGX Orin INA3221 power monitor layout"):
//! - Orin Nano/NX, Xavier NX, TX2 NX: `VDD_IN` is the module input; `VDD_CPU_GPU_CV`, `VDD_SOC`,
//!   … are its sub-rails. Nano: `POM_5V_IN` over `POM_5V_GPU`, `POM_5V_CPU`.
//! - AGX Orin (two chips, 0x40 and 0x41): no input rail. `VDD_GPU_SOC` and `VDD_CPU_CV` (from
//!   SYS_VIN_HV) and `VIN_SYS_5V0` (from SYS_VIN_MV) are parallel top-level rails, summed for the
//!   module; `VDDQ_VDD2_1V8AO` on 0x41 is fed by `VIN_SYS_5V0`, so it is a zone only.
//! - AGX Xavier (two chips): no input rail; `GPU`, `CPU`, `SOC`, `CV`, `VDDRQ`, `SYS5V` are all
//!   fed straight from the supply (Product Design Guide §5.2, §5.6.2), summed for the module.
//!
//! Rails of an unknown layout are published as zones only: without knowing which feeds which, a
//! sum could count a rail twice. Channels labelled `NC` (no connection) or disabled are skipped.

use super::{Chip, Input, Rail, RailKind, Reading};

/// Module input rails.
const INPUTS: [&str; 2] = ["VDD_IN", "POM_5V_IN"];

/// Boards without an input rail: (top-level parallel rails that together are the module's draw).
/// A board matches when all of its top-level rails are present; its other rails are sub-rails.
const PARALLEL_TOPS: [&[&str]; 2] = [
    // AGX Orin
    &["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
    // AGX Xavier
    &["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
];

pub(super) fn handles(chip: &Chip) -> bool {
    chip.name == "ina3221"
}

/// One enabled, connected channel.
struct Channel {
    chip: String,
    label: String,
    reading: Reading,
}

fn channels(chip: &Chip, ignored: &mut Vec<String>) -> Vec<Channel> {
    let mut out = Vec::new();
    for n in 1..=3 {
        let (mv, ma) = (format!("in{n}_input"), format!("curr{n}_input"));
        let label = chip.label(&format!("in{n}_label"));
        let disabled = chip.label(&format!("in{n}_enable")).as_deref() == Some("0");
        let nc = label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case("NC"));
        if disabled || nc || !chip.has(&mv) || !chip.has(&ma) {
            if label.is_some() && !nc {
                ignored.push(format!(
                    "{} channel {n} (disabled or incomplete)",
                    chip.id()
                ));
            }
            continue;
        }
        out.push(Channel {
            chip: chip.id(),
            label: label.unwrap_or_else(|| format!("{}_in{n}", chip.name)),
            reading: Reading::VoltCurr {
                mv: chip.attr(&mv),
                ma: chip.attr(&ma),
            },
        });
    }
    out
}

/// The rails of all INA3221 chips of the node, read as one board.
pub(super) fn rails(chips: &[&Chip], rails: &mut Vec<Rail>, ignored: &mut Vec<String>) {
    let all: Vec<Channel> = chips.iter().flat_map(|c| channels(c, ignored)).collect();
    if all.is_empty() {
        return;
    }
    let has = |name: &str| all.iter().any(|c| c.label == name);
    let input = all.iter().any(|c| INPUTS.contains(&c.label.as_str()));
    let tops: &[&str] = match PARALLEL_TOPS.iter().find(|t| t.iter().all(|n| has(n))) {
        Some(t) if !input => t,
        _ => &[],
    };
    if !input && tops.is_empty() {
        let labels: Vec<&str> = all.iter().map(|c| c.label.as_str()).collect();
        tracing::info!(rails = ?labels, "hwmon: INA3221 rails of an unknown board; published as zones only, node power comes from another source");
    }
    for c in all {
        let kind = if INPUTS.contains(&c.label.as_str()) {
            RailKind::Input {
                how: Input::Known,
                also_zone: false,
            }
        } else if tops.contains(&c.label.as_str()) {
            RailKind::Input {
                how: Input::Known,
                also_zone: true,
            }
        } else {
            RailKind::Sub
        };
        rails.push(Rail {
            chip: c.chip,
            label: c.label,
            reading: c.reading,
            kind,
        });
    }
}
