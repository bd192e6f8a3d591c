//! The `/metrics` endpoint (`orc daemon --metrics-addr ADDR`).
//!
//! # Who may call it
//!
//! Anyone who can reach the address: the endpoint has no authentication, as
//! Prometheus exporters usually have none. So the address must be a loopback one unless
//! the operator says otherwise in so many words (`--metrics-addr` with a non-loopback
//! IP is refused unless `--metrics-allow-remote` is given too, and then the daemon warns
//! at start). What it shows is counts, durations, indexes and service names — never a
//! secret's name or content, a token, a key or a certificate.
//!
//! # What it answers
//!
//! - `GET /metrics` (also `HEAD`): the exposition, in the OpenMetrics text format when
//!   the scraper asks for it (Prometheus does), else in the classic Prometheus text
//!   format ([`classic`]).
//! - Any other method on `/metrics`: 405. Any other path: 404.
//! - Request bodies are refused beyond [`MAX_BODY_BYTES`] (413; a scrape has none, and
//!   the body is never read); the request's head by [`MAX_HEADER_BYTES`] and 10 s to
//!   send it (HTTP/1 only).
//!   Connections at once are bounded by [`MAX_CONNECTIONS`]; a scrape's work is one
//!   snapshot read of the state tables and one encode of a registry whose size is
//!   bounded (see the label bounds in [`crate::metrics`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::error::{Error, Result};

/// The largest request body accepted (a scrape has none).
pub const MAX_BODY_BYTES: usize = 1024;

/// The most a request's head (request line and headers) may take; beyond it the
/// connection is answered 431 and closed.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Scrape connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// The content type of the OpenMetrics exposition (what Prometheus asks for).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the classic Prometheus text format (everything else: curl,
/// `promtool check metrics`).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The OpenMetrics text turned into the classic Prometheus text format (0.0.4): the
/// same samples; a counter's family is named as its samples (`orc_x_total`), and the
/// `# UNIT` and `# EOF` lines, which the classic format lacks, are left out.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut family: Vec<&str> = vec![];
    let flush = |family: &mut Vec<&str>, out: &mut String| {
        let counter = family
            .iter()
            .any(|l| l.starts_with("# TYPE ") && l.ends_with(" counter"));
        for l in family.drain(..) {
            let renamed = match (
                counter,
                l.strip_prefix("# HELP "),
                l.strip_prefix("# TYPE "),
            ) {
                (true, Some(rest), _) => rest
                    .split_once(' ')
                    .map(|(name, help)| format!("# HELP {name}_total {help}")),
                (true, _, Some(rest)) => rest
                    .split_once(' ')
                    .map(|(name, ty)| format!("# TYPE {name}_total {ty}")),
                _ => None,
            };
            out.push_str(renamed.as_deref().unwrap_or(l));
            out.push('\n');
        }
    };
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        if l.starts_with("# HELP ") {
            flush(&mut family, &mut out);
        }
        family.push(l);
    }
    flush(&mut family, &mut out);
    out
}

/// Whether the scraper asked for OpenMetrics (`Accept: application/openmetrics-text`).
fn wants_openmetrics(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Fills the gauges read at scrape time (Raft, state tables, certificate), called before
/// each scrape.
pub type Refresh = Arc<dyn Fn(&Metrics) + Send + Sync>;

/// Checks `--metrics-addr`: an `IP:PORT`; a non-loopback IP only with `allow_remote`.
/// Returns the address and whether it is reachable from elsewhere (to warn).
pub fn check_addr(addr: &str, allow_remote: bool) -> Result<(SocketAddr, bool)> {
    let a: SocketAddr = addr.parse().map_err(|_| {
        Error::InvalidInput(format!(
            "--metrics-addr {addr:?}: expected IP:PORT (for example 127.0.0.1:9323)"
        ))
    })?;
    let remote = !a.ip().is_loopback();
    if remote && !allow_remote {
        return Err(Error::InvalidInput(format!(
            "--metrics-addr {a}: not a loopback address; anyone who reaches it may read the metrics (no authentication), so add --metrics-allow-remote to mean it"
        )));
    }
    Ok((a, remote))
}

#[derive(Clone)]
struct Ctx {
    metrics: Arc<Metrics>,
    refresh: Refresh,
}

/// The router: `/metrics` only.
pub fn router(metrics: Arc<Metrics>, refresh: Refresh) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Ctx { metrics, refresh })
}

