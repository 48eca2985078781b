//! Loading our identity from PEM files and building the rustls configurations, including the
//! two certificate verifiers that turn "chains to our CA" into "is this role and name".

use crate::error::TransportError;
use proto::{PeerIdentity, Role};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The three PEM files a node needs: the cluster CA, its own certificate (chain) and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Our TLS identity: the CA roots we trust, our certificate chain and private key, and who the
/// certificate says we are.
///
/// Clones share the *current* client certificate: [`Identity::reload`] swaps it for every
/// clone, so endpoints made afterwards (every new connection of a client: see
/// `session::open_session`) present the renewed certificate while open connections go on.
/// A joining node has an identity without a certificate that trusts a pinned CA instead of a
/// CA file ([`Identity::joining`]).
#[derive(Clone)]
pub struct Identity {
    roots: Arc<RootCertStore>,
    /// The CA file's certificates, which a master accepting joins appends to its own chain so
    /// that a joining node can pin the CA by its hash.
    ca_certs: Vec<CertificateDer<'static>>,
    /// A joining node's trust: the SHA-256 of the CA certificate the server must present.
    pin: Option<[u8; 32]>,
    /// Our chain and key as loaded (a server's certificate: masters do not renew).
    chain: Vec<CertificateDer<'static>>,
    key: Option<Arc<PrivateKeyDer<'static>>>,
    /// What client connections present; swapped by [`Identity::reload`].
    current: Arc<CurrentCert>,
    peer: PeerIdentity,
    files: TlsFiles,
}

