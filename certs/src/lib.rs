//! Corral's cluster certificate authority. This crate owns the on-disk CA (`ca.pem`,
//! `ca-key.pem`), the issuing of node certificates (`NAME.pem`, `NAME-key.pem`) and the rule that
//! ties a certificate to a cluster identity: every node certificate carries exactly one URI SAN
//! `corral://ROLE/NAME` (plus CN = NAME), and [`identity_from_cert_der`] reads that back into a
//! [`PeerIdentity`]. It does no networking and does not verify chains: the transport crate lets
//! rustls/webpki verify the chain first and only then asks this crate who the peer is.
//!
//! `join.rs` holds join tokens and certificate signing requests: how a node gets a certificate
//! from the masters without the CA key (its doc explains the token's design).
//!
//! Files are written atomically (a fresh `0600` temporary file in the same directory, fsynced,
//! then linked or renamed into place), private keys are `0600`, and an existing file is never
//! replaced unless the caller passes `force`.

use proto::{PeerIdentity, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a CA directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Scheme prefix of the URI SAN that names a node: `corral://ROLE/NAME`.
pub const IDENTITY_URI_PREFIX: &str = "corral://";
/// Longest node name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Validity of a new CA.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Default validity of a node certificate (the CLI's `--days` default).
pub const DEFAULT_LEAF_DAYS: u32 = 825;
/// Certificates start being valid this long before they are issued, so that a peer whose clock
/// is slightly behind still accepts a freshly issued certificate.
pub const BACKDATE: Duration = Duration::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{path} already exists; use --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable CA {what}: {reason}")]
    BadCa {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("invalid node name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid subject alternative name '{san}': {reason}")]
    InvalidSan { san: String, reason: String },
    #[error("invalid validity: {0}")]
    InvalidValidity(String),
    #[error("cannot generate certificate: {0}")]
    Generate(String),
    #[error("cannot parse certificate: {0}")]
    Parse(String),
    #[error("certificate has no {IDENTITY_URI_PREFIX}ROLE/NAME URI SAN; it was not issued by `corral certs issue`")]
    NoIdentity,
    #[error("certificate has several {IDENTITY_URI_PREFIX} URI SANs ({0}); refusing an ambiguous identity")]
    AmbiguousIdentity(String),
    #[error("certificate identity '{uri}' is invalid: {reason}")]
    BadIdentity { uri: String, reason: String },
}

/// Where a certificate and its private key were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What to issue: a certificate for `name` acting as `role`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueRequest {
    pub role: Role,
    pub name: String,
    /// Extra subject alternative names: an IP address if it parses as one, else a DNS name.
    pub sans: Vec<String>,
    /// Validity in days, counted from now.
    pub days: u32,
}

/// The CA files in `dir`.
pub fn ca_paths(dir: &Path) -> CertPaths {
    CertPaths {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    }
}

/// The files `issue` writes for `name` in `dir`.
pub fn node_paths(dir: &Path, name: &str) -> CertPaths {
    CertPaths {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    }
}

