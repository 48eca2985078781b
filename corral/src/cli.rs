//! The command line, as `shared/reference/cli.md` specifies it. Connection flags also read
//! CORRAL_MASTER, CORRAL_CA, CORRAL_CERT and CORRAL_KEY; daemon flags also come from the TOML
//! file given with --config (flags win over the environment, which wins over the file).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "corral",
    version,
    about = "Corral: a cluster manager with resource offers, mTLS QUIC and cgroup isolation"
)]
pub struct Cli {
    /// Log level or filter (e.g. debug, info,master=debug); default from RUST_LOG, else info.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a cluster CA or issue certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run a master.
    Master(MasterArgs),
    /// Run an agent on this node.
    Agent(AgentArgs),
    /// Run one command as a task and wait for it.
    Run(RunArgs),
    /// Run a local master and agent in the foreground for development.
    Dev(DevArgs),
    /// Show agents, frameworks, tasks and masters.
    State(StateArgs),
    /// Print a task's output.
    Logs(LogsArgs),
    /// Kill a task.
    Kill(KillArgs),
    /// Follow agent, framework and task changes as they happen (resumes across failovers).
    Events(EventsArgs),
    /// Serve the operators' web UI on loopback, with this operator's certificate.
    Ui(UiArgs),
    /// Stop offering an agent's resources and let its tasks finish (maintenance).
    Drain(AgentIdArgs),
    /// Stop offering an agent's resources.
    Deactivate(AgentIdArgs),
    /// Offer a drained or deactivated agent's resources again.
    Reactivate(AgentIdArgs),
    /// End a framework: kill its tasks and forget it.
    Teardown(TeardownArgs),
    /// Add or remove replicated masters.
    #[command(subcommand)]
    Masters(MastersCommand),
    /// Show or change which roles and users each framework principal may use.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show or change per-role quotas (a guarantee and a limit).
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Reserve an agent's unreserved resources for a role (a dynamic reservation).
    Reserve(ReserveArgs),
    /// Return dynamically reserved resources of an agent to the unreserved pool.
    Unreserve(ReserveArgs),
    /// Serve the Mesos v1 HTTP API to unchanged Mesos frameworks (pymesos, avmesos).
    MesosGateway(MesosGatewayArgs),
    /// Load generation: simulated agents over real QUIC + mTLS, and scale scenarios.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// (internal) The init process of a container.
    #[command(name = "__init", hide = true)]
    Init(InitArgs),
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the cluster CA: DIR/ca.pem and DIR/ca-key.pem (0600).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for a master, agent, framework or operator: DIR/NAME.pem, DIR/NAME-key.pem.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// master | agent | framework | operator
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        /// Extra DNS name or IP address (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// Make a join token (on the host with the CA key): a node that has it gets a certificate
    /// for ROLE from the masters (started with --ca-key) without the CA key. Prints the token
    /// on the last line.
    Token {
        /// The CA directory (ca.pem, ca-key.pem).
        #[arg(long)]
        dir: PathBuf,
        /// agent | framework | operator
        #[arg(long, default_value = "agent")]
        role: String,
        /// How long the token may be used, e.g. 30m, 1h, 7d (at most 30d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Bind the token to this node name (default: the joining node chooses).
        #[arg(long)]
        name: Option<String>,
    },
    /// Refuse every later join with a token (operator; replicated).
    RevokeToken {
        /// The token's id (the 16 hex digits `corral certs token` prints) or the token itself.
        token: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Join the cluster with a token: make a key and get a certificate for it, written to
    /// DIR/ca.pem, DIR/NAME.pem and DIR/NAME-key.pem (for frameworks and operators; agents use
    /// `corral agent --join`).
    Join {
        token: String,
        /// Master addresses, HOST:PORT[,HOST:PORT...].
        #[arg(long, env = "CORRAL_MASTER", value_delimiter = ',')]
        master: Vec<String>,
        #[arg(long)]
        dir: PathBuf,
        /// The node name (unless the token binds one).
        #[arg(long)]
        name: Option<String>,
    },
    /// Renew this peer's certificate now: a new key, the same role and name, signed by a master
    /// started with --ca-key; written over --cert and --key.
    Renew {
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Certificate flags shared by every command that connects.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// The cluster CA certificate.
    #[arg(long, env = "CORRAL_CA")]
    pub ca: Option<PathBuf>,
    /// This peer's certificate.
    #[arg(long, env = "CORRAL_CERT")]
    pub cert: Option<PathBuf>,
    /// This peer's private key.
    #[arg(long, env = "CORRAL_KEY")]
    pub key: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Master addresses, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "CORRAL_MASTER", value_delimiter = ',')]
    pub master: Vec<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct MasterArgs {
    /// TOML configuration file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (UDP), e.g. 0.0.0.0:5050.
    #[arg(long)]
    pub listen: Option<String>,
    /// Where the master keeps its state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Rescind offers not answered within this many seconds (0 disables).
    #[arg(long)]
    pub offer_timeout_secs: Option<f64>,
    /// Allocation policy: drf (default) or priority.
    #[arg(long)]
    pub allocator: Option<String>,
    /// Role weight, ROLE=WEIGHT (repeatable).
    #[arg(long = "role-weight")]
    pub role_weights: Vec<String>,
    /// Seconds without a heartbeat before an agent is unreachable.
    #[arg(long)]
    pub agent_timeout_secs: Option<f64>,
    /// Heartbeats per second all agents together may send (default 50, Nomad's rule): an
    /// agent's heartbeat interval is stretched to agents / this when that exceeds 2 s.
    #[arg(long, value_name = "N")]
    pub max_agent_heartbeats_per_second: Option<f64>,
    /// Calls per second each framework principal may make (a token bucket; off by default).
    /// A call over it gets a "rate limited" error.
    #[arg(long)]
    pub framework_calls_per_second: Option<f64>,
    /// Calls a framework principal may make at once after being idle (with
    /// --framework-calls-per-second; default: one second's worth, at least 1).
    #[arg(long)]
    pub framework_call_burst: Option<u32>,
    /// This master's id among replicated masters.
    #[arg(long)]
    pub id: Option<u64>,
    /// Another master, ID=NAME@HOST:PORT (NAME: the name in its certificate), or ID=HOST:PORT
    /// for a master named master-ID (repeatable).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// The address other masters and clients reach this master at (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Join an existing cluster: wait to be added with `corral masters add` instead of
    /// bootstrapping a cluster from --peer.
    #[arg(long)]
    pub join: bool,
    /// Seconds between the raft leader's heartbeats to the other masters (default 0.15).
    #[arg(long, value_name = "SECS")]
    pub raft_heartbeat_secs: Option<f64>,
    /// A follower that hears no leader for a random time in MIN-MAX seconds stands for
    /// election (default 0.3-0.6). Raise it (and the heartbeat) on WAN links or busy hosts; a
    /// dead leader is then replaced more slowly. MIN must be at least 3 heartbeats.
    #[arg(long, value_name = "MIN-MAX")]
    pub raft_election_timeout_secs: Option<String>,
    /// Serve Prometheus metrics over HTTP at /metrics on this address (e.g. 127.0.0.1:9105);
    /// off by default. Unauthenticated: keep it on loopback or a management network.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// The CA's private key: this master then signs certificates for nodes joining with a
    /// token (`corral certs token`) and renews them; without it joins are refused.
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// Lifetime of the certificates signed for joins and renewals, e.g. 1m, 12h, 7d (default
    /// 24h; nodes renew at two thirds of it).
    #[arg(long, value_name = "DURATION")]
    pub join_cert_ttl: Option<String>,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// TOML configuration file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Master addresses, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "CORRAL_MASTER", value_delimiter = ',')]
    pub master: Vec<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Where sandboxes and the agent's state live.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Override measured resources, e.g. 'cpus:4;mem:4GiB;disk:20GiB;ports:[31000-32000]';
    /// 'cpus(batch):2' reserves for role batch (statically), within the total.
    #[arg(long)]
    pub resources: Option<String>,
    /// Kept for the system out of the measured resources, e.g. 'cpus:0.5;mem:2GiB;disk:10GiB'.
    #[arg(long)]
    pub reserved: Option<String>,
    /// Attributes carried in offers, e.g. 'rack:r1;zone:a'.
    #[arg(long)]
    pub attributes: Option<String>,
    /// auto | cgroup2 | cgroup1 | none
    #[arg(long)]
    pub isolation: Option<String>,
    /// The user tasks run as unless they ask for another (allowed) one.
    #[arg(long)]
    pub default_user: Option<String>,
    /// Name of the cgroup subtree (under the agent's own cgroup) that holds task cgroups.
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// auto | systemd | cgroupfs: keep task cgroups in a delegated systemd scope next to the
    /// agent's unit (systemd), or below the agent's own cgroup (cgroupfs). Default auto: the
    /// scope under systemd on pure cgroup v2.
    #[arg(long)]
    pub cgroup_driver: Option<String>,
    /// The hostname to advertise.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Join the cluster with this token (`corral certs token`) if the agent has no certificate
    /// yet: its key and certificate go to --ca/--cert/--key, by default WORK_DIR/tls/. The
    /// agent then renews its certificate itself before it expires.
    #[arg(long, env = "CORRAL_JOIN_TOKEN", value_name = "TOKEN")]
    pub join: Option<String>,
    /// First resend of an unacknowledged status update after this many seconds (doubling, up
    /// to 10 minutes). Default 10.
    #[arg(long)]
    pub status_update_retry_secs: Option<f64>,
    /// Kill all tasks and remove their cgroups when the agent stops (for throw-away clusters
    /// and tests; a real agent leaves its tasks running).
    #[arg(long)]
    pub cleanup_on_exit: bool,
    /// Remove the sandbox of an ended task this many seconds after it last changed (default one
    /// week); sooner while the disk is over `sandbox_gc_disk_percent` full.
    #[arg(long)]
    pub sandbox_gc_age_secs: Option<f64>,
    /// Serve Prometheus metrics over HTTP at /metrics on this address (e.g. 127.0.0.1:9106);
    /// off by default. Unauthenticated: keep it on loopback or a management network.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TaskArgs {
    /// CPUs for the task (fractional allowed).
    #[arg(long, default_value = "0.1")]
    pub cpus: String,
    /// Memory limit, e.g. 64MiB, 1GiB, 512M, or bytes.
    #[arg(long, default_value = "128MiB")]
    pub mem: String,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids: Option<u64>,
    /// A name for the task (and its framework).
    #[arg(long)]
    pub name: Option<String>,
    /// Run in a new network namespace with only loopback.
    #[arg(long)]
    pub isolated_network: bool,
    /// What an OOM kill at the memory limit ends: `kill-task` (every process of the task; it
    /// fails with reason MemoryLimit) or `kill-process` (only the process the kernel chose;
    /// the task goes on while its main process lives, and its final status still reports the
    /// OOM kills).
    #[arg(long, value_name = "POLICY", default_value = "kill-task",
        value_parser = clap::builder::PossibleValuesParser::new(["kill-task", "kill-process"]))]
    pub oom_policy: String,
    /// The role to subscribe with (the policy decides whether this framework's principal may).
    #[arg(long, default_value = "*")]
    pub role: String,
    /// The Unix user to run the task as (default: the agent's default user).
    #[arg(long)]
    pub user: Option<String>,
    /// Give up if no agent can place the task within this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub placement_timeout: f64,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Start a throw-away master and agent on loopback with fresh certificates.
    #[arg(long)]
    pub local: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub task: TaskArgs,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// State and certificates directory.
    #[arg(long, default_value = ".corral")]
    pub dir: PathBuf,
    /// Master listen address.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: String,
    /// Override the agent's measured resources.
    #[arg(long)]
    pub resources: Option<String>,
}

