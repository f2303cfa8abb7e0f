//! The node's HTTP listeners, both optional and off by default:
//!
//! - **operations** (`busbar run --metrics ADDR`): `GET /metrics` (Prometheus
//!   text format), `GET /healthz` (the process answers) and `GET /readyz`
//!   (200 once the handlers are loaded and every bus connection is up; 503
//!   while starting, while a connection is down and while draining);
//! - **gateway** (`busbar run --http ADDR`): the bus over HTTP —
//!   `POST /call/NAME` (body in, reply out), `POST /dispatch|broadcast|rolecast/NAME`,
//!   `GET /nodes|services|stats`. A failure's class becomes the status code
//!   ([`status_of`]) and the body is `{"class": …, "message": …}`.
//!
//! Both are plain HTTP/1.1 without authentication of their own; bind them to
//! loopback (the default) and put a proxy in front for anything else. The
//! listeners start before the node has loaded its handlers, so that probes
//! get answers while it starts; [`Ops`] is the state they share with it.

use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{Headers, Mode};
use crate::node::Node;
use crate::ops::metrics::Metrics;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where a node is in its life, as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading handlers and connecting.
    Starting,
    /// Serving.
    Ready,
    /// Stopping: finishing what runs, taking nothing new.
    Draining,
}

/// What the listeners share with the node they serve.
pub struct Ops {
    phase: AtomicU8,
    node: OnceLock<Node>,
    metrics: Arc<Metrics>,
}

impl Ops {
    /// State for a node that is about to start and will record into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { phase: AtomicU8::new(Phase::Starting as u8), node: OnceLock::new(), metrics })
    }

    /// The node has started: it serves from now on.
    pub fn attach(&self, node: Node) {
        let _ = self.node.set(node);
        self.phase.store(Phase::Ready as u8, Ordering::Release);
    }

    /// The node is stopping: readiness fails from now on.
    pub fn drain(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::Release);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// `Ok` when the node is ready for traffic, otherwise why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        match (self.phase(), self.node.get()) {
            (Phase::Starting, _) | (_, None) => Err("starting: loading handlers and connecting"),
            (Phase::Draining, _) => Err("draining: finishing in-flight work before it stops"),
            (Phase::Ready, Some(node)) if !node.is_connected() => Err("a bus connection is down"),
            (Phase::Ready, Some(_)) => Ok(()),
        }
    }

    fn node(&self) -> Result<&Node, Failure> {
        self.node.get().ok_or_else(|| Failure::new(FailureClass::Overloaded, "the node is still starting"))
    }
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn ops_routes() -> Router<Arc<Ops>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
}

/// The gateway: the four deliveries and the discovery listings.
pub fn gateway_routes() -> Router<Arc<Ops>> {
    Router::new()
        .route("/call/{name}", post(call))
        .route(
            "/dispatch/{name}",
            post(async |State(ops): State<Arc<Ops>>, Path(name): Path<String>, body: Bytes| {
                accept(&ops, Mode::Dispatch, &name, body).await
            }),
        )
        .route(
            "/broadcast/{name}",
            post(async |State(ops): State<Arc<Ops>>, Path(name): Path<String>, body: Bytes| {
                accept(&ops, Mode::Broadcast, &name, body).await
            }),
        )
        .route(
            "/rolecast/{name}",
            post(async |State(ops): State<Arc<Ops>>, Path(name): Path<String>, body: Bytes| {
                accept(&ops, Mode::Rolecast, &name, body).await
            }),
        )
        .route("/nodes", get(nodes))
        .route("/services", get(services))
        .route("/stats", get(stats))
        // A handler's own `max_payload` refuses large payloads as `invalid`;
        // this only bounds what the gateway buffers.
        .layer(DefaultBodyLimit::max(GATEWAY_BODY_LIMIT))
}

/// The largest request body the gateway reads.
pub const GATEWAY_BODY_LIMIT: usize = crate::limits::MAX_MESSAGE as usize;

/// How long `POST /call/NAME` waits for the reply unless `?timeout=` says.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP status of a failure class.
pub fn status_of(class: FailureClass) -> StatusCode {
    match class {
        FailureClass::Invalid => StatusCode::BAD_REQUEST,
        FailureClass::Unauthorized => StatusCode::UNAUTHORIZED,
        FailureClass::Denied => StatusCode::FORBIDDEN,
        FailureClass::NotFound => StatusCode::NOT_FOUND,
        FailureClass::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        FailureClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        FailureClass::Retry | FailureClass::Failed | FailureClass::Trapped => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The header naming a failure's class on an error response.
pub const FAILURE_CLASS_HEADER: &str = "busbar-failure-class";

fn failure_response(failure: &Failure) -> Response {
    let mut response = (status_of(failure.class), axum::Json(failure)).into_response();
    if let Ok(class) = HeaderValue::from_str(failure.class.as_str()) {
        response.headers_mut().insert(FAILURE_CLASS_HEADER, class);
    }
    if failure.class == FailureClass::Overloaded {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let text = match ops.node.get() {
        Some(node) => node.metrics_text(),
        None => ops.metrics.render(),
    };
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

/// `?timeout=` of a call.
#[derive(serde::Deserialize)]
struct CallQuery {
    timeout: Option<String>,
}

/// The request headers a delivery carries on: W3C trace context.
fn forwarded(headers: &HeaderMap) -> Headers {
    [crate::ops::trace::TRACEPARENT, crate::ops::trace::TRACESTATE]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), headers.get(name)?.to_str().ok()?.to_string())))
        .collect()
}

