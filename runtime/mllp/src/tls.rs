//! rustls configurations from PEM files, using the `ring` provider explicitly (so a second
//! provider elsewhere in the build cannot make rustls's process default ambiguous).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Largest PEM file read. Certificate chains and keys are a few KiB.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Why a TLS configuration could not be built. Names files, never their contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is larger than [`MAX_PEM_FILE`].
    #[error("{} is larger than {limit} bytes; not a PEM certificate or key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The PEM input is malformed.
    #[error("{what} is not valid PEM")]
    Pem {
        /// The file (or "certificate PEM"/"key PEM" for in-memory input).
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The PEM input holds no certificate.
    #[error("{what} contains no certificate")]
    NoCertificate {
        /// The file or input.
        what: String,
    },
    /// The PEM input holds no private key.
    #[error("{what} contains no private key")]
    NoPrivateKey {
        /// The file or input.
        what: String,
    },
    /// rustls refused the certificates or key.
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// Not a DNS name or IP address.
    #[error("{name:?} is not a valid TLS server name")]
    ServerName {
        /// The name given.
        name: String,
    },
}

/// A server configuration from a PEM certificate chain file and a PEM private key file
/// (PKCS#8, PKCS#1 or SEC1). No client authentication.
pub fn server_config_from_pem(
    cert_chain: &Path,
    key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certs_from(
        &read_pem_file(cert_chain)?,
        &cert_chain.display().to_string(),
    )?;
    let key = key_from(&read_pem_file(key)?, &key.display().to_string())?;
    server_config(certs, key)
}

/// Like [`server_config_from_pem`], from PEM text in memory.
pub fn server_config_from_pem_bytes(
    cert_chain: &[u8],
    key: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certs_from(cert_chain, "certificate PEM")?;
    let key = key_from(key, "key PEM")?;
    server_config(certs, key)
}

/// A client configuration that trusts only the CA certificates in a PEM file (an HL7 partner's
/// CA or self-signed certificate, not the public web PKI). No client certificate.
pub fn client_config_from_pem(ca_certs: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let certs = certs_from(&read_pem_file(ca_certs)?, &ca_certs.display().to_string())?;
    client_config(certs)
}

/// Like [`client_config_from_pem`], from PEM text in memory.
pub fn client_config_from_pem_bytes(ca_certs: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    client_config(certs_from(ca_certs, "CA PEM")?)
}

/// Parses the name the server's certificate must match: a DNS name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName {
        name: name.to_owned(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn client_config(certs: Vec<CertificateDer<'static>>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut out = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut out)
        .map_err(read_err)?;
    if out.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
            limit: MAX_PEM_FILE,
        });
    }
    Ok(out)
}

fn certs_from(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: what.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

fn key_from(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|source| TlsError::Pem {
            what: what.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey {
            what: what.to_owned(),
        })
}
