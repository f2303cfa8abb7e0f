//! busbar nodes on a real three-server JetStream cluster with `replicas = 3`:
//! a backlog drains across the nodes with no dead letter, discovery sees
//! every node whichever server it is on, and killing the server that leads
//! the work queue under dispatch and call load loses no accepted dispatch,
//! dead-letters none, and stalls no node for long.

use busbar::Node;
use busbar::delivery::failure::FailureClass;
use busbar_tests::cluster::NatsCluster;
use busbar_tests::support::{Folder, dispatched, eventually, start_config};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// The config of node `id` on every server of `cluster`, its own server
/// first, with `replicas = 3`.
fn config(cluster: &NatsCluster, id: &str, first: usize) -> String {
    busbar_tests::support::nats_config_on(&cluster.urls(), id, first, 3)
}

/// Nodes `n0`, `n1`, `n2` serving `folder` and a client node, one per server.
async fn nodes(cluster: &NatsCluster, folder: &Folder) -> (Vec<Node>, Node) {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let (node, _) = start_config(&config(cluster, &format!("n{i}"), i), folder, false)
            .await
            .unwrap_or_else(|e| panic!("node n{i} starts: {e}{}", cluster.log_tails()));
        nodes.push(node);
    }
    let (client, _) = start_config(&config(cluster, "client", 0), &Folder::with(&[]), false).await.expect("client");
    (nodes, client)
}

