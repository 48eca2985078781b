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
//! them. This file holds what they share: the connection flags and the task resources.

pub mod batch;
pub mod service;

use anyhow::Context;
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
