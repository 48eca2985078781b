//! `corral mesos-gateway`: the Mesos v1 HTTP API for unchanged Mesos frameworks
//! (`mesos_gateway::Gateway`), subscribing them to the masters with the given certificate.

use super::{client_options, load_identity, shutdown_signal};
use crate::cli::{MesosGatewayArgs, TlsArgs};
use anyhow::Result;
use mesos_gateway::{Gateway, GatewayConfig};

pub async fn mesos_gateway(args: MesosGatewayArgs) -> Result<u8> {
    // Refuse a non-loopback address before anything else (certificates included).
    mesos_gateway::loopback_addr(&args.listen).await?;
    let framework = client_options(&args.connect)?;
    let operator = match (&args.operator_cert, &args.operator_key) {
        (Some(cert), Some(key)) => {
            let tls = TlsArgs {
                ca: args.connect.tls.ca.clone(),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
            };
            let identity = load_identity(&tls, (None, None, None))?;
            Some(framework::ClientOptions::new(
                args.connect.master.clone(),
                identity,
            ))
        }
        _ => None,
    };
    let config = GatewayConfig {
        listen: args.listen.clone(),
        framework,
        operator,
        heartbeat: crate::config::seconds("heartbeat-secs", args.heartbeat_secs)?,
    };
    let gateway = Gateway::bind(config).await?;
    tracing::info!(listen = %gateway.local_addr(), masters = %args.connect.master.join(","),
        "Mesos gateway serving");
    gateway.run(shutdown_signal()).await;
    tracing::info!("Mesos gateway stopped");
    Ok(0)
}
