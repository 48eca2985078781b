//! Configuration files (TOML) for the daemons, and merging them under flags and environment.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterFile {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub offer_timeout_secs: Option<f64>,
    pub allocator: Option<String>,
    #[serde(default)]
    pub role_weights: BTreeMap<String, f64>,
    pub agent_timeout_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    #[serde(default)]
    pub master: Vec<String>,
    pub work_dir: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub resources: Option<String>,
    pub reserved: Option<String>,
    pub attributes: Option<String>,
    pub isolation: Option<String>,
    pub cgroup_parent: Option<String>,
    pub default_user: Option<String>,
    #[serde(default)]
    pub allowed_users: Vec<String>,
    #[serde(default)]
    pub allow_root: bool,
    pub default_pids_limit: Option<u64>,
    pub hostname: Option<String>,
    pub kill_grace_secs: Option<f64>,
    pub status_update_retry_secs: Option<f64>,
    pub sandbox_gc_age_secs: Option<f64>,
    pub sandbox_gc_disk_percent: Option<u8>,
}

/// Reads a TOML file, or the defaults when no file was given.
pub fn load<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Picks the flag (or environment) value, else the file's, else fails naming both.
pub fn required<T>(flag: Option<T>, file: Option<T>, what: &str) -> Result<T> {
    match flag.or(file) {
        Some(v) => Ok(v),
        None => bail!(
            "missing {what}: pass --{what} or set `{}` in the config file",
            what.replace('-', "_")
        ),
    }
}

/// Parses `key:value;key:value` (attributes).
pub fn parse_attributes(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once(':').or_else(|| part.split_once('=')) else {
            bail!("invalid attribute '{part}' in --attributes: expected key:value");
        };
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// Parses `ROLE=WEIGHT`.
pub fn parse_role_weight(s: &str) -> Result<(String, f64)> {
    let Some((role, w)) = s.split_once('=') else {
        bail!("invalid --role-weight '{s}': expected ROLE=WEIGHT");
    };
    let weight: f64 = w
        .trim()
        .parse()
        .with_context(|| format!("invalid weight in --role-weight '{s}'"))?;
    check_role_weight(role.trim(), weight)?;
    Ok((role.trim().to_owned(), weight))
}

/// A role's weight must be a positive number (from a flag or the config file).
pub fn check_role_weight(role: &str, weight: f64) -> Result<()> {
    if !(weight.is_finite() && weight > 0.0) {
        bail!("invalid weight {weight} for role '{role}': the weight must be a positive number");
    }
    Ok(())
}

/// A positive number of seconds (flag `--what`, or the config file) as a duration. Zero,
/// negative, NaN, infinite or beyond what a duration holds is an error, never a panic.
pub fn seconds(what: &str, secs: f64) -> Result<Duration> {
    if !(secs.is_finite() && secs > 0.0) {
        bail!("invalid --{what} {secs}: must be a positive number of seconds");
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| anyhow::anyhow!("invalid --{what} {secs}: too many seconds"))
}

/// Like [`seconds`], and zero is allowed.
pub fn seconds_or_zero(what: &str, secs: f64) -> Result<Duration> {
    if secs == 0.0 {
        return Ok(Duration::ZERO);
    }
    seconds(what, secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_sample_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
        let m: MasterFile = load(Some(&root.join("master.toml"))).expect("master.toml");
        assert_eq!(m.listen.as_deref(), Some("0.0.0.0:5050"));
        let a: AgentFile = load(Some(&root.join("agent.toml"))).expect("agent.toml");
        assert_eq!(a.default_user.as_deref(), Some("nobody"));
        assert_eq!(a.isolation.as_deref(), Some("auto"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, "work_dri = \"/x\"\n").expect("write");
        let e = load::<AgentFile>(Some(&p)).unwrap_err();
        assert!(format!("{e:#}").contains("work_dri"), "{e:#}");
        assert!(format!("{e:#}").contains("agent.toml"), "{e:#}");
        let e = load::<AgentFile>(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(format!("{e:#}").contains("missing.toml"), "{e:#}");
        assert!(parse_role_weight("prod=-1").is_err());
        assert_eq!(
            parse_role_weight("prod=2").expect("ok"),
            ("prod".to_owned(), 2.0)
        );
        assert_eq!(parse_attributes("rack:r1;zone:a").expect("ok").len(), 2);
    }
}
