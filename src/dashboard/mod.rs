//! The live web dashboard (`orc daemon --dashboard-addr ADDR`), served by every
//! manager: nodes as columns with their tasks as cards coloured by state (the Swarm
//! visualizer's picture), services with replicas running/desired, updates in progress,
//! and the latest events, kept live with server-sent events. One small page bundled in
//! the binary (no CDN, no build step): [`PAGE`], [`SCRIPT`], [`STYLE`].
//!
//! # Who may call it
//!
//! Only a holder of the dashboard token, which `orc dashboard token` prints on a
//! manager's local socket (root, or whoever the socket's mode lets in). The token is
//! checked before anything else is done for a request, on every path, in constant time,
//! from the `orc_dashboard` cookie or an `Authorization: Bearer` header. Opening
//! `/?token=T` with the right token sets the cookie (`HttpOnly`, `SameSite=Strict`) and
//! redirects to `/`, so the token leaves the address bar and the browser's history. A
//! missing or wrong token gets 401 and a line saying how to get one, nothing of the
//! cluster. The address must be a loopback one unless `--dashboard-allow-remote` is
//! given too: the page is plain HTTP, so from elsewhere the token crosses the network
//! in the clear (put a TLS proxy or an SSH tunnel in front). The token is the same on
//! every manager and changes with `orc ca rotate` (how a leaked token is revoked).
//!
//! A node that is not a manager now (a worker, a locked or a demoted manager) answers
//! 503 to everything: it holds no state to show and no token to check.
//!
//! # What it answers
//!
//! - `GET /`: the page; `GET /app.js`, `GET /app.css`: its script and style.
//! - `GET /api/view`: the [`view::View`] as JSON.
//! - `GET /api/stream`: server-sent events: a `view` event with the whole view at
//!   once, then again whenever it changes (the applied Raft index moves, or every
//!   [`REFRESH`] for what is not in Raft, such as the leader), at most once per
//!   [`MIN_INTERVAL`].
//! - Other paths: 404; other methods: 405. Nothing reads a request body: one announced
//!   (or chunked) is refused with 413.
//!
//! # How much it may hold
//!
//! [`MAX_CONNECTIONS`] connections at once (more wait in the listen backlog), of which
//! at most [`MAX_STREAMS`] live streams (503 beyond); a request head of at most
//! [`MAX_HEADER_BYTES`], sent within 10 s. A view is bounded whatever the cluster's
//! size ([`view`]'s limits), and a stream holds one view and a queue of
//! [`STREAM_QUEUE`] messages.
//!
//! What it shows: names, images, states, addresses, status messages and events, the
//! same as `node ls`, `service ls/ps` and `orc events` — never a secret's content, a
//! key, a token or a certificate. Every text reaches the page as text (the script never
//! writes HTML from data), and the page's content security policy allows only its own
//! script.

pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::store::NodeId;

/// The page.
pub const PAGE: &str = include_str!("page.html");
/// The page's script.
pub const SCRIPT: &str = include_str!("app.js");
/// The page's style.
pub const STYLE: &str = include_str!("app.css");

/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// Live streams at once (each holds a connection).
pub const MAX_STREAMS: usize = 8;
/// The most a request's head may take.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A stream sends a view at most this often.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// A stream looks again this often even when nothing was applied (the leader, node
/// sessions).
pub const REFRESH: Duration = Duration::from_secs(2);
/// Messages a stream's queue holds for a slow browser.
pub const STREAM_QUEUE: usize = 4;
/// The cookie that carries the token.
pub const COOKIE: &str = "orc_dashboard";

/// Checks `--dashboard-addr`: an `IP:PORT`; a non-loopback IP only with
/// `allow_remote`. Returns the address and whether it is reachable from elsewhere.
pub fn check_addr(addr: &str, allow_remote: bool) -> Result<(SocketAddr, bool)> {
    let a: SocketAddr = addr.parse().map_err(|_| {
        Error::InvalidInput(format!(
            "--dashboard-addr {addr:?}: expected IP:PORT (for example 127.0.0.1:4243)"
        ))
    })?;
    let remote = !a.ip().is_loopback();
    if remote && !allow_remote {
        return Err(Error::InvalidInput(format!(
            "--dashboard-addr {a}: not a loopback address; the dashboard is plain HTTP, so its token would cross the network in the clear: add --dashboard-allow-remote to mean it (and put TLS in front)"
        )));
    }
    Ok((a, remote))
}

/// What the dashboard needs of its node: the manager runtime while it is one, and the
/// node's id.
pub trait Source: Send + Sync + 'static {
    /// The manager, or `None` when this node is not one now.
    fn manager(&self) -> Option<Arc<Manager>>;
    /// This node's id, once in a cluster.
    fn node_id(&self) -> Option<NodeId>;
}

#[derive(Clone)]
struct Ctx {
    source: Arc<dyn Source>,
    streams: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
}

/// The router (every path; see the module doc).
pub fn router(source: Arc<dyn Source>, stop: CancellationToken) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/api/view", get(view_json))
        .route("/api/stream", get(stream))
        .fallback(not_found)
        .with_state(Ctx {
            source,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            stop,
        })
}

/// Equal in time whatever the contents (no early exit on the first difference).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token the request carries: the cookie, or a bearer header.
fn presented(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())
    })
}

/// The `token` query parameter.
fn query_token(uri: &Uri) -> Option<&str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

fn text(status: StatusCode, line: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{line}\n"),
    )
        .into_response()
}

/// What a caller without the token is told.
const NO_TOKEN: &str = "orc dashboard: a token is needed: run `orc dashboard token` on a manager and open the address it prints";

/// A request turned away: the status and the one line the caller is told.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        text(self.0, &self.1)
    }
}

