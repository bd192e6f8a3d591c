//! Reading who a node certificate names, and when to renew it.

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::x509::X509Name;

use super::cert_der_of_pem;
use crate::error::{Error, Result};
use crate::store::{NodeId, Role};

/// Who a node certificate names and how long it is valid. Parsing only: trust comes from
/// the handshake (or chain check) that delivered the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The node id, from the subject's `CN`.
    pub node_id: NodeId,
    /// The role, from the subject's `OU`.
    pub role: Role,
    /// The cluster id, from the subject's `O`.
    pub cluster_id: String,
    /// End of validity, unix seconds.
    pub not_after_unix: i64,
    /// Start of validity, unix seconds.
    pub not_before_unix: i64,
}

/// Reads the identity of a node certificate (DER).
pub fn identity_of_der(cert_der: &[u8]) -> Result<Identity> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::InvalidInput(format!("node certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::InvalidInput(
            "node certificate: trailing bytes after the certificate".into(),
        ));
    }
    let subject = cert.subject();
    let cn = single(subject, "CN", X509Name::iter_common_name)?;
    let ou = single(subject, "OU", X509Name::iter_organizational_unit)?;
    let o = single(subject, "O", X509Name::iter_organization)?;

    if cn.len() != 16 || !cn.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::InvalidInput(format!(
            "node certificate: CN {cn:?} is not a node id (16 lowercase hex digits)"
        )));
    }
    let node_id: NodeId = cn.parse()?;
    let role: Role = ou
        .parse()
        .map_err(|_| Error::InvalidInput(format!("node certificate: OU {ou:?} is not a role")))?;
    if o.is_empty() {
        return Err(Error::InvalidInput(
            "node certificate: O (cluster id) is empty".into(),
        ));
    }
    let validity = cert.validity();
    Ok(Identity {
        node_id,
        role,
        cluster_id: o.to_string(),
        not_after_unix: validity.not_after.timestamp(),
        not_before_unix: validity.not_before.timestamp(),
    })
}

/// Reads the identity of a node certificate (PEM; the first certificate in the text).
pub fn identity_of_pem(cert_pem: &str) -> Result<Identity> {
    identity_of_der(&cert_der_of_pem(cert_pem)?)
}

/// True when more than half of the certificate's *real* lifetime has passed (time to
/// renew). Validity starts an hour (`BACKDATE`) before issue to absorb clock skew; that
/// hour is not life the certificate had, so it does not count: counted in, a
/// certificate valid for under an hour would be "half-way" at once and renew in a loop.
pub fn needs_renewal(id: &Identity, now: SystemTime) -> bool {
    let now_unix: i128 = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => -i128::from(e.duration().as_secs()),
    };
    let after = i128::from(id.not_after_unix);
    let issued = i128::from(id.not_before_unix) + i128::from(super::BACKDATE.as_secs());
    // A certificate that is not ours (no backdate) starts at not_before at the latest.
    let issued = issued.min(after);
    let half = issued + (after - issued) / 2;
    now_unix > half
}

/// The one value of a subject attribute; an error when it is missing, repeated or not text.
fn single<'a, I>(
    name: &'a X509Name<'a>,
    label: &str,
    iter: impl Fn(&'a X509Name<'a>) -> I,
) -> Result<&'a str>
where
    I: Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
{
    let mut values = iter(name);
    let first = values.next().ok_or_else(|| {
        Error::InvalidInput(format!("node certificate: the subject has no {label}"))
    })?;
    if values.next().is_some() {
        return Err(Error::InvalidInput(format!(
            "node certificate: the subject has more than one {label}"
        )));
    }
    first
        .as_str()
        .map_err(|e| Error::InvalidInput(format!("node certificate: {label}: {e}")))
}
