//! Outbound HTTP (`wasi:http/outgoing-handler`): the `fetch` guest against a
//! real local HTTP server — only granted origins are reached, the
//! invocation's deadline, `max_calls` and `max_http_body` bound every
//! request, and the invocation's trace goes out as `traceparent`.

use busbar::{FailureClass, Node, ops::trace::SpanContext};
use busbar_tests::support::{Folder, TEST_TIMEOUT, capture_logs, refusal, start_on};
use busbar_tests::web::WebServer;
use std::time::{Duration, Instant};

/// The operator allows any loopback origin.
const LOOPBACK: &str = "[grants]\nhttp = [\"http://127.0.0.1:*\"]\n";

async fn fetch(node: &Node, payload: &str) -> Result<String, busbar::Failure> {
    let reply = node.call("fetch", payload.as_bytes().to_vec(), TEST_TIMEOUT).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

async fn node_granting(origins: &[String], sidecar: &str) -> (Node, Folder) {
    let folder = Folder::with(&["fetch"]);
    folder.sidecar("fetch", &format!("http = {origins:?}\n{sidecar}"));
    let (node, report) = start_on(&Default::default(), &folder, LOOPBACK).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    (node, folder)
}

#[tokio::test]
async fn a_granted_origin_is_reached_and_any_other_is_denied() {
    let web = WebServer::start().await;
    let other = WebServer::start().await;
    let logs = capture_logs();
    let (node, _folder) = node_granting(&[web.origin()], "").await;
    assert_eq!(fetch(&node, &web.url("/hello")).await.expect("granted"), "200 hello");

    let denied = fetch(&node, &other.url("/hello")).await.expect_err("not granted");
    assert_eq!(denied.class, FailureClass::Denied, "{denied}");
    assert!(denied.message.contains("HttpRequestDenied"), "{denied}");
    assert!(other.seen().is_empty(), "a denied request never leaves the node: {:?}", other.seen());
    let log = logs.contents();
    assert!(
        log.contains(&format!("HTTP request to {} denied", other.origin())) && log.contains("`http`"),
        "the denial is logged with what would grant it: {log}"
    );
}

#[tokio::test]
async fn without_a_grant_a_handler_importing_wasi_http_loads_and_is_denied() {
    let web = WebServer::start().await;
    let folder = Folder::with(&["fetch"]);
    let (node, report) = start_on(&Default::default(), &folder, "").await;
    assert!(report.skipped.is_empty(), "it loads without a grant: {:?}", report.skipped);
    let denied = fetch(&node, &web.url("/hello")).await.expect_err("no grant");
    assert!(denied.message.contains("HttpRequestDenied"), "{denied}");
    assert!(web.seen().is_empty());
}

#[tokio::test]
async fn a_sidecar_grants_only_origins_the_operator_allows() {
    let folder = Folder::with(&["fetch"]);
    let reason = refusal(&folder, "fetch", "http = [\"http://127.0.0.1:8080\"]\n", "").await;
    assert!(reason.contains("fetch.toml") && reason.contains("[grants] http"), "{reason}");
    let reason = refusal(&folder, "fetch", "http = [\"http://169.254.169.254\"]\n", LOOPBACK).await;
    assert!(reason.contains("not an origin the operator allows"), "{reason}");
    let reason = refusal(&folder, "fetch", "http = [\"127.0.0.1:8080\"]\n", LOOPBACK).await;
    assert!(reason.contains("not an origin"), "{reason}");
}

#[tokio::test]
async fn a_slow_server_cannot_hold_an_invocation_past_its_deadline() {
    let web = WebServer::start().await;
    let (node, _folder) = node_granting(&[web.origin()], "timeout = \"1s\"\n").await;
    let started = Instant::now();
    let failed = fetch(&node, &web.url("/slow/30000")).await.expect_err("the server answers too late");
    let took = started.elapsed();
    assert!(matches!(failed.class, FailureClass::Timeout | FailureClass::Retry), "{failed}");
    assert!(took < Duration::from_secs(10), "ended at the deadline, not the server's 30 s: {took:?}");
    assert_eq!(web.seen().len(), 1);
}

#[tokio::test]
async fn a_response_body_past_max_http_body_is_refused() {
    let web = WebServer::start().await;
    let (node, _folder) = node_granting(&[web.origin()], "max_http_body = \"4KiB\"\n").await;
    let within = fetch(&node, &web.url("/big/4096")).await.expect("within the cap");
    assert_eq!(within.len(), "200 ".len() + 4096);
    // With a Content-Length the request fails before the body is read...
    let failed = fetch(&node, &web.url("/big/4097")).await.expect_err("past the cap");
    assert!(failed.message.contains("HttpResponseBodySize"), "{failed}");
    // ...and without one, when the body grows past the cap.
    let failed = fetch(&node, &web.url("/stream/65536")).await.expect_err("past the cap");
    assert!(failed.message.contains("body size exceeds limit"), "{failed}");
    assert_eq!(fetch(&node, &web.url("/stream/2000")).await.expect("within").len(), "200 ".len() + 2000);
}

#[tokio::test]
async fn requests_count_against_max_calls() {
    let web = WebServer::start().await;
    let (node, _folder) = node_granting(&[web.origin()], "max_calls = 3\n").await;
    assert_eq!(fetch(&node, &format!("3 {}", web.url("/hello"))).await.expect("three"), "200 hello");
    let failed = fetch(&node, &format!("4 {}", web.url("/hello"))).await.expect_err("a fourth");
    assert!(failed.message.contains("ConnectionLimitReached"), "{failed}");
    assert_eq!(web.seen().len(), 6, "the fourth request never left: {:?}", web.seen());
}

#[tokio::test]
async fn the_invocations_trace_goes_out_as_traceparent() {
    let web = WebServer::start().await;
    let (node, _folder) = node_granting(&[web.origin()], "").await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = vec![("traceparent".into(), caller.into()), ("tracestate".into(), "vendor=opaque".into())];
    let reply = node.call_with("fetch", web.url("/trace").into_bytes(), headers, TEST_TIMEOUT).await.expect("traced");
    let reply = String::from_utf8(reply).expect("text");
    let sent = reply.strip_prefix("200 ").expect("a 200 reply");
    let sent = SpanContext::parse(sent).unwrap_or_else(|| panic!("a valid traceparent: {sent}"));
    let caller = SpanContext::parse(caller).expect("valid");
    assert_eq!(sent.trace_id, caller.trace_id, "the request is part of the caller's trace");
    assert_ne!(sent.span_id, caller.span_id, "its parent is the invocation's span, not the caller's");
    assert_eq!(web.seen()[0].tracestate.as_deref(), Some("vendor=opaque"));
}

#[tokio::test]
async fn https_is_verified_against_the_system_roots() {
    // A TLS server whose certificate no system root signed: the handshake
    // is refused, the request fails, nothing is sent in the clear.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (cert, key) = self_signed();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let handshakes = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        acceptor.accept(tcp).await.map(drop).map_err(|e| e.to_string())
    });
    let origin = format!("https://127.0.0.1:{port}");
    let folder = Folder::with(&["fetch"]);
    folder.sidecar("fetch", &format!("http = [{origin:?}]\n"));
    let (node, _) = start_on(&Default::default(), &folder, "[grants]\nhttp = [\"https://127.0.0.1:*\"]\n").await;
    let failed = fetch(&node, &format!("{origin}/hello")).await.expect_err("an unknown certificate");
    assert_eq!(failed.class, FailureClass::Retry, "{failed}");
    assert!(failed.message.contains("Tls") || failed.message.contains("tls"), "{failed}");
    let server_side = handshakes.await.expect("joined");
    assert!(server_side.is_err(), "the client refused the handshake: {server_side:?}");
}

fn self_signed()
-> (tokio_rustls::rustls::pki_types::CertificateDer<'static>, tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("self-signed certificate");
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).expect("key");
    (certified.cert.der().clone(), key)
}