/// Checks the caller before anything else: the manager, then the token; a body is
/// refused unread.
fn gate(ctx: &Ctx, headers: &HeaderMap) -> std::result::Result<Arc<Manager>, Refused> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if headers.contains_key(header::TRANSFER_ENCODING) || announced.is_some_and(|n| n > 0) {
        return Err(Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "orc dashboard: requests have no body".into(),
        ));
    }
    let Some(m) = ctx.source.manager() else {
        return Err(Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "orc dashboard: this node is not a manager now; open a manager's dashboard".into(),
        ));
    };
    let expected = m.dashboard_token().map_err(|e| {
        Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("orc dashboard: {e}"),
        )
    })?;
    match presented(headers) {
        Some(t) if same(t.as_bytes(), expected.as_bytes()) => Ok(m),
        _ => Err(Refused(StatusCode::UNAUTHORIZED, NO_TOKEN.into())),
    }
}

/// Headers on everything the dashboard serves.
fn secured(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn page(State(ctx): State<Ctx>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(t) = query_token(&uri) {
        // A login: the token from the address, checked like any other, then kept in a
        // cookie and taken out of the address.
        let mut with = headers.clone();
        with.remove(header::COOKIE);
        with.insert(
            header::AUTHORIZATION,
            match HeaderValue::from_str(&format!("Bearer {t}")) {
                Ok(v) => v,
                Err(_) => return text(StatusCode::UNAUTHORIZED, NO_TOKEN),
            },
        );
        if let Err(r) = gate(&ctx, &with) {
            return r.into_response();
        }
        let cookie = format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/");
        let mut r = StatusCode::SEE_OTHER.into_response();
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    match gate(&ctx, &headers) {
        Ok(_) => secured(PAGE.into_response(), "text/html; charset=utf-8"),
        Err(r) => r.into_response(),
    }
}

async fn script(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    match gate(&ctx, &headers) {
        Ok(_) => secured(SCRIPT.into_response(), "text/javascript; charset=utf-8"),
        Err(r) => r.into_response(),
    }
}

async fn style(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    match gate(&ctx, &headers) {
        Ok(_) => secured(STYLE.into_response(), "text/css; charset=utf-8"),
        Err(r) => r.into_response(),
    }
}

async fn not_found(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    match gate(&ctx, &headers) {
        Ok(_) => text(StatusCode::NOT_FOUND, "orc dashboard: no such page"),
        Err(r) => r.into_response(),
    }
}

/// The view of the manager's state now.
pub fn current(m: &Manager, me: Option<NodeId>) -> view::View {
    let facts = crate::scheduler::live_facts(m);
    let eligible = |svc: &crate::store::Service, node: &crate::store::Node| {
        crate::scheduler::eligible(svc, node, facts.get(&node.id))
    };
    let leader = m.leader();
    let events = m.sm.events().latest(view::MAX_EVENTS);
    m.read(|s| view::view(s, leader, me, &eligible, events, crate::units::now_ms()))
}

/// The view, made off the async threads (it walks every task).
async fn current_async(m: Arc<Manager>, me: Option<NodeId>) -> Option<view::View> {
    tokio::task::spawn_blocking(move || current(&m, me))
        .await
        .ok()
}

async fn view_json(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let m = match gate(&ctx, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match current_async(m, ctx.source.node_id()).await {
        Some(v) => match serde_json::to_string(&v) {
            Ok(body) => secured(body.into_response(), "application/json"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        None => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "orc dashboard: view failed",
        ),
    }
}

async fn stream(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let m = match gate(&ctx, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let Ok(permit) = ctx.streams.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("orc dashboard: {MAX_STREAMS} dashboards are open on this manager already; close one"),
        );
    };
    let me = ctx.source.node_id();
    let (tx, rx) = tokio::sync::mpsc::channel::<
        std::result::Result<SseEvent, std::convert::Infallible>,
    >(STREAM_QUEUE);
    let stop = ctx.stop.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let manager_stop = m.stop_token();
        let mut applied = m.sm.subscribe();
        let mut last: Option<view::View> = None;
        loop {
            applied.borrow_and_update();
            let Some(mut v) = current_async(m.clone(), me).await else {
                return;
            };
            let generated = v.generated_ms;
            v.generated_ms = 0;
            if last.as_ref() != Some(&v) {
                let mut sent = v.clone();
                sent.generated_ms = generated;
                let Ok(data) = serde_json::to_string(&sent) else {
                    return;
                };
                if tx
                    .send(Ok(SseEvent::default().event("view").data(data)))
                    .await
                    .is_err()
                {
                    return;
                }
                last = Some(v);
            }
            tokio::select! {
                _ = tokio::time::sleep(MIN_INTERVAL) => {}
                _ = tx.closed() => return,
                _ = stop.cancelled() => return,
                _ = manager_stop.cancelled() => return,
            }
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(REFRESH) => {}
                _ = tx.closed() => return,
                _ = stop.cancelled() => return,
                _ = manager_stop.cancelled() => return,
            }
        }
    });
    let body = Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    secured(body.into_response(), "text/event-stream")
}

/// Binds `addr` now (the daemon does not start with a dashboard address it cannot
/// serve) and returns the listener with its address.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::InvalidInput(format!("--dashboard-addr {addr}: cannot listen: {e}")))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves the dashboard on `listener` until `stop`.
pub fn serve(listener: tokio::net::TcpListener, source: Arc<dyn Source>, stop: CancellationToken) {
    crate::metrics::server::serve_http(
        listener,
        router(source, stop.clone()),
        MAX_CONNECTIONS,
        MAX_HEADER_BYTES,
        stop,
        "dashboard",
    );
}

#[cfg(test)]
mod tests;
