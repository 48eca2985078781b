//! A fleet of simulated agents in this process.

use crate::sim::{SimAgent, SimConfig};
use crate::LoadgenError;
use proto::Resources;
use session::MasterLinks;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use transport::{ClientEndpoints, Connection, Identity};

/// How a fleet behaves.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Master addresses, `host:port`.
    pub masters: Vec<String>,
    /// What every simulated agent offers.
    pub resources: Resources,
    /// How long a launched task "runs" before the agent reports it `FINISHED`.
    pub task_duration: Duration,
    /// Agents added together start registering at uniformly random times within this window
    /// (jitter); zero starts them all at once (a storm).
    pub ramp: Duration,
    /// At most this many registrations (handshake + `Register` + `Registered`) at once.
    pub max_connecting: usize,
    /// Send node pressure with every usage report, as a real agent on a kernel with PSI does.
    pub pressure: bool,
    /// Simulated agents sharing one UDP socket (each still has its own connections and
    /// certificate): one socket per agent would need 10,000 descriptors for 10,000 agents.
    pub agents_per_socket: usize,
}

impl FleetConfig {
    /// Agents with 4 CPUs and 8 GiB each, 1 s tasks, no ramp, at most 64 registrations at
    /// once, pressure reported, 64 agents per socket.
    pub fn new(masters: Vec<String>) -> FleetConfig {
        FleetConfig {
            masters,
            resources: Resources::new(4000, 8 << 30),
            task_duration: Duration::from_secs(1),
            ramp: Duration::ZERO,
            max_connecting: 64,
            pressure: true,
            agents_per_socket: 64,
        }
    }
}

/// Counters of a fleet, summed over its agents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Agents currently registered (holding a session).
    pub registered: usize,
    /// Registrations that succeeded, re-registrations included.
    pub registrations: u64,
    /// Registration attempts that failed, and sessions lost.
    pub failures: u64,
    /// Sessions lost after registering.
    pub lost: u64,
    /// Tasks received in `RunTasks`.
    pub launched: u64,
    /// Tasks reported `FINISHED`.
    pub finished: u64,
    /// UDP datagrams the agents received from and sent to the masters.
    pub datagrams_in: u64,
    pub datagrams_out: u64,
}

impl std::fmt::Display for FleetStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "registered {} (registrations {}, failures {}, lost {}), tasks launched {} finished {}, datagrams in {} out {}",
            self.registered,
            self.registrations,
            self.failures,
            self.lost,
            self.launched,
            self.finished,
            self.datagrams_in,
            self.datagrams_out
        )
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub registered: AtomicUsize,
    pub registrations: AtomicU64,
    pub failures: AtomicU64,
    pub lost: AtomicU64,
    pub launched: AtomicU64,
    pub finished: AtomicU64,
}

/// What the agents of a fleet report to it.
pub(crate) struct Shared {
    pub counters: Counters,
    /// Each agent's current connection (for its datagram counts), by index.
    conns: Mutex<Vec<Option<Connection>>>,
    /// How many agents hold a session with each master (by its address), kept with `conns`:
    /// scenarios poll it every few milliseconds, and a scan of every connection (a lock on
    /// each) was the load generator's hottest function during a failover.
    per_master: Mutex<HashMap<SocketAddr, usize>>,
    /// Datagrams of connections that ended.
    closed_in: AtomicU64,
    closed_out: AtomicU64,
    last_error: Mutex<String>,
}

impl Shared {
    pub(crate) fn connected(&self, index: usize, conn: Option<Connection>) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() <= index {
            conns.resize(index + 1, None);
        }
        let up = conn.is_some();
        {
            let mut per_master = self.per_master.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = &conns[index] {
                if let Some(n) = per_master.get_mut(&old.remote_address()) {
                    *n = n.saturating_sub(1);
                }
            }
            if let Some(new) = &conn {
                *per_master.entry(new.remote_address()).or_default() += 1;
            }
        }
        if let Some(old) = std::mem::replace(&mut conns[index], conn) {
            self.closed_in
                .fetch_add(old.datagrams_received(), Ordering::Relaxed);
            self.closed_out
                .fetch_add(old.datagrams_sent(), Ordering::Relaxed);
            self.counters.registered.fetch_sub(1, Ordering::Relaxed);
        }
        if up {
            self.counters.registered.fetch_add(1, Ordering::Relaxed);
            self.counters.registrations.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn failed(&self, error: &str) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_owned();
    }
}

