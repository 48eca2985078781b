//! Configuration files (TOML) for the daemons, and merging them under flags and environment.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
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
    pub max_agent_heartbeats_per_second: Option<f64>,
    pub framework_calls_per_second: Option<f64>,
    pub framework_call_burst: Option<u32>,
    pub raft_heartbeat_secs: Option<f64>,
    /// `"MIN-MAX"` seconds, as the flag.
    pub raft_election_timeout_secs: Option<String>,
    pub metrics_listen: Option<String>,
    /// `--ca-key`: sign certificates for joins and renewals.
    pub ca_key: Option<PathBuf>,
    /// `--join-cert-ttl`, e.g. "24h".
    pub join_cert_ttl: Option<String>,
    /// `[policy.PRINCIPAL] roles = [...], users = [...]`: the authorization policy a cluster
    /// starts with (ignored once an operator changed it with `corral policy`).
    #[serde(default)]
    pub policy: BTreeMap<String, PolicyRuleFile>,
}

/// One principal's rule in the master's config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRuleFile {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
}

/// The per-principal call limit from `--framework-calls-per-second` and `--framework-call-burst`
/// (flag or file); none without a rate. The burst defaults to one second's worth (at least 1).
pub fn rate_limit(
    per_second: Option<f64>,
    burst: Option<u32>,
) -> Result<Option<master_core::RateLimit>> {
    let Some(per_second) = per_second else {
        if burst.is_some() {
            bail!("--framework-call-burst needs --framework-calls-per-second");
        }
        return Ok(None);
    };
    let limit = master_core::RateLimit {
        per_second,
        burst: burst.unwrap_or_else(|| (per_second.ceil() as u32).max(1)),
    };
    if let Err(e) = limit.check() {
        bail!("invalid --framework-calls-per-second/--framework-call-burst: {e}");
    }
    Ok(Some(limit))
}

