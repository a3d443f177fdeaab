//! The Rust PV model (`sim::pv`) against pvlib, on the three NREL TMY files that pvlib ships.
//!
//! `tools/pv/reference.py` runs pvlib's standard chain (`read_tmy3` / `read_tmy2`,
//! `solarposition.get_solarposition`, `irradiance.get_total_irradiance` with Hay-Davies,
//! `iam.physical`, `temperature.sapm_cell`, `pvsystem.pvwatts_dc`; PyPI `pvlib` 0.16.1, see
//! `/work/shared/UPSTREAM.md`) with `PanelConfig::default()`'s parameters and writes the hourly
//! result to `tests/data/pv_reference/`. Here the Rust model reads the same TMY files and must
//! stay within 5 % of pvlib: annual energy, energy of every month with meaningful production, and
//! hourly RMS error relative to mean daylight output. The hourly bound is what catches a shift in
//! time (an hour-convention sign error keeps monthly energy but moves every hour).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use edgewatt_controller::sim::pv::{self, PanelConfig, SiteSolar, MINUTES_PER_YEAR};
use edgewatt_controller::sim::weather::{Weather, WeatherFormat, HOURS_PER_YEAR};

/// (weather file, reference stem, format).
const FILES: [(&str, &str, WeatherFormat); 3] = [
    ("723170TYA.CSV", "723170TYA", WeatherFormat::Tmy3),
    ("703165TY.csv", "703165TY", WeatherFormat::Tmy3),
    ("12839.tm2", "12839", WeatherFormat::Tmy2),
];

/// The tolerance the simulator needs: 5 % of energy.
const TOLERANCE_PCT: f64 = 5.0;

/// A month counts as producing when it has at least this share of the best month's energy
/// (Sand Point, Alaska makes almost nothing in December; 5 % of almost nothing is noise).
const MEANINGFUL_MONTH_SHARE: f64 = 0.2;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// One pvlib reference file: its `#` header lines and, per record, (poa_global, temp_cell,
/// dc_w_per_wp). Records not listed had no light (all zero).
struct Reference {
    header: Vec<String>,
    rows: BTreeMap<usize, [f64; 3]>,
}

fn read_reference(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/pv/reference.py)", path.display()));
    let mut header = Vec::new();
    let mut rows = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            header.push(line.to_owned());
            continue;
        }
        if line.starts_with("record") || line.is_empty() {
            continue;
        }
        let f: Vec<f64> = line
            .split(',')
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{}:{}: {v:?}", path.display(), n + 1))
            })
            .collect();
        assert_eq!(f.len(), 4, "{}:{}", path.display(), n + 1);
        rows.insert(f[0] as usize, [f[1], f[2], f[3]]);
    }
    Reference { header, rows }
}

impl Reference {
    /// One column over the whole year, zeros where the file has no row.
    fn column(&self, c: usize) -> Vec<f64> {
        let mut v = vec![0.0; HOURS_PER_YEAR];
        for (&i, r) in &self.rows {
            v[i] = r[c];
        }
        v
    }
}

const POA: usize = 0;
const TEMP_CELL: usize = 1;
const DC: usize = 2;

/// Errors of a modelled hourly series against the reference, in percent of the reference.
#[derive(Debug)]
struct Agreement {
    annual_pct: f64,
    /// (month 1..=12, reference energy, error %), every month.
    monthly: Vec<(usize, f64, f64)>,
    /// RMS of the hourly difference, in the series' unit.
    hourly_rms: f64,
    /// `hourly_rms` over the mean of the reference's non-zero hours, %.
    hourly_nrmse_pct: f64,
}

fn month_of(record: usize) -> usize {
    const DAYS: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut day = record / 24;
    for (m, d) in DAYS.iter().enumerate() {
        if day < *d {
            return m + 1;
        }
        day -= d;
    }
    unreachable!("record {record} beyond the year")
}

