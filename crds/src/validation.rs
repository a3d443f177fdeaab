//! Validate an object against a CRD's `openAPIV3Schema` the way the API server does: structural
//! constraints (types, required, enums, bounds, patterns) and the CEL `x-kubernetes-validations`.
//!
//! Used by the tests (every example must pass, every broken sample must fail with the rule's
//! message) and by the API server double, so test clusters reject what real ones reject.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Why an object was refused: a field path and a message in the API server's words.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The openAPIV3Schema of the CRD's storage version, as JSON.
pub fn schema_of(crd: &CustomResourceDefinition) -> Option<Value> {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or(crd.spec.versions.first())?;
    serde_json::to_value(version.schema.as_ref()?.open_api_v3_schema.as_ref()?).ok()
}

/// Fills in schema defaults, as the API server does before validating and storing.
pub fn apply_defaults(schema: &Value, object: &Value) -> Value {
    kube::core::cel::apply_defaults(schema, object)
}

/// Checks `object` (already defaulted) against `schema`; `old` enables transition rules.
pub fn validate(
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    structural(schema, object, "", &mut errors);
    if errors.is_empty() {
        if let Err(cel_errors) = kube::core::cel::Validator::new().validate(schema, object, old) {
            errors.extend(cel_errors.into_vec().into_iter().map(|e| FieldError {
                path: e.field_path.trim_start_matches('.').to_string(),
                message: e.message,
            }));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn structural(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut err = |message: String| {
        errors.push(FieldError {
            path: if path.is_empty() {
                "<root>".into()
            } else {
                path.to_string()
            },
            message,
        })
    };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) && !path.is_empty() {
            err("Invalid value: null: must not be null".into());
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        err(format!(
            "Invalid value: {value}: {path} in body must be of type {}",
            ty.unwrap_or("?")
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            err(format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min {
                err(format!("Invalid value: {value}: {path} in body should be greater than or equal to {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max {
                err(format!(
                    "Invalid value: {value}: {path} in body should be less than or equal to {max}"
                ));
            }
        }
    }
    if let Some(s) = value.as_str() {
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if (s.chars().count() as u64) < min {
                err(format!(
                    "Invalid value: {value}: {path} in body should be at least {min} chars long"
                ));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(pattern) {
                Ok(re) if !re.is_match(s) => err(format!(
                    "Invalid value: {value}: {path} in body should match '{pattern}'"
                )),
                Ok(_) => {}
                Err(e) => err(format!("schema pattern {pattern:?} does not compile: {e}")),
            }
        }
    }
    match value {
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for key in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(key) {
                        errors.push(FieldError {
                            path: join(path, key),
                            message: "Required value".into(),
                        });
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let child_path = join(path, key);
                if let Some(s) = props.and_then(|p| p.get(key)) {
                    structural(s, child, &child_path, errors);
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    structural(s, child, &child_path, errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    errors.push(FieldError {
                        path: path.to_string(),
                        message: format!(
                            "Invalid value: {}: should have at least {min} items",
                            items.len()
                        ),
                    });
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}
