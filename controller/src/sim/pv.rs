//! Solar panel output from TMY weather: what a simulated node's panel delivers, per watt-peak.
//!
//! The chain is pvlib's standard PVWatts one, step for step, so that `tools/pv/reference.py`
//! (pvlib itself) checks it (`controller/tests/pv_reference.rs`):
//! 1. sun position at the *middle* of each hourly record (TMY records are hour-ending, so record
//!    `HH:00` uses the sun at `HH-1:30`), the way pvlib users treat TMY data; apparent (refracted)
//!    zenith with pvlib's defaults (pressure from the site's altitude, 12 °C);
//! 2. angle of incidence on the tilted plane, plane-of-array irradiance with Hay-Davies (or
//!    isotropic) sky diffuse plus ground reflection (`pvlib.irradiance.get_total_irradiance`);
//! 3. reflection loss of the beam on the glass (`pvlib.iam.physical`), as PVWatts does;
//! 4. cell temperature, SAPM (`pvlib.temperature.sapm_cell`, open rack glass/polymer);
//! 5. `pvlib.pvsystem.pvwatts_dc` with `pdc0` = 1 W, times `1 - losses` (PVWatts' system losses).
//!
//! The result is direct current into the node's charge controller: edge nodes charge their
//! battery on the DC side, so no inverter model.
//!
//! [`SiteSolar`] precomputes one site's year at one-minute steps, in W per Wp, so that a fleet of
//! nodes costs one array read and one multiply per node-minute. Minutes come from the hourly
//! values by linear interpolation between the hours' midpoints (the value of record `i` sits at
//! minute `60 i + 30`, each minute is sampled at its own midpoint, the year wraps around): the
//! curve has no hourly steps, a record's value is exact at its midpoint, and the year's energy
//! equals the hourly energy exactly (each hourly value carries weight 60 over the minutes). The
//! price: in the first and last hour of a day the power ramps over half an hour before and after
//! the hours that saw sun.

use std::f64::consts::PI;

use super::weather::{Weather, HOURS_PER_YEAR};

/// Minutes in the 365-day TMY year.
pub const MINUTES_PER_YEAR: u32 = (HOURS_PER_YEAR * 60) as u32;

/// How sky diffuse light reaches the tilted plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkyModel {
    /// Uniform sky (`pvlib.irradiance.isotropic`).
    Isotropic,
    /// Isotropic plus a circumsolar part scaled by the beam's clarity
    /// (`pvlib.irradiance.haydavies`): a few percent more on clear days for equator-facing tilt.
    HayDavies,
}

/// Reflection loss of the beam on the module's front glass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iam {
    /// No loss.
    None,
    /// Fresnel/Snell reflection and glass absorption (`pvlib.iam.physical`, n = 1.526, K = 4/m,
    /// L = 2 mm), applied to the beam only, as pvlib's ModelChain and PVWatts do.
    Physical,
}

/// SAPM module temperature coefficients (`pvlib.temperature.sapm_cell`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SapmTemperature {
    pub a: f64,
    pub b: f64,
    /// Cell over back-of-module temperature at 1000 W/m², °C.
    pub delta_t: f64,
}

impl SapmTemperature {
    /// `pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS['sapm']['open_rack_glass_polymer']`: a
    /// common panel on a pole or frame, air on both sides.
    pub const OPEN_RACK_GLASS_POLYMER: SapmTemperature = SapmTemperature {
        a: -3.56,
        b: -0.075,
        delta_t: 3.0,
    };
}

/// One panel's orientation and model parameters; [`Default`] is a PVWatts-like fixed panel.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelConfig {
    /// Degrees from horizontal; `None`: the site's |latitude| (the usual fixed-tilt choice).
    pub tilt_deg: Option<f64>,
    /// Compass direction the panel faces, degrees east of north; `None`: the equator
    /// (180 in the northern hemisphere, 0 in the southern).
    pub azimuth_deg: Option<f64>,
    pub sky_model: SkyModel,
    /// Ground reflectance (pvlib's default 0.25).
    pub albedo: f64,
    pub iam: Iam,
    pub temperature: SapmTemperature,
    /// Power temperature coefficient, 1/°C (PVWatts standard module: -0.0035... -0.0037).
    pub gamma_pdc: f64,
    /// System losses (soiling, wiring, mismatch, ...) in percent; PVWatts' default is 14.
    pub losses_percent: f64,
    /// Calendar year used for the sun's position (TMY months come from different years; pvlib
    /// users coerce them to one, pvlib's examples use 1990). Must be a non-leap year.
    pub year: i32,
}