fn agreement(model: &[f64], reference: &[f64]) -> Agreement {
    assert_eq!(model.len(), HOURS_PER_YEAR);
    assert_eq!(reference.len(), HOURS_PER_YEAR);
    let pct = |m: f64, r: f64| 100.0 * (m - r) / r;
    let (m_sum, r_sum): (f64, f64) = (model.iter().sum(), reference.iter().sum());
    let mut months = [(0.0, 0.0); 12];
    for (i, (m, r)) in model.iter().zip(reference).enumerate() {
        let e = &mut months[month_of(i) - 1];
        e.0 += m;
        e.1 += r;
    }
    let sq: f64 = model
        .iter()
        .zip(reference)
        .map(|(m, r)| (m - r).powi(2))
        .sum();
    let hourly_rms = (sq / HOURS_PER_YEAR as f64).sqrt();
    let lit: Vec<f64> = reference.iter().copied().filter(|&r| r > 0.0).collect();
    let lit_mean = lit.iter().sum::<f64>() / lit.len() as f64;
    Agreement {
        annual_pct: pct(m_sum, r_sum),
        monthly: months
            .iter()
            .enumerate()
            .map(|(i, &(m, r))| (i + 1, r, if r > 0.0 { pct(m, r) } else { 0.0 }))
            .collect(),
        hourly_rms,
        hourly_nrmse_pct: 100.0 * hourly_rms / lit_mean,
    }
}

/// Every bound the model must meet; the error lists every one it misses.
fn within_tolerance(a: &Agreement) -> Result<(), String> {
    let mut misses = Vec::new();
    if a.annual_pct.abs() > TOLERANCE_PCT {
        misses.push(format!("annual {:+.2} %", a.annual_pct));
    }
    let best = a.monthly.iter().map(|m| m.1).fold(0.0, f64::max);
    for &(month, r, e) in &a.monthly {
        if r >= MEANINGFUL_MONTH_SHARE * best && e.abs() > TOLERANCE_PCT {
            misses.push(format!("month {month} {e:+.2} %"));
        }
    }
    if a.hourly_nrmse_pct > TOLERANCE_PCT {
        misses.push(format!("hourly NRMSE {:.2} %", a.hourly_nrmse_pct));
    }
    if misses.is_empty() {
        Ok(())
    } else {
        Err(misses.join(", "))
    }
}

fn report(name: &str, what: &str, a: &Agreement) {
    let months: Vec<String> = a
        .monthly
        .iter()
        .map(|(m, _, e)| format!("{m}:{e:+.2}"))
        .collect();
    println!(
        "{name} {what}: annual {:+.3} %, hourly RMS {:.5} (NRMSE {:.3} %), monthly % [{}]",
        a.annual_pct,
        a.hourly_rms,
        a.hourly_nrmse_pct,
        months.join(" ")
    );
}

