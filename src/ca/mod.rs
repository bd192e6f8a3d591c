//! The cluster's certificate authority, join tokens and mutual TLS.
//!
//! # Trust in one picture
//!
//! ```text
//!            orc init                          orc join <token>
//!   RootCa::generate(cluster_id)        new_key_and_csr() -> (key, csr)
//!   root cert + key in the store        dial a manager with join_client_config(digest)
//!   token = ORC-1-<sha256(root)>-<s>    ── TLS: manager presents [node cert, root] ──►
//!                                       pin: some cert in the chain has the digest and
//!                                            the node cert verifies against it
//!   RootCa::issue(csr, id, role, ..) ◄─ Join RPC { csr, secret } (no client cert)
//!   ── node cert (CN=id, OU=role, O=cluster) ──► NodeCredentials { root, cert, key }
//!                                       from now on: client_config / server_config (mTLS)
//! ```
//!
//! # The root CA
//!
//! `orc init` makes one self-signed ECDSA P-256 root ([`RootCa::generate`]): subject
//! `CN=orc root CA, O=<cluster id>`, a CA that may only sign end-entity certificates
//! (path length 0), valid for 20 years. Its certificate and key live, as PEM, in the
//! replicated cluster object, the key sealed with the cluster's data key
//! ([`crate::keys`]), so every manager (and only a manager) can sign. The root's *digest* is the
//! SHA-256 of its DER encoding in lowercase hex ([`digest_of_pem`]); it names the cluster's
//! trust in one string and is what a join token pins.
//!
//! # Node certificates
//!
//! A node makes its own key pair and sends only a certificate signing request
//! ([`new_key_and_csr`]); the private key never leaves the node. The CA takes nothing from
//! the CSR but the public key (after checking the CSR's self-signature): the subject is
//! written by the CA from what the cluster decided — `CN` is the node id (16 hex digits),
//! `OU` the role (`manager` or `worker`), `O` the cluster id. Every node certificate carries
//! the one DNS name [`SERVER_NAME`] and may be used both as a TLS server and as a TLS
//! client, because every node both listens and dials. Validity starts one hour in the past
//! (clock skew between nodes) and lasts the cluster's `cert_validity_secs` (90 days by
//! default); serial numbers are random. [`identity_of_der`] reads the subject back into an
//! [`Identity`]; it parses only, trust comes from the TLS handshake that delivered the
//! certificate. A node renews once more than half of its certificate's real lifetime
//! (from issue, not from the backdated start) has passed ([`needs_renewal`]); a node
//! installs a renewed certificate only if it names its own id and cluster and chains to
//! its root ([`NodeCredentials::check_own`]).
//!
//! # Join tokens
//!
//! A [`Token`] is `ORC-1-<root digest>-<secret>`: the version `1`, the 64-hex digest of the
//! root certificate and a 25-character secret of `[a-z0-9]` (about 129 bits,
//! [`new_secret`]). The cluster keeps one secret for workers and one for managers; the
//! secret decides the role a joining node is given, and rotating a secret invalidates the
//! old tokens without touching the CA. The digest lets the joining node trust the manager
//! it dials *before* it sends the secret: [`join_client_config`] accepts a server only if
//! the chain it presents contains a certificate with exactly that digest and the server's
//! own certificate verifies against that certificate as the root. A man in the middle
//! therefore never sees the secret. Secrets are compared with [`secrets_equal`], which
//! takes the same time wherever the strings differ.
//!
//! # Mutual TLS on the cluster port
//!
//! All node-to-node traffic goes over one TLS port speaking HTTP/2 (ALPN `h2`, gRPC). The
//! server side ([`NodeCredentials::server_config`]) presents `[node cert, root]` so that a
//! joining node can pin the root, and asks every client for a certificate verified against
//! the root — but also lets a client in without one, because a joining node has none yet.
//! The handshake thus proves *who* the peer is, or that it is anonymous; it does not decide
//! what the peer may do. Each RPC does that from the peer's certificate: Raft and the
//! control API want a manager, the dispatcher any node of this cluster, and only the join
//! RPC takes anonymous callers. The client side ([`NodeCredentials::client_config`])
//! presents the node's certificate and accepts a server only if its certificate chains to
//! the root and carries [`SERVER_NAME`]; clients always dial with that name, whatever the
//! address, so certificates need not list IP addresses that change.
//!
//! Expired and foreign certificates fail in the handshake itself (rustls checks validity
//! against the clock and the chain against the root); a certificate whose subject does not
//! parse as an orc identity fails in the RPC's role check.
//!
//! Every config is built with the `ring` crypto provider passed explicitly, so nothing here
//! depends on a process-wide default provider being installed.

mod identity;
mod root;
mod tls;
mod token;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub use identity::{identity_of_der, identity_of_pem, needs_renewal, Identity};
pub(crate) use root::BACKDATE;
pub use root::{new_key_and_csr, RootCa};
pub use tls::{join_client_config, join_verifier, NodeCredentials, ALPN_H2};
pub use token::{new_secret, secrets_equal, Token, SECRET_LEN};

/// The DNS name in every node certificate; clients always dial with this server name.
pub const SERVER_NAME: &str = "orc-node";

/// The SHA-256 of a certificate's DER encoding, as 64 lowercase hex digits.
pub fn digest_of_pem(cert_pem: &str) -> Result<String> {
    Ok(digest_of_der(&cert_der_of_pem(cert_pem)?))
}

/// The SHA-256 of DER bytes, as 64 lowercase hex digits.
pub(crate) fn digest_of_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The first certificate of a PEM text, as DER.
pub(crate) fn cert_der_of_pem(cert_pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| Error::InvalidInput(format!("certificate: not a PEM certificate ({e})")))
}

/// What nodes must trust now, from the state alone (no key is opened: heartbeat answers
/// carry it every period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The roots to trust, PEM: the cluster's, and during a rotation the new one too.
    pub bundle_pem: String,
    /// The digest of the root that issues certificates now.
    pub issuer_digest: String,
}

impl Trust {
    /// The trust in force in `state`.
    pub fn of(state: &crate::store::State) -> Result<Trust> {
        let cluster = state
            .cluster
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the cluster is not initialised".into()))?;
        Ok(match &state.ca_rotation {
            None => Trust {
                bundle_pem: cluster.ca_cert_pem.clone(),
                issuer_digest: digest_of_pem(&cluster.ca_cert_pem)?,
            },
            Some(r) => Trust {
                bundle_pem: r.bundle_pem(&cluster.ca_cert_pem),
                issuer_digest: r.new_digest.clone(),
            },
        })
    }
}
