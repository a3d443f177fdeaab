//! HTTP routing: the real server's URL layout, verbs and content types.

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::auth;
use super::discovery;
use super::ops::ListQuery;
use super::patch::{apply_patch, parse_body, PatchType};
use super::resources::ResourceDef;
use super::scale::{scalable, ScaleWrite};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{bytes_response, json_response, ApiError};
use super::watch::{self, Filter, WatchParams};
use super::{App, RequestRecord};

/// The secure port authenticates every request; the insecure port (kube-apiserver's old
/// `--insecure-port`) treats every request as `system:unsecured` in `system:masters`. Go clients
/// (Helm) need it: client-go reads no credentials from a kubeconfig whose server is plain HTTP.
pub(crate) fn router(app: Arc<App>, insecure: bool) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Port { app, insecure })
}

#[derive(Clone)]
struct Port {
    app: Arc<App>,
    insecure: bool,
}

async fn handle(
    State(Port { app, insecure }): State<Port>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let is_write = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    // kube-apiserver's filter order: authentication, priority and fairness, authorization.
    let user = {
        let tokens = app.tokens.read().expect("tokens lock");
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if insecure {
            Ok(auth::UserInfo::unsecured())
        } else {
            auth::authenticate(&tokens, &app.store, header)
        }
    };
    let (latency, fail, throttled) = {
        let mut f = app.faults.lock().expect("faults lock");
        let fail = f.fail_next > 0;
        if fail {
            f.fail_next -= 1;
        }
        let throttled = match &mut f.throttle {
            Some(t) if t.remaining > 0 && (is_write || !t.writes_only) => {
                t.remaining -= 1;
                Some(t.retry_after_secs)
            }
            _ => None,
        };
        (f.latency, fail, throttled)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = match &user {
        Err(e) => e.clone().into_response(),
        Ok(_) if throttled.is_some() => too_many_requests(throttled.unwrap_or(1)),
        Ok(u) => match authorize(&app, u, &method, &uri) {
            Err(e) => e.into_response(),
            Ok(()) if fail => ApiError::internal("injected fault").into_response(),
            Ok(()) => dispatch(&app, &method, &uri, content_type.as_deref(), &body)
                .unwrap_or_else(IntoResponse::into_response),
        },
    };
    let (user, pod) = match user {
        Ok(u) => (u.name, u.pod),
        Err(_) => (String::new(), None),
    };
    app.log.lock().expect("log lock").push(RequestRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type,
        status: resp.status().as_u16(),
        user,
        pod,
    });
    resp
}

/// RBAC on the request's attributes (see `auth.rs`).
fn authorize(app: &App, user: &auth::UserInfo, method: &Method, uri: &Uri) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(()); // before parsing or locking anything: the admin's requests stay cheap
    }
    let query: HashMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let attrs = auth::RequestAttributes::parse(method.as_str(), uri.path(), &query);
    let inner = app.store.lock().expect("store lock");
    auth::authorize(&inner, user, &attrs)
}

/// API priority and fairness' rejection: Go's `http.Error` (plain text) plus `Retry-After`.
fn too_many_requests(retry_after_secs: u64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                axum::http::header::RETRY_AFTER,
                retry_after_secs.to_string(),
            ),
            (
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                "nosniff".to_string(),
            ),
        ],
        "Too many requests, please try again later.\n",
    )
        .into_response()
}

/// A resolved resource URL.
struct Target {
    res: ResourceDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn ok_json(v: &Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, v))
}

