//! Drawing: the same [`Model`] as a ratatui frame (the terminal UI) or as plain text (pipes,
//! `--output text`).

use std::fmt::Write;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table, Wrap};
use ratatui::Frame;

use super::model::{fmt_hours, fmt_w, visible, Level, Model, Row, RowKind, SortKey};

/// What the user chose with the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiState {
    pub level: Level,
    pub sort: SortKey,
    pub filter: String,
    /// `/` pressed: keys go to the filter until Enter or Esc.
    pub editing: bool,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            level: Level::Processes,
            sort: SortKey::Power,
            filter: String::new(),
            editing: false,
        }
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// The header lines, shared by both renderings.
fn header(m: &Model) -> Vec<String> {
    let mut out = vec![format!(
        "edgewatt top — node {}   interval {:.1}s",
        m.node_name, m.interval_seconds
    )];
    out.push(match (m.node_watts, &m.node_source) {
        (Some(w), Some(src)) if m.power_note.is_empty() => format!(
            "node power  {}  (source: {src})   {:.3} Wh since start",
            fmt_w(w),
            m.node_wh
        ),
        (Some(w), Some(src)) => format!(
            "node power  {}  (source: {src}, {})   {:.3} Wh since start",
            fmt_w(w),
            m.power_note,
            m.node_wh
        ),
        _ => format!("node power  {}", m.power_note),
    });
    let mut facts = Vec::new();
    if let Some(b) = m.cpu_busy {
        facts.push(format!("cpu busy {:.1} %", b * 100.0));
    }
    if let Some(b) = &m.battery {
        let mut s = format!(
            "battery {} {}",
            b.charge_percent
                .map(|c| format!("{c:.0} %"))
                .unwrap_or_else(|| "?".into()),
            b.status
        );
        if let Some(d) = b.draw_watts {
            let _ = write!(s, ", draw {}", fmt_w(d));
        }
        if let Some(c) = b.charge_watts.filter(|c| *c > 0.0) {
            let _ = write!(s, ", charging at {}", fmt_w(c));
        }
        match (b.on_mains, b.runway_hours) {
            (Some(true), _) => s.push_str(", on mains"),
            (_, Some(h)) => {
                let _ = write!(s, ", runway {}", fmt_hours(h));
            }
            _ => {}
        }
        facts.push(s);
    }
    if let Some(b) = m.budget_watts {
        facts.push(format!("budget {}", fmt_w(b)));
    }
    if !facts.is_empty() {
        out.push(facts.join("   "));
    }
    out.push(format!(
        "sources     up: {}   attribution: {}",
        if m.sources_up.is_empty() {
            "none".to_string()
        } else {
            m.sources_up.join(", ")
        },
        m.attribution
    ));
    for (name, detail) in &m.source_details {
        out.push(format!("  {name:<10}{}", one_line(detail)));
    }
    out
}

/// A source's detail on one line: its own line breaks (hwmon lists one figure per line) as `; `,
/// control characters escaped (sensor names come from the BMC or the driver).
fn one_line(s: &str) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    super::model::escape(&joined)
}

/// The table's columns for a width: zones and GPU only where present, dropped (zones, then Wh,
/// then CPU) when the terminal is too narrow for them.
fn columns(m: &Model, width: u16) -> Vec<String> {
    let zones: Vec<String> = m.zones.iter().filter(|z| *z != "gpu").cloned().collect();
    let mut cols: Vec<String> = vec!["power".into(), "share".into(), "cpu".into()];
    cols.extend(zones.iter().cloned());
    if m.has_gpu() {
        cols.push("gpu".into());
    }
    cols.push("Wh".into());
    // id 10 + name at least 16 + 9 per column
    let fits = |n: usize| 10 + 16 + 9 * n <= width as usize;
    let mut drop_order: Vec<String> = zones;
    drop_order.extend(["Wh".to_string(), "cpu".to_string()]);
    for d in drop_order {
        if fits(cols.len()) {
            break;
        }
        cols.retain(|c| *c != d);
    }
    cols
}

