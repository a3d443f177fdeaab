//! Hourly weather of one site from NREL typical-meteorological-year files (TMY3 CSV, TMY2
//! fixed-width), as the simulator's solar model needs it.
//!
//! Both formats hold 8760 hourly records of one typical (non-leap) year in local *standard* time
//! (no daylight saving). A record stamped `HH:00` (TMY3 `01:00`..`24:00`, TMY2 hour `1`..`24`)
//! describes the hour *ending* then: irradiance is the energy received over the 60 minutes before
//! the stamp, temperature and wind are readings at the stamp. Months come from different years
//! (that is what makes the year "typical"); the year of each record is kept but the records always
//! form one calendar year, Jan 1 01:00 to Dec 31 24:00, which [`Weather`] checks.
//!
//! Formats, as pvlib reads them (`pvlib/iotools/tmy.py`, `read_tmy3` / `read_tmy2`):
//! - TMY3: line 1 `USAF,"Name",State,TZ,latitude,longitude,altitude`; line 2 column names; then
//!   one CSV row per hour, `MM/DD/YYYY,HH:MM,...`, read by column name.
//! - TMY2: line 1 fixed-width site header (WBAN, city, state, TZ, latitude/longitude as N/S E/W
//!   degrees and minutes, elevation); then one fixed-width line per hour (two-digit year, month,
//!   day, hour, then the fields at the columns of the TMY2 manual, temperature and wind in tenths).
//!
//! Malformed input is an error naming the file, the 1-based line and the field, never a panic.

use std::fmt;
use std::path::Path;

/// Records in a TMY year: 365 days of 24 hours.
pub const HOURS_PER_YEAR: usize = 8760;

/// Days in each month of the (non-leap) TMY year.
const MONTH_DAYS: [u8; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Where a weather station is; angles in degrees, north and east positive.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Station id: USAF (TMY3) or WBAN (TMY2) number.
    pub id: String,
    pub name: String,
    pub state: String,
    /// Local standard time minus UTC, in hours (Greensboro NC: -5).
    pub utc_offset_hours: f64,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub altitude_m: f64,
}

/// One hour of weather. Irradiance is the hour's mean (W/m², numerically its Wh/m²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourRecord {
    /// The source year of this record (TMY months come from different years).
    pub year: i32,
    pub month: u8,
    pub day: u8,
    /// 1..=24: the hour ends at `hour_ending:00` local standard time on `month/day`.
    pub hour_ending: u8,
    /// Global horizontal irradiance.
    pub ghi: f32,
    /// Direct normal irradiance.
    pub dni: f32,
    /// Diffuse horizontal irradiance.
    pub dhi: f32,
    /// Dry-bulb air temperature at the stamp, °C.
    pub temp_air_c: f32,
    /// Wind speed at the stamp, m/s.
    pub wind_speed_ms: f32,
}

/// Which file format a [`Weather`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeatherFormat {
    Tmy3,
    Tmy2,
    /// Built in memory with [`Weather::from_hours`].
    Records,
}

/// Why a weather file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WeatherError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `line` is 1-based; `field` names the column or header field at fault.
    #[error("{path}:{line}: {field}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        reason: String,
    },
}

/// A site and its 8760 hourly records, in calendar order from Jan 1 01:00 (hour ending) to
/// Dec 31 24:00. The order is checked on construction, so record `i` always covers local standard
/// time `[i h, i+1 h)` from Jan 1 00:00.
#[derive(Debug, Clone)]
pub struct Weather {
    site: Site,
    format: WeatherFormat,
    hours: Vec<HourRecord>,
}

