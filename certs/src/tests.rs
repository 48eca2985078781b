use super::*;
use std::os::unix::fs::PermissionsExt;
use x509_parser::extensions::GeneralName;

fn req(role: Role, name: &str) -> IssueRequest {
    IssueRequest {
        role,
        name: name.into(),
        sans: vec![],
        days: 30,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read_der(path: &Path) -> Vec<u8> {
    first_pem_der(&fs::read_to_string(path).unwrap()).expect("a CERTIFICATE block")
}

#[test]
fn init_ca_writes_cert_and_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("nested/ca");
    let paths = init_ca(&ca_dir, false).unwrap();
    assert_eq!(paths.cert, ca_dir.join("ca.pem"));
    assert_eq!(paths.key, ca_dir.join("ca-key.pem"));
    assert_eq!(mode(&paths.key), 0o600);
    let key = fs::read_to_string(&paths.key).unwrap();
    assert!(key.contains("PRIVATE KEY"), "{key}");
    let der = read_der(&paths.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.is_ca());
    // No temporary files left behind.
    let mut names: Vec<_> = fs::read_dir(&ca_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca-key.pem", "ca.pem"]);
}

#[test]
fn init_ca_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let paths = init_ca(dir.path(), false).unwrap();
    let before = fs::read(&paths.key).unwrap();
    let err = init_ca(dir.path(), false).unwrap_err();
    assert!(matches!(err, CertsError::Exists { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("ca-key.pem") && msg.contains("--force"),
        "{msg}"
    );
    assert_eq!(fs::read(&paths.key).unwrap(), before, "key was changed");

    init_ca(dir.path(), true).unwrap();
    assert_ne!(
        fs::read(&paths.key).unwrap(),
        before,
        "--force did not replace"
    );
    assert_eq!(mode(&paths.key), 0o600);
}

#[test]
fn issue_writes_files_with_modes_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path(), false).unwrap();
    let paths = issue(dir.path(), &req(Role::Agent, "node-1"), false).unwrap();
    assert_eq!(paths.cert, dir.path().join("node-1.pem"));
    assert_eq!(paths.key, dir.path().join("node-1-key.pem"));
    assert_eq!(mode(&paths.key), 0o600);

    let cert_before = fs::read(&paths.cert).unwrap();
    let err = issue(dir.path(), &req(Role::Agent, "node-1"), false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("node-1") && msg.contains("--force"), "{msg}");
    assert_eq!(fs::read(&paths.cert).unwrap(), cert_before);

    issue(dir.path(), &req(Role::Master, "node-1"), true).unwrap();
    let id = identity_from_cert_der(&read_der(&paths.cert)).unwrap();
    assert_eq!(id.role, Role::Master, "--force did not reissue");
}

#[test]
fn issue_without_ca_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = issue(dir.path(), &req(Role::Agent, "a"), false).unwrap_err();
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
    assert!(!dir.path().join("a.pem").exists());
}

#[test]
fn issue_refuses_a_ca_key_that_does_not_match() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    init_ca(a.path(), false).unwrap();
    init_ca(b.path(), false).unwrap();
    fs::copy(b.path().join("ca-key.pem"), a.path().join("ca-key.pem")).unwrap();
    let err = issue(a.path(), &req(Role::Agent, "a"), false).unwrap_err();
    assert!(matches!(err, CertsError::BadCa { .. }), "{err}");
}

#[test]
fn role_and_name_round_trip_for_every_role() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path(), false).unwrap();
    for role in Role::ALL {
        let name = format!("{role}_x.y-1");
        let paths = issue(dir.path(), &req(role, &name), false).unwrap();
        let id = identity_from_cert_der(&read_der(&paths.cert)).unwrap();
        assert_eq!(id, PeerIdentity { role, name });
    }
}

#[test]
fn leaf_has_expected_sans_eku_and_issuer() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path(), false).unwrap();
    let mut r = req(Role::Agent, "node-1");
    r.sans = vec![
        "10.0.0.7".into(),
        "node-1.example.com".into(),
        "fe80::1".into(),
    ];
    let paths = issue(dir.path(), &r, false).unwrap();
    let der = read_der(&paths.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cn, ["node-1"]);
    assert!(!cert.is_ca());

    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut dns = vec![];
    let mut ips = vec![];
    let mut uris = vec![];
    for g in &san.value.general_names {
        match g {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::IPAddress(b) => ips.push(match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    assert_eq!(uris, ["corral://agent/node-1"]);
    assert_eq!(dns, ["node-1", "localhost", "node-1.example.com"]);
    let want: Vec<IpAddr> = ["127.0.0.1", "::1", "10.0.0.7", "fe80::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ips, want);

    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);

    // Issued by our CA with an ECDSA key (chain verification is tested in transport).
    let ca_der = read_der(&dir.path().join("ca.pem"));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
}

#[test]
fn issue_with_validity_sets_the_window() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path(), false).unwrap();
    let nb = OffsetDateTime::now_utc() - Duration::days(10);
    let na = OffsetDateTime::now_utc() - Duration::days(1);
    let paths = issue_with_validity(dir.path(), &req(Role::Agent, "old"), nb, na, false).unwrap();
    let der = read_der(&paths.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.validity().not_after.timestamp(),
        na.unix_timestamp(),
        "not_after"
    );
    assert!(!cert.validity().is_valid());

    let err = issue_with_validity(dir.path(), &req(Role::Agent, "bad"), na, nb, false);
    assert!(matches!(err, Err(CertsError::InvalidValidity(_))));
    let mut zero = req(Role::Agent, "zero");
    zero.days = 0;
    assert!(matches!(
        issue(dir.path(), &zero, false),
        Err(CertsError::InvalidValidity(_))
    ));
}