fn cell(r: &Row, col: &str) -> String {
    match col {
        "power" => fmt_w(r.watts),
        "share" => pct(r.share),
        "cpu" => pct(r.cpu),
        "Wh" => format!("{:.4}", r.wh),
        z => r.zones.get(z).map(|w| fmt_w(*w)).unwrap_or_default(),
    }
}

fn id_col(r: &Row) -> String {
    match r.kind {
        RowKind::Process => r.id.clone(),
        RowKind::Idle | RowKind::System => String::new(),
        _ => r.id.chars().take(8).collect(),
    }
}

/// Plain text: header, warnings, then every level that has workloads (at most `limit` rows each,
/// plus `[idle]` and `[system]`).
pub fn text(m: &Model, sort: SortKey, filter: &str, limit: usize) -> String {
    let mut out = header(m).join("\n");
    out.push('\n');
    for w in &m.warnings {
        let _ = writeln!(out, "warning     {w}");
    }
    let cols = columns(m, 200);
    for (level, title) in [
        (Level::Pods, "PODS"),
        (Level::Containers, "CONTAINERS"),
        (Level::Processes, "PROCESSES"),
    ] {
        let rows = visible(m.rows(level), sort, filter);
        let workloads = rows
            .iter()
            .filter(|r| !matches!(r.kind, RowKind::Idle | RowKind::System));
        if workloads.clone().next().is_none() {
            continue;
        }
        let _ = write!(out, "\n{title:<10} {:<24}", "name");
        for c in &cols {
            let _ = write!(out, " {c:>9}");
        }
        out.push('\n');
        let rest = rows
            .iter()
            .filter(|r| matches!(r.kind, RowKind::Idle | RowKind::System));
        for r in workloads.take(limit).chain(rest) {
            let _ = write!(out, "{:<10} {:<24}", id_col(r), r.name);
            for c in &cols {
                let _ = write!(out, " {:>9}", cell(r, c));
            }
            out.push('\n');
        }
    }
    out
}

const KEYS: &str =
    "q quit  Tab pods/containers/processes  w power  c cpu  n name  / filter  Esc clear";

/// One terminal frame: header, a warnings pane that stays (a log line never wipes it), the table
/// sized to the terminal, and the key line.
pub fn draw(f: &mut Frame, m: &Model, ui: &UiState) {
    let area = f.area();
    let head = header(m);
    let warn_h = if m.warnings.is_empty() {
        0
    } else {
        (m.warnings.len() as u16).min(4) + 2
    };
    let [top, warn, table, keys] = Layout::vertical([
        Constraint::Length(head.len() as u16),
        Constraint::Length(warn_h),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(head.into_iter().map(Line::from).collect::<Vec<_>>()),
        top,
    );
    if warn_h > 0 {
        let lines: Vec<Line> = m.warnings.iter().map(|w| Line::from(w.as_str())).collect();
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: true })
                .block(Block::default().borders(Borders::ALL).title("warnings"))
                .yellow(),
            warn,
        );
    }
    draw_table(f, m, ui, table);
    let footer = if ui.editing {
        format!("filter: {}▏  (Enter keep, Esc clear)", ui.filter)
    } else if ui.filter.is_empty() {
        KEYS.to_string()
    } else {
        format!("filter \"{}\"   {KEYS}", ui.filter)
    };
    f.render_widget(Paragraph::new(footer).reversed(), keys);
}

