//! A key pair (and, for mutual TLS, a CA) read from PEM files and read
//! again when the files change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::TlsError;

/// How often, at most, the files are looked at for a change (on the next
/// handshake after this much time).
pub const RECHECK: Duration = Duration::from_secs(1);

/// What a handshake needs, as loaded from the files last.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    pub server_verifier: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

/// Modification time and length of each file: a change in either means
/// the file was rewritten (a Secret update swaps a symlink; both change).
type Stamp = Vec<Option<(SystemTime, u64)>>;

struct State {
    loaded: Loaded,
    stamp: Stamp,
    /// The stamp of files that failed to load: not tried again (nor logged
    /// again) until they change once more.
    failed: Option<Stamp>,
}

/// A node's certificate chain and key, and optionally the CA its peers'
/// certificates must chain to.
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    state: RwLock<State>,
    checked: Mutex<Instant>,
    pub(crate) provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn parse_certs(
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

impl Identity {
    /// Load `cert` (the chain, leaf first) and `key`, and `ca` if given.
    /// Fails when a file is missing, unreadable, or the key does not
    /// belong to the certificate.
    pub fn load(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Arc<Identity>, TlsError> {
        let provider = crate::provider();
        let stamp = stamp_of(&[Some(cert), Some(key), ca]);
        let loaded = load(&provider, cert, key, ca)?;
        Ok(Arc::new(Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.map(Path::to_path_buf),
            state: RwLock::new(State {
                loaded,
                stamp,
                failed: None,
            }),
            checked: Mutex::new(Instant::now()),
            provider,
        }))
    }

    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// The current key pair and verifiers, after reloading the files if
    /// they changed since they were last looked at (at most once per
    /// [`RECHECK`]).
    pub(crate) fn current(&self) -> Loaded {
        self.maybe_reload();
        self.state.read().expect("identity lock").loaded.clone()
    }

    /// The leaf certificate in use now.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current().key.cert[0].clone()
    }

    fn maybe_reload(&self) {
        {
            let mut checked = self.checked.lock().expect("identity lock");
            if checked.elapsed() < RECHECK {
                return;
            }
            *checked = Instant::now();
        }
        let stamp = stamp_of(&[Some(&self.cert), Some(&self.key), self.ca.as_deref()]);
        {
            let st = self.state.read().expect("identity lock");
            if st.stamp == stamp || st.failed.as_ref() == Some(&stamp) {
                return;
            }
        }
        match load(&self.provider, &self.cert, &self.key, self.ca.as_deref()) {
            Ok(loaded) => {
                let mut st = self.state.write().expect("identity lock");
                st.loaded = loaded;
                st.stamp = stamp;
                st.failed = None;
                tracing::info!(cert = %self.cert.display(), "certificate files changed: reloaded");
            }
            Err(e) => {
                self.state.write().expect("identity lock").failed = Some(stamp);
                tracing::warn!(
                    cert = %self.cert.display(),
                    "certificate files changed but cannot be used; keeping the previous ones: {e}"
                );
            }
        }
    }
}

fn stamp_of(paths: &[Option<&Path>]) -> Stamp {
    paths
        .iter()
        .flatten()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn load(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
) -> Result<Loaded, TlsError> {
    let chain = parse_certs(&cert.display().to_string(), &read(cert)?)?;
    let der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Pem {
        path: key.display().to_string(),
        what: e.to_string(),
    })?;
    let key = CertifiedKey::from_der(chain, der, provider)?;
    let (client_verifier, server_verifier) = match ca {
        None => (None, None),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in parse_certs(&ca.display().to_string(), &read(ca)?)? {
                roots.add(c)?;
            }
            let roots = Arc::new(roots);
            let client =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()?;
            let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()?;
            (Some(client), Some(server))
        }
    };
    Ok(Loaded {
        key: Arc::new(key),
        client_verifier,
        server_verifier,
    })
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }

    fn has_certs(&self) -> bool {
        true
    }
}
