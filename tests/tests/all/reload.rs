//! Hot reload on the in-process driver: a watching node applies every change
//! of its handlers folder while it serves — new versions swap in with no
//! failed call, bad files are rejected while the old version keeps serving,
//! removed handlers stop serving, and sidecar-only changes re-apply policy.
//! Every wait here waits for an observable outcome (a reply, a counter).

use busbar::{FailureClass, Node};
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{
    CallLoad, Folder, capture_logs, eventually, guest, guest_version, start_watching, wrong_world_guest,
};
use std::io::Write;
use std::time::Duration;

/// How long a change may take to show; far above the expected ~20 ms.
const SHOWS: Duration = Duration::from_secs(10);

/// `svc` as `echo` replies with the payload; as `greet`, with "hello, " and it.
pub(crate) const PAYLOAD: &[u8] = b"x";
pub(crate) const ECHO_REPLY: &[u8] = b"x";
pub(crate) const GREET_REPLY: &[u8] = b"hello, x";
/// Either version's reply.
pub(crate) const EITHER_REPLY: &[&[u8]] = &[ECHO_REPLY, GREET_REPLY];

/// A folder serving `svc` as `echo` (and `echo` itself, which `greet` calls).
pub(crate) fn svc_folder() -> Folder {
    let folder = Folder::with(&["echo"]);
    folder.add("echo", "svc");
    folder
}