#[derive(Args, Debug)]
pub struct StateArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// One JSON object with keys agents, frameworks, tasks, masters.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    pub task_id: String,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing as the task writes, until it ends.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// One JSON object per line: SUBSCRIBED (with the state), then each event with its cursor.
    #[arg(long)]
    pub json: bool,
    /// Resume after this cursor (INDEX.SEQ, as printed) instead of starting from the state.
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Args, Debug)]
pub struct UiArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Where to serve the UI: a loopback HOST:PORT (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    pub task_id: String,
}

#[derive(Subcommand, Debug)]
pub enum MastersCommand {
    /// Add a master: ID=NAME@HOST:PORT (start it first with `corral master --join`).
    Add {
        #[command(flatten)]
        connect: ConnectArgs,
        member: String,
    },
    /// Remove master ID from the cluster.
    Remove {
        #[command(flatten)]
        connect: ConnectArgs,
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Print every role's quota and what the role holds (used, and offered or launching).
    Show {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The roles as JSON (the `roles` of `corral state --json`).
        #[arg(long)]
        json: bool,
    },
    /// Set a role's quota (replaces it): the guarantee is offered to the role before anything
    /// is offered to other roles; what the role holds never exceeds the limit.
    Set {
        #[command(flatten)]
        connect: ConnectArgs,
        role: String,
        /// e.g. 'cpus:4;mem:8GiB' (cpus, mem, disk).
        #[arg(long, default_value = "")]
        guarantee: String,
        /// e.g. 'cpus:16;mem:32GiB'; quantities not named are unlimited.
        #[arg(long, default_value = "")]
        limit: String,
    },
    /// Remove a role's quota (`remove` is the same).
    #[command(alias = "remove")]
    Unset {
        #[command(flatten)]
        connect: ConnectArgs,
        role: String,
    },
}

#[derive(Args, Debug)]
pub struct ReserveArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    pub agent_id: String,
    pub role: String,
    /// e.g. 'cpus:2;mem:4GiB' (cpus, mem, disk). A reserved offer holds only reserved
    /// resources: reserve memory with the cpus.
    pub resources: String,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Print the rules in force; principals not listed get the default rule (role `*` and the
    /// role named after the principal; tasks only as the agent's default user).
    Show {
        #[command(flatten)]
        connect: ConnectArgs,
        /// One JSON object: {"rules": {PRINCIPAL: {"roles": [...], "users": [...]}}, "configured": BOOL}.
        #[arg(long)]
        json: bool,
    },
    /// Set a framework principal's rule: exactly these roles and users (replaces its rule, and
    /// the default rule for it). `root` must be listed to be allowed.
    Set {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The name in the framework's certificate.
        principal: String,
        /// Roles it may subscribe with (comma-separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Unix users its tasks may run as, besides the agent's default user (comma-separated).
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
    },
    /// Remove a principal's rule: it gets the default rule again.
    Unset {
        #[command(flatten)]
        connect: ConnectArgs,
        principal: String,
    },
}

#[derive(Args, Debug)]
pub struct AgentIdArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    pub agent_id: String,
}

