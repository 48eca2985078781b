//! Multi-tenancy's resource side on the wire: a role's quota (a guarantee and a limit, Mesos
//! 1.9+ semantics; the master's allocator enforces them) and reservations (resources of one
//! agent set aside for one role, statically by the agent's `--resources 'cpus(ROLE):2'` or
//! dynamically by an operator).

use crate::resources::{parse_cpus, parse_size, ResourceParseError, Resources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Upper bounds on cpus, memory and disk; a quantity left `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimit {
    #[serde(default)]
    pub cpus_milli: Option<u64>,
    #[serde(default)]
    pub mem_bytes: Option<u64>,
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

impl ResourceLimit {
    pub fn is_unlimited(&self) -> bool {
        self.cpus_milli.is_none() && self.mem_bytes.is_none() && self.disk_bytes.is_none()
    }

    /// True when `r` stays within every limited quantity.
    pub fn allows(&self, r: &Resources) -> bool {
        self.cpus_milli.is_none_or(|l| r.cpus_milli <= l)
            && self.mem_bytes.is_none_or(|l| r.mem_bytes <= l)
            && self.disk_bytes.is_none_or(|l| r.disk_bytes <= l)
    }
}

impl FromStr for ResourceLimit {
    type Err = ResourceParseError;

    /// Parses `cpus:16;mem:32GiB` (cpus, mem and disk; unnamed ones stay unlimited).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut l = ResourceLimit::default();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| ResourceParseError::NotNameValue(part.to_owned()))?;
            let name = name.trim();
            let slot = match name {
                "cpus" => &mut l.cpus_milli,
                "mem" => &mut l.mem_bytes,
                "disk" => &mut l.disk_bytes,
                _ => return Err(ResourceParseError::UnknownResource(name.to_owned())),
            };
            if slot.is_some() {
                return Err(ResourceParseError::Duplicate(name.to_owned()));
            }
            *slot = Some(if name == "cpus" {
                parse_cpus(value)?
            } else {
                parse_size(value)?
            });
        }
        Ok(l)
    }
}

impl fmt::Display for ResourceLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(c) = self.cpus_milli {
            parts.push(format!("cpus:{}", c as f64 / 1000.0));
        }
        if let Some(m) = self.mem_bytes {
            parts.push(format!("mem:{}", crate::format_size(m)));
        }
        if let Some(d) = self.disk_bytes {
            parts.push(format!("disk:{}", crate::format_size(d)));
        }
        if parts.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&parts.join(";"))
        }
    }
}

/// A role's quota. The guarantee is offered to the role before anything else is offered to
/// other roles, and kept free for it (headroom); the role's allocation plus outstanding offers
/// never exceeds the limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Cpus, memory and disk (ports are not quota'd).
    #[serde(default)]
    pub guarantee: Resources,
    #[serde(default)]
    pub limit: ResourceLimit,
}

impl Quota {
    /// Why this quota cannot be set, if it cannot: a guarantee above the limit, or ports.
    pub fn check(&self) -> Result<(), String> {
        if !self.guarantee.ports.is_empty() {
            return Err("a quota guarantees cpus, mem and disk only, not ports".into());
        }
        if !self.limit.allows(&self.guarantee) {
            return Err(format!(
                "the guarantee {} exceeds the limit {}",
                self.guarantee, self.limit
            ));
        }
        Ok(())
    }
}

/// Parses an agent's `--resources` with Mesos's reservation syntax:
/// `cpus(batch):2;mem(batch):4GiB;cpus:2`. Returns the agent's total (reserved included) and
/// the reserved part per role.
pub fn parse_reserved_resources(
    s: &str,
) -> Result<(Resources, BTreeMap<String, Resources>), ResourceParseError> {
    let mut unreserved = Vec::new();
    let mut by_role: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| ResourceParseError::NotNameValue(part.to_owned()))?;
        let name = name.trim();
        match name.split_once('(') {
            Some((kind, role)) => {
                let role = role
                    .strip_suffix(')')
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| ResourceParseError::NotNameValue(part.to_owned()))?;
                if kind == "ports" {
                    return Err(ResourceParseError::UnknownResource(format!(
                        "{name} (ports cannot be reserved)"
                    )));
                }
                by_role
                    .entry(role.to_owned())
                    .or_default()
                    .push(format!("{kind}:{value}"));
            }
            None => unreserved.push(part.to_owned()),
        }
    }
    let mut total: Resources = unreserved.join(";").parse()?;
    let mut reserved = BTreeMap::new();
    for (role, parts) in by_role {
        let r: Resources = parts.join(";").parse()?;
        total.add_assign(&r);
        reserved.insert(role, r);
    }
    Ok((total, reserved))
}

/// A role's reservations as `corral state` shows them: `cpus(batch):2;mem(batch):4GiB`.
pub fn format_reserved(reserved: &BTreeMap<String, Resources>) -> String {
    let mut parts = Vec::new();
    for (role, r) in reserved {
        if r.cpus_milli > 0 {
            parts.push(format!("cpus({role}):{}", r.cpus()));
        }
        if r.mem_bytes > 0 {
            parts.push(format!("mem({role}):{}", crate::format_size(r.mem_bytes)));
        }
        if r.disk_bytes > 0 {
            parts.push(format!("disk({role}):{}", crate::format_size(r.disk_bytes)));
        }
    }
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_only_what_is_named() {
        let l: ResourceLimit = "cpus:16;mem:32GiB".parse().unwrap();
        assert_eq!(l.cpus_milli, Some(16_000));
        assert_eq!(l.mem_bytes, Some(32 << 30));
        assert_eq!(l.disk_bytes, None);
        assert_eq!(l.to_string(), "cpus:16;mem:32GiB");
        assert!(l.allows(&Resources::new(16_000, 1 << 30)));
        assert!(!l.allows(&Resources::new(16_001, 1 << 30)));
        assert!("gpus:1".parse::<ResourceLimit>().is_err());
        assert!("cpus:1;cpus:2".parse::<ResourceLimit>().is_err());
        assert!("ports:[1-2]".parse::<ResourceLimit>().is_err());
    }

    #[test]
    fn a_guarantee_above_the_limit_is_refused() {
        let q = Quota {
            guarantee: Resources::new(4000, 0),
            limit: "cpus:2".parse().unwrap(),
        };
        assert!(q.check().unwrap_err().contains("exceeds the limit"));
    }

    #[test]
    fn reserved_resources_parse_per_role_and_add_to_the_total() {
        let (total, reserved) =
            parse_reserved_resources("cpus(batch):2;mem(batch):4GiB;cpus:2;mem:1GiB").unwrap();
        assert_eq!(total.cpus_milli, 4000);
        assert_eq!(total.mem_bytes, 5 << 30);
        assert_eq!(reserved["batch"], Resources::new(2000, 4 << 30));
        assert_eq!(format_reserved(&reserved), "cpus(batch):2;mem(batch):4GiB");
        assert!(parse_reserved_resources("cpus():2").is_err());
        assert!(parse_reserved_resources("ports(a):[1-2]").is_err());
        assert!(parse_reserved_resources("cpus(a):x").is_err());
    }
}