async fn scrape(State(ctx): State<Ctx>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    // A scrape has no body: one announced beyond the limit is refused before any work
    // (the handler never reads a body, so none is buffered either way).
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if chunked || announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let openmetrics = wants_openmetrics(&headers);
    let text = tokio::task::spawn_blocking(move || {
        (ctx.refresh)(&ctx.metrics);
        ctx.metrics.encode()
    })
    .await;
    match text {
        Ok(text) if openmetrics => {
            (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
        }
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CLASSIC_CONTENT_TYPE)],
            classic(&text),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Binds `addr` and serves the endpoint until `stop`. Binding fails at once (the
/// daemon does not start with a metrics address it cannot serve).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: Refresh,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::InvalidInput(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    let local = listener.local_addr()?;
    serve_http(
        listener,
        router(metrics, refresh),
        MAX_CONNECTIONS,
        MAX_HEADER_BYTES,
        stop,
        "metrics",
    );
    Ok(local)
}

/// Serves `app` over HTTP/1 on `listener` until `stop`: at most `max_connections` at
/// once (more wait in the listen backlog), a request head of at most
/// `max_header_bytes` sent within 10 s. The one accept loop of the node's small HTTP
/// listeners (metrics, the dashboard); `what` names it in the debug log.
pub fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    max_connections: usize,
    max_header_bytes: usize,
    stop: CancellationToken,
    what: &'static str,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let (sock, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("{what} accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let app = app.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(app);
                let io = hyper_util::rt::TokioIo::new(sock);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .max_buf_size(max_header_bytes)
                    .serve_connection(io, service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    r = conn => if let Err(e) = r { tracing::debug!("{what} connection: {e}") },
                }
                drop(permit);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counter_families_as_their_samples() {
        let m = Metrics::new();
        m.dns.queries.inc_by(4);
        m.cert_expiry_seconds.set(3.5);
        m.scheduler_pass_seconds.observe(0.01);
        let om = m.encode();
        assert!(om.contains("# TYPE orc_dns_queries counter"), "{om}");
        assert!(
            om.contains("# UNIT orc_node_certificate_expiry_seconds seconds"),
            "{om}"
        );
        let text = classic(&om);
        assert!(
            text.contains("# TYPE orc_dns_queries_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP orc_dns_queries_total DNS queries received"),
            "{text}"
        );
        assert!(text.contains("\norc_dns_queries_total 4\n"), "{text}");
        assert!(
            text.contains("# TYPE orc_node_certificate_expiry_seconds gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("\norc_node_certificate_expiry_seconds 3.5\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE orc_scheduler_pass_duration_seconds histogram\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // every sample line survives, in order
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
    }

    #[test]
    fn loopback_is_taken_and_anything_else_needs_saying_so() {
        assert_eq!(
            check_addr("127.0.0.1:9323", false).unwrap(),
            ("127.0.0.1:9323".parse().unwrap(), false)
        );
        assert!(check_addr("[::1]:9323", false).is_ok());
        let e = check_addr("0.0.0.0:9323", false).unwrap_err().to_string();
        assert!(e.contains("--metrics-allow-remote"), "{e}");
        assert!(check_addr("10.1.2.3:9323", false).is_err());
        assert_eq!(
            check_addr("0.0.0.0:9323", true).unwrap(),
            ("0.0.0.0:9323".parse().unwrap(), true)
        );
        let e = check_addr("localhost:9323", false).unwrap_err().to_string();
        assert!(e.contains("--metrics-addr"), "{e}");
    }
}
