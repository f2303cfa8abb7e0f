//! The four deliveries reach the right handlers: call answers from one node,
//! dispatch runs later, broadcast reaches every listener, rolecast one per group.

use busbar::driver::default::DefaultDriver;
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, start, start_on};

#[tokio::test]
async fn call_returns_the_echo_payload_unchanged() {
    let node = start(&Folder::with(&["echo"])).await;
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(node.call("echo", payload.clone(), TEST_TIMEOUT).await, Ok(payload));
    assert_eq!(node.call("echo", vec![], TEST_TIMEOUT).await, Ok(vec![]));
}

#[tokio::test]
async fn a_handler_calls_another_through_the_bus_import() {
    let node = start(&Folder::with(&["echo", "greet"])).await;
    assert_eq!(node.call("greet", b"world".to_vec(), TEST_TIMEOUT).await, Ok(b"hello, world".to_vec()));
}

#[tokio::test]
async fn the_context_tells_the_handler_how_it_was_invoked() {
    let folder = Folder::with(&["whoami"]);
    folder.sidecar("whoami", "names = [\"who.am\", \"who.else\"]\ntimeout = \"3s\"\n");
    let node = start(&folder).await;
    let headers = vec![("x-trace".to_string(), "abc".to_string())];
    let reply = node.call_with("who.else", vec![], headers, TEST_TIMEOUT).await.expect("whoami answers");
    let ctx: serde_json::Value = serde_json::from_slice(&reply).expect("whoami replies JSON");
    assert_eq!(ctx["name"], "who.else");
    assert_eq!(ctx["delivery"], "call");
    assert_eq!(ctx["attempt"], 1);
    assert_eq!(ctx["final"], true);
    let left = ctx["time_left_ms"].as_u64().expect("a number");
    assert!(left > 0 && left <= 3000, "time left {left}ms must be within the 3s handler timeout");
    // The caller's headers (no trace context was sent, so none is added).
    assert_eq!(ctx["headers"], serde_json::json!([["x-trace", "abc"]]));
}

#[tokio::test]
async fn calls_spread_over_the_nodes_serving_a_name() {
    let hub = DefaultDriver::new();
    let folder = Folder::with(&["echo"]);
    let (a, _) = start_on(&hub, &folder, "[node]\nid = \"a\"\n").await;
    let (b, _) = start_on(&hub, &folder, "[node]\nid = \"b\"\n").await;
    for _ in 0..20 {
        a.call("echo", b"x".to_vec(), TEST_TIMEOUT).await.expect("echo answers");
    }
    let served = |n: &busbar::Node| n.local_stats().iter().find(|s| s.name == "echo").map_or(0, |s| s.requests);
    assert_eq!(served(&a) + served(&b), 20);
    assert!(served(&a) > 0 && served(&b) > 0, "both nodes answer: a={} b={}", served(&a), served(&b));
}

#[tokio::test]
async fn dispatch_runs_the_service_in_the_background() {
    let node = start(&Folder::with(&["echo"])).await;
    let receipt = node.dispatch("echo", b"later".to_vec()).await.expect("accepted");
    let outcome = receipt.outcome.expect("the default driver reports outcomes").await.expect("finished");
    assert_eq!((outcome.attempts, outcome.result), (1, Ok(b"later".to_vec())));
}

#[tokio::test]
async fn broadcast_reaches_every_listening_node() {
    let hub = DefaultDriver::new();
    let folder = Folder::with(&["audit"]);
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(start_on(&hub, &folder, &format!("[node]\nid = \"{id}\"\n")).await.0);
    }
    let sender = start_on(&hub, &Folder::with(&[]), "[node]\nid = \"sender\"\n").await.0;
    sender.broadcast("audit", b"event".to_vec()).await.expect("accepted");
    sender.stop().await; // drains the deliveries it sent
    for node in &nodes {
        let stats = node.local_stats();
        let audit = stats.iter().find(|s| s.name == "audit").expect("audit counted");
        assert_eq!((audit.requests, audit.errors), (1, 0), "node {}", node.info().node);
    }
}

