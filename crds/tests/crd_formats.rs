//! Every `format` in the generated CRDs is one kube-apiserver recognises, so applying them gives
//! no `unrecognized format "…"` warning (kube-apiserver ≥ 1.34) and no format is silently dropped.
//!
//! The rule is kubernetes/kubernetes
//! `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/validation/formats.go`
//! (`GetUnrecognizedFormats`, read at commit 03f23ae1d47f4084a6ed11520485ff384e086d30): for
//! `type: integer` only `int32`/`int64`, for `type: number` only `float`/`double`, for strings
//! (and untyped schemas) the `supportedVersionedFormats` list with `-` removed, for any other type
//! none. `pkg/registry/customresourcedefinition/strategy.go` (`WarningsOnCreate`,
//! `getUnrecognizedFormatsInSchema`) applies it to every schema node that `SchemaHas`
//! (`pkg/apis/apiextensions/validation/validation.go`) visits.

use serde_json::{json, Value};

/// `supportedVersionedFormats` introduced in 1.0, i.e. known to every Kubernetes version. The
/// 1.34 additions (`k8s-short-name`, `k8s-long-name`) are left out: older API servers strip them.
const STRING_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "quantity",
];

/// `GetUnrecognizedFormats` for one schema node.
fn unrecognized(schema: &Value) -> Option<String> {
    let format = schema.get("format")?.as_str().filter(|f| !f.is_empty())?;
    let ok = match schema.get("type").and_then(Value::as_str).unwrap_or("") {
        "" | "string" => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
        "integer" => matches!(format, "int32" | "int64"),
        "number" => matches!(format, "float" | "double"),
        _ => false,
    };
    (!ok).then(|| format.to_string())
}

/// Visits `schema` and every subschema `SchemaHas` visits, with its path.
fn walk(schema: &Value, path: &str, visit: &mut impl FnMut(&str, &Value)) {
    visit(path, schema);
    let sub = |key: &str| schema.get(key);
    for key in ["items", "not", "additionalProperties", "additionalItems"] {
        match sub(key) {
            Some(Value::Object(_)) => walk(&schema[key], &format!("{path}.{key}"), visit),
            Some(Value::Array(list)) => {
                for (i, s) in list.iter().enumerate() {
                    walk(s, &format!("{path}.{key}[{i}]"), visit)
                }
            }
            _ => {}
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, s) in sub(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(s, &format!("{path}.{key}[{i}]"), visit);
        }
    }
    for key in [
        "properties",
        "patternProperties",
        "definitions",
        "dependencies",
    ] {
        for (name, s) in sub(key).and_then(Value::as_object).into_iter().flatten() {
            if s.is_object() {
                walk(s, &format!("{path}.{key}.{name}"), visit);
            }
        }
    }
}

fn crds() -> Vec<(&'static str, Value)> {
    edgewatt_crds::generated_yaml()
        .unwrap()
        .into_iter()
        .map(|(file, yaml)| (file, serde_saphyr::from_str(&yaml).unwrap()))
        .collect()
}

#[test]
fn generated_crds_use_only_formats_kube_apiserver_recognises() {
    let mut seen = std::collections::BTreeSet::new();
    let mut bad = Vec::new();
    for (file, crd) in crds() {
        let versions = crd["spec"]["versions"].as_array().unwrap();
        for v in versions {
            let schema = &v["schema"]["openAPIV3Schema"];
            assert!(schema.is_object(), "{file}: no schema");
            walk(
                schema,
                &format!("{file} {}", v["name"].as_str().unwrap_or("?")),
                &mut |path, s| {
                    if let Some(f) = s.get("format").and_then(Value::as_str) {
                        seen.insert(f.to_string());
                    }
                    if let Some(f) = unrecognized(s) {
                        bad.push(format!("{path}: {f}"));
                    }
                },
            );
        }
    }
    assert!(bad.is_empty(), "unrecognized formats: {bad:#?}");
    // The walk reached the fields that carry formats (else it proves nothing).
    for f in ["int32", "int64", "double", "date-time"] {
        assert!(seen.contains(f), "no {f} field seen: {seen:?}");
    }
}

#[test]
fn the_check_flags_what_kube_apiserver_warns_about() {
    let s = |v: Value| unrecognized(&v);
    assert_eq!(
        s(json!({"type": "integer", "format": "uint32"})).as_deref(),
        Some("uint32")
    );
    assert_eq!(
        s(json!({"type": "integer", "format": "double"})).as_deref(),
        Some("double")
    );
    assert_eq!(
        s(json!({"type": "number", "format": "int64"})).as_deref(),
        Some("int64")
    );
    assert_eq!(
        s(json!({"type": "boolean", "format": "int32"})).as_deref(),
        Some("int32")
    );
    assert_eq!(
        s(json!({"type": "string", "format": "k8s-short-name"})).as_deref(),
        Some("k8s-short-name")
    );
    assert_eq!(s(json!({"type": "string", "format": "date-time"})), None);
    assert_eq!(s(json!({"type": "integer", "format": "int32"})), None);
    assert_eq!(s(json!({"type": "number", "format": "float"})), None);
    // Nested under items and properties.
    let mut found = Vec::new();
    let nested = json!({"type": "object", "properties": {"a": {"type": "array",
        "items": {"type": "integer", "format": "uint64"}}}});
    walk(&nested, "x", &mut |p, v| {
        found.extend(unrecognized(v).map(|f| format!("{p}: {f}")))
    });
    assert_eq!(found, ["x.properties.a.items: uint64"]);
}