/// The client certificate of an identity and its clones, replaceable while in use.
#[derive(Debug)]
struct CurrentCert(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().and_then(|c| c.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer", &self.peer)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The crypto provider every configuration in this crate uses: ring, explicitly, so that nothing
/// depends on (or panics for lack of) a process-wide default.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// Loads and checks the three files: the CA file must hold at least one certificate, the
    /// key must match the certificate, the certificate must carry a corral identity, chain to the
    /// CA and be within its validity period. Errors name the file and the problem.
    pub fn load(files: &TlsFiles) -> Result<Identity, TransportError> {
        let id = Self::load_unverified(files)?;
        id.check_own_chain()?;
        Ok(id)
    }

    /// Like [`Identity::load`] but does not check that our certificate chains to the CA or is
    /// currently valid. For tests that must present a bad certificate (expired, another CA) to
    /// prove the other side refuses it.
    pub fn load_unverified(files: &TlsFiles) -> Result<Identity, TransportError> {
        let ca_certs = read_certs(&files.ca, "CA")?;
        let mut roots = RootCertStore::empty();
        for (i, der) in ca_certs.iter().enumerate() {
            roots.add(der.clone()).map_err(|e| {
                TransportError::file(
                    &files.ca,
                    format!("CA certificate #{} is not usable: {e}", i + 1),
                )
            })?;
        }
        let chain = read_certs(&files.cert, "node")?;
        let key_pem = read_file(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            TransportError::file(&files.key, format!("no usable PEM private key: {e}"))
        })?;
        let provider = provider();
        let certified =
            CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
                TransportError::file(
                    &files.key,
                    format!(
                        "this key does not belong to the certificate in {}: {e}",
                        files.cert.display()
                    ),
                )
            })?;
        let peer = certs::identity_from_cert_der(&chain[0])
            .map_err(|e| TransportError::file(&files.cert, e.to_string()))?;
        Ok(Identity {
            roots: Arc::new(roots),
            ca_certs,
            pin: None,
            chain,
            key: Some(Arc::new(key)),
            current: Arc::new(CurrentCert(RwLock::new(Some(Arc::new(certified))))),
            peer,
            files: files.clone(),
        })
    }

    /// Secret material for the QUIC stateless-reset key of a server with this identity: the
    /// same across restarts (derived from our private key), so that a restarted master can
    /// reset the connections its previous process had (see `endpoint::server_endpoint_config`).
    /// `None` without a private key.
    pub(crate) fn stateless_reset_secret(&self) -> Option<[u8; 32]> {
        let key = self.key.as_ref()?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"corral/quic-stateless-reset/v1\0");
        ctx.update(key.secret_der());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Some(out)
    }

    /// The identity of a node that is joining: no certificate yet, and instead of a CA file it
    /// trusts a server whose TLS chain holds a CA certificate with SHA-256 `ca_hash` (from the
    /// join token) and whose own certificate chains to that CA. `peer` is who it asks to be.
    /// Only a master that accepts joins ([`crate::server_endpoint_accepting_joins`]) sends its
    /// CA in its chain; any other server fails the handshake.
    pub fn joining(ca_hash: [u8; 32], peer: PeerIdentity) -> Identity {
        Identity {
            roots: Arc::new(RootCertStore::empty()),
            ca_certs: Vec::new(),
            pin: Some(ca_hash),
            chain: Vec::new(),
            key: None,
            current: Arc::new(CurrentCert(RwLock::new(None))),
            peer,
            files: TlsFiles {
                ca: PathBuf::new(),
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
        }
    }

    /// Reads our files again (a renewed certificate and key) and, if they are valid under our
    /// CA and name the same role and name, makes them the certificate every clone presents on
    /// new connections. Open connections are not touched.
    pub fn reload(&self) -> Result<(), TransportError> {
        let fresh = Identity::load(&self.files)?;
        if fresh.peer != self.peer {
            return Err(TransportError::file(
                &self.files.cert,
                format!(
                    "the renewed certificate is for {}, not {}",
                    fresh.peer, self.peer
                ),
            ));
        }
        let cert = fresh
            .current
            .0
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| {
                TransportError::Tls("the reloaded identity has no certificate".into())
            })?;
        let mut slot = self
            .current
            .0
            .write()
            .map_err(|_| TransportError::Tls("the certificate slot is poisoned".into()))?;
        *slot = Some(cert);
        Ok(())
    }

    /// Who *we* are, from our own certificate.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The files this identity was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn check_own_chain(&self) -> Result<(), TransportError> {
        let verifier = self.webpki_server_verifier()?;
        let name = ServerName::try_from("corral.invalid")
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        match verifier.verify_server_cert(
            &self.chain[0],
            &self.chain[1..],
            &name,
            &[],
            UnixTime::now(),
        ) {
            Ok(_) => Ok(()),
            Err(rustls::Error::InvalidCertificate(e)) if is_name_mismatch(&e) => Ok(()),
            Err(e) => Err(TransportError::file(
                &self.files.cert,
                format!(
                    "this certificate is not valid under the CA in {}: {}",
                    self.files.ca.display(),
                    describe_rustls_error(&e)
                ),
            )),
        }
    }

    fn webpki_server_verifier(&self) -> Result<Arc<WebPkiServerVerifier>, TransportError> {
        webpki_server_verifier(self.roots.clone())
    }

    /// The rustls server configuration: TLS 1.3, our chain, a client certificate chaining to our
    /// CA and carrying a corral identity, ALPN [`proto::ALPN`], no resumption. With
    /// `accept_joins` a client may present no certificate (the master then lets it make only
    /// the join call) and our chain ends with the CA certificates, for joining nodes to pin.
    pub(crate) fn server_tls_config(
        &self,
        accept_joins: bool,
    ) -> Result<rustls::ServerConfig, TransportError> {
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TransportError::Tls(format!("cannot build the client verifier: {e}")))?;
        let verifier = Arc::new(CorralClientVerifier {
            inner,
            mandatory: !accept_joins,
            algorithms: provider().signature_verification_algorithms,
        });
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| TransportError::Tls("a joining identity cannot serve".into()))?;
        let mut chain = self.chain.clone();
        if accept_joins {
            chain.extend(
                self.ca_certs
                    .iter()
                    .filter(|c| !self.chain.contains(c))
                    .cloned(),
            );
        }
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key.clone_key())
            .map_err(|e| TransportError::Tls(format!("cannot use our certificate: {e}")))?;
        tls.alpn_protocols = vec![proto::ALPN.to_vec()];
        // A resumed session skips certificate verification; every connection must present and
        // have checked a current certificate, so no tickets and no session cache.
        tls.send_tls13_tickets = 0;
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.max_early_data_size = 0;
        Ok(tls)
    }

    /// The rustls client configuration. The role and name the server must have are not part of
    /// it: [`crate::connect`] encodes them in the TLS server name (see [`expectation_server_name`])
    /// and the verifier reads them from there, so one configuration serves every connection of
    /// an endpoint. The client certificate is the identity's current one (see
    /// [`Identity::reload`]). This crate's tests may change the result (for example its ALPN:
    /// see `transport::raw`) and pass it to `transport::raw::connect_with_config`.
    pub(crate) fn client_tls_config(&self) -> Result<rustls::ClientConfig, TransportError> {
        let trust = match self.pin {
            Some(hash) => ServerTrust::Pinned(hash),
            None => ServerTrust::Roots(self.webpki_server_verifier()?),
        };
        let resolver: Arc<dyn ResolvesClientCert> = self.current.clone();
        client_tls_config(trust, Some(resolver))
    }
}

