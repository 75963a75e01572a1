//! TLS for the embedded runtime's TCP listeners: the certificate, key and client CA files
//! (`--tls-cert`, `--tls-key`, `--tls-client-ca`) read into one rustls `ServerConfig` per
//! listener, in the supervisor, at start and on every reload or rolling restart; workers
//! are forked with the configs in memory. It owns reading and checking the files (a bad
//! one is an error naming its flag and path) and the configs' protocol choices (TLS 1.2
//! and 1.3, the ring provider, ALPN); it must not touch a connection (`embedded::tls`
//! does) nor parse flags (`settings::tls`). `subject` renders a certificate's subject.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

pub mod subject;

/// Whether a listener with a client CA asks for client certificates or insists on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// A client without a certificate is refused during the handshake.
    #[default]
    Required,
    /// A client may present none (`Conn::tls` then shows no certificate); one it presents
    /// must be valid.
    Optional,
}

/// The files of one listener's TLS, as the operator named them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// One listener's TLS: its files and the config read from them.
#[derive(Clone, Debug)]
pub struct ListenerTls {
    pub files: TlsFiles,
    pub config: Arc<ServerConfig>,
    /// A digest of the files' contents: a reload that changes a file rolls the workers.
    pub digest: u64,
}

/// What a forked worker needs: each TLS listener's config, by listener name, and the
/// handshake timeout.
#[derive(Clone, Debug, Default)]
pub struct WorkerTls {
    pub by_listener: Vec<(String, Arc<ServerConfig>)>,
    pub handshake_timeout: std::time::Duration,
}

impl WorkerTls {
    /// The config of the listener named `name`, if it serves TLS.
    pub fn config(&self, name: &str) -> Option<Arc<ServerConfig>> {
        self.by_listener
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| Arc::clone(c))
    }
}

/// The ALPN protocol offered when the program names none (`Server::tls_alpn`).
pub const ALPN_DEFAULT: &[&[u8]] = &[b"http/1.1"];

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))
}

fn certificates(
    flag: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (expected PEM blocks `-----BEGIN CERTIFICATE-----`)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads `files` into a server config offering `alpn` (empty: no ALPN). Every error names
/// the flag and the file, and what to fix.
pub fn load(files: &TlsFiles, auth: ClientAuth, alpn: &[Vec<u8>]) -> Result<ListenerTls, String> {
    let cert_pem = read("--tls-cert", &files.cert)?;
    let key_pem = read("--tls-key", &files.key)?;
    let chain = certificates("--tls-cert", &files.cert, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "--tls-key {}: no private key in it (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block): {e}",
            files.key.display()
        )
    })?;
    let mut h = DefaultHasher::new();
    cert_pem.hash(&mut h);
    key_pem.hash(&mut h);
    // ring rather than aws-lc-rs keeps the build light (no C toolchain, cmake or NASM);
    // rustls 0.23.48 deprecates it for lacking post-quantum key exchange, which an
    // operator who needs it gets from a proxy in front (docs/operating.md, TLS).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_pem = read("--tls-client-ca", ca)?;
            ca_pem.hash(&mut h);
            let mut roots = RootCertStore::empty();
            for cert in certificates("--tls-client-ca", ca, &ca_pem)? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "--tls-client-ca {}: a certificate in it is not usable as a CA: {e}",
                        ca.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?,
            )
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "--tls-key {} does not match the certificate of --tls-cert {} (the key's public half is not the certificate's)",
            files.key.display(),
            files.cert.display()
        ),
        e => format!(
            "--tls-key {} / --tls-cert {}: {e}",
            files.key.display(),
            files.cert.display()
        ),
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(ListenerTls {
        files: files.clone(),
        config: Arc::new(config),
        digest: h.finish(),
    })
}

#[cfg(test)]
mod tests;
