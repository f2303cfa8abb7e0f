//! A real NATS JetStream cluster per test (three servers in practice, for R3
//! streams): one `nats-server` process per member, each with its own config file, store directory and
//! log in one temporary directory, clients and routes on loopback only, free
//! ports; all killed and cleaned up on drop.
//!
//! ```no_run
//! # async fn example() {
//! use async_nats::jetstream::{self, stream};
//! use busbar_tests::cluster::NatsCluster;
//! use std::time::Duration;
//!
//! let mut cluster = NatsCluster::start(3).await; // every member answers, a meta leader is elected
//! let js = jetstream::new(cluster.client(0).await);
//! let config = stream::Config { name: "S".into(), subjects: vec!["s.>".into()], num_replicas: 3, ..Default::default() };
//! js.create_stream(config).await.unwrap();
//! let leader = cluster.wait_stream_leader("S", Duration::from_secs(5)).await;
//! cluster.kill9(leader); // SIGKILL the member leading the stream
//! let new_leader = cluster.wait_stream_leader("S", Duration::from_secs(20)).await;
//! cluster.restart(leader).await; // same ports and store: it rejoins
//! cluster.wait_current_peers("S", 3, Duration::from_secs(15)).await;
//! # }
//! ```
//!
//! Ready means every member answers and the meta leader can place a stream
//! with a replica on each (a probe stream, created and deleted).
//!
//! The members are named `s0`, `s1`, ... (`server_name`, which STREAM.INFO's
//! `cluster.leader` reports; [`NatsCluster::index_of`] maps it back); the
//! cluster's name is unique per cluster (`busbar-test-PID-N`), so a route
//! that reaches another test's server on a recycled port is refused instead
//! of merging the two clusters. There is no monitoring port, no leaf node or
//! gateway listener: the client and route ports on 127.0.0.1 are all a
//! member listens on.
//!
//! The binary is the one [`crate::nats::server_binary`] picks
//! (`$BUSBAR_NATS_SERVER`, ...). Both Debian's 2.9 and the current 2.1x form
//! the cluster. After a SIGKILL of a stream's leader, a new one takes the
//! server's Raft election timeout to appear (4–9 s; measured 4.1–7.9 s on
//! both versions), and publishes to the stream meanwhile find no responders:
//! tests budget for that and poll, rather than pause. After a SIGTERM the
//! leader hands over first: a new one answers within about 50 ms.
//!
//! Starting, restarting and the JetStream queries are `async` (they ask the
//! members through NATS clients); [`NatsCluster::kill9`] and
//! [`NatsCluster::stop_gracefully`] block the calling thread, like
//! [`NatsServer`](crate::nats::NatsServer)'s: tests that kill members use
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` (see
//! [`crate::nats`]).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test set-up fails loudly")]

use crate::nats::{
    LOG_TAIL_LINES, READY_TIMEOUT, START_ATTEMPTS, free_port, log_tail, missing_binary, server_binary, terminate,
    version_of,
};
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often readiness and leadership are polled.
const POLL: Duration = Duration::from_millis(25);

/// How long one JetStream API request may take before it counts as
/// unanswered (a request that reaches a dead leader's stale interest is
/// never answered; the pollers ask again).
const QUERY_TIMEOUT: Duration = Duration::from_millis(750);

/// Extra settings for a cluster; [`NatsCluster::start`] takes the defaults.
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    /// The binary to run instead of [`server_binary`].
    binary: Option<PathBuf>,
    /// Config text appended to every member's config file.
    config: String,
}

impl ClusterBuilder {
    /// Runs `binary` instead of the one [`server_binary`] picks.
    #[must_use]
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// Appends `text` (nats-server config syntax, e.g. `max_payload: 65536`)
    /// to every member's config file; kept for restarts.
    #[must_use]
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    /// Starts `size` members and waits (at most [`READY_TIMEOUT`]) until every
    /// one accepts clients and gets JetStream's account info answered (which
    /// takes an elected meta leader reachable over the routes). Panics with
    /// every member's log tail if not.
    pub async fn start(self, size: usize) -> NatsCluster {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // nats-server refuses to run a JetStream cluster without routes.
        assert!(size >= 2, "a cluster has at least two members (NatsServer is the one-server harness)");
        let binary = match self.binary {
            Some(path) if path.is_file() => path,
            Some(path) => panic!("{} does not exist.\n{}", path.display(), missing_binary()),
            None => server_binary(),
        };
        let dir = tempfile::Builder::new().prefix("busbar-cluster-").tempdir().expect("tempdir for the cluster");
        let members = (0..size)
            .map(|i| {
                let home = dir.path().join(format!("s{i}"));
                std::fs::create_dir(&home).expect("create a member's dir");
                Member {
                    name: format!("s{i}"),
                    port: 0,
                    cluster_port: 0,
                    config: home.join("nats-server.conf"),
                    store_dir: home.join("store"),
                    log: home.join("nats-server.log"),
                    log_len_at_spawn: 0,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            name: format!("busbar-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)),
            binary,
            extra_config: self.config,
            members,
            _dir: dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            cluster.assign_ports(attempt);
            for i in 0..size {
                cluster.spawn(i);
            }
            match cluster.wait_ready().await {
                Ok(()) => {
                    cluster.wait_placement().await;
                    return cluster;
                }
                Err(Failure::AddressInUse(_)) if attempt < START_ATTEMPTS => cluster.kill_all(),
                Err(failure) => cluster.fail("did not become ready", &failure),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// A running JetStream cluster of `nats-server` processes on 127.0.0.1 (see
/// the module doc). Members are addressed by index, `0..size`.
///
/// Dropping it kills every member (SIGKILL) and removes the configs, stores
/// and logs.
#[derive(Debug)]
pub struct NatsCluster {
    /// The cluster's name (`cluster { name }`), unique per cluster.
    name: String,
    /// The binary every member runs.
    binary: PathBuf,
    /// Config text from [`ClusterBuilder::config`], appended to every member's.
    extra_config: String,
    /// The members, `s0` first.
    members: Vec<Member>,
    /// Holds every member's directory; removed on drop, after `Drop::drop`
    /// has killed the processes.
    _dir: tempfile::TempDir,
}

/// One `nats-server` of the cluster.
#[derive(Debug)]
struct Member {
    /// `s0`, `s1`, ...: the `server_name`.
    name: String,
    /// The client port, the same across restarts.
    port: u16,
    /// The route port, the same across restarts.
    cluster_port: u16,
    /// The config file the process runs with.
    config: PathBuf,
    /// JetStream's store directory, kept across restarts.
    store_dir: PathBuf,
    /// stdout and stderr, appended across restarts.
    log: PathBuf,
    /// The log's length when the process was last spawned (where this run's
    /// output starts).
    log_len_at_spawn: u64,
    /// The process while it runs.
    child: Option<Child>,
}

/// Why the cluster (or a restarted member) did not become ready.
#[derive(Debug)]
enum Failure {
    /// A member's port was taken between [`free_port`] and its bind.
    AddressInUse(String),
    /// Anything else, said in words.
    Other(String),
}

impl NatsCluster {
    /// Starts a cluster of `size` members (3 for R3 streams) on free ports
    /// and waits until it is ready; see [`ClusterBuilder::start`].
    pub async fn start(size: usize) -> Self {
        Self::builder().start(size).await
    }

    /// A cluster with extra settings: `NatsCluster::builder().binary(path).start(3).await`.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The cluster's name (`cluster { name }`), unique per cluster.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The binary every member runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Member `i`'s `server_name`: `s{i}`.
    pub fn server_name(&self, i: usize) -> &str {
        &self.member(i).name
    }

    /// The index of the member named `server_name` (as STREAM.INFO reports
    /// leaders and replicas).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == server_name)
    }

    /// Every member's client URL, `s0` first (for a client that may fail over).
    pub fn urls(&self) -> Vec<String> {
        (0..self.size()).map(|i| self.url(i)).collect()
    }

    /// Member `i`'s client URL, `nats://127.0.0.1:PORT` (the same across restarts).
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.member(i).port)
    }

    /// Member `i`'s config file.
    pub fn config_path(&self, i: usize) -> &Path {
        &self.member(i).config
    }

    /// Member `i`'s JetStream store directory (the same across restarts).
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.member(i).store_dir
    }

    /// The file receiving member `i`'s stdout and stderr, across restarts.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.member(i).log
    }

    /// The last lines of every member's log, each under a heading: for
    /// assertion messages.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        for m in &self.members {
            let state = if m.child.is_some() { "running" } else { "stopped" };
            let _ = write!(
                text,
                "\n---- {} ({state}; client 127.0.0.1:{}, routes 127.0.0.1:{}) log tail ({}) ----\n{}",
                m.name,
                m.port,
                m.cluster_port,
                m.log.display(),
                log_tail(&m.log, LOG_TAIL_LINES)
            );
        }
        text
    }

    /// Whether member `i`'s process is still running (it may have exited by
    /// itself).
    pub fn is_running(&mut self, i: usize) -> bool {
        let member = self.member_mut(i);
        match member.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                member.child = None;
                false
            }
            None => false,
        }
    }

    /// A client connected to member `i` only: it ignores the other members'
    /// URLs the server advertises, so when `i` is down it reconnects to `i`
    /// and nothing else (async-nats's default back-off, up to 4 s). For a
    /// client that fails over, connect to [`NatsCluster::urls`].
    pub async fn client(&self, i: usize) -> async_nats::Client {
        connect_only(&self.url(i))
            .await
            .unwrap_or_else(|e| panic!("connect to {} ({}): {e}{}", self.url(i), self.server_name(i), self.log_tails()))
    }

    /// Kills member `i` with SIGKILL (no flush, no goodbye, no leadership
    /// hand-over) and reaps it. Panics if it is not running.
    pub fn kill9(&mut self, i: usize) {
        let mut child = self.take_running(i, "kill9");
        child.kill().expect("SIGKILL nats-server");
        child.wait().expect("reap nats-server");
    }

    /// Stops member `i` with SIGTERM and waits (at most
    /// [`STOP_TIMEOUT`](crate::nats::STOP_TIMEOUT)) for it to exit; the
    /// leaderships it held are handed over first. Panics if it is not running
    /// or does not exit in time.
    pub fn stop_gracefully(&mut self, i: usize) {
        let mut child = self.take_running(i, "stop_gracefully");
        if !terminate(&mut child) {
            self.fail(
                &format!("stop_gracefully({i})"),
                &Failure::Other(format!("{} did not exit after SIGTERM (killed it)", self.server_name(i))),
            );
        }
    }

    /// Starts member `i` again with the same ports, config and store
    /// directory, and waits (at most [`READY_TIMEOUT`]) until it accepts
    /// clients and every running member gets JetStream's account info
    /// answered again (a meta leader is elected and reachable). A member still
    /// running is first stopped with SIGTERM. This does not wait for the
    /// member's streams to catch up: see [`NatsCluster::wait_current_peers`].
    pub async fn restart(&mut self, i: usize) {
        if self.is_running(i) {
            self.stop_gracefully(i);
        }
        let marker = format!("\n---- busbar test harness: restart of {} ----\n", self.server_name(i));
        if let Ok(mut log) = OpenOptions::new().append(true).open(self.log_path(i)) {
            log.write_all(marker.as_bytes()).ok();
        }
        // The ports are ours only while the member held them; if another
        // process took one meanwhile, there is no other to go to: wait a little.
        for attempt in 1..=START_ATTEMPTS {
            self.spawn(i);
            match self.wait_ready().await {
                Ok(()) => return,
                Err(Failure::AddressInUse(_)) if attempt < START_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(failure) => self.fail(&format!("restart({i})"), &failure),
            }
        }
    }

    /// Waits until the meta leader knows every member: a stream with one
    /// replica per member can be placed (until then JetStream answers "no
    /// suitable peers for placement"), then removes that probe stream.
    async fn wait_placement(&self) {
        let js = async_nats::jetstream::new(self.client(0).await);
        let probe = async_nats::jetstream::stream::Config {
            name: "HARNESS_PLACEMENT".into(),
            subjects: vec!["harness.placement".into()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            num_replicas: self.size(),
            ..Default::default()
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match js.create_stream(probe.clone()).await {
                Ok(_) => {
                    let _ = js.delete_stream("HARNESS_PLACEMENT").await;
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the cluster could not place a stream on all {} members: {last}{}", self.size(), self.log_tails());
    }

    /// STREAM.INFO for `stream` as JSON, from whichever running member gets
    /// it answered first (the stream's leader answers it); `None` if no
    /// member gets an answer without `error` within a short timeout (no
    /// leader, no such stream).
    pub async fn stream_info(&self, stream: &str) -> Option<Value> {
        self.query(&format!("$JS.API.STREAM.INFO.{stream}")).await
    }

    /// The index of the member leading `stream` (STREAM.INFO's
    /// `cluster.leader`), if there is one and it is running: a stale answer
    /// naming a member this harness stopped does not count.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let info = self.stream_info(stream).await?;
        self.running_leader(&info)
    }

    /// The index of the member leading consumer `consumer` of `stream`
    /// (CONSUMER.INFO's `cluster.leader`), as [`NatsCluster::stream_leader`].
    pub async fn consumer_leader(&self, stream: &str, consumer: &str) -> Option<usize> {
        let info = self.query(&format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}")).await?;
        self.running_leader(&info)
    }

    /// Waits (polling, at most `timeout`) until `stream` has a leader that is
    /// running and answers STREAM.INFO; returns its index. Panics with every
    /// member's log tail if there is none in time.
    pub async fn wait_stream_leader(&self, stream: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.stream_leader(stream).await {
                return leader;
            }
            if Instant::now() >= deadline {
                let why = format!("stream {stream} has no running leader after {timeout:?}");
                self.fail("wait_stream_leader", &Failure::Other(why));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The members holding a current copy of `stream`, by index, sorted: its
    /// leader and the replicas STREAM.INFO lists as `current` (caught up,
    /// not offline). `None` without a STREAM.INFO answer.
    pub async fn current_peers(&self, stream: &str) -> Option<Vec<usize>> {
        let info = self.stream_info(stream).await?;
        let cluster = info.get("cluster")?;
        let leader = cluster.get("leader").and_then(Value::as_str).and_then(|name| self.index_of(name));
        let replicas = cluster.get("replicas").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let current = replicas.iter().filter(|peer| {
            peer.get("current").and_then(Value::as_bool) == Some(true)
                && peer.get("offline").and_then(Value::as_bool) != Some(true)
        });
        let names = current.filter_map(|peer| peer.get("name").and_then(Value::as_str));
        let peers: BTreeSet<usize> = leader.into_iter().chain(names.filter_map(|name| self.index_of(name))).collect();
        Some(peers.into_iter().collect())
    }

    /// Waits (polling, at most `timeout`) until `stream` has `count` current
    /// peers (see [`NatsCluster::current_peers`]): e.g. 3 for an R3 stream
    /// whose restarted member has caught up. Returns them; panics with the
    /// last STREAM.INFO answer and every member's log tail if not in time.
    pub async fn wait_current_peers(&self, stream: &str, count: usize, timeout: Duration) -> Vec<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(peers) = self.current_peers(stream).await
                && peers.len() >= count
            {
                return peers;
            }
            if Instant::now() >= deadline {
                let last = self.stream_info(stream).await.and_then(|info| info.get("cluster").cloned());
                let why = format!("stream {stream} has not {count} current peers after {timeout:?}; cluster: {last:?}");
                self.fail("wait_current_peers", &Failure::Other(why));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn member(&self, i: usize) -> &Member {
        self.members.get(i).unwrap_or_else(|| panic!("no member {i}: the cluster has {}", self.members.len()))
    }

    fn member_mut(&mut self, i: usize) -> &mut Member {
        let size = self.members.len();
        self.members.get_mut(i).unwrap_or_else(|| panic!("no member {i}: the cluster has {size}"))
    }

    /// `cluster.leader` of an INFO answer as an index, if that member runs.
    fn running_leader(&self, info: &Value) -> Option<usize> {
        let name = info.get("cluster")?.get("leader")?.as_str()?;
        self.index_of(name).filter(|&i| self.members[i].child.is_some())
    }

    /// A JetStream API request (empty body) through each running member in
    /// turn: the first answer without `error`, or `None`.
    async fn query(&self, subject: &str) -> Option<Value> {
        for (i, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            let Ok(client) = connect_only(&self.url(i)).await else {
                continue;
            };
            if let Ok(answer) = js_request(&client, subject).await {
                return Some(answer);
            }
        }
        None
    }

    /// Picks fresh ports for every member (all distinct) and writes the
    /// config files; on a retry, also empties the store directories.
    fn assign_ports(&mut self, attempt: usize) {
        let mut taken = BTreeSet::new();
        let mut pick = || loop {
            let port = free_port();
            if taken.insert(port) {
                return port;
            }
        };
        let ports: Vec<(u16, u16)> = self.members.iter().map(|_| (pick(), pick())).collect();
        for (member, (port, cluster_port)) in self.members.iter_mut().zip(&ports) {
            (member.port, member.cluster_port) = (*port, *cluster_port);
        }
        for i in 0..self.members.len() {
            let member = &self.members[i];
            if attempt > 1 {
                std::fs::remove_dir_all(&member.store_dir).ok();
                let marker = format!("\n---- busbar test harness: start attempt {attempt}, on new ports ----\n");
                if let Ok(mut log) = OpenOptions::new().append(true).open(&member.log) {
                    log.write_all(marker.as_bytes()).ok();
                }
            }
            std::fs::create_dir_all(&member.store_dir).expect("create a member's store dir");
            std::fs::write(&member.config, self.config_text(i)).expect("write a member's config");
        }
    }

    /// Member `i`'s config file: loopback only, no monitoring port, routes
    /// to every other member.
    fn config_text(&self, i: usize) -> String {
        let member = &self.members[i];
        let routes: String = self
            .members
            .iter()
            .filter(|other| other.name != member.name)
            .map(|other| format!("        {}\n", quoted(&format!("nats-route://127.0.0.1:{}", other.cluster_port))))
            .collect();
        format!(
            "# Written by busbar's test harness (tests/src/cluster.rs).\n\
             server_name: {name}\n\
             listen: \"127.0.0.1:{port}\"\n\
             jetstream {{\n    store_dir: {store}\n}}\n\
             cluster {{\n\
             \x20   name: {cluster}\n\
             \x20   listen: \"127.0.0.1:{cluster_port}\"\n\
             \x20   routes: [\n{routes}    ]\n\
             }}\n{extra}",
            name = quoted(&member.name),
            port = member.port,
            store = quoted(&member.store_dir.to_string_lossy()),
            cluster = quoted(&self.name),
            cluster_port = member.cluster_port,
            extra = self.extra_config,
        )
    }

    /// Spawns member `i` (`nats-server -c CONFIG`), its output appended to
    /// its log.
    fn spawn(&mut self, i: usize) {
        let binary = self.binary.clone();
        let member = self.member_mut(i);
        let log = OpenOptions::new().create(true).append(true).open(&member.log).expect("open a member's log");
        member.log_len_at_spawn = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&member.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        member.child = Some(child);
    }

    /// Waits until every running member accepts clients as itself and gets
    /// `$JS.API.INFO` answered, or one exits, or [`READY_TIMEOUT`] passes.
    async fn wait_ready(&mut self) -> Result<(), Failure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut clients: Vec<Option<async_nats::Client>> = vec![None; self.members.len()];
        let mut last_error: Vec<String> = vec!["not tried".to_owned(); self.members.len()];
        loop {
            self.check_exits()?;
            for (i, client) in clients.iter_mut().enumerate() {
                if client.is_some() || self.members[i].child.is_none() {
                    continue;
                }
                match connect_only(&self.url(i)).await {
                    Ok(connected) => {
                        let info = connected.server_info();
                        if info.server_name == self.members[i].name && info.cluster.as_deref() == Some(&self.name) {
                            *client = Some(connected);
                            last_error[i] = "accepts clients".to_owned();
                        } else {
                            last_error[i] = format!(
                                "the port is answered by server {:?} of cluster {:?}",
                                info.server_name, info.cluster
                            );
                        }
                    }
                    Err(e) => last_error[i] = format!("does not accept clients: {e}"),
                }
            }
            let running: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].child.is_some()).collect();
            if running.iter().all(|&i| clients[i].is_some()) {
                let answers = join_all(running.iter().map(|&i| {
                    let client = clients[i].as_ref().expect("checked above");
                    js_request(client, "$JS.API.INFO")
                }))
                .await;
                let mut all = true;
                for (&i, answer) in running.iter().zip(answers) {
                    last_error[i] = match answer {
                        Ok(_) => "ready".to_owned(),
                        Err(why) => {
                            all = false;
                            format!("accepts clients, but $JS.API.INFO: {why}")
                        }
                    };
                }
                if all {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let states: Vec<String> =
                    running.iter().map(|&i| format!("{}: {}", self.members[i].name, last_error[i])).collect();
                return Err(Failure::Other(format!(
                    "not ready within {READY_TIMEOUT:?} (every member accepting clients and JetStream \
                     answering through it): {}",
                    states.join("; ")
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An error if a member this harness started has exited.
    fn check_exits(&mut self) -> Result<(), Failure> {
        for member in &mut self.members {
            let Some(status) = member.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) else {
                continue;
            };
            member.child = None;
            let log = std::fs::read_to_string(&member.log).unwrap_or_default();
            let this_run = log.get(usize::try_from(member.log_len_at_spawn).unwrap_or(0)..).unwrap_or(&log);
            let why = format!("{} exited during start-up ({status})", member.name);
            return Err(if this_run.contains("address already in use") {
                Failure::AddressInUse(why)
            } else {
                Failure::Other(why)
            });
        }
        Ok(())
    }

    /// The running child of member `i`, taken out to be stopped.
    fn take_running(&mut self, i: usize, what: &str) -> Child {
        if !self.is_running(i) {
            panic!("{what}: {} is not running{}", self.server_name(i), self.log_tails());
        }
        self.member_mut(i).child.take().expect("is_running checked it")
    }

    fn kill_all(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }

    fn fail(&self, what: &str, failure: &Failure) -> ! {
        let why = match failure {
            Failure::AddressInUse(why) => format!("{why}: a port stayed in use after {START_ATTEMPTS} attempts"),
            Failure::Other(why) => why.clone(),
        };
        panic!(
            "NATS cluster {} ({} {}, {} members): {what}: {why}{}",
            self.name,
            self.binary.display(),
            version_of(&self.binary),
            self.members.len(),
            self.log_tails()
        );
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
        // `_dir` (configs, stores, logs) is removed when the TempDir field drops.
    }
}

/// A client of `url` alone (discovered servers ignored), failing fast when
/// nothing answers.
async fn connect_only(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name("busbar-tests")
        .ignore_discovered_servers()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
}

/// A JetStream API request with an empty body: the answer's JSON if it came
/// within [`QUERY_TIMEOUT`] and carries no `error`, else why not.
async fn js_request(client: &async_nats::Client, subject: &str) -> Result<Value, String> {
    let request = async_nats::Request::new().payload(bytes::Bytes::new()).timeout(Some(QUERY_TIMEOUT));
    let reply = client.send_request(subject.to_owned(), request).await.map_err(|e| e.to_string())?;
    let answer: Value = serde_json::from_slice(&reply.payload).map_err(|e| format!("not JSON: {e}"))?;
    match answer.get("error") {
        Some(error) => Err(error.to_string()),
        None => Ok(answer),
    }
}

/// `text` as a quoted config string (JSON's escaping, which the nats-server
/// config syntax reads).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}
