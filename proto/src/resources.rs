//! The resource model: cpus (fixed point, thousandths of a CPU), memory and disk in bytes, and a
//! set of port ranges. Fixed point keeps arithmetic exact: offering, launching and freeing the same
//! resources in any order always returns an agent to exactly its total.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn len(&self) -> u64 {
        if self.end < self.begin {
            0
        } else {
            u64::from(self.end - self.begin) + 1
        }
    }
    pub fn is_empty(&self) -> bool {
        self.end < self.begin
    }
}

/// A bundle of resources. The port list is kept normalized (sorted, merged, non-empty ranges)
/// by every constructor and operation here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Thousandths of a CPU: 1500 is 1.5 cpus.
    #[serde(default)]
    pub cpus_milli: u64,
    #[serde(default)]
    pub mem_bytes: u64,
    #[serde(default)]
    pub disk_bytes: u64,
    #[serde(default)]
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceParseError {
    #[error("resource '{0}' is not of the form name:value")]
    NotNameValue(String),
    #[error("unknown resource '{0}' (known: cpus, mem, disk, ports)")]
    UnknownResource(String),
    #[error("invalid cpus value '{0}': expected a non-negative number such as 0.5 or 4")]
    BadCpus(String),
    #[error(
        "invalid size '{0}': expected bytes or a number with a unit such as 512MiB, 1GiB, 64M"
    )]
    BadSize(String),
    #[error("invalid port ranges '{0}': expected e.g. [31000-32000,8080-8080]")]
    BadPorts(String),
    #[error("resource '{0}' given twice")]
    Duplicate(String),
}

/// Parses a size: plain bytes ("1048576"), or a number with a binary unit: K, M, G, T, optionally
/// followed by "iB" or "B" (all powers of 1024, as Mesos does): "64MiB", "1GiB", "512M", "1.5G".
pub fn parse_size(s: &str) -> Result<u64, ResourceParseError> {
    let t = s.trim();
    let bad = || ResourceParseError::BadSize(s.to_owned());
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| bad())?;
        let bytes = v * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(bytes.round() as u64)
    } else {
        let v: u64 = num.parse().map_err(|_| bad())?;
        v.checked_mul(mult).ok_or_else(bad)
    }
}

/// Parses a CPU amount such as "0.5" or "4" into thousandths.
pub fn parse_cpus(s: &str) -> Result<u64, ResourceParseError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| ResourceParseError::BadCpus(s.to_owned()))?;
    if !v.is_finite() || !(0.0..=1.0e9).contains(&v) {
        return Err(ResourceParseError::BadCpus(s.to_owned()));
    }
    Ok((v * 1000.0).round() as u64)
}

/// Formats a byte count with the largest binary unit that divides it evenly enough.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            if (v - v.round()).abs() < 0.005 {
                return format!("{}{}", v.round() as u64, name);
            }
            return format!("{v:.2}{name}");
        }
    }
    format!("{bytes}B")
}

fn normalize(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.begin) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

fn ports_subtract(a: &[PortRange], b: &[PortRange]) -> Vec<PortRange> {
    let mut out = Vec::new();
    for r in a {
        let mut pieces = vec![*r];
        for s in b {
            let mut next = Vec::new();
            for p in pieces {
                if s.end < p.begin || s.begin > p.end {
                    next.push(p);
                    continue;
                }
                if s.begin > p.begin {
                    next.push(PortRange {
                        begin: p.begin,
                        end: s.begin - 1,
                    });
                }
                if s.end < p.end {
                    next.push(PortRange {
                        begin: s.end + 1,
                        end: p.end,
                    });
                }
            }
            pieces = next;
        }
        out.extend(pieces);
    }
    normalize(out)
}

fn ports_contain(a: &[PortRange], b: &[PortRange]) -> bool {
    b.iter()
        .all(|r| r.is_empty() || a.iter().any(|p| p.begin <= r.begin && r.end <= p.end))
}

impl Resources {
    pub fn new(cpus_milli: u64, mem_bytes: u64) -> Self {
        Resources {
            cpus_milli,
            mem_bytes,
            ..Default::default()
        }
    }

    /// Cpus as a floating-point number, for display and share arithmetic.
    pub fn cpus(&self) -> f64 {
        self.cpus_milli as f64 / 1000.0
    }

