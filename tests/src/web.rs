//! A real local HTTP server for the outbound-HTTP tests: on a free loopback
//! port, with routes that answer at once, late, with a large body (with or
//! without a length) or with the trace headers they received; it records
//! every request it gets.

#![allow(clippy::expect_used, reason = "a test server that cannot bind fails the test at once")]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the server received: its path and trace headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The path asked for.
    pub path: String,
    /// Its `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// Its `tracestate` header, if any.
    pub tracestate: Option<String>,
}

/// The running server; stops when dropped.
pub struct WebServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl WebServer {
    /// Starts the server on `127.0.0.1` and a free port. Routes:
    /// `/hello` (`hello`), `/slow/{ms}` (`slow` after ms), `/big/{n}` (n
    /// bytes with a Content-Length), `/stream/{n}` (n bytes, chunked, no
    /// length), `/trace` (the `traceparent` it received).
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let app = axum::Router::new().fallback(answer).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the test web server");
        let port = listener.local_addr().expect("its address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { port, seen, _stop: stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Records the request, then answers it by its path.
async fn answer(State(seen): State<Arc<Mutex<Vec<Seen>>>>, request: Request) -> Response {
    let (request, _body) = request.into_parts();
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = request.uri.path().to_string();
    let traceparent = header("traceparent");
    let entry = Seen { path: path.clone(), traceparent: traceparent.clone(), tracestate: header("tracestate") };
    if let Ok(mut seen) = seen.lock() {
        seen.push(entry);
    }
    let number = |prefix: &str| path.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
    if path == "/hello" {
        return "hello".into_response();
    }
    if path == "/trace" {
        return traceparent.unwrap_or_else(|| "none".into()).into_response();
    }
    if let Some(ms) = number("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        return "slow".into_response();
    }
    if let Some(n) = number("/big/") {
        return vec![b'x'; n].into_response();
    }
    if let Some(n) = number("/stream/") {
        let chunks = (0..n.div_ceil(1024)).map(move |i| Ok::<_, std::io::Error>(vec![b'x'; 1024.min(n - i * 1024)]));
        return Body::from_stream(futures_util::stream::iter(chunks)).into_response();
    }
    (StatusCode::NOT_FOUND, "no such route").into_response()
}
