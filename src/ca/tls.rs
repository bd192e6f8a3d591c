//! rustls configurations for the cluster port: mTLS between members, and the pinned,
//! certificate-less client of a joining node.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use serde::{Deserialize, Serialize};

use super::{cert_der_of_pem, digest_of_der, identity_of_pem, Identity};
use crate::error::{Error, Result};
use crate::store::Role;

/// The ALPN protocol of the cluster port: HTTP/2, for gRPC.
pub const ALPN_H2: &[u8] = b"h2";

/// What a node holds once it has joined: the root cert, its own cert and key (PEM).
#[derive(Clone, Serialize, Deserialize)]
pub struct NodeCredentials {
    /// The cluster's root CA certificate, PEM.
    pub ca_cert_pem: String,
    /// This node's certificate, signed by the root, PEM.
    pub cert_pem: String,
    /// This node's private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity().ok())
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl NodeCredentials {
    /// The identity named by this node's certificate.
    pub fn identity(&self) -> Result<Identity> {
        identity_of_pem(&self.cert_pem)
    }

    /// Server side of the cluster port: presents `[cert, root]` as the chain (so a joining
    /// node can pin the root by digest); asks for a client certificate verified against the
    /// root, but ALSO accepts clients without one (they may only call the join RPC; each
    /// RPC checks the role itself). ALPN `h2`.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let provider = provider();
        let roots = certs_of_pem(&self.ca_cert_pem)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(root_store(&roots)?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| Error::Internal(format!("TLS client verifier: {e}")))?;
        let chain = self.presented_chain(&roots)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_setup)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, self.private_key()?)
            .map_err(|e| Error::InvalidInput(format!("node credentials: {e}")))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// Client side, for dialing a **manager**: presents this node's cert; accepts a
    /// server only if its chain verifies against the root with server name
    /// [`super::SERVER_NAME`] *and* its certificate names a manager of this node's
    /// cluster. A worker's certificate chains to the same root, so without the role
    /// check a worker could pose as a manager (and receive, say, a join secret). ALPN
    /// `h2`.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        self.client_config_for(ServerRole::Manager)
    }

    /// Client side, for dialing **any node** of this cluster (image shipping, logs): as
    /// [`NodeCredentials::client_config`], but a worker's certificate is accepted too.
    pub fn client_config_any_node(&self) -> Result<Arc<ClientConfig>> {
        self.client_config_for(ServerRole::AnyNode)
    }

    fn client_config_for(&self, want: ServerRole) -> Result<Arc<ClientConfig>> {
        let roots = certs_of_pem(&self.ca_cert_pem)?;
        let provider = provider();
        let webpki =
            WebPkiServerVerifier::builder_with_provider(root_store(&roots)?, provider.clone())
                .build()
                .map_err(|e| Error::Internal(format!("TLS server verifier: {e}")))?;
        let verifier = Arc::new(RoleVerifier {
            webpki,
            provider: provider.clone(),
            cluster_id: Some(self.identity()?.cluster_id),
            want,
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_setup)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(certs_of_pem(&self.cert_pem)?, self.private_key()?)
            .map_err(|e| Error::InvalidInput(format!("node credentials: {e}")))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// Checks that `cert_pem` is a certificate this node may install as its own: it
    /// chains to this node's root, is valid now, and names this node's id and cluster.
    /// A manager's answer to a renewal is not trusted blindly: a certificate for another
    /// node (or another role than announced) is refused before it is saved.
    pub fn check_own(&self, cert_pem: &str, now: UnixTime) -> Result<Identity> {
        let mine = self.identity()?;
        let roots = certs_of_pem(&self.ca_cert_pem)?;
        let chain = certs_of_pem(cert_pem)?;
        let der = chain[0].clone();
        let verifier = WebPkiClientVerifier::builder_with_provider(root_store(&roots)?, provider())
            .build()
            .map_err(|e| Error::Internal(format!("TLS client verifier: {e}")))?;
        verifier
            .verify_client_cert(&der, &chain[1..], now)
            .map_err(|e| {
                Error::PermissionDenied(format!(
                    "new certificate refused: it does not verify against this node's root CA ({e})"
                ))
            })?;
        let id = super::identity_of_der(&der)?;
        if id.node_id != mine.node_id || id.cluster_id != mine.cluster_id {
            return Err(Error::PermissionDenied(format!(
                "new certificate refused: it names node {} of cluster {}, this node is {} of {}",
                id.node_id, id.cluster_id, mine.node_id, mine.cluster_id
            )));
        }
        Ok(id)
    }

    /// What this node presents: its certificate and what follows it in `cert_pem`
    /// (during a CA rotation, the new root cross-signed by the old one, then the new
    /// root), then every root it trusts not already there (so that a joining node finds
    /// the root its token pins).
    fn presented_chain(
        &self,
        roots: &[CertificateDer<'static>],
    ) -> Result<Vec<CertificateDer<'static>>> {
        let mut chain = certs_of_pem(&self.cert_pem)?;
        for r in roots {
            if !chain.contains(r) {
                chain.push(r.clone());
            }
        }
        Ok(chain)
    }

    /// True when this node's certificate was signed directly by the root whose digest
    /// is `root_digest`, and this node trusts that root.
    pub fn issued_by(&self, root_digest: &str) -> bool {
        let Ok(roots) = certs_of_pem(&self.ca_cert_pem) else {
            return false;
        };
        let Some(root) = roots.into_iter().find(|r| digest_of_der(r) == root_digest) else {
            return false;
        };
        let (Ok(leaf), Ok(store)) = (cert_der_of_pem(&self.cert_pem), root_store(&[root])) else {
            return false;
        };
        let Ok(v) = WebPkiClientVerifier::builder_with_provider(store, provider()).build() else {
            return false;
        };
        v.verify_client_cert(&leaf, &[], UnixTime::now()).is_ok()
    }

    /// The digest of the trusted root that signed this node's certificate, if any.
    pub fn issuer_digest(&self) -> Option<String> {
        let roots = certs_of_pem(&self.ca_cert_pem).ok()?;
        roots
            .iter()
            .map(|r| digest_of_der(r))
            .find(|d| self.issued_by(d))
    }

    /// True when `digest` is the digest of one of the roots this node trusts.
    pub fn trusts(&self, digest: &str) -> bool {
        certs_of_pem(&self.ca_cert_pem)
            .map(|roots| roots.iter().any(|r| digest_of_der(r) == digest))
            .unwrap_or(false)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| Error::InvalidInput(format!("node key: not a PEM private key ({e})")))
    }
}

