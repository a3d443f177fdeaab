//! Watch streams: newline-delimited `{"type","object"}` events, like the real server's JSON watch.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval};

use super::ops::ListQuery;
use super::resources::ResourceDef;
use super::status::ApiError;
use super::store::{Change, EventType};
use super::App;

/// What a watch selects.
pub(crate) struct Filter {
    pub key: String,
    pub ns: Option<String>,
    pub query: ListQuery,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.ns {
            if obj["metadata"]["namespace"].as_str() != Some(ns.as_str()) {
                return false;
            }
        }
        self.query.labels.matches_object(obj) && self.query.fields.matches(obj)
    }

    /// The event this watch sees for a change: selector transitions turn MODIFIED into
    /// ADDED or DELETED, as on the real server.
    fn event(&self, c: &Change) -> Option<Bytes> {
        if c.res != self.key {
            return None;
        }
        let new_m = self.matches(&c.new);
        let old_m = c.old.as_deref().is_some_and(|o| self.matches(o));
        let t = match (c.kind, old_m, new_m) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            (EventType::Deleted, true, _) => EventType::Deleted,
            _ => return None,
        };
        Some(line(t.as_str(), &c.object_json()))
    }
}

fn line(t: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(t.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn value_line(t: &str, object: &Value) -> Bytes {
    line(t, &serde_json::to_vec(object).unwrap_or_default())
}

/// A line waiting to be sent, and when it may go (watch lag fault hook).
struct Pending {
    at: Instant,
    line: Bytes,
}

/// Watch lag of one stream: each event goes out between `min` and `max` after it happened, never
/// before an earlier one.
struct Lag {
    min: Duration,
    max: Duration,
    last: Instant,
    seed: u64,
}

impl Lag {
    fn next_at(&mut self) -> Instant {
        // xorshift: jitter only needs to vary, not to be good randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let span = self.max.saturating_sub(self.min).as_millis() as u64;
        let jitter = Duration::from_millis(if span == 0 { 0 } else { self.seed % (span + 1) });
        self.last = self.last.max(Instant::now() + self.min + jitter);
        self.last
    }
}

struct State {
    app: Arc<App>,
    filter: Filter,
    kind: String,
    api_version: String,
    pending: VecDeque<Pending>,
    lag: Option<Lag>,
    rx: broadcast::Receiver<Arc<Change>>,
    drop_rx: watch::Receiver<(u64, bool)>,
    deadline: Instant,
    bookmarks: Option<Interval>,
    last_rv: u64,
    done: bool,
}

impl State {
    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        value_line(
            "BOOKMARK",
            &json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": meta}),
        )
    }

    /// Queues a line that is not a live change (initial state, bookmarks, errors): it goes out
    /// right after what is queued before it.
    fn push_now(&mut self, line: Bytes) {
        let at = self
            .pending
            .back()
            .map_or_else(Instant::now, |p| p.at.max(Instant::now()));
        self.pending.push_back(Pending { at, line });
    }

    /// Drains what is already broadcast, under the store lock, so a bookmark never runs ahead
    /// of an event this watch has not sent.
    fn drain_and_bookmark(&mut self) {
        let app = self.app.clone();
        let inner = app.store.lock().expect("store lock");
        loop {
            match self.rx.try_recv() {
                Ok(c) => self.accept(&c),
                Err(TryRecvError::Lagged(_)) | Err(TryRecvError::Closed) => {
                    self.done = true;
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        let rv = inner.rv;
        drop(inner);
        self.last_rv = self.last_rv.max(rv);
        let b = self.bookmark(rv, false);
        self.push_now(b);
    }

    fn accept(&mut self, c: &Change) {
        if c.rv <= self.last_rv {
            return;
        }
        self.last_rv = c.rv;
        if let Some(line) = self.filter.event(c) {
            let at = self.lag.as_mut().map_or_else(Instant::now, Lag::next_at);
            self.pending.push_back(Pending { at, line });
        }
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let head_at = self.pending.front().map(|p| p.at);
            if head_at.is_some_and(|at| at <= Instant::now()) {
                return self.pending.pop_front().map(|p| p.line);
            }
            if self.done {
                match head_at {
                    Some(at) => {
                        tokio::time::sleep_until(at).await;
                        continue;
                    }
                    None => return None,
                }
            }
            let head_due = async {
                match head_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let bookmark_tick = async {
                match &mut self.bookmarks {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(c) => self.accept(&c),
                    // A watcher that cannot keep up is closed, as the real server does.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = self.drop_rx.changed() => {
                    // A closed connection loses what it had not sent yet; the client resumes
                    // from the last resourceVersion it saw.
                    self.done = true;
                    self.pending.clear();
                    if self.drop_rx.borrow().1 {
                        let rv = self.last_rv;
                        let st = ApiError::gone(format!("too old resource version: {rv}")).to_status();
                        return Some(value_line("ERROR", &st));
                    }
                    return None;
                }
                _ = bookmark_tick => self.drain_and_bookmark(),
                _ = head_due => {}
            }
        }
    }
}

/// Parameters of a watch request.
pub(crate) struct WatchParams {
    pub rv: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Option<u64>,
}

/// Starts a watch: replays history after `rv` (or synthetic ADDED for the current state when
/// `rv` is unset or "0"), then streams live changes.
pub(crate) fn watch(app: Arc<App>, res: &ResourceDef, filter: Filter, p: WatchParams) -> Response {
    let inner = app.store.lock().expect("store lock");
    let rx = inner.tx.subscribe();
    let mut pending = VecDeque::new();
    let now = Instant::now();
    let lag = app
        .faults
        .lock()
        .expect("faults lock")
        .watch_delay
        .get(&filter.key)
        .map(|&(min, max)| Lag {
            min,
            max,
            last: now,
            seed: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ inner.rv)
                | 1,
        });
    let from = match p.rv.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => match s.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return ApiError::bad_request(format!("invalid resource version: {s}"))
                    .into_response()
            }
        },
    };
    let mut gone = false;
    match from {
        Some(_) if p.send_initial_events => {}
        Some(r) if r < inner.compacted => gone = true,
        Some(r) => {
            for c in inner.history.iter().filter(|c| c.rv > r) {
                if let Some(line) = filter.event(c) {
                    pending.push_back(Pending { at: now, line });
                }
            }
        }
        None => {}
    }
    if from.is_none() || p.send_initial_events {
        for (_, obj) in inner.objects_of(&filter.key) {
            if filter.matches(obj) {
                pending.push_back(Pending {
                    at: now,
                    line: value_line("ADDED", obj),
                });
            }
        }
    }
    let last_rv = inner.rv;
    drop(inner);
    let mut state = State {
        drop_rx: app.drop_watches.subscribe(),
        app,
        filter,
        kind: res.kind.clone(),
        api_version: res.api_version(),
        pending,
        lag,
        rx,
        deadline: Instant::now() + Duration::from_secs(p.timeout.unwrap_or(1800)),
        bookmarks: None,
        last_rv,
        done: false,
    };
    if gone {
        let status = ApiError::gone(format!(
            "too old resource version: {} ({})",
            p.rv.unwrap_or_default(),
            state.app.store.lock().expect("store lock").compacted
        ))
        .to_status();
        state.pending.clear();
        state.push_now(value_line("ERROR", &status));
        state.done = true;
    } else {
        if p.send_initial_events {
            let b = state.bookmark(last_rv, true);
            state.push_now(b);
        }
        if p.bookmarks {
            let period = state.app.bookmark_interval;
            state.bookmarks = Some(tokio::time::interval_at(Instant::now() + period, period));
        }
    }
    let stream = futures::stream::unfold(state, |mut s| async move {
        s.next().await.map(|b| (Ok::<_, Infallible>(b), s))
    });
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