impl Weather {
    /// Reads a TMY3 or TMY2 file, telling them apart by content: a TMY3 site line is
    /// comma-separated, a TMY2 one is fixed-width.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Weather, WeatherError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| WeatherError::Io {
            path: name.clone(),
            source,
        })?;
        // Some TMY3 publishers write Latin-1 site names; a replaced character there is harmless,
        // and every field we parse is ASCII.
        Weather::parse(&String::from_utf8_lossy(&bytes), &name)
    }

    /// Parses file contents; `path` is only used in error messages.
    pub fn parse(text: &str, path: &str) -> Result<Weather, WeatherError> {
        let first = text.lines().next().unwrap_or("");
        if first.trim().is_empty() {
            return Err(invalid(
                path,
                1,
                "site header",
                "empty first line: not a TMY3 or TMY2 file",
            ));
        }
        if first.contains(',') {
            Weather::parse_tmy3(text, path)
        } else {
            Weather::parse_tmy2(text, path)
        }
    }

    /// Parses a TMY3 CSV file (NREL, 2015 revision as read by pvlib's `read_tmy3`).
    pub fn parse_tmy3(text: &str, path: &str) -> Result<Weather, WeatherError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let (_, head) = lines
            .next()
            .ok_or_else(|| invalid(path, 1, "site header", "file is empty"))?;
        let site = tmy3_site(head, path)?;

        let (_, names) = lines
            .next()
            .ok_or_else(|| invalid(path, 2, "column names", "file ends after the site line"))?;
        let names: Vec<&str> = names.split(',').map(str::trim).collect();
        let col = |name: &'static str| {
            names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| invalid(path, 2, name, "column missing from the header line"))
        };
        let cols = Tmy3Columns {
            date: col(TMY3_DATE)?,
            time: col(TMY3_TIME)?,
            ghi: col(TMY3_GHI)?,
            dni: col(TMY3_DNI)?,
            dhi: col(TMY3_DHI)?,
            temp: col(TMY3_TEMP)?,
            wind: col(TMY3_WIND)?,
        };

        let mut hours = Vec::with_capacity(HOURS_PER_YEAR);
        let mut last_line = 2;
        for (line, row) in lines {
            last_line = line;
            if row.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = row.split(',').collect();
            if fields.len() != names.len() {
                return Err(invalid(
                    path,
                    line,
                    "row",
                    format!(
                        "{} fields, the header line names {}",
                        fields.len(),
                        names.len()
                    ),
                ));
            }
            let at = Field { path, line };
            let (month, day, year) = at.date(fields[cols.date], TMY3_DATE)?;
            let hour_ending = at.time(fields[cols.time], TMY3_TIME)?;
            let record = HourRecord {
                year,
                month,
                day,
                hour_ending,
                ghi: at.irradiance(fields[cols.ghi], TMY3_GHI, 1.0)?,
                dni: at.irradiance(fields[cols.dni], TMY3_DNI, 1.0)?,
                dhi: at.irradiance(fields[cols.dhi], TMY3_DHI, 1.0)?,
                temp_air_c: at.temperature(fields[cols.temp], TMY3_TEMP, 1.0)?,
                wind_speed_ms: at.wind(fields[cols.wind], TMY3_WIND, 1.0)?,
            };
            push_in_order(&mut hours, record, path, line, TMY3_DATE)?;
        }
        let hours = finish(hours, path, last_line + 1)?;
        Ok(Weather {
            site,
            format: WeatherFormat::Tmy3,
            hours,
        })
    }

    /// Parses a TMY2 fixed-width file (columns as pvlib's `read_tmy2` and the TMY2 manual).
    pub fn parse_tmy2(text: &str, path: &str) -> Result<Weather, WeatherError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let (_, head) = lines
            .next()
            .ok_or_else(|| invalid(path, 1, "site header", "file is empty"))?;
        let site = tmy2_site(head, path)?;

        let mut hours = Vec::with_capacity(HOURS_PER_YEAR);
        let mut last_line = 1;
        for (line, row) in lines {
            last_line = line;
            if row.trim().is_empty() {
                continue;
            }
            let at = Field { path, line };
            let yy = at.int(at.cols(row, 2, 3, "year")?, "year", 0, 99)?;
            let month = at.int(at.cols(row, 4, 5, "month")?, "month", 1, 12)?;
            let day = at.int(at.cols(row, 6, 7, "day")?, "day", 1, 31)?;
            let hour = at.int(at.cols(row, 8, 9, "hour")?, "hour", 1, 24)?;
            let record = HourRecord {
                // TMY2 covers 1961-1990.
                year: 1900 + yy as i32,
                month: month as u8,
                day: day as u8,
                hour_ending: hour as u8,
                ghi: at.irradiance(at.cols(row, 18, 21, "GHI")?, "GHI", 1.0)?,
                dni: at.irradiance(at.cols(row, 24, 27, "DNI")?, "DNI", 1.0)?,
                dhi: at.irradiance(at.cols(row, 30, 33, "DHI")?, "DHI", 1.0)?,
                temp_air_c: at.temperature(at.cols(row, 68, 71, "DryBulb")?, "DryBulb", 0.1)?,
                wind_speed_ms: at.wind(at.cols(row, 96, 98, "Wspd")?, "Wspd", 0.1)?,
            };
            push_in_order(&mut hours, record, path, line, "date")?;
        }
        let hours = finish(hours, path, last_line + 1)?;
        Ok(Weather {
            site,
            format: WeatherFormat::Tmy2,
            hours,
        })
    }

    /// Builds weather from records in memory (synthetic sites for simulator tests), with the same
    /// checks as a file: 8760 records in calendar order, values in physical ranges.
    pub fn from_hours(site: Site, hours: Vec<HourRecord>) -> Result<Weather, WeatherError> {
        const PATH: &str = "<records>";
        check_site(&site, PATH, 1)?;
        let mut ordered = Vec::with_capacity(HOURS_PER_YEAR);
        for (i, h) in hours.into_iter().enumerate() {
            let at = Field {
                path: PATH,
                line: i + 1,
            };
            at.range(f64::from(h.ghi), "ghi", 0.0, MAX_IRRADIANCE)?;
            at.range(f64::from(h.dni), "dni", 0.0, MAX_IRRADIANCE)?;
            at.range(f64::from(h.dhi), "dhi", 0.0, MAX_IRRADIANCE)?;
            at.range(f64::from(h.temp_air_c), "temp_air_c", MIN_TEMP, MAX_TEMP)?;
            at.range(f64::from(h.wind_speed_ms), "wind_speed_ms", 0.0, MAX_WIND)?;
            push_in_order(&mut ordered, h, PATH, i + 1, "month/day/hour_ending")?;
        }
        let n = ordered.len();
        let hours = finish(ordered, PATH, n + 1)?;
        Ok(Weather {
            site,
            format: WeatherFormat::Records,
            hours,
        })
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

    pub fn format(&self) -> WeatherFormat {
        self.format
    }

    /// Exactly [`HOURS_PER_YEAR`] records; record `i` covers local standard time
    /// `[i h, i+1 h)` after Jan 1 00:00.
    pub fn hours(&self) -> &[HourRecord] {
        &self.hours
    }
}