/// For a node that is joining: no client certificate; accepts a server only if the chain
/// it presents contains a certificate whose digest equals `ca_digest` and the end-entity
/// certificate verifies against that certificate as root (server name
/// [`super::SERVER_NAME`]). Anything else fails the handshake, before any request is sent.
/// ALPN `h2`.
pub fn join_client_config(ca_digest: &str) -> Result<Arc<ClientConfig>> {
    let verifier = join_verifier(ca_digest)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_setup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The server verifier behind [`join_client_config`], for clients that take a verifier
/// rather than a whole config (tonic's `Endpoint::tls_config_with_verifier`).
pub fn join_verifier(ca_digest: &str) -> Result<Arc<dyn ServerCertVerifier>> {
    if ca_digest.len() != 64 || !ca_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(
            "CA digest: expected 64 hex digits".into(),
        ));
    }
    Ok(Arc::new(PinnedRootVerifier {
        ca_digest: ca_digest.to_ascii_lowercase(),
        provider: provider(),
    }))
}

/// The handshake-signature methods of a [`ServerCertVerifier`] whose struct has a
/// `provider`: the provider's algorithms, as rustls' own verifiers use them.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Which servers a client accepts, beyond a chain to the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerRole {
    /// Only a certificate whose role is `manager`.
    Manager,
    /// Any node certificate.
    AnyNode,
}

