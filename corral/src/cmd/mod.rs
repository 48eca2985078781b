//! One module per subcommand. Each returns the process exit code.

mod bench;
mod certs;
mod clients;
pub mod daemons;
mod events;
mod gateway;
mod policy;
mod quota;
pub mod run;
mod ui;

use crate::cli::{Cli, Command, ConnectArgs, TlsArgs};
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use transport::{Identity, TlsFiles};

/// How long a finished command waits for its blocking threads before the process exits.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

pub fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Certs(c) => certs::run(c),
        Command::Init(_) => unreachable!("handled in main before logging is set up"),
        other => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let code = rt.block_on(async move {
                match other {
                    Command::Master(a) => daemons::master(a).await,
                    Command::Agent(a) => daemons::agent(a).await,
                    Command::Run(a) => run::run(a).await,
                    Command::Dev(a) => daemons::dev(a).await,
                    Command::State(a) => clients::state(a).await,
                    Command::Logs(a) => clients::logs(a).await,
                    Command::Kill(a) => clients::kill(a).await,
                    Command::Events(a) => events::events(a).await,
                    Command::Ui(a) => ui::ui(a).await,
                    Command::Drain(a) => clients::agent_call(a, clients::AgentOp::Drain).await,
                    Command::Deactivate(a) => {
                        clients::agent_call(a, clients::AgentOp::Deactivate).await
                    }
                    Command::Reactivate(a) => {
                        clients::agent_call(a, clients::AgentOp::Reactivate).await
                    }
                    Command::Teardown(a) => clients::teardown(a).await,
                    Command::Masters(m) => clients::masters(m).await,
                    Command::Policy(p) => policy::run(p).await,
                    Command::Quota(q) => quota::run(q).await,
                    Command::Reserve(a) => quota::reservation(a, true).await,
                    Command::Unreserve(a) => quota::reservation(a, false).await,
                    Command::MesosGateway(a) => gateway::mesos_gateway(a).await,
                    Command::Bench(b) => bench::run(b).await,
                    Command::Certs(_) | Command::Init(_) => unreachable!(),
                }
            });
            // Dropping a runtime waits for every blocking thread. The agent's task watchers end
            // when it stops, but a slow blocking call (a kill within its grace, a stuck
            // filesystem) must not keep a stopping daemon alive: systemd's stop and restart wait
            // for the process. What such a call left undone, a restarted agent redoes.
            rt.shutdown_timeout(SHUTDOWN_GRACE);
            code
        }
    }
}

/// Loads the certificate identity from flags/environment (or a config file's values).
pub fn load_identity(
    tls: &TlsArgs,
    file: (
        Option<&std::path::Path>,
        Option<&std::path::Path>,
        Option<&std::path::Path>,
    ),
) -> Result<Arc<Identity>> {
    let pick = |flag: &Option<std::path::PathBuf>,
                file: Option<&std::path::Path>,
                name: &str,
                env: &str| {
        flag.clone()
            .or_else(|| file.map(|p| p.to_path_buf()))
            .with_context(|| format!("missing --{name} (or {env}, or `{name}` in the config file)"))
    };
    let files = TlsFiles {
        ca: pick(&tls.ca, file.0, "ca", "CORRAL_CA")?,
        cert: pick(&tls.cert, file.1, "cert", "CORRAL_CERT")?,
        key: pick(&tls.key, file.2, "key", "CORRAL_KEY")?,
    };
    Ok(Arc::new(Identity::load(&files)?))
}

pub fn client_options(connect: &ConnectArgs) -> Result<framework::ClientOptions> {
    if connect.master.is_empty() {
        bail!("missing --master HOST:PORT (or CORRAL_MASTER)");
    }
    let identity = load_identity(&connect.tls, (None, None, None))?;
    Ok(framework::ClientOptions::new(
        connect.master.clone(),
        identity,
    ))
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
