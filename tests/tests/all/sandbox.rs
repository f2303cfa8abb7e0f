//! Each invocation runs in a fresh sandbox: nothing carries over between
//! invocations, and guest output goes to the node's log tagged with the handler.

use busbar_tests::support::{Folder, start};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn no_state_leaks_between_invocations() {
    let node = start(&Folder::with(&["tally"])).await;
    for _ in 0..5 {
        assert_eq!(node.call("tally", vec![], SECOND).await, Ok(b"1".to_vec()), "every call sees a fresh instance");
    }
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