const TMY3_DATE: &str = "Date (MM/DD/YYYY)";
const TMY3_TIME: &str = "Time (HH:MM)";
const TMY3_GHI: &str = "GHI (W/m^2)";
const TMY3_DNI: &str = "DNI (W/m^2)";
const TMY3_DHI: &str = "DHI (W/m^2)";
const TMY3_TEMP: &str = "Dry-bulb (C)";
const TMY3_WIND: &str = "Wspd (m/s)";

/// Bounds that catch garbage and missing-value codes (TMY3 writes -9900) but no real reading:
/// the solar constant is 1361 W/m², cloud enhancement stays below 1.5 times clear sky.
const MAX_IRRADIANCE: f64 = 2000.0;
const MIN_TEMP: f64 = -90.0;
const MAX_TEMP: f64 = 70.0;
const MAX_WIND: f64 = 120.0;

struct Tmy3Columns {
    date: usize,
    time: usize,
    ghi: usize,
    dni: usize,
    dhi: usize,
    temp: usize,
    wind: usize,
}

fn invalid(path: &str, line: usize, field: &str, reason: impl fmt::Display) -> WeatherError {
    WeatherError::Invalid {
        path: path.to_owned(),
        line,
        field: field.to_owned(),
        reason: reason.to_string(),
    }
}

