//! Limits and grants: what a handler may use (concurrency, payload and reply
//! size, bus calls) and reach (environment, directories, network), checked
//! with the `hostile` guest, which tries on request what it must not do.

use busbar::{FailureClass, Node};
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{
    Folder, SERVICE_LIFT, capture_logs, core_handle, eventually, metric, named_metric, refusal, service_component,
    start, start_on, start_own_runtime, start_watching,
};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn call(node: &Node, name: &str, payload: &str) -> Result<Vec<u8>, busbar::Failure> {
    node.call(name, payload.as_bytes().to_vec(), TEST_TIMEOUT).await
}

fn class_of(result: Result<Vec<u8>, busbar::Failure>) -> FailureClass {
    result.expect_err("refused").class
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_concurrency_and_queue_a_call_is_overloaded_at_once() {
    let folder = Folder::with(&["slow"]);
    folder.sidecar("slow", "concurrency = 1\nqueue = 1\n");
    let node = start(&folder).await;
    let started = Instant::now();
    let calls = (0..3).map(|_| {
        let node = node.clone();
        tokio::spawn(async move { node.call("slow", b"300".to_vec(), TEST_TIMEOUT).await })
    });
    let mut results = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        results.push(c.await.expect("call task"));
    }
    let overloaded: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(overloaded.len(), 1, "{results:?}");
    assert_eq!(overloaded[0].class, FailureClass::Overloaded);
    assert!(overloaded[0].message.contains("concurrency"), "{}", overloaded[0].message);
    // The two admitted ran one after the other.
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
}

#[tokio::test]
async fn payloads_and_replies_past_their_caps_are_refused() {
    let folder = Folder::with(&["echo", "hostile"]);
    folder.sidecar("echo", "max_payload = \"1KiB\"\n").sidecar("hostile", "max_reply = \"1KiB\"\n");
    let node = start(&folder).await;
    assert!(node.call("echo", vec![1; 1024], TEST_TIMEOUT).await.is_ok());
    let big = node.call("echo", vec![1; 1025], TEST_TIMEOUT).await.expect_err("too big");
    assert_eq!(big.class, FailureClass::Invalid);
    assert!(big.message.contains("max_payload"), "{big}");
    assert_eq!(call(&node, "hostile", "reply:1024").await.map(|r| r.len()), Ok(1024));
    let huge = call(&node, "hostile", "reply:1048576").await.expect_err("too big");
    assert_eq!(huge.class, FailureClass::Failed);
    assert!(huge.message.contains("max_reply"), "{huge}");
}

#[tokio::test]
async fn bus_calls_per_invocation_are_bounded() {
    let folder = Folder::with(&["echo", "fanout"]);
    folder.sidecar("fanout", "max_calls = 10\n");
    let node = start(&folder).await;
    // `fanout` replies with how many of its calls succeeded.
    assert_eq!(call(&node, "fanout", "50").await.as_deref(), Ok(b"10".as_slice()));
}

#[tokio::test]
async fn nothing_is_granted_by_default() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let node = start(&Folder::with(&["hostile"])).await;
    for probe in ["read:/etc/passwd", "list:/", "env:HOME", "env:PATH", "resolve:localhost"] {
        assert_eq!(class_of(call(&node, "hostile", probe).await), FailureClass::Failed, "{probe}");
    }
    let refused = call(&node, "hostile", &format!("connect:127.0.0.1:{port}")).await.expect_err("no network");
    assert!(refused.message.contains("access-denied"), "{refused}");
}

