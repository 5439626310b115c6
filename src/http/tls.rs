//! `tls_server_config` to a rustls server config (ring provider, TLS 1.2 and
//! 1.3), with exporter-toolkit's client-auth policies mapped onto rustls
//! client-certificate verifiers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};

use super::HttpError;
use super::webconfig::TlsServerConfig;

type ErrFn<'a> = &'a dyn Fn(&str, String) -> HttpError;

const CLIENT_AUTH_TYPES: &str = "NoClientCert, RequestClientCert, RequireAnyClientCert, \
                                 VerifyClientCertIfGiven, RequireAndVerifyClientCert";

/// The rustls config for `t`, or `None` when it configures no TLS at all.
/// Relative paths are resolved against `base` (the web config's directory).
pub(crate) fn server_config(
    t: &TlsServerConfig,
    base: &Path,
    err: ErrFn<'_>,
) -> Result<Option<Arc<ServerConfig>>, HttpError> {
    let cert = nonempty(&t.cert);
    let key = t
        .key
        .as_ref()
        .map(|k| k.0.as_str())
        .filter(|k| !k.is_empty());
    let client_ca = nonempty(&t.client_ca);
    let cert_file = nonempty_path(&t.cert_file);
    let key_file = nonempty_path(&t.key_file);
    let client_ca_file = nonempty_path(&t.client_ca_file);
    let client_auth = nonempty(&t.client_auth_type);

    for (set, key) in [
        (
            t.cipher_suites.as_ref().is_some_and(|v| !v.is_empty()),
            "cipher_suites",
        ),
        (
            t.curve_preferences.as_ref().is_some_and(|v| !v.is_empty()),
            "curve_preferences",
        ),
    ] {
        if set {
            return Err(err(
                &format!("tls_server_config.{key}"),
                "is not supported: relstat uses rustls's default cipher suites and key \
                 exchange groups (AEAD suites with forward secrecy only); remove the key"
                    .into(),
            ));
        }
    }
    if t.client_allowed_sans.is_some() {
        return Err(err(
            "tls_server_config.client_allowed_sans",
            "is not supported; use a client CA that issues certificates only to allowed \
             clients (client_ca_file with client_auth_type: RequireAndVerifyClientCert)"
                .into(),
        ));
    }

    let enabled = cert.is_some()
        || key.is_some()
        || client_ca.is_some()
        || cert_file.is_some()
        || key_file.is_some()
        || client_ca_file.is_some()
        || client_auth.is_some();
    if !enabled {
        let stray = [
            ("min_version", t.min_version.is_some()),
            ("max_version", t.max_version.is_some()),
            (
                "prefer_server_cipher_suites",
                t.prefer_server_cipher_suites.is_some(),
            ),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        return match stray {
            Some((k, _)) => Err(err(
                &format!("tls_server_config.{k}"),
                "is set but no certificate is: add cert_file and key_file (or cert and key) \
                 to serve HTTPS, or remove tls_server_config"
                    .into(),
            )),
            None => Ok(None),
        };
    }

    // The server's certificate chain and key.
    let cert_pem = match (cert, &cert_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "tls_server_config.cert",
                "set cert or cert_file, not both".into(),
            ));
        }
        (Some(c), None) => c.as_bytes().to_vec(),
        (None, Some(f)) => read(base, f, "tls_server_config.cert_file", err)?,
        (None, None) => {
            return Err(err(
                "tls_server_config.cert_file",
                "is missing: TLS needs the server certificate (cert_file or cert)".into(),
            ));
        }
    };
    let key_pem = match (key, &key_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "tls_server_config.key",
                "set key or key_file, not both".into(),
            ));
        }
        (Some(k), None) => k.as_bytes().to_vec(),
        (None, Some(f)) => read(base, f, "tls_server_config.key_file", err)?,
        (None, None) => {
            return Err(err(
                "tls_server_config.key_file",
                "is missing: TLS needs the server's private key (key_file or key)".into(),
            ));
        }
    };
    let cert_key = if cert_file.is_some() {
        "cert_file"
    } else {
        "cert"
    };
    let key_key = if key_file.is_some() {
        "key_file"
    } else {
        "key"
    };
    let chain = certs(&cert_pem, &format!("tls_server_config.{cert_key}"), err)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        err(
            &format!("tls_server_config.{key_key}"),
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {e}"),
        )
    })?;

    // Client CAs.
    let ca_pem = match (client_ca, &client_ca_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "tls_server_config.client_ca",
                "set client_ca or client_ca_file, not both".into(),
            ));
        }
        (Some(c), None) => Some((c.as_bytes().to_vec(), "tls_server_config.client_ca")),
        (None, Some(f)) => Some((
            read(base, f, "tls_server_config.client_ca_file", err)?,
            "tls_server_config.client_ca_file",
        )),
        (None, None) => None,
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = client_verifier(
        client_auth.unwrap_or("NoClientCert"),
        ca_pem,
        &provider,
        err,
    )?;

    let min = version(t.min_version.as_deref(), "min_version", 12, err)?;
    let max = version(t.max_version.as_deref(), "max_version", 13, err)?;
    if min > max {
        return Err(err(
            "tls_server_config.min_version",
            format!("TLS{min} is above max_version TLS{max}"),
        ));
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| err("tls_server_config.min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            err(
                &format!("tls_server_config.{key_key}"),
                format!("does not fit the certificate in {cert_key}: {e}"),
            )
        })?;
    // exporter-toolkit's default is the server's preference.
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn nonempty_path(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// A PEM file of certificates or a key: a CA bundle of a few hundred
/// certificates is well under this; a larger file is refused before it is read.
const MAX_PEM_BYTES: u64 = 4 << 20;

fn read(base: &Path, file: &Path, key: &str, err: ErrFn<'_>) -> Result<Vec<u8>, HttpError> {
    use std::io::Read;
    let path = base.join(file);
    let cannot = |e: std::io::Error| {
        err(
            key,
            format!(
                "cannot read {}: {e} (relative paths are resolved against the web config's \
                 directory)",
                path.display()
            ),
        )
    };
    let mut pem = Vec::new();
    std::fs::File::open(&path)
        .map_err(cannot)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(cannot)?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        return Err(err(
            key,
            format!(
                "{} is larger than {MAX_PEM_BYTES} bytes: not a certificate or key file",
                path.display()
            ),
        ));
    }
    Ok(pem)
}