/// One line of one file: the place every parse error points at.
#[derive(Clone, Copy)]
struct Field<'a> {
    path: &'a str,
    line: usize,
}

impl Field<'_> {
    fn err(&self, field: &str, reason: impl fmt::Display) -> WeatherError {
        invalid(self.path, self.line, field, reason)
    }

    /// 1-based inclusive columns `from..=to` of a fixed-width line.
    fn cols<'l>(
        &self,
        row: &'l str,
        from: usize,
        to: usize,
        field: &str,
    ) -> Result<&'l str, WeatherError> {
        row.get(from - 1..to).ok_or_else(|| {
            self.err(
                field,
                format!(
                    "line is {} characters, the field is at columns {from}-{to}",
                    row.len()
                ),
            )
        })
    }

    fn number(&self, raw: &str, field: &str) -> Result<f64, WeatherError> {
        let s = raw.trim();
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(field, format!("{s:?} is not a number"))),
        }
    }

    fn range(&self, v: f64, field: &str, lo: f64, hi: f64) -> Result<f64, WeatherError> {
        if v.is_nan() {
            return Err(self.err(field, "value is NaN"));
        }
        if v == -9900.0 {
            return Err(self.err(field, "missing value (-9900)"));
        }
        if v < lo || v > hi {
            return Err(self.err(field, format!("{v} is outside {lo}..{hi}")));
        }
        Ok(v)
    }

    fn int(&self, raw: &str, field: &str, lo: i64, hi: i64) -> Result<i64, WeatherError> {
        let s = raw.trim();
        let v: i64 = s
            .parse()
            .map_err(|_| self.err(field, format!("{s:?} is not an integer")))?;
        if v < lo || v > hi {
            return Err(self.err(field, format!("{v} is outside {lo}..{hi}")));
        }
        Ok(v)
    }

    fn scaled(
        &self,
        raw: &str,
        field: &str,
        scale: f64,
        lo: f64,
        hi: f64,
    ) -> Result<f32, WeatherError> {
        let v = self.number(raw, field)?;
        // Before scaling, so TMY3's -9900 missing code is recognised as such.
        if v == -9900.0 {
            return Err(self.err(field, "missing value (-9900)"));
        }
        Ok(self.range(v * scale, field, lo, hi)? as f32)
    }

    fn irradiance(&self, raw: &str, field: &str, scale: f64) -> Result<f32, WeatherError> {
        self.scaled(raw, field, scale, 0.0, MAX_IRRADIANCE)
    }

    fn temperature(&self, raw: &str, field: &str, scale: f64) -> Result<f32, WeatherError> {
        self.scaled(raw, field, scale, MIN_TEMP, MAX_TEMP)
    }

    fn wind(&self, raw: &str, field: &str, scale: f64) -> Result<f32, WeatherError> {
        self.scaled(raw, field, scale, 0.0, MAX_WIND)
    }

    /// `MM/DD/YYYY` → (month, day, year).
    fn date(&self, raw: &str, field: &str) -> Result<(u8, u8, i32), WeatherError> {
        let bad = || self.err(field, format!("{:?} is not MM/DD/YYYY", raw.trim()));
        let mut parts = raw.trim().split('/');
        let (Some(m), Some(d), Some(y), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let month = self.int(m, field, 1, 12).map_err(|_| bad())?;
        let day = self.int(d, field, 1, 31).map_err(|_| bad())?;
        let year = self.int(y, field, 1000, 9999).map_err(|_| bad())?;
        Ok((month as u8, day as u8, year as i32))
    }

    /// `HH:00` with HH in 01..=24 → hour ending.
    fn time(&self, raw: &str, field: &str) -> Result<u8, WeatherError> {
        let s = raw.trim();
        let bad = || {
            self.err(
                field,
                format!("{s:?} is not an hour ending 01:00..24:00 (HH:00)"),
            )
        };
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if m != "00" {
            return Err(bad());
        }
        let hour = self.int(h, field, 1, 24).map_err(|_| bad())?;
        Ok(hour as u8)
    }
}

