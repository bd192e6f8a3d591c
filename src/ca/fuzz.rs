//! Hostile certificate requests and certificates: a joining stranger (once it holds the
//! secret) and every renewing node hand the CA a CSR, and a node reads the
//! certificate a manager sends back. [`RootCa::issue`] must refuse arbitrary text and
//! damaged DER, or issue a certificate that names exactly the node, role and cluster
//! the CA was given, for the CSR's key, whatever else the request asked for;
//! [`identity_of_der`] must refuse or read any bytes without a panic.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;
use crate::fuzz;
use crate::store::{NodeId, Role};

const CLUSTER: &str = "c0ffee";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Bytes that mean something in DER: the tags of SEQUENCE, INTEGER, BIT STRING, OCTET
/// STRING, NULL, OID, SET and context tags; long-form length prefixes; 0 and 0xFF.
const DER_BYTES: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x30, 0x31, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84,
    0x88, 0xA0, 0xA3, 0xFF,
];

/// DER as PEM, with a base64 written here (no crate of the build offers one).
fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut body = String::new();
    for chunk in der.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                body.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                body.push('=');
            }
        }
    }
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn csr_der(csr_pem: &str) -> Vec<u8> {
    CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .expect("a PEM CSR")
        .to_vec()
}

/// Issues for node 7, worker, and checks what came back: the CA's subject, its
/// server name only, not a CA, and the key of `csr_der`.
fn issue_checked(ca: &RootCa, csr_der: &[u8]) -> Result<()> {
    let cert_pem = ca.issue(
        &pem("CERTIFICATE REQUEST", csr_der),
        NodeId(7),
        Role::Worker,
        CLUSTER,
        90 * DAY,
        SystemTime::now(),
    )?;
    let id = identity_of_pem(&cert_pem).expect("an issued certificate reads");
    assert_eq!(
        (id.node_id, id.role, id.cluster_id.as_str()),
        (NodeId(7), Role::Worker, CLUSTER)
    );
    let der = cert_der_of_pem(&cert_pem).expect("PEM");
    let (_, cert) = X509Certificate::from_der(&der).expect("DER");
    let (_, csr) = X509CertificationRequest::from_der(csr_der).expect("the CSR issued parses");
    assert_eq!(
        cert.public_key().raw,
        csr.certification_request_info.subject_pki.raw,
        "the CSR's key"
    );
    let ca_flag = cert
        .basic_constraints()
        .expect("one basic constraints at most")
        .is_some_and(|b| b.value.ca);
    assert!(!ca_flag, "a node certificate is no CA");
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .expect("one SAN extension")
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => d.to_string(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(sans, vec![SERVER_NAME.to_string()]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_no_csr(text in "\\PC{0,300}") {
        let ca = RootCa::generate(CLUSTER, SystemTime::now()).expect("a CA");
        let r = ca.issue(&text, NodeId(7), Role::Worker, CLUSTER, DAY, SystemTime::now());
        prop_assert!(r.is_err());
    }

    #[test]
    fn damaged_csrs_are_refused_or_issued_for_the_given_node_only(
        edits in fuzz::edits(DER_BYTES, 4),
    ) {
        let ca = RootCa::generate(CLUSTER, SystemTime::now()).expect("a CA");
        let (_, csr_pem) = new_key_and_csr().expect("a CSR");
        let _ = issue_checked(&ca, &fuzz::apply(csr_der(&csr_pem), &edits));
    }

    #[test]
    fn signed_requests_for_any_subject_get_the_subject_the_ca_writes(
        cn in "\\PC{1,20}",
        ou in prop_oneof![Just("manager".to_string()), "\\PC{1,12}"],
        o in "\\PC{1,20}",
        sans in proptest::collection::vec("[a-z0-9.-]{1,20}", 0..3),
        ca_flag in any::<bool>(),
    ) {
        let ca = RootCa::generate(CLUSTER, SystemTime::now()).expect("a CA");
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(sans).expect("SANs");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationalUnitName, ou);
        dn.push(DnType::OrganizationName, o);
        params.distinguished_name = dn;
        if ca_flag {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let csr = params.serialize_request(&key).expect("a CSR");
        prop_assert!(issue_checked(&ca, csr.der()).is_ok());
    }

    #[test]
    fn certificates_of_any_bytes_are_refused_or_read(
        data in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        prop_assert!(identity_of_der(&data).is_err());
    }

    #[test]
    fn damaged_certificates_are_refused_or_read(edits in fuzz::edits(DER_BYTES, 4)) {
        let ca = RootCa::generate(CLUSTER, SystemTime::now()).expect("a CA");
        let (_, csr_pem) = new_key_and_csr().expect("a CSR");
        let cert_pem = ca
            .issue(&csr_pem, NodeId(7), Role::Manager, CLUSTER, DAY, SystemTime::now())
            .expect("issued");
        let der = cert_der_of_pem(&cert_pem).expect("PEM").to_vec();
        let _ = identity_of_der(&fuzz::apply(der, &edits));
    }
}

#[test]
fn a_valid_csr_is_issued() {
    let ca = RootCa::generate(CLUSTER, SystemTime::now()).expect("a CA");
    let (_, csr_pem) = new_key_and_csr().expect("a CSR");
    issue_checked(&ca, &csr_der(&csr_pem)).expect("issued");
}

#[test]
fn a_csr_asking_for_a_manager_ca_certificate_gets_a_worker_leaf() {
    let ca = RootCa::generate(CLUSTER, SystemTime::now()).expect("a CA");
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["evil.example".to_string()]).expect("SANs");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "0000000000000001");
    dn.push(DnType::OrganizationalUnitName, "manager");
    dn.push(DnType::OrganizationName, "another-cluster");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).expect("a CSR");
    issue_checked(&ca, csr.der()).expect("issued, as the CA says");
}
