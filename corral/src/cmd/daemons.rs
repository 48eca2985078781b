//! `corral master`, `corral agent` and `corral dev`.

use super::{load_identity, shutdown_signal};
use crate::cli::{AgentArgs, DevArgs, MasterArgs};
use crate::config::{self, AgentFile, MasterFile};
use crate::local;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A prefix unique to this master process, so ids never repeat across restarts.
pub fn id_prefix() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    u[..8].to_owned()
}

pub async fn master(args: MasterArgs) -> Result<u8> {
    let file: MasterFile = config::load(args.config.as_deref())?;
    let listen = config::required(args.listen.clone(), file.listen.clone(), "listen")?;
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!("invalid --listen '{listen}': expected IP:PORT, e.g. 0.0.0.0:5050")
    })?;
    let data_dir = config::required(args.data_dir.clone(), file.data_dir.clone(), "data-dir")?;
    let (heartbeat, election_timeout) = config::raft_timing(
        args.raft_heartbeat_secs.or(file.raft_heartbeat_secs),
        args.raft_election_timeout_secs
            .as_deref()
            .or(file.raft_election_timeout_secs.as_deref()),
    )?;
    let identity = load_identity(
        &args.tls,
        (
            file.ca.as_deref(),
            file.cert.as_deref(),
            file.key.as_deref(),
        ),
    )?;
    let mut core = master_core::MasterConfig {
        id_prefix: id_prefix(),
        wall_clock_at_start_ms: wall_ms(),
        ..Default::default()
    };
    if let Some(secs) = args.offer_timeout_secs.or(file.offer_timeout_secs) {
        // Zero or less: offers never time out.
        core.offer_timeout = match secs {
            s if s.is_nan() || s > 0.0 => Some(config::seconds("offer-timeout-secs", s)?),
            _ => None,
        };
    }
    if let Some(secs) = args.agent_timeout_secs.or(file.agent_timeout_secs) {
        core.agent_unreachable_timeout = config::seconds("agent-timeout-secs", secs)?;
    }
    if let Some(rate) = args
        .max_agent_heartbeats_per_second
        .or(file.max_agent_heartbeats_per_second)
    {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--max-agent-heartbeats-per-second must be a positive number, not {rate}");
        }
        core.max_agent_heartbeats_per_second = rate;
    }
    match args.allocator.as_deref().or(file.allocator.as_deref()) {
        None | Some("drf") => core.allocator = master_core::AllocatorKind::Drf,
        Some("priority") => core.allocator = master_core::AllocatorKind::StrictPriority,
        Some(other) => bail!("unknown --allocator '{other}': expected drf or priority"),
    }
    core.policy_seed = config::policy_seed(&file.policy)?;
    core.framework_rate_limit = config::rate_limit(
        args.framework_calls_per_second
            .or(file.framework_calls_per_second),
        args.framework_call_burst.or(file.framework_call_burst),
    )?;
    for (role, w) in &file.role_weights {
        config::check_role_weight(role, *w)?;
    }
    core.role_weights = file.role_weights.clone();
    for rw in &args.role_weights {
        let (role, w) = config::parse_role_weight(rw)?;
        core.role_weights.insert(role, w);
    }
    let mut raft = master::RaftSetup {
        id: args.id.unwrap_or(1),
        peers: Default::default(),
        advertise: args.advertise.clone(),
        join: args.join,
        heartbeat,
        election_timeout,
    };
    for p in &args.peers {
        let (id, node) = parse_peer(p)?;
        if id == raft.id {
            bail!("--peer {p} has this master's own id {id}");
        }
        raft.peers.insert(id, node);
    }
    if !raft.peers.is_empty() && args.id.is_none() {
        bail!("--peer needs --id N: every master of a replicated cluster has its own id");
    }
    let join = join_setup(&args, &file, &identity)?;
    let server = master::MasterServer::bind(master::Config {
        listen,
        data_dir,
        identity,
        core,
        max_frame_len: proto::MAX_FRAME_LEN,
        raft,
        metrics_listen: config::metrics_listen(
            args.metrics_listen.as_deref(),
            file.metrics_listen.as_deref(),
        )?,
        join,
    })?;
    server.run(shutdown_signal()).await?;
    Ok(0)
}

/// The default of `--join-cert-ttl`.
const DEFAULT_JOIN_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// `--ca-key` and `--join-cert-ttl`: what the master needs to sign certificates, if anything.
fn join_setup(
    args: &MasterArgs,
    file: &MasterFile,
    identity: &transport::Identity,
) -> Result<Option<master::JoinSetup>> {
    let ttl = args
        .join_cert_ttl
        .as_deref()
        .or(file.join_cert_ttl.as_deref());
    let Some(ca_key) = args.ca_key.clone().or(file.ca_key.clone()) else {
        if ttl.is_some() {
            bail!("--join-cert-ttl needs --ca-key: only a master holding the CA key signs certificates");
        }
        return Ok(None);
    };
    let cert_ttl = match ttl {
        Some(t) => config::duration("join-cert-ttl", t)?,
        None => DEFAULT_JOIN_CERT_TTL,
    };
    let signer = certs::CaSigner::load(&identity.files().ca, &ca_key)
        .with_context(|| format!("--ca-key {}", ca_key.display()))?;
    tracing::info!(
        ttl_secs = cert_ttl.as_secs(),
        "joins enabled: this master signs certificates"
    );
    Ok(Some(master::JoinSetup {
        signer: std::sync::Arc::new(signer),
        cert_ttl,
    }))
}

