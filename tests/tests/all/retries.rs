//! Dispatch follows the service's retry schedule: attempt numbers, the
//! `final` flag exactly once, no retry for caller faults, and a dead letter
//! for what cannot succeed.

use busbar::FailureClass;
use busbar::driver::DispatchOutcome;
use busbar_tests::support::{Folder, start};
use std::time::{Duration, Instant};

async fn dispatch(node: &busbar::Node, name: &str, payload: &[u8]) -> DispatchOutcome {
    let receipt = node.dispatch(name, payload.to_vec()).await.expect("accepted");
    receipt.outcome.expect("the default driver reports outcomes").await.expect("the dispatch finishes")
}

fn messages(outcome: &DispatchOutcome) -> Vec<String> {
    outcome.history.iter().map(|f| f.message.clone()).collect()
}

#[tokio::test]
async fn a_flaky_service_succeeds_after_its_retries() {
    let folder = Folder::with(&["flaky"]);
    folder.sidecar("flaky", "retry = [\"10ms\", \"10ms\", \"10ms\"]\n");
    let node = start(&folder).await;
    let outcome = dispatch(&node, "flaky", b"2").await;
    assert_eq!(outcome.result, Ok(b"ok after 3 attempts".to_vec()));
    assert_eq!(outcome.attempts, 3);
    assert_eq!(messages(&outcome), ["flaky attempt 1 final=false", "flaky attempt 2 final=false"]);
    assert!(node.dead_letters().await.expect("listed").is_empty());
}

#[tokio::test]
async fn an_exhausted_dispatch_sees_final_once_and_is_dead_lettered() {
    let folder = Folder::with(&["flaky"]);
    folder.sidecar("flaky", "retry = [\"10ms\", \"20ms\"]\n");
    let node = start(&folder).await;
    let outcome = dispatch(&node, "flaky", b"9").await;
    assert_eq!(outcome.attempts, 3, "two delays allow three attempts");
    assert_eq!(
        messages(&outcome),
        ["flaky attempt 1 final=false", "flaky attempt 2 final=false", "flaky attempt 3 final=true"]
    );
    let dead = node.dead_letters().await.expect("listed");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].name.as_str(), dead[0].attempts, dead[0].payload.as_slice()), ("flaky", 3, b"9".as_slice()));
    assert_eq!(dead[0].failure.class, FailureClass::Retry);
}

#[tokio::test]
async fn without_a_schedule_the_only_attempt_is_final() {
    let node = start(&Folder::with(&["flaky"])).await;
    let outcome = dispatch(&node, "flaky", b"1").await;
    assert_eq!(messages(&outcome), ["flaky attempt 1 final=true"]);
}

#[tokio::test]
async fn caller_faults_are_never_retried() {
    let folder = Folder::with(&["fail"]);
    folder.sidecar("fail", "retry = [\"10ms\", \"10ms\", \"10ms\"]\n");
    let node = start(&folder).await;
    for class in ["invalid", "denied", "unauthorized"] {
        let outcome = dispatch(&node, "fail", format!("{class}:no").as_bytes()).await;
        assert_eq!(outcome.attempts, 1, "{class} is not retried");
    }
    let outcome = dispatch(&node, "fail", b"failed:boom").await;
    assert_eq!(outcome.attempts, 4, "plain failures are retried");
    assert_eq!(node.dead_letters().await.expect("listed").len(), 4);
}

#[tokio::test]
async fn retries_wait_out_the_schedule() {
    let folder = Folder::with(&["flaky"]);
    folder.sidecar("flaky", "retry = [\"100ms\", \"200ms\"]\n");
    let node = start(&folder).await;
    let started = Instant::now();
    let outcome = dispatch(&node, "flaky", b"2").await;
    assert_eq!(outcome.attempts, 3);
    assert!(started.elapsed() >= Duration::from_millis(300), "retried before its delays: {:?}", started.elapsed());
}

#[tokio::test]
async fn timeouts_and_traps_are_retried() {
    let folder = Folder::with(&["spin", "panic"]);
    folder.sidecar("spin", "timeout = \"50ms\"\nretry = [\"10ms\"]\n");
    folder.sidecar("panic", "retry = [\"10ms\"]\n");
    let node = start(&folder).await;
    let spin = dispatch(&node, "spin", b"").await;
    assert_eq!((spin.attempts, spin.result.unwrap_err().class), (2, FailureClass::Timeout));
    let panic = dispatch(&node, "panic", b"").await;
    assert_eq!((panic.attempts, panic.result.unwrap_err().class), (2, FailureClass::Trapped));
}

#[tokio::test]
async fn dispatching_to_an_unknown_name_is_refused_at_once() {
    let node = start(&Folder::with(&["echo"])).await;
    assert_eq!(node.dispatch("nobody", vec![]).await.unwrap_err().class, FailureClass::NotFound);
}
