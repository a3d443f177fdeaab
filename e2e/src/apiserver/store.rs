//! Objects, the global resourceVersion counter and the watch history.
//!
//! Every change bumps one cluster-wide counter (like etcd's revision), is appended to a bounded
//! history (older entries are "compacted": watching from before them is `410 Gone`) and is
//! broadcast to open watches while the store lock is held, so a watch that subscribes under the
//! same lock sees every later event exactly once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and broadcast to watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    /// Store key of the resource type.
    pub res: String,
    pub kind: EventType,
    /// The object before the change (for MODIFIED/DELETED); selectors look at both sides.
    pub old: Option<Arc<Value>>,
    /// The object after the change (for DELETED: the last state, with the deletion's RV).
    pub new: Arc<Value>,
    json: OnceLock<Bytes>,
}

impl Change {
    /// The serialised object, computed once and shared by all watchers.
    pub fn object_json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.new).unwrap_or_default()))
            .clone()
    }
}

/// Namespace ("" for cluster-scoped) and name.
pub type ObjKey = (String, String);

/// The mutable state behind the store lock.
pub struct Inner {
    pub rv: u64,
    pub objects: HashMap<String, BTreeMap<ObjKey, Arc<Value>>>,
    pub history: VecDeque<Arc<Change>>,
    pub history_cap: usize,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub compacted: u64,
    pub tx: broadcast::Sender<Arc<Change>>,
}

impl Inner {
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(65536);
        Self {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_cap,
            compacted: 0,
            tx,
        }
    }

    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(res)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn objects_of(&self, res: &str) -> impl Iterator<Item = (&ObjKey, &Arc<Value>)> {
        self.objects.get(res).into_iter().flatten()
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(change);
    }

    /// Stores `obj` under a new resourceVersion and emits ADDED or MODIFIED.
    pub fn put(&mut self, res: &str, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let obj = Arc::new(obj);
        let old = self
            .objects
            .entry(res.to_string())
            .or_default()
            .insert((ns, name), obj.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Change {
            rv,
            res: res.to_string(),
            kind,
            old,
            new: obj.clone(),
            json: OnceLock::new(),
        });
        obj
    }

    /// Removes an object and emits DELETED; returns its last state.
    pub fn remove(&mut self, res: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(res)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let last = Arc::new(last);
        self.record(Change {
            rv,
            res: res.to_string(),
            kind: EventType::Deleted,
            old: Some(old),
            new: last.clone(),
            json: OnceLock::new(),
        });
        Some(last)
    }

    /// Forgets the whole history: every watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }
}
