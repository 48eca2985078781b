//! `corral certs`: the CA, certificates, join tokens, joining and renewing.

use super::client_options;
use crate::cli::CertsCommand;
use crate::config;
use anyhow::{bail, Context, Result};
use proto::{CertificateCall, ClientFrame, OperatorReply, Role, ServerFrame};
use std::time::{Duration, SystemTime};

/// How long `corral certs join` keeps trying to reach a leading master.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

pub fn run(cmd: CertsCommand) -> Result<u8> {
    match cmd {
        CertsCommand::Init { dir, force } => {
            let paths = certs::init_ca(&dir, force)?;
            println!("CA certificate: {}", paths.cert.display());
            println!("CA key:         {} (keep it secret)", paths.key.display());
        }
        CertsCommand::Issue {
            dir,
            role,
            name,
            sans,
            days,
            force,
        } => {
            let role: Role = role.parse()?;
            let req = certs::IssueRequest {
                role,
                name,
                sans,
                days,
            };
            let paths = certs::issue(&dir, &req, force)?;
            println!("certificate: {}", paths.cert.display());
            println!("key:         {}", paths.key.display());
        }
        CertsCommand::Token {
            dir,
            role,
            ttl,
            uses,
            name,
        } => {
            let role: Role = role.parse()?;
            let ttl = config::duration("ttl", &ttl)?;
            let ca = certs::ca_paths(&dir);
            let signer = certs::CaSigner::load(&ca.cert, &ca.key)?;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .context("the system clock is before 1970")?
                .as_secs();
            let token = signer.mint_token(role, ttl.as_secs().max(1), uses, name, now)?;
            eprintln!(
                "join token {} for role {role}: {uses} use(s), expires at {} (Unix seconds), pins the CA {}",
                token.id,
                token.expires_unix,
                token.ca_hash_text()
            );
            eprintln!("revoke it with: corral certs revoke-token {}", token.id);
            println!("{token}");
        }
        CertsCommand::RevokeToken { token, connect } => {
            // A whole token names its id; an id is passed as it is (the master checks it).
            let id = match token.parse::<certs::JoinToken>() {
                Ok(t) => t.id,
                Err(_) => token,
            };
            let opts = client_options(&connect)?;
            let call = ClientFrame::Certificates(CertificateCall::RevokeJoinToken {
                token_id: id.clone(),
            });
            let reply = runtime()?.block_on(async {
                let (_, reply) = session::open_session(&opts, &call).await?;
                anyhow::Ok(reply)
            })?;
            match reply {
                ServerFrame::Operator(OperatorReply::Done) => println!("revoked join token {id}"),
                other => bail!("unexpected answer from the master: {other:?}"),
            }
        }
        CertsCommand::Join {
            token,
            master,
            dir,
            name,
        } => {
            if master.is_empty() {
                bail!("missing --master HOST:PORT (or CORRAL_MASTER)");
            }
            let parsed: certs::JoinToken = token.parse()?;
            let name = parsed
                .name
                .clone()
                .or(name)
                .context("missing --name: the token binds no name")?;
            let paths = certs::node_paths(&dir, &name);
            let files = transport::TlsFiles {
                ca: certs::ca_paths(&dir).cert,
                cert: paths.cert,
                key: paths.key,
            };
            let me = runtime()?.block_on(session::join(
                master,
                &token,
                Some(&name),
                &files,
                JOIN_TIMEOUT,
            ))?;
            println!("joined as {me}");
            println!("CA certificate: {}", files.ca.display());
            println!("certificate:    {}", files.cert.display());
            println!("key:            {}", files.key.display());
        }
        CertsCommand::Renew { connect } => {
            let opts = client_options(&connect)?;
            let until = runtime()?.block_on(session::renew(&opts))?;
            println!(
                "renewed {}: valid until {until} (Unix seconds)",
                opts.identity.files().cert.display()
            );
        }
    }
    Ok(0)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
