//! Benchmark 9: busbar on a three-server NATS JetStream cluster. Three
//! serving nodes (one per server, by URL order) and a client node dispatch
//! 1 KiB jobs to the wasm `echo`:
//!
//! - **throughput** on one server, and on the cluster with `replicas = 1`
//!   and `replicas = 3`, each on fresh servers, as benchmark 5 measures it
//!   (P publisher tasks each awaiting its publish ack);
//! - **failover**: with `replicas = 3`, the server leading the work queue is
//!   killed (SIGKILL) while nothing is in flight, then one job is dispatched:
//!   the time from the kill to its publish being accepted (`Node::dispatch`
//!   retries through the election with one `Nats-Msg-Id`), and to its
//!   completion on a node; the killed server is restarted and caught up
//!   before the next kill;
//! - **backlog**: N jobs queued by a plain JetStream publisher before one
//!   node with `concurrency = 4, queue = 4` starts; the time to drain them,
//!   and the dead letters (must be 0).

use busbar::Node;
use busbar_tests::cluster::NatsCluster;
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{Folder, nats_config_on as config, served, start_config};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The payload size.
pub const PAYLOAD: usize = 1024;
/// How often progress is read.
const POLL: Duration = Duration::from_millis(2);
/// How long one measurement may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(180);

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Jobs per throughput measurement.
    pub jobs: usize,
    /// Publisher tasks (the ack window).
    pub publishers: usize,
    /// Leader kills in the failover measurement.
    pub kills: usize,
    /// Jobs in the backlog.
    pub backlog: usize,
}

/// Where the bus runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// One server.
    Single,
    /// Three servers, streams with one replica.
    ClusterR1,
    /// Three servers, streams with three replicas.
    ClusterR3,
}

impl Bus {
    /// Every set-up, in table order.
    pub const ALL: [Bus; 3] = [Bus::Single, Bus::ClusterR1, Bus::ClusterR3];

    /// Its name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Bus::Single => "one server (`replicas = 1`)",
            Bus::ClusterR1 => "3-server cluster, `replicas = 1`",
            Bus::ClusterR3 => "3-server cluster, `replicas = 3`",
        }
    }

    fn replicas(self) -> usize {
        if self == Bus::ClusterR3 { 3 } else { 1 }
    }
}

/// The servers of one measurement.
enum Servers {
    One(NatsServer),
    Three(NatsCluster),
}

impl Servers {
    async fn start(bus: Bus) -> Self {
        match bus {
            Bus::Single => Servers::One(NatsServer::start()),
            _ => Servers::Three(NatsCluster::start(3).await),
        }
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s.url()],
            Servers::Three(c) => c.urls(),
        }
    }
}

/// Three serving nodes and a client.
struct Nodes {
    workers: Vec<Node>,
    client: Arc<Node>,
    _folder: Folder,
}

impl Nodes {
    async fn start(urls: &[String], replicas: usize, sidecar: Option<&str>, workers: usize) -> anyhow::Result<Self> {
        let folder = Folder::with(&["echo"]);
        if let Some(sidecar) = sidecar {
            folder.sidecar("echo", sidecar);
        }
        let (client, _) = start_config(&config(urls, "bench-client", 0, replicas), &Folder::with(&[]), false)
            .await
            .map_err(anyhow::Error::msg)?;
        let mut nodes = Vec::new();
        for i in 0..workers {
            let (node, _) = start_config(&config(urls, &format!("bench-{i}"), i, replicas), &folder, false)
                .await
                .map_err(anyhow::Error::msg)?;
            nodes.push(node);
        }
        Ok(Self { workers: nodes, client: Arc::new(client), _folder: folder })
    }

    fn handled(&self) -> u64 {
        self.workers.iter().map(|n| served(n, "echo")).sum()
    }

    async fn until_handled(&self, target: u64, since: Instant) -> anyhow::Result<Instant> {
        loop {
            if self.handled() >= target {
                return Ok(Instant::now());
            }
            anyhow::ensure!(since.elapsed() < LIMIT, "only {} of {target} jobs handled", self.handled());
            tokio::time::sleep(POLL).await;
        }
    }

    async fn dead_letters(&self) -> anyhow::Result<usize> {
        Ok(self.client.dead_letters().await.map_err(|e| anyhow::anyhow!("{e}"))?.len())
    }

    async fn stop(self) {
        for node in self.workers {
            node.stop().await;
        }
        if let Ok(client) = Arc::try_unwrap(self.client) {
            client.stop().await;
        }
    }
}

