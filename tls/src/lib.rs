//! TLS for tcr: the registry port's certificate, mutual TLS between nodes,
//! and certificates for a first install or a test cluster.
//!
//! Certificates live in PEM files that are re-read when they change (a
//! Kubernetes Secret or cert-manager renewal), so rotation needs no
//! restart: every handshake takes the key pair and CA loaded last, and a
//! connection already open keeps the one it started with.

mod connector;
mod identity;
pub mod issue;
mod listener;
mod names;
mod verify;

use std::sync::Arc;

pub use connector::PeerConnector;
pub use identity::{Identity, RECHECK};
pub use listener::TlsListener;
pub use names::{certificate_names, host_of};
pub use rustls::pki_types::CertificateDer;
pub use rustls::{ClientConfig, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: String, what: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the peer CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("{0}")]
    Other(String),
}

/// The one crypto provider tcr uses (ring: aws-lc-rs would add minutes of
/// C++ to every clean build).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ALPN on every listener: gRPC needs h2, docker and the peer blob reads
/// use HTTP/1.1.
fn server_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// The registry port: the node's certificate, no client certificates.
pub fn registry_server_config(id: &Arc<Identity>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut c = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(id.clone());
    c.alpn_protocols = server_alpn();
    Ok(Arc::new(c))
}

/// Both sides of peer TLS check the other against the CA.
fn require_ca(id: &Identity) -> Result<(), TlsError> {
    if id.has_ca() {
        Ok(())
    } else {
        Err(TlsError::Other(
            "peer TLS needs a CA file (--peer-ca-file)".into(),
        ))
    }
}

/// The RPC port: the node's certificate, and a client certificate that
/// chains to the peer CA is required of every caller.
pub fn peer_server_config(id: &Arc<Identity>) -> Result<Arc<ServerConfig>, TlsError> {
    require_ca(id)?;
    let mut c = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verify::PeerClients(id.clone())))
        .with_cert_resolver(id.clone());
    c.alpn_protocols = server_alpn();
    Ok(Arc::new(c))
}

/// Calls to other nodes: present this node's certificate, accept only a
/// server certificate from the peer CA that names the host called.
/// `alpn`: `h2` for gRPC channels, `http/1.1` for the blob reads.
pub fn peer_client_config(id: &Arc<Identity>, alpn: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    require_ca(id)?;
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verify::PeerServers(id.clone())))
        .with_client_cert_resolver(id.clone());
    c.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(c))
}