impl Default for PanelConfig {
    fn default() -> PanelConfig {
        PanelConfig {
            tilt_deg: None,
            azimuth_deg: None,
            sky_model: SkyModel::HayDavies,
            albedo: 0.25,
            iam: Iam::Physical,
            temperature: SapmTemperature::OPEN_RACK_GLASS_POLYMER,
            gamma_pdc: -0.0035,
            losses_percent: 14.0,
            year: 1990,
        }
    }
}

/// A [`PanelConfig`] value that makes no physical sense.
#[derive(Debug, thiserror::Error)]
#[error("panel config: {field}: {reason}")]
pub struct PanelConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn check(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<f64, PanelConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(PanelConfigError {
            field,
            reason: format!("{v} is outside {lo}..={hi}"),
        })
    }
}

/// The sun seen from a site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolarPosition {
    /// Geometric zenith angle, degrees.
    pub zenith_deg: f64,
    /// Zenith angle after atmospheric refraction (what irradiance models use), degrees.
    pub apparent_zenith_deg: f64,
    /// Degrees east of north.
    pub azimuth_deg: f64,
}

/// Sun position at `unix_seconds` (UTC), by the low-precision solar coordinates of Meeus,
/// *Astronomical Algorithms* ch. 25 (the NOAA solar calculator's algorithm), with sidereal time
/// from ch. 12 and SPA's refraction formula (NREL/TP-560-34302 eq. 42). Within about 0.01° of
/// NREL SPA over 1950-2050, far below what hourly irradiance can resolve, at a fraction of SPA's
/// cost (no periodic-term tables).
pub fn solar_position(
    unix_seconds: f64,
    latitude_deg: f64,
    longitude_deg: f64,
    pressure_pa: f64,
    temperature_c: f64,
) -> SolarPosition {
    let jd = unix_seconds / 86_400.0 + 2_440_587.5;
    let d = jd - 2_451_545.0;
    let t = d / 36_525.0;

    let l0 = 280.46646 + t * (36000.76983 + t * 0.0003032);
    let m = (357.52911 + t * (35999.05029 - 0.0001537 * t)).to_radians();
    let c = m.sin() * (1.914602 - t * (0.004817 + 0.000014 * t))
        + (2.0 * m).sin() * (0.019993 - 0.000101 * t)
        + (3.0 * m).sin() * 0.000289;
    let omega = (125.04 - 1934.136 * t).to_radians();
    let lambda = (l0 + c - 0.00569 - 0.00478 * omega.sin()).to_radians();
    let eps0 = 23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60.0) / 60.0;
    let eps = (eps0 + 0.00256 * omega.cos()).to_radians();

    let ra = (eps.cos() * lambda.sin()).atan2(lambda.cos());
    let dec = (eps.sin() * lambda.sin()).asin();
    let gmst = 280.46061837 + 360.98564736629 * d + t * t * (0.000387933 - t / 38_710_000.0);
    let h = (gmst + longitude_deg).to_radians() - ra;

    let phi = latitude_deg.to_radians();
    let cos_z = (phi.sin() * dec.sin() + phi.cos() * dec.cos() * h.cos()).clamp(-1.0, 1.0);
    let zenith = cos_z.acos().to_degrees();
    let azimuth = (h
        .sin()
        .atan2(h.cos() * phi.sin() - dec.tan() * phi.cos())
        .to_degrees()
        + 180.0)
        .rem_euclid(360.0);

    // SPA eq. 42, applied from just below the horizon (sun radius + standard refraction) up.
    let e0 = 90.0 - zenith;
    let refraction = if e0 >= -(0.26667 + 0.5667) {
        (pressure_pa / 100.0 / 1010.0) * (283.0 / (273.0 + temperature_c)) * 1.02
            / (60.0 * (e0 + 10.3 / (e0 + 5.11)).to_radians().tan())
    } else {
        0.0
    };
    SolarPosition {
        zenith_deg: zenith,
        apparent_zenith_deg: zenith - refraction,
        azimuth_deg: azimuth,
    }
}

/// Standard-atmosphere pressure at an altitude (`pvlib.atmosphere.alt2pres`), Pa.
pub fn altitude_to_pressure(altitude_m: f64) -> f64 {
    100.0 * ((44_331.514 - altitude_m) / 11_880.516).powf(1.0 / 0.190_263_2)
}