/// Creates a new cluster CA in `dir` (created if missing): `ca.pem` and `ca-key.pem` (0600).
pub fn init_ca(dir: &Path, force: bool) -> Result<CertPaths, CertsError> {
    let paths = ca_paths(dir);
    create_dir(dir)?;
    refuse_existing(&paths, force)?;

    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::default();
    // Each CA gets a distinct subject (from its key), so a certificate of another cluster is
    // reported as "unknown issuer" rather than matched by name and failing its signature.
    let key_id: String = params
        .key_identifier(&key)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("corral cluster CA {key_id}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "corral");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);

    let cert = params.self_signed(&key).map_err(gen_err)?;

    write_atomic(&paths.key, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_atomic(&paths.cert, cert.pem().as_bytes(), 0o644, force)?;
    Ok(paths)
}

/// Issues a certificate for `req` signed by the CA in `dir`, valid from now (minus
/// [`BACKDATE`]) for `req.days` days. Writes `NAME.pem` and `NAME-key.pem` (0600) into `dir`.
pub fn issue(dir: &Path, req: &IssueRequest, force: bool) -> Result<CertPaths, CertsError> {
    if req.days == 0 {
        return Err(CertsError::InvalidValidity(
            "--days must be at least 1".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    issue_with_validity(
        dir,
        req,
        now - BACKDATE,
        now + Duration::days(i64::from(req.days)),
        force,
    )
}

/// Like [`issue`] with an explicit validity window (`req.days` is ignored). Tests use it to make
/// already-expired or not-yet-valid certificates.
pub fn issue_with_validity(
    dir: &Path,
    req: &IssueRequest,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    force: bool,
) -> Result<CertPaths, CertsError> {
    validate_name(&req.name)?;
    if not_after <= not_before {
        return Err(CertsError::InvalidValidity(format!(
            "not_after ({not_after}) is not after not_before ({not_before})"
        )));
    }
    let sans = subject_alt_names(req)?;
    let paths = node_paths(dir, &req.name);
    let ca = ca_paths(dir);
    if paths.cert == ca.cert || paths.key == ca.key || paths.cert == ca.key {
        return Err(CertsError::InvalidName {
            name: req.name.clone(),
            reason: "it would overwrite the CA files".into(),
        });
    }
    refuse_existing(&paths, force)?;
    let issuer = load_issuer(&ca.cert, &ca.key)?;
    let params = leaf_params(req.role, &req.name, sans, not_before, not_after);
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;

    write_atomic(&paths.key, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_atomic(&paths.cert, cert.pem().as_bytes(), 0o644, force)?;
    Ok(paths)
}

/// The parameters of a node certificate: CN = NAME, OU = ROLE, the SANs (the identity URI
/// first), server and client authentication, not a CA.
fn leaf_params(
    role: Role,
    name: &str,
    sans: Vec<SanType>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role.as_str());
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// The URI SAN naming `role`/`name`: `corral://ROLE/NAME`.
pub fn identity_uri(role: Role, name: &str) -> String {
    format!("{IDENTITY_URI_PREFIX}{role}/{name}")
}

/// Reads the role and name from a certificate (DER). Call it only on a certificate whose chain
/// has been verified: this function checks the identity's format, not who signed it.
pub fn identity_from_cert_der(der: &[u8]) -> Result<PeerIdentity, CertsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertsError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertsError::Parse(format!("subject alternative names: {e}")))?
        .ok_or(CertsError::NoIdentity)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .filter(|u| u.starts_with(IDENTITY_URI_PREFIX))
        .collect();
    match uris.as_slice() {
        [] => Err(CertsError::NoIdentity),
        [uri] => parse_identity_uri(uri),
        many => Err(CertsError::AmbiguousIdentity(many.join(", "))),
    }
}

/// Parses `corral://ROLE/NAME`.
pub fn parse_identity_uri(uri: &str) -> Result<PeerIdentity, CertsError> {
    let bad = |reason: String| CertsError::BadIdentity {
        uri: uri.to_owned(),
        reason,
    };
    let rest = uri
        .strip_prefix(IDENTITY_URI_PREFIX)
        .ok_or_else(|| bad(format!("does not start with {IDENTITY_URI_PREFIX}")))?;
    let (role, name) = rest
        .split_once('/')
        .ok_or_else(|| bad("expected ROLE/NAME".into()))?;
    let role = Role::from_str(role).map_err(|e| bad(e.to_string()))?;
    validate_name(name).map_err(|e| bad(e.to_string()))?;
    Ok(PeerIdentity {
        role,
        name: name.to_owned(),
    })
}

/// Checks a node name: 1 to 64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), CertsError> {
    let invalid = |reason: &str| {
        Err(CertsError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid(&format!(
            "it is {} characters long, the maximum is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(&format!(
            "character {c:?} is not allowed (use letters, digits, '.', '_' and '-')"
        ));
    }
    if name == "." || name == ".." {
        return invalid("it is not a usable file name");
    }
    Ok(())
}

/// Whether `s` is a syntactically valid DNS name (`*.` wildcard prefix allowed).
pub fn is_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.parse::<IpAddr>().is_err()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn subject_alt_names(req: &IssueRequest) -> Result<Vec<SanType>, CertsError> {
    subject_alt_names_for(req.role, &req.name, &req.sans)
}

/// The identity URI SAN of `role`/`name`, the name as a DNS name if it is one, localhost, and
/// `extra` (IP addresses or DNS names).
fn subject_alt_names_for(
    role: Role,
    name: &str,
    extra: &[String],
) -> Result<Vec<SanType>, CertsError> {
    let mut sans = Vec::new();
    let uri = identity_uri(role, name);
    sans.push(SanType::URI(uri.clone().try_into().map_err(|e| {
        CertsError::InvalidSan {
            san: uri,
            reason: format!("{e}"),
        }
    })?));
    let mut push = |san: SanType| {
        if !sans.contains(&san) {
            sans.push(san);
        }
    };
    if is_dns_name(name) {
        push(dns_san(name)?);
    }
    push(dns_san("localhost")?);
    push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    for san in extra {
        let san = san.trim();
        if let Ok(ip) = san.parse::<IpAddr>() {
            push(SanType::IpAddress(ip));
        } else if is_dns_name(san) {
            push(dns_san(san)?);
        } else {
            return Err(CertsError::InvalidSan {
                san: san.to_owned(),
                reason: "neither an IP address nor a valid DNS name".into(),
            });
        }
    }
    Ok(sans)
}

fn dns_san(name: &str) -> Result<SanType, CertsError> {
    name.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|e| CertsError::InvalidSan {
            san: name.to_owned(),
            reason: format!("{e}"),
        })
}

/// The CA of `cert` and `key` (PEM files) as an issuer, and the CA certificate's DER; checks that
/// the certificate is a CA and the key is its own.
fn load_issuer(cert: &Path, key: &Path) -> Result<Issuer<'static, KeyPair>, CertsError> {
    load_issuer_with_der(cert, key).map(|(issuer, _)| issuer)
}

fn load_issuer_with_der(
    cert: &Path,
    key: &Path,
) -> Result<(Issuer<'static, KeyPair>, Vec<u8>), CertsError> {
    let paths = CertPaths {
        cert: cert.to_owned(),
        key: key.to_owned(),
    };
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| CertsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let key_pem = read(&paths.key)?;
    let cert_pem = read(&paths.cert)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::BadCa {
        path: paths.key.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let cert_der = first_pem_der(&cert_pem).ok_or_else(|| CertsError::BadCa {
        path: paths.cert.clone(),
        what: "certificate",
        reason: "no PEM CERTIFICATE block".into(),
    })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CertsError::BadCa {
            path: paths.cert.clone(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    if !parsed.is_ca() {
        return Err(CertsError::BadCa {
            path: paths.cert.clone(),
            what: "certificate",
            reason: "it is not a CA certificate".into(),
        });
    }
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CertsError::BadCa {
            path: paths.key.clone(),
            what: "private key",
            reason: format!("it does not belong to {}", paths.cert.display()),
        });
    }
    let issuer =
        Issuer::from_ca_cert_der(&cert_der.clone().into(), key).map_err(|e| CertsError::BadCa {
            path: paths.cert.clone(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    Ok((issuer, cert_der))
}

/// DER of the first `CERTIFICATE` block of a PEM text.
pub(crate) fn first_pem_der(pem: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

pub(crate) fn gen_err(e: rcgen::Error) -> CertsError {
    CertsError::Generate(e.to_string())
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn refuse_existing(paths: &CertPaths, force: bool) -> Result<(), CertsError> {
    if force {
        return Ok(());
    }
    for path in [&paths.key, &paths.cert] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(CertsError::Exists { path: path.clone() });
        }
    }
    Ok(())
}

/// Writes `data` to `path` with `mode`: into a new temporary file (O_EXCL, `mode` from the
/// start, so a key is never readable by others even for a moment), fsynced, then hard-linked to
/// `path` (which fails if `path` exists: no race with a concurrent writer) or, with `force`,
/// renamed over it.
pub(crate) fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    force: bool,
) -> Result<(), CertsError> {
    let werr = |p: &Path| {
        let p = p.to_owned();
        move |source| CertsError::Write { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(werr(&tmp))?;
        f.write_all(data).map_err(werr(&tmp))?;
        f.sync_all().map_err(werr(&tmp))?;
        drop(f);
        if force {
            fs::rename(&tmp, path).map_err(werr(path))
        } else {
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(CertsError::Exists {
                        path: path.to_owned(),
                    })
                }
                Err(e) => Err(werr(path)(e)),
            }
        }
    })();
    let _ = fs::remove_file(&tmp);
    if result.is_ok() {
        // Make the new directory entry durable; failure here is not worth failing the write.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    result
}

mod join;
pub use join::{
    ca_hash, cert_validity, first_pem_der_of, hex, new_key_and_csr, write_joined_files, CaSigner,
    CsrRequest, JoinError, JoinToken, MAX_TOKEN_TTL_SECS, MAX_TOKEN_USES, TOKEN_PREFIX,
};

#[cfg(test)]
mod tests;
