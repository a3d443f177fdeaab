//! Power figures from Redfish resources, pure parsing (DMTF schemas `EnvironmentMetrics`,
//! `Power` (deprecated but what most BMCs still serve), `PowerSubsystem`/`PowerSupply`/
//! `PowerSupplyMetrics`). Every number must be finite and non-negative; anything else is absent.

use serde_json::Value;

/// What one chassis reports, and which resource said it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChassisPower {
    pub watts: Option<f64>,
    /// `EnvironmentMetrics.EnergykWh`: cumulative, used as a counter only when the BMC is polled
    /// at least as often as the exporter collects (else its steps show as 0 W, 0 W, 3×).
    pub energy_kwh: Option<f64>,
    /// An enforced power cap; `None` when absent, 0 or disabled (no budget then).
    pub limit_watts: Option<f64>,
    /// Where the watts came from, e.g. `EnvironmentMetrics.PowerWatts`.
    pub from: String,
}

pub fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

/// `EnvironmentMetrics` (Redfish 2021.2+): `PowerWatts`, `EnergykWh` (sensor excerpts with a
/// `Reading`) and `PowerLimitWatts` (a control excerpt: `SetPoint`, `ControlMode`).
pub fn environment_metrics(v: &Value) -> ChassisPower {
    let limit = &v["PowerLimitWatts"];
    let disabled = limit["ControlMode"].as_str() == Some("Disabled");
    ChassisPower {
        watts: num(&v["PowerWatts"]["Reading"]),
        energy_kwh: num(&v["EnergykWh"]["Reading"]),
        limit_watts: num(&limit["SetPoint"]).filter(|w| *w > 0.0 && !disabled),
        from: "EnvironmentMetrics.PowerWatts".into(),
    }
}

/// One power supply's state and readings, from either model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Supply {
    /// `Status.State`; `Absent`, `Disabled` and `UnavailableOffline` supplies deliver nothing.
    pub state: String,
    pub input_watts: Option<f64>,
    pub output_watts: Option<f64>,
}

impl Supply {
    fn counts(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "Absent" | "Disabled" | "UnavailableOffline"
        )
    }

    /// A legacy `Power.PowerSupplies[]` entry.
    pub fn legacy(v: &Value) -> Self {
        Self {
            state: v["Status"]["State"].as_str().unwrap_or_default().into(),
            input_watts: num(&v["PowerInputWatts"]),
            output_watts: num(&v["LastPowerOutputWatts"]).or(num(&v["PowerOutputWatts"])),
        }
    }

    /// A `PowerSupply` resource with its `PowerSupplyMetrics` (`Value::Null` when it has none).
    pub fn modern(supply: &Value, metrics: &Value) -> Self {
        Self {
            state: supply["Status"]["State"]
                .as_str()
                .unwrap_or_default()
                .into(),
            input_watts: num(&metrics["InputPowerWatts"]["Reading"]),
            output_watts: num(&metrics["OutputPowerWatts"]["Reading"]),
        }
    }
}

/// The chassis's draw from its supplies: the sum of input power (what the node takes from the
/// wall), else of output power (DC delivered, which leaves out the supplies' own losses). Only
/// when every supply that counts has the reading: a partial sum would be too low.
pub fn supplies_power(supplies: &[Supply]) -> Option<(f64, &'static str)> {
    let counted: Vec<&Supply> = supplies.iter().filter(|s| s.counts()).collect();
    if counted.is_empty() {
        return None;
    }
    let sum = |get: fn(&Supply) -> Option<f64>| -> Option<f64> {
        counted.iter().map(|s| get(s)).sum::<Option<f64>>()
    };
    sum(|s| s.input_watts)
        .map(|w| (w, "input"))
        .or_else(|| sum(|s| s.output_watts).map(|w| (w, "output")))
}

/// Legacy `Chassis/{id}/Power`: the first `PowerControl` with `PowerConsumedWatts`, else the
/// supplies; `PowerLimit.LimitInWatts` (null means capping is disabled; 0 is no budget either).
pub fn legacy_power(v: &Value) -> ChassisPower {
    let controls = v["PowerControl"].as_array().cloned().unwrap_or_default();
    let consumed = controls.iter().find_map(|c| num(&c["PowerConsumedWatts"]));
    let limit = controls
        .iter()
        .find_map(|c| num(&c["PowerLimit"]["LimitInWatts"]).filter(|w| *w > 0.0));
    let supplies: Vec<Supply> = v["PowerSupplies"]
        .as_array()
        .map(|a| a.iter().map(Supply::legacy).collect())
        .unwrap_or_default();
    let (watts, from) = match (consumed, supplies_power(&supplies)) {
        (Some(w), _) => (Some(w), "Power.PowerControl.PowerConsumedWatts".to_string()),
        (None, Some((w, kind))) => (
            Some(w),
            format!("Power.PowerSupplies ({kind} power summed)"),
        ),
        (None, None) => (None, String::new()),
    };
    ChassisPower {
        watts,
        energy_kwh: None,
        limit_watts: limit,
        from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn environment_metrics_and_limits() {
        let env = json!({"PowerWatts": {"Reading": 374}, "EnergykWh": {"Reading": 12.5}, "PowerLimitWatts": {"SetPoint": 500, "ControlMode": "Automatic"}});
        let r = environment_metrics(&env);
        assert_eq!(
            (r.watts, r.energy_kwh, r.limit_watts),
            (Some(374.0), Some(12.5), Some(500.0))
        );
        // a disabled cap or a 0 W set point is no budget
        for limit in [
            json!({"SetPoint": 500, "ControlMode": "Disabled"}),
            json!({"SetPoint": 0}),
        ] {
            assert_eq!(
                environment_metrics(&json!({"PowerLimitWatts": limit})).limit_watts,
                None
            );
        }
        assert_eq!(
            environment_metrics(&json!({"PowerWatts": {"Reading": -1}})).watts,
            None
        );
        assert_eq!(
            environment_metrics(&json!({"PowerWatts": {"Reading": null}})).watts,
            None
        );
    }

    #[test]
    fn legacy_power_control_then_supplies() {
        let v = json!({"PowerControl": [{"Name": "x"}, {"PowerConsumedWatts": 344, "PowerLimit": {"LimitInWatts": 500}}]});
        let r = legacy_power(&v);
        assert_eq!((r.watts, r.limit_watts), (Some(344.0), Some(500.0)));
        for off in [json!(null), json!(0)] {
            let v = json!({"PowerControl": [{"PowerConsumedWatts": 1, "PowerLimit": {"LimitInWatts": off}}]});
            assert_eq!(legacy_power(&v).limit_watts, None, "{v}");
        }
        // DMTF public-bladed: the enclosure has only PowerSupplies[].LastPowerOutputWatts
        let v = json!({"PowerSupplies": [
            {"Status": {"State": "Enabled"}, "LastPowerOutputWatts": 650},
            {"Status": {"State": "Enabled"}, "LastPowerOutputWatts": 635},
            {"Status": {"State": "Absent"}}]});
        let r = legacy_power(&v);
        assert_eq!(r.watts, Some(1285.0));
        assert!(r.from.contains("output"), "{}", r.from);
        // an enabled supply without a reading makes the sum unknown
        let v = json!({"PowerSupplies": [{"Status": {"State": "Enabled"}, "PowerInputWatts": 100}, {"Status": {"State": "Enabled"}}]});
        assert_eq!(legacy_power(&v).watts, None);
        assert_eq!(
            legacy_power(&json!({"PowerControl": "garbage"})),
            ChassisPower::default()
        );
    }
}
