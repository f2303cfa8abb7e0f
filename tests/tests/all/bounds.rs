//! No panic, no silent loss: an absurd duration or size is refused where it
//! enters (sidecar, config, CLI flag, gateway query) with the key and the
//! limit named, deadline arithmetic saturates, and a host error on a
//! delivery path — a panic, injected here by the `fault-injection` test
//! build — answers `failed` instead of losing the delivery.

use busbar::fault::{Point, inject};
use busbar::ops::http::{Ops, Server, gateway_routes, ops_routes};
use busbar::ops::metrics::Metrics;
use busbar::{Config, FailureClass, Node};
use busbar_tests::support::{Folder, TEST_TIMEOUT, refusal, start, start_watching};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Far more seconds than any setting allows (and than fits a deadline).
const ABSURD: &str = "10000000000000000000s";

#[tokio::test]
async fn an_absurd_sidecar_timeout_is_refused_and_the_old_version_keeps_serving() {
    let folder = Folder::with(&["echo"]);
    let node = start_watching(&folder).await;
    folder.put("echo.toml", format!("timeout = \"{ABSURD}\"\n").as_bytes());
    let rejected = busbar_tests::support::eventually(TEST_TIMEOUT, async || node.reloads().rejected == 1).await;
    assert!(rejected, "the sidecar was not rejected: {:?}", node.reloads());
    assert_eq!(node.call("echo", b"still".to_vec(), TEST_TIMEOUT).await, Ok(b"still".to_vec()));

    let long_schedule = format!("retry = [{}]\n", vec!["\"1s\""; 101].join(", "));
    for (sidecar, key) in [
        ("timeout = \"2h\"\n", "`timeout` is 2h, more than its maximum of 1h"),
        ("retry = [\"1s\", \"48h\"]\n", "retry = [\"1s\", \"48h\"]"),
        ("retry = [\"1s\", \"48h\"]\n", "`48h` is longer than any busbar duration may be (at most 24h)"),
        (long_schedule.as_str(), "`retry` lists 101 delays, more than its maximum of 100"),
        ("memory = \"64GiB\"\n", "`memory` is 64 GiB, more than its maximum of 4 GiB"),
        ("max_payload = 18446744073709551615\n", "`max_payload`"),
        ("concurrency = 4294967295\n", "`concurrency` is 4294967295, more than its maximum of 10000"),
    ] {
        let reason = refusal(&Folder::with(&["echo"]), "echo", sidecar, "").await;
        assert!(reason.contains("echo.toml") && reason.contains(key), "{sidecar}: {reason}");
    }
}

#[test]
fn absurd_config_values_name_the_key_and_the_limit() {
    for (text, expected) in [
        (format!("[handlers]\ntimeout = \"{ABSURD}\"\n"), "longer than any busbar duration may be (at most 24h)"),
        ("[handlers]\ntimeout = \"90m\"\n".into(), "`handlers.timeout` is 90m, more than its maximum of 1h"),
        ("[handlers]\nmax_depth = 1000\n".into(), "`handlers.max_depth` is 1000, more than its maximum of 64"),
        ("[handlers]\nmax_reply = \"1GiB\"\n".into(), "`handlers.max_reply` is 1 GiB, more than its maximum of 64 MiB"),
        ("[node]\ndrain = \"2h\"\n".into(), "`node.drain` is 2h, more than its maximum of 1h"),
        ("[bus]\nweight = 4000000000\n".into(), "`bus.weight` is 4000000000, more than its maximum of 1000000"),
    ] {
        let error = Config::parse(&text, Path::new("node.toml")).expect_err(&text).to_string();
        assert!(error.contains("node.toml") && error.contains(expected), "{text}: {error}");
    }
}

#[tokio::test]
async fn deadline_arithmetic_saturates_on_the_library_api() {
    let folder = Folder::with(&["echo", "flaky"]);
    folder.sidecar("echo", "timeout = \"1h\"\n").sidecar("flaky", "timeout = \"1h\"\nretry = [\"24h\"]\n");
    let node = start(&folder).await;
    assert_eq!(node.call("echo", b"x".to_vec(), Duration::MAX).await, Ok(b"x".to_vec()));
    let receipt = node.dispatch("flaky", b"0".to_vec()).await.expect("accepted");
    let outcome = receipt.outcome.expect("reported").await.expect("finished");
    assert_eq!(outcome.result, Ok(b"ok after 1 attempts".to_vec()));
}

