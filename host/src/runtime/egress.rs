//! Outbound HTTP of a handler (`wasi:http/outgoing-handler`): the origins
//! it is granted ([`Origin`]), and how one request goes out — refused unless
//! its origin is granted, counted against the invocation's `max_calls`,
//! connect and response times bounded by the invocation's deadline, the
//! response body capped, TLS verified against the system's roots, and the
//! invocation's trace context sent as `traceparent`.

use crate::ops::trace::{Carried, TRACEPARENT, TRACESTATE};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// A scheme, host and port a handler may send HTTP requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(into = "String")]
pub struct Origin {
    /// `true` for `https`.
    pub tls: bool,
    /// The host, lower case (an IPv6 address in brackets).
    pub host: String,
    /// The port (the scheme's default when the origin names none).
    pub port: u16,
}

impl Origin {
    /// Reads `http://host[:port]` or `https://host[:port]` (a trailing `/`
    /// is allowed; a path, query, user or wildcard is not).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (tls, rest) = match text.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(format!("`{text}` is not an origin: write `https://HOST` or `http://HOST:PORT`")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', '*']) {
            return Err(format!(
                "`{text}` is not an origin: only a scheme, a host and a port (no path, user or wildcard)"
            ));
        }
        let parsed: http::uri::Authority = authority.parse().map_err(|e| format!("`{text}` is not an origin: {e}"))?;
        // The text after the host, not `Authority::port`, which forgets a
        // port that is no u16.
        let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
        let port = match after_host.rsplit_once(':') {
            None => None,
            Some((_, port)) => Some(port.parse::<u16>().map_err(|_| format!("`{text}` has no valid port"))?),
        };
        Ok(Self::of(tls, parsed.host(), port))
    }

    fn of(tls: bool, host: &str, port: Option<u16>) -> Self {
        Self { tls, host: host.to_ascii_lowercase(), port: port.unwrap_or(if tls { 443 } else { 80 }) }
    }

    /// The origin a request goes to, if its URI names one.
    fn of_uri(uri: &http::Uri) -> Option<Self> {
        let tls = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        Some(Self::of(tls, uri.host()?, uri.port_u16()))
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl From<Origin> for String {
    fn from(origin: Origin) -> Self {
        origin.to_string()
    }
}

/// What one request is checked and sent within.
pub(crate) struct Outgoing<'a> {
    /// The handler's label in logs.
    pub(crate) handler: &'a str,
    /// The origins it is granted.
    pub(crate) granted: &'a [Origin],
    /// When the invocation ends.
    pub(crate) deadline: Instant,
    /// The largest response body it may receive, in bytes.
    pub(crate) max_body: u64,
    /// The invocation's trace, sent on as the request's parent.
    pub(crate) trace: &'a Carried,
}

