//! The root CA: generating it, loading it, and signing node CSRs.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::{cert_der_of_pem, digest_of_der, SERVER_NAME};
use crate::error::{Error, Result};
use crate::store::{NodeId, Role};

/// The common name of every orc root certificate.
const ROOT_COMMON_NAME: &str = "orc root CA";

/// How long a root certificate is valid: 20 years of 365.25 days.
const ROOT_VALIDITY: Duration = Duration::from_secs(7305 * 24 * 60 * 60);

/// How far in the past a certificate's validity starts, to absorb clock skew.
pub(crate) const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The cluster's root certificate authority: its certificate and private key.
///
/// Not `Clone` (the signing key is not); share it behind an `Arc`.
pub struct RootCa {
    /// The self-signed root certificate, PEM.
    cert_pem: String,
    /// The root's private key, PKCS#8 PEM.
    key_pem: String,
    /// The digest of the root certificate, computed once.
    digest: String,
    /// The subject and key that sign node certificates.
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest)
            .field("key", &"[elided]")
            .finish()
    }
}

impl RootCa {
    /// Makes a new root: ECDSA P-256, `CN=orc root CA, O=<cluster_id>`, valid for 20 years
    /// from `now` (and one hour before it).
    pub fn generate(cluster_id: &str, now: SystemTime) -> Result<RootCa> {
        RootCa::generate_named(cluster_id, ROOT_COMMON_NAME, now)
    }

