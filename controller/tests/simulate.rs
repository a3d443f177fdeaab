//! `edgewatt-controller simulate`: the world's physics, the three runs, determinism, bad input
//! (each error names file:line:column and the field) and the command line.
//!
//! Weather: NREL TMY3 723170 (Greensboro, NC), the file pvlib's own tests read
//! (`pvlib/data/723170TYA.CSV`; see tests/data/weather/README.md).
#![cfg(feature = "simulate")]

use std::path::{Path, PathBuf};

use edgewatt_controller::sim::{
    fleet::{Fleet, FleetError},
    run::{self, Options, RunKind},
    world::{Battery, World},
};

fn weather_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/weather")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fleet from text, its weather `723170TYA.CSV` (the `dir` is the weather folder).
fn fleet(text: &str) -> Result<Fleet, FleetError> {
    Fleet::parse(text, "fleet.yaml", &weather_dir())
}

const SITE: &str = "sites:\n  - {name: gso, weather: 723170TYA.CSV}\n";

fn with_site(rest: &str) -> String {
    format!("{SITE}{}", rest.trim_start_matches('\n'))
}

const POLICY: &str = r#"
policies:
  - apiVersion: edgewatt.io/v1alpha1
    kind: EnergyPolicy
    metadata: {name: guard}
    spec:
      targets: {nodeSelector: {}, edgeDeviceSelector: {}}
      starvation: {batteryBelowPercent: 30, for: 2m}
      recovery: {batteryAbovePercent: 50, for: 5m}
      action: {mode: Migrate, strategy: MakeBeforeBreak, cooldown: 10m}
"#;

// ---- physics ----------------------------------------------------------------------------------

