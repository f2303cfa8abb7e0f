//! Key-value buckets on the NATS driver: JetStream KV buckets behind the
//! same `wasi:keyvalue` a handler uses on the default driver, with counters
//! exact across nodes and the values readable by any NATS client.

use super::keyvalue::{count_a_thousand_times, every_operation_works, kv};
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{Folder, served, start_nats};

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
    count_a_thousand_times(&[&a, &b]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_kv_reads_and_writes_a_nats_bucket() {
    let server = NatsServer::start();
    let folder = Folder::with(&["kvtool"]);
    folder.sidecar("kvtool", "keyvalue = [\"b\"]\n");
    let (node, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    let config = folder.path().join("client.toml");
    std::fs::write(&config, busbar_tests::support::nats_config(&server.url(), "cli", "", "")).expect("config");
    let busbar_kv = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
            .arg("--config")
            .arg(&config)
            .arg("kv")
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("busbar runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    busbar_kv(&["set", "b", "user/1:x", "ada"]);
    assert_eq!(kv(&node, "get b user/1:x").await.expect("get"), "ada", "the handler reads what the CLI wrote");
    assert_eq!(kv(&node, "incr b n 2").await.expect("incr"), "2");
    assert_eq!(busbar_kv(&["increment", "b", "n", "3"]), "5\n");
    assert_eq!(busbar_kv(&["keys", "b"]), "n\nuser/1:x\n");
}