    /// [`RootCa::generate`] with another common name (a rotation's new root is
    /// `orc root CA 2`, 3, ...: two roots of one cluster never share a subject).
    pub fn generate_named(cluster_id: &str, common_name: &str, now: SystemTime) -> Result<RootCa> {
        if cluster_id.is_empty() {
            return Err(Error::InvalidInput("cluster id: must not be empty".into()));
        }
        let key = KeyPair::generate().map_err(|e| internal("generating the root key", e))?;
        let params = root_params(
            common_name,
            cluster_id,
            offset_time(now, BACKDATE, false)?,
            offset_time(now, ROOT_VALIDITY, true)?,
        );
        let cert = params
            .self_signed(&key)
            .map_err(|e| internal("signing the root certificate", e))?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let digest = digest_of_der(cert.der());
        Ok(RootCa {
            cert_pem,
            key_pem,
            digest,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a root from its certificate and key (PEM), checking that the certificate is a
    /// CA and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa> {
        let der = cert_der_of_pem(cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::InvalidInput(format!("root CA certificate: {e}")))?;
        if !cert.is_ca() {
            return Err(Error::InvalidInput(
                "root CA certificate: not a CA certificate".into(),
            ));
        }
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| Error::InvalidInput(format!("root CA key: {e}")))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(Error::InvalidInput(
                "root CA key: does not belong to the root CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| Error::InvalidInput(format!("root CA certificate: {e}")))?;
        Ok(RootCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            digest: digest_of_der(&der),
            issuer,
        })
    }

    /// This root's certificate signed by `old` instead of by itself: the same subject,
    /// key and validity, with `old` as issuer. During a rotation, a node that trusts only
    /// the old root verifies a certificate of the new one through it
    /// (leaf → this → old root).
    pub fn cross_signed_by(&self, old: &RootCa) -> Result<String> {
        let der = cert_der_of_pem(&self.cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::InvalidInput(format!("root CA certificate: {e}")))?;
        let field = |it: Option<&x509_parser::x509::AttributeTypeAndValue>| {
            it.and_then(|a| a.as_str().ok()).map(str::to_string)
        };
        let subject = cert.subject();
        let cn = field(subject.iter_common_name().next())
            .ok_or_else(|| Error::InvalidInput("root CA certificate: no CN".into()))?;
        let o = field(subject.iter_organization().next())
            .ok_or_else(|| Error::InvalidInput("root CA certificate: no O".into()))?;
        let validity = cert.validity();
        let time = |t: i64| {
            OffsetDateTime::from_unix_timestamp(t)
                .map_err(|_| Error::InvalidInput("root CA certificate: validity".into()))
        };
        let params = root_params(
            &cn,
            &o,
            time(validity.not_before.timestamp())?,
            time(validity.not_after.timestamp())?,
        );
        let key = KeyPair::from_pem(&self.key_pem)
            .map_err(|e| Error::InvalidInput(format!("root CA key: {e}")))?;
        let cross = params
            .signed_by(&key, &old.issuer)
            .map_err(|e| internal("cross-signing the new root", e))?;
        Ok(cross.pem())
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root's private key, PEM. Handle with care: whoever has it can mint nodes.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The digest of the root certificate (see [`super::digest_of_pem`]), as pinned by
    /// join tokens.
    pub fn digest(&self) -> String {
        self.digest.clone()
    }

    /// Signs a node CSR (PEM). The subject is set by the CA, not taken from the CSR:
    /// `CN` = node id (16 hex, [`NodeId`]'s `Display`), `OU` = role (`manager`/`worker`),
    /// `O` = cluster id. SAN: DNS name [`SERVER_NAME`]. Key usages for both TLS server and
    /// client auth. Valid from `now - 1h` to `now + validity`. Returns the certificate, PEM.
    pub fn issue(
        &self,
        csr_pem: &str,
        node: NodeId,
        role: Role,
        cluster_id: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<String> {
        if cluster_id.is_empty() {
            return Err(Error::InvalidInput("cluster id: must not be empty".into()));
        }
        if validity.is_zero() {
            return Err(Error::InvalidInput(
                "certificate validity: must be more than zero".into(),
            ));
        }
        // Parsing also checks the CSR's self-signature: the requester holds the key.
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::InvalidInput(format!("certificate signing request: {e}")))?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.to_string());
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        let server_name = SERVER_NAME
            .try_into()
            .map_err(|e| internal("encoding the server name", e))?;
        params.subject_alt_names = vec![SanType::DnsName(server_name)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = offset_time(now, BACKDATE, false)?;
        params.not_after = offset_time(now, validity, true)?;

        // Only the public key of the request is used.
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = signed
            .signed_by(&self.issuer)
            .map_err(|e| internal("signing the node certificate", e))?;
        Ok(cert.pem())
    }
}

/// The parameters of a root: `CN=<common_name>, O=<cluster_id>`, a CA that may sign
/// end-entity certificates only, a fresh random serial.
fn root_params(
    common_name: &str,
    cluster_id: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = false;
    params.serial_number = Some(random_serial());
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// Makes a node's key pair (ECDSA P-256) and a CSR for it; returns `(key PEM, CSR PEM)`.
/// The CSR's subject is a placeholder: the CA writes the real one.
pub fn new_key_and_csr() -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(|e| internal("generating a node key", e))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "orc node");
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| internal("making a certificate signing request", e))?;
    let csr_pem = csr
        .pem()
        .map_err(|e| internal("encoding a certificate signing request", e))?;
    Ok((key.serialize_pem(), csr_pem))
}

/// A random positive 128-bit serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[0] &= 0x7f;
    // A leading zero byte would be dropped by DER; keep the length fixed.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// `now + by` (`later`) or `now - by`, as an `OffsetDateTime`, without panicking.
fn offset_time(now: SystemTime, by: Duration, later: bool) -> Result<OffsetDateTime> {
    let shifted = if later {
        now.checked_add(by)
    } else {
        now.checked_sub(by)
    }
    .ok_or_else(|| Error::InvalidInput("certificate validity: out of range".into()))?;
    let secs: i64 = match shifted.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(e) => i64::try_from(e.duration().as_secs()).ok().map(|s| -s),
    }
    .ok_or_else(|| Error::InvalidInput("certificate validity: out of range".into()))?;
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| Error::InvalidInput("certificate validity: out of range".into()))
}

/// An internal error from the certificate library, with what was being done.
fn internal(doing: &str, e: impl fmt::Display) -> Error {
    Error::Internal(format!("{doing}: {e}"))
}