fn certs(pem: &[u8], key: &str, err: ErrFn<'_>) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(key, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(key, "holds no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// "TLS12" -> 12; TLS 1.0 and 1.1 are refused (rustls does not speak them).
fn version(v: Option<&str>, key: &str, default: u8, err: ErrFn<'_>) -> Result<u8, HttpError> {
    match v {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(other @ ("TLS10" | "TLS11")) => Err(err(
            &format!("tls_server_config.{key}"),
            format!(
                "{other} is not supported (insecure, and rustls does not speak it): use TLS12 or TLS13"
            ),
        )),
        Some(other) => Err(err(
            &format!("tls_server_config.{key}"),
            format!("unknown TLS version {other:?}; expected TLS12 or TLS13"),
        )),
    }
}

fn client_verifier(
    auth_type: &str,
    ca_pem: Option<(Vec<u8>, &str)>,
    provider: &Arc<CryptoProvider>,
    err: ErrFn<'_>,
) -> Result<Arc<dyn ClientCertVerifier>, HttpError> {
    const KEY: &str = "tls_server_config.client_auth_type";
    let needs_ca = |ca_pem: Option<(Vec<u8>, &str)>| match ca_pem {
        Some((pem, key)) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(&pem, key, err)? {
                roots
                    .add(cert)
                    .map_err(|e| err(key, format!("not a usable CA certificate: {e}")))?;
            }
            Ok(Arc::new(roots))
        }
        None => Err(err(
            KEY,
            format!(
                "{auth_type} verifies client certificates and needs the CA that issues them: \
                 set client_ca_file (or client_ca)"
            ),
        )),
    };
    let no_ca = |ca_pem: &Option<(Vec<u8>, &str)>| match ca_pem {
        Some((_, key)) => Err(err(
            key,
            format!(
                "is set but client_auth_type {auth_type} never checks client certificates \
                 against it: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven), \
                 or remove it"
            ),
        )),
        None => Ok(()),
    };
    let build = |roots, optional: bool| {
        let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build()
            .map_err(|e| err(KEY, format!("cannot build the client verifier: {e}")))
    };
    let algorithms = provider.signature_verification_algorithms;
    match auth_type {
        "NoClientCert" => {
            no_ca(&ca_pem)?;
            Ok(Arc::new(NoClientAuth))
        }
        "RequestClientCert" => {
            no_ca(&ca_pem)?;
            Ok(Arc::new(AnyClientCert {
                mandatory: false,
                algorithms,
            }))
        }
        // RequireClientCert: exporter-toolkit's old name, kept there too.
        "RequireAnyClientCert" | "RequireClientCert" => {
            no_ca(&ca_pem)?;
            Ok(Arc::new(AnyClientCert {
                mandatory: true,
                algorithms,
            }))
        }
        "VerifyClientCertIfGiven" => build(needs_ca(ca_pem)?, true),
        "RequireAndVerifyClientCert" => build(needs_ca(ca_pem)?, false),
        other => Err(err(
            KEY,
            format!("unknown value {other:?}; expected one of: {CLIENT_AUTH_TYPES}"),
        )),
    }
}

/// Go's RequestClientCert / RequireAnyClientCert: ask for a certificate and
/// check that the client holds its key, but do not check who issued it.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Garbage is still refused; the chain is not checked.
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
