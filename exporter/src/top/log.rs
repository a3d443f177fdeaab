//! Log lines while the terminal UI runs. A line written to the terminal under a full-screen UI is
//! wiped by the next frame (and garbles this one), so while the UI is up nothing goes to stderr;
//! warnings and errors are kept for the UI's warnings pane instead, and printed to stderr when the
//! UI exits. In every other mode (serve, plain `top`) stderr gets everything, as before.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::writer::OptionalWriter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

static TUI: AtomicBool = AtomicBool::new(false);
static KEPT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
/// The pane shows the latest few; older ones are dropped, not accumulated.
const KEEP: usize = 16;

/// Marks the terminal UI as up (`true`) or gone (`false`).
pub fn set_tui(up: bool) {
    TUI.store(up, Ordering::SeqCst);
}

/// Warnings and errors logged so far (distinct, oldest first).
pub fn kept() -> Vec<String> {
    KEPT.lock()
        .map(|k| k.iter().cloned().collect())
        .unwrap_or_default()
}

/// Writer for the fmt layer: stderr, except while the terminal UI is up.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrUnlessTui;

impl<'a> MakeWriter<'a> for StderrUnlessTui {
    type Writer = OptionalWriter<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        if TUI.load(Ordering::SeqCst) {
            OptionalWriter::none()
        } else {
            OptionalWriter::some(std::io::stderr())
        }
    }
}

/// Layer keeping WARN and ERROR events as one line each (message, then `key=value` fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pane;

#[derive(Default)]
struct Line(String, String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Pane {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // tracing orders levels by verbosity: ERROR < WARN < INFO.
        if *event.metadata().level() > Level::WARN {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let text = format!("{}{}", line.0, line.1);
        if let Ok(mut k) = KEPT.lock() {
            if !k.contains(&text) {
                k.push_back(text);
                if k.len() > KEEP {
                    k.pop_front();
                }
            }
        }
    }
}
