use super::*;
use crate::{ca_paths, identity_from_cert_der, init_ca};

const NOW: u64 = 1_800_000_000;

fn signer(dir: &Path) -> CaSigner {
    init_ca(dir, false).unwrap();
    let ca = ca_paths(dir);
    CaSigner::load(&ca.cert, &ca.key).unwrap()
}

#[test]
fn a_minted_token_round_trips_through_its_text_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    let token = ca
        .mint_token(Role::Agent, 3600, 2, Some("node-1".into()), NOW)
        .unwrap();
    let text = token.to_string();
    assert!(text.starts_with("corral-join1:agent:1800003600:2:node-1:"));
    let parsed: JoinToken = text.parse().unwrap();
    assert_eq!(parsed, token);
    assert_eq!(ca.check_token(&parsed, NOW), Ok(()));
    assert_eq!(ca.check_token(&parsed, NOW + 3599), Ok(()));
    // Two tokens never share an id.
    let other = ca.mint_token(Role::Agent, 3600, 1, None, NOW).unwrap();
    assert_ne!(other.id, token.id);
    assert!(other.to_string().contains(":1::"), "{other}");
}

#[test]
fn an_expired_token_is_refused_naming_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    let token = ca.mint_token(Role::Agent, 60, 1, None, NOW).unwrap();
    let err = ca.check_token(&token, NOW + 60).unwrap_err();
    assert!(matches!(err, JoinError::Expired { expired, .. } if expired == NOW + 60));
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn an_altered_token_fails_its_mac() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    let token = ca.mint_token(Role::Agent, 60, 1, None, NOW).unwrap();
    for altered in [
        token.to_string().replace(":agent:", ":operator:"),
        token.to_string().replace(":1::", ":5::"),
        token
            .to_string()
            .replace(&token.expires_unix.to_string(), &(NOW + 120).to_string()),
    ] {
        let parsed: JoinToken = altered.parse().unwrap();
        assert_eq!(
            ca.check_token(&parsed, NOW),
            Err(JoinError::BadMac),
            "{altered}"
        );
    }
}

#[test]
fn a_token_of_another_ca_is_refused_with_both_hashes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca_a, ca_b) = (signer(a.path()), signer(b.path()));
    let token = ca_a.mint_token(Role::Agent, 60, 1, None, NOW).unwrap();
    let err = ca_b.check_token(&token, NOW).unwrap_err();
    assert!(matches!(err, JoinError::WrongCa { .. }), "{err}");
    assert!(err.to_string().contains("another cluster"), "{err}");
    assert!(err.to_string().contains(&hex(&ca_b.ca_hash())), "{err}");
    // The same token with the other CA's hash spliced in fails its MAC.
    let spliced = token
        .to_string()
        .replace(&hex(&ca_a.ca_hash()), &hex(&ca_b.ca_hash()));
    let spliced: JoinToken = spliced.parse().unwrap();
    assert_eq!(ca_b.check_token(&spliced, NOW), Err(JoinError::BadMac));
}

#[test]
fn master_tokens_are_neither_minted_nor_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    assert_eq!(
        ca.mint_token(Role::Master, 60, 1, None, NOW),
        Err(JoinError::MasterRole)
    );
    let mut token = ca.mint_token(Role::Agent, 60, 1, None, NOW).unwrap();
    token.role = Role::Master;
    token.mac = ca.mac(&token);
    assert_eq!(ca.check_token(&token, NOW), Err(JoinError::MasterRole));
}

#[test]
fn minting_refuses_impossible_lifetimes_and_use_counts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    for (ttl, uses) in [
        (0, 1),
        (MAX_TOKEN_TTL_SECS + 1, 1),
        (60, 0),
        (60, MAX_TOKEN_USES + 1),
    ] {
        let err = ca
            .mint_token(Role::Agent, ttl, uses, None, NOW)
            .unwrap_err();
        assert!(matches!(err, JoinError::Invalid(_)), "{ttl} {uses}: {err}");
    }
    assert!(ca
        .mint_token(Role::Agent, 60, 1, Some("bad name".into()), NOW)
        .is_err());
}

#[test]
fn malformed_tokens_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    let good = ca
        .mint_token(Role::Agent, 60, 1, None, NOW)
        .unwrap()
        .to_string();
    let cases = [
        ("", "fields"),
        ("hello", "fields"),
        (&good.replacen("corral-join1", "corral-join9", 1), "start"),
        (&good.replace(":agent:", ":pilot:"), "unknown role"),
        (&good.replace(":1800000060:", ":soon:"), "expiry"),
        (&good.replace(":1::", ":0::"), "uses"),
        (&good.replace(":1::", ":1:a/b:"), "name"),
        (&format!("{good}ff"), "CA hash"),
        (&format!("{good}:x"), "fields"),
    ];
    for (text, what) in cases {
        let err = text.parse::<JoinToken>().unwrap_err();
        assert!(matches!(err, JoinError::Malformed(_)), "{text}: {err}");
        assert!(err.to_string().contains(what), "{text}: {err}");
    }
}

#[test]
fn a_csr_is_signed_with_the_role_and_name_given_not_those_it_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    let (key_pem, csr_pem) = new_key_and_csr("asked-name").unwrap();
    let csr = ca.parse_csr(&csr_pem).unwrap();
    let cert_pem = ca.sign(&csr, Role::Agent, "node-7", 60).unwrap();
    let der = first_pem_der(&cert_pem).unwrap();
    let id = identity_from_cert_der(&der).unwrap();
    assert_eq!((id.role, id.name.as_str()), (Role::Agent, "node-7"));
    let (nb, na) = cert_validity(&cert_pem).unwrap();
    assert_eq!(na - nb, 60 + BACKDATE.whole_seconds());
    // The certificate is for the joiner's key.
    let key = KeyPair::from_pem(&key_pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert_eq!(csr.key_fingerprint.len(), 64);
}

#[test]
fn a_csr_with_a_broken_signature_or_garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signer(dir.path());
    assert!(matches!(ca.parse_csr("not a csr"), Err(JoinError::Csr(_))));
    let (_, csr_pem) = new_key_and_csr("n").unwrap();
    let der = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .unwrap()
        .1
        .contents;
    let mut broken = der.clone();
    let last = broken.len() - 3;
    broken[last] ^= 0x55;
    let b64 = base64_encode(&broken);
    let pem =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
    assert!(matches!(ca.parse_csr(&pem), Err(JoinError::Csr(_))));
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn joined_files_replace_old_ones_with_a_private_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        dir.path().join("tls/ca.pem"),
        dir.path().join("tls/a.pem"),
        dir.path().join("tls/a-key.pem"),
    );
    write_joined_files(Some(&ca), &cert, &key, "CA", "CERT1", "KEY1").unwrap();
    write_joined_files(None, &cert, &key, "CA2", "CERT2", "KEY2").unwrap();
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), "CERT2");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "KEY2");
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), "CA");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