fn webpki_server_verifier(
    roots: Arc<RootCertStore>,
) -> Result<Arc<WebPkiServerVerifier>, TransportError> {
    WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TransportError::Tls(format!("cannot build the server verifier: {e}")))
}

/// The client configuration of a peer trusting `trust` and presenting what `cert` resolves
/// (none: only tests, to prove that servers refuse such a client).
fn client_tls_config(
    trust: ServerTrust,
    cert: Option<Arc<dyn ResolvesClientCert>>,
) -> Result<rustls::ClientConfig, TransportError> {
    let provider = provider();
    let verifier = Arc::new(CorralServerVerifier {
        trust,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match cert {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![proto::ALPN.to_vec()];
    // See server_tls_config: no resumption, so every handshake verifies certificates.
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    Ok(tls)
}

/// [`Identity::client_tls_config`] without a client certificate, trusting the CA in `ca`.
pub(crate) fn anonymous_client_tls_config(
    ca: &Path,
) -> Result<rustls::ClientConfig, TransportError> {
    let mut roots = RootCertStore::empty();
    for (i, der) in read_certs(ca, "CA")?.into_iter().enumerate() {
        roots.add(der).map_err(|e| {
            TransportError::file(ca, format!("CA certificate #{} is not usable: {e}", i + 1))
        })?;
    }
    client_tls_config(
        ServerTrust::Roots(webpki_server_verifier(Arc::new(roots))?),
        None,
    )
}

/// Suffix of the TLS server names that carry an expected identity. `.invalid` is reserved
/// (RFC 2606): these names are never looked up.
const EXPECT_SUFFIX: &str = ".corral.invalid";
/// Hex digits per DNS label when encoding an expected name (labels hold at most 63).
const HEX_LABEL: usize = 60;

/// The TLS server name `connect` uses: `[HEX(NAME) labels.]ROLE.corral.invalid`. Corral peers
/// are identified by their `corral://ROLE/NAME` SAN, not by DNS, so the server name field is
/// used to hand the expected identity to the certificate verifier. The name is hex-encoded
/// because node names may hold characters or lengths that a DNS label cannot.
pub fn expectation_server_name(role: Role, name: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(name) = name {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        for chunk in hex.as_bytes().chunks(HEX_LABEL) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('.');
        }
    }
    out.push_str(role.as_str());
    out.push_str(EXPECT_SUFFIX);
    out
}

/// The inverse of [`expectation_server_name`]; `None` for any other server name.
pub fn parse_expectation(server_name: &str) -> Option<(Role, Option<String>)> {
    let rest = server_name.strip_suffix(EXPECT_SUFFIX)?;
    let (hex, role) = match rest.rsplit_once('.') {
        Some((hex, role)) => (Some(hex), role),
        None => (None, rest),
    };
    let role = role.parse::<Role>().ok()?;
    let name = match hex {
        None => None,
        Some(hex) => {
            let hex: Vec<u8> = hex.bytes().filter(|b| *b != b'.').collect();
            let pairs = hex.chunks_exact(2);
            if !pairs.remainder().is_empty() {
                return None;
            }
            let bytes = pairs
                .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some(String::from_utf8(bytes).ok()?)
        }
    };
    Some((role, name))
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| TransportError::file(path, format!("cannot read: {e}")))
}

pub(crate) fn read_certs(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::file(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TransportError::file(
            path,
            format!("contains no PEM CERTIFICATE block (expected the {what} certificate)"),
        ));
    }
    Ok(certs)
}

