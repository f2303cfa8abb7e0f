//! Each invocation runs in a fresh sandbox: nothing carries over between
//! invocations unless the handler opts into reuse (and then never past a
//! trap), and guest output goes to the node's log tagged with the handler.

use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, start};

#[tokio::test]
async fn no_state_leaks_between_invocations() {
    let node = start(&Folder::with(&["tally"])).await;
    for _ in 0..5 {
        assert_eq!(
            node.call("tally", vec![], TEST_TIMEOUT).await,
            Ok(b"1".to_vec()),
            "every call sees a fresh instance"
        );
    }
}

#[tokio::test]
async fn an_instance_serves_at_most_reuse_plus_one_invocations() {
    let folder = Folder::with(&["tally"]);
    folder.sidecar("tally", "reuse = 2\n");
    let node = start(&folder).await;
    let mut replies = Vec::new();
    for _ in 0..7 {
        replies.push(String::from_utf8(node.call("tally", vec![], TEST_TIMEOUT).await.expect("reply")).expect("utf-8"));
    }
    assert_eq!(replies, ["1", "2", "3", "1", "2", "3", "1"], "each instance serves three calls, then a fresh one");
}

#[tokio::test]
async fn an_instance_that_trapped_is_never_reused() {
    let folder = Folder::with(&["tally"]);
    folder.sidecar("tally", "reuse = 100\n");
    let node = start(&folder).await;
    assert_eq!(node.call("tally", vec![], TEST_TIMEOUT).await, Ok(b"1".to_vec()));
    assert_eq!(node.call("tally", vec![], TEST_TIMEOUT).await, Ok(b"2".to_vec()), "the instance was reused");
    let trapped = node.call("tally", b"trap".to_vec(), TEST_TIMEOUT).await.expect_err("it panics");
    assert_eq!(trapped.class, busbar::FailureClass::Trapped, "{trapped}");
    assert_eq!(node.call("tally", vec![], TEST_TIMEOUT).await, Ok(b"1".to_vec()), "a fresh instance after the trap");
}

#[tokio::test]
async fn guest_output_is_logged_with_the_handler_name() {
    let logs = busbar_tests::support::capture_logs();
    let folder = Folder::with(&["audit"]);
    folder.sidecar("audit", "names = [\"audit.log-marker\"]\n");
    let node = start(&folder).await;
    node.broadcast("audit.log-marker", b"12345".to_vec()).await.expect("accepted");
    node.stop().await;
    let text = logs.contents();
    let line = text
        .lines()
        .find(|l| l.contains("audit: event `audit.log-marker` (broadcast) of 5 bytes"))
        .unwrap_or_else(|| panic!("guest line missing from the log:\n{text}"));
    assert!(line.contains("handler=\"audit\"") || line.contains("handler=audit"), "{line}");
}
