//! Durable dispatch on one real `nats-server` under the pressure that used
//! to bury good work: a backlog far bigger than a handler's admission, a
//! server killed while jobs are queued and published, dead letters past
//! their limits, and streams that exist with other settings.

use busbar::delivery::Request;
use busbar::delivery::failure::FailureClass;
use busbar::delivery::{Headers, Mode};
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{
    Folder, dispatched, eventually, named_metric, nats_client, nats_config_with, served, start_config, start_nats,
};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Queues `count` jobs for `name` straight into the work-queue stream, the
/// way any NATS client would, awaiting the acks in bounded windows.
async fn queue_jobs(server: &NatsServer, name: &str, count: usize) {
    let js = async_nats::jetstream::new(server.client().await);
    let mut acks = Vec::new();
    for i in 0..count {
        acks.push(js.publish(format!("queue.shop.{name}"), i.to_string().into()).await.expect("published"));
        if acks.len() == 512 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// The value of metric `name{name="…"}` in `text`, if present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_bigger_than_admission_drains_with_no_dead_letter_while_calls_compete() {
    let server = NatsServer::start();
    let client = nats_client(&server.url()).await;
    queue_jobs(&server, "echo", 2000).await;
    let folder = Folder::with(&["echo"]);
    folder.sidecar("echo", "concurrency = 4\nqueue = 4\n");
    let (node, _) = start_nats(&server.url(), &folder, "a", "", "").await;

    // Callers compete for the same four slots while the backlog drains: a
    // call may be refused as overloaded, a dispatch never is.
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let url = server.url();
            tokio::spawn(async move {
                let client = nats_client(&url).await;
                let (mut ok, mut overloaded) = (0u32, 0u32);
                for _ in 0..100 {
                    match client.call("echo", b"c".to_vec(), Duration::from_secs(5)).await {
                        Ok(_) => ok += 1,
                        Err(f) if f.class == FailureClass::Overloaded => overloaded += 1,
                        Err(f) => panic!("a call failed otherwise: {f:?}"),
                    }
                }
                (ok, overloaded)
            })
        })
        .collect();
    let mut answered = 0;
    for caller in callers {
        let (ok, _overloaded) = caller.await.expect("caller");
        answered += ok;
    }
    assert!(answered > 0, "calls were served beside the backlog");
    assert!(
        eventually(WAIT, async || dispatched(&node, "echo") >= 2000).await,
        "the backlog did not drain: {} jobs ran",
        dispatched(&node, "echo")
    );
    assert_eq!(dispatched(&node, "echo"), 2000, "every job ran exactly once");
    assert!(client.dead_letters().await.expect("listed").is_empty(), "no job was dead-lettered");
    assert_eq!(named_metric(&node, "busbar_dead_letters_total", "echo"), None);
    assert!(
        eventually(WAIT, async || named_metric(&node, "busbar_queue_pending", "echo") == Some(0.0)).await,
        "the queue is empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_published_while_the_server_is_down_is_stored_once_when_it_returns() {
    let mut server = NatsServer::start();
    let (node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "a", "", "").await;
    let client = nats_client(&server.url()).await;
    client.dispatch("echo", b"before".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || served(&node, "echo") == 1).await);

    server.kill9();
    let request = Request { name: "echo".into(), payload: b"across".to_vec(), headers: Headers::new(), timeout: WAIT };
    let sent = tokio::spawn(async move {
        let sent = client.request(Mode::Dispatch, request).await;
        (client, sent)
    });
    server.restart();
    let (client, sent) = sent.await.expect("dispatching task");
    assert_eq!(sent, Ok(Vec::new()), "the publish was retried until the server took it");
    assert!(eventually(WAIT, async || served(&node, "echo") == 2).await, "the job ran once the server was back");

    // Once the caller's deadline passes, the dispatch fails as retryable and says so.
    server.kill9();
    let request = Request {
        name: "echo".into(),
        payload: b"never".to_vec(),
        headers: Headers::new(),
        timeout: Duration::from_millis(700),
    };
    let started = Instant::now();
    let refused = client.request(Mode::Dispatch, request).await.expect_err("no server");
    assert!(started.elapsed() < Duration::from_secs(5), "the refusal waited {:?}", started.elapsed());
    assert_eq!(refused.class, FailureClass::Retry, "{refused:?}");
    assert!(refused.message.contains("was not queued"), "{}", refused.message);
    server.restart();
    // Busbar's own retries never made a second job of the first.
    assert_eq!(served(&node, "echo"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_says_why_it_stalled_and_takes_work_again_after_a_server_restart() {
    let mut server = NatsServer::start();
    let (node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "a", "", "").await;
    let client = nats_client(&server.url()).await;
    client.dispatch("echo", b"1".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || served(&node, "echo") == 1).await);

    server.kill9();
    assert!(
        eventually(WAIT, async || named_metric(&node, "busbar_queue_stalled", "echo") == Some(1.0)).await,
        "the stall shows in the metrics"
    );
    server.restart();
    client.dispatch("echo", b"2".to_vec()).await.expect("accepted after the restart");
    assert!(eventually(WAIT, async || served(&node, "echo") == 2).await, "the node took work again");
    assert!(
        eventually(WAIT, async || named_metric(&node, "busbar_queue_stalled", "echo") == Some(0.0)).await,
        "the stall ended"
    );
    assert_eq!(named_metric(&node, "busbar_queue_stalls_total", "echo"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_past_their_byte_limit_make_room_oldest_first_and_are_counted() {
    let server = NatsServer::start();
    let logs = busbar_tests::support::capture_logs();
    let folder = Folder::with(&["fail"]);
    let config = nats_config_with(&server.url(), "a", "dead_max_bytes = \"1MiB\"");
    let (node, _) = start_config(&config, &folder, false).await.expect("starts");
    let client_config = nats_config_with(&server.url(), "client", "dead_max_bytes = \"1MiB\"");
    let (client, _) = start_config(&client_config, &Folder::with(&[]), false).await.expect("client starts");
    let letter = |i: usize| {
        let mut payload = format!("invalid:{i}:").into_bytes();
        payload.resize(200 * 1024, b'x');
        payload
    };
    for i in 0..10 {
        client.dispatch("fail", letter(i)).await.expect("accepted");
        let stored = async || named_metric(&node, "busbar_dead_letters_total", "fail") == Some(i as f64 + 1.0);
        assert!(eventually(WAIT, stored).await, "letter {i} was stored");
    }
    let dropped = named_metric(&node, "busbar_dead_letters_dropped_total", "fail").unwrap_or(0.0) as usize;
    let kept = client.dead_letters().await.expect("listed");
    assert!(dropped >= 1, "some letters had to make room ({} kept): {}", kept.len(), logs.contents());
    assert_eq!(dropped + kept.len(), 10, "every letter is either kept or counted as dropped");
    let kept: Vec<String> = kept.iter().map(|l| String::from_utf8_lossy(&l.payload[..10]).to_string()).collect();
    let newest: Vec<String> = (dropped..10).map(|i| String::from_utf8_lossy(&letter(i)[..10]).to_string()).collect();
    assert_eq!(kept, newest, "the oldest went first ({dropped} dropped)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_older_than_their_age_limit_are_removed_and_counted() {
    let server = NatsServer::start();
    let folder = Folder::with(&["fail"]);
    let (node, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    node.dispatch("fail", b"invalid:old".to_vec()).await.expect("accepted");
    let client = nats_client(&server.url()).await;
    assert!(eventually(WAIT, async || client.dead_letters().await.is_ok_and(|d| d.len() == 1)).await);

    // The letter ages past one second (its time is kept in whole seconds).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let config = nats_config_with(&server.url(), "b", "dead_max_age = \"1s\"");
    let (trimmer, _) = start_config(&config, &Folder::with(&[]), false).await.expect("starts");
    assert!(
        eventually(WAIT, async || client.dead_letters().await.is_ok_and(|d| d.is_empty())).await,
        "the old letter was removed"
    );
    let counted = async || named_metric(&trimmer, "busbar_dead_letters_dropped_total", "fail") == Some(1.0);
    assert!(eventually(WAIT, counted).await, "the trimmer counted it: {}", trimmer.metrics_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_settings_jetstream_cannot_change_is_refused_with_what_differs() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(server.client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SHOP_QUEUE".into(),
        subjects: vec!["queue.shop.>".into()],
        ..Default::default()
    })
    .await
    .expect("an operator's stream");
    let folder = Folder::with(&["echo"]);
    let refused = start_config(&nats_config_with(&server.url(), "a", "replicas = 1"), &folder, false)
        .await
        .map(drop)
        .expect_err("a limits stream cannot be a work queue");
    assert!(refused.contains("SHOP_QUEUE exists with retention Limits, busbar needs WorkQueue"), "{refused}");
    assert!(refused.contains("nats stream rm SHOP_QUEUE"), "{refused}");

    let refused = start_config(&nats_config_with(&server.url(), "a", "replicas = 9"), &folder, false)
        .await
        .map(drop)
        .expect_err("out of range");
    assert!(refused.contains("`replicas` is 9; it must be 1 to 5"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_servers_fail_the_start_with_the_servers_reason() {
    let server = NatsServer::start();
    let refused = start_config(&nats_config_with(&server.url(), "a", "replicas = 3"), &Folder::with(&["echo"]), false)
        .await
        .map(drop)
        .expect_err("one server cannot hold three replicas");
    assert!(refused.contains("creating the work-queue stream SHOP_QUEUE"), "{refused}");
    assert!(refused.contains("replicas"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_keeps_its_pull_requests_alive_without_a_stall() {
    let server = NatsServer::start();
    let logs = busbar_tests::support::capture_logs();
    let (node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "idle", "", "").await;
    // Idle for longer than two silences: the server's heartbeats keep the
    // pull request known to be alive, so nothing is taken as lost.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(named_metric(&node, "busbar_queue_stalls_total", "echo"), None, "{}", logs.contents());
    node.dispatch("echo", b"after idling".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || served(&node, "echo") == 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_past_the_queues_max_pending_is_refused_as_overloaded_at_once() {
    let server = NatsServer::start();
    let folder = Folder::with(&["slow"]);
    folder.sidecar("slow", "concurrency = 1\ntimeout = \"10s\"\n");
    let config = nats_config_with(&server.url(), "a", "max_pending = 3");
    let (node, _) = start_config(&config, &folder, false).await.expect("node starts");
    for _ in 0..3 {
        node.dispatch("slow", b"3000".to_vec()).await.expect("the queue has room");
    }
    let started = Instant::now();
    let refused = node.dispatch("slow", b"3000".to_vec()).await.expect_err("the queue holds 3");
    assert_eq!(refused.class, FailureClass::Overloaded, "{refused}");
    assert!(refused.message.contains("already holds its maximum of 3 dispatches"), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_to_a_served_name_past_its_max_pending_is_refused_as_overloaded() {
    let server = NatsServer::start();
    let folder = Folder::with(&["slow"]);
    folder.sidecar("slow", "concurrency = 1\nmax_pending = 2\ntimeout = \"10s\"\n");
    let (node, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    node.dispatch("slow", b"1500".to_vec()).await.expect("accepted");
    // The node runs one at a time: these three wait in the queue, and the
    // next job it takes says so.
    for _ in 0..3 {
        node.dispatch("slow", b"1500".to_vec()).await.expect("the node has not seen them yet");
    }
    let seen = async || named_metric(&node, "busbar_queue_pending", "slow").unwrap_or(0.0) >= 2.0;
    assert!(eventually(WAIT, seen).await, "the node never saw the jobs waiting");
    let refused = node.dispatch("slow", b"1500".to_vec()).await.expect_err("past slow's max_pending");
    assert_eq!(refused.class, FailureClass::Overloaded, "{refused}");
    assert!(refused.message.contains("its `max_pending` is 2"), "{refused}");
}
