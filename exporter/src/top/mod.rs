//! `edgewatt-exporter top`: who uses the energy on this machine, live.
//!
//! [`model`] turns a snapshot into rows (pure: shares of node power, `[idle]` and
//! `[system]`, sort, filter, battery runway), [`view`] draws them (ratatui, or plain text), and
//! this module runs the loop: collect every interval, redraw on keys and terminal resizes.

pub mod log;
pub mod model;
pub mod runtime;
pub mod view;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::cli::{Top, TopOutput};
use crate::snapshot::Snapshot;
use crate::sysfs::HostRoot;
use model::{Level, Model, SortKey};
use runtime::RuntimeNames;
use view::UiState;

/// One screen as plain text (no log warnings, no runtime lookups): what `--output text` prints
/// per refresh, kept for callers that hold a snapshot.
pub fn render(s: &Snapshot, limit: usize) -> String {
    let m = model::build(s, 0.0, &[], &|_| None);
    view::text(&m, SortKey::Power, "", limit)
}

/// Node energy since start: the integral of node power over the intervals measured.
#[derive(Debug, Default)]
struct Totals {
    node_wh: f64,
}

impl Totals {
    fn add(&mut self, s: &Snapshot) {
        if let Some(w) = s.node_watts {
            self.node_wh += w * s.interval_seconds / 3600.0;
        }
    }
}

/// Runs `top` until `q` (or `-n`/`--once` refreshes); `collect` runs one interval.
pub fn run(
    mut collect: impl FnMut() -> Snapshot,
    root: HostRoot,
    interval: Duration,
    top: Top,
) -> anyhow::Result<()> {
    let output = match top.output {
        TopOutput::Auto if top.plain || !std::io::stdout().is_terminal() => TopOutput::Text,
        TopOutput::Auto => TopOutput::Tui,
        o => o,
    };
    let count = if top.once { 1 } else { top.count };
    let names = RuntimeNames::new(root);
    let lookup = |id: &str| names.name(id);
    let mut totals = Totals::default();
    // The first interval only establishes baselines.
    collect();
    let mut next = Instant::now() + interval;
    let mut measure = move || {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let s = collect();
        totals.add(&s);
        model::build(&s, totals.node_wh, &log::kept(), &lookup)
    };
    if output == TopOutput::Tui {
        return tui(&mut measure, interval, count);
    }
    let mut shown = 0;
    loop {
        let m = measure();
        let mut out = std::io::stdout().lock();
        match output {
            TopOutput::Json => writeln!(out, "{}", serde_json::to_string(&m)?)?,
            _ => writeln!(out, "{}", view::text(&m, SortKey::Power, "", top.limit))?,
        }
        out.flush()?;
        shown += 1;
        if count > 0 && shown >= count {
            return Ok(());
        }
    }
}

/// The full-screen UI. The terminal is restored on every way out (error, `q`, panic: ratatui's
/// hook), and warnings logged meanwhile are printed to stderr afterwards.
fn tui(measure: &mut dyn FnMut() -> Model, interval: Duration, count: u64) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    log::set_tui(true);
    let result = tui_loop(&mut terminal, measure, interval, count);
    log::set_tui(false);
    ratatui::restore();
    for w in log::kept() {
        eprintln!("warning: {w}");
    }
    result
}

fn tui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    measure: &mut dyn FnMut() -> Model,
    interval: Duration,
    count: u64,
) -> anyhow::Result<()> {
    let mut ui = UiState::default();
    let mut m = measure();
    if m.pods.iter().any(|r| r.kind == model::RowKind::Pod) {
        ui.level = Level::Pods;
    }
    let mut shown = 1;
    let mut due = Instant::now() + interval;
    loop {
        terminal.draw(|f| view::draw(f, &m, &ui))?;
        if count > 0 && shown >= count {
            // Leave the last frame up long enough to be read by whoever asked for `-n`.
            std::thread::sleep(interval.min(Duration::from_secs(1)));
            return Ok(());
        }
        let wait = due.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release && !on_key(&mut ui, k) => {
                    return Ok(());
                }
                _ => {} // a resize: redrawn at the new size right away
            }
            continue;
        }
        m = measure();
        shown += 1;
        due = Instant::now() + interval;
    }
}

/// Applies one key; `false` to quit.
pub fn on_key(ui: &mut UiState, k: KeyEvent) -> bool {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return false;
    }
    if ui.editing {
        match k.code {
            KeyCode::Enter => ui.editing = false,
            KeyCode::Esc => {
                ui.editing = false;
                ui.filter.clear();
            }
            KeyCode::Backspace => {
                ui.filter.pop();
            }
            KeyCode::Char(c) => ui.filter.push(c),
            _ => {}
        }
        return true;
    }
    match k.code {
        KeyCode::Char('q') => return false,
        KeyCode::Char('/') => {
            ui.editing = true;
            ui.filter.clear();
        }
        KeyCode::Esc => ui.filter.clear(),
        KeyCode::Char('w') | KeyCode::Char('p') => ui.sort = SortKey::Power,
        KeyCode::Char('c') => ui.sort = SortKey::Cpu,
        KeyCode::Char('n') => ui.sort = SortKey::Name,
        KeyCode::Tab => ui.level = ui.level.next(),
        _ => {}
    }
    true
}
