//! The one outbound HTTP client: every request relstat makes (the SIEM
//! `http` transport, the poll and Kubernetes sources) goes through a
//! [`Client`] built here.
//!
//! Built on `ureq` 3 (blocking, rustls on ring): one agent per client, its
//! connections kept alive and reused; chunked and length-delimited answers;
//! a connect timeout and a whole-request timeout; the server verified
//! against a `ca_file` (else the system bundle or the bundled Mozilla
//! roots), an optional client certificate for mutual TLS; answer bodies
//! read only up to a stated cap ([`read_body`]).
//!
//! Proxies come from the environment when the client is built, per URL
//! scheme as curl reads them: `https_proxy`/`HTTPS_PROXY` for `https://`
//! URLs, `http_proxy`/`HTTP_PROXY` for `http://` URLs, `all_proxy`/
//! `ALL_PROXY` for either when the scheme's own is unset; a host matching
//! `no_proxy`/`NO_PROXY` ([`NoProxy`]) is reached directly. The proxy is
//! spoken to with `CONNECT` (a tunnel, for `http://` targets too).
//!
//! A leaf: it imports nothing from the rest of relstat, so sources, sinks
//! and anything later can share it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ureq::http::Uri;

/// System CA bundles, first found wins, when no `ca_file` is set and the
/// client asks for the system's roots.
pub const SYSTEM_CAS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Largest PEM file (CA bundle, certificate chain, key) read.
const MAX_PEM: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("cannot read {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{0}")]
    Config(String),
    #[error("{var}={value:?} is not a usable proxy: {detail}")]
    Proxy {
        var: &'static str,
        value: String,
        detail: String,
    },
    #[error("the answer's body is longer than {cap} bytes")]
    TooLarge { cap: u64 },
    #[error("{0}")]
    Request(String),
}

/// Where the server's certificate is verified from.
#[derive(Debug, Clone, Default)]
pub enum Roots {
    /// The bundled Mozilla roots.
    #[default]
    Bundled,
    /// The first of [`SYSTEM_CAS`] that exists (an error when none does).
    System,
    /// PEM CA certificates from this file, replacing any other.
    File(PathBuf),
}

/// How a [`Client`] is built.
#[derive(Debug, Clone)]
pub struct Options {
    pub roots: Roots,
    /// Client certificate chain and its private key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The longest connecting (DNS, proxy, TLS handshake included) may take.
    pub connect_timeout: Duration,
    /// The longest a whole request may take, body included.
    pub timeout: Duration,
    /// Redirects followed (0: a 3xx is the answer).
    pub redirects: u32,
    /// `(name, host:port)`: a URL naming host `name` is connected to at
    /// `host:port` (its certificate and `Host` still say `name`).
    pub alias: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            roots: Roots::Bundled,
            client_cert: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            redirects: 0,
            alias: None,
        }
    }
}

/// An HTTP(S) client: one `ureq` agent (its connections kept alive) and
/// the proxies read when it was built.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    proxies: Proxies,
}

impl Client {
    /// A client with the proxies of the process environment.
    pub fn new(opts: &Options) -> Result<Client, OutboundError> {
        Self::with_proxies(opts, Proxies::from_env()?)
    }

    pub fn with_proxies(opts: &Options, proxies: Proxies) -> Result<Client, OutboundError> {
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        let ca = match &opts.roots {
            Roots::Bundled => None,
            Roots::File(p) => Some(p.clone()),
            Roots::System => Some(
                SYSTEM_CAS
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        OutboundError::Config(
                            "no ca_file set and no system CA bundle found; set ca_file".into(),
                        )
                    })?,
            ),
        };
        if let Some(ca) = ca {
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(read_certs(&ca)?)));
        }
        if let Some((cert, key)) = &opts.client_cert {
            let chain = read_certs(cert)?;
            let pem = read_pem(key)?;
            let key = ureq::tls::PrivateKey::from_pem(&pem).map_err(|e| OutboundError::File {
                path: key.clone(),
                detail: format!("no PEM private key: {e}"),
            })?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(opts.redirects)
            .timeout_global(Some(opts.timeout))
            .timeout_connect(Some(opts.connect_timeout))
            .user_agent(concat!("relstat/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            // Chosen per request (by scheme and no_proxy): see `request`.
            .proxy(None)
            .build();
        let agent = match &opts.alias {
            None => config.new_agent(),
            Some((name, target)) => ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::default(),
                Alias {
                    name: name.to_ascii_lowercase(),
                    target: target.clone(),
                    inner: ureq::unversioned::resolver::DefaultResolver::default(),
                },
            ),
        };
        Ok(Client { agent, proxies })
    }

    /// A GET of `url` through the proxy its scheme and host call for.
    pub fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.agent
            .get(url)
            .config()
            .proxy(self.proxies.for_url(url))
            .build()
    }

    /// A POST to `url` through the proxy its scheme and host call for.
    pub fn post(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.agent
            .post(url)
            .config()
            .proxy(self.proxies.for_url(url))
            .build()
    }
}

/// Resolves `name` as `target` (`server_name` for a URL host).
#[derive(Debug)]
struct Alias {
    name: String,
    target: String,
    inner: ureq::unversioned::resolver::DefaultResolver,
}

impl ureq::unversioned::resolver::Resolver for Alias {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        if uri
            .host()
            .is_some_and(|h| h.eq_ignore_ascii_case(&self.name))
        {
            let scheme = uri.scheme_str().unwrap_or("https");
            let to: Uri = format!("{scheme}://{}/", self.target)
                .parse()
                .map_err(|_| ureq::Error::HostNotFound)?;
            return self.inner.resolve(&to, config, timeout);
        }
        self.inner.resolve(uri, config, timeout)
    }
}