#[test]
fn every_watt_hour_of_a_step_is_accounted_for() {
    let b = Battery {
        capacity_wh: 100.0,
        cutoff_wh: 5.0,
        charge_efficiency: 0.9,
        discharge_efficiency: 0.85,
    };
    let hours = 1.0 / 60.0;
    let mut cases = 0;
    for soc in [5.0, 5.01, 20.0, 50.0, 99.9, 100.0] {
        for solar in [0.0, 3.0, 40.0, 400.0, 5000.0] {
            for load in [0.0, 2.5, 40.0, 900.0] {
                let (after, f) = b.step(soc, solar, load, hours);
                // Energy in = energy out: what the sun gave and the battery released went to
                // the load, into the battery, to curtailment or to conversion losses.
                let inflow = f.solar_wh + f.drawn_wh;
                let outflow = f.consumed_wh + f.stored_wh + f.curtailed_wh + f.losses_wh;
                assert!(
                    (inflow - outflow).abs() < 1e-9,
                    "soc {soc} solar {solar} load {load}: {f:?}"
                );
                // The battery changes by exactly what was stored and drawn.
                assert!((after - (soc + f.stored_wh - f.drawn_wh)).abs() < 1e-9);
                assert!(after <= b.capacity_wh + 1e-9 && after >= b.cutoff_wh - 1e-9);
                if f.drawn_wh == 0.0 {
                    // Charging: solar in = stored + consumed + curtailed (+ charge losses).
                    let charge_losses = f.stored_wh / b.charge_efficiency - f.stored_wh;
                    assert!(
                        (f.solar_wh
                            - (f.stored_wh + f.consumed_wh + f.curtailed_wh + charge_losses))
                            .abs()
                            < 1e-9
                    );
                }
                // Curtailed only when the battery is full.
                if f.curtailed_wh > 1e-12 {
                    assert!((after - b.capacity_wh).abs() < 1e-9, "{f:?}");
                }
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 120);
}

#[test]
fn a_node_goes_dark_at_the_cutoff_and_boots_above_the_restart_level() {
    // 100 Wh, cut-off 10 %, restart 30 %; 10 W base + a 5 W pod, ideal conversion.
    let f = fleet(&format!(
        "{SITE}nodes:\n  - {{name: n, batteryWh: 100, solarWp: 100, baseWatts: 10, initialChargePercent: 20}}\n\
         workloads:\n  - {{name: p, kind: Pod, drawWatts: 5, criticality: critical}}\n\
         physics: {{chargeEfficiency: 1, dischargeEfficiency: 1, cutoffPercent: 10, restartPercent: 30, podRestartSeconds: 60}}\n"
    ))
    .unwrap();
    let mut w = World::new(&f);
    assert!(!w.targets[0].dark && w.serves(0));
    // Night: 15 W from 20 Wh down to 10 Wh takes 40 minutes.
    let mut minute = 0;
    while !w.targets[0].dark {
        w.begin_step(minute);
        w.physics(&[0.0]);
        minute += 1;
        assert!(minute < 100);
    }
    assert_eq!(minute, 40, "dark after exactly 10 Wh at 15 W");
    assert!((w.targets[0].soc_wh - 10.0).abs() < 1e-9);
    assert!(!w.serves(0), "its pod stopped");
    assert_eq!(w.not_serving(), [1, 0, 0]);
    // Dark: no draw. 0.6 W/Wp × 100 Wp = 60 W, 1 Wh a minute: 30 % after 20 minutes.
    let dark_at = minute;
    while w.targets[0].dark {
        w.begin_step(minute);
        w.physics(&[0.6]);
        minute += 1;
        assert!(minute < 200);
    }
    assert_eq!(
        minute - dark_at,
        20,
        "boots once charged to the restart level"
    );
    assert!((w.targets[0].soc_wh - 30.0).abs() < 1e-4, "0.6 as f32");
    // The pod was evicted by the node lifecycle (dark 5 min) and waits for a node: there is
    // none other, so it is placed here once the node is up again (after its restart delay).
    for _ in 0..3 {
        w.begin_step(minute);
        w.physics(&[0.6]);
        minute += 1;
    }
    assert!(w.serves(0), "{:?}", w.replicas[0]);
    assert_eq!(w.totals.dark_target_minutes, 20);
}

#[test]
fn ladder_hooks_change_draw_and_service_and_count_flaps() {
    let f = fleet(&with_site(
        r#"
nodes:
  - {name: n, batteryWh: 500, solarWp: 0, baseWatts: 4}
edgeDevices:
  - {name: d, batteryWh: 500, solarWp: 0, baseWatts: 2}
workloads:
  - {name: p, kind: Pod, drawWatts: 10, criticality: sheddable}
  - {name: e, kind: EdgeWorkload, drawWatts: 6, device: d}
"#,
    ))
    .unwrap();
    let mut w = World::new(&f);
    assert_eq!(w.targets[0].load_w, 14.0);
    w.throttle(0, 0.5);
    assert_eq!(w.targets[0].load_w, 9.0);
    assert!(w.serves(0));
    w.suspend(1);
    assert_eq!(w.targets[1].load_w, 2.0);
    assert_eq!(w.not_serving(), [0, 1, 0]);
    w.begin_step(10);
    w.restore(1);
    assert_eq!(w.targets[1].load_w, 8.0, "starting draws");
    w.begin_step(11);
    assert!(w.serves(1));
    w.suspend(1); // within the flap window of the restore
    assert_eq!(
        (w.totals.sheds, w.totals.restores, w.totals.flaps),
        (2, 1, 1)
    );
    w.suspend(0);
    w.begin_step(200);
    w.restore(0);
    assert_eq!(
        w.targets[0].load_w, 4.0,
        "a restored pod waits its restart delay"
    );
    w.begin_step(201);
    assert!(w.serves(0), "then the scheduler places it");
    assert_eq!(
        w.targets[0].load_w, 14.0,
        "a new pod from the template: its CPU limit as it was, not throttled"
    );
    // A throttle within the hour of its restore is a flap too; a later one is not.
    w.throttle(0, 0.5);
    assert_eq!(w.totals.flaps, 2, "throttled a minute after its restore");
    w.begin_step(230);
    w.throttle(0, 1.0);
    w.begin_step(250);
    // Un-throttling is a restore too (issue #27: "a restore followed by a shed of the same
    // workload within the hysteresis window counts as a flap"; the real ladder counts any shed
    // of a degradee restored less than `flapWindow` ago, `ladder::flaps_are_counted`).
    w.throttle(0, 0.5);
    assert_eq!(
        w.totals.flaps, 3,
        "throttled 20 minutes after its un-throttle"
    );
    w.throttle(0, 1.0);
    w.begin_step(400);
    w.throttle(0, 0.5);
    assert_eq!(
        w.totals.flaps, 3,
        "throttled 150 minutes after its un-throttle"
    );
}

// ---- the runs ---------------------------------------------------------------------------------

/// Node `dim` and device `dim-d` have no panel and a small battery; `sun` and `sun-d` have
/// plenty. A critical pod and a normal EdgeWorkload start on the dim ones.
fn two_site_fleet() -> Fleet {
    fleet(&with_site(&format!(
        r#"
nodes:
  - {{name: dim, batteryWh: 60, solarWp: 0, baseWatts: 5}}
  - {{name: sun, batteryWh: 2000, solarWp: 500, baseWatts: 5}}
edgeDevices:
  - {{name: dim-d, batteryWh: 30, solarWp: 0, baseWatts: 2}}
  - {{name: sun-d, batteryWh: 1000, solarWp: 300, baseWatts: 2}}
workloads:
  - {{name: web, kind: Pod, drawWatts: 5, criticality: critical}}
  - {{name: cam, kind: EdgeWorkload, drawWatts: 3, criticality: normal, device: dim-d}}
{POLICY}"#
    )))
    .unwrap()
}

#[test]
fn migration_moves_work_off_a_starving_node_to_a_sunny_one() {
    let f = two_site_fleet();
    let w = World::new(&f);
    assert_eq!(
        w.replicas[0].main.unwrap().target,
        0,
        "the pod starts on dim"
    );
    let opts = Options {
        start_minute: run::parse_start("01-08").unwrap(),
        days: 2,
        ..Options::default()
    };
    let (unmanaged, _) = run::run(&f, RunKind::Unmanaged, &opts);
    let (migrate, _) = run::run(&f, RunKind::Migrate, &opts);
    let (ladder, _) = run::run(&f, RunKind::Ladder, &opts);
    // Without edgewatt both dim targets go dark: the EdgeWorkload is lost until the end (its
    // device never recharges), the pod until the node lifecycle evicts it (5 min) and it
    // restarts elsewhere.
    assert!(unmanaged.dark_node_minutes > 0);
    assert_eq!(unmanaged.moves, 0);
    assert!(
        unmanaged.service_minutes_lost.normal > 1000,
        "{unmanaged:?}"
    );
    assert!(
        unmanaged.service_minutes_lost.critical >= 5,
        "{unmanaged:?}"
    );
    assert_eq!(unmanaged.lifecycle_evictions, 1);
    // With the policy: the pod is evicted (the taint first) and restarts on sun after its
    // 1-minute restart delay; the EdgeWorkload moves make-before-break with no gap at all.
    assert_eq!(migrate.evictions, 1, "{migrate:?}");
    assert_eq!(migrate.edge_moves, 1, "{migrate:?}");
    assert_eq!(migrate.edge_moves_failed, 0);
    assert_eq!(migrate.moves, 2);
    assert_eq!(migrate.service_minutes_lost.normal, 0, "{migrate:?}");
    assert_eq!(migrate.service_minutes_lost.critical, 1, "{migrate:?}");
    assert!(migrate.service_minutes_lost.critical < unmanaged.service_minutes_lost.critical);
    assert_eq!(
        migrate.lifecycle_evictions, 0,
        "nothing was left on dim to evict"
    );
    assert_eq!(migrate.flaps, 0);
    assert_eq!(migrate.max_moves_per_workload_per_hour, 1);
    // The policy has no `action.degrade`: the ladder run is the migrate run.
    assert_eq!(
        RunReportCmp::from(&ladder),
        RunReportCmp::from(&migrate),
        "ladder = migrate"
    );
    assert_eq!(ladder.sheds, 0);
}

/// A run's numbers without its name and note.
#[derive(Debug, PartialEq)]
struct RunReportCmp(serde_json::Value);

impl From<&run::RunReport> for RunReportCmp {
    fn from(r: &run::RunReport) -> Self {
        let mut v = serde_json::to_value(r).unwrap();
        v.as_object_mut().unwrap().remove("run");
        v.as_object_mut().unwrap().remove("note");
        RunReportCmp(v)
    }
}

#[test]
fn the_same_fleet_and_weather_give_the_same_report() {
    let f = Fleet::load(repo().join("examples/simulate/winter-site.yaml")).unwrap();
    let opts = Options {
        start_minute: run::parse_start("01-08").unwrap(),
        days: 3,
        ..Options::default()
    };
    let (a, _) = run::simulate(&f, &opts);
    let (b, _) = run::simulate(&f, &opts);
    let ja = serde_json::to_string(&a).unwrap();
    assert_eq!(ja, serde_json::to_string(&b).unwrap());
    assert_eq!(a.runs.len(), 3);
    assert!(
        a.runs[0].dark_node_minutes > 0,
        "the example goes dark unmanaged: {ja}"
    );
}

/// Issue #28's headline on the shipped scenario, run as `edgewatt-controller simulate --fleet
/// examples/simulate/winter-site.yaml --start 01-08 --days 14` runs it (the CLI's defaults: the
/// fleet's decision interval): the site goes dark at night unmanaged; with edgewatt total
/// service-minutes lost at least 80 % below unmanaged, no workload moved more than once per
/// hour, and the ladder no worse than migrate for the critical and normal work. What the
/// design does not reach (critical 0: each move of a pod restarts it; sheddable: the ladder's
/// margin sheds where migrate was lucky) is shown with figures in BENCHMARKS.md.
#[test]
fn the_winter_site_meets_the_headline() {
    let f = Fleet::load(repo().join("examples/simulate/winter-site.yaml")).unwrap();
    let opts = Options {
        start_minute: run::parse_start("01-08").unwrap(),
        days: 14,
        ..Options::default()
    };
    let (report, _) = run::simulate(&f, &opts);
    let json = serde_json::to_string_pretty(&report).unwrap();
    let [unmanaged, migrate, ladder] = &report.runs[..] else {
        panic!("three runs: {json}");
    };
    let total = |r: &run::RunReport| {
        let l = &r.service_minutes_lost;
        l.critical + l.normal + l.sheddable
    };
    assert!(
        unmanaged.dark_node_minutes > 0 && unmanaged.service_minutes_lost.critical > 0,
        "unmanaged, the site goes dark and critical work with it: {json}"
    );
    for r in [migrate, ladder] {
        assert!(
            total(r) * 5 <= total(unmanaged),
            "{:?}: at least 80 % below unmanaged: {json}",
            r.run
        );
        assert!(r.max_moves_per_workload_per_hour <= 1, "{json}");
    }
    assert!(ladder.sheds > 0, "the ladder acted: {json}");
    let (l, m) = (&ladder.service_minutes_lost, &migrate.service_minutes_lost);
    assert!(l.critical <= m.critical && l.normal <= m.normal, "{json}");
}

// ---- bad input --------------------------------------------------------------------------------

/// The error's `file:line:column: field: message`.
fn invalid(e: FleetError) -> (u64, String, String) {
    match e {
        FleetError::Invalid {
            file,
            line,
            field,
            message,
            ..
        } => {
            assert_eq!(file, "fleet.yaml");
            (line, field, message)
        }
        other => panic!("{other}"),
    }
}

const NODE: &str = "nodes:\n  - {name: n, batteryWh: 100, solarWp: 50, baseWatts: 5}\n";

#[test]
fn malformed_yaml_names_its_line() {
    let e = fleet(&format!("{SITE}{NODE}workloads: [\n  {{name: x\n")).unwrap_err();
    let text = e.to_string();
    let (line, _, _) = invalid(e);
    assert!(line >= 4, "{text}");
    assert!(text.starts_with("fleet.yaml:"), "{text}");
}

#[test]
fn a_field_of_the_wrong_type_or_unknown_is_named_with_its_line() {
    let e = fleet(&format!(
        "{SITE}nodes:\n  - name: n\n    batteryWh: lots\n    solarWp: 50\n    baseWatts: 5\n"
    ))
    .unwrap_err();
    let (line, field, _) = invalid(e);
    assert_eq!((line, field.as_str()), (5, "nodes[0].batteryWh"));

    let e = fleet(&format!(
        "{SITE}nodes:\n  - name: n\n    batteryWh: 10\n    solarWp: 50\n    baseWatts: 5\n    colour: red\n"
    ))
    .unwrap_err();
    let text = e.to_string();
    let (line, field, message) = invalid(e);
    assert_eq!(line, 8, "{text}");
    assert!(field.starts_with("nodes[0]"), "{text}");
    assert!(message.contains("colour"), "{text}");
}

#[test]
fn a_malformed_weather_file_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(weather_dir().join("723170TYA.CSV")).unwrap();
    // Line 10 (the 8th hour): GHI is not a number.
    let bad: Vec<String> = good
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 9 {
                let mut f: Vec<&str> = l.split(',').collect();
                f[4] = "bright";
                f.join(",")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(dir.path().join("bad.csv"), bad.join("\n")).unwrap();
    let e = Fleet::parse(
        &format!("sites:\n  - name: s\n    weather: bad.csv\n{NODE}"),
        "fleet.yaml",
        dir.path(),
    )
    .unwrap_err();
    let text = e.to_string();
    let (line, field, message) = invalid(e);
    assert_eq!((line, field.as_str()), (3, "sites[0].weather"), "{text}");
    assert!(message.contains("bad.csv:10: GHI"), "{text}");
}

#[test]
fn a_policy_the_crd_rejects_is_named_at_its_field() {
    let policy = |starvation: &str| {
        format!(
            "{SITE}{NODE}policies:\n  - apiVersion: edgewatt.io/v1alpha1\n    kind: EnergyPolicy\n    metadata: {{name: p}}\n    spec:\n      targets: {{nodeSelector: {{}}}}\n      starvation:\n{starvation}"
        )
    };
    // OpenAPI: batteryBelowPercent has maximum 100 (line 12).
    let e = fleet(&policy("        batteryBelowPercent: 150\n")).unwrap_err();
    let text = e.to_string();
    let (line, field, message) = invalid(e);
    assert_eq!(
        (line, field.as_str()),
        (12, "policies[0].spec.starvation.batteryBelowPercent"),
        "{text}"
    );
    assert!(message.contains("less than or equal to 100"), "{text}");
    // CEL: a starvation block without any condition (the rule's own message).
    let e = fleet(&policy("        for: 2m\n")).unwrap_err();
    let text = e.to_string();
    let (line, field, message) = invalid(e);
    assert_eq!(line, 11, "{text}");
    assert!(field.starts_with("policies[0].spec.starvation"), "{text}");
    assert!(
        message.contains("starvation needs at least one condition"),
        "{text}"
    );
    // Pattern: a duration the controller could not read.
    let e = fleet(&policy(
        "        batteryBelowPercent: 20\n        for: soon\n",
    ))
    .unwrap_err();
    let text = e.to_string();
    let (line, field, _) = invalid(e);
    assert_eq!(
        (line, field.as_str()),
        (13, "policies[0].spec.starvation.for"),
        "{text}"
    );
}

#[test]
fn an_impossible_fleet_is_refused_with_the_workload_named() {
    let e = fleet(&format!(
        "{SITE}nodes:\n  - {{name: n, batteryWh: 100, solarWp: 50, baseWatts: 5, maxWatts: 30}}\n\
         workloads:\n  - name: huge\n    kind: Pod\n    drawWatts: 80\n"
    ))
    .unwrap_err();
    let text = e.to_string();
    let (line, field, message) = invalid(e);
    assert_eq!(
        (line, field.as_str()),
        (8, "workloads[0].drawWatts"),
        "{text}"
    );
    assert!(
        message.contains("impossible fleet") && message.contains("25"),
        "{text}"
    );
    // Placement that matches nothing.
    let e = fleet(&format!(
        "{SITE}{NODE}workloads:\n  - {{name: cam, kind: EdgeWorkload, drawWatts: 1, device: nowhere}}\n"
    ))
    .unwrap_err();
    let (line, field, _) = invalid(e);
    assert_eq!((line, field.as_str()), (6, "workloads[0].device"));
    // Physics that would flap.
    let e = fleet(&format!(
        "{SITE}{NODE}physics: {{cutoffPercent: 20, restartPercent: 10}}\n"
    ))
    .unwrap_err();
    let (line, field, _) = invalid(e);
    assert_eq!((line, field.as_str()), (5, "physics.restartPercent"));
}

// ---- the command line -------------------------------------------------------------------------

#[test]
fn the_binary_prints_a_json_report_and_refuses_bad_input_without_panicking() {
    let bin = env!("CARGO_BIN_EXE_edgewatt-controller");
    let out = std::process::Command::new(bin)
        .current_dir(repo())
        .args([
            "simulate",
            "--fleet",
            "examples/simulate/winter-site.yaml",
            "--days",
            "2",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["unmanaged", "migrate", "ladder"]);
    for r in v["runs"].as_array().unwrap() {
        for key in [
            "service_minutes_lost",
            "dark_node_minutes",
            "moves",
            "sheds",
            "restores",
            "flaps",
            "max_moves_per_workload_per_hour",
            "energy_kwh",
            "solar_curtailed_kwh",
        ] {
            assert!(r.get(key).is_some(), "{key} missing: {r}");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "sites: []\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["simulate", "--fleet", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml:1:") && err.contains("sites"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
