//! Which Redfish chassis measures *this* node: pure decisions over the resource graph a BMC
//! publishes (DMTF Redfish `Chassis` and `ComputerSystem` schemas; DMTF's public mockups
//! `public-rackmount1`, `public-bladed` and `public-smartnic` are the tests' fixtures).
//!
//! - This node's `ComputerSystem` is the one whose `UUID` equals the host's SMBIOS UUID
//!   (`/sys/class/dmi/id/product_uuid`) or whose `SerialNumber` equals `product_serial`.
//! - Its power is the first chassis with power resources found from the system's own chassis up
//!   the `ContainedBy` chain — but only if no other system draws from it. A blade enclosure
//!   powering four blades is *shared*: its power is exported as its own series and never as one
//!   node's draw. The system's own chassis may contain cards with systems of their own (a SmartNIC
//!   SoC): those are parts of this node's box, so only the systems linked to it directly count.
//! - `--redfish-chassis` names the chassis outright when the graph says too little.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// One `Chassis` resource, reduced to its links.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChassisNode {
    /// `@odata.id`.
    pub id: String,
    pub chassis_type: String,
    /// `Links.ComputerSystems`.
    pub systems: Vec<String>,
    /// `Links.Contains`.
    pub contains: Vec<String>,
    /// `Links.ContainedBy`.
    pub contained_by: Option<String>,
    /// Links to `EnvironmentMetrics`, `Power` or `PowerSubsystem`.
    pub has_power: bool,
}

/// One `ComputerSystem` resource, reduced to what identifies it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemNode {
    pub id: String,
    pub uuid: Option<String>,
    pub serial: Option<String>,
    /// `Links.Chassis`.
    pub chassis: Vec<String>,
}

/// This machine's identity from SMBIOS (either may be unknown: not root, no DMI on many ARM boards).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub uuid: Option<String>,
    pub serial: Option<String>,
}

/// What to read for this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The chassis whose power is this node's; `None` when only shared power exists.
    pub node: Option<String>,
    /// Chassis this node shares with other systems (exported as their own series).
    pub shared: Vec<String>,
    /// How the choice was made, for `top` and the log.
    pub why: String,
}

/// `@odata.id` without a trailing slash (services differ in this).
pub fn norm(id: &str) -> String {
    id.trim_end_matches('/').to_string()
}

fn link(v: &Value) -> Option<String> {
    v["@odata.id"].as_str().map(norm)
}

fn links(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(link).collect())
        .unwrap_or_default()
}

impl ChassisNode {
    pub fn parse(v: &Value) -> Option<Self> {
        Some(Self {
            id: link(v)?,
            chassis_type: v["ChassisType"].as_str().unwrap_or_default().to_string(),
            systems: links(&v["Links"]["ComputerSystems"]),
            contains: links(&v["Links"]["Contains"]),
            contained_by: link(&v["Links"]["ContainedBy"]),
            has_power: ["EnvironmentMetrics", "Power", "PowerSubsystem"]
                .iter()
                .any(|k| link(&v[*k]).is_some()),
        })
    }
}

impl SystemNode {
    pub fn parse(v: &Value) -> Option<Self> {
        let text = |k: &str| {
            v[k].as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        Some(Self {
            id: link(v)?,
            uuid: text("UUID"),
            serial: text("SerialNumber"),
            chassis: links(&v["Links"]["Chassis"]),
        })
    }
}

/// Values firmware writes when the vendor filled in nothing: they identify no machine.
fn placeholder(s: &str) -> bool {
    let l = s.trim().to_ascii_lowercase();
    l.is_empty()
        || [
            "to be filled by o.e.m.",
            "default string",
            "system serial number",
            "not specified",
            "not applicable",
            "none",
            "0",
            "0123456789",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "03000200-0400-0500-0006-000700080009",
        ]
        .contains(&l.as_str())
}

impl Identity {
    pub fn new(uuid: Option<String>, serial: Option<String>) -> Self {
        let keep = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !placeholder(s));
        Self {
            uuid: keep(uuid),
            serial: keep(serial),
        }
    }

    pub fn is_known(&self) -> bool {
        self.uuid.is_some() || self.serial.is_some()
    }

    /// Whether `s` is this machine. SMBIOS before 2.6 stored the first three UUID fields
    /// little-endian and some BMCs still print them that way, so the byte-swapped form matches too.
    pub fn matches(&self, s: &SystemNode) -> bool {
        let uuid = match (&self.uuid, &s.uuid) {
            (Some(a), Some(b)) => {
                let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
                a == b || swap_uuid(&a).as_deref() == Some(b.as_str())
            }
            _ => false,
        };
        let serial = matches!((&self.serial, &s.serial), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) && !placeholder(b));
        uuid || serial
    }

    fn describe(&self) -> String {
        format!(
            "DMI UUID {}, serial {}",
            self.uuid.as_deref().unwrap_or("unknown"),
            self.serial.as_deref().unwrap_or("unknown")
        )
    }
}