/// Whether a webpki error only says the certificate does not name the TLS server name we
/// passed. Corral peers are identified by their `corral://` URI SAN, not by DNS, and webpki
/// checks the name only after the chain and validity have passed (rustls
/// `WebPkiServerVerifier::verify_server_cert`), so this one error is safe to ignore.
fn is_name_mismatch(e: &CertificateError) -> bool {
    matches!(
        e,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
    )
}

pub(crate) fn describe_rustls_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => describe_cert_error(c),
        other => other.to_string(),
    }
}

fn describe_cert_error(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            format!("it is not signed by our cluster CA ({e:?})")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("it has expired ({e})")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("it is not valid yet ({e})")
        }
        CertificateError::Other(o) => o.to_string(),
        other => other.to_string(),
    }
}

/// Wrong role or name in an otherwise valid certificate.
#[derive(Debug)]
struct IdentityMismatch(String);

impl fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityMismatch {}

/// Checks a verified peer identity against what the caller asked for.
pub(crate) fn check_expected(
    id: &PeerIdentity,
    role: Role,
    name: Option<&str>,
) -> Result<(), String> {
    if id.role != role {
        return Err(format!(
            "expected a {role} certificate, the peer presented one for {id}"
        ));
    }
    match name {
        Some(name) if id.name != name => Err(format!(
            "expected the certificate of {role} '{name}', the peer presented one for {id}"
        )),
        _ => Ok(()),
    }
}

fn identity_rejected(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        IdentityMismatch(msg),
    ))))
}

/// The handshake signature checks, the same for both verifiers: by the provider's algorithms
/// (`self.algorithms`); only the certificate checks differ.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// What a client trusts a server's chain to: the CA file's roots, or (a joining node) the CA
/// certificate with a pinned hash that the server itself presents in its chain.
#[derive(Debug)]
enum ServerTrust {
    Roots(Arc<WebPkiServerVerifier>),
    Pinned([u8; 32]),
}

/// Client side: the server's chain and validity are checked by webpki against our CA (or the
/// pinned CA, see [`ServerTrust`]); the server name is not (see [`is_name_mismatch`]); then the
/// `corral://ROLE/NAME` SAN must name the role (and name) that the server name carries (see
/// [`expectation_server_name`]). A server name that carries no expectation is refused, so an
/// endpoint's default configuration cannot be used by accident to reach "whoever answers".
#[derive(Debug)]
struct CorralServerVerifier {
    trust: ServerTrust,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl CorralServerVerifier {
    /// The webpki verifier of our trust: for a pinned CA, one whose root is the certificate of
    /// the server's chain with the pinned hash.
    fn webpki(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let hash = match &self.trust {
            ServerTrust::Roots(v) => return Ok(v.clone()),
            ServerTrust::Pinned(hash) => hash,
        };
        let ca = intermediates
            .iter()
            .find(|c| certs::ca_hash(c.as_ref()) == *hash)
            .ok_or_else(|| {
                identity_rejected(format!(
                    "the master did not present the CA certificate sha256:{} that the join \
                     token pins: it belongs to another cluster, or was not started with --ca-key",
                    certs::hex(hash)
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| identity_rejected(format!("the pinned CA is not usable: {e}")))?;
        webpki_server_verifier(Arc::new(roots)).map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for CorralServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki(intermediates)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(e)) if is_name_mismatch(&e) => {}
            Err(e) => return Err(e),
        }
        let expected = match server_name {
            ServerName::DnsName(d) => parse_expectation(d.as_ref()),
            _ => None,
        };
        let Some((role, name)) = expected else {
            return Err(rustls::Error::General(format!(
                "server name {server_name:?} carries no expected corral identity; \
                 connect with transport::connect"
            )));
        };
        let id = certs::identity_from_cert_der(end_entity)
            .map_err(|e| identity_rejected(e.to_string()))?;
        check_expected(&id, role, name.as_deref()).map_err(identity_rejected)?;
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!();
}

/// Server side: webpki's client verifier (certificate required, chains to our CA, valid now,
/// clientAuth EKU), plus the certificate must carry a corral identity so that
/// [`crate::peer_identity`] cannot fail on an accepted connection.
/// Not mandatory on a master accepting joins: a client without a certificate then connects,
/// and the master lets it make only the join call.
#[derive(Debug)]
struct CorralClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    mandatory: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for CorralClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        certs::identity_from_cert_der(end_entity).map_err(|e| identity_rejected(e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    signature_checks!();
}
