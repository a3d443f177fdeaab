//! Object semantics: create, update, patch, delete, list — the rules the real server applies.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{json, Value};

use super::graceful::{default_pod_spec, Graceful};
use super::patch::{apply_patch, PatchType};
use super::resize::{compute_qos, default_requests_from_limits, validate_pod_update};
use super::resources::ResourceDef;
use super::scale;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::Inner;
use super::App;

pub(crate) fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str().filter(|s| !s.is_empty())
}

/// Everything but metadata and status: a change here bumps `metadata.generation`.
fn spec_differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(a) != strip(b)
}

fn has_finalizers(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

/// Which endpoint writes an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The object itself (also `scale`, which moves only `spec.replicas` onto it).
    Main,
    /// `/status`: only the status changes.
    Status,
    /// `pods/{name}/resize`, whose strategy already kept only container resources.
    Resize,
}

impl Via {
    fn from_status(status: bool) -> Self {
        if status {
            Via::Status
        } else {
            Via::Main
        }
    }
}

/// Stores an object as given (test hook): fills identity fields when missing.
pub(crate) fn put_direct(inner: &mut Inner, res: &ResourceDef, mut obj: Value) -> Arc<Value> {
    let ns = meta_str(&obj, "namespace").unwrap_or_default().to_string();
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    let old = inner.get(&res.key(), &ns, &name);
    let meta = &mut obj["metadata"];
    for field in ["uid", "creationTimestamp", "generation"] {
        if meta[field].is_null() {
            meta[field] = match (&old, field) {
                (Some(o), _) if !o["metadata"][field].is_null() => o["metadata"][field].clone(),
                (_, "uid") => new_uid().into(),
                (_, "creationTimestamp") => now().into(),
                _ => 1.into(),
            };
        }
    }
    inner.put(&res.key(), obj)
}

impl App {
    fn validate(
        &self,
        res: &ResourceDef,
        name: &str,
        new: Value,
        old: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let crd = self
            .admissions
            .read()
            .expect("admissions lock")
            .get(&res.key())
            .cloned();
        let new = match crd {
            Some(a) => a
                .admit(new, old)
                .map_err(|msgs| ApiError::invalid(res, name, &msgs))?,
            None => new,
        };
        let v = self
            .validators
            .read()
            .expect("validators lock")
            .get(&res.plural)
            .cloned();
        match v {
            Some(f) => f(&new, old).map_err(|msgs| ApiError::invalid(res, name, &msgs)),
            None => Ok(new),
        }
    }

