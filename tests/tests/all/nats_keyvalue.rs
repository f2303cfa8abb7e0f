//! Key-value buckets on the NATS driver: JetStream KV buckets behind the
//! same `wasi:keyvalue` a handler uses on the default driver, with counters
//! exact across nodes and the values readable by any NATS client.

use super::keyvalue::{every_operation_works, kv};
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{Folder, TEST_TIMEOUT, served, start_nats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_on_nats() {
    let server = NatsServer::start();
    let folder = Folder::with(&["kvtool"]);
    folder.sidecar("kvtool", "keyvalue = [\"b\"]\n");
    let (node, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    every_operation_works(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nats_nodes_incrementing_one_counter_end_at_exactly_the_sum() {
    let server = NatsServer::start();
    let folder = Folder::with(&["hits"]);
    folder.sidecar("hits", "keyvalue = [\"counter\"]\nconcurrency = 8\n");
    let (a, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    let (b, _) = start_nats(&server.url(), &folder, "b", "", "").await;
    let callers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .flat_map(|node| (0..4).map(move |_| node.clone()))
        .map(|node| {
            tokio::spawn(async move {
                for _ in 0..125 {
                    node.call("hits", Vec::new(), TEST_TIMEOUT).await.expect("counted");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    // Any NATS client reads the count in the bucket's JetStream KV bucket.
    let js = async_nats::jetstream::new(server.client().await);
    let store = js.get_key_value("SHOP_KV_counter").await.expect("the bucket exists on the server");
    let count = store.get("hits").await.expect("read").expect("set");
    assert_eq!(count.as_ref(), b"1000");
    // NATS spread the calls over both nodes' handlers, so both counted.
    assert!(served(&a, "hits") > 0 && served(&b, "hits") > 0, "{} and {}", served(&a, "hits"), served(&b, "hits"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_bucket_is_bounded_by_bucket_size() {
    let server = NatsServer::start();
    let folder = Folder::with(&["kvtool"]);
    folder.sidecar("kvtool", "keyvalue = [\"b\"]\n");
    let config = busbar_tests::support::nats_config_with(&server.url(), "a", "bucket_size = \"64KiB\"");
    let (node, _) = busbar_tests::support::start_config(&config, &folder, false).await.expect("starts");
    let failed = kv(&node, "fill b 100 1024").await.expect_err("past 64 KiB");
    assert!(failed.message.contains("is full"), "{failed}");
    // Nothing already there was dropped to make room.
    assert_eq!(kv(&node, "get b fill-0").await.expect("kept").len(), 1024);
}