/// A gateway for `node` on a loopback port, until the guard drops.
async fn gateway(node: &Node) -> (String, tokio_util::sync::DropGuard) {
    let ops = Ops::new(Arc::new(Metrics::new(1)));
    ops.attach(node.clone());
    let stop = CancellationToken::new();
    let router = ops_routes().merge(gateway_routes()).with_state(ops);
    let server = Server::start(([127, 0, 0, 1], 0).into(), router, stop.clone()).await.expect("listens");
    (format!("http://{}", server.local_addr()), stop.drop_guard())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_gateway_timeout_is_a_bad_request() {
    let node = start(&Folder::with(&["echo"])).await;
    let (url, _guard) = gateway(&node).await;
    let client = reqwest::Client::new();
    for (timeout, expected) in [(ABSURD, "at most 24h"), ("2h", "more than its maximum of 1h"), ("0s", "more than 0s")]
    {
        let response =
            client.post(format!("{url}/call/echo?timeout={timeout}")).body("x").send().await.expect("answers");
        assert_eq!(response.status().as_u16(), 400, "{timeout}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(body["class"] == "invalid" && message.contains("?timeout=") && message.contains(expected), "{body}");
    }
    let ok = client.post(format!("{url}/call/echo?timeout=1h")).body("fine").send().await.expect("answers");
    assert_eq!(ok.status().as_u16(), 200);
}

#[test]
fn an_absurd_cli_timeout_is_a_usage_error() {
    let folder = Folder::with(&["echo"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .arg("--handlers")
        .arg(folder.path())
        .args(["call", "echo", "x", "--timeout", ABSURD])
        .env_remove("RUST_LOG")
        .output()
        .expect("busbar runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--timeout") && stderr.contains("at most 24h"), "{stderr}");
}

/// A node serving the `echo` guest as `name`, with sidecar `sidecar`.
async fn echo_named(name: &str, sidecar: &str) -> Node {
    let folder = Folder::with(&[]);
    folder.add("echo", name).sidecar(name, sidecar);
    start(&folder).await
}

/// The host-error counter line of `node`'s metrics.
fn host_errors(node: &Node) -> String {
    let text = node.metrics_text();
    text.lines().find(|l| l.starts_with("busbar_host_errors_total")).unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_host_error_answers_a_call_with_failed_and_the_node_carries_on() {
    let node = echo_named("fault-call", "").await;
    inject(Point::Deliver, "fault-call", 1);
    let failed = node.call("fault-call", b"x".to_vec(), TEST_TIMEOUT).await.expect_err("the host failed");
    assert_eq!(failed.class, FailureClass::Failed);
    assert!(failed.message.starts_with("host error"), "{failed}");
    assert_eq!(host_errors(&node), "busbar_host_errors_total 1");
    assert!(node.metrics_text().contains("busbar_errors_total{name=\"fault-call\",class=\"failed\"} 1"));
    assert_eq!(node.call("fault-call", b"again".to_vec(), TEST_TIMEOUT).await, Ok(b"again".to_vec()));
}

#[tokio::test]
async fn a_host_error_uses_up_a_dispatch_attempt_and_the_retry_runs_it() {
    let node = echo_named("fault-retry", "retry = [\"10ms\"]\n").await;
    inject(Point::Deliver, "fault-retry", 1);
    let receipt = node.dispatch("fault-retry", b"job".to_vec()).await.expect("accepted");
    let outcome = receipt.outcome.expect("reported").await.expect("finished");
    assert_eq!((outcome.attempts, outcome.result), (2, Ok(b"job".to_vec())));
    assert!(outcome.history[0].message.starts_with("host error"), "{:?}", outcome.history);
    assert!(node.dead_letters().await.expect("listed").is_empty());
}

#[tokio::test]
async fn a_host_error_on_the_last_attempt_is_dead_lettered_not_lost() {
    let node = echo_named("fault-dead", "").await;
    inject(Point::Deliver, "fault-dead", 1);
    let receipt = node.dispatch("fault-dead", b"keep me".to_vec()).await.expect("accepted");
    let outcome = receipt.outcome.expect("reported").await.expect("finished");
    assert_eq!(outcome.result.expect_err("failed").class, FailureClass::Failed);
    let dead = node.dead_letters().await.expect("listed");
    let letter = dead.iter().find(|d| d.name == "fault-dead").expect("dead-lettered");
    assert_eq!(letter.payload, b"keep me");
    assert!(letter.failure.message.starts_with("host error"), "{}", letter.failure);
    assert_eq!(node.replay_dead_letters("fault-dead").await.expect("replayed"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_error_while_sending_answers_the_caller() {
    let node = echo_named("fault-send", "").await;
    inject(Point::Send, "fault-send", 2);
    let call = node.call("fault-send", b"x".to_vec(), TEST_TIMEOUT).await.expect_err("the host failed");
    assert!(call.class == FailureClass::Failed && call.message.starts_with("host error"), "{call}");
    let (url, _guard) = gateway(&node).await;
    let response =
        reqwest::Client::new().post(format!("{url}/dispatch/fault-send")).body("x").send().await.expect("answers");
    assert_eq!(response.status().as_u16(), 500);
    assert_eq!(response.headers()["busbar-failure-class"], "failed");
    assert_eq!(host_errors(&node), "busbar_host_errors_total 2");
    assert_eq!(node.call("fault-send", b"fine".to_vec(), TEST_TIMEOUT).await, Ok(b"fine".to_vec()));
}