/// The response future `WasiHttpHooks::send_request` returns.
pub(crate) type Sent = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl Outgoing<'_> {
    /// Checks `request` and sends it, or refuses it with the error the guest sees.
    pub(crate) fn send(self, mut request: http::Request<WasiBody>, options: Option<RequestOptions>) -> Sent {
        let Some(origin) = Origin::of_uri(request.uri()) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        if !self.granted.contains(&origin) {
            log_denied(self.handler, &origin, self.granted);
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let headers = request.headers_mut();
        if let Ok(value) = http::HeaderValue::from_str(&self.trace.parent.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
        match self.trace.state.as_deref().map(http::HeaderValue::from_str) {
            Some(Ok(value)) => {
                headers.insert(TRACESTATE, value);
            }
            _ => {
                headers.remove(TRACESTATE);
            }
        }
        let limits = Limits::new(self.deadline, options.unwrap_or_default(), self.max_body);
        let handler: Arc<str> = self.handler.into();
        Box::new(async move {
            let started = Instant::now();
            let sent = send(request, &origin, limits).await;
            match &sent {
                Ok((response, _)) => tracing::debug!(
                    handler = %handler, %origin, status = response.status().as_u16(),
                    ms = started.elapsed().as_millis() as u64, "outbound HTTP request"
                ),
                Err(e) => tracing::debug!(handler = %handler, %origin, "outbound HTTP request failed: {e:?}"),
            }
            sent
        })
    }
}

/// A refused request is logged (within the handler's log budget) with what
/// would grant it.
fn log_denied(handler: &str, origin: &Origin, granted: &[Origin]) {
    if let Some(left_out) = crate::ops::lograte::line("http-denied", handler) {
        let granted = if granted.is_empty() {
            "none".to_string()
        } else {
            granted.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        tracing::warn!(
            handler,
            %origin,
            "handler `{handler}`: HTTP request to {origin} denied: its sidecar does not grant that origin (granted: {granted}); add it to `http` in the handler's sidecar{left_out}"
        );
    }
}

/// The time limits of one request: the guest's own, none past the deadline.
#[derive(Debug, Clone, Copy)]
struct Limits {
    deadline: Instant,
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
    max_body: u64,
}

impl Limits {
    fn new(deadline: Instant, options: RequestOptions, max_body: u64) -> Self {
        let left = deadline.saturating_duration_since(Instant::now());
        // A zero timeout would fire at once (and wasmtime refuses it):
        // at least a millisecond, at most what is left.
        let bound = |asked: Option<Duration>| asked.map_or(left, |a| a.min(left)).max(Duration::from_millis(1));
        Self {
            deadline,
            connect: bound(options.connect_timeout),
            first_byte: bound(options.first_byte_timeout),
            between_bytes: bound(options.between_bytes_timeout),
            max_body,
        }
    }
}

/// Connects to `origin` (TLS for `https`), sends `request` over HTTP/1.1
/// and returns the response with its body capped and timed, and the
/// connection's own future (its errors reach the guest's body stream).
async fn send(
    mut request: http::Request<WasiBody>,
    origin: &Origin,
    limits: Limits,
) -> Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error> {
    let within = |budget: Duration| tokio::time::Instant::from_std(limits.deadline.min(Instant::now() + budget));
    let authority = format!("{}:{}", origin.host, origin.port);
    let tcp = tokio::time::timeout_at(within(limits.connect), TcpStream::connect(&authority))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Stream> = if origin.tls {
        let config = tls_config().map_err(|e| Error::InternalError(Some(e.clone())))?;
        let name = server_name(&origin.host)?;
        let tls = tokio::time::timeout_at(
            within(limits.connect),
            tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The request line carries the path only, not the scheme and host.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let mut connection = Box::pin(connection);
    let mut response = Box::pin(tokio::time::timeout_at(within(limits.first_byte), sender.send_request(request)));
    // Drive the connection while the response head is on its way.
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        match connection.as_mut().poll(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Ok(Err(e))),
            _ => Poll::Pending,
        }
    })
    .await
    .map_err(|_| Error::HttpResponseTimeout)??;
    if let Some(length) = response.body().size_hint().exact()
        && length > limits.max_body
    {
        return Err(Error::HttpResponseBodySize(Some(length)));
    }
    let response = response.map(|body| Capped::new(body, limits).boxed_unsync());
    let connection = async move { connection.await.map_err(Error::from) };
    Ok((response, Box::new(connection)))
}

/// A connection, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The TLS name of `host` (an IP address or a DNS name).
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ip.into());
    }
    rustls::pki_types::ServerName::try_from(bare.to_string()).map_err(|_| Error::HttpRequestUriInvalid)
}

/// The TLS client settings, built once: the system's root certificates
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), HTTP/1.1.
fn tls_config() -> Result<&'static Arc<rustls::ClientConfig>, &'static String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map_or_else(String::new, |e| format!(" ({e})"));
                let message = format!(
                    "no system root certificates were found{why}: install the `ca-certificates` package, or point SSL_CERT_FILE at a bundle"
                );
                tracing::warn!("outbound HTTPS is unavailable: {message}");
                return Err(message);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS settings: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .as_ref()
}

/// A response body capped at `max_body` bytes, each frame due within the
/// between-bytes timeout and the invocation's deadline.
struct Capped {
    inner: hyper::body::Incoming,
    received: u64,
    limits: Limits,
    /// When the next frame is due.
    due: Pin<Box<tokio::time::Sleep>>,
}

impl Capped {
    fn new(inner: hyper::body::Incoming, limits: Limits) -> Self {
        let due = Box::pin(tokio::time::sleep_until(Self::next_due(&limits)));
        Self { inner, received: 0, limits, due }
    }

    fn next_due(limits: &Limits) -> tokio::time::Instant {
        tokio::time::Instant::from_std(limits.deadline.min(Instant::now() + limits.between_bytes))
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.received = self.received.saturating_add(size);
                if self.received > self.limits.max_body {
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.received)))));
                }
                let due = Self::next_due(&self.limits);
                self.due.as_mut().reset(due);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.due.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        let o = Origin::parse("https://API.example.com").expect("origin");
        assert_eq!((o.tls, o.host.as_str(), o.port), (true, "api.example.com", 443));
        assert_eq!(Origin::parse("http://127.0.0.1:8080/").expect("origin").to_string(), "http://127.0.0.1:8080");
        assert_eq!(Origin::parse("http://[::1]:9").expect("origin").host, "[::1]");
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://*.x.com",
            "https://u@x",
            "http://x:99999",
            "https://",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_uri_names_its_origin() {
        let uri: http::Uri = "https://Api.Example.com/v1?q=1".parse().expect("uri");
        assert_eq!(Origin::of_uri(&uri), Origin::parse("https://api.example.com:443").ok());
        let uri: http::Uri = "http://127.0.0.1:8080/x".parse().expect("uri");
        assert_eq!(Origin::of_uri(&uri), Origin::parse("http://127.0.0.1:8080").ok());
    }
}
