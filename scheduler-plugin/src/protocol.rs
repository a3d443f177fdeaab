//! The kube-scheduler extender wire format.
//!
//! The upstream Go types (`k8s.io/kube-scheduler/extender/v1/types.go`) carry no json tags, so
//! kube-scheduler sends and expects the Go field names verbatim (PascalCase). Go decodes replies
//! case-insensitively, but other clients (tests, curl, older forks) send lowercase or camelCase,
//! so every input key also has lowercase/camelCase aliases. Replies are always PascalCase.
//! Unknown fields are ignored so a newer scheduler adding fields keeps working.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Pod, List};
use serde::{Deserialize, Serialize};

pub use k8s_openapi::api::core::v1::Node;

/// `v1.NodeList` as the scheduler sends it (`items` plus list metadata).
pub type NodeList = List<Node>;

/// Upstream `ExtenderArgs`: the pod being scheduled and the candidate nodes, either as names
/// (`nodeCacheCapable: true`) or as full Node objects. Some versions send both.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtenderArgs {
    #[serde(rename = "Pod", alias = "pod")]
    pub pod: Pod,
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Option<NodeList>,
    #[serde(
        rename = "NodeNames",
        alias = "nodenames",
        alias = "nodeNames",
        alias = "node_names",
        default
    )]
    pub node_names: Option<NodeNames>,
}

/// Names in one buffer, in order: as a `Vec<String>` a 5 000-name request was 5 000 allocations
/// (and as many frees), a tenth of a prioritize call. Also the extender's node table's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeNames {
    text: String,
    /// Where each name ends in `text`.
    ends: Vec<usize>,
}

impl NodeNames {
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let name = &self.text[start..end];
            start = end;
            name
        })
    }

    /// Name `i` (request order).
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.text[start..end])
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }
}

impl<'a> FromIterator<&'a str> for NodeNames {
    fn from_iter<I: IntoIterator<Item = &'a str>>(names: I) -> Self {
        let mut out = Self::default();
        names.into_iter().for_each(|n| out.push(n));
        out
    }
}

impl<'de> Deserialize<'de> for NodeNames {
    /// A JSON array of strings (anything else is the usual serde error), each appended to the
    /// buffer straight from the request (`visit_borrowed_str`) or serde's unescaping scratch.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{DeserializeSeed, SeqAccess, Visitor};
        struct Names;
        struct Name<'n>(&'n mut NodeNames);
        impl<'de> DeserializeSeed<'de> for Name<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }
        impl<'de> Visitor<'de> for Name<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a node name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<(), E> {
                self.0.push(name);
                Ok(())
            }
        }
        impl<'de> Visitor<'de> for Names {
            type Value = NodeNames;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of node names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeNames, A::Error> {
                let mut names = NodeNames::default();
                while seq.next_element_seed(Name(&mut names))?.is_some() {}
                Ok(names)
            }
        }
        deserializer.deserialize_seq(Names)
    }
}

/// Upstream `ExtenderFilterResult`. `Nodes`/`NodeNames` mirror the request's form; a name not in
/// the request is never returned (the scheduler would reject the whole reply).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExtenderFilterResult {
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Option<NodeList>,
    #[serde(
        rename = "NodeNames",
        alias = "nodenames",
        alias = "nodeNames",
        default
    )]
    pub node_names: Option<Vec<String>>,
    /// Node name → reason, for rejections preemption could resolve (kube-scheduler marks them
    /// `Unschedulable`). edgewatt has none: evicting pods frees no power before the scheduling
    /// decision, so this stays empty.
    #[serde(rename = "FailedNodes", alias = "failedNodes", default)]
    pub failed_nodes: BTreeMap<String, String>,
    /// Node name → reason for rejections preemption cannot help (`UnschedulableAndUnresolvable`
    /// in `schedule_one.go` `findNodesThatPassExtenders`, taking precedence over `FailedNodes`):
    /// every power rejection. The reason shows in the pod's `FailedScheduling` event.
    #[serde(
        rename = "FailedAndUnresolvableNodes",
        alias = "failedAndUnresolvableNodes",
        default
    )]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// Non-empty fails the pod's scheduling cycle unless the extender is `ignorable`; edgewatt
    /// fails open instead, so this stays empty.
    #[serde(rename = "Error", alias = "error", default)]
    pub error: String,
}

/// Upstream `HostPriority`; the prioritize reply is a JSON array of these. The reply borrows the
/// request's names (`HostPriority<&str>`): 5 000 copied names were 5 000 allocations per request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPriority<H = String> {
    #[serde(rename = "Host", alias = "host")]
    pub host: H,
    /// 0..=[`MAX_EXTENDER_PRIORITY`].
    #[serde(rename = "Score", alias = "score")]
    pub score: i64,
}

/// Upstream `MaxExtenderPriority`. kube-scheduler does not check it: it adds
/// `score × weight × (MaxNodeScore / MaxExtenderPriority)` (`schedule_one.go` `prioritizeNodes`),
/// so a larger score would silently outweigh every plugin; edgewatt never returns one.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// The score every node gets when the extender does not judge (fail open, exempt pod): the
/// middle of the range, the same for every candidate, so the ranking is the plugins' alone.
pub const NEUTRAL_SCORE: i64 = 5;

impl ExtenderArgs {
    /// The candidate node names in request order: `NodeNames` when present (authoritative with
    /// `nodeCacheCapable`), else the names of `Nodes.items`.
    pub fn candidate_names(&self) -> Vec<&str> {
        if let Some(names) = &self.node_names {
            return names.iter().collect();
        }
        self.nodes
            .iter()
            .flat_map(|l| l.items.iter())
            .filter_map(|n| n.metadata.name.as_deref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(json: &str) -> Result<Option<Vec<String>>, serde_json::Error> {
        let body = format!(r#"{{"Pod": {{}}, "NodeNames": {json}}}"#);
        let args: ExtenderArgs = serde_json::from_str(&body)?;
        Ok(args
            .node_names
            .map(|n| n.iter().map(str::to_string).collect()))
    }

    #[test]
    fn node_names_keep_order_escapes_and_empty_names() {
        assert_eq!(
            names(r#"["b", "a\"x", "n\u00e9", "", "a"]"#).unwrap(),
            Some(
                vec!["b", "a\"x", "né", "", "a"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        assert_eq!(names("[]").unwrap(), Some(vec![]));
        let n: NodeNames = ["a", "", "bc"].into_iter().collect();
        assert_eq!(
            (n.get(0), n.get(1), n.get(2), n.get(3)),
            (Some("a"), Some(""), Some("bc"), None)
        );
        assert_eq!(names("null").unwrap(), None);
        let args: ExtenderArgs = serde_json::from_str(r#"{"Pod": {}}"#).unwrap();
        assert!(args.node_names.is_none());
    }

    #[test]
    fn node_names_that_are_not_strings_are_a_clear_error() {
        let e = names("[1]").unwrap_err().to_string();
        assert!(e.contains("a node name"), "{e}");
        let e = names(r#""node-a""#).unwrap_err().to_string();
        assert!(e.contains("an array of node names"), "{e}");
    }
}