/// `corral agent --join TOKEN`: the TLS files (flags, file, else under WORK_DIR/tls/), got with
/// the token first if the certificate is not there yet.
async fn join_if_needed(
    args: &AgentArgs,
    file: &AgentFile,
    masters: &[String],
    work_dir: &std::path::Path,
    name: &str,
) -> Result<crate::cli::TlsArgs> {
    let mut tls = args.tls.clone();
    let Some(token) = args.join.clone().or(file.join.clone()) else {
        return Ok(tls);
    };
    let dir = work_dir.join("tls");
    let files = transport::TlsFiles {
        ca: tls
            .ca
            .clone()
            .or(file.ca.clone())
            .unwrap_or(dir.join("ca.pem")),
        cert: tls
            .cert
            .clone()
            .or(file.cert.clone())
            .unwrap_or(dir.join("agent.pem")),
        key: tls
            .key
            .clone()
            .or(file.key.clone())
            .unwrap_or(dir.join("agent-key.pem")),
    };
    let role = token
        .parse::<certs::JoinToken>()
        .context("invalid --join")?
        .role;
    if role != proto::Role::Agent {
        bail!("invalid --join: the token is for role {role}, not agent");
    }
    if files.cert.exists() && !has_expired(&files.cert) {
        tracing::info!(cert = %files.cert.display(), "already joined: using the certificate there");
    } else {
        // Not joined yet, or down past the certificate's expiry: join (again) with the token.
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
        let me = session::join(
            masters.to_vec(),
            &token,
            Some(name),
            &files,
            Duration::from_secs(60),
        )
        .await
        .context("cannot join the cluster with --join")?;
        tracing::info!(identity = %me, cert = %files.cert.display(), "joined the cluster");
    }
    tls.ca = Some(files.ca);
    tls.cert = Some(files.cert);
    tls.key = Some(files.key);
    Ok(tls)
}

/// Whether the certificate at `cert` is readable and past its not-after (an unreadable one is
/// left for the identity loader to report).
fn has_expired(cert: &std::path::Path) -> bool {
    let not_after = std::fs::read_to_string(cert)
        .ok()
        .and_then(|pem| certs::cert_validity(&pem).ok())
        .map(|(_, not_after)| not_after);
    not_after.is_some_and(|t| u64::try_from(t).unwrap_or(0) <= wall_ms() / 1000)
}

pub async fn agent(args: AgentArgs) -> Result<u8> {
    let file: AgentFile = config::load(args.config.as_deref())?;
    let masters = if args.master.is_empty() {
        file.master.clone()
    } else {
        args.master.clone()
    };
    if masters.is_empty() {
        bail!("missing --master HOST:PORT (or CORRAL_MASTER, or `master` in the config file)");
    }
    let work_dir = config::required(args.work_dir.clone(), file.work_dir.clone(), "work-dir")?;
    let node_name = args
        .hostname
        .clone()
        .or(file.hostname.clone())
        .unwrap_or_else(local::hostname);
    let tls = join_if_needed(&args, &file, &masters, &work_dir, &node_name).await?;
    let identity = load_identity(
        &tls,
        (
            file.ca.as_deref(),
            file.cert.as_deref(),
            file.key.as_deref(),
        ),
    )?;
    let resources = args.resources.clone().or(file.resources.clone());
    if let Some(spec) = &resources {
        proto::parse_reserved_resources(spec)
            .with_context(|| format!("invalid --resources '{spec}'"))?;
    }
    let reserved = match args.reserved.as_deref().or(file.reserved.as_deref()) {
        Some(spec) => Some(
            spec.parse::<proto::Resources>()
                .with_context(|| format!("invalid --reserved '{spec}'"))?,
        ),
        None => None,
    };
    let attributes = match args.attributes.as_deref().or(file.attributes.as_deref()) {
        Some(a) => config::parse_attributes(a)?,
        None => Default::default(),
    };
    let isolation = parse_isolation(args.isolation.as_deref().or(file.isolation.as_deref()))?;
    let hostname = args
        .hostname
        .clone()
        .or(file.hostname.clone())
        .unwrap_or_else(local::hostname);
    let default_user = args
        .default_user
        .clone()
        .or(file.default_user.clone())
        .or_else(|| {
            nix::unistd::geteuid()
                .is_root()
                .then(|| "nobody".to_owned())
        });
    let config = agent::Config {
        masters,
        work_dir,
        identity,
        resources,
        reserved,
        attributes,
        isolation,
        cgroup_parent: args.cgroup_parent.clone().or(file.cgroup_parent.clone()),
        cgroup_driver: parse_cgroup_driver(
            args.cgroup_driver
                .as_deref()
                .or(file.cgroup_driver.as_deref()),
        )?,
        default_user,
        allowed_users: file.allowed_users.clone(),
        allow_root: file.allow_root,
        default_pids_limit: file.default_pids_limit.unwrap_or(4096),
        hostname,
        init_program: local::self_exe()?,
        init_args: vec!["__init".to_owned()],
        retry: match args
            .status_update_retry_secs
            .or(file.status_update_retry_secs)
        {
            Some(secs) => agent::RetryPolicy {
                initial: config::seconds("status-update-retry-secs", secs)?,
                ..Default::default()
            },
            None => agent::RetryPolicy::default(),
        },
        kill_grace: config::seconds_or_zero(
            "kill-grace-secs",
            file.kill_grace_secs.unwrap_or(5.0),
        )?,
        cleanup_on_exit: args.cleanup_on_exit,
        gc: agent::GcPolicy {
            max_age: config::seconds_or_zero(
                "sandbox-gc-age-secs",
                args.sandbox_gc_age_secs
                    .or(file.sandbox_gc_age_secs)
                    .unwrap_or(7.0 * 24.0 * 3600.0),
            )?,
            disk_high_percent: file.sandbox_gc_disk_percent.unwrap_or(90).min(100),
        },
        metrics_listen: config::metrics_listen(
            args.metrics_listen.as_deref(),
            file.metrics_listen.as_deref(),
        )?,
    };
    // The agent renews its certificate itself before it expires (from a master with --ca-key);
    // new connections present the new one, the open session and the tasks go on.
    let renewal = tokio::spawn(session::keep_renewed(session::ClientOptions::new(
        config.masters.clone(),
        config.identity.clone(),
    )));
    let result = agent::run(config, shutdown_signal()).await;
    renewal.abort();
    result?;
    Ok(0)
}

