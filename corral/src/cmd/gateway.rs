//! `corral mesos-gateway`: the Mesos v1 HTTP API for unchanged Mesos frameworks
//! (`mesos_gateway::Gateway`), subscribing them to the masters with the given certificate.

use super::{client_options, load_identity, shutdown_signal};
use crate::cli::{MesosGatewayArgs, TlsArgs};
use anyhow::Result;
use mesos_gateway::{Gateway, GatewayConfig, GatewayTls};

pub async fn mesos_gateway(args: MesosGatewayArgs) -> Result<u8> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(GatewayTls {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    // Refuse a non-loopback address without TLS before anything else (certificates included).
    mesos_gateway::listen_addr(&args.listen, tls.is_some()).await?;
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
        tls,
        framework,
        operator,
        heartbeat: crate::config::seconds("heartbeat-secs", args.heartbeat_secs)?,
    };
    let gateway = Gateway::bind(config).await?;
    tracing::info!(listen = %gateway.local_addr(), https = gateway.is_tls(),
        masters = %args.connect.master.join(","), "Mesos gateway serving");
    gateway.run(shutdown_signal()).await;
    tracing::info!("Mesos gateway stopped");
    Ok(0)
}
