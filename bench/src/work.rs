//! Benchmark 10: handlers that do real work. The cost of one key-value get
//! and put per invocation on each driver (the default driver in memory, its
//! durable state, NATS JetStream KV), and of one outbound HTTP request to a
//! loopback server, against a plain call of `echo` on the same node in the
//! same run.

use crate::stats::Summary;
use busbar::driver::default::DefaultDriver;
use busbar::{Config, Node, NodeBuilder};
use busbar_tests::nats::NatsServer;
use busbar_tests::support::Folder;
use busbar_tests::web::WebServer;
use std::time::{Duration, Instant};

/// Run sizes: sequential calls per contender.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Measured calls.
    pub calls: usize,
    /// Unmeasured calls first.
    pub warmup: usize,
}

/// Where the buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// The default driver without a state: buckets in an in-memory SQLite.
    Memory,
    /// The default driver on a state directory: buckets in its SQLite (WAL).
    Durable,
    /// NATS: JetStream KV.
    Nats,
}

impl Bus {
    /// Every set-up, in table order.
    pub const ALL: [Bus; 3] = [Bus::Memory, Bus::Durable, Bus::Nats];

    /// Its row label.
    pub fn label(self) -> &'static str {
        match self {
            Bus::Memory => "default driver, in memory",
            Bus::Durable => "default driver, durable state",
            Bus::Nats => "NATS (JetStream KV)",
        }
    }
}

/// One row: a plain call and the call doing the work, on one node.
pub struct Row {
    /// The plain call of `echo`.
    pub plain: Summary,
    /// The call doing the work.
    pub work: Summary,
}

/// A folder with `echo`, `kvtool` (bucket `b`) and `fetch` (granted `origin`).
fn folder(origin: &str) -> Folder {
    let folder = Folder::with(&["echo", "kvtool", "fetch"]);
    folder.sidecar("kvtool", "keyvalue = [\"b\"]\n").sidecar("fetch", &format!("http = [{origin:?}]\n"));
    folder
}

async fn start(
    bus: Bus,
    folder: &Folder,
    server: Option<&NatsServer>,
    state: &std::path::Path,
) -> anyhow::Result<Node> {
    let text = match (bus, server) {
        (Bus::Nats, Some(server)) => busbar_tests::support::nats_config(&server.url(), "bench", "", ""),
        _ => String::new(),
    };
    let text = format!("{text}\n[grants]\nhttp = [\"http://127.0.0.1:*\"]\n");
    let mut config = Config::parse(&text, std::path::Path::new("bench.toml"))?;
    config.node.handlers = folder.path().to_path_buf();
    let builder = NodeBuilder::new(config);
    let builder = match bus {
        Bus::Memory => builder.hub(DefaultDriver::new()),
        Bus::Durable => builder.hub(DefaultDriver::durable(state)?),
        Bus::Nats => builder,
    };
    let (node, report) = builder.start().await?;
    anyhow::ensure!(report.skipped.is_empty(), "not every handler loaded: {:?}", report.skipped);
    Ok(node)
}

/// One get and one put per invocation on `bus`, against a plain call.
pub async fn keyvalue(bus: Bus, plan: Plan) -> anyhow::Result<Row> {
    let server = (bus == Bus::Nats).then(NatsServer::start);
    let state = tempfile::tempdir()?;
    let folder = folder("http://127.0.0.1:1");
    let node = start(bus, &folder, server.as_ref(), state.path()).await?;
    let plain = calls(&node, "echo", b"ping", plan).await?;
    let work = calls(&node, "kvtool", b"getset b key value", plan).await?;
    node.stop().await;
    Ok(Row { plain, work })
}

/// One outbound HTTP GET to a loopback server per invocation, against a plain call.
pub async fn http(plan: Plan) -> anyhow::Result<Row> {
    let web = WebServer::start().await;
    let state = tempfile::tempdir()?;
    let folder = folder(&web.origin());
    let node = start(Bus::Memory, &folder, None, state.path()).await?;
    let plain = calls(&node, "echo", b"ping", plan).await?;
    let work = calls(&node, "fetch", web.url("/hello").as_bytes(), plan).await?;
    node.stop().await;
    Ok(Row { plain, work })
}

/// `plan.calls` sequential calls of `name` after `plan.warmup` unmeasured ones.
async fn calls(node: &Node, name: &str, payload: &[u8], plan: Plan) -> anyhow::Result<Summary> {
    for _ in 0..plan.warmup {
        node.call(name, payload.to_vec(), Duration::from_secs(10)).await?;
    }
    let mut latencies = Vec::with_capacity(plan.calls);
    let started = Instant::now();
    for _ in 0..plan.calls {
        let at = Instant::now();
        node.call(name, payload.to_vec(), Duration::from_secs(10)).await?;
        latencies.push(at.elapsed().as_nanos() as u64);
    }
    Ok(Summary::of(latencies, started.elapsed()))
}
