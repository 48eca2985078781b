//! Two complete frameworks written with Corral's Rust SDK (the `framework` crate), run by the
//! test suite against a real cluster (`integration/tests/it/example_frameworks.rs`):
//!
//! - `batch-framework` (`src/bin/batch.rs`, logic in [`batch`]): runs N tasks, each to the
//!   end, retrying a failed one up to a number of attempts, and exits when all have ended
//!   (status 0 if all finished, 1 naming each failure). It is DRF-friendly: it declines the
//!   offers it cannot use with a filter, suppresses offers while nothing is pending and
//!   revives when a retry makes work appear.
//! - `service-framework` (`src/bin/service.rs`, logic in [`service`]): keeps K instances of a
//!   long-running command alive, relaunching an instance whose task failed, was killed or
//!   whose agent was lost, and killing a stale copy that comes back; it runs until SIGINT or
//!   SIGTERM, then tears the framework down.
//!
//! Both print one line per decision on stdout, which is how the tests (and a person) follow
//! them. This file holds what they share: the connection flags, the task resources and the
//! event loop's dispatch (`Handler`, `dispatch`).

pub mod batch;
pub mod service;

use anyhow::Context;
use framework::{Scheduler, SchedulerEvent};
use proto::{FrameworkEvent, Offer, TaskStatus};
use std::path::PathBuf;
use std::sync::Arc;

/// How to reach the cluster: the masters and the framework's certificate.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Master addresses, `HOST:PORT`, comma-separated (every master of the cluster).
    #[arg(long, env = "CORRAL_MASTER", value_delimiter = ',', required = true)]
    pub master: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, env = "CORRAL_CA")]
    pub ca: PathBuf,
    /// This framework's certificate (role `framework`, PEM).
    #[arg(long, env = "CORRAL_CERT")]
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    #[arg(long, env = "CORRAL_KEY")]
    pub key: PathBuf,
}

impl ConnectArgs {
    /// Client options for the framework library.
    pub fn client_options(&self) -> anyhow::Result<framework::ClientOptions> {
        transport::install_crypto_provider();
        let identity = transport::Identity::load(&transport::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
        .with_context(|| format!("loading the certificate {}", self.cert.display()))?;
        Ok(framework::ClientOptions::new(
            self.master.clone(),
            Arc::new(identity),
        ))
    }
}

/// What one task asks for.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskArgs {
    /// The shell command each task runs (under `/bin/sh -c`).
    #[arg(long)]
    pub command: String,
    /// CPUs per task.
    #[arg(long, default_value = "0.1")]
    pub cpus: String,
    /// Memory per task (`64MiB`, `1GiB`).
    #[arg(long, default_value = "32MiB")]
    pub mem: String,
    /// How long a declined offer stays away from this framework, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub refuse_seconds: f64,
}

impl TaskArgs {
    pub fn resources(&self) -> anyhow::Result<proto::Resources> {
        let spec = format!("cpus:{};mem:{}", self.cpus, self.mem);
        spec.parse()
            .map_err(|e| anyhow::anyhow!("--cpus {} --mem {}: {e}", self.cpus, self.mem))
    }

    pub fn refuse(&self) -> anyhow::Result<proto::Filters> {
        anyhow::ensure!(
            self.refuse_seconds.is_finite() && self.refuse_seconds >= 0.0,
            "--refuse-seconds must be a non-negative number, not {}",
            self.refuse_seconds
        );
        Ok(framework::refuse_for(std::time::Duration::from_secs_f64(
            self.refuse_seconds,
        )))
    }
}

/// How many tasks of `per_task` fit in `free`, at most `want`.
pub fn fit(free: &proto::Resources, per_task: &proto::Resources, want: usize) -> usize {
    let mut left = free.clone();
    let mut n = 0;
    while n < want {
        match left.checked_sub(per_task) {
            Some(l) => {
                left = l;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// Prints one line to stdout at once (the tests read it while the framework runs).
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What a framework of this crate does with the events that concern it; [`dispatch`] calls it.
pub(crate) trait Handler {
    /// New offers: launch on those that fit, decline the rest.
    async fn offers(&mut self, sched: &Scheduler, offers: Vec<Offer>) -> anyhow::Result<()>;
    /// A task's status (acknowledged by [`dispatch`] once this returns).
    async fn update(&mut self, sched: &Scheduler, status: &TaskStatus) -> anyhow::Result<()>;
    /// The library re-subscribed after a master failover: offers are no longer suppressed,
    /// and the framework's tasks should be reconciled.
    async fn resubscribed(&mut self, sched: &Scheduler) -> anyhow::Result<()>;
}

/// Hands one event (`None`: the session ended) to `handler`; errors when the session is over.
pub(crate) async fn dispatch(
    sched: &Scheduler,
    event: Option<SchedulerEvent>,
    handler: &mut impl Handler,
) -> anyhow::Result<()> {
    let Some(event) = event else {
        anyhow::bail!("the session with the master ended");
    };
    match event {
        SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
            handler.offers(sched, offers).await?
        }
        SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
            handler.update(sched, &status).await?;
            sched.acknowledge(&status).await?;
        }
        SchedulerEvent::Framework(FrameworkEvent::Error { message }) => {
            say(format_args!("the master refused a call: {message}"))
        }
        SchedulerEvent::Resubscribed { master } => {
            say(format_args!("re-subscribed via {master}; reconciling"));
            handler.resubscribed(sched).await?;
        }
        SchedulerEvent::Terminated { reason } => anyhow::bail!("the master ended us: {reason}"),
        _ => {}
    }
    Ok(())
}
