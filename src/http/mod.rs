//! The one HTTP listener (`[http] listen`): `/metrics`, `/healthz`,
//! `/readyz`, and the routes `/api/v1/...` and `POST /hooks/{source}` that the
//! runtime answers through [`Service`].
//!
//! # Design
//!
//! - hyper 1 over tokio, HTTP/1.1 (keep-alive), optionally TLS via rustls,
//!   configured by an exporter-toolkit web config file (`webconfig.rs`), which
//!   also sets basic-auth users and extra response headers.
//! - What is served comes from a [`Service`] the runtime implements: the
//!   listener knows routing, auth and limits, not the tracker or the store.
//!   `api` and `hook` have default implementations answering 404, so the
//!   listener can run before those features exist.
//! - Basic auth guards `/metrics` and `/api/v1`; the probes (`/healthz`,
//!   `/readyz`) stay open for kubelet and systemd checks, and `/hooks` are
//!   left to each source's own authentication (HMAC signatures, tokens),
//!   since CI tools cannot send basic auth. TLS client-certificate policy,
//!   when configured, applies to every connection, probes included.
//! - Limits, so a slow or hostile client cannot pin the agent: at most
//!   [`MAX_CONNECTIONS`] connections, a TLS handshake must end within
//!   [`HANDSHAKE_TIMEOUT`] and each request's headers arrive within
//!   [`HEADER_TIMEOUT`] (which also closes idle keep-alive connections),
//!   request bodies (api, hooks) are read in full up to [`MAX_BODY_BYTES`]
//!   within [`BODY_TIMEOUT`].
//! - Shutdown: when the future given to [`Server::run`] resolves, the listener
//!   closes, idle keep-alive connections are closed, requests in flight get
//!   up to [`SHUTDOWN_GRACE`] to finish, then `run` returns.

mod auth;
mod tls;
mod webconfig;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use webconfig::WebConfig;

/// Open connections at most; further clients wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// A TLS handshake must end within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this, counted from when the
/// connection is ready for the request: a keep-alive connection idle this long
/// is closed (hyper's default; long enough to keep a 15 s scrape's connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body (api, hooks) is read in full before the handler runs; at
/// most this many bytes (GitHub caps webhook payloads at 25 MB; others send
/// far less).
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
/// ... and within this time.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, requests in flight get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The Prometheus text exposition format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The body of every response.
pub type Body = Full<Bytes>;

/// What [`Service::api`] and [`Service::hook`] return.
pub type ResponseFuture<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

/// What the listener serves, implemented by the runtime.
pub trait Service: Send + Sync + 'static {
    /// The exposition for `GET /metrics`.
    fn metrics(&self) -> String;

    /// `GET /readyz`: `Ok` answers 200, `Err(reason)` answers 503 with the
    /// reason (e.g. "store not open", "source deploy-log catching up").
    fn ready(&self) -> Result<(), String>;

    /// `/api/v1/{path}` (any method), after basic auth; `path` is what
    /// follows `/api/v1/` (empty for `/api/v1` itself). The body has been
    /// read in full; with basic auth, the request's extensions hold the
    /// [`AuthUser`].
    fn api<'a>(&'a self, path: &'a str, req: Request<Bytes>) -> ResponseFuture<'a> {
        let _ = (path, req);
        Box::pin(async { not_found() })
    }

    /// `POST /hooks/{source}`, without basic auth: the source authenticates
    /// the request itself. `source` is a single, non-empty path segment. The
    /// body has been read in full.
    fn hook<'a>(&'a self, source: &'a str, req: Request<Bytes>) -> ResponseFuture<'a> {
        let _ = (source, req);
        Box::pin(async { not_found() })
    }
}

/// The basic-auth user a request to `/api/v1` authenticated as, in the
/// request's extensions (absent when no basic auth is configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser(pub String);

/// Errors of the listener; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen on {listen:?} ([http] listen): {source}; \
         give a free address:port (is another relstat running?)"
    )]
    Bind {
        listen: String,
        source: std::io::Error,
    },
    #[error("cannot read web config {} ([http] web_config_file): {source}", path.display())]
    WebConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "web config {} is not a valid exporter-toolkit web config: {message}",
        path.display()
    )]
    WebConfigParse { path: PathBuf, message: String },
    #[error("web config {}: {key}: {message}", path.display())]
    WebConfig {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Checks a web config file the way [`Server::bind`] loads it, for
/// `relstat check-config`.
pub fn check_web_config(path: &Path) -> Result<(), HttpError> {
    WebConfig::load(path).map(|_| ())
}

/// [`check_web_config`] on the text of a web config (the fuzz target's
/// entry); `path` names it in errors and its directory is where relative
/// file names (`cert_file`...) are read.
pub fn check_web_config_text(text: &str, path: &Path) -> Result<(), HttpError> {
    WebConfig::parse(text, path).map(|_| ())
}

/// A bound listener with its web config loaded; [`Server::run`] serves.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    web: WebConfig,
}

