//! One certificate per simulated agent, issued in-process by the `certs` crate.
//!
//! `certs::issue` generates a fresh ECDSA P-256 key for every certificate (it offers no way to
//! reuse one key pair), so each agent has its own key, as real agents do. Issuing is spread over
//! a few threads; keep the directory on a fast filesystem (every file is fsynced).

use crate::LoadgenError;
use proto::Role;
use std::path::Path;
use std::sync::Arc;
use transport::{Identity, TlsFiles};

/// Validity of a simulated agent's certificate: a benchmark run is short.
pub const AGENT_CERT_DAYS: u32 = 2;

/// Issues (or re-issues) certificates `PREFIX0` .. `PREFIX{n-1}` with role agent, signed by the
/// CA in `dir` (`ca.pem`, `ca-key.pem`), and loads each as an [`Identity`]. `first` numbers the
/// first one, so a fleet can grow in steps.
pub fn issue_agent_identities(
    dir: &Path,
    prefix: &str,
    first: usize,
    n: usize,
    threads: usize,
) -> Result<Vec<Arc<Identity>>, LoadgenError> {
    let threads = threads.clamp(1, 16);
    let names: Vec<String> = (first..first + n).map(|i| format!("{prefix}{i}")).collect();
    let chunk = names.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<Arc<Identity>>, LoadgenError>> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|n| issue_one(dir, n)).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(LoadgenError::Io {
                        what: "a certificate-issuing thread".into(),
                        source: std::io::Error::other("panicked"),
                    })
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

fn issue_one(dir: &Path, name: &str) -> Result<Arc<Identity>, LoadgenError> {
    let req = certs::IssueRequest {
        role: Role::Agent,
        name: name.to_owned(),
        sans: Vec::new(),
        days: AGENT_CERT_DAYS,
    };
    let paths = certs::issue(dir, &req, true).map_err(|source| LoadgenError::Issue {
        name: name.to_owned(),
        dir: dir.to_owned(),
        source,
    })?;
    let files = TlsFiles {
        ca: certs::ca_paths(dir).cert,
        cert: paths.cert,
        key: paths.key,
    };
    let id = Identity::load(&files).map_err(|source| LoadgenError::Identity {
        name: name.to_owned(),
        dir: dir.to_owned(),
        source,
    })?;
    Ok(Arc::new(id))
}
