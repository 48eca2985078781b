//! `Identity::load`: every failure names the file and the problem.

use crate::support::*;
use std::fs;
use transport::{Identity, Role, TlsFiles, TransportError};

fn load_err(files: &TlsFiles) -> String {
    let err = Identity::load(files).unwrap_err();
    assert!(matches!(err, TransportError::File { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn loads_a_good_identity() {
    let pki = Pki::new();
    let id = Identity::load(&pki.issue(Role::Framework, "fw-1")).unwrap();
    assert_eq!(id.peer().role, Role::Framework);
    assert_eq!(id.peer().name, "fw-1");
}

#[test]
fn missing_files_are_named() {
    let pki = Pki::new();
    let good = pki.issue(Role::Agent, "a");
    for field in ["ca", "cert", "key"] {
        let mut files = good.clone();
        let missing = pki.path().join(format!("missing-{field}.pem"));
        match field {
            "ca" => files.ca = missing.clone(),
            "cert" => files.cert = missing.clone(),
            _ => files.key = missing.clone(),
        }
        let msg = load_err(&files);
        assert!(
            msg.contains(&missing.display().to_string()) && msg.contains("cannot read"),
            "{msg}"
        );
    }
}

#[test]
fn empty_or_wrong_contents_are_named() {
    let pki = Pki::new();
    let good = pki.issue(Role::Agent, "a");
    let empty = pki.path().join("empty.pem");
    fs::write(&empty, "").unwrap();

    let mut files = good.clone();
    files.ca = empty.clone();
    let msg = load_err(&files);
    assert!(
        msg.contains("empty.pem") && msg.contains("no PEM CERTIFICATE"),
        "{msg}"
    );

    let mut files = good.clone();
    files.key = good.cert.clone();
    let msg = load_err(&files);
    assert!(
        msg.contains("a.pem") && msg.contains("private key"),
        "{msg}"
    );

    // Someone else's key.
    let other = pki.issue(Role::Agent, "b");
    let mut files = good.clone();
    files.key = other.key.clone();
    let msg = load_err(&files);
    assert!(
        msg.contains("b-key.pem") && msg.contains("does not belong to the certificate"),
        "{msg}"
    );
}

#[test]
fn a_certificate_without_corral_identity_is_refused() {
    let pki = Pki::new();
    // Signed by a plain self-signed CA-less key: no corral:// SAN.
    let key = rcgen_free_cert(&pki);
    let msg = load_err(&key);
    assert!(msg.contains("corral://"), "{msg}");
}

/// Writes a certificate made by another tool (here: the CA certificate itself used as a leaf,
/// which has no corral:// URI SAN) and returns files pointing at it.
fn rcgen_free_cert(pki: &Pki) -> TlsFiles {
    TlsFiles {
        ca: pki.ca(),
        cert: pki.ca(),
        key: pki.path().join(certs::CA_KEY_FILE),
    }
}