/// `aabbccdd-eeff-gghh-…` → `ddccbbaa-ffee-hhgg-…`.
fn swap_uuid(u: &str) -> Option<String> {
    let parts: Vec<&str> = u.split('-').collect();
    if parts.len() != 5 || parts[..3].iter().any(|p| p.len() % 2 != 0) {
        return None;
    }
    let rev = |p: &str| -> String {
        let bytes: Vec<&str> = (0..p.len()).step_by(2).map(|i| &p[i..i + 2]).collect();
        bytes.into_iter().rev().collect()
    };
    Some(format!(
        "{}-{}-{}-{}-{}",
        rev(parts[0]),
        rev(parts[1]),
        rev(parts[2]),
        parts[3],
        parts[4]
    ))
}

/// The chassis named by `--redfish-chassis`: its `Id` (last path segment) or full `@odata.id`.
fn find_chassis<'a>(chassis: &'a [ChassisNode], name: &str) -> Option<&'a ChassisNode> {
    let name = norm(name);
    chassis
        .iter()
        .find(|c| c.id == name || c.id.rsplit('/').next() == Some(name.as_str()))
}

/// This node's system, or why it cannot be told.
pub fn our_system<'a>(systems: &'a [SystemNode], me: &Identity) -> Result<&'a SystemNode, String> {
    if let Some(s) = systems.iter().find(|s| me.matches(s)) {
        return Ok(s);
    }
    match systems {
        [] => Err("the BMC lists no ComputerSystem".into()),
        // A BMC manages its own host: with one system and no identity to compare, it is ours.
        [only] if !me.is_known() => Ok(only),
        [only] => Err(format!(
            "the BMC's only system {} (UUID {}, serial {}) is not this machine ({}): is --redfish-url this node's own BMC?",
            only.id,
            only.uuid.as_deref().unwrap_or("none"),
            only.serial.as_deref().unwrap_or("none"),
            me.describe()
        )),
        many => Err(format!(
            "none of the BMC's {} systems matches this machine ({}); name the chassis with --redfish-chassis",
            many.len(),
            me.describe()
        )),
    }
}

/// Every system drawing from `c`: linked to it or to any chassis it contains.
fn systems_under(c: &ChassisNode, by_id: &HashMap<&str, &ChassisNode>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![c];
    let mut seen = BTreeSet::new();
    while let Some(c) = stack.pop() {
        if !seen.insert(c.id.clone()) {
            continue;
        }
        out.extend(c.systems.iter().cloned());
        stack.extend(c.contains.iter().filter_map(|id| by_id.get(id.as_str())));
    }
    out
}

