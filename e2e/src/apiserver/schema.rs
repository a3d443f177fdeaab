//! Admission of custom resources from their CRD's structural schema, in the order of
//! apiextensions-apiserver: pruning of unknown fields (and of `null` where the schema does not
//! allow it), defaulting, OpenAPI validation, then the CEL `x-kubernetes-validations` — the rules
//! are the CRD's own, evaluated by kube's `cel` (kube-cel), never re-stated here.
//!
//! Sources: kubernetes/kubernetes `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/
//! schema/pruning/algorithm.go` (what is pruned; `apiVersion`/`kind`/`metadata` kept at the root
//! and in embedded resources), `.../schema/defaulting/algorithm.go` and the CRD docs "Defaulting
//! and Nullable" (nulls of non-nullable fields are pruned before defaulting), kube-openapi's
//! `validate` for the messages (`<path> in body must be of type <t>: "<actual>"`).

use std::sync::Mutex;

use kube::core::cel::{compile_schema, CompiledSchema, Validator};
use serde_json::{Map, Value};

/// One served version's schema, its CEL rules compiled once.
pub(crate) struct Admission {
    schema: Value,
    compiled: CompiledSchema,
    cel: Mutex<Validator>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

impl Admission {
    pub(crate) fn new(schema: Value) -> Self {
        let compiled = compile_schema(&schema);
        Self {
            schema,
            compiled,
            cel: Mutex::new(Validator::new()),
        }
    }

    /// Prunes, defaults and validates `new` (`old` for transition rules); returns the object to
    /// store or the field errors, each `path: detail` as the real server words them.
    pub(crate) fn admit(&self, new: Value, old: Option<&Value>) -> Result<Value, Vec<String>> {
        let mut obj = new;
        prune_root(&self.schema, &mut obj);
        let obj = kube::core::cel::apply_defaults(&self.schema, &obj);
        let mut errors = Vec::new();
        for (key, child) in obj.as_object().into_iter().flatten() {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = self.schema["properties"].get(key) {
                validate(s, child, key, &mut errors);
            }
        }
        if errors.is_empty() {
            let cel = self.cel.lock().expect("cel validator lock");
            if let Err(errs) = cel.validate_compiled(&self.compiled, &obj, old) {
                for e in errs.into_vec() {
                    let path = e.field_path.trim_start_matches('.').to_string();
                    errors.push(cel_detail(&obj, &path, e.reason.as_deref(), &e.message));
                }
            }
        }
        if errors.is_empty() {
            Ok(obj)
        } else {
            Err(errors)
        }
    }
}

/// `path: <reason>: message` for a failed CEL rule (`field.Invalid(path, <schema type>, msg)`
/// unless the rule names another reason).
fn cel_detail(obj: &Value, path: &str, reason: Option<&str>, message: &str) -> String {
    let shown = if path.is_empty() { "<root>" } else { path };
    match reason {
        Some("FieldValueForbidden") => format!("{shown}: Forbidden: {message}"),
        Some("FieldValueRequired") => format!("{shown}: Required value: {message}"),
        Some("FieldValueDuplicate") => format!("{shown}: Duplicate value: {message}"),
        _ => {
            let at = path
                .split('.')
                .filter(|s| !s.is_empty())
                .try_fold(obj, |v, k| v.get(k));
            let ty = at.map(json_type).unwrap_or("object");
            format!("{shown}: Invalid value: \"{ty}\": {message}")
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::Null => "null",
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

/// The root keeps `apiVersion`, `kind` and `metadata` whatever the schema says.
fn prune_root(schema: &Value, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    prune_object(schema, map, true);
}

fn prune_object(schema: &Value, map: &mut Map<String, Value>, keep_meta: bool) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    map.retain(|key, value| {
        if keep_meta && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            return true;
        }
        let child = props
            .and_then(|p| p.get(key))
            .or(additional.filter(|a| a.is_object()));
        match child {
            Some(s) => {
                if value.is_null() && !flag(s, "nullable") {
                    return false;
                }
                prune(s, value);
                true
            }
            None => preserve || additional == Some(&Value::Bool(true)),
        }
    });
}

fn prune(schema: &Value, value: &mut Value) {
    if flag(schema, "x-kubernetes-int-or-string") {
        return;
    }
    match value {
        Value::Object(map) => {
            prune_object(schema, map, flag(schema, "x-kubernetes-embedded-resource"))
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.retain(|v| !v.is_null() || flag(s, "nullable"));
                for v in items {
                    prune(s, v);
                }
            }
        }
        _ => {}
    }
}

/// OpenAPI validation of one value; appends `path: detail` errors.
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if !flag(schema, "nullable") {
            errors.push(format!(
                "{path}: Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!(
                "{path}: Invalid value: \"{}\": {path} in body must be of type int-or-string: \"{}\"",
                json_type(value),
                json_type(value)
            ));
        }
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            errors.push(format!(
                "{path}: Invalid value: \"{}\": {path} in body must be of type {ty}: \"{}\"",
                json_type(value),
                json_type(value)
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(format!(
                "{path}: Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ));
        }
    }
    bounds(schema, value, path, errors);
    match value {
        Value::Object(map) => {
            for key in schema["required"].as_array().into_iter().flatten() {
                if let Some(k) = key.as_str() {
                    if !map.contains_key(k) {
                        errors.push(format!("{path}.{k}: Required value"));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    validate(s, v, &format!("{path}.{k}"), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(s, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// minimum/maximum, minLength/maxLength/pattern, minItems/maxItems with kube-openapi's words.
fn bounds(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let count = |k: &str| schema.get(k).and_then(Value::as_u64);
    let mut fail =
        |detail: String| errors.push(format!("{path}: Invalid value: {value}: {detail}"));
    if let Some(n) = value.as_f64() {
        if let Some(min) = num("minimum").filter(|m| n < *m) {
            fail(format!(
                "{path} in body should be greater than or equal to {min}"
            ));
        }
        if let Some(max) = num("maximum").filter(|m| n > *m) {
            fail(format!(
                "{path} in body should be less than or equal to {max}"
            ));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = count("minLength").filter(|m| len < *m) {
            fail(format!(
                "{path} in body should be at least {min} chars long"
            ));
        }
        if let Some(max) = count("maxLength").filter(|m| len > *m) {
            fail(format!("{path} in body may not be longer than {max}"));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            if !regex_lite_match(p, s) {
                fail(format!("{path} in body should match '{p}'"));
            }
        }
    }
    if let Some(a) = value.as_array() {
        let len = a.len() as u64;
        if let Some(min) = count("minItems").filter(|m| len < *m) {
            fail(format!("{path} in body should have at least {min} items"));
        }
        if let Some(max) = count("maxItems").filter(|m| len > *m) {
            fail(format!("{path} in body should have at most {max} items"));
        }
    }
}

/// ECMA-262 patterns through the `regex` crate (what kube-openapi does with Go's RE2).
fn regex_lite_match(pattern: &str, s: &str) -> bool {
    regex::Regex::new(pattern).map_or(true, |re| re.is_match(s))
}
