//! Key-value buckets (`wasi:keyvalue`) on the default driver: the `kvtool`
//! guest runs every operation, the `hits` guest counts; buckets are granted
//! per handler, keys and values and buckets are bounded, counters are exact
//! under concurrency, and a durable node keeps its buckets across a restart.
//! The same on NATS is `nats_keyvalue.rs`.

use busbar::driver::default::DefaultDriver;
use busbar::{FailureClass, Node};
use busbar_tests::support::{Folder, TEST_TIMEOUT, capture_logs, eventually, refusal, start_on};

pub async fn kv(node: &Node, command: &str) -> Result<String, busbar::Failure> {
    let reply = node.call("kvtool", command.as_bytes().to_vec(), TEST_TIMEOUT).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Every operation of `store`, `atomics` and `batch` on bucket `b`, as a
/// handler sees it (shared by the NATS test).
pub async fn every_operation_works(node: &Node) {
    let ok = async |command: &str| kv(node, command).await.unwrap_or_else(|e| panic!("{command}: {e}"));
    assert_eq!(ok("get b color").await, "(none)");
    assert_eq!(ok("exists b color").await, "false");
    assert_eq!(ok("set b color blue").await, "ok");
    assert_eq!(ok("get b color").await, "blue");
    assert_eq!(ok("exists b color").await, "true");
    // Keys of any text round trip.
    assert_eq!(ok("set b user/42:ü* green").await, "ok");
    assert_eq!(ok("get b user/42:ü*").await, "green");
    assert_eq!(ok("keys b").await, "color\nuser/42:ü*");
    assert_eq!(ok("keys b color").await, "user/42:ü*", "a cursor lists the keys after it");
    assert_eq!(ok("del b color").await, "ok");
    assert_eq!(ok("del b color").await, "ok", "deleting an unset key is no error");
    assert_eq!(ok("get b color").await, "(none)");
    assert_eq!(ok("incr b n 5").await, "5");
    assert_eq!(ok("incr b n -7").await, "-2");
    assert_eq!(ok("get b n").await, "-2", "a counter is decimal text");
    let not_a_number = kv(node, "incr b user/42:ü* 1").await.expect_err("green is no number");
    assert!(not_a_number.message.contains("not hold a decimal integer"), "{not_a_number}");
    assert_eq!(ok("cas b c - one").await, "swapped", "compare-and-swap of an unset key");
    assert_eq!(ok("cas b c one two").await, "swapped");
    assert_eq!(ok("cas b c one three").await, "changed: two");
    assert_eq!(ok("get b c").await, "two");
    assert_eq!(ok("del b c").await, "ok");
    assert_eq!(ok("cas b c - again").await, "swapped", "a deleted key is unset again");
    assert_eq!(ok("setmany b x=1,y=2").await, "ok");
    assert_eq!(ok("getmany b x,nope,y").await, "x=1\nnope?\ny=2");
    assert_eq!(ok("delmany b x,y").await, "ok");
    assert_eq!(ok("getmany b x,y").await, "x?\ny?");
}

fn granting(buckets: &str, sidecar: &str) -> Folder {
    let folder = Folder::with(&["kvtool"]);
    folder.sidecar("kvtool", &format!("keyvalue = [{buckets}]\n{sidecar}"));
    folder
}

#[tokio::test]
async fn every_operation_works_on_the_default_driver() {
    let (node, report) = start_on(&Default::default(), &granting("\"b\"", ""), "").await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    every_operation_works(&node).await;
}

#[tokio::test]
async fn a_bucket_not_granted_is_access_denied_and_logged() {
    let logs = capture_logs();
    let (node, report) = start_on(&Default::default(), &Folder::with(&["kvtool", "hits"]), "").await;
    assert!(report.skipped.is_empty(), "a handler importing wasi:keyvalue loads without a grant");
    let denied = kv(&node, "get secrets k").await.expect_err("not granted");
    assert!(denied.message.contains("AccessDenied"), "{denied}");
    assert!(
        logs.contents().contains("bucket `secrets` denied") && logs.contents().contains("`keyvalue`"),
        "the log says how to grant it: {}",
        logs.contents()
    );
    let denied = node.call("hits", Vec::new(), TEST_TIMEOUT).await.expect_err("hits has no grant either");
    assert_eq!(denied.class, FailureClass::Retry, "{denied}");
}

#[tokio::test]
async fn a_sidecar_names_buckets_both_drivers_can_name() {
    let folder = Folder::with(&["kvtool"]);
    for bad in ["\"a.b\"", "\"\"", "\"with space\""] {
        let reason = refusal(&folder, "kvtool", &format!("keyvalue = [{bad}]\n"), "").await;
        assert!(reason.contains("kvtool.toml") && reason.contains("`keyvalue`"), "{bad}: {reason}");
    }
}

#[tokio::test]
async fn keys_values_and_buckets_are_bounded() {
    let (node, _) =
        start_on(&Default::default(), &granting("\"b\"", ""), "[bus]\nsetting = { bucket_size = \"64KiB\" }\n").await;
    let key = "k".repeat(1025);
    let failed = kv(&node, &format!("set b {key} v")).await.expect_err("a key past 1 KiB");
    assert!(failed.message.contains("at most 1024 bytes"), "{failed}");
    let failed = kv(&node, "fill b 1 1048577").await.expect_err("a value past 1 MiB");
    assert!(failed.message.contains("a value is at most 1 MiB"), "{failed}");
    let failed = kv(&node, "fill b 100 1024").await.expect_err("past the bucket's 64 KiB");
    assert!(failed.message.contains("is full") && failed.message.contains("bucket_size"), "{failed}");
    // What is there stays readable, and a delete makes room again.
    assert_eq!(kv(&node, "get b fill-0").await.expect("kept").len(), 1024);
    assert_eq!(kv(&node, "delmany b fill-0,fill-1,fill-2").await.expect("room"), "ok");
    assert_eq!(kv(&node, "set b small v").await.expect("fits again"), "ok");
}

#[tokio::test]
async fn bucket_operations_count_against_max_calls() {
    let (node, _) = start_on(&Default::default(), &granting("\"b\"", "max_calls = 10\n"), "").await;
    assert_eq!(kv(&node, "fill b 10 8").await.expect("ten writes"), "ok");
    let failed = kv(&node, "fill b 11 8").await.expect_err("an eleventh");
    assert!(failed.message.contains("max_calls"), "{failed}");
}

/// Calls `hits` (which counts) 1,000 times in all: 4 callers on each of
/// `nodes` (two of them), 125 calls each, all at once (shared by the NATS test).
pub async fn count_a_thousand_times(nodes: &[&Node; 2]) {
    let callers: Vec<_> = nodes
        .iter()
        .flat_map(|node| (0..4).map(move |_| (*node).clone()))
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_incrementing_one_counter_end_at_exactly_the_sum() {
    let hub = DefaultDriver::new();
    let folder = Folder::with(&["hits"]);
    folder.sidecar("hits", "keyvalue = [\"counter\"]\n");
    let (a, _) = start_on(&hub, &folder, "").await;
    let (b, _) = start_on(&hub, &folder, "").await;
    count_a_thousand_times(&[&a, &b]).await;
    assert_eq!(a.call("hits", Vec::new(), TEST_TIMEOUT).await.expect("counted"), b"1001");
}

#[tokio::test]
async fn a_durable_node_keeps_its_buckets_across_a_restart() {
    let state = tempfile::tempdir().expect("tempdir");
    let folder = granting("\"b\"", "");
    {
        let hub = DefaultDriver::durable(state.path()).expect("state opens");
        let (node, _) = start_on(&hub, &folder, "").await;
        assert_eq!(kv(&node, "set b kept yes").await.expect("set"), "ok");
        assert_eq!(kv(&node, "incr b n 41").await.expect("incr"), "41");
        node.stop().await;
    }
    // The state's thread lets go of its lock once the last handle is gone.
    let mut reopened = None;
    assert!(
        eventually(TEST_TIMEOUT, async || {
            reopened = DefaultDriver::durable(state.path()).ok();
            reopened.is_some()
        })
        .await
    );
    let (node, _) = start_on(&reopened.expect("state opens again"), &folder, "").await;
    assert_eq!(kv(&node, "get b kept").await.expect("get"), "yes");
    assert_eq!(kv(&node, "incr b n 1").await.expect("incr"), "42");
}

/// `busbar kv ARGS…` on the state of a node serving `folder` (the project's
/// default state directory under the folder's state home).
fn busbar_kv(folder: &Folder, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .arg("--handlers")
        .arg(folder.path())
        .arg("kv")
        .args(args)
        .env("XDG_STATE_HOME", folder.state_home())
        .env_remove("RUST_LOG")
        .output()
        .expect("busbar runs")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_and_writes_buckets_with_busbar_kv_beside_a_running_node() {
    let folder = granting("\"b\"", "");
    stdout(&busbar_kv(&folder, &["set", "b", "greeting", "hello"]));
    let hub = DefaultDriver::durable(&folder.state_home().join("busbar/busbar")).expect("the state the CLI made");
    let (node, _) = start_on(&hub, &folder, "").await;
    assert_eq!(kv(&node, "get b greeting").await.expect("get"), "hello", "the handler reads what the CLI wrote");
    // While the node runs and holds its state, the CLI still reads and writes.
    assert_eq!(stdout(&busbar_kv(&folder, &["increment", "b", "n", "5"])), "5\n");
    assert_eq!(kv(&node, "incr b n 1").await.expect("incr"), "6");
    assert_eq!(stdout(&busbar_kv(&folder, &["get", "b", "n"])), "6");
    assert_eq!(stdout(&busbar_kv(&folder, &["keys", "b"])), "greeting\nn\n");
    stdout(&busbar_kv(&folder, &["delete", "b", "greeting"]));
    let missing = busbar_kv(&folder, &["get", "b", "greeting"]);
    assert_eq!(missing.status.code(), Some(4), "{}", String::from_utf8_lossy(&missing.stderr));
    let bad = busbar_kv(&folder, &["get", "no.dots", "k"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}
