//! `service-framework`: keeps `--instances K` copies of `--command` running on a Corral
//! cluster, relaunching lost ones, until SIGINT or SIGTERM. See the library's `service`
//! module.

use clap::Parser;
use example_frameworks::service::{self, ServiceArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = ServiceArgs::parse();
    let stop = async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    match service::run(args, stop).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service-framework: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
