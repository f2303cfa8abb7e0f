//! Benchmark 2: node start-up with many handlers, cold (empty artifact cache)
//! and warm (the cache the cold start filled), each with a fresh `Runtime`
//! (the node builds its own engine, as `busbar run` does).
//!
//! Also builds the folder of distinct handlers that benchmark 3 runs.

use busbar::driver::default::DefaultDriver;
use busbar::node::LoadReport;
use busbar::{Config, NodeBuilder};
use busbar_tests::support::{Folder, guest};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// The guests the folder cycles through (all load; none runs at start).
const GUESTS: &[&str] = &["echo", "greet", "audit", "whoami", "fail", "flaky", "fanout", "recurse"];

/// The name of handler `i` of the folder; handler 0 is an `echo`.
pub fn handler_name(i: usize) -> String {
    format!("h{i:03}-{}", GUESTS[i % GUESTS.len()])
}

/// Appends unsigned LEB128 `n` to `out`.
fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with a custom section (id 0, size, name, payload) appended:
/// still a valid component, with different bytes and so a different content
/// hash and cache entry.
pub fn with_custom_section(mut component: Vec<u8>, name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    component.push(0);
    leb128(body.len(), &mut component);
    component.extend_from_slice(&body);
    component
}

/// A folder of `n` handlers with pairwise distinct bytes, named
/// [`handler_name`]`(i)`.
pub fn distinct_folder(n: usize) -> anyhow::Result<Folder> {
    let folder = Folder::with(&[]);
    let mut seen = HashSet::new();
    for i in 0..n {
        let g = GUESTS[i % GUESTS.len()];
        let bytes = std::fs::read(guest(g))?;
        let bytes = with_custom_section(bytes, &format!("busbar-bench-{i}"), format!("copy {i} of {g}").as_bytes());
        anyhow::ensure!(seen.insert(bytes.clone()), "handler {i} is not distinct");
        folder.write(&format!("{}.wasm", handler_name(i)), &bytes);
    }
    Ok(folder)
}

/// One start: from `NodeBuilder::start()` to the first successful call.
pub struct Start {
    /// Time to serving.
    pub elapsed: Duration,
    /// What the start loaded.
    pub report: LoadReport,
}

/// Starts a node on `folder` with a fresh runtime and artifact cache `cache`
/// (compiling in child processes of `worker`, the `busbar` binary, if
/// given), calls `h000-echo`, checks that all `n` handlers loaded, and stops it.
pub async fn start_once(folder: &Path, cache: &Path, n: usize, worker: Option<&Path>) -> anyhow::Result<Start> {
    let mut config = Config::default();
    config.node.handlers = folder.to_path_buf();
    config.node.cache = Some(cache.to_path_buf());
    let started = Instant::now();
    let mut builder = NodeBuilder::new(config).hub(DefaultDriver::new());
    if let Some(program) = worker {
        builder = builder.compile_worker(program.to_path_buf());
    }
    let (node, report) = builder.start().await?;
    let reply = node.call(&handler_name(0), b"ping".to_vec(), Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    node.stop().await;
    anyhow::ensure!(
        reply.as_deref().ok() == Some(b"ping".as_slice()),
        "the node does not serve {}: {reply:?}",
        handler_name(0)
    );
    anyhow::ensure!(
        report.loaded.len() == n,
        "{} of {n} handlers loaded; skipped: {:?}",
        report.loaded.len(),
        report.skipped
    );
    Ok(Start { elapsed, report })
}
