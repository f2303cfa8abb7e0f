//! W3C trace context across the bus: a handler's invocation is a span of its
//! caller's trace, the guest sees it in its context headers, and the calls it
//! makes through the bus carry the trace on.

use busbar::Node;
use busbar::ops::trace::SpanContext;
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, start};

/// The example of the W3C recommendation.
pub const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The value of header `name` in a `whoami` reply (its context as JSON).
pub fn seen_header(whoami_reply: &[u8], name: &str) -> Option<String> {
    let ctx: serde_json::Value = serde_json::from_slice(whoami_reply).expect("whoami replies JSON");
    ctx["headers"].as_array()?.iter().find(|h| h[0] == name).and_then(|h| h[1].as_str()).map(str::to_string)
}

/// The span `whoami` ran as, from its reply.
pub fn seen_span(whoami_reply: &[u8]) -> SpanContext {
    let value = seen_header(whoami_reply, "traceparent").expect("the guest sees a traceparent");
    SpanContext::parse(&value).unwrap_or_else(|| panic!("a valid traceparent: {value}"))
}

/// A folder where `greet` calls `echo`, served by `whoami`: greet's reply
/// is `hello, ` and the context of the nested invocation.
pub fn greet_calling_whoami() -> Folder {
    let folder = Folder::with(&["greet"]);
    folder.add("whoami", "echo");
    folder
}

async fn call_traced(node: &Node, name: &str, payload: &[u8]) -> Vec<u8> {
    let headers = vec![("traceparent".into(), CALLER.into()), ("tracestate".into(), "vendor=opaque".into())];
    node.call_with(name, payload.to_vec(), headers, TEST_TIMEOUT).await.expect("answers")
}

#[tokio::test]
async fn a_handler_runs_as_a_span_of_its_callers_trace() {
    let node = start(&Folder::with(&["whoami"])).await;
    let reply = call_traced(&node, "whoami", b"").await;
    let (caller, seen) = (SpanContext::parse(CALLER).unwrap(), seen_span(&reply));
    assert_eq!((seen.trace_id, seen.flags), (caller.trace_id, caller.flags));
    assert_ne!(seen.span_id, caller.span_id, "the invocation is a span of its own");
    assert_eq!(seen_header(&reply, "tracestate").as_deref(), Some("vendor=opaque"));
}

#[tokio::test]
async fn a_call_made_by_a_handler_carries_the_trace_on() {
    let node = start(&greet_calling_whoami()).await;
    let reply = call_traced(&node, "greet", b"x").await;
    let nested = reply.strip_prefix(b"hello, ").expect("greet's reply");
    let (caller, seen) = (SpanContext::parse(CALLER).unwrap(), seen_span(nested));
    assert_eq!(seen.trace_id, caller.trace_id, "one trace from the caller to the nested call");
    assert_ne!(seen.span_id, caller.span_id);
    assert_eq!(seen_header(nested, "tracestate").as_deref(), Some("vendor=opaque"));
}

#[tokio::test]
async fn a_call_without_a_trace_starts_one() {
    let node = start(&greet_calling_whoami()).await;
    let nested = |reply: Vec<u8>| seen_span(reply.strip_prefix(b"hello, ").expect("greet's reply"));
    let first = nested(node.call("greet", b"x".to_vec(), TEST_TIMEOUT).await.unwrap());
    let second = nested(node.call("greet", b"x".to_vec(), TEST_TIMEOUT).await.unwrap());
    assert_ne!(first.trace_id, second.trace_id, "each untraced call is a trace of its own");
    assert_eq!(first.flags, 1, "sampled");
    // The root span itself is not handed to the guest of an untraced call.
    let reply = node.call("echo", vec![], TEST_TIMEOUT).await.unwrap();
    assert_eq!(seen_header(&reply, "traceparent"), None);
}