/// Extraterrestrial normal irradiance on a day of the year (1-based), W/m²
/// (`pvlib.irradiance.get_extra_radiation`, Spencer 1971).
pub fn extra_radiation(day_of_year: u32) -> f64 {
    let b = 2.0 * PI / 365.0 * (f64::from(day_of_year) - 1.0);
    1366.1
        * (1.00011
            + 0.034221 * b.cos()
            + 0.00128 * b.sin()
            + 0.000719 * (2.0 * b).cos()
            + 7.7e-05 * (2.0 * b).sin())
}

/// Fraction of the beam that enters the cell at an angle of incidence (`pvlib.iam.physical`
/// with its defaults and no anti-reflection coating).
pub fn iam_physical(aoi_deg: f64) -> f64 {
    const N: f64 = 1.526;
    const KL: f64 = 4.0 * 0.002;
    let cos1 = aoi_deg.to_radians().cos().max(0.0);
    let sin2 = (1.0 - cos1 * cos1).sqrt() / N;
    let cos2 = (1.0 - sin2 * sin2).sqrt();
    let rho_s = ((cos1 - N * cos2) / (cos1 + N * cos2)).powi(2);
    let rho_p = ((cos2 - N * cos1) / (cos2 + N * cos1)).powi(2);
    let tau0 = (1.0 - ((1.0 - N) / (1.0 + N)).powi(2)) * (-KL).exp();
    let absorb = (-KL / cos2).exp();
    ((1.0 - rho_s) * absorb + (1.0 - rho_p) * absorb) / 2.0 / tau0
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Every intermediate of one hourly record, for checking against pvlib.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourPv {
    pub sun: SolarPosition,
    pub aoi_deg: f64,
    /// Plane-of-array irradiance, W/m².
    pub poa_global: f64,
    /// What the cells convert: beam after reflection loss plus diffuse, W/m².
    pub poa_effective: f64,
    pub temp_cell_c: f64,
    /// DC output after system losses, W per Wp; also the hour's energy in Wh per Wp.
    pub dc_w_per_wp: f64,
}

/// Tilt and azimuth after defaults, checked.
fn orientation(weather: &Weather, cfg: &PanelConfig) -> Result<(f64, f64), PanelConfigError> {
    let lat = weather.site().latitude_deg;
    let tilt = check("tilt_deg", cfg.tilt_deg.unwrap_or(lat.abs()), 0.0, 90.0)?;
    let default_azimuth = if lat >= 0.0 { 180.0 } else { 0.0 };
    let azimuth = check(
        "azimuth_deg",
        cfg.azimuth_deg.unwrap_or(default_azimuth),
        0.0,
        360.0,
    )?;
    check("albedo", cfg.albedo, 0.0, 1.0)?;
    check("gamma_pdc", cfg.gamma_pdc, -0.02, 0.0)?;
    check("losses_percent", cfg.losses_percent, 0.0, 100.0)?;
    check("temperature.a", cfg.temperature.a, -10.0, 0.0)?;
    check("temperature.b", cfg.temperature.b, -1.0, 0.0)?;
    check("temperature.delta_t", cfg.temperature.delta_t, 0.0, 20.0)?;
    if is_leap(cfg.year) || !(1900..=2100).contains(&cfg.year) {
        return Err(PanelConfigError {
            field: "year",
            reason: format!(
                "{} is not a non-leap year in 1900..=2100 (a TMY year has 365 days)",
                cfg.year
            ),
        });
    }
    Ok((tilt, azimuth))
}

/// The panel's hourly output over the TMY year, record by record (`result[i]` belongs to
/// `weather.hours()[i]`).
pub fn hourly(weather: &Weather, cfg: &PanelConfig) -> Result<Vec<HourPv>, PanelConfigError> {
    let (tilt, surface_azimuth) = orientation(weather, cfg)?;
    let site = weather.site();
    let pressure = altitude_to_pressure(site.altitude_m);
    let year_start_utc =
        days_from_civil(cfg.year, 1, 1) as f64 * 86_400.0 - site.utc_offset_hours * 3600.0;
    let (sin_tilt, cos_tilt) = tilt.to_radians().sin_cos();
    let loss = 1.0 - cfg.losses_percent / 100.0;

    Ok(weather
        .hours()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            // Hour-ending records: the middle of record i is i + 0.5 h after local Jan 1 00:00.
            let mid = i as f64 + 0.5;
            let sun = solar_position(
                year_start_utc + mid * 3600.0,
                site.latitude_deg,
                site.longitude_deg,
                pressure,
                12.0,
            );
            let (sin_z, cos_z) = sun.apparent_zenith_deg.to_radians().sin_cos();
            let cos_aoi = (cos_tilt * cos_z
                + sin_tilt * sin_z * (sun.azimuth_deg - surface_azimuth).to_radians().cos())
            .clamp(-1.0, 1.0);
            let aoi = cos_aoi.acos().to_degrees();
            let (ghi, dni, dhi) = (f64::from(h.ghi), f64::from(h.dni), f64::from(h.dhi));

            let beam = (dni * cos_aoi).max(0.0);
            let isotropic_view = (1.0 + cos_tilt) / 2.0;
            let sky = match cfg.sky_model {
                SkyModel::Isotropic => dhi * isotropic_view,
                SkyModel::HayDavies => {
                    let rb = cos_aoi.max(0.0) / cos_z.max(0.01745);
                    let ai = dni / extra_radiation((i / 24) as u32 + 1);
                    (dhi * (1.0 - ai) * isotropic_view).max(0.0) + (dhi * ai * rb).max(0.0)
                }
            };
            let ground = ghi * cfg.albedo * (1.0 - cos_tilt) / 2.0;
            let poa_global = beam + sky + ground;
            let iam = match cfg.iam {
                Iam::None => 1.0,
                Iam::Physical => iam_physical(aoi),
            };
            let poa_effective = beam * iam + sky + ground;

            let t = cfg.temperature;
            let temp_module = poa_global * (t.a + t.b * f64::from(h.wind_speed_ms)).exp()
                + f64::from(h.temp_air_c);
            let temp_cell = temp_module + poa_global / 1000.0 * t.delta_t;
            let dc = poa_effective / 1000.0 * (1.0 + cfg.gamma_pdc * (temp_cell - 25.0)) * loss;
            HourPv {
                sun,
                aoi_deg: aoi,
                poa_global,
                poa_effective,
                temp_cell_c: temp_cell,
                dc_w_per_wp: dc.max(0.0),
            }
        })
        .collect())
}