fn load(file: &str, format: WeatherFormat) -> Weather {
    let w = Weather::from_path(data(&format!("weather/{file}"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.format(), format, "{file}: format detected by content");
    w
}

#[test]
fn dc_power_matches_pvlib_within_5_percent() {
    for (file, stem, format) in FILES {
        let weather = load(file, format);
        let reference = read_reference(&data(&format!("pv_reference/{stem}.pv.csv")));
        let model = pv::hourly(&weather, &PanelConfig::default()).unwrap();

        let dc: Vec<f64> = model.iter().map(|h| h.dc_w_per_wp).collect();
        let a = agreement(&dc, &reference.column(DC));
        report(file, "DC", &a);
        let annual: f64 = reference.column(DC).iter().sum();
        println!("{file} pvlib annual DC {annual:.1} kWh/kWp");
        within_tolerance(&a).unwrap_or_else(|e| panic!("{file}: DC off pvlib: {e}"));

        // The intermediates, so that a drift says where it is.
        let poa: Vec<f64> = model.iter().map(|h| h.poa_global).collect();
        let a = agreement(&poa, &reference.column(POA));
        report(file, "POA", &a);
        within_tolerance(&a).unwrap_or_else(|e| panic!("{file}: POA off pvlib: {e}"));
        let ref_temp = reference.column(TEMP_CELL);
        let lit: Vec<usize> = reference.rows.keys().copied().collect();
        let temp_rms = (lit
            .iter()
            .map(|&i| (model[i].temp_cell_c - ref_temp[i]).powi(2))
            .sum::<f64>()
            / lit.len() as f64)
            .sqrt();
        println!("{file} cell temperature RMS over lit hours {temp_rms:.3} °C");
        assert!(temp_rms < 1.0, "{file}: cell temperature RMS {temp_rms} °C");
    }
}

/// Site metadata as pvlib's `read_tmy3` / `read_tmy2` report it for the same files, and the
/// first hour's readings (`temp_air`, `wind_speed`; TMY2 `DryBulb`, `Wspd` over 10), as
/// pvlib 0.16.1 reads them.
#[test]
fn real_files_parse_like_pvlib() {
    let expect = [
        (
            "723170TYA.CSV",
            "723170",
            "GREENSBORO PIEDMONT TRIAD INT",
            -5.0,
            36.1,
            -79.95,
            273.0,
            10.0,
            6.2,
        ),
        (
            "703165TY.csv",
            "703165",
            "SAND POINT",
            -9.0,
            55.317,
            -160.517,
            7.0,
            4.0,
            2.1,
        ),
        (
            "12839.tm2",
            "12839",
            "MIAMI",
            -5.0,
            25.8,
            -80.0 - 16.0 / 60.0,
            2.0,
            20.0,
            6.7,
        ),
    ];
    for ((file, _, format), (f, id, name, tz, lat, lon, alt, temp, wind)) in
        FILES.into_iter().zip(expect)
    {
        assert_eq!(file, f);
        let w = load(file, format);
        let s = w.site();
        assert_eq!((s.id.as_str(), s.name.as_str()), (id, name), "{file}");
        assert_eq!(s.utc_offset_hours, tz, "{file}");
        assert!(
            (s.latitude_deg - lat).abs() < 1e-9 && (s.longitude_deg - lon).abs() < 1e-9,
            "{file}"
        );
        assert_eq!(s.altitude_m, alt, "{file}");
        let first = w.hours()[0];
        assert_eq!((first.month, first.day, first.hour_ending), (1, 1, 1));
        assert!(
            (first.temp_air_c - temp).abs() < 1e-4 && (first.wind_speed_ms - wind).abs() < 1e-4,
            "{file}: {first:?}"
        );
        let last = w.hours()[HOURS_PER_YEAR - 1];
        assert_eq!((last.month, last.day, last.hour_ending), (12, 31, 24));
    }
}

/// A real file cut short or garbled is an error naming file, line and field.
#[test]
fn damaged_real_files_are_named_errors() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("damaged_tmy");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, _, _) in FILES {
        let text = std::fs::read_to_string(data(&format!("weather/{file}"))).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        let cut = dir.join(format!("cut-{file}"));
        std::fs::write(&cut, lines[..5000].join("\n")).unwrap();
        let e = Weather::from_path(&cut).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:5001: records:", cut.display())),
            "{e}"
        );

        let mut garbled: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let row = &mut garbled[4321];
        // Overwrite GHI's digits: TMY3 field 5, TMY2 columns 18-21.
        if file.ends_with(".tm2") {
            row.replace_range(17..21, "12#4");
        } else {
            let mut f: Vec<&str> = row.split(',').collect();
            f[4] = "12#4";
            *row = f.join(",");
        }
        let bad = dir.join(format!("garbled-{file}"));
        std::fs::write(&bad, garbled.join("\n")).unwrap();
        let e = Weather::from_path(&bad).unwrap_err().to_string();
        let field = if file.ends_with(".tm2") {
            "GHI"
        } else {
            "GHI (W/m^2)"
        };
        assert!(
            e.starts_with(&format!(
                "{}:4322: {field}: \"12#4\" is not a number",
                bad.display()
            )),
            "{e}"
        );
    }
}

