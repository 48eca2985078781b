//! What most scenarios start with: real `corral master` processes (one, or three replicated),
//! a fleet of simulated agents registered with them, and certificates for frameworks.

use crate::masters::{
    client_options, start_masters, wait_serving, work_dir, MasterProcess, AGENT_PREFIX,
};
use crate::{issue_agent_identities, Fleet, FleetConfig, LoadgenError};
use proto::{Resources, Role};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// The masters and the fleet a scenario wants.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `corral` binary that runs the masters.
    pub corral_bin: PathBuf,
    /// Where the certificates, the masters' data and logs go; a temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// 1, or 3 for a replicated cluster.
    pub masters: usize,
    pub agents: usize,
    /// What each simulated agent offers.
    pub resources: Resources,
    /// Run time of a task without a `loadgen.task_ms` label.
    pub task_duration: Duration,
    /// Registration ramp per agent (jitter window = this × agents); zero: all at once.
    pub ramp_per_agent: Duration,
    /// Registrations in flight at once.
    pub max_connecting: usize,
}

/// Started masters and a registered fleet; everything stops when dropped.
/// Fields drop in order: the agents stop, then the masters, then the temporary directory goes.
pub struct Cluster {
    pub fleet: Fleet,
    pub masters: Vec<MasterProcess>,
    pub dir: PathBuf,
    pub addrs: Vec<String>,
    /// The operator's client options.
    pub op: session::ClientOptions,
    /// Issuing the agents' certificates took this long.
    pub issue_secs: f64,
    /// When the agents were started.
    pub added: Instant,
    /// From adding the agents until all were registered (by [`Cluster::start`]).
    pub register_secs: f64,
    _temp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the masters, waits for a leader, issues the agents' certificates and waits
    /// until every agent is registered.
    pub async fn start(spec: &ClusterSpec) -> Result<Cluster, LoadgenError> {
        let mut cluster = Cluster::launch(spec).await?;
        let ramp = spec.ramp_per_agent * spec.agents as u32;
        let timeout =
            Duration::from_secs(60) + ramp + Duration::from_millis(20) * spec.agents as u32;
        cluster.fleet.wait_registered(spec.agents, timeout).await?;
        cluster.register_secs = cluster.added.elapsed().as_secs_f64();
        Ok(cluster)
    }

    /// Starts the masters, waits for a leader, issues the agents' certificates and starts the
    /// agents, without waiting for them to register.
    pub async fn launch(spec: &ClusterSpec) -> Result<Cluster, LoadgenError> {
        let (dir, temp) = work_dir(spec.dir.as_deref())?;
        let mut masters = start_masters(&spec.corral_bin, &dir, spec.masters)?;
        let addrs: Vec<String> = masters.iter().map(|m| m.addr.clone()).collect();
        let op = client_options(&dir, "op", addrs.clone())?;
        wait_serving(&mut masters, &op).await?;
        let mut fleet_cfg = FleetConfig::new(addrs.clone());
        fleet_cfg.resources = spec.resources.clone();
        fleet_cfg.task_duration = spec.task_duration;
        fleet_cfg.max_connecting = spec.max_connecting.max(1);
        fleet_cfg.ramp = spec.ramp_per_agent * spec.agents as u32;
        let mut fleet = Fleet::new(fleet_cfg);
        let certs_dir = dir.join("certs");
        let issued = Instant::now();
        let ids = tokio::task::block_in_place(|| {
            issue_agent_identities(&certs_dir, AGENT_PREFIX, 0, spec.agents, 2)
        })?;
        let issue_secs = issued.elapsed().as_secs_f64();
        let added = Instant::now();
        fleet.add(ids);
        Ok(Cluster {
            fleet,
            masters,
            dir,
            addrs,
            op,
            issue_secs,
            added,
            register_secs: 0.0,
            _temp: temp,
        })
    }

    /// Issues a framework certificate `name` (its own identity) and returns client options
    /// with it for these masters.
    pub fn framework_options(&self, name: &str) -> Result<session::ClientOptions, LoadgenError> {
        let certs_dir = self.dir.join("certs");
        let req = certs::IssueRequest {
            role: Role::Framework,
            name: name.into(),
            sans: Vec::new(),
            days: crate::AGENT_CERT_DAYS,
        };
        certs::issue(&certs_dir, &req, true).map_err(|source| LoadgenError::Certs {
            dir: certs_dir.clone(),
            source,
        })?;
        client_options(&self.dir, name, self.addrs.clone())
    }

    /// How many agents hold a session with each master, in `addrs` order.
    pub fn registered_per_master(&self) -> Result<Vec<usize>, LoadgenError> {
        self.addrs
            .iter()
            .map(|a| {
                let sock: SocketAddr = a
                    .parse()
                    .map_err(|e| LoadgenError::Master(format!("{a}: {e}")))?;
                Ok(self.fleet.registered_with(sock))
            })
            .collect()
    }

    /// The index of the master every agent is registered with (the leader), if any.
    pub fn leader(&self) -> Result<Option<usize>, LoadgenError> {
        let n = self.fleet.len();
        Ok(self.registered_per_master()?.iter().position(|&r| r == n))
    }

    /// The leader's pid (the only master's when there is one).
    pub fn leader_pid(&self) -> Result<u32, LoadgenError> {
        let i = match self.masters.len() {
            1 => 0,
            _ => self.leader()?.ok_or_else(|| {
                LoadgenError::Master("the agents are not all registered with one master".into())
            })?,
        };
        Ok(self.masters[i].pid())
    }

    /// The masters' log files.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.masters.iter().map(|m| m.log.clone()).collect()
    }
}