/// Reads a whole answer body, refusing one longer than `cap` bytes (checked
/// while reading: never more than `cap` bytes are held).
pub fn read_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    cap: u64,
) -> Result<Vec<u8>, OutboundError> {
    match resp.body_mut().with_config().limit(cap).read_to_vec() {
        Ok(b) => Ok(b),
        Err(ureq::Error::BodyExceedsLimit(_)) => Err(OutboundError::TooLarge { cap }),
        Err(e) => Err(OutboundError::Request(format!("reading the body: {e}"))),
    }
}

/// The first `n` bytes of an answer body (what a refusal says), as text:
/// invalid UTF-8 replaced, control characters shown as spaces.
pub fn body_head(resp: &mut ureq::http::Response<ureq::Body>, n: u64) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let _ = resp.body_mut().as_reader().take(n).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

fn read_pem(path: &Path) -> Result<Vec<u8>, OutboundError> {
    use std::io::Read;
    let err = |detail: String| OutboundError::File {
        path: path.to_path_buf(),
        detail,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut pem = Vec::new();
    f.take(MAX_PEM + 1)
        .read_to_end(&mut pem)
        .map_err(|e| err(e.to_string()))?;
    if pem.len() as u64 > MAX_PEM {
        return Err(err(format!("longer than {MAX_PEM} bytes: not a PEM file")));
    }
    Ok(pem)
}

/// The PEM certificates of a file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, OutboundError> {
    let err = |detail: String| OutboundError::File {
        path: path.to_path_buf(),
        detail,
    };
    let pem = read_pem(path)?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c.to_owned())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The proxies of the environment, read once.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    http: Option<ureq::Proxy>,
    https: Option<ureq::Proxy>,
    no_proxy: NoProxy,
}

impl Proxies {
    /// From the process environment.
    pub fn from_env() -> Result<Proxies, OutboundError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From variables looked up with `var` (lower case first, as curl).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Proxies, OutboundError> {
        let pick = |names: &[&'static str]| -> Result<Option<ureq::Proxy>, OutboundError> {
            for &name in names {
                let Some(value) = var(name).filter(|v| !v.trim().is_empty()) else {
                    continue;
                };
                return ureq::Proxy::new(value.trim()).map(Some).map_err(|e| {
                    OutboundError::Proxy {
                        var: name,
                        value,
                        detail: e.to_string(),
                    }
                });
            }
            Ok(None)
        };
        let all = pick(&["all_proxy", "ALL_PROXY"])?;
        let http = pick(&["http_proxy", "HTTP_PROXY"])?.or_else(|| all.clone());
        let https = pick(&["https_proxy", "HTTPS_PROXY"])?.or(all);
        let no_proxy = var("no_proxy")
            .or_else(|| var("NO_PROXY"))
            .map(|v| NoProxy::parse(&v))
            .unwrap_or_default();
        Ok(Proxies {
            http,
            https,
            no_proxy,
        })
    }

    /// The proxy for `url`, `None` to connect directly.
    pub fn for_url(&self, url: &str) -> Option<ureq::Proxy> {
        let uri: Uri = url.parse().ok()?;
        let proxy = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => self.https.as_ref(),
            _ => self.http.as_ref(),
        }?;
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => 443,
            _ => 80,
        });
        if self.no_proxy.bypasses(host, port) {
            return None;
        }
        Some(proxy.clone())
    }
}

/// A `no_proxy` list, as curl reads it: comma- (or space-) separated
/// entries; `*` alone matches every host; a host name matches itself and
/// every name under it (a leading `.` or `*.` is ignored: `example.com`,
/// `.example.com` and `*.example.com` all match `example.com` and
/// `a.example.com`); an IP address matches itself, `addr/len` a CIDR range;
/// `entry:port` only that port. Case does not matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyEntry {
    Name(String, Option<u16>),
    Net(IpAddr, u8, Option<u16>),
}

impl NoProxy {
    pub fn parse(list: &str) -> NoProxy {
        let mut np = NoProxy::default();
        for raw in list.split([',', ' ', '\t']).map(str::trim) {
            if raw.is_empty() {
                continue;
            }
            if raw == "*" {
                np.all = true;
                continue;
            }
            // [v6]:port, [v6], host:port, v6 (several colons: no port).
            let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
                match rest.split_once(']') {
                    Some((h, p)) => (h, p.strip_prefix(':').and_then(|p| p.parse().ok())),
                    None => (rest, None),
                }
            } else {
                match raw.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
                        Ok(p) => (h, Some(p)),
                        Err(_) => (raw, None),
                    },
                    _ => (raw, None),
                }
            };
            let (addr, len) = match host.split_once('/') {
                Some((a, l)) => (a, l.parse::<u8>().ok()),
                None => (host, None),
            };
            if let Ok(ip) = addr.parse::<IpAddr>() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                np.entries
                    .push(NoProxyEntry::Net(ip, len.unwrap_or(max).min(max), port));
                continue;
            }
            let name = host
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if !name.is_empty() {
                np.entries.push(NoProxyEntry::Name(name, port));
            }
        }
        np
    }

    /// Whether `host` (a name or an IP literal, brackets allowed) on `port`
    /// is reached directly.
    pub fn bypasses(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|e| match e {
            NoProxyEntry::Name(name, p) => {
                p.is_none_or(|p| p == port)
                    && (host == *name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
            NoProxyEntry::Net(net, len, p) => {
                p.is_none_or(|p| p == port) && ip.is_some_and(|ip| in_net(ip, *net, *len))
            }
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
