//! The listener against real clients over loopback: raw HTTP/1.1 over TCP or
//! over a tokio-rustls stream, certificates made here with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

/// Every network step of a test is bounded by this.
const STEP: Duration = Duration::from_secs(10);

const EXPOSITION: &str = "# HELP relstat_up Test.\n# TYPE relstat_up gauge\nrelstat_up 1\n";

struct Fake {
    ready: Mutex<Result<(), String>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Fake {
            ready: Mutex::new(Ok(())),
        })
    }
}

impl Service for Fake {
    fn metrics(&self) -> String {
        EXPOSITION.to_string()
    }

    fn ready(&self) -> Result<(), String> {
        self.ready.lock().unwrap().clone()
    }

    // A slow hook, to have a request in flight at shutdown; `/hooks/nope`
    // answers without reading the body; others read it up to MAX_BODY_BYTES.
    fn hook<'a>(&'a self, source: &'a str, req: Request<PendingBody>) -> ResponseFuture<'a> {
        Box::pin(async move {
            if source == "nope" {
                return not_found();
            }
            let read = match req.into_body().read(MAX_BODY_BYTES).await {
                Ok(read) => read,
                Err(e) => return e.response(None),
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            text(
                StatusCode::OK,
                format!("{source} got {} bytes\n", read.bytes().len()),
            )
        })
    }
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), HttpError>>,
}

async fn start(svc: Arc<dyn Service>, web_config: Option<&Path>) -> Running {
    let server = Server::bind("127.0.0.1:0", web_config).await.unwrap();
    let addr = server.local_addr();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(svc, async {
        let _ = rx.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Sends `request` (request line and headers, then optionally a blank line
/// and the body) with `Host` and `Connection: close` added, and reads the
/// whole answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> std::io::Result<String> {
    let (head, body) = request.split_once("\r\n\r\n").unwrap_or((request, ""));
    let req = format!("{head}\r\nHost: localhost\r\nConnection: close\r\n\r\n{body}");
    tokio::time::timeout(STEP, async {
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })
    .await
    .map_err(|_| std::io::Error::other("timed out"))?
}

async fn plain(addr: SocketAddr, head: &str) -> std::io::Result<String> {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr)).await??;
    exchange(tcp, head).await
}

async fn tls(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    head: &str,
) -> std::io::Result<String> {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr)).await??;
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(STEP, connector.connect(name, tcp)).await??;
    exchange(stream, head).await
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// The value of header `name` (case-insensitive).
fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split_once("\r\n\r\n")?.0;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A refused TLS request: an error, or no HTTP answer at all.
fn refused(r: &std::io::Result<String>) -> bool {
    match r {
        Err(_) => true,
        Ok(s) => !s.starts_with("HTTP/"),
    }
}

// ---- certificates ----

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM) signed by `ca`.
fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "relstat test");
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CA, a server certificate for localhost/127.0.0.1, a client certificate
/// from the CA and one from another CA, all written into a temporary dir.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client: (String, String),
    stranger: (String, String),
}