#[tokio::test]
async fn rolecast_reaches_exactly_one_node_per_group() {
    let hub = DefaultDriver::new();
    let folder = Folder::with(&["audit"]);
    let mut nodes = Vec::new();
    for (id, group) in [("a1", "alpha"), ("a2", "alpha"), ("b1", "beta"), ("b2", "beta"), ("c1", "gamma")] {
        let config = format!("[node]\nid = \"{id}\"\n[bus]\ngroup = \"{group}\"\n");
        nodes.push((group, start_on(&hub, &folder, &config).await.0));
    }
    let sender = start_on(&hub, &Folder::with(&[]), "[node]\nid = \"sender\"\n").await.0;
    for _ in 0..10 {
        sender.rolecast("audit", b"job".to_vec()).await.expect("accepted");
    }
    sender.stop().await;
    for group in ["alpha", "beta", "gamma"] {
        let received: u64 = nodes
            .iter()
            .filter(|(g, _)| *g == group)
            .flat_map(|(_, n)| n.local_stats())
            .filter(|s| s.name == "audit")
            .map(|s| s.requests)
            .sum();
        assert_eq!(received, 10, "group {group} receives each rolecast once");
    }
}

#[tokio::test]
async fn nodes_services_and_stats_list_the_bus() {
    let hub = DefaultDriver::new();
    let (a, _) = start_on(&hub, &Folder::with(&["echo", "audit"]), "[node]\nid = \"a\"\nproject = \"shop\"\n").await;
    let (b, _) = start_on(&hub, &Folder::with(&["echo"]), "[node]\nid = \"b\"\nproject = \"shop\"\n").await;
    let mut ids: Vec<_> = a.nodes().await.expect("nodes").into_iter().map(|n| (n.node, n.project)).collect();
    ids.sort();
    assert_eq!(ids, [("a".to_string(), "shop".to_string()), ("b".into(), "shop".into())]);

    let services = a.services().await.expect("services");
    let echo = services.iter().find(|s| s.name == "echo").expect("echo listed");
    assert_eq!(echo.nodes.len(), 2);
    assert!(services.iter().any(|s| s.name == "audit" && s.kind == busbar::delivery::Kind::Message));

    for _ in 0..3 {
        b.call("echo", b"x".to_vec(), TEST_TIMEOUT).await.expect("echo answers");
    }
    let total: u64 = a.stats().await.expect("stats").iter().filter(|s| s.name == "echo").map(|s| s.requests).sum();
    assert_eq!(total, 3);
    let one = a.stats().await.expect("stats").into_iter().find(|s| s.name == "echo" && s.requests > 0).expect("served");
    assert!(one.total_ns > 0 && one.average_ns == one.total_ns / one.requests);

    b.stop().await;
    let left: Vec<_> = a.nodes().await.expect("nodes").into_iter().map(|n| n.node).collect();
    assert_eq!(left, ["a"], "a stopped node leaves the listing at once");
}

#[tokio::test]
async fn outgoing_operations_follow_the_connection_weights() {
    let hub = DefaultDriver::new();
    let folder = Folder::with(&["echo", "audit"]);
    let (node, _) = start_on(&hub, &folder, "[bus.east]\nweight = 3\n[bus.west]\nweight = 1\n").await;
    for _ in 0..40 {
        node.call("echo", b"x".to_vec(), TEST_TIMEOUT).await.expect("echo answers");
    }
    let sent: Vec<_> = node.connections().into_iter().map(|c| (c.name, c.sent)).collect();
    assert_eq!(sent, [("east".to_string(), 30), ("west".to_string(), 10)]);

    // Two connections to one hub still make one node: an event reaches it once.
    node.broadcast("audit", b"once".to_vec()).await.expect("accepted");
    node.stop().await;
    let audit = node.local_stats().into_iter().find(|s| s.name == "audit").expect("audit counted");
    assert_eq!(audit.requests, 1);
}
