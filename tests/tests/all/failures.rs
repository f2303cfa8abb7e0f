//! Every failure class reaches the caller typed, and a failing, looping,
//! trapping or memory-hungry handler fails only its own invocation.

use busbar::FailureClass;
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, HANDLER_CLASSES, start};
use std::time::{Duration, Instant};

#[tokio::test]
async fn each_handler_failure_class_reaches_the_caller() {
    let node = start(&Folder::with(&["fail"])).await;
    for (class, expected) in HANDLER_CLASSES {
        let failure = node.call("fail", format!("{class}:because").into_bytes(), TEST_TIMEOUT).await.unwrap_err();
        assert_eq!((failure.class, failure.message.as_str()), (expected, "because"));
    }
}

#[tokio::test]
async fn a_bad_payload_gets_an_error_reply() {
    let node = start(&Folder::with(&["fail"])).await;
    let failure = node.call("fail", vec![0xff, 0x00, 0x13], TEST_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Invalid);
}

#[tokio::test]
async fn unknown_and_reserved_names_are_refused() {
    let node = start(&Folder::with(&["echo"])).await;
    assert_eq!(node.call("nobody.home", vec![], TEST_TIMEOUT).await.unwrap_err().class, FailureClass::NotFound);
    let reserved = node.call("_busbar.admin", vec![], TEST_TIMEOUT).await.unwrap_err();
    assert_eq!(reserved.class, FailureClass::Invalid);
    assert!(reserved.message.contains("reserved"), "{}", reserved.message);
    assert_eq!(node.call("", vec![], TEST_TIMEOUT).await.unwrap_err().class, FailureClass::Invalid);
    assert_eq!(node.call("has space", vec![], TEST_TIMEOUT).await.unwrap_err().class, FailureClass::Invalid);
}

#[tokio::test]
async fn a_panic_traps_only_its_invocation() {
    let node = start(&Folder::with(&["panic", "echo"])).await;
    let failure = node.call("panic", vec![], TEST_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Trapped);
    assert!(failure.message.contains("panicked"), "{}", failure.message);
    assert_eq!(node.call("echo", b"still here".to_vec(), TEST_TIMEOUT).await, Ok(b"still here".to_vec()));
}

#[tokio::test]
async fn a_runaway_handler_is_interrupted_at_its_timeout() {
    let folder = Folder::with(&["spin", "echo"]);
    folder.sidecar("spin", "timeout = \"200ms\"\n");
    let node = start(&folder).await;
    let started = Instant::now();
    let failure = node.call("spin", vec![], TEST_TIMEOUT).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(failure.class, FailureClass::Timeout);
    assert!(took >= Duration::from_millis(200), "interrupted early: {took:?}");
    assert!(took < TEST_TIMEOUT, "interrupted at its own timeout, not the caller's: {took:?}");
    assert_eq!(node.call("echo", b"ok".to_vec(), TEST_TIMEOUT).await, Ok(b"ok".to_vec()));
}

#[tokio::test]
async fn the_callers_timeout_bounds_the_call_too() {
    let node = start(&Folder::with(&["spin"])).await;
    let started = Instant::now();
    let failure = node.call("spin", vec![], Duration::from_millis(150)).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Timeout);
    assert!(started.elapsed() < TEST_TIMEOUT, "the 5s handler timeout was waited out: {:?}", started.elapsed());
}

#[tokio::test]
async fn other_handlers_keep_answering_while_one_spins() {
    let folder = Folder::with(&["spin", "echo"]);
    folder.sidecar("spin", "timeout = \"2s\"\n");
    let node = start(&folder).await;
    let spinning = tokio::spawn({
        let node = node.clone();
        async move { node.call("spin", vec![], TEST_TIMEOUT).await }
    });
    let started = Instant::now();
    for i in 0..20u8 {
        assert_eq!(node.call("echo", vec![i], TEST_TIMEOUT).await, Ok(vec![i]));
    }
    assert!(!spinning.is_finished(), "echo answered all 20 calls in {:?}, while spin still ran", started.elapsed());
    assert_eq!(spinning.await.expect("joined").unwrap_err().class, FailureClass::Timeout);
}

#[tokio::test]
async fn memory_exhaustion_fails_the_invocation_with_a_clear_error() {
    let folder = Folder::with(&["hog", "echo"]);
    folder.sidecar("hog", "memory = \"16MiB\"\n");
    let node = start(&folder).await;
    let failure = node.call("hog", vec![], TEST_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Trapped);
    assert!(failure.message.contains("memory limit of 16 MiB exceeded"), "{}", failure.message);
    assert_eq!(node.call("echo", b"ok".to_vec(), TEST_TIMEOUT).await, Ok(b"ok".to_vec()));
}

#[tokio::test]
async fn a_handler_calling_itself_stops_at_the_depth_limit() {
    let node = start(&Folder::with(&["recurse"])).await;
    let failure = node.call("recurse", b"x".to_vec(), TEST_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Denied, "{failure}");
    assert!(failure.message.contains("depth limit of 8"), "{}", failure.message);
}

#[tokio::test]
async fn a_handler_can_fan_out_calls() {
    let node = start(&Folder::with(&["fanout", "echo"])).await;
    assert_eq!(node.call("fanout", b"5".to_vec(), TEST_TIMEOUT).await, Ok(b"5".to_vec()));
}