impl Pki {
    fn new() -> Pki {
        let ca = new_ca("relstat test CA");
        let other = new_ca("some other CA");
        let server = leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(&ca, &["scraper"], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = leaf(&other, &["scraper"], ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.0).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.1).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem,
            client,
            stranger,
        }
    }

    /// Writes `yaml` as the web config; relative paths resolve against the dir.
    fn web_config(&self, yaml: &str) -> PathBuf {
        let path = self.dir.path().join("web-config.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn client_config(
        &self,
        cert: Option<&(String, String)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        Arc::new(config)
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
const BOTH: &[&rustls::SupportedProtocolVersion] = rustls::ALL_VERSIONS;

// ---- plain HTTP ----

#[tokio::test]
async fn plain_endpoints() {
    let fake = Fake::new();
    let s = start(fake.clone(), None).await;

    let r = plain(s.addr, "GET /metrics HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body(&r), EXPOSITION);
    assert_eq!(header(&r, "content-type"), Some(METRICS_CONTENT_TYPE));

    let r = plain(s.addr, "GET /healthz HTTP/1.1").await.unwrap();
    assert_eq!((status(&r), body(&r)), (200, "ok\n"), "{r}");

    let r = plain(s.addr, "GET /readyz HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 200, "{r}");
    *fake.ready.lock().unwrap() = Err("store not open".into());
    let r = plain(s.addr, "GET /readyz HTTP/1.1").await.unwrap();
    assert_eq!((status(&r), body(&r)), (503, "store not open\n"), "{r}");
    // Alive while not ready.
    let r = plain(s.addr, "GET /healthz HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 200, "{r}");

    for path in [
        "/",
        "/nope",
        "/metricsx",
        "/hooks/",
        "/hooks/a/b",
        "/api/v1/status",
    ] {
        let r = plain(s.addr, &format!("GET {path} HTTP/1.1"))
            .await
            .unwrap();
        assert_eq!(status(&r), 404, "{path}: {r}");
    }

    let r = plain(s.addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0")
        .await
        .unwrap();
    assert_eq!(status(&r), 405, "{r}");
    assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
    let r = plain(s.addr, "DELETE /healthz HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 405, "{r}");
    let r = plain(s.addr, "GET /hooks/github HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 405, "{r}");

    let r = plain(s.addr, "HEAD /metrics HTTP/1.1").await.unwrap();
    assert_eq!((status(&r), body(&r)), (200, ""), "{r}");

    // The hook route reaches the service, with the body.
    let r = plain(
        s.addr,
        "POST /hooks/github HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    assert!(r.contains("github got 5 bytes"), "{r}");

    s.stop().await;
}

// ---- basic auth ----

#[tokio::test]
async fn basic_auth_guards_metrics_not_probes() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let pki = Pki::new();
    let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
    let path = pki.web_config(&format!(
        "basic_auth_users:\n  alice: '{hash}'\nhttp_server_config:\n  headers:\n    \
         X-Content-Type-Options: nosniff\n"
    ));
    let s = start(Fake::new(), Some(&path)).await;
    let get = |auth: Option<String>| {
        let head = match auth {
            Some(a) => format!("GET /metrics HTTP/1.1\r\nAuthorization: Basic {}", b64(&a)),
            None => "GET /metrics HTTP/1.1".to_string(),
        };
        let addr = s.addr;
        async move { plain(addr, &head).await.unwrap() }
    };

    // Twice: the second answer comes from the cache.
    for _ in 0..2 {
        let r = get(Some("alice:s3cret:with colon".into())).await;
        assert_eq!(status(&r), 200, "{r}");
        assert_eq!(body(&r), EXPOSITION);
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    }
    for bad in [
        Some("alice:wrong".to_string()),
        Some("mallory:s3cret:with colon".to_string()),
        Some("alice".to_string()),
        None,
    ] {
        let r = get(bad.clone()).await;
        assert_eq!(status(&r), 401, "{bad:?}: {r}");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Basic realm=\"relstat\"")
        );
        assert!(!r.contains("relstat_up"));
    }
    let r = plain(s.addr, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer abc")
        .await
        .unwrap();
    assert_eq!(status(&r), 401, "{r}");
    // The API is guarded too (before any 404).
    let r = plain(s.addr, "GET /api/v1/status HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 401, "{r}");

    // Probes and hooks need no credentials.
    for head in ["GET /healthz HTTP/1.1", "GET /readyz HTTP/1.1"] {
        let r = plain(s.addr, head).await.unwrap();
        assert_eq!(status(&r), 200, "{head}: {r}");
    }
    let r = plain(s.addr, "POST /hooks/jenkins HTTP/1.1\r\nContent-Length: 0")
        .await
        .unwrap();
    assert_eq!(status(&r), 200, "{r}");

    s.stop().await;
}

// ---- TLS ----

#[tokio::test]
async fn tls_serves_https_and_refuses_plain_http() {
    let pki = Pki::new();
    let path = pki.web_config(TLS);
    let s = start(Fake::new(), Some(&path)).await;

    let r = tls(
        s.addr,
        pki.client_config(None, BOTH),
        "GET /metrics HTTP/1.1",
    )
    .await
    .unwrap();
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body(&r), EXPOSITION);
    // TLS 1.2 clients are served by default.
    let v12 = pki.client_config(None, &[&rustls::version::TLS12]);
    let r = tls(s.addr, v12, "GET /healthz HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 200, "{r}");

    let r = plain(s.addr, "GET /metrics HTTP/1.1").await;
    assert!(!matches!(&r, Ok(s) if s.contains("200")), "{r:?}");
    assert!(refused(&r), "{r:?}");

    s.stop().await;
}

#[tokio::test]
async fn tls_require_and_verify_client_cert() {
    let pki = Pki::new();
    let path = pki.web_config(&format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
    ));
    let s = start(Fake::new(), Some(&path)).await;

    let r = tls(
        s.addr,
        pki.client_config(None, BOTH),
        "GET /metrics HTTP/1.1",
    )
    .await;
    assert!(refused(&r), "no client cert: {r:?}");
    let wrong_ca = pki.client_config(Some(&pki.stranger), BOTH);
    let r = tls(s.addr, wrong_ca, "GET /metrics HTTP/1.1").await;
    assert!(refused(&r), "client cert from another CA: {r:?}");
    // Also over TLS 1.2, where the client certificate is checked earlier.
    let wrong_ca12 = pki.client_config(Some(&pki.stranger), &[&rustls::version::TLS12]);
    let r = tls(s.addr, wrong_ca12, "GET /metrics HTTP/1.1").await;
    assert!(refused(&r), "client cert from another CA, TLS 1.2: {r:?}");

    let good = pki.client_config(Some(&pki.client), BOTH);
    let r = tls(s.addr, good, "GET /metrics HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body(&r), EXPOSITION);

    s.stop().await;
}

#[tokio::test]
async fn tls_verify_if_given_and_require_any() {
    let pki = Pki::new();
    let path = pki.web_config(&format!(
        "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca: |\n{}",
        pki.ca_pem
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    ));
    let s = start(Fake::new(), Some(&path)).await;
    let r = tls(
        s.addr,
        pki.client_config(None, BOTH),
        "GET /healthz HTTP/1.1",
    )
    .await
    .unwrap();
    assert_eq!(status(&r), 200, "no cert is fine: {r}");
    let good = pki.client_config(Some(&pki.client), BOTH);
    assert_eq!(
        status(&tls(s.addr, good, "GET /healthz HTTP/1.1").await.unwrap()),
        200
    );
    let wrong = pki.client_config(Some(&pki.stranger), BOTH);
    assert!(refused(&tls(s.addr, wrong, "GET /healthz HTTP/1.1").await));
    s.stop().await;

    let path = pki.web_config(&format!("{TLS}  client_auth_type: RequireAnyClientCert\n"));
    let s = start(Fake::new(), Some(&path)).await;
    let r = tls(
        s.addr,
        pki.client_config(None, BOTH),
        "GET /healthz HTTP/1.1",
    )
    .await;
    assert!(refused(&r), "no cert: {r:?}");
    // Any certificate will do, whoever issued it.
    let stranger = pki.client_config(Some(&pki.stranger), BOTH);
    let r = tls(s.addr, stranger, "GET /healthz HTTP/1.1")
        .await
        .unwrap();
    assert_eq!(status(&r), 200, "{r}");
    s.stop().await;
}

#[tokio::test]
async fn tls_min_version_13_refuses_a_tls12_only_client() {
    let pki = Pki::new();
    let path = pki.web_config(&format!("{TLS}  min_version: TLS13\n"));
    let s = start(Fake::new(), Some(&path)).await;

    let v12 = pki.client_config(None, &[&rustls::version::TLS12]);
    let r = tls(s.addr, v12, "GET /healthz HTTP/1.1").await;
    assert!(r.is_err(), "{r:?}");
    let v13 = pki.client_config(None, &[&rustls::version::TLS13]);
    let r = tls(s.addr, v13, "GET /healthz HTTP/1.1").await.unwrap();
    assert_eq!(status(&r), 200, "{r}");

    s.stop().await;
}

// ---- web config errors ----

/// The error for `yaml`, after checking it names the file.
fn config_error(pki: &Pki, yaml: &str) -> String {
    let path = pki.web_config(yaml);
    let e = check_web_config(&path).expect_err(yaml).to_string();
    assert!(
        e.contains(&path.display().to_string()),
        "names the file: {e}"
    );
    e
}

#[test]
fn oversized_web_config_and_pem_files_are_refused_before_they_are_read() {
    let pki = Pki::new();
    // A "web config" of 2 MiB (e.g. a path pointing at a log by mistake).
    let big = format!("# {}\n", "x".repeat(2 << 20));
    let e = config_error(&pki, &big).to_string();
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    // A certificate file of 5 MiB.
    std::fs::write(pki.dir.path().join("huge.pem"), vec![b'A'; 5 << 20]).unwrap();
    let e = config_error(
        &pki,
        "tls_server_config:\n  cert_file: huge.pem\n  key_file: server.key\n",
    )
    .to_string();
    assert!(
        e.contains("tls_server_config.cert_file") && e.contains("larger than 4194304 bytes"),
        "{e}"
    );
}

#[test]
fn web_config_errors_name_the_file_and_key() {
    let pki = Pki::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "tls_server_config:\n  cert_file: server.pem\n  kye_file: server.key\n",
            &["kye_file"],
        ),
        (
            "basic_auth_user:\n  alice: x\n",
            &["basic_auth_user", "silently ignored"],
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.key\n",
            &["tls_server_config.cert_file", "missing.pem"],
        ),
        (
            "tls_server_config:\n  cert_file: server.pem\n",
            &["tls_server_config.key_file"],
        ),
        (
            "basic_auth_users:\n  alice: notahash\n",
            &["basic_auth_users.alice", "bcrypt", "htpasswd"],
        ),
        (
            &format!("{TLS}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            &["tls_server_config.cipher_suites", "not supported"],
        ),
        (
            &format!("{TLS}  curve_preferences: [X25519]\n"),
            &["tls_server_config.curve_preferences"],
        ),
        (
            &format!("{TLS}  client_allowed_sans: [scraper]\n"),
            &["tls_server_config.client_allowed_sans"],
        ),
        (
            &format!("{TLS}  client_auth_type: Sometimes\n"),
            &["client_auth_type", "Sometimes"],
        ),
        (
            &format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"),
            &["client_auth_type", "client_ca_file"],
        ),
        (
            &format!("{TLS}  client_ca_file: ca.pem\n"),
            &["tls_server_config.client_ca_file"],
        ),
        (
            &format!("{TLS}  min_version: TLS10\n"),
            &["min_version", "TLS10"],
        ),
        (
            &format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"),
            &["min_version", "TLS13 is above max_version TLS12"],
        ),
        (
            "tls_server_config:\n  min_version: TLS13\n",
            &["min_version", "cert_file"],
        ),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n",
            &["tls_server_config.cert_file", "CERTIFICATE"],
        ),
        (
            "http_server_config:\n  headers:\n    Content-Type: text/html\n",
            &["http_server_config.headers.Content-Type"],
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            &["X-Frame-Options", "deny"],
        ),
        ("rate_limit:\n  interval: 1s\n  burst: 5\n", &["rate_limit"]),
        ("tls_server_config: [\n", &["line"]),
    ];
    for (yaml, wanted) in cases {
        let e = config_error(&pki, yaml);
        for w in *wanted {
            assert!(
                e.contains(w),
                "error for {yaml:?} should mention {w:?}: {e}"
            );
        }
    }

    let missing = pki.dir.path().join("nope.yml");
    let e = check_web_config(&missing).unwrap_err().to_string();
    assert!(
        e.contains("nope.yml") && e.contains("web_config_file"),
        "{e}"
    );

    // Valid files, including an empty one and exporter-toolkit's http2 key.
    for ok in [
        "",
        "# nothing\n",
        TLS,
        &format!("{TLS}  min_version: TLS12\n  max_version: TLS13\n"),
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n",
    ] {
        let path = pki.web_config(ok);
        check_web_config(&path).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let taken = Server::bind("127.0.0.1:0", None).await.unwrap();
    let listen = taken.local_addr().to_string();
    let e = Server::bind(&listen, None)
        .await
        .err()
        .expect("port in use");
    assert!(e.to_string().contains(&listen), "{e}");
    assert!(e.to_string().contains("[http] listen"), "{e}");
}

// ---- shutdown ----

#[tokio::test]
async fn run_returns_after_shutdown_and_finishes_in_flight_requests() {
    let s = start(Fake::new(), None).await;
    let addr = s.addr;

    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(STEP, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // A slow request in flight when shutdown comes.
    let in_flight = tokio::spawn(async move {
        plain(
            addr,
            "POST /hooks/slow HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    s.stop().await;
    assert!(
        started.elapsed() < SHUTDOWN_GRACE,
        "took {:?}",
        started.elapsed()
    );

    let r = in_flight.await.unwrap().unwrap();
    assert!(r.contains("slow got 2 bytes"), "{r}");
    // The listener is closed.
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---- request bodies ----

#[tokio::test]
async fn bodies_are_read_by_the_handler_within_one_budget_for_all_connections() {
    let mut server = Server::bind("127.0.0.1:0", None).await.unwrap();
    server.body_budget = 256 * 1024;
    let addr = server.local_addr();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(Fake::new(), async {
        let _ = rx.await;
    }));
    let s = Running { addr, stop, task };

    // Answered without the body: an unknown hook, an api body over its cap.
    let r = plain(
        s.addr,
        "POST /hooks/nope HTTP/1.1\r\nContent-Length: 25165824",
    )
    .await
    .unwrap();
    assert_eq!(status(&r), 404, "{r}");
    let r = plain(
        s.addr,
        "GET /api/v1/status HTTP/1.1\r\nContent-Length: 65537",
    )
    .await
    .unwrap();
    assert_eq!(status(&r), 413, "{r}");

    // One connection holds 200 KiB of an unfinished body...
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(
        b"POST /hooks/held HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 204800\r\n\r\n",
    )
    .await
    .unwrap();
    held.write_all(&vec![b'x'; 204_799]).await.unwrap();
    // ... so another's 100 KiB does not fit (once the first is buffered).
    let other = format!(
        "POST /hooks/other HTTP/1.1\r\nContent-Length: 102400\r\n\r\n{}",
        "y".repeat(102_400)
    );
    let mut busy = None;
    for _ in 0..50 {
        let r = plain(addr, &other).await.unwrap();
        if status(&r) == 503 {
            busy = Some(r);
            break;
        }
        assert_eq!(status(&r), 200, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy = busy.expect("the second body finds the budget spent");
    assert_eq!(header(&busy, "retry-after"), Some("1"), "{busy}");

    // The first finishes and is served whole; then the budget is free again.
    held.write_all(b"x").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, held.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = String::from_utf8_lossy(&buf);
    assert!(r.contains("held got 204800 bytes"), "{r}");
    let r = plain(addr, &other).await.unwrap();
    assert!(r.contains("other got 102400 bytes"), "{r}");

    s.stop().await;
}