/// Dispatch invocations of `name` on `node`.
fn all_dispatched(nodes: &[Node], name: &str) -> u64 {
    nodes.iter().map(|n| dispatched(n, name)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_across_three_nodes_with_no_dead_letter_and_discovery_sees_them_all() {
    let cluster = NatsCluster::start(3).await;
    let folder = Folder::with(&["echo"]);
    folder.sidecar("echo", "concurrency = 4\nqueue = 4\n");
    let (nodes, client) = nodes(&cluster, &folder).await;
    for i in 0..3 {
        let (watcher, _) = start_config(&config(&cluster, &format!("w{i}"), i), &Folder::with(&[]), false)
            .await
            .expect("a client on each server");
        let seen =
            async || watcher.nodes().await.is_ok_and(|n| n.iter().filter(|n| !n.services.is_empty()).count() == 3);
        assert!(eventually(WAIT, seen).await, "discovery through w{i} lists every node");
    }

    let mut accepted = 0;
    for i in 0..1500u32 {
        client.dispatch("echo", i.to_string().into_bytes()).await.expect("accepted");
        accepted += 1;
    }
    assert!(
        eventually(WAIT, async || all_dispatched(&nodes, "echo") >= accepted).await,
        "{} of {accepted} ran",
        all_dispatched(&nodes, "echo")
    );
    assert_eq!(all_dispatched(&nodes, "echo"), accepted, "each job ran once");
    assert!(nodes.iter().all(|n| dispatched(n, "echo") > 0), "every node took a share");
    assert!(client.dead_letters().await.expect("listed").is_empty(), "no dead letter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_work_queues_leader_under_load_loses_and_buries_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    let folder = Folder::with(&["echo"]);
    let (nodes, client) = nodes(&cluster, &folder).await;
    let nodes = Arc::new(nodes);
    let client = Arc::new(client);
    let leader = cluster.wait_stream_leader("SHOP_QUEUE", WAIT).await;

    // Callers: count the calls that fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failed_calls = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop, failed) = (client.clone(), stop.clone(), failed_calls.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(f) = client.call("echo", b"c".to_vec(), Duration::from_secs(10)).await {
                        assert_ne!(f.class, FailureClass::Invalid, "{f:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Dispatches before, across and after the kill; each awaited until accepted.
    let mut accepted = 0u64;
    for i in 0..200u32 {
        client.dispatch("echo", i.to_string().into_bytes()).await.expect("accepted");
        accepted += 1;
    }
    assert!(eventually(WAIT, async || all_dispatched(&nodes, "echo") == accepted).await, "the first jobs ran");
    let before: Vec<u64> = nodes.iter().map(|n| dispatched(n, "echo")).collect();
    // When each node first completes a job after the kill.
    let sampler = {
        let nodes = nodes.clone();
        tokio::spawn(async move {
            let mut resumed: Vec<Option<Instant>> = vec![None; nodes.len()];
            let until = Instant::now() + WAIT;
            while resumed.iter().any(Option::is_none) && Instant::now() < until {
                for (i, node) in nodes.iter().enumerate() {
                    if resumed[i].is_none() && dispatched(node, "echo") > before[i] {
                        resumed[i] = Some(Instant::now());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            resumed
        })
    };
    let killed_at = Instant::now();
    cluster.kill9(leader);
    // When the work queue's consumer of `echo` has a leader again.
    let cluster = Arc::new(cluster);
    let consumer_back = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let until = Instant::now() + WAIT;
            while Instant::now() < until {
                if cluster.consumer_leader("SHOP_QUEUE", "busbar_echo").await.is_some() {
                    return Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        })
    };
    // Dispatch on until every node has taken work again (at least 200 more).
    let mut first_accepted = None;
    let mut i = 200u32;
    while i < 400 || !sampler.is_finished() {
        client.dispatch("echo", i.to_string().into_bytes()).await.expect("accepted through the failover");
        first_accepted.get_or_insert_with(Instant::now);
        accepted += 1;
        i += 1;
    }
    let first_accepted = first_accepted.expect("published");

    // Every node takes work again soon after the queue has a leader again.
    let resumed = sampler.await.expect("sampler");
    let consumer_back = consumer_back.await.expect("watcher").expect("the consumer has a leader again");
    // The queue is back once both the stream takes publishes and the
    // consumer has a leader (each is elected on its own).
    let back = first_accepted.max(consumer_back);
    let after: Vec<Option<Duration>> = resumed.iter().map(|r| r.map(|r| r.saturating_duration_since(back))).collect();
    eprintln!(
        "failover: after the kill of s{leader}, the first accepted publish {:?}, the consumer's leader {:?}; each node took work again {after:?} after both",
        first_accepted - killed_at,
        consumer_back - killed_at,
    );
    for (i, took) in after.iter().enumerate() {
        let took = took.unwrap_or_else(|| panic!("node n{i} took no work after the kill{}", cluster.log_tails()));
        assert!(took <= Duration::from_secs(2), "node n{i} took work again only {took:?} after the queue was back");
    }
    assert!(eventually(WAIT, async || all_dispatched(&nodes, "echo") >= accepted).await, "lost jobs");
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    // Nothing lost: every accepted job ran and left the queue (a job leaves
    // it only once acknowledged after running). An acknowledgement sent to
    // the killed server may be lost, and JetStream then runs that job again
    // (at least once): counted, not hidden.
    let queue_empty = async || cluster.stream_info("SHOP_QUEUE").await.is_some_and(|i| i["state"]["messages"] == 0);
    assert!(eventually(WAIT, queue_empty).await, "jobs left in the queue");
    let ran = all_dispatched(&nodes, "echo");
    assert!(ran >= accepted, "{ran} ran of {accepted} accepted");
    eprintln!(
        "failover: {accepted} jobs accepted, {ran} runs ({} run again after a lost acknowledgement)",
        ran - accepted
    );
    assert!(client.dead_letters().await.expect("listed").is_empty(), "no dead letter");
    let failed = failed_calls.load(Ordering::Relaxed);
    assert!(failed <= 4, "{failed} calls failed; only the 4 in flight at the kill may");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_job_is_redelivered_to_a_node_on_another_server() {
    let cluster = NatsCluster::start(3).await;
    let folder = Folder::with(&["slow"]);
    folder.sidecar("slow", "timeout = \"2s\"\n");
    let state = tempfile::tempdir().expect("temp dir");
    let doomed_config = state.path().join("doomed.toml");
    std::fs::write(&doomed_config, config(&cluster, "doomed", 0)).expect("write config");
    let mut doomed = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["--config", doomed_config.to_str().expect("utf-8"), "--handlers"])
        .arg(folder.path())
        .arg("run")
        .env("XDG_CACHE_HOME", std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-cli-cache"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("busbar runs");
    let (client, _) = start_config(&config(&cluster, "client", 1), &Folder::with(&[]), false).await.expect("client");
    assert!(
        eventually(WAIT, async || client.nodes().await.is_ok_and(|n| n.iter().any(|n| n.node == "doomed"))).await,
        "the node never came up"
    );

    client.dispatch("slow", b"1500".to_vec()).await.expect("accepted");
    let js = async_nats::jetstream::new(cluster.client(2).await);
    let taken = async || {
        let Ok(stream) = js.get_stream("SHOP_QUEUE").await else { return false };
        let Ok(mut consumer) =
            stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("busbar_slow").await
        else {
            return false;
        };
        consumer.info().await.is_ok_and(|i| i.num_ack_pending == 1)
    };
    assert!(eventually(WAIT, taken).await, "the node never took the job");
    doomed.kill().expect("kill -9 the node mid-handler");
    doomed.wait().expect("reaped");

    // A node on another server runs it once the dead node's ack wait (2 s + 5 s) runs out.
    let (survivor, _) = start_config(&config(&cluster, "survivor", 2), &folder, false).await.expect("survivor");
    assert!(eventually(WAIT, async || dispatched(&survivor, "slow") == 1).await, "the job was lost");
    assert!(client.dead_letters().await.expect("listed").is_empty(), "no dead letter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_of_an_idle_cluster_the_next_job_runs() {
    let logs = busbar_tests::support::capture_logs();
    let mut cluster = NatsCluster::start(3).await;
    let (nodes, client) = nodes(&cluster, &Folder::with(&["echo"])).await;
    client.dispatch("echo", b"warm".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || all_dispatched(&nodes, "echo") == 1).await);
    let leader = cluster.wait_stream_leader("SHOP_QUEUE", WAIT).await;
    cluster.kill9(leader);
    let killed = Instant::now();
    client.dispatch("echo", b"across".to_vec()).await.expect("accepted through the failover");
    let accepted = killed.elapsed();
    assert!(
        eventually(WAIT, async || all_dispatched(&nodes, "echo") == 2).await,
        "the job accepted {accepted:?} after the kill never ran{}\n{}",
        cluster.log_tails(),
        logs.contents()
    );
}
