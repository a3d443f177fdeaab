//! A YAML document as a tree that remembers where each value and key is (line, column), so an
//! error found after parsing — a policy the CRD rejects, a fleet that cannot work — names the
//! file, line and field, the way a parse error does.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

/// One value and where it starts (1-based line and column; 0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: u64,
    pub column: u64,
    pub value: Val,
}

/// A YAML value; mappings keep their key order and each key's own position.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub line: u64,
    pub column: u64,
}

fn at(loc: Location) -> (u64, u64) {
    (loc.line(), loc.column())
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Val>::deserialize(d)?;
        let (line, column) = at(s.referenced);
        Ok(Node {
            line,
            column,
            value: s.value,
        })
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val, E> {
        Ok(Val::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val, E> {
        Ok(Val::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val, E> {
        Ok(i64::try_from(v).map_or(Val::Float(v as f64), Val::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val, E> {
        Ok(Val::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val, E> {
        Ok(Val::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Val, E> {
        Ok(Val::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Val, E> {
        Ok(Val::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Val, E> {
        Ok(Val::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        Val::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        let mut out = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            out.push(n);
        }
        Ok(Val::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Spanned<KeyName>>()? {
            let (line, column) = at(k.referenced);
            let v = map.next_value::<Node>()?;
            out.push((
                Key {
                    name: k.value.0,
                    line,
                    column,
                },
                v,
            ));
        }
        Ok(Val::Map(out))
    }
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

/// A mapping key of any scalar type, as text (`1: x` has the key `1`).
struct KeyName(String);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(KeyName(match Val::deserialize(d)? {
            Val::Str(s) => s,
            Val::Int(i) => i.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Null => "null".into(),
            Val::Seq(_) | Val::Map(_) => {
                return Err(de::Error::custom("a mapping key must be a scalar"))
            }
        }))
    }
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[2].c` as segments. Keys may not contain `.` or `[` (none of ours do); the CRD
/// validator's paths have the same shape.
pub fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Seg::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']').unwrap_or(stripped.len());
                match stripped[..end].parse::<usize>() {
                    Ok(n) => out.push(Seg::Index(n)),
                    Err(_) => out.push(Seg::Key(stripped[..end].to_string())),
                }
                rest = stripped.get(end + 1..).unwrap_or("");
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

/// Renders segments back as a path (`policies[0].spec.for`).
pub fn path_string(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

impl Node {
    /// The value at `path`, if present.
    pub fn get(&self, path: &[Seg]) -> Option<&Node> {
        let mut n = self;
        for seg in path {
            n = n.child(seg)?.1;
        }
        Some(n)
    }

    fn child(&self, seg: &Seg) -> Option<((u64, u64), &Node)> {
        match (&self.value, seg) {
            (Val::Map(m), Seg::Key(k)) => m
                .iter()
                .find(|(key, _)| &key.name == k)
                .map(|(key, v)| ((key.line, key.column), v)),
            (Val::Seq(s), Seg::Index(i)) => s.get(*i).map(|v| ((v.line, v.column), v)),
            _ => None,
        }
    }

    /// Where `path` is: its key's position (a field is named where its key is), else the
    /// deepest existing ancestor's (a missing field is reported where its parent is).
    pub fn locate(&self, path: &[Seg]) -> (u64, u64) {
        let mut n = self;
        let mut pos = (self.line, self.column);
        for seg in path {
            match n.child(seg) {
                Some((p, c)) => {
                    pos = p;
                    n = c;
                }
                None => break,
            }
        }
        pos
    }

    /// The path of the deepest value or key at `line:column` (where a parse error points).
    pub fn path_at(&self, line: u64, column: u64) -> Option<Vec<Seg>> {
        fn walk(n: &Node, line: u64, column: u64, path: &mut Vec<Seg>) -> bool {
            let here = n.line == line && n.column == column;
            match &n.value {
                Val::Map(m) => {
                    for (k, v) in m {
                        path.push(Seg::Key(k.name.clone()));
                        if (k.line == line && k.column == column) || walk(v, line, column, path) {
                            return true;
                        }
                        path.pop();
                    }
                }
                Val::Seq(s) => {
                    for (i, v) in s.iter().enumerate() {
                        path.push(Seg::Index(i));
                        if walk(v, line, column, path) {
                            return true;
                        }
                        path.pop();
                    }
                }
                _ => {}
            }
            here
        }
        let mut path = Vec::new();
        walk(self, line, column, &mut path).then_some(path)
    }

    /// The value as JSON (what the CRD validator reads).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Val::Null => J::Null,
            Val::Bool(b) => J::Bool(*b),
            Val::Int(i) => J::from(*i),
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Val::Str(s) => J::String(s.clone()),
            Val::Seq(s) => J::Array(s.iter().map(Node::to_json).collect()),
            Val::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parses a YAML document into a located tree.
pub fn parse(text: &str) -> Result<Node, serde_saphyr::Error> {
    serde_saphyr::from_str::<Node>(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_paths_carry_their_positions() {
        let doc = "a:\n  b: [1, 2]\n  c:\n    - d: x\n";
        let n = parse(doc).unwrap();
        assert_eq!(n.locate(&parse_path("a.c[0].d")), (4, 7));
        assert_eq!(n.locate(&parse_path("a.b")), (2, 3));
        // Missing fields are reported at their deepest existing ancestor.
        assert_eq!(n.locate(&parse_path("a.c[0].nope")), (4, 7));
        assert_eq!(path_string(&n.path_at(4, 7).unwrap()), "a.c[0].d", "{n:?}");
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": {"b": [1, 2], "c": [{"d": "x"}]}})
        );
    }
}
