//! Outbound HTTP from a handler, blocking, over `wasi:http/outgoing-handler`.
//!
//! The node sends a request only to an origin the handler's sidecar grants
//! (`http = ["https://api.example.com"]`); any other is refused with
//! [`ErrorCode::HttpRequestDenied`]. Requests count against the
//! invocation's `max_calls`, and none outlives the invocation's deadline.
//!
//! ```no_run
//! # fn demo() -> Result<(), busbar_guest::http::Error> {
//! let response = busbar_guest::http::get("http://127.0.0.1:8080/stock/42")?;
//! assert_eq!(response.status, 200);
//! # Ok(()) }
//! ```

pub use wasip2::http::types::ErrorCode;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields, in order (names lower case).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum Error {
    /// The URL is not `http://` or `https://` with a host.
    Url(String),
    /// A header was refused (a forbidden or malformed field).
    Header(String),
    /// The request failed with a `wasi:http` error code: `HttpRequestDenied`
    /// (the origin is not granted), `ConnectionLimitReached` (`max_calls`),
    /// `ConnectionTimeout` or `HttpResponseTimeout` (the deadline),
    /// `HttpResponseBodySize` (the node's `max_http_body`), and the like.
    Code(ErrorCode),
    /// The body stream failed without an error code (its message).
    Body(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(url) => write!(f, "`{url}` is not an http:// or https:// URL"),
            Error::Header(name) => write!(f, "header `{name}` was refused"),
            Error::Code(code) => write!(f, "HTTP request failed: {code:?}"),
            Error::Body(message) => write!(f, "HTTP body failed: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::Failure {
    /// A failed request as a retryable failure, except a refusal by the
    /// node (`HttpRequestDenied`, a bad URL or header), which no retry fixes.
    fn from(e: Error) -> Self {
        match e {
            Error::Code(ErrorCode::HttpRequestDenied) | Error::Url(_) | Error::Header(_) => {
                crate::Failure::Denied(e.to_string())
            }
            _ => crate::Failure::Retry(e.to_string()),
        }
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    request("GET", url, &[], &[])
}

/// Sends `method url` with `headers` and `body` and reads the whole response.
pub fn request(method: &str, url: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Result<Response, Error> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(Error::Url(url.to_string())),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(Error::Url(url.to_string()));
    }
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value).map_err(|_| Error::Header((*name).to_string()))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    let refused = |what: &str| Error::Url(format!("{url} ({what} refused)"));
    request.set_method(&method).map_err(|()| refused("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| refused("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| refused("authority"))?;
    request.set_path_with_query(Some(&path)).map_err(|()| refused("path"))?;
    let outgoing = request.body().map_err(|()| Error::Body("the request body was taken".into()))?;
    let pending = outgoing_handler::handle(request, None).map_err(Error::Code)?;
    {
        let stream = outgoing.write().map_err(|()| Error::Body("the request body stream was taken".into()))?;
        // blocking-write-and-flush takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(Error::Code)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(Error::Code(code)),
        Some(Err(())) | None => return Err(Error::Body("the response was already taken".into())),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|()| Error::Body("the response body was taken".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| Error::Body("the response body stream was taken".into()))?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error(e)),
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    Ok(Response { status, headers, body })
}

/// A stream error, with its `wasi:http` code when it has one.
fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::Body("the stream closed".into()),
        StreamError::LastOperationFailed(io) => match wasip2::http::types::http_error_code(&io) {
            Some(code) => Error::Code(code),
            None => Error::Body(io.to_debug_string()),
        },
    }
}