#[tokio::test]
async fn a_granted_directory_is_reachable_and_nothing_beyond_it() {
    let folder = Folder::with(&["hostile"]);
    folder.write("outside.txt", b"not yours");
    std::fs::create_dir(folder.path().join("data")).expect("mkdir");
    std::fs::create_dir(folder.path().join("scratch")).expect("mkdir");
    folder.write("data/secret.txt", b"granted");
    std::os::unix::fs::symlink("../outside.txt", folder.path().join("data/link")).expect("symlink");
    std::os::unix::fs::symlink("/etc", folder.path().join("data/etc")).expect("symlink");
    folder.sidecar(
        "hostile",
        "[[dirs]]\nhost = \"data\"\nguest = \"/data\"\n\n[[dirs]]\nhost = \"scratch\"\nguest = \"/scratch\"\nmode = \"rw\"\n",
    );
    let node = start(&folder).await;
    assert_eq!(call(&node, "hostile", "read:/data/secret.txt").await.as_deref(), Ok(b"granted".as_slice()));
    for escape in ["read:/data/../outside.txt", "read:/data/link", "read:/data/etc/passwd", "read:/outside.txt"] {
        assert_eq!(class_of(call(&node, "hostile", escape).await), FailureClass::Failed, "{escape} escaped");
    }
    assert_eq!(class_of(call(&node, "hostile", "write:/data/new.txt:x").await), FailureClass::Failed, "ro");
    assert_eq!(call(&node, "hostile", "write:/scratch/new.txt:hi").await.as_deref(), Ok(b"written".as_slice()));
    assert_eq!(std::fs::read(folder.path().join("scratch/new.txt")).expect("written on the host"), b"hi");
    assert_eq!(class_of(call(&node, "hostile", "write:/scratch/../escaped.txt:x").await), FailureClass::Failed);
    assert!(!folder.path().join("escaped.txt").exists());
}

#[tokio::test]
async fn granted_environment_variables_and_only_those_are_visible() {
    let folder = Folder::with(&["hostile"]);
    folder.sidecar("hostile", "env = { GREETING = \"hi\" }\n");
    let node = start(&folder).await;
    assert_eq!(call(&node, "hostile", "env:GREETING").await.as_deref(), Ok(b"hi".as_slice()));
    assert_eq!(class_of(call(&node, "hostile", "env:HOME").await), FailureClass::Failed);
}

#[tokio::test]
async fn the_network_reaches_only_the_listed_addresses() {
    let granted = TcpListener::bind("127.0.0.1:0").expect("listener");
    let other = TcpListener::bind("127.0.0.1:0").expect("listener");
    let (granted, other) = (granted.local_addr().expect("addr"), other.local_addr().expect("addr"));
    let folder = Folder::with(&["hostile"]);
    folder.sidecar("hostile", &format!("net = [\"{granted}\"]\n"));
    let (node, report) = start_on(&Default::default(), &folder, "[grants]\nnet = [\"127.0.0.1:*\"]\n").await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(call(&node, "hostile", &format!("connect:{granted}")).await.as_deref(), Ok(b"connected".as_slice()));
    let refused = call(&node, "hostile", &format!("connect:{other}")).await.expect_err("not granted");
    assert!(refused.message.contains("access-denied"), "{refused}");
    // Only addresses were listed, so there is no name lookup either.
    assert_eq!(class_of(call(&node, "hostile", "resolve:localhost").await), FailureClass::Failed);
}

#[tokio::test]
async fn a_sidecar_cannot_grant_directories_outside_the_handlers_folder() {
    let outside = tempfile::tempdir().expect("tempdir");
    let folder = Folder::with(&["hostile"]);
    std::os::unix::fs::symlink("/etc", folder.path().join("etc-link")).expect("symlink");
    std::os::unix::fs::symlink(outside.path(), folder.path().join("outside-link")).expect("symlink");
    let dotdot = format!("{}/../{}", folder.path().display(), outside.path().file_name().unwrap().to_string_lossy());
    for (host, why) in [
        ("/etc", "outside the handlers folder"),
        ("etc-link", "resolves to `/etc`, outside the handlers folder"),
        ("outside-link", "outside the handlers folder"),
        (dotdot.as_str(), "outside the handlers folder"),
        (".", "is or contains the handlers folder"),
        ("..", "is or contains the handlers folder"),
    ] {
        let reason = refusal(&folder, "hostile", &format!("[[dirs]]\nhost = \"{host}\"\nguest = \"/x\"\n"), "").await;
        assert!(
            reason.contains("hostile.toml") && reason.contains("`dirs`") && reason.contains(why),
            "{host}: {reason}"
        );
    }
}

#[tokio::test]
async fn a_bad_grant_arriving_by_reload_keeps_the_old_version_serving() {
    let folder = Folder::with(&["hostile"]);
    let node = start_watching(&folder).await;
    folder.put("hostile.toml", b"[[dirs]]\nhost = \"/etc\"\nguest = \"/etc\"\n");
    assert!(busbar_tests::support::eventually(TEST_TIMEOUT, async || node.reloads().rejected == 1).await);
    assert_eq!(class_of(call(&node, "hostile", "read:/etc/passwd").await), FailureClass::Failed);
    assert_eq!(class_of(call(&node, "hostile", "nonsense").await), FailureClass::Invalid, "the old version serves");
}

