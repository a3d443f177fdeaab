//! `edgewatt-controller simulate`: a fleet twin in virtual time on real weather data.
//!
//! The controller's real decision core — [`crate::planner::plan`] through a
//! [`crate::runtime::PolicyRuntime`], EdgeWorkload moves by [`crate::migration::next_step`], time
//! from a virtual [`crate::clock::Clock`] — runs against a simulated fleet whose batteries are
//! charged by TMY weather and drained by the work on them.
//!
//! - [`weather`], [`pv`]: the weather a site sees and what its panel makes of it (pure,
//!   file-format level; checked against pvlib).
//! - [`fleet`] (with [`yaml`] for positions): the fleet file, checked, every error at its
//!   `file:line:column: field`.
//! - [`world`]: the simulated fleet's state and physics; its one owner.
//! - [`twin`]: one policy's controller against the world.
//! - [`run`]: the three runs (`unmanaged`, `migrate`, `ladder`) and the report; [`plot`] the SVG.
//! - [`actions`]: what a run did, in order (for setting it beside the real loop).

pub mod pv;
pub mod weather;

#[cfg(feature = "simulate")]
pub mod actions;
#[cfg(feature = "simulate")]
pub mod fleet;
#[cfg(feature = "simulate")]
pub mod plot;
#[cfg(feature = "simulate")]
pub mod run;
#[cfg(feature = "simulate")]
pub mod twin;
#[cfg(feature = "simulate")]
pub mod world;
#[cfg(feature = "simulate")]
pub mod yaml;

/// Runs the `simulate` subcommand: prints the report (text or JSON) on stdout, writes the plot.
#[cfg(feature = "simulate")]
pub fn command(args: &crate::cli::SimulateArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let fleet = fleet::Fleet::load(&args.fleet)?;
    let start = run::parse_start(&args.start).map_err(anyhow::Error::msg)?;
    if args.days == 0 {
        anyhow::bail!("--days must be at least 1");
    }
    let decision_interval = match &args.decision_interval {
        None => None,
        Some(d) => Some(
            edgewatt_crds::duration::parse(d)
                .ok()
                .filter(|d| d.as_secs() >= 60 && d.as_secs() % 60 == 0)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--decision-interval {d:?}: a whole number of minutes of at least 1m"
                    )
                })?,
        ),
    };
    let opts = run::Options {
        start_minute: start,
        days: args.days,
        decision_interval,
        ..run::Options::default()
    };
    let (report, series) = run::simulate(&fleet, &opts);
    if let Some(path) = &args.plot {
        plot::svg(path, &report, &series)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let out = match args.output {
        crate::cli::Output::Text => run::text(&report),
        crate::cli::Output::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        // A reader that stopped reading (`| head`) is not an error of ours.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Without the `simulate` feature there is nothing to run.
#[cfg(not(feature = "simulate"))]
pub fn command(_: &crate::cli::SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("this edgewatt-controller was built without the `simulate` feature")
}
