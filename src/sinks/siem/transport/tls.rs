//! The TLS client side of `tls` and `relp` with `tls = true`: rustls on
//! ring, TLS 1.2 minimum (1.3 preferred), the server verified against
//! `ca_file` (else the system bundle) and `server_name` (else the host of
//! `address`), an optional client certificate for mTLS.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::stream::Stream;
use super::{TransportError, connect_tcp};
use crate::config::SiemConfig;

use crate::outbound::SYSTEM_CAS;

/// After the handshake, how long to listen for a refusal before the first
/// write (TLS 1.3 servers judge the client certificate after the client
/// finished its side of the handshake).
const SETTLE: Duration = Duration::from_millis(200);

/// Everything needed to open TLS connections to the SIEM.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    pub fn new(siem: &SiemConfig, address: &str) -> Result<Self, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let ca_path = match &siem.ca_file {
            Some(p) => p.clone(),
            None => SYSTEM_CAS
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    TransportError::Config(
                        "no ca_file set and no system CA bundle found; set siem.ca_file".into(),
                    )
                })?,
        };
        for cert in read_certs(&ca_path)? {
            roots.add(cert).map_err(|e| TransportError::File {
                path: ca_path.clone(),
                detail: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots);
        let config = match (&siem.client_cert_file, &siem.client_key_file) {
            (Some(c), Some(k)) => {
                let chain = read_certs(c)?;
                let key = PrivateKeyDer::from_pem_file(k).map_err(|e| TransportError::File {
                    path: k.clone(),
                    detail: format!("no PEM private key: {e}"),
                })?;
                builder.with_client_auth_cert(chain, key)?
            }
            _ => builder.with_no_client_auth(),
        };
        let name = siem
            .server_name
            .clone()
            .unwrap_or_else(|| super::host_of(address).to_string());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| TransportError::Config(format!("server_name {name:?}: {e}")))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }

    /// Connects and completes the handshake; nothing is written before the
    /// server is verified and has had [`SETTLE`] to refuse us.
    pub fn connect(&self, address: &str) -> Result<Stream, TransportError> {
        let mut sock = super::stream::Counted::new(connect_tcp(address)?);
        let mut conn = ClientConnection::new(self.config.clone(), self.server_name.clone())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(TransportError::io("TLS handshake"))?;
        }
        let mut stream = Stream::Tls(Box::new(StreamOwned::new(conn, sock)));
        let deadline = Instant::now() + SETTLE;
        let mut scratch = Vec::new();
        while Instant::now() < deadline {
            stream.read_available(&mut scratch)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(stream)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let err = |detail: String| TransportError::File {
        path: path.to_path_buf(),
        detail,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}
