//! The bus core: a node. [`NodeBuilder`] loads the handlers folder,
//! connects every configured bus, serves every name and starts receiving;
//! a [`Node`] then delivers what its connections receive to its handlers
//! (`core`) and sends its own and its handlers' deliveries out over a
//! connection picked by weight (`outgoing`). The handler lifecycle —
//! folder, reload, routing table — is [`crate::handlers`]'.

mod core;
mod outgoing;
pub(crate) mod weighted;

pub use self::core::Inbound;
pub use crate::handlers::{LoadReport, LoadedHandler};

use self::core::Core;
use crate::config::Config;
use crate::delivery::failure::Failure;
use crate::delivery::{Headers, Mode, Request};
use crate::driver::default::DefaultDriver;
use crate::driver::{Connection, DeadLetter, Driver, DriverError, Receipt};
use crate::handlers::Handlers;
use crate::handlers::progress;
use crate::handlers::sidecar::Rules;
use crate::ops::metrics::Metrics;
use crate::runtime::{Runtime, RuntimeError, RuntimeOptions};
use crate::stats::{NameStats, NodeInfo, ServiceInfo};
use outgoing::{Link, Outgoing};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// A problem starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The wasmtime engine could not be built.
    #[error("cannot start the wasm runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// The handlers folder could not be read.
    #[error("cannot read the handlers folder {path}: {source}; create it or point --handlers at one")]
    Folder {
        /// The folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Loading the handlers folder failed inside busbar (a bug).
    #[error("loading the handlers folder failed: {0}")]
    Load(String),
    /// The handlers folder cannot be watched.
    #[error("cannot watch the handlers folder: {0}; set `[node] watch = false` to serve without live reload")]
    Watch(notify::Error),
    /// The default driver's state cannot be used.
    #[error("{0}")]
    State(#[from] crate::driver::default::state::StateError),
    /// A connection could not be opened.
    #[error("bus connection `{name}`: {error}")]
    Connect {
        /// The connection's name.
        name: String,
        /// What the driver said.
        error: DriverError,
    },
}

/// A running node. Cheap to clone.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use busbar::{Config, Node};
/// use std::time::Duration;
///
/// let (node, report) = Node::start(Config::load("busbar.toml".as_ref())?).await?;
/// println!("{} handlers loaded", report.loaded.len());
/// let reply = node.call("echo", b"hello".to_vec(), Duration::from_secs(5)).await?;
/// assert_eq!(reply, b"hello");
/// node.dispatch("order.paid", b"{\"id\": 7}".to_vec()).await?;
/// node.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    core: Arc<Core>,
}

/// How many changes of the handlers folder a node applied and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ReloadStats {
    /// Handlers added, replaced, re-configured or removed.
    pub applied: u64,
    /// New files that did not make a valid handler (the old version kept serving).
    pub rejected: u64,
}

/// One bus connection of a node and how much it carried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionUse {
    /// The connection's name (`default` or the `[bus.NAME]` table).
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Outgoing operations sent through it.
    pub sent: u64,
}

/// Builds a node: config, runtime and drivers can be supplied, for tests and
/// embedding; otherwise they are made from the config.
///
/// # Examples
///
/// Two nodes in one process share an in-process bus when given the same hub:
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use busbar::driver::default::DefaultDriver;
/// use busbar::{Config, NodeBuilder};
///
/// let hub = DefaultDriver::new();
/// let mut config = Config::default();
/// config.node.handlers = "handlers".into();
/// let (server, _) = NodeBuilder::new(config.clone()).hub(hub.clone()).start().await?;
/// let (client, _) = NodeBuilder::new(config).hub(hub).client().start().await?;
/// let reply = client.call("echo", b"hi".to_vec(), std::time::Duration::from_secs(5)).await?;
/// # drop(server); Ok(()) }
/// ```
pub struct NodeBuilder {
    config: Config,
    runtime: Option<Arc<Runtime>>,
    /// Drivers given by name (for `driver = "NAME"` connections).
    drivers: HashMap<String, Arc<dyn Driver>>,
    /// The in-process hub of `driver = "default"` connections (a hub of
    /// this node's own when none is given).
    hub: Option<DefaultDriver>,
    /// Whether the node serves handlers; a client only sends.
    serve: bool,
    /// Whether the node applies changes of its handlers folder live.
    watch: bool,
    /// Where the node records its metrics (a fresh set if none is given).
    metrics: Option<Arc<Metrics>>,
    /// How the start-up load shows its progress.
    progress: progress::Display,
    /// The `busbar` binary that compiles handlers in a child process, if any.
    compile_worker: Option<std::path::PathBuf>,
}