fn dispatch(
    app: &Arc<App>,
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reg = || app.registry.read().expect("registry lock").clone();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return ok_json(&discovery::version()),
        ["api"] => return ok_json(&discovery::api_versions(&app.addr.to_string())),
        ["apis"] => return ok_json(&discovery::api_group_list(&reg())),
        ["apis", g] => {
            return discovery::api_group_doc(&reg(), g)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::page_not_found)
        }
        ["api", v] | ["apis", "", v] => {
            return discovery::api_resource_list(&reg(), "", v, app.pod_resize.load(SeqCst))
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::page_not_found)
        }
        ["apis", g, v] => {
            return discovery::api_resource_list(&reg(), g, v, app.pod_resize.load(SeqCst))
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::page_not_found)
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::page_not_found()),
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, next, ..]
            if !(rest.len() == 3 && matches!(*next, "status" | "finalize")) =>
        {
            (Some(ns.to_string()), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::page_not_found()),
    };
    let res = app
        .resource(group, version, plural)
        .ok_or_else(ApiError::page_not_found)?;
    if ns.is_some() && !res.namespaced {
        return Err(ApiError::page_not_found());
    }
    if ns.is_none() && res.namespaced && name.is_some() {
        return Err(ApiError::page_not_found());
    }
    let q: HashMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let t = Target { res, ns, name, sub };
    let pods = t.res.group.is_empty() && t.res.plural == "pods";
    match t.sub.as_deref() {
        None => {}
        Some("status") if t.res.has_status => {}
        Some("eviction") if pods => {}
        Some("resize") if pods && app.pod_resize.load(SeqCst) => {
            return resize_request(app, method, &t, &q, content_type, body)
        }
        Some("scale") if scalable(&t.res) => {
            return scale_request(app, method, &t, &q, content_type, body)
        }
        Some(_) => return Err(ApiError::page_not_found()),
    }
    resource_request(app, method, t, &q, content_type, body)
}

/// The patch type from the Content-Type and the parsed patch (apply needs a field manager).
fn read_patch(
    res: &ResourceDef,
    name: &str,
    q: &HashMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(PatchType, Value), ApiError> {
    let pt = PatchType::from_content_type(content_type.unwrap_or_default()).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml (got {content_type:?})"
        ))
    })?;
    if pt == PatchType::Apply && q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::invalid(
            res,
            name,
            &["fieldManager: Required value: is required for apply patch".into()],
        ));
    }
    let patch = parse_body(body, pt == PatchType::Apply)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    Ok((pt, patch))
}

