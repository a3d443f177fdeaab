//! Schema rewrites that make the generated CRDs say what kube-apiserver understands.
//!
//! schemars writes Rust's unsigned integers as `format: uint32`/`uint64`. kube-apiserver knows
//! only `int32` and `int64` for integers (apiextensions-apiserver
//! `pkg/apiserver/validation/formats.go`, `GetUnrecognizedFormats`) and, since 1.34, warns
//! `unrecognized format "uint32"` on every apply of such a CRD (`pkg/registry/
//! customresourcedefinition/strategy.go`, `WarningsOnCreate`). `crds/tests/crd_formats.rs`
//! checks every generated CRD against that rule.

use schemars::{
    transform::{RecursiveTransform, Transform},
    Schema,
};
use serde_json::Value;

/// Rewrites every integer `format` below `schema` to the signed one of the same or wider range
/// that Kubernetes knows, keeping the bounds of the Rust type: unsigned types get `minimum: 0`
/// (unless schemars already set a higher one), and 32-bit ones `maximum: 2147483647` — what a
/// client that reads `int32` (Go's `int32`) can hold, so the API never stores a value past it.
///
/// Used as `#[schemars(transform = crate::openapi::k8s_integer_formats)]` on the top types of a
/// resource (spec, status); with kube's `inline_subschemas` it reaches every nested field.
pub fn k8s_integer_formats(schema: &mut Schema) {
    RecursiveTransform(rewrite_one).transform(schema);
}

fn rewrite_one(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let (format, unsigned) = match obj.get("format").and_then(Value::as_str) {
        Some("uint8" | "uint16" | "uint32") => ("int32", true),
        Some("int8" | "int16") => ("int32", false),
        Some("uint64" | "uint") => ("int64", true),
        Some("int") => ("int64", false),
        _ => return,
    };
    obj.insert("format".into(), format.into());
    if unsigned
        && obj
            .get("minimum")
            .and_then(Value::as_f64)
            .is_none_or(|m| m < 0.0)
    {
        obj.insert("minimum".into(), 0.into());
    }
    if format == "int32" {
        let max = f64::from(i32::MAX);
        if obj
            .get("maximum")
            .and_then(Value::as_f64)
            .is_none_or(|m| m > max)
        {
            obj.insert("maximum".into(), i32::MAX.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rewritten(v: Value) -> Value {
        let mut s = Schema::try_from(v).unwrap();
        k8s_integer_formats(&mut s);
        s.to_value()
    }

    #[test]
    fn unsigned_formats_become_signed_with_the_same_bounds() {
        assert_eq!(
            rewritten(json!({"type": "integer", "format": "uint32", "minimum": 0})),
            json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": 2147483647})
        );
        // A bound the field already has (`range(min = 1)`, a lower maximum) is kept.
        assert_eq!(
            rewritten(
                json!({"type": "integer", "format": "uint32", "minimum": 1.0, "maximum": 10})
            ),
            json!({"type": "integer", "format": "int32", "minimum": 1.0, "maximum": 10})
        );
        assert_eq!(
            rewritten(json!({"type": "integer", "format": "uint64"})),
            json!({"type": "integer", "format": "int64", "minimum": 0})
        );
        // Nested fields, and formats Kubernetes knows are left alone.
        let known = json!({"type": "object", "properties": {
            "a": {"type": "integer", "format": "int64"},
            "b": {"type": "number", "format": "double"},
            "c": {"type": "array", "items": {"type": "integer", "format": "uint16", "minimum": 0, "maximum": 65535}}
        }});
        let mut want = known.clone();
        want["properties"]["c"]["items"]["format"] = json!("int32");
        assert_eq!(rewritten(known), want);
    }
}
