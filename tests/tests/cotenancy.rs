//! A well-behaved handler beside hostile ones: every call of it succeeds,
//! and none waits for a neighbour, while its neighbours spin, hog memory,
//! recurse and flood.
//!
//! This is a timing measurement, so it lives in a test binary of its own:
//! cargo runs test binaries one after another, and no other test of the
//! suite competes with it for the machine's cores while it measures.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a failed expectation is a failed test")]

use busbar::{FailureClass, Node};
use busbar_tests::support::{Folder, TEST_TIMEOUT, start};
use std::time::{Duration, Instant};

/// The p99 of `latencies`.
fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

/// Calls `echo` `calls` times from each of `callers` tasks; returns the
/// latencies and the failures.
async fn echo_load(node: &Node, callers: usize, calls: usize) -> (Vec<Duration>, Vec<busbar::Failure>) {
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), Vec::new());
                for _ in 0..calls {
                    let started = Instant::now();
                    match node.call("echo", b"ping".to_vec(), TEST_TIMEOUT).await {
                        Ok(reply) if reply == b"ping" => latencies.push(started.elapsed()),
                        Ok(other) => failures.push(busbar::Failure::new(FailureClass::Failed, format!("{other:?}"))),
                        Err(f) => failures.push(f),
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut failures) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, f) = t.await.expect("caller");
        latencies.extend(l);
        failures.extend(f);
    }
    (latencies, failures)
}

/// The p99 latency the well-behaved handler keeps beside the hostile ones:
/// below the shortest neighbour's timeout (spin's 200 ms) by far, so an
/// echo call never waits for a neighbour to be interrupted. Its ratio to
/// the solo p99 is printed, not asserted: measured 0.7–1.7x on a 2-core
/// machine, debug build, and once 52x (6.5 ms) on a clean CI machine, where
/// a spinning guest yields only at epoch ticks (2 ms) — a timing ratio is
/// a benchmark's to report, not a test's to assert.
const COTENANT_P99_BOUND: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_handler_keeps_working_beside_hostile_ones() {
    // `hostile` serves as `rogue` here, so its flood is told apart in the
    // process-wide log from the other test's.
    let folder = Folder::with(&["echo", "spin", "hog", "recurse"]);
    folder.add("hostile", "rogue");
    folder
        .sidecar("spin", "timeout = \"200ms\"\nconcurrency = 2\n")
        .sidecar("hog", "memory = \"32MiB\"\nconcurrency = 2\n")
        .sidecar("rogue", "timeout = \"500ms\"\nconcurrency = 4\n");
    let node = start(&folder).await;
    let (solo, failures) = echo_load(&node, 4, 2000).await;
    assert!(failures.is_empty(), "{failures:?}");
    let solo = p99(solo);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile: Vec<_> = [("spin", ""), ("hog", ""), ("rogue", "recurse"), ("rogue", "flood:2000"), ("recurse", "")]
        .into_iter()
        .chain([("rogue", "sleep:60000"), ("rogue", "random:4294967296")])
        .map(|(name, payload)| {
            let (node, stop) = (node.clone(), stop.clone());
            tokio::spawn(async move {
                let mut refused = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    refused += u64::from(node.call(name, payload.as_bytes().to_vec(), TEST_TIMEOUT).await.is_err());
                }
                refused
            })
        })
        .collect();
    // Let every hostile handler fail at least once, so the load below runs
    // while they are all at it.
    let all_at_it = busbar_tests::support::eventually(Duration::from_secs(20), async || {
        let stats = node.local_stats();
        ["spin", "hog", "rogue", "recurse"].iter().all(|n| stats.iter().any(|s| s.name == *n && s.errors > 0))
    })
    .await;
    assert!(all_at_it, "the hostile handlers did not run: {:?}", node.local_stats());
    let (beside, failures) = echo_load(&node, 4, 2000).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for h in hostile {
        refused += h.await.expect("hostile caller");
    }
    assert!(refused > 0, "the hostile handlers never ran");
    assert!(failures.is_empty(), "{} echo calls failed beside hostile handlers: {:?}", failures.len(), failures[0]);
    let beside = p99(beside);
    let ratio = beside.as_secs_f64() / solo.as_secs_f64();
    eprintln!("echo p99 solo {solo:?}, beside hostile handlers {beside:?}: {ratio:.1}x");
    assert!(
        beside <= COTENANT_P99_BOUND,
        "echo p99 {beside:?} ({ratio:.1}x its solo {solo:?}) beside hostile handlers"
    );
}