impl Server {
    /// Loads the web config (errors say which file and key is wrong), then
    /// binds `listen` (`host:port`; port 0 picks a free port).
    pub async fn bind(listen: &str, web_config_file: Option<&Path>) -> Result<Server, HttpError> {
        let web = match web_config_file {
            Some(path) => WebConfig::load(path)?,
            None => WebConfig::none(),
        };
        let bind_err = |source| HttpError::Bind {
            listen: listen.to_string(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(Server {
            listener,
            local_addr,
            web,
        })
    }

    /// The bound address (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.web.tls.is_some()
    }

    /// Serves until `shutdown` resolves, then stops accepting, closes idle
    /// connections and lets requests in flight finish (at most
    /// [`SHUTDOWN_GRACE`]).
    pub async fn run(
        self,
        svc: Arc<dyn Service>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        let Server {
            listener,
            local_addr,
            web,
        } = self;
        let acceptor = web.tls.clone().map(TlsAcceptor::from);
        tracing::info!(address = %local_addr, tls = acceptor.is_some(),
            basic_auth = web.auth.is_some(), "HTTP listener started");
        let ctx = Arc::new(Ctx { svc, web });
        // Tracks connections so shutdown can wait for them.
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);

        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = Arc::clone(&slots).acquire_owned() => p.expect("never closed"),
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: wait rather than spin.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let ctx = Arc::clone(&ctx);
            let acceptor = acceptor.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                match acceptor {
                    None => serve_connection(stream, ctx, watcher).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => serve_connection(tls, ctx, watcher).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
                drop(permit);
            });
        }

        drop(listener);
        tracing::info!(address = %local_addr, "HTTP listener stopping");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still in flight after {SHUTDOWN_GRACE:?}; leaving them");
        }
        Ok(())
    }
}

/// What every connection task shares.
struct Ctx {
    svc: Arc<dyn Service>,
    web: WebConfig,
}

async fn serve_connection<I>(io: I, ctx: Arc<Ctx>, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let mut resp = route(ctx, req).await;
    for (name, value) in &ctx.web.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

async fn route(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/healthz" => match get_or_head(&req) {
            Some(r) => r,
            None => text(StatusCode::OK, "ok\n"),
        },
        "/readyz" => match get_or_head(&req) {
            Some(r) => r,
            None => match ctx.svc.ready() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
        },
        "/metrics" => {
            if let Err(denied) = authorize(ctx, &req).await {
                return denied;
            }
            if let Some(r) = get_or_head(&req) {
                return r;
            }
            let mut resp = Response::new(Full::new(Bytes::from(ctx.svc.metrics())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            resp
        }
        p if p == "/api/v1" || p.starts_with("/api/v1/") => {
            let user = match authorize(ctx, &req).await {
                Ok(user) => user,
                Err(denied) => return denied,
            };
            let rest = p.strip_prefix("/api/v1").unwrap_or("");
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            match buffer(req).await {
                Ok(mut req) => {
                    if let Some(user) = user {
                        req.extensions_mut().insert(AuthUser(user));
                    }
                    ctx.svc.api(rest, req).await
                }
                Err(r) => r,
            }
        }
        p if p.starts_with("/hooks/") => {
            let source = &p["/hooks/".len()..];
            if source.is_empty() || source.contains('/') {
                return not_found();
            }
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            match buffer(req).await {
                Ok(req) => ctx.svc.hook(source, req).await,
                Err(r) => r,
            }
        }
        _ => not_found(),
    }
}

/// `Ok` when basic auth lets the request through (with the user, when
/// basic auth is configured), else the 401.
async fn authorize(ctx: &Ctx, req: &Request<Incoming>) -> Result<Option<String>, Response<Body>> {
    let Some(auth) = ctx.web.auth.as_ref() else {
        return Ok(None);
    };
    if let Some(user) = auth.check(req.headers().get(header::AUTHORIZATION)).await {
        return Ok(Some(user));
    }
    let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"relstat\""),
    );
    Err(resp)
}

/// `None` for GET and HEAD (hyper leaves out the body of a HEAD answer),
/// else the 405.
fn get_or_head(req: &Request<Incoming>) -> Option<Response<Body>> {
    match *req.method() {
        Method::GET | Method::HEAD => None,
        _ => Some(method_not_allowed("GET, HEAD")),
    }
}

/// Reads the whole body, within [`MAX_BODY_BYTES`] and [`BODY_TIMEOUT`].
async fn buffer(req: Request<Incoming>) -> Result<Request<Bytes>, Response<Body>> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY_BYTES} bytes\n"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(collected)) => Ok(Request::from_parts(parts, collected.to_bytes())),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(text(
            StatusCode::BAD_REQUEST,
            "cannot read the request body\n",
        )),
        Err(_) => Err(text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n")),
    }
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// 404, as `text/plain`.
pub fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "Not Found\n")
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