/// `ID=NAME@HOST:PORT`, or `ID=HOST:PORT` for a master whose certificate name is `master-ID`.
pub fn parse_peer(s: &str) -> Result<(u64, master::MasterNode)> {
    let Some((id, rest)) = s.split_once('=') else {
        bail!("invalid --peer '{s}': expected ID=NAME@HOST:PORT (or ID=HOST:PORT)");
    };
    let id: u64 = id
        .trim()
        .parse()
        .with_context(|| format!("invalid id in --peer '{s}'"))?;
    if id == 0 {
        bail!("invalid --peer '{s}': ids start at 1");
    }
    let (name, addr) = match rest.split_once('@') {
        Some((n, a)) => (n.to_owned(), a.to_owned()),
        None => (format!("master-{id}"), rest.to_owned()),
    };
    if !addr.contains(':') {
        bail!("invalid --peer '{s}': the address needs a port, e.g. 10.0.0.2:5050");
    }
    Ok((id, master::MasterNode::new(addr, name)))
}

pub fn parse_isolation(s: Option<&str>) -> Result<agent::IsolationMode> {
    Ok(match s {
        None | Some("auto") => agent::IsolationMode::Auto,
        Some("cgroup2") => agent::IsolationMode::Cgroup2,
        Some("cgroup1") => agent::IsolationMode::Cgroup1,
        Some("none") => agent::IsolationMode::None,
        Some(other) => {
            bail!("unknown --isolation '{other}': expected auto, cgroup2, cgroup1 or none")
        }
    })
}

pub fn parse_cgroup_driver(s: Option<&str>) -> Result<agent::CgroupDriver> {
    Ok(match s {
        None | Some("auto") => agent::CgroupDriver::Auto,
        Some("systemd") => agent::CgroupDriver::Systemd,
        Some("cgroupfs") => agent::CgroupDriver::Cgroupfs,
        Some(other) => {
            bail!("unknown --cgroup-driver '{other}': expected auto, systemd or cgroupfs")
        }
    })
}

pub async fn dev(args: DevArgs) -> Result<u8> {
    let listen: SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("invalid --listen '{}': expected IP:PORT", args.listen))?;
    let cluster =
        local::LocalCluster::start(&args.dir, listen, args.resources.clone(), true).await?;
    let m = cluster.master_addr;
    let c = &cluster.certs;
    println!(
        "corral dev: master on {m}, agent work dir {}",
        cluster.agent_work_dir.display()
    );
    println!();
    println!("# to run tasks (framework certificate):");
    println!(
        "export CORRAL_MASTER={m} CORRAL_CA={} CORRAL_CERT={} CORRAL_KEY={}",
        c.ca.display(),
        c.framework.cert.display(),
        c.framework.key.display()
    );
    println!("corral run --cpus 0.5 --mem 64MiB -- echo hello");
    println!();
    println!("# to inspect the cluster (operator certificate):");
    println!(
        "corral state --master {m} --ca {} --cert {} --key {}",
        c.ca.display(),
        c.operator.cert.display(),
        c.operator.key.display()
    );
    println!();
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    cluster.stop().await;
    Ok(0)
}
