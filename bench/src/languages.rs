//! Benchmark 8: the same `echo` handler written in Rust, Python, JavaScript
//! and C (`examples/`, built by `./dev handlers`): the component's size, its
//! cold compile, its load from the artifact cache, and an in-process `call`
//! with a fresh instance (the default) and with `reuse = 1000`. Rust, built
//! in the same run, is the baseline of each ratio.

use crate::stats::Summary;
use busbar::driver::default::DefaultDriver;
use busbar::runtime::{Runtime, RuntimeOptions};
use busbar::{Config, Node, NodeBuilder};
use busbar_tests::support::{Folder, guest};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The languages, each with its echo's guest name.
pub const ECHOES: [(&str, &str); 4] =
    [("Rust", "echo"), ("Python", "echo-py"), ("JavaScript", "echo-js"), ("C", "echo-c")];

/// The payload of each call.
pub const PAYLOAD: usize = 64;

/// Run sizes: sequential calls per contender.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Measured calls.
    pub calls: usize,
    /// Unmeasured calls first.
    pub warmup: usize,
}

/// One language's numbers.
pub struct Row {
    /// The language.
    pub lang: &'static str,
    /// Component size in bytes.
    pub size: u64,
    /// Compile with an empty cache.
    pub compile: Duration,
    /// Load of the compiled artifact from the cache (a fresh engine).
    pub cached: Duration,
    /// Calls with a fresh instance each.
    pub fresh: Summary,
    /// Calls with `reuse = 1000`.
    pub reused: Summary,
}

/// Measures every language in turn.
pub async fn measure(plan: Plan) -> anyhow::Result<Vec<Row>> {
    let cache = tempfile::tempdir()?;
    let options = RuntimeOptions { cache_dir: Some(cache.path().to_path_buf()), ..RuntimeOptions::default() };
    let folder = Folder::with(&[]);
    let mut loads = Vec::new();
    for (lang, name) in ECHOES {
        let bytes = std::fs::read(guest(name))?;
        eprintln!("bench:    {lang}: compile {name} ({} bytes)", bytes.len());
        let compile = load_time(&options, &bytes, false)?;
        let cached = load_time(&options, &bytes, true)?;
        folder
            .add(name, name)
            .add(name, &format!("{name}-reused"))
            .sidecar(&format!("{name}-reused"), "reuse = 1000\n");
        loads.push((lang, name, bytes.len() as u64, compile, cached));
    }

    let mut config = Config::default();
    config.node.handlers = folder.path().to_path_buf();
    let (node, report) =
        NodeBuilder::new(config).runtime(Arc::new(Runtime::new(&options)?)).hub(DefaultDriver::new()).start().await?;
    anyhow::ensure!(report.loaded.len() == 2 * ECHOES.len(), "not every echo loaded: {:?}", report.skipped);
    let mut rows = Vec::new();
    for (lang, name, size, compile, cached) in loads {
        eprintln!("bench:    {lang}: {} calls, fresh and reused", plan.calls);
        let fresh = calls(&node, name, plan).await?;
        let reused = calls(&node, &format!("{name}-reused"), plan).await?;
        rows.push(Row { lang, size, compile, cached, fresh, reused });
    }
    node.stop().await;
    Ok(rows)
}

/// The time a fresh runtime (so a fresh engine) takes to load `bytes`;
/// `cached` says whether the artifact must come from the cache.
fn load_time(options: &RuntimeOptions, bytes: &[u8], cached: bool) -> anyhow::Result<Duration> {
    let runtime = Runtime::new(options)?;
    let started = Instant::now();
    let compiled = runtime.load(bytes)?;
    let elapsed = started.elapsed();
    anyhow::ensure!(compiled.cached == cached, "expected cached = {cached}, the load said {}", compiled.cached);
    Ok(elapsed)
}

/// `plan.calls` sequential calls of `name` after `plan.warmup` unmeasured ones.
async fn calls(node: &Node, name: &str, plan: Plan) -> anyhow::Result<Summary> {
    let payload = vec![b'x'; PAYLOAD];
    for _ in 0..plan.warmup {
        node.call(name, payload.clone(), Duration::from_secs(10)).await?;
    }
    let mut latencies = Vec::with_capacity(plan.calls);
    let started = Instant::now();
    for _ in 0..plan.calls {
        let at = Instant::now();
        let reply = node.call(name, payload.clone(), Duration::from_secs(10)).await?;
        latencies.push(at.elapsed().as_nanos() as u64);
        anyhow::ensure!(reply == payload, "{name} did not echo");
    }
    Ok(Summary::of(latencies, started.elapsed()))
}
