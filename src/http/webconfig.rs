//! The exporter-toolkit web config file (`[http] web_config_file`): TLS,
//! extra response headers and basic-auth users, in the YAML format that
//! node_exporter and Prometheus read (prometheus/exporter-toolkit
//! docs/web-configuration.md).
//!
//! Differences from exporter-toolkit, each refused with an error that says so
//! rather than ignored, so a security setting is never silently dropped:
//! - `cipher_suites`, `curve_preferences` and `client_allowed_sans` are not
//!   supported (rustls's default suites and groups are used);
//! - `rate_limit` is not supported;
//! - TLS settings without a certificate are an error (exporter-toolkit falls
//!   back to plain HTTP);
//! - a `client_ca`/`client_ca_file` with `RequestClientCert` or
//!   `RequireAnyClientCert` is an error, since those modes never check it.
//!
//! `http_server_config.http2` is accepted and has no effect: relstat serves
//! HTTP/1.1 only. The file is read once, at start: a renewed certificate
//! takes effect on restart.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::HttpError;
use super::auth::BasicAuth;
use super::tls;

/// The loaded and checked web config.
pub(crate) struct WebConfig {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `None`: no basic auth.
    pub auth: Option<Arc<BasicAuth>>,
}

impl WebConfig {
    /// No file: plain HTTP, no auth, no extra headers.
    pub fn none() -> Self {
        Self {
            tls: None,
            headers: Vec::new(),
            auth: None,
        }
    }

    /// The `basic_auth_users` names of the file at `path`, sorted (empty:
    /// no basic auth), without checking the rest of the file.
    pub fn user_names(path: &Path) -> Result<Vec<String>, HttpError> {
        let mut names: Vec<String> = read(path)?.basic_auth_users.into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// Reads and checks `path`; every error names the file and the key.
    pub fn load(path: &Path) -> Result<Self, HttpError> {
        Self::parse(&read_text(path)?, path)
    }

    /// Checks the text of a web config; `path` names it in errors and its
    /// directory is where relative file names (`cert_file`...) are read.
    pub fn parse(text: &str, path: &Path) -> Result<Self, HttpError> {
        let raw = parse_raw(text, path)?;
        let err = |key: &str, message: String| HttpError::WebConfig {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };

        if raw.rate_limit.is_some() {
            return Err(err(
                "rate_limit",
                "is not supported by relstat; remove it (rate-limit in a reverse proxy if needed)"
                    .into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let tls = match raw.tls_server_config {
            Some(t) => tls::server_config(&t, base, &err)?,
            None => None,
        };
        let headers = match raw.http_server_config {
            Some(h) => {
                if h.http2 == Some(true) {
                    tracing::debug!(
                        "http_server_config.http2 has no effect: relstat serves HTTP/1.1"
                    );
                }
                check_headers(h.headers.unwrap_or_default(), &err)?
            }
            None => Vec::new(),
        };
        let auth = if raw.basic_auth_users.is_empty() {
            None
        } else {
            Some(Arc::new(BasicAuth::new(raw.basic_auth_users, &err)?))
        };
        Ok(Self { tls, headers, auth })
    }
}

/// Reads and parses the file at `path` (an empty file is an empty config).
/// A web config is a few lines; a larger file is refused before it is read.
pub const MAX_WEB_CONFIG_BYTES: u64 = 1 << 20;

/// The text of `path`, at most [`MAX_WEB_CONFIG_BYTES`].
fn read_text(path: &Path) -> Result<String, HttpError> {
    use std::io::Read;
    let read_err = |source| HttpError::WebConfigRead {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_WEB_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_WEB_CONFIG_BYTES {
        return Err(HttpError::WebConfigParse {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_WEB_CONFIG_BYTES} bytes: not a web config"),
        });
    }
    Ok(text)
}

fn read(path: &Path) -> Result<WebConfigFile, HttpError> {
    parse_raw(&read_text(path)?, path)
}

fn parse_raw(text: &str, path: &Path) -> Result<WebConfigFile, HttpError> {
    let raw: Option<WebConfigFile> = serde_norway::from_str(text).map_err(|e| {
        let mut message = e.to_string();
        if message.contains("unknown field") {
            message.push_str(
                " (unknown keys are refused so that a misspelt or unsupported security \
                 setting is not silently ignored)",
            );
        }
        HttpError::WebConfigParse {
            path: path.to_path_buf(),
            message,
        }
    })?;
    Ok(raw.unwrap_or_default())
}

/// The file as written. Empty strings count as unset, as in exporter-toolkit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    basic_auth_users: HashMap<String, Secret>,
    /// Only to refuse it with a clear message.
    #[serde(default)]
    rate_limit: Option<serde_norway::Value>,
}

/// `tls_server_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsServerConfig {
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<Secret>,
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_allowed_sans: Option<Vec<String>>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    pub curve_preferences: Option<Vec<String>>,
}

/// `http_server_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    /// Accepted for compatibility; relstat serves HTTP/1.1 only.
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// A string that `Debug` does not print (private keys, password hashes).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// The headers exporter-toolkit lets a user set, with their allowed values
/// (empty: any value). Others could break the protocol (Content-Type,
/// Content-Length) and are refused, as exporter-toolkit does.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn check_headers(
    headers: BTreeMap<String, String>,
    err: &dyn Fn(&str, String) -> HttpError,
) -> Result<Vec<(HeaderName, HeaderValue)>, HttpError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let key = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(&name))
        else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
            return Err(err(
                &key,
                format!(
                    "this header cannot be configured; allowed: {}",
                    names.join(", ")
                ),
            ));
        };
        if value.is_empty() {
            continue; // "Unset if blank."
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(err(
                &key,
                format!(
                    "invalid value {value:?}; expected one of: {}",
                    allowed.join(", ")
                ),
            ));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| err(&key, format!("{value:?} is not a valid header value")))?;
        // from_bytes lowercases; the table holds valid names.
        let name = HeaderName::from_bytes(canonical.as_bytes()).expect("valid header name");
        out.push((name, value));
    }
    Ok(out)
}
