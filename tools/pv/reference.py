#!/usr/bin/env python3
"""Reference PV output from pvlib for the TMY files under controller/tests/data/weather/.

controller/tests/pv_reference.rs compares edgewatt's Rust PV model (controller/src/sim/pv.rs)
against these CSVs, and checks that running this script again reproduces them.

The chain is pvlib's standard one for a fixed PVWatts system, with the same parameters as
`PanelConfig::default()` in pv.rs:
  read_tmy3(coerce_year=1990) / read_tmy2  -> hourly GHI, DNI, DHI, air temperature, wind
  sun at the middle of each hour (TMY irradiance covers the hour *before* its hour-ending stamp)
  get_solarposition(altitude=site altitude)  -> apparent zenith, azimuth (NREL SPA)
  get_total_irradiance(model='haydavies', albedo=0.25, dni_extra=get_extra_radiation)
  iam.physical on the beam (as ModelChain does for PVWatts)
  temperature.sapm_cell, open_rack_glass_polymer
  pvsystem.pvwatts_dc(pdc0=1, gamma_pdc=-0.0035) * (1 - 14 %)
Tilt = |latitude|, facing the equator.

Output per weather file: <stem>.pv.csv with one row per hour that has light on the panel
(the other hours are 0): record (0-based hour of the year), poa_global (W/m2), temp_cell (C),
dc_w_per_wp (W per W-peak). And solpos_<stem>.csv: the sun every 5th hour of the first file,
to check the solar position on its own.

Usage: reference.py [--out DIR]   (default: controller/tests/data/pv_reference)
"""

import argparse
import pathlib
import sys

import pandas as pd
import pvlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEATHER = ROOT / "controller" / "tests" / "data" / "weather"
FILES = ["723170TYA.CSV", "703165TY.csv", "12839.tm2"]

YEAR = 1990
ALBEDO = 0.25
SKY_MODEL = "haydavies"
TEMP_PARAMS = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
GAMMA_PDC = -0.0035
LOSSES_PERCENT = 14.0

PARAMS = (
    f"# params: year={YEAR} tilt=abs(latitude) azimuth=equator sky={SKY_MODEL} albedo={ALBEDO} "
    f"iam=physical temp=sapm_open_rack_glass_polymer gamma_pdc={GAMMA_PDC} "
    f"losses_percent={LOSSES_PERCENT} sun=mid-hour"
)


def load(path):
    """Hourly weather with mid-interval timestamps, in pvlib's own readers' conventions."""
    if path.suffix.lower() == ".tm2":
        data, meta = pvlib.iotools.read_tmy2(str(path))
        # read_tmy2 stamps each record with the *start* of its hour (hour - 1), in the year of
        # the first record; move to YEAR and to the middle of the hour.
        index = pd.DatetimeIndex([t.replace(year=YEAR) for t in data.index])
        times = index + pd.Timedelta("30min")
        weather = pd.DataFrame(
            {
                "ghi": data["GHI"].to_numpy(float),
                "dni": data["DNI"].to_numpy(float),
                "dhi": data["DHI"].to_numpy(float),
                "temp_air": data["DryBulb"].to_numpy(float) / 10.0,
                "wind_speed": data["Wspd"].to_numpy(float) / 10.0,
            },
            index=times,
        )
    else:
        data, meta = pvlib.iotools.read_tmy3(str(path), coerce_year=YEAR, map_variables=True)
        # read_tmy3 stamps each record with the *end* of its hour.
        times = data.index - pd.Timedelta("30min")
        weather = pd.DataFrame(
            {c: data[c].to_numpy(float) for c in ["ghi", "dni", "dhi", "temp_air", "wind_speed"]},
            index=times,
        )
    if len(weather) != 8760:
        sys.exit(f"{path}: {len(weather)} records, expected 8760")
    return weather, meta


def model(weather, meta):
    lat, lon, alt = meta["latitude"], meta["longitude"], meta["altitude"]
    tilt = abs(lat)
    azimuth = 180.0 if lat >= 0 else 0.0
    solpos = pvlib.solarposition.get_solarposition(weather.index, lat, lon, altitude=alt)
    dni_extra = pvlib.irradiance.get_extra_radiation(weather.index)
    total = pvlib.irradiance.get_total_irradiance(
        tilt,
        azimuth,
        solpos["apparent_zenith"],
        solpos["azimuth"],
        weather["dni"],
        weather["ghi"],
        weather["dhi"],
        dni_extra=dni_extra,
        albedo=ALBEDO,
        model=SKY_MODEL,
    )
    aoi = pvlib.irradiance.aoi(tilt, azimuth, solpos["apparent_zenith"], solpos["azimuth"])
    effective = total["poa_direct"] * pvlib.iam.physical(aoi) + total["poa_diffuse"]
    temp_cell = pvlib.temperature.sapm_cell(
        total["poa_global"], weather["temp_air"], weather["wind_speed"], **TEMP_PARAMS
    )
    dc = pvlib.pvsystem.pvwatts_dc(effective, temp_cell, pdc0=1.0, gamma_pdc=GAMMA_PDC)
    dc = dc * (1 - LOSSES_PERCENT / 100.0)
    return solpos, pd.DataFrame(
        {"poa_global": total["poa_global"], "temp_cell": temp_cell, "dc_w_per_wp": dc}
    )


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = ROOT / "controller" / "tests" / "data" / "pv_reference"
    parser.add_argument("--out", type=pathlib.Path, default=default_out)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(FILES):
        stem = pathlib.Path(name).stem
        weather, meta = load(WEATHER / name)
        solpos, pv = model(weather, meta)
        where = f"({meta['latitude']:.3f}, {meta['longitude']:.3f})"
        lines = [
            f"# pvlib reference for {name} {where}; written by tools/pv/reference.py",
            PARAMS,
            "record,poa_global,temp_cell,dc_w_per_wp",
        ]
        columns = pv[["poa_global", "temp_cell", "dc_w_per_wp"]].to_numpy()
        for i, (poa, tc, dc) in enumerate(columns):
            if round(poa, 2) != 0 or round(dc, 6) != 0:
                lines.append(f"{i},{poa:.2f},{tc:.2f},{dc:.6f}")
        write(args.out / f"{stem}.pv.csv", lines)
        if n == 0:
            rows = [
                "# pvlib.solarposition.get_solarposition (NREL SPA), every 5th hour, mid-hour",
                PARAMS,
                "record,apparent_zenith,azimuth",
            ]
            zenith, azimuth = solpos["apparent_zenith"].to_numpy(), solpos["azimuth"].to_numpy()
            for i in range(0, len(solpos), 5):
                rows.append(f"{i},{zenith[i]:.4f},{azimuth[i]:.4f}")
            write(args.out / f"solpos_{stem}.csv", rows)
    print(f"wrote {len(FILES)} reference files to {args.out} with pvlib {pvlib.__version__}")


if __name__ == "__main__":
    main()