/// Decides which chassis to read (see the module docs).
pub fn plan(
    chassis: &[ChassisNode],
    systems: &[SystemNode],
    me: &Identity,
    chassis_override: Option<&str>,
) -> Result<Plan, String> {
    if let Some(name) = chassis_override {
        let c = find_chassis(chassis, name).ok_or_else(|| {
            let ids: Vec<&str> = chassis.iter().map(|c| c.id.as_str()).collect();
            format!(
                "--redfish-chassis {name}: no such chassis (the BMC has {})",
                ids.join(", ")
            )
        })?;
        return Ok(Plan {
            node: Some(c.id.clone()),
            shared: Vec::new(),
            why: format!("chassis {} (--redfish-chassis)", c.id),
        });
    }
    let by_id: HashMap<&str, &ChassisNode> = chassis.iter().map(|c| (c.id.as_str(), c)).collect();
    if systems.is_empty() {
        // Some BMCs publish only chassis: one powered chassis can only be this node's.
        let powered: Vec<&ChassisNode> = chassis.iter().filter(|c| c.has_power).collect();
        return match powered.as_slice() {
            [only] if only.contains.is_empty() => Ok(Plan {
                node: Some(only.id.clone()),
                shared: Vec::new(),
                why: format!("chassis {} (the BMC lists no systems; the only chassis with power)", only.id),
            }),
            _ => Err(format!(
                "the BMC lists no ComputerSystem and {} chassis with power; name this node's with --redfish-chassis",
                powered.len()
            )),
        };
    }
    let me_sys = our_system(systems, me)?;
    let mut start: Vec<&ChassisNode> = me_sys
        .chassis
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .collect();
    if start.is_empty() {
        start = chassis
            .iter()
            .filter(|c| c.systems.contains(&me_sys.id))
            .collect();
    }
    // Prefer a linked chassis that has power itself.
    start.sort_by_key(|c| !c.has_power);
    let Some(first) = start.first() else {
        return Err(format!("no chassis is linked to system {}", me_sys.id));
    };
    let mut c = *first;
    let mut hops = 0;
    loop {
        if c.has_power {
            let owners: BTreeSet<String> = if hops == 0 {
                c.systems.iter().cloned().collect()
            } else {
                systems_under(c, &by_id)
            };
            let others: Vec<&String> = owners.iter().filter(|s| **s != me_sys.id).collect();
            return Ok(if others.is_empty() {
                Plan {
                    node: Some(c.id.clone()),
                    shared: Vec::new(),
                    why: format!("chassis {} of system {}", c.id, me_sys.id),
                }
            } else {
                Plan {
                    node: None,
                    shared: vec![c.id.clone()],
                    why: format!(
                        "system {}: the nearest chassis with power, {} ({}), also powers {} other system(s); it is exported as an enclosure, not as this node's power",
                        me_sys.id,
                        c.id,
                        if c.chassis_type.is_empty() { "?" } else { &c.chassis_type },
                        others.len()
                    ),
                }
            });
        }
        match c.contained_by.as_deref().and_then(|id| by_id.get(id)) {
            Some(parent) if hops < 8 => {
                c = parent;
                hops += 1;
            }
            _ => {
                return Err(format!(
                "no chassis from {} up reports power (EnvironmentMetrics, Power or PowerSubsystem)",
                first.id
            ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(
        id: &str,
        systems: &[&str],
        contains: &[&str],
        by: Option<&str>,
        power: bool,
    ) -> ChassisNode {
        ChassisNode {
            id: id.into(),
            chassis_type: String::new(),
            systems: systems.iter().map(|s| s.to_string()).collect(),
            contains: contains.iter().map(|s| s.to_string()).collect(),
            contained_by: by.map(String::from),
            has_power: power,
        }
    }

    fn sys(id: &str, uuid: Option<&str>, serial: &str, chassis: &[&str]) -> SystemNode {
        SystemNode {
            id: id.into(),
            uuid: uuid.map(String::from),
            serial: Some(serial.into()),
            chassis: chassis.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn uuid_matches_in_either_byte_order() {
        let me = Identity::new(Some("38947555-7742-3448-3784-823347823834".into()), None);
        let s = sys("s", Some("55759438-4277-4834-3784-823347823834"), "x", &[]);
        assert!(me.matches(&s));
        assert!(!Identity::new(
            Some("00000000-0000-0000-0000-000000000000".into()),
            Some("To Be Filled By O.E.M.".into())
        )
        .is_known());
    }

    #[test]
    fn blade_enclosure_is_shared_not_node_power() {
        let chassis = vec![
            ch("/E", &[], &["/B1", "/B2"], None, true),
            ch("/B1", &["/S1"], &[], Some("/E"), false),
            ch("/B2", &["/S2"], &[], Some("/E"), false),
        ];
        let systems = vec![
            sys("/S1", None, "A", &["/B1"]),
            sys("/S2", None, "B", &["/B2"]),
        ];
        let me = Identity::new(None, Some("B".into()));
        let p = plan(&chassis, &systems, &me, None).unwrap();
        assert_eq!(p.node, None);
        assert_eq!(p.shared, vec!["/E".to_string()]);
        // a one-blade enclosure is this node's own
        let p = plan(
            &chassis[..2],
            &systems[..1],
            &Identity::new(None, Some("A".into())),
            None,
        )
        .unwrap();
        assert_eq!(p.node.as_deref(), Some("/E"));
        // the override wins, by Id or by path
        let p = plan(&chassis, &systems, &me, Some("E")).unwrap();
        assert_eq!(p.node.as_deref(), Some("/E"));
        assert!(plan(&chassis, &systems, &me, Some("nope"))
            .unwrap_err()
            .contains("no such chassis"));
    }

    #[test]
    fn unknown_identity_is_refused_when_it_matters() {
        let chassis = vec![ch("/C", &["/S1"], &[], None, true)];
        let one = vec![sys(
            "/S1",
            Some("11111111-2222-3333-4444-555555555555"),
            "A",
            &["/C"],
        )];
        // identity unknown, one system: it is ours
        assert_eq!(
            plan(&chassis, &one, &Identity::default(), None)
                .unwrap()
                .node
                .as_deref(),
            Some("/C")
        );
        // identity known and different: another node's BMC
        let e = plan(&chassis, &one, &Identity::new(None, Some("Z".into())), None).unwrap_err();
        assert!(e.contains("not this machine"), "{e}");
    }
}