async fn call(
    State(ops): State<Arc<Ops>>,
    Path(name): Path<String>,
    Query(query): Query<CallQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let node = match ops.node() {
        Ok(node) => node,
        Err(failure) => return failure_response(&failure),
    };
    let timeout = match query.timeout.as_deref().map(|t| crate::limits::call_timeout("?timeout=", t)) {
        None => DEFAULT_CALL_TIMEOUT,
        Some(Ok(timeout)) => timeout,
        Some(Err(e)) => return failure_response(&Failure::new(FailureClass::Invalid, e)),
    };
    match node.call_with(&name, body.to_vec(), forwarded(&headers), timeout).await {
        Ok(reply) => ([(header::CONTENT_TYPE, "application/octet-stream")], reply).into_response(),
        Err(failure) => failure_response(&failure),
    }
}

/// A dispatch, broadcast or rolecast: 202 once the bus has accepted it (a
/// dispatch answers its id).
async fn accept(ops: &Ops, mode: Mode, name: &str, body: Bytes) -> Response {
    let node = match ops.node() {
        Ok(node) => node,
        Err(failure) => return failure_response(&failure),
    };
    let payload = body.to_vec();
    let accepted = match mode {
        Mode::Dispatch => node.dispatch(name, payload).await.map(|receipt| Some(receipt.id)),
        Mode::Broadcast => node.broadcast(name, payload).await.map(|()| None),
        Mode::Rolecast | Mode::Call => node.rolecast(name, payload).await.map(|()| None),
    };
    match accepted {
        Ok(Some(id)) => (StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "id": id }))).into_response(),
        Ok(None) => StatusCode::ACCEPTED.into_response(),
        Err(failure) => failure_response(&failure),
    }
}

/// A discovery listing as JSON, or 502 when the bus does not answer.
async fn listing<T: serde::Serialize>(
    ops: &Ops,
    list: impl AsyncFnOnce(&Node) -> Result<T, crate::driver::DriverError>,
) -> Response {
    let node = match ops.node() {
        Ok(node) => node,
        Err(failure) => return failure_response(&failure),
    };
    match list(node).await {
        Ok(items) => axum::Json(items).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, axum::Json(serde_json::json!({ "error": e.to_string() }))).into_response(),
    }
}

async fn nodes(State(ops): State<Arc<Ops>>) -> Response {
    listing(&ops, async |node| node.nodes().await).await
}

async fn services(State(ops): State<Arc<Ops>>) -> Response {
    listing(&ops, async |node| node.services().await).await
}

async fn stats(State(ops): State<Arc<Ops>>) -> Response {
    listing(&ops, async |node| node.stats().await).await
}

/// A listener serving a router until shut down.
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` and serves `router` on it until `shutdown` is cancelled;
    /// then it stops accepting and finishes the requests in progress.
    pub async fn start(addr: SocketAddr, router: Router, shutdown: CancellationToken) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
        });
        Ok(Self { addr, task })
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has shut down and its requests have finished.
    pub async fn finished(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// The routers for the listeners asked for: `metrics` (operations) and
/// `http` (gateway); when both are the same address, one listener serves both.
pub fn routers(ops: &Arc<Ops>, metrics: Option<SocketAddr>, http: Option<SocketAddr>) -> Vec<(SocketAddr, Router)> {
    match (metrics, http) {
        (Some(m), Some(h)) if m == h => {
            vec![(m, ops_routes().merge(gateway_routes()).with_state(ops.clone()))]
        }
        (m, h) => m
            .map(|m| (m, ops_routes().with_state(ops.clone())))
            .into_iter()
            .chain(h.map(|h| (h, gateway_routes().with_state(ops.clone()))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_classes_map_to_the_documented_statuses() {
        let expected = [
            (FailureClass::Invalid, 400),
            (FailureClass::Unauthorized, 401),
            (FailureClass::Denied, 403),
            (FailureClass::NotFound, 404),
            (FailureClass::Overloaded, 503),
            (FailureClass::Timeout, 504),
            (FailureClass::Retry, 500),
            (FailureClass::Failed, 500),
            (FailureClass::Trapped, 500),
        ];
        for (class, status) in expected {
            assert_eq!(status_of(class).as_u16(), status, "{class}");
        }
    }

    #[test]
    fn readiness_follows_the_phases() {
        let ops = Ops::new(Arc::new(Metrics::new(1)));
        assert_eq!(ops.phase(), Phase::Starting);
        assert!(ops.readiness().unwrap_err().starts_with("starting"));
        ops.drain();
        assert!(ops.readiness().is_err());
    }
}
