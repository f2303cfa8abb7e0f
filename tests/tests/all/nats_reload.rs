//! Hot reload on the NATS driver: two nodes, each watching its own folder,
//! swap versions under call load with no failed call; a handler that appears
//! picks up the dispatch waiting for it in JetStream; a removed handler
//! leaves discovery while the other node keeps serving the name.

use crate::reload::{EITHER_REPLY, GREET_REPLY, PAYLOAD, svc_folder};
use busbar::Node;
use busbar_tests::nats::NatsServer;
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{CallLoad, Folder, eventually, guest_version, nats_client, served, start_nats_watching};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Whether `node` comes to serve `svc` with guest `version`.
async fn node_serves(node: &Node, version: &str) -> bool {
    let want = guest_version(version);
    eventually(WAIT, async || node.local_stats().iter().any(|s| s.name == "svc" && s.version == want)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watching_nodes_swap_versions_under_load_with_no_failed_call() {
    let server = NatsServer::start();
    let (folder_a, folder_b) = (svc_folder(), svc_folder());
    let a = start_nats_watching(&server.url(), &folder_a, "a").await;
    let b = start_nats_watching(&server.url(), &folder_b, "b").await;
    let client = nats_client(&server.url()).await;
    let load = CallLoad::start(&client, 4, "svc", PAYLOAD, EITHER_REPLY);
    for round in 0..5 {
        let version = if round % 2 == 0 { "greet" } else { "echo" };
        for (folder, node) in [(&folder_a, &a), (&folder_b, &b)] {
            folder.put_guest(version, "svc");
            assert!(node_serves(node, version).await, "round {round}: {version} never served");
        }
    }
    // One node drops the name: the other keeps answering, and discovery
    // lists only the one still serving it.
    folder_a.remove("svc.wasm");
    let listed_once = eventually(WAIT, async || {
        let services = client.services().await.unwrap_or_default();
        services.iter().find(|s| s.name == "svc").is_some_and(|s| s.nodes == ["b"])
    })
    .await;
    assert!(listed_once, "discovery still lists node a for svc: {:?}", client.services().await);
    for _ in 0..20 {
        assert_eq!(client.call("svc", PAYLOAD.to_vec(), TEST_TIMEOUT).await.as_deref(), Ok(GREET_REPLY), "b answers");
    }
    let (calls, wrong) = load.stop().await;
    assert!(wrong.is_empty(), "{} of {calls} calls failed or got another reply: {:?}", wrong.len(), &wrong[..1]);
    assert!(calls > 100, "the load was too light to mean anything: {calls} calls");
    assert_eq!((a.reloads().applied, b.reloads().applied), (6, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_appears_runs_the_dispatch_waiting_for_it() {
    let server = NatsServer::start();
    let folder = Folder::with(&["echo"]);
    let node = start_nats_watching(&server.url(), &folder, "a").await;
    let client = nats_client(&server.url()).await;
    client.dispatch("late", b"waiting".to_vec()).await.expect("JetStream accepts it with nobody serving");
    assert_eq!(served(&node, "late"), 0);
    folder.put_guest("echo", "late");
    assert!(eventually(WAIT, async || served(&node, "late") == 1).await, "the waiting dispatch never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_change_reaches_the_consumer_retry_schedule() {
    let server = NatsServer::start();
    let folder = Folder::with(&["flaky"]);
    let node = start_nats_watching(&server.url(), &folder, "a").await;
    folder.put("flaky.toml", b"retry = [\"10ms\", \"10ms\"]\ntimeout = \"2s\"\n");
    let client = nats_client(&server.url()).await;
    // The sidecar must be in force before the dispatch: wait for the reload.
    assert!(eventually(WAIT, async || node.reloads().applied == 1).await, "the sidecar was never applied");
    client.dispatch("flaky", b"2".to_vec()).await.expect("accepted");
    // `flaky` fails its first N attempts (N = the payload); with two retries
    // it succeeds on the third attempt.
    let done = eventually(WAIT, async || {
        node.local_stats().iter().find(|s| s.name == "flaky").is_some_and(|s| s.requests == 3 && s.errors == 2)
    })
    .await;
    assert!(done, "{:?}", node.local_stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_handler_stops_answering_within_a_fixed_time_under_steady_traffic() {
    let server = NatsServer::start();
    let folder = Folder::with(&["echo"]);
    let node = start_nats_watching(&server.url(), &folder, "a").await;
    let client = nats_client(&server.url()).await;
    // A steady 20 calls/s: the subscription's leave quota of 64 messages
    // alone would keep the name answering for over 3 s.
    let caller = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut last_answer = None;
        while started.elapsed() < Duration::from_secs(6) {
            if client.call("echo", b"x".to_vec(), TEST_TIMEOUT).await.is_ok() {
                last_answer = Some(std::time::Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last_answer
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let removed = std::time::Instant::now();
    folder.remove("echo.wasm");
    assert!(eventually(WAIT, async || node.reloads().applied == 1).await, "the removal was not applied");
    let last_answer = caller.await.expect("caller").expect("echo answered before the removal");
    let answered_after = last_answer.saturating_duration_since(removed);
    assert!(
        answered_after <= Duration::from_millis(1500),
        "echo kept answering {answered_after:?} after its file was removed (bound: 500 ms, plus slack for a loaded machine)"
    );
}