/// The WebPKI check, then the role and cluster the server's certificate names.
#[derive(Debug)]
struct RoleVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// Signature algorithms for handshake signatures.
    provider: Arc<CryptoProvider>,
    /// The cluster the server must belong to; `None` (a joining node) checks that the
    /// server's cluster is the one its root names.
    cluster_id: Option<String>,
    want: ServerRole,
}

/// Refuses a server certificate that does not name the wanted role of the wanted
/// cluster. Runs after the chain check, so `end_entity` is known to be signed by the
/// root.
fn check_server_identity(
    end_entity: &CertificateDer<'_>,
    cluster_id: &str,
    want: ServerRole,
) -> std::result::Result<(), rustls::Error> {
    let refuse = |why: String| {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            Error::PermissionDenied(why),
        ))))
    };
    let id = super::identity_of_der(end_entity)
        .map_err(|e| refuse(format!("the server's certificate is not a node's: {e}")))?;
    if id.cluster_id != cluster_id {
        return Err(refuse(format!(
            "the server's certificate is of cluster {}, not {cluster_id}",
            id.cluster_id
        )));
    }
    if want == ServerRole::Manager && id.role != Role::Manager {
        return Err(refuse(format!(
            "the server (node {}) holds a {} certificate: only a manager may serve this call",
            id.node_id, id.role
        )));
    }
    Ok(())
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ok = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let cluster = self.cluster_id.as_deref().unwrap_or_default();
        check_server_identity(end_entity, cluster, self.want)?;
        Ok(ok)
    }

    handshake_signatures!();
}

/// Trusts exactly the root whose digest it was given, and only if the server sends it.
#[derive(Debug)]
struct PinnedRootVerifier {
    /// Lowercase hex SHA-256 of the pinned root's DER.
    ca_digest: String,
    /// Signature algorithms for chain and handshake signatures.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|c| digest_of_der(c) == self.ca_digest)
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    Error::PermissionDenied(format!(
                        "the server does not present the root CA of the join token \
                         (digest {})",
                        self.ca_digest
                    )),
                ))))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(pinned.clone().into_owned())?;
        // The pinned certificate becomes the only trust anchor; everything else (chain,
        // validity, key usage, server name) is the ordinary WebPKI check.
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| *c != pinned)
            .cloned()
            .collect();
        let ok =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("TLS server verifier: {e}")))?
                .verify_server_cert(end_entity, &others, server_name, ocsp_response, now)?;
        // Only a manager of the root's own cluster (the root's O) may take a join: a
        // worker's certificate chains to the same root.
        let cluster = root_cluster_id(pinned)
            .map_err(|e| rustls::Error::General(format!("pinned root: {e}")))?;
        check_server_identity(end_entity, &cluster, ServerRole::Manager)?;
        Ok(ok)
    }

    handshake_signatures!();
}

/// The cluster id a root certificate names (its subject's `O`).
fn root_cluster_id(root: &CertificateDer<'_>) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(root.as_ref())
        .map_err(|e| Error::InvalidInput(format!("root CA certificate: {e}")))?;
    let o = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| Error::InvalidInput("root CA certificate: no O (cluster id)".into()))?;
    Ok(o.to_string())
}

/// The ring crypto provider, passed explicitly so no process default is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A trust store holding the given roots.
fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| Error::InvalidInput(format!("root CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// Every certificate of a PEM text, in order; at least one.
pub(crate) fn certs_of_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::InvalidInput(format!("certificate: not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(
            "certificate: no PEM certificate".into(),
        ));
    }
    Ok(certs)
}

fn tls_setup(e: rustls::Error) -> Error {
    Error::Internal(format!("TLS setup: {e}"))
}