#[test]
fn names_are_validated() {
    for good in ["a", "node-1", "A.b_c-9", &"x".repeat(64)] {
        validate_name(good).unwrap();
    }
    for bad in ["", "a/b", "a b", "..", ".", "ä", "a:b", &"x".repeat(65)] {
        let err = validate_name(bad).unwrap_err();
        assert!(err.to_string().contains("invalid node name"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path(), false).unwrap();
    let err = issue(dir.path(), &req(Role::Agent, "../escape"), false).unwrap_err();
    assert!(matches!(err, CertsError::InvalidName { .. }), "{err}");
    // The CA's own files cannot be clobbered through a crafted name.
    let err = issue(dir.path(), &req(Role::Agent, "ca"), true).unwrap_err();
    assert!(matches!(err, CertsError::InvalidName { .. }), "{err}");
}

#[test]
fn bad_sans_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path(), false).unwrap();
    let mut r = req(Role::Agent, "n");
    r.sans = vec!["not a name".into()];
    let err = issue(dir.path(), &r, false).unwrap_err();
    assert!(err.to_string().contains("not a name"), "{err}");
    assert!(!dir.path().join("n.pem").exists());
}

#[test]
fn dns_name_check() {
    assert!(is_dns_name("node-1"));
    assert!(is_dns_name("a.b.example.com"));
    assert!(is_dns_name("*.example.com"));
    assert!(!is_dns_name("under_score"));
    assert!(!is_dns_name("-lead"));
    assert!(!is_dns_name("a..b"));
    assert!(!is_dns_name("10.0.0.1"));
    assert!(!is_dns_name(""));
}

/// A certificate from another tool (no `corral://` URI SAN) has no identity.
#[test]
fn cert_without_identity_uri_is_rejected() {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["node-1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let err = identity_from_cert_der(cert.der()).unwrap_err();
    assert!(matches!(err, CertsError::NoIdentity), "{err}");

    // A URI SAN with another scheme is not an identity either.
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.subject_alt_names = vec![SanType::URI("https://agent/x".try_into().unwrap())];
    let cert = params.self_signed(&key).unwrap();
    assert!(matches!(
        identity_from_cert_der(cert.der()),
        Err(CertsError::NoIdentity)
    ));
}

#[test]
fn ambiguous_or_malformed_identity_is_rejected() {
    let key = KeyPair::generate().unwrap();
    let uri_cert = |uris: &[&str]| {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
            .collect();
        params.self_signed(&key).unwrap().der().to_vec()
    };
    let der = uri_cert(&["corral://agent/a", "corral://master/a"]);
    assert!(matches!(
        identity_from_cert_der(&der),
        Err(CertsError::AmbiguousIdentity(_))
    ));
    for bad in [
        "corral://root/a",
        "corral://agent",
        "corral://agent/",
        "corral://agent/a/b",
    ] {
        let err = identity_from_cert_der(&uri_cert(&[bad])).unwrap_err();
        assert!(
            matches!(err, CertsError::BadIdentity { .. }),
            "{bad}: {err}"
        );
    }
    let err = identity_from_cert_der(&uri_cert(&["corral://root/a"])).unwrap_err();
    assert!(err.to_string().contains("unknown role"), "{err}");
    assert!(matches!(
        identity_from_cert_der(b"garbage"),
        Err(CertsError::Parse(_))
    ));
}

#[test]
fn each_ca_has_its_own_subject() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let da = read_der(&init_ca(a.path(), false).unwrap().cert);
    let db = read_der(&init_ca(b.path(), false).unwrap().cert);
    let (_, ca) = x509_parser::parse_x509_certificate(&da).unwrap();
    let (_, cb) = x509_parser::parse_x509_certificate(&db).unwrap();
    assert_ne!(ca.subject(), cb.subject());
    assert!(ca.subject().to_string().contains("corral cluster CA"));
}