async fn answers(node: &Node, name: &str, reply: &[u8]) -> bool {
    eventually(SHOWS, async || node.call(name, PAYLOAD.to_vec(), TEST_TIMEOUT).await.as_deref() == Ok(reply)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_fail_no_call_and_the_last_version_wins() {
    let folder = svc_folder();
    let node = start_watching(&folder).await;
    let load = CallLoad::start(&node, 4, "svc", PAYLOAD, EITHER_REPLY);
    for swap in 0..50 {
        let (version, reply) = if swap % 2 == 0 { ("greet", GREET_REPLY) } else { ("echo", ECHO_REPLY) };
        folder.put_guest(version, "svc");
        assert!(answers(&node, "svc", reply).await, "swap {swap}: {version} never answered");
    }
    let (calls, wrong) = load.stop().await;
    assert!(wrong.is_empty(), "{} of {calls} calls failed or got another reply: {:?}", wrong.len(), &wrong[..1]);
    assert!(calls > 1000, "the load was too light to mean anything: {calls} calls");
    // The 50th swap put `echo` back: only it answers now.
    for _ in 0..100 {
        assert_eq!(node.call("svc", PAYLOAD.to_vec(), TEST_TIMEOUT).await.as_deref(), Ok(ECHO_REPLY));
    }
    assert_eq!(node.reloads().applied, 50);
    let stats = node.local_stats().into_iter().find(|s| s.name == "svc").expect("svc stats");
    assert_eq!(stats.reloads, 50);
    assert_eq!(stats.version, guest_version("echo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_is_rejected_and_the_old_version_serves_until_the_rest_arrives() {
    let folder = svc_folder();
    let node = start_watching(&folder).await;
    let greet = std::fs::read(guest("greet")).expect("greet built");
    // Written in place, the way `cp` or a slow build writes: half, a pause
    // (the file stays open), then the rest.
    let mut file = std::fs::File::create(folder.path().join("svc.wasm")).expect("open svc.wasm");
    file.write_all(&greet[..greet.len() / 2]).expect("first half");
    file.flush().expect("flush");
    assert!(eventually(SHOWS, async || node.reloads().rejected >= 1).await, "the half file was never examined");
    assert_eq!(node.call("svc", PAYLOAD.to_vec(), TEST_TIMEOUT).await.as_deref(), Ok(ECHO_REPLY), "old version serves");
    file.write_all(&greet[greet.len() / 2..]).expect("second half");
    drop(file);
    assert!(answers(&node, "svc", GREET_REPLY).await, "the complete file never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_do_not_validate_are_rejected_with_the_reason_and_the_old_version_serves() {
    let logs = capture_logs();
    let folder = svc_folder();
    let node = start_watching(&folder).await;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("garbage", b"this is not wasm at all".to_vec(), "not a WebAssembly file"),
        ("a core module", b"\0asm\x01\0\0\0".to_vec(), "core WebAssembly module"),
        // Renaming the export breaks the component's own wiring, so wasmtime
        // refuses it while compiling; either way the reason names the export.
        ("the wrong world", wrong_world_guest(), "busbar:handler/service@0.1.0"),
    ];
    for (i, (what, bytes, reason)) in cases.into_iter().enumerate() {
        folder.put("svc.wasm", &bytes);
        let rejected = i as u64 + 1;
        assert!(eventually(SHOWS, async || node.reloads().rejected == rejected).await, "{what} was not rejected");
        assert_eq!(node.call("svc", PAYLOAD.to_vec(), TEST_TIMEOUT).await.as_deref(), Ok(ECHO_REPLY), "after {what}");
        let text = logs.contents();
        assert!(
            text.lines().any(|l| l.contains("handler=svc") && l.contains("keeps serving") && l.contains(reason)),
            "no log line says why {what} was rejected:\n{text}"
        );
    }
    assert_eq!(node.reloads().applied, 0);
    folder.put_guest("greet", "svc");
    assert!(answers(&node, "svc", GREET_REPLY).await, "a valid version after the bad ones never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_handler_stops_serving_and_serves_again_when_put_back() {
    let folder = svc_folder();
    let node = start_watching(&folder).await;
    folder.remove("svc.wasm");
    let gone = eventually(SHOWS, async || {
        node.call("svc", PAYLOAD.to_vec(), TEST_TIMEOUT).await.is_err_and(|f| f.class == FailureClass::NotFound)
    })
    .await;
    assert!(gone, "svc still served after its file was removed");
    assert!(!node.info().services.contains(&"svc".to_string()));
    folder.put_guest("echo", "svc");
    assert!(answers(&node, "svc", ECHO_REPLY).await, "svc did not come back");
    assert_eq!(node.reloads().applied, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_starts_serving_without_a_restart() {
    let folder = Folder::with(&["echo"]);
    let node = start_watching(&folder).await;
    let missing = node.call("hello", PAYLOAD.to_vec(), TEST_TIMEOUT).await.expect_err("nothing serves it yet");
    assert_eq!(missing.class, busbar::FailureClass::NotFound, "{missing}");
    folder.put_guest("greet", "hello");
    assert!(answers(&node, "hello", GREET_REPLY).await, "the new handler never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_only_change_reapplies_the_policy_of_the_same_version() {
    let folder = svc_folder();
    let node = start_watching(&folder).await;
    folder.put("svc.toml", b"names = [\"svc\", \"svc.copy\"]\n");
    assert!(answers(&node, "svc.copy", ECHO_REPLY).await, "the name added by the sidecar never served");
    folder.put("svc.toml", b"names = [\"svc.only\"]\ntimeout = \"1s\"\n");
    assert!(answers(&node, "svc.only", ECHO_REPLY).await, "the renamed name never served");
    for name in ["svc", "svc.copy"] {
        let failure = node.call(name, PAYLOAD.to_vec(), TEST_TIMEOUT).await.expect_err("no longer served");
        assert_eq!(failure.class, FailureClass::NotFound, "{name}: {failure}");
    }
    // A broken sidecar keeps the policy that was in force.
    folder.put("svc.toml", b"nmes = [\"oops\"]\n");
    assert!(eventually(SHOWS, async || node.reloads().rejected == 1).await, "the bad sidecar was not rejected");
    assert_eq!(node.call("svc.only", PAYLOAD.to_vec(), TEST_TIMEOUT).await.as_deref(), Ok(ECHO_REPLY));
    assert_eq!(node.reloads().applied, 2);
    let stats = node.local_stats().into_iter().find(|s| s.name == "svc.only").expect("stats");
    assert_eq!(stats.reloads, 0, "the same compiled version kept serving");
}