/// `pods/{name}/resize`: GET reads the pod; PUT and PATCH go through the resize strategy
/// (`resize.rs`).
fn resize_request(
    app: &Arc<App>,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (res, ns) = (&t.res, t.ns.as_deref().unwrap_or_default());
    let name = t.name.as_deref().unwrap_or_default();
    let request = match method.as_str() {
        "GET" => None,
        "PUT" => {
            let mut b = json_body(body)?;
            App::check_body(res, t.ns.as_deref(), &mut b)?;
            if let Some(n) = b["metadata"]["name"].as_str().filter(|n| *n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            Some((None, b))
        }
        "PATCH" => {
            let (pt, patch) = read_patch(res, name, q, content_type, body)?;
            Some((Some(pt), patch))
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    let mut inner = app.store.lock().expect("store lock");
    let old = inner
        .get(&res.key(), ns, name)
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let Some((pt, payload)) = request else {
        drop(inner);
        return ok_json(&old);
    };
    let candidate = match pt {
        None => payload,
        Some(pt) => {
            let mut c = (*old).clone();
            apply_patch(&mut c, pt, &payload).map_err(|e| ApiError::invalid(res, name, &[e]))?;
            c
        }
    };
    let obj = app.resize_locked(&mut inner, res, name, &old, candidate, dry_run(q))?;
    drop(inner);
    ok_json(&obj)
}

/// `{deployments,statefulsets,replicasets}/{name}/scale` (`scale.rs`).
fn scale_request(
    app: &Arc<App>,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (res, ns) = (&t.res, t.ns.as_deref().unwrap_or_default());
    let name = t.name.as_deref().unwrap_or_default();
    let write = match method.as_str() {
        "GET" => return ok_json(&app.get_scale(res, ns, name)?),
        "PUT" => ScaleWrite::Replace(json_body(body)?),
        "PATCH" => {
            let (pt, patch) = read_patch(res, name, q, content_type, body)?;
            ScaleWrite::Patch(pt, patch)
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    ok_json(&app.write_scale(res, ns, name, write, dry_run(q))?)
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

fn list_query(res: &ResourceDef, q: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let fields: Vec<&str> = res.field_selectors.iter().map(String::as_str).collect();
    Ok(ListQuery {
        labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(
            q.get("fieldSelector").map(String::as_str).unwrap_or(""),
            &fields,
        )
        .map_err(ApiError::bad_request)?,
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    parse_body(body, false).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn resource_request(
    app: &Arc<App>,
    method: &Method,
    t: Target,
    q: &HashMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let ns = t.ns.as_deref();
    let status = t.sub.as_deref() == Some("status");
    let res = &t.res;
    match (method.as_str(), t.name.as_deref()) {
        ("GET", None) => {
            let query = list_query(res, q)?;
            if flag(q, "watch") {
                let filter = Filter {
                    key: res.key(),
                    ns: t.ns.clone(),
                    query,
                };
                return Ok(watch::watch(
                    app.clone(),
                    res,
                    filter,
                    WatchParams {
                        rv: q.get("resourceVersion").cloned(),
                        bookmarks: flag(q, "allowWatchBookmarks"),
                        send_initial_events: flag(q, "sendInitialEvents"),
                        timeout: q.get("timeoutSeconds").and_then(|s| s.parse().ok()),
                    },
                ));
            }
            let list = app.list(res, ns, &query)?;
            Ok(bytes_response(StatusCode::OK, list.to_json(res)))
        }
        ("GET", Some(name)) if t.sub.as_deref() != Some("eviction") => {
            let inner = app.store.lock().expect("store lock");
            let obj = inner
                .get(&res.key(), ns.unwrap_or_default(), name)
                .ok_or_else(|| ApiError::not_found(res, name))?;
            drop(inner);
            ok_json(&obj)
        }
        ("POST", None) => {
            let obj = app.create(res, ns, json_body(body)?, dry_run(q))?;
            Ok(json_response(StatusCode::CREATED, &obj))
        }
        ("POST", Some(name)) if t.sub.as_deref() == Some("eviction") => {
            let st = app.evict(res, ns.unwrap_or_default(), name, &json_body(body)?)?;
            Ok(json_response(StatusCode::CREATED, &st))
        }
        ("PUT", Some(name)) if t.sub.as_deref() != Some("eviction") => {
            let obj = app.update(res, ns, name, json_body(body)?, status, dry_run(q))?;
            ok_json(&obj)
        }
        ("PATCH", Some(name)) if t.sub.as_deref() != Some("eviction") => {
            let (pt, patch) = read_patch(res, name, q, content_type, body)?;
            let (obj, created) = app.patch(res, ns, name, pt, patch, status, dry_run(q))?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &obj))
        }
        ("DELETE", Some(name)) if t.sub.is_none() => {
            let opts = json_body(body)?;
            let dry = dry_run(q)
                || opts["dryRun"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
            let mut inner = app.store.lock().expect("store lock");
            let obj = app.delete_locked(&mut inner, res, ns, name, &opts, dry)?;
            drop(inner);
            ok_json(&obj)
        }
        ("DELETE", None) => {
            let query = list_query(res, q)?;
            let opts = json_body(body)?;
            let list = app.list(res, ns, &query)?;
            let mut inner = app.store.lock().expect("store lock");
            let mut deleted = Vec::new();
            for obj in &list.items {
                let m = &obj["metadata"];
                let (ons, oname) = (
                    m["namespace"].as_str(),
                    m["name"].as_str().unwrap_or_default(),
                );
                if let Ok(o) = app.delete_locked(&mut inner, res, ons, oname, &opts, dry_run(q)) {
                    deleted.push((*o).clone());
                }
            }
            let rv = inner.rv;
            drop(inner);
            ok_json(&json!({
                "kind": format!("{}List", res.kind),
                "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": rv.to_string()},
                "items": deleted
            }))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
