//! The NATS driver against a real `nats-server` (one per test): plain-NATS
//! calls with typed error replies, events to every node or one per group,
//! durable dispatch with retries and dead letters, and discovery over the
//! NATS micro protocol. `./dev test` runs these against two server versions.

use busbar::FailureClass;
use busbar_tests::nats::NatsServer;
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, eventually, nats_client, served, start_nats};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_nats_client_calls_the_wasm_echo() {
    let server = NatsServer::start();
    let (_node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "a", "", "").await;
    let client = server.client().await;
    let reply = client.request("call.shop.echo", "over the wire".into()).await.expect("echo answers");
    assert_eq!(reply.payload.as_ref(), b"over the wire");
    assert!(reply.headers.is_none_or(|h| h.get("Nats-Service-Error").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failure_is_an_immediate_typed_error_reply() {
    let server = NatsServer::start();
    let (_node, _) = start_nats(&server.url(), &Folder::with(&["fail"]), "a", "", "").await;
    let client = server.client().await;
    let started = Instant::now();
    let reply = client.request("call.shop.fail", "unauthorized:who are you".into()).await.expect("a reply");
    assert!(started.elapsed() < TEST_TIMEOUT, "the caller waited out a timeout");
    let headers = reply.headers.expect("error headers");
    assert_eq!(headers.get("Nats-Service-Error").map(|v| v.as_str()), Some("who are you"));
    assert_eq!(headers.get("Nats-Service-Error-Code").map(|v| v.as_str()), Some("401"));

    let busbar = nats_client(&server.url()).await;
    for (payload, class) in
        [("invalid:x", FailureClass::Invalid), ("denied:x", FailureClass::Denied), ("failed:x", FailureClass::Failed)]
    {
        let failure = busbar.call("fail", payload.into(), TEST_TIMEOUT).await.unwrap_err();
        assert_eq!((failure.class, failure.message.as_str()), (class, "x"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_timeout_header_gets_an_invalid_reply_not_a_panic() {
    let server = NatsServer::start();
    let (_node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "a", "", "").await;
    let client = server.client().await;
    for value in ["10000000000000000000", "3600001", "soon"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Busbar-Timeout-Ms", value);
        let reply = client
            .request_with_headers("call.shop.echo", headers, "x".into())
            .await
            .unwrap_or_else(|e| panic!("{value}: no reply ({e})"));
        let headers = reply.headers.expect("error headers");
        let message = headers.get("Nats-Service-Error").map(|v| v.as_str().to_string()).unwrap_or_default();
        assert_eq!(headers.get("Nats-Service-Error-Code").map(|v| v.as_str()), Some("400"), "{value}: {message}");
        assert!(message.contains("Busbar-Timeout-Ms"), "{value}: {message}");
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Busbar-Timeout-Ms", "3600000");
    let reply = client.request_with_headers("call.shop.echo", headers, "fine".into()).await.expect("a reply");
    assert_eq!(reply.payload.as_ref(), b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_serving_is_not_found_at_once_and_timeouts_are_typed() {
    let server = NatsServer::start();
    let folder = Folder::with(&["spin"]);
    folder.sidecar("spin", "timeout = \"3s\"\n");
    let (_node, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    let busbar = nats_client(&server.url()).await;
    let started = Instant::now();
    assert_eq!(busbar.call("nobody.home", vec![], TEST_TIMEOUT).await.unwrap_err().class, FailureClass::NotFound);
    assert!(started.elapsed() < Duration::from_secs(1), "no responders took {:?}", started.elapsed());
    // The caller's 300 ms travel with the call: the handler is interrupted then, not at its own 3 s.
    let failure = busbar.call("spin", vec![], Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Timeout, "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_every_node_serving_the_name() {
    let server = NatsServer::start();
    let folder = Folder::with(&["echo"]);
    let (a, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    let (b, _) = start_nats(&server.url(), &folder, "b", "", "").await;
    let client = nats_client(&server.url()).await;
    for i in 0..60u8 {
        assert_eq!(client.call("echo", vec![i], TEST_TIMEOUT).await, Ok(vec![i]));
    }
    assert_eq!(served(&a, "echo") + served(&b, "echo"), 60);
    assert!(served(&a, "echo") > 0 && served(&b, "echo") > 0, "one node answered everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_node_and_rolecast_one_per_group() {
    let server = NatsServer::start();
    let folder = Folder::with(&["audit"]);
    let mut nodes = Vec::new();
    for (id, group) in [("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")] {
        nodes.push((group, start_nats(&server.url(), &folder, id, group, "").await.0));
    }
    let client = nats_client(&server.url()).await;
    client.broadcast("audit", b"all".to_vec()).await.expect("sent");
    assert!(
        eventually(WAIT, async || nodes.iter().all(|(_, n)| served(n, "audit") == 1)).await,
        "a node missed the broadcast"
    );

    for _ in 0..10 {
        client.rolecast("audit", b"one".to_vec()).await.expect("sent");
    }
    let per_group =
        |group: &str| nodes.iter().filter(|(g, _)| *g == group).map(|(_, n)| served(n, "audit")).sum::<u64>();
    // Each group had 1 per node from the broadcast; each rolecast adds exactly 1 per group.
    assert!(eventually(WAIT, async || per_group("alpha") == 2 + 10 && per_group("beta") == 1 + 10).await);
    assert_eq!((per_group("alpha"), per_group("beta")), (12, 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dispatch_runs_once_across_the_nodes() {
    let server = NatsServer::start();
    let folder = Folder::with(&["echo"]);
    let (a, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    let (b, _) = start_nats(&server.url(), &folder, "b", "", "").await;
    let client = nats_client(&server.url()).await;
    for i in 0..30u8 {
        let receipt = client.dispatch("echo", vec![i]).await.expect("accepted by JetStream");
        assert!(receipt.outcome.is_none(), "a durable dispatch returns once stored");
    }
    assert!(eventually(WAIT, async || served(&a, "echo") + served(&b, "echo") == 30).await);
    let js = async_nats::jetstream::new(server.client().await);
    let mut stream = js.get_stream("SHOP_QUEUE").await.expect("the work queue exists");
    assert_eq!(stream.info().await.expect("info").state.messages, 0, "acked work leaves the queue");
    assert_eq!(served(&a, "echo") + served(&b, "echo"), 30, "no dispatch ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_follows_the_retry_schedule_then_is_dead_lettered_and_replayed() {
    let server = NatsServer::start();
    let folder = Folder::with(&["flaky", "fail"]);
    folder.sidecar("flaky", "retry = [\"50ms\", \"100ms\"]\n");
    folder.sidecar("fail", "retry = [\"50ms\", \"50ms\"]\n");
    let (node, _) = start_nats(&server.url(), &folder, "a", "", "").await;
    let client = nats_client(&server.url()).await;

    // Fails once, succeeds on attempt 2: no dead letter.
    client.dispatch("flaky", b"1".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || served(&node, "flaky") == 2).await);

    // Fails on all three attempts: the third is final, then it is dead-lettered.
    let started = Instant::now();
    client.dispatch("flaky", b"9".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || client.dead_letters().await.is_ok_and(|d| d.len() == 1)).await);
    assert!(started.elapsed() >= Duration::from_millis(150), "retried before its delays");
    let dead = client.dead_letters().await.expect("listed");
    assert_eq!((dead[0].name.as_str(), dead[0].attempts, dead[0].payload.as_slice()), ("flaky", 3, b"9".as_slice()));
    assert_eq!(dead[0].failure.class, FailureClass::Retry);
    assert_eq!(dead[0].failure.message, "flaky attempt 3 final=true");
    assert_eq!(served(&node, "flaky"), 2 + 3);

    // A caller fault is never retried.
    client.dispatch("fail", b"invalid:bad order".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || client.dead_letters().await.is_ok_and(|d| d.len() == 2)).await);
    assert_eq!(served(&node, "fail"), 1);

    // Replay runs the flaky job again from attempt 1; dropping removes the other.
    assert_eq!(client.replay_dead_letters("flaky").await.expect("replayed"), 1);
    assert!(eventually(WAIT, async || served(&node, "flaky") == 2 + 3 + 3).await);
    assert!(
        eventually(WAIT, async || client.dead_letters().await.is_ok_and(|d| d
            .iter()
            .filter(|l| l.name == "flaky")
            .count()
            == 1))
        .await
    );
    assert_eq!(client.drop_dead_letters("fail").await.expect("dropped"), 1);
    assert!(client.dead_letters().await.expect("listed").iter().all(|l| l.name != "fail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_waits_in_jetstream_until_a_node_serves_it() {
    let server = NatsServer::start();
    let client = nats_client(&server.url()).await;
    client.dispatch("echo", b"early".to_vec()).await.expect("JetStream accepts work for a name nobody serves yet");
    let (node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "late", "", "").await;
    assert!(eventually(WAIT, async || served(&node, "echo") == 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_live_nodes_and_forgets_stopped_ones() {
    let server = NatsServer::start();
    let (a, _) = start_nats(&server.url(), &Folder::with(&["echo", "audit"]), "a", "alpha", "").await;
    let (b, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "b", "beta", "").await;
    let client = nats_client(&server.url()).await;
    client.call("echo", b"x".to_vec(), TEST_TIMEOUT).await.expect("echo answers");

    let nodes = client.nodes().await.expect("nodes");
    let ids: Vec<_> = nodes.iter().map(|n| (n.node.as_str(), n.group.as_str())).collect();
    assert_eq!(ids, [("a", "alpha"), ("b", "beta")], "the client itself is not a node");
    assert_eq!(nodes[0].services, ["echo"]);
    assert_eq!(nodes[0].messages, ["audit"]);

    let services = client.services().await.expect("services");
    let echo = services.iter().find(|s| s.name == "echo").expect("echo listed");
    assert_eq!(echo.nodes, ["a", "b"]);

    let stats = client.stats().await.expect("stats");
    let calls: u64 = stats.iter().filter(|s| s.name == "echo").map(|s| s.requests).sum();
    assert_eq!(calls, 1);

    b.stop().await;
    let left: Vec<_> = client.nodes().await.expect("nodes").into_iter().map(|n| n.node).collect();
    assert_eq!(left, ["a"], "a stopped node leaves discovery at once");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_replies_have_the_nats_micro_shape() {
    let server = NatsServer::start();
    let (_node, _) = start_nats(&server.url(), &Folder::with(&["echo", "audit"]), "node-1", "", "").await;
    let client = server.client().await;
    let info = client.request("$SRV.INFO.shop.node-1", "".into()).await.expect("INFO answered");
    let info: serde_json::Value = serde_json::from_slice(&info.payload).expect("JSON");
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    assert_eq!((info["name"].as_str(), info["id"].as_str()), (Some("shop"), Some("node-1")));
    let endpoints = info["endpoints"].as_array().expect("endpoints");
    let subjects: Vec<_> = endpoints.iter().map(|e| e["subject"].as_str().unwrap_or_default()).collect();
    assert!(subjects.contains(&"call.shop.echo") && subjects.contains(&"event.shop.audit"), "{subjects:?}");
    for e in endpoints {
        let name = e["name"].as_str().unwrap_or_default();
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{name}");
    }
    let stats = client.request("$SRV.STATS.shop", "".into()).await.expect("STATS answered");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).expect("JSON");
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    assert!(stats["started"].as_str().is_some_and(|s| s.ends_with('Z')));
    let ping = client.request("$SRV.PING", "".into()).await.expect("PING answered");
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).expect("JSON");
    assert_eq!(ping["metadata"]["project"], "shop");
}

/// Runs `busbar run` as its own process, serving `folder` on `server` as node `id`.
fn spawn_node(server: &NatsServer, folder: &Folder, id: &str) -> std::process::Child {
    let config = folder.path().join(format!("{id}.toml"));
    std::fs::write(&config, busbar_tests::support::nats_config(&server.url(), id, "", "")).expect("write config");
    std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args([
            "--config",
            config.to_str().expect("utf-8"),
            "--handlers",
            folder.path().to_str().expect("utf-8"),
            "run",
        ])
        .env("XDG_CACHE_HOME", std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-cli-cache"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("busbar runs")
}

/// The work-queue consumer of `name` has a delivery in flight (delivered, not acked).
async fn in_flight(server: &NatsServer, name: &str) -> u64 {
    let js = async_nats::jetstream::new(server.client().await);
    let Ok(stream) = js.get_stream("SHOP_QUEUE").await else { return 0 };
    let Ok(mut consumer) =
        stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&format!("busbar_{name}")).await
    else {
        return 0;
    };
    consumer.info().await.map_or(0, |i| i.num_ack_pending as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_dispatch_loses_nothing() {
    let server = NatsServer::start();
    let folder = Folder::with(&["slow"]);
    folder.sidecar("slow", "timeout = \"2s\"\n");
    let mut doomed = spawn_node(&server, &folder, "doomed");
    let client = nats_client(&server.url()).await;
    assert!(
        eventually(WAIT, async || client.nodes().await.is_ok_and(|n| n.len() == 1)).await,
        "the node never came up"
    );

    client.dispatch("slow", b"1500".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || in_flight(&server, "slow").await == 1).await, "the node never took the job");
    doomed.kill().expect("kill -9 the node mid-handler");
    doomed.wait().expect("reaped");
    assert!(client.nodes().await.expect("nodes").is_empty(), "a crashed node is gone from discovery");

    // Another node picks the job up once the dead node's ack wait (timeout + 5 s) runs out.
    let (survivor, _) = start_nats(&server.url(), &folder, "survivor", "", "").await;
    assert!(eventually(Duration::from_secs(30), async || served(&survivor, "slow") == 1).await, "the job was lost");
    let stats = survivor.local_stats();
    assert_eq!(stats.iter().find(|s| s.name == "slow").map(|s| s.errors), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_under_load_loses_no_accepted_dispatch() {
    let mut server = NatsServer::start();
    let (node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "a", "", "").await;
    let client = nats_client(&server.url()).await;
    let mut accepted = 0u64;
    for i in 0..200u32 {
        if i == 100 {
            server.kill9();
            server.restart();
        }
        if client.dispatch("echo", i.to_string().into_bytes()).await.is_ok() {
            accepted += 1;
        }
    }
    assert!(accepted >= 100, "only {accepted} dispatches accepted");
    // Every accepted dispatch runs (a publish that timed out may still have
    // been stored and run too, so at least, not exactly).
    assert!(
        eventually(Duration::from_secs(60), async || served(&node, "echo") >= accepted).await,
        "accepted {accepted}, ran {}",
        served(&node, "echo")
    );
    assert_eq!(client.call("echo", b"after".to_vec(), TEST_TIMEOUT).await, Ok(b"after".to_vec()), "calls work again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_leaves_discovery() {
    let server = NatsServer::start();
    let folder = Folder::with(&["slow"]);
    let mut node = spawn_node(&server, &folder, "leaving");
    let client = nats_client(&server.url()).await;
    assert!(
        eventually(WAIT, async || client.nodes().await.is_ok_and(|n| n.len() == 1)).await,
        "the node never came up"
    );

    client.dispatch("slow", b"1000".to_vec()).await.expect("accepted");
    assert!(eventually(WAIT, async || in_flight(&server, "slow").await == 1).await, "the node never took the job");
    let pid = node.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let exit = tokio::task::spawn_blocking(move || node.wait()).await.expect("joined").expect("reaped");
    assert_eq!(exit.code(), Some(0), "a clean stop");

    // The job in flight was finished and acknowledged, not left to be redelivered.
    let js = async_nats::jetstream::new(server.client().await);
    let mut queue = js.get_stream("SHOP_QUEUE").await.expect("the work queue");
    assert_eq!(queue.info().await.expect("info").state.messages, 0, "the in-flight job was abandoned");
    assert_eq!(in_flight(&server, "slow").await, 0);
    assert!(client.nodes().await.expect("nodes").is_empty(), "the stopped node still answers discovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_payload_is_refused_as_invalid_not_a_hang() {
    let server = NatsServer::start();
    let (_node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "a", "", "").await;
    let client = nats_client(&server.url()).await;
    let huge = vec![7u8; 2 << 20]; // the server's max_payload is 1 MiB
    let started = Instant::now();
    assert_eq!(client.call("echo", huge.clone(), TEST_TIMEOUT).await.unwrap_err().class, FailureClass::Invalid);
    let refused = client.dispatch("echo", huge).await.unwrap_err();
    assert_eq!(refused.class, FailureClass::Invalid, "{refused}");
    assert!(started.elapsed() < TEST_TIMEOUT, "refused only after {:?}", started.elapsed());
    assert_eq!(
        client.call("echo", b"small".to_vec(), TEST_TIMEOUT).await,
        Ok(b"small".to_vec()),
        "the connection survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_context_travels_in_nats_headers_to_the_handler_and_on() {
    use crate::trace_context::{CALLER, greet_calling_whoami, seen_span};
    let server = NatsServer::start();
    let (_node, _) = start_nats(&server.url(), &greet_calling_whoami(), "a", "", "").await;
    let busbar = nats_client(&server.url()).await;
    let headers = vec![("traceparent".to_string(), CALLER.to_string())];
    let reply = busbar.call_with("greet", b"x".to_vec(), headers, TEST_TIMEOUT).await.expect("greet answers");
    // greet's call to `echo` went out over NATS too (the node sends through its connection).
    let seen = seen_span(reply.strip_prefix(b"hello, ").expect("greet's reply"));
    let caller = busbar::ops::trace::SpanContext::parse(CALLER).unwrap();
    assert_eq!(seen.trace_id, caller.trace_id);
    assert_ne!(seen.span_id, caller.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_nats_connection() {
    use busbar::ops::http::Ops;
    use busbar::ops::metrics::Metrics;
    let mut server = NatsServer::start();
    let (node, _) = start_nats(&server.url(), &Folder::with(&["echo"]), "a", "", "").await;
    let ops = Ops::new(std::sync::Arc::new(Metrics::new(1)));
    ops.attach(node.clone());
    assert_eq!(ops.readiness(), Ok(()));
    server.kill9();
    let down = eventually(WAIT, async || ops.readiness() == Err("a bus connection is down")).await;
    assert!(down, "readiness still says {:?} with the server gone", ops.readiness());
    server.restart();
    assert!(eventually(WAIT, async || ops.readiness().is_ok()).await, "not ready again: {:?}", ops.readiness());
    assert_eq!(node.call("echo", b"back".to_vec(), TEST_TIMEOUT).await, Ok(b"back".to_vec()));
}