/// One site's panel output for the whole TMY year at one-minute steps, per watt-peak: computed
/// once per (site, panel config) and shared by every node there, which scales it by its own Wp.
#[derive(Debug, Clone)]
pub struct SiteSolar {
    per_minute: Vec<f32>,
    per_hour: Vec<f32>,
    utc_offset_minutes: i32,
}

impl SiteSolar {
    pub fn from_weather(
        weather: &Weather,
        cfg: &PanelConfig,
    ) -> Result<SiteSolar, PanelConfigError> {
        let per_hour: Vec<f64> = hourly(weather, cfg)?
            .iter()
            .map(|h| h.dc_w_per_wp)
            .collect();
        let n = per_hour.len();
        let per_minute = (0..MINUTES_PER_YEAR)
            .map(|m| {
                // Minutes since the first hour's midpoint (minute 30), sampled mid-minute.
                let t = f64::from(m) + 0.5 - 30.0;
                let k = (t / 60.0).floor();
                let frac = t / 60.0 - k;
                let a = per_hour[(k as i64).rem_euclid(n as i64) as usize];
                let b = per_hour[(k as i64 + 1).rem_euclid(n as i64) as usize];
                (a + (b - a) * frac) as f32
            })
            .collect();
        Ok(SiteSolar {
            per_minute,
            per_hour: per_hour.iter().map(|&v| v as f32).collect(),
            utc_offset_minutes: (weather.site().utc_offset_hours * 60.0).round() as i32,
        })
    }

    /// Output in W per Wp during minute `minute_of_year` of the site's local standard time
    /// (0 = Jan 1 00:00-00:01). Past the year it wraps: the typical year repeats.
    #[inline]
    pub fn watts_per_wp(&self, minute_of_year: u32) -> f32 {
        self.per_minute[(minute_of_year % MINUTES_PER_YEAR) as usize]
    }

    /// [`SiteSolar::watts_per_wp`] for a minute counted in UTC (for a fleet on one clock).
    #[inline]
    pub fn watts_per_wp_utc(&self, minute_of_year_utc: u32) -> f32 {
        let local = (i64::from(minute_of_year_utc) + i64::from(self.utc_offset_minutes))
            .rem_euclid(i64::from(MINUTES_PER_YEAR));
        self.per_minute[local as usize]
    }