#[derive(Args, Debug)]
pub struct TeardownArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    pub framework_id: String,
}

#[derive(Args, Debug)]
pub struct MesosGatewayArgs {
    /// Address for the Mesos HTTP API. Loopback only without TLS (the Mesos API carries no
    /// authentication); any address with --tls-cert and --tls-key.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: String,
    /// Serve HTTPS with this certificate chain (PEM; any CA the Mesos clients trust).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The masters, and the framework certificate every Mesos framework subscribes with.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Seconds between the HEARTBEAT events of each scheduler stream (Mesos: 15).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub heartbeat_secs: f64,
    /// An operator certificate (same CA) for the read endpoints avmesos-cli uses
    /// (/master/state, /slaves, /frameworks, /tasks); without it they answer 501.
    #[arg(long, requires = "operator_key")]
    pub operator_cert: Option<PathBuf>,
    /// The operator certificate's private key.
    #[arg(long, requires = "operator_cert")]
    pub operator_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The master idle with N simulated agents: starts a `corral master`, grows a fleet of
    /// simulated agents in steps and prints the master's CPU, RSS and packets per agent.
    Idle(BenchIdleArgs),
    /// Run simulated agents against running masters until interrupted (SIGINT/SIGTERM).
    Agents(BenchAgentsArgs),
    /// B3: three masters, N simulated agents and a probe framework; kills the leader and times
    /// every agent's re-registration and the first launch after the kill.
    Failover(BenchFailoverArgs),
    /// B7: one master, N simulated agents and a framework wanting launches at a steady rate;
    /// prints the wanted → RUNNING latency (p50/p99/max) against the Kubernetes SLO.
    Churn(BenchChurnArgs),
    /// B1: the Mesos paper's scalability test at each fleet size: F frameworks launching on
    /// every offer, a probe framework's extra launch latency, the master's CPU and RSS.
    Paper(BenchPaperArgs),
    /// B2: three masters, N agents, K frameworks launching as fast as offers allow; prints the
    /// sustained launches per second and the leader's CPU.
    Launches(BenchLaunchesArgs),
    /// Every agent registers at once (no ramp) with three masters; then the leader is killed
    /// and the re-registration storm is timed too.
    Storm(BenchStormArgs),
}