    pub fn with_disk(mut self, disk_bytes: u64) -> Self {
        self.disk_bytes = disk_bytes;
        self
    }

    pub fn with_ports(mut self, ports: Vec<PortRange>) -> Self {
        self.ports = normalize(ports);
        self
    }

    pub fn port_count(&self) -> u64 {
        self.ports.iter().map(PortRange::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.cpus_milli == 0
            && self.mem_bytes == 0
            && self.disk_bytes == 0
            && self.port_count() == 0
    }

    /// True if every quantity of `other` fits in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus_milli >= other.cpus_milli
            && self.mem_bytes >= other.mem_bytes
            && self.disk_bytes >= other.disk_bytes
            && ports_contain(&self.ports, &other.ports)
    }

    /// `self - other`, or `None` if `other` does not fit in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        Some(Resources {
            cpus_milli: self.cpus_milli - other.cpus_milli,
            mem_bytes: self.mem_bytes - other.mem_bytes,
            disk_bytes: self.disk_bytes - other.disk_bytes,
            ports: ports_subtract(&self.ports, &other.ports),
        })
    }

    /// `self - other`, each quantity floored at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(other.cpus_milli),
            mem_bytes: self.mem_bytes.saturating_sub(other.mem_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(other.disk_bytes),
            ports: ports_subtract(&self.ports, &other.ports),
        }
    }

    /// `self + other` (ports are unioned).
    pub fn add(&self, other: &Resources) -> Resources {
        let mut ports = self.ports.clone();
        ports.extend_from_slice(&other.ports);
        Resources {
            cpus_milli: self.cpus_milli.saturating_add(other.cpus_milli),
            mem_bytes: self.mem_bytes.saturating_add(other.mem_bytes),
            disk_bytes: self.disk_bytes.saturating_add(other.disk_bytes),
            ports: normalize(ports),
        }
    }

    pub fn add_assign(&mut self, other: &Resources) {
        *self = self.add(other);
    }

    /// Normalizes the port list (sorted, merged). Decoded values from the network should be
    /// normalized before arithmetic.
    pub fn normalized(mut self) -> Resources {
        self.ports = normalize(std::mem::take(&mut self.ports));
        self
    }
}

impl FromStr for Resources {
    type Err = ResourceParseError;

    /// Parses `cpus:4;mem:4GiB;disk:20GiB;ports:[31000-32000]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut r = Resources::default();
        let mut seen: Vec<String> = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| ResourceParseError::NotNameValue(part.to_owned()))?;
            let name = name.trim().to_owned();
            if seen.contains(&name) {
                return Err(ResourceParseError::Duplicate(name));
            }
            match name.as_str() {
                "cpus" => r.cpus_milli = parse_cpus(value)?,
                "mem" => r.mem_bytes = parse_size(value)?,
                "disk" => r.disk_bytes = parse_size(value)?,
                "ports" => r.ports = parse_ports(value)?,
                _ => return Err(ResourceParseError::UnknownResource(name)),
            }
            seen.push(name);
        }
        Ok(r)
    }
}

/// Parses `[31000-32000,8080-8081]` (brackets optional).
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, ResourceParseError> {
    let bad = || ResourceParseError::BadPorts(s.to_owned());
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    let mut out = Vec::new();
    for piece in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = piece.split_once('-').unwrap_or((piece, piece));
        let begin: u16 = a.trim().parse().map_err(|_| bad())?;
        let end: u16 = b.trim().parse().map_err(|_| bad())?;
        if end < begin {
            return Err(bad());
        }
        out.push(PortRange { begin, end });
    }
    Ok(normalize(out))
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpus:{};mem:{}",
            self.cpus(),
            format_size(self.mem_bytes)
        )?;
        if self.disk_bytes > 0 {
            write!(f, ";disk:{}", format_size(self.disk_bytes))?;
        }
        if !self.ports.is_empty() {
            let ranges: Vec<String> = self
                .ports
                .iter()
                .map(|r| format!("{}-{}", r.begin, r.end))
                .collect();
            write!(f, ";ports:[{}]", ranges.join(","))?;
        }
        Ok(())
    }
}
