//! Join tokens and certificate signing requests: how a node that has no certificate gets one
//! from the masters without the CA key ever reaching it (like kubeadm's bootstrap tokens).
//!
//! **Token.** `corral certs token` (on the host with the CA key) prints
//! `corral-join1:ROLE:EXPIRES:USES:NAME:ID:MAC:CAHASH`: the role the certificate will carry
//! (agent, framework or operator; never master), when the token expires (Unix seconds), how
//! many joins it allows, the node name it is bound to (empty: the joiner chooses), a random
//! 64-bit id (what `revoke` names), the MAC and the SHA-256 of the CA certificate's DER.
//!
//! **Why an HMAC, not a registered secret.** The MAC is HMAC-SHA-256 (truncated to 128 bits)
//! over every other field, keyed with a key derived from the CA private key (SHA-256 of a label
//! and the key's DER). Only hosts holding the CA key can make or check a token: the CA host
//! and the masters started with `--ca-key`, which need that key anyway to sign the joiner's
//! certificate. So minting a token needs no master, and the masters store no secret at all:
//! the replicated registry holds only, per token id that was used or revoked, its expiry, how
//! many joins it saw and whether it was revoked (`master_core`'s `join_tokens.rs`), which is
//! what single use and revocation need and what any new leader reads. A token whose id the
//! registry does not know is unused. Tokens live at most [`MAX_TOKEN_TTL_SECS`], so the
//! registry forgets an entry once its token has expired.
//!
//! **CA pinning.** The token carries the CA's hash, so the joiner, which has no CA certificate
//! yet, trusts a master only if the master's TLS chain includes a CA certificate with that hash
//! and the master's certificate chains to it (`transport`'s join identity); the master sends
//! the CA certificate in its chain when joins are enabled. A token of another cluster is
//! refused by the master (wrong hash) before any signing.
//!
//! **Signing.** The joiner makes its own P-256 key and sends only a CSR (its signature proves
//! possession). The master ignores everything in the CSR but its public key: the certificate's
//! role comes from the token, its name from the token or the request (checked like any node
//! name), its lifetime from the master's `--join-cert-ttl`. Renewal uses the same signing with
//! the role and name of the certificate the node authenticates with.

use crate::{
    first_pem_der, gen_err, load_issuer_with_der, subject_alt_names_for, validate_name,
    write_atomic, CertsError, BACKDATE,
};
use proto::Role;
use rcgen::{CertificateParams, CertificateSigningRequestParams, DnType, Issuer, KeyPair};
use ring::{digest, hmac, rand::SecureRandom};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use time::{Duration, OffsetDateTime};

/// The first field of every token (the format's version).
pub const TOKEN_PREFIX: &str = "corral-join1";
/// The longest a token may live: 30 days (kubeadm's default is one day).
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// The most joins one token may allow.
pub const MAX_TOKEN_USES: u32 = 1000;
/// Hex digits of the MAC in a token (128 bits).
const MAC_HEX: usize = 32;
/// Hex digits of a token id (64 bits).
const ID_HEX: usize = 16;
/// What the MAC key is derived under, so it is never the CA key's digest used elsewhere.
const KEY_LABEL: &[u8] = b"corral join-token MAC key v1\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("malformed join token: {0} (expected {TOKEN_PREFIX}:ROLE:EXPIRES:USES:NAME:ID:MAC:CAHASH, as `corral certs token` prints)")]
    Malformed(String),
    #[error("the join token is for the CA with hash sha256:{token}, but this cluster's CA is sha256:{ours}: the token belongs to another cluster")]
    WrongCa { token: String, ours: String },
    #[error("the join token was not made with this cluster's CA key (or was altered)")]
    BadMac,
    #[error("the join token {id} expired at {expired} (Unix seconds; now {now})")]
    Expired { id: String, expired: u64, now: u64 },
    #[error("the join token {id} expires too far ahead ({expires}): tokens live at most {MAX_TOKEN_TTL_SECS} s")]
    TooLong { id: String, expires: u64 },
    #[error("join tokens cannot make master certificates (masters keep `corral certs issue`)")]
    MasterRole,
    #[error("the join token is bound to the name '{bound}', not '{asked}'")]
    WrongName { bound: String, asked: String },
    #[error("invalid token request: {0}")]
    Invalid(String),
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

