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
//! - Basic auth guards `/metrics` and `/api/v1`, and `/metrics` answers 403
//!   to users the [`Service`] refuses it (partner views); the probes (`/healthz`,
//!   `/readyz`) stay open for kubelet and systemd checks, and `/hooks` are
//!   left to each source's own authentication (HMAC signatures, tokens),
//!   since CI tools cannot send basic auth. TLS client-certificate policy,
//!   when configured, applies to every connection, probes included.
//! - Limits, so a slow or hostile client cannot pin the agent: at most
//!   [`MAX_CONNECTIONS`] connections and `[http] max_connections_per_peer`
//!   per client address, slots of clients that dawdle given to newcomers and
//!   slots kept for the probes and `/metrics` (`conns.rs`); a TLS handshake
//!   must end within [`HANDSHAKE_TIMEOUT`] and each request's headers arrive
//!   within `[http] header_timeout` (which also closes idle keep-alive
//!   connections); request bodies are read only by the handler that wants
//!   them, within its own limit, [`BODY_TIMEOUT`] and a budget shared by all
//!   connections ([`BODY_BUDGET_BYTES`]; `body.rs`).
//! - Shutdown: when the future given to [`Server::run`] resolves, the listener
//!   closes, idle keep-alive connections are closed, requests in flight get
//!   up to [`SHUTDOWN_GRACE`] to finish, then `run` returns.

mod auth;
mod body;
mod conns;
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

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use conns::Slots;
pub use conns::{ConnStats, MAX_CONNECTIONS, RESERVED_FOR_PROBES, Refusal};
use webconfig::WebConfig;

pub use body::{
    BODY_BUDGET_BYTES, BODY_TIMEOUT, BUSY_RETRY_AFTER, BodyBudget, BodyError, MAX_API_BODY_BYTES,
    MAX_BODY_BYTES, PendingBody, ReadBody,
};