fn draw_table(f: &mut Frame, m: &Model, ui: &UiState, area: Rect) {
    let cols = columns(m, area.width);
    let title = match ui.level {
        Level::Pods => "PODS",
        Level::Containers => "CONTAINERS",
        Level::Processes => "PROCESSES",
    };
    let sort = match ui.sort {
        SortKey::Power => "power",
        SortKey::Cpu => "cpu",
        SortKey::Name => "name",
    };
    let rows = visible(m.rows(ui.level), ui.sort, &ui.filter);
    // Room for the rows: the area less the header line; [idle]/[system] always shown.
    let room = (area.height as usize).saturating_sub(1);
    let (rest, workloads): (Vec<&Row>, Vec<&Row>) = rows
        .into_iter()
        .partition(|r| matches!(r.kind, RowKind::Idle | RowKind::System));
    let shown = room.saturating_sub(rest.len());
    let body = workloads.into_iter().take(shown).chain(rest).map(|r| {
        let style = match r.kind {
            RowKind::Idle | RowKind::System => Style::default().add_modifier(Modifier::DIM),
            _ => Style::default(),
        };
        let mut cells = vec![Cell::from(id_col(r)), Cell::from(r.name.clone())];
        cells.extend(
            cols.iter()
                .map(|c| Cell::from(Line::from(cell(r, c)).right_aligned())),
        );
        TableRow::new(cells).style(style)
    });
    let mut widths = vec![Constraint::Length(10), Constraint::Min(16)];
    widths.extend(cols.iter().map(|_| Constraint::Length(9)));
    let mut head = vec![
        Cell::from(title),
        Cell::from(format!("name (sorted by {sort})")),
    ];
    head.extend(
        cols.iter()
            .map(|c| Cell::from(Line::from(c.clone()).right_aligned())),
    );
    f.render_widget(
        Table::new(body, widths).header(TableRow::new(head).bold()),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::BatteryView;

    fn model(zones: &[&str]) -> Model {
        Model {
            node_name: "n".into(),
            interval_seconds: 2.0,
            node_watts: Some(10.0),
            node_source: Some("rapl".into()),
            power_note: String::new(),
            node_wh: 0.0,
            cpu_busy: None,
            attribution: "procfs".into(),
            sources_up: vec![],
            source_details: vec![],
            warnings: vec![],
            battery: None,
            budget_watts: None,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            pods: vec![],
            containers: vec![],
            processes: vec![],
        }
    }

    #[test]
    fn columns_follow_the_hardware_and_the_width() {
        let m = model(&["dram", "gpu", "package"]);
        assert_eq!(
            columns(&m, 200),
            ["power", "share", "cpu", "dram", "package", "gpu", "Wh"]
        );
        // Zones go first, then Wh, then CPU; power, share and the GPU stay.
        assert_eq!(columns(&m, 89).len(), 7);
        assert_eq!(
            columns(&m, 80),
            ["power", "share", "cpu", "package", "gpu", "Wh"]
        );
        assert_eq!(columns(&m, 70), ["power", "share", "cpu", "gpu"]);
        assert_eq!(columns(&m, 60), ["power", "share", "gpu"]);
        assert_eq!(
            columns(&model(&["package"]), 200),
            ["power", "share", "cpu", "package", "Wh"]
        );
    }

    #[test]
    fn the_battery_line_says_charging_only_when_power_flows_in() {
        let line = |status: &str, draw, charge, mains| {
            let mut m = model(&["package"]);
            m.battery = Some(BatteryView {
                charge_percent: Some(40.0),
                status: status.into(),
                draw_watts: draw,
                charge_watts: charge,
                on_mains: Some(mains),
                runway_hours: None,
            });
            header(&m)
                .into_iter()
                .find(|l| l.contains("battery"))
                .unwrap()
        };
        assert_eq!(
            line("Charging", Some(0.0), Some(12.0), true),
            "battery 40 % Charging, draw 0 mW, charging at 12.0 W, on mains"
        );
        let discharging = line("Discharging", Some(9.0), Some(0.0), false);
        assert!(!discharging.contains("charging at"), "{discharging}");
        let unknown = line("Charging", Some(0.0), None, true);
        assert!(
            !unknown.contains("charging at"),
            "unknown is not shown: {unknown}"
        );
    }
}