/// Tighter than the 5 % contract: the Rust model is pvlib's chain formula for formula (only the
/// sun's position comes from a shorter algorithm, within 0.02° of SPA), so anything beyond
/// rounding is a drift. Measured: 0.001 % annual, 0.005 % hourly. A wrong ground-reflection
/// input, a missing glass reflection loss or a dropped cell-temperature term each move a file's
/// output by 0.6-2 %, within 5 % but not within these bounds.
#[test]
fn port_follows_pvlib_formula_for_formula() {
    const ANNUAL_PCT: f64 = 0.2;
    const NRMSE_PCT: f64 = 0.5;
    for (file, stem, format) in FILES {
        let weather = load(file, format);
        let reference = read_reference(&data(&format!("pv_reference/{stem}.pv.csv")));
        let model = pv::hourly(&weather, &PanelConfig::default()).unwrap();
        let series: [(&str, Vec<f64>, usize); 2] = [
            ("DC", model.iter().map(|h| h.dc_w_per_wp).collect(), DC),
            ("POA", model.iter().map(|h| h.poa_global).collect(), POA),
        ];
        for (what, values, column) in series {
            let a = agreement(&values, &reference.column(column));
            assert!(
                a.annual_pct.abs() < ANNUAL_PCT && a.hourly_nrmse_pct < NRMSE_PCT,
                "{file} {what}: annual {:+.3} %, hourly NRMSE {:.3} %",
                a.annual_pct,
                a.hourly_nrmse_pct
            );
        }
    }
}

/// The check itself must notice time errors: the model's output moved by one hour (what a sign
/// error in the hour-ending convention does) fails it on every file.
#[test]
fn an_hour_shift_fails_the_check() {
    for (file, stem, format) in FILES {
        let weather = load(file, format);
        let reference = read_reference(&data(&format!("pv_reference/{stem}.pv.csv")));
        let dc: Vec<f64> = pv::hourly(&weather, &PanelConfig::default())
            .unwrap()
            .iter()
            .map(|h| h.dc_w_per_wp)
            .collect();
        for shift in [1, HOURS_PER_YEAR - 1] {
            let mut shifted = dc.clone();
            shifted.rotate_right(shift);
            let a = agreement(&shifted, &reference.column(DC));
            assert!(
                within_tolerance(&a).is_err(),
                "{file}: a {shift} h shift passed: {a:?}"
            );
        }
    }
}

/// `SiteSolar`, the simulator's per-minute table, carries the same energy as pvlib.
#[test]
fn per_minute_table_keeps_pvlib_energy() {
    for (file, stem, format) in FILES {
        let weather = load(file, format);
        let reference = read_reference(&data(&format!("pv_reference/{stem}.pv.csv")));
        let started = std::time::Instant::now();
        let solar = SiteSolar::from_weather(&weather, &PanelConfig::default()).unwrap();
        println!(
            "{file}: SiteSolar::from_weather took {:?}",
            started.elapsed()
        );
        let ref_wh: f64 = reference.column(DC).iter().sum();
        let err = 100.0 * (solar.annual_wh_per_wp() - ref_wh) / ref_wh;
        println!(
            "{file}: per-minute annual {:.1} Wh/Wp, {err:+.3} % vs pvlib hourly",
            solar.annual_wh_per_wp()
        );
        assert!(err.abs() < TOLERANCE_PCT, "{file}: {err} %");
        let mut peak = 0.0f32;
        for m in 0..MINUTES_PER_YEAR {
            let w = solar.watts_per_wp(m);
            assert!(w.is_finite() && w >= 0.0, "{file}: minute {m}: {w}");
            peak = peak.max(w);
        }
        // Sunny cold hours reach about pdc0 less 14 % losses; never far above it.
        assert!(peak > 0.6 && peak < 1.2, "{file}: peak {peak} W/Wp");
    }
}