/// A TLS handshake must end within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `[http] header_timeout`'s default: a request's headers must arrive within
/// this, counted from when the connection is ready for the request. Short,
/// so a client trickling its headers frees its slot soon (hyper's 30 s let
/// 512 of them hold every slot); long enough for a slow network's request
/// head. A keep-alive connection idle this long is closed too: a scraper
/// with a longer interval reconnects.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `[http] max_connections_per_peer`'s default: an eighth of
/// [`MAX_CONNECTIONS`], so one address cannot take them all, while a
/// Prometheus, a CI server and a few curls fit well within.
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// The read buffer of one connection, so the longest request head it takes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
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

    /// Whether basic-auth user `user` may read `/metrics` (403 otherwise):
    /// partner users, whose view of `/api/v1` is scoped, may not, since
    /// the exposition cannot be scoped.
    fn metrics_allowed(&self, user: &str) -> bool {
        let _ = user;
        true
    }

    /// `GET /readyz`: `Ok` answers 200, `Err(reason)` answers 503 with the
    /// reason (e.g. "store not open", "source deploy-log catching up").
    fn ready(&self) -> Result<(), String>;

    /// `GET /healthz`: `Ok` answers 200 "ok", `Err(reason)` answers 503 with
    /// the reason: the process runs but cannot do its work (its core
    /// stopped) and must be restarted.
    fn healthy(&self) -> Result<(), String> {
        Ok(())
    }

    /// `/api/v1/{path}` (any method), after basic auth; `path` is what
    /// follows `/api/v1/` (empty for `/api/v1` itself). The body has been
    /// read in full (at most [`MAX_API_BODY_BYTES`]); with basic auth, the
    /// request's extensions hold the [`AuthUser`].
    fn api<'a>(&'a self, path: &'a str, req: Request<Bytes>) -> ResponseFuture<'a> {
        let _ = (path, req);
        Box::pin(async { not_found() })
    }

    /// `POST /hooks/{source}`, without basic auth: the source authenticates
    /// the request itself. `source` is a single, non-empty path segment. The
    /// body is not read yet: find the source and check what the headers
    /// tell first, then [`PendingBody::read`] it within the source's limit
    /// (an answer given without reading it closes the connection).
    fn hook<'a>(&'a self, source: &'a str, req: Request<PendingBody>) -> ResponseFuture<'a> {
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

/// The `basic_auth_users` names of a web config file, sorted (empty: no
/// basic auth), for `check-config`'s partner checks. Other problems of the
/// file are [`check_web_config`]'s.
pub fn basic_auth_users(path: &Path) -> Result<Vec<String>, HttpError> {
    WebConfig::user_names(path)
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
    /// Bytes of request bodies in memory at once ([`BODY_BUDGET_BYTES`];
    /// tests set less).
    body_budget: usize,
    max_connections_per_peer: usize,
    header_timeout: Duration,
    stats: Arc<ConnStats>,
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
            body_budget: BODY_BUDGET_BYTES,
            max_connections_per_peer: MAX_CONNECTIONS_PER_PEER,
            header_timeout: HEADER_TIMEOUT,
            stats: Arc::default(),
        })
    }

    /// Sets `[http] max_connections_per_peer` and `header_timeout` (the
    /// defaults are [`MAX_CONNECTIONS_PER_PEER`] and [`HEADER_TIMEOUT`]).
    pub fn with_limits(
        mut self,
        max_connections_per_peer: usize,
        header_timeout: Duration,
    ) -> Self {
        self.max_connections_per_peer = max_connections_per_peer;
        self.header_timeout = header_timeout;
        self
    }

    /// The listener's connection counters (open, refused by reason), for
    /// `/metrics`.
    pub fn stats(&self) -> Arc<ConnStats> {
        self.stats.clone()
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
            body_budget,
            max_connections_per_peer,
            header_timeout,
            stats,
        } = self;
        let acceptor = web.tls.clone().map(TlsAcceptor::from);
        tracing::info!(address = %local_addr, tls = acceptor.is_some(),
            basic_auth = web.auth.is_some(), "HTTP listener started");
        let budget = BodyBudget::new(body_budget);
        let ctx = Arc::new(Ctx {
            svc,
            web,
            budget,
            header_timeout,
        });
        // Tracks connections so shutdown can wait for them.
        let graceful = GracefulShutdown::new();
        let slots = Slots::new(max_connections_per_peer, stats);
        tokio::pin!(shutdown);

        // Accepting never waits for a free slot: a client in the kernel's
        // backlog would wait behind every hostile one. Each connection is
        // given a slot, possibly one taken from a dawdling client, or closed.
        loop {
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
            let slot = match slots.admit(peer.ip()) {
                Ok(slot) => Arc::new(slot),
                Err(reason) => {
                    tracing::debug!(%peer, reason = reason.as_str(), "HTTP connection refused");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let ctx = Arc::clone(&ctx);
            let acceptor = acceptor.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let serve = async {
                    match acceptor {
                        None => serve_connection(stream, ctx, watcher, slot.clone()).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => {
                                    serve_connection(tls, ctx, watcher, slot.clone()).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                };
                tokio::select! {
                    () = serve => {}
                    () = slot.evicted() => {
                        tracing::debug!(%peer, "HTTP connection closed: its slot went to a new one");
                    }
                }
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
    /// Shared by the request bodies of every connection.
    budget: Arc<BodyBudget>,
    header_timeout: Duration,
}

async fn serve_connection<I>(io: I, ctx: Arc<Ctx>, watcher: Watcher, slot: Arc<conns::Slot>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = ctx.header_timeout;
    let service = service_fn(move |req: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        // Taken when the request head is in, held until the answer is ready.
        let request = slot.request(is_probe(req.uri().path()));
        async move {
            let resp = match request {
                Some(_request) => route(&ctx, req).await,
                None => busy(),
            };
            Ok::<_, Infallible>(with_headers(&ctx, resp))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // hyper's read buffer grows to ~400 KiB by default: 512 connections
        // could hold 200 MiB before any body budget applies. A request head
        // (line and headers) of up to 64 KiB is far more than any webhook
        // sender or scraper uses; a longer one is answered 431.
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// The paths served from the slots kept for probes: cheap, no body, what
/// kubelet, systemd checks and Prometheus need while the agent is under load.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// 503 for an `/api` or `/hooks` request when the slots left are kept for probes.
fn busy() -> Response<Body> {
    let mut resp = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in progress; retry later\n",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

fn with_headers(ctx: &Ctx, mut resp: Response<Body>) -> Response<Body> {
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
            None => match ctx.svc.healthy() {
                Ok(()) => text(StatusCode::OK, "ok\n"),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
        },
        "/readyz" => match get_or_head(&req) {
            Some(r) => r,
            None => match ctx.svc.ready() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
        },
        "/metrics" => {
            match authorize(ctx, &req).await {
                Err(denied) => return denied,
                Ok(Some(user)) if !ctx.svc.metrics_allowed(&user) => {
                    return text(
                        StatusCode::FORBIDDEN,
                        "Forbidden: a partner user reads /api/v1 only; /metrics cannot be scoped\n",
                    );
                }
                Ok(_) => {}
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
            let (mut parts, body) = req.into_parts();
            let body = PendingBody::new(body, &parts.headers, Arc::clone(&ctx.budget));
            // Held until the answer is made, so the budget counts it.
            let read = match body.read(MAX_API_BODY_BYTES).await {
                Ok(read) => read,
                Err(e) => return e.response(None),
            };
            if let Some(user) = user {
                parts.extensions.insert(AuthUser(user));
            }
            let req = Request::from_parts(parts, read.bytes().clone());
            ctx.svc.api(rest, req).await
        }
        p if p.starts_with("/hooks/") => {
            let source = &p["/hooks/".len()..];
            if source.is_empty() || source.contains('/') {
                return not_found();
            }
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            let (parts, body) = req.into_parts();
            let body = PendingBody::new(body, &parts.headers, Arc::clone(&ctx.budget));
            ctx.svc.hook(source, Request::from_parts(parts, body)).await
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