    /// Checks and completes the type and namespace of a body sent to a collection or object URL.
    pub(crate) fn check_body(
        res: &ResourceDef,
        ns: Option<&str>,
        body: &mut Value,
    ) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        for (field, want) in [
            ("apiVersion", res.api_version()),
            ("kind", res.kind.clone()),
        ] {
            match body[field].as_str() {
                None | Some("") => body[field] = want.into(),
                Some(got) if got != want => {
                    return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({})",
                    body["apiVersion"].as_str().unwrap_or_default(),
                    res.api_version()
                )))
                }
                _ => {}
            }
        }
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        match (ns, meta_str(body, "namespace")) {
            (Some(url), Some(b)) if url != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            (Some(url), _) => body["metadata"]["namespace"] = url.into(),
            (None, _) => {
                if let Some(m) = body["metadata"].as_object_mut() {
                    m.remove("namespace");
                }
            }
        }
        Ok(())
    }

    /// POST to a collection (also apply-patch on a missing object).
    pub(crate) fn create(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        mut body: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        Self::check_body(res, ns, &mut body)?;
        let generate = meta_str(&body, "generateName").map(String::from);
        let given = meta_str(&body, "name").map(String::from);
        if given.is_none() && generate.is_none() {
            return Err(ApiError::invalid(
                res,
                "",
                &["metadata.name: Required value: name or generateName is required".into()],
            ));
        }
        // etcd3's storage refuses it after admission (a plain error: 500, no reason); a value
        // that is not a number passes, as on the real server (kubernetes#113847).
        let rv_set = meta_str(&body, "resourceVersion")
            .and_then(|rv| rv.parse::<u64>().ok())
            .is_some_and(|rv| rv != 0);
        {
            let meta = body["metadata"].as_object_mut().expect("metadata object");
            for f in [
                "uid",
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                meta.remove(f);
            }
            meta.insert("creationTimestamp".into(), now().into());
            meta.insert("generation".into(), 1.into());
        }
        let pods = res.group.is_empty() && res.plural == "pods";
        if pods {
            // SetDefaults_Pod, then PrepareForCreate's `qos.GetPodQOS`.
            default_pod_spec(&mut body["spec"]);
            default_requests_from_limits(&mut body["spec"]);
        }
        if scale::scalable(res) && body["spec"]["replicas"].is_null() {
            // SetDefaults_Deployment/_StatefulSet/_ReplicaSet: replicas 1.
            body["spec"]["replicas"] = 1.into();
        }
        if res.has_status && res.plural != "nodes" {
            let qos = if pods {
                compute_qos(&body["spec"])?
            } else {
                ""
            };
            let obj = body.as_object_mut().expect("object");
            match (res.group.as_str(), res.plural.as_str()) {
                ("", "pods") => {
                    obj.insert(
                        "status".into(),
                        json!({"phase": "Pending", "qosClass": qos}),
                    );
                }
                ("", "namespaces") => {
                    obj.insert("status".into(), json!({"phase": "Active"}));
                }
                ("apiextensions.k8s.io", "customresourcedefinitions") => {
                    let status = super::crd::status_of(&Value::Object(obj.clone()));
                    obj.insert("status".into(), status);
                }
                _ => {
                    obj.remove("status");
                }
            }
        }
        let display = given.clone().unwrap_or_default();
        let mut body = self.validate(res, &display, body, None)?;
        let mut inner = self.store.lock().expect("store lock");
        if let Some(ns) = ns {
            if inner.get("/v1/namespaces", "", ns).is_none() {
                return Err(ApiError::namespace_not_found(ns));
            }
        }
        if rv_set {
            return Err(ApiError::resource_version_on_create());
        }
        let key = res.key();
        let name = match (given, generate) {
            (Some(n), _) => {
                if inner.get(&key, ns.unwrap_or_default(), &n).is_some() {
                    return Err(ApiError::already_exists(res, &n));
                }
                n
            }
            (None, Some(prefix)) => loop {
                let n = format!("{prefix}{}", name_suffix());
                if inner.get(&key, ns.unwrap_or_default(), &n).is_none() {
                    break n;
                }
            },
            (None, None) => unreachable!("checked above"),
        };
        body["metadata"]["name"] = name.into();
        body["metadata"]["uid"] = new_uid().into();
        if dry_run {
            body["metadata"]["resourceVersion"] = "".into();
            return Ok(Arc::new(body));
        }
        let stored = inner.put(&key, body);
        drop(inner);
        self.after_store(res, &stored);
        Ok(stored)
    }

    /// A stored CRD changes what is served.
    fn after_store(&self, res: &ResourceDef, obj: &Value) {
        if res.key() == super::crd::CRD_KEY {
            self.crd_stored(obj);
        }
    }

    /// Shared by update and patch: rules for turning `candidate` into the stored object.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_existing(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        name: &str,
        old: &Arc<Value>,
        candidate: Value,
        via: Via,
        require_rv: bool,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let status = via == Via::Status;
        let old_rv = meta_str(old, "resourceVersion").unwrap_or_default();
        match meta_str(&candidate, "resourceVersion") {
            Some(rv) if rv != old_rv => return Err(ApiError::conflict(res, name)),
            None if require_rv => return Err(ApiError::invalid(
                res,
                name,
                &[
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                        .into(),
                ],
            )),
            _ => {}
        }
        if let Some(n) = meta_str(&candidate, "name") {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let mut new = if status {
            let mut new = (**old).clone();
            match candidate.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            new
        } else {
            let mut new = candidate;
            if res.has_status {
                let obj = new.as_object_mut().expect("object");
                match old.get("status") {
                    Some(s) => obj.insert("status".into(), s.clone()),
                    None => obj.remove("status"),
                };
            }
            if !new["metadata"].is_object() {
                new["metadata"] = json!({});
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
                "generation",
            ] {
                let meta = new["metadata"].as_object_mut().expect("metadata");
                match old["metadata"].get(f) {
                    Some(v) => meta.insert(f.into(), v.clone()),
                    None => meta.remove(f),
                };
            }
            new["apiVersion"] = old["apiVersion"].clone();
            new["kind"] = old["kind"].clone();
            new
        };
        new["metadata"]["resourceVersion"] = old_rv.into();
        if via == Via::Main && res.group.is_empty() && res.plural == "pods" {
            let errs = validate_pod_update(&new, old)?;
            if !errs.is_empty() {
                return Err(ApiError::invalid(res, name, &errs));
            }
        }
        let mut new = self.validate(res, name, new, Some(old))?;
        if spec_differs(&new, old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = (g + 1).into();
        }
        if new == **old {
            // No-op writes keep the resourceVersion and emit no event, like the real server.
            return Ok(old.clone());
        }
        let ns = meta_str(old, "namespace").unwrap_or_default().to_string();
        // The last finalizer gone: removed unless a graceful deletion is still pending.
        if meta_str(&new, "deletionTimestamp").is_some()
            && !has_finalizers(&new)
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0
        {
            if dry_run {
                return Ok(Arc::new(new));
            }
            inner.put(&res.key(), new);
            return Ok(inner
                .remove(&res.key(), &ns, name)
                .expect("object just stored"));
        }
        if dry_run {
            return Ok(Arc::new(new));
        }
        let stored = inner.put(&res.key(), new);
        self.after_store(res, &stored);
        Ok(stored)
    }

    /// PUT on an object or its `/status`.
    pub(crate) fn update(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        Self::check_body(res, ns, &mut body)?;
        let mut inner = self.store.lock().expect("store lock");
        let old = inner
            .get(&res.key(), ns.unwrap_or_default(), name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        self.write_existing(
            &mut inner,
            res,
            name,
            &old,
            body,
            Via::from_status(status),
            !res.builtin,
            dry_run,
        )
    }

    /// PATCH on an object or its `/status`; returns whether it was created (apply only).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        pt: PatchType,
        patch: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        if pt == PatchType::Strategic && !res.builtin {
            return Err(ApiError::unsupported_media(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let existing = {
            let inner = self.store.lock().expect("store lock");
            inner.get(&res.key(), ns.unwrap_or_default(), name)
        };
        if existing.is_none() && pt == PatchType::Apply && !status {
            let mut body = patch;
            if meta_str(&body, "name").is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta_str(&body, "name").unwrap_or_default()
                )));
            }
            body["metadata"]["name"] = name.into();
            return Ok((self.create(res, ns, body, dry_run)?, true));
        }
        let mut inner = self.store.lock().expect("store lock");
        let old = inner
            .get(&res.key(), ns.unwrap_or_default(), name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let mut candidate = (*old).clone();
        if pt == PatchType::Apply {
            let mut p = patch;
            Self::check_body(res, ns, &mut p)?;
            apply_patch(&mut candidate, pt, &p)
        } else {
            apply_patch(&mut candidate, pt, &patch)
        }
        .map_err(|e| ApiError::invalid(res, name, &[e]))?;
        let obj = self.write_existing(
            &mut inner,
            res,
            name,
            &old,
            candidate,
            Via::from_status(status),
            false,
            dry_run,
        )?;
        Ok((obj, false))
    }

    /// DELETE of one object, with finalizers and preconditions.
    pub(crate) fn delete_locked(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let ns_s = ns.unwrap_or_default();
        let old = inner
            .get(&res.key(), ns_s, name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let pre = &opts["preconditions"];
        for (field, label) in [("resourceVersion", "ResourceVersion"), ("uid", "UID")] {
            if let Some(want) = pre[field].as_str() {
                let got = meta_str(&old, field).unwrap_or_default();
                if want != got {
                    return Err(ApiError::conflict_msg(
                        res,
                        name,
                        &format!(
                            "Precondition failed: {label} in precondition: {want}, {label} in object meta: {got}"
                        ),
                    ));
                }
            }
        }
        if dry_run {
            return Ok(old);
        }
        if res.group.is_empty() && res.plural == "pods" {
            if let Graceful::Pending(obj) = self.delete_pod(inner, res, &old, opts) {
                return Ok(obj);
            }
        }
        if has_finalizers(&old) {
            if meta_str(&old, "deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = now().into();
            new["metadata"]["deletionGracePeriodSeconds"] = 0.into();
            return Ok(inner.put(&res.key(), new));
        }
        if res.group.is_empty() && res.plural == "namespaces" {
            // Simplified namespace lifecycle: contents go at once, no Terminating phase.
            let keys: Vec<String> = inner.objects.keys().cloned().collect();
            for key in keys {
                let names: Vec<String> = inner
                    .objects_of(&key)
                    .filter(|((n, _), _)| n == name)
                    .map(|((_, obj), _)| obj.clone())
                    .collect();
                for obj in names {
                    inner.remove(&key, name, &obj);
                }
            }
        }
        let gone = inner
            .remove(&res.key(), ns_s, name)
            .expect("object present");
        if res.key() == super::crd::CRD_KEY {
            self.crd_removed(inner, &gone);
        }
        Ok(gone)
    }

    /// GET on a collection: the matching objects and the list's resourceVersion and continue.
    pub(crate) fn list(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        query: &ListQuery,
    ) -> Result<ListResult, ApiError> {
        let inner = self.store.lock().expect("store lock");
        let (list_rv, after) = match &query.continue_token {
            Some(tok) => {
                let mut parts = tok.splitn(3, '/');
                let (Some(rv), Some(tns), Some(tname)) = (
                    parts.next().and_then(|r| r.parse::<u64>().ok()),
                    parts.next(),
                    parts.next(),
                ) else {
                    return Err(ApiError::bad_request("continue key is not valid"));
                };
                if rv < inner.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list \
                         result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some((tns.to_string(), tname.to_string())))
            }
            None => (inner.rv, None),
        };
        let Some(map) = inner.objects.get(&res.key()) else {
            return Ok(ListResult {
                rv: list_rv,
                items: Vec::new(),
                continue_token: None,
                remaining: None,
            });
        };
        let lower = match &after {
            Some(k) => Bound::Excluded(k.clone()),
            None => match ns {
                Some(ns) => Bound::Included((ns.to_string(), String::new())),
                None => Bound::Unbounded,
            },
        };
        let limit = query.limit.filter(|l| *l > 0).map(|l| l as usize);
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0usize;
        for ((ons, oname), obj) in map.range((lower, Bound::Unbounded)) {
            if let Some(ns) = ns {
                if ons != ns {
                    break;
                }
            }
            if !query.labels.matches_object(obj) || !query.fields.matches(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                remaining += 1;
                continue;
            }
            items.push(obj.clone());
            last_key = Some((ons.clone(), oname.clone()));
        }
        let (continue_token, remaining) = match (remaining, last_key) {
            (0, _) | (_, None) => (None, None),
            (n, Some((kns, kname))) => (Some(format!("{list_rv}/{kns}/{kname}")), Some(n)),
        };
        Ok(ListResult {
            rv: list_rv,
            items,
            continue_token,
            remaining,
        })
    }
}

/// Parsed list/watch query parameters.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<u64>,
    pub continue_token: Option<String>,
}

pub(crate) struct ListResult {
    pub rv: u64,
    pub items: Vec<Arc<Value>>,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

impl ListResult {
    /// Serialises the `{Kind}List` without cloning the items.
    pub fn to_json(&self, res: &ResourceDef) -> Vec<u8> {
        let mut meta = json!({"resourceVersion": self.rv.to_string()});
        if let Some(c) = &self.continue_token {
            meta["continue"] = c.clone().into();
        }
        if let Some(r) = self.remaining {
            meta["remainingItemCount"] = r.into();
        }
        let mut out = Vec::with_capacity(64 + self.items.len() * 512);
        out.extend_from_slice(
            format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                res.kind,
                res.api_version(),
                meta
            )
            .as_bytes(),
        );
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &**item).expect("serialise to memory");
        }
        out.extend_from_slice(b"]}");
        out
    }
}