/// The (month, day, hour_ending) that record `index` of a TMY year must have.
fn expected_stamp(index: usize) -> (u8, u8, u8) {
    let hour_ending = (index % 24) as u8 + 1;
    let mut day_of_year = index / 24;
    let mut month = 0;
    while day_of_year >= usize::from(MONTH_DAYS[month]) {
        day_of_year -= usize::from(MONTH_DAYS[month]);
        month += 1;
    }
    (month as u8 + 1, day_of_year as u8 + 1, hour_ending)
}

fn push_in_order(
    hours: &mut Vec<HourRecord>,
    record: HourRecord,
    path: &str,
    line: usize,
    field: &str,
) -> Result<(), WeatherError> {
    let index = hours.len();
    if index >= HOURS_PER_YEAR {
        return Err(invalid(
            path,
            line,
            field,
            format!("more than {HOURS_PER_YEAR} hourly records (a TMY year has 365 days)"),
        ));
    }
    let (month, day, hour) = expected_stamp(index);
    if (record.month, record.day, record.hour_ending) != (month, day, hour) {
        return Err(invalid(
            path,
            line,
            field,
            format!(
                "record {} of the year should be {month:02}/{day:02} hour ending {hour:02}:00, \
                 found {:02}/{:02} hour ending {:02}:00 (TMY years have no Feb 29 and no gaps)",
                index + 1,
                record.month,
                record.day,
                record.hour_ending
            ),
        ));
    }
    hours.push(record);
    Ok(())
}

fn finish(
    hours: Vec<HourRecord>,
    path: &str,
    end_line: usize,
) -> Result<Vec<HourRecord>, WeatherError> {
    if hours.len() != HOURS_PER_YEAR {
        return Err(invalid(
            path,
            end_line,
            "records",
            format!(
                "file ends after {} of {HOURS_PER_YEAR} hourly records (truncated?)",
                hours.len()
            ),
        ));
    }
    Ok(hours)
}

fn check_site(site: &Site, path: &str, line: usize) -> Result<(), WeatherError> {
    let at = Field { path, line };
    at.range(site.latitude_deg, "latitude", -90.0, 90.0)?;
    at.range(site.longitude_deg, "longitude", -180.0, 180.0)?;
    at.range(site.utc_offset_hours, "TZ", -12.0, 14.0)?;
    at.range(site.altitude_m, "altitude", -500.0, 9000.0)?;
    Ok(())
}

