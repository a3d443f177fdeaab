//! `metav1.Status` errors with the codes, reasons and messages the real server uses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::resources::ResourceDef;

/// An API error, rendered as a `metav1.Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn res_details(res: &ResourceDef, name: &str) -> Value {
        json!({"name": name, "group": res.group, "kind": res.plural})
    }

    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.group_resource()),
        )
        .with_details(Self::res_details(res, name))
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            .with_details(json!({"name": ns, "kind": "namespaces"}))
    }

    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.group_resource()),
        )
        .with_details(Self::res_details(res, name))
    }

    pub fn conflict(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.group_resource()
            ),
        )
        .with_details(Self::res_details(res, name))
    }

    pub fn conflict_msg(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.group_resource()
            ),
        )
        .with_details(Self::res_details(res, name))
    }

    /// 422 with one cause per message, as `apierrors.NewInvalid` builds them from a
    /// `field.ErrorList`: a `field: body` message is a cause with that field (none when empty, as
    /// for `field.NewPath("")`), the body as message and the cause type its `ErrorType`
    /// (`Forbidden: …` → `FieldValueForbidden`, `Required value…` → `FieldValueRequired`, …;
    /// staging/src/k8s.io/apimachinery/pkg/util/validation/field/errors.go).
    pub fn invalid(res: &ResourceDef, name: &str, messages: &[String]) -> Self {
        let joined = if messages.len() == 1 {
            messages[0].clone()
        } else {
            format!("[{}]", messages.join(", "))
        };
        let causes: Vec<Value> = messages
            .iter()
            .map(|m| match m.split_once(": ") {
                Some((field, msg)) if !field.contains(' ') => {
                    let mut c = json!({"reason": cause_type(msg), "message": msg});
                    if !field.is_empty() {
                        c["field"] = field.into();
                    }
                    c
                }
                _ => json!({"reason": "FieldValueInvalid", "message": m}),
            })
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {joined}", res.group_kind()),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.kind, "causes": causes}))
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media(msg: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", msg)
    }

    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Gone", msg)
    }

    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    pub fn too_many_requests(msg: impl Into<String>, causes: Value) -> Self {
        Self::new(429, "TooManyRequests", msg).with_details(json!({"causes": causes}))
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", msg)
    }

    /// 401: no valid credentials (a token that is unknown, or of a deleted ServiceAccount).
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 as `apierrors.NewForbidden(groupResource, name, err)` renders it.
    pub fn forbidden(
        group_resource: &str,
        group: &str,
        resource: &str,
        name: &str,
        why: &str,
    ) -> Self {
        let message = match (group_resource.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {why}"),
            (false, true) => format!("{group_resource} is forbidden: {why}"),
            (false, false) => format!("{group_resource} \"{name}\" is forbidden: {why}"),
        };
        let mut details = serde_json::Map::new();
        for (k, v) in [("name", name), ("group", group), ("kind", resource)] {
            if !v.is_empty() {
                details.insert(k.into(), v.into());
            }
        }
        Self::new(403, "Forbidden", message).with_details(Value::Object(details))
    }

    /// What etcd3's storage answers a create that carries a resourceVersion: a plain Go error,
    /// so a 500 without reason (`storage.ErrResourceVersionSetOnCreate`).
    pub fn resource_version_on_create() -> Self {
        Self::new(
            500,
            "",
            "resourceVersion should not be set on objects to be created",
        )
    }

    pub fn page_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// The `metav1.Status` JSON.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            s["reason"] = self.reason.into();
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The `field.ErrorType` whose `String()` starts an error body.
fn cause_type(body: &str) -> &'static str {
    [
        ("Forbidden", "FieldValueForbidden"),
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Not found", "FieldValueNotFound"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Internal error", "InternalError"),
    ]
    .iter()
    .find(|(text, _)| body.starts_with(text))
    .map_or("FieldValueInvalid", |(_, t)| t)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.to_status())
    }
}

/// A JSON response with the given status.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    bytes_response(code, serde_json::to_vec(body).unwrap_or_default())
}

/// A pre-serialised JSON response.
pub fn bytes_response(code: StatusCode, body: Vec<u8>) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A `Status` with `status: Success` (eviction, delete collection replies).
pub fn success_status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
