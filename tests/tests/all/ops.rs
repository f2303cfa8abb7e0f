//! Operating a node over HTTP: Prometheus metrics that count exactly the
//! work done, readiness that flips at the right moments, and the gateway's
//! status code for each failure class — all through a real HTTP client.

use busbar::ops::http::{Ops, Server, gateway_routes, ops_routes};
use busbar::ops::metrics::Metrics;
use busbar::{FailureClass, Node};
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, HANDLER_CLASSES, start};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The operations and gateway routes of `ops` on a loopback port; the
/// server stops when the returned token is dropped.
async fn listen(ops: &Arc<Ops>) -> (String, tokio_util::sync::DropGuard) {
    let stop = CancellationToken::new();
    let router = ops_routes().merge(gateway_routes()).with_state(ops.clone());
    let server = Server::start(([127, 0, 0, 1], 0).into(), router, stop.clone()).await.expect("listens");
    (format!("http://{}", server.local_addr()), stop.drop_guard())
}

/// A node serving `folder`, with its HTTP listener.
async fn served(folder: &Folder) -> (Node, String, tokio_util::sync::DropGuard) {
    let node = start(folder).await;
    let ops = Ops::new(Arc::new(Metrics::new(1)));
    ops.attach(node.clone());
    let (url, guard) = listen(&ops).await;
    (node, url, guard)
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("GET answers");
    (response.status().as_u16(), response.text().await.expect("a body"))
}

async fn post(url: &str, body: &str) -> reqwest::Response {
    reqwest::Client::new().post(url).body(body.to_string()).send().await.expect("POST answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly_the_work_done() {
    let (node, url, _guard) = served(&Folder::with(&["echo", "fail"])).await;
    for _ in 0..5 {
        node.call("echo", b"x".to_vec(), TEST_TIMEOUT).await.unwrap();
    }
    for payload in ["invalid:a", "invalid:b", "invalid:c", "retry:d", "retry:e"] {
        node.call("fail", payload.into(), TEST_TIMEOUT).await.unwrap_err();
    }
    let receipt = node.dispatch("fail", b"invalid:never retried".to_vec()).await.unwrap();
    receipt.outcome.expect("the default driver reports outcomes").await.unwrap();
    node.call("nobody", vec![], TEST_TIMEOUT).await.unwrap_err(); // no handler: not an invocation

    let (status, text) = get(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    let samples = samples(&text);
    for (sample, expected) in [
        ("busbar_invocations_total{name=\"echo\",mode=\"call\"}", 5.0),
        ("busbar_invocations_total{name=\"fail\",mode=\"call\"}", 5.0),
        ("busbar_invocations_total{name=\"fail\",mode=\"dispatch\"}", 1.0),
        ("busbar_errors_total{name=\"fail\",class=\"invalid\"}", 4.0),
        ("busbar_errors_total{name=\"fail\",class=\"retry\"}", 2.0),
        ("busbar_dead_letters_total{name=\"fail\"}", 1.0),
        ("busbar_invocation_duration_seconds_count{name=\"echo\"}", 5.0),
        ("busbar_invocation_duration_seconds_count{name=\"fail\"}", 6.0),
        ("busbar_invocations_in_flight", 0.0),
        ("busbar_handlers", 2.0),
        ("busbar_pool_instances", 200.0),
    ] {
        assert_eq!(samples.get(sample), Some(&expected), "{sample} in\n{text}");
    }
    assert!(!samples.keys().any(|k| k.contains("nobody")), "{text}");
    assert!(!samples.keys().any(|k| k.starts_with("busbar_errors_total{name=\"echo\"")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_flips_when_the_node_is_loaded_and_when_it_drains() {
    let ops = Ops::new(Arc::new(Metrics::new(1)));
    let (url, _guard) = listen(&ops).await;
    let (status, body) = get(&format!("{url}/readyz")).await;
    assert_eq!((status, body.as_str()), (503, "not ready: starting: loading handlers and connecting\n"));
    assert_eq!(get(&format!("{url}/healthz")).await.0, 200, "alive while starting");
    assert_eq!(get(&format!("{url}/metrics")).await.0, 200, "metrics while starting");

    let node = start(&Folder::with(&["echo"])).await;
    ops.attach(node.clone());
    assert_eq!(get(&format!("{url}/readyz")).await, (200, "ready\n".to_string()));

    ops.drain();
    let (status, body) = get(&format!("{url}/readyz")).await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(get(&format!("{url}/healthz")).await.0, 200, "alive while draining");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_answers_each_failure_class_with_its_status() {
    let folder = Folder::with(&["echo", "fail", "spin", "slow", "audit"]);
    folder.sidecar("slow", "concurrency = 1\nqueue = 0\n");
    let (_node, url, _guard) = served(&folder).await;

    let reply = post(&format!("{url}/call/echo"), "hello").await;
    assert_eq!(reply.status().as_u16(), 200);
    assert_eq!(reply.bytes().await.unwrap().as_ref(), b"hello");

    for (class, expected) in HANDLER_CLASSES {
        let status = match expected {
            FailureClass::Invalid => 400,
            FailureClass::Unauthorized => 401,
            FailureClass::Denied => 403,
            _ => 500,
        };
        let response = post(&format!("{url}/call/fail"), &format!("{class}:because")).await;
        assert_eq!(response.status().as_u16(), status, "{class}");
        assert_eq!(response.headers()["busbar-failure-class"], class);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({ "class": class, "message": "because" }));
    }
    assert_eq!(post(&format!("{url}/call/nobody"), "").await.status().as_u16(), 404);
    assert_eq!(post(&format!("{url}/call/spin?timeout=200ms"), "").await.status().as_u16(), 504);
    assert_eq!(post(&format!("{url}/call/echo?timeout=soon"), "").await.status().as_u16(), 400);

    // `slow` runs one invocation at a time and queues none: a second call
    // while the first runs is turned away.
    let busy = tokio::spawn(post_owned(format!("{url}/call/slow"), "1500"));
    busbar_tests::support::eventually(TEST_TIMEOUT, async || metric(&url, "busbar_invocations_in_flight").await == 1.0)
        .await;
    let turned_away = post(&format!("{url}/call/slow"), "10").await;
    assert_eq!(turned_away.status().as_u16(), 503);
    assert_eq!(turned_away.headers()["retry-after"], "1");
    assert_eq!(busy.await.unwrap(), (200, "worked 1500 ms".to_string()));

    let dispatched = post(&format!("{url}/dispatch/echo"), "later").await;
    assert_eq!(dispatched.status().as_u16(), 202);
    let receipt: serde_json::Value = dispatched.json().await.unwrap();
    assert!(receipt["id"].as_str().is_some_and(|id| !id.is_empty()), "{receipt}");
    assert_eq!(post(&format!("{url}/broadcast/audit"), "event").await.status().as_u16(), 202);
    assert_eq!(post(&format!("{url}/rolecast/audit"), "event").await.status().as_u16(), 202);
    assert_eq!(post(&format!("{url}/dispatch/nobody"), "").await.status().as_u16(), 404);

    for listing in ["nodes", "services", "stats"] {
        let (status, body) = get(&format!("{url}/{listing}")).await;
        assert_eq!(status, 200, "{listing}");
        let items: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert!(!items.is_empty(), "{listing}: {body}");
    }
}

async fn post_owned(url: String, body: &'static str) -> (u16, String) {
    let response = post(&url, body).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn metric(url: &str, sample: &str) -> f64 {
    samples(&get(&format!("{url}/metrics")).await.1).get(sample).copied().unwrap_or(f64::NAN)
}
