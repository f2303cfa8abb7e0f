//! A three-server JetStream cluster (`busbar_tests::cluster`): it forms on
//! both server versions, an R3 stream takes publishes, and losing the
//! server that leads the stream costs an election, not messages.

use async_nats::jetstream::{self, consumer, context::ContextBuilder, message::PublishMessage, stream};
use busbar_tests::cluster::NatsCluster;
use busbar_tests::nats::server_version;
use busbar_tests::support::eventually;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a new stream leader may take after a SIGKILL: the server's Raft
/// election timeout is 4–9 s, plus slack for a loaded machine.
const ELECTION: Duration = Duration::from_secs(15);

/// How long a stream's leader may take to answer right after creation, and a
/// restarted member to catch up.
const SETTLE: Duration = Duration::from_secs(10);

/// Creates an R3 file stream `name` on `name.>` through member 0.
async fn r3_stream(cluster: &NatsCluster, name: &str) {
    let js = jetstream::new(cluster.client(0).await);
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        num_replicas: 3,
        ..Default::default()
    };
    js.create_stream(config)
        .await
        .unwrap_or_else(|e| panic!("create the R3 stream {name}: {e}{}", cluster.log_tails()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_form_a_cluster_and_an_r3_stream_takes_publishes() {
    let cluster = NatsCluster::start(3).await;
    assert_eq!(cluster.urls().len(), 3);
    for i in 0..3 {
        let client = cluster.client(i).await;
        assert_eq!(client.server_info().server_name, format!("s{i}"), "client({i}) is on its own member");
        assert_eq!(client.server_info().cluster.as_deref(), Some(cluster.name()));
    }
    r3_stream(&cluster, "orders").await;
    let leader = cluster.wait_stream_leader("orders", SETTLE).await;

    // Publishes through every member, the leader and the followers.
    for i in 0..3 {
        let js = jetstream::new(cluster.client(i).await);
        // The stream's subjects reach every member's interest shortly after
        // its leader answers; until then a publish has no responders.
        let reachable = async || match js.publish(format!("orders.probe{i}"), "probe".into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        assert!(eventually(SETTLE, reachable).await, "no publish through s{i} accepted{}", cluster.log_tails());
        for k in 0..10 {
            let ack = js.publish(format!("orders.s{i}"), format!("{i}-{k}").into()).await.unwrap().await;
            ack.unwrap_or_else(|e| panic!("publish through s{i}: {e}{}", cluster.log_tails()));
        }
    }
    let info = cluster.stream_info("orders").await.expect("STREAM.INFO answers");
    assert_eq!(info["state"]["messages"], 33, "{info}"); // 30 and the three probes
    assert_eq!(info["config"]["num_replicas"], 3, "{info}");
    assert_eq!(info["cluster"]["leader"], format!("s{leader}"), "{info}");
    assert_eq!(info["cluster"]["replicas"].as_array().map(Vec::len), Some(2), "{info}");
    assert_eq!(cluster.wait_current_peers("orders", 3, SETTLE).await, [0, 1, 2]);

    // A durable consumer gets a leader of its own.
    let js = jetstream::new(cluster.client(1).await);
    let consumer = consumer::pull::Config { durable_name: Some("shipping".into()), ..Default::default() };
    js.get_stream("orders").await.unwrap().create_consumer(consumer).await.unwrap();
    assert!(
        eventually(SETTLE, async || cluster.consumer_leader("orders", "shipping").await.is_some()).await,
        "the consumer has no leader{}",
        cluster.log_tails()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leaders_server_elects_a_new_leader_and_loses_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    r3_stream(&cluster, "events").await;
    let leader = cluster.wait_stream_leader("events", SETTLE).await;
    let survivor = (leader + 1) % 3;
    let js = jetstream::new(cluster.client(survivor).await);
    // A leader that answers STREAM.INFO may not have its subjects' interest
    // on every member yet (no responders, reported as StreamNotFound): the
    // first publish is retried until one is stored.
    let first = async || match js.publish("events.before", "before-1".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(eventually(SETTLE, first).await, "no publish accepted before the kill{}", cluster.log_tails());
    for k in 2..=20 {
        js.publish("events.before", format!("before-{k}").into()).await.unwrap().await.unwrap();
    }

    cluster.kill9(leader);
    let killed = Instant::now();
    // Publish until one is accepted: each attempt waits 500 ms for its ack,
    // and every attempt carries the same Nats-Msg-Id, so a timed-out attempt
    // that was stored after all is not stored twice. Until a new leader is
    // elected nobody serves the stream's subjects: async-nats reports the
    // no-responders status as StreamNotFound ("no stream found for given
    // subject"), though the stream is fine.
    let impatient = ContextBuilder::new().timeout(Duration::from_millis(500)).build(cluster.client(survivor).await);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let ack = loop {
        let publish = PublishMessage::build().payload("after".into()).message_id("after-the-kill");
        let outcome = match impatient.send_publish("events.after", publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(ack) => break ack,
            Err(e) => *errors.entry(format!("{:?}: {e}", e.kind())).or_default() += 1,
        }
        assert!(
            killed.elapsed() < ELECTION,
            "no publish accepted within {ELECTION:?} of killing s{leader}; errors: {errors:?}{}",
            cluster.log_tails()
        );
        // NoResponders comes back at once: pace the attempts.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first_accepted = killed.elapsed();
    let new_leader = cluster.wait_stream_leader("events", ELECTION).await;
    println!(
        "nats-server {}: kill -9 of s{leader} (the stream leader): first publish accepted after {first_accepted:?} \
         (new leader s{new_leader}, seq {}, duplicate {}); errors meanwhile: {errors:?}",
        server_version(),
        ack.sequence,
        ack.duplicate
    );
    assert_ne!(new_leader, leader);

    // Everything stored before the kill is still there, in order.
    let stream = js.get_stream("events").await.unwrap();
    for seq in 1..=20 {
        let message = stream.get_raw_message(seq).await.unwrap_or_else(|e| panic!("message {seq}: {e}"));
        assert_eq!(message.payload, format!("before-{seq}"), "message {seq}");
    }
    let info = cluster.stream_info("events").await.expect("STREAM.INFO answers");
    assert_eq!(info["state"]["messages"], 21, "{info}");

    // The killed member comes back with its store and catches up.
    let restarted = Instant::now();
    cluster.restart(leader).await;
    let back = restarted.elapsed();
    assert_eq!(cluster.wait_current_peers("events", 3, SETTLE).await, [0, 1, 2]);
    println!(
        "nats-server {}: s{leader} restarted and answering in {back:?}, a current replica again after {:?}",
        server_version(),
        restarted.elapsed()
    );
    let info = cluster.stream_info("events").await.expect("STREAM.INFO answers");
    assert_eq!(info["state"]["messages"], 21, "{info}");
}