/// A parsed join token (syntax checked; [`CaSigner::check_token`] checks the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub role: Role,
    /// Unix seconds after which the token is refused.
    pub expires_unix: u64,
    /// How many joins it allows.
    pub uses: u32,
    /// The node name the certificate must carry; `None`: the joiner's choice.
    pub name: Option<String>,
    /// Random, public: what `corral certs token revoke` names.
    pub id: String,
    mac: String,
    /// SHA-256 of the CA certificate's DER.
    pub ca_hash: [u8; 32],
}

impl JoinToken {
    /// The text the MAC covers: every field but the MAC, in token order.
    fn signed_text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}:{}:{}:{}:{}:{}:{}",
            self.role,
            self.expires_unix,
            self.uses,
            self.name.as_deref().unwrap_or(""),
            self.id,
            hex(&self.ca_hash)
        )
    }

    /// The CA hash as `sha256:HEX`.
    pub fn ca_hash_text(&self) -> String {
        format!("sha256:{}", hex(&self.ca_hash))
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}:{}:{}:{}:{}:{}:{}:{}",
            self.role,
            self.expires_unix,
            self.uses,
            self.name.as_deref().unwrap_or(""),
            self.id,
            self.mac,
            hex(&self.ca_hash)
        )
    }
}

impl FromStr for JoinToken {
    type Err = JoinError;

    fn from_str(s: &str) -> Result<JoinToken, JoinError> {
        let bad = |m: &str| JoinError::Malformed(m.to_owned());
        let fields: Vec<&str> = s.trim().split(':').collect();
        let [prefix, role, expires, uses, name, id, mac, ca_hash] = fields.as_slice() else {
            return Err(bad(&format!("it has {} fields, not 8", fields.len())));
        };
        if *prefix != TOKEN_PREFIX {
            return Err(bad(&format!("it does not start with {TOKEN_PREFIX}")));
        }
        let role = role
            .parse::<Role>()
            .map_err(|e| JoinError::Malformed(e.to_string()))?;
        let expires_unix = expires
            .parse::<u64>()
            .map_err(|_| bad(&format!("expiry '{expires}' is not a number")))?;
        let uses = uses
            .parse::<u32>()
            .ok()
            .filter(|u| (1..=MAX_TOKEN_USES).contains(u))
            .ok_or_else(|| bad(&format!("uses '{uses}' is not 1 to {MAX_TOKEN_USES}")))?;
        let name = match *name {
            "" => None,
            n => {
                validate_name(n).map_err(|e| JoinError::Malformed(e.to_string()))?;
                Some(n.to_owned())
            }
        };
        if id.len() != ID_HEX || unhex(id).is_none() {
            return Err(bad(&format!("id '{id}' is not {ID_HEX} hex digits")));
        }
        if mac.len() != MAC_HEX || unhex(mac).is_none() {
            return Err(bad(&format!("the MAC is not {MAC_HEX} hex digits")));
        }
        let ca_hash = unhex(ca_hash)
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| bad("the CA hash is not 64 hex digits"))?;
        Ok(JoinToken {
            role,
            expires_unix,
            uses,
            name,
            id: id.to_ascii_lowercase(),
            mac: mac.to_ascii_lowercase(),
            ca_hash,
        })
    }
}