/// Splits a CSV line whose fields may be double-quoted (TMY3 quotes the station name).
fn split_quoted(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

fn tmy3_site(line: &str, path: &str) -> Result<Site, WeatherError> {
    let f = split_quoted(line);
    if f.len() < 7 {
        return Err(invalid(
            path,
            1,
            "site header",
            format!(
                "{} fields, expected USAF,Name,State,TZ,latitude,longitude,altitude",
                f.len()
            ),
        ));
    }
    let at = Field { path, line: 1 };
    let site = Site {
        id: f[0].trim().to_owned(),
        name: f[1].trim().to_owned(),
        state: f[2].trim().to_owned(),
        utc_offset_hours: at.number(&f[3], "TZ")?,
        latitude_deg: at.number(&f[4], "latitude")?,
        longitude_deg: at.number(&f[5], "longitude")?,
        altitude_m: at.number(&f[6], "altitude")?,
    };
    check_site(&site, path, 1)?;
    Ok(site)
}

fn tmy2_site(line: &str, path: &str) -> Result<Site, WeatherError> {
    let at = Field { path, line: 1 };
    // Columns from the TMY2 manual's header record (also what pvlib's `read_tmy2` reads).
    let hemisphere =
        |from: usize, pos: char, neg: char, field: &str| match at.cols(line, from, from, field)? {
            s if s == pos.to_string() => Ok(1.0),
            s if s == neg.to_string() => Ok(-1.0),
            s => Err(at.err(field, format!("{s:?} is neither {pos} nor {neg}"))),
        };
    let lat_sign = hemisphere(38, 'N', 'S', "latitude")?;
    let lat_deg = at.int(at.cols(line, 40, 41, "latitude")?, "latitude", 0, 90)?;
    let lat_min = at.int(at.cols(line, 43, 44, "latitude")?, "latitude", 0, 59)?;
    let lon_sign = hemisphere(46, 'E', 'W', "longitude")?;
    let lon_deg = at.int(at.cols(line, 48, 50, "longitude")?, "longitude", 0, 180)?;
    let lon_min = at.int(at.cols(line, 52, 53, "longitude")?, "longitude", 0, 59)?;
    let site = Site {
        id: at.cols(line, 2, 6, "WBAN")?.trim().to_owned(),
        name: at.cols(line, 8, 29, "City")?.trim().to_owned(),
        state: at.cols(line, 31, 32, "State")?.trim().to_owned(),
        utc_offset_hours: at.int(at.cols(line, 34, 36, "TZ")?, "TZ", -12, 14)? as f64,
        latitude_deg: lat_sign * (lat_deg as f64 + lat_min as f64 / 60.0),
        longitude_deg: lon_sign * (lon_deg as f64 + lon_min as f64 / 60.0),
        altitude_m: at.number(
            line.get(55..)
                .ok_or_else(|| at.err("elevation", "line ends before column 56"))?,
            "elevation",
        )?,
    };
    check_site(&site, path, 1)?;
    Ok(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TMY3_HEAD: &str = "723170,\"GREENSBORO, PIEDMONT\",NC,-5.0,36.100,-79.950,273\n\
        Date (MM/DD/YYYY),Time (HH:MM),GHI (W/m^2),DNI (W/m^2),DHI (W/m^2),\
        Dry-bulb (C),Wspd (m/s)\n";
    const TMY2_HEAD: &str = " 12839 MIAMI                  FL  -5 N 25 48 W  80 16     2\n";

    /// A synthetic TMY3 year: sun 100/200/50 W/m² from 09:00 to 15:00 (hour ending).
    fn tmy3_year() -> String {
        let mut s = String::from(TMY3_HEAD);
        for i in 0..HOURS_PER_YEAR {
            let (m, d, h) = expected_stamp(i);
            let sun = (10..=15).contains(&h);
            let (g, b, df) = if sun { (100, 200, 50) } else { (0, 0, 0) };
            s += &format!("{m:02}/{d:02}/1990,{h:02}:00,{g},{b},{df},12.5,3.1\n");
        }
        s
    }

    /// A synthetic TMY2 year in the manual's column layout (142 characters a line).
    fn tmy2_year() -> String {
        let mut s = String::from(TMY2_HEAD);
        for i in 0..HOURS_PER_YEAR {
            let (m, d, h) = expected_stamp(i);
            let mut line = vec![b' '; 142];
            let mut put = |from: usize, text: &str| {
                line[from - 1..from - 1 + text.len()].copy_from_slice(text.as_bytes());
            };
            put(2, &format!("62{m:02}{d:02}{h:02}"));
            put(18, &format!("{:4}", if h == 12 { 500 } else { 0 }));
            put(24, &format!("{:4}", if h == 12 { 600 } else { 0 }));
            put(30, &format!("{:4}", if h == 12 { 100 } else { 0 }));
            put(68, &format!("{:4}", -35));
            put(96, &format!("{:3}", 41));
            s += std::str::from_utf8(&line).unwrap();
            s.push('\n');
        }
        s
    }

    fn err_of(r: Result<Weather, WeatherError>) -> (usize, String, String) {
        match r {
            Err(WeatherError::Invalid {
                line,
                field,
                reason,
                ..
            }) => (line, field, reason),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("malformed input was accepted"),
        }
    }

    #[test]
    fn calendar_stamps_cover_one_non_leap_year() {
        assert_eq!(expected_stamp(0), (1, 1, 1));
        assert_eq!(expected_stamp(23), (1, 1, 24));
        assert_eq!(expected_stamp(24 * 31), (2, 1, 1));
        assert_eq!(expected_stamp(24 * 59), (3, 1, 1)); // no Feb 29
        assert_eq!(expected_stamp(HOURS_PER_YEAR - 1), (12, 31, 24));
    }

    #[test]
    fn tmy3_reads_site_and_hours() {
        let w = Weather::parse(&tmy3_year(), "x.csv").unwrap();
        assert_eq!(w.format(), WeatherFormat::Tmy3);
        let s = w.site();
        assert_eq!(s.name, "GREENSBORO, PIEDMONT");
        assert_eq!(
            (
                s.utc_offset_hours,
                s.latitude_deg,
                s.longitude_deg,
                s.altitude_m
            ),
            (-5.0, 36.1, -79.95, 273.0)
        );
        assert_eq!(w.hours().len(), HOURS_PER_YEAR);
        let noon = w.hours()[11];
        assert_eq!((noon.month, noon.day, noon.hour_ending), (1, 1, 12));
        assert_eq!(
            (
                noon.ghi,
                noon.dni,
                noon.dhi,
                noon.temp_air_c,
                noon.wind_speed_ms
            ),
            (100.0, 200.0, 50.0, 12.5, 3.1)
        );
    }

    #[test]
    fn tmy2_reads_site_and_scales_tenths() {
        let w = Weather::parse(&tmy2_year(), "x.tm2").unwrap();
        assert_eq!(w.format(), WeatherFormat::Tmy2);
        let s = w.site();
        assert_eq!(
            (s.id.as_str(), s.name.as_str(), s.state.as_str()),
            ("12839", "MIAMI", "FL")
        );
        assert_eq!((s.utc_offset_hours, s.altitude_m), (-5.0, 2.0));
        assert!((s.latitude_deg - 25.8).abs() < 1e-9);
        assert!((s.longitude_deg + 80.0 + 16.0 / 60.0).abs() < 1e-9);
        let noon = w.hours()[11];
        assert_eq!(
            (noon.year, noon.hour_ending, noon.ghi, noon.dni, noon.dhi),
            (1962, 12, 500.0, 600.0, 100.0)
        );
        assert!((noon.temp_air_c + 3.5).abs() < 1e-6 && (noon.wind_speed_ms - 4.1).abs() < 1e-6);
    }

    #[test]
    fn truncated_files_name_the_end_line() {
        let full = tmy3_year();
        let cut: String = full.lines().take(1000).map(|l| format!("{l}\n")).collect();
        let (line, field, reason) = err_of(Weather::parse(&cut, "cut.csv"));
        assert_eq!((line, field.as_str()), (1001, "records"));
        assert!(reason.contains("998 of 8760"), "{reason}");

        // Cut in the middle of a row: too few fields, named at that line.
        let mid = &full[..full.len() - 10];
        let (line, field, _) = err_of(Weather::parse(mid, "cut.csv"));
        assert_eq!((line, field.as_str()), (HOURS_PER_YEAR + 2, "row"));

        let full2 = tmy2_year();
        let mid2 = &full2[..full2.len() - 100];
        let (line, field, reason) = err_of(Weather::parse(mid2, "cut.tm2"));
        assert_eq!(
            (line, field.as_str()),
            (HOURS_PER_YEAR + 1, "DryBulb"),
            "{reason}"
        );

        assert!(matches!(
            Weather::parse("", "e"),
            Err(WeatherError::Invalid { line: 1, .. })
        ));
        let (line, field, _) = err_of(Weather::parse(TMY3_HEAD.lines().next().unwrap(), "h.csv"));
        assert_eq!((line, field.as_str()), (2, "column names"));
    }

    #[test]
    fn garbled_fields_are_named() {
        let year = tmy3_year();
        let garble = |line_no: usize, from: &str, to: &str| -> String {
            year.lines()
                .enumerate()
                .map(|(i, l)| {
                    let l = if i + 1 == line_no {
                        l.replacen(from, to, 1)
                    } else {
                        l.to_owned()
                    };
                    l + "\n"
                })
                .collect()
        };
        let cases = [
            (garble(14, ",100,", ",1x0,"), 14, TMY3_GHI, "not a number"),
            (garble(14, ",200,", ",-9900,"), 14, TMY3_DNI, "missing"),
            (garble(14, ",50,", ",5000,"), 14, TMY3_DHI, "outside"),
            (garble(14, "12.5", "NaN"), 14, TMY3_TEMP, "not a number"),
            (garble(100, "1990", "19x0"), 100, TMY3_DATE, "MM/DD/YYYY"),
            (garble(100, ":00", ":30"), 100, TMY3_TIME, "HH:00"),
            (
                garble(5, "01/01", "01/02"),
                5,
                TMY3_DATE,
                "should be 01/01 hour ending 03:00",
            ),
            (garble(1, "36.100", "north"), 1, "latitude", "not a number"),
            (garble(1, "36.100", "136.1"), 1, "latitude", "outside"),
            (garble(2, "GHI (W/m^2)", "GHI"), 2, TMY3_GHI, "missing"),
        ];
        for (text, line, field, reason) in cases {
            let (l, f, r) = err_of(Weather::parse(&text, "g.csv"));
            assert_eq!((l, f.as_str()), (line, field), "{r}");
            assert!(r.contains(reason), "{field}: {r:?} lacks {reason:?}");
        }
        // The message names file, line and field.
        let e = Weather::parse(&garble(14, ",100,", ",1x0,"), "site/g.csv")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("site/g.csv:14: GHI (W/m^2): "), "{e}");

        let y2 = tmy2_year();
        let mut lines: Vec<String> = y2.lines().map(str::to_owned).collect();
        lines[20].replace_range(67..71, "  4x");
        let (l, f, _) = err_of(Weather::parse(&(lines.join("\n") + "\n"), "g.tm2"));
        assert_eq!((l, f.as_str()), (21, "DryBulb"));
        let mut head = y2.clone();
        head.replace_range(37..38, "X");
        let (l, f, r) = err_of(Weather::parse(&head, "g.tm2"));
        assert_eq!((l, f.as_str()), (1, "latitude"), "{r}");
        // Non-ASCII garbage where a fixed-width field is: an error, not a slicing panic.
        let mut bytes: Vec<String> = y2.lines().map(str::to_owned).collect();
        bytes[3].replace_range(16..18, "éé");
        let (l, _, _) = err_of(Weather::parse(&(bytes.join("\n") + "\n"), "g.tm2"));
        assert_eq!(l, 4);
    }

    #[test]
    fn extra_records_and_leap_days_are_rejected() {
        let mut year = tmy3_year();
        year += "01/01/1991,01:00,0,0,0,1.0,1.0\n";
        let (l, f, r) = err_of(Weather::parse(&year, "x.csv"));
        assert_eq!((l, f.as_str()), (HOURS_PER_YEAR + 3, TMY3_DATE));
        assert!(r.contains("more than 8760"), "{r}");

        let leap = tmy3_year().replacen("03/01/1990,01:00", "02/29/1990,01:00", 1);
        let (l, _, r) = err_of(Weather::parse(&leap, "x.csv"));
        assert_eq!(l, 2 + 24 * 59 + 1);
        assert!(r.contains("Feb 29"), "{r}");
    }

    #[test]
    fn from_hours_checks_like_a_file() {
        let w = Weather::parse(&tmy3_year(), "x.csv").unwrap();
        let again = Weather::from_hours(w.site().clone(), w.hours().to_vec()).unwrap();
        assert_eq!(again.hours(), w.hours());
        let mut bad = w.hours().to_vec();
        bad[7].dni = -1.0;
        let (l, f, _) = err_of(Weather::from_hours(w.site().clone(), bad));
        assert_eq!((l, f.as_str()), (8, "dni"));
        let (l, f, _) = err_of(Weather::from_hours(
            w.site().clone(),
            w.hours()[..10].to_vec(),
        ));
        assert_eq!((l, f.as_str()), (11, "records"));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let e = Weather::from_path("/nonexistent/tmy.csv").unwrap_err();
        assert!(matches!(e, WeatherError::Io { .. }));
        assert!(e
            .to_string()
            .starts_with("/nonexistent/tmy.csv: cannot read"));
    }
}