impl NodeBuilder {
    /// A builder for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            runtime: None,
            drivers: HashMap::new(),
            hub: None,
            serve: true,
            watch: false,
            metrics: None,
            progress: progress::Display::default(),
            compile_worker: None,
        }
    }

    /// Compiles handlers in child processes of `program` (the `busbar`
    /// binary, run as `busbar compile-worker`) under `[node] compile_memory`
    /// and `compile_timeout`, instead of in this process. Applies when the
    /// node builds its own runtime (not with [`NodeBuilder::runtime`]).
    pub fn compile_worker(mut self, program: std::path::PathBuf) -> Self {
        self.compile_worker = Some(program);
        self
    }

    /// Makes a client: it connects and sends, but loads no handlers, serves
    /// nothing and does not show up in discovery (what the CLI uses on a
    /// shared bus).
    pub fn client(mut self) -> Self {
        self.serve = false;
        self
    }

    /// Watches the handlers folder and applies every change while serving
    /// (what `busbar run` does unless `[node] watch = false`).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Shares an existing runtime (one engine per process).
    pub fn runtime(mut self, runtime: Arc<Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Records into `metrics` (shared with an HTTP listener started before
    /// the node, so that `/metrics` and `/readyz` answer while it loads).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How loading the handlers folder at start shows its progress (log
    /// lines by default; `busbar run` draws a bar when stderr is a terminal).
    pub fn progress(mut self, display: progress::Display) -> Self {
        self.progress = display;
        self
    }

    /// Connects `driver = "default"` connections to `hub`: nodes given the
    /// same hub share one in-process bus. Without it a node has a hub of
    /// its own.
    pub fn hub(mut self, hub: DefaultDriver) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Uses `driver` for connections whose `driver` key is `name` (a name
    /// of its own, or a built-in name to replace that driver).
    pub fn driver(mut self, name: &str, driver: Arc<dyn Driver>) -> Self {
        self.drivers.insert(name.into(), driver);
        self
    }

    /// Loads the handlers folder, connects, registers every name and starts
    /// receiving.
    pub async fn start(self) -> Result<(Node, LoadReport), StartError> {
        // A serving node on the default driver keeps its dispatches in its
        // state directory (opened first: a bad state fails the start at once).
        let on_default = self.config.connections.iter().any(|c| c.driver == "default");
        let hub = match (self.hub, self.config.node.state_dir()) {
            (Some(hub), _) => hub,
            (None, Some(dir)) if self.serve && on_default => DefaultDriver::durable(&dir)?,
            (None, None) if self.serve && on_default && self.config.node.state.is_none() => {
                tracing::warn!(
                    "neither XDG_STATE_HOME nor HOME is set: accepted dispatches live in memory only; set `[node] state`"
                );
                DefaultDriver::new()
            }
            (None, _) => DefaultDriver::new(),
        };
        let runtime = match self.runtime {
            Some(r) => r,
            None => {
                let mut options = runtime_options(&self.config);
                if let Some(program) = self.compile_worker.clone() {
                    options.compiler = worker(&self.config, program);
                }
                Arc::new(Runtime::new(&options)?)
            }
        };
        let metrics = self.metrics.unwrap_or_else(|| Arc::new(Metrics::new(u64::from(runtime.pool_size()))));
        let handlers = Handlers::new(
            self.config.node.handlers.clone(),
            Rules::of(&self.config),
            runtime.clone(),
            metrics.clone(),
            self.progress,
        );
        let core = Arc::new(Core {
            config: self.config,
            runtime,
            metrics,
            handlers,
            started: SystemTime::now(),
            outgoing: OnceLock::new(),
        });
        let report = match self.serve {
            // Compiling is CPU-bound (seconds for a cold cache): off the async workers.
            true => {
                let loader = core.clone();
                let dir = core.config.node.handlers.display().to_string();
                tokio::task::spawn_blocking(move || loader.handlers.load_folder())
                    .await
                    .map_err(|e| StartError::Load(e.to_string()))?
                    .map_err(|source| StartError::Folder { path: dir, source })?
            }
            false => LoadReport::default(),
        };
        let mut links = Vec::new();
        for conn in &core.config.connections {
            let failed = |error| StartError::Connect { name: conn.name.clone(), error };
            let inbound = Inbound::of(&core);
            let link = match (self.drivers.get(&conn.driver), conn.driver.as_str()) {
                (Some(driver), _) => Link::Driver(driver.connect(conn, inbound).await.map_err(failed)?),
                (None, "default") => Link::Local(hub.connect_local(conn, inbound).map_err(failed)?),
                (None, "nats") => {
                    Link::Driver(crate::driver::nats::NatsDriver.connect(conn, inbound).await.map_err(failed)?)
                }
                (None, other) => return Err(failed(DriverError::Unknown(other.to_string()))),
            };
            for (kind, name, route) in core.handlers.table().routes() {
                link.register(kind, name, &route.spec()).await.map_err(failed)?;
            }
            if self.serve {
                link.connection().start().await.map_err(failed)?;
            }
            links.push(link);
        }
        let weights: Vec<u32> = core.config.connections.iter().map(|c| c.weight).collect();
        let _ = core.outgoing.set(Outgoing::new(links, &weights));
        let node = Node { core };
        if self.serve && self.watch {
            node.watch().map_err(StartError::Watch)?;
        }
        Ok((node, report))
    }
}

/// Engine settings derived from a config.
pub fn runtime_options(config: &Config) -> RuntimeOptions {
    RuntimeOptions {
        cache_dir: config.node.cache.clone(),
        max_instances: config.node.instances,
        max_file_size: config.node.max_handler_size(),
        ..RuntimeOptions::default()
    }
}

/// Compiling in child processes of `program` under `config`'s limits.
pub fn worker(config: &Config, program: std::path::PathBuf) -> crate::runtime::compiler::Compiler {
    crate::runtime::compiler::Compiler::Worker(crate::runtime::compiler::WorkerLimits {
        program,
        memory: config.node.compile_memory(),
        timeout: config.node.compile_timeout,
    })
}

impl Node {
    /// Starts a node from `config` with the built-in drivers.
    pub async fn start(config: Config) -> Result<(Node, LoadReport), StartError> {
        NodeBuilder::new(config).start().await
    }

    /// This node's config.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Calls service `name` and waits at most `timeout` for its reply.
    pub async fn call(&self, name: &str, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, Failure> {
        self.request(Mode::Call, Request { name: name.into(), payload, headers: Headers::new(), timeout }).await
    }

    /// [`Node::call`] with metadata headers.
    pub async fn call_with(
        &self,
        name: &str,
        payload: Vec<u8>,
        headers: Headers,
        timeout: Duration,
    ) -> Result<Vec<u8>, Failure> {
        self.request(Mode::Call, Request { name: name.into(), payload, headers, timeout }).await
    }

    /// Delivers `request` in `mode`: the reply of a call; an empty reply once
    /// the bus accepted a dispatch, broadcast or rolecast (within the
    /// request's timeout).
    pub async fn request(&self, mode: Mode, request: Request) -> Result<Vec<u8>, Failure> {
        self.core.send(mode, request).await
    }

    /// Queues work for service `name`; returns once the bus accepted it.
    pub async fn dispatch(&self, name: &str, payload: Vec<u8>) -> Result<Receipt, Failure> {
        self.core.enqueue(Request::accepted(name, payload)).await
    }

    /// Sends an event to every listener of `name`.
    pub async fn broadcast(&self, name: &str, payload: Vec<u8>) -> Result<(), Failure> {
        self.core.send(Mode::Broadcast, Request::accepted(name, payload)).await.map(drop)
    }

    /// Sends an event to one listener of `name` per group.
    pub async fn rolecast(&self, name: &str, payload: Vec<u8>) -> Result<(), Failure> {
        self.core.send(Mode::Rolecast, Request::accepted(name, payload)).await.map(drop)
    }

    /// The node's bus connections and the outgoing operations each carried.
    pub fn connections(&self) -> Vec<ConnectionUse> {
        let Some(out) = self.core.outgoing.get() else { return Vec::new() };
        self.core
            .config
            .connections
            .iter()
            .zip(out.sent())
            .map(|(c, sent)| ConnectionUse { name: c.name.clone(), weight: c.weight, sent })
            .collect()
    }

    /// The key-value buckets of the node's handlers (on its first
    /// connection), once connected.
    pub fn buckets(&self) -> Option<Arc<dyn crate::keyvalue::Buckets>> {
        self.core.outgoing.get().and_then(outgoing::Outgoing::buckets)
    }

    /// This node's own per-name statistics.
    pub fn local_stats(&self) -> Vec<NameStats> {
        self.core.handlers.stats(&self.core.config.node.id)
    }

    /// This node's identity and names.
    pub fn info(&self) -> NodeInfo {
        self.core.info()
    }

    fn first_connection(&self) -> Result<&dyn Connection, DriverError> {
        self.core
            .outgoing
            .get()
            .and_then(|o| o.first())
            .map(|link| link.connection())
            .ok_or_else(|| DriverError::ConnectionLost { what: "the node has no bus connection".into() })
    }

    /// Statistics of every node on the bus.
    pub async fn stats(&self) -> Result<Vec<NameStats>, DriverError> {
        self.first_connection()?.stats().await
    }

    /// Every live node on the bus.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, DriverError> {
        self.first_connection()?.nodes().await
    }

    /// Every name served on the bus.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>, DriverError> {
        self.first_connection()?.services().await
    }

    /// Exhausted or refused dispatches.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, DriverError> {
        self.first_connection()?.dead_letters().await
    }

    /// Queues the dead letters of `name` again; returns how many.
    pub async fn replay_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        self.first_connection()?.replay_dead_letters(name).await
    }

    /// Deletes the dead letters of `name`; returns how many.
    pub async fn drop_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        self.first_connection()?.drop_dead_letters(name).await
    }

    /// Starts applying changes of the handlers folder live (see
    /// [`NodeBuilder::watch`]); a second call changes nothing.
    pub fn watch(&self) -> notify::Result<()> {
        let core = Arc::downgrade(&self.core);
        self.core.handlers.watch(move |stems| {
            let core = core.upgrade()?;
            Some(async move { core.handlers.reload(stems, &*core).await })
        })
    }

    /// Changes of the handlers folder applied and rejected so far.
    pub fn reloads(&self) -> ReloadStats {
        let (applied, rejected) = self.core.metrics.reloads();
        ReloadStats { applied, rejected }
    }

    /// Whether every connection reaches its bus now.
    pub fn is_connected(&self) -> bool {
        self.core.outgoing.get().is_some_and(|out| out.links().iter().all(|l| l.connection().is_connected()))
    }

    /// The node's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let runtime = &self.core.runtime;
        self.core.metrics.set_pool_use(runtime.idle_instances(), runtime.running_instances());
        self.core.metrics.render()
    }

    /// Stops receiving and closes every connection.
    pub async fn stop(&self) {
        // No more changes of the folder: they would register names again.
        self.core.handlers.unwatch();
        for link in self.core.outgoing.get().map_or(&[][..], |o| o.links()) {
            if let Err(e) = link.connection().stop().await {
                tracing::warn!("stopping a connection: {e}");
            }
            if let Err(e) = link.connection().close().await {
                tracing::warn!("closing a connection: {e}");
            }
        }
    }
}
