use crate::cli::CertsCommand;
use anyhow::Result;
use proto::Role;

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
    }
    Ok(0)
}
