//! TI INA2xx single-channel shunt monitors (INA219/220/226/230/231 in the `ina2xx` driver, and
//! the INA209/INA238/INA260 drivers with the same files): Raspberry Pi power HATs, industrial
//! gateways' board monitors.
//!
//! Files (torvalds/linux `Documentation/hwmon/ina2xx.rst`): `in0_input` shunt voltage (mV, never
//! a rail), `in1_input` bus voltage (mV), `curr1_input` current (mA), `power1_input` power (µW,
//! computed by the chip from its own averaged samples, so preferred), `shunt_resistor` (µΩ).
//!
//! Where such a monitor sits is the board designer's choice. Unlabelled, or labelled as an input
//! (`vin`, `input`, `board`, `main`, `system`, `total`), it is taken for the board input — but only
//! when it is the one such monitor and nothing better (a Jetson input rail, the ACPI meter, a
//! PMBus supply) claims the board: otherwise it may sit under another and is a zone only. A
//! label naming anything else (`motor`, `5V_USB`) makes it a zone.

use super::{Chip, Input, Rail, RailKind, Reading};

const CHIPS: [&str; 10] = [
    "ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina234", "ina237", "ina238",
    "ina260",
];

pub(super) fn handles(chip: &Chip) -> bool {
    CHIPS.contains(&chip.name.as_str())
}

/// `vin`, `board_input`, `12V_IN`, `main`, `system`, `total`: words that name a supply's input.
fn names_an_input(label: &str) -> bool {
    label
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| {
            matches!(
                w,
                "in" | "vin" | "input" | "board" | "main" | "sys" | "system" | "total"
            )
        })
}

pub(super) fn rails(chip: &Chip, rails: &mut Vec<Rail>, ignored: &mut Vec<String>) {
    let reading = if chip.has("power1_input") {
        Reading::Power(chip.attr("power1_input"))
    } else if chip.has("in1_input") && chip.has("curr1_input") {
        Reading::VoltCurr {
            mv: chip.attr("in1_input"),
            ma: chip.attr("curr1_input"),
        }
    } else {
        ignored.push(format!("{} (no power1_input, no in1×curr1)", chip.id()));
        return;
    };
    // The device tree's `label` (a chip attribute, sysfs-interface.rst), else a channel label.
    let label = ["label", "power1_label", "in1_label", "curr1_label"]
        .iter()
        .find_map(|a| chip.label(a));
    let kind = match &label {
        Some(l) if !names_an_input(l) => RailKind::Sub,
        _ => RailKind::Input {
            how: Input::Alone,
            also_zone: false,
        },
    };
    rails.push(Rail {
        chip: chip.id(),
        label: label.unwrap_or_else(|| chip.name.clone()),
        reading,
        kind,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_labels() {
        for l in ["VIN", "12V_IN", "board input", "main", "SYS"] {
            assert!(names_an_input(l), "{l}");
        }
        for l in ["motor", "5V_USB", "VDD_CPU", "pin7"] {
            assert!(!names_an_input(l), "{l}");
        }
    }
}