#[derive(Args, Debug)]
pub struct BenchPaperArgs {
    /// Fleet sizes, N[,N...]; each runs on a fresh master and fleet.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub agents: Vec<usize>,
    /// Frameworks launching on every offer (each its own certificate).
    #[arg(long, default_value_t = 200)]
    pub frameworks: usize,
    /// Mean task run time, seconds (uniform within ± a third; the paper: 30 s).
    #[arg(long, default_value_t = 30.0)]
    pub task_secs: f64,
    /// At most this long for the frameworks to fill the cluster, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub warmup_secs: f64,
    /// The probe's window under load, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub window_secs: f64,
    /// Probe launches without load.
    #[arg(long, default_value_t = 20)]
    pub baseline_launches: usize,
    /// The master idle with the fleet is measured over this, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub idle_secs: f64,
    #[command(flatten)]
    pub fleet: BenchFleetArgs,
}

#[derive(Args, Debug)]
pub struct BenchLaunchesArgs {
    /// How many simulated agents (64 CPUs and 256 GiB each).
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Frameworks launching on every offer (each its own certificate).
    #[arg(long, default_value_t = 10)]
    pub frameworks: usize,
    /// Tasks put on one offer, at most.
    #[arg(long, default_value_t = 50)]
    pub per_offer: usize,
    /// How long each task runs, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub task_secs: f64,
    /// Launching before the window, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub warmup_secs: f64,
    /// The measurement window, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub window_secs: f64,
    #[command(flatten)]
    pub fleet: BenchFleetArgs,
}