#[tokio::test]
async fn the_operator_can_allow_other_roots_and_addresses() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("shared")).expect("mkdir");
    std::fs::write(root.path().join("shared/file.txt"), b"shared").expect("write");
    let folder = Folder::with(&["hostile"]);
    let sidecar = format!("[[dirs]]\nhost = \"{}/shared\"\nguest = \"/shared\"\n", root.path().display());
    let reason = refusal(&folder, "hostile", &sidecar, "").await;
    assert!(reason.contains("[grants] dirs"), "{reason}");
    let config = format!("[grants]\ndirs = [\"{}\"]\n", root.path().display());
    let (node, report) = start_on(&Default::default(), &folder, &config).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(call(&node, "hostile", "read:/shared/file.txt").await.as_deref(), Ok(b"shared".as_slice()));

    let reason = refusal(&folder, "hostile", "net = [\"127.0.0.1:5432\"]\n", "").await;
    assert!(reason.contains("`net`") && reason.contains("[grants] net"), "{reason}");
    let reason =
        refusal(&folder, "hostile", "net = [\"127.0.0.1:5432\"]\n", "[grants]\nnet = [\"127.0.0.1:80\"]\n").await;
    assert!(reason.contains("127.0.0.1:5432"), "{reason}");
    let reason =
        refusal(&folder, "hostile", "net = [\"169.254.169.254:80\"]\n", "[grants]\nnet = [\"127.0.0.1:*\"]\n").await;
    assert!(reason.contains("not an address the operator allows"), "{reason}");
}

#[tokio::test]
async fn a_bad_grant_names_the_key_and_the_sidecar() {
    let folder = Folder::with(&["echo", "hostile"]);
    folder.sidecar("hostile", "[[dirs]]\nhost = \"missing\"\nguest = \"/data\"\n");
    let (node, report) = busbar_tests::support::start_on(&Default::default(), &folder, "").await;
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    let reason = &report.skipped[0].reason;
    assert!(reason.contains("hostile.toml") && reason.contains("dirs") && reason.contains("missing"), "{reason}");
    assert!(node.call("echo", vec![], TEST_TIMEOUT).await.is_ok());
}

#[tokio::test]
async fn hostile_requests_are_contained_with_a_clear_error() {
    let logs = capture_logs();
    let folder = Folder::with(&["echo", "hostile"]);
    folder.sidecar("hostile", "timeout = \"1s\"\n");
    let node = start(&folder).await;
    let overflow = call(&node, "hostile", "recurse").await.expect_err("overflows");
    assert_eq!(overflow.class, FailureClass::Trapped);
    // Rust keeps its frames on a stack in linear memory: running off it is
    // an out-of-bounds access rather than wasmtime's stack-overflow trap.
    assert!(overflow.message.contains("stack overflow"), "{overflow}");

    let started = Instant::now();
    let slept = call(&node, "hostile", "sleep:60000").await.expect_err("interrupted in its host-call wait");
    assert_eq!(slept.class, FailureClass::Timeout, "{slept}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    let random = call(&node, "hostile", "random:4294967296").await.expect_err("too much randomness");
    assert_eq!(random.class, FailureClass::Trapped, "{random}");
    assert_eq!(call(&node, "hostile", "random:1000").await.as_deref(), Ok(b"1000".as_slice()));

    assert_eq!(call(&node, "hostile", "flood:5000").await.as_deref(), Ok(b"flooded".as_slice()));
    let text = logs.contents();
    let hostile = |l: &&str| l.contains("handler=\"hostile\"");
    let flood_lines = text.lines().filter(hostile).filter(|l| l.contains("flood line")).count();
    assert!((1..2000).contains(&flood_lines), "{flood_lines} lines of flood reached the log");
    let noted = text.lines().filter(hostile).any(|l| l.contains("guest output past 65536 bytes dropped"));
    assert!(noted, "no truncation note");

    // The node is healthy.
    assert_eq!(call(&node, "echo", "still here").await.as_deref(), Ok(b"still here".as_slice()));
}

/// A service component that grows its function table until the host says
/// no, then traps. No guest language here emits `table.grow`, so it is
/// written by hand.
fn table_bomb() -> Vec<u8> {
    let grow = "(loop $grow
        (br_if $grow (i32.ne (table.grow $t (ref.null func) (i32.const 10000)) (i32.const -1))))
      unreachable";
    let core = format!("(table $t 1 funcref) {}", core_handle(grow));
    service_component("", &core, "", SERVICE_LIFT)
}