/// The sun position (Meeus low precision) against pvlib's NREL SPA for Greensboro, every 5th
/// hour of the year, at the same mid-hour instants.
#[test]
fn solar_position_matches_spa() {
    let weather = load("723170TYA.CSV", WeatherFormat::Tmy3);
    let model = pv::hourly(&weather, &PanelConfig::default()).unwrap();
    let text = std::fs::read_to_string(data("pv_reference/solpos_723170TYA.csv")).unwrap();
    let (mut worst_zenith, mut worst_azimuth, mut n) = (0.0f64, 0.0f64, 0);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("record"))
    {
        let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        let sun = model[f[0] as usize].sun;
        // Below the horizon refraction switches off at a threshold (SPA: 0.83° down), where a
        // 0.01° difference can flip it; only daylight matters for power.
        if f[1] < 90.0 {
            worst_zenith = worst_zenith.max((sun.apparent_zenith_deg - f[1]).abs());
            let d = (sun.azimuth_deg - f[2] + 540.0).rem_euclid(360.0) - 180.0;
            worst_azimuth = worst_azimuth.max(d.abs());
        }
        n += 1;
    }
    println!(
        "solar position vs SPA over {n} hours: max |Δzenith| {worst_zenith:.4}°, \
         max |Δazimuth| {worst_azimuth:.4}° (sun up)"
    );
    assert_eq!(n, HOURS_PER_YEAR / 5);
    assert!(worst_zenith < 0.05, "{worst_zenith}");
    assert!(worst_azimuth < 0.05, "{worst_azimuth}");
}

/// A Python with pvlib: `$PVLIB_PYTHON`, the workspace's `.pvenv` or `.venv`, or `python3`.
fn python_with_pvlib() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = std::env::var_os("PVLIB_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            root.join(".pvenv/bin/python"),
            root.join(".venv/bin/python"),
            PathBuf::from("python3"),
        ]);
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import pvlib"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Running `tools/pv/reference.py` again gives the committed CSVs (to rounding: numpy versions
/// may differ in the last printed digit). Skips, loudly, where no Python has pvlib, unless
/// `EDGEWATT_REQUIRE_PVLIB=1` makes that a failure.
#[test]
fn committed_references_regenerate_from_pvlib() {
    let Some(python) = python_with_pvlib() else {
        let msg = "no Python with pvlib (tried $PVLIB_PYTHON, .pvenv, .venv, python3); install \
                   with `python3 -m venv .pvenv && .pvenv/bin/pip install -r \
                   tools/pv/requirements.txt`";
        if std::env::var("EDGEWATT_REQUIRE_PVLIB").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED committed_references_regenerate_from_pvlib: {msg}");
        println!("SKIPPED committed_references_regenerate_from_pvlib: {msg}");
        return;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pv_reference_regenerated");
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/pv/reference.py");
    let run = Command::new(&python)
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{} {}: {}",
        python.display(),
        script.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{}", String::from_utf8_lossy(&run.stdout).trim());

    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let committed = data("pv_reference");
    assert_eq!(names(&out), names(&committed));
    for (_, stem, _) in FILES {
        let name = format!("{stem}.pv.csv");
        let (new, old) = (
            read_reference(&out.join(&name)),
            read_reference(&committed.join(&name)),
        );
        assert_eq!(new.header, old.header, "{name}: parameters changed");
        let records: std::collections::BTreeSet<usize> =
            new.rows.keys().chain(old.rows.keys()).copied().collect();
        for i in records {
            let (n, o) = (
                new.rows.get(&i).unwrap_or(&[0.0; 3]),
                old.rows.get(&i).unwrap_or(&[0.0; 3]),
            );
            // Two units of the last printed digit: 0.01 W/m², 0.01 °C, 1e-6 W/Wp.
            let ok = (n[0] - o[0]).abs() <= 0.021
                && (n[1] - o[1]).abs() <= 0.021
                && (n[2] - o[2]).abs() <= 2.1e-6;
            assert!(ok, "{name}: record {i}: regenerated {n:?}, committed {o:?}");
        }
    }
    let solpos = "solpos_723170TYA.csv";
    let lines = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let (new, old) = (lines(out.join(solpos)), lines(committed.join(solpos)));
    assert_eq!(new.lines().count(), old.lines().count());
    for (n, o) in new.lines().zip(old.lines()) {
        if n.starts_with('#') || n.starts_with("record") {
            assert_eq!(n, o);
            continue;
        }
        let p = |l: &str| -> Vec<f64> { l.split(',').map(|v| v.parse().unwrap()).collect() };
        let (n, o) = (p(n), p(o));
        assert!(
            n.iter().zip(&o).all(|(a, b)| (a - b).abs() <= 2.1e-4),
            "{solpos}: {n:?} vs {o:?}"
        );
    }
}