    /// A panel of `solar_wp` watt-peak, in W, during a local minute of the year.
    #[inline]
    pub fn watts(&self, minute_of_year: u32, solar_wp: f32) -> f32 {
        solar_wp * self.watts_per_wp(minute_of_year)
    }

    /// The hourly values the minutes are interpolated from (W per Wp, record order).
    pub fn hourly_watts_per_wp(&self) -> &[f32] {
        &self.per_hour
    }

    /// Energy over the year, Wh per Wp.
    pub fn annual_wh_per_wp(&self) -> f64 {
        self.per_minute.iter().map(|&w| f64::from(w)).sum::<f64>() / 60.0
    }

    /// Local standard time minus UTC, minutes.
    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::weather::{HourRecord, Site};

    /// NREL/TP-560-34302 (Reda & Andreas, SPA), Table A5.1: 2003-10-17 12:30:30 local (UTC-7),
    /// 39.742476 N 105.1786 W, 820 mbar, 11 °C: topocentric zenith 50.11162°,
    /// azimuth 194.34024°.
    #[test]
    fn matches_the_spa_report_example() {
        let t =
            days_from_civil(2003, 10, 17) as f64 * 86_400.0 + (19.0 * 3600.0 + 30.0 * 60.0 + 30.0);
        let p = solar_position(t, 39.742476, -105.1786, 82_000.0, 11.0);
        assert!((p.apparent_zenith_deg - 50.11162).abs() < 0.01, "{p:?}");
        assert!((p.azimuth_deg - 194.34024).abs() < 0.01, "{p:?}");
        // Refraction raises the sun: apparent zenith below geometric.
        assert!(p.zenith_deg > p.apparent_zenith_deg);
    }