#[tokio::test]
async fn a_table_growth_bomb_is_contained() {
    let folder = Folder::with(&["echo"]);
    folder.write("tables.wasm", &table_bomb());
    let (node, report) = busbar_tests::support::start_on(&Default::default(), &folder, "").await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let started = Instant::now();
    let bomb = node.call("tables", vec![], TEST_TIMEOUT).await.expect_err("refused growth ends in a trap");
    assert_eq!(bomb.class, FailureClass::Trapped, "{bomb}");
    assert!(bomb.message.contains("table limit"), "{bomb}");
    assert!(started.elapsed() < TEST_TIMEOUT, "the bomb ran {:?}", started.elapsed());
    assert_eq!(call(&node, "echo", "fine").await.as_deref(), Ok(b"fine".as_slice()));
}

/// A service component of four core instances (the most the instance pool
/// allows), three of them with a linear memory of `pages` 64 KiB pages
/// each, whose `handle` runs `body`.
fn many_memories(pages: u32, body: &str) -> Vec<u8> {
    let memories = format!(
        "(core module $big (memory (export \"m\") {pages}))
  (core instance $b1 (instantiate $big))
  (core instance $b2 (instantiate $big))
  (core instance $b3 (instantiate $big))"
    );
    service_component(&memories, &core_handle(body), "", SERVICE_LIFT)
}

#[tokio::test]
async fn the_memory_limit_counts_every_linear_memory_of_an_instance() {
    let folder = Folder::with(&["echo"]);
    // 3 × 15 MiB in one instance.
    folder.write("memories.wasm", &many_memories(240, "unreachable"));
    folder.sidecar("memories", "memory = \"16MiB\"\n");
    let (node, report) = busbar_tests::support::start_on(&Default::default(), &folder, "").await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let refused =
        node.call("memories", vec![], TEST_TIMEOUT).await.expect_err("45 MiB in three memories is over 16 MiB");
    assert_eq!(refused.class, FailureClass::Trapped, "{refused}");
    assert!(refused.message.contains("memory limit of 16 MiB exceeded"), "{refused}");
    assert_eq!(call(&node, "echo", "fine").await.as_deref(), Ok(b"fine".as_slice()));
}

#[tokio::test]
async fn a_dispatch_larger_than_its_targets_max_payload_is_refused_when_sent_not_kept() {
    let folder = Folder::with(&["fail"]);
    folder.sidecar("fail", "max_payload = \"1KiB\"\n");
    let node = start(&folder).await;
    let refused = node.dispatch("fail", vec![b'x'; 4 << 20]).await.expect_err("the target refuses 4 MiB anyway");
    assert_eq!(refused.class, FailureClass::Invalid, "{refused}");
    assert!(refused.message.contains("its `max_payload`); the dispatch was not queued"), "{refused}");
    assert!(node.dead_letters().await.expect("listed").is_empty(), "nothing was kept");
}

#[tokio::test]
async fn in_memory_dead_letters_are_bounded_in_bytes_oldest_first_and_counted() {
    let folder = Folder::with(&["fail"]);
    // A hub keeping 1 MiB of dead letters; each letter holds 64 KiB.
    let hub = busbar::driver::default::DefaultDriver::with_dead_letter_limits(10_000, 1 << 20);
    let (node, _) = start_on(&hub, &folder, "").await;
    let letters = 20;
    for i in 0..letters {
        let mut payload = format!("invalid:{i:03}:").into_bytes();
        payload.resize(64 << 10, b'x');
        let receipt = node.dispatch("fail", payload).await.expect("accepted");
        receipt.outcome.expect("outcome").await.expect("finished");
    }
    let kept = node.dead_letters().await.expect("listed");
    let held: usize = kept.iter().map(|l| l.payload.len()).sum();
    assert!(held <= 1 << 20, "{held} bytes kept");
    let dropped = letters - kept.len();
    assert!(dropped >= 4, "{dropped} dropped");
    let first = String::from_utf8_lossy(&kept[0].payload[..12]).to_string();
    assert_eq!(first, format!("invalid:{dropped:03}:"), "the oldest went first");
    let counted = format!("busbar_dead_letters_dropped_total{{name=\"fail\"}} {dropped}");
    assert!(node.metrics_text().contains(&counted), "{}", node.metrics_text());
}