/// Simulated agents running on the current tokio runtime. Dropping the fleet stops them
/// (abruptly); [`Fleet::stop`] closes their connections first.
pub struct Fleet {
    cfg: Arc<SimConfig>,
    ramp: Duration,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    agents: Vec<JoinHandle<()>>,
    /// The sockets the agents share, `agents_per_socket` each, in order.
    sockets: Vec<ClientEndpoints>,
    agents_per_socket: usize,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Fleet {
        let cfg = Arc::new(SimConfig {
            masters: config.masters,
            resources: config.resources,
            task_duration: config.task_duration,
            pressure: config.pressure,
            admission: Arc::new(Semaphore::new(config.max_connecting.max(1))),
        });
        Fleet {
            cfg,
            ramp: config.ramp,
            shared: Arc::new(Shared {
                counters: Counters::default(),
                conns: Mutex::new(Vec::new()),
                per_master: Mutex::new(HashMap::new()),
                closed_in: AtomicU64::new(0),
                closed_out: AtomicU64::new(0),
                last_error: Mutex::new(String::new()),
            }),
            stop: watch::channel(false).0,
            agents: Vec::new(),
            sockets: Vec::new(),
            agents_per_socket: config.agents_per_socket.max(1),
        }
    }

    /// Starts one simulated agent per identity, each registering at a random time within the
    /// ramp.
    pub fn add(&mut self, identities: Vec<Arc<Identity>>) {
        for identity in identities {
            let index = self.agents.len();
            if index.is_multiple_of(self.agents_per_socket) {
                self.sockets.push(ClientEndpoints::new());
            }
            let links = MasterLinks::sharing(self.sockets[index / self.agents_per_socket].clone());
            let agent = SimAgent::new(
                index,
                identity,
                links,
                self.cfg.clone(),
                self.shared.clone(),
            );
            let delay = self.ramp.mul_f64(rand::random::<f64>());
            let stop = self.stop.subscribe();
            self.agents
                .push(tokio::spawn(async move { agent.run(delay, stop).await }));
        }
    }

    /// The registration ramp of agents added from now on.
    pub fn set_ramp(&mut self, ramp: Duration) {
        self.ramp = ramp;
    }

    /// How many agents were added.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn stats(&self) -> FleetStats {
        let c = &self.shared.counters;
        let (mut din, mut dout) = (
            self.shared.closed_in.load(Ordering::Relaxed),
            self.shared.closed_out.load(Ordering::Relaxed),
        );
        for conn in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
        {
            din += conn.datagrams_received();
            dout += conn.datagrams_sent();
        }
        FleetStats {
            registered: c.registered.load(Ordering::Relaxed),
            registrations: c.registrations.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            launched: c.launched.load(Ordering::Relaxed),
            finished: c.finished.load(Ordering::Relaxed),
            datagrams_in: din,
            datagrams_out: dout,
        }
    }

    /// How many agents hold a session with the master at `addr` now.
    pub fn registered_with(&self, addr: SocketAddr) -> usize {
        let per_master = self.shared.per_master.lock();
        let per_master = per_master.unwrap_or_else(|p| p.into_inner());
        per_master.get(&addr).copied().unwrap_or(0)
    }

    /// The last error an agent met registering or in its session.
    pub fn last_error(&self) -> String {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until at least `n` agents are registered at once, polling every 50 ms.
    pub async fn wait_registered(&self, n: usize, timeout: Duration) -> Result<(), LoadgenError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats();
            if s.registered >= n {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LoadgenError::NotRegistered {
                    registered: s.registered,
                    wanted: n,
                    timeout,
                    failures: s.failures,
                    last: self.last_error(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes every agent's connection and waits for the agents to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for handle in self.agents.drain(..) {
            let _ = handle.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for handle in &self.agents {
            handle.abort();
        }
    }
}
