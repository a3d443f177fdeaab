//! Which SDR sensors are this node's power, for BMCs without DCMI power readings.
//!
//! Only analog threshold sensors in watts with a full sensor record (the record carries the
//! conversion factors; compact records have none) qualify. A whole-node sensor ("Pwr
//! Consumption" on Dell iDRAC, "Total Power", "System Power", "Node Power") wins; else the power
//! supplies' input power summed ("PS1 Input Power" + "PS2 Input Power": what the node draws from
//! the wall), else their output power summed (misses the supplies' losses; said in the detail).
//! CPU, memory or fan power sensors are never node power.

/// A sensor as the SDR describes it, reduced to what the choice needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    /// IPMI entity id (Table 43-13): 0Ah is a power supply.
    pub entity_id: u8,
}

/// Which sensors to read and how to combine them.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Indexes into the candidates, summed.
    pub sensors: Vec<usize>,
    /// What it is, for `top` and the logs.
    pub what: String,
}

const ENTITY_POWER_SUPPLY: u8 = 0x0A;

fn is_total(name: &str) -> bool {
    const TOTAL: [&str; 9] = [
        "pwr consumption",
        "power consumption",
        "total power",
        "total_power",
        "system power",
        "sys power",
        "sys_power",
        "node power",
        "platform power",
    ];
    TOTAL.iter().any(|t| name.contains(t))
}

fn is_supply(c: &Candidate, name: &str) -> bool {
    c.entity_id == ENTITY_POWER_SUPPLY
        || name.starts_with("ps")
        || name.contains("psu")
        || name.contains("power supply")
}

fn is_input(name: &str) -> bool {
    name.contains("input") || name.contains("pin") || name.contains(" in ")
}

fn is_output(name: &str) -> bool {
    name.contains("output") || name.contains("pout")
}

/// Picks this node's power among the watt sensors; `wanted` (`--ipmi-sensor`) names one exactly
/// (case-insensitive).
pub fn choose(cands: &[Candidate], wanted: Option<&str>) -> Result<Choice, String> {
    let lower: Vec<String> = cands.iter().map(|c| c.name.to_lowercase()).collect();
    if let Some(w) = wanted {
        let w = w.trim().to_lowercase();
        return match lower.iter().position(|n| n.trim() == w) {
            Some(i) => Ok(Choice {
                sensors: vec![i],
                what: format!("SDR sensor \"{}\" (--ipmi-sensor)", cands[i].name),
            }),
            None => Err(format!(
                "no watt sensor named \"{w}\" in the SDR (watt sensors: {})",
                names(cands, 0..cands.len())
            )),
        };
    }
    if let Some(i) = lower.iter().position(|n| is_total(n)) {
        return Ok(Choice {
            sensors: vec![i],
            what: format!("SDR sensor \"{}\"", cands[i].name),
        });
    }
    let supplies = |f: fn(&str) -> bool| -> Vec<usize> {
        (0..cands.len())
            .filter(|&i| is_supply(&cands[i], &lower[i]) && f(&lower[i]))
            .collect()
    };
    for (picked, kind) in [
        (supplies(is_input), "input"),
        (supplies(is_output), "output"),
    ] {
        if !picked.is_empty() {
            return Ok(Choice {
                what: format!(
                    "SDR power supply {kind} power summed ({})",
                    names(cands, picked.iter().copied())
                ),
                sensors: picked,
            });
        }
    }
    Err(if cands.is_empty() {
        "the SDR has no power sensors (no full sensor record in watts)".into()
    } else {
        format!(
            "no whole-node or power supply sensor among the SDR's watt sensors ({}); name one with --ipmi-sensor",
            names(cands, 0..cands.len())
        )
    })
}

fn names(cands: &[Candidate], idx: impl Iterator<Item = usize>) -> String {
    idx.map(|i| format!("\"{}\"", cands[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a full sensor record turns a raw reading into its unit (IPMI 2.0 §36.3, "Sensor Reading
/// Conversion Formula": y = L[(M·x + B·10^K1)·10^K2]); only linear sensors are converted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    pub m: i16,
    pub b: i16,
    /// K1.
    pub b_exponent: i8,
    /// K2.
    pub result_exponent: i8,
    /// Raw readings are two's complement (else unsigned; one's complement is mapped by the caller).
    pub signed: bool,
}

impl Conversion {
    pub fn apply(&self, raw: u8) -> f64 {
        let x = if self.signed {
            raw as i8 as f64
        } else {
            raw as f64
        };
        let b = self.b as f64 * 10f64.powi(self.b_exponent as i32);
        (self.m as f64 * x + b) * 10f64.powi(self.result_exponent as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, entity: u8) -> Candidate {
        Candidate {
            name: name.into(),
            entity_id: entity,
        }
    }

    #[test]
    fn the_whole_node_sensor_wins_over_supplies() {
        let s = [
            c("PS1 Input Power", 0x0A),
            c("CPU Power", 0x03),
            c("Pwr Consumption", 0x07),
        ];
        let ch = choose(&s, None).unwrap();
        assert_eq!(ch.sensors, vec![2]);
        assert!(ch.what.contains("Pwr Consumption"), "{}", ch.what);
    }

    #[test]
    fn supplies_input_power_is_summed_and_cpu_power_is_not_node_power() {
        let s = [
            c("CPU Power", 0x03),
            c("PS1 Input Power", 0x0A),
            c("PS2 Input Power", 0x0A),
            c("PS1 Output Power", 0x0A),
        ];
        assert_eq!(choose(&s, None).unwrap().sensors, vec![1, 2]);
        assert!(choose(&s[..1], None).unwrap_err().contains("CPU Power"));
    }

    #[test]
    fn output_power_only_when_no_input_power() {
        let s = [c("PSU1 POUT", 0x0A), c("PSU2 POUT", 0x0A)];
        let ch = choose(&s, None).unwrap();
        assert_eq!(ch.sensors, vec![0, 1]);
        assert!(ch.what.contains("output"), "{}", ch.what);
    }

    #[test]
    fn an_override_names_one_sensor_exactly() {
        let s = [c("Pwr Consumption", 0x07), c("Blade Power", 0x07)];
        assert_eq!(choose(&s, Some("blade power")).unwrap().sensors, vec![1]);
        assert!(choose(&s, Some("nope"))
            .unwrap_err()
            .contains("Blade Power"));
    }

    #[test]
    fn the_conversion_formula() {
        let k = Conversion {
            m: 2,
            b: 0,
            b_exponent: 0,
            result_exponent: 0,
            signed: false,
        };
        assert_eq!(k.apply(120), 240.0);
        let k = Conversion {
            m: 14,
            b: 5,
            b_exponent: 1,
            result_exponent: -1,
            signed: false,
        };
        // (14·100 + 5·10)·0.1
        assert!((k.apply(100) - 145.0).abs() < 1e-9);
    }
}