/// Instances running now on `node`, from its metrics.
fn running(node: &Node) -> f64 {
    metric(&node.metrics_text(), "busbar_pool_instances_running").unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handler_cannot_drain_the_instance_pool() {
    let folder = Folder::with(&["slow", "echo"]);
    folder.sidecar("slow", "timeout = \"10s\"\n");
    // A pool of 8: 6 instances may run (a quarter is kept for warm ones),
    // one handler at most 3 of them whatever its `concurrency` (64).
    let (node, _) = start_own_runtime(&folder, "[node]\ninstances = 8\n").await;
    let node = Arc::new(node);
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { node.call("slow", b"300".to_vec(), Duration::from_secs(30)).await })
        })
        .collect();
    assert!(eventually(TEST_TIMEOUT, async || running(&node) == 3.0).await, "slow runs its share");
    // While `slow` holds all it may, another handler still gets an instance.
    assert_eq!(call(&node, "echo", "beside").await.as_deref(), Ok(b"beside".as_slice()));
    for s in slow {
        let outcome = s.await.expect("caller");
        assert_eq!(outcome, Ok(b"worked 300 ms".to_vec()), "a call past the handler's share waits its turn");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_fails_a_call_as_overloaded_not_as_a_trap() {
    let folder = Folder::with(&["slow", "echo"]);
    folder.add("slow", "slow2").add("slow", "slow3");
    for name in ["slow", "slow2", "slow3"] {
        folder.sidecar(name, "timeout = \"10s\"\n");
    }
    folder.sidecar("echo", "timeout = \"300ms\"\n");
    // A pool of 4: 3 instances may run, one handler at most 1.
    let (node, _) = start_own_runtime(&folder, "[node]\ninstances = 4\n").await;
    let node = Arc::new(node);
    let slow: Vec<_> = ["slow", "slow2", "slow3"]
        .into_iter()
        .map(|name| {
            let node = node.clone();
            tokio::spawn(async move { node.call(name, b"2000".to_vec(), Duration::from_secs(30)).await })
        })
        .collect();
    assert!(eventually(TEST_TIMEOUT, async || running(&node) == 3.0).await, "the pool fills");
    let refused = call(&node, "echo", "no room").await.expect_err("no instance within echo's timeout");
    assert_eq!(refused.class, FailureClass::Overloaded, "{refused}");
    assert!(refused.message.contains("instance pool is full"), "{refused}");
    for s in slow {
        assert_eq!(s.await.expect("caller"), Ok(b"worked 2000 ms".to_vec()));
    }
    assert_eq!(call(&node, "echo", "room again").await.as_deref(), Ok(b"room again".as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_out_of_memories_fails_an_instantiation_as_overloaded_not_as_a_trap() {
    let folder = Folder::with(&[]);
    // A pool of 4 holds 8 linear memories: two of these instances at once.
    for name in ["m1", "m2", "m3"] {
        folder.write(&format!("{name}.wasm"), &many_memories(1, "(loop $spin (br $spin)) unreachable"));
        folder.sidecar(name, "timeout = \"2s\"\n");
    }
    let (node, report) = start_own_runtime(&folder, "[node]\ninstances = 4\n").await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let node = Arc::new(node);
    let calls: Vec<_> = ["m1", "m2", "m3"]
        .into_iter()
        .map(|name| {
            let node = node.clone();
            tokio::spawn(async move { node.call(name, vec![], TEST_TIMEOUT).await })
        })
        .collect();
    let mut classes = Vec::new();
    for c in calls {
        let failure = c.await.expect("caller").expect_err("they loop");
        if failure.class == FailureClass::Overloaded {
            assert!(
                failure.message.contains("instance pool is full") && failure.message.contains("memory"),
                "{failure}"
            );
        }
        classes.push(failure.class);
    }
    classes.sort_by_key(|c| c.to_string());
    assert_eq!(classes, [FailureClass::Overloaded, FailureClass::Timeout, FailureClass::Timeout]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_past_a_handlers_or_the_nodes_max_pending_are_refused_when_sent() {
    let folder = Folder::with(&["slow"]);
    folder.add("slow", "slow2");
    folder.sidecar("slow", "max_pending = 3\nconcurrency = 1\n");
    // This node may have 5 dispatches pending in all.
    let (node, _) = start_on(&Default::default(), &folder, "[bus]\nsetting = { max_pending = 5 }\n").await;
    let mut receipts = Vec::new();
    for _ in 0..3 {
        receipts.push(node.dispatch("slow", b"300".to_vec()).await.expect("within slow's max_pending"));
    }
    let refused = node.dispatch("slow", b"300".to_vec()).await.expect_err("slow has 3 pending");
    assert_eq!(refused.class, FailureClass::Overloaded, "{refused}");
    assert!(refused.message.contains("`slow` already has 3 dispatches pending, its `max_pending`"), "{refused}");
    for _ in 0..2 {
        receipts.push(node.dispatch("slow2", b"300".to_vec()).await.expect("within the node's max_pending"));
    }
    let refused = node.dispatch("slow2", b"300".to_vec()).await.expect_err("the node has 5 pending");
    assert_eq!(refused.class, FailureClass::Overloaded, "{refused}");
    assert!(refused.message.contains("this node already has 5 dispatches pending"), "{refused}");
    for receipt in receipts {
        let outcome = receipt.outcome.expect("outcome").await.expect("finished");
        assert_eq!(outcome.result, Ok(b"worked 300 ms".to_vec()), "every accepted dispatch ran");
    }
    assert!(node.dispatch("slow", b"1".to_vec()).await.is_ok(), "room again once they ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_storm_ends_at_the_depth_limit_with_its_pending_dispatches_bounded() {
    // `storm:20` dispatches itself 20 times and fails: unbounded, 20 to the
    // power of `max_depth` (8) invocations and as many dead letters.
    let logs = capture_logs();
    let started = Instant::now();
    let folder = Folder::with(&[]);
    folder.add("hostile", "storm");
    folder.sidecar("storm", "max_pending = 50\n");
    let node = start(&folder).await;
    node.dispatch("storm", b"storm:20".to_vec()).await.expect("accepted");
    let pending = || named_metric(&node, "busbar_queue_pending", "storm");
    let seen_max = std::sync::atomic::AtomicU64::new(0);
    let over = eventually(Duration::from_secs(60), async || {
        let now = pending().unwrap_or(1.0);
        seen_max.fetch_max(now as u64, std::sync::atomic::Ordering::Relaxed);
        now == 0.0
    })
    .await;
    let ran = busbar_tests::support::served(&node, "storm");
    assert!(over, "the storm has not ended: {ran} invocations so far");
    assert!(seen_max.into_inner() <= 50, "more than max_pending were pending");
    let letters = node.dead_letters().await.expect("listed");
    let said = |what: &str| {
        letters.iter().any(|l| l.failure.message.contains(what) && !l.failure.message.contains(&format!(" 0 {what}")))
    };
    assert!(said("overloaded"), "no dispatch was refused past max_pending");
    assert!(said("denied"), "no chain reached the depth limit");
    assert!(ran < 20_000, "{ran} invocations");
    // Every dead letter is counted, but past 100 a handler's dead-letter
    // lines are left out of the log (with a count), for each 10 s window.
    let text = logs.contents();
    let logged = text.lines().filter(|l| l.contains("dispatch dead-lettered") && l.contains("name=storm")).count();
    let windows = started.elapsed().as_secs() / busbar::ops::lograte::WINDOW.as_secs() + 1;
    let budget = busbar::ops::lograte::LINES * windows;
    eprintln!("storm: {ran} invocations, {} dead letters kept, {logged} logged", letters.len());
    assert!(letters.len() as u64 > budget, "the storm was too small to test the log's budget");
    assert!(logged as u64 <= budget, "{logged} dead-letter lines logged");
    let said = "more `dead-lettered` lines of handler `storm` than its budget: they are left out of the log";
    assert!(text.contains(said), "no note that lines were left out");
}
