//! Label and field selectors with the API server's syntax and matching rules.

use serde_json::{Map, Value};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Req {
    fn key(&self) -> &str {
        match self {
            Req::Eq(k, _)
            | Req::NotEq(k, _)
            | Req::In(k, _)
            | Req::NotIn(k, _)
            | Req::Exists(k)
            | Req::NotExists(k) => k,
        }
    }
}

/// A parsed label selector (`a=b,c!=d,e in (x,y),f notin (z),g,!h`); empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Req>,
    /// A `null` metav1.LabelSelector matches nothing (PDB semantics).
    nothing: bool,
}

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let bad = || format!("unable to parse requirement: invalid label selector {term:?}");
            let req = if let Some(k) = term.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = term.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(open) = term.find('(') {
                let close = term.rfind(')').ok_or_else(bad)?;
                let head: Vec<&str> = term[..open].split_whitespace().collect();
                let values: Vec<String> = term[open + 1..close]
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                match head.as_slice() {
                    [k, "in"] => Req::In(k.to_string(), values),
                    [k, "notin"] => Req::NotIn(k.to_string(), values),
                    _ => return Err(bad()),
                }
            } else {
                Req::Exists(term.clone())
            };
            if !valid_key(req.key()) {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(Self {
            reqs,
            nothing: false,
        })
    }

    /// Builds a selector from a metav1.LabelSelector JSON value (`matchLabels`, `matchExpressions`).
    pub fn from_json(sel: &Value) -> Result<Self, String> {
        if sel.is_null() {
            return Ok(Self {
                reqs: Vec::new(),
                nothing: true,
            });
        }
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or_default().into()));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            reqs.push(match e["operator"].as_str() {
                Some("In") => Req::In(key, values),
                Some("NotIn") => Req::NotIn(key, values),
                Some("Exists") => Req::Exists(key),
                Some("DoesNotExist") => Req::NotExists(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            });
        }
        Ok(Self {
            reqs,
            nothing: false,
        })
    }

    /// The query-parameter form of a metav1.LabelSelector JSON value, as
    /// `metav1.LabelSelectorAsSelector(..).String()` prints it (a Scale's `status.selector`):
    /// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`; `""` for a
    /// null or empty selector (kubernetes/kubernetes `staging/src/k8s.io/apimachinery/pkg/apis/
    /// meta/v1/helpers.go`, `.../pkg/labels/selector.go` `Requirement.String`).
    pub fn query_string(sel: &Value) -> Result<String, String> {
        let parsed = Self::from_json(sel)?;
        let mut reqs = parsed.reqs;
        reqs.sort_by(|a, b| a.key().cmp(b.key()));
        let values = |vs: &[String]| {
            let mut vs = vs.to_vec();
            vs.sort();
            vs.join(",")
        };
        Ok(reqs
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::NotEq(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", values(vs)),
                Req::NotIn(k, vs) => format!("{k} notin ({})", values(vs)),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(","))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches_object(&self, obj: &Value) -> bool {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let labels = obj["metadata"]["labels"]
            .as_object()
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
        self.matches(labels)
    }

    /// Whether a label map satisfies every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        if self.nothing {
            return false;
        }
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector (`metadata.name=x,spec.nodeName!=`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter; `supported` lists the field labels the
    /// resource accepts (the real server refuses others with 400).
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let k = k.trim();
            if !supported.contains(&k) {
                return Err(format!("field label not supported: {k}"));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(Self { reqs })
    }

    /// Whether the object's fields satisfy every requirement (a missing field reads as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for part in path.split('.') {
                cur = &cur[part];
            }
            let got = match cur {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let labels = json!({"app": "web", "tier": "front", "env": "prod"});
        let labels = labels.as_object().unwrap();
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(labels);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier!=back"));
        assert!(!m("app=db"));
        assert!(m("env in (prod, staging)"));
        assert!(!m("env notin (prod)"));
        assert!(m("missing notin (x)"));
        assert!(m("app,!missing"));
        assert!(!m("!app"));
        assert!(LabelSelector::parse("a in x").is_err());
    }

    #[test]
    fn metav1_selector_json() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}});
        let s = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"}})).unwrap();
        assert!(s.matches_object(&pod));
        let s = LabelSelector::from_json(
            &json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
        )
        .unwrap();
        assert!(!s.matches_object(&pod));
        assert!(LabelSelector::from_json(&json!({}))
            .unwrap()
            .matches_object(&pod));
        assert!(!LabelSelector::from_json(&Value::Null)
            .unwrap()
            .matches_object(&pod));
    }

    #[test]
    fn query_string_is_sorted_like_labels_selector_string() {
        // selector_test.go: requirements sorted by key, values sorted, `=` for matchLabels
        let sel = json!({"matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["b", "a"]},
                                 {"key": "canary", "operator": "DoesNotExist"},
                                 {"key": "env", "operator": "NotIn", "values": ["dev"]},
                                 {"key": "owner", "operator": "Exists"}]});
        assert_eq!(
            LabelSelector::query_string(&sel).unwrap(),
            "app=shop,!canary,env notin (dev),owner,tier=web,zone in (a,b)"
        );
        assert_eq!(LabelSelector::query_string(&json!({})).unwrap(), "");
        assert_eq!(LabelSelector::query_string(&Value::Null).unwrap(), "");
    }

    #[test]
    fn field_selector() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let sup = ["metadata.name", "spec.nodeName"];
        assert!(FieldSelector::parse("spec.nodeName=n1", &sup)
            .unwrap()
            .matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName!=n1", &sup)
            .unwrap()
            .matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName!=", &sup)
            .unwrap()
            .matches(&pod));
        assert!(FieldSelector::parse("status.phase=x", &sup).is_err());
    }
}