/// The `[policy.*]` tables as the core's seed, each rule checked (the error names the principal).
pub fn policy_seed(file: &BTreeMap<String, PolicyRuleFile>) -> Result<master_core::policy::Rules> {
    let mut rules = master_core::policy::Rules::new();
    for (principal, r) in file {
        let rule = proto::AccessRule {
            roles: r.roles.iter().cloned().collect(),
            users: r.users.iter().cloned().collect(),
        };
        if let Err(e) = master_core::policy::check_rule(principal, Some(&rule)) {
            bail!("invalid [policy.{principal}] in the master's config file: {e}");
        }
        rules.insert(principal.clone(), rule);
    }
    Ok(rules)
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
    pub cgroup_driver: Option<String>,
    pub default_user: Option<String>,
    #[serde(default)]
    pub allowed_users: Vec<String>,
    #[serde(default)]
    pub allow_root: bool,
    pub default_pids_limit: Option<u64>,
    pub hostname: Option<String>,
    pub join: Option<String>,
    pub kill_grace_secs: Option<f64>,
    pub status_update_retry_secs: Option<f64>,
    pub sandbox_gc_age_secs: Option<f64>,
    pub sandbox_gc_disk_percent: Option<u8>,
    pub metrics_listen: Option<String>,
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

/// `--metrics-listen` (flag, else the file's `metrics_listen`), if set.
pub fn metrics_listen(flag: Option<&str>, file: Option<&str>) -> Result<Option<SocketAddr>> {
    let Some(addr) = flag.or(file) else {
        return Ok(None);
    };
    addr.parse().map(Some).with_context(|| {
        format!("invalid --metrics-listen '{addr}': expected IP:PORT, e.g. 127.0.0.1:9105")
    })
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

/// A duration flag: `N` (seconds) or `N` followed by s, m, h or d, e.g. `90s`, `30m`, `7d`.
pub fn duration(what: &str, text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        _ => bail!("invalid --{what} '{text}': the unit must be s, m, h or d"),
    };
    let n: f64 = number.parse().map_err(|_| {
        anyhow::anyhow!("invalid --{what} '{text}': expected e.g. 90s, 30m, 1h, 7d")
    })?;
    seconds(what, n * scale)
}

/// Like [`seconds`], and zero is allowed.
pub fn seconds_or_zero(what: &str, secs: f64) -> Result<Duration> {
    if secs == 0.0 {
        return Ok(Duration::ZERO);
    }
    seconds(what, secs)
}

const HEARTBEAT_FLAG: &str = "raft-heartbeat-secs";
const ELECTION_FLAG: &str = "raft-election-timeout-secs";

/// A raft timer of `secs` seconds (flag `--what`) in whole milliseconds (openraft's unit):
/// at least 1 ms and at most [`master::MAX_RAFT_TIMER`].
fn raft_timer(what: &str, secs: f64) -> Result<Duration> {
    let d = seconds(what, secs)?;
    if d > master::MAX_RAFT_TIMER {
        bail!(
            "invalid --{what} {secs}: at most {} seconds (an hour)",
            master::MAX_RAFT_TIMER.as_secs()
        );
    }
    let ms = Duration::from_millis(d.as_millis() as u64);
    if ms.is_zero() {
        bail!("invalid --{what} {secs}: at least 0.001 seconds (raft counts milliseconds)");
    }
    Ok(ms)
}

/// The raft heartbeat and election timeout (`MIN-MAX` seconds) from the flags or the file;
/// `None` where neither sets one (the master's defaults). Checked together with the defaults
/// of what is not set.
#[allow(clippy::type_complexity)]
pub fn raft_timing(
    heartbeat_secs: Option<f64>,
    election_secs: Option<&str>,
) -> Result<(Option<Duration>, Option<(Duration, Duration)>)> {
    let heartbeat = heartbeat_secs
        .map(|s| raft_timer(HEARTBEAT_FLAG, s))
        .transpose()?;
    let election = match election_secs {
        None => None,
        Some(range) => {
            let usage = || {
                anyhow::anyhow!(
                    "invalid --{ELECTION_FLAG} '{range}': expected MIN-MAX seconds, e.g. 1.5-3"
                )
            };
            let (min, max) = range.trim().split_once('-').ok_or_else(usage)?;
            let min: f64 = min.trim().parse().map_err(|_| usage())?;
            let max: f64 = max.trim().parse().map_err(|_| usage())?;
            let (min, max) = (
                raft_timer(ELECTION_FLAG, min)?,
                raft_timer(ELECTION_FLAG, max)?,
            );
            if min >= max {
                bail!(
                    "invalid --{ELECTION_FLAG} '{range}': MIN must be below MAX (each follower \
                     picks its timeout in between, so that they do not all stand at once)"
                );
            }
            Some((min, max))
        }
    };
    let hb = heartbeat.unwrap_or(master::DEFAULT_HEARTBEAT);
    let (min, max) = election.unwrap_or(master::DEFAULT_ELECTION_TIMEOUT);
    let n = master::MIN_ELECTION_HEARTBEATS;
    if min < hb.saturating_mul(n) {
        let default = |given: bool| if given { "" } else { " (the default)" };
        bail!(
            "--{ELECTION_FLAG} {}-{}{} is too short for --{HEARTBEAT_FLAG} {}{}: its minimum \
             must be at least {n} heartbeats ({} s), because a follower must miss several \
             heartbeats before it stands for election (it waits MAX, then a random time in \
             MIN-MAX), or one late heartbeat (a busy host, a slow link) deposes a healthy leader",
            min.as_secs_f64(),
            max.as_secs_f64(),
            default(election.is_some()),
            hb.as_secs_f64(),
            default(heartbeat.is_some()),
            hb.saturating_mul(n).as_secs_f64(),
        );
    }
    Ok((heartbeat, election))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_and_bad_ones_name_the_flag() {
        assert_eq!(duration("ttl", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("ttl", "90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("ttl", "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(duration("ttl", "1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            duration("ttl", "7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        for bad in ["", "h", "1w", "-1h", "0", "soon"] {
            let e = duration("ttl", bad).unwrap_err().to_string();
            assert!(e.contains("--ttl"), "{bad}: {e}");
        }
    }

    #[test]
    fn rate_limits_are_off_by_default_and_checked_naming_the_flag() {
        assert_eq!(rate_limit(None, None).unwrap(), None);
        let l = rate_limit(Some(2.5), None).unwrap().expect("a limit");
        assert_eq!((l.per_second, l.burst), (2.5, 3));
        let e = rate_limit(Some(0.0), None).unwrap_err().to_string();
        assert!(e.contains("--framework-calls-per-second"), "{e}");
        let e = rate_limit(None, Some(5)).unwrap_err().to_string();
        assert!(e.contains("--framework-call-burst"), "{e}");
    }

    #[test]
    fn policy_tables_seed_the_core_and_bad_ones_are_refused_naming_the_principal() {
        let m: MasterFile =
            toml::from_str("[policy.batch]\nroles = [\"prod\", \"batch\"]\nusers = [\"root\"]\n")
                .expect("policy table");
        let seed = policy_seed(&m.policy).expect("valid seed");
        let rule = &seed["batch"];
        assert!(rule.roles.contains("prod") && rule.users.contains("root"));
        let typo = toml::from_str::<MasterFile>("[policy.batch]\nrole = [\"prod\"]\n");
        assert!(typo.is_err(), "an unknown key in a rule must be refused");
        let bad: MasterFile = toml::from_str("[policy.batch]\nroles = [\"\"]\n").expect("toml");
        let e = policy_seed(&bad.policy).unwrap_err().to_string();
        assert!(e.contains("[policy.batch]"), "{e}");
    }

    #[test]
    fn the_shipped_sample_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
        let m: MasterFile = load(Some(&root.join("master.toml"))).expect("master.toml");
        assert_eq!(m.listen.as_deref(), Some("0.0.0.0:5050"));
        let limit = rate_limit(m.framework_calls_per_second, m.framework_call_burst)
            .expect("sample rate limit")
            .expect("on in the sample");
        assert_eq!((limit.per_second, limit.burst), (100.0, 200));
        // The commented policy table, uncommented, is a valid seed.
        let text = std::fs::read_to_string(root.join("master.toml")).expect("master.toml");
        let policy: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [policy."))
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let p: MasterFile = toml::from_str(&policy).expect(&policy);
        assert_eq!(policy_seed(&p.policy).expect("sample policy").len(), 1);
        // Metrics are served on loopback only in the samples.
        let loopback = |addr: Option<&str>| {
            metrics_listen(None, addr)
                .expect("a valid address")
                .is_some_and(|a| a.ip().is_loopback())
        };
        assert!(loopback(m.metrics_listen.as_deref()), "{m:?}");
        // The commented raft keys, uncommented, are the defaults and pass the checks.
        let text = std::fs::read_to_string(root.join("master.toml")).expect("master.toml");
        let raft: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# raft_"))
            .map(|l| format!("raft_{}\n", l.split(" #").next().unwrap_or(l)))
            .collect();
        let r: MasterFile = toml::from_str(&raft).expect(&raft);
        assert_eq!(
            raft_timing(
                r.raft_heartbeat_secs,
                r.raft_election_timeout_secs.as_deref()
            )
            .expect("sample raft timers"),
            (
                Some(master::DEFAULT_HEARTBEAT),
                Some(master::DEFAULT_ELECTION_TIMEOUT)
            )
        );
        let a: AgentFile = load(Some(&root.join("agent.toml"))).expect("agent.toml");
        assert_eq!(a.default_user.as_deref(), Some("nobody"));
        assert_eq!(a.isolation.as_deref(), Some("auto"));
        assert!(loopback(a.metrics_listen.as_deref()), "{a:?}");
    }

    #[test]
    fn metrics_listen_is_off_unless_set_and_the_flag_wins() {
        assert_eq!(metrics_listen(None, None).expect("unset"), None);
        let flag = metrics_listen(Some("127.0.0.1:1"), Some("127.0.0.1:2")).expect("valid");
        assert_eq!(flag, Some("127.0.0.1:1".parse().expect("addr")));
        let err = metrics_listen(None, Some("localhost")).expect_err("no port");
        assert!(
            err.to_string().contains("--metrics-listen 'localhost'"),
            "{err}"
        );
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

    #[test]
    fn raft_timing_is_checked_naming_the_flag() {
        let ms = Duration::from_millis;
        assert_eq!(raft_timing(None, None).expect("defaults"), (None, None));
        assert_eq!(
            raft_timing(Some(0.5), Some(" 2 - 4 ")).expect("WAN"),
            (Some(ms(500)), Some((ms(2000), ms(4000))))
        );
        // One without the other is checked against the other's default.
        assert!(raft_timing(Some(0.1), None).is_ok());
        let e = format!("{:#}", raft_timing(Some(0.5), None).unwrap_err());
        assert!(
            e.contains("(the default)") && e.contains("2 heartbeats"),
            "{e}"
        );
        assert!(raft_timing(None, Some("1-2")).is_ok());
        assert!(raft_timing(Some(1.0), Some("2-4")).is_ok());
        for (hb, range, flag, says) in [
            (Some(0.0), None, HEARTBEAT_FLAG, "positive"),
            (Some(-1.0), None, HEARTBEAT_FLAG, "positive"),
            (Some(f64::NAN), None, HEARTBEAT_FLAG, "positive"),
            (Some(1e300), None, HEARTBEAT_FLAG, "too many"),
            (Some(3601.0), None, HEARTBEAT_FLAG, "an hour"),
            (Some(0.0001), None, HEARTBEAT_FLAG, "0.001"),
            (None, Some("2"), ELECTION_FLAG, "MIN-MAX"),
            (None, Some("a-b"), ELECTION_FLAG, "MIN-MAX"),
            (None, Some("0-1"), ELECTION_FLAG, "positive"),
            (None, Some("1-1e300"), ELECTION_FLAG, "too many"),
            (None, Some("1-4000"), ELECTION_FLAG, "an hour"),
            (None, Some("2-1"), ELECTION_FLAG, "below MAX"),
            (None, Some("1-1.0001"), ELECTION_FLAG, "below MAX"),
            (
                Some(1.0),
                Some("1.999-4"),
                ELECTION_FLAG,
                "several heartbeats",
            ),
        ] {
            let e = format!("{:#}", raft_timing(hb, range).unwrap_err());
            assert!(
                e.contains(flag) && e.contains(says),
                "{hb:?} {range:?}: {e}"
            );
        }
    }
}