/// Jobs/s of `bus`: `plan.jobs` dispatched by `plan.publishers` tasks, after 500 warm-up jobs.
pub async fn throughput(bus: Bus, plan: Plan) -> anyhow::Result<f64> {
    let servers = Servers::start(bus).await;
    let nodes = Nodes::start(&servers.urls(), bus.replicas(), None, 3).await?;
    let payload: Bytes = (0..PAYLOAD).map(|i| i as u8).collect::<Vec<u8>>().into();
    let mut done = 0u64;
    let mut rate = 0.0;
    for jobs in [500, plan.jobs] {
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..plan.publishers)
            .map(|_| {
                let (client, next, payload) = (nodes.client.clone(), next.clone(), payload.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < jobs {
                        client.dispatch("echo", payload.to_vec()).await.map_err(|f| f.to_string())?;
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        done += jobs as u64;
        let end = nodes.until_handled(done, start).await?;
        for t in tasks {
            t.await?.map_err(|e| anyhow::anyhow!("a dispatch failed: {e}"))?;
        }
        rate = jobs as f64 / (end - start).as_secs_f64();
    }
    anyhow::ensure!(nodes.handled() == done, "{} jobs handled, {done} dispatched", nodes.handled());
    anyhow::ensure!(nodes.dead_letters().await? == 0, "dead letters");
    nodes.stop().await;
    Ok(rate)
}

/// One failover: (kill → publish accepted, kill → job completed).
pub type Failover = (Duration, Duration);

/// `plan.kills` kills of the work queue's leader on a cluster with `replicas = 3`.
pub async fn failovers(plan: Plan) -> anyhow::Result<Vec<Failover>> {
    let mut cluster = NatsCluster::start(3).await;
    let nodes = Nodes::start(&cluster.urls(), 3, None, 3).await?;
    let mut out = Vec::new();
    for _ in 0..plan.kills {
        let before = nodes.handled() + 1;
        nodes.client.dispatch("echo", b"warm".to_vec()).await.map_err(|f| anyhow::anyhow!("{f}"))?;
        nodes.until_handled(before, Instant::now()).await?;
        let leader = cluster.wait_stream_leader("SHOP_QUEUE", Duration::from_secs(30)).await;
        cluster.kill9(leader);
        let killed = Instant::now();
        nodes.client.dispatch("echo", b"across".to_vec()).await.map_err(|f| anyhow::anyhow!("{f}"))?;
        let accepted = Instant::now();
        let done = nodes.until_handled(before + 1, killed).await?;
        out.push((accepted - killed, done - killed));
        eprintln!(
            "bench:    kill of s{leader}: publish accepted after {:?}, job done after {:?}",
            accepted - killed,
            done - killed
        );
        cluster.restart(leader).await;
        cluster.wait_current_peers("SHOP_QUEUE", 3, Duration::from_secs(60)).await;
    }
    anyhow::ensure!(nodes.dead_letters().await? == 0, "dead letters after the failovers");
    nodes.stop().await;
    Ok(out)
}

/// A backlog of `plan.backlog` jobs drained by one node with `concurrency =
/// 4, queue = 4` on one server: (jobs/s, dead letters).
pub async fn backlog(plan: Plan) -> anyhow::Result<(f64, usize)> {
    let server = NatsServer::start();
    let urls = vec![server.url()];
    // The client creates the streams; the backlog is queued before any node serves `echo`.
    let (client, _) = start_config(&config(&urls, "bench-client", 0, 1), &Folder::with(&[]), false)
        .await
        .map_err(anyhow::Error::msg)?;
    let js = async_nats::jetstream::new(server.client().await);
    let payload: Bytes = (0..PAYLOAD).map(|i| i as u8).collect::<Vec<u8>>().into();
    let mut acks = Vec::new();
    for _ in 0..plan.backlog {
        acks.push(js.publish("queue.shop.echo", payload.clone()).await?);
        if acks.len() == 512 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    let start = Instant::now();
    let nodes = Nodes::start(&urls, 1, Some("concurrency = 4\nqueue = 4\n"), 1).await?;
    let end = nodes.until_handled(plan.backlog as u64, start).await?;
    let dead = nodes.dead_letters().await?;
    anyhow::ensure!(nodes.handled() == plan.backlog as u64, "{} handled", nodes.handled());
    nodes.stop().await;
    client.stop().await;
    Ok((plan.backlog as f64 / (end - start).as_secs_f64(), dead))
}