    #[test]
    fn calendar_and_constants() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1990, 1, 1), 7305);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        // pvlib.atmosphere.alt2pres(0) = 101325.0 (to 0.1 Pa); pvlib.iam.physical(0) = 1.
        assert!((altitude_to_pressure(0.0) - 101_325.0).abs() < 1.0);
        assert!((iam_physical(0.0) - 1.0).abs() < 1e-12);
        assert!(iam_physical(60.0) < 1.0 && iam_physical(60.0) > iam_physical(80.0));
        assert!(iam_physical(90.0) < 1e-9);
        assert_eq!(iam_physical(120.0), 0.0);
        // Spencer: the Earth is nearest the sun in early January.
        assert!(extra_radiation(3) > 1400.0 && extra_radiation(185) < 1330.0);
    }

    fn site(lat: f64) -> Site {
        Site {
            id: "0".into(),
            name: "test".into(),
            state: "".into(),
            utc_offset_hours: 0.0,
            latitude_deg: lat,
            longitude_deg: 0.0,
            altitude_m: 0.0,
        }
    }

    /// Clear-ish sky from 06:00 to 18:00 every day, 20 °C, 1 m/s.
    fn sunny(lat: f64) -> Weather {
        let mut hours = Vec::with_capacity(HOURS_PER_YEAR);
        let days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for (m, &nd) in days.iter().enumerate() {
            for d in 1..=nd {
                for h in 1..=24u8 {
                    let up = (7..=18).contains(&h);
                    hours.push(HourRecord {
                        year: 1990,
                        month: m as u8 + 1,
                        day: d,
                        hour_ending: h,
                        ghi: if up { 600.0 } else { 0.0 },
                        dni: if up { 700.0 } else { 0.0 },
                        dhi: if up { 100.0 } else { 0.0 },
                        temp_air_c: 20.0,
                        wind_speed_ms: 1.0,
                    });
                }
            }
        }
        Weather::from_hours(site(lat), hours).unwrap()
    }

    #[test]
    fn minutes_keep_the_hourly_energy_and_hit_midpoints() {
        let w = sunny(40.0);
        let s = SiteSolar::from_weather(&w, &PanelConfig::default()).unwrap();
        let hourly: f64 = s.hourly_watts_per_wp().iter().map(|&v| f64::from(v)).sum();
        assert!((s.annual_wh_per_wp() - hourly).abs() / hourly < 1e-5);
        // Minute 60 i + 30 is centred 0.5 min after the midpoint: close to record i's value.
        for i in [11usize, 4000, 8000] {
            let h = s.hourly_watts_per_wp()[i];
            let next = s.hourly_watts_per_wp()[i + 1];
            let m = s.watts_per_wp(i as u32 * 60 + 30);
            assert!(
                (m - (h + (next - h) / 120.0)).abs() < 1e-5,
                "{i}: {m} vs {h}"
            );
        }
        // Night is dark, noon is bright, the year wraps, Wp scales.
        assert_eq!(s.watts_per_wp(2 * 60), 0.0);
        assert!(s.watts_per_wp(12 * 60) > 0.4);
        assert_eq!(s.watts_per_wp(MINUTES_PER_YEAR + 700), s.watts_per_wp(700));
        assert_eq!(s.watts(700, 50.0), 50.0 * s.watts_per_wp(700));
    }

    #[test]
    fn utc_minutes_shift_by_the_site_offset() {
        let mut w = sunny(40.0);
        let mut st = w.site().clone();
        st.utc_offset_hours = -5.0;
        w = Weather::from_hours(st, w.hours().to_vec()).unwrap();
        let s = SiteSolar::from_weather(&w, &PanelConfig::default()).unwrap();
        assert_eq!(s.utc_offset_minutes(), -300);
        // 17:00 UTC is noon at UTC-5; minute 0 UTC is 19:00 local on Dec 31.
        assert_eq!(s.watts_per_wp_utc(17 * 60), s.watts_per_wp(12 * 60));
        assert_eq!(
            s.watts_per_wp_utc(0),
            s.watts_per_wp(MINUTES_PER_YEAR - 300)
        );
    }

    #[test]
    fn facing_the_sun_beats_facing_away_and_the_south_faces_north() {
        let north = sunny(40.0);
        let e = |w: &Weather, cfg: &PanelConfig| {
            SiteSolar::from_weather(w, cfg).unwrap().annual_wh_per_wp()
        };
        let base = PanelConfig::default();
        let away = PanelConfig {
            azimuth_deg: Some(0.0),
            ..base.clone()
        };
        assert!(e(&north, &base) > 1.3 * e(&north, &away));
        // Southern hemisphere: the default faces north, mirroring the northern result.
        let south = sunny(-40.0);
        let mirrored = e(&south, &base);
        assert!(
            mirrored
                > 1.3
                    * e(
                        &south,
                        &PanelConfig {
                            azimuth_deg: Some(180.0),
                            ..base.clone()
                        }
                    )
        );
        // Hot cells lose power: the same sun at 40 °C gives less.
        let flat = PanelConfig {
            tilt_deg: Some(0.0),
            ..base.clone()
        };
        let hot = {
            let hours = north
                .hours()
                .iter()
                .map(|h| HourRecord {
                    temp_air_c: 40.0,
                    ..*h
                })
                .collect();
            Weather::from_hours(north.site().clone(), hours).unwrap()
        };
        let ratio = e(&hot, &flat) / e(&north, &flat);
        assert!((ratio - (1.0 - 0.0035 * 20.0)).abs() < 0.005, "{ratio}");
        // Flat, isotropic, no IAM, no loss, no temperature effect: exactly the light on a flat
        // plate, DNI cos(z) + DHI, per hour.
        let ideal = PanelConfig {
            tilt_deg: Some(0.0),
            sky_model: SkyModel::Isotropic,
            iam: Iam::None,
            losses_percent: 0.0,
            gamma_pdc: 0.0,
            ..base.clone()
        };
        for (h, pv) in north.hours().iter().zip(hourly(&north, &ideal).unwrap()) {
            let cos_z = pv.sun.apparent_zenith_deg.to_radians().cos();
            let plate = (f64::from(h.dni) * cos_z).max(0.0) + f64::from(h.dhi);
            assert!(
                (pv.dc_w_per_wp - plate / 1000.0).abs() < 1e-9,
                "{h:?} {pv:?}"
            );
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let w = sunny(40.0);
        let bad = [
            PanelConfig {
                tilt_deg: Some(95.0),
                ..Default::default()
            },
            PanelConfig {
                azimuth_deg: Some(f64::NAN),
                ..Default::default()
            },
            PanelConfig {
                albedo: 1.5,
                ..Default::default()
            },
            PanelConfig {
                losses_percent: -1.0,
                ..Default::default()
            },
            PanelConfig {
                gamma_pdc: 0.5,
                ..Default::default()
            },
            PanelConfig {
                year: 1992,
                ..Default::default()
            },
        ];
        let fields = [
            "tilt_deg",
            "azimuth_deg",
            "albedo",
            "losses_percent",
            "gamma_pdc",
            "year",
        ];
        for (cfg, field) in bad.iter().zip(fields) {
            let e = SiteSolar::from_weather(&w, cfg).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }
}