#[derive(Args, Debug)]
pub struct BenchStormArgs {
    /// How many simulated agents (all start at once: --ramp-ms-per-agent is ignored).
    #[arg(long, default_value_t = 10000)]
    pub agents: usize,
    /// Each storm's deadline, seconds.
    #[arg(long, default_value_t = 240)]
    pub deadline_secs: u64,
    #[command(flatten)]
    pub fleet: BenchFleetArgs,
}

#[derive(Args, Debug)]
pub struct BenchChurnArgs {
    /// How many simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Launches wanted per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long launches are wanted, seconds.
    #[arg(long, default_value_t = 180.0)]
    pub duration_secs: f64,
    /// How long each task runs before the agent reports it FINISHED, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub task_secs: f64,
    #[command(flatten)]
    pub fleet: BenchFleetArgs,
}

#[derive(Args, Debug)]
pub struct BenchFailoverArgs {
    /// How many simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Wait after every agent registered before the kill, seconds.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    #[command(flatten)]
    pub fleet: BenchFleetArgs,
}

/// How a bench starts its simulated agents and where it keeps its files.
#[derive(Args, Debug)]
pub struct BenchFleetArgs {
    /// Registration jitter: agents start within this many ms per agent.
    #[arg(long, default_value_t = 2)]
    pub ramp_ms_per_agent: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    pub max_connecting: usize,
    /// Keep certificates, master data and logs here (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchIdleArgs {
    /// Fleet sizes to measure at, ascending, N[,N...].
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub agents: Vec<usize>,
    /// Measurement window at each step, seconds.
    #[arg(long, default_value_t = 20)]
    pub window_secs: u64,
    /// Wait after every agent registered before measuring, seconds.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    #[command(flatten)]
    pub fleet: BenchFleetArgs,
}

#[derive(Args, Debug)]
pub struct BenchAgentsArgs {
    /// Master addresses, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "CORRAL_MASTER", value_delimiter = ',')]
    pub master: Vec<String>,
    /// The cluster CA's directory (ca.pem, ca-key.pem); the agents' certificates are issued
    /// into it as PREFIX0, PREFIX1, ...
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// How many simulated agents.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Certificate name (and hostname) prefix.
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
    /// What each agent offers.
    #[arg(long, default_value = "cpus:4;mem:8GiB")]
    pub resources: String,
    /// How long a launched task runs before it is reported FINISHED, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub task_secs: f64,
    /// Agents start registering at random times within this many seconds (0: a storm).
    #[arg(long, default_value_t = 10.0)]
    pub ramp_secs: f64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    pub max_connecting: usize,
    /// Print the fleet's counters this often, seconds.
    #[arg(long, default_value_t = 10)]
    pub report_secs: u64,
}