/// SHA-256 of a certificate's DER: what a token pins.
pub fn ca_hash(der: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A parsed, signature-checked certificate signing request.
pub struct CsrRequest {
    csr: CertificateSigningRequestParams,
    /// SHA-256 of the requested public key, hex: tells joins with one token apart.
    pub key_fingerprint: String,
}

/// The cluster CA as the masters use it: signs node certificates and makes and checks join
/// tokens. Holds the CA private key in memory.
pub struct CaSigner {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_hash: [u8; 32],
    mac_key: hmac::Key,
}

impl CaSigner {
    /// Loads the CA certificate and key (PEM files; the key must be the certificate's).
    pub fn load(ca_cert: &Path, ca_key: &Path) -> Result<CaSigner, CertsError> {
        let (issuer, ca_der) = load_issuer_with_der(ca_cert, ca_key)?;
        let ca_pem = std::fs::read_to_string(ca_cert).map_err(|source| CertsError::Read {
            path: ca_cert.to_owned(),
            source,
        })?;
        let key_pem = std::fs::read_to_string(ca_key).map_err(|source| CertsError::Read {
            path: ca_key.to_owned(),
            source,
        })?;
        let key_der = x509_parser::pem::parse_x509_pem(key_pem.as_bytes())
            .map(|(_, p)| p.contents)
            .map_err(|e| CertsError::BadCa {
                path: ca_key.to_owned(),
                what: "private key",
                reason: e.to_string(),
            })?;
        let mut material = KEY_LABEL.to_vec();
        material.extend_from_slice(&key_der);
        let derived = digest::digest(&digest::SHA256, &material);
        Ok(CaSigner {
            issuer,
            ca_pem,
            ca_hash: ca_hash(&ca_der),
            mac_key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        })
    }

    /// The CA certificate (PEM) joiners receive.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// SHA-256 of the CA certificate's DER.
    pub fn ca_hash(&self) -> [u8; 32] {
        self.ca_hash
    }

    fn mac(&self, token: &JoinToken) -> String {
        let tag = hmac::sign(&self.mac_key, token.signed_text().as_bytes());
        hex(&tag.as_ref()[..MAC_HEX / 2])
    }

    /// A new token for `role` living `ttl_secs` from `now_unix`, allowing `uses` joins, bound
    /// to `name` if given.
    pub fn mint_token(
        &self,
        role: Role,
        ttl_secs: u64,
        uses: u32,
        name: Option<String>,
        now_unix: u64,
    ) -> Result<JoinToken, JoinError> {
        if role == Role::Master {
            return Err(JoinError::MasterRole);
        }
        if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
            return Err(JoinError::Invalid(format!(
                "--ttl must be 1 s to {MAX_TOKEN_TTL_SECS} s (30 days)"
            )));
        }
        if !(1..=MAX_TOKEN_USES).contains(&uses) {
            return Err(JoinError::Invalid(format!(
                "--uses must be 1 to {MAX_TOKEN_USES}"
            )));
        }
        if let Some(n) = &name {
            validate_name(n).map_err(|e| JoinError::Invalid(e.to_string()))?;
        }
        let mut id = [0u8; ID_HEX / 2];
        ring::rand::SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| JoinError::Invalid("the system has no randomness".into()))?;
        let mut token = JoinToken {
            role,
            expires_unix: now_unix + ttl_secs,
            uses,
            name,
            id: hex(&id),
            mac: String::new(),
            ca_hash: self.ca_hash,
        };
        token.mac = self.mac(&token);
        Ok(token)
    }

    /// Checks that `token` was made with this CA's key for this CA, is not for a master, and
    /// has not expired at `now_unix`. (Whether it was used up or revoked is the registry's.)
    pub fn check_token(&self, token: &JoinToken, now_unix: u64) -> Result<(), JoinError> {
        if token.ca_hash != self.ca_hash {
            return Err(JoinError::WrongCa {
                token: hex(&token.ca_hash),
                ours: hex(&self.ca_hash),
            });
        }
        let expected = self.mac(token);
        if !same_bytes(expected.as_bytes(), token.mac.as_bytes()) {
            return Err(JoinError::BadMac);
        }
        if token.role == Role::Master {
            return Err(JoinError::MasterRole);
        }
        if now_unix >= token.expires_unix {
            return Err(JoinError::Expired {
                id: token.id.clone(),
                expired: token.expires_unix,
                now: now_unix,
            });
        }
        if token.expires_unix > now_unix + MAX_TOKEN_TTL_SECS {
            return Err(JoinError::TooLong {
                id: token.id.clone(),
                expires: token.expires_unix,
            });
        }
        Ok(())
    }

    /// Parses a CSR (PEM) and checks its signature (the requester holds the key).
    pub fn parse_csr(&self, csr_pem: &str) -> Result<CsrRequest, JoinError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| JoinError::Csr(e.to_string()))?;
        let key_fingerprint = hex(&ca_hash(rcgen::PublicKeyData::der_bytes(&csr.public_key)));
        Ok(CsrRequest {
            csr,
            key_fingerprint,
        })
    }

    /// A certificate (PEM) for the CSR's key, carrying `role` and `name`, valid from now (less
    /// [`BACKDATE`]) for `ttl_secs`. Nothing of the CSR but its key is used.
    pub fn sign(
        &self,
        csr: &CsrRequest,
        role: Role,
        name: &str,
        ttl_secs: u64,
    ) -> Result<String, JoinError> {
        validate_name(name).map_err(|e| JoinError::Invalid(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let ttl = i64::try_from(ttl_secs).map_err(|_| JoinError::Sign("ttl too long".into()))?;
        let sans =
            subject_alt_names_for(role, name, &[]).map_err(|e| JoinError::Sign(e.to_string()))?;
        let params = crate::leaf_params(
            role,
            name,
            sans,
            now - BACKDATE,
            now + Duration::seconds(ttl),
        );
        params
            .signed_by(&csr.csr.public_key, &self.issuer)
            .map(|c| c.pem())
            .map_err(|e| JoinError::Sign(e.to_string()))
    }
}

/// A new private key (PEM, never leaves this host) and a CSR for it naming `name` (PEM).
pub fn new_key_and_csr(name: &str) -> Result<(String, String), CertsError> {
    validate_name(name)?;
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params.serialize_request(&key).map_err(gen_err)?;
    Ok((key.serialize_pem(), csr.pem().map_err(gen_err)?))
}

/// The DER of the first certificate of a PEM text.
pub fn first_pem_der_of(pem: &str) -> Result<Vec<u8>, CertsError> {
    first_pem_der(pem).ok_or_else(|| CertsError::Parse("no PEM CERTIFICATE block".into()))
}

/// The validity of a certificate (PEM): not before and not after, in Unix seconds.
pub fn cert_validity(cert_pem: &str) -> Result<(i64, i64), CertsError> {
    let der = first_pem_der_of(cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| CertsError::Parse(e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Writes what a join or renewal returned: the CA certificate (0644; a renewal passes `None`
/// and keeps its CA file), then the new private key (0600), then the certificate (0644), each
/// atomically, replacing what was there. A crash
/// between the key and the certificate leaves a pair that does not match: the node then
/// refuses to start and says so, and joins again with a new token.
pub fn write_joined_files(
    ca: Option<&Path>,
    cert: &Path,
    key: &Path,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), CertsError> {
    for path in ca.into_iter().chain([cert, key]) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
                path: dir.to_owned(),
                source,
            })?;
        }
    }
    if let Some(ca) = ca {
        write_atomic(ca, ca_pem.as_bytes(), 0o644, true)?;
    }
    write_atomic(key, key_pem.as_bytes(), 0o600, true)?;
    write_atomic(cert, cert_pem.as_bytes(), 0o644, true)
}

/// Equality that does not stop at the first difference (no timing hint about a MAC's prefix).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase hex of `bytes` (how tokens and messages write hashes).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
