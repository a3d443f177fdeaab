//! `--plot FILE.svg`: per run, the state of charge of the first targets over time with the
//! moments moves started marked, and the share of replicas serving per criticality with the
//! ladder's sheds (crosses along the top) and restores (triangles along the bottom) marked.

use plotters::prelude::*;

use super::run::{Report, Series};

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes the SVG to `path`.
pub fn svg(path: &std::path::Path, report: &Report, series: &[Series]) -> Result<(), String> {
    let rows = series.len().max(1);
    let root = SVGBackend::new(path, (1400, 340 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let hours = f64::from(report.days) * 24.0;
    for (row, (area, s)) in root
        .split_evenly((rows, 2))
        .chunks(2)
        .zip(series)
        .enumerate()
    {
        let run = report.runs.get(row).map_or("run", |r| r.run.as_str());
        let mut soc = ChartBuilder::on(&area[0])
            .caption(format!("{run}: state of charge (%)"), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..hours, 0.0..100.0)
            .map_err(err)?;
        soc.configure_mesh()
            .x_desc("hours")
            .disable_mesh()
            .draw()
            .map_err(err)?;
        for (k, (name, v)) in s.soc.iter().enumerate() {
            let c = COLORS[k % COLORS.len()];
            soc.draw_series(LineSeries::new(
                s.hours.iter().copied().zip(v.iter().copied()),
                &c,
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c));
        }
        // Moves: short ticks along the top.
        soc.draw_series(
            s.moves
                .iter()
                .map(|&h| PathElement::new(vec![(h, 96.0), (h, 100.0)], BLACK)),
        )
        .map_err(err)?;
        soc.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;

        let mut svc = ChartBuilder::on(&area[1])
            .caption(
                format!("{run}: replicas serving (%); ladder sheds × top, restores ▲ bottom"),
                ("sans-serif", 18),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..hours, 0.0..105.0)
            .map_err(err)?;
        svc.configure_mesh()
            .x_desc("hours")
            .disable_mesh()
            .draw()
            .map_err(err)?;
        for (c, (name, color)) in ["critical", "normal", "sheddable"]
            .iter()
            .zip([RED, BLUE, GREEN])
            .enumerate()
        {
            svc.draw_series(LineSeries::new(
                s.hours.iter().copied().zip(s.service[c].iter().copied()),
                &color,
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        let shed = RGBColor(120, 0, 120);
        let restore = RGBColor(0, 130, 130);
        if !s.sheds.is_empty() {
            svc.draw_series(
                s.sheds
                    .iter()
                    .map(|&h| Cross::new((h, 103.0), 3, shed.stroke_width(2))),
            )
            .map_err(err)?
            .label(format!("ladder sheds ({})", s.sheds.len()))
            .legend(move |(x, y)| Cross::new((x + 7, y), 3, shed.stroke_width(2)));
        }
        if !s.restores.is_empty() {
            svc.draw_series(
                s.restores
                    .iter()
                    .map(|&h| TriangleMarker::new((h, 2.0), 4, restore.filled())),
            )
            .map_err(err)?
            .label(format!("ladder restores ({})", s.restores.len()))
            .legend(move |(x, y)| TriangleMarker::new((x + 7, y), 4, restore.filled()));
        }
        svc.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
